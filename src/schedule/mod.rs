//! `flux schedule` (SPEC §10): a long-running scheduler, or one tick with `--once`.
//!
//! Each tick evaluates the scheduled steps whose schedule fired since they were last
//! evaluated ([`tick::plan`]), makes their ended intervals due (watermark and SLA deadlines
//! in the state DB), checks SLAs ([`sla`]) and builds the due tasks through the same
//! planner, staleness rules, leases, retries, hooks and executor as `flux build`: the
//! command line hands in that code path as [`Host::build`]. One scheduler per project holds
//! the scheduler lease in the state DB. Depends on builder (its stop flags), fluxfile,
//! graph (requests) and state.

pub mod sla;
pub mod tick;
pub mod time;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::fluxfile::Fluxfile;
use crate::graph::Request;
use crate::state::{Holder, StateDb};

/// A scheduler lease not renewed for this long is taken over (SPEC §10).
pub const LEASE_STALE_S: f64 = 30.0;
/// How often the holder renews it.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// SIGINT/SIGTERM received by the scheduler (its handler counts here, not in the
/// builder's counter, so that running tasks get their grace first).
static STOPS: AtomicUsize = AtomicUsize::new(0);
/// Another scheduler took the lease over (this one was silent for too long): stop.
static LOST: AtomicBool = AtomicBool::new(false);

/// `flux schedule`'s options.
#[derive(Debug, Clone)]
pub struct Options {
    pub once: bool,
    pub dry_run: bool,
    /// The scheduler's clock starts here (tests, replays); it runs on from it.
    pub now: Option<DateTime<Utc>>,
    pub tick: Duration,
    pub grace: Duration,
    pub newest_first: bool,
    /// Wait for another scheduler's lease instead of exiting 2.
    pub wait: bool,
}

/// What a build of one tick's request did.
#[derive(Debug, Default)]
pub struct Built {
    pub run_id: Option<i64>,
    /// Status of each requested task, by id (made for `flux schedule` only).
    pub statuses: HashMap<String, &'static str>,
    /// The build's exit code (0, 1 a task failed, 130 interrupted).
    pub code: i32,
}

/// What the scheduler needs from the command line: loading the Fluxfile, building a
/// request as `flux build` does, and printing. Builds run on a thread of their own while
/// the scheduler ticks on.
pub trait Host: Sync {
    fn load(&self) -> Result<Fluxfile>;
    /// Plan and build (or, with `dry_run`, print what would run and why).
    fn build(&self, ff: &Fluxfile, req: Request, dry_run: bool) -> Result<Built>;
    /// A line for the user (stderr).
    fn say(&self, line: &str);
}

/// The scheduler's clock: `--now` moves it, real time runs it on.
struct Clock {
    base: Option<DateTime<Utc>>,
    started: Instant,
}

impl Clock {
    fn now(&self) -> DateTime<Utc> {
        match self.base {
            Some(b) => b + chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default(),
            None => Utc::now(),
        }
    }
}

/// The Fluxfile in use, and the content hash of the files it was read from.
struct Current {
    ff: Arc<Fluxfile>,
    hash: Option<blake3::Hash>,
}

/// The content hash of the files a Fluxfile is read from: its own, and whatever its
/// `include` patterns match now (a new match counts as a change).
fn source_hash(ff: &Fluxfile) -> Option<blake3::Hash> {
    let mut files: Vec<PathBuf> = vec![ff.path.clone()];
    for pat in &ff.include_globs {
        let mut found: Vec<PathBuf> = glob::glob(pat).ok()?.filter_map(|p| p.ok()).filter(|p| p.is_file()).collect();
        found.sort();
        files.extend(found);
    }
    let mut h = blake3::Hasher::new();
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        h.update(&[0]);
        h.update(&std::fs::read(&f).ok()?);
        h.update(&[0]);
    }
    Some(h.finalize())
}

/// Intervals handed to one build: (step, value, task ids).
type Work = Vec<(String, String, Vec<String>)>;

/// Run the scheduler; returns the exit code.
pub fn run(host: &dyn Host, opts: &Options) -> Result<i32> {
    let ff = host.load()?;
    let hash = source_hash(&ff);
    let mut cur = Current { ff: Arc::new(ff), hash };
    let clock = Clock { base: opts.now, started: Instant::now() };
    if opts.dry_run {
        return dry_run(host, &cur.ff, clock.now(), opts);
    }
    let mut db = StateDb::open(&cur.ff.state_dir)?;
    let me = Holder::this_process();
    install_signal_handlers();
    let mut said_wait = false;
    loop {
        match db.scheduler_acquire(&me, LEASE_STALE_S)? {
            None => break,
            Some(h) => {
                let since = chrono::DateTime::from_timestamp(h.started_at as i64, 0)
                    .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default();
                let heard = (crate::state::now_secs() - h.heartbeat_at).max(0.0);
                let who = format!(
                    "another flux schedule holds this project's scheduler lease: pid {} on {}, since {since}, last heard {heard:.0}s ago",
                    h.pid, h.host
                );
                if !opts.wait {
                    return Err(Error::Usage(format!(
                        "{who}; stop it first, or pass --wait to take over when it stops"
                    )));
                }
                if !said_wait {
                    host.say(&format!("{who}; waiting for it to stop"));
                    said_wait = true;
                }
                if stopping() {
                    return Ok(0);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    // What a dead scheduler (or build) left running ends now, even if this one has
    // nothing to build; its runs are closed by the next build (SPEC §5).
    match crate::procs::kill_dead_runs_groups(&db, &cur.ff.state_dir) {
        Ok(0) => {}
        Ok(n) => host.say(&format!("flux schedule: ended {n} process group(s) left running by flux run(s) that died")),
        Err(e) => host.say(&Error::from(e).render()),
    }
    let beat = Heartbeat::start(cur.ff.state_dir.clone(), me.clone(), opts.grace);
    host.say(&format!(
        "flux schedule: {} scheduled step(s), time zone {}{}",
        cur.ff.steps.iter().filter(|s| s.schedule.is_some()).count(),
        cur.ff.timezone.name(),
        if opts.once { String::new() } else { format!(", a tick every {:?}", opts.tick) }
    ));
    let result = std::thread::scope(|scope| -> Result<bool> {
        // One build at a time, on a thread of its own, so that ticks (SLA checks, reloads,
        // new intervals) go on while it runs; it keeps the definition it started with.
        let mut flight: Option<(std::thread::ScopedJoinHandle<'_, Result<Built>>, Work)> = None;
        let mut failed = false;
        let mut first = true;
        loop {
            if let Some((h, _)) = &flight
                && h.is_finished()
                && let Some((h, work)) = flight.take()
            {
                let built = h.join().unwrap_or_else(|_| Err(Error::Internal("the build thread panicked".into())));
                match finish(host, &mut db, &cur.ff, &clock, work, built) {
                    Ok(code) => failed |= code == 1,
                    Err(e) if opts.once => return Err(e),
                    Err(e) => host.say(&e.render()),
                }
                if opts.once {
                    return Ok(failed);
                }
            }
            if stopping() || (opts.once && !first) {
                if flight.is_none() {
                    return Ok(failed);
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if !first {
                reload(host, &mut cur);
            }
            first = false;
            let started = Instant::now();
            let in_flight: Vec<(String, String)> =
                flight.iter().flat_map(|(_, w)| w.iter().map(|(s, v, _)| (s.clone(), v.clone()))).collect();
            let (req, work, backlog) = match evaluate(host, &mut db, &cur.ff, clock.now(), opts, &in_flight) {
                Ok(x) => x,
                Err(e) if opts.once => return Err(e),
                Err(e) => {
                    host.say(&e.render());
                    (None, Vec::new(), false)
                }
            };
            if let Some(req) = req
                && flight.is_none()
            {
                let ff = cur.ff.clone();
                flight = Some((scope.spawn(move || host.build(&ff, req, false)), work));
            }
            if opts.once {
                continue;
            }
            // Intervals left for later go as soon as the build ends; else the next tick.
            let pause = opts.tick.saturating_sub(started.elapsed());
            let until = Instant::now() + pause;
            while Instant::now() < until && !stopping() {
                if backlog && flight.as_ref().is_some_and(|(h, _)| h.is_finished()) {
                    break;
                }
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
            }
        }
    });
    beat.stop();
    let _ = db.scheduler_release(&me);
    let failed = result?;
    if LOST.load(Ordering::SeqCst) {
        return Err(Error::Usage(
            "another flux schedule took this project's scheduler lease over (this one was silent for more than 30 s); stopped".into(),
        ));
    }
    if stopping() {
        host.say("flux schedule: stopped");
        return Ok(0);
    }
    Ok(if failed { 1 } else { 0 })
}

fn stopping() -> bool {
    STOPS.load(Ordering::SeqCst) > 0
}

/// Reload the Fluxfile if it or an include changed; a broken edit is reported and the
/// last good definition kept (SPEC §10).
fn reload(host: &dyn Host, cur: &mut Current) {
    let hash = source_hash(&cur.ff);
    if hash.is_some() && hash == cur.hash {
        return;
    }
    match host.load() {
        Ok(ff) => {
            host.say(&format!("flux schedule: {} changed, reloaded", cur.ff.path.display()));
            let hash = source_hash(&ff);
            *cur = Current { ff: Arc::new(ff), hash };
        }
        Err(e) => {
            host.say(&format!(
                "{}\nflux schedule: the Fluxfile has errors; keeping the last good definition until it is fixed",
                e.render()
            ));
            // Not reported again until it changes.
            cur.hash = hash;
        }
    }
}

/// The evaluation part of a tick: evaluate the steps whose schedule fired, record their
/// new intervals and watermarks, check SLAs. Returns the request for the due intervals
/// (none if nothing is due), those intervals, and whether some were held back.
fn evaluate(
    host: &dyn Host,
    db: &mut StateDb,
    ff: &Fluxfile,
    now: DateTime<Utc>,
    opts: &Options,
    in_flight: &[(String, String)],
) -> Result<(Option<Request>, Work, bool)> {
    let steps = db.sched_steps()?;
    let open = db.open_intervals()?;
    let plan = tick::plan(ff, &steps, &open, in_flight, now, opts.newest_first);
    let mut targets: Vec<String> = Vec::new();
    let mut work: Work = Vec::new();
    let mut backlog = false;
    let building = !in_flight.is_empty();
    for t in &plan {
        let step = &ff.steps[t.step];
        let Some(why) = &t.why else { continue };
        let ti = step.time_param.unwrap_or(0);
        let kind = &step.params[ti].1;
        let new: Vec<(String, Option<f64>)> = t.new.iter().map(|(v, d)| (kind.format(*v), *d)).collect();
        db.sched_evaluated(&step.name, t.through.map(|v| kind.format(v)).as_deref(), &new, time::secs(now))?;
        if let Some(p) = &t.unenumerable {
            host.say(&format!(
                "{}: left out: its param `{p}` has no list of values to schedule (give it one, e.g. {p} = [\"a\", \"b\"])",
                step.name
            ));
            continue;
        }
        backlog |= t.held > 0 || (building && !t.due.is_empty());
        if building {
            if !t.new.is_empty() {
                host.say(&format!("{}: {why}; {} due, built when the running build ends", step.name, t.new.len()));
            }
            continue;
        }
        if !t.due.is_empty() {
            host.say(&format!("{}: {why}; {}", step.name, due_text(step, &t.due, t.held)));
        }
        for &v in &t.due {
            let ids = tick::task_ids(step, v);
            targets.extend(ids.iter().cloned());
            work.push((step.name.clone(), kind.format(v), ids));
        }
    }
    check_slas(host, db, ff, now, 0)?;
    if targets.is_empty() {
        return Ok((None, work, backlog));
    }
    Ok((Some(Request { targets, now: Some(now.naive_utc()), ..Default::default() }), work, backlog))
}

/// After a build: record which intervals are done, mark its run a scheduler tick, check
/// SLAs again. Returns the build's exit code.
fn finish(
    host: &dyn Host,
    db: &mut StateDb,
    ff: &Fluxfile,
    clock: &Clock,
    work: Work,
    built: Result<Built>,
) -> Result<i32> {
    let after = clock.now();
    let (built, err) = match built {
        Ok(b) => (b, None),
        // A planning error: the intervals count as tried, and are tried again when their
        // step's schedule next fires.
        Err(e) => (Built { code: e.exit_code(), ..Default::default() }, Some(e)),
    };
    let done: Vec<(String, String, bool)> = work
        .into_iter()
        .map(|(step, value, ids)| {
            let ok = tick::interval_done(&ids, &built.statuses);
            (step, value, ok)
        })
        .collect();
    db.sched_built(&done, time::secs(after))?;
    if let Some(id) = built.run_id {
        db.set_run_kind(id, "schedule")?;
    }
    check_slas(host, db, ff, after, built.run_id.unwrap_or(0))?;
    match err {
        Some(e) => Err(e),
        None => Ok(built.code),
    }
}

fn check_slas(host: &dyn Host, db: &mut StateDb, ff: &Fluxfile, now: DateTime<Utc>, run_id: i64) -> Result<()> {
    let missed = db.sched_sla_check(time::secs(now))?;
    if missed.is_empty() {
        return Ok(());
    }
    let misses = sla::group(ff, &missed);
    for m in &misses {
        host.say(&format!("LATE {}", m.message(ff)));
    }
    for w in sla::announce(ff, &misses, run_id) {
        host.say(&format!("warning: {w}"));
    }
    Ok(())
}

/// `3 intervals 2024-01-01..2024-01-03 (2 held back by max_active_runs)`.
fn due_text(step: &crate::fluxfile::Step, due: &[crate::param::ParamValue], held: usize) -> String {
    let kind = &step.params[step.time_param.unwrap_or(0)].1;
    let mut s = match (due.first(), due.last()) {
        (Some(a), Some(b)) if due.len() > 1 => {
            format!("{} intervals {}..{}", due.len(), kind.format(*a), kind.format(*b))
        }
        (Some(a), _) => format!("interval {}", kind.format(*a)),
        _ => "nothing due".to_string(),
    };
    if held > 0 {
        s.push_str(&format!(" ({held} more held back by max_active_runs)"));
    }
    s
}

/// `--once --dry-run`: what the next tick would do, per step, and the tasks that would
/// run with their reasons. Writes nothing.
fn dry_run(host: &dyn Host, ff: &Fluxfile, now: DateTime<Utc>, opts: &Options) -> Result<i32> {
    let (steps, open) = match StateDb::open_existing(&ff.state_dir)? {
        Some(db) => (db.sched_steps()?, db.open_intervals()?),
        None => (Vec::new(), Vec::new()),
    };
    let plan = tick::plan(ff, &steps, &open, &[], now, opts.newest_first);
    let mut targets = Vec::new();
    let tz = ff.timezone;
    host.say(&format!("flux schedule --dry-run at {}", time::show(now, tz)));
    for t in &plan {
        let step = &ff.steps[t.step];
        match &t.why {
            None => {
                let next = steps.iter().find(|s| s.step == step.name).and_then(|s| {
                    step.schedule.as_ref().and_then(|sc| time::next_fire(sc, time::from_secs(s.evaluated_at), tz))
                });
                host.say(&format!(
                    "{}: not due (next fire {})",
                    step.name,
                    next.map_or_else(|| "unknown".to_string(), |n| time::show(n, tz))
                ));
            }
            Some(why) => {
                if let Some(p) = &t.unenumerable {
                    host.say(&format!("{}: {why}; left out: its param `{p}` has no list of values", step.name));
                    continue;
                }
                host.say(&format!("{}: {why}; {}", step.name, due_text(step, &t.due, t.held)));
                for &v in &t.due {
                    targets.extend(tick::task_ids(step, v));
                }
            }
        }
    }
    if targets.is_empty() {
        return Ok(0);
    }
    let req = Request { targets, now: Some(now.naive_utc()), ..Default::default() };
    host.build(ff, req, true)?;
    Ok(0)
}

/// Renews the scheduler lease on a connection of its own while ticks build, and turns a
/// stop request into the builder's stop: launch nothing new at once, interrupt the running
/// tasks after the grace (or at a second signal).
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(state_dir: PathBuf, me: Holder, grace: Duration) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut db = StateDb::open(&state_dir).ok();
            let mut last = Instant::now();
            let mut stop_seen: Option<(Instant, usize)> = None;
            let mut interrupted = 0;
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                let stops = STOPS.load(Ordering::SeqCst);
                if stops > 0 && stop_seen.is_none() {
                    crate::builder::DRAIN.store(true, Ordering::SeqCst);
                    stop_seen = Some((Instant::now(), stops));
                }
                if let Some((at, first)) = stop_seen {
                    let want = if stops > first {
                        2
                    } else if at.elapsed() >= grace {
                        1
                    } else {
                        0
                    };
                    while interrupted < want {
                        crate::builder::INTERRUPTS.fetch_add(1, Ordering::SeqCst);
                        interrupted += 1;
                    }
                }
                if last.elapsed() >= HEARTBEAT {
                    if let Some(db) = db.as_mut()
                        && let Ok(false) = db.scheduler_heartbeat(&me)
                        && !LOST.swap(true, Ordering::SeqCst)
                    {
                        // Silent for too long (stopped, asleep): another scheduler has the
                        // project now. Stop as on SIGTERM.
                        STOPS.fetch_add(1, Ordering::SeqCst);
                    }
                    last = Instant::now();
                }
            }
        });
        Heartbeat { stop, thread: Some(thread) }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    STOPS.fetch_add(1, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP only count; the loop and the heartbeat thread react.
fn install_signal_handlers() {
    crate::procs::on_stop_signals(on_signal);
}
