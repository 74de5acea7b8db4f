//! Shell completion of step names and task ids, and the help topics shipped in the binary.
//!
//! `flux completions SHELL` prints clap_complete's script for the flags and subcommands,
//! followed by a little glue per shell that asks `flux __complete -- WORD` for the targets
//! of the Fluxfile in reach. That hidden subcommand lists step names, and once the word
//! holds a `[`, the task ids of the state DB's records and of the steps' domains. It
//! never fails loudly: without a Fluxfile it prints nothing.

use crate::fluxfile::Fluxfile;
use crate::graph;
use crate::param::ParamValue;

/// Task ids listed per step from its domain, at most.
const DOMAIN_IDS: usize = 200;
/// Candidates printed, at most.
const MAX_CANDIDATES: usize = 2000;

/// Subcommands whose positional arguments are targets (and `logs`, a task id).
const TARGET_SUBCOMMANDS: &str = "build status graph clear logs mark";

/// The targets that complete `word`: step names; with a `[` in `word`, task ids from
/// `recorded` (the state DB's task ids) and from the steps' domains. Sorted, unique.
pub fn candidates<'a>(ff: &Fluxfile, recorded: impl Iterator<Item = &'a str>, word: &str) -> Vec<String> {
    let mut out: Vec<String> = ff.steps.iter().map(|s| s.name.clone()).filter(|n| n.starts_with(word)).collect();
    if let Some(open) = word.find('[') {
        let stem = &word[..open];
        let steps: Vec<usize> = (0..ff.steps.len()).filter(|&i| ff.steps[i].name == stem).collect();
        out.extend(
            recorded
                .filter(|id| id.starts_with(word) && id.find('[').is_some_and(|o| &id[..o] == stem))
                .map(String::from),
        );
        for si in steps {
            out.extend(domain_ids(ff, si).into_iter().filter(|id| id.starts_with(word)));
        }
    }
    out.sort();
    out.dedup();
    out.truncate(MAX_CANDIDATES);
    out
}

/// Task ids of a step whose every param has a domain of its own (a list, an int with
/// both bounds, a time param with `start` and `end`), up to [`DOMAIN_IDS`].
fn domain_ids(ff: &Fluxfile, si: usize) -> Vec<String> {
    let step = &ff.steps[si];
    let mut per_param: Vec<Vec<ParamValue>> = Vec::new();
    for (pi, (_, kind)) in step.params.iter().enumerate() {
        let vals = if Some(pi) == step.time_param {
            match (step.start, step.end) {
                (Some(a), Some(b)) if kind.count_between(a, b) <= DOMAIN_IDS as u64 => kind.values_between(a, b),
                // A long domain: its latest values are the likely ones.
                (Some(a), Some(b)) => {
                    let from = b.checked_add(1 - DOMAIN_IDS as i64).unwrap_or(a).max(a);
                    kind.values_between(from, b)
                }
                _ => return Vec::new(),
            }
        } else {
            match kind.domain() {
                Some(mut d) => {
                    d.truncate(DOMAIN_IDS);
                    d
                }
                None => return Vec::new(),
            }
        };
        per_param.push(vals);
    }
    let mut combos: Vec<Vec<ParamValue>> = vec![Vec::new()];
    for vals in per_param {
        let mut next = Vec::new();
        'outer: for c in &combos {
            for v in &vals {
                if next.len() >= DOMAIN_IDS {
                    break 'outer;
                }
                let mut c = c.clone();
                c.push(*v);
                next.push(c);
            }
        }
        combos = next;
    }
    if step.params.is_empty() {
        return Vec::new();
    }
    combos.iter().map(|vals| graph::task_id(step, vals)).collect()
}

/// clap_complete's script for `shell` (`generated`) with the glue that completes the
/// positional arguments of the target subcommands through `flux __complete`: appended for
/// bash and fish; for zsh, defined before the script's last lines (which run the
/// completion when the file is autoloaded) and named as the target arguments' action in
/// place of `_default`. Other shells get the script as it is.
pub fn script(shell: clap_complete::Shell, generated: &str) -> String {
    use clap_complete::Shell;
    let glue = |text: &str| {
        text.replace("@SUBCOMMANDS@", TARGET_SUBCOMMANDS)
            .replace("@SUBCOMMANDS_BAR@", &TARGET_SUBCOMMANDS.replace(' ', "|"))
    };
    match shell {
        Shell::Bash => format!("{generated}{}", glue(BASH)),
        Shell::Fish => format!("{generated}{}", glue(FISH)),
        Shell::Zsh => {
            let mut out = String::with_capacity(generated.len() + ZSH.len());
            let mut placed = false;
            for l in generated.lines() {
                if !placed && l.starts_with("if [ \"$funcstack[1]\" = \"_flux\" ]") {
                    out.push_str(ZSH.trim_start());
                    out.push('\n');
                    placed = true;
                }
                let target_arg = l.starts_with("'*::targets -- ") || l.starts_with("':task -- ");
                match l.strip_suffix(":_default' \\") {
                    Some(head) if target_arg => {
                        out.push_str(head);
                        out.push_str(":_flux_targets' \\");
                    }
                    _ => out.push_str(l),
                }
                out.push('\n');
            }
            if !placed {
                out.push_str(ZSH);
            }
            out
        }
        _ => generated.to_string(),
    }
}

const BASH: &str = r#"
# Step names and task ids: `flux __complete` reads the Fluxfile in reach.
_flux_targets() {
    _flux "$@"
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" sub="" i
    local -a file=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -f|--file) file=(--file "${COMP_WORDS[i+1]}"); ((i++)) ;;
            -*) ;;
            *) [[ -z "$sub" ]] && sub="${COMP_WORDS[i]}" ;;
        esac
    done
    case "$sub" in
        @SUBCOMMANDS_BAR@) ;;
        *) return 0 ;;
    esac
    case "$prev" in
        -*) [[ "$prev" == -n || "$prev" == --dry-run || "$prev" == --force || "$prev" == --only || "$prev" == --fail-fast || "$prev" == --tasks || "$prev" == --follow || "$prev" == --delete-outputs || "$prev" == -v || "$prev" == -q ]] || return 0 ;;
    esac
    [[ "$cur" == -* ]] && return 0
    local IFS=$'\n'
    COMPREPLY+=($(compgen -W "$("${COMP_WORDS[0]}" "${file[@]}" __complete -- "$cur" 2>/dev/null)" -- "$cur"))
}
complete -F _flux_targets -o bashdefault -o default flux
"#;

const ZSH: &str = r#"
# Step names and task ids: `flux __complete` reads the Fluxfile in reach.
(( $+functions[_flux_targets] )) ||
_flux_targets() {
    local -a line file targets
    local i
    line=(${(z)BUFFER})
    for (( i = 1; i < ${#line}; i++ )); do
        if [[ ${line[i]} == (-f|--file) ]]; then
            file=(--file ${(Q)line[i+1]})
        fi
    done
    targets=(${(f)"$(${line[1]:-flux} $file __complete -- ${(Q)PREFIX} 2>/dev/null)"})
    compadd -a targets
    _files
}
"#;

const FISH: &str = r#"
# Step names and task ids: `flux __complete` reads the Fluxfile in reach.
function __fish_flux_targets
    set -l tokens (commandline -opc)
    set -l file
    set -l n (count $tokens)
    for i in (seq $n)
        if contains -- $tokens[$i] -f --file; and test $i -lt $n
            set file --file $tokens[(math $i + 1)]
        end
    end
    $tokens[1] $file __complete -- (commandline -ct) 2>/dev/null
end
complete -c flux -n "__fish_seen_subcommand_from @SUBCOMMANDS@" -a "(__fish_flux_targets)"
"#;

/// Help topics: `flux help TOPIC` prints the text, shipped in the binary.
pub const TOPICS: &[(&str, &str)] = &[
    ("concepts", "tasks, planning, staleness, staging and task states"),
    ("fluxfile", "the Fluxfile reference: tables, step keys, params, templates"),
    ("templates", "templates: context, filters, quoting, output inversion"),
    ("cli", "every subcommand and flag, exit codes, environment"),
    ("stores", "remote targets: S3, GCS, Azure, HDFS"),
    ("operations", "schedules, hooks, concurrency, recovery"),
    ("scheduling", "flux schedule: ticks, catch-up, time zones, SLAs, running it as a service"),
    ("ui", "flux ui: the pages, the JSON API, running it behind a proxy"),
    ("from-make", "a C build ported from a Makefile"),
    ("from-luigi", "Luigi's word count ported"),
    ("from-airflow", "an hourly Airflow DAG with a sensor ported"),
];

/// The text of a help topic.
pub fn topic(name: &str) -> Option<&'static str> {
    Some(match name {
        "concepts" => include_str!("../docs/concepts.md"),
        "fluxfile" => include_str!("../docs/fluxfile.md"),
        "templates" => section(include_str!("../docs/fluxfile.md"), "## Templates"),
        "cli" => include_str!("../docs/cli.md"),
        "stores" => include_str!("../docs/stores.md"),
        "operations" => include_str!("../docs/operations.md"),
        "scheduling" => include_str!("../docs/scheduling.md"),
        "ui" => include_str!("../docs/ui.md"),
        "from-make" => include_str!("../docs/from-make.md"),
        "from-luigi" => include_str!("../docs/from-luigi.md"),
        "from-airflow" => include_str!("../docs/from-airflow.md"),
        _ => return None,
    })
}

/// The part of a markdown text from the heading line `heading` to the next heading of
/// the same level (outside code blocks); the whole text if there is no such heading.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let Some(start) = text.find(&format!("\n{heading}\n")).map(|i| i + 1) else {
        return text;
    };
    let level = heading.split(' ').next().unwrap_or("##");
    let mut in_code = false;
    let mut at = start;
    for (n, line) in text[start..].split_inclusive('\n').enumerate() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if n > 0 && !in_code && line.starts_with(level) && line[level.len()..].starts_with(' ') {
            return &text[start..at];
        }
        at += line.len();
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_end_at_the_next_heading_of_their_level() {
        let md = "# T\n\n## A\na\n```\n## not a heading\n```\n### sub\n## B\nb\n";
        assert_eq!(section(md, "## A"), "## A\na\n```\n## not a heading\n```\n### sub\n");
        assert_eq!(section(md, "## B"), "## B\nb\n");
        assert_eq!(section(md, "## C"), md);
        assert!(topic("templates").is_some_and(|t| t.starts_with("## Templates")));
        for (name, _) in TOPICS {
            assert!(topic(name).is_some(), "{name}");
        }
    }
}
