//! `generate` commands (SPEC §2.3): a command whose stdout is Fluxfile TOML.
//!
//! The command runs as `sh -c CMD` in the Fluxfile's folder, in a process group of its own,
//! with `/dev/null` as stdin. Its stdout and stderr go to unlinked temporary files, not
//! pipes, so flux waits for the command itself and never for a background child that
//! inherited them (`sh -c 'daemon & cat gen.toml'` returns as soon as `cat` is done). The
//! stderr it wrote is copied to flux's stderr when it ends. A command that runs longer
//! than `generate_timeout`, or prints more than [`MAX_OUTPUT`], has its process group
//! terminated (TERM, then KILL a second later).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Span};

/// The most a generator may print (its stdout is parsed as one TOML document).
pub const MAX_OUTPUT: u64 = 64 << 20;

/// Time between TERM and KILL when a generator is stopped.
const GRACE: Duration = Duration::from_secs(1);

/// Why a generator gave no Fluxfile text.
#[derive(Debug)]
pub enum GenError {
    Spawn(std::io::Error),
    Failed(ExitStatus),
    TimedOut(Duration),
    TooLarge,
}

impl GenError {
    /// The error for the Fluxfile, pointing at the `generate` entry.
    pub fn into_error(self, cmd: &str, span: &Span) -> Error {
        match self {
            GenError::Spawn(e) => Error::at(format!("cannot run generator `{cmd}`: {e}"), span),
            GenError::Failed(status) => Error::at_help(
                format!("generator `{cmd}` failed ({status})"),
                span,
                "run the command by hand to see why; its stdout must be Fluxfile TOML",
            ),
            GenError::TimedOut(limit) => Error::at_help(
                format!(
                    "generator `{cmd}` ran longer than its timeout ({}) and was stopped (its process group was killed)",
                    seconds(limit)
                ),
                span,
                "make the command faster, or raise `generate_timeout` in [flux] (e.g. generate_timeout = \"5m\")",
            ),
            GenError::TooLarge => Error::at_help(
                format!("generator `{cmd}` printed more than {} MiB and was stopped", MAX_OUTPUT >> 20),
                span,
                "a generator prints Fluxfile TOML on stdout; send anything else to stderr or a file",
            ),
        }
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{:.3}s", d.as_secs_f64()) }
}

/// Run one generator and return what it printed on stdout.
pub fn run(cmd: &str, dir: &Path, timeout: Duration) -> Result<Vec<u8>, GenError> {
    let mut out = scratch().map_err(GenError::Spawn)?;
    let mut err = scratch().map_err(GenError::Spawn)?;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(GenError::Spawn)?)
        .stderr(err.try_clone().map_err(GenError::Spawn)?)
        .process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent; it makes
    // the generator die with flux if flux is killed while it waits.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(GenError::Spawn)?;
    let pgid = child.id() as i32;
    let started = Instant::now();
    let mut nap = Duration::from_millis(1);
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(GenError::Spawn(e)),
        }
        if started.elapsed() >= timeout {
            break Err(GenError::TimedOut(timeout));
        }
        if out.metadata().map_or(0, |m| m.len()) > MAX_OUTPUT {
            break Err(GenError::TooLarge);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    let status = match outcome {
        Ok(status) => status,
        Err(e) => {
            stop(&mut child, pgid);
            relay(&mut err);
            return Err(e);
        }
    };
    relay(&mut err);
    if !status.success() {
        return Err(GenError::Failed(status));
    }
    // What a background child writes later is not part of the output.
    let len = out.metadata().map_or(0, |m| m.len());
    if len > MAX_OUTPUT {
        return Err(GenError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(len as usize);
    out.seek(SeekFrom::Start(0)).map_err(GenError::Spawn)?;
    (&mut out).take(len).read_to_end(&mut bytes).map_err(GenError::Spawn)?;
    Ok(bytes)
}

/// Terminate the generator's process group: TERM, then KILL after [`GRACE`].
fn stop(child: &mut std::process::Child, pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group; no memory is touched.
    unsafe {
        libc::kill(-pgid, libc::SIGTERM);
    }
    let t = Instant::now();
    while t.elapsed() < GRACE {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Background children that ignore TERM go too.
    // SAFETY: as above.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Copy what the generator wrote on stderr (so far) to flux's stderr, at most 1 MiB of it.
fn relay(err: &mut File) {
    let mut buf = Vec::new();
    if err.seek(SeekFrom::Start(0)).is_ok() && err.take(1 << 20).read_to_end(&mut buf).is_ok() && !buf.is_empty() {
        let _ = std::io::stderr().write_all(&buf);
    }
}

/// An anonymous temporary file: created in the temporary folder and unlinked at once, so
/// nothing is left behind whatever happens to flux.
fn scratch() -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir();
    loop {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = dir.join(format!(".flux-generate-{}-{n}-{nanos}", std::process::id()));
        match std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path) {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}
