//! Unit tests of the state DB: schema, migrations, batches, leases, reads.

use super::*;
use std::time::Instant;

fn h(n: u32) -> Hash {
    let mut out = [0u8; 32];
    out[..4].copy_from_slice(&n.to_le_bytes());
    out[31] = 0xAB;
    out
}

fn success(task: &str, n: u32) -> TaskUpdate {
    TaskUpdate::Success { task_id: task.to_string(), cmd_hash: h(n), inputs_hash: h(n + 1), duration_s: 1.5 }
}

fn attempt(run_id: i64, task: &str, step: &str, n: u32, status: Status) -> AttemptRecord {
    AttemptRecord {
        run_id,
        task_id: task.to_string(),
        step: step.to_string(),
        params_json: r#"{"date":"2024-01-05"}"#.to_string(),
        attempt: n,
        status,
        reason: Some("missing-output".to_string()),
        started_at: 100.0 + f64::from(n),
        ended_at: Some(101.0 + f64::from(n)),
        exit_code: Some(if status == Status::Success { 0 } else { 1 }),
        log_path: Some(format!("logs/{step}/{task}/{n}.log")),
        error: None,
        commands: None,
        inputs_json: None,
        group: None,
        expect: None,
    }
}

fn digest(n: u32) -> CachedDigest {
    CachedDigest {
        size: u64::from(n) * 10,
        mtime_ns: 1_700_000_000_000_000_000 + i64::from(n),
        inode: u64::MAX - u64::from(n),
        digest: h(n),
        hashed_at_ns: 1_700_000_000_000_000_001 + i64::from(n),
    }
}

fn schema(db: &StateDb) -> Vec<String> {
    let mut stmt = db.conn.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<Vec<String>>>().unwrap()
}

#[test]
fn status_round_trip() {
    for s in Status::ALL {
        assert_eq!(Status::parse(s.as_str()), Some(s));
        assert_eq!(s.to_string(), s.as_str());
    }
    assert_eq!(Status::UpstreamFailed.as_str(), "upstream_failed");
    assert_eq!(Status::parse("Success"), None);
    assert_eq!(Status::parse(""), None);
}

#[test]
fn status_round_trips_through_db() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    let run = db.begin_run("flux build").unwrap();
    let mut batch = Batch::default();
    for (i, s) in Status::ALL.iter().enumerate() {
        let t = format!("t{i}");
        batch.tasks.push(TaskUpdate::Status { task_id: t.clone(), status: *s });
        batch.attempts.push(attempt(run, &t, "s", 1, *s));
    }
    db.commit(&mut batch).unwrap();
    let tasks = db.load_tasks().unwrap();
    for (i, s) in Status::ALL.iter().enumerate() {
        let t = format!("t{i}");
        assert_eq!(tasks[&t].last_status, *s);
        assert_eq!(db.attempts(&t).unwrap()[0].status, *s);
    }
}

#[test]
fn create_and_reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("a/b/.flux");
    let run;
    {
        let mut db = StateDb::open(&state).unwrap();
        assert_eq!(db.path(), state.join("state.db"));
        run = db.begin_run("flux build clean").unwrap();
        let mut batch = Batch::default();
        batch.tasks.push(success("clean[2024-01-05]", 7));
        batch.digests.push(("data/x.csv".to_string(), digest(3)));
        batch.attempts.push(attempt(run, "clean[2024-01-05]", "clean", 1, Status::Success));
        assert_eq!(batch.len(), 3);
        db.commit(&mut batch).unwrap();
        assert!(batch.is_empty());
        db.end_run(run, "success").unwrap();
    }
    let db = StateDb::open(&state).unwrap();
    let tasks = db.load_tasks().unwrap();
    let t = &tasks["clean[2024-01-05]"];
    assert_eq!(t.last_status, Status::Success);
    assert_eq!(t.cmd_hash, Some(h(7)));
    assert_eq!(t.inputs_hash, Some(h(8)));
    assert_eq!(t.duration_s, Some(1.5));
    assert!(t.success_at.is_some());
    assert!(!t.forced);
    assert_eq!(db.load_digests().unwrap()["data/x.csv"], digest(3));
    let attempts = db.attempts("clean[2024-01-05]").unwrap();
    assert_eq!(attempts.len(), 1);
    let a = &attempts[0];
    assert_eq!(a.run_id, run);
    assert_eq!(a.step, "clean");
    assert_eq!(a.exit_code, Some(0));
    assert_eq!(a.log_path.as_deref(), Some("logs/clean/clean[2024-01-05]/1.log"));
    let runs = db.runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "success");
    assert_eq!(runs[0].command, "flux build clean");
    assert!(runs[0].ended_at.is_some());
    assert_eq!(db.run(run).unwrap(), Some(runs[0].clone()));
    assert_eq!(db.run(run + 1).unwrap(), None);
}

#[test]
fn open_sets_pragmas() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let mode: String = db.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = db.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!(sync, 1); // NORMAL
    let fk: i64 = db.conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
    assert_eq!(fk, 0);
    let timeout: i64 = db.conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0)).unwrap();
    assert_eq!(timeout, BUSY_TIMEOUT.as_millis() as i64);
}

#[test]
fn migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(user_version(&db.conn).unwrap(), SCHEMA_VERSION);
        schema(&db)
    };
    assert!(first.iter().any(|s| s.contains("CREATE TABLE leases")));
    for name in ["attempts_task", "attempts_run", "attempts_step"] {
        assert!(first.iter().any(|s| s.contains(name)), "{name}");
    }
    for _ in 0..3 {
        let mut db = StateDb::open(dir.path()).unwrap();
        assert_eq!(user_version(&db.conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(schema(&db), first);
        // Migrating an up-to-date connection again is a no-op.
        let path = db.path.clone();
        migrate(&mut db.conn, &path).unwrap();
        assert_eq!(schema(&db), first);
    }
}

#[test]
fn failed_migration_rolls_back() {
    // A migration that meets a table of the same name fails half-way: it rolls back,
    // nothing changes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE digests (x); PRAGMA user_version = 0;").unwrap();
    }
    let mut conn = Connection::open(&path).unwrap();
    let err = migrate(&mut conn, &path).unwrap_err();
    assert!(matches!(err, StateError::Sql { .. }), "{err}");
    assert!(err.to_string().contains("migration 1"), "{err}");
    // Opening refuses such a database before migrating: some of flux's tables with
    // version 0 is a damaged header.
    let err = StateDb::open(dir.path()).unwrap_err();
    assert!(matches!(err, StateError::Unusable { .. }), "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");
    assert_eq!(user_version(&conn).unwrap(), 0);
    let runs: i64 = conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'runs'", [], |r| r.get(0)).unwrap();
    assert_eq!(runs, 0, "the part of the migration before the error was rolled back");
}

#[test]
fn a_schema_1_database_gains_run_kinds_and_attempt_details() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (started_at, status, command) VALUES (1, 'success', 'flux build'); \
                 PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let mut db = StateDb::open(dir.path()).unwrap();
    assert_eq!(db.run_kind(1).unwrap().as_deref(), Some("build"));
    let run = db.begin_run_of_kind("flux mark a", "mark").unwrap();
    assert_eq!(db.run_kind(run).unwrap().as_deref(), Some("mark"));
    let mut batch = Batch::default();
    let mut marked = attempt(run, "a", "a", 1, Status::Marked);
    marked.commands = Some("run: true\n".into());
    marked.inputs_json = Some("[]".into());
    batch.attempts.push(marked);
    db.commit(&mut batch).unwrap();
    let last = db.last_success("a").unwrap().unwrap();
    assert_eq!((last.run_id, last.status, last.commands.as_str()), (run, Status::Marked, "run: true\n"));
}

#[test]
fn too_new_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;").unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = StateDb::open(dir.path()).unwrap_err();
    match &err {
        StateError::TooNew { found, supported, .. } => {
            assert_eq!(*found, 99);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("written by a newer flux (schema 99; this flux knows up to {SCHEMA_VERSION})")),
        "{msg}"
    );
    assert!(msg.contains("upgrade flux, or point `state` at another folder"));
    assert!(msg.contains("state.db"));
    assert_eq!(std::fs::read(&path).unwrap(), before, "file modified");

    let err = StateDb::open_existing(dir.path()).unwrap_err();
    assert!(matches!(err, StateError::TooNew { found: 99, .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "file modified");
}

#[test]
fn open_existing_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    assert!(StateDb::open_existing(dir.path()).unwrap().is_none());
    let missing = dir.path().join("not/there");
    assert!(StateDb::open_existing(&missing).unwrap().is_none());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // An empty file (no schema yet) is like no database, and stays empty.
    std::fs::write(dir.path().join(DB_FILE), b"").unwrap();
    assert!(StateDb::open_existing(dir.path()).unwrap().is_none());
    assert_eq!(std::fs::metadata(dir.path().join(DB_FILE)).unwrap().len(), 0);
}

#[test]
fn open_existing_reads_and_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut db = StateDb::open(dir.path()).unwrap();
        let mut batch = Batch::default();
        batch.tasks.push(success("a", 1));
        db.commit(&mut batch).unwrap();
    }
    let before = std::fs::read(dir.path().join(DB_FILE)).unwrap();
    let mut ro = StateDb::open_existing(dir.path()).unwrap().unwrap();
    assert_eq!(ro.load_tasks().unwrap()["a"].cmd_hash, Some(h(1)));
    let mut batch = Batch::default();
    batch.tasks.push(success("b", 2));
    let err = ro.commit(&mut batch).unwrap_err();
    assert!(matches!(err, StateError::Sql { .. }), "{err}");
    assert_eq!(batch.len(), 1, "a failed commit keeps the batch");
    assert!(ro.begin_run("flux build --dry-run").is_err());
    drop(ro);
    assert_eq!(std::fs::read(dir.path().join(DB_FILE)).unwrap(), before);
}

#[test]
fn big_batch_commits_and_loads() {
    const N: u32 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    let mut batch = Batch::default();
    for i in 0..N {
        batch.digests.push((format!("data/raw/2024/file-{i:06}.parquet"), digest(i)));
        batch.tasks.push(success(&format!("clean[{i:06}]"), i));
    }
    let t = Instant::now();
    db.commit(&mut batch).unwrap();
    let commit = t.elapsed();
    assert!(batch.is_empty());

    let t = Instant::now();
    let tasks = db.load_tasks().unwrap();
    let load_tasks = t.elapsed();
    let t = Instant::now();
    let digests = db.load_digests().unwrap();
    let load_digests = t.elapsed();
    eprintln!(
        "{N} tasks + {N} digests: commit {commit:?}, load_tasks {load_tasks:?}, \
             load_digests {load_digests:?}"
    );
    assert_eq!(tasks.len(), N as usize);
    assert_eq!(digests.len(), N as usize);
    for i in [0, 1, 4242, N - 1] {
        let t = &tasks[&format!("clean[{i:06}]")];
        assert_eq!(t.cmd_hash, Some(h(i)));
        assert_eq!(t.inputs_hash, Some(h(i + 1)));
        assert_eq!(digests[&format!("data/raw/2024/file-{i:06}.parquet")], digest(i));
    }

    // A fresh connection (what a no-op build does) loads the same.
    drop(db);
    let t = Instant::now();
    let db = StateDb::open(dir.path()).unwrap();
    let tasks = db.load_tasks().unwrap();
    let digests = db.load_digests().unwrap();
    eprintln!("reopen + load both: {:?}", t.elapsed());
    assert_eq!((tasks.len(), digests.len()), (N as usize, N as usize));
}

#[test]
fn clear_sets_forced_and_success_resets_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    let mut batch = Batch::default();
    batch.tasks.push(success("a", 1));
    db.commit(&mut batch).unwrap();

    batch.tasks.push(TaskUpdate::Clear { task_id: "a".to_string() });
    // Clear of a task with no record creates one, which Adopt then leaves alone.
    batch.tasks.push(TaskUpdate::Clear { task_id: "new".to_string() });
    batch.tasks.push(TaskUpdate::Adopt { task_id: "new".to_string(), cmd_hash: h(5), inputs_hash: h(6) });
    db.commit(&mut batch).unwrap();
    let tasks = db.load_tasks().unwrap();
    let a = &tasks["a"];
    assert!(a.forced);
    assert_eq!((a.cmd_hash, a.inputs_hash), (None, None));
    assert_eq!(a.last_status, Status::Success);
    assert_eq!(a.duration_s, Some(1.5), "duration kept for estimates");
    let new = &tasks["new"];
    assert!(new.forced);
    assert_eq!(new.last_status, Status::Queued);
    assert_eq!(new.cmd_hash, None);

    // A failure does not clear `forced`; a success does.
    batch.tasks.push(TaskUpdate::Status { task_id: "a".to_string(), status: Status::Failed });
    db.commit(&mut batch).unwrap();
    assert!(db.load_tasks().unwrap()["a"].forced);
    batch.tasks.push(success("a", 9));
    db.commit(&mut batch).unwrap();
    let a = &db.load_tasks().unwrap()["a"];
    assert!(!a.forced);
    assert_eq!(a.last_status, Status::Success);
    assert_eq!(a.cmd_hash, Some(h(9)));
}

#[test]
fn failed_attempt_keeps_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    let mut batch = Batch::default();
    batch.tasks.push(success("a", 1));
    db.commit(&mut batch).unwrap();
    let before = db.load_tasks().unwrap()["a"].clone();
    for status in [Status::Failed, Status::Interrupted] {
        batch.tasks.push(TaskUpdate::Status { task_id: "a".to_string(), status });
        db.commit(&mut batch).unwrap();
        let after = &db.load_tasks().unwrap()["a"];
        assert_eq!(after.last_status, status);
        assert_eq!(after.cmd_hash, Some(h(1)));
        assert_eq!(after.inputs_hash, Some(h(2)));
        assert_eq!(after.success_at, before.success_at);
        assert_eq!(after.duration_s, before.duration_s);
    }
    // A status for an unknown task creates a row with no fingerprint.
    batch.tasks.push(TaskUpdate::Status { task_id: "b".to_string(), status: Status::Failed });
    db.commit(&mut batch).unwrap();
    let b = &db.load_tasks().unwrap()["b"];
    assert_eq!((b.last_status, b.cmd_hash, b.forced), (Status::Failed, None, false));
}

#[test]
fn adopt_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    let mut batch = Batch::default();
    batch.tasks.push(TaskUpdate::Adopt { task_id: "made-by-hand".to_string(), cmd_hash: h(1), inputs_hash: h(2) });
    batch.tasks.push(success("a", 10));
    batch.tasks.push(TaskUpdate::Adopt { task_id: "a".to_string(), cmd_hash: h(20), inputs_hash: h(21) });
    batch.tasks.push(TaskUpdate::Status { task_id: "f".to_string(), status: Status::Failed });
    batch.tasks.push(TaskUpdate::Adopt { task_id: "f".to_string(), cmd_hash: h(30), inputs_hash: h(31) });
    db.commit(&mut batch).unwrap();
    let tasks = db.load_tasks().unwrap();
    let adopted = &tasks["made-by-hand"];
    assert_eq!(adopted.last_status, Status::Success);
    assert_eq!(adopted.cmd_hash, Some(h(1)));
    assert_eq!(adopted.duration_s, None);
    assert!(adopted.success_at.is_some());
    assert_eq!(tasks["a"].cmd_hash, Some(h(10)));
    assert_eq!(tasks["f"].cmd_hash, None);
    assert_eq!(tasks["f"].last_status, Status::Failed);
}

#[test]
fn wrong_length_blobs_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    db.conn
        .execute_batch(
            "INSERT INTO tasks (task_id, last_status, cmd_hash, inputs_hash) \
                 VALUES ('short', 'success', x'0102', 'text not blob');
                 INSERT INTO digests VALUES ('bad', 1, 2, 3, x'01', 4);
                 INSERT INTO digests VALUES ('null', 1, 2, 3, zeroblob(33), 4);",
        )
        .unwrap();
    let tasks = db.load_tasks().unwrap();
    assert_eq!(tasks["short"].cmd_hash, None);
    assert_eq!(tasks["short"].inputs_hash, None);
    assert!(db.load_digests().unwrap().is_empty());
    // An unknown status is an error, not a panic.
    db.conn.execute_batch("INSERT INTO tasks (task_id, last_status) VALUES ('x', 'exploded')").unwrap();
    let err = db.load_tasks().unwrap_err();
    assert!(err.to_string().contains("exploded"), "{err}");
}

#[test]
fn digests_upsert_and_extreme_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    let extreme = CachedDigest {
        size: u64::MAX,
        mtime_ns: i64::MIN,
        inode: u64::MAX,
        digest: [0xFF; 32],
        hashed_at_ns: i64::MAX,
    };
    let mut batch = Batch::default();
    batch.digests.push(("p".to_string(), digest(1)));
    batch.digests.push(("p".to_string(), extreme));
    db.commit(&mut batch).unwrap();
    let digests = db.load_digests().unwrap();
    assert_eq!(digests.len(), 1);
    assert_eq!(digests["p"], extreme);
    assert_eq!(db.digest_entry("p").unwrap(), Some(extreme));
    assert_eq!(db.digest_entry("q").unwrap(), None);
    // A digest that is not 32 bytes is no entry (the file is re-hashed).
    db.conn.execute_batch("UPDATE digests SET digest = x'00'").unwrap();
    assert_eq!(db.digest_entry("p").unwrap(), None);
}

#[test]
fn attempts_history_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    let r1 = db.begin_run("flux build").unwrap();
    let mut batch = Batch::default();
    batch.attempts.push(attempt(r1, "clean[1]", "clean", 1, Status::Failed));
    batch.attempts.push(attempt(r1, "clean[1]", "clean", 2, Status::Success));
    batch.attempts.push(attempt(r1, "load[1]", "load", 1, Status::Success));
    db.commit(&mut batch).unwrap();
    db.end_run(r1, "success").unwrap();
    let r2 = db.begin_run("flux build --force").unwrap();
    // Recorded running first, then finished: the same row is updated.
    let mut running = attempt(r2, "clean[1]", "clean", 1, Status::Running);
    running.ended_at = None;
    running.exit_code = None;
    batch.attempts.push(running);
    db.commit(&mut batch).unwrap();
    let running_id = db.history(None, 1).unwrap()[0].id;
    let mut failed = attempt(r2, "clean[1]", "clean", 1, Status::Failed);
    failed.error = Some("exit code 1".to_string());
    batch.attempts.push(failed);
    db.commit(&mut batch).unwrap();
    db.end_run(r2, "failed").unwrap();
    assert!(db.end_run(r2 + 100, "failed").is_err());

    let clean = db.attempts("clean[1]").unwrap();
    let seen: Vec<_> = clean.iter().map(|a| (a.run_id, a.attempt, a.status)).collect();
    assert_eq!(seen, vec![(r1, 1, Status::Failed), (r1, 2, Status::Success), (r2, 1, Status::Failed)]);
    assert_eq!(clean[2].id, running_id);
    assert_eq!(clean[2].error.as_deref(), Some("exit code 1"));
    assert_eq!(clean[2].exit_code, Some(1));
    assert!(db.attempts("nope").unwrap().is_empty());

    let all = db.history(None, 10).unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let clean_hist = db.history(Some("clean"), 2).unwrap();
    assert_eq!(clean_hist.len(), 2);
    assert!(clean_hist.iter().all(|a| a.step == "clean"));
    assert_eq!(clean_hist[0].id, running_id);
    assert_eq!(db.history(Some("load"), 10).unwrap().len(), 1);
    assert_eq!(db.history(None, usize::MAX).unwrap().len(), 4);

    let runs = db.runs(10).unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r2, r1]);
    assert_eq!(runs[0].status, "failed");
    assert_eq!(runs[1].status, "success");
    assert_eq!(db.runs(1).unwrap().len(), 1);
    let (pid, host): (i64, Option<String>) =
        db.conn.query_row("SELECT pid, host FROM runs WHERE id = ?1", [r1], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(pid, i64::from(std::process::id()));
    // Named as leases name it (runs and leases of this host are told apart from another
    // host's sharing the state folder by it).
    assert_eq!(host, Some(Holder::this_process().host), "the run's host");
}

#[test]
fn concurrent_connections_read_while_one_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = StateDb::open(dir.path()).unwrap();
    let mut b = StateDb::open(dir.path()).unwrap();
    let mut batch = Batch::default();
    batch.tasks.push(success("t", 1));
    a.commit(&mut batch).unwrap();
    let ro = StateDb::open_existing(dir.path()).unwrap().unwrap();

    // `a` holds the write lock with an uncommitted change.
    a.conn.execute_batch("BEGIN IMMEDIATE; UPDATE tasks SET last_status = 'failed' WHERE task_id = 't';").unwrap();
    // Both other connections read at once, and see the last committed state.
    let start = Instant::now();
    assert_eq!(b.load_tasks().unwrap()["t"].last_status, Status::Success);
    assert_eq!(ro.load_tasks().unwrap()["t"].last_status, Status::Success);
    // A blocked reader would wait out the busy timeout (3 s) and then fail: the values
    // above already prove it was not; the bound only catches a wait that then succeeded.
    assert!(start.elapsed() < BUSY_TIMEOUT, "readers were blocked");

    // A second writer waits (busy timeout) instead of failing, then goes through.
    let writer = std::thread::spawn(move || {
        let mut batch = Batch::default();
        batch.digests.push(("from-b".to_string(), digest(2)));
        let t = Instant::now();
        b.commit(&mut batch).map(|()| t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    a.conn.execute_batch("COMMIT").unwrap();
    let waited = writer.join().unwrap().unwrap();
    assert!(waited >= Duration::from_millis(200), "waited {waited:?}");

    assert_eq!(ro.load_tasks().unwrap()["t"].last_status, Status::Failed);
    assert_eq!(ro.load_digests().unwrap()["from-b"], digest(2));
    assert_eq!(a.load_digests().unwrap()["from-b"], digest(2));
}

#[test]
fn a_claim_reports_a_failure_recorded_by_another_run_since_the_records_were_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = StateDb::open(dir.path()).unwrap();
    let mut b = StateDb::open(dir.path()).unwrap();
    a.set_holder(Holder { id: "a".into(), ..Holder::this_process() });
    b.set_holder(Holder { id: "b".into(), ..Holder::this_process() });
    let (ra, rb) = (a.begin_run("flux build").unwrap(), b.begin_run("flux build").unwrap());
    // An old failure, seen by b when it loads its records: not reported.
    let mut batch = Batch::default();
    batch.attempts.push(attempt(ra, "old", "s", 1, Status::Failed));
    batch.tasks.push(TaskUpdate::Status { task_id: "old".into(), status: Status::Failed });
    a.commit(&mut batch).unwrap();
    b.load_tasks().unwrap();
    assert!(b.attempts_seen() > 0);
    // a fails `new` after b loaded: reported, with a's run and error.
    assert!(a.claim(&["new"], ra, 30.0).unwrap()[0].mine);
    let mut failed = attempt(ra, "new", "s", 1, Status::Failed);
    failed.error = Some("exit code 1".into());
    batch.attempts.push(failed);
    batch.tasks.push(TaskUpdate::Status { task_id: "new".into(), status: Status::Failed });
    batch.releases.push("new".into());
    a.commit(&mut batch).unwrap();
    let claims = b.claim(&["old", "new"], rb, 30.0).unwrap();
    assert!(claims.iter().all(|c| c.mine));
    assert_eq!(claims[0].failed_in, None);
    assert_eq!(claims[1].failed_in, Some((ra, Some("exit code 1".to_string()))));
    // Nor is a build's own failure reported back to it.
    assert_eq!(a.claim(&["new"], ra, 30.0).unwrap()[0].failed_in, None);
}

#[test]
fn empty_batch_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    let mut batch = Batch::default();
    assert!(batch.is_empty());
    assert_eq!(batch.len(), 0);
    db.commit(&mut batch).unwrap();
    assert!(db.load_tasks().unwrap().is_empty());
    assert!(db.load_digests().unwrap().is_empty());
}

#[test]
fn open_fails_cleanly_on_garbage_and_bad_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![7u8; 4096]).unwrap();
    let err = StateDb::open(dir.path()).unwrap_err();
    assert!(matches!(err, StateError::Sql { .. }), "{err}");
    let err = StateDb::open_existing(dir.path()).unwrap_err();
    assert!(matches!(err, StateError::Sql { .. }), "{err}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = StateDb::open(&file.join("state")).unwrap_err();
    assert!(matches!(err, StateError::Io { .. }), "{err}");
    assert!(err.to_string().starts_with("cannot create state folder"), "{err}");
}

#[test]
fn hex_writes_two_lower_case_digits_a_byte() {
    assert_eq!(hex(&h(0x0102_0a0f)), format!("0f0a0201{}ab", "00".repeat(27)));
}

#[test]
fn a_batch_counts_every_kind_of_record() {
    fn fact() -> AttemptFact {
        AttemptFact::Job { run_id: 1, task_id: "a".to_string(), attempt: 1, job_id: "7".to_string() }
    }
    // A batch holding only one kind of record is not empty, and counts it.
    let one_of_each: [fn(&mut Batch); 5] = [
        |b| b.attempts.push(attempt(1, "a", "s", 1, Status::Success)),
        |b| b.tasks.push(success("a", 1)),
        |b| b.digests.push(("a.txt".to_string(), digest(1))),
        |b| b.releases.push("a".to_string()),
        |b| b.attempt_facts.push(fact()),
    ];
    for add in one_of_each {
        let mut b = Batch::default();
        assert!(b.is_empty());
        assert_eq!(b.len(), 0);
        add(&mut b);
        assert!(!b.is_empty());
        assert_eq!(b.len(), 1);
    }
    // Six of one kind down to one of another: the count is their sum.
    let mut b = Batch::default();
    for n in 0..6 {
        b.attempts.push(attempt(1, &format!("t{n}"), "s", 1, Status::Success));
    }
    for n in 0..5 {
        b.tasks.push(success(&format!("t{n}"), 1));
    }
    for n in 0..4 {
        b.digests.push((format!("f{n}"), digest(n)));
    }
    for n in 0..3 {
        b.releases.push(format!("t{n}"));
    }
    b.attempt_facts.push(fact());
    assert_eq!(b.len(), 19);
}

#[test]
fn end_read_ends_the_read_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    let mut batch = Batch::default();
    batch.tasks.push(success("t", 1));
    db.commit(&mut batch).unwrap();
    let ro = StateDb::open_existing(dir.path()).unwrap().unwrap();
    ro.end_read().unwrap();
    ro.begin_read().unwrap();
    assert!(!ro.conn.is_autocommit());
    ro.end_read().unwrap();
    // Ended: a lookup sees what was committed since (and the WAL can be recycled).
    assert!(ro.conn.is_autocommit());
    batch.tasks.push(success("u", 2));
    db.commit(&mut batch).unwrap();
    assert!(ro.load_tasks().unwrap().contains_key("u"));
}

#[test]
fn a_pid_beyond_32_bits_is_never_a_live_process() {
    // From a damaged row: truncated to 32 bits it would name this very process.
    assert!(pid_alive(i64::from(std::process::id())));
    assert!(!pid_alive((1 << 32) + i64::from(std::process::id())));
    assert!(!pid_alive(0));
    assert!(!pid_alive(-1));
}

#[test]
fn another_programs_database_is_named_by_its_first_three_tables() {
    let refusal = |tables: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        for t in tables {
            conn.execute_batch(&format!("CREATE TABLE {t} (id INTEGER PRIMARY KEY)")).unwrap();
        }
        drop(conn);
        StateDb::open(dir.path()).unwrap_err().to_string()
    };
    let three = refusal(&["c", "a", "b"]);
    assert!(three.contains("(it has tables a, b, c and no schema version)"), "{three}");
    let four = refusal(&["d", "c", "a", "b"]);
    assert!(four.contains("(it has tables a, b, c, ... and no schema version)"), "{four}");
}

#[test]
fn an_attempt_written_again_without_its_details_and_facts_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    let run = db.begin_run("flux build").unwrap();
    let mut batch = Batch::default();
    let mut first = attempt(run, "a", "s", 1, Status::Success);
    first.commands = Some("run: true\n".into());
    first.inputs_json = Some("[]".into());
    first.group = Some((4321, 99));
    first.expect = Some((h(1), h(2)));
    batch.attempts.push(first);
    db.commit(&mut batch).unwrap();
    // Written again (a late status of the same attempt) with none of them.
    batch.attempts.push(attempt(run, "a", "s", 1, Status::Success));
    db.commit(&mut batch).unwrap();
    type Row = (Option<String>, Option<String>, Option<i64>, Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>);
    let row: Row = db
        .conn
        .query_row(
            "SELECT commands, inputs_json, pgid, pgid_start, expect_cmd_hash, expect_inputs_hash FROM attempts",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .unwrap();
    assert_eq!(row.0.as_deref(), Some("run: true\n"));
    assert_eq!(row.1.as_deref(), Some("[]"));
    assert_eq!((row.2, row.3), (Some(4321), Some(99)));
    assert_eq!((row.4, row.5), (Some(h(1).to_vec()), Some(h(2).to_vec())));
}
