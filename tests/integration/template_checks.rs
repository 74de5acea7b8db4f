//! What templates may not do, and what `flux check` and `flux build -n` catch (SPEC §2.2,
//! §9): quoting in commands cannot be turned off except by `| raw`; unknown filters, tests
//! and functions are Fluxfile errors at the name; shell syntax such as `${#VAR}` survives
//! templating (comments are `{{# … #}}`); syntax errors point at their `{{`/`{%`; a dry
//! run renders every command it would run.

use crate::test::*;

/// A step whose one command is `run` (a TOML literal string) and whose output is a.txt.
fn step(run: &str) -> String {
    format!("[vars]\nv = \"x\"\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = '{run}'\n")
}

/// The line and column of the first `needle` in the Fluxfile text.
fn at(fluxfile: &str, needle: &str) -> String {
    let off = fluxfile.find(needle).unwrap_or_else(|| panic!("{needle} not in {fluxfile}"));
    let line = fluxfile[..off].matches('\n').count() + 1;
    let col = fluxfile[..off].rfind('\n').map_or(off, |n| off - n - 1) + 1;
    format!(" --> Fluxfile:{line}:{col}\n")
}

fn refused(fluxfile: &str, needle: &str, message: &str, help: &str) -> Output {
    let out = Test::new().fluxfile(fluxfile).args(["check"]).run();
    out.assert_status(2).stderr_has(message).stderr_has(&at(fluxfile, needle)).stderr_has(help);
    out
}

#[test]
fn safe_cannot_turn_quoting_off_and_nothing_is_injected() {
    let ff = step("echo {{ v | safe }} > {{ outputs[0] }}");
    let t = Test::new().fluxfile(&ff);
    for args in
        [vec!["build", "--var", "v=x; touch PWNED"], vec!["build", "-n", "--var", "v=x; touch PWNED"], vec!["check"]]
    {
        t.run_args(&args)
            .assert_status(2)
            .stderr_has("error: `| safe` would turn off shell quoting in a command")
            .stderr_has(&at(&ff, "safe }}"))
            .stderr_has("help: values in commands are shell-quoted; use `| raw` to pass a value unquoted");
    }
    assert!(t.tree(".").keys().all(|k| !k.contains("PWNED")), "{:?}", t.tree("."));
    assert!(!t.exists("a.txt"));
}

#[test]
fn autoescape_blocks_are_refused_in_commands() {
    let ff = step("{% autoescape false %}echo {{ v }}{% endautoescape %} > {{ outputs[0] }}");
    let t = Test::new().fluxfile(&ff);
    t.run_args(["build", "--var", "v=x; touch PWNED"])
        .assert_status(2)
        .stderr_has("error: `{% autoescape %}` would turn off shell quoting in a command")
        .stderr_has(&at(&ff, "autoescape false"))
        .stderr_has("use `| raw` to pass a value unquoted");
    assert!(!t.exists("PWNED"));
    // Another escaping mode would not quote for the shell either.
    let ff = step("{% autoescape \"html\" %}echo {{ v }}{% endautoescape %}");
    refused(&ff, "autoescape \"html\"", "would turn off shell quoting", "| raw");
}

#[test]
fn escape_filter_blocks_set_blocks_and_macros_are_refused_in_commands() {
    // `escape` marks its result safe, and a safe string can lose its quotes to `replace`.
    let ff = step("echo {{ v | escape | replace(\"x\", \"y\") }}");
    refused(&ff, "escape |", "error: `| escape` would turn off shell quoting in a command", "| raw");
    let ff = step("echo {{ v | e }}");
    refused(&ff, "e }}", "error: `| e` would turn off shell quoting", "| raw");
    let ff = step("{% filter safe %}echo {{ v }}{% endfilter %}");
    refused(&ff, "safe %}", "error: `| safe` would turn off shell quoting", "| raw");
    // Captured text is already quoted; a filter could strip the quotes.
    let ff = step("{% filter trim %}echo {{ v }}{% endfilter %}");
    refused(&ff, "filter trim", "error: a `{% filter %}` block is not allowed in a command", "{{ v | upper }}");
    let ff = step("{% set q %}x{% endset %}echo {{ v }}{{ q }}");
    refused(&ff, "set q", "error: a `{% set %}…{% endset %}` block is not allowed in a command", "{% set x = … %}");
    let ff = step("{% macro m(x) %}{{ x }}{% endmacro %}echo {{ m(v) }}");
    refused(&ff, "macro m", "error: macros are not allowed in commands", "write the command out");
    let ff = step("{% include \"path:0\" %}");
    refused(&ff, "include", "error: `{% include %}` is not available in flux templates", "write the text out");
}

#[test]
fn hooks_pre_and_post_are_checked_like_run() {
    let base = "[vars]\nv = \"x\"\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"touch {{ outputs[0] }}\"\n";
    for (key, value) in [
        ("pre", "[\"echo {{ v|safe }}\"]"),
        ("post", "[\"echo {{ v|safe }}\"]"),
        ("on_success", "\"echo {{ v|safe }}\""),
        ("on_failure", "\"echo {{ v|safe }}\""),
    ] {
        let ff = format!("{base}{key} = {value}\n");
        refused(&ff, "safe }}", "`| safe` would turn off shell quoting in a command", "| raw");
    }
    // Paths and env values are never quoted: `safe` has no use there either.
    let ff = format!("{base}env = {{ X = \"{{{{ v | safe }}}}\" }}\n");
    refused(&ff, "safe }}", "error: `| safe` is not available in flux templates", "remove it");
}

#[test]
fn raw_still_passes_a_value_unquoted() {
    let t = Test::new().fluxfile(&step("{{ v | raw }} > {{ outputs[0] }}"));
    t.run_args(["build", "--var", "v=echo one two"]).assert_status(0);
    assert_eq!(t.read("a.txt"), "one two\n");
}

#[test]
fn unknown_filters_fail_check_at_the_name_with_did_you_mean() {
    let ff = "[step.a]\nparams = { date = \"date\" }\noutputs = [\"a/{{ date }}.txt\"]\n\
              run = \"ls {{ date | nosuchfilter }} > {{ outputs[0] }}\"\n";
    refused(ff, "nosuchfilter", "error: unknown filter `nosuchfilter`", "see the filters in docs/fluxfile.md");
    let ff = "[step.a]\nparams = { date = \"date\" }\noutputs = [\"a/{{ date }}.txt\"]\n\
              run = \"echo {{ date | strftme('%Y') }} > {{ outputs[0] }}\"\n";
    refused(ff, "strftme", "error: unknown filter `strftme`", "help: did you mean `strftime`?");
    // In paths too, and in multi-line strings.
    let ff = "[step.a]\nparams = { date = \"date\" }\noutputs = [\"a/{{ date | ds_nodsh }}.txt\"]\nrun = \"true\"\n";
    refused(ff, "ds_nodsh", "error: unknown filter `ds_nodsh`", "did you mean `ds_nodash`?");
    let ff = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"\"\"\necho \\\n  {{ step | uper }} > {{ outputs[0] }}\"\"\"\n";
    refused(ff, "uper", "error: unknown filter `uper`", "did you mean `upper`?");
}

#[test]
fn unknown_functions_and_tests_fail_check() {
    let ff = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo {{ date_rang('2024-01-01', '2024-01-02') | days }}\"\n";
    refused(ff, "date_rang(", "error: unknown function `date_rang`", "did you mean `date_range`?");
    let ff = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"{% if step is defind %}true{% endif %}\"\n";
    refused(ff, "defind", "error: unknown test `defind`", "did you mean `defined`?");
    let ff = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo {{ step.upper() }}\"\n";
    refused(ff, "upper()", "error: values have no method `upper` in flux templates", "use the filter: `… | upper`");
}

#[test]
fn tojson_renders_json_quoted_in_commands() {
    let ff = "[vars]\nv = \"it's\"\n\n[step.a]\nparams = { date = \"date\" }\noutputs = [\"a/{{ date }}.json\"]\n\
              run = \"echo {{ params | tojson }} {{ v | tojson }} > {{ outputs[0] }}\"\n";
    let t = Test::new().fluxfile(ff);
    t.run_args(["build", "--date", "2024-01-05"]).assert_status(0);
    assert_eq!(t.read("a/2024-01-05.json"), "{\"date\":\"2024-01-05\"} \"it's\"\n");
}

#[test]
fn length_of_a_shell_variable_survives_templating() {
    let t = Test::new().fluxfile(&step("x=abc; echo ${#x} > {{ outputs[0] }}"));
    t.run_args(["check"]).assert_status(0);
    t.run_args(["build"]).assert_status(0);
    assert_eq!(t.read("a.txt"), "3\n");
}

#[test]
fn length_of_a_bash_array_and_a_literal_brace_hash_survive() {
    let t = Test::new().fluxfile(&step(
        "bash -c \"arr=(a b); echo \\${#arr[@]}\" > {{ outputs[0] }}; echo \"{# not a comment #}\" >> {{ outputs[0] }}",
    ));
    t.run_args(["build"]).assert_status(0);
    assert_eq!(t.read("a.txt"), "2\n{# not a comment #}\n");
}

#[test]
fn comments_are_written_with_double_braces() {
    let t = Test::new().fluxfile(&step("echo a{{# a note, not run: {{ v }} #}}b > {{ outputs[0] }}"));
    t.run_args(["build"]).assert_status(0);
    assert_eq!(t.read("a.txt"), "ab\n");
}

#[test]
fn a_syntax_error_points_at_its_opening_tag() {
    let ff = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo ${#x} {{ outputs[0] > x\"\n";
    refused(ff, "{{ outputs", "error: bad template: syntax error", "close it with `}}`");
    let ff = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"printf '{%s}' a > {{ outputs[0] }}\"\n";
    refused(ff, "{%s", "error: bad template: syntax error", "use {{ '{%' }}");
    let ff = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"{% for i in [1] %}touch {{ outputs[0] }}\"\n";
    refused(ff, "{% for", "error: bad template: syntax error", "close it with `{% endfor %}`");
}

#[test]
fn an_output_index_past_the_outputs_fails_check() {
    let ff = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo x > {{ outputs[1] }}\"\n";
    let out = refused(ff, "outputs[1]", "error: `outputs[1]` does not exist: the step has one output", "fix the index");
    // A dry run and a build stop there too, before anything runs.
    let t = Test::new().fluxfile(ff);
    for args in [["build", "-n"], ["build", "-v"]] {
        t.run_args(args).assert_status(2).stderr_has(&out.stderr);
    }
    assert!(!t.exists("a.txt") && !t.exists(".flux"));
}

#[test]
fn a_dry_run_renders_every_command_it_would_run() {
    // Checked statically only for constant indexes; here the index is a value.
    let ff = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo x > {{ outputs[attempt] }}\"\n";
    let t = Test::new().fluxfile(ff);
    t.run_args(["check"]).assert_status(0);
    t.run_args(["build", "-n"])
        .assert_status(2)
        .stderr_has("error: a: cannot render `echo x > {{ outputs[attempt] }}`")
        .stderr_has(&at(ff, "{{ outputs[attempt] }}"))
        .stderr_has("the build would fail this task");
    assert!(!t.exists(".flux/state.db"));
    // The build itself fails the task.
    t.run_args(["build"])
        .stderr_has("FAIL a: a: cannot render `echo x > {{ outputs[attempt] }}`: `outputs[...]` is undefined")
        .assert_status(1);
}

#[test]
fn a_dry_run_renders_pre_post_env_and_hooks_of_tasks_that_would_run() {
    let base =
        "[step.a]\nparams = { date = \"date\" }\noutputs = [\"a/{{ date }}.txt\"]\nrun = \"touch {{ outputs[0] }}\"\n";
    for (extra, needle) in [
        ("pre = [\"echo {{ inputs[3 - 1] }}\"]\n", "{{ inputs[3 - 1] }}"),
        ("post = [\"echo {{ date | add_hours(1) }}\"]\n", "{{ date | add_hours(1) }}"),
        ("env = { X = \"{{ date | days }}\" }\n", "{{ date | days }}"),
        ("on_failure = \"echo {{ date | add_hours(2) }}\"\n", "{{ date | add_hours(2) }}"),
    ] {
        let ff = format!("{base}{extra}");
        let t = Test::new().fluxfile(&ff);
        t.run_args(["build", "-n", "--date", "2024-01-05"])
            .assert_status(2)
            .stderr_has("error: a[2024-01-05]: ")
            .stderr_has(&at(&ff, needle))
            .stderr_has("the build would fail this task");
    }
}

#[test]
fn a_good_dry_run_still_exits_zero_and_writes_nothing() {
    let t = Test::new().fluxfile(&step("x=abc; echo ${#x} {{ v }} > {{ outputs[0] }}"));
    t.run_args(["build", "-n"]).assert_status(0).stdout_has("a");
    assert!(!t.exists("a.txt"));
}

#[test]
fn a_dry_run_renders_a_command_that_fails_for_some_tasks_only() {
    // `inputs[1]` (yesterday's output) exists on every day but the first, which has no
    // yesterday before `start`: the dry run must render this step's commands to find the
    // day the build would fail. (Steps whose templates cannot fail are not rendered.)
    let ff = r#"[flux]
start = "2024-01-01"

[step.a]
params = { date = "date" }
outputs = ["a/{{ date }}.txt"]
run = "echo {{ date }} > {{ outputs[0] }}"

[step.b]
params = { date = "date" }
inputs = ["a/{{ date }}.txt", "b/{{ date | add_days(-1) }}.txt"]
outputs = ["b/{{ date }}.txt"]
run = "cat {{ inputs[1] }} > {{ outputs[0] }}"
"#;
    let t = Test::new().fluxfile(ff);
    t.run_args(["build", "-n", "--date-range", "2024-01-01..2024-01-03"])
        .assert_status(2)
        .stderr_has("error: b[2024-01-01]: cannot render `cat {{ inputs[1] }} > {{ outputs[0] }}`")
        .stderr_has("the build would fail this task");
    // Guarded, it renders on every day: the dry run says what would run.
    let guarded = ff.replace("cat {{ inputs[1] }}", "{% if inputs | length > 1 %}cat {{ inputs[1] }}{% endif %}");
    let t2 = Test::new().fluxfile(&guarded);
    t2.run_args(["build", "-n", "--date-range", "2024-01-01..2024-01-03"])
        .assert_status(0)
        .stdout_has("would run b[2024-01-01] (missing-output)")
        .stdout_has("dry run: 6 tasks would run, 0 up to date");
    assert!(!t2.exists(".flux/state.db"));
    assert!(!t.exists(".flux/state.db"));
}
