//! HDFS targets (SPEC §4) against a real MiniDFSCluster on 127.0.0.1 (`servers::hdfs`,
//! built by `.ci/setup-tests`), through the native client: the same pipeline as the S3
//! tests, a no-op, a rerun of exactly the consumers of a changed file, no file left by a
//! failed task, and a copy from S3 to HDFS.

use crate::servers::{hdfs, s3};
use crate::stores::{build, project};
use crate::test::*;

static DIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A folder of its own on the cluster for one test.
fn root(hint: &str) -> String {
    let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}/t/{hint}-{n}-{}", hdfs().url, std::process::id())
}

#[test]
fn an_hdfs_pipeline_builds_is_a_no_op_and_reruns_exactly_the_consumers_of_a_change() {
    let r = root("pipeline");
    let t = project(Test::new(), &r);
    build(&t, &["back"]).assert_success().assert_summary(9, 0, 0, 0);
    for d in 1..=3 {
        assert_eq!(t.read(&format!("local/2024-01-0{d}.txt")).trim(), d.to_string());
    }
    let o = build(&t, &["back"]);
    o.assert_success().assert_summary(0, 9, 0, 0);
    o.stderr_has("remote requests: 2 LIST, 0 HEAD, 0 GET, 0 PUT, 0 DELETE");

    // A new raw file for one day: its upload, count and copy rerun, nothing else.
    t.write("raw/2024-01-02.txt", "a\nb\nc\nd\n");
    let o = build(&t, &["back"]);
    o.assert_success().assert_ran(&["upload[2024-01-02]", "count[2024-01-02]", "back[2024-01-02]"]);
    assert_eq!(t.read("local/2024-01-02.txt").trim(), "4");
}

#[test]
fn a_failed_task_leaves_no_file_on_hdfs() {
    let r = root("failed");
    let t = project(Test::new(), &r);
    let o = build(&t, &["bad", "count"]);
    o.assert_status(1).assert_summary(6, 0, 3, 0);
    // Copy the cluster's listing of the bad/ folder back through flux itself: a step whose
    // input is the folder would fail as a missing source if nothing is there.
    let probe = Test::new().fluxfile(&format!(
        "[step.probe]\ninputs = [\"{r}/bad/\"]\noutputs = [\"seen\"]\nrun = \"ls {{{{ inputs[0] }}}} > {{{{ outputs[0] }}}}\"\n\n\
         [step.count]\ninputs = [\"{r}/count/\"]\noutputs = [\"counts\"]\nrun = \"ls {{{{ inputs[0] }}}} > {{{{ outputs[0] }}}}\"\n"
    ));
    let o = probe.run_args(json_build(&["probe", "count"]));
    o.assert_status(1).stderr_has("FAIL probe: missing source `hdfs://");
    let msg = o.task("probe")["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("missing source"), "the failed task left files on HDFS: {msg}\n{}", o.describe());
    assert_eq!(probe.read("counts"), "2024-01-01.txt\n2024-01-02.txt\n2024-01-03.txt\n");
}

#[test]
fn copy_moves_files_from_s3_to_hdfs() {
    let bucket = s3().bucket("tohdfs");
    s3().put(&bucket, "in/a.csv", b"x,y\n1,2\n");
    let r = root("copy");
    let mut t = Test::new().fluxfile(&format!(
        "[step.move]\ninputs = [\"s3://{bucket}/in/a.csv\"]\noutputs = [\"{r}/a.csv\"]\naction = \"copy\"\n\n\
         [step.check]\ninputs = [\"{r}/a.csv\"]\noutputs = [\"a.csv\"]\naction = \"copy\"\n"
    ));
    for (k, v) in s3().env() {
        t = t.env(k, &v);
    }
    t.run_args(json_build(&["check"])).assert_success().assert_ran(&["move", "check"]);
    assert_eq!(t.read("a.csv"), "x,y\n1,2\n");
    t.run_args(json_build(&["check"])).assert_success().assert_summary(0, 2, 0, 0);
}

#[test]
fn rewriting_identical_bytes_on_hdfs_reruns_the_producer_only() {
    let r = root("cutoff");
    let t = project(Test::new(), &r);
    build(&t, &["back"]).assert_status(0).assert_summary(9, 0, 0, 0).stderr_has("remote requests:");

    // `upload` runs again and writes the same bytes: HDFS gives the file a new modification
    // time (its store identity), but flux hashed what it wrote, so `count` is cut off.
    t.run_args(["clear", "--date", "2024-01-02", "upload"]).assert_status(0);
    let o = build(&t, &["back"]);
    o.assert_status(0).assert_ran(&["upload[2024-01-02]"]).stderr_has("remote requests:");
    o.assert_task("count[2024-01-02]", "skipped", None);
    o.assert_task("back[2024-01-02]", "skipped", None);

    // Then a no-op that only lists.
    let o = build(&t, &["back"]);
    o.assert_status(0).assert_summary(0, 9, 0, 0);
    o.stderr_has("remote requests: 2 LIST, 0 HEAD, 0 GET, 0 PUT, 0 DELETE");

    // Changed bytes still reach the consumers.
    t.write("raw/2024-01-02.txt", "a\nb\nc\nd\n");
    let o = build(&t, &["back"]);
    o.assert_status(0).assert_ran(&["upload[2024-01-02]", "count[2024-01-02]", "back[2024-01-02]"]);
    o.stderr_has("remote requests:");
    o.assert_task("count[2024-01-02]", "success", Some("input-changed"));
    assert_eq!(t.read("local/2024-01-02.txt").trim(), "4");
}

#[test]
fn a_copy_into_hdfs_without_staging_hashes_what_it_streams() {
    let bucket = s3().bucket("nostagecopy");
    s3().put(&bucket, "in/a.csv", b"x,y\n1,2\n");
    let r = root("copy-nostage");
    let mut t = Test::new().fluxfile(&format!(
        "[step.move]\ninputs = [\"s3://{bucket}/in/a.csv\"]\noutputs = [\"{r}/a.csv\"]\naction = \"copy\"\nstage = false\n\n\
         [step.check]\ninputs = [\"{r}/a.csv\"]\noutputs = [\"a.csv\"]\naction = \"copy\"\n"
    ));
    for (k, v) in s3().env() {
        t = t.env(k, &v);
    }
    t.run_args(json_build(&["check"])).assert_status(0).assert_ran(&["move", "check"]);
    // The copy runs again: a new file on HDFS with the same bytes, streamed through flux.
    t.run_args(["clear", "move"]).assert_status(0);
    let o = t.run_args(json_build(&["check"]));
    o.assert_status(0).assert_ran(&["move"]);
    o.assert_task("check", "skipped", None);
    // A changed source reaches the end.
    s3().put(&bucket, "in/a.csv", b"x,y\n3,4\n");
    t.run_args(json_build(&["check"])).assert_status(0).assert_ran(&["move", "check"]);
    assert_eq!(t.read("a.csv"), "x,y\n3,4\n");
}

#[test]
fn a_folder_rewritten_with_identical_files_on_hdfs_reruns_the_producer_only() {
    let r = root("folder");
    let t = Test::new().fluxfile(&format!(
        "[vars]\nn = \"3\"\n\n[step.parts]\noutputs = [\"{r}/parts/\"]\nrun = \"for i in $(seq {{{{ n }}}}); do echo $i > {{{{ outputs[0] }}}}/p$i; done\"\n\n\
         [step.join]\ninputs = [\"{r}/parts/\"]\noutputs = [\"all.txt\"]\nrun = \"cat {{{{ inputs[0] }}}}/* > {{{{ outputs[0] }}}}\"\n"
    ));
    t.run_args(json_build(&["join"])).assert_status(0).assert_ran(&["parts", "join"]);
    t.run_args(["clear", "parts"]).assert_status(0);
    let o = t.run_args(json_build(&["join"]));
    o.assert_status(0).assert_ran(&["parts"]);
    o.assert_task("join", "skipped", None);
    // One file fewer: the folder changed, its consumer reruns.
    let o = t.run_args(json_build(&["--var", "n=2", "join"]));
    o.assert_status(0).assert_ran(&["parts", "join"]);
    assert_eq!(t.read("all.txt"), "1\n2\n");
}
