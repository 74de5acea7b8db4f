//! `action = "copy"` between objects (SPEC §2.1, §4) and faults on the way, against the S3
//! server behind the fault-injecting proxy of `faultproxy`, which sees every request flux
//! sends: a copy within one bucket is the server's own (no body through flux), a copy
//! across stores streams without a local file, and cut or stalled requests are retried and
//! never leave a partial object. Each test has buckets and a proxy of its own.

use std::time::Duration;

use crate::faultproxy::{Fault, FaultProxy, fault_proxy};
use crate::servers::{http, s3};
use crate::stores::requests;
use crate::test::*;

/// `mib` MiB of bytes that differ from part to part.
fn bytes(mib: u32) -> Vec<u8> {
    (0..mib << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

/// A project whose flux reaches the S3 server through `proxy`.
fn via(proxy: &FaultProxy) -> Test {
    let mut t = Test::new();
    for (k, v) in s3().env() {
        t = t.env(k, &v);
    }
    t.env("AWS_ENDPOINT_URL", &proxy.endpoint)
}

/// Multipart uploads started in `bucket` and neither completed nor aborted.
fn uploads_in_progress(bucket: &str) -> usize {
    let (code, body) = http(s3().port(), "GET", &format!("/{bucket}?uploads"), &[]).expect("list uploads");
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(code, 200, "{body}");
    body.matches("<UploadId>").count()
}

fn same(got: Option<Vec<u8>>, want: &[u8]) -> bool {
    got.is_some_and(|g| g == want)
}

#[test]
fn a_copy_within_one_bucket_is_done_by_the_server() {
    let bucket = s3().bucket("within");
    let data = bytes(20);
    s3().put(&bucket, "in/big.bin", &data);
    let proxy = fault_proxy(s3().port());
    let t = via(&proxy).fluxfile(&format!(
        "[step.staged]\ninputs = [\"s3://{bucket}/in/big.bin\"]\noutputs = [\"s3://{bucket}/out/staged.bin\"]\naction = \"copy\"\n\n\
         [step.direct]\ninputs = [\"s3://{bucket}/in/big.bin\"]\noutputs = [\"s3://{bucket}/out/direct.bin\"]\naction = \"copy\"\nstage = false\n"
    ));
    let o = t.run_args(json_build(&["-v", "staged", "direct"]));
    o.assert_status(0).assert_ran(&["direct", "staged"]);
    let r = requests(&o);
    assert_eq!((r["COPY"], r["GET"], r["PUT"]), (2, 0, 0), "two server-side copies\n{}", o.describe());
    // What reached the server: two copies, and not a byte of the body either way.
    let seen = proxy.seen();
    assert_eq!(seen.iter().filter(|s| s.copy && s.method == "PUT").count(), 2, "{}", proxy.describe());
    assert!(!seen.iter().any(|s| s.method == "GET" && s.target.contains("big.bin")), "{}", proxy.describe());
    assert!(seen.iter().all(|s| s.body == 0), "a body went through flux\n{}", proxy.describe());
    assert!(same(s3().get(&bucket, "out/staged.bin"), &data) && same(s3().get(&bucket, "out/direct.bin"), &data));
    assert_eq!(s3().keys(&bucket), vec!["in/big.bin", "out/direct.bin", "out/staged.bin"]);
    let o = t.run_args(json_build(&["-v", "staged", "direct"]));
    o.assert_status(0).assert_summary(0, 2, 0, 0);
    assert_eq!((requests(&o)["COPY"], requests(&o)["GET"]), (0, 0));
}

#[test]
fn a_copy_across_stores_streams_without_a_local_file() {
    let (from, to) = (s3().bucket("across-a"), s3().bucket("across-b"));
    let data = bytes(20);
    s3().put(&from, "big.bin", &data);
    s3().put(&from, "small.txt", b"small\n");
    let proxy = fault_proxy(s3().port());
    // The upload's completion is held back 2 s: a staged local file would sit there then.
    proxy.break_nth("POST", "uploadId=", 1, 1, Fault::Delay(Duration::from_secs(2)));
    let t = via(&proxy).fluxfile(&format!(
        "[step.across]\ninputs = [\"s3://{from}/big.bin\", \"s3://{from}/small.txt\"]\noutputs = [\"s3://{to}/big.bin\", \"s3://{to}/small.txt\"]\naction = \"copy\"\n\n\
         [step.up]\ninputs = [\"local.bin\"]\noutputs = [\"s3://{to}/local.bin\"]\naction = \"copy\"\n\n\
         [step.down]\ninputs = [\"s3://{to}/big.bin\", \"s3://{to}/local.bin\"]\noutputs = [\"back/big.bin\", \"back/local.bin\"]\naction = \"copy\"\n"
    ))
    .file("local.bin", bytes(9));
    let mut bg = t.spawn_args(json_build(&["-v", "-j", "1", "across"]));
    let mut staged = Vec::new();
    while bg.child.try_wait().expect("wait").is_none() {
        for f in crate::stores::walk(&t.abs(".flux/stage")) {
            let name = f.display().to_string();
            if (name.contains("big.bin") || name.contains("small.txt")) && !staged.contains(&name) {
                staged.push(name);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = t.finish(bg);
    o.assert_status(0).assert_ran(&["across"]);
    assert!(staged.is_empty(), "the copy went through local files: {staged:?}");
    let r = requests(&o);
    // 1 GET each; the big one: 1 + 3 parts (8 MiB), the small one: 1 PUT.
    assert_eq!((r["GET"], r["PUT"], r["COPY"]), (2, 5, 0), "{}", o.describe());
    assert!(same(s3().get(&to, "big.bin"), &data) && same(s3().get(&to, "small.txt"), b"small\n"));

    let o = t.run_args(json_build(&["-v", "down"]));
    o.assert_status(0).assert_ran(&["up", "down"]).stderr_has("flux: remote requests: ");
    assert!(t.read_bytes("back/big.bin") == data && t.read_bytes("back/local.bin") == bytes(9));
    assert!(same(s3().get(&to, "local.bin"), &bytes(9)));
    t.run_args(json_build(&["down"])).assert_status(0).assert_summary(0, 3, 0, 0);
}

#[test]
fn a_failed_copy_leaves_nothing() {
    let (from, to) = (s3().bucket("fail-a"), s3().bucket("fail-b"));
    let data = bytes(20);
    s3().put(&from, "big.bin", &data);
    s3().put(&to, "old.bin", b"old");
    let proxy = fault_proxy(s3().port());
    // Every read of the source breaks off before its body (the stream copy), and every
    // server-side copy into `to/new.bin` is refused: retries run out.
    proxy.break_nth("GET", "/big.bin", 1, 1000, Fault::CutResponse(0));
    proxy.break_nth("PUT", "/new.bin", 1, 1000, Fault::Refuse);
    let t = via(&proxy).fluxfile(&format!(
        "[step.stream]\ninputs = [\"s3://{from}/big.bin\"]\noutputs = [\"s3://{to}/big.bin\"]\naction = \"copy\"\n\n\
         [step.within]\ninputs = [\"s3://{to}/old.bin\"]\noutputs = [\"s3://{to}/new.bin\"]\naction = \"copy\"\n"
    ));
    let o = t.run_args(json_build(&["stream", "within"]));
    o.assert_status(1)
        .assert_summary(0, 0, 2, 0)
        .stderr_has("FAIL stream: cannot copy output: ")
        .stderr_has("FAIL within: cannot copy output: ");
    let msg = o.task("stream")["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(&format!("s3://{from}/big.bin")), "{msg}\n{}", o.describe());
    let msg = o.task("within")["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(&format!("s3://{to}/new.bin")), "{msg}\n{}", o.describe());
    assert_eq!(s3().keys(&to), vec!["old.bin"], "a failed copy left an object");
    assert_eq!(uploads_in_progress(&to), 0, "a failed copy left a multipart upload\n{}", proxy.describe());
    assert_eq!(t.tree(".flux/stage").len(), 0, "a failed copy left a staged file");
}

#[test]
fn a_get_cut_in_the_middle_of_its_body_is_resumed() {
    let bucket = s3().bucket("cut-get");
    let data = bytes(20);
    s3().put(&bucket, "in/big.bin", &data);
    let proxy = fault_proxy(s3().port());
    proxy.break_nth("GET", "/in/big.bin", 1, 1, Fault::CutResponse(5 << 20));
    let t = via(&proxy).fluxfile(&format!(
        "[step.down]\ninputs = [\"s3://{bucket}/in/big.bin\"]\noutputs = [\"big.bin\"]\naction = \"copy\"\n\n\
         [step.read]\ninputs = [\"s3://{bucket}/in/big.bin\"]\noutputs = [\"size\"]\nrun = \"wc -c < {{{{ inputs[0] }}}} > {{{{ outputs[0] }}}}\"\n"
    ));
    let o = t.run_args(json_build(&["-v", "-j", "1", "down"]));
    o.assert_status(0).assert_ran(&["down"]);
    assert!(t.read_bytes("big.bin") == data, "the copy differs from its source");
    // flux counts one GET, as docs/stores.md says; the server saw the resumed rest too.
    assert_eq!(requests(&o)["GET"], 1, "{}", o.describe());
    assert_eq!(proxy.count("GET", "/in/big.bin"), 2, "{}", proxy.describe());
    // The cache of a staged input: the same.
    proxy.break_nth("GET", "/in/big.bin", 1, 1, Fault::CutResponse(3 << 20));
    let o = t.run_args(json_build(&["-v", "read"]));
    o.assert_status(0).assert_ran(&["read"]);
    assert_eq!(t.read("size").trim(), (20 << 20).to_string());
    assert_eq!(requests(&o)["GET"], 1, "{}", o.describe());
}

#[test]
fn a_download_that_breaks_off_again_and_again_finishes_while_it_makes_progress() {
    let bucket = s3().bucket("cut-often");
    let data = bytes(20);
    s3().put(&bucket, "in/big.bin", &data);
    let proxy = fault_proxy(s3().port());
    // Every response breaks off after 2 MiB: more breaks than object_store's retries of one
    // request (5), each with progress.
    proxy.break_nth("GET", "/in/big.bin", 1, 1000, Fault::CutResponse(2 << 20));
    let t = via(&proxy).fluxfile(&format!(
        "[step.down]\ninputs = [\"s3://{bucket}/in/big.bin\"]\noutputs = [\"big.bin\"]\naction = \"copy\"\n"
    ));
    let o = t.run_args(json_build(&["-v", "down"]));
    o.assert_status(0).assert_ran(&["down"]);
    assert!(t.read_bytes("big.bin") == data, "the copy differs from its source");
    assert_eq!(requests(&o)["GET"], 1, "{}", o.describe());
    // At least one request per 2 MiB, and more than one request's 1 + 5 tries.
    let gets = proxy.count("GET", "/in/big.bin");
    assert!(gets >= 10, "{}", proxy.describe());
}

#[test]
fn a_part_cut_in_the_middle_of_its_upload_is_retried_and_the_object_is_whole() {
    let bucket = s3().bucket("cut-put");
    let proxy = fault_proxy(s3().port());
    // The second part's body breaks off after 1 MiB, once; the object's single PUT too.
    proxy.break_nth("PUT", "partNumber=2", 1, 1, Fault::CutRequest(1 << 20));
    proxy.break_nth("PUT", "/small.txt", 1, 1, Fault::CutRequest(3));
    let t = via(&proxy)
        .fluxfile(&format!(
            "[step.up]\ninputs = [\"big.bin\", \"small.txt\"]\noutputs = [\"s3://{bucket}/big.bin\", \"s3://{bucket}/small.txt\"]\naction = \"copy\"\n"
        ))
        .file("big.bin", bytes(20))
        .file("small.txt", "small text\n");
    let o = t.run_args(json_build(&["-v", "up"]));
    o.assert_status(0).assert_ran(&["up"]);
    assert!(same(s3().get(&bucket, "big.bin"), &bytes(20)), "the object differs from the file");
    assert!(same(s3().get(&bucket, "small.txt"), b"small text\n"));
    // As docs/stores.md says: 1 + 3 parts, and 1 PUT; the server saw each cut one twice.
    assert_eq!(requests(&o)["PUT"], 5, "{}", o.describe());
    assert_eq!(proxy.count("PUT", "partNumber=2"), 2, "{}", proxy.describe());
    assert_eq!(proxy.count("PUT", "/small.txt"), 2, "{}", proxy.describe());
    assert_eq!(uploads_in_progress(&bucket), 0);
}

#[test]
fn a_cut_upload_never_leaves_a_partial_object() {
    let bucket = s3().bucket("cut-keep");
    let proxy = fault_proxy(s3().port());
    let t = via(&proxy)
        .fluxfile(&format!(
            "[step.up]\ninputs = [\"big.bin\"]\noutputs = [\"s3://{bucket}/big.bin\"]\naction = \"copy\"\n"
        ))
        .file("big.bin", bytes(20));
    t.run_args(json_build(&["up"])).assert_status(0);
    // A new version whose first part never gets through (flux learns it while the later
    // parts are on their way): the old object stays, whole, and no upload is left open.
    let mut new = bytes(20);
    new.reverse();
    t.write("big.bin", &new);
    proxy.break_nth("PUT", "partNumber=1", 1, 1000, Fault::CutRequest(1 << 20));
    let o = t.run_args(json_build(&["up"]));
    o.assert_status(1).assert_summary(0, 0, 1, 0).stderr_has("FAIL up: cannot copy output: ");
    let msg = o.task("up")["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(&format!("s3://{bucket}/big.bin")), "{msg}\n{}", o.describe());
    assert!(proxy.count("PUT", "partNumber=1") > 1, "the part was retried\n{}", proxy.describe());
    assert!(same(s3().get(&bucket, "big.bin"), &bytes(20)), "the old object was touched");
    assert_eq!(s3().keys(&bucket), vec!["big.bin"]);
    assert_eq!(uploads_in_progress(&bucket), 0, "the failed upload was not aborted");
    // Once the server takes parts again, the next build uploads the new version.
    let proxy2 = fault_proxy(s3().port());
    let t = t.env("AWS_ENDPOINT_URL", &proxy2.endpoint);
    t.run_args(json_build(&["up"])).assert_status(0).assert_ran(&["up"]);
    assert!(same(s3().get(&bucket, "big.bin"), &new));
}

#[test]
fn a_stalled_response_is_retried_after_the_read_timeout() {
    let bucket = s3().bucket("stall");
    s3().put(&bucket, "in/a.txt", b"a\n");
    let proxy = fault_proxy(s3().port());
    // Each kind of request stalls once for longer than the read timeout set below.
    for (method, has) in [("GET", "/in/a.txt"), ("PUT", "/out/a.txt"), ("HEAD", "/out/a.txt")] {
        proxy.break_nth(method, has, 1, 1, Fault::Delay(Duration::from_secs(4)));
    }
    let t = via(&proxy).fluxfile(&format!(
        "[store.\"s3://{bucket}\"]\nread_timeout = \"1s\"\n\n\
         [step.copy]\ninputs = [\"s3://{bucket}/in/a.txt\"]\noutputs = [\"s3://{bucket}/out/a.txt\"]\nrun = \"cp {{{{ inputs[0] }}}} {{{{ outputs[0] }}}}\"\n"
    ));
    let o = t.run_args(json_build(&["-v", "copy"]));
    o.assert_status(0).assert_ran(&["copy"]);
    assert_eq!(s3().get(&bucket, "out/a.txt").as_deref(), Some(&b"a\n"[..]));
    let r = requests(&o);
    assert_eq!((r["GET"], r["PUT"]), (1, 1), "{}", o.describe());
    assert_eq!(proxy.count("GET", "/in/a.txt"), 2, "{}", proxy.describe());
    assert_eq!(proxy.count("PUT", "/out/a.txt"), 2, "{}", proxy.describe());
}

#[test]
fn a_copy_step_with_commands_hands_them_the_staged_copy() {
    let bucket = s3().bucket("with-post");
    s3().put(&bucket, "in/a.txt", b"a\n");
    let proxy = fault_proxy(s3().port());
    // `post` reads what is about to be committed: the copy goes through the staged file.
    let t = via(&proxy).fluxfile(&format!(
        "[step.copy]\ninputs = [\"s3://{bucket}/in/a.txt\"]\noutputs = [\"s3://{bucket}/out/a.txt\"]\naction = \"copy\"\n\
         post = [\"cp {{{{ outputs[0] }}}} seen.txt\"]\n"
    ));
    let o = t.run_args(json_build(&["-v", "copy"]));
    o.assert_status(0).assert_ran(&["copy"]);
    assert_eq!(t.read("seen.txt"), "a\n");
    assert_eq!(s3().get(&bucket, "out/a.txt").as_deref(), Some(&b"a\n"[..]));
    let r = requests(&o);
    assert_eq!((r["GET"], r["PUT"], r["COPY"]), (1, 1, 0), "{}", o.describe());
}
