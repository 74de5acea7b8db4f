//! The test harness: a fluent builder that writes a project into its own temporary
//! folder, runs the real `flux` binary there and returns what it printed.
//!
//! ```ignore
//! Test::new()
//!     .fluxfile("[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo a > {{ outputs[0] }}\"")
//!     .file("raw/a.log", "x")
//!     .args(["build", "--output", "json"])
//!     .run()
//!     .assert_status(0)
//!     .assert_summary(1, 0, 0, 0);
//! ```
//!
//! Every run gets `CI=1` and `NO_COLOR=1`, the temporary folder as its working directory
//! (or a folder inside it, see [`Test::current_dir`]), a timeout, and is checked for panics.
//!
//! What a test does not assert is asserted for it (just's `Test` model): when an [`Output`]
//! is dropped, flux must have exited 0 unless the test asserted the status
//! ([`Output::assert_status`], [`Output::status`]), and its stderr must hold nothing but
//! the `ok …` line of each task that succeeded unless the test looked at stderr
//! ([`Output::stderr_has`], [`Output::stderr_lacks`], [`Output::stderr_is`],
//! [`Output::stderr`]). Reading the public fields directly does not count.
//!
//! Two ways to run flux: in the foreground ([`Test::run`], [`Test::run_args`],
//! [`Test::run_args_within`]) and in the background ([`Test::spawn_args`] or
//! [`Running::spawn`], collected with [`Running::wait`] or [`Test::finish`]); both have a
//! timeout.

#![allow(dead_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// The binary under test.
pub const FLUX: &str = env!("CARGO_BIN_EXE_flux");

/// A run that takes longer than this is killed and fails the test.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The exit status recorded for a run the test had to kill (a run that ended by a signal
/// gets minus the signal's number: -9 is SIGKILL).
pub const KILLED: i32 = -9;

/// A project in a temporary folder, and the command to run in it.
pub struct Test {
    dir: tempfile::TempDir,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    pub fn new() -> Test {
        let dir = tempfile::Builder::new().prefix("flux-it-").tempdir().expect("create a temporary folder");
        Test { dir, args: Vec::new(), env: Vec::new(), env_remove: Vec::new(), cwd: None, stdin: None }
    }

    /// The project's folder (canonical: /tmp may be a symlink on some systems).
    pub fn path(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap_or_else(|_| self.dir.path().to_path_buf())
    }

    /// An absolute path inside the project.
    pub fn abs(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// Write `Fluxfile` at the project's root.
    pub fn fluxfile(self, text: &str) -> Test {
        self.file("Fluxfile", text)
    }

    /// Write a file (creating its folders) now.
    pub fn file(self, rel: &str, contents: impl AsRef<[u8]>) -> Test {
        self.write(rel, contents);
        self
    }

    /// Make an empty folder now.
    pub fn dir(self, rel: &str) -> Test {
        std::fs::create_dir_all(self.abs(rel)).expect("create folder");
        self
    }

    /// The arguments of [`Test::run`].
    pub fn args<I, S>(mut self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// An extra environment variable for every run.
    pub fn env(mut self, k: &str, v: &str) -> Test {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Remove a variable (e.g. `CI`) from the environment of every run.
    pub fn env_remove(mut self, k: &str) -> Test {
        self.env_remove.push(k.into());
        self
    }

    /// Run from this folder (relative to the project; created if missing).
    pub fn current_dir(mut self, rel: &str) -> Test {
        let p = self.abs(rel);
        std::fs::create_dir_all(&p).expect("create working folder");
        self.cwd = Some(p);
        self
    }

    /// Feed these bytes to flux's stdin (default: /dev/null).
    pub fn stdin(mut self, bytes: impl AsRef<[u8]>) -> Test {
        self.stdin = Some(bytes.as_ref().to_vec());
        self
    }

    /// Run with the arguments given to [`Test::args`].
    #[track_caller]
    pub fn run(&self) -> Output {
        let args = self.args.clone();
        self.run_args(args)
    }

    /// Run with these arguments, keeping the folder for more runs.
    #[track_caller]
    pub fn run_args<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.finish(self.spawn_args(args))
    }

    /// The command [`Test::run_args`] runs: the flux binary, in the project, with `CI=1`,
    /// `NO_COLOR=1` and the environment given to the builder; stdout and stderr piped.
    pub fn command(&self, args: &[OsString]) -> Command {
        let mut cmd = Command::new(FLUX);
        cmd.args(args)
            .current_dir(self.cwd.clone().unwrap_or_else(|| self.path()))
            .env("CI", "1")
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // flux as a user starts it: with SIGHUP's default action, even when the tests run
        // under nohup (flux keeps an ignored SIGHUP ignored; a test that wants that, as
        // orphans.rs's nohup test does, ignores it again after this).
        // SAFETY: signal(2) is async-signal-safe; nothing else runs in the child.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                Ok(())
            });
        }
        cmd
    }

    /// Start flux without waiting for it (for signals and concurrent runs); collect it
    /// with [`Running::wait`] or [`Test::finish`].
    pub fn spawn_args<I, S>(&self, args: I) -> Running
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        Running::start(self.command(&args), args, self.stdin.clone())
    }

    /// Wait for a flux started by [`Test::spawn_args`] (failing the test after a minute) and
    /// check that it did not panic.
    #[track_caller]
    pub fn finish(&self, running: Running) -> Output {
        running.wait(RUN_TIMEOUT)
    }

    /// Run, but kill flux after `limit`: the output then has status [`KILLED`] (for tests
    /// of things that must be quick, so that they fail quickly).
    #[track_caller]
    pub fn run_args_within<I, S>(&self, args: I, limit: Duration) -> Output
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.spawn_args(args).collect(limit, false)
    }

    // ---- files in the project ----

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let p = self.abs(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent folder");
        }
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    pub fn read(&self, rel: &str) -> String {
        let p = self.abs(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    pub fn read_bytes(&self, rel: &str) -> Vec<u8> {
        let p = self.abs(rel);
        std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    pub fn exists(&self, rel: &str) -> bool {
        std::fs::symlink_metadata(self.abs(rel)).is_ok()
    }

    /// Remove a file or a folder.
    pub fn remove(&self, rel: &str) {
        let p = self.abs(rel);
        let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        r.unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
    }

    /// Remove a file or a folder if it exists.
    pub fn remove_if_exists(&self, rel: &str) {
        if self.exists(rel) {
            self.remove(rel);
        }
    }

    /// Set a file's modification time to now, without changing its content.
    pub fn touch(&self, rel: &str) {
        let p = self.abs(rel);
        let f =
            std::fs::OpenOptions::new().append(true).open(&p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
        f.set_modified(SystemTime::now()).expect("set mtime");
    }

    /// The bytes of a file, or `None` when it does not exist.
    pub fn maybe_read(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.abs(rel)).ok()
    }

    /// Every regular file under `rel` (relative paths, sorted) with its bytes.
    pub fn tree(&self, rel: &str) -> BTreeMap<String, Vec<u8>> {
        let root = self.path();
        let mut out = BTreeMap::new();
        let mut stack = vec![root.join(rel)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(b) = std::fs::read(&p) {
                    let key = p.strip_prefix(&root).unwrap_or(&p).to_string_lossy().into_owned();
                    out.insert(key, b);
                }
            }
        }
        out
    }

    /// Let every file written so far age past flux's "racy git" margin (50 ms), so that the
    /// digests computed by the next build are trusted by the one after it.
    pub fn age_files(&self) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A flux process running in the background, started by [`Test::spawn_args`] or
/// [`Running::spawn`]; killed when dropped if it is still running.
pub struct Running {
    args: Vec<OsString>,
    pub child: Child,
    /// When the process was started.
    pub started: Instant,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// A signal, by number (`libc::SIGINT`) or by name (`"INT"`, `"SIGINT"`).
pub trait Signal {
    fn number(&self) -> i32;
}

impl Signal for i32 {
    fn number(&self) -> i32 {
        *self
    }
}

impl Signal for &str {
    fn number(&self) -> i32 {
        match self.trim_start_matches("SIG") {
            "HUP" => libc::SIGHUP,
            "INT" => libc::SIGINT,
            "QUIT" => libc::SIGQUIT,
            "KILL" => libc::SIGKILL,
            "TERM" => libc::SIGTERM,
            "USR1" => libc::SIGUSR1,
            "USR2" => libc::SIGUSR2,
            "STOP" => libc::SIGSTOP,
            "CONT" => libc::SIGCONT,
            other => panic!("unknown signal name {other:?}"),
        }
    }
}

impl Running {
    /// Start flux in the project's folder with these arguments.
    pub fn spawn(t: &Test, args: &[&str]) -> Running {
        t.spawn_args(args.iter().copied())
    }

    /// Start flux with these extra environment variables.
    pub fn spawn_env(t: &Test, args: &[&str], env: &[(&str, &str)]) -> Running {
        let args: Vec<OsString> = args.iter().map(Into::into).collect();
        let mut cmd = t.command(&args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Running::start(cmd, args, t.stdin.clone())
    }

    fn start(mut cmd: Command, args: Vec<OsString>, stdin: Option<Vec<u8>>) -> Running {
        let started = Instant::now();
        let mut child = cmd.spawn().expect("start flux");
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&bytes);
            });
        }
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let stdout = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = out.read_to_end(&mut b);
            b
        });
        let stderr = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err.read_to_end(&mut b);
            b
        });
        Running { args, child, started, stdout: Some(stdout), stderr: Some(stderr) }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send a signal to flux.
    pub fn signal(&self, sig: impl Signal) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet (`wait` takes
        // `self`).
        let r = unsafe { libc::kill(self.pid(), sig.number()) };
        assert_eq!(r, 0, "kill({}, {}) failed: {}", self.pid(), sig.number(), std::io::Error::last_os_error());
    }

    /// Whether flux is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait for flux to end, failing the test (after killing it) if it runs past `limit`
    /// from its start; check that it did not panic.
    #[track_caller]
    pub fn wait(self, limit: Duration) -> Output {
        self.collect(limit, true)
    }

    /// kill -9, then reap. The output's status and stderr count as asserted: the test
    /// chose how this run ended.
    #[track_caller]
    pub fn kill9(self) -> Output {
        self.signal(libc::SIGKILL);
        let o = self.collect(Duration::from_secs(60), true);
        o.status_seen.set(true);
        o.stderr_seen.set(true);
        o
    }

    #[track_caller]
    fn collect(mut self, limit: Duration, fail_on_timeout: bool) -> Output {
        use std::os::unix::process::ExitStatusExt;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for flux") {
                break Some(s);
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let elapsed = self.started.elapsed();
        let join = |h: Option<JoinHandle<Vec<u8>>>| {
            String::from_utf8_lossy(&h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()).into_owned()
        };
        let stdout = join(self.stdout.take());
        let mut stderr = join(self.stderr.take());
        let code = match status {
            None => {
                stderr.push_str(&format!("\n(the test killed flux after {limit:?})"));
                KILLED
            }
            Some(s) => s.code().unwrap_or_else(|| -s.signal().unwrap_or(0)),
        };
        let o = Output::new(std::mem::take(&mut self.args), code, stdout, stderr, elapsed);
        if status.is_none() && fail_on_timeout {
            o.status_seen.set(true);
            o.stderr_seen.set(true);
            panic!("flux did not finish within {limit:?}\n{}", o.describe());
        }
        if o.stderr.contains("panicked") || o.stderr.contains("RUST_BACKTRACE") {
            o.status_seen.set(true);
            o.stderr_seen.set(true);
            panic!("flux panicked\n{}", o.describe());
        }
        o
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one run of flux did. Dropping it checks what the test left unchecked (see the
/// module's documentation).
#[derive(Debug)]
pub struct Output {
    pub args: Vec<OsString>,
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// From the start of the process to its end (a bound for hangs, not a measurement).
    pub elapsed: Duration,
    status_seen: Cell<bool>,
    stderr_seen: Cell<bool>,
    /// Where the test ran flux (named when a check fails on drop).
    at: &'static std::panic::Location<'static>,
}

/// A copy checks nothing when dropped: the original does.
impl Clone for Output {
    fn clone(&self) -> Output {
        let o = Output::new(self.args.clone(), self.status, self.stdout.clone(), self.stderr.clone(), self.elapsed);
        o.status_seen.set(true);
        o.stderr_seen.set(true);
        o
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if !self.status_seen.get() && self.status != 0 {
            panic!(
                "flux exited {} and the test did not assert its status (call .assert_status(N)): the run at {}\n{}",
                self.status,
                self.at,
                self.describe()
            );
        }
        if !self.stderr_seen.get() && !routine_stderr(&self.stderr) {
            panic!(
                "flux printed to stderr more than the `ok` lines of its tasks and the test did not look at \
                 stderr (call .stderr_has(…), .stderr_is(…) or .stderr()): the run at {}\n{}",
                self.at,
                self.describe()
            );
        }
    }
}

/// Whether stderr holds nothing but what flux prints on every run that goes well: the
/// line a build prints for each task that succeeded (`ok   ID (REASON) 0.01s [1/3]`), the
/// scheduler's banner (`flux schedule: 2 scheduled step(s), time zone UTC…`), its line per
/// scheduled step and tick (`daily: never evaluated; 3 intervals 2024-01-01..2024-01-03`)
/// and its `flux schedule: stopped`.
pub fn routine_stderr(stderr: &str) -> bool {
    stderr.lines().all(|l| {
        l.strip_prefix("ok   ").is_some_and(|rest| rest.ends_with(']') && rest.contains(" (") && rest.contains("s ["))
            || l.strip_prefix("flux schedule: ").is_some_and(|rest| {
                rest == "stopped" || (rest.contains(" scheduled step(s), time zone ") && !rest.contains('\n'))
            })
            || schedule_decision(l)
    })
}

/// A tick's line for one scheduled step: `STEP: WHY; 3 intervals A..B`, `…; interval A` or
/// `…; nothing due`, with ` (N more held back by max_active_runs)` after it.
fn schedule_decision(l: &str) -> bool {
    let Some((step, rest)) = l.split_once(": ") else { return false };
    if step.is_empty() || step.contains(' ') || matches!(step, "warning" | "error" | "flux" | "FAIL") {
        return false;
    }
    let Some((_, due)) = rest.rsplit_once("; ") else { return false };
    let due = match due.split_once(" (") {
        Some((d, held)) if held.ends_with(" more held back by max_active_runs)") => d,
        Some(_) => return false,
        None => due,
    };
    let words: Vec<&str> = due.split(' ').collect();
    match words.as_slice() {
        ["nothing", "due"] => true,
        ["interval", _] => true,
        [n, "intervals", range] => n.parse::<u32>().is_ok() && range.contains(".."),
        _ => false,
    }
}

impl Output {
    #[track_caller]
    pub fn new(args: Vec<OsString>, status: i32, stdout: String, stderr: String, elapsed: Duration) -> Output {
        Output {
            args,
            status,
            stdout,
            stderr,
            elapsed,
            status_seen: Cell::new(false),
            stderr_seen: Cell::new(false),
            at: std::panic::Location::caller(),
        }
    }

    /// The exit status, for a test that checks it in its own way (it counts as asserted).
    pub fn status(&self) -> i32 {
        self.status_seen.set(true);
        self.status
    }

    /// The whole of stderr, for a test that checks it in its own way (it counts as looked
    /// at).
    pub fn stderr(&self) -> &str {
        self.stderr_seen.set(true);
        &self.stderr
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "flux {}\n--- exit code: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "),
            self.status,
            self.stdout,
            self.stderr
        );
        if self.stdout.contains("\"status\":\"queued\"") {
            s.push_str(
                "\n--- note: a task is reported `queued` after the build ended: flux dropped a finished task \
                 (see execution::parallel_builds_never_lose_a_finished_task)",
            );
        }
        s
    }

    #[track_caller]
    pub fn assert_status(&self, code: i32) -> &Output {
        self.status_seen.set(true);
        assert_eq!(self.status, code, "unexpected exit code\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Output {
        self.assert_status(0)
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Output {
        assert!(self.stdout.contains(needle), "stdout lacks {needle:?}\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn stdout_lacks(&self, needle: &str) -> &Output {
        assert!(!self.stdout.contains(needle), "stdout has {needle:?}\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Output {
        self.stderr_seen.set(true);
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn stderr_lacks(&self, needle: &str) -> &Output {
        self.stderr_seen.set(true);
        assert!(!self.stderr.contains(needle), "stderr has {needle:?}\n{}", self.describe());
        self
    }

    /// Every line of stderr that is not routine (see [`routine_stderr`]) contains one of
    /// `allowed` (for runs whose extra lines depend on timing, e.g. which task another
    /// build held).
    #[track_caller]
    pub fn stderr_lines_match(&self, allowed: &[&str]) -> &Output {
        self.stderr_seen.set(true);
        for l in self.stderr.lines() {
            assert!(
                routine_stderr(l) || allowed.iter().any(|a| l.contains(a)),
                "stderr line {l:?} is none of {allowed:?}\n{}",
                self.describe()
            );
        }
        self
    }

    /// The whole of stderr, exactly (used for rendered errors).
    #[track_caller]
    pub fn stderr_is(&self, expected: &str) -> &Output {
        self.stderr_seen.set(true);
        assert_eq!(self.stderr, expected, "stderr differs\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn stdout_is(&self, expected: &str) -> &Output {
        assert_eq!(self.stdout, expected, "stdout differs\n{}", self.describe());
        self
    }

    /// stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document: {e}\n{}", self.describe()))
    }

    /// `summary.KEY` of a `--output json` build.
    #[track_caller]
    pub fn summary(&self, key: &str) -> u64 {
        self.json()["summary"][key].as_u64().unwrap_or_else(|| panic!("no summary.{key}\n{}", self.describe()))
    }

    /// Checks `summary.{ran, skipped, failed, upstream_failed}`.
    #[track_caller]
    pub fn assert_summary(&self, ran: u64, skipped: u64, failed: u64, upstream_failed: u64) -> &Output {
        let j = self.json();
        let s = &j["summary"];
        let got = (s["ran"].as_u64(), s["skipped"].as_u64(), s["failed"].as_u64(), s["upstream_failed"].as_u64());
        assert_eq!(
            got,
            (Some(ran), Some(skipped), Some(failed), Some(upstream_failed)),
            "summary (ran, skipped, failed, upstream_failed) differs\n{}",
            self.describe()
        );
        self
    }

    /// The `tasks` array of a `--output json` build.
    #[track_caller]
    pub fn tasks(&self) -> Vec<Value> {
        self.json()["tasks"].as_array().cloned().unwrap_or_else(|| panic!("no tasks array\n{}", self.describe()))
    }

    /// The ids of the tasks with this status, sorted.
    #[track_caller]
    pub fn ids_with_status(&self, status: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .tasks()
            .iter()
            .filter(|t| t["status"] == status)
            .map(|t| t["id"].as_str().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v
    }

    /// The ids of the tasks that ran successfully, sorted.
    #[track_caller]
    pub fn ran(&self) -> Vec<String> {
        self.ids_with_status("success")
    }

    /// Every task id listed, in the order printed.
    #[track_caller]
    pub fn ids(&self) -> Vec<String> {
        self.tasks().iter().map(|t| t["id"].as_str().unwrap_or_default().to_string()).collect()
    }

    /// Checks the sorted list of tasks that ran.
    #[track_caller]
    pub fn assert_ran(&self, expected: &[&str]) -> &Output {
        let mut e: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        e.sort();
        assert_eq!(self.ran(), e, "the tasks that ran differ\n{}", self.describe());
        self
    }

    /// One task of a `--output json` build, by id.
    #[track_caller]
    pub fn task(&self, id: &str) -> Value {
        self.tasks().into_iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("no task {id}\n{}", self.describe()))
    }

    #[track_caller]
    pub fn assert_task(&self, id: &str, status: &str, reason: Option<&str>) -> &Output {
        let t = self.task(id);
        assert_eq!(t["status"], status, "status of {id}\n{}", self.describe());
        let want = reason.map_or(Value::Null, |r| Value::String(r.to_string()));
        assert_eq!(t["reason"], want, "reason of {id}\n{}", self.describe());
        self
    }

    /// Non-empty lines of stdout.
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| !l.trim().is_empty()).collect()
    }
}

/// The seed of the property tests (proptest) unless `PROPTEST_RNG_SEED` is set.
pub const PROPTEST_SEED: u64 = 0x5eed_f1a5;

/// The configuration of a property test: `cases` cases generated from [`PROPTEST_SEED`], so
/// that a failure in CI reproduces anywhere; proptest's own `PROPTEST_CASES` and
/// `PROPTEST_RNG_SEED` override them (docs/testing.md has the command for 1,000 cases).
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let env = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { env.cases } else { cases },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            env.rng_seed
        } else {
            RngSeed::Fixed(PROPTEST_SEED)
        },
        failure_persistence: None,
        ..env
    }
}

/// Build the args for `flux build … --output json`.
pub fn json_build<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["build"];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--output", "json"]);
    v
}

/// The canonical form of a path (for comparing with what flux prints).
pub fn canon(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// What a task printed, from its log: the log without the `$ command` header lines flux
/// writes before each command (and their `> ` continuation lines).
pub fn printed(log: &str) -> String {
    log.split_inclusive('\n').filter(|l| !l.starts_with("$ ") && !l.starts_with("> ")).collect()
}
