//! `flux status` (SPEC §8, §9): every recorded status has its own symbol in the grid and
//! its own name in JSON; hourly grids wrap per day; wide grids fit the terminal.

use std::time::{Duration, Instant};

use crate::test::*;

/// `b` reads `a`; `a` fails on 2024-03-02.
const CHAIN: &str = r#"
[step.a]
params = { date = "date" }
outputs = ["a/{{ date }}.txt"]
run = "[ {{ date }} != 2024-03-02 ] && echo > {{ outputs[0] }}"

[step.b]
params = { date = "date" }
inputs = ["a/{{ date }}.txt"]
outputs = ["b/{{ date }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#;

fn cell_status(j: &serde_json::Value, task: &str) -> String {
    j["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["cells"].as_array().cloned().unwrap_or_default())
        .find(|c| c["task"] == task)
        .map(|c| c["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[test]
fn upstream_failed_shows_as_itself_not_as_missing() {
    let t = Test::new().fluxfile(CHAIN);
    t.run_args(["build", "--date-range", "2024-03-01..2024-03-03"])
        .stderr_has("FAIL a[2024-03-02]: command exited with status 1")
        .assert_status(1);
    let o = t.run_args(["status", "--date-range", "2024-03-01..2024-03-03"]);
    o.assert_status(0);
    let line = |name: &str| o.stdout.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    assert!(line("a ").ends_with("#X#"), "{}", o.describe());
    assert!(line("b ").ends_with("#^#"), "{}", o.describe());
    // The legend names what the grid shows, and only that.
    o.stdout_has("# success  X failed  ^ upstream failed\n").stdout_lacks("missing").stdout_lacks("running");
    let j = t.run_args(["status", "--date-range", "2024-03-01..2024-03-03", "--output", "json"]).json();
    assert_eq!(cell_status(&j, "b[2024-03-02]"), "upstream_failed");
    assert_eq!(cell_status(&j, "a[2024-03-02]"), "failed");
}

#[test]
fn a_running_task_and_a_waiting_task_show_as_themselves() {
    let t = Test::new().fluxfile(
        r#"
[step.slow]
outputs = ["slow.txt"]
run = "while [ ! -e go ]; do sleep 0.05; done; echo > {{ outputs[0] }}"

[step.patient]
inputs = ["arrives.txt"]
outputs = ["patient.txt"]
wait = "1m"
poll = "100ms"
run = "cp {{ inputs[0] }} {{ outputs[0] }}"
"#,
    );
    let build = t.spawn_args(["build", "-j", "2"]);
    let started = Instant::now();
    let mut seen = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        let o = t.run_args(["status", "--output", "json"]);
        let j = o.json();
        if cell_status(&j, "slow") == "running" && cell_status(&j, "patient") == "waiting" {
            let text = t.run_args(["status"]);
            seen = text.stdout.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    t.write("go", "");
    t.write("arrives.txt", "x\n");
    t.finish(build).stderr_has("wait patient: missing source `arrives.txt` needed by patient").assert_status(0);
    assert!(seen.contains("slow     > running"), "status while running:\n{seen}");
    assert!(seen.contains("patient  w waiting"), "status while waiting:\n{seen}");
    assert!(seen.contains("> running") && seen.contains("w waiting"), "legend:\n{seen}");
}

#[test]
fn hourly_grids_wrap_per_day_with_day_labels() {
    let t = Test::new().fluxfile(
        "[step.h]\nparams = { hour = \"hour\" }\noutputs = [\"h/{{ hour }}.txt\"]\nrun = \"echo > {{ outputs[0] }}\"\n",
    );
    t.run_args(["build", "--date", "2024-03-02"]).assert_status(0);
    let o = t.run_args(["status", "--date-range", "2024-03-01..2024-03-03"]);
    o.assert_status(0).stdout_is(&format!(
        "      2024-03-01T00 .. 2024-03-01T23 (24 of 72 hours)\nh     {dots}\n\n      2024-03-02T00 .. 2024-03-02T23 (24 of 72 hours)\nh     {hashes}\n\n      2024-03-03T00 .. 2024-03-03T23 (24 of 72 hours)\nh     {dots}\n\n# success  . missing\n",
        dots = ".".repeat(24),
        hashes = "#".repeat(24),
    ));
}

#[test]
fn wide_grids_wrap_at_the_terminal_width() {
    let fluxfile = "[step.day]\nparams = { date = \"date\" }\noutputs = [\"d/{{ date }}.txt\"]\nrun = \"echo > {{ outputs[0] }}\"\n";
    // Not a terminal and no COLUMNS: 80 columns, 74 cells beside the names.
    let t = Test::new().fluxfile(fluxfile).env_remove("COLUMNS");
    let o = t.run_args(["status", "--date-range", "2024-01-01..2024-04-09"]);
    o.assert_status(0)
        .stdout_has("      2024-01-01 .. 2024-03-14 (74 of 100 dates)\n")
        .stdout_has("      2024-03-15 .. 2024-04-09 (26 of 100 dates)\n");
    assert!(o.stdout.lines().all(|l| l.chars().count() <= 80), "{}", o.describe());
    // COLUMNS says how wide the terminal is.
    let t = Test::new().fluxfile(fluxfile).env("COLUMNS", "30");
    let o = t.run_args(["status", "--date-range", "2024-01-01..2024-01-31"]);
    o.assert_status(0)
        .stdout_has(&format!("      2024-01-01 .. 2024-01-24 (24 of 31 dates)\nday   {}\n", ".".repeat(24)))
        .stdout_has("      2024-01-25 .. 2024-01-31 (7 of 31 dates)\nday   .......\n");
}
