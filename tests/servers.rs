//! Real servers for the store tests, started once per test binary on 127.0.0.1:
//! - an S3 protocol server (moto's, installed into `.ci/venv` by `.ci/setup-tests`);
//! - an HDFS MiniDFSCluster (`tests/minidfs`, built by the same script).
//!
//! Each server is wrapped in `sh` that kills it when our stdin closes, so it dies with
//! the test process however that ends. A test that cannot find a server fails, naming
//! the script that installs it: never a silent pass.
//!
//! A small HTTP client lets tests look inside the S3 server (list, read and write objects)
//! without going through flux.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const SETUP: &str = ".ci/setup-tests";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Start `cmd` under a `sh` that kills it when its stdin reaches EOF.
fn start_tied(cmd: &str, out: &std::path::Path, log: &std::path::Path) -> Child {
    let script = format!(
        "{cmd} >'{}' 2>'{}' & pid=$!; cat >/dev/null; kill $pid 2>/dev/null; wait",
        out.display(),
        log.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh starts")
}

/// The S3 server: where it listens.
pub struct S3 {
    pub endpoint: String,
    port: u16,
    _child: Mutex<Child>,
}

static S3_SERVER: OnceLock<S3> = OnceLock::new();
static BUCKETS: AtomicUsize = AtomicUsize::new(0);

/// The shared S3 server, started on first use.
pub fn s3() -> &'static S3 {
    S3_SERVER.get_or_init(|| {
        let moto = std::env::var_os("FLUX_TEST_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join(".ci/venv/bin/moto_server"));
        assert!(
            moto.exists(),
            "the S3 test server {} is missing: run `bash {SETUP}` (it installs moto[server] into .ci/venv)",
            moto.display()
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("flux-test-moto-{port}.log"));
        let child =
            start_tied(&format!("'{}' -H 127.0.0.1 -p {port}", moto.display()), &log, &log.with_extension("err"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http(port, "GET", "/", &[]) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the S3 test server did not start within 60s; its log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        S3 { endpoint: format!("http://127.0.0.1:{port}"), port, _child: Mutex::new(child) }
    })
}

impl S3 {
    /// A new, empty bucket.
    pub fn bucket(&self, hint: &str) -> String {
        let n = BUCKETS.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{n}-{}", hint.replace('_', "-"), std::process::id());
        let (code, body) = http(self.port, "PUT", &format!("/{name}"), &[]).expect("create bucket");
        assert_eq!(code, 200, "create bucket {name}: {}", String::from_utf8_lossy(&body));
        name
    }

    /// Environment for flux to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "flux-test-key".into()),
            ("AWS_SECRET_ACCESS_KEY", "flux-test-secret-0123456789".into()),
            ("AWS_REGION", "us-east-1".into()),
            // Never look for instance credentials off this machine.
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Every key in a bucket, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2");
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", urlencode(t)));
            }
            let (code, body) = http(self.port, "GET", &path, &[]).expect("list");
            let body = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(code, 200, "list {bucket}: {body}");
            keys.extend(tags(&body, "Key"));
            token = tags(&body, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// An object's ETag as a listing gives it (quotes and all).
    pub fn etag(&self, bucket: &str, key: &str) -> String {
        let (code, body) =
            http(self.port, "GET", &format!("/{bucket}?list-type=2&prefix={}", urlencode(key)), &[]).expect("list");
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(code, 200, "list {bucket}/{key}: {body}");
        tags(&body, "ETag").into_iter().next().unwrap_or_else(|| panic!("no object {bucket}/{key}: {body}"))
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (code, body) = http(self.port, "GET", &format!("/{bucket}/{key}"), &[]).expect("get");
        (code == 200).then_some(body)
    }

    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let (code, resp) = http(self.port, "PUT", &format!("/{bucket}/{key}"), body).expect("put");
        assert_eq!(code, 200, "put {bucket}/{key}: {}", String::from_utf8_lossy(&resp));
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(rest[..j].replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"));
        rest = &rest[j + close.len()..];
    }
    out
}

/// The test server checks no signature, but answers anonymous object requests with 403.
const AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=flux-test-key/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// One HTTP/1.1 request with `Connection: close`: status and body.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n{AUTH}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)?;
    let code: u16 = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut chunked = false;
    let mut len: Option<usize> = None;
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().ok();
        }
    }
    let mut out = Vec::new();
    if chunked {
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            out.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = len {
        out.resize(n, 0);
        r.read_exact(&mut out)?;
    } else {
        r.read_to_end(&mut out)?;
    }
    Ok((code, out))
}

/// A proxy in front of a server that answers the first `failures` requests with
/// `503 Slow Down`, then passes everything through (transient faults).
pub struct FlakyProxy {
    pub endpoint: String,
    pub failed: std::sync::Arc<AtomicUsize>,
}

pub fn flaky_proxy(upstream: u16, failures: usize) -> FlakyProxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let failed = std::sync::Arc::new(AtomicUsize::new(0));
    let f2 = failed.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            if f2.load(Ordering::SeqCst) < failures {
                f2.fetch_add(1, Ordering::SeqCst);
                // Read the request head, then refuse it.
                let mut buf = [0u8; 65536];
                let _ = client.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = client.read(&mut buf);
                let body = "<Error><Code>SlowDown</Code><Message>try again</Message></Error>";
                let _ = write!(
                    client,
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                continue;
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
            let (mut c2, mut s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
            let (mut c, mut s) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut s2);
                let _ = s2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    FlakyProxy { endpoint: format!("http://127.0.0.1:{port}"), failed }
}

impl S3 {
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// The HDFS MiniDFSCluster: its `hdfs://127.0.0.1:port` URL.
pub struct Hdfs {
    pub url: String,
    _child: Mutex<Child>,
}

static HDFS: OnceLock<Hdfs> = OnceLock::new();

/// The shared MiniDFSCluster, started on first use (about ten seconds).
pub fn hdfs() -> &'static Hdfs {
    HDFS.get_or_init(|| {
        let dir = repo().join("tests/minidfs");
        let cp = dir.join("target/classpath.txt");
        assert!(
            cp.exists() && dir.join("target/classes").exists(),
            "the HDFS test cluster is not built ({} is missing): run `bash {SETUP}` (it builds tests/minidfs with Maven)",
            cp.display()
        );
        let classpath = format!(
            "{}:{}",
            dir.join("target/classes").display(),
            std::fs::read_to_string(&cp).expect("classpath").trim()
        );
        let base = std::env::temp_dir().join(format!("flux-test-minidfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let log = base.with_extension("log");
        let out = base.with_extension("out");
                // MiniDfs itself shuts the cluster down when its stdin closes.
        let file = |p: &std::path::Path| std::fs::File::create(p).expect("create a log file");
        let child = Command::new("java")
            .args(["-cp", &classpath, "flux.test.MiniDfs", "0"])
            .arg(&base)
            .stdin(Stdio::piped())
            .stdout(file(&out))
            .stderr(file(&log))
            .spawn()
            .expect("start java");
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.starts_with("READY ")) {
                break line["READY ".len()..].trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the MiniDFSCluster did not start within 120s; its log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        Hdfs { url, _child: Mutex::new(child) }
    })
}

// --- GCS and Azure emulators ------------------------------------------------------------
//
// fake-gcs-server (`go install` into `.ci/gobin`) and Azurite's blob service (`npm install`
// into `.ci/azurite`), both installed by `.ci/setup-tests`, started like the S3 server.

/// An emulator's program: `FLUX_TEST_<VAR>` or the path `.ci/setup-tests` installs it to;
/// a missing one fails the test naming the script.
fn emulator(var: &str, installed: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| repo().join(installed));
    assert!(
        path.exists(),
        "the {what} {} is missing: run `bash {SETUP}` (it installs it into {installed})",
        path.display()
    );
    path
}

/// Wait until `port` answers an HTTP request, or fail with the server's log.
fn wait_for_http(port: u16, what: &str, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while request(port, "GET", "/", &[], b"").is_err() {
        assert!(
            Instant::now() < deadline,
            "the {what} did not start within 60s; its log: {}{}",
            std::fs::read_to_string(log).unwrap_or_default(),
            std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request with `Connection: close` and extra header lines: the status code.
fn request(port: u16, method: &str, path: &str, headers: &[String], body: &[u8]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n", body.len());
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut status = String::new();
    BufReader::new(s).read_line(&mut status)?;
    status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {status:?}")))
}

/// A fresh bucket or container name for one test.
fn fresh_name(hint: &str) -> String {
    let n = BUCKETS.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}-{}", hint.replace('_', "-"), std::process::id()).to_ascii_lowercase()
}

/// fake-gcs-server: the port it listens on.
pub struct Gcs {
    pub port: u16,
    _child: Mutex<Child>,
}

static GCS: OnceLock<Gcs> = OnceLock::new();

/// The shared GCS emulator, started on first use.
pub fn gcs() -> &'static Gcs {
    GCS.get_or_init(|| {
        let bin = emulator("FLUX_TEST_FAKE_GCS_SERVER", ".ci/gobin/fake-gcs-server", "GCS emulator");
        let port = free_port();
        let log = std::env::temp_dir().join(format!("flux-test-fake-gcs-{port}.log"));
        let cmd = format!(
            "'{}' -scheme http -host 127.0.0.1 -port {port} -public-host 127.0.0.1:{port} -backend memory -log-level warn",
            bin.display()
        );
        let child = start_tied(&cmd, &log, &log.with_extension("err"));
        wait_for_http(port, "GCS emulator", &log);
        Gcs { port, _child: Mutex::new(child) }
    })
}

impl Gcs {
    /// A new, empty bucket (through the JSON API, which needs no credentials here).
    pub fn bucket(&self, hint: &str) -> String {
        let name = fresh_name(hint);
        let body = format!("{{\"name\":\"{name}\"}}");
        let code =
            request(self.port, "POST", "/storage/v1/b", &["Content-Type: application/json".into()], body.as_bytes())
                .expect("create bucket");
        assert_eq!(code, 200, "create bucket {name}");
        name
    }

    /// Environment for flux to reach `endpoint` (this server, or a proxy in front of it).
    pub fn env(endpoint: &str) -> Vec<(&'static str, String)> {
        vec![("STORAGE_EMULATOR_HOST", endpoint.trim_start_matches("http://").into())]
    }
}

/// Azurite's blob service: where it listens.
pub struct Azure {
    pub endpoint: String,
    pub port: u16,
    _child: Mutex<Child>,
}

static AZURE: OnceLock<Azure> = OnceLock::new();

/// Azurite's well-known development account and key.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The shared Azure emulator, started on first use.
pub fn azure() -> &'static Azure {
    AZURE.get_or_init(|| {
        let bin =
            emulator("FLUX_TEST_AZURITE", ".ci/azurite/node_modules/.bin/azurite-blob", "Azure emulator (Azurite)");
        let port = free_port();
        let log = std::env::temp_dir().join(format!("flux-test-azurite-{port}.log"));
        let cmd = format!(
            "'{}' --blobHost 127.0.0.1 --blobPort {port} --inMemoryPersistence --skipApiVersionCheck --silent",
            bin.display()
        );
        let child = start_tied(&cmd, &log, &log.with_extension("err"));
        wait_for_http(port, "Azure emulator (Azurite)", &log);
        Azure { endpoint: format!("http://127.0.0.1:{port}"), port, _child: Mutex::new(child) }
    })
}

impl Azure {
    /// A new, empty container (a request signed with the emulator's shared key).
    pub fn container(&self, hint: &str) -> String {
        use base64::Engine;
        let name = fresh_name(hint);
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &b64.decode(AZURITE_KEY).expect("the key"));
        let signature = b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        let headers = [
            format!("x-ms-date: {date}"),
            format!("x-ms-version: {version}"),
            format!("Authorization: SharedKey {AZURITE_ACCOUNT}:{signature}"),
        ];
        let code = request(self.port, "PUT", &format!("/{AZURITE_ACCOUNT}/{name}?restype=container"), &headers, b"")
            .expect("create container");
        assert_eq!(code, 201, "create container {name}");
        name
    }

    /// Environment for flux to reach `endpoint` (this server, or a proxy in front of it).
    pub fn env(endpoint: &str) -> Vec<(&'static str, String)> {
        vec![("AZURE_STORAGE_USE_EMULATOR", "true".into()), ("AZURITE_BLOB_STORAGE_URL", endpoint.into())]
    }
}

// --- a proxy that counts requests -----------------------------------------------------------

/// Requests seen on the wire, by kind (`LIST`, `HEAD`, `GET`, `PUT`, `DELETE`).
pub struct CountingProxy {
    pub endpoint: String,
    counts: std::sync::Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
}

impl CountingProxy {
    /// The requests counted so far, by kind (kinds never seen are absent).
    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }

    pub fn reset(&self) {
        self.counts.lock().unwrap().clear();
    }
}

/// The kind of an HTTP request to an object store: a listing (S3's and GCS's XML
/// `list-type=2`, GCS's JSON `…/o`, Azure's `comp=list`), or its method (POST counts as PUT:
/// GCS starts multipart uploads with it).
pub fn request_kind(method: &str, target: &str) -> &'static str {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let listing = query.split('&').any(|p| p.starts_with("list-type=") || p == "comp=list")
        || (path.starts_with("/storage/v1/b/") && path.ends_with("/o"));
    match method {
        "GET" if listing => "LIST",
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" | "POST" => "PUT",
        "DELETE" => "DELETE",
        _ => "OTHER",
    }
}

/// A proxy in front of a server on `upstream` that counts the requests passing through
/// (it reads each request and its answer whole to find where the next one starts, and
/// passes both on untouched).
pub fn counting_proxy(upstream: u16) -> CountingProxy {
    proxy(upstream, false)
}

/// [`counting_proxy`] in front of fake-gcs-server, which lacks one call of GCS's XML API
/// that object_store makes: the plain upload (`PUT /bucket/object`, answered by GCS with
/// the object's ETag). The proxy hands it to the emulator's signed-URL upload (the same
/// call with `X-Goog-Algorithm` in the query) and copies the object's ETag from the JSON
/// answer into the `ETag` header, as GCS sends it. It also gives every request the
/// emulator's own address as `Host` (the emulator routes path-style requests by it).
pub fn gcs_proxy(upstream: u16) -> CountingProxy {
    proxy(upstream, true)
}

fn proxy(upstream: u16, gcs_uploads: bool) -> CountingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let counts = std::sync::Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let c2 = counts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let counts = c2.clone();
            std::thread::spawn(move || {
                let _ = relay(client, upstream, &counts, gcs_uploads);
            });
        }
    });
    CountingProxy { endpoint: format!("http://127.0.0.1:{port}"), counts }
}

/// A request's or an answer's head (up to and with the empty line); None at EOF.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            return Ok(Some(head));
        }
    }
}

/// Copy the body that follows `head` (by its length, its chunks, or to EOF if `to_eof`).
fn copy_body(head: &str, from: &mut impl BufRead, to: &mut impl Write, to_eof: bool) -> std::io::Result<()> {
    let lower = head.to_ascii_lowercase();
    if lower.lines().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked")) {
        loop {
            let mut size = String::new();
            from.read_line(&mut size)?;
            to.write_all(size.as_bytes())?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            // The chunk and its CRLF; after the last (empty) chunk, the final CRLF.
            std::io::copy(&mut from.take(n as u64 + 2), to)?;
            if n == 0 {
                return Ok(());
            }
        }
    }
    match lower.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()) {
        Some(n) => std::io::copy(&mut from.take(n), to).map(|_| ()),
        None if to_eof => std::io::copy(from, to).map(|_| ()),
        None => Ok(()),
    }
}

/// Pass requests from `client` to the server and the answers back, one at a time.
fn relay(
    client: TcpStream,
    upstream: u16,
    counts: &Mutex<std::collections::BTreeMap<String, u64>>,
    gcs_uploads: bool,
) -> std::io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", upstream))?;
    let (mut from_client, mut from_server) = (BufReader::new(client.try_clone()?), BufReader::new(server.try_clone()?));
    let (mut to_client, mut to_server) = (client, server);
    while let Some(mut head) = read_head(&mut from_client)? {
        let mut words = head.split_whitespace();
        let (method, target) =
            (words.next().unwrap_or_default().to_string(), words.next().unwrap_or_default().to_string());
        *counts.lock().unwrap().entry(request_kind(&method, &target).to_string()).or_default() += 1;
        let upload = gcs_uploads && method == "PUT" && !target.contains('?');
        if upload {
            head = head.replacen(&target, &format!("{target}?X-Goog-Algorithm=GOOG4-RSA-SHA256"), 1);
        }
        if gcs_uploads {
            // The emulator routes path-style requests by their Host: its own address.
            head = head
                .split_inclusive('\n')
                .map(|l| {
                    if l.to_ascii_lowercase().starts_with("host:") {
                        format!("Host: 127.0.0.1:{upstream}\r\n")
                    } else {
                        l.to_string()
                    }
                })
                .collect();
        }
        to_server.write_all(head.as_bytes())?;
        copy_body(&head, &mut from_client, &mut to_server, false)?;
        let Some(answer) = read_head(&mut from_server)? else { return Ok(()) };
        let status: u16 = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        if upload && status == 200 {
            let mut body = Vec::new();
            copy_body(&answer, &mut from_server, &mut body, false)?;
            let etag = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["etag"].as_str().map(str::to_string))
                .unwrap_or_default();
            let mut kept: String = answer
                .lines()
                .filter(|l| !l.is_empty())
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    !l.starts_with("content-length:") && !l.starts_with("transfer-encoding:")
                })
                .map(|l| format!("{l}\r\n"))
                .collect();
            kept.push_str(&format!("ETag: {etag}\r\nContent-Length: {}\r\n\r\n", body.len()));
            to_client.write_all(kept.as_bytes())?;
            to_client.write_all(&body)?;
            continue;
        }
        to_client.write_all(answer.as_bytes())?;
        if method != "HEAD" && status != 204 && status != 304 {
            let close = answer.to_ascii_lowercase().contains("connection: close");
            copy_body(&answer, &mut from_server, &mut to_client, close)?;
        }
    }
    Ok(())
}

// --- looking inside any store, not through flux -------------------------------------------

/// Objects under a prefix of one store, read and written with object_store's own client
/// (S3, GCS, Azure, HDFS alike), so tests can look inside a store without flux.
pub struct Objects {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    prefix: String,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // As flux does: the clients' TLS (unused on 127.0.0.1, but required) uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
    })
}

impl Objects {
    pub fn new(store: std::sync::Arc<dyn object_store::ObjectStore>, prefix: &str) -> Objects {
        Objects { store, prefix: prefix.trim_matches('/').to_string() }
    }

    fn path(&self, key: &str) -> object_store::path::Path {
        if self.prefix.is_empty() { key.into() } else { format!("{}/{key}", self.prefix).as_str().into() }
    }

    /// Every key under the prefix (relative to it), sorted.
    pub fn keys(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let prefix = (!self.prefix.is_empty()).then(|| object_store::path::Path::from(self.prefix.as_str()));
        let metas: Vec<object_store::ObjectMeta> =
            runtime().block_on(self.store.list(prefix.as_ref()).try_collect()).expect("list the store");
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let mut keys: Vec<String> = metas
            .iter()
            .map(|m| m.location.as_ref().strip_prefix(&strip).unwrap_or(m.location.as_ref()).to_string())
            .collect();
        keys.sort();
        keys
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        let store = self.store.clone();
        let path = self.path(key);
        runtime().block_on(async move {
            match store.get(&path).await {
                Ok(r) => Some(r.bytes().await.expect("read an object").to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("get {path}: {e}"),
            }
        })
    }

    pub fn put(&self, key: &str, body: &[u8]) {
        use object_store::ObjectStoreExt;
        let store = self.store.clone();
        let path = self.path(key);
        let body = bytes::Bytes::copy_from_slice(body);
        runtime().block_on(async move { store.put(&path, body.into()).await }).expect("put an object");
    }
}

impl S3 {
    /// The objects of a bucket, through object_store's S3 client.
    pub fn objects(&self, bucket: &str) -> Objects {
        let _ = runtime(); // installs the TLS provider the client needs
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("flux-test-key")
            .with_secret_access_key("flux-test-secret-0123456789")
            .build()
            .expect("an S3 client");
        Objects::new(std::sync::Arc::new(store), "")
    }
}

impl Gcs {
    /// The objects of a bucket, through object_store's GCS client.
    pub fn objects(&self, bucket: &str) -> Objects {
        let _ = runtime(); // installs the TLS provider the client needs
        let store = object_store::gcp::GoogleCloudStorageBuilder::new()
            .with_bucket_name(bucket)
            // Through the proxy that completes the emulator's XML API (see `gcs_proxy`).
            .with_base_url(&gcs_proxy(self.port).endpoint)
            .with_skip_signature(true)
            // object_store sends a token on uploads even when told to skip signing.
            .with_config(object_store::gcp::GoogleConfigKey::BearerToken, "flux-test")
            .build()
            .expect("a GCS client");
        Objects::new(std::sync::Arc::new(store), "")
    }
}

impl Azure {
    /// The blobs of a container, through object_store's Azure client (the emulator's
    /// account at its path-style endpoint).
    pub fn objects(&self, container: &str) -> Objects {
        let _ = runtime(); // installs the TLS provider the client needs
        let store = object_store::azure::MicrosoftAzureBuilder::new()
            .with_account(AZURITE_ACCOUNT)
            .with_access_key(AZURITE_KEY)
            .with_endpoint(format!("{}/{AZURITE_ACCOUNT}", self.endpoint))
            .with_allow_http(true)
            .with_container_name(container)
            .build()
            .expect("an Azure client");
        Objects::new(std::sync::Arc::new(store), "")
    }
}

impl Hdfs {
    /// The files under `url` (a folder on this cluster), through hdfs-native.
    pub fn objects(&self, url: &str) -> Objects {
        let prefix = url.strip_prefix(&self.url).expect("a folder on this cluster");
        let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
            .with_url(&self.url)
            .with_io_runtime(runtime().handle().clone())
            .build()
            .expect("an HDFS client");
        Objects::new(std::sync::Arc::new(store), prefix)
    }
}
