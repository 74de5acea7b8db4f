//! Tasks never outlive the flux process that started them (SPEC §5, §6, §8).
//!
//! - Every command's shell is the leader of its own process group and gets
//!   `PR_SET_PDEATHSIG = SIGKILL` before it execs ([`die_with_flux`]): when flux dies by any
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
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::state::{DeadAttempt, StateDb, StateError};

/// Process groups of commands running now in this process, whatever executor runs them.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<i32>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Make the command's process die with flux: `PR_SET_PDEATHSIG = SIGKILL` in the child
/// before exec, and if flux died between the fork and that call (the child was already
/// re-parented), the child exits at once instead of running the command.
pub fn die_with_flux(cmd: &mut Command) {
    // SAFETY: getpid is async-signal-safe; the closure only makes async-signal-safe calls
    // (prctl, getppid, _exit), as required between fork and exec.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
}

/// From `/proc/<pid>/stat`: (state, process group, start time in clock ticks since boot).
fn stat(pid: i32) -> Option<(u8, i32, u64)> {
    let raw = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
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

    /// A command of job `id` was spawned as leader of group `pid`.
    pub fn spawned(&self, id: u32, pid: i32) {
        live().push(pid);
        // The child is not reaped before we wait for it: its stat is readable even if it
        // has exited already.
        let start = start_time(pid).unwrap_or(0);
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

/// The file of a run's process groups, in its staging folder.
pub fn group_file(stage_root: &Path) -> PathBuf {
    stage_root.join("groups")
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
    let mut targets: HashSet<(i32, u64)> = HashSet::new();
    for run in &dead {
        let stage = state_dir.join("stage").join(run.id.to_string());
        targets.extend(run.groups.iter().copied());
        targets.extend(read_group_file(&group_file(&stage)));
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
    out.killed = killed.len();
    for run in dead {
        let stage = state_dir.join("stage").join(run.id.to_string());
        let _ = std::fs::remove_dir_all(&stage);
        db.close_dead_run(run.id)?;
        for a in run.running {
            // A task taken over from one dead run by another that died too: the later wins.
            if out.running.get(&a.task_id).is_none_or(|o| o.started_at < a.started_at) {
                out.running.insert(a.task_id.clone(), a);
            }
        }
        out.runs.push(run.id);
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
    fn group_file_lines_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let g = Groups::default();
        let path = group_file(&dir.path().join("stage/7"));
        g.write_to(&path);
        g.spawned(3, 4242);
        g.reaped(4242);
        let lines = read_group_file(&path);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, 4242);
        assert_eq!(g.take().len(), 1);
        assert!(g.take().is_empty());
        assert!(!live().contains(&4242));
    }
}
