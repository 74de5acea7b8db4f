//! Tasks never outlive the flux process that started them (SPEC §5, §6, §8).
//!
//! - Every command's shell is the leader of its own process group and gets
//!   `PR_SET_PDEATHSIG = SIGKILL` before it execs ([`spawn_shell`]): when flux dies by any
//!   means the kernel kills it. (The signal fires when the *thread* that spawned it ends;
//!   commands are spawned by the executor's worker threads, each of which waits for its
//!   command to end before it takes another job or returns, so the thread always outlives
//!   the command.)
//! - What the leader started in the background stays in its group and is not covered by
//!   that signal. So each group is recorded twice: on the attempt's row in the state DB
//!   (pgid and the leader's start time), and at once, before the batched DB write, as a line
//!   in `<state>/stage/<run>/groups` ([`Groups`]). The next build (or a build taking a lease
//!   over) ends what is left of dead runs ([`sweep_dead_runs`]) before it runs anything.
//! - A panic or a fatal error ends the running commands the way Ctrl-C does
//!   ([`stop_running_tasks`]) before flux exits.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::state::{DeadAttempt, StateDb, StateError};

/// Process groups of commands running now in this process, whatever executor runs them.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<i32>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A command started by [`spawn_shell`]: its pid, reaped by `try_wait` or `wait`.
#[derive(Debug)]
pub struct Proc {
    pid: i32,
    status: Option<std::process::ExitStatus>,
    /// Its start time in clock ticks since boot, when known without asking procfs.
    start: Option<u64>,
}

impl Proc {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Its start time as field 22 of `/proc/<pid>/stat` gives it (clock ticks since boot):
    /// known from the clock read around the clone when both readings fall in the same
    /// tick (almost always: a spawn takes well under a tick), else read from procfs.
    pub fn start_time(&self) -> Option<u64> {
        self.start.or_else(|| start_time(self.pid))
    }

    /// The exit status if the process has ended (reaping it), else `None`.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    /// Wait for the process to end and reap it.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        loop {
            if let Some(s) = self.reap(0)? {
                return Ok(s);
            }
        }
    }

    fn reap(&mut self, flags: libc::c_int) -> std::io::Result<Option<std::process::ExitStatus>> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut st: libc::c_int = 0;
        // SAFETY: waitpid on our own child, writing only `st`.
        let r = unsafe { libc::waitpid(self.pid, &mut st, flags) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted { Ok(None) } else { Err(e) };
        }
        if r == 0 {
            return Ok(None);
        }
        let s = std::process::ExitStatus::from_raw(st);
        self.status = Some(s);
        Ok(Some(s))
    }
}

/// What the child of [`spawn_shell`] needs, prepared by the parent: between clone and
/// exec the child may only make async-signal-safe calls, no allocation.
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    fds: [libc::c_int; 3],
    parent: libc::pid_t,
    /// Set by the child when it fails before exec (shared memory: CLONE_VM).
    errno: libc::c_int,
}

/// Signal numbers to reset in the child (1..NSIG on Linux).
const NSIG: libc::c_int = 65;

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the parent's ChildArgs, alive while the parent is suspended
    // (CLONE_VFORK); only async-signal-safe calls follow.
    unsafe {
        let a = &mut *(arg as *mut ChildArgs);
        // flux's own handlers must not run in this child, which shares flux's memory until
        // exec: default for every handled signal, and SIGPIPE (ignored by the Rust runtime)
        // back to its default, as std does for the commands it spawns. Ignored ones stay.
        for sig in 1..NSIG {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction != libc::SIG_IGN && old.sa_sigaction != libc::SIG_DFL || sig == libc::SIGPIPE {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        // A source that is itself one of 0, 1, 2 (flux started with one of them closed)
        // would be overwritten by an earlier dup2: move it out of the way first.
        for fd in a.fds.iter_mut() {
            if *fd < 3 {
                *fd = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3);
            }
        }
        let ok = libc::dup2(a.fds[0], 0) >= 0
            && libc::dup2(a.fds[1], 1) >= 0
            && libc::dup2(a.fds[2], 2) >= 0
            && libc::chdir(a.cwd) == 0
            && libc::setpgid(0, 0) == 0
            && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == 0;
        if ok {
            if libc::getppid() != a.parent {
                // flux died before the signal was armed: run nothing.
                libc::_exit(137);
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execve(a.path, a.argv, a.envp);
        }
        std::ptr::write_volatile(&mut a.errno, *libc::__errno_location());
        libc::_exit(127)
    }
}

/// Start `/bin/sh -c <cmd>` in `cwd`, with flux's environment plus `env`, stdin
/// `/dev/null`, stdout and stderr on `out` and `err`, as the leader of a new process group,
/// and dying with flux: `PR_SET_PDEATHSIG = SIGKILL` is set in the child before exec, and
/// if flux died between the clone and that call (the child was re-parented already) the
/// child exits at once instead of running the command.
///
/// The child is started like `posix_spawn` does it (clone with `CLONE_VM | CLONE_VFORK` on
/// a stack of its own), not with fork: std's `pre_exec` forks, which copies flux's page
/// tables and doubled the wall time of a build of 2,000 one-line tasks.
///
/// The signal fires when the *thread* that spawned the child ends: commands are spawned
/// by the executor's worker threads, each of which waits for its command to end before it
/// takes another job or returns, so the thread always outlives the command.
pub fn spawn_shell(
    cmd: &str,
    cwd: &Path,
    env: &[(String, String)],
    out: &impl std::os::fd::AsRawFd,
    err: &impl std::os::fd::AsRawFd,
) -> std::io::Result<Proc> {
    use std::ffi::CString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let nul = |_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in a command or its environment");
    let path = CString::new("/bin/sh").map_err(nul)?;
    let args = [CString::new("sh").map_err(nul)?, CString::new("-c").map_err(nul)?, CString::new(cmd).map_err(nul)?];
    // flux's own environment, read once: flux never changes it while it runs.
    static BASE_ENV: std::sync::OnceLock<Vec<CString>> = std::sync::OnceLock::new();
    let base = BASE_ENV.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                CString::new(kv).ok()
            })
            .collect()
    });
    let name = |kv: &CString| -> usize { kv.as_bytes().iter().position(|&b| b == b'=').unwrap_or(0) };
    let mut envp: Vec<*const libc::c_char> = base.iter().map(|e| e.as_ptr()).collect();
    let mut names: Vec<&[u8]> = base.iter().map(|e| &e.as_bytes()[..name(e)]).collect();
    let own: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend(v.as_bytes());
            CString::new(kv).map_err(nul)
        })
        .collect::<std::io::Result<_>>()?;
    // `env` overrides flux's variables of the same name; of its own repeated names, the last wins.
    for (e, (k, _)) in own.iter().zip(env) {
        while let Some(i) = names.iter().position(|n| *n == k.as_bytes()) {
            names.remove(i);
            envp.remove(i);
        }
        names.push(&e.as_bytes()[..k.len()]);
        envp.push(e.as_ptr());
    }
    envp.push(std::ptr::null());
    let cwd = CString::new(cwd.as_os_str().as_bytes()).map_err(nul)?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // Opened once: every child takes it as its stdin (dup2 clears close-on-exec on fd 0).
    static NULL: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    let null = match NULL.get() {
        Some(f) => f,
        None => {
            let f = std::fs::File::open("/dev/null")?;
            NULL.get_or_init(|| f)
        }
    };
    let mut a = ChildArgs {
        path: path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ptr(),
        fds: [std::os::fd::AsRawFd::as_raw_fd(null), out.as_raw_fd(), err.as_raw_fd()],
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        errno: 0,
    };
    // The child's stack, one per spawning thread, kept between spawns: the thread is
    // suspended while a child runs on it (CLONE_VFORK), so no two children share it.
    thread_local! {
        static STACK: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
    }
    let before = boot_ticks();
    let pid = STACK.with_borrow_mut(|stack| spawn_on(stack, &mut a))?;
    // The kernel stamps the child's start (CLOCK_BOOTTIME, truncated to ticks) inside the
    // clone, between these two readings: one tick for both is its tick.
    let start = before.zip(boot_ticks()).and_then(|(b, a)| (a == b).then_some(b));
    // SAFETY: written by the child before it exited, read after the clone returned.
    let child_errno = unsafe { std::ptr::read_volatile(&a.errno) };
    let mut proc = Proc { pid, status: None, start };
    if child_errno != 0 {
        let _ = proc.wait();
        return Err(std::io::Error::from_raw_os_error(child_errno));
    }
    Ok(proc)
}

/// CLOCK_BOOTTIME in clock ticks (`sysconf(_SC_CLK_TCK)`), truncated as procfs writes a
/// process's start time; `None` if the clock cannot be read or the tick does not divide
/// a second into whole nanoseconds.
fn boot_ticks() -> Option<u64> {
    static NS_PER_TICK: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let per = (*NS_PER_TICK.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|&h| h > 0)?;
        (1_000_000_000 % hz == 0).then_some(1_000_000_000 / hz)
    }))?;
    // SAFETY: ts is written by clock_gettime before it is read.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return None;
    }
    let ns = u64::try_from(ts.tv_sec).ok()?.checked_mul(1_000_000_000)?.checked_add(u64::try_from(ts.tv_nsec).ok()?)?;
    Some(ns / per)
}

/// Clone the child of [`spawn_shell`] on `stack` and return its pid.
fn spawn_on(stack: &mut [u8], a: &mut ChildArgs) -> std::io::Result<i32> {
    // SAFETY: the stack grows down from its (16-byte aligned) top; the child runs only
    // `child_main` on it while this thread is suspended (CLONE_VFORK), and every pointer in
    // `a` stays valid until clone returns. Signals are blocked around the clone so that no
    // handler of flux runs on the child's side before it resets them.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (a as *mut ChildArgs).cast(),
        );
        let e = std::io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(e);
        }
        pid
    };
    Ok(pid)
}

/// From `/proc/<pid>/stat`: (state, process group, start time in clock ticks since boot).
fn stat(pid: i32) -> Option<(u8, i32, u64)> {
    // One open and one read into the stack: this is read for every command spawned. The
    // fields used (up to the 22nd) fit in the buffer whatever the command's name; procfs
    // hands over the whole line (or as much as fits) in one read.
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let len = loop {
        match f.read(&mut buf) {
            Ok(k) => break k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    };
    let raw = &buf[..len];
    // The command name (field 2) is in parentheses and may hold anything: read after the last ')'.
    let close = raw.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&raw[close + 1..]).ok()?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let state = f.first()?.bytes().next()?;
    let pgrp = f.get(2)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((state, pgrp, start))
}

/// The start time of a process (field 22 of `/proc/<pid>/stat`), if it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.2)
}

/// A command spawned by the executor: job id, its process group, the leader's start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    pub id: u32,
    pub pgid: i32,
    pub start: u64,
}

/// The executor's record of the groups it spawned.
#[derive(Default)]
pub struct Groups {
    spawned: Mutex<Vec<Spawned>>,
    file: Mutex<GroupFile>,
}

/// The file groups are appended to, opened at the first spawn (a build that runs nothing
/// creates nothing).
#[derive(Default)]
struct GroupFile {
    path: Option<PathBuf>,
    file: Option<std::fs::File>,
}

impl Groups {
    /// Also write each group, as it is spawned, to `path` (appended; created with its
    /// folder at the first spawn): the state DB gets it with the next batch, this file at
    /// once.
    pub fn write_to(&self, path: &Path) {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).path = Some(path.to_path_buf());
    }

    /// A command of job `id` was spawned as leader of group `pid`, at `start` (clock ticks
    /// since boot) if known, else read from procfs.
    pub fn spawned(&self, id: u32, pid: i32, start: Option<u64>) {
        live().push(pid);
        // The child is not reaped before we wait for it: its stat is readable even if it
        // has exited already.
        let start = start.or_else(|| start_time(pid)).unwrap_or(0);
        let mut gf = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if gf.file.is_none()
            && let Some(path) = gf.path.take()
        {
            let _ = path.parent().map(std::fs::create_dir_all);
            gf.file = std::fs::OpenOptions::new().create(true).append(true).open(&path).ok();
        }
        if let Some(f) = gf.file.as_mut() {
            // One write(2) of a whole line (O_APPEND): a kill -9 of flux cannot tear it.
            let _ = f.write_all(format!("{pid} {start}\n").as_bytes());
        }
        drop(gf);
        self.spawned.lock().unwrap_or_else(|e| e.into_inner()).push(Spawned { id, pgid: pid, start });
    }

    /// The leader of group `pid` was reaped.
    pub fn reaped(&self, pid: i32) {
        live().retain(|&p| p != pid);
    }

    /// Groups spawned since the last call.
    pub fn take(&self) -> Vec<Spawned> {
        std::mem::take(&mut *self.spawned.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Whether any process (not a zombie) is in process group `pgid`.
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|e| {
        e.file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .and_then(stat)
            .is_some_and(|(state, pgrp, _)| pgrp == pgid && state != b'Z' && state != b'X')
    })
}

/// Stop every command this process is running, as Ctrl-C does: TERM to each process group,
/// KILL to what is left after [`crate::exec::KILL_GRACE`], and return once they are gone
/// (or a moment after the KILL). For a panic hook and for fatal errors (a state DB that
/// cannot be written), where the build loop cannot go on: the caller exits afterwards.
pub fn stop_running_tasks() {
    let groups: Vec<i32> = live().clone();
    if groups.is_empty() {
        return;
    }
    signal_all(&groups, libc::SIGTERM);
    let deadline = Instant::now() + crate::exec::KILL_GRACE;
    while Instant::now() < deadline && groups.iter().any(|&g| group_alive(g)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_all(&groups, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && groups.iter().any(|&g| group_alive(g)) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal_all(groups: &[i32], sig: i32) {
    for &g in groups {
        if g > 0 {
            // SAFETY: kill(2) with a negative pid signals a process group we spawned.
            unsafe {
                libc::kill(-g, sig);
            }
        }
    }
}

/// Stops the running commands ([`stop_running_tasks`]) when dropped armed: a build that
/// returns an error (or unwinds) leaves no command running behind it.
pub struct StopOnError {
    armed: bool,
}

impl StopOnError {
    pub fn armed() -> StopOnError {
        StopOnError { armed: true }
    }

    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for StopOnError {
    fn drop(&mut self) {
        if self.armed {
            stop_running_tasks();
        }
    }
}

/// Install a panic hook that prints the panic as usual, stops the running commands and
/// exits with 101 (the status of a Rust panic).
pub fn stop_tasks_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        stop_running_tasks();
        std::process::exit(101);
    }));
}

/// End what is left of a dead run's process group `pgid`, whose leader started at `start`.
/// A process `pgid` that started at another time is a recycled pid: its group is another
/// one (Linux reuses no pid while a group of that id exists), so nothing is touched. With
/// the leader gone, processes still in group `pgid` are the dead run's. Returns whether a
/// signal was sent.
pub fn kill_dead_group(pgid: i32, start: u64) -> bool {
    if pgid <= 1 {
        return false;
    }
    match stat(pgid) {
        Some((_, pgrp, started)) if pgrp != pgid || started != start => return false,
        Some(_) => {}
        None if !group_alive(pgid) => return false,
        None => {}
    }
    // SAFETY: kill(2) of a process group identified as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) == 0 }
}

/// The groups listed in a run's `groups` file: (pgid, start time).
pub fn read_group_file(path: &Path) -> Vec<(i32, u64)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter_map(|l| {
            let (p, s) = l.split_once(' ')?;
            Some((p.parse().ok()?, s.parse().ok()?))
        })
        .collect()
}

/// Call `handler` on SIGINT, SIGTERM and SIGHUP (the terminal closed, an SSH connection
/// dropped), for `flux build` and `flux schedule` alike. A SIGHUP ignored by whoever
/// started flux (`nohup`) stays ignored. `handler` must be async-signal-safe.
pub fn on_stop_signals(handler: extern "C" fn(libc::c_int)) {
    // SAFETY: sigaction only installs `handler`, which callers keep async-signal-safe (they
    // only touch an atomic).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        // A SIGHUP ignored by whoever started flux (`nohup`) stays ignored.
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0 && old.sa_sigaction != libc::SIG_IGN {
            libc::sigaction(libc::SIGHUP, &sa, std::ptr::null_mut());
        }
    }
}

/// The file of a run's process groups, in its staging folder.
pub fn group_file(stage_root: &Path) -> PathBuf {
    stage_root.join("groups")
}

/// The file of a run's attempt starts, in its staging folder (see [`StartLog`]).
pub fn start_file(stage_root: &Path) -> PathBuf {
    stage_root.join("started")
}

/// The attempts a run started, each with the fingerprint it was started for, appended to
/// [`start_file`] the moment the build announces it. The state DB gets the same facts
/// with its next batch (up to 2 s later); a kill -9 in between leaves them here, so the
/// next build can recognise an attempt that committed its outputs but was never
/// recorded (`Runner::recognise`) instead of running it again.
pub struct StartLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// The line being written, kept between notes.
    line: String,
}

impl StartLog {
    pub fn new(stage_root: &Path) -> StartLog {
        StartLog { path: start_file(stage_root), file: None, line: String::new() }
    }

    /// Note one attempt (the file and its folder are made at the first).
    pub fn note(&mut self, a: &DeadAttempt) {
        let Some((cmd, inputs)) = a.expect else { return };
        if self.file.is_none() {
            let _ = self.path.parent().map(std::fs::create_dir_all);
            self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else { return };
        use std::fmt::Write as _;
        let line = &mut self.line;
        line.clear();
        let _ = write!(line, "{}\t{}\t{}\t{}", a.task_id, a.attempt, a.started_at, a.reason.as_deref().unwrap_or(""));
        for h in [&cmd, &inputs] {
            line.push('\t');
            crate::state::hex_into(h, line);
        }
        line.push('\n');
        // One write(2) of a whole line (O_APPEND): a kill -9 cannot tear it.
        let _ = f.write_all(line.as_bytes());
    }
}

/// The attempts listed in a run's [`start_file`]; lines that do not parse are skipped.
pub fn read_start_file(path: &Path, run_id: i64) -> Vec<DeadAttempt> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let unhex = |s: &str| -> Option<crate::state::Hash> {
        let mut h = [0u8; 32];
        if s.len() != 64 {
            return None;
        }
        for (i, b) in h.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(h)
    };
    text.lines()
        .filter_map(|line| {
            // The task id comes first and may hold anything but a newline: split from the right.
            let mut f = line.rsplitn(6, '\t');
            let inputs = unhex(f.next()?)?;
            let cmd = unhex(f.next()?)?;
            let reason = f.next()?;
            let started_at: f64 = f.next()?.parse().ok()?;
            let attempt: u32 = f.next()?.parse().ok()?;
            let task_id = f.next()?.to_string();
            Some(DeadAttempt {
                run_id,
                task_id,
                attempt,
                reason: (!reason.is_empty()).then(|| reason.to_string()),
                started_at,
                expect: Some((cmd, inputs)),
            })
        })
        .collect()
}

/// What [`sweep_dead_runs`] did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Runs found dead and cleaned up.
    pub runs: Vec<i64>,
    /// Process groups that were still alive and were killed.
    pub killed: usize,
    /// The attempts those runs had running, by task id: the next run of such a task may
    /// recognise its outputs (see `Runner::recognise`).
    pub running: HashMap<String, DeadAttempt>,
    /// Their Slurm jobs that still run (or ended with an exit code): the build adopts
    /// those it needs and cancels the others.
    pub slurm: crate::exec::slurm::Orphans,
}

/// Kill the process groups `dead` runs left running and wait until they are gone; returns
/// how many were still alive.
fn kill_groups_of(dead: &[crate::state::DeadRun], state_dir: &Path) -> usize {
    let mut targets: HashSet<(i32, u64)> = HashSet::new();
    for run in dead {
        let stage = state_dir.join("stage").join(run.id.to_string());
        targets.extend(run.groups.iter().copied());
        targets.extend(read_group_file(&group_file(&stage)));
        // Its Slurm jobs, if any, run on: the next build adopts them (`sweep_dead_runs`).
    }
    let mut killed = Vec::new();
    for &(pgid, start) in &targets {
        if kill_dead_group(pgid, start) {
            killed.push(pgid);
        }
    }
    // SIGKILL cannot be caught: they go, unless stuck in the kernel (then do not hang).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && killed.iter().any(|&g| group_alive(g)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.len()
}

/// End the process groups dead runs of this host left running, without closing the runs:
/// the next build's [`sweep_dead_runs`] closes them and learns which attempts were
/// running. For a process that takes over from a dead one (`flux schedule` taking a dead
/// scheduler's lease) whether or not it has anything to build. Returns how many groups
/// were still alive.
pub fn kill_dead_runs_groups(db: &StateDb, state_dir: &Path) -> Result<usize, StateError> {
    let dead = db.dead_runs()?;
    if dead.is_empty() {
        return Ok(0);
    }
    Ok(kill_groups_of(&dead, state_dir))
}

/// End what dead runs of this host left behind, before anything runs again: kill their
/// process groups and wait until they are gone, remove their staging folders, and close
/// them in the state DB. Only runs whose flux is dead are touched, never a live
/// concurrent build's.
pub fn sweep_dead_runs(db: &mut StateDb, state_dir: &Path) -> Result<Swept, StateError> {
    let dead = db.dead_runs()?;
    let mut out = Swept::default();
    if dead.is_empty() {
        return Ok(out);
    }
    out.killed = kill_groups_of(&dead, state_dir);
    let mut stages = Vec::new();
    for run in dead {
        let stage = state_dir.join("stage").join(run.id.to_string());
        db.close_dead_run(run.id)?;
        // Attempts the DB has as `running`, and those only the start file knows (started
        // within the last batch window): the latest start of a task is the one to judge.
        let noted = read_start_file(&start_file(&stage), run.id);
        let running: Vec<DeadAttempt> = run.running.into_iter().chain(noted).collect();
        out.slurm.collect(&stage, run.id, &running);
        for a in running {
            // A task taken over from one dead run by another that died too: the later wins.
            if out.running.get(&a.task_id).is_none_or(|o| o.started_at < a.started_at) {
                out.running.insert(a.task_id.clone(), a);
            }
        }
        stages.push(stage);
        out.runs.push(run.id);
    }
    // Which Slurm jobs still count (one `squeue`, only if a dead run submitted any); the
    // staging folders of those are kept until the build ends.
    out.slurm.settle();
    for stage in stages {
        if !out.slurm.keeps(&stage) {
            let _ = std::fs::remove_dir_all(&stage);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_reads_this_process() {
        let me = std::process::id() as i32;
        let (state, pgrp, start) = stat(me).expect("own stat");
        assert!(state == b'R' || state == b'S', "{}", state as char);
        // SAFETY: getpgrp has no preconditions.
        assert_eq!(pgrp, unsafe { libc::getpgrp() });
        assert!(start > 0);
        assert_eq!(start_time(me), Some(start));
    }

    #[test]
    fn a_spawned_commands_start_time_from_the_clock_is_the_one_procfs_gives() {
        let (mut r, w) = std::io::pipe().unwrap();
        let mut known = 0;
        for _ in 0..50 {
            let p = spawn_shell("read x", Path::new("/"), &[], &w, &w).unwrap();
            let procfs = start_time(p.pid).expect("the child's stat");
            if let Some(clock) = p.start {
                assert_eq!(clock, procfs);
                known += 1;
            }
            assert_eq!(p.start_time(), Some(procfs));
            let mut p = p;
            // SAFETY: a valid pid of our own child.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
            p.wait().unwrap();
        }
        drop(w);
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut r, &mut rest);
        assert!(known >= 40, "the clock gave the start time {known} times in 50");
    }

    #[test]
    fn a_recycled_pid_is_not_killed() {
        let me = std::process::id() as i32;
        // SAFETY: getpgrp has no preconditions.
        let pg = unsafe { libc::getpgrp() };
        if pg == me {
            // As leader of our own group with another start time: a recycled pid.
            assert!(!kill_dead_group(me, start_time(me).unwrap() + 1));
        }
        // A pid that is not a group leader names no group of ours.
        if pg != me {
            assert!(!kill_dead_group(me, 0));
        }
    }

    #[test]
    fn spawn_shell_runs_in_its_folder_group_and_environment() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let (mut r, w) = std::io::pipe().unwrap();
        let w2 = w.try_clone().unwrap();
        let env = vec![("FLUX_SPAWN_TEST".to_string(), "a b".to_string())];
        let mut p = spawn_shell(
            "echo \"$FLUX_SPAWN_TEST\" $(pwd) $(($(ps -o pgid= -p $$) == $$)); read x; echo err >&2; exit 3",
            dir.path(),
            &env,
            &w,
            &w2,
        )
        .unwrap();
        drop((w, w2));
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        let status = p.wait().unwrap();
        assert_eq!(status.code(), Some(3));
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(out, format!("a b {} 1\nerr\n", cwd.display()));
        assert_eq!(p.try_wait().unwrap().map(|s| s.code()), Some(Some(3)), "reaped once, kept");
        // A folder that does not exist: an error, nothing left running.
        let (_r, w) = std::io::pipe().unwrap();
        let err = spawn_shell("true", &dir.path().join("nope"), &[], &w, &w).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn start_file_lines_round_trip_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = StartLog::new(dir.path());
        let a = DeadAttempt {
            run_id: 7,
            task_id: "weird[a\tb]".into(),
            attempt: 2,
            reason: Some("input-changed".into()),
            started_at: 1_700_000_000.25,
            expect: Some(([1; 32], [0xab; 32])),
        };
        log.note(&a);
        log.note(&DeadAttempt { expect: None, ..a.clone() });
        std::fs::OpenOptions::new().append(true).open(start_file(dir.path())).unwrap().write_all(b"torn\t1").unwrap();
        assert_eq!(read_start_file(&start_file(dir.path()), 7), vec![a]);
    }

    #[test]
    fn group_file_lines_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let g = Groups::default();
        let path = group_file(&dir.path().join("stage/7"));
        g.write_to(&path);
        g.spawned(3, 4242, None);
        g.reaped(4242);
        let lines = read_group_file(&path);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, 4242);
        assert_eq!(g.take().len(), 1);
        assert!(g.take().is_empty());
        assert!(!live().contains(&4242));
    }
}
