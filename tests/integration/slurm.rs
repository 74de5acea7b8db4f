//! The Slurm executor (SPEC §6) against a real single-node Slurm, started once per test
//! binary by tests/slurm/start.sh (it installs the packages if missing, as root). Few jobs:
//! the node starts about one job per CPU per second.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::operations::{Bg, history, history_of, wait_until};
use crate::test::*;

/// Start the test cluster (once); a test that needs it fails, naming the script, when it
/// cannot be started.
fn slurm() {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let up = UP.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slurm/start.sh");
        match Command::new("bash").arg(script).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "{script} failed ({}):\n{}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Err(format!("cannot run {script}: {e}")),
        }
    });
    if let Err(e) = up {
        panic!("the Slurm tests need a Slurm cluster; run tests/slurm/start.sh (as root) to start one: {e}");
    }
}

/// This test's jobs still known to `squeue` (matched by their working folder).
fn jobs_of(t: &Test) -> Vec<String> {
    let o = Command::new("squeue").args(["-h", "-o", "%i %T %Z"]).output().expect("run squeue");
    assert!(o.status.success(), "squeue failed: {}", String::from_utf8_lossy(&o.stderr));
    let dir = canon(&t.path()).to_string_lossy().into_owned();
    String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.ends_with(&format!(" {dir}"))).map(str::to_string).collect()
}

const PIPELINE: &str = r#"
[slurm]
poll = "200ms"

[step.numbers]
params = { n = ["1", "2"] }
outputs = ["raw/{{ n }}.txt"]
run = "seq 1 {{ n }}000 > {{ outputs[0] }}"

[step.squares]
EXEC
params = { n = ["1", "2"] }
inputs = ["raw/{{ n }}.txt"]
outputs = ["sq/{{ n }}.txt"]
env = { WORD = "it's {{ n }}" }
run = "awk '{ print $1 * $1 }' {{ inputs[0] }} > {{ outputs[0] }}; echo \"$WORD\" >> {{ outputs[0] }}; echo ran in job ${SLURM_JOB_ID:-none}"

[step.total]
inputs = ["sq/1.txt", "sq/2.txt"]
outputs = ["total.txt"]
run = "cat {{ inputs[0] }} {{ inputs[1] }} | awk '{ s += $1 } END { print s }' > {{ outputs[0] }}"
"#;

#[test]
fn a_pipeline_with_steps_on_slurm_builds_the_same_bytes_as_a_local_build() {
    slurm();
    let local = Test::new().fluxfile(&PIPELINE.replace("EXEC", ""));
    local.run_args(["build"]).assert_success();
    let t = Test::new().fluxfile(&PIPELINE.replace("EXEC", "executor = \"slurm\""));
    let o = t.run_args(json_build(&[]));
    o.assert_status(0).assert_summary(5, 0, 0, 0);
    for rel in ["raw", "sq"] {
        assert_eq!(t.tree(rel), local.tree(rel), "{rel}/ differs from the local build");
    }
    assert_eq!(t.read("total.txt"), local.read("total.txt"));
    assert!(t.read("sq/2.txt").ends_with("\nit's 2\n"), "the step's env reaches the job");
    // The squares ran as Slurm jobs, the rest here; each Slurm attempt records its job id.
    let log = t.run_args(["logs", "squares[2]"]).assert_status(0).stdout.clone();
    let job = log.lines().find_map(|l| l.strip_prefix("ran in job ")).unwrap_or_else(|| panic!("{log}"));
    assert!(job.parse::<u64>().is_ok(), "not a Slurm job id: {log}");
    let local_log = local.run_args(["logs", "squares[2]"]).assert_status(0).stdout.clone();
    assert!(local_log.contains("ran in job none"), "{local_log}");
    let h = history_of(&t, "squares[2]");
    assert_eq!(h[0]["job_id"], job, "{h:#?}");
    assert!(history_of(&t, "numbers[1]")[0]["job_id"].is_null());
    // Staging: nothing is left in the run's staging folder, and a second build runs nothing.
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 5, 0, 0);
    assert!(jobs_of(&t).is_empty());
}

#[test]
fn a_failing_slurm_task_reports_its_exit_code_and_its_log() {
    slurm();
    let t = Test::new().fluxfile(
        "[flux]\nexecutor = \"slurm\"\n[slurm]\npoll = \"200ms\"\n\n[step.bad]\noutputs = [\"bad.txt\"]\nrun = \"echo partial > {{ outputs[0] }}; echo boom >&2; exit 3\"\n",
    );
    let o = t.run_args(json_build(&[]));
    o.assert_status(1);
    assert_eq!(o.task("bad")["error"], "command exited with status 3", "{}", o.describe());
    assert!(!t.exists("bad.txt"), "a failed attempt's staged output is not moved into place");
    let log = t.run_args(["logs", "bad"]).assert_status(0).stdout.clone();
    assert!(log.contains("boom"), "{log}");
    assert!(log.contains("$ echo partial"), "the log shows the command, as a local one does: {log}");
    let h = history(&t);
    assert_eq!(h[0]["status"], "failed");
    assert!(h[0]["job_id"].as_str().is_some_and(|j| j.parse::<u64>().is_ok()), "{h:#?}");
}

#[test]
fn a_slurm_task_is_retried_as_a_new_job() {
    slurm();
    let t = Test::new().fluxfile(
        "[slurm]\npoll = \"200ms\"\n\n[step.flaky]\nexecutor = \"slurm\"\nretries = 1\nretry_delay = \"0s\"\noutputs = [\"ok.txt\"]\nrun = \"if [ -e tried ]; then echo ok > {{ outputs[0] }}; else touch tried; exit 1; fi\"\n",
    );
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("ok.txt"), "ok\n");
    let h = history_of(&t, "flaky");
    assert_eq!(h.len(), 2, "{h:#?}");
    assert_eq!((h[0]["status"].as_str(), h[1]["status"].as_str()), (Some("success"), Some("retrying")));
    assert_ne!(h[0]["job_id"], h[1]["job_id"], "each attempt is its own job: {h:#?}");
}

#[test]
fn a_slurm_task_past_its_timeout_is_cancelled() {
    slurm();
    let t = Test::new().fluxfile(
        "[slurm]\npoll = \"200ms\"\n\n[step.slow]\nexecutor = \"slurm\"\ntimeout = \"2s\"\noutputs = [\"slow.txt\"]\nrun = \"sleep 120; touch {{ outputs[0] }}\"\n",
    );
    let o = t.run_args_within(json_build(&[]), Duration::from_secs(90));
    o.assert_status(1);
    assert_eq!(o.task("slow")["error"], "timed out after 2s", "{}", o.describe());
    let log = t.run_args(["logs", "slow"]).assert_status(0).stdout.clone();
    assert!(log.contains("timed out after 2s; Slurm job"), "{log}");
    assert!(jobs_of(&t).is_empty(), "the job was cancelled: {:?}", jobs_of(&t));
    assert!(!t.exists("slow.txt"));
}

#[test]
fn ctrl_c_cancels_every_slurm_job_and_records_them_interrupted() {
    slurm();
    let t = Test::new().fluxfile(
        "[flux]\nexecutor = \"slurm\"\n[slurm]\npoll = \"200ms\"\n\n[step.s]\nparams = { n = [\"1\", \"2\"] }\noutputs = [\"out/{{ n }}.txt\"]\nrun = \"sleep 120; touch {{ outputs[0] }}\"\n",
    );
    let bg = Bg::spawn(&t, &["build", "-j", "2", "--output", "json"]);
    assert!(wait_until(Duration::from_secs(30), || jobs_of(&t).len() == 2), "two jobs submitted: {:?}", jobs_of(&t));
    bg.signal(libc::SIGINT);
    let o = bg.wait(Duration::from_secs(40));
    o.assert_status(130);
    assert_eq!(o.summary("interrupted"), 2, "{}", o.describe());
    assert!(jobs_of(&t).is_empty(), "no job left: {:?}", jobs_of(&t));
    let h = history(&t);
    assert_eq!(h.len(), 2, "{h:#?}");
    assert!(h.iter().all(|a| a["status"] == "interrupted"), "{h:#?}");
}

#[test]
fn slurm_settings_are_checked_where_they_are_written() {
    // No cluster needed: these are Fluxfile errors.
    let step = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\nexecutor = \"slurm\"\n";
    Test::new()
        .fluxfile(&format!("{step}slurm = {{ partition = \"p\", acount = \"x\" }}\n"))
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("acount")
        .stderr_has(" --> Fluxfile:5:")
        .stderr_has("did you mean `account`?");
    Test::new()
        .fluxfile(&format!("[slurm]\nextra = [\"constraint=fast\"]\n\n{step}"))
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: `constraint=fast` is not an sbatch option")
        .stderr_has(" --> Fluxfile:2:")
        .stderr_has("extra = [\"--constraint=fast\"]");
    Test::new()
        .fluxfile(&step.replace("\"slurm\"", "\"k8s\""))
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: unknown executor `k8s`")
        .stderr_has("use \"local\" or \"slurm\"");
    Test::new()
        .fluxfile(step)
        .args(["build", "--executor", "k8s"])
        .run()
        .assert_status(2)
        .stderr_has("--executor k8s: use `local` or `slurm`");
}

#[test]
fn a_slurm_step_asking_more_memory_than_any_node_has_fails_at_submit_without_retrying() {
    slurm();
    let t = Test::new().fluxfile(
        "[step.big]\nexecutor = \"slurm\"\nmem = \"512G\"\nretries = 2\nretry_delay = \"0s\"\noutputs = [\"big.txt\"]\nrun = \"touch {{ outputs[0] }}\"\n",
    );
    let o = t.run_args(json_build(&[]));
    o.assert_status(1);
    let error = o.task("big")["error"].as_str().unwrap_or_default().to_string();
    assert!(error.starts_with("Slurm refused the job: "), "{}", o.describe());
    assert!(error.contains("Requested node configuration is not available"), "{error}");
    let h = history_of(&t, "big");
    assert_eq!(h.len(), 1, "not retried: {h:#?}");
}

#[test]
fn a_build_after_flux_was_killed_cancels_the_dead_runs_slurm_jobs_and_runs_the_task_again() {
    slurm();
    let t = Test::new()
        .fluxfile(
            "[slurm]\npoll = \"200ms\"\n\n[step.s]\nexecutor = \"slurm\"\noutputs = [\"s.txt\"]\nrun = \"if [ -e slow ]; then sleep 120; fi; echo done > {{ outputs[0] }}\"\n",
        )
        .file("slow", "");
    let bg = Bg::spawn(&t, &["build"]);
    assert!(wait_until(Duration::from_secs(30), || jobs_of(&t).len() == 1), "a job submitted: {:?}", jobs_of(&t));
    let old = jobs_of(&t)[0].split(' ').next().unwrap_or_default().to_string();
    bg.signal(libc::SIGKILL);
    bg.wait(Duration::from_secs(60));
    assert_eq!(jobs_of(&t).len(), 1, "the job outlives a kill -9 of flux");
    t.remove("slow");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("s.txt"), "done\n");
    assert!(
        wait_until(Duration::from_secs(15), || jobs_of(&t).is_empty()),
        "the dead run's job {old} was cancelled: {:?}",
        jobs_of(&t)
    );
    let h = history_of(&t, "s");
    assert_eq!(h[0]["status"], "success", "{h:#?}");
    assert_ne!(h[0]["job_id"], old.as_str(), "a new job ran the task");
}

#[test]
fn ready_tasks_of_an_array_step_go_to_slurm_as_one_job_array() {
    slurm();
    let t = Test::new().fluxfile(
        "[slurm]\npoll = \"200ms\"\n\n[step.a]\nexecutor = \"slurm\"\narray = true\nparams = { n = [\"1\", \"2\", \"3\"] }\noutputs = [\"out/{{ n }}.txt\"]\nrun = \"echo {{ n }} > {{ outputs[0] }}; echo element ${SLURM_ARRAY_TASK_ID}; [ {{ n }} != 3 ]\"\n",
    );
    let o = t.run_args(json_build(&["-j", "3"]));
    o.assert_status(1).assert_summary(2, 0, 1, 0);
    assert_eq!(o.task("a[3]")["error"], "command exited with status 1", "{}", o.describe());
    assert_eq!((t.read("out/1.txt"), t.read("out/2.txt")), ("1\n".into(), "2\n".into()));
    assert!(!t.exists("out/3.txt"));
    let ids: Vec<String> = ["a[1]", "a[2]", "a[3]"]
        .iter()
        .map(|id| history_of(&t, id)[0]["job_id"].as_str().unwrap_or("").into())
        .collect();
    let array = ids[0].split('_').next().unwrap_or_default().to_string();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, vec![format!("{array}_0"), format!("{array}_1"), format!("{array}_2")], "one array: {ids:?}");
    // Each element writes its own task's log.
    let element = ids[1].split('_').nth(1).unwrap_or_default();
    let log = t.run_args(["logs", "a[2]"]).assert_status(0).stdout.clone();
    assert!(log.starts_with("$ echo 2") && log.contains(&format!("element {element}\n")), "{log}");
}

#[test]
fn array_true_on_a_step_that_runs_locally_is_an_error() {
    let step = "[step.a]\noutputs = [\"a.txt\"]\nrun = \"true\"\narray = true\n";
    Test::new()
        .fluxfile(&format!("{step}executor = \"local\"\n"))
        .args(["check"])
        .run()
        .assert_status(2)
        .stderr_has("error: `array = true` needs the step to run on Slurm")
        .stderr_has(" --> Fluxfile:4:");
    Test::new()
        .fluxfile(step)
        .args(["build"])
        .run()
        .assert_status(2)
        .stderr_has("error: `array = true` needs step `a` to run on Slurm, but it runs locally")
        .stderr_has(" --> Fluxfile:4:");
}

#[test]
fn a_job_cancelled_outside_flux_fails_with_slurms_state() {
    slurm();
    let t = Test::new().fluxfile(
        "[slurm]\npoll = \"200ms\"\n\n[step.s]\nexecutor = \"slurm\"\noutputs = [\"s.txt\"]\nrun = \"sleep 120; touch {{ outputs[0] }}\"\n",
    );
    let bg = Bg::spawn(&t, &["build", "--output", "json"]);
    assert!(
        wait_until(Duration::from_secs(30), || jobs_of(&t).iter().any(|j| j.contains(" RUNNING "))),
        "the job runs: {:?}",
        jobs_of(&t)
    );
    let id = jobs_of(&t)[0].split(' ').next().unwrap_or_default().to_string();
    let cancelled = Command::new("scancel").arg(&id).status().expect("run scancel");
    assert!(cancelled.success());
    let o = bg.wait(Duration::from_secs(60));
    o.assert_status(1);
    let error = o.task("s")["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(error, format!("Slurm job {id} ended CANCELLED: the job was cancelled"), "{}", o.describe());
    let log = t.run_args(["logs", "s"]).assert_status(0).stdout.clone();
    assert!(log.contains(&format!("flux: Slurm job {id} ended CANCELLED")), "{log}");
    assert!(!t.exists("s.txt"));
}
