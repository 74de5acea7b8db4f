//! Bounds on the numbers a Fluxfile or the command line may give, and the saturating
//! arithmetic flux does with them, so that no value `flux check` accepts can make flux
//! panic, overflow or run out of memory later (docs/fluxfile.md, "Limits").
//!
//! The bounds are far beyond any sensible setting: they exist to turn a typo (`retries =
//! 1000000`, `timeout = "99999999d"`) into an error at load, with the key's location,
//! instead of a crash halfway through a build.

use std::time::Duration;

/// The longest duration any key takes (`timeout`, `retry_delay`, `wait`, `poll`,
/// `generate_timeout`, `[notify] timeout`, `--wait`): 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);
/// How `MAX_DURATION` is written in messages.
pub const MAX_DURATION_TEXT: &str = "365d";

/// `[flux] jobs` and `-j`.
pub const MAX_JOBS: i64 = 1024;
/// A step's `retries`.
pub const MAX_RETRIES: i64 = 1000;
/// A step's `retry_backoff`.
pub const MAX_BACKOFF: f64 = 100.0;
/// A step's `cpus`.
pub const MAX_CPUS: i64 = 65_536;
/// A step's `mem`: 1 PiB.
pub const MAX_MEM: u64 = 1 << 50;
/// A pool's size.
pub const MAX_POOL: i64 = 1_000_000;
/// `[notify] retries`.
pub const MAX_NOTIFY_RETRIES: i64 = 10;
/// The longest pause between two tries of a webhook.
pub const MAX_NOTIFY_DELAY: Duration = Duration::from_secs(30);

/// `[flux] max_tasks`: its default (SPEC §2) and the largest value it takes.
pub const DEFAULT_MAX_TASKS: u64 = 10_000_000;
pub const MAX_MAX_TASKS: i64 = 1_000_000_000;

/// `[flux] generate_timeout` by default.
pub const DEFAULT_GENERATE_TIMEOUT: Duration = Duration::from_secs(60);

/// A retry delay grown by `retry_backoff` stops growing here (Airflow's cap on exponential
/// backoff); a `retry_delay` set longer than this is used as it is, never grown.
pub const MAX_GROWN_DELAY: Duration = Duration::from_secs(86_400);

/// The delay before retry number `retry` (1 for the first retry): `delay × backoff^(retry-1)`,
/// saturating at the larger of `delay` and [`MAX_GROWN_DELAY`]. Never panics, whatever the
/// inputs (an infinite or NaN factor saturates too).
pub fn retry_delay(delay: Duration, backoff: f64, retry: u32) -> Duration {
    if delay.is_zero() {
        return delay;
    }
    let cap = delay.max(MAX_GROWN_DELAY);
    let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
    let secs = delay.as_secs_f64() * backoff.powi(exp);
    if !secs.is_finite() || secs < 0.0 || secs >= cap.as_secs_f64() {
        return cap;
    }
    Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_saturates() {
        let s = Duration::from_secs;
        assert_eq!(retry_delay(s(5), 1.0, 1), s(5));
        assert_eq!(retry_delay(s(5), 2.0, 1), s(5));
        assert_eq!(retry_delay(s(5), 2.0, 3), s(20));
        assert_eq!(retry_delay(s(5), 2.0, 64), MAX_GROWN_DELAY);
        assert_eq!(retry_delay(s(5), 1e308, 2), MAX_GROWN_DELAY);
        assert_eq!(retry_delay(s(5), f64::INFINITY, 2), MAX_GROWN_DELAY);
        assert_eq!(retry_delay(s(5), f64::NAN, 2), MAX_GROWN_DELAY);
        assert_eq!(retry_delay(Duration::ZERO, 1e308, u32::MAX), Duration::ZERO);
        assert_eq!(retry_delay(s(3 * 86_400), 2.0, 5), s(3 * 86_400));
        assert_eq!(retry_delay(MAX_DURATION, 100.0, u32::MAX), MAX_DURATION);
    }
}
