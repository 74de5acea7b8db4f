//! The build loop. Tasks become ready when their deps are done; staleness is decided at
//! that moment (so early cutoff falls out: an upstream that rewrote identical bytes leaves
//! its consumers' input digests unchanged); stale tasks wait in a queue ordered by
//! `priority`, then by the longest remaining critical path; up to `-j` run at once within
//! their pools. Outputs are staged and moved into place only when every command succeeded.
//! Records go to the state DB in batched transactions.
//!
//! A dry run walks the same graph in topological order, deciding with "a dep would run"
//! as the provisional `upstream` reason, and writes nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Diag, Error, Result};
use crate::exec::{End, Executor, Job, JobOutput, MakeExecutor, Outcome, Setup};
use crate::fluxfile::{Action, Fluxfile, Step};
use crate::graph::{NONE, TaskGraph, task_key};
use crate::hooks::{Hooks, TaskEvent};
use crate::plan::{CmdRender, Deciding, Decision, Fingerprint, Planner, Reason, RenderError, Triggers};
use crate::report::{Event, Reporter};
use crate::state::{AttemptFact, AttemptRecord, Batch, Records, StateDb, Status, TaskUpdate};
use crate::store;
use crate::target::{self, Digests, Meta};

mod runner;

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
    /// `--only`: run these tasks alone; the rest of the graph counts as done.
    pub only: Option<HashSet<u32>>,
    /// `--wait`: how long to wait for missing sources, overriding each step's `wait`.
    pub wait: Option<Duration>,
    /// What `cpus` and `mem` are budgeted against (this machine's).
    pub cpu_budget: u32,
    pub mem_budget: u64,
    /// `-p`: tell the reporter each task's commands before it runs (and, in a dry run,
    /// render them into the report).
    pub print_commands: bool,
    /// `--stream`: send the commands' output, line by line, to the reporter's line sink.
    pub stream: bool,
    /// Render the commands of would-run tasks in a dry run (`-p`, `--output json`).
    pub dry_commands: bool,
    /// `--var` values: redacted from the rendered commands the state DB keeps.
    pub redact: Vec<String>,
    /// `--executor`: where steps without an `executor` key run (over `[flux] executor`).
    pub executor: Option<crate::exec::Kind>,
}

/// Environment variables of a job: name, value.
type Env = Vec<(String, String)>;

/// What happened to one task (or would, in a dry run).
#[derive(Debug, Clone, Default)]
pub struct TaskResult {
    /// A status of SPEC §8, or `would-run` in a dry run.
    pub status: &'static str,
    pub reason: Option<Reason>,
    pub attempts: u32,
    pub duration_s: Option<f64>,
    pub message: Option<String>,
    /// The last attempt's log file, if it has one.
    pub log: Option<String>,
    /// Dry runs: the commands that would run (final paths), when asked for.
    pub commands: Option<Vec<String>>,
    /// Dry runs: the task would wait for a missing source (`message` says which) rather
    /// than fail.
    pub waits: bool,
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
    /// A write to the state DB failed for good (SPEC §8): the build stopped its tasks,
    /// and this is the cause, for stderr. The records were retried until the busy limit
    /// was over; a run whose records landed in the end still has this set.
    pub db_error: Option<String>,
}

impl Report {
    pub fn count(&self, status: &str) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            130
        } else if self.db_error.is_some()
            || self.results.iter().any(|r| r.status == "failed" || r.status == "upstream_failed")
        {
            1
        } else {
            0
        }
    }
}

/// Counter of SIGINT/SIGTERM/SIGHUP received; set by the handler installed in `cli`.
pub static INTERRUPTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Set by `cli` from `FLUX_TEST_PANIC_AFTER_START` (a test hook, see docs/operations.md):
/// panic in the build loop once a task has run for half a second, to test what a panic
/// does to running tasks.
pub static PANIC_AFTER_START: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set by `flux schedule` on SIGTERM/SIGINT: start nothing new and let running tasks
/// finish (its grace), as a stop does but without interrupting them.
pub static DRAIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn interrupts() -> usize {
    INTERRUPTS.load(std::sync::atomic::Ordering::SeqCst)
}

/// A lease whose holder has not been heard of for this long is taken over (SPEC §6).
const LEASE_STALE_S: f64 = 30.0;
/// How often holders renew their leases, and waiters look at them.
const HEARTBEAT: Duration = Duration::from_secs(10);
const FOREIGN_POLL: Duration = Duration::from_millis(300);
/// Queued tasks are claimed ahead of need in the same transaction as those starting: as
/// many as this build starts in this span (at least four rounds of `-j`, at most
/// `CLAIM_AHEAD_MAX`). A claim is a write transaction; with tiny tasks one a round was a
/// tenth of the build loop's time, while another build waits for a task claimed ahead
/// no longer than about this span.
const CLAIM_AHEAD_SPAN: Duration = Duration::from_millis(100);
const CLAIM_AHEAD_MAX: usize = 1024;
/// At most this many queued or running tasks hold the history record text made with
/// their fingerprint; the others render it again when they succeed.
const TEXTS_HELD: usize = 1024;
/// A task still waiting for more dependencies than this is not claimed ahead.
const SOON_PENDING_MAX: u32 = 16;

/// Flush records after this many, or this often.
const BATCH_RECORDS: usize = 512;
const BATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Deciding stops to flush past this many records.
const DECIDED_BATCH: usize = 8 * BATCH_RECORDS;
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
    fn finished_bad(self) -> bool {
        matches!(self, St::Failed | St::UpstreamFailed | St::Interrupted)
    }
}

/// Everything one build needs.
pub struct Build<'a> {
    pub ff: &'a Fluxfile,
    pub g: &'a TaskGraph,
    pub records: &'a Records,
    pub digests: &'a Digests,
    pub opts: &'a Options,
    planner: Planner<'a>,
    /// Stats of every target taken before the build (see `with_stats`).
    stats: std::sync::Mutex<Option<Vec<Option<Meta>>>>,
}

impl<'a> Build<'a> {
    pub fn new(
        ff: &'a Fluxfile,
        g: &'a TaskGraph,
        records: &'a Records,
        digests: &'a Digests,
        opts: &'a Options,
    ) -> Build<'a> {
        let planner = Planner {
            ff,
            g,
            records,
            digests,
            forced: opts.forced.clone(),
            triggers: opts.triggers,
            // Taken before any stat, so quick keys recorded now are conservative.
            stat_ns: target::now_ns(),
            stat_errors: Default::default(),
            step_keys: crate::plan::step_keys(ff),
        };
        Build { ff, g, records, digests, opts, planner, stats: Default::default() }
    }

    /// Use stats of every target (in `g.targets` order, local targets only) taken from
    /// `stat_ns` on, while the state DB was read: the two overlap on separate cores.
    pub fn with_stats(mut self, stat_ns: i64, metas: Vec<Option<Meta>>) -> Build<'a> {
        self.planner.stat_ns = stat_ns;
        self.stats = std::sync::Mutex::new(Some(metas));
        self
    }

    pub fn ids(&self) -> Vec<String> {
        use rayon::prelude::*;
        let n = self.g.tasks.len() as u32;
        if n < 8192 {
            return (0..n).map(|t| self.g.task_id(self.ff, t)).collect();
        }
        (0..n).into_par_iter().with_min_len(1024).map(|t| self.g.task_id(self.ff, t)).collect()
    }

    /// Stat every target at once: local ones in parallel, remote ones with one listing
    /// per folder. A remote target that cannot be stat'ed counts as missing, and the
    /// cause is kept for the message of a task that needs it.
    pub fn stat_all(&self) -> Result<Vec<Option<Meta>>> {
        if let Some(metas) = self.stats.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Ok(metas);
        }
        let remote: Vec<usize> = (0..self.g.targets.len()).filter(|&i| store::is_remote(&self.g.targets[i])).collect();
        if remote.is_empty() {
            return Ok(target::stat_many(&self.ff.dir, &self.g.targets));
        }
        let is_remote: HashSet<usize> = remote.iter().copied().collect();
        let local: Vec<usize> = (0..self.g.targets.len()).filter(|i| !is_remote.contains(i)).collect();
        let local_names: Vec<Box<str>> = local.iter().map(|&i| self.g.targets[i].clone()).collect();
        let mut metas = vec![None; self.g.targets.len()];
        for (i, m) in local.iter().zip(target::stat_many(&self.ff.dir, &local_names)) {
            metas[*i] = m;
        }
        let names: Vec<&str> = remote.iter().map(|&i| &*self.g.targets[i]).collect();
        let mut errors = self.planner.stat_errors.lock().unwrap_or_else(|e| e.into_inner());
        for (&i, r) in remote.iter().zip(store::stat_many(&names)) {
            match r {
                Ok(m) => metas[i] = m,
                Err(e) => {
                    errors.insert(i as u32, e);
                }
            }
        }
        Ok(metas)
    }

    /// Stat one target again (local or remote).
    fn restat(&self, i: u32) -> Option<Meta> {
        let name = self.g.target(i);
        if store::is_remote(name) { store::stat(name).ok().flatten() } else { target::stat(&self.planner.abs(name)) }
    }

    /// Plan without running or writing anything.
    pub fn dry_run(&self, rep: &mut dyn Reporter) -> Result<Report> {
        let ids = self.ids();
        let metas = self.stat_all()?;
        let planner = &self.planner;
        let n = self.g.tasks.len();
        let mut results = vec![TaskResult::default(); n];
        let mut runs = vec![false; n];
        for &t in &self.g.order {
            let ti = t as usize;
            if self.opts.only.as_ref().is_some_and(|o| !o.contains(&t)) {
                results[ti] = TaskResult { status: "skipped", ..Default::default() };
                continue;
            }
            let up = self.g.tasks[ti].deps().iter().any(|&d| runs[d as usize]);
            match planner.decide(t, &ids[ti], &metas, up, Deciding::Dry) {
                Decision::Skip { .. } => results[ti] = TaskResult { status: "skipped", ..Default::default() },
                Decision::Run { reason, .. } => {
                    runs[ti] = true;
                    results[ti] = TaskResult { status: "would-run", reason: Some(reason), ..Default::default() };
                }
                Decision::Fail { message } => {
                    // A missing source with `wait` (a sensor's default, or --wait) is waited for.
                    let wait = self.opts.wait.unwrap_or(self.ff.steps[self.g.tasks[ti].step as usize].wait);
                    let task = &self.g.tasks[ti];
                    let waits = !wait.is_zero()
                        && task
                            .inputs()
                            .iter()
                            .any(|&i| self.g.producer[i as usize] == NONE && metas[i as usize].is_none());
                    if !waits {
                        rep.event(Event::Warning(&format!("{message}: the build would fail here")));
                    }
                    let message = if waits { format!("{message} (waits up to {})", humantime(wait)) } else { message };
                    runs[ti] = true;
                    results[ti] = TaskResult {
                        status: "would-run",
                        reason: None,
                        message: Some(message),
                        waits,
                        ..Default::default()
                    };
                }
            }
        }
        // Render everything that would run, as the build would: a template that cannot
        // render is a Fluxfile error now, not a failed task later. The first in build
        // order is reported.
        let would: Vec<u32> =
            self.g.order.iter().copied().filter(|&t| results[t as usize].status == "would-run").collect();
        let first_error = {
            use rayon::prelude::*;
            if self.opts.dry_commands {
                // Shown (-p, --output json): kept.
                let rendered: Vec<_> = would.par_iter().map(|&t| self.dry_commands(t, &ids[t as usize])).collect();
                let mut first_error = None;
                for (t, r) in would.into_iter().zip(rendered) {
                    match r {
                        Ok(commands) => results[t as usize].commands = Some(commands),
                        Err(e) => {
                            first_error = Some(e);
                            break;
                        }
                    }
                }
                first_error
            } else {
                // Not shown: each task's commands are dropped as soon as they are rendered
                // (collected, a million tasks' commands cost hundreds of MB); only the
                // first error in build order is kept. Steps whose templates cannot fail
                // (`plan::renders_surely`) are not rendered at all.
                let surely: Vec<bool> = self.ff.steps.iter().map(|s| crate::plan::renders_surely(self.ff, s)).collect();
                would
                    .par_iter()
                    .filter(|&&t| !surely[self.g.tasks[t as usize].step as usize])
                    .filter_map(|&t| self.dry_commands(t, &ids[t as usize]).err())
                    .find_first(|_| true)
            }
        };
        if let Some(e) = first_error {
            rep.finish();
            return Err(Error::Fluxfile(Box::new(Diag::new(e.message, Some(e.span)).help(
                "the build would fail this task: fix the template (a dry run renders every command it would run)",
            ))));
        }
        rep.finish();
        Ok(Report {
            ids,
            results,
            interrupted: false,
            run_id: None,
            digest_reads: self.digests.reads.load(std::sync::atomic::Ordering::Relaxed),
            db_error: None,
        })
    }

    /// Why task `t` would run or is up to date, after the dry run that gave `report`.
    pub fn explain(&self, t: u32, report: &Report, db: Option<&StateDb>, secrets: &[String]) -> Result<String> {
        let metas = self.stat_all()?;
        let decided = |u: u32| {
            let r = &report.results[u as usize];
            crate::explain::Decided {
                status: r.status,
                reason: r.reason.map(Reason::as_str),
                message: r.message.as_deref(),
            }
        };
        Ok(crate::explain::explain(&self.planner, self.g, t, &report.ids, &decided, &metas, db, secrets))
    }

    /// `<state>/logs/<step>/<task-key>/<run>-<attempt>.log`: a new run never overwrites an
    /// older run's log.
    fn log_path(&self, t: u32, id: &str, run_id: i64, attempt: u32) -> PathBuf {
        let step = &self.ff.steps[self.g.tasks[t as usize].step as usize];
        self.ff.state_dir.join("logs").join(&step.name).join(task_key(id)).join(format!("{run_id}-{attempt}.log"))
    }

    /// A path as commands see it: relative to the Fluxfile's folder when inside it.
    fn cmd_path(&self, p: &Path) -> String {
        match p.strip_prefix(&self.ff.dir) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy().into_owned(),
            _ => p.to_string_lossy().into_owned(),
        }
    }

    /// Make the folders, the staging paths and the job for one attempt (`made`: the
    /// folders this build has made already). A dry run renders through
    /// [`Self::dry_commands`] instead.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        t: u32,
        id: &str,
        attempt: u32,
        run_id: i64,
        stage_root: &Path,
        made: &mut HashSet<PathBuf>,
        metas: &[Option<Meta>],
    ) -> std::result::Result<Job, String> {
        let g = self.g;
        let task = &g.tasks[t as usize];
        let step = &self.ff.steps[task.step as usize];
        let stage = step.stage;
        let planner = &self.planner;
        let key = task_key(id);
        let mut mkdir = |d: &Path| -> std::result::Result<(), String> {
            if made.contains(d) {
                return Ok(());
            }
            std::fs::create_dir_all(d).map_err(|e| format!("cannot create folder {}: {e}", d.display()))?;
            made.insert(d.to_path_buf());
            Ok(())
        };
        let mut outs = Vec::with_capacity(task.outputs().len());
        let mut job_outputs = Vec::with_capacity(task.outputs().len());
        let mut copies = Vec::new();
        for (i, &o) in task.outputs().iter().enumerate() {
            let name = g.target(o).to_string();
            let dir = step.outputs[i].dir;
            let remote = store::is_remote(&name).then(|| name.clone());
            let fin = if remote.is_some() {
                // Only the file name is used (for the staging path); the key is the URI.
                PathBuf::from(store::file_name(&name))
            } else {
                planner.abs(&name)
            };
            if remote.is_none()
                && let Some(parent) = fin.parent()
            {
                mkdir(parent)?;
            }
            if remote.is_some() && !stage {
                // The commands write the URI themselves (Spark and friends).
                job_outputs.push(JobOutput { staged: None, path: fin, dir, name: name.clone(), remote });
                outs.push(End::Remote(name));
                continue;
            }
            let path = if stage {
                let staged = target::staging_path(stage_root, &key, i, &fin);
                if let Some(parent) = staged.parent() {
                    mkdir(parent)?;
                }
                job_outputs.push(JobOutput { staged: Some(staged.clone()), path: fin, dir, name, remote });
                // Leftovers of this run's earlier attempt (the folder is new for each run,
                // so a first attempt has none).
                if attempt > 1 {
                    let _ = crate::guard::remove_owned(&staged, &staged);
                }
                if step.outputs[i].dir {
                    std::fs::create_dir_all(&staged)
                        .map_err(|e| format!("cannot create staging folder {}: {e}", staged.display()))?;
                }
                staged
            } else {
                job_outputs.push(JobOutput { staged: None, path: fin.clone(), dir, name, remote });
                fin
            };
            outs.push(End::Local(path));
        }
        let copy = step.action == Some(Action::Copy);
        if copy {
            for (i, &inp) in task.inputs().iter().enumerate() {
                let from = g.target(inp);
                let from =
                    if store::is_remote(from) { End::Remote(from.to_string()) } else { End::Local(planner.abs(from)) };
                if let Some(to) = outs.get(i) {
                    copies.push((from, to.clone()));
                }
            }
        }
        // Remote inputs: with staging, commands read a local copy in the cache.
        let mut fetches = Vec::new();
        let mut leases = Vec::new();
        let mut ins: Vec<String> = Vec::with_capacity(task.inputs().len());
        for &i in task.inputs() {
            let name = g.target(i);
            match metas[i as usize] {
                Some(m) if stage && !copy && store::is_remote(name) => {
                    let digest = self.digests.digest(name, Path::new(""), &m).map_err(|e| e.to_string())?;
                    let local = store::cache_path(&crate::cache::root(&self.ff.state_dir), name, &digest);
                    leases.push(crate::cache::lease(&local, name)?);
                    ins.push(local.to_string_lossy().into_owned());
                    fetches.push((name.to_string(), m, local));
                }
                _ => ins.push(name.to_string()),
            }
        }
        let (commands, env) = self.job_commands(t, id, &ins, &outs, stage, attempt, run_id)?;
        // `--var` values never reach the logs in plain text (SPEC §9).
        let headers = (!self.opts.redact.is_empty())
            .then(|| commands.iter().map(|c| crate::explain::redact(c, &self.opts.redact)).collect());
        Ok(Job {
            id: t,
            commands,
            headers,
            fetches,
            leases,
            copies,
            env,
            cwd: self.ff.dir.clone(),
            log: self.log_path(t, id, run_id, attempt),
            timeout: step.timeout,
            echo: None,
            outputs: job_outputs,
            slurm: (self.executor(step) == crate::exec::Kind::Slurm).then(|| {
                Box::new(crate::exec::SlurmJob {
                    comment: format!("{id}#{attempt}"),
                    cpus: step.cpus,
                    mem: step.mem,
                    settings: step.slurm.clone(),
                    array: step.array.as_ref().is_some_and(|(a, _)| *a).then_some(task.step),
                    adopt: None,
                })
            }),
        })
    }

    /// Where a step's tasks run: its `executor`, else `--executor`, else `[flux] executor`.
    pub fn executor(&self, step: &Step) -> crate::exec::Kind {
        step.executor.or(self.opts.executor).or(self.ff.executor).unwrap_or(crate::exec::Kind::Local)
    }

    /// The cpus and memory a step's task takes from this machine's budget: none when it
    /// runs on Slurm (Slurm places it).
    fn budget(&self, step: &Step) -> (u32, u64) {
        match self.executor(step) {
            crate::exec::Kind::Local => (step.cpus, step.mem.unwrap_or(0)),
            crate::exec::Kind::Slurm => (0, 0),
        }
    }

    /// A task's commands as its job runs them (pre, run, post, in order) and its env, for
    /// the inputs and outputs it sees (`outs`: staged paths in a build, final ones in a
    /// dry run).
    #[allow(clippy::too_many_arguments)]
    fn job_commands(
        &self,
        t: u32,
        id: &str,
        ins: &[String],
        outs: &[End],
        staged: bool,
        attempt: u32,
        run_id: i64,
    ) -> std::result::Result<(Vec<String>, Env), RenderError> {
        let out_strs: Vec<String> = outs
            .iter()
            .map(|o| match o {
                // Staged paths are absolute, so that a command may change folders first;
                // unstaged ones are the targets as written.
                End::Local(p) if staged => p.to_string_lossy().into_owned(),
                End::Local(p) => self.cmd_path(p),
                End::Remote(u) => u.clone(),
            })
            .collect();
        let r = CmdRender { inputs: ins, outputs: &out_strs, attempt, run_id };
        let cmds = self.planner.render_commands(t, id, &r)?;
        let mut commands = cmds.pre;
        commands.extend(cmds.run);
        commands.extend(cmds.post);
        Ok((commands, cmds.env))
    }

    /// What a dry run renders for a task that would run: its commands as [`Self::prepare`]
    /// renders them, with the final output paths instead of staged ones and remote inputs
    /// by their URI (a build hands commands the cached copy), and its hooks as they fire.
    fn dry_commands(&self, t: u32, id: &str) -> std::result::Result<Vec<String>, RenderError> {
        let task = &self.g.tasks[t as usize];
        let step = &self.ff.steps[task.step as usize];
        let ins: Vec<String> = task.inputs().iter().map(|&i| self.g.target(i).to_string()).collect();
        let outs: Vec<End> = task
            .outputs()
            .iter()
            .map(|&o| {
                let name = self.g.target(o);
                if store::is_remote(name) { End::Remote(name.to_string()) } else { End::Local(self.planner.abs(name)) }
            })
            .collect();
        let (commands, _env) = self.job_commands(t, id, &ins, &outs, false, 1, 0)?;
        // Hooks see the targets' names (see `Run::hook`).
        let names: Vec<String> = task.outputs().iter().map(|&o| self.g.target(o).to_string()).collect();
        let r = CmdRender { inputs: &ins, outputs: &names, attempt: 1, run_id: 0 };
        for tpl in [&step.on_success, &step.on_failure, &step.on_retry].into_iter().flatten() {
            self.planner.render_one(t, id, tpl, &r)?;
        }
        Ok(commands)
    }

    /// What is at a `stage = false` task's local outputs before an attempt (see `cleanup_failed`).
    fn before_attempt(&self, t: u32) -> Vec<Option<crate::guard::Before>> {
        let outputs = &self.g.tasks[t as usize].outputs();
        outputs
            .iter()
            .map(|&o| {
                let name = self.g.target(o);
                if store::is_remote(name) {
                    // Not known (the store cannot be reached): nothing is removed afterwards.
                    store::snapshot(name).ok().map(crate::guard::Before::Objects)
                } else {
                    Some(crate::guard::Before::take(&self.planner.abs(name)))
                }
            })
            .collect()
    }

    /// After a failure: drop staged files, or (stage = false) what the attempt wrote,
    /// judged against `before` (SPEC §5: flux deletes only what it owns). Returns what
    /// could not be removed, as warnings.
    fn cleanup_failed(
        &self,
        t: u32,
        id: &str,
        stage_root: &Path,
        before: Option<Vec<Option<crate::guard::Before>>>,
    ) -> Vec<String> {
        let task = &self.g.tasks[t as usize];
        let step = &self.ff.steps[task.step as usize];
        let planner = &self.planner;
        let key = task_key(id);
        let mut warnings = Vec::new();
        for (i, &o) in task.outputs().iter().enumerate() {
            let name = self.g.target(o);
            if store::is_remote(name) {
                if step.stage {
                    let file = PathBuf::from(store::file_name(name));
                    let staged = target::staging_path(stage_root, &key, i, &file);
                    let _ = crate::guard::remove_owned(&staged, &staged);
                } else if let Some(crate::guard::Before::Objects(b)) =
                    before.as_ref().and_then(|b| b.get(i)).and_then(Option::as_ref)
                    && let Err(e) = store::remove_new(name, b)
                {
                    // What a failed task wrote must not look like an output.
                    warnings.push(format!("{id}: cannot remove what the failed attempt wrote: {e}"));
                }
                continue;
            }
            let fin = planner.abs(name);
            let r = if step.stage {
                let staged = target::staging_path(stage_root, &key, i, &fin);
                crate::guard::remove_owned(&staged, &staged)
            } else {
                match before.as_ref().and_then(|b| b.get(i)).and_then(Option::as_ref) {
                    Some(b) => b.undo(&fin),
                    // Not looked at before the attempt: nothing is known to be its own.
                    None => Ok(()),
                }
            };
            if let Err(e) = r {
                warnings.push(format!("{id}: cannot remove what the failed attempt wrote in `{name}`: {e}"));
            }
        }
        warnings
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
        let params = crate::plan::params_json(step, &task.params);
        AttemptRecord {
            run_id,
            task_id: id.to_string(),
            step: step.name.clone(),
            params_json: params.to_string(),
            attempt,
            status,
            reason: reason.map(|r| r.as_str().to_string()),
            started_at,
            ended_at: Some(ended_at),
            exit_code,
            log_path: log.map(str::to_string),
            error: error.map(str::to_string),
            commands: None,
            inputs_json: None,
            group: None,
            expect: None,
        }
    }
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
