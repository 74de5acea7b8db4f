//! `flux ui` (SPEC §11): a read-only web UI over the state DB, served by the flux binary
//! itself. Pages are rendered on the server (minijinja, auto-escaped); each has a JSON
//! twin under `/api/` serialised from the same struct ([`api`]). The assets (a pinned
//! htmx, one ES module that draws grids and Gantt charts on a canvas, a style sheet) are
//! embedded in the binary.
//!
//! Safe by default: a loopback address unless told otherwise; any other address needs a
//! token, which every request must then carry; the `Host` header must name the bound
//! address (DNS rebinding); only GET and HEAD; logs only from inside the state folder.

pub mod api;
pub mod late;
mod live;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::fluxfile::Fluxfile;

/// How the UI is served.
pub struct Options {
    pub bind: String,
    /// Every request must carry it (needed for any address but a loopback one).
    pub token: Option<String>,
}

/// Why the UI could not start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("--bind {0}: expected an address and port, e.g. 127.0.0.1:8080")]
    BadAddress(String),
    #[error(
        "--bind {0} is not a loopback address: anyone who can reach it could read the state DB and the logs; give a token with --token or FLUX_UI_TOKEN (every request must then carry it), or bind 127.0.0.1"
    )]
    NeedsToken(String),
    #[error("--token: must not be empty")]
    EmptyToken,
    #[error("cannot listen on {0}: {1}")]
    Listen(String, String),
    #[error("{0}")]
    Runtime(String),
}

/// The cookie that `?token=` sets.
const COOKIE: &str = "flux_ui_token";

pub(crate) struct App {
    project: Arc<api::Project>,
    token: Option<String>,
    /// `Host` values accepted (empty: any, for a wildcard bind, which needs a token).
    hosts: Vec<String>,
    env: minijinja::Environment<'static>,
    events: tokio::sync::broadcast::Sender<Arc<live::Change>>,
    stop: tokio::sync::watch::Receiver<bool>,
}

/// Serve until SIGINT or SIGTERM; `announce` gets the URL once the socket is bound.
pub fn serve(
    ff: Fluxfile,
    edges: Vec<(usize, usize)>,
    opts: Options,
    announce: impl FnOnce(&str),
) -> Result<(), UiError> {
    let addr: SocketAddr = opts.bind.parse().map_err(|_| UiError::BadAddress(opts.bind.clone()))?;
    if opts.token.as_deref() == Some("") {
        return Err(UiError::EmptyToken);
    }
    if !addr.ip().is_loopback() && opts.token.is_none() {
        return Err(UiError::NeedsToken(opts.bind.clone()));
    }
    let state_dir = std::fs::canonicalize(&ff.state_dir).unwrap_or_else(|_| ff.state_dir.clone());
    let db_path = ff.state_dir.join(crate::state::DB_FILE);
    let project = Arc::new(api::Project { ff, edges, state_dir, db_path });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| UiError::Runtime(e.to_string()))?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| UiError::Listen(opts.bind.clone(), e.to_string()))?;
        let local = listener.local_addr().map_err(|e| UiError::Listen(opts.bind.clone(), e.to_string()))?;
        let hosts = allowed_hosts(local);
        let (events, _) = tokio::sync::broadcast::channel(256);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_poll = Arc::new(AtomicBool::new(false));
        {
            let (p, tx, stop) = (project.clone(), events.clone(), stop_poll.clone());
            std::thread::spawn(move || live::poll(p, tx, stop));
        }
        let app = Arc::new(App {
            project,
            token: opts.token,
            hosts,
            env: routes::templates(),
            events,
            stop: stop_rx.clone(),
        });
        let router = routes::router(app.clone()).layer(axum::middleware::from_fn_with_state(app.clone(), guard));
        announce(&format!("http://{local}/"));
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop_tx.send(true);
        });
        let mut on_stop = stop_rx.clone();
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = on_stop.wait_for(|s| *s).await;
        });
        let mut on_stop = stop_rx;
        // Event streams end at the signal; give requests in flight a moment, no more.
        tokio::select! {
            r = server => r.map_err(|e| UiError::Runtime(e.to_string()))?,
            _ = async {
                let _ = on_stop.wait_for(|s| *s).await;
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            } => {}
        }
        stop_poll.store(true, Ordering::Relaxed);
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut i), Ok(mut t)) => {
            tokio::select! {
                _ = i.recv() => {}
                _ = t.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The `Host` values that name the bound address: `ip:port`, and `localhost:port` for a
/// loopback address; none to check for a wildcard address (0.0.0.0, ::), which is
/// reached under names flux cannot know and always has a token.
fn allowed_hosts(local: SocketAddr) -> Vec<String> {
    if local.ip().is_unspecified() {
        return Vec::new();
    }
    let mut hosts = vec![local.to_string()];
    if local.ip().is_loopback() {
        hosts.push(format!("localhost:{}", local.port()));
    }
    hosts
}

/// Constant-time comparison of a presented token with the expected one.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut r = (status, format!("{message}\n")).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    for v in headers.get_all(header::COOKIE) {
        for part in v.to_str().ok()?.split(';') {
            if let Some((k, val)) = part.trim().split_once('=')
                && k == COOKIE
            {
                return Some(routes::urldecode(val));
            }
        }
    }
    None
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| kv.strip_prefix("token=")).map(routes::urldecode)
}

/// The rules every request passes before any route: method, Host, token; and the headers
/// every response gets.
async fn guard(State(app): State<Arc<App>>, req: Request<Body>, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = refuse(StatusCode::METHOD_NOT_ALLOWED, "flux ui is read-only: only GET and HEAD");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !app.hosts.is_empty() && !app.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return refuse(StatusCode::MISDIRECTED_REQUEST, "the Host header does not name the address flux ui listens on");
    }
    let mut set_cookie = None;
    if let Some(token) = &app.token {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::to_string);
        let from_query = query_token(req.uri().query());
        let ok = bearer.as_deref().is_some_and(|t| same(t, token))
            || cookie_token(req.headers()).is_some_and(|t| same(&t, token))
            || from_query.as_deref().is_some_and(|t| same(t, token));
        if !ok {
            let mut r = refuse(
                StatusCode::UNAUTHORIZED,
                "flux ui needs its token: header `Authorization: Bearer TOKEN`, or open the URL once with ?token=TOKEN",
            );
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        if from_query.is_some() {
            set_cookie = HeaderValue::from_str(&format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                api::urlencode(token)
            ))
            .ok();
        }
    }
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    if let Some(c) = set_cookie {
        h.insert(header::SET_COOKIE, c);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}
