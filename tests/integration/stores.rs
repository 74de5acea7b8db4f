//! Remote stores (SPEC §4, §5) against a real S3 protocol server on 127.0.0.1 (moto's,
//! started by `servers::s3`): pipelines with S3 inputs and outputs over date ranges, no-op
//! builds by listing, reruns of exactly the consumers of a changed object, staging (a
//! failed or killed task leaves no object), `stage = false`, copies across stores, faults
//! and configuration. Each test has a bucket of its own.

use std::time::Duration;

use crate::operations::{kill_marked, sleep_marker, sleeps_with, wait_until};
use crate::servers::{flaky_proxy, s3};
use crate::test::*;

/// A project whose flux reaches the S3 server.
pub(crate) fn s3_test() -> Test {
    let mut t = Test::new();
    for (k, v) in s3().env() {
        t = t.env(k, &v);
    }
    t
}

/// Upload local files to a store, count their lines there (and fail at it, in `bad`),
/// copy the counts back: the pipeline the S3 and the HDFS tests share. `root` is
/// `s3://bucket` or `hdfs://…/folder`.
pub(crate) fn pipeline(root: &str) -> String {
    format!(
        r#"[flux]
start = "2024-01-01"

[vars]
r = "{root}"

[step.upload]
params = {{ date = "date" }}
inputs = ["raw/{{{{ date }}}}.txt"]
outputs = ["{{{{ r }}}}/up/{{{{ date }}}}.txt"]
action = "copy"

[step.count]
params = {{ date = "date" }}
inputs = ["{{{{ r }}}}/up/{{{{ date }}}}.txt"]
outputs = ["{{{{ r }}}}/count/{{{{ date }}}}.txt"]
run = "wc -l < {{{{ inputs[0] }}}} | tr -d ' ' > {{{{ outputs[0] }}}}"

[step.bad]
params = {{ date = "date" }}
inputs = ["{{{{ r }}}}/up/{{{{ date }}}}.txt"]
outputs = ["{{{{ r }}}}/bad/{{{{ date }}}}.txt"]
run = "echo partial > {{{{ outputs[0] }}}}; exit 1"

[step.back]
params = {{ date = "date" }}
inputs = ["{{{{ r }}}}/count/{{{{ date }}}}.txt"]
outputs = ["local/{{{{ date }}}}.txt"]
action = "copy"
"#
    )
}

/// `raw/2024-01-0D.txt` with D lines, for the first `days` days.
pub(crate) fn raw(t: Test, days: u32) -> Test {
    let mut t = t;
    for d in 1..=days {
        let lines: String = (1..=d).map(|i| format!("line {i}\n")).collect();
        t = t.file(&format!("raw/2024-01-{d:02}.txt"), lines);
    }
    t
}

/// `pipeline(root)` over three days of `raw` files.
pub(crate) fn project(t: Test, root: &str) -> Test {
    raw(t.fluxfile(&pipeline(root)), 3)
}

/// `flux build -v` of `args` (steps, options) over the three days, JSON out.
pub(crate) fn build(t: &Test, args: &[&str]) -> Output {
    let mut all = vec!["build", "-v", "--date-range", "2024-01-01..2024-01-03"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let o = t.run_args(all);
    // -v prints the phases' timings (and the remote requests) on stderr.
    o.stderr_has("flux: load Fluxfile: ");
    o
}

/// `remote requests: 1 LIST, 0 HEAD, …` from `-v`, as numbers by kind.
pub(crate) fn requests(o: &Output) -> std::collections::HashMap<String, u64> {
    let line = o.stderr().lines().find(|l| l.contains("remote requests:")).unwrap_or_default().to_string();
    line.split("remote requests:")
        .nth(1)
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| {
            let mut w = p.split_whitespace();
            let n = w.next()?.parse().ok()?;
            Some((w.next()?.to_string(), n))
        })
        .collect()
}

#[test]
fn an_s3_pipeline_over_a_date_range_builds_then_a_no_op_only_lists() {
    let bucket = s3().bucket("range");
    let t = project(s3_test(), &format!("s3://{bucket}"));
    let o = build(&t, &["back"]);
    o.assert_success().assert_summary(9, 0, 0, 0);
    for d in 1..=3 {
        assert_eq!(t.read(&format!("local/2024-01-0{d}.txt")).trim(), d.to_string());
        assert_eq!(s3().get(&bucket, &format!("count/2024-01-0{d}.txt")).unwrap(), format!("{d}\n").into_bytes());
    }
    // Exactly the outputs: no staging object, no temporary object.
    let want: Vec<String> =
        ["count", "up"].iter().flat_map(|p| (1..=3).map(move |d| format!("{p}/2024-01-0{d}.txt"))).collect();
    assert_eq!(s3().keys(&bucket), want);

    let o = build(&t, &["back"]);
    o.assert_success().assert_summary(0, 9, 0, 0);
    let r = requests(&o);
    assert_eq!(r.get("LIST"), Some(&2), "one listing per folder (up/, count/)\n{}", o.describe());
    for kind in ["HEAD", "GET", "PUT", "DELETE"] {
        assert_eq!(r.get(kind), Some(&0), "{kind} in a no-op\n{}", o.describe());
    }
}

#[test]
fn changing_one_object_reruns_exactly_its_consumers() {
    let bucket = s3().bucket("change");
    let t = project(s3_test(), &format!("s3://{bucket}"));
    build(&t, &["back"]).assert_success();
    s3().put(&bucket, "up/2024-01-02.txt", b"a\nb\nc\nd\ne\n");
    let o = build(&t, &["back"]);
    o.assert_success().assert_ran(&["count[2024-01-02]", "back[2024-01-02]"]);
    o.assert_task("count[2024-01-02]", "success", Some("input-changed"));
    assert_eq!(t.read("local/2024-01-02.txt").trim(), "5");
    assert_eq!(t.read("local/2024-01-01.txt").trim(), "1");
}

#[test]
fn an_upload_of_identical_bytes_cuts_off_its_consumers() {
    let bucket = s3().bucket("cutoff");
    let t = project(s3_test(), &format!("s3://{bucket}"));
    build(&t, &["back"]).assert_success();
    // Cleared: upload runs again and writes the same bytes.
    t.run_args(["clear", "--date", "2024-01-02", "upload"]).assert_success();
    let o = t.run_args(json_build(&["-v", "--date", "2024-01-02", "back"]));
    o.assert_success()
        .stderr_has("skip count[2024-01-02] (up to date)")
        .stderr_has("skip back[2024-01-02] (up to date)");
    o.assert_task("upload[2024-01-02]", "success", Some("forced"));
    o.assert_task("count[2024-01-02]", "skipped", None);
    o.assert_task("back[2024-01-02]", "skipped", None);
}

#[test]
fn a_failed_task_with_staging_leaves_no_object() {
    let bucket = s3().bucket("failed");
    let t = s3_test().fluxfile(&format!(
        "[step.bad]\noutputs = [\"s3://{bucket}/out/bad.txt\"]\nrun = \"echo partial > {{{{ outputs[0] }}}}; exit 3\"\n\n\
         [step.good]\noutputs = [\"s3://{bucket}/out/good.txt\"]\nrun = \"echo fine > {{{{ outputs[0] }}}}\"\n"
    ));
    let o = t.run_args(json_build(&["bad", "good"]));
    o.assert_status(1).stderr_has("FAIL bad: command exited with status 3");
    o.assert_task("bad", "failed", Some("missing-output"));
    assert_eq!(s3().keys(&bucket), vec!["out/good.txt".to_string()]);
}

#[test]
fn a_killed_build_leaves_no_object_and_reruns_the_task() {
    let bucket = s3().bucket("killed");
    let mark = sleep_marker(30);
    let t = s3_test().fluxfile(&format!(
        "[step.slow]\noutputs = [\"s3://{bucket}/out/slow.txt\"]\nrun = \"echo partial > {{{{ outputs[0] }}}}; sleep {mark}; echo done >> {{{{ outputs[0] }}}}\"\n"
    ));
    let mut bg = t.spawn_args(["build", "slow"]);
    let started = wait_until(Duration::from_secs(20), || sleeps_with(&mark).len() == 1);
    bg.signal("KILL");
    let _ = bg.child.wait();
    kill_marked(&mark);
    assert!(started, "the task never started");
    assert!(s3().keys(&bucket).is_empty(), "a killed task left {:?}", s3().keys(&bucket));
    let o = t.run_args(json_build(&["slow"]));
    o.assert_success()
        .assert_ran(&["slow"])
        .stderr_has("warning: ended 1 process group(s) left running by flux run(s)");
}

#[test]
fn without_staging_commands_get_uris_and_a_failure_removes_what_they_wrote() {
    let bucket = s3().bucket("nostage");
    // The command writes the object itself, as Spark would (here with a plain HTTP PUT).
    let put = "python3 -c \\\"import os,sys,urllib.request as u; k=sys.argv[1][5:]; u.urlopen(u.Request(os.environ['AWS_ENDPOINT_URL']+'/'+k, data=sys.argv[2].encode(), method='PUT'))\\\"";
    let t = s3_test().fluxfile(&format!(
        "[step.spark]\nparams = {{ n = [\"1\", \"2\"] }}\noutputs = [\"s3://{bucket}/spark/{{{{ n }}}}.txt\"]\nstage = false\n\
         run = \"echo {{{{ outputs[0] }}}} > seen-{{{{ n }}}}; {put} {{{{ outputs[0] }}}} hello; test {{{{ n }}}} = 1\"\n"
    ));
    let o = t.run_args(json_build(&["spark"]));
    o.assert_status(1).stderr_has("FAIL spark[2]: command exited with status 1");
    assert_eq!(t.read("seen-1").trim(), format!("s3://{bucket}/spark/1.txt"), "the command saw the URI");
    o.assert_task("spark[1]", "success", Some("missing-output"));
    o.assert_task("spark[2]", "failed", Some("missing-output"));
    assert_eq!(s3().keys(&bucket), vec!["spark/1.txt".to_string()], "the failed task's object was removed");
}

#[test]
fn a_failed_stage_false_remote_folder_loses_only_the_objects_the_attempt_wrote() {
    let bucket = s3().bucket("nostage-keep");
    s3().put(&bucket, "warehouse/old.txt", b"old");
    s3().put(&bucket, "single.txt", b"before");
    // The command writes an object itself, as Spark would (a plain HTTP PUT), then fails.
    let put = "python3 -c \\\"import os,sys,urllib.request as u; u.urlopen(u.Request(os.environ['AWS_ENDPOINT_URL']+'/'+sys.argv[1], data=b'new', method='PUT'))\\\"";
    let t = s3_test().fluxfile(&format!(
        "[step.folder]\noutputs = [\"s3://{bucket}/warehouse/\"]\nstage = false\nrun = \"{put} {bucket}/warehouse/new.txt; exit 3\"\n\n\
         [step.untouched]\noutputs = [\"s3://{bucket}/single.txt\"]\nstage = false\nrun = \"exit 3\"\n"
    ));
    t.run_args(json_build(&["--force"]))
        .assert_status(1)
        .assert_summary(0, 0, 2, 0)
        .stderr_has("FAIL untouched: command exited with status 3")
        .stderr_has("FAIL folder: command exited with status 3");
    // What was there before the attempts stays; only the object the attempt wrote is gone.
    assert_eq!(s3().keys(&bucket), vec!["single.txt".to_string(), "warehouse/old.txt".to_string()]);
    assert_eq!(s3().get(&bucket, "single.txt").as_deref(), Some(&b"before"[..]));
}

#[test]
fn copy_streams_large_files_local_to_s3_and_back() {
    let bucket = s3().bucket("copy");
    // Larger than one part: a multipart upload.
    let big: Vec<u8> = (0..20u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let t = s3_test()
        .fluxfile(&format!(
            "[step.up]\ninputs = [\"big.bin\", \"small.txt\"]\noutputs = [\"s3://{bucket}/big.bin\", \"s3://{bucket}/small.txt\"]\naction = \"copy\"\n\n\
             [step.across]\ninputs = [\"s3://{bucket}/big.bin\"]\noutputs = [\"s3://{bucket}/copy/big.bin\"]\naction = \"copy\"\nstage = false\n\n\
             [step.down]\ninputs = [\"s3://{bucket}/copy/big.bin\", \"s3://{bucket}/small.txt\"]\noutputs = [\"back/big.bin\", \"back/small.txt\"]\naction = \"copy\"\n"
        ))
        .file("big.bin", &big)
        .file("small.txt", "small\n");
    let o = t.run_args(json_build(&["-v", "down"]));
    o.assert_success().assert_ran(&["up", "across", "down"]);
    assert!(t.read_bytes("back/big.bin") == big, "the big file came back changed");
    assert_eq!(t.read("back/small.txt"), "small\n");
    assert_eq!(s3().get(&bucket, "copy/big.bin").map(|b| b.len()), Some(big.len()));
    // Up: 1 + 3 parts and 1 PUT; across (one bucket): the server's own copy.
    assert_eq!((requests(&o)["PUT"], requests(&o)["COPY"]), (5, 1), "multipart: several parts\n{}", o.describe());
    t.run_args(json_build(&["down"])).assert_success().assert_summary(0, 3, 0, 0);
}

#[test]
fn folder_outputs_on_s3_are_uploaded_whole_and_replaced_whole() {
    let bucket = s3().bucket("folder");
    let t = s3_test().fluxfile(&format!(
        "[vars]\nn = \"3\"\n\n[step.parts]\noutputs = [\"s3://{bucket}/parts/\"]\nrun = \"for i in $(seq {{{{ n }}}}); do echo $i > {{{{ outputs[0] }}}}/p$i; done\"\n\n\
         [step.join]\ninputs = [\"s3://{bucket}/parts/\"]\noutputs = [\"all.txt\"]\nrun = \"cat {{{{ inputs[0] }}}}/* > {{{{ outputs[0] }}}}\"\n"
    ));
    t.run_args(json_build(&["join"])).assert_success().assert_ran(&["parts", "join"]);
    assert_eq!(t.read("all.txt"), "1\n2\n3\n");
    assert_eq!(s3().keys(&bucket), vec!["parts/p1", "parts/p2", "parts/p3"]);
    t.run_args(json_build(&["join"])).assert_success().assert_summary(0, 2, 0, 0);
    let o = t.run_args(json_build(&["--var", "n=2", "join"]));
    o.assert_success().assert_ran(&["parts", "join"]);
    assert_eq!(s3().keys(&bucket), vec!["parts/p1", "parts/p2"], "the folder was replaced whole");
    assert_eq!(t.read("all.txt"), "1\n2\n");
}

#[test]
fn transient_server_errors_are_retried() {
    let bucket = s3().bucket("flaky");
    let proxy = flaky_proxy(s3().port(), 3);
    let t = s3_test()
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .fluxfile(&format!("[step.w]\noutputs = [\"s3://{bucket}/w.txt\"]\nrun = \"echo w > {{{{ outputs[0] }}}}\"\n"));
    let o = t.run_args(json_build(&["w"]));
    o.assert_success().assert_ran(&["w"]);
    assert_eq!(proxy.failed.load(std::sync::atomic::Ordering::SeqCst), 3, "three requests were refused");
    assert_eq!(s3().get(&bucket, "w.txt").unwrap(), b"w\n");
}

#[test]
fn a_missing_bucket_fails_the_task_naming_the_uri_and_never_a_secret() {
    let t = s3_test().fluxfile(
        "[step.w]\noutputs = [\"s3://no-such-bucket-here/w.txt\"]\nrun = \"echo w > {{ outputs[0] }}\"\n\n\
         [step.r]\ninputs = [\"s3://no-such-bucket-here/in.txt\"]\noutputs = [\"r.txt\"]\nrun = \"cp {{ inputs[0] }} {{ outputs[0] }}\"\n",
    );
    let o = t.run_args(json_build(&["w", "r"]));
    o.assert_status(1);
    let w = o.task("w");
    let msg = w["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("s3://no-such-bucket-here/w.txt"), "{msg}\n{}", o.describe());
    assert!(msg.to_lowercase().contains("bucket"), "the cause is named: {msg}");
    let r = o.task("r");
    let msg = r["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("missing source `s3://no-such-bucket-here/in.txt`"), "{msg}");
    let secret = "flux-test-secret-0123456789";
    assert!(!o.stdout.contains(secret) && !o.stderr().contains(secret), "a secret leaked\n{}", o.describe());
    for log in walk(&t.abs(".flux/logs")) {
        assert!(!std::fs::read_to_string(&log).unwrap_or_default().contains(secret), "a secret in {}", log.display());
    }
}

/// Every file under `dir`, at any depth.
pub(crate) fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
    }
    out
}

#[test]
fn store_tables_in_the_fluxfile_configure_a_bucket() {
    let bucket = s3().bucket("table");
    // The environment points nowhere; the Fluxfile's table wins.
    let t = s3_test().env("AWS_ENDPOINT_URL", "http://127.0.0.1:1").env("AWS_ALLOW_HTTP", "false").fluxfile(&format!(
        "[store.\"s3://{bucket}\"]\nendpoint = \"{}\"\nallow_http = true\n\n[step.w]\noutputs = [\"s3://{bucket}/w.txt\"]\nrun = \"echo w > {{{{ outputs[0] }}}}\"\n",
        s3().endpoint
    ));
    t.run_args(json_build(&["w"])).assert_success().assert_ran(&["w"]);
    assert_eq!(s3().get(&bucket, "w.txt").unwrap(), b"w\n");
}

#[test]
fn bad_store_settings_and_uris_are_fluxfile_errors() {
    let t = Test::new()
        .fluxfile("[store.\"s3://b\"]\nendpont = \"http://x\"\n\n[step.a]\noutputs = [\"a\"]\nrun = \"true\"\n");
    let o = t.run_args(["check"]);
    o.assert_status(2).stderr_has("unknown setting `endpont` for s3:// stores").stderr_has("Fluxfile:2:1");
    let t =
        Test::new().fluxfile("[store.\"s3://b/k\"]\nregion = \"x\"\n\n[step.a]\noutputs = [\"a\"]\nrun = \"true\"\n");
    t.run_args(["check"]).assert_status(2).stderr_has("`s3://b/k` does not name a store");
    let t = Test::new().fluxfile("[step.a]\noutputs = [\"ftp://host/a\"]\nrun = \"true\"\n");
    t.run_args(["check"]).assert_status(2).stderr_has("`ftp://` is not a store flux knows");
    let t = Test::new().fluxfile("[step.a]\noutputs = [\"s3://key:secret@b/a\"]\nrun = \"true\"\n");
    t.run_args(["check"]).assert_status(2).stderr_has("credentials do not belong in a target's URI");
    let t = Test::new()
        .fluxfile("[store.\"gs://b\"]\nregion = \"x\"\n\n[step.a]\noutputs = [\"gs://b/a\"]\nrun = \"true\"\n");
    t.run_args(["check"]).assert_status(2).stderr_has("unknown setting `region` for gs:// stores");
    let t = Test::new().fluxfile(
        "[store.\"gs://b\"]\nservice_account = \"/nonexistent.json\"\n\n[store.\"az://c\"]\naccount_name = \"acct\"\n\n\
         [step.a]\noutputs = [\"gs://b/a\", \"az://c/a\"]\nrun = \"true\"\n",
    );
    t.run_args(["check"]).assert_success();
}

#[test]
fn azure_targets_go_through_the_same_store_path() {
    // An Azure emulator endpoint where nothing listens: the build reaches the Azure client
    // (built from the URL and the [store] table) and fails the task naming the URI.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t = Test::new().env("AZURITE_BLOB_STORAGE_URL", &format!("http://127.0.0.1:{port}")).fluxfile(
        "[store.\"az://box\"]\nuse_emulator = true\n\n[step.w]\noutputs = [\"az://box/w.txt\"]\nrun = \"echo w > {{ outputs[0] }}\"\n",
    );
    let o = t.run_args(json_build(&["w"]));
    o.assert_status(1).stderr_has("FAIL w: cannot upload output: az://box/w.txt");
    let msg = o.task("w")["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("az://box/w.txt"), "{msg}\n{}", o.describe());
}

#[test]
fn a_no_op_over_more_than_a_page_of_outputs_is_one_listing() {
    let bucket = s3().bucket("many");
    // 1,100 days: more keys than one page of a listing (1,000). Made outside flux, so the
    // first build adopts them (Luigi-style) and the second is a plain no-op.
    let start = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap();
    let days: Vec<String> = (0..1100).map(|i| (start + chrono::Days::new(i)).to_string()).collect();
    for d in &days {
        s3().put(&bucket, &format!("out/{d}.txt"), d.as_bytes());
    }
    let t = s3_test().fluxfile(&format!(
        "[step.day]\nparams = {{ date = \"date\" }}\noutputs = [\"s3://{bucket}/out/{{{{ date }}}}.txt\"]\nrun = \"echo {{{{ date }}}} > {{{{ outputs[0] }}}}\"\n"
    ));
    let range = format!("{}..{}", days[0], days[days.len() - 1]);
    for _ in 0..2 {
        let o = t.run_args(["build", "-v", "--date-range", &range, "day", "--output", "json"]);
        o.assert_success().assert_summary(0, 1100, 0, 0);
        let r = requests(&o);
        assert_eq!(
            r.get("LIST"),
            Some(&1),
            "one listing, not 1,100 HEADs\n{}",
            &o.stderr()[o.stderr().len().saturating_sub(400)..]
        );
        assert_eq!(r.get("HEAD"), Some(&0));
        assert_eq!(r.get("GET"), Some(&0));
    }
}

#[test]
fn a_remote_input_is_fetched_once_and_read_from_the_cache_while_unchanged() {
    let bucket = s3().bucket("cache");
    let t = project(s3_test(), &format!("s3://{bucket}"));
    build(&t, &["back"]).assert_success();
    // Run count again on an unchanged input: the command reads the cached copy.
    t.run_args(["clear", "--date", "2024-01-02", "count"]).assert_success();
    let o = t.run_args(json_build(&["-v", "--date", "2024-01-02", "count"]));
    o.assert_success().assert_ran(&["count[2024-01-02]"]);
    assert_eq!(requests(&o).get("GET"), Some(&0), "no download\n{}", o.describe());
    // A changed object is fetched again.
    s3().put(&bucket, "up/2024-01-02.txt", b"1\n2\n3\n4\n5\n6\n");
    let o = t.run_args(json_build(&["-v", "--date", "2024-01-02", "back"]));
    o.assert_success().assert_ran(&["count[2024-01-02]", "back[2024-01-02]"]);
    assert_eq!(requests(&o).get("GET"), Some(&2), "count's input, then back's copy\n{}", o.describe());
    assert_eq!(t.read("local/2024-01-02.txt").trim(), "6");
}

/// A project whose step `up` uploads `big.bin` (12 MiB: more than one part) to S3 in parts
/// of `part_size`, and whose step `size` reads it back.
fn multipart_project(bucket: &str, part_size: &str) -> String {
    format!(
        "[store.\"s3://{bucket}\"]\npart_size = \"{part_size}\"\n\n\
         [step.up]\ninputs = [\"big.bin\"]\noutputs = [\"s3://{bucket}/big.bin\"]\nrun = \"cp {{{{ inputs[0] }}}} {{{{ outputs[0] }}}}\"\n\n\
         [step.size]\ninputs = [\"s3://{bucket}/big.bin\"]\noutputs = [\"size.txt\"]\nrun = \"wc -c < {{{{ inputs[0] }}}} | tr -d ' ' > {{{{ outputs[0] }}}}\"\n"
    )
}

#[test]
fn identical_bytes_uploaded_again_in_other_parts_rerun_the_producer_only() {
    let bucket = s3().bucket("multipart");
    let big: Vec<u8> = (0..12u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let t = s3_test().fluxfile(&multipart_project(&bucket, "8MiB")).file("big.bin", &big);
    let o = t.run_args(json_build(&["-v", "size"]));
    o.assert_status(0).assert_ran(&["up", "size"]);
    o.stderr_has("remote requests:");
    assert_eq!(t.read("size.txt").trim(), (12 << 20).to_string());
    let before = s3().etag(&bucket, "big.bin");
    assert!(before.ends_with("-2\""), "an 8 MiB part and a 4 MiB one: {before}");

    // The same bytes again, in 5 MiB parts: the object gets another ETag (a multipart
    // ETag is made of its parts), but flux hashed what it uploaded, so `size` is cut off.
    let t = t.fluxfile(&multipart_project(&bucket, "5MiB"));
    t.run_args(["clear", "up"]).assert_status(0);
    let o = t.run_args(json_build(&["-v", "size"]));
    o.assert_status(0).assert_ran(&["up"]);
    o.assert_task("up", "success", Some("forced"));
    o.assert_task("size", "skipped", None);
    let r = requests(&o);
    assert_eq!(r.get("GET"), Some(&0), "the consumer fetched nothing\n{}", o.describe());
    assert_eq!(r.get("PUT"), Some(&4), "one upload of three parts\n{}", o.describe());
    let after = s3().etag(&bucket, "big.bin");
    assert!(after.ends_with("-3\"") && after != before, "three parts, another ETag: {before} then {after}");

    // A no-op after the cutoff: one HEAD for the lone remote target, nothing else.
    let o = t.run_args(json_build(&["-v", "size"]));
    o.assert_status(0).assert_summary(0, 2, 0, 0);
    let r = requests(&o);
    assert_eq!((r.get("LIST"), r.get("HEAD"), r.get("GET"), r.get("PUT")), (Some(&0), Some(&1), Some(&0), Some(&0)));

    // Changed bytes still reach the consumer.
    let mut changed = big.clone();
    changed.truncate(11 << 20);
    t.write("big.bin", &changed);
    let o = t.run_args(json_build(&["-v", "size"]));
    o.assert_status(0).assert_ran(&["up", "size"]);
    o.stderr_has("remote requests:");
    o.assert_task("size", "success", Some("input-changed"));
    assert_eq!(t.read("size.txt").trim(), (11 << 20).to_string());
}

#[test]
fn a_part_size_out_of_bounds_is_a_fluxfile_error() {
    let t = Test::new()
        .fluxfile("[store.\"s3://b\"]\npart_size = \"1MiB\"\n\n[step.a]\noutputs = [\"s3://b/a\"]\nrun = \"true\"\n");
    t.run_args(["check"])
        .assert_status(2)
        .stderr_has("bad value for setting `part_size`: `1MiB` is outside the part sizes stores accept")
        .stderr_has("Fluxfile:2:13");
    let t = Test::new()
        .fluxfile("[store.\"s3://b\"]\npart_size = \"lots\"\n\n[step.a]\noutputs = [\"s3://b/a\"]\nrun = \"true\"\n");
    t.run_args(["check"]).assert_status(2).stderr_has("`lots` is not a valid size");
    let t = Test::new().fluxfile(
        "[store.\"hdfs://nn:9000\"]\npart_size = \"64MiB\"\n\n[step.a]\noutputs = [\"hdfs://nn:9000/a\"]\nrun = \"true\"\n",
    );
    t.run_args(["check"]).assert_status(0);
}
