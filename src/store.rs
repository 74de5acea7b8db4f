//! Remote stores (SPEC §4): S3 and S3-compatible servers, GCS and Azure through the
//! `object_store` crate, HDFS through `hdfs-native-object-store` (a native client: no JVM).
//! Every remote target goes through one [`ObjectStore`] code path, whatever the scheme.
//!
//! A store is made on first use for each `scheme://authority` (a bucket, a container, a
//! namenode) from the usual environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), then
//! the Fluxfile's `[store."scheme://authority"]` table on top. Requests run on one small
//! tokio runtime that belongs to this module; callers (the build loop, the executor's
//! worker threads) block on them, so the rest of flux stays synchronous. Every request is
//! counted, and `--verbose` prints the counts.
//!
//! What the rest of flux sees:
//! - [`stat_many`]: one LIST per folder of targets (a HEAD for a lone target), so a no-op
//!   build over 10,000 objects in one prefix costs one request, not 10,000;
//! - [`digest`]: ETag or version plus size, no content read; for an object flux wrote
//!   itself, the blake3 of its bytes while the object is still that version ([`content`]);
//! - [`fetch`]: an input downloaded once into `<state>/cache`, keyed by its ETag;
//! - [`upload`]: a staged output put in place only when its task succeeded (multipart for
//!   large files: nothing is visible before the upload completes), its content hashed on
//!   the way;
//! - [`copy`]: a server-side copy within one store, else a stream from any store to any
//!   store, hashed on the way (`action = "copy"`, in [`copy`](mod@copy)'s module);
//! - [`remove`]: what a failed `stage = false` task wrote.
//!
//! Errors name the URI and the cause, never a credential (object_store's messages carry
//! none; URIs with user info are refused when the Fluxfile is loaded).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};

use crate::state::Hash;
use crate::target::Meta;

pub mod content;
mod copy;
pub use copy::copy_to;

/// The URI schemes flux sends to a remote store.
pub const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "hdfs", "viewfs"];

/// Files up to this size are uploaded in one PUT; larger ones in parts of this size
/// (unless the store's `part_size` setting says otherwise).
pub const PART_SIZE: usize = 8 << 20;

/// The `[store]` setting that flux reads itself rather than passing it to the client.
const PART_SIZE_KEY: &str = "part_size";
/// The bounds of `part_size`: S3's smallest part (but the last), Azure's largest block.
const PART_SIZE_MIN: u64 = 5 << 20;
const PART_SIZE_MAX: u64 = 4000 << 20;

/// A remote target, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: &'a str,
    /// Bucket, container or `namenode:port`.
    pub authority: &'a str,
    /// The object key (no leading `/`); a trailing `/` marks a folder.
    pub key: &'a str,
}

impl Uri<'_> {
    /// `scheme://authority`: which store.
    pub fn root(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

/// Split a target if it names a remote store.
pub fn parse(target: &str) -> Option<Uri<'_>> {
    // The first `:` (a byte search, far quicker than a search for "://" over a million
    // local paths) must start the "://"; no scheme holds a `:`.
    let colon = target.find(':')?;
    let (scheme, rest) = (&target[..colon], target[colon..].strip_prefix("://")?);
    if !SCHEMES.contains(&scheme) {
        return None;
    }
    let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
    Some(Uri { scheme, authority, key: key.trim_start_matches('/') })
}

/// Whether a target lives on a remote store.
pub fn is_remote(target: &str) -> bool {
    parse(target).is_some()
}

/// The scheme of something that looks like a URI (`xyz://…`), for errors about unknown ones.
pub fn scheme_of(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    (!scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))).then_some(scheme)
}

/// Settings of one store from the Fluxfile: `[store."s3://bucket"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `scheme://authority`.
    pub root: String,
    pub options: Vec<(String, String)>,
}

/// Check one `[store."…"]` key for the store's scheme; the error lists what is allowed.
pub fn check_option(scheme: &str, key: &str) -> Result<(), String> {
    use object_store::aws::AmazonS3ConfigKey;
    use object_store::azure::AzureConfigKey;
    use object_store::gcp::GoogleConfigKey;
    let k = key.to_ascii_lowercase();
    if k == PART_SIZE_KEY {
        return Ok(());
    }
    let ok = match scheme {
        "s3" | "s3a" => k.parse::<AmazonS3ConfigKey>().is_ok(),
        "gs" => k.parse::<GoogleConfigKey>().is_ok(),
        "az" | "azure" | "abfs" | "abfss" => k.parse::<AzureConfigKey>().is_ok(),
        // Hadoop settings (`dfs.ha.namenodes.…`, …) pass through as they are.
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(match scheme {
            "s3" | "s3a" => "an S3 setting such as endpoint, region, access_key_id, secret_access_key, allow_http, virtual_hosted_style_request".into(),
            "gs" => "a GCS setting such as service_account, service_account_key, application_credentials".into(),
            _ => "an Azure setting such as account_name, access_key, sas_key, endpoint, use_emulator".into(),
        })
    }
}

/// Check the value of a `[store]` setting flux reads itself (`part_size`); the error says
/// what is allowed.
pub fn check_value(key: &str, value: &str) -> Result<(), String> {
    if !key.eq_ignore_ascii_case(PART_SIZE_KEY) {
        return Ok(());
    }
    let n = crate::param::parse_size(value)?;
    if !(PART_SIZE_MIN..=PART_SIZE_MAX).contains(&n) {
        return Err(format!("`{value}` is outside the part sizes stores accept: from 5MiB to 4000MiB"));
    }
    Ok(())
}

/// Requests sent, by kind.
#[derive(Debug, Default)]
pub struct Requests {
    pub list: AtomicU64,
    pub head: AtomicU64,
    pub get: AtomicU64,
    pub put: AtomicU64,
    pub delete: AtomicU64,
    /// Server-side copies (S3 CopyObject, GCS and Azure copy): no body goes through flux.
    pub copy: AtomicU64,
}

impl Requests {
    pub fn total(&self) -> u64 {
        self.list.load(Relaxed)
            + self.head.load(Relaxed)
            + self.get.load(Relaxed)
            + self.put.load(Relaxed)
            + self.delete.load(Relaxed)
            + self.copy.load(Relaxed)
    }

    /// `3 LIST, 1 HEAD, 0 GET, 2 PUT, 0 DELETE, 0 COPY`.
    pub fn summary(&self) -> String {
        format!(
            "{} LIST, {} HEAD, {} GET, {} PUT, {} DELETE, {} COPY",
            self.list.load(Relaxed),
            self.head.load(Relaxed),
            self.get.load(Relaxed),
            self.put.load(Relaxed),
            self.delete.load(Relaxed),
            self.copy.load(Relaxed)
        )
    }
}

struct Remote {
    rt: tokio::runtime::Runtime,
    configs: Vec<StoreConfig>,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

static CONFIGS: OnceLock<Vec<StoreConfig>> = OnceLock::new();
static REMOTE: OnceLock<Remote> = OnceLock::new();
static REQUESTS: Requests = Requests {
    list: AtomicU64::new(0),
    head: AtomicU64::new(0),
    get: AtomicU64::new(0),
    put: AtomicU64::new(0),
    delete: AtomicU64::new(0),
    copy: AtomicU64::new(0),
};

/// Give the Fluxfile's `[store]` tables (once, before the first remote request).
pub fn configure(configs: Vec<StoreConfig>) {
    let _ = CONFIGS.set(configs);
}

/// Requests sent so far by this process.
pub fn requests() -> &'static Requests {
    &REQUESTS
}

fn remote() -> Result<&'static Remote, String> {
    if let Some(r) = REMOTE.get() {
        return Ok(r);
    }
    // TLS for https stores (ring: no C toolchain beyond what SQLite needs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flux-store")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the store runtime: {e}"))?;
    let configs = CONFIGS.get().cloned().unwrap_or_default();
    Ok(REMOTE.get_or_init(|| Remote { rt, configs, stores: Mutex::new(HashMap::new()) }))
}

/// Retries for transient failures (connection errors and resets, stalled responses, 5xx,
/// throttling), with backoff from 100 ms doubling to at most 15 s; a permanent error (403,
/// no such bucket) is not retried. At most 5 retries and 3 minutes from a request's first
/// try (object_store re-sends the signed request, so it must stay well within the
/// signature's validity).
fn retry() -> RetryConfig {
    RetryConfig { max_retries: 5, retry_timeout: Duration::from_secs(180), ..Default::default() }
}

/// Client timeouts, set before the `[store]` table's keys (which win): connecting may take
/// 5 s; a response may stall (no byte read) for at most 30 s, then the request fails and
/// is retried. object_store's default total limit of 30 s per request is lifted to 1 h:
/// it cut every GET of a large object at 30 s, and a body that keeps flowing is no fault.
const TIMEOUTS: [(ClientConfigKey, &str); 3] =
    [(ClientConfigKey::ConnectTimeout, "5s"), (ClientConfigKey::ReadTimeout, "30s"), (ClientConfigKey::Timeout, "1h")];

impl Remote {
    /// The part size of a store's multipart uploads, and the largest file sent in one PUT.
    fn part_size(&self, uri: &Uri<'_>) -> usize {
        let root = uri.root();
        let set = self.configs.iter().find(|c| c.root == root).and_then(|c| {
            c.options.iter().find(|(k, _)| k.eq_ignore_ascii_case(PART_SIZE_KEY)).map(|(_, v)| v.as_str())
        });
        // Checked when the Fluxfile was loaded.
        set.and_then(|v| crate::param::parse_size(v).ok()).map_or(PART_SIZE, |n| n as usize)
    }

    fn store(&self, uri: &Uri<'_>) -> Result<Arc<dyn ObjectStore>, String> {
        let root = uri.root();
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stores.get(&root) {
            return Ok(s.clone());
        }
        let options: Vec<(String, String)> = (self.configs.iter().find(|c| c.root == root))
            .map(|c| c.options.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(PART_SIZE_KEY)).cloned().collect())
            .unwrap_or_default();
        let store = self.build(uri, &root, &options).map_err(|e| format!("cannot set up the store for {root}: {e}"))?;
        stores.insert(root, store.clone());
        Ok(store)
    }

    fn build(&self, uri: &Uri<'_>, root: &str, options: &[(String, String)]) -> Result<Arc<dyn ObjectStore>, String> {
        let e = |e: object_store::Error| clean(&e.to_string());
        let bad = |k: &str| format!("unknown setting `{k}`");
        Ok(match uri.scheme {
            "s3" | "s3a" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(root).with_retry(retry());
                for (k, v) in TIMEOUTS {
                    b = b.with_config(object_store::aws::AmazonS3ConfigKey::Client(k), v);
                }
                for (k, v) in options {
                    b = b.with_config(k.to_ascii_lowercase().parse().map_err(|_| bad(k))?, v);
                }
                Arc::new(b.build().map_err(e)?)
            }
            "gs" => {
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(root).with_retry(retry());
                for (k, v) in TIMEOUTS {
                    b = b.with_config(object_store::gcp::GoogleConfigKey::Client(k), v);
                }
                if let Some(url) = gcs_emulator(std::env::var("STORAGE_EMULATOR_HOST").ok()) {
                    // Google's clients' convention for an emulator: its address, no credentials
                    // (a placeholder token: object_store sends one on uploads even when told to
                    // skip signing).
                    b = b
                        .with_base_url(&url)
                        .with_skip_signature(true)
                        .with_config(object_store::gcp::GoogleConfigKey::BearerToken, "emulator");
                }
                for (k, v) in options {
                    b = b.with_config(k.to_ascii_lowercase().parse().map_err(|_| bad(k))?, v);
                }
                Arc::new(b.build().map_err(e)?)
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env().with_url(root).with_retry(retry());
                for (k, v) in TIMEOUTS {
                    b = b.with_config(object_store::azure::AzureConfigKey::Client(k), v);
                }
                for (k, v) in options {
                    b = b.with_config(k.to_ascii_lowercase().parse().map_err(|_| bad(k))?, v);
                }
                Arc::new(b.build().map_err(e)?)
            }
            _ => {
                let config: HashMap<String, String> = options.iter().cloned().collect();
                let b = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
                    .with_url(root)
                    .with_config(config)
                    .with_io_runtime(self.rt.handle().clone());
                Arc::new(b.build().map_err(e)?)
            }
        })
    }
}

/// The base URL of a GCS emulator from `STORAGE_EMULATOR_HOST` (`host:port` or a URL).
fn gcs_emulator(host: Option<String>) -> Option<String> {
    let host = host.filter(|h| !h.trim().is_empty())?;
    let url = if host.contains("://") { host } else { format!("http://{host}") };
    Some(url.trim_end_matches('/').to_string())
}

/// An object_store error as a message: the cause without the store's debug dump.
fn clean(msg: &str) -> String {
    // Messages may carry a request URL with a signature in its query: keep the path only.
    let mut out = String::with_capacity(msg.len());
    for word in msg.split_inclusive(' ') {
        match word.find('?') {
            Some(q) if word.starts_with("http") => {
                out.push_str(&word[..q]);
                if word.ends_with(' ') {
                    out.push(' ');
                }
            }
            _ => out.push_str(word),
        }
    }
    out.trim().to_string()
}

fn err(target: &str, e: object_store::Error) -> String {
    match e {
        object_store::Error::NotFound { .. } => format!("{target}: no such object"),
        e => format!("{target}: {}", clean(&e.to_string())),
    }
}

fn obj_path(key: &str) -> ObjPath {
    ObjPath::from(key.trim_end_matches('/'))
}

/// The 64 bits of an object's identity that stand in for a local file's inode: its ETag,
/// else its version, else 0 (then the modification time counts, see [`digest`]).
fn identity(e_tag: Option<&str>, version: Option<&str>) -> u64 {
    match e_tag.or(version) {
        Some(t) => {
            let h = blake3::hash(t.trim_matches('"').as_bytes());
            u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or_default()) | 1
        }
        None => 0,
    }
}

/// An object's stat. With an ETag or version the modification time is left out (0): the
/// tag changes with the content, and a stat taken from a PUT's answer (which has no time)
/// then equals one taken from a later listing.
fn to_meta(m: &object_store::ObjectMeta) -> Meta {
    let inode = identity(m.e_tag.as_deref(), m.version.as_deref());
    let mtime_ns = if inode == 0 { m.last_modified.timestamp_nanos_opt().unwrap_or(0) } else { 0 };
    Meta { size: m.size, mtime_ns, inode, is_dir: false }
}

const FOLDER: Meta = Meta { size: 0, mtime_ns: 0, inode: 0, is_dir: true };

type StatResult = Result<Option<Meta>, String>;

/// Stat remote targets: per folder one LIST (a HEAD when the folder holds only one of
/// them), run concurrently. A folder target (`…/`) exists when some object is under it.
pub fn stat_many(targets: &[&str]) -> Vec<Result<Option<Meta>, String>> {
    let r = match remote() {
        Ok(r) => r,
        Err(e) => return targets.iter().map(|_| Err(e.clone())).collect(),
    };
    // Group by store and parent folder.
    let mut groups: HashMap<(String, String), Vec<usize>> = HashMap::new();
    let mut out: Vec<Result<Option<Meta>, String>> = vec![Ok(None); targets.len()];
    for (i, t) in targets.iter().enumerate() {
        match parse(t) {
            Some(u) => {
                let key = u.key.trim_end_matches('/');
                let parent = key.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                groups.entry((u.root(), parent.to_string())).or_default().push(i);
            }
            None => out[i] = Err(format!("{t}: not a remote target")),
        }
    }
    let jobs: Vec<_> = groups.into_iter().collect();
    let results: Vec<Vec<(usize, StatResult)>> = r.rt.block_on(async {
        futures::stream::iter(jobs.into_iter().map(|((_, parent), idx)| async move {
            let first = parse(targets[idx[0]]).expect("grouped targets parse");
            let store = match r.store(&first) {
                Ok(s) => s,
                Err(e) => return idx.into_iter().map(|i| (i, Err(e.clone()))).collect(),
            };
            if idx.len() == 1 && !targets[idx[0]].ends_with('/') {
                REQUESTS.head.fetch_add(1, Relaxed);
                let t = targets[idx[0]];
                let res = match store.head(&obj_path(first.key)).await {
                    Ok(m) => Ok(Some(to_meta(&m))),
                    Err(object_store::Error::NotFound { .. }) => head_folder(&*store, first.key).await,
                    Err(e) => Err(err(t, e)),
                };
                return vec![(idx[0], res)];
            }
            REQUESTS.list.fetch_add(1, Relaxed);
            let prefix = (!parent.is_empty()).then(|| ObjPath::from(parent.as_str()));
            match store.list_with_delimiter(prefix.as_ref()).await {
                Ok(list) => {
                    let objects: HashMap<&str, &object_store::ObjectMeta> =
                        list.objects.iter().map(|m| (m.location.as_ref(), m)).collect();
                    let folders: std::collections::HashSet<&str> =
                        list.common_prefixes.iter().map(|p| p.as_ref()).collect();
                    idx.into_iter()
                        .map(|i| {
                            let u = parse(targets[i]).expect("grouped targets parse");
                            let key = u.key.trim_end_matches('/');
                            let m = if let Some(m) = objects.get(key) {
                                Some(to_meta(m))
                            } else if folders.contains(key) {
                                Some(FOLDER)
                            } else {
                                None
                            };
                            (i, Ok(m))
                        })
                        .collect()
                }
                Err(e) => {
                    let msg = err(&format!("{}/{parent}", first.root()), e);
                    idx.into_iter().map(|i| (i, Err(msg.clone()))).collect()
                }
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await
    });
    for (i, res) in results.into_iter().flatten() {
        out[i] = res;
    }
    out
}

/// A lone target that is no object may be a folder (objects under `key/`).
async fn head_folder(store: &dyn ObjectStore, key: &str) -> Result<Option<Meta>, String> {
    REQUESTS.list.fetch_add(1, Relaxed);
    let prefix = ObjPath::from(key);
    let mut s = store.list(Some(&prefix));
    match s.next().await {
        Some(Ok(_)) => Ok(Some(FOLDER)),
        Some(Err(object_store::Error::NotFound { .. })) | None => Ok(None),
        Some(Err(e)) => Err(err(key, e)),
    }
}

/// Stat one remote target.
pub fn stat(target: &str) -> Result<Option<Meta>, String> {
    stat_many(&[target]).pop().unwrap_or(Ok(None))
}

/// A lookup of the content hash recorded for an object flux wrote ([`content`]): the
/// target and its current stat.
pub type Recorded<'a> = &'a dyn Fn(&str, &Meta) -> Option<Hash>;

/// The digest of a remote object: the blake3 of its bytes if flux wrote this version of it
/// (`recorded`), else its ETag or version and its size (the modification time too when
/// the store gives neither); of a folder, that of every object under it, each so. No
/// content is read.
pub fn digest(target: &str, meta: &Meta, recorded: Recorded<'_>) -> Result<[u8; 32], String> {
    if !meta.is_dir {
        return Ok(recorded(target, meta).unwrap_or_else(|| object_digest(meta)));
    }
    let (r, store, u) = open(target)?;
    let mut objects = r.rt.block_on(list_under(&*store, u.key)).map_err(|e| err(target, e))?;
    objects.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = blake3::Hasher::new();
    h.update(b"dir\0");
    let base = target.trim_end_matches('/');
    for (rel, m) in &objects {
        h.update(rel.as_bytes());
        h.update(&[0]);
        let meta = to_meta(m);
        h.update(&recorded(&format!("{base}/{rel}"), &meta).unwrap_or_else(|| object_digest(&meta)));
    }
    Ok(*h.finalize().as_bytes())
}

fn object_digest(meta: &Meta) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"object\0");
    h.update(&meta.size.to_le_bytes());
    h.update(&meta.inode.to_le_bytes());
    if meta.inode == 0 {
        h.update(&meta.mtime_ns.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// Where a remote input is cached: `<cache>/<hash of URI and digest>/<file name>`, the
/// digest from [`digest`] (the ETag for an object, every ETag under a folder).
pub fn cache_path(cache_root: &Path, target: &str, digest: &[u8; 32]) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(target.as_bytes());
    h.update(digest);
    let hex = h.finalize().to_hex();
    cache_root.join(&hex[..32]).join(file_name(target))
}

/// Make a remote input available at `local` (a cache path from [`cache_path`]): nothing
/// to do when it is there already, else a download beside it and a rename. A folder
/// input downloads every object under it.
pub fn fetch(target: &str, meta: &Meta, local: &Path) -> Result<(), String> {
    if local.exists() {
        return Ok(());
    }
    let parent = local.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let tmp = parent.join(format!(".fetch.{}.{:?}", std::process::id(), std::thread::current().id()));
    let _ = crate::target::remove(&tmp);
    let res = if meta.is_dir { fetch_folder(target, &tmp) } else { copy(&Loc::Remote(target), &Loc::Local(&tmp)) };
    if let Err(e) = res {
        let _ = crate::target::remove(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, local).map_err(|e| format!("cannot move {} into the cache: {e}", target))
}

fn fetch_folder(target: &str, local: &Path) -> Result<(), String> {
    let (r, store, u) = open(target)?;
    let objects = r.rt.block_on(list_under(&*store, u.key)).map_err(|e| err(target, e))?;
    std::fs::create_dir_all(local).map_err(|e| format!("cannot create {}: {e}", local.display()))?;
    for (rel, _) in objects {
        let dest = local.join(&rel);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        }
        let uri = format!("{}/{}", target.trim_end_matches('/'), rel);
        copy(&Loc::Remote(&uri), &Loc::Local(&dest))?;
    }
    Ok(())
}

/// One end of a copy.
#[derive(Debug, Clone, Copy)]
pub enum Loc<'a> {
    Local(&'a Path),
    Remote(&'a str),
}

/// Copy a file from any store to any store: within one object store a server-side copy,
/// else a stream with at most a few parts in memory (see [`copy`](mod@copy)). A local
/// destination is written beside itself and renamed; a remote one appears whole when the
/// copy or upload completes.
pub fn copy(from: &Loc<'_>, to: &Loc<'_>) -> Result<(), String> {
    match (from, to) {
        (Loc::Local(a), Loc::Local(b)) => {
            let tmp = tmp_beside(b);
            std::fs::copy(a, &tmp).map_err(|e| format!("cannot copy {} to {}: {e}", a.display(), b.display()))?;
            std::fs::rename(&tmp, b).map_err(|e| format!("cannot write {}: {e}", b.display()))
        }
        (_, Loc::Remote(t)) => copy_to(from, t).map(|_| ()),
        (Loc::Remote(t), Loc::Local(b)) => copy::download(t, b),
    }
}

fn tmp_beside(p: &Path) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".flux-tmp.{}", std::process::id()));
    p.with_file_name(name)
}

fn open(target: &str) -> Result<(&'static Remote, Arc<dyn ObjectStore>, Uri<'_>), String> {
    let u = parse(target).ok_or_else(|| format!("{target}: not a remote target"))?;
    let r = remote()?;
    let store = r.store(&u)?;
    Ok((r, store, u))
}

/// Every object under a folder key (one LIST, paged by the server), each with its key
/// relative to the folder. No folder there is an empty list.
async fn list_under(
    store: &dyn ObjectStore,
    key: &str,
) -> object_store::Result<Vec<(String, object_store::ObjectMeta)>> {
    REQUESTS.list.fetch_add(1, Relaxed);
    let prefix = ObjPath::from(key.trim_end_matches('/'));
    let objects: Vec<object_store::ObjectMeta> = match store.list(Some(&prefix)).try_collect().await {
        Ok(v) => v,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(objects
        .into_iter()
        .map(|m| {
            let rel = m.location.as_ref().strip_prefix(prefix.as_ref()).unwrap_or(m.location.as_ref());
            (rel.trim_start_matches('/').to_string(), m)
        })
        .collect())
}

/// The last part of a target's path (`s3://b/x/y.csv` → `y.csv`), for local copies and
/// staging files; `out` for a bare store root.
pub fn file_name(target: &str) -> &str {
    target.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty() && !n.contains(':')).unwrap_or("out")
}

/// Put a local file or folder at a remote target and stat it there. A file of up to
/// [`PART_SIZE`] bytes is one PUT; a larger one a multipart upload (invisible until it
/// completes). A folder replaces the objects under the prefix: new ones first, then the
/// ones the folder no longer has are deleted.
pub fn upload(local: &Path, target: &str) -> Result<Meta, String> {
    let meta = std::fs::metadata(local).map_err(|e| format!("cannot read {}: {e}", local.display()))?;
    if meta.is_dir() {
        return upload_folder(local, target);
    }
    let (r, store, u) = open(target)?;
    let path = obj_path(u.key);
    let (put, hash) = r.rt.block_on(put_file(&*store, local, &path, target, r.part_size(&u)))?;
    let inode = identity(put.e_tag.as_deref(), put.version.as_deref());
    let stat = if inode != 0 {
        Meta { size: meta.len(), mtime_ns: 0, inode, is_dir: false }
    } else {
        REQUESTS.head.fetch_add(1, Relaxed);
        to_meta(&r.rt.block_on(store.head(&path)).map_err(|e| err(target, e))?)
    };
    content::record(target, &stat, hash);
    Ok(stat)
}

/// Put a local file at `path`: one PUT up to `part` bytes, else a multipart upload in parts
/// of `part` bytes. Returns the store's answer and the blake3 of the bytes sent.
async fn put_file(
    store: &dyn ObjectStore,
    local: &Path,
    path: &ObjPath,
    target: &str,
    part: usize,
) -> Result<(object_store::PutResult, Hash), String> {
    let rd = |e: std::io::Error| format!("cannot read {}: {e}", local.display());
    let mut f = std::fs::File::open(local).map_err(rd)?;
    let size = f.metadata().map_err(rd)?.len();
    let mut hash = content::Hashing::default();
    if size <= part as u64 {
        let mut buf = Vec::with_capacity(size as usize);
        f.read_to_end(&mut buf).map_err(rd)?;
        hash.update(&buf);
        REQUESTS.put.fetch_add(1, Relaxed);
        let put = store.put(path, PutPayload::from(buf)).await.map_err(|e| err(target, e))?;
        return Ok((put, hash.finish()));
    }
    REQUESTS.put.fetch_add(1, Relaxed);
    let up = store.put_multipart(path).await.map_err(|e| err(target, e))?;
    let mut w = WriteMultipart::new_with_chunk_size(up, part);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = w.abort().await;
                return Err(rd(e));
            }
        };
        if let Err(e) = w.wait_for_capacity(2).await {
            // No parts left behind on the server.
            let _ = w.abort().await;
            return Err(err(target, e));
        }
        hash.update(&buf[..n]);
        w.write(&buf[..n]);
    }
    REQUESTS.put.fetch_add(size.div_ceil(part as u64), Relaxed);
    let put = w.finish().await.map_err(|e| err(target, e))?;
    Ok((put, hash.finish()))
}

fn upload_folder(local: &Path, target: &str) -> Result<Meta, String> {
    let (r, store, u) = open(target)?;
    let base = u.key.trim_end_matches('/');
    let mut keep = std::collections::HashSet::new();
    for entry in walkdir::WalkDir::new(local).sort_by_file_name() {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", local.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(local).unwrap_or(entry.path()).to_string_lossy().into_owned();
        let key = if base.is_empty() { rel.clone() } else { format!("{base}/{rel}") };
        let path = ObjPath::from(key.as_str());
        let uri = format!("{}/{rel}", target.trim_end_matches('/'));
        let (put, hash) = r.rt.block_on(put_file(&*store, entry.path(), &path, &uri, r.part_size(&u)))?;
        // The file's content identity, when the store's answer names the new version (no
        // HEAD per file to learn it otherwise: that file keeps its store identity).
        let inode = identity(put.e_tag.as_deref(), put.version.as_deref());
        if inode != 0 {
            let size = entry.metadata().map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?.len();
            content::record(&uri, &Meta { size, mtime_ns: 0, inode, is_dir: false }, hash);
        }
        keep.insert(path.to_string());
    }
    let old = r.rt.block_on(list_under(&*store, base)).map_err(|e| err(target, e))?;
    for (_, m) in old {
        if !keep.contains(m.location.as_ref()) {
            REQUESTS.delete.fetch_add(1, Relaxed);
            r.rt.block_on(store.delete(&m.location)).map_err(|e| err(target, e))?;
        }
    }
    Ok(FOLDER)
}

/// Delete a remote object, or every object under a folder target; nothing there is fine.
pub fn remove(target: &str) -> Result<(), String> {
    if let Some(why) = crate::guard::check_remote(target) {
        return Err(format!("flux refuses to delete {target}: it is {}", why.what()));
    }
    let (r, store, u) = open(target)?;
    let key = u.key.trim_end_matches('/');
    r.rt.block_on(async {
        REQUESTS.delete.fetch_add(1, Relaxed);
        match store.delete(&ObjPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(err(target, e)),
        }
        let under = list_under(&*store, key).await.map_err(|e| err(target, e))?;
        for (_, m) in under {
            REQUESTS.delete.fetch_add(1, Relaxed);
            match store.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(err(target, e)),
            }
        }
        Ok(())
    })
}

/// What is at and under a remote target before a `stage = false` attempt: each object's
/// full key and what identifies its version (ETag, version, size, modification time).
pub fn snapshot(target: &str) -> Result<HashMap<String, String>, String> {
    let (r, store, u) = open(target)?;
    let key = u.key.trim_end_matches('/');
    let ident = |m: &object_store::ObjectMeta| format!("{:?} {:?} {} {}", m.e_tag, m.version, m.size, m.last_modified);
    r.rt.block_on(async {
        let mut out = HashMap::new();
        REQUESTS.head.fetch_add(1, Relaxed);
        match store.head(&ObjPath::from(key)).await {
            Ok(m) => {
                out.insert(m.location.to_string(), ident(&m));
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(err(target, e)),
        }
        for (_, m) in list_under(&*store, key).await.map_err(|e| err(target, e))? {
            out.insert(m.location.to_string(), ident(&m));
        }
        Ok(out)
    })
}

/// After a failed `stage = false` attempt, delete what it wrote at or under `target`,
/// judged against the [`snapshot`] taken before it: objects that were not there, and the
/// object at the target itself if it changed. Objects under a folder that were there
/// before are left, changed or not (as for local folders).
pub fn remove_new(target: &str, before: &HashMap<String, String>) -> Result<(), String> {
    if let Some(why) = crate::guard::check_remote(target) {
        return Err(format!("flux refuses to delete {target}: it is {}", why.what()));
    }
    let now = snapshot(target)?;
    let (r, store, u) = open(target)?;
    let own = ObjPath::from(u.key.trim_end_matches('/')).to_string();
    r.rt.block_on(async {
        for (k, id) in &now {
            let new = match before.get(k) {
                None => true,
                Some(was) => *k == own && was != id,
            };
            if !new {
                continue;
            }
            REQUESTS.delete.fetch_add(1, Relaxed);
            match store.delete(&ObjPath::from(k.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(err(target, e)),
            }
        }
        Ok(())
    })
}

/// Whether a target exists, local or remote (`flux status`, `flux clear`, `--only`).
pub fn exists(abs: &Path, target: &str) -> bool {
    if is_remote(target) { matches!(stat(target), Ok(Some(_))) } else { abs.exists() }
}

/// [`exists`] for many targets (where each is on disk, the target): the remote ones
/// stat'ed together by [`stat_many`] as a build stats them, one LIST per folder
/// (`flux status`, `flux clear`).
pub fn exists_many(targets: &[(PathBuf, &str)]) -> Vec<bool> {
    let remote: Vec<&str> = targets.iter().map(|(_, t)| *t).filter(|t| is_remote(t)).collect();
    let mut stats = if remote.is_empty() { Vec::new() } else { stat_many(&remote) }.into_iter();
    targets
        .iter()
        .map(|(abs, t)| if is_remote(t) { matches!(stats.next(), Some(Ok(Some(_)))) } else { abs.exists() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_split_into_store_and_key() {
        let u = parse("s3://bucket/a/b.csv").unwrap();
        assert_eq!((u.scheme, u.authority, u.key), ("s3", "bucket", "a/b.csv"));
        assert_eq!(u.root(), "s3://bucket");
        let u = parse("hdfs://127.0.0.1:9000/data/x/").unwrap();
        assert_eq!((u.authority, u.key), ("127.0.0.1:9000", "data/x/"));
        assert!(parse("data/x.csv").is_none());
        assert!(parse("ftp://host/x").is_none());
        assert_eq!(scheme_of("ftp://host/x"), Some("ftp"));
        assert!(is_remote("gs://b/k") && is_remote("az://c/k"));
    }

    #[test]
    fn store_options_are_checked_per_scheme() {
        assert!(check_option("s3", "endpoint").is_ok());
        assert!(check_option("s3", "allow_http").is_ok());
        assert!(check_option("s3", "AWS_REGION").is_ok());
        assert!(check_option("s3", "endpont").is_err());
        assert!(check_option("gs", "service_account").is_ok());
        assert!(check_option("gs", "region").is_err());
        assert!(check_option("az", "account_name").is_ok());
        assert!(check_option("az", "bucket_nam").is_err());
        assert!(check_option("hdfs", "dfs.ha.namenodes.ns").is_ok());
    }

    #[test]
    fn a_gcs_emulator_host_is_a_base_url() {
        assert_eq!(gcs_emulator(Some("127.0.0.1:4443".into())).as_deref(), Some("http://127.0.0.1:4443"));
        assert_eq!(gcs_emulator(Some("https://gcs.local/".into())).as_deref(), Some("https://gcs.local"));
        assert_eq!(gcs_emulator(Some(" ".into())), None);
        assert_eq!(gcs_emulator(None), None);
    }

    #[test]
    fn gcs_and_azure_stores_are_made_from_urls_and_settings() {
        let r = remote().unwrap();
        let gs = r.build(&parse("gs://bkt/x").unwrap(), "gs://bkt", &[("skip_signature".into(), "true".into())]);
        assert!(gs.is_ok(), "{:?}", gs.err());
        let bad = r.build(&parse("gs://bkt/x").unwrap(), "gs://bkt", &[("region".into(), "x".into())]);
        assert!(bad.err().unwrap().contains("unknown setting `region`"));
        // Azure with an emulator-style account needs no network to be built.
        let az = r.build(
            &parse("az://container/x").unwrap(),
            "az://container",
            &[("account_name".into(), "devstoreaccount1".into()), ("use_emulator".into(), "true".into())],
        );
        assert!(az.is_ok(), "{:?}", az.err());
        let bad = r.build(&parse("az://container/x").unwrap(), "az://container", &[("nope".into(), "1".into())]);
        assert!(bad.err().unwrap().contains("unknown setting `nope`"));
    }

    #[test]
    fn part_sizes_are_checked_and_kept_from_the_client() {
        assert!(check_option("s3", "part_size").is_ok() && check_option("hdfs", "part_size").is_ok());
        assert!(check_value("part_size", "16MiB").is_ok());
        assert!(check_value("PART_SIZE", "5M").is_ok());
        assert!(check_value("part_size", "4MiB").unwrap_err().contains("from 5MiB to 4000MiB"));
        assert!(check_value("part_size", "5G").is_err());
        assert!(check_value("part_size", "big").unwrap_err().contains("not a valid size"));
        assert!(check_value("region", "anything").is_ok());
        let r = Remote {
            rt: tokio::runtime::Builder::new_current_thread().build().unwrap(),
            configs: vec![StoreConfig {
                root: "s3://b".into(),
                options: vec![("part_size".into(), "16MiB".into()), ("skip_signature".into(), "true".into())],
            }],
            stores: Mutex::new(HashMap::new()),
        };
        assert_eq!(r.part_size(&parse("s3://b/k").unwrap()), 16 << 20);
        assert_eq!(r.part_size(&parse("s3://other/k").unwrap()), PART_SIZE);
        // The client never sees it (object_store would refuse an unknown key).
        assert!(r.store(&parse("s3://b/k").unwrap()).is_ok());
    }

    #[test]
    fn signatures_never_reach_messages() {
        let m = clean("Error performing GET http://127.0.0.1:9/b/k?X-Amz-Signature=abc in 1ms");
        assert_eq!(m, "Error performing GET http://127.0.0.1:9/b/k in 1ms");
    }
}
