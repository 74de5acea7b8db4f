#!/usr/bin/env bash
# Performance regression guard for CI (about a minute on 2 cores): on the shared workload at
# 11,000 tasks, flux's no-op build (the first one after a full build, and later ones) and
# dry run must stay within 2x of ninja's, measured
# side by side in this run (a ratio, never an absolute time). Exit 1 past the limit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
shared=${FLUX_SHARED:-$root/../shared}
limit=${FLUX_GUARD_LIMIT:-2.0}
command -v ninja >/dev/null || { echo "guard: ninja is missing (.ci/run installs ninja-build)" >&2; exit 2; }
(cd "$root" && cargo build --release --quiet)
flux=$root/target/release/flux
work=$here/work/guard; rm -rf "$work"; mkdir -p "$work"
python3 "$shared/bench/gen.py" -S 10 -D 1000 --tool flux --out "$work/flux" >/dev/null
python3 "$shared/bench/gen.py" -S 10 -D 1000 --tool ninja --out "$work/ninja" >/dev/null
range=2000-01-01..2002-09-26
export NO_COLOR=1
# Time one command in µs; a command that fails fails the guard (a flux that errors out
# at once must not pass for a fast one).
err=$work/stderr
t() {
  local s e
  s=$(date +%s%N)
  if ! "$@" >/dev/null 2>"$err"; then
    echo "guard: \`$*\` failed in $(pwd):" >&2
    tail -n 20 "$err" >&2
    exit 1
  fi
  e=$(date +%s%N)
  echo $(( (e - s) / 1000 ))
}
# Append the timing of one command to the array named $1 (outside a command substitution
# the failure of `t` stops the script).
time_into() {
  local into=$1 dir=$2 us
  shift 2
  us=$(cd "$dir" && t "$@") || exit 1
  eval "$into+=(\"\$us\")"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# dry runs from a clean tree
fd=(); nd=()
for _ in 1 2 3 4 5; do
  time_into fd "$work/flux" "$flux" build -n --date-range "$range"
  time_into nd "$work/ninja" ninja -n
done
# full builds, then the first no-op right after each (flux's must trust what its build
# recorded, not re-read the outputs), then more no-ops
(cd "$work/flux" && "$flux" build -j 2 -q --date-range "$range" >/dev/null)
f1=$(cd "$work/flux" && t "$flux" build -j 2 --date-range "$range")
(cd "$work/ninja" && ninja -j 2 >/dev/null)
n1=$(cd "$work/ninja" && t ninja -j 2)
fn=(); nn=()
for _ in 1 2 3 4 5; do
  time_into fn "$work/flux" "$flux" build -j 2 --date-range "$range"
  time_into nn "$work/ninja" ninja -j 2
done
fail=0
for pair in "dry-run:${fd[*]}:${nd[*]}" "no-op:${fn[*]}:${nn[*]}" "1st-no-op:$f1:$n1"; do
  IFS=: read -r what f n <<< "$pair"
  fm=$(tr ' ' '\n' <<< "$f" | median); nm=$(tr ' ' '\n' <<< "$n" | median)
  ratio=$(awk -v a="$fm" -v b="$nm" 'BEGIN {printf "%.2f", a / b}')
  verdict=ok; awk -v r="$ratio" -v l="$limit" 'BEGIN {exit !(r > l)}' && { verdict="TOO SLOW (limit ${limit}x)"; fail=1; }
  printf 'guard %-8s flux %6.3fs  ninja %6.3fs  ratio %sx  %s\n' "$what" "$(awk -v a="$fm" 'BEGIN{print a/1e6}')" "$(awk -v a="$nm" 'BEGIN{print a/1e6}')" "$ratio" "$verdict"
done
rm -rf "$work"
exit $fail
