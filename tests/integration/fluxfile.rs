//! The Fluxfile (SPEC §2): where it is found, `[flux]`, vars, profiles, pools, include,
//! generate, and `flux check`.

use crate::test::*;

const ONE_STEP: &str = r#"
[step.hello]
outputs = ["out/hello.txt"]
run = "echo hello > {{ outputs[0] }}"
"#;

#[test]
fn fluxfile_in_the_current_folder_is_used() {
    let t = Test::new().fluxfile(ONE_STEP);
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0).assert_ran(&["hello"]);
    assert_eq!(t.read("out/hello.txt"), "hello\n");
}

#[test]
fn fluxfile_in_a_parent_folder_is_found_and_targets_are_relative_to_it() {
    let t = Test::new().fluxfile(ONE_STEP).current_dir("sub/deeper");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("out/hello.txt"), "hello\n");
    assert!(!t.exists("sub/deeper/out"), "outputs are relative to the Fluxfile, not the cwd");
    assert!(t.exists(".flux/state.db"), "the state folder is beside the Fluxfile");
    assert!(!t.exists("sub/deeper/.flux"));
}

#[test]
fn fluxfile_toml_is_accepted() {
    let t = Test::new().file("Fluxfile.toml", ONE_STEP);
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("out/hello.txt"), "hello\n");
}

#[test]
fn dash_f_names_a_fluxfile_in_another_folder() {
    let t = Test::new().file(
        "proj/pipeline.toml",
        r#"
[step.where]
outputs = ["where.txt"]
run = "pwd > {{ outputs[0] }}"
"#,
    );
    t.run_args(["-f", "proj/pipeline.toml", "build", "--output", "json"]).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("proj/where.txt").trim(), t.abs("proj").to_string_lossy());
    assert!(!t.exists("where.txt"));
    // The global flag also works after the subcommand.
    t.run_args(["build", "--output", "json", "--file", "proj/pipeline.toml"])
        .assert_status(0)
        .assert_summary(0, 1, 0, 0);
}

#[test]
fn dash_f_wins_over_the_fluxfile_in_the_current_folder() {
    let t = Test::new().fluxfile(ONE_STEP).file(
        "other.toml",
        r#"
[step.other]
outputs = ["other.txt"]
run = "echo other > {{ outputs[0] }}"
"#,
    );
    t.run_args(["-f", "other.toml", "build", "--output", "json"]).assert_status(0).assert_ran(&["other"]);
    assert!(!t.exists("out/hello.txt"));
}

#[test]
fn dash_f_with_a_missing_file_is_a_usage_error() {
    Test::new()
        .args(["-f", "nope.toml", "build"])
        .run()
        .assert_status(2)
        .stderr_is("error: no Fluxfile at nope.toml\n");
}

#[test]
fn no_fluxfile_anywhere_says_how_to_name_one() {
    let t = Test::new();
    let o = t.run_args(["build"]);
    o.assert_status(2).stderr_has("no Fluxfile in").stderr_has("-f PATH");
}

#[test]
fn flux_start_is_every_steps_default_start() {
    let t = Test::new().fluxfile(
        r#"
[flux]
start = "2024-01-02"

[step.d]
params = { date = "date" }
end = "2024-01-04"
outputs = ["d/{{ date }}.txt"]
run = "echo {{ date }} > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_ran(&["d[2024-01-02]", "d[2024-01-03]", "d[2024-01-04]"]);
    // --date-range is clipped to the domain too.
    let o = t.run_args(json_build(&["--date-range", "2023-12-30..2024-01-05"]));
    o.assert_status(0).assert_summary(0, 3, 0, 0);
}

#[test]
fn flux_state_moves_the_state_folder() {
    let t = Test::new().fluxfile(&format!(
        "[flux]\nstate = \"var/flux-state\"\n{}",
        ONE_STEP.replace("echo hello >", "echo logged; echo hello >")
    ));
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert!(t.exists("var/flux-state/state.db"));
    assert!(t.exists("var/flux-state/logs/hello/hello/1-1.log"));
    assert!(!t.exists(".flux"));
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 1, 0, 0);
}

/// Three tasks that record when they start and end (ns since the epoch).
const TIMED: &str = r#"
[step.t]
params = { n = ["1", "2", "3"] }
outputs = ["t/{{ n }}.txt"]
run = "date +%s%N > {{ outputs[0] }}; sleep 0.3; date +%s%N >> {{ outputs[0] }}"
"#;

/// The largest number of the given tasks running at the same moment.
pub fn max_overlap(t: &Test, files: &[&str]) -> usize {
    let spans: Vec<(u128, u128)> = files
        .iter()
        .map(|f| {
            let text = t.read(f);
            let v: Vec<u128> = text.lines().map(|l| l.trim().parse().expect("a timestamp")).collect();
            (v[0], v[1])
        })
        .collect();
    spans.iter().map(|&(s, _)| spans.iter().filter(|&&(a, b)| a <= s && s < b).count()).max().unwrap_or(0)
}

#[test]
fn flux_jobs_is_the_default_parallelism_and_dash_j_overrides_it() {
    let t = Test::new().fluxfile(&format!("[flux]\njobs = 1\n{TIMED}"));
    t.run_args(json_build(&[])).assert_status(0).assert_summary(3, 0, 0, 0);
    assert_eq!(max_overlap(&t, &["t/1.txt", "t/2.txt", "t/3.txt"]), 1, "[flux] jobs = 1 runs one task at a time");
    t.run_args(json_build(&["--force", "-j", "3"])).assert_status(0).assert_summary(3, 0, 0, 0);
    assert_eq!(max_overlap(&t, &["t/1.txt", "t/2.txt", "t/3.txt"]), 3, "-j 3 runs the three at once");
}

#[test]
fn pools_limit_how_many_tasks_of_a_pool_run_at_once() {
    let t = Test::new().fluxfile(&format!("[pools]\ndb = 1\n{}", TIMED.replace("[step.t]", "[step.t]\npool = \"db\"")));
    t.run_args(json_build(&["-j", "3"])).assert_status(0).assert_summary(3, 0, 0, 0);
    assert_eq!(max_overlap(&t, &["t/1.txt", "t/2.txt", "t/3.txt"]), 1);
}

#[test]
fn a_pool_of_two_runs_two_at_once() {
    let t = Test::new().fluxfile(&format!("[pools]\ndb = 2\n{}", TIMED.replace("[step.t]", "[step.t]\npool = \"db\"")));
    t.run_args(json_build(&["-j", "3"])).assert_status(0).assert_summary(3, 0, 0, 0);
    assert_eq!(max_overlap(&t, &["t/1.txt", "t/2.txt", "t/3.txt"]), 2);
}

#[test]
fn unknown_pool_is_an_error_with_a_hint() {
    let t = Test::new().fluxfile(
        r#"[pools]
db = 2

[step.a]
outputs = ["a.txt"]
pool = "dv"
run = "true"
"#,
    );
    t.run_args(["check"]).assert_status(2).stderr_is(
        "error: unknown pool `dv`
 --> Fluxfile:6:8
  |
6 | pool = \"dv\"
  |        ^^^^
  = help: did you mean `db`?
",
    );
}

#[test]
fn vars_fill_targets_and_commands() {
    let t = Test::new().fluxfile(
        r#"
[vars]
root = "data"
greeting = "hi"

[step.a]
outputs = ["{{ root }}/a.txt"]
run = "echo {{ greeting }} {{ vars.root }} > {{ outputs[0] }}"
"#,
    );
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("data/a.txt"), "hi data\n");
}

const PROFILED: &str = r#"
[vars]
root = "data"
who = "dev"

[profile.test.vars]
root = "testdata"

[step.a]
outputs = ["{{ root }}/a.txt"]
run = "echo {{ who }} > {{ outputs[0] }}"
"#;

#[test]
fn profile_overrides_vars() {
    let t = Test::new().fluxfile(PROFILED);
    t.run_args(json_build(&["--profile", "test"])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("testdata/a.txt"), "dev\n");
    assert!(!t.exists("data"));
}

#[test]
fn var_flag_overrides_vars_and_profiles() {
    let t = Test::new().fluxfile(PROFILED);
    t.run_args(json_build(&["--profile", "test", "--var", "root=cli", "--var", "who=me"]))
        .assert_status(0)
        .assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("cli/a.txt"), "me\n");
    assert!(!t.exists("testdata"));
}

#[test]
fn unknown_profile_is_a_usage_error_listing_the_profiles() {
    Test::new()
        .fluxfile(PROFILED)
        .args(["build", "--profile", "prod"])
        .run()
        .assert_status(2)
        .stderr_is("error: no profile `prod` in the Fluxfile; profiles: test\n");
}

#[test]
fn var_flag_without_equals_is_a_usage_error() {
    Test::new()
        .fluxfile(PROFILED)
        .args(["build", "--var", "root"])
        .run()
        .assert_status(2)
        .stderr_has("--var root: expected NAME=VALUE");
}

#[test]
fn include_merges_step_files() {
    let t = Test::new()
        .fluxfile(
            r#"
[flux]
include = ["pipelines/*.toml"]

[vars]
root = "data"

[step.main]
inputs = ["{{ root }}/one.txt", "{{ root }}/two.txt"]
outputs = ["{{ root }}/main.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#,
        )
        .file(
            "pipelines/one.toml",
            "[step.one]\noutputs = [\"{{ root }}/one.txt\"]\nrun = \"echo one > {{ outputs[0] }}\"\n",
        )
        .file(
            "pipelines/two.toml",
            "[step.two]\noutputs = [\"{{ root }}/two.txt\"]\nrun = \"echo two > {{ outputs[0] }}\"\n",
        );
    t.run_args(json_build(&[])).assert_status(0).assert_ran(&["main", "one", "two"]);
    assert_eq!(t.read("data/main.txt"), "one\ntwo\n");
    t.run_args(["list"]).assert_status(0).stdout_has("one").stdout_has("two").stdout_has("main");
}

#[test]
fn include_of_a_step_defined_twice_is_an_error() {
    let t = Test::new()
        .fluxfile("[flux]\ninclude = [\"more.toml\"]\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n")
        .file("more.toml", "[step.a]\noutputs = [\"b.txt\"]\nrun = \"true\"\n");
    t.run_args(["check"]).assert_status(2).stderr_is(
        "error: step `a` is defined twice
 --> more.toml:1:7
  |
1 | [step.a]
  |       ^
  = help: it is first defined at Fluxfile:4:7; rename one of them
",
    );
}

#[test]
fn include_of_a_missing_file_is_an_error() {
    Test::new()
        .fluxfile("[flux]\ninclude = [\"nope.toml\"]\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: included file `nope.toml` does not exist")
        .stderr_has("Fluxfile:2:12");
}

#[test]
fn generate_merges_what_the_command_prints() {
    let t = Test::new()
        .fluxfile(
            r#"
[flux]
generate = ["sh gen.sh"]

[step.main]
inputs = ["gen/a.txt", "gen/b.txt"]
outputs = ["main.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#,
        )
        .file(
            "gen.sh",
            r#"for n in a b; do
  printf '[step.gen_%s]\noutputs = ["gen/%s.txt"]\nrun = "echo %s > {{ outputs[0] }}"\n\n' "$n" "$n" "$n"
done
"#,
        );
    t.run_args(json_build(&[])).assert_status(0).assert_ran(&["gen_a", "gen_b", "main"]);
    assert_eq!(t.read("main.txt"), "a\nb\n");
}

#[test]
fn a_failing_generator_is_an_error() {
    Test::new()
        .fluxfile("[flux]\ngenerate = [\"exit 3\"]\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: generator `exit 3` failed");
}

#[test]
fn check_accepts_a_good_fluxfile() {
    let t = Test::new().fluxfile(ONE_STEP);
    let o = t.run_args(["check"]);
    o.assert_status(0).stdout_has("1 step, OK");
    assert!(!t.exists(".flux"), "check writes nothing");
}

#[test]
fn check_rejects_a_bad_fluxfile() {
    Test::new()
        .fluxfile("[step.a]\noutputs = [\"a.txt\"]\n")
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: step `a` has nothing to do")
        .stderr_has("Fluxfile:1:7");
}
