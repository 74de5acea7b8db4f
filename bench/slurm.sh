#!/usr/bin/env bash
# The Slurm executor's costs (docs/performance.md, "Slurm"), on the single-node test
# clusters of tests/slurm/start.sh (as root). 200 trivial tasks (`echo n > out/n.txt`):
#   flux-single   flux, one sbatch job per task (-j 200)
#   flux-array    the same with `array = true`
#   snakemake     Snakemake with snakemake-executor-plugin-slurm, one job per rule
#                 instance (-j 200), polling with squeue
#   (these three on the cluster without accounting, the only one where the plugin's
#   jobs work: its job step runs `srun`, which reads /etc/slurm/slurm.conf, the first
#   cluster's, and not the SLURM_CONF of the second), and
#   flux-acct     flux, one job per task, on the cluster with accounting (polls sacct)
# For each: wall time, flux's own CPU time (user+sys of the flux process, excluding the
# Slurm commands it runs; read from /proc while it runs) and the CPU of the whole
# command tree on this host, and the Slurm commands called (counted by wrappers on PATH
# that note each call and run the real command).
#
#   bench/slurm.sh [tasks]          default 200; FLUX_BIN (default target/release/flux)
#   SNAKEMAKE=/path/to/snakemake    default bench/.venv-slurm/bin/snakemake (made with
#                                   pip install snakemake==9.27.1 snakemake-executor-plugin-slurm)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
n=${1:-200}
flux=$(realpath "${FLUX_BIN:-$root/target/release/flux}")
snakemake=${SNAKEMAKE:-$here/.venv-slurm/bin/snakemake}
work=$here/work/slurm
rm -rf "$work"; mkdir -p "$work/shims"

bash "$root/tests/slurm/start.sh" >/dev/null
dbd_conf=$(bash "$root/tests/slurm/start.sh" --with-dbd | tail -n 1)
plain_conf=/etc/slurm/slurm.conf

# Wrappers that count the Slurm commands.
for c in sbatch squeue sacct scontrol scancel sacctmgr sinfo; do
  real=$(command -v "$c")
  printf '#!/bin/sh\nprintf "%%s\\n" "%s" >> "$BENCH_CALLS"\nexec %s "$@"\n' "$c" "$real" >"$work/shims/$c"
  chmod +x "$work/shims/$c"
done

# Run a command in a folder with the shims; print: wall_s own_cpu_s tree_cpu_s calls...
measure() { # measure NAME CONF DIR CMD...
  local name=$1 conf=$2 dir=$3; shift 3
  local calls="$work/$name.calls"; : >"$calls"
  (cd "$dir" && SLURM_CONF="$conf" BENCH_CALLS="$calls" PATH="$work/shims:$PATH" python3 - "$@" <<'PY'
import os, resource, subprocess, sys, time
t0 = time.time()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=open("run.err", "w"))
hz = os.sysconf("SC_CLK_TCK")
own = 0.0
while p.poll() is None:
    try:
        f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
        own = (int(f[11]) + int(f[12])) / hz  # utime + stime of the process itself
    except (OSError, IndexError):
        pass
    time.sleep(0.05)
wall = time.time() - t0
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.1f} {own:.2f} {r.ru_utime + r.ru_stime:.2f} {p.returncode}")
PY
  ) | { read -r wall own tree rc
        printf '%-12s wall %7ss  own CPU %6ss  tree CPU %7ss  exit %s  calls:' "$name" "$wall" "$own" "$tree" "$rc"
        sort "$calls" | uniq -c | awk '{printf " %s=%s", $2, $1}'; echo; }
}

params=$(seq 1 "$n" | sed 's/.*/"&"/' | paste -sd, -)
fluxfile() { # fluxfile DIR ARRAY
  mkdir -p "$1"
  cat >"$1/Fluxfile" <<EOF
[flux]
executor = "slurm"

[step.t]
params = { n = [$params] }
outputs = ["out/{{ n }}.txt"]
run = "echo {{ n }} > {{ outputs[0] }}"
array = $2
EOF
}
fluxfile "$work/flux-single" false
fluxfile "$work/flux-array" true
fluxfile "$work/flux-acct" false
mkdir -p "$work/snakemake"
cat >"$work/snakemake/Snakefile" <<EOF
rule all:
    input: expand("out/{n}.txt", n=range(1, $n + 1))

rule t:
    output: "out/{n}.txt"
    shell: "echo {wildcards.n} > {output}"
EOF

echo "$n tasks; flux $("$flux" --version 2>/dev/null | head -1); Slurm $(sinfo --version)"
measure flux-single "$plain_conf" "$work/flux-single" "$flux" build -j "$n" -q
measure flux-array "$plain_conf" "$work/flux-array" "$flux" build -j "$n" -q
measure flux-acct "$dbd_conf" "$work/flux-acct" "$flux" build -j "$n" -q
if [ -x "$snakemake" ]; then
  measure snakemake "$plain_conf" "$work/snakemake" "$snakemake" --executor slurm -j "$n" --quiet all \
    --default-resources slurm_partition=debug --slurm-no-account --slurm-status-command squeue \
    --slurm-init-seconds-before-status-checks 1
else
  echo "snakemake: $snakemake not found (see the header)"
fi
for d in flux-single flux-array flux-acct snakemake; do
  got=$(ls "$work/$d/out" 2>/dev/null | wc -l)
  [ "$got" = "$n" ] || echo "$d: $got of $n outputs (see $work/$d/run.err)"
done
