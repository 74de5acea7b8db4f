//! What flux deletes, and what it never deletes (SPEC §5, docs/operations.md).
//!
//! Every project here lives in `proj/` inside the test's own temporary folder, so that an
//! output that escapes to "the project's parent" can only ever reach that disposable
//! folder. The file-system root is only ever tried with `--dry-run`, which deletes nothing
//! whatever the guard does, and home is a folder of the test's (`HOME` is set for the run).

use crate::operations::{sleep_marker, sleeps_with, wait_until};
use crate::test::*;
use std::time::Duration;

/// The reproduction: a `stage = false` folder output whose path comes from a var.
const VAR_OUT: &str = r#"
[vars]
out = "data"

[step.d]
outputs = ["{{ out }}/"]
stage = false
run = "exit 3"
"#;

/// A project in `proj/` with a file beside it (in the project's parent) and one in it.
fn project(fluxfile: &str) -> Test {
    Test::new()
        .file("proj/Fluxfile", fluxfile)
        .file("proj/mine.txt", "mine")
        .file("beside.txt", "beside")
        .current_dir("proj")
}

#[track_caller]
fn assert_untouched(t: &Test) {
    assert_eq!(t.read("beside.txt"), "beside", "the project's parent was emptied");
    assert_eq!(t.read("proj/mine.txt"), "mine", "the project was emptied");
    assert!(t.exists("proj/Fluxfile"));
}

#[test]
fn an_output_that_renders_to_the_projects_parent_is_refused_before_anything_runs() {
    let t = project(VAR_OUT);
    for args in [
        vec!["build", "--force", "--var", "out=data/../.."],
        vec!["build", "-n", "--var", "out=data/../.."],
        vec!["clear", "d", "--delete-outputs", "--var", "out=data/../.."],
    ] {
        let o = t.run_args(args.clone());
        o.assert_status(2)
            .stderr_has("output `{{ out }}/` of step `d` renders to `data/../../`")
            .stderr_has(&format!("({})", t.path().display()))
            .stderr_has("which is a parent of the project folder")
            .stderr_has("Fluxfile:6:12");
        assert_untouched(&t);
    }
    assert!(!t.exists("proj/.flux/state.db"), "nothing ran: no state was even opened");
}

#[test]
fn an_output_that_renders_to_the_project_folder_or_the_state_folder_is_refused() {
    let t = project(VAR_OUT);
    for (out, what) in [
        ("data/..", "which is the project folder (the Fluxfile's folder)"),
        ("data/../.flux", "which is flux's state folder"),
        (".flux/stage", "which is inside flux's state folder"),
    ] {
        let var = format!("out={out}");
        t.run_args(["build", "--force", "--var", &var]).assert_status(2).stderr_has(what);
        t.run_args(["clear", "d", "--delete-outputs", "--var", &var]).assert_status(2).stderr_has(what);
        assert_untouched(&t);
    }
    // A state folder set in the Fluxfile is guarded too, and so is a file:// URI.
    let t = project(
        "[flux]\nstate = \"st\"\n\n[step.a]\noutputs = [\"st/\"]\nstage = false\nrun = \"exit 3\"\n\n\
         [step.b]\noutputs = [\"file://PARENT/\"]\nstage = false\nrun = \"exit 3\"\n\n\
         [step.c]\noutputs = [\"./\"]\nstage = false\nrun = \"exit 3\"\n",
    );
    t.write("proj/Fluxfile", t.read("proj/Fluxfile").replace("PARENT", &t.path().display().to_string()));
    t.run_args(["build", "a"]).assert_status(2).stderr_has("`st/`").stderr_has("which is flux's state folder");
    t.run_args(["build", "b"]).assert_status(2).stderr_has("which is a parent of the project folder");
    t.run_args(["build", "c", "--force"])
        .assert_status(2)
        .stderr_has("renders to `.` (")
        .stderr_has("which is the project folder");
    assert_untouched(&t);
}

#[test]
fn an_output_that_renders_to_the_root_or_home_is_refused() {
    let home = tempfile::Builder::new().prefix("flux-home-").tempdir().unwrap();
    let home_path = canon(home.path()).join("users/me");
    std::fs::create_dir_all(&home_path).unwrap();
    std::fs::write(home_path.join("keep.txt"), "keep").unwrap();
    let t = project(VAR_OUT).env("HOME", &home_path.display().to_string());
    // `/` only ever with a dry run: it deletes nothing whatever happens.
    for out in ["out=", "out=/", "out=/tmp/.."] {
        t.run_args(["build", "-n", "--var", out]).assert_status(2).stderr_has("which is the file-system root");
    }
    let var = format!("out={}", home_path.display());
    t.run_args(["build", "--force", "--var", &var]).assert_status(2).stderr_has("which is your home folder ($HOME)");
    t.run_args(["clear", "d", "--delete-outputs", "--var", &var])
        .assert_status(2)
        .stderr_has("which is your home folder ($HOME)");
    let parent = format!("out={}", home_path.parent().unwrap().display());
    t.run_args(["build", "-n", "--var", &parent]).assert_status(2).stderr_has("a parent of your home folder");
    assert_eq!(std::fs::read_to_string(home_path.join("keep.txt")).unwrap(), "keep");
    assert_untouched(&t);
}

#[test]
fn an_output_that_is_a_whole_bucket_is_refused() {
    for out in ["s3://bucket", "s3://bucket/", "gs://bucket/./", "hdfs://127.0.0.1:9/"] {
        let t = project(&format!("[step.d]\noutputs = [\"{out}\"]\nstage = false\nrun = \"exit 3\"\n"));
        t.run_args(["build", "-n"]).assert_status(2).stderr_has("which is the root of a whole bucket or namespace");
    }
}

#[test]
fn a_var_that_is_dot_or_dot_dot_is_refused() {
    let t = project(VAR_OUT);
    for v in ["out=.", "out=.."] {
        t.run_args(["build", "--force", "--var", v])
            .assert_status(2)
            .stderr_has(&format!("--var {v}: var `out` cannot be `{}`", &v[4..]));
        assert_untouched(&t);
    }
    // In the Fluxfile and in a profile: with the place.
    let t = project(&VAR_OUT.replace("out = \"data\"", "out = \".\""));
    t.run_args(["build", "--force"]).assert_status(2).stderr_has("var `out` cannot be `.`").stderr_has("Fluxfile:3:7");
    assert_untouched(&t);
    let t = project(&format!("{VAR_OUT}\n[profile.p.vars]\nout = \"..\"\n"));
    t.run_args(["build", "--force"])
        .assert_status(2)
        .stderr_has("var `out` cannot be `..`")
        .stderr_has("Fluxfile:11:7");
    assert_untouched(&t);
    // Flags in vars stay legal (`echo {{ flags | raw }}`), and so do paths.
    let t = project(VAR_OUT);
    t.run_args(["build", "-n", "--var", "out=-n"]).assert_status(0);
    t.run_args(["build", "-n", "--var", "out=/tmp/flux-test/x"]).assert_status(0);
}

#[test]
fn list_param_values_that_are_dots_or_start_with_a_dash_are_refused() {
    for v in [".", "..", "-rf"] {
        let t = project(&format!(
            "[step.d]\nparams = {{ region = [\"eu\", \"{v}\"] }}\noutputs = [\"{{{{ region }}}}/\"]\nstage = false\nrun = \"exit 3\"\n"
        ));
        t.run_args(["build", "--force"])
            .assert_status(2)
            .stderr_has(&format!("`{v}` cannot be a param value"))
            .stderr_has("Fluxfile:2:");
        assert_untouched(&t);
    }
}

#[test]
fn jobs_zero_is_refused() {
    let t = project(VAR_OUT);
    t.run_args(["build", "-j", "0"]).assert_status(2).stderr_has("-j 0: give a positive number");
}

#[test]
fn a_failed_stage_false_folder_output_loses_only_what_the_attempt_wrote() {
    let t = project(
        r#"
[step.d]
outputs = ["out/"]
stage = false
run = "echo changed > out/old.txt; echo new > out/new.txt; echo new > out/sub/new.txt; mkdir -p out/newdir; echo x > out/newdir/x; exit 3"
"#,
    )
    .file("proj/out/old.txt", "old")
    .file("proj/out/sub/old.txt", "old");
    t.run_args(json_build(&["--force"]))
        .stderr_has("FAIL d: command exited with status 3")
        .assert_status(1)
        .assert_summary(0, 0, 1, 0);
    assert!(!t.exists("proj/out/new.txt") && !t.exists("proj/out/sub/new.txt") && !t.exists("proj/out/newdir"));
    assert_eq!(t.read("proj/out/sub/old.txt"), "old", "a file that was there before the attempt is left");
    assert_eq!(t.read("proj/out/old.txt"), "changed\n", "a file that was there before the attempt is left");
    assert_untouched(&t);
    // A folder the attempt made itself is removed whole, as before.
    t.remove("proj/out");
    t.run_args(json_build(&["--force"])).assert_status(1).stderr_has("FAIL d: command exited with status 3");
    assert!(!t.exists("proj/out"));
}

#[test]
fn a_failed_stage_false_file_output_is_removed_only_if_the_attempt_changed_it() {
    let t = project(
        r#"
[step.keep]
outputs = ["keep.txt"]
stage = false
run = "exit 3"

[step.touched]
outputs = ["touched.txt"]
stage = false
run = "echo partial >> touched.txt; exit 3"
"#,
    )
    .file("proj/keep.txt", "before")
    .file("proj/touched.txt", "before");
    t.run_args(json_build(&["--force"]))
        .stderr_has("FAIL keep: command exited with status 3")
        .assert_status(1)
        .assert_summary(0, 0, 2, 0);
    assert_eq!(t.read("proj/keep.txt"), "before", "the attempt did not write it: it stays");
    assert!(!t.exists("proj/touched.txt"), "the attempt changed it: removed, as make's .DELETE_ON_ERROR does");
}

#[test]
fn an_interrupted_stage_false_folder_output_keeps_what_was_there_before() {
    let mark = sleep_marker(30);
    let t = project(&format!(
        "[step.d]\noutputs = [\"out/\"]\nstage = false\nrun = \"echo new > out/new.txt; sleep {mark}\"\n"
    ))
    .file("proj/out/old.txt", "old");
    let running = t.spawn_args(["build", "--force"]);
    let started = wait_until(Duration::from_secs(20), || !sleeps_with(&mark).is_empty());
    running.signal("INT");
    let o = t.finish(running);
    o.stderr_has("interrupted: stopping running tasks (press Ctrl-C again to kill them)");
    assert!(started, "the task never started\n{}", o.describe());
    o.assert_status(130);
    assert_eq!(t.read("proj/out/old.txt"), "old");
    assert!(!t.exists("proj/out/new.txt"), "what the interrupted attempt wrote is removed");
    assert_untouched(&t);
}

#[test]
fn a_symlinked_output_folder_is_never_followed() {
    let t = project(
        r#"
[step.d]
outputs = ["data/"]
stage = false
run = "echo new > data/new.txt; exit 3"
"#,
    )
    .file("elsewhere/keep.txt", "keep");
    std::os::unix::fs::symlink(t.abs("elsewhere"), t.abs("proj/data")).unwrap();
    t.run_args(json_build(&["--force"])).stderr_has("FAIL d: command exited with status 3").assert_status(1);
    assert_eq!(t.read("elsewhere/keep.txt"), "keep");
    // clear --delete-outputs removes the link, not what it points to.
    t.run_args(["clear", "d", "--delete-outputs"]).assert_status(0);
    assert!(!t.exists("proj/data"), "the link is removed");
    assert_eq!(t.read("elsewhere/keep.txt"), "keep");
    assert_untouched(&t);
}

#[test]
fn dangling_and_looping_symlinks_in_a_folder_input_are_digested_as_links() {
    let t = project(
        r#"
[step.d]
inputs = ["in/"]
outputs = ["out.txt"]
run = "ls {{ inputs[0] }} > {{ outputs[0] }}"
"#,
    )
    .file("proj/in/a.txt", "a");
    std::os::unix::fs::symlink("nowhere", t.abs("proj/in/dangling")).unwrap();
    std::os::unix::fs::symlink(".", t.abs("proj/in/loop")).unwrap();
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 1, 0, 0);
    // Pointing a link elsewhere changes the input.
    std::fs::remove_file(t.abs("proj/in/dangling")).unwrap();
    std::os::unix::fs::symlink("somewhere", t.abs("proj/in/dangling")).unwrap();
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    o.assert_task("d", "success", Some("input-changed"));
}
