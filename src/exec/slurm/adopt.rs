//! Slurm jobs outlive a flux that dies (kill -9, a lost login node): the next build on
//! the project re-attaches to them instead of submitting the work again (SPEC §6).
//!
//! Each run lists the jobs it submits in `<stage>/slurm/jobs`, one line per job, written
//! the moment `sbatch` answers: `<job id>\t<job name>\t<staging folder>\t<log>\t<comment>`
//! (the comment, `<task-id>#<attempt>`, last: it may hold tabs). When a build finds the
//! run dead ([`crate::procs::sweep_dead_runs`]), [`Orphans::collect`] pairs each listed
//! job with the attempt the run had running for it, and [`Orphans::settle`] asks Slurm
//! (one `squeue`) which of them still count: pending or running, or ended with their exit
//! file written. When the build is about to run such a task, [`Orphans::offer`] hands the
//! job over for adoption if the attempt was started for the very fingerprint the task
//! has now and the step stages its outputs; the executor then polls that job instead of
//! submitting one, reads its exit file and moves its outputs into place from the dead
//! run's staging folder. Every other job of a dead run is cancelled: at once when Slurm
//! no longer runs it usefully or the task changed, at the end of the build when the build
//! did not need it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cmd::{exit_file, run};
use crate::state::{DeadAttempt, Hash};

/// The file, in a run's `slurm` folder, that lists the jobs it submitted.
pub(super) const JOBS_FILE: &str = "jobs";

/// One line of a jobs file.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Listed {
    pub job_id: String,
    pub name: String,
    pub stage: PathBuf,
    pub log: PathBuf,
    /// `<task-id>#<attempt>`; empty for a job listed only so that it is cancelled should
    /// this run die too (a dead run's job this run did not adopt).
    pub comment: String,
}

impl Listed {
    /// Append the line to the jobs file in `scripts` (one write: a kill -9 cannot tear it).
    pub(super) fn note(&self, scripts: &Path) {
        let line = format!(
            "{}\t{}\t{}\t{}\t{}\n",
            self.job_id,
            self.name,
            self.stage.display(),
            self.log.display(),
            self.comment.replace('\n', " ")
        );
        let _ = std::fs::create_dir_all(scripts);
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(scripts.join(JOBS_FILE)) {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn parse(line: &str) -> Option<Listed> {
        let mut f = line.splitn(5, '\t');
        let job_id = f.next()?.trim().to_string();
        if job_id.is_empty() {
            return None;
        }
        Some(Listed {
            job_id,
            name: f.next()?.to_string(),
            stage: PathBuf::from(f.next()?),
            log: PathBuf::from(f.next()?),
            comment: f.next()?.to_string(),
        })
    }
}

/// A dead run's job that a build may adopt.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    pub job_id: String,
    /// Its job name (the dead run's), for `squeue` and `scancel`.
    pub name: String,
    /// The staging folder its outputs go to (the dead run's).
    pub stage: PathBuf,
    /// The log Slurm writes its output to; its exit file is beside it.
    pub log: PathBuf,
    /// The run that submitted it, and the fingerprint its attempt was started for.
    pub run_id: i64,
    pub expect: Option<(Hash, Hash)>,
    started_at: f64,
}

/// The jobs of dead runs, until the build that found them ends.
#[derive(Debug, Default)]
pub struct Orphans {
    /// Adoptable, by task id.
    by_task: HashMap<String, Orphan>,
    /// Job ids to cancel (see [`Orphans::settle`]).
    cancel: Vec<String>,
    /// Staging folders kept for the adoptable jobs, removed when the build ends.
    dirs: Vec<PathBuf>,
}

impl Orphans {
    /// The jobs listed in the staging folder `stage` of dead run `run_id`, paired with the
    /// attempts it had running (`running`); the others are to be cancelled. Whether it
    /// listed any job.
    pub fn collect(&mut self, stage: &Path, run_id: i64, running: &[DeadAttempt]) -> bool {
        let Ok(text) = std::fs::read_to_string(stage.join("slurm").join(JOBS_FILE)) else { return false };
        let mut any = false;
        for line in text.lines() {
            any = true;
            let Some(l) = Listed::parse(line) else {
                // An id alone (a line from an older flux): cancelled.
                let id = line.split('\t').next().unwrap_or_default().trim();
                if !id.is_empty() {
                    self.cancel.push(id.to_string());
                }
                continue;
            };
            let attempt =
                running.iter().find(|a| !l.comment.is_empty() && format!("{}#{}", a.task_id, a.attempt) == l.comment);
            let Some(a) = attempt else {
                self.cancel.push(l.job_id);
                continue;
            };
            let orphan = Orphan {
                job_id: l.job_id,
                name: l.name,
                stage: l.stage,
                log: l.log,
                run_id,
                expect: a.expect,
                started_at: a.started_at,
            };
            // A task taken over from one dead run by another that died too: the later wins.
            match self.by_task.get(&a.task_id) {
                Some(o) if o.started_at >= orphan.started_at => self.cancel.push(orphan.job_id),
                _ => {
                    if let Some(old) = self.by_task.insert(a.task_id.clone(), orphan) {
                        self.cancel.push(old.job_id);
                    }
                }
            }
        }
        any
    }

    /// Ask Slurm (one `squeue`) which collected jobs still count: pending or running, or
    /// ended with their exit file written; cancel the others and those listed to cancel.
    pub fn settle(&mut self) {
        if !self.by_task.is_empty() {
            let mut names: Vec<String> = self.by_task.values().map(|o| o.name.clone()).collect();
            names.sort_unstable();
            names.dedup();
            let listed = super::query::squeue(&names, super::cmd::COMMAND_TIMEOUT);
            let keep = |o: &Orphan| {
                exit_file(&o.log).exists()
                    || match &listed {
                        Ok(l) => l.get(&o.job_id).is_some_and(|s| !super::query::is_final(s)),
                        // Slurm does not answer: adopt; the executor's polling decides.
                        Err(_) => true,
                    }
            };
            let (kept, lost): (HashMap<_, _>, HashMap<_, _>) =
                std::mem::take(&mut self.by_task).into_iter().partition(|(_, o)| keep(o));
            self.cancel.extend(lost.into_values().map(|o| o.job_id));
            self.by_task = kept;
        }
        for o in self.by_task.values() {
            if !self.dirs.contains(&o.stage) {
                self.dirs.push(o.stage.clone());
            }
        }
        cancel(&std::mem::take(&mut self.cancel));
    }

    /// Whether the staging folder `stage` is kept for a job that may be adopted.
    pub fn keeps(&self, stage: &Path) -> bool {
        self.dirs.iter().any(|d| d == stage)
    }

    /// Take over what `other` found (a later sweep in the same build); list its jobs in
    /// this run's jobs file (in `scripts`), to be cancelled should this run die too.
    pub fn extend(&mut self, mut other: Orphans, scripts: &Path) {
        cancel(&std::mem::take(&mut other.cancel));
        for (task, o) in std::mem::take(&mut other.by_task) {
            let l = Listed {
                job_id: o.job_id.clone(),
                name: o.name.clone(),
                stage: o.stage.clone(),
                log: o.log.clone(),
                comment: String::new(),
            };
            l.note(scripts);
            if let Some(old) = self.by_task.insert(task, o) {
                cancel(&[old.job_id]);
            }
        }
        for d in std::mem::take(&mut other.dirs) {
            if !self.dirs.contains(&d) {
                self.dirs.push(d);
            }
        }
    }

    /// A job about to be handed to the executor: if a dead run's job ran its task, hand
    /// that job over for adoption when its attempt was started for the fingerprint `now`
    /// (commands and inputs) and its outputs are staged (a job of a step with `stage =
    /// false` may have written half an output in place); else cancel it.
    pub fn offer(&mut self, job: &mut super::super::Job, now: Option<(Hash, Hash)>) {
        if self.by_task.is_empty() {
            return;
        }
        let Some(sj) = job.slurm.as_mut() else { return };
        let Some((task, _)) = sj.comment.rsplit_once('#') else { return };
        let Some(o) = self.by_task.remove(task) else { return };
        let staged = job.outputs.iter().all(|out| out.staged.is_some());
        if staged && now.is_some() && o.expect == now && !job.commands.is_empty() {
            sj.adopt = Some(Box::new(o));
        } else {
            cancel(&[o.job_id]);
        }
    }
}

impl Drop for Orphans {
    /// The build ends: cancel the jobs it did not adopt, remove the staging folders kept
    /// for them (the adopted jobs' outputs are in place by now).
    fn drop(&mut self) {
        let ids: Vec<String> = self.by_task.drain().map(|(_, o)| o.job_id).collect();
        cancel(&ids);
        for d in self.dirs.drain(..) {
            let _ = crate::guard::remove_owned(&d, &d);
        }
    }
}

/// One `scancel` for these jobs (those that ended already make it complain: ignored).
fn cancel(ids: &[String]) {
    if !ids.is_empty() {
        let _ = run(Command::new("scancel").args(ids));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(task: &str, attempt: u32, started_at: f64) -> DeadAttempt {
        DeadAttempt {
            run_id: 1,
            task_id: task.into(),
            attempt,
            reason: None,
            started_at,
            expect: Some(([1; 32], [2; 32])),
        }
    }

    #[test]
    fn a_dead_runs_listed_jobs_pair_with_its_running_attempts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scripts = dir.path().join("slurm");
        let listed = |id: &str, comment: &str| Listed {
            job_id: id.into(),
            name: "flux-1-abcd".into(),
            stage: dir.path().into(),
            log: dir.path().join(format!("{id}.log")),
            comment: comment.into(),
        };
        listed("10", "a[x\ty]#1").note(&scripts);
        listed("11", "b#1").note(&scripts);
        listed("12", "").note(&scripts);
        std::fs::OpenOptions::new()
            .append(true)
            .open(scripts.join(JOBS_FILE))
            .and_then(|mut f| f.write_all(b"13\n"))
            .expect("append");
        let text = std::fs::read_to_string(scripts.join(JOBS_FILE)).expect("read");
        assert_eq!(Listed::parse(text.lines().next().unwrap_or_default()), Some(listed("10", "a[x\ty]#1")));
        let mut o = Orphans::default();
        // b's running attempt is its second: job 11 ran its first, which ended.
        assert!(o.collect(dir.path(), 1, &[attempt("a[x\ty]", 1, 5.0), attempt("b", 2, 6.0)]));
        assert_eq!(o.by_task.keys().collect::<Vec<_>>(), ["a[x\ty]"]);
        assert_eq!(o.by_task["a[x\ty]"].job_id, "10");
        let mut cancel = o.cancel.clone();
        cancel.sort();
        assert_eq!(cancel, ["11", "12", "13"]);
        // Nothing reaches Slurm from this test.
        o.by_task.clear();
        o.cancel.clear();
    }
}
