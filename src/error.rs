//! Errors and how they look. Every error about a Fluxfile carries a [`Span`] and renders
//! like rustc: `error: …`, ` --> Fluxfile:LINE:COL`, the offending line, a caret under the
//! offending text and a `help:` line saying what to do. This module also owns the mapping
//! from error kinds to exit codes (SPEC §9): 2 for usage, Fluxfile and planning errors.
//!
//! It knows nothing about steps or tasks; other modules build [`Error`]s with their words.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// The text of one file flux read (a Fluxfile, an included file, or a generator's output).
#[derive(Debug)]
pub struct Source {
    /// How the file is named in messages: a path relative to the current folder when
    /// possible, or `generate: CMD` for a generator's output.
    pub name: String,
    /// The file's path on disk, when it has one.
    pub path: Option<PathBuf>,
    pub text: String,
}

/// A byte range in one [`Source`].
#[derive(Debug, Clone)]
pub struct Span {
    pub source: Arc<Source>,
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(source: &Arc<Source>, range: std::ops::Range<usize>) -> Span {
        Span { source: source.clone(), start: range.start, end: range.end }
    }

    /// A span inside this one (for a position within a string value), clamped to it.
    pub fn sub(&self, start: usize, end: usize) -> Span {
        let s = (self.start + start).min(self.end);
        let e = (self.start + end).clamp(s, self.end.max(s));
        Span { source: self.source.clone(), start: s, end: e }
    }

    /// The part of a TOML string value (this span, quotes included) at `start..start+len`
    /// of its decoded text `value`: escapes, `\` line continuations and the newline after
    /// an opening `"""`/`'''` are accounted for. The whole span when it cannot be mapped.
    pub fn within_string(&self, value: &str, start: usize, len: usize) -> Span {
        let raw = self.source.text.get(self.start..self.end).unwrap_or("");
        match (toml_offset(raw, value, start), toml_offset(raw, value, start + len.max(1))) {
            (Some(s), Some(e)) if e > s => self.sub(s, e),
            (Some(s), _) => self.sub(s, s + 1),
            _ => self.clone(),
        }
    }

    /// 1-based line and column (in characters) of the start.
    pub fn line_col(&self) -> (usize, usize) {
        let text = &self.source.text;
        let start = floor_boundary(text, self.start.min(text.len()));
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = text[line_start..start].chars().count() + 1;
        (line, col)
    }
}

/// The offset in `raw` (a TOML string with its quotes) of byte `off` of its decoded `value`.
fn toml_offset(raw: &str, value: &str, off: usize) -> Option<usize> {
    let (quote, multi) =
        ["\"\"\"", "'''", "\"", "'"].iter().find(|q| raw.starts_with(**q)).map(|q| (q.as_bytes()[0], q.len() == 3))?;
    let mut i = if multi { 3 } else { 1 };
    if multi {
        if raw[i..].starts_with("\r\n") {
            i += 2;
        } else if raw[i..].starts_with('\n') {
            i += 1;
        }
    }
    if quote == b'\'' {
        // Literal strings: no escapes.
        return (raw.get(i..i + value.len()) == Some(value) && off <= value.len()).then_some(i + off);
    }
    let b = raw.as_bytes();
    let mut d = 0;
    while d < off {
        if i >= b.len() {
            return None;
        }
        if b[i] != b'\\' {
            let c = raw[i..].chars().next()?;
            i += c.len_utf8();
            d += c.len_utf8();
            continue;
        }
        let next = *b.get(i + 1)?;
        match next {
            b' ' | b'\t' | b'\r' | b'\n' if multi => {
                // A line-ending backslash: it and the whitespace after it vanish.
                i += 1;
                while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
                    i += 1;
                }
            }
            b'u' | b'U' => {
                let n = if next == b'u' { 4 } else { 8 };
                let code = u32::from_str_radix(raw.get(i + 2..i + 2 + n)?, 16).ok()?;
                i += 2 + n;
                d += char::from_u32(code)?.len_utf8();
            }
            b'x' => {
                let code = u32::from_str_radix(raw.get(i + 2..i + 4)?, 16).ok()?;
                i += 4;
                d += char::from_u32(code)?.len_utf8();
            }
            _ => {
                i += 2;
                d += 1;
            }
        }
    }
    // A line continuation right here belongs before the character at `off`.
    while multi && b.get(i) == Some(&b'\\') && matches!(b.get(i + 1), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
    }
    (d == off).then_some(i)
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One diagnostic about a Fluxfile.
#[derive(Debug, Clone)]
pub struct Diag {
    pub message: String,
    pub span: Option<Span>,
    pub help: Option<String>,
}

impl Diag {
    pub fn new(message: impl Into<String>, span: Option<Span>) -> Diag {
        Diag { message: message.into(), span, help: None }
    }
    pub fn help(mut self, help: impl Into<String>) -> Diag {
        self.help = Some(help.into());
        self
    }
}

/// Every error flux reports. `run` renders it once, in one place.
#[derive(Debug)]
pub enum Error {
    /// The Fluxfile (or an included/generated file) is wrong. Exit 2.
    Fluxfile(Box<Diag>),
    /// Bad command-line input. Exit 2.
    Usage(String),
    /// Planning failed: cycle, two producers, ambiguous producer, bad param value. Exit 2.
    Plan(String),
    /// The state database cannot be used. Exit 2.
    State(String),
    /// Reading or writing something failed. Exit 1.
    Io(String),
    /// A bug in flux. Exit 1.
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn at(message: impl Into<String>, span: &Span) -> Error {
        Error::Fluxfile(Box::new(Diag::new(message, Some(span.clone()))))
    }
    pub fn at_help(message: impl Into<String>, span: &Span, help: impl Into<String>) -> Error {
        Error::Fluxfile(Box::new(Diag::new(message, Some(span.clone())).help(help)))
    }
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Fluxfile(_) | Error::Usage(_) | Error::Plan(_) | Error::State(_) => 2,
            Error::Io(_) | Error::Internal(_) => 1,
        }
    }

    /// The full text shown to the user, without a trailing newline. Long quoted text (a
    /// template, a value, a key) is shortened: see [`clip`].
    pub fn render(&self) -> String {
        match self {
            Error::Fluxfile(d) => render_diag(d),
            Error::Usage(m) | Error::Plan(m) | Error::State(m) | Error::Io(m) => {
                format!("error: {}", clip(m))
            }
            Error::Internal(m) => {
                format!("error: internal error (a bug in flux, please report it): {}", clip(m))
            }
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl From<crate::state::StateError> for Error {
    fn from(e: crate::state::StateError) -> Error {
        Error::State(e.to_string())
    }
}

/// The most characters of a source line a diagnostic shows; a longer line is cut to a
/// window around the column, with `…` where text was left out.
pub const MAX_SHOWN_LINE: usize = 200;

/// rustc-style rendering of one diagnostic.
pub fn render_diag(d: &Diag) -> String {
    let mut out = format!("error: {}", clip(&d.message));
    if let Some(span) = &d.span {
        let (line, col) = span.line_col();
        let text = &span.source.text;
        let start = floor_boundary(text, span.start.min(text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[line_start..].find('\n').map_or(text.len(), |i| line_start + i);
        let line_text = text[line_start..line_end].trim_end_matches('\r');
        let end = floor_boundary(text, span.end.clamp(start, line_start + line_text.len()));
        let width = text[start..end].chars().count().max(1);
        let (shown, caret_col) = line_window(line_text, col - 1);
        let width = width.min(MAX_SHOWN_LINE + 1 - caret_col.min(MAX_SHOWN_LINE)).max(1);
        let lno = line.to_string();
        let pad = " ".repeat(lno.len());
        let _ = write!(out, "\n{pad}--> {}:{line}:{col}", clip(&span.source.name));
        let _ = write!(out, "\n{pad} |\n{lno} | {}", shown.replace('\t', " "));
        let _ = write!(out, "\n{pad} | {}{}", " ".repeat(caret_col), "^".repeat(width));
        if let Some(h) = &d.help {
            let _ = write!(out, "\n{pad} = help: {}", clip(h));
        }
    } else if let Some(h) = &d.help {
        let _ = write!(out, "\n  = help: {}", clip(h));
    }
    out
}

/// The part of `line` shown under a diagnostic, and the caret's column in it (0-based,
/// in characters), for a span starting at character `col`: the whole line when it is at
/// most [`MAX_SHOWN_LINE`] characters, else a window of that many around the column.
fn line_window(line: &str, col: usize) -> (String, usize) {
    let n = line.chars().count();
    if n <= MAX_SHOWN_LINE {
        return (line.to_string(), col.min(n));
    }
    let col = col.min(n);
    let first = col.saturating_sub(MAX_SHOWN_LINE / 2).min(n - MAX_SHOWN_LINE);
    let last = first + MAX_SHOWN_LINE;
    let mut shown = String::with_capacity(MAX_SHOWN_LINE + 8);
    if first > 0 {
        shown.push('…');
    }
    shown.extend(line.chars().skip(first).take(MAX_SHOWN_LINE));
    if last < n {
        shown.push('…');
    }
    (shown, col - first + usize::from(first > 0))
}

/// The longest piece of quoted text (between backticks) a message shows whole.
const MAX_QUOTED: usize = 160;
/// The longest line of a message shown whole.
const MAX_MESSAGE_LINE: usize = 1000;

/// A message with long quoted text (a template, a value, a key name between backticks)
/// cut to its start and end around `…`, and any line longer than [`MAX_MESSAGE_LINE`]
/// characters cut, so that a 600 KB line in a Fluxfile never becomes a 600 KB message.
pub fn clip(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_QUOTED {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len().min(4 * MAX_MESSAGE_LINE));
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        let n = part.chars().count();
        if i % 2 == 1 && n > MAX_QUOTED {
            out.extend(part.chars().take(MAX_QUOTED - 30));
            out.push('…');
            out.extend(part.chars().skip(n - 20));
        } else {
            out.push_str(part);
        }
    }
    if out.lines().all(|l| l.chars().count() <= MAX_MESSAGE_LINE) {
        return std::borrow::Cow::Owned(out);
    }
    let mut cut = String::with_capacity(out.len().min(4 * MAX_MESSAGE_LINE));
    for (i, l) in out.split('\n').enumerate() {
        if i > 0 {
            cut.push('\n');
        }
        let n = l.chars().count();
        if n > MAX_MESSAGE_LINE {
            cut.extend(l.chars().take(MAX_MESSAGE_LINE));
            let _ = write!(cut, "… ({} more characters)", n - MAX_MESSAGE_LINE);
        } else {
            cut.push_str(l);
        }
    }
    std::borrow::Cow::Owned(cut)
}

/// "did you mean" for a misspelt name: the closest candidate within a small edit distance.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(name, c);
        let limit = (name.len().max(c.len()) / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal string alignment distance: Levenshtein plus the swap of two neighbours as one
/// edit, so `strat` is one edit from `start`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_caret_and_help() {
        let src = Arc::new(Source { name: "Fluxfile".into(), path: None, text: "[step.a]\ninptus = []\n".into() });
        let d =
            Diag::new("unknown key `inptus` in [step.a]", Some(Span::new(&src, 9..15))).help("did you mean `inputs`?");
        assert_eq!(
            render_diag(&d),
            "error: unknown key `inptus` in [step.a]\n --> Fluxfile:2:1\n  |\n2 | inptus = []\n  | ^^^^^^\n  = help: did you mean `inputs`?"
        );
    }

    #[test]
    fn positions_inside_toml_strings() {
        let text =
            "a = 'x {{ y }}'\nb = \"q\\\"{{ y }}\"\nc = \"\"\"\nl1 \\\n   {{ y }}\"\"\"\nd = \"\\u00e9{{ y }}\"\n";
        let src = Arc::new(Source { name: "F".into(), path: None, text: text.into() });
        let find = |key: &str, value: &str, off: usize| {
            let start = text.find(&format!("{key} = ")).unwrap() + 4;
            let end = text[start..].find('\n').map_or(text.len(), |e| start + e);
            let end = if key == "c" { text.find("\"\"\"\nd").unwrap() + 3 } else { end };
            let sp = Span::new(&src, start..end).within_string(value, off, 2);
            text[sp.start..sp.end].to_string()
        };
        assert_eq!(find("a", "x {{ y }}", 2), "{{");
        assert_eq!(find("b", "q\"{{ y }}", 2), "{{");
        assert_eq!(find("c", "l1 {{ y }}", 3), "{{");
        assert_eq!(find("d", "é{{ y }}", 2), "{{");
    }

    #[test]
    fn long_lines_are_shown_as_a_window_around_the_column() {
        let long = format!("run = \"{}{{{{ nope }}}}{}\"", "a".repeat(300_000), "b".repeat(300_000));
        let at = long.find("nope").unwrap_or(0);
        let src = Arc::new(Source { name: "Fluxfile".into(), path: None, text: format!("[step.a]\n{long}\n") });
        let d = Diag::new(format!("template reads `{long}`"), Some(Span::new(&src, 9 + at..9 + at + 4)));
        let r = render_diag(&d);
        assert!(r.len() < 1200, "{r}");
        assert!(r.contains(&format!(" --> Fluxfile:2:{}", at + 1)), "{r}");
        let lines: Vec<&str> = r.lines().collect();
        let (code, caret) = (lines[3], lines[4]);
        assert!(code.starts_with("2 | …") && code.ends_with('…'), "{r}");
        let ci = caret.find('^').unwrap_or(0);
        assert_eq!(code.chars().skip(ci).take(4).collect::<String>(), "nope", "{r}");
        assert_eq!(caret.matches('^').count(), 4);
        // Short lines are untouched; so are short messages.
        assert_eq!(line_window("abc", 1), ("abc".to_string(), 1));
        assert_eq!(clip("short `x`"), "short `x`");
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("inptus", ["inputs", "outputs"]), Some("inputs"));
        assert_eq!(did_you_mean("zzzzzz", ["inputs", "outputs"]), None);
        assert_eq!(did_you_mean("strat", ["start", "state", "jobs"]), Some("start"));
        assert_eq!(did_you_mean("laod", ["load", "test"]), Some("load"));
    }
}
