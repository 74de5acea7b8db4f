#!/usr/bin/env bash
# Stop the daemons tests/slurm/start.sh started (by the pids it kept in
# $FLUX_TEST_SLURM_DIR/pids, each only if it still runs that program). Idempotent.
#   tests/slurm/stop.sh [--purge]    --purge: also delete $FLUX_TEST_SLURM_DIR
set -euo pipefail
DIR="${FLUX_TEST_SLURM_DIR:-/tmp/flux-test-slurm}"
for name in slurmd slurmctld munged; do
  f="$DIR/pids/$name"
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
    kill -TERM "$pid"
    for _ in $(seq 150); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null
    echo "tests/slurm/stop.sh: stopped $name (pid $pid)"
  fi
  rm -f "$f"
done
if [ "${1:-}" = "--purge" ]; then
  grep -qF "# written by flux's tests/slurm/start.sh" /etc/slurm/slurm.conf 2>/dev/null && rm -f /etc/slurm/slurm.conf
  rm -rf "$DIR"
fi
