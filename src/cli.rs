//! The command line (SPEC §9). clap parses raw arguments here; they are resolved into the
//! loader's options, a graph request and build options before anything runs. This is the
//! only module that reads the environment (`NO_COLOR`, `CI`) and wires the concrete state
//! DB, executor and reporter together, and, with `report`, the only one that prints.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use chrono::NaiveDate;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::builder::{Build, Options, Report};
use crate::error::{Error, Result};
use crate::fluxfile::{Fluxfile, LoadOptions};
use crate::graph::{self, Request, TaskGraph};
use crate::plan::Triggers;
use crate::state::{Records, StateDb};
use crate::target::Digests;

const ABOUT: &str = "flux builds data pipelines the way make builds code.

A Fluxfile (TOML) declares steps with params (dates above all), input and output
targets and shell commands. `flux build` expands the steps over their dates, works out
which tasks are stale (missing outputs, changed inputs or commands) and runs only those,
in parallel, keeping state and history in .flux/state.db.";

const AFTER: &str = "Examples:
  flux build --date 2024-03-01                 every step, for one day
  flux build rollup --date-range 2024-01-01..2024-01-31
  flux build 'rollup[2024-01-05]' -n           what would run, and why
  flux build data/rollup/2024-01-05.csv        the task that writes this file
  flux graph --format dot | dot -Tsvg > g.svg
  flux logs 'extract[2024-01-05]'

More: flux help TOPIC, where TOPIC is concepts, fluxfile, templates, cli, stores or
operations; flux help SUBCOMMAND for a subcommand's flags.";

#[derive(Parser, Debug)]
#[command(name = "flux", version, about = ABOUT, after_help = AFTER, max_term_width = 100, disable_help_subcommand = true)]
struct Cli {
    /// Use this Fluxfile instead of searching the current folder and its parents.
    #[arg(short = 'f', long = "file", global = true, value_name = "FLUXFILE")]
    file: Option<PathBuf>,
    /// Say more: -v prints phase timings and every task's decision (up-to-date ones too).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Print only failures.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Colour in terminal output (NO_COLOR is respected).
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    color: ColorChoice,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
    Mermaid,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the stale tasks of the requested targets (default: every task of every step).
    Build(BuildArgs),
    /// Validate the Fluxfile; exit 0 if it is good, 2 otherwise.
    Check,
    /// List the steps with their params, schedules and descriptions.
    List {
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Show the step graph, or with --tasks the task graph for the given params.
    Graph {
        #[command(flatten)]
        sel: Selection,
        /// Show tasks instead of steps (needs param values, like build).
        #[arg(long)]
        tasks: bool,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Print the log of a task's latest attempt.
    Logs {
        /// A task id, e.g. 'extract[2024-01-05]'.
        task: String,
        /// Which run (its id, as in `flux history`; default: the latest that has the attempt).
        #[arg(long, value_name = "N")]
        run: Option<i64>,
        /// Which attempt of that run (default: its last).
        #[arg(long, value_name = "N")]
        attempt: Option<u32>,
        /// Keep printing as the log grows, until the attempt ends.
        #[arg(long)]
        follow: bool,
    },
    /// The step x interval grid: each task's last status, or whether its outputs exist.
    Status {
        #[command(flatten)]
        sel: Selection,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Accept the named tasks' current outputs as done: the next build skips them while
    /// their inputs and commands stay as they are now.
    Mark {
        #[command(flatten)]
        sel: Selection,
        /// Also mark every task downstream of them (among the dates given, else theirs).
        #[arg(long)]
        downstream: bool,
    },
    /// Why a task would run, or why it is up to date (same as `build -n --explain TASK`,
    /// and takes the same options).
    Why {
        /// A task id, e.g. 'rollup[2024-01-05]'.
        task: String,
        #[command(flatten)]
        build: BuildArgs,
    },
    /// Forget tasks' success so the next build reruns them (reason `forced`).
    Clear {
        #[command(flatten)]
        sel: Selection,
        /// Also delete their outputs.
        #[arg(long)]
        delete_outputs: bool,
        /// Also clear every task downstream of them (among the dates given, else theirs).
        #[arg(long)]
        downstream: bool,
    },
    /// Recent task attempts, newest first.
    History {
        /// Only this step.
        #[arg(long)]
        step: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// The download cache of remote inputs: its size and entries; `prune` empties it.
    Cache {
        #[command(subcommand)]
        action: Option<CacheCmd>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
        output: OutputFormat,
    },
    /// Serve a read-only web UI over the state DB (steps, grid, graph, tasks, runs, logs).
    Ui {
        /// Address and port to listen on; anything but a loopback address needs a token.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        bind: String,
        /// Every request must carry it (`Authorization: Bearer T`, or `?token=T` once).
        #[arg(long, value_name = "T", env = "FLUX_UI_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// The scheduler: build each scheduled step's intervals as they end (`flux help scheduling`).
    Schedule(ScheduleArgs),
    /// Print a shell completion script (flags, subcommands, step names and task ids).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print help: flux's, a subcommand's, or a topic's (concepts, fluxfile, templates, cli,
    /// stores, operations).
    Help {
        #[arg(value_name = "TOPIC|SUBCOMMAND")]
        topic: Option<String>,
    },
    /// Step names and task ids that complete a word (for the completion scripts).
    #[command(name = "__complete", hide = true)]
    Complete {
        #[arg(allow_hyphen_values = true)]
        word: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum CacheCmd {
    /// Evict least recently used entries until the cache holds at most `cache_max`;
    /// entries a running task reads stay.
    Prune {
        /// Evict every entry (but those a running task reads).
        #[arg(long)]
        all: bool,
    },
}

/// What to build: targets and param values.
#[derive(Args, Debug, Default, Clone)]
struct Selection {
    /// Step names, task ids (`rollup[2024-01-05]`, `report[date=2024-01-05,region=eu]`) or output paths.
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// One day: date params take it, hour params every hour of it, month params its month.
    #[arg(long, value_name = "D", conflicts_with = "date_range")]
    date: Option<String>,
    /// An inclusive range A..B of dates, hours (2024-03-01T00..2024-03-01T23) or months.
    #[arg(long, value_name = "A..B")]
    date_range: Option<String>,
    /// A param value (or several: k=v1,v2); any param, time params included.
    #[arg(long = "param", value_name = "K=V")]
    params: Vec<String>,
    /// Override a var of the Fluxfile.
    #[arg(long = "var", value_name = "K=V")]
    vars: Vec<String>,
    /// Use the vars of [profile.P.vars].
    #[arg(long)]
    profile: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct BuildArgs {
    #[command(flatten)]
    sel: Selection,
    /// Parallel tasks (default: [flux] jobs, else the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// Print what would run and why; run and write nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Explain why TASK would run or is up to date: its outputs, inputs, command and
    /// upstream (implies --dry-run).
    #[arg(long, value_name = "TASK")]
    explain: Option<String>,
    /// Run the requested tasks even if they are up to date.
    #[arg(long)]
    force: bool,
    /// Force STEP's tasks (or the task TASK) and everything downstream of them.
    #[arg(long, value_name = "STEP|TASK")]
    from: Option<String>,
    /// Stop launching new tasks after the first failure.
    #[arg(long)]
    fail_fast: bool,
    /// Which reasons make a task run: any of missing,input,command (default: all).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    rerun_triggers: Vec<String>,
    /// Run the named tasks alone, not their upstream (their inputs must exist).
    #[arg(long)]
    only: bool,
    /// Wait up to DUR for missing sources (every step), checking every `poll`.
    #[arg(long, value_name = "DUR")]
    wait: Option<String>,
    /// Where steps without an `executor` key run: `local` or `slurm` (default: `[flux]
    /// executor`, else local).
    #[arg(long, value_name = "EXECUTOR")]
    executor: Option<String>,
    /// text: progress on stderr and a summary; json: one JSON object on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Print each task's commands before it runs, as `sh -c` gets them (staged output
    /// paths); with -n, the commands that would run (final paths).
    #[arg(short = 'p', long)]
    print_commands: bool,
    /// Print the commands' output on stderr as it comes, each line after its task id.
    #[arg(long)]
    stream: bool,
    /// Print the last N lines of a failed task's log under its FAIL line (0: none).
    #[arg(long, value_name = "N", default_value_t = 20)]
    log_lines: usize,
}

#[derive(Args, Debug)]
struct ScheduleArgs {
    /// One tick, then exit (0, or 1 if a task failed): for cron or CI.
    #[arg(long)]
    once: bool,
    /// Print what the next tick would run, per step and why; run and write nothing (implies --once).
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Time between ticks.
    #[arg(long, value_name = "DUR", default_value = "30s")]
    tick: String,
    /// After SIGTERM/SIGINT, how long running tasks may finish before they are interrupted.
    #[arg(long, value_name = "DUR", default_value = "30s")]
    grace: String,
    /// Believe it is TIME (RFC 3339, e.g. 2024-03-05T00:30:00Z); the clock runs on from it.
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
    /// Under max_active_runs, build the newest intervals first (default: oldest first).
    #[arg(long)]
    newest_first: bool,
    /// If another scheduler holds the project, wait for it to stop instead of exiting 2.
    #[arg(long)]
    wait: bool,
    /// Parallel tasks (default: [flux] jobs, else the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// Override a var of the Fluxfile.
    #[arg(long = "var", value_name = "K=V")]
    vars: Vec<String>,
    /// Use the vars of [profile.P.vars].
    #[arg(long)]
    profile: Option<String>,
}

/// Parse arguments and run; returns the exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", e.render());
            e.exit_code()
        }
    }
}

/// Whether to colour what goes to a stream that `is_terminal` describes.
fn color_on(c: ColorChoice, is_terminal: bool) -> bool {
    match c {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::env::var_os("NO_COLOR").is_none() && is_terminal,
    }
}

fn dispatch(cli: &Cli) -> Result<i32> {
    configure_state_db()?;
    match &cli.cmd {
        Cmd::Build(b) => cmd_build(cli, b),
        Cmd::Check => {
            let ff = load(cli, &Selection::default())?;
            println!("{}: {}, OK", ff.path.display(), crate::report::plural(ff.steps.len(), "step"));
            Ok(0)
        }
        Cmd::List { output } => cmd_list(cli, *output),
        Cmd::Graph { sel, tasks, format } => cmd_graph(cli, sel, *tasks, *format),
        Cmd::Logs { task, run, attempt, follow } => cmd_logs(cli, task, *run, *attempt, *follow),
        Cmd::History { step, limit, output } => cmd_history(cli, step.as_deref(), *limit, *output),
        Cmd::Status { sel, output } => cmd_status(cli, sel, *output),
        Cmd::Mark { sel, downstream } => {
            let ff = load(cli, sel)?;
            let command = redacted_command(std::env::args());
            crate::mark::run(&ff, &request(sel)?, *downstream, &command, &var_values(sel))
        }
        Cmd::Why { task, build } => {
            let mut b = build.clone();
            b.explain = Some(task.clone());
            cmd_build(cli, &b)
        }
        Cmd::Clear { sel, delete_outputs, downstream } => cmd_clear(cli, sel, *delete_outputs, *downstream),
        Cmd::Cache { action, output } => cmd_cache(cli, action.as_ref(), *output),
        Cmd::Ui { bind, token } => cmd_ui(cli, bind, token.clone()),
        Cmd::Schedule(a) => cmd_schedule(cli, a),
        Cmd::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut buf: Vec<u8> = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "flux", &mut buf);
            let script = crate::complete::script(*shell, &String::from_utf8_lossy(&buf));
            let _ = std::io::stdout().lock().write_all(script.as_bytes());
            Ok(0)
        }
        Cmd::Help { topic } => cmd_help(topic.as_deref()),
        Cmd::Complete { word } => {
            // Completion stays quiet: no Fluxfile, no state, a bad file: no candidates.
            let Ok(ff) = load(cli, &Selection::default()) else { return Ok(0) };
            let records = StateDb::open_existing(&ff.state_dir).ok().flatten().and_then(|db| db.load_tasks().ok());
            let ids = records.iter().flat_map(|r| r.keys().map(String::as_str));
            let mut o = std::io::stdout().lock();
            for c in crate::complete::candidates(&ff, ids, word.as_deref().unwrap_or("")) {
                let _ = writeln!(o, "{c}");
            }
            Ok(0)
        }
    }
}

/// How the state DB waits for a lock: the limit (`FLUX_DB_BUSY_LIMIT`, in seconds, for
/// tests; default 60 s) and the line that says flux is waiting.
fn configure_state_db() -> Result<()> {
    if let Some(v) = std::env::var_os("FLUX_DB_BUSY_LIMIT") {
        let v = v.to_string_lossy();
        let secs: f64 =
            v.trim().parse().ok().filter(|s: &f64| s.is_finite() && *s >= 0.0).ok_or_else(|| {
                Error::Usage(format!("FLUX_DB_BUSY_LIMIT={v}: expected a number of seconds, e.g. 60"))
            })?;
        crate::state::set_busy_limit(std::time::Duration::from_secs_f64(secs));
    }
    crate::state::on_wait(|line| eprintln!("flux: {line}"));
    Ok(())
}

/// `flux help [TOPIC|SUBCOMMAND]`.
fn cmd_help(topic: Option<&str>) -> Result<i32> {
    let mut cmd = Cli::command();
    cmd.build();
    let text = match topic {
        None => cmd.render_long_help().to_string(),
        Some(t) => match crate::complete::topic(t) {
            Some(text) => text.to_string(),
            None => match cmd.find_subcommand_mut(t) {
                Some(sub) if !sub.is_hide_set() => sub.render_long_help().to_string(),
                _ => {
                    let names: Vec<&str> = crate::complete::TOPICS.iter().map(|(n, _)| *n).collect();
                    let subs: Vec<String> =
                        cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| s.get_name().to_string()).collect();
                    let all = names.iter().copied().chain(subs.iter().map(String::as_str));
                    let hint =
                        crate::error::did_you_mean(t, all).map(|s| format!("did you mean `{s}`? ")).unwrap_or_default();
                    return Err(Error::Usage(format!(
                        "`{t}` is not a help topic or a subcommand; {hint}topics: {}; subcommands: {}",
                        names.join(", "),
                        subs.join(", ")
                    )));
                }
            },
        },
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(0)
}

fn kv(s: &str, flag: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(Error::Usage(format!("{flag} {s}: expected NAME=VALUE"))),
    }
}

fn load(cli: &Cli, sel: &Selection) -> Result<Fluxfile> {
    let vars = sel.vars.iter().map(|v| kv(v, "--var")).collect::<Result<Vec<_>>>()?;
    let ff = Fluxfile::load(&LoadOptions { file: cli.file.clone(), vars, profile: sel.profile.clone() })?;
    crate::store::configure(ff.stores.clone());
    // Registered for every delete flux does from now on (SPEC §5).
    guard(&ff);
    Ok(ff)
}

/// What no output may be, and flux never deletes: the project and state folders and `$HOME`.
fn guard(ff: &Fluxfile) -> crate::guard::Guard {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    crate::guard::Guard::for_fluxfile(ff, home.as_deref())
}

fn request(sel: &Selection) -> Result<Request> {
    let date = match &sel.date {
        None => None,
        Some(d) => Some(NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
            Error::Usage(format!("--date {d}: not a valid date (expected YYYY-MM-DD, e.g. 2024-03-01)"))
        })?),
    };
    let range = match &sel.date_range {
        None => None,
        Some(r) => match r.split_once("..") {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Some((a.to_string(), b.to_string())),
            _ => {
                return Err(Error::Usage(format!("--date-range {r}: expected A..B, e.g. 2024-01-01..2024-01-31")));
            }
        },
    };
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for p in &sel.params {
        let (k, v) = kv(p, "--param")?;
        let vals: Vec<String> = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if vals.is_empty() {
            return Err(Error::Usage(format!("--param {p}: no value")));
        }
        match params.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1.extend(vals),
            None => params.push((k, vals)),
        }
    }
    Ok(Request { targets: sel.targets.clone(), date, range, params, now: Some(chrono::Utc::now().naive_utc()) })
}

fn timing(cli: &Cli, what: &str, since: Instant) {
    if cli.verbose > 0 {
        eprintln!("flux: {what}: {:.3}s", since.elapsed().as_secs_f64());
    }
}

fn cmd_build(cli: &Cli, b: &BuildArgs) -> Result<i32> {
    if b.jobs == Some(0) {
        return Err(Error::Usage("-j 0: give a positive number of parallel tasks, e.g. -j 4".into()));
    }
    let t0 = Instant::now();
    let ff = load(cli, &b.sel)?;
    timing(cli, "load Fluxfile", t0);
    let req = request(&b.sel)?;
    let built = plan_and_build(cli, b, &ff, &req, t0, false)?;
    // The process ends now: freeing a large Fluxfile piece by piece would only cost time.
    std::mem::forget(ff);
    Ok(built.code)
}

/// Plan `req` and build it (or dry-run it, or explain one task) with `b`'s settings, then
/// print the result: `flux build`, and each tick of `flux schedule` (`scheduled`: the
/// scheduler owns the signals, no plan cache is kept, and the process lives on).
fn plan_and_build(
    cli: &Cli,
    b: &BuildArgs,
    ff: &Fluxfile,
    req: &Request,
    t0: Instant,
    scheduled: bool,
) -> Result<crate::schedule::Built> {
    let t1 = Instant::now();
    let dry_run = b.dry_run || b.explain.is_some();
    let mut req = req.clone();
    let explain = match &b.explain {
        Some(_) if b.output == OutputFormat::Json => {
            return Err(Error::Usage("--explain prints text: drop --output json".into()));
        }
        Some(task) => {
            let id = graph::canonical_task_id(ff, task)?;
            if req.targets.is_empty() {
                req.targets.push(id.clone());
            }
            Some(id)
        }
        None => None,
    };
    // Targets are stat'ed from this moment on (quick keys and cached digests are trusted
    // only for files older than it).
    let stat_ns = crate::target::now_ns();
    let key = crate::plancache::key(ff, &req);
    let cache = if scheduled { None } else { crate::plancache::load(&ff.state_dir, &key) };
    let mut feed = None;
    let (g, cached) = match cache.filter(|g| crate::plancache::fits(ff, g)) {
        Some(g) => (g, true),
        None => {
            // Local targets are stat'ed on another core while planning names them.
            let f = feed.insert(crate::target::StatFeed::start(ff.dir.clone()));
            let g = graph::build_observed(ff, &req, &mut |t| f.push(t))?;
            if !dry_run && !scheduled {
                crate::plancache::store(&ff.state_dir, &key, &g);
            }
            (g, false)
        }
    };
    guard(ff).check_outputs(ff, &g)?;
    timing(cli, &format!("plan {} tasks{}", g.tasks.len(), if cached { " (cached)" } else { "" }), t1);

    let mut triggers = Triggers::default();
    if !b.rerun_triggers.is_empty() {
        triggers = Triggers { missing: false, input: false, command: false };
        for t in &b.rerun_triggers {
            match t.trim() {
                "missing" => triggers.missing = true,
                "input" => triggers.input = true,
                "command" => triggers.command = true,
                other => {
                    return Err(Error::Usage(format!(
                        "--rerun-triggers: unknown trigger `{other}` (use missing, input, command)"
                    )));
                }
            }
        }
    }
    let mut forced: HashSet<u32> = HashSet::new();
    if b.force {
        forced.extend(g.roots.iter().copied());
    }
    if let Some(from) = &b.from {
        if let Some(si) = ff.step_index(from) {
            let of_step: Vec<u32> =
                (0..g.tasks.len() as u32).filter(|&t| g.tasks[t as usize].step == si as u32).collect();
            forced.extend(crate::select::downstream(&g, &of_step));
        } else if from.contains('[') {
            let id = graph::canonical_task_id(ff, from).map_err(|e| match e {
                Error::Usage(m) => Error::Usage(format!("--from {from}: {m}")),
                other => other,
            })?;
            let Some(t) = (0..g.tasks.len() as u32).find(|&t| g.task_id(ff, t) == id) else {
                return Err(Error::Usage(format!(
                    "--from {from}: {id} is not part of this build; name targets (or dates) that include it"
                )));
            };
            forced.extend(crate::select::downstream(&g, &[t]));
        } else {
            let hint = crate::error::did_you_mean(from, ff.steps.iter().map(|s| s.name.as_str()))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(Error::Usage(format!("--from {from}: no such step or task{hint}")));
        }
    }
    let only = if b.only {
        if b.sel.targets.is_empty() {
            return Err(Error::Usage("--only needs targets: the tasks to run alone".into()));
        }
        check_only_inputs(ff, &g)?;
        Some(g.roots.iter().copied().collect::<HashSet<u32>>())
    } else {
        None
    };
    let max_jobs = crate::limits::MAX_JOBS as usize;
    if let Some(n) = b.jobs.filter(|&n| n > max_jobs) {
        return Err(Error::Usage(format!("-j {n}: at most {max_jobs} parallel tasks")));
    }
    let jobs = b
        .jobs
        .or(ff.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, max_jobs);
    let opts = Options {
        jobs,
        dry_run,
        forced,
        triggers,
        fail_fast: b.fail_fast,
        command: redacted_command(std::env::args()),
        only,
        wait: b.wait.as_deref().map(parse_wait).transpose()?,
        cpu_budget: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        mem_budget: machine_memory(),
        print_commands: b.print_commands,
        stream: b.stream,
        dry_commands: dry_run && (b.print_commands || b.output == OutputFormat::Json),
        redact: var_values(&b.sel),
        executor: match b.executor.as_deref() {
            None => None,
            Some("local") => Some(crate::exec::Kind::Local),
            Some("slurm") => Some(crate::exec::Kind::Slurm),
            Some(other) => return Err(Error::Usage(format!("--executor {other}: use `local` or `slurm`"))),
        },
    };

    // `array = true` is for Slurm: a step that runs here after all (by `--executor` or
    // `[flux] executor`) says so rather than ignoring the key.
    for step in &ff.steps {
        let here = step.executor.or(opts.executor).or(ff.executor).unwrap_or(crate::exec::Kind::Local)
            == crate::exec::Kind::Local;
        if let Some((true, span)) = &step.array
            && here
        {
            return Err(Error::at_help(
                format!("`array = true` needs step `{}` to run on Slurm, but it runs locally", step.name),
                span,
                "set executor = \"slurm\" on the step (or [flux] executor, or --executor slurm), or remove `array`",
            ));
        }
    }

    let t2 = Instant::now();
    // Stat every target on other cores while the state DB is read, unless that was done
    // while planning (remote targets are stat'ed by the build itself, in batches per folder).
    let local_only = !g.targets.iter().any(|t| crate::store::is_remote(t));
    let (state, stats) = std::thread::scope(|s| {
        let stats = local_only.then(|| {
            s.spawn(|| match feed.and_then(crate::target::StatFeed::finish) {
                Some(metas) if metas.len() == g.targets.len() => metas,
                _ => crate::target::stat_many(&ff.dir, &g.targets),
            })
        });
        let state = (|| -> Result<_> {
            let db = if dry_run { StateDb::open_existing(&ff.state_dir)? } else { Some(StateDb::open(&ff.state_dir)?) };
            let records = match &db {
                Some(d) => d.load_tasks()?,
                None => Default::default(),
            };
            Ok((db, records))
        })();
        (state, stats.and_then(|h| h.join().ok()))
    });
    let (mut db, records) = state?;
    let digests = Digests::lazy(ff.state_dir.clone(), stat_ns);
    let what = if db.is_some() { "task records; digests are looked up when a task needs one" } else { "no state yet" };
    timing(cli, &format!("load state ({} {what})", records.len()), t2);

    let mut build = Build::new(ff, &g, &records, &digests, &opts);
    if let Some(metas) = stats {
        build = build.with_stats(stat_ns, metas);
    }
    let mut rep = crate::report::for_stderr(crate::report::Settings {
        quiet: cli.quiet,
        color: color_on(cli.color, std::io::IsTerminal::is_terminal(&std::io::stderr())),
        verbose: cli.verbose > 0,
        log_lines: b.log_lines,
        stream: b.stream,
    });
    let t3 = Instant::now();
    let report = if dry_run {
        build.dry_run(rep.as_mut())?
    } else {
        if !scheduled {
            install_signal_handlers();
        }
        // A panic stops the running commands before flux exits (they must not outlive it).
        crate::procs::stop_tasks_on_panic();
        if std::env::var_os("FLUX_TEST_PANIC_AFTER_START").is_some_and(|v| v == "1") {
            crate::builder::PANIC_AFTER_START.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let db = db.as_mut().ok_or_else(|| Error::Internal("no state database".into()))?;
        // Tasks run here, and on Slurm if any step's tasks go there.
        let slurm = ff.steps.iter().any(|s| build.executor(s) == crate::exec::Kind::Slurm);
        let make = |s: &crate::exec::Setup| -> Box<dyn crate::exec::Executor> {
            let local = crate::exec::LocalExecutor::new(s.jobs);
            local.record_groups_in(&crate::procs::group_file(&s.stage_root));
            if slurm {
                let scripts = s.stage_root.join("slurm");
                Box::new(crate::exec::SlurmExecutor::new(local, s.run_id, &ff.state_dir, scripts, ff.slurm.clone()))
            } else {
                Box::new(local)
            }
        };
        let report = build.run(db, rep.as_mut(), &make)?;
        // Tasks read the download cache: bring it back under cache_max.
        match crate::cache::after_build(&ff.state_dir, ff.cache_max) {
            Some(Ok(p)) if cli.verbose > 0 => eprintln!("flux: cache: {}", p.text()),
            Some(Err(e)) => eprintln!("flux: warning: {e}"),
            _ => {}
        }
        report
    };
    timing(
        cli,
        &format!("{} ({} files read for digests)", if dry_run { "decide" } else { "build" }, report.digest_reads),
        t3,
    );
    let rereads = digests.rereads.load(std::sync::atomic::Ordering::Relaxed);
    if cli.verbose > 0 && rereads > 0 {
        eprintln!("flux: {rereads} files hashed within their clock tick read again, so that their digests are trusted");
    }
    print_requests(cli);
    if cli.verbose > 0 {
        let (own, commands) = (cpu_seconds(libc::RUSAGE_SELF), cpu_seconds(libc::RUSAGE_CHILDREN));
        eprintln!("flux: cpu {own:.3}s in flux itself, {commands:.3}s in commands");
    }

    if let Some(id) = &explain {
        let Some(t) = report.ids.iter().position(|x| x == id) else {
            return Err(Error::Usage(format!(
                "--explain {id}: not among the tasks planned for these targets and dates; name it as a target, or give its --date"
            )));
        };
        print!("{}", build.explain(t as u32, &report, db.as_ref(), &opts.redact)?);
        return Ok(crate::schedule::Built { run_id: None, statuses: Default::default(), code: 0 });
    }
    let left = graph::left_out(ff, &req);
    match b.output {
        OutputFormat::Json => print_json(ff, &g, &report, dry_run, b.log_lines, &left),
        OutputFormat::Text => {
            print_text(ff, &g, &report, dry_run, cli.verbose > 0, t0);
            print_left_out(&left);
        }
    }
    if let Some(cause) = &report.db_error {
        eprintln!("{}", Error::Io(format!("{cause}; the build was stopped")).render());
    }
    let built = crate::schedule::Built {
        run_id: report.run_id,
        // What the scheduler reads of each root (a plain build has up to a million roots).
        statuses: if scheduled {
            g.roots.iter().map(|&t| (report.ids[t as usize].clone(), report.results[t as usize].status)).collect()
        } else {
            Default::default()
        },
        code: report.exit_code(),
    };
    if !scheduled {
        // The process ends now: freeing a large graph piece by piece would only cost time
        // (ninja does the same).
        std::mem::forget((g, records, digests, report));
    }
    Ok(built)
}

/// With `-v`, the requests sent to remote stores (`remote requests: 1 LIST, 0 HEAD, …`).
fn print_requests(cli: &Cli) {
    if cli.verbose > 0 && crate::store::requests().total() > 0 {
        eprintln!("flux: remote requests: {}", crate::store::requests().summary());
    }
}

/// `flux schedule` (SPEC §10): the scheduler, building through [`plan_and_build`].
fn cmd_schedule(cli: &Cli, a: &ScheduleArgs) -> Result<i32> {
    if a.jobs == Some(0) {
        return Err(Error::Usage("-j 0: give a positive number of parallel tasks, e.g. -j 4".into()));
    }
    let dur =
        |flag: &str, s: &str| crate::param::parse_duration(s).map_err(|e| Error::Usage(format!("--{flag} {s}: {e}")));
    let tick = dur("tick", &a.tick)?;
    if tick.is_zero() {
        return Err(Error::Usage("--tick 0: give a time between ticks, e.g. --tick 30s".into()));
    }
    let now = match &a.now {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| Error::Usage(format!("--now {t}: {e} (expected RFC 3339, e.g. 2024-03-05T00:30:00Z)")))?
                .with_timezone(&chrono::Utc),
        ),
    };
    let opts = crate::schedule::Options {
        once: a.once || a.dry_run,
        dry_run: a.dry_run,
        now,
        tick,
        grace: dur("grace", &a.grace)?,
        newest_first: a.newest_first,
        wait: a.wait,
    };
    struct CliHost<'c> {
        cli: &'c Cli,
        args: BuildArgs,
    }
    impl crate::schedule::Host for CliHost<'_> {
        fn load(&self) -> Result<Fluxfile> {
            load(self.cli, &self.args.sel)
        }
        fn build(&self, ff: &Fluxfile, req: Request, dry_run: bool) -> Result<crate::schedule::Built> {
            let args = BuildArgs { dry_run, ..self.args.clone() };
            plan_and_build(self.cli, &args, ff, &req, Instant::now(), true)
        }
        fn say(&self, line: &str) {
            eprintln!("{line}");
        }
    }
    let args = BuildArgs {
        sel: Selection { vars: a.vars.clone(), profile: a.profile.clone(), ..Default::default() },
        jobs: a.jobs,
        dry_run: false,
        force: false,
        from: None,
        fail_fast: false,
        rerun_triggers: Vec::new(),
        only: false,
        wait: None,
        executor: None,
        output: OutputFormat::Text,
        print_commands: false,
        stream: false,
        log_lines: 20,
        explain: None,
    };
    crate::schedule::run(&CliHost { cli, args }, &opts)
}

/// The values given with `--var`, which nothing flux keeps may hold in plain text.
fn var_values(sel: &Selection) -> Vec<String> {
    sel.vars.iter().filter_map(|v| v.split_once('=').map(|(_, v)| v.to_string())).collect()
}

/// The command line as the run record keeps it: `--var` values (secrets, maybe) are
/// replaced by `***`, names kept; `--param` values are kept (they name what was built).
pub fn redacted_command(args: impl IntoIterator<Item = String>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut next_is_var = false;
    for a in args {
        let hide = |kv: &str| kv.split_once('=').map_or_else(|| kv.to_string(), |(k, _)| format!("{k}=***"));
        if next_is_var {
            out.push(hide(&a));
            next_is_var = false;
        } else if a == "--var" {
            out.push(a);
            next_is_var = true;
        } else if let Some(kv) = a.strip_prefix("--var=") {
            out.push(format!("--var={}", hide(kv)));
        } else {
            out.push(a);
        }
    }
    out.join(" ")
}

/// User + system CPU seconds of this process (`RUSAGE_SELF`, all its threads) or of its
/// reaped children (`RUSAGE_CHILDREN`).
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

fn parse_wait(s: &str) -> Result<std::time::Duration> {
    let d = crate::param::parse_duration(s).map_err(|e| Error::Usage(format!("--wait {s}: {e}")))?;
    if d > crate::limits::MAX_DURATION {
        return Err(Error::Usage(format!("--wait {s}: at most {}", crate::limits::MAX_DURATION_TEXT)));
    }
    Ok(d)
}

/// Total memory of this machine, for `mem` budgets (unlimited if unknown).
fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kb| kb * 1024)
}

/// `--only`: every input of the named tasks must already exist.
fn check_only_inputs(ff: &Fluxfile, g: &TaskGraph) -> Result<()> {
    for &t in &g.roots {
        for &i in g.tasks[t as usize].inputs() {
            let name = g.target(i);
            if !crate::store::exists(&ff.abs(name), name) {
                return Err(Error::Usage(format!(
                    "--only: input `{name}` of {} does not exist, and --only builds no upstream; build it first, or drop --only",
                    g.task_id(ff, t)
                )));
            }
        }
    }
    Ok(())
}

fn print_text(ff: &Fluxfile, g: &TaskGraph, r: &Report, dry: bool, verbose: bool, t0: Instant) {
    let out = std::io::stdout();
    let mut o = std::io::BufWriter::new(out.lock());
    let lines = g.order.iter().map(|&t| {
        let res = &r.results[t as usize];
        crate::report::TaskLine {
            id: &r.ids[t as usize],
            step: &ff.steps[g.tasks[t as usize].step as usize].name,
            step_no: g.tasks[t as usize].step as usize,
            status: res.status,
            reason: res.reason.map(|x| x.as_str()),
            message: res.message.as_deref(),
            waits: res.waits,
            commands: res.commands.as_deref(),
        }
    });
    if dry {
        crate::report::dry_run_text(&mut o, lines, verbose);
    } else {
        crate::report::build_text(&mut o, lines, t0.elapsed());
    }
}

/// With no target: the steps left out for want of a value (SPEC §3.1), after the summary.
fn print_left_out(left: &[(&str, &str, &crate::param::ParamKind)]) {
    if left.is_empty() {
        return;
    }
    let names: Vec<String> = left
        .iter()
        .map(|(step, param, kind)| {
            format!("{step} ({} param `{param}` has no value: pass --param {param}=…)", kind.name())
        })
        .collect();
    let _ = writeln!(std::io::stdout(), "left out: {}", names.join(", "));
}

fn print_json(
    ff: &Fluxfile,
    g: &TaskGraph,
    r: &Report,
    dry: bool,
    log_lines: usize,
    left: &[(&str, &str, &crate::param::ParamKind)],
) {
    use serde_json::{Value, json};
    let mut tasks = Vec::with_capacity(g.tasks.len());
    for &t in &g.order {
        let task = &g.tasks[t as usize];
        let step = &ff.steps[task.step as usize];
        let res = &r.results[t as usize];
        let params = crate::plan::params_json(step, &task.params);
        let mut obj = json!({
            "id": r.ids[t as usize],
            "step": step.name,
            "params": params,
            "status": res.status,
            "reason": res.reason.map(|x| x.as_str()),
            "attempts": res.attempts,
            "duration_s": res.duration_s,
        });
        if let Some(o) = obj.as_object_mut() {
            if let Some(m) = &res.message {
                o.insert(if res.waits { "wait" } else { "error" }.into(), Value::String(m.clone()));
            }
            if dry {
                if res.status == "would-run" && res.message.is_none() {
                    o.insert("commands".into(), json!(res.commands));
                }
            } else {
                o.insert("log".into(), json!(res.log));
                if res.status == "failed" {
                    let tail = res.log.as_deref().and_then(|l| crate::report::log_tail(l, log_lines));
                    o.insert("log_tail".into(), json!(tail));
                }
            }
        }
        tasks.push(obj);
    }
    let mut summary = json!({
        "ran": r.count("success"),
        "skipped": r.count("skipped"),
        "failed": r.count("failed"),
        "upstream_failed": r.count("upstream_failed"),
    });
    if dry && let Some(o) = summary.as_object_mut() {
        o.insert("would_run".into(), json!(r.count("would-run")));
        let would = |waits: bool| r.results.iter().filter(|x| x.message.is_some() && x.waits == waits).count();
        o.insert("would_wait".into(), json!(would(true)));
        o.insert("would_fail".into(), json!(would(false)));
    } else if r.interrupted
        && let Some(o) = summary.as_object_mut()
    {
        o.insert("interrupted".into(), json!(r.count("interrupted")));
    }
    if !left.is_empty()
        && let Some(o) = summary.as_object_mut()
    {
        let l: Vec<Value> =
            left.iter().map(|(step, param, kind)| json!({"step": step, "param": param, "kind": kind.name()})).collect();
        o.insert("left_out".into(), Value::Array(l));
    }
    let mut doc = json!({ "tasks": tasks, "summary": summary });
    if let (Some(id), Some(o)) = (r.run_id, doc.as_object_mut()) {
        o.insert("run_id".into(), json!(id));
    }
    let _ = writeln!(std::io::stdout(), "{doc}");
}

fn cmd_list(cli: &Cli, output: OutputFormat) -> Result<i32> {
    let ff = load(cli, &Selection::default())?;
    let mut o = std::io::stdout().lock();
    match output {
        OutputFormat::Json => {
            let steps: Vec<serde_json::Value> = ff
                .steps
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "description": s.description,
                        "params": s.params.iter().map(|(n, k)| serde_json::json!({"name": n, "kind": kind_text(k)})).collect::<Vec<_>>(),
                        "inputs": s.inputs.iter().map(|t| ff.engine.source(t.id)).collect::<Vec<_>>(),
                        "outputs": s.outputs.iter().map(|t| ff.engine.source(t.tpl.id)).collect::<Vec<_>>(),
                        "schedule": s.schedule.as_ref().map(schedule_text),
                        "start": s.time_param.zip(s.start).map(|(ti, v)| s.params[ti].1.format(v)),
                        "end": s.time_param.zip(s.end).map(|(ti, v)| s.params[ti].1.format(v)),
                    })
                })
                .collect();
            let _ = writeln!(o, "{}", serde_json::json!({ "steps": steps }));
        }
        OutputFormat::Text => {
            for s in &ff.steps {
                let params: Vec<String> = s.params.iter().map(|(n, k)| format!("{n}: {}", kind_text(k))).collect();
                let mut line = s.name.to_string();
                if !params.is_empty() {
                    line.push_str(&format!(" [{}]", params.join(", ")));
                }
                if let Some(sc) = &s.schedule {
                    line.push_str(&format!(" schedule {}", schedule_text(sc)));
                }
                if let (Some(ti), Some(v)) = (s.time_param, s.start) {
                    line.push_str(&format!(" from {}", s.params[ti].1.format(v)));
                }
                if let (Some(ti), Some(v)) = (s.time_param, s.end) {
                    line.push_str(&format!(" to {}", s.params[ti].1.format(v)));
                }
                let _ = writeln!(o, "{line}");
                if let Some(d) = &s.description {
                    let _ = writeln!(o, "    {d}");
                }
            }
        }
    }
    Ok(0)
}

fn kind_text(k: &crate::param::ParamKind) -> String {
    match k {
        crate::param::ParamKind::Choice(v) => v.join("|"),
        crate::param::ParamKind::Int { min, max } if min.is_some() || max.is_some() => format!(
            "int {}..{}",
            min.map(|m| m.to_string()).unwrap_or_default(),
            max.map(|m| m.to_string()).unwrap_or_default()
        ),
        other => other.name().to_string(),
    }
}

fn schedule_text(s: &crate::fluxfile::Schedule) -> String {
    use crate::fluxfile::Schedule::*;
    match s {
        Hourly => "@hourly".into(),
        Daily => "@daily".into(),
        Weekly => "@weekly".into(),
        Monthly => "@monthly".into(),
        Cron(c) => c.clone(),
    }
}

fn cmd_graph(cli: &Cli, sel: &Selection, tasks: bool, format: GraphFormat) -> Result<i32> {
    let ff = load(cli, sel)?;
    let (nodes, edges): (Vec<String>, Vec<(usize, usize)>) = if tasks {
        let g = graph::build(&ff, &request(sel)?)?;
        let nodes = (0..g.tasks.len() as u32).map(|t| g.task_id(&ff, t)).collect();
        let mut edges = Vec::new();
        for (i, t) in g.tasks.iter().enumerate() {
            for &d in t.deps() {
                edges.push((d as usize, i));
            }
        }
        (nodes, edges)
    } else {
        (ff.steps.iter().map(|s| s.name.clone()).collect(), graph::step_edges(&ff)?)
    };
    let mut o = std::io::stdout().lock();
    match format {
        GraphFormat::Text => {
            let mut upstream: Vec<Vec<&str>> = vec![Vec::new(); nodes.len()];
            for &(a, b) in &edges {
                upstream[b].push(nodes[a].as_str());
            }
            for (n, ups) in nodes.iter().zip(&upstream) {
                if ups.is_empty() {
                    let _ = writeln!(o, "{n}");
                } else {
                    let _ = writeln!(o, "{n} <- {}", ups.join(", "));
                }
            }
        }
        GraphFormat::Dot => {
            let _ = writeln!(o, "digraph flux {{\n  rankdir=LR;\n  node [shape=box];");
            for n in &nodes {
                let _ = writeln!(o, "  \"{}\";", n.replace('"', "\\\""));
            }
            for (a, b) in &edges {
                let _ =
                    writeln!(o, "  \"{}\" -> \"{}\";", nodes[*a].replace('"', "\\\""), nodes[*b].replace('"', "\\\""));
            }
            let _ = writeln!(o, "}}");
        }
        GraphFormat::Mermaid => {
            let _ = writeln!(o, "graph LR");
            for (i, n) in nodes.iter().enumerate() {
                let _ = writeln!(o, "  n{i}[\"{}\"]", n.replace('"', "#quot;"));
            }
            for (a, b) in &edges {
                let _ = writeln!(o, "  n{a} --> n{b}");
            }
        }
        GraphFormat::Json => {
            let doc = serde_json::json!({
                "nodes": nodes,
                "edges": edges.iter().map(|(a, b)| serde_json::json!({"from": nodes[*a], "to": nodes[*b]})).collect::<Vec<_>>(),
            });
            let _ = writeln!(o, "{doc}");
        }
    }
    Ok(0)
}

fn cmd_ui(cli: &Cli, bind: &str, token: Option<String>) -> Result<i32> {
    let ff = load(cli, &Selection::default())?;
    // A state DB that is there but unusable (newer, damaged, another program's) is refused
    // now, as the other commands that read it do, rather than on every request.
    StateDb::open_existing(&ff.state_dir)?;
    let edges = graph::step_edges(&ff)?;
    let opts = crate::ui::Options { bind: bind.to_string(), token };
    crate::ui::serve(ff, edges, opts, |url| {
        // The URL on stdout (a script or a test reads it); flushed before anything else.
        println!("flux ui: listening on {url}");
        let _ = std::io::stdout().flush();
    })
    .map_err(|e| match e {
        crate::ui::UiError::Listen(..) | crate::ui::UiError::Runtime(_) => Error::Io(e.to_string()),
        _ => Error::Usage(e.to_string()),
    })?;
    Ok(0)
}

/// Whether `flux status` needs to know if a task's outputs exist (see [`task_status`]).
fn needs_outputs(g: &TaskGraph, t: u32, id: &str, records: &Records) -> bool {
    use crate::state::Status;
    !g.tasks[t as usize].outputs().is_empty()
        && match records.get(id) {
            Some(r) if r.forced => false,
            Some(r) => matches!(r.last_status, Status::Success | Status::Skipped | Status::Marked),
            None => true,
        }
}

/// Whether each target of `targets` (indices into `g.targets`) exists: remote ones stat'ed
/// together, one LIST per folder.
fn targets_exist(ff: &Fluxfile, g: &TaskGraph, targets: impl Iterator<Item = u32>) -> HashMap<u32, bool> {
    let idx: Vec<u32> = targets.collect::<HashSet<u32>>().into_iter().collect();
    let pairs: Vec<(PathBuf, &str)> = idx.iter().map(|&o| (ff.abs(g.target(o)), g.target(o))).collect();
    idx.into_iter().zip(crate::store::exists_many(&pairs)).collect()
}

/// A task's status for `flux status`: its last attempt, or what its outputs say
/// (`exists`: of every output [`needs_outputs`] asked for).
fn task_status(g: &TaskGraph, t: u32, id: &str, records: &Records, exists: &HashMap<u32, bool>) -> &'static str {
    use crate::state::Status;
    let outputs_exist = || g.tasks[t as usize].outputs().iter().all(|o| exists.get(o).copied().unwrap_or(false));
    match records.get(id) {
        Some(r) if r.forced => "cleared",
        Some(r) => match r.last_status {
            Status::Success | Status::Skipped if g.tasks[t as usize].outputs().is_empty() || outputs_exist() => {
                "success"
            }
            Status::Success | Status::Skipped => "missing",
            Status::Marked if g.tasks[t as usize].outputs().is_empty() || outputs_exist() => "marked",
            Status::Marked => "missing",
            other => other.as_str(),
        },
        None if !g.tasks[t as usize].outputs().is_empty() && outputs_exist() => "up to date",
        None => "missing",
    }
}

/// One cell of the status grid: its column (time value), task id and status.
type Cell = (Option<usize>, String, &'static str);

fn cmd_status(cli: &Cli, sel: &Selection, output: OutputFormat) -> Result<i32> {
    let ff = load(cli, sel)?;
    let g = graph::build(&ff, &request(sel)?)?;
    let (records, late_intervals) = match StateDb::open_existing(&ff.state_dir)? {
        Some(db) => (db.load_tasks()?, db.late_intervals()?),
        None => (Records::default(), Vec::new()),
    };
    // Tasks whose interval missed its SLA (SPEC §10): `late`, beside their status.
    let late_set: HashSet<(&str, &str)> = late_intervals.iter().map(|i| (i.step.as_str(), i.value.as_str())).collect();
    let is_late = |t: u32| {
        let task = &g.tasks[t as usize];
        let step = &ff.steps[task.step as usize];
        step.time_param.is_some_and(|ti| {
            late_set.contains(&(step.name.as_str(), step.params[ti].1.format(task.params[ti]).as_str()))
        })
    };
    let late: Vec<String> = (0..g.tasks.len() as u32).filter(|&t| is_late(t)).map(|t| g.task_id(&ff, t)).collect();
    // Rows: a step with its non-time params; columns: time values, one grid per kind of
    // time (dates, hours, months), since their columns do not line up.
    let mut intervals: Vec<(&'static str, String)> = Vec::new();
    let mut interval_of: HashMap<(&'static str, String), usize> = HashMap::new();
    let mut rows: Vec<(String, &'static str, Vec<Cell>)> = Vec::new();
    let mut row_of: HashMap<String, usize> = HashMap::new();
    let mut order: Vec<u32> = (0..g.tasks.len() as u32).collect();
    order.sort_by_key(|&t| (g.tasks[t as usize].step, g.tasks[t as usize].params.clone()));
    let ids: Vec<String> = (0..g.tasks.len() as u32).map(|t| g.task_id(&ff, t)).collect();
    let exists = targets_exist(
        &ff,
        &g,
        (0..g.tasks.len() as u32)
            .filter(|&t| needs_outputs(&g, t, &ids[t as usize], &records))
            .flat_map(|t| g.tasks[t as usize].outputs().iter().copied()),
    );
    for &t in &order {
        let task = &g.tasks[t as usize];
        let step = &ff.steps[task.step as usize];
        let id = ids[t as usize].clone();
        let others: Vec<String> = step
            .params
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != step.time_param)
            .map(|(i, (n, k))| format!("{n}={}", k.format(task.params[i])))
            .collect();
        let row_name =
            if others.is_empty() { step.name.clone() } else { format!("{}[{}]", step.name, others.join(",")) };
        let kind = step.time_param.map_or("", |ti| step.params[ti].1.name());
        let col = step.time_param.map(|ti| {
            let key = (kind, step.params[ti].1.format(task.params[ti]));
            *interval_of.entry(key.clone()).or_insert_with(|| {
                intervals.push(key);
                intervals.len() - 1
            })
        });
        let status = task_status(&g, t, &id, &records, &exists);
        let r = *row_of.entry(row_name.clone()).or_insert_with(|| {
            rows.push((row_name.clone(), kind, Vec::new()));
            rows.len() - 1
        });
        rows[r].2.push((col, id, status));
    }
    print_requests(cli);
    let mut o = std::io::stdout().lock();
    if output == OutputFormat::Json {
        let mut labels: Vec<&String> = intervals.iter().map(|(_, l)| l).collect();
        labels.sort();
        let doc = serde_json::json!({
            "intervals": labels,
            "rows": rows.iter().map(|(name, kind, cells)| serde_json::json!({
                "row": name,
                "kind": if kind.is_empty() { None } else { Some(kind) },
                "cells": cells.iter().map(|(c, id, st)| serde_json::json!({
                    "task": id,
                    "interval": c.map(|c| intervals[c].1.clone()),
                    "status": st,
                    "late": late.contains(id),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        let _ = writeln!(o, "{doc}");
        return Ok(0);
    }
    let color = color_on(cli.color, std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let symbol = |st: &str| -> String {
        let (ch, code) = status_symbol(st);
        if color { format!("\x1b[{code}m{ch}\x1b[0m") } else { ch.to_string() }
    };
    let width = rows.iter().map(|(n, _, _)| n.len()).max().unwrap_or(4).max(4);
    // Cells per line: what fits the terminal beside the row names.
    let per_line = terminal_width().saturating_sub(width + 2).max(8);
    let mut kinds: Vec<&'static str> = Vec::new();
    for (_, k, _) in &rows {
        if !kinds.contains(k) {
            kinds.push(k);
        }
    }
    let mut seen: Vec<&'static str> = Vec::new();
    for (_, _, cells) in &rows {
        for (_, _, st) in cells {
            if !seen.contains(st) {
                seen.push(st);
            }
        }
    }
    let mut blocks = 0;
    for kind in &kinds {
        let mut cols: Vec<usize> = (0..intervals.len()).filter(|&c| intervals[c].0 == *kind).collect();
        cols.sort_by(|&a, &b| intervals[a].1.cmp(&intervals[b].1));
        let kind_rows: Vec<&(String, &'static str, Vec<Cell>)> = rows.iter().filter(|(_, k, _)| k == kind).collect();
        if kind.is_empty() {
            if blocks > 0 {
                let _ = writeln!(o);
            }
            blocks += 1;
            for (name, _, cells) in &kind_rows {
                let mut line = format!("{name:width$}  ");
                for (_, _, st) in cells {
                    line.push_str(&symbol(st));
                    line.push(' ');
                    line.push_str(st);
                }
                let _ = writeln!(o, "{line}");
            }
            continue;
        }
        // Hours wrap per day; any grid wraps at the terminal's width.
        let mut chunks: Vec<&[usize]> = Vec::new();
        let day_of = |c: usize| if *kind == "hour" { intervals[c].1.get(..10).unwrap_or("") } else { "" };
        let mut rest = &cols[..];
        while let Some(&first) = rest.first() {
            let same_day = rest.iter().take_while(|&&c| day_of(c) == day_of(first)).count();
            let n = same_day.min(per_line);
            chunks.push(&rest[..n]);
            rest = &rest[n..];
        }
        let total = cols.len();
        for chunk in chunks {
            if blocks > 0 {
                let _ = writeln!(o);
            }
            blocks += 1;
            if let (Some(&first), Some(&last)) = (chunk.first(), chunk.last()) {
                let count = if chunk.len() == total {
                    crate::report::plural(total, kind)
                } else {
                    format!("{} of {}", chunk.len(), crate::report::plural(total, kind))
                };
                let _ = writeln!(o, "{:width$}  {} .. {} ({count})", "", intervals[first].1, intervals[last].1);
            }
            for (name, _, cells) in &kind_rows {
                let by_col: HashMap<usize, &str> = cells.iter().filter_map(|(c, _, st)| c.map(|c| (c, *st))).collect();
                let mut line = format!("{name:width$}  ");
                for c in chunk {
                    match by_col.get(c) {
                        Some(st) => line.push_str(&symbol(st)),
                        None => line.push(' '),
                    }
                }
                let _ = writeln!(o, "{}", line.trim_end());
            }
        }
    }
    // The legend names the symbols the grid uses, in a fixed order.
    let legend: Vec<String> = STATUS_LEGEND
        .iter()
        .filter(|(st, _)| seen.contains(st) || (seen.is_empty() && *st == "missing"))
        .map(|(st, words)| format!("{} {words}", symbol(st)))
        .collect();
    let _ = writeln!(o, "\n{}", legend.join("  "));
    if !late.is_empty() {
        let _ = writeln!(o, "late (SLA missed): {}", late.join(", "));
    }
    Ok(0)
}

/// Status -> grid symbol and ANSI colour. Every status has its own symbol.
fn status_symbol(st: &str) -> (char, &'static str) {
    match st {
        "success" => ('#', "32"),
        "up to date" => ('=', "32"),
        "marked" => ('m', "32"),
        "failed" => ('X', "31"),
        "upstream_failed" => ('^', "33"),
        "interrupted" => ('!', "33"),
        "running" => ('>', "36"),
        "retrying" => ('r', "36"),
        "waiting" => ('w', "36"),
        "queued" => ('q', "36"),
        "cleared" => ('c', "35"),
        "skipped" => ('s', "32"),
        _ => ('.', "2"),
    }
}

/// Statuses in legend order, with their words.
const STATUS_LEGEND: &[(&str, &str)] = &[
    ("success", "success"),
    ("up to date", "up to date (no record)"),
    ("marked", "marked"),
    ("failed", "failed"),
    ("upstream_failed", "upstream failed"),
    ("interrupted", "interrupted"),
    ("running", "running"),
    ("retrying", "retrying"),
    ("waiting", "waiting"),
    ("queued", "queued"),
    ("cleared", "cleared"),
    ("missing", "missing"),
];

/// Columns of the terminal stdout goes to: `COLUMNS` when set, else the terminal's
/// size, else 80.
fn terminal_width() -> usize {
    if let Some(n) = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<usize>().ok()).filter(|n| *n > 0) {
        return n;
    }
    // SAFETY: TIOCGWINSZ only writes the winsize struct it is given.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    if std::io::IsTerminal::is_terminal(&std::io::stdout())
        && unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0
        && ws.ws_col > 0
    {
        return usize::from(ws.ws_col);
    }
    80
}

fn cmd_clear(cli: &Cli, sel: &Selection, delete_outputs: bool, downstream: bool) -> Result<i32> {
    if sel.targets.is_empty() {
        return Err(Error::Usage("flux clear needs targets: step names, task ids or output paths".into()));
    }
    let ff = load(cli, sel)?;
    let req = request(sel)?;
    let mut g = graph::build(&ff, &req)?;
    if downstream {
        let (all, tasks) = crate::select::with_downstream(&ff, &req, &g)?;
        g = all;
        g.roots = tasks;
    }
    if delete_outputs {
        guard(&ff).check_outputs(&ff, &g)?;
    }
    let mut db = StateDb::open(&ff.state_dir)?;
    let mut batch = crate::state::Batch::default();
    let mut deleted = 0;
    let exists = if delete_outputs {
        let outputs = g.roots.iter().flat_map(|&t| g.tasks[t as usize].outputs().iter().copied());
        targets_exist(&ff, &g, outputs.filter(|&o| crate::store::is_remote(g.target(o))))
    } else {
        HashMap::new()
    };
    for &t in &g.roots {
        batch.tasks.push(crate::state::TaskUpdate::Clear { task_id: g.task_id(&ff, t) });
        if delete_outputs {
            for &o in g.tasks[t as usize].outputs() {
                let name = g.target(o);
                let abs = ff.abs(name);
                if crate::store::is_remote(name) {
                    if exists.get(&o).copied().unwrap_or(false) {
                        crate::store::remove(name).map_err(|e| Error::Io(format!("cannot delete {e}")))?;
                        deleted += 1;
                    }
                } else if abs.exists() {
                    crate::target::remove(&abs)
                        .map_err(|e| Error::Io(format!("cannot delete {}: {e}", abs.display())))?;
                    deleted += 1;
                }
            }
        }
    }
    db.commit(&mut batch)?;
    print_requests(cli);
    let mut line = format!("cleared {}", crate::report::plural(g.roots.len(), "task"));
    if delete_outputs {
        line.push_str(&format!(", deleted {}", crate::report::plural(deleted, "output")));
    }
    println!("{line}; the next build reruns {}", if g.roots.len() == 1 { "it" } else { "them" });
    Ok(0)
}

/// `flux cache` and `flux cache prune [--all]` (see `crate::cache`).
fn cmd_cache(cli: &Cli, action: Option<&CacheCmd>, output: OutputFormat) -> Result<i32> {
    let ff = load(cli, &Selection::default())?;
    let doc = match action {
        None => {
            let r = crate::cache::Report::read(&ff.state_dir, ff.cache_max).map_err(Error::Io)?;
            if output == OutputFormat::Text {
                print!("{}", r.text());
                return Ok(0);
            }
            r.json()
        }
        Some(CacheCmd::Prune { all }) => {
            let p = if *all {
                crate::cache::prune(&crate::cache::root(&ff.state_dir), 0)
            } else {
                crate::cache::prune_to_limit(&ff.state_dir, ff.cache_max)
            }
            .map_err(Error::Io)?;
            if output == OutputFormat::Text {
                println!("{}", p.text());
                return Ok(0);
            }
            p.json()
        }
    };
    println!("{doc}");
    Ok(0)
}

fn open_for_reading(ff: &Fluxfile) -> Result<StateDb> {
    StateDb::open_existing(&ff.state_dir)?
        .ok_or_else(|| Error::Usage(format!("no state in {} yet: run `flux build` first", ff.state_dir.display())))
}

fn cmd_logs(cli: &Cli, task: &str, run: Option<i64>, attempt: Option<u32>, follow: bool) -> Result<i32> {
    let ff = load(cli, &Selection::default())?;
    let id = graph::canonical_task_id(&ff, task)?;
    let db = open_for_reading(&ff)?;
    let mut attempts = db.attempts(&id)?;
    // --follow on a task that is running for the first time: wait for its attempt to be
    // recorded while some flux holds its lease.
    while follow && attempts.is_empty() && db.held_by_other(&id, 30.0)? {
        std::thread::sleep(std::time::Duration::from_millis(200));
        attempts = db.attempts(&id)?;
    }
    let chosen = attempts
        .iter()
        .rev()
        .filter(|a| run.is_none_or(|r| a.run_id == r))
        .find(|a| attempt.is_none_or(|n| a.attempt == n));
    let Some(a) = chosen else {
        let runs: Vec<String> = {
            let mut v: Vec<i64> = attempts.iter().map(|a| a.run_id).collect();
            v.dedup();
            v.iter().map(i64::to_string).collect()
        };
        let ran_in = if runs.is_empty() { String::new() } else { format!(" (it ran in run {})", runs.join(", ")) };
        return Err(Error::Usage(match (run, attempt) {
            (_, _) if attempts.is_empty() => format!("{id} has never run"),
            (Some(r), Some(n)) => format!("{id} has no attempt {n} in run {r} on record{ran_in}"),
            (Some(r), None) => format!("{id} did not run in run {r}{ran_in}"),
            (None, Some(n)) => format!("{id} has no attempt {n} on record"),
            (None, None) => format!("{id} has never run"),
        }));
    };
    let Some(log) = &a.log_path else {
        println!("{id} attempt {}: {} ({})", a.attempt, a.status.as_str(), a.error.as_deref().unwrap_or("no log"));
        return Ok(0);
    };
    if let Some(job) = &a.job_id {
        eprintln!("{id} attempt {} ran as Slurm job {job}", a.attempt);
    }
    let path = PathBuf::from(log);
    let mut offset = 0u64;
    loop {
        if let Ok(bytes) = std::fs::read(&path) {
            let start = (offset as usize).min(bytes.len());
            let _ = std::io::stdout().write_all(&bytes[start..]);
            let _ = std::io::stdout().flush();
            offset = bytes.len() as u64;
        } else if !follow && a.ended_at.is_some() {
            // The attempt printed nothing, so there is no log file.
            println!("({id} attempt {} printed nothing)", a.attempt);
            return Ok(0);
        }
        if !follow {
            return Ok(0);
        }
        let fresh = StateDb::open_existing(&ff.state_dir)?.map(|d| d.attempts(&id)).transpose()?.unwrap_or_default();
        let done = fresh.iter().any(|x| x.run_id == a.run_id && x.attempt == a.attempt && x.ended_at.is_some());
        let run_done = db.run(a.run_id)?.is_none_or(|r| r.ended_at.is_some());
        if done || run_done {
            if let Ok(bytes) = std::fs::read(&path) {
                let start = (offset as usize).min(bytes.len());
                let _ = std::io::stdout().write_all(&bytes[start..]);
            }
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn cmd_history(cli: &Cli, step: Option<&str>, limit: usize, output: OutputFormat) -> Result<i32> {
    let ff = load(cli, &Selection::default())?;
    if let Some(s) = step
        && ff.step_index(s).is_none()
    {
        return Err(Error::Usage(format!("--step {s}: no such step")));
    }
    let (rows, kinds) = match StateDb::open_existing(&ff.state_dir)? {
        Some(db) => {
            let rows = db.history(step, limit)?;
            // Each run's kind: `build`, or `schedule` for a scheduler tick.
            let mut kinds: HashMap<i64, String> = HashMap::new();
            for a in &rows {
                if let std::collections::hash_map::Entry::Vacant(e) = kinds.entry(a.run_id) {
                    e.insert(db.run_kind(a.run_id)?.unwrap_or_default());
                }
            }
            (rows, kinds)
        }
        None => (Vec::new(), HashMap::new()),
    };
    let kind = |run: i64| kinds.get(&run).map_or("", String::as_str);
    let mut o = std::io::stdout().lock();
    match output {
        OutputFormat::Json => {
            let items: Vec<serde_json::Value> = rows
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "run_id": a.run_id, "run_kind": kind(a.run_id), "task": a.task_id, "step": a.step,
                        "params": serde_json::from_str::<serde_json::Value>(&a.params_json).unwrap_or(serde_json::Value::Null),
                        "attempt": a.attempt, "status": a.status.as_str(), "reason": a.reason,
                        "started_at": a.started_at, "ended_at": a.ended_at,
                        "duration_s": a.ended_at.map(|e| e - a.started_at),
                        "exit_code": a.exit_code, "log": a.log_path, "error": a.error, "job_id": a.job_id,
                    })
                })
                .collect();
            let _ = writeln!(o, "{}", serde_json::json!({ "attempts": items }));
        }
        OutputFormat::Text => {
            for a in &rows {
                let when = chrono::DateTime::from_timestamp(a.started_at as i64, 0)
                    .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                let dur = a.ended_at.map(|e| format!("{:.2}s", e - a.started_at)).unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    o,
                    "{when}  run {:<4}{} {:<15} {:<32} attempt {} {:>8}  {}{}{}",
                    a.run_id,
                    if kind(a.run_id) == "schedule" { " (schedule)" } else { "" },
                    a.status.as_str(),
                    a.task_id,
                    a.attempt,
                    dur,
                    a.reason.as_deref().unwrap_or(""),
                    a.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
                    a.job_id.as_deref().map(|j| format!(" (Slurm job {j})")).unwrap_or_default(),
                );
            }
        }
    }
    Ok(0)
}

extern "C" fn on_signal(_: libc::c_int) {
    crate::builder::INTERRUPTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP only count; the build loop reacts (SPEC §6).
fn install_signal_handlers() {
    crate::procs::on_stop_signals(on_signal);
}
