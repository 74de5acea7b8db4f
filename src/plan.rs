//! Staleness (SPEC §5): why a task must run, decided when the task becomes ready (after
//! its upstream finished), so that an upstream which rewrote identical bytes does not make
//! it run (early cutoff). A decision returns the [`Reason`], not just a verdict; the same
//! value feeds `--dry-run`, `--output json` and the state DB.
//!
//! The planner reads stats and digests it is given; it spawns nothing and writes nothing.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::fluxfile::{Action, Fluxfile, Step};
use crate::graph::{NONE, TaskGraph, interval_rfc3339};
use crate::param::ParamValue;
use crate::state::{Hash, Records, Status};
use crate::target::{Digests, Meta};
use crate::template::Context;

/// Why a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An output does not exist.
    MissingOutput,
    /// `--force`, `--from` or `flux clear`.
    Forced,
    /// A step with no outputs and no successful run on record.
    NeverRun,
    /// An input's digest differs from the one recorded at the last success.
    InputChanged,
    /// The rendered command, env or action differs from the recorded one.
    CommandChanged,
    /// A dependency will run (provisional: only a dry run reports it).
    Upstream,
    /// The last attempt was interrupted.
    Incomplete,
    /// The last attempt failed.
    Failed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingOutput => "missing-output",
            Reason::Forced => "forced",
            Reason::NeverRun => "never-run",
            Reason::InputChanged => "input-changed",
            Reason::CommandChanged => "command-changed",
            Reason::Upstream => "upstream",
            Reason::Incomplete => "incomplete",
            Reason::Failed => "failed",
        }
    }
}

/// Which reasons count (`--rerun-triggers`).
#[derive(Debug, Clone, Copy)]
pub struct Triggers {
    pub missing: bool,
    pub input: bool,
    pub command: bool,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers { missing: true, input: true, command: true }
    }
}

/// The two parts of a task's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub cmd: Hash,
    pub inputs: Hash,
}

/// The outcome of a staleness check.
#[derive(Debug)]
pub enum Decision {
    /// Up to date. `adopt` carries a fingerprint to record for outputs found with no record;
    /// `quick` a quick key to record because the fingerprint was confirmed the slow way.
    Skip { adopt: Option<Fingerprint>, quick: Option<Hash> },
    /// Run it, for this reason; the fingerprint is what will be recorded on success
    /// (absent in dry runs where upstream has not produced the inputs yet), with its quick
    /// key, and what the success's record says it ran and read (rendered once, with it).
    Run { reason: Reason, fp: Option<Fingerprint>, quick: Option<Hash>, text: Option<Box<RunText>> },
    /// It cannot run: a source is missing.
    Fail { message: String },
}

/// What a successful attempt records of what it ran and read (`flux why`), as made with
/// its fingerprint: its commands rendered with the final targets, one per line (`--var`
/// values not yet redacted), and its inputs' digests in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunText {
    pub commands: Box<str>,
    pub digests: Box<[Hash]>,
}

/// A fingerprint with what it was computed from.
struct Printed {
    fp: Fingerprint,
    cmds: Commands,
    digests: Vec<Hash>,
}

/// Who asks for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deciding {
    /// A dry run: no fingerprint where a reason to run is already known.
    Dry,
    /// A build, for a task about to be queued.
    Build,
    /// A build deciding every task ahead, or deciding a task that may wait long before it
    /// starts: the same decision without the record text (held for each such task, it
    /// would cost memory in proportion to the graph).
    Ahead,
}

/// What commands are rendered with: everything in §2.2's context.
pub struct CmdRender<'a> {
    pub inputs: &'a [String],
    pub outputs: &'a [String],
    pub attempt: u32,
    pub run_id: i64,
}

/// The key whose blake3 is the command half of a fingerprint.
#[derive(Serialize)]
struct CmdKey<'a> {
    step: &'a str,
    pre: &'a [String],
    run: &'a [String],
    post: &'a [String],
    env: &'a [(String, String)],
    action: Option<&'static str>,
    stage: bool,
}

/// Reads records, stats and digests to decide; renders commands.
pub struct Planner<'a> {
    pub ff: &'a Fluxfile,
    pub g: &'a TaskGraph,
    pub records: &'a Records,
    pub digests: &'a Digests,
    pub forced: HashSet<u32>,
    pub triggers: Triggers,
    /// When the targets were stat'ed (ns since the epoch): quick keys are trusted only for
    /// inputs whose mtime is older than the stats by the racy margin.
    pub stat_ns: i64,
    /// Per step: a digest of everything its commands are rendered from besides the task.
    pub step_keys: Vec<Hash>,
    /// Why a remote target could not be stat'ed (it then counts as missing), by target.
    pub stat_errors: std::sync::Mutex<std::collections::HashMap<u32, String>>,
}

/// What a step's commands are rendered from, besides the task's own values.
pub fn step_keys(ff: &Fluxfile) -> Vec<Hash> {
    ff.steps
        .iter()
        .map(|s| {
            let mut h = blake3::Hasher::new();
            h.update(env!("CARGO_PKG_VERSION").as_bytes());
            h.update(&[0]);
            h.update(s.name.as_bytes());
            for (label, tpls) in [("pre", &s.pre), ("run", &s.run), ("post", &s.post)] {
                h.update(label.as_bytes());
                for t in tpls {
                    h.update(&[0]);
                    h.update(ff.engine.source(t.id).as_bytes());
                }
            }
            for (k, t) in &s.env {
                h.update(b"\0env\0");
                h.update(k.as_bytes());
                h.update(&[0]);
                h.update(ff.engine.source(t.id).as_bytes());
            }
            for (k, v) in &ff.vars {
                h.update(b"\0var\0");
                h.update(k.as_bytes());
                h.update(&[0]);
                h.update(v.as_bytes());
            }
            h.update(&[u8::from(s.stage), u8::from(s.action.is_some())]);
            *h.finalize().as_bytes()
        })
        .collect()
}

impl<'a> Planner<'a> {
    /// The absolute path of a local target.
    pub fn abs(&self, target: &str) -> PathBuf {
        self.ff.abs(target)
    }

    /// Decide one task. `metas` holds the current stat of every target; `upstream_runs`
    /// says whether a dependency will run (dry runs only; real builds decide after it ran).
    pub fn decide(&self, t: u32, id: &str, metas: &[Option<Meta>], upstream_runs: bool, how: Deciding) -> Decision {
        let dry = how == Deciding::Dry;
        let task = &self.g.tasks[t as usize];
        let step = &self.ff.steps[task.step as usize];
        for &i in task.inputs() {
            if self.g.producer[i as usize] == NONE && metas[i as usize].is_none() {
                let cause = self.stat_errors.lock().ok().and_then(|e| e.get(&i).map(|c| format!(" ({c})")));
                return Decision::Fail {
                    message: format!(
                        "missing source `{}` needed by {id}{}",
                        self.g.target(i),
                        cause.unwrap_or_default()
                    ),
                };
            }
        }
        let record = self.records.get(id);
        let forced = self.forced.contains(&t) || record.is_some_and(|r| r.forced);
        let missing = task.outputs().iter().any(|&o| metas[o as usize].is_none());
        let mut reason = if forced {
            Some(Reason::Forced)
        } else if missing && self.triggers.missing {
            Some(Reason::MissingOutput)
        } else if task.outputs().is_empty() && record.is_none_or(|r| r.cmd_hash.is_none()) {
            Some(Reason::NeverRun)
        } else {
            match record.map(|r| r.last_status) {
                Some(Status::Failed) => Some(Reason::Failed),
                // `running` on record: flux died while it ran (stage = false leaves what it
                // wrote in place, so it must run again).
                Some(Status::Interrupted | Status::Running) if !step.stage => Some(Reason::Incomplete),
                Some(Status::Interrupted) => Some(Reason::Failed),
                _ => None,
            }
        };
        if dry && upstream_runs {
            // Its inputs will change, but a command of its own that changed is the better
            // reason to show (it is what the real build will record).
            let own = reason.or_else(|| {
                let r = record?;
                let changed = r.cmd_hash.is_some() && self.triggers.command && self.cmd_hash(t, id).ok() != r.cmd_hash;
                changed.then_some(Reason::CommandChanged)
            });
            return Decision::Run { reason: own.unwrap_or(Reason::Upstream), fp: None, quick: None, text: None };
        }
        if dry && reason.is_some() {
            return Decision::Run { reason: reason.unwrap_or(Reason::Forced), fp: None, quick: None, text: None };
        }
        // Quick check: inputs with the very same stats and commands rendered from the very
        // same sources and values cannot have changed: no digest, no rendering.
        let quick = self.quick_key(t, id, metas);
        if reason.is_none()
            && let (Some(r), Some((key, newest))) = (record, quick)
            && r.cmd_hash.is_some()
            && r.quick_key == Some(key)
            && newest < r.verified_ns - crate::target::RACY_MARGIN_NS
        {
            return Decision::Skip { adopt: None, quick: None };
        }
        let quick = quick.map(|(k, _)| k);
        let printed = match self.print(t, id, metas) {
            Ok(p) => p,
            Err(message) => return Decision::Fail { message },
        };
        let fp = printed.fp;
        let run = |reason| {
            let text = (how == Deciding::Build).then(|| Box::new(self.run_text(t, printed)));
            Decision::Run { reason, fp: Some(fp), quick, text }
        };
        if let Some(r) = reason {
            return run(r);
        }
        match record {
            None => Decision::Skip { adopt: Some(fp), quick },
            Some(r) => {
                let cmd_changed = r.cmd_hash.is_some_and(|h| h != fp.cmd);
                let inputs_changed = r.inputs_hash.is_some_and(|h| h != fp.inputs);
                if cmd_changed && self.triggers.command {
                    reason = Some(Reason::CommandChanged);
                } else if inputs_changed && self.triggers.input {
                    reason = Some(Reason::InputChanged);
                } else if r.cmd_hash.is_none() {
                    // Known task with no fingerprint on record: adopt what is there.
                    return Decision::Skip { adopt: Some(fp), quick };
                }
                match reason {
                    Some(reason) => run(reason),
                    // A change that --rerun-triggers told us to ignore stays unconfirmed:
                    // no quick key, so a later plain build still sees it.
                    None if cmd_changed || inputs_changed => Decision::Skip { adopt: None, quick: None },
                    None => Decision::Skip { adopt: None, quick },
                }
            }
        }
    }

    /// The quick key of a task (its step's key, its id, its targets and its inputs' stats)
    /// and the newest input mtime; `None` when an input is a directory (its own stat does
    /// not change with its files) or is missing.
    fn quick_key(&self, t: u32, id: &str, metas: &[Option<Meta>]) -> Option<(Hash, i64)> {
        let task = &self.g.tasks[t as usize];
        let mut h = blake3::Hasher::new();
        h.update(&self.step_keys[task.step as usize]);
        h.update(id.as_bytes());
        let mut newest = i64::MIN;
        for &i in task.inputs() {
            let m = metas[i as usize]?;
            if m.is_dir {
                return None;
            }
            newest = newest.max(m.mtime_ns);
            h.update(b"\0i");
            h.update(self.g.target(i).as_bytes());
            h.update(&m.size.to_le_bytes());
            h.update(&m.mtime_ns.to_le_bytes());
            h.update(&m.inode.to_le_bytes());
        }
        for &o in task.outputs() {
            h.update(b"\0o");
            h.update(self.g.target(o).as_bytes());
        }
        Some((*h.finalize().as_bytes(), newest))
    }

    /// The fingerprint of a task as its inputs are now.
    pub fn fingerprint(&self, t: u32, id: &str, metas: &[Option<Meta>]) -> Result<Fingerprint, String> {
        self.print(t, id, metas).map(|p| p.fp)
    }

    /// The fingerprint, with the commands and input digests it was computed from.
    fn print(&self, t: u32, id: &str, metas: &[Option<Meta>]) -> Result<Printed, String> {
        let task = &self.g.tasks[t as usize];
        let mut h = blake3::Hasher::new();
        let mut digests = Vec::with_capacity(task.inputs().len());
        for &i in task.inputs() {
            let name = self.g.target(i);
            let Some(meta) = metas[i as usize] else {
                return Err(format!("input `{name}` of {id} does not exist"));
            };
            let d = self
                .digests
                .digest(name, &self.abs(name), &meta)
                .map_err(|e| format!("cannot read input `{name}` of {id}: {e}"))?;
            h.update(name.as_bytes());
            h.update(&[0]);
            h.update(&d);
            digests.push(d);
        }
        let inputs = *h.finalize().as_bytes();
        let cmds = self.render_final(t, id)?;
        let cmd = self.hash_commands(t, &cmds)?;
        Ok(Printed { fp: Fingerprint { cmd, inputs }, cmds, digests })
    }

    /// What a success records of a task whose fingerprint was just computed.
    fn run_text(&self, t: u32, p: Printed) -> RunText {
        RunText { commands: self.command_lines(t, &p.cmds).into_boxed_str(), digests: p.digests.into_boxed_slice() }
    }

    /// A task's inputs with their digests (`None`: missing or unreadable), as the JSON
    /// array of `[target, hex digest or null]` that history records keep.
    pub fn inputs_json(&self, t: u32, digests: impl Iterator<Item = Option<Hash>>) -> String {
        let task = &self.g.tasks[t as usize];
        let items: Vec<(&str, Option<String>)> = task
            .inputs()
            .iter()
            .zip(digests)
            .map(|(&i, d)| (self.g.target(i), d.map(|d| crate::state::hex(&d))))
            .collect();
        serde_json::to_string(&items).unwrap_or_else(|_| "[]".to_string())
    }

    /// A task's commands (pre, run, post), env, action and staging, one per line, as
    /// `flux why` shows them and a success records them.
    pub fn command_lines(&self, t: u32, cmds: &Commands) -> String {
        let step = &self.ff.steps[self.g.tasks[t as usize].step as usize];
        let mut text = String::new();
        for (label, list) in [("pre", &cmds.pre), ("run", &cmds.run), ("post", &cmds.post)] {
            for c in list {
                let _ = writeln!(text, "{label}: {c}");
            }
        }
        for (k, v) in &cmds.env {
            let _ = writeln!(text, "env: {k}={v}");
        }
        if step.action.is_some() {
            text.push_str("action: copy\n");
        }
        let _ = writeln!(text, "stage: {}", step.stage);
        text
    }

    /// A task's commands and env rendered with the final target paths.
    pub fn render_final(&self, t: u32, id: &str) -> Result<Commands, RenderError> {
        let task = &self.g.tasks[t as usize];
        let ins: Vec<String> = task.inputs().iter().map(|&i| self.g.target(i).to_string()).collect();
        let outs: Vec<String> = task.outputs().iter().map(|&o| self.g.target(o).to_string()).collect();
        self.render_commands(t, id, &CmdRender { inputs: &ins, outputs: &outs, attempt: 1, run_id: 0 })
    }

    /// The command half of the fingerprint: what the commands, env and action render to
    /// with the final target paths. It needs no input to exist.
    pub fn cmd_hash(&self, t: u32, id: &str) -> Result<Hash, String> {
        let cmds = self.render_final(t, id)?;
        self.hash_commands(t, &cmds)
    }

    fn hash_commands(&self, t: u32, cmds: &Commands) -> Result<Hash, String> {
        let step = &self.ff.steps[self.g.tasks[t as usize].step as usize];
        let key = CmdKey {
            step: &step.name,
            pre: &cmds.pre,
            run: &cmds.run,
            post: &cmds.post,
            env: &cmds.env,
            action: step.action.map(|a| match a {
                Action::Copy => "copy",
            }),
            stage: step.stage,
        };
        let bytes = serde_json::to_vec(&key).map_err(|e| e.to_string())?;
        Ok(*blake3::hash(&bytes).as_bytes())
    }

    /// Render one command template (a hook) in a task's context.
    pub fn render_one(
        &self,
        t: u32,
        id: &str,
        tpl: &crate::fluxfile::Tpl,
        r: &CmdRender<'_>,
    ) -> Result<String, RenderError> {
        self.with_context(t, id, r, true, |ctx| {
            self.ff.engine.render(tpl.id, ctx).map_err(|e| self.render_error(tpl, ctx, format!("{id}: {e}")))
        })
    }

    /// Render a task's commands and env with the given target paths.
    pub fn render_commands(&self, t: u32, id: &str, r: &CmdRender<'_>) -> Result<Commands, RenderError> {
        let step = &self.ff.steps[self.g.tasks[t as usize].step as usize];
        let intervals = reads_interval(self.ff, step);
        self.with_context(t, id, r, intervals, |ctx| {
            let render = |tpls: &[crate::fluxfile::Tpl]| -> Result<Vec<String>, RenderError> {
                tpls.iter()
                    .map(|tpl| {
                        self.ff.engine.render(tpl.id, ctx).map_err(|e| {
                            let msg = format!("{id}: cannot render `{}`: {e}", self.ff.engine.source(tpl.id));
                            self.render_error(tpl, ctx, msg)
                        })
                    })
                    .collect()
            };
            let mut env = Vec::with_capacity(step.env.len());
            for (k, tpl) in &step.env {
                let v = self
                    .ff
                    .engine
                    .render(tpl.id, ctx)
                    .map_err(|e| self.render_error(tpl, ctx, format!("{id}: env {k}: {e}")))?;
                env.push((k.clone(), v));
            }
            Ok(Commands { pre: render(&step.pre)?, run: render(&step.run)?, post: render(&step.post)?, env })
        })
    }

    /// A render error, placed on the part of the template at fault when minijinja says.
    fn render_error(&self, tpl: &crate::fluxfile::Tpl, ctx: &Context<'_>, message: String) -> RenderError {
        let engine = &self.ff.engine;
        let span = match engine.error_at(tpl.id, ctx) {
            Some((off, len)) => tpl.span.within_string(engine.source(tpl.id), off, len),
            None => tpl.span.clone(),
        };
        RenderError { message, span }
    }

    /// Call `f` with the template context of a task's commands (SPEC §2.2). Without
    /// `intervals` (no template to be rendered can read them) `interval_start` and
    /// `interval_end` are left empty rather than computed.
    fn with_context<T>(
        &self,
        t: u32,
        id: &str,
        r: &CmdRender<'_>,
        intervals: bool,
        f: impl FnOnce(&Context<'_>) -> T,
    ) -> T {
        let task = &self.g.tasks[t as usize];
        let step = &self.ff.steps[task.step as usize];
        let params = param_strings(step, &task.params);
        let (start, end) = step
            .time_param
            .filter(|_| intervals)
            .and_then(|ti| interval_rfc3339(&step.params[ti].1, task.params[ti], self.ff.timezone))
            .unwrap_or_default();
        let extra: [(&str, String); 4] = [
            ("attempt", r.attempt.to_string()),
            ("run_id", r.run_id.to_string()),
            ("interval_start", start),
            ("interval_end", end),
        ];
        let ctx = Context {
            step: &step.name,
            task: id,
            params: &params,
            vars: &self.ff.vars,
            inputs: Some(r.inputs),
            outputs: Some(r.outputs),
            extra: &extra,
        };
        f(&ctx)
    }
}

/// Whether a step's commands or env may read `interval_start` or `interval_end`: yes
/// unless every one of their templates is on the template engine's fast path (whose
/// expressions name what they read) and none names them. Computing the two instants for
/// every task was a tenth of a dry run's rendering.
fn reads_interval(ff: &Fluxfile, step: &Step) -> bool {
    let tpls = step.pre.iter().chain(&step.run).chain(&step.post).chain(step.env.iter().map(|(_, t)| t));
    for tpl in tpls {
        let Some(segs) = ff.engine.segments(tpl.id) else { return true };
        let names = segs.iter().any(|s| {
            matches!(s, crate::template::Segment::Expr { name, .. } if name == "interval_start" || name == "interval_end")
        });
        if names {
            return true;
        }
    }
    false
}

/// Whether every command, env and hook template of `step` renders for each of its tasks,
/// whatever its values: templates on the fast path that read only names every task's
/// context defines, index `outputs` within their number and apply no filter that can
/// fail (a shift or `strftime` can leave the calendar). A dry run that does not show
/// commands need not render these to find the template that would fail.
pub fn renders_surely(ff: &Fluxfile, step: &Step) -> bool {
    use crate::template::{Filter, Segment};
    let hooks = [&step.on_success, &step.on_failure, &step.on_retry].into_iter().flatten();
    let mut tpls =
        step.pre.iter().chain(&step.run).chain(&step.post).chain(step.env.iter().map(|(_, t)| t)).chain(hooks);
    let n_out = i64::try_from(step.outputs.len()).unwrap_or(i64::MAX);
    tpls.all(|tpl| {
        let Some(segs) = ff.engine.segments(tpl.id) else { return false };
        segs.iter().all(|s| match s {
            Segment::Lit(_) => true,
            Segment::Expr { name, index, filters } => {
                // `params` and `vars` are maps, which the fast path leaves to minijinja.
                let name = name.as_str();
                let defined = !matches!(name, "params" | "vars")
                    && (matches!(
                        name,
                        "step"
                            | "task"
                            | "inputs"
                            | "outputs"
                            | "attempt"
                            | "run_id"
                            | "interval_start"
                            | "interval_end"
                    ) || step.params.iter().any(|(p, _)| p == name)
                        || ff.vars.iter().any(|(v, _)| v == name));
                let in_range = index.is_none_or(|i| name == "outputs" && (-n_out..n_out).contains(&i));
                let safe = filters.iter().all(|f| matches!(f, Filter::Basename | Filter::Dirname | Filter::Raw));
                defined && in_range && safe
            }
        })
    })
}

/// A command, hook or env template that does not render for a task.
#[derive(Debug)]
pub struct RenderError {
    /// `rollup[2024-01-05]: cannot render `…`: …`
    pub message: String,
    /// The template in the Fluxfile (narrowed to the expression at fault when known).
    pub span: crate::error::Span,
}

impl From<RenderError> for String {
    fn from(e: RenderError) -> String {
        e.message
    }
}

/// A task's rendered commands.
pub struct Commands {
    pub pre: Vec<String>,
    pub run: Vec<String>,
    pub post: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// A task's params as a JSON object (attempt records, hooks, `--output json`).
pub fn params_json(step: &Step, vals: &[ParamValue]) -> serde_json::Value {
    serde_json::Value::Object(
        param_strings(step, vals).into_iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v))).collect(),
    )
}

pub use crate::graph::param_strings;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Write;

    use super::*;
    use crate::fluxfile::LoadOptions;
    use crate::graph::Request;
    use crate::state::TaskRecord;
    use crate::target::{Digests, RACY_MARGIN_NS};

    const FLUXFILE: &str = r#"
[step.copy]
inputs = ["in.txt"]
outputs = ["out.txt"]
run = "cp {{ inputs[0] }} {{ outputs[0] }}"
"#;

    fn planner<'a>(ff: &'a Fluxfile, g: &'a TaskGraph, records: &'a Records, digests: &'a Digests) -> Planner<'a> {
        Planner {
            ff,
            g,
            records,
            digests,
            forced: HashSet::new(),
            triggers: Triggers::default(),
            stat_ns: crate::target::now_ns(),
            step_keys: step_keys(ff),
            stat_errors: Default::default(),
        }
    }

    fn metas(ff: &Fluxfile, g: &TaskGraph) -> Vec<Option<Meta>> {
        (0..g.targets.len() as u32).map(|i| crate::target::stat(&ff.abs(g.target(i)))).collect()
    }

    /// The quick check trusts a quick key only for inputs whose mtime is older than the
    /// moment the key was confirmed by more than the racy margin: an input rewritten within
    /// that clock tick can keep its size, mtime and inode (SPEC §5). A record confirmed 10 ms
    /// after its input's mtime, then an in-place rewrite of that input that gives it back its
    /// stat: the planner must digest it and find the change.
    #[test]
    fn a_quick_key_confirmed_within_the_racy_margin_of_an_input_mtime_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Fluxfile"), FLUXFILE).unwrap();
        std::fs::write(dir.path().join("in.txt"), "aaaa\n").unwrap();
        std::fs::write(dir.path().join("out.txt"), "aaaa\n").unwrap();
        let opts = LoadOptions { file: Some(dir.path().join("Fluxfile")), vars: vec![], profile: None };
        let ff = Fluxfile::load(&opts).unwrap();
        let g = crate::graph::build(&ff, &Request::default()).unwrap();
        assert_eq!(g.tasks.len(), 1);
        let id = g.task_id(&ff, 0);
        let before = metas(&ff, &g);
        let input = g.tasks[0].inputs()[0] as usize;
        let mtime = before[input].unwrap().mtime_ns;

        // The record of the last success, its fingerprint and quick key taken of "aaaa".
        let empty = Records::default();
        let first = Digests::lazy(ff.state_dir.clone(), crate::target::now_ns());
        let p = planner(&ff, &g, &empty, &first);
        let fp = p.fingerprint(0, &id, &before).unwrap();
        let (key, newest) = p.quick_key(0, &id, &before).unwrap();
        assert_eq!(newest, mtime);
        let record = |verified_ns| TaskRecord {
            last_status: Status::Success,
            cmd_hash: Some(fp.cmd),
            inputs_hash: Some(fp.inputs),
            success_at: None,
            duration_s: None,
            forced: false,
            quick_key: Some(key),
            verified_ns,
        };

        // Same size, same mtime, same inode, other bytes.
        let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(dir.path().join("in.txt")).unwrap();
        f.write_all(b"bbbb\n").unwrap();
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(mtime as u64);
        f.set_modified(at).unwrap();
        drop(f);
        let after = metas(&ff, &g);
        assert_eq!(after, before, "the rewrite must leave the stat as it was");

        let decide = |verified_ns: i64| {
            let records: Records = [(id.clone(), record(verified_ns))].into_iter().collect();
            let digests = Digests::lazy(ff.state_dir.clone(), crate::target::now_ns());
            let d = planner(&ff, &g, &records, &digests).decide(0, &id, &after, false, Deciding::Build);
            format!("{d:?}")
        };
        // Confirmed 10 ms after the mtime: inside the margin, so digested, and changed.
        let inside = decide(mtime + RACY_MARGIN_NS / 5);
        assert!(inside.starts_with("Run { reason: InputChanged"), "{inside}");
        // Confirmed well after the margin: the quick key is trusted (no digest at all), as
        // it must be for a no-op build to read nothing.
        let outside = decide(mtime + 3 * RACY_MARGIN_NS);
        assert_eq!(outside, "Skip { adopt: None, quick: None }");
    }

    /// The history record a task's decision makes with its fingerprint is the one made
    /// from scratch when it succeeds without it (decided ahead, or past `TEXTS_HELD`).
    #[test]
    fn the_record_made_with_the_fingerprint_is_the_one_made_from_scratch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Fluxfile"),
            FLUXFILE.replace("run = ", "env = { A = \"{{ inputs[0] }}\" }\nrun = "),
        )
        .unwrap();
        std::fs::write(dir.path().join("in.txt"), "aaaa\n").unwrap();
        let opts = LoadOptions { file: Some(dir.path().join("Fluxfile")), vars: vec![], profile: None };
        let ff = Fluxfile::load(&opts).unwrap();
        let g = crate::graph::build(&ff, &Request::default()).unwrap();
        let id = g.task_id(&ff, 0);
        let m = metas(&ff, &g);
        let records = Records::default();
        let digests = Digests::lazy(ff.state_dir.clone(), crate::target::now_ns());
        let p = planner(&ff, &g, &records, &digests);
        let Decision::Run { text: Some(text), .. } = p.decide(0, &id, &m, false, Deciding::Build) else {
            panic!("a task with a missing output runs, with its record text")
        };
        let Decision::Run { text: None, .. } = p.decide(0, &id, &m, false, Deciding::Ahead) else {
            panic!("decided ahead: no record text")
        };
        let known = crate::explain::detail(&p, 0, &id, &m, &[], Some(text.clone())).unwrap();
        let fresh = crate::explain::detail(&p, 0, &id, &m, &[], None).unwrap();
        assert_eq!(known, fresh);
        assert!(known.0.contains("run: cp in.txt out.txt\n") && known.0.contains("env: A=in.txt\n"), "{}", known.0);
        let hex = crate::state::hex(blake3::hash(b"aaaa\n").as_bytes());
        assert_eq!(known.1, format!("[[\"in.txt\",\"{hex}\"]]"));
        // `--var` values are redacted either way.
        let redacted = crate::explain::detail(&p, 0, &id, &m, &["in.txt".to_string()], Some(text)).unwrap();
        assert!(!redacted.0.contains("in.txt") && redacted.0.contains("***"), "{}", redacted.0);
    }
}
