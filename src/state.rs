//! The state database (SPEC §8): `<state>/state.db`, SQLite in WAL mode.
//!
//! This is the only module of flux that speaks SQL. It keeps
//!
//! - `runs`: one row per `flux build` (or scheduler tick);
//! - `attempts`: one row per execution of a task inside a run;
//! - `tasks`: what flux remembers of a task across runs, above all the fingerprint parts
//!   (command hash, inputs hash) of its last success (SPEC §5);
//! - `digests`: the digest cache, keyed by path, validated by (size, mtime, inode);
//! - `leases`: claims of concurrent flux processes on tasks (SPEC §6; no API yet).
//!
//! The schema is created and upgraded by `MIGRATIONS`, keyed on `PRAGMA user_version`
//! (the number of migrations applied). A database written by a newer flux is refused
//! with [`StateError::TooNew`] and never modified.
//!
//! Speed: a build loads the task records with one statement ([`StateDb::load_tasks`])
//! and looks digests up one at a time, only for the tasks that need one
//! ([`StateDb::digest_entry`]); writes are grouped in a [`Batch`] and written in one
//! transaction per [`StateDb::commit`].

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

mod recovery;
mod sched;

use recovery::write_attempt_facts;
pub use recovery::{AttemptFact, DeadAttempt, DeadRun};
pub use sched::{Interval, SchedStep, SchedulerHolder, now_secs};

/// A blake3 digest.
pub type Hash = [u8; 32];

/// A digest in lower-case hex (64 characters), as the state DB's text columns and the
/// run's start file keep it.
pub fn hex(h: &Hash) -> String {
    let mut out = String::with_capacity(64);
    hex_into(h, &mut out);
    out
}

/// [`hex`], appended to `out`.
pub fn hex_into(h: &Hash, out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in h {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// Task records by task id (FxHash: ids are not attacker-chosen, and there can be a million).
pub type Records = HashMap<String, TaskRecord, rustc_hash::FxBuildHasher>;

/// File name of the database inside the state folder.
pub const DB_FILE: &str = "state.db";

/// How long SQLite itself waits for another connection's lock before a statement fails
/// with BUSY (ordinary contention between builds ends well within it); [`wait_busy`] then
/// says so once on stderr and tries again, with pauses, up to the busy limit.
const BUSY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long, in all, flux waits for a lock another process holds on the state DB before
/// the write counts as failed (SPEC §8). `FLUX_DB_BUSY_LIMIT` (seconds) overrides it, for
/// tests (see [`set_busy_limit`]).
pub const DEFAULT_BUSY_LIMIT: Duration = Duration::from_secs(60);

static BUSY_LIMIT_MS: AtomicU64 = AtomicU64::new(DEFAULT_BUSY_LIMIT.as_millis() as u64);
/// Who is told that flux waits for the state DB (set by `cli`; this module never prints).
static ON_WAIT: OnceLock<fn(&str)> = OnceLock::new();
/// The wait was announced already (once per process).
static WAIT_SAID: AtomicBool = AtomicBool::new(false);

/// Set how long, in all, a statement waits for another process's lock.
pub fn set_busy_limit(limit: Duration) {
    BUSY_LIMIT_MS.store(limit.as_millis().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
}

/// How long, in all, a statement waits for another process's lock.
pub fn busy_limit() -> Duration {
    Duration::from_millis(BUSY_LIMIT_MS.load(Ordering::Relaxed))
}

/// Who to tell, once, that flux is waiting for a lock on the state DB.
pub fn on_wait(notify: fn(&str)) {
    let _ = ON_WAIT.set(notify);
}

/// Run `f` until it does not fail with BUSY, or the busy limit has passed since the first
/// try: SQLite waits up to [`BUSY_TIMEOUT`] inside each try, and this adds pauses that
/// double from 50 ms to 2 s between tries. The first BUSY is announced (once per
/// process). `f` must leave nothing changed when it fails (a transaction rolled back).
fn wait_busy<T>(path: &Path, mut f: impl FnMut() -> Result<T, StateError>) -> Result<T, StateError> {
    let limit = busy_limit();
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match f() {
            Err(StateError::Busy { message, .. }) => {
                if !WAIT_SAID.swap(true, Ordering::Relaxed)
                    && let Some(notify) = ON_WAIT.get()
                {
                    notify(&format!(
                        "waiting for the state DB {}: locked by another process (up to {})",
                        path.display(),
                        seconds(limit)
                    ));
                }
                let waited = start.elapsed();
                if waited >= limit {
                    return Err(StateError::Busy {
                        path: path.display().to_string(),
                        message: format!("locked by another process for more than {} ({message})", seconds(limit)),
                    });
                }
                std::thread::sleep(pause.min(limit - waited));
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// `60 s`, `2.5 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{} s", d.as_secs()) } else { format!("{:.1} s", d.as_secs_f64()) }
}

/// The busy timeout for one connection: [`BUSY_TIMEOUT`], or half the limit if shorter.
fn connection_busy_timeout() -> Duration {
    BUSY_TIMEOUT.min(busy_limit() / 2)
}

/// Schema migrations, applied in order; `PRAGMA user_version` = number applied.
/// Never edit a migration that has shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        started_at  REAL NOT NULL,
        ended_at    REAL,
        status      TEXT NOT NULL,
        command     TEXT NOT NULL,
        pid         INTEGER,
        host        TEXT
    );

    CREATE TABLE attempts (
        id          INTEGER PRIMARY KEY,
        run_id      INTEGER NOT NULL,
        task_id     TEXT NOT NULL,
        step        TEXT NOT NULL,
        params_json TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        status      TEXT NOT NULL,
        reason      TEXT,
        started_at  REAL NOT NULL,
        ended_at    REAL,
        exit_code   INTEGER,
        log_path    TEXT,
        error       TEXT,
        job_id      TEXT
    );
    CREATE INDEX attempts_task ON attempts(task_id);
    CREATE UNIQUE INDEX attempts_run ON attempts(run_id, task_id, attempt);
    CREATE INDEX attempts_step ON attempts(step, id);

    CREATE TABLE tasks (
        task_id     TEXT PRIMARY KEY NOT NULL,
        last_status TEXT NOT NULL,
        cmd_hash    BLOB,
        inputs_hash BLOB,
        success_at  REAL,
        duration_s  REAL,
        forced      INTEGER NOT NULL DEFAULT 0,
        quick_key   BLOB,
        verified_ns INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;

    CREATE TABLE digests (
        path         TEXT PRIMARY KEY NOT NULL,
        size         INTEGER NOT NULL,
        mtime_ns     INTEGER NOT NULL,
        inode        INTEGER NOT NULL,
        digest       BLOB NOT NULL,
        hashed_at_ns INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE leases (
        task_id      TEXT PRIMARY KEY NOT NULL,
        holder       TEXT,
        pid          INTEGER,
        host         TEXT,
        heartbeat_at REAL,
        run_id       INTEGER
    ) WITHOUT ROWID;
    "#,
    // 2: what a run was (`build`, `mark`); the rendered commands and per-input digests of
    // successful (and marked) attempts, for `--explain`.
    r#"
    ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'build';
    ALTER TABLE attempts ADD COLUMN commands TEXT;
    ALTER TABLE attempts ADD COLUMN inputs_json TEXT;
    "#,
    // 3: what the next build needs after flux died (SPEC §5, §8): each attempt's process
    // group and its leader's start time (clock ticks since boot, /proc/<pid>/stat field
    // 22), and the fingerprint the attempt was started for; open runs found by index.
    r#"
    ALTER TABLE attempts ADD COLUMN pgid INTEGER;
    ALTER TABLE attempts ADD COLUMN pgid_start INTEGER;
    ALTER TABLE attempts ADD COLUMN expect_cmd_hash BLOB;
    ALTER TABLE attempts ADD COLUMN expect_inputs_hash BLOB;
    CREATE INDEX runs_open ON runs(id) WHERE ended_at IS NULL;
    "#,
    // 4: the scheduler (SPEC §10) (its runs are of kind `schedule`), per-step watermarks, the
    // intervals it made due (with their SLA deadlines and misses), its lease.
    r#"
    CREATE TABLE sched_steps (
        step         TEXT PRIMARY KEY NOT NULL,
        through      TEXT,
        evaluated_at REAL NOT NULL,
        first_seen   REAL NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE sched_intervals (
        step          TEXT NOT NULL,
        value         TEXT NOT NULL,
        due_at        REAL NOT NULL,
        deadline      REAL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        done_at       REAL,
        sla_missed_at REAL,
        PRIMARY KEY (step, value)
    ) WITHOUT ROWID;
    CREATE INDEX sched_intervals_open ON sched_intervals(step, done_at);

    CREATE TABLE scheduler (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        holder       TEXT NOT NULL,
        pid          INTEGER NOT NULL,
        host         TEXT NOT NULL,
        started_at   REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    "#,
];

/// The schema version this flux writes: the number of migrations.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Persisted task statuses (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Queued,
    Waiting,
    Running,
    Retrying,
    Success,
    Failed,
    UpstreamFailed,
    Skipped,
    Interrupted,
    /// Accepted as done by `flux mark`.
    Marked,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 10] = [
        Status::Queued,
        Status::Waiting,
        Status::Running,
        Status::Retrying,
        Status::Success,
        Status::Failed,
        Status::UpstreamFailed,
        Status::Skipped,
        Status::Interrupted,
        Status::Marked,
    ];

    /// The name stored in the database and shown to users (`upstream_failed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Waiting => "waiting",
            Status::Running => "running",
            Status::Retrying => "retrying",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::UpstreamFailed => "upstream_failed",
            Status::Skipped => "skipped",
            Status::Interrupted => "interrupted",
            Status::Marked => "marked",
        }
    }

    /// Inverse of [`Status::as_str`].
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "queued" => Status::Queued,
            "waiting" => Status::Waiting,
            "running" => Status::Running,
            "retrying" => Status::Retrying,
            "success" => Status::Success,
            "failed" => Status::Failed,
            "upstream_failed" => Status::UpstreamFailed,
            "skipped" => Status::Skipped,
            "interrupted" => Status::Interrupted,
            "marked" => Status::Marked,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {message}")]
    Sql { path: String, message: String },
    #[error(
        "state database {path} was written by a newer flux (schema {found}; this flux knows up to {supported}): upgrade flux, or point `state` at another folder"
    )]
    TooNew { path: String, found: i64, supported: i64 },
    #[error("cannot create state folder {path}: {message}")]
    Io { path: String, message: String },
    /// Another connection holds a lock (SQLITE_BUSY or SQLITE_LOCKED).
    #[error("state database {path}: {message}")]
    Busy { path: String, message: String },
    /// The state folder or database is something flux cannot use: not a folder, not a
    /// file, not a flux database, damaged.
    #[error("state database {path}: {message}")]
    Unusable { path: String, message: String },
}

/// What flux remembers of a task across runs (one row per task id).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Status of the last finished attempt (success, failed, interrupted...);
    /// `queued` for a row created by `flux clear` of a task never seen before.
    pub last_status: Status,
    /// Fingerprint parts of the LAST SUCCESS (kept when later attempts fail).
    /// `None` after `flux clear`, or when the stored blob is not 32 bytes.
    pub cmd_hash: Option<Hash>,
    pub inputs_hash: Option<Hash>,
    /// Unix seconds of the last success (or of the adoption).
    pub success_at: Option<f64>,
    /// Duration of the last success (critical-path estimates); `None` when adopted.
    pub duration_s: Option<f64>,
    /// Set by `flux clear` ([`TaskUpdate::Clear`]); reset by the next success.
    pub forced: bool,
    /// A digest of the inputs' stats and of what the commands are rendered from, as they
    /// were when the fingerprint was last confirmed ([`TaskUpdate::Quick`]); lets a no-op
    /// build skip fingerprinting. Cleared by every other update of the fingerprint.
    pub quick_key: Option<Hash>,
    /// When those stats were taken (ns since the epoch), for the racy-git rule.
    pub verified_ns: i64,
}

/// The digest cache: (path) -> what the file looked like when it was hashed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CachedDigest {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub digest: Hash,
    pub hashed_at_ns: i64,
}

/// One attempt of a task, as written by the engine.
///
/// Attempts are keyed by `(run_id, task_id, attempt)`: committing the same key again
/// updates the row (so an attempt may be recorded `running`, then finished).
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub run_id: i64,
    pub task_id: String,
    pub step: String,
    pub params_json: String,
    pub attempt: u32,
    pub status: Status,
    pub reason: Option<String>,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    pub exit_code: Option<i32>,
    pub log_path: Option<String>,
    pub error: Option<String>,
    /// For a successful or marked attempt: what it ran and read, for `flux why` (its
    /// commands rendered with the final targets, `--var` values redacted, and each
    /// input's digest). A later write of the same attempt without them keeps them.
    pub commands: Option<String>,
    pub inputs_json: Option<String>,
    /// Facts known while its record waits unwritten (else written as [`AttemptFact`]s):
    /// its process group and the leader's start time, and the fingerprint it was started
    /// for. A later write without them keeps them.
    pub group: Option<(i32, u64)>,
    pub expect: Option<(Hash, Hash)>,
}

/// An attempt as read back, with its row id.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub id: i64,
    pub run_id: i64,
    pub task_id: String,
    pub step: String,
    pub params_json: String,
    pub attempt: u32,
    pub status: Status,
    pub reason: Option<String>,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    pub exit_code: Option<i32>,
    pub log_path: Option<String>,
    pub error: Option<String>,
    /// The executor's job id (Slurm's), if it gave one.
    pub job_id: Option<String>,
}

/// A run as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    pub status: String,
    pub command: String,
}

/// A change to a task's record, applied in order by [`StateDb::commit`].
#[derive(Debug, Clone, PartialEq)]
pub enum TaskUpdate {
    /// A successful attempt: store the fingerprint, last_status = success, success_at =
    /// commit time, forced = false.
    Success { task_id: String, cmd_hash: Hash, inputs_hash: Hash, duration_s: f64 },
    /// Outputs found on disk with no record (adopted, SPEC §5): store the fingerprint
    /// like a success with duration NULL, unless a row exists (then nothing changes).
    Adopt { task_id: String, cmd_hash: Hash, inputs_hash: Hash },
    /// A failed or interrupted attempt: set last_status only; keep the stored fingerprint.
    Status { task_id: String, status: Status },
    /// `flux clear`: drop the fingerprint and set `forced`, so the next build reruns it.
    /// Creates a row (last_status = queued) when none exists, so a later Adopt cannot
    /// undo the clear. Keeps last_status, success_at and duration_s of an existing row.
    Clear { task_id: String },
    /// The fingerprint was confirmed for these input stats and command sources: store the
    /// quick key (the row must exist; apply after the Success or Adopt that made it).
    Quick { task_id: String, key: Hash, verified_ns: i64 },
    /// `flux mark`: store the fingerprint like a success (last_status = marked,
    /// success_at = commit time, forced = false), keeping duration_s.
    Mark { task_id: String, cmd_hash: Hash, inputs_hash: Hash },
}

/// Writes to apply together in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub attempts: Vec<AttemptRecord>,
    pub tasks: Vec<TaskUpdate>,
    pub digests: Vec<(String, CachedDigest)>,
    /// Leases to give back (task ids held by this process's [`Holder`]), in the same
    /// transaction as the records of those tasks.
    pub releases: Vec<String>,
    /// Facts about attempts written in this batch or earlier (process groups, expected
    /// fingerprints), applied after `attempts`.
    pub attempt_facts: Vec<AttemptFact>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
            && self.tasks.is_empty()
            && self.digests.is_empty()
            && self.releases.is_empty()
            && self.attempt_facts.is_empty()
    }

    pub fn len(&self) -> usize {
        self.attempts.len() + self.tasks.len() + self.digests.len() + self.releases.len() + self.attempt_facts.len()
    }
}

/// The details of a task's last successful or marked attempt that has them.
#[derive(Debug, Clone, PartialEq)]
pub struct LastSuccess {
    pub run_id: i64,
    pub status: Status,
    pub ended_at: Option<f64>,
    pub commands: String,
    pub inputs_json: String,
}

/// A connection to `<state>/state.db`.
/// This process, as the holder of task leases.
#[derive(Debug, Clone)]
pub struct Holder {
    /// Unique per process and run: `host:pid:start-time`.
    pub id: String,
    pub pid: u32,
    pub host: String,
}

impl Holder {
    pub fn this_process() -> Holder {
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let pid = std::process::id();
        Holder { id: format!("{host}:{pid}:{}", now_s()), pid, host }
    }
}

/// The answer to a claim of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The lease is ours.
    pub mine: bool,
    /// When the task last succeeded, read under the lease (None if never, or not ours).
    pub success_at: Option<f64>,
    /// The task's last attempt failed in another run and was recorded after this
    /// connection loaded the task records ([`StateDb::load_tasks`]): that run's id and
    /// its error. Read under the lease, so the task is not run a second time.
    pub failed_in: Option<(i64, Option<String>)>,
    /// The lease was another holder's, dead or silent, and is ours now: what that holder
    /// left running must be ended before the task runs again (SPEC §5).
    pub taken_over: bool,
}

/// A row of the leases table.
struct Lease {
    holder: String,
    pid: i64,
    host: String,
    heartbeat_at: f64,
}

impl Lease {
    /// From `SELECT holder, pid, host, heartbeat_at`.
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Lease> {
        Ok(Lease {
            holder: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
            pid: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
            host: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            heartbeat_at: r.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
        })
    }

    /// Held by a live process other than `me`: not ours, heard of within `stale_after`,
    /// and (on this host) its pid still exists.
    fn held_by_other(&self, me: &Holder, now: f64, stale_after: f64) -> bool {
        self.holder != me.id && now - self.heartbeat_at <= stale_after && (self.host != me.host || pid_alive(self.pid))
    }
}

/// Whether a process with this pid exists on this machine.
pub(crate) fn pid_alive(pid: i64) -> bool {
    if pid <= 0 || pid > i64::from(i32::MAX) {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn task_record_at(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        last_status: status_at(row, 2)?,
        cmd_hash: hash_at(row, 3)?,
        inputs_hash: hash_at(row, 4)?,
        success_at: row.get(5)?,
        duration_s: row.get(6)?,
        forced: row.get::<_, i64>(7)? != 0,
        quick_key: hash_at(row, 8)?,
        verified_ns: row.get(9)?,
    })
}

pub struct StateDb {
    conn: Connection,
    path: PathBuf,
    holder: Option<Holder>,
    /// Opened for writing (`open`), so it may checkpoint the log when it closes.
    writable: bool,
    /// The highest attempt row id when [`StateDb::load_tasks`] read the records: a failed
    /// attempt above it was recorded by another process since (see [`Claim::failed_in`]).
    attempts_seen: Cell<i64>,
}

/// Past this size the write-ahead log is folded into the database when a writer closes.
/// Every new process rebuilds SQLite's index of the log by reading all of it (about 1 ms
/// per 250 frames), so a long log taxes every later command, while keeping a short one
/// spares a small no-op the fsyncs of a checkpoint.
const WAL_FOLD_BYTES: u64 = 512 * 1024;

impl Drop for StateDb {
    fn drop(&mut self) {
        if !self.writable {
            return;
        }
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_FOLD_BYTES) {
            // Never wait for a reader: with one active the log simply stays until later.
            let _ = self.conn.busy_timeout(Duration::ZERO);
            let _ = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
}

impl fmt::Debug for StateDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateDb").field("path", &self.path).finish()
    }
}

/// Attaches the database path to rusqlite errors.
trait SqlContext<T> {
    fn at(self, path: &Path) -> Result<T, StateError>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn at(self, path: &Path) -> Result<T, StateError> {
        self.map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StateError::Busy { path: path.display().to_string(), message: e.to_string() }
            }
            _ => sql_error(path, e.to_string()),
        })
    }
}

fn unusable(path: &Path, message: impl Into<String>) -> StateError {
    StateError::Unusable { path: path.display().to_string(), message: message.into() }
}

fn sql_error(path: &Path, message: impl Into<String>) -> StateError {
    StateError::Sql { path: path.display().to_string(), message: message.into() }
}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The host name, if it can be read without a system call crate.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
}

/// A 32-byte blob as a hash; anything else (NULL, wrong length, other type) is `None`.
fn hash_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Hash>> {
    Ok(match row.get_ref(idx)? {
        ValueRef::Blob(b) => Hash::try_from(b).ok(),
        _ => None,
    })
}

/// A status column; an unknown name is an error naming the value.
fn status_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Status> {
    // Borrowed, not copied: this runs for every row of `load_tasks`.
    let s = row.get_ref(idx)?.as_str()?;
    Status::parse(s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("unknown task status {s:?}").into(),
        )
    })
}

fn int_at<T: TryFrom<i64>>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let v: i64 = row.get(idx)?;
    T::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v))
}

fn opt_int_at<T: TryFrom<i64>>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(v) => T::try_from(v).map(Some).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v)),
    }
}

/// Clamps a row limit to what SQLite takes.
fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The columns size, mtime_ns, inode, digest, hashed_at_ns from `first` on; `None` when
/// the digest is not a 32-byte blob.
fn cached_digest_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Option<CachedDigest>> {
    let Some(digest) = hash_at(row, first + 3)? else {
        return Ok(None);
    };
    Ok(Some(CachedDigest {
        // Stored as the same 64 bits (SQLite integers are signed).
        size: row.get::<_, i64>(first)? as u64,
        mtime_ns: row.get(first + 1)?,
        inode: row.get::<_, i64>(first + 2)? as u64,
        digest,
        hashed_at_ns: row.get(first + 4)?,
    }))
}

/// The `(SELECT count(*) ...)` column of a load query, as a capacity hint.
fn capacity_hint(row: &Row<'_>) -> usize {
    row.get::<_, i64>(0).ok().and_then(|n| usize::try_from(n).ok()).unwrap_or(0)
}

const ATTEMPT_COLUMNS: &str = "id, run_id, task_id, step, params_json, attempt, status, reason, \
     started_at, ended_at, exit_code, log_path, error, job_id";

fn attempt_row(row: &Row<'_>) -> rusqlite::Result<AttemptRow> {
    Ok(AttemptRow {
        id: row.get(0)?,
        run_id: row.get(1)?,
        task_id: row.get(2)?,
        step: row.get(3)?,
        params_json: row.get(4)?,
        attempt: int_at(row, 5)?,
        status: status_at(row, 6)?,
        reason: row.get(7)?,
        started_at: row.get(8)?,
        ended_at: row.get(9)?,
        exit_code: opt_int_at(row, 10)?,
        log_path: row.get(11)?,
        error: row.get(12)?,
        job_id: row.get(13)?,
    })
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

impl StateDb {
    /// Create the folder (and parents) and the DB if needed, migrate.
    pub fn open(state_dir: &Path) -> Result<StateDb, StateError> {
        // Two flux processes creating one database at the same moment: switching it to
        // WAL takes an exclusive lock, and SQLite may answer BUSY there without waiting
        // on the busy handler; so the whole open is tried again for a while.
        wait_busy(&state_dir.join(DB_FILE), || Self::open_once(state_dir))
    }

    fn open_once(state_dir: &Path) -> Result<StateDb, StateError> {
        let path = state_dir.join(DB_FILE);
        if state_dir.exists() && !state_dir.is_dir() {
            return Err(unusable(&path, format!("{} is not a folder: move it away", state_dir.display())));
        }
        std::fs::create_dir_all(state_dir)
            .map_err(|e| StateError::Io { path: state_dir.display().to_string(), message: e.to_string() })?;
        check_is_file(&path)?;
        let mut conn = Connection::open(&path).at(&path)?;
        conn.busy_timeout(connection_busy_timeout()).at(&path)?;
        // Refuse a newer schema, or another program's database, before anything writes
        // to the file (setting the journal mode rewrites the header).
        let (version, tables) = schema(&conn, &path)?;
        if version == 0 {
            check_unversioned(&path, &tables)?;
        } else {
            check_flux_tables(&path, version, &tables)?;
        }
        // Not every file system supports WAL; SQLite then keeps its rollback journal,
        // which is slower under concurrency but correct, so the answer is not checked.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).at(&path)?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;").at(&path)?;
        // Keep the write-ahead log when the connection closes: checkpointing and deleting
        // it on close, then re-creating it on the next open, costs fsyncs every build
        // (~6 ms, the larger part of a small no-op). `Drop` folds it once it is long.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).at(&path)?;
        conn.set_prepared_statement_cache_capacity(32);
        migrate(&mut conn, &path)?;
        Ok(StateDb { conn, path, holder: None, writable: true, attempts_seen: Cell::new(0) })
    }

    /// Open only if `state.db` exists, read-only; never creates a file or a folder
    /// (dry runs must write nothing). Still checks TooNew. A database with no schema
    /// yet (an empty file) is `None`, like a missing one. A state folder or database that
    /// exists but cannot be used (not a folder, not a file, another program's database,
    /// a damaged first page) is [`StateError::Unusable`]: commands that only read must
    /// not show it as "nothing recorded".
    ///
    /// `state.db` itself is never written. SQLite may create the `state.db-wal` and
    /// `state.db-shm` companions of a WAL database to read it (when no other connection
    /// has them open), and a read-only connection leaves them behind; the next writer
    /// uses and removes them.
    pub fn open_existing(state_dir: &Path) -> Result<Option<StateDb>, StateError> {
        let path = state_dir.join(DB_FILE);
        wait_busy(&path, || Self::open_existing_once(state_dir))
    }

    fn open_existing_once(state_dir: &Path) -> Result<Option<StateDb>, StateError> {
        let path = state_dir.join(DB_FILE);
        match std::fs::metadata(state_dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unusable(&path, format!("cannot read folder {}: {e}", state_dir.display()))),
            Ok(m) if !m.is_dir() => {
                return Err(unusable(&path, format!("{} is not a folder: move it away", state_dir.display())));
            }
            Ok(_) => {}
        }
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            _ => check_is_file(&path)?,
        }
        let conn =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .at(&path)?;
        conn.busy_timeout(connection_busy_timeout()).at(&path)?;
        let (version, tables) = schema(&conn, &path)?;
        if version == 0 {
            // An empty file, or an empty database: nothing recorded yet.
            check_unversioned(&path, &tables)?;
            return Ok(None);
        }
        // Another program's database says so first, whatever its version.
        check_flux_tables(&path, version, &tables)?;
        if version < SCHEMA_VERSION {
            return Err(sql_error(
                &path,
                format!(
                    "schema {version} is older than this flux's ({SCHEMA_VERSION}) and cannot be \
                     upgraded read-only: run a command that writes state (e.g. `flux build`) first"
                ),
            ));
        }
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Some(StateDb { conn, path, holder: None, writable: false, attempts_seen: Cell::new(0) }))
    }

    /// The database file, `<state>/state.db`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Insert a run row (started_at now, status "running", the command line, pid,
    /// hostname); returns its id.
    pub fn begin_run(&mut self, command: &str) -> Result<i64, StateError> {
        self.begin_run_of_kind(command, "build")
    }

    /// [`StateDb::begin_run`] for a run of another kind (`mark`).
    pub fn begin_run_of_kind(&mut self, command: &str, kind: &str) -> Result<i64, StateError> {
        let path = self.path.clone();
        wait_busy(&path, || self.begin_run_once(command, kind))
    }

    fn begin_run_once(&mut self, command: &str, kind: &str) -> Result<i64, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO runs (started_at, status, command, pid, host, kind) \
                 VALUES (?1, 'running', ?2, ?3, ?4, ?5)",
            )
            .at(&self.path)?;
        stmt.execute(params![now_s(), command, std::process::id(), hostname(), kind]).at(&self.path)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The kind of a run (`build`, `mark`, `schedule`), if it exists.
    pub fn run_kind(&self, run_id: i64) -> Result<Option<String>, StateError> {
        wait_busy(&self.path, || {
            self.conn
                .prepare_cached("SELECT kind FROM runs WHERE id = ?1")
                .at(&self.path)?
                .query_row([run_id], |r| r.get(0))
                .optional()
                .at(&self.path)
        })
    }

    /// The last successful or marked attempt of a task that recorded its commands.
    pub fn last_success(&self, task_id: &str) -> Result<Option<LastSuccess>, StateError> {
        self.conn
            .prepare_cached(
                "SELECT run_id, status, ended_at, commands, inputs_json FROM attempts \
                 WHERE task_id = ?1 AND status IN ('success', 'marked') AND commands IS NOT NULL \
                 ORDER BY id DESC LIMIT 1",
            )
            .at(&self.path)?
            .query_row([task_id], |r| {
                Ok(LastSuccess {
                    run_id: r.get(0)?,
                    status: status_at(r, 1)?,
                    ended_at: r.get(2)?,
                    commands: r.get(3)?,
                    inputs_json: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                })
            })
            .optional()
            .at(&self.path)
    }

    /// Set the end time and final status of a run.
    /// status: "success" | "failed" | "interrupted"
    pub fn end_run(&mut self, run_id: i64, status: &str) -> Result<(), StateError> {
        let path = self.path.clone();
        wait_busy(&path, || self.end_run_once(run_id, status))
    }

    fn end_run_once(&mut self, run_id: i64, status: &str) -> Result<(), StateError> {
        let mut stmt =
            self.conn.prepare_cached("UPDATE runs SET ended_at = ?1, status = ?2 WHERE id = ?3").at(&self.path)?;
        let n = stmt.execute(params![now_s(), status, run_id]).at(&self.path)?;
        if n == 0 {
            return Err(sql_error(&self.path, format!("no run with id {run_id}")));
        }
        Ok(())
    }

    /// Every task record, by task id, in one query.
    /// Also notes the highest attempt id, in the same snapshot (see [`Claim::failed_in`]).
    pub fn load_tasks(&self) -> Result<Records, StateError> {
        wait_busy(&self.path, || {
            let own_tx = self.conn.is_autocommit();
            if own_tx {
                self.conn.execute_batch("BEGIN DEFERRED").at(&self.path)?;
            }
            let seen = self
                .conn
                .query_row("SELECT coalesce(max(id), 0) FROM attempts", [], |r| r.get::<_, i64>(0))
                .at(&self.path);
            let loaded = seen.and_then(|seen| self.load_tasks_once().map(|map| (seen, map)));
            if own_tx {
                let _ = self.conn.execute_batch("COMMIT");
            }
            let (seen, map) = loaded?;
            self.attempts_seen.set(seen);
            Ok(map)
        })
    }

    /// The highest attempt id when the task records were loaded (0 if they never were).
    pub fn attempts_seen(&self) -> i64 {
        self.attempts_seen.get()
    }

    fn load_tasks_once(&self) -> Result<Records, StateError> {
        // The uncorrelated count is evaluated once and sizes the map up front.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT (SELECT count(*) FROM tasks), task_id, last_status, cmd_hash, \
                 inputs_hash, success_at, duration_s, forced, quick_key, verified_ns FROM tasks",
            )
            .at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        let mut map = Records::default();
        while let Some(row) = rows.next().at(&self.path)? {
            if map.capacity() == 0 {
                map.reserve(capacity_hint(row));
            }
            let task_id: String = row.get(1).at(&self.path)?;
            let record = task_record_at(row).at(&self.path)?;
            map.insert(task_id, record);
        }
        Ok(map)
    }

    /// The whole digest cache, by path, in one query. Rows whose digest is not a
    /// 32-byte blob are skipped (the file is re-hashed). Builds look entries up one at a
    /// time ([`StateDb::digest_entry`]); this is for tests that inspect the cache.
    #[cfg(test)]
    pub fn load_digests(&self) -> Result<HashMap<String, CachedDigest>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT (SELECT count(*) FROM digests), path, size, mtime_ns, inode, digest, \
                 hashed_at_ns FROM digests",
            )
            .at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        let mut map = HashMap::new();
        while let Some(row) = rows.next().at(&self.path)? {
            if map.capacity() == 0 {
                map.reserve(capacity_hint(row));
            }
            if let Some(cached) = cached_digest_at(row, 2).at(&self.path)? {
                map.insert(row.get(1).at(&self.path)?, cached);
            }
        }
        Ok(map)
    }

    /// Start a read transaction: the lookups that follow read one snapshot, and keep their
    /// pages cached however often another connection writes (outside a transaction every
    /// statement that follows a write elsewhere starts with an empty page cache).
    pub fn begin_read(&self) -> Result<(), StateError> {
        self.conn.execute_batch("BEGIN DEFERRED").at(&self.path)
    }

    /// End the read transaction of [`StateDb::begin_read`], if one is open.
    pub fn end_read(&self) -> Result<(), StateError> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn.execute_batch("COMMIT").at(&self.path)
    }

    /// One entry of the digest cache (`None` when there is none, or its digest is not a
    /// 32-byte blob): an index lookup, for a build that needs a few entries of many.
    pub fn digest_entry(&self, path: &str) -> Result<Option<CachedDigest>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT size, mtime_ns, inode, digest, hashed_at_ns FROM digests WHERE path = ?1")
            .at(&self.path)?;
        let mut rows = stmt.query([path]).at(&self.path)?;
        match rows.next().at(&self.path)? {
            Some(row) => cached_digest_at(row, 0).at(&self.path),
            None => Ok(None),
        }
    }

    /// Write everything in `batch` in one transaction, then clear it. On error nothing
    /// is written and the batch is left as it was.
    pub fn commit(&mut self, batch: &mut Batch) -> Result<(), StateError> {
        let path = self.path.clone();
        wait_busy(&path, || self.commit_once(batch))
    }

    fn commit_once(&mut self, batch: &mut Batch) -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        // IMMEDIATE takes the write lock up front, so the busy timeout applies (a
        // deferred transaction upgrading to a writer can fail at once with BUSY).
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).at(path)?;
        let now = now_s();

        if !batch.attempts.is_empty() {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO attempts (run_id, task_id, step, params_json, attempt, status, \
                     reason, started_at, ended_at, exit_code, log_path, error, commands, inputs_json, \
                     pgid, pgid_start, expect_cmd_hash, expect_inputs_hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
                     ON CONFLICT (run_id, task_id, attempt) DO UPDATE SET \
                     step = excluded.step, params_json = excluded.params_json, \
                     status = excluded.status, reason = excluded.reason, \
                     started_at = excluded.started_at, ended_at = excluded.ended_at, \
                     exit_code = excluded.exit_code, log_path = excluded.log_path, \
                     error = excluded.error, commands = coalesce(excluded.commands, commands), \
                     inputs_json = coalesce(excluded.inputs_json, inputs_json), \
                     pgid = coalesce(excluded.pgid, pgid), pgid_start = coalesce(excluded.pgid_start, pgid_start), \
                     expect_cmd_hash = coalesce(excluded.expect_cmd_hash, expect_cmd_hash), \
                     expect_inputs_hash = coalesce(excluded.expect_inputs_hash, expect_inputs_hash)",
                )
                .at(path)?;
            for a in &batch.attempts {
                stmt.execute(params![
                    a.run_id,
                    a.task_id,
                    a.step,
                    a.params_json,
                    a.attempt,
                    a.status.as_str(),
                    a.reason,
                    a.started_at,
                    a.ended_at,
                    a.exit_code,
                    a.log_path,
                    a.error,
                    a.commands,
                    a.inputs_json,
                    a.group.map(|g| g.0),
                    a.group.map(|g| g.1 as i64),
                    a.expect.as_ref().map(|e| &e.0),
                    a.expect.as_ref().map(|e| &e.1),
                ])
                .at(path)?;
            }
        }

        if !batch.tasks.is_empty() {
            let mut success = tx
                .prepare_cached(
                    "INSERT INTO tasks (task_id, last_status, cmd_hash, inputs_hash, success_at, \
                     duration_s, forced) VALUES (?1, 'success', ?2, ?3, ?4, ?5, 0) \
                     ON CONFLICT (task_id) DO UPDATE SET last_status = 'success', \
                     cmd_hash = excluded.cmd_hash, inputs_hash = excluded.inputs_hash, \
                     success_at = excluded.success_at, duration_s = excluded.duration_s, \
                     forced = 0, quick_key = NULL",
                )
                .at(path)?;
            let mut adopt = tx
                .prepare_cached(
                    "INSERT INTO tasks (task_id, last_status, cmd_hash, inputs_hash, success_at, \
                     duration_s, forced) VALUES (?1, 'success', ?2, ?3, ?4, NULL, 0) \
                     ON CONFLICT (task_id) DO NOTHING",
                )
                .at(path)?;
            let mut status = tx
                .prepare_cached(
                    "INSERT INTO tasks (task_id, last_status) VALUES (?1, ?2) \
                     ON CONFLICT (task_id) DO UPDATE SET last_status = excluded.last_status",
                )
                .at(path)?;
            let mut clear = tx
                .prepare_cached(
                    "INSERT INTO tasks (task_id, last_status, forced) VALUES (?1, 'queued', 1) \
                     ON CONFLICT (task_id) DO UPDATE SET cmd_hash = NULL, inputs_hash = NULL, \
                     forced = 1, quick_key = NULL",
                )
                .at(path)?;
            let mut quick =
                tx.prepare_cached("UPDATE tasks SET quick_key = ?2, verified_ns = ?3 WHERE task_id = ?1").at(path)?;
            let mut mark = tx
                .prepare_cached(
                    "INSERT INTO tasks (task_id, last_status, cmd_hash, inputs_hash, success_at, forced) \
                     VALUES (?1, 'marked', ?2, ?3, ?4, 0) \
                     ON CONFLICT (task_id) DO UPDATE SET last_status = 'marked', \
                     cmd_hash = excluded.cmd_hash, inputs_hash = excluded.inputs_hash, \
                     success_at = excluded.success_at, forced = 0, quick_key = NULL",
                )
                .at(path)?;
            for update in &batch.tasks {
                match update {
                    TaskUpdate::Success { task_id, cmd_hash, inputs_hash, duration_s } => {
                        success.execute(params![task_id, cmd_hash, inputs_hash, now, duration_s])
                    }
                    TaskUpdate::Adopt { task_id, cmd_hash, inputs_hash } => {
                        adopt.execute(params![task_id, cmd_hash, inputs_hash, now])
                    }
                    TaskUpdate::Status { task_id, status: s } => status.execute(params![task_id, s.as_str()]),
                    TaskUpdate::Clear { task_id } => clear.execute(params![task_id]),
                    TaskUpdate::Quick { task_id, key, verified_ns } => {
                        quick.execute(params![task_id, key, verified_ns])
                    }
                    TaskUpdate::Mark { task_id, cmd_hash, inputs_hash } => {
                        mark.execute(params![task_id, cmd_hash, inputs_hash, now])
                    }
                }
                .at(path)?;
            }
        }

        if !batch.digests.is_empty() {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO digests (path, size, mtime_ns, inode, digest, hashed_at_ns) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (path) DO UPDATE SET size = excluded.size, \
                     mtime_ns = excluded.mtime_ns, inode = excluded.inode, \
                     digest = excluded.digest, hashed_at_ns = excluded.hashed_at_ns",
                )
                .at(path)?;
            for (file, d) in &batch.digests {
                stmt.execute(params![file, d.size as i64, d.mtime_ns, d.inode as i64, d.digest, d.hashed_at_ns,])
                    .at(path)?;
            }
        }

        if !batch.attempt_facts.is_empty() {
            write_attempt_facts(&tx, &batch.attempt_facts).at(path)?;
        }

        if !batch.releases.is_empty() {
            let holder = self.holder.as_ref().map(|h| h.id.clone()).unwrap_or_default();
            let mut stmt = tx.prepare_cached("DELETE FROM leases WHERE task_id = ?1 AND holder = ?2").at(path)?;
            for task in &batch.releases {
                stmt.execute(params![task, holder]).at(path)?;
            }
        }

        tx.commit().at(path)?;
        batch.attempts.clear();
        batch.tasks.clear();
        batch.digests.clear();
        batch.releases.clear();
        batch.attempt_facts.clear();
        Ok(())
    }

    /// Who this process is when it claims tasks (SPEC §6).
    pub fn set_holder(&mut self, holder: Holder) {
        self.holder = Some(holder);
    }

    /// Claim tasks before running them, in one transaction: a task is ours when nobody
    /// holds it, when its holder is this process, or when its holder is dead (same host,
    /// no such pid) or silent for longer than `stale_after`. Returns, per task, whether
    /// it is ours now.
    /// For each task: whether it is ours now and, read in the same transaction, when the
    /// task last succeeded (so a caller can tell if another process completed it since
    /// its records were loaded, without another query).
    pub fn claim(&mut self, tasks: &[&str], run_id: i64, stale_after: f64) -> Result<Vec<Claim>, StateError> {
        let path = self.path.clone();
        wait_busy(&path, || self.claim_once(tasks, run_id, stale_after))
    }

    fn claim_once(&mut self, tasks: &[&str], run_id: i64, stale_after: f64) -> Result<Vec<Claim>, StateError> {
        let path = &self.path;
        let Some(me) = self.holder.clone() else {
            return Err(StateError::Sql { path: path.display().to_string(), message: "claim without a holder".into() });
        };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).at(path)?;
        let now = now_s();
        let mut out = Vec::with_capacity(tasks.len());
        {
            let mut get =
                tx.prepare_cached("SELECT holder, pid, host, heartbeat_at FROM leases WHERE task_id = ?1").at(path)?;
            let mut succeeded =
                tx.prepare_cached("SELECT success_at, last_status FROM tasks WHERE task_id = ?1").at(path)?;
            let mut last_attempt = tx
                .prepare_cached(
                    "SELECT id, run_id, status, error FROM attempts WHERE task_id = ?1 ORDER BY id DESC LIMIT 1",
                )
                .at(path)?;
            let seen = self.attempts_seen.get();
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO leases (task_id, holder, pid, host, heartbeat_at, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (task_id) DO UPDATE SET holder = excluded.holder, pid = excluded.pid, \
                     host = excluded.host, heartbeat_at = excluded.heartbeat_at, run_id = excluded.run_id",
                )
                .at(path)?;
            for &task in tasks {
                let current = get.query_row([task], Lease::from_row).optional().at(path)?;
                let free = current.as_ref().is_none_or(|l| !l.held_by_other(&me, now, stale_after));
                let taken_over = free && current.as_ref().is_some_and(|l| l.holder != me.id);
                let (mut success_at, mut failed_in) = (None, None);
                if free {
                    put.execute(params![task, me.id, me.pid, me.host, now, run_id]).at(path)?;
                    let row = succeeded
                        .query_row([task], |r| Ok((r.get::<_, Option<f64>>(0)?, r.get::<_, String>(1)?)))
                        .optional()
                        .at(path)?;
                    if let Some((at, last)) = row {
                        success_at = at;
                        // A failure recorded since our records were loaded, by another run.
                        if last == Status::Failed.as_str() {
                            let a = last_attempt
                                .query_row([task], |r| {
                                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get(3)?))
                                })
                                .optional()
                                .at(path)?;
                            if let Some((id, other_run, status, error)) = a
                                && id > seen
                                && other_run != run_id
                                && status == Status::Failed.as_str()
                            {
                                failed_in = Some((other_run, error));
                            }
                        }
                    }
                }
                out.push(Claim { mine: free, success_at, failed_in, taken_over });
            }
        }
        tx.commit().at(path)?;
        Ok(out)
    }

    /// Whether another live holder still has a lease on `task` (for a process waiting for
    /// that holder's result).
    pub fn held_by_other(&self, task: &str, stale_after: f64) -> Result<bool, StateError> {
        wait_busy(&self.path, || self.held_by_other_once(task, stale_after))
    }

    fn held_by_other_once(&self, task: &str, stale_after: f64) -> Result<bool, StateError> {
        let lease = self
            .conn
            .prepare_cached("SELECT holder, pid, host, heartbeat_at FROM leases WHERE task_id = ?1")
            .at(&self.path)?
            .query_row([task], Lease::from_row)
            .optional()
            .at(&self.path)?;
        // A reader that never claimed (`flux logs --follow`) counts every holder as other.
        let nobody = Holder { id: String::new(), ..Holder::this_process() };
        let me = self.holder.as_ref().unwrap_or(&nobody);
        Ok(lease.is_some_and(|l| l.held_by_other(me, now_s(), stale_after)))
    }

    /// Keep this holder's leases alive.
    pub fn heartbeat(&mut self) -> Result<(), StateError> {
        let path = self.path.clone();
        wait_busy(&path, || self.heartbeat_once())
    }

    fn heartbeat_once(&mut self) -> Result<(), StateError> {
        let Some(me) = &self.holder else { return Ok(()) };
        self.conn
            .prepare_cached("UPDATE leases SET heartbeat_at = ?2 WHERE holder = ?1")
            .at(&self.path)?
            .execute(params![me.id, now_s()])
            .at(&self.path)?;
        Ok(())
    }

    /// One task's record, read afresh (after a claim, another process may have run it).
    pub fn task_record(&self, task_id: &str) -> Result<Option<TaskRecord>, StateError> {
        wait_busy(&self.path, || self.task_record_once(task_id))
    }

    fn task_record_once(&self, task_id: &str) -> Result<Option<TaskRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT 0, task_id, last_status, cmd_hash, inputs_hash, success_at, duration_s, forced, \
                 quick_key, verified_ns FROM tasks WHERE task_id = ?1",
            )
            .at(&self.path)?;
        let mut rows = stmt.query([task_id]).at(&self.path)?;
        match rows.next().at(&self.path)? {
            None => Ok(None),
            Some(row) => Ok(Some(task_record_at(row).at(&self.path)?)),
        }
    }

    /// All attempts of one task id, oldest first (for `flux logs`).
    pub fn attempts(&self, task_id: &str) -> Result<Vec<AttemptRow>, StateError> {
        wait_busy(&self.path, || self.attempts_once(task_id))
    }

    fn attempts_once(&self, task_id: &str) -> Result<Vec<AttemptRow>, StateError> {
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = ?1 ORDER BY id");
        let mut stmt = self.conn.prepare_cached(&sql).at(&self.path)?;
        let rows = stmt.query_map([task_id], attempt_row).at(&self.path)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().at(&self.path)
    }

    /// Recent attempts, newest first, optionally of one step (for `flux history`).
    pub fn history(&self, step: Option<&str>, limit: usize) -> Result<Vec<AttemptRow>, StateError> {
        wait_busy(&self.path, || self.history_once(step, limit))
    }

    fn history_once(&self, step: Option<&str>, limit: usize) -> Result<Vec<AttemptRow>, StateError> {
        let limit = limit_param(limit);
        let rows = match step {
            Some(step) => {
                let sql = format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE step = ?1 \
                     ORDER BY id DESC LIMIT ?2"
                );
                let mut stmt = self.conn.prepare_cached(&sql).at(&self.path)?;
                stmt.query_map(params![step, limit], attempt_row).at(&self.path)?.collect::<rusqlite::Result<Vec<_>>>()
            }
            None => {
                let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts ORDER BY id DESC LIMIT ?1");
                let mut stmt = self.conn.prepare_cached(&sql).at(&self.path)?;
                stmt.query_map([limit], attempt_row).at(&self.path)?.collect::<rusqlite::Result<Vec<_>>>()
            }
        };
        rows.at(&self.path)
    }

    /// Recent runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>, StateError> {
        wait_busy(&self.path, || self.runs_once(limit))
    }

    fn runs_once(&self, limit: usize) -> Result<Vec<RunRow>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, started_at, ended_at, status, command FROM runs \
                 ORDER BY id DESC LIMIT ?1",
            )
            .at(&self.path)?;
        let rows = stmt
            .query_map([limit_param(limit)], |row| {
                Ok(RunRow {
                    id: row.get(0)?,
                    started_at: row.get(1)?,
                    ended_at: row.get(2)?,
                    status: row.get(3)?,
                    command: row.get(4)?,
                })
            })
            .at(&self.path)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().at(&self.path)
    }

    /// One run by id, if it exists.
    pub fn run(&self, run_id: i64) -> Result<Option<RunRow>, StateError> {
        wait_busy(&self.path, || self.run_once(run_id))
    }

    fn run_once(&self, run_id: i64) -> Result<Option<RunRow>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, started_at, ended_at, status, command FROM runs WHERE id = ?1")
            .at(&self.path)?;
        stmt.query_row([run_id], |row| {
            Ok(RunRow {
                id: row.get(0)?,
                started_at: row.get(1)?,
                ended_at: row.get(2)?,
                status: row.get(3)?,
                command: row.get(4)?,
            })
        })
        .optional()
        .at(&self.path)
    }
}

/// The tables flux's migrations create.
const FLUX_TABLES: [&str; 5] = ["runs", "attempts", "tasks", "digests", "leases"];

/// `path` must be a regular file (or a symlink to one) when it exists.
fn check_is_file(path: &Path) -> Result<(), StateError> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(unusable(
            path,
            "is not a file (a folder?): move it away, or point `state` at another folder".to_string(),
        )),
        _ => Ok(()),
    }
}

/// The schema version (checked: a newer one is [`StateError::TooNew`]) and the names of
/// the tables, sorted, read in one snapshot (another process may be creating the tables).
fn schema(conn: &Connection, path: &Path) -> Result<(i64, Vec<String>), StateError> {
    let own_tx = conn.is_autocommit();
    if own_tx {
        conn.execute_batch("BEGIN DEFERRED").at(path)?;
    }
    let read = check_version(conn, path).and_then(|version| {
        let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").at(path)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).at(path)?;
        Ok((version, rows.collect::<rusqlite::Result<Vec<_>>>().at(path)?))
    });
    if own_tx {
        let _ = conn.execute_batch("COMMIT");
    }
    read
}

/// Every table flux reads must be there in a database with a schema version.
fn check_flux_tables(path: &Path, version: i64, tables: &[String]) -> Result<(), StateError> {
    let missing: Vec<&str> = FLUX_TABLES.iter().copied().filter(|t| !tables.iter().any(|x| x == t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(unusable(
        path,
        format!(
            "schema {version} but no table {}: this is not a database flux wrote; move it away, or point `state` at another folder",
            missing.join(", ")
        ),
    ))
}

/// A database whose schema version is 0 must have no tables (a new or empty file): flux
/// sets the version in the transaction that creates its tables. With some of flux's
/// tables the header is damaged; with none, the database is another program's. Either
/// way flux neither reads it nor adds its tables to it.
fn check_unversioned(path: &Path, tables: &[String]) -> Result<(), StateError> {
    if tables.is_empty() {
        return Ok(());
    }
    if tables.iter().any(|t| FLUX_TABLES.contains(&t.as_str())) {
        return Err(unusable(
            path,
            "damaged: its header says schema version 0 but it holds flux's tables; move it away (flux then starts a new one) or restore it from a backup",
        ));
    }
    let mut names: Vec<&str> = tables.iter().take(3).map(String::as_str).collect();
    if tables.len() > 3 {
        names.push("...");
    }
    Err(unusable(
        path,
        format!(
            "not a flux state database (it has tables {} and no schema version): move it away, or point `state` at another folder",
            names.join(", ")
        ),
    ))
}

/// Reads `user_version`; a newer schema than this flux knows is [`StateError::TooNew`].
fn check_version(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    let found = user_version(conn).at(path)?;
    if found > SCHEMA_VERSION {
        return Err(StateError::TooNew { path: path.display().to_string(), found, supported: SCHEMA_VERSION });
    }
    Ok(found)
}

/// Applies the missing migrations in one transaction. Cheap when up to date (one read,
/// no write lock), and safe when several processes open a new database at once (the
/// version is read again under the write lock).
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    if check_version(conn, path)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).at(path)?;
    let found = check_version(&tx, path)?;
    let applied = usize::try_from(found)
        .map_err(|_| sql_error(path, format!("invalid schema version {found} (PRAGMA user_version)")))?;
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(migration).map_err(|e| sql_error(path, format!("migration {}: {e}", i + 1)))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION).at(path)?;
    tx.commit().at(path)
}

#[cfg(test)]
mod tests;
