//! What each page shows, as plain structs read from the state DB. A page renders one of
//! these structs with its template and its `/api/` twin serialises the same struct, so
//! the two cannot disagree.
//!
//! Every read is one short read-only transaction on a connection of its own (opened per
//! request): the UI never takes a write lock, and never keeps a snapshot open that would
//! hold back a WAL checkpoint of a running build.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use crate::fluxfile::{Fluxfile, Schedule};
use crate::graph::{self, Request};

use super::late::{self, Late, LateInterval};

/// Whole-grid views show at most this many intervals of each kind by default.
pub const DEFAULT_WINDOW: usize = 90;
/// A page of the grid holds at most this many intervals of each kind.
pub const MAX_WINDOW: usize = 2000;

/// The status of a cell, one character each (the symbols of `flux status`, with the
/// statuses it groups under `~` told apart), in the order of the legend.
pub const LEGEND: [(char, &str); 11] = [
    ('#', "success"),
    ('=', "skipped"),
    ('X', "failed"),
    ('^', "upstream_failed"),
    ('!', "interrupted"),
    ('~', "running"),
    ('r', "retrying"),
    ('w', "waiting"),
    ('q', "queued"),
    ('c', "cleared"),
    ('.', "unknown"),
];

/// The character of a status name (`.` for one this flux does not know).
pub fn symbol(status: &str) -> char {
    LEGEND.iter().find(|(_, s)| *s == status).map_or('.', |(c, _)| *c)
}

/// An error a request ends with: an HTTP status and a message for the user.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: 404, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError { status: 400, message: message.into() }
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError { status: 403, message: message.into() }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> ApiError {
        ApiError { status: 503, message: format!("state database: {e}") }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The project the UI shows: its Fluxfile, step edges and state folder.
pub struct Project {
    pub ff: Fluxfile,
    /// Step edges (upstream, downstream), as `flux graph` draws them.
    pub edges: Vec<(usize, usize)>,
    /// The state folder, canonical (logs are served only from inside it).
    pub state_dir: PathBuf,
    pub db_path: PathBuf,
}

/// Open a read-only connection (`None` while no build has made the database).
pub fn open(db_path: &Path) -> ApiResult<Option<Connection>> {
    if !db_path.is_file() {
        return Ok(None);
    }
    let conn =
        Connection::open_with_flags(db_path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(2))?;
    Ok(Some(conn))
}

impl Project {
    /// Run `f` in one read transaction; the default of `T` when there is no database yet.
    pub fn read<T: Default>(&self, f: impl FnOnce(&Connection) -> ApiResult<T>) -> ApiResult<T> {
        let Some(conn) = open(&self.db_path)? else { return Ok(T::default()) };
        conn.execute_batch("BEGIN DEFERRED")?;
        let out = f(&conn);
        let _ = conn.execute_batch("COMMIT");
        out
    }

    /// Where a task id sits in the grid (`None` for a step this Fluxfile lacks).
    pub fn place(&self, id: &str) -> Option<Place> {
        place(&self.ff, id)
    }
}

/// A task's place in the grid: its row, kind of interval and interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub step: usize,
    /// The step, with its params other than time (`report[region=eu]`).
    pub row: String,
    /// `date`, `hour`, `month`, or `` for a step without a time param.
    pub kind: &'static str,
    /// The time value as written in the id (sorts as time does), `` without one.
    pub interval: String,
    /// The id with `{}` for the interval (`report[date={},region=eu]`).
    pub template: String,
}

/// Split a canonical task id (`step`, `step[v]`, `step[k=v,…]`) into its grid place.
pub fn place(ff: &Fluxfile, id: &str) -> Option<Place> {
    let (name, inner) = match id.find('[') {
        Some(open) if id.ends_with(']') => (&id[..open], Some(&id[open + 1..id.len() - 1])),
        _ => (id, None),
    };
    let si = ff.step_index(name)?;
    let step = &ff.steps[si];
    let Some(ti) = step.time_param else {
        return Some(Place {
            step: si,
            row: id.to_string(),
            kind: "",
            interval: String::new(),
            template: id.to_string(),
        });
    };
    let kind = step.params[ti].1.name();
    let inner = inner?;
    if step.params.len() == 1 {
        return Some(Place {
            step: si,
            row: name.to_string(),
            kind,
            interval: inner.to_string(),
            template: format!("{name}[{{}}]"),
        });
    }
    let time_name = &step.params[ti].0;
    let mut interval = None;
    let mut others = Vec::new();
    let mut template = Vec::new();
    for part in inner.split(',') {
        match part.split_once('=') {
            Some((k, v)) if k == time_name => {
                interval = Some(v.to_string());
                template.push(format!("{k}={{}}"));
            }
            _ => {
                others.push(part);
                template.push(part.to_string());
            }
        }
    }
    Some(Place {
        step: si,
        row: format!("{name}[{}]", others.join(",")),
        kind,
        interval: interval?,
        template: format!("{name}[{}]", template.join(",")),
    })
}

// ----- `/` and /api/steps -----

#[derive(Serialize, Default)]
pub struct Steps {
    pub steps: Vec<StepInfo>,
}

#[derive(Serialize)]
pub struct StepInfo {
    pub name: String,
    pub description: Option<String>,
    pub params: Vec<ParamInfo>,
    pub schedule: Option<String>,
    pub upstream: Vec<String>,
    pub downstream: Vec<String>,
    /// How many of its tasks have each last status.
    pub statuses: BTreeMap<String, u64>,
    pub tasks: u64,
    /// Its latest attempt.
    pub last: Option<LastAttempt>,
    /// How many of its intervals missed their SLA (`late`, SPEC §8).
    pub late_count: usize,
    /// The newest of them (at most 5), newest first.
    pub late: Vec<LateInterval>,
}

#[derive(Serialize)]
pub struct ParamInfo {
    pub name: String,
    pub kind: String,
    /// The values of a choice param.
    pub values: Vec<String>,
}

#[derive(Serialize)]
pub struct LastAttempt {
    pub task: String,
    pub status: String,
    pub symbol: char,
    pub run_id: i64,
    pub started_at: f64,
    pub ended_at: Option<f64>,
}

fn schedule_text(s: &Schedule) -> String {
    match s {
        Schedule::Hourly => "hourly".into(),
        Schedule::Daily => "daily".into(),
        Schedule::Weekly => "weekly".into(),
        Schedule::Monthly => "monthly".into(),
        Schedule::Cron(c) => format!("cron {c}"),
    }
}

/// A task's status for the UI: `cleared` when `flux clear` forced it, else its last status.
fn task_status(last: &str, forced: bool) -> &str {
    if forced { "cleared" } else { last }
}

pub fn steps(p: &Project) -> ApiResult<Steps> {
    let ff = &p.ff;
    let mut out: Vec<StepInfo> = ff
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| StepInfo {
            name: s.name.clone(),
            description: s.description.clone(),
            params: s
                .params
                .iter()
                .map(|(n, k)| ParamInfo {
                    name: n.clone(),
                    kind: k.name().to_string(),
                    values: match k {
                        crate::param::ParamKind::Choice(v) => v.to_vec(),
                        _ => Vec::new(),
                    },
                })
                .collect(),
            schedule: s.schedule.as_ref().map(schedule_text),
            upstream: p.edges.iter().filter(|e| e.1 == i).map(|e| ff.steps[e.0].name.clone()).collect(),
            downstream: p.edges.iter().filter(|e| e.0 == i).map(|e| ff.steps[e.1].name.clone()).collect(),
            statuses: BTreeMap::new(),
            tasks: 0,
            last: None,
            late_count: 0,
            late: Vec::new(),
        })
        .collect();
    let by_name: HashMap<&str, usize> = ff.steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    p.read(|conn| {
        let mut stmt = conn.prepare("SELECT task_id, last_status, forced FROM tasks")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id: &str = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            let name = id.split('[').next().unwrap_or(id);
            if let Some(&si) = by_name.get(name) {
                let last: &str = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
                let st = task_status(last, r.get::<_, i64>(2)? != 0);
                match out[si].statuses.get_mut(st) {
                    Some(n) => *n += 1,
                    None => {
                        out[si].statuses.insert(st.to_string(), 1);
                    }
                }
                out[si].tasks += 1;
            }
        }
        let mut stmt = conn.prepare(
            "SELECT task_id, status, run_id, started_at, ended_at FROM attempts WHERE step = ?1 ORDER BY id DESC LIMIT 1",
        )?;
        for s in out.iter_mut() {
            s.last = stmt
                .query_row([&s.name], |r| {
                    let status: String = r.get(1)?;
                    Ok(LastAttempt {
                        task: r.get(0)?,
                        symbol: symbol(&status),
                        status,
                        run_id: r.get(2)?,
                        started_at: r.get(3)?,
                        ended_at: r.get(4)?,
                    })
                })
                .optional()?;
        }
        let lates = Late::read(conn, None)?;
        for s in out.iter_mut() {
            let of = lates.of(&s.name);
            s.late_count = of.len();
            s.late = of.iter().take(late::LATEST).cloned().collect();
        }
        Ok(())
    })?;
    Ok(Steps { steps: out })
}

// ----- /grid and /api/grid -----

/// Which part of the grid to show (`/api/grid?steps=a,b&from=&to=&limit=`).
#[derive(Debug, Default, Clone, serde::Deserialize, Serialize)]
pub struct GridQuery {
    /// Comma-separated step names (default: every step).
    pub steps: Option<String>,
    /// The oldest interval to show (inclusive, as written in task ids).
    pub from: Option<String>,
    /// The newest interval to show (inclusive).
    pub to: Option<String>,
    /// Intervals of each kind per page (default 90).
    pub limit: Option<usize>,
}

#[derive(Serialize, Default)]
pub struct Grid {
    /// One entry per kind of interval: its intervals, newest first.
    pub kinds: Vec<GridKind>,
    /// One row per step (and value of its other params); `cells` has one status
    /// character per interval of the row's kind, in the kind's order (space: no task).
    pub rows: Vec<GridRow>,
    /// What each cell character means.
    pub legend: Vec<LegendEntry>,
    /// Tasks in the whole state DB, and shown on this page.
    pub tasks: u64,
    pub shown: u64,
    pub query: GridQuery,
}

#[derive(Serialize)]
pub struct LegendEntry {
    pub symbol: char,
    pub status: &'static str,
}

#[derive(Serialize)]
pub struct GridKind {
    /// `date`, `hour`, `month`, or `` (steps without a time param: one column).
    pub kind: &'static str,
    pub intervals: Vec<String>,
    /// Intervals of this kind in the state DB (within `from`/`to`).
    pub total: usize,
    /// `to` of the next (older) page, if there is one.
    pub older: Option<String>,
    /// `to` of the previous (newer) page, if this is not the newest.
    pub newer: Option<String>,
}

#[derive(Serialize)]
pub struct GridRow {
    pub row: String,
    pub step: String,
    pub kind: &'static str,
    /// The task id of a cell: this with `{}` replaced by the interval.
    pub template: String,
    pub cells: String,
    /// The indexes in `cells` of the late cells (intervals that missed their SLA),
    /// ascending; absent when none is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub late: Vec<u32>,
}

pub fn grid(p: &Project, q: GridQuery) -> ApiResult<Grid> {
    let limit = q.limit.unwrap_or(DEFAULT_WINDOW).clamp(1, MAX_WINDOW);
    let only: Option<Vec<usize>> = match &q.steps {
        Some(s) if !s.trim().is_empty() => Some(
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    p.ff.step_index(s).ok_or_else(|| ApiError::not_found(format!("no step `{s}` in the Fluxfile")))
                })
                .collect::<ApiResult<_>>()?,
        ),
        _ => None,
    };
    // Every task of the selection as (row, interval of the row's kind, status char); the
    // intervals of each kind interned (at 100,000 tasks: one allocation per new row or
    // interval, none per task of a step with only a time param).
    struct Intervals {
        kind: &'static str,
        index: HashMap<String, u32>,
        names: Vec<String>,
    }
    let by_name: HashMap<&str, usize> = p.ff.steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let mut rows: Vec<GridRow> = Vec::new();
    let mut row_kind: Vec<usize> = Vec::new();
    let mut row_of: HashMap<String, usize> = HashMap::new();
    let mut cells: Vec<(u32, u32, u8)> = Vec::new();
    let mut acc: Vec<Intervals> = Vec::new();
    let mut lates = Late::default();
    let tasks = p.read(|conn| {
        lates = Late::read(conn, None)?;
        let mut n = 0u64;
        let mut stmt = conn.prepare("SELECT task_id, last_status, forced FROM tasks")?;
        let mut it = stmt.query([])?;
        while let Some(r) = it.next()? {
            n += 1;
            let id: &str = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
            let (name, inner) = match id.find('[') {
                Some(open) if id.ends_with(']') => (&id[..open], Some(&id[open + 1..id.len() - 1])),
                _ => (id, None),
            };
            let Some(&si) = by_name.get(name) else { continue };
            if only.as_ref().is_some_and(|o| !o.contains(&si)) {
                continue;
            }
            let step = &p.ff.steps[si];
            let owned;
            let (row, interval): (&str, &str) = match (step.time_param, inner) {
                (None, _) => (id, ""),
                (Some(_), Some(v)) if step.params.len() == 1 => (name, v),
                _ => {
                    let Some(pl) = place(&p.ff, id) else { continue };
                    owned = pl;
                    (&owned.row, &owned.interval)
                }
            };
            let last: &str = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            let ch = symbol(task_status(last, r.get::<_, i64>(2)? != 0)) as u8;
            let ri = match row_of.get(row) {
                Some(&ri) => ri,
                None => {
                    let Some(pl) = place(&p.ff, id) else { continue };
                    let slot = match acc.iter().position(|a| a.kind == pl.kind) {
                        Some(k) => k,
                        None => {
                            acc.push(Intervals { kind: pl.kind, index: HashMap::new(), names: Vec::new() });
                            acc.len() - 1
                        }
                    };
                    rows.push(GridRow {
                        row: pl.row.clone(),
                        step: step.name.clone(),
                        kind: pl.kind,
                        template: pl.template,
                        cells: String::new(),
                        late: Vec::new(),
                    });
                    row_kind.push(slot);
                    row_of.insert(pl.row, rows.len() - 1);
                    rows.len() - 1
                }
            };
            let a = &mut acc[row_kind[ri]];
            let ii = match a.index.get(interval) {
                Some(&i) => i,
                None => {
                    a.names.push(interval.to_string());
                    a.index.insert(interval.to_string(), a.names.len() as u32 - 1);
                    a.names.len() as u32 - 1
                }
            };
            cells.push((ri as u32, ii, ch));
        }
        Ok(n)
    })?;
    // The window of each kind: the newest `limit` intervals up to `to`, from `from` on.
    let mut kinds = Vec::new();
    // Column of each interval of each kind slot (`u32::MAX`: not on this page).
    let mut col_of: Vec<Vec<u32>> = Vec::new();
    for a in &acc {
        let mut order: Vec<u32> = (0..a.names.len() as u32).collect();
        order.sort_unstable_by(|&x, &y| a.names[x as usize].cmp(&a.names[y as usize]));
        let name = |i: &u32| a.names[*i as usize].as_str();
        let in_range = |i: &&u32| {
            a.kind.is_empty()
                || (q.from.as_deref().is_none_or(|f| name(i) >= f) && q.to.as_deref().is_none_or(|t| name(i) <= t))
        };
        let total = order.iter().filter(in_range).count();
        let mut newest_first = order.iter().rev().filter(in_range);
        let page: Vec<u32> = newest_first.by_ref().take(limit).copied().collect();
        let older = newest_first.next().map(|i| name(i).to_string());
        // The page above: the `limit` intervals newer than this page's first.
        let newer = page.first().and_then(|first| {
            let first = name(first);
            order.iter().filter(|i| name(i) > first).take(limit).last().map(|i| name(i).to_string())
        });
        let mut cols = vec![u32::MAX; a.names.len()];
        for (c, &i) in page.iter().enumerate() {
            cols[i as usize] = c as u32;
        }
        col_of.push(cols);
        kinds.push(GridKind {
            kind: a.kind,
            intervals: page.iter().map(|i| name(i).to_string()).collect(),
            total,
            older,
            newer,
        });
    }
    let mut bufs: Vec<Vec<u8>> = row_kind.iter().map(|&k| vec![b' '; kinds[k].intervals.len()]).collect();
    let mut shown = 0;
    for (ri, ii, ch) in cells {
        let c = col_of[row_kind[ri as usize]][ii as usize];
        if c != u32::MAX {
            bufs[ri as usize][c as usize] = ch;
            shown += 1;
        }
    }
    kinds.sort_by_key(|k| k.kind);
    for (r, b) in rows.iter_mut().zip(bufs) {
        r.cells = String::from_utf8(b).unwrap_or_default();
    }
    if !lates.is_empty() {
        for (r, &k) in rows.iter_mut().zip(&row_kind) {
            let cols = &col_of[k];
            let mut marks: Vec<u32> = lates
                .of(&r.step)
                .iter()
                .filter_map(|l| acc[k].index.get(&l.value))
                .map(|&i| cols[i as usize])
                .filter(|&c| c != u32::MAX && r.cells.as_bytes()[c as usize] != b' ')
                .collect();
            marks.sort_unstable();
            r.late = marks;
        }
    }
    // Rows in the Fluxfile's step order, then by name.
    rows.sort_by(|a, b| (by_name.get(a.step.as_str()), &a.row).cmp(&(by_name.get(b.step.as_str()), &b.row)));
    rows.retain(|r| r.cells.bytes().any(|b| b != b' '));
    Ok(Grid {
        kinds,
        rows,
        legend: LEGEND.iter().map(|&(symbol, status)| LegendEntry { symbol, status }).collect(),
        tasks,
        shown,
        query: GridQuery { limit: Some(limit), ..q },
    })
}

// ----- /tasks/{id} and /api/tasks/{id} -----

#[derive(Serialize, Default)]
pub struct TaskPage {
    pub task: String,
    pub step: String,
    pub description: Option<String>,
    pub row: String,
    pub interval: String,
    /// What flux remembers of the task (absent when nothing was recorded).
    pub record: Option<TaskState>,
    /// Every attempt, newest first.
    pub attempts: Vec<Attempt>,
    /// Its interval missed its SLA (`late`, SPEC §8); absent when it did not.
    pub late: Option<LateInterval>,
}

#[derive(Serialize)]
pub struct TaskState {
    pub status: String,
    pub symbol: char,
    pub success_at: Option<f64>,
    pub duration_s: Option<f64>,
}

#[derive(Serialize)]
pub struct Attempt {
    /// The attempt's id (`?attempt=` of the log).
    pub id: i64,
    pub run_id: i64,
    /// Its number within the run (1, then each retry).
    pub attempt: u32,
    pub status: String,
    pub symbol: char,
    pub reason: Option<String>,
    pub params: String,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    pub duration_s: Option<f64>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    /// Bytes of its log, when the log is there to read.
    pub log_bytes: Option<u64>,
}

pub fn task(p: &Project, id: &str) -> ApiResult<TaskPage> {
    let pl = p.place(id);
    let mut page = p.read(|conn| {
        let record = conn
            .query_row("SELECT last_status, forced, success_at, duration_s FROM tasks WHERE task_id = ?1", [id], |r| {
                let last: String = r.get(0)?;
                let st = task_status(&last, r.get::<_, i64>(1)? != 0).to_string();
                Ok(TaskState { symbol: symbol(&st), status: st, success_at: r.get(2)?, duration_s: r.get(3)? })
            })
            .optional()?;
        let mut stmt = conn.prepare(
            "SELECT id, run_id, attempt, status, reason, params_json, started_at, ended_at, exit_code, error, log_path \
             FROM attempts WHERE task_id = ?1 ORDER BY id DESC",
        )?;
        let attempts = stmt
            .query_map([id], |r| {
                let status: String = r.get(3)?;
                let started_at: f64 = r.get(6)?;
                let ended_at: Option<f64> = r.get(7)?;
                let log: Option<String> = r.get(10)?;
                Ok(Attempt {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    attempt: r.get(2)?,
                    symbol: symbol(&status),
                    status,
                    reason: r.get(4)?,
                    params: r.get(5)?,
                    started_at,
                    ended_at,
                    duration_s: ended_at.map(|e| (e - started_at).max(0.0)),
                    exit_code: r.get(8)?,
                    error: r.get(9)?,
                    log_bytes: log
                        .and_then(|l| p.log_file(&l).ok())
                        .and_then(|f| std::fs::metadata(f).ok())
                        .map(|m| m.len()),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let late = match &pl {
            Some(pl) if !pl.kind.is_empty() => {
                let step = &p.ff.steps[pl.step].name;
                Late::read(conn, Some(step))?.get(step, &pl.interval).cloned()
            }
            _ => None,
        };
        Ok(TaskPage { record, attempts, late, ..TaskPage::default() })
    })?;
    if page.record.is_none() && page.attempts.is_empty() && pl.is_none() {
        return Err(ApiError::not_found(format!("no task `{id}` in the state DB or the Fluxfile")));
    }
    page.task = id.to_string();
    if let Some(pl) = pl {
        page.step = p.ff.steps[pl.step].name.clone();
        page.description = p.ff.steps[pl.step].description.clone();
        page.row = pl.row;
        page.interval = pl.interval;
    }
    Ok(page)
}

/// A log's file, canonical, if it is inside the state folder (else 403).
impl Project {
    pub fn log_file(&self, log_path: &str) -> ApiResult<PathBuf> {
        let path = Path::new(log_path);
        let path = if path.is_absolute() { path.to_path_buf() } else { self.ff.dir.join(path) };
        let canon = std::fs::canonicalize(&path).map_err(|_| ApiError::not_found("the log is gone"))?;
        if !canon.starts_with(&self.state_dir) {
            return Err(ApiError::forbidden("logs are served only from inside the state folder"));
        }
        Ok(canon)
    }
}

/// `/api/tasks/{id}/log?attempt=&offset=&limit=`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct LogQuery {
    /// The attempt's id (default: the task's latest attempt).
    pub attempt: Option<i64>,
    /// The first byte to send (default: the tail, the last `limit` bytes).
    pub offset: Option<u64>,
    /// At most this many bytes (default 64 KiB, at most 4 MiB).
    pub limit: Option<u64>,
}

/// A byte range of a log.
pub struct LogChunk {
    pub bytes: Vec<u8>,
    pub offset: u64,
    pub size: u64,
}

pub const LOG_CHUNK: u64 = 64 * 1024;

pub fn log(p: &Project, id: &str, q: &LogQuery) -> ApiResult<LogChunk> {
    let log_path: Option<Option<String>> = p.read(|conn| {
        let row = match q.attempt {
            Some(a) => conn
                .query_row("SELECT log_path FROM attempts WHERE task_id = ?1 AND id = ?2", params![id, a], |r| r.get(0))
                .optional()?,
            None => conn
                .query_row("SELECT log_path FROM attempts WHERE task_id = ?1 ORDER BY id DESC LIMIT 1", [id], |r| {
                    r.get(0)
                })
                .optional()?,
        };
        Ok(row)
    })?;
    let Some(Some(log_path)) = log_path else {
        return Err(ApiError::not_found(format!("no log for task `{id}`")));
    };
    let file = p.log_file(&log_path)?;
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&file).map_err(|_| ApiError::not_found("the log is gone"))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let limit = q.limit.unwrap_or(LOG_CHUNK).clamp(1, 4 << 20);
    let offset = q.offset.unwrap_or(size.saturating_sub(limit)).min(size);
    f.seek(SeekFrom::Start(offset)).map_err(|e| ApiError { status: 500, message: e.to_string() })?;
    let mut bytes = Vec::new();
    f.take(limit).read_to_end(&mut bytes).map_err(|e| ApiError { status: 500, message: e.to_string() })?;
    Ok(LogChunk { bytes, offset, size })
}

// ----- /runs, /runs/{id} and twins -----

#[derive(Serialize, Default)]
pub struct Runs {
    pub runs: Vec<RunInfo>,
}

#[derive(Serialize, Default)]
pub struct RunInfo {
    pub id: i64,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    pub status: String,
    pub command: String,
    pub attempts: u64,
    pub failed: u64,
}

/// `/api/runs?before=&limit=`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RunsQuery {
    /// Runs older than this id.
    pub before: Option<i64>,
    pub limit: Option<usize>,
}

pub fn runs(p: &Project, q: &RunsQuery) -> ApiResult<Runs> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000) as i64;
    p.read(|conn| {
        let mut stmt = conn.prepare(
            "SELECT r.id, r.started_at, r.ended_at, r.status, r.command, \
             (SELECT count(*) FROM attempts a WHERE a.run_id = r.id), \
             (SELECT count(*) FROM attempts a WHERE a.run_id = r.id AND a.status = 'failed') \
             FROM runs r WHERE r.id < ?1 ORDER BY r.id DESC LIMIT ?2",
        )?;
        let runs = stmt
            .query_map(params![q.before.unwrap_or(i64::MAX), limit], run_info)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Runs { runs })
    })
}

fn run_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunInfo> {
    Ok(RunInfo {
        id: r.get(0)?,
        started_at: r.get(1)?,
        ended_at: r.get(2)?,
        status: r.get(3)?,
        command: r.get(4)?,
        attempts: r.get::<_, i64>(5)? as u64,
        failed: r.get::<_, i64>(6)? as u64,
    })
}

/// A run and its attempts, in columns (one entry per attempt in each, by start time):
/// a Gantt chart of 100,000 attempts is arrays, not 100,000 objects.
#[derive(Serialize, Default)]
pub struct RunPage {
    pub run: RunInfo,
    pub tasks: Vec<String>,
    pub attempt_ids: Vec<i64>,
    /// Seconds from the run's start.
    pub start: Vec<f64>,
    /// Seconds from the run's start; null while running.
    pub end: Vec<Option<f64>>,
    /// One status character per attempt (see the legend).
    pub status: String,
    pub legend: Vec<LegendEntry>,
}

pub fn run(p: &Project, id: i64) -> ApiResult<RunPage> {
    let page = p.read(|conn| {
        let Some(run) = conn
            .query_row(
                "SELECT r.id, r.started_at, r.ended_at, r.status, r.command, \
                 (SELECT count(*) FROM attempts a WHERE a.run_id = r.id), \
                 (SELECT count(*) FROM attempts a WHERE a.run_id = r.id AND a.status = 'failed') \
                 FROM runs r WHERE r.id = ?1",
                [id],
                run_info,
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut page = RunPage { legend: legend(), ..RunPage::default() };
        let mut stmt = conn.prepare(
            "SELECT id, task_id, status, started_at, ended_at FROM attempts WHERE run_id = ?1 ORDER BY started_at, id",
        )?;
        let mut rows = stmt.query([id])?;
        let t0 = run.started_at;
        while let Some(r) = rows.next()? {
            page.attempt_ids.push(r.get(0)?);
            page.tasks.push(r.get(1)?);
            page.status.push(symbol(r.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?));
            page.start.push(round_ms(r.get::<_, f64>(3)? - t0));
            page.end.push(r.get::<_, Option<f64>>(4)?.map(|e| round_ms(e - t0)));
        }
        page.run = run;
        Ok(Some(page))
    })?;
    page.ok_or_else(|| ApiError::not_found(format!("no run {id}")))
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

fn legend() -> Vec<LegendEntry> {
    LEGEND.iter().map(|&(symbol, status)| LegendEntry { symbol, status }).collect()
}

// ----- /durations/{step} and twin -----

#[derive(Serialize, Default)]
pub struct Durations {
    pub step: String,
    /// Finished attempts of the step, oldest first (the newest `limit`).
    pub points: Vec<DurationPoint>,
    pub max_s: f64,
}

#[derive(Serialize)]
pub struct DurationPoint {
    pub task: String,
    pub run_id: i64,
    pub status: String,
    pub symbol: char,
    pub started_at: f64,
    pub duration_s: f64,
}

pub fn durations(p: &Project, step: &str, limit: Option<usize>) -> ApiResult<Durations> {
    if p.ff.step_index(step).is_none() {
        return Err(ApiError::not_found(format!("no step `{step}` in the Fluxfile")));
    }
    let limit = limit.unwrap_or(500).clamp(1, 5000) as i64;
    let mut d = p.read(|conn| {
        let mut stmt = conn.prepare(
            "SELECT task_id, run_id, status, started_at, ended_at FROM attempts \
             WHERE step = ?1 AND ended_at IS NOT NULL ORDER BY id DESC LIMIT ?2",
        )?;
        let mut points = stmt
            .query_map(params![step, limit], |r| {
                let status: String = r.get(2)?;
                let started_at: f64 = r.get(3)?;
                Ok(DurationPoint {
                    task: r.get(0)?,
                    run_id: r.get(1)?,
                    symbol: symbol(&status),
                    status,
                    started_at,
                    duration_s: round_ms((r.get::<_, f64>(4)? - started_at).max(0.0)),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        points.reverse();
        Ok(Durations { points, ..Durations::default() })
    })?;
    d.step = step.to_string();
    d.max_s = d.points.iter().map(|p| p.duration_s).fold(0.0, f64::max);
    Ok(d)
}

// ----- /graph and /api/graph -----

/// `/api/graph?task=&depth=`.
#[derive(Debug, Default, Clone, serde::Deserialize, Serialize)]
pub struct GraphQuery {
    /// A task id: show its neighbourhood instead of the step graph.
    pub task: Option<String>,
    /// Levels up and down from the task (default 2).
    pub depth: Option<usize>,
}

#[derive(Serialize, Default)]
pub struct GraphView {
    pub task: Option<String>,
    pub depth: usize,
    pub nodes: Vec<GraphNode>,
    /// Edges by node index (upstream, downstream).
    pub edges: Vec<(usize, usize)>,
    /// The SVG's size; each node's box is at its x, y.
    pub width: u32,
    pub height: u32,
}

#[derive(Serialize)]
pub struct GraphNode {
    pub name: String,
    /// The step's page or the task's page.
    pub href: String,
    pub status: Option<String>,
    pub symbol: Option<char>,
    pub layer: usize,
    pub x: u32,
    pub y: u32,
}

pub const NODE_W: u32 = 190;
pub const NODE_H: u32 = 30;

pub fn graph(p: &Project, q: &GraphQuery) -> ApiResult<GraphView> {
    let depth = q.depth.unwrap_or(2).min(20);
    let (names, edges): NodesAndEdges = match &q.task {
        None => (p.ff.steps.iter().map(|s| s.name.clone()).collect(), p.edges.clone()),
        Some(id) => neighbourhood(p, id, depth)?,
    };
    let statuses: Vec<Option<String>> = match &q.task {
        None => vec![None; names.len()],
        Some(_) => p.read(|conn| {
            let mut stmt = conn.prepare("SELECT last_status, forced FROM tasks WHERE task_id = ?1")?;
            names
                .iter()
                .map(|n| {
                    stmt.query_row([n], |r| {
                        let last: String = r.get(0)?;
                        Ok(task_status(&last, r.get::<_, i64>(1)? != 0).to_string())
                    })
                    .optional()
                    .map_err(ApiError::from)
                })
                .collect()
        })?,
    };
    // Layers: the longest path from a node without upstream.
    let mut layer = vec![0usize; names.len()];
    for _ in 0..names.len() {
        let mut changed = false;
        for &(a, b) in &edges {
            if layer[b] < layer[a] + 1 {
                layer[b] = layer[a] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut in_layer: BTreeMap<usize, usize> = BTreeMap::new();
    let mut nodes = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let pos = in_layer.entry(layer[i]).or_default();
        let href = match &q.task {
            None => format!("/grid?steps={}", urlencode(&name)),
            Some(_) => format!("/tasks/{}", urlencode(&name)),
        };
        let status = statuses[i].clone();
        nodes.push(GraphNode {
            symbol: status.as_deref().map(symbol),
            status,
            href,
            name,
            layer: layer[i],
            x: 10 + layer[i] as u32 * (NODE_W + 60),
            y: 10 + *pos as u32 * (NODE_H + 20),
        });
        *pos += 1;
    }
    let width = nodes.iter().map(|n| n.x + NODE_W + 10).max().unwrap_or(20);
    let height = nodes.iter().map(|n| n.y + NODE_H + 10).max().unwrap_or(20);
    Ok(GraphView { task: q.task.clone(), depth, nodes, edges, width, height })
}

/// Node names, and edges by node index.
type NodesAndEdges = (Vec<String>, Vec<(usize, usize)>);

/// The tasks within `depth` levels up and down of `id`: its upstream from the task graph
/// of the task itself, its downstream from the graph of the steps downstream of its step
/// for the task's day (or month).
fn neighbourhood(p: &Project, id: &str, depth: usize) -> ApiResult<NodesAndEdges> {
    let ff = &p.ff;
    let id = graph::canonical_task_id(ff, id).map_err(|e| ApiError::not_found(e.render()))?;
    let pl = place(ff, &id).ok_or_else(|| ApiError::not_found(format!("no task `{id}`")))?;
    // Steps downstream of the task's step, within `depth` step edges.
    let mut down_steps = vec![pl.step];
    let mut frontier = vec![pl.step];
    for _ in 0..depth {
        let next: Vec<usize> =
            p.edges.iter().filter(|e| frontier.contains(&e.0) && !down_steps.contains(&e.1)).map(|e| e.1).collect();
        down_steps.extend(&next);
        frontier = next;
    }
    let date =
        pl.interval.get(..10).and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()).or_else(|| {
            pl.interval.get(..7).and_then(|m| chrono::NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").ok())
        });
    let mut targets = vec![id.clone()];
    if date.is_some() {
        targets.extend(down_steps.iter().skip(1).map(|&s| ff.steps[s].name.clone()));
    }
    let g = graph::build(ff, &Request { targets, date, ..Default::default() })
        .or_else(|_| graph::build(ff, &Request { targets: vec![id.clone()], ..Default::default() }))
        .map_err(|e| ApiError::bad_request(e.render()))?;
    let ids: Vec<String> = (0..g.tasks.len() as u32).map(|t| g.task_id(ff, t)).collect();
    let Some(me) = ids.iter().position(|t| *t == id) else {
        return Err(ApiError::not_found(format!("no task `{id}` in the graph")));
    };
    let dependents = g.dependents();
    let mut level: HashMap<usize, usize> = HashMap::from([(me, 0)]);
    let mut keep = vec![me];
    for dir in [0, 1] {
        let mut frontier = vec![me];
        for d in 1..=depth {
            let mut next = Vec::new();
            for &t in &frontier {
                let near: Vec<usize> = if dir == 0 {
                    g.tasks[t].deps().iter().map(|&x| x as usize).collect()
                } else {
                    dependents[t].iter().map(|&x| x as usize).collect()
                };
                for n in near {
                    if let std::collections::hash_map::Entry::Vacant(e) = level.entry(n) {
                        e.insert(d);
                        keep.push(n);
                        next.push(n);
                    }
                }
            }
            frontier = next;
        }
    }
    keep.sort_unstable();
    let index: HashMap<usize, usize> = keep.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    let mut edges = Vec::new();
    for &t in &keep {
        for &d in g.tasks[t].deps() {
            if let Some(&a) = index.get(&(d as usize)) {
                edges.push((a, index[&t]));
            }
        }
    }
    Ok((keep.iter().map(|&t| ids[t].clone()).collect(), edges))
}

/// Percent-encode a path segment or query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
