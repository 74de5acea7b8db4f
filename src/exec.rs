//! Running jobs on this machine. A [`Job`] is plain data (commands, env, folder, log
//! file, timeout); the executor knows jobs, not tasks or the graph (after n2's task.rs).
//!
//! Each job's commands run one after another with `sh -c`, in their own process group,
//! stdin `/dev/null`, stdout and stderr appended to the job's log file. When they all
//! succeeded, the job's outputs are moved into place from staging and stat'ed on the same
//! worker (through `target`), so that this file-system work runs in parallel and not on
//! the build loop between one task's end and the next one's start. Jobs run on a fixed
//! pool of `-j` worker threads that block in `wait`; the builder's loop receives
//! [`Finished`] on a channel and asks the executor to terminate groups on timeout or
//! interrupt.
//!
//! The builder may hand over more jobs than there are workers: the extra ones wait in the
//! queue and a worker takes the next one the moment its job ends, without waiting for the
//! build loop's bookkeeping. A queued job's timeout starts when a worker takes it; one
//! cancelled or interrupted before that comes back [`Outcome::NotStarted`].

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One thing to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The caller's handle (a task index).
    pub id: u32,
    /// Shell commands, run in order; the first failure stops the job.
    pub commands: Vec<String>,
    /// Remote inputs to download into the cache before anything runs: (target, its
    /// stat, the cache path the commands read).
    pub fetches: Vec<(String, crate::target::Meta, PathBuf)>,
    /// Built-in copies (`action = "copy"`), done before the commands: (from, to), each a
    /// local path or a remote target.
    pub copies: Vec<(End, End)>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub log: PathBuf,
    pub timeout: Option<Duration>,
    /// The job's outputs, checked (and moved into place from staging) after every command
    /// succeeded: done here, on the worker, so that it happens in parallel and off the
    /// build loop.
    pub outputs: Vec<JobOutput>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Timeout,
    Interrupt,
}

struct Running {
    /// A worker has taken the job (it is no longer queued).
    started: bool,
    pgid: Option<i32>,
    deadline: Option<Instant>,
    killed: Option<(Kill, Instant)>,
    hard_killed: bool,
}

/// Runs jobs as local processes.
pub struct LocalExecutor {
    rx: Receiver<Finished>,
    running: Arc<Mutex<HashMap<u32, Running>>>,
    /// Jobs go to a fixed pool of worker threads (creating a thread per job is a visible
    /// share of a tiny task's cost).
    jobs: Sender<Job>,
    /// Old outputs replaced by new ones, deleted by a thread of their own (see
    /// `target::commit_keeping_old`).
    reap: Sender<PathBuf>,
    reaper: std::thread::JoinHandle<()>,
    /// The process groups spawned (see `crate::procs`).
    groups: Arc<crate::procs::Groups>,
}

/// Time between TERM and KILL (SPEC §2.1 `timeout`).
pub const KILL_GRACE: Duration = Duration::from_secs(10);

impl LocalExecutor {
    /// An executor with `workers` threads: at most that many jobs run at once.
    pub fn new(workers: usize) -> LocalExecutor {
        let (tx, rx) = channel();
        let (jobs, job_rx) = channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let running = Arc::new(Mutex::new(HashMap::new()));
        let groups = Arc::new(crate::procs::Groups::default());
        let (reap, reap_rx) = channel::<PathBuf>();
        let reaper = std::thread::spawn(move || {
            for old in reap_rx {
                let _ = std::fs::remove_file(old);
            }
        });
        for _ in 0..workers.max(1) {
            let (job_rx, tx, running, reap) = (job_rx.clone(), tx.clone(), running.clone(), reap.clone());
            let groups = groups.clone();
            // Commands are spawned on this thread and their shell dies with it
            // (PR_SET_PDEATHSIG fires when the spawning thread ends): it returns only
            // between jobs, after its command was reaped.
            std::thread::spawn(move || {
                loop {
                    let next = job_rx.lock().map_err(|_| ()).and_then(|r| r.recv().map_err(|_| ()));
                    let Ok(job) = next else { return };
                    let fin = if take(&job, &running) {
                        run_one(job, &running, &reap, &groups)
                    } else {
                        running.lock().ok().map(|mut m| m.remove(&job.id));
                        Finished {
                            id: job.id,
                            outcome: Outcome::NotStarted,
                            duration: Duration::ZERO,
                            logged: false,
                            outputs: Vec::new(),
                        }
                    };
                    let _ = tx.send(fin);
                }
            });
        }
        LocalExecutor { rx, running, jobs, reap, reaper, groups }
    }

    /// Also append each process group, the moment it is spawned, to `path` (see
    /// `crate::procs`).
    pub fn record_groups_in(&self, path: &std::path::Path) {
        self.groups.write_to(path)
    }

    /// The process groups spawned since the last call, to record on their attempts.
    pub fn take_spawned(&self) -> Vec<crate::procs::Spawned> {
        self.groups.take()
    }

    /// Stop the workers and wait until every replaced output is deleted.
    pub fn finish(self) {
        let LocalExecutor { jobs, reap, reaper, .. } = self;
        drop((jobs, reap));
        let _ = reaper.join();
    }

    /// Hand a job to the workers: a free one starts it at once, else it waits in the queue
    /// for the first worker whose job ends.
    pub fn start(&self, job: Job) {
        if let Ok(mut m) = self.running.lock() {
            m.insert(job.id, Running { started: false, pgid: None, deadline: None, killed: None, hard_killed: false });
        }
        let _ = self.jobs.send(job);
    }

    /// Cancel every job still waiting in the queue: each comes back `NotStarted`.
    pub fn cancel_queued(&self) {
        let now = Instant::now();
        if let Ok(mut m) = self.running.lock() {
            for r in m.values_mut().filter(|r| !r.started && r.killed.is_none()) {
                r.killed = Some((Kill::Interrupt, now));
            }
        }
    }

    /// Wait up to `timeout` for a job to finish; also enforces deadlines.
    pub fn wait(&self, timeout: Duration) -> Option<Finished> {
        self.enforce();
        match self.rx.recv_timeout(timeout) {
            Ok(f) => Some(f),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                self.enforce();
                None
            }
        }
    }

    /// Terminate every running job's process group (TERM now, KILL after the grace time,
    /// or at once when `hard`).
    pub fn interrupt_all(&self, hard: bool) {
        let now = Instant::now();
        if let Ok(mut m) = self.running.lock() {
            for r in m.values_mut() {
                if r.killed.is_none() {
                    r.killed = Some((Kill::Interrupt, now));
                    signal(r.pgid, libc::SIGTERM);
                }
                if hard && !r.hard_killed {
                    r.hard_killed = true;
                    signal(r.pgid, libc::SIGKILL);
                }
            }
        }
    }

    fn enforce(&self) {
        let now = Instant::now();
        if let Ok(mut m) = self.running.lock() {
            for r in m.values_mut() {
                if r.killed.is_none() && r.deadline.is_some_and(|d| now >= d) {
                    r.killed = Some((Kill::Timeout, now));
                    signal(r.pgid, libc::SIGTERM);
                }
                if let Some((_, at)) = r.killed
                    && !r.hard_killed
                    && now.duration_since(at) >= KILL_GRACE
                {
                    r.hard_killed = true;
                    signal(r.pgid, libc::SIGKILL);
                }
            }
        }
    }
}

/// A worker takes a job off the queue: it is started now (its timeout counts from here),
/// unless it was cancelled or interrupted while it waited.
fn take(job: &Job, running: &Mutex<HashMap<u32, Running>>) -> bool {
    let Ok(mut m) = running.lock() else { return true };
    match m.get_mut(&job.id) {
        Some(r) if r.killed.is_some() => false,
        Some(r) => {
            r.started = true;
            r.deadline = job.timeout.map(|t| Instant::now() + t);
            true
        }
        None => true,
    }
}

fn signal(pgid: Option<i32>, sig: i32) {
    if let Some(p) = pgid
        && p > 0
    {
        // SAFETY: kill(2) with a negative pid signals the process group; no memory is touched.
        unsafe {
            libc::kill(-p, sig);
        }
    }
}

/// A job's log, created at the first byte of output: a quiet task costs no file or folder
/// creation (a large share of a tiny task's cost), and a talkative one can be followed
/// (`flux logs --follow`) while it runs.
struct LogSink {
    path: PathBuf,
    file: Option<std::fs::File>,
    failed: bool,
}

impl LogSink {
    fn new(path: PathBuf) -> LogSink {
        LogSink { path, file: None, failed: false }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.file.is_none() && !self.failed {
            let made = self.path.parent().map_or(Ok(()), std::fs::create_dir_all);
            match made.and_then(|_| std::fs::File::create(&self.path)) {
                Ok(f) => self.file = Some(f),
                Err(_) => self.failed = true,
            }
        }
        if let Some(f) = &mut self.file {
            let _ = f.write_all(bytes);
        }
    }

    /// True if a log file exists.
    fn finish(&mut self) -> bool {
        self.file.is_some()
    }
}

/// Run one job to its end on the calling thread.
fn run_one(
    job: Job,
    running: &Arc<Mutex<HashMap<u32, Running>>>,
    reap: &Sender<PathBuf>,
    groups: &crate::procs::Groups,
) -> Finished {
    let started = Instant::now();
    let id = job.id;
    let mut log = LogSink::new(job.log.clone());
    let mut outcome = run_job(&job, running, &mut log, groups);
    let mut outputs = Vec::new();
    if outcome == Outcome::Success {
        match commit_outputs(&job, reap) {
            Ok(metas) => outputs = metas,
            Err(message) => outcome = Outcome::Failed { exit_code: Some(0), message },
        }
    }
    let killed = running.lock().ok().and_then(|mut m| m.remove(&id)).and_then(|r| r.killed);
    if outcome != Outcome::Success {
        match killed {
            Some((Kill::Timeout, _)) => outcome = Outcome::TimedOut,
            Some((Kill::Interrupt, _)) => outcome = Outcome::Interrupted,
            None => {}
        }
    }
    if outcome == Outcome::TimedOut {
        let msg =
            format!("flux: timed out after {:?}; the process group was terminated\n", job.timeout.unwrap_or_default());
        log.write(msg.as_bytes());
    }
    let logged = log.finish();
    Finished { id, outcome, duration: started.elapsed(), logged, outputs }
}

/// Move staged outputs into place and stat them; a missing output fails the job
/// (a command that "succeeded" without writing what it promised).
fn commit_outputs(job: &Job, reap: &Sender<PathBuf>) -> Result<Vec<crate::target::Meta>, String> {
    let mut metas = Vec::with_capacity(job.outputs.len());
    for o in &job.outputs {
        if let Some(target) = &o.remote {
            let meta = match &o.staged {
                Some(staged) => {
                    if !staged.exists() {
                        return Err(format!("the command succeeded but did not write output `{}`", o.name));
                    }
                    let m = crate::store::upload(staged, target).map_err(|e| format!("cannot upload output: {e}"))?;
                    let _ = crate::target::remove(staged);
                    m
                }
                None => match crate::store::stat(target) {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(format!("the command succeeded but output `{}` does not exist", o.name)),
                    Err(e) => return Err(format!("cannot check output: {e}")),
                },
            };
            metas.push(meta);
            continue;
        }
        if let Some(staged) = &o.staged {
            // A missing staged file shows as NotFound from the rename: no extra stat.
            let old = crate::target::commit_keeping_old(staged, &o.path, o.dir).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("the command succeeded but did not write output `{}`", o.name),
                _ => format!("cannot move output `{}` into place: {e}", o.name),
            })?;
            if let Some(old) = old {
                let _ = reap.send(old);
            }
        }
        match crate::target::stat(&o.path) {
            Some(m) => metas.push(m),
            None => return Err(format!("the command succeeded but output `{}` does not exist", o.name)),
        }
    }
    Ok(metas)
}

fn run_job(
    job: &Job,
    running: &Arc<Mutex<HashMap<u32, Running>>>,
    log: &mut LogSink,
    groups: &crate::procs::Groups,
) -> Outcome {
    for (target, meta, local) in &job.fetches {
        if let Err(message) = crate::store::fetch(target, meta, local) {
            let message = format!("cannot fetch input: {message}");
            log.write(format!("flux: {message}\n").as_bytes());
            return Outcome::Failed { exit_code: None, message };
        }
    }
    for (from, to) in &job.copies {
        // Streams: a local copy uses copy_file_range, a remote one moves a part at a time.
        if let Err(message) = crate::store::copy(&from.loc(), &to.loc()) {
            log.write(format!("flux: {message}\n").as_bytes());
            return Outcome::Failed { exit_code: None, message };
        }
    }
    for cmd in &job.commands {
        // Stop before starting the next command if the job was killed meanwhile.
        if running.lock().ok().and_then(|m| m.get(&job.id).map(|r| r.killed.is_some())).unwrap_or(false) {
            return Outcome::Interrupted;
        }
        let (reader, writer) = match std::io::pipe() {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Failed { exit_code: None, message: format!("cannot make a pipe: {e}") };
            }
        };
        let writer2 = match writer.try_clone() {
            Ok(w) => w,
            Err(e) => {
                return Outcome::Failed { exit_code: None, message: format!("cannot make a pipe: {e}") };
            }
        };
        // Its own process group, stdin /dev/null, dying with flux (see `procs`).
        let spawned = crate::procs::spawn_shell(cmd, &job.cwd, &job.env, &writer, &writer2);
        drop((writer, writer2)); // closes our copies of the pipe's write end
        let mut child = match spawned {
            Ok(ch) => ch,
            Err(e) => {
                return Outcome::Failed { exit_code: None, message: format!("cannot start /bin/sh: {e}") };
            }
        };
        let pid = child.id() as i32;
        groups.spawned(job.id, pid);
        if let Ok(mut m) = running.lock()
            && let Some(r) = m.get_mut(&job.id)
        {
            r.pgid = Some(pid);
            if r.killed.is_some() {
                signal(Some(pid), libc::SIGTERM);
            }
        }
        let pumped = pump(reader, &mut child, log);
        groups.reaped(pid);
        let status = match pumped {
            Ok(s) => s,
            Err(e) => {
                return Outcome::Failed { exit_code: None, message: format!("waiting for the command: {e}") };
            }
        };
        if !status.success() {
            let message = match (status.code(), status.signal()) {
                (Some(c), _) => format!("command exited with status {c}"),
                (None, Some(s)) => format!("command killed by signal {s}"),
                _ => "command failed".into(),
            };
            return Outcome::Failed { exit_code: status.code(), message };
        }
    }
    Outcome::Success
}

/// Copy the command's output into the log until the pipe closes, then reap the child. If
/// the command has exited but something it started in the background keeps the pipe open,
/// stop reading once nothing arrives for a moment rather than waiting for it.
fn pump(
    reader: std::io::PipeReader,
    child: &mut crate::procs::Proc,
    log: &mut LogSink,
) -> std::io::Result<std::process::ExitStatus> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let fd = reader.as_raw_fd();
    let mut reader = reader;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ready > 0 {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => log.write(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        } else if ready == 0 {
            if let Some(status) = child.try_wait()? {
                // Exited; drain what is already there without blocking on background holders.
                // SAFETY: fcntl on a valid fd owned by `reader`.
                unsafe {
                    let flags = libc::fcntl(fd, libc::F_GETFL);
                    libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
                }
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.write(&buf[..n]);
                }
                return Ok(status);
            }
        } else {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    child.wait()
}
