//! The task graph (SPEC §3): steps expanded over their param values into tasks, each
//! task's inputs matched back to the task that writes them by inverting output templates,
//! `requires` added, inputs before a producer's `start` dropped, and the result checked for
//! two producers of one target and for cycles.
//!
//! Tasks, targets and steps are `u32` indices into flat vectors (after ninja and n2), and
//! target strings are interned once. Matching an input is a hash lookup per distinct
//! literal-prefix length, then a parse of the param segments: O(inputs), not
//! O(inputs × steps). No I/O happens here: staleness lives in `plan`.

use std::borrow::Cow;
use std::collections::HashMap;

use indexmap::IndexSet;
use rustc_hash::{FxBuildHasher, FxHashMap};

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

use crate::error::{Error, Result};
use crate::fluxfile::{Fluxfile, OutFmt, OutSeg, Step};
use crate::param::{ParamKind, ParamValue};
use crate::template::Context;

/// A task: one step with concrete param values.
#[derive(Debug, Clone)]
pub struct Task {
    pub step: u32,
    pub params: Box<[ParamValue]>,
    /// Rendered input targets (after dropping inputs before a producer's `start`).
    pub inputs: Vec<u32>,
    pub outputs: Vec<u32>,
    /// Tasks this one needs (deduplicated), from inputs and `requires`.
    pub deps: Vec<u32>,
}

/// What the command line asks for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Step names, task ids or output paths. Empty: every step no other step depends on.
    pub targets: Vec<String>,
    pub date: Option<NaiveDate>,
    pub range: Option<(String, String)>,
    /// `--param k=v[,v2]`
    pub params: Vec<(String, Vec<String>)>,
    /// "now" for catch-up domains of scheduled steps.
    pub now: Option<NaiveDateTime>,
}

/// All tasks of one invocation and their edges.
#[derive(Debug, Default)]
pub struct TaskGraph {
    pub tasks: Vec<Task>,
    /// Interned target strings (paths as written, relative to the Fluxfile's folder, or URIs).
    pub targets: Vec<Box<str>>,
    /// Producing task of each target, `NONE` for sources.
    pub producer: Vec<u32>,
    /// The requested tasks.
    pub roots: Vec<u32>,
    /// A topological order: every task after its deps.
    pub order: Vec<u32>,
}

pub const NONE: u32 = u32::MAX;

impl TaskGraph {
    pub fn target(&self, t: u32) -> &str {
        &self.targets[t as usize]
    }

    /// The canonical task id: `step`, `step[v]` or `step[k=v,…]` (params in declaration order).
    pub fn task_id(&self, ff: &Fluxfile, t: u32) -> String {
        let task = &self.tasks[t as usize];
        task_id(&ff.steps[task.step as usize], &task.params)
    }

    /// Tasks that depend on each task (reverse edges).
    pub fn dependents(&self) -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new(); self.tasks.len()];
        for (i, t) in self.tasks.iter().enumerate() {
            for &d in &t.deps {
                out[d as usize].push(i as u32);
            }
        }
        out
    }
}

/// `step`, `step[v]` or `step[k=v,…]`.
pub fn task_id(step: &Step, params: &[ParamValue]) -> String {
    let mut s = String::with_capacity(step.name.len() + 16);
    s.push_str(&step.name);
    match step.params.len() {
        0 => {}
        1 => {
            s.push('[');
            step.params[0].1.write(params[0], &mut s);
            s.push(']');
        }
        _ => {
            s.push('[');
            for (i, (name, kind)) in step.params.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(name);
                s.push('=');
                kind.write(params[i], &mut s);
            }
            s.push(']');
        }
    }
    s
}

/// A task id made safe for a folder name (log folders).
pub fn task_key(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.=,".contains(c) { c } else { '_' }).collect()
}

/// Normalise a rendered target: `file://` and leading `./` removed, duplicate `/` squeezed
/// in local paths. URIs are kept as written.
pub fn normalize(s: &str) -> Cow<'_, str> {
    let s = s.trim();
    let s = s.strip_prefix("file://").unwrap_or(s);
    if s.contains("://") {
        return Cow::Borrowed(s);
    }
    let mut s = s;
    while let Some(rest) = s.strip_prefix("./") {
        s = rest;
    }
    if !s.contains("//") {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut prev_slash = false;
    for c in s.chars() {
        if c == '/' && prev_slash {
            continue;
        }
        prev_slash = c == '/';
        out.push(c);
    }
    Cow::Owned(out)
}

/// Parse one param segment written as `fmt` at the start of `s`: the value and the rest.
pub fn unformat<'a>(kind: &ParamKind, fmt: &OutFmt, s: &'a str) -> Option<(ParamValue, &'a str)> {
    let fixed = |n: usize, f: &dyn Fn(&str) -> Option<ParamValue>| -> Option<(ParamValue, &'a str)> {
        let head = s.get(..n)?;
        Some((f(head)?, &s[n..]))
    };
    match (fmt, kind) {
        (_, ParamKind::Choice(_)) | (OutFmt::Lossy(_), _) => None,
        (OutFmt::Canonical, ParamKind::Date) => fixed(10, &|h| kind.parse(h).ok()),
        (OutFmt::Canonical, ParamKind::Hour) => fixed(13, &|h| kind.parse(h).ok()),
        (OutFmt::Canonical, ParamKind::Month) => fixed(7, &|h| kind.parse(h).ok()),
        (OutFmt::DsNodash, ParamKind::Date) => fixed(8, &|h| {
            digits(h)?;
            kind.parse(&format!("{}-{}-{}", &h[..4], &h[4..6], &h[6..8])).ok()
        }),
        (OutFmt::DsNodash, ParamKind::Hour) => fixed(10, &|h| {
            digits(h)?;
            kind.parse(&format!("{}-{}-{}T{}", &h[..4], &h[4..6], &h[6..8], &h[8..10])).ok()
        }),
        (OutFmt::DsNodash, ParamKind::Month) => fixed(6, &|h| {
            digits(h)?;
            kind.parse(&format!("{}-{}", &h[..4], &h[4..6])).ok()
        }),
        (OutFmt::Strftime(f), _) => {
            let mut parsed = chrono::format::Parsed::new();
            let rest =
                chrono::format::parse_and_remainder(&mut parsed, s, chrono::format::StrftimeItems::new(f)).ok()?;
            let v = match kind {
                ParamKind::Date => {
                    let d = parsed.to_naive_date().ok()?;
                    kind.parse(&d.format("%Y-%m-%d").to_string()).ok()?
                }
                ParamKind::Hour => {
                    let d = parsed.to_naive_date().ok()?;
                    let h = parsed.hour_div_12()? * 12 + parsed.hour_mod_12()?;
                    kind.parse(&format!("{}T{h:02}", d.format("%Y-%m-%d"))).ok()?
                }
                ParamKind::Month => kind.parse(&format!("{:04}-{:02}", parsed.year()?, parsed.month()?)).ok()?,
                ParamKind::Choice(_) => return None,
            };
            Some((v, rest))
        }
    }
}

fn digits(s: &str) -> Option<()> {
    s.bytes().all(|b| b.is_ascii_digit()).then_some(())
}

/// Render output segments for concrete params (the same text the template renders).
fn render_segs(step: &Step, segs: &[OutSeg], vals: &[ParamValue], out: &mut String) -> Result<()> {
    for seg in segs {
        match seg {
            OutSeg::Lit(s) => out.push_str(s),
            OutSeg::Param(pi, fmt) => {
                let kind = &step.params[*pi].1;
                match fmt {
                    OutFmt::Canonical => kind.write(vals[*pi], out),
                    OutFmt::DsNodash => {
                        let c = kind.format(vals[*pi]);
                        out.extend(c.chars().filter(|c| c.is_ascii_digit()));
                    }
                    OutFmt::Strftime(f) | OutFmt::Lossy(f) => {
                        let c = kind.format(vals[*pi]);
                        crate::template::strftime(&c, f, out)
                            .map_err(|e| Error::Plan(format!("step `{}`: strftime(\"{f}\") on {c}: {e}", step.name)))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Index of output patterns by their literal prefix.
struct Matcher {
    by_prefix: FxHashMap<String, Vec<(u32, u32)>>,
    lens: Vec<usize>,
    /// Per (step, output): whether a strftime segment needs the match confirmed by rendering
    /// (chrono's parser is lenient); canonical and ds_nodash parses are exact.
    lenient: Vec<Vec<bool>>,
}

impl Matcher {
    fn new(ff: &Fluxfile) -> Matcher {
        let mut by_prefix: FxHashMap<String, Vec<(u32, u32)>> = FxHashMap::default();
        let lenient = ff
            .steps
            .iter()
            .map(|s| {
                s.outputs
                    .iter()
                    .map(|o| {
                        o.segs.iter().any(|g| matches!(g, OutSeg::Param(_, OutFmt::Strftime(_) | OutFmt::Lossy(_))))
                    })
                    .collect()
            })
            .collect();
        for (si, step) in ff.steps.iter().enumerate() {
            for (oi, out) in step.outputs.iter().enumerate() {
                let prefix = match out.segs.first() {
                    Some(OutSeg::Lit(s)) => normalize_prefix(s),
                    _ => String::new(),
                };
                by_prefix.entry(prefix).or_default().push((si as u32, oi as u32));
            }
        }
        let mut lens: Vec<usize> = by_prefix.keys().map(String::len).collect();
        lens.sort_unstable();
        lens.dedup();
        Matcher { by_prefix, lens, lenient }
    }

    /// Every (step, params) whose output renders to `target`.
    fn find(&self, ff: &Fluxfile, target: &str, out: &mut Vec<(u32, Box<[ParamValue]>)>) {
        for &len in &self.lens {
            if len > target.len() {
                break;
            }
            if !target.is_char_boundary(len) {
                continue;
            }
            let Some(cands) = self.by_prefix.get(&target[..len]) else {
                continue;
            };
            for &(si, oi) in cands {
                let step = &ff.steps[si as usize];
                let segs = &step.outputs[oi as usize].segs;
                let (segs, rest) = match segs.first() {
                    Some(OutSeg::Lit(_)) => (&segs[1..], &target[len..]),
                    _ => (&segs[..], target),
                };
                let mut vals = vec![None; step.params.len()];
                let mut found = Vec::new();
                match_segs(step, segs, rest, &mut vals, &mut found);
                let lenient = self.lenient[si as usize][oi as usize];
                for vals in found {
                    if lenient {
                        let mut check = String::with_capacity(target.len());
                        if render_segs(step, &step.outputs[oi as usize].segs, &vals, &mut check).is_err()
                            || normalize(&check) != target
                        {
                            continue;
                        }
                    }
                    if !out.iter().any(|(s, v)| *s == si && **v == *vals) {
                        out.push((si, vals.into_boxed_slice()));
                    }
                }
            }
        }
    }
}

fn normalize_prefix(s: &str) -> String {
    // The prefix of a pattern is normalised like a whole target, keeping a trailing '/'.
    let n = normalize(s).into_owned();
    if s.ends_with('/') && !n.ends_with('/') { format!("{n}/") } else { n }
}

fn match_segs(
    step: &Step,
    segs: &[OutSeg],
    s: &str,
    vals: &mut Vec<Option<ParamValue>>,
    found: &mut Vec<Vec<ParamValue>>,
) {
    let Some((first, rest)) = segs.split_first() else {
        if s.is_empty() && vals.iter().all(Option::is_some) {
            found.push(vals.iter().map(|v| v.unwrap_or(ParamValue::Choice(0))).collect());
        }
        return;
    };
    match first {
        OutSeg::Lit(l) => {
            if let Some(r) = s.strip_prefix(l.as_str()) {
                match_segs(step, rest, r, vals, found);
            }
        }
        OutSeg::Param(pi, fmt) => {
            let kind = &step.params[*pi].1;
            let mut try_value = |v: ParamValue, r: &str, vals: &mut Vec<Option<ParamValue>>| {
                let prev = vals[*pi];
                if prev.is_some_and(|p| p != v) {
                    return;
                }
                vals[*pi] = Some(v);
                match_segs(step, rest, r, vals, found);
                vals[*pi] = prev;
            };
            if let OutFmt::Lossy(_) = fmt {
                // Part of a value another segment gives in full: skip any prefix here and
                // let the final render confirm the match.
                for end in (0..=s.len().min(64)).filter(|&e| s.is_char_boundary(e)) {
                    match_segs(step, rest, &s[end..], vals, found);
                }
                return;
            }
            match kind {
                ParamKind::Choice(allowed) => {
                    for (ci, a) in allowed.iter().enumerate() {
                        if let Some(r) = s.strip_prefix(a.as_str()) {
                            try_value(ParamValue::Choice(ci as u32), r, vals);
                        }
                    }
                }
                _ => {
                    if let Some((v, r)) = unformat(kind, fmt, s) {
                        try_value(v, r, vals);
                    }
                }
            }
        }
    }
}

/// `from 2024-01-01 to 2024-01-31` (for messages).
fn domain_text(step: &Step) -> String {
    let Some(ti) = step.time_param else { return "every value".into() };
    let kind = &step.params[ti].1;
    match (step.start, step.end) {
        (Some(s), Some(e)) => format!("from {} to {}", kind.format(s), kind.format(e)),
        (Some(s), None) => format!("from {} on", kind.format(s)),
        (None, Some(e)) => format!("up to {}", kind.format(e)),
        (None, None) => "unbounded".into(),
    }
}

/// Whether a value lies in the step's `start..=end` domain.
fn in_domain(step: &Step, params: &[ParamValue]) -> bool {
    let Some(ti) = step.time_param else {
        return true;
    };
    let v = params[ti];
    step.start.is_none_or(|s| v >= s) && step.end.is_none_or(|e| v <= e)
}

/// Params inline, for hashing without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ParamKey {
    step: u32,
    len: u8,
    vals: [ParamValue; MAX_PARAMS],
}

/// Params per step (checked when the Fluxfile is loaded).
pub const MAX_PARAMS: usize = 6;

impl ParamKey {
    fn new(step: u32, params: &[ParamValue]) -> ParamKey {
        let mut vals = [ParamValue::Choice(0); MAX_PARAMS];
        vals[..params.len()].copy_from_slice(params);
        ParamKey { step, len: params.len() as u8, vals }
    }
}

struct Builder<'a> {
    ff: &'a Fluxfile,
    matcher: Matcher,
    g: TaskGraph,
    index: FxHashMap<ParamKey, u32>,
    target_ids: IndexSet<Box<str>, FxBuildHasher>,
    work: Vec<u32>,
    /// Per step: whether its input or requires templates read `task` (else no id is made).
    needs_id: Vec<bool>,
}

/// Expand, infer and check: the graph for one request.
pub fn build(ff: &Fluxfile, req: &Request) -> Result<TaskGraph> {
    let mut b = Builder {
        ff,
        matcher: Matcher::new(ff),
        g: TaskGraph::default(),
        index: FxHashMap::default(),
        target_ids: IndexSet::default(),
        work: Vec::new(),
        needs_id: ff
            .steps
            .iter()
            .map(|s| {
                s.inputs
                    .iter()
                    .chain(s.requires.iter().flat_map(|r| r.params.iter().map(|(_, t)| t)))
                    .any(|t| ff.engine.names(t.id).iter().any(|n| n == "task"))
            })
            .collect(),
    };
    // --param names must exist somewhere.
    let known = crate::fluxfile::all_param_names(ff);
    for (k, _) in &req.params {
        if !known.contains(k.as_str()) {
            let hint = crate::error::did_you_mean(k, known.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(Error::Usage(format!("--param {k}: no step has a param named `{k}`{hint}")));
        }
    }

    let mut roots: Vec<u32> = Vec::new();
    let all_steps = req.targets.is_empty();
    if all_steps {
        for si in 0..ff.steps.len() {
            for vals in step_values(ff, si, req)? {
                roots.push(b.task(si as u32, vals)?);
            }
        }
    } else {
        for t in &req.targets {
            roots.extend(b.resolve_target(t, req)?);
        }
    }
    while let Some(t) = b.work.pop() {
        b.expand(t)?;
    }
    let mut g = b.g;
    g.targets = b.target_ids.into_iter().collect();
    if all_steps {
        // A cycle through every step leaves no step undepended-on: report it rather than
        // building nothing.
        topo_order(ff, &g)?;
        // Every step that no other step depends on, and what those need.
        let mut depended = vec![false; ff.steps.len()];
        for t in &g.tasks {
            for &d in &t.deps {
                let ds = g.tasks[d as usize].step;
                if ds != t.step {
                    depended[ds as usize] = true;
                }
            }
        }
        roots.retain(|&r| !depended[g.tasks[r as usize].step as usize]);
        g = prune(g, &roots);
        roots = g.roots.clone();
    }
    roots.sort_unstable();
    roots.dedup();
    g.roots = roots;
    g.order = topo_order(ff, &g)?;
    Ok(g)
}

/// Keep only the tasks reachable from `roots`, renumbered.
fn prune(g: TaskGraph, roots: &[u32]) -> TaskGraph {
    let n = g.tasks.len();
    let mut keep = vec![false; n];
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(t) = stack.pop() {
        if std::mem::replace(&mut keep[t as usize], true) {
            continue;
        }
        stack.extend(g.tasks[t as usize].deps.iter().copied());
    }
    let mut remap = vec![NONE; n];
    let mut next = 0u32;
    for (i, k) in keep.iter().enumerate() {
        if *k {
            remap[i] = next;
            next += 1;
        }
    }
    let mut tasks = Vec::with_capacity(next as usize);
    for (i, mut t) in g.tasks.into_iter().enumerate() {
        if keep[i] {
            for d in &mut t.deps {
                *d = remap[*d as usize];
            }
            tasks.push(t);
        }
    }
    let producer = g.producer.iter().map(|&p| if p == NONE { NONE } else { remap[p as usize] }).collect();
    TaskGraph {
        tasks,
        targets: g.targets,
        producer,
        roots: roots.iter().map(|&r| remap[r as usize]).collect(),
        order: Vec::new(),
    }
}

impl Builder<'_> {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(id) = self.target_ids.get_index_of(s) {
            return id as u32;
        }
        let (id, _) = self.target_ids.insert_full(Box::from(s));
        self.g.producer.push(NONE);
        id as u32
    }

    /// The task for (step, params), created (with its outputs) if new.
    fn task(&mut self, step: u32, params: Box<[ParamValue]>) -> Result<u32> {
        let key = ParamKey::new(step, &params);
        if let Some(&t) = self.index.get(&key) {
            return Ok(t);
        }
        let id = self.g.tasks.len() as u32;
        let st = &self.ff.steps[step as usize];
        let mut outputs = Vec::with_capacity(st.outputs.len());
        let mut buf = String::new();
        for o in &st.outputs {
            buf.clear();
            render_segs(st, &o.segs, &params, &mut buf)?;
            let tid = self.intern(&normalize(&buf));
            let prev = self.g.producer[tid as usize];
            if prev != NONE {
                let a = task_id(
                    &self.ff.steps[self.g.tasks[prev as usize].step as usize],
                    &self.g.tasks[prev as usize].params,
                );
                return Err(Error::Plan(format!(
                    "two tasks write `{}`: {a} and {}; give each task its own output path",
                    self.target_ids[tid as usize],
                    task_id(st, &params)
                )));
            }
            self.g.producer[tid as usize] = id;
            outputs.push(tid);
        }
        self.g.tasks.push(Task { step, params, inputs: Vec::new(), outputs, deps: Vec::new() });
        self.index.insert(key, id);
        self.work.push(id);
        Ok(id)
    }

    /// Render inputs and requires of a task, and link it to the tasks that produce them.
    fn expand(&mut self, t: u32) -> Result<()> {
        let ff = self.ff;
        let task = &self.g.tasks[t as usize];
        let step_idx = task.step;
        let st = &ff.steps[task.step as usize];
        let params = task.params.clone();
        let tid = if self.needs_id[task.step as usize] { task_id(st, &params) } else { String::new() };
        let pstrs: Vec<(&str, String)> =
            st.params.iter().zip(params.iter()).map(|((n, k), v)| (n.as_str(), k.format(*v))).collect();
        let ctx = Context {
            step: &st.name,
            task: &tid,
            params: &pstrs,
            vars: &ff.vars,
            inputs: None,
            outputs: None,
            extra: &[],
        };
        let mut inputs = Vec::new();
        let mut deps: Vec<u32> = Vec::new();
        let mut found = Vec::new();
        for tpl in &st.inputs {
            let text = ff.engine.render(tpl.id, &ctx).map_err(|e| {
                Error::Plan(format!(
                    "{}: cannot render input `{}`: {e}",
                    task_id(st, &params),
                    ff.engine.source(tpl.id)
                ))
            })?;
            for line in text.lines() {
                let line = normalize(line);
                if line.is_empty() {
                    continue;
                }
                found.clear();
                self.matcher.find(ff, &line, &mut found);
                match found.len() {
                    0 => inputs.push(self.intern(&line)),
                    1 => {
                        let (ps, pv) = found.pop().unwrap_or_else(|| unreachable!());
                        if !in_domain(&ff.steps[ps as usize], &pv) {
                            continue; // before the producer's start: no yesterday (§3.3)
                        }
                        if ps == step_idx
                            && let Some(ti) = st.time_param
                            && st.start.is_none()
                            && pv[ti] < params[ti]
                        {
                            let earlier = task_id(st, &pv);
                            return Err(Error::Plan(format!(
                                "step `{}` reads an earlier interval of itself ({} reads {earlier}) and has no `start`, so the chain would reach back without end; give the step `start = \"…\"` (or set `start` in [flux])",
                                st.name,
                                task_id(st, &params),
                            )));
                        }
                        let p = self.task(ps, pv)?;
                        inputs.push(self.intern(&line));
                        deps.push(p);
                    }
                    _ => {
                        let names: Vec<String> =
                            found.iter().map(|(s, v)| task_id(&ff.steps[*s as usize], v)).collect();
                        return Err(Error::Plan(format!(
                            "{}: input `{line}` could be written by several tasks: {}; make the output templates distinct",
                            task_id(st, &params),
                            names.join(", ")
                        )));
                    }
                }
            }
        }
        for req in &st.requires {
            let rs = &ff.steps[req.step];
            let mut vals = Vec::with_capacity(rs.params.len());
            for (pi, (pname, kind)) in rs.params.iter().enumerate() {
                let v = if let Some((_, tpl)) = req.params.iter().find(|(i, _)| *i == pi) {
                    let s = ff
                        .engine
                        .render(tpl.id, &ctx)
                        .map_err(|e| Error::Plan(format!("{}: requires {}: {e}", task_id(st, &params), rs.name)))?;
                    kind.parse(s.trim()).map_err(|e| {
                        Error::Plan(format!("{}: requires {}: {pname}: {e}", task_id(st, &params), rs.name))
                    })?
                } else {
                    let i = st.params.iter().position(|(n, _)| n == pname).unwrap_or(0);
                    let s = &pstrs[i].1;
                    kind.parse(s).map_err(|e| {
                        Error::Plan(format!("{}: requires {}: {pname}: {e}", task_id(st, &params), rs.name))
                    })?
                };
                vals.push(v);
            }
            if !in_domain(rs, &vals) {
                continue;
            }
            deps.push(self.task(req.step as u32, vals.into_boxed_slice())?);
        }
        deps.sort_unstable();
        deps.dedup();
        let task = &mut self.g.tasks[t as usize];
        task.inputs = inputs;
        task.deps = deps;
        Ok(())
    }

    /// A command-line target: a task id, a step name or an output path.
    fn resolve_target(&mut self, t: &str, req: &Request) -> Result<Vec<u32>> {
        let ff = self.ff;
        if let Some(open) = t.find('[')
            && t.ends_with(']')
            && let Some(si) = ff.step_index(&t[..open])
        {
            let step = &ff.steps[si];
            let vals = parse_task_params(step, &t[open + 1..t.len() - 1])
                .map_err(|e| Error::Usage(format!("task `{t}`: {e}")))?;
            if !in_domain(step, &vals) {
                return Err(Error::Usage(format!(
                    "task `{t}` is outside the domain of step `{}`: {}",
                    step.name,
                    domain_text(step)
                )));
            }
            return Ok(vec![self.task(si as u32, vals)?]);
        }
        if let Some(si) = ff.step_index(t) {
            let values = step_values(ff, si, req)?;
            if values.is_empty() {
                let step = &ff.steps[si];
                return Err(Error::Usage(format!(
                    "step `{t}` has no interval in what was asked: its domain is {}",
                    domain_text(step)
                )));
            }
            let mut out = Vec::new();
            for vals in values {
                out.push(self.task(si as u32, vals)?);
            }
            return Ok(out);
        }
        let norm = normalize(t);
        let mut found = Vec::new();
        self.matcher.find(ff, &norm, &mut found);
        if found.is_empty() {
            // A path given relative to the current folder, inside the project.
            if let Ok(abs) =
                std::fs::canonicalize(std::path::Path::new(t).parent().unwrap_or(std::path::Path::new(".")))
                && let Ok(rel) = abs.strip_prefix(&ff.dir)
                && let Some(name) = std::path::Path::new(t).file_name()
            {
                let joined = rel.join(name).to_string_lossy().into_owned();
                let cand = normalize(&joined);
                self.matcher.find(ff, &cand, &mut found);
            }
        }
        match found.len() {
            0 => {
                let names: Vec<&str> = ff.steps.iter().map(|s| s.name.as_str()).collect();
                let hint = crate::error::did_you_mean(t, names.iter().copied())
                    .map(|s| format!("did you mean the step `{s}`?"))
                    .unwrap_or_else(|| format!("steps: {}", names.join(", ")));
                Err(Error::Usage(format!("`{t}` is not a step, a task id, or a path any step writes; {hint}")))
            }
            1 => {
                let (si, vals) = found.pop().unwrap_or_else(|| unreachable!());
                Ok(vec![self.task(si, vals)?])
            }
            _ => {
                let names: Vec<String> = found.iter().map(|(s, v)| task_id(&ff.steps[*s as usize], v)).collect();
                Err(Error::Plan(format!("`{t}` could be written by several tasks: {}", names.join(", "))))
            }
        }
    }
}

/// `v` (one param) or `k=v,k2=v2` (any order) for a step.
fn parse_task_params(step: &Step, inner: &str) -> std::result::Result<Box<[ParamValue]>, String> {
    if step.params.is_empty() {
        return Err(format!("step `{}` has no params; name it without brackets", step.name));
    }
    let mut vals: Vec<Option<ParamValue>> = vec![None; step.params.len()];
    if step.params.len() == 1 && !inner.contains('=') {
        vals[0] = Some(step.params[0].1.parse(inner)?);
    } else {
        for part in inner.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("expected name=value, got `{part}`"));
            };
            let Some(pi) = step.params.iter().position(|(n, _)| n == k.trim()) else {
                return Err(format!("step `{}` has no param `{}`", step.name, k.trim()));
            };
            vals[pi] = Some(step.params[pi].1.parse(v.trim())?);
        }
    }
    let mut out = Vec::with_capacity(vals.len());
    for (i, v) in vals.into_iter().enumerate() {
        match v {
            Some(v) => out.push(v),
            None => return Err(format!("missing a value for param `{}`", step.params[i].0)),
        }
    }
    Ok(out.into_boxed_slice())
}

/// Every combination of param values a step is asked for (SPEC §3.2).
fn step_values(ff: &Fluxfile, si: usize, req: &Request) -> Result<Vec<Box<[ParamValue]>>> {
    let step = &ff.steps[si];
    let mut per_param: Vec<Vec<ParamValue>> = Vec::with_capacity(step.params.len());
    for (pi, (name, kind)) in step.params.iter().enumerate() {
        let given = req.params.iter().find(|(k, _)| k == name);
        let mut vals: Vec<ParamValue> = if let Some((_, vs)) = given {
            let mut out = Vec::new();
            for v in vs {
                if kind.is_time() && v.contains("..") {
                    let (a, b) = v.split_once("..").unwrap_or((v, v));
                    out.extend(kind.expand_range(a, b).map_err(|e| Error::Usage(format!("--param {name}={v}: {e}")))?);
                } else if kind.is_time() && kind.parse(v).is_err() {
                    // a coarser or finer time (a date for an hour param…): expand like a range
                    out.extend(kind.expand_range(v, v).map_err(|e| Error::Usage(format!("--param {name}={v}: {e}")))?);
                } else {
                    out.push(kind.parse(v).map_err(|e| Error::Usage(format!("--param {name}={v}: {e}")))?);
                }
            }
            out
        } else if kind.is_time() {
            if let Some(d) = req.date {
                kind.expand_date(d)
            } else if let Some((a, b)) = &req.range {
                kind.expand_range(a, b).map_err(|e| Error::Usage(format!("--date-range {a}..{b}: {e}")))?
            } else if let (Some(s), Some(e)) = (step.start, step.end) {
                kind.values_between(s, e)
            } else if let (Some(s), Some(_), Some(now)) = (step.start, &step.schedule, req.now) {
                match kind.last_ended(now) {
                    Some(last) => kind.values_between(s, last),
                    None => Vec::new(),
                }
            } else {
                return Err(Error::Usage(format!(
                    "step `{}` has {} {} param `{name}` and no value for it: pass --date D, --date-range A..B or --param {name}=…, or give the step `start` and `end`",
                    step.name,
                    if matches!(kind, ParamKind::Hour) { "an" } else { "a" },
                    kind.name()
                )));
            }
        } else {
            match kind {
                ParamKind::Choice(all) => (0..all.len() as u32).map(ParamValue::Choice).collect(),
                _ => Vec::new(),
            }
        };
        if Some(pi) == step.time_param {
            vals.retain(|v| step.start.is_none_or(|s| *v >= s) && step.end.is_none_or(|e| *v <= e));
        }
        vals.sort_unstable();
        vals.dedup();
        per_param.push(vals);
    }
    let mut out: Vec<Box<[ParamValue]>> = vec![Box::new([])];
    for vals in per_param {
        let mut next = Vec::with_capacity(out.len() * vals.len());
        for prefix in &out {
            for v in &vals {
                let mut p = prefix.to_vec();
                p.push(*v);
                next.push(p.into_boxed_slice());
            }
        }
        out = next;
    }
    Ok(out)
}

/// Kahn's algorithm; a leftover task means a cycle, which is reported by walking it.
fn topo_order(ff: &Fluxfile, g: &TaskGraph) -> Result<Vec<u32>> {
    let n = g.tasks.len();
    let mut indeg: Vec<u32> = g.tasks.iter().map(|t| t.deps.len() as u32).collect();
    let dependents = g.dependents();
    let mut order = Vec::with_capacity(n);
    // FIFO in creation order: steps in declaration order, dates ascending.
    let mut queue: std::collections::VecDeque<u32> = (0..n as u32).filter(|&i| indeg[i as usize] == 0).collect();
    while let Some(t) = queue.pop_front() {
        order.push(t);
        for &d in &dependents[t as usize] {
            indeg[d as usize] -= 1;
            if indeg[d as usize] == 0 {
                queue.push_back(d);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk deps among the leftover tasks until one repeats.
    let start = (0..n).find(|&i| indeg[i] > 0).unwrap_or(0) as u32;
    let mut path: Vec<u32> = vec![start];
    let mut seen: HashMap<u32, usize> = HashMap::from([(start, 0)]);
    let mut cur = start;
    loop {
        let next = g.tasks[cur as usize].deps.iter().copied().find(|&d| indeg[d as usize] > 0).unwrap_or(start);
        if let Some(&i) = seen.get(&next) {
            let mut cyc: Vec<String> = path[i..].iter().rev().map(|&t| g.task_id(ff, t)).collect();
            cyc.push(cyc[0].clone());
            return Err(Error::Plan(format!("cycle: {}", cyc.join(" -> "))));
        }
        seen.insert(next, path.len());
        path.push(next);
        cur = next;
    }
}

/// The interval of a time value as RFC 3339 UTC instants, its dates, weeks and months
/// bounded by local midnight in `tz` (`interval_start`, `interval_end`).
pub fn interval_rfc3339(kind: &ParamKind, v: ParamValue, tz: chrono_tz::Tz) -> Option<(String, String)> {
    let (a, b) = crate::param::interval_in(kind, v, tz)?;
    let f = |t: NaiveDateTime| {
        format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.year(), t.month(), t.day(), t.hour(), t.minute(), t.second())
    };
    Some((f(a.naive_utc()), f(b.naive_utc())))
}

/// The canonical id of a task named on the command line (`extract[2024-01-05]`,
/// `report[region=eu,date=2024-01-05]`, or a step without params).
pub fn canonical_task_id(ff: &Fluxfile, s: &str) -> Result<String> {
    if let Some(open) = s.find('[')
        && s.ends_with(']')
        && let Some(si) = ff.step_index(&s[..open])
    {
        let vals = parse_task_params(&ff.steps[si], &s[open + 1..s.len() - 1])
            .map_err(|e| Error::Usage(format!("task `{s}`: {e}")))?;
        return Ok(task_id(&ff.steps[si], &vals));
    }
    match ff.step_index(s) {
        Some(si) if ff.steps[si].params.is_empty() => Ok(s.to_string()),
        Some(_) => Err(Error::Usage(format!("`{s}` has params: name one task, e.g. {s}[2024-01-05]"))),
        None => Err(Error::Usage(format!("`{s}` is not a task id of this Fluxfile"))),
    }
}
