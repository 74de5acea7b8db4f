#!/usr/bin/env bash
# Stop the daemons tests/slurm/start.sh started (by the pids it kept in
# $FLUX_TEST_SLURM_DIR/pids, each only if it still runs that program). Idempotent.
#   tests/slurm/stop.sh [--with-dbd] [--purge]
#     --with-dbd: the cluster with accounting (default folder /tmp/flux-test-slurm-dbd)
#     --purge: also delete $FLUX_TEST_SLURM_DIR
set -euo pipefail
DBD=0
[ "${1:-}" = "--with-dbd" ] && { DBD=1; shift; }
if [ "$DBD" = 1 ]; then DIR="${FLUX_TEST_SLURM_DIR:-/tmp/flux-test-slurm-dbd}"; else DIR="${FLUX_TEST_SLURM_DIR:-/tmp/flux-test-slurm}"; fi
for name in slurmd slurmctld slurmdbd mariadbd munged; do
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
  [ "$DBD" = 1 ] || { grep -qF "# written by flux's tests/slurm/start.sh" /etc/slurm/slurm.conf 2>/dev/null && rm -f /etc/slurm/slurm.conf; }
  rm -rf "$DIR"
fi
