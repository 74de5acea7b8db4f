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
//! (or a folder inside it, see [`Test::current_dir`]), and is checked for panics.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// The binary under test.
pub const FLUX: &str = env!("CARGO_BIN_EXE_flux");

/// A run that takes longer than this is killed and fails the test.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The exit status recorded for a run the test had to kill.
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
    pub fn run(&self) -> Output {
        let args = self.args.clone();
        self.run_args(args)
    }

    /// Run with these arguments, keeping the folder for more runs.
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
        cmd
    }

    /// Start flux without waiting for it (for signals and concurrent runs); collect it
    /// with [`Test::finish`].
    pub fn spawn_args<I, S>(&self, args: I) -> Running
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let started = Instant::now();
        let mut child = self.command(&args).spawn().expect("start flux");
        if let (Some(bytes), Some(mut pipe)) = (self.stdin.clone(), child.stdin.take()) {
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
        Running { args, child, started, stdout, stderr }
    }

    /// Wait for a flux started by [`Test::spawn_args`] (failing the test after a minute) and
    /// check that it did not panic.
    pub fn finish(&self, running: Running) -> Output {
        let o = self.finish_within(running, RUN_TIMEOUT);
        assert!(o.status != KILLED, "flux did not finish within {RUN_TIMEOUT:?}\n{}", o.describe());
        o
    }

    /// Run, but kill flux after `limit`: the output then has status [`KILLED`] (for tests
    /// of things that must be quick, so that they fail quickly).
    pub fn run_args_within<I, S>(&self, args: I, limit: Duration) -> Output
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.finish_within(self.spawn_args(args), limit)
    }

    fn finish_within(&self, running: Running, limit: Duration) -> Output {
        let Running { args, mut child, started, stdout, stderr } = running;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for flux") {
                break Some(s);
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let elapsed = started.elapsed();
        let stdout = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
        let mut stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
        let code = match status {
            None => {
                stderr.push_str(&format!("\n(the test killed flux after {limit:?})"));
                KILLED
            }
            Some(s) => s.code().unwrap_or_else(|| panic!("flux {args:?} was killed by a signal: {s:?}\n{stderr}")),
        };
        let o = Output { args, status: code, stdout, stderr, elapsed };
        assert!(
            !o.stderr.contains("panicked") && !o.stderr.contains("RUST_BACKTRACE"),
            "flux panicked\n{}",
            o.describe()
        );
        o
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

/// A flux process started by [`Test::spawn_args`].
pub struct Running {
    args: Vec<OsString>,
    pub child: std::process::Child,
    started: Instant,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

impl Running {
    /// Send a signal (by name, e.g. `INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().expect("run kill");
        assert!(ok.success(), "kill -{sig} failed");
    }
}

/// What one run of flux did.
#[derive(Debug, Clone)]
pub struct Output {
    pub args: Vec<OsString>,
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
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
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn stderr_lacks(&self, needle: &str) -> &Output {
        assert!(!self.stderr.contains(needle), "stderr has {needle:?}\n{}", self.describe());
        self
    }

    /// The whole of stderr, exactly (used for rendered errors).
    #[track_caller]
    pub fn stderr_is(&self, expected: &str) -> &Output {
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
