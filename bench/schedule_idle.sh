#!/usr/bin/env bash
# flux schedule's idle tick (SPEC §10) on a 10,000-task project: 10 chained @daily steps
# x 1,000 dates, all built and all scheduled through their last interval, so every tick
# of the loop has nothing to do. A scheduler runs `--tick 50ms` for TICKS ticks (default
# 200); the script samples its VmRSS every second (/proc/<pid>/status) and reads its CPU
# (utime+stime, /proc/<pid>/stat) over the idle ticks, then compares the CPU of one idle
# tick with the CPU of a no-op `flux build` of the same 10,000 tasks (median of 3).
#   bash bench/schedule_idle.sh                       # release build
#   FLUX_BIN=target/debug/flux TICKS=400 bash bench/schedule_idle.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
if [ -z "${FLUX_BIN:-}" ]; then
  (cd "$root" && cargo build --release --quiet)
  FLUX_BIN=$root/target/release/flux
fi
flux=$(cd "$root" && realpath "$FLUX_BIN")
ticks=${TICKS:-200}
work=$here/work/schedule_idle; rm -rf "$work"; mkdir -p "$work"; cd "$work"
# 1,000 days from 2000-01-01: 2000-01-01 .. 2002-09-26; the last ends at 2002-09-27 00:00 UTC.
range=2000-01-01..2002-09-26
now=2002-09-27T00:30:00Z
{
  for i in 0 1 2 3 4 5 6 7 8 9; do
    echo "[step.s$i]"
    echo 'params = { date = "date" }'
    echo 'start = "2000-01-01"'
    echo 'end = "2002-09-26"'
    [ "$i" -gt 0 ] && echo "inputs = [\"out/s$((i - 1))/{{ date }}.txt\"]"
    echo "outputs = [\"out/s$i/{{ date }}.txt\"]"
    echo 'run = "echo {{ date }} > {{ outputs[0] }}"'
    echo 'schedule = "@daily"'
    echo
  done
} > Fluxfile
"$flux" build -q -j 4 --date-range "$range" >/dev/null 2>&1
# CPU seconds (user + system) of a command, from the rusage of its process.
cpu_of() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{r.ru_utime + r.ru_stime:.4f}")
PY
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
noop=$(for _ in 1 2 3; do cpu_of "$flux" build -q --date-range "$range"; done | median)
# The first tick makes every interval due and finds it built; the loop then idles.
"$flux" schedule --once --now "$now" >/dev/null 2>&1
"$flux" schedule --tick 50ms --now "$now" > sched.out 2> sched.err &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
hz=$(getconf CLK_TCK)
cpu() { awk -v hz="$hz" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$pid/stat"; }
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$pid/status"; }
sleep 2 # start-up and the first tick
c0=$(cpu); t0=$(date +%s.%N)
samples=()
secs=$(awk -v n="$ticks" 'BEGIN { printf "%d", (n * 0.05) + 0.999 }')
for _ in $(seq "$secs"); do samples+=("$(rss)"); sleep 1; done
samples+=("$(rss)")
c1=$(cpu); t1=$(date +%s.%N)
kill -TERM $pid; wait $pid || true
trap - EXIT
if grep -q -v -e '^flux schedule' sched.err; then echo "unexpected scheduler output:"; cat sched.err; fi
awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v noop="$noop" -v tick=0.05 \
  -v rss="${samples[*]}" 'BEGIN {
    n = split(rss, r, " ")
    min = r[1]; max = r[1]
    for (i = 1; i <= n; i++) { if (r[i] < min) min = r[i]; if (r[i] > max) max = r[i] }
    elapsed = t1 - t0; ticks = elapsed / tick; cpu = c1 - c0
    printf "| measure | value |\n| --- | ---: |\n"
    printf "| idle loop observed | %.1f s, about %d ticks of 50 ms |\n", elapsed, ticks
    printf "| VmRSS first / last sample | %d / %d KiB |\n", r[1], r[n]
    printf "| VmRSS min / max over %d samples | %d / %d KiB |\n", n, min, max
    printf "| scheduler CPU over the idle loop | %.3f s |\n", cpu
    printf "| CPU per idle tick | %.3f ms |\n", cpu / ticks * 1000
    printf "| CPU of a no-op `flux build` (10,000 tasks, median of 3) | %.1f ms |\n", noop * 1000
    printf "| idle tick / no-op build | %.4f |\n", (cpu / ticks) / noop
  }'
