//! SLA misses (SPEC §10): the check is [`StateDb::sched_sla_check`], which records each
//! miss in the transaction that finds it; this announces what it returned, once: the
//! step's `on_sla_miss` hook and the webhook's `sla_miss` event. Intervals already late
//! when the scheduler first made them due are announced as one summary per step.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::time;
use crate::fluxfile::{Fluxfile, Step};
use crate::hooks::{Hooks, TaskEvent};
use crate::state::Interval;
use crate::template::Context;

/// One announcement: a late interval, or a summary of a step's intervals late at first sight.
#[derive(Debug)]
pub struct Miss {
    pub step: usize,
    /// The intervals (canonical values), oldest first; one unless a summary.
    pub values: Vec<String>,
    pub summary: bool,
    /// The (last) interval's deadline.
    pub deadline: DateTime<Utc>,
}

impl Miss {
    /// `rollup[2024-01-05]`, or `rollup[2024-01-01..2024-01-05]` for a summary.
    pub fn task(&self, ff: &Fluxfile) -> String {
        let name = &ff.steps[self.step].name;
        match (self.values.first(), self.values.last()) {
            (Some(a), Some(b)) if a != b => format!("{name}[{a}..{b}]"),
            (Some(a), _) => format!("{name}[{a}]"),
            _ => name.clone(),
        }
    }

    pub fn message(&self, ff: &Fluxfile) -> String {
        let tz = ff.timezone;
        if self.summary {
            format!(
                "{} intervals of {} were already past their SLA when the scheduler first saw them ({}..{}, last deadline {})",
                self.values.len(),
                ff.steps[self.step].name,
                self.values.first().map_or("", String::as_str),
                self.values.last().map_or("", String::as_str),
                time::show(self.deadline, tz)
            )
        } else {
            format!("{} missed its SLA: not done by {}", self.task(ff), time::show(self.deadline, tz))
        }
    }
}

/// Group the misses the check recorded: per step, those already late when they became due
/// make one summary; the others one miss each. Intervals of steps no longer in the
/// Fluxfile are dropped (their miss stays recorded).
pub fn group(ff: &Fluxfile, missed: &[Interval]) -> Vec<Miss> {
    let mut out: Vec<Miss> = Vec::new();
    for m in missed {
        let Some(si) = ff.step_index(&m.step) else { continue };
        let deadline = time::from_secs(m.deadline.unwrap_or(m.due_at));
        let late_at_first_sight = m.deadline.is_some_and(|d| d <= m.due_at);
        if late_at_first_sight && let Some(s) = out.iter_mut().find(|x| x.summary && x.step == si) {
            s.values.push(m.value.clone());
            s.deadline = s.deadline.max(deadline);
            continue;
        }
        out.push(Miss { step: si, values: vec![m.value.clone()], summary: late_at_first_sight, deadline });
    }
    out
}

/// Fire `on_sla_miss` and the webhook for each miss, and wait for them; warnings back.
pub fn announce(ff: &Fluxfile, misses: &[Miss], run_id: i64) -> Vec<String> {
    let mut hooks = Hooks::new(ff.dir.clone(), ff.notify.clone());
    let mut warnings = Vec::new();
    for m in misses {
        let step = &ff.steps[m.step];
        let task = m.task(ff);
        let message = m.message(ff);
        let value = m.values.last().cloned().unwrap_or_default();
        let command = match &step.on_sla_miss {
            None => None,
            Some(tpl) => match render(ff, step, &task, &value, tpl.id) {
                Ok(cmd) => Some((cmd, hook_log(ff, step, &task))),
                Err(e) => {
                    warnings.push(format!("on_sla_miss hook of {task}: {e}"));
                    None
                }
            },
        };
        let params = match step.time_param {
            Some(ti) => serde_json::json!({ step.params[ti].0.clone(): value }),
            None => serde_json::json!({}),
        };
        let ev = TaskEvent {
            event: "sla_miss",
            step: step.name.clone(),
            task,
            params,
            status: "late".into(),
            attempt: 0,
            log: None,
            run_id,
            error: Some(message),
            time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        hooks.fire(command, ev);
    }
    warnings.extend(hooks.finish());
    warnings
}

fn hook_log(ff: &Fluxfile, step: &Step, task: &str) -> PathBuf {
    ff.state_dir.join("logs").join(&step.name).join(crate::graph::task_key(task)).join("on_sla_miss.log")
}

/// The hook in the interval's context: its step, task, time param, vars,
/// `interval_start` and `interval_end` (no inputs or outputs: no task may have run).
fn render(
    ff: &Fluxfile,
    step: &Step,
    task: &str,
    value: &str,
    tpl: crate::template::TemplateId,
) -> Result<String, String> {
    let mut params: Vec<(&str, String)> = Vec::new();
    let mut extra: Vec<(&str, String)> = Vec::new();
    if let Some(ti) = step.time_param {
        let (name, kind) = &step.params[ti];
        params.push((name.as_str(), value.to_string()));
        if let Some((a, b)) = kind.parse(value).ok().and_then(|v| crate::graph::interval_rfc3339(kind, v, ff.timezone))
        {
            extra.push(("interval_start", a));
            extra.push(("interval_end", b));
        }
    }
    let ctx =
        Context { step: &step.name, task, params: &params, vars: &ff.vars, inputs: None, outputs: None, extra: &extra };
    ff.engine.render(tpl, &ctx).map_err(|e| e.to_string())
}
