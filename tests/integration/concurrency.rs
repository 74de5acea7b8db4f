//! Concurrent builds (SPEC §6): several `flux build` processes on one project claim tasks
//! with leases in the state DB, so every task runs exactly once; a process that finds a task
//! held by another live process waits for its result; a dead or silent holder's lease is
//! taken over.

use std::time::{Duration, SystemTime};

use crate::dbfaults::Lock;
use crate::operations::{Bg, kill_marked, sleep_marker, sleeps_with, wait_until};
use crate::test::*;

const N: usize = 20;

fn shared_project() -> String {
    let values: Vec<String> = (1..=N).map(|i| format!("\"{i:02}\"")).collect();
    let inputs: Vec<String> = (1..=N).map(|i| format!("\"out/{i:02}.txt\"")).collect();
    format!(
        r#"
[step.t]
params = {{ n = [{}] }}
outputs = ["out/{{{{ n }}}}.txt"]
run = "echo {{{{ n }}}} >> shared.log; sleep 0.3; echo {{{{ n }}}} > {{{{ outputs[0] }}}}"

[step.all]
inputs = [{}]
outputs = ["all.txt"]
run = "echo all >> shared.log; cat {{{{ inputs }}}} > {{{{ outputs[0] }}}}"
"#,
        values.join(", "),
        inputs.join(", ")
    )
}

#[test]
fn four_builds_at_once_run_every_task_exactly_once() {
    let t = Test::new().fluxfile(&shared_project());
    let mut expected: Vec<String> = (1..=N).map(|i| format!("{i:02}")).collect();
    expected.push("all".into());
    expected.sort();
    for round in 0..3 {
        t.remove_if_exists(".flux");
        t.remove_if_exists("out");
        t.remove_if_exists("all.txt");
        t.remove_if_exists("shared.log");
        let procs: Vec<Bg> = (0..4).map(|_| Bg::spawn(&t, &["build", "-j", "2", "--output", "json"])).collect();
        let outs: Vec<Output> = procs.into_iter().map(|p| p.wait(Duration::from_secs(30))).collect();
        for o in &outs {
            o.assert_status(0).stderr_lines_match(&["another flux process is running it"]);
            for task in o.tasks() {
                let st = task["status"].as_str().unwrap_or("");
                assert!(st == "success" || st == "skipped", "round {round}: {} is {st}\n{}", task["id"], o.describe());
            }
        }
        let mut log: Vec<String> = t.read("shared.log").lines().map(String::from).collect();
        log.sort();
        assert_eq!(log, expected, "round {round}: every task ran exactly once");
        let ran: u64 = outs.iter().map(|o| o.summary("ran")).sum();
        assert_eq!(ran as usize, N + 1, "round {round}: the summaries' `ran` add up to every task once");
        let busy = outs.iter().filter(|o| o.summary("ran") > 0).count();
        assert!(
            busy >= 2,
            "round {round}: the work was not shared: ran per process {:?}",
            outs.iter().map(|o| o.summary("ran")).collect::<Vec<_>>()
        );
        let all: String = (1..=N).map(|i| format!("{i:02}\n")).collect();
        assert_eq!(t.read("all.txt"), all);
    }
}

#[test]
fn a_build_waits_for_a_task_another_live_build_is_running_and_takes_its_result() {
    let t = Test::new().fluxfile(
        r#"
[step.slow]
outputs = ["slow.txt"]
run = "echo run >> trace.txt; while [ ! -e go ]; do sleep 0.05; done; echo done > {{ outputs[0] }}"

[step.after]
inputs = ["slow.txt"]
outputs = ["after.txt"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"
"#,
    );
    let a = Bg::spawn(&t, &["build", "slow", "--output", "json"]);
    assert!(wait_until(Duration::from_secs(30), || t.exists("trace.txt")), "the first build never started slow");
    let b = Bg::spawn(&t, &["build", "--output", "json"]);
    // `slow` goes on only once the second build has opened its run (and so planned, and
    // found `slow` leased), plus a margin for the lease check that follows.
    let runs = || -> i64 {
        let Ok(c) = rusqlite::Connection::open(t.abs(".flux/state.db")) else { return 0 };
        let _ = c.busy_timeout(Duration::from_secs(5));
        c.query_row("SELECT count(*) FROM runs", [], |r| r.get(0)).unwrap_or(0)
    };
    let opened = wait_until(Duration::from_secs(30), || runs() >= 2);
    std::thread::sleep(Duration::from_millis(1000));
    t.write("go", "");
    let (a_start, b_start) = (a.started, b.started);
    let ao = a.wait(Duration::from_secs(60));
    let bo = b.wait(Duration::from_secs(60));
    assert!(opened, "the second build never opened its run");
    ao.assert_status(0).assert_summary(1, 0, 0, 0);
    bo.assert_status(0).assert_summary(1, 1, 0, 0);
    assert_eq!(bo.task("slow")["status"], "skipped", "{}", bo.describe());
    bo.assert_task("after", "success", Some("missing-output"));
    bo.stderr_has("wait slow: another flux process is running it");
    assert_eq!(t.read("trace.txt"), "run\n", "slow ran once");
    assert_eq!(t.read("after.txt"), "done\n");
    let a_end = a_start + ao.elapsed;
    let b_end = b_start + bo.elapsed;
    assert!(b_end >= a_end, "the second build ended before the first finished the task it waited for");
}

#[test]
fn the_lease_of_a_killed_build_is_taken_over_at_once() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(
        &r#"
[vars]
nap = "MARK"

[step.s]
outputs = ["s.txt"]
run = "sleep {{ nap }}; echo s > {{ outputs[0] }}"
"#
        .replace("MARK", &mark),
    );
    let a = Bg::spawn(&t, &["build"]);
    let started = wait_until(Duration::from_secs(10), || !sleeps_with(&mark).is_empty());
    a.kill9();
    kill_marked(&mark);
    assert!(started, "the task never started");
    let o = t.run_args(json_build(&["--var", "nap=0.1"]));
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    o.stderr_lacks("another flux process");
    // A live holder's lease is waited for until it is 30 s old: well under that means the
    // dead holder's was taken over at once (the stderr above says it was not waited for).
    assert!(o.elapsed < Duration::from_secs(20), "took {:?}: the dead holder's lease was waited for", o.elapsed);
    assert_eq!(t.read("s.txt"), "s\n");
}

/// Put a lease on `task` held by a process on another host, last heard of `age_s` ago.
fn foreign_lease(t: &Test, task: &str, age_s: f64) {
    let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    conn.execute(
        "INSERT OR REPLACE INTO leases (task_id, holder, pid, host, heartbeat_at, run_id) VALUES (?1, 'elsewhere:1:0', 1, 'elsewhere', ?2, 0)",
        rusqlite::params![task, now - age_s],
    )
    .expect("insert a lease");
}

const ONE: &str = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo a > {{ outputs[0] }}\"\n\n[step.b]\noutputs = [\"b.txt\"]\nrun = \"echo b > {{ outputs[0] }}\"\n";

#[test]
fn a_lease_silent_for_30_s_is_taken_over_and_a_fresher_one_is_waited_for() {
    let t = Test::new().fluxfile(ONE);
    // Create the state DB.
    t.run_args(json_build(&["b"])).assert_status(0);
    // Silent for 31 s: taken over at once.
    foreign_lease(&t, "a", 31.0);
    let o = t.run_args(json_build(&["a"]));
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    o.stderr_lacks("another flux process");
    assert!(o.elapsed < Duration::from_secs(20), "took {:?}", o.elapsed);

    // Heard of 27.5 s ago (by a holder on another host, whose pid cannot be checked): flux
    // waits until it is 30 s old, about 2.5 s, then takes it over and runs the task.
    t.remove("a.txt");
    foreign_lease(&t, "a", 27.5);
    // Measured from the lease's last heartbeat, which is what flux measures: it cannot be
    // taken over before it is 30 s old, 2.5 s from now.
    let written = std::time::Instant::now();
    let o = t.run_args(json_build(&["a"]));
    let waited = written.elapsed();
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    o.stderr_has("wait a: another flux process is running it");
    assert!(
        waited >= Duration::from_millis(2400) && waited < Duration::from_secs(25),
        "took {waited:?} from the heartbeat: expected about 2.5 s"
    );
    assert_eq!(t.read("a.txt"), "a\n");
}

#[test]
fn a_build_waiting_for_another_builds_task_takes_its_failure_instead_of_running_it_again() {
    let t = Test::new().fluxfile(
        r#"
[step.slow]
outputs = ["slow.txt"]
run = "echo run >> trace.txt; sleep 1; exit 1"

[step.after]
inputs = ["slow.txt"]
outputs = ["after.txt"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"
"#,
    );
    let a = Bg::spawn(&t, &["build", "slow", "--output", "json"]);
    assert!(wait_until(Duration::from_secs(10), || t.exists("trace.txt")), "the first build never started slow");
    let b = Bg::spawn(&t, &["build", "--output", "json"]);
    let ao = a.wait(Duration::from_secs(20));
    ao.stderr_has("FAIL slow: command exited with status 1");
    let bo = b.wait(Duration::from_secs(20));
    ao.assert_status(1);
    bo.stderr_has("wait slow: another flux process is running it");
    assert_eq!(t.read("trace.txt"), "run\n", "slow ran once, in the first build\n{}", bo.describe());
    bo.assert_status(1);
    assert_ne!(bo.task("slow")["status"], "success");
    assert_eq!(bo.task("after")["status"], "upstream_failed", "{}", bo.describe());
}

#[test]
fn a_build_that_loaded_its_records_before_a_failure_was_written_takes_the_failure_instead_of_running_it_again() {
    let t = Test::new().fluxfile(
        r#"
[step.first]
outputs = ["first.txt"]
run = "echo first > {{ outputs[0] }}"

[step.bad]
outputs = ["bad.txt"]
run = "touch started; while [ ! -e go ]; do sleep 0.02; done; echo run >> bad.log; exit 1"
"#,
    );
    t.run_args(json_build(&["first"])).assert_status(0);
    let a = Bg::spawn(&t, &["build", "bad", "--output", "json"]);
    assert!(wait_until(Duration::from_secs(10), || t.exists("started")), "the first build never started bad");
    // Another process holds the state DB while `bad` fails: the first build cannot write
    // the failure yet, and a second build starts and loads its records meanwhile.
    let lock = Lock::take(t.abs(".flux/state.db"), Duration::from_secs(30));
    t.write("go", "");
    assert!(wait_until(Duration::from_secs(10), || t.exists("bad.log")), "bad never failed");
    std::thread::sleep(Duration::from_millis(300));
    let b = Bg::spawn(&t, &["build", "bad", "--output", "json"]);
    std::thread::sleep(Duration::from_millis(1500));
    lock.release();
    let ao = a.wait(Duration::from_secs(30));
    let bo = b.wait(Duration::from_secs(30));
    ao.stderr_has("FAIL bad: command exited with status 1");
    bo.stderr_has("FAIL bad: failed in another flux process");
    ao.assert_status(1);
    assert_eq!(ao.task("bad")["status"], "failed", "{}", ao.describe());
    assert_eq!(t.read("bad.log"), "run\n", "bad ran once\n{}", bo.describe());
    bo.assert_status(1);
    assert_eq!(bo.task("bad")["status"], "failed", "{}", bo.describe());
    let error = bo.task("bad")["error"].as_str().unwrap_or_default().to_string();
    assert!(error.starts_with("failed in another flux process (run 2)"), "{error}\n{}", bo.describe());
}

/// Rounds of [`eight_builds_at_once_run_each_failing_task_exactly_once`]: 50 (about 30 s
/// on two cores), or `FLUX_TEST_ROUNDS`.
fn rounds() -> usize {
    std::env::var("FLUX_TEST_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}

#[test]
fn eight_builds_at_once_run_each_failing_task_exactly_once() {
    // `bad` tasks fail only once every build has started (loaded its records and begun
    // its run), so a build that runs one a second time has ignored a failure it had
    // not seen when it started.
    let t = Test::new().fluxfile(
        r#"
[step.ok]
params = { n = ["1", "2", "3"] }
outputs = ["out/ok-{{ n }}.txt"]
run = "echo {{ n }} >> ok.log; sleep 0.1; echo {{ n }} > {{ outputs[0] }}"

[step.bad]
params = { n = ["1", "2", "3"] }
outputs = ["out/bad-{{ n }}.txt"]
run = "echo {{ n }} >> bad.log; while [ ! -e go ]; do sleep 0.02; done; exit 1"

[step.after]
params = { n = ["1", "2", "3"] }
inputs = ["out/bad-{{ n }}.txt", "out/ok-{{ n }}.txt"]
outputs = ["out/after-{{ n }}.txt"]
run = "echo after >> after.log; cat {{ inputs }} > {{ outputs[0] }}"
"#,
    );
    for round in 0..rounds() {
        for f in [".flux", "out", "ok.log", "bad.log", "after.log", "go"] {
            t.remove_if_exists(f);
        }
        let procs: Vec<Bg> = (0..8).map(|_| Bg::spawn(&t, &["build", "-j", "2", "--output", "json"])).collect();
        let begun = wait_until(Duration::from_secs(30), || {
            crate::dbfaults::try_query_i64(&t, "SELECT count(*) FROM runs").ok() == Some(8)
        });
        t.write("go", "");
        let outs: Vec<Output> = procs.into_iter().map(|p| p.wait(Duration::from_secs(40))).collect();
        assert!(begun, "round {round}: the eight builds did not all begin");
        let sorted = |f: &str| {
            let mut v: Vec<String> = t
                .maybe_read(f)
                .map(|b| String::from_utf8_lossy(&b).lines().map(String::from).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let all: Vec<String> = outs.iter().map(|o| o.describe()).collect();
        assert_eq!(sorted("bad.log"), ["1", "2", "3"], "round {round}: each failing task ran once\n{}", all.join("\n"));
        assert_eq!(sorted("ok.log"), ["1", "2", "3"], "round {round}: each task ran once");
        assert!(!t.exists("after.log"), "round {round}: a task after a failure ran");
        for o in &outs {
            // Each build reports the failures, its own or taken from another build, and
            // may wait for tasks another build holds, or (on a loaded machine) for the
            // state DB's lock.
            o.assert_status(1).stderr_lines_match(&[
                "FAIL bad[",
                "    ",
                "skip after[",
                "flux: waiting for the state DB ",
                "another flux process is running it",
            ]);
            for n in 1..=3 {
                assert_eq!(o.task(&format!("bad[{n}]"))["status"], "failed", "round {round}\n{}", o.describe());
                assert_eq!(
                    o.task(&format!("after[{n}]"))["status"],
                    "upstream_failed",
                    "round {round}\n{}",
                    o.describe()
                );
            }
        }
    }
}

/// The lease rows of the project's state DB, by task.
fn leased(t: &Test) -> Vec<String> {
    let Ok(c) = rusqlite::Connection::open(t.abs(".flux/state.db")) else { return Vec::new() };
    let _ = c.busy_timeout(Duration::from_secs(5));
    let Ok(mut q) = c.prepare("SELECT task_id FROM leases ORDER BY task_id") else { return Vec::new() };
    q.query_map([], |r| r.get(0)).map(|rows| rows.flatten().collect()).unwrap_or_default()
}

#[test]
fn a_task_claimed_before_it_was_ready_and_then_found_up_to_date_gives_its_lease_back() {
    // `b` is claimed with `a` (it is ready once `a` ends); `a` runs again but writes the
    // same bytes, so `b` is up to date (early cutoff) and must not stay held while the
    // build goes on with `z`.
    let t = Test::new().fluxfile(
        r#"
[step.a]
inputs = ["src.txt"]
outputs = ["a.txt"]
run = "tr -d ' ' < {{ inputs[0] }} > {{ outputs[0] }}"

[step.b]
inputs = ["a.txt"]
outputs = ["b.txt"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"

[step.z]
outputs = ["z.txt"]
run = "while [ ! -e go ]; do sleep 0.05; done; echo z > {{ outputs[0] }}"
"#,
    );
    t.write("src.txt", "x\n");
    t.write("go", "");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(3, 0, 0, 0);
    t.write("src.txt", "x \n");
    t.remove_if_exists("go");
    t.remove_if_exists("z.txt");
    let build = Bg::spawn(&t, &["build", "-j", "2", "--output", "json"]);
    // Claimed together (a, b, z), then a's and b's leases are given back with their
    // records (written within 2 s while z runs).
    let released = wait_until(Duration::from_secs(20), || leased(&t) == ["z"]);
    let seen = leased(&t);
    t.write("go", "");
    let o = build.wait(Duration::from_secs(30));
    o.assert_status(0).assert_summary(2, 1, 0, 0);
    o.assert_task("a", "success", Some("input-changed"));
    assert_eq!(o.task("b")["status"], "skipped", "{}", o.describe());
    assert!(released, "while z ran, the leases held were {seen:?}, not just z's");
    assert!(leased(&t).is_empty(), "every lease is given back at the end: {:?}", leased(&t));
}

#[test]
fn a_task_claimed_before_it_was_ready_that_then_waits_for_a_source_gives_its_lease_back() {
    // `b` is claimed with `a`; once `a` has run, `b` waits for `late.txt`, and must not
    // hold its lease meanwhile (another build may be the one to wait for it, or make it).
    let t = Test::new().fluxfile(
        r#"
[step.a]
outputs = ["a.txt"]
run = "echo a > {{ outputs[0] }}"

[step.b]
inputs = ["a.txt", "late.txt"]
outputs = ["b.txt"]
wait = "60s"
poll = "100ms"
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#,
    );
    let build = Bg::spawn(&t, &["build", "b", "-j", "2", "--output", "json"]);
    let waiting = wait_until(Duration::from_secs(20), || t.exists("a.txt") && leased(&t).is_empty());
    let seen = leased(&t);
    t.write("late.txt", "late\n");
    let o = build.wait(Duration::from_secs(30));
    o.assert_status(0).assert_summary(2, 0, 0, 0);
    o.stderr_has("wait b: missing source `late.txt` needed by b");
    assert!(waiting, "while b waited for its source, the leases held were {seen:?}, not none");
    assert_eq!(t.read("b.txt"), "a\nlate\n");
}
