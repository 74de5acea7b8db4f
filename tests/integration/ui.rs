//! `flux ui` (SPEC §11): the real binary serves pages and their JSON twins over a state
//! DB made by real builds; the rules that keep it safe (bind, token, Host, methods, logs
//! inside the state folder, escaping); and events while a build runs. Requests are raw
//! HTTP/1.1 over a TcpStream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::test::*;

/// Two daily steps: `rollup[2024-01-02]` fails both of its attempts (one retry); the
/// description holds markup that must show as text.
const PIPELINE: &str = r#"
[step.extract]
description = "pulls <script>alert('x')</script> from the source"
params = { date = "date" }
outputs = ["data/raw/{{ date }}.txt"]
run = "echo extract {{ date }} > {{ outputs[0] }}"

[step.rollup]
params = { date = "date" }
inputs = ["data/raw/{{ date }}.txt"]
outputs = ["data/rollup/{{ date }}.txt"]
retries = 1
retry_delay = "0s"
run = "echo rolling {{ date }}; test {{ date }} != 2024-01-02 && cat {{ inputs[0] }} > {{ outputs[0] }}"
"#;

/// A running `flux ui`, stopped with SIGTERM when dropped.
pub(crate) struct Ui {
    child: Child,
    pub(crate) addr: String,
}

impl Ui {
    pub(crate) fn start(t: &Test, args: &[&str], env: &[(&str, &str)]) -> Ui {
        let mut all: Vec<std::ffi::OsString> = vec!["ui".into()];
        all.extend(args.iter().map(Into::into));
        let mut cmd = t.command(&all);
        cmd.stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start flux ui");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read the URL");
        let addr = line
            .trim()
            .strip_prefix("flux ui: listening on http://")
            .and_then(|a| a.strip_suffix('/'))
            .unwrap_or_else(|| panic!("no URL on stdout: {line:?}"))
            .to_string();
        Ui { child, addr }
    }

    fn get(&self, path: &str) -> Reply {
        request(&self.addr, "GET", path, &[("Host", &self.addr)])
    }

    pub(crate) fn json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        assert!(r.header("content-type").starts_with("application/json"), "{path}: {}", r.head);
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", r.body))
    }

    fn page(&self, path: &str) -> String {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        assert!(r.header("content-type").starts_with("text/html"), "{path}: {}", r.head);
        r.body
    }

    /// Stop it with SIGTERM; its exit status.
    fn stop(mut self) -> Option<i32> {
        let status = self.terminate();
        std::mem::forget(self);
        status
    }

    fn terminate(&mut self) -> Option<i32> {
        unsafe_kill(self.child.id(), "TERM");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> String {
        self.head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
            .unwrap_or("")
            .to_string()
    }
}

/// One HTTP/1.1 request with `Connection: close`; the whole reply.
fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect to flux ui");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the reply");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Reply { status, head: head.to_string(), body: body.to_string() }
}

/// The project after one build of three days: 5 tasks succeeded, one failed twice.
fn built() -> Test {
    let t = Test::new().fluxfile(PIPELINE);
    t.run_args(["build", "--date-range", "2024-01-01..2024-01-03"])
        .stderr_has("retry rollup[2024-01-02]: command exited with status 1; attempt 2")
        .assert_status(1);
    t
}

#[test]
fn ui_json_twins_show_steps_grid_tasks_logs_runs_durations_and_graph() {
    let t = built();
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);

    let steps = ui.json("/api/steps");
    let names: Vec<&str> = steps["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["extract", "rollup"]);
    assert_eq!(steps["steps"][1]["statuses"], serde_json::json!({"failed": 1, "success": 2}));
    assert_eq!(steps["steps"][1]["upstream"], serde_json::json!(["extract"]));
    assert_eq!(steps["steps"][1]["last"]["task"], "rollup[2024-01-02]");
    assert_eq!(steps["steps"][0]["description"], "pulls <script>alert('x')</script> from the source");

    // One string per row, one character per interval, newest first.
    let grid = ui.json("/api/grid");
    assert_eq!(grid["kinds"][0]["kind"], "date");
    assert_eq!(grid["kinds"][0]["intervals"], serde_json::json!(["2024-01-03", "2024-01-02", "2024-01-01"]));
    assert_eq!(grid["rows"][0]["row"], "extract");
    assert_eq!(grid["rows"][0]["cells"], "###");
    assert_eq!(grid["rows"][1]["cells"], "#X#");
    assert_eq!(grid["rows"][1]["template"], "rollup[{}]");
    assert_eq!(grid["tasks"], 6);
    // Windowed and paged: two intervals, then the older page; one step only.
    let page1 = ui.json("/api/grid?limit=2");
    assert_eq!(page1["kinds"][0]["intervals"], serde_json::json!(["2024-01-03", "2024-01-02"]));
    assert_eq!(page1["kinds"][0]["older"], "2024-01-01");
    let page2 = ui.json("/api/grid?limit=2&to=2024-01-01");
    assert_eq!(page2["kinds"][0]["intervals"], serde_json::json!(["2024-01-01"]));
    assert_eq!(page2["kinds"][0]["newer"], "2024-01-03");
    assert_eq!(page2["rows"][1]["cells"], "#");
    let only = ui.json("/api/grid?steps=rollup&from=2024-01-02");
    assert_eq!(only["rows"].as_array().unwrap().len(), 1);
    assert_eq!(only["rows"][0]["cells"], "#X");
    assert_eq!(ui.get("/api/grid?steps=nope").status, 404);

    // A task: both attempts, newest first, with reasons, exit codes and logs.
    let task = ui.json("/api/tasks/rollup%5B2024-01-02%5D");
    assert_eq!(task["record"]["status"], "failed");
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!((attempts[0]["attempt"].as_u64(), attempts[0]["status"].as_str()), (Some(2), Some("failed")));
    assert_eq!((attempts[1]["attempt"].as_u64(), attempts[1]["status"].as_str()), (Some(1), Some("retrying")));
    assert_eq!(attempts[0]["exit_code"], 1);
    assert_eq!(attempts[0]["reason"], "missing-output");
    assert!(attempts[0]["log_bytes"].as_u64().unwrap() > 0);
    assert_eq!(ui.get("/api/tasks/nope%5B2024-01-01%5D").status, 404);

    // Its log: the tail by default (the command that ran, then its output), byte ranges.
    let log = ui.get("/api/tasks/rollup%5B2024-01-02%5D/log");
    assert_eq!(log.status, 200);
    assert!(
        log.body.contains("$ echo rolling 2024-01-02") && log.body.ends_with("rolling 2024-01-02\n"),
        "{}",
        log.body
    );
    let size: usize = log.header("x-log-size").parse().unwrap();
    assert_eq!(size, log.body.len());
    let part = ui.get("/api/tasks/rollup%5B2024-01-02%5D/log?offset=2&limit=5");
    assert_eq!(part.body, log.body[2..7]);
    assert_eq!(part.header("x-log-offset"), "2");
    let tail = ui.get("/api/tasks/rollup%5B2024-01-02%5D/log?limit=19");
    assert_eq!(tail.body, "rolling 2024-01-02\n");
    let first = attempts[1]["id"].as_i64().unwrap();
    let log1 = ui.get(&format!("/api/tasks/rollup%5B2024-01-02%5D/log?attempt={first}"));
    assert!(log1.body.contains("rolling 2024-01-02"), "{}", log1.body);

    // Runs, and a run's attempts in columns (one status character each), by start.
    let runs = ui.json("/api/runs");
    assert_eq!(runs["runs"][0]["status"], "failed");
    assert_eq!(runs["runs"][0]["attempts"], 7);
    assert_eq!(runs["runs"][0]["failed"], 1);
    let run = ui.json("/api/runs/1");
    let status = run["status"].as_str().unwrap();
    assert_eq!(status.len(), 7);
    assert_eq!(status.matches('#').count(), 5, "{status}");
    assert!(status.ends_with('X') && status.contains('r'), "{status}");
    assert_eq!(run["tasks"].as_array().unwrap().len(), 7);
    assert_eq!(run["start"].as_array().unwrap().len(), 7);
    assert_eq!(ui.get("/api/runs/99").status, 404);

    let d = ui.json("/api/durations/rollup");
    let statuses: Vec<&str> = d["points"].as_array().unwrap().iter().map(|p| p["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.len(), 4);
    assert_eq!(statuses.last(), Some(&"failed"));

    // The step graph, and a task's neighbourhood one level up and down.
    let g = ui.json("/api/graph");
    assert_eq!(g["nodes"][0]["name"], "extract");
    assert_eq!(g["edges"], serde_json::json!([[0, 1]]));
    let n = ui.json("/api/graph?task=extract%5B2024-01-02%5D&depth=1");
    let mut names: Vec<&str> = n["nodes"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["extract[2024-01-02]", "rollup[2024-01-02]"]);
    let statuses: Vec<&str> = n["nodes"].as_array().unwrap().iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert!(statuses.contains(&"failed") && statuses.contains(&"success"), "{n}");
    assert_eq!(ui.stop(), Some(0), "flux ui exits 0 on SIGTERM");
}

#[test]
fn ui_pages_render_each_view_with_its_content_escaped() {
    let t = built();
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);
    let index = ui.page("/");
    assert!(index.contains("pulls &lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt; from the source"), "{index}");
    assert!(!index.contains("<script>alert"), "{index}");
    assert!(index.contains(r#"<script src="/assets/htmx.min.js"></script>"#));
    assert!(index.contains("/durations/rollup"));
    let grid = ui.page("/grid");
    assert!(grid.contains(r#"<canvas id="grid-canvas" tabindex="0""#), "{grid}");
    // The grid's data rides in the page as JSON, with no `<` that could end the element.
    let data = grid.split(r#"<script type="application/json" id="grid-data">"#).nth(1).unwrap();
    let data = data.split("</script>").next().unwrap();
    assert!(!data.contains('<'));
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["rows"][1]["cells"], "#X#");
    let graph = ui.page("/graph");
    assert!(graph.contains("<svg class=\"graph\"") && graph.contains(">extract</text>"), "{graph}");
    let task = ui.page("/tasks/rollup%5B2024-01-02%5D");
    assert!(task.contains("X</span> failed") && task.contains("missing-output"), "{task}");
    assert!(task.contains("$ echo rolling 2024-01-02; test 2024-01-02 != 2024-01-02 &amp;&amp; cat"), "{task}");
    let runs = ui.page("/runs");
    assert!(runs.contains(r#"<a href="/runs/1">1</a>"#), "{runs}");
    let run = ui.page("/runs/1");
    assert!(run.contains("gantt-canvas") && run.contains("7 attempts, 1 failed"), "{run}");
    let d = ui.page("/durations/rollup");
    assert!(d.contains("<polyline") && d.contains("rollup[2024-01-02]"), "{d}");
    let nb = ui.page("/graph?task=rollup%5B2024-01-02%5D");
    assert!(nb.contains("X rollup[2024-01-02]"), "{nb}");
    // Assets are in the binary.
    for (path, ty) in [
        ("/assets/htmx.min.js", "text/javascript"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let r = ui.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").starts_with(ty), "{path}: {}", r.head);
    }
    let missing = ui.get("/nope");
    assert_eq!(missing.status, 404);
}

#[test]
fn ui_refuses_writes_foreign_hosts_and_requests_without_its_token() {
    let t = built();
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = request(&ui.addr, m, "/api/steps", &[("Host", &ui.addr)]);
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), "GET, HEAD");
    }
    assert_eq!(request(&ui.addr, "HEAD", "/api/steps", &[("Host", &ui.addr)]).status, 200);
    // DNS rebinding: a page of another site that resolves to 127.0.0.1.
    let r = request(&ui.addr, "GET", "/api/steps", &[("Host", "evil.example:80")]);
    assert_eq!(r.status, 421, "{}", r.body);
    let port = ui.addr.rsplit(':').next().unwrap();
    assert_eq!(request(&ui.addr, "GET", "/api/steps", &[("Host", &format!("localhost:{port}"))]).status, 200);
    assert_eq!(request(&ui.addr, "GET", "/api/steps", &[]).status, 421);
    drop(ui);

    // Any other address needs a token.
    let o = t.run_args(["ui", "--bind", "0.0.0.0:0"]);
    o.assert_status(2).stderr_has("--bind 0.0.0.0:0 is not a loopback address").stderr_has("--token");
    t.run_args(["ui", "--bind", "localhost"]).assert_status(2).stderr_has("expected an address and port");

    for ui in [
        Ui::start(&t, &["--bind", "0.0.0.0:0", "--token", "s3cret t"], &[]),
        Ui::start(&t, &["--bind", "0.0.0.0:0"], &[("FLUX_UI_TOKEN", "s3cret t")]),
    ] {
        let port = ui.addr.rsplit(':').next().unwrap().to_string();
        let addr = format!("127.0.0.1:{port}");
        let host = ("Host", "flux.example.org");
        let r = request(&addr, "GET", "/api/steps", &[host]);
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(request(&addr, "GET", "/", &[host, ("Authorization", "Bearer wrong")]).status, 401);
        assert_eq!(request(&addr, "GET", "/api/steps", &[host, ("Authorization", "Bearer s3cret t")]).status, 200);
        let r = request(&addr, "GET", "/grid?token=s3cret%20t", &[host]);
        assert_eq!(r.status, 200, "{}", r.body);
        let cookie = r.header("set-cookie");
        assert!(cookie.starts_with("flux_ui_token=s3cret%20t;") && cookie.contains("HttpOnly"), "{cookie}");
        let pair = cookie.split(';').next().unwrap().to_string();
        assert_eq!(request(&addr, "GET", "/api/grid", &[host, ("Cookie", &pair)]).status, 200);
        assert_eq!(request(&addr, "GET", "/api/grid", &[host, ("Cookie", "flux_ui_token=nope")]).status, 401);
        // The token does not open the other rules.
        assert_eq!(request(&addr, "POST", "/api/steps", &[host, ("Authorization", "Bearer s3cret t")]).status, 405);
    }
}

#[test]
fn ui_serves_logs_only_from_inside_the_state_folder() {
    let t = built().file("secret.txt", "the project's secret\n");
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);
    let path = "/api/tasks/rollup%5B2024-01-01%5D/log";
    assert_eq!(ui.get(path).status, 200);
    let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
    for outside in [
        t.abs("secret.txt").display().to_string(),
        t.abs(".flux/../secret.txt").display().to_string(),
        "/etc/passwd".to_string(),
    ] {
        conn.execute("UPDATE attempts SET log_path = ?1 WHERE task_id = 'rollup[2024-01-01]'", [&outside]).unwrap();
        let r = ui.get(path);
        assert_eq!(r.status, 403, "{outside}: {}", r.body);
        assert!(!r.body.contains("secret") && !r.body.contains("root:"), "{}", r.body);
    }
    // A symlink inside the state folder that points out of it is refused too.
    std::os::unix::fs::symlink(t.abs("secret.txt"), t.abs(".flux/link.txt")).unwrap();
    conn.execute(
        "UPDATE attempts SET log_path = ?1 WHERE task_id = 'rollup[2024-01-01]'",
        [t.abs(".flux/link.txt").display().to_string()],
    )
    .unwrap();
    assert_eq!(ui.get(path).status, 403);
    // Assets are a fixed list, not files.
    for p in ["/assets/..%2f..%2fFluxfile", "/assets/../Fluxfile", "/assets/%2e%2e/state.db"] {
        let r = ui.get(p);
        assert_eq!(r.status, 404, "{p}: {}", r.body);
        assert!(!r.body.contains("[step."), "{p}");
    }
}

#[test]
fn ui_events_stream_a_tasks_changes_while_a_build_runs() {
    let t = built().fluxfile(&format!(
        "{PIPELINE}\n[step.slow]\nparams = {{ date = \"date\" }}\noutputs = [\"slow/{{{{ date }}}}.txt\"]\nrun = \"sleep 3.5; echo > {{{{ outputs[0] }}}}\"\n"
    ));
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);
    let mut s = TcpStream::connect(&ui.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /api/events HTTP/1.1\r\nHost: {}\r\n\r\n", ui.addr).unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // The stream is open before the build starts.
    while !seen.contains("event: hello") {
        let n = s.read(&mut buf).expect("read the event stream");
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    let build = t.spawn_args(["build", "slow", "--date", "2024-01-05"]);
    let start = Instant::now();
    let running = r#""task":"slow[2024-01-05]","attempt_id""#;
    while !(seen.contains(running) && seen.contains(r#""status":"running""#) && seen.contains(r#""status":"success""#))
    {
        assert!(start.elapsed() < Duration::from_secs(30), "no change of slow[2024-01-05] streamed: {seen}");
        let n = s.read(&mut buf).expect("read the event stream");
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains(r#""row":"slow","interval":"2024-01-05""#), "{seen}");
    t.finish(build).assert_status(0);
    // The running attempt was streamed before its end.
    let r = seen.find(r#""status":"running""#).unwrap();
    let e = seen.find(r#""status":"success""#).unwrap();
    assert!(r < e, "{seen}");
}

#[test]
fn ui_grid_rows_keep_a_steps_other_params_and_kinds_apart() {
    let t = Test::new().fluxfile(
        r#"
[step.report]
params = { region = ["eu", "us"], month = "month" }
outputs = ["report/{{ region }}/{{ month }}.txt"]
run = "echo {{ region }} > {{ outputs[0] }}"

[step.hourly]
params = { hour = "hour" }
outputs = ["h/{{ hour }}.txt"]
run = "echo > {{ outputs[0] }}"

[step.setup]
outputs = ["setup.txt"]
run = "echo > {{ outputs[0] }}"
"#,
    );
    t.run_args(["build", "--date-range", "2024-01-31..2024-02-01", "report", "setup"]).assert_status(0);
    t.run_args(["build", "--date", "2024-02-01", "--param", "hour=2024-02-01T05", "hourly"]).assert_status(0);
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);
    let grid = ui.json("/api/grid");
    let kinds: Vec<&str> = grid["kinds"].as_array().unwrap().iter().map(|k| k["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["", "hour", "month"], "{grid}");
    assert_eq!(grid["kinds"][1]["intervals"], serde_json::json!(["2024-02-01T05"]));
    assert_eq!(grid["kinds"][2]["intervals"], serde_json::json!(["2024-02", "2024-01"]));
    let rows: Vec<(String, String, String)> = grid["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["row"].as_str().unwrap().into(),
                r["template"].as_str().unwrap().into(),
                r["cells"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("report[region=eu]".into(), "report[region=eu,month={}]".into(), "##".into()),
            ("report[region=us]".into(), "report[region=us,month={}]".into(), "##".into()),
            ("hourly".into(), "hourly[{}]".into(), "#".into()),
            ("setup".into(), "setup".into(), "#".into()),
        ]
    );
    // A cell's task id, from the row's template, names the task's page.
    assert_eq!(ui.json("/api/tasks/report%5Bregion%3Dus%2Cmonth%3D2024-01%5D")["record"]["status"], "success");
}

#[test]
fn ui_starts_without_a_state_db_and_refuses_an_unusable_one() {
    let t = Test::new().fluxfile(PIPELINE);
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);
    assert_eq!(ui.json("/api/grid")["rows"], serde_json::json!([]));
    assert_eq!(ui.json("/api/runs")["runs"], serde_json::json!([]));
    assert_eq!(ui.json("/api/steps")["steps"][0]["tasks"], 0);
    assert!(!t.exists(".flux/state.db"), "flux ui must not create the state DB");
    drop(ui);
    let t =
        t.file(".flux/state.db", "not a database, just text that is long enough to be read as a header\n".repeat(20));
    t.run_args(["ui", "--bind", "127.0.0.1:0"]).assert_status(2).stderr_has("state.db");
}

/// A scheduled daily step with an SLA of an hour whose source (`ok`) never arrives.
pub(crate) const LATE: &str = r#"
[step.daily]
params = { date = "date" }
start = "2024-01-01"
outputs = ["out/{{ date }}.txt"]
run = "test -e ok && touch {{ outputs[0] }}"
schedule = "@daily"
sla = "1h"

[step.plain]
params = { date = "date" }
outputs = ["plain/{{ date }}.txt"]
run = "touch {{ outputs[0] }}"
"#;

/// [`LATE`] after two scheduler ticks: `daily[2024-01-01]` failed and then missed its SLA;
/// `plain` built for two days.
pub(crate) fn late() -> Test {
    let t = Test::new().fluxfile(LATE);
    // Due at 00:00, deadline 01:00: failed, not late yet; then past the deadline.
    t.run_args(["schedule", "--once", "--now", "2024-01-02T00:30:00Z"])
        .stderr_has("FAIL daily[2024-01-01]: command exited with status 1")
        .assert_status(1);
    t.run_args(["schedule", "--once", "--now", "2024-01-02T01:30:00Z"])
        .assert_success()
        .stderr_has("LATE daily[2024-01-01] missed its SLA");
    t.run_args(["build", "plain", "--date-range", "2024-01-01..2024-01-02"]).assert_success();
    t
}

#[test]
fn ui_shows_late_tasks_in_steps_grid_and_task_pages() {
    let t = late();
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);

    // `/api/steps`: the late interval of `daily`, with its deadline and when it was missed.
    let steps = ui.json("/api/steps");
    let daily = &steps["steps"][0];
    assert_eq!(daily["name"], "daily");
    assert_eq!(daily["late_count"], 1, "{steps}");
    assert_eq!(daily["late"][0]["value"], "2024-01-01", "{steps}");
    let deadline = chrono::DateTime::parse_from_rfc3339("2024-01-02T01:00:00Z").unwrap().timestamp() as f64;
    assert_eq!(daily["late"][0]["deadline"].as_f64(), Some(deadline), "{steps}");
    let missed = daily["late"][0]["sla_missed_at"].as_f64().expect("sla_missed_at");
    assert!(missed >= deadline, "{steps}");
    assert_eq!(steps["steps"][1]["late_count"], 0, "{steps}");
    assert_eq!(steps["steps"][1]["late"], serde_json::json!([]), "{steps}");

    // `/api/grid`: the late cell's index in the row's `cells`; rows with none have no `late`.
    let grid = ui.json("/api/grid");
    let rows = grid["rows"].as_array().unwrap();
    let row = rows.iter().find(|r| r["row"] == "daily").unwrap_or_else(|| panic!("{grid}"));
    let kind = grid["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == row["kind"]).unwrap();
    let col = kind["intervals"].as_array().unwrap().iter().position(|i| i == "2024-01-01").unwrap();
    assert_eq!(row["cells"].as_str().unwrap().as_bytes()[col], b'X', "{grid}");
    assert_eq!(row["late"], serde_json::json!([col]), "{grid}");
    let plain = rows.iter().find(|r| r["row"] == "plain").unwrap_or_else(|| panic!("{grid}"));
    assert!(plain.get("late").is_none(), "{grid}");
    let page = ui.page("/grid");
    assert!(page.contains("late (SLA missed)"), "the legend names the late mark: {page}");

    // `/api/tasks/{id}` and its page: late, with when the SLA was missed.
    let task = ui.json("/api/tasks/daily%5B2024-01-01%5D");
    assert_eq!(task["late"]["value"], "2024-01-01", "{task}");
    assert_eq!(task["late"]["sla_missed_at"].as_f64(), Some(missed), "{task}");
    assert!(ui.json("/api/tasks/plain%5B2024-01-01%5D")["late"].is_null());
    let when = chrono::DateTime::from_timestamp(missed as i64, 0).unwrap().format("%Y-%m-%d %H:%M:%S").to_string();
    let page = ui.page("/tasks/daily%5B2024-01-01%5D");
    assert!(
        page.contains(&format!(r#"<p class="late">late (SLA missed at {when}; deadline 2024-01-02 01:00:00)</p>"#)),
        "{page}"
    );
    assert!(!ui.page("/tasks/plain%5B2024-01-01%5D").contains("late (SLA"));

    // `/`: the count and the interval, linked to the grid at that interval (escaped `&`).
    let index = ui.page("/");
    assert!(index.contains("late (SLA missed): 1"), "{index}");
    assert!(index.contains(r#"<a href="/grid?steps=daily&amp;to=2024-01-01">2024-01-01</a>"#), "{index}");
    drop(ui);

    // A state DB from before the scheduler's tables: nothing is late, nothing fails.
    let conn = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
    conn.execute_batch("DROP TABLE sched_intervals").unwrap();
    drop(conn);
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);
    assert_eq!(ui.json("/api/steps")["steps"][0]["late_count"], 0);
    assert!(ui.json("/api/tasks/daily%5B2024-01-01%5D")["late"].is_null());
    let grid = ui.json("/api/grid");
    assert!(grid["rows"].as_array().unwrap().iter().all(|r| r.get("late").is_none()), "{grid}");
}
