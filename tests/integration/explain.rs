//! `flux build -n --explain TASK` and `flux why TASK` (SPEC §9): why a task runs or is up
//! to date.

use crate::test::{Test, json_build};

const PIPE: &str = r#"
[step.a]
params = { date = "date" }
inputs = ["raw/{{ date }}.txt"]
outputs = ["a/{{ date }}.txt"]
run = "cp {{ inputs[0] }} {{ outputs[0] }}"

[step.b]
params = { date = "date" }
inputs = ["a/{{ date }}.txt", "extra.txt"]
outputs = ["b/{{ date }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#;

fn built() -> Test {
    let t = Test::new().fluxfile(PIPE).file("raw/2024-01-01.txt", "x\n").file("extra.txt", "e\n");
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(2, 0, 0, 0);
    t
}

#[test]
fn explain_says_why_an_up_to_date_task_is_up_to_date() {
    let t = built();
    t.run_args(["build", "-n", "--explain", "b[2024-01-01]"])
        .assert_status(0)
        .stdout_has("b[2024-01-01]: up to date")
        .stdout_has("b/2024-01-01.txt  exists")
        .stdout_has("a/2024-01-01.txt  unchanged")
        .stdout_has("extra.txt  unchanged")
        .stdout_has("command: unchanged")
        .stdout_has("upstream: up to date");
}

#[test]
fn explain_names_the_changed_input_and_the_missing_output() {
    let t = built();
    t.write("extra.txt", "changed\n");
    t.remove("b/2024-01-01.txt");
    let o = t.run_args(["why", "b[2024-01-01]"]);
    o.assert_status(0)
        .stdout_has("b[2024-01-01]: would run (missing-output)")
        .stdout_has("b/2024-01-01.txt  missing")
        .stdout_has("a/2024-01-01.txt  unchanged")
        .stdout_has("extra.txt  changed (");
}

#[test]
fn explain_shows_a_diff_of_the_changed_command() {
    let t = built();
    t.write("Fluxfile", PIPE.replace("cat {{ inputs }} >", "cat {{ inputs }} | sort >"));
    t.run_args(["build", "-n", "--explain", "b[2024-01-01]", "--date", "2024-01-01"])
        .assert_status(0)
        .stdout_has("would run (command-changed)")
        .stdout_has("command: changed since the last success")
        .stdout_has("- run: cat a/2024-01-01.txt extra.txt > b/2024-01-01.txt")
        .stdout_has("+ run: cat a/2024-01-01.txt extra.txt | sort > b/2024-01-01.txt");
}

#[test]
fn explain_names_the_upstream_task_that_makes_it_stale() {
    let t = built();
    t.write("raw/2024-01-01.txt", "new\n");
    t.run_args(["why", "b[2024-01-01]"])
        .assert_status(0)
        .stdout_has("b[2024-01-01]: would run (upstream)")
        .stdout_has("upstream: a[2024-01-01] would run (input-changed)")
        .stdout_has("(its producer a[2024-01-01] would run first)");
    // It explains and runs nothing.
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_ran(&["a[2024-01-01]", "b[2024-01-01]"]);
}

#[test]
fn explain_of_an_unknown_task_is_a_usage_error() {
    let t = built();
    t.run_args(["why", "nosuch[2024-01-01]"])
        .stderr_has("error: `nosuch[2024-01-01]` is not a task id of this Fluxfile")
        .assert_status(2);
}

#[test]
fn explain_with_json_output_is_a_usage_error() {
    let t = built();
    t.run_args(["build", "--explain", "b[2024-01-01]", "--output", "json"])
        .assert_status(2)
        .stderr_has("--explain prints text");
}
