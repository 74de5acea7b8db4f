//! Errors (SPEC §2, §9): Fluxfile errors render like rustc (`--> Fluxfile:LINE:COL`, the
//! line, a caret, a help), exit 2; unknown keys say "did you mean"; keys not acted on yet
//! are refused; a missing source fails its task; bad input never panics (checked by the
//! harness on every run).

use crate::test::*;

#[test]
fn unknown_step_key_says_did_you_mean() {
    Test::new()
        .fluxfile("[step.a]\noutputs = [\"a.txt\"]\ninptus = [\"x\"]\nrun = \"true\"\n")
        .args(["build"])
        .run()
        .assert_status(2)
        .stdout_is("")
        .stderr_is(
            "error: unknown key `inptus` in [step.a]
 --> Fluxfile:3:1
  |
3 | inptus = [\"x\"]
  | ^^^^^^
  = help: did you mean `inputs`?
",
        );
}

#[test]
fn unknown_flux_key_says_did_you_mean() {
    Test::new()
        .fluxfile("[flux]\nstat = \".flux\"\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_is(
            "error: unknown key `stat` in [flux]
 --> Fluxfile:2:1
  |
2 | stat = \".flux\"
  | ^^^^
  = help: did you mean `start`?
",
        );
}

#[test]
fn unknown_key_with_two_letters_swapped_says_did_you_mean() {
    // `strat` for `start`: one transposition, the commonest typo there is.
    Test::new()
        .fluxfile("[flux]\nstrat = \"2024-01-01\"\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: unknown key `strat` in [flux]")
        .stderr_has("= help: did you mean `start`?");
}

#[test]
fn check_validates_profiles_that_are_not_selected() {
    // `flux check` validates the whole Fluxfile: a typo in a profile is found before the
    // day someone passes --profile.
    Test::new()
        .fluxfile("[profile.test]\nvras = { root = \"x\" }\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: unknown key `vras` in [profile.test]")
        .stderr_has(" --> Fluxfile:2:1")
        .stderr_has("= help: did you mean `vars`?");
}

#[test]
fn unknown_top_level_table_says_did_you_mean() {
    Test::new()
        .fluxfile("[varz]\nroot = \"data\"\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_is(
            "error: unknown key `varz` in the Fluxfile
 --> Fluxfile:1:2
  |
1 | [varz]
  |  ^^^^
  = help: did you mean `vars`?
",
        );
}

#[test]
fn unknown_key_far_from_any_lists_the_allowed_keys() {
    Test::new()
        .fluxfile("[flux]\nzzzzzz = 1\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: unknown key `zzzzzz` in [flux]")
        .stderr_has("= help: allowed keys here: start, state, jobs, include, generate, timezone");
}

#[test]
fn unknown_param_kind_says_did_you_mean() {
    Test::new()
        .fluxfile("[step.a]\nparams = { date = \"dat\" }\noutputs = [\"a/{{ date }}.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_is(
            "error: unknown param kind `dat`
 --> Fluxfile:2:19
  |
2 | params = { date = \"dat\" }
  |                   ^^^^^
  = help: did you mean `date`?
",
        );
}

/// A scheduler key on a step without a schedule: exit 2, the key is named and pointed at.
fn needs_a_schedule(line: &str, key: &str) {
    let text = format!("[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n{line}\n");
    let o = Test::new().fluxfile(&text).args(["build"]).run();
    o.assert_status(2)
        .stderr_has(&format!("error: `{key}` needs a `schedule`"))
        .stderr_has(" --> Fluxfile:4:1")
        .stderr_has(&format!("4 | {line}\n"))
        .stderr_has("^");
}

#[test]
fn sla_without_a_schedule_is_refused() {
    needs_a_schedule("sla = \"1h\"", "sla");
}

#[test]
fn on_sla_miss_without_a_schedule_is_refused() {
    needs_a_schedule("on_sla_miss = \"echo late\"", "on_sla_miss");
}

#[test]
fn sla_refusal_renders_fully() {
    Test::new()
        .fluxfile("[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\nsla = \"1h\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: `sla` needs a `schedule`: it is about the intervals the scheduler builds")
        .stderr_has(
            " --> Fluxfile:4:1
  |
4 | sla = \"1h\"
  | ^^^
  = help: add e.g. schedule = \"@daily\", or remove it
",
        );
}

#[test]
fn local_executor_is_accepted() {
    Test::new()
        .fluxfile("[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo a > {{ outputs[0] }}\"\nexecutor = \"local\"\n")
        .args(["check"])
        .run()
        .assert_status(0);
}

#[test]
fn store_tables_are_checked_key_by_key() {
    Test::new()
        .fluxfile(
            "[store.\"s3://bucket\"]\nregion = \"eu-west-1\"\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n",
        )
        .args(["check"])
        .run()
        .assert_success();
    Test::new()
        .fluxfile(
            "[store.\"s3://bucket\"]\nregoin = \"eu-west-1\"\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n",
        )
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: unknown setting `regoin` for s3:// stores")
        .stderr_has(" --> Fluxfile:2:1");
}

#[test]
fn timezone_must_be_a_zone_flux_knows() {
    Test::new()
        .fluxfile("[flux]\ntimezone = \"Europe/Berlin\"\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_success();
    Test::new()
        .fluxfile("[flux]\ntimezone = \"Mars/Olympus\"\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: `Mars/Olympus` is not a time zone flux knows")
        .stderr_has(" --> Fluxfile:2:12");
}

#[test]
fn invalid_toml_points_at_the_line() {
    let o = Test::new().fluxfile("[step.a]\noutputs = [\"a.txt\"\nrun = \"true\"\n").args(["check"]).run();
    o.assert_status(2).stderr_has("error: this is not valid TOML").stderr_has(" --> Fluxfile:").stderr_has("^");
}

#[test]
fn wrong_value_type_points_at_the_value() {
    Test::new()
        .fluxfile("[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\nretries = \"two\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_is(
            "error: `retries` in [step.a] must be an integer, not a string
 --> Fluxfile:4:11
  |
4 | retries = \"two\"
  |           ^^^^^
  = help: write `retries` as an integer
",
        );
}

#[test]
fn template_reading_an_unknown_name_is_an_error() {
    Test::new()
        .fluxfile("[step.a]\nparams = { date = \"date\" }\noutputs = [\"a/{{ date }}.txt\"]\nrun = \"echo {{ dtae }} > {{ outputs[0] }}\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: template reads `dtae`, which is not defined here")
        .stderr_has(" --> Fluxfile:4:16");
}

#[test]
fn unclosed_template_is_an_error_at_the_line() {
    Test::new()
        .fluxfile("[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo {{ outputs[0] > x\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: bad template")
        .stderr_has(" --> Fluxfile:3:");
}

#[test]
fn two_time_params_in_one_step_are_refused() {
    Test::new()
        .fluxfile("[step.a]\nparams = { date = \"date\", hour = \"hour\" }\noutputs = [\"a/{{ date }}/{{ hour }}.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: a step has at most one time param; `date` is one already")
        .stderr_has(" --> Fluxfile:2:27");
}

#[test]
fn requires_of_an_unknown_step_says_did_you_mean() {
    Test::new()
        .fluxfile("[step.load]\nrun = \"true\"\n\n[step.b]\nrequires = [\"lood\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_is(
            "error: `requires` names unknown step `lood`
 --> Fluxfile:5:13
  |
5 | requires = [\"lood\"]
  |             ^^^^^^
  = help: did you mean `load`?
",
        );
}

#[test]
fn errors_in_an_included_file_name_that_file() {
    Test::new()
        .fluxfile("[flux]\ninclude = [\"more.toml\"]\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n")
        .file("more.toml", "[step.b]\noutputs = [\"b.txt\"]\nrun = \"true\"\ntimeot = \"1m\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: unknown key `timeot` in [step.b]")
        .stderr_has(" --> more.toml:4:1")
        .stderr_has("= help: did you mean `timeout`?");
}

#[test]
fn errors_found_from_a_subfolder_still_point_at_the_fluxfile() {
    Test::new()
        .fluxfile("[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\nsla = \"1h\"\n")
        .current_dir("sub")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("Fluxfile:4:1\n")
        .stderr_has("4 | sla = \"1h\"");
}

#[test]
fn missing_source_names_the_path_and_the_task() {
    let t = Test::new().fluxfile(
        r#"
[step.a]
params = { date = "date" }
inputs = ["raw/{{ date }}.log"]
outputs = ["a/{{ date }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"

[step.b]
params = { date = "date" }
inputs = ["a/{{ date }}.txt"]
outputs = ["b/{{ date }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&["--date", "2024-01-02"]));
    o.assert_status(1).assert_summary(0, 0, 1, 1);
    assert_eq!(o.task("a[2024-01-02]")["error"], "missing source `raw/2024-01-02.log` needed by a[2024-01-02]");
    o.assert_task("b[2024-01-02]", "upstream_failed", None);
    o.stderr_has("FAIL a[2024-01-02]: missing source `raw/2024-01-02.log` needed by a[2024-01-02]");
    let o = t.run_args(["build", "--date", "2024-01-02"]);
    o.assert_status(1).stderr_has("raw/2024-01-02.log").stdout_has("1 failed, 1 upstream failed");
}

#[test]
fn missing_source_fails_even_when_the_outputs_exist() {
    let t = Test::new()
        .fluxfile(
            "[step.a]\ninputs = [\"src.txt\"]\noutputs = [\"a.txt\"]\nrun = \"cp {{ inputs[0] }} {{ outputs[0] }}\"\n",
        )
        .file("src.txt", "x");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    t.remove("src.txt");
    let o = t.run_args(json_build(&[]));
    o.stderr_has("FAIL a: missing source `src.txt` needed by a");
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    assert_eq!(o.task("a")["error"], "missing source `src.txt` needed by a");
    assert_eq!(t.read("a.txt"), "x", "the old output is left alone");
}

#[test]
fn bad_input_is_an_error_never_a_panic() {
    let t = Test::new().fluxfile(
        r#"
[step.d]
params = { date = "date", region = ["eu", "us"] }
outputs = ["d/{{ region }}/{{ date }}.txt"]
run = "echo {{ date }} > {{ outputs[0] }}"
"#,
    );
    let cases: &[&[&str]] = &[
        &["build", "["],
        &["build", "d["],
        &["build", "d[]"],
        &["build", "d[date=2024-01-01]"],
        &["build", "d[date=2024-01-01,region=asia]"],
        &["build", "d[2024-01-01]"],
        &["build", "d[date=2024-99-99,region=eu]"],
        &["build", "d[region=eu,region=us,date=2024-01-01,x=1]"],
        &["build", "--date-range", ".."],
        &["build", "--date-range", "2024-01-05..2024-01-01"],
        &["build", "--date-range", "2024-01-01..2024-02"],
        &["build", "--date-range", "2024-01-01T00..2024-01-01"],
        &["build", "--date", ""],
        &["build", "--date", "2024-01-01", "--param", "=x"],
        &["build", "--date", "2024-01-01", "--param", "region="],
        &["build", "--date", "2024-01-01", "--param", "region=asia"],
        &["build", "--date", "2024-01-01", "--param", "date=yesterday"],
        &["build", "--date", "2024-01-01", "--rerun-triggers", "sometimes"],
        &["build", "--date", "2024-01-01", "--from", "nope"],
        &["build", "--date", "2024-01-01", "-j", "0", "-n"],
        &["build", "--date", "2024-01-01", "-j", "-1"],
        &["build", "--date", "2024-01-01", "--output", "yaml"],
        &["build", "/absolute/nowhere.txt", "--date", "2024-01-01"],
        &["logs", "d[zzz]"],
        &["logs", "d"],
        &["logs", "nope"],
        &["graph", "--tasks"],
        &["graph", "--format", "svg"],
        &["history", "--step", "nope"],
        &["frobnicate"],
    ];
    for args in cases {
        let o = t.run_args(args.iter().copied());
        o.assert_status(2);
        assert!(o.stderr().starts_with("error: "), "flux {args:?}: an error says `error: `\n{}", o.describe());
        assert_eq!(o.stdout, "", "flux {args:?}: an error prints nothing on stdout\n{}", o.describe());
    }
}

#[test]
fn broken_fluxfiles_are_errors_never_panics() {
    let cases: &[&str] = &[
        "",
        "\u{feff}",
        "[step]\n",
        "step = 3\n",
        "[step.a]\n",
        "[step.\"\"]\nrun = \"true\"\n",
        "[step.\"a b\"]\nrun = \"true\"\n",
        "[step.a]\nrun = []\n",
        "[step.a]\nrun = 7\n",
        "[step.a]\nrun = \"true\"\nparams = { date = \"date\" }\noutputs = [\"{{ date\"]\n",
        "[step.a]\nrun = \"true\"\nparams = { inputs = \"date\" }\n",
        "[step.a]\nrun = \"true\"\nparams = { r = [] }\n",
        "[step.a]\nrun = \"true\"\nparams = { r = [\"a b\"] }\n",
        "[step.a]\nrun = \"true\"\nparams = { r = [\"a\", \"a\"] }\n",
        "[step.a]\nrun = \"true\"\nparams = { date = \"date\" }\nstart = \"2024-02-30\"\n",
        "[step.a]\nrun = \"true\"\nparams = { date = \"date\" }\nstart = 2024-01-01\n",
        "[step.a]\nrun = \"true\"\nparams = { date = \"date\" }\nstart = \"2024-01-05\"\nend = \"2024-01-01\"\n",
        "[step.a]\nrun = \"true\"\nstart = \"2024-01-01\"\n",
        "[step.a]\nrun = \"true\"\nschedule = \"@daily\"\n",
        "[step.a]\nrun = \"true\"\nparams = { date = \"date\" }\nschedule = \"* * *\"\n",
        "[step.a]\nrun = \"true\"\nparams = { date = \"date\" }\nschedule = \"99 * * * *\"\n",
        "[step.a]\nrun = \"true\"\ntimeout = \"forever\"\n",
        "[step.a]\nrun = \"true\"\nretries = -1\n",
        "[step.a]\nrun = \"true\"\nretry_backoff = 0.5\n",
        "[step.a]\nrun = \"true\"\naction = \"move\"\n",
        "[step.a]\nrun = \"true\"\naction = \"copy\"\n",
        "[step.a]\nrun = \"true\"\nrequires = [{ date = \"x\" }]\n",
        "[step.a]\nrun = \"true\"\nrequires = [3]\n",
        "[step.a]\nrun = \"true\"\nenv = { X = 1 }\n",
        "[step.a]\nrun = \"true\"\noutputs = [\"{% for x in y %}{{ x }}{% endfor %}\"]\n",
        "[flux]\njobs = 0\n[step.a]\nrun = \"true\"\n",
        "[flux]\nstart = \"yesterday\"\n[step.a]\nrun = \"true\"\nparams = { date = \"date\" }\noutputs = [\"{{ date }}\"]\n",
        "[pools]\ndb = 0\n[step.a]\nrun = \"true\"\n",
        "[vars]\nx = [1]\n[step.a]\nrun = \"true\"\n",
        "[vars]\ndate = \"x\"\n[step.a]\nrun = \"true\"\nparams = { date = \"date\" }\noutputs = [\"{{ date }}\"]\n",
    ];
    for text in cases {
        let o = Test::new().fluxfile(text).args(["check"]).run();
        assert_eq!(o.status(), 2, "Fluxfile {text:?}: expected exit 2\n{}", o.describe());
        assert!(o.stderr().starts_with("error: "), "Fluxfile {text:?}\n{}", o.describe());
    }
}

#[test]
fn fluxfile_errors_point_at_file_line_and_column_with_a_caret() {
    // Every Fluxfile error that has a place shows it the same way.
    let cases: &[(&str, &str)] = &[
        ("[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\nretries = -1\n", "4 | retries = -1"),
        ("[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\ntimeout = \"forever\"\n", "4 | timeout = \"forever\""),
        ("[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\naction = \"move\"\n", "4 | action = \"move\""),
        (
            "[step.a]\nparams = { date = \"date\" }\noutputs = [\"a/{{ date }}.txt\"]\nrun = \"true\"\nstart = \"2024-02-30\"\n",
            "5 | start = \"2024-02-30\"",
        ),
    ];
    for (text, line) in cases {
        let o = Test::new().fluxfile(text).args(["check"]).run();
        o.assert_status(2);
        let lines: Vec<&str> = o.stderr().lines().collect();
        assert!(lines[0].starts_with("error: "), "{}", o.describe());
        let lno = &line[..1];
        assert!(lines[1].starts_with(&format!(" --> Fluxfile:{lno}:")), "{}", o.describe());
        assert_eq!(lines[2], "  |", "{}", o.describe());
        assert_eq!(lines[3], *line, "{}", o.describe());
        assert!(lines[4].starts_with("  | ") && lines[4].contains('^'), "{}", o.describe());
    }
}

#[test]
fn check_refuses_unknown_schemes_at_the_template() {
    let t = Test::new().fluxfile("[vars]\nbucket = \"ftp://data\"\n\n[step.a]\ninputs = [\"{{ bucket }}/in.csv\"]\noutputs = [\"out.csv\"]\nrun = \"true\"\n");
    t.run_args(["check"])
        .assert_status(2)
        .stderr_has("error: `ftp://` is not a store flux knows")
        .stderr_has("Fluxfile:5:11");
    let t = Test::new().fluxfile("[step.a]\noutputs = [\"hdfs://nn:8020/out.csv\"]\nrun = \"true\"\n");
    t.run_args(["check"]).assert_success();
}
