//! What the next build needs after flux died (SPEC §5, §8): facts stored on attempts as
//! they run (process groups, expected fingerprints, executor job ids), and the runs whose
//! flux is gone, with what they left running.

use rusqlite::{TransactionBehavior, params};

use super::{Hash, SqlContext, StateDb, StateError, hash_at, hostname, int_at, now_s, pid_alive};

/// A fact about one attempt `(run_id, task_id, attempt)`, stored on its row.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptFact {
    /// A command of the attempt was spawned as the leader of process group `pgid`, which
    /// started at `start` (clock ticks since boot).
    Group { run_id: i64, task_id: String, attempt: u32, pgid: i32, start: u64 },
    /// The executor ran the attempt as job `job_id` (a Slurm job id).
    Job { run_id: i64, task_id: String, attempt: u32, job_id: String },
}

/// A run whose flux died (see [`StateDb::dead_runs`]): what is left to clean up.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadRun {
    pub id: i64,
    /// Process groups its attempts recorded: (pgid, leader start time).
    pub groups: Vec<(i32, u64)>,
    /// Its attempts still `running`, as they were when it died.
    pub running: Vec<DeadAttempt>,
}

/// An attempt that was running when its flux died.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadAttempt {
    pub run_id: i64,
    pub task_id: String,
    pub attempt: u32,
    pub reason: Option<String>,
    pub started_at: f64,
    /// The fingerprint it was started for, if recorded.
    pub expect: Option<(Hash, Hash)>,
}

pub(super) fn write_attempt_facts(tx: &rusqlite::Transaction<'_>, facts: &[AttemptFact]) -> rusqlite::Result<()> {
    let mut group = tx.prepare_cached(
        "UPDATE attempts SET pgid = ?4, pgid_start = ?5 WHERE run_id = ?1 AND task_id = ?2 AND attempt = ?3",
    )?;
    let mut job =
        tx.prepare_cached("UPDATE attempts SET job_id = ?4 WHERE run_id = ?1 AND task_id = ?2 AND attempt = ?3")?;
    for f in facts {
        match f {
            AttemptFact::Job { run_id, task_id, attempt, job_id } => {
                job.execute(params![run_id, task_id, attempt, job_id])?
            }
            AttemptFact::Group { run_id, task_id, attempt, pgid, start } => {
                group.execute(params![run_id, task_id, attempt, pgid, *start as i64])?
            }
        };
    }
    Ok(())
}

impl StateDb {
    /// Runs of this host that never ended and whose flux process is gone: flux died
    /// (kill -9, power cut of a terminal, a crash) while they ran. A run whose pid now
    /// belongs to another process counts as alive (it is left for later, never touched).
    pub fn dead_runs(&self) -> Result<Vec<DeadRun>, StateError> {
        let path = &self.path;
        let host = hostname();
        let open: Vec<(i64, Option<i64>, Option<String>)> = self
            .conn
            .prepare_cached("SELECT id, pid, host FROM runs WHERE ended_at IS NULL")
            .at(path)?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .at(path)?
            .collect::<rusqlite::Result<_>>()
            .at(path)?;
        let mut out = Vec::new();
        for (id, pid, run_host) in open {
            let Some(pid) = pid else { continue };
            if run_host != host || pid_alive(pid) {
                continue;
            }
            let groups = self
                .conn
                .prepare_cached("SELECT DISTINCT pgid, pgid_start FROM attempts WHERE run_id = ?1 AND pgid IS NOT NULL")
                .at(path)?
                .query_map([id], |r| Ok((r.get::<_, i32>(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0) as u64)))
                .at(path)?
                .collect::<rusqlite::Result<_>>()
                .at(path)?;
            let running = self
                .conn
                .prepare_cached(
                    "SELECT task_id, attempt, reason, started_at, expect_cmd_hash, expect_inputs_hash \
                     FROM attempts WHERE run_id = ?1 AND status = 'running'",
                )
                .at(path)?
                .query_map([id], |r| {
                    let expect = match (hash_at(r, 4)?, hash_at(r, 5)?) {
                        (Some(c), Some(i)) => Some((c, i)),
                        _ => None,
                    };
                    Ok(DeadAttempt {
                        run_id: id,
                        task_id: r.get(0)?,
                        attempt: int_at(r, 1)?,
                        reason: r.get(2)?,
                        started_at: r.get(3)?,
                        expect,
                    })
                })
                .at(path)?
                .collect::<rusqlite::Result<_>>()
                .at(path)?;
            out.push(DeadRun { id, groups, running });
        }
        Ok(out)
    }

    /// Close a dead run once what it left is cleaned up: its `running` attempts become
    /// `interrupted` (flux died) and the run ends `interrupted`.
    pub fn close_dead_run(&mut self, run_id: i64) -> Result<(), StateError> {
        let path = &self.path;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).at(path)?;
        let now = now_s();
        tx.prepare_cached(
            "UPDATE attempts SET status = 'interrupted', ended_at = ?2, \
             error = 'flux died while it ran (run ' || ?1 || ')' WHERE run_id = ?1 AND status = 'running'",
        )
        .at(path)?
        .execute(params![run_id, now])
        .at(path)?;
        tx.prepare_cached("UPDATE runs SET ended_at = ?2, status = 'interrupted' WHERE id = ?1 AND ended_at IS NULL")
            .at(path)?
            .execute(params![run_id, now])
            .at(path)?;
        tx.commit().at(path)
    }
}
