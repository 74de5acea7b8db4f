//! Why a task runs, or why it is up to date (`flux build -n --explain TASK`, `flux why
//! TASK`): its outputs, its inputs' digests against those of its last success, its
//! rendered command against the recorded one, and the upstream tasks that make it stale.
//!
//! Also what a successful (or marked) attempt records for this: its commands rendered with
//! the final targets, `--var` values redacted, and each input's digest.

use std::fmt::Write as _;

use crate::graph::{NONE, TaskGraph};
use crate::plan::{Planner, RunText};
use crate::state::StateDb;
use crate::target::Meta;

/// What replaces a `--var` value in anything flux keeps.
pub const REDACTED: &str = "***";

/// `text` with every value in `secrets` (as written, and shell-quoted) replaced.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        let mut quoted = String::new();
        crate::template::shell_quote(s, &mut quoted);
        if quoted != *s {
            out = out.replace(&quoted, REDACTED);
        }
        out = out.replace(s.as_str(), REDACTED);
    }
    out
}

/// A task's commands (pre, run, post), env and action, rendered with the final targets,
/// one per line, `--var` values redacted.
pub fn command_text(p: &Planner<'_>, t: u32, id: &str, secrets: &[String]) -> Result<String, String> {
    let cmds = p.render_final(t, id)?;
    Ok(redact(&p.command_lines(t, &cmds), secrets))
}

/// Each input's digest now, in order (`None` when missing or unreadable).
fn digests_now(p: &Planner<'_>, t: u32, metas: &[Option<Meta>]) -> Vec<Option<crate::state::Hash>> {
    let task = &p.g.tasks[t as usize];
    task.inputs()
        .iter()
        .map(|&i| {
            let name = p.g.target(i);
            metas[i as usize].and_then(|m| p.digests.digest(name, &p.abs(name), &m).ok())
        })
        .collect()
}

/// The record of what a successful attempt ran and read, as `(commands, inputs_json)`:
/// from `known` when its decision made it (the inputs' digests then are those its
/// fingerprint was made of), or rendered and digested now; `--var` values redacted.
pub fn detail(
    p: &Planner<'_>,
    t: u32,
    id: &str,
    metas: &[Option<Meta>],
    secrets: &[String],
    known: Option<Box<RunText>>,
) -> Option<(String, String)> {
    let (commands, inputs_json) = match known {
        Some(k) => (String::from(k.commands), p.inputs_json(t, k.digests.iter().copied().map(Some))),
        None => {
            (p.command_lines(t, &p.render_final(t, id).ok()?), p.inputs_json(t, digests_now(p, t, metas).into_iter()))
        }
    };
    let commands = if secrets.iter().all(String::is_empty) { commands } else { redact(&commands, secrets) };
    Some((commands, inputs_json))
}

fn hex(h: crate::state::Hash) -> String {
    crate::state::hex(&h)
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// What the dry run decided, per task: its status (`would-run`, `skipped`) and reason.
pub struct Decided<'r> {
    pub status: &'r str,
    pub reason: Option<&'static str>,
    pub message: Option<&'r str>,
}

/// The explanation of task `t`, as printed.
#[allow(clippy::too_many_arguments)]
pub fn explain<'r>(
    p: &Planner<'_>,
    g: &TaskGraph,
    t: u32,
    ids: &[String],
    decided: &dyn Fn(u32) -> Decided<'r>,
    metas: &[Option<Meta>],
    db: Option<&StateDb>,
    secrets: &[String],
) -> String {
    let ti = t as usize;
    let id = &ids[ti];
    let task = &g.tasks[ti];
    let mut o = String::new();
    let d = decided(t);
    match (d.status, d.reason, d.message) {
        ("would-run", Some(r), _) => {
            let _ = writeln!(o, "{id}: would run ({r})");
        }
        ("would-run", None, Some(m)) => {
            let _ = writeln!(o, "{id}: would fail: {m}");
        }
        _ => {
            let _ = writeln!(o, "{id}: up to date");
        }
    }
    let record = p.records.get(id);
    if record.is_some_and(|r| r.forced) {
        let _ = writeln!(o, "  cleared by `flux clear`: it reruns whatever else holds");
    }
    if let Some(r) = record
        && matches!(r.last_status, crate::state::Status::Failed | crate::state::Status::Interrupted)
    {
        let _ = writeln!(o, "  its last attempt {}", r.last_status);
    }
    // Outputs.
    if task.outputs().is_empty() {
        let _ = writeln!(o, "  outputs: none (complete when its last success matches)");
    } else {
        let _ = writeln!(o, "  outputs:");
        for &out in task.outputs() {
            let state = if metas[out as usize].is_some() { "exists" } else { "missing" };
            let _ = writeln!(o, "    {}  {state}", g.target(out));
        }
    }
    let last = db.and_then(|db| db.last_success(id).ok().flatten());
    match (&last, record.and_then(|r| r.success_at)) {
        (Some(l), _) => {
            let when = l.ended_at.and_then(|e| chrono::DateTime::from_timestamp(e as i64, 0));
            let when = when.map(|w| w.format(" at %Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default();
            let _ = writeln!(o, "  last success: run {}{when} ({})", l.run_id, l.status);
        }
        (None, Some(_)) => {
            let _ = writeln!(
                o,
                "  last success: on record, with no rendered commands or input digests (adopted, or recorded by an older flux)"
            );
        }
        (None, None) => {
            let _ = writeln!(o, "  last success: none on record");
        }
    }
    // Inputs.
    let recorded: Vec<(String, Option<String>)> = last
        .as_ref()
        .and_then(|l| serde_json::from_str::<Vec<(String, Option<String>)>>(&l.inputs_json).ok())
        .unwrap_or_default();
    if task.inputs().is_empty() {
        let _ = writeln!(o, "  inputs: none");
    } else {
        let _ = writeln!(o, "  inputs (digest now vs. at the last success):");
        let now = digests_now(p, t, metas);
        for (k, &i) in task.inputs().iter().enumerate() {
            let name = g.target(i);
            let cur = now.get(k).copied().flatten().map(hex);
            let before = recorded.iter().find(|(n, _)| n == name).and_then(|x| x.1.clone());
            let state = match (&cur, &before, last.is_some()) {
                (None, _, _) => "missing".to_string(),
                (Some(_), None, true) => "new since the last success".to_string(),
                (Some(_), None, false) => "no digest on record".to_string(),
                (Some(c), Some(b), _) if c == b => "unchanged".to_string(),
                (Some(c), Some(b), _) => format!("changed ({}… -> {}…)", short(b), short(c)),
            };
            let producer = g.producer[i as usize];
            let note = if producer != NONE && decided(producer).status == "would-run" {
                format!(" (its producer {} would run first)", ids[producer as usize])
            } else {
                String::new()
            };
            let _ = writeln!(o, "    {name}  {state}{note}");
        }
        for (name, _) in recorded.iter().filter(|(n, _)| !task.inputs().iter().any(|&i| g.target(i) == n)) {
            let _ = writeln!(o, "    {name}  no longer an input");
        }
    }
    // Command.
    let hash_changed = record.and_then(|r| r.cmd_hash).zip(p.cmd_hash(t, id).ok()).map(|(a, b)| a != b);
    match (command_text(p, t, id, secrets), &last) {
        (Err(e), _) => {
            let _ = writeln!(o, "  command: cannot render: {e}");
        }
        (Ok(now), Some(l)) if now != l.commands || hash_changed == Some(true) => {
            let _ = writeln!(o, "  command: changed since the last success");
            for line in diff(&l.commands, &now) {
                let _ = writeln!(o, "    {line}");
            }
        }
        (Ok(_), Some(_)) => {
            let _ = writeln!(o, "  command: unchanged");
        }
        (Ok(now), None) => {
            let verdict = match hash_changed {
                Some(true) => "changed since the last success (its text is not on record)",
                Some(false) => "unchanged",
                None => "nothing on record to compare with",
            };
            let _ = writeln!(o, "  command: {verdict}");
            for line in now.lines() {
                let _ = writeln!(o, "      {line}");
            }
        }
    }
    // Upstream.
    let stale: Vec<u32> = task.deps().iter().copied().filter(|&u| decided(u).status == "would-run").collect();
    if stale.is_empty() {
        if !task.deps().is_empty() {
            let _ = writeln!(o, "  upstream: up to date");
        }
    } else {
        for u in stale {
            let why = decided(u).reason.unwrap_or("a missing source");
            let _ = writeln!(o, "  upstream: {} would run ({why}), so this task may see new inputs", ids[u as usize]);
        }
    }
    o
}

/// A line diff of `old` and `new` (`- ` removed, `+ ` added, `  ` kept), by longest
/// common subsequence: commands are a few lines.
fn diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_removed_and_added_lines() {
        assert_eq!(diff("run: a\nrun: b\n", "run: a\nrun: c\n"), ["  run: a", "- run: b", "+ run: c"]);
        assert_eq!(diff("", "x"), ["+ x"]);
    }

    #[test]
    fn redact_hides_raw_and_quoted_values() {
        let s = vec!["a b'c".to_string(), "tok".to_string()];
        let mut q = String::new();
        crate::template::shell_quote("a b'c", &mut q);
        assert_eq!(redact(&format!("x {q} tok"), &s), "x *** ***");
    }
}
