//! `flux schedule` across daylight-saving transitions (SPEC §10): Europe/Berlin and
//! America/New_York, spring-forward and fall-back days, for `@hourly`, `@daily`,
//! `30 2 * * *`, `0 */2 * * *` and `0,15,30,45 6-22 * * *`, each on a date step and on an
//! hour step. The scheduler is driven with `--once` at every half hour across the
//! transition (`--now`); each task appends a line to `ran.txt`, and what each tick added
//! is checked: intervals contiguous, increasing, never twice; the transition day lasting
//! 23 or 25 hours; a time in the gap run once just after it, a repeated time once.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};

use crate::test::*;

const SCHEDULES: [(&str, &str); 5] = [
    ("hourly", "@hourly"),
    ("daily", "@daily"),
    ("at0230", "30 2 * * *"),
    ("every2h", "0 */2 * * *"),
    ("quarters", "0,15,30,45 6-22 * * *"),
];

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A Fluxfile with one date step and one hour step per schedule.
fn fluxfile(zone: &str, date_start: &str, hour_start: &str) -> String {
    let mut f = format!("[flux]\ntimezone = \"{zone}\"\n");
    for (name, sched) in SCHEDULES {
        for (prefix, kind, start) in [("d", "date", date_start), ("h", "hour", hour_start)] {
            f.push_str(&format!(
                r#"
[step.{prefix}_{name}]
params = {{ t = "{kind}" }}
start = "{start}"
outputs = ["{prefix}_{name}/{{{{ t }}}}"]
run = "echo {prefix}_{name} {{{{ t }}}} {{{{ interval_start }}}} {{{{ interval_end }}}} >> ran.txt; touch {{{{ outputs[0] }}}}"
schedule = "{sched}"
"#
            ));
        }
    }
    f
}

/// One line of `ran.txt`: the step, its time value and its interval, and the tick it ran in.
#[derive(Debug, Clone)]
struct Ran {
    step: String,
    value: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    tick: DateTime<Utc>,
}

/// Run `flux schedule --once` at every half hour from `from` to `to`; returns what ran.
fn drive(t: &Test, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Ran> {
    let mut out: Vec<Ran> = Vec::new();
    let mut seen = 0;
    let mut now = from;
    while now <= to {
        let o = t.run_args(["schedule", "--once", "--now", &now.to_rfc3339()]);
        assert_eq!(o.status(), 0, "{}", o.describe());
        assert!(!o.stderr().contains("panicked"), "{}", o.describe());
        let text = t.maybe_read("ran.txt").map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut new: Vec<Ran> = lines[seen..]
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f.len(), 4, "unexpected line {l:?}");
                Ran { step: f[0].into(), value: f[1].into(), start: utc(f[2]), end: utc(f[3]), tick: now }
            })
            .collect();
        seen = lines.len();
        // Tasks of one tick run in parallel: order within a tick is by value.
        new.sort_by(|a, b| (&a.step, &a.value).cmp(&(&b.step, &b.value)));
        out.extend(new);
        now += Duration::minutes(30);
    }
    out
}

fn of<'a>(ran: &'a [Ran], step: &str) -> Vec<&'a Ran> {
    ran.iter().filter(|r| r.step == step).collect()
}

/// The value after `v` (a date or a UTC hour).
fn next(v: &str) -> String {
    if v.len() == 10 {
        let d = NaiveDate::parse_from_str(v, "%Y-%m-%d").unwrap();
        (d + Duration::days(1)).format("%Y-%m-%d").to_string()
    } else {
        let h = NaiveDateTime::parse_from_str(&format!("{v}:00"), "%Y-%m-%dT%H:%M").unwrap();
        (h + Duration::hours(1)).format("%Y-%m-%dT%H").to_string()
    }
}

/// Every step built its intervals once each, in order, without a gap, from its start;
/// consecutive intervals meet (one's end is the next one's start).
fn assert_contiguous(ran: &[Ran], date_start: &str, hour_start: &str) {
    for (name, _) in SCHEDULES {
        for (prefix, start) in [("d", date_start), ("h", hour_start)] {
            let step = format!("{prefix}_{name}");
            let rs = of(ran, &step);
            assert!(!rs.is_empty(), "{step} never ran");
            assert_eq!(rs[0].value, start, "{step} did not start at its start: {rs:#?}");
            for w in rs.windows(2) {
                assert_eq!(w[1].value, next(&w[0].value), "{step}: not contiguous, or twice: {rs:#?}");
                assert_eq!(w[1].start, w[0].end, "{step}: intervals do not meet: {rs:#?}");
                assert!(w[1].tick >= w[0].tick, "{step}: out of order: {rs:#?}");
            }
            for r in &rs {
                assert!(r.end <= r.tick, "{step}: {} built before it ended: {r:?}", r.value);
            }
        }
    }
}

/// The ticks at which a step built something.
fn build_ticks(ran: &[Ran], step: &str) -> Vec<DateTime<Utc>> {
    let mut v: Vec<DateTime<Utc>> = of(ran, step).iter().map(|r| r.tick).collect();
    v.dedup();
    v
}

struct Case {
    zone: &'static str,
    /// The transition day and the day before it.
    day: &'static str,
    eve: &'static str,
    /// The transition day's interval in UTC, and its length in hours.
    day_start: &'static str,
    day_end: &'static str,
    hours: i64,
    /// The first hour step value, the first and last tick.
    hour_start: &'static str,
    from: &'static str,
    to: &'static str,
    /// When `30 2 * * *` fires on the transition day and on the day after.
    fire_day: &'static str,
    fire_after: &'static str,
}

fn check(c: &Case) {
    let t = Test::new().fluxfile(&fluxfile(c.zone, c.eve, c.hour_start));
    let ran = drive(&t, utc(c.from), utc(c.to));
    assert_contiguous(&ran, c.eve, c.hour_start);
    let (from, to) = (utc(c.from), utc(c.to));
    // The transition day lasts 23 or 25 hours, and every date step built it after its end.
    for (name, _) in SCHEDULES {
        let step = format!("d_{name}");
        let day = of(&ran, &step).into_iter().find(|r| r.value == c.day).cloned();
        let day = day.unwrap_or_else(|| panic!("{step} did not build {}: {ran:#?}", c.day));
        assert_eq!((day.start, day.end), (utc(c.day_start), utc(c.day_end)), "{step}");
        assert_eq!((day.end - day.start).num_hours(), c.hours, "{step}");
    }
    // @hourly and @daily build a day at the first tick after its local midnight.
    for step in ["d_hourly", "d_daily"] {
        let day = of(&ran, step).into_iter().find(|r| r.value == c.day).unwrap().tick;
        assert_eq!(day, utc(c.day_end), "{step}");
    }
    // 02:30: once on the transition day (just after a gap; once in a repeat), once the day
    // after; the hour step shows every firing, as each builds the hours ended since.
    assert_eq!(build_ticks(&ran, "h_at0230"), [from, utc(c.fire_day), utc(c.fire_after)], "{ran:#?}");
    let d: Vec<(String, DateTime<Utc>)> = of(&ran, "d_at0230").iter().map(|r| (r.value.clone(), r.tick)).collect();
    assert_eq!(d, [(c.eve.to_string(), utc(c.fire_day)), (c.day.to_string(), utc(c.fire_after))]);
    // @hourly on the hour step: every UTC hour ended by the last tick, built each hour.
    let last = of(&ran, "h_hourly").last().unwrap().end;
    assert_eq!(last, to, "h_hourly did not catch up to the last tick");
    let ticks = build_ticks(&ran, "h_hourly");
    assert_eq!(ticks.len() as i64, (to - from).num_hours() + 1, "h_hourly did not build every hour: {ticks:?}");
}

#[test]
fn berlin_spring_forward() {
    check(&Case {
        zone: "Europe/Berlin",
        day: "2024-03-31",
        eve: "2024-03-30",
        day_start: "2024-03-30T23:00:00Z",
        day_end: "2024-03-31T22:00:00Z",
        hours: 23,
        hour_start: "2024-03-30T18",
        from: "2024-03-30T21:00:00Z",
        to: "2024-04-01T05:00:00Z",
        // 02:30 does not exist (02:00 CET jumps to 03:00 CEST): 03:00 CEST.
        fire_day: "2024-03-31T01:00:00Z",
        fire_after: "2024-04-01T00:30:00Z",
    });
}

#[test]
fn berlin_fall_back() {
    check(&Case {
        zone: "Europe/Berlin",
        day: "2024-10-27",
        eve: "2024-10-26",
        day_start: "2024-10-26T22:00:00Z",
        day_end: "2024-10-27T23:00:00Z",
        hours: 25,
        hour_start: "2024-10-26T16",
        from: "2024-10-26T20:00:00Z",
        to: "2024-10-28T06:00:00Z",
        // 02:30 comes twice (03:00 CEST goes back to 02:00 CET): the first one only.
        fire_day: "2024-10-27T00:30:00Z",
        fire_after: "2024-10-28T01:30:00Z",
    });
}

#[test]
fn new_york_spring_forward() {
    check(&Case {
        zone: "America/New_York",
        day: "2024-03-10",
        eve: "2024-03-09",
        day_start: "2024-03-10T05:00:00Z",
        day_end: "2024-03-11T04:00:00Z",
        hours: 23,
        hour_start: "2024-03-09T23",
        from: "2024-03-10T03:00:00Z",
        to: "2024-03-11T11:00:00Z",
        // 02:30 does not exist (02:00 EST jumps to 03:00 EDT): 03:00 EDT.
        fire_day: "2024-03-10T07:00:00Z",
        fire_after: "2024-03-11T06:30:00Z",
    });
}

#[test]
fn new_york_fall_back() {
    check(&Case {
        zone: "America/New_York",
        day: "2024-11-03",
        eve: "2024-11-02",
        day_start: "2024-11-03T04:00:00Z",
        day_end: "2024-11-04T05:00:00Z",
        hours: 25,
        hour_start: "2024-11-02T22",
        from: "2024-11-03T02:00:00Z",
        to: "2024-11-04T12:00:00Z",
        // 01:00..02:00 comes twice (02:00 EDT goes back to 01:00 EST); 02:30 EST once.
        fire_day: "2024-11-03T07:30:00Z",
        fire_after: "2024-11-04T07:30:00Z",
    });
}
