//! Running jobs on this machine, as processes.
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

use super::{Echo, End, Executor, Finished, Job, JobOutput, Outcome};

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
    /// Where results go (the workers have clones; so may another executor, see `results`).
    tx: Sender<Finished>,
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
                            in_place: Vec::new(),
                            job_id: None,
                        }
                    };
                    let _ = tx.send(fin);
                }
            });
        }
        LocalExecutor { rx, tx, running, jobs, reap, reaper, groups }
    }

    /// A sender of results that `wait` receives: another executor's jobs come back
    /// through this one's `wait` too.
    pub(super) fn results(&self) -> Sender<Finished> {
        self.tx.clone()
    }

    /// What deletes replaced outputs (see `settle`).
    pub(super) fn reaper(&self) -> Sender<PathBuf> {
        self.reap.clone()
    }

    /// Also append each process group, the moment it is spawned, to `path` (see
    /// `crate::procs`).
    pub fn record_groups_in(&self, path: &std::path::Path) {
        self.groups.write_to(path)
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

impl Executor for LocalExecutor {
    /// The process groups spawned since the last call, to record on their attempts.
    fn take_spawned(&self) -> Vec<crate::procs::Spawned> {
        self.groups.take()
    }

    /// Stop the workers and wait until every replaced output is deleted.
    fn finish(self: Box<Self>) {
        let LocalExecutor { jobs, reap, reaper, .. } = *self;
        drop((jobs, reap));
        let _ = reaper.join();
    }

    /// Hand a job to the workers: a free one starts it at once, else it waits in the queue
    /// for the first worker whose job ends.
    fn start(&self, job: Job) {
        if let Ok(mut m) = self.running.lock() {
            m.insert(job.id, Running { started: false, pgid: None, deadline: None, killed: None, hard_killed: false });
        }
        let _ = self.jobs.send(job);
    }

    /// Cancel every job still waiting in the queue: each comes back `NotStarted`.
    fn cancel_queued(&self) {
        let now = Instant::now();
        if let Ok(mut m) = self.running.lock() {
            for r in m.values_mut().filter(|r| !r.started && r.killed.is_none()) {
                r.killed = Some((Kill::Interrupt, now));
            }
        }
    }

    /// Wait up to `timeout` for a job to finish; also enforces deadlines.
    fn wait(&self, timeout: Duration) -> Option<Finished> {
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
    fn interrupt_all(&self, hard: bool) {
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
/// (`flux logs --follow`) while it runs. Each command is announced by a header (`$ ` and
/// the command, `> ` before its further lines) that waits for the file: it is written
/// before the first output, or when the job fails.
struct LogSink {
    path: PathBuf,
    file: Option<std::fs::File>,
    failed: bool,
    /// Headers of commands that have printed nothing yet.
    header: Vec<u8>,
    /// `--stream`: where lines go, and the unfinished last line.
    echo: Option<(Echo, Vec<u8>)>,
}

impl LogSink {
    fn new(path: PathBuf, echo: Option<Echo>) -> LogSink {
        LogSink { path, file: None, failed: false, header: Vec::new(), echo: echo.map(|e| (e, Vec::new())) }
    }

    /// The header of a command about to run.
    fn announce(&mut self, cmd: &str) {
        let mut h = Vec::with_capacity(cmd.len() + 4);
        for (i, line) in cmd.lines().enumerate() {
            h.extend_from_slice(if i == 0 { b"$ " } else { b"> " });
            h.extend_from_slice(line.as_bytes());
            h.push(b'\n');
        }
        if h.is_empty() {
            h.extend_from_slice(b"$ \n");
        }
        match &mut self.file {
            Some(f) => {
                let _ = f.write_all(&h);
            }
            None => self.header.extend_from_slice(&h),
        }
    }

    fn open(&mut self) {
        if self.file.is_none() && !self.failed {
            let made = self.path.parent().map_or(Ok(()), std::fs::create_dir_all);
            match made.and_then(|_| std::fs::File::create(&self.path)) {
                Ok(mut f) => {
                    let _ = f.write_all(&std::mem::take(&mut self.header));
                    self.file = Some(f);
                }
                Err(_) => self.failed = true,
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.open();
        if let Some(f) = &mut self.file {
            let _ = f.write_all(bytes);
        }
        if let Some((echo, partial)) = &mut self.echo {
            partial.extend_from_slice(bytes);
            if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
                let rest = partial.split_off(end + 1);
                (echo.sink)(&prefixed(&echo.label, partial));
                *partial = rest;
            } else if partial.len() > 64 * 1024 {
                // A very long line (or \r-drawn progress) goes out in pieces of its own.
                partial.push(b'\n');
                (echo.sink)(&prefixed(&echo.label, partial));
                partial.clear();
            }
        }
    }

    /// True if a log file exists. A failed job always has one, if only with the headers
    /// of its commands.
    fn finish(&mut self, failed: bool) -> bool {
        if failed && self.file.is_none() && !self.header.is_empty() {
            self.open();
        }
        // A log lists every command that ran, also those after the last output.
        if let Some(f) = &mut self.file
            && !self.header.is_empty()
        {
            let _ = f.write_all(&std::mem::take(&mut self.header));
        }
        if let Some((echo, partial)) = &mut self.echo
            && !partial.is_empty()
        {
            partial.push(b'\n');
            (echo.sink)(&prefixed(&echo.label, partial));
            partial.clear();
        }
        self.file.is_some()
    }
}

/// Whole lines, each prefixed with `label`.
pub(super) fn prefixed(label: &str, lines: &[u8]) -> String {
    let text = String::from_utf8_lossy(lines);
    let mut out = String::with_capacity(text.len() + 8 * label.len());
    for line in text.split_inclusive('\n') {
        out.push_str(label);
        out.push_str(line);
    }
    out
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
    let mut log = LogSink::new(job.log.clone(), job.echo.clone());
    // Each local staged output's final path before the commands run: a command that writes
    // there itself instead of to the staged path changes it.
    let before = stat_before(&job);
    let mut outcome = run_job(&job, running, &mut log, groups);
    let (outputs, in_place) = settle(&job, &before, &mut outcome, reap);
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
    let logged = log.finish(outcome != Outcome::Success);
    Finished { id, outcome, duration: started.elapsed(), logged, outputs, in_place, job_id: None }
}

/// Each local staged output's stat at its final path before the commands run: a command
/// that writes there itself instead of to the staged path changes it.
pub(super) fn stat_before(job: &Job) -> Vec<Option<crate::target::Meta>> {
    job.outputs
        .iter()
        .map(|o| if o.staged.is_some() && o.remote.is_none() { crate::target::stat(&o.path) } else { None })
        .collect()
}

/// After the commands: on success, move the outputs into place and stat them (a failure
/// to do so fails the job); else delete what the attempt wrote at staged outputs' final
/// paths. Returns the outputs' stats and the staged outputs written in place.
pub(super) fn settle(
    job: &Job,
    before: &[Option<crate::target::Meta>],
    outcome: &mut Outcome,
    reap: &Sender<PathBuf>,
) -> (Vec<crate::target::Meta>, Vec<usize>) {
    let mut outputs = Vec::new();
    let mut in_place = Vec::new();
    if *outcome == Outcome::Success {
        match commit_outputs(job, before, reap, &mut in_place) {
            Ok(metas) => outputs = metas,
            Err(message) => {
                *outcome = Outcome::Failed { exit_code: Some(0), message };
                for &i in &in_place {
                    discard_written(&job.outputs[i].path);
                }
            }
        }
    } else {
        // Like make's .DELETE_ON_ERROR: what a failed attempt wrote at a staged output's
        // final path itself (not through staging) must not look like an output.
        for (o, before) in job.outputs.iter().zip(before) {
            if o.staged.is_some() && o.remote.is_none() && wrote_final(o, *before) {
                discard_written(&o.path);
            }
        }
    }
    (outputs, in_place)
}

/// Move staged outputs into place and stat them; a missing output fails the job
/// (a command that "succeeded" without writing what it promised). A command that wrote
/// a staged output's final path itself, leaving the staged one unwritten, is accepted as
/// if the step had `stage = false`; its index goes to `in_place`.
fn commit_outputs(
    job: &Job,
    before: &[Option<crate::target::Meta>],
    reap: &Sender<PathBuf>,
    in_place: &mut Vec<usize>,
) -> Result<Vec<crate::target::Meta>, String> {
    let mut metas = Vec::with_capacity(job.outputs.len());
    for (i, o) in job.outputs.iter().enumerate() {
        if let Some(target) = &o.remote {
            let copy = o.staged.as_deref().and_then(|s| copy_source(job, s));
            let meta = match &o.staged {
                Some(_) if let Some(from) = copy => {
                    crate::store::copy_to(&from.loc(), target).map_err(|e| format!("cannot copy output: {e}"))?
                }
                Some(staged) => {
                    if !staged.exists() {
                        return Err(not_written(i, o, staged));
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
            // A folder output's staging folder is made before the commands run: left
            // empty while the final folder changed, the commands wrote there instead.
            let empty_dir = o.dir && std::fs::read_dir(staged).is_ok_and(|mut d| d.next().is_none());
            if empty_dir && wrote_final(o, before[i]) {
                in_place.push(i);
                let _ = std::fs::remove_dir(staged);
            } else {
                // A missing staged file shows as NotFound from the rename: no extra stat.
                match crate::target::commit_keeping_old(staged, &o.path, o.dir) {
                    Ok(Some(old)) => {
                        let _ = reap.send(old);
                    }
                    Ok(None) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && wrote_final(o, before[i]) => in_place.push(i),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_written(i, o, staged)),
                    Err(e) => return Err(format!("cannot move output `{}` into place: {e}", o.name)),
                }
            }
        }
        match crate::target::stat(&o.path) {
            Some(m) => metas.push(m),
            None => return Err(format!("the command succeeded but output `{}` does not exist", o.name)),
        }
    }
    Ok(metas)
}

/// Whether a copy (`action = "copy"`) goes straight to its remote output when the job
/// commits, instead of through the output's local staging file: always, unless the step
/// has commands (`pre`, `post`), which are handed that file.
fn deferred(job: &Job, to: &End) -> bool {
    match to {
        End::Local(p) => {
            job.commands.is_empty() && job.outputs.iter().any(|o| o.remote.is_some() && o.staged.as_ref() == Some(p))
        }
        End::Remote(_) => false,
    }
}

/// The source of the copy that a remote output staged at `staged` gets at commit, if any
/// (see [`deferred`]): a server-side copy or a stream straight into the final object,
/// which appears whole when the copy completes.
fn copy_source<'a>(job: &'a Job, staged: &std::path::Path) -> Option<&'a End> {
    if !job.commands.is_empty() {
        return None;
    }
    job.copies.iter().find(|(_, to)| matches!(to, End::Local(p) if p == staged)).map(|(from, _)| from)
}

/// The message for a staged output that nothing wrote: where flux expected it.
fn not_written(i: usize, o: &JobOutput, staged: &std::path::Path) -> String {
    format!(
        "the command succeeded but did not write output `{}`: flux expected it at {} (what          `{{{{ outputs[{i}] }}}}` gives the command); write to `{{{{ outputs[{i}] }}}}`",
        o.name,
        staged.display()
    )
}

/// Whether the attempt changed a staged output's final path itself (it exists, and is not
/// what it was before the attempt, `before`: created, replaced, or rewritten).
fn wrote_final(o: &JobOutput, before: Option<crate::target::Meta>) -> bool {
    crate::target::stat(&o.path).is_some_and(|now| Some(now) != before)
}

/// Delete what a failed attempt wrote at an output's final path (the one place that does).
fn discard_written(path: &std::path::Path) {
    let _ = crate::target::remove(path);
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
        if deferred(job, to) {
            continue;
        }
        // Streams: a local copy uses copy_file_range, a remote one moves a part at a time.
        if let Err(message) = crate::store::copy(&from.loc(), &to.loc()) {
            log.write(format!("flux: {message}\n").as_bytes());
            return Outcome::Failed { exit_code: None, message };
        }
    }
    for (i, cmd) in job.commands.iter().enumerate() {
        // Stop before starting the next command if the job was killed meanwhile.
        if running.lock().ok().and_then(|m| m.get(&job.id).map(|r| r.killed.is_some())).unwrap_or(false) {
            return Outcome::Interrupted;
        }
        log.announce(job.headers.as_ref().and_then(|h| h.get(i)).map_or(cmd, String::as_str));
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
        groups.spawned(job.id, pid, child.start_time());
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
