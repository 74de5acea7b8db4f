//! Changes for `/api/events`: one thread polls the state DB every 500 ms (`PRAGMA
//! data_version`, which costs no transaction) and, when another connection committed,
//! reads the attempts that may have changed in one short read transaction and broadcasts
//! them to every open event stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use serde::Serialize;
use tokio::sync::broadcast;

use super::api::{self, Project};

pub const POLL: Duration = Duration::from_millis(500);

/// One batch of changes, sent as the data of an SSE `change` event.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Change {
    pub tasks: Vec<TaskChange>,
    /// The runs table changed (a run started or ended).
    pub runs: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct TaskChange {
    pub task: String,
    pub attempt_id: i64,
    pub run_id: i64,
    pub status: String,
    pub symbol: char,
    /// Its grid row and interval (absent for a step this Fluxfile lacks).
    pub row: Option<String>,
    pub interval: Option<String>,
}

/// What the poller knows: attempts from `watermark` on may still change.
struct Seen {
    watermark: i64,
    /// Status of each attempt from the watermark on, as last sent.
    sent: HashMap<i64, String>,
    runs: (i64, i64, i64),
}

/// Poll until `stop`, sending changes on `tx`.
pub fn poll(project: Arc<Project>, tx: broadcast::Sender<Arc<Change>>, stop: Arc<AtomicBool>) {
    let mut conn: Option<Connection> = None;
    let mut version = -1i64;
    let mut seen: Option<Seen> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
        if conn.is_none() {
            conn = api::open(&project.db_path).ok().flatten();
        }
        let Some(c) = &conn else { continue };
        let Ok(v) = c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)) else {
            conn = None;
            continue;
        };
        if v == version {
            continue;
        }
        version = v;
        match read_changes(&project, c, seen.as_mut()) {
            Ok((next, change)) => {
                if let Some(change) = change
                    && (!change.tasks.is_empty() || change.runs)
                {
                    let _ = tx.send(Arc::new(change));
                }
                if seen.is_none() {
                    seen = Some(next);
                }
            }
            // The database may not have its tables yet; try again at the next poll.
            Err(_) => version = -1,
        }
    }
}

fn read_changes(p: &Project, c: &Connection, seen: Option<&mut Seen>) -> rusqlite::Result<(Seen, Option<Change>)> {
    c.execute_batch("BEGIN DEFERRED")?;
    let out = read_changes_in(p, c, seen);
    let _ = c.execute_batch("COMMIT");
    out
}

fn read_changes_in(p: &Project, c: &Connection, seen: Option<&mut Seen>) -> rusqlite::Result<(Seen, Option<Change>)> {
    let runs: (i64, i64, i64) = c.query_row(
        "SELECT coalesce(max(id), 0), count(*), (SELECT count(*) FROM runs WHERE ended_at IS NOT NULL) FROM runs",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let Some(seen) = seen else {
        // The first look: changes are what comes after it. Attempts still open stay watched.
        let max: i64 = c.query_row("SELECT coalesce(max(id), 0) FROM attempts", [], |r| r.get(0))?;
        let open: Option<i64> = c.query_row(
            "SELECT min(a.id) FROM attempts a JOIN runs r ON r.id = a.run_id WHERE r.ended_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        let watermark = open.unwrap_or(max + 1).min(max + 1);
        let mut sent = HashMap::new();
        let mut stmt = c.prepare("SELECT id, status FROM attempts WHERE id >= ?1")?;
        let mut rows = stmt.query([watermark])?;
        while let Some(r) = rows.next()? {
            sent.insert(r.get(0)?, r.get(1)?);
        }
        return Ok((Seen { watermark, sent, runs }, None));
    };
    let mut change = Change { runs: runs != seen.runs, ..Change::default() };
    seen.runs = runs;
    let mut stmt =
        c.prepare("SELECT id, task_id, run_id, status, ended_at FROM attempts WHERE id >= ?1 ORDER BY id")?;
    let mut rows = stmt.query([seen.watermark])?;
    let mut first_open: Option<i64> = None;
    let mut max = seen.watermark - 1;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let status: String = r.get(3)?;
        let ended: Option<f64> = r.get(4)?;
        max = max.max(id);
        if ended.is_none() && first_open.is_none() {
            first_open = Some(id);
        }
        if seen.sent.get(&id) == Some(&status) {
            continue;
        }
        let task: String = r.get(1)?;
        let place = p.place(&task);
        change.tasks.push(TaskChange {
            attempt_id: id,
            run_id: r.get(2)?,
            symbol: api::symbol(&status),
            status: status.clone(),
            row: place.as_ref().map(|p| p.row.clone()),
            interval: place.map(|p| p.interval),
            task,
        });
        seen.sent.insert(id, status);
    }
    let watermark = first_open.unwrap_or(max + 1);
    seen.sent.retain(|&id, _| id >= watermark);
    seen.watermark = watermark;
    Ok((Seen { watermark, sent: HashMap::new(), runs }, Some(change)))
}
