//! A property test of incremental builds: for a random DAG of steps over a few dates and a
//! random sequence of edits, every incremental build (a) leaves exactly the bytes a build
//! from scratch would, and (b) runs no task that the edit could not have affected, while
//! running every task whose own output was deleted, whose command changed or whose source
//! was edited.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::test::*;

const DATES: [&str; 4] = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"];

#[derive(Debug, Clone)]
struct StepSpec {
    /// Earlier steps read for the same date.
    deps: Vec<usize>,
    /// A step (earlier or this one) read for the day before.
    yesterday: Option<usize>,
    /// Reads its own source file.
    source: bool,
    /// The literal in its command (bumped by a command edit).
    version: u32,
}

#[derive(Debug, Clone, Copy)]
enum Edit {
    Source { step: usize, date: usize },
    DeleteOutput { step: usize, date: usize },
    Command { step: usize },
}

#[derive(Debug, Clone)]
struct Case {
    steps: Vec<StepSpec>,
    dates: usize,
    /// Each edit, and whether the files settle (age past the racy margin) before it, so
    /// that flux's quick stat-based check is exercised as well as the digest path.
    edits: Vec<(Edit, bool)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        3usize..=7,
        2usize..=4,
        proptest::collection::vec(any::<u64>(), 7),
        proptest::collection::vec((0u8..3, any::<u16>(), any::<u16>()), 3..=6),
    )
        .prop_map(|(n, dates, raw, edits)| {
            let steps: Vec<StepSpec> = (0..n)
                .map(|i| {
                    let r = raw[i];
                    let mut deps = Vec::new();
                    if i > 0 {
                        // k distinct earlier steps, consecutive from a random one.
                        let k = (1 + (r % 3) as usize).min(i);
                        let first = ((r >> 8) % i as u64) as usize;
                        deps = (0..k).map(|m| (first + m) % i).collect();
                        deps.sort_unstable();
                    }
                    let source = i == 0 || (r >> 40) & 1 == 1;
                    let yesterday = if (r >> 44) % 3 == 0 { Some(((r >> 48) % (i as u64 + 1)) as usize) } else { None };
                    StepSpec { deps, yesterday, source, version: 0 }
                })
                .collect();
            let edits = edits
                .into_iter()
                .map(|(kind, a, b)| {
                    let step = a as usize % n;
                    let date = (b >> 1) as usize % dates;
                    let edit = match kind {
                        0 => Edit::Source { step, date },
                        1 => Edit::DeleteOutput { step, date },
                        _ => Edit::Command { step },
                    };
                    (edit, b & 1 == 1)
                })
                .collect();
            Case { steps, dates, edits }
        })
}

fn fluxfile(steps: &[StepSpec]) -> String {
    let mut s = String::from("[flux]\nstart = \"2024-01-01\"\n");
    for (i, st) in steps.iter().enumerate() {
        let mut inputs = Vec::new();
        if st.source {
            inputs.push(format!("\"src/s{i}/{{{{ date }}}}.txt\""));
        }
        for d in &st.deps {
            inputs.push(format!("\"out/s{d}/{{{{ date }}}}.txt\""));
        }
        if let Some(y) = st.yesterday {
            inputs.push(format!("\"out/s{y}/{{{{ date | add_days(-1) }}}}.txt\""));
        }
        s.push_str(&format!(
            "\n[step.s{i}]\nparams = {{ date = \"date\" }}\ninputs = [{}]\noutputs = [\"out/s{i}/{{{{ date }}}}.txt\"]\nrun = \"(cat {{{{ inputs }}}}; echo s{i} {{{{ date }}}} v{}) > {{{{ outputs[0] }}}}\"\n",
            inputs.join(", "),
            st.version
        ));
    }
    s
}

fn build_args(steps: usize, dates: usize) -> Vec<String> {
    let mut a: Vec<String> = vec!["build".into()];
    a.extend((0..steps).map(|i| format!("s{i}")));
    a.extend(["--date-range".into(), format!("{}..{}", DATES[0], DATES[dates - 1]), "--output".into(), "json".into()]);
    a
}

fn id(step: usize, date: usize) -> String {
    format!("s{step}[{}]", DATES[date])
}

/// Tasks that depend on each task (same date deps, and yesterday's for the next date).
fn dependents(steps: &[StepSpec], dates: usize) -> BTreeMap<(usize, usize), Vec<(usize, usize)>> {
    let mut out: BTreeMap<(usize, usize), Vec<(usize, usize)>> = BTreeMap::new();
    for (i, st) in steps.iter().enumerate() {
        for d in 0..dates {
            for &j in &st.deps {
                out.entry((j, d)).or_default().push((i, d));
            }
            if let Some(y) = st.yesterday
                && d > 0
            {
                out.entry((y, d - 1)).or_default().push((i, d));
            }
        }
    }
    out
}

fn closure(
    direct: &BTreeSet<(usize, usize)>,
    deps: &BTreeMap<(usize, usize), Vec<(usize, usize)>>,
) -> BTreeSet<(usize, usize)> {
    let mut seen = direct.clone();
    let mut stack: Vec<(usize, usize)> = direct.iter().copied().collect();
    while let Some(t) = stack.pop() {
        for &d in deps.get(&t).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(d) {
                stack.push(d);
            }
        }
    }
    seen
}

/// Build the same Fluxfile and sources from scratch in a fresh folder; its `out/` tree.
fn from_scratch(t: &Test, args: &[String]) -> BTreeMap<String, Vec<u8>> {
    let mut fresh = Test::new().fluxfile(&t.read("Fluxfile"));
    for (path, bytes) in t.tree("src") {
        fresh = fresh.file(&path, bytes);
    }
    let o = fresh.run_args(args);
    o.assert_status(0);
    fresh.tree("out")
}

fn check_case(c: &Case) {
    let mut steps = c.steps.clone();
    let n = steps.len();
    let dates = c.dates;
    let args = build_args(n, dates);
    let deps = dependents(&steps, dates);
    let all: BTreeSet<String> = (0..n).flat_map(|i| (0..dates).map(move |d| id(i, d))).collect();

    let mut t = Test::new().fluxfile(&fluxfile(&steps));
    let mut generation = 0u32;
    for (i, st) in steps.iter().enumerate() {
        if st.source {
            for date in DATES.iter().take(dates) {
                t = t.file(&format!("src/s{i}/{date}.txt"), format!("s{i} {date} gen0\n"));
            }
        }
    }
    let o = t.run_args(&args);
    o.assert_status(0);
    assert_eq!(o.ran().into_iter().collect::<BTreeSet<_>>(), all, "the first build runs every task\n{}", o.describe());

    for (k, (edit, settle)) in c.edits.iter().enumerate() {
        if *settle {
            t.age_files();
        }
        let mut direct: BTreeSet<(usize, usize)> = BTreeSet::new();
        match *edit {
            Edit::Source { step, date } => {
                // The nearest step with a source (step 0 always has one).
                let s = (0..=step).rev().find(|&s| steps[s].source).unwrap_or(0);
                generation += 1;
                t.write(&format!("src/s{s}/{}.txt", DATES[date]), format!("s{s} {} gen{generation}\n", DATES[date]));
                direct.insert((s, date));
            }
            Edit::DeleteOutput { step, date } => {
                t.remove(&format!("out/s{step}/{}.txt", DATES[date]));
                direct.insert((step, date));
            }
            Edit::Command { step } => {
                steps[step].version += 1;
                t.write("Fluxfile", fluxfile(&steps));
                direct.extend((0..dates).map(|d| (step, d)));
            }
        }
        let affected: BTreeSet<String> = closure(&direct, &deps).into_iter().map(|(s, d)| id(s, d)).collect();
        let must: BTreeSet<String> = direct.iter().map(|&(s, d)| id(s, d)).collect();

        let o = t.run_args(&args);
        o.assert_status(0);
        let ran: BTreeSet<String> = o.ran().into_iter().collect();
        let ctx = format!("edit {k} ({edit:?}) of {:?}\nFluxfile:\n{}\n{}", c.edits, t.read("Fluxfile"), o.describe());
        assert!(
            ran.is_subset(&affected),
            "ran tasks the edit cannot have affected: {:?}\n{ctx}",
            ran.difference(&affected).collect::<Vec<_>>()
        );
        assert!(
            must.is_subset(&ran),
            "did not run tasks the edit changed directly: {:?}\n{ctx}",
            must.difference(&ran).collect::<Vec<_>>()
        );
        assert_eq!(o.summary("ran") + o.summary("skipped"), all.len() as u64, "{ctx}");

        let expected = from_scratch(&t, &args);
        let got = t.tree("out");
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "the same outputs exist\n{ctx}"
        );
        for (path, bytes) in &expected {
            assert_eq!(
                String::from_utf8_lossy(&got[path]),
                String::from_utf8_lossy(bytes),
                "{path} differs from a build from scratch\n{ctx}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_iters: 16, ..proptest_config(12) })]

    #[test]
    fn incremental_builds_match_builds_from_scratch(c in case()) {
        check_case(&c);
    }
}

#[test]
fn a_fixed_diamond_with_a_yesterday_chain() {
    // s0 (source) -> s1, s2 -> s3 (reads s1, s2 and its own yesterday): a deterministic case.
    let c = Case {
        steps: vec![
            StepSpec { deps: vec![], yesterday: None, source: true, version: 0 },
            StepSpec { deps: vec![0], yesterday: None, source: false, version: 0 },
            StepSpec { deps: vec![0], yesterday: Some(0), source: true, version: 0 },
            StepSpec { deps: vec![1, 2], yesterday: Some(3), source: false, version: 0 },
        ],
        dates: 3,
        edits: vec![
            (Edit::Source { step: 0, date: 1 }, false),
            (Edit::DeleteOutput { step: 1, date: 2 }, true),
            (Edit::Command { step: 2 }, true),
            (Edit::DeleteOutput { step: 3, date: 0 }, false),
            (Edit::Source { step: 2, date: 0 }, true),
        ],
    };
    check_case(&c);
}
