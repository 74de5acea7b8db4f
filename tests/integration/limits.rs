//! flux must not panic, hang or exhaust memory on any Fluxfile: numeric keys are bounded
//! at load (or saturate where used), planning stops at `[flux] max_tasks` and on a step that
//! reads a later interval of itself with no `end`, errors carry a location and quote long
//! lines in a window, generators have a timeout and are not waited on past their own exit,
//! and `flux graph` is linear in the number of steps.

use std::time::Duration;

use proptest::prelude::*;

use crate::test::*;

/// An error with a location: ` --> FILE:LINE:COL` under the first line.
#[track_caller]
fn assert_located(o: &Output, file: &str) {
    let re_ok = o.stderr().lines().any(|l| {
        l.trim_start().strip_prefix("--> ").and_then(|r| r.strip_prefix(file)).is_some_and(|r| {
            let mut it = r.split(':');
            it.next() == Some("")
                && it.next().is_some_and(|n| n.parse::<u32>().is_ok())
                && it.next().is_some_and(|n| n.parse::<u32>().is_ok())
        })
    });
    assert!(re_ok, "the error carries no {file}:line:col\n{}", o.describe());
}

// ---- 1. numeric keys ----

#[test]
fn retry_backoff_that_would_overflow_a_delay_is_an_error_at_load() {
    let o = Test::new()
        .fluxfile("[step.a]\noutputs = [\"a\"]\nrun = \"touch a\"\nretries = 2\nretry_backoff = 1e308\n")
        .args(["check"])
        .run();
    o.assert_status(2).stderr_has("`retry_backoff` must be a number between 1 and 100");
    assert_located(&o, "Fluxfile");
    o.stderr_has("Fluxfile:5:17");
}

#[test]
fn every_numeric_key_out_of_bounds_is_an_error_naming_its_place() {
    let step = "[step.a]\noutputs = [\"a\"]\nrun = \"touch a\"\n";
    let cases: &[(&str, &str)] = &[
        ("[flux]\njobs = 1025\n", "`jobs`"),
        ("[flux]\njobs = 0\n", "`jobs`"),
        ("[flux]\nmax_tasks = 0\n", "`max_tasks`"),
        ("[flux]\nmax_tasks = 99999999999\n", "`max_tasks`"),
        ("[flux]\ngenerate_timeout = \"0\"\n", "`generate_timeout`"),
        ("[flux]\ngenerate_timeout = \"366d\"\n", "`generate_timeout`"),
        ("[pools]\ndb = 1000001\n", "pool `db`"),
        ("[notify]\nwebhook = \"http://127.0.0.1:9/\"\nretries = 11\n", "`retries`"),
        ("[notify]\nwebhook = \"http://127.0.0.1:9/\"\ntimeout = \"99999999999d\"\n", "`timeout`"),
        ("retries = 1001\n", "`retries`"),
        ("retries = 99999999999999999999\n", "`retries`"),
        ("retry_delay = \"366d\"\n", "`retry_delay`"),
        ("retry_delay = \"18446744073709551615s\"\n", "`retry_delay`"),
        ("timeout = \"99999999999d\"\n", "`timeout`"),
        ("timeout = \"0\"\n", "`timeout`"),
        ("wait = \"400d\"\n", "`wait`"),
        ("poll = \"400d\"\n", "`poll`"),
        ("retry_backoff = inf\n", "`retry_backoff`"),
        ("retry_backoff = nan\n", "`retry_backoff`"),
        ("retry_backoff = 101\n", "`retry_backoff`"),
        ("cpus = 65537\n", "`cpus`"),
        ("cpus = 0\n", "`cpus`"),
        ("mem = \"2P\"\n", "`mem`"),
        ("mem = \"99999999999999999999\"\n", "is not a valid size"),
    ];
    for (extra, needle) in cases {
        let text = if extra.starts_with('[') { format!("{extra}\n{step}") } else { format!("{step}{extra}") };
        let o = Test::new().fluxfile(&text).args(["check"]).run();
        o.assert_status(2).stderr_has(needle);
        assert_located(&o, "Fluxfile");
    }
    // The bounds themselves are fine.
    let ok = format!(
        "[flux]\njobs = 1024\nmax_tasks = 1000000000\ngenerate_timeout = \"365d\"\n[pools]\ndb = 1000000\n{step}retries = 1000\nretry_delay = \"365d\"\ntimeout = \"365d\"\nwait = \"365d\"\npoll = \"365d\"\nretry_backoff = 100\ncpus = 65536\nmem = \"1P\"\npriority = -9223372036854775808\npool = \"db\"\n"
    );
    Test::new().fluxfile(&ok).args(["check"]).run().assert_status(0);
}

#[test]
fn jobs_and_wait_on_the_command_line_are_bounded() {
    let t = Test::new().fluxfile("[step.a]\noutputs = [\"a\"]\nrun = \"touch {{ outputs[0] }}\"\n");
    t.run_args(["build", "-j", "18446744073709551615"]).assert_status(2).stderr_has("-j");
    t.run_args(["build", "--wait", "99999999999d"]).assert_status(2).stderr_has("--wait");
    t.run_args(["build", "--wait", "365d", "-j", "1024"]).assert_status(0);
}

/// Values at and beyond every edge for each numeric key (as TOML source text), and
/// ordinary values often enough that many cases load and reach a real build.
fn int_value() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => (1i64..4).prop_map(|n| n.to_string()),
        1 => Just("-9223372036854775808".to_string()),
        1 => Just("-1".to_string()),
        1 => Just("0".to_string()),
        1 => Just("1".to_string()),
        1 => Just("2".to_string()),
        1 => Just("3".to_string()),
        1 => Just("100".to_string()),
        1 => Just("1000".to_string()),
        1 => Just("1001".to_string()),
        1 => Just("1024".to_string()),
        1 => Just("65536".to_string()),
        1 => Just("4294967295".to_string()),
        1 => Just("4294967296".to_string()),
        1 => Just("9223372036854775807".to_string()),
        1 => Just("99999999999999999999".to_string()),
        1 => Just("1.5".to_string()),
        1 => Just("\"7\"".to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (0i64..5000).prop_map(|n| n.to_string()),
    ]
}

fn float_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("1e308".to_string()),
        4 => (1.0f64..200.0).prop_map(|f| format!("{f:?}")),
        1 => Just("-1e308".to_string()),
        1 => Just("inf".to_string()),
        1 => Just("-inf".to_string()),
        1 => Just("nan".to_string()),
        1 => Just("0".to_string()),
        1 => Just("0.5".to_string()),
        1 => Just("1".to_string()),
        1 => Just("2".to_string()),
        1 => Just("100".to_string()),
        1 => Just("100.0001".to_string()),
        1 => Just("9223372036854775807".to_string()),
    ]
}

fn duration_value() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => (1u64..3000).prop_map(|n| format!("\"{n}ms\"")),
        1 => Just("\"0\"".to_string()),
        1 => Just("\"1ms\"".to_string()),
        1 => Just("\"10ms\"".to_string()),
        1 => Just("\"2s\"".to_string()),
        1 => Just("\"365d\"".to_string()),
        1 => Just("\"366d\"".to_string()),
        1 => Just("\"18446744073709551615s\"".to_string()),
        1 => Just("\"18446744073709551615d\"".to_string()),
        1 => Just("\"99999999999999999999999d\"".to_string()),
        1 => Just("\"1d23h59m59s999ms\"".to_string()),
        1 => Just("\"-1s\"".to_string()),
        1 => Just("5".to_string()),
    ]
}

fn size_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("\"1M\"".to_string()),
        1 => Just("\"0\"".to_string()),
        1 => Just("\"1\"".to_string()),
        1 => Just("\"512M\"".to_string()),
        1 => Just("\"1P\"".to_string()),
        1 => Just("\"2P\"".to_string()),
        1 => Just("\"16E\"".to_string()),
        1 => Just("\"18446744073709551615\"".to_string()),
        1 => Just("\"99999999999999999999G\"".to_string()),
        1 => Just("\"-1G\"".to_string()),
    ]
}

/// Delays a real build waits out in full when a task is retried: kept short there.
fn short_delay() -> impl Strategy<Value = String> {
    prop_oneof![Just("\"0\"".to_string()), Just("\"1ms\"".to_string()), Just("\"5ms\"".to_string())]
}

/// Timeouts a real build's tasks live with: no shorter than a task needs.
fn build_timeout() -> impl Strategy<Value = String> {
    prop_oneof![Just("\"30s\"".to_string()), Just("\"365d\"".to_string()), Just("\"366d\"".to_string())]
}

/// The numeric keys of one case, each left out (its default) or given an extreme value.
#[derive(Debug, Clone)]
struct Numbers {
    flux: Vec<(&'static str, Option<String>)>,
    notify: Vec<(&'static str, Option<String>)>,
    pool: Option<String>,
    step: Vec<(&'static str, Option<String>)>,
    /// `retry_delay` and `timeout` for the real build, whose retries wait in full.
    build_retry_delay: String,
    build_timeout: Option<String>,
}

fn some<S: Strategy<Value = String>>(s: S) -> impl Strategy<Value = Option<String>> {
    proptest::option::weighted(0.4, s)
}

fn numbers() -> impl Strategy<Value = Numbers> {
    (
        (some(int_value()), some(int_value()), some(duration_value())),
        (some(int_value()), some(duration_value()), some(int_value())),
        (some(int_value()), some(duration_value()), some(float_value()), some(duration_value())),
        (some(duration_value()), some(duration_value()), some(int_value()), some(size_value()), some(int_value())),
        (short_delay(), some(build_timeout())),
    )
        .prop_map(
            |(
                (jobs, max_tasks, generate_timeout),
                (notify_retries, notify_timeout, pool),
                (retries, retry_delay, retry_backoff, timeout),
                (wait, poll, cpus, mem, priority),
                (build_retry_delay, build_timeout),
            )| Numbers {
                flux: vec![("jobs", jobs), ("max_tasks", max_tasks), ("generate_timeout", generate_timeout)],
                notify: vec![("retries", notify_retries), ("timeout", notify_timeout)],
                pool,
                step: vec![
                    ("retries", retries),
                    ("retry_delay", retry_delay),
                    ("retry_backoff", retry_backoff),
                    ("timeout", timeout),
                    ("wait", wait),
                    ("poll", poll),
                    ("cpus", cpus),
                    ("mem", mem),
                    ("priority", priority),
                ],
                build_retry_delay,
                build_timeout,
            },
        )
}

fn keys(list: &[(&str, Option<String>)], skip: &[&str]) -> String {
    list.iter()
        .filter(|(k, _)| !skip.contains(k))
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} = {v}\n")))
        .collect()
}

/// A Fluxfile using the case's numeric keys. `flaky` fails its first two attempts, so that
/// two retries (and the backoff between them) happen in a real build when `retries` allows.
fn numbers_fluxfile(n: &Numbers, for_build: bool) -> String {
    let mut flux = format!("[flux]\nstart = \"2024-01-01\"\n{}\n", keys(&n.flux, &[]));
    // A webhook only where nothing runs: a refused POST is retried with backoff.
    if !for_build && n.notify.iter().any(|(_, v)| v.is_some()) {
        flux.push_str(&format!("[notify]\nwebhook = \"http://127.0.0.1:9/\"\n{}\n", keys(&n.notify, &[])));
    }
    let pools = n.pool.as_ref().map(|p| format!("[pools]\np = {p}\n\n")).unwrap_or_default();
    let pool = if n.pool.is_some() { "pool = \"p\"\n" } else { "" };
    let step_keys = if for_build {
        let timeout = n.build_timeout.as_ref().map(|t| format!("timeout = {t}\n")).unwrap_or_default();
        format!("{}retry_delay = {}\n{timeout}", keys(&n.step, &["retry_delay", "timeout"]), n.build_retry_delay)
    } else {
        keys(&n.step, &[])
    };
    let shared = keys(&n.step, &["retries", "retry_delay", "retry_backoff", "timeout", "wait", "poll"]);
    format!(
        r#"{flux}{pools}[step.flaky]
params = {{ date = "date" }}
outputs = ["flaky/{{{{ date }}}}.txt"]
run = "n=$(cat count 2>/dev/null || echo 0); echo $((n + 1)) > count; test $n -ge 2 && echo ok > {{{{ outputs[0] }}}}"
{step_keys}{pool}
[step.after]
params = {{ date = "date" }}
inputs = ["flaky/{{{{ date }}}}.txt"]
outputs = ["after/{{{{ date }}}}.txt"]
run = "cp {{{{ inputs[0] }}}} {{{{ outputs[0] }}}}"
{shared}"#
    )
}

proptest! {
    #![proptest_config(proptest_config(32))]

    /// Extreme values of every numeric key, through `flux check` and a real build: exit
    /// 0, 1 or 2, never a panic or a signal (the harness fails on either), and an error
    /// about the Fluxfile says where.
    #[test]
    fn extreme_numbers_never_crash_check_or_build(n in numbers()) {
        let t = Test::new().fluxfile(&numbers_fluxfile(&n, false));
        let o = t.run_args(["check"]);
        // Random extremes: accepting or refusing are both right; crashing or an error
        // that does not say where is not.
        let status = o.status();
        prop_assert!(status == 0 || status == 2, "{}", o.describe());
        if status == 2 {
            assert_located(&o, "Fluxfile");
        }
        let t = Test::new().fluxfile(&numbers_fluxfile(&n, true));
        let o = t.run_args(["build", "--date-range", "2024-01-01..2024-01-02"]);
        let status = o.status();
        prop_assert!([0, 1, 2].contains(&status), "{}", o.describe());
        // A build's own report (ok/FAIL lines) is not what this property is about.
        let _ = o.stderr();
        if status == 2 {
            let named = ["--> Fluxfile:", "step `", "flaky[", "after["].iter().any(|w| o.stderr().contains(w));
            prop_assert!(named, "{}", o.describe());
        }
    }
}

// ---- 2. planning stays bounded ----

#[test]
fn a_step_reading_a_later_interval_of_itself_without_end_is_an_instant_error() {
    let t = Test::new().fluxfile(
        r#"[flux]
start = "2024-01-01"

[step.zig]
params = { hour = "hour" }
inputs = ["zig/{{ hour | add_hours(1) }}.txt"]
outputs = ["zig/{{ hour }}.txt"]
run = "touch {{ outputs[0] }}"
"#,
    );
    let o = t.run_args_within(["build", "-n", "--date", "2024-01-01"], Duration::from_secs(20));
    o.assert_status(2)
        .stderr_has("step `zig` reads a later interval of itself")
        .stderr_has("`zig/{{ hour | add_hours(1) }}.txt`")
        .stderr_has("no `end`");
    assert_located(&o, "Fluxfile");
    o.stderr_has("Fluxfile:6:11");
    // With an `end` the chain stops there and builds.
    t.write(
        "Fluxfile",
        "[flux]\nstart = \"2024-01-01\"\n\n[step.zig]\nparams = { date = \"date\" }\nend = \"2024-01-05\"\ninputs = [\"zig/{{ date | add_days(1) }}.txt\"]\noutputs = [\"zig/{{ date }}.txt\"]\nrun = \"touch {{ outputs[0] }}\"\n",
    );
    t.run_args(["build", "--date", "2024-01-03", "--output", "json"]).assert_status(0).assert_summary(3, 0, 0, 0);
}

#[test]
fn max_tasks_stops_a_range_past_the_limit() {
    let t = Test::new().fluxfile(
        "[flux]\nmax_tasks = 100\n\n[step.hours]\nparams = { hour = \"hour\" }\noutputs = [\"h/{{ hour }}.txt\"]\nrun = \"touch {{ outputs[0] }}\"\n",
    );
    // 2024-01-01..2024-01-09 is 216 hours.
    let o = t.run_args(["build", "-n", "--date-range", "2024-01-01..2024-01-09"]);
    o.assert_status(2).stderr_has("step `hours`").stderr_has("max_tasks");
    t.run_args(["build", "-n", "--date-range", "2024-01-01..2024-01-04"]).assert_status(0);
    // A step domain of 87 million hours is refused before it is made.
    t.write(
        "Fluxfile",
        "[flux]\nmax_tasks = 100\n\n[step.hours]\nparams = { hour = \"hour\" }\nstart = \"0001-01-01\"\nend = \"9999-12-31\"\noutputs = [\"h/{{ hour }}.txt\"]\nrun = \"touch {{ outputs[0] }}\"\n",
    );
    t.run_args_within(["build", "-n"], Duration::from_secs(20)).assert_status(2).stderr_has("max_tasks");
}

#[test]
fn max_tasks_stops_an_expansion_that_grows_through_two_steps() {
    // ping[h] reads pong[h+1] and pong[h] reads ping[h]: no step reads itself, yet every
    // task pulls in a later one. max_tasks stops it.
    let t = Test::new().fluxfile(
        r#"[flux]
start = "2024-01-01"
max_tasks = 100

[step.ping]
params = { hour = "hour" }
inputs = ["pong/{{ hour | add_hours(1) }}.txt"]
outputs = ["ping/{{ hour }}.txt"]
run = "touch {{ outputs[0] }}"

[step.pong]
params = { hour = "hour" }
inputs = ["ping/{{ hour }}.txt"]
outputs = ["pong/{{ hour }}.txt"]
run = "touch {{ outputs[0] }}"
"#,
    );
    let o = t.run_args_within(["build", "-n", "ping[2024-01-01T00]"], Duration::from_secs(20));
    o.assert_status(2).stderr_has("planning stopped at 100 tasks").stderr_has("max_tasks");
    // Within the limit, such a chain ends at the edge of the calendar, and says why.
    let o = t.run_args_within(["build", "-n", "ping[9999-12-31T00]"], Duration::from_secs(20));
    o.assert_status(2)
        .stderr_has("ping[9999-12-31T23]: cannot render input")
        .stderr_has("planning followed inputs from task to task up to the year 9999")
        .stderr_has("need an `end`");
    assert_located(&o, "Fluxfile");
}

// ---- 3. locations ----

#[test]
fn invalid_utf8_is_an_error_with_a_location() {
    let o = Test::new()
        .file("Fluxfile", b"[step.a]\noutputs = [\"a\"]\nrun = \"echo caf\xe9 > a\"\n")
        .args(["check"])
        .run();
    o.assert_status(2).stderr_has("not valid UTF-8").stderr_has("0xE9");
    o.stderr_has("Fluxfile:3:16");
    // In an included file too.
    let o = Test::new()
        .fluxfile("[flux]\ninclude = [\"more.toml\"]\n\n[step.a]\noutputs = [\"a\"]\nrun = \"touch a\"\n")
        .file("more.toml", b"\n\n[step.b]\nrun = \"\xff\"\n")
        .args(["check"])
        .run();
    o.assert_status(2).stderr_has("more.toml:4:8");
}

#[test]
fn planning_errors_point_at_the_template() {
    // Two producers: points at the second step's output and says where the first is.
    let o = Test::new()
        .fluxfile(
            "[step.a]\noutputs = [\"x.txt\"]\nrun = \"true\"\n\n[step.b]\noutputs = [\"x.txt\"]\nrun = \"true\"\n",
        )
        .args(["build", "-n"])
        .run();
    o.assert_status(2).stderr_has("two tasks write `x.txt`").stderr_has("Fluxfile:6:12").stderr_has("Fluxfile:2:12");
    // A requires whose value is not a valid date: points at that value's template.
    let o = Test::new()
        .fluxfile(
            "[step.a]\nparams = { date = \"date\" }\noutputs = [\"a/{{ date }}\"]\nrun = \"true\"\n\n[step.b]\nparams = { date = \"date\" }\nrequires = [{ step = \"a\", date = \"{{ date }}x\" }]\noutputs = [\"b/{{ date }}\"]\nrun = \"true\"\n",
        )
        .args(["build", "-n", "b", "--date", "2024-01-01"])
        .run();
    o.assert_status(2).stderr_has("b[2024-01-01]: requires a: date").stderr_has("Fluxfile:8:34");
    // A cycle: points at the input that closes it.
    let o = Test::new()
        .fluxfile(
            "[step.a]\ninputs = [\"b.txt\"]\noutputs = [\"a.txt\"]\nrun = \"true\"\n\n[step.b]\ninputs = [\"a.txt\"]\noutputs = [\"b.txt\"]\nrun = \"true\"\n",
        )
        .args(["build", "-n", "a"])
        .run();
    o.assert_status(2).stderr_has("cycle: ");
    assert_located(&o, "Fluxfile");
    // A template that fails to render for a task: points at it.
    let o = Test::new()
        .fluxfile("[step.a]\nparams = { date = \"date\" }\ninputs = [\"{{ date | add_days(99999999) }}\"]\noutputs = [\"a/{{ date }}\"]\nrun = \"true\"\n")
        .args(["build", "-n", "--date", "2024-01-01"])
        .run();
    o.assert_status(2).stderr_has("a[2024-01-01]");
    assert_located(&o, "Fluxfile");
}

#[test]
fn a_600_kb_line_is_quoted_as_a_window_around_the_column() {
    let long = "x".repeat(600_000);
    // A template error at the end of a 600 KB command.
    let o = Test::new()
        .fluxfile(&format!("[step.a]\noutputs = [\"a\"]\nrun = \"{long} {{{{ nope }}}}\"\n"))
        .args(["check"])
        .run();
    o.assert_status(2).stderr_has("…").stderr_has("Fluxfile:3:");
    assert!(
        o.stderr().len() < 2_000,
        "the message is {} bytes\n{}",
        o.stderr().len(),
        &o.stderr()[..o.stderr().len().min(3000)]
    );
    // A 600 KB key name, and invalid TOML at the end of a 600 KB line.
    for text in [format!("[step.a]\n{long} = 1\n"), format!("[step.a]\nrun = \"{long}\" x\n")] {
        // A bound for a hang only: a debug build parses 600 KB slowly on a loaded machine.
        let o = Test::new().fluxfile(&text).run_args_within(["check"], Duration::from_secs(600));
        o.assert_status(2).stderr_has("Fluxfile:2:");
        assert!(
            o.stderr().len() < 2_000,
            "the message is {} bytes\n{}",
            o.stderr().len(),
            &o.stderr()[..o.stderr().len().min(3000)]
        );
        assert!(o.stderr().lines().all(|l| l.chars().count() < 1_100), "{}", &o.stderr()[..o.stderr().len().min(3000)]);
    }
}

// ---- 4. generate ----

const GEN_STEP: &str = "[step.g]\noutputs = [\"g.txt\"]\nrun = \"echo g > {{ outputs[0] }}\"\n";

#[test]
fn a_generator_running_past_generate_timeout_is_killed_with_its_group() {
    let t = Test::new()
        .fluxfile(
            "[flux]\ngenerate_timeout = \"1s\"\ngenerate = [\"echo $$ > gen.pid; sleep 30 & sleep 30; cat gen.toml\"]\n\n[step.a]\noutputs = [\"a\"]\nrun = \"touch a\"\n",
        )
        .file("gen.toml", GEN_STEP);
    let o = t.run_args_within(["check"], Duration::from_secs(28));
    o.assert_status(2)
        .stderr_has("generator `echo $$ > gen.pid; sleep 30 & sleep 30; cat gen.toml` ran longer than its timeout (1s)")
        .stderr_has("Fluxfile:3:13");
    // Killed at its 1 s timeout, not at the end of its 30 s sleep.
    assert!(o.elapsed < Duration::from_secs(20), "took {:?}", o.elapsed);
    // Its whole process group is gone, the background sleep included.
    let pgid: i32 = t.read("gen.pid").trim().parse().expect("a pid");
    let mut gone = false;
    for _ in 0..100 {
        // SAFETY: kill(2) with signal 0 only checks whether the group exists.
        if unsafe { libc::kill(-pgid, 0) } != 0 {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone, "process group {pgid} of the generator is still alive");
}

#[test]
fn flux_does_not_wait_for_a_generators_background_children() {
    let t = Test::new()
        .fluxfile("[flux]\ngenerate = [\"sh -c 'sleep 30 & cat gen.toml'\"]\n\n[step.a]\noutputs = [\"a\"]\nrun = \"touch a\"\n")
        .file("gen.toml", GEN_STEP);
    let o = t.run_args_within(["check"], Duration::from_secs(28));
    o.assert_status(0).stdout_has("2 steps, OK");
    assert!(o.elapsed < Duration::from_secs(20), "flux waited for the background child (30 s): {:?}", o.elapsed);
    // The generated step builds.
    t.run_args(["build", "g"]).assert_status(0);
    assert_eq!(t.read("g.txt"), "g\n");
    // What a generator prints on stderr still reaches the user.
    let o = Test::new()
        .fluxfile("[flux]\ngenerate = [\"echo making steps >&2; cat gen.toml\"]\n")
        .file("gen.toml", GEN_STEP)
        .args(["check"])
        .run();
    o.assert_status(0).stderr_has("making steps");
}

// ---- 5. flux graph ----

#[test]
fn graph_of_20000_steps_completes() {
    use std::fmt::Write as _;
    let mut text = String::from("[flux]\nstart = \"2024-01-01\"\n\n");
    for i in 0..20_000 {
        let _ = write!(text, "[step.s{i}]\nparams = {{ date = \"date\" }}\n");
        if i > 0 {
            let _ = writeln!(text, "inputs = [\"d/s{}/{{{{ date }}}}.txt\"]", i - 1);
        }
        // Every step its own start: the old probing made one probe per step per start.
        let _ = write!(
            text,
            "start = \"2024-{:02}-{:02}\"\noutputs = [\"d/s{i}/{{{{ date }}}}.txt\"]\nrun = \"true\"\n\n",
            1 + (i / 28) % 12,
            1 + i % 28
        );
    }
    let t = Test::new().fluxfile(&text);
    // A bound for a hang (quadratic probing took minutes), with room for a loaded machine.
    let o = t.run_args_within(["graph"], Duration::from_secs(120));
    o.assert_status(0);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 20_000);
    assert_eq!(lines[0], "s0");
    assert_eq!(lines[19_999], "s19999 <- s19998");
}
