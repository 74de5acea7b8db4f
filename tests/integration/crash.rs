//! Interrupts and crashes (SPEC §4, §6): Ctrl-C (SIGINT, SIGTERM, twice), kill -9 of flux at
//! random moments, and `stage = false`.
//!
//! Real processes and real signals: flux runs in the background, the test sends it signals
//! by pid and finds the task processes again by markers in `/proc/*/cmdline`.

use std::time::{Duration, Instant};

use crate::operations::{Bg, assert_no_process_left, history, kill_marked, procs_with, sleep_marker, sleeps_with};
use crate::operations::{wait_until, word_marker};
use crate::test::*;

/// `n` tasks `s[1]`..`s[n]`, each sleeping `{{ nap }}` seconds (a marker) then writing its output.
fn sleepers(n: usize, nap: &str, prefix: &str) -> String {
    let values: Vec<String> = (1..=n).map(|i| format!("\"{i}\"")).collect();
    format!(
        "[vars]\nnap = \"{nap}\"\n\n[step.s]\nparams = {{ n = [{}] }}\noutputs = [\"out/{{{{ n }}}}.txt\"]\nrun = \"{prefix}sleep {{{{ nap }}}}; echo {{{{ n }}}} > {{{{ outputs[0] }}}}\"\n",
        values.join(", ")
    )
}

fn run_statuses(t: &Test) -> Vec<String> {
    let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
    let mut st = conn.prepare("SELECT status FROM runs ORDER BY id").unwrap();
    st.query_map([], |r| r.get::<_, String>(0)).unwrap().map(|r| r.unwrap()).collect()
}

fn integrity(t: &Test) -> String {
    let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).expect("integrity_check")
}

#[test]
fn ctrl_c_stops_the_running_tasks_records_them_interrupted_and_exits_130() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(&sleepers(6, &mark, ""));
    let bg = Bg::spawn(&t, &["build", "-j", "4", "--output", "json"]);
    let four = wait_until(Duration::from_secs(30), || sleeps_with(&mark).len() == 4);
    if !four {
        kill_marked(&mark);
        panic!("4 tasks never ran at once: {:?}", procs_with(&mark));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sleeps_with(&mark).len(), 4, "-j 4");
    let sent = Instant::now();
    bg.signal(libc::SIGINT);
    let o = bg.wait(Duration::from_secs(20));
    let took = sent.elapsed();
    assert_no_process_left(&mark, Duration::from_secs(2), "after Ctrl-C");
    o.assert_status(130);
    // Tasks that heed TERM end at once; flux's 10 s grace before KILL must not be waited.
    assert!(took < Duration::from_secs(8), "flux took {took:?} to stop after Ctrl-C");
    o.stderr_has("interrupted: stopping running tasks");
    assert_eq!(o.summary("ran"), 0);
    assert_eq!(o.summary("interrupted"), 6, "4 running and 2 never started\n{}", o.describe());
    assert_eq!(o.ids_with_status("interrupted").len(), 6);
    assert!(!t.exists("out/1.txt") && t.tree("out").is_empty(), "no output from interrupted tasks");

    let h = history(&t);
    assert_eq!(h.len(), 4, "the 4 started tasks have an attempt, the 2 queued ones none: {h:#?}");
    assert!(h.iter().all(|a| a["status"] == "interrupted"), "{h:#?}");
    assert_eq!(run_statuses(&t), ["interrupted"]);

    // Nothing new was launched after the signal: the 2 queued tasks never ran.
    let o = t.run_args(json_build(&["-j", "6", "--var", "nap=0.1"]));
    o.assert_status(0).assert_summary(6, 0, 0, 0);
    for n in 1..=6 {
        assert_eq!(t.read(&format!("out/{n}.txt")), format!("{n}\n"));
    }
}

#[test]
fn sigterm_is_handled_like_ctrl_c() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(&sleepers(2, &mark, ""));
    let bg = Bg::spawn(&t, &["build", "-j", "2", "--output", "json"]);
    if !wait_until(Duration::from_secs(30), || sleeps_with(&mark).len() == 2) {
        kill_marked(&mark);
        panic!("the tasks never started");
    }
    let sent = Instant::now();
    bg.signal(libc::SIGTERM);
    let o = bg.wait(Duration::from_secs(20));
    let took = sent.elapsed();
    assert_no_process_left(&mark, Duration::from_secs(2), "after SIGTERM");
    o.assert_status(130).stderr_has("interrupted: stopping running tasks");
    assert!(took < Duration::from_secs(8), "took {took:?} from the signal");
    assert_eq!(o.summary("interrupted"), 2);
    assert!(history(&t).iter().all(|a| a["status"] == "interrupted"));
}

#[test]
fn a_second_ctrl_c_kills_tasks_that_ignore_term() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(&sleepers(2, &mark, "trap '' TERM; "));
    let mut bg = Bg::spawn(&t, &["build", "-j", "2"]);
    if !wait_until(Duration::from_secs(30), || sleeps_with(&mark).len() == 2) {
        kill_marked(&mark);
        panic!("the tasks never started");
    }
    bg.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(1000));
    let waiting = bg.running();
    let alive = sleeps_with(&mark).len();
    let sent = Instant::now();
    bg.signal(libc::SIGINT);
    let o = bg.wait(Duration::from_secs(20));
    o.stderr_has("interrupted: stopping running tasks (press Ctrl-C again to kill them)");
    let took = sent.elapsed();
    assert_no_process_left(&mark, Duration::from_secs(2), "after the second Ctrl-C");
    assert!(waiting, "after one Ctrl-C flux waits (up to 10 s) for tasks that ignore TERM\n{}", o.describe());
    assert_eq!(alive, 2, "the tasks ignore TERM");
    o.assert_status(130);
    // At once, not at the end of the first Ctrl-C's 10 s grace (9 s from now).
    assert!(took < Duration::from_secs(6), "the second Ctrl-C took {took:?}\n{}", o.describe());
    assert!(history(&t).iter().all(|a| a["status"] == "interrupted"));
}

/// A small LCG (Knuth's MMIX constants): reproducible rounds without a dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

const TASKS: usize = 12;

fn chunked(mark: &str) -> String {
    let values: Vec<String> = (1..=TASKS).map(|i| format!("\"{i:02}\"")).collect();
    format!(
        "[step.w]\nparams = {{ n = [{}] }}\noutputs = [\"out/{{{{ n }}}}.txt\"]\nrun = \": {mark}; for i in 1 2 3 4 5; do echo {{{{ n }}}}:line$i; sleep 0.05; done > {{{{ outputs[0] }}}}\"\n",
        values.join(", ")
    )
}

fn complete(n: usize) -> String {
    (1..=5).map(|i| format!("{n:02}:line{i}\n")).collect()
}

/// Every file under out/ is a complete output; returns how many there are.
#[track_caller]
fn check_outputs(t: &Test, round: usize, when: &str) -> usize {
    let files = t.tree("out");
    for (path, bytes) in &files {
        let name = path.trim_start_matches("out/").trim_end_matches(".txt");
        let n: usize = name.parse().unwrap_or_else(|_| panic!("round {round} {when}: unexpected file {path}"));
        assert_eq!(
            String::from_utf8_lossy(bytes),
            complete(n),
            "round {round} {when}: {path} is visible but not complete"
        );
    }
    files.len()
}

fn crash_rounds(seed: u64, rounds: usize) {
    let mark = word_marker("crash");
    let t = Test::new().fluxfile(&chunked(&mark));
    let mut rng = Lcg(seed);
    for round in 0..rounds {
        t.remove_if_exists("out");
        let delay = Duration::from_millis(rng.next() % 601);
        let bg = Bg::spawn(&t, &["build", "-j", "2"]);
        std::thread::sleep(delay);
        let killed = bg.kill9();
        let seen = check_outputs(&t, round, &format!("right after kill -9 at {delay:?}"));
        // The killed flux's tasks live on; they write to its staging folder, never to out/.
        let orphans_done = wait_until(Duration::from_secs(5), || procs_with(&mark).is_empty());
        assert!(orphans_done, "round {round}: orphaned tasks still running 5 s after kill -9");
        std::thread::sleep(Duration::from_millis(60));
        let after = check_outputs(&t, round, "after the orphaned tasks ended");
        assert_eq!(after, seen, "round {round}: outputs appeared after flux was dead (killed at {delay:?})");
        if t.exists(".flux/state.db") {
            assert_eq!(integrity(&t), "ok", "round {round}: the state DB is damaged");
        }

        // The next build takes the dead process's leases over at once and finishes the work.
        let o = t.run_args(json_build(&["-j", "6"]));
        o.assert_status(0);
        o.stderr_lacks("another flux process");
        assert_eq!(o.summary("failed"), 0, "round {round}\n{}", o.describe());
        assert_eq!(
            (o.summary("ran") + o.summary("skipped")) as usize,
            TASKS,
            "round {round} (kill at {delay:?}, exit {})\n{}",
            killed.status,
            o.describe()
        );
        assert_eq!(o.summary("skipped") as usize, seen, "round {round}: what was complete is kept\n{}", o.describe());
        assert_eq!(check_outputs(&t, round, "after the next build"), TASKS);
    }
    let runs = run_statuses(&t);
    assert_eq!(runs.iter().filter(|s| *s == "success").count(), rounds, "{runs:?}");
}

#[test]
fn kill_9_at_random_moments_never_leaves_a_partial_output_seed_1() {
    crash_rounds(1, 10);
}

#[test]
fn kill_9_at_random_moments_never_leaves_a_partial_output_seed_2() {
    crash_rounds(0x5eed_f1a5, 10);
}

#[test]
fn a_stage_false_task_running_when_flux_died_is_rerun_as_incomplete() {
    // The command's inner shell is not the leader of the task's process group, so it
    // outlives flux's kill -9 and would go on writing into the output in place: the next
    // build must end it before it reruns the task.
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(
        &r#"
[vars]
nap = "MARK"

[step.s]
stage = false
outputs = ["out/s.txt"]
run = "sh -c 'echo part1 > {{ outputs[0] }}; sleep {{ nap }}; echo part2 >> {{ outputs[0] }}'; true"
"#
        .replace("MARK", &mark),
    );
    let bg = Bg::spawn(&t, &["build"]);
    let started = wait_until(Duration::from_secs(30), || !sleeps_with(&mark).is_empty() && t.exists("out/s.txt"));
    bg.kill9();
    if !started {
        kill_marked(&mark);
        panic!("the task never started");
    }
    let orphaned = procs_with(&mark).iter().any(|(_, argv)| argv.first().is_some_and(|a| a.ends_with("sh")));
    if !orphaned {
        kill_marked(&mark);
        panic!("the task's inner shell did not outlive flux: the test cannot tell");
    }
    assert_eq!(t.read("out/s.txt"), "part1\n", "stage = false writes in place");
    let dry = t.run_args(["build", "-n", "--var", "nap=0.1"]);
    dry.assert_status(0).stdout_has("would run s (incomplete)");
    let o = t.run_args(json_build(&["--var", "nap=0.1"]));
    let left = procs_with(&mark);
    kill_marked(&mark);
    assert!(left.is_empty(), "the dead run's task was still running after the rebuild: {left:?}");
    o.assert_status(0).assert_summary(1, 0, 0, 0).stderr_has("left running by flux run");
    o.assert_task("s", "success", Some("incomplete"));
    assert_eq!(t.read("out/s.txt"), "part1\npart2\n");
}

#[test]
fn a_failed_stage_false_task_leaves_nothing_behind() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(
        &r#"
[step.fails]
stage = false
outputs = ["out/fails.txt"]
run = "echo partial > {{ outputs[0] }}; exit 1"

[step.times_out]
stage = false
outputs = ["out/times_out.txt"]
timeout = "1s"
run = "echo partial > {{ outputs[0] }}; sleep MARK"

[step.dir]
stage = false
outputs = ["out/dir/"]
run = "mkdir -p {{ outputs[0] }}; echo partial > {{ outputs[0] }}/a.txt; exit 1"

[step.ok]
stage = false
outputs = ["out/ok.txt"]
run = "echo ok > {{ outputs[0] }}"
"#
        .replace("MARK", &mark),
    );
    let o = t.run_args(json_build(&["-j", "4"]));
    o.stderr_has("FAIL fails: command exited with status 1");
    assert_no_process_left(&mark, Duration::from_secs(2), "after the timeout");
    o.assert_status(1).assert_summary(1, 0, 3, 0);
    for p in ["out/fails.txt", "out/times_out.txt", "out/dir"] {
        assert!(!t.exists(p), "{p}: what a failed stage = false task wrote is removed");
    }
    assert_eq!(t.read("out/ok.txt"), "ok\n");
    // Next time they run again, as failed.
    let dry = t.run_args(["build", "-n"]);
    dry.assert_status(0).stdout_has("would run fails (").stdout_has("dry run: 3 tasks would run, 1 up to date");
}
