//! Selecting tasks and what is downstream of them: `--from STEP|TASK` and
//! `flux clear --downstream` (SPEC §9).

use crate::test::{Test, json_build};

const CHAIN: &str = r#"
[step.a]
params = { date = "date" }
outputs = ["a/{{ date }}.txt"]
run = "echo a > {{ outputs[0] }}"

[step.b]
params = { date = "date" }
inputs = ["a/{{ date }}.txt"]
outputs = ["b/{{ date }}.txt"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"

[step.c]
params = { date = "date" }
inputs = ["b/{{ date }}.txt"]
outputs = ["c/{{ date }}.txt"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"

[step.other]
params = { date = "date" }
outputs = ["other/{{ date }}.txt"]
run = "echo o > {{ outputs[0] }}"
"#;

const RANGE: [&str; 2] = ["--date-range", "2024-01-01..2024-01-02"];

#[test]
fn from_a_task_forces_it_and_everything_downstream_of_it() {
    let t = Test::new().fluxfile(CHAIN);
    t.run_args(json_build(&RANGE)).assert_status(0).assert_summary(8, 0, 0, 0);
    let o = t.run_args(json_build(&[RANGE[0], RANGE[1], "--from", "b[2024-01-02]"]));
    o.assert_status(0).assert_ran(&["b[2024-01-02]", "c[2024-01-02]"]);
    o.assert_task("c[2024-01-02]", "success", Some("forced"));
    // A step still works, and a task outside the build is an error.
    t.run_args(json_build(&[RANGE[0], RANGE[1], "--from", "c"])).assert_status(0).assert_summary(2, 6, 0, 0);
    t.run_args(json_build(&[RANGE[0], RANGE[1], "--from", "b[2024-03-01]"]))
        .assert_status(2)
        .stderr_has("b[2024-03-01] is not part of this build");
    t.run_args(json_build(&[RANGE[0], RANGE[1], "--from", "bb"])).assert_status(2).stderr_has("did you mean `b`?");
}

#[test]
fn clear_downstream_clears_the_tasks_below_too() {
    let t = Test::new().fluxfile(CHAIN);
    t.run_args(json_build(&RANGE)).assert_status(0).assert_summary(8, 0, 0, 0);
    t.run_args(["clear", "a[2024-01-01]", "--downstream"]).assert_status(0).stdout_has("cleared 3 tasks");
    let o = t.run_args(json_build(&RANGE));
    o.assert_status(0).assert_ran(&["a[2024-01-01]", "b[2024-01-01]", "c[2024-01-01]"]);
    // Without --downstream, only the named task.
    t.run_args(["clear", "b[2024-01-02]"]).assert_status(0).stdout_has("cleared 1 task;");
    t.run_args(json_build(&RANGE)).assert_status(0).assert_ran(&["b[2024-01-02]"]);
    // Among the dates given.
    t.run_args(["clear", "a", "--downstream", RANGE[0], RANGE[1]]).assert_status(0).stdout_has("cleared 6 tasks");
}
