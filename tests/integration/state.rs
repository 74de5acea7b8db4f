//! State (SPEC §8): `.flux/state.db`, its schema version, logs.

use crate::test::*;

const ONE: &str = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo a > {{ outputs[0] }}\"\n";

#[test]
fn a_build_creates_the_state_database() {
    let t = Test::new().fluxfile(ONE);
    t.run_args(json_build(&[])).assert_status(0);
    assert!(t.exists(".flux/state.db"));
    let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("user_version");
    assert!(v >= 1, "the schema is versioned (user_version = {v})");
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("journal_mode");
    assert_eq!(mode, "wal");
}

#[test]
fn run_ids_increase_with_each_build() {
    let t = Test::new().fluxfile(ONE);
    let a = t.run_args(json_build(&[])).json()["run_id"].as_i64();
    let b = t.run_args(json_build(&[])).json()["run_id"].as_i64();
    assert!(a.is_some() && b.is_some() && b > a, "{a:?} then {b:?}");
}

#[test]
fn a_dry_run_creates_no_state() {
    let t = Test::new().fluxfile(ONE);
    t.run_args(["build", "-n"])
        .assert_status(0)
        .stdout_is("would run a (missing-output)\ndry run: 1 task would run, 0 up to date\n");
    assert!(!t.exists(".flux"));
    assert!(!t.exists("a.txt"));
}

fn set_user_version(t: &Test, v: i64) {
    let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
    conn.pragma_update(None, "user_version", v).expect("set user_version");
}

#[test]
fn a_state_database_from_a_newer_flux_is_refused_and_left_untouched() {
    let t = Test::new().fluxfile(ONE);
    t.run_args(json_build(&[])).assert_status(0);
    let known: i64 = rusqlite::Connection::open(t.abs(".flux/state.db"))
        .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .expect("user_version");
    set_user_version(&t, 99);
    for f in [".flux/state.db-wal", ".flux/state.db-shm"] {
        if t.exists(f) {
            t.remove(f);
        }
    }
    let before = t.read_bytes(".flux/state.db");
    t.remove("a.txt");
    let db = t.abs(".flux/state.db");
    let expected = format!(
        "error: state database {} was written by a newer flux (schema 99; this flux knows up to {known}): upgrade flux, or point `state` at another folder\n",
        db.display()
    );
    for args in
        [vec!["build"], vec!["build", "--output", "json"], vec!["build", "-n"], vec!["history"], vec!["logs", "a"]]
    {
        let o = t.run_args(args.clone());
        o.assert_status(2).stderr_has("was written by a newer flux (schema 99").stdout_is("");
        if args == ["build"] {
            o.stderr_is(&expected);
        }
    }
    assert_eq!(t.read_bytes(".flux/state.db"), before, "the database file is unchanged");
    assert!(!t.exists("a.txt"), "nothing ran");
}

#[test]
fn logs_live_under_the_state_folder_by_step_task_and_attempt() {
    let t = Test::new().fluxfile(
        "[step.r]\nparams = { date = \"date\", region = [\"eu\"] }\noutputs = [\"r/{{ region }}/{{ date }}.txt\"]\nrun = \"echo log line; echo x > {{ outputs[0] }}\"\n",
    );
    t.run_args(json_build(&["--date", "2024-01-05"])).assert_status(0).assert_summary(1, 0, 0, 0);
    let logs: Vec<String> = t.tree(".flux/logs").into_keys().collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = &logs[0];
    // <run>-<attempt>.log: the first run's first attempt.
    assert!(log.starts_with(".flux/logs/r/r") && log.ends_with("/1-1.log"), "{log}");
    assert!(log.contains("date=2024-01-05,region=eu"), "the task key keeps the id readable: {log}");
    assert_eq!(printed(&t.read(log)), "log line\n");
}

#[test]
fn a_long_write_ahead_log_is_folded_into_the_database_when_a_build_ends() {
    // Every new process reads the whole log to rebuild SQLite's index of it, so a long
    // one would tax every later command; flux folds it in once it passes 512 KiB.
    let t = Test::new().fluxfile(
        "[step.a]\nparams = { day = \"date\" }\noutputs = [\"out/{{ day }}.txt\"]\nrun = \"echo {{ day }} > {{ outputs[0] }}\"\n",
    );
    let wal = || std::fs::metadata(t.abs(".flux/state.db-wal")).map_or(0, |m| m.len());
    t.run_args(json_build(&["--date-range", "2024-01-01..2025-06-30"])).assert_status(0).assert_summary(547, 0, 0, 0);
    assert!(wal() <= 512 * 1024, "the log was folded: {} bytes left", wal());
    let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
    let n: i64 = conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0)).expect("count tasks");
    assert_eq!(n, 547, "nothing was lost in the fold");
    drop(conn);
    // A no-op writes a few pages and keeps them in the log (no fsync for a fold).
    t.run_args(json_build(&["--date-range", "2024-01-01..2025-06-30"])).assert_status(0).assert_summary(0, 547, 0, 0);
    assert!(wal() > 0 && wal() <= 512 * 1024, "{} bytes", wal());
}
