//! Hooks and alerts (SPEC §7): `on_success`, `on_failure` and `on_retry` commands run with
//! the `FLUX_*` variables, and `[notify] webhook` receives one JSON POST per failure and
//! retry. Both run on threads of their own so that a slow receiver never stalls the build;
//! their failures come back as warnings and never change a task's status.
//!
//! The webhook speaks plain HTTP/1.1 over a `TcpStream` (one POST, `Connection: close`),
//! with a timeout and retries with backoff of its own.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::fluxfile::Notify;

/// What happened to a task, for hooks and the webhook.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskEvent {
    /// `success`, `failure`, `retry` (or `sla_miss`).
    pub event: &'static str,
    pub step: String,
    pub task: String,
    pub params: serde_json::Value,
    pub status: String,
    pub attempt: u32,
    pub log: Option<String>,
    pub run_id: i64,
    pub error: Option<String>,
    /// RFC 3339, UTC.
    pub time: String,
}

/// Runs hooks and posts events in the background.
pub struct Hooks {
    cwd: PathBuf,
    notify: Option<Notify>,
    threads: Vec<JoinHandle<()>>,
    tx: Sender<String>,
    rx: Receiver<String>,
}

impl Hooks {
    pub fn new(cwd: PathBuf, notify: Option<Notify>) -> Hooks {
        let (tx, rx) = channel();
        Hooks { cwd, notify, threads: Vec::new(), tx, rx }
    }

    /// Run a rendered hook command (if any) and post the event (failures and retries only).
    pub fn fire(&mut self, command: Option<(String, PathBuf)>, ev: TaskEvent) {
        if let Some((cmd, log)) = command {
            let cwd = self.cwd.clone();
            let tx = self.tx.clone();
            let ev = ev.clone();
            self.threads.push(std::thread::spawn(move || {
                if let Err(e) = run_hook(&cmd, &cwd, &log, &ev) {
                    let _ = tx.send(format!("on_{} hook of {}: {e} (log: {})", ev.event, ev.task, log.display()));
                }
            }));
        }
        if let Some(n) = &self.notify
            && matches!(ev.event, "failure" | "retry" | "sla_miss")
        {
            let n = n.clone();
            let tx = self.tx.clone();
            self.threads.push(std::thread::spawn(move || {
                let body = serde_json::to_vec(&ev).unwrap_or_default();
                if let Err(e) = post_with_retries(&n, &body) {
                    let _ = tx.send(format!("webhook for {} {}: {e}", ev.event, ev.task));
                }
            }));
        }
        self.threads.retain(|t| !t.is_finished());
    }

    /// Warnings from hooks that finished since the last call.
    pub fn warnings(&self) -> Vec<String> {
        self.rx.try_iter().collect()
    }

    /// Wait for every hook and post still running; their warnings.
    pub fn finish(&mut self) -> Vec<String> {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.warnings()
    }
}

fn run_hook(cmd: &str, cwd: &std::path::Path, log: &std::path::Path, ev: &TaskEvent) -> Result<(), String> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env("FLUX_STEP", &ev.step)
        .env("FLUX_TASK", &ev.task)
        .env("FLUX_PARAMS", ev.params.to_string())
        .env("FLUX_STATUS", &ev.status)
        .env("FLUX_ATTEMPT", ev.attempt.to_string())
        .env("FLUX_LOG", ev.log.as_deref().unwrap_or(""))
        .env("FLUX_RUN_ID", ev.run_id.to_string())
        .env("FLUX_ERROR", ev.error.as_deref().unwrap_or(""))
        .status()
        .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("exited with {status}")) }
}

fn post_with_retries(n: &Notify, body: &[u8]) -> Result<(), String> {
    let mut last = String::new();
    let mut delay = Duration::from_millis(500);
    for attempt in 0..=n.retries {
        if attempt > 0 {
            std::thread::sleep(delay);
            delay = delay.saturating_mul(2).min(crate::limits::MAX_NOTIFY_DELAY);
        }
        match post(&n.webhook, body, n.timeout) {
            Ok(code) if (200..300).contains(&code) => return Ok(()),
            // A client error will not get better by trying again.
            Ok(code) if (400..500).contains(&code) && code != 408 && code != 429 => {
                return Err(format!("{} answered HTTP {code}", n.webhook));
            }
            Ok(code) => last = format!("{} answered HTTP {code}", n.webhook),
            Err(e) => last = format!("{}: {e}", n.webhook),
        }
    }
    Err(format!("{last} (gave up after {} attempts)", n.retries + 1))
}

/// One HTTP/1.1 POST of JSON; returns the status code.
fn post(url: &str, body: &[u8], timeout: Duration) -> Result<u16, String> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr_s = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:80") };
    let addr = addr_s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {hostport}"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: flux/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    s.write_all(&request).map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    let mut buf = [0u8; 1024];
    while !resp.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => resp.extend_from_slice(&buf[..k]),
            Err(e) => return Err(e.to_string()),
        }
        if resp.len() > 64 * 1024 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&resp);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", line.lines().next().unwrap_or("")))?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn posts_json_and_retries_on_server_errors() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for (i, conn) in l.incoming().take(2).enumerate() {
                let mut c = conn.unwrap();
                // Read the whole request: headers, then Content-Length bytes of body.
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = c.read(&mut buf).unwrap();
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if body.len() >= len || n == 0 {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                bodies.push(String::from_utf8_lossy(&req).to_string());
                let answer = if i == 0 { "HTTP/1.1 503 Busy\r\n\r\n" } else { "HTTP/1.1 204 No Content\r\n\r\n" };
                c.write_all(answer.as_bytes()).unwrap();
            }
            bodies
        });
        let n = Notify { webhook: format!("http://{addr}/hook"), timeout: Duration::from_secs(2), retries: 2 };
        post_with_retries(&n, br#"{"event":"failure"}"#).unwrap();
        let bodies = server.join().unwrap();
        assert_eq!(bodies.len(), 2);
        assert!(bodies[1].starts_with("POST /hook HTTP/1.1"));
        assert!(bodies[1].ends_with(r#"{"event":"failure"}"#));
    }
}
