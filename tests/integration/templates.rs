//! Templates (SPEC §2.2): every filter seen through a command's output, multi-line input
//! templates, the command context, and automatic shell quoting (`| raw` opts out).

use crate::test::*;

/// A step for one date whose command writes `lines`, one `echo` each, to its output.
fn echo_step(params: &str, out: &str, lines: &[&str]) -> String {
    let cmds: Vec<String> =
        lines.iter().map(|l| format!("  \"echo {} >> {{{{ outputs[0] }}}}\",", l.replace('"', "\\\""))).collect();
    format!("[step.f]\nparams = {{ {params} }}\noutputs = [\"{out}\"]\nrun = [\n{}\n]\n", cmds.join("\n"))
}

fn render(params: &str, out: &str, lines: &[&str], args: &[&str]) -> String {
    let t = Test::new().fluxfile(&echo_step(params, out, lines));
    t.run_args(json_build(args)).assert_status(0).assert_summary(1, 0, 0, 0);
    let files: Vec<String> = t.tree("out").into_keys().collect();
    assert_eq!(files.len(), 1, "one output: {files:?}");
    t.read(&files[0])
}

#[test]
fn add_days_moves_a_date_both_ways() {
    let got = render(
        "date = \"date\"",
        "out/{{ date }}.txt",
        &["{{ date | add_days(1) }}", "{{ date | add_days(-1) }}", "{{ date | add_days(366) }}"],
        &["--date", "2024-02-29"],
    );
    assert_eq!(got, "2024-03-01\n2024-02-28\n2025-03-01\n");
}

#[test]
fn add_hours_moves_an_hour_across_days() {
    let got = render(
        "hour = \"hour\"",
        "out/{{ hour }}.txt",
        &["{{ hour | add_hours(2) }}", "{{ hour | add_hours(-24) }}", "{{ hour | add_days(1) }}"],
        &["--param", "hour=2024-12-31T23"],
    );
    assert_eq!(got, "2025-01-01T01\n2024-12-30T23\n2025-01-01T23\n");
}

#[test]
fn add_months_moves_months_and_clamps_days() {
    let got = render(
        "date = \"date\"",
        "out/{{ date }}.txt",
        &["{{ date | add_months(1) }}", "{{ date | add_months(-2) }}", "{{ date | add_months(13) }}"],
        &["--date", "2024-01-31"],
    );
    assert_eq!(got, "2024-02-29\n2023-11-30\n2025-02-28\n");
    let got = render(
        "month = \"month\"",
        "out/{{ month }}.txt",
        &["{{ month | add_months(-1) }}", "{{ month | add_months(12) }}"],
        &["--param", "month=2024-01"],
    );
    assert_eq!(got, "2023-12\n2025-01\n");
}

#[test]
fn strftime_formats_with_either_quote_style() {
    let got = render(
        "date = \"date\"",
        "out/{{ date }}.txt",
        &["{{ date | strftime('%Y/%m/%d') }}", "{{ date | strftime(\"%j %a\") }}", "{{ date | strftime('%H:%M') }}"],
        &["--date", "2024-02-29"],
    );
    assert_eq!(got, "2024/02/29\n060 Thu\n00:00\n");
}

#[test]
fn strftime_of_an_hour_and_a_month() {
    let got = render(
        "hour = \"hour\"",
        "out/{{ hour }}.txt",
        &["{{ hour | strftime('%Y%m%d-%H') }}"],
        &["--param", "hour=2024-03-01T07"],
    );
    assert_eq!(got, "20240301-07\n");
    let got = render(
        "month = \"month\"",
        "out/{{ month }}.txt",
        &["{{ month | strftime('%B %Y') }}"],
        &["--param", "month=2024-03"],
    );
    assert_eq!(got, "March 2024\n");
}

#[test]
fn ds_nodash_drops_the_dashes() {
    let got = render("date = \"date\"", "out/{{ date }}.txt", &["{{ date | ds_nodash }}"], &["--date", "2024-01-05"]);
    assert_eq!(got, "20240105\n");
    let got = render(
        "hour = \"hour\"",
        "out/{{ hour }}.txt",
        &["{{ hour | ds_nodash }}"],
        &["--param", "hour=2024-01-05T02"],
    );
    assert_eq!(got, "2024010502\n");
    let got =
        render("month = \"month\"", "out/{{ month }}.txt", &["{{ month | ds_nodash }}"], &["--param", "month=2024-02"]);
    assert_eq!(got, "202402\n");
}

#[test]
fn days_lists_the_dates_of_a_month() {
    let got = render(
        "month = \"month\"",
        "out/{{ month }}.txt",
        &["{{ month | days | length }}", "{{ (month | days)[0] }}", "{{ (month | days)[-1] }}"],
        &["--param", "month=2024-02"],
    );
    assert_eq!(got, "29\n2024-02-01\n2024-02-29\n");
    let got = render(
        "month = \"month\"",
        "out/{{ month }}.txt",
        &["{{ month | days | length }}"],
        &["--param", "month=2023-02"],
    );
    assert_eq!(got, "28\n");
}

#[test]
fn hours_lists_the_hours_of_a_date() {
    let got = render(
        "date = \"date\"",
        "out/{{ date }}.txt",
        &[
            "{{ date | hours | length }}",
            "{{ (date | hours)[0] }}",
            "{{ (date | hours)[23] }}",
            "{{ (date | hours)[5] | add_hours(1) }}",
        ],
        &["--date", "2024-03-01"],
    );
    assert_eq!(got, "24\n2024-03-01T00\n2024-03-01T23\n2024-03-01T06\n");
}

#[test]
fn date_range_function_with_days_lists_the_dates_between() {
    let got = render(
        "date = \"date\"",
        "out/{{ date }}.txt",
        &["{{ date_range(date | add_days(-2), date) | days }}"],
        &["--date", "2024-03-01"],
    );
    assert_eq!(got, "2024-02-28 2024-02-29 2024-03-01\n");
}

#[test]
fn basename_and_dirname_work_on_paths_and_lists() {
    let t = Test::new().fluxfile(
        r#"
[step.src]
outputs = ["deep/dir/src.txt"]
run = "echo s > {{ outputs[0] }}"

[step.f]
inputs = ["deep/dir/src.txt"]
outputs = ["out/f.txt"]
run = [
  "echo {{ inputs[0] | basename }} {{ inputs[0] | dirname }} > {{ outputs[0] }}",
  "echo {{ inputs | basename }} {{ 'a/b/c.tar.gz' | dirname }} {{ 'a/b/c.tar.gz' | basename }} >> {{ outputs[0] }}",
  "echo {{ outputs[0] | basename }} | sed 's/.*[.]/./' >> {{ outputs[0] }}",
]
"#,
    );
    t.run_args(json_build(&[])).assert_status(0).assert_summary(2, 0, 0, 0);
    // The last line: the staged output keeps its extension (tools look at extensions).
    assert_eq!(t.read("out/f.txt"), "src.txt deep/dir\nsrc.txt a/b c.tar.gz\n.txt\n");
}

#[test]
fn commands_see_step_task_params_and_intervals() {
    let got = render(
        "date = \"date\"",
        "out/{{ date }}.txt",
        &["{{ step }} {{ task }}", "{{ params.date }}", "{{ interval_start }} {{ interval_end }}", "{{ attempt }}"],
        &["--date", "2024-12-31"],
    );
    assert_eq!(got, "f f[2024-12-31]\n2024-12-31\n2024-12-31T00:00:00Z 2025-01-01T00:00:00Z\n1\n");
}

#[test]
fn intervals_of_hours_and_months() {
    let got = render(
        "hour = \"hour\"",
        "out/{{ hour }}.txt",
        &["{{ interval_start }} {{ interval_end }}"],
        &["--param", "hour=2024-02-29T23"],
    );
    assert_eq!(got, "2024-02-29T23:00:00Z 2024-03-01T00:00:00Z\n");
    let got = render(
        "month = \"month\"",
        "out/{{ month }}.txt",
        &["{{ interval_start }} {{ interval_end }}"],
        &["--param", "month=2024-12"],
    );
    assert_eq!(got, "2024-12-01T00:00:00Z 2025-01-01T00:00:00Z\n");
}

#[test]
fn filters_also_work_in_input_and_output_paths() {
    let t = Test::new()
        .fluxfile(
            r#"
[step.f]
params = { date = "date" }
inputs = ["raw/{{ date | strftime('%Y/%m') }}/{{ date | ds_nodash }}.log"]
outputs = ["out/{{ date | strftime('%Y/%m/%d') }}.txt"]
run = "cp {{ inputs[0] }} {{ outputs[0] }}"
"#,
        )
        .file("raw/2024/03/20240301.log", "march");
    t.run_args(json_build(&["--date", "2024-03-01"])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("out/2024/03/01.txt"), "march");
    // The output path maps back to its task.
    t.run_args(json_build(&["out/2024/03/01.txt", "--force"])).assert_status(0).assert_ran(&["f[2024-03-01]"]);
}

#[test]
fn an_output_with_a_partial_strftime_and_the_full_date_is_invertible() {
    // Hive-style partitions: the year alone is lossy, but the full date follows, so every
    // path still names one task (SPEC §2.2: each param appears only as {{ p }},
    // {{ p | strftime }} or {{ p | ds_nodash }}).
    let t = Test::new().fluxfile(
        r#"
[step.f]
params = { date = "date" }
outputs = ["out/year={{ date | strftime('%Y') }}/{{ date | ds_nodash }}.txt"]
run = "echo {{ date }} > {{ outputs[0] }}"
"#,
    );
    t.run_args(json_build(&["--date", "2024-03-01"])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("out/year=2024/20240301.txt"), "2024-03-01\n");
    t.run_args(json_build(&["out/year=2024/20240301.txt", "--force"])).assert_status(0).assert_ran(&["f[2024-03-01]"]);
}

const MONTHLY: &str = r#"
[step.daily]
params = { date = "date" }
outputs = ["daily/{{ date }}.txt"]
run = "echo {{ date }} > {{ outputs[0] }}"

[step.monthly]
params = { month = "month" }
inputs = ["""
{% for d in month | days %}
daily/{{ d }}.txt
{% endfor %}
"""]
outputs = ["monthly/{{ month }}.txt"]
run = "echo {{ inputs | length }} > {{ outputs[0] }}; cat {{ inputs }} >> {{ outputs[0] }}"
"#;

#[test]
fn multi_line_input_template_gives_one_dependency_per_day() {
    let t = Test::new().fluxfile(MONTHLY);
    let o = t.run_args(json_build(&["monthly", "--param", "month=2024-02"]));
    o.assert_status(0).assert_summary(30, 0, 0, 0);
    let mut expected: Vec<String> = (1..=29).map(|d| format!("daily[2024-02-{d:02}]")).collect();
    expected.push("monthly[2024-02]".into());
    expected.sort();
    assert_eq!(o.ran(), expected);
    // monthly runs last: after every day it reads.
    assert_eq!(o.ids().last().map(String::as_str), Some("monthly[2024-02]"));
    let days: String = (1..=29).map(|d| format!("2024-02-{d:02}\n")).collect();
    assert_eq!(t.read("monthly/2024-02.txt"), format!("29\n{days}"));
}

#[test]
fn multi_line_input_template_shows_in_the_task_graph() {
    let o = Test::new()
        .fluxfile(MONTHLY)
        .args(["graph", "--tasks", "monthly", "--param", "month=2023-02", "--format", "json"])
        .run();
    o.assert_status(0);
    let j = o.json();
    let edges = j["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 28);
    assert!(edges.iter().all(|e| e["to"] == "monthly[2023-02]"));
    assert!(edges.iter().any(|e| e["from"] == "daily[2023-02-28]"));
}

#[test]
fn changing_one_day_reruns_that_day_and_the_month_only() {
    let t = Test::new().fluxfile(MONTHLY);
    t.run_args(json_build(&["monthly", "--param", "month=2024-02"])).assert_status(0).assert_summary(30, 0, 0, 0);
    t.remove("daily/2024-02-10.txt");
    let o = t.run_args(json_build(&["monthly", "--param", "month=2024-02"]));
    // daily rewrites the same bytes: the month is skipped by early cutoff.
    o.assert_status(0).assert_ran(&["daily[2024-02-10]"]);
    t.write("daily/2024-02-10.txt", "changed\n");
    let o = t.run_args(json_build(&["monthly", "--param", "month=2024-02"]));
    o.assert_status(0).assert_ran(&["monthly[2024-02]"]);
    o.assert_task("monthly[2024-02]", "success", Some("input-changed"));
}

const GREET: &str = r#"
[vars]
name = "world"

[step.greet]
outputs = ["greet.txt"]
run = "echo hello {{ name }} > {{ outputs[0] }}"
"#;

#[test]
fn var_values_cannot_inject_shell_code() {
    let t = Test::new().fluxfile(GREET);
    t.run_args(json_build(&["--var", "name=hi; touch pwned"])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("greet.txt"), "hello hi; touch pwned\n");
    assert!(!t.exists("pwned"));
}

#[test]
fn var_values_with_quotes_substitutions_and_globs_are_literal() {
    let t = Test::new().fluxfile(GREET).file("decoy.txt", "");
    let nasty = "$(touch pwned1) `touch pwned2` 'single' \"double\" * $HOME ${IFS} \n next; touch pwned3 & | > pwned4";
    t.run_args(json_build(&["--var", &format!("name={nasty}")])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("greet.txt"), format!("hello {nasty}\n"));
    for p in ["pwned1", "pwned2", "pwned3", "pwned4"] {
        assert!(!t.exists(p), "{p} was created: the var was run as shell code");
    }
}

#[test]
fn list_param_values_cannot_inject_shell_code() {
    let t = Test::new().fluxfile(
        r#"
[step.r]
params = { region = ["eu", "a;touch${IFS}pwned", "$(touch${IFS}pwned2)", "`touch${IFS}pwned3`"] }
outputs = ["r/{{ region }}.txt"]
run = "echo {{ region }} > {{ outputs[0] }}"
"#,
    );
    t.run_args(json_build(&[])).assert_status(0).assert_summary(4, 0, 0, 0);
    assert_eq!(t.read("r/a;touch${IFS}pwned.txt"), "a;touch${IFS}pwned\n");
    assert_eq!(t.read("r/$(touch${IFS}pwned2).txt"), "$(touch${IFS}pwned2)\n");
    for p in ["pwned", "pwned2", "pwned3"] {
        assert!(!t.exists(p), "{p} was created: a param value was run as shell code");
    }
    // --param picks one of those values and still quotes it.
    t.remove("r/a;touch${IFS}pwned.txt");
    t.run_args(json_build(&["--param", "region=a;touch${IFS}pwned"])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert!(!t.exists("pwned"));
}

#[test]
fn paths_with_spaces_are_quoted_and_lists_render_as_quoted_items() {
    let t = Test::new()
        .fluxfile(
            r#"
[vars]
root = "my data"

[step.f]
inputs = ["{{ root }}/a b.txt", "{{ root }}/c.txt"]
outputs = ["{{ root }}/out put.txt"]
run = "printf '[%s]\n' {{ inputs }} > {{ outputs[0] }}; cat {{ inputs }} >> {{ outputs[0] }}"
"#,
        )
        .file("my data/a b.txt", "A\n")
        .file("my data/c.txt", "C\n");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("my data/out put.txt"), "[my data/a b.txt]\n[my data/c.txt]\nA\nC\n");
}

#[test]
fn raw_opts_out_of_quoting() {
    let t = Test::new().fluxfile(
        r#"
[vars]
cmd = "echo one; echo two"
flags = "-n"

[step.r]
outputs = ["raw.txt"]
run = "{{ cmd | raw }} > {{ outputs[0] }}; echo {{ flags | raw }} three >> {{ outputs[0] }}"

[step.q]
outputs = ["quoted.txt"]
run = "echo {{ cmd }} > {{ outputs[0] }}"
"#,
    );
    t.run_args(json_build(&[])).assert_status(0).assert_summary(2, 0, 0, 0);
    // `echo one; echo two > raw.txt` then `echo -n three >> raw.txt`: the var ran as shell code.
    assert_eq!(t.read("raw.txt"), "two\nthree");
    assert_eq!(t.read("quoted.txt"), "echo one; echo two\n");
}

#[test]
fn raw_list_joins_items_with_spaces() {
    let t = Test::new()
        .fluxfile(
            r#"
[step.r]
inputs = ["a.txt", "b.txt"]
outputs = ["out.txt"]
run = "for f in {{ inputs | raw }}; do echo \"<$f>\"; done > {{ outputs[0] }}"
"#,
        )
        .file("a.txt", "")
        .file("b.txt", "");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("out.txt"), "<a.txt>\n<b.txt>\n");
}

#[test]
fn env_values_are_templated_and_not_quoted() {
    let t = Test::new().fluxfile(
        r#"
[vars]
name = "it's"

[step.e]
params = { date = "date" }
outputs = ["e/{{ date }}.txt"]
env = { GREETING = "{{ name }} {{ date | ds_nodash }}" }
run = "printf '%s\n' \"$GREETING\" > {{ outputs[0] }}"
"#,
    );
    t.run_args(json_build(&["--date", "2024-05-06"])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("e/2024-05-06.txt"), "it's 20240506\n");
}

#[test]
fn a_filter_error_is_reported_not_run() {
    let t = Test::new().fluxfile(
        r#"
[step.f]
params = { date = "date" }
outputs = ["f/{{ date }}.txt"]
run = "echo {{ date | add_hours('x') }} > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&["--date", "2024-01-01"]));
    // The task fails at rendering, before any attempt: nothing ran, and the error names
    // the filter call and why it failed.
    o.assert_status(1).assert_summary(0, 0, 1, 0).stderr_has("FAIL f[2024-01-01]").stderr_has("add_hours('x')");
    let task = o.task("f[2024-01-01]");
    assert_eq!(task["status"], "failed");
    assert_eq!(task["attempts"], 0, "the command never ran\n{}", o.describe());
    let error = task["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot render") && error.contains("add_hours('x')"), "{}", o.describe());
    assert!(error.contains("cannot convert string to i64"), "{}", o.describe());
    assert!(!t.exists("f/2024-01-01.txt"));
}
