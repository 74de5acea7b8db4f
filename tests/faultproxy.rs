//! A fault-injecting HTTP/1.1 proxy for the store tests: it sits between flux and a server
//! on 127.0.0.1, forwards requests one by one on kept-alive connections, logs every
//! request it sees (method, target, whether it is a server-side copy, body size, status),
//! and can be told to break the Nth request that matches a rule:
//!
//! - [`Fault::CutRequest`]: forward the head and the first bytes of the request body, then
//!   reset the connection (TCP RST) to flux and drop the one to the server;
//! - [`Fault::CutResponse`]: forward the response head and the first bytes of its body,
//!   then reset the connection;
//! - [`Fault::Delay`]: hold the response head back for a while (a slow response);
//! - [`Fault::Refuse`]: reset the connection as soon as the request head is read,
//!   before the server sees anything.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    CutRequest(u64),
    CutResponse(u64),
    Delay(Duration),
    Refuse,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// A server-side copy (`x-amz-copy-source`, `x-goog-copy-source`, `x-ms-copy-source`).
    pub copy: bool,
    /// Bytes of request body that reached the proxy.
    pub body: u64,
    /// The server's status; 0 when the exchange was cut before it.
    pub status: u16,
    pub fault: Option<Fault>,
}

struct Rule {
    method: String,
    has: String,
    /// The first matching request to break (1 = the first), and how many from there.
    nth: usize,
    times: usize,
    seen: usize,
    fault: Fault,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<Seen>,
}

pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

/// A proxy to `127.0.0.1:upstream`, listening on a free port of its own.
pub fn fault_proxy(upstream: u16) -> FaultProxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let state = Arc::new(Mutex::new(State::default()));
    let st = state.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let st = st.clone();
            std::thread::spawn(move || {
                let _ = serve(client, upstream, &st);
            });
        }
    });
    FaultProxy { endpoint: format!("http://127.0.0.1:{port}"), state }
}

impl FaultProxy {
    /// Break `times` requests with `method` whose target contains `has`, from the `nth`
    /// such request on (counted from now).
    pub fn break_nth(&self, method: &str, has: &str, nth: usize, times: usize, fault: Fault) -> &Self {
        self.state.lock().unwrap().rules.push(Rule {
            method: method.into(),
            has: has.into(),
            nth,
            times,
            seen: 0,
            fault,
        });
        self
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().log.clone()
    }

    /// How many requests with `method` and `has` in their target were seen.
    pub fn count(&self, method: &str, has: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method && s.target.contains(has)).count()
    }

    /// A readable list of what was seen, for assertion messages.
    pub fn describe(&self) -> String {
        self.seen()
            .iter()
            .map(|s| {
                format!(
                    "{} {} body={} status={}{}{}\n",
                    s.method,
                    s.target,
                    s.body,
                    s.status,
                    if s.copy { " copy" } else { "" },
                    s.fault.map(|f| format!(" {f:?}")).unwrap_or_default()
                )
            })
            .collect()
    }
}

struct Head {
    raw: Vec<u8>,
    first: String,
    length: Option<u64>,
    chunked: bool,
    close: bool,
    copy: bool,
}

/// Read a message head (start line and headers) up to its blank line; `None` at EOF.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut first = String::new();
    let (mut length, mut chunked, mut close, mut copy) = (None, false, false, false);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        raw.extend_from_slice(line.as_bytes());
        let l = line.trim_end();
        if first.is_empty() {
            first = l.to_string();
            continue;
        }
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        } else if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        } else if lower.starts_with("x-amz-copy-source:")
            || lower.starts_with("x-goog-copy-source:")
            || lower.starts_with("x-ms-copy-source:")
        {
            copy = true;
        }
    }
    Ok(Some(Head { raw, first, length, chunked, close, copy }))
}

/// Copy up to `n` bytes; the number copied (fewer at EOF).
fn copy_n(from: &mut impl Read, to: &mut impl Write, n: u64) -> std::io::Result<u64> {
    std::io::copy(&mut from.take(n), to)
}

/// Forward a body (by length or chunked), stopping after `cut` bytes of data if given.
/// Returns the data bytes forwarded and whether it was cut.
fn forward_body(
    from: &mut impl BufRead,
    to: &mut impl Write,
    head: &Head,
    cut: Option<u64>,
) -> std::io::Result<(u64, bool)> {
    let budget = cut.unwrap_or(u64::MAX);
    if head.chunked {
        let mut done = 0u64;
        loop {
            let mut line = String::new();
            if from.read_line(&mut line)? == 0 {
                return Ok((done, false));
            }
            let n = u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            to.write_all(line.as_bytes())?;
            if n == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut t = String::new();
                    if from.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        to.write_all(b"\r\n")?;
                        break;
                    }
                    to.write_all(t.as_bytes())?;
                }
                to.flush()?;
                return Ok((done, false));
            }
            if done + n > budget {
                let sent = copy_n(from, to, budget - done)?;
                to.flush()?;
                return Ok((done + sent, true));
            }
            done += copy_n(from, to, n + 2)? - 2;
        }
    }
    let len = head.length.unwrap_or(0);
    if len > budget {
        let sent = copy_n(from, to, budget)?;
        to.flush()?;
        return Ok((sent, true));
    }
    let sent = copy_n(from, to, len)?;
    to.flush()?;
    Ok((sent, false))
}

/// Close a connection with a TCP RST: what a peer sees as "connection reset".
fn reset(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket descriptor and a properly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
}

fn serve(client: TcpStream, upstream: u16, st: &Mutex<State>) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client.try_clone()?;
    let mut server: Option<(TcpStream, BufReader<TcpStream>)> = None;
    loop {
        let Some(req) = read_head(&mut from_client)? else { return Ok(()) };
        let mut parts = req.first.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let fault = {
            let mut s = st.lock().unwrap();
            let mut fault = None;
            for r in s.rules.iter_mut() {
                if r.method == method && target.contains(&r.has) {
                    r.seen += 1;
                    if fault.is_none() && r.seen >= r.nth && r.seen < r.nth + r.times {
                        fault = Some(r.fault);
                    }
                }
            }
            fault
        };
        // Logged as it arrives (a stalled request is seen before flux gives up on it).
        let idx = {
            let mut s = st.lock().unwrap();
            s.log.push(Seen { method: method.clone(), target, copy: req.copy, body: 0, status: 0, fault });
            s.log.len() - 1
        };
        let update = |f: &dyn Fn(&mut Seen)| f(&mut st.lock().unwrap().log[idx]);
        if fault == Some(Fault::Refuse) {
            reset(&client);
            return Ok(());
        }
        if server.is_none() {
            let s = TcpStream::connect(("127.0.0.1", upstream))?;
            let r = BufReader::new(s.try_clone()?);
            server = Some((s, r));
        }
        let (to_server, from_server) = server.as_mut().expect("connected");
        to_server.write_all(&req.raw)?;
        let cut = match fault {
            Some(Fault::CutRequest(n)) => Some(n),
            _ => None,
        };
        let (sent, was_cut) = forward_body(&mut from_client, to_server, &req, cut)?;
        update(&|s| s.body = sent);
        if was_cut {
            reset(&client);
            let _ = to_server.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        let Some(mut resp) = read_head(from_server)? else { return Ok(()) };
        let status: u16 = resp.first.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        update(&|s| s.status = status);
        if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
            resp.length = Some(0);
            resp.chunked = false;
        }
        if let Some(Fault::Delay(d)) = fault {
            std::thread::sleep(d);
        }
        if to_client.write_all(&resp.raw).is_err() {
            return Ok(());
        }
        let cut = match fault {
            Some(Fault::CutResponse(n)) => Some(n),
            _ => None,
        };
        let res = forward_body(from_server, &mut to_client, &resp, cut);
        let close = req.close || resp.close;
        match res {
            Ok((_, true)) => {
                reset(&client);
                return Ok(());
            }
            Ok((_, false)) if !close => {}
            _ => return Ok(()),
        }
    }
}
