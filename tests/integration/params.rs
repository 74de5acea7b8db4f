//! Params and time (SPEC §2.1 `params`, §3.2): date, hour, month and list params; `--date`,
//! `--date-range`, `--param`; a step's `start`/`end` domain; invalid values.

use crate::test::*;

/// One step per param kind, each writing its value.
const KINDS: &str = r#"
[step.daily]
params = { date = "date" }
outputs = ["daily/{{ date }}.txt"]
run = "echo {{ date }} > {{ outputs[0] }}"

[step.hourly]
params = { hour = "hour" }
outputs = ["hourly/{{ hour }}.txt"]
run = "echo {{ hour }} > {{ outputs[0] }}"

[step.monthly]
params = { month = "month" }
outputs = ["monthly/{{ month }}.txt"]
run = "echo {{ month }} > {{ outputs[0] }}"
"#;

fn ids_of_step(o: &Output, step: &str) -> Vec<String> {
    o.tasks().iter().filter(|t| t["step"] == step).map(|t| t["id"].as_str().unwrap_or_default().to_string()).collect()
}

#[test]
fn date_flag_gives_a_date_param_that_day() {
    let t = Test::new().fluxfile(KINDS);
    let o = t.run_args(json_build(&["daily", "--date", "2024-03-01"]));
    o.assert_status(0).assert_summary(1, 0, 0, 0).assert_ran(&["daily[2024-03-01]"]);
    assert_eq!(o.task("daily[2024-03-01]")["params"], serde_json::json!({"date": "2024-03-01"}));
    assert_eq!(t.read("daily/2024-03-01.txt"), "2024-03-01\n");
}

#[test]
fn date_flag_gives_an_hour_param_the_24_hours_of_the_day() {
    let t = Test::new().fluxfile(KINDS);
    let o = t.run_args(json_build(&["hourly", "--date", "2024-03-01"]));
    o.assert_status(0).assert_summary(24, 0, 0, 0);
    let expected: Vec<String> = (0..24).map(|h| format!("hourly[2024-03-01T{h:02}]")).collect();
    assert_eq!(o.ran(), expected);
    assert_eq!(t.read("hourly/2024-03-01T00.txt"), "2024-03-01T00\n");
    assert_eq!(t.read("hourly/2024-03-01T23.txt"), "2024-03-01T23\n");
}

#[test]
fn date_flag_gives_a_month_param_the_month_of_the_day() {
    let t = Test::new().fluxfile(KINDS);
    let o = t.run_args(json_build(&["monthly", "--date", "2024-03-17"]));
    o.assert_status(0).assert_ran(&["monthly[2024-03]"]);
    assert_eq!(t.read("monthly/2024-03.txt"), "2024-03\n");
}

#[test]
fn date_flag_expands_every_kind_at_once() {
    let o = Test::new().fluxfile(KINDS).args(json_build(&["--date", "2024-03-01"])).run();
    o.assert_status(0).assert_summary(26, 0, 0, 0);
    assert_eq!(ids_of_step(&o, "daily"), ["daily[2024-03-01]"]);
    assert_eq!(ids_of_step(&o, "hourly").len(), 24);
    assert_eq!(ids_of_step(&o, "monthly"), ["monthly[2024-03]"]);
}

#[test]
fn date_range_of_dates_is_inclusive_and_crosses_months() {
    let o = Test::new().fluxfile(KINDS).args(json_build(&["daily", "--date-range", "2024-02-28..2024-03-01"])).run();
    o.assert_status(0).assert_ran(&["daily[2024-02-28]", "daily[2024-02-29]", "daily[2024-03-01]"]);
}

#[test]
fn date_range_of_dates_gives_hour_params_every_hour() {
    let o = Test::new().fluxfile(KINDS).args(json_build(&["hourly", "--date-range", "2024-03-01..2024-03-02"])).run();
    o.assert_status(0).assert_summary(48, 0, 0, 0);
}

#[test]
fn date_range_of_hours() {
    let t = Test::new().fluxfile(KINDS);
    let o = t.run_args(json_build(&["hourly", "--date-range", "2024-03-01T00..2024-03-01T23"]));
    o.assert_status(0).assert_summary(24, 0, 0, 0);
    let o = t.run_args(json_build(&["hourly", "--date-range", "2024-03-01T22..2024-03-02T01", "-n"]));
    o.assert_status(0);
    assert_eq!(
        o.ids(),
        ["hourly[2024-03-01T22]", "hourly[2024-03-01T23]", "hourly[2024-03-02T00]", "hourly[2024-03-02T01]"]
    );
    assert_eq!(o.summary("would_run"), 2);
    assert_eq!(o.summary("skipped"), 2);
}

#[test]
fn date_range_of_months() {
    let t = Test::new().fluxfile(KINDS);
    let o = t.run_args(json_build(&["monthly", "--date-range", "2023-11..2024-02"]));
    o.assert_status(0).assert_ran(&["monthly[2023-11]", "monthly[2023-12]", "monthly[2024-01]", "monthly[2024-02]"]);
    assert_eq!(t.read("monthly/2023-12.txt"), "2023-12\n");
}

#[test]
fn date_range_of_dates_gives_month_params_each_month_touched() {
    let o = Test::new().fluxfile(KINDS).args(json_build(&["monthly", "--date-range", "2024-01-31..2024-03-01"])).run();
    o.assert_status(0).assert_ran(&["monthly[2024-01]", "monthly[2024-02]", "monthly[2024-03]"]);
}

#[test]
fn param_flag_gives_several_values() {
    let t = Test::new().fluxfile(
        r#"
[step.r]
params = { date = "date", region = ["eu", "us", "asia"] }
outputs = ["r/{{ region }}/{{ date }}.txt"]
run = "echo {{ region }} {{ date }} > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&["--param", "region=eu,asia", "--param", "date=2024-01-01,2024-01-03"]));
    o.assert_status(0).assert_ran(&[
        "r[date=2024-01-01,region=asia]",
        "r[date=2024-01-01,region=eu]",
        "r[date=2024-01-03,region=asia]",
        "r[date=2024-01-03,region=eu]",
    ]);
    assert_eq!(t.read("r/asia/2024-01-03.txt"), "asia 2024-01-03\n");
    assert_eq!(
        o.task("r[date=2024-01-03,region=asia]")["params"],
        serde_json::json!({"date": "2024-01-03", "region": "asia"})
    );
}

#[test]
fn list_param_without_a_flag_takes_every_allowed_value() {
    let o = Test::new()
        .fluxfile(
            r#"
[step.r]
params = { region = ["eu", "us"] }
outputs = ["r/{{ region }}.txt"]
run = "echo {{ region }} > {{ outputs[0] }}"
"#,
        )
        .args(json_build(&[]))
        .run();
    o.assert_status(0).assert_ran(&["r[eu]", "r[us]"]);
}

#[test]
fn param_flag_value_outside_the_list_is_an_error() {
    let o = Test::new()
        .fluxfile(
            "[step.r]\nparams = { region = [\"eu\", \"us\"] }\noutputs = [\"r/{{ region }}.txt\"]\nrun = \"true\"\n",
        )
        .args(["build", "--param", "region=asia"])
        .run();
    o.assert_status(2).stderr_has("--param region=asia").stdout_is("");
}

#[test]
fn param_flag_for_a_time_param() {
    let o = Test::new().fluxfile(KINDS).args(json_build(&["monthly", "--param", "month=2024-02"])).run();
    o.assert_status(0).assert_ran(&["monthly[2024-02]"]);
    let o = Test::new().fluxfile(KINDS).args(json_build(&["daily", "--param", "date=2024-01-30..2024-02-01"])).run();
    o.assert_status(0).assert_ran(&["daily[2024-01-30]", "daily[2024-01-31]", "daily[2024-02-01]"]);
}

#[test]
fn param_flag_naming_no_param_says_did_you_mean() {
    Test::new()
        .fluxfile(
            "[step.r]\nparams = { region = [\"eu\", \"us\"] }\noutputs = [\"r/{{ region }}.txt\"]\nrun = \"true\"\n",
        )
        .args(["build", "--param", "regoin=eu"])
        .run()
        .assert_status(2)
        .stderr_is("error: --param regoin: no step has a param named `regoin`; did you mean `region`?\n");
}

#[test]
fn step_start_and_end_are_the_domain_when_no_flag_is_given() {
    let t = Test::new().fluxfile(
        r#"
[step.d]
params = { date = "date" }
start = "2024-01-30"
end = "2024-02-02"
outputs = ["d/{{ date }}.txt"]
run = "echo {{ date }} > {{ outputs[0] }}"

[step.m]
params = { month = "month" }
start = "2023-12"
end = "2024-01"
outputs = ["m/{{ month }}.txt"]
run = "echo {{ month }} > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_ran(&[
        "d[2024-01-30]",
        "d[2024-01-31]",
        "d[2024-02-01]",
        "d[2024-02-02]",
        "m[2023-12]",
        "m[2024-01]",
    ]);
    // A flag narrows the domain, never widens it.
    let o = t.run_args(json_build(&["d", "--date-range", "2024-01-01..2024-01-31", "-n"]));
    o.assert_status(0);
    assert_eq!(o.ids(), ["d[2024-01-30]", "d[2024-01-31]"]);
}

#[test]
fn invalid_month_day_is_an_error() {
    Test::new()
        .fluxfile(KINDS)
        .args(["build", "--date", "2024-13-45"])
        .run()
        .assert_status(2)
        .stdout_is("")
        .stderr_is("error: --date 2024-13-45: not a valid date (expected YYYY-MM-DD, e.g. 2024-03-01)\n");
}

#[test]
fn february_30_is_an_error() {
    Test::new()
        .fluxfile(KINDS)
        .args(["build", "--date", "2024-02-30"])
        .run()
        .assert_status(2)
        .stderr_is("error: --date 2024-02-30: not a valid date (expected YYYY-MM-DD, e.g. 2024-03-01)\n");
}

#[test]
fn february_29_of_a_common_year_is_an_error_in_a_range() {
    Test::new()
        .fluxfile(KINDS)
        .args(["build", "--date-range", "2023-02-01..2023-02-29"])
        .run()
        .assert_status(2)
        .stderr_has("error: --date-range 2023-02-01..2023-02-29: `2023-02-29` is not a date");
}

#[test]
fn invalid_task_id_value_is_an_error() {
    Test::new()
        .fluxfile(KINDS)
        .args(["build", "daily[2024-02-30]"])
        .run()
        .assert_status(2)
        .stderr_has("error: task `daily[2024-02-30]`:");
}

#[test]
fn malformed_date_range_is_an_error() {
    Test::new()
        .fluxfile(KINDS)
        .args(["build", "--date-range", "2024-01-01"])
        .run()
        .assert_status(2)
        .stderr_is("error: --date-range 2024-01-01: expected A..B, e.g. 2024-01-01..2024-01-31\n");
}

#[test]
fn date_and_date_range_together_are_a_usage_error() {
    Test::new()
        .fluxfile(KINDS)
        .args(["build", "--date", "2024-01-01", "--date-range", "2024-01-01..2024-01-02"])
        .run()
        .assert_status(2)
        .stderr_has("cannot be used with");
}

#[test]
fn a_time_param_without_a_value_names_the_flag_to_pass() {
    Test::new()
        .fluxfile(KINDS)
        .args(["build", "daily"])
        .run()
        .assert_status(2)
        .stdout_is("")
        .stderr_is(
            "error: step `daily` has a date param `date` and no value for it: pass --date D, --date-range A..B or --param date=…, or give the step `start` and `end`\n",
        );
}

#[test]
fn a_time_param_without_a_value_is_an_error_for_the_whole_build_too() {
    let t = Test::new().fluxfile(KINDS);
    t.run_args(["build"]).assert_status(2).stderr_has("--date D").stderr_has("--param");
    assert!(!t.exists("daily") && !t.exists("hourly") && !t.exists("monthly"), "nothing ran");
}
