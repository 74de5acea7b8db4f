//! Execution (SPEC §4, §6): parallelism, where and how commands run, logs, staging,
//! failures, retries, timeouts.

use std::time::Duration;

use crate::fluxfile::max_overlap;
use crate::operations::{assert_no_process_left, history, sleep_marker, sleeps_with, wait_until};
use crate::test::*;

#[test]
fn dash_j_4_runs_four_tasks_at_once() {
    let t = Test::new().fluxfile(
        r#"
[step.s]
params = { n = ["1", "2", "3", "4"] }
outputs = ["s/{{ n }}.txt"]
run = "date +%s%N > {{ outputs[0] }}; sleep 0.5; date +%s%N >> {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&["-j", "4"]));
    o.assert_status(0).assert_summary(4, 0, 0, 0);
    // From the tasks' own clocks: all four were running at one moment.
    assert_eq!(max_overlap(&t, &["s/1.txt", "s/2.txt", "s/3.txt", "s/4.txt"]), 4);
}

#[test]
fn parallel_builds_never_lose_a_finished_task() {
    // Many short independent tasks finishing at nearly the same moment: every one must be
    // accounted for (success), none left `queued` by a build that already said it was done.
    let t = Test::new().fluxfile(
        r#"
[step.q]
params = { n = ["1", "2", "3", "4", "5", "6"] }
outputs = ["q/{{ n }}.txt"]
run = "echo {{ n }} > {{ outputs[0] }}"

[step.all]
inputs = ["q/1.txt", "q/2.txt", "q/3.txt", "q/4.txt", "q/5.txt", "q/6.txt"]
outputs = ["all.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#,
    );
    for round in 0..12 {
        t.remove_if_exists(".flux");
        t.remove_if_exists("q");
        t.remove_if_exists("all.txt");
        let o = t.run_args(json_build(&["-j", "4"]));
        assert_eq!(
            o.ids_with_status("queued"),
            Vec::<String>::new(),
            "round {round}: tasks left queued\n{}",
            o.describe()
        );
        o.assert_status(0).assert_summary(7, 0, 0, 0);
        assert_eq!(t.read("all.txt"), "1\n2\n3\n4\n5\n6\n", "round {round}");
    }
}

#[test]
fn commands_run_in_the_fluxfiles_folder() {
    let t = Test::new()
        .fluxfile("[step.w]\noutputs = [\"w.txt\"]\nrun = \"pwd > {{ outputs[0] }}\"\n")
        .current_dir("some/sub");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("w.txt").trim(), t.path().to_string_lossy());
}

#[test]
fn commands_get_dev_null_as_stdin() {
    let t = Test::new()
        .fluxfile("[step.w]\noutputs = [\"w.txt\"]\nrun = \"cat > {{ outputs[0] }}; echo end >> {{ outputs[0] }}\"\n")
        .stdin("this must not reach the command\n");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("w.txt"), "end\n");
}

#[test]
fn the_log_holds_the_commands_stdout_and_stderr() {
    let t = Test::new().fluxfile(
        r#"
[step.l]
params = { date = "date" }
outputs = ["l/{{ date }}.txt"]
run = ["echo to-stdout", "echo to-stderr >&2", "echo x > {{ outputs[0] }}"]
"#,
    );
    t.run_args(json_build(&["--date", "2024-01-05"])).assert_status(0);
    // Each command's header comes before its output (the third printed nothing).
    let log = t.read(".flux/logs/l/l_2024-01-05_/1-1.log");
    let head = format!(
        "$ echo to-stdout\nto-stdout\n$ echo to-stderr >&2\nto-stderr\n$ echo x > {}/.flux/stage/",
        t.path().display()
    );
    assert!(log.starts_with(&head) && log.ends_with(".txt\n") && log.lines().count() == 5, "{log}");
    // Neither reaches flux's own stdout or stderr.
    let t2 = Test::new().fluxfile(
        "[step.l]\noutputs = [\"l.txt\"]\nrun = \"echo to-stdout; echo to-stderr >&2; echo x > {{ outputs[0] }}\"\n",
    );
    t2.run_args(["build"]).assert_status(0).stdout_lacks("to-std").stderr_lacks("to-std");
}

#[test]
fn parent_folders_of_outputs_are_created() {
    let t = Test::new().fluxfile("[step.deep]\noutputs = [\"a/b/c/d.txt\", \"e/f.txt\"]\nrun = [\"echo d > {{ outputs[0] }}\", \"echo f > {{ outputs[1] }}\"]\n");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("a/b/c/d.txt"), "d\n");
    assert_eq!(t.read("e/f.txt"), "f\n");
}

const FAILING: &str = r#"
[step.bad]
outputs = ["bad.txt"]
run = "echo partial > {{ outputs[0] }}; echo doomed; exit 1"

[step.after_bad]
inputs = ["bad.txt"]
outputs = ["after.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"

[step.good]
outputs = ["good.txt"]
run = "sleep 0.2; echo good > {{ outputs[0] }}"

[step.after_good]
inputs = ["good.txt"]
outputs = ["after_good.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#;

#[test]
fn a_failing_command_leaves_no_output_and_fails_its_dependents() {
    let t = Test::new().fluxfile(FAILING);
    let o = t.run_args(json_build(&[]));
    o.stderr_has("FAIL bad: command exited with status 1");
    o.assert_status(1).assert_summary(2, 0, 1, 1);
    o.assert_task("bad", "failed", Some("missing-output"));
    o.assert_task("after_bad", "upstream_failed", None);
    assert_eq!(o.task("bad")["error"], "command exited with status 1");
    assert_eq!(o.task("bad")["attempts"], 1);
    assert!(!t.exists("bad.txt"), "the partial output must not be left in place");
    assert!(!t.exists("after.txt"));
    // The independent branch completes.
    o.assert_task("good", "success", Some("missing-output"));
    o.assert_task("after_good", "success", Some("missing-output"));
    assert_eq!(t.read("after_good.txt"), "good\n");
    assert_eq!(printed(&t.read(".flux/logs/bad/bad/1-1.log")), "doomed\n");
    // No staging leftovers either.
    assert!(t.tree(".flux/stage").is_empty(), "{:?}", t.tree(".flux/stage").keys().collect::<Vec<_>>());
}

#[test]
fn a_failure_is_reported_on_stderr_and_in_the_text_summary() {
    let t = Test::new().fluxfile(FAILING);
    let o = t.run_args(["build"]);
    o.assert_status(1);
    let log = t.abs(".flux/logs/bad/bad/1-1.log");
    o.stderr_has(&format!("FAIL bad: command exited with status 1 (log: {})\n", log.display()));
    o.stderr_has("skip after_bad: upstream failed\n");
    assert!(o.stdout.starts_with("2 ran, 0 up to date, 1 failed, 1 upstream failed ("), "{}", o.describe());
    assert_eq!(o.stdout_lines().len(), 1);
}

#[test]
fn json_output_is_one_object_on_stdout_even_when_a_task_fails() {
    let o = Test::new().fluxfile(FAILING).args(json_build(&[])).run();
    o.assert_status(1);
    let j = o.json();
    assert_eq!(
        j.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["tasks".into(), "summary".into(), "run_id".into()])
    );
    for t in o.tasks() {
        for k in ["id", "step", "params", "status", "reason", "attempts", "duration_s"] {
            assert!(t.get(k).is_some(), "task lacks {k}: {t}");
        }
    }
    o.stderr_has("FAIL bad");
}

#[test]
fn a_failed_rerun_keeps_the_previous_output_intact() {
    let t = Test::new()
        .fluxfile("[step.s]\ninputs = [\"in.txt\"]\noutputs = [\"out.txt\"]\nrun = \"echo partial > {{ outputs[0] }}; grep -q good {{ inputs[0] }} && cp {{ inputs[0] }} {{ outputs[0] }}\"\n")
        .file("in.txt", "good 1\n");
    t.run_args(json_build(&[])).assert_status(0);
    t.write("in.txt", "bad\n");
    t.run_args(json_build(&[]))
        .stderr_has("FAIL s: command exited with status 1")
        .assert_status(1)
        .assert_summary(0, 0, 1, 0);
    assert_eq!(t.read("out.txt"), "good 1\n", "readers never see a partial output");
}

#[test]
fn a_command_that_writes_no_output_fails_the_task() {
    let t = Test::new().fluxfile("[step.lazy]\noutputs = [\"lazy.txt\"]\nrun = \"true\"\n\n[step.next]\ninputs = [\"lazy.txt\"]\noutputs = [\"next.txt\"]\nrun = \"cp {{ inputs[0] }} {{ outputs[0] }}\"\n");
    let o = t.run_args(json_build(&[]));
    o.stderr_has("FAIL lazy: the command succeeded but did not write output `lazy.txt`: flux expected it at");
    o.assert_status(1).assert_summary(0, 0, 1, 1);
    let err = o.task("lazy")["error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.starts_with("the command succeeded but did not write output `lazy.txt`: flux expected it at "),
        "{err}"
    );
    o.assert_task("next", "upstream_failed", None);
}

#[test]
fn stage_false_commands_write_in_place_and_failures_are_cleaned_up() {
    let t = Test::new().fluxfile(
        r#"
[step.direct]
outputs = ["direct.txt"]
stage = false
run = "echo {{ outputs[0] }} > {{ outputs[0] }}"

[step.broken]
outputs = ["broken.txt"]
stage = false
run = "echo partial > {{ outputs[0] }}; exit 2"
"#,
    );
    let o = t.run_args(json_build(&[]));
    o.stderr_has("FAIL broken: command exited with status 2");
    o.assert_status(1).assert_summary(1, 0, 1, 0);
    assert_eq!(t.read("direct.txt"), "direct.txt\n", "stage = false: the command gets the target as written");
    assert!(!t.exists("broken.txt"), "flux removes what a failed stage = false task wrote");
}

#[test]
fn a_run_list_stops_at_the_first_failure() {
    let t = Test::new().fluxfile(
        "[step.l]\noutputs = [\"l.txt\"]\nrun = [\"echo 1 >> trace.txt\", \"false\", \"echo 3 >> trace.txt\", \"echo x > {{ outputs[0] }}\"]\n",
    );
    t.run_args(json_build(&[]))
        .stderr_has("FAIL l: command exited with status 1")
        .assert_status(1)
        .assert_summary(0, 0, 1, 0);
    assert_eq!(t.read("trace.txt"), "1\n");
}

#[test]
fn pre_and_post_run_around_run() {
    let t = Test::new().fluxfile(
        "[step.p]\noutputs = [\"p.txt\"]\npre = [\"echo pre >> trace.txt\"]\nrun = [\"echo run >> trace.txt\", \"echo x > {{ outputs[0] }}\"]\npost = [\"echo post >> trace.txt\"]\n",
    );
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("trace.txt"), "pre\nrun\npost\n");
}

#[test]
fn a_failing_post_fails_the_task_and_keeps_the_output_out() {
    let t = Test::new()
        .fluxfile("[step.p]\noutputs = [\"p.txt\"]\nrun = \"echo x > {{ outputs[0] }}\"\npost = [\"exit 4\"]\n");
    let o = t.run_args(json_build(&[]));
    o.stderr_has("FAIL p: command exited with status 4");
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    assert_eq!(o.task("p")["error"], "command exited with status 4");
    assert!(!t.exists("p.txt"));
}

#[test]
fn retries_run_a_failed_attempt_again() {
    let t = Test::new().fluxfile(
        r#"
[step.flaky]
outputs = ["out.txt"]
retries = 2
retry_delay = "0s"
run = "echo attempt {{ attempt }}; echo try >> tries.txt; [ $(wc -l < tries.txt) -ge 2 ] && echo ok > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&[]));
    o.stderr_has("retry flaky: command exited with status 1; attempt 2");
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(o.task("flaky")["attempts"], 2);
    assert_eq!(t.read("tries.txt"), "try\ntry\n");
    assert_eq!(printed(&t.read(".flux/logs/flaky/flaky/1-1.log")), "attempt 1\n");
    assert_eq!(printed(&t.read(".flux/logs/flaky/flaky/1-2.log")), "attempt 2\n");
    let h = t.run_args(["history", "--output", "json"]).json();
    let statuses: Vec<&str> =
        h["attempts"].as_array().expect("attempts").iter().filter_map(|a| a["status"].as_str()).collect();
    assert_eq!(statuses, ["success", "retrying"], "newest first");
}

#[test]
fn retries_run_out() {
    let t = Test::new().fluxfile("[step.f]\noutputs = [\"out.txt\"]\nretries = 1\nretry_delay = \"0s\"\nrun = \"echo try >> tries.txt; exit 1\"\n");
    let o = t.run_args(json_build(&[]));
    o.stderr_has("retry f: command exited with status 1; attempt 2");
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    assert_eq!(o.task("f")["attempts"], 2);
    assert_eq!(t.read("tries.txt"), "try\ntry\n");
}

#[test]
fn a_timeout_kills_the_task() {
    let t = Test::new().fluxfile(
        "[step.slow]\noutputs = [\"slow.txt\"]\ntimeout = \"1s\"\nrun = \"sleep 120; echo x > {{ outputs[0] }}\"\n",
    );
    let o = t.run_args(json_build(&[]));
    o.assert_status(1).assert_summary(0, 0, 1, 0).stderr_has("FAIL slow: timed out after 1s");
    assert_eq!(o.task("slow")["error"], "timed out after 1s");
    // Killed at its timeout, not at the end of its 120 s sleep.
    assert!(o.elapsed < Duration::from_secs(60), "took {:?}", o.elapsed);
    assert!(!t.exists("slow.txt"));
}

#[test]
fn a_job_waiting_for_a_worker_starts_and_is_timed_only_once_a_worker_takes_it() {
    // With -j 1 the next job is handed over while `first` runs, so that the worker starts
    // it the moment it is free. Its timeout, its announced start and its recorded start
    // must still count from then: had its 1 s timeout started with the hand-over, it would
    // be killed while `first` sleeps 1.5 s.
    let t = Test::new().fluxfile(
        r#"
[step.first]
priority = 10
outputs = ["first.txt"]
run = "sleep 1.5; echo > {{ outputs[0] }}"

[step.next]
params = { n = ["1", "2"] }
timeout = "1s"
outputs = ["next/{{ n }}.txt"]
run = "sleep 0.3; echo > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(["-v", "build", "-j", "1"]);
    o.assert_status(0);
    let events: Vec<&str> =
        o.stderr().lines().filter_map(|l| l.split_whitespace().next()).filter(|w| *w == "run" || *w == "ok").collect();
    assert_eq!(events, ["run", "ok", "run", "ok", "run", "ok"], "one task at a time with -j 1\n{}", o.describe());
    let mut spans: Vec<(f64, f64)> = history(&t)
        .iter()
        .map(|a| (a["started_at"].as_f64().unwrap_or(0.0), a["ended_at"].as_f64().unwrap_or(0.0)))
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(spans.len(), 3);
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1 - 0.05, "a recorded start precedes the previous end: {spans:?}");
    }
    assert!(spans[1].1 - spans[1].0 < 1.0, "the second task's record starts when it ran: {spans:?}");
}

#[test]
fn fail_fast_stops_launching_new_tasks() {
    let t = Test::new().fluxfile(
        r#"
[step.bad]
outputs = ["bad.txt"]
priority = 10
run = "exit 1"

[step.later]
params = { n = ["1", "2", "3"] }
outputs = ["later/{{ n }}.txt"]
run = "echo {{ n }} > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&["-j", "1", "--fail-fast"]));
    o.stderr_has("FAIL bad: command exited with status 1");
    o.assert_status(1);
    assert_eq!(o.summary("failed"), 1);
    assert_eq!(o.summary("ran"), 0, "nothing is launched after the first failure\n{}", o.describe());
    assert!(!t.exists("later"));
}

#[test]
fn without_fail_fast_the_other_tasks_still_run() {
    let t = Test::new().fluxfile(
        "[step.bad]\noutputs = [\"bad.txt\"]\npriority = 10\nrun = \"exit 1\"\n\n[step.later]\nparams = { n = [\"1\", \"2\", \"3\"] }\noutputs = [\"later/{{ n }}.txt\"]\nrun = \"echo {{ n }} > {{ outputs[0] }}\"\n",
    );
    t.run_args(json_build(&["-j", "1"]))
        .stderr_has("FAIL bad: command exited with status 1")
        .assert_status(1)
        .assert_summary(3, 0, 1, 0);
}

#[test]
fn priority_orders_ready_tasks() {
    let t = Test::new().fluxfile(
        r#"
[step.low]
params = { n = ["1", "2"] }
outputs = ["low/{{ n }}.txt"]
run = "echo low{{ n }} >> trace.txt; echo > {{ outputs[0] }}"

[step.high]
priority = 5
outputs = ["high.txt"]
run = "echo high >> trace.txt; echo > {{ outputs[0] }}"
"#,
    );
    t.run_args(json_build(&["-j", "1"])).assert_status(0).assert_summary(3, 0, 0, 0);
    assert!(t.read("trace.txt").starts_with("high\n"), "{}", t.read("trace.txt"));
}

#[test]
fn action_copy_copies_inputs_to_outputs() {
    let t = Test::new()
        .fluxfile("[step.c]\nparams = { date = \"date\" }\ninputs = [\"in/{{ date }}.bin\"]\noutputs = [\"out/{{ date }}.bin\"]\naction = \"copy\"\n")
        .file("in/2024-01-01.bin", [0u8, 1, 2, 255, 254]);
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read_bytes("out/2024-01-01.bin"), [0u8, 1, 2, 255, 254]);
}

#[test]
fn ctrl_c_stops_the_build_with_exit_130_and_leaves_no_output() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(
        &r#"
[step.slow]
params = { n = ["1", "2"] }
outputs = ["slow/{{ n }}.txt"]
run = "echo started >> trace.txt; sleep MARK; echo finished >> trace.txt; echo {{ n }} > {{ outputs[0] }}"

[step.after]
inputs = ["slow/1.txt"]
outputs = ["after.txt"]
run = "cp {{ inputs[0] }} {{ outputs[0] }}"
"#
        .replace("MARK", &mark),
    );
    let running = t.spawn_args(["build", "slow", "after", "-j", "2", "--output", "json"]);
    // Wait until both tasks have started.
    let both = wait_until(Duration::from_secs(30), || sleeps_with(&mark).len() == 2);
    running.signal("INT");
    let sent = std::time::Instant::now();
    let o = t.finish(running);
    let took = sent.elapsed();
    assert!(both, "the two tasks never ran at once\n{}", o.describe());
    o.assert_status(130).stderr_has("interrupted");
    // Stopped at the signal, not at the end of the tasks' 30 s sleeps.
    assert!(took < Duration::from_secs(15), "flux took {took:?} to stop the running tasks");
    assert_eq!(o.summary("ran"), 0, "{}", o.describe());
    assert!(o.ids_with_status("interrupted").contains(&"slow[1]".to_string()), "{}", o.describe());
    assert!(t.tree("slow").is_empty(), "no output of an interrupted task is left in place");
    // The process groups were terminated: nothing finishes later.
    assert_no_process_left(&mark, Duration::from_secs(5), "after Ctrl-C");
    assert_eq!(t.read("trace.txt"), "started\nstarted\n");
    // The next build runs them again.
    let t2 = t.run_args(json_build(&["slow", "after", "-n"]));
    assert_eq!(t2.ids_with_status("would-run").len(), 3, "{}", t2.describe());
}

#[test]
fn two_builds_at_once_run_each_task_once() {
    let t = Test::new().fluxfile(
        r#"
[step.t]
params = { n = ["1", "2", "3"] }
outputs = ["t/{{ n }}.txt"]
run = "echo {{ n }} >> count.txt; sleep 0.4; echo {{ n }} > {{ outputs[0] }}"
"#,
    );
    let a = t.spawn_args(json_build(&["-j", "3"]));
    std::thread::sleep(Duration::from_millis(100));
    let b = t.spawn_args(json_build(&["-j", "3"]));
    let (a, b) = (t.finish(a), t.finish(b));
    a.assert_status(0).stderr_lines_match(&["another flux process is running it"]);
    b.stderr_lines_match(&["another flux process is running it"]);
    b.assert_status(0);
    let mut count: Vec<String> = t.read("count.txt").lines().map(str::to_string).collect();
    count.sort();
    assert_eq!(count, ["1", "2", "3"], "each task ran exactly once");
    for o in [&a, &b] {
        assert_eq!(o.summary("failed"), 0, "{}", o.describe());
    }
    assert_eq!(a.summary("ran") + b.summary("ran"), 3, "{}\n{}", a.describe(), b.describe());
}

#[test]
fn two_builds_started_at_the_same_moment_on_a_new_project_both_succeed() {
    // Both processes create and migrate the state database at once; neither may give up
    // with "database is locked" (SPEC §6: the second waits for the first's claims).
    let t = Test::new().fluxfile(
        r#"
[step.t]
params = { n = ["1", "2"] }
outputs = ["t/{{ n }}.txt"]
run = "echo {{ n }} >> count.txt; sleep 0.05; echo {{ n }} > {{ outputs[0] }}"
"#,
    );
    for round in 0..6 {
        for p in [".flux", "t", "count.txt"] {
            t.remove_if_exists(p);
        }
        let a = t.spawn_args(json_build(&[]));
        let b = t.spawn_args(json_build(&[]));
        let (a, b) = (t.finish(a), t.finish(b));
        assert_eq!((a.status(), b.status()), (0, 0), "round {round}\n{}\n{}", a.describe(), b.describe());
        a.stderr_lines_match(&["another flux process is running it"]);
        b.stderr_lines_match(&["another flux process is running it"]);
        assert_eq!(t.read("count.txt").lines().count(), 2, "round {round}: each task ran once");
    }
}
