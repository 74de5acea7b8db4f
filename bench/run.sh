#!/usr/bin/env bash
# flux beside make, ninja, snakemake, luigi and doit on the shared generated workload.
#   bash bench/run.sh                       # 1.1k (all tools), 11k and 110k (make, ninja, flux)
#   bash bench/run.sh --sizes 10x100        # any option of ../shared/bench/run.py
# Builds flux in release mode, puts it first on PATH and runs ../shared/bench/run.sh with
# its scratch, peers' virtualenv and results under bench/ (results in bench/results/).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
shared=${FLUX_SHARED:-$root/../shared}
[ -f "$shared/bench/run.sh" ] || { echo "bench: $shared/bench/run.sh not found (shared/ must sit beside the repository)" >&2; exit 2; }
(cd "$root" && cargo build --release --quiet)
export PATH=$root/target/release:$PATH
export BENCH_STATE_DIR=$here
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--sizes 10x100 10x1000:make,ninja,flux 10x10000:make,ninja,flux --tag flux)
fi
exec bash "$shared/bench/run.sh" "${args[@]}"
