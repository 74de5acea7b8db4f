//! Build events and where they are shown. Core code sends [`Event`]s to a [`Reporter`] and
//! never prints: on a terminal a progress bar (indicatif) with done/running/failed, the
//! current tasks and an ETA; otherwise (a pipe, or `CI` set) one plain line per finished
//! task. Everything goes to stderr, so stdout stays for results (`--output json`, dry
//! runs, the summary), which the functions at the end of this file print.
//!
//! The counters (`[n/N]`, the bar) count only the tasks that run: each task found up to
//! date (or upstream failed) takes one off the planned total, so forcing 1,000 tasks of
//! 10,000 starts at 0 of 1,000.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Something that happened during a build.
pub enum Event<'a> {
    /// Planning is done: `total` tasks to check.
    Planned {
        total: usize,
    },
    Started {
        id: &'a str,
        reason: &'a str,
        attempt: u32,
        /// With `-p`: the commands, exactly as `sh -c` receives them.
        commands: Option<&'a [String]>,
    },
    Succeeded {
        id: &'a str,
        reason: &'a str,
        duration: Duration,
    },
    Failed {
        id: &'a str,
        message: &'a str,
        log: Option<&'a str>,
    },
    /// Waiting for a missing source or a sensor.
    Waiting {
        id: &'a str,
        message: &'a str,
    },
    Retrying {
        id: &'a str,
        attempt: u32,
        delay: Duration,
        message: &'a str,
    },
    Skipped {
        id: &'a str,
    },
    UpstreamFailed {
        id: &'a str,
    },
    Interrupting,
    Warning(&'a str),
}

pub trait Reporter {
    fn event(&mut self, e: Event<'_>);
    /// Called once at the end, before the summary is printed.
    fn finish(&mut self) {}
    /// Where `--stream` sends the commands' output: a function that prints whole lines
    /// (already prefixed with their task id) at once, callable from any thread.
    fn line_sink(&self) -> Option<LineSink> {
        Some(Arc::new(|lines: &str| {
            let _ = std::io::stderr().lock().write_all(lines.as_bytes());
        }))
    }
}

/// Prints whole lines of task output (see [`Reporter::line_sink`]).
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

/// How much the reporter says.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    pub quiet: bool,
    pub color: bool,
    /// `-v`: also the tasks found up to date, and a line as each task starts.
    pub verbose: bool,
    /// `--log-lines`: how many last lines of a failed task's log to print under `FAIL`.
    pub log_lines: usize,
    /// `--stream`: task output is printed as it comes, so event lines must never sit in
    /// a buffer (a line would be printed whole, but late).
    pub stream: bool,
}

/// Picks the reporter for this stderr: a bar on a terminal (unless `CI` is set or quiet).
pub fn for_stderr(s: Settings) -> Box<dyn Reporter> {
    use std::io::IsTerminal;
    if s.quiet {
        return Box::new(Quiet { log_lines: s.log_lines });
    }
    if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
        Box::new(Bar::new(s))
    } else {
        Box::new(Plain { out: std::io::BufWriter::new(std::io::stderr()), counts: Counts::default(), s })
    }
}

/// Prints nothing but failures.
pub struct Quiet {
    log_lines: usize,
}

impl Reporter for Quiet {
    fn event(&mut self, e: Event<'_>) {
        if let Event::Failed { id, message, log } = e {
            eprint!("FAILED {id}: {message}{}\n{}", log_note(log), tail_text(log, self.log_lines));
        }
    }
}

/// The finished and the expected of the tasks that run.
#[derive(Debug, Default)]
struct Counts {
    done: usize,
    total: usize,
}

impl Counts {
    /// Returns true if the total changed.
    fn count(&mut self, e: &Event<'_>) -> bool {
        match e {
            Event::Planned { total } => self.total = *total,
            Event::Succeeded { .. } | Event::Failed { .. } => {
                self.done += 1;
                return false;
            }
            // Not to run after all: out of the total.
            Event::Skipped { .. } | Event::UpstreamFailed { .. } => self.total = self.total.saturating_sub(1),
            _ => return false,
        }
        true
    }
}

/// One line per finished task (and per wait, retry and warning), for pipes and CI.
pub struct Plain {
    out: std::io::BufWriter<std::io::Stderr>,
    counts: Counts,
    s: Settings,
}

impl Reporter for Plain {
    fn event(&mut self, e: Event<'_>) {
        self.counts.count(&e);
        let (done, total) = (self.counts.done, self.counts.total);
        let text = match &e {
            Event::Planned { .. } => return,
            Event::Started { id, reason, attempt, commands } => {
                if !self.s.verbose && commands.is_none() {
                    return;
                }
                started_text(id, reason, *attempt, *commands)
            }
            Event::Succeeded { id, reason, duration } => {
                format!("ok   {id} ({reason}) {:.2}s [{done}/{total}]\n", duration.as_secs_f64())
            }
            Event::Failed { id, message, log } => {
                format!("FAIL {id}: {message}{}\n{}", log_note(*log), tail_text(*log, self.s.log_lines))
            }
            Event::Retrying { id, attempt, delay, message } => {
                format!("retry {id}: {message}; attempt {attempt} in {:.0}s\n", delay.as_secs_f64())
            }
            Event::Skipped { id } => {
                if !self.s.verbose {
                    return;
                }
                format!("skip {id} (up to date)\n")
            }
            Event::Waiting { id, message } => format!("wait {id}: {message}\n"),
            Event::UpstreamFailed { id } => format!("skip {id}: upstream failed\n"),
            Event::Interrupting => "interrupted: stopping running tasks (press Ctrl-C again to kill them)\n".into(),
            Event::Warning(w) => format!("warning: {w}\n"),
        };
        // One write per event, so that streamed lines never land inside it.
        let _ = self.out.write_all(text.as_bytes());
        // Failures and warnings appear at once; routine lines may wait for the buffer.
        if self.s.stream
            || matches!(e, Event::Failed { .. } | Event::Interrupting | Event::Warning(_) | Event::Retrying { .. })
        {
            let _ = self.out.flush();
        }
    }
    fn finish(&mut self) {
        let _ = self.out.flush();
    }
}

/// A task's start (with `-v` or `-p`), with its commands under it when given.
fn started_text(id: &str, reason: &str, attempt: u32, commands: Option<&[String]>) -> String {
    let mut t =
        if attempt > 1 { format!("run  {id} (attempt {attempt})\n") } else { format!("run  {id} ({reason})\n") };
    for c in commands.unwrap_or_default() {
        t.push_str(&command_text(c, "    "));
    }
    t
}

/// A command as `-p` shows it: `$ ` before its first line, `> ` before the others (as a
/// shell's prompts), each line after `indent`.
pub fn command_text(cmd: &str, indent: &str) -> String {
    let mut t = String::with_capacity(cmd.len() + 8);
    for (i, line) in cmd.lines().enumerate() {
        t.push_str(indent);
        t.push_str(if i == 0 { "$ " } else { "> " });
        t.push_str(line);
        t.push('\n');
    }
    if t.is_empty() {
        t = format!("{indent}$ \n");
    }
    t
}

fn log_note(log: Option<&str>) -> String {
    log.map(|l| format!(" (log: {l})")).unwrap_or_default()
}

/// The last `n` lines of a failed task's log, indented, for under its `FAIL` line.
fn tail_text(log: Option<&str>, n: usize) -> String {
    let Some(tail) = log.and_then(|l| log_tail(l, n)) else { return String::new() };
    let mut t = String::with_capacity(tail.len() + 4 * n);
    for line in tail.lines() {
        t.push_str("    ");
        t.push_str(line);
        t.push('\n');
    }
    t
}

/// The last `n` lines of a log file (read from its end: a log may be large), or `None`
/// if it cannot be read.
pub fn log_tail(path: &str, n: usize) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    if n == 0 {
        return Some(String::new());
    }
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    // Enough for `n` long lines; a longer line is cut at its start.
    let want = (n as u64 * 1024).clamp(16 * 1024, 1024 * 1024).min(len);
    f.seek(SeekFrom::Start(len - want)).ok()?;
    let mut bytes = Vec::with_capacity(want as usize);
    f.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let start = body.rmatch_indices('\n').nth(n - 1).map_or(0, |(i, _)| i + 1);
    let mut tail = body[start..].to_string();
    if !tail.is_empty() {
        tail.push('\n');
    }
    Some(tail)
}

/// A progress bar with the running tasks.
pub struct Bar {
    bar: ProgressBar,
    running: Vec<String>,
    failed: usize,
    counts: Counts,
    s: Settings,
}

impl Bar {
    fn new(s: Settings) -> Bar {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
        let tpl = if s.color {
            "{spinner:.green} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} ETA {eta} {msg}"
        } else {
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(tpl) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        Bar { bar, running: Vec::new(), failed: 0, counts: Counts::default(), s }
    }
    fn update(&self) {
        let mut msg = format!("running {}", self.running.len());
        if self.failed > 0 {
            msg.push_str(&format!(", failed {}", self.failed));
        }
        if !self.running.is_empty() {
            let shown: Vec<&str> = self.running.iter().take(3).map(String::as_str).collect();
            msg.push_str(": ");
            msg.push_str(&shown.join(" "));
        }
        self.bar.set_message(msg);
    }
}

impl Reporter for Bar {
    fn event(&mut self, e: Event<'_>) {
        if self.counts.count(&e) {
            self.bar.set_length(self.counts.total as u64);
        }
        match e {
            Event::Planned { .. } => {}
            Event::Started { id, reason, attempt, commands } => {
                if self.s.verbose || commands.is_some() {
                    let text = started_text(id, reason, attempt, commands);
                    self.bar.println(text.trim_end_matches('\n'));
                }
                self.running.push(id.to_string());
                self.update();
            }
            Event::Succeeded { id, .. } => {
                self.running.retain(|r| r != id);
                self.bar.inc(1);
                self.update();
            }
            Event::Failed { id, message, log } => {
                self.running.retain(|r| r != id);
                self.failed += 1;
                self.bar.inc(1);
                let text = format!("FAIL {id}: {message}{}\n{}", log_note(log), tail_text(log, self.s.log_lines));
                self.bar.println(text.trim_end_matches('\n'));
                self.update();
            }
            Event::Retrying { id, attempt, delay, message } => {
                self.running.retain(|r| r != id);
                self.bar.println(format!("retry {id}: {message}; attempt {attempt} in {:.0}s", delay.as_secs_f64()));
                self.update();
            }
            Event::Skipped { id } => {
                if self.s.verbose {
                    self.bar.println(format!("skip {id} (up to date)"));
                }
            }
            Event::Waiting { id, message } => {
                self.running.retain(|r| r != id);
                self.bar.println(format!("wait {id}: {message}"));
                self.update();
            }
            Event::UpstreamFailed { id } => {
                self.bar.println(format!("skip {id}: upstream failed"));
            }
            Event::Interrupting => {
                self.bar.println("interrupted: stopping running tasks (press Ctrl-C again to kill them)")
            }
            Event::Warning(w) => self.bar.println(format!("warning: {w}")),
        }
    }
    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
    fn line_sink(&self) -> Option<LineSink> {
        // Above the bar, like every other line.
        let bar = self.bar.clone();
        Some(Arc::new(move |lines: &str| bar.println(lines.trim_end_matches('\n'))))
    }
}

/// Builds with more tasks than this end with a line per step (on stdout, above the total).
pub const STEP_SUMMARY_ABOVE: usize = 50;

/// One task of the summary on stdout.
pub struct TaskLine<'a> {
    pub id: &'a str,
    pub step: &'a str,
    /// The step's index in the Fluxfile (the per-step counts are kept by it).
    pub step_no: usize,
    /// A status of SPEC §8, or `would-run` in a dry run.
    pub status: &'a str,
    pub reason: Option<&'a str>,
    /// Dry runs: why it would wait or fail.
    pub message: Option<&'a str>,
    /// Dry runs: it would wait for a missing source rather than fail.
    pub waits: bool,
    /// Dry runs with `-p`: its commands.
    pub commands: Option<&'a [String]>,
}

/// "1 task", "2 tasks".
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

/// Per step: would run / ran, up to date, and the other outcomes, in first-seen order.
#[derive(Default)]
struct StepCounts<'a> {
    /// Step numbers in first-seen order.
    order: Vec<usize>,
    /// By step number: its name and counts.
    counts: Vec<Option<(&'a str, [usize; 6])>>,
}

/// Columns of [`StepCounts`]: index by outcome.
const RAN: usize = 0;
const UP_TO_DATE: usize = 1;
const FAILED: usize = 2;
const UPSTREAM: usize = 3;
const INTERRUPTED: usize = 4;
const WAITS: usize = 5;

impl<'a> StepCounts<'a> {
    fn add(&mut self, t: &TaskLine<'a>) {
        let col = match t.status {
            "success" => RAN,
            "would-run" if t.waits => WAITS,
            "would-run" if t.message.is_some() => FAILED,
            "would-run" => RAN,
            "skipped" => UP_TO_DATE,
            "failed" => FAILED,
            "upstream_failed" => UPSTREAM,
            "interrupted" => INTERRUPTED,
            _ => return,
        };
        if self.counts.len() <= t.step_no {
            self.counts.resize(t.step_no + 1, None);
        }
        let slot = &mut self.counts[t.step_no];
        if slot.is_none() {
            self.order.push(t.step_no);
        }
        slot.get_or_insert((t.step, [0; 6])).1[col] += 1;
    }

    fn rows(&self) -> impl Iterator<Item = &(&'a str, [usize; 6])> {
        self.order.iter().filter_map(|&s| self.counts[s].as_ref())
    }

    fn total(&self) -> [usize; 6] {
        self.rows().fold([0; 6], |mut a, (_, c)| {
            for (x, y) in a.iter_mut().zip(c) {
                *x += y;
            }
            a
        })
    }

    /// The outcomes of one row after the first two, where not zero.
    fn others(c: &[usize; 6], dry: bool) -> String {
        let words: [(usize, &str); 4] = if dry {
            [(WAITS, "would wait"), (FAILED, "would fail"), (UPSTREAM, ""), (INTERRUPTED, "")]
        } else {
            [(FAILED, "failed"), (UPSTREAM, "upstream failed"), (INTERRUPTED, "interrupted"), (WAITS, "")]
        };
        let mut t = String::new();
        for (col, word) in words {
            if c[col] > 0 && !word.is_empty() {
                t.push_str(&format!(", {} {word}", c[col]));
            }
        }
        t
    }

    fn write(&self, o: &mut dyn Write, dry: bool) {
        let width = self.rows().map(|(s, _)| s.len()).max().unwrap_or(0);
        for (step, c) in self.rows() {
            let first = if dry { "would run" } else { "ran" };
            let _ =
                writeln!(o, "{step:width$}  {} {first}, {} up to date{}", c[RAN], c[UP_TO_DATE], Self::others(c, dry));
        }
    }
}

/// A dry run on stdout: each task that would run (with `-v` also each up-to-date one),
/// with its reason and, with `-p`, its commands; a line per step for a large build; the
/// total.
pub fn dry_run_text<'a>(o: &mut dyn Write, tasks: impl Iterator<Item = TaskLine<'a>>, verbose: bool) {
    let mut steps = StepCounts::default();
    let mut n = 0;
    for t in tasks {
        n += 1;
        steps.add(&t);
        match t.status {
            "would-run" if t.waits => {
                let _ = writeln!(o, "would wait {}: {}", t.id, t.message.unwrap_or("missing source"));
            }
            "would-run" => {
                match (t.reason, t.message) {
                    (_, Some(m)) => {
                        let _ = writeln!(o, "would fail {}: {m}", t.id);
                    }
                    (why, None) => {
                        let _ = writeln!(o, "would run {} ({})", t.id, why.unwrap_or("missing source"));
                    }
                }
                for c in t.commands.unwrap_or_default() {
                    let _ = o.write_all(command_text(c, "    ").as_bytes());
                }
            }
            "skipped" if verbose => {
                let _ = writeln!(o, "up to date {}", t.id);
            }
            _ => {}
        }
    }
    if n > STEP_SUMMARY_ABOVE {
        steps.write(o, true);
    }
    let total = steps.total();
    let runs = total[RAN] + total[WAITS] + total[FAILED];
    let mut line = format!("dry run: {} would run", plural(runs, "task"));
    if total[WAITS] + total[FAILED] > 0 {
        let mut parts = Vec::new();
        if total[WAITS] > 0 {
            parts.push(format!("{} would wait for a source", total[WAITS]));
        }
        if total[FAILED] > 0 {
            parts.push(format!("{} would fail", total[FAILED]));
        }
        line.push_str(&format!(" ({})", parts.join(", ")));
    }
    let _ = writeln!(o, "{line}, {} up to date", total[UP_TO_DATE]);
}

/// A build's result on stdout: a line per step for a large build, then the total.
pub fn build_text<'a>(o: &mut dyn Write, tasks: impl Iterator<Item = TaskLine<'a>>, elapsed: Duration) {
    let mut steps = StepCounts::default();
    let mut n = 0;
    for t in tasks {
        n += 1;
        steps.add(&t);
    }
    if n > STEP_SUMMARY_ABOVE {
        steps.write(o, false);
    }
    let total = steps.total();
    let _ = writeln!(
        o,
        "{} ran, {} up to date{} ({:.2}s)",
        total[RAN],
        total[UP_TO_DATE],
        StepCounts::others(&total, false),
        elapsed.as_secs_f64()
    );
}
