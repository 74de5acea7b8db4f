//! Running jobs on a Slurm cluster (SPEC §6). Each job is one `sbatch --parsable` job
//! named `flux-<run-id>`, commented `<task-id>#<attempt>`, running a wrapper script that
//! flux writes into the run's staging folder: it runs the commands (with the job's env,
//! in the Fluxfile's folder, output to the attempt's log) and writes the exit code to a
//! file next to the log, atomically (a temporary file, then `mv`). The graph stays in
//! flux: a job is submitted when the build loop hands it over.
//!
//! One thread submits and polls: one `squeue --name flux-<run-id>` per round for the whole
//! run, every `[slurm] poll` while something changes, backing off to [`MAX_POLL`]. A job
//! gone from `squeue` has ended: its exit code comes from the exit file (waited for up to
//! `[slurm] latency_wait`, for a shared file system's lag); with no exit file, Slurm's
//! state (`scontrol show job`, else `sacct`) says why (`CANCELLED`, `TIMEOUT`,
//! `NODE_FAIL`, `OUT_OF_MEMORY`, `PREEMPTED`…). Outputs are moved into place from staging
//! here, on the submitting host, once the exit file is read (the local executor's code).
//! Ctrl-C cancels every job of the run with one `scancel --name`; a step's `timeout` is
//! enforced by flux too (Slurm's `--time` counts whole minutes): the job is cancelled.
//!
//! Jobs without `slurm` settings (steps that run locally) and jobs with nothing for the
//! cluster to run (built-in copies) go to the [`LocalExecutor`] this one wraps; every
//! result comes back through its `wait`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use super::local::{settle, stat_before};
use super::{Executor, Finished, Job, LocalExecutor, Outcome, SlurmConfig};

/// How long to wait for more jobs after one is handed over, to submit those of one round
/// together.
const GATHER: Duration = Duration::from_millis(20);

/// The longest time between two `squeue` calls.
pub const MAX_POLL: Duration = Duration::from_secs(30);

/// How long a cancelled job may take to leave `squeue` before it is reported anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(15);

/// Slurm states in which the wrapper cannot have written an exit code, and what they mean.
const KILLED_STATES: &[(&str, &str)] = &[
    ("CANCELLED", "the job was cancelled"),
    ("TIMEOUT", "the job reached its time limit (--time)"),
    ("NODE_FAIL", "the node running the job failed"),
    ("OUT_OF_MEMORY", "the job ran out of memory (--mem)"),
    ("PREEMPTED", "the job was preempted"),
    ("BOOT_FAIL", "the node could not boot for the job"),
    ("DEADLINE", "the job reached its deadline"),
];

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
            name: job_name(run_id, state),
            scripts,
            config,
            results: local.results(),
            reap: local.reaper(),
            jobs: HashMap::new(),
            interrupted: false,
            serial: 0,
            max_array: None,
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

/// A submitted job.
struct Sub {
    job: Job,
    slurm_id: String,
    before: Vec<Option<crate::target::Meta>>,
    submitted: Instant,
    /// When `squeue` first showed it running (its timeout counts from here).
    running_since: Option<Instant>,
    killed: Option<(Kill, Instant)>,
    /// When it was first seen ended without an exit file, and Slurm's state then.
    ended: Option<(Instant, Option<String>)>,
    /// The last state `squeue` gave.
    state: Option<String>,
}

struct Poller {
    name: String,
    scripts: PathBuf,
    config: SlurmConfig,
    results: Sender<Finished>,
    reap: Sender<PathBuf>,
    jobs: HashMap<u32, Sub>,
    interrupted: bool,
    serial: u64,
    /// The cluster's `MaxArraySize`, once asked.
    max_array: Option<usize>,
}

impl Poller {
    fn run(&mut self, rx: Receiver<Msg>) {
        let mut interval = self.config.poll;
        let mut next_poll = Instant::now() + interval;
        let mut open = true;
        while open || !self.jobs.is_empty() {
            let now = Instant::now();
            let msg = if open {
                match rx.recv_timeout(next_poll.saturating_duration_since(now)) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            } else {
                std::thread::sleep(next_poll.saturating_duration_since(now));
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
        for job in jobs {
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
            .arg(format!("--job-name={}", self.name))
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
        let submitted = match run(&mut cmd) {
            Ok(out) => Ok(out.split(';').next().unwrap_or("").trim().to_string()),
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
        match run(&mut cmd).map(|out| out.split(';').next().unwrap_or("").trim().to_string()) {
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

    /// The cluster's `MaxArraySize` (asked once): an array has indexes below it.
    fn max_array_size(&mut self) -> usize {
        *self.max_array.get_or_insert_with(|| {
            run(Command::new("scontrol").args(["show", "config"]))
                .ok()
                .and_then(|out| {
                    out.lines().find_map(|l| {
                        let (k, v) = l.split_once('=')?;
                        (k.trim() == "MaxArraySize").then(|| v.trim().parse::<usize>().ok()).flatten()
                    })
                })
                .unwrap_or(1001)
                .max(1)
        })
    }

    fn submitted(&mut self, ready: Ready, id: String) {
        // At once, not with the batch: should flux die, the next build cancels it.
        append(&self.scripts.join(JOBS_FILE), &format!("{id}\n"));
        let Ready { job, before, .. } = ready;
        let sub = Sub {
            job,
            slurm_id: id,
            before,
            submitted: Instant::now(),
            running_since: None,
            killed: None,
            ended: None,
            state: None,
        };
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
        let out = run(Command::new("squeue").args(["-h", "--name", &self.name, "-o", "%i %k"])).ok()?;
        out.lines().find_map(|l| l.split_once(' ').filter(|(_, c)| *c == comment).map(|(id, _)| id.to_string()))
    }

    fn interrupt(&mut self, hard: bool) {
        self.interrupted = true;
        if self.jobs.is_empty() {
            return;
        }
        let now = Instant::now();
        if hard {
            let _ = run(Command::new("scancel").args(["--signal=KILL", "--name", &self.name]));
            for (_, mut sub) in std::mem::take(&mut self.jobs) {
                sub.killed = Some((Kill::Interrupt, now));
                self.finish_job(sub);
            }
            return;
        }
        let _ = run(Command::new("scancel").args(["--name", &self.name]));
        for sub in self.jobs.values_mut() {
            if sub.killed.is_none() {
                sub.killed = Some((Kill::Interrupt, now));
            }
        }
    }

    /// One `squeue` for the whole run; settle the jobs that ended. Whether anything changed.
    fn poll(&mut self) -> bool {
        let listed =
            match run(Command::new("squeue").args(["-h", "-r", "-t", "all", "--name", &self.name, "-o", "%i %T"])) {
                Ok(out) => out
                    .lines()
                    .filter_map(|l| l.split_once(' ').map(|(i, s)| (i.to_string(), s.trim().to_string())))
                    .collect::<HashMap<_, _>>(),
                // squeue failed (the controller is busy or gone): try again next round.
                Err(_) => return false,
            };
        let now = Instant::now();
        let mut changed = false;
        let mut done = Vec::new();
        for (&id, sub) in self.jobs.iter_mut() {
            let state = listed.get(&sub.slurm_id).map(String::as_str);
            if state == Some("RUNNING") && sub.running_since.is_none() {
                sub.running_since = Some(now);
                changed = true;
            }
            if let (Some(t), Some(since), None) = (sub.job.timeout, sub.running_since, sub.killed)
                && now.duration_since(since) >= t
            {
                let _ = run(Command::new("scancel").arg(&sub.slurm_id));
                sub.killed = Some((Kill::Timeout, now));
                changed = true;
            }
            if let Some(s) = state {
                sub.state = Some(s.to_string());
            }
            // Ended: a final state (`squeue -t all` keeps ended jobs `MinJobAge` seconds),
            // or no longer known. (`COMPLETING` is not final: a job cancelled by Slurm
            // passes through it, and its wrapper may still write an exit code.)
            let gone = match state {
                None => true,
                Some(s) => KILLED_STATES.iter().any(|(k, _)| *k == s) || s == "COMPLETED" || s == "FAILED",
            };
            let exit = exit_file(&sub.job.log);
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
                let st = state.map(str::to_string).or_else(|| slurm_state(&sub.slurm_id));
                sub.ended = Some((now, st));
                changed = true;
            }
            let (since, st) = sub.ended.as_ref().map(|(a, s)| (*a, s.as_deref())).unwrap_or((now, None));
            if st.is_some_and(|s| KILLED_STATES.iter().any(|(k, _)| *k == s))
                || now.duration_since(since) >= self.config.latency_wait
            {
                done.push(id);
            }
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
    fn finish_job(&self, sub: Sub) {
        let Sub { job, slurm_id, before, submitted, running_since, killed, ended, state } = sub;
        let slurm_killed = state.as_deref().and_then(|s| KILLED_STATES.iter().find(|(k, _)| *k == s));
        let duration = running_since.unwrap_or(submitted).elapsed();
        let exit = exit_file(&job.log);
        let code = std::fs::read_to_string(&exit).ok().and_then(|s| s.trim().parse::<i32>().ok());
        // A job flux cancelled counts as cancelled, even if its commands went on to exit 0
        // (a shell whose `sleep` was terminated runs the next command).
        let mut outcome = match (code, killed) {
            (_, Some((Kill::Interrupt, _))) => Outcome::Interrupted,
            (_, Some((Kill::Timeout, _))) => Outcome::TimedOut,
            // Slurm ended it (cancelled from outside, its time limit, out of memory…),
            // whatever the wrapper managed to write.
            (code, None) if slurm_killed.is_some() => {
                let (st, why) = slurm_killed.copied().unwrap_or_default();
                let message = format!("Slurm job {slurm_id} ended {st}: {why}");
                append(&job.log, &format!("flux: {message}\n"));
                Outcome::Failed { exit_code: code.filter(|&c| c != 0), message }
            }
            (Some(0), None) => Outcome::Success,
            // A command killed by a signal, its job gone from squeue: Slurm may have sent
            // it; then `scontrol`/`sacct` say so.
            (Some(c), None) if c > 128 => {
                let st = slurm_state(&slurm_id);
                match st.as_deref().and_then(|s| KILLED_STATES.iter().find(|(k, _)| *k == s)) {
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
                let message = match st.as_deref().and_then(|s| KILLED_STATES.iter().find(|(k, _)| *k == s)) {
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

/// The file, in a run's `slurm` folder, that lists the job ids submitted (one a line).
const JOBS_FILE: &str = "jobs";

/// Cancel the jobs a dead run submitted (listed in its staging folder `stage`), as its
/// orphaned processes are killed: the next build runs those tasks again. How many ids
/// were listed.
pub fn cancel_dead_run(stage: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(stage.join("slurm").join(JOBS_FILE)) else { return 0 };
    let ids: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if !ids.is_empty() {
        // Jobs that ended already make scancel complain; the others are cancelled.
        let _ = run(Command::new("scancel").args(&ids));
    }
    ids.len()
}

/// The Slurm job name of a run's jobs: `flux-<run-id>-<project>`, where `<project>` is 8
/// hex digits of the state folder's path, so that runs of two projects with the same run
/// id never share a name (`scancel --name` of one would cancel the other's jobs).
pub fn job_name(run_id: i64, state: &Path) -> String {
    let h = blake3::hash(state.as_os_str().as_encoded_bytes()).to_hex();
    format!("flux-{run_id}-{}", &h[..8])
}

/// The exit file of a job: next to its log.
fn exit_file(log: &Path) -> PathBuf {
    log.with_extension("exit")
}

/// Slurm's state of a job that left `squeue`: `scontrol` (kept `MinJobAge` after the end),
/// else `sacct` (if accounting is set up). `None` when neither knows.
fn slurm_state(id: &str) -> Option<String> {
    if let Ok(out) = run(Command::new("scontrol").args(["show", "job", "-o", id])) {
        let st = out.split_whitespace().find_map(|w| w.strip_prefix("JobState="));
        if let Some(st) = st {
            return Some(st.to_string());
        }
    }
    let out = run(Command::new("sacct").args(["-n", "-X", "-P", "-o", "State", "-j", id])).ok()?;
    // `CANCELLED by 0`: the state is the first word.
    out.lines().next().and_then(|l| l.split_whitespace().next()).map(str::to_string)
}

/// How long a Slurm command may take before it is killed and counted as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Run a Slurm command: its stdout, or what went wrong (also when it takes longer than
/// [`COMMAND_TIMEOUT`]: a busy controller must not hang the build).
fn run(cmd: &mut Command) -> Result<String, String> {
    use std::io::Read;
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{name}`: {e} (is Slurm installed here, and on the PATH?)"))?;
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = reader(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{name}` did not answer within {}s", COMMAND_TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for `{name}`: {e}")),
        }
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if status.success() {
        Ok(String::from_utf8_lossy(&out).into_owned())
    } else {
        Err(format!("`{name}` failed ({status}): {}", String::from_utf8_lossy(&err).trim()))
    }
}

fn append(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The wrapper script: each command's header (as the local executor's log shows it) and
/// the command through `sh -c` with the job's env, stopping at the first failure; the
/// exit code goes to `exit` through a temporary file and a rename.
fn wrapper(job: &Job, exit: &Path) -> String {
    let mut s = String::from("#!/bin/sh\n");
    if let Some(sj) = &job.slurm {
        s.push_str(&format!("# flux: {}\n", sj.comment.replace('\n', " ")));
    }
    let exit = exit.to_string_lossy();
    s.push_str(&format!(
        "flux_exit() {{ printf '%s\\n' \"$1\" > {tmp} && mv -f {tmp} {exit}; exit \"$1\"; }}\n",
        tmp = quote(&format!("{exit}.tmp")),
        exit = quote(&exit)
    ));
    // Through `env`, not `export`: any name the step's `env` allows is passed as is.
    let mut env = String::from("env --");
    for (k, v) in &job.env {
        env.push(' ');
        env.push_str(&quote(&format!("{k}={v}")));
    }
    for (i, cmd) in job.commands.iter().enumerate() {
        let header = job.headers.as_ref().and_then(|h| h.get(i)).map_or(cmd.as_str(), String::as_str);
        let mut h = String::new();
        for (n, line) in header.lines().enumerate() {
            h.push_str(if n == 0 { "$ " } else { "> " });
            h.push_str(line);
            h.push('\n');
        }
        if h.is_empty() {
            h.push_str("$ \n");
        }
        s.push_str(&format!("printf '%s' {}\n", quote(&h)));
        s.push_str(&format!("{env} /bin/sh -c {} </dev/null || flux_exit $?\n", quote(cmd)));
    }
    s.push_str("flux_exit 0\n");
    s
}
