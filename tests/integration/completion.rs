//! Completion of step names and task ids (the hidden `flux __complete`, and the glue in
//! each shell's script), and help that points at topics shipped in the binary.

use crate::test::*;

const PROJECT: &str = r#"
[step.extract]
params = { date = "date" }
outputs = ["raw/{{ date }}.txt"]
run = "echo {{ date }} > {{ outputs[0] }}"

[step.export]
params = { region = ["eu", "us"] }
outputs = ["out/{{ region }}.txt"]
run = "echo {{ region }} > {{ outputs[0] }}"

[step.report]
outputs = ["report.txt"]
run = "echo > {{ outputs[0] }}"
"#;

#[test]
fn hidden_complete_lists_step_names_and_task_ids_of_the_project() {
    let t = Test::new().fluxfile(PROJECT);
    t.run_args(["__complete"]).assert_status(0).stdout_is("export\nextract\nreport\n");
    t.run_args(["__complete", "--", "ex"]).assert_status(0).stdout_is("export\nextract\n");
    // Task ids: from the step's domain, and from the state DB once tasks were built.
    t.run_args(["__complete", "--", "export["]).assert_status(0).stdout_is("export[eu]\nexport[us]\n");
    t.run_args(["__complete", "--", "extract["]).assert_status(0).stdout_is("");
    t.run_args(["build", "extract", "--date-range", "2024-03-01..2024-03-02"]).assert_status(0);
    t.run_args(["__complete", "--", "extract[2024-03"])
        .assert_status(0)
        .stdout_is("extract[2024-03-01]\nextract[2024-03-02]\n");
    // With -f.
    t.run_args(["-f", "Fluxfile", "__complete", "--", "rep"]).assert_status(0).stdout_is("report\n");
    // Outside a project: nothing, quietly.
    let empty = Test::new();
    empty.run_args(["__complete", "--", "x"]).assert_status(0).stdout_is("").stderr_is("");
    // Hidden from help.
    t.run_args(["--help"]).assert_status(0).stdout_lacks("__complete");
}

#[test]
fn every_shell_script_asks_flux_for_targets() {
    for (shell, func) in [("bash", "_flux_targets"), ("zsh", "_flux_targets"), ("fish", "__fish_flux_targets")] {
        let o = Test::new().args(["completions", shell]).run();
        o.assert_status(0).stdout_has("__complete --").stdout_has(func);
    }
    // zsh: the target arguments use the glue rather than plain files.
    let zsh = Test::new().args(["completions", "zsh"]).run();
    assert!(zsh.stdout.lines().any(|l| l.starts_with("'*::targets -- ") && l.ends_with(":_flux_targets' \\")));
    assert!(!zsh.stdout.lines().any(|l| l.starts_with("'*::targets -- ") && l.ends_with(":_default' \\")));
    // Defined before the lines that run the completion when the file is autoloaded.
    let defined = zsh.stdout.find("_flux_targets() {").expect("the glue");
    let runs = zsh.stdout.find("if [ \"$funcstack[1]\" = \"_flux\" ]").expect("clap's last lines");
    assert!(defined < runs, "{}", zsh.stdout);
}

#[test]
fn bash_completes_step_names_and_task_ids_through_flux() {
    let t = Test::new().fluxfile(PROJECT);
    let script = t.run_args(["completions", "bash"]).stdout.clone();
    t.write("flux.bash", &script);
    let flux_dir = std::path::Path::new(FLUX).parent().expect("bin folder").display().to_string();
    let run = |words: &str, cword: usize| -> String {
        let cmd = format!(
            "export PATH='{flux_dir}':\"$PATH\"; source ./flux.bash; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             _flux_targets flux \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(cmd)
            .current_dir(t.path())
            .env("CI", "1")
            .output()
            .expect("run bash");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run("flux build ex", 2), "export\nextract\n");
    assert_eq!(run("flux status 'export['", 2), "export[eu]\nexport[us]\n");
    // A flag's value is not a target.
    assert_eq!(run("flux build --date 20", 3), "\n");
}

#[test]
fn help_points_at_topics_in_the_binary_not_at_repository_paths() {
    let o = Test::new().args(["--help"]).run();
    o.assert_status(0).stdout_lacks("docs/").stdout_lacks(".md").stdout_has("flux help TOPIC");
    let o = Test::new().args(["help", "templates"]).run();
    o.assert_status(0).stdout_has("## Templates\n").stdout_has("add_days").stdout_lacks("## Not supported yet");
    Test::new().args(["help", "fluxfile"]).run().assert_status(0).stdout_has("# The Fluxfile\n");
    Test::new().args(["help", "cli"]).run().assert_status(0).stdout_has("# The command line\n");
    Test::new()
        .args(["help", "build"])
        .run()
        .assert_status(0)
        .stdout_has("Usage: flux build")
        .stdout_has("--date-range");
    Test::new().args(["help"]).run().assert_status(0).stdout_has("Usage: flux").stdout_has("flux help TOPIC");
    Test::new()
        .args(["help", "templats"])
        .run()
        .assert_status(2)
        .stderr_has("`templats` is not a help topic or a subcommand; did you mean `templates`?");
}
