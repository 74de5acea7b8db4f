//! Staging that existing scripts survive (SPEC §4): commands get absolute staged paths,
//! and a command that writes the final path itself is accepted as with `stage = false`.

use crate::test::{Test, json_build};

#[test]
fn a_command_that_writes_its_final_path_itself_is_accepted_with_one_warning_per_step() {
    let t = Test::new().fluxfile(
        "[step.d]\nparams = { date = \"date\" }\noutputs = [\"out/{{ date }}.txt\"]\nrun = \"echo hi > out/{{ date }}.txt\"\n",
    );
    let o = t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-03"]));
    o.assert_status(0).assert_summary(3, 0, 0, 0);
    assert_eq!(o.stderr().matches("wrote `out/").count(), 1, "one warning for the step\n{}", o.describe());
    o.stderr_has("{{ outputs[0] }}").stderr_has("stage = false");
    assert_eq!(t.read("out/2024-01-02.txt"), "hi\n");
    // Up to date afterwards, and it keeps working on every build.
    t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-03"])).assert_status(0).assert_summary(0, 3, 0, 0);
    t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-03", "--force"]))
        .stderr_has("itself instead of the staging path flux gave it: accepted as with `stage = false`")
        .assert_status(0)
        .assert_summary(3, 0, 0, 0);
}

#[test]
fn a_failed_command_that_wrote_its_final_path_leaves_no_output_behind() {
    let t = Test::new().fluxfile("[step.p]\noutputs = [\"out/p.txt\"]\nrun = \"echo partial > out/p.txt; exit 3\"\n");
    t.run_args(json_build(&[]))
        .stderr_has("FAIL p: command exited with status 3")
        .assert_status(1)
        .assert_summary(0, 0, 1, 0);
    assert!(!t.exists("out/p.txt"), "the partial output was deleted, like make's .DELETE_ON_ERROR");
}

#[test]
fn a_failed_command_leaves_a_final_path_it_did_not_touch_alone() {
    let t = Test::new().fluxfile("[step.p]\noutputs = [\"p.txt\"]\nrun = \"exit 3\"\n").file("p.txt", "old\n");
    t.run_args(json_build(&["--force"]))
        .stderr_has("FAIL p: command exited with status 3")
        .assert_status(1)
        .assert_summary(0, 0, 1, 0);
    assert_eq!(t.read("p.txt"), "old\n");
}

#[test]
fn an_output_nothing_wrote_says_where_flux_expected_it() {
    // The final path exists (from before) but the command did not touch it.
    let t = Test::new().fluxfile("[step.lazy]\noutputs = [\"lazy.txt\"]\nrun = \"true\"\n").file("lazy.txt", "old\n");
    let o = t.run_args(json_build(&["--force"]));
    o.stderr_has("FAIL lazy: the command succeeded but did not write output `lazy.txt`: flux expected it at");
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    let err = o.task("lazy")["error"].as_str().unwrap_or_default().to_string();
    assert!(err.starts_with("the command succeeded but did not write output `lazy.txt`"), "{err}");
    let stage = t.path().join(".flux/stage");
    assert!(err.contains(&stage.display().to_string()), "names the staged path: {err}");
    assert!(err.contains("write to `{{ outputs[0] }}`"), "{err}");
    assert_eq!(t.read("lazy.txt"), "old\n");
}

#[test]
fn staged_paths_are_absolute_so_commands_may_change_folders() {
    let t = Test::new()
        .fluxfile("[step.s]\noutputs = [\"out/s.txt\"]\nrun = \"mkdir -p sub && cd sub && echo {{ outputs[0] }} > {{ outputs[0] }}\"\n");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    let seen = t.read("out/s.txt");
    assert!(seen.starts_with('/'), "absolute: {seen}");
}

#[test]
fn a_folder_output_written_in_place_is_accepted() {
    let t = Test::new().fluxfile("[step.f]\noutputs = [\"parts/\"]\nrun = \"mkdir -p parts && echo 1 > parts/a\"\n");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0).stderr_has("wrote `parts/`");
    assert_eq!(t.read("parts/a"), "1\n");
}
