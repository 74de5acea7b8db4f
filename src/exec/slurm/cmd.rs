//! The Slurm commands as flux runs them, and the files it writes for a job: the wrapper
//! script, the exit file beside the log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::super::Job;

/// The Slurm job name of a run's jobs: `flux-<run-id>-<project>`, where `<project>` is 8
/// hex digits of the state folder's path, so that runs of two projects with the same run
/// id never share a name (`scancel --name` of one would cancel the other's jobs).
pub fn job_name(run_id: i64, state: &Path) -> String {
    let h = blake3::hash(state.as_os_str().as_encoded_bytes()).to_hex();
    format!("flux-{run_id}-{}", &h[..8])
}

/// The exit file of a job: next to its log.
pub(super) fn exit_file(log: &Path) -> PathBuf {
    log.with_extension("exit")
}

/// How long a Slurm command may take before it is killed and counted as failed, unless
/// `[slurm] command_timeout` says otherwise.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Run a Slurm command: its stdout, or what went wrong (also when it takes longer than
/// [`COMMAND_TIMEOUT`]: a busy controller must not hang the build).
pub(super) fn run(cmd: &mut Command) -> Result<String, String> {
    run_within(cmd, COMMAND_TIMEOUT)
}

/// [`run`], killing the command after `limit`.
pub(super) fn run_within(cmd: &mut Command, limit: Duration) -> Result<String, String> {
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
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{name}` did not answer within {limit:?}"));
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

pub(super) fn append(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// `s` as one shell word.
pub(super) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The header the log shows before command `i` runs (as the local executor writes it).
pub(super) fn header(job: &Job, i: usize) -> String {
    let cmd = job.commands.get(i).map_or("", String::as_str);
    let header = job.headers.as_ref().and_then(|h| h.get(i)).map_or(cmd, String::as_str);
    let mut h = String::new();
    for (n, line) in header.lines().enumerate() {
        h.push_str(if n == 0 { "$ " } else { "> " });
        h.push_str(line);
        h.push('\n');
    }
    if h.is_empty() {
        h.push_str("$ \n");
    }
    h
}

/// The wrapper script: each command's header (as the local executor's log shows it) and
/// the command through `sh -c` with the job's env, stopping at the first failure; the
/// exit code goes to `exit` through a temporary file and a rename.
pub(super) fn wrapper(job: &Job, exit: &Path) -> String {
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
        let h = header(job, i);
        s.push_str(&format!("printf '%s' {}\n", quote(&h)));
        s.push_str(&format!("{env} /bin/sh -c {} </dev/null || flux_exit $?\n", quote(cmd)));
    }
    s.push_str("flux_exit 0\n");
    s
}
