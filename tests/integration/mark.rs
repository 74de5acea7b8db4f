//! `flux mark` (SPEC §9): accept the current state of tasks as done.

use crate::test::{Test, json_build};

const PIPE: &str = r#"
[step.a]
params = { date = "date" }
inputs = ["raw/{{ date }}.txt"]
outputs = ["a/{{ date }}.txt"]
run = "grep -q good {{ inputs[0] }} && cp {{ inputs[0] }} {{ outputs[0] }}"

[step.b]
params = { date = "date" }
inputs = ["a/{{ date }}.txt"]
outputs = ["b/{{ date }}.txt"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"
"#;

#[test]
fn a_failed_task_fixed_by_hand_and_marked_does_not_rerun() {
    let t = Test::new().fluxfile(PIPE).file("raw/2024-01-01.txt", "bad\n");
    t.run_args(json_build(&["--date", "2024-01-01"]))
        .stderr_has("FAIL a[2024-01-01]: command exited with status 1")
        .assert_status(1)
        .assert_summary(0, 0, 1, 1);
    // Fixed by hand: the output is made outside flux.
    t.write("a/2024-01-01.txt", "fixed by hand\n");
    t.write("b/2024-01-01.txt", "fixed by hand\n");
    t.run_args(["mark", "a[2024-01-01]", "--downstream"]).assert_status(0).stdout_has("marked 2 tasks");
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(0, 2, 0, 0);
    assert_eq!(t.read("a/2024-01-01.txt"), "fixed by hand\n");
    let h = t.run_args(["history", "--output", "json"]);
    h.assert_status(0);
    let marked: Vec<String> = h.json()["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "marked")
        .map(|a| a["task"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(marked.len(), 2, "{marked:?}\n{}", h.describe());
    t.run_args(["status", "--date", "2024-01-01"]).assert_status(0).stdout_has("\na     m\nb     m\n");
}

#[test]
fn a_cosmetic_command_edit_marked_is_skipped_on_every_later_build() {
    let t = Test::new().fluxfile(PIPE).file("raw/2024-01-01.txt", "good\n");
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(2, 0, 0, 0);
    t.write(
        "Fluxfile",
        PIPE.replace("cat {{ inputs[0] }} > {{ outputs[0] }}", "cat < {{ inputs[0] }} > {{ outputs[0] }}"),
    );
    t.run_args(json_build(&["--date", "2024-01-01", "-n"])).assert_status(0).assert_task(
        "b[2024-01-01]",
        "would-run",
        Some("command-changed"),
    );
    t.run_args(["mark", "b", "--date", "2024-01-01"]).assert_status(0).stdout_has("marked 1 tasks");
    for _ in 0..2 {
        t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(0, 2, 0, 0);
    }
    // A real change afterwards still reruns it.
    t.write("raw/2024-01-01.txt", "good, and new\n");
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_ran(&["a[2024-01-01]", "b[2024-01-01]"]);
}

#[test]
fn marking_a_task_whose_output_is_missing_is_an_error_naming_it() {
    let t = Test::new().fluxfile(PIPE).file("raw/2024-01-01.txt", "good\n");
    t.run_args(["mark", "a[2024-01-01]", "--downstream"])
        .assert_status(2)
        .stderr_has("cannot mark a[2024-01-01]: its output `a/2024-01-01.txt` does not exist");
    // Nothing was recorded.
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(2, 0, 0, 0);
}
