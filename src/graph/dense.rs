//! The planner's index of the tasks of a step with one integer-like param.

use super::NONE;
use crate::param::ParamValue;

/// The tasks of one step by the value of its only param, in an array from the smallest
/// value seen. A daily step's neighbours (yesterday, the same day of another step) are
/// then found next to each other in memory rather than in random buckets of a table of
/// a million entries, whose cache misses were the largest cost of planning.
#[derive(Default)]
pub(super) struct Dense {
    base: i64,
    slots: Vec<u32>,
    len: usize,
}

impl Dense {
    /// The integer a step's only param value stands for (its kind is the same for every
    /// task of the step, so values of different kinds never meet here).
    pub(super) fn key(params: &[ParamValue]) -> Option<i64> {
        match params {
            [ParamValue::Date(v) | ParamValue::Month(v) | ParamValue::Week(v)] => Some(i64::from(*v)),
            [ParamValue::Hour(v) | ParamValue::Int(v)] => Some(*v),
            [ParamValue::Choice(v)] => Some(i64::from(*v)),
            _ => None,
        }
    }

    pub(super) fn get(&self, k: i64) -> Option<u32> {
        let i = usize::try_from(k.checked_sub(self.base)?).ok()?;
        self.slots.get(i).copied().filter(|&t| t != NONE)
    }

    /// Store task `t` under `k`; false (nothing stored) when the values would spread over
    /// more than a few slots per task.
    pub(super) fn insert(&mut self, k: i64, t: u32) -> bool {
        if self.slots.is_empty() {
            self.base = k;
        }
        let end = self.base.saturating_add(self.slots.len() as i64);
        let (lo, hi) = (self.base.min(k), end.max(k.saturating_add(1)));
        let span = hi.saturating_sub(lo);
        if span > 4 * (self.len as i64 + 1) + 4096 {
            return false;
        }
        if k < self.base {
            // Room below for as many again, so that a chain walked backwards (yesterday's
            // yesterday…) moves the array a logarithmic number of times.
            let pad = (self.base - k) as usize + self.slots.len();
            let mut slots = vec![NONE; pad];
            slots.extend_from_slice(&self.slots);
            self.slots = slots;
            self.base -= pad as i64;
        }
        let i = (k - self.base) as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, NONE);
        }
        self.slots[i] = t;
        self.len += 1;
        true
    }

    /// Every task stored.
    pub(super) fn tasks(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().copied().filter(|&t| t != NONE)
    }
}
