//! Staleness (SPEC §5): what runs, and why.

use std::time::Duration;

use crate::test::*;

/// a[d] <- raw/d.txt; b[d] <- a[d]; other is independent.
const CHAIN: &str = r#"
[step.a]
params = { date = "date" }
inputs = ["raw/{{ date }}.txt"]
outputs = ["a/{{ date }}.txt"]
run = "tr a-z A-Z < {{ inputs[0] }} > {{ outputs[0] }}"

[step.b]
params = { date = "date" }
inputs = ["a/{{ date }}.txt"]
outputs = ["b/{{ date }}.txt"]
run = "cat {{ inputs }} {{ inputs }} > {{ outputs[0] }}"

[step.other]
outputs = ["other.txt"]
run = "echo other > {{ outputs[0] }}"
"#;

const RANGE: &[&str] = &["--date-range", "2024-01-01..2024-01-03"];

fn chain() -> Test {
    let t = Test::new()
        .fluxfile(CHAIN)
        .file("raw/2024-01-01.txt", "one\n")
        .file("raw/2024-01-02.txt", "two\n")
        .file("raw/2024-01-03.txt", "three\n");
    t.run_args(json_build(RANGE)).assert_status(0).assert_summary(7, 0, 0, 0);
    t
}

#[test]
fn second_build_runs_nothing() {
    let t = chain();
    assert_eq!(t.read("b/2024-01-02.txt"), "TWO\nTWO\n");
    let o = t.run_args(json_build(RANGE));
    o.assert_status(0).assert_summary(0, 7, 0, 0);
    assert!(o.tasks().iter().all(|t| t["status"] == "skipped" && t["reason"].is_null() && t["attempts"] == 0));
    t.run_args(["build", "--date-range", "2024-01-01..2024-01-03"])
        .assert_status(0)
        .stdout_has("0 ran, 7 up to date (");
}

#[test]
fn editing_a_source_reruns_exactly_its_downstream() {
    let t = chain();
    t.write("raw/2024-01-02.txt", "deux\n");
    let o = t.run_args(json_build(RANGE));
    o.assert_status(0).assert_summary(2, 5, 0, 0).assert_ran(&["a[2024-01-02]", "b[2024-01-02]"]);
    o.assert_task("a[2024-01-02]", "success", Some("input-changed"));
    o.assert_task("b[2024-01-02]", "success", Some("input-changed"));
    assert_eq!(t.read("b/2024-01-02.txt"), "DEUX\nDEUX\n");
    t.run_args(json_build(RANGE)).assert_status(0).assert_summary(0, 7, 0, 0);
}

#[test]
fn in_a_large_build_a_task_whose_dep_ran_is_decided_again() {
    // Builds of 1,024 tasks or more decide every task ahead, on every core, from the
    // stats they started with; a task whose dep then runs must be decided again.
    let first = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("a date");
    let days: Vec<String> = first.iter_days().take(520).map(|d| d.to_string()).collect();
    let mut t = Test::new().fluxfile(CHAIN);
    for d in &days {
        t = t.file(&format!("raw/{d}.txt"), format!("{d}\n"));
    }
    let range = format!("{}..{}", days[0], days[519]);
    let range = ["--date-range", range.as_str()];
    t.run_args(json_build(&range)).assert_status(0).assert_summary(1041, 0, 0, 0);
    t.write("raw/2024-03-01.txt", "edited\n");
    let o = t.run_args(json_build(&range));
    o.assert_status(0).assert_summary(2, 1039, 0, 0).assert_ran(&["a[2024-03-01]", "b[2024-03-01]"]);
    o.assert_task("b[2024-03-01]", "success", Some("input-changed"));
    assert_eq!(t.read("b/2024-03-01.txt"), "EDITED\nEDITED\n");
    t.run_args(json_build(&range)).assert_status(0).assert_summary(0, 1041, 0, 0);
}

#[test]
fn an_edit_of_the_same_size_within_the_same_instant_is_seen() {
    // The racy-git rule: a file rewritten right after it was hashed, same size.
    let t = Test::new().fluxfile(CHAIN).file("raw/2024-01-01.txt", "aaa\n");
    t.run_args(json_build(&["b", "--date", "2024-01-01"])).assert_status(0).assert_summary(2, 0, 0, 0);
    t.write("raw/2024-01-01.txt", "bbb\n");
    t.run_args(json_build(&["b", "--date", "2024-01-01"]))
        .assert_status(0)
        .assert_ran(&["a[2024-01-01]", "b[2024-01-01]"]);
    assert_eq!(t.read("b/2024-01-01.txt"), "BBB\nBBB\n");
}

#[test]
fn touching_a_source_without_changing_it_reruns_nothing() {
    let t = chain();
    t.age_files();
    t.touch("raw/2024-01-01.txt");
    t.run_args(json_build(RANGE)).assert_status(0).assert_summary(0, 7, 0, 0);
}

#[test]
fn deleting_an_intermediate_output_reruns_only_its_producer_when_it_comes_out_the_same() {
    let t = chain();
    t.remove("a/2024-01-03.txt");
    let o = t.run_args(json_build(RANGE));
    o.assert_status(0).assert_ran(&["a[2024-01-03]"]);
    o.assert_task("a[2024-01-03]", "success", Some("missing-output"));
    o.assert_task("b[2024-01-03]", "skipped", None);
    assert_eq!(t.read("a/2024-01-03.txt"), "THREE\n");
}

#[test]
fn an_upstream_rerun_with_a_different_result_reruns_the_consumer() {
    let t = chain();
    t.write("a/2024-01-01.txt", "tampered\n");
    // a's output was changed by hand: a is not stale (its inputs and command are the same),
    // but b reads a different input.
    let o = t.run_args(json_build(RANGE));
    o.assert_status(0).assert_ran(&["b[2024-01-01]"]);
    o.assert_task("b[2024-01-01]", "success", Some("input-changed"));
    assert_eq!(t.read("b/2024-01-01.txt"), "tampered\ntampered\n");
}

#[test]
fn early_cutoff_after_a_source_edit_that_does_not_change_the_result() {
    let t = Test::new()
        .fluxfile(
            r#"
[step.count]
inputs = ["src.txt"]
outputs = ["count.txt"]
run = "wc -l < {{ inputs[0] }} | tr -d ' ' > {{ outputs[0] }}"

[step.report]
inputs = ["count.txt"]
outputs = ["report.txt"]
run = "echo lines: $(cat {{ inputs[0] }}) > {{ outputs[0] }}"
"#,
        )
        .file("src.txt", "a\nb\n");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(2, 0, 0, 0);
    t.write("src.txt", "c\nd\n");
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_ran(&["count"]);
    o.assert_task("report", "skipped", None);
    t.write("src.txt", "c\nd\ne\n");
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_ran(&["count", "report"]);
    assert_eq!(t.read("report.txt"), "lines: 3\n");
}

#[test]
fn changing_a_command_reruns_with_reason_command_changed() {
    let t = chain();
    t.write("Fluxfile", CHAIN.replace("{{ inputs }} {{ inputs }}", "{{ inputs }} {{ inputs }} {{ inputs }}"));
    let o = t.run_args(json_build(RANGE));
    o.assert_status(0).assert_ran(&["b[2024-01-01]", "b[2024-01-02]", "b[2024-01-03]"]);
    for d in ["2024-01-01", "2024-01-02", "2024-01-03"] {
        o.assert_task(&format!("b[{d}]"), "success", Some("command-changed"));
    }
    assert_eq!(t.read("b/2024-01-01.txt"), "ONE\nONE\nONE\n");
}

#[test]
fn a_command_change_that_keeps_the_output_does_not_rerun_downstream() {
    let t = chain();
    t.write("Fluxfile", CHAIN.replace("tr a-z A-Z <", "tr 'a-z' 'A-Z' <"));
    let o = t.run_args(json_build(RANGE));
    o.assert_status(0).assert_ran(&["a[2024-01-01]", "a[2024-01-02]", "a[2024-01-03]"]);
    o.assert_task("b[2024-01-01]", "skipped", None);
}

#[test]
fn changing_a_var_used_in_a_command_is_a_command_change() {
    let text =
        "[vars]\nword = \"hello\"\n\n[step.w]\noutputs = [\"w.txt\"]\nrun = \"echo {{ word }} > {{ outputs[0] }}\"\n";
    let t = Test::new().fluxfile(text);
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    let o = t.run_args(json_build(&["--var", "word=bye"]));
    o.assert_status(0).assert_task("w", "success", Some("command-changed"));
    assert_eq!(t.read("w.txt"), "bye\n");
    t.run_args(json_build(&["--var", "word=bye"])).assert_status(0).assert_summary(0, 1, 0, 0);
}

#[test]
fn changing_a_steps_env_is_a_command_change() {
    let text = "[step.w]\noutputs = [\"w.txt\"]\nenv = { X = \"1\" }\nrun = \"echo $X > {{ outputs[0] }}\"\n";
    let t = Test::new().fluxfile(text);
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    t.write("Fluxfile", text.replace("\"1\"", "\"2\""));
    t.run_args(json_build(&[])).assert_status(0).assert_task("w", "success", Some("command-changed"));
    assert_eq!(t.read("w.txt"), "2\n");
}

#[test]
fn existing_outputs_without_state_are_adopted() {
    let t = Test::new()
        .fluxfile(CHAIN)
        .file("raw/2024-01-01.txt", "one\n")
        .file("a/2024-01-01.txt", "made by hand\n")
        .file("b/2024-01-01.txt", "also by hand\n")
        .file("other.txt", "old\n");
    let o = t.run_args(json_build(&["--date", "2024-01-01"]));
    o.assert_status(0).assert_summary(0, 3, 0, 0);
    assert_eq!(t.read("a/2024-01-01.txt"), "made by hand\n");
    // Their digests were recorded on first sight: a later edit of the source is seen.
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(0, 3, 0, 0);
    t.write("raw/2024-01-01.txt", "uno\n");
    let o = t.run_args(json_build(&["--date", "2024-01-01"]));
    o.assert_status(0).assert_ran(&["a[2024-01-01]", "b[2024-01-01]"]);
    assert_eq!(t.read("b/2024-01-01.txt"), "UNO\nUNO\n");
}

#[test]
fn a_failed_task_reruns_with_reason_failed_once_fixed() {
    let t = Test::new()
        .fluxfile(
            r#"
[step.check]
inputs = ["src.txt"]
outputs = ["ok.txt"]
run = "grep -q good {{ inputs[0] }} && cp {{ inputs[0] }} {{ outputs[0] }}"
"#,
        )
        .file("src.txt", "good 1\n");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    t.write("src.txt", "bad\n");
    let o = t.run_args(json_build(&[]));
    o.stderr_has("FAIL check: command exited with status 1");
    o.assert_status(1).assert_summary(0, 0, 1, 0).assert_task("check", "failed", Some("input-changed"));
    assert_eq!(t.read("ok.txt"), "good 1\n", "a failed rerun leaves the old output in place");
    t.write("src.txt", "good 2\n");
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_task("check", "success", Some("failed"));
    assert_eq!(t.read("ok.txt"), "good 2\n");
}

#[test]
fn a_failed_task_is_retried_even_if_nothing_changed() {
    let t = Test::new().fluxfile(
        r#"
[step.flaky]
outputs = ["out.txt"]
run = "if [ -e go ]; then echo done > {{ outputs[0] }}; else exit 1; fi"
"#,
    );
    t.run_args(json_build(&[]))
        .stderr_has("FAIL flaky: command exited with status 1")
        .assert_status(1)
        .assert_summary(0, 0, 1, 0);
    t.write("go", "");
    t.run_args(json_build(&[])).assert_status(0).assert_task("flaky", "success", Some("missing-output"));
    // An output exists but the last attempt failed.
    let t = Test::new()
        .fluxfile("[step.s]\ninputs = [\"in.txt\"]\noutputs = [\"out.txt\"]\nrun = \"test -e go && cp {{ inputs[0] }} {{ outputs[0] }}\"\n")
        .file("in.txt", "1")
        .file("go", "");
    t.run_args(json_build(&[])).assert_status(0);
    t.write("in.txt", "2");
    t.remove("go");
    t.run_args(json_build(&[])).assert_status(1).stderr_has("FAIL s: command exited with status 1");
    t.write("go", "");
    t.write("in.txt", "1");
    t.run_args(json_build(&[])).assert_status(0).assert_task("s", "success", Some("failed"));
    assert_eq!(t.read("out.txt"), "1");
}

#[test]
fn an_interrupted_staged_task_reruns_with_reason_failed_though_nothing_changed() {
    // A forced run of an up-to-date task is interrupted: its old output is still there and
    // its inputs did not change, but its last attempt did not finish, so it runs again
    // (reason `failed`; a `stage = false` task would say `incomplete`, see crash.rs).
    let t = Test::new()
        .fluxfile(
            "[step.s]\ninputs = [\"in.txt\"]\noutputs = [\"out.txt\"]\nrun = \"touch started; if [ -e hold ]; then sleep 60; fi; cp {{ inputs[0] }} {{ outputs[0] }}\"\n",
        )
        .file("in.txt", "1");
    t.run_args(json_build(&[])).assert_status(0).assert_task("s", "success", Some("missing-output"));
    t.remove("started");
    t.write("hold", "");
    let bg = Running::spawn(&t, &["build", "--force", "--output", "json"]);
    assert!(
        crate::operations::wait_until(Duration::from_secs(30), || t.exists("started")),
        "the forced run never started"
    );
    bg.signal("INT");
    bg.wait(Duration::from_secs(30)).assert_status(130).stderr_has("interrupted");
    t.remove("hold");
    t.run_args(json_build(&[])).assert_status(0).assert_task("s", "success", Some("failed"));
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 1, 0, 0);
}

#[test]
fn force_reruns_the_requested_tasks_with_reason_forced() {
    let t = chain();
    let o = t.run_args(json_build(&["a", "--date", "2024-01-02", "--force"]));
    o.assert_status(0).assert_ran(&["a[2024-01-02]"]).assert_task("a[2024-01-02]", "success", Some("forced"));
}

#[test]
fn from_forces_a_step_and_everything_downstream() {
    let t = chain();
    let o = t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-03", "--from", "a"]));
    o.assert_status(0).assert_summary(6, 1, 0, 0);
    o.assert_task("a[2024-01-01]", "success", Some("forced"));
    o.assert_task("b[2024-01-03]", "success", Some("forced"));
    o.assert_task("other", "skipped", None);
}

#[test]
fn from_an_unknown_step_says_did_you_mean() {
    chain()
        .run_args(["build", "--date", "2024-01-01", "--from", "bb"])
        .assert_status(2)
        .stderr_is("error: --from bb: no such step or task; did you mean `b`?\n");
}

#[test]
fn rerun_triggers_narrow_the_reasons() {
    let t = chain();
    t.write("Fluxfile", CHAIN.replace("{{ inputs }} {{ inputs }}", "{{ inputs }}"));
    t.remove("other.txt");
    let o =
        t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-03", "--rerun-triggers", "missing,input", "-n"]));
    o.assert_status(0);
    assert_eq!(o.ids_with_status("would-run"), ["other"], "{}", o.describe());
    let o = t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-03", "--rerun-triggers", "command", "-n"]));
    o.assert_status(0);
    assert_eq!(o.ids_with_status("would-run"), ["b[2024-01-01]", "b[2024-01-02]", "b[2024-01-03]"]);
    let o = t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-03", "--rerun-triggers", "missing"]));
    o.assert_status(0).assert_ran(&["other"]);
    t.run_args(["build", "--rerun-triggers", "sometimes", "--date", "2024-01-01"])
        .assert_status(2)
        .stderr_is("error: --rerun-triggers: unknown trigger `sometimes` (use missing, input, command)\n");
}

#[test]
fn a_build_with_narrowed_triggers_does_not_make_flux_forget_a_command_change() {
    let t = chain();
    // Let every digest settle (older than the racy margin), as on a real project.
    t.age_files();
    t.run_args(json_build(RANGE)).assert_status(0).assert_summary(0, 7, 0, 0);
    t.age_files();
    t.write("Fluxfile", CHAIN.replace("{{ inputs }} {{ inputs }}", "{{ inputs }}"));
    t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-03", "--rerun-triggers", "missing"]))
        .assert_status(0)
        .assert_summary(0, 7, 0, 0);
    // The command did change: a build with every trigger reruns b.
    let o = t.run_args(json_build(RANGE));
    o.assert_status(0).assert_ran(&["b[2024-01-01]", "b[2024-01-02]", "b[2024-01-03]"]);
    o.assert_task("b[2024-01-01]", "success", Some("command-changed"));
    assert_eq!(t.read("b/2024-01-01.txt"), "ONE\n");
}

#[test]
fn a_build_with_narrowed_triggers_does_not_make_flux_forget_an_input_change() {
    let t = chain();
    t.age_files();
    t.run_args(json_build(RANGE)).assert_status(0).assert_summary(0, 7, 0, 0);
    t.write("raw/2024-01-02.txt", "deux\n");
    t.age_files();
    t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-03", "--rerun-triggers", "missing"]))
        .assert_status(0)
        .assert_summary(0, 7, 0, 0);
    let o = t.run_args(json_build(RANGE));
    o.assert_status(0).assert_ran(&["a[2024-01-02]", "b[2024-01-02]"]);
    o.assert_task("a[2024-01-02]", "success", Some("input-changed"));
    assert_eq!(t.read("b/2024-01-02.txt"), "DEUX\nDEUX\n");
}

#[test]
fn a_step_without_outputs_runs_once_then_is_up_to_date() {
    let t = Test::new().fluxfile("[step.notify]\nrun = \"echo ran >> trace.txt\"\n");
    t.run_args(json_build(&[])).assert_status(0).assert_task("notify", "success", Some("never-run"));
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 1, 0, 0);
    assert_eq!(t.read("trace.txt"), "ran\n");
    t.write("Fluxfile", "[step.notify]\nrun = \"echo again >> trace.txt\"\n");
    t.run_args(json_build(&[])).assert_status(0).assert_task("notify", "success", Some("command-changed"));
}

#[test]
fn directory_outputs_are_built_and_consumed() {
    let t = Test::new().fluxfile(
        r#"
[step.split]
params = { date = "date" }
inputs = ["raw/{{ date }}.txt"]
outputs = ["parts/{{ date }}/"]
run = "while read -r l; do echo \"$l\" > {{ outputs[0] }}/\"$l\".txt; done < {{ inputs[0] }}"

[step.count]
params = { date = "date" }
inputs = ["parts/{{ date }}/"]
outputs = ["count/{{ date }}.txt"]
run = "ls {{ inputs[0] }} | wc -l | tr -d ' ' > {{ outputs[0] }}"
"#,
    );
    t.write("raw/2024-01-01.txt", "x\ny\nz\n");
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(2, 0, 0, 0);
    assert_eq!(t.read("parts/2024-01-01/y.txt"), "y\n");
    assert_eq!(t.read("count/2024-01-01.txt"), "3\n");
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(0, 2, 0, 0);
    // A rebuilt directory replaces the old one whole.
    t.write("raw/2024-01-01.txt", "x\ny\n");
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(2, 0, 0, 0);
    assert!(!t.exists("parts/2024-01-01/z.txt"));
    assert_eq!(t.read("count/2024-01-01.txt"), "2\n");
}

#[test]
fn a_change_inside_an_input_directory_reruns_the_consumer() {
    let t = Test::new()
        .fluxfile(
            r#"
[step.index]
inputs = ["docs/"]
outputs = ["index.txt"]
run = "find {{ inputs[0] }} -type f | sort > {{ outputs[0] }}"
"#,
        )
        .file("docs/a.md", "a")
        .file("docs/sub/b.md", "b");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("index.txt"), "docs/a.md\ndocs/sub/b.md\n");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 1, 0, 0);
    t.write("docs/sub/b.md", "changed");
    t.run_args(json_build(&[])).assert_status(0).assert_task("index", "success", Some("input-changed"));
    t.write("docs/sub/c.md", "new file");
    t.run_args(json_build(&[])).assert_status(0).assert_task("index", "success", Some("input-changed"));
    assert_eq!(t.read("index.txt"), "docs/a.md\ndocs/sub/b.md\ndocs/sub/c.md\n");
    t.remove("docs/a.md");
    t.run_args(json_build(&[])).assert_status(0).assert_task("index", "success", Some("input-changed"));
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 1, 0, 0);
}

#[test]
fn a_no_op_build_reads_no_file_contents() {
    let t = chain();
    // The first build hashed files it had just written (racy: re-hashed next time); once
    // files are older than flux's 50 ms margin their digests are trusted.
    t.age_files();
    t.run_args(json_build(RANGE)).assert_status(0).assert_summary(0, 7, 0, 0);
    let o = t.run_args(["-v", "build", "--date-range", "2024-01-01..2024-01-03"]);
    o.assert_status(0).stdout_has("0 ran, 7 up to date").stderr_has("(0 files read for digests)");
    o.stderr_has("s in flux itself, ").stderr_has("s in commands");
}

#[test]
fn a_no_op_build_right_after_aging_reads_nothing() {
    // Sources aged before the first build, outputs aged before the second.
    let t = Test::new().fluxfile(CHAIN).file("raw/2024-01-01.txt", "one\n");
    t.age_files();
    t.run_args(json_build(&["--date", "2024-01-01"])).assert_status(0).assert_summary(3, 0, 0, 0);
    t.age_files();
    t.run_args(["-v", "build", "--date", "2024-01-01"])
        .stderr_has("flux: load Fluxfile:")
        .assert_status(0)
        .stdout_has("0 ran, 3 up to date");
    let o = t.run_args(["-v", "build", "--date", "2024-01-01"]);
    o.assert_status(0).stdout_has("0 ran, 3 up to date").stderr_has("(0 files read for digests)");
}

#[test]
fn staging_does_not_make_tasks_look_changed() {
    // Commands see staging paths for outputs; fingerprints use the final paths, so a second
    // build with the same command is a no-op and the JSON ids never mention the stage.
    let t = Test::new()
        .fluxfile("[step.p]\noutputs = [\"out/p.txt\"]\nrun = \"echo {{ outputs[0] }} > {{ outputs[0] }}\"\n");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 1, 0, 0);
    assert!(!t.exists(".flux/stage/p"), "the staging folder is cleaned up");
}

#[test]
fn staged_outputs_are_spread_over_sixteen_folders_of_the_run() {
    // Commands of many tasks at once create their outputs in staging: one folder per run
    // and slot (0-f, from the task key), not one for all, so that they do not all wait on
    // one folder's lock. What each command saw is written into its output.
    let days: Vec<String> = (1..=40).map(|d| format!("\"{d:02}\"")).collect();
    let t = Test::new().fluxfile(&format!(
        "[step.p]\nparams = {{ d = [{}] }}\noutputs = [\"out/{{{{ d }}}}.txt\"]\n\
         run = \"echo {{{{ outputs[0] }}}} > {{{{ outputs[0] }}}}\"\n",
        days.join(", ")
    ));
    t.run_args(json_build(&["-j", "4"])).assert_status(0).assert_summary(40, 0, 0, 0);
    let mut slots = std::collections::HashSet::new();
    for d in 1..=40 {
        let seen = t.read(&format!("out/{d:02}.txt"));
        let rel = seen.trim().split(".flux/stage/").nth(1).unwrap_or_else(|| panic!("not staged: {seen}"));
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 3, "<run>/<slot>/<file>: {rel}");
        assert!(parts[0].parse::<u64>().is_ok(), "run id: {rel}");
        assert!(parts[1].len() == 1 && u8::from_str_radix(parts[1], 16).is_ok(), "slot: {rel}");
        assert!(parts[2].ends_with(&format!(".0.{d:02}.txt")), "file name kept: {rel}");
        slots.insert(parts[1].to_string());
    }
    assert!(slots.len() >= 8, "40 tasks in only {} folders: {slots:?}", slots.len());
    let left: Vec<_> =
        std::fs::read_dir(t.path().join(".flux/stage")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "the run's staging folder is removed: {left:?}");
}

#[test]
fn an_output_read_by_several_tasks_is_hashed_once_per_build() {
    let t = Test::new()
        .fluxfile(
            r#"
[step.a]
inputs = ["src.txt"]
outputs = ["a.txt"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"

[step.b]
params = { n = ["1", "2", "3"] }
inputs = ["a.txt"]
outputs = ["b{{ n }}.txt"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"
"#,
        )
        .file("src.txt", "x\n");
    let o = t.run_args(["-v", "build"]);
    // src.txt once for `a`, a.txt once for the three `b` tasks.
    o.assert_status(0).stdout_has("4 ran").stderr_has("(2 files read for digests)");
}

#[test]
fn a_rebuild_reads_only_the_inputs_that_changed() {
    let t = Test::new()
        .fluxfile(
            r#"
[step.join]
inputs = ["a.txt", "b.txt"]
outputs = ["ab.txt"]
run = "cat {{ inputs[0] }} {{ inputs[1] }} > {{ outputs[0] }}"
"#,
        )
        .file("a.txt", "a\n")
        .file("b.txt", "b\n");
    t.age_files();
    t.run_args(["-v", "build"]).assert_status(0).stdout_has("1 ran").stderr_has("(2 files read for digests)");
    t.age_files();
    t.write("a.txt", "a, edited\n");
    // b.txt's digest comes from the state DB's cache: only a.txt is read.
    let o = t.run_args(["-v", "build"]);
    o.assert_status(0).stdout_has("1 ran").stderr_has("(1 files read for digests)");
    assert_eq!(t.read("ab.txt"), "a, edited\nb\n");
}
