//! The Fluxfile (SPEC §2): found upwards from the current folder (or named with `-f`),
//! parsed as TOML with a span on every key and value, merged with `include`d files and
//! `generate`d TOML, and validated into an immutable [`Fluxfile`]: steps with typed params,
//! compiled templates and checked policies. Nothing half-checked leaves this module.
//!
//! Every error points at `file:line:col`. Unknown keys get a "did you mean". A key that this
//! flux parses but does not act on yet is an error that says so, never silently ignored.
//!
//! This module knows nothing about tasks, the state database or execution.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::error::{Diag, Error, Result, Source, Span, did_you_mean};
use crate::limits;
use crate::param::{self, ParamKind, ParamValue};
use crate::template::{Engine, Filter, Mode, Segment, TemplateId};

/// Names a template can read besides params and vars; params may not use them.
pub const RESERVED: &[&str] =
    &["inputs", "outputs", "params", "vars", "step", "task", "attempt", "run_id", "interval_start", "interval_end"];

/// What the command line adds to the Fluxfile before validation.
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    pub file: Option<PathBuf>,
    pub vars: Vec<(String, String)>,
    pub profile: Option<String>,
}

/// A compiled template with where it came from.
#[derive(Debug, Clone)]
pub struct Tpl {
    pub id: TemplateId,
    pub span: Span,
}

/// A piece of a validated output template: literal text or a param in an invertible form.
#[derive(Debug, Clone, PartialEq)]
pub enum OutSeg {
    Lit(String),
    /// Param index (into `Step::params`) and how it is written.
    Param(usize, OutFmt),
}

/// How a param is written in an output path.
#[derive(Debug, Clone, PartialEq)]
pub enum OutFmt {
    Canonical,
    DsNodash,
    Strftime(String),
    /// A strftime that keeps only part of the value (`year={{ date | strftime('%Y') }}`),
    /// allowed when the same param also appears in a form that keeps all of it.
    Lossy(String),
}

/// One output template: compiled, and parsed into invertible segments.
#[derive(Debug, Clone)]
pub struct Output {
    pub tpl: Tpl,
    pub segs: Vec<OutSeg>,
    /// A trailing `/`: the output is a directory.
    pub dir: bool,
}

/// One `requires` entry.
#[derive(Debug, Clone)]
pub struct Require {
    pub step: usize,
    /// Param index in the required step -> template giving its value; params not named
    /// take the requiring task's value of the same name.
    pub params: Vec<(usize, Tpl)>,
    pub span: Span,
}

/// `action = "copy"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Copy,
}

/// A step's schedule (validated; `flux schedule` acts on it, planning uses it for catch-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Cron(String),
}

/// One `[step.NAME]`, validated.
#[derive(Debug)]
pub struct Step {
    pub name: String,
    pub span: Span,
    pub description: Option<String>,
    /// Declaration order; task ids list params in this order.
    pub params: Vec<(String, ParamKind)>,
    /// Index of the time param (date, hour or month), if any.
    pub time_param: Option<usize>,
    pub inputs: Vec<Tpl>,
    pub outputs: Vec<Output>,
    pub requires: Vec<Require>,
    pub run: Vec<Tpl>,
    pub pre: Vec<Tpl>,
    pub post: Vec<Tpl>,
    pub action: Option<Action>,
    pub env: Vec<(String, Tpl)>,
    pub start: Option<ParamValue>,
    pub end: Option<ParamValue>,
    pub schedule: Option<Schedule>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub retry_backoff: f64,
    pub timeout: Option<Duration>,
    pub pool: Option<usize>,
    pub priority: i64,
    pub stage: bool,
    /// CPUs and memory (bytes) the task needs; the local scheduler budgets them. 0: not
    /// declared, so not budgeted (`-j` alone bounds such tasks, as in make).
    pub cpus: u32,
    pub mem: Option<u64>,
    /// The step's `run` is a probe: exit 0 means ready (SPEC §2.1).
    pub sensor: bool,
    /// How long to wait for missing sources (or for a sensor), and how often to look.
    pub wait: Duration,
    pub poll: Duration,
    pub on_success: Option<Tpl>,
    pub on_failure: Option<Tpl>,
    pub on_retry: Option<Tpl>,
    /// `catchup = false`: the scheduler builds only the latest ended interval (SPEC §10).
    pub catchup: bool,
    /// At most this many intervals of the step in one scheduler tick, oldest first.
    pub max_active_runs: Option<u32>,
    /// Deadline after the end of a task's interval, and the hook that fires on a miss.
    pub sla: Option<Duration>,
    pub on_sla_miss: Option<Tpl>,
    /// `executor`: where its tasks run; `None`: the build's default (`--executor`, else
    /// `[flux] executor`, else local).
    pub executor: Option<crate::exec::Kind>,
    /// `[slurm]` with the step's `slurm` table over it (used when it runs on Slurm).
    pub slurm: Arc<crate::exec::SlurmSettings>,
    /// `array = true`: ready tasks go to Slurm as one job array per round (and where the
    /// key is, to say so if the step turns out to run locally).
    pub array: Option<(bool, Span)>,
}

/// The validated Fluxfile: immutable once loaded.
pub struct Fluxfile {
    /// The main file's path.
    pub path: PathBuf,
    /// Its folder: commands run here and relative targets are relative to it.
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    pub jobs: Option<usize>,
    /// `[flux] max_tasks`: planning stops with an error past this many tasks.
    pub max_tasks: u64,
    pub vars: Vec<(String, String)>,
    /// Pool name and size.
    pub pools: Vec<(String, usize)>,
    pub steps: Vec<Step>,
    pub engine: Engine,
    /// Digest of every source text (for caching derived data).
    pub digest: blake3::Hash,
    pub notify: Option<Notify>,
    /// `[store."scheme://authority"]` settings.
    pub stores: Vec<crate::store::StoreConfig>,
    /// `[flux] timezone`: where dates, weeks and months begin and end, and when cron
    /// schedules fire (SPEC §10). Hours are UTC hours whatever it is.
    pub timezone: chrono_tz::Tz,
    /// The `include` patterns as absolute globs, so that a reload sees new matches.
    pub include_globs: Vec<String>,
    /// `[flux] executor`: where steps without an `executor` run by default.
    pub executor: Option<crate::exec::Kind>,
    /// `[slurm]`: how the Slurm executor polls and waits (per-step settings are on the steps).
    pub slurm: crate::exec::SlurmConfig,
    /// `[flux] cache_max` in bytes: how much the download cache keeps after a build
    /// (`None`: a share of the free disk, see `cache::max_bytes`).
    pub cache_max: Option<u64>,
}

/// `[notify]`: where failure, retry and SLA events are POSTed.
#[derive(Debug, Clone)]
pub struct Notify {
    pub webhook: String,
    pub timeout: Duration,
    pub retries: u32,
}

impl std::fmt::Debug for Fluxfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fluxfile").field("path", &self.path).field("steps", &self.steps).finish_non_exhaustive()
    }
}

impl Fluxfile {
    /// Where a local target is on disk: relative targets are relative to the Fluxfile.
    pub fn abs(&self, target: &str) -> PathBuf {
        let p = Path::new(target);
        if p.is_absolute() { p.to_path_buf() } else { self.dir.join(p) }
    }

    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// Find and load the Fluxfile.
    pub fn load(opts: &LoadOptions) -> Result<Fluxfile> {
        let path = match &opts.file {
            Some(p) => {
                if !p.is_file() {
                    return Err(Error::Usage(format!("no Fluxfile at {}", p.display())));
                }
                p.clone()
            }
            None => find_fluxfile()?,
        };
        let bytes = std::fs::read(&path).map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
        let dir = path
            .parent()
            .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        let source = source_from_bytes(display_name(&path), Some(path.clone()), bytes)?;
        Loader::new(path, dir, opts).load(source)
    }
}

fn display_name(path: &Path) -> String {
    if let Ok(cwd) = std::env::current_dir()
        && let Ok(abs) = std::fs::canonicalize(path)
        && let Ok(rel) = abs.strip_prefix(&cwd)
    {
        return rel.display().to_string();
    }
    path.display().to_string()
}

/// A [`Source`] from the bytes of a file or a generator's output. Invalid UTF-8 is an error
/// pointing at the first byte that is not part of a UTF-8 character.
fn source_from_bytes(name: String, path: Option<PathBuf>, bytes: Vec<u8>) -> Result<Arc<Source>> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Arc::new(Source { name, path, text })),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bad = e.as_bytes().get(at).copied().unwrap_or(0);
            // The lossy text is the same as the bytes up to `at`, where U+FFFD stands in.
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let source = Arc::new(Source { name, path, text });
            let span = Span::new(&source, at..at + char::REPLACEMENT_CHARACTER.len_utf8());
            Err(Error::at_help(
                format!("`{}` is not valid UTF-8: byte 0x{bad:02X} is not part of a UTF-8 character", source.name),
                &span,
                "a Fluxfile is UTF-8 text; save the file as UTF-8 (e.g. `iconv -t UTF-8`)",
            ))
        }
    }
}

/// An integer key that must lie within `lo..=hi`.
fn int_in(k: &Keys<'_>, key: &str, lo: i64, hi: i64, example: &str) -> Result<Option<(i64, Span)>> {
    match k.int(key)? {
        Some((n, span)) if n < lo || n > hi => Err(Error::at_help(
            format!("`{key}` in {} must be {}, not {n}", k.what, bounds_text(lo, hi)),
            &span,
            format!("write e.g. `{example}`"),
        )),
        other => Ok(other),
    }
}

fn bounds_text(lo: i64, hi: i64) -> String {
    if lo == 0 { format!("0 or more and at most {hi}") } else { format!("between {lo} and {hi}") }
}

/// A duration key, at most [`limits::MAX_DURATION`].
fn duration_in(k: &Keys<'_>, key: &str) -> Result<Option<(Duration, Span)>> {
    let Some((s, span)) = k.str(key)? else { return Ok(None) };
    let d = param::parse_duration(&s)
        .map_err(|e| Error::at_help(e, &span, "write e.g. \"90s\", \"5m\", \"2h\" or \"1d\""))?;
    if d > limits::MAX_DURATION {
        return Err(Error::at_help(
            format!("`{key}` in {} must be at most {}", k.what, limits::MAX_DURATION_TEXT),
            &span,
            "write e.g. \"90s\", \"5m\", \"2h\" or \"1d\"",
        ));
    }
    Ok(Some((d, span)))
}

fn find_fluxfile() -> Result<PathBuf> {
    let cwd = std::env::current_dir().map_err(|e| Error::Io(format!("cannot read the current folder: {e}")))?;
    let mut dir: Option<&Path> = Some(&cwd);
    while let Some(d) = dir {
        for name in ["Fluxfile", "Fluxfile.toml"] {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
        dir = d.parent();
    }
    Err(Error::Usage(format!(
        "no Fluxfile in {} or any parent folder; create one, or name it with -f PATH",
        cwd.display()
    )))
}

// ---------------------------------------------------------------------------------------
// Spanned access to the TOML tree.

type Table<'i> = DeTable<'i>;

/// A parsed file and its source, for spans.
struct Doc {
    source: Arc<Source>,
    table: DeTable<'static>,
}

fn parse_doc(source: Arc<Source>) -> Result<Doc> {
    // Docs live for the whole process (a Fluxfile is loaded once per invocation), so the
    // text is leaked once to give the spanned tree a 'static lifetime.
    let text: &'static str = Box::leak(source.text.clone().into_boxed_str());
    match DeTable::parse(text) {
        Ok(t) => Ok(Doc { source, table: t.into_inner() }),
        Err(e) => {
            let span = e.span().map(|r| Span::new(&source, r));
            let msg = e.message().trim().to_string();
            Err(Error::Fluxfile(Box::new(
                Diag::new(format!("this is not valid TOML: {msg}"), span)
                    .help("fix the TOML syntax; see docs/fluxfile.md"),
            )))
        }
    }
}

fn as_int(v: &DeValue<'_>) -> Option<i64> {
    match v {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}
fn as_float(v: &DeValue<'_>) -> Option<f64> {
    match v {
        DeValue::Float(f) => f.as_str().parse().ok(),
        _ => as_int(v).map(|i| i as f64),
    }
}
fn as_plain_str<'a>(v: &'a DeValue<'_>) -> Option<&'a str> {
    match v {
        DeValue::String(s) => Some(s),
        _ => None,
    }
}
fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a TOML date (quote it: \"2024-01-01\")",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Strings with their spans, and the span of the whole list.
type SpannedList = (Vec<(String, Span)>, Span);

/// Keys of one table, checked against what is allowed.
struct Keys<'a> {
    doc: &'a Arc<Source>,
    table: &'a Table<'static>,
    what: String,
}

impl<'a> Keys<'a> {
    fn check(doc: &'a Arc<Source>, table: &'a Table<'static>, what: &str, allowed: &[&str]) -> Result<Keys<'a>> {
        for (k, _) in table.iter() {
            if !allowed.contains(&k.get_ref().as_ref()) {
                let name: &str = k.get_ref();
                let span = Span::new(doc, k.span());
                let mut d = Diag::new(format!("unknown key `{name}` in {what}"), Some(span));
                d = match did_you_mean(name, allowed.iter().copied()) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(format!("allowed keys here: {}", allowed.join(", "))),
                };
                return Err(Error::Fluxfile(Box::new(d)));
            }
        }
        Ok(Keys { doc, table, what: what.to_string() })
    }

    fn get(&self, key: &str) -> Option<(&'a DeValue<'static>, Span)> {
        self.table.iter().find(|(k, _)| k.get_ref().as_ref() == key).map(|(k, v)| {
            let _ = k;
            (v.get_ref(), Span::new(self.doc, v.span()))
        })
    }

    fn key_span(&self, key: &str) -> Option<Span> {
        self.table.iter().find(|(k, _)| k.get_ref().as_ref() == key).map(|(k, _)| Span::new(self.doc, k.span()))
    }

    fn wrong(&self, key: &str, span: &Span, want: &str, got: &DeValue<'_>) -> Error {
        Error::at_help(
            format!("`{key}` in {} must be {want}, not {}", self.what, type_name(got)),
            span,
            format!("write `{key}` as {want}"),
        )
    }

    fn str(&self, key: &str) -> Result<Option<(String, Span)>> {
        match self.get(key) {
            None => Ok(None),
            Some((v, span)) => match as_plain_str(v) {
                Some(s) => Ok(Some((s.to_string(), span))),
                None => Err(self.wrong(key, &span, "a string", v)),
            },
        }
    }

    fn bool(&self, key: &str) -> Result<Option<(bool, Span)>> {
        match self.get(key) {
            None => Ok(None),
            Some((DeValue::Boolean(b), span)) => Ok(Some((*b, span))),
            Some((v, span)) => Err(self.wrong(key, &span, "true or false", v)),
        }
    }

    fn int(&self, key: &str) -> Result<Option<(i64, Span)>> {
        match self.get(key) {
            None => Ok(None),
            Some((v, span)) => match as_int(v) {
                Some(n) => Ok(Some((n, span))),
                None if matches!(v, DeValue::Integer(_)) => Err(Error::at_help(
                    format!("`{key}` in {} is too large a number", self.what),
                    &span,
                    format!("write `{key}` as a smaller integer"),
                )),
                None => Err(self.wrong(key, &span, "an integer", v)),
            },
        }
    }

    fn float(&self, key: &str) -> Result<Option<(f64, Span)>> {
        match self.get(key) {
            None => Ok(None),
            Some((v, span)) => match as_float(v) {
                Some(n) => Ok(Some((n, span))),
                None => Err(self.wrong(key, &span, "a number", v)),
            },
        }
    }

    /// A list of strings; `one_ok` also accepts a single string.
    fn strs(&self, key: &str, one_ok: bool) -> Result<Option<SpannedList>> {
        match self.get(key) {
            None => Ok(None),
            Some((v, span)) => match v {
                DeValue::Array(a) => {
                    let mut out = Vec::with_capacity(a.len());
                    for item in a.iter() {
                        let s = Span::new(self.doc, item.span());
                        match as_plain_str(item.get_ref()) {
                            Some(x) => out.push((x.to_string(), s)),
                            None => {
                                return Err(self.wrong(key, &s, "a list of strings", item.get_ref()));
                            }
                        }
                    }
                    Ok(Some((out, span)))
                }
                _ if one_ok && as_plain_str(v).is_some() => {
                    Ok(Some((vec![(as_plain_str(v).unwrap_or_default().to_string(), span.clone())], span)))
                }
                _ => Err(self.wrong(
                    key,
                    &span,
                    if one_ok { "a string or a list of strings" } else { "a list of strings" },
                    v,
                )),
            },
        }
    }

    fn table(&self, key: &str) -> Result<Option<(&'a Table<'static>, Span)>> {
        match self.get(key) {
            None => Ok(None),
            Some((DeValue::Table(t), span)) => Ok(Some((t, span))),
            Some((v, span)) => Err(self.wrong(key, &span, "a table", v)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Loading and validation.

const TOP_KEYS: &[&str] = &["flux", "vars", "profile", "pools", "step", "store", "notify", "slurm"];
const INCLUDED_KEYS: &[&str] = &["vars", "pools", "step"];
const FLUX_KEYS: &[&str] = &[
    "start",
    "state",
    "jobs",
    "include",
    "generate",
    "timezone",
    "generate_timeout",
    "max_tasks",
    "executor",
    "cache_max",
];
const STEP_KEYS: &[&str] = &[
    "params",
    "inputs",
    "outputs",
    "requires",
    "run",
    "pre",
    "post",
    "action",
    "sensor",
    "wait",
    "poll",
    "start",
    "end",
    "schedule",
    "catchup",
    "max_active_runs",
    "retries",
    "retry_delay",
    "retry_backoff",
    "timeout",
    "pool",
    "priority",
    "cpus",
    "mem",
    "executor",
    "slurm",
    "array",
    "stage",
    "env",
    "on_success",
    "on_failure",
    "on_retry",
    "on_sla_miss",
    "sla",
    "description",
];
/// Step keys parsed and validated, but not acted on by this version: using one is an error
/// that says so rather than a silently ignored setting.
const NOT_YET: &[(&str, &str)] = &[];

struct RawStep {
    name: String,
    name_span: Span,
    keys_doc: Arc<Source>,
    table: &'static Table<'static>,
}

struct Loader<'o> {
    path: PathBuf,
    dir: PathBuf,
    opts: &'o LoadOptions,
    docs: Vec<&'static Doc>,
}

impl<'o> Loader<'o> {
    fn new(path: PathBuf, dir: PathBuf, opts: &'o LoadOptions) -> Loader<'o> {
        Loader { path, dir, opts, docs: Vec::new() }
    }

    fn add_doc(&mut self, source: Arc<Source>) -> Result<&'static Doc> {
        // Docs live for the whole process: a Fluxfile is loaded once per invocation (and
        // `flux schedule` reloads only on change), so leaking them keeps spans simple.
        let doc: &'static Doc = Box::leak(Box::new(parse_doc(source)?));
        self.docs.push(doc);
        Ok(doc)
    }

    fn load(mut self, source: Arc<Source>) -> Result<Fluxfile> {
        let main = self.add_doc(source)?;
        let top = Keys::check(&main.source, &main.table, "the Fluxfile", TOP_KEYS)?;
        let stores = match top.table("store")? {
            Some((t, _)) => parse_stores(&main.source, t)?,
            None => Vec::new(),
        };

        // [flux]
        let mut start: Option<(String, Span)> = None;
        let mut state_dir = self.dir.join(".flux");
        let mut jobs = None;
        let mut max_tasks = limits::DEFAULT_MAX_TASKS;
        let mut timezone = chrono_tz::Tz::UTC;
        let mut include_globs = Vec::new();
        let mut extra_docs: Vec<&'static Doc> = Vec::new();
        let mut executor = None;
        let mut cache_max = None;
        if let Some((t, _)) = top.table("flux")? {
            let k = Keys::check(&main.source, t, "[flux]", FLUX_KEYS)?;
            executor = executor_in(&k)?;
            if let Some((s, span)) = k.str("cache_max")? {
                let help = "write a size such as cache_max = \"500M\" or \"10G\"";
                cache_max = Some(param::parse_size(&s).map_err(|e| Error::at_help(e, &span, help))?);
            }
            if let Some((s, span)) = k.str("start")? {
                start = Some((s, span));
            }
            if let Some((s, _)) = k.str("state")? {
                state_dir = self.dir.join(s);
            }
            if let Some((n, _)) = int_in(&k, "jobs", 1, limits::MAX_JOBS, "jobs = 4")? {
                jobs = Some(n as usize);
            }
            if let Some((n, _)) = int_in(&k, "max_tasks", 1, limits::MAX_MAX_TASKS, "max_tasks = 10000000")? {
                max_tasks = n as u64;
            }
            let generate_timeout = match duration_in(&k, "generate_timeout")? {
                Some((d, span)) if d.is_zero() => {
                    return Err(Error::at_help(
                        "`generate_timeout` must be longer than 0s",
                        &span,
                        "write e.g. generate_timeout = \"5m\"",
                    ));
                }
                Some((d, _)) => d,
                None => limits::DEFAULT_GENERATE_TIMEOUT,
            };
            if let Some((name, span)) = k.str("timezone")? {
                timezone = name.parse::<chrono_tz::Tz>().map_err(|_| {
                    let hint = crate::error::did_you_mean(&name, chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()))
                        .map(|s| format!("did you mean `{s}`? "))
                        .unwrap_or_default();
                    Error::at_help(
                        format!("`{name}` is not a time zone flux knows"),
                        &span,
                        format!("{hint}use an IANA name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\""),
                    )
                })?;
            }
            if let Some((pats, _)) = k.strs("include", false)? {
                for (pat, span) in pats {
                    include_globs.push(self.dir.join(&pat).to_string_lossy().to_string());
                    for file in self.glob(&pat, &span)? {
                        let bytes = std::fs::read(&file).map_err(|e| {
                            Error::at(format!("cannot read included file {}: {e}", file.display()), &span)
                        })?;
                        let src = source_from_bytes(display_name(&file), Some(file), bytes)?;
                        extra_docs.push(self.add_doc(src)?);
                    }
                }
            }
            if let Some((cmds, _)) = k.strs("generate", false)? {
                for (cmd, span) in cmds {
                    let stdout = crate::generate::run(&cmd, &self.dir, generate_timeout)
                        .map_err(|e| e.into_error(&cmd, &span))?;
                    let src = source_from_bytes(format!("generate: {cmd}"), None, stdout)?;
                    extra_docs.push(self.add_doc(src)?);
                }
            }
        }

        // [slurm]
        let mut slurm = crate::exec::SlurmConfig::default();
        if let Some((t, _)) = top.table("slurm")? {
            let k = Keys::check(
                &main.source,
                t,
                "[slurm]",
                &["poll", "latency_wait", "command_timeout", "partition", "account", "qos", "extra"],
            )?;
            if let Some((d, span)) = duration_in(&k, "poll")? {
                if d.is_zero() {
                    return Err(Error::at_help(
                        "`poll` in [slurm] must be longer than 0s",
                        &span,
                        "write e.g. poll = \"1s\"",
                    ));
                }
                slurm.poll = d;
            }
            if let Some((d, _)) = duration_in(&k, "latency_wait")? {
                slurm.latency_wait = d;
            }
            if let Some((d, span)) = duration_in(&k, "command_timeout")? {
                if d.is_zero() {
                    return Err(Error::at_help(
                        "`command_timeout` in [slurm] must be longer than 0s",
                        &span,
                        "write e.g. command_timeout = \"60s\"",
                    ));
                }
                slurm.command_timeout = d;
            }
            slurm.defaults = Arc::new(slurm_settings(&k, &crate::exec::SlurmSettings::default())?);
        }

        // [notify]
        let mut notify = None;
        if let Some((t, _)) = top.table("notify")? {
            let k = Keys::check(&main.source, t, "[notify]", &["webhook", "timeout", "retries"])?;
            if let Some((url, span)) = k.str("webhook")? {
                if url.starts_with("https://") {
                    return Err(Error::at_help(
                        "https webhooks are not supported yet: this flux speaks plain HTTP only",
                        &span,
                        "point the webhook at an http:// relay, or remove [notify]",
                    ));
                }
                if !url.starts_with("http://") {
                    return Err(Error::at_help(
                        format!("`{url}` is not an http:// URL"),
                        &span,
                        "write e.g. webhook = \"http://127.0.0.1:9000/flux\"",
                    ));
                }
                let timeout = match duration_in(&k, "timeout")? {
                    None => Duration::from_secs(10),
                    Some((d, span)) if d.is_zero() => {
                        return Err(Error::at_help(
                            "`timeout` in [notify] must be longer than 0s",
                            &span,
                            "write e.g. timeout = \"10s\"",
                        ));
                    }
                    Some((d, _)) => d,
                };
                let retries =
                    int_in(&k, "retries", 0, limits::MAX_NOTIFY_RETRIES, "retries = 3")?.map_or(3, |(n, _)| n as u32);
                notify = Some(Notify { webhook: url, timeout, retries });
            }
        }

        // vars, profiles, --var
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut var_spans: HashMap<String, Span> = HashMap::new();
        for doc in std::iter::once(main).chain(extra_docs.iter().copied()) {
            let k = Keys { doc: &doc.source, table: &doc.table, what: "the Fluxfile".into() };
            if let Some((t, _)) = k.table("vars")? {
                for (name, v) in t.iter() {
                    let span = Span::new(&doc.source, v.span());
                    let value = scalar_string(v.get_ref()).ok_or_else(|| {
                        Error::at_help(
                            format!("var `{}` must be a string, number or boolean", name.get_ref()),
                            &span,
                            "write it as a string",
                        )
                    })?;
                    check_var_value(name.get_ref(), &value).map_err(|e| Error::at_help(e.0, &span, e.1))?;
                    if var_spans.insert(name.get_ref().to_string(), span.clone()).is_some() {
                        return Err(Error::at(format!("var `{}` is defined twice", name.get_ref()), &span));
                    }
                    vars.push((name.get_ref().to_string(), value));
                }
            }
        }
        // Every profile is checked, selected or not, so a typo never waits for the day
        // the profile is used.
        let mut profile_vars: Vec<String> = Vec::new();
        if let Some((profiles, _)) = top.table("profile")? {
            for (name, v) in profiles.iter() {
                let span = Span::new(&main.source, v.span());
                let DeValue::Table(pt) = v.get_ref() else {
                    return Err(Error::at_help(
                        format!("`profile.{}` must be a table", name.get_ref()),
                        &span,
                        format!("write it as [profile.{}.vars]", name.get_ref()),
                    ));
                };
                let pk = Keys::check(&main.source, pt, &format!("[profile.{}]", name.get_ref()), &["vars"])?;
                if let Some((t, _)) = pk.table("vars")? {
                    for (var, val) in t.iter() {
                        profile_vars.push(var.get_ref().to_string());
                        let vspan = Span::new(&main.source, val.span());
                        let Some(value) = scalar_string(val.get_ref()) else {
                            return Err(Error::at_help(
                                format!("var `{}` must be a string", var.get_ref()),
                                &vspan,
                                "write it as a string",
                            ));
                        };
                        check_var_value(var.get_ref(), &value).map_err(|e| Error::at_help(e.0, &vspan, e.1))?;
                    }
                }
            }
        }
        if let Some(profile) = &self.opts.profile {
            let profiles = top.table("profile")?;
            let names: Vec<&str> = profiles
                .as_ref()
                .map(|(t, _)| t.iter().map(|(k, _)| k.get_ref().as_ref()).collect())
                .unwrap_or_default();
            let Some((ptable, _)) = profiles.and_then(|(t, _)| {
                t.iter().find(|(k, _)| k.get_ref().as_ref() == profile).and_then(|(_, v)| match v.get_ref() {
                    DeValue::Table(t) => Some((t, v.span())),
                    _ => None,
                })
            }) else {
                let hint = match did_you_mean(profile, names.iter().copied()) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None if names.is_empty() => "; the Fluxfile defines no [profile.NAME.vars]".into(),
                    None => format!("; profiles: {}", names.join(", ")),
                };
                return Err(Error::Usage(format!("no profile `{profile}` in the Fluxfile{hint}")));
            };
            let pk = Keys::check(&main.source, ptable, &format!("[profile.{profile}]"), &["vars"])?;
            if let Some((t, _)) = pk.table("vars")? {
                for (name, v) in t.iter() {
                    let span = Span::new(&main.source, v.span());
                    let value = scalar_string(v.get_ref())
                        .ok_or_else(|| Error::at(format!("var `{}` must be a string", name.get_ref()), &span))?;
                    set_var(&mut vars, name.get_ref(), value);
                }
            }
        }
        for (k, v) in &self.opts.vars {
            // A typo'd `--var rooot=scratch` must not build with the default `root`.
            if !var_spans.contains_key(k) && !profile_vars.contains(k) {
                let declared = var_spans.keys().map(String::as_str).chain(profile_vars.iter().map(String::as_str));
                let hint = match did_you_mean(k, declared) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None => String::new(),
                };
                return Err(Error::Usage(format!(
                    "--var {k}: the Fluxfile declares no var `{k}` (in [vars] or a profile){hint}; \
                     declare it in [vars] to set it from the command line"
                )));
            }
            check_var_value(k, v).map_err(|e| Error::Usage(format!("--var {k}={v}: {}; {}", e.0, e.1)))?;
            set_var(&mut vars, k, v.clone());
        }

        // pools
        let mut pools: Vec<(String, usize)> = Vec::new();
        for doc in std::iter::once(main).chain(extra_docs.iter().copied()) {
            let k = Keys { doc: &doc.source, table: &doc.table, what: "the Fluxfile".into() };
            if let Some((t, _)) = k.table("pools")? {
                for (name, v) in t.iter() {
                    let span = Span::new(&doc.source, v.span());
                    match as_int(v.get_ref()) {
                        Some(n) if (1..=limits::MAX_POOL).contains(&n) => {
                            pools.push((name.get_ref().to_string(), n as usize))
                        }
                        _ => {
                            return Err(Error::at_help(
                                format!(
                                    "pool `{}` must have a size between 1 and {}",
                                    name.get_ref(),
                                    limits::MAX_POOL
                                ),
                                &span,
                                "write e.g. `db = 2`",
                            ));
                        }
                    }
                }
            }
        }

        // steps: collect raw tables first so `requires` can name any step.
        let mut raw: Vec<RawStep> = Vec::new();
        let mut raw_index: HashMap<String, usize> = HashMap::new();
        for doc in std::iter::once(main).chain(extra_docs.iter().copied()) {
            let allowed = if std::ptr::eq(doc, main) { TOP_KEYS } else { INCLUDED_KEYS };
            let k = Keys::check(&doc.source, &doc.table, &doc.source.name, allowed)?;
            if let Some((t, _)) = k.table("step")? {
                for (name, v) in t.iter() {
                    let name_span = Span::new(&doc.source, name.span());
                    let DeValue::Table(st) = v.get_ref() else {
                        return Err(Error::at_help(
                            format!("`step.{}` must be a table", name.get_ref()),
                            &name_span,
                            format!("write it as a [step.{}] section", name.get_ref()),
                        ));
                    };
                    if let Some(prev) = raw_index.get(name.get_ref().as_ref()).map(|&i| &raw[i]) {
                        let (l, c) = prev.name_span.line_col();
                        return Err(Error::at_help(
                            format!("step `{}` is defined twice", name.get_ref()),
                            &name_span,
                            format!(
                                "it is first defined at {}:{l}:{c}; rename one of them",
                                prev.name_span.source.name
                            ),
                        ));
                    }
                    check_name(name.get_ref(), &name_span, "step")?;
                    raw_index.insert(name.get_ref().to_string(), raw.len());
                    raw.push(RawStep {
                        name: name.get_ref().to_string(),
                        name_span,
                        keys_doc: doc.source.clone(),
                        table: st,
                    });
                }
            }
        }
        if raw.is_empty() {
            let span = Span::new(&main.source, 0..0);
            return Err(Error::at_help(
                "the Fluxfile defines no steps",
                &span,
                "add a [step.NAME] section with `outputs` and `run`",
            ));
        }

        let mut engine = Engine::new();
        let step_names: Vec<String> = raw.iter().map(|r| r.name.clone()).collect();
        let mut steps: Vec<Step> = Vec::with_capacity(raw.len());
        // First pass: params (requires needs every step's params).
        let mut all_params: Vec<Vec<(String, ParamKind)>> = Vec::new();
        for r in &raw {
            let k = Keys::check(&r.keys_doc, r.table, &format!("[step.{}]", r.name), STEP_KEYS)?;
            all_params.push(parse_params(&k, &vars)?);
        }
        for (i, r) in raw.iter().enumerate() {
            let step = build_step(
                r,
                all_params[i].clone(),
                &StepCtx {
                    vars: &vars,
                    pools: &pools,
                    step_names: &step_names,
                    all_params: &all_params,
                    flux_start: start.as_ref(),
                    slurm: &slurm.defaults,
                },
                &mut engine,
            )?;
            steps.push(step);
        }

        let mut hasher = blake3::Hasher::new();
        for d in &self.docs {
            hasher.update(d.source.text.as_bytes());
            hasher.update(&[0]);
        }
        for (k, v) in &vars {
            hasher.update(k.as_bytes());
            hasher.update(&[0]);
            hasher.update(v.as_bytes());
            hasher.update(&[0]);
        }

        Ok(Fluxfile {
            path: self.path,
            dir: self.dir,
            state_dir,
            jobs,
            max_tasks,
            vars,
            pools,
            steps,
            engine,
            digest: hasher.finalize(),
            notify,
            stores,
            timezone,
            include_globs,
            executor,
            slurm,
            cache_max,
        })
    }

    /// Files matching an `include` pattern, relative to the Fluxfile's folder, sorted.
    fn glob(&self, pattern: &str, span: &Span) -> Result<Vec<PathBuf>> {
        let full = self.dir.join(pattern);
        let pat = full.to_string_lossy().to_string();
        let paths = glob::glob(&pat).map_err(|e| Error::at(format!("bad include pattern: {e}"), span))?;
        let mut out: Vec<PathBuf> = paths.filter_map(|p| p.ok()).filter(|p| p.is_file()).collect();
        out.sort();
        if out.is_empty() && !pattern.contains(['*', '?', '[']) {
            return Err(Error::at_help(
                format!("included file `{pattern}` does not exist"),
                span,
                "check the path; it is relative to the Fluxfile's folder",
            ));
        }
        Ok(out)
    }
}

/// A var may hold any text, paths and flags included, but not `.` or `..` alone: an output
/// such as `{{ root }}/` would then name the project folder or its parent (SPEC §5).
/// The error and a hint.
fn check_var_value(name: &str, value: &str) -> std::result::Result<(), (String, &'static str)> {
    if value == "." || value == ".." {
        return Err((
            format!("var `{name}` cannot be `{value}`"),
            "a var that is `.` or `..` makes paths such as `{{ var }}/` name the project folder or its parent; \
             write the path without the var, or give it a folder name",
        ));
    }
    Ok(())
}

fn set_var(vars: &mut Vec<(String, String)>, name: &str, value: String) {
    match vars.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => vars.push((name.to_string(), value)),
    }
}

fn scalar_string(v: &DeValue<'_>) -> Option<String> {
    if let Some(s) = as_plain_str(v) {
        return Some(s.to_string());
    }
    if let Some(i) = as_int(v) {
        return Some(i.to_string());
    }
    if let Some(f) = as_float(v) {
        return Some(f.to_string());
    }
    match v {
        DeValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn not_yet(key: &str, what: &str, span: &Span) -> Error {
    Error::at_help(
        format!("`{key}` is not supported yet: this version of flux does not act on {what}"),
        span,
        format!("remove `{key}`; flux refuses settings it would otherwise ignore"),
    )
}

/// A target's scheme must be one flux has a store for, and its URI must carry no
/// credentials: checked when the Fluxfile is loaded (so `flux check` says so too).
fn check_remote(start: &str, span: &Span) -> Result<()> {
    let s = start.trim_start();
    let Some(scheme) = crate::store::scheme_of(s) else { return Ok(()) };
    if scheme != "file" && !crate::store::SCHEMES.contains(&scheme) {
        return Err(Error::at_help(
            format!("`{scheme}://` is not a store flux knows"),
            span,
            "use a local path, file://, s3://, gs://, az:// or hdfs://",
        ));
    }
    let authority = s.split_once("://").map(|(_, r)| r.split('/').next().unwrap_or("")).unwrap_or("");
    if authority.contains('@') {
        return Err(Error::at_help(
            "credentials do not belong in a target's URI",
            span,
            "remove `user:secret@`; give credentials through the store's environment variables (AWS_ACCESS_KEY_ID, …) or [store.\"…\"]",
        ));
    }
    Ok(())
}

/// `[store."s3://bucket"]` tables: the key names one store, its values are the store's
/// settings (object_store's names, e.g. `endpoint`, `region`, `allow_http`; Hadoop's for HDFS).
fn parse_stores(doc: &Arc<Source>, t: &'static Table<'static>) -> Result<Vec<crate::store::StoreConfig>> {
    let mut out = Vec::new();
    for (k, v) in t.iter() {
        let root: &str = k.get_ref();
        let key_span = Span::new(doc, k.span());
        let uri = crate::store::parse(root).filter(|u| !u.authority.is_empty() && u.key.is_empty());
        let Some(uri) = uri else {
            return Err(Error::at_help(
                format!("`{root}` does not name a store"),
                &key_span,
                "write the store's root, e.g. [store.\"s3://my-bucket\"] or [store.\"hdfs://namenode:8020\"]",
            ));
        };
        check_remote(root, &key_span)?;
        let DeValue::Table(opts) = v.get_ref() else {
            return Err(Error::at_help(
                format!("[store.\"{root}\"] must be a table"),
                &Span::new(doc, v.span()),
                "write its settings as keys, e.g. endpoint = \"http://127.0.0.1:9000\"",
            ));
        };
        let mut options = Vec::new();
        for (ok, ov) in opts.iter() {
            let name: &str = ok.get_ref();
            let span = Span::new(doc, ok.span());
            if let Err(want) = crate::store::check_option(uri.scheme, name) {
                return Err(Error::at_help(
                    format!("unknown setting `{name}` for {}:// stores", uri.scheme),
                    &span,
                    format!("use {want}"),
                ));
            }
            let value = scalar_string(ov.get_ref()).ok_or_else(|| {
                Error::at_help(
                    format!("setting `{name}` must be a string, number or boolean"),
                    &Span::new(doc, ov.span()),
                    "quote it",
                )
            })?;
            if let Err(why) = crate::store::check_value(name, &value) {
                return Err(Error::at_help(
                    format!("bad value for setting `{name}`: {why}"),
                    &Span::new(doc, ov.span()),
                    "write a size such as \"16MiB\"",
                ));
            }
            options.push((name.to_string(), value));
        }
        out.push(crate::store::StoreConfig { root: uri.root(), options });
    }
    Ok(out)
}

fn check_name(name: &str, span: &Span, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::at_help(
            format!("`{name}` is not a valid {what} name"),
            span,
            "use letters, digits, `_` and `-`, starting with a letter",
        ))
    }
}

fn parse_params(k: &Keys<'_>, vars: &[(String, String)]) -> Result<Vec<(String, ParamKind)>> {
    let Some((t, _)) = k.table("params")? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(String, ParamKind)> = Vec::new();
    let mut time: Option<String> = None;
    for (name, v) in t.iter() {
        let nspan = Span::new(k.doc, name.span());
        let vspan = Span::new(k.doc, v.span());
        let name = name.get_ref().to_string();
        check_name(&name, &nspan, "param")?;
        if name.contains('-') {
            return Err(Error::at_help(
                format!("param `{name}` cannot contain `-`"),
                &nspan,
                "templates read params by name; use `_`",
            ));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(Error::at_help(
                format!("`{name}` cannot be a param name: templates use it for something else"),
                &nspan,
                "rename the param",
            ));
        }
        if vars.iter().any(|(v, _)| *v == name) {
            return Err(Error::at_help(
                format!("param `{name}` has the same name as a var"),
                &nspan,
                "rename the param or the var: a template could not tell them apart",
            ));
        }
        let kind = match v.get_ref() {
            DeValue::Array(items) => {
                let mut vals = Vec::new();
                for item in items.iter() {
                    let ispan = Span::new(k.doc, item.span());
                    let Some(s) = scalar_string(item.get_ref()) else {
                        return Err(Error::at("allowed values must be strings", &ispan));
                    };
                    if s.is_empty()
                        || s.contains([',', '=', '[', ']', '/'])
                        || s.chars().any(char::is_whitespace)
                        || s == "."
                        || s == ".."
                        || s.starts_with('-')
                    {
                        return Err(Error::at_help(
                            format!("`{s}` cannot be a param value"),
                            &ispan,
                            "values may not be empty, `.` or `..`, start with `-`, or contain `,` `=` `[` `]` `/` or spaces (they appear in task ids, paths and commands)",
                        ));
                    }
                    if vals.contains(&s) {
                        return Err(Error::at(format!("`{s}` is listed twice"), &ispan));
                    }
                    vals.push(s);
                }
                if vals.is_empty() {
                    return Err(Error::at_help(
                        "a list param needs at least one value",
                        &vspan,
                        "e.g. region = [\"eu\", \"us\"]",
                    ));
                }
                ParamKind::Choice(crate::param::Choices::new(vals))
            }
            DeValue::Table(t) => param_kind_table(k.doc, t, &name, &vspan)?,
            other => match as_plain_str(other) {
                Some(s) => param_kind(s, &vspan)?,
                None => {
                    return Err(Error::at_help(
                        format!(
                            "param `{name}` must be \"date\", \"hour\", \"week\", \"month\", \"int\", \"string\" or a list of values"
                        ),
                        &vspan,
                        "e.g. params = { date = \"date\", region = [\"eu\", \"us\"] }",
                    ));
                }
            },
        };
        if out.len() == crate::graph::MAX_PARAMS {
            return Err(Error::at_help(
                format!("a step has at most {} params", crate::graph::MAX_PARAMS),
                &nspan,
                "split the step, or combine values into one list param",
            ));
        }
        if kind.is_time() {
            if let Some(prev) = &time {
                return Err(Error::at_help(
                    format!("a step has at most one time param; `{prev}` is one already"),
                    &nspan,
                    "make this one a list param, or split the step",
                ));
            }
            time = Some(name.clone());
        }
        out.push((name, kind));
    }
    Ok(out)
}

const PARAM_KINDS: [&str; 6] = ["date", "hour", "week", "month", "int", "string"];

/// A param kind written by name: `"date"`, `"int"`, `"string"`, ….
fn param_kind(s: &str, span: &Span) -> Result<ParamKind> {
    Ok(match s {
        "date" => ParamKind::Date,
        "hour" => ParamKind::Hour,
        "week" => ParamKind::Week,
        "month" => ParamKind::Month,
        "int" => ParamKind::Int { min: None, max: None },
        "string" => ParamKind::Str,
        _ => {
            let hint = did_you_mean(s, PARAM_KINDS).map(|d| format!("did you mean `{d}`?")).unwrap_or_else(|| {
                "use \"date\", \"hour\", \"week\", \"month\", \"int\", \"string\" or a list of allowed values".into()
            });
            return Err(Error::at_help(format!("unknown param kind `{s}`"), span, hint));
        }
    })
}

/// `{ kind = "int", min = 0, max = 99 }` (the bounds are for `int` only).
fn param_kind_table<'a>(doc: &'a Arc<Source>, t: &'a Table<'static>, name: &str, span: &Span) -> Result<ParamKind> {
    let keys = Keys::check(doc, t, &format!("param `{name}`"), &["kind", "min", "max"])?;
    let Some((kind_name, kspan)) = keys.str("kind")? else {
        return Err(Error::at_help(
            format!("param `{name}` needs a `kind`"),
            span,
            "e.g. { kind = \"int\", min = 0, max = 99 }",
        ));
    };
    let kind = param_kind(&kind_name, &kspan)?;
    let (min, max) = (keys.int("min")?, keys.int("max")?);
    match kind {
        ParamKind::Int { .. } => {
            if let (Some((a, _)), Some((b, bspan))) = (&min, &max)
                && a > b
            {
                return Err(Error::at_help(
                    format!("`max` ({b}) is below `min` ({a})"),
                    bspan,
                    "swap them, or widen the range",
                ));
            }
            Ok(ParamKind::Int { min: min.map(|m| m.0), max: max.map(|m| m.0) })
        }
        other => match min.or(max) {
            Some((_, bspan)) => Err(Error::at_help(
                format!("`min` and `max` are for int params, not {} params", other.name()),
                &bspan,
                "remove them",
            )),
            None => Ok(other),
        },
    }
}

struct StepCtx<'a> {
    vars: &'a [(String, String)],
    pools: &'a [(String, usize)],
    step_names: &'a [String],
    all_params: &'a [Vec<(String, ParamKind)>],
    flux_start: Option<&'a (String, Span)>,
    /// `[slurm]`'s step settings.
    slurm: &'a Arc<crate::exec::SlurmSettings>,
}

fn compile(engine: &mut Engine, src: &str, span: &Span, mode: Mode, allowed: &dyn Fn(&str) -> bool) -> Result<Tpl> {
    let id = engine.compile(src, mode).map_err(|e| {
        let sp = match e.offset {
            Some(off) => span.within_string(src, off, e.len),
            None => span.clone(),
        };
        let help = e.help.unwrap_or_else(|| "see docs/fluxfile.md#templates".into());
        Error::at_help(e.message, &sp, help)
    })?;
    for name in engine.names(id) {
        if !allowed(&name) {
            let sp = engine.read_at(id, &name).map_or_else(|| span.clone(), |(o, l)| span.within_string(src, o, l));
            return Err(Error::at_help(
                format!("template reads `{name}`, which is not defined here"),
                &sp,
                "templates can read the step's params, vars, `step`, `task`, and in commands `inputs`, `outputs`, `attempt`, `run_id`, `interval_start`, `interval_end`",
            ));
        }
    }
    Ok(Tpl { id, span: span.clone() })
}

/// `outputs[N]` in a command of a step with fewer outputs: every task fails to render it.
fn check_output_indexes(engine: &Engine, tpl: &Tpl, src: &str, n: usize) -> Result<()> {
    for (name, i, off, len) in engine.indexes(tpl.id) {
        let n = n as i64;
        if name == "outputs" && (*i >= n || *i < -n) {
            let has = match n {
                0 => "no outputs".to_owned(),
                1 => "one output, `outputs[0]`".to_owned(),
                _ => format!("{n} outputs, `outputs[0]` to `outputs[{}]`", n - 1),
            };
            return Err(Error::at_help(
                format!("`outputs[{i}]` does not exist: the step has {has}"),
                &tpl.span.within_string(src, *off, *len),
                "add the output to `outputs`, or fix the index",
            ));
        }
    }
    Ok(())
}

const CMD_NAMES: &[&str] = &["inputs", "outputs", "attempt", "run_id", "interval_start", "interval_end"];

fn build_step(r: &RawStep, params: Vec<(String, ParamKind)>, cx: &StepCtx<'_>, engine: &mut Engine) -> Result<Step> {
    let what = format!("[step.{}]", r.name);
    let k = Keys::check(&r.keys_doc, r.table, &what, STEP_KEYS)?;
    for (key, feature) in NOT_YET {
        if let Some(span) = k.key_span(key) {
            return Err(not_yet(key, feature, &span));
        }
    }
    let param_names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
    let is_known = |n: &str| {
        param_names.iter().any(|p| p == n)
            || cx.vars.iter().any(|(v, _)| v == n)
            || ["params", "vars", "step", "task"].contains(&n)
    };
    let path_ok = |n: &str| is_known(n);
    let cmd_ok = |n: &str| is_known(n) || CMD_NAMES.contains(&n);

    let time_param = params.iter().position(|(_, k)| k.is_time());

    // inputs
    let mut inputs = Vec::new();
    if let Some((list, _)) = k.strs("inputs", false)? {
        for (src, span) in list {
            let tpl = compile(engine, &src, &span, Mode::Path, &path_ok)?;
            match engine.segments(tpl.id).and_then(|s| s.first()) {
                Some(Segment::Lit(first)) => check_remote(first, &span)?,
                Some(Segment::Expr { name, .. }) => {
                    if let Some((_, v)) = cx.vars.iter().find(|(k, _)| k == name) {
                        check_remote(v, &span)?;
                    }
                }
                None => {}
            }
            inputs.push(tpl);
        }
    }
    // outputs
    let mut outputs = Vec::new();
    if let Some((list, _)) = k.strs("outputs", false)? {
        for (src, span) in list {
            let tpl = compile(engine, &src, &span, Mode::Path, &path_ok)?;
            let segs = invertible(engine, &tpl, &r.name, &params, cx.vars)?;
            if let Some(OutSeg::Lit(first)) = segs.first() {
                check_remote(first, &span)?;
            }
            let dir = src.trim_end().ends_with('/');
            outputs.push(Output { tpl, segs, dir });
        }
    }
    let cmds = |key: &str, engine: &mut Engine| -> Result<Vec<Tpl>> {
        let mut out = Vec::new();
        if let Some((list, span)) = k.strs(key, key == "run")? {
            if list.is_empty() && key == "run" {
                return Err(Error::at_help("`run` is empty", &span, "give at least one command"));
            }
            for (src, span) in list {
                let tpl = compile(engine, &src, &span, Mode::Command, &cmd_ok)?;
                check_output_indexes(engine, &tpl, &src, outputs.len())?;
                out.push(tpl);
            }
        }
        Ok(out)
    };
    let run = cmds("run", engine)?;
    let pre = cmds("pre", engine)?;
    let post = cmds("post", engine)?;

    let action = match k.str("action")? {
        None => None,
        Some((s, span)) if s == "copy" => {
            if !run.is_empty() {
                return Err(Error::at_help("a step has either `run` or `action`, not both", &span, "remove one"));
            }
            if inputs.len() != outputs.len() {
                return Err(Error::at_help(
                    "`action = \"copy\"` copies inputs[i] to outputs[i]: the step needs as many inputs as outputs",
                    &span,
                    "list one input per output",
                ));
            }
            Some(Action::Copy)
        }
        Some((s, span)) => {
            return Err(Error::at_help(format!("unknown action `{s}`"), &span, "the only action is \"copy\""));
        }
    };
    if run.is_empty() && action.is_none() {
        return Err(Error::at_help(
            format!("step `{}` has nothing to do", r.name),
            &r.name_span,
            "give it `run = \"…\"` (a shell command) or `action = \"copy\"`",
        ));
    }

    // env
    let mut env = Vec::new();
    if let Some((t, _)) = k.table("env")? {
        for (name, v) in t.iter() {
            let span = Span::new(&r.keys_doc, v.span());
            let Some(s) = as_plain_str(v.get_ref()) else {
                return Err(Error::at(format!("env `{}` must be a string", name.get_ref()), &span));
            };
            let tpl = compile(engine, s, &span, Mode::Path, &cmd_ok)?;
            check_output_indexes(engine, &tpl, s, outputs.len())?;
            env.push((name.get_ref().to_string(), tpl));
        }
    }

    // requires
    let mut requires = Vec::new();
    if let Some((v, span)) = k.get("requires") {
        let DeValue::Array(items) = v else {
            return Err(k.wrong("requires", &span, "a list", v));
        };
        for item in items.iter() {
            let ispan = Span::new(&r.keys_doc, item.span());
            let (target, named): (String, Vec<(String, String, Span)>) = match item.get_ref() {
                DeValue::Table(t) => {
                    let mut target = None;
                    let mut named = Vec::new();
                    for (key, val) in t.iter() {
                        let vspan = Span::new(&r.keys_doc, val.span());
                        let Some(s) = as_plain_str(val.get_ref()) else {
                            return Err(Error::at("must be a string", &vspan));
                        };
                        if key.get_ref().as_ref() == "step" {
                            target = Some(s.to_string());
                        } else {
                            named.push((key.get_ref().to_string(), s.to_string(), vspan));
                        }
                    }
                    let Some(target) = target else {
                        return Err(Error::at_help(
                            "a `requires` table needs `step`",
                            &ispan,
                            "e.g. { step = \"load\", date = \"{{ date }}\" }",
                        ));
                    };
                    (target, named)
                }
                other => match as_plain_str(other) {
                    Some(s) => (s.to_string(), Vec::new()),
                    None => {
                        return Err(Error::at("`requires` entries are step names or tables", &ispan));
                    }
                },
            };
            let Some(si) = cx.step_names.iter().position(|n| *n == target) else {
                let hint = did_you_mean(&target, cx.step_names.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| "name a step of this Fluxfile".into());
                return Err(Error::at_help(format!("`requires` names unknown step `{target}`"), &ispan, hint));
            };
            let tparams = &cx.all_params[si];
            let mut req_params = Vec::new();
            for (pname, src, vspan) in named {
                let Some(pi) = tparams.iter().position(|(n, _)| *n == pname) else {
                    return Err(Error::at(format!("step `{target}` has no param `{pname}`"), &vspan));
                };
                req_params.push((pi, compile(engine, &src, &vspan, Mode::Path, &path_ok)?));
            }
            for (pi, (pname, _)) in tparams.iter().enumerate() {
                if !req_params.iter().any(|(i, _)| *i == pi) && !param_names.contains(pname) {
                    return Err(Error::at_help(
                        format!(
                            "step `{target}` needs a value for its param `{pname}`, and `{}` has no param of that name",
                            r.name
                        ),
                        &ispan,
                        format!("write {{ step = \"{target}\", {pname} = \"…\" }}"),
                    ));
                }
            }
            requires.push(Require { step: si, params: req_params, span: ispan });
        }
    }

    // time domain
    let bound = |key: &str, is_end: bool| -> Result<Option<ParamValue>> {
        let given = k.str(key)?;
        let (s, span) = match (given, key == "start", cx.flux_start) {
            (Some(g), _, _) => g,
            (None, true, Some(fs)) if time_param.is_some() => fs.clone(),
            _ => return Ok(None),
        };
        let Some(ti) = time_param else {
            return Err(Error::at_help(
                format!("`{key}` needs a time param"),
                &span,
                "add e.g. params = { date = \"date\" }",
            ));
        };
        params[ti]
            .1
            .parse_bound(&s, is_end)
            .map(Some)
            .map_err(|e| Error::at_help(e, &span, "write a date like 2024-01-01"))
    };
    let start = bound("start", false)?;
    let end = bound("end", true)?;
    if let (Some(a), Some(b)) = (start, end)
        && a > b
        && let Some(span) = k.key_span("end")
    {
        return Err(Error::at("`end` is before `start`", &span));
    }

    let schedule = match k.str("schedule")? {
        None => None,
        Some((s, span)) => Some(parse_schedule(&s).map_err(|e| {
            Error::at_help(e, &span, "use @hourly, @daily, @weekly, @monthly or a 5-field cron expression")
        })?),
    };
    if schedule.is_some() && time_param.is_none() {
        let span = k.key_span("schedule").unwrap_or_else(|| r.name_span.clone());
        return Err(Error::at_help(
            "a scheduled step needs a time param",
            &span,
            "add e.g. params = { date = \"date\" }",
        ));
    }

    let retries = int_in(&k, "retries", 0, limits::MAX_RETRIES, "retries = 3")?.map_or(0, |(n, _)| n as u32);
    let duration = |key: &str| -> Result<Option<Duration>> { Ok(duration_in(&k, key)?.map(|(d, _)| d)) };
    let retry_delay = duration("retry_delay")?.unwrap_or(Duration::from_secs(5));
    let timeout = duration("timeout")?;
    if timeout.is_some_and(|d| d.is_zero()) {
        let span = k.key_span("timeout").unwrap_or_else(|| r.name_span.clone());
        return Err(Error::at_help("`timeout` must be longer than 0s", &span, "write e.g. timeout = \"10m\""));
    }
    let retry_backoff = match k.float("retry_backoff")? {
        None => 1.0,
        Some((f, _)) if (1.0..=limits::MAX_BACKOFF).contains(&f) => f,
        Some((_, span)) => {
            return Err(Error::at_help(
                format!("`retry_backoff` must be a number between 1 and {}", limits::MAX_BACKOFF),
                &span,
                "write e.g. `retry_backoff = 2` (each retry waits twice as long as the one before, up to a day)",
            ));
        }
    };
    let pool = match k.str("pool")? {
        None => None,
        Some((s, span)) => match cx.pools.iter().position(|(n, _)| *n == s) {
            Some(i) => Some(i),
            None => {
                let hint = did_you_mean(&s, cx.pools.iter().map(|(n, _)| n.as_str()))
                    .map(|d| format!("did you mean `{d}`?"))
                    .unwrap_or_else(|| format!("declare it: [pools] {s} = 2"));
                return Err(Error::at_help(format!("unknown pool `{s}`"), &span, hint));
            }
        },
    };
    let priority = k.int("priority")?.map_or(0, |(n, _)| n);
    let stage = k.bool("stage")?.is_none_or(|(b, _)| b);
    let executor = executor_in(&k)?;
    let array = k.bool("array")?;
    if let (Some((true, span)), Some(crate::exec::Kind::Local)) = (&array, executor) {
        return Err(Error::at_help(
            "`array = true` needs the step to run on Slurm",
            span,
            "set executor = \"slurm\", or remove `array`",
        ));
    }
    let array = array.map(|(b, span)| (b, span.clone()));
    let slurm = match k.table("slurm")? {
        None => cx.slurm.clone(),
        Some((t, _)) => {
            let sk = Keys::check(&r.keys_doc, t, &format!("{what} slurm"), &["partition", "account", "qos", "extra"])?;
            Arc::new(slurm_settings(&sk, cx.slurm)?)
        }
    };
    let description = k.str("description")?.map(|(s, _)| s);
    let cpus = int_in(&k, "cpus", 1, limits::MAX_CPUS, "cpus = 2")?.map_or(0, |(n, _)| n as u32);
    let mem = match k.str("mem")? {
        None => None,
        Some((s, span)) => {
            let m = param::parse_size(&s).map_err(|e| Error::at_help(e, &span, "write e.g. \"512M\" or \"4G\""))?;
            if m > limits::MAX_MEM {
                return Err(Error::at_help("`mem` must be at most 1P", &span, "write e.g. \"512M\" or \"4G\""));
            }
            Some(m)
        }
    };
    let sensor = k.bool("sensor")?.is_some_and(|(b, _)| b);
    if sensor && run.is_empty() {
        return Err(Error::at_help(
            "a sensor needs `run`: the probe command",
            &r.name_span,
            "e.g. run = \"test -e {{ inputs[0] }}\"",
        ));
    }
    let wait = duration("wait")?.unwrap_or(if sensor { Duration::from_secs(3600) } else { Duration::ZERO });
    let poll = duration("poll")?.unwrap_or(Duration::from_secs(30));
    if poll.is_zero() {
        let span = k.key_span("poll").unwrap_or_else(|| r.name_span.clone());
        return Err(Error::at("`poll` must be longer than 0s", &span));
    }
    let hook = |key: &str, engine: &mut Engine| -> Result<Option<Tpl>> {
        match k.str(key)? {
            None => Ok(None),
            Some((src, span)) => {
                let tpl = compile(engine, &src, &span, Mode::Command, &cmd_ok)?;
                check_output_indexes(engine, &tpl, &src, outputs.len())?;
                Ok(Some(tpl))
            }
        }
    };
    let on_success = hook("on_success", engine)?;
    let on_failure = hook("on_failure", engine)?;
    let on_retry = hook("on_retry", engine)?;
    let on_sla_miss = hook("on_sla_miss", engine)?;
    let catchup = k.bool("catchup")?.is_none_or(|(b, _)| b);
    let max_active_runs = match k.int("max_active_runs")? {
        None => None,
        Some((n, span)) => Some(u32::try_from(n).ok().filter(|&n| n >= 1).ok_or_else(|| {
            Error::at_help("`max_active_runs` must be at least 1", &span, "write e.g. `max_active_runs = 1`")
        })?),
    };
    let sla = duration("sla")?;
    for key in ["sla", "on_sla_miss", "catchup", "max_active_runs"] {
        if schedule.is_none()
            && let Some(span) = k.key_span(key)
        {
            return Err(Error::at_help(
                format!("`{key}` needs a `schedule`: it is about the intervals the scheduler builds"),
                &span,
                "add e.g. schedule = \"@daily\", or remove it",
            ));
        }
    }
    if on_sla_miss.is_some()
        && sla.is_none()
        && let Some(span) = k.key_span("on_sla_miss")
    {
        return Err(Error::at_help("`on_sla_miss` needs an `sla`", &span, "add e.g. sla = \"2h\""));
    }

    Ok(Step {
        name: r.name.clone(),
        span: r.name_span.clone(),
        description,
        params,
        time_param,
        inputs,
        outputs,
        requires,
        run,
        pre,
        post,
        action,
        env,
        start,
        end,
        schedule,
        retries,
        retry_delay,
        retry_backoff,
        timeout,
        pool,
        priority,
        stage,
        cpus,
        mem,
        sensor,
        wait,
        poll,
        on_success,
        on_failure,
        on_retry,
        catchup,
        max_active_runs,
        sla,
        on_sla_miss,
        executor,
        slurm,
        array,
    })
}

/// `executor = "local" | "slurm"`.
fn executor_in(k: &Keys<'_>) -> Result<Option<crate::exec::Kind>> {
    let Some((s, span)) = k.str("executor")? else { return Ok(None) };
    match s.as_str() {
        "local" => Ok(Some(crate::exec::Kind::Local)),
        "slurm" => Ok(Some(crate::exec::Kind::Slurm)),
        _ => Err(Error::at_help(format!("unknown executor `{s}`"), &span, "use \"local\" or \"slurm\"")),
    }
}

/// `partition`, `account`, `qos` and `extra` (more `sbatch` options, added after
/// `base`'s), each over `base`.
fn slurm_settings(k: &Keys<'_>, base: &crate::exec::SlurmSettings) -> Result<crate::exec::SlurmSettings> {
    let mut s = base.clone();
    for (key, field) in [("partition", &mut s.partition), ("account", &mut s.account), ("qos", &mut s.qos)] {
        if let Some((v, span)) = k.str(key)? {
            if v.is_empty() || v.chars().any(char::is_whitespace) {
                return Err(Error::at_help(
                    format!("`{key}` must be one word"),
                    &span,
                    format!("write e.g. {key} = \"main\""),
                ));
            }
            *field = Some(v);
        }
    }
    if let Some((extra, _)) = k.strs("extra", false)? {
        for (arg, span) in extra {
            if !arg.starts_with('-') {
                return Err(Error::at_help(
                    format!("`{arg}` is not an sbatch option"),
                    &span,
                    "write options as sbatch takes them, e.g. extra = [\"--constraint=fast\"]",
                ));
            }
            s.extra.push(arg);
        }
    }
    Ok(s)
}

/// Check that an output template is invertible (SPEC §2.2) and turn it into segments:
/// vars (and `step`) become literals; each param appears as `{{ p }}`,
/// `{{ p | strftime(…) }}` or `{{ p | ds_nodash }}`, and every param appears.
fn invertible(
    engine: &Engine,
    tpl: &Tpl,
    step: &str,
    params: &[(String, ParamKind)],
    vars: &[(String, String)],
) -> Result<Vec<OutSeg>> {
    let src = engine.source(tpl.id);
    let fail = |why: String| {
        Error::at_help(
            format!("output template `{src}` of step `{step}` cannot be matched back to its task: {why}"),
            &tpl.span,
            "in outputs, write each param only as {{ p }}, {{ p | strftime(\"…\") }} or {{ p | ds_nodash }}, and use every param",
        )
    };
    let Some(segments) = engine.segments(tpl.id) else {
        return Err(fail("it uses template features beyond plain substitution".into()));
    };
    let mut out: Vec<OutSeg> = Vec::new();
    let push_lit = |out: &mut Vec<OutSeg>, s: &str| {
        if let Some(OutSeg::Lit(prev)) = out.last_mut() {
            prev.push_str(s);
        } else if !s.is_empty() {
            out.push(OutSeg::Lit(s.to_string()));
        }
    };
    let mut seen = vec![false; params.len()];
    // Params written lossily somewhere, with why; fine if written in full elsewhere.
    let mut lossy: Vec<(usize, String)> = Vec::new();
    for seg in segments {
        match seg {
            Segment::Lit(s) => push_lit(&mut out, s),
            Segment::Expr { name, index, filters } => {
                if index.is_some() {
                    return Err(fail(format!("`{name}` is indexed")));
                }
                if let Some(pi) = params.iter().position(|(p, _)| p == name) {
                    let kind = &params[pi].1;
                    let fmt = match filters.as_slice() {
                        [] => OutFmt::Canonical,
                        [Filter::DsNodash] if kind.is_time() => OutFmt::DsNodash,
                        [Filter::Strftime(f)] if kind.is_time() => match check_strftime_invertible(kind, f) {
                            Ok(()) => OutFmt::Strftime(f.clone()),
                            Err(why) => {
                                lossy.push((pi, why));
                                OutFmt::Lossy(f.clone())
                            }
                        },
                        _ => {
                            return Err(fail(format!("param `{name}` goes through a filter that cannot be undone")));
                        }
                    };
                    if !matches!(fmt, OutFmt::Lossy(_)) {
                        seen[pi] = true;
                    }
                    out.push(OutSeg::Param(pi, fmt));
                } else if let Some((_, v)) = vars.iter().find(|(k, _)| k == name) {
                    if !filters.is_empty() {
                        return Err(fail(format!("var `{name}` goes through a filter")));
                    }
                    push_lit(&mut out, v);
                } else if name == "step" && filters.is_empty() {
                    push_lit(&mut out, step);
                } else {
                    return Err(fail(format!("`{name}` is neither a param nor a var")));
                }
            }
        }
    }
    if let Some((_, why)) = lossy.iter().find(|(pi, _)| !seen[*pi]) {
        return Err(fail(why.clone()));
    }
    if let Some(pi) = seen.iter().position(|s| !s) {
        return Err(fail(format!(
            "param `{}` does not appear in it, so two tasks would write the same path",
            params[pi].0
        )));
    }
    // Two params side by side with nothing between them cannot be told apart reliably.
    for w in out.windows(2) {
        if let [OutSeg::Param(a, _), OutSeg::Param(b, _)] = w
            && [a, b]
                .iter()
                .any(|i| matches!(params[**i].1, ParamKind::Choice(_) | ParamKind::Int { .. } | ParamKind::Str))
        {
            return Err(fail("two params stand side by side with no text between them".into()));
        }
    }
    Ok(out)
}

/// A strftime format in an output must keep enough of the value to recover it.
fn check_strftime_invertible(kind: &ParamKind, fmt: &str) -> std::result::Result<(), String> {
    let probe = match kind {
        ParamKind::Date => "2021-11-27",
        ParamKind::Hour => "2021-11-27T13",
        ParamKind::Month => "2021-11",
        ParamKind::Week => "2021-W47",
        ParamKind::Choice(_) | ParamKind::Int { .. } | ParamKind::Str => {
            return Err(format!("strftime on a {} param", kind.name()));
        }
    };
    let v = kind.parse(probe).map_err(|e| e.to_string())?;
    let mut rendered = String::new();
    crate::template::strftime(probe, fmt, &mut rendered).map_err(|e| format!("strftime(\"{fmt}\"): {e}"))?;
    match crate::graph::unformat(kind, &OutFmt::Strftime(fmt.to_string()), &rendered) {
        Some((got, rest)) if got == v && rest.is_empty() => Ok(()),
        _ => Err(format!("strftime(\"{fmt}\") loses part of the {}", kind.name())),
    }
}

fn parse_schedule(s: &str) -> std::result::Result<Schedule, String> {
    match s {
        "@hourly" => return Ok(Schedule::Hourly),
        "@daily" | "@midnight" => return Ok(Schedule::Daily),
        "@weekly" => return Ok(Schedule::Weekly),
        "@monthly" => return Ok(Schedule::Monthly),
        _ => {}
    }
    let fields = s.split_whitespace().count();
    if !s.starts_with('@') && fields != 5 {
        return Err(format!(
            "`{s}` is not a schedule: a cron expression has 5 fields (minute hour day month weekday), this has {fields}"
        ));
    }
    cron_of(s).map(|_| Schedule::Cron(s.to_string()))
}

/// A schedule's cron expression, parsed by croner (5 fields, or an `@`-name).
pub fn cron_of(s: &str) -> std::result::Result<croner::Cron, String> {
    let expr = match s {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        // Monday 00:00: when an ISO week (the `week` param's period) ends.
        "@weekly" => "0 0 * * 1",
        "@monthly" => "0 0 1 * *",
        other => other,
    };
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("`{s}` is not a schedule: {e}"))
}

impl Schedule {
    /// The schedule as written (`@daily`, or the cron expression).
    pub fn text(&self) -> &str {
        match self {
            Schedule::Hourly => "@hourly",
            Schedule::Daily => "@daily",
            Schedule::Weekly => "@weekly",
            Schedule::Monthly => "@monthly",
            Schedule::Cron(c) => c,
        }
    }
}

/// Params that appear anywhere: used by `--param` validation.
pub fn all_param_names(ff: &Fluxfile) -> HashSet<&str> {
    ff.steps.iter().flat_map(|s| s.params.iter().map(|(n, _)| n.as_str())).collect()
}
