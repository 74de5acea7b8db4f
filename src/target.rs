//! Targets on local disk: existence and stat, content digests with a cache keyed by
//! (path, size, mtime in ns, inode), directory digests over their files, and the staging
//! of outputs (written aside, moved into place only when every command succeeded).
//!
//! The digest cache follows the "racy git" rule (SPEC §5): an entry is trusted only if the
//! file's mtime is older than the moment it was hashed by more than the filesystem clock's
//! coarseness, so an edit within the same clock tick is never missed. A file hashed inside
//! that margin (an output hashed right after its task wrote it) is read once more when the
//! build writes its records, if its margin has passed by then ([`Digests::take_settled`]):
//! the entry written is then trusted, and the next build reads nothing. Remote stores
//! (S3, HDFS) will implement the same operations behind these functions.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::state::{CachedDigest, Hash};

/// What a stat says about a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub is_dir: bool,
}

/// Stat a local path (following symlinks); `None` when it does not exist.
pub fn stat(path: &Path) -> Option<Meta> {
    let m = std::fs::metadata(path).ok()?;
    Some(Meta {
        size: m.size(),
        mtime_ns: m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec()),
        inode: m.ino(),
        is_dir: m.is_dir(),
    })
}

/// Stat many targets (relative to `base` unless absolute) in parallel. Each worker keeps
/// a handle on the folders it has seen and stats names relative to them (`fstatat`), so
/// the kernel walks one path component per file instead of the whole path.
pub fn stat_many(base: &Path, targets: &[Box<str>]) -> Vec<Option<Meta>> {
    use rayon::prelude::*;
    // Starting the thread pool costs more than a few thousand stats.
    if targets.len() < 8192 {
        let mut h = DirHandles { base, dirs: HashMap::new() };
        return targets.iter().map(|t| h.stat(t)).collect();
    }
    targets
        .par_iter()
        .with_min_len(1024)
        .map_init(|| DirHandles { base, dirs: HashMap::new() }, |h, t| h.stat(t))
        .collect()
}

/// Stats targets on a thread of its own while planning is still naming them, so that
/// the stats of a large plan cost no time after it (planning runs on one core).
/// Feed it each target in id order with [`StatFeed::push`]; [`StatFeed::finish`] gives
/// their stats in that order, or `None` when a target is remote (those are stat'ed in
/// batches by the build) or the thread could not start.
pub struct StatFeed {
    /// Targets not yet sent, one after another, and where each ends.
    batch: Batch,
    tx: Option<std::sync::mpsc::Sender<Batch>>,
    handle: Option<std::thread::JoinHandle<Option<Vec<Option<Meta>>>>>,
}

/// Targets written one after another into one buffer (one allocation per batch rather
/// than per target), with the offset where each ends.
#[derive(Default)]
struct Batch {
    text: String,
    ends: Vec<usize>,
}

impl Batch {
    fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(a, b)| &self.text[a..b])
    }
}

impl StatFeed {
    const BATCH: usize = 2048;

    pub fn start(base: PathBuf) -> StatFeed {
        let (tx, rx) = std::sync::mpsc::channel::<Batch>();
        let handle = std::thread::Builder::new()
            .name("stat".into())
            .spawn(move || {
                let mut h = DirHandles { base: &base, dirs: HashMap::new() };
                let mut metas = Vec::new();
                let mut remote = false;
                for batch in rx {
                    if remote {
                        continue;
                    }
                    for t in batch.iter() {
                        if crate::store::is_remote(t) {
                            remote = true;
                            break;
                        }
                        metas.push(h.stat(t));
                    }
                }
                (!remote).then_some(metas)
            })
            .ok();
        StatFeed { batch: Batch::default(), tx: handle.is_some().then_some(tx), handle }
    }

    pub fn push(&mut self, target: &str) {
        if self.tx.is_none() {
            return;
        }
        self.batch.text.push_str(target);
        self.batch.ends.push(self.batch.text.len());
        if self.batch.ends.len() == Self::BATCH {
            self.send();
        }
    }

    fn send(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if let Some(tx) = &self.tx
            && tx.send(batch).is_err()
        {
            self.tx = None;
        }
    }

    pub fn finish(mut self) -> Option<Vec<Option<Meta>>> {
        self.send();
        self.tx = None;
        self.handle.take()?.join().ok().flatten()
    }
}

struct DirHandles<'a> {
    base: &'a Path,
    dirs: HashMap<String, Option<std::os::fd::OwnedFd>>,
}

impl DirHandles<'_> {
    fn stat(&mut self, target: &str) -> Option<Meta> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;
        let full = |t: &str| {
            let p = Path::new(t);
            if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
        };
        let Some((dir, name)) = target.rsplit_once('/') else { return stat(&full(target)) };
        if name.is_empty() || name == "." || name == ".." {
            return stat(&full(target));
        }
        let base = self.base;
        let fd = self.dirs.entry(dir.to_string()).or_insert_with(|| {
            let d = if dir.is_empty() {
                PathBuf::from("/")
            } else if Path::new(dir).is_absolute() {
                PathBuf::from(dir)
            } else {
                base.join(dir)
            };
            let c = std::ffi::CString::new(d.as_os_str().as_bytes()).ok()?;
            // SAFETY: a valid NUL-terminated path; the fd is owned by the OwnedFd below.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            // SAFETY: fd is a fresh descriptor we own.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        });
        let Some(fd) = fd else {
            // No such folder (then no such file), or a path the kernel resolves differently.
            return stat(&full(target));
        };
        let cname = std::ffi::CString::new(name).ok()?;
        // SAFETY: st is written by fstatat before it is read; fd and cname are valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::fstatat(fd.as_raw_fd(), cname.as_ptr(), &mut st, 0) };
        if r != 0 {
            return None;
        }
        Some(Meta {
            size: st.st_size as u64,
            mtime_ns: (st.st_mtime as i64).saturating_mul(1_000_000_000).saturating_add(st.st_mtime_nsec as i64),
            inode: st.st_ino as u64,
            is_dir: (st.st_mode & libc::S_IFMT) == libc::S_IFDIR,
        })
    }
}

/// The filesystem clock may lag the system clock by a tick; entries hashed closer than
/// this to the file's mtime are re-hashed next time.
pub const RACY_MARGIN_NS: i64 = 50_000_000;

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Whether a digest entry can be trusted for as long as its file keeps its stat: the file
/// was hashed more than the racy margin after its mtime, so any later write gives it
/// another mtime.
fn trusted(c: &CachedDigest) -> bool {
    c.mtime_ns < c.hashed_at_ns - RACY_MARGIN_NS
}

/// Whether a digest entry was taken of the file as `meta` describes it now.
fn same_file(size: u64, mtime_ns: i64, inode: u64, meta: &Meta) -> bool {
    size == meta.size && mtime_ns == meta.mtime_ns && inode == meta.inode
}

/// Content digests of local targets, through the cache in the state DB.
pub struct Digests {
    /// Where cached entries come from; read on first use: a no-op build whose tasks all
    /// pass the quick check never needs it.
    source: Mutex<Source>,
    /// Entries computed in this process, to be written back to the state DB.
    fresh: Mutex<Vec<(String, CachedDigest)>>,
    /// Every digest computed in this process: a file hashed as one task's output is not
    /// read again for each task that takes it as input. No racy-git margin here: within
    /// one build a target's stat is taken once, so a second read would pair newer content
    /// with the same old stat; the margin still guards the entries written back.
    seen: Mutex<Seen>,
    /// Entries of files hashed inside the racy margin of their mtime, not written yet:
    /// [`Digests::take_settled`] reads them again once the margin has passed.
    unsettled: Mutex<Vec<Unsettled>>,
    /// Files actually read (a no-op build reads none).
    pub reads: std::sync::atomic::AtomicU64,
    /// Files read a second time by [`Digests::take_settled`], so that their entries are
    /// trusted (not counted in `reads`).
    pub rereads: std::sync::atomic::AtomicU64,
    /// When this build started (ns since the epoch): a file modified since is not looked
    /// up in the state DB (see `cached`).
    since_ns: i64,
}

/// Digests computed in this process, keyed by a 64-bit hash of the key rather than the
/// key itself (half the memory on a build that hashes every output). Two keys with the
/// same hash cannot mix up digests: an entry is used only for a file with its size, mtime
/// and inode, which two paths share only when they are the same file.
struct Seen {
    keys: std::hash::RandomState,
    map: HashMap<u64, SeenDigest, rustc_hash::FxBuildHasher>,
}

struct SeenDigest {
    size: u64,
    mtime_ns: i64,
    inode: u64,
    digest: Hash,
    /// The digest is known to hold for as long as the file keeps this stat: hashed outside
    /// the racy margin, or read again with the same result once the margin had passed.
    settled: bool,
}

/// A file hashed inside the racy margin of its mtime, and where it is.
struct Unsettled {
    key: String,
    abs: PathBuf,
    entry: CachedDigest,
}

impl Seen {
    fn get(&self, key: &str, meta: &Meta) -> Option<Hash> {
        use std::hash::BuildHasher;
        let c = self.map.get(&self.keys.hash_one(key))?;
        same_file(c.size, c.mtime_ns, c.inode, meta).then_some(c.digest)
    }

    fn insert(&mut self, key: &str, c: &CachedDigest, settled: bool) {
        use std::hash::BuildHasher;
        let entry = SeenDigest { size: c.size, mtime_ns: c.mtime_ns, inode: c.inode, digest: c.digest, settled };
        self.map.insert(self.keys.hash_one(key), entry);
    }

    /// Whether `key`'s digest in this process holds for the file as `meta` describes it:
    /// settled, or not computed here (a trusted cache entry, or a remote object's).
    fn settled(&self, key: &str, meta: &Meta) -> bool {
        use std::hash::BuildHasher;
        match self.map.get(&self.keys.hash_one(key)) {
            None => true,
            Some(c) => c.settled && same_file(c.size, c.mtime_ns, c.inode, meta),
        }
    }
}

/// The digest cache as far as it has been opened.
enum Source {
    /// The state DB's folder, not opened yet.
    Unread(PathBuf),
    /// Entries are looked up one at a time. An incremental build needs a few thousand of a
    /// large cache and the build after a full one (which re-checks every output hashed
    /// inside the racy margin) most of it: holding all of it in memory cost as much as the
    /// build's own records, for no gain in time (an indexed lookup takes microseconds,
    /// reading the file it spares tens of them).
    ///
    /// The lookups read in one transaction (`reading`), ended at each write of the build's
    /// records ([`Digests::release`]): the build's own writes on its other connection
    /// would otherwise empty this one's page cache before each lookup (on an incremental
    /// build that doubled the lookups' cost), while a transaction held for the whole build
    /// would keep the write-ahead log from being recycled.
    Db { db: crate::state::StateDb, reading: bool },
    /// No state DB, or it cannot be read: every file is hashed.
    None,
}

impl Digests {
    /// A cache read from `<state_dir>/state.db` when first needed (empty if there is none),
    /// for a build that started at `since_ns`.
    pub fn lazy(state_dir: PathBuf, since_ns: i64) -> Digests {
        Digests {
            since_ns,
            source: Mutex::new(Source::Unread(state_dir)),
            fresh: Mutex::new(Vec::new()),
            seen: Mutex::new(Seen { keys: Default::default(), map: Default::default() }),
            unsettled: Mutex::new(Vec::new()),
            reads: Default::default(),
            rereads: Default::default(),
        }
    }

    /// The cached entry for `key`. An unreadable cache only costs re-hashing: the state DB
    /// was opened already, so its errors were reported there.
    fn entry(&self, key: &str) -> Option<CachedDigest> {
        let mut source = self.source.lock().unwrap_or_else(|e| e.into_inner());
        if let Source::Unread(dir) = &*source {
            *source = match crate::state::StateDb::open_existing(dir) {
                Ok(Some(db)) => Source::Db { db, reading: false },
                _ => Source::None,
            };
        }
        let Source::Db { db, reading } = &mut *source else { return None };
        if !*reading {
            *reading = db.begin_read().is_ok();
        }
        db.digest_entry(key).ok().flatten()
    }

    /// End the lookups' read transaction (the next lookup starts another): called when the
    /// build writes its records, so that the write-ahead log can be recycled.
    pub fn release(&self) {
        if let Source::Db { db, reading } = &mut *self.source.lock().unwrap_or_else(|e| e.into_inner())
            && *reading
        {
            *reading = db.end_read().is_err();
        }
    }

    /// Take the entries computed since the last call, settled or not, with the content
    /// hashes of the remote objects this process wrote ([`crate::store::content`]).
    pub fn take_fresh(&self) -> Vec<(String, CachedDigest)> {
        let mut fresh = std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|e| e.into_inner()));
        let unsettled = std::mem::take(&mut *self.unsettled.lock().unwrap_or_else(|e| e.into_inner()));
        fresh.extend(unsettled.into_iter().map(|u| (u.key, u.entry)));
        fresh.append(&mut crate::store::content::take_new());
        fresh
    }

    /// Take the entries to write with the build's records (with the content hashes of the
    /// remote objects this process wrote). A file hashed inside the racy
    /// margin of its mtime whose margin has passed now is read again first: with the same
    /// stat, any write since the first read would have shown in the content, and any write
    /// from now on gives the file another mtime, so the entry is written as hashed now and
    /// is trusted by the next build (which then reads nothing). Its content may have
    /// changed in between: the new digest is written, and [`Digests::settled`] stays false
    /// for the file, so quick keys recorded on the old digest are not trusted. A file whose
    /// margin has not passed waits for a later call; with `last`, it is written as it is
    /// (racy: the next build that needs it reads it again).
    pub fn take_settled(&self, last: bool) -> Vec<(String, CachedDigest)> {
        let pending = std::mem::take(&mut *self.unsettled.lock().unwrap_or_else(|e| e.into_inner()));
        let mut done = std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|e| e.into_inner()));
        done.append(&mut crate::store::content::take_new());
        if pending.is_empty() {
            return done;
        }
        // Taken before any stat or read below.
        let at = now_ns();
        let mut wait = Vec::new();
        for mut u in pending {
            if u.entry.mtime_ns >= at - RACY_MARGIN_NS {
                if last {
                    done.push((u.key, u.entry));
                } else {
                    wait.push(u);
                }
                continue;
            }
            let again =
                stat(&u.abs).filter(|m| !m.is_dir && same_file(u.entry.size, u.entry.mtime_ns, u.entry.inode, m));
            if let Some(meta) = again
                && let Ok(digest) = hash_file(&u.abs, meta.size)
            {
                self.rereads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let same = digest == u.entry.digest;
                u.entry.digest = digest;
                u.entry.hashed_at_ns = at;
                self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(&u.key, &u.entry, same);
            }
            // Else the file changed or went away since it was hashed: the entry as it was
            // taken (racy) can do no harm.
            done.push((u.key, u.entry));
        }
        *self.unsettled.lock().unwrap_or_else(|e| e.into_inner()) = wait;
        done
    }

    /// Whether the digest this process used for `key` holds for as long as the file keeps
    /// the stat `meta` (see [`Digests::take_settled`]): only then may a quick key recorded
    /// with it be trusted.
    pub fn settled(&self, key: &str, meta: &Meta) -> bool {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).settled(key, meta)
    }

    /// The content hash recorded for a remote object flux wrote, while the object is that
    /// version (`meta` is its stat now): by this process, else in the state DB.
    fn recorded_content(&self, key: &str, meta: &Meta) -> Option<Hash> {
        if let Some(d) = crate::store::content::written(key, meta) {
            return Some(d);
        }
        self.entry(key).filter(|c| crate::store::content::matches(c, meta)).map(|c| c.digest)
    }

    fn cached(&self, key: &str, meta: &Meta) -> Option<Hash> {
        // A file written since the build started (above all, by its own tasks) has no
        // trusted entry: one would have been hashed more than the racy margin after this
        // very mtime, by another flux process. Reading the file costs less than asking the
        // state DB, which another connection keeps writing to.
        if meta.mtime_ns >= self.since_ns {
            return None;
        }
        let c = self.entry(key)?;
        (same_file(c.size, c.mtime_ns, c.inode, meta) && trusted(&c)).then_some(c.digest)
    }

    /// Digest of a file (content) or a directory (its files' relative paths and digests).
    /// `key` is the target as written (the cache key); `abs` where it is on disk.
    pub fn digest(&self, key: &str, abs: &Path, meta: &Meta) -> std::io::Result<Hash> {
        if crate::store::is_remote(key) {
            // The content hash flux recorded when it wrote this version of the object, else
            // its ETag or version plus size: no content read.
            return crate::store::digest(key, meta, &|k, m| self.recorded_content(k, m)).map_err(std::io::Error::other);
        }
        if meta.is_dir {
            return self.digest_dir(key, abs);
        }
        self.digest_file(key, abs, meta)
    }

    fn digest_file(&self, key: &str, abs: &Path, meta: &Meta) -> std::io::Result<Hash> {
        // This process's own digests first: they need no lookup in the state DB.
        if let Some(d) = self.seen.lock().unwrap_or_else(|e| e.into_inner()).get(key, meta) {
            return Ok(d);
        }
        if let Some(d) = self.cached(key, meta) {
            return Ok(d);
        }
        let hashed_at = now_ns();
        let digest = hash_file(abs, meta.size)?;
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entry = CachedDigest {
            size: meta.size,
            mtime_ns: meta.mtime_ns,
            inode: meta.inode,
            digest,
            hashed_at_ns: hashed_at,
        };
        let settled = trusted(&entry);
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(key, &entry, settled);
        if settled {
            self.fresh.lock().unwrap_or_else(|e| e.into_inner()).push((key.to_string(), entry));
        } else {
            let u = Unsettled { key: key.to_string(), abs: abs.to_path_buf(), entry };
            self.unsettled.lock().unwrap_or_else(|e| e.into_inner()).push(u);
        }
        Ok(digest)
    }

    fn digest_dir(&self, key: &str, abs: &Path) -> std::io::Result<Hash> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"dir\0");
        // Symlinks inside the folder are digested as links (their target path as written),
        // never followed: a dangling link or a loop is content like any other.
        for entry in walkdir::WalkDir::new(abs).sort_by_file_name().follow_links(false) {
            let entry = entry.map_err(std::io::Error::other)?;
            if entry.path_is_symlink() && entry.depth() > 0 {
                let rel = entry.path().strip_prefix(abs).unwrap_or(entry.path());
                let to = std::fs::read_link(entry.path())?;
                hasher.update(rel.to_string_lossy().as_bytes());
                hasher.update(b"\0link\0");
                hasher.update(to.as_os_str().as_encoded_bytes());
                hasher.update(&[0]);
                continue;
            }
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry.path().strip_prefix(abs).unwrap_or(entry.path());
            let rel_s = rel.to_string_lossy();
            let Some(meta) = stat(entry.path()) else {
                continue;
            };
            let sub_key = format!("{}/{}", key.trim_end_matches('/'), rel_s);
            let d = self.digest_file(&sub_key, entry.path(), &meta)?;
            hasher.update(rel_s.as_bytes());
            hasher.update(&[0]);
            hasher.update(&d);
        }
        Ok(*hasher.finalize().as_bytes())
    }
}

/// The blake3 of a file's content (`size`: its size as stat'ed, to size the buffer).
fn hash_file(abs: &Path, size: u64) -> std::io::Result<Hash> {
    let mut f = std::fs::File::open(abs)?;
    let mut hasher = blake3::Hasher::new();
    if size > 1 << 20 {
        hasher.update_reader(&mut f)?;
    } else {
        let mut buf = Vec::with_capacity(size as usize + 1);
        f.read_to_end(&mut buf)?;
        hasher.update(&buf);
    }
    Ok(*hasher.finalize().as_bytes())
}

/// How many staging folders a run spreads its outputs over.
pub const STAGE_SLOTS: u32 = 16;

/// Where a task's output is staged while its commands run: one of [`STAGE_SLOTS`] folders
/// beside flux's state, chosen by the task key (no folder per task: creating folders is a
/// large share of a tiny task's cost; not one folder for all: creating a file there and
/// renaming one out of it both take the folder's lock, and running commands and finished
/// tasks then wait for each other), the name keyed by the task and output index, ending in
/// the file's own name (tools look at extensions).
pub fn staging_path(stage_root: &Path, task_key: &str, index: usize, final_path: &Path) -> PathBuf {
    let name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let slot = task_key.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % STAGE_SLOTS;
    stage_root.join(format!("{slot:x}")).join(format!("{task_key}.{index}.{name}"))
}

/// Move a staged output into place: a rename, or copy-then-rename across filesystems.
/// A directory output replaces the old directory whole.
pub fn commit(staged: &Path, final_path: &Path, is_dir: bool) -> std::io::Result<()> {
    if is_dir && final_path.exists() {
        let trash = sibling(final_path, ".flux-old");
        let _ = crate::guard::remove_owned(&trash, &trash);
        std::fs::rename(final_path, &trash)?;
        let r = move_into_place(staged, final_path, true);
        if r.is_err() {
            let _ = std::fs::rename(&trash, final_path);
        } else {
            let _ = crate::guard::remove_owned(&trash, &trash);
        }
        return r;
    }
    move_into_place(staged, final_path, is_dir)
}

/// `commit`, keeping the file it replaces alive under `<staged>.old` (a hard link made
/// first), so that the rename does not free the old file's inode and blocks: on ext4
/// that freeing is most of a rename's cost, and the caller deletes the `.old` link later,
/// off the path from one task's end to the next one's start. Returns that link if made
/// (not for a folder, not when there was no old file, not across filesystems).
pub fn commit_keeping_old(staged: &Path, final_path: &Path, is_dir: bool) -> std::io::Result<Option<PathBuf>> {
    let mut old = staged.as_os_str().to_owned();
    old.push(".old");
    let old = PathBuf::from(old);
    let kept = !is_dir && std::fs::hard_link(final_path, &old).is_ok();
    match commit(staged, final_path, is_dir) {
        Ok(()) => Ok(kept.then_some(old)),
        Err(e) => {
            if kept {
                let _ = std::fs::remove_file(&old);
            }
            Err(e)
        }
    }
}

fn move_into_place(staged: &Path, final_path: &Path, is_dir: bool) -> std::io::Result<()> {
    match std::fs::rename(staged, final_path) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            // Another filesystem: copy beside the target, then rename (still atomic for readers).
            let tmp = sibling(final_path, ".flux-tmp");
            if is_dir {
                copy_dir(staged, &tmp)?;
            } else {
                std::fs::copy(staged, &tmp)?;
            }
            std::fs::rename(&tmp, final_path)?;
            crate::guard::remove_owned(staged, staged)
        }
        Err(e) => Err(e),
    }
}

fn sibling(p: &Path, suffix: &str) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!("{suffix}.{}", std::process::id()));
    p.with_file_name(name)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(std::io::Error::other)?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Remove a file or directory flux owns (an output, or a file of its own under the state
/// folder) if it exists: [`crate::guard::remove_owned`] with the path as its own root.
pub fn remove(path: &Path) -> std::io::Result<()> {
    crate::guard::remove_owned(path, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committing_over_an_old_file_keeps_it_aside_for_later_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let (staged, fin) = (dir.path().join("t.0.a.txt"), dir.path().join("a.txt"));
        // No old file: a plain rename.
        std::fs::write(&staged, b"one").unwrap();
        assert_eq!(commit_keeping_old(&staged, &fin, false).unwrap(), None);
        assert_eq!(std::fs::read(&fin).unwrap(), b"one");
        // An old file: it survives under `.old`, the new one is in place, one link each.
        std::fs::write(&staged, b"two").unwrap();
        let old = commit_keeping_old(&staged, &fin, false).unwrap().expect("the old file kept aside");
        assert_eq!(old, dir.path().join("t.0.a.txt.old"));
        assert_eq!(std::fs::read(&old).unwrap(), b"one");
        assert_eq!(std::fs::read(&fin).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&fin).unwrap().nlink(), 1);
        assert!(!staged.exists());
        std::fs::remove_file(&old).unwrap();
        // Nothing staged: the error, the old file untouched, no link left behind.
        let err = commit_keeping_old(&staged, &fin, false).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(std::fs::read(&fin).unwrap(), b"two");
        assert!(!old.exists());
    }

    /// Digests over a state DB in `dir` holding `entries`.
    fn with_cache(dir: &Path, entries: Vec<(String, CachedDigest)>) -> Digests {
        let mut db = crate::state::StateDb::open(dir).unwrap();
        let mut batch = crate::state::Batch { digests: entries, ..Default::default() };
        db.commit(&mut batch).unwrap();
        Digests::lazy(dir.to_path_buf(), i64::MAX)
    }

    fn reads(d: &Digests) -> u64 {
        d.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn cached_digest_is_not_reread_and_racy_entries_are() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, b"hello").unwrap();
        let meta = stat(&p).unwrap();
        // No state DB: nothing cached, the file is read once per process.
        let d = Digests::lazy(dir.path().join("nowhere"), i64::MAX);
        let h1 = d.digest("a.txt", &p, &meta).unwrap();
        assert_eq!(h1, *blake3::hash(b"hello").as_bytes());
        assert_eq!(d.digest("a.txt", &p, &meta).unwrap(), h1);
        assert_eq!(reads(&d), 1);
        // Fresh entry: hashed right after the write, so it is racy and re-read next time.
        let fresh = d.take_fresh();
        let d2 = with_cache(dir.path(), fresh.clone());
        assert_eq!(d2.digest("a.txt", &p, &meta).unwrap(), h1);
        assert_eq!(reads(&d2), 1);
        // An entry hashed well after the mtime is trusted, and looked up in the state DB.
        let mut old = fresh;
        old[0].1.hashed_at_ns = meta.mtime_ns + 10 * RACY_MARGIN_NS;
        old[0].1.digest = [7; 32];
        let d3 = with_cache(dir.path(), old);
        assert_eq!(d3.digest("a.txt", &p, &meta).unwrap(), [7; 32]);
        assert_eq!(reads(&d3), 0);
        assert!(matches!(&*d3.source.lock().unwrap(), Source::Db { reading: true, .. }));
        d3.release();
        assert!(matches!(&*d3.source.lock().unwrap(), Source::Db { reading: false, .. }));
        // A build that started before the file's mtime does not ask the state DB at all.
        let d5 = Digests::lazy(dir.path().to_path_buf(), meta.mtime_ns);
        assert_eq!(d5.digest("a.txt", &p, &meta).unwrap(), h1);
        assert_eq!(reads(&d5), 1);
        assert!(matches!(&*d5.source.lock().unwrap(), Source::Unread(_)));
        // Not for another file at that path.
        std::fs::write(&p, b"hello, world").unwrap();
        let d4 = Digests::lazy(dir.path().to_path_buf(), i64::MAX);
        let now = stat(&p).unwrap();
        assert_eq!(d4.digest("a.txt", &p, &now).unwrap(), *blake3::hash(b"hello, world").as_bytes());
        assert_eq!(reads(&d4), 1);
    }

    #[test]
    fn racy_entries_are_read_again_once_their_margin_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
        std::fs::write(&a, b"aaaa").unwrap();
        std::fs::write(&b, b"bbbb").unwrap();
        // Their mtimes ahead of now: hashed inside the margin, whatever the machine's load.
        let ahead = std::time::SystemTime::now() + std::time::Duration::from_millis(300);
        for p in [&a, &b] {
            std::fs::File::options().write(true).open(p).unwrap().set_modified(ahead).unwrap();
        }
        let d = Digests::lazy(dir.path().join("nowhere"), i64::MAX);
        let (ma, mb) = (stat(&a).unwrap(), stat(&b).unwrap());
        let ha = d.digest("a.txt", &a, &ma).unwrap();
        d.digest("b.txt", &b, &mb).unwrap();
        assert!(!d.settled("a.txt", &ma) && !d.settled("b.txt", &mb));
        // Inside the margin still: nothing is taken, unless it is the last write.
        assert!(d.take_settled(false).is_empty());
        assert_eq!(d.rereads.load(std::sync::atomic::Ordering::Relaxed), 0);
        while now_ns() < ma.mtime_ns + 2 * RACY_MARGIN_NS {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // b.txt gets other bytes of the same size and its old mtime back (an edit in the
        // same tick as the first hash): the entry written has the new digest, and b's
        // digest is not settled (a quick key recorded with the old one must not be trusted).
        let mut f = std::fs::File::options().write(true).truncate(true).open(&b).unwrap();
        std::io::Write::write_all(&mut f, b"BBBB").unwrap();
        f.set_modified(ahead).unwrap();
        drop(f);
        assert_eq!(stat(&b).unwrap(), mb);
        let mut out = d.take_settled(false);
        out.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(out.len(), 2);
        assert_eq!(d.rereads.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(reads(&d), 2, "first reads only");
        assert!(out.iter().all(|(_, c)| trusted(c)), "both written as hashed after their margin");
        assert_eq!((out[0].0.as_str(), out[0].1.digest), ("a.txt", ha));
        assert_eq!((out[1].0.as_str(), out[1].1.digest), ("b.txt", *blake3::hash(b"BBBB").as_bytes()));
        assert!(d.settled("a.txt", &ma));
        assert!(!d.settled("b.txt", &mb));
        // Not for another stat of the file.
        assert!(!d.settled("a.txt", &Meta { mtime_ns: ma.mtime_ns + 1, ..ma }));
        // A file never hashed here (a trusted cache entry, a remote object) is settled.
        assert!(d.settled("c.txt", &ma));
    }

    #[test]
    fn racy_entries_are_written_as_they_are_by_the_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        std::fs::write(&a, b"aaaa").unwrap();
        let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        std::fs::File::options().write(true).open(&a).unwrap().set_modified(ahead).unwrap();
        let d = Digests::lazy(dir.path().join("nowhere"), i64::MAX);
        let m = stat(&a).unwrap();
        d.digest("a.txt", &a, &m).unwrap();
        let out = d.take_settled(true);
        assert_eq!(out.len(), 1);
        assert!(!trusted(&out[0].1), "still racy: the next build reads it again");
        assert!(!d.settled("a.txt", &m));
    }

    #[test]
    fn staged_outputs_are_spread_over_the_slot_folders() {
        let root = Path::new("/s/4");
        let p = staging_path(root, "join_2024-03-01T05_", 0, Path::new("/d/2024-03-01T05.csv"));
        assert_eq!(p, Path::new("/s/4/9/join_2024-03-01T05_.0.2024-03-01T05.csv"));
        let slots: std::collections::HashSet<PathBuf> = (0..64)
            .map(|d| staging_path(root, &format!("step_2000-01-{d:02}_"), 0, Path::new("x.txt")))
            .map(|p| p.parent().unwrap().to_path_buf())
            .collect();
        assert_eq!(slots.len(), STAGE_SLOTS as usize);
    }

    #[test]
    fn directory_digest_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let o = dir.path().join("out");
        std::fs::create_dir_all(o.join("sub")).unwrap();
        std::fs::write(o.join("sub/x"), b"1").unwrap();
        let d = Digests::lazy(dir.path().join("nowhere"), i64::MAX);
        let a = d.digest("out/", &o, &stat(&o).unwrap()).unwrap();
        std::fs::write(o.join("sub/x"), b"2").unwrap();
        let b = d.digest("out/", &o, &stat(&o).unwrap()).unwrap();
        assert_ne!(a, b);
    }
}
