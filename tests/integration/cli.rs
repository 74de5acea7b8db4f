//! The command line (SPEC §9): list, graph, logs, history, completions, help, version,
//! output formats, progress lines and exit codes.

use crate::test::*;

const PIPE: &str = r#"
[step.extract]
description = "Pull the raw events"
params = { date = "date" }
inputs = ["raw/{{ date }}.log"]
outputs = ["events/{{ date }}.csv"]
run = "echo extracting {{ date }}; cat {{ inputs[0] }} > {{ outputs[0] }}"

[step.rollup]
params = { date = "date" }
start = "2024-01-01"
end = "2024-01-31"
schedule = "@daily"
inputs = ["events/{{ date }}.csv", "rollup/{{ date | add_days(-1) }}.csv"]
outputs = ["rollup/{{ date }}.csv"]
run = "cat {{ inputs }} > {{ outputs[0] }}"

[step.report]
params = { month = "month", region = ["eu", "us"] }
inputs = ["rollup/{{ month }}-01.csv"]
outputs = ["report/{{ region }}/{{ month }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#;

fn pipe() -> Test {
    Test::new().fluxfile(PIPE).file("raw/2024-01-01.log", "e1\n").file("raw/2024-01-02.log", "e2\n")
}

#[test]
fn list_prints_steps_params_schedules_and_descriptions() {
    pipe().args(["list"]).run().assert_status(0).stdout_is(
        "extract [date: date]
    Pull the raw events
rollup [date: date] schedule @daily from 2024-01-01 to 2024-01-31
report [month: month, region: eu|us]
",
    );
}

#[test]
fn list_json() {
    let o = pipe().args(["list", "--output", "json"]).run();
    o.assert_status(0);
    let j = o.json();
    let steps = j["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["name"], "extract");
    assert_eq!(steps[0]["description"], "Pull the raw events");
    assert_eq!(steps[0]["params"], serde_json::json!([{"name": "date", "kind": "date"}]));
    assert_eq!(steps[0]["inputs"], serde_json::json!(["raw/{{ date }}.log"]));
    assert_eq!(steps[0]["outputs"], serde_json::json!(["events/{{ date }}.csv"]));
    assert_eq!(steps[1]["schedule"], "@daily");
    assert_eq!(steps[1]["start"], "2024-01-01");
    assert_eq!(steps[1]["end"], "2024-01-31");
    assert_eq!(steps[2]["params"][1], serde_json::json!({"name": "region", "kind": "eu|us"}));
}

/// A graph without bounded domains: every step probed at any date sees its upstream.
const GRAPH: &str = r#"
[flux]
start = "2024-01-01"

[step.extract]
params = { date = "date" }
inputs = ["raw/{{ date }}.log"]
outputs = ["events/{{ date }}.csv"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"

[step.rollup]
params = { date = "date" }
inputs = ["events/{{ date }}.csv", "rollup/{{ date | add_days(-1) }}.csv"]
outputs = ["rollup/{{ date }}.csv"]
run = "cat {{ inputs }} > {{ outputs[0] }}"

[step.report]
params = { month = "month", region = ["eu", "us"] }
inputs = ["rollup/{{ month }}-01.csv"]
outputs = ["report/{{ region }}/{{ month }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#;

fn graph(args: &[&str]) -> Output {
    let mut a = vec!["graph"];
    a.extend_from_slice(args);
    Test::new().fluxfile(GRAPH).args(a).run()
}

#[test]
fn graph_text_lists_each_step_with_its_upstream() {
    graph(&[]).assert_status(0).stdout_is("extract\nrollup <- extract\nreport <- rollup\n");
}

#[test]
fn graph_dot() {
    graph(&["--format", "dot"]).assert_status(0).stdout_is(
        "digraph flux {
  rankdir=LR;
  node [shape=box];
  \"extract\";
  \"rollup\";
  \"report\";
  \"extract\" -> \"rollup\";
  \"rollup\" -> \"report\";
}
",
    );
}

#[test]
fn graph_mermaid() {
    graph(&["--format", "mermaid"]).assert_status(0).stdout_is(
        "graph LR
  n0[\"extract\"]
  n1[\"rollup\"]
  n2[\"report\"]
  n0 --> n1
  n1 --> n2
",
    );
}

#[test]
fn graph_json() {
    let o = graph(&["--format", "json"]);
    o.assert_status(0);
    assert_eq!(
        o.json(),
        serde_json::json!({
            "nodes": ["extract", "rollup", "report"],
            "edges": [{"from": "extract", "to": "rollup"}, {"from": "rollup", "to": "report"}],
        })
    );
}

#[test]
fn graph_shows_edges_into_steps_whose_upstream_has_a_bounded_domain() {
    // rollup runs from 2024-01-01 to 2024-01-31 and report[2024-01] reads rollup[2024-01-01]:
    // the step graph has the edge rollup -> report, whatever date flux probes with.
    pipe().args(["graph"]).run().assert_status(0).stdout_is("extract\nrollup <- extract\nreport <- rollup\n");
    let o = pipe().args(["graph", "--tasks", "report", "--param", "month=2024-01", "--format", "json"]).run();
    o.assert_status(0);
    assert!(
        o.json()["edges"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e["from"] == "rollup[2024-01-01]" && e["to"] == "report[month=2024-01,region=eu]")),
        "{}",
        o.describe()
    );
}

#[test]
fn graph_tasks_shows_the_task_graph() {
    let o = graph(&["--tasks", "rollup", "--date-range", "2024-01-01..2024-01-02"]);
    o.assert_status(0);
    let mut lines: Vec<String> = o
        .stdout_lines()
        .iter()
        .map(|l| match l.split_once(" <- ") {
            Some((n, ups)) => {
                let mut u: Vec<&str> = ups.split(", ").collect();
                u.sort_unstable();
                format!("{n} <- {}", u.join(", "))
            }
            None => l.to_string(),
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "extract[2024-01-01]",
            "extract[2024-01-02]",
            "rollup[2024-01-01] <- extract[2024-01-01]",
            "rollup[2024-01-02] <- extract[2024-01-02], rollup[2024-01-01]",
        ]
    );
    let o = graph(&["--tasks", "rollup[2024-01-02]", "--format", "dot"]);
    o.assert_status(0)
        .stdout_has("\"rollup[2024-01-01]\" -> \"rollup[2024-01-02]\";")
        .stdout_has("\"extract[2024-01-02]\" -> \"rollup[2024-01-02]\";");
    let o = graph(&["--tasks", "report", "--param", "month=2024-02", "--format", "mermaid"]);
    o.assert_status(0).stdout_has("graph LR\n").stdout_has("[\"report[month=2024-02,region=us]\"]");
}

#[test]
fn graph_tasks_needs_param_values() {
    pipe().args(["graph", "--tasks", "extract"]).run().assert_status(2).stderr_has("--date D");
}

#[test]
fn logs_prints_the_latest_attempts_log() {
    let t = pipe();
    t.run_args(json_build(&["extract", "--date", "2024-01-02"])).assert_status(0);
    let log = t.run_args(["logs", "extract[2024-01-02]"]).assert_status(0).stdout.clone();
    let head = format!("$ echo extracting 2024-01-02; cat raw/2024-01-02.log > {}/.flux/stage/", t.path().display());
    assert!(log.starts_with(&head), "{log}");
    assert_eq!(printed(&log), "extracting 2024-01-02\n");
    let first = t.run_args(["logs", "extract[2024-01-02]", "--attempt", "1"]).assert_status(0).stdout.clone();
    assert_eq!(first, log);
    t.run_args(["logs", "extract[2024-01-02]", "--attempt", "2"])
        .assert_status(2)
        .stderr_is("error: extract[2024-01-02] has no attempt 2 on record\n");
    t.run_args(["logs", "extract[2024-01-01]"])
        .assert_status(2)
        .stderr_is("error: extract[2024-01-01] has never run\n");
}

#[test]
fn logs_takes_task_ids_with_params_in_any_order() {
    let t = Test::new().fluxfile("[step.r]\nparams = { date = \"date\", region = [\"eu\", \"us\"] }\noutputs = [\"r/{{ region }}/{{ date }}.txt\"]\nrun = \"echo {{ region }}; echo > {{ outputs[0] }}\"\n");
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(2, 0, 0, 0);
    assert_eq!(printed(&t.run_args(["logs", "r[region=us,date=2024-01-01]"]).assert_status(0).stdout), "us\n");
}

#[test]
fn logs_of_a_task_that_printed_nothing_is_not_an_error() {
    let t = Test::new().fluxfile("[step.silent]\noutputs = [\"s.txt\"]\nrun = \"echo > {{ outputs[0] }}\"\n");
    t.run_args(json_build(&[])).assert_status(0);
    let o = t.run_args(["logs", "silent"]);
    o.assert_status(0).stderr_is("");
}

#[test]
fn logs_before_any_build_is_an_error() {
    pipe().args(["logs", "extract[2024-01-01]"]).run().assert_status(2).stderr_has("run `flux build` first");
}

#[test]
fn history_json_lists_attempts_newest_first() {
    let t = pipe();
    t.run_args(json_build(&["extract", "--date", "2024-01-01"])).assert_status(0);
    t.run_args(json_build(&["extract", "--date", "2024-01-02"])).assert_status(0);
    let o = t.run_args(["history", "--output", "json"]);
    o.assert_status(0);
    let j = o.json();
    let a = j["attempts"].as_array().expect("attempts");
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["task"], "extract[2024-01-02]");
    assert_eq!(a[1]["task"], "extract[2024-01-01]");
    assert_eq!(a[0]["step"], "extract");
    assert_eq!(a[0]["params"], serde_json::json!({"date": "2024-01-02"}));
    assert_eq!(a[0]["status"], "success");
    assert_eq!(a[0]["reason"], "missing-output");
    assert_eq!(a[0]["attempt"], 1);
    assert_eq!(a[0]["exit_code"], 0);
    assert!(a[0]["run_id"].as_i64() > a[1]["run_id"].as_i64());
    assert!(
        a[0]["log"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!("/.flux/logs/extract/extract_2024-01-02_/{}-1.log", a[0]["run_id"]))),
        "{}",
        a[0]
    );
    let limited = t.run_args(["history", "--output", "json", "--limit", "1"]).json();
    assert_eq!(limited["attempts"].as_array().map(Vec::len), Some(1));
    let by_step = t.run_args(["history", "--output", "json", "--step", "rollup"]).json();
    assert_eq!(by_step["attempts"].as_array().map(Vec::len), Some(0));
}

#[test]
fn history_text_has_one_line_per_attempt() {
    let t = pipe();
    t.run_args(json_build(&["extract", "--date", "2024-01-01"])).assert_status(0);
    let o = t.run_args(["history"]);
    o.assert_status(0);
    assert_eq!(o.stdout_lines().len(), 1);
    o.stdout_has("success").stdout_has("extract[2024-01-01]").stdout_has("missing-output");
}

#[test]
fn history_without_state_is_empty() {
    let o = pipe().args(["history", "--output", "json"]).run();
    o.assert_status(0);
    assert_eq!(o.json(), serde_json::json!({"attempts": []}));
}

#[test]
fn completions_bash_prints_a_script() {
    let o = Test::new().args(["completions", "bash"]).run();
    o.assert_status(0).stdout_has("_flux()").stdout_has("complete -F _flux").stdout_has("build");
    Test::new().args(["completions", "zsh"]).run().assert_status(0).stdout_has("#compdef flux");
}

#[test]
fn version_prints_the_crate_version() {
    Test::new().args(["--version"]).run().assert_status(0).stdout_is(&format!("flux {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_mentions_the_subcommands_and_global_flags() {
    let o = Test::new().args(["--help"]).run();
    o.assert_status(0);
    for w in [
        "build",
        "check",
        "list",
        "graph",
        "logs",
        "history",
        "completions",
        "--file",
        "--verbose",
        "--quiet",
        "--color",
        "--version",
    ] {
        o.stdout_has(w);
    }
}

#[test]
fn build_help_mentions_the_main_flags() {
    let o = Test::new().args(["build", "--help"]).run();
    o.assert_status(0);
    for w in [
        "--date",
        "--date-range",
        "--param",
        "--var",
        "--profile",
        "--jobs",
        "--dry-run",
        "--force",
        "--from",
        "--fail-fast",
        "--rerun-triggers",
        "--output",
    ] {
        o.stdout_has(w);
    }
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    Test::new().fluxfile(PIPE).args(["build", "--dates", "2024-01-01"]).run().assert_status(2).stderr_has("--dates");
}

#[test]
fn progress_lines_go_to_stderr_in_ci() {
    let t = pipe();
    let o = t.run_args(["build", "extract", "--date", "2024-01-01"]);
    // One line per finished task, with its reason; start lines only with -v.
    o.assert_status(0).stderr_lacks("run  ");
    let ok = o
        .stderr()
        .lines()
        .find(|l| l.starts_with("ok   extract[2024-01-01] (missing-output) "))
        .unwrap_or_else(|| panic!("{}", o.describe()));
    assert!(ok.ends_with(" [1/1]") && ok.contains("s [1/1]"), "{ok}");
    let v = t.run_args(["-v", "build", "extract", "--date", "2024-01-02", "--force"]);
    v.assert_status(0).stderr_has("run  extract[2024-01-02] (forced)\n");
    assert!(o.stdout.starts_with("1 ran, 0 up to date ("), "{}", o.describe());
    assert!(o.stdout.trim_end().ends_with("s)"), "{}", o.describe());
    assert_eq!(o.stdout_lines().len(), 1);
}

#[test]
fn progress_lines_are_plain_when_stderr_is_not_a_terminal_even_without_ci() {
    let t = pipe().env_remove("CI");
    let o = t.run_args(["build", "extract", "--date", "2024-01-01"]);
    o.assert_status(0).stderr_has("ok   extract[2024-01-01]");
}

#[test]
fn quiet_prints_only_failures() {
    let t = pipe();
    let o = t.run_args(["-q", "build", "extract", "--date-range", "2024-01-01..2024-01-03"]);
    o.assert_status(1);
    o.stderr_lacks("run  ").stderr_lacks("ok   ").stderr_has("extract[2024-01-03]").stderr_has("missing source");
    assert!(!o.stderr().contains("extract[2024-01-01]"), "{}", o.describe());
}

#[test]
fn json_output_keeps_progress_on_stderr() {
    let t = pipe();
    let o = t.run_args(json_build(&["extract", "--date", "2024-01-01"]));
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    assert!(o.stdout.trim_end().lines().count() == 1, "{}", o.describe());
    o.stderr_has("ok   extract[2024-01-01]");
    let task = o.task("extract[2024-01-01]");
    assert_eq!(task["step"], "extract");
    assert_eq!(task["params"], serde_json::json!({"date": "2024-01-01"}));
    assert_eq!(task["attempts"], 1);
    assert!(task["duration_s"].as_f64().is_some_and(|d| d >= 0.0));
}

#[test]
fn dry_run_json_has_would_run_statuses() {
    let t = pipe();
    t.run_args(json_build(&["extract", "--date", "2024-01-01"])).assert_status(0);
    let o = t.run_args(json_build(&["rollup", "--date-range", "2024-01-01..2024-01-02", "-n"]));
    o.assert_status(0);
    o.assert_task("extract[2024-01-01]", "skipped", None);
    o.assert_task("extract[2024-01-02]", "would-run", Some("missing-output"));
    o.assert_task("rollup[2024-01-01]", "would-run", Some("missing-output"));
    let s = &o.json()["summary"];
    assert_eq!(s["would_run"], 3);
    assert_eq!(s["skipped"], 1);
    assert_eq!(s["ran"], 0);
    assert!(o.json().get("run_id").is_none_or(|v| v.is_null()), "a dry run has no run");
}

#[test]
fn exit_codes_are_0_1_and_2() {
    let t = pipe();
    t.run_args(["build", "extract", "--date", "2024-01-01"]).assert_status(0);
    t.run_args(["build", "extract", "--date", "2024-01-05"])
        .stderr_has("FAIL extract[2024-01-05]: missing source `raw/2024-01-05.log` needed by extract[2024-01-05]")
        .assert_status(1);
    t.run_args(["build", "extract"]).assert_status(2).stderr_has("has a date param `date` and no value for it");
    t.run_args(["build", "extract", "--date", "2024-01-05", "-n"]).assert_status(0).stderr_has(
        "warning: missing source `raw/2024-01-05.log` needed by extract[2024-01-05]: the build would fail here",
    );
}

#[test]
fn verbose_shows_every_tasks_decision_and_the_phase_timings() {
    let t = Test::new()
        .fluxfile("[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo a > {{ outputs[0] }}\"\n\n[step.b]\ninputs = [\"a.txt\"]\noutputs = [\"b.txt\"]\nrun = \"cat {{ inputs }} > {{ outputs[0] }}\"\n");
    t.run_args(["build"]).assert_status(0);
    t.run_args(["build", "-v"])
        .assert_status(0)
        .stderr_has("skip a (up to date)")
        .stderr_has("skip b (up to date)")
        .stderr_has("flux: load Fluxfile: ");
    t.run_args(["build"]).assert_status(0).stderr_lacks("skip a");
}

#[test]
fn status_draws_one_grid_per_kind_of_time() {
    let t = Test::new().fluxfile(
        "[step.hourly]\nparams = { hour = \"hour\" }\noutputs = [\"h/{{ hour }}.txt\"]\nrun = \"echo > {{ outputs[0] }}\"\n\n\
         [step.daily]\nparams = { date = \"date\" }\ninputs = [\"\"\"\n{% for h in date | hours %}h/{{ h }}.txt\n{% endfor %}\"\"\"]\noutputs = [\"d/{{ date }}.txt\"]\nrun = \"cat {{ inputs }} > {{ outputs[0] }}\"\n",
    );
    t.run_args(["build", "--date", "2024-03-01"]).assert_status(0);
    let o = t.run_args(["status", "--date", "2024-03-01"]);
    o.assert_status(0)
        .stdout_has("2024-03-01T00 .. 2024-03-01T23 (24 hours)")
        .stdout_has("2024-03-01 .. 2024-03-01 (1 date)")
        .stdout_has(&format!("hourly  {}", "#".repeat(24)));
    let json = t.run_args(["status", "--date", "2024-03-01", "--output", "json"]).json();
    let kinds: Vec<&str> = json["rows"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["hour", "date"]);
}
