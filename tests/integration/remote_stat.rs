//! `flux status` and `flux clear` stat remote outputs as `flux build` does: one LIST per
//! folder, not a HEAD per target (counted with `-v` against the S3 test server).

use crate::servers::s3;
use crate::stores::{requests, s3_test};
use crate::test::*;

const DAYS: u32 = 5;
const RANGE: &str = "2024-01-01..2024-01-05";

/// A step with two remote outputs per day, in two folders (`out/`, `side/`).
fn fluxfile(bucket: &str) -> String {
    format!(
        "[step.day]\nparams = {{ date = \"date\" }}\n\
         outputs = [\"s3://{bucket}/out/{{{{ date }}}}.txt\", \"s3://{bucket}/side/{{{{ date }}}}.txt\"]\n\
         run = \"echo {{{{ date }}}} > {{{{ outputs[0] }}}}; echo {{{{ date }}}} > {{{{ outputs[1] }}}}\"\n"
    )
}

/// `fluxfile`'s project, built over the days.
fn built() -> (Test, String) {
    let bucket = s3().bucket("stat");
    let t = s3_test().fluxfile(&fluxfile(&bucket));
    let o = t.run_args(["build", "--date-range", RANGE, "day", "--output", "json"]);
    o.assert_status(0).assert_summary(DAYS as u64, 0, 0, 0);
    assert!(o.stderr().lines().all(|l| l.starts_with("ok ")), "{}", o.describe());
    assert_eq!(s3().keys(&bucket).len(), 2 * DAYS as usize);
    (t, bucket)
}

#[test]
fn flux_status_over_remote_outputs_lists_each_folder_once_and_heads_nothing() {
    let (t, _) = built();
    let o = t.run_args(["status", "-v", "--date-range", RANGE, "day", "--output", "json"]);
    o.assert_status(0).stderr_has("flux: remote requests:");
    let r = requests(&o);
    assert_eq!(r.get("LIST"), Some(&2), "one listing per folder (out/, side/)\n{}", o.describe());
    for kind in ["HEAD", "GET", "PUT", "DELETE"] {
        assert_eq!(r.get(kind), Some(&0), "{kind} in flux status\n{}", o.describe());
    }
    let cells = o.json()["rows"][0]["cells"].as_array().unwrap().clone();
    assert_eq!(cells.len(), DAYS as usize);
    assert!(cells.iter().all(|c| c["status"] == "success"), "{cells:?}");
}

#[test]
fn flux_status_tells_present_and_missing_remote_outputs_apart_from_one_listing() {
    let bucket = s3().bucket("stat-adopt");
    let t = s3_test().fluxfile(&fluxfile(&bucket));
    // Made outside flux (no records): day 1 whole, day 2 with one of its two outputs.
    for key in ["out/2024-01-01.txt", "side/2024-01-01.txt", "out/2024-01-02.txt"] {
        s3().put(&bucket, key, b"x");
    }
    let o = t.run_args(["status", "-v", "--date-range", RANGE, "day", "--output", "json"]);
    o.assert_status(0).stderr_has("flux: remote requests:");
    assert_eq!(requests(&o).get("HEAD"), Some(&0), "{}", o.describe());
    let statuses: Vec<String> = o.json()["rows"][0]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["up to date", "missing", "missing", "missing", "missing"]);
}

#[test]
fn flux_clear_delete_outputs_lists_each_folder_once_and_heads_nothing() {
    let (t, bucket) = built();
    let o = t.run_args(["clear", "-v", "--delete-outputs", "--date-range", RANGE, "day"]);
    o.assert_status(0).stdout_has("cleared 5 tasks, deleted 10 outputs");
    let r = requests(&o);
    let n = 2 * DAYS as u64;
    assert_eq!(r.get("HEAD"), Some(&0), "no HEAD per output\n{}", o.describe());
    assert_eq!(r.get("DELETE"), Some(&n), "{}", o.describe());
    // One listing per folder to see what exists, then each delete looks under its target
    // (a remote output may be a folder).
    assert_eq!(r.get("LIST"), Some(&(2 + n)), "{}", o.describe());
    assert!(s3().keys(&bucket).is_empty());
}
