//! The download cache under `<state>/cache` (SPEC §4): remote inputs fetched for staged
//! tasks (see [`crate::store::cache_path`]), bounded by `[flux] cache_max`.
//!
//! Each entry is a folder `<cache>/<32 hex>/` holding the download (`<file name>`) and a
//! marker file, [`MARKER`], which is three things at once:
//! - **the lease**: a task that reads the entry holds a shared `flock` on the marker from
//!   the moment its job is made (before the download) until the job is gone, whichever
//!   process runs it; eviction takes an exclusive lock without waiting and skips an entry
//!   it cannot lock. A lock dies with its process, so a `kill -9`'d build leaves none.
//! - **the use time**: the marker's modification time, set by flux when a lease is taken
//!   and when it is released (never the file system's atime). Eviction goes from the
//!   least recently used entry up.
//! - **what the entry holds**: the input's URI, written when the marker is made.
//!
//! An evictor deletes the download, then the marker, then the folder, all while it holds
//! the exclusive lock; a lease that waited on the old marker sees it is no longer the one
//! at the path, and takes a lease on the new one (the task downloads the input again).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// The lease, use time and URI of an entry (see the module's documentation).
pub const MARKER: &str = ".flux-use";

/// The default `cache_max`: this share (in percent) of the space the state folder's file
/// system has free, the cache counted as free.
pub const DEFAULT_SHARE: u64 = 10;

/// Set when a lease is taken: this process ran (or prepared) a task that reads the cache.
static USED: AtomicBool = AtomicBool::new(false);

/// The cache folder of a state folder.
pub fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("cache")
}

/// Whether a lease was taken since the last call (and clear it): what makes a build end
/// with an eviction.
pub fn take_used() -> bool {
    USED.swap(false, Ordering::SeqCst)
}

/// A task's hold on a cache entry: while any clone lives, the entry is not evicted.
#[derive(Debug, Clone)]
pub struct Lease(#[allow(dead_code)] Arc<Held>);

#[derive(Debug)]
struct Held {
    file: File,
}

impl Drop for Held {
    fn drop(&mut self) {
        // The last use is when the reader is done with it; the lock goes with the file.
        let _ = self.file.set_modified(SystemTime::now());
    }
}

/// Same file as the one at `path` now (it was not deleted or replaced meanwhile).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Take a lease on the entry that holds `local` (a path from [`crate::store::cache_path`])
/// for the input `uri`: the entry's folder and marker are made if missing, and its use
/// time set to now. Waits while an eviction of that entry is under way (it is quick).
pub fn lease(local: &Path, uri: &str) -> Result<Lease, String> {
    let entry = local.parent().ok_or_else(|| format!("{}: not in the cache", local.display()))?;
    let marker = entry.join(MARKER);
    let cannot = |e: std::io::Error| format!("cannot use the cache entry {}: {e}", entry.display());
    // Each round loses only to an eviction that deleted the marker under us.
    for _ in 0..100 {
        std::fs::create_dir_all(entry).map_err(cannot)?;
        let file = match std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&marker) {
            Ok(f) => f,
            // The folder went away between the two calls (an eviction): again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(cannot(e)),
        };
        file.lock_shared().map_err(cannot)?;
        if !same_file(&file, &marker) {
            continue;
        }
        if file.metadata().map_err(cannot)?.len() == 0 {
            // Every writer writes the same bytes: no harm if two do.
            let _ = (&file).write_all(format!("{uri}\n").as_bytes());
        }
        let _ = file.set_modified(SystemTime::now());
        USED.store(true, Ordering::SeqCst);
        return Ok(Lease(Arc::new(Held { file })));
    }
    Err(format!("cannot use the cache entry {}: it keeps being evicted", entry.display()))
}

/// One entry of the cache, as `flux cache` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The folder's name (32 hex digits).
    pub key: String,
    /// The input's URI (from the marker), when known.
    pub input: Option<String>,
    /// Bytes of every file in the entry.
    pub size: u64,
    /// The marker's modification time (the folder's when it has none).
    pub last_used: SystemTime,
    /// A task holds a lease on it now.
    pub in_use: bool,
}

/// What the cache holds, least recently used first. No cache folder: nothing.
pub fn entries(root: &Path) -> Result<Vec<Entry>, String> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read the cache {}: {e}", root.display())),
    };
    let mut out = Vec::new();
    for item in rd {
        let item = item.map_err(|e| format!("cannot read the cache {}: {e}", root.display()))?;
        let path = item.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if !meta.is_dir() {
            continue;
        }
        let mut size = 0;
        for f in walkdir::WalkDir::new(&path).follow_links(false).into_iter().flatten() {
            if let Ok(m) = f.metadata()
                && !m.is_dir()
            {
                size += m.len();
            }
        }
        let marker = path.join(MARKER);
        let (input, last_used, in_use) = match File::open(&marker) {
            Ok(f) => {
                let text = std::fs::read_to_string(&marker).unwrap_or_default();
                let input = Some(text.trim().to_string()).filter(|s| !s.is_empty());
                let when = f.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
                let in_use = match f.try_lock() {
                    Ok(()) => {
                        let _ = f.unlock();
                        false
                    }
                    Err(_) => true,
                };
                (input, when, in_use)
            }
            Err(_) => (None, meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), false),
        };
        out.push(Entry { key: item.file_name().to_string_lossy().into_owned(), input, size, last_used, in_use });
    }
    out.sort_by(|a, b| a.last_used.cmp(&b.last_used).then_with(|| a.key.cmp(&b.key)));
    Ok(out)
}

/// What a prune did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// The limit it pruned down to.
    pub max: u64,
    pub removed: Vec<Entry>,
    /// Entries it would have removed but a task reads them now.
    pub in_use: Vec<Entry>,
    /// What is left: entries and bytes.
    pub left: usize,
    pub left_size: u64,
}

/// Evict least recently used entries until the cache holds at most `max` bytes; an entry
/// a task reads now stays (and is listed in [`Pruned::in_use`]).
pub fn prune(root: &Path, max: u64) -> Result<Pruned, String> {
    let all = entries(root)?;
    let mut total: u64 = all.iter().map(|e| e.size).sum();
    let mut out = Pruned { max, ..Default::default() };
    let mut left = all.len();
    for e in all {
        if total <= max {
            break;
        }
        let dir = root.join(&e.key);
        match evict(&dir)? {
            true => {
                total -= e.size;
                left -= 1;
                out.removed.push(e);
            }
            false => out.in_use.push(e),
        }
    }
    out.left = left;
    out.left_size = total;
    Ok(out)
}

/// Delete one entry if no task holds a lease on it: whether it was deleted.
fn evict(dir: &Path) -> Result<bool, String> {
    let cannot = |e: std::io::Error| format!("cannot evict {}: {e}", dir.display());
    let marker = dir.join(MARKER);
    // An entry without a marker (made by an older flux) gets one: a lease taken from now
    // on then meets this lock.
    let file = match std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&marker) {
        Ok(f) => f,
        // Gone meanwhile (another prune).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(cannot(e)),
    };
    if file.try_lock().is_err() || !same_file(&file, &marker) {
        return Ok(false);
    }
    let items = std::fs::read_dir(dir).map_err(cannot)?;
    for item in items {
        let item = item.map_err(cannot)?;
        if item.file_name() != MARKER {
            crate::guard::remove_owned(&item.path(), dir).map_err(cannot)?;
        }
    }
    // The marker last, still locked: a lease waiting on it finds it gone and starts over.
    std::fs::remove_file(&marker).map_err(cannot)?;
    // Not empty if a lease made a new marker meanwhile: that entry lives on.
    let _ = std::fs::remove_dir(dir);
    drop(file);
    Ok(true)
}

/// The `cache_max` in force: the Fluxfile's, else [`DEFAULT_SHARE`] percent of the free
/// space of the state folder's file system plus what the cache holds (10 GiB if the
/// file system cannot be asked).
pub fn max_bytes(configured: Option<u64>, state_dir: &Path, cache_size: u64) -> u64 {
    if let Some(m) = configured {
        return m;
    }
    match free_space(state_dir) {
        Some(free) => free.saturating_add(cache_size) / 100 * DEFAULT_SHARE,
        None => 10 << 30,
    }
}

/// Bytes an unprivileged user may still write on the file system of `path` (or of its
/// nearest existing parent).
fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the struct it is given; `c` is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// The state of the cache for `flux cache`: its folder, entries (least recently used
/// first) and the limit in force (`configured`: `[flux] cache_max`).
pub struct Report {
    pub root: PathBuf,
    pub entries: Vec<Entry>,
    pub max: u64,
    pub configured: bool,
}

impl Report {
    pub fn read(state_dir: &Path, configured: Option<u64>) -> Result<Report, String> {
        let root = root(state_dir);
        let entries = entries(&root)?;
        let size = entries.iter().map(|e| e.size).sum();
        let max = max_bytes(configured, state_dir, size);
        Ok(Report { root, entries, max, configured: configured.is_some() })
    }

    pub fn size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    fn max_words(&self) -> String {
        if self.configured {
            format!("cache_max {}", human(self.max))
        } else {
            format!("cache_max {}, {DEFAULT_SHARE}% of the free disk", human(self.max))
        }
    }

    /// `flux cache`: a line on the whole, then one per entry, most recently used last.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{}: {}, {} ({})\n",
            self.root.display(),
            entries_word(self.entries.len()),
            human(self.size()),
            self.max_words()
        );
        for e in &self.entries {
            s.push_str(&format!(
                "  {}  {:>10}  {}{}\n",
                when(e.last_used),
                human(e.size),
                e.input.as_deref().unwrap_or(&e.key),
                if e.in_use { "  (in use)" } else { "" }
            ));
        }
        s
    }

    /// `flux cache --output json`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.root.to_string_lossy(),
            "size": self.size(),
            "cache_max": self.max,
            "cache_max_configured": self.configured,
            "entries": self.entries.iter().map(entry_json).collect::<Vec<_>>(),
        })
    }
}

fn entry_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "key": e.key,
        "input": e.input,
        "size": e.size,
        "last_used": e.last_used.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        "in_use": e.in_use,
    })
}

fn entries_word(n: usize) -> String {
    if n == 1 { "1 entry".into() } else { format!("{n} entries") }
}

/// A use time as `flux history` prints times (UTC).
fn when(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

impl Pruned {
    /// `pruned 2 entries (2.0 KiB); 1 entry in use kept; 1 entry, 1.0 KiB left (cache_max …)`.
    pub fn text(&self) -> String {
        let removed: u64 = self.removed.iter().map(|e| e.size).sum();
        let mut s = format!("pruned {} ({})", entries_word(self.removed.len()), human(removed));
        if !self.in_use.is_empty() {
            s.push_str(&format!("; kept {} a running task reads", entries_word(self.in_use.len())));
        }
        s.push_str(&format!(
            "; {} left, {} (limit {})",
            entries_word(self.left),
            human(self.left_size),
            human(self.max)
        ));
        s
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "removed": self.removed.iter().map(entry_json).collect::<Vec<_>>(),
            "in_use": self.in_use.iter().map(entry_json).collect::<Vec<_>>(),
            "left": self.left,
            "size": self.left_size,
            "limit": self.max,
        })
    }
}

/// The eviction at the end of a build that read the cache: down to `cache_max` (or the
/// default). `None` when no task of this process took a lease since the last call.
pub fn after_build(state_dir: &Path, configured: Option<u64>) -> Option<Result<Pruned, String>> {
    if !take_used() {
        return None;
    }
    Some(prune_to_limit(state_dir, configured))
}

/// `flux cache prune`: down to `cache_max` (or the default).
pub fn prune_to_limit(state_dir: &Path, configured: Option<u64>) -> Result<Pruned, String> {
    let root = root(state_dir);
    let max = match configured {
        Some(m) => m,
        None => {
            let size = entries(&root)?.iter().map(|e| e.size).sum();
            max_bytes(None, state_dir, size)
        }
    };
    prune(&root, max)
}

/// `1.5 MiB`: a size for people.
pub fn human(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, key: &str, bytes: usize) -> PathBuf {
        let local = root.join(key).join("x.csv");
        let lease = lease(&local, &format!("s3://b/{key}.csv")).unwrap();
        std::fs::write(&local, vec![b'x'; bytes]).unwrap();
        drop(lease);
        local
    }

    #[test]
    fn least_recently_used_entries_go_first_and_held_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let a = put(&root, "aa", 100);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = put(&root, "bb", 100);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let c = put(&root, "cc", 100);
        let listed = entries(&root).unwrap();
        assert_eq!(listed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["aa", "bb", "cc"]);
        assert_eq!(listed[0].input.as_deref(), Some("s3://b/aa.csv"));
        assert!(listed[0].size > 100 && !listed[0].in_use);
        // `a` is read again, `b` is held.
        drop(lease(&a, "s3://b/aa.csv").unwrap());
        let held = lease(&b, "s3://b/bb.csv").unwrap();
        assert!(entries(&root).unwrap().iter().any(|e| e.key == "bb" && e.in_use));
        let p = prune(&root, 50).unwrap();
        assert_eq!(p.removed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["cc", "aa"]);
        assert_eq!(p.in_use.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["bb"]);
        assert!(b.exists() && !a.exists() && !c.exists() && !root.join("cc").exists());
        drop(held);
        let p = prune(&root, 0).unwrap();
        assert_eq!(p.removed.len(), 1);
        assert_eq!((p.left, p.left_size), (0, 0));
        assert!(entries(&root).unwrap().is_empty());
    }

    #[test]
    fn a_lease_on_an_evicted_entry_makes_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let a = put(&root, "aa", 10);
        prune(&root, 0).unwrap();
        let held = lease(&a, "s3://b/aa.csv").unwrap();
        assert!(root.join("aa").join(MARKER).exists());
        assert!(!evict(&root.join("aa")).unwrap(), "held");
        drop(held);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(10 << 30), "10.0 GiB");
    }
}
