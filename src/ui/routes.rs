//! The routes: each page and its `/api/` twin call the same function of [`api`] and
//! render or serialise its struct; the embedded assets; the event stream.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use minijinja::{Environment, Value, context};
use serde::Serialize;

use super::App;
use super::api::{self, ApiError, ApiResult};

/// The vendored htmx (npm `htmx.org` 2.0.8, BSD Zero Clause licence: assets/htmx-LICENSE.txt).
const HTMX: &str = include_str!("assets/htmx-2.0.8.min.js");
const HTMX_LICENSE: &str = include_str!("assets/htmx-LICENSE.txt");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// The page templates, embedded; `.html` templates are auto-escaped.
pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, src) in [
        ("base.html", include_str!("templates/base.html")),
        ("index.html", include_str!("templates/index.html")),
        ("grid.html", include_str!("templates/grid.html")),
        ("graph.html", include_str!("templates/graph.html")),
        ("task.html", include_str!("templates/task.html")),
        ("runs.html", include_str!("templates/runs.html")),
        ("run.html", include_str!("templates/run.html")),
        ("durations.html", include_str!("templates/durations.html")),
        ("error.html", include_str!("templates/error.html")),
    ] {
        env.add_template(name, src).expect("the embedded templates parse");
    }
    env.add_filter("urlencode", |s: &str| api::urlencode(s));
    env.add_filter("time", |t: Option<f64>| t.map(fmt_time).unwrap_or_default());
    env.add_filter("dur", |s: Option<f64>| s.map(fmt_duration).unwrap_or_default());
    env
}

/// `2026-12-04 17:32:03` (UTC) for Unix seconds.
fn fmt_time(t: f64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0).map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

/// `0.42 s`, `3m 07s`, `2h 05m`.
fn fmt_duration(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.2} s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h {:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index_page))
        .route("/api/steps", get(steps_json))
        .route("/grid", get(grid_page))
        .route("/api/grid", get(grid_json))
        .route("/graph", get(graph_page))
        .route("/api/graph", get(graph_json))
        .route("/tasks/{id}", get(task_page))
        .route("/api/tasks/{id}", get(task_json))
        .route("/api/tasks/{id}/log", get(task_log))
        .route("/runs", get(runs_page))
        .route("/api/runs", get(runs_json))
        .route("/runs/{id}", get(run_page))
        .route("/api/runs/{id}", get(run_json))
        .route("/durations/{step}", get(durations_page))
        .route("/api/durations/{step}", get(durations_json))
        .route("/api/events", get(events))
        .route("/assets/{name}", get(asset))
        .fallback(not_found)
        .with_state(app)
}

type AppState = State<Arc<App>>;

/// Run a read of the state DB off the async workers.
async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&api::Project) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let p = app.project.clone();
    tokio::task::spawn_blocking(move || f(&p))
        .await
        .unwrap_or_else(|e| Err(ApiError { status: 500, message: format!("the request failed: {e}") }))
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error of a JSON twin: `{"error": "..."}`.
fn json_error(e: ApiError) -> Response {
    (status(e.status), Json(serde_json::json!({ "error": e.message }))).into_response()
}

fn json<T: Serialize>(r: ApiResult<T>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => json_error(e),
    }
}

/// JSON to embed in a page's `<script type="application/json">`: no `<`, `>` or `&`
/// left that could end the element.
fn embed<T: Serialize>(v: &T) -> Value {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    Value::from_safe_string(s.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026"))
}

fn page(app: &App, name: &str, ctx: Value) -> Response {
    match app.env.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(app, ApiError { status: 500, message: format!("cannot render {name}: {e}") }),
    }
}

fn error_page(app: &App, e: ApiError) -> Response {
    let html = app
        .env
        .get_template("error.html")
        .and_then(|t| t.render(context! { title => "Error", status => e.status, message => e.message }))
        .unwrap_or_else(|_| "error".into());
    (status(e.status), Html(html)).into_response()
}

fn render<T: Serialize>(app: &App, name: &str, title: &str, r: ApiResult<T>, nav: &str) -> Response {
    match r {
        Ok(v) => page(
            app,
            name,
            context! { title, nav, page => Value::from(minijinja::value::Serde(&v)), data => embed(&v) },
        ),
        Err(e) => error_page(app, e),
    }
}

async fn index_page(State(app): AppState) -> Response {
    let r = blocking(&app, api::steps).await;
    let name = app.project.ff.path.display().to_string();
    match r {
        Ok(v) => page(
            &app,
            "index.html",
            context! { title => "Steps", nav => "steps", page => Value::from(minijinja::value::Serde(&v)), fluxfile => name },
        ),
        Err(e) => error_page(&app, e),
    }
}

async fn steps_json(State(app): AppState) -> Response {
    json(blocking(&app, api::steps).await)
}

async fn grid_page(State(app): AppState, Query(q): Query<api::GridQuery>) -> Response {
    let r = blocking(&app, move |p| api::grid(p, q)).await;
    render(&app, "grid.html", "Grid", r, "grid")
}

async fn grid_json(State(app): AppState, Query(q): Query<api::GridQuery>) -> Response {
    json(blocking(&app, move |p| api::grid(p, q)).await)
}

async fn graph_page(State(app): AppState, Query(q): Query<api::GraphQuery>) -> Response {
    let r = blocking(&app, move |p| api::graph(p, &q)).await;
    match r {
        Ok(v) => page(
            &app,
            "graph.html",
            context! { title => "Graph", nav => "graph", page => Value::from(minijinja::value::Serde(&v)), node_w => api::NODE_W, node_h => api::NODE_H },
        ),
        Err(e) => error_page(&app, e),
    }
}

async fn graph_json(State(app): AppState, Query(q): Query<api::GraphQuery>) -> Response {
    json(blocking(&app, move |p| api::graph(p, &q)).await)
}

#[derive(serde::Deserialize, Default)]
struct TaskQuery {
    /// Which attempt's log to show (default: the latest).
    attempt: Option<i64>,
}

async fn task_page(State(app): AppState, Path(id): Path<String>, Query(q): Query<TaskQuery>) -> Response {
    let id2 = id.clone();
    let r = blocking(&app, move |p| {
        let t = api::task(p, &id2)?;
        let shown = q.attempt.or_else(|| t.attempts.first().map(|a| a.id));
        let log =
            shown.and_then(|a| api::log(p, &id2, &api::LogQuery { attempt: Some(a), offset: None, limit: None }).ok());
        Ok((t, shown, log))
    })
    .await;
    match r {
        Ok((t, shown, log)) => {
            let log_ctx = log.map(|l| {
                context! {
                    text => String::from_utf8_lossy(&l.bytes).into_owned(),
                    offset => l.offset,
                    size => l.size,
                }
            });
            page(
                &app,
                "task.html",
                context! { title => id, nav => "grid", page => Value::from(minijinja::value::Serde(&t)), shown, log => log_ctx },
            )
        }
        Err(e) => error_page(&app, e),
    }
}

async fn task_json(State(app): AppState, Path(id): Path<String>) -> Response {
    json(blocking(&app, move |p| api::task(p, &id)).await)
}

/// A byte range of a log as text/plain; `X-Log-Offset` is its first byte, `X-Log-Size`
/// the log's size now (ask again from offset + length to follow it).
async fn task_log(State(app): AppState, Path(id): Path<String>, Query(q): Query<api::LogQuery>) -> Response {
    match blocking(&app, move |p| api::log(p, &id, &q)).await {
        Ok(chunk) => {
            let mut r = chunk.bytes.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            h.insert("x-log-offset", HeaderValue::from(chunk.offset));
            h.insert("x-log-size", HeaderValue::from(chunk.size));
            r
        }
        Err(e) => (status(e.status), format!("{}\n", e.message)).into_response(),
    }
}

async fn runs_page(State(app): AppState, Query(q): Query<api::RunsQuery>) -> Response {
    let r = blocking(&app, move |p| api::runs(p, &q)).await;
    render(&app, "runs.html", "Runs", r, "runs")
}

async fn runs_json(State(app): AppState, Query(q): Query<api::RunsQuery>) -> Response {
    json(blocking(&app, move |p| api::runs(p, &q)).await)
}

fn run_id(s: &str) -> ApiResult<i64> {
    s.parse().map_err(|_| ApiError::not_found(format!("no run `{s}`: a run is a number")))
}

async fn run_page(State(app): AppState, Path(id): Path<String>) -> Response {
    let r = match run_id(&id) {
        Ok(n) => blocking(&app, move |p| api::run(p, n)).await,
        Err(e) => Err(e),
    };
    render(&app, "run.html", &format!("Run {id}"), r, "runs")
}

async fn run_json(State(app): AppState, Path(id): Path<String>) -> Response {
    match run_id(&id) {
        Ok(n) => json(blocking(&app, move |p| api::run(p, n)).await),
        Err(e) => json_error(e),
    }
}

#[derive(serde::Deserialize, Default)]
struct DurationsQuery {
    limit: Option<usize>,
}

async fn durations_page(State(app): AppState, Path(step): Path<String>, Query(q): Query<DurationsQuery>) -> Response {
    let title = format!("Durations of {step}");
    let r = blocking(&app, move |p| api::durations(p, &step, q.limit)).await;
    render(&app, "durations.html", &title, r, "steps")
}

async fn durations_json(State(app): AppState, Path(step): Path<String>, Query(q): Query<DurationsQuery>) -> Response {
    json(blocking(&app, move |p| api::durations(p, &step, q.limit)).await)
}

/// Server-sent events: a `change` event (JSON [`super::live::Change`]) whenever a build
/// records attempts; `reload` when this stream fell behind (fetch the page again).
async fn events(State(app): AppState) -> impl IntoResponse {
    let rx = app.events.subscribe();
    let stop = app.stop.clone();
    let hello = futures::stream::once(async { Ok::<_, Infallible>(Event::default().event("hello").data("{}")) });
    let changes = futures::stream::unfold((rx, stop), |(mut rx, mut stop)| async move {
        if *stop.borrow() {
            return None;
        }
        let ev = tokio::select! {
            _ = stop.changed() => return None,
            m = rx.recv() => match m {
                Ok(c) => Event::default().event("change").data(serde_json::to_string(&*c).unwrap_or_default()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Event::default().event("reload").data("{}"),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            },
        };
        Some((Ok::<_, Infallible>(ev), (rx, stop)))
    });
    use futures::StreamExt;
    Sse::new(hello.chain(changes)).keep_alive(KeepAlive::default())
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, ty): (&'static str, &'static str) = match name.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "htmx-LICENSE.txt" => (HTMX_LICENSE, "text/plain; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn not_found(State(app): AppState, uri: axum::http::Uri) -> Response {
    let e = ApiError::not_found(format!("no page {}", uri.path()));
    if uri.path().starts_with("/api/") { json_error(e) } else { error_page(&app, e) }
}

/// Decode `%XX` and `+` of a query value.
pub fn urldecode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
