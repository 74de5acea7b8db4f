//! The example pipelines in `fluxfiles/`, run for real with the `flux` binary.
//!
//! Each test copies one example folder (without the `data/` and `.flux/` a local run may
//! have left there) into a temporary folder, checks and builds it, compares the outputs
//! with what the example's generator implies, builds again to see nothing run, then
//! edits an input or deletes an output and checks that exactly the expected tasks rerun.
//!
//! flux runs through the harness (`crate::test`): each example is copied into a `Test`'s
//! folder, and every run has its timeout and its checks of status and stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::operations::wait_until;
use crate::test::{Output, Test};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fluxfiles")
}

/// Folders a build writes; never copied from the source tree.
const GENERATED: &[&str] = &["data", ".flux", "build", "landing"];

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let dest = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            if GENERATED.iter().any(|g| name == *g) {
                continue;
            }
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A fresh copy of `fluxfiles/<name>` in a test's temporary folder.
fn example(name: &str) -> Test {
    let t = Test::new();
    copy_tree(&examples_dir().join(name), &t.path());
    t
}

fn flux(t: &Test, args: &[&str]) -> Output {
    t.run_args(args.iter().copied())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run flux, insist on exit 0 (and nothing on stderr but the tasks' `ok` lines), return
/// stdout.
fn ok(t: &Test, args: &[&str]) -> String {
    flux(t, args).assert_status(0).stdout.clone()
}

/// `flux build ARGS --output json`: the parsed document (exit 0 required).
fn build_json(t: &Test, args: &[&str]) -> Value {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    flux(t, &all).assert_status(0).json()
}

/// Ids of the tasks that ran (status `success`), sorted.
fn ran(doc: &Value) -> Vec<String> {
    let mut ids: Vec<String> = doc["tasks"]
        .as_array()
        .expect("tasks is an array")
        .iter()
        .filter(|t| t["status"] == "success")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn summary(doc: &Value, key: &str) -> u64 {
    doc["summary"][key].as_u64().unwrap_or_else(|| panic!("summary.{key} missing in {doc}"))
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn append(dir: &Path, rel: &str, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.join(rel)).unwrap();
    writeln!(f, "{line}").unwrap();
}

fn strs(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------

#[test]
fn every_fluxfile_under_fluxfiles_passes_check() {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let p = entry.path();
            let name = entry.file_name();
            if entry.file_type().unwrap().is_dir() {
                if !GENERATED.iter().any(|g| name == *g) {
                    walk(&p, found);
                }
            } else if name == "Fluxfile" || name == "Fluxfile.toml" {
                found.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(&examples_dir(), &mut found);
    found.sort();
    assert!(found.len() >= 6, "expected the hourly, monthly, rollup and three from-* examples, found {found:?}");
    for f in &found {
        let out = Test::new().run_args(["check", "-f", f.to_str().unwrap()]);
        out.assert_status(0);
        assert!(out.stdout.ends_with("OK\n"), "unexpected output: {}", out.describe());
    }
}

// --- hourly ----------------------------------------------------------------------------

const COUNTRIES: [&str; 4] = ["DE", "FR", "JP", "US"];

/// What count[date] must say, from the generators in fluxfiles/hourly/Fluxfile:
/// hour h of day d has 20 + h impressions, the i-th from ip 10.0.0.((7i + 3h + d) % 20);
/// geoip knows ips 0..15, ip n in COUNTRIES[n % 4]; unknown ips drop out of the join.
fn expected_counts(day: u32) -> BTreeMap<&'static str, u32> {
    let mut c = BTreeMap::new();
    for h in 0..24 {
        for i in 0..20 + h {
            let ip = (i * 7 + h * 3 + day) % 20;
            if ip < 16 {
                *c.entry(COUNTRIES[(ip % 4) as usize]).or_insert(0) += 1;
            }
        }
    }
    c
}

fn counts_file(c: &BTreeMap<&str, u32>) -> String {
    c.iter().map(|(k, v)| format!("{k},{v}\n")).collect()
}

#[test]
fn hourly_example_joins_every_hour_and_counts_the_day_per_country() {
    let t = example("hourly");
    let dir = &t.path();
    ok(&t, &["check"]);

    let doc = build_json(&t, &["--date", "2024-03-01"]);
    // 24 gen_impressions + 24 join + geoip + count
    assert_eq!(summary(&doc, "ran"), 50, "{doc}");
    assert_eq!(summary(&doc, "failed"), 0);
    let expected = expected_counts(1);
    assert_eq!(read(dir, "data/counts/2024-03-01.csv"), counts_file(&expected));
    assert_eq!(expected["JP"], 158, "the generator changed: update the README's numbers too");

    // A joined hour holds only known ips, with their country.
    let joined = read(dir, "data/joined/2024-03-01T05.csv");
    assert!(!joined.is_empty());
    for line in joined.lines() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 4, "{line}");
        let ip: u32 = f[1].strip_prefix("10.0.0.").unwrap().parse().unwrap();
        assert!(ip < 16, "{line}");
        assert_eq!(f[3], COUNTRIES[(ip % 4) as usize], "{line}");
    }

    // Nothing changed: nothing runs, whichever way the day is asked for.
    let doc = build_json(&t, &["--date", "2024-03-01"]);
    assert_eq!(summary(&doc, "ran"), 0, "{doc}");
    assert_eq!(summary(&doc, "skipped"), 50);
    let doc = build_json(&t, &["count", "--date-range", "2024-03-01T00..2024-03-01T23"]);
    assert_eq!(summary(&doc, "ran"), 0, "{doc}");
    let doc = build_json(&t, &["data/counts/2024-03-01.csv"]);
    assert_eq!(summary(&doc, "ran"), 0, "{doc}");

    // An impression from an ip geoip does not know: the join reruns, writes the same
    // bytes, and count is skipped (early cutoff).
    append(dir, "data/raw/impressions/2024-03-01T05.csv", "2024-03-01T05:59,10.0.0.19,ad9");
    let doc = build_json(&t, &["--date", "2024-03-01"]);
    assert_eq!(ran(&doc), strs(&["join[2024-03-01T05]"]), "{doc}");
    let join = doc["tasks"].as_array().unwrap().iter().find(|t| t["id"] == "join[2024-03-01T05]").unwrap();
    assert_eq!(join["reason"], "input-changed");

    // An impression from a Japanese ip: the join and the count rerun, JP goes up by one.
    append(dir, "data/raw/impressions/2024-03-01T05.csv", "2024-03-01T05:58,10.0.0.2,ad9");
    let doc = build_json(&t, &["--date", "2024-03-01"]);
    assert_eq!(ran(&doc), strs(&["join[2024-03-01T05]", "count[2024-03-01]"]), "{doc}");
    let mut more = expected.clone();
    *more.get_mut("JP").unwrap() += 1;
    assert_eq!(read(dir, "data/counts/2024-03-01.csv"), counts_file(&more));

    // A deleted output is rebuilt alone: the same bytes come back, count is skipped.
    std::fs::remove_file(dir.join("data/joined/2024-03-01T07.csv")).unwrap();
    let dry = ok(&t, &["build", "--date", "2024-03-01", "-n"]);
    assert!(dry.contains("would run join[2024-03-01T07] (missing-output)\n"), "{dry}");
    let doc = build_json(&t, &["--date", "2024-03-01"]);
    assert_eq!(ran(&doc), strs(&["join[2024-03-01T07]"]), "{doc}");
    assert_eq!(read(dir, "data/counts/2024-03-01.csv"), counts_file(&more));

    let doc = build_json(&t, &["--date", "2024-03-01"]);
    assert_eq!(summary(&doc, "ran"), 0, "{doc}");
}

#[test]
fn hourly_example_builds_one_day_from_an_hour_range() {
    let t = example("hourly");
    let dir = &t.path();
    let doc = build_json(&t, &["count", "--date-range", "2024-03-02T00..2024-03-02T23"]);
    assert_eq!(summary(&doc, "ran"), 50, "{doc}");
    assert_eq!(read(dir, "data/counts/2024-03-02.csv"), counts_file(&expected_counts(2)));
    assert!(!dir.join("data/counts/2024-03-01.csv").exists());
}

// --- monthly ---------------------------------------------------------------------------

/// What wordcount[2024-02] must say, from fluxfiles/monthly/Fluxfile: day d keeps the
/// corpus lines n (1-based) with (n + d) % 3 == 0; words are runs of ASCII letters,
/// lower-cased; sorted by count (descending), then by word; `word count` per line.
fn expected_wordcount(corpus: &str, days: u32, extra: &[&str]) -> String {
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let mut add = |line: &str| {
        for w in line.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()) {
            *counts.entry(w.to_ascii_lowercase()).or_insert(0) += 1;
        }
    };
    for d in 1..=days {
        for (i, line) in corpus.lines().enumerate() {
            if (i as u32 + 1 + d).is_multiple_of(3) {
                add(line);
            }
        }
    }
    for line in extra {
        add(line);
    }
    let mut v: Vec<(String, u32)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.iter().map(|(w, c)| format!("{w} {c}\n")).collect()
}

#[test]
fn monthly_example_counts_the_words_of_every_day_of_the_month() {
    let t = example("monthly");
    let dir = &t.path();
    ok(&t, &["check"]);
    let corpus = read(dir, "input/corpus.txt");

    // --date gives the month; wordcount[2024-02] pulls in all 29 days of February 2024.
    let doc = build_json(&t, &["--date", "2024-02-01"]);
    assert_eq!(summary(&doc, "ran"), 30, "{doc}");
    for d in 1..=29 {
        assert!(dir.join(format!("data/text/2024-02-{d:02}.txt")).exists(), "day {d}");
    }
    assert_eq!(read(dir, "data/wordcount/2024-02.txt"), expected_wordcount(&corpus, 29, &[]));

    let doc = build_json(&t, &["--date", "2024-02-01"]);
    assert_eq!(summary(&doc, "ran"), 0, "{doc}");
    let doc = build_json(&t, &["wordcount", "--param", "month=2024-02"]);
    assert_eq!(summary(&doc, "ran"), 0, "{doc}");

    // A day's text edited by hand: only the month's count reruns.
    append(dir, "data/text/2024-02-10.txt", "Zebra");
    let doc = build_json(&t, &["wordcount[2024-02]"]);
    assert_eq!(ran(&doc), strs(&["wordcount[2024-02]"]), "{doc}");
    let got = read(dir, "data/wordcount/2024-02.txt");
    assert_eq!(got, expected_wordcount(&corpus, 29, &["Zebra"]));
    assert!(got.ends_with("zebra 1\n"), "{got}");

    // Another day's text deleted: it is made again, identical, so the count is skipped.
    std::fs::remove_file(dir.join("data/text/2024-02-20.txt")).unwrap();
    let doc = build_json(&t, &["--date", "2024-02-01"]);
    assert_eq!(ran(&doc), strs(&["daily_text[2024-02-20]"]), "{doc}");

    // A month of 31 days.
    let doc = build_json(&t, &["wordcount", "--param", "month=2024-03"]);
    assert_eq!(summary(&doc, "ran"), 32, "{doc}");
    assert_eq!(read(dir, "data/wordcount/2024-03.txt"), expected_wordcount(&corpus, 31, &[]));
}

// --- rollup ----------------------------------------------------------------------------

#[test]
fn rollup_example_adds_each_day_to_yesterdays_totals() {
    let t = example("rollup");
    let dir = &t.path();
    ok(&t, &["check"]);

    let doc = build_json(&t, &["--date-range", "2024-01-01..2024-01-07"]);
    assert_eq!(summary(&doc, "ran"), 14, "{doc}");
    assert_eq!(read(dir, "data/rollup/2024-01-01.csv"), "apples,3\npears,2\n");
    assert_eq!(read(dir, "data/rollup/2024-01-02.csv"), "apples,8\npears,2\nplums,1\n");
    assert_eq!(read(dir, "data/rollup/2024-01-07.csv"), "apples,18\npears,11\nplums,10\n");
    // The first day has no yesterday: its input was dropped, not missing.
    // (The log's last line is what the command printed; the `$ ` lines before it are the
    // commands.)
    assert!(ok(&t, &["logs", "rollup[2024-01-01]"]).ends_with("\nrollup[2024-01-01] read 1 inputs\n"));
    assert!(ok(&t, &["logs", "rollup[2024-01-02]"]).ends_with("\nrollup[2024-01-02] read 2 inputs\n"));

    let doc = build_json(&t, &["--date-range", "2024-01-01..2024-01-07"]);
    assert_eq!(summary(&doc, "ran"), 0, "{doc}");

    // The ledger (a source) changes on 2024-01-03: every extract rereads it, but only
    // that day's extract comes out different, so the rollups of 01 and 02 are skipped
    // and those from 03 on rerun, each because yesterday's total changed.
    let ledger = read(dir, "input/sales.csv").replace("2024-01-03,pears,4", "2024-01-03,pears,5");
    std::fs::write(dir.join("input/sales.csv"), ledger).unwrap();
    let doc = build_json(&t, &["--date-range", "2024-01-01..2024-01-07"]);
    let mut want: Vec<String> = (1..=7).map(|d| format!("extract[2024-01-{d:02}]")).collect();
    want.extend((3..=7).map(|d| format!("rollup[2024-01-{d:02}]")));
    want.sort();
    assert_eq!(ran(&doc), want, "{doc}");
    assert_eq!(read(dir, "data/rollup/2024-01-07.csv"), "apples,18\npears,12\nplums,10\n");

    let doc = build_json(&t, &["--date-range", "2024-01-01..2024-01-07"]);
    assert_eq!(summary(&doc, "ran"), 0, "{doc}");
}

#[test]
fn rollup_example_builds_the_chain_up_to_one_task() {
    let t = example("rollup");
    let dir = &t.path();
    // One task id: yesterday's rollup is a dependency, back to [flux] start.
    let doc = build_json(&t, &["rollup[2024-01-03]"]);
    let want = strs(&[
        "extract[2024-01-01]",
        "extract[2024-01-02]",
        "extract[2024-01-03]",
        "rollup[2024-01-01]",
        "rollup[2024-01-02]",
        "rollup[2024-01-03]",
    ]);
    assert_eq!(ran(&doc), want, "{doc}");
    assert_eq!(read(dir, "data/rollup/2024-01-03.csv"), "apples,9\npears,6\nplums,1\n");
    assert!(!dir.join("data/rollup/2024-01-04.csv").exists());
}

// --- from-make -------------------------------------------------------------------------

/// The ids of the tasks the JSON document lists with status `skipped`, sorted.
fn skipped(doc: &Value) -> Vec<String> {
    let mut ids: Vec<String> = doc["tasks"]
        .as_array()
        .expect("tasks is an array")
        .iter()
        .filter(|t| t["status"] == "skipped")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn from_make_example_compiles_links_and_tests_a_c_program() {
    let t = example("from-make");
    let dir = &t.path();
    ok(&t, &["check"]);

    let doc = build_json(&t, &[]);
    assert_eq!(ran(&doc), strs(&["compile[greet]", "compile[main]", "link", "test"]), "{doc}");
    let hello = Command::new(dir.join("build/hello")).arg("flux").output().unwrap();
    assert_eq!(text(&hello.stdout), "Hello, flux!\n");

    let doc = build_json(&t, &[]);
    assert_eq!(summary(&doc, "ran"), 0, "{doc}");

    // A comment in the header: both units recompile (make would relink too), but the
    // object files come out the same, so link and test are skipped (early cutoff).
    append(dir, "src/greet.h", "/* a comment */");
    let doc = build_json(&t, &[]);
    assert_eq!(ran(&doc), strs(&["compile[greet]", "compile[main]"]), "{doc}");
    assert_eq!(skipped(&doc), strs(&["link", "test"]), "{doc}");

    // A new greeting: greet recompiles, the program relinks, and the test fails.
    let src = read(dir, "src/greet.c").replace("Hello, %s!", "Hi, %s!");
    std::fs::write(dir.join("src/greet.c"), src).unwrap();
    let out = flux(&t, &["build", "--output", "json"]);
    out.assert_status(1).stderr_has("FAIL test");
    let doc = out.json();
    assert_eq!(ran(&doc), strs(&["compile[greet]", "link"]), "{doc}");
    assert_eq!(summary(&doc, "failed"), 1, "{doc}");

    // The phony step alone, forced like a .PHONY target: `--from test`.
    let src = read(dir, "src/greet.c").replace("Hi, %s!", "Hello, %s!");
    std::fs::write(dir.join("src/greet.c"), src).unwrap();
    let doc = build_json(&t, &[]);
    assert_eq!(ran(&doc), strs(&["compile[greet]", "link", "test"]), "{doc}");
    let doc = build_json(&t, &["test", "--from", "test"]);
    assert_eq!(ran(&doc), strs(&["test"]), "{doc}");
}

// --- from-luigi ------------------------------------------------------------------------

/// What wordcount[2024-01-DD] must say: the words of text/ for the seven days that end
/// on DD (from 2024-01-01, the Fluxfile's start), most frequent first, then by word.
fn expected_luigi_count(dir: &Path, last: u32) -> String {
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for d in last.saturating_sub(6).max(1)..=last {
        for w in read(dir, &format!("text/2024-01-{d:02}.txt")).split_whitespace() {
            *counts.entry(w.to_lowercase()).or_insert(0) += 1;
        }
    }
    let mut v: Vec<(String, u32)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.iter().map(|(w, c)| format!("{w} {c}\n")).collect()
}

#[test]
fn from_luigi_example_counts_the_words_of_a_seven_day_window() {
    let t = example("from-luigi");
    let dir = &t.path();
    ok(&t, &["check"]);

    let doc = build_json(&t, &["wordcount", "--date", "2024-01-07"]);
    assert_eq!(summary(&doc, "ran"), 8, "{doc}");
    assert_eq!(read(dir, "data/counts/2024-01-07.txt"), expected_luigi_count(dir, 7));

    let doc = build_json(&t, &["wordcount", "--date", "2024-01-07"]);
    assert_eq!(summary(&doc, "ran"), 0, "{doc}");

    // Every day's window: before the start, a window is shorter (inputs dropped).
    let doc = build_json(&t, &["--date-range", "2024-01-01..2024-01-07"]);
    assert_eq!(summary(&doc, "ran"), 6, "{doc}");
    assert_eq!(read(dir, "data/counts/2024-01-02.txt"), expected_luigi_count(dir, 2));

    // A day's text edited: its words and the windows that hold it rerun.
    append(dir, "text/2024-01-06.txt", "Zebra crossing");
    let doc = build_json(&t, &["--date-range", "2024-01-01..2024-01-07"]);
    assert_eq!(ran(&doc), strs(&["wordcount[2024-01-06]", "wordcount[2024-01-07]", "words[2024-01-06]"]), "{doc}");
    assert_eq!(read(dir, "data/counts/2024-01-07.txt"), expected_luigi_count(dir, 7));

    // A missing source fails with its path, like an ExternalTask that is not complete.
    let out = flux(&t, &["build", "wordcount", "--date", "2024-01-08"]);
    out.assert_status(1).stderr_has("missing source `text/2024-01-08.txt`");
}

// --- from-airflow ----------------------------------------------------------------------

fn export(dir: &Path, date: &str, hours: &str) {
    let out = Command::new("sh").arg("export.sh").arg(date).arg(hours).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "export.sh: {}", text(&out.stderr));
}

/// What daily[date] must say, from export.sh: hour h has 5 + h events, the i-th of kind
/// ("view click view buy view")[(i + h) % 5].
fn expected_daily() -> String {
    let kinds = ["view", "click", "view", "buy", "view"];
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for h in 0..24 {
        for i in 0..5 + h {
            *counts.entry(kinds[(i + h) % 5]).or_insert(0) += 1;
        }
    }
    counts.iter().map(|(k, n)| format!("{k},{n}\n")).collect()
}

#[test]
fn from_airflow_example_waits_for_late_hours_then_counts_the_day() {
    let t = example("from-airflow");
    let dir = &t.path();
    ok(&t, &["check"]);

    // Three hours have landed; the build starts, the sensors of the other 21 wait, and
    // the exporter delivers them a moment later.
    export(dir, "2024-03-01", "00 01 02");
    let child = t.spawn_args(["build", "--date", "2024-03-01", "--output", "json"]);
    // The build is under way once an hour that had landed is ingested; the sensors of the
    // other hours are then waiting.
    let ingesting = wait_until(Duration::from_secs(60), || !t.tree("data/events").is_empty());
    let rest: Vec<String> = (3..24).map(|h| format!("{h:02}")).collect();
    export(dir, "2024-03-01", &rest.join(" "));
    let out = child.wait(Duration::from_secs(120));
    out.stderr_has("wait wait_for_export[2024-03-01T03]: sensor not ready");
    assert!(ingesting, "no hour was ingested within a minute\n{}", out.describe());
    out.assert_status(0);
    let doc = out.json();
    // 24 sensors, 24 ingests and the day.
    assert_eq!(summary(&doc, "ran"), 49, "{doc}");
    assert_eq!(read(dir, "data/daily/2024-03-01.csv"), expected_daily());
    assert_eq!(expected_daily(), "buy,80\nclick,79\nview,237\n", "the generator changed: update the docs");

    let doc = build_json(&t, &["--date", "2024-03-01"]);
    assert_eq!(summary(&doc, "ran"), 0, "{doc}");

    // The exporter redelivers one hour with one more event: that hour and the day rerun.
    append(dir, "landing/2024-03-01T05.csv", "2024-03-01T05:59,u1,buy");
    let doc = build_json(&t, &["--date", "2024-03-01"]);
    assert_eq!(ran(&doc), strs(&["daily[2024-03-01]", "ingest[2024-03-01T05]"]), "{doc}");
    assert!(read(dir, "data/daily/2024-03-01.csv").starts_with("buy,81\n"));
}

#[test]
fn from_airflow_example_is_kept_up_to_date_by_the_scheduler() {
    let t = example("from-airflow");
    let dir = &t.path();
    export(dir, "2024-03-01", &(0..24).map(|h| format!("{h:02}")).collect::<Vec<_>>().join(" "));
    // Half past midnight: the 24 hours of 2024-03-01 and the day itself have ended.
    flux(&t, &["schedule", "--once", "--now", "2024-03-02T00:30:00Z"]).assert_status(0);
    assert_eq!(read(dir, "data/daily/2024-03-01.csv"), expected_daily());
    assert!(!dir.join("sla-misses.log").exists(), "built before its deadline");
    // The next tick has nothing new to do.
    flux(&t, &["schedule", "--once", "--now", "2024-03-02T00:45:00Z"]).assert_status(0);
    let history = ok(&t, &["history", "--output", "json"]);
    assert!(history.contains("\"schedule\""), "{history}");
}
