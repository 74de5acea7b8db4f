//! flux: a target-driven build tool for data pipelines.
//!
//! A `Fluxfile` declares steps with params, inputs, outputs and commands. flux expands the
//! requested steps over their param values into tasks ([`graph`]), decides which tasks are
//! stale ([`plan`]), runs them in parallel ([`builder`], [`exec`]) and keeps state and
//! history in SQLite ([`state`]). The layers, from the bottom: [`error`], [`param`],
//! [`template`] → [`fluxfile`] → [`graph`] (+ [`plancache`]) → [`plan`] (reading stats
//! and digests from [`target`], and from [`store`] for remote targets) → [`builder`] (running jobs through [`exec`], firing
//! [`hooks`]; [`procs`] makes commands die with flux and ends what dead runs left) →
//! [`schedule`] (ticks that build scheduled steps' intervals, through the build path
//! [`cli`] hands it); [`cli`] wires them up and, with [`report`], is the only code that
//! prints (the scheduler prints through [`cli`] too).
//! `docs/concepts.md` explains the model; `docs/decisions.md` where it departs from or
//! fills in the specification.

pub mod builder;
pub mod cache;
pub mod cli;
pub mod complete;
pub mod error;
pub mod exec;
pub mod explain;
pub mod fluxfile;
pub mod generate;
pub mod graph;
pub mod guard;
pub mod hooks;
pub mod limits;
pub mod mark;
pub mod param;
pub mod plan;
pub mod plancache;
pub mod procs;
pub mod report;
pub mod schedule;
pub mod select;
pub mod state;
pub mod store;
pub mod target;
pub mod template;
pub mod ui;

/// Run flux with these arguments; returns the process exit code.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    cli::run(args)
}
