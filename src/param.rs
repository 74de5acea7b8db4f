//! Param kinds and values: parse <-> canonical display round-trip, time arithmetic, and
//! the expansion of `--date`, `--date-range` and step domains into values.
//!
//! Values are compact (`Copy`, 24 bytes) so a task's params cost little to store or hash;
//! free string values are interned once per process ([`intern`]).
//! This module knows nothing about steps, templates or files.

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use std::fmt::Write as _;
use std::time::Duration;

/// The kind of one param, as declared in `params = { … }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamKind {
    /// `YYYY-MM-DD`
    Date,
    /// `YYYY-MM-DDTHH`
    Hour,
    /// `YYYY-MM`
    Month,
    /// An ISO week, `YYYY-Www` (`2024-W09`).
    Week,
    /// One of a fixed list of strings (`region = ["eu", "us"]`).
    Choice(Choices),
    /// A whole number (`"int"`, or `{ kind = "int", min = 0, max = 99 }`); the bounds,
    /// when given, are inclusive, and with both it has a domain.
    Int { min: Option<i64>, max: Option<i64> },
    /// Any path-safe string (see [`check_segment`]).
    Str,
}

/// The values of a list param, in order, with an index from value to position (a list
/// of 20,000 values was scanned once per value parsed: quadratic in planning).
#[derive(Debug, Clone)]
pub struct Choices {
    list: Vec<String>,
    index: std::collections::HashMap<String, u32, rustc_hash::FxBuildHasher>,
}

impl Choices {
    pub fn new(list: Vec<String>) -> Choices {
        let mut index = std::collections::HashMap::with_capacity_and_hasher(list.len(), Default::default());
        for (i, v) in list.iter().enumerate() {
            // A repeated value keeps its first position, as a scan would find it.
            index.entry(v.clone()).or_insert(u32::try_from(i).unwrap_or(u32::MAX));
        }
        Choices { list, index }
    }

    /// The position of `value` in the list.
    pub fn position(&self, value: &str) -> Option<u32> {
        self.index.get(value).copied()
    }
}

impl std::ops::Deref for Choices {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.list
    }
}

impl PartialEq for Choices {
    fn eq(&self, other: &Choices) -> bool {
        self.list == other.list
    }
}

impl Eq for Choices {}

/// One param value. Time values are counted from the Unix epoch so that they order,
/// hash and step (`+1`) as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamValue {
    /// Days since 1970-01-01.
    Date(i32),
    /// Hours since 1970-01-01T00.
    Hour(i64),
    /// Months since 0000-01 (`year * 12 + month - 1`).
    Month(i32),
    /// Index into the kind's list.
    Choice(u32),
    /// ISO weeks since the week of 1970-01-01 (whose Monday is 1969-12-29).
    Week(i32),
    /// An `int` param's value.
    Int(i64),
    /// A `string` param's value, interned.
    Str(&'static str),
}

/// Why `s` cannot be a free param value, or `Ok`: a value is one path segment, so it may
/// not be empty, `.` or `..`, contain `/`, start with `-` (it could read as an option in a
/// command), or contain characters that task ids or `--param` lists use (`,` `=` `[` `]`),
/// whitespace or control characters.
pub fn check_segment(s: &str) -> Result<(), String> {
    let why = if s.is_empty() {
        "it is empty"
    } else if s == "." || s == ".." {
        "`.` and `..` name folders"
    } else if s.contains('/') || s.contains('\\') {
        "it contains a path separator"
    } else if s.starts_with('-') {
        "it starts with `-`"
    } else if s.contains([',', '=', '[', ']']) {
        "`,` `=` `[` `]` separate values in task ids and --param lists"
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it contains whitespace or a control character"
    } else {
        return Ok(());
    };
    Err(format!("`{s}` cannot be a param value: {why} (a value must be one path segment)"))
}

/// The interned copy of `s`: every distinct string value is stored once per process, so
/// values stay `Copy` and compare by content.
pub fn intern(s: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SET: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = SET.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&v) = set.get(s) {
        return v;
    }
    let v: &'static str = Box::leak(Box::from(s));
    set.insert(v);
    v
}

/// Days since 1970-01-01 of the Monday of week `w` (see [`ParamValue::Week`]).
fn week_monday(w: i64) -> i64 {
    w * 7 - 3
}

/// The week (see [`ParamValue::Week`]) that contains day `days`.
fn week_of_day(days: i64) -> i64 {
    (days + 3).div_euclid(7)
}

/// (ISO year, week number) of week `w`: the year of its Thursday.
fn iso_week_parts(w: i64) -> (i64, u32) {
    let thursday = week_monday(w) + 3;
    let (y, _, _) = civil_from_days(thursday);
    (y, ((thursday - days_from_civil(y, 1, 1)) / 7 + 1) as u32)
}

/// `YYYY-Www` -> week.
fn parse_week(b: &[u8]) -> Option<i64> {
    if b.len() != 8 || b[4] != b'-' || b[5] != b'W' {
        return None;
    }
    let y = i64::from(digits(&b[0..4])?);
    let n = i64::from(digits(&b[6..8])?);
    let first = week_of_day(days_from_civil(y, 1, 4));
    let w = first + n - 1;
    (n >= 1 && iso_week_parts(w).0 == y).then_some(w)
}

/// A canonical integer: `0`, `42`, `-7` (no sign on positives, no leading zeros).
fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    if s == "-0" {
        return None;
    }
    s.parse().ok()
}

/// The calendar fields of the start of a time value (see [`ParamValue::civil`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// The year (0000..=9999 for values that came from `parse`).
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    /// 0..=23 (0 for dates and months)
    pub hour: u32,
    /// Day of the year, 1..=366.
    pub ordinal: u32,
}

/// The most values one `--date-range` (or `date_range()` in a template) may expand to:
/// about 1141 years of hours. Beyond that the range is almost certainly a typo.
pub const MAX_EXPANSION: u64 = 10_000_000;

/// First and last year a canonical time value can be written with (four digits).
const MIN_YEAR: i64 = 0;
const MAX_YEAR: i64 = 9999;

// ---------------------------------------------------------------------------------------
// Calendar arithmetic (proleptic Gregorian), on plain integers: no panics, no chrono.
// ---------------------------------------------------------------------------------------

fn is_leap(y: i64) -> bool {
    y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0)
}

/// Days in month `m` (1..=12) of year `y`.
fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of `y-m-d` (H. Hinnant's `days_from_civil`). `y` must be far from
/// the ends of `i64` (any year that fits an `i32` is fine).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
/// Valid for every `|z| <= i64::MAX / 2`, far beyond any value this module produces.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe.saturating_add(era.saturating_mul(400));
    (if m <= 2 { y.saturating_add(1) } else { y }, m, d)
}

fn month_index(y: i64, m: u32) -> i64 {
    y * 12 + i64::from(m) - 1
}

fn month_parts(idx: i64) -> (i64, u32) {
    (idx.div_euclid(12), idx.rem_euclid(12) as u32 + 1)
}

/// Day count of the first day of month `idx` (`year * 12 + month - 1`).
fn month_first_day(idx: i64) -> i64 {
    let (y, m) = month_parts(idx);
    days_from_civil(y, m, 1)
}

/// Month index of the month that contains day `days`.
fn month_of_day(days: i64) -> i64 {
    let (y, m, _) = civil_from_days(days);
    month_index(y, m)
}

// ---------------------------------------------------------------------------------------
// Canonical text forms.
// ---------------------------------------------------------------------------------------

/// The value of `b` if it is made only of ASCII digits (at most 9 of them).
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0')))
}

/// Why a string of the right shape is still not a valid date.
enum DateError {
    /// Not `YYYY-MM-DD` at all.
    Shape,
    /// Day outside the month.
    Day { y: i64, m: u32, days: u32 },
}

/// `YYYY-MM` -> (year, month).
fn parse_month_parts(b: &[u8]) -> Result<(i64, u32), DateError> {
    if b.len() != 7 || b[4] != b'-' {
        return Err(DateError::Shape);
    }
    let y = digits(&b[0..4]).ok_or(DateError::Shape)?;
    let m = digits(&b[5..7]).ok_or(DateError::Shape)?;
    if !(1..=12).contains(&m) {
        return Err(DateError::Shape);
    }
    Ok((i64::from(y), m))
}

/// `YYYY-MM-DD` -> days since the epoch.
fn parse_date_days(b: &[u8]) -> Result<i64, DateError> {
    if b.len() != 10 || b[7] != b'-' {
        return Err(DateError::Shape);
    }
    let (y, m) = parse_month_parts(&b[0..7])?;
    let d = digits(&b[8..10]).ok_or(DateError::Shape)?;
    let days = days_in_month(y, m);
    if d == 0 || d > days {
        return Err(DateError::Day { y, m, days });
    }
    Ok(days_from_civil(y, m, d))
}

/// `YYYY-MM-DDTHH` -> hours since the epoch.
fn parse_hour_hours(b: &[u8]) -> Result<i64, DateError> {
    if b.len() != 13 || b[10] != b'T' {
        return Err(DateError::Shape);
    }
    let days = parse_date_days(&b[0..10])?;
    let h = digits(&b[11..13]).ok_or(DateError::Shape)?;
    if h > 23 {
        return Err(DateError::Shape);
    }
    Ok(days * 24 + i64::from(h))
}

fn date_error(s: &str, e: DateError, what: &str, expected: &str) -> String {
    match e {
        DateError::Shape => format!("`{s}` is not a valid {what} (expected {expected})"),
        DateError::Day { y, m, days } => {
            format!("`{s}` is not a valid {what} ({y:04}-{m:02} has {days} days)")
        }
    }
}

const DATE_FORM: &str = "YYYY-MM-DD";
const HOUR_FORM: &str = "YYYY-MM-DDTHH, e.g. 2024-03-01T02";
const MONTH_FORM: &str = "YYYY-MM";
const WEEK_FORM: &str = "YYYY-Www, an ISO week such as 2024-W09";

impl ParamValue {
    /// Recognises the shape of a canonical time string: a date (`2024-01-05`), an hour
    /// (`2024-03-01T02`), an ISO week (`2024-W09`) or a month (`2024-02`). `None` for
    /// anything else.
    pub fn parse_time(s: &str) -> Option<ParamValue> {
        let b = s.as_bytes();
        match b.len() {
            10 => parse_date_days(b).ok().map(|d| ParamValue::Date(d as i32)),
            13 => parse_hour_hours(b).ok().map(ParamValue::Hour),
            8 => parse_week(b).map(|w| ParamValue::Week(w as i32)),
            7 => parse_month_parts(b).ok().map(|(y, m)| ParamValue::Month(month_index(y, m) as i32)),
            _ => None,
        }
    }

    /// True for date, hour, week and month values.
    pub fn is_time(self) -> bool {
        matches!(self, ParamValue::Date(_) | ParamValue::Hour(_) | ParamValue::Month(_) | ParamValue::Week(_))
    }

    /// Appends the canonical form of a time value (`Choice` values need their kind: use
    /// [`ParamKind::write`]; here they append `#index`). Years outside 0000..=9999 are
    /// written with a sign (`+10000-01-01`), a form `parse` does not accept.
    pub fn write_time(self, out: &mut String) {
        self.write_with(out, true);
    }

    /// Appends the compact form of a time value, without separators: `20240105`,
    /// `2024010502`, `202402`, `2024W09` (Airflow's `ds_nodash`).
    pub fn write_nodash(self, out: &mut String) {
        self.write_with(out, false);
    }

    fn write_with(self, out: &mut String, separators: bool) {
        let (y, m, d, h) = match self {
            ParamValue::Date(d) => {
                let (y, m, d) = civil_from_days(i64::from(d));
                (y, m, d, None)
            }
            ParamValue::Hour(h) => {
                let (y, m, d) = civil_from_days(h.div_euclid(24));
                (y, m, d, Some(h.rem_euclid(24) as u32))
            }
            ParamValue::Month(m) => {
                let (y, m) = month_parts(i64::from(m));
                (y, m, 0, None)
            }
            ParamValue::Week(w) => {
                let (y, n) = iso_week_parts(i64::from(w));
                write_year(y, out);
                out.push_str(if separators { "-W" } else { "W" });
                push2(n, out);
                return;
            }
            ParamValue::Choice(i) => {
                let _ = write!(out, "#{i}");
                return;
            }
            ParamValue::Int(n) => {
                let _ = write!(out, "{n}");
                return;
            }
            ParamValue::Str(s) => {
                out.push_str(s);
                return;
            }
        };
        write_year(y, out);
        if separators {
            out.push('-');
        }
        push2(m, out);
        if d > 0 {
            if separators {
                out.push('-');
            }
            push2(d, out);
        }
        if let Some(h) = h {
            if separators {
                out.push('T');
            }
            push2(h, out);
        }
    }

    /// The calendar fields of the start of a time value (a week's Monday; `None` for
    /// values that are not times).
    pub fn civil(self) -> Option<Civil> {
        let (days, hour) = match self {
            ParamValue::Date(d) => (i64::from(d), 0),
            ParamValue::Hour(h) => (h.div_euclid(24), h.rem_euclid(24) as u32),
            ParamValue::Month(m) => (month_first_day(i64::from(m)), 0),
            ParamValue::Week(w) => (week_monday(i64::from(w)), 0),
            ParamValue::Choice(_) | ParamValue::Int(_) | ParamValue::Str(_) => return None,
        };
        let (year, month, day) = civil_from_days(days);
        const BEFORE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let leap_day = u32::from(month > 2 && is_leap(year));
        let ordinal = BEFORE[month.saturating_sub(1) as usize % 12] + day + leap_day;
        Some(Civil { year, month, day, hour, ordinal })
    }

    /// True for a time value whose year is within 0000..=9999, the years canonical
    /// forms can express (always true for `Choice`).
    pub fn in_range(self) -> bool {
        let days = match self {
            ParamValue::Date(d) => i64::from(d),
            ParamValue::Hour(h) => h.div_euclid(24),
            ParamValue::Month(m) => {
                return (MIN_YEAR..=MAX_YEAR).contains(&month_parts(i64::from(m)).0);
            }
            ParamValue::Week(w) => {
                return (MIN_YEAR..=MAX_YEAR).contains(&iso_week_parts(i64::from(w)).0);
            }
            ParamValue::Choice(_) | ParamValue::Int(_) | ParamValue::Str(_) => return true,
        };
        (days_from_civil(MIN_YEAR, 1, 1)..=days_from_civil(MAX_YEAR, 12, 31)).contains(&days)
    }

    /// The value shifted by `n` of its own unit (days, hours, weeks, months; index for
    /// `Choice`; the number for `Int`), or `None` on overflow or for `Str`. The result may
    /// be out of [`in_range`](Self::in_range).
    pub fn checked_add(self, n: i64) -> Option<ParamValue> {
        Some(match self {
            ParamValue::Date(d) => ParamValue::Date(i32::try_from(i64::from(d).checked_add(n)?).ok()?),
            ParamValue::Hour(h) => ParamValue::Hour(h.checked_add(n)?),
            ParamValue::Month(m) => ParamValue::Month(i32::try_from(i64::from(m).checked_add(n)?).ok()?),
            ParamValue::Choice(c) => ParamValue::Choice(u32::try_from(i64::from(c).checked_add(n)?).ok()?),
            ParamValue::Week(w) => ParamValue::Week(i32::try_from(i64::from(w).checked_add(n)?).ok()?),
            ParamValue::Int(i) => ParamValue::Int(i.checked_add(n)?),
            ParamValue::Str(_) => return None,
        })
    }

    /// The time value moved by `n` calendar months: a month steps by `n`; a date or an
    /// hour keeps its day, clamped to the end of the target month (`2024-01-31` + 1 month
    /// = `2024-02-29`), and its hour. `None` on overflow or for `Choice`.
    pub fn add_months(self, n: i64) -> Option<ParamValue> {
        let shift_day = |days: i64| -> Option<i64> {
            let (y, m, d) = civil_from_days(days);
            let (ny, nm) = month_parts(month_index(y, m).checked_add(n)?);
            if !(-1_000_000..=1_000_000).contains(&ny) {
                return None;
            }
            Some(days_from_civil(ny, nm, d.min(days_in_month(ny, nm))))
        };
        Some(match self {
            ParamValue::Month(_) => return self.checked_add(n),
            ParamValue::Date(d) => ParamValue::Date(i32::try_from(shift_day(i64::from(d))?).ok()?),
            ParamValue::Hour(h) => ParamValue::Hour(shift_day(h.div_euclid(24))? * 24 + h.rem_euclid(24)),
            ParamValue::Week(_) | ParamValue::Choice(_) | ParamValue::Int(_) | ParamValue::Str(_) => return None,
        })
    }

    /// The start of a time value's interval as a chrono date-time (`None` for values that
    /// are not times, or when chrono cannot represent it).
    pub fn start(self) -> Option<NaiveDateTime> {
        let (days, hour) = match self {
            ParamValue::Date(d) => (i64::from(d), 0),
            ParamValue::Hour(h) => (h.div_euclid(24), h.rem_euclid(24) as u32),
            ParamValue::Month(m) => (month_first_day(i64::from(m)), 0),
            ParamValue::Week(w) => (week_monday(i64::from(w)), 0),
            ParamValue::Choice(_) | ParamValue::Int(_) | ParamValue::Str(_) => return None,
        };
        naive(days, hour)
    }

    /// The dates of a week (Monday to Sunday) or a month, in order; `None` for other values.
    pub fn days(self) -> Option<Vec<ParamValue>> {
        let (first, last) = match self {
            ParamValue::Week(w) => (week_monday(i64::from(w)), week_monday(i64::from(w)) + 6),
            ParamValue::Month(m) => (month_first_day(i64::from(m)), month_first_day(i64::from(m) + 1) - 1),
            _ => return None,
        };
        Some(collect_range(first, last, |d| Some(ParamValue::Date(i32::try_from(d).ok()?))))
    }

    /// The week that contains a date or an hour (a week stays itself); `None` otherwise.
    pub fn week(self) -> Option<ParamValue> {
        let days = match self {
            ParamValue::Date(d) => i64::from(d),
            ParamValue::Hour(h) => h.div_euclid(24),
            ParamValue::Week(_) => return Some(self),
            _ => return None,
        };
        i32::try_from(week_of_day(days)).ok().map(ParamValue::Week)
    }
}

fn naive(days: i64, hour: u32) -> Option<NaiveDateTime> {
    let (y, m, d) = civil_from_days(days);
    NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)?.and_hms_opt(hour, 0, 0)
}

fn push2(v: u32, out: &mut String) {
    out.push(char::from(b'0' + (v / 10 % 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

fn write_year(y: i64, out: &mut String) {
    if (MIN_YEAR..=MAX_YEAR).contains(&y) {
        let y = y as u32;
        push2(y / 100, out);
        push2(y % 100, out);
    } else {
        let _ = write!(out, "{y:+05}");
    }
}

fn days_of(d: NaiveDate) -> i64 {
    days_from_civil(i64::from(d.year()), d.month(), d.day())
}

/// Collects `a..=b` mapped by `f`, pushing one by one so that no size hint can overflow.
fn collect_range<T>(a: i64, b: i64, f: impl Fn(i64) -> Option<T>) -> Vec<T> {
    let mut out = Vec::new();
    if a > b {
        return out;
    }
    let len = (i128::from(b) - i128::from(a) + 1).min(1 << 20) as usize;
    out.reserve(len);
    let mut x = a;
    loop {
        if let Some(v) = f(x) {
            out.push(v);
        }
        if x == b {
            break;
        }
        x += 1;
    }
    out
}

/// The shape of one end of a `--date-range`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Date,
    Hour,
    Month,
    Week,
}

impl Shape {
    fn of(v: ParamValue) -> Option<Shape> {
        match v {
            ParamValue::Date(_) => Some(Shape::Date),
            ParamValue::Hour(_) => Some(Shape::Hour),
            ParamValue::Month(_) => Some(Shape::Month),
            ParamValue::Week(_) => Some(Shape::Week),
            ParamValue::Choice(_) | ParamValue::Int(_) | ParamValue::Str(_) => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Date => "a date",
            Shape::Hour => "an hour",
            Shape::Month => "a month",
            Shape::Week => "a week",
        }
    }
}

/// First and last hour (inclusive) a time value covers.
fn hour_span(v: ParamValue) -> Option<(i64, i64)> {
    match v {
        ParamValue::Date(d) => Some((i64::from(d) * 24, i64::from(d) * 24 + 23)),
        ParamValue::Hour(h) => Some((h, h)),
        ParamValue::Month(m) => {
            let first = month_first_day(i64::from(m));
            let next = month_first_day(i64::from(m) + 1);
            Some((first * 24, next * 24 - 1))
        }
        ParamValue::Week(w) => {
            let first = week_monday(i64::from(w));
            Some((first * 24, (first + 7) * 24 - 1))
        }
        ParamValue::Choice(_) | ParamValue::Int(_) | ParamValue::Str(_) => None,
    }
}

impl ParamKind {
    /// True for the date, hour, week and month kinds.
    pub fn is_time(&self) -> bool {
        matches!(self, ParamKind::Date | ParamKind::Hour | ParamKind::Month | ParamKind::Week)
    }

    /// The kind's name as written in a Fluxfile: `date`, `hour`, `week`, `month`, `int`,
    /// `string`, or `list`.
    pub fn name(&self) -> &'static str {
        match self {
            ParamKind::Date => "date",
            ParamKind::Hour => "hour",
            ParamKind::Month => "month",
            ParamKind::Week => "week",
            ParamKind::Choice(_) => "list",
            ParamKind::Int { .. } => "int",
            ParamKind::Str => "string",
        }
    }

    /// Every value of a kind that lists them: a list's values, an int's `min..=max` when
    /// both bounds are given (`None` past [`MAX_EXPANSION`] values). `None` for kinds
    /// without a domain of their own (time kinds take theirs from the step, strings have none).
    pub fn domain(&self) -> Option<Vec<ParamValue>> {
        match self {
            ParamKind::Choice(all) => Some((0..all.len() as u32).map(ParamValue::Choice).collect()),
            ParamKind::Int { min: Some(a), max: Some(b) } => {
                let count = (i128::from(*b) - i128::from(*a) + 1).max(0);
                (count <= i128::from(MAX_EXPANSION)).then(|| collect_range(*a, *b, |v| Some(ParamValue::Int(v))))
            }
            _ => None,
        }
    }

    /// Parses the canonical form only: date `2024-01-05`, hour `2024-03-01T02`, month
    /// `2024-02`, choice one of the list. Errors are one sentence a user can act on.
    pub fn parse(&self, s: &str) -> Result<ParamValue, String> {
        let b = s.as_bytes();
        match self {
            ParamKind::Date => {
                parse_date_days(b).map(|d| ParamValue::Date(d as i32)).map_err(|e| date_error(s, e, "date", DATE_FORM))
            }
            ParamKind::Hour => {
                parse_hour_hours(b).map(ParamValue::Hour).map_err(|e| date_error(s, e, "hour", HOUR_FORM))
            }
            ParamKind::Month => parse_month_parts(b)
                .map(|(y, m)| ParamValue::Month(month_index(y, m) as i32))
                .map_err(|e| date_error(s, e, "month", MONTH_FORM)),
            ParamKind::Week => parse_week(b)
                .map(|w| ParamValue::Week(w as i32))
                .ok_or_else(|| format!("`{s}` is not a valid week (expected {WEEK_FORM})")),
            ParamKind::Choice(list) => match list.position(s) {
                Some(i) => Ok(ParamValue::Choice(i)),
                None if list.is_empty() => Err(format!("`{s}` is not allowed: the param's list of values is empty")),
                None => Err(format!("`{s}` is not one of the allowed values: {}", list.join(", "))),
            },
            ParamKind::Int { min, max } => {
                let n = parse_int(s).ok_or_else(|| format!("`{s}` is not a whole number (e.g. 0, 42, -7)"))?;
                if let Some(m) = min.filter(|m| n < *m) {
                    return Err(format!("`{s}` is below the param's minimum of {m}"));
                }
                if let Some(m) = max.filter(|m| n > *m) {
                    return Err(format!("`{s}` is above the param's maximum of {m}"));
                }
                Ok(ParamValue::Int(n))
            }
            ParamKind::Str => check_segment(s).map(|()| ParamValue::Str(intern(s))),
        }
    }

    /// Like [`parse`](Self::parse), but for a step's `start`/`end` bound, which may be
    /// written coarser than the kind: a date for an hour kind (start -> `T00` of it, end ->
    /// `T23`), a month for an hour kind (its first / last hour), a date for a month kind
    /// (its month), a month for a date kind (start -> first day, end -> last day).
    pub fn parse_bound(&self, s: &str, is_end: bool) -> Result<ParamValue, String> {
        let which = if is_end { "end" } else { "start" };
        let pick = |v: ParamValue| -> ParamValue {
            match (self, v) {
                (ParamKind::Date, ParamValue::Month(m)) => {
                    let first = month_first_day(i64::from(m));
                    let d = if is_end { month_first_day(i64::from(m) + 1) - 1 } else { first };
                    ParamValue::Date(d as i32)
                }
                (ParamKind::Hour, ParamValue::Date(_) | ParamValue::Month(_)) => {
                    let (lo, hi) = hour_span(v).unwrap_or((0, 0));
                    ParamValue::Hour(if is_end { hi } else { lo })
                }
                (ParamKind::Month, ParamValue::Date(d)) => ParamValue::Month(month_of_day(i64::from(d)) as i32),
                (ParamKind::Week, ParamValue::Date(_)) => v.week().unwrap_or(v),
                _ => v,
            }
        };
        let accepted: &[Shape] = match self {
            ParamKind::Choice(_) | ParamKind::Int { .. } | ParamKind::Str => return self.parse(s),
            ParamKind::Date => &[Shape::Date, Shape::Month],
            ParamKind::Hour => &[Shape::Hour, Shape::Date, Shape::Month],
            ParamKind::Month => &[Shape::Month, Shape::Date],
            ParamKind::Week => &[Shape::Week, Shape::Date],
        };
        match ParamValue::parse_time(s) {
            Some(v) if Shape::of(v).is_some_and(|sh| accepted.contains(&sh)) => Ok(pick(v)),
            _ => {
                let forms = match self {
                    ParamKind::Date => "YYYY-MM-DD or YYYY-MM",
                    ParamKind::Hour => "YYYY-MM-DDTHH, YYYY-MM-DD or YYYY-MM",
                    ParamKind::Week => "YYYY-Www or YYYY-MM-DD",
                    _ => "YYYY-MM or YYYY-MM-DD",
                };
                Err(format!("`{s}` is not a valid {which} for a {} param (expected {forms})", self.name()))
            }
        }
    }

    /// The canonical form of `v`.
    pub fn format(&self, v: ParamValue) -> String {
        let mut s = String::with_capacity(13);
        self.write(v, &mut s);
        s
    }

    /// Appends the canonical form of `v` to `out`; time kinds allocate nothing beyond
    /// `out`. A `Choice` index outside the list is written as `#index`.
    pub fn write(&self, v: ParamValue, out: &mut String) {
        match (self, v) {
            (ParamKind::Choice(list), ParamValue::Choice(i)) => match list.get(i as usize) {
                Some(s) => out.push_str(s),
                None => v.write_time(out),
            },
            _ => v.write_time(out),
        }
    }

    /// `--date D`: a date kind takes D, an hour kind every hour of D (24 values), a week
    /// kind the ISO week of D, a month kind the month of D. Other kinds take nothing (empty).
    pub fn expand_date(&self, d: NaiveDate) -> Vec<ParamValue> {
        let days = days_of(d);
        match self {
            ParamKind::Date => vec![ParamValue::Date(days as i32)],
            ParamKind::Hour => (0..24).map(|h| ParamValue::Hour(days * 24 + h)).collect(),
            ParamKind::Month => vec![ParamValue::Month(month_of_day(days) as i32)],
            ParamKind::Week => vec![ParamValue::Week(week_of_day(days) as i32)],
            ParamKind::Choice(_) | ParamKind::Int { .. } | ParamKind::Str => Vec::new(),
        }
    }

    /// `--date-range A..B`, inclusive. A and B have the same shape: both dates, both hours
    /// or both months. Expanded to the kind: a date range for an hour kind gives every hour
    /// of every date, for a month kind each distinct month touched; an hour range for a date
    /// kind gives the distinct dates; a month range for a date kind every date of those
    /// months; and so on. A after B, mixed shapes, a list kind, or more than
    /// [`MAX_EXPANSION`] values are errors.
    pub fn expand_range(&self, a: &str, b: &str) -> Result<Vec<ParamValue>, String> {
        const ANY: &str = "a date (YYYY-MM-DD), an hour (YYYY-MM-DDTHH), a week (YYYY-Www) or a month (YYYY-MM)";
        let va = ParamValue::parse_time(a).ok_or_else(|| format!("`{a}` is not {ANY}"))?;
        let vb = ParamValue::parse_time(b).ok_or_else(|| format!("`{b}` is not {ANY}"))?;
        let (sa, sb) = (Shape::of(va), Shape::of(vb));
        if sa != sb {
            let (na, nb) = (sa.map_or("", Shape::name), sb.map_or("", Shape::name));
            return Err(format!(
                "`{a}..{b}` mixes {na} and {nb}; write both ends the same way (both dates, both hours or both months)"
            ));
        }
        if va > vb {
            return Err(format!("`{a}..{b}` is empty: `{b}` comes before `{a}`; write the earlier end first"));
        }
        let (lo, _) = hour_span(va).unwrap_or((0, 0));
        let (_, hi) = hour_span(vb).unwrap_or((0, 0));
        let (first, last, unit) = match self {
            ParamKind::Hour => (lo, hi, "hours"),
            ParamKind::Date => (lo.div_euclid(24), hi.div_euclid(24), "dates"),
            ParamKind::Month => (month_of_day(lo.div_euclid(24)), month_of_day(hi.div_euclid(24)), "months"),
            ParamKind::Week => (week_of_day(lo.div_euclid(24)), week_of_day(hi.div_euclid(24)), "weeks"),
            ParamKind::Choice(_) | ParamKind::Int { .. } | ParamKind::Str => {
                return Err(format!(
                    "a date range (`{a}..{b}`) cannot set a {} param; pass its values with --param",
                    self.name()
                ));
            }
        };
        let count = (i128::from(last) - i128::from(first) + 1).max(0) as u128;
        if count > u128::from(MAX_EXPANSION) {
            return Err(format!("`{a}..{b}` expands to {count} {unit}, more than the limit of {MAX_EXPANSION}"));
        }
        let make = |x: i64| -> Option<ParamValue> {
            Some(match self {
                ParamKind::Hour => ParamValue::Hour(x),
                ParamKind::Date => ParamValue::Date(i32::try_from(x).ok()?),
                ParamKind::Week => ParamValue::Week(i32::try_from(x).ok()?),
                _ => ParamValue::Month(i32::try_from(x).ok()?),
            })
        };
        Ok(collect_range(first, last, make))
    }

    /// Every value from `a` to `b` inclusive (both of the same variant), in order. Empty if
    /// `a > b` or the variants differ. See [`count_between`](Self::count_between) to check
    /// the size first.
    pub fn values_between(&self, a: ParamValue, b: ParamValue) -> Vec<ParamValue> {
        use ParamValue as V;
        match (a, b) {
            (V::Date(x), V::Date(y)) => collect_range(i64::from(x), i64::from(y), |v| Some(V::Date(v as i32))),
            (V::Hour(x), V::Hour(y)) => collect_range(x, y, |v| Some(V::Hour(v))),
            (V::Month(x), V::Month(y)) => collect_range(i64::from(x), i64::from(y), |v| Some(V::Month(v as i32))),
            (V::Choice(x), V::Choice(y)) => collect_range(i64::from(x), i64::from(y), |v| Some(V::Choice(v as u32))),
            (V::Week(x), V::Week(y)) => collect_range(i64::from(x), i64::from(y), |v| Some(V::Week(v as i32))),
            (V::Int(x), V::Int(y)) => collect_range(x, y, |v| Some(V::Int(v))),
            _ => Vec::new(),
        }
    }

    /// How many values [`values_between`](Self::values_between) would return.
    pub fn count_between(&self, a: ParamValue, b: ParamValue) -> u64 {
        use ParamValue as V;
        let (x, y) = match (a, b) {
            (V::Date(x), V::Date(y)) | (V::Month(x), V::Month(y)) | (V::Week(x), V::Week(y)) => {
                (i128::from(x), i128::from(y))
            }
            (V::Hour(x), V::Hour(y)) | (V::Int(x), V::Int(y)) => (i128::from(x), i128::from(y)),
            (V::Choice(x), V::Choice(y)) => (i128::from(x), i128::from(y)),
            _ => return 0,
        };
        u64::try_from((y - x + 1).max(0)).unwrap_or(u64::MAX)
    }

    /// The time interval `[start, end)` a time value covers (date: D 00:00 .. D+1 00:00;
    /// hour: H:00 .. H+1:00; week: Monday 00:00 .. the next Monday 00:00; month: first day
    /// 00:00 .. first day of the next month 00:00). `None` for values that are not times, or
    /// when chrono cannot represent it.
    pub fn interval(&self, v: ParamValue) -> Option<(NaiveDateTime, NaiveDateTime)> {
        let next = match v {
            ParamValue::Choice(_) | ParamValue::Int(_) | ParamValue::Str(_) => return None,
            ParamValue::Month(_) => v.add_months(1)?,
            _ => v.checked_add(1)?,
        };
        Some((v.start()?, next.start()?))
    }

    /// The latest value whose interval has ended at or before `now` (`None` for `Choice`).
    pub fn last_ended(&self, now: NaiveDateTime) -> Option<ParamValue> {
        let days = days_of(now.date());
        Some(match self {
            ParamKind::Date => ParamValue::Date(i32::try_from(days - 1).ok()?),
            ParamKind::Hour => ParamValue::Hour(days * 24 + i64::from(now.hour()) - 1),
            ParamKind::Month => ParamValue::Month(i32::try_from(month_of_day(days) - 1).ok()?),
            ParamKind::Week => ParamValue::Week(i32::try_from(week_of_day(days) - 1).ok()?),
            ParamKind::Choice(_) | ParamKind::Int { .. } | ParamKind::Str => return None,
        })
    }
}

/// Splits `s` into (leading digits as a number, rest); `None` without digits or on overflow.
fn leading_number(s: &str) -> Option<(u64, &str)> {
    let end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let n = s[..end].parse::<u64>().ok()?;
    Some((n, &s[end..]))
}

/// Parses a duration: `90s`, `5m`, `2h`, `1d`, `500ms`, and combinations from the largest
/// unit down such as `1h30m` or `1d 2h`; a bare `0` is zero. Error: one sentence naming
/// the expected forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || {
        format!(
            "`{s}` is not a valid duration (expected a whole number with a unit: 500ms, 90s, 5m, 2h, 1d, or a combination such as 1h30m)"
        )
    };
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(err());
    }
    // (suffix, milliseconds), from the largest unit down; each unit at most once, in order.
    const UNITS: [(&str, u128); 5] = [("d", 86_400_000), ("h", 3_600_000), ("ms", 1), ("m", 60_000), ("s", 1_000)];
    const RANK: [usize; 5] = [0, 1, 4, 2, 3];
    let mut rest = t;
    let mut total: u128 = 0;
    let mut last_rank: Option<usize> = None;
    while !rest.is_empty() {
        let (n, after) = leading_number(rest).ok_or_else(err)?;
        let (i, (unit, ms)) = UNITS.iter().enumerate().find(|(_, (u, _))| after.starts_with(u)).ok_or_else(err)?;
        if last_rank.is_some_and(|r| r >= RANK[i]) {
            return Err(err());
        }
        last_rank = Some(RANK[i]);
        total = total.checked_add(u128::from(n).checked_mul(*ms).ok_or_else(err)?).ok_or_else(err)?;
        rest = after[unit.len()..].trim_start();
    }
    let secs = u64::try_from(total / 1000).map_err(|_| err())?;
    Ok(Duration::new(secs, (total % 1000) as u32 * 1_000_000))
}

/// Parses a size in bytes: `2048`, `100K`, `512M`, `4G`, `1T`, `1P`, with binary multiples
/// (1K = 1024). The unit is case-insensitive and may end in `B` or `iB` (`512MB`,
/// `512MiB`); `B` alone means bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let err = || {
        format!("`{s}` is not a valid size (expected a whole number of bytes or one with a unit: 100K, 512M, 4G, 1T)")
    };
    let t = s.trim();
    let (n, unit) = leading_number(t).ok_or_else(err)?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix("ib").filter(|u| !u.is_empty()).or_else(|| unit.strip_suffix('b')).unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(err()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("`{s}` is too large a size (the limit is 16 EiB)"))
}

/// The instant a local wall-clock time names in `tz`: the earlier of a repeated time, and
/// for a time in a gap (spring forward) the first instant after the gap.
pub fn local_instant(tz: chrono_tz::Tz, t: NaiveDateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{LocalResult, TimeZone};
    for minutes in 0..=24 * 60 {
        match tz.from_local_datetime(&(t + chrono::Duration::minutes(minutes))) {
            LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => return Some(x.with_timezone(&chrono::Utc)),
            LocalResult::None => continue,
        }
    }
    None
}

/// `[start, end)` of a time value as instants: hours are UTC hours, dates, weeks and
/// months begin and end at local midnight in `tz` (SPEC §10), so a day may last 23 or
/// 25 hours. `None` for `Choice`.
pub fn interval_in(
    kind: &ParamKind,
    v: ParamValue,
    tz: chrono_tz::Tz,
) -> Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let (a, b) = kind.interval(v)?;
    if matches!(kind, ParamKind::Hour) {
        return Some((a.and_utc(), b.and_utc()));
    }
    Some((local_instant(tz, a)?, local_instant(tz, b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> ParamValue {
        ParamKind::Date.parse(s).unwrap()
    }
    fn h(s: &str) -> ParamValue {
        ParamKind::Hour.parse(s).unwrap()
    }
    fn m(s: &str) -> ParamValue {
        ParamKind::Month.parse(s).unwrap()
    }
    fn nd(y: i32, mo: u32, da: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, mo, da).unwrap()
    }
    fn ndt(y: i32, mo: u32, da: u32, hh: u32) -> NaiveDateTime {
        nd(y, mo, da).and_hms_opt(hh, 0, 0).unwrap()
    }
    fn fmt_all(k: &ParamKind, v: &[ParamValue]) -> Vec<String> {
        v.iter().map(|x| k.format(*x)).collect()
    }

    #[test]
    fn epoch_values() {
        assert_eq!(d("1970-01-01"), ParamValue::Date(0));
        assert_eq!(d("1970-01-02"), ParamValue::Date(1));
        assert_eq!(d("1969-12-31"), ParamValue::Date(-1));
        assert_eq!(h("1970-01-01T00"), ParamValue::Hour(0));
        assert_eq!(h("1970-01-02T01"), ParamValue::Hour(25));
        assert_eq!(m("1970-01"), ParamValue::Month(1970 * 12));
        assert_eq!(m("2024-02"), ParamValue::Month(2024 * 12 + 1));
        assert_eq!(m("0000-01"), ParamValue::Month(0));
    }

    #[test]
    fn days_agree_with_chrono() {
        let epoch = nd(1970, 1, 1);
        let mut date = nd(0, 1, 1);
        let end = nd(9999, 12, 31);
        let mut n = 0;
        while date <= end {
            let expected = (date - epoch).num_days();
            assert_eq!(days_of(date), expected, "{date}");
            let (y, mo, da) = civil_from_days(expected);
            assert_eq!((y, mo, da), (i64::from(date.year()), date.month(), date.day()));
            date += chrono::Duration::days(37);
            n += 1;
        }
        assert!(n > 90_000);
    }

    #[test]
    fn round_trip_many_values() {
        for k in [ParamKind::Date, ParamKind::Hour, ParamKind::Month] {
            let (lo, hi, step): (i64, i64, i64) = match k {
                ParamKind::Date => (days_from_civil(0, 1, 1), days_from_civil(9999, 12, 31), 13),
                ParamKind::Hour => (days_from_civil(0, 1, 1) * 24, days_from_civil(9999, 12, 31) * 24 + 23, 311),
                _ => (0, 9999 * 12 + 11, 1),
            };
            let mut x = lo;
            let mut count = 0;
            while x <= hi {
                let v = match k {
                    ParamKind::Date => ParamValue::Date(x as i32),
                    ParamKind::Hour => ParamValue::Hour(x),
                    _ => ParamValue::Month(x as i32),
                };
                let s = k.format(v);
                assert_eq!(k.parse(&s), Ok(v), "{s}");
                assert_eq!(ParamValue::parse_time(&s), Some(v));
                assert!(v.in_range());
                x += step;
                count += 1;
            }
            assert!(count > 100_000 || matches!(k, ParamKind::Month), "{count}");
        }
        // The last values of each kind.
        assert_eq!(ParamKind::Date.format(d("9999-12-31")), "9999-12-31");
        assert_eq!(ParamKind::Hour.format(h("0000-01-01T00")), "0000-01-01T00");
    }

    #[test]
    fn compact_form_and_civil_fields() {
        let mut s = String::new();
        d("2024-01-05").write_nodash(&mut s);
        h("2024-03-01T02").write_nodash(&mut s);
        m("2024-02").write_nodash(&mut s);
        assert_eq!(s, "202401052024030102202402");
        let c = h("2024-12-31T23").civil().unwrap();
        assert_eq!((c.year, c.month, c.day, c.hour, c.ordinal), (2024, 12, 31, 23, 366));
        let c = m("2023-03").civil().unwrap();
        assert_eq!((c.year, c.month, c.day, c.hour, c.ordinal), (2023, 3, 1, 0, 60));
        assert_eq!(ParamValue::Choice(1).civil(), None);
    }

    #[test]
    fn choice_round_trip_and_errors() {
        let k = ParamKind::Choice(Choices::new(vec!["eu".into(), "us".into()]));
        assert_eq!(k.parse("us"), Ok(ParamValue::Choice(1)));
        assert_eq!(k.format(ParamValue::Choice(0)), "eu");
        assert_eq!(k.parse("fr"), Err("`fr` is not one of the allowed values: eu, us".to_string()));
        assert_eq!(k.format(ParamValue::Choice(9)), "#9");
        assert!(ParamKind::Choice(Choices::new(vec![])).parse("x").is_err());
        assert!(!k.is_time());
        assert_eq!(k.name(), "list");
        assert_eq!(k.parse_bound("eu", true), Ok(ParamValue::Choice(0)));
    }

    #[test]
    fn weeks_ints_and_strings() {
        let k = ParamKind::Week;
        // ISO weeks at year boundaries, against chrono.
        let mut date = nd(1990, 1, 1);
        while date <= nd(2040, 12, 31) {
            let iso = date.iso_week();
            let w = ParamValue::Date(days_of(date) as i32).week().unwrap();
            assert_eq!(k.format(w), format!("{:04}-W{:02}", iso.year(), iso.week()), "{date}");
            assert_eq!(k.parse(&k.format(w)), Ok(w));
            assert_eq!(ParamValue::parse_time(&k.format(w)), Some(w));
            date += chrono::Duration::days(3);
        }
        assert!(k.parse("2020-W53").is_ok());
        assert!(k.parse("2021-W53").is_err());
        assert!(k.parse("2024-W00").is_err());
        let w = k.parse("2024-W09").unwrap();
        let days: Vec<String> = w.days().unwrap().iter().map(|d| ParamKind::Date.format(*d)).collect();
        assert_eq!(days.first().map(String::as_str), Some("2024-02-26"));
        assert_eq!(days.last().map(String::as_str), Some("2024-03-03"));
        assert_eq!(k.interval(w), Some((ndt(2024, 2, 26, 0), ndt(2024, 3, 4, 0))));
        assert_eq!(k.last_ended(ndt(2024, 3, 4, 0)), Some(w));
        let mut s = String::new();
        w.write_nodash(&mut s);
        assert_eq!(s, "2024W09");
        let i = ParamKind::Int { min: Some(-2), max: Some(2) };
        assert_eq!(i.parse("-2"), Ok(ParamValue::Int(-2)));
        assert!(i.parse("3").is_err() && i.parse("-0").is_err() && i.parse("01").is_err() && i.parse("+1").is_err());
        assert_eq!(i.domain().map(|d| d.len()), Some(5));
        assert_eq!(ParamKind::Int { min: Some(0), max: None }.domain(), None);
        let st = ParamKind::Str;
        assert_eq!(st.parse("a.b_c-d"), Ok(ParamValue::Str("a.b_c-d")));
        for bad in ["", ".", "..", "a/b", "-x", "a b", "a,b", "a=b", "x[1]", "a\\b"] {
            assert!(st.parse(bad).is_err(), "{bad:?}");
        }
        assert!(std::ptr::eq(intern("same"), intern(&String::from("same"))));
    }

    #[test]
    fn leap_years_and_month_ends() {
        assert!(ParamKind::Date.parse("2024-02-29").is_ok());
        assert!(ParamKind::Date.parse("2000-02-29").is_ok());
        assert!(ParamKind::Date.parse("0000-02-29").is_ok());
        assert_eq!(
            ParamKind::Date.parse("2023-02-29"),
            Err("`2023-02-29` is not a valid date (2023-02 has 28 days)".to_string())
        );
        assert!(ParamKind::Date.parse("1900-02-29").is_err());
        assert!(ParamKind::Date.parse("2024-02-30").is_err());
        assert!(ParamKind::Date.parse("2024-04-31").is_err());
        assert!(ParamKind::Date.parse("2024-12-31").is_ok());
        assert!(ParamKind::Date.parse("2024-01-00").is_err());
        assert_eq!(d("2024-02-29").checked_add(1), Some(d("2024-03-01")));
        assert_eq!(ParamKind::Date.format(d("2023-02-28").checked_add(1).unwrap()), "2023-03-01");
        // add_months clamps to the month end.
        let f = |s: &str, n| ParamKind::Date.format(d(s).add_months(n).unwrap());
        assert_eq!(f("2024-01-31", 1), "2024-02-29");
        assert_eq!(f("2023-01-31", 1), "2023-02-28");
        assert_eq!(f("2024-03-31", -1), "2024-02-29");
        assert_eq!(f("2024-05-31", -1), "2024-04-30");
        assert_eq!(f("2024-02-29", 12), "2025-02-28");
        assert_eq!(f("2024-01-15", -13), "2022-12-15");
        let hm = ParamKind::Hour.format(h("2024-01-31T05").add_months(1).unwrap());
        assert_eq!(hm, "2024-02-29T05");
        assert_eq!(ParamKind::Month.format(m("2024-01").add_months(-1).unwrap()), "2023-12");
    }

    #[test]
    fn parse_errors_are_sentences() {
        assert_eq!(
            ParamKind::Date.parse("2024-13-45"),
            Err("`2024-13-45` is not a valid date (expected YYYY-MM-DD)".to_string())
        );
        assert_eq!(
            ParamKind::Date.parse("tomorrow"),
            Err("`tomorrow` is not a valid date (expected YYYY-MM-DD)".to_string())
        );
        assert_eq!(
            ParamKind::Hour.parse("2024-03-01"),
            Err("`2024-03-01` is not a valid hour (expected YYYY-MM-DDTHH, e.g. 2024-03-01T02)".to_string())
        );
        assert_eq!(
            ParamKind::Month.parse("2024-2"),
            Err("`2024-2` is not a valid month (expected YYYY-MM)".to_string())
        );
        for bad in [
            "",
            " ",
            "2024-01-05 ",
            " 2024-01-05",
            "2024-1-05",
            "2024/01/05",
            "20240105",
            "+2024-01-05",
            "-2024-01-05",
            "99999-01-01",
            "2024-01-05T",
            "2024-01-05T24",
            "2024-01-05T1",
            "2024-01-05t01",
            "2024-00",
            "2024-13",
            "２０２４-01-05",
            "2024-01-0é",
            "0x24-01-05",
            "2024-01-05T-1",
            "2024-01-+5",
        ] {
            for k in [ParamKind::Date, ParamKind::Hour, ParamKind::Month] {
                if let Ok(v) = k.parse(bad) {
                    panic!("{bad:?} parsed as {v:?} for {}", k.name());
                }
            }
        }
        assert!(ParamKind::Hour.parse("2024-01-05T23").is_ok());
        assert!(ParamKind::Hour.parse("2024-01-05T24").is_err());
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "",
            "-",
            "T",
            "9999-12-31T23",
            "0000-01-01",
            "é",
            "2024-02-3\u{0}",
            "\u{10FFFF}",
            "2024-99",
            "2024-01-05..2024-01-06",
            "18446744073709551616",
            "-1",
            "1e9",
        ];
        for s in odd {
            for k in
                [ParamKind::Date, ParamKind::Hour, ParamKind::Month, ParamKind::Choice(Choices::new(vec!["a".into()]))]
            {
                let _ = k.parse(s);
                let _ = k.parse_bound(s, true);
                let _ = k.parse_bound(s, false);
                for t in odd {
                    let _ = k.expand_range(s, t);
                }
            }
            let _ = parse_duration(s);
            let _ = parse_size(s);
            let _ = ParamValue::parse_time(s);
        }
        // Extreme values format and step without panicking.
        for v in [
            ParamValue::Date(i32::MIN),
            ParamValue::Date(i32::MAX),
            ParamValue::Hour(i64::MIN),
            ParamValue::Hour(i64::MAX),
            ParamValue::Month(i32::MIN),
            ParamValue::Month(i32::MAX),
        ] {
            let s = ParamKind::Date.format(v);
            assert!(ParamValue::parse_time(&s).is_none(), "{s}");
            assert!(!v.in_range());
            let _ = v.checked_add(i64::MAX);
            let _ = v.checked_add(i64::MIN);
            let _ = v.add_months(i64::MAX);
            let _ = v.add_months(i64::MIN);
            let _ = ParamKind::Date.interval(v);
            let _ = v.start();
        }
        let k = ParamKind::Hour;
        assert_eq!(k.count_between(ParamValue::Hour(i64::MIN), ParamValue::Hour(i64::MAX)), u64::MAX);
        assert!(k.values_between(ParamValue::Hour(5), ParamValue::Hour(4)).is_empty());
    }

    #[test]
    fn bounds_may_be_coarser() {
        let (dk, hk, mk) = (ParamKind::Date, ParamKind::Hour, ParamKind::Month);
        assert_eq!(hk.parse_bound("2024-01-05", false), Ok(h("2024-01-05T00")));
        assert_eq!(hk.parse_bound("2024-01-05", true), Ok(h("2024-01-05T23")));
        assert_eq!(hk.parse_bound("2024-02", false), Ok(h("2024-02-01T00")));
        assert_eq!(hk.parse_bound("2024-02", true), Ok(h("2024-02-29T23")));
        assert_eq!(hk.parse_bound("2024-02-03T04", true), Ok(h("2024-02-03T04")));
        assert_eq!(mk.parse_bound("2024-02-17", false), Ok(m("2024-02")));
        assert_eq!(mk.parse_bound("2024-02-17", true), Ok(m("2024-02")));
        assert_eq!(mk.parse_bound("2024-03", true), Ok(m("2024-03")));
        assert_eq!(dk.parse_bound("2024-02", false), Ok(d("2024-02-01")));
        assert_eq!(dk.parse_bound("2024-02", true), Ok(d("2024-02-29")));
        assert_eq!(dk.parse_bound("2023-02", true), Ok(d("2023-02-28")));
        assert_eq!(dk.parse_bound("2023-12", true), Ok(d("2023-12-31")));
        assert_eq!(dk.parse_bound("2023-12-05", true), Ok(d("2023-12-05")));
        assert_eq!(
            dk.parse_bound("2023-12-05T01", true),
            Err("`2023-12-05T01` is not a valid end for a date param (expected YYYY-MM-DD or YYYY-MM)".to_string())
        );
        assert!(mk.parse_bound("2023-12-05T01", false).is_err());
    }

    #[test]
    fn expand_date_per_kind() {
        let day = nd(2024, 3, 1);
        assert_eq!(ParamKind::Date.expand_date(day), vec![d("2024-03-01")]);
        let hours = ParamKind::Hour.expand_date(day);
        assert_eq!(hours.len(), 24);
        assert_eq!(ParamKind::Hour.format(hours[0]), "2024-03-01T00");
        assert_eq!(ParamKind::Hour.format(hours[23]), "2024-03-01T23");
        assert_eq!(ParamKind::Month.expand_date(day), vec![m("2024-03")]);
        assert!(ParamKind::Choice(Choices::new(vec!["a".into()])).expand_date(day).is_empty());
    }

    #[test]
    fn expand_range_per_kind() {
        let (dk, hk, mk) = (ParamKind::Date, ParamKind::Hour, ParamKind::Month);
        let r = dk.expand_range("2024-02-27", "2024-03-01").unwrap();
        assert_eq!(fmt_all(&dk, &r), ["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01"]);
        let r = hk.expand_range("2024-02-28", "2024-02-29").unwrap();
        assert_eq!(r.len(), 48);
        assert_eq!(hk.format(r[0]), "2024-02-28T00");
        assert_eq!(hk.format(r[47]), "2024-02-29T23");
        let r = mk.expand_range("2024-01-30", "2024-03-01").unwrap();
        assert_eq!(fmt_all(&mk, &r), ["2024-01", "2024-02", "2024-03"]);
        let r = dk.expand_range("2024-01-01T22", "2024-01-03T01").unwrap();
        assert_eq!(fmt_all(&dk, &r), ["2024-01-01", "2024-01-02", "2024-01-03"]);
        let r = dk.expand_range("2024-02", "2024-03").unwrap();
        assert_eq!(r.len(), 29 + 31);
        assert_eq!(dk.format(r[0]), "2024-02-01");
        assert_eq!(dk.format(r[59]), "2024-03-31");
        let r = hk.expand_range("2023-02", "2023-02").unwrap();
        assert_eq!(r.len(), 28 * 24);
        let r = mk.expand_range("2023-11", "2024-02").unwrap();
        assert_eq!(fmt_all(&mk, &r), ["2023-11", "2023-12", "2024-01", "2024-02"]);
        let r = hk.expand_range("2024-01-01T22", "2024-01-02T01").unwrap();
        assert_eq!(fmt_all(&hk, &r), ["2024-01-01T22", "2024-01-01T23", "2024-01-02T00", "2024-01-02T01"]);
        let r = mk.expand_range("2024-01-31T23", "2024-02-01T00").unwrap();
        assert_eq!(fmt_all(&mk, &r), ["2024-01", "2024-02"]);
        // Single value.
        assert_eq!(dk.expand_range("2024-01-05", "2024-01-05").unwrap(), vec![d("2024-01-05")]);
        // Errors.
        assert_eq!(
            dk.expand_range("2024-01-05", "2024-01-04"),
            Err("`2024-01-05..2024-01-04` is empty: `2024-01-04` comes before `2024-01-05`; write the earlier end first".to_string())
        );
        assert_eq!(
            dk.expand_range("2024-01-05", "2024-02"),
            Err("`2024-01-05..2024-02` mixes a date and a month; write both ends the same way (both dates, both hours or both months)".to_string())
        );
        assert!(dk.expand_range("2024-01-05", "nope").is_err());
        assert!(ParamKind::Choice(Choices::new(vec![])).expand_range("2024-01-05", "2024-01-06").is_err());
        let e = hk.expand_range("0000-01", "9999-12").unwrap_err();
        assert!(e.contains("more than the limit"), "{e}");
        assert_eq!(dk.expand_range("0000-01", "9999-12").unwrap().len(), 3_652_425);
    }

    #[test]
    fn values_between_and_count() {
        let k = ParamKind::Date;
        let v = k.values_between(d("2024-02-28"), d("2024-03-01"));
        assert_eq!(fmt_all(&k, &v), ["2024-02-28", "2024-02-29", "2024-03-01"]);
        assert_eq!(k.count_between(d("2024-02-28"), d("2024-03-01")), 3);
        assert!(k.values_between(d("2024-03-01"), d("2024-02-28")).is_empty());
        assert_eq!(k.count_between(d("2024-03-01"), d("2024-02-28")), 0);
        assert!(k.values_between(d("2024-03-01"), m("2024-03")).is_empty());
        let mk = ParamKind::Month;
        let v = mk.values_between(m("2023-12"), m("2024-01"));
        assert_eq!(fmt_all(&mk, &v), ["2023-12", "2024-01"]);
        let c = ParamKind::Choice(Choices::new(vec!["a".into(), "b".into(), "c".into()]));
        let v = c.values_between(ParamValue::Choice(0), ParamValue::Choice(2));
        assert_eq!(fmt_all(&c, &v), ["a", "b", "c"]);
    }

    #[test]
    fn intervals() {
        let k = ParamKind::Date;
        assert_eq!(k.interval(d("2024-02-29")), Some((ndt(2024, 2, 29, 0), ndt(2024, 3, 1, 0))));
        let k = ParamKind::Hour;
        assert_eq!(k.interval(h("2024-12-31T23")), Some((ndt(2024, 12, 31, 23), ndt(2025, 1, 1, 0))));
        let k = ParamKind::Month;
        assert_eq!(k.interval(m("2024-02")), Some((ndt(2024, 2, 1, 0), ndt(2024, 3, 1, 0))));
        assert_eq!(k.interval(m("2024-12")), Some((ndt(2024, 12, 1, 0), ndt(2025, 1, 1, 0))));
        assert_eq!(ParamKind::Choice(Choices::new(vec![])).interval(ParamValue::Choice(0)), None);
    }

    #[test]
    fn last_ended_per_kind() {
        let now = ndt(2024, 3, 1, 0);
        assert_eq!(ParamKind::Date.last_ended(now), Some(d("2024-02-29")));
        assert_eq!(ParamKind::Hour.last_ended(now), Some(h("2024-02-29T23")));
        assert_eq!(ParamKind::Month.last_ended(now), Some(m("2024-02")));
        let now = nd(2024, 3, 1).and_hms_opt(10, 59, 59).unwrap();
        assert_eq!(ParamKind::Date.last_ended(now), Some(d("2024-02-29")));
        assert_eq!(ParamKind::Hour.last_ended(now), Some(h("2024-03-01T09")));
        assert_eq!(ParamKind::Month.last_ended(now), Some(m("2024-02")));
        let now = ndt(2024, 1, 1, 0);
        assert_eq!(ParamKind::Month.last_ended(now), Some(m("2023-12")));
        assert_eq!(ParamKind::Choice(Choices::new(vec![])).last_ended(now), None);
        // The value's interval really ended, and the next one did not.
        for k in [ParamKind::Date, ParamKind::Hour, ParamKind::Month] {
            let v = k.last_ended(now).unwrap();
            assert!(k.interval(v).unwrap().1 <= now);
            assert!(k.interval(v.checked_add(1).unwrap()).unwrap().1 > now);
        }
    }

    #[test]
    fn durations() {
        let s = |x: u64| Duration::from_secs(x);
        assert_eq!(parse_duration("90s"), Ok(s(90)));
        assert_eq!(parse_duration("5m"), Ok(s(300)));
        assert_eq!(parse_duration("2h"), Ok(s(7200)));
        assert_eq!(parse_duration("1d"), Ok(s(86400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(s(5400)));
        assert_eq!(parse_duration("1d 2h 3m 4s 5ms"), Ok(Duration::from_millis(93_784_005)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 10s "), Ok(s(10)));
        for bad in [
            "",
            "10",
            "s",
            "1x",
            "1.5h",
            "-1s",
            "30m1h",
            "1h1h",
            "1 h",
            "1hh",
            "99999999999999999999d",
            "18446744073709551615d",
            "1ms1s",
            "h1",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_duration("10"),
            Err("`10` is not a valid duration (expected a whole number with a unit: 500ms, 90s, 5m, 2h, 1d, or a combination such as 1h30m)".to_string())
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2048"), Ok(2048));
        assert_eq!(parse_size("100K"), Ok(100 * 1024));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("4GB"), Ok(4 << 30));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("7B"), Ok(7));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "M", "1.5G", "-1", "1X", "1 GG", "16384P", "99999999999999999999", "1iB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_size("1X"),
            Err("`1X` is not a valid size (expected a whole number of bytes or one with a unit: 100K, 512M, 4G, 1T)"
                .to_string())
        );
    }
}
