//! `flux ui` in a real browser (SPEC §11): headless Chromium, driven over WebDriver by
//! chromedriver, over a state DB made by real builds. The page's script says what it drew
//! through `window.flux` (the grid's symbols, the Gantt's bars). One browser serves the
//! whole test binary; the tests take turns with it.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver` (.ci/run
//! installs them); `FLUX_CHROMIUM` and `FLUX_CHROMEDRIVER` name other binaries. Without
//! them these tests fail. With `FLUX_UI_SCREENSHOTS=dir` they save the grid and a Gantt
//! chart there as PNG (docs/ui-grid.png, docs/ui-gantt.png come from this).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::test::*;
use crate::ui::Ui;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Three daily steps over two weeks: `rollup[2024-01-02]` fails both of its attempts
/// until the file `fix` exists, so `publish[2024-01-02]` is upstream_failed.
const PIPELINE: &str = r#"
[step.extract]
params = { date = "date" }
outputs = ["data/raw/{{ date }}.txt"]
run = "echo extract {{ date }} | tee {{ outputs[0] }}"

[step.rollup]
params = { date = "date" }
inputs = ["data/raw/{{ date }}.txt"]
outputs = ["data/rollup/{{ date }}.txt"]
retries = 1
retry_delay = "0s"
run = "echo rolling {{ date }}; test -f fix || test {{ date }} != 2024-01-02 && cat {{ inputs[0] }} > {{ outputs[0] }}"

[step.publish]
params = { date = "date" }
inputs = ["data/rollup/{{ date }}.txt"]
outputs = ["pub/{{ date }}.txt"]
run = "cp {{ inputs[0] }} {{ outputs[0] }}"
"#;

fn built() -> Test {
    let t = Test::new().fluxfile(PIPELINE);
    t.run_args(["build", "--date-range", "2024-01-01..2024-01-14"])
        .stderr_has("retry rollup[2024-01-02]: command exited with status 1; attempt 2")
        .assert_status(1);
    t
}

// ----- a small WebDriver client: JSON over HTTP/1.1 on a TcpStream -----

/// chromedriver and the one Chromium session it drives.
struct Browser {
    /// The watcher (it outlives this binary only by the half second it takes to notice).
    _watcher: std::process::Child,
    driver: String,
    session: String,
}

static BROWSER: OnceLock<Mutex<Browser>> = OnceLock::new();

/// The browser, for this test alone until the guard drops.
fn browser() -> MutexGuard<'static, Browser> {
    BROWSER.get_or_init(|| Mutex::new(Browser::start())).lock().unwrap_or_else(|e| e.into_inner())
}

fn find_binary(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env} names {}, which is not a file", p.display());
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.is_file())
}

impl Browser {
    fn start() -> Browser {
        let missing = "the browser tests need Debian's chromium and chromium-driver: install them as .ci/run \
                       does (apt-get install chromium chromium-driver), or name the binaries in FLUX_CHROMIUM \
                       and FLUX_CHROMEDRIVER";
        let chromium = find_binary("FLUX_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| panic!("no chromium on PATH; {missing}"));
        let chromedriver = find_binary("FLUX_CHROMEDRIVER", &["chromedriver"])
            .unwrap_or_else(|| panic!("no chromedriver on PATH; {missing}"));
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // chromedriver and the Chromium it starts live in a process group of their own,
        // which a watcher ends when this test binary exits (statics are never dropped).
        let watcher = Command::new("setsid")
            .args(["sh", "-c", r#""$1" --port="$2" --allowed-ips=127.0.0.1 >/dev/null 2>&1 & while kill -0 "$3" 2>/dev/null; do sleep 0.5; done; kill 0"#, "sh"])
            .arg(&chromedriver)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start setsid sh (chromedriver's watcher)");
        let driver = format!("127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            if let Ok(v) = try_call(&driver, "GET", "/status", None)
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{} did not answer on {driver}", chromedriver.display());
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("a profile folder").keep();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1100,640",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v = call(&driver, "POST", "/session", Some(&caps));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session from chromedriver: {v}"))
            .to_string();
        Browser { _watcher: watcher, driver, session }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let v = call(&self.driver, method, &format!("/session/{}{path}", self.session), body);
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    fn js(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", Some(&json!({ "script": script, "args": [] })))
    }

    /// Waits (at most 20 s) for `script` to return something but null/false; that value.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == false) {
                return v;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "waited 20 s for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", Some(&json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    fn keys(&self, element: &str, text: &str) {
        self.cmd("POST", &format!("/element/{element}/value"), Some(&json!({ "text": text })));
    }

    /// A PNG of the viewport.
    fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64(b64.as_str().expect("a base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
        png
    }

    /// Saves a screenshot as `name` in `$FLUX_UI_SCREENSHOTS` when that is set.
    fn save_screenshot(&self, name: &str) {
        let png = self.screenshot();
        if let Some(dir) = std::env::var_os("FLUX_UI_SCREENSHOTS") {
            std::fs::write(PathBuf::from(dir).join(name), png).expect("write the screenshot");
        }
    }
}

fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    try_call(addr, method, path, body).unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
}

fn try_call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open: read the head, then Content-Length bytes
    // (or chunks up to the last one).
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let reply = |raw: &[u8]| -> Option<(String, String)> {
        let text = String::from_utf8_lossy(raw);
        let (head, rest) = text.split_once("\r\n\r\n")?;
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
        };
        let body = if header("transfer-encoding") == Some("chunked") {
            if !rest.ends_with("0\r\n\r\n") {
                return None;
            }
            unchunk(rest)
        } else {
            let len: usize = header("content-length")?.parse().ok()?;
            if rest.len() < len {
                return None;
            }
            rest[..len].to_string()
        };
        Some((head.to_string(), body))
    };
    let (head, body) = loop {
        if let Some(r) = reply(&raw) {
            break r;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("the connection closed: {}", String::from_utf8_lossy(&raw)));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if !head.split(' ').nth(1).is_some_and(|c| c.starts_with('2')) {
        return Err(format!("{head}\n{v}"));
    }
    Ok(v)
}

fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> =
        s.bytes().filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/').map(val).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// The symbols the page's grid holds for a row, from the newest interval shown to the oldest.
fn drawn_row(b: &Browser, row: &str) -> Value {
    b.js(&format!("const r = window.flux.view.rows().find((r) => r.row === {row:?}); return r ? r.cells : null;"))
}

fn open_page(b: &Browser, url: &str, kind: &str) {
    b.go(url);
    b.wait_for(
        &format!("the {kind} on {url}"),
        &format!(
            "return window.flux && window.flux.view && window.flux.view.kind === {kind:?} && window.flux.paints > 0;"
        ),
    );
}

#[test]
fn ui_in_chromium_the_grid_draws_each_cell_and_a_click_or_enter_opens_the_task_with_its_log() {
    let t = built();
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);
    let b = browser();
    open_page(&b, &format!("http://{}/grid", ui.addr), "grid");

    // Newest interval first: the 2nd is the one rollup failed, and publish never ran.
    let mut expected = ["#".repeat(14), "#".repeat(14), "#".repeat(14)];
    expected[1].replace_range(12..13, "X");
    expected[2].replace_range(12..13, "^");
    assert_eq!(drawn_row(&b, "extract"), expected[0].as_str());
    assert_eq!(drawn_row(&b, "rollup"), expected[1].as_str());
    assert_eq!(drawn_row(&b, "publish"), expected[2].as_str());
    assert_eq!(b.js("return window.flux.view.cell('rollup', '2024-01-02')"), "X");
    assert_eq!(b.js("return window.flux.view.cell('rollup', '1999-01-01')"), Value::Null);
    // The page drew what /api/grid says.
    let grid = ui.json("/api/grid");
    for r in grid["rows"].as_array().unwrap() {
        assert_eq!(drawn_row(&b, r["row"].as_str().unwrap()), r["cells"], "row {}", r["row"]);
    }
    b.save_screenshot("ui-grid.png");

    // The keyboard: down to rollup, right to 2024-01-02, Enter opens its page and log.
    let canvas = b.element("#grid-canvas");
    b.keys(&canvas, &format!("\u{E015}{}", "\u{E014}".repeat(12)));
    assert_eq!(b.js("return document.getElementById('grid-cursor').textContent"), "rollup[2024-01-02]: failed");
    b.keys(&canvas, "\u{E007}");
    b.wait_for("the task page", "return location.pathname.startsWith('/tasks/') && document.readyState === 'complete'");
    assert!(b.url().ends_with("/tasks/rollup%5B2024-01-02%5D"), "{}", b.url());
    let log =
        b.wait_for("the log", "const l = document.getElementById('log'); return l ? [l.textContent] : null;")[0].take();
    assert!(log.as_str().unwrap().contains("rolling 2024-01-02"), "{log}");
    let rows = b.js("return document.querySelectorAll('table.attempts tbody tr').length");
    assert_eq!(rows, 2, "both attempts are listed");

    // The mouse: a double click on extract's oldest cell opens that task.
    open_page(&b, &format!("http://{}/grid", ui.addr), "grid");
    let at = b.js("const r = document.getElementById('grid-canvas').getBoundingClientRect(); return [r.left, r.top];");
    let (left, top) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
    // Cells are 14 x 18 px after a 220 px label column and a 70 px header.
    let (x, y) = (220.0 + 13.0 * 14.0 + 7.0, 70.0 + 9.0);
    let clicks = |n: usize| {
        let mut actions = vec![json!({"type": "pointerMove", "duration": 0, "origin": "viewport",
            "x": (left + x).round() as i64, "y": (top + y).round() as i64})];
        for _ in 0..n {
            actions.push(json!({"type": "pointerDown", "button": 0}));
            actions.push(json!({"type": "pointerUp", "button": 0}));
        }
        json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": actions}]})
    };
    // One click puts the cursor on the cell; a double click opens it.
    b.cmd("POST", "/actions", Some(&clicks(1)));
    assert_eq!(b.js("return document.getElementById('grid-cursor').textContent"), "extract[2024-01-01]: success");
    b.cmd("DELETE", "/actions", None);
    b.cmd("POST", "/actions", Some(&clicks(2)));
    b.wait_for(
        "the task page after a double click",
        "return location.pathname.startsWith('/tasks/') && document.readyState === 'complete'",
    );
    assert!(b.url().ends_with("/tasks/extract%5B2024-01-01%5D"), "{}", b.url());
    let log =
        b.wait_for("the log", "const l = document.getElementById('log'); return l ? [l.textContent] : null;")[0].take();
    assert!(log.as_str().unwrap().contains("extract 2024-01-01"), "{log}");
}

#[test]
fn ui_in_chromium_a_runs_gantt_draws_one_bar_per_attempt() {
    let t = built();
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);
    let b = browser();
    open_page(&b, &format!("http://{}/runs/1", ui.addr), "gantt");
    let bars = b.js("return window.flux.view.bars()");
    let bars = bars.as_array().expect("the Gantt's bars");
    // 14 days x 3 steps, one retry, and no attempt for the upstream_failed publish.
    assert_eq!(bars.len(), 14 * 3 + 1 - 1, "{bars:?}");
    let of = |task: &str| -> Vec<&str> {
        bars.iter().filter(|b| b["task"] == task).map(|b| b["status"].as_str().unwrap()).collect()
    };
    assert_eq!(of("rollup[2024-01-02]"), ["r", "X"]);
    assert_eq!(of("extract[2024-01-09]"), ["#"]);
    assert!(of("publish[2024-01-02]").is_empty());
    for bar in bars {
        let (s, e) = (bar["start"].as_f64().unwrap(), bar["end"].as_f64().unwrap());
        assert!(0.0 <= s && s <= e, "{bar}");
    }
    // The same attempts as its JSON twin, in the same order.
    let run = ui.json("/api/runs/1");
    let tasks: Vec<&Value> = bars.iter().map(|b| &b["task"]).collect();
    assert_eq!(tasks, run["tasks"].as_array().unwrap().iter().collect::<Vec<_>>());
    b.save_screenshot("ui-gantt.png");
}

#[test]
fn ui_in_chromium_a_live_build_turns_a_cell_to_success_without_a_reload() {
    let t = built();
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);
    let b = browser();
    open_page(&b, &format!("http://{}/grid", ui.addr), "grid");
    b.wait_for("the event stream", "return document.getElementById('live').textContent.startsWith('live')");
    b.js("window.notReloaded = true; return null;");
    assert_eq!(b.js("return window.flux.view.cell('rollup', '2024-01-02')"), "X");
    t.write("fix", "");
    t.run_args(["build", "--date", "2024-01-02"]).assert_status(0);
    b.wait_for("rollup[2024-01-02] to turn to success", "return window.flux.view.cell('rollup', '2024-01-02') === '#'");
    b.wait_for(
        "publish[2024-01-02] to turn to success",
        "return window.flux.view.cell('publish', '2024-01-02') === '#'",
    );
    assert_eq!(b.js("return window.notReloaded === true"), true, "the page was reloaded");
    assert_eq!(drawn_row(&b, "rollup"), "#".repeat(14).as_str());
}

#[test]
fn ui_in_chromium_the_grid_marks_a_late_cell_with_a_black_corner_and_says_late() {
    let t = crate::ui::late();
    let ui = Ui::start(&t, &["--bind", "127.0.0.1:0"], &[]);
    let b = browser();
    open_page(&b, &format!("http://{}/grid", ui.addr), "grid");
    // The colour drawn near the top right corner of a cell (inside the late mark).
    let corner = |row: &str| {
        b.js(&format!(
            "const c = window.flux.view.box({row:?}, '2024-01-01'); const cv = document.getElementById('grid-canvas');
             const d = window.devicePixelRatio || 1;
             const p = cv.getContext('2d').getImageData(Math.round((c.x + c.w - 3) * d), Math.round((c.y + 3) * d), 1, 1).data;
             return [c.late, p[0], p[1], p[2]];"
        ))
    };
    assert_eq!(corner("daily"), json!([true, 0, 0, 0]));
    let plain = corner("plain");
    assert_eq!(plain[0], false);
    assert_ne!(plain, json!([false, 0, 0, 0]), "a cell that is not late has no black corner");
    let legend = b.js("return document.querySelector('.legend').textContent");
    assert!(legend.as_str().unwrap().contains("late (SLA missed)"), "{legend}");
    // The cursor starts on the first row's newest cell (2024-01-02, no task of daily);
    // one to the right is daily[2024-01-01].
    let canvas = b.element("#grid-canvas");
    b.keys(&canvas, "\u{E014}");
    assert_eq!(
        b.js("return document.getElementById('grid-cursor').textContent"),
        "daily[2024-01-01]: failed, late (SLA missed)"
    );
}
