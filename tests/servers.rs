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
