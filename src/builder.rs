//! The build loop. Tasks become ready when their deps are done; staleness is decided at
//! that moment (so early cutoff falls out: an upstream that rewrote identical bytes leaves
//! its consumers' input digests unchanged); stale tasks wait in a queue ordered by
//! `priority`, then by the longest remaining critical path; up to `-j` run at once within
//! their pools. Outputs are staged and moved into place only when every command succeeded.
//! Records go to the state DB in batched transactions.
//!
//! A dry run walks the same graph in topological order, deciding with "a dep would run"
//! as the provisional `upstream` reason, and writes nothing.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::exec::{Job, LocalExecutor, Outcome};
use crate::fluxfile::{Action, Fluxfile};
use crate::graph::{NONE, TaskGraph, task_key};
use crate::plan::{CmdRender, Decision, Fingerprint, Planner, Reason, Triggers};
use crate::report::{Event, Reporter};
use crate::state::{AttemptRecord, Batch, StateDb, Status, TaskRecord, TaskUpdate};
use crate::target::{self, Digests, Meta};

/// How to build.
#[derive(Debug, Clone)]
pub struct Options {
    pub jobs: usize,
    pub dry_run: bool,
    /// Tasks forced to run (`--force`, `--from`).
    pub forced: HashSet<u32>,
    pub triggers: Triggers,
    pub fail_fast: bool,
    /// The command line, for the run record.
    pub command: String,
}

/// What happened to one task (or would, in a dry run).
#[derive(Debug, Clone, Default)]
pub struct TaskResult {
    /// A status of SPEC §8, or `would-run` in a dry run.
    pub status: &'static str,
    pub reason: Option<Reason>,
    pub attempts: u32,
    pub duration_s: Option<f64>,
    pub message: Option<String>,
}

/// The result of a build.
#[derive(Debug)]
pub struct Report {
    pub ids: Vec<String>,
    pub results: Vec<TaskResult>,
    pub interrupted: bool,
    pub run_id: Option<i64>,
    /// Files whose content was read to compute digests.
    pub digest_reads: u64,
}

impl Report {
    pub fn count(&self, status: &str) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            130
        } else if self
            .results
            .iter()
            .any(|r| r.status == "failed" || r.status == "upstream_failed")
        {
            1
        } else {
            0
        }
    }
}

/// Counter of SIGINT/SIGTERM received; set by the handler installed in `cli`.
pub static INTERRUPTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn interrupts() -> usize {
    INTERRUPTS.load(std::sync::atomic::Ordering::SeqCst)
}

/// Flush records after this many, or this often.
const BATCH_RECORDS: usize = 512;
const BATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Estimated duration of a task with no history, for critical-path ordering.
const DEFAULT_DURATION_S: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Waiting,
    Queued,
    Running,
    Ran,
    Skipped,
    Failed,
    UpstreamFailed,
    Interrupted,
}

impl St {
    fn finished_ok(self) -> bool {
        matches!(self, St::Ran | St::Skipped)
    }
    fn finished_bad(self) -> bool {
        matches!(self, St::Failed | St::UpstreamFailed | St::Interrupted)
    }
}

/// Everything one build needs.
pub struct Build<'a> {
    pub ff: &'a Fluxfile,
    pub g: &'a TaskGraph,
    pub records: &'a HashMap<String, TaskRecord>,
    pub digests: &'a Digests,
    pub opts: &'a Options,
}

impl Build<'_> {
    pub fn ids(&self) -> Vec<String> {
        (0..self.g.tasks.len() as u32)
            .map(|t| self.g.task_id(self.ff, t))
            .collect()
    }

    fn planner(&self) -> Planner<'_> {
        Planner {
            ff: self.ff,
            g: self.g,
            records: self.records,
            digests: self.digests,
            forced: self.opts.forced.clone(),
            triggers: self.opts.triggers,
        }
    }

    /// Stat every target at once, in parallel.
    pub fn stat_all(&self) -> Result<Vec<Option<Meta>>> {
        if let Some(t) = self.g.targets.iter().find(|t| t.contains("://")) {
            return Err(Error::Usage(format!(
                "`{t}`: remote targets (s3://, hdfs://, gs://, az://) are not supported yet by this flux"
            )));
        }
        let dir = &self.ff.dir;
        Ok(self
            .g
            .targets
            .par_iter()
            .with_min_len(256)
            .map(|t| {
                let p = Path::new(&**t);
                if p.is_absolute() {
                    target::stat(p)
                } else {
                    target::stat(&dir.join(p))
                }
            })
            .collect())
    }

    /// Plan without running or writing anything.
    pub fn dry_run(&self, rep: &mut dyn Reporter) -> Result<Report> {
        let ids = self.ids();
        let metas = self.stat_all()?;
        let planner = self.planner();
        let n = self.g.tasks.len();
        let mut results = vec![TaskResult::default(); n];
        let mut runs = vec![false; n];
        for &t in &self.g.order {
            let ti = t as usize;
            let up = self.g.tasks[ti].deps.iter().any(|&d| runs[d as usize]);
            match planner.decide(t, &ids[ti], &metas, up, true) {
                Decision::Skip { .. } => {
                    results[ti] = TaskResult {
                        status: "skipped",
                        ..Default::default()
                    }
                }
                Decision::Run { reason, .. } => {
                    runs[ti] = true;
                    results[ti] = TaskResult {
                        status: "would-run",
                        reason: Some(reason),
                        ..Default::default()
                    };
                }
                Decision::Fail { message } => {
                    rep.event(Event::Warning(&format!(
                        "{message}: the build would fail here"
                    )));
                    runs[ti] = true;
                    results[ti] = TaskResult {
                        status: "would-run",
                        reason: None,
                        message: Some(message),
                        ..Default::default()
                    };
                }
            }
        }
        rep.finish();
        Ok(Report {
            ids,
            results,
            interrupted: false,
            run_id: None,
            digest_reads: self
                .digests
                .reads
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Build for real.
    pub fn run(&self, db: &mut StateDb, rep: &mut dyn Reporter) -> Result<Report> {
        let ids = self.ids();
        let mut metas = self.stat_all()?;
        let planner = self.planner();
        let ff = self.ff;
        let g = self.g;
        let n = g.tasks.len();
        let run_id = db.begin_run(&self.opts.command)?;
        rep.event(Event::Planned { total: n });

        let dependents = g.dependents();
        let mut pending: Vec<u32> = g.tasks.iter().map(|t| t.deps.len() as u32).collect();
        let mut st = vec![St::Waiting; n];
        let mut results = vec![TaskResult::default(); n];
        let mut fps: Vec<Option<Fingerprint>> = vec![None; n];
        let cp = critical_path(g, &ids, self.records, &dependents);

        let mut ready: Vec<u32> = (0..n as u32)
            .filter(|&t| pending[t as usize] == 0)
            .collect();
        ready.reverse();
        let mut queue: BinaryHeap<(i64, u64, std::cmp::Reverse<u32>)> = BinaryHeap::new();
        let mut retry_at: Vec<(Instant, u32)> = Vec::new();
        let mut pool_busy = vec![0usize; ff.pools.len()];
        let mut batch = Batch::default();
        let mut last_flush = Instant::now();
        let exec = LocalExecutor::new();
        let mut running_started: HashMap<u32, (SystemTime, Reason)> = HashMap::new();
        let mut seen_interrupts = 0usize;
        let mut any_failed = false;
        // Jobs started and not yet received back (the executor's own count drops a moment
        // before its result arrives, so the loop keeps its own).
        let mut in_flight = 0usize;
        let stage_root = ff.state_dir.join("stage");
        let mut made_dirs: HashSet<PathBuf> = HashSet::new();

        loop {
            // 1. Decide every task whose deps are all finished.
            while let Some(t) = ready.pop() {
                let ti = t as usize;
                let task = &g.tasks[ti];
                if task.deps.iter().any(|&d| st[d as usize].finished_bad()) {
                    st[ti] = St::UpstreamFailed;
                    results[ti] = TaskResult {
                        status: "upstream_failed",
                        ..Default::default()
                    };
                    rep.event(Event::UpstreamFailed { id: &ids[ti] });
                    release(t, &dependents, &mut pending, &mut ready);
                    continue;
                }
                match planner.decide(t, &ids[ti], &metas, false, false) {
                    Decision::Skip { adopt } => {
                        if let Some(fp) = adopt {
                            batch.tasks.push(TaskUpdate::Adopt {
                                task_id: ids[ti].clone(),
                                cmd_hash: fp.cmd,
                                inputs_hash: fp.inputs,
                            });
                        }
                        st[ti] = St::Skipped;
                        results[ti] = TaskResult {
                            status: "skipped",
                            ..Default::default()
                        };
                        rep.event(Event::Skipped { id: &ids[ti] });
                        release(t, &dependents, &mut pending, &mut ready);
                    }
                    Decision::Run { reason, fp } => {
                        fps[ti] = fp;
                        st[ti] = St::Queued;
                        results[ti].reason = Some(reason);
                        let prio = ff.steps[task.step as usize].priority;
                        queue.push((prio, cp[ti], std::cmp::Reverse(t)));
                    }
                    Decision::Fail { message } => {
                        any_failed = true;
                        st[ti] = St::Failed;
                        let now = unix_now();
                        batch.attempts.push(self.attempt(
                            run_id,
                            t,
                            &ids[ti],
                            1,
                            Status::Failed,
                            None,
                            now,
                            now,
                            None,
                            None,
                            Some(&message),
                        ));
                        batch.tasks.push(TaskUpdate::Status {
                            task_id: ids[ti].clone(),
                            status: Status::Failed,
                        });
                        rep.event(Event::Failed {
                            id: &ids[ti],
                            message: &message,
                            log: None,
                        });
                        results[ti] = TaskResult {
                            status: "failed",
                            attempts: 0,
                            message: Some(message),
                            ..Default::default()
                        };
                        release(t, &dependents, &mut pending, &mut ready);
                    }
                }
            }

            // 2. Interrupts.
            let ints = interrupts();
            if ints > seen_interrupts {
                if seen_interrupts == 0 {
                    rep.event(Event::Interrupting);
                }
                exec.interrupt_all(ints >= 2);
                seen_interrupts = ints;
            }
            let stop_launching = seen_interrupts > 0 || (self.opts.fail_fast && any_failed);

            // 3. Retries whose delay is over go back in the queue.
            let now = Instant::now();
            retry_at.retain(|&(at, t)| {
                if at <= now && !stop_launching {
                    let prio = ff.steps[g.tasks[t as usize].step as usize].priority;
                    queue.push((prio, cp[t as usize], std::cmp::Reverse(t)));
                    false
                } else {
                    true
                }
            });

            // 4. Launch.
            let mut deferred = Vec::new();
            while !stop_launching && in_flight < self.opts.jobs {
                let Some(item) = queue.pop() else { break };
                let t = item.2.0;
                let ti = t as usize;
                let step = &ff.steps[g.tasks[ti].step as usize];
                if let Some(p) = step.pool
                    && pool_busy[p] >= ff.pools[p].1
                {
                    deferred.push(item);
                    continue;
                }
                results[ti].attempts += 1;
                let attempt = results[ti].attempts;
                match self.prepare(t, &ids[ti], attempt, run_id, &stage_root, &mut made_dirs) {
                    Ok(job) => {
                        if let Some(p) = step.pool {
                            pool_busy[p] += 1;
                        }
                        if !step.stage {
                            // A crash while this runs must be visible next time (`incomplete`).
                            batch.tasks.push(TaskUpdate::Status {
                                task_id: ids[ti].clone(),
                                status: Status::Running,
                            });
                            db.commit(&mut batch)?;
                        }
                        let reason = results[ti].reason.unwrap_or(Reason::Forced);
                        rep.event(Event::Started {
                            id: &ids[ti],
                            reason: reason.as_str(),
                            attempt,
                        });
                        running_started.insert(t, (SystemTime::now(), reason));
                        st[ti] = St::Running;
                        in_flight += 1;
                        exec.start(job);
                    }
                    Err(message) => {
                        any_failed = true;
                        st[ti] = St::Failed;
                        let now = unix_now();
                        batch.attempts.push(self.attempt(
                            run_id,
                            t,
                            &ids[ti],
                            attempt,
                            Status::Failed,
                            results[ti].reason,
                            now,
                            now,
                            None,
                            None,
                            Some(&message),
                        ));
                        batch.tasks.push(TaskUpdate::Status {
                            task_id: ids[ti].clone(),
                            status: Status::Failed,
                        });
                        rep.event(Event::Failed {
                            id: &ids[ti],
                            message: &message,
                            log: None,
                        });
                        results[ti].status = "failed";
                        results[ti].message = Some(message);
                        release(t, &dependents, &mut pending, &mut ready);
                    }
                }
            }
            queue.extend(deferred);

            // 5. Done?
            if in_flight == 0
                && ready.is_empty()
                && (queue.is_empty() || stop_launching)
                && (retry_at.is_empty() || stop_launching)
            {
                break;
            }
            if !ready.is_empty() {
                continue;
            }

            // 6. Wait for a job (briefly, to notice signals, timeouts and retry times).
            let Some(fin) = exec.wait(Duration::from_millis(50)) else {
                if !batch.is_empty() && last_flush.elapsed() >= BATCH_INTERVAL {
                    db.commit(&mut batch)?;
                    last_flush = Instant::now();
                }
                continue;
            };
            in_flight -= 1;
            let t = fin.id;
            let ti = t as usize;
            let step = &ff.steps[g.tasks[ti].step as usize];
            if let Some(p) = step.pool {
                pool_busy[p] -= 1;
            }
            let (started, reason) = running_started
                .remove(&t)
                .unwrap_or((SystemTime::now(), Reason::Forced));
            let attempt = results[ti].attempts;
            let log_s = fin.logged.then(|| {
                self.log_path(t, &ids[ti], attempt)
                    .to_string_lossy()
                    .into_owned()
            });
            let log_s = log_s.as_deref();
            let started_s = started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let ended_s = unix_now();
            let mut outcome = fin.outcome;
            if outcome == Outcome::Success
                && let Err(message) = self.commit_outputs(t, &ids[ti], &stage_root, &mut metas)
            {
                outcome = Outcome::Failed {
                    exit_code: Some(0),
                    message,
                };
            }
            let dur = fin.duration.as_secs_f64();
            match outcome {
                Outcome::Success => {
                    st[ti] = St::Ran;
                    results[ti].status = "success";
                    results[ti].duration_s = Some(dur);
                    batch.attempts.push(self.attempt(
                        run_id,
                        t,
                        &ids[ti],
                        attempt,
                        Status::Success,
                        Some(reason),
                        started_s,
                        ended_s,
                        Some(0),
                        log_s,
                        None,
                    ));
                    let fp = match fps[ti] {
                        Some(fp) => Some(fp),
                        None => planner.fingerprint(t, &ids[ti], &metas).ok(),
                    };
                    if let Some(fp) = fp {
                        batch.tasks.push(TaskUpdate::Success {
                            task_id: ids[ti].clone(),
                            cmd_hash: fp.cmd,
                            inputs_hash: fp.inputs,
                            duration_s: dur,
                        });
                    }
                    rep.event(Event::Succeeded {
                        id: &ids[ti],
                        duration: fin.duration,
                    });
                    release(t, &dependents, &mut pending, &mut ready);
                }
                other => {
                    self.cleanup_failed(t, &ids[ti], &stage_root);
                    let (status, exit_code, message) = match other {
                        Outcome::Failed { exit_code, message } => {
                            (Status::Failed, exit_code, message)
                        }
                        Outcome::TimedOut => (
                            Status::Failed,
                            None,
                            format!(
                                "timed out after {}",
                                humantime(step.timeout.unwrap_or_default())
                            ),
                        ),
                        _ => (Status::Interrupted, None, "interrupted".to_string()),
                    };
                    let can_retry =
                        status == Status::Failed && attempt <= step.retries && seen_interrupts == 0;
                    if can_retry {
                        let delay = step
                            .retry_delay
                            .mul_f64(step.retry_backoff.powi(attempt as i32 - 1));
                        batch.attempts.push(self.attempt(
                            run_id,
                            t,
                            &ids[ti],
                            attempt,
                            Status::Retrying,
                            Some(reason),
                            started_s,
                            ended_s,
                            exit_code,
                            log_s,
                            Some(&message),
                        ));
                        rep.event(Event::Retrying {
                            id: &ids[ti],
                            attempt: attempt + 1,
                            delay,
                            message: &message,
                        });
                        st[ti] = St::Queued;
                        retry_at.push((Instant::now() + delay, t));
                    } else {
                        if status == Status::Failed {
                            any_failed = true;
                        }
                        st[ti] = if status == Status::Interrupted {
                            St::Interrupted
                        } else {
                            St::Failed
                        };
                        results[ti].status = status.as_str();
                        results[ti].duration_s = Some(dur);
                        results[ti].message = Some(message.clone());
                        batch.attempts.push(self.attempt(
                            run_id,
                            t,
                            &ids[ti],
                            attempt,
                            status,
                            Some(reason),
                            started_s,
                            ended_s,
                            exit_code,
                            log_s,
                            Some(&message),
                        ));
                        batch.tasks.push(TaskUpdate::Status {
                            task_id: ids[ti].clone(),
                            status,
                        });
                        if status == Status::Interrupted {
                            rep.event(Event::Warning(&format!("{} interrupted", ids[ti])));
                        } else {
                            rep.event(Event::Failed {
                                id: &ids[ti],
                                message: &message,
                                log: log_s,
                            });
                        }
                        release(t, &dependents, &mut pending, &mut ready);
                    }
                }
            }
            if batch.len() >= BATCH_RECORDS || last_flush.elapsed() >= BATCH_INTERVAL {
                batch.digests.extend(self.digests.take_fresh());
                db.commit(&mut batch)?;
                last_flush = Instant::now();
            }
        }

        // Tasks never started (fail-fast, interrupt) keep their queued state in the report.
        for ti in 0..n {
            if results[ti].status.is_empty() {
                results[ti].status = match st[ti] {
                    St::Queued | St::Waiting if seen_interrupts > 0 => "interrupted",
                    _ => "queued",
                };
            }
        }
        batch.digests.extend(self.digests.take_fresh());
        db.commit(&mut batch)?;
        let interrupted = seen_interrupts > 0;
        let failed = st
            .iter()
            .any(|s| matches!(s, St::Failed | St::UpstreamFailed));
        db.end_run(
            run_id,
            if interrupted {
                "interrupted"
            } else if failed {
                "failed"
            } else {
                "success"
            },
        )?;
        rep.finish();
        let _ = st.iter().filter(|s| s.finished_ok()).count();
        Ok(Report {
            ids,
            results,
            interrupted,
            run_id: Some(run_id),
            digest_reads: self
                .digests
                .reads
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    fn log_path(&self, t: u32, id: &str, attempt: u32) -> PathBuf {
        let step = &self.ff.steps[self.g.tasks[t as usize].step as usize];
        self.ff
            .state_dir
            .join("logs")
            .join(&step.name)
            .join(task_key(id))
            .join(format!("{attempt}.log"))
    }

    /// A path as commands see it: relative to the Fluxfile's folder when inside it.
    fn cmd_path(&self, p: &Path) -> String {
        match p.strip_prefix(&self.ff.dir) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy().into_owned(),
            _ => p.to_string_lossy().into_owned(),
        }
    }

    /// Make the folders, the staging paths and the job for one attempt.
    fn prepare(
        &self,
        t: u32,
        id: &str,
        attempt: u32,
        run_id: i64,
        stage_root: &Path,
        made: &mut HashSet<PathBuf>,
    ) -> std::result::Result<Job, String> {
        let g = self.g;
        let task = &g.tasks[t as usize];
        let step = &self.ff.steps[task.step as usize];
        let planner = self.planner();
        let key = task_key(id);
        let mut mkdir = |d: &Path| -> std::result::Result<(), String> {
            if made.contains(d) {
                return Ok(());
            }
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create folder {}: {e}", d.display()))?;
            made.insert(d.to_path_buf());
            Ok(())
        };
        if step.stage && !task.outputs.is_empty() {
            mkdir(stage_root)?;
        }
        let mut outs = Vec::with_capacity(task.outputs.len());
        let mut copies = Vec::new();
        for (i, &o) in task.outputs.iter().enumerate() {
            let fin = planner.abs(g.target(o));
            if let Some(parent) = fin.parent() {
                mkdir(parent)?;
            }
            let path = if step.stage {
                let staged = target::staging_path(stage_root, &key, i, &fin);
                // Leftovers of an earlier, killed attempt.
                let _ = target::remove(&staged);
                if step.outputs[i].dir {
                    std::fs::create_dir_all(&staged).map_err(|e| {
                        format!("cannot create staging folder {}: {e}", staged.display())
                    })?;
                }
                staged
            } else {
                fin
            };
            outs.push(path);
        }
        if step.action == Some(Action::Copy) {
            for (i, &inp) in task.inputs.iter().enumerate() {
                if let Some(out) = outs.get(i) {
                    copies.push((planner.abs(g.target(inp)), out.clone()));
                }
            }
        }
        let ins: Vec<String> = task
            .inputs
            .iter()
            .map(|&i| g.target(i).to_string())
            .collect();
        let out_strs: Vec<String> = outs.iter().map(|p| self.cmd_path(p)).collect();
        let cmds = planner.render_commands(
            t,
            id,
            &CmdRender {
                inputs: &ins,
                outputs: &out_strs,
                attempt,
                run_id,
            },
        )?;
        let mut commands = cmds.pre;
        commands.extend(cmds.run);
        commands.extend(cmds.post);
        Ok(Job {
            id: t,
            commands,
            copies,
            env: cmds.env,
            cwd: self.ff.dir.clone(),
            log: self.log_path(t, id, attempt),
            timeout: step.timeout,
        })
    }

    /// Move staged outputs into place and re-stat them; a missing output fails the task.
    fn commit_outputs(
        &self,
        t: u32,
        id: &str,
        stage_root: &Path,
        metas: &mut [Option<Meta>],
    ) -> std::result::Result<(), String> {
        let g = self.g;
        let task = &g.tasks[t as usize];
        let step = &self.ff.steps[task.step as usize];
        let planner = self.planner();
        let key = task_key(id);
        for (i, &o) in task.outputs.iter().enumerate() {
            let fin = planner.abs(g.target(o));
            if step.stage {
                let staged = target::staging_path(stage_root, &key, i, &fin);
                if std::fs::symlink_metadata(&staged).is_err() {
                    return Err(format!(
                        "the command succeeded but did not write output `{}`",
                        g.target(o)
                    ));
                }
                target::commit(&staged, &fin)
                    .map_err(|e| format!("cannot move output `{}` into place: {e}", g.target(o)))?;
            }
            let m = target::stat(&fin);
            if m.is_none() {
                return Err(format!(
                    "the command succeeded but output `{}` does not exist",
                    g.target(o)
                ));
            }
            metas[o as usize] = m;
        }
        Ok(())
    }

    /// After a failure: drop staged files, or (stage = false) what the task wrote.
    fn cleanup_failed(&self, t: u32, id: &str, stage_root: &Path) {
        let task = &self.g.tasks[t as usize];
        let step = &self.ff.steps[task.step as usize];
        let planner = self.planner();
        let key = task_key(id);
        for (i, &o) in task.outputs.iter().enumerate() {
            let fin = planner.abs(self.g.target(o));
            let _ = target::remove(&if step.stage {
                target::staging_path(stage_root, &key, i, &fin)
            } else {
                fin
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        run_id: i64,
        t: u32,
        id: &str,
        attempt: u32,
        status: Status,
        reason: Option<Reason>,
        started_at: f64,
        ended_at: f64,
        exit_code: Option<i32>,
        log: Option<&str>,
        error: Option<&str>,
    ) -> AttemptRecord {
        let task = &self.g.tasks[t as usize];
        let step = &self.ff.steps[task.step as usize];
        let params: serde_json::Map<String, serde_json::Value> =
            crate::plan::param_strings(step, &task.params)
                .into_iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
                .collect();
        AttemptRecord {
            run_id,
            task_id: id.to_string(),
            step: step.name.clone(),
            params_json: serde_json::Value::Object(params).to_string(),
            attempt,
            status,
            reason: reason.map(|r| r.as_str().to_string()),
            started_at,
            ended_at: Some(ended_at),
            exit_code,
            log_path: log.map(str::to_string),
            error: error.map(str::to_string),
        }
    }
}

fn release(t: u32, dependents: &[Vec<u32>], pending: &mut [u32], ready: &mut Vec<u32>) {
    for &d in &dependents[t as usize] {
        let p = &mut pending[d as usize];
        *p -= 1;
        if *p == 0 {
            ready.push(d);
        }
    }
}

/// Longest remaining path (in estimated milliseconds) from each task to the end.
fn critical_path(
    g: &TaskGraph,
    ids: &[String],
    records: &HashMap<String, TaskRecord>,
    dependents: &[Vec<u32>],
) -> Vec<u64> {
    let mut cp = vec![0u64; g.tasks.len()];
    for &t in g.order.iter().rev() {
        let ti = t as usize;
        let own = records
            .get(&ids[ti])
            .and_then(|r| r.duration_s)
            .unwrap_or(DEFAULT_DURATION_S);
        let own_ms = (own * 1000.0).max(1.0) as u64;
        let after = dependents[ti]
            .iter()
            .map(|&d| cp[d as usize])
            .max()
            .unwrap_or(0);
        cp[ti] = own_ms + after;
    }
    let _ = NONE;
    cp
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if d.subsec_millis() == 0 {
        format!("{s}s")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
