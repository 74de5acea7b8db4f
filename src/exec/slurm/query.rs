//! What Slurm says of jobs: one call per polling round for all of a run's jobs (`sacct`
//! where accounting is set up, else `squeue`), and the cluster's settings, read once.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use super::cmd::run_within;

/// Slurm states in which the wrapper cannot have written an exit code, and what they mean.
pub(super) const KILLED_STATES: &[(&str, &str)] = &[
    ("CANCELLED", "the job was cancelled"),
    ("TIMEOUT", "the job reached its time limit (--time)"),
    ("NODE_FAIL", "the node running the job failed"),
    ("OUT_OF_MEMORY", "the job ran out of memory (--mem)"),
    ("PREEMPTED", "the job was preempted"),
    ("BOOT_FAIL", "the node could not boot for the job"),
    ("DEADLINE", "the job reached its deadline"),
];

/// The meaning of a state among [`KILLED_STATES`].
pub(super) fn killed(state: &str) -> Option<(&'static str, &'static str)> {
    KILLED_STATES.iter().find(|(k, _)| *k == state).copied()
}

/// Whether a job in `state` has ended. (`COMPLETING` has not: a job cancelled by Slurm
/// passes through it, and its wrapper may still write an exit code.)
pub(super) fn is_final(state: &str) -> bool {
    killed(state).is_some() || state == "COMPLETED" || state == "FAILED"
}

/// What flux needs of the cluster's configuration (one `scontrol show config`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Cluster {
    /// `MaxArraySize`: an array's indexes are below it.
    pub max_array: usize,
    /// Accounting is set up (`AccountingStorageType` is slurmdbd) and `sacct` answers.
    pub accounting: bool,
}

impl Cluster {
    pub(super) fn ask(limit: Duration) -> Cluster {
        let config = run_within(Command::new("scontrol").args(["show", "config"]), limit).unwrap_or_default();
        let value = |key: &str| {
            config.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        let max_array = value("MaxArraySize").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1001).max(1);
        // Configured is not enough: slurmdbd may be down (then sacct fails at once).
        let accounting = value("AccountingStorageType").is_some_and(|v| v.contains("slurmdbd"))
            && run_within(Command::new("sacct").args(["-n", "-X", "-o", "JobID", "-j", "1"]), limit).is_ok();
        Cluster { max_array, accounting }
    }
}

/// Job id → Slurm state, for the jobs Slurm knows; a job missing from it is unknown to
/// Slurm (it ended long enough ago to be forgotten).
pub(super) type Listing = HashMap<String, String>;

/// The state of every job named one of `names`, `-r`: one line per array element.
pub(super) fn squeue(names: &[String], limit: Duration) -> Result<Listing, String> {
    let out = run_within(
        Command::new("squeue").args(["-h", "-r", "-t", "all", "--name", &names.join(","), "-o", "%i %T"]),
        limit,
    )?;
    Ok(out.lines().filter_map(|l| l.split_once(' ').map(|(i, s)| (i.to_string(), s.trim().to_string()))).collect())
}

/// The state of the jobs `ids` (array elements as `<array>_<i>`) from accounting. Array
/// elements that have not started show as one line `<array>_[i-j]`: listed as pending.
/// A job slurmdbd has not heard of yet is missing.
pub(super) fn sacct(ids: &[&str], limit: Duration) -> Result<Listing, String> {
    let mut bases: Vec<&str> = ids.iter().map(|id| id.split('_').next().unwrap_or(id)).collect();
    bases.sort_unstable();
    bases.dedup();
    let out =
        run_within(Command::new("sacct").args(["-n", "-X", "-P", "-o", "JobID,State", "-j", &bases.join(",")]), limit)?;
    Ok(parse_sacct(&out, ids))
}

/// `sacct -X -P -o JobID,State`'s lines, for the jobs `ids`.
fn parse_sacct(out: &str, ids: &[&str]) -> Listing {
    let mut listing = Listing::new();
    let mut pending_arrays = Vec::new();
    for line in out.lines() {
        let Some((id, state)) = line.split_once('|') else { continue };
        // `CANCELLED by 0`: the state is the first word.
        let state = state.split_whitespace().next().unwrap_or_default().to_string();
        match id.split_once("_[") {
            Some((base, _)) => pending_arrays.push((base.to_string(), state)),
            None => {
                listing.insert(id.to_string(), state);
            }
        }
    }
    for id in ids {
        if let Some((base, _)) = id.split_once('_')
            && !listing.contains_key(*id)
            && let Some((_, state)) = pending_arrays.iter().find(|(b, _)| b == base)
        {
            listing.insert(id.to_string(), state.clone());
        }
    }
    listing
}

/// Slurm's state of one job that ended without an exit file: `scontrol` (kept
/// `MinJobAge` after the end), else `sacct` where accounting is set up. `None` when
/// neither knows.
pub(super) fn state_of(id: &str, accounting: bool, limit: Duration) -> Option<String> {
    if let Ok(out) = run_within(Command::new("scontrol").args(["show", "job", "-o", id]), limit)
        && let Some(st) = out.split_whitespace().find_map(|w| w.strip_prefix("JobState="))
    {
        return Some(st.to_string());
    }
    if !accounting {
        return None;
    }
    sacct(&[id], limit).ok()?.remove(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sacct_lines_give_each_job_and_array_element_its_state() {
        let out = "41|COMPLETED\n42|CANCELLED by 0\n43_0|RUNNING\n43_[1-3]|PENDING\n";
        let l = parse_sacct(out, &["41", "42", "43_0", "43_2", "44"]);
        assert_eq!(l.get("41").map(String::as_str), Some("COMPLETED"));
        assert_eq!(l.get("42").map(String::as_str), Some("CANCELLED"));
        assert_eq!(l.get("43_0").map(String::as_str), Some("RUNNING"));
        assert_eq!(l.get("43_2").map(String::as_str), Some("PENDING"));
        assert_eq!(l.get("44"), None, "not heard of yet");
        assert!(is_final("CANCELLED") && is_final("FAILED") && !is_final("COMPLETING"));
    }
}
