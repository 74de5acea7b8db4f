//! What a build shows (SPEC §9): a failed task's log tail, streamed output, printed
//! commands, counters that count only the tasks that run, one line per finished task,
//! per-step summaries, dry runs that tell waiting from failing, and logs kept per run.

use serde_json::Value;

use crate::test::*;

/// A task that prints 30 lines and an error, then fails; and one that succeeds quietly.
const NOISY_FAILURE: &str = r#"
[step.bad]
outputs = ["bad.txt"]
run = "for i in $(seq 1 30); do echo line $i; done; echo 'bad.c:3: error: doomed' >&2; exit 1"

[step.good]
outputs = ["good.txt"]
run = "echo good > {{ outputs[0] }}"
"#;

/// The lines of stderr right after the line starting with `prefix`, up to the next line
/// that is not indented.
fn block_after<'a>(o: &'a Output, prefix: &str) -> Vec<&'a str> {
    let mut lines = o.stderr().lines().skip_while(|l| !l.starts_with(prefix));
    assert!(lines.next().is_some(), "no line starting with {prefix:?}\n{}", o.describe());
    lines.take_while(|l| l.starts_with("    ")).collect()
}

#[test]
fn a_failed_tasks_last_log_lines_are_printed_under_its_fail_line() {
    let t = Test::new().fluxfile(NOISY_FAILURE);
    let o = t.run_args(["build"]);
    o.assert_status(1);
    // The default is 20 lines: the end of the output, the error last.
    let tail = block_after(&o, "FAIL bad: command exited with status 1 (log: ");
    let mut want: Vec<String> = (12..=30).map(|i| format!("    line {i}")).collect();
    want.push("    bad.c:3: error: doomed".into());
    assert_eq!(tail, want, "{}", o.describe());

    // --log-lines N; a short log shows whole, with the command that ran first.
    let o = t.run_args(["build", "--log-lines", "2"]);
    o.assert_status(1);
    assert_eq!(block_after(&o, "FAIL bad: "), ["    line 30", "    bad.c:3: error: doomed"], "{}", o.describe());
    let o = t.run_args(["build", "--log-lines", "0"]);
    o.assert_status(1);
    assert!(block_after(&o, "FAIL bad: ").is_empty(), "{}", o.describe());
    let short = Test::new().fluxfile("[step.s]\noutputs = [\"s.txt\"]\nrun = \"echo 'no such file' >&2; exit 2\"\n");
    let o = short.run_args(["build"]);
    o.assert_status(1);
    assert_eq!(
        block_after(&o, "FAIL s: command exited with status 2"),
        ["    $ echo 'no such file' >&2; exit 2", "    no such file"],
        "{}",
        o.describe()
    );
    // Without CI, on a pipe (plain lines), and with -q, the same.
    let o = t.run_args(["build"]);
    o.assert_status(1);
    assert_eq!(block_after(&o, "FAIL bad: ").len(), 20);
    let t2 = Test::new().fluxfile(NOISY_FAILURE).env_remove("CI");
    assert_eq!(block_after(t2.run_args(["build"]).assert_status(1), "FAIL bad: ").len(), 20);
    assert_eq!(
        block_after(t2.run_args(["-q", "build", "--log-lines", "1"]).assert_status(1), "FAILED bad: "),
        ["    bad.c:3: error: doomed"]
    );
}

#[test]
fn a_failed_tasks_log_tail_is_printed_above_the_progress_bar_on_a_terminal() {
    // `script` gives flux a terminal: the progress bar, not plain lines.
    let t = Test::new().fluxfile(NOISY_FAILURE);
    let cmd = format!("{FLUX} build --log-lines 3 --color never");
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(t.path())
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script(1)");
    // The terminal gets lines padded to its width, between the bar's redraws.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("no {s:?} in {text:?}"));
    let fail = at("FAIL bad: command exited with status 1 (log: ");
    let tail = [at("    line 29"), at("    line 30"), at("    bad.c:3: error: doomed")];
    assert!(fail < tail[0] && tail[0] < tail[1] && tail[1] < tail[2], "{text:?}");
    assert!(!text.contains("line 28"), "three lines only: {text:?}");
}

#[test]
fn json_tasks_carry_their_log_and_a_failures_log_tail() {
    let t = Test::new().fluxfile(&format!(
        "{NOISY_FAILURE}\n[step.talk]\noutputs = [\"talk.txt\"]\nrun = \"echo hi; echo > {{{{ outputs[0] }}}}\"\n"
    ));
    let o = t.run_args(json_build(&["--log-lines", "2"]));
    o.stderr_has("FAIL bad: command exited with status 1");
    o.assert_status(1).assert_summary(2, 0, 1, 0);
    let run = o.json()["run_id"].as_i64().expect("run_id");
    let bad = o.task("bad");
    let log = bad["log"].as_str().expect("a failed task's log path");
    assert!(log.ends_with(&format!(".flux/logs/bad/bad/{run}-1.log")), "{log}");
    assert_eq!(bad["log_tail"], "line 30\nbad.c:3: error: doomed\n");
    let talk = o.task("talk");
    assert!(talk["log"].as_str().is_some_and(|l| std::path::Path::new(l).exists()), "{talk}");
    assert!(talk.get("log_tail").is_none(), "only failures carry a tail: {talk}");
    // A task that printed nothing has no log file; one that did not run has none either.
    assert_eq!(o.task("good")["log"], Value::Null);
    let again = t.run_args(json_build(&["good", "talk"]));
    assert_eq!(again.task("talk")["status"], "skipped");
    assert_eq!(again.task("talk")["log"], Value::Null);
}

#[test]
fn stream_prints_each_line_of_output_whole_after_its_task_id() {
    // Two tasks write half a line, wait, and finish it, at the same time: each line
    // must come out whole, after its own task's id.
    let t = Test::new().fluxfile(
        r#"
[step.a]
outputs = ["a.txt"]
run = ["printf 'a-begin '; sleep 0.3; echo a-end; echo a-second", "printf 'no newline'; echo a > {{ outputs[0] }}"]

[step.b]
outputs = ["b.txt"]
run = "printf 'b-begin '; sleep 0.3; echo b-end >&2; echo b > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&["-j", "2", "--stream"]));
    o.assert_status(0).assert_summary(2, 0, 0, 0);
    let streamed: Vec<&str> = o.stderr().lines().filter(|l| l.contains(" | ")).collect();
    let mut sorted = streamed.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["a | a-begin a-end", "a | a-second", "a | no newline", "b | b-begin b-end"],
        "{}",
        o.describe()
    );
    // Lines of one task keep their order; stdout stays one JSON object.
    let pos = |l: &str| streamed.iter().position(|x| *x == l);
    assert!(pos("a | a-begin a-end") < pos("a | a-second") && pos("a | a-second") < pos("a | no newline"));
    o.json();
    // Without --stream nothing of it shows.
    t.run_args(["build", "--force"]).assert_status(0).stderr_lacks("a-begin").stdout_lacks("a-begin");
}

const TWO_STEPS: &str = r#"
[step.extract]
params = { date = "date" }
inputs = ["raw/{{ date }}.log"]
outputs = ["events/{{ date }}.csv"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"

[step.count]
params = { date = "date" }
inputs = ["events/{{ date }}.csv"]
outputs = ["counts/{{ date }}.txt"]
run = ["echo counting", "wc -l < {{ inputs[0] }} > {{ outputs[0] }}"]
"#;

#[test]
fn print_commands_shows_each_tasks_commands_before_it_runs() {
    let t = Test::new().fluxfile(TWO_STEPS).file("raw/2024-01-01.log", "a\nb\n");
    // Dry run: the final paths.
    let dry = t.run_args(["build", "-n", "-p", "--date", "2024-01-01"]);
    dry.assert_status(0).stdout_is(
        "would run extract[2024-01-01] (missing-output)\n    $ cat raw/2024-01-01.log > events/2024-01-01.csv\n\
         would run count[2024-01-01] (missing-output)\n    $ echo counting\n    $ wc -l < events/2024-01-01.csv > counts/2024-01-01.txt\n\
         dry run: 2 tasks would run, 0 up to date\n",
    );
    // JSON dry run: `commands` per would-run task.
    let j = t.run_args(json_build(&["-n", "--date", "2024-01-01"]));
    assert_eq!(
        j.task("count[2024-01-01]")["commands"],
        serde_json::json!(["echo counting", "wc -l < events/2024-01-01.csv > counts/2024-01-01.txt"])
    );
    // The real build: the staged paths, exactly as sh -c gets them, before each task's end.
    let o = t.run_args(["build", "-p", "--date", "2024-01-01"]);
    o.assert_status(0);
    let lines: Vec<&str> = o.stderr().lines().collect();
    let run = lines
        .iter()
        .position(|l| *l == "run  count[2024-01-01] (missing-output)")
        .unwrap_or_else(|| panic!("{}", o.describe()));
    assert_eq!(lines[run + 1], "    $ echo counting");
    let staged = format!("    $ wc -l < events/2024-01-01.csv > {}/.flux/stage/", t.path().display());
    assert!(lines[run + 2].starts_with(&staged), "{}", o.describe());
    let ok = lines
        .iter()
        .position(|l| l.starts_with("ok   count[2024-01-01] "))
        .unwrap_or_else(|| panic!("{}", o.describe()));
    assert!(run < ok);
    // Each attempt's log starts with its commands (`$ `), before their output.
    let log = t.read(".flux/logs/count/count_2024-01-01_/1-1.log");
    let head =
        format!("$ echo counting\ncounting\n$ wc -l < events/2024-01-01.csv > {}/.flux/stage/", t.path().display());
    assert!(log.starts_with(&head), "{log}");
    // A failed attempt's log has its commands even when it printed nothing.
    let f = Test::new().fluxfile("[step.f]\noutputs = [\"f.txt\"]\nrun = [\"true\", \"exit 3\"]\n");
    f.run_args(["build"]).stderr_has("FAIL f: command exited with status 3").assert_status(1);
    assert_eq!(f.read(".flux/logs/f/f/1-1.log"), "$ true\n$ exit 3\n");
}

/// 60 independent tasks of one step, and a second step over 5 of them.
const SIXTY: &str = r#"
[step.n]
params = { i = ["00","01","02","03","04","05","06","07","08","09","10","11","12","13","14","15","16","17","18","19","20","21","22","23","24","25","26","27","28","29","30","31","32","33","34","35","36","37","38","39","40","41","42","43","44","45","46","47","48","49","50","51","52","53","54","55","56","57","58","59"] }
outputs = ["n/{{ i }}.txt"]
run = "echo {{ i }} > {{ outputs[0] }}"

[step.top]
params = { i = ["00","01","02","03","04"] }
inputs = ["n/{{ i }}.txt"]
outputs = ["top/{{ i }}.txt"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"
"#;

#[test]
fn counters_count_only_the_tasks_that_run_and_each_finished_task_prints_one_line() {
    let t = Test::new().fluxfile(SIXTY);
    let o = t.run_args(["build", "n", "top", "-j", "4"]);
    o.assert_status(0);
    // One line per finished task, none as it starts; the last says 65 of 65.
    assert_eq!(o.stderr().lines().count(), 65, "{}", o.describe());
    assert!(o.stderr().lines().all(|l| l.starts_with("ok   ")), "{}", o.describe());
    assert!(o.stderr().lines().any(|l| l.ends_with(" [65/65]")), "{}", o.describe());
    // A large build ends with a line per step, above the total.
    let out: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(out[..2], ["n    60 ran, 0 up to date", "top  5 ran, 0 up to date"], "{}", o.describe());
    assert!(out[2].starts_with("65 ran, 0 up to date ("), "{}", o.describe());
    t.age_files();

    // Forcing 2 of 65: the counters go to 2, not 65.
    let o = t.run_args(["build", "top[00]", "n[07]", "--force"]);
    o.assert_status(0);
    let lines: Vec<&str> = o.stderr().lines().collect();
    assert_eq!(lines.len(), 2, "{}", o.describe());
    assert!(lines[0].ends_with(" [1/2]") && lines[1].ends_with(" [2/2]"), "{}", o.describe());
    // Small build: no per-step lines.
    assert_eq!(o.stdout_lines().len(), 1, "{}", o.describe());
    // -v adds start lines and the tasks found up to date.
    let v = t.run_args(["-v", "build", "top[00]", "--force"]);
    v.assert_status(0).stderr_has("run  top[00] (forced)\n").stderr_has("skip n[00] (up to date)\n");
    assert!(v.stderr().contains(" [1/1]"), "{}", v.describe());
}

#[test]
fn a_dry_run_lists_what_would_run_and_with_v_what_is_up_to_date() {
    let t = Test::new().fluxfile(SIXTY);
    t.run_args(["build", "-q", "n", "top"]).assert_status(0);
    t.age_files();
    t.remove("n/07.txt");
    let dry = t.run_args(["build", "-n", "n", "top"]);
    dry.assert_status(0).stdout_is(
        "would run n[07] (missing-output)\nn    1 would run, 59 up to date\ntop  0 would run, 5 up to date\n\
         dry run: 1 task would run, 64 up to date\n",
    );
    let v = t.run_args(["-v", "build", "-n", "n", "top"]);
    v.stderr_has("flux: load Fluxfile:");
    v.assert_status(0).stdout_has("would run n[07] (missing-output)\n").stdout_has("up to date n[06]\n");
    assert_eq!(v.stdout.matches("up to date ").count(), 64, "{}", v.describe());
}

#[test]
fn a_dry_run_tells_a_task_that_would_wait_from_one_that_would_fail() {
    let t = Test::new().fluxfile(
        r#"
[step.late]
inputs = ["landing/in.csv"]
outputs = ["late.txt"]
wait = "2h"
run = "cp {{ inputs[0] }} {{ outputs[0] }}"

[step.broken]
inputs = ["nowhere/in.csv"]
outputs = ["broken.txt"]
run = "cp {{ inputs[0] }} {{ outputs[0] }}"
"#,
    );
    let dry = t.run_args(["build", "-n"]);
    dry.assert_status(0);
    dry.stdout_has("would wait late: missing source `landing/in.csv` needed by late (waits up to 2h)\n");
    dry.stdout_has("would fail broken: missing source `nowhere/in.csv` needed by broken\n");
    dry.stdout_has("dry run: 2 tasks would run (1 would wait for a source, 1 would fail), 0 up to date\n");
    // Only the failure is warned about.
    dry.stderr_has("nowhere/in.csv").stderr_lacks("landing/in.csv");
    // --wait 0 turns waiting off: then it would fail too.
    t.run_args(["build", "-n", "--wait", "0"])
        .stderr_has("warning: missing source `landing/in.csv` needed by late: the build would fail here")
        .assert_status(0)
        .stdout_has("would fail late: ");
    let j = t.run_args(json_build(&["-n"]));
    j.stderr_has("warning: missing source `nowhere/in.csv` needed by broken");
    assert_eq!(j.task("late")["wait"], "missing source `landing/in.csv` needed by late (waits up to 2h)");
    assert!(j.task("late").get("error").is_none());
    assert!(j.task("broken")["error"].as_str().is_some_and(|e| e.contains("nowhere/in.csv")));
    assert_eq!((j.summary("would_wait"), j.summary("would_fail")), (1, 1));
}

#[test]
fn a_new_run_never_overwrites_an_older_runs_log_and_logs_reach_every_run() {
    let t = Test::new()
        .fluxfile("[step.s]\noutputs = [\"s.txt\"]\nrun = \"echo run {{ run_id }}; echo > {{ outputs[0] }}\"\n");
    let r1 = t.run_args(json_build(&[])).json()["run_id"].as_i64().expect("run 1");
    let r2 = t.run_args(json_build(&["--force"])).json()["run_id"].as_i64().expect("run 2");
    assert_ne!(r1, r2);
    assert_eq!(printed(&t.read(&format!(".flux/logs/s/s/{r1}-1.log"))), format!("run {r1}\n"));
    assert_eq!(printed(&t.read(&format!(".flux/logs/s/s/{r2}-1.log"))), format!("run {r2}\n"));
    // The latest by default; any run with --run, any attempt of it with --attempt.
    assert_eq!(printed(&t.run_args(["logs", "s"]).assert_status(0).stdout), format!("run {r2}\n"));
    let old = t.run_args(["logs", "s", "--run", &r1.to_string()]);
    assert_eq!(printed(&old.assert_status(0).stdout), format!("run {r1}\n"));
    let exact = t.run_args(["logs", "s", "--run", &r1.to_string(), "--attempt", "1"]);
    assert_eq!(printed(&exact.assert_status(0).stdout), format!("run {r1}\n"));
    t.run_args(["logs", "s", "--run", "99"])
        .assert_status(2)
        .stderr_has(&format!("s did not run in run 99 (it ran in run {r1}, {r2})"));
    t.run_args(["logs", "s", "--run", &r1.to_string(), "--attempt", "2"])
        .assert_status(2)
        .stderr_has(&format!("s has no attempt 2 in run {r1} on record"));
}

#[test]
fn a_sensor_that_gives_up_says_so() {
    let t = Test::new().fluxfile("[step.ready]\nsensor = true\nwait = \"1s\"\npoll = \"300ms\"\nrun = \"exit 1\"\n");
    let o = t.run_args(json_build(&[]));
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    assert_eq!(o.task("ready")["error"], "sensor gave up after 1s: command exited with status 1");
    o.stderr_has("FAIL ready: sensor gave up after 1s: command exited with status 1");
}

#[test]
fn counts_in_messages_agree_with_their_nouns() {
    let t = Test::new().fluxfile(
        "[step.d]\nparams = { date = \"date\" }\noutputs = [\"d/{{ date }}.txt\"]\nrun = \"echo > {{ outputs[0] }}\"\n",
    );
    t.run_args(["build", "--date", "2024-01-01"]).assert_status(0);
    t.run_args(["status", "--date", "2024-01-01"]).assert_status(0).stdout_has("2024-01-01 .. 2024-01-01 (1 date)\n");
    t.run_args(["status", "--date-range", "2024-01-01..2024-01-02"]).assert_status(0).stdout_has("(2 dates)\n");
    t.run_args(["clear", "d[2024-01-01]", "--delete-outputs"])
        .assert_status(0)
        .stdout_is("cleared 1 task, deleted 1 output; the next build reruns it\n");
    t.run_args(["check"]).assert_status(0).stdout_has(": 1 step, OK\n");
}
