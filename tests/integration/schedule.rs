//! `flux schedule` (SPEC §10): ticks at a given `--now` (`--once`), watermarks, catch-up,
//! time zones, SLAs, the scheduler lease, stopping, hot reload. No test sleeps through
//! real time: `--now` sets the scheduler's clock, and the loop runs with short ticks.

use std::time::{Duration, Instant};

use crate::test::*;

fn once(t: &Test, now: &str) -> Output {
    t.run_args(["schedule", "--once", "--now", now])
}

/// The lines of a file the commands append to (empty if it does not exist).
fn lines(t: &Test, rel: &str) -> Vec<String> {
    t.maybe_read(rel).map(|b| String::from_utf8_lossy(&b).lines().map(str::to_string).collect()).unwrap_or_default()
}

/// The same, sorted (tasks of one tick run in parallel).
fn sorted(t: &Test, rel: &str) -> Vec<String> {
    let mut v = lines(t, rel);
    v.sort();
    v
}

fn daily(extra: &str) -> String {
    format!(
        r#"
[step.daily]
params = {{ date = "date" }}
start = "2024-01-01"
outputs = ["out/{{{{ date }}}}.txt"]
run = "echo {{{{ date }}}} >> ran.txt; echo {{{{ date }}}} > {{{{ outputs[0] }}}}"
schedule = "@daily"
{extra}
"#
    )
}

#[test]
fn daily_catches_up_from_start_to_the_last_ended_day() {
    let t = Test::new().fluxfile(&daily(""));
    once(&t, "2024-01-04T00:30:00Z").assert_success();
    assert_eq!(sorted(&t, "ran.txt"), ["2024-01-01", "2024-01-02", "2024-01-03"]);
    assert!(!t.exists("out/2024-01-04.txt"), "2024-01-04 has not ended yet");
}

#[test]
fn a_second_tick_at_the_same_time_runs_nothing() {
    let t = Test::new().fluxfile(&daily(""));
    once(&t, "2024-01-04T00:30:00Z").assert_success();
    // Outputs removed by hand: only the watermark keeps the tick from building them again.
    t.remove("out");
    let o = once(&t, "2024-01-04T00:30:00Z");
    o.assert_success().stdout_lacks("ok ");
    assert_eq!(lines(&t, "ran.txt").len(), 3, "{}", o.describe());
    // The next day fires the schedule again and plans only the new interval.
    let o = once(&t, "2024-01-05T00:10:00Z");
    o.assert_success().stderr_has("interval 2024-01-04");
    assert_eq!(lines(&t, "ran.txt").len(), 4, "{}", o.describe());
    assert!(!t.exists("out/2024-01-01.txt"), "a done interval is not planned again");
}

#[test]
fn hourly_catches_up_hours_in_utc() {
    let t = Test::new().fluxfile(
        r#"
[flux]
timezone = "America/New_York"

[step.h]
params = { hour = "hour" }
start = "2024-01-01T00"
outputs = ["h/{{ hour }}.txt"]
run = "echo {{ hour }} >> ran.txt; touch {{ outputs[0] }}"
schedule = "@hourly"
"#,
    );
    once(&t, "2024-01-01T05:10:00Z").assert_success();
    assert_eq!(
        sorted(&t, "ran.txt"),
        ["2024-01-01T00", "2024-01-01T01", "2024-01-01T02", "2024-01-01T03", "2024-01-01T04"]
    );
}

#[test]
fn monthly_catches_up_ended_months() {
    let t = Test::new().fluxfile(
        r#"
[step.m]
params = { month = "month" }
start = "2023-11"
outputs = ["m/{{ month }}.txt"]
run = "echo {{ month }} >> ran.txt; touch {{ outputs[0] }}"
schedule = "@monthly"
"#,
    );
    once(&t, "2024-01-31T23:59:00Z").assert_success();
    assert_eq!(sorted(&t, "ran.txt"), ["2023-11", "2023-12"]);
    once(&t, "2024-02-01T00:00:01Z").assert_success();
    assert_eq!(sorted(&t, "ran.txt"), ["2023-11", "2023-12", "2024-01"]);
}

#[test]
fn a_cron_schedule_evaluates_the_step_only_when_it_fires() {
    let t = Test::new().fluxfile(
        r#"
[step.h]
params = { hour = "hour" }
start = "2024-01-01T00"
outputs = ["h/{{ hour }}.txt"]
run = "echo {{ hour }} >> ran.txt; touch {{ outputs[0] }}"
schedule = "0 */6 * * *"
"#,
    );
    // Never evaluated: at once, everything ended so far.
    once(&t, "2024-01-01T05:00:00Z").assert_success();
    assert_eq!(lines(&t, "ran.txt").len(), 5);
    // Fired at 06:00: hours 05, 06, 07.
    once(&t, "2024-01-01T08:30:00Z").assert_success();
    assert_eq!(sorted(&t, "ran.txt")[5..], ["2024-01-01T05", "2024-01-01T06", "2024-01-01T07"]);
    // Hours 08..10 have ended, but the schedule has not fired since 08:30.
    once(&t, "2024-01-01T11:59:00Z").assert_success();
    assert_eq!(lines(&t, "ran.txt").len(), 8);
    // 12:00 fires: hours 08..11.
    once(&t, "2024-01-01T12:00:30Z").assert_success();
    assert_eq!(sorted(&t, "ran.txt")[8..], ["2024-01-01T08", "2024-01-01T09", "2024-01-01T10", "2024-01-01T11"]);
}

#[test]
fn catchup_false_builds_only_the_latest_interval() {
    let t = Test::new().fluxfile(&daily("catchup = false"));
    once(&t, "2024-01-10T01:00:00Z").assert_success();
    assert_eq!(lines(&t, "ran.txt"), ["2024-01-09"]);
    once(&t, "2024-01-13T01:00:00Z").assert_success();
    assert_eq!(lines(&t, "ran.txt"), ["2024-01-09", "2024-01-12"]);
}

#[test]
fn max_active_runs_builds_intervals_oldest_first() {
    let t = Test::new().fluxfile(&daily("max_active_runs = 1"));
    let o = once(&t, "2024-01-04T00:30:00Z");
    o.assert_success().stderr_has("2 more held back by max_active_runs");
    assert_eq!(lines(&t, "ran.txt"), ["2024-01-01"]);
    once(&t, "2024-01-04T00:30:00Z").assert_success();
    once(&t, "2024-01-04T00:30:00Z").assert_success();
    assert_eq!(lines(&t, "ran.txt"), ["2024-01-01", "2024-01-02", "2024-01-03"]);
    once(&t, "2024-01-04T00:30:00Z").assert_success().stdout_lacks("ok ");
    assert_eq!(lines(&t, "ran.txt").len(), 3);
}

#[test]
fn newest_first_reverses_the_order_under_max_active_runs() {
    let t = Test::new().fluxfile(&daily("max_active_runs = 2"));
    t.run_args(["schedule", "--once", "--newest-first", "--now", "2024-01-04T00:30:00Z"]).assert_success();
    let mut got = lines(&t, "ran.txt");
    got.sort();
    assert_eq!(got, ["2024-01-02", "2024-01-03"]);
}

#[test]
fn a_failed_interval_is_built_again_when_the_schedule_next_fires() {
    let t = Test::new().fluxfile(
        r#"
[step.daily]
params = { date = "date" }
start = "2024-01-01"
outputs = ["out/{{ date }}.txt"]
run = "echo {{ date }} >> ran.txt; test -e ok && touch {{ outputs[0] }}"
schedule = "@daily"
"#,
    );
    once(&t, "2024-01-02T00:30:00Z").assert_status(1).stderr_has("FAIL daily[");
    // Same time: the schedule has not fired again, the failure waits.
    once(&t, "2024-01-02T00:40:00Z").assert_success();
    assert_eq!(lines(&t, "ran.txt"), ["2024-01-01"]);
    t.write("ok", "");
    once(&t, "2024-01-03T00:10:00Z").assert_success();
    assert_eq!(sorted(&t, "ran.txt"), ["2024-01-01", "2024-01-01", "2024-01-02"]);
}

#[test]
fn upstream_of_a_scheduled_step_is_built_too() {
    let t = Test::new().fluxfile(
        r#"
[step.extract]
params = { date = "date" }
outputs = ["raw/{{ date }}.txt"]
run = "echo raw {{ date }} > {{ outputs[0] }}"

[step.daily]
params = { date = "date" }
start = "2024-01-01"
inputs = ["raw/{{ date }}.txt"]
outputs = ["out/{{ date }}.txt"]
run = "cp {{ inputs[0] }} {{ outputs[0] }}"
schedule = "@daily"
"#,
    );
    once(&t, "2024-01-03T00:30:00Z").assert_success();
    assert_eq!(t.read("out/2024-01-02.txt"), "raw 2024-01-02\n");
    assert!(t.exists("raw/2024-01-01.txt"));
}

#[test]
fn dry_run_lists_what_the_tick_would_run_and_why() {
    let t = Test::new().fluxfile(&daily(""));
    let o = t.run_args(["schedule", "--once", "--dry-run", "--now", "2024-01-03T00:30:00Z"]);
    o.assert_success()
        .stderr_has("daily: never evaluated; 2 intervals 2024-01-01..2024-01-02")
        .stdout_has("daily[2024-01-01] (missing-output)");
    assert!(!t.exists("ran.txt") && !t.exists(".flux"), "a dry run runs and writes nothing");
    once(&t, "2024-01-03T00:30:00Z").assert_success();
    t.run_args(["schedule", "--dry-run", "--now", "2024-01-03T00:40:00Z"])
        .assert_success()
        .stderr_has("daily: not due (next fire 2024-01-04T00:00:00Z)");
}

#[test]
fn each_tick_is_a_schedule_run_in_history() {
    let t = Test::new().fluxfile(&daily(""));
    once(&t, "2024-01-02T00:30:00Z").assert_success();
    t.run_args(["build", "--date", "2024-01-05"]).assert_success();
    let h = t.run_args(["history", "--output", "json"]);
    h.assert_success();
    let doc = h.json();
    let attempts = doc["attempts"].as_array().unwrap();
    let kind_of = |task: &str| {
        attempts.iter().find(|a| a["task"] == task).map(|a| a["run_kind"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(kind_of("daily[2024-01-01]").as_deref(), Some("schedule"), "{}", h.describe());
    assert_eq!(kind_of("daily[2024-01-05]").as_deref(), Some("build"), "{}", h.describe());
    t.run_args(["history"]).assert_success().stdout_has("(schedule)");
}

// ---- time zones ----

#[test]
fn daily_in_berlin_on_the_spring_forward_day_ends_at_local_midnight() {
    let t = Test::new().fluxfile(
        r#"
[flux]
timezone = "Europe/Berlin"

[step.daily]
params = { date = "date" }
start = "2024-03-31"
outputs = ["out/{{ date }}.txt"]
run = "echo {{ date }} >> ran.txt; echo {{ interval_start }} {{ interval_end }} > {{ outputs[0] }}"
schedule = "@daily"
"#,
    );
    // 23:59 CEST on 31 March (a 23-hour day: 23:00 UTC the day before .. 22:00 UTC).
    once(&t, "2024-03-31T21:59:00Z").assert_success();
    assert!(lines(&t, "ran.txt").is_empty());
    // Local midnight, 22:00 UTC: the day has ended.
    once(&t, "2024-03-31T22:00:00Z").assert_success();
    assert_eq!(lines(&t, "ran.txt"), ["2024-03-31"]);
    assert_eq!(t.read("out/2024-03-31.txt"), "2024-03-30T23:00:00Z 2024-03-31T22:00:00Z\n");
}

#[test]
fn a_cron_time_in_the_dst_gap_fires_once() {
    let t = Test::new().fluxfile(
        r#"
[flux]
timezone = "Europe/Berlin"

[step.daily]
params = { date = "date" }
start = "2024-03-30"
outputs = ["out/{{ date }}.txt"]
run = "echo {{ date }} >> ran.txt; test -e ok && touch {{ outputs[0] }}"
schedule = "30 2 * * *"
"#,
    );
    // 01:10 CET on 31 March: first evaluation, 30 March fails.
    once(&t, "2024-03-31T00:10:00Z").assert_status(1).stderr_has("FAIL daily[");
    // 01:50 CET: 02:30 has not come (it never comes: 02:00 jumps to 03:00).
    once(&t, "2024-03-31T00:50:00Z").assert_success();
    assert_eq!(lines(&t, "ran.txt").len(), 1);
    // 03:10 CEST: the 02:30 run fired at 03:00, once.
    once(&t, "2024-03-31T01:10:00Z").assert_status(1).stderr_has("fired at 2024-03-31T03:00:00+02:00");
    assert_eq!(lines(&t, "ran.txt").len(), 2);
    once(&t, "2024-03-31T01:40:00Z").assert_success();
    once(&t, "2024-03-31T23:00:00Z").assert_success();
    assert_eq!(lines(&t, "ran.txt").len(), 2, "no second run before 02:30 on 1 April");
}

// ---- validation ----

#[test]
fn schedule_settings_are_validated_with_their_place() {
    let cases = [
        ("schedule = \"0 0 * * * *\"", "has 5 fields", "Fluxfile:6:12"),
        (
            "schedule = \"@daily\"\nsla = \"2h\"\nmax_active_runs = 0",
            "`max_active_runs` must be at least 1",
            "Fluxfile:8:19",
        ),
        ("sla = \"2h\"", "`sla` needs a `schedule`", "Fluxfile:6:1"),
        ("schedule = \"61 * * * *\"", "is not a schedule", "Fluxfile:6:12"),
        ("schedule = \"@daily\"\non_sla_miss = \"true\"", "`on_sla_miss` needs an `sla`", "Fluxfile:7:1"),
        ("catchup = false", "`catchup` needs a `schedule`", "Fluxfile:6:1"),
    ];
    for (extra, message, place) in cases {
        let t = Test::new().fluxfile(&format!(
            "[step.s]\nparams = {{ date = \"date\" }}\nstart = \"2024-01-01\"\noutputs = [\"s/{{{{ date }}}}\"]\nrun = \"touch {{{{ outputs[0] }}}}\"\n{extra}\n"
        ));
        t.run_args(["check"]).assert_status(2).stderr_has(message).stderr_has(place);
    }
    let t = Test::new().fluxfile(&format!("[flux]\ntimezone = \"Europe/Berln\"\n{}", daily("")));
    t.run_args(["check"])
        .assert_status(2)
        .stderr_has("`Europe/Berln` is not a time zone")
        .stderr_has("did you mean `Europe/Berlin`")
        .stderr_has("Fluxfile:2:12");
}

// ---- SLAs ----

fn with_sla(extra: &str) -> String {
    format!(
        r#"
[step.daily]
params = {{ date = "date" }}
start = "2024-01-01"
outputs = ["out/{{{{ date }}}}.txt"]
run = "test -e ok && touch {{{{ outputs[0] }}}}"
schedule = "@daily"
sla = "1h"
on_sla_miss = "echo $FLUX_TASK {{{{ date }}}} $FLUX_STATUS >> late.txt"
{extra}
"#
    )
}

#[test]
fn an_sla_miss_fires_the_hook_exactly_once() {
    let t = Test::new().fluxfile(&with_sla(""));
    // Due at 00:00, deadline 01:00: failed, but not late yet.
    once(&t, "2024-01-02T00:30:00Z").assert_status(1).stderr_has("FAIL daily[");
    assert!(lines(&t, "late.txt").is_empty());
    // Past the deadline (the schedule has not fired: nothing is built, the SLA is checked).
    let o = once(&t, "2024-01-02T01:30:00Z");
    o.assert_success().stderr_has("LATE daily[2024-01-01] missed its SLA: not done by 2024-01-02T01:00:00Z");
    assert_eq!(lines(&t, "late.txt"), ["daily[2024-01-01] 2024-01-01 late"]);
    // Another process, later: the miss is on record, not fired again.
    once(&t, "2024-01-02T02:00:00Z").assert_success().stderr_lacks("LATE");
    assert_eq!(lines(&t, "late.txt").len(), 1);
    // flux status shows it.
    t.run_args(["status", "--date", "2024-01-01"]).assert_success().stdout_has("late (SLA missed): daily[2024-01-01]");
    let s = t.run_args(["status", "--date", "2024-01-01", "--output", "json"]);
    assert_eq!(s.json()["rows"][0]["cells"][0]["late"], true, "{}", s.describe());
}

#[test]
fn a_task_done_in_time_is_not_late() {
    let t = Test::new().file("ok", "").fluxfile(&with_sla(""));
    once(&t, "2024-01-02T00:30:00Z").assert_success();
    once(&t, "2024-01-02T05:00:00Z").assert_success().stderr_lacks("LATE");
    assert!(lines(&t, "late.txt").is_empty());
}

#[test]
fn intervals_late_when_first_seen_fire_one_summary_per_step() {
    let t = Test::new().file("ok", "").fluxfile(&with_sla(""));
    let o = once(&t, "2024-01-10T05:00:00Z");
    o.assert_success().stderr_has("9 intervals of daily were already past their SLA");
    assert_eq!(lines(&t, "late.txt"), ["daily[2024-01-01..2024-01-09] 2024-01-09 late"]);
}

#[test]
fn an_sla_miss_posts_one_sla_miss_event_to_the_webhook() {
    let (port, got) = crate::keys::http_sink();
    let t = Test::new().fluxfile(&format!(
        "[notify]\nwebhook = \"http://127.0.0.1:{port}/flux\"\n{}",
        with_sla("").replace("on_sla_miss = ", "# on_sla_miss = ")
    ));
    once(&t, "2024-01-02T00:30:00Z").assert_status(1).stderr_has("FAIL daily[");
    once(&t, "2024-01-02T01:30:00Z").assert_success().stderr_has("LATE daily[2024-01-01] missed its SLA");
    once(&t, "2024-01-02T01:40:00Z").assert_success();
    let bodies = got.lock().map(|v| v.clone()).unwrap_or_default();
    let misses: Vec<serde_json::Value> = bodies
        .iter()
        .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .filter(|e| e["event"] == "sla_miss")
        .collect();
    assert_eq!(misses.len(), 1, "{bodies:?}");
    assert_eq!(misses[0]["task"], "daily[2024-01-01]");
    assert_eq!(misses[0]["status"], "late");
}

// ---- the long-running scheduler ----

/// Wait (up to 30 s) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn looping(t: &Test, extra: &[&str]) -> Running {
    let mut args = vec!["schedule", "--tick", "50ms", "--now", "2024-01-03T00:30:00Z"];
    args.extend_from_slice(extra);
    t.spawn_args(args)
}

/// Whether a process is gone (or a zombie waiting to be reaped by someone else).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn the_loop_ticks_until_sigterm_and_exits_0() {
    let t = Test::new().fluxfile(&daily(""));
    let r = looping(&t, &[]);
    wait_for("the first tick", || t.exists("out/2024-01-02.txt"));
    r.signal("TERM");
    let o = t.finish(r);
    o.assert_success().stderr_has("flux schedule: stopped");
    assert_eq!(sorted(&t, "ran.txt"), ["2024-01-01", "2024-01-02"]);
}

#[test]
fn a_second_scheduler_is_refused_while_one_runs() {
    let t = Test::new().fluxfile(&daily(""));
    let r = looping(&t, &[]);
    wait_for("the first tick", || t.exists("out/2024-01-02.txt"));
    let o = t.run_args(["schedule", "--once"]);
    o.assert_status(2)
        .stderr_has("another flux schedule holds this project's scheduler lease")
        .stderr_has(&format!("pid {}", r.child.id()))
        .stderr_has("--wait");
    // flux build runs beside it.
    t.run_args(["build", "daily", "--date", "2024-01-07"]).assert_success();
    assert!(t.exists("out/2024-01-07.txt"));
    // --wait takes over once the first one stops.
    let waiting = t.spawn_args(["schedule", "--once", "--wait", "--now", "2024-01-04T00:30:00Z"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.exists("out/2024-01-03.txt"), "the waiting scheduler ticked while the first one held the lease");
    r.signal("TERM");
    t.finish(r).assert_success();
    let w = t.finish(waiting);
    w.assert_success().stderr_has("waiting for it to stop");
    assert!(t.exists("out/2024-01-03.txt"), "{}", w.describe());
}

#[test]
fn a_dead_schedulers_lease_is_taken_over() {
    let t = Test::new().fluxfile(&daily(""));
    let r = looping(&t, &[]);
    wait_for("the first tick", || t.exists("out/2024-01-02.txt"));
    r.kill9();
    // Whether a task was running at the kill depends on timing: if one was, its group
    // is ended (and said so).
    once(&t, "2024-01-04T00:30:00Z").assert_success().stderr_lines_match(&["left running by flux run(s) that died"]);
    assert!(t.exists("out/2024-01-03.txt"));
}

#[test]
fn sigterm_lets_running_tasks_finish_within_the_grace() {
    let t = Test::new().fluxfile(
        r#"
[step.daily]
params = { date = "date" }
start = "2024-01-02"
outputs = ["out/{{ date }}.txt"]
run = "touch started; while ! test -e go; do sleep 0.02; done; touch {{ outputs[0] }}"
schedule = "@daily"
"#,
    );
    let r = looping(&t, &["--grace", "20s"]);
    wait_for("the task to start", || t.exists("started"));
    r.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    t.write("go", "");
    let o = t.finish(r);
    o.assert_success().stderr_has("flux schedule: stopped");
    assert!(t.exists("out/2024-01-02.txt"), "the task finished in its grace\n{}", o.describe());
}

#[test]
fn sigterm_interrupts_running_tasks_after_the_grace_and_leaves_no_orphan() {
    let t = Test::new().fluxfile(
        r#"
[step.daily]
params = { date = "date" }
start = "2024-01-02"
outputs = ["out/{{ date }}.txt"]
run = "sleep 60 & echo $! > pid.txt; wait; touch {{ outputs[0] }}"
schedule = "@daily"
"#,
    );
    let r = looping(&t, &["--grace", "300ms"]);
    wait_for("the task to start", || t.exists("pid.txt") && !t.read("pid.txt").trim().is_empty());
    let pid = t.read("pid.txt");
    let sent = Instant::now();
    r.signal("TERM");
    let o = t.finish(r);
    o.stderr_has("interrupted: stopping running tasks (press Ctrl-C again to kill them)");
    o.assert_success();
    assert!(sent.elapsed() >= Duration::from_millis(300), "interrupted before the grace was over");
    assert!(sent.elapsed() < Duration::from_secs(20), "{}", o.describe());
    assert!(!t.exists("out/2024-01-02.txt"));
    wait_for("the task's process to end", || gone(&pid));
    let h = t.run_args(["history", "--output", "json"]);
    assert_eq!(h.json()["attempts"][0]["status"], "interrupted", "{}", h.describe());
}

#[test]
fn sighup_stops_the_scheduler_like_sigterm() {
    // A closed terminal or a dropped SSH connection: a clean stop, no orphan.
    let t = Test::new().fluxfile(
        r#"
[step.daily]
params = { date = "date" }
start = "2024-01-02"
outputs = ["out/{{ date }}.txt"]
run = "sleep 60 & echo $! > pid.txt; wait; touch {{ outputs[0] }}"
schedule = "@daily"
"#,
    );
    let r = looping(&t, &["--grace", "300ms"]);
    wait_for("the task to start", || t.exists("pid.txt") && !t.read("pid.txt").trim().is_empty());
    let pid = t.read("pid.txt");
    r.signal("HUP");
    let o = t.finish(r);
    o.assert_success().stderr_has("flux schedule: stopped");
    assert!(!t.exists("out/2024-01-02.txt"));
    wait_for("the task's process to end", || gone(&pid));
}

#[test]
fn the_fluxfile_is_reloaded_when_it_changes_and_a_broken_edit_is_kept_out() {
    let t = Test::new().fluxfile(&daily(""));
    let r = looping(&t, &[]);
    wait_for("the first tick", || t.exists("out/2024-01-02.txt"));
    let added = r#"
[step.more]
params = { date = "date" }
start = "2024-01-01"
outputs = ["more/{{ date }}.txt"]
run = "echo more {{ date }} > {{ outputs[0] }}"
schedule = "@daily"
"#;
    t.write("Fluxfile", format!("{}{added}", daily("")));
    wait_for("the added step's tasks", || t.exists("more/2024-01-01.txt") && t.exists("more/2024-01-02.txt"));
    assert_eq!(t.read("more/2024-01-01.txt"), "more 2024-01-01\n");
    // A broken edit: reported with its place, the last good definition kept.
    t.write("Fluxfile", format!("{}{added}\n[step.broken]\nschedul = \"@daily\"\n", daily("")));
    std::thread::sleep(Duration::from_millis(400));
    let fixed = r#"
[step.third]
params = { date = "date" }
start = "2024-01-01"
outputs = ["third/{{ date }}.txt"]
run = "touch {{ outputs[0] }}"
schedule = "@daily"
"#;
    t.write("Fluxfile", format!("{}{added}{fixed}", daily("")));
    wait_for("the fixed file's new step", || t.exists("third/2024-01-02.txt"));
    r.signal("TERM");
    let o = t.finish(r);
    o.assert_success()
        .stderr_has("unknown key `schedul` in [step.broken]")
        .stderr_has("Fluxfile:18:1")
        .stderr_has("keeping the last good definition");
}

#[test]
fn ticks_go_on_while_a_build_runs() {
    let slow = r#"
[step.slow]
params = { date = "date" }
start = "2024-01-02"
outputs = ["slow/{{ date }}.txt"]
run = "touch started; while ! test -e go; do sleep 0.02; done; touch {{ outputs[0] }}"
schedule = "@daily"
"#;
    let t = Test::new().fluxfile(slow);
    let r = looping(&t, &[]);
    wait_for("the slow task to start", || t.exists("started"));
    // Reloaded while the slow build runs; the new step is built when that build ends.
    t.write("Fluxfile", format!("{slow}{}", daily("")));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.exists("ran.txt"), "one build at a time");
    t.write("go", "");
    wait_for("the added step's tasks", || t.exists("out/2024-01-02.txt"));
    r.signal("TERM");
    let o = t.finish(r);
    o.assert_success();
    let reloaded = o.stderr().find("changed, reloaded").expect("reloaded");
    let slow_done = o.stderr().find("ok   slow[2024-01-02]").expect("slow built");
    assert!(reloaded < slow_done, "the reload waited for the build\n{}", o.describe());
    o.stderr_has("daily: never evaluated; 2 due, built when the running build ends");
}

#[test]
fn the_loop_builds_held_back_intervals_one_at_a_time_oldest_first() {
    let t = Test::new().fluxfile(&daily("max_active_runs = 1"));
    let r = t.spawn_args(["schedule", "--tick", "50ms", "--now", "2024-01-05T00:30:00Z"]);
    wait_for("the last interval", || t.exists("out/2024-01-04.txt"));
    r.signal("TERM");
    t.finish(r).assert_success();
    assert_eq!(lines(&t, "ran.txt"), ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]);
}

#[test]
fn a_new_file_matching_an_include_is_picked_up() {
    let t = Test::new().fluxfile(&format!("[flux]\ninclude = [\"pipes/*.toml\"]\n{}", daily(""))).dir("pipes");
    let r = looping(&t, &[]);
    wait_for("the first tick", || t.exists("out/2024-01-02.txt"));
    t.write(
        "pipes/more.toml",
        r#"
[step.more]
params = { date = "date" }
start = "2024-01-02"
outputs = ["more/{{ date }}.txt"]
run = "touch {{ outputs[0] }}"
schedule = "@daily"
"#,
    );
    wait_for("the included step's task", || t.exists("more/2024-01-02.txt"));
    r.signal("TERM");
    t.finish(r).stderr_has("flux schedule:").assert_success();
}

#[test]
fn a_silent_holders_lease_is_taken_over_after_30_seconds() {
    let t = Test::new().fluxfile(&daily(""));
    once(&t, "2024-01-02T00:30:00Z").assert_success();
    // A live process (this test) on this host that has not renewed the lease: refused
    // while its heartbeat is fresh, taken over once it is 30 s old.
    let hold = |age: f64| {
        let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        conn.execute(
            "INSERT OR REPLACE INTO scheduler (id, holder, pid, host, started_at, heartbeat_at) VALUES (1, 'other', ?1, ?2, ?3, ?4)",
            rusqlite::params![std::process::id(), host, now - 100.0, now - age],
        )
        .expect("write the lease");
    };
    hold(5.0);
    once(&t, "2024-01-03T00:30:00Z").assert_status(2).stderr_has(&format!("pid {}", std::process::id()));
    hold(31.0);
    once(&t, "2024-01-03T00:30:00Z").assert_success();
    assert!(t.exists("out/2024-01-02.txt"));
}

#[test]
fn a_scheduler_whose_lease_was_taken_over_stops() {
    let t = Test::new().fluxfile(&daily(""));
    let r = looping(&t, &[]);
    wait_for("the first tick", || t.exists("out/2024-01-02.txt"));
    // As if this scheduler had been silent for 30 s and another had taken over.
    let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    conn.execute("UPDATE scheduler SET holder = 'other', pid = ?1", [std::process::id()]).expect("take the lease");
    let o = t.finish(r);
    o.assert_status(2).stderr_has("took this project's scheduler lease over");
}

// ---- @weekly ----

/// `flux schedule --once` at `first`, then every 6 hours for `days` days; the lines
/// `ran.txt` gained at each tick that added any.
fn ticks(t: &Test, first: &str, days: i64) -> Vec<(String, Vec<String>)> {
    let start = chrono::DateTime::parse_from_rfc3339(first).unwrap().with_timezone(&chrono::Utc);
    let mut out = Vec::new();
    let mut seen = 0;
    for i in 0..=days * 4 {
        let now = start + chrono::Duration::hours(6 * i);
        let o = once(t, &now.to_rfc3339());
        o.assert_success();
        let all = sorted_from(t, seen);
        seen += all.len();
        if !all.is_empty() {
            out.push((now.format("%Y-%m-%dT%H:%M").to_string(), all));
        }
    }
    out
}

/// The lines of `ran.txt` after the first `seen`, sorted.
fn sorted_from(t: &Test, seen: usize) -> Vec<String> {
    let mut v: Vec<String> = lines(t, "ran.txt").into_iter().skip(seen).collect();
    v.sort();
    v
}

#[test]
fn weekly_on_a_date_step_builds_the_weeks_seven_dates_once_a_week() {
    let t = Test::new().fluxfile(&daily("").replace("@daily", "@weekly").replace("2024-01-01", "2024-02-26"));
    // Monday 4 March: the week of 26 February (Monday) to 3 March (Sunday) has ended.
    let got = ticks(&t, "2024-03-04T00:30:00Z", 14);
    let week = |from: u32| -> Vec<String> {
        (0..7)
            .map(|i| {
                (chrono::NaiveDate::from_ymd_opt(2024, 2, 26).unwrap() + chrono::Duration::days(i64::from(from) + i))
                    .format("%Y-%m-%d")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        got,
        [
            ("2024-03-04T00:30".to_string(), week(0)),
            ("2024-03-11T00:30".to_string(), week(7)),
            ("2024-03-18T00:30".to_string(), week(14)),
        ]
    );
}

#[test]
fn weekly_on_a_week_step_builds_one_week_per_week() {
    let t = Test::new().fluxfile(
        r#"
[step.weekly]
params = { week = "week" }
start = "2024-W09"
outputs = ["out/{{ week }}.txt"]
run = "echo {{ week }} {{ interval_start }} {{ interval_end }} >> ran.txt; touch {{ outputs[0] }}"
schedule = "@weekly"
"#,
    );
    let got = ticks(&t, "2024-03-04T00:30:00Z", 14);
    let w = |s: &str| vec![s.to_string()];
    assert_eq!(
        got,
        [
            ("2024-03-04T00:30".to_string(), w("2024-W09 2024-02-26T00:00:00Z 2024-03-04T00:00:00Z")),
            ("2024-03-11T00:30".to_string(), w("2024-W10 2024-03-04T00:00:00Z 2024-03-11T00:00:00Z")),
            ("2024-03-18T00:30".to_string(), w("2024-W11 2024-03-11T00:00:00Z 2024-03-18T00:00:00Z")),
        ]
    );
}

#[test]
fn weekly_catch_up_of_a_week_step_builds_each_ended_week_once() {
    let t = Test::new().fluxfile(
        r#"
[step.weekly]
params = { week = "week" }
start = "2023-W51"
outputs = ["out/{{ week }}.txt"]
run = "echo {{ week }} >> ran.txt; touch {{ outputs[0] }}"
schedule = "@weekly"
"#,
    );
    // Wednesday 10 January 2024: weeks 2023-W51, W52 and 2024-W01 have ended (2023 has 52).
    once(&t, "2024-01-10T12:00:00Z").assert_success();
    assert_eq!(sorted(&t, "ran.txt"), ["2023-W51", "2023-W52", "2024-W01"]);
    once(&t, "2024-01-14T23:00:00Z").assert_success();
    assert_eq!(lines(&t, "ran.txt").len(), 3, "week 2 ends on Monday");
    once(&t, "2024-01-15T00:00:30Z").assert_success();
    assert_eq!(lines(&t, "ran.txt")[3..], ["2024-W02"]);
}

// ---- a scheduler killed with -9 ----

/// A daily step whose task, until `go` exists, leaves a background `sleep` in its process
/// group (its pid in `bg.pid`) and waits for it.
fn lingering() -> String {
    daily("").replace(
        r#"run = "echo {{ date }} >> ran.txt; echo {{ date }} > {{ outputs[0] }}""#,
        r#"run = "echo {{ date }} >> ran.txt; if [ ! -e go ]; then sleep 300 & echo $! > bg.pid; wait; fi; echo {{ date }} > {{ outputs[0] }}""#,
    )
}

/// Start a looping scheduler on `lingering()`, wait until its task's background process
/// runs, kill the scheduler with SIGKILL; returns that process's pid, still alive.
fn kill_9_mid_task(t: &Test) -> String {
    let r = t.spawn_args(["schedule", "--tick", "50ms", "--now", "2024-01-02T00:30:00Z"]);
    wait_for("the task's background process", || t.maybe_read("bg.pid").is_some_and(|b| b.ends_with(b"\n")));
    let bg = t.read("bg.pid").trim().to_string();
    r.kill9();
    // The task's shell dies with flux; what it started in the background does not.
    assert!(!gone(&bg), "the background process died with the scheduler");
    bg
}

#[test]
fn a_scheduler_killed_with_kill_9_is_taken_over_and_its_tasks_do_not_survive() {
    let t = Test::new().fluxfile(&lingering());
    let bg = kill_9_mid_task(&t);
    t.write("go", "");
    // The dead holder's lease is taken over; its unfinished interval is built again.
    let o = once(&t, "2024-01-02T01:00:00Z");
    o.assert_success().stderr_has("ended 1 process group(s) left running by flux run(s)");
    wait_for("the dead scheduler's task to end", || gone(&bg));
    assert_eq!(t.read("out/2024-01-01.txt"), "2024-01-01\n", "{}", o.describe());
    assert_eq!(lines(&t, "ran.txt"), ["2024-01-01", "2024-01-01"]);
    // The interval is done: a later tick builds nothing again.
    once(&t, "2024-01-02T02:00:00Z").assert_success();
    assert_eq!(lines(&t, "ran.txt").len(), 2);
}

#[test]
fn a_scheduler_taking_over_ends_the_dead_ones_tasks_even_with_nothing_to_build() {
    let t = Test::new().fluxfile(&lingering());
    let bg = kill_9_mid_task(&t);
    // The step is no longer scheduled: the new scheduler builds nothing.
    t.write("Fluxfile", lingering().replace("schedule = \"@daily\"", ""));
    let o = once(&t, "2024-01-02T01:00:00Z");
    o.assert_success().stderr_has("0 scheduled step(s)").stderr_has("ended 1 process group(s)");
    assert!(gone(&bg), "the dead scheduler's task outlived the takeover\n{}", o.describe());
}
