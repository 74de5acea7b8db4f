//! The download cache of remote inputs (`<state>/cache`, `[flux] cache_max`, `flux cache`):
//! least-recently-used eviction at the end of a build, `flux cache` and
//! `flux cache prune [--all]`, and leases that keep an entry a running task reads, even
//! against a prune in another process. Inputs live on the S3 test server.

use std::time::Duration;

use serde_json::Value;

use crate::operations::wait_until;
use crate::servers::s3;
use crate::stores::{requests, s3_test};
use crate::test::*;

/// Each input is this many bytes; an entry is a little more (its marker holds the URI).
const SIZE: usize = 1000;

/// A bucket with `in/a.txt`, `in/b.txt`, `in/c.txt` (SIZE bytes each, made of their
/// letter), and a project whose step `use[n]` counts the bytes of `in/n.txt` through
/// the cache. `flux` is the `[flux]` table's body.
fn project(flux: &str) -> (Test, String) {
    let bucket = s3().bucket("cache");
    for n in ["a", "b", "c"] {
        s3().put(&bucket, &format!("in/{n}.txt"), n.repeat(SIZE).as_bytes());
    }
    let t = s3_test().fluxfile(&fluxfile(&bucket, flux));
    (t, bucket)
}

fn fluxfile(bucket: &str, flux: &str) -> String {
    format!(
        "[flux]\n{flux}\n\n[step.use]\nparams = {{ n = [\"a\", \"b\", \"c\"] }}\ninputs = [\"s3://{bucket}/in/{{{{ n }}}}.txt\"]\n\
         outputs = [\"out/{{{{ n }}}}.txt\"]\nrun = \"wc -c < {{{{ inputs[0] }}}} | tr -d ' ' > {{{{ outputs[0] }}}}\"\n"
    )
}

/// `flux build ARGS --output json`, which must succeed with only its task lines on stderr.
fn build(t: &Test, args: &[&str]) -> Output {
    let o = t.run_args(json_build(args));
    o.assert_status(0);
    assert!(o.stderr().lines().all(|l| l.starts_with("ok ")), "{}", o.describe());
    o
}

/// `flux cache --output json`.
fn cache(t: &Test) -> Value {
    let o = t.run_args(["cache", "--output", "json"]);
    o.assert_status(0).stderr_is("");
    o.json()
}

/// The inputs the cache holds, least recently used first.
fn inputs(doc: &Value) -> Vec<String> {
    doc["entries"].as_array().unwrap().iter().map(|e| e["input"].as_str().unwrap_or_default().to_string()).collect()
}

fn uri(bucket: &str, n: &str) -> String {
    format!("s3://{bucket}/in/{n}.txt")
}

#[test]
fn least_recently_used_entries_are_evicted_after_a_build_down_to_cache_max() {
    // Room for two entries, not three.
    let (t, bucket) = project("cache_max = \"2500\"");
    build(&t, &["use[a]"]);
    build(&t, &["use[b]"]);
    assert_eq!(inputs(&cache(&t)), [uri(&bucket, "a"), uri(&bucket, "b")]);
    // a is read again: b is now the least recently used.
    build(&t, &["--force", "use[a]"]);
    assert_eq!(inputs(&cache(&t)), [uri(&bucket, "b"), uri(&bucket, "a")]);
    let o = t.run_args(["build", "-v", "use[c]", "--output", "json"]);
    o.assert_status(0).stderr_has("flux: cache: pruned 1 entry");
    let doc = cache(&t);
    assert_eq!(inputs(&doc), [uri(&bucket, "a"), uri(&bucket, "c")], "b went first");
    let size = doc["size"].as_u64().unwrap();
    assert!(size <= 2500 && size >= 2 * SIZE as u64, "{doc}");
    assert_eq!(doc["cache_max"], 2500);
    assert_eq!(t.read("out/c.txt").trim(), SIZE.to_string());
    // An evicted input is fetched again when a task needs it.
    let o = t.run_args(["build", "-v", "--force", "use[b]", "--output", "json"]);
    o.assert_status(0);
    assert_eq!(requests(&o).get("GET"), Some(&1), "{}", o.describe());
    assert_eq!(inputs(&cache(&t)), [uri(&bucket, "c"), uri(&bucket, "b")]);
}

#[test]
fn flux_cache_lists_entries_and_prune_brings_it_down_to_cache_max_or_empties_it() {
    let (t, bucket) = project("cache_max = \"10G\"");
    build(&t, &["use"]);
    let o = t.run_args(["cache"]);
    o.assert_status(0).stderr_is("");
    let first = o.stdout.lines().next().unwrap_or_default().to_string();
    assert!(first.ends_with("/.flux/cache: 3 entries, 3.0 KiB (cache_max 10.0 GiB)"), "{}", o.describe());
    assert_eq!(o.stdout.lines().count(), 4, "{}", o.describe());
    for n in ["a", "b", "c"] {
        o.stdout_has(&uri(&bucket, n));
    }
    let doc = cache(&t);
    assert_eq!(doc["cache_max"], 10u64 << 30);
    assert_eq!(doc["cache_max_configured"], true);
    let entries = doc["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let sum: u64 = entries.iter().map(|e| e["size"].as_u64().unwrap()).sum();
    assert_eq!(doc["size"].as_u64(), Some(sum));
    assert!(entries.iter().all(|e| e["in_use"] == false && e["key"].as_str().unwrap().len() == 32), "{doc}");

    // Under the limit: nothing to do.
    let o = t.run_args(["cache", "prune"]);
    o.assert_status(0).stderr_is("").stdout_has("pruned 0 entries");
    // A lower limit: down to the most recently used entry.
    let newest = inputs(&doc).pop().unwrap();
    t.write("Fluxfile", fluxfile(&bucket, "cache_max = \"1500\""));
    let o = t.run_args(["cache", "prune", "--output", "json"]);
    o.assert_status(0).stderr_is("");
    let p = o.json();
    assert_eq!(p["removed"].as_array().unwrap().len(), 2, "{p}");
    assert_eq!((p["left"].as_u64(), p["limit"].as_u64()), (Some(1), Some(1500)));
    assert_eq!(inputs(&cache(&t)), [newest]);
    // --all: nothing left, not even the entry's folder.
    let o = t.run_args(["cache", "prune", "--all"]);
    o.assert_status(0).stderr_is("").stdout_has("pruned 1 entry").stdout_has("0 entries left, 0 B");
    assert!(cache(&t)["entries"].as_array().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(t.abs(".flux/cache")).unwrap().count(), 0);
    // The next task that needs an input downloads it again.
    let o = t.run_args(["build", "-v", "--force", "use[a]", "--output", "json"]);
    o.assert_status(0);
    assert_eq!(requests(&o).get("GET"), Some(&1), "{}", o.describe());
    assert_eq!(t.read("out/a.txt").trim(), SIZE.to_string());
}

#[test]
fn without_cache_max_the_limit_is_a_share_of_the_free_disk() {
    let (t, _) = project("");
    build(&t, &["use"]);
    let doc = cache(&t);
    assert_eq!(doc["cache_max_configured"], false);
    // A tenth of the free space (plus the cache's own few KiB): surely more than the cache.
    assert!(doc["cache_max"].as_u64().unwrap() > doc["size"].as_u64().unwrap(), "{doc}");
    assert_eq!(doc["entries"].as_array().unwrap().len(), 3, "nothing evicted: {doc}");
    let o = t.run_args(["cache"]);
    o.assert_status(0).stderr_is("").stdout_has("% of the free disk)");
}

#[test]
fn a_bad_cache_max_is_a_fluxfile_error() {
    for bad in ["\"10 X\"", "\"-1G\"", "10"] {
        let t = Test::new()
            .fluxfile(&format!("[flux]\ncache_max = {bad}\n\n[step.a]\noutputs = [\"a\"]\nrun = \"touch a\"\n"));
        for args in [&["cache"][..], &["build"][..], &["check"][..]] {
            let o = t.run_args(args);
            o.assert_status(2).stderr_has("--> Fluxfile:2:13").stderr_has("cache_max");
            assert!(o.stdout.is_empty(), "{}", o.describe());
        }
    }
}

#[test]
fn an_entry_a_running_task_reads_survives_a_concurrent_prune_all() {
    let (t, bucket) = project("cache_max = \"10G\"");
    // b is cached and not in use.
    build(&t, &["use[b]"]);
    // slow reads a's cached copy only after the prune.
    t.write(
        "Fluxfile",
        format!(
            "{}\n[step.slow]\ninputs = [\"s3://{bucket}/in/a.txt\"]\noutputs = [\"slow.txt\"]\n\
             run = \"echo {{{{ inputs[0] }}}} > path.txt; touch started; while [ ! -e go ]; do sleep 0.05; done; cat {{{{ inputs[0] }}}} > {{{{ outputs[0] }}}}\"\n",
            fluxfile(&bucket, "cache_max = \"10G\"")
        ),
    );
    let bg = t.spawn_args(["build", "slow", "--output", "json"]);
    let started = wait_until(Duration::from_secs(30), || t.exists("started"));
    if !started {
        t.write("go", "");
        panic!("the task never started\n{}", t.finish(bg).describe());
    }
    let cached = t.read("path.txt").trim().to_string();
    assert!(cached.contains("/.flux/cache/"), "{cached}");

    let doc = cache(&t);
    let in_use: Vec<&Value> = doc["entries"].as_array().unwrap().iter().filter(|e| e["in_use"] == true).collect();
    assert_eq!(in_use.len(), 1, "{doc}");
    assert_eq!(in_use[0]["input"], uri(&bucket, "a"));
    let o = t.run_args(["cache"]);
    o.assert_status(0).stderr_is("").stdout_has(&format!("{}  (in use)", uri(&bucket, "a")));

    // Another process empties the cache while the task holds a.
    let o = t.run_args(["cache", "prune", "--all", "--output", "json"]);
    o.assert_status(0).stderr_is("");
    let p = o.json();
    let names = |k: &str| -> Vec<String> {
        p[k].as_array().unwrap().iter().map(|e| e["input"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names("removed"), [uri(&bucket, "b")]);
    assert_eq!(names("in_use"), [uri(&bucket, "a")]);
    assert!(std::path::Path::new(&cached).exists(), "the prune deleted what a running task reads");

    t.write("go", "");
    let o = t.finish(bg);
    o.assert_status(0).stderr_has("ok   slow").stderr_lacks("warning").assert_ran(&["slow"]);
    assert_eq!(t.read("slow.txt"), "a".repeat(SIZE));
    // Once the task is done, the entry may go.
    let o = t.run_args(["cache", "prune", "--all"]);
    o.assert_status(0).stderr_is("").stdout_has("pruned 1 entry");
    assert!(!std::path::Path::new(&cached).exists());
}
