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
mod tests {
    use super::*;

    struct Ctx {
        params: Vec<(&'static str, String)>,
        vars: Vec<(String, String)>,
        inputs: Vec<String>,
        outputs: Vec<String>,
        extra: Vec<(&'static str, String)>,
    }

    impl Ctx {
        fn new() -> Ctx {
            Ctx {
                params: vec![("date", "2024-01-05".into()), ("region", "eu".into())],
                vars: vec![
                    ("root".into(), "data".into()),
                    ("evil".into(), "hi; touch pwned".into()),
                    ("sub".into(), "$(rm -rf /)".into()),
                    ("quote".into(), "a'b".into()),
                    ("empty".into(), String::new()),
                    ("month".into(), "2024-02".into()),
                    ("hour".into(), "2024-03-01T02".into()),
                    ("spaced".into(), "my dir/b c.txt".into()),
                ],
                inputs: vec!["a.txt".into(), "b c.txt".into(), "dir/x'y.csv".into()],
                outputs: vec!["out/r.csv".into()],
                extra: vec![("attempt", "2".into()), ("run_id", "r-7".into())],
            }
        }

        fn ctx(&self, with_lists: bool) -> Context<'_> {
            Context {
                step: "rollup",
                task: "rollup[2024-01-05]",
                params: &self.params,
                vars: &self.vars,
                inputs: with_lists.then_some(self.inputs.as_slice()),
                outputs: with_lists.then_some(self.outputs.as_slice()),
                extra: &self.extra,
            }
        }
    }

    fn render(src: &str, mode: Mode) -> Result<String, String> {
        let c = Ctx::new();
        let mut e = Engine::new();
        let id = e.compile(src, mode).map_err(|e| e.message)?;
        e.render(id, &c.ctx(true))
    }
    fn cmd(src: &str) -> String {
        render(src, Mode::Command).unwrap_or_else(|e| panic!("{src}: {e}"))
    }
    fn path(src: &str) -> String {
        render(src, Mode::Path).unwrap_or_else(|e| panic!("{src}: {e}"))
    }
    fn err(src: &str) -> String {
        match render(src, Mode::Path) {
            Ok(s) => panic!("{src} rendered {s:?}"),
            Err(e) => e,
        }
    }
    fn q(s: &str) -> String {
        let mut o = String::new();
        shell_quote(s, &mut o);
        o
    }

    #[test]
    fn quoting_rules() {
        assert_eq!(q("plain-word_1.2/x:y=z@a%b+c,d"), "plain-word_1.2/x:y=z@a%b+c,d");
        assert_eq!(q(""), "''");
        assert_eq!(q("hi; touch pwned"), "'hi; touch pwned'");
        assert_eq!(q("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(q("a'b"), "'a'\\''b'");
        assert_eq!(q("'"), "''\\'''");
        assert_eq!(q("`id`"), "'`id`'");
        assert_eq!(q("a\nb"), "'a\nb'");
        assert_eq!(q("~"), "'~'");
        assert_eq!(q("*"), "'*'");
        assert_eq!(q("é"), "'é'");
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        let nasty = ["hi; touch pwned", "$(rm -rf /)", "a'b", "", "''", "\\", "a\"b", "x\ny", "$HOME", "!x", "-n"];
        for s in nasty {
            let mut script = String::from("printf '%s' ");
            shell_quote(s, &mut script);
            let out = std::process::Command::new("sh").arg("-c").arg(&script).output();
            if let Ok(out) = out {
                assert_eq!(String::from_utf8_lossy(&out.stdout), s, "{script}");
            }
        }
    }

    #[test]
    fn commands_quote_every_value() {
        assert_eq!(cmd("echo {{ evil }}"), "echo 'hi; touch pwned'");
        assert_eq!(cmd("echo {{ sub }}"), "echo '$(rm -rf /)'");
        assert_eq!(cmd("echo {{ quote }}"), "echo 'a'\\''b'");
        assert_eq!(cmd("echo {{ empty }}"), "echo ''");
        assert_eq!(cmd("echo {{ vars.evil }}"), "echo 'hi; touch pwned'");
        assert_eq!(cmd("echo {{ params['date'] }}"), "echo 2024-01-05");
        assert_eq!(cmd("echo {{ evil ~ '!' }}"), "echo 'hi; touch pwned!'");
        assert_eq!(cmd("echo {{ evil | upper }}"), "echo 'HI; TOUCH PWNED'");
        assert_eq!(cmd("cat {{ inputs }}"), "cat a.txt 'b c.txt' 'dir/x'\\''y.csv'");
        assert_eq!(cmd("cat {{ inputs[1] }} > {{ outputs[0] }}"), "cat 'b c.txt' > out/r.csv");
        assert_eq!(cmd("cat {{ inputs[-1] }}"), "cat 'dir/x'\\''y.csv'");
        assert_eq!(cmd("n={{ inputs | length }}"), "n=3");
        assert_eq!(cmd("n={{ 1 + 2 }} {{ 1.5 }} {{ true }}"), "n=3 1.5 True");
        assert_eq!(cmd("a={{ attempt }} {{ attempt + 1 }} {{ run_id }}"), "a=2 3 r-7");
        assert_eq!(cmd("{% for i in inputs %}[{{ i }}]{% endfor %}"), "[a.txt]['b c.txt']['dir/x'\\''y.csv']");
        assert_eq!(cmd("{{ inputs | join(' ') }}"), "'a.txt b c.txt dir/x'\\''y.csv'");
        assert_eq!(cmd("{{ [] }}x"), "x");
    }

    #[test]
    fn raw_opts_out() {
        assert_eq!(cmd("echo {{ evil | raw }}"), "echo hi; touch pwned");
        assert_eq!(cmd("cat {{ inputs | raw }}"), "cat a.txt b c.txt dir/x'y.csv");
        assert_eq!(cmd("echo {{ vars.sub | raw }}"), "echo $(rm -rf /)");
        assert_eq!(path("{{ inputs | raw }}"), "a.txt b c.txt dir/x'y.csv");
        assert_eq!(path("{{ evil | raw }}"), "hi; touch pwned");
        assert_eq!(cmd("{{ inputs | basename | raw }}"), "a.txt b c.txt x'y.csv");
    }

    #[test]
    fn path_mode_is_unquoted() {
        assert_eq!(path("{{ root }}/{{ evil }}"), "data/hi; touch pwned");
        assert_eq!(path("{{ inputs }}"), "a.txt\nb c.txt\ndir/x'y.csv");
        assert_eq!(path("{{ month | days }}").lines().count(), 29);
        assert_eq!(path("{{ step }} {{ task }}"), "rollup rollup[2024-01-05]");
        assert_eq!(path("line1\n{{ date }}\n"), "line1\n2024-01-05\n");
        assert_eq!(path("{% for d in month | days %}{{ root }}/{{ d }}.csv\n{% endfor %}").lines().count(), 29);
    }

    #[test]
    fn time_filters() {
        let cases = [
            ("{{ date | add_days(1) }}", "2024-01-06"),
            ("{{ date | add_days(-5) }}", "2023-12-31"),
            ("{{ '2024-02-28' | add_days(1) }}", "2024-02-29"),
            ("{{ '2023-02-28' | add_days(1) }}", "2023-03-01"),
            ("{{ '2024-03-01' | add_days(-1) }}", "2024-02-29"),
            ("{{ hour | add_days(1) }}", "2024-03-02T02"),
            ("{{ hour | add_days(-1) }}", "2024-02-29T02"),
            ("{{ hour | add_hours(22) }}", "2024-03-02T00"),
            ("{{ hour | add_hours(-3) }}", "2024-02-29T23"),
            ("{{ '2024-01-31' | add_months(1) }}", "2024-02-29"),
            ("{{ '2023-01-31' | add_months(1) }}", "2023-02-28"),
            ("{{ '2024-03-31' | add_months(-1) }}", "2024-02-29"),
            ("{{ '2024-01-31T05' | add_months(1) }}", "2024-02-29T05"),
            ("{{ month | add_months(-2) }}", "2023-12"),
            ("{{ month | add_months(11) }}", "2025-01"),
            ("{{ date | strftime('%Y/%m') }}", "2024/01"),
            ("{{ date | strftime(\"%d.%m.%Y\") }}", "05.01.2024"),
            ("{{ hour | strftime('%Y%m%d-%H') }}", "20240301-02"),
            ("{{ month | strftime('%Y_%m_%d') }}", "2024_02_01"),
            ("{{ date | strftime('%A') }}", "Friday"),
            ("{{ date | ds_nodash }}", "20240105"),
            ("{{ hour | ds_nodash }}", "2024030102"),
            ("{{ month | ds_nodash }}", "202402"),
            ("{{ date | add_days(1) | ds_nodash }}", "20240106"),
            ("{{ '9999-12-31' | add_days(0) }}", "9999-12-31"),
        ];
        for (src, want) in cases {
            assert_eq!(path(src), want, "{src}");
            assert_eq!(cmd(src), q(want), "{src}");
        }
        assert_eq!(cmd("{{ date | strftime('%Y %m') }}"), "'2024 01'");
    }

    #[test]
    fn filter_errors_are_clear() {
        let cases = [
            (
                "{{ evil | add_days(1) }}",
                "add_days: `hi; touch pwned` is not a date (YYYY-MM-DD), an hour (YYYY-MM-DDTHH) or a month (YYYY-MM)",
            ),
            ("{{ month | add_days(1) }}", "add_days: `2024-02` is a month; use add_months"),
            (
                "{{ date | add_hours(1) }}",
                "add_hours: `2024-01-05` is a date, not an hour (YYYY-MM-DDTHH); use add_days",
            ),
            ("{{ '9999-12-31' | add_days(1) }}", "add_days(1) on `9999-12-31` goes outside the years 0000 to 9999"),
            (
                "{{ date | add_days(9223372036854775807) }}",
                "add_days(9223372036854775807) on `2024-01-05` goes outside the years 0000 to 9999",
            ),
            (
                "{{ hour | add_days(-9223372036854775807) }}",
                "add_days(-9223372036854775807) on `2024-03-01T02` goes outside the years 0000 to 9999",
            ),
            (
                "{{ date | add_months(-9223372036854775807) }}",
                "add_months(-9223372036854775807) on `2024-01-05` goes outside the years 0000 to 9999",
            ),
            (
                "{{ date | strftime('%Q') }}",
                "strftime: `%Q` is not a valid format (use chrono's specifiers such as %Y, %m, %d, %H)",
            ),
            (
                "{{ date | strftime('%z') }}",
                "strftime: `%z` is not a valid format (use chrono's specifiers such as %Y, %m, %d, %H)",
            ),
            (
                "{{ root | ds_nodash }}",
                "ds_nodash: `data` is not a date (YYYY-MM-DD), an hour (YYYY-MM-DDTHH) or a month (YYYY-MM)",
            ),
            (
                "{{ inputs | add_days(1) }}",
                "add_days takes a date (YYYY-MM-DD), an hour (YYYY-MM-DDTHH) or a month (YYYY-MM), not a sequence",
            ),
            (
                "{{ date | days }}",
                "days: `2024-01-05` is not a month (YYYY-MM) or a week (YYYY-Www); days lists the dates of a month, a week or of date_range(a, b)",
            ),
            (
                "{{ month | add_hours(1) }}",
                "add_hours: `2024-02` is a month, not an hour (YYYY-MM-DDTHH); use add_months",
            ),
            (
                "{{ date_range('2024-01-05', '2024-01-01') }}",
                "date_range: `2024-01-05..2024-01-01` is empty: `2024-01-01` comes before `2024-01-05`; write the earlier end first",
            ),
            ("{{ hour | hours }}", "hours: `2024-03-01T02` is not a date (YYYY-MM-DD) or a month (YYYY-MM)"),
        ];
        for (src, want) in cases {
            let got = err(src);
            assert!(got.starts_with(want), "{src}:\n got {got}\nwant {want}");
            assert!(got.ends_with("`)"), "{src}: {got}");
        }
        assert_eq!(
            err("{{ month | add_days(1) }}"),
            "add_days: `2024-02` is a month; use add_months (in `add_days(1)`)"
        );
        assert_eq!(
            err("a\n{{ date | strftime('%Q') }}"),
            "strftime: `%Q` is not a valid format (use chrono's specifiers such as %Y, %m, %d, %H) (line 2, in `strftime('%Q')`)"
        );
        // Unknown filters do not compile (see template::check).
        let bad = Engine::new().compile("{{ date | nofilter }}", Mode::Path).unwrap_err();
        assert_eq!((bad.message.as_str(), bad.offset, bad.len), ("unknown filter `nofilter`", Some(10), 8));
    }

    #[test]
    fn days_hours_and_date_range() {
        assert_eq!(
            path("{{ month | days | first }} {{ month | days | last }} {{ month | days | length }}"),
            "2024-02-01 2024-02-29 29"
        );
        assert_eq!(path("{{ '2023-02' | days | length }}"), "28");
        assert_eq!(path("{{ '2024-12' | days | last }}"), "2024-12-31");
        assert_eq!(
            path("{{ date_range('2024-02-27', '2024-03-01') }}"),
            "2024-02-27\n2024-02-28\n2024-02-29\n2024-03-01"
        );
        assert_eq!(cmd("{{ date_range('2024-02-28', '2024-03-01') | days }}"), "2024-02-28 2024-02-29 2024-03-01");
        assert_eq!(path("{{ date_range(date, date | add_days(1)) | join(',') }}"), "2024-01-05,2024-01-06");
        assert_eq!(
            path("{{ date | hours | length }} {{ date | hours | first }} {{ date | hours | last }}"),
            "24 2024-01-05T00 2024-01-05T23"
        );
        assert_eq!(path("{{ date_range('2024-01-01', '2024-01-02') | hours | length }}"), "48");
        assert_eq!(path("{{ '2024-02' | hours | length }}"), "696");
        assert_eq!(
            path(
                "{% for d in month | days %}{% if loop.first or loop.last %}{{ root }}/{{ d | ds_nodash }}.csv\n{% endif %}{% endfor %}"
            ),
            "data/20240201.csv\ndata/20240229.csv\n"
        );
    }

    #[test]
    fn path_filters() {
        assert_eq!(path("{{ 'a/b/c.csv' | basename }}|{{ 'a/b/c.csv' | dirname }}"), "c.csv|a/b");
        assert_eq!(path("{{ 'c.csv' | basename }}|{{ 'c.csv' | dirname }}"), "c.csv|.");
        assert_eq!(path("{{ 'out/dir/' | basename }}|{{ 'out/dir/' | dirname }}"), "dir|out");
        assert_eq!(path("{{ '/x' | basename }}|{{ '/x' | dirname }}"), "x|/");
        assert_eq!(path("{{ '/' | basename }}|{{ '/' | dirname }}"), "/|/");
        assert_eq!(path("{{ '' | basename }}|{{ '' | dirname }}"), "|.");
        assert_eq!(path("{{ 's3://bkt/k/v.csv' | basename }}|{{ 's3://bkt/k/v.csv' | dirname }}"), "v.csv|s3://bkt/k");
        assert_eq!(path("{{ inputs | basename }}"), "a.txt\nb c.txt\nx'y.csv");
        assert_eq!(cmd("{{ inputs | dirname }}"), ". . dir");
        assert_eq!(cmd("{{ spaced | dirname }}"), "'my dir'");
    }

    #[test]
    fn undefined_names_are_errors_that_name_them() {
        assert_eq!(err("{{ nope }}"), "`nope` is undefined");
        assert_eq!(err("x/{{ nope }}/y"), "`nope` is undefined");
        assert_eq!(err("{{ nope | basename }}"), "`nope` is undefined");
        assert_eq!(err("{{ nope | add_days(1) }}"), "`nope` is undefined");
        assert!(err("{{ params.nope }}").contains("params.nope"));
        assert!(err("{{ vars.nope | raw }}").contains("vars.nope"));
        assert!(err("{% if nope %}x{% endif %}").contains("nope"));
        assert!(err("{{ inputs[7] }}").contains("inputs[7]"), "{}", err("{{ inputs[7] }}"));
        // Inputs are only there for commands.
        let c = Ctx::new();
        let mut e = Engine::new();
        let id = e.compile("{{ inputs[0] }}", Mode::Path).unwrap();
        assert_eq!(e.render(id, &c.ctx(false)), Err("`inputs` is undefined".to_string()));
        let id = e.compile("a\n{{ date }}\n{{ nope }}", Mode::Path).unwrap();
        assert_eq!(e.render(id, &c.ctx(false)), Err("`nope` is undefined (line 3)".to_string()));
        let mut out = String::from("keep");
        assert!(e.render_into(id, &c.ctx(false), &mut out).is_err());
        assert_eq!(out, "keep");
        assert!(e.render(TemplateId(99), &c.ctx(false)).is_err());
    }

    #[test]
    fn compile_errors_have_offsets() {
        let mut e = Engine::new();
        let src = "abc {{ date | }}";
        let err = e.compile(src, Mode::Path).unwrap_err();
        assert!(err.message.starts_with("bad template: syntax error"), "{}", err.message);
        // The `{{` of the tag at fault.
        assert_eq!(err.offset, Some(4), "{}", err.message);
        assert!(err.help.is_some());
        let src = "ok\n{% for x in y %}";
        let err = e.compile(src, Mode::Command).unwrap_err();
        assert_eq!(err.offset, Some(3), "{err:?}");
        assert_eq!(err.help.as_deref(), Some("close it with `{% endfor %}`"));
        let src = "{{ a b }}";
        let err = e.compile(src, Mode::Path).unwrap_err();
        assert_eq!(err.offset, Some(0), "{err:?}");
        let err = e.compile("echo ${#x} {# {{ x", Mode::Command).unwrap_err();
        assert_eq!((err.offset, err.len), (Some(14), 2), "{err:?}");
        // Failed compiles do not use up ids.
        let id = e.compile("x", Mode::Path).unwrap();
        assert_eq!(id, TemplateId(0));
        assert_eq!(e.source(id), "x");
        assert_eq!(e.source(TemplateId(7)), "");
    }

    #[test]
    fn segments_of_an_output_template() {
        let mut e = Engine::new();
        let id = e.compile("out/{{ date | strftime(\"%Y/%m\") }}/x-{{ region }}.csv", Mode::Path).unwrap();
        assert_eq!(
            e.segments(id).unwrap(),
            &[
                Segment::Lit("out/".into()),
                Segment::Expr { name: "date".into(), index: None, filters: vec![Filter::Strftime("%Y/%m".into())] },
                Segment::Lit("/x-".into()),
                Segment::Expr { name: "region".into(), index: None, filters: vec![] },
                Segment::Lit(".csv".into()),
            ]
        );
        assert_eq!(e.names(id), ["date", "region"]);
        let id = e
            .compile(
                "{{inputs[-2]|basename|raw}} {{ d|add_days( -1 )|add_months(2)|add_hours(0)|ds_nodash()|dirname }}",
                Mode::Command,
            )
            .unwrap();
        assert_eq!(
            e.segments(id).unwrap(),
            &[
                Segment::Expr { name: "inputs".into(), index: Some(-2), filters: vec![Filter::Basename, Filter::Raw] },
                Segment::Lit(" ".into()),
                Segment::Expr {
                    name: "d".into(),
                    index: None,
                    filters: vec![
                        Filter::AddDays(-1),
                        Filter::AddMonths(2),
                        Filter::AddHours(0),
                        Filter::DsNodash,
                        Filter::Dirname
                    ],
                },
            ]
        );
        assert_eq!(e.segments(TemplateId(42)), None);
    }

    #[test]
    fn what_goes_to_minijinja() {
        let slow = [
            "{% if true %}x{% endif %}",
            "{{# c #}}x",
            "{{ a + 1 }}",
            "{{ a | upper }}",
            "{{ a | days }}",
            "{{ a | hours }}",
            "{{ a.b }}",
            "{{- a }}",
            "{{ a -}}",
            "{{ a | raw | basename }}",
            "{{ a | strftime('%Y', 'x') }}",
            "{{ a | strftime(fmt) }}",
            "{{ a | add_days('1') }}",
            "{{ a | add_days(1.5) }}",
            "{{ a | add_days(01) }}",
            "{{ a | add_days(99999999999999999999) }}",
            "{{ a | strftime('%Y\\n') }}",
            "{{ a | basename(1) }}",
            "{{ true }}",
            "{{ none }}",
            "{{ date_range('2024-01-01', '2024-01-02') }}",
            "{{ a[b] }}",
            "{{ a['x'] }}",
            "{{ a[0][1] }}",
            "{{ 'lit' }}",
            "{{ a }}{% raw %}{{ b }}{% endraw %}",
        ];
        let mut e = Engine::new();
        for src in slow {
            let id = e.compile(src, Mode::Path).unwrap_or_else(|err| panic!("{src}: {err}"));
            assert!(e.segments(id).is_none(), "{src} should not be fast");
        }
        let fast = [
            "",
            "plain } { text }} ",
            "{{a}}",
            "{{ a }}{{ b }}",
            "{{\ta\n|\nraw\n}}",
            "{{ a | strftime('}}') }}",
            "{{ a | strftime(\"it's\") }}",
            "{{ a[0] }}",
            "{{ a [ -1 ] | basename }}",
            "{{ a | add_days(-9223372036854775808) }}",
            "x { y",
            "ends with {",
            "echo ${#x} {# y",
        ];
        for src in fast {
            let id = e.compile(src, Mode::Path).unwrap_or_else(|err| panic!("{src}: {err}"));
            assert!(e.segments(id).is_some(), "{src} should be fast");
        }
    }

    #[test]
    fn names_of_templates() {
        let mut e = Engine::new();
        let id = e
            .compile("{% set x = root %}{{ x }}/{{ date | add_days(1) }}{{ date_range(a, b) | days }}{% for i in inputs %}{{ i }}{% endfor %}", Mode::Command)
            .unwrap();
        assert!(e.segments(id).is_none());
        assert_eq!(e.names(id), ["a", "b", "date", "inputs", "root"]);
        let id = e.compile("{{ b }}{{ a }}{{ b | raw }}", Mode::Command).unwrap();
        assert_eq!(e.names(id), ["a", "b"]);
        assert!(e.names(TemplateId(999)).is_empty());
    }

    #[test]
    fn name_precedence_agrees() {
        // A var named like a param loses to the param; extras and built-ins win over both.
        let params = [("date", "2024-01-05".to_string()), ("step", "p".to_string())];
        let vars = [("date".to_string(), "var".to_string()), ("v".to_string(), "x".to_string())];
        let extra = [("attempt", "1".to_string()), ("v", "extra".to_string())];
        let ctx =
            Context { step: "s", task: "t", params: &params, vars: &vars, inputs: None, outputs: None, extra: &extra };
        let mut e = Engine::new();
        let src = "{{ date }} {{ step }} {{ v }} {{ attempt }} {{ vars.date }} {{ params.step }}";
        let id = e.compile(src, Mode::Path).unwrap();
        let fast = e.render(id, &ctx).unwrap();
        assert_eq!(fast, "2024-01-05 s extra 1 var p");
        let slow = e.render_slow(&e.templates[id.0 as usize], &ctx).unwrap();
        assert_eq!(fast, slow);
        let id = e.compile("{% for k in params %}{{ k }}={{ params[k] }};{% endfor %}", Mode::Path).unwrap();
        assert_eq!(e.render(id, &ctx).unwrap(), "date=2024-01-05;step=p;");
    }

    #[test]
    fn fast_and_minijinja_agree() {
        let templates = [
            "data/{{ date }}.csv",
            "{{ root }}/raw/{{ date }}.log",
            "out/{{ date | strftime(\"%Y/%m\") }}/x-{{ region }}.csv",
            "{{ date | strftime('%Y %m') }}",
            "{{ date | strftime('%Y') }}/{{ date | strftime('%j') }}",
            "{{ date | strftime('%b-%A') }}",
            "{{ date | strftime('%%') }}",
            "{{ date | strftime('') }}",
            "{{ date | add_days(-1) }}",
            "{{ date | add_days(400) | ds_nodash }}",
            "{{ date | add_months(1) | strftime('%Y%m%d') }}",
            "{{ hour | add_hours(-25) }} {{ hour | add_days(3) | ds_nodash }}",
            "{{ month | add_months(-14) }}",
            "{{ evil }} {{ sub }} {{ quote }} {{ empty }} {{ spaced }}",
            "{{ evil | raw }} {{ quote | raw }}",
            "{{ spaced | basename }} {{ spaced | dirname | raw }}",
            "{{ inputs }}",
            "{{ inputs | raw }}",
            "{{ inputs | basename }}",
            "{{ inputs | dirname | raw }}",
            "{{ inputs[0] }} {{ inputs[1] }} {{ inputs[-1] }} {{ outputs[0] }}",
            "{{ inputs[-3] | basename }}",
            "{{ step }}/{{ task }}/{{ attempt }}/{{ run_id }}",
            "line one\n{{ date }}\n\n",
            "{{ date | ds_nodash }}{{ hour | ds_nodash }}{{ month | ds_nodash }}",
            "}}{{ date }}{",
            "x{{date|add_days(1)|add_days(-1)}}y",
            "{{ date | add_days (1) }}{{ date|strftime ('%Y') }}",
            "{{ '{' }}",
            // These fall back at render time (errors or values the fast path leaves alone).
            "{{ nope }}",
            "{{ inputs[9] }}",
            "{{ date[0] }}",
            "{{ params }}",
            "{{ root | add_days(1) }}",
            "{{ inputs | add_days(1) }}",
            "{{ date | strftime('%Q') }}",
            "{{ '9999-12-31' | add_days(1) }}",
            "{{ attempt | ds_nodash }}",
        ];
        let c = Ctx::new();
        for with_lists in [true, false] {
            let ctx = c.ctx(with_lists);
            for mode in [Mode::Path, Mode::Command] {
                let mut e = Engine::new();
                for src in templates {
                    let id = e.compile(src, mode).unwrap_or_else(|err| panic!("{src}: {err}"));
                    let entry = &e.templates[id.0 as usize];
                    let mut fast_out = String::new();
                    let fast = entry
                        .segments
                        .as_ref()
                        .and_then(|s| render_fast(s, &entry.formats, mode, &ctx, &mut fast_out))
                        .map(|()| fast_out);
                    let slow = e.render_slow(entry, &ctx);
                    if let Some(f) = &fast {
                        assert_eq!(Ok(f), slow.as_ref(), "{src} ({mode:?}, lists: {with_lists})");
                    }
                    assert_eq!(e.render(id, &ctx), slow, "{src}");
                }
            }
        }
        // The simple shapes really take the fast path.
        let mut e = Engine::new();
        for src in &templates[..28] {
            let id = e.compile(src, Mode::Command).unwrap();
            let segs = e.segments(id).unwrap_or_else(|| panic!("{src} not fast"));
            let formats = compile_formats(segs);
            let mut out = String::new();
            assert!(render_fast(segs, &formats, Mode::Command, &c.ctx(true), &mut out).is_some(), "{src}");
        }
    }

    #[test]
    fn fast_and_minijinja_agree_on_many_values() {
        // Every value shape, with every fast filter, in both modes.
        let values = [
            "2024-01-05",
            "2024-02-29",
            "2023-12-31",
            "0000-01-01",
            "9999-12-31",
            "2024-03-01T00",
            "2024-12-31T23",
            "2024-02",
            "0000-01",
            "9999-12",
            "a b",
            "",
            "x'y",
            "dir/",
            "/",
            "a/b/c",
            "s3://b/k",
            "$(x)",
            "-1",
            "12",
            "é/ü",
        ];
        let filters = [
            "",
            "| add_days(1)",
            "| add_days(-31)",
            "| add_hours(5)",
            "| add_months(1)",
            "| add_months(-13)",
            "| strftime('%Y/%m/%d %H')",
            "| strftime('%Y-%m')",
            "| ds_nodash",
            "| basename",
            "| dirname",
            "| raw",
            "| add_days(1) | raw",
            "| dirname | basename",
        ];
        for mode in [Mode::Path, Mode::Command] {
            let mut e = Engine::new();
            for v in values {
                let vars = vec![("v".to_string(), v.to_string())];
                let lists = vec![v.to_string(), format!("{v}/z")];
                let ctx = Context {
                    step: "s",
                    task: "t",
                    params: &[],
                    vars: &vars,
                    inputs: Some(&lists),
                    outputs: None,
                    extra: &[],
                };
                for f in filters {
                    for name in ["v", "inputs", "inputs[1]"] {
                        let src = format!("<{{{{ {name} {f} }}}}>");
                        let id = e.compile(&src, mode).unwrap();
                        let entry = &e.templates[id.0 as usize];
                        let segs = entry.segments.as_ref().unwrap_or_else(|| panic!("{src}"));
                        let mut out = String::new();
                        let fast = render_fast(segs, &entry.formats, mode, &ctx, &mut out).map(|()| out);
                        let slow = e.render_slow(entry, &ctx);
                        if let Some(fast) = fast {
                            assert_eq!(Ok(fast), slow, "{src} with {v:?} ({mode:?})");
                        } else {
                            assert!(slow.is_err(), "{src} with {v:?}: {slow:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn hand_written_strftime_agrees_with_chrono() {
        let formats = [
            "%Y",
            "%m",
            "%d",
            "%H",
            "%y",
            "%C",
            "%j",
            "%M%S",
            "%Y/%m/%d",
            "%Y-%m-%dT%H",
            "x%%y",
            "%Y%m%d%H",
            "dt=%Y-%m-%d/hr=%H",
            "",
            "%%",
            "ünï %Y",
        ];
        let values: Vec<ParamValue> =
            ["0000-01-01", "0099-12-31", "1900-02-28", "2000-02-29", "2024-12-31", "9999-12-31"]
                .iter()
                .flat_map(|d| {
                    [
                        ParamKind::Date.parse(d).unwrap(),
                        ParamKind::Hour.parse(&format!("{d}T07")).unwrap(),
                        ParamKind::Month.parse(&d[..7]).unwrap(),
                    ]
                })
                .chain((0..3000).map(|i| ParamValue::Hour(i * 997 - 900_000)))
                .collect();
        for fmt in formats {
            let fast = TimeFormat::compile(fmt);
            assert!(matches!(fast, TimeFormat::Fast(_)), "{fmt}");
            let slow = TimeFormat::Chrono(fmt.to_owned());
            for v in &values {
                let (mut a, mut b) = (String::new(), String::new());
                fast.write(*v, &mut a).unwrap();
                slow.write(*v, &mut b).unwrap();
                assert_eq!(a, b, "{fmt} {v:?}");
            }
        }
        assert!(TimeFormat::compile("%Y/%m").shell_safe());
        assert!(!TimeFormat::compile("%Y %m").shell_safe());
        assert!(!TimeFormat::compile("").shell_safe());
        assert!(matches!(TimeFormat::compile("%A"), TimeFormat::Chrono(_)));
        assert!(matches!(TimeFormat::compile("%-d"), TimeFormat::Chrono(_)));
        assert!(matches!(TimeFormat::compile("%"), TimeFormat::Chrono(_)));
        let mut out = String::from(">");
        assert_eq!(strftime("2021-11-27T13", "%Y%m%d%H", &mut out), Ok(()));
        assert_eq!(strftime("2021-11", "%d %B", &mut out), Ok(()));
        assert!(strftime("2021-11", "%Q", &mut out).is_err());
        assert!(strftime("nope", "%Y", &mut out).is_err());
        assert_eq!(out, ">202111271301 November");
    }

    #[test]
    fn fast_render_is_fast() {
        let c = Ctx::new();
        let ctx = c.ctx(false);
        let mut e = Engine::new();
        let id = e.compile("data/{{ date }}.csv", Mode::Path).unwrap();
        let n = 200_000;
        let start = std::time::Instant::now();
        let mut total = 0;
        for _ in 0..n {
            total += e.render(id, &ctx).map_or(0, |s| s.len());
        }
        let per = start.elapsed() / n;
        assert_eq!(total, 19 * n as usize);
        // Generous even for an unoptimised test build on a busy machine.
        assert!(per < std::time::Duration::from_micros(5), "{per:?} per render");
    }

    #[test]
    fn trailing_newlines_are_kept() {
        assert_eq!(path("{{ date }}\n"), "2024-01-05\n");
        assert_eq!(path("{% if true %}a{% endif %}\n"), "a\n");
    }

    #[test]
    fn the_checked_names_are_the_registered_ones() {
        let e = Engine::new();
        let run = |src: &str| e.env.render_str(src, minijinja::context! { x => "2024-01-05" });
        for f in check::FILTERS {
            let r = run(&format!("{{{{ x | {f} }}}}"));
            assert!(!matches!(&r, Err(err) if err.kind() == ErrorKind::UnknownFilter), "{f}: {r:?}");
        }
        for f in check::QUOTING_FILTERS.iter().chain(&["nosuch", "urlencode"]) {
            let r = run(&format!("{{{{ x | {f} }}}}"));
            assert!(matches!(&r, Err(err) if err.kind() == ErrorKind::UnknownFilter), "{f}: {r:?}");
        }
        for t in check::TESTS {
            let r = run(&format!("{{% if x is {t} %}}{{% endif %}}"));
            assert!(!matches!(&r, Err(err) if err.kind() == ErrorKind::UnknownTest), "{t}: {r:?}");
        }
        for f in check::FUNCTIONS {
            assert!(e.env.globals().any(|(g, _)| g == *f), "{f}");
        }
    }

    #[test]
    fn tojson_is_quoted_in_commands() {
        let c = Ctx::new();
        let mut e = Engine::new();
        let id = e.compile("{{ params | tojson }}", Mode::Command).unwrap();
        let out = e.render(id, &c.ctx(false)).unwrap();
        assert!(out.starts_with("'{\"") && out.ends_with("}'"), "{out}");
        let id = e.compile("{{ evil | tojson }}", Mode::Path).unwrap();
        assert!(e.render(id, &c.ctx(false)).unwrap().starts_with('"'));
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Engine>();
    }
}
