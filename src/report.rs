//! Build events and where they are shown. Core code sends [`Event`]s to a [`Reporter`] and
//! never prints: on a terminal a progress bar (indicatif) with done/running/failed, the
//! current tasks and an ETA; otherwise (a pipe, or `CI` set) one plain line per event.
//! Everything goes to stderr, so stdout stays for results (`--output json`, dry runs).

use std::io::Write;
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
    },
    Succeeded {
        id: &'a str,
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
}

/// Picks the reporter for this stderr: a bar on a terminal (unless `CI` is set or quiet).
/// `verbose` also lists the tasks found up to date, so every decision shows.
pub fn for_stderr(quiet: bool, color: bool, verbose: bool) -> Box<dyn Reporter> {
    use std::io::IsTerminal;
    if quiet {
        return Box::new(Quiet);
    }
    if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
        Box::new(Bar::new(color, verbose))
    } else {
        Box::new(Plain { out: std::io::BufWriter::new(std::io::stderr()), done: 0, total: 0, verbose })
    }
}

/// Prints nothing but failures.
pub struct Quiet;

impl Reporter for Quiet {
    fn event(&mut self, e: Event<'_>) {
        if let Event::Failed { id, message, log } = e {
            eprintln!("FAILED {id}: {message}{}", log.map(|l| format!(" (log: {l})")).unwrap_or_default());
        }
    }
}

/// One line per event, for pipes and CI.
pub struct Plain {
    out: std::io::BufWriter<std::io::Stderr>,
    done: usize,
    total: usize,
    verbose: bool,
}

impl Reporter for Plain {
    fn event(&mut self, e: Event<'_>) {
        let o = &mut self.out;
        let _ = match e {
            Event::Planned { total } => {
                self.total = total;
                Ok(())
            }
            Event::Started { id, reason, attempt } => {
                if attempt > 1 {
                    writeln!(o, "run  {id} (attempt {attempt})")
                } else {
                    writeln!(o, "run  {id} ({reason})")
                }
            }
            Event::Succeeded { id, duration } => {
                self.done += 1;
                writeln!(o, "ok   {id} {:.2}s [{}/{}]", duration.as_secs_f64(), self.done, self.total)
            }
            Event::Failed { id, message, log } => {
                self.done += 1;
                writeln!(o, "FAIL {id}: {message}{}", log.map(|l| format!(" (log: {l})")).unwrap_or_default())
            }
            Event::Retrying { id, attempt, delay, message } => {
                writeln!(o, "retry {id}: {message}; attempt {attempt} in {:.0}s", delay.as_secs_f64())
            }
            Event::Skipped { id } => {
                self.done += 1;
                if self.verbose { writeln!(o, "skip {id} (up to date)") } else { Ok(()) }
            }
            Event::Waiting { id, message } => writeln!(o, "wait {id}: {message}"),
            Event::UpstreamFailed { id } => {
                self.done += 1;
                writeln!(o, "skip {id}: upstream failed")
            }
            Event::Interrupting => writeln!(o, "interrupted: stopping running tasks (press Ctrl-C again to kill them)"),
            Event::Warning(w) => writeln!(o, "warning: {w}"),
        };
        // Failures and warnings appear at once; routine lines may wait for the buffer.
        if matches!(e, Event::Failed { .. } | Event::Interrupting | Event::Warning(_) | Event::Retrying { .. }) {
            let _ = o.flush();
        }
    }
    fn finish(&mut self) {
        let _ = self.out.flush();
    }
}

/// A progress bar with the running tasks.
pub struct Bar {
    bar: ProgressBar,
    running: Vec<String>,
    failed: usize,
    verbose: bool,
}

impl Bar {
    fn new(color: bool, verbose: bool) -> Bar {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
        let tpl = if color {
            "{spinner:.green} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} ETA {eta} {msg}"
        } else {
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(tpl) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        Bar { bar, running: Vec::new(), failed: 0, verbose }
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
        match e {
            Event::Planned { total } => self.bar.set_length(total as u64),
            Event::Started { id, .. } => {
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
                self.bar.println(format!(
                    "FAIL {id}: {message}{}",
                    log.map(|l| format!(" (log: {l})")).unwrap_or_default()
                ));
                self.update();
            }
            Event::Retrying { id, attempt, delay, message } => {
                self.running.retain(|r| r != id);
                self.bar.println(format!("retry {id}: {message}; attempt {attempt} in {:.0}s", delay.as_secs_f64()));
                self.update();
            }
            Event::Skipped { id } => {
                self.bar.inc(1);
                if self.verbose {
                    self.bar.println(format!("skip {id} (up to date)"));
                }
            }
            Event::Waiting { id, message } => {
                self.running.retain(|r| r != id);
                self.bar.println(format!("wait {id}: {message}"));
                self.update();
            }
            Event::UpstreamFailed { id } => {
                self.bar.inc(1);
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
}
