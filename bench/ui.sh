#!/usr/bin/env bash
# flux ui at 100,000 tasks (SPEC §11): a state DB of 10 steps x 10,000 days with mixed
# statuses, 3 attempts for the failed ones (written by SQL after one real build made the
# schema), served by `flux ui`; prints the size and the time (median of 5, curl's
# time_total) of the JSON twins, then the grid's first paint, a scroll's redraw, the
# Gantt's first paint and the UI's memory in headless Chromium (bench/ui_browser.py).
#   bash bench/ui.sh                      # release build
#   FLUX_BIN=target/debug/flux bash bench/ui.sh
#   UI_DAYS=100000 bash bench/ui.sh       # 1,000,000 tasks
#   UI_DAYS=1000 UI_GUARD=1 FLUX_BIN=target/debug/flux bash bench/ui.sh   # CI's guard
set -euo pipefail
days=${UI_DAYS:-10000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
if [ -z "${FLUX_BIN:-}" ]; then
  (cd "$root" && cargo build --release --quiet)
  FLUX_BIN=$root/target/release/flux
fi
flux=$(cd "$root" && realpath "$FLUX_BIN")
work=$here/work/ui; rm -rf "$work"; mkdir -p "$work"; cd "$work"
{
  for i in 0 1 2 3 4 5 6 7 8 9; do
    echo "[step.s$i]"
    echo "description = \"step $i of the UI benchmark\""
    echo 'params = { date = "date" }'
    [ "$i" -gt 0 ] && echo "inputs = [\"out/s$((i - 1))/{{ date }}.txt\"]"
    echo "outputs = [\"out/s$i/{{ date }}.txt\"]"
    echo 'run = "echo {{ date }} > {{ outputs[0] }}"'
    echo
  done
} > Fluxfile
"$flux" build -q s0 --date 2000-01-01 >/dev/null
UI_DAYS=$days python3 - <<'PY'
import datetime, os, json, random, sqlite3
random.seed(7)
db = sqlite3.connect(".flux/state.db")
t0 = 1_700_000_000.0
db.execute("INSERT INTO runs (id, started_at, ended_at, status, command, pid, host) VALUES (2, ?, ?, 'failed', 'flux build --date-range 1997-01-01..2024-05-18', 1, 'bench')", (t0, t0 + 3600))
statuses = ["success"] * 90 + ["skipped"] * 4 + ["failed"] * 2 + ["upstream_failed"] * 2 + ["interrupted", "retrying"]
day0 = datetime.date(1997, 1, 1)
tasks, attempts = [], []
aid = 100
for d in range(int(os.environ["UI_DAYS"])):
    date = (day0 + datetime.timedelta(days=d)).isoformat()
    for s in range(10):
        tid = f"s{s}[{date}]"
        st = random.choice(statuses)
        start = t0 + (d * 10 + s) * 0.036
        # A failed task failed 3 attempts (2 retries).
        for n, ast in enumerate(["retrying", "retrying", "failed"] if st == "failed" else [st], 1):
            aid += 1
            attempts.append((aid, 2, tid, f"s{s}", json.dumps({"date": date}), n, ast, "missing-output", start, start + random.uniform(0.01, 2.0), 0 if ast == "success" else 1))
            start += 2.0
        tasks.append((tid, st, start + 1))
db.executemany("INSERT INTO attempts (id, run_id, task_id, step, params_json, attempt, status, reason, started_at, ended_at, exit_code) VALUES (?,?,?,?,?,?,?,?,?,?,?)", attempts)
db.executemany("INSERT OR REPLACE INTO tasks (task_id, last_status, success_at) VALUES (?,?,?)", tasks)
db.commit()
print(f"{len(tasks)} tasks, {len(attempts)} attempts")
PY
"$flux" ui --bind 127.0.0.1:0 > ui.out 2> ui.err &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening ui.out 2>/dev/null && break; sleep 0.1; done
url=$(sed 's/.*listening on //' ui.out)
rss() { awk '/VmRSS|VmHWM/ {printf "%s %.0f MB  ", $1, $2 / 1024}' /proc/$pid/status; echo; }
echo "flux ui after start: $(rss)"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| request | bytes | ms (median of 5) |"
echo "| --- | ---: | ---: |"
for path in "api/grid" "api/grid?limit=2000" "api/runs/2" "api/steps" "grid" "api/tasks/s5%5B2010-06-01%5D" "api/durations/s3"; do
  times=(); size=0
  for _ in 1 2 3 4 5; do
    read -r s b < <(curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "$url$path")
    times+=("$(awk -v s="$s" 'BEGIN {printf "%.1f", s * 1000}')"); size=$b
  done
  echo "| /$path | $size | $(printf '%s\n' "${times[@]}" | median) |"
done
echo "flux ui after the requests: $(rss)"
echo
echo "| in headless Chromium | figure | |"
echo "| --- | --- | --- |"
UI_WHOLE_GRID=${UI_WHOLE_GRID-$days} python3 "$here/ui_browser.py" "$url" "$pid" ${UI_GUARD:+--guard}
