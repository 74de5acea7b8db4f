//! Unit tests of the template engine: filters, quoting, inversion, the fast path.

use super::*;

struct Ctx {
    params: Vec<(&'static str, String)>,
    vars: Vec<(String, String)>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    extra: Vec<(&'static str, String)>,
}

impl Ctx {
    fn new() -> Ctx {
        Ctx {
            params: vec![("date", "2024-01-05".into()), ("region", "eu".into())],
            vars: vec![
                ("root".into(), "data".into()),
                ("evil".into(), "hi; touch pwned".into()),
                ("sub".into(), "$(rm -rf /)".into()),
                ("quote".into(), "a'b".into()),
                ("empty".into(), String::new()),
                ("month".into(), "2024-02".into()),
                ("hour".into(), "2024-03-01T02".into()),
                ("spaced".into(), "my dir/b c.txt".into()),
            ],
            inputs: vec!["a.txt".into(), "b c.txt".into(), "dir/x'y.csv".into()],
            outputs: vec!["out/r.csv".into()],
            extra: vec![("attempt", "2".into()), ("run_id", "r-7".into())],
        }
    }

    fn ctx(&self, with_lists: bool) -> Context<'_> {
        Context {
            step: "rollup",
            task: "rollup[2024-01-05]",
            params: &self.params,
            vars: &self.vars,
            inputs: with_lists.then_some(self.inputs.as_slice()),
            outputs: with_lists.then_some(self.outputs.as_slice()),
            extra: &self.extra,
        }
    }
}

fn render(src: &str, mode: Mode) -> Result<String, String> {
    let c = Ctx::new();
    let mut e = Engine::new();
    let id = e.compile(src, mode).map_err(|e| e.message)?;
    e.render(id, &c.ctx(true))
}
fn cmd(src: &str) -> String {
    render(src, Mode::Command).unwrap_or_else(|e| panic!("{src}: {e}"))
}
fn path(src: &str) -> String {
    render(src, Mode::Path).unwrap_or_else(|e| panic!("{src}: {e}"))
}
fn err(src: &str) -> String {
    match render(src, Mode::Path) {
        Ok(s) => panic!("{src} rendered {s:?}"),
        Err(e) => e,
    }
}
fn q(s: &str) -> String {
    let mut o = String::new();
    shell_quote(s, &mut o);
    o
}

#[test]
fn quoting_rules() {
    assert_eq!(q("plain-word_1.2/x:y=z@a%b+c,d"), "plain-word_1.2/x:y=z@a%b+c,d");
    assert_eq!(q(""), "''");
    assert_eq!(q("hi; touch pwned"), "'hi; touch pwned'");
    assert_eq!(q("$(rm -rf /)"), "'$(rm -rf /)'");
    assert_eq!(q("a'b"), "'a'\\''b'");
    assert_eq!(q("'"), "''\\'''");
    assert_eq!(q("`id`"), "'`id`'");
    assert_eq!(q("a\nb"), "'a\nb'");
    assert_eq!(q("~"), "'~'");
    assert_eq!(q("*"), "'*'");
    assert_eq!(q("é"), "'é'");
}

#[test]
fn quoting_survives_a_real_shell() {
    let nasty = ["hi; touch pwned", "$(rm -rf /)", "a'b", "", "''", "\\", "a\"b", "x\ny", "$HOME", "!x", "-n"];
    for s in nasty {
        let mut script = String::from("printf '%s' ");
        shell_quote(s, &mut script);
        let out = std::process::Command::new("sh").arg("-c").arg(&script).output();
        if let Ok(out) = out {
            assert_eq!(String::from_utf8_lossy(&out.stdout), s, "{script}");
        }
    }
}

#[test]
fn commands_quote_every_value() {
    assert_eq!(cmd("echo {{ evil }}"), "echo 'hi; touch pwned'");
    assert_eq!(cmd("echo {{ sub }}"), "echo '$(rm -rf /)'");
    assert_eq!(cmd("echo {{ quote }}"), "echo 'a'\\''b'");
    assert_eq!(cmd("echo {{ empty }}"), "echo ''");
    assert_eq!(cmd("echo {{ vars.evil }}"), "echo 'hi; touch pwned'");
    assert_eq!(cmd("echo {{ params['date'] }}"), "echo 2024-01-05");
    assert_eq!(cmd("echo {{ evil ~ '!' }}"), "echo 'hi; touch pwned!'");
    assert_eq!(cmd("echo {{ evil | upper }}"), "echo 'HI; TOUCH PWNED'");
    assert_eq!(cmd("cat {{ inputs }}"), "cat a.txt 'b c.txt' 'dir/x'\\''y.csv'");
    assert_eq!(cmd("cat {{ inputs[1] }} > {{ outputs[0] }}"), "cat 'b c.txt' > out/r.csv");
    assert_eq!(cmd("cat {{ inputs[-1] }}"), "cat 'dir/x'\\''y.csv'");
    assert_eq!(cmd("n={{ inputs | length }}"), "n=3");
    assert_eq!(cmd("n={{ 1 + 2 }} {{ 1.5 }} {{ true }}"), "n=3 1.5 True");
    assert_eq!(cmd("a={{ attempt }} {{ attempt + 1 }} {{ run_id }}"), "a=2 3 r-7");
    assert_eq!(cmd("{% for i in inputs %}[{{ i }}]{% endfor %}"), "[a.txt]['b c.txt']['dir/x'\\''y.csv']");
    assert_eq!(cmd("{{ inputs | join(' ') }}"), "'a.txt b c.txt dir/x'\\''y.csv'");
    assert_eq!(cmd("{{ [] }}x"), "x");
}

#[test]
fn raw_opts_out() {
    assert_eq!(cmd("echo {{ evil | raw }}"), "echo hi; touch pwned");
    assert_eq!(cmd("cat {{ inputs | raw }}"), "cat a.txt b c.txt dir/x'y.csv");
    assert_eq!(cmd("echo {{ vars.sub | raw }}"), "echo $(rm -rf /)");
    assert_eq!(path("{{ inputs | raw }}"), "a.txt b c.txt dir/x'y.csv");
    assert_eq!(path("{{ evil | raw }}"), "hi; touch pwned");
    assert_eq!(cmd("{{ inputs | basename | raw }}"), "a.txt b c.txt x'y.csv");
}

#[test]
fn path_mode_is_unquoted() {
    assert_eq!(path("{{ root }}/{{ evil }}"), "data/hi; touch pwned");
    assert_eq!(path("{{ inputs }}"), "a.txt\nb c.txt\ndir/x'y.csv");
    assert_eq!(path("{{ month | days }}").lines().count(), 29);
    assert_eq!(path("{{ step }} {{ task }}"), "rollup rollup[2024-01-05]");
    assert_eq!(path("line1\n{{ date }}\n"), "line1\n2024-01-05\n");
    assert_eq!(path("{% for d in month | days %}{{ root }}/{{ d }}.csv\n{% endfor %}").lines().count(), 29);
}

#[test]
fn time_filters() {
    let cases = [
        ("{{ date | add_days(1) }}", "2024-01-06"),
        ("{{ date | add_days(-5) }}", "2023-12-31"),
        ("{{ '2024-02-28' | add_days(1) }}", "2024-02-29"),
        ("{{ '2023-02-28' | add_days(1) }}", "2023-03-01"),
        ("{{ '2024-03-01' | add_days(-1) }}", "2024-02-29"),
        ("{{ hour | add_days(1) }}", "2024-03-02T02"),
        ("{{ hour | add_days(-1) }}", "2024-02-29T02"),
        ("{{ hour | add_hours(22) }}", "2024-03-02T00"),
        ("{{ hour | add_hours(-3) }}", "2024-02-29T23"),
        ("{{ '2024-01-31' | add_months(1) }}", "2024-02-29"),
        ("{{ '2023-01-31' | add_months(1) }}", "2023-02-28"),
        ("{{ '2024-03-31' | add_months(-1) }}", "2024-02-29"),
        ("{{ '2024-01-31T05' | add_months(1) }}", "2024-02-29T05"),
        ("{{ month | add_months(-2) }}", "2023-12"),
        ("{{ month | add_months(11) }}", "2025-01"),
        ("{{ date | strftime('%Y/%m') }}", "2024/01"),
        ("{{ date | strftime(\"%d.%m.%Y\") }}", "05.01.2024"),
        ("{{ hour | strftime('%Y%m%d-%H') }}", "20240301-02"),
        ("{{ month | strftime('%Y_%m_%d') }}", "2024_02_01"),
        ("{{ date | strftime('%A') }}", "Friday"),
        ("{{ date | ds_nodash }}", "20240105"),
        ("{{ hour | ds_nodash }}", "2024030102"),
        ("{{ month | ds_nodash }}", "202402"),
        ("{{ date | add_days(1) | ds_nodash }}", "20240106"),
        ("{{ '9999-12-31' | add_days(0) }}", "9999-12-31"),
    ];
    for (src, want) in cases {
        assert_eq!(path(src), want, "{src}");
        assert_eq!(cmd(src), q(want), "{src}");
    }
    assert_eq!(cmd("{{ date | strftime('%Y %m') }}"), "'2024 01'");
}

#[test]
fn filter_errors_are_clear() {
    let cases = [
        (
            "{{ evil | add_days(1) }}",
            "add_days: `hi; touch pwned` is not a date (YYYY-MM-DD), an hour (YYYY-MM-DDTHH) or a month (YYYY-MM)",
        ),
        ("{{ month | add_days(1) }}", "add_days: `2024-02` is a month; use add_months"),
        ("{{ date | add_hours(1) }}", "add_hours: `2024-01-05` is a date, not an hour (YYYY-MM-DDTHH); use add_days"),
        ("{{ '9999-12-31' | add_days(1) }}", "add_days(1) on `9999-12-31` goes outside the years 0000 to 9999"),
        (
            "{{ date | add_days(9223372036854775807) }}",
            "add_days(9223372036854775807) on `2024-01-05` goes outside the years 0000 to 9999",
        ),
        (
            "{{ hour | add_days(-9223372036854775807) }}",
            "add_days(-9223372036854775807) on `2024-03-01T02` goes outside the years 0000 to 9999",
        ),
        (
            "{{ date | add_months(-9223372036854775807) }}",
            "add_months(-9223372036854775807) on `2024-01-05` goes outside the years 0000 to 9999",
        ),
        (
            "{{ date | strftime('%Q') }}",
            "strftime: `%Q` is not a valid format (use chrono's specifiers such as %Y, %m, %d, %H)",
        ),
        (
            "{{ date | strftime('%z') }}",
            "strftime: `%z` is not a valid format (use chrono's specifiers such as %Y, %m, %d, %H)",
        ),
        (
            "{{ root | ds_nodash }}",
            "ds_nodash: `data` is not a date (YYYY-MM-DD), an hour (YYYY-MM-DDTHH) or a month (YYYY-MM)",
        ),
        (
            "{{ inputs | add_days(1) }}",
            "add_days takes a date (YYYY-MM-DD), an hour (YYYY-MM-DDTHH) or a month (YYYY-MM), not a sequence",
        ),
        (
            "{{ date | days }}",
            "days: `2024-01-05` is not a month (YYYY-MM) or a week (YYYY-Www); days lists the dates of a month, a week or of date_range(a, b)",
        ),
        ("{{ month | add_hours(1) }}", "add_hours: `2024-02` is a month, not an hour (YYYY-MM-DDTHH); use add_months"),
        (
            "{{ date_range('2024-01-05', '2024-01-01') }}",
            "date_range: `2024-01-05..2024-01-01` is empty: `2024-01-01` comes before `2024-01-05`; write the earlier end first",
        ),
        ("{{ hour | hours }}", "hours: `2024-03-01T02` is not a date (YYYY-MM-DD) or a month (YYYY-MM)"),
    ];
    for (src, want) in cases {
        let got = err(src);
        assert!(got.starts_with(want), "{src}:\n got {got}\nwant {want}");
        assert!(got.ends_with("`)"), "{src}: {got}");
    }
    assert_eq!(err("{{ month | add_days(1) }}"), "add_days: `2024-02` is a month; use add_months (in `add_days(1)`)");
    assert_eq!(
        err("a\n{{ date | strftime('%Q') }}"),
        "strftime: `%Q` is not a valid format (use chrono's specifiers such as %Y, %m, %d, %H) (line 2, in `strftime('%Q')`)"
    );
    // Unknown filters do not compile (see template::check).
    let bad = Engine::new().compile("{{ date | nofilter }}", Mode::Path).unwrap_err();
    assert_eq!((bad.message.as_str(), bad.offset, bad.len), ("unknown filter `nofilter`", Some(10), 8));
}

#[test]
fn days_hours_and_date_range() {
    assert_eq!(
        path("{{ month | days | first }} {{ month | days | last }} {{ month | days | length }}"),
        "2024-02-01 2024-02-29 29"
    );
    assert_eq!(path("{{ '2023-02' | days | length }}"), "28");
    assert_eq!(path("{{ '2024-12' | days | last }}"), "2024-12-31");
    assert_eq!(path("{{ date_range('2024-02-27', '2024-03-01') }}"), "2024-02-27\n2024-02-28\n2024-02-29\n2024-03-01");
    assert_eq!(cmd("{{ date_range('2024-02-28', '2024-03-01') | days }}"), "2024-02-28 2024-02-29 2024-03-01");
    assert_eq!(path("{{ date_range(date, date | add_days(1)) | join(',') }}"), "2024-01-05,2024-01-06");
    assert_eq!(
        path("{{ date | hours | length }} {{ date | hours | first }} {{ date | hours | last }}"),
        "24 2024-01-05T00 2024-01-05T23"
    );
    assert_eq!(path("{{ date_range('2024-01-01', '2024-01-02') | hours | length }}"), "48");
    assert_eq!(path("{{ '2024-02' | hours | length }}"), "696");
    assert_eq!(
        path(
            "{% for d in month | days %}{% if loop.first or loop.last %}{{ root }}/{{ d | ds_nodash }}.csv\n{% endif %}{% endfor %}"
        ),
        "data/20240201.csv\ndata/20240229.csv\n"
    );
}

#[test]
fn path_filters() {
    assert_eq!(path("{{ 'a/b/c.csv' | basename }}|{{ 'a/b/c.csv' | dirname }}"), "c.csv|a/b");
    assert_eq!(path("{{ 'c.csv' | basename }}|{{ 'c.csv' | dirname }}"), "c.csv|.");
    assert_eq!(path("{{ 'out/dir/' | basename }}|{{ 'out/dir/' | dirname }}"), "dir|out");
    assert_eq!(path("{{ '/x' | basename }}|{{ '/x' | dirname }}"), "x|/");
    assert_eq!(path("{{ '/' | basename }}|{{ '/' | dirname }}"), "/|/");
    assert_eq!(path("{{ '' | basename }}|{{ '' | dirname }}"), "|.");
    assert_eq!(path("{{ 's3://bkt/k/v.csv' | basename }}|{{ 's3://bkt/k/v.csv' | dirname }}"), "v.csv|s3://bkt/k");
    assert_eq!(path("{{ inputs | basename }}"), "a.txt\nb c.txt\nx'y.csv");
    assert_eq!(cmd("{{ inputs | dirname }}"), ". . dir");
    assert_eq!(cmd("{{ spaced | dirname }}"), "'my dir'");
}

#[test]
fn undefined_names_are_errors_that_name_them() {
    assert_eq!(err("{{ nope }}"), "`nope` is undefined");
    assert_eq!(err("x/{{ nope }}/y"), "`nope` is undefined");
    assert_eq!(err("{{ nope | basename }}"), "`nope` is undefined");
    assert_eq!(err("{{ nope | add_days(1) }}"), "`nope` is undefined");
    assert!(err("{{ params.nope }}").contains("params.nope"));
    assert!(err("{{ vars.nope | raw }}").contains("vars.nope"));
    assert!(err("{% if nope %}x{% endif %}").contains("nope"));
    assert!(err("{{ inputs[7] }}").contains("inputs[7]"), "{}", err("{{ inputs[7] }}"));
    // Inputs are only there for commands.
    let c = Ctx::new();
    let mut e = Engine::new();
    let id = e.compile("{{ inputs[0] }}", Mode::Path).unwrap();
    assert_eq!(e.render(id, &c.ctx(false)), Err("`inputs` is undefined".to_string()));
    let id = e.compile("a\n{{ date }}\n{{ nope }}", Mode::Path).unwrap();
    assert_eq!(e.render(id, &c.ctx(false)), Err("`nope` is undefined (line 3)".to_string()));
    let mut out = String::from("keep");
    assert!(e.render_into(id, &c.ctx(false), &mut out).is_err());
    assert_eq!(out, "keep");
    assert!(e.render(TemplateId(99), &c.ctx(false)).is_err());
}

#[test]
fn compile_errors_have_offsets() {
    let mut e = Engine::new();
    let src = "abc {{ date | }}";
    let err = e.compile(src, Mode::Path).unwrap_err();
    assert!(err.message.starts_with("bad template: syntax error"), "{}", err.message);
    // The `{{` of the tag at fault.
    assert_eq!(err.offset, Some(4), "{}", err.message);
    assert!(err.help.is_some());
    let src = "ok\n{% for x in y %}";
    let err = e.compile(src, Mode::Command).unwrap_err();
    assert_eq!(err.offset, Some(3), "{err:?}");
    assert_eq!(err.help.as_deref(), Some("close it with `{% endfor %}`"));
    let src = "{{ a b }}";
    let err = e.compile(src, Mode::Path).unwrap_err();
    assert_eq!(err.offset, Some(0), "{err:?}");
    let err = e.compile("echo ${#x} {# {{ x", Mode::Command).unwrap_err();
    assert_eq!((err.offset, err.len), (Some(14), 2), "{err:?}");
    // Failed compiles do not use up ids.
    let id = e.compile("x", Mode::Path).unwrap();
    assert_eq!(id, TemplateId(0));
    assert_eq!(e.source(id), "x");
    assert_eq!(e.source(TemplateId(7)), "");
}

#[test]
fn segments_of_an_output_template() {
    let mut e = Engine::new();
    let id = e.compile("out/{{ date | strftime(\"%Y/%m\") }}/x-{{ region }}.csv", Mode::Path).unwrap();
    assert_eq!(
        e.segments(id).unwrap(),
        &[
            Segment::Lit("out/".into()),
            Segment::Expr { name: "date".into(), index: None, filters: vec![Filter::Strftime("%Y/%m".into())] },
            Segment::Lit("/x-".into()),
            Segment::Expr { name: "region".into(), index: None, filters: vec![] },
            Segment::Lit(".csv".into()),
        ]
    );
    assert_eq!(e.names(id), ["date", "region"]);
    let id = e
        .compile(
            "{{inputs[-2]|basename|raw}} {{ d|add_days( -1 )|add_months(2)|add_hours(0)|ds_nodash()|dirname }}",
            Mode::Command,
        )
        .unwrap();
    assert_eq!(
        e.segments(id).unwrap(),
        &[
            Segment::Expr { name: "inputs".into(), index: Some(-2), filters: vec![Filter::Basename, Filter::Raw] },
            Segment::Lit(" ".into()),
            Segment::Expr {
                name: "d".into(),
                index: None,
                filters: vec![
                    Filter::AddDays(-1),
                    Filter::AddMonths(2),
                    Filter::AddHours(0),
                    Filter::DsNodash,
                    Filter::Dirname
                ],
            },
        ]
    );
    assert_eq!(e.segments(TemplateId(42)), None);
}

#[test]
fn what_goes_to_minijinja() {
    let slow = [
        "{% if true %}x{% endif %}",
        "{{# c #}}x",
        "{{ a + 1 }}",
        "{{ a | upper }}",
        "{{ a | days }}",
        "{{ a | hours }}",
        "{{ a.b }}",
        "{{- a }}",
        "{{ a -}}",
        "{{ a | raw | basename }}",
        "{{ a | strftime('%Y', 'x') }}",
        "{{ a | strftime(fmt) }}",
        "{{ a | add_days('1') }}",
        "{{ a | add_days(1.5) }}",
        "{{ a | add_days(01) }}",
        "{{ a | add_days(99999999999999999999) }}",
        "{{ a | strftime('%Y\\n') }}",
        "{{ a | basename(1) }}",
        "{{ true }}",
        "{{ none }}",
        "{{ date_range('2024-01-01', '2024-01-02') }}",
        "{{ a[b] }}",
        "{{ a['x'] }}",
        "{{ a[0][1] }}",
        "{{ 'lit' }}",
        "{{ a }}{% raw %}{{ b }}{% endraw %}",
    ];
    let mut e = Engine::new();
    for src in slow {
        let id = e.compile(src, Mode::Path).unwrap_or_else(|err| panic!("{src}: {err}"));
        assert!(e.segments(id).is_none(), "{src} should not be fast");
    }
    let fast = [
        "",
        "plain } { text }} ",
        "{{a}}",
        "{{ a }}{{ b }}",
        "{{\ta\n|\nraw\n}}",
        "{{ a | strftime('}}') }}",
        "{{ a | strftime(\"it's\") }}",
        "{{ a[0] }}",
        "{{ a [ -1 ] | basename }}",
        "{{ a | add_days(-9223372036854775808) }}",
        "x { y",
        "ends with {",
        "echo ${#x} {# y",
    ];
    for src in fast {
        let id = e.compile(src, Mode::Path).unwrap_or_else(|err| panic!("{src}: {err}"));
        assert!(e.segments(id).is_some(), "{src} should be fast");
    }
}

#[test]
fn names_of_templates() {
    let mut e = Engine::new();
    let id = e
            .compile("{% set x = root %}{{ x }}/{{ date | add_days(1) }}{{ date_range(a, b) | days }}{% for i in inputs %}{{ i }}{% endfor %}", Mode::Command)
            .unwrap();
    assert!(e.segments(id).is_none());
    assert_eq!(e.names(id), ["a", "b", "date", "inputs", "root"]);
    let id = e.compile("{{ b }}{{ a }}{{ b | raw }}", Mode::Command).unwrap();
    assert_eq!(e.names(id), ["a", "b"]);
    assert!(e.names(TemplateId(999)).is_empty());
}

#[test]
fn name_precedence_agrees() {
    // A var named like a param loses to the param; extras and built-ins win over both.
    let params = [("date", "2024-01-05".to_string()), ("step", "p".to_string())];
    let vars = [("date".to_string(), "var".to_string()), ("v".to_string(), "x".to_string())];
    let extra = [("attempt", "1".to_string()), ("v", "extra".to_string())];
    let ctx =
        Context { step: "s", task: "t", params: &params, vars: &vars, inputs: None, outputs: None, extra: &extra };
    let mut e = Engine::new();
    let src = "{{ date }} {{ step }} {{ v }} {{ attempt }} {{ vars.date }} {{ params.step }}";
    let id = e.compile(src, Mode::Path).unwrap();
    let fast = e.render(id, &ctx).unwrap();
    assert_eq!(fast, "2024-01-05 s extra 1 var p");
    let slow = e.render_slow(&e.templates[id.0 as usize], &ctx).unwrap();
    assert_eq!(fast, slow);
    let id = e.compile("{% for k in params %}{{ k }}={{ params[k] }};{% endfor %}", Mode::Path).unwrap();
    assert_eq!(e.render(id, &ctx).unwrap(), "date=2024-01-05;step=p;");
}

#[test]
fn fast_and_minijinja_agree() {
    let templates = [
        "data/{{ date }}.csv",
        "{{ root }}/raw/{{ date }}.log",
        "out/{{ date | strftime(\"%Y/%m\") }}/x-{{ region }}.csv",
        "{{ date | strftime('%Y %m') }}",
        "{{ date | strftime('%Y') }}/{{ date | strftime('%j') }}",
        "{{ date | strftime('%b-%A') }}",
        "{{ date | strftime('%%') }}",
        "{{ date | strftime('') }}",
        "{{ date | add_days(-1) }}",
        "{{ date | add_days(400) | ds_nodash }}",
        "{{ date | add_months(1) | strftime('%Y%m%d') }}",
        "{{ hour | add_hours(-25) }} {{ hour | add_days(3) | ds_nodash }}",
        "{{ month | add_months(-14) }}",
        "{{ evil }} {{ sub }} {{ quote }} {{ empty }} {{ spaced }}",
        "{{ evil | raw }} {{ quote | raw }}",
        "{{ spaced | basename }} {{ spaced | dirname | raw }}",
        "{{ inputs }}",
        "{{ inputs | raw }}",
        "{{ inputs | basename }}",
        "{{ inputs | dirname | raw }}",
        "{{ inputs[0] }} {{ inputs[1] }} {{ inputs[-1] }} {{ outputs[0] }}",
        "{{ inputs[-3] | basename }}",
        "{{ step }}/{{ task }}/{{ attempt }}/{{ run_id }}",
        "line one\n{{ date }}\n\n",
        "{{ date | ds_nodash }}{{ hour | ds_nodash }}{{ month | ds_nodash }}",
        "}}{{ date }}{",
        "x{{date|add_days(1)|add_days(-1)}}y",
        "{{ date | add_days (1) }}{{ date|strftime ('%Y') }}",
        "{{ '{' }}",
        // These fall back at render time (errors or values the fast path leaves alone).
        "{{ nope }}",
        "{{ inputs[9] }}",
        "{{ date[0] }}",
        "{{ params }}",
        "{{ root | add_days(1) }}",
        "{{ inputs | add_days(1) }}",
        "{{ date | strftime('%Q') }}",
        "{{ '9999-12-31' | add_days(1) }}",
        "{{ attempt | ds_nodash }}",
    ];
    let c = Ctx::new();
    for with_lists in [true, false] {
        let ctx = c.ctx(with_lists);
        for mode in [Mode::Path, Mode::Command] {
            let mut e = Engine::new();
            for src in templates {
                let id = e.compile(src, mode).unwrap_or_else(|err| panic!("{src}: {err}"));
                let entry = &e.templates[id.0 as usize];
                let mut fast_out = String::new();
                let fast = entry
                    .segments
                    .as_ref()
                    .and_then(|s| render_fast(s, &entry.formats, mode, &ctx, &mut fast_out))
                    .map(|()| fast_out);
                let slow = e.render_slow(entry, &ctx);
                if let Some(f) = &fast {
                    assert_eq!(Ok(f), slow.as_ref(), "{src} ({mode:?}, lists: {with_lists})");
                }
                assert_eq!(e.render(id, &ctx), slow, "{src}");
            }
        }
    }
    // The simple shapes really take the fast path.
    let mut e = Engine::new();
    for src in &templates[..28] {
        let id = e.compile(src, Mode::Command).unwrap();
        let segs = e.segments(id).unwrap_or_else(|| panic!("{src} not fast"));
        let formats = compile_formats(segs);
        let mut out = String::new();
        assert!(render_fast(segs, &formats, Mode::Command, &c.ctx(true), &mut out).is_some(), "{src}");
    }
}

#[test]
fn fast_and_minijinja_agree_on_many_values() {
    // Every value shape, with every fast filter, in both modes.
    let values = [
        "2024-01-05",
        "2024-02-29",
        "2023-12-31",
        "0000-01-01",
        "9999-12-31",
        "2024-03-01T00",
        "2024-12-31T23",
        "2024-02",
        "0000-01",
        "9999-12",
        "a b",
        "",
        "x'y",
        "dir/",
        "/",
        "a/b/c",
        "s3://b/k",
        "$(x)",
        "-1",
        "12",
        "é/ü",
    ];
    let filters = [
        "",
        "| add_days(1)",
        "| add_days(-31)",
        "| add_hours(5)",
        "| add_months(1)",
        "| add_months(-13)",
        "| strftime('%Y/%m/%d %H')",
        "| strftime('%Y-%m')",
        "| ds_nodash",
        "| basename",
        "| dirname",
        "| raw",
        "| add_days(1) | raw",
        "| dirname | basename",
    ];
    for mode in [Mode::Path, Mode::Command] {
        let mut e = Engine::new();
        for v in values {
            let vars = vec![("v".to_string(), v.to_string())];
            let lists = vec![v.to_string(), format!("{v}/z")];
            let ctx = Context {
                step: "s",
                task: "t",
                params: &[],
                vars: &vars,
                inputs: Some(&lists),
                outputs: None,
                extra: &[],
            };
            for f in filters {
                for name in ["v", "inputs", "inputs[1]"] {
                    let src = format!("<{{{{ {name} {f} }}}}>");
                    let id = e.compile(&src, mode).unwrap();
                    let entry = &e.templates[id.0 as usize];
                    let segs = entry.segments.as_ref().unwrap_or_else(|| panic!("{src}"));
                    let mut out = String::new();
                    let fast = render_fast(segs, &entry.formats, mode, &ctx, &mut out).map(|()| out);
                    let slow = e.render_slow(entry, &ctx);
                    if let Some(fast) = fast {
                        assert_eq!(Ok(fast), slow, "{src} with {v:?} ({mode:?})");
                    } else {
                        assert!(slow.is_err(), "{src} with {v:?}: {slow:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn hand_written_strftime_agrees_with_chrono() {
    let formats = [
        "%Y",
        "%m",
        "%d",
        "%H",
        "%y",
        "%C",
        "%j",
        "%M%S",
        "%Y/%m/%d",
        "%Y-%m-%dT%H",
        "x%%y",
        "%Y%m%d%H",
        "dt=%Y-%m-%d/hr=%H",
        "",
        "%%",
        "ünï %Y",
    ];
    let values: Vec<ParamValue> = ["0000-01-01", "0099-12-31", "1900-02-28", "2000-02-29", "2024-12-31", "9999-12-31"]
        .iter()
        .flat_map(|d| {
            [
                ParamKind::Date.parse(d).unwrap(),
                ParamKind::Hour.parse(&format!("{d}T07")).unwrap(),
                ParamKind::Month.parse(&d[..7]).unwrap(),
            ]
        })
        .chain((0..3000).map(|i| ParamValue::Hour(i * 997 - 900_000)))
        .collect();
    for fmt in formats {
        let fast = TimeFormat::compile(fmt);
        assert!(matches!(fast, TimeFormat::Fast(_)), "{fmt}");
        let slow = TimeFormat::Chrono(fmt.to_owned());
        for v in &values {
            let (mut a, mut b) = (String::new(), String::new());
            fast.write(*v, &mut a).unwrap();
            slow.write(*v, &mut b).unwrap();
            assert_eq!(a, b, "{fmt} {v:?}");
        }
    }
    assert!(TimeFormat::compile("%Y/%m").shell_safe());
    assert!(!TimeFormat::compile("%Y %m").shell_safe());
    assert!(!TimeFormat::compile("").shell_safe());
    assert!(matches!(TimeFormat::compile("%A"), TimeFormat::Chrono(_)));
    assert!(matches!(TimeFormat::compile("%-d"), TimeFormat::Chrono(_)));
    assert!(matches!(TimeFormat::compile("%"), TimeFormat::Chrono(_)));
    let mut out = String::from(">");
    assert_eq!(strftime("2021-11-27T13", "%Y%m%d%H", &mut out), Ok(()));
    assert_eq!(strftime("2021-11", "%d %B", &mut out), Ok(()));
    assert!(strftime("2021-11", "%Q", &mut out).is_err());
    assert!(strftime("nope", "%Y", &mut out).is_err());
    assert_eq!(out, ">202111271301 November");
}

/// The path of a dated output renders on the fast path (no minijinja): what makes it
/// cheap, checked by structure rather than by a clock (its speed is measured in release
/// builds by bench/, not in a debug test on a shared machine).
#[test]
fn a_date_path_renders_on_the_fast_path() {
    let c = Ctx::new();
    let ctx = c.ctx(false);
    let mut e = Engine::new();
    let id = e.compile("data/{{ date }}.csv", Mode::Path).unwrap();
    let segs = e.segments(id).expect("data/{{ date }}.csv takes the fast path");
    let formats = compile_formats(segs);
    let mut out = String::new();
    assert!(render_fast(segs, &formats, Mode::Path, &ctx, &mut out).is_some(), "rendered without falling back");
    assert_eq!(out, "data/2024-01-05.csv");
    assert_eq!(e.render(id, &ctx).unwrap(), out);
}

#[test]
fn trailing_newlines_are_kept() {
    assert_eq!(path("{{ date }}\n"), "2024-01-05\n");
    assert_eq!(path("{% if true %}a{% endif %}\n"), "a\n");
}

#[test]
fn the_checked_names_are_the_registered_ones() {
    let e = Engine::new();
    let run = |src: &str| e.env.render_str(src, minijinja::context! { x => "2024-01-05" });
    for f in check::FILTERS {
        let r = run(&format!("{{{{ x | {f} }}}}"));
        assert!(!matches!(&r, Err(err) if err.kind() == ErrorKind::UnknownFilter), "{f}: {r:?}");
    }
    for f in check::QUOTING_FILTERS.iter().chain(&["nosuch", "urlencode"]) {
        let r = run(&format!("{{{{ x | {f} }}}}"));
        assert!(matches!(&r, Err(err) if err.kind() == ErrorKind::UnknownFilter), "{f}: {r:?}");
    }
    for t in check::TESTS {
        let r = run(&format!("{{% if x is {t} %}}{{% endif %}}"));
        assert!(!matches!(&r, Err(err) if err.kind() == ErrorKind::UnknownTest), "{t}: {r:?}");
    }
    for f in check::FUNCTIONS {
        assert!(e.env.globals().any(|(g, _)| g == *f), "{f}");
    }
}

#[test]
fn tojson_is_quoted_in_commands() {
    let c = Ctx::new();
    let mut e = Engine::new();
    let id = e.compile("{{ params | tojson }}", Mode::Command).unwrap();
    let out = e.render(id, &c.ctx(false)).unwrap();
    assert!(out.starts_with("'{\"") && out.ends_with("}'"), "{out}");
    let id = e.compile("{{ evil | tojson }}", Mode::Path).unwrap();
    assert!(e.render(id, &c.ctx(false)).unwrap().starts_with('"'));
}

#[test]
fn engine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
}
