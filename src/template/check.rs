//! Static checks of a template (SPEC §2.2), run once when it is compiled: what minijinja
//! itself would only find while rendering, or never.
//!
//! - In commands, shell quoting cannot be turned off except by `| raw`: `safe`, `escape`,
//!   `{% autoescape %}`, and every construct whose result is captured text (`{% set %}`
//!   blocks, `{% filter %}` blocks, macros, call blocks, recursive loops) are errors. Captured text is
//!   already quoted; minijinja marks it safe, and a filter applied to it could strip the
//!   quotes.
//! - Unknown filters, tests and functions are errors, with a "did you mean".
//! - Templates cannot include, import or extend other templates.
//!
//! It also reports what the Fluxfile loader checks against the step: the constant
//! subscripts of `inputs` and `outputs`, and where each free name is first read.
//!
//! Syntax errors are located here too: minijinja reports many of them where it noticed
//! (often the end of the text); [`locate_syntax_error`] finds the `{{`, `{%` or `{{#`
//! that opened the tag at fault.

use std::collections::HashSet;

use minijinja::machinery::ast::{CallArg, Expr, Stmt};
use minijinja::machinery::{Span as MjSpan, parse};
use minijinja::syntax::SyntaxConfig;

use super::Mode;
use crate::error::did_you_mean;

/// The comment delimiters: `{#` stays literal text so that `${#VAR}`, `${#arr[@]}` and
/// any `{#` survive in shell commands (SPEC §2.2).
pub const COMMENT_START: &str = "{{#";
/// The end of a comment.
pub const COMMENT_END: &str = "#}}";

/// Filters every template has: flux's and minijinja's builtins, without `safe` and
/// `escape`/`e` (quoting is not theirs to change). A unit test checks each is registered.
pub const FILTERS: &[&str] = &[
    // flux
    "add_days",
    "add_hours",
    "add_months",
    "add_weeks",
    "strftime",
    "ds_nodash",
    "basename",
    "dirname",
    "raw",
    "days",
    "hours",
    "tojson",
    // minijinja
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "first",
    "float",
    "format",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "trim",
    "unique",
    "upper",
    "zip",
];

/// Filters that would mark a value as not needing quotes.
pub const QUOTING_FILTERS: &[&str] = &["safe", "escape", "e"];

/// Tests (`x is defined`): minijinja's builtins.
pub const TESTS: &[&str] = &[
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "equalto",
    "escaped",
    "even",
    "false",
    "filter",
    "float",
    "ge",
    "greaterthan",
    "gt",
    "in",
    "int",
    "integer",
    "iterable",
    "le",
    "lessthan",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "safe",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "test",
    "true",
    "undefined",
    "upper",
];

/// Functions: flux's `date_range` and minijinja's globals.
pub const FUNCTIONS: &[&str] = &["date_range", "range", "dict", "namespace", "debug"];

/// Names callable without being defined by the template or the context.
const SPECIAL_CALLABLES: &[&str] = &["caller", "super", "loop", "self", "varargs", "kwargs"];

/// What a template does wrong: a message, a help line, and where (byte offsets into the
/// template source).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub offset: usize,
    pub len: usize,
    pub message: String,
    pub help: String,
}

/// What the loader checks against the step.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `inputs[N]` / `outputs[N]` with a constant N: (name, N, offset, length).
    pub indexes: Vec<(String, i64, usize, usize)>,
    /// Each name read as a variable, where it is first read (offset, length).
    pub reads: Vec<(String, usize, usize)>,
}

/// Checks a template that minijinja parsed without error.
pub fn check(source: &str, syntax: SyntaxConfig, mode: Mode) -> Result<Facts, Problem> {
    let ast = match parse(source, "<template>", syntax) {
        Ok(ast) => ast,
        // The environment accepted it, so this does not happen; minijinja reports it.
        Err(_) => return Ok(Facts::default()),
    };
    let mut w = Walker { source, mode, locals: HashSet::new(), facts: Facts::default() };
    w.collect_locals(&ast);
    w.stmt(&ast)?;
    Ok(w.facts)
}

struct Walker<'s> {
    source: &'s str,
    mode: Mode,
    /// Names the template binds itself (set, for, with, macro names and arguments).
    locals: HashSet<&'s str>,
    facts: Facts,
}

fn at(span: MjSpan, len: usize, message: String, help: impl Into<String>) -> Problem {
    Problem { offset: span.start_offset as usize, len, message, help: help.into() }
}

const RAW_HELP: &str = "values in commands are shell-quoted; use `| raw` to pass a value unquoted";

impl<'s> Walker<'s> {
    fn collect_locals(&mut self, s: &Stmt<'s>) {
        let bind = |w: &mut Walker<'s>, e: &Expr<'s>| w.bind(e);
        match s {
            Stmt::Template(t) => t.children.iter().for_each(|c| self.collect_locals(c)),
            Stmt::ForLoop(f) => {
                bind(self, &f.target);
                f.body.iter().chain(&f.else_body).for_each(|c| self.collect_locals(c));
            }
            Stmt::IfCond(i) => i.true_body.iter().chain(&i.false_body).for_each(|c| self.collect_locals(c)),
            Stmt::WithBlock(w) => {
                for (t, _) in &w.assignments {
                    bind(self, t);
                }
                w.body.iter().for_each(|c| self.collect_locals(c));
            }
            Stmt::Set(s) => bind(self, &s.target),
            Stmt::SetBlock(s) => {
                bind(self, &s.target);
                s.body.iter().for_each(|c| self.collect_locals(c));
            }
            Stmt::AutoEscape(a) => a.body.iter().for_each(|c| self.collect_locals(c)),
            Stmt::FilterBlock(f) => f.body.iter().for_each(|c| self.collect_locals(c)),
            Stmt::Macro(m) => {
                self.locals.insert(m.name);
                m.args.iter().for_each(|a| bind(self, a));
                m.body.iter().for_each(|c| self.collect_locals(c));
            }
            Stmt::CallBlock(c) => {
                c.macro_decl.args.iter().for_each(|a| bind(self, a));
                c.macro_decl.body.iter().for_each(|b| self.collect_locals(b));
            }
            Stmt::Block(b) => b.body.iter().for_each(|c| self.collect_locals(c)),
            _ => {}
        }
    }

    fn bind(&mut self, e: &Expr<'s>) {
        match e {
            Expr::Var(v) => {
                self.locals.insert(v.id);
            }
            Expr::Tuple(t) => t.items.iter().for_each(|i| self.bind(i)),
            Expr::List(l) => l.items.iter().for_each(|i| self.bind(i)),
            _ => {}
        }
    }

    fn body(&mut self, stmts: &[Stmt<'s>]) -> Result<(), Problem> {
        stmts.iter().try_for_each(|s| self.stmt(s))
    }

    /// The span of a statement's keyword (`autoescape`, `set`, …): minijinja starts
    /// statement spans there.
    fn keyword(&self, span: MjSpan, word: &str) -> (MjSpan, usize) {
        let text = self.source.get(span.start_offset as usize..).unwrap_or("");
        let len = if text.starts_with(word) { word.len() } else { 1 };
        (span, len)
    }

    /// A statement that is not allowed: in commands (`only_commands`) or anywhere.
    fn refuse(&self, span: MjSpan, word: &str, message: String, help: &str) -> Problem {
        let (span, len) = self.keyword(span, word);
        at(span, len, message, help)
    }

    fn stmt(&mut self, s: &Stmt<'s>) -> Result<(), Problem> {
        let cmd = self.mode == Mode::Command;
        match s {
            Stmt::Template(t) => self.body(&t.children),
            Stmt::EmitExpr(e) => self.expr(&e.expr),
            Stmt::EmitRaw(_) => Ok(()),
            Stmt::ForLoop(f) => {
                if cmd && f.recursive {
                    return Err(self.refuse(
                        f.span(),
                        "for",
                        "a `recursive` loop is not allowed in a command: `loop(…)` returns text that is already \
                         shell-quoted, which a filter could then unquote"
                            .into(),
                        "write the loop without `recursive`",
                    ));
                }
                self.expr(&f.iter)?;
                if let Some(e) = &f.filter_expr {
                    self.expr(e)?;
                }
                self.body(&f.body)?;
                self.body(&f.else_body)
            }
            Stmt::IfCond(i) => {
                self.expr(&i.expr)?;
                self.body(&i.true_body)?;
                self.body(&i.false_body)
            }
            Stmt::WithBlock(w) => {
                for (_, e) in &w.assignments {
                    self.expr(e)?;
                }
                self.body(&w.body)
            }
            Stmt::Set(s) => self.expr(&s.expr),
            Stmt::SetBlock(b) => {
                if let Some(f) = &b.filter {
                    self.expr(f)?;
                }
                if cmd {
                    return Err(self.refuse(
                        b.span(),
                        "set",
                        "a `{% set %}…{% endset %}` block is not allowed in a command: it captures text that is \
                         already shell-quoted, which a filter could then unquote"
                            .into(),
                        "set the value with an expression: `{% set x = … %}`",
                    ));
                }
                self.body(&b.body)
            }
            Stmt::AutoEscape(a) => Err(if cmd {
                self.refuse(
                    a.span(),
                    "autoescape",
                    "`{% autoescape %}` would turn off shell quoting in a command".into(),
                    RAW_HELP,
                )
            } else {
                self.refuse(
                    a.span(),
                    "autoescape",
                    "`{% autoescape %}` is not available in flux templates (paths and env values are never quoted)"
                        .into(),
                    "remove it",
                )
            }),
            Stmt::FilterBlock(f) => {
                self.expr(&f.filter)?;
                if cmd {
                    return Err(self.refuse(
                        f.span(),
                        "filter",
                        "a `{% filter %}` block is not allowed in a command: it captures text that is already \
                         shell-quoted, which the filter could then unquote"
                            .into(),
                        "apply the filter to the value instead: `{{ v | upper }}`",
                    ));
                }
                self.body(&f.body)
            }
            Stmt::Macro(m) => {
                if cmd {
                    return Err(self.refuse(
                        m.span(),
                        "macro",
                        "macros are not allowed in commands: a macro returns text that is already shell-quoted, \
                         which a filter could then unquote"
                            .into(),
                        "write the command out, or use `{% set x = … %}` and `{% for %}`",
                    ));
                }
                m.defaults.iter().try_for_each(|d| self.expr(d))?;
                self.body(&m.body)
            }
            Stmt::CallBlock(c) => {
                if cmd {
                    return Err(self.refuse(
                        c.span(),
                        "call",
                        "`{% call %}` blocks are not allowed in commands: they pass text that is already \
                         shell-quoted, which a filter could then unquote"
                            .into(),
                        "write the command out, or use `{% set x = … %}` and `{% for %}`",
                    ));
                }
                self.call(&c.call.expr, &c.call.args, c.call.span())?;
                self.body(&c.macro_decl.body)
            }
            Stmt::Block(b) => Err(self.refuse(
                b.span(),
                "block",
                "`{% block %}` is not available in flux templates".into(),
                "remove it",
            )),
            Stmt::Extends(e) => Err(self.refuse(
                e.span(),
                "extends",
                "`{% extends %}` is not available in flux templates: a template cannot use another".into(),
                "write the text out",
            )),
            Stmt::Include(i) => Err(self.refuse(
                i.span(),
                "include",
                "`{% include %}` is not available in flux templates: a template cannot use another".into(),
                "write the text out",
            )),
            Stmt::Import(i) => Err(self.refuse(
                i.span(),
                "import",
                "`{% import %}` is not available in flux templates: a template cannot use another".into(),
                "write the text out",
            )),
            Stmt::FromImport(i) => Err(self.refuse(
                i.span(),
                "from",
                "`{% from … import %}` is not available in flux templates: a template cannot use another".into(),
                "write the text out",
            )),
            Stmt::Do(d) => self.call(&d.call.expr, &d.call.args, d.call.span()),
        }
    }

    fn args(&mut self, args: &[CallArg<'s>]) -> Result<(), Problem> {
        for a in args {
            match a {
                CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => {
                    self.expr(e)?
                }
            }
        }
        Ok(())
    }

    fn call(&mut self, callee: &Expr<'s>, args: &[CallArg<'s>], span: MjSpan) -> Result<(), Problem> {
        match callee {
            Expr::Var(v)
                if !self.locals.contains(v.id) && !FUNCTIONS.contains(&v.id) && !SPECIAL_CALLABLES.contains(&v.id) =>
            {
                let help = match did_you_mean(v.id, FUNCTIONS.iter().copied()) {
                    Some(d) => format!("did you mean `{d}`?"),
                    None => format!(
                        "the functions are `{}`; a value is transformed with a filter: `x | name`",
                        FUNCTIONS.join("`, `")
                    ),
                };
                return Err(at(v.span(), v.id.len(), format!("unknown function `{}`", v.id), help));
            }
            Expr::GetAttr(g) if !matches!(g.name, "cycle" | "changed") => {
                let off = self.attr_offset(g.span(), g.name);
                let help = if FILTERS.contains(&g.name) {
                    format!("use the filter: `… | {}`", g.name)
                } else {
                    "use a filter: `x | name`; see docs/fluxfile.md#templates".to_owned()
                };
                let _ = span;
                return Err(Problem {
                    offset: off,
                    len: g.name.len(),
                    message: format!("values have no method `{}` in flux templates", g.name),
                    help,
                });
            }
            _ => {}
        }
        self.expr(callee)?;
        self.args(args)
    }

    /// Where `.name` is written inside an attribute expression's span.
    fn attr_offset(&self, span: MjSpan, name: &str) -> usize {
        let (s, e) = (span.start_offset as usize, span.end_offset as usize);
        self.source.get(s..e.min(self.source.len())).and_then(|t| t.rfind(name)).map_or(s, |i| s + i)
    }

    fn expr(&mut self, e: &Expr<'s>) -> Result<(), Problem> {
        match e {
            Expr::Var(v) => {
                if !self.facts.reads.iter().any(|(n, ..)| n == v.id) {
                    let sp = v.span();
                    self.facts.reads.push((v.id.to_owned(), sp.start_offset as usize, v.id.len()));
                }
                Ok(())
            }
            Expr::Const(_) => Ok(()),
            Expr::Slice(s) => {
                self.expr(&s.expr)?;
                for x in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(x)?;
                }
                Ok(())
            }
            Expr::UnaryOp(u) => self.expr(&u.expr),
            Expr::BinOp(b) => {
                self.expr(&b.left)?;
                self.expr(&b.right)
            }
            Expr::Compare(c) => {
                self.expr(&c.expr)?;
                c.ops.iter().try_for_each(|o| self.expr(&o.expr))
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr)?;
                self.expr(&i.true_expr)?;
                if let Some(f) = &i.false_expr {
                    self.expr(f)?;
                }
                Ok(())
            }
            Expr::Filter(f) => {
                if let Some(inner) = &f.expr {
                    self.expr(inner)?;
                }
                let span = f.span();
                if QUOTING_FILTERS.contains(&f.name) {
                    return Err(if self.mode == Mode::Command {
                        at(
                            span,
                            f.name.len(),
                            format!("`| {}` would turn off shell quoting in a command", f.name),
                            RAW_HELP,
                        )
                    } else {
                        at(
                            span,
                            f.name.len(),
                            format!(
                                "`| {}` is not available in flux templates (paths and env values are never quoted)",
                                f.name
                            ),
                            "remove it",
                        )
                    });
                }
                if !FILTERS.contains(&f.name) {
                    let help = match did_you_mean(f.name, FILTERS.iter().copied()) {
                        Some(d) => format!("did you mean `{d}`?"),
                        None => "see the filters in docs/fluxfile.md#templates".to_owned(),
                    };
                    return Err(at(span, f.name.len(), format!("unknown filter `{}`", f.name), help));
                }
                self.args(&f.args)
            }
            Expr::Test(t) => {
                self.expr(&t.expr)?;
                if !TESTS.contains(&t.name) {
                    let help = match did_you_mean(t.name, TESTS.iter().copied()) {
                        Some(d) => format!("did you mean `{d}`?"),
                        None => "see minijinja's tests (`x is defined`, `x is none`, …)".to_owned(),
                    };
                    return Err(at(t.span(), t.name.len(), format!("unknown test `{}`", t.name), help));
                }
                self.args(&t.args)
            }
            Expr::GetAttr(g) => self.expr(&g.expr),
            Expr::GetItem(g) => {
                if let (Expr::Var(v), Some(n)) = (&g.expr, const_int(&g.subscript_expr))
                    && matches!(v.id, "inputs" | "outputs")
                    && !self.locals.contains(v.id)
                {
                    let sp = g.span();
                    let len = (sp.end_offset - sp.start_offset) as usize;
                    self.facts.indexes.push((v.id.to_owned(), n, sp.start_offset as usize, len));
                }
                self.expr(&g.expr)?;
                self.expr(&g.subscript_expr)
            }
            Expr::Call(c) => self.call(&c.expr, &c.args, c.span()),
            Expr::List(l) => l.items.iter().try_for_each(|i| self.expr(i)),
            Expr::Tuple(t) => t.items.iter().try_for_each(|i| self.expr(i)),
            Expr::Map(m) => {
                m.keys.iter().try_for_each(|k| self.expr(k))?;
                m.values.iter().try_for_each(|v| self.expr(v))
            }
        }
    }
}

fn const_int(e: &Expr<'_>) -> Option<i64> {
    e.as_const().and_then(|v| i64::try_from(v).ok())
}

// ---------------------------------------------------------------------------------------
// Locating syntax errors
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum TagKind {
    Var,
    Block,
    Comment,
}

#[derive(Debug)]
struct Tag {
    start: usize,
    open: usize,
    /// The offset just past the closing delimiter; None when the tag is not closed.
    end: Option<usize>,
    kind: TagKind,
    /// A block's keyword (`if`, `endfor`, …).
    word: String,
    /// A `{% set %}` without `=`: a block.
    set_block: bool,
}

/// The tags of a template, as far as they can be found.
fn tags(src: &str) -> Vec<Tag> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] != b'{' || !matches!(b[i + 1], b'{' | b'%') {
            i += 1;
            continue;
        }
        let (kind, open, close) = if src[i..].starts_with(COMMENT_START) {
            (TagKind::Comment, COMMENT_START.len(), COMMENT_END)
        } else if b[i + 1] == b'{' {
            (TagKind::Var, 2, "}}")
        } else {
            (TagKind::Block, 2, "%}")
        };
        let body_start = i + open;
        let end = match kind {
            TagKind::Comment => src[body_start..].find(close).map(|p| body_start + p + close.len()),
            _ => find_close(src, body_start, close),
        };
        let inner = &src[body_start..end.map_or(src.len(), |e| e - close.len())];
        let inner = inner.trim_start_matches(['-', '+', '~']).trim();
        let word: String = inner.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let set_block = kind == TagKind::Block && word == "set" && !has_assign(inner);
        let is_raw = kind == TagKind::Block && word == "raw";
        out.push(Tag { start: i, open, end, kind, word, set_block });
        let Some(e) = end else { break };
        i = e;
        if is_raw {
            // Literal text up to `{% endraw %}`.
            match find_endraw(src, i) {
                Some(p) => i = p,
                None => break,
            }
        }
    }
    out
}

/// Whether a `set` tag's text assigns (`set x = 1`), as opposed to opening a block.
fn has_assign(inner: &str) -> bool {
    let mut quote = None;
    let mut prev = ' ';
    for (k, c) in inner.char_indices() {
        match quote {
            Some(q) if c == q && prev != '\\' => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '=' => {
                let next = inner[k + 1..].chars().next();
                if !matches!(prev, '=' | '!' | '<' | '>') && next != Some('=') {
                    return true;
                }
            }
            None => {}
        }
        prev = c;
    }
    false
}

fn find_endraw(src: &str, from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(p) = src[i..].find("{%") {
        let at = i + p;
        let rest = src[at + 2..].trim_start_matches(['-', '+', '~']).trim_start();
        if rest.starts_with("endraw") {
            return Some(at);
        }
        i = at + 2;
    }
    None
}

/// The offset past `close`, skipping quoted strings.
fn find_close(src: &str, from: usize, close: &str) -> Option<usize> {
    let b = src.as_bytes();
    let mut i = from;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= b.len() {
                    return None;
                }
                i += 1;
            }
            _ if src[i..].starts_with(close) => return Some(i + close.len()),
            _ => i += 1,
        }
    }
    None
}

/// Where a syntax error is: the `{{`, `{%` or `{{#` of the tag at fault (offset, length),
/// and a help line. `offset` is where minijinja noticed it, when it said.
pub fn locate_syntax_error(src: &str, offset: Option<usize>, message: &str) -> Option<(usize, usize, String)> {
    let tags = tags(src);
    let off = offset.unwrap_or(src.len()).min(src.len());
    let help = |t: &Tag| -> String {
        match (t.kind, t.end) {
            (TagKind::Var, None) => "close it with `}}`; to write `{{` itself in a command, use {{ '{{' }}".to_owned(),
            (TagKind::Block, None) => {
                "close it with `%}`; to write `{%` itself in a command (as in printf '{%s}'), use {{ '{%' }}".to_owned()
            }
            (TagKind::Comment, None) => format!("close the comment with `{COMMENT_END}`"),
            (TagKind::Block, Some(_)) if message.contains("end of input") || message.contains("expected end") => {
                format!("close it with `{{% end{} %}}`", t.word)
            }
            _ => "see docs/fluxfile.md#templates: `{{ value }}`, `{% if … %}…{% endif %}`, comments `{{# … #}}`; \
                  a literal `{{` or `{%` is written {{ '{{' }} or {{ '{%' }}"
                .to_owned(),
        }
    };
    // A tag that is not closed.
    if let Some(t) = tags.iter().find(|t| t.end.is_none()) {
        return Some((t.start, t.open, help(t)));
    }
    // A block that is never ended (`{% if %}` without `{% endif %}`).
    if message.contains("end of input") {
        let mut stack: Vec<&Tag> = Vec::new();
        for t in tags.iter().filter(|t| t.kind == TagKind::Block) {
            let w = t.word.as_str();
            if let Some(opened) = w.strip_prefix("end") {
                if stack.last().is_some_and(|o| o.word == opened) {
                    stack.pop();
                }
            } else if matches!(w, "if" | "for" | "with" | "filter" | "macro" | "call" | "autoescape" | "block" | "raw")
                || t.set_block
            {
                stack.push(t);
            }
        }
        if let Some(t) = stack.last() {
            return Some((t.start, t.open, format!("close it with `{{% end{} %}}`", t.word)));
        }
    }
    // The tag that contains the error.
    if let Some(t) = tags.iter().rev().find(|t| t.start <= off)
        && t.end.is_none_or(|e| off < e)
    {
        return Some((t.start, t.open, help(t)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax() -> SyntaxConfig {
        SyntaxConfig::builder().comment_delimiters(COMMENT_START, COMMENT_END).build().unwrap()
    }

    fn problem(src: &str, mode: Mode) -> Option<Problem> {
        check(src, syntax(), mode).err()
    }

    #[test]
    fn quoting_cannot_be_turned_off() {
        for (src, at) in [
            ("echo {{ v | safe }}", "safe"),
            ("echo {{ v|e }}", "e }}"),
            ("echo {{ v | escape | replace('x', 'y') }}", "escape"),
            ("{% autoescape false %}{{ v }}{% endautoescape %}", "autoescape"),
            ("{% autoescape 'html' %}{{ v }}{% endautoescape %}", "autoescape"),
            ("{% filter safe %}{{ v }}{% endfilter %}", "safe"),
            ("{% filter upper %}{{ v }}{% endfilter %}", "filter"),
            ("{% set x %}'{% endset %}{{ x }}", "set"),
            ("{% set x | safe %}{{ v }}{% endset %}", "safe"),
            ("{% macro m() %}{{ v }}{% endmacro %}{{ m() }}", "macro"),
            ("{% include 'path:0' %}", "include"),
            ("{% for i in [v] recursive %}{{ loop([i]) | trim }}{% endfor %}", "for"),
            ("{% if true %}{% for i in inputs %}{{ i | safe }}{% endfor %}{% endif %}", "safe"),
        ] {
            let p = problem(src, Mode::Command).unwrap_or_else(|| panic!("{src} passes"));
            assert!(src[p.offset..].starts_with(at), "{src}: at {} ({p:?})", p.offset);
        }
        let p = problem("echo {{ v | safe }}", Mode::Command).unwrap();
        assert!(p.help.contains("| raw"), "{p:?}");
        assert!(problem("{{ v | safe }}", Mode::Path).is_some());
        assert!(problem("{% set x %}a{% endset %}{{ x }}", Mode::Path).is_none());
        assert!(problem("{% set x = v ~ 'a' %}{{ x | raw }} {{ v | raw | upper }}", Mode::Command).is_none());
    }

    #[test]
    fn unknown_names() {
        let p = problem("ls {{ date | nosuchfilter }}", Mode::Command).unwrap();
        assert_eq!((p.offset, p.len, p.message.as_str()), (13, 12, "unknown filter `nosuchfilter`"));
        let p = problem("{{ date | strftme('%Y') }}", Mode::Path).unwrap();
        assert_eq!(p.help, "did you mean `strftime`?");
        let p = problem("{{ date | add_day(1) }}", Mode::Path).unwrap();
        assert_eq!(p.help, "did you mean `add_days`?");
        let p = problem("{% if x is defind %}{% endif %}", Mode::Path).unwrap();
        assert_eq!((p.message.as_str(), p.help.as_str()), ("unknown test `defind`", "did you mean `defined`?"));
        let p = problem("{{ date_rang(a, b) | days }}", Mode::Path).unwrap();
        assert_eq!((p.offset, p.help.as_str()), (3, "did you mean `date_range`?"));
        let p = problem("{{ v.upper() }}", Mode::Path).unwrap();
        assert_eq!((p.offset, p.len), (5, 5));
        for ok in [
            "{{ date_range(a, b) | days | join(' ') }}",
            "{% set f = namespace(x=1) %}{{ f.x }}{{ range(3) | list | length }}",
            "{% for i in inputs %}{{ loop.cycle('a', 'b') }}{% endfor %}",
            "{{ params | tojson }} {{ x | default('y') | upper }}",
            "{% if x is defined and x is not none %}{% endif %}",
        ] {
            assert_eq!(problem(ok, Mode::Command), None, "{ok}");
        }
        let p = problem("{% macro m() %}x{% endmacro %}{{ m() }}{{ n() }}", Mode::Path).unwrap();
        assert_eq!(p.message, "unknown function `n`");
    }

    #[test]
    fn facts() {
        let f = check("{{ outputs[1] }} {{ inputs[-1] }} {{ x }}{{ x }} {{ y[0] }}", syntax(), Mode::Command).unwrap();
        assert_eq!(f.indexes, [("outputs".to_owned(), 1, 3, 10), ("inputs".to_owned(), -1, 20, 10)]);
        let reads: Vec<_> = f.reads.iter().map(|(n, o, _)| (n.as_str(), *o)).collect();
        assert_eq!(reads, [("outputs", 3), ("inputs", 20), ("x", 37), ("y", 52)]);
    }

    #[test]
    fn syntax_errors_point_at_their_tag() {
        for (src, off, at) in [
            ("echo {{ x", None, "{{ x"),
            ("echo {{ x }} {% if y %}a", None, "{% if"),
            ("printf '{%s}' {{ x }}", Some(10), "{%s"),
            ("a {{# note", None, "{{#"),
            ("{{ x }} {{ y + }} z", Some(15), "{{ y"),
            ("{% raw %}{{ {% endraw %} {{ x", None, "{{ x"),
            ("{% set a %}x", None, "{% set a"),
            ("{% for i in x %}{{ i }}", Some(19), "{% for"),
        ] {
            let (o, len, help) = locate_syntax_error(src, off, "unexpected end of input").unwrap();
            assert!(src[o..].starts_with(at), "{src}: {o}");
            assert!(len == 2 || len == 3);
            assert!(!help.is_empty());
        }
        assert_eq!(locate_syntax_error("{{ x }}", Some(7), "odd"), None);
    }
}
