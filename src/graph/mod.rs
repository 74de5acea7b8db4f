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

use rustc_hash::{FxBuildHasher, FxHashMap};

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

use crate::error::{Error, Result, Span};
use crate::fluxfile::{Fluxfile, OutFmt, OutSeg, Step};
use crate::param::{ParamKind, ParamValue};
use crate::template::Context;

mod dense;
use dense::Dense;

/// A task: one step with concrete param values.
///
/// Its outputs, inputs and deps live in one heap block (`links`: outputs, then inputs,
/// then deps), read through [`Task::outputs`], [`Task::inputs`] and [`Task::deps`]: three
/// vectors per task were three allocations and 72 bytes of headers, over 200 MB for a
/// million tasks.
#[derive(Debug, Clone)]
pub struct Task {
    pub step: u32,
    n_out: u32,
    n_in: u32,
    pub params: Params,
    links: Box<[u32]>,
}

/// A task's param values: one value (most tasks: a date) is kept inline, more in a heap
/// block. Reads as a slice.
#[derive(Debug, Clone)]
pub enum Params {
    One(ParamValue),
    Many(Box<[ParamValue]>),
}

impl std::ops::Deref for Params {
    type Target = [ParamValue];
    fn deref(&self) -> &[ParamValue] {
        match self {
            Params::One(v) => std::slice::from_ref(v),
            Params::Many(vs) => vs,
        }
    }
}

impl PartialEq for Params {
    fn eq(&self, other: &Params) -> bool {
        **self == **other
    }
}

impl Eq for Params {}

impl PartialOrd for Params {
    fn partial_cmp(&self, other: &Params) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// As the slices compare.
impl Ord for Params {
    fn cmp(&self, other: &Params) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl Params {
    /// The values of `vs`, inline when there is one.
    pub fn from_slice(vs: &[ParamValue]) -> Params {
        match vs {
            [v] => Params::One(*v),
            _ => Params::Many(vs.into()),
        }
    }
}

impl From<Box<[ParamValue]>> for Params {
    fn from(vs: Box<[ParamValue]>) -> Params {
        match *vs {
            [v] => Params::One(v),
            _ => Params::Many(vs),
        }
    }
}

impl Task {
    pub fn new(step: u32, params: impl Into<Params>, inputs: &[u32], outputs: &[u32], deps: &[u32]) -> Task {
        let mut task = Task { step, n_out: 0, n_in: 0, params: params.into(), links: Box::new([]) };
        task.set_links(outputs, inputs, deps);
        task
    }

    fn set_links(&mut self, outputs: &[u32], inputs: &[u32], deps: &[u32]) {
        let mut links = Vec::with_capacity(outputs.len() + inputs.len() + deps.len());
        links.extend_from_slice(outputs);
        links.extend_from_slice(inputs);
        links.extend_from_slice(deps);
        self.n_out = outputs.len() as u32;
        self.n_in = inputs.len() as u32;
        self.links = links.into_boxed_slice();
    }

    /// Its inputs and deps after its outputs, in the same block (grown in place).
    fn link(&mut self, inputs: &[u32], deps: &[u32]) {
        let mut links = std::mem::take(&mut self.links).into_vec();
        links.truncate(self.n_out as usize);
        links.reserve_exact(inputs.len() + deps.len());
        links.extend_from_slice(inputs);
        links.extend_from_slice(deps);
        self.n_in = inputs.len() as u32;
        self.links = links.into_boxed_slice();
    }

    /// Output targets.
    pub fn outputs(&self) -> &[u32] {
        &self.links[..self.n_out as usize]
    }

    /// Rendered input targets (after dropping inputs before a producer's `start`).
    pub fn inputs(&self) -> &[u32] {
        &self.links[self.n_out as usize..(self.n_out + self.n_in) as usize]
    }

    /// Tasks this one needs (deduplicated), from inputs and `requires`.
    pub fn deps(&self) -> &[u32] {
        &self.links[(self.n_out + self.n_in) as usize..]
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Step names, task ids or output paths. Empty: every task of every step for the
    /// requested values (steps with a param that has no value and no domain left out; see
    /// [`left_out`]).
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
            for &d in t.deps() {
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

/// The targets a rendered `inputs` entry names: one a line, normalised, blank lines left out.
fn input_lines(text: &str) -> impl Iterator<Item = Cow<'_, str>> {
    text.lines().map(normalize).filter(|l| !l.is_empty())
}

/// Normalise a rendered target: `file://` and leading `./` removed, duplicate `/` squeezed
/// in local paths. URIs are kept as written.
pub fn normalize(s: &str) -> Cow<'_, str> {
    let s = s.trim();
    let s = s.strip_prefix("file://").unwrap_or(s);
    // Most targets hold no "//" at all (then no "://" either): one byte scan decides.
    let double_slash = |s: &str| s.as_bytes().windows(2).any(|w| w == b"//");
    if double_slash(s) && s.contains("://") {
        return Cow::Borrowed(s);
    }
    let mut s = s;
    while let Some(rest) = s.strip_prefix("./") {
        s = rest;
    }
    if !double_slash(s) {
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
        (_, ParamKind::Choice(_) | ParamKind::Int { .. } | ParamKind::Str) | (OutFmt::Lossy(_), _) => None,
        (OutFmt::Canonical, ParamKind::Date) => fixed(10, &|h| kind.parse(h).ok()),
        (OutFmt::Canonical, ParamKind::Week) => fixed(8, &|h| kind.parse(h).ok()),
        (OutFmt::DsNodash, ParamKind::Week) => fixed(7, &|h| {
            digits(&h[..4])?;
            kind.parse(&format!("{}-{}", &h[..4], &h[4..])).ok()
        }),
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
                ParamKind::Week => {
                    let d = parsed.to_naive_date().ok()?;
                    kind.parse_bound(&d.format("%Y-%m-%d").to_string(), false).ok()?
                }
                ParamKind::Choice(_) | ParamKind::Int { .. } | ParamKind::Str => return None,
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
    fn find(&self, ff: &Fluxfile, target: &str, out: &mut Vec<(u32, Params)>) {
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
                let mut vals = [None; MAX_PARAMS];
                let vals = &mut vals[..step.params.len()];
                let mut found = Vec::new();
                match_segs(step, segs, rest, vals, &mut found);
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
                    if !out.iter().any(|(s, v)| *s == si && *v == vals) {
                        out.push((si, vals));
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

fn match_segs(step: &Step, segs: &[OutSeg], s: &str, vals: &mut [Option<ParamValue>], found: &mut Vec<Params>) {
    let Some((first, rest)) = segs.split_first() else {
        if s.is_empty() && vals.iter().all(Option::is_some) {
            found.push(match vals {
                [Some(v)] => Params::One(*v),
                _ => Params::Many(vals.iter().map(|v| v.unwrap_or(ParamValue::Choice(0))).collect()),
            });
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
            let mut try_value = |v: ParamValue, r: &str, vals: &mut [Option<ParamValue>]| {
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
                ParamKind::Choice(allowed) if allowed.len() > 32 => {
                    // A long list: look up each prefix of `s` rather than scan the list for
                    // each value (the same matches, tried in the list's order).
                    let mut hits: Vec<(u32, usize)> = (1..=s.len())
                        .filter(|&e| s.is_char_boundary(e))
                        .filter_map(|e| allowed.position(&s[..e]).map(|ci| (ci, e)))
                        .collect();
                    hits.sort_unstable();
                    for (ci, e) in hits {
                        try_value(ParamValue::Choice(ci), &s[e..], vals);
                    }
                }
                ParamKind::Choice(allowed) => {
                    for (ci, a) in allowed.iter().enumerate() {
                        if let Some(r) = s.strip_prefix(a.as_str()) {
                            try_value(ParamValue::Choice(ci as u32), r, vals);
                        }
                    }
                }
                ParamKind::Int { .. } | ParamKind::Str => {
                    // Free values: try every length up to the next `/` that parses; the
                    // literals after the segment decide (several full matches are reported
                    // as ambiguous by the caller).
                    let seg_end = s.find('/').unwrap_or(s.len());
                    let run_end = match kind {
                        ParamKind::Int { .. } => {
                            let sign = usize::from(s.starts_with('-'));
                            sign + s[sign..seg_end].bytes().take_while(u8::is_ascii_digit).count()
                        }
                        _ => seg_end,
                    };
                    // What follows is a literal or the end (free params never stand side by
                    // side): only lengths it fits are parsed (and string values interned).
                    let fits = |e: usize| match rest.first() {
                        Some(OutSeg::Lit(l)) => s[e..].starts_with(l.as_str()),
                        None => e == s.len(),
                        Some(OutSeg::Param(..)) => true,
                    };
                    for end in (1..=run_end).filter(|&e| s.is_char_boundary(e) && fits(e)) {
                        if let Ok(v) = kind.parse(&s[..end]) {
                            try_value(v, &s[end..], vals);
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

/// Params per step (checked when the Fluxfile is loaded).
pub const MAX_PARAMS: usize = 6;

/// The 64-bit hash of a task's (step, params): the task index is keyed by it, and tasks
/// whose keys collide are chained (see `Builder::find`), so that an entry is 12 bytes
/// whatever the params (a key holding the params inline was 152 bytes, and the index of a
/// million tasks alone took over 300 MB).
fn task_hash(step: u32, params: &[ParamValue]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    step.hash(&mut h);
    params.hash(&mut h);
    h.finish()
}

/// The hash of a target string in the planner's table.
fn target_hash(s: &str) -> u64 {
    use std::hash::BuildHasher;
    FxBuildHasher.hash_one(s)
}

/// Buffers `Builder::expand` reuses from task to task.
#[derive(Default)]
struct Scratch {
    inputs: Vec<u32>,
    deps: Vec<u32>,
    found: Vec<(u32, Params)>,
    text: String,
}

struct Builder<'a, 'o> {
    ff: &'a Fluxfile,
    /// Told of each new target (see [`build_observed`]).
    on_target: &'o mut dyn FnMut(&str),
    matcher: Matcher,
    g: TaskGraph,
    /// Task by the hash of its (step, params): the first task with that hash.
    index: FxHashMap<u64, u32>,
    /// Per task: the next task whose (step, params) has the same hash, or `NONE`.
    chain: Vec<u32>,
    /// Per step with one integer-like param (a date, an hour, …): its tasks by value,
    /// kept out of `index`; `None` for other steps and for steps whose values spread too
    /// thinly (those are moved into `index`).
    dense: Vec<Option<Dense>>,
    /// Target ids by their strings (in `g.targets`), hashed with [`target_hash`].
    target_ids: hashbrown::HashTable<u32>,
    scratch: Scratch,
    /// The params of the task being expanded, as strings (reused from task to task).
    pstrs: Vec<(&'a str, String)>,
    work: Vec<u32>,
    /// Per step: whether its input or requires templates read `task` (else no id is made).
    needs_id: Vec<bool>,
    /// Step index by name, for targets named on the command line.
    by_name: FxHashMap<&'a str, usize>,
}

/// Expand, infer and check: the graph for one request.
pub fn build(ff: &Fluxfile, req: &Request) -> Result<TaskGraph> {
    build_observed(ff, req, &mut |_| {})
}

/// [`build`], calling `on_target` with each target as planning first names it, in the
/// order of their ids (the caller can stat them on another core meanwhile).
pub fn build_observed(ff: &Fluxfile, req: &Request, on_target: &mut dyn FnMut(&str)) -> Result<TaskGraph> {
    let mut b = Builder {
        ff,
        on_target,
        matcher: Matcher::new(ff),
        g: TaskGraph::default(),
        index: FxHashMap::default(),
        chain: Vec::new(),
        dense: ff.steps.iter().map(|s| (s.params.len() == 1).then(Dense::default)).collect(),
        target_ids: hashbrown::HashTable::new(),
        scratch: Scratch::default(),
        pstrs: Vec::new(),
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
        by_name: ff.steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect(),
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
        // Every task of every step for the requested values (SPEC §3.1), except steps with
        // a param that has no value and no domain (named by `left_out`).
        // Every step's values first, so that the tables get room for all their tasks at
        // once rather than growing (and rehashing) as they are made.
        let mut per_step = Vec::with_capacity(ff.steps.len());
        let (mut total, mut hashed): (u64, u64) = (0, 0);
        for si in 0..ff.steps.len() {
            if valueless_param(&ff.steps[si], req).is_some() {
                continue;
            }
            let values = step_values(ff, si, req, ff.max_tasks.saturating_sub(total))?;
            total += values.len() as u64;
            if b.dense[si].is_none() || values.first().is_some_and(|v| Dense::key(v).is_none()) {
                hashed += values.len() as u64;
            }
            per_step.push((si, values));
        }
        b.reserve(usize::try_from(total).unwrap_or(usize::MAX), usize::try_from(hashed).unwrap_or(usize::MAX));
        for (si, values) in per_step {
            for vals in values {
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
    roots.sort_unstable();
    roots.dedup();
    g.roots = roots;
    g.order = topo_order(ff, &g)?;
    Ok(g)
}

impl Builder<'_, '_> {
    /// How many more tasks `[flux] max_tasks` allows.
    fn room(&self) -> u64 {
        self.ff.max_tasks.saturating_sub(self.g.tasks.len() as u64)
    }

    /// Room for `n` tasks (and as many targets), `hashed` of them in the hash index,
    /// without growing.
    fn reserve(&mut self, n: usize, hashed: usize) {
        let n = n.min(self.room().try_into().unwrap_or(usize::MAX)).min(1 << 24);
        self.g.tasks.reserve(n);
        self.chain.reserve(n);
        self.index.reserve(hashed.min(n));
        let targets = &self.g.targets;
        self.target_ids.reserve(n, |&i| target_hash(&targets[i as usize]));
        self.g.targets.reserve(n);
        self.g.producer.reserve(n);
    }

    /// The id of target `s`, a new one if it is new (one probe of the table either way).
    fn intern(&mut self, s: &str) -> u32 {
        let targets = &self.g.targets;
        let entry = self.target_ids.entry(
            target_hash(s),
            |&i| *targets[i as usize] == *s,
            |&i| target_hash(&targets[i as usize]),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(e) => *e.get(),
            hashbrown::hash_table::Entry::Vacant(e) => {
                let id = self.g.targets.len() as u32;
                e.insert(id);
                self.g.targets.push(Box::from(s));
                (self.on_target)(s);
                self.g.producer.push(NONE);
                id
            }
        }
    }

    /// Make task `t` found by its (step, params).
    fn index_task(&mut self, t: u32) {
        let task = &self.g.tasks[t as usize];
        let step = task.step as usize;
        if let Some(Some(d)) = self.dense.get_mut(step)
            && let Some(k) = Dense::key(&task.params)
        {
            if d.insert(k, t) {
                return;
            }
            // Too thin an array: this step's tasks go to the hash index from now on.
            let moved: Vec<u32> = d.tasks().collect();
            self.dense[step] = None;
            for u in moved {
                self.index_task(u);
            }
        }
        let task = &self.g.tasks[t as usize];
        self.chain[t as usize] = self.index.insert(task_hash(task.step, &task.params), t).unwrap_or(NONE);
    }

    /// The task for (step, params), if there is one.
    fn find(&self, step: u32, params: &[ParamValue]) -> Option<u32> {
        if let Some(Some(d)) = self.dense.get(step as usize)
            && let Some(k) = Dense::key(params)
        {
            return d.get(k);
        }
        let mut t = *self.index.get(&task_hash(step, params))?;
        while t != NONE {
            let task = &self.g.tasks[t as usize];
            if task.step == step && *task.params == *params {
                return Some(t);
            }
            t = self.chain[t as usize];
        }
        None
    }

    /// The task for (step, params), created (with its outputs) if new.
    fn task(&mut self, step: u32, params: Params) -> Result<u32> {
        if let Some(t) = self.find(step, &params) {
            return Ok(t);
        }
        let id = self.g.tasks.len() as u32;
        let st = &self.ff.steps[step as usize];
        if self.room() == 0 {
            return Err(Error::Plan(format!(
                "planning stopped at {} tasks, the limit of `max_tasks` in [flux], while adding {}; ask for fewer intervals (targets, --date, --date-range) or raise max_tasks",
                self.ff.max_tasks,
                task_id(st, &params)
            )));
        }
        let mut outputs = Vec::with_capacity(st.outputs.len());
        let mut buf = String::new();
        for o in &st.outputs {
            buf.clear();
            render_segs(st, &o.segs, &params, &mut buf).map_err(|e| match e {
                Error::Plan(m) => Error::at(m, &o.tpl.span),
                e => e,
            })?;
            let tid = self.intern(&normalize(&buf));
            let prev = self.g.producer[tid as usize];
            if prev != NONE {
                let pt = &self.g.tasks[prev as usize];
                let ps = &self.ff.steps[pt.step as usize];
                let a = task_id(ps, &pt.params);
                let msg = format!(
                    "two tasks write `{}`: {a} and {}; give each task its own output path",
                    self.g.targets[tid as usize],
                    task_id(st, &params)
                );
                // Point at this output; say where the other task's output is written.
                let other = pt.outputs().iter().position(|&o| o == tid).and_then(|i| ps.outputs.get(i));
                return Err(match other {
                    Some(o2) if !std::ptr::eq(o2, o) => {
                        let (l, c) = o2.tpl.span.line_col();
                        Error::at_help(
                            msg,
                            &o.tpl.span,
                            format!("{a} writes it through the output at {}:{l}:{c}", o2.tpl.span.source.name),
                        )
                    }
                    _ => Error::at(msg, &o.tpl.span),
                });
            }
            self.g.producer[tid as usize] = id;
            outputs.push(tid);
        }
        self.g.tasks.push(Task::new(step, params, &[], &outputs, &[]));
        self.chain.push(NONE);
        self.index_task(id);
        self.work.push(id);
        Ok(id)
    }

    /// Render inputs and requires of a task, and link it to the tasks that produce them.
    fn expand(&mut self, t: u32) -> Result<()> {
        let ff = self.ff;
        let task = &self.g.tasks[t as usize];
        let step_idx = task.step;
        let st = &ff.steps[task.step as usize];
        // The params on the stack (the task table grows below): no allocation per task.
        let mut pbuf = [ParamValue::Choice(0); MAX_PARAMS];
        pbuf[..task.params.len()].copy_from_slice(&task.params);
        let params = &pbuf[..task.params.len()];
        let tid = if self.needs_id[task.step as usize] { task_id(st, params) } else { String::new() };
        // The params as strings, into buffers kept from task to task.
        let mut pstrs = std::mem::take(&mut self.pstrs);
        pstrs.truncate(st.params.len());
        for (i, (name, kind)) in st.params.iter().enumerate() {
            if i == pstrs.len() {
                pstrs.push((name, String::new()));
            }
            pstrs[i].0 = name;
            pstrs[i].1.clear();
            kind.write(params[i], &mut pstrs[i].1);
        }
        let ctx = plan_context(ff, st, &tid, &pstrs);
        // Buffers kept from task to task (put back below; an error ends planning anyway).
        let Scratch { mut inputs, mut deps, mut found, mut text } = std::mem::take(&mut self.scratch);
        inputs.clear();
        deps.clear();
        for tpl in &st.inputs {
            text.clear();
            ff.engine.render_into(tpl.id, &ctx, &mut text).map_err(|e| {
                let msg = format!("{}: cannot render input `{}`: {e}", task_id(st, params), ff.engine.source(tpl.id));
                // A task at the edge of the calendar was reached by following inputs from
                // task to task: a chain through several steps with no `start` or `end`.
                let edge = st.time_param.and_then(|ti| params[ti].civil()).map(|c| c.year);
                match edge {
                    Some(y @ (0 | 9999)) => Error::at_help(
                        msg,
                        &tpl.span,
                        format!(
                            "planning followed inputs from task to task up to the year {y:04}: steps that read {} intervals of each other need {}",
                            if y == 0 { "earlier" } else { "later" },
                            if y == 0 { "a `start`" } else { "an `end`" }
                        ),
                    ),
                    _ => Error::at(msg, &tpl.span),
                }
            })?;
            for line in input_lines(&text) {
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
                            return Err(Error::at(
                                format!(
                                    "step `{}` reads an earlier interval of itself through input `{}` ({} reads {earlier}) and has no `start`, so the chain would reach back without end; give the step `start = \"…\"` (or set `start` in [flux])",
                                    st.name,
                                    ff.engine.source(tpl.id),
                                    task_id(st, params),
                                ),
                                &tpl.span,
                            ));
                        }
                        if ps == step_idx
                            && let Some(ti) = st.time_param
                            && st.end.is_none()
                            && pv[ti] > params[ti]
                        {
                            let later = task_id(st, &pv);
                            return Err(Error::at(
                                format!(
                                    "step `{}` reads a later interval of itself through input `{}` ({} reads {later}) and has no `end`, so the chain would run forward without end; give the step `end = \"…\"`",
                                    st.name,
                                    ff.engine.source(tpl.id),
                                    task_id(st, params),
                                ),
                                &tpl.span,
                            ));
                        }
                        let p = self.task(ps, pv)?;
                        // The producer interned its outputs: take the one this line names
                        // from it rather than hashing the line again.
                        let known = self.g.tasks[p as usize]
                            .outputs()
                            .iter()
                            .copied()
                            .find(|&o| *self.g.targets[o as usize] == *line);
                        inputs.push(match known {
                            Some(o) => o,
                            None => self.intern(&line),
                        });
                        deps.push(p);
                    }
                    _ => {
                        let names: Vec<String> =
                            found.iter().map(|(s, v)| task_id(&ff.steps[*s as usize], v)).collect();
                        return Err(Error::at(
                            format!(
                                "{}: input `{line}` could be written by several tasks: {}; make the output templates distinct",
                                task_id(st, params),
                                names.join(", ")
                            ),
                            &tpl.span,
                        ));
                    }
                }
            }
        }
        for req in &st.requires {
            let rs = &ff.steps[req.step];
            let mut vals = Vec::with_capacity(rs.params.len());
            for (pi, (pname, kind)) in rs.params.iter().enumerate() {
                let v = if let Some((_, tpl)) = req.params.iter().find(|(i, _)| *i == pi) {
                    let s = ff.engine.render(tpl.id, &ctx).map_err(|e| {
                        Error::at(format!("{}: requires {}: {e}", task_id(st, params), rs.name), &tpl.span)
                    })?;
                    kind.parse(s.trim()).map_err(|e| {
                        Error::at(format!("{}: requires {}: {pname}: {e}", task_id(st, params), rs.name), &tpl.span)
                    })?
                } else {
                    let i = st.params.iter().position(|(n, _)| n == pname).unwrap_or(0);
                    let s = &pstrs[i].1;
                    kind.parse(s).map_err(|e| {
                        Error::at(format!("{}: requires {}: {pname}: {e}", task_id(st, params), rs.name), &req.span)
                    })?
                };
                vals.push(v);
            }
            if !in_domain(rs, &vals) {
                continue;
            }
            deps.push(self.task(req.step as u32, Params::from_slice(&vals))?);
        }
        deps.sort_unstable();
        deps.dedup();
        self.g.tasks[t as usize].link(&inputs, &deps);
        self.scratch = Scratch { inputs, deps, found, text };
        self.pstrs = pstrs;
        Ok(())
    }

    /// A command-line target: a task id, a step name or an output path.
    fn resolve_target(&mut self, t: &str, req: &Request) -> Result<Vec<u32>> {
        let ff = self.ff;
        if let Some(open) = t.find('[')
            && t.ends_with(']')
            && let Some(&si) = self.by_name.get(&t[..open])
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
            return Ok(vec![self.task(si as u32, vals.into())?]);
        }
        if let Some(&si) = self.by_name.get(t) {
            let values = step_values(ff, si, req, self.room())?;
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

/// Every combination of param values a step is asked for (SPEC §3.2); more than `room`
/// (what `[flux] max_tasks` still allows) is an error before any is made.
fn step_values(ff: &Fluxfile, si: usize, req: &Request, room: u64) -> Result<Vec<Params>> {
    let too_many = |n: u64| {
        Error::Plan(format!(
            "step `{}` is asked for {n} tasks, more than the {} that `max_tasks` in [flux] still allows; ask for fewer intervals (targets, --date, --date-range) or raise max_tasks",
            ff.steps[si].name, room
        ))
    };
    let step = &ff.steps[si];
    let mut per_param: Vec<Vec<ParamValue>> = Vec::with_capacity(step.params.len());
    for (pi, (name, kind)) in step.params.iter().enumerate() {
        let given = req.params.iter().find(|(k, _)| k == name);
        let mut vals: Vec<ParamValue> = if let Some((_, vs)) = given {
            let mut out = Vec::new();
            for v in vs {
                if matches!(kind, ParamKind::Int { .. })
                    && let Some((a, b)) = v.split_once("..")
                {
                    let bad = |e: String| Error::Usage(format!("--param {name}={v}: {e}"));
                    let (a, b) = (kind.parse(a).map_err(bad)?, kind.parse(b).map_err(bad)?);
                    if kind.count_between(a, b) > crate::param::MAX_EXPANSION {
                        return Err(bad(format!("more than the limit of {} values", crate::param::MAX_EXPANSION)));
                    }
                    out.extend(kind.values_between(a, b));
                } else if kind.is_time() && v.contains("..") {
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
                let n = kind.count_between(s, e);
                if n > room {
                    return Err(too_many(n));
                }
                kind.values_between(s, e)
            } else if let (Some(s), Some(_), Some(now)) = (step.start, &step.schedule, req.now) {
                match kind.last_ended(now) {
                    Some(last) => {
                        let n = kind.count_between(s, last);
                        if n > room {
                            return Err(too_many(n));
                        }
                        kind.values_between(s, last)
                    }
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
            match kind.domain() {
                Some(all) => all,
                None => {
                    return Err(Error::Usage(format!(
                        "step `{}` has {} param `{name}` and no value for it: pass --param {name}=…",
                        step.name,
                        missing_kind_text(kind),
                    )));
                }
            }
        };
        if Some(pi) == step.time_param {
            vals.retain(|v| step.start.is_none_or(|s| *v >= s) && step.end.is_none_or(|e| *v <= e));
        }
        vals.sort_unstable();
        vals.dedup();
        per_param.push(vals);
    }
    let n = per_param.iter().fold(1u64, |n, v| n.saturating_mul(v.len() as u64));
    if n > room {
        return Err(too_many(n));
    }
    if let [vals] = &per_param[..] {
        // One param (most steps): values inline, no allocation per task.
        return Ok(vals.iter().map(|&v| Params::One(v)).collect());
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
    Ok(out.into_iter().map(Params::from).collect())
}

/// `a string`, `an int` (with its bound when one is given).
fn missing_kind_text(kind: &ParamKind) -> String {
    match kind {
        ParamKind::Int { min: Some(m), max: None } => format!("an int (min {m})"),
        ParamKind::Int { min: None, max: Some(m) } => format!("an int (max {m})"),
        ParamKind::Int { .. } => "an int".into(),
        k => format!("a {}", k.name()),
    }
}

/// The first param of a step that has no value in the request and no domain of its own
/// (a `string` param, an `int` without both bounds): such a step cannot be expanded.
fn valueless_param<'s>(step: &'s Step, req: &Request) -> Option<&'s (String, ParamKind)> {
    step.params
        .iter()
        .find(|(name, kind)| !kind.is_time() && kind.domain().is_none() && !req.params.iter().any(|(k, _)| k == name))
}

/// With no target, the steps left out because a param has no value and no domain (SPEC
/// §3.1): (step, param, kind) in declaration order.
pub fn left_out<'f>(ff: &'f Fluxfile, req: &Request) -> Vec<(&'f str, &'f str, &'f ParamKind)> {
    if !req.targets.is_empty() {
        return Vec::new();
    }
    ff.steps
        .iter()
        .filter_map(|st| valueless_param(st, req).map(|(name, kind)| (st.name.as_str(), name.as_str(), kind)))
        .collect()
}

/// Kahn's algorithm; a leftover task means a cycle, which is reported by walking it.
fn topo_order(ff: &Fluxfile, g: &TaskGraph) -> Result<Vec<u32>> {
    let n = g.tasks.len();
    let mut indeg: Vec<u32> = g.tasks.iter().map(|t| t.deps().len() as u32).collect();
    // Reverse edges in two flat arrays (task t's dependents are `rev[at[t]..at[t + 1]]`),
    // not a vector per task.
    let mut at: Vec<u32> = vec![0; n + 1];
    for t in &g.tasks {
        for &d in t.deps() {
            at[d as usize + 1] += 1;
        }
    }
    for i in 0..n {
        at[i + 1] += at[i];
    }
    let mut fill = at.clone();
    let mut rev: Vec<u32> = vec![0; at[n] as usize];
    for (i, t) in g.tasks.iter().enumerate() {
        for &d in t.deps() {
            rev[fill[d as usize] as usize] = i as u32;
            fill[d as usize] += 1;
        }
    }
    drop(fill);
    // FIFO in creation order: steps in declaration order, dates ascending. The order
    // itself is the queue: tasks are appended when their last dep is placed.
    let mut order: Vec<u32> = Vec::with_capacity(n);
    order.extend((0..n as u32).filter(|&i| indeg[i as usize] == 0));
    let mut head = 0;
    while head < order.len() {
        let t = order[head] as usize;
        head += 1;
        for &d in &rev[at[t] as usize..at[t + 1] as usize] {
            indeg[d as usize] -= 1;
            if indeg[d as usize] == 0 {
                order.push(d);
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
        let next = g.tasks[cur as usize].deps().iter().copied().find(|&d| indeg[d as usize] > 0).unwrap_or(start);
        if let Some(&i) = seen.get(&next) {
            let mut cyc: Vec<String> = path[i..].iter().rev().map(|&t| g.task_id(ff, t)).collect();
            cyc.push(cyc[0].clone());
            let msg = format!("cycle: {}", cyc.join(" -> "));
            // Point at what makes the last task of the walk depend on the first.
            let (consumer, producer) = (cur, path[i]);
            return Err(match edge_span(ff, g, consumer, producer) {
                Some(span) => Error::at_help(
                    msg,
                    &span,
                    format!(
                        "here {} reads what {} writes, which closes the cycle",
                        g.task_id(ff, consumer),
                        g.task_id(ff, producer)
                    ),
                ),
                None => Error::Plan(msg),
            });
        }
        seen.insert(next, path.len());
        path.push(next);
        cur = next;
    }
}

/// Step-level edges for `flux graph`: (producer step, consumer step), sorted, without
/// self-edges. Each step is probed at a few values inside its domain (a default date, its
/// own `start` and `end`); each probe's inputs and `requires` are matched to the steps that
/// write them, without expanding those in turn, so the cost is linear in the steps and
/// their inputs. A producer matched outside its own domain is probed for again at its
/// `start` and `end`, so that an edge into a step with a bounded domain is seen whatever
/// the reader's own domain is.
pub fn step_edges(ff: &Fluxfile) -> Result<Vec<(usize, usize)>> {
    let matcher = Matcher::new(ff);
    let default = NaiveDate::from_ymd_opt(2024, 6, 15).unwrap_or_default();
    let bounds = |s: &Step| -> Vec<NaiveDate> {
        let Some(ti) = s.time_param else { return Vec::new() };
        [s.start, s.end]
            .into_iter()
            .flatten()
            .filter_map(|v| s.params[ti].1.interval(v))
            .map(|(a, _)| a.date())
            .collect()
    };
    let mut edges: rustc_hash::FxHashSet<(usize, usize)> = Default::default();
    let mut near: rustc_hash::FxHashSet<(usize, usize)> = Default::default();
    let mut found = Vec::new();
    for si in 0..ff.steps.len() {
        let mut dates = vec![default];
        dates.extend(bounds(&ff.steps[si]));
        found.clear();
        probe_producers(ff, &matcher, si, &dates, &mut found)?;
        for &(p, in_dom) in &found {
            if p != si {
                if in_dom {
                    edges.insert((p, si));
                } else {
                    near.insert((p, si));
                }
            }
        }
    }
    let mut near: Vec<(usize, usize)> = near.into_iter().filter(|e| !edges.contains(e)).collect();
    near.sort_unstable();
    for (p, c) in near {
        found.clear();
        probe_producers(ff, &matcher, c, &bounds(&ff.steps[p]), &mut found)?;
        if found.iter().any(|&(q, in_dom)| q == p && in_dom) {
            edges.insert((p, c));
        }
    }
    let mut edges: Vec<(usize, usize)> = edges.into_iter().collect();
    edges.sort_unstable();
    Ok(edges)
}

/// A step's params with their values in canonical form, in declaration order, as
/// templates see them.
pub fn param_strings<'s>(st: &'s Step, params: &[ParamValue]) -> Vec<(&'s str, String)> {
    st.params.iter().zip(params.iter()).map(|((n, k), v)| (n.as_str(), k.format(*v))).collect()
}

/// The context planning renders a task's input and `requires` templates in (no inputs
/// or outputs yet).
fn plan_context<'c>(ff: &'c Fluxfile, st: &'c Step, tid: &'c str, pstrs: &'c [(&'c str, String)]) -> Context<'c> {
    Context { step: &st.name, task: tid, params: pstrs, vars: &ff.vars, inputs: None, outputs: None, extra: &[] }
}

/// A value of a param that is not a time, to probe step edges with.
fn probe_value(k: &ParamKind) -> ParamValue {
    match k {
        ParamKind::Int { min, max } => ParamValue::Int(min.unwrap_or_else(|| max.map_or(0, |m| m.min(0)))),
        ParamKind::Str => ParamValue::Str(crate::param::intern("x")),
        _ => ParamValue::Choice(0),
    }
}

/// The steps that write what step `si` reads, probed at its values for `dates` (each
/// clamped to the step's domain; list params take their first value), with whether the
/// producing task lies inside its step's domain.
fn probe_producers(
    ff: &Fluxfile,
    matcher: &Matcher,
    si: usize,
    dates: &[NaiveDate],
    out: &mut Vec<(usize, bool)>,
) -> Result<()> {
    let st = &ff.steps[si];
    let mut probes: Vec<Vec<ParamValue>> = Vec::new();
    for d in dates {
        let mut vals = Vec::with_capacity(st.params.len());
        for (i, (_, k)) in st.params.iter().enumerate() {
            let v = if Some(i) == st.time_param {
                let Some(mut v) = k.expand_date(*d).first().copied() else { continue };
                if let Some(s) = st.start {
                    v = v.max(s);
                }
                if let Some(e) = st.end {
                    v = v.min(e);
                }
                v
            } else {
                probe_value(k)
            };
            vals.push(v);
        }
        if !probes.contains(&vals) {
            probes.push(vals);
        }
    }
    let mut found = Vec::new();
    for params in probes {
        let tid = task_id(st, &params);
        let pstrs = param_strings(st, &params);
        let ctx = plan_context(ff, st, &tid, &pstrs);
        for tpl in &st.inputs {
            let text = ff.engine.render(tpl.id, &ctx).map_err(|e| {
                Error::at(format!("{tid}: cannot render input `{}`: {e}", ff.engine.source(tpl.id)), &tpl.span)
            })?;
            for line in input_lines(&text) {
                found.clear();
                matcher.find(ff, &line, &mut found);
                for (ps, pv) in &found {
                    let ps = *ps as usize;
                    out.push((ps, in_domain(&ff.steps[ps], pv)));
                }
            }
        }
        for req in &st.requires {
            let rs = &ff.steps[req.step];
            let mut vals = Vec::with_capacity(rs.params.len());
            for (pi, (pname, kind)) in rs.params.iter().enumerate() {
                let text = match req.params.iter().find(|(i, _)| *i == pi) {
                    Some((_, tpl)) => ff
                        .engine
                        .render(tpl.id, &ctx)
                        .map_err(|e| Error::at(format!("{tid}: requires {}: {e}", rs.name), &tpl.span))?,
                    None => pstrs.iter().find(|(n, _)| n == pname).map(|(_, v)| v.clone()).unwrap_or_default(),
                };
                match kind.parse(text.trim()) {
                    Ok(v) => vals.push(v),
                    Err(e) => {
                        return Err(Error::at(format!("{tid}: requires {}: {pname}: {e}", rs.name), &req.span));
                    }
                }
            }
            out.push((req.step, in_domain(rs, &vals)));
        }
    }
    Ok(())
}

/// Where the Fluxfile makes `consumer` depend on `producer`: the input template one of
/// whose targets `producer` writes, or else the `requires` entry naming its step.
fn edge_span(ff: &Fluxfile, g: &TaskGraph, consumer: u32, producer: u32) -> Option<Span> {
    let c = &g.tasks[consumer as usize];
    let p = &g.tasks[producer as usize];
    let st = &ff.steps[c.step as usize];
    let tid = task_id(st, &c.params);
    let pstrs = param_strings(st, &c.params);
    let ctx = plan_context(ff, st, &tid, &pstrs);
    for tpl in &st.inputs {
        let Ok(text) = ff.engine.render(tpl.id, &ctx) else { continue };
        if text.lines().any(|l| {
            let l = normalize(l);
            p.outputs().iter().any(|&o| g.target(o) == l)
        }) {
            return Some(tpl.span.clone());
        }
    }
    st.requires.iter().find(|r| r.step == p.step as usize).map(|r| r.span.clone())
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
