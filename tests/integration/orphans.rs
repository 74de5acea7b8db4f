//! Tasks never outlive the flux that started them (SPEC §5, §6, §8): SIGHUP, kill -9 of
//! flux, a panic; what a dead run left (process groups, staging folders) is ended by the
//! next build; a commit that a kill -9 cut off from its record is recognised, not redone.
//!
//! Real processes and real signals, found again by markers in `/proc/*/cmdline`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::operations::{Bg, assert_no_process_left, kill_marked, procs_with, sleep_marker, sleeps_with, wait_until};
use crate::test::*;

/// Start time (field 22 of /proc/<pid>/stat) and state of a process, if it exists.
fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &raw[raw.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(19)?.parse().ok()?, f.first()?.chars().next()?))
}

/// The processes (pid, start time) carrying `marker` now.
fn snapshot(marker: &str) -> Vec<(i32, u64)> {
    procs_with(marker).into_iter().filter_map(|(p, _)| Some((p, proc_stat(p)?.0))).collect()
}

/// Those of `procs` still running (same pid and start time, not a zombie).
fn still_alive(procs: &[(i32, u64)]) -> Vec<(i32, u64)> {
    procs.iter().copied().filter(|&(p, s)| proc_stat(p).is_some_and(|(st, state)| st == s && state != 'Z')).collect()
}

fn kill_all(procs: &[(i32, u64)]) {
    for &(p, _) in still_alive(procs).iter() {
        // SAFETY: kill(2) of a process this test found by its own marker and start time.
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
}

fn db(t: &Test) -> rusqlite::Connection {
    rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db")
}

#[test]
fn sighup_is_handled_like_ctrl_c() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(&format!(
        "[step.s]\nparams = {{ n = [\"1\", \"2\", \"3\"] }}\noutputs = [\"out/{{{{ n }}}}.txt\"]\nrun = \"sleep {mark}; echo {{{{ n }}}} > {{{{ outputs[0] }}}}\"\n"
    ));
    let bg = Bg::spawn(&t, &["build", "-j", "2", "--output", "json"]);
    if !wait_until(Duration::from_secs(10), || sleeps_with(&mark).len() == 2) {
        kill_marked(&mark);
        panic!("the tasks never started");
    }
    bg.signal(libc::SIGHUP);
    let o = bg.wait(Duration::from_secs(20));
    assert_no_process_left(&mark, Duration::from_secs(2), "after SIGHUP");
    o.assert_status(130);
    o.stderr_has("interrupted: stopping running tasks");
    assert_eq!(o.summary("interrupted"), 3, "2 running, 1 never launched\n{}", o.describe());
    assert!(t.tree("out").is_empty());
    let statuses: Vec<String> = db(&t)
        .prepare("SELECT status FROM attempts")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(statuses, ["interrupted", "interrupted"], "nothing new was launched after SIGHUP");
}

#[test]
fn a_hangup_of_the_terminal_flux_prints_to_still_exits_130() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(&format!(
        "[step.s]\noutputs = [\"out/s.txt\"]\nrun = \"sleep {mark}; echo s > {{{{ outputs[0] }}}}\"\n"
    ));
    // A pseudo-terminal for flux's stdout and stderr, as over SSH.
    // SAFETY: plain libc calls on fds this test owns; ptsname_r writes into `name`.
    let (master, slave) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0 && libc::grantpt(master) == 0 && libc::unlockpt(master) == 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        let slave = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open the pty");
        (master, slave)
    };
    let args: Vec<std::ffi::OsString> = ["build"].iter().map(Into::into).collect();
    let mut cmd = t.command(&args);
    cmd.stdout(slave.try_clone().unwrap()).stderr(slave);
    let mut child = cmd.spawn().expect("start flux");
    let pid = child.id() as i32;
    // What flux prints before the hangup (a line or two) fits in the terminal's buffer.
    let started = wait_until(Duration::from_secs(10), || sleeps_with(&mark).len() == 1);
    // The terminal goes away, then the hangup signal arrives.
    // SAFETY: closing the master side of our own pty (nothing else uses it).
    unsafe {
        libc::close(master);
    }
    // SAFETY: kill(2) of our own child, not reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGHUP);
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_no_process_left(&mark, Duration::from_secs(2), "after the hangup");
    assert!(started, "the task never started");
    assert_eq!(status.and_then(|s| s.code()), Some(130), "{status:?}");
    let last: String = db(&t).query_row("SELECT status FROM attempts", [], |r| r.get(0)).unwrap();
    assert_eq!(last, "interrupted");
}

#[test]
fn sighup_stays_ignored_under_nohup() {
    let mark = sleep_marker(1);
    let t = Test::new().fluxfile(&format!(
        "[step.s]\noutputs = [\"out/s.txt\"]\nrun = \"sleep {mark}; echo s > {{{{ outputs[0] }}}}\"\n"
    ));
    let args: Vec<std::ffi::OsString> = ["build", "--output", "json"].iter().map(Into::into).collect();
    let mut cmd = t.command(&args);
    // SAFETY: signal(2) in the child before exec, as nohup does.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start flux");
    let pid = child.id() as i32;
    let started = wait_until(Duration::from_secs(10), || sleeps_with(&mark).len() == 1);
    // SAFETY: kill(2) of our own child, not reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGHUP);
    }
    let out = child.wait_with_output().expect("wait for flux");
    kill_marked(&mark);
    assert!(started, "the task never started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(t.read("out/s.txt"), "s\n");
}

#[test]
fn kill_9_during_stage_false_tasks_then_a_rebuild_leaves_exact_outputs_and_no_process_of_the_dead_run() {
    let mark = sleep_marker(2);
    let t = Test::new().fluxfile(&format!(
        "[step.w]\nstage = false\nparams = {{ n = [\"1\", \"2\", \"3\", \"4\"] }}\noutputs = [\"out/{{{{ n }}}}.txt\"]\nrun = \"echo part > {{{{ outputs[0] }}}}; sleep {mark}; echo end >> {{{{ outputs[0] }}}}\"\n"
    ));
    let bg = Bg::spawn(&t, &["build", "-j", "4"]);
    let started = wait_until(Duration::from_secs(10), || sleeps_with(&mark).len() == 4);
    let dead = snapshot(&mark); // the shells and their sleeps
    bg.kill9();
    if !started {
        kill_all(&dead);
        panic!("4 tasks never ran at once");
    }
    // The shells, leaders of their groups, die with flux; their sleeps are left.
    let shells: Vec<(i32, u64)> = dead.iter().copied().filter(|&(p, _)| !sleeps_with(&mark).contains(&p)).collect();
    assert!(!shells.is_empty(), "found the shells: {dead:?}");

    let rebuild = Bg::spawn(&t, &["build", "-j", "4", "--output", "json"]);
    std::thread::sleep(Duration::from_secs(1));
    let left = still_alive(&dead);
    kill_all(&dead);
    assert!(left.is_empty(), "processes of the dead run alive 1 s after the rebuild started: {left:?}");
    let o = rebuild.wait(Duration::from_secs(30));
    o.assert_status(0).assert_summary(4, 0, 0, 0);
    o.stderr_has("left running by flux run");
    for n in 1..=4 {
        o.assert_task(&format!("w[{n}]"), "success", Some("incomplete"));
    }
    // Long enough for any orphan to have written its `end`.
    std::thread::sleep(Duration::from_millis(2500));
    for n in 1..=4 {
        assert_eq!(t.read_bytes(&format!("out/{n}.txt")), b"part\nend\n", "out/{n}.txt");
    }
    assert_no_process_left(&mark, Duration::from_secs(1), "after the rebuild");
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_summary(0, 4, 0, 0);
}

#[test]
fn a_background_process_left_by_a_dead_run_is_killed_by_the_next_build() {
    let bg_mark = sleep_marker(30);
    let nap = sleep_marker(31);
    let t = Test::new().fluxfile(&format!(
        "[vars]\nbg = \"{bg_mark}\"\nnap = \"{nap}\"\n\n[step.s]\noutputs = [\"out/s.txt\"]\nrun = \"sleep {{{{ bg }}}} & sleep {{{{ nap }}}}; echo done > {{{{ outputs[0] }}}}\"\n"
    ));
    let bg = Bg::spawn(&t, &["build"]);
    let started =
        wait_until(Duration::from_secs(10), || sleeps_with(&bg_mark).len() == 1 && sleeps_with(&nap).len() == 1);
    // Long enough for the group to be written to the state DB (records are batched).
    std::thread::sleep(Duration::from_millis(2600));
    let dead: Vec<(i32, u64)> = snapshot(&bg_mark);
    let killed = bg.kill9();
    let cleanup = || {
        kill_marked(&bg_mark);
        kill_marked(&nap);
    };
    if !started {
        cleanup();
        panic!("the task never started\n{}", killed.describe());
    }
    // The shell (leader) dies with flux: PR_SET_PDEATHSIG.
    let shell_gone = wait_until(Duration::from_secs(2), || {
        procs_with(&bg_mark).iter().all(|(_, argv)| argv.first().is_some_and(|a| a.ends_with("sleep")))
    });
    let sleeps_left = (sleeps_with(&bg_mark).len(), sleeps_with(&nap).len());
    if !shell_gone || sleeps_left != (1, 1) {
        cleanup();
        panic!("after kill -9: shell gone {shell_gone}, sleeps left {sleeps_left:?} (want both still running)");
    }
    // Recorded in the state DB: the attempt's process group and its leader's start time.
    let (run, pgid, start): (i64, Option<i64>, Option<i64>) = db(&t)
        .query_row("SELECT run_id, pgid, pgid_start FROM attempts ORDER BY id DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    if pgid.is_none() || start.is_none() {
        cleanup();
        panic!("no process group recorded for the running attempt");
    }
    // Only the state DB tells the next build about it (not the run's file of groups).
    let stage = format!(".flux/stage/{run}");
    assert!(t.exists(&stage), "the dead run's staging folder is there");
    t.remove(&format!("{stage}/groups"));

    let o = t.run_args(json_build(&["--var", "nap=0.1", "--var", "bg=0.1"]));
    o.stderr_has("warning: ended 1 process group(s) left running by flux run(s)");
    let left = still_alive(&dead);
    cleanup();
    assert!(left.is_empty(), "the dead run's background process survived the next build: {left:?}");
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    assert_no_process_left(&nap, Duration::from_millis(500), "the dead run's group");
    assert!(!t.exists(&stage), "the dead run's staging folder is removed");
    let (status, error): (String, Option<String>) = db(&t)
        .query_row("SELECT status, error FROM attempts WHERE run_id = ?1", [run], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(status, "interrupted");
    assert!(error.is_some_and(|e| e.contains("flux died")));
    let run_status: String = db(&t).query_row("SELECT status FROM runs WHERE id = ?1", [run], |r| r.get(0)).unwrap();
    assert_eq!(run_status, "interrupted", "the dead run is closed");
}

#[test]
fn a_panic_stops_the_running_tasks_before_flux_exits() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(&format!(
        "[step.s]\nparams = {{ n = [\"1\", \"2\"] }}\noutputs = [\"out/{{{{ n }}}}.txt\"]\nrun = \"sleep {mark} & sleep {mark}; echo {{{{ n }}}} > {{{{ outputs[0] }}}}\"\n"
    ));
    let args: Vec<std::ffi::OsString> = ["build", "-j", "2"].iter().map(Into::into).collect();
    let mut cmd = t.command(&args);
    cmd.env("FLUX_TEST_PANIC_AFTER_START", "1").stdout(Stdio::null());
    let child = cmd.spawn().expect("start flux");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(o) => o.expect("wait for flux"),
        Err(_) => {
            // SAFETY: our own child, not reaped (its waiter is still blocked).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            kill_marked(&mark);
            panic!("flux did not exit after its panic");
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let left = procs_with(&mark);
    kill_marked(&mark);
    assert!(left.is_empty(), "commands outlived the panicking flux: {left:?}\n{stderr}");
    assert_eq!(out.status.code(), Some(101), "{stderr}");
    assert!(stderr.contains("FLUX_TEST_PANIC_AFTER_START"), "{stderr}");
}

/// A project whose task `a` (running `a_run` before it writes its output) was built
/// with in.txt = v1, then rebuilt with v2 and killed with -9 the moment a's new output
/// was in place, while `b` (sleeping under the returned marker) kept that build alive.
fn killed_right_after_a_committed(a_run: &str) -> (Test, String) {
    let nap = sleep_marker(30);
    let t = Test::new().file("in.txt", "v1\n").fluxfile(&format!(
        r#"
[vars]
nap = "0.1"

[step.a]
inputs = ["in.txt"]
outputs = ["out/a.txt"]
run = "{a_run}cat {{{{ inputs[0] }}}} > {{{{ outputs[0] }}}}; echo ran >> a-runs.txt"

[step.b]
outputs = ["out/b.txt"]
run = "sleep {{{{ nap }}}}; echo b > {{{{ outputs[0] }}}}"
"#
    ));
    t.run_args(json_build(&["-j", "2"])).assert_status(0).assert_summary(2, 0, 0, 0);
    t.write("in.txt", "v2\n");
    let bg = Bg::spawn(&t, &["build", "-j", "2", "--var", &format!("nap={nap}")]);
    let committed = wait_until(Duration::from_secs(15), || t.maybe_read("out/a.txt").as_deref() == Some(b"v2\n"));
    let killed = bg.kill9();
    if !committed {
        kill_marked(&nap);
        panic!("a never committed\n{}", killed.describe());
    }
    assert_eq!(t.read("a-runs.txt"), "ran\nran\n");
    (t, nap)
}

#[test]
fn a_commit_interrupted_by_kill_9_is_recognised_not_redone() {
    // `b` (a new command) keeps the build alive while a's record waits in the batch.
    let (t, nap) = killed_right_after_a_committed("sleep 3; ");
    let last: String =
        db(&t).query_row("SELECT status FROM attempts WHERE task_id = 'a' ORDER BY id DESC", [], |r| r.get(0)).unwrap();
    assert_eq!(last, "running", "the kill came after a's record was written: the test needs it before");
    let o = t.run_args(json_build(&["-j", "2"]));
    o.stderr_has("warning: ended 1 process group(s) left running by flux run(s)");
    kill_marked(&nap);
    o.assert_status(0);
    o.assert_task("a", "skipped", None);
    assert_eq!(t.read("a-runs.txt"), "ran\nran\n", "a was not redone\n{}", o.describe());
    assert_eq!(t.read("out/a.txt"), "v2\n");
    assert!(o.ran().is_empty(), "b is as it was before the killed build\n{}", o.describe());
    let (status, expect): (String, Option<Vec<u8>>) = db(&t)
        .query_row("SELECT status, expect_inputs_hash FROM attempts WHERE task_id = 'a' ORDER BY id DESC", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(status, "success", "the dead run's attempt is recorded as the success it was");
    assert!(expect.is_some_and(|h| h.len() == 32));
    // Its record is now written: the next build is a no-op, and a change of input reruns it.
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 2, 0, 0);
    t.write("in.txt", "v3\n");
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_ran(&["a"]);
    assert_eq!(t.read("out/a.txt"), "v3\n");
}

#[test]
fn a_quick_commit_killed_before_any_record_of_it_is_written_is_recognised_not_redone() {
    // `a` takes milliseconds: the kill comes within the state DB's batch window, so the
    // DB may hold no record at all of the attempt; the run's start file does.
    let (t, nap) = killed_right_after_a_committed("");
    let o = t.run_args(json_build(&["-j", "2"]));
    o.stderr_has("warning: ended 1 process group(s) left running by flux run(s)");
    kill_marked(&nap);
    o.assert_status(0);
    o.assert_task("a", "skipped", None);
    assert_eq!(t.read("a-runs.txt"), "ran\nran\n", "a was not redone\n{}", o.describe());
    assert_eq!(t.read("out/a.txt"), "v2\n");
    let status: String =
        db(&t).query_row("SELECT status FROM attempts WHERE task_id = 'a' ORDER BY id DESC", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "success", "the dead run's attempt is recorded as the success it was");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 2, 0, 0);
}

#[test]
fn a_commit_with_other_inputs_than_now_is_redone() {
    // The dead attempt was started for v2; the input is v3 by the next build: it runs.
    let nap = sleep_marker(30);
    let t = Test::new().file("in.txt", "v1\n").fluxfile(
        &r#"
[step.a]
inputs = ["in.txt"]
outputs = ["out/a.txt"]
run = "sleep 3; cat {{ inputs[0] }} > {{ outputs[0] }}; echo ran >> a-runs.txt"

[step.b]
run = "sleep NAP"
"#
        .replace("NAP", &nap),
    );
    t.run_args(json_build(&["--only", "a"])).assert_status(0);
    t.write("in.txt", "v2\n");
    let bg = Bg::spawn(&t, &["build", "-j", "2"]);
    let committed = wait_until(Duration::from_secs(15), || t.maybe_read("out/a.txt").as_deref() == Some(b"v2\n"));
    bg.kill9();
    assert!(committed);
    t.write("in.txt", "v3\n");
    let o = t.run_args(json_build(&["--only", "a"]));
    o.stderr_has("warning: ended 1 process group(s) left running by flux run(s)");
    kill_marked(&nap);
    o.assert_status(0).assert_ran(&["a"]);
    assert_eq!(t.read("out/a.txt"), "v3\n");
    assert_eq!(t.read("a-runs.txt"), "ran\nran\nran\n");
}

#[test]
fn staging_folders_of_dead_runs_are_removed_never_a_live_builds() {
    let slow = sleep_marker(30);
    let t = Test::new().fluxfile(&format!(
        "[vars]\nnap = \"0.1\"\n\n[step.dead]\noutputs = [\"out/dead.txt\"]\nrun = \"sleep {{{{ nap }}}}; echo x > {{{{ outputs[0] }}}}\"\n\n[step.live]\noutputs = [\"out/live.txt\"]\nrun = \"sleep {slow}; echo x > {{{{ outputs[0] }}}}\"\n\n[step.other]\noutputs = [\"out/other.txt\"]\nrun = \"echo x > {{{{ outputs[0] }}}}\"\n"
    ));
    let dead_mark = sleep_marker(32);
    let bg = Bg::spawn(&t, &["build", "dead", "--var", &format!("nap={dead_mark}")]);
    assert!(wait_until(Duration::from_secs(10), || sleeps_with(&dead_mark).len() == 1));
    bg.kill9();
    let stages = |t: &Test| -> Vec<String> {
        std::fs::read_dir(t.abs(".flux/stage"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let dead_stage = stages(&t);
    assert_eq!(dead_stage.len(), 1, "the dead run's staging folder");

    // A live build: its own staging folder exists while its task runs.
    let live = Bg::spawn(&t, &["build", "live"]);
    let up = wait_until(Duration::from_secs(10), || sleeps_with(&slow).len() == 1);
    let during = stages(&t);
    let o = t.run_args(json_build(&["other"]));
    let after = stages(&t);
    drop(live);
    kill_marked(&slow);
    kill_marked(&dead_mark);
    assert!(up, "the live build's task never started");
    o.assert_status(0);
    assert!(!during.contains(&dead_stage[0]), "the live build removed the dead run's folder: {during:?}");
    assert_eq!(during.len(), 1, "{during:?}");
    assert_eq!(after, during, "a concurrent build keeps the live build's staging folder");
}

#[test]
fn a_build_taking_over_a_dead_flux_lease_ends_what_it_left_first() {
    // A live build waits for a task another (live) flux holds; that flux dies; the waiting
    // build takes the lease over and ends the dead run's leftovers before it runs the task.
    let hold = sleep_marker(30);
    let t = Test::new().fluxfile(&format!(
        "[vars]\nnap = \"{hold}\"\n\n[step.s]\noutputs = [\"out/s.txt\"]\nrun = \"sleep {{{{ nap }}}} & sleep {{{{ nap }}}}; echo x > {{{{ outputs[0] }}}}\"\n"
    ));
    let first = Bg::spawn(&t, &["build"]);
    assert!(wait_until(Duration::from_secs(10), || sleeps_with(&hold).len() == 2));
    let started = Instant::now();
    // Same command: the second build waits for the first's lease.
    let second = Bg::spawn(&t, &["build", "--output", "json"]);
    std::thread::sleep(Duration::from_millis(800));
    let dead = snapshot(&hold);
    first.kill9();
    // The second build now takes the lease over; before running `s` it kills the group
    // the first left (the background sleep), then runs `s` itself (sleeping `hold` again).
    let gone = wait_until(Duration::from_secs(5), || still_alive(&dead).is_empty());
    let left = still_alive(&dead);
    drop(second);
    kill_all(&dead);
    kill_marked(&hold);
    assert!(gone, "the dead flux's processes outlived the lease take-over: {left:?} ({:?})", started.elapsed());
}

#[test]
fn a_fatal_state_db_error_stops_the_running_tasks_before_flux_exits() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(&format!(
        "[step.s]\noutputs = [\"out/s.txt\"]\nrun = \"sleep {mark} & sleep {mark}; echo x > {{{{ outputs[0] }}}}\"\n"
    ));
    let mut bg = Bg::spawn(&t, &["build"]);
    if !wait_until(Duration::from_secs(10), || sleeps_with(&mark).len() == 2) {
        kill_marked(&mark);
        panic!("the task never started");
    }
    // Another connection holds the write lock for longer than flux waits for it: its next
    // write of records fails. Whatever flux then does (exit, or keep the records and try
    // again later), its tasks are stopped, and none is left once it has ended.
    let conn = db(&t);
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let reacted = wait_until(Duration::from_secs(40), || !bg.running() || procs_with(&mark).is_empty());
    drop(conn);
    let o = bg.wait(Duration::from_secs(120));
    let left = procs_with(&mark);
    kill_marked(&mark);
    assert!(reacted, "flux neither stopped its tasks nor ended with a locked state DB\n{}", o.describe());
    // Either outcome is right here (the comment above); what it says about the lock is.
    let _ = o.status();
    o.stderr_has("state DB");
    assert!(left.is_empty(), "tasks outlived flux after a fatal state DB error: {left:?}\n{}", o.describe());
}
