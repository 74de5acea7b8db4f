//! Operations (SPEC §2.1, §6, §7, §9): retries and timeouts, pools, priorities and the
//! critical path, cpus and mem, hooks and the webhook, history / status / logs / clear, the
//! selection flags, waiting for sources and sensors.
//!
//! Every test runs the real binary on real processes. Processes a test starts are found
//! again by a marker unique to the test (a distinctive `sleep` duration or a word in the
//! command line, looked up in `/proc/*/cmdline`), never by name.
//!
//! The helpers at the top (background flux, /proc scans, a tiny HTTP listener) are shared
//! with `crash.rs` and `concurrency.rs`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::test::*;

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique_number() -> u64 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let n = SEQ.fetch_add(1, Ordering::SeqCst) as u64;
    // pid, a per-process counter and the clock: unique across concurrent test threads and
    // concurrent test binaries.
    (u64::from(std::process::id()) * 1_000 + n) * 1_000 + u64::from(nanos % 1000)
}

/// A `sleep` argument of about `secs` seconds that no other process on the machine uses:
/// `sleep 30.4711230042` shows up as such in `/proc/PID/cmdline`.
pub(crate) fn sleep_marker(secs: u32) -> String {
    format!("{secs}.{:012}", unique_number() % 1_000_000_000_000)
}

/// A word to put in a command line (`: WORD;`) to find its processes again.
pub(crate) fn word_marker(tag: &str) -> String {
    format!("fluxmark{tag}{}", unique_number())
}

/// Processes (pid, argv) whose command line contains `marker`, this test process excluded.
pub(crate) fn procs_with(marker: &str) -> Vec<(i32, Vec<String>)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else { continue };
        if raw.is_empty() {
            continue; // a kernel thread or a zombie: nothing runs any more
        }
        let argv: Vec<String> =
            raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if argv.iter().any(|a| a.contains(marker)) {
            out.push((pid, argv));
        }
    }
    out
}

/// `sleep` processes whose argument is `marker` (not the `sh -c` that started them).
pub(crate) fn sleeps_with(marker: &str) -> Vec<i32> {
    procs_with(marker)
        .into_iter()
        .filter(|(_, argv)| argv.first().is_some_and(|a| a.ends_with("sleep")) && argv.iter().any(|a| a == marker))
        .map(|(p, _)| p)
        .collect()
}

/// Poll `cond` every 20 ms until it holds or `limit` has passed; whether it held.
pub(crate) fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL every process carrying `marker` (cleanup after a test, so nothing leaks).
pub(crate) fn kill_marked(marker: &str) {
    for (pid, _) in procs_with(marker) {
        // SAFETY: kill(2) on a pid we found carrying our own marker.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Fails the test if processes carrying `marker` are still there after `grace`, killing
/// them first so that a failure leaks nothing.
#[track_caller]
pub(crate) fn assert_no_process_left(marker: &str, grace: Duration, what: &str) {
    let gone = wait_until(grace, || procs_with(marker).is_empty());
    if !gone {
        let left = procs_with(marker);
        kill_marked(marker);
        panic!("{what}: processes still running {grace:?} later: {left:?}");
    }
}

/// A flux process running in the background: the harness's [`Running`] (this name is kept
/// for the tests that use it).
pub(crate) use crate::test::Running as Bg;

/// One HTTP request as received.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub head: String,
    pub body: String,
    pub at: Instant,
}

impl Req {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("webhook body is not JSON: {e}\n{}", self.body))
    }
}

/// What the listener answers to its n-th request (the last entry repeats).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer {
    Status(u16),
    /// Read the request and never answer.
    Silence,
}

/// A plain HTTP/1.1 listener on 127.0.0.1 that records every request.
pub(crate) struct Listener {
    pub url: String,
    reqs: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Listener {
    pub fn start(answers: &[Answer]) -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = l.local_addr().expect("local address");
        l.set_nonblocking(true).expect("non-blocking listener");
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let answers = answers.to_vec();
        let (r2, s2) = (reqs.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut n = 0usize;
            while !s2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        if let Some((head, body)) = read_request(&mut s) {
                            r2.lock().unwrap().push(Req { head, body, at: Instant::now() });
                        }
                        let a = answers.get(n).or(answers.last()).copied().unwrap_or(Answer::Status(200));
                        n += 1;
                        match a {
                            Answer::Status(code) => {
                                let _ =
                                    write!(s, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            }
                            Answer::Silence => held.push(s),
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listener { url: format!("http://{addr}/hook"), reqs, stop, handle: Some(handle) }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn read_request(s: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let k = s.read(&mut chunk).ok()?;
        if k == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..k]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let k = s.read(&mut chunk).ok()?;
        if k == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..k]);
    }
    Some((head, String::from_utf8_lossy(&buf[head_end..]).into_owned()))
}

/// Reads `(start, end)` nanosecond pairs written by `date +%s%N` (one per line) in each file.
pub(crate) fn spans(t: &Test, files: &[String]) -> Vec<(u128, u128)> {
    files
        .iter()
        .map(|f| {
            let text = t.read(f);
            let v: Vec<u128> = text.lines().map(|l| l.trim().parse().expect("a timestamp")).collect();
            assert_eq!(v.len(), 2, "{f}: expected a start and an end line, got {text:?}");
            (v[0], v[1])
        })
        .collect()
}

/// The largest number of spans running at one moment.
pub(crate) fn max_concurrency(spans: &[(u128, u128)]) -> usize {
    spans.iter().map(|&(s, _)| spans.iter().filter(|&&(a, b)| a <= s && s < b).count()).max().unwrap_or(0)
}

/// `flux history --output json`, as a list of attempts (newest first).
pub(crate) fn history(t: &Test) -> Vec<Value> {
    let o = t.run_args(["history", "--limit", "1000", "--output", "json"]);
    o.assert_status(0);
    o.json()["attempts"].as_array().cloned().unwrap_or_else(|| panic!("no attempts array\n{}", o.describe()))
}

/// The attempts of one task, newest first.
pub(crate) fn history_of(t: &Test, task: &str) -> Vec<Value> {
    history(t).into_iter().filter(|a| a["task"] == task).collect()
}

/// `FLUX_*` variables of an `env` dump.
fn flux_env(t: &Test, rel: &str) -> std::collections::BTreeMap<String, String> {
    t.read(rel)
        .lines()
        .filter(|l| l.starts_with("FLUX_"))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// A path flux printed, relative to the project if it is not absolute.
fn in_project(t: &Test, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { t.path().join(p) }
}

// ---------------------------------------------------------------------------------------
// Retries and timeouts
// ---------------------------------------------------------------------------------------

#[test]
fn a_flaky_task_is_retried_and_each_attempt_is_recorded_and_logged() {
    let t = Test::new().fluxfile(
        r#"
[step.flaky]
outputs = ["out.txt"]
retries = 2
retry_delay = "300ms"
run = "echo attempt {{ attempt }}; n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 2 ] && echo ok > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    o.assert_task("flaky", "success", Some("missing-output"));
    assert_eq!(o.task("flaky")["attempts"], 2, "{}", o.describe());
    // Start lines only with -v: the retry line says what comes.
    o.stderr_has("retry flaky: command exited with status 1; attempt 2 in").stderr_lacks("run  flaky");
    assert_eq!(t.read("count"), "2\n", "exactly two attempts ran");
    assert_eq!(t.read("out.txt"), "ok\n");

    let h = history_of(&t, "flaky");
    let got: Vec<(u64, &str)> =
        h.iter().map(|a| (a["attempt"].as_u64().unwrap_or(0), a["status"].as_str().unwrap_or(""))).collect();
    assert_eq!(got, [(2, "success"), (1, "retrying")], "newest first\n{h:#?}");
    let (ok, retry) = (&h[0], &h[1]);
    let run_id = o.json()["run_id"].clone();
    assert_eq!(ok["run_id"], run_id);
    assert_eq!(retry["run_id"], run_id);
    assert_eq!(retry["exit_code"], 1);
    assert_eq!(retry["error"], "command exited with status 1");
    assert_eq!(ok["exit_code"], 0);
    assert_eq!(ok["error"], Value::Null);
    for a in [ok, retry] {
        assert_eq!(a["reason"], "missing-output");
        assert_eq!(a["step"], "flaky");
        assert_eq!(a["params"], json!({}));
    }
    // Each attempt has a log of its own.
    let l1 = retry["log"].as_str().expect("attempt 1 has a log");
    let l2 = ok["log"].as_str().expect("attempt 2 has a log");
    assert!(l1.ends_with(&format!(".flux/logs/flaky/flaky/{run_id}-1.log")), "{l1}");
    assert!(l2.ends_with(&format!(".flux/logs/flaky/flaky/{run_id}-2.log")), "{l2}");
    assert_eq!(printed(&std::fs::read_to_string(in_project(&t, l1)).unwrap()), "attempt 1\n");
    assert_eq!(printed(&std::fs::read_to_string(in_project(&t, l2)).unwrap()), "attempt 2\n");
    // The retry came after its delay.
    let gap = ok["started_at"].as_f64().unwrap() - retry["ended_at"].as_f64().unwrap();
    assert!(gap >= 0.29, "attempt 2 started {gap:.3}s after attempt 1 ended; retry_delay is 300ms");

    // flux logs: the last attempt by default, any attempt with --attempt.
    assert_eq!(printed(&t.run_args(["logs", "flaky"]).assert_status(0).stdout), "attempt 2\n");
    assert_eq!(printed(&t.run_args(["logs", "flaky", "--attempt", "1"]).assert_status(0).stdout), "attempt 1\n");
    t.run_args(["logs", "flaky", "--attempt", "3"]).assert_status(2).stderr_has("flaky has no attempt 3 on record");

    // A success after retries is a success: nothing to do next time.
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 1, 0, 0);
}

#[test]
fn retry_backoff_multiplies_the_delay_between_attempts() {
    let t = Test::new().fluxfile(
        r#"
[step.f]
outputs = ["out.txt"]
retries = 3
retry_delay = "300ms"
retry_backoff = 2.0
run = "date +%s%N >> times.txt; exit 1"
"#,
    );
    let o = t.run_args(json_build(&[]));
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    assert_eq!(o.task("f")["attempts"], 4);
    let times: Vec<f64> = t.read("times.txt").lines().map(|l| l.trim().parse::<f64>().unwrap() / 1e9).collect();
    assert_eq!(times.len(), 4, "1 attempt + 3 retries");
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Delays 0.3 s, 0.6 s, 1.2 s: each gap (from the tasks' own clock) is at least its
    // delay, which a constant delay would not give; on top of it come the attempt itself
    // and the scheduling loop, unbounded on a loaded machine but far from 5 s.
    for (gap, delay) in gaps.iter().zip([0.3, 0.6, 1.2]) {
        assert!(*gap >= delay - 0.01 && *gap < delay + 5.0, "gaps {gaps:.3?}: expected at least {delay}s");
    }
    assert_eq!(o.stderr().matches("retry f: ").count(), 3, "{}", o.describe());
    let statuses: Vec<String> =
        history_of(&t, "f").iter().map(|a| format!("{}:{}", a["attempt"], a["status"].as_str().unwrap())).collect();
    assert_eq!(statuses, ["4:failed", "3:retrying", "2:retrying", "1:retrying"]);
}

#[test]
fn a_timeout_kills_the_whole_process_group_and_says_it_timed_out() {
    let mark = sleep_marker(60);
    let t = Test::new().fluxfile(
        &r#"
[step.slow]
outputs = ["slow.txt"]
timeout = "1s"
run = "echo started; sleep MARK & sleep MARK; echo never > {{ outputs[0] }}"
"#
        .replace("MARK", &mark),
    );
    let o = t.run_args(json_build(&[]));
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    assert_eq!(o.task("slow")["error"], "timed out after 1s", "{}", o.describe());
    o.stderr_has("FAIL slow: timed out after 1s");
    assert!(
        // Not the 60 s of the sleeps.
        o.elapsed >= Duration::from_millis(950) && o.elapsed < Duration::from_secs(30),
        "a 1 s timeout took {:?}",
        o.elapsed
    );
    assert!(!t.exists("slow.txt"), "a timed-out task leaves no output");
    // TERM went to the process group: the background sleep is gone too (allowing a moment
    // for processes that were signalled to be reaped).
    assert_no_process_left(&mark, Duration::from_secs(2), "after the timeout");
    let h = history_of(&t, "slow");
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["status"], "failed");
    assert!(h[0]["error"].as_str().unwrap_or("").contains("timed out"), "{:#?}", h[0]);
    let log = printed(&t.read(".flux/logs/slow/slow/1-1.log"));
    assert!(log.starts_with("started\n") && log.contains("timed out"), "log: {log:?}");
}

#[test]
fn a_timeout_kills_a_task_that_ignores_term_ten_seconds_later() {
    let mark = sleep_marker(60);
    let t = Test::new().fluxfile(
        &"[step.stubborn]\noutputs = [\"s.txt\"]\ntimeout = \"1s\"\nrun = \"trap '' TERM; sleep MARK\"\n"
            .replace("MARK", &mark),
    );
    let o = t.run_args(json_build(&[]));
    o.stderr_has("FAIL stubborn: timed out after 1s");
    assert_no_process_left(&mark, Duration::from_secs(2), "10 s after TERM");
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    assert_eq!(o.task("stubborn")["error"], "timed out after 1s");
    // TERM at 1 s is ignored; KILL follows 10 s later (not at the end of the 60 s sleep).
    assert!(
        o.elapsed >= Duration::from_millis(10_900) && o.elapsed < Duration::from_secs(40),
        "TERM at 1 s, KILL 10 s later; took {:?}",
        o.elapsed
    );
}

// ---------------------------------------------------------------------------------------
// Scheduling: pools, priority, critical path, cpus and mem
// ---------------------------------------------------------------------------------------

const TIMED: &str = r#"
[step.t]
params = { n = ["1", "2", "3", "4"] }
outputs = ["t/{{ n }}.txt"]
run = "date +%s%N > times/{{ n }}; sleep 0.4; date +%s%N >> times/{{ n }}; echo {{ n }} > {{ outputs[0] }}"
"#;

fn timed_files() -> Vec<String> {
    (1..=4).map(|n| format!("times/{n}")).collect()
}

#[test]
fn a_pool_never_runs_more_tasks_than_its_size_whatever_dash_j() {
    for (size, expect) in [(1usize, 1usize), (2, 2)] {
        let ff = format!("[pools]\nlimited = {size}\n{}", TIMED.replace("[step.t]", "[step.t]\npool = \"limited\""));
        let t = Test::new().fluxfile(&ff).dir("times");
        t.run_args(json_build(&["-j", "4"])).assert_status(0).assert_summary(4, 0, 0, 0);
        let s = spans(&t, &timed_files());
        assert_eq!(max_concurrency(&s), expect, "pool of {size} with -j 4: spans {s:?}");
    }
    // The same tasks outside a pool do run at once: the parallelism is real.
    let t = Test::new().fluxfile(TIMED).dir("times");
    t.run_args(json_build(&["-j", "4"])).assert_status(0).assert_summary(4, 0, 0, 0);
    let s = spans(&t, &timed_files());
    assert_eq!(max_concurrency(&s), 4, "no pool, -j 4: spans {s:?}");
}

#[test]
fn higher_priority_runs_first() {
    let t = Test::new().fluxfile(
        r#"
[step.low]
params = { n = ["1", "2"] }
outputs = ["low/{{ n }}.txt"]
run = "echo low >> trace.txt; echo > {{ outputs[0] }}"

[step.negative]
priority = -3
outputs = ["negative.txt"]
run = "echo negative >> trace.txt; echo > {{ outputs[0] }}"

[step.mid]
priority = 5
outputs = ["mid.txt"]
run = "echo mid >> trace.txt; echo > {{ outputs[0] }}"

[step.high]
priority = 10
outputs = ["high.txt"]
run = "echo high >> trace.txt; echo > {{ outputs[0] }}"
"#,
    );
    t.run_args(json_build(&["-j", "1"])).assert_status(0).assert_summary(5, 0, 0, 0);
    assert_eq!(t.read("trace.txt"), "high\nmid\nlow\nlow\nnegative\n");
}

#[test]
fn among_equal_priorities_the_longest_remaining_path_from_past_durations_goes_first() {
    // A chain of three quick tasks against one slow task. With no history every task is
    // estimated alike, so the chain (3 tasks long) starts first; once the state DB knows the
    // chain takes ~0.1 s and `big` ~0.8 s, `big` starts first.
    let t = Test::new().fluxfile(
        r#"
[step.big]
outputs = ["out/big.txt"]
run = "echo big >> trace.txt; sleep 0.8; echo > {{ outputs[0] }}"

[step.c1]
outputs = ["out/c1.txt"]
run = "echo c1 >> trace.txt; echo > {{ outputs[0] }}"

[step.c2]
inputs = ["out/c1.txt"]
outputs = ["out/c2.txt"]
run = "echo c2 >> trace.txt; echo > {{ outputs[0] }}"

[step.c3]
inputs = ["out/c2.txt"]
outputs = ["out/c3.txt"]
run = "echo c3 >> trace.txt; echo > {{ outputs[0] }}"
"#,
    );
    t.run_args(json_build(&["-j", "1"])).assert_status(0).assert_summary(4, 0, 0, 0);
    let first = t.read("trace.txt");
    assert!(first.starts_with("c1\nc2\n"), "no history: the longer chain first\n{first}");
    t.remove("trace.txt");
    t.remove("out");
    t.run_args(json_build(&["-j", "1"])).assert_status(0).assert_summary(4, 0, 0, 0);
    let second = t.read("trace.txt");
    assert!(second.starts_with("big\n"), "with recorded durations the slow task first\n{second}");
}

fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn tasks_asking_for_every_cpu_never_overlap() {
    let n = cpu_count();
    let ff = TIMED.replace("[step.t]", &format!("[step.t]\ncpus = {n}"));
    let t = Test::new().fluxfile(&ff).dir("times");
    t.run_args(json_build(&["-j", "4"])).assert_status(0).assert_summary(4, 0, 0, 0);
    let s = spans(&t, &timed_files());
    assert_eq!(max_concurrency(&s), 1, "4 tasks with cpus = {n} on a {n}-CPU machine: {s:?}");
    // Half the machine each: two at a time (when the machine has an even count of CPUs).
    if n >= 2 && n.is_multiple_of(2) {
        let ff = TIMED.replace("[step.t]", &format!("[step.t]\ncpus = {}", n / 2));
        let t = Test::new().fluxfile(&ff).dir("times");
        t.run_args(json_build(&["-j", "4"])).assert_status(0).assert_summary(4, 0, 0, 0);
        let s = spans(&t, &timed_files());
        assert_eq!(max_concurrency(&s), 2, "cpus = {} each on {n} CPUs: {s:?}", n / 2);
    }
}

fn machine_memory() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let kb: u64 = m
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    kb * 1024
}

#[test]
fn tasks_asking_for_more_than_half_the_memory_never_overlap() {
    let each = machine_memory() / 10 * 6;
    let ff = TIMED.replace("[step.t]", &format!("[step.t]\nmem = \"{each}\""));
    let t = Test::new().fluxfile(&ff).dir("times");
    t.run_args(json_build(&["-j", "4"])).assert_status(0).assert_summary(4, 0, 0, 0);
    let s = spans(&t, &timed_files());
    assert_eq!(max_concurrency(&s), 1, "4 tasks with 60% of the memory each: {s:?}");
}

// ---------------------------------------------------------------------------------------
// Hooks and the webhook
// ---------------------------------------------------------------------------------------

const HOOKED: &str = r#"
[step.s]
params = { date = "date", region = ["eu"] }
outputs = ["s/{{ date }}-{{ region }}.txt"]
retries = 1
retry_delay = "0s"
run = "echo out-{{ attempt }}; n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 2 ] || exit 3; echo ok > {{ outputs[0] }}"
on_success = "env > hooks/success.env; echo hook-success"
on_retry = "env > hooks/retry.env"
on_failure = "env > hooks/failure-s.env"

[step.bad]
outputs = ["bad.txt"]
run = "echo bad-output; exit 7"
on_failure = "env > hooks/failure.env"

[step.quiet]
outputs = ["quiet.txt"]
run = "echo > {{ outputs[0] }}"
on_success = "env > hooks/quiet.env"
"#;

const FLUX_VARS: [&str; 8] =
    ["FLUX_STEP", "FLUX_TASK", "FLUX_PARAMS", "FLUX_STATUS", "FLUX_ATTEMPT", "FLUX_LOG", "FLUX_RUN_ID", "FLUX_ERROR"];

#[test]
fn hooks_run_with_every_flux_variable() {
    let t = Test::new().fluxfile(HOOKED).dir("hooks");
    let o = t.run_args(json_build(&["--date", "2024-01-05"]));
    o.stderr_has("FAIL bad: command exited with status 7");
    o.assert_status(1).assert_summary(2, 0, 1, 0);
    let run_id = o.json()["run_id"].as_i64().expect("run_id").to_string();
    let id = "s[date=2024-01-05,region=eu]";

    let retry = flux_env(&t, "hooks/retry.env");
    let success = flux_env(&t, "hooks/success.env");
    let failure = flux_env(&t, "hooks/failure.env");
    let quiet = flux_env(&t, "hooks/quiet.env");
    for (name, env) in [("on_retry", &retry), ("on_success", &success), ("on_failure", &failure), ("quiet", &quiet)] {
        for v in FLUX_VARS {
            assert!(env.contains_key(v), "{name}: {v} is not set: {env:#?}");
        }
        assert_eq!(env["FLUX_RUN_ID"], run_id, "{name}");
    }
    assert!(!t.exists("hooks/failure-s.env"), "s succeeded in the end: no on_failure");

    // on_retry: attempt 1 failed and will be tried again.
    assert_eq!(retry["FLUX_STEP"], "s");
    assert_eq!(retry["FLUX_TASK"], id);
    let params: Value = serde_json::from_str(&retry["FLUX_PARAMS"]).expect("FLUX_PARAMS is JSON");
    assert_eq!(params, json!({"date": "2024-01-05", "region": "eu"}));
    assert_eq!(retry["FLUX_STATUS"], "retrying");
    assert_eq!(retry["FLUX_ATTEMPT"], "1");
    assert_eq!(retry["FLUX_ERROR"], "command exited with status 3");
    let log1 = in_project(&t, &retry["FLUX_LOG"]);
    assert!(log1.ends_with(format!("{run_id}-1.log")), "{}", log1.display());
    assert_eq!(printed(&std::fs::read_to_string(&log1).expect("FLUX_LOG of attempt 1 exists")), "out-1\n");

    // on_success: attempt 2.
    assert_eq!(success["FLUX_TASK"], id);
    assert_eq!(serde_json::from_str::<Value>(&success["FLUX_PARAMS"]).unwrap(), params);
    assert_eq!(success["FLUX_STATUS"], "success");
    assert_eq!(success["FLUX_ATTEMPT"], "2");
    assert_eq!(success["FLUX_ERROR"], "");
    let log2 = in_project(&t, &success["FLUX_LOG"]);
    assert_eq!(printed(&std::fs::read_to_string(&log2).expect("FLUX_LOG of attempt 2 exists")), "out-2\n");
    // The hook's own output goes to <run>-<attempt>.on_success.log beside the task's log.
    let hook_log = log2.parent().unwrap().join(format!("{run_id}-2.on_success.log"));
    assert_eq!(std::fs::read_to_string(&hook_log).unwrap_or_default(), "hook-success\n", "{}", hook_log.display());

    // on_failure.
    assert_eq!(failure["FLUX_STEP"], "bad");
    assert_eq!(failure["FLUX_TASK"], "bad");
    assert_eq!(serde_json::from_str::<Value>(&failure["FLUX_PARAMS"]).unwrap(), json!({}));
    assert_eq!(failure["FLUX_STATUS"], "failed");
    assert_eq!(failure["FLUX_ATTEMPT"], "1");
    assert_eq!(failure["FLUX_ERROR"], "command exited with status 7");
    assert_eq!(printed(&std::fs::read_to_string(in_project(&t, &failure["FLUX_LOG"])).unwrap()), "bad-output\n");

    // A command that printed nothing has no log: FLUX_LOG is empty.
    assert_eq!(quiet["FLUX_STATUS"], "success");
    assert_eq!(quiet["FLUX_LOG"], "");
    assert_eq!(quiet["FLUX_ERROR"], "");
}

#[test]
fn a_failing_hook_is_a_warning_and_never_changes_the_task() {
    let t = Test::new().fluxfile(
        r#"
[step.ok]
outputs = ["ok.txt"]
run = "echo ok > {{ outputs[0] }}"
on_success = "echo hook ran; exit 9"

[step.bad]
outputs = ["bad.txt"]
run = "exit 4"
on_failure = "no-such-command-for-flux-hooks"

[step.missing_tool]
outputs = ["m.txt"]
run = "echo m > {{ outputs[0] }}"
on_success = "no-such-command-for-flux-hooks"
"#,
    );
    let o = t.run_args(json_build(&["ok", "missing_tool"]));
    o.assert_status(0).assert_summary(2, 0, 0, 0);
    o.assert_task("ok", "success", Some("missing-output"));
    o.stderr_has("warning: on_success hook of ok: exited with").stderr_has("warning: on_success hook of missing_tool");
    assert_eq!(t.read("ok.txt"), "ok\n");
    assert_eq!(t.read(".flux/logs/ok/ok/1-1.on_success.log"), "hook ran\n", "the hook's log is kept");
    assert_eq!(history_of(&t, "ok")[0]["status"], "success");
    t.run_args(json_build(&["ok", "missing_tool"])).assert_status(0).assert_summary(0, 2, 0, 0);

    let o = t.run_args(json_build(&["bad"]));
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    assert_eq!(o.task("bad")["error"], "command exited with status 4");
    o.stderr_has("warning: on_failure hook of bad");
    let h = history_of(&t, "bad");
    assert_eq!((h.len(), h[0]["status"].as_str()), (1, Some("failed")));
    assert_eq!(h[0]["exit_code"], 4);
}

fn webhook_ff(url: &str, extra: &str) -> String {
    format!(
        r#"
[notify]
webhook = "{url}"
{extra}

[step.good]
params = {{ region = ["eu"] }}
outputs = ["good-{{{{ region }}}}.txt"]
run = "echo > {{{{ outputs[0] }}}}"

[step.bad]
params = {{ region = ["eu"] }}
outputs = ["bad-{{{{ region }}}}.txt"]
run = "echo oops; exit 3"
"#
    )
}

#[test]
fn the_webhook_gets_one_json_post_per_failure() {
    let l = Listener::start(&[Answer::Status(200)]);
    let t = Test::new().fluxfile(&webhook_ff(&l.url, ""));
    let o = t.run_args(json_build(&[]));
    o.assert_status(1).assert_summary(1, 0, 1, 0);
    o.stderr_lacks("warning");
    let reqs = l.requests();
    assert_eq!(reqs.len(), 1, "one event (the failure; successes are not posted): {reqs:#?}");
    let r = &reqs[0];
    assert!(r.head.starts_with("POST /hook HTTP/1.1\r\n"), "{}", r.head);
    assert!(r.head.to_ascii_lowercase().contains("content-type: application/json"), "{}", r.head);
    let ev = r.json();
    assert_eq!(ev["event"], "failure");
    assert_eq!(ev["task"], "bad[eu]");
    assert_eq!(ev["step"], "bad");
    assert_eq!(ev["params"], json!({"region": "eu"}));
    assert_eq!(ev["status"], "failed");
    assert_eq!(ev["attempt"], 1);
    assert_eq!(ev["error"], "command exited with status 3");
    assert_eq!(ev["run_id"], o.json()["run_id"]);
    let log = ev["log"].as_str().expect("the log path");
    assert_eq!(printed(&std::fs::read_to_string(in_project(&t, log)).unwrap()), "oops\n");
    assert!(ev["time"].as_str().is_some_and(|s| s.len() >= 20 && s.ends_with('Z')), "RFC 3339 UTC time: {ev}");
}

#[test]
fn the_webhook_gets_a_retry_event() {
    let l = Listener::start(&[Answer::Status(200)]);
    let t = Test::new().fluxfile(
        &r#"
[notify]
webhook = "URL"

[step.flaky]
outputs = ["out.txt"]
retries = 1
retry_delay = "0s"
run = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 2 ] || exit 5; echo > {{ outputs[0] }}"
"#
        .replace("URL", &l.url),
    );
    t.run_args(json_build(&[]))
        .stderr_has("retry flaky: command exited with status 5; attempt 2")
        .assert_status(0)
        .assert_summary(1, 0, 0, 0);
    let reqs = l.requests();
    assert_eq!(reqs.len(), 1, "one retry, then a success (not posted): {reqs:#?}");
    let ev = reqs[0].json();
    assert_eq!(ev["event"], "retry");
    assert_eq!(ev["task"], "flaky");
    assert_eq!(ev["status"], "retrying");
    assert_eq!(ev["attempt"], 1);
    assert_eq!(ev["error"], "command exited with status 5");
}

#[test]
fn the_webhook_retries_after_a_server_error() {
    let l = Listener::start(&[Answer::Status(503), Answer::Status(200)]);
    let t = Test::new().fluxfile(&webhook_ff(&l.url, "retries = 2"));
    let o = t.run_args(json_build(&["bad"]));
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    o.stderr_lacks("warning: webhook");
    let reqs = l.requests();
    assert_eq!(reqs.len(), 2, "503, then the same event again: {reqs:#?}");
    assert_eq!(reqs[0].body, reqs[1].body);
    assert_eq!(reqs[1].json()["event"], "failure");
}

#[test]
fn a_webhook_that_keeps_failing_is_a_warning_and_the_build_result_stands() {
    let l = Listener::start(&[Answer::Status(500)]);
    let t = Test::new().fluxfile(&webhook_ff(&l.url, "retries = 1"));
    let o = t.run_args(json_build(&[]));
    o.assert_status(1).assert_summary(1, 0, 1, 0);
    o.stderr_has("warning: webhook for failure bad[eu]").stderr_has("HTTP 500").stderr_has("gave up after 2 attempts");
    assert_eq!(l.requests().len(), 2, "the first try and one retry");
}

#[test]
fn a_webhook_that_never_answers_times_out() {
    let l = Listener::start(&[Answer::Silence]);
    let t = Test::new().fluxfile(&webhook_ff(&l.url, "timeout = \"500ms\"\nretries = 0"));
    let o = t.run_args(json_build(&["bad"]));
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    let ended = Instant::now();
    o.stderr_has("warning: webhook for failure bad[eu]");
    let reqs = l.requests();
    assert_eq!(reqs.len(), 1);
    // From the request's arrival: the 500 ms timeout, not the default 10 s.
    let held = ended.duration_since(reqs[0].at);
    assert!(held < Duration::from_secs(8), "a 500 ms webhook timeout held the build for {held:?}");
}

// ---------------------------------------------------------------------------------------
// history, status, logs, clear
// ---------------------------------------------------------------------------------------

const DAYS: &str = r#"
[step.day]
params = { date = "date" }
outputs = ["out/{{ date }}.txt"]
run = "echo {{ date }}; [ {{ date }} != 2024-01-03 ] && echo {{ date }} > {{ outputs[0] }}"
"#;

#[test]
fn status_shows_success_failure_missing_and_adopted_cells() {
    let t = Test::new().fluxfile(DAYS);
    t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-03"]))
        .stderr_has("FAIL day[2024-01-03]: command exited with status 1")
        .assert_status(1)
        .assert_summary(2, 0, 1, 0);
    t.write("out/2024-01-05.txt", "made by hand\n");
    let o = t.run_args(["status", "--date-range", "2024-01-01..2024-01-05", "--output", "json"]);
    o.assert_status(0);
    let j = o.json();
    assert_eq!(j["intervals"], json!(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]));
    let rows = j["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{j:#}");
    assert_eq!(rows[0]["row"], "day");
    let mut cells: Vec<(String, String, String)> = rows[0]["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .map(|c| {
            (
                c["interval"].as_str().unwrap_or("").to_string(),
                c["task"].as_str().unwrap_or("").to_string(),
                c["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    cells.sort();
    let want: Vec<(String, String, String)> = [
        ("2024-01-01", "success"),
        ("2024-01-02", "success"),
        ("2024-01-03", "failed"),
        ("2024-01-04", "missing"),
        ("2024-01-05", "up to date"),
    ]
    .iter()
    .map(|(d, s)| (d.to_string(), format!("day[{d}]"), s.to_string()))
    .collect();
    assert_eq!(cells, want);

    let text = t.run_args(["status", "--date-range", "2024-01-01..2024-01-05"]);
    text.assert_status(0);
    let line = text.stdout.lines().find(|l| l.starts_with("day ")).unwrap_or_else(|| panic!("{}", text.describe()));
    assert!(line.trim_end().ends_with("##X.="), "grid line {line:?}\n{}", text.describe());
}

#[test]
fn history_lists_attempts_newest_first_with_every_field() {
    let t = Test::new().fluxfile(DAYS);
    let o = t.run_args(json_build(&["--date-range", "2024-01-01..2024-01-03", "-j", "1"]));
    o.stderr_has("FAIL day[2024-01-03]: command exited with status 1");
    o.assert_status(1);
    let run_id = o.json()["run_id"].clone();
    let h = history(&t);
    assert_eq!(h.len(), 3, "{h:#?}");
    let keys = [
        "run_id",
        "task",
        "step",
        "params",
        "attempt",
        "status",
        "reason",
        "started_at",
        "ended_at",
        "duration_s",
        "exit_code",
        "log",
        "error",
    ];
    for a in &h {
        for k in keys {
            assert!(a.get(k).is_some(), "attempt lacks {k}: {a:#}");
        }
        assert_eq!(a["run_id"], run_id);
        assert_eq!(a["step"], "day");
        assert_eq!(a["reason"], "missing-output");
        let d = a["duration_s"].as_f64().expect("duration_s");
        let span = a["ended_at"].as_f64().unwrap() - a["started_at"].as_f64().unwrap();
        assert!((d - span).abs() < 1e-6 && d >= 0.0, "{a:#}");
    }
    // Newest first: with -j 1 the days ran in some order; the started_at times go down.
    let starts: Vec<f64> = h.iter().map(|a| a["started_at"].as_f64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first: {starts:?}");
    let failed = h.iter().find(|a| a["task"] == "day[2024-01-03]").expect("the failed day");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["exit_code"], 1);
    assert_eq!(failed["error"], "command exited with status 1");
    assert_eq!(failed["params"], json!({"date": "2024-01-03"}));
    let ok = h.iter().find(|a| a["task"] == "day[2024-01-01]").expect("a good day");
    assert_eq!(
        (ok["status"].as_str(), ok["exit_code"].as_i64(), ok["error"].is_null()),
        (Some("success"), Some(0), true)
    );

    // --limit and --step.
    let one = t.run_args(["history", "--limit", "1", "--output", "json"]).json();
    assert_eq!(one["attempts"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["attempts"][0], h[0]);
    let by_step = t.run_args(["history", "--step", "day", "--output", "json"]).assert_status(0).json();
    let by_step = by_step["attempts"].as_array().cloned().unwrap_or_default();
    let of_day: Vec<&Value> = h.iter().filter(|a| a["step"] == "day").collect();
    assert!(!of_day.is_empty() && by_step.len() == of_day.len(), "--step day lists the attempts of day: {by_step:?}");
    assert!(by_step.iter().all(|a| a["step"] == "day"), "{by_step:?}");
    t.run_args(["history", "--step", "nope"]).assert_status(2).stderr_has("nope");
    // The text form names each attempt.
    let text = t.run_args(["history"]);
    text.assert_status(0).stdout_has("day[2024-01-03]").stdout_has("failed");
}

#[test]
fn logs_print_an_attempts_output_or_say_why_there_is_none() {
    let t = Test::new().fluxfile(
        "[step.talk]\noutputs = [\"a.txt\"]\nrun = \"echo hello; echo oops >&2; echo > {{ outputs[0] }}\"\n\n[step.mute]\noutputs = [\"b.txt\"]\nrun = \"echo > {{ outputs[0] }}\"\n",
    );
    t.run_args(["logs", "talk"]).stderr_has("error: no state").assert_status(2);
    t.run_args(json_build(&[])).assert_status(0);
    let staged = t.run_args(["logs", "talk"]).assert_status(0).stdout.clone();
    // The log starts with the command as `sh -c` got it (the staged output path).
    let head = format!("$ echo hello; echo oops >&2; echo > {}/.flux/stage/", t.path().display());
    assert!(staged.starts_with(&head), "{staged}");
    assert_eq!(printed(&staged), "hello\noops\n");
    let mute = t.run_args(["logs", "mute"]);
    mute.assert_status(0).stdout_has("mute attempt 1: success");
    t.run_args(["logs", "nosuchstep"]).assert_status(2).stderr_has("error: `nosuchstep` is not a task id");
}

#[test]
fn logs_follow_prints_a_running_attempts_output_until_it_ends() {
    // The task prints three lines, waits for the test to create `go` (after `logs
    // --follow` has started and printed what was there), then prints three more.
    let t = Test::new().fluxfile(
        "[step.slow]\noutputs = [\"a.txt\"]\nrun = \"for i in 1 2 3; do echo line$i; done; while [ ! -e go ]; do sleep 0.05; done; for i in 4 5 6; do echo line$i; sleep 0.1; done; echo > {{ outputs[0] }}\"\n",
    );
    let build = Bg::spawn(&t, &["build"]);
    // The log grows on disk while the task runs (what --follow prints).
    let log = ".flux/logs/slow/slow/1-1.log";
    let live = wait_until(Duration::from_secs(30), || {
        t.maybe_read(log).is_some_and(|b| String::from_utf8_lossy(&b).contains("line3"))
    });
    let mut follow = Bg::spawn(&t, &["logs", "slow", "--follow"]);
    // --follow keeps going while the attempt runs.
    std::thread::sleep(Duration::from_millis(300));
    let following = follow.running();
    t.write("go", "");
    let f = follow.wait(Duration::from_secs(60));
    let b = build.wait(Duration::from_secs(60));
    assert!(live, "{log} never had `line3` while the task was blocked");
    b.assert_status(0);
    f.assert_status(0);
    assert_eq!(printed(&f.stdout), "line1\nline2\nline3\nline4\nline5\nline6\n", "{}", f.describe());
    assert!(following, "logs --follow ended while the attempt was still running\n{}", f.describe());
}

#[test]
fn clear_makes_the_next_build_rerun_with_reason_forced() {
    let t = Test::new().fluxfile(&DAYS.replace("[ {{ date }} != 2024-01-03 ] && ", ""));
    let range = ["--date-range", "2024-01-01..2024-01-03"];
    t.run_args(json_build(&range)).assert_status(0).assert_summary(3, 0, 0, 0);
    t.age_files();

    t.run_args(["clear", "day[2024-01-02]"]).assert_status(0).stdout_is("cleared 1 task; the next build reruns it\n");
    let dry = t.run_args(["build", "-n", "--date-range", "2024-01-01..2024-01-03"]);
    dry.assert_status(0).stdout_is("would run day[2024-01-02] (forced)\ndry run: 1 task would run, 2 up to date\n");
    let st = t.run_args(["status", "--date-range", "2024-01-01..2024-01-03", "--output", "json"]).json();
    let cleared: Vec<&Value> =
        st["rows"][0]["cells"].as_array().unwrap().iter().filter(|c| c["status"] == "cleared").collect();
    assert_eq!(cleared.len(), 1, "{st:#}");
    assert_eq!(cleared[0]["task"], "day[2024-01-02]");
    let text = t.run_args(["status", "--date-range", "2024-01-01..2024-01-03"]);
    assert!(text.stdout.lines().any(|l| l.starts_with("day ") && l.trim_end().ends_with("#c#")), "{}", text.describe());

    let o = t.run_args(json_build(&range));
    o.assert_status(0).assert_summary(1, 2, 0, 0);
    o.assert_task("day[2024-01-02]", "success", Some("forced"));
    t.age_files();
    t.run_args(json_build(&range)).assert_status(0).assert_summary(0, 3, 0, 0);

    // --date-range selects the tasks of a step; --delete-outputs removes their files.
    let c = t.run_args(["clear", "day", "--date-range", "2024-01-01..2024-01-03", "--delete-outputs"]);
    c.assert_status(0).stdout_has("cleared 3 tasks, deleted 3 outputs");
    for d in ["2024-01-01", "2024-01-02", "2024-01-03"] {
        assert!(!t.exists(&format!("out/{d}.txt")), "{d} deleted");
    }
    let dry = t.run_args(["build", "-n", "--date-range", "2024-01-01..2024-01-03"]);
    dry.assert_status(0).stdout_has("would run day[2024-01-01] (forced)").stdout_has("dry run: 3 tasks would run");
    t.run_args(json_build(&range)).assert_status(0).assert_summary(3, 0, 0, 0);
    assert_eq!(t.read("out/2024-01-02.txt"), "2024-01-02\n");
    t.run_args(["clear"])
        .stderr_has("error: flux clear needs targets: step names, task ids or output paths")
        .assert_status(2);
}

#[test]
fn history_step_lists_the_attempts_of_that_step_only() {
    let t = Test::new().fluxfile(
        "[step.a]\nparams = { n = [\"1\", \"2\"] }\noutputs = [\"a/{{ n }}.txt\"]\nrun = \"echo > {{ outputs[0] }}\"\n\n\
         [step.b]\noutputs = [\"b.txt\"]\nrun = \"echo > {{ outputs[0] }}\"\n",
    );
    t.run_args(json_build(&[])).assert_status(0).assert_summary(3, 0, 0, 0);
    let tasks = |step: &str| -> Vec<String> {
        let h = t.run_args(["history", "--step", step, "--output", "json"]).assert_status(0).json();
        let mut v: Vec<String> = h["attempts"]
            .as_array()
            .unwrap_or_else(|| panic!("no attempts array: {h}"))
            .iter()
            .map(|a| a["task"].as_str().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(tasks("a"), ["a[1]", "a[2]"]);
    assert_eq!(tasks("b"), ["b"]);
    let text = t.run_args(["history", "--step", "b"]);
    text.assert_status(0).stdout_has("b").stdout_lacks("a[1]").stdout_lacks("a[2]");
    assert_eq!(text.stdout_lines().len(), 1, "{}", text.describe());
}

// ---------------------------------------------------------------------------------------
// --force, --from, --only, --fail-fast, --rerun-triggers
// ---------------------------------------------------------------------------------------

/// a -> b -> c, and a -> d.
const CHAIN: &str = r#"
[step.a]
outputs = ["a.txt"]
run = "echo a >> trace.txt; echo a > {{ outputs[0] }}"

[step.b]
inputs = ["a.txt"]
outputs = ["b.txt"]
run = "echo b >> trace.txt; cat {{ inputs[0] }} > {{ outputs[0] }}; echo b >> {{ outputs[0] }}"

[step.c]
inputs = ["b.txt"]
outputs = ["c.txt"]
run = "echo c >> trace.txt; cat {{ inputs[0] }} > {{ outputs[0] }}; echo c >> {{ outputs[0] }}"

[step.d]
inputs = ["a.txt"]
outputs = ["d.txt"]
run = "echo d >> trace.txt; cat {{ inputs[0] }} > {{ outputs[0] }}; echo d >> {{ outputs[0] }}"
"#;

fn built_chain() -> Test {
    let t = Test::new().fluxfile(CHAIN);
    t.run_args(json_build(&[])).assert_status(0).assert_summary(4, 0, 0, 0);
    t.remove("trace.txt");
    t.age_files();
    t
}

#[test]
fn force_reruns_the_requested_tasks_only() {
    let t = built_chain();
    t.run_args(["build", "c", "--force", "-n"])
        .assert_status(0)
        .stdout_is("would run c (forced)\ndry run: 1 task would run, 2 up to date\n");
    let o = t.run_args(json_build(&["c", "--force"]));
    o.assert_status(0).assert_summary(1, 2, 0, 0);
    o.assert_task("c", "success", Some("forced"));
    assert_eq!(t.read("trace.txt"), "c\n");
}

#[test]
fn from_forces_a_step_and_everything_downstream_but_nothing_upstream() {
    let t = built_chain();
    let o = t.run_args(json_build(&["--from", "b"]));
    o.assert_status(0).assert_summary(2, 2, 0, 0);
    o.assert_task("b", "success", Some("forced")).assert_task("c", "success", Some("forced"));
    o.assert_task("a", "skipped", None).assert_task("d", "skipped", None);
    let mut trace: Vec<String> = t.read("trace.txt").lines().map(String::from).collect();
    trace.sort();
    assert_eq!(trace, ["b", "c"]);
    t.run_args(["build", "--from", "nosuch"]).assert_status(2).stderr_has("--from nosuch: no such step");
}

#[test]
fn only_runs_the_named_task_alone_and_needs_its_inputs() {
    let t = built_chain();
    t.remove("a.txt");
    t.remove("b.txt");
    t.remove("c.txt");
    let o = t.run_args(["build", "c", "--only"]);
    o.assert_status(2).stderr_has("--only: input `b.txt` of c does not exist");
    assert!(!t.exists("trace.txt"), "nothing ran");
    // b's input is missing too; write it by hand: --only never builds upstream.
    t.write("a.txt", "hand\n");
    let o = t.run_args(json_build(&["b", "--only"]));
    o.assert_status(0).assert_summary(1, 1, 0, 0);
    o.assert_task("a", "skipped", None);
    o.assert_task("b", "success", Some("missing-output"));
    assert_eq!(t.read("trace.txt"), "b\n");
    assert_eq!(t.read("b.txt"), "hand\nb\n");
    t.remove("a.txt");
    let o = t.run_args(json_build(&["c", "--only"]));
    o.assert_status(0);
    assert_eq!(o.ran(), ["c"], "{}", o.describe());
    assert_eq!(t.read("trace.txt"), "b\nc\n", "a was not rebuilt");
    assert!(!t.exists("a.txt"));
    t.run_args(["build", "--only"]).stderr_has("error: --only needs targets: the tasks to run alone").assert_status(2);
}

#[test]
fn fail_fast_starts_nothing_after_a_failure_but_lets_running_tasks_finish() {
    let t = Test::new().fluxfile(
        r#"
[step.slow]
priority = 10
outputs = ["slow.txt"]
run = "sleep 0.8; echo slow > {{ outputs[0] }}"

[step.bad]
priority = 9
outputs = ["bad.txt"]
run = "sleep 0.1; exit 1"

[step.later]
params = { n = ["1", "2", "3"] }
outputs = ["later/{{ n }}.txt"]
run = "echo {{ n }} >> trace.txt; echo > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&["-j", "2", "--fail-fast"]));
    o.stderr_has("FAIL bad: command exited with status 1");
    o.assert_status(1);
    assert_eq!(o.summary("failed"), 1, "{}", o.describe());
    o.assert_task("slow", "success", Some("missing-output"));
    assert_eq!(t.read("slow.txt"), "slow\n", "a running task is not killed by --fail-fast");
    assert!(!t.exists("trace.txt"), "no task started after the failure: {:?}", t.maybe_read("trace.txt"));
    for n in 1..=3 {
        assert_ne!(o.task(&format!("later[{n}]"))["status"], "success");
    }
    // Without --fail-fast the independent tasks run.
    t.run_args(json_build(&["-j", "2"]))
        .stderr_has("FAIL bad: command exited with status 1")
        .assert_status(1)
        .assert_summary(3, 1, 1, 0);
}

#[test]
fn rerun_triggers_missing_ignores_a_changed_command_but_not_a_deleted_output() {
    let t = built_chain();
    t.write("Fluxfile", CHAIN.replace("echo d >> {{ outputs[0] }}", "echo D >> {{ outputs[0] }}"));
    t.run_args(["build", "-n"]).assert_status(0).stdout_has("would run d (command-changed)");
    t.run_args(["build", "-n", "--rerun-triggers", "missing"])
        .assert_status(0)
        .stdout_is("dry run: 0 tasks would run, 4 up to date\n");
    t.run_args(json_build(&["--rerun-triggers", "missing"])).assert_status(0).assert_summary(0, 4, 0, 0);
    assert_eq!(t.read("d.txt"), "a\nd\n");
    t.remove("d.txt");
    let o = t.run_args(json_build(&["--rerun-triggers", "missing"]));
    o.assert_status(0).assert_summary(1, 3, 0, 0);
    o.assert_task("d", "success", Some("missing-output"));
    assert_eq!(t.read("d.txt"), "a\nD\n");
}

#[test]
fn rerun_triggers_command_reruns_a_changed_command_and_ignores_changed_inputs() {
    let t = built_chain();
    // An input changed by hand: only the input trigger sees it.
    t.write("a.txt", "A by hand\n");
    t.age_files();
    t.run_args(["build", "-n"]).assert_status(0).stdout_has("would run b (input-changed)");
    t.run_args(["build", "-n", "--rerun-triggers", "command"])
        .assert_status(0)
        .stdout_is("dry run: 0 tasks would run, 4 up to date\n");
    t.write("Fluxfile", CHAIN.replace("echo c >> {{ outputs[0] }}", "echo C >> {{ outputs[0] }}"));
    let o = t.run_args(json_build(&["--rerun-triggers", "command"]));
    o.assert_status(0).assert_summary(1, 3, 0, 0);
    o.assert_task("c", "success", Some("command-changed"));
    assert_eq!(t.read("c.txt"), "a\nb\nC\n", "b was not rebuilt from the new a.txt");
    t.run_args(["build", "--rerun-triggers", "typo"]).assert_status(2).stderr_has("unknown trigger `typo`");
}

// ---------------------------------------------------------------------------------------
// Waiting for sources, sensors
// ---------------------------------------------------------------------------------------

const LATE: &str = r#"
[step.w]
inputs = ["raw/in.txt"]
outputs = ["out.txt"]
WAIT
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"
"#;

fn write_later(t: &Test, rel: &str, after: Duration) -> JoinHandle<()> {
    let p = t.abs(rel);
    std::thread::spawn(move || {
        std::thread::sleep(after);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, "late\n").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    })
}

#[test]
fn a_task_waits_for_a_source_that_appears_late() {
    let t = Test::new().fluxfile(&LATE.replace("WAIT", "wait = \"60s\"\npoll = \"1s\""));
    let w = write_later(&t, "raw/in.txt", Duration::from_secs(1));
    let o = t.run_args(json_build(&[]));
    w.join().unwrap();
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    o.stderr_lines_match(&["wait w: missing source `raw/in.txt` needed by w"]);
    assert_eq!(t.read("out.txt"), "late\n");
    // It went on once the source appeared, long before the 60 s wait ran out.
    assert!(o.elapsed >= Duration::from_secs(1) && o.elapsed < Duration::from_secs(30), "took {:?}", o.elapsed);
}

#[test]
fn a_source_that_never_appears_fails_after_the_wait_naming_the_path() {
    let t = Test::new().fluxfile(&LATE.replace("WAIT", "wait = \"1s\"\npoll = \"200ms\""));
    let o = t.run_args(json_build(&[]));
    o.stderr_has("wait w: missing source `raw/in.txt` needed by w");
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    assert_eq!(o.task("w")["error"], "missing source `raw/in.txt` needed by w (waited 1s)", "{}", o.describe());
    assert!(o.elapsed >= Duration::from_secs(1) && o.elapsed < Duration::from_secs(30), "took {:?}", o.elapsed);
    assert!(!t.exists("out.txt"));
}

#[test]
fn dash_dash_wait_overrides_the_steps_wait() {
    let t = Test::new().fluxfile(&LATE.replace("WAIT", "poll = \"200ms\""));
    // No wait by default: the missing source fails at once.
    let o = t.run_args(json_build(&[]));
    o.assert_status(1).stderr_has("FAIL w: missing source `raw/in.txt` needed by w");
    assert!(o.elapsed < Duration::from_secs(20), "took {:?}", o.elapsed);
    assert_eq!(o.task("w")["error"], "missing source `raw/in.txt` needed by w");
    // --wait 1s: waits, then fails saying so.
    let o = t.run_args(json_build(&["--wait", "1s"]));
    o.stderr_has("FAIL w: missing source `raw/in.txt` needed by w (waited 1s)");
    o.assert_status(1);
    assert_eq!(o.task("w")["error"], "missing source `raw/in.txt` needed by w (waited 1s)");
    assert!(o.elapsed >= Duration::from_secs(1), "took {:?}", o.elapsed);
    // --wait 60s with the source appearing after 1 s: success, long before the wait is over.
    let w = write_later(&t, "raw/in.txt", Duration::from_secs(1));
    let o = t.run_args(json_build(&["--wait", "60s"]));
    o.stderr_lines_match(&["wait w: missing source `raw/in.txt` needed by w"]);
    w.join().unwrap();
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    assert!(o.elapsed < Duration::from_secs(30), "took {:?}", o.elapsed);
    t.run_args(["build", "--wait", "soon"]).assert_status(2).stderr_has("--wait soon");
}

#[test]
fn a_waiting_task_holds_no_worker_slot() {
    let t = Test::new().fluxfile(
        r#"
[step.w]
inputs = ["raw/in.txt"]
outputs = ["out.txt"]
wait = "6s"
poll = "200ms"
priority = 10
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"

[step.other]
params = { n = ["1", "2", "3"] }
outputs = ["other/{{ n }}.txt"]
run = "sleep 0.2; date +%s%N > {{ outputs[0] }}"
"#,
    );
    let appear = SystemTime::now() + Duration::from_secs(2);
    let w = write_later(&t, "raw/in.txt", Duration::from_secs(2));
    let o = t.run_args(json_build(&["-j", "1"]));
    o.stderr_lines_match(&["wait w: missing source `raw/in.txt` needed by w"]);
    w.join().unwrap();
    o.assert_status(0).assert_summary(4, 0, 0, 0);
    let appear_ns = appear.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    for n in 1..=3 {
        let done: u128 = t.read(&format!("other/{n}.txt")).trim().parse().unwrap();
        assert!(done < appear_ns, "other[{n}] waited for w's source: with -j 1 the waiting task held the only slot");
    }
}

#[test]
fn a_sensor_probes_every_poll_until_it_succeeds() {
    let t = Test::new().fluxfile(
        r#"
[step.probe]
sensor = true
poll = "500ms"
wait = "60s"
run = "n=$(cat probes 2>/dev/null || echo 0); n=$((n+1)); echo $n > probes; [ $n -ge 3 ]"

[step.after]
requires = ["probe"]
outputs = ["after.txt"]
run = "cat probes > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_summary(2, 0, 0, 0);
    assert_eq!(t.read("probes"), "3\n", "probed three times");
    assert_eq!(t.read("after.txt"), "3\n", "the dependent ran after the sensor was ready");
    assert_eq!(o.stderr().matches("wait probe: sensor not ready").count(), 2, "{}", o.describe());
    assert!(o.elapsed >= Duration::from_millis(1000) && o.elapsed < Duration::from_secs(30), "took {:?}", o.elapsed);
    let h = history_of(&t, "probe");
    assert_eq!(h.len(), 1, "not-ready probes are not failed attempts: {h:#?}");
    assert_eq!(h[0]["status"], "success");
}

#[test]
fn a_sensor_that_never_succeeds_fails_when_its_wait_is_over() {
    let t = Test::new().fluxfile(
        r#"
[step.probe]
sensor = true
poll = "500ms"
wait = "1500ms"
run = "echo probe >> probes; exit 1"

[step.after]
requires = ["probe"]
outputs = ["after.txt"]
run = "echo > {{ outputs[0] }}"
"#,
    );
    let o = t.run_args(json_build(&[]));
    o.assert_status(1).assert_summary(0, 0, 1, 1);
    // Probes at 0, 0.5 and 1 s; flux gives up once the next probe would start after the wait.
    let probes = t.read("probes").lines().count();
    // (Fewer when a loaded machine makes each probe slower than the poll.)
    assert!((2..=4).contains(&probes), "probed {probes} times in a 1.5 s wait every 0.5 s");
    assert!(o.elapsed >= Duration::from_millis(950) && o.elapsed < Duration::from_secs(30), "took {:?}", o.elapsed);
    assert_eq!(o.stderr().matches("wait probe: sensor not ready").count(), probes - 1, "{}", o.describe());
    assert!(!t.exists("after.txt"));
}
