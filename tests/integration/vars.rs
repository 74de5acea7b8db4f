//! `--var` (SPEC §9): only declared vars may be set, and their values never reach the
//! state DB or flux's logs in plain text.

use crate::test::{Test, json_build};

const VARS: &str = r#"
[vars]
root = "data"
token = "none"

[profile.test.vars]
root = "testdata"
region = "eu"

[step.a]
outputs = ["{{ root }}/a.txt"]
run = "echo {{ token }} | wc -c > {{ outputs[0] }}"
"#;

#[test]
fn a_var_no_fluxfile_declares_is_an_error_with_a_did_you_mean() {
    let t = Test::new().fluxfile(VARS);
    t.run_args(json_build(&["--var", "rooot=scratch"]))
        .assert_status(2)
        .stderr_has("--var rooot: the Fluxfile declares no var `rooot`")
        .stderr_has("did you mean `root`?");
    assert!(!t.exists("data") && !t.exists("scratch"), "nothing was built");
    t.run_args(["build", "-n", "--var", "nosuchvar=1"]).assert_status(2).stderr_has("no var `nosuchvar`");
}

#[test]
fn vars_declared_only_in_a_profile_may_be_set() {
    let t = Test::new().fluxfile(VARS);
    t.run_args(json_build(&["--var", "region=us"])).assert_status(0).assert_summary(1, 0, 0, 0);
}

/// Every byte flux keeps in its state folder (the DB, its WAL, logs, caches).
fn state_bytes(t: &Test) -> Vec<(String, Vec<u8>)> {
    t.tree(".flux").into_iter().collect()
}

#[test]
fn var_values_never_reach_the_state_db_or_logs_in_plain_text() {
    let secret = "S3cr3t-Tok3n-4711";
    let t = Test::new().fluxfile(VARS);
    t.run_args(json_build(&["--var", &format!("token={secret}")])).assert_status(0).assert_summary(1, 0, 0, 0);
    t.run_args(json_build(&[&format!("--var=token={secret}"), "--force"])).assert_status(0);
    // A failing build too (its log and error records).
    t.write("Fluxfile", VARS.replace("| wc -c >", "| wc -c > /dev/null; false >"));
    t.run_args(json_build(&["--var", &format!("token={secret}")]))
        .stderr_has("FAIL a: command exited with status 1")
        .assert_status(1);
    let files = state_bytes(&t);
    assert!(files.iter().any(|(p, _)| p.ends_with("state.db")), "{:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    assert!(files.iter().any(|(p, _)| p.ends_with("state.db-wal")), "the WAL is checked too");
    for (path, bytes) in &files {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{path} holds the --var value in plain text"
        );
    }
    let db = files.iter().find(|(p, _)| p.ends_with("state.db-wal")).map(|f| &f.1).unwrap();
    let text = String::from_utf8_lossy(db);
    assert!(text.contains("--var token=***"), "the run records the command line with the value redacted");
    assert!(text.contains("--var=token=***"));
}

#[test]
fn param_values_are_kept_in_the_run_record() {
    let t = Test::new().fluxfile("[step.p]\nparams = { n = [\"4242\", \"7\"] }\noutputs = [\"p{{ n }}.txt\"]\nrun = \"echo > {{ outputs[0] }}\"\n");
    t.run_args(json_build(&["--param", "n=4242"])).assert_status(0);
    let all: Vec<u8> = state_bytes(&t).into_iter().flat_map(|(_, b)| b).collect();
    assert!(String::from_utf8_lossy(&all).contains("--param n=4242"));
}
