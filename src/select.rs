//! Selections beyond the planner's "these targets and their upstream": everything
//! downstream of some tasks (`--from`, `flux clear --downstream`, `flux mark
//! --downstream`).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::fluxfile::Fluxfile;
use crate::graph::{self, Request, TaskGraph};

/// `start` and every task that depends on one of them, directly or not (each once,
/// `start` first).
pub fn downstream(g: &TaskGraph, start: &[u32]) -> Vec<u32> {
    let dependents = g.dependents();
    let mut seen = vec![false; g.tasks.len()];
    let mut out = Vec::new();
    let mut queue: std::collections::VecDeque<u32> = start.iter().copied().collect();
    while let Some(t) = queue.pop_front() {
        if std::mem::replace(&mut seen[t as usize], true) {
            continue;
        }
        out.push(t);
        queue.extend(dependents[t as usize].iter().copied());
    }
    out
}

/// The named tasks (the roots of `named`, planned from the command line's targets) and
/// everything downstream of them, in a graph of every step for the same param values.
/// The dates are the request's (`--date`, `--date-range`) or, when it gives none, the
/// span of the named tasks' own intervals: downstream is looked for among those dates.
pub fn with_downstream(ff: &Fluxfile, req: &Request, named: &TaskGraph) -> Result<(TaskGraph, Vec<u32>)> {
    let mut all = Request { targets: Vec::new(), ..req.clone() };
    if all.date.is_none() && all.range.is_none() {
        all.range = date_span(ff, named, &named.roots);
    }
    let g = graph::build(ff, &all)?;
    let index: HashMap<String, u32> = (0..g.tasks.len() as u32).map(|t| (g.task_id(ff, t), t)).collect();
    let mut start = Vec::with_capacity(named.roots.len());
    for &r in &named.roots {
        let id = named.task_id(ff, r);
        match index.get(&id) {
            Some(&t) => start.push(t),
            None => {
                return Err(Error::Usage(format!(
                    "{id} is not among the tasks planned for these dates; give --date or --date-range to include it"
                )));
            }
        }
    }
    let tasks = downstream(&g, &start);
    Ok((g, tasks))
}

/// The first and last day covered by these tasks' time params, as a `--date-range`.
fn date_span(ff: &Fluxfile, g: &TaskGraph, tasks: &[u32]) -> Option<(String, String)> {
    let mut span: Option<(chrono::NaiveDate, chrono::NaiveDate)> = None;
    for &t in tasks {
        let task = &g.tasks[t as usize];
        let step = &ff.steps[task.step as usize];
        let Some(ti) = step.time_param else { continue };
        let Some((a, b)) = step.params[ti].1.interval(task.params[ti]) else { continue };
        let (first, last) = (a.date(), (b - chrono::Duration::nanoseconds(1)).date());
        span = Some(match span {
            None => (first, last),
            Some((x, y)) => (x.min(first), y.max(last)),
        });
    }
    span.map(|(a, b)| (a.to_string(), b.to_string()))
}
