//! The scheduler's tables (SPEC §8, §10): per-step watermarks (`sched_steps`), the
//! intervals it made due with their SLA deadlines and misses (`sched_intervals`), and the
//! one-scheduler-per-project lease (`scheduler`).
//!
//! Times are Unix seconds. Watermarks, due times and deadlines are in the scheduler's
//! clock (which `--now` sets); lease heartbeats are in real time.

use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};

use super::{Holder, SqlContext, StateDb, StateError, now_s, pid_alive, wait_busy};

/// A scheduled step as the scheduler last left it.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedStep {
    pub step: String,
    /// The latest interval value made due ("scheduled through"), canonical form.
    pub through: Option<String>,
    /// When the step was last evaluated (scheduler clock).
    pub evaluated_at: f64,
}

/// One interval of a scheduled step that the scheduler made due.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub step: String,
    /// The time param's value, canonical form (`2024-01-05`).
    pub value: String,
    /// When it became due (scheduler clock).
    pub due_at: f64,
    /// Interval end + `sla`, fixed when it became due.
    pub deadline: Option<f64>,
    /// How many ticks have built it.
    pub attempts: i64,
    /// When a tick found all its tasks successful or up to date.
    pub done_at: Option<f64>,
    /// When its SLA miss was recorded (and announced).
    pub sla_missed_at: Option<f64>,
}

/// Who holds the scheduler lease.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerHolder {
    pub holder: String,
    pub pid: i64,
    pub host: String,
    pub started_at: f64,
    pub heartbeat_at: f64,
}

/// Unix seconds now (real time), as the state DB records it.
pub fn now_secs() -> f64 {
    now_s()
}

const INTERVAL_COLUMNS: &str = "step, value, due_at, deadline, attempts, done_at, sla_missed_at";

fn interval_row(r: &Row<'_>) -> rusqlite::Result<Interval> {
    Ok(Interval {
        step: r.get(0)?,
        value: r.get(1)?,
        due_at: r.get(2)?,
        deadline: r.get(3)?,
        attempts: r.get(4)?,
        done_at: r.get(5)?,
        sla_missed_at: r.get(6)?,
    })
}

impl StateDb {
    /// Every step the scheduler has evaluated.
    pub fn sched_steps(&self) -> Result<Vec<SchedStep>, StateError> {
        wait_busy(&self.path, || {
            let mut stmt =
                self.conn.prepare_cached("SELECT step, through, evaluated_at FROM sched_steps").at(&self.path)?;
            let rows = stmt
                .query_map([], |r| Ok(SchedStep { step: r.get(0)?, through: r.get(1)?, evaluated_at: r.get(2)? }))
                .at(&self.path)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().at(&self.path)
        })
    }

    /// Intervals not done yet, of every step, oldest first.
    pub fn open_intervals(&self) -> Result<Vec<Interval>, StateError> {
        wait_busy(&self.path, || {
            let sql =
                format!("SELECT {INTERVAL_COLUMNS} FROM sched_intervals WHERE done_at IS NULL ORDER BY step, value");
            let mut stmt = self.conn.prepare_cached(&sql).at(&self.path)?;
            let rows = stmt.query_map([], interval_row).at(&self.path)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().at(&self.path)
        })
    }

    /// Intervals whose SLA was missed, of every step (for `flux status`).
    pub fn late_intervals(&self) -> Result<Vec<Interval>, StateError> {
        wait_busy(&self.path, || {
            let sql = format!("SELECT {INTERVAL_COLUMNS} FROM sched_intervals WHERE sla_missed_at IS NOT NULL");
            let mut stmt = self.conn.prepare_cached(&sql).at(&self.path)?;
            let rows = stmt.query_map([], interval_row).at(&self.path)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().at(&self.path)
        })
    }

    /// A step was evaluated at `now`: its watermark moves to `through` and the new
    /// intervals (value, deadline) become due, in one transaction. Intervals already on
    /// record keep their due time and deadline.
    pub fn sched_evaluated(
        &mut self,
        step: &str,
        through: Option<&str>,
        new: &[(String, Option<f64>)],
        now: f64,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        wait_busy(&path, || {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).at(&path)?;
            {
                let mut put = tx
                    .prepare_cached(
                        "INSERT INTO sched_steps (step, through, evaluated_at, first_seen) VALUES (?1, ?2, ?3, ?3) \
                         ON CONFLICT (step) DO UPDATE SET through = coalesce(excluded.through, through), \
                         evaluated_at = excluded.evaluated_at",
                    )
                    .at(&path)?;
                put.execute(params![step, through, now]).at(&path)?;
                let mut add = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO sched_intervals (step, value, due_at, deadline) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .at(&path)?;
                for (value, deadline) in new {
                    add.execute(params![step, value, now, deadline]).at(&path)?;
                }
            }
            tx.commit().at(&path)
        })
    }

    /// A tick built these intervals: one more attempt each, and `done_at = now` for those
    /// whose tasks all succeeded or were up to date.
    pub fn sched_built(&mut self, built: &[(String, String, bool)], now: f64) -> Result<(), StateError> {
        let path = self.path.clone();
        wait_busy(&path, || {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).at(&path)?;
            {
                let mut up = tx
                    .prepare_cached(
                        "UPDATE sched_intervals SET attempts = attempts + 1, \
                         done_at = CASE WHEN ?3 THEN ?4 ELSE NULL END WHERE step = ?1 AND value = ?2",
                    )
                    .at(&path)?;
                for (step, value, done) in built {
                    up.execute(params![step, value, done, now]).at(&path)?;
                }
            }
            tx.commit().at(&path)
        })
    }

    /// The SLA check (SPEC §10), in one transaction: every due interval past its deadline
    /// that was not done by then and has no miss on record gets one now; returns those.
    /// A miss is therefore announced once, by whoever records it.
    pub fn sched_sla_check(&mut self, now: f64) -> Result<Vec<Interval>, StateError> {
        let path = self.path.clone();
        wait_busy(&path, || {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).at(&path)?;
            let missed = {
                let sql = format!(
                    "SELECT {INTERVAL_COLUMNS} FROM sched_intervals WHERE sla_missed_at IS NULL \
                     AND deadline IS NOT NULL AND deadline < ?1 AND (done_at IS NULL OR done_at > deadline) \
                     ORDER BY step, value"
                );
                let mut stmt = tx.prepare_cached(&sql).at(&path)?;
                let rows = stmt.query_map([now], interval_row).at(&path)?;
                let missed = rows.collect::<rusqlite::Result<Vec<_>>>().at(&path)?;
                let mut mark = tx
                    .prepare_cached("UPDATE sched_intervals SET sla_missed_at = ?3 WHERE step = ?1 AND value = ?2")
                    .at(&path)?;
                for m in &missed {
                    mark.execute(params![m.step, m.value, now]).at(&path)?;
                }
                missed
            };
            tx.commit().at(&path)?;
            Ok(missed)
        })
    }

    /// Mark a run as a scheduler tick (`kind = 'schedule'`).
    pub fn set_run_kind(&mut self, run_id: i64, kind: &str) -> Result<(), StateError> {
        let path = self.path.clone();
        wait_busy(&path, || {
            self.conn
                .prepare_cached("UPDATE runs SET kind = ?2 WHERE id = ?1")
                .at(&path)?
                .execute(params![run_id, kind])
                .at(&path)?;
            Ok(())
        })
    }

    /// Take the scheduler lease for `me`, if nobody else holds it: free, held by `me`,
    /// or held by a holder that is dead (same host, no such pid) or silent for longer than
    /// `stale_after` seconds. Otherwise the holder.
    pub fn scheduler_acquire(&mut self, me: &Holder, stale_after: f64) -> Result<Option<SchedulerHolder>, StateError> {
        let path = self.path.clone();
        wait_busy(&path, || {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).at(&path)?;
            let now = now_s();
            let current = tx
                .prepare_cached("SELECT holder, pid, host, started_at, heartbeat_at FROM scheduler WHERE id = 1")
                .at(&path)?
                .query_row([], |r| {
                    Ok(SchedulerHolder {
                        holder: r.get(0)?,
                        pid: r.get(1)?,
                        host: r.get(2)?,
                        started_at: r.get(3)?,
                        heartbeat_at: r.get(4)?,
                    })
                })
                .optional()
                .at(&path)?;
            if let Some(c) = current
                && c.holder != me.id
                && now - c.heartbeat_at <= stale_after
                && (c.host != me.host || pid_alive(c.pid))
            {
                return Ok(Some(c));
            }
            tx.execute(
                "INSERT INTO scheduler (id, holder, pid, host, started_at, heartbeat_at) VALUES (1, ?1, ?2, ?3, ?4, ?4) \
                 ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, pid = excluded.pid, host = excluded.host, \
                 started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
                params![me.id, me.pid, me.host, now],
            )
            .at(&path)?;
            tx.commit().at(&path)?;
            Ok(None)
        })
    }

    /// Renew the scheduler lease; false if `me` no longer holds it.
    pub fn scheduler_heartbeat(&mut self, me: &Holder) -> Result<bool, StateError> {
        let path = self.path.clone();
        wait_busy(&path, || {
            let n = self
                .conn
                .prepare_cached("UPDATE scheduler SET heartbeat_at = ?2 WHERE id = 1 AND holder = ?1")
                .at(&path)?
                .execute(params![me.id, now_s()])
                .at(&path)?;
            Ok(n == 1)
        })
    }

    /// Give the scheduler lease back (if `me` holds it).
    pub fn scheduler_release(&mut self, me: &Holder) -> Result<(), StateError> {
        let path = self.path.clone();
        wait_busy(&path, || {
            self.conn
                .prepare_cached("DELETE FROM scheduler WHERE id = 1 AND holder = ?1")
                .at(&path)?
                .execute([&me.id])
                .at(&path)?;
            Ok(())
        })
    }
}
