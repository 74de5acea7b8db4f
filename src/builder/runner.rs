//! The build loop itself (`Build::run`): the runner that decides tasks as they become
//! ready, claims, starts and finishes them, and batches their records.

use super::*;

impl Build<'_> {
    /// Build for real.
    pub fn run(&self, db: &mut StateDb, rep: &mut dyn Reporter, make_executor: &MakeExecutor) -> Result<Report> {
        let ids = self.ids();
        let metas = self.stat_all()?;
        let g = self.g;
        let n = g.tasks.len();
        db.set_holder(crate::state::Holder::this_process());
        let run_id = match db.begin_run(&self.opts.command) {
            Ok(id) => id,
            Err(e) => {
                // Nothing was claimed or started: every task stays queued.
                rep.finish();
                return Ok(Report {
                    ids,
                    results: vec![TaskResult { status: "queued", ..Default::default() }; n],
                    interrupted: false,
                    run_id: None,
                    digest_reads: self.digests.reads.load(std::sync::atomic::Ordering::Relaxed),
                    db_error: Some(e.to_string()),
                });
            }
        };
        // What dead runs left running ends before anything runs again (SPEC §5).
        let swept = crate::procs::sweep_dead_runs(db, &self.ff.state_dir)?;
        // Tasks outside --only are never decided, so they never count.
        let outside = self.opts.only.as_ref().map_or(0, |o| n - o.len());
        rep.event(Event::Planned { total: n - outside });
        let echo = if self.opts.stream { rep.line_sink() } else { None };
        let dependents = g.dependents();
        let pending: Vec<u32> = g.tasks.iter().map(|t| t.deps().len() as u32).collect();
        let mut ready: Vec<u32> = (0..n as u32).filter(|&t| pending[t as usize] == 0).collect();
        ready.reverse();
        let mut r = Runner {
            b: self,
            planner: &self.planner,
            cp: Vec::new(),
            ids,
            metas,
            dependents,
            pending,
            st: vec![St::Waiting; n],
            results: vec![TaskResult::default(); n],
            prints: HashMap::default(),
            texts: HashMap::default(),
            ready,
            queue: BinaryHeap::new(),
            retry_at: Vec::new(),
            waiting: Vec::new(),
            foreign: Vec::new(),
            claimed: HashSet::new(),
            starts: 0,
            claim_mark: (Instant::now(), 0),
            pending_running: HashMap::new(),
            sensor_since: HashMap::new(),
            pool_busy: vec![0; self.ff.pools.len()],
            cpus_busy: 0,
            mem_busy: 0,
            batch: Batch::default(),
            pending_quick: Vec::new(),
            ending: false,
            last_flush: Instant::now(),
            running: HashMap::new(),
            in_flight: 0,
            queued: VecDeque::new(),
            any_failed: false,
            seen_interrupts: 0,
            db_error: None,
            failure_to_write: false,
            run_id,
            made_dirs: HashSet::new(),
            warned_in_place: HashSet::new(),
            // Per run, so that a task's orphans after a kill -9 of flux never share a staging
            // path with a later attempt.
            stage_root: stage_dir(&self.ff.state_dir, run_id),
            hooks: Hooks::new(self.ff.dir.clone(), self.ff.notify.clone()),
            before: HashMap::new(),
            commands: HashMap::new(),
            echo,
            dead_attempts: HashMap::new(),
            orphans: Default::default(),
            spawned: Vec::new(),
            start_log: crate::procs::StartLog::new(&stage_dir(&self.ff.state_dir, run_id)),
            pre: Vec::new(),
            restated: vec![false; g.targets.len()],
        };
        r.pre = r.decide_ahead();
        r.swept(swept, rep);
        let exec = make_executor(&Setup { jobs: self.opts.jobs, run_id, stage_root: r.stage_root.clone() });
        // A fatal error (`?` below) stops the running commands before it is returned.
        let stop_guard = crate::procs::StopOnError::armed();
        let mut last_beat = Instant::now();
        loop {
            r.decide_ready(rep);
            if !r.ready.is_empty() {
                // Deciding stopped to write its records: write them, and decide the rest
                // before anything starts, so that tasks still start in priority order.
                r.flush_or_stop(db, &*exec, rep);
                continue;
            }
            let ints = interrupts();
            if ints > r.seen_interrupts {
                if r.seen_interrupts == 0 {
                    rep.event(Event::Interrupting);
                }
                exec.interrupt_all(ints >= 2);
                r.seen_interrupts = ints;
            }
            let stop = r.stopping() || (self.opts.fail_fast && r.any_failed);
            if stop && !r.queued.is_empty() {
                // Nothing new starts once the build stops: not even what already waits for a worker.
                exec.cancel_queued();
            }
            r.check_waiting(stop, rep);
            if stop {
                for (t, _) in std::mem::take(&mut r.foreign) {
                    r.done(t, St::Interrupted, "interrupted");
                }
            } else {
                let step = r.check_foreign(db, rep).and_then(|()| {
                    r.requeue_retries();
                    r.launch(db, &*exec, rep)
                });
                if let Err(e) = step {
                    r.fatal(e, &*exec, rep);
                }
            }
            if last_beat.elapsed() >= HEARTBEAT && r.db_error.is_none() {
                if let Err(e) = db.heartbeat() {
                    r.fatal(e.into(), &*exec, rep);
                }
                last_beat = Instant::now();
            }
            for w in r.hooks.warnings() {
                rep.event(Event::Warning(&w));
            }
            let idle = r.ready.is_empty()
                && (stop
                    || (r.queue.is_empty() && r.retry_at.is_empty() && r.waiting.is_empty() && r.foreign.is_empty()));
            if r.in_flight == 0 && idle {
                break;
            }
            if !r.ready.is_empty() {
                continue;
            }
            if PANIC_AFTER_START.load(std::sync::atomic::Ordering::Relaxed)
                && r.running.values().any(|(at, _)| at.elapsed().is_ok_and(|d| d >= Duration::from_millis(500)))
            {
                panic!("FLUX_TEST_PANIC_AFTER_START is set: a panic in the build loop, as asked");
            }
            // Wait briefly for a job, to notice signals, timeouts, retries and late sources.
            let fin = exec.wait(Duration::from_millis(50));
            r.note_groups(exec.take_spawned());
            if let Some(fin) = fin {
                // Bookkeeping first: a failure must stop --fail-fast before anything else
                // starts, and the finished task's dependents must be queued by priority.
                r.in_flight -= 1;
                let still_queued = r.queued.iter().position(|&(q, _)| q == fin.id).and_then(|k| r.queued.remove(k));
                if let (Some(_), Outcome::NotStarted) = (still_queued, &fin.outcome) {
                    r.unstart(fin.id);
                } else {
                    if let Some((t, reason)) = still_queued {
                        // Taken by a worker after all, just before the build stopped.
                        r.begin(t, reason, rep);
                    }
                    r.finished(fin, rep);
                    if !r.stopping() {
                        // The worker that sent this has taken the oldest queued job.
                        while r.queued.len() > r.in_flight.saturating_sub(self.opts.jobs) {
                            let Some((t, reason)) = r.queued.pop_front() else { break };
                            r.begin(t, reason, rep);
                        }
                    }
                }
            }
            // A failure is written at once, with the release of its lease: another build
            // must see it rather than run the task again.
            if r.failure_to_write
                || r.batch.len() >= BATCH_RECORDS
                || (!r.batch.is_empty() && r.last_flush.elapsed() >= BATCH_INTERVAL)
            {
                r.flush_or_stop(db, &*exec, rep);
            }
        }
        // Tasks never started (fail-fast, interrupt) keep what they were.
        let interrupted = r.seen_interrupts > 0;
        for (ti, res) in r.results.iter_mut().enumerate() {
            if res.status.is_empty() {
                res.status =
                    if interrupted && matches!(r.st[ti], St::Queued | St::Waiting) { "interrupted" } else { "queued" };
            }
        }
        // Leases claimed ahead for tasks that never started (fail-fast, interrupt).
        let unstarted: Vec<String> = r.claimed.iter().map(|&t| r.ids[t as usize].clone()).collect();
        r.batch.releases.extend(unstarted);
        for w in r.hooks.finish() {
            rep.event(Event::Warning(&w));
        }
        let failed = r.st.iter().any(|s| matches!(s, St::Failed | St::UpstreamFailed));
        let end = if interrupted {
            "interrupted"
        } else if failed || r.db_error.is_some() {
            "failed"
        } else {
            "success"
        };
        r.write_back(db, end, &*exec, rep);
        exec.finish();
        stop_guard.disarm();
        let _ = crate::guard::remove_owned(&r.stage_root, &r.stage_root);
        rep.finish();
        Ok(Report {
            ids: r.ids,
            results: r.results,
            interrupted,
            run_id: Some(run_id),
            digest_reads: self.digests.reads.load(std::sync::atomic::Ordering::Relaxed),
            db_error: r.db_error,
        })
    }
}

/// A task waiting for its missing sources.
struct Waiting {
    t: u32,
    deadline: Instant,
    next_check: Instant,
}

/// The state of one real build: what `Build::run` drives, one method per concern.
struct Runner<'b, 'a> {
    b: &'b Build<'a>,
    /// Each task's decision made ahead, on every core, from the stats the build started
    /// with: taken when the task becomes ready if none of the targets it read was stat'ed
    /// again meanwhile (else it is decided again). See [`Runner::decide_ahead`].
    pre: Vec<Option<Decision>>,
    /// Per target: stat'ed again since the build started (see `set_meta`).
    restated: Vec<bool>,
    planner: &'b Planner<'a>,
    ids: Vec<String>,
    /// Current stat of every target (outputs are re-stated after their task ran).
    metas: Vec<Option<Meta>>,
    dependents: Vec<Vec<u32>>,
    /// Unfinished deps per task.
    pending: Vec<u32>,
    st: Vec<St>,
    results: Vec<TaskResult>,
    /// The fingerprint and quick key of each task decided to run, until it is done
    /// (kept for the tasks in hand only: a large build holds few).
    prints: HashMap<u32, (Option<Fingerprint>, Option<crate::state::Hash>)>,
    /// What the success of a queued or running task records of what it ran and read,
    /// made with its fingerprint.
    texts: HashMap<u32, Box<crate::plan::RunText>>,
    /// Longest remaining path per task; computed when the first task is queued (a no-op
    /// build never needs it).
    cp: Vec<u64>,
    /// Tasks whose deps are finished, to be decided.
    ready: Vec<u32>,
    /// Stale tasks: priority, critical path, then the earliest created.
    queue: BinaryHeap<QueueItem>,
    retry_at: Vec<(Instant, u32)>,
    waiting: Vec<Waiting>,
    /// Index in `batch.attempts` of `running` records not yet written, by task.
    pending_running: HashMap<u32, usize>,
    /// Tasks this process has claimed ahead of starting them (still queued).
    claimed: HashSet<u32>,
    /// Tasks started so far, and that count and the time at the last claim: the rate
    /// that sizes the next claim-ahead.
    starts: u64,
    claim_mark: (Instant, u64),
    /// Tasks claimed by another live flux process, and when to look again.
    foreign: Vec<(u32, Instant)>,
    /// When each sensor first probed.
    sensor_since: HashMap<u32, Instant>,
    pool_busy: Vec<usize>,
    cpus_busy: u32,
    mem_busy: u64,
    batch: Batch,
    /// Quick keys to record, held until the digests they were confirmed with are settled
    /// (see `settle_quick`).
    pending_quick: Vec<(u32, crate::state::Hash)>,
    /// The build's last write: what is not settled by now is written as it is.
    ending: bool,
    last_flush: Instant,
    running: HashMap<u32, (SystemTime, Reason)>,
    /// Jobs started and not yet received back (the executor's own count drops a moment
    /// before its result arrives, so the loop keeps its own).
    in_flight: usize,
    /// Jobs handed over beyond `-j`, oldest first: they wait in the executor's queue until
    /// a worker's job ends (see `launch`); a task is announced as started only then.
    queued: VecDeque<(u32, Reason)>,
    any_failed: bool,
    seen_interrupts: usize,
    /// Why the build stopped on a state DB write that failed for good (see `fatal`).
    db_error: Option<String>,
    /// A failure was recorded: write it at the end of this round, not with the batch.
    failure_to_write: bool,
    run_id: i64,
    made_dirs: HashSet<PathBuf>,
    /// Steps already warned of a command that wrote its final path instead of staging.
    warned_in_place: HashSet<u32>,
    stage_root: PathBuf,
    hooks: Hooks,
    /// What was at the outputs of each running `stage = false` task before its attempt.
    before: HashMap<u32, Vec<Option<crate::guard::Before>>>,
    /// `-p`: the commands of tasks handed over, until they start.
    commands: HashMap<u32, Vec<String>>,
    /// `--stream`: where the commands' output lines go.
    echo: Option<crate::report::LineSink>,
    /// Attempts that were running when their flux died, by task id (see `recognise`).
    dead_attempts: HashMap<String, crate::state::DeadAttempt>,
    /// Slurm jobs of dead runs, until adopted (see `exec::slurm::adopt`).
    orphans: crate::exec::slurm::Orphans,
    /// Process groups spawned for tasks not announced yet (see `note_groups`).
    spawned: Vec<crate::procs::Spawned>,
    /// The attempts this run started, noted at once (see `procs::StartLog`).
    start_log: crate::procs::StartLog,
}

impl Runner<'_, '_> {
    fn step(&self, t: u32) -> &Step {
        &self.b.ff.steps[self.b.g.tasks[t as usize].step as usize]
    }

    /// Dead runs were cleaned up: keep what they had running, for `recognise`.
    fn swept(&mut self, swept: crate::procs::Swept, rep: &mut dyn Reporter) {
        if swept.killed > 0 {
            let runs: Vec<String> = swept.runs.iter().map(|r| r.to_string()).collect();
            rep.event(Event::Warning(&format!(
                "ended {} process group(s) left running by flux run(s) {} that died",
                swept.killed,
                runs.join(", ")
            )));
        }
        self.dead_attempts.extend(swept.running);
        self.orphans.extend(swept.slurm, &self.stage_root.join("slurm"));
    }

    /// Record process groups on their attempts: those of tasks announced (`begin`), whose
    /// attempt row is in the batch or written; the others wait for their announcement.
    fn note_groups(&mut self, new: Vec<crate::procs::Spawned>) {
        self.spawned.extend(new);
        if self.spawned.is_empty() {
            return;
        }
        for s in std::mem::take(&mut self.spawned) {
            if !self.running.contains_key(&s.id) {
                self.spawned.push(s);
                continue;
            }
            let attempt = self.results[s.id as usize].attempts;
            if let Some(a) = self.pending_record(s.id, attempt) {
                a.group = Some((s.pgid, s.start));
                continue;
            }
            self.batch.attempt_facts.push(AttemptFact::Group {
                run_id: self.run_id,
                task_id: self.ids[s.id as usize].clone(),
                attempt,
                pgid: s.pgid,
                start: s.start,
            });
        }
    }

    /// Whether a task about to run was in fact done by a flux that died before writing its
    /// record: its attempt was `running` when that flux died, was started for the very
    /// fingerprint the task has now, the step stages its outputs (so they appear only once
    /// every command succeeded), and every output is local and was modified after that
    /// attempt started. Then its success is recorded instead of running it again (see
    /// docs/decisions.md, "A commit interrupted by kill -9").
    fn recognise(&mut self, t: u32) -> bool {
        let ti = t as usize;
        if self.dead_attempts.is_empty() {
            return false;
        }
        let Some(dead) = self.dead_attempts.remove(&self.ids[ti]) else { return false };
        let step = self.step(t);
        let reason_ok =
            matches!(self.results[ti].reason, Some(Reason::InputChanged | Reason::CommandChanged | Reason::Failed));
        let Some((fp, quick)) = self.prints.get(&t).copied().and_then(|(fp, q)| fp.map(|fp| (fp, q))) else {
            return false;
        };
        let outputs = self.b.g.tasks[ti].outputs();
        if !step.stage || !reason_ok || outputs.is_empty() || dead.expect != Some((fp.cmd, fp.inputs)) {
            return false;
        }
        let started_ns = (dead.started_at * 1e9) as i64;
        let mut newest = started_ns;
        for &o in outputs {
            if store::is_remote(self.b.g.target(o)) {
                return false;
            }
            let m = self.b.restat(o);
            self.set_meta(o, m);
            match m {
                Some(m) if m.mtime_ns >= started_ns => newest = newest.max(m.mtime_ns),
                _ => return false,
            }
        }
        let log = self.b.log_path(t, &self.ids[ti], dead.run_id, dead.attempt);
        let log = log.exists().then(|| log.to_string_lossy().into_owned());
        let mut rec = self.b.attempt(
            dead.run_id,
            t,
            &self.ids[ti],
            dead.attempt,
            Status::Success,
            None,
            dead.started_at,
            newest as f64 / 1e9,
            Some(0),
            log.as_deref(),
            None,
        );
        rec.reason = dead.reason;
        self.batch.attempts.push(rec);
        self.batch.tasks.push(TaskUpdate::Success {
            task_id: self.ids[ti].clone(),
            cmd_hash: fp.cmd,
            inputs_hash: fp.inputs,
            duration_s: (newest - started_ns) as f64 / 1e9,
        });
        self.record_quick(t, quick);
        true
    }

    /// Remember that the fingerprint holds for these input stats (see `Planner::decide`),
    /// with the next write of the records (see `settle_quick`).
    fn record_quick(&mut self, t: u32, quick: Option<crate::state::Hash>) {
        if let Some(key) = quick {
            self.pending_quick.push((t, key));
        }
    }

    /// Add the quick keys whose inputs' digests are settled (`Digests::take_settled` just
    /// ran) to the batch, confirmed as of now: the next build trusts them, since every
    /// input's mtime is older than its settled digest by the racy margin. A key with an
    /// input still inside its margin waits for a later write; at the build's last write it
    /// is recorded as of the moment the build stat'ed its targets, which the next build
    /// trusts only for inputs older than that (SPEC §5: an edit within the same clock tick
    /// is never missed).
    fn settle_quick(&mut self) {
        if self.pending_quick.is_empty() {
            return;
        }
        let now = target::now_ns();
        let (g, digests) = (self.b.g, self.b.digests);
        let mut wait = Vec::new();
        for (t, key) in std::mem::take(&mut self.pending_quick) {
            let settled = g.tasks[t as usize]
                .inputs()
                .iter()
                .all(|&i| self.metas[i as usize].is_some_and(|m| digests.settled(g.target(i), &m)));
            if !settled && !self.ending {
                wait.push((t, key));
                continue;
            }
            let verified_ns = if settled { now } else { self.planner.stat_ns };
            self.batch.tasks.push(TaskUpdate::Quick { task_id: self.ids[t as usize].clone(), key, verified_ns });
        }
        self.pending_quick = wait;
    }

    /// Add a finished attempt's record; if its `running` record has not been written yet,
    /// replace that one instead (one row per attempt for the many short tasks).
    fn record_attempt(&mut self, t: u32, mut rec: AttemptRecord) {
        match self.running_record(t, rec.attempt) {
            Some(a) => {
                (rec.group, rec.expect) = (rec.group.or(a.group), rec.expect.or(a.expect));
                *a = rec;
            }
            None => self.batch.attempts.push(rec),
        }
    }

    /// The `running` record of this attempt of `t` while it waits in the batch unwritten.
    fn pending_record(&mut self, t: u32, attempt: u32) -> Option<&mut AttemptRecord> {
        let i = *self.pending_running.get(&t)?;
        let id = &self.ids[t as usize];
        self.batch.attempts.get_mut(i).filter(|a| a.attempt == attempt && a.task_id == *id)
    }

    /// The same, to be made its final record: it no longer waits as `running`.
    fn running_record(&mut self, t: u32, attempt: u32) -> Option<&mut AttemptRecord> {
        let i = self.pending_running.remove(&t)?;
        let id = &self.ids[t as usize];
        self.batch.attempts.get_mut(i).filter(|a| a.attempt == attempt && a.task_id == *id)
    }

    fn flush(&mut self, db: &mut StateDb) -> Result<()> {
        // Tasks that started since the last write and still run: their record says so
        // (`flux status`); the many short tasks that ended in between cost no write.
        let mut still: Vec<u32> = self.pending_running.keys().copied().collect();
        still.sort_unstable();
        for t in still {
            self.batch
                .tasks
                .push(TaskUpdate::Status { task_id: self.ids[t as usize].clone(), status: Status::Running });
        }
        self.batch.digests.extend(self.b.digests.take_settled(self.ending));
        self.settle_quick();
        self.b.digests.release();
        db.commit(&mut self.batch)?;
        self.pending_running.clear();
        self.last_flush = Instant::now();
        self.failure_to_write = false;
        Ok(())
    }

    /// Write the records; if that fails for good, stop the build (see `fatal`). Once it
    /// has stopped, records wait in memory for `write_back`.
    fn flush_or_stop(&mut self, db: &mut StateDb, exec: &dyn Executor, rep: &mut dyn Reporter) {
        if self.db_error.is_some() {
            return;
        }
        if let Err(e) = self.flush(db) {
            self.fatal(e, exec, rep);
        }
    }

    /// The build is stopping: Ctrl-C, or a state DB write that failed for good.
    fn stopping(&self) -> bool {
        self.seen_interrupts > 0 || self.db_error.is_some() || DRAIN.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A write to the state DB failed past its retries (busy past the limit, disk full, an
    /// I/O error), SPEC §8: stop as Ctrl-C does (start nothing more, terminate the running
    /// tasks' process groups, which then end `interrupted`) and keep every record in
    /// memory for `write_back`. The one place where a build stops on a fatal error.
    fn fatal(&mut self, e: crate::error::Error, exec: &dyn Executor, rep: &mut dyn Reporter) {
        let cause = match e {
            crate::error::Error::State(m) | crate::error::Error::Io(m) => m,
            other => other.to_string(),
        };
        if self.db_error.is_none() {
            rep.event(Event::Warning(&format!(
                "{cause}: stopping running tasks; the records are kept and written when the state database takes them"
            )));
            self.db_error = Some(cause);
        }
        exec.interrupt_all(false);
    }

    /// At the end of the build: write the remaining records and the run's end. After a
    /// failed write, try again with pauses (0.5 s doubling to 5 s) until the busy limit
    /// is over (or a Ctrl-C): a lock released or a disk freed meanwhile loses nothing.
    fn write_back(&mut self, db: &mut StateDb, end: &str, exec: &dyn Executor, rep: &mut dyn Reporter) {
        let deadline = Instant::now() + crate::state::busy_limit();
        let ints = interrupts();
        let mut pause = Duration::from_millis(500);
        let mut said = false;
        self.ending = true;
        loop {
            let wrote = self.flush(db).and_then(|()| Ok(db.end_run(self.run_id, end)?));
            let Err(e) = wrote else { return };
            if self.db_error.is_none() {
                self.fatal(e, exec, rep);
            } else if let crate::error::Error::State(m) = e {
                self.db_error = Some(m);
            }
            let now = Instant::now();
            if now >= deadline || interrupts() > ints {
                return;
            }
            if !said {
                said = true;
                rep.event(Event::Warning(&format!(
                    "writing {} records to the state database again, for up to {}s",
                    self.batch.len(),
                    crate::state::busy_limit().as_secs()
                )));
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    fn done(&mut self, t: u32, st: St, status: &'static str) {
        self.before.remove(&t);
        if self.claimed.remove(&t) || matches!(st, St::Ran | St::Failed | St::Interrupted) {
            // Give the lease back with the task's record (they are committed together).
            self.batch.releases.push(self.ids[t as usize].clone());
        }
        self.st[t as usize] = st;
        self.results[t as usize].status = status;
        self.prints.remove(&t);
        self.texts.remove(&t);
        release(t, &self.dependents, &mut self.pending, &mut self.ready);
    }

    fn enqueue(&mut self, t: u32) {
        if self.cp.is_empty() {
            self.cp = critical_path(self.b.g, &self.ids, self.b.records, &self.dependents);
        }
        self.queue.push(self.queue_key(t));
    }

    /// A task's place in the queue (critical paths are known once anything was queued).
    fn queue_key(&self, t: u32) -> QueueItem {
        (self.step(t).priority, self.cp.get(t as usize).copied().unwrap_or(0), Reverse(t))
    }

    /// A target's stat, taken again after the build started (its task ran or another
    /// process wrote it, or a source appeared): decisions made ahead that read it no
    /// longer hold.
    fn set_meta(&mut self, x: u32, m: Option<Meta>) {
        self.metas[x as usize] = m;
        self.restated[x as usize] = true;
    }

    /// Every task's decision from the stats the build started with, on every core (a
    /// build that runs nothing spent most of its time deciding, one task after another).
    /// A decision is a function of the task's record and of its inputs' and outputs'
    /// stats; `decide_ready` takes it only while none of those was stat'ed again.
    /// Small builds decide as they go.
    fn decide_ahead(&self) -> Vec<Option<Decision>> {
        use rayon::prelude::*;
        let n = self.b.g.tasks.len();
        if n < 1024 {
            return Vec::new();
        }
        let (planner, ids, metas) = (self.planner, &self.ids, &self.metas);
        (0..n as u32)
            .into_par_iter()
            .with_min_len(256)
            // Without the record text: held until each task starts, it would cost memory
            // in proportion to the graph.
            .map(|t| Some(planner.decide(t, &ids[t as usize], metas, false, Deciding::Ahead)))
            .collect()
    }

    /// Decide every task whose deps are all finished.
    fn decide_ready(&mut self, rep: &mut dyn Reporter) {
        // Stop when the records pile up, to write them before deciding on (see `run`): a
        // build that confirms every task (the first one after a full build) holds a
        // bounded batch.
        while (self.batch.len() < DECIDED_BATCH || self.db_error.is_some())
            && let Some(t) = self.ready.pop()
        {
            let ti = t as usize;
            if self.b.opts.only.as_ref().is_some_and(|o| !o.contains(&t)) {
                // --only: the rest of the graph is taken as it is (its outputs were checked).
                self.done(t, St::Skipped, "skipped");
                continue;
            }
            if self.b.g.tasks[ti].deps().iter().any(|&d| self.st[d as usize].finished_bad()) {
                rep.event(Event::UpstreamFailed { id: &self.ids[ti] });
                // Recorded so that `flux status` shows it (the fingerprint is kept).
                self.batch
                    .tasks
                    .push(TaskUpdate::Status { task_id: self.ids[ti].clone(), status: Status::UpstreamFailed });
                self.done(t, St::UpstreamFailed, "upstream_failed");
                continue;
            }
            // A decision made ahead holds while every target it read has its first stat.
            let ahead = self.pre.get_mut(ti).and_then(Option::take);
            let task = &self.b.g.tasks[ti];
            let ahead =
                ahead.filter(|_| !task.outputs().iter().chain(task.inputs()).any(|&x| self.restated[x as usize]));
            // The record text is made with the fingerprint while few tasks hold one.
            let how = if self.texts.len() < TEXTS_HELD { Deciding::Build } else { Deciding::Ahead };
            let mut decision = match ahead {
                Some(d) => d,
                None => self.planner.decide(t, &self.ids[ti], &self.metas, false, how),
            };
            if matches!(decision, Decision::Fail { .. }) && self.restat_missing_sources(t) {
                // A source stat'ed missing when the build started has appeared since (a
                // sensor upstream waited for it): decide on what is there now.
                decision = self.planner.decide(t, &self.ids[ti], &self.metas, false, how);
            }
            match decision {
                Decision::Skip { adopt, quick } => {
                    if let Some(fp) = adopt {
                        self.batch.tasks.push(TaskUpdate::Adopt {
                            task_id: self.ids[ti].clone(),
                            cmd_hash: fp.cmd,
                            inputs_hash: fp.inputs,
                        });
                    }
                    self.record_quick(t, quick);
                    rep.event(Event::Skipped { id: &self.ids[ti] });
                    self.done(t, St::Skipped, "skipped");
                }
                Decision::Run { reason, fp, quick, text } => {
                    self.prints.insert(t, (fp, quick));
                    if let Some(text) = text {
                        self.texts.insert(t, text);
                    }
                    self.st[ti] = St::Queued;
                    self.results[ti].reason = Some(reason);
                    self.enqueue(t);
                }
                Decision::Fail { message } => {
                    let wait = self.b.opts.wait.unwrap_or(self.step(t).wait);
                    if !wait.is_zero() && self.waiting.iter().all(|w| w.t != t) {
                        let now = Instant::now();
                        rep.event(Event::Waiting { id: &self.ids[ti], message: &message });
                        self.unclaim(t);
                        self.st[ti] = St::Waiting;
                        let poll = self.step(t).poll.min(wait);
                        self.waiting.push(Waiting { t, deadline: now + wait, next_check: now + poll });
                        self.batch
                            .tasks
                            .push(TaskUpdate::Status { task_id: self.ids[ti].clone(), status: Status::Waiting });
                    } else {
                        self.fail(t, FailInfo { message, ..Default::default() }, rep);
                    }
                }
            }
        }
    }

    /// Stat again the sources of task `t` that were missing; true if any has appeared.
    /// Sources are stat'ed once when the build starts, but a task may become ready much
    /// later (after a sensor, a wait or a long upstream), so a missing one is looked at
    /// again before the task fails.
    fn restat_missing_sources(&mut self, t: u32) -> bool {
        let mut appeared = false;
        for &i in self.b.g.tasks[t as usize].inputs() {
            if self.b.g.producer[i as usize] == NONE && self.metas[i as usize].is_none() {
                let m = self.b.restat(i);
                self.set_meta(i, m);
                appeared |= self.metas[i as usize].is_some();
            }
        }
        appeared
    }

    /// Look again for the sources of waiting tasks; give up past their deadline.
    fn check_waiting(&mut self, stop: bool, rep: &mut dyn Reporter) {
        if self.waiting.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut still = Vec::new();
        for w in std::mem::take(&mut self.waiting) {
            if stop {
                self.done(w.t, St::Interrupted, "interrupted");
                continue;
            }
            if now < w.next_check {
                still.push(w);
                continue;
            }
            let g = self.b.g;
            for &i in g.tasks[w.t as usize].inputs() {
                if g.producer[i as usize] == NONE {
                    let m = self.b.restat(i);
                    self.set_meta(i, m);
                }
            }
            let missing = g.tasks[w.t as usize]
                .inputs()
                .iter()
                .find(|&&i| self.b.g.producer[i as usize] == NONE && self.metas[i as usize].is_none());
            match missing {
                None => self.ready.push(w.t),
                Some(&i) if now >= w.deadline => {
                    let waited = humantime(self.b.opts.wait.unwrap_or(self.step(w.t).wait));
                    let message = format!(
                        "missing source `{}` needed by {} (waited {waited})",
                        self.b.g.target(i),
                        self.ids[w.t as usize]
                    );
                    self.fail(w.t, FailInfo { message, ..Default::default() }, rep);
                }
                Some(_) => {
                    let poll = self.step(w.t).poll;
                    still.push(Waiting { next_check: now + poll, ..w });
                }
            }
        }
        self.waiting.extend(still);
    }

    fn requeue_retries(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self.retry_at.iter().filter(|(at, _)| *at <= now).map(|&(_, t)| t).collect();
        self.retry_at.retain(|(at, _)| *at > now);
        for t in due {
            self.enqueue(t);
        }
    }

    /// Start queued tasks while there are slots, pool places, CPUs and memory. The tasks
    /// of one round are claimed in the state DB in one transaction before any is spawned
    /// (SPEC §6); a task another live flux holds is waited for, holding no slot.
    fn launch(&mut self, db: &mut StateDb, exec: &dyn Executor, rep: &mut dyn Reporter) -> Result<()> {
        let opts = self.b.opts;
        let (mut pool_busy, mut cpus_busy, mut mem_busy) = (self.pool_busy.clone(), self.cpus_busy, self.mem_busy);
        let mut picked: Vec<u32> = Vec::new();
        let mut deferred = Vec::new();
        // Up to `-j` more jobs than workers, so that a worker whose job ends starts the next
        // at once instead of waiting for this loop's bookkeeping (on tiny tasks that wait
        // is a tenth of the build). See `may_queue` for which tasks may wait.
        let limit = if opts.fail_fast { opts.jobs } else { 2 * opts.jobs };
        while self.in_flight + picked.len() < limit {
            let Some(item) = self.queue.pop() else { break };
            let t = item.2.0;
            if self.in_flight + picked.len() >= opts.jobs && !self.may_queue(item, &picked) {
                self.queue.push(item);
                break;
            }
            let step = self.step(t);
            let (pool, (cpus, mem)) = (step.pool, self.b.budget(step));
            let pool_full = pool.is_some_and(|p| pool_busy[p] >= self.b.ff.pools[p].1);
            // A task asking for more than the machine has runs alone rather than never.
            let busy = self.in_flight + picked.len() > 0;
            let over = busy && (cpus_busy + cpus > opts.cpu_budget || (mem > 0 && mem_busy + mem > opts.mem_budget));
            if pool_full || over {
                deferred.push(item);
                continue;
            }
            if let Some(p) = pool {
                pool_busy[p] += 1;
            }
            cpus_busy += cpus;
            mem_busy += mem;
            picked.push(t);
        }
        self.queue.extend(deferred);
        if picked.is_empty() {
            return Ok(());
        }
        // Tasks claimed in an earlier round start at once; the others are claimed now,
        // together with some queued tasks ahead of need, so that most starts wait for no
        // transaction. Either way they start in the order picked.
        let to_claim: Vec<u32> = picked.iter().copied().filter(|t| !self.claimed.contains(t)).collect();
        if !to_claim.is_empty() {
            let mut ahead = Vec::new();
            let (since, before) = self.claim_mark;
            let rate = (self.starts - before) as f64 / since.elapsed().as_secs_f64().max(1e-3);
            // (`max` last: a `-j` above a quarter of the cap still claims four rounds.)
            let want =
                ((rate * CLAIM_AHEAD_SPAN.as_secs_f64()) as usize).min(CLAIM_AHEAD_MAX).max(4 * opts.jobs.max(1));
            self.claim_mark = (Instant::now(), self.starts);
            // Queued tasks, highest first, past those claimed already.
            let mut passed = Vec::new();
            while ahead.len() < want && passed.len() < want {
                let Some(item) = self.queue.pop() else { break };
                if self.claimed.contains(&item.2.0) {
                    passed.push(item);
                } else {
                    ahead.push(item);
                }
            }
            self.queue.extend(passed);
            // Then the tasks that those in hand will make ready (each new task of a chain
            // would otherwise take a transaction of its own).
            let soon = self.soon_ready(&to_claim, &ahead, want.saturating_sub(ahead.len()));
            let (n_now, n_queued) = (to_claim.len(), ahead.len());
            let candidates: Vec<u32> = to_claim.into_iter().chain(ahead.iter().map(|i| i.2.0)).chain(soon).collect();
            let names: Vec<&str> = candidates.iter().map(|&t| self.ids[t as usize].as_str()).collect();
            let claims = db.claim(&names, self.run_id, LEASE_STALE_S)?;
            if claims.iter().any(|c| c.taken_over) {
                // A lease of a dead flux: end what it left running first (SPEC §5).
                let swept = crate::procs::sweep_dead_runs(db, &self.b.ff.state_dir)?;
                self.swept(swept, rep);
            }
            for (k, (t, claim)) in candidates.into_iter().zip(claims).enumerate() {
                let ti = t as usize;
                let loaded = self.b.records.get(&self.ids[ti]).and_then(|r| r.success_at);
                if k >= n_now + n_queued {
                    // Not ready yet: held only if nothing is to be looked into; anything
                    // else is looked into when it is ready, as for any task.
                    if claim.mine && claim.failed_in.is_none() && claim.success_at == loaded {
                        self.claimed.insert(t);
                    } else if claim.mine {
                        self.batch.releases.push(self.ids[ti].clone());
                    }
                    continue;
                }
                if !claim.mine {
                    rep.event(Event::Waiting { id: &self.ids[ti], message: "another flux process is running it" });
                    self.st[ti] = St::Waiting;
                    self.foreign.push((t, Instant::now() + FOREIGN_POLL));
                    continue;
                }
                if let Some((other_run, error)) = claim.failed_in {
                    // It failed in another build since our records were loaded: take that
                    // result rather than running it a second time.
                    let message = format!(
                        "failed in another flux process (run {other_run}): {}",
                        error.as_deref().unwrap_or("see its log")
                    );
                    self.fail(t, FailInfo { message, ..Default::default() }, rep);
                    continue;
                }
                // Only a success recorded since our records were loaded can mean another
                // process did the work; then look closer.
                if (claim.success_at != loaded && self.done_elsewhere(db, t)?) || self.recognise(t) {
                    self.results[ti].reason = None;
                    self.batch.releases.push(self.ids[ti].clone());
                    rep.event(Event::Skipped { id: &self.ids[ti] });
                    self.done(t, St::Skipped, "skipped");
                    continue;
                }
                self.claimed.insert(t);
                if k >= n_now {
                    self.queue.push(ahead[k - n_now]);
                }
            }
        }
        for t in picked {
            if self.claimed.remove(&t) {
                self.start(t, db, exec, rep)?;
            }
        }
        Ok(())
    }

    /// Up to `limit` tasks not ready yet that will be once the tasks in hand end, to be
    /// claimed ahead with `now` and `queued`: each has every dependency finished well,
    /// running, claimed, among those or found before it here (breadth first from the
    /// tasks in hand). Another build could not run one before its upstream ends anyway.
    fn soon_ready(&self, now: &[u32], queued: &[QueueItem], limit: usize) -> Vec<u32> {
        let mut found = Vec::new();
        if limit == 0 {
            return found;
        }
        let in_hand =
            self.running.keys().chain(self.queued.iter().map(|q| &q.0)).chain(&self.claimed).chain(now).copied();
        let mut frontier: VecDeque<u32> = in_hand.chain(queued.iter().map(|i| i.2.0)).collect();
        let mut seen: HashSet<u32> = frontier.iter().copied().collect();
        let held = |x: u32, seen: &HashSet<u32>| {
            matches!(self.st[x as usize], St::Ran | St::Skipped | St::Running) || seen.contains(&x)
        };
        // Wide fan-ins looked at and found waiting for other work: not looked at again in
        // this call (each would be scanned once per dependency in hand).
        let mut not_yet: HashSet<u32> = HashSet::new();
        while let Some(x) = frontier.pop_front() {
            for &d in &self.dependents[x as usize] {
                if found.len() >= limit {
                    return found;
                }
                let di = d as usize;
                if seen.contains(&d)
                    || not_yet.contains(&d)
                    || self.pending[di] == 0
                    || self.pending[di] > SOON_PENDING_MAX
                    || self.st[di] != St::Waiting
                    || self.b.opts.only.as_ref().is_some_and(|o| !o.contains(&d))
                {
                    continue;
                }
                let deps = self.b.g.tasks[di].deps();
                if !deps.iter().all(|&u| held(u, &seen)) {
                    if deps.len() > 8 {
                        not_yet.insert(d);
                    }
                } else {
                    seen.insert(d);
                    found.push(d);
                    frontier.push_back(d);
                }
            }
        }
        found
    }

    /// Give back the lease of a task claimed ahead that will not start now.
    fn unclaim(&mut self, t: u32) {
        if self.claimed.remove(&t) {
            self.batch.releases.push(self.ids[t as usize].clone());
        }
    }

    /// Whether another process has completed this task since our records were loaded
    /// (checked after claiming it, and after waiting for another holder).
    fn done_elsewhere(&mut self, db: &StateDb, t: u32) -> Result<bool> {
        let ti = t as usize;
        let Some(fresh) = db.task_record(&self.ids[ti])? else { return Ok(false) };
        let loaded = self.b.records.get(&self.ids[ti]).and_then(|r| r.success_at);
        if fresh.last_status != Status::Success || fresh.success_at.is_none() || fresh.success_at == loaded {
            return Ok(false);
        }
        let Some(fp) = self.prints.get(&t).and_then(|p| p.0) else { return Ok(false) };
        for &o in self.b.g.tasks[ti].outputs() {
            let m = self.b.restat(o);
            self.set_meta(o, m);
            if self.metas[o as usize].is_none() {
                return Ok(false);
            }
        }
        Ok(fresh.cmd_hash == Some(fp.cmd) && fresh.inputs_hash == Some(fp.inputs))
    }

    /// If another flux's attempt at this task ended in failure after this build started.
    fn failed_elsewhere(&self, db: &StateDb, t: u32) -> Result<Option<String>> {
        let attempts = db.attempts(&self.ids[t as usize])?;
        let Some(last) = attempts.last() else { return Ok(None) };
        // Recorded since our records were loaded: rows are numbered in commit order.
        let recent = last.run_id != self.run_id && last.id > db.attempts_seen();
        Ok((recent && last.status == Status::Failed).then(|| {
            format!(
                "failed in another flux process (run {}): {}",
                last.run_id,
                last.error.as_deref().unwrap_or("see its log")
            )
        }))
    }

    /// Tasks held by another live process: once its lease is gone, take the result or run.
    fn check_foreign(&mut self, db: &StateDb, rep: &mut dyn Reporter) -> Result<()> {
        let now = Instant::now();
        let mut still = Vec::new();
        for (t, next) in std::mem::take(&mut self.foreign) {
            if next > now || db.held_by_other(&self.ids[t as usize], LEASE_STALE_S)? {
                still.push((t, if next > now { next } else { now + FOREIGN_POLL }));
            } else if self.done_elsewhere(db, t)? {
                self.results[t as usize].reason = None;
                rep.event(Event::Skipped { id: &self.ids[t as usize] });
                self.done(t, St::Skipped, "skipped");
            } else if let Some(message) = self.failed_elsewhere(db, t)? {
                // The other build tried it while we waited and it failed: take that
                // result rather than running it a second time.
                self.fail(t, FailInfo { message, ..Default::default() }, rep);
            } else {
                self.st[t as usize] = St::Queued;
                self.enqueue(t);
            }
        }
        self.foreign = still;
        Ok(())
    }

    /// Spawn a claimed task.
    fn start(&mut self, t: u32, db: &mut StateDb, exec: &dyn Executor, rep: &mut dyn Reporter) -> Result<()> {
        let ti = t as usize;
        let step = self.step(t);
        let (pool, (cpus, mem), stage) = (step.pool, self.b.budget(step), step.stage);
        self.results[ti].attempts += 1;
        self.starts += 1;
        let attempt = self.results[ti].attempts;
        let made = &mut self.made_dirs;
        match self.b.prepare(t, &self.ids[ti], attempt, self.run_id, &self.stage_root, made, &self.metas) {
            Ok(mut job) => {
                // A dead flux's Slurm job for this very work is adopted, not submitted again.
                self.orphans.offer(&mut job, self.prints.get(&t).and_then(|p| p.0).map(|fp| (fp.cmd, fp.inputs)));
                if let Some(echo) = &self.echo {
                    job.echo = Some(crate::exec::Echo { label: format!("{} | ", self.ids[ti]), sink: echo.clone() });
                }
                if self.b.opts.print_commands {
                    self.commands.insert(t, job.commands.clone());
                }
                if let Some(p) = pool {
                    self.pool_busy[p] += 1;
                }
                self.cpus_busy += cpus;
                self.mem_busy += mem;
                if !stage {
                    self.before.insert(t, self.b.before_attempt(t));
                    // A crash while this runs must be visible next time (`incomplete`).
                    self.batch
                        .tasks
                        .push(TaskUpdate::Status { task_id: self.ids[ti].clone(), status: Status::Running });
                    if let Err(e) = self.flush(db) {
                        // Not recorded running, so not started: undo, and give the lease back.
                        self.batch.tasks.pop();
                        self.results[ti].attempts -= 1;
                        if let Some(p) = pool {
                            self.pool_busy[p] -= 1;
                        }
                        self.cpus_busy -= cpus;
                        self.mem_busy -= mem;
                        self.batch.releases.push(self.ids[ti].clone());
                        return Err(e);
                    }
                }
                let reason = self.results[ti].reason.unwrap_or(Reason::Forced);
                self.st[ti] = St::Running;
                if self.in_flight >= self.b.opts.jobs {
                    self.queued.push_back((t, reason));
                } else {
                    self.begin(t, reason, rep);
                }
                self.in_flight += 1;
                exec.start(job);
            }
            Err(message) => self.fail(t, FailInfo { message, attempt, ..Default::default() }, rep),
        }
        Ok(())
    }

    /// Whether a task may wait in the executor's queue for a worker, to start the moment
    /// one is free. Not if it runs on Slurm, nor if it takes a pool, cpus or mem (the budgets count it from the
    /// moment it is handed over, while a worker frees up only when some other job ends),
    /// nor if it is unstaged (it is marked running in the state DB when handed over), nor
    /// if a task that the jobs in hand may make ready would come first: the queue must
    /// not overtake priorities or the critical path. (`--fail-fast` queues nothing, so
    /// that no job can start after a failure.)
    fn may_queue(&self, item: QueueItem, picked: &[u32]) -> bool {
        let step = self.step(item.2.0);
        if step.pool.is_some() || step.cpus > 0 || step.mem.is_some() || !step.stage {
            return false;
        }
        // A job handed to Slurm is submitted at once: there is no worker queue to wait in.
        if self.b.executor(step) == crate::exec::Kind::Slurm {
            return false;
        }
        let in_hand = self.running.keys().chain(self.queued.iter().map(|(q, _)| q)).chain(picked);
        for &r in in_hand {
            let next = &self.dependents[r as usize];
            // A wide fan-out is not worth scanning on every launch: just do not queue.
            if next.len() > 64 {
                return false;
            }
            if next.iter().any(|&d| self.st[d as usize] == St::Waiting && self.queue_key(d) > item) {
                return false;
            }
        }
        true
    }

    /// A task's job has started on a worker: announce it and record a `running` attempt.
    fn begin(&mut self, t: u32, reason: Reason, rep: &mut dyn Reporter) {
        let ti = t as usize;
        let attempt = self.results[ti].attempts;
        // A `running` attempt (upserted by the final record), so that history and
        // `flux logs --follow` see it while it runs.
        let log = self.b.log_path(t, &self.ids[ti], self.run_id, attempt).to_string_lossy().into_owned();
        let mut running = self.b.attempt(
            self.run_id,
            t,
            &self.ids[ti],
            attempt,
            Status::Running,
            Some(reason),
            unix_now(),
            0.0,
            None,
            Some(&log),
            None,
        );
        running.ended_at = None;
        self.pending_running.insert(t, self.batch.attempts.len());
        self.batch.attempts.push(running);
        if let Some(fp) = self.prints.get(&t).and_then(|p| p.0) {
            // What this attempt is expected to record, should flux die before it does: in
            // the run's start file at once, in the state DB with the next batch.
            let started_at = self.batch.attempts.last().map_or_else(unix_now, |a| a.started_at);
            self.start_log.note(&crate::state::DeadAttempt {
                run_id: self.run_id,
                task_id: self.ids[ti].clone(),
                attempt,
                reason: Some(reason.as_str().to_string()),
                started_at,
                expect: Some((fp.cmd, fp.inputs)),
            });
            // Its `running` record was just added to the batch: the fingerprint goes with it.
            if let Some(a) = self.batch.attempts.last_mut() {
                a.expect = Some((fp.cmd, fp.inputs));
            }
        }
        let commands = self.commands.remove(&t);
        rep.event(Event::Started {
            id: &self.ids[ti],
            reason: reason.as_str(),
            attempt,
            commands: commands.as_deref(),
        });
        self.running.insert(t, (SystemTime::now(), reason));
    }

    /// A job cancelled in the queue (the build is stopping): the task is as if never
    /// handed over.
    fn unstart(&mut self, t: u32) {
        let ti = t as usize;
        self.results[ti].attempts -= 1;
        self.st[ti] = St::Queued;
        self.before.remove(&t);
        self.batch.releases.push(self.ids[ti].clone());
    }

    /// A job came back: commit its outputs, record it, retry or fail it.
    fn finished(&mut self, fin: crate::exec::Finished, rep: &mut dyn Reporter) {
        let t = fin.id;
        let ti = t as usize;
        self.note_groups(Vec::new());
        let step = self.step(t);
        let (pool, (cpus, mem)) = (step.pool, self.b.budget(step));
        let (sensor, retries, retry_delay, retry_backoff, poll, wait, timeout) =
            (step.sensor, step.retries, step.retry_delay, step.retry_backoff, step.poll, step.wait, step.timeout);
        if let Some(p) = pool {
            self.pool_busy[p] -= 1;
        }
        self.cpus_busy -= cpus;
        self.mem_busy -= mem;
        let (started, reason) = self.running.remove(&t).unwrap_or((SystemTime::now(), Reason::Forced));
        let attempt = self.results[ti].attempts;
        let log =
            fin.logged.then(|| self.b.log_path(t, &self.ids[ti], self.run_id, attempt).to_string_lossy().into_owned());
        self.results[ti].log = log.clone();
        let started_s = started.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let outcome = fin.outcome;
        if let Some(job_id) = fin.job_id {
            let (run_id, task_id) = (self.run_id, self.ids[ti].clone());
            self.batch.attempt_facts.push(AttemptFact::Job { run_id, task_id, attempt, job_id });
        }
        if let Some(&i) = fin.in_place.first()
            && self.warned_in_place.insert(self.b.g.tasks[ti].step)
        {
            let name = self.b.g.target(self.b.g.tasks[ti].outputs()[i]);
            let step = self.step(t);
            rep.event(Event::Warning(&format!(
                "step `{}` wrote `{name}` itself instead of the staging path flux gave it: accepted as with \
                 `stage = false` (not atomic: readers may see a partial file, and a failed attempt's file is \
                 deleted); write to `{{{{ outputs[{i}] }}}}` for atomic writes, or set `stage = false`",
                step.name
            )));
        }
        if outcome == Outcome::Success {
            for (&o, m) in self.b.g.tasks[ti].outputs().iter().zip(fin.outputs) {
                self.set_meta(o, Some(m));
            }
        }
        let dur = fin.duration.as_secs_f64();
        self.results[ti].duration_s = Some(dur);
        if outcome == Outcome::Success {
            self.sensor_since.remove(&t);
            let known = self.texts.remove(&t);
            let text = crate::explain::detail(self.planner, t, &self.ids[ti], &self.metas, &self.b.opts.redact, known);
            let (commands, inputs_json) = text.unzip();
            let ended = unix_now();
            if let Some(a) = self.running_record(t, attempt) {
                // Its `running` record, not written yet, becomes the final one.
                a.status = Status::Success;
                a.started_at = started_s;
                a.ended_at = Some(ended);
                a.exit_code = Some(0);
                a.log_path.clone_from(&log);
                (a.commands, a.inputs_json) = (commands, inputs_json);
            } else {
                let mut record = self.b.attempt(
                    self.run_id,
                    t,
                    &self.ids[ti],
                    attempt,
                    Status::Success,
                    Some(reason),
                    started_s,
                    ended,
                    Some(0),
                    log.as_deref(),
                    None,
                );
                (record.commands, record.inputs_json) = (commands, inputs_json);
                self.batch.attempts.push(record);
            }
            let (fp, quick) = self.prints.get(&t).copied().unwrap_or_default();
            let fp = fp.or_else(|| self.planner.fingerprint(t, &self.ids[ti], &self.metas).ok());
            if let Some(fp) = fp {
                self.batch.tasks.push(TaskUpdate::Success {
                    task_id: self.ids[ti].clone(),
                    cmd_hash: fp.cmd,
                    inputs_hash: fp.inputs,
                    duration_s: dur,
                });
                self.record_quick(t, quick);
            }
            rep.event(Event::Succeeded { id: &self.ids[ti], reason: reason.as_str(), duration: fin.duration });
            self.hook(t, "success", "success", attempt, log.clone(), None);
            self.done(t, St::Ran, "success");
            return;
        }
        for w in self.b.cleanup_failed(t, &self.ids[ti], &self.stage_root, self.before.remove(&t)) {
            rep.event(Event::Warning(&w));
        }
        let refused = matches!(outcome, Outcome::Refused { .. });
        let (status, exit_code, mut message) = match outcome {
            Outcome::Failed { exit_code, message } => (Status::Failed, exit_code, message),
            Outcome::Refused { message } => (Status::Failed, None, message),
            Outcome::TimedOut => {
                (Status::Failed, None, format!("timed out after {}", humantime(timeout.unwrap_or_default())))
            }
            _ => (Status::Interrupted, None, "interrupted".to_string()),
        };
        let live = status == Status::Failed && !self.stopping();
        // A sensor's probe failing means "not yet": probe again every `poll` until `wait` is over.
        if live && sensor {
            let since = *self.sensor_since.entry(t).or_insert_with(|| Instant::now() - fin.duration);
            let wait = self.b.opts.wait.unwrap_or(wait);
            if since.elapsed() + poll <= wait {
                self.results[ti].attempts -= 1;
                self.st[ti] = St::Waiting;
                rep.event(Event::Waiting { id: &self.ids[ti], message: "sensor not ready" });
                self.retry_at.push((Instant::now() + poll, t));
                return;
            }
            message = format!("sensor gave up after {}: {message}", humantime(wait));
        }
        if live && !refused && attempt <= retries {
            let delay = crate::limits::retry_delay(retry_delay, retry_backoff, attempt);
            self.record_attempt(
                t,
                self.b.attempt(
                    self.run_id,
                    t,
                    &self.ids[ti],
                    attempt,
                    Status::Retrying,
                    Some(reason),
                    started_s,
                    unix_now(),
                    exit_code,
                    log.as_deref(),
                    Some(&message),
                ),
            );
            rep.event(Event::Retrying { id: &self.ids[ti], attempt: attempt + 1, delay, message: &message });
            self.hook(t, "retry", "retrying", attempt, log, Some(message));
            self.st[ti] = St::Queued;
            self.retry_at.push((Instant::now() + delay, t));
            return;
        }
        let info = FailInfo {
            message,
            attempt,
            exit_code,
            log,
            reason: Some(reason),
            started_s: Some(started_s),
            interrupted: status == Status::Interrupted,
        };
        self.fail(t, info, rep);
    }

    /// Record a task as failed (or interrupted) and let its dependents know.
    fn fail(&mut self, t: u32, f: FailInfo, rep: &mut dyn Reporter) {
        let ti = t as usize;
        let status = if f.interrupted { Status::Interrupted } else { Status::Failed };
        let now = unix_now();
        let attempt = f.attempt.max(1);
        self.record_attempt(
            t,
            self.b.attempt(
                self.run_id,
                t,
                &self.ids[ti],
                attempt,
                status,
                f.reason.or(self.results[ti].reason),
                f.started_s.unwrap_or(now),
                now,
                f.exit_code,
                f.log.as_deref(),
                Some(&f.message),
            ),
        );
        self.batch.tasks.push(TaskUpdate::Status { task_id: self.ids[ti].clone(), status });
        self.failure_to_write = true;
        self.results[ti].message = Some(f.message.clone());
        self.results[ti].log = f.log.clone();
        if f.interrupted {
            rep.event(Event::Warning(&format!("{} interrupted", self.ids[ti])));
            self.done(t, St::Interrupted, "interrupted");
        } else {
            self.any_failed = true;
            rep.event(Event::Failed { id: &self.ids[ti], message: &f.message, log: f.log.as_deref() });
            self.hook(t, "failure", "failed", attempt, f.log, Some(f.message));
            self.done(t, St::Failed, "failed");
        }
    }

    /// Fire `on_<event>` (if the step has it) and the webhook.
    fn hook(
        &mut self,
        t: u32,
        event: &'static str,
        status: &str,
        attempt: u32,
        log: Option<String>,
        error: Option<String>,
    ) {
        let step = self.step(t);
        let tpl = match event {
            "success" => step.on_success.as_ref(),
            "failure" => step.on_failure.as_ref(),
            _ => step.on_retry.as_ref(),
        };
        if tpl.is_none() && self.b.ff.notify.is_none() {
            return;
        }
        let ti = t as usize;
        let id = &self.ids[ti];
        let command = tpl.and_then(|tpl| {
            let task = &self.b.g.tasks[ti];
            let ins: Vec<String> = task.inputs().iter().map(|&i| self.b.g.target(i).to_string()).collect();
            let outs: Vec<String> = task.outputs().iter().map(|&o| self.b.g.target(o).to_string()).collect();
            let r = CmdRender { inputs: &ins, outputs: &outs, attempt, run_id: self.run_id };
            let cmd = self.planner.render_one(t, id, tpl, &r).ok()?;
            let hook_log = self.b.log_path(t, id, self.run_id, attempt).with_extension(format!("on_{event}.log"));
            Some((cmd, hook_log))
        });
        let step = self.step(t);
        let params = crate::plan::params_json(step, &self.b.g.tasks[ti].params);
        let ev = TaskEvent {
            event,
            step: step.name.clone(),
            task: id.clone(),
            params,
            status: status.to_string(),
            attempt,
            log,
            run_id: self.run_id,
            error,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        self.hooks.fire(command, ev);
    }
}

/// What is known about a failure.
#[derive(Default)]
struct FailInfo {
    message: String,
    attempt: u32,
    exit_code: Option<i32>,
    log: Option<String>,
    reason: Option<Reason>,
    started_s: Option<f64>,
    interrupted: bool,
}

/// `<state>/stage/<run id>/`, after removing what runs killed more than a day ago left.
fn stage_dir(state_dir: &Path, run_id: i64) -> PathBuf {
    let root = state_dir.join("stage");
    if let Ok(entries) = std::fs::read_dir(&root) {
        let day = std::time::Duration::from_secs(86_400);
        for e in entries.flatten() {
            let old =
                e.metadata().and_then(|m| m.modified()).ok().and_then(|m| m.elapsed().ok()).is_some_and(|a| a > day);
            if old {
                let _ = crate::guard::remove_owned(&e.path(), &e.path());
            }
        }
    }
    root.join(run_id.to_string())
}

/// A stale task's place in the queue: priority, critical path, then the earliest created.
type QueueItem = (i64, u64, Reverse<u32>);

fn release(t: u32, dependents: &[Vec<u32>], pending: &mut [u32], ready: &mut Vec<u32>) {
    for &d in &dependents[t as usize] {
        let p = &mut pending[d as usize];
        *p -= 1;
        if *p == 0 {
            ready.push(d);
        }
    }
}

/// Longest remaining path (in estimated milliseconds) from each task to the end.
fn critical_path(g: &TaskGraph, ids: &[String], records: &Records, dependents: &[Vec<u32>]) -> Vec<u64> {
    let mut cp = vec![0u64; g.tasks.len()];
    for &t in g.order.iter().rev() {
        let ti = t as usize;
        let own = records.get(&ids[ti]).and_then(|r| r.duration_s).unwrap_or(DEFAULT_DURATION_S);
        let own_ms = (own * 1000.0).max(1.0) as u64;
        let after = dependents[ti].iter().map(|&d| cp[d as usize]).max().unwrap_or(0);
        cp[ti] = own_ms + after;
    }

    cp
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
