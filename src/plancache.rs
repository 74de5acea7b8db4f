//! A cache of planned task graphs. Expanding and inferring 100,000 tasks costs a few
//! hundred milliseconds; a repeated `flux build` with the same Fluxfile and arguments gets
//! the same graph, so it is stored in `<state>/plan/<key>.bin` and read back instead.
//!
//! The key is a blake3 digest of everything the graph depends on: flux's version, every
//! source text the Fluxfile was made of (main file, includes, generators' output) and the
//! vars, the request (targets, dates, params), the current folder (output paths given on
//! the command line are resolved against it) and, when a scheduled step could take its
//! domain from the clock, the current hour. Planning itself reads no files, so nothing
//! else can change the graph. A file that is short, corrupt or from another version is
//! ignored (and the graph planned afresh); the format is private to this module.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::fluxfile::Fluxfile;
use crate::graph::{Request, Task, TaskGraph};
use crate::param::ParamValue;

const MAGIC: &[u8; 8] = b"fluxpln1";
/// Plans kept per project; older ones are removed when a new one is written.
const KEEP: usize = 8;

/// The cache key of a request.
pub fn key(ff: &Fluxfile, req: &Request) -> String {
    let mut h = blake3::Hasher::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(ff.digest.as_bytes());
    let mut field = |s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    for t in &req.targets {
        field(t);
    }
    field("|");
    field(&req.date.map(|d| d.to_string()).unwrap_or_default());
    field(&req.range.as_ref().map(|(a, b)| format!("{a}..{b}")).unwrap_or_default());
    for (k, vs) in &req.params {
        field(k);
        for v in vs {
            field(v);
        }
    }
    field(&std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default());
    if ff.steps.iter().any(|s| s.schedule.is_some()) {
        field(&req.now.map(|n| n.format("%Y-%m-%dT%H").to_string()).unwrap_or_default());
    }
    h.finalize().to_hex()[..32].to_string()
}

fn path(state_dir: &Path, key: &str) -> PathBuf {
    state_dir.join("plan").join(format!("{key}.bin"))
}

/// The cached graph for this key, if there is a good one.
pub fn load(state_dir: &Path, key: &str) -> Option<TaskGraph> {
    let bytes = std::fs::read(path(state_dir, key)).ok()?;
    decode(&bytes)
}

/// Store a graph (best effort: a cache that cannot be written is only slower).
pub fn store(state_dir: &Path, key: &str, g: &TaskGraph) {
    let dir = state_dir.join("plan");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
    let ok = std::fs::File::create(&tmp)
        .and_then(|f| {
            let mut w = std::io::BufWriter::new(f);
            w.write_all(&encode(g))?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()
        })
        .and_then(|_| std::fs::rename(&tmp, path(state_dir, key)));
    if ok.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return;
    }
    // Keep the newest few.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (_, p) in files.into_iter().skip(KEEP) {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_list(out: &mut Vec<u8>, v: &[u32]) {
    put_u32(out, v.len() as u32);
    for &x in v {
        put_u32(out, x);
    }
}

fn encode(g: &TaskGraph) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + g.tasks.len() * 48 + g.targets.iter().map(|t| t.len() + 4).sum::<usize>());
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, g.targets.len() as u32);
    for t in &g.targets {
        put_u32(&mut out, t.len() as u32);
        out.extend_from_slice(t.as_bytes());
    }
    put_list(&mut out, &g.producer);
    put_u32(&mut out, g.tasks.len() as u32);
    for t in &g.tasks {
        put_u32(&mut out, t.step);
        put_u32(&mut out, t.params.len() as u32);
        for p in t.params.iter() {
            let (tag, v): (u8, i64) = match *p {
                ParamValue::Date(d) => (0, i64::from(d)),
                ParamValue::Hour(h) => (1, h),
                ParamValue::Month(m) => (2, i64::from(m)),
                ParamValue::Choice(c) => (3, i64::from(c)),
                ParamValue::Week(w) => (4, i64::from(w)),
                ParamValue::Int(n) => (5, n),
                // A string value: its length, then its bytes.
                ParamValue::Str(s) => (6, s.len() as i64),
            };
            out.push(tag);
            out.extend_from_slice(&v.to_le_bytes());
            if let ParamValue::Str(s) = p {
                out.extend_from_slice(s.as_bytes());
            }
        }
        put_list(&mut out, t.inputs());
        put_list(&mut out, t.outputs());
        put_list(&mut out, t.deps());
    }
    put_list(&mut out, &g.roots);
    put_list(&mut out, &g.order);
    out
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn list(&mut self, bound: u32) -> Option<Vec<u32>> {
        let n = self.u32()? as usize;
        let raw = self.take(n.checked_mul(4)?)?;
        let v: Vec<u32> = raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        v.iter().all(|&x| x < bound || x == crate::graph::NONE).then_some(v)
    }
}

fn decode(b: &[u8]) -> Option<TaskGraph> {
    let mut r = Reader { b, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let nt = r.u32()?;
    let mut targets = Vec::with_capacity(nt as usize);
    for _ in 0..nt {
        let len = r.u32()? as usize;
        targets.push(Box::from(std::str::from_utf8(r.take(len)?).ok()?));
    }
    let producer = r.list(u32::MAX)?;
    let n = r.u32()?;
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let step = r.u32()?;
        let np = r.u32()? as usize;
        let mut params = Vec::with_capacity(np.min(16));
        for _ in 0..np {
            let tag = r.take(1)?[0];
            let v = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
            params.push(match tag {
                0 => ParamValue::Date(i32::try_from(v).ok()?),
                1 => ParamValue::Hour(v),
                2 => ParamValue::Month(i32::try_from(v).ok()?),
                3 => ParamValue::Choice(u32::try_from(v).ok()?),
                4 => ParamValue::Week(i32::try_from(v).ok()?),
                5 => ParamValue::Int(v),
                6 => {
                    let s = std::str::from_utf8(r.take(usize::try_from(v).ok()?)?).ok()?;
                    crate::param::check_segment(s).ok()?;
                    ParamValue::Str(crate::param::intern(s))
                }
                _ => return None,
            });
        }
        let inputs = r.list(nt)?;
        let outputs = r.list(nt)?;
        let deps = r.list(n)?;
        tasks.push(Task::new(step, params.into_boxed_slice(), &inputs, &outputs, &deps));
    }
    let roots = r.list(n)?;
    let order = r.list(n)?;
    if r.at != b.len() || producer.len() != targets.len() || order.len() != tasks.len() {
        return None;
    }
    Some(TaskGraph { tasks, targets, producer, roots, order })
}

/// Whether a cached graph fits the Fluxfile it is used with (steps and params in range).
pub fn fits(ff: &Fluxfile, g: &TaskGraph) -> bool {
    g.tasks.iter().all(|t| ff.steps.get(t.step as usize).is_some_and(|s| s.params.len() == t.params.len()))
        && g.producer.iter().all(|&p| p == crate::graph::NONE || (p as usize) < g.tasks.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Params;

    #[test]
    fn round_trip_and_corruption() {
        let g = TaskGraph {
            tasks: vec![
                Task::new(0, Params::One(ParamValue::Date(19000)), &[0], &[1], &[]),
                Task::new(
                    1,
                    vec![
                        ParamValue::Hour(-5),
                        ParamValue::Choice(2),
                        ParamValue::Week(2800),
                        ParamValue::Int(-3),
                        ParamValue::Str("x.y"),
                    ]
                    .into_boxed_slice(),
                    &[1],
                    &[2],
                    &[0],
                ),
            ],
            targets: vec!["src/a".into(), "out/b".into(), "out/é".into()],
            producer: vec![crate::graph::NONE, 0, 1],
            roots: vec![1],
            order: vec![0, 1],
        };
        let bytes = encode(&g);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.targets, g.targets);
        assert_eq!(back.tasks[1].params, g.tasks[1].params);
        assert_eq!(back.tasks[1].deps(), vec![0]);
        assert_eq!(back.order, g.order);
        for cut in [0, 7, 8, 20, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad.push(0);
        assert!(decode(&bad).is_none());
    }
}
