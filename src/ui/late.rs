//! Late intervals for the UI (SPEC §8, §11): the intervals of scheduled steps whose SLA
//! was missed, as the scheduler records them in `sched_intervals`. Read inside a page's
//! short read-only transaction; a database from before the scheduler's migration has no
//! such table, and then nothing is late.

use std::collections::HashMap;

use rusqlite::Connection;
use serde::Serialize;

use super::api::ApiResult;

/// How many of a step's late intervals `/api/steps` lists (the newest).
pub const LATEST: usize = 5;

/// One late interval of a step.
#[derive(Debug, Clone, Serialize)]
pub struct LateInterval {
    /// The time param's value, as written in task ids (`2024-01-05`).
    pub value: String,
    /// Interval end + `sla` (Unix seconds, the scheduler's clock).
    pub deadline: Option<f64>,
    /// When the scheduler recorded the miss (Unix seconds, the scheduler's clock).
    pub sla_missed_at: f64,
}

/// Every late interval, by step; each step's newest first.
#[derive(Debug, Default)]
pub struct Late {
    by_step: HashMap<String, Vec<LateInterval>>,
}

impl Late {
    /// Read them on `conn` (inside the caller's transaction); `steps` limits the read to
    /// those steps (`None`: every step).
    pub fn read(conn: &Connection, step: Option<&str>) -> ApiResult<Late> {
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sched_intervals')",
            [],
            |r| r.get(0),
        )?;
        let mut late = Late::default();
        if !exists {
            return Ok(late);
        }
        let mut stmt = conn.prepare(
            "SELECT step, value, deadline, sla_missed_at FROM sched_intervals \
             WHERE sla_missed_at IS NOT NULL AND (?1 IS NULL OR step = ?1) ORDER BY step, value DESC",
        )?;
        let mut rows = stmt.query([step])?;
        while let Some(r) = rows.next()? {
            let step: String = r.get(0)?;
            let interval = LateInterval { value: r.get(1)?, deadline: r.get(2)?, sla_missed_at: r.get(3)? };
            late.by_step.entry(step).or_default().push(interval);
        }
        Ok(late)
    }

    /// A step's late intervals, newest first.
    pub fn of(&self, step: &str) -> &[LateInterval] {
        self.by_step.get(step).map_or(&[], Vec::as_slice)
    }

    /// The late interval `value` of `step`, if it is late.
    pub fn get(&self, step: &str, value: &str) -> Option<&LateInterval> {
        let list = self.by_step.get(step)?;
        // Newest first: search with the order reversed.
        list.binary_search_by(|i| value.cmp(i.value.as_str())).ok().map(|k| &list[k])
    }

    pub fn is_empty(&self) -> bool {
        self.by_step.is_empty()
    }
}
