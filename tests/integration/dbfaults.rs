//! State DB faults (SPEC §8): a database locked by another process is waited for; a write
//! that fails for good (locked past the limit, a full disk) stops the running tasks, keeps
//! the records, retries them, and still prints `--output json`, exiting 1; commands that
//! only read refuse a state folder or database they cannot use.

use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::operations::{Bg, assert_no_process_left, kill_marked, sleep_marker, sleeps_with, wait_until};
use crate::test::*;

/// Holds the write lock of a state DB from another connection (SQLite locks are per
/// file, so flux sees another holder) until released or `max` has passed.
pub(crate) struct Lock {
    release: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Lock {
    pub(crate) fn take(db: std::path::PathBuf, max: Duration) -> Lock {
        let (release, rx) = mpsc::channel::<()>();
        let (locked_tx, locked) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).expect("open the state db");
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
            locked_tx.send(()).unwrap();
            let _ = rx.recv_timeout(max);
            conn.execute_batch("COMMIT").expect("release the write lock");
        });
        locked.recv_timeout(Duration::from_secs(15)).expect("the lock was taken");
        Lock { release, thread: Some(thread) }
    }

    pub(crate) fn release(mut self) {
        let _ = self.release.send(());
        if let Some(t) = self.thread.take() {
            t.join().expect("the lock thread");
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.release.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn try_query_i64(t: &Test, sql: &str) -> rusqlite::Result<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        t.abs(".flux/state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.query_row(sql, [], |r| r.get(0))
}

fn query_i64(t: &Test, sql: &str) -> i64 {
    try_query_i64(t, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The statuses of the attempts of `task` in the state DB, oldest first.
fn attempts_of(t: &Test, task: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn.prepare("SELECT status FROM attempts WHERE task_id = ?1 ORDER BY id").unwrap();
    stmt.query_map([task], |r| r.get(0)).unwrap().collect::<rusqlite::Result<Vec<String>>>().unwrap()
}

const TWO: &str = r#"
[step.a]
outputs = ["a.txt"]
run = "echo a > {{ outputs[0] }}"

[step.b]
inputs = ["a.txt"]
outputs = ["b.txt"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"

[step.first]
outputs = ["first.txt"]
run = "echo first > {{ outputs[0] }}"
"#;

#[test]
fn a_build_waits_for_a_state_db_another_process_holds_locked_and_says_so() {
    let t = Test::new().fluxfile(TWO);
    t.run_args(json_build(&["first"])).assert_status(0);
    // Held for 13 s: longer than SQLite's own wait and flux's former 10 s limit.
    let lock = Lock::take(t.abs(".flux/state.db"), Duration::from_secs(13));
    let o = t.run_args(json_build(&["b"]));
    lock.release();
    o.assert_status(0).assert_summary(2, 0, 0, 0);
    let line = format!(
        "flux: waiting for the state DB {}: locked by another process (up to 60 s)\n",
        t.abs(".flux/state.db").display()
    );
    assert_eq!(o.stderr().matches(&line).count(), 1, "said once\n{}", o.describe());
    assert!(o.elapsed >= Duration::from_secs(11), "took {:?}: the lock was not waited for", o.elapsed);
    assert_eq!(attempts_of(&t, "a"), ["success"]);
    assert_eq!(attempts_of(&t, "b"), ["success"]);
    assert_eq!(query_i64(&t, "SELECT count(*) FROM runs WHERE status = 'success' AND ended_at IS NOT NULL"), 2);
    assert_eq!(t.read("b.txt"), "a\n");
}

#[test]
fn a_state_db_locked_past_the_limit_stops_the_running_tasks_and_exits_1_with_the_json() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(
        &r#"
[vars]
nap = "MARK"

[step.quick]
outputs = ["quick.txt"]
run = "echo q > {{ outputs[0] }}"

[step.gated]
outputs = ["gated.txt"]
run = "while [ ! -e go ]; do sleep 0.05; done; echo g > {{ outputs[0] }}"

[step.slow]
outputs = ["slow.txt"]
run = "sleep {{ nap }}; echo s > {{ outputs[0] }}"
"#
        .replace("MARK", &mark),
    );
    let flux = Bg::spawn_env(&t, &["build", "-j", "3", "--output", "json"], &[("FLUX_DB_BUSY_LIMIT", "2")]);
    // Once `quick`'s success is written, another process takes the lock; then `gated`
    // ends, and its record cannot be written.
    let recorded = wait_until(Duration::from_secs(20), || {
        try_query_i64(&t, "SELECT count(*) FROM attempts WHERE task_id = 'quick' AND status = 'success'").ok()
            == Some(1)
    });
    assert!(recorded, "quick's success was never written");
    assert!(!sleeps_with(&mark).is_empty(), "slow is not running");
    let lock = Lock::take(t.abs(".flux/state.db"), Duration::from_secs(40));
    t.write("go", "");
    let o = flux.wait(Duration::from_secs(30));
    lock.release();
    assert_no_process_left(&mark, Duration::from_secs(2), "the running task was not stopped");
    kill_marked(&mark);
    o.assert_status(1);
    assert_eq!(o.task("quick")["status"], "success", "{}", o.describe());
    assert_eq!(o.task("gated")["status"], "success", "{}", o.describe());
    assert_eq!(o.task("slow")["status"], "interrupted", "{}", o.describe());
    o.stderr_has("flux: waiting for the state DB").stderr_has(&format!(
        "error: state database {}: locked by another process for more than 2 s",
        t.abs(".flux/state.db").display()
    ));
    assert!(o.elapsed < Duration::from_secs(20), "took {:?}", o.elapsed);
    // What was written before stays: the run and quick's success.
    assert_eq!(query_i64(&t, "SELECT count(*) FROM runs"), 1);
    assert_eq!(attempts_of(&t, "quick"), ["success"]);
    // The next build runs what was stopped; gated's output is there, with no record.
    let next = t.run_args(json_build(&["--var", "nap=0.1"]));
    next.assert_status(0);
    assert_eq!(next.task("slow")["status"], "success", "{}", next.describe());
    assert_eq!(next.task("quick")["status"], "skipped", "{}", next.describe());
    assert_eq!(next.task("gated")["status"], "skipped", "{}", next.describe());
}

/// A small tmpfs mounted on a folder, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    #[track_caller]
    fn mount(at: std::path::PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&at).expect("create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs root (it mounts a small tmpfs to fill it): `mount -t tmpfs` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_build_keeps_the_records_and_writes_them_once_space_is_freed() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(
        &r#"
[step.slow]
outputs = ["slow.txt"]
stage = false
priority = 10
run = "sleep MARK; echo s > {{ outputs[0] }}"

[step.fill]
outputs = ["fill.txt"]
stage = false
run = "cat /dev/zero > .flux/filler 2>/dev/null; echo f > {{ outputs[0] }}"

[step.after]
inputs = ["fill.txt"]
outputs = ["after.txt"]
stage = false
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"
"#
        .replace("MARK", &mark),
    );
    // The state folder on a file system of its own, which the `fill` task fills.
    let _fs = Tmpfs::mount(t.abs(".flux"), "4m");
    let flux = Bg::spawn_env(&t, &["build", "-j", "2", "--output", "json"], &[("FLUX_DB_BUSY_LIMIT", "30")]);
    // `after` cannot be recorded as running: flux stops `slow`, then retries its records.
    let stopped = wait_until(Duration::from_secs(20), || t.exists("fill.txt") && sleeps_with(&mark).is_empty());
    assert!(stopped, "slow was not stopped after the disk filled up");
    std::thread::sleep(Duration::from_millis(300));
    t.remove(".flux/filler");
    let o = flux.wait(Duration::from_secs(40));
    kill_marked(&mark);
    o.assert_status(1);
    o.stderr_has("database or disk is full").stderr_has("error: state database");
    assert_eq!(o.task("fill")["status"], "success", "{}", o.describe());
    assert_eq!(o.task("slow")["status"], "interrupted", "{}", o.describe());
    assert_eq!(o.task("after")["status"], "queued", "{}", o.describe());
    assert!(!t.exists("after.txt"), "after started although it could not be recorded running");
    // Everything landed once the space was back: the run, its end, every attempt.
    assert_eq!(query_i64(&t, "SELECT count(*) FROM runs WHERE status = 'failed' AND ended_at IS NOT NULL"), 1);
    assert_eq!(attempts_of(&t, "fill"), ["success"]);
    assert_eq!(attempts_of(&t, "slow"), ["interrupted"]);
    assert!(attempts_of(&t, "after").is_empty());
    assert_eq!(query_i64(&t, "SELECT count(*) FROM leases"), 0, "every lease was given back");
    let h = t.run_args(["history"]);
    h.assert_status(0).stdout_has("fill").stdout_has("interrupted");
}

#[test]
fn a_full_disk_that_stays_full_exits_1_with_the_json_and_loses_nothing_written_before() {
    let t = Test::new()
        .fluxfile(
            r#"
[step.fill]
outputs = ["fill.txt"]
stage = false
run = "if [ -e fill-now ]; then cat /dev/zero > .flux/filler 2>/dev/null; fi; echo f > {{ outputs[0] }}"

[step.after]
inputs = ["fill.txt"]
outputs = ["after.txt"]
stage = false
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"
"#,
        )
        .file("fill-now", "")
        .env("FLUX_DB_BUSY_LIMIT", "1");
    let _fs = Tmpfs::mount(t.abs(".flux"), "4m");
    let o = t.run_args(json_build(&[]));
    o.assert_status(1).stderr_has("database or disk is full");
    assert_eq!(o.task("fill")["status"], "success", "{}", o.describe());
    assert_eq!(o.task("after")["status"], "queued", "{}", o.describe());
    t.remove(".flux/filler");
    t.remove("fill-now");
    // Written before the disk filled up: the run, and `fill` recorded running.
    assert_eq!(query_i64(&t, "SELECT count(*) FROM runs"), 1);
    assert_eq!(query_i64(&t, "SELECT count(*) FROM tasks WHERE task_id = 'fill' AND last_status = 'running'"), 1);
    t.run_args(["history"]).assert_status(0);
    // The next build finishes the work.
    let next = t.run_args(json_build(&[]));
    next.assert_status(0);
    assert_eq!(next.task("after")["status"], "success", "{}", next.describe());
}

/// Every command that reads the state DB refuses it with exit 2, printing nothing on
/// stdout and an error naming the database on stderr.
#[track_caller]
fn assert_refused(t: &Test, needle: &str) {
    for args in [
        vec!["status"],
        vec!["status", "--output", "json"],
        vec!["history"],
        vec!["history", "--output", "json"],
        vec!["logs", "a"],
        vec!["build", "-n"],
        vec!["build", "--output", "json"],
        vec!["clear", "a"],
    ] {
        let o = t.run_args(args);
        o.assert_status(2).stdout_is("").stderr_has("error: state database ").stderr_has(needle);
    }
}

const ONE: &str = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo a > {{ outputs[0] }}\"\n";

#[test]
fn commands_refuse_a_state_db_that_is_a_folder() {
    let t = Test::new().fluxfile(ONE).dir(".flux/state.db");
    assert_refused(&t, "is not a file (a folder?)");
    assert!(!t.exists("a.txt"));
}

#[test]
fn commands_refuse_a_state_folder_that_is_a_file() {
    let t = Test::new().fluxfile(ONE).file(".flux", "not a folder");
    assert_refused(&t, ".flux is not a folder: move it away");
    assert_eq!(t.read(".flux"), "not a folder");
}

#[test]
fn commands_refuse_another_programs_database() {
    let t = Test::new().fluxfile(ONE).dir(".flux");
    {
        let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("create a database");
        conn.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'x');",
        )
        .unwrap();
    }
    let before = t.read_bytes(".flux/state.db");
    assert_refused(&t, "not a flux state database (it has tables customers and no schema version)");
    assert_eq!(t.read_bytes(".flux/state.db"), before, "flux added nothing to it");
}

#[test]
fn commands_refuse_a_state_db_with_a_damaged_header() {
    let t = Test::new().fluxfile(ONE);
    t.run_args(json_build(&[])).assert_status(0);
    {
        // Fold the log into the file, so that the header on disk is the one read.
        let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    t.remove_if_exists(".flux/state.db-wal");
    t.remove_if_exists(".flux/state.db-shm");
    // Zero bytes 40..100 of the header: the schema cookie, the user version and more.
    let mut bytes = t.read_bytes(".flux/state.db");
    bytes[40..100].fill(0);
    t.write(".flux/state.db", &bytes);
    assert_refused(&t, "damaged: its header says schema version 0 but it holds flux's tables");
}

#[test]
fn commands_refuse_a_state_db_without_flux_tables() {
    let t = Test::new().fluxfile(ONE).dir(".flux");
    {
        let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("create a database");
        conn.execute_batch("CREATE TABLE runs (id INTEGER PRIMARY KEY); PRAGMA user_version = 1;").unwrap();
    }
    assert_refused(&t, "schema 1 but no table attempts, tasks, digests, leases");
}

#[test]
fn a_missing_or_empty_state_db_is_nothing_recorded_yet() {
    let t = Test::new().fluxfile(ONE);
    t.run_args(["status"]).assert_status(0).stdout_has(". missing");
    t.run_args(["history"]).assert_status(0).stdout_is("");
    t.run_args(["build", "-n"]).assert_status(0);
    assert!(!t.exists(".flux"));
    t.write(".flux/state.db", "");
    t.run_args(["status"]).assert_status(0);
    t.run_args(["history"]).assert_status(0).stdout_is("");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
}
