//! No target on the command line (SPEC §3.1): every task of every step for the requested
//! param values, plus what they need; steps whose param has no value and no domain are
//! left out and named.

use crate::test::*;

/// `daily` runs every day; `firsts` reads only the first day of each month. A sink-only
/// build would leave `daily` unbuilt on the other days.
const DAYS_AND_FIRSTS: &str = r#"
[step.daily]
params = { date = "date" }
outputs = ["daily/{{ date }}.txt"]
run = "echo {{ date }} > {{ outputs[0] }}"

[step.firsts]
params = { month = "month" }
inputs = ["daily/{{ (month | days)[0] }}.txt"]
outputs = ["firsts/{{ month }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#;

/// The same with a week step and a step with a free string param.
const PIPELINE: &str = r#"
[step.daily]
params = { date = "date" }
outputs = ["daily/{{ date }}.txt"]
run = "echo {{ date }} > {{ outputs[0] }}"

[step.mondays]
params = { week = "week" }
inputs = ["daily/{{ (week | days)[0] }}.txt"]
outputs = ["mondays/{{ week }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"

[step.hello]
params = { who = "string" }
outputs = ["hello/{{ who }}.txt"]
run = "echo {{ who }} > {{ outputs[0] }}"
"#;

#[test]
fn no_target_builds_every_task_of_every_step_not_only_what_the_sinks_read() {
    let t = Test::new().fluxfile(DAYS_AND_FIRSTS);
    let o = t.run_args(json_build(&["--date-range", "2024-03-01..2024-03-03"]));
    o.assert_status(0).assert_ran(&["daily[2024-03-01]", "daily[2024-03-02]", "daily[2024-03-03]", "firsts[2024-03]"]);
    assert_eq!(t.read("daily/2024-03-03.txt"), "2024-03-03\n");
    assert_eq!(t.read("firsts/2024-03.txt"), "2024-03-01\n");
}

#[test]
fn no_target_leaves_out_a_step_whose_param_has_no_value_and_says_so() {
    let t = Test::new().fluxfile(PIPELINE);
    let o = t.run_args(json_build(&["--date-range", "2024-03-04..2024-03-06"]));
    o.assert_status(0).assert_ran(&[
        "daily[2024-03-04]",
        "daily[2024-03-05]",
        "daily[2024-03-06]",
        "mondays[2024-W10]",
    ]);
    assert!(t.exists("daily/2024-03-05.txt"));
    assert!(t.exists("daily/2024-03-06.txt"));
    assert_eq!(t.read("mondays/2024-W10.txt"), "2024-03-04\n");
    // The string step had no value: left out, and the summary says so.
    assert_eq!(
        o.json()["summary"]["left_out"],
        serde_json::json!([{"step": "hello", "param": "who", "kind": "string"}])
    );
    assert!(!t.exists("hello"));
    let o = t.run_args(["build", "--date-range", "2024-03-04..2024-03-07"]);
    o.assert_status(0)
        .stdout_has("1 ran, 4 up to date")
        .stdout_has("left out: hello (string param `who` has no value: pass --param who=…)");
}

#[test]
fn no_target_with_a_value_for_the_string_param_builds_that_step_too() {
    let t = Test::new().fluxfile(PIPELINE);
    let o = t.run_args(json_build(&["--date", "2024-03-04", "--param", "who=ann"]));
    o.assert_status(0).assert_ran(&["daily[2024-03-04]", "hello[ann]", "mondays[2024-W10]"]);
    assert!(o.json()["summary"].get("left_out").is_none());
    t.run_args(["build", "--date", "2024-03-04", "--param", "who=ann"]).assert_status(0).stdout_lacks("left out");
}
