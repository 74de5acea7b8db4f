//! `flux mark TARGET… [--downstream]`: accept the named tasks as done with their current
//! outputs, inputs and commands (Airflow's "mark success", `make -t`, `snakemake
//! --touch`). Each is recorded like a success (fingerprint of today's inputs and
//! commands) with status `marked`, in a run of kind `mark`, so the next build skips it
//! until an input or its command changes. Every output must exist: nothing is written
//! unless every named task can be marked.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::fluxfile::Fluxfile;
use crate::graph::{self, Request};
use crate::plan::{Planner, Triggers};
use crate::state::{AttemptRecord, Batch, StateDb, Status, TaskUpdate};
use crate::target::{Digests, Meta};

/// Mark the tasks `req` names (and, with `downstream`, everything below them); returns
/// the exit code.
pub fn run(ff: &Fluxfile, req: &Request, downstream: bool, command: &str, secrets: &[String]) -> Result<i32> {
    if req.targets.is_empty() {
        return Err(Error::Usage("flux mark needs targets: step names, task ids or output paths".into()));
    }
    let mut g = graph::build(ff, req)?;
    let tasks = if downstream {
        let (all, tasks) = crate::select::with_downstream(ff, req, &g)?;
        g = all;
        tasks
    } else {
        g.roots.clone()
    };
    let mut db = StateDb::open(&ff.state_dir)?;
    let records = db.load_tasks()?;
    let stat_ns = crate::target::now_ns();
    let digests = Digests::lazy(ff.state_dir.clone(), stat_ns);
    // Stat the targets of the marked tasks only.
    let mut metas: Vec<Option<Meta>> = vec![None; g.targets.len()];
    let wanted: HashSet<u32> = tasks
        .iter()
        .flat_map(|&t| g.tasks[t as usize].inputs().iter().chain(g.tasks[t as usize].outputs()))
        .copied()
        .collect();
    for &i in &wanted {
        let name = g.target(i);
        metas[i as usize] = if crate::store::is_remote(name) {
            crate::store::stat(name).map_err(|e| Error::Io(format!("cannot stat `{name}`: {e}")))?
        } else {
            crate::target::stat(&ff.abs(name))
        };
    }
    let planner = Planner {
        ff,
        g: &g,
        records: &records,
        digests: &digests,
        forced: HashSet::new(),
        triggers: Triggers::default(),
        stat_ns,
        step_keys: crate::plan::step_keys(ff),
        stat_errors: Default::default(),
    };
    let mut marks = Vec::with_capacity(tasks.len());
    for &t in &tasks {
        let id = g.task_id(ff, t);
        for &o in g.tasks[t as usize].outputs() {
            if metas[o as usize].is_none() {
                return Err(Error::Usage(format!(
                    "cannot mark {id}: its output `{}` does not exist; build it or make it first (nothing was marked)",
                    g.target(o)
                )));
            }
        }
        let fp = planner.fingerprint(t, &id, &metas).map_err(|e| Error::Usage(format!("cannot mark {id}: {e}")))?;
        marks.push((t, id, fp));
    }
    let run_id = db.begin_run_of_kind(command, "mark")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let mut batch = Batch::default();
    for (t, id, fp) in &marks {
        let task = &g.tasks[*t as usize];
        let step = &ff.steps[task.step as usize];
        let text = crate::explain::detail(&planner, *t, id, &metas, secrets, None);
        let (commands, inputs_json) = text.unzip();
        batch.attempts.push(AttemptRecord {
            run_id,
            task_id: id.clone(),
            step: step.name.clone(),
            params_json: crate::plan::params_json(step, &task.params).to_string(),
            attempt: 1,
            status: Status::Marked,
            reason: None,
            started_at: now,
            ended_at: Some(now),
            exit_code: None,
            log_path: None,
            error: None,
            commands,
            inputs_json,
            group: None,
            expect: None,
        });
        batch.tasks.push(TaskUpdate::Mark { task_id: id.clone(), cmd_hash: fp.cmd, inputs_hash: fp.inputs });
    }
    batch.digests.extend(digests.take_fresh());
    digests.release();
    db.commit(&mut batch)?;
    db.end_run(run_id, "success")?;
    println!(
        "marked {} tasks as done (run {run_id}); the next build skips them until an input or a command changes",
        marks.len()
    );
    Ok(0)
}
