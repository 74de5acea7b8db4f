//! One tick of the scheduler (SPEC §10): which scheduled steps are evaluated, which of
//! their intervals are due, the request that builds them, and what is recorded after.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::time;
use crate::fluxfile::{Fluxfile, Step};
use crate::param::{ParamKind, ParamValue};
use crate::state::{Interval, SchedStep};

/// What a tick does with one scheduled step.
#[derive(Debug)]
pub struct StepTick {
    pub step: usize,
    /// Why the step is evaluated (`None`: it is not, this tick).
    pub why: Option<String>,
    /// The latest ended interval (the new watermark), if any has ended.
    pub through: Option<ParamValue>,
    /// Intervals that become due now, with their SLA deadlines (Unix seconds).
    pub new: Vec<(ParamValue, Option<f64>)>,
    /// The intervals this tick builds (new and unfinished), in build order.
    pub due: Vec<ParamValue>,
    /// Unfinished intervals held back by `max_active_runs`.
    pub held: usize,
    /// A param the scheduler cannot enumerate (an int or string param): the step is left out.
    pub unenumerable: Option<String>,
}

/// Plan a tick at `now` from what the state DB says about the steps and their
/// unfinished intervals; `in_flight` (step, value) are being built and count against
/// `max_active_runs`.
pub fn plan(
    ff: &Fluxfile,
    steps: &[SchedStep],
    open: &[Interval],
    in_flight: &[(String, String)],
    now: DateTime<Utc>,
    newest_first: bool,
) -> Vec<StepTick> {
    let tz = ff.timezone;
    let mut out = Vec::new();
    for (si, step) in ff.steps.iter().enumerate() {
        let (Some(schedule), Some(ti)) = (&step.schedule, step.time_param) else { continue };
        let kind = &step.params[ti].1;
        let known = steps.iter().find(|s| s.step == step.name);
        let parse = |s: &str| kind.parse(s).ok();
        let in_domain = |v: &ParamValue| step.start.is_none_or(|s| *v >= s) && step.end.is_none_or(|e| *v <= e);
        let flying = in_flight.iter().filter(|(s, _)| *s == step.name).count();
        let mut unfinished: Vec<(ParamValue, i64)> = open
            .iter()
            .filter(|i| i.step == step.name && !in_flight.iter().any(|(s, v)| *s == i.step && *v == i.value))
            .filter_map(|i| parse(&i.value).map(|v| (v, i.attempts)))
            .filter(|(v, _)| in_domain(v))
            .collect();
        let why = match known {
            None => Some("never evaluated".to_string()),
            Some(k) => {
                let last = time::from_secs(k.evaluated_at);
                match time::next_fire(schedule, last, tz) {
                    Some(t) if t <= now => Some(format!("{} fired at {}", schedule.text(), time::show(t, tz))),
                    _ if unfinished.iter().any(|(_, attempts)| *attempts == 0) => {
                        Some("intervals due but not built yet".to_string())
                    }
                    _ => None,
                }
            }
        };
        let mut t = StepTick {
            step: si,
            why,
            through: None,
            new: Vec::new(),
            due: Vec::new(),
            held: 0,
            unenumerable: unenumerable(step),
        };
        if t.why.is_none() {
            out.push(t);
            continue;
        }
        let mut last = time::last_ended(kind, now, tz);
        if let (Some(l), Some(e)) = (last, step.end) {
            last = Some(l.min(e));
        }
        let through = known.and_then(|k| k.through.as_deref()).and_then(parse);
        if let Some(last) = last.filter(|l| through.is_none_or(|w| *l > w) && in_domain(l)) {
            let first = if step.catchup {
                match (through.and_then(|w| w.checked_add(1)), step.start) {
                    (Some(next), Some(s)) => next.max(s),
                    (Some(next), None) => next,
                    (None, Some(s)) => s,
                    (None, None) => last,
                }
            } else {
                last
            };
            for v in kind.values_between(first, last) {
                let deadline = step.sla.and_then(|sla| {
                    let (_, end) = time::interval(kind, v, tz)?;
                    Some(time::secs(end) + sla.as_secs_f64())
                });
                if !unfinished.iter().any(|(u, _)| *u == v) {
                    unfinished.push((v, 0));
                }
                t.new.push((v, deadline));
            }
            t.through = Some(last);
        }
        let mut due: Vec<ParamValue> = unfinished.into_iter().map(|(v, _)| v).collect();
        due.sort_unstable();
        if newest_first {
            due.reverse();
        }
        if let Some(max) = step.max_active_runs {
            let room = (max as usize).saturating_sub(flying);
            if due.len() > room {
                t.held = due.len() - room;
                due.truncate(room);
            }
        }
        t.due = due;
        out.push(t);
    }
    out
}

/// The step's first param that is neither its time param nor a list of values.
fn unenumerable(step: &Step) -> Option<String> {
    step.params
        .iter()
        .enumerate()
        .find(|(i, (_, k))| Some(*i) != step.time_param && !matches!(k, ParamKind::Choice(_)))
        .map(|(_, (n, _))| n.clone())
}

/// The task ids of one interval of a step: its time value with every combination of its
/// listed params' values.
pub fn task_ids(step: &Step, v: ParamValue) -> Vec<String> {
    let mut combos: Vec<Vec<ParamValue>> = vec![Vec::new()];
    for (i, (_, kind)) in step.params.iter().enumerate() {
        let vals: Vec<ParamValue> = if Some(i) == step.time_param {
            vec![v]
        } else if let ParamKind::Choice(all) = kind {
            (0..all.len() as u32).map(ParamValue::Choice).collect()
        } else {
            return Vec::new();
        };
        combos = combos
            .into_iter()
            .flat_map(|c| {
                vals.iter().map(move |x| {
                    let mut c = c.clone();
                    c.push(*x);
                    c
                })
            })
            .collect();
    }
    combos.iter().map(|c| crate::graph::task_id(step, c)).collect()
}

/// Whether every task of an interval ended well (success, up to date, or accepted).
pub fn interval_done(ids: &[String], statuses: &HashMap<String, &'static str>) -> bool {
    !ids.is_empty() && ids.iter().all(|id| matches!(statuses.get(id).copied(), Some("success" | "skipped" | "marked")))
}
