//! Templates (SPEC §2.2): a minijinja environment with flux's filters, automatic shell
//! quoting for commands, and a fast path that renders the common shapes
//! (`literal {{ p }} literal {{ p | strftime("%Y") }}`) by concatenation, without
//! minijinja. The fast path's parsed segments are also what output inversion uses.

use crate::param::{ParamKind, ParamValue};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Enumerator, Object, ObjectRepr, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};
use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::Arc;

pub mod check;

/// How the values of a template's `{{ … }}` are written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Targets, `env` values, `requires` params: values as they are; a list renders one
    /// item a line.
    Path,
    /// Shell commands (`run`, `pre`, `post`, hooks): every value is shell-quoted; a list
    /// renders as its items, each quoted, separated by single spaces. `| raw` opts out.
    Command,
}

/// The handle of a template compiled by an [`Engine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TemplateId(pub u32);

/// A template that does not parse.
#[derive(Debug, Clone)]
pub struct CompileError {
    /// One line saying what is wrong, e.g. `bad template: syntax error: unexpected end of
    /// input, expected end of variable block` or ``unknown filter `nosuch` ``.
    pub message: String,
    /// Byte offset in the template source, when known: the `{{`/`{%` of the tag at fault,
    /// or the name of an unknown filter.
    pub offset: Option<usize>,
    /// Length in bytes of what is at fault (at least 1).
    pub len: usize,
    /// What to do about it.
    pub help: Option<String>,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CompileError {}

/// A parsed piece of a template that the fast path can render.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Literal text, copied as is.
    Lit(String),
    /// `{{ name }}`, `{{ name[index] }}`, `{{ name | f | g(…) }}`.
    Expr {
        /// The context name read.
        name: String,
        /// `name[N]` (negative counts from the end, as in minijinja).
        index: Option<i64>,
        /// The filters applied, left to right (`Raw` only ever last).
        filters: Vec<Filter>,
    },
}

/// A filter the fast path knows (the same Rust code runs them inside minijinja).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `add_days(n)`: a date or an hour moved by `n` days.
    AddDays(i64),
    /// `add_hours(n)`: an hour moved by `n` hours.
    AddHours(i64),
    /// `add_weeks(n)`: a week, date or hour moved by `n` weeks.
    AddWeeks(i64),
    /// `add_months(n)`: a month, or a date/hour with its day clamped to the month's end.
    AddMonths(i64),
    /// `strftime(fmt)`: chrono format of the start of a date, hour or month.
    Strftime(String),
    /// `ds_nodash`: `20240105`, `2024010502`, `202402`.
    DsNodash,
    /// `basename`: the last path component (of each item of a list).
    Basename,
    /// `dirname`: all but the last path component (of each item of a list).
    Dirname,
    /// `raw`: no shell quoting; a list's items joined by spaces.
    Raw,
}

/// What a template can see. Param values are their canonical strings.
///
/// When names collide, the first of these wins: `step`, `task`, `params`, `vars`,
/// `inputs`, `outputs` (when given), the `extra` names, the params by name, the vars by
/// name. (The Fluxfile loader should reject params and vars with reserved names.)
pub struct Context<'a> {
    /// The step's name.
    pub step: &'a str,
    /// The task id, e.g. `rollup[2024-01-05]`.
    pub task: &'a str,
    /// Params in declaration order, with their canonical values.
    pub params: &'a [(&'a str, String)],
    /// Vars (after `--var` and profile overrides).
    pub vars: &'a [(String, String)],
    /// The task's inputs after planning; only for commands.
    pub inputs: Option<&'a [String]>,
    /// The task's outputs; only for commands.
    pub outputs: Option<&'a [String]>,
    /// `attempt`, `run_id`, `interval_start`, `interval_end`, … Values that are canonical
    /// integers (`3`, `-1`) are numbers in minijinja (`{% if attempt > 1 %}`).
    pub extra: &'a [(&'a str, String)],
}

/// One compiled template.
struct Entry {
    /// Its name in the minijinja environment: `sh:N` (Command) or `path:N` (Path).
    name: String,
    source: String,
    mode: Mode,
    segments: Option<Vec<Segment>>,
    /// What the static checks found (constant subscripts, where names are read).
    facts: check::Facts,
    /// The compiled `strftime` formats of `segments`, in order.
    formats: Vec<TimeFormat>,
    /// Bytes of literal text plus a guess per expression, to size the output once.
    size_hint: usize,
}

/// Compiles and renders templates: a minijinja environment with flux's filters, plus the
/// fast path. Compile each template once (per step), render it per task.
pub struct Engine {
    env: Environment<'static>,
    templates: Vec<Entry>,
}

/// The auto-escape name of Command-mode templates.
const SHELL: &str = "sh";
/// What a filter on a time value accepts.
const TIME_FORMS: &str = "a date (YYYY-MM-DD), an hour (YYYY-MM-DDTHH) or a month (YYYY-MM)";

impl Default for Engine {
    fn default() -> Engine {
        Engine::new()
    }
}

impl Engine {
    /// A new engine with flux's filters and the `date_range` function, strict undefined
    /// values, and trailing newlines kept.
    pub fn new() -> Engine {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_debug(true); // names the undefined variable in errors
        env.set_syntax(syntax());
        env.set_auto_escape_callback(|name| {
            if name.starts_with("sh:") { AutoEscape::Custom(Cow::Borrowed(SHELL)) } else { AutoEscape::None }
        });
        env.set_formatter(format_value);
        env.add_filter("add_days", |v: &Value, n: i64| {
            time_filter(v, "add_days", |s| shift_str(&Filter::AddDays(n), s))
        });
        env.add_filter("add_hours", |v: &Value, n: i64| {
            time_filter(v, "add_hours", |s| shift_str(&Filter::AddHours(n), s))
        });
        env.add_filter("add_weeks", |v: &Value, n: i64| {
            time_filter(v, "add_weeks", |s| shift_str(&Filter::AddWeeks(n), s))
        });
        env.add_filter("add_months", |v: &Value, n: i64| {
            time_filter(v, "add_months", |s| shift_str(&Filter::AddMonths(n), s))
        });
        env.add_filter("strftime", |v: &Value, f: &str| {
            time_filter(v, "strftime", |s| {
                let mut out = String::new();
                strftime(s, f, &mut out).map(|()| out)
            })
        });
        env.add_filter("ds_nodash", |v: &Value| time_filter(v, "ds_nodash", ds_nodash));
        env.add_filter("basename", |v: &Value| path_filter(v, "basename", basename));
        env.add_filter("dirname", |v: &Value| path_filter(v, "dirname", dirname));
        env.add_filter("raw", raw_filter);
        env.add_filter("tojson", tojson_filter);
        // Quoting is not theirs to change (SPEC §2.2); the static checks name them first.
        for f in check::QUOTING_FILTERS {
            env.remove_filter(f);
        }
        env.add_filter("days", days_filter);
        env.add_filter("hours", hours_filter);
        env.add_function("date_range", |a: &str, b: &str| date_range(a, b).map(Value::from).map_err(invalid));
        Engine { env, templates: Vec::new() }
    }

    /// Compiles `source`. Syntax errors carry their byte offset into `source` when known.
    pub fn compile(&mut self, source: &str, mode: Mode) -> Result<TemplateId, CompileError> {
        let id = u32::try_from(self.templates.len()).map_err(|_| CompileError {
            message: "too many templates".into(),
            offset: None,
            len: 1,
            help: None,
        })?;
        let name = match mode {
            Mode::Command => format!("sh:{id}"),
            Mode::Path => format!("path:{id}"),
        };
        if let Err(e) = self.env.add_template_owned(name.clone(), source.to_owned()) {
            return Err(compile_error(&e, source));
        }
        let facts = match check::check(source, syntax(), mode) {
            Ok(f) => f,
            Err(p) => {
                self.env.remove_template(&name);
                return Err(CompileError {
                    message: p.message,
                    offset: Some(p.offset),
                    len: p.len,
                    help: Some(p.help),
                });
            }
        };
        let segments = parse_fast(source);
        let size_hint = match &segments {
            Some(segs) => segs
                .iter()
                .map(|s| match s {
                    Segment::Lit(l) => l.len(),
                    Segment::Expr { .. } => 16,
                })
                .sum(),
            None => source.len() + 16,
        };
        self.templates.push(Entry {
            name,
            source: source.to_owned(),
            mode,
            facts,
            formats: segments.as_deref().map(compile_formats).unwrap_or_default(),
            segments,
            size_hint,
        });
        Ok(TemplateId(id))
    }

    /// Renders a template into a new string.
    pub fn render(&self, id: TemplateId, ctx: &Context<'_>) -> Result<String, String> {
        let mut out = String::with_capacity(self.entry(id).map_or(0, |e| e.size_hint));
        self.render_into(id, ctx, &mut out)?;
        Ok(out)
    }

    /// Renders a template, appending to `out`. On error `out` is left as it was, and the
    /// message names what went wrong (an undefined variable, a filter's bad input, …).
    pub fn render_into(&self, id: TemplateId, ctx: &Context<'_>, out: &mut String) -> Result<(), String> {
        let entry = self.entry(id).ok_or_else(|| format!("unknown template id {}", id.0))?;
        let start = out.len();
        if let Some(segs) = &entry.segments {
            if render_fast(segs, &entry.formats, entry.mode, ctx, out).is_some() {
                return Ok(());
            }
            // Anything unusual (an undefined name, a filter error, a map value, …) is left
            // to minijinja, which gives the same result or the error message.
            out.truncate(start);
        }
        let rendered = self.render_slow(entry, ctx)?;
        out.push_str(&rendered);
        Ok(())
    }

    /// Where rendering `id` in `ctx` fails (byte offset and length in the source), when
    /// minijinja says; None when it renders. For error messages: it renders again.
    pub fn error_at(&self, id: TemplateId, ctx: &Context<'_>) -> Option<(usize, usize)> {
        let entry = self.entry(id)?;
        let tmpl = self.env.get_template(&entry.name).ok()?;
        let err = tmpl.render(context_value(ctx)).err()?;
        let r = err.range()?;
        let r = r.start.min(entry.source.len())..r.end.min(entry.source.len());
        // The whole `{{ … }}` the expression is in, when it is one.
        let start = entry.source[..r.start].rfind("{{").filter(|&s| !entry.source[s..r.start].contains("}}"));
        match (start, entry.source[r.end..].find("}}")) {
            (Some(s), Some(e)) => Some((s, r.end + e + 2 - s)),
            _ => Some((r.start, r.len().max(1))),
        }
    }

    /// Some(segments) when the template is on the fast path, else None.
    pub fn segments(&self, id: TemplateId) -> Option<&[Segment]> {
        self.entry(id)?.segments.as_deref()
    }

    /// Names the template reads that are not defined inside it (for validation at load
    /// time), sorted. Global functions such as `date_range` are not included.
    pub fn names(&self, id: TemplateId) -> Vec<String> {
        let Some(entry) = self.entry(id) else {
            return Vec::new();
        };
        let mut names: Vec<String> = match &entry.segments {
            Some(segs) => segs
                .iter()
                .filter_map(|s| match s {
                    Segment::Expr { name, .. } => Some(name.clone()),
                    Segment::Lit(_) => None,
                })
                .collect(),
            None => match self.env.get_template(&entry.name) {
                Ok(t) => t
                    .undeclared_variables(false)
                    .into_iter()
                    .filter(|n| !self.env.globals().any(|(g, _)| g == n))
                    .collect(),
                Err(_) => Vec::new(),
            },
        };
        names.sort();
        names.dedup();
        names
    }

    /// `inputs[N]` / `outputs[N]` subscripts with a constant N: (name, N, byte offset,
    /// length) in the source.
    pub fn indexes(&self, id: TemplateId) -> &[(String, i64, usize, usize)] {
        self.entry(id).map_or(&[], |e| e.facts.indexes.as_slice())
    }

    /// Where the template first reads `name` (byte offset and length in the source).
    pub fn read_at(&self, id: TemplateId, name: &str) -> Option<(usize, usize)> {
        let e = self.entry(id)?;
        e.facts.reads.iter().find(|(n, ..)| n == name).map(|(_, o, l)| (*o, *l))
    }

    /// The template's source text (empty for an unknown id).
    pub fn source(&self, id: TemplateId) -> &str {
        self.entry(id).map_or("", |e| e.source.as_str())
    }

    /// The template's mode (`None` for an unknown id).
    pub fn mode(&self, id: TemplateId) -> Option<Mode> {
        self.entry(id).map(|e| e.mode)
    }

    fn entry(&self, id: TemplateId) -> Option<&Entry> {
        self.templates.get(id.0 as usize)
    }

    /// Renders through minijinja, building the context value once.
    fn render_slow(&self, entry: &Entry, ctx: &Context<'_>) -> Result<String, String> {
        let tmpl = self
            .env
            .get_template(&entry.name)
            .map_err(|e| format!("internal error: template {} is missing: {e}", entry.name))?;
        tmpl.render(context_value(ctx)).map_err(|e| render_error(&e, entry, ctx, &tmpl))
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// flux's template syntax: `{{ … }}` and `{% … %}` as in Jinja, comments `{{# … #}}` so
/// that `{#` is literal text (`${#VAR}` in shell), trailing newlines kept.
fn syntax() -> SyntaxConfig {
    SyntaxConfig::builder()
        .comment_delimiters(check::COMMENT_START, check::COMMENT_END)
        .keep_trailing_newline(true)
        .build()
        .unwrap_or_default()
}

fn compile_error(e: &Error, source: &str) -> CompileError {
    let detail = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    let message = format!("bad template: {detail}");
    let reported = e.range().map(|r| r.start.min(source.len())).or_else(|| {
        let line = e.line()?;
        let mut off = 0;
        for (n, l) in source.split_inclusive('\n').enumerate() {
            if n + 1 == line {
                return Some(off);
            }
            off += l.len();
        }
        None
    });
    let (offset, len, help) = match check::locate_syntax_error(source, reported, &detail) {
        Some((off, len, help)) => (Some(off), len, Some(help)),
        None => (reported, 1, None),
    };
    // The offset is mapped into the Fluxfile, which shows the line: no "(line N)" here.
    CompileError { message, offset, len, help }
}

fn render_error(e: &Error, entry: &Entry, ctx: &Context<'_>, tmpl: &minijinja::Template<'_, '_>) -> String {
    let mut msg = match e.kind() {
        ErrorKind::UndefinedError => match e.detail() {
            Some(d) if d.contains("is undefined") => d.to_owned(),
            detail => {
                let mut missing: Vec<String> =
                    tmpl.undeclared_variables(true).into_iter().filter(|n| is_missing(ctx, n)).collect();
                missing.sort();
                match (missing.as_slice(), detail) {
                    ([one], _) => format!("`{one}` is undefined"),
                    ([], Some(d)) => format!("undefined value: {d}"),
                    ([], None) => "undefined value".to_owned(),
                    (many, _) => format!("`{}` are undefined", many.join("`, `")),
                }
            }
        },
        // Our filters' messages are complete sentences; so are minijinja's details.
        ErrorKind::InvalidOperation => match e.detail() {
            Some(d) => d.to_owned(),
            None => e.kind().to_string(),
        },
        kind => match e.detail() {
            Some(d) => format!("{kind}: {d}"),
            None => kind.to_string(),
        },
    };
    // Point at the expression, unless the message already names what is undefined.
    let snippet = match e.kind() {
        ErrorKind::UndefinedError => None,
        _ => e
            .range()
            .and_then(|r| entry.source.get(r))
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 100 && *s != entry.source.trim()),
    };
    let line = e.line().filter(|_| entry.source.contains('\n'));
    let _ = match (line, snippet) {
        (Some(l), Some(s)) => write!(msg, " (line {l}, in `{s}`)"),
        (Some(l), None) => write!(msg, " (line {l})"),
        (None, Some(s)) => write!(msg, " (in `{s}`)"),
        (None, None) => Ok(()),
    };
    msg
}

/// Whether a (possibly dotted, `params.date`) name read by a template is absent.
fn is_missing(ctx: &Context<'_>, name: &str) -> bool {
    let (head, rest) = match name.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (name, None),
    };
    match (lookup_kind(ctx, head), rest) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(Found::Map), Some(rest)) => {
            let key = rest.split('.').next().unwrap_or(rest);
            match head {
                "params" => !ctx.params.iter().any(|(k, _)| *k == key),
                _ => !ctx.vars.iter().any(|(k, _)| k == key),
            }
        }
        (Some(_), Some(_)) => true,
    }
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

fn undefined_arg(filter: &str) -> Error {
    Error::new(ErrorKind::UndefinedError, format!("{filter} got an undefined value"))
}

// ---------------------------------------------------------------------------------------
// Quoting and formatting
// ---------------------------------------------------------------------------------------

fn is_shell_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'_' | b'.' | b'/' | b':' | b'=' | b'@' | b'%' | b'+' | b',' | b'-')
        })
}

fn quote_to<W: fmt::Write + ?Sized>(s: &str, w: &mut W) -> fmt::Result {
    if is_shell_safe(s) {
        return w.write_str(s);
    }
    w.write_char('\'')?;
    let mut parts = s.split('\'');
    if let Some(first) = parts.next() {
        w.write_str(first)?;
    }
    for part in parts {
        w.write_str("'\\''")?;
        w.write_str(part)?;
    }
    w.write_char('\'')
}

/// POSIX shell quoting: words of only `[A-Za-z0-9_./:=@%+,-]` (non-empty) stay as they
/// are; anything else is wrapped in single quotes with `'` written as `'\''`; the empty
/// string becomes `''`.
pub fn shell_quote(s: &str, out: &mut String) {
    let _ = quote_to(s, out);
}

/// The minijinja formatter: shell quoting in Command mode, newline-separated lists in
/// Path mode, safe strings (from `raw`) as they are.
fn format_value(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    // By the template, not by the current auto-escape setting, so that nothing inside a
    // command (`{% autoescape %}` is refused anyway) can turn quoting off.
    let shell = state.name().starts_with("sh:");
    if value.is_safe() {
        return Ok(out.write_str(value.as_str().unwrap_or_default())?);
    }
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => {
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.write_str(if shell { " " } else { "\n" })?;
                }
                write_scalar(out, &item, shell)?;
            }
            Ok(())
        }
        _ => write_scalar(out, value, shell),
    }
}

fn write_scalar(out: &mut Output, value: &Value, shell: bool) -> Result<(), Error> {
    if value.is_undefined() {
        return Err(Error::new(ErrorKind::UndefinedError, "a list holds an undefined value"));
    }
    let written = match (value.as_str(), value.kind()) {
        (Some(s), _) if value.is_safe() || !shell => out.write_str(s),
        (Some(s), _) => quote_to(s, out),
        (None, ValueKind::Number | ValueKind::Bool) => write!(out, "{value}"),
        (None, _) if !shell => write!(out, "{value}"),
        (None, _) => quote_to(&value.to_string(), out),
    };
    Ok(written?)
}

// ---------------------------------------------------------------------------------------
// The context as a minijinja value
// ---------------------------------------------------------------------------------------

/// A map that keeps insertion order (params in declaration order) and finds the first
/// entry of a name.
#[derive(Debug)]
struct OrderedMap(Vec<(Arc<str>, Value)>);

impl Object for OrderedMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.iter().map(|(k, _)| Value::from(k.clone())).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

fn extra_value(s: &str) -> Value {
    match s.parse::<i64>() {
        Ok(n) if n.to_string() == s => Value::from(n),
        _ => Value::from(s),
    }
}

fn context_value(ctx: &Context<'_>) -> Value {
    let params: Vec<(Arc<str>, Value)> =
        ctx.params.iter().map(|(k, v)| (Arc::from(*k), Value::from(v.as_str()))).collect();
    let vars: Vec<(Arc<str>, Value)> =
        ctx.vars.iter().map(|(k, v)| (Arc::from(k.as_str()), Value::from(v.as_str()))).collect();
    let mut root: Vec<(Arc<str>, Value)> = Vec::with_capacity(8 + ctx.extra.len() + params.len() + vars.len());
    root.push((Arc::from("step"), Value::from(ctx.step)));
    root.push((Arc::from("task"), Value::from(ctx.task)));
    root.push((Arc::from("params"), Value::from_object(OrderedMap(params.clone()))));
    root.push((Arc::from("vars"), Value::from_object(OrderedMap(vars.clone()))));
    if let Some(inputs) = ctx.inputs {
        root.push((Arc::from("inputs"), Value::from(inputs.to_vec())));
    }
    if let Some(outputs) = ctx.outputs {
        root.push((Arc::from("outputs"), Value::from(outputs.to_vec())));
    }
    let extra = ctx.extra.iter().map(|(k, v)| (Arc::from(*k), extra_value(v)));
    for (k, v) in extra.chain(params).chain(vars) {
        if !root.iter().any(|(n, _)| *n == k) {
            root.push((k, v));
        }
    }
    Value::from_object(OrderedMap(root))
}

// ---------------------------------------------------------------------------------------
// Filters, shared by the fast path and minijinja
// ---------------------------------------------------------------------------------------

fn time_arg(filter: &str, s: &str) -> Result<ParamValue, String> {
    ParamValue::parse_time(s).ok_or_else(|| format!("{filter}: `{s}` is not {TIME_FORMS}"))
}

/// Why a time shift failed.
enum ShiftError {
    /// The filter does not apply to this shape (e.g. `add_hours` on a date).
    Shape,
    /// Overflow, or a year outside 0000..=9999.
    Range,
}

/// `add_days`, `add_hours`, `add_months` on a value, shared by both paths.
fn shift(f: &Filter, v: ParamValue) -> Result<ParamValue, ShiftError> {
    let r = match (f, v) {
        (Filter::AddDays(n), ParamValue::Date(_)) => v.checked_add(*n),
        (Filter::AddDays(n), ParamValue::Hour(_)) => n.checked_mul(24).and_then(|h| v.checked_add(h)),
        (Filter::AddHours(n), ParamValue::Hour(_)) => v.checked_add(*n),
        (Filter::AddWeeks(n), ParamValue::Week(_)) => v.checked_add(*n),
        (Filter::AddWeeks(n), ParamValue::Date(_)) => n.checked_mul(7).and_then(|d| v.checked_add(d)),
        (Filter::AddWeeks(n), ParamValue::Hour(_)) => n.checked_mul(7 * 24).and_then(|h| v.checked_add(h)),
        (Filter::AddMonths(n), ParamValue::Date(_) | ParamValue::Hour(_) | ParamValue::Month(_)) => v.add_months(*n),
        _ => return Err(ShiftError::Shape),
    };
    r.filter(|v| v.in_range()).ok_or(ShiftError::Range)
}

/// The string form of [`shift`], with the filter's error messages.
fn shift_str(f: &Filter, s: &str) -> Result<String, String> {
    let (name, n) = match f {
        Filter::AddDays(n) => ("add_days", n),
        Filter::AddHours(n) => ("add_hours", n),
        Filter::AddWeeks(n) => ("add_weeks", n),
        Filter::AddMonths(n) => ("add_months", n),
        _ => return Err(format!("internal error: {f:?} is not a shift")),
    };
    let v = time_arg(name, s)?;
    match shift(f, v) {
        Ok(v) => {
            let mut out = String::with_capacity(13);
            v.write_time(&mut out);
            Ok(out)
        }
        Err(ShiftError::Range) => Err(format!("{name}({n}) on `{s}` goes outside the years 0000 to 9999")),
        Err(ShiftError::Shape) => Err(match (name, v) {
            ("add_weeks", _) => format!("add_weeks: `{s}` is a month; use add_months"),
            ("add_days", ParamValue::Week(_)) => format!("add_days: `{s}` is a week; use add_weeks"),
            ("add_days", _) => format!("add_days: `{s}` is a month; use add_months"),
            ("add_months", _) => format!("add_months: `{s}` is a week; use add_weeks"),
            (_, ParamValue::Week(_)) => {
                format!("add_hours: `{s}` is a week, not an hour (YYYY-MM-DDTHH); use add_weeks")
            }
            (_, ParamValue::Date(_)) => {
                format!("add_hours: `{s}` is a date, not an hour (YYYY-MM-DDTHH); use add_days")
            }
            _ => {
                format!("add_hours: `{s}` is a month, not an hour (YYYY-MM-DDTHH); use add_months")
            }
        }),
    }
}

/// One piece of a compiled `strftime` format.
#[derive(Debug, Clone, PartialEq)]
enum FmtItem {
    Lit(String),
    /// `%Y`, 4 digits.
    Year,
    /// `%y`, 2 digits.
    Year2,
    /// `%C`, 2 digits.
    Century,
    /// `%m`
    Month,
    /// `%d`
    Day,
    /// `%H`
    Hour,
    /// `%M` and `%S`: always `00` at the start of an interval.
    Zero2,
    /// `%j`, 3 digits.
    Ordinal,
}

/// A `strftime` format compiled once: the common specifiers are written by hand, anything
/// else goes through chrono. Both give the same text.
#[derive(Debug, Clone, PartialEq)]
enum TimeFormat {
    Fast(Vec<FmtItem>),
    Chrono(String),
}

impl TimeFormat {
    fn compile(fmt: &str) -> TimeFormat {
        let mut items = Vec::new();
        let mut lit = String::new();
        let mut chars = fmt.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            let item = match chars.next() {
                Some('%') => {
                    lit.push('%');
                    continue;
                }
                Some('Y') => FmtItem::Year,
                Some('y') => FmtItem::Year2,
                Some('C') => FmtItem::Century,
                Some('m') => FmtItem::Month,
                Some('d') => FmtItem::Day,
                Some('H') => FmtItem::Hour,
                Some('M' | 'S') => FmtItem::Zero2,
                Some('j') => FmtItem::Ordinal,
                _ => return TimeFormat::Chrono(fmt.to_owned()),
            };
            if !lit.is_empty() {
                items.push(FmtItem::Lit(std::mem::take(&mut lit)));
            }
            items.push(item);
        }
        if !lit.is_empty() {
            items.push(FmtItem::Lit(lit));
        }
        TimeFormat::Fast(items)
    }

    /// True when the output is always one non-empty shell-safe word (no quoting needed).
    fn shell_safe(&self) -> bool {
        match self {
            TimeFormat::Fast(items) => {
                !items.is_empty()
                    && items.iter().all(|i| match i {
                        FmtItem::Lit(l) => is_shell_safe(l),
                        _ => true,
                    })
            }
            TimeFormat::Chrono(_) => false,
        }
    }

    /// Appends `v` formatted; on error `out` is unchanged.
    fn write(&self, v: ParamValue, out: &mut String) -> Result<(), String> {
        let bad = |fmt: &str| {
            format!("strftime: `{fmt}` is not a valid format (use chrono's specifiers such as %Y, %m, %d, %H)")
        };
        match self {
            TimeFormat::Fast(items) => {
                let c = v.civil().ok_or_else(|| "strftime: not a time value".to_owned())?;
                if !(0..=9999).contains(&c.year) {
                    return Err("strftime: the year is outside 0000 to 9999".to_owned());
                }
                let y = c.year as u32;
                for item in items {
                    match item {
                        FmtItem::Lit(l) => out.push_str(l),
                        FmtItem::Year => {
                            push_digits(y / 100, out);
                            push_digits(y % 100, out);
                        }
                        FmtItem::Year2 => push_digits(y % 100, out),
                        FmtItem::Century => push_digits(y / 100, out),
                        FmtItem::Month => push_digits(c.month, out),
                        FmtItem::Day => push_digits(c.day, out),
                        FmtItem::Hour => push_digits(c.hour, out),
                        FmtItem::Zero2 => out.push_str("00"),
                        FmtItem::Ordinal => {
                            out.push(char::from(b'0' + (c.ordinal / 100 % 10) as u8));
                            push_digits(c.ordinal % 100, out);
                        }
                    }
                }
                Ok(())
            }
            TimeFormat::Chrono(fmt) => {
                let start = v.start().ok_or_else(|| bad(fmt))?;
                let len = out.len();
                start.format(fmt).write_to(out).map_err(|_| {
                    out.truncate(len);
                    bad(fmt)
                })
            }
        }
    }
}

/// Two digits of `v % 100`.
fn push_digits(v: u32, out: &mut String) {
    out.push(char::from(b'0' + (v / 10 % 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

/// The `strftime(fmt)` filter on its own: appends the start of the date, hour or month `s`
/// (canonical form) formatted with chrono's `fmt`. On error `out` is unchanged and the
/// message starts with `strftime:`.
pub fn strftime(s: &str, fmt: &str, out: &mut String) -> Result<(), String> {
    let v = time_arg("strftime", s)?;
    TimeFormat::compile(fmt).write(v, out)
}

fn ds_nodash(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(10);
    time_arg("ds_nodash", s)?.write_nodash(&mut out);
    Ok(out)
}

/// The last component of a path or URI: `a/b.csv` -> `b.csv`, `a/b/` -> `b`, `/` -> `/`.
fn basename(s: &str) -> &str {
    let t = s.trim_end_matches('/');
    if t.is_empty() {
        return if s.is_empty() { "" } else { "/" };
    }
    match t.rfind('/') {
        Some(i) => &t[i + 1..],
        None => t,
    }
}

/// All but the last component: `a/b.csv` -> `a`, `b.csv` -> `.`, `/b` -> `/`,
/// `s3://bucket/k` -> `s3://bucket`.
fn dirname(s: &str) -> &str {
    let t = s.trim_end_matches('/');
    if t.is_empty() {
        return if s.is_empty() { "." } else { "/" };
    }
    match t.rfind('/') {
        None => ".",
        Some(i) => {
            let d = t[..i].trim_end_matches('/');
            if d.is_empty() { "/" } else { d }
        }
    }
}

fn days_of(s: &str) -> Result<Vec<String>, String> {
    match ParamValue::parse_time(s) {
        Some(ParamValue::Month(_)) => Ok(expand(&ParamKind::Date, s, s)?),
        Some(w @ ParamValue::Week(_)) => {
            Ok(w.days().unwrap_or_default().into_iter().map(|d| ParamKind::Date.format(d)).collect())
        }
        Some(_) => Err(format!(
            "days: `{s}` is not a month (YYYY-MM) or a week (YYYY-Www); days lists the dates of a month, a week or of date_range(a, b)"
        )),
        None => Err(format!("days: `{s}` is not a month (YYYY-MM) or a week (YYYY-Www)")),
    }
}

fn hours_of(s: &str) -> Result<Vec<String>, String> {
    match ParamValue::parse_time(s) {
        Some(ParamValue::Date(_) | ParamValue::Month(_)) => expand(&ParamKind::Hour, s, s),
        _ => Err(format!("hours: `{s}` is not a date (YYYY-MM-DD) or a month (YYYY-MM)")),
    }
}

fn date_range(a: &str, b: &str) -> Result<Vec<String>, String> {
    expand(&ParamKind::Date, a, b).map_err(|e| format!("date_range: {e}"))
}

fn expand(kind: &ParamKind, a: &str, b: &str) -> Result<Vec<String>, String> {
    Ok(kind.expand_range(a, b)?.into_iter().map(|v| kind.format(v)).collect())
}

/// The string a filter works on, or the error for anything else.
fn string_arg<'v>(v: &'v Value, filter: &str, what: &str) -> Result<Cow<'v, str>, Error> {
    if v.is_undefined() {
        return Err(undefined_arg(filter));
    }
    match v.as_str() {
        Some(s) => Ok(Cow::Borrowed(s)),
        None if matches!(v.kind(), ValueKind::Number) => Ok(Cow::Owned(v.to_string())),
        None => Err(invalid(format!("{filter} takes {what}, not a {}", v.kind()))),
    }
}

fn time_filter(v: &Value, filter: &str, f: impl FnOnce(&str) -> Result<String, String>) -> Result<Value, Error> {
    let s = string_arg(v, filter, TIME_FORMS)?;
    f(&s).map(Value::from).map_err(invalid)
}

fn is_list(v: &Value) -> bool {
    matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable)
}

fn path_filter(v: &Value, filter: &str, f: fn(&str) -> &str) -> Result<Value, Error> {
    if is_list(v) {
        let mut items = Vec::new();
        for item in v.try_iter()? {
            items.push(Value::from(f(&string_arg(&item, filter, "a path")?)));
        }
        return Ok(Value::from(items));
    }
    Ok(Value::from(f(&string_arg(v, filter, "a path or a list of paths")?)))
}

fn raw_filter(v: &Value) -> Result<Value, Error> {
    if v.is_undefined() {
        return Err(undefined_arg("raw"));
    }
    if v.is_safe() {
        return Ok(v.clone());
    }
    if is_list(v) {
        let mut out = String::new();
        for (i, item) in v.try_iter()?.enumerate() {
            if i > 0 {
                out.push(' ');
            }
            match item.as_str() {
                Some(s) => out.push_str(s),
                None => {
                    let _ = write!(out, "{item}");
                }
            }
        }
        return Ok(Value::from_safe_string(out));
    }
    Ok(Value::from_safe_string(match v.as_str() {
        Some(s) => s.to_owned(),
        None => v.to_string(),
    }))
}

/// `tojson`: the value as compact JSON, a plain string (so shell-quoted in commands).
fn tojson_filter(v: &Value) -> Result<Value, Error> {
    if v.is_undefined() {
        return Err(undefined_arg("tojson"));
    }
    serde_json::to_string(v).map(Value::from).map_err(|e| invalid(format!("tojson: {e}")))
}

fn days_filter(v: &Value) -> Result<Value, Error> {
    if is_list(v) {
        return Ok(v.clone());
    }
    let s = string_arg(v, "days", "a month (YYYY-MM), a week (YYYY-Www) or a list of dates")?;
    days_of(&s).map(Value::from).map_err(invalid)
}

fn hours_filter(v: &Value) -> Result<Value, Error> {
    let mut out = Vec::new();
    if is_list(v) {
        for item in v.try_iter()? {
            out.extend(hours_of(&string_arg(&item, "hours", "dates")?).map_err(invalid)?);
        }
    } else {
        out = hours_of(&string_arg(v, "hours", "a date (YYYY-MM-DD) or a list of dates")?).map_err(invalid)?;
    }
    Ok(Value::from(out))
}

// ---------------------------------------------------------------------------------------
// The fast path: parse
// ---------------------------------------------------------------------------------------

/// Names the fast path leaves to minijinja (constants, special names, globals).
const SPECIAL_NAMES: &[&str] = &[
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
    "loop",
    "self",
    "super",
    "caller",
    "varargs",
    "kwargs",
    "namespace",
    "range",
    "dict",
    "debug",
    "date_range",
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "else",
];

/// Splits a template into segments when it is only literal text and simple expressions;
/// `None` sends it to minijinja.
fn parse_fast(src: &str) -> Option<Vec<Segment>> {
    let b = src.as_bytes();
    let mut segs = Vec::new();
    let mut lit_start = 0;
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'{' {
            match b[i + 1] {
                // `{#` is literal text; comments are `{{# … #}}` (and fail `expr`).
                b'%' => return None,
                b'{' => {
                    if i > lit_start {
                        segs.push(Segment::Lit(src[lit_start..i].to_owned()));
                    }
                    let mut p = Parser { src, i: i + 2 };
                    segs.push(p.expr()?);
                    i = p.i;
                    lit_start = i;
                    continue;
                }
                _ => {}
            }
        }
        i += 1;
    }
    if lit_start < b.len() {
        segs.push(Segment::Lit(src[lit_start..].to_owned()));
    }
    Some(segs)
}

struct Parser<'s> {
    src: &'s str,
    i: usize,
}

impl<'s> Parser<'s> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<&'s str> {
        let b = self.src.as_bytes();
        let start = self.i;
        if !matches!(self.peek(), Some(c) if c.is_ascii_alphabetic() || c == b'_') {
            return None;
        }
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
            self.i += 1;
        }
        // An identifier running into non-ASCII text is not one the fast path knows.
        if b.get(self.i).is_some_and(|c| !c.is_ascii()) {
            return None;
        }
        Some(&self.src[start..self.i])
    }

    fn int(&mut self) -> Option<i64> {
        let start = self.i;
        self.eat(b'-');
        let digits = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
            self.i += 1;
        }
        let d = &self.src[digits..self.i];
        if d.is_empty() || (d.len() > 1 && d.starts_with('0')) {
            return None;
        }
        if matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'.') {
            return None;
        }
        self.src[start..self.i].parse().ok()
    }

    fn string(&mut self) -> Option<String> {
        let q = self.peek().filter(|c| matches!(c, b'"' | b'\''))?;
        let rest = &self.src[self.i + 1..];
        let end = rest.find(char::from(q))?;
        let s = &rest[..end];
        if s.contains(['\\', '\n', '\r']) {
            return None;
        }
        self.i += end + 2;
        Some(s.to_owned())
    }

    /// After `{{`: `name`, `name[N]`, then `| filter` / `| filter(arg)`, then `}}`.
    fn expr(&mut self) -> Option<Segment> {
        if matches!(self.peek(), Some(b'-' | b'+')) {
            return None; // whitespace control
        }
        self.ws();
        let name = self.ident()?;
        if SPECIAL_NAMES.contains(&name) {
            return None;
        }
        self.ws();
        let mut index = None;
        if self.eat(b'[') {
            self.ws();
            index = Some(self.int()?);
            self.ws();
            if !self.eat(b']') {
                return None;
            }
            self.ws();
        }
        let mut filters = Vec::new();
        while self.eat(b'|') {
            if filters.last() == Some(&Filter::Raw) {
                return None;
            }
            self.ws();
            let fname = self.ident()?;
            self.ws();
            let mut int_arg = None;
            let mut str_arg = None;
            let mut has_args = false;
            if self.eat(b'(') {
                self.ws();
                if !self.eat(b')') {
                    has_args = true;
                    if matches!(self.peek(), Some(b'"' | b'\'')) {
                        str_arg = Some(self.string()?);
                    } else {
                        int_arg = Some(self.int()?);
                    }
                    self.ws();
                    if !self.eat(b')') {
                        return None;
                    }
                }
                self.ws();
            }
            let filter = match (fname, int_arg, str_arg) {
                ("add_days", Some(n), None) => Filter::AddDays(n),
                ("add_hours", Some(n), None) => Filter::AddHours(n),
                ("add_weeks", Some(n), None) => Filter::AddWeeks(n),
                ("add_months", Some(n), None) => Filter::AddMonths(n),
                ("strftime", None, Some(f)) => Filter::Strftime(f),
                ("ds_nodash", ..) if !has_args => Filter::DsNodash,
                ("basename", ..) if !has_args => Filter::Basename,
                ("dirname", ..) if !has_args => Filter::Dirname,
                ("raw", ..) if !has_args => Filter::Raw,
                _ => return None,
            };
            filters.push(filter);
        }
        if !(self.eat(b'}') && self.eat(b'}')) {
            return None;
        }
        Some(Segment::Expr { name: name.to_owned(), index, filters })
    }
}

// ---------------------------------------------------------------------------------------
// The fast path: render
// ---------------------------------------------------------------------------------------

/// A value on the fast path.
enum Cur<'a> {
    Str(Cow<'a, str>),
    List(Cow<'a, [String]>),
    /// A time value, in canonical form, or compact (`ds_nodash`) when the flag is set.
    Time(ParamValue, bool),
}

impl<'a> Cur<'a> {
    /// The value as a time, parsing a string; `None` for lists, compact times, non-times.
    fn time(&self) -> Option<ParamValue> {
        match self {
            Cur::Str(s) => ParamValue::parse_time(s),
            Cur::Time(v, false) => Some(*v),
            _ => None,
        }
    }

    /// The value as a string (times are written out).
    fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Cur::Str(s) => Some(s),
            Cur::Time(v, compact) => {
                let mut o = String::with_capacity(13);
                write_time(v, compact, &mut o);
                Some(Cow::Owned(o))
            }
            Cur::List(_) => None,
        }
    }
}

fn write_time(v: ParamValue, compact: bool, out: &mut String) {
    if compact {
        v.write_nodash(out);
    } else {
        v.write_time(out);
    }
}

/// What a name is in the context; `Map` values (`params`, `vars`) are left to minijinja.
enum Found<'a> {
    Str(&'a str),
    List(&'a [String]),
    Map,
}

/// Looks a name up in the same order as [`context_value`] builds the root.
fn lookup_kind<'a>(ctx: &Context<'a>, name: &str) -> Option<Found<'a>> {
    match name {
        "step" => return Some(Found::Str(ctx.step)),
        "task" => return Some(Found::Str(ctx.task)),
        "params" | "vars" => return Some(Found::Map),
        "inputs" if ctx.inputs.is_some() => return ctx.inputs.map(Found::List),
        "outputs" if ctx.outputs.is_some() => return ctx.outputs.map(Found::List),
        _ => {}
    }
    if let Some((_, v)) = ctx.extra.iter().find(|(k, _)| *k == name) {
        return Some(Found::Str(v));
    }
    if let Some((_, v)) = ctx.params.iter().find(|(k, _)| *k == name) {
        return Some(Found::Str(v));
    }
    if let Some((_, v)) = ctx.vars.iter().find(|(k, _)| k == name) {
        return Some(Found::Str(v));
    }
    None
}

fn map_str<'a>(s: Cow<'a, str>, f: fn(&str) -> &str) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(f(b)),
        Cow::Owned(o) => Cow::Owned(f(&o).to_owned()),
    }
}

/// The compiled `strftime` formats of a fast template, in the order they appear.
fn compile_formats(segs: &[Segment]) -> Vec<TimeFormat> {
    segs.iter()
        .flat_map(|s| match s {
            Segment::Expr { filters, .. } => filters.as_slice(),
            Segment::Lit(_) => &[],
        })
        .filter_map(|f| match f {
            Filter::Strftime(fmt) => Some(TimeFormat::compile(fmt)),
            _ => None,
        })
        .collect()
}

/// Renders segments by concatenation. `None` means "let minijinja do it": an undefined
/// name, a filter error, an index out of range, a map value.
fn render_fast(
    segs: &[Segment],
    formats: &[TimeFormat],
    mode: Mode,
    ctx: &Context<'_>,
    out: &mut String,
) -> Option<()> {
    let mut formats = formats.iter();
    for seg in segs {
        let (name, index, filters) = match seg {
            Segment::Lit(s) => {
                out.push_str(s);
                continue;
            }
            Segment::Expr { name, index, filters } => (name, index, filters),
        };
        let mut cur = match lookup_kind(ctx, name)? {
            Found::Str(s) => Cur::Str(Cow::Borrowed(s)),
            Found::List(l) => Cur::List(Cow::Borrowed(l)),
            Found::Map => return None,
        };
        if let Some(i) = *index {
            let Cur::List(Cow::Borrowed(l)) = cur else {
                return None;
            };
            let idx = if i < 0 {
                l.len().checked_sub(usize::try_from(i.unsigned_abs()).ok()?)?
            } else {
                usize::try_from(i).ok()?
            };
            cur = Cur::Str(Cow::Borrowed(l.get(idx)?.as_str()));
        }
        let (filters, raw) = match filters.split_last() {
            Some((Filter::Raw, rest)) => (rest, true),
            _ => (filters.as_slice(), false),
        };
        let shell = mode == Mode::Command && !raw;
        let mut written = false;
        for (fi, f) in filters.iter().enumerate() {
            cur = match f {
                Filter::Raw => cur, // only ever last; handled above
                Filter::Basename | Filter::Dirname => {
                    let g = if *f == Filter::Basename { basename } else { dirname };
                    match cur {
                        Cur::List(l) => Cur::List(Cow::Owned(l.iter().map(|x| g(x).to_owned()).collect())),
                        other => Cur::Str(map_str(other.into_str()?, g)),
                    }
                }
                Filter::AddDays(_) | Filter::AddHours(_) | Filter::AddWeeks(_) | Filter::AddMonths(_) => {
                    Cur::Time(shift(f, cur.time()?).ok()?, false)
                }
                Filter::DsNodash => Cur::Time(cur.time()?, true),
                Filter::Strftime(_) => {
                    let fmt = formats.next()?;
                    let v = cur.time()?;
                    if fi + 1 == filters.len() && (!shell || fmt.shell_safe()) {
                        // The usual last filter writes straight into `out`.
                        fmt.write(v, out).ok()?;
                        written = true;
                        break;
                    }
                    let mut o = String::new();
                    fmt.write(v, &mut o).ok()?;
                    Cur::Str(Cow::Owned(o))
                }
            };
        }
        if written {
            continue;
        }
        match cur {
            // Canonical and compact times are shell-safe words.
            Cur::Time(v, compact) => write_time(v, compact, out),
            Cur::Str(s) if shell => shell_quote(&s, out),
            Cur::Str(s) => out.push_str(&s),
            Cur::List(l) => {
                let sep = if raw || shell { ' ' } else { '\n' };
                for (i, item) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(sep);
                    }
                    if shell {
                        shell_quote(item, out);
                    } else {
                        out.push_str(item);
                    }
                }
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests;
