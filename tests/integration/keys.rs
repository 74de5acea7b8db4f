//! Keys of the SPEC that once were refused as not supported yet (`sensor`, `wait`, `poll`,
//! `cpus`, `mem`, hooks, `[notify]`): flux acts on each now, and each test checks the
//! behaviour the SPEC describes (a key accepted and then ignored fails). The one refusal
//! left, an https webhook, is checked as a refusal.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fluxfile::max_overlap;
use crate::test::*;

#[test]
fn cpus_is_budgeted() {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Test::new().fluxfile(&format!(
        r#"
[step.t]
params = {{ n = ["1", "2", "3"] }}
cpus = {n}
outputs = ["t/{{{{ n }}}}.txt"]
run = "date +%s%N > {{{{ outputs[0] }}}}; sleep 0.2; date +%s%N >> {{{{ outputs[0] }}}}"
"#
    ));
    let o = t.run_args(json_build(&["-j", "3"]));
    o.assert_status(0).assert_summary(3, 0, 0, 0);
    assert_eq!(
        max_overlap(&t, &["t/1.txt", "t/2.txt", "t/3.txt"]),
        1,
        "tasks that each need every CPU run one at a time"
    );
}

#[test]
fn mem_is_accepted_and_checked() {
    let t =
        Test::new().fluxfile("[step.m]\nmem = \"1M\"\noutputs = [\"m.txt\"]\nrun = \"echo m > {{ outputs[0] }}\"\n");
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    let bad =
        Test::new().fluxfile("[step.m]\nmem = \"lots\"\noutputs = [\"m.txt\"]\nrun = \"true\"\n").args(["check"]).run();
    bad.assert_status(2).stderr_has(" --> Fluxfile:2:7");
}

#[test]
fn on_success_runs_after_a_success() {
    let t = Test::new().fluxfile(
        r#"
[step.a]
params = { date = "date" }
outputs = ["a/{{ date }}.txt"]
run = "echo a > {{ outputs[0] }}"
on_success = "echo $FLUX_STEP $FLUX_TASK $FLUX_STATUS $FLUX_ATTEMPT >> hooks.txt; printf '%s\n' \"$FLUX_PARAMS\" >> hooks.txt"
"#,
    );
    let o = t.run_args(json_build(&["--date", "2024-01-05"]));
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    let hooks = t.read("hooks.txt");
    let lines: Vec<&str> = hooks.lines().collect();
    assert_eq!(lines.len(), 2, "{hooks}");
    assert_eq!(lines[0], "a a[2024-01-05] success 1");
    let params: serde_json::Value = serde_json::from_str(lines[1]).expect("FLUX_PARAMS is JSON");
    assert_eq!(params, serde_json::json!({"date": "2024-01-05"}));
    // An up-to-date task does not run its hook again.
    t.run_args(json_build(&["--date", "2024-01-05"])).assert_status(0).assert_summary(0, 1, 0, 0);
    assert_eq!(t.read("hooks.txt"), hooks);
}

#[test]
fn on_failure_runs_after_a_failure() {
    let t = Test::new().fluxfile(
        r#"
[step.a]
outputs = ["a.txt"]
run = "echo oops; exit 3"
on_failure = "echo $FLUX_TASK $FLUX_STATUS > hook.txt; echo \"$FLUX_ERROR\" >> hook.txt; cat \"$FLUX_LOG\" >> hook.txt"
"#,
    );
    let o = t.run_args(json_build(&[]));
    o.stderr_has("FAIL a: command exited with status 3");
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    let hook = t.read("hook.txt");
    assert!(hook.starts_with("a failed\n"), "{hook}");
    assert!(hook.contains("status 3"), "FLUX_ERROR says why: {hook}");
    assert!(hook.ends_with("oops\n"), "FLUX_LOG is the attempt's log: {hook}");
}

#[test]
fn on_retry_runs_before_each_retry() {
    let t = Test::new().fluxfile(
        r#"
[step.a]
outputs = ["a.txt"]
retries = 2
retry_delay = "0s"
run = "echo try >> tries.txt; [ $(wc -l < tries.txt) -ge 3 ] && echo ok > {{ outputs[0] }}"
on_retry = "echo $FLUX_TASK $FLUX_ATTEMPT >> retries.txt"
"#,
    );
    let o = t.run_args(json_build(&[]));
    o.stderr_has("retry a: command exited with status 1; attempt 2");
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(o.task("a")["attempts"], 3);
    assert_eq!(t.read("retries.txt").lines().count(), 2, "{}", t.read("retries.txt"));
}

#[test]
fn wait_waits_for_a_late_source() {
    let t = Test::new().fluxfile(
        r#"
[step.a]
inputs = ["late.txt"]
outputs = ["a.txt"]
wait = "60s"
poll = "100ms"
run = "cp {{ inputs[0] }} {{ outputs[0] }}"
"#,
    );
    let late = t.abs("late.txt");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        std::fs::write(late, "arrived\n").expect("write the late source");
    });
    let o = t.run_args(json_build(&[]));
    o.stderr_lines_match(&["wait a: missing source `late.txt` needed by a"]);
    let _ = writer.join();
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("a.txt"), "arrived\n");
    // It went on when the source arrived, long before its wait ran out.
    assert!(o.elapsed < Duration::from_secs(30), "flux polls every 100ms: {:?}", o.elapsed);
}

#[test]
fn wait_gives_up_after_its_duration() {
    let t = Test::new().fluxfile(
        "[step.a]\ninputs = [\"never.txt\"]\noutputs = [\"a.txt\"]\nwait = \"1s\"\npoll = \"100ms\"\nrun = \"cp {{ inputs[0] }} {{ outputs[0] }}\"\n",
    );
    let o = t.run_args(json_build(&[]));
    o.stderr_has("wait a: missing source `never.txt` needed by a");
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    assert!(o.elapsed >= Duration::from_millis(850) && o.elapsed < Duration::from_secs(30), "{:?}", o.elapsed);
    assert!(o.task("a")["error"].as_str().is_some_and(|e| e.contains("never.txt")), "{}", o.describe());
}

#[test]
fn a_sensor_succeeds_once_its_probe_does() {
    let t = Test::new().fluxfile(
        r#"
[step.ready]
sensor = true
wait = "60s"
poll = "100ms"
run = "test -e flag"

[step.after]
requires = ["ready"]
outputs = ["after.txt"]
run = "echo after > {{ outputs[0] }}"
"#,
    );
    let flag = t.abs("flag");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        std::fs::write(flag, "").expect("write the flag");
    });
    let o = t.run_args(json_build(&[]));
    o.stderr_lines_match(&["wait ready: sensor not ready"]);
    let _ = writer.join();
    o.assert_status(0).assert_summary(2, 0, 0, 0);
    assert_eq!(t.read("after.txt"), "after\n");
    assert!(o.elapsed < Duration::from_secs(30), "the sensor succeeded once its probe did: {:?}", o.elapsed);
}

#[test]
fn a_sensor_fails_when_its_wait_runs_out() {
    let t =
        Test::new().fluxfile("[step.ready]\nsensor = true\nwait = \"1s\"\npoll = \"100ms\"\nrun = \"test -e flag\"\n");
    let o = t.run_args(json_build(&[]));
    o.stderr_has("wait ready: sensor not ready");
    o.assert_status(1).assert_summary(0, 0, 1, 0);
    // It probed for about the whole second (give or take the last poll), not much longer.
    assert!(o.elapsed >= Duration::from_millis(850) && o.elapsed < Duration::from_secs(30), "{:?}", o.elapsed);
}

/// A one-thread HTTP server that records request bodies.
pub fn http_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let Ok(n) = s.read(&mut chunk) else { break None };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
                    }
                }
            };
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Some(b) = body
                && let Ok(mut v) = sink.lock()
            {
                v.push(b);
            }
        }
    });
    (port, got)
}

#[test]
fn notify_posts_failures_to_the_webhook() {
    let (port, got) = http_sink();
    let t = Test::new().fluxfile(&format!(
        "[notify]\nwebhook = \"http://127.0.0.1:{port}/flux\"\n\n[step.bad]\noutputs = [\"bad.txt\"]\nrun = \"exit 5\"\n\n[step.good]\noutputs = [\"good.txt\"]\nrun = \"echo > {{{{ outputs[0] }}}}\"\n"
    ));
    let o = t.run_args(json_build(&[]));
    o.stderr_has("FAIL bad: command exited with status 5");
    o.assert_status(1).assert_summary(1, 0, 1, 0);
    let bodies = got.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(bodies.len(), 1, "one event, for the one failure: {bodies:?}");
    let event: serde_json::Value = serde_json::from_str(&bodies[0]).expect("the event is JSON");
    assert!(event.to_string().contains("bad"), "the event names the task: {event}");
    assert!(!event.to_string().contains("good.txt"), "{event}");
}

#[test]
fn an_https_webhook_is_refused_not_ignored() {
    let o = Test::new()
        .fluxfile("[notify]\nwebhook = \"https://example.invalid/hook\"\n\n[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo > {{ outputs[0] }}\"\n")
        .args(["check"])
        .run();
    o.assert_status(2)
        .stderr_has("https webhooks are not supported yet")
        .stderr_has(" --> Fluxfile:2:11")
        .stderr_has("point the webhook at an http:// relay");
}
