//! The racy-git rule and the quick check (SPEC §5): a no-op build trusts what it recorded
//! without reading files, and never trusts a digest taken within the clock tick of the
//! file's mtime.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use crate::test::*;

/// src.txt -> mid.txt -> out.txt, the last task ending well after the first two outputs
/// were hashed (`sleep`), so that the racy margin of every file hashed has passed when the
/// build writes its records.
const CHAIN: &str = r#"
[step.mid]
inputs = ["src.txt"]
outputs = ["mid.txt"]
run = "cat {{ inputs[0] }} > {{ outputs[0] }}"

[step.out]
inputs = ["mid.txt"]
outputs = ["out.txt"]
run = "sleep 0.3; cat {{ inputs[0] }} {{ inputs[0] }} > {{ outputs[0] }}"
"#;

/// (size, mtime in ns, inode) of a file.
fn stat(t: &Test, rel: &str) -> (u64, i64, u64) {
    let m = std::fs::metadata(t.abs(rel)).expect("stat");
    (m.size(), m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.ino())
}

/// Rewrite a file in place (same inode) and give it back the mtime `at`.
fn rewrite_keeping_mtime(t: &Test, rel: &str, contents: &str, at: SystemTime) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(t.abs(rel)).expect("open");
    f.write_all(contents.as_bytes()).expect("write");
    f.set_modified(at).expect("set the mtime");
}

#[test]
fn a_same_size_rewrite_with_the_same_mtime_after_a_hash_inside_the_margin_is_seen() {
    // The file's mtime is ahead of the moment the build hashes it, as it is (to within a
    // clock tick) for a file written just before it is hashed, or on a file server whose
    // clock runs ahead: an edit after that hash may leave size, mtime and inode as they
    // were, so neither the digest nor the quick key may be trusted next time.
    let t = Test::new().fluxfile(CHAIN).file("src.txt", "aaaa\n");
    let ahead = SystemTime::now() + Duration::from_secs(2);
    std::fs::File::options().write(true).open(t.abs("src.txt")).unwrap().set_modified(ahead).unwrap();
    t.run_args(json_build(&["mid"])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("mid.txt"), "aaaa\n");
    // Once that mtime has passed (so that the next build looks the digest up at all):
    // the same size, the same mtime, the same inode, other bytes.
    while SystemTime::now() < ahead + Duration::from_millis(200) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = stat(&t, "src.txt");
    rewrite_keeping_mtime(&t, "src.txt", "bbbb\n", ahead);
    assert_eq!(stat(&t, "src.txt"), before, "the rewrite must leave the stat as it was");
    let o = t.run_args(json_build(&["mid"]));
    o.assert_status(0).assert_task("mid", "success", Some("input-changed"));
    assert_eq!(t.read("mid.txt"), "bbbb\n");
}

#[test]
fn the_quick_check_skips_tasks_whose_inputs_kept_their_stats_without_digests() {
    let t = Test::new().fluxfile(CHAIN).file("src.txt", "aaaa\n");
    t.age_files();
    t.run_args(json_build(&[])).assert_status(0).assert_summary(2, 0, 0, 0);
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 2, 0, 0);
    // Without the digest cache, only the quick keys can tell that nothing changed: a
    // build that fingerprinted the tasks would have to read src.txt and mid.txt.
    let db = rusqlite::Connection::open(t.abs(".flux/state.db")).expect("open the state db");
    assert_eq!(db.execute("DELETE FROM digests", []).unwrap(), 2, "src.txt and mid.txt had digests");
    let o = t.run_args(["-v", "build"]);
    o.assert_status(0).stdout_has("0 ran, 2 up to date").stderr_has("(0 files read for digests)");
    // Another stat (mtime) for the same bytes: `mid`'s key no longer matches, so its input
    // is read; the fingerprint is the same, so nothing runs, and the new key is recorded.
    let (_, mtime, _) = stat(&t, "src.txt");
    let older = SystemTime::UNIX_EPOCH + Duration::from_nanos(mtime as u64) - Duration::from_secs(60);
    rewrite_keeping_mtime(&t, "src.txt", "aaaa\n", older);
    let o = t.run_args(["-v", "build"]);
    o.assert_status(0).stdout_has("0 ran, 2 up to date").stderr_has("(1 files read for digests)");
    let o = t.run_args(["-v", "build"]);
    o.assert_status(0).stdout_has("0 ran, 2 up to date").stderr_has("(0 files read for digests)");
    // Other bytes of the same size, with an mtime of their own: the key differs, the
    // fingerprint too.
    rewrite_keeping_mtime(&t, "src.txt", "cccc\n", older - Duration::from_secs(60));
    t.run_args(json_build(&[])).assert_status(0).assert_ran(&["mid", "out"]);
    assert_eq!(t.read("out.txt"), "cccc\ncccc\n");
}

#[test]
fn the_first_no_op_after_a_build_reads_no_file() {
    // The build hashed src.txt and mid.txt right after they were written (inside the racy
    // margin); `out` ran for 0.3 s after that, so when the build wrote its records their
    // margin had passed and it read them once more, to record digests and quick keys the
    // next build can trust.
    let t = Test::new().fluxfile(CHAIN).file("src.txt", "aaaa\n");
    let o = t.run_args(["-v", "build"]);
    o.assert_status(0).stdout_has("2 ran").stderr_has("read again, so that their digests are trusted");
    let o = t.run_args(["-v", "build"]);
    o.assert_status(0).stdout_has("0 ran, 2 up to date").stderr_has("(0 files read for digests)");
    // Nothing was read, so nothing was settled.
    o.stderr_lacks("read again");
}
