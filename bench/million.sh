#!/usr/bin/env bash
# Planning at scale: the dry-run time and peak memory of flux from 1,100 to 1,100,000 tasks
# (S10 x D days of the shared workload), written to bench/results/scaling-<date>.md.
#   bash bench/million.sh                 # D = 100 1000 10000 100000
#   bash bench/million.sh 100 1000        # chosen sizes
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
shared=${FLUX_SHARED:-$root/../shared}
(cd "$root" && cargo build --release --quiet)
flux=$root/target/release/flux
days=("$@"); [ ${#days[@]} -gt 0 ] || days=(100 1000 10000 100000)
work=$here/work/scaling; mkdir -p "$work" "$here/results"
out=$here/results/scaling-$(date +%F).md
{
  echo "# flux planning at scale — $(date +%F)"
  echo
  echo "S10 x D of the shared workload; median of 3 runs; GNU time for peak RSS. \`dry\`: \`flux build -n\` from"
  echo "a clean tree; \`no-op\`: a build after a full build, nothing changed (only measured up to 110k, the"
  echo "full build before it takes minutes); \`plan\`: what \`-v\` reports for expanding and inferring the graph."
  echo
  echo "| tasks | dry s | dry RSS MB | plan s | no-op s | no-op RSS MB |"
  echo "|---|---|---|---|---|---|"
} > "$out"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for d in "${days[@]}"; do
  dir=$work/D$d; rm -rf "$dir"
  python3 "$shared/bench/gen.py" -S 10 -D "$d" --tool flux --out "$dir" >/dev/null
  last=$(python3 -c "import datetime;print(datetime.date(2000,1,1)+datetime.timedelta(days=$d-1))")
  range=2000-01-01..$last
  dry=(); rss=(); plan=()
  for _ in 1 2 3; do
    (cd "$dir" && /usr/bin/time -f "%e %M" -o "$work/t" "$flux" build -n -v --date-range "$range" >/dev/null 2>"$work/err")
    read -r e m < "$work/t"; dry+=("$e"); rss+=("$m")
    plan+=("$(grep -o 'plan [0-9]* tasks: [0-9.]*' "$work/err" | awk '{print $4}')")
  done
  noop=-; noop_rss=-
  if [ "$d" -le 10000 ]; then
    (cd "$dir" && "$flux" build -j 2 -q --date-range "$range" >/dev/null)
    sleep 1
    (cd "$dir" && "$flux" build -j 2 -q --date-range "$range" >/dev/null)   # settles the digest cache
    ns=(); nr=()
    for _ in 1 2 3; do
      (cd "$dir" && /usr/bin/time -f "%e %M" -o "$work/t" "$flux" build -j 2 -q --date-range "$range" >/dev/null)
      read -r e m < "$work/t"; ns+=("$e"); nr+=("$m")
    done
    noop=$(printf '%s\n' "${ns[@]}" | median); noop_rss=$(( $(printf '%s\n' "${nr[@]}" | median) / 1024 ))
  fi
  tasks=$((d * 11))
  printf '| %s | %s | %s | %s | %s | %s |\n' "$tasks" "$(printf '%s\n' "${dry[@]}" | median)" \
    "$(( $(printf '%s\n' "${rss[@]}" | median) / 1024 ))" "$(printf '%s\n' "${plan[@]}" | median)" "$noop" "$noop_rss" >> "$out"
  rm -rf "$dir"
done
cat "$out"
