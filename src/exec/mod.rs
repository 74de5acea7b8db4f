//! Running jobs. A [`Job`] is plain data (commands, env, folder, log file, timeout); an
//! [`Executor`] knows jobs, not tasks or the graph (after n2's task.rs and ninja's
//! `CommandRunner`). The build loop hands jobs over, waits for [`Finished`] ones, and
//! interrupts or cancels them through the trait; `cli` picks the implementation.
//!
//! - [`local`]: processes on this machine.
//! - [`slurm`]: `sbatch` jobs on a Slurm cluster (and local jobs through a local one).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod local;
pub mod slurm;

pub use local::{KILL_GRACE, LocalExecutor};
pub use slurm::SlurmExecutor;

/// Runs jobs. Every job handed over with `start` comes back once from `wait`, whatever
/// happens to it.
pub trait Executor {
    /// Hand a job over: it starts at once if there is room, else it waits in the
    /// executor's queue until a running job ends.
    fn start(&self, job: Job);
    /// Wait up to `timeout` for a job to finish; also enforces timeouts.
    fn wait(&self, timeout: Duration) -> Option<Finished>;
    /// Terminate every running job (and `hard`: at once, not after a grace time).
    fn interrupt_all(&self, hard: bool);
    /// Cancel every job still waiting in the queue: each comes back `NotStarted`.
    fn cancel_queued(&self);
    /// The process groups spawned since the last call, to record on their attempts.
    fn take_spawned(&self) -> Vec<crate::procs::Spawned>;
    /// Stop, once every job came back, and wait for the executor's own clean-up.
    fn finish(self: Box<Self>);
}

/// What an executor is made for: one run.
#[derive(Debug, Clone)]
pub struct Setup {
    /// `-j`: how many jobs run at once.
    pub jobs: usize,
    pub run_id: i64,
    /// The run's staging folder (see `builder::stage_dir`).
    pub stage_root: PathBuf,
}

/// Where a step's tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    Slurm,
}

/// A step's Slurm settings: `[slurm]` with the step's `slurm` table over it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmSettings {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// More `sbatch` options, as written.
    pub extra: Vec<String>,
}

/// `[slurm]`: how the Slurm executor polls and waits.
#[derive(Debug, Clone)]
pub struct SlurmConfig {
    /// The shortest time between two `squeue` calls (backing off to [`slurm::MAX_POLL`]).
    pub poll: Duration,
    /// How long to wait for a job's exit file once Slurm says it ended.
    pub latency_wait: Duration,
    /// How long a Slurm command (`sbatch`, `squeue`, …) may take before flux gives up on
    /// it (a submission is then looked up by its comment before it counts as failed).
    pub command_timeout: Duration,
    pub defaults: Arc<SlurmSettings>,
}

impl Default for SlurmConfig {
    fn default() -> SlurmConfig {
        SlurmConfig {
            poll: Duration::from_secs(1),
            latency_wait: Duration::from_secs(60),
            command_timeout: slurm::COMMAND_TIMEOUT,
            defaults: Arc::new(SlurmSettings::default()),
        }
    }
}

/// A job that runs on Slurm rather than here.
#[derive(Debug, Clone)]
pub struct SlurmJob {
    /// `--comment`: the task id and attempt.
    pub comment: String,
    /// `--cpus-per-task`, `--mem` (bytes); 0 / `None`: not asked for.
    pub cpus: u32,
    pub mem: Option<u64>,
    pub settings: Arc<SlurmSettings>,
    /// `array = true`: jobs with the same key handed over together go as one job array.
    pub array: Option<u32>,
    /// A dead flux's job that ran this very attempt's work: polled instead of submitting
    /// a new one (see [`slurm::adopt`]).
    pub adopt: Option<Box<slurm::Orphan>>,
}

/// Makes the executor of a run (chosen by `cli`).
pub type MakeExecutor<'a> = dyn Fn(&Setup) -> Box<dyn Executor> + 'a;

/// One thing to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The caller's handle (a task index).
    pub id: u32,
    /// Shell commands, run in order; the first failure stops the job.
    pub commands: Vec<String>,
    /// What the log's header shows for each command, when it differs from the command
    /// (secrets masked); `None`: the commands themselves.
    pub headers: Option<Vec<String>>,
    /// Remote inputs to download into the cache before anything runs: (target, its
    /// stat, the cache path the commands read).
    pub fetches: Vec<(String, crate::target::Meta, PathBuf)>,
    /// Leases on the cache entries of `fetches`, held as long as the job is (see
    /// [`crate::cache`]): no eviction deletes what the job reads.
    pub leases: Vec<crate::cache::Lease>,
    /// Built-in copies (`action = "copy"`), done before the commands: (from, to), each a
    /// local path or a remote target.
    pub copies: Vec<(End, End)>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub log: PathBuf,
    pub timeout: Option<Duration>,
    /// `--stream`: also send each whole line of output here.
    pub echo: Option<Echo>,
    /// The job's outputs, checked (and moved into place from staging) after every command
    /// succeeded: done here, on the worker, so that it happens in parallel and off the
    /// build loop.
    pub outputs: Vec<JobOutput>,
    /// Run on Slurm (see [`slurm`]); `None`: on this machine.
    pub slurm: Option<Box<SlurmJob>>,
}

/// Where streamed output goes: `sink` receives whole lines only (each ending in a
/// newline), each after `label`, and prints them at once, so that lines of jobs running
/// side by side never mix.
#[derive(Clone)]
pub struct Echo {
    pub label: String,
    pub sink: Arc<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Echo").field("label", &self.label).finish_non_exhaustive()
    }
}

/// One end of a copy.
#[derive(Debug, Clone)]
pub enum End {
    Local(PathBuf),
    Remote(String),
}

impl End {
    fn loc(&self) -> crate::store::Loc<'_> {
        match self {
            End::Local(p) => crate::store::Loc::Local(p),
            End::Remote(t) => crate::store::Loc::Remote(t),
        }
    }
}

/// One output of a job.
#[derive(Debug, Clone)]
pub struct JobOutput {
    /// Where the commands wrote it, if not in place (staging).
    pub staged: Option<PathBuf>,
    pub path: PathBuf,
    pub dir: bool,
    /// The target as the user wrote it, for messages.
    pub name: String,
    /// A remote target: uploaded from `staged` (or, with no staging, written by the
    /// commands themselves); `path` is unused.
    pub remote: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A command exited non-zero or died of a signal.
    Failed {
        exit_code: Option<i32>,
        message: String,
    },
    /// Killed after its timeout.
    TimedOut,
    /// Killed because flux was interrupted.
    Interrupted,
    /// Cancelled while it waited in the queue: nothing ran.
    NotStarted,
    /// The executor cannot run the job as asked (a Slurm job asking more than any node
    /// has): nothing ran, and a retry would fail the same way.
    Refused {
        message: String,
    },
}

/// A job's result.
#[derive(Debug)]
pub struct Finished {
    pub id: u32,
    pub outcome: Outcome,
    pub duration: Duration,
    /// Whether the log file was written (it is only created when there is output).
    pub logged: bool,
    /// After a success: each output's stat, in place.
    pub outputs: Vec<crate::target::Meta>,
    /// Staged outputs that the commands wrote at their final path instead (by index):
    /// accepted as if the step had `stage = false`.
    pub in_place: Vec<usize>,
    /// The job's id on a cluster (Slurm's job id), for the attempt's record.
    pub job_id: Option<String>,
}
