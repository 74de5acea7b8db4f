//! The pipeline every remote store must run the same way (SPEC §4, §5), one function run
//! against a real server of each kind on 127.0.0.1: S3 (moto), HDFS (a MiniDFSCluster),
//! GCS (fake-gcs-server) and Azure (Azurite), all started by `servers` and installed by
//! `.ci/setup-tests`.
//!
//! A date-range build; a no-op that sends one LIST per prefix and no HEAD, GET or PUT
//! (counted by flux and, on the HTTP stores, on the wire by a proxy in front of the
//! server); a changed object that reruns exactly its consumers; a failed task that leaves
//! nothing; a `kill -9`'d build that leaves nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::operations::{kill_marked, sleep_marker, sleeps_with, wait_until};
use crate::servers::{Azure, CountingProxy, Gcs, Objects, azure, counting_proxy, gcs, gcs_proxy, hdfs, s3};
use crate::stores::{build, project, requests};
use crate::test::*;

/// One store under test: a fresh root (bucket, container or folder), the environment
/// that points flux at it, a client that looks inside it without flux, and the proxy
/// that counts flux's requests on the wire (none for HDFS: its RPCs are not HTTP).
struct Store {
    root: String,
    env: Vec<(&'static str, String)>,
    objects: Objects,
    wire: Option<CountingProxy>,
}

fn s3_store() -> Store {
    let bucket = s3().bucket("pipeline");
    let wire = counting_proxy(s3().port());
    let mut env = s3().env();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", wire.endpoint.clone()));
    Store { root: format!("s3://{bucket}"), env, objects: s3().objects(&bucket), wire: Some(wire) }
}

fn gcs_store() -> Store {
    let bucket = gcs().bucket("pipeline");
    let wire = gcs_proxy(gcs().port);
    Store {
        root: format!("gs://{bucket}"),
        env: Gcs::env(&wire.endpoint),
        objects: gcs().objects(&bucket),
        wire: Some(wire),
    }
}

fn azure_store() -> Store {
    let container = azure().container("pipeline");
    let wire = counting_proxy(azure().port);
    Store {
        root: format!("az://{container}"),
        env: Azure::env(&wire.endpoint),
        objects: azure().objects(&container),
        wire: Some(wire),
    }
}

fn hdfs_store() -> Store {
    let root = format!("{}/t/pipeline-{}", hdfs().url, std::process::id());
    Store { objects: hdfs().objects(&root), root, env: Vec::new(), wire: None }
}

/// The keys the pipeline's `upload` and `count` steps write over three days.
fn outputs() -> Vec<String> {
    ["count", "up"].iter().flat_map(|p| (1..=3).map(move |d| format!("{p}/2024-01-0{d}.txt"))).collect()
}

/// The shared pipeline (`stores::pipeline`) on one store.
fn the_pipeline(store: Store) {
    let mut t = Test::new();
    for (k, v) in &store.env {
        t = t.env(k, v);
    }
    let t = project(t, &store.root);
    let wire = |o: &Output| -> BTreeMap<String, u64> {
        let counts = store.wire.as_ref().map(|w| w.counts()).unwrap_or_default();
        assert!(!counts.contains_key("OTHER"), "a request of no known kind: {counts:?}\n{}", o.describe());
        counts
    };

    // A date-range build: every task runs, and the store holds exactly the outputs (no
    // staging object, no temporary object).
    let o = build(&t, &["back"]);
    o.assert_status(0).assert_summary(9, 0, 0, 0);
    for d in 1..=3 {
        assert_eq!(t.read(&format!("local/2024-01-0{d}.txt")).trim(), d.to_string());
        assert_eq!(store.objects.get(&format!("count/2024-01-0{d}.txt")), Some(format!("{d}\n").into_bytes()));
    }
    assert_eq!(store.objects.keys(), outputs());

    // A no-op: one LIST per prefix (up/, count/), nothing else, as flux counts them and
    // as the server sees them.
    if let Some(w) = &store.wire {
        w.reset();
    }
    let o = build(&t, &["back"]);
    o.assert_status(0).assert_summary(0, 9, 0, 0);
    o.stderr_has("remote requests: 2 LIST, 0 HEAD, 0 GET, 0 PUT, 0 DELETE");
    if store.wire.is_some() {
        assert_eq!(wire(&o), BTreeMap::from([("LIST".to_string(), 2)]), "on the wire\n{}", o.describe());
    }

    // A changed object reruns exactly its consumers.
    store.objects.put("up/2024-01-02.txt", b"a\nb\nc\nd\ne\n");
    let o = build(&t, &["back"]);
    o.assert_status(0).assert_ran(&["count[2024-01-02]", "back[2024-01-02]"]);
    o.assert_task("count[2024-01-02]", "success", Some("input-changed"));
    assert_eq!(t.read("local/2024-01-02.txt").trim(), "5");
    assert_eq!(t.read("local/2024-01-01.txt").trim(), "1");
    let r = requests(&o);
    assert_eq!(
        (r.get("GET"), r.get("PUT")),
        (Some(&2), Some(&1)),
        "count's input and back's copy; count's output\n{}",
        o.describe()
    );

    // A failed task leaves nothing: `bad` writes its output, then fails.
    let o = build(&t, &["bad"]);
    o.assert_status(1).assert_summary(0, 3, 3, 0);
    o.assert_task("bad[2024-01-01]", "failed", Some("missing-output"));
    assert_eq!(store.objects.keys(), outputs(), "a failed task left an object");

    // A `kill -9`'d build leaves nothing, and the task runs again next time.
    let mark = sleep_marker(30);
    let slow = format!("{}/slow/out.txt", store.root);
    let mut k = Test::new().fluxfile(&format!(
        "[step.slow]\noutputs = [\"{slow}\"]\n\
         run = \"echo partial > {{{{ outputs[0] }}}}; if [ -e hold ]; then sleep {mark}; fi; echo done >> {{{{ outputs[0] }}}}\"\n"
    ));
    for (key, v) in &store.env {
        k = k.env(key, v);
    }
    k.write("hold", "");
    let mut bg = k.spawn_args(["build", "slow"]);
    let started = wait_until(Duration::from_secs(30), || sleeps_with(&mark).len() == 1);
    bg.signal("KILL");
    let _ = bg.child.wait();
    kill_marked(&mark);
    assert!(started, "the task never started");
    assert_eq!(store.objects.keys(), outputs(), "a killed task left an object");
    k.remove("hold");
    let o = k.run_args(json_build(&["slow"]));
    o.assert_status(0)
        .assert_ran(&["slow"])
        .stderr_has("warning: ended 1 process group(s) left running by flux run(s) 1 that died");
    assert_eq!(store.objects.get("slow/out.txt"), Some(b"partial\ndone\n".to_vec()));
}

#[test]
fn the_store_pipeline_on_s3() {
    the_pipeline(s3_store());
}

#[test]
fn the_store_pipeline_on_hdfs() {
    the_pipeline(hdfs_store());
}

#[test]
fn the_store_pipeline_on_gcs() {
    the_pipeline(gcs_store());
}

#[test]
fn the_store_pipeline_on_azure() {
    the_pipeline(azure_store());
}
