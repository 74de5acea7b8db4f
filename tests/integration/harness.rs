//! The harness itself (tests/test.rs): what a test leaves unchecked is checked for it,
//! runs have timeouts, and no file under tests/ is left out of the test binary.

use std::time::Duration;

use crate::operations::{kill_marked, sleep_marker, sleeps_with, wait_until};
use crate::test::*;

const ONE: &str = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"echo a > {{ outputs[0] }}\"\n";
const FAILS: &str = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"exit 3\"\n";

#[test]
#[should_panic(expected = "flux exited 1 and the test did not assert its status")]
fn a_failure_the_test_does_not_assert_fails_the_test() {
    let t = Test::new().fluxfile(FAILS);
    let o = t.run_args(["build"]);
    let _ = o.stderr();
}

#[test]
#[should_panic(expected = "did not look at stderr")]
fn stderr_the_test_does_not_look_at_fails_the_test() {
    let t = Test::new().fluxfile(FAILS);
    t.run_args(["build"]).assert_status(1);
}

#[test]
fn a_success_that_prints_only_its_tasks_ok_lines_needs_no_assertion() {
    let t = Test::new().fluxfile(ONE);
    let o = t.run_args(["build"]);
    assert!(o.stderr.starts_with("ok   a (missing-output) "), "{}", o.describe());
    assert!(routine_stderr(&o.stderr));
    assert!(!routine_stderr("warning: something\n"));
    assert!(!routine_stderr("FAIL a: command exited with status 3\n"));
}

#[test]
fn asserting_status_and_stderr_satisfies_the_harness() {
    let t = Test::new().fluxfile(FAILS);
    t.run_args(["build"]).assert_status(1).stderr_has("FAIL a");
    t.run_args(["frobnicate"]).assert_status(2).stderr_has("error:");
}

#[test]
#[should_panic(expected = "did not finish within")]
fn a_background_run_past_its_limit_fails_the_test() {
    let t = Test::new().fluxfile("[step.a]\noutputs = [\"a.txt\"]\nrun = \"sleep 30\"\n");
    let r = t.spawn_args(["build"]);
    r.wait(Duration::from_millis(500));
}

#[test]
fn a_foreground_run_past_its_limit_is_killed() {
    let t = Test::new().fluxfile("[step.a]\noutputs = [\"a.txt\"]\nrun = \"sleep 30\"\n");
    let o = t.run_args_within(["build"], Duration::from_millis(500));
    o.assert_status(KILLED).stderr_has("the test killed flux after");
}

#[test]
fn signals_are_sent_by_name_or_number() {
    let mark = sleep_marker(30);
    let t = Test::new().fluxfile(&format!("[step.a]\noutputs = [\"a.txt\"]\nrun = \"sleep {mark}\"\n"));
    let r = t.spawn_args(["build"]);
    assert!(wait_until(Duration::from_secs(30), || !sleeps_with(&mark).is_empty()));
    r.signal("TERM");
    r.wait(Duration::from_secs(30)).assert_status(130).stderr_has("interrupted");
    let r = Running::spawn(&t, &["build"]);
    assert!(wait_until(Duration::from_secs(30), || !sleeps_with(&mark).is_empty()));
    let o = r.kill9();
    kill_marked(&mark);
    assert_eq!(o.status, -libc::SIGKILL);
}

/// With `autotests = false` cargo compiles only tests/lib.rs: a file under tests/ that it
/// does not name as a module would never run.
#[test]
fn every_test_file_is_a_module_of_the_integration_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let lib = std::fs::read_to_string(root.join("lib.rs")).expect("read tests/lib.rs");
    let mut missing = Vec::new();
    for (dir, declared) in [
        ("integration", (|n: &str| format!("#[path = \"integration/{n}.rs\"]\nmod {n};")) as fn(&str) -> String),
        ("", |n: &str| format!("mod {n};")),
    ] {
        let entries = std::fs::read_dir(root.join(dir)).expect("list tests/");
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "rs") || p.file_stem().is_some_and(|s| s == "lib") {
                continue;
            }
            let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            if !lib.contains(&declared(&name)) {
                missing.push(p.strip_prefix(&root).unwrap_or(&p).display().to_string());
            }
        }
    }
    assert!(missing.is_empty(), "files under tests/ that tests/lib.rs does not compile: {missing:?}");
}
