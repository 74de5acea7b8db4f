//! What flux may delete (SPEC §5): only a task's own outputs and its own scratch files.
//!
//! Two lines of defence:
//! - At planning time ([`Guard::check_outputs`]), every output of every task is compared,
//!   lexically, with the paths no output may be: the file-system root, the project folder
//!   (the Fluxfile's) or any parent of it, the state folder, anything inside the state
//!   folder, and the user's home or any parent of it; on a remote store, a whole bucket,
//!   container or namespace root. Such an output is an error before anything runs. No
//!   file is stat'ed: the check costs a few string comparisons per output.
//! - At delete time, every delete flux does goes through [`remove_owned`], which checks the
//!   same rule again on the path as written and as the file system resolves it, deletes
//!   only what lies under the root it was given, and never follows a symlink: removing a
//!   link removes the link.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::RwLock;

use crate::error::{Error, Result};
use crate::fluxfile::Fluxfile;
use crate::graph::TaskGraph;

/// Why a path may not be an output, nor be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Root,
    Project,
    AboveProject,
    State,
    InState,
    AboveState,
    Home,
    AboveHome,
    /// A remote target naming a whole bucket, container or namespace root.
    StoreRoot,
}

impl Refusal {
    /// What the path is, as the end of a sentence ("… renders to X, which is …").
    pub fn what(self) -> &'static str {
        match self {
            Refusal::Root => "the file-system root",
            Refusal::Project => "the project folder (the Fluxfile's folder)",
            Refusal::AboveProject => "a parent of the project folder",
            Refusal::State => "flux's state folder",
            Refusal::InState => "inside flux's state folder",
            Refusal::AboveState => "a parent of flux's state folder",
            Refusal::Home => "your home folder ($HOME)",
            Refusal::AboveHome => "a parent of your home folder ($HOME)",
            Refusal::StoreRoot => "the root of a whole bucket or namespace",
        }
    }
}

/// The lexical normal form of `p` (joined to `base` if relative): `.` dropped, `..` takes
/// the previous component off (never above `/`), no trailing `/`. Nothing is stat'ed, so
/// symlinks are not resolved.
pub fn normalize(base: &Path, p: &Path) -> PathBuf {
    let joined;
    let p = if p.is_absolute() {
        p
    } else {
        joined = base.join(p);
        &joined
    };
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// The paths no output may be: the project and state folders and the user's home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    project: PathBuf,
    state: PathBuf,
    home: Option<PathBuf>,
    /// The state folder and home relative to the project when they are inside it (`/`
    /// separated, no trailing `/`), for the quick check of relative targets.
    state_rel: Option<String>,
    home_rel: Option<String>,
}

/// Every guard made in this process: [`remove_owned`] checks against all of them.
static GUARDS: RwLock<Vec<Guard>> = RwLock::new(Vec::new());

impl Guard {
    /// A guard for a project in `project` (absolute) keeping its state in `state`, for a
    /// user whose home is `home` (`$HOME`, read by the caller). It is also registered for
    /// [`remove_owned`] for the rest of the process.
    pub fn new(project: &Path, state: &Path, home: Option<&Path>) -> Guard {
        let project = normalize(Path::new("/"), project);
        let state = normalize(&project, state);
        let home = home.filter(|h| h.is_absolute()).map(|h| normalize(Path::new("/"), h));
        let rel = |p: &Path| -> Option<String> {
            let r = p.strip_prefix(&project).ok()?;
            (!r.as_os_str().is_empty()).then(|| r.to_string_lossy().into_owned())
        };
        let g = Guard { state_rel: rel(&state), home_rel: home.as_deref().and_then(rel), project, state, home };
        let mut all = GUARDS.write().unwrap_or_else(|e| e.into_inner());
        if !all.contains(&g) {
            all.push(g.clone());
        }
        g
    }

    /// The guard of a loaded Fluxfile.
    pub fn for_fluxfile(ff: &Fluxfile, home: Option<&Path>) -> Guard {
        Guard::new(&ff.dir, &ff.state_dir, home)
    }

    /// Why the absolute, normalised path `p` may not be an output, if it may not.
    pub fn check_path(&self, p: &Path) -> Option<Refusal> {
        if p.parent().is_none() {
            return Some(Refusal::Root);
        }
        if p == self.project {
            return Some(Refusal::Project);
        }
        if self.project.starts_with(p) {
            return Some(Refusal::AboveProject);
        }
        if p == self.state {
            return Some(Refusal::State);
        }
        if p.starts_with(&self.state) {
            return Some(Refusal::InState);
        }
        if self.state.starts_with(p) {
            return Some(Refusal::AboveState);
        }
        if let Some(h) = &self.home {
            if p == h {
                return Some(Refusal::Home);
            }
            if h.starts_with(p) {
                return Some(Refusal::AboveHome);
            }
        }
        None
    }

    /// Why a target as rendered (a path relative to the project, an absolute path or a
    /// URI) may not be an output, if it may not. Relative paths without `.` or `..`
    /// components are checked without building a path.
    pub fn check_target(&self, target: &str) -> Option<Refusal> {
        if crate::store::is_remote(target) {
            return check_remote(target);
        }
        let t = target.trim_end_matches('/');
        let clean =
            !t.is_empty() && !t.starts_with('/') && t.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if !clean {
            return self.check_path(&normalize(&self.project, Path::new(target)));
        }
        // Strictly inside the project: only the state folder or home can be in the way.
        let rel = |r: &str| -> Option<std::cmp::Ordering> {
            if t == r {
                Some(std::cmp::Ordering::Equal)
            } else if r.len() > t.len() && r.starts_with(t) && r.as_bytes()[t.len()] == b'/' {
                Some(std::cmp::Ordering::Greater) // t is a parent of r
            } else if t.len() > r.len() && t.starts_with(r) && t.as_bytes()[r.len()] == b'/' {
                Some(std::cmp::Ordering::Less) // t is inside r
            } else {
                None
            }
        };
        if let Some(s) = &self.state_rel {
            match rel(s) {
                Some(std::cmp::Ordering::Equal) => return Some(Refusal::State),
                Some(std::cmp::Ordering::Greater) => return Some(Refusal::AboveState),
                Some(std::cmp::Ordering::Less) => return Some(Refusal::InState),
                None => {}
            }
        }
        if let Some(h) = &self.home_rel {
            match rel(h) {
                Some(std::cmp::Ordering::Equal) => return Some(Refusal::Home),
                Some(std::cmp::Ordering::Greater) => return Some(Refusal::AboveHome),
                _ => {}
            }
        }
        None
    }

    /// Check every output of every task of `g` (SPEC §5): an output that is or renders to
    /// a path no output may be is an error naming the step, the output template (with its
    /// place in the Fluxfile) and the rendered value.
    pub fn check_outputs(&self, ff: &Fluxfile, g: &TaskGraph) -> Result<()> {
        use rayon::prelude::*;
        // The first task (in id order) with an output refused, found on every core: a
        // million tasks' outputs take a while on one.
        let refused = |t: &crate::graph::Task| t.outputs().iter().any(|&o| self.check_target(g.target(o)).is_some());
        let first = if g.tasks.len() < 8192 {
            g.tasks.iter().position(refused)
        } else {
            g.tasks.par_iter().with_min_len(1024).position_first(refused)
        };
        if let Some(task) = first.map(|t| &g.tasks[t]) {
            for (i, &o) in task.outputs().iter().enumerate() {
                let target = g.target(o);
                let Some(why) = self.check_target(target) else { continue };
                let step = &ff.steps[task.step as usize];
                let Some(out) = step.outputs.get(i) else {
                    return Err(Error::Plan(format!(
                        "an output of step `{}` renders to `{target}`, which is {}: flux never writes or deletes that",
                        step.name,
                        why.what()
                    )));
                };
                let source = ff.engine.source(out.tpl.id);
                let shown = if crate::store::is_remote(target) {
                    format!("`{target}`")
                } else {
                    let abs = normalize(&self.project, Path::new(target));
                    format!("`{}` ({})", if target.is_empty() { "." } else { target }, abs.display())
                };
                return Err(Error::at_help(
                    format!("output `{source}` of step `{}` renders to {shown}, which is {}", step.name, why.what()),
                    &out.tpl.span,
                    "flux deletes what a failed task wrote in its outputs, so an output may not be `/`, the project \
                     folder or a parent of it, the state folder or anything in it, or your home folder: give the \
                     output a folder of its own (check the vars and params it uses)",
                ));
            }
        }
        Ok(())
    }
}

/// A remote target that names a whole bucket, container or namespace root (an empty key,
/// or one of only `/`, `.` and `..`).
pub fn check_remote(target: &str) -> Option<Refusal> {
    let u = crate::store::parse(target)?;
    let whole = u.key.split('/').all(|c| c.is_empty() || c == "." || c == "..");
    whole.then_some(Refusal::StoreRoot)
}

/// Why `p` (absolute, normalised) may not be deleted by any guard of this process, if so.
fn refused(p: &Path) -> Option<Refusal> {
    if p.parent().is_none() {
        return Some(Refusal::Root);
    }
    let guards = GUARDS.read().unwrap_or_else(|e| e.into_inner());
    for g in guards.iter() {
        match g.check_path(p) {
            // flux's own scratch folders live in the state folder.
            Some(Refusal::InState)
                if ["stage", "cache"].iter().any(|d| p.starts_with(g.state.join(d)) && p != g.state.join(d)) => {}
            Some(r) => return Some(r),
            None => {}
        }
    }
    None
}

fn refusal_error(path: &Path, why: Refusal) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("flux refuses to delete {}: it is {}", path.display(), why.what()),
    )
}

/// Delete `path` (a file, a symlink or a folder with everything in it) if it exists, where
/// `path` is `owned_root` or lies under it and `owned_root` is something flux owns: an
/// output, or a file or folder of its own under the state folder's `stage` or `cache`.
///
/// Refused (an error of kind `PermissionDenied`, nothing deleted): a root that is, as
/// written or as the file system resolves it, the file-system root, the project folder
/// or a parent of it, the state folder or a parent of it (or inside it, outside `stage`
/// and `cache`), the user's home or a parent of it; a `path` that is not under the root,
/// or that reaches outside it through a symlink. A symlink is never followed: removing
/// one removes the link.
pub fn remove_owned(path: &Path, owned_root: &Path) -> std::io::Result<()> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let root = normalize(&cwd, owned_root);
    let p = normalize(&cwd, path);
    if let Some(why) = refused(&root) {
        return Err(refusal_error(&root, why));
    }
    if !p.starts_with(&root) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("flux refuses to delete {}: it is not under {}", p.display(), root.display()),
        ));
    }
    let meta = match std::fs::symlink_metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // As the file system resolves them: a symlinked folder on the way must not lead to a
    // protected place, nor out of the root.
    let resolved_root = resolve(&root);
    if let Some(r) = &resolved_root
        && let Some(why) = refused(r)
    {
        return Err(refusal_error(&root, why));
    }
    if p != root
        && let (Some(parent), Some(r)) = (p.parent().and_then(|d| std::fs::canonicalize(d).ok()), &resolved_root)
        && !parent.starts_with(r)
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("flux refuses to delete {}: a symlink leads it out of {}", p.display(), root.display()),
        ));
    }
    // `remove_dir_all` does not follow symlinks inside the folder; `p` has no trailing
    // `/`, so a link at `p` is a link here.
    if meta.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) }
}

/// Where `p` is once symlinks are resolved: its parent resolved, then its own name (a link
/// at `p` itself is what gets removed, so it is not followed). `None` if the parent does
/// not exist.
fn resolve(p: &Path) -> Option<PathBuf> {
    let parent = std::fs::canonicalize(p.parent()?).ok()?;
    Some(match p.file_name() {
        Some(n) => parent.join(n),
        None => parent,
    })
}

/// Identity of a file (or symlink) as `lstat` sees it: any write, truncation, rename over
/// it or change of mode shows in one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    mode: u32,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec()),
            ctime_ns: m.ctime().saturating_mul(1_000_000_000).saturating_add(m.ctime_nsec()),
            mode: m.mode(),
        }
    }
}

/// What was at a `stage = false` output before an attempt, so that after a failed or
/// interrupted attempt flux removes only what the attempt wrote (SPEC §5).
#[derive(Debug)]
pub enum Before {
    /// Nothing: whatever is there afterwards, the attempt made.
    Absent,
    /// A file or a symlink (never followed): removed afterwards only if the attempt
    /// changed it, as make's `.DELETE_ON_ERROR` does.
    File(FileId),
    /// A folder and every path under it (relative): afterwards the paths that are new are
    /// removed; the ones that were there are left, even if the attempt changed them.
    Dir(HashSet<PathBuf>),
    /// A folder that could not be read whole: nothing is removed afterwards.
    Unknown,
    /// The objects at and under a remote target, with their versions (see
    /// [`crate::store::snapshot`]).
    Objects(std::collections::HashMap<String, String>),
}

impl Before {
    /// Look at `path` (no trailing `/` needed) before an attempt.
    pub fn take(path: &Path) -> Before {
        let path = strip_slash(path);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Before::Absent,
            Err(_) => Before::Unknown,
            Ok(m) if m.is_dir() => {
                let mut seen = HashSet::new();
                for e in walkdir::WalkDir::new(&path).min_depth(1).follow_links(false) {
                    let Ok(e) = e else { return Before::Unknown };
                    seen.insert(e.path().strip_prefix(&path).unwrap_or(e.path()).to_path_buf());
                }
                Before::Dir(seen)
            }
            Ok(m) => Before::File(FileId::of(&m)),
        }
    }

    /// After a failed or interrupted attempt: remove what it wrote at `path`, through
    /// [`remove_owned`]. Returns the first error (the rest is still tried).
    pub fn undo(&self, path: &Path) -> std::io::Result<()> {
        let path = strip_slash(path);
        let now = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
            Ok(m) => m,
        };
        match self {
            Before::Absent => remove_owned(&path, &path),
            Before::File(id) if *id == FileId::of(&now) => Ok(()),
            Before::Unknown | Before::Objects(_) => Ok(()),
            // The attempt changed the file, or put something else where the folder was.
            Before::File(_) => remove_owned(&path, &path),
            Before::Dir(_) if !now.is_dir() => remove_owned(&path, &path),
            Before::Dir(seen) => {
                let mut first = Ok(());
                let mut walk = walkdir::WalkDir::new(&path).min_depth(1).follow_links(false).into_iter();
                while let Some(e) = walk.next() {
                    let Ok(e) = e else { continue };
                    let rel = e.path().strip_prefix(&path).unwrap_or(e.path());
                    if seen.contains(rel) {
                        continue;
                    }
                    if e.file_type().is_dir() {
                        walk.skip_current_dir();
                    }
                    if let Err(err) = remove_owned(e.path(), &path)
                        && first.is_ok()
                    {
                        first = Err(err);
                    }
                }
                first
            }
        }
    }
}

/// `p` without trailing `/` (a trailing `/` makes the kernel follow a symlink at `p`).
fn strip_slash(p: &Path) -> PathBuf {
    p.components().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_lexically() {
        let b = Path::new("/p/q");
        assert_eq!(normalize(b, Path::new("..")), Path::new("/p"));
        assert_eq!(normalize(b, Path::new("")), Path::new("/p/q"));
        assert_eq!(normalize(b, Path::new("./a/../b/")), Path::new("/p/q/b"));
        assert_eq!(normalize(b, Path::new("../../../..")), Path::new("/"));
        assert_eq!(normalize(b, Path::new("/x/./y//")), Path::new("/x/y"));
    }

    #[test]
    fn outputs_that_would_delete_the_project_its_parents_state_or_home_are_refused() {
        let g = Guard::new(Path::new("/w/proj"), Path::new(".flux"), Some(Path::new("/w/proj/home")));
        let cases = [
            ("", Some(Refusal::Project)),
            ("./", Some(Refusal::Project)),
            ("..", Some(Refusal::AboveProject)),
            ("../", Some(Refusal::AboveProject)),
            ("data/../..", Some(Refusal::AboveProject)),
            ("/", Some(Refusal::Root)),
            ("/w", Some(Refusal::AboveProject)),
            ("/w/proj/", Some(Refusal::Project)),
            (".flux", Some(Refusal::State)),
            (".flux/", Some(Refusal::State)),
            (".flux/stage/x", Some(Refusal::InState)),
            ("data/../.flux/x", Some(Refusal::InState)),
            ("home/", Some(Refusal::Home)),
            ("data/", None),
            ("data/x.csv", None),
            (".fluxy", None),
            ("homes/x", None),
            ("../other/x", None),
            ("/tmp/out/", None),
            ("s3://bucket", Some(Refusal::StoreRoot)),
            ("s3://bucket/", Some(Refusal::StoreRoot)),
            ("gs://bucket/./", Some(Refusal::StoreRoot)),
            ("hdfs://nn:9000/", Some(Refusal::StoreRoot)),
            ("s3://bucket/k/", None),
        ];
        for (t, want) in cases {
            assert_eq!(g.check_target(t), want, "{t:?}");
        }
        let outside = Guard::new(Path::new("/w/proj"), Path::new("/var/state"), Some(Path::new("/home/u")));
        assert_eq!(outside.check_target("/var"), Some(Refusal::AboveState));
        assert_eq!(outside.check_target("/var/state/db"), Some(Refusal::InState));
        assert_eq!(outside.check_target("/home"), Some(Refusal::AboveHome));
        assert_eq!(outside.check_target("/home/u/"), Some(Refusal::Home));
        assert_eq!(outside.check_target("/home/u/out/"), None);
    }

    #[test]
    fn removing_refuses_what_flux_does_not_own_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let proj = base.join("proj");
        std::fs::create_dir_all(proj.join("out/sub")).unwrap();
        std::fs::create_dir_all(base.join("elsewhere")).unwrap();
        std::fs::write(base.join("elsewhere/keep.txt"), "keep").unwrap();
        std::fs::write(proj.join("out/sub/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere"), proj.join("out/link")).unwrap();
        Guard::new(&proj, Path::new(".flux"), None);
        // The project, a parent of it, the root: refused, nothing deleted.
        for p in [&proj, &base, Path::new("/")] {
            let e = remove_owned(p, p).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{}", p.display());
        }
        assert!(proj.join("out/sub/a.txt").exists());
        // A path outside its root, or reached through a link out of it.
        assert!(remove_owned(&base.join("elsewhere"), &proj.join("out")).is_err());
        assert!(remove_owned(&proj.join("out/link/keep.txt"), &proj.join("out")).is_err());
        assert!(base.join("elsewhere/keep.txt").exists());
        // A link is removed as a link; a folder with one inside leaves the target alone.
        remove_owned(&proj.join("out/link"), &proj.join("out")).unwrap();
        assert!(base.join("elsewhere/keep.txt").exists());
        std::os::unix::fs::symlink(base.join("elsewhere"), proj.join("out/sub/link")).unwrap();
        remove_owned(&proj.join("out"), &proj.join("out")).unwrap();
        assert!(!proj.join("out").exists());
        assert!(base.join("elsewhere/keep.txt").exists());
        // Nothing there: fine.
        remove_owned(&proj.join("out"), &proj.join("out")).unwrap();
        // flux's scratch folders inside the state folder may be removed, the rest not.
        std::fs::create_dir_all(proj.join(".flux/stage/1")).unwrap();
        remove_owned(&proj.join(".flux/stage/1"), &proj.join(".flux/stage/1")).unwrap();
        assert!(remove_owned(&proj.join(".flux/stage"), &proj.join(".flux/stage")).is_err());
        assert!(remove_owned(&proj.join(".flux"), &proj.join(".flux")).is_err());
        assert!(proj.join(".flux/stage").exists());
    }
}
