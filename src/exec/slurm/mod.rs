//! Running jobs on a Slurm cluster (SPEC §6). Each job is one `sbatch --parsable` job
//! named `flux-<run-id>`, commented `<task-id>#<attempt>`, running a wrapper script that
//! flux writes into the run's staging folder: it runs the commands (with the job's env,
//! in the Fluxfile's folder, output to the attempt's log) and writes the exit code to a
//! file next to the log, atomically (a temporary file, then `mv`). The graph stays in
//! flux: a job is submitted when the build loop hands it over.
//!
//! One thread submits and polls: one call per round for the whole run (`sacct` where
//! accounting is set up, else `squeue`; see [`query`]), every `[slurm] poll` while
//! something changes, backing off to [`MAX_POLL`]. A job in a final state (or forgotten
//! by Slurm) has ended: its exit code comes from the exit file (waited for up to
//! `[slurm] latency_wait`, for a shared file system's lag); with no exit file, Slurm's
//! state says why (`CANCELLED`, `TIMEOUT`, `NODE_FAIL`, `OUT_OF_MEMORY`, `PREEMPTED`…).
//! Outputs are moved into place from staging here, on the submitting host, once the exit
//! file is read (the local executor's code). Ctrl-C cancels every job of the run with one
//! `scancel --name`; a step's `timeout` is enforced by flux too (Slurm's `--time` counts
//! whole minutes): the job is cancelled. With `--stream`, the logs of running jobs (on
//! the shared file system) are tailed.
//!
//! A job handed over with [`SlurmJob::adopt`](super::SlurmJob) set is not submitted: it is
//! a dead flux's job, re-attached (see [`adopt`]).
//!
//! Jobs without `slurm` settings (steps that run locally) and jobs with nothing for the
//! cluster to run (built-in copies) go to the [`LocalExecutor`] this one wraps; every
//! result comes back through its `wait`.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use super::local::{prefixed, settle, stat_before};
use super::{Executor, Finished, Job, LocalExecutor, Outcome, SlurmConfig};

pub mod adopt;
mod cmd;
mod query;

pub use adopt::{Orphan, Orphans};
pub use cmd::{COMMAND_TIMEOUT, job_name};
use cmd::{append, exit_file, header, quote, run_within, wrapper};
use query::{Cluster, killed};

/// How long to wait for more jobs after one is handed over, to submit those of one round
/// together.
const GATHER: Duration = Duration::from_millis(20);

/// The longest time between two polling rounds.
pub const MAX_POLL: Duration = Duration::from_secs(30);

/// How long a cancelled job may take to leave `squeue` before it is reported anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(15);

/// How often the logs of running jobs are read with `--stream`.
const TAIL_EVERY: Duration = Duration::from_millis(250);

/// What `sbatch` says of a job that no node can ever run.
const REFUSALS: &[&str] = &[
    "Requested node configuration is not available",
    "Memory specification can not be satisfied",
    "More processors requested than permitted",
    "Invalid partition name specified",
    "Invalid account or account/partition combination specified",
    "Invalid qos specification",
];

enum Msg {
    Submit(Box<Job>),
    Interrupt { hard: bool },
}

/// Runs jobs on Slurm, and the rest through a local executor.
pub struct SlurmExecutor {
    local: LocalExecutor,
    tx: Option<Sender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlurmExecutor {
    /// An executor for run `run_id` of the project whose state folder is `state`; the
    /// wrapper scripts go to `scripts`.
    pub fn new(
        local: LocalExecutor,
        run_id: i64,
        state: &Path,
        scripts: PathBuf,
        config: SlurmConfig,
    ) -> SlurmExecutor {
        let (tx, rx) = channel();
        let mut poller = Poller {
            names: vec![job_name(run_id, state)],
            stage: scripts.parent().map(Path::to_path_buf).unwrap_or_default(),
            scripts,
            config,
            results: local.results(),
            reap: local.reaper(),
            jobs: HashMap::new(),
            interrupted: false,
            serial: 0,
            cluster: None,
        };
        let thread = std::thread::spawn(move || poller.run(rx));
        SlurmExecutor { local, tx: Some(tx), thread: Some(thread) }
    }
}

impl Executor for SlurmExecutor {
    fn start(&self, job: Job) {
        match (&job.slurm, &self.tx) {
            (Some(_), Some(tx)) if !job.commands.is_empty() => {
                let _ = tx.send(Msg::Submit(Box::new(job)));
            }
            _ => self.local.start(job),
        }
    }

    fn wait(&self, timeout: Duration) -> Option<Finished> {
        self.local.wait(timeout)
    }

    fn interrupt_all(&self, hard: bool) {
        self.local.interrupt_all(hard);
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Interrupt { hard });
        }
    }

    fn cancel_queued(&self) {
        self.local.cancel_queued()
    }

    fn take_spawned(&self) -> Vec<crate::procs::Spawned> {
        self.local.take_spawned()
    }

    fn finish(mut self: Box<Self>) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Box::new(self.local).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Timeout,
    Interrupt,
}

/// A job ready to submit: its wrapper script is written.
struct Ready {
    job: Job,
    script: PathBuf,
    before: Vec<Option<crate::target::Meta>>,
}

/// A submitted (or adopted) job.
struct Sub {
    job: Job,
    slurm_id: String,
    /// Where Slurm writes its output: the job's log, or for an adopted job the dead
    /// attempt's log (copied into the job's log when it ends).
    out: PathBuf,
    /// The run that submitted it, if not this one (an adopted job).
    adopted_from: Option<i64>,
    /// `--stream`: what was read of `out`.
    tail: Tail,
    before: Vec<Option<crate::target::Meta>>,
    submitted: Instant,
    /// When `squeue` first showed it running (its timeout counts from here).
    running_since: Option<Instant>,
    killed: Option<(Kill, Instant)>,
    /// When it was first seen ended without an exit file, and Slurm's state then.
    ended: Option<(Instant, Option<String>)>,
    /// The last state Slurm gave.
    state: Option<String>,
}

impl Sub {
    /// A job just submitted (or adopted from a dead run), not yet seen by `squeue`.
    fn new(
        job: Job,
        slurm_id: String,
        out: PathBuf,
        adopted_from: Option<i64>,
        before: Vec<Option<crate::target::Meta>>,
    ) -> Sub {
        Sub {
            job,
            slurm_id,
            out,
            adopted_from,
            tail: Tail::default(),
            before,
            submitted: Instant::now(),
            running_since: None,
            killed: None,
            ended: None,
            state: None,
        }
    }
}

struct Poller {
    /// The job names of this run's jobs (the first) and of the dead runs' jobs it adopted.
    names: Vec<String>,
    /// This run's staging folder.
    stage: PathBuf,
    scripts: PathBuf,
    config: SlurmConfig,
    results: Sender<Finished>,
    reap: Sender<PathBuf>,
    jobs: HashMap<u32, Sub>,
    interrupted: bool,
    serial: u64,
    /// The cluster's settings, once asked.
    cluster: Option<Cluster>,
}

impl Poller {
    fn run(&mut self, rx: Receiver<Msg>) {
        let mut interval = self.config.poll;
        let mut next_poll = Instant::now() + interval;
        let mut open = true;
        while open || !self.jobs.is_empty() {
            let now = Instant::now();
            // `--stream`: wake up often enough to pass the logs' new lines on.
            let streaming = self.jobs.values().any(|s| s.job.echo.is_some());
            let wake = if streaming { next_poll.min(now + TAIL_EVERY) } else { next_poll };
            let msg = if open {
                match rx.recv_timeout(wake.saturating_duration_since(now)) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            } else {
                std::thread::sleep(wake.saturating_duration_since(now));
                None
            };
            match msg {
                Some(Msg::Submit(job)) => {
                    if self.interrupted {
                        self.send(job.id, Outcome::Interrupted, Duration::ZERO, &job.log, Vec::new(), Vec::new());
                    } else {
                        // What the build loop hands over in one round goes together (arrays).
                        let mut jobs = vec![*job];
                        let mut interrupt = None;
                        while let Ok(m) = rx.recv_timeout(GATHER) {
                            match m {
                                Msg::Submit(j) => jobs.push(*j),
                                Msg::Interrupt { hard } => {
                                    interrupt = Some(hard);
                                    break;
                                }
                            }
                        }
                        self.submit_all(jobs);
                        if let Some(hard) = interrupt {
                            self.interrupt(hard);
                        }
                        // Look soon: a short job may end within the first interval.
                        interval = self.config.poll;
                        next_poll = next_poll.min(Instant::now() + interval);
                    }
                }
                Some(Msg::Interrupt { hard }) => {
                    self.interrupt(hard);
                    interval = self.config.poll.min(Duration::from_millis(200));
                    next_poll = Instant::now();
                }
                None => {}
            }
            if streaming {
                for sub in self.jobs.values_mut() {
                    tail(sub, false);
                }
            }
            // Polled when due, however busy the channel is.
            if Instant::now() < next_poll {
                continue;
            }
            let changed = if self.jobs.is_empty() { false } else { self.poll() };
            let waiting = self.jobs.values().any(|s| s.killed.is_some() || s.ended.is_some());
            interval = if changed || waiting {
                self.config.poll.min(if waiting { Duration::from_millis(500) } else { self.config.poll })
            } else {
                (interval.mul_f64(1.5)).min(MAX_POLL.max(self.config.poll))
            };
            next_poll = Instant::now() + interval;
        }
    }

    /// Submit the jobs handed over together: those of one `array = true` step as job
    /// arrays (split at the cluster's `MaxArraySize`), the others one by one. A failed
    /// submission fails its jobs at once.
    fn submit_all(&mut self, jobs: Vec<Job>) {
        let mut singles = Vec::new();
        let mut arrays: Vec<(u32, Vec<Ready>)> = Vec::new();
        for mut job in jobs {
            if let Some(orphan) = job.slurm.as_mut().and_then(|sj| sj.adopt.take()) {
                self.adopt(job, *orphan);
                continue;
            }
            let Some(ready) = self.prepare(job) else { continue };
            match ready.job.slurm.as_ref().and_then(|sj| sj.array) {
                Some(key) => match arrays.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(ready),
                    None => arrays.push((key, vec![ready])),
                },
                None => singles.push(ready),
            }
        }
        for (_, group) in arrays {
            if group.len() == 1 {
                singles.extend(group);
                continue;
            }
            let max = self.max_array_size();
            let mut group = group;
            while !group.is_empty() {
                let rest = group.split_off(group.len().min(max));
                self.submit_array(group);
                group = rest;
            }
        }
        for ready in singles {
            self.submit_one(ready);
        }
    }

    /// Fetch remote inputs, make the log's folder, write the wrapper script: `None` (and
    /// the job failed) if any of that fails.
    fn prepare(&mut self, job: Job) -> Option<Ready> {
        self.serial += 1;
        let script = self.scripts.join(format!("{}-{}.sh", job.id, self.serial));
        let exit = exit_file(&job.log);
        let before = stat_before(&job);
        let prepared = (|| -> Result<(), String> {
            for (target, meta, local) in &job.fetches {
                crate::store::fetch(target, meta, local).map_err(|m| format!("cannot fetch input: {m}"))?;
            }
            if let Some(dir) = job.log.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let _ = std::fs::remove_file(&exit);
            std::fs::create_dir_all(&self.scripts)
                .and_then(|()| std::fs::write(&script, wrapper(&job, &exit)))
                .map_err(|e| format!("cannot write the Slurm wrapper script {}: {e}", script.display()))
        })();
        match prepared {
            Ok(()) => Some(Ready { job, script, before }),
            Err(message) => {
                append(&job.log, &format!("flux: {message}\n"));
                let outcome = Outcome::Failed { exit_code: None, message };
                self.send(job.id, outcome, Duration::ZERO, &job.log, Vec::new(), Vec::new());
                None
            }
        }
    }

    /// `sbatch` with what every job of a step gets: name, folder, resources, settings.
    fn sbatch(&self, job: &Job) -> Command {
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable")
            .arg(format!("--job-name={}", self.names[0]))
            .arg(format!("--chdir={}", job.cwd.display()))
            .arg("--no-requeue");
        if let Some(sj) = job.slurm.as_deref() {
            if sj.cpus > 0 {
                cmd.arg(format!("--cpus-per-task={}", sj.cpus));
            }
            if let Some(m) = sj.mem {
                cmd.arg(format!("--mem={}M", m.div_ceil(1024 * 1024).max(1)));
            }
        }
        if let Some(t) = job.timeout {
            cmd.arg(format!("--time={}", t.as_secs().div_ceil(60).max(1)));
        }
        if let Some(sj) = job.slurm.as_deref() {
            let s = &sj.settings;
            for (flag, v) in [("partition", &s.partition), ("account", &s.account), ("qos", &s.qos)] {
                if let Some(v) = v {
                    cmd.arg(format!("--{flag}={v}"));
                }
            }
            cmd.args(&s.extra);
        }
        cmd
    }

    fn submit_one(&mut self, ready: Ready) {
        let comment = ready.job.slurm.as_ref().map(|sj| sj.comment.clone()).unwrap_or_default();
        let mut cmd = self.sbatch(&ready.job);
        cmd.arg(format!("--comment={comment}")).arg(format!("--output={}", ready.job.log.display())).arg(&ready.script);
        let submitted = match self.slurm(&mut cmd) {
            Ok(out) => Ok(out.split(';').next().unwrap_or("").trim().to_string()),
            // A refusal is final (Slurm keeps a record of the refused job, `FAILED`, that
            // must not pass for a submission).
            Err(e) if REFUSALS.iter().any(|r| e.contains(r)) => Err(e),
            // Submitted after all (a lost answer)? Look it up by name and comment first.
            Err(e) => self.find(&comment).ok_or(e),
        };
        match submitted {
            Ok(id) if !id.is_empty() => self.submitted(ready, id),
            Ok(_) => self.not_submitted(ready, "sbatch printed no job id".into()),
            Err(why) => self.not_submitted(ready, why),
        }
    }

    /// One job array for jobs of one step: a driver script runs element i's wrapper with
    /// its output to its own log; elements are matched by `ArrayTaskId` (`<id>_<i>`).
    fn submit_array(&mut self, group: Vec<Ready>) {
        self.serial += 1;
        let driver = self.scripts.join(format!("array-{}.sh", self.serial));
        let mut text = String::from("#!/bin/sh\ncase \"$SLURM_ARRAY_TASK_ID\" in\n");
        for (i, r) in group.iter().enumerate() {
            let (script, log) = (r.script.to_string_lossy(), r.job.log.to_string_lossy());
            text.push_str(&format!("{i}) exec /bin/sh {} > {} 2>&1 ;;\n", quote(&script), quote(&log)));
        }
        text.push_str("esac\nexit 127\n");
        if let Err(e) = std::fs::write(&driver, text) {
            let why = format!("cannot write the Slurm array script {}: {e}", driver.display());
            for r in group {
                self.not_submitted(r, why.clone());
            }
            return;
        }
        let first = group[0].job.slurm.as_ref().map(|sj| sj.comment.clone()).unwrap_or_default();
        let mut cmd = self.sbatch(&group[0].job);
        cmd.arg(format!("--comment={first} (+{} more)", group.len() - 1))
            .arg(format!("--array=0-{}", group.len() - 1))
            .arg("--output=/dev/null")
            .arg(&driver);
        match self.slurm(&mut cmd).map(|out| out.split(';').next().unwrap_or("").trim().to_string()) {
            Ok(id) if !id.is_empty() => {
                for (i, r) in group.into_iter().enumerate() {
                    self.submitted(r, format!("{id}_{i}"));
                }
            }
            other => {
                let why = other.err().unwrap_or_else(|| "sbatch printed no job id".into());
                for r in group {
                    self.not_submitted(r, why.clone());
                }
            }
        }
    }

    /// The cluster's settings (asked once, when first needed).
    fn cluster(&mut self) -> Cluster {
        let limit = self.config.command_timeout;
        *self.cluster.get_or_insert_with(|| Cluster::ask(limit))
    }

    /// The cluster's `MaxArraySize`: an array has indexes below it.
    fn max_array_size(&mut self) -> usize {
        self.cluster().max_array
    }

    /// Run a Slurm command, killed after `[slurm] command_timeout`.
    fn slurm(&self, cmd: &mut Command) -> Result<String, String> {
        run_within(cmd, self.config.command_timeout)
    }

    /// Re-attach to a dead run's job (see [`adopt`]): poll it as if this run had submitted
    /// it; its outputs are staged in the dead run's staging folder, its output goes to the
    /// dead attempt's log.
    fn adopt(&mut self, mut job: Job, orphan: Orphan) {
        for out in &mut job.outputs {
            if let Some(rel) = out.staged.as_ref().and_then(|p| p.strip_prefix(&self.stage).ok()) {
                out.staged = Some(orphan.stage.join(rel));
            }
        }
        let comment = job.slurm.as_ref().map(|sj| sj.comment.clone()).unwrap_or_default();
        // Should this run die too, the next build finds the job in this run's list.
        adopt::Listed {
            job_id: orphan.job_id.clone(),
            name: orphan.name.clone(),
            stage: orphan.stage.clone(),
            log: orphan.log.clone(),
            comment,
        }
        .note(&self.scripts);
        if !self.names.contains(&orphan.name) {
            self.names.push(orphan.name.clone());
        }
        let before = stat_before(&job);
        let sub = Sub::new(job, orphan.job_id, orphan.log, Some(orphan.run_id), before);
        self.jobs.insert(sub.job.id, sub);
    }

    fn submitted(&mut self, ready: Ready, id: String) {
        // At once, not with the batch: should flux die, the next build adopts or cancels it.
        let Ready { job, before, .. } = ready;
        adopt::Listed {
            job_id: id.clone(),
            name: self.names[0].clone(),
            stage: self.stage.clone(),
            log: job.log.clone(),
            comment: job.slurm.as_ref().map(|sj| sj.comment.clone()).unwrap_or_default(),
        }
        .note(&self.scripts);
        let out = job.log.clone();
        let sub = Sub::new(job, id, out, None, before);
        self.jobs.insert(sub.job.id, sub);
    }

    fn not_submitted(&mut self, ready: Ready, why: String) {
        let job = ready.job;
        // Asking more than any node has fails the same way every time: not retried.
        let (outcome, message) = if REFUSALS.iter().any(|r| why.contains(r)) {
            let message = format!(
                "Slurm refused the job: {why}; no node has what the step asks for (`cpus`, `mem`, \
                 or the `slurm` settings): lower them or pick another partition"
            );
            (Outcome::Refused { message: message.clone() }, message)
        } else {
            let message = format!("sbatch failed: {why}");
            (Outcome::Failed { exit_code: None, message: message.clone() }, message)
        };
        append(&job.log, &format!("flux: {message}\n"));
        self.send(job.id, outcome, Duration::ZERO, &job.log, vec![], vec![]);
    }

    /// The job of this run with `comment`, if Slurm has one.
    fn find(&self, comment: &str) -> Option<String> {
        // `-t all`: a short job may have ended already.
        let out = self
            .slurm(Command::new("squeue").args(["-h", "-t", "all", "--name", &self.names[0], "-o", "%i %k"]))
            .ok()?;
        out.lines().find_map(|l| l.split_once(' ').filter(|(_, c)| *c == comment).map(|(id, _)| id.to_string()))
    }

    fn interrupt(&mut self, hard: bool) {
        self.interrupted = true;
        if self.jobs.is_empty() {
            return;
        }
        let now = Instant::now();
        let names = self.names.join(",");
        if hard {
            let _ = self.slurm(Command::new("scancel").args(["--signal=KILL", "--name", &names]));
            for (_, mut sub) in std::mem::take(&mut self.jobs) {
                sub.killed = Some((Kill::Interrupt, now));
                self.finish_job(sub);
            }
            return;
        }
        let _ = self.slurm(Command::new("scancel").args(["--name", &names]));
        for sub in self.jobs.values_mut() {
            if sub.killed.is_none() {
                sub.killed = Some((Kill::Interrupt, now));
            }
        }
    }

    /// The state of every job in hand: one `sacct` where accounting is set up, else one
    /// `squeue`, for the whole run. A job missing from `sacct` (slurmdbd hears of jobs a
    /// moment late) is looked up with `squeue` in the same round; missing from both, it
    /// ended long ago. `None`: Slurm did not answer (try again next round).
    fn listing(&mut self) -> Option<query::Listing> {
        let limit = self.config.command_timeout;
        if self.cluster().accounting {
            let ids: Vec<&str> = self.jobs.values().map(|s| s.slurm_id.as_str()).collect();
            if let Ok(mut listed) = query::sacct(&ids, limit) {
                if ids.iter().all(|id| listed.contains_key(*id)) {
                    return Some(listed);
                }
                let more = query::squeue(&self.names, limit).ok()?;
                for id in ids {
                    if let (false, Some(st)) = (listed.contains_key(id), more.get(id)) {
                        listed.insert(id.to_string(), st.clone());
                    }
                }
                return Some(listed);
            }
        }
        query::squeue(&self.names, limit).ok()
    }

    /// Ask Slurm about the jobs in hand (one call, see [`Self::listing`]); settle those
    /// that ended. Whether anything changed.
    fn poll(&mut self) -> bool {
        let Some(listed) = self.listing() else { return false };
        let (accounting, limit) = (self.cluster().accounting, self.config.command_timeout);
        let now = Instant::now();
        let mut changed = false;
        let mut done = Vec::new();
        let mut timed_out = Vec::new();
        for (&id, sub) in self.jobs.iter_mut() {
            let state = listed.get(&sub.slurm_id).map(String::as_str);
            if state == Some("RUNNING") && sub.running_since.is_none() {
                sub.running_since = Some(now);
                changed = true;
            }
            if let (Some(t), Some(since), None) = (sub.job.timeout, sub.running_since, sub.killed)
                && now.duration_since(since) >= t
            {
                timed_out.push(sub.slurm_id.clone());
                sub.killed = Some((Kill::Timeout, now));
                changed = true;
            }
            if let Some(s) = state {
                sub.state = Some(s.to_string());
            }
            // Ended: a final state (`squeue -t all` keeps ended jobs `MinJobAge` seconds,
            // accounting for good), or no longer known.
            let gone = state.is_none_or(query::is_final);
            let exit = exit_file(&sub.out);
            if let Some((_, at)) = sub.killed {
                if gone || now.duration_since(at) >= CANCEL_GRACE {
                    done.push(id);
                }
                continue;
            }
            if !gone {
                continue;
            }
            if exit.exists() {
                done.push(id);
                continue;
            }
            // Ended with no exit file: Slurm's state says why, or the file is late.
            if sub.ended.is_none() {
                let st = state.map(str::to_string).or_else(|| query::state_of(&sub.slurm_id, accounting, limit));
                sub.ended = Some((now, st));
                changed = true;
            }
            let (since, st) = sub.ended.as_ref().map(|(a, s)| (*a, s.as_deref())).unwrap_or((now, None));
            if st.and_then(killed).is_some() || now.duration_since(since) >= self.config.latency_wait {
                done.push(id);
            }
        }
        if !timed_out.is_empty() {
            let _ = self.slurm(Command::new("scancel").args(&timed_out));
        }
        for id in done {
            if let Some(sub) = self.jobs.remove(&id) {
                self.finish_job(sub);
                changed = true;
            }
        }
        changed
    }

    /// Read the exit file (or Slurm's state), commit the outputs, send the result.
    fn finish_job(&mut self, sub: Sub) {
        let (accounting, limit) = (self.cluster.is_some_and(|c| c.accounting), self.config.command_timeout);
        let mut sub = sub;
        tail(&mut sub, true);
        let Sub {
            job, slurm_id, out, adopted_from, before, submitted, running_since, killed: kill, ended, state, ..
        } = sub;
        if let Some(run) = adopted_from {
            // The job's log shows what the job printed, as if this run had submitted it.
            let text = std::fs::read(&out).unwrap_or_default();
            let note = format!(
                "flux: Slurm job {slurm_id} was submitted by run {run}, whose flux died; this run adopted it. \
                 Its output ({}):\n",
                out.display()
            );
            append(&job.log, &note);
            append(&job.log, &String::from_utf8_lossy(&text));
        }
        let slurm_killed = state.as_deref().and_then(killed);
        let duration = running_since.unwrap_or(submitted).elapsed();
        let exit = exit_file(&out);
        let code = std::fs::read_to_string(&exit).ok().and_then(|s| s.trim().parse::<i32>().ok());
        // A job flux cancelled counts as cancelled, even if its commands went on to exit 0
        // (a shell whose `sleep` was terminated runs the next command).
        let mut outcome = match (code, kill) {
            (_, Some((Kill::Interrupt, _))) => Outcome::Interrupted,
            (_, Some((Kill::Timeout, _))) => Outcome::TimedOut,
            // Slurm ended it (cancelled from outside, its time limit, out of memory…),
            // whatever the wrapper managed to write.
            (code, None) if slurm_killed.is_some() => {
                let (st, why) = slurm_killed.unwrap_or_default();
                let message = format!("Slurm job {slurm_id} ended {st}: {why}");
                append(&job.log, &format!("flux: {message}\n"));
                Outcome::Failed { exit_code: code.filter(|&c| c != 0), message }
            }
            (Some(0), None) => Outcome::Success,
            // A command killed by a signal, its job ended: Slurm may have sent it; then
            // `scontrol`/`sacct` say so.
            (Some(c), None) if c > 128 => {
                match query::state_of(&slurm_id, accounting, limit).as_deref().and_then(killed) {
                    Some((state, why)) => {
                        let message = format!("Slurm job {slurm_id} ended {state}: {why}");
                        append(&job.log, &format!("flux: {message}\n"));
                        Outcome::Failed { exit_code: Some(c), message }
                    }
                    None => Outcome::Failed { exit_code: Some(c), message: format!("command exited with status {c}") },
                }
            }
            (Some(c), None) => {
                Outcome::Failed { exit_code: Some(c), message: format!("command exited with status {c}") }
            }
            (None, None) => {
                let st = ended.and_then(|(_, s)| s);
                let message = match st.as_deref().and_then(killed) {
                    Some((state, why)) => format!("Slurm job {slurm_id} ended {state}: {why}"),
                    None => format!(
                        "Slurm job {slurm_id} ended{} without writing its exit file {} within latency_wait ({:?}): \
                         the state folder must be on a file system the nodes share",
                        st.map(|s| format!(" ({s})")).unwrap_or_default(),
                        exit.display(),
                        self.config.latency_wait
                    ),
                };
                append(&job.log, &format!("flux: {message}\n"));
                Outcome::Failed { exit_code: None, message }
            }
        };
        if outcome == Outcome::TimedOut {
            let t = job.timeout.unwrap_or_default();
            append(&job.log, &format!("flux: timed out after {t:?}; Slurm job {slurm_id} was cancelled\n"));
        }
        let (outputs, in_place) = settle(&job, &before, &mut outcome, &self.reap);
        let _ = std::fs::remove_file(&exit);
        let logged = job.log.exists();
        let job_id = Some(slurm_id);
        let _ = self.results.send(Finished { id: job.id, outcome, duration, logged, outputs, in_place, job_id });
    }

    fn send(
        &self,
        id: u32,
        outcome: Outcome,
        duration: Duration,
        log: &Path,
        outputs: Vec<crate::target::Meta>,
        in_place: Vec<usize>,
    ) {
        let logged = log.exists();
        let _ = self.results.send(Finished { id, outcome, duration, logged, outputs, in_place, job_id: None });
    }
}

/// `--stream`: how much of a job's log was read, and its unfinished last line.
#[derive(Default)]
struct Tail {
    offset: u64,
    partial: Vec<u8>,
}

/// `--stream`: pass the lines a job's log gained since the last call on to its echo
/// (`last`: also an unfinished last line), without the commands' headers (as for a local
/// job). Slurm writes the log on the shared file system; flux reads it here, on the
/// submitting host.
fn tail(sub: &mut Sub, last: bool) {
    let Some(echo) = &sub.job.echo else { return };
    let Tail { offset, partial } = &mut sub.tail;
    if let Ok(mut f) = std::fs::File::open(&sub.out)
        && f.seek(std::io::SeekFrom::Start(*offset)).is_ok()
    {
        let mut buf = Vec::new();
        if let Ok(n) = f.read_to_end(&mut buf) {
            *offset += n as u64;
            partial.extend_from_slice(&buf);
        }
    }
    let end = if last { partial.len() } else { partial.iter().rposition(|&b| b == b'\n').map_or(0, |e| e + 1) };
    if end == 0 {
        return;
    }
    let mut lines: Vec<u8> = partial.drain(..end).collect();
    if lines.last() != Some(&b'\n') {
        lines.push(b'\n');
    }
    let headers: Vec<String> = (0..sub.job.commands.len()).map(|i| header(&sub.job, i)).collect();
    let text = String::from_utf8_lossy(&lines);
    let kept: String = text
        .split_inclusive('\n')
        .filter(|l| !headers.iter().any(|h| h.split_inclusive('\n').any(|hl| hl == *l)))
        .collect();
    if !kept.is_empty() {
        (echo.sink)(&prefixed(&echo.label, kept.as_bytes()));
    }
}
