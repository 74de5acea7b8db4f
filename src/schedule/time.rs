//! Time windows of the scheduler (SPEC §10): when a schedule fires and when an interval
//! ends, in `[flux] timezone`. Hours are UTC hours whatever the zone; dates, weeks and
//! months begin and end at local midnight, so a day can last 23 or 25 hours.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::fluxfile::Schedule;
use crate::param::{ParamKind, ParamValue};

/// `[start, end)` of a time value as instants: hours in UTC, the rest in `tz`.
pub fn interval(kind: &ParamKind, v: ParamValue, tz: Tz) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    crate::param::interval_in(kind, v, tz)
}

/// The latest value of `kind` whose interval has ended at or before `now`.
pub fn last_ended(kind: &ParamKind, now: DateTime<Utc>, tz: Tz) -> Option<ParamValue> {
    if matches!(kind, ParamKind::Hour) {
        return kind.last_ended(now.naive_utc());
    }
    kind.last_ended(now.with_timezone(&tz).naive_local())
}

/// The first time `schedule` fires strictly after `after`, in `tz` (croner semantics: a
/// fixed time inside a DST gap fires once, just after the gap; a repeated time fires once).
pub fn next_fire(schedule: &Schedule, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    let cron = crate::fluxfile::cron_of(schedule.text()).ok()?;
    let local = after.with_timezone(&tz);
    cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
}

/// Unix seconds of an instant (sub-second precision kept).
pub fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9
}

/// The instant of Unix seconds.
pub fn from_secs(s: f64) -> DateTime<Utc> {
    let whole = s.floor();
    let nanos = ((s - whole) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
    Utc.timestamp_opt(whole as i64, nanos).single().unwrap_or_default()
}

/// RFC 3339 in the zone (for messages and hook variables).
pub fn show(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn berlin_spring_forward_day_has_23_hours() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let k = ParamKind::Date;
        let d = k.parse("2024-03-31").unwrap();
        let (a, b) = interval(&k, d, tz).unwrap();
        assert_eq!(a, utc("2024-03-30T23:00:00Z"));
        assert_eq!(b, utc("2024-03-31T22:00:00Z"));
        assert_eq!((b - a).num_hours(), 23);
        assert_eq!(last_ended(&k, utc("2024-03-31T21:59:59Z"), tz), k.parse("2024-03-30").ok());
        assert_eq!(last_ended(&k, utc("2024-03-31T22:00:00Z"), tz), Some(d));
    }

    #[test]
    fn fixed_time_in_the_gap_fires_once_after_it() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let s = Schedule::Cron("30 2 * * *".into());
        let first = next_fire(&s, utc("2024-03-30T23:10:00Z"), tz).unwrap();
        assert_eq!(first, utc("2024-03-31T01:00:00Z"));
        let second = next_fire(&s, first, tz).unwrap();
        assert_eq!(second, utc("2024-04-01T00:30:00Z"));
    }

    #[test]
    fn hours_are_utc_whatever_the_zone() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let k = ParamKind::Hour;
        let now = utc("2024-03-10T07:30:00Z");
        assert_eq!(last_ended(&k, now, tz), k.parse("2024-03-10T06").ok());
    }
}
