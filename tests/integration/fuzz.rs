//! Fuzzing in CI: mutated Fluxfiles through `flux check` and `flux build -n`.
//!
//! The seeds are the example pipelines in `fluxfiles/`, and one more written here for the
//! keys they leave out. Each case applies one to four byte, token or line mutations,
//! chosen by a deterministic generator, and runs both commands.
//! Every run must:
//!
//! - end by itself within [`HANG`] (no hang, no runaway planning),
//! - exit with a code, not a signal, and never panic,
//! - exit 0 or 2 (these commands run nothing, so there is no task to fail), and
//! - when it exits 2, say where: either a ` --> FILE:LINE:COL` line, or the name of a
//!   step or task of the Fluxfile (`` `NAME` `` or `NAME[…]`, for a name that appears as
//!   `step.NAME` in the file's text).
//!
//! `FLUX_FUZZ_CASES` sets the number of cases (default [`DEFAULT_CASES`], a bit under a
//! minute here), `FLUX_FUZZ_SEED` the seed. A failure prints the case number, the mutated
//! Fluxfile (shortened) and the output, and writes the Fluxfile to
//! `target/fuzz-findings/` to be replayed with `flux -f FILE check`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::test::*;

const DEFAULT_CASES: usize = 300;
const DEFAULT_SEED: u64 = 0x005e_edf1;
const HANG: Duration = Duration::from_secs(20);

/// (example folder, arguments of the dry run)
const SEEDS: &[(&str, &[&str])] = &[
    ("hourly", &["--date", "2024-03-01"]),
    ("monthly", &["--date", "2024-02-01"]),
    ("rollup", &["--date-range", "2024-01-01..2024-01-07"]),
    ("keys", &["--date-range", "2024-01-01..2024-01-03"]),
];

/// A fourth seed, beside the examples: the keys they leave out (pools, numbers, list
/// params, `requires`, `end`, hooks, `include`d steps).
const KEYS_SEED: &str = r#"[flux]
start = "2024-01-01"
jobs = 2
max_tasks = 1000
generate_timeout = "10s"
include = ["more.toml"]

[vars]
root = "data"

[pools]
db = 2

[step.extract]
params = { date = "date", region = ["eu", "us"] }
end = "2024-01-31"
inputs = ["input/{{ region }}.csv"]
outputs = ["{{ root }}/extract/{{ region }}/{{ date | ds_nodash }}.csv"]
run = "grep {{ date }} {{ inputs[0] }} > {{ outputs[0] }}"
retries = 2
retry_delay = "1s"
retry_backoff = 2
timeout = "10m"
pool = "db"
priority = 5
cpus = 2
mem = "512M"
wait = "1m"
poll = "5s"
on_failure = "echo {{ task }} failed"

[step.load]
params = { date = "date" }
inputs = ["{{ root }}/extract/eu/{{ date | ds_nodash }}.csv", "{{ root }}/load/{{ date | add_days(-1) }}.txt"]
outputs = ["{{ root }}/load/{{ date }}.txt"]
requires = [{ step = "extract", date = "{{ date }}", region = "us" }]
run = ["cat {{ inputs }} > {{ outputs[0] }}", "echo {{ inputs | length }}"]
"#;

const KEYS_MORE: &str = r#"[step.report]
params = { month = "month" }
inputs = ['''
{% for d in month | days %}data/load/{{ d }}.txt
{% endfor %}''']
outputs = ["data/report/{{ month | strftime('%Y') }}/{{ month }}.txt"]
run = "cat {{ inputs }} > {{ outputs[0] }}"
"#;

/// Pieces a token mutation puts in: template syntax, keys, extreme values, odd text.
/// (Never `generate`: a mutated Fluxfile must not run commands at load.)
const TOKENS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'''",
    "\"\"\"",
    "=",
    ",",
    "\n",
    "#",
    "\\",
    "add_days(-1)",
    "add_days(1)",
    "add_hours(1)",
    "add_hours(-99999999)",
    "add_months(99999999999)",
    "add_weeks(-3)",
    "strftime('%Y')",
    "strftime('%s')",
    "ds_nodash",
    "hours",
    "days",
    "date_range(date, date)",
    "| raw",
    "| basename",
    "date",
    "hour",
    "month",
    "\"date\"",
    "\"hour\"",
    "\"month\"",
    "[\"eu\", \"us\"]",
    "inputs[0]",
    "outputs[99]",
    "inputs",
    "task",
    "step",
    "root",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999",
    "-1",
    "0",
    "1e308",
    "nan",
    "\"0\"",
    "\"99999999999d\"",
    "\"16E\"",
    "retries = 1000",
    "retry_backoff = 1e308",
    "retry_delay = \"1ms\"",
    "jobs = 1025",
    "max_tasks = 3",
    "timeout = \"0\"",
    "cpus = 4294967296",
    "start = \"0000-01-01\"",
    "end = \"9999-12-31\"",
    "start = \"2024-01-05\"",
    "end = \"2023-12-31\"",
    "schedule = \"@daily\"",
    "requires = [\"rollup\"]",
    "requires = [{ step = \"extract\", date = \"{{ date | add_days(1) }}\" }]",
    "params = { date = \"date\" }",
    "params = { hour = \"hour\" }",
    "params = { month = \"month\" }",
    "[step.x]",
    "[step.extract]",
    "[flux]",
    "[vars]",
    "[pools]",
    "include = [\"*.toml\"]",
    "action = \"copy\"",
    "sensor = true",
    "stage = false",
    "s3://bucket/key",
    "hdfs://nn:8020/",
    "user:pw@host",
    "../..",
    "/",
    "~",
    "é",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
];

/// splitmix64: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Byte offsets where words (runs of letters, digits, `_`) and other single bytes start.
fn tokens(text: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let start = i;
        if word(text[i]) {
            while i < text.len() && word(text[i]) {
                i += 1;
            }
        } else {
            i += 1;
        }
        out.push((start, i));
    }
    out
}

fn lines(text: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < text.len() {
        out.push((start, text.len()));
    }
    out
}

fn mutate(rng: &mut Rng, text: &mut Vec<u8>) {
    if text.is_empty() {
        text.extend_from_slice(b"[step.a]\n");
    }
    let n = text.len();
    match rng.below(12) {
        // bytes
        0 => {
            let i = rng.below(n);
            text[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(n);
            text[i] = rng.next() as u8;
        }
        2 => {
            let i = rng.below(n);
            let len = 1 + rng.below(16.min(n - i));
            text.drain(i..i + len);
        }
        3 => {
            let i = rng.below(n);
            let len = 1 + rng.below(64.min(n - i));
            let piece: Vec<u8> = text[i..i + len].to_vec();
            let at = rng.below(n);
            text.splice(at..at, piece);
        }
        4 => {
            let at = rng.below(n + 1);
            text.insert(at, rng.next() as u8);
        }
        // tokens
        5..=7 => {
            let toks = tokens(text);
            let (a, b) = toks[rng.below(toks.len())];
            let with = TOKENS[rng.below(TOKENS.len())].as_bytes().to_vec();
            text.splice(a..b, with);
        }
        8 => {
            let toks = tokens(text);
            let (a, _) = toks[rng.below(toks.len())];
            let with = TOKENS[rng.below(TOKENS.len())].as_bytes().to_vec();
            text.splice(a..a, with);
        }
        // lines
        9 => {
            let ls = lines(text);
            let (a, b) = ls[rng.below(ls.len())];
            let piece: Vec<u8> = text[a..b].to_vec();
            let (c, _) = ls[rng.below(ls.len())];
            text.splice(c..c, piece);
        }
        10 => {
            let ls = lines(text);
            let (a, b) = ls[rng.below(ls.len())];
            text.drain(a..b);
        }
        _ => {
            // A long run of one character (a long key, value or line).
            let at = rng.below(n + 1);
            let len = [100, 5_000, 100_000][rng.below(3)];
            let c = [b'x', b'{', b'[', b'"', b' '][rng.below(5)];
            text.splice(at..at, std::iter::repeat_n(c, len));
        }
    }
}

/// One run of flux: exit code (None: killed by a signal), stderr, elapsed; killed after HANG.
struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    hung: bool,
    stderr: String,
}

fn run(t: &Test, args: &[&str]) -> Run {
    let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    let mut child = t.command(&args).stdout(Stdio::null()).spawn().expect("start flux");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let started = Instant::now();
    let (status, hung) = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break (Some(s), false);
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stderr = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    use std::os::unix::process::ExitStatusExt;
    Run { code: status.and_then(|s| s.code()), signal: status.and_then(|s| s.signal()), hung, stderr }
}

/// Step names declared in the text: what follows `step.` (the rule of the module docs).
fn step_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("step.") {
        let rest = &text[i + 5..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// An exit-2 error says where: `--> FILE:LINE:COL`, or a step or task of the Fluxfile.
fn has_location(stderr: &str, text: &str) -> bool {
    let located = stderr.lines().any(|l| {
        l.trim_start().strip_prefix("--> ").is_some_and(|r| {
            let mut parts = r.rsplitn(3, ':');
            let col = parts.next().is_some_and(|c| c.parse::<u32>().is_ok());
            let line = parts.next().is_some_and(|c| c.parse::<u32>().is_ok());
            col && line && parts.next().is_some()
        })
    });
    located || step_names(text).iter().any(|n| stderr.contains(&format!("`{n}`")) || stderr.contains(&format!("{n}[")))
}

fn check(run: &Run, text: &str) -> Option<String> {
    if run.hung {
        return Some(format!("did not end within {HANG:?}"));
    }
    if let Some(sig) = run.signal {
        return Some(format!("killed by signal {sig}"));
    }
    if run.stderr.contains("panicked") || run.stderr.contains("RUST_BACKTRACE") {
        return Some("panicked".into());
    }
    match run.code {
        Some(0) => None,
        Some(2) if has_location(&run.stderr, text) => None,
        Some(2) => Some("an error without a location".into()),
        other => Some(format!("exit code {other:?}")),
    }
}

fn seed_text(name: &str) -> Vec<u8> {
    if name == "keys" {
        return KEYS_SEED.as_bytes().to_vec();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fluxfiles").join(name).join("Fluxfile");
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn copy_inputs(name: &str, t: &Test) {
    if name == "keys" {
        t.write("more.toml", KEYS_MORE);
        t.write("input/eu.csv", "2024-01-01,1\n");
        t.write("input/us.csv", "2024-01-02,2\n");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fluxfiles").join(name).join("input");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                t.write(&format!("input/{}", e.file_name().to_string_lossy()), b);
            }
        }
    }
}

fn findings_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("fuzz-findings")
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn mutated_fluxfiles_never_crash_hang_or_lose_their_location() {
    let cases = env_num("FLUX_FUZZ_CASES", DEFAULT_CASES as u64) as usize;
    let seed = env_num("FLUX_FUZZ_SEED", DEFAULT_SEED);
    let workers = 2;
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            std::thread::spawn(move || {
                let mut findings = Vec::new();
                // Runs that exited 0 and 2, for the summary.
                let mut codes = [0usize; 2];
                // One project per seed and worker, the Fluxfile rewritten for each case.
                let projects: Vec<Test> = SEEDS
                    .iter()
                    .map(|(name, _)| {
                        let t = Test::new();
                        copy_inputs(name, &t);
                        t
                    })
                    .collect();
                for case in (w..cases).step_by(workers) {
                    let mut rng = Rng(seed ^ (case as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                    let si = rng.below(SEEDS.len());
                    let (name, args) = SEEDS[si];
                    let mut text = seed_text(name);
                    for _ in 0..1 + rng.below(4) {
                        mutate(&mut rng, &mut text);
                    }
                    let t = &projects[si];
                    t.write("Fluxfile", &text);
                    t.remove_if_exists(".flux");
                    let lossy = String::from_utf8_lossy(&text).into_owned();
                    let mut build = vec!["build", "-n"];
                    build.extend_from_slice(args);
                    for cmd in [vec!["check"], build] {
                        let r = run(t, &cmd);
                        match r.code {
                            Some(0) => codes[0] += 1,
                            Some(2) => codes[1] += 1,
                            _ => {}
                        }
                        if let Some(why) = check(&r, &lossy) {
                            findings.push((case, name, cmd.join(" "), why, text.clone(), r.stderr));
                            break;
                        }
                    }
                }
                (findings, codes)
            })
        })
        .collect();
    let mut findings = Vec::new();
    let mut codes = [0usize; 2];
    for h in handles {
        let (f, c) = h.join().expect("a fuzz worker");
        findings.extend(f);
        codes[0] += c[0];
        codes[1] += c[1];
    }
    findings.sort_by_key(|f| f.0);
    eprintln!(
        "fuzz: {cases} cases (seed {seed:#x}) in {:.1}s: {} runs exited 0, {} exited 2; {} findings",
        started.elapsed().as_secs_f64(),
        codes[0],
        codes[1],
        findings.len()
    );
    if findings.is_empty() {
        return;
    }
    let dir = findings_dir();
    let _ = std::fs::create_dir_all(&dir);
    // Findings by kind: why, and the first line of stderr without what follows a colon.
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, _, cmd, why, _, stderr) in &findings {
        let first = stderr.lines().next().unwrap_or("").split(": ").take(2).collect::<Vec<_>>().join(": ");
        let first: Vec<&str> = first.split(' ').map(|w| if w.starts_with('/') { "PATH" } else { w }).collect();
        let first = first.join(" ");
        *kinds.entry(format!("{cmd}: {why}: {}", first.chars().take(80).collect::<String>())).or_default() += 1;
    }
    let mut report: String = kinds.iter().map(|(k, n)| format!("\n{n:>5} × {k}")).collect();
    for (case, name, cmd, why, text, stderr) in findings.iter().take(10) {
        let file = dir.join(format!("{seed:x}-{case}-{name}.Fluxfile"));
        let _ = std::fs::write(&file, text);
        let shown = String::from_utf8_lossy(&text[..text.len().min(3000)]).into_owned();
        report.push_str(&format!(
            "\n=== case {case} (seed {name}), `flux {cmd}`: {why}\n--- saved as {}\n--- Fluxfile (first 3000 bytes):\n{shown}\n--- stderr (first 3000 bytes):\n{}\n",
            file.display(),
            stderr.chars().take(3000).collect::<String>()
        ));
    }
    panic!("{} of {cases} fuzz cases failed (the first 10 below){report}", findings.len());
}
