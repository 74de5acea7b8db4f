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

/// The cluster with accounting (slurmdbd, so that `sacct` works), started once per test
/// binary beside the first by `tests/slurm/start.sh --with-dbd`: its `SLURM_CONF`.
fn slurm_with_accounting() -> &'static str {
    static UP: OnceLock<Result<String, String>> = OnceLock::new();
    let up = UP.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slurm/start.sh");
        match Command::new("bash").arg(script).arg("--with-dbd").output() {
            Ok(o) if o.status.success() => {
                let out = String::from_utf8_lossy(&o.stdout);
                out.lines().last().map(str::to_string).ok_or_else(|| format!("{script} printed no SLURM_CONF"))
            }
            Ok(o) => Err(format!(
                "{script} --with-dbd failed ({}):\n{}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Err(format!("cannot run {script}: {e}")),
        }
    });
    match up {
        Ok(conf) => conf,
        Err(e) => panic!(
            "these tests need a Slurm cluster with accounting; run tests/slurm/start.sh --with-dbd (as root): {e}"
        ),
    }
}

/// Where a program is on the PATH.
fn which(name: &str) -> String {
    let o = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().expect("run sh");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn make_executable(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// PATH with `dir` first.
fn path_with(dir: &std::path::Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

/// Wrappers, in the project's `shims/`, around the Slurm commands flux calls: each notes
/// its command line in `shims/calls` and runs the real command. Returns that file.
fn shims(t: &Test) -> std::path::PathBuf {
    let calls = t.abs("shims/calls");
    for name in ["sbatch", "squeue", "sacct", "scontrol", "scancel"] {
        let real = which(name);
        let shim = t.abs(&format!("shims/{name}"));
        t.write(
            &format!("shims/{name}"),
            format!("#!/bin/sh\nprintf '%s\\n' \"{name} $*\" >> '{}'\nexec {real} \"$@\"\n", calls.display()),
        );
        make_executable(&shim);
    }
    calls
}

/// Runs of `t` call Slurm through [`shims`].
fn with_shims(t: Test) -> (Test, std::path::PathBuf) {
    let calls = shims(&t);
    let path = path_with(&t.abs("shims"));
    (t.env("PATH", &path), calls)
}

/// Every job Slurm knows of for this test, ended ones too (`MinJobAge` keeps them).
fn jobs_ever(t: &Test) -> Vec<String> {
    let o = Command::new("squeue").args(["-h", "-r", "-t", "all", "-o", "%i %Z"]).output().expect("run squeue");
    assert!(o.status.success(), "squeue failed: {}", String::from_utf8_lossy(&o.stderr));
    let dir = canon(&t.path()).to_string_lossy().into_owned();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(&format!(" {dir}")).map(str::to_string))
        .collect()
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
    let log = t.run_args(["logs", "squares[2]"]).assert_status(0).stderr_has(" ran as Slurm job ").stdout.clone();
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
    o.assert_status(1).stderr_has("FAIL bad: command exited with status 3").stderr_has("    boom");
    assert_eq!(o.task("bad")["error"], "command exited with status 3", "{}", o.describe());
    assert!(!t.exists("bad.txt"), "a failed attempt's staged output is not moved into place");
    let log = t.run_args(["logs", "bad"]).assert_status(0).stderr_has(" ran as Slurm job ").stdout.clone();
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
    t.run_args(json_build(&[]))
        .assert_status(0)
        .assert_summary(1, 0, 0, 0)
        .stderr_has("retry flaky: command exited with status 1; attempt 2 in 0s");
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
    o.assert_status(1).stderr_has("FAIL slow: timed out after 2s");
    assert_eq!(o.task("slow")["error"], "timed out after 2s", "{}", o.describe());
    let log = t.run_args(["logs", "slow"]).assert_status(0).stderr_has(" ran as Slurm job ").stdout.clone();
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
    o.assert_status(130).stderr_has("interrupted: stopping running tasks");
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
    o.assert_status(1).stderr_has("FAIL big: Slurm refused the job: ");
    let error = o.task("big")["error"].as_str().unwrap_or_default().to_string();
    assert!(error.starts_with("Slurm refused the job: "), "{}", o.describe());
    assert!(error.contains("Requested node configuration is not available"), "{error}");
    let h = history_of(&t, "big");
    assert_eq!(h.len(), 1, "not retried: {h:#?}");
}

#[test]
fn a_build_after_flux_was_killed_cancels_a_dead_runs_job_whose_task_changed_and_runs_it_again() {
    slurm();
    let t = Test::new()
        .fluxfile(
            "[slurm]\npoll = \"200ms\"\n\n[step.s]\nexecutor = \"slurm\"\ninputs = [\"in.txt\"]\noutputs = [\"s.txt\"]\nrun = \"if [ -e slow ]; then sleep 120; fi; cat {{ inputs[0] }} > {{ outputs[0] }}\"\n",
        )
        .file("in.txt", "old\n")
        .file("slow", "");
    let bg = Bg::spawn(&t, &["build"]);
    assert!(wait_until(Duration::from_secs(30), || jobs_of(&t).len() == 1), "a job submitted: {:?}", jobs_of(&t));
    let old = jobs_of(&t)[0].split(' ').next().unwrap_or_default().to_string();
    bg.signal(libc::SIGKILL);
    bg.wait(Duration::from_secs(60)).assert_status(-9);
    assert_eq!(jobs_of(&t).len(), 1, "the job outlives a kill -9 of flux");
    // The task's input changed: the dead run's job computes a stale output.
    t.write("in.txt", "new\n");
    t.remove("slow");
    t.run_args(json_build(&[])).assert_status(0).assert_summary(1, 0, 0, 0);
    assert_eq!(t.read("s.txt"), "new\n");
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
fn a_build_after_flux_was_killed_adopts_the_dead_runs_slurm_jobs_and_runs_nothing_twice() {
    slurm();
    let t = Test::new().fluxfile(
        "[slurm]\npoll = \"200ms\"\n\n[step.s]\nexecutor = \"slurm\"\nparams = { n = [\"1\", \"2\", \"3\"] }\noutputs = [\"out/{{ n }}.txt\"]\nrun = \"echo {{ n }} >> ran.txt; sleep 5; echo {{ n }}-done | tee {{ outputs[0] }}\"\n",
    );
    let bg = Bg::spawn(&t, &["build", "-j", "3"]);
    assert!(wait_until(Duration::from_secs(30), || jobs_of(&t).len() == 3), "three jobs submitted: {:?}", jobs_of(&t));
    let mut old: Vec<String> =
        jobs_of(&t).iter().map(|j| j.split(' ').next().unwrap_or_default().to_string()).collect();
    old.sort();
    bg.signal(libc::SIGKILL);
    bg.wait(Duration::from_secs(60)).assert_status(-9);
    // The new build calls Slurm through wrappers that note each call.
    let (t, calls) = with_shims(t);
    let o = t.run_args(json_build(&["-j", "3"]));
    o.assert_status(0).assert_summary(3, 0, 0, 0);
    assert!(o.stderr().lines().all(|l| l.starts_with("ok   s[")), "only progress on stderr: {}", o.describe());
    let noted = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(!noted.lines().any(|l| l.starts_with("sbatch")), "nothing submitted again: {noted}");
    // Each command ran once; the outputs are in place; no other job ever ran here.
    let mut ran: Vec<String> = t.read("ran.txt").lines().map(str::to_string).collect();
    ran.sort();
    assert_eq!(ran, ["1", "2", "3"]);
    for n in ["1", "2", "3"] {
        assert_eq!(t.read(&format!("out/{n}.txt")), format!("{n}-done\n"));
    }
    let mut ever = jobs_ever(&t);
    ever.sort();
    assert_eq!(ever, old, "the only jobs are those the dead run submitted");
    let mut adopted: Vec<String> = ["s[1]", "s[2]", "s[3]"]
        .iter()
        .map(|id| {
            let h = history_of(&t, id);
            assert_eq!(h[0]["status"], "success", "{h:#?}");
            h[0]["job_id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    adopted.sort();
    assert_eq!(adopted, old, "each attempt records the job it adopted");
    let log = t.run_args(["logs", "s[2]"]).assert_status(0).stderr_has(" ran as Slurm job ").stdout.clone();
    assert!(log.contains("whose flux died; this run adopted it") && log.contains("2-done"), "{log}");
    // Nothing is left to run.
    t.run_args(json_build(&[])).assert_status(0).assert_summary(0, 3, 0, 0);
}

#[test]
fn an_sbatch_that_fails_or_hangs_after_submitting_is_found_by_its_comment_not_submitted_twice() {
    slurm();
    let real = which("sbatch");
    for (how, tail) in [("fails", "exit 1"), ("hangs", "exec sleep 60")] {
        let t = Test::new().fluxfile(
            "[slurm]\npoll = \"200ms\"\ncommand_timeout = \"3s\"\n\n[step.s]\nexecutor = \"slurm\"\noutputs = [\"s.txt\"]\nrun = \"echo once >> ran.txt; echo ok > {{ outputs[0] }}\"\n",
        );
        // An sbatch whose job is submitted but whose answer is lost.
        t.write("bin/sbatch", format!("#!/bin/sh\n{real} \"$@\"\n{tail}\n"));
        make_executable(&t.abs("bin/sbatch"));
        let path = path_with(&t.abs("bin"));
        let t = t.env("PATH", &path);
        let o = t.run_args(json_build(&[]));
        o.assert_status(0).assert_summary(1, 0, 0, 0);
        assert!(o.stderr().lines().all(|l| l.starts_with("ok   s ")), "{how}: only progress: {}", o.describe());
        assert_eq!(t.read("ran.txt"), "once\n", "{how}");
        let ever = jobs_ever(&t);
        assert_eq!(ever.len(), 1, "{how}: one job: {ever:?}");
        assert_eq!(history_of(&t, "s")[0]["job_id"], ever[0].as_str(), "{how}");
    }
}

#[test]
fn ready_tasks_of_an_array_step_go_to_slurm_as_one_job_array() {
    slurm();
    let t = Test::new().fluxfile(
        "[slurm]\npoll = \"200ms\"\n\n[step.a]\nexecutor = \"slurm\"\narray = true\nparams = { n = [\"1\", \"2\", \"3\"] }\noutputs = [\"out/{{ n }}.txt\"]\nrun = \"echo {{ n }} > {{ outputs[0] }}; echo element ${SLURM_ARRAY_TASK_ID}; [ {{ n }} != 3 ]\"\n",
    );
    let o = t.run_args(json_build(&["-j", "3"]));
    o.assert_status(1).assert_summary(2, 0, 1, 0).stderr_has("FAIL a[3]: command exited with status 1");
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
    let log = t.run_args(["logs", "a[2]"]).assert_status(0).stderr_has(" ran as Slurm job ").stdout.clone();
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
    o.assert_status(1).stderr_has("FAIL s: Slurm job ");
    let error = o.task("s")["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(error, format!("Slurm job {id} ended CANCELLED: the job was cancelled"), "{}", o.describe());
    let log = t.run_args(["logs", "s"]).assert_status(0).stderr_has(" ran as Slurm job ").stdout.clone();
    assert!(log.contains(&format!("flux: Slurm job {id} ended CANCELLED")), "{log}");
    assert!(!t.exists("s.txt"));
}

/// Two tasks on Slurm at once: one succeeds, one exits 3.
const TWO_TASKS: &str = "[flux]\nexecutor = \"slurm\"\n[slurm]\npoll = \"200ms\"\n\n[step.s]\nparams = { n = [\"0\", \"3\"] }\noutputs = [\"out/{{ n }}.txt\"]\nrun = \"sleep 1; echo {{ n }} > {{ outputs[0] }}; exit {{ n }}\"\n";

/// The calls noted by [`shims`] that start with `prefix` and contain `has`.
fn noted<'a>(calls: &'a str, prefix: &str, has: &str) -> Vec<&'a str> {
    calls.lines().filter(|l| l.starts_with(prefix) && l.contains(has)).collect()
}

#[test]
fn with_accounting_flux_polls_sacct_once_a_round_for_the_whole_run() {
    let conf = slurm_with_accounting();
    let (t, calls) = with_shims(Test::new().fluxfile(TWO_TASKS).env("SLURM_CONF", conf));
    let o = t.run_args(json_build(&["-j", "2"]));
    o.assert_status(1).assert_summary(1, 0, 1, 0).stderr_has("FAIL s[3]: command exited with status 3");
    assert_eq!(o.task("s[3]")["error"], "command exited with status 3", "{}", o.describe());
    assert_eq!(t.read("out/0.txt"), "0\n");
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    let mut ids: Vec<String> =
        ["s[0]", "s[3]"].iter().map(|id| history_of(&t, id)[0]["job_id"].as_str().unwrap_or("").to_string()).collect();
    ids.sort();
    // Each round asks accounting about every job in hand with one call.
    let polls = noted(&calls, "sacct ", "JobID,State");
    assert!(!polls.is_empty(), "sacct polls: {calls}");
    assert!(polls[0].ends_with(&format!("-j {}", ids.join(","))), "one call for both jobs: {calls}");
    // squeue only fills in, in a round where slurmdbd had not heard of a job yet; no
    // per-job scontrol.
    let squeues = noted(&calls, "squeue ", "%i %T");
    assert!(squeues.len() <= polls.len(), "{calls}");
    assert!(noted(&calls, "scontrol show job", "").is_empty(), "{calls}");
}

#[test]
fn without_accounting_flux_polls_squeue_and_never_calls_sacct() {
    slurm();
    let (t, calls) = with_shims(Test::new().fluxfile(TWO_TASKS));
    let o = t.run_args_within(json_build(&["-j", "2"]), Duration::from_secs(60));
    o.assert_status(1).assert_summary(1, 0, 1, 0).stderr_has("FAIL s[3]: command exited with status 3");
    assert_eq!(o.task("s[3]")["error"], "command exited with status 3", "{}", o.describe());
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(noted(&calls, "sacct", "").is_empty(), "no accounting here, so no sacct: {calls}");
    let polls = noted(&calls, "squeue ", "%i %T");
    assert!(!polls.is_empty(), "{calls}");
    assert!(polls.iter().all(|p| p.contains("--name flux-1-")), "one squeue by the run's job name: {calls}");
}

#[test]
fn stream_shows_a_slurm_tasks_lines_while_it_runs() {
    slurm();
    let t = Test::new().fluxfile(
        "[slurm]\npoll = \"200ms\"\n\n[step.s]\nexecutor = \"slurm\"\noutputs = [\"s.txt\"]\nrun = [\"echo first; sleep 2; echo second >&2\", \"printf 'no newline'; echo ok > {{ outputs[0] }}\"]\n",
    );
    let o = t.run_args(json_build(&["--stream"]));
    o.assert_status(0).assert_summary(1, 0, 0, 0);
    let streamed: Vec<&str> = o.stderr().lines().filter(|l| l.contains(" | ")).collect();
    assert_eq!(streamed, ["s | first", "s | second", "s | no newline"], "{}", o.describe());
    o.json();
}
