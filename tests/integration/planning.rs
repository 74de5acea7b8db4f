//! Planning (SPEC §3): targets, inferred dependencies, the yesterday chain, `requires`,
//! and the planning errors (cycle, two producers, ambiguous producer, non-invertible output).

use crate::test::*;

const PIPELINE: &str = r#"
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

[step.join]
params = { hour = "hour" }
outputs = ["join/{{ hour | ds_nodash }}.txt"]
run = "echo {{ hour }} > {{ outputs[0] }}"

[step.report]
params = { date = "date", region = ["eu", "us"] }
inputs = ["rollup/{{ date }}.csv"]
outputs = ["report/{{ region }}/{{ date }}.txt"]
run = "echo {{ region }} > {{ outputs[0] }}; cat {{ inputs }} >> {{ outputs[0] }}"
"#;

fn pipeline() -> Test {
    Test::new()
        .fluxfile(PIPELINE)
        .file("raw/2024-01-01.log", "d1\n")
        .file("raw/2024-01-02.log", "d2\n")
        .file("raw/2024-01-03.log", "d3\n")
        .file("raw/2024-01-04.log", "d4\n")
        .file("raw/2024-01-05.log", "d5\n")
}

#[test]
fn target_by_step_name_builds_that_step_and_its_upstream_only() {
    let t = pipeline();
    let o = t.run_args(json_build(&["rollup", "--date", "2024-01-02"]));
    o.assert_status(0).assert_ran(&[
        "extract[2024-01-01]",
        "extract[2024-01-02]",
        "rollup[2024-01-01]",
        "rollup[2024-01-02]",
    ]);
    assert!(!t.exists("report"));
    assert!(!t.exists("join"));
    assert_eq!(t.read("rollup/2024-01-02.csv"), "d2\nd1\n");
}

#[test]
fn target_by_task_id_of_an_hour_step() {
    let t = pipeline();
    let o = t.run_args(json_build(&["join[2024-03-01T02]"]));
    o.assert_status(0).assert_summary(1, 0, 0, 0).assert_ran(&["join[2024-03-01T02]"]);
    assert_eq!(t.read("join/2024030102.txt"), "2024-03-01T02\n");
}

#[test]
fn target_by_task_id_with_several_params_in_any_order() {
    let t = pipeline();
    let o = t.run_args(json_build(&["report[date=2024-01-02,region=eu]"]));
    o.assert_status(0).assert_ran(&[
        "extract[2024-01-01]",
        "extract[2024-01-02]",
        "report[date=2024-01-02,region=eu]",
        "rollup[2024-01-01]",
        "rollup[2024-01-02]",
    ]);
    assert_eq!(t.read("report/eu/2024-01-02.txt"), "eu\nd2\nd1\n");
    assert!(!t.exists("report/us"));
    // Same task named with its params the other way round: canonical id, up to date.
    let o = t.run_args(json_build(&["report[region=eu,date=2024-01-02]"]));
    o.assert_status(0).assert_summary(0, 5, 0, 0);
    assert!(o.ids().contains(&"report[date=2024-01-02,region=eu]".to_string()));
}

#[test]
fn target_by_output_path() {
    let t = pipeline();
    let o = t.run_args(json_build(&["report/us/2024-01-01.txt"]));
    o.assert_status(0).assert_ran(&["extract[2024-01-01]", "report[date=2024-01-01,region=us]", "rollup[2024-01-01]"]);
    let o = t.run_args(json_build(&["./join/2024030102.txt"]));
    o.assert_status(0).assert_ran(&["join[2024-03-01T02]"]);
}

#[test]
fn target_by_output_path_relative_to_a_subfolder() {
    // The target is taken relative to the current folder when it is not a path any step
    // writes relative to the Fluxfile's folder.
    let t = pipeline().dir("report/us").current_dir("report");
    let o = t.run_args(json_build(&["us/2024-01-01.txt"]));
    o.assert_status(0).assert_ran(&["extract[2024-01-01]", "report[date=2024-01-01,region=us]", "rollup[2024-01-01]"]);
    assert!(t.exists("report/us/2024-01-01.txt"));
}

#[test]
fn unknown_target_says_did_you_mean() {
    pipeline().args(["build", "rolup", "--date", "2024-01-01"]).run().assert_status(2).stderr_is(
        "error: `rolup` is not a step, a task id, or a path any step writes; did you mean the step `rollup`?\n",
    );
}

#[test]
fn no_target_builds_every_step_nothing_depends_on() {
    let t = Test::new().fluxfile(
        r#"
[step.a]
outputs = ["a.txt"]
run = "echo a > {{ outputs[0] }}"

[step.b]
inputs = ["a.txt"]
outputs = ["b.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}; echo b >> {{ outputs[0] }}"

[step.lonely]
outputs = ["lonely.txt"]
run = "echo lonely > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_ran(&["a", "b", "lonely"]);
    assert_eq!(t.read("b.txt"), "a\nb\n");
    // a runs before b.
    let ids = o.ids();
    assert!(ids.iter().position(|i| i == "a") < ids.iter().position(|i| i == "b"), "{ids:?}");
}

#[test]
fn yesterday_chain_drops_the_input_before_start() {
    let t = pipeline();
    let o = t.run_args(json_build(&["rollup", "--date-range", "2024-01-01..2024-01-03"]));
    o.assert_status(0).assert_summary(6, 0, 0, 0);
    // The first day has no yesterday: rollup[2024-01-01] reads its events only.
    assert_eq!(t.read("rollup/2024-01-01.csv"), "d1\n");
    assert_eq!(t.read("rollup/2024-01-03.csv"), "d3\nd2\nd1\n");
    let g =
        t.run_args(["graph", "--tasks", "rollup", "--date-range", "2024-01-01..2024-01-02", "--format", "json"]).json();
    let edges: Vec<(String, String)> = g["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| (e["from"].as_str().unwrap_or_default().to_string(), e["to"].as_str().unwrap_or_default().to_string()))
        .collect();
    let into_first: Vec<&String> = edges.iter().filter(|(_, to)| to == "rollup[2024-01-01]").map(|(f, _)| f).collect();
    assert_eq!(into_first, [&"extract[2024-01-01]".to_string()]);
    assert!(edges.contains(&("rollup[2024-01-01]".into(), "rollup[2024-01-02]".into())));
}

#[test]
fn yesterday_chain_builds_the_earlier_days_it_needs() {
    let t = pipeline();
    let o = t.run_args(json_build(&["rollup[2024-01-03]"]));
    o.assert_status(0).assert_ran(&[
        "extract[2024-01-01]",
        "extract[2024-01-02]",
        "extract[2024-01-03]",
        "rollup[2024-01-01]",
        "rollup[2024-01-02]",
        "rollup[2024-01-03]",
    ]);
}

#[test]
fn a_yesterday_chain_without_a_start_is_a_quick_error_that_says_to_set_one() {
    // Without `start` the chain goes back forever. That is an error; it should come at
    // once and say what to do, not after walking every day back to the year 0.
    let t = Test::new().fluxfile(
        r#"[step.cum]
params = { date = "date" }
inputs = ["cum/{{ date | add_days(-1) }}.txt"]
outputs = ["cum/{{ date }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args_within(["build", "--date", "2024-01-05"], std::time::Duration::from_secs(15));
    o.assert_status(2).stderr_has("start");
}

#[test]
fn inputs_length_counts_only_the_inputs_kept() {
    let t = Test::new().fluxfile(
        r#"
[step.c]
params = { date = "date" }
start = "2024-01-01"
inputs = ["c/{{ date | add_days(-1) }}.txt"]
outputs = ["c/{{ date }}.txt"]
run = "echo {{ inputs | length }} > {{ outputs[0] }}"
"#,
    );
    t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-02"])).assert_status(0).assert_summary(2, 0, 0, 0);
    assert_eq!(t.read("c/2024-01-01.txt"), "0\n");
    assert_eq!(t.read("c/2024-01-02.txt"), "1\n");
}

const CYCLE: &str = r#"
[step.a]
params = { date = "date" }
inputs = ["b/{{ date }}.txt"]
outputs = ["a/{{ date }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"

[step.b]
params = { date = "date" }
inputs = ["a/{{ date }}.txt"]
outputs = ["b/{{ date }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"

[step.c]
params = { date = "date" }
inputs = ["a/{{ date }}.txt"]
outputs = ["c/{{ date }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#;

#[test]
fn cycle_is_an_error_that_prints_the_cycle() {
    let t = Test::new().fluxfile(CYCLE);
    let o = t.run_args(["build", "c", "--date", "2024-01-02"]);
    o.assert_status(2).stdout_is("").stderr_has("cycle: ");
    let line = o.stderr().lines().find(|l| l.contains("cycle: ")).unwrap_or_default().to_string();
    assert!(line.contains("a[2024-01-02]") && line.contains("b[2024-01-02]") && line.contains(" -> "), "{line}");
    // The cycle is closed: it starts and ends with the same task.
    let tasks: Vec<&str> = line.split("cycle: ").nth(1).unwrap_or_default().split(" -> ").collect();
    assert_eq!(tasks.first(), tasks.last(), "{line}");
    assert!(!t.exists(".flux"), "nothing ran and no state was written");
    // Also with no target: c needs a, which is in the cycle.
    t.run_args(["build", "--date", "2024-01-02"]).assert_status(2).stderr_has("cycle: ");
}

#[test]
fn cycle_among_the_only_steps_is_an_error_without_targets() {
    // Every step of this Fluxfile is depended on by another, so "every step nothing
    // depends on" is empty; the cycle must still be reported, not a silent empty build.
    let t = Test::new().fluxfile(&CYCLE[..CYCLE.find("[step.c]").unwrap_or(CYCLE.len())]);
    let o = t.run_args(["build", "--date", "2024-01-02"]);
    o.assert_status(2).stderr_has("cycle: ");
}

#[test]
fn a_step_may_depend_on_other_dates_of_itself() {
    let t = Test::new().fluxfile(
        r#"
[step.cum]
params = { date = "date" }
start = "2024-01-01"
inputs = ["cum/{{ date | add_days(-1) }}.txt"]
outputs = ["cum/{{ date }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}; echo {{ date }} >> {{ outputs[0] }}"
"#,
    );
    t.run_args(json_build(&["--date", "2024-01-03"])).assert_status(0).assert_summary(3, 0, 0, 0);
    assert_eq!(t.read("cum/2024-01-03.txt"), "2024-01-01\n2024-01-02\n2024-01-03\n");
}

#[test]
fn two_tasks_writing_one_path_is_an_error() {
    let t = Test::new().fluxfile(
        r#"
[step.a]
params = { date = "date" }
outputs = ["x/{{ date }}.txt"]
run = "echo a > {{ outputs[0] }}"

[step.b]
params = { date = "date" }
outputs = ["x/{{ date }}.txt"]
run = "echo b > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(["build", "--date", "2024-01-02"]);
    o.assert_status(2).stderr_is(
        "error: two tasks write `x/2024-01-02.txt`: a[2024-01-02] and b[2024-01-02]; give each task its own output path
 --> Fluxfile:9:12
  |
9 | outputs = [\"x/{{ date }}.txt\"]
  |            ^^^^^^^^^^^^^^^^^^
  = help: a[2024-01-02] writes it through the output at Fluxfile:4:12
",
    );
    assert!(!t.exists("x"));
}

#[test]
fn an_input_two_tasks_could_write_is_an_error_naming_them() {
    let t = Test::new().fluxfile(
        r#"
[step.a]
params = { date = "date" }
outputs = ["x/{{ date }}.txt"]
run = "echo a > {{ outputs[0] }}"

[step.b]
params = { tag = ["2024-01-05", "latest"] }
outputs = ["x/{{ tag }}.txt"]
run = "echo b > {{ outputs[0] }}"

[step.c]
params = { date = "date" }
inputs = ["x/{{ date }}.txt"]
outputs = ["c/{{ date }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#,
    );
    t.run_args(["build", "c", "--date", "2024-01-05"]).assert_status(2).stderr_is(
        "error: c[2024-01-05]: input `x/2024-01-05.txt` could be written by several tasks: a[2024-01-05], b[2024-01-05]; make the output templates distinct
  --> Fluxfile:14:11
   |
14 | inputs = [\"x/{{ date }}.txt\"]
   |           ^^^^^^^^^^^^^^^^^^
",
    );
}

#[test]
fn non_invertible_output_template_is_an_error_naming_the_step() {
    Test::new()
        .fluxfile(
            r#"[step.shifted]
params = { date = "date" }
outputs = ["x/{{ date | add_days(1) }}.txt"]
run = "true"
"#,
        )
        .args(["build", "--date", "2024-01-02"])
        .run()
        .assert_status(2)
        .stderr_is(
            "error: output template `x/{{ date | add_days(1) }}.txt` of step `shifted` cannot be matched back to its task: param `date` goes through a filter that cannot be undone
 --> Fluxfile:3:12
  |
3 | outputs = [\"x/{{ date | add_days(1) }}.txt\"]
  |            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  = help: in outputs, write each param only as {{ p }}, {{ p | strftime(\"…\") }} or {{ p | ds_nodash }}, and use every param
",
        );
}

#[test]
fn output_template_missing_a_param_is_an_error_naming_the_step() {
    Test::new()
        .fluxfile("[step.r]\nparams = { date = \"date\", region = [\"eu\", \"us\"] }\noutputs = [\"x/{{ date }}.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: output template `x/{{ date }}.txt` of step `r` cannot be matched back to its task: param `region` does not appear in it")
        .stderr_has(" --> Fluxfile:3:12");
}

#[test]
fn lossy_strftime_in_an_output_is_an_error() {
    Test::new()
        .fluxfile("[step.r]\nparams = { date = \"date\" }\noutputs = [\"x/{{ date | strftime('%Y-%m') }}.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("of step `r` cannot be matched back to its task")
        .stderr_has("loses part of the date");
}

#[test]
fn requires_orders_tasks_without_files() {
    let t = Test::new().fluxfile(
        r#"
[step.load_users]
params = { date = "date" }
run = "sleep 0.2; echo users {{ date }} >> trace.txt"

[step.report]
params = { date = "date" }
requires = ["load_users"]
run = "echo report {{ date }} >> trace.txt"
"#,
    );
    let o = t.run_args(json_build(&["report", "--date", "2024-01-05", "-j", "4"]));
    o.assert_status(0).assert_ran(&["load_users[2024-01-05]", "report[2024-01-05]"]);
    o.assert_task("load_users[2024-01-05]", "success", Some("never-run"));
    assert_eq!(t.read("trace.txt"), "users 2024-01-05\nreport 2024-01-05\n");
    // Steps without outputs are complete once their last run succeeded.
    t.run_args(json_build(&["report", "--date", "2024-01-05"])).assert_status(0).assert_summary(0, 2, 0, 0);
}

#[test]
fn requires_table_form_names_other_params() {
    let t = Test::new().fluxfile(
        r#"
[step.load]
params = { date = "date", region = ["eu", "us"] }
run = "sleep 0.2; echo load {{ date }} {{ region }} >> trace.txt"

[step.weekly]
params = { date = "date" }
requires = [{ step = "load", date = "{{ date | add_days(-1) }}", region = "us" }]
outputs = ["weekly/{{ date }}.txt"]
run = "echo weekly {{ date }} >> trace.txt; echo w > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&["weekly", "--date", "2024-01-05", "-j", "4"]));
    o.assert_status(0).assert_ran(&["load[date=2024-01-04,region=us]", "weekly[2024-01-05]"]);
    assert_eq!(t.read("trace.txt"), "load 2024-01-04 us\nweekly 2024-01-05\n");
}

#[test]
fn requires_before_the_start_is_dropped() {
    let t = Test::new().fluxfile(
        r#"
[step.prev]
params = { date = "date" }
start = "2024-01-05"
run = "echo prev {{ date }} >> trace.txt"

[step.next]
params = { date = "date" }
requires = [{ step = "prev", date = "{{ date | add_days(-1) }}" }]
run = "echo next {{ date }} >> trace.txt"
"#,
    );
    let o = t.run_args(json_build(&["next", "--date", "2024-01-05"]));
    o.assert_status(0).assert_ran(&["next[2024-01-05]"]);
}

#[test]
fn dry_run_prints_what_would_run_and_why_and_writes_nothing() {
    let t = pipeline();
    let o = t.run_args(["build", "rollup", "--date-range", "2024-01-01..2024-01-02", "-n"]);
    o.assert_status(0);
    let lines = o.stdout_lines();
    assert_eq!(lines.last(), Some(&"dry run: 4 tasks would run, 0 up to date"), "{}", o.describe());
    let mut would: Vec<&str> = lines[..lines.len() - 1].to_vec();
    // Every task after the ones it needs.
    let pos = |id: &str| would.iter().position(|l| l.contains(id));
    assert!(pos("rollup[2024-01-01]") < pos("rollup[2024-01-02]"), "{}", o.describe());
    assert!(pos("extract[2024-01-02]") < pos("rollup[2024-01-02]"), "{}", o.describe());
    would.sort_unstable();
    assert_eq!(
        would,
        [
            "would run extract[2024-01-01] (missing-output)",
            "would run extract[2024-01-02] (missing-output)",
            "would run rollup[2024-01-01] (missing-output)",
            "would run rollup[2024-01-02] (missing-output)",
        ]
    );
    assert!(!t.exists(".flux"), "a dry run writes no state");
    assert!(!t.exists("events") && !t.exists("rollup"));
}

#[test]
fn dry_run_reports_upstream_and_skipped_tasks() {
    let t = pipeline();
    t.run_args(json_build(&["rollup", "--date-range", "2024-01-01..2024-01-03"]))
        .assert_status(0)
        .assert_summary(6, 0, 0, 0);
    t.write("raw/2024-01-02.log", "changed\n");
    let o = t.run_args(["build", "rollup", "--date-range", "2024-01-01..2024-01-03", "-n", "--output", "json"]);
    o.assert_status(0);
    o.assert_task("extract[2024-01-01]", "skipped", None);
    o.assert_task("extract[2024-01-02]", "would-run", Some("input-changed"));
    o.assert_task("rollup[2024-01-02]", "would-run", Some("upstream"));
    o.assert_task("rollup[2024-01-03]", "would-run", Some("upstream"));
    assert_eq!(o.summary("would_run"), 3);
    assert_eq!(o.summary("skipped"), 3);
    assert_eq!(t.read("events/2024-01-02.csv"), "d2\n", "a dry run runs nothing");
}

#[test]
fn dry_run_shows_a_tasks_own_command_change_behind_a_running_upstream() {
    let t = pipeline();
    t.run_args(json_build(&["rollup", "--date-range", "2024-01-01..2024-01-03"])).assert_status(0);
    t.write("raw/2024-01-02.log", "changed\n");
    t.write(
        "Fluxfile",
        PIPELINE.replace(
            "run = \"cat {{ inputs }} > {{ outputs[0] }}\"",
            "run = \"cat {{ inputs }} | cat > {{ outputs[0] }}\"",
        ),
    );
    let o = t.run_args(["build", "rollup", "--date-range", "2024-01-01..2024-01-03", "-n", "--output", "json"]);
    o.assert_status(0);
    o.assert_task("extract[2024-01-02]", "would-run", Some("input-changed"));
    // Behind a running upstream, but its own command changed: that is what the build records.
    o.assert_task("rollup[2024-01-02]", "would-run", Some("command-changed"));
    o.assert_task("rollup[2024-01-03]", "would-run", Some("command-changed"));
    let built = t.run_args(json_build(&["rollup", "--date-range", "2024-01-01..2024-01-03"]));
    built.assert_status(0);
    built.assert_task("rollup[2024-01-03]", "success", Some("command-changed"));
}

#[test]
fn a_task_id_outside_its_steps_domain_is_a_usage_error() {
    let t = pipeline();
    t.run_args(["build", "rollup[2023-12-31]", "-n"])
        .assert_status(2)
        .stderr_has("task `rollup[2023-12-31]` is outside the domain of step `rollup`: from 2024-01-01 on");
    t.run_args(["build", "rollup", "--date", "2023-12-31", "-n"])
        .assert_status(2)
        .stderr_has("step `rollup` has no interval in what was asked: its domain is from 2024-01-01 on");
}

const CACHED: &str = r#"
[vars]
root = "a"

[flux]
include = ["more.toml"]

[step.make]
params = { date = "date" }
outputs = ["{{ root }}/{{ date }}.txt"]
run = "echo {{ date }} > {{ outputs[0] }}"
"#;

#[test]
fn a_repeated_build_reuses_its_plan_and_any_edit_or_var_plans_afresh() {
    let t = Test::new()
        .fluxfile(CACHED)
        .file("more.toml", "[step.extra]\noutputs = [\"x1.txt\"]\nrun = \"echo 1 > {{ outputs[0] }}\"\n");
    let date = ["--date", "2024-01-01"];
    t.run_args(["build", "-v", date[0], date[1]]).assert_status(0).stderr_lacks("(cached)");
    t.run_args(["build", "-v", date[0], date[1]]).assert_status(0).stderr_has("plan 2 tasks (cached)");
    // Another output template in the main file: a new graph, not the cached one.
    t.write("Fluxfile", CACHED.replace("{{ root }}/{{ date }}.txt", "{{ root }}/day-{{ date }}.txt"));
    t.run_args(["build", "-v", date[0], date[1]]).assert_status(0).stderr_lacks("(cached)");
    assert_eq!(t.read("a/day-2024-01-01.txt"), "2024-01-01\n");
    // A var from the command line.
    t.run_args(["build", "-v", "--var", "root=b", date[0], date[1]]).assert_status(0).stderr_lacks("(cached)");
    assert_eq!(t.read("b/day-2024-01-01.txt"), "2024-01-01\n");
    // An included file.
    t.write("more.toml", "[step.extra]\noutputs = [\"x2.txt\"]\nrun = \"echo 2 > {{ outputs[0] }}\"\n");
    t.run_args(["build", "-v", date[0], date[1]]).assert_status(0).stderr_lacks("(cached)");
    assert_eq!(t.read("x2.txt"), "2\n");
    // Other dates.
    t.run_args(["build", "-v", "--date", "2024-01-02"]).assert_status(0).stderr_lacks("(cached)");
    assert_eq!(t.read("a/day-2024-01-02.txt"), "2024-01-02\n");
}

#[test]
fn a_dry_run_writes_no_plan_but_reads_one() {
    let t = Test::new().fluxfile(CACHED).file("more.toml", "");
    t.run_args(["build", "-n", "--date", "2024-01-01"]).assert_status(0);
    assert!(!t.exists(".flux"), "a dry run writes nothing");
    t.run_args(["build", "--date", "2024-01-01"]).assert_status(0);
    t.run_args(["build", "-n", "-v", "--date", "2024-01-01"]).assert_status(0).stderr_has("(cached)");
}

#[test]
fn tasks_of_an_int_param_spread_far_apart_are_found_by_their_consumers() {
    // Planning keeps a step's tasks in an array by their one value while the values lie
    // close together, and in a hash table once they spread thinly: both are found.
    let ff = r#"
[step.make]
params = { n = "int" }
outputs = ["n/{{ n }}.txt"]
run = "echo {{ n }} > {{ outputs[0] }}"

[step.use]
params = { n = "int" }
inputs = ["n/{{ n }}.txt"]
outputs = ["u/{{ n }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#;
    let t = Test::new().fluxfile(ff);
    let values = ["1", "2", "1000000000", "-5", "7", "3"];
    t.run_args(["build", "--param", &format!("n={}", values.join(","))])
        .assert_status(0)
        .stdout_has("12 ran, 0 up to date");
    for v in values {
        assert_eq!(t.read(&format!("u/{v}.txt")), format!("{v}\n"));
    }
    // Named as targets, planning walks from each consumer to its producer.
    std::fs::remove_file(t.path().join("n/1000000000.txt")).expect("remove an output");
    t.run_args(["build", "-n", "use[1000000000]", "use[-5]"])
        .assert_status(0)
        .stdout_has("would run make[1000000000] (missing-output)")
        .stdout_has("would run use[1000000000] (upstream)")
        .stdout_has("dry run: 2 tasks would run, 2 up to date");
}

#[test]
fn a_long_list_param_is_found_by_its_consumers_even_where_one_value_begins_another() {
    // Over 32 values: found through the list's index, not a scan; "1" begins "10" and
    // "x" begins "x.txt", and each input still names exactly one producer.
    let mut vals: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    vals.push("x".into());
    vals.push("x.txt".into());
    let list = vals.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ");
    let t = Test::new().fluxfile(&format!(
        r#"
[step.t]
params = {{ n = [{list}] }}
outputs = ["out/{{{{ n }}}}.txt"]
run = "echo {{{{ n }}}} > {{{{ outputs[0] }}}}"

[step.all]
inputs = ["out/1.txt", "out/10.txt", "out/39.txt", "out/x.txt", "out/x.txt.txt"]
outputs = ["all.txt"]
run = "cat {{{{ inputs }}}} > {{{{ outputs[0] }}}}"
"#
    ));
    let o = t.run_args(json_build(&["all"]));
    o.assert_status(0).assert_summary(6, 0, 0, 0);
    for n in ["1", "10", "39", "x", "x.txt"] {
        o.assert_task(&format!("t[{n}]"), "success", Some("missing-output"));
    }
    assert_eq!(t.read("all.txt"), "1\n10\n39\nx\nx.txt\n");
}
