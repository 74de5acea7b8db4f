//! The week, int and string param kinds (SPEC §2.1 `params`, §2.2 `add_weeks` and `days`
//! of a week, §3.1 task ids): values from `--date`, `--date-range` and `--param`, task ids,
//! output inversion and targets by output path, and refused values.

use crate::test::*;

/// A daily step, a weekly step that reads the seven days of its week, and a step with a
/// free string and a bounded int param.
const PIPELINE: &str = r#"
[step.daily]
params = { date = "date" }
outputs = ["data/daily/{{ date }}.csv"]
run = "echo {{ date }} > {{ outputs[0] }}"

[step.weekly]
params = { week = "week" }
inputs = ["{% for d in week | days %}data/daily/{{ d }}.csv\n{% endfor %}"]
outputs = ["data/weekly/{{ week }}.csv"]
run = "cat {{ inputs }} > {{ outputs[0] }}; echo before={{ week | add_weeks(-1) }} >> {{ outputs[0] }}"

[step.greet]
params = { name = "string", n = { kind = "int", min = 0, max = 99 } }
outputs = ["data/greet/{{ name }}/{{ n }}.txt"]
run = "echo hi {{ name }} {{ n }} > {{ outputs[0] }}"
"#;

#[test]
fn date_flag_gives_a_week_param_the_iso_week_of_the_day_and_its_days_are_dependencies() {
    let t = Test::new().fluxfile(PIPELINE);
    let o = t.run_args(json_build(&["weekly", "--date", "2024-02-28"]));
    o.assert_status(0).assert_summary(8, 0, 0, 0);
    let mut want: Vec<String> = (26..=29).map(|d| format!("daily[2024-02-{d}]")).collect();
    want.extend((1..=3).map(|d| format!("daily[2024-03-0{d}]")));
    want.push("weekly[2024-W09]".into());
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    o.assert_ran(&want);
    assert_eq!(o.task("weekly[2024-W09]")["params"], serde_json::json!({"week": "2024-W09"}));
    assert_eq!(
        t.read("data/weekly/2024-W09.csv"),
        "2024-02-26\n2024-02-27\n2024-02-28\n2024-02-29\n2024-03-01\n2024-03-02\n2024-03-03\nbefore=2024-W08\n"
    );
}

#[test]
fn week_task_ids_output_paths_and_date_ranges_name_iso_weeks() {
    let t = Test::new().fluxfile(PIPELINE);
    // By task id, at a year boundary: 2021-01-03 belongs to 2020-W53.
    let o = t.run_args(json_build(&["weekly[2020-W53]"]));
    o.assert_status(0).assert_summary(8, 0, 0, 0);
    assert!(t.read("data/weekly/2020-W53.csv").starts_with("2020-12-28\n"));
    assert!(t.read("data/weekly/2020-W53.csv").contains("2021-01-03\n"));
    // By output path.
    let o = t.run_args(json_build(&["data/weekly/2024-W01.csv"]));
    o.assert_status(0).assert_summary(8, 0, 0, 0);
    assert!(t.read("data/weekly/2024-W01.csv").starts_with("2024-01-01\n"));
    // A date range covers every week it touches; --param takes weeks.
    let o = t.run_args(json_build(&["weekly", "--date-range", "2024-03-03..2024-03-11", "-n"]));
    o.assert_status(0);
    let mut ids: Vec<String> = o.ids().into_iter().filter(|i| i.starts_with("weekly")).collect();
    ids.sort();
    assert_eq!(ids, ["weekly[2024-W09]", "weekly[2024-W10]", "weekly[2024-W11]"]);
    let o = t.run_args(json_build(&["weekly", "--param", "week=2024-W09..2024-W10", "-n"]));
    let mut ids: Vec<String> = o.ids().into_iter().filter(|i| i.starts_with("weekly")).collect();
    ids.sort();
    assert_eq!(ids, ["weekly[2024-W09]", "weekly[2024-W10]"]);
}

#[test]
fn a_week_that_does_not_exist_is_refused_with_exit_2() {
    let t = Test::new().fluxfile(PIPELINE);
    t.run_args(["build", "weekly[2024-W53]"])
        .assert_status(2)
        .stderr_has("`2024-W53` is not a valid week (expected YYYY-Www, an ISO week such as 2024-W09)");
    t.run_args(["build", "weekly", "--param", "week=2024-9"])
        .assert_status(2)
        .stderr_has("`2024-9` is not a date (YYYY-MM-DD), an hour (YYYY-MM-DDTHH), a week (YYYY-Www)");
}

#[test]
fn string_and_int_params_take_values_from_param_flags_and_name_tasks_by_both() {
    let t = Test::new().fluxfile(PIPELINE);
    let o = t.run_args(json_build(&["greet", "--param", "name=ann,bob", "--param", "n=3..4"]));
    o.assert_status(0).assert_ran(&[
        "greet[name=ann,n=3]",
        "greet[name=ann,n=4]",
        "greet[name=bob,n=3]",
        "greet[name=bob,n=4]",
    ]);
    assert_eq!(o.task("greet[name=bob,n=4]")["params"], serde_json::json!({"name": "bob", "n": "4"}));
    assert_eq!(t.read("data/greet/bob/4.txt"), "hi bob 4\n");
    // The same values again: nothing to do (the values are part of the task id).
    t.run_args(json_build(&["greet", "--param", "name=ann", "--param", "n=3"])).assert_summary(0, 1, 0, 0);
}

#[test]
fn string_and_int_values_are_matched_back_from_output_paths_and_task_ids() {
    let t = Test::new().fluxfile(PIPELINE);
    let o = t.run_args(json_build(&["data/greet/zed.v2/17.txt"]));
    o.assert_status(0).assert_ran(&["greet[name=zed.v2,n=17]"]);
    assert_eq!(t.read("data/greet/zed.v2/17.txt"), "hi zed.v2 17\n");
    let o = t.run_args(json_build(&["greet[n=5,name=amy]"]));
    o.assert_status(0).assert_ran(&["greet[name=amy,n=5]"]);
    // An input another step reads is inferred as a dependency on the string step's task.
    let t = Test::new().fluxfile(
        r#"
[step.fetch]
params = { src = "string" }
outputs = ["raw/{{ src }}.txt"]
run = "echo {{ src }} > {{ outputs[0] }}"

[step.count]
params = { src = "string" }
inputs = ["raw/{{ src }}.txt"]
outputs = ["count/{{ src }}.txt"]
run = "wc -c < {{ inputs[0] }} > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&["count", "--param", "src=web-1"]));
    o.assert_status(0).assert_ran(&["count[web-1]", "fetch[web-1]"]);
}

#[test]
fn bad_string_and_int_values_are_refused_with_exit_2() {
    let t = Test::new().fluxfile(PIPELINE);
    for (arg, says) in [
        ("name=..", "`..` cannot be a param value: `.` and `..` name folders"),
        ("name=.", "`.` cannot be a param value"),
        ("name=a/b", "`a/b` cannot be a param value: it contains a path separator"),
        ("name=-rf", "`-rf` cannot be a param value: it starts with `-`"),
    ] {
        t.run_args(["build", "greet", "--param", arg, "--param", "n=1"]).assert_status(2).stderr_has(says);
    }
    t.run_args(["build", "greet", "--param", "name=a", "--param", "n=100"])
        .assert_status(2)
        .stderr_has("--param n=100: `100` is above the param's maximum of 99");
    t.run_args(["build", "greet", "--param", "name=a", "--param", "n=x1"])
        .assert_status(2)
        .stderr_has("`x1` is not a whole number");
    t.run_args(["build", "greet[name=a,n=007]"]).assert_status(2).stderr_has("`007` is not a whole number");
    // A free string param with no value: say which flag to pass.
    t.run_args(["build", "greet", "--param", "n=1"])
        .assert_status(2)
        .stderr_has("step `greet` has a string param `name` and no value for it: pass --param name=…");
    assert!(!t.exists("data/greet"));
}

#[test]
fn an_int_param_with_both_bounds_has_a_domain() {
    let t = Test::new().fluxfile(
        r#"
[step.shard]
params = { shard = { kind = "int", min = 1, max = 3 } }
outputs = ["shards/part-{{ shard }}.txt"]
run = "echo {{ shard }} > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&["shard"]));
    o.assert_status(0).assert_ran(&["shard[1]", "shard[2]", "shard[3]"]);
    t.run_args(["build", "shard[4]"]).assert_status(2).stderr_has("`4` is above the param's maximum of 3");
    t.run_args(["list"]).assert_status(0).stdout_has("int 1..3");
}

#[test]
fn fluxfile_errors_for_the_new_kinds_point_at_the_value() {
    Test::new()
        .fluxfile("[step.a]\nparams = { w = \"wek\" }\noutputs = [\"a/{{ w }}.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: unknown param kind `wek`")
        .stderr_has(" --> Fluxfile:2:16")
        .stderr_has("= help: did you mean `week`?");
    Test::new()
        .fluxfile(
            "[step.a]\nparams = { n = { kind = \"int\", min = 5, max = 1 } }\noutputs = [\"a/{{ n }}.txt\"]\nrun = \"true\"\n",
        )
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: `max` (1) is below `min` (5)")
        .stderr_has(" --> Fluxfile:2:");
    Test::new()
        .fluxfile(
            "[step.a]\nparams = { s = { kind = \"string\", max = 3 } }\noutputs = [\"a/{{ s }}.txt\"]\nrun = \"true\"\n",
        )
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: `min` and `max` are for int params, not string params");
    Test::new()
        .fluxfile(
            "[step.a]\nparams = { n = { kind = \"int\", maximum = 3 } }\noutputs = [\"a/{{ n }}.txt\"]\nrun = \"true\"\n",
        )
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: unknown key `maximum` in param `n`")
        .stderr_has("allowed keys here: kind, min, max");
    // Two free values side by side cannot be told apart.
    Test::new()
        .fluxfile(
            "[step.a]\nparams = { s = \"string\", n = \"int\" }\noutputs = [\"a/{{ s }}{{ n }}.txt\"]\nrun = \"true\"\n",
        )
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("two params stand side by side");
}

#[test]
fn a_week_step_start_is_a_week_or_the_week_of_a_date() {
    let t = Test::new().fluxfile(
        r#"
[step.wk]
params = { week = "week" }
start = "2024-02-28"
end = "2024-W10"
outputs = ["wk/{{ week }}.txt"]
run = "echo {{ week | ds_nodash }} > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&["wk"]));
    o.assert_status(0).assert_ran(&["wk[2024-W09]", "wk[2024-W10]"]);
    assert_eq!(t.read("wk/2024-W09.txt"), "2024W09\n");
}

#[test]
fn a_path_two_string_values_could_make_is_reported_as_ambiguous() {
    let t = Test::new().fluxfile(
        r#"
[step.pair]
params = { a = "string", b = "string" }
outputs = ["pairs/{{ a }}_{{ b }}.txt"]
run = "echo {{ a }} {{ b }} > {{ outputs[0] }}"
"#,
    );
    t.run_args(json_build(&["pairs/x_y.csv.txt"])).assert_status(0).assert_ran(&["pair[a=x,b=y.csv]"]);
    t.run_args(["build", "pairs/x_y_z.txt"])
        .assert_status(2)
        .stderr_has("`pairs/x_y_z.txt` could be written by several tasks: ")
        .stderr_has("pair[a=x,b=y_z]")
        .stderr_has("pair[a=x_y,b=z]");
}

#[test]
fn add_weeks_moves_weeks_dates_and_hours_in_both_template_engines() {
    let t = Test::new().fluxfile(
        r#"
[step.w]
params = { date = "date" }
outputs = ["w/{{ date }}.txt"]
run = "echo {{ date | add_weeks(2) }} {% if true %}{{ '2024-W52' | add_weeks(1) }} {{ '2024-03-01T05' | add_weeks(-1) }}{% endif %} > {{ outputs[0] }}"
"#,
    );
    t.run_args(["build", "--date", "2024-02-20"]).assert_status(0);
    assert_eq!(t.read("w/2024-02-20.txt"), "2024-03-05 2025-W01 2024-02-23T05\n");
    let t = Test::new().fluxfile(
        "[step.m]\nparams = { month = \"month\" }\noutputs = [\"m/{{ month }}.txt\"]\nrun = \"echo {{ month | add_weeks(1) }}\"\n",
    );
    t.run_args(["build", "--date", "2024-02-20"])
        .assert_status(1)
        .stderr_has("add_weeks: `2024-02` is a month; use add_months");
}
