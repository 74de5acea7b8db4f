#!/usr/bin/env bash
# A single-node Slurm cluster for flux's Slurm tests (tests/integration/slurm.rs), started
# without systemd: munged, slurmctld and slurmd from Debian's packages (installed if
# missing; needs root). Idempotent: when its daemons already run it only checks that the
# node is up; when any Slurm cluster already answers (`sinfo` through
# /etc/slurm/slurm.conf), it uses that one.
#
#   tests/slurm/start.sh             install if missing, configure, start, wait until the node is idle
#   tests/slurm/start.sh --with-dbd  a second cluster, with accounting (MariaDB + slurmdbd:
#                                    `sacct` works), beside the first: its own ports and folder
#   tests/slurm/stop.sh [--with-dbd] stop the daemons this script started
#
# Everything it writes lives in $FLUX_TEST_SLURM_DIR (default /tmp/flux-test-slurm, or
# /tmp/flux-test-slurm-dbd with --with-dbd): slurm.conf, state/, spool/, log/, run/ and
# pids/ (the daemons it started), and with --with-dbd slurmdbd.conf and mysql/. Clients
# find the first cluster through /etc/slurm/slurm.conf, written only if absent or written
# here; the cluster with accounting through SLURM_CONF=<its folder>/slurm.conf (printed
# on the last line).
# Knobs: FLUX_TEST_SLURM_CPUS (default: this machine's), FLUX_TEST_SLURM_MEM_MB (1024).
set -euo pipefail

DBD=0
[ "${1:-}" = "--with-dbd" ] && DBD=1
if [ "$DBD" = 1 ]; then
  DIR="${FLUX_TEST_SLURM_DIR:-/tmp/flux-test-slurm-dbd}"
  # Ports of its own: the first cluster keeps Slurm's defaults (6817, 6818).
  CTLD_PORT=6827 SLURMD_PORT=6828 DBD_PORT=6829 DB_PORT=3317 CLUSTER=fluxtestdbd
else
  DIR="${FLUX_TEST_SLURM_DIR:-/tmp/flux-test-slurm}"
  CTLD_PORT=6817 SLURMD_PORT=6818 CLUSTER=fluxtest
fi
CPUS="${FLUX_TEST_SLURM_CPUS:-$(nproc)}"
MEM_MB="${FLUX_TEST_SLURM_MEM_MB:-1024}"
MARK="# written by flux's tests/slurm/start.sh"
NODE=localhost

say() { printf 'tests/slurm/start.sh: %s\n' "$*"; }
die() { printf 'tests/slurm/start.sh: %s\n' "$*" >&2; exit 1; }

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -1 || true; }
usable() { case "$1" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac; }

# A cluster that already answers (ours from an earlier call, or another one): use it.
if [ "$DBD" = 1 ]; then
  export SLURM_CONF="$DIR/slurm.conf"
  if command -v sacct >/dev/null && [ -e "$SLURM_CONF" ]; then
    s=$(timeout 10 sinfo -h -o '%T' 2>/dev/null | head -1 || true)
    if usable "$s" && timeout 10 sacct -n -X -j 1 >/dev/null 2>&1; then
      say "Slurm with accounting answers (node $s)"; echo "$SLURM_CONF"; exit 0
    fi
  fi
elif command -v sinfo >/dev/null && [ -e /etc/slurm/slurm.conf ]; then
  s=$(timeout 10 sinfo -h -o '%T' 2>/dev/null | head -1 || true)
  if usable "$s"; then say "Slurm answers (node $s)"; exit 0; fi
fi

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"

# Install.
need=()
command -v munged >/dev/null || need+=(munge)
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sbatch >/dev/null || need+=(slurm-client)
if [ "$DBD" = 1 ]; then
  command -v slurmdbd >/dev/null || need+=(slurmdbd)
  command -v mariadbd >/dev/null || need+=(mariadb-server)
fi
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  # No systemd: keep the packages' scripts from starting their services.
  policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  log="${TMPDIR:-/tmp}/flux-test-slurm-apt.log"
  ok=1
  apt-get install -y -q --no-install-recommends "${need[@]}" >"$log" 2>&1 ||
    { apt-get update -q >>"$log" 2>&1; apt-get install -y -q --no-install-recommends "${need[@]}" >>"$log" 2>&1; } ||
    ok=0
  [ "$policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$ok" = 1 ] || { tail -20 "$log" >&2; die "apt-get install ${need[*]} failed (log: $log)"; }
fi

mkdir -p "$DIR"/{state,spool,log,run,pids}
chmod 755 "$DIR"

running() { # running NAME: the pid kept in pids/NAME runs NAME
  local f="$DIR/pids/$1" p
  [ -s "$f" ] || return 1
  p=$(cat "$f")
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ]
}
keep() { # keep NAME PIDFILE: wait for the daemon's pid file, keep its pid
  for _ in $(seq 100); do [ -s "$2" ] && break; sleep 0.1; done
  [ -s "$2" ] || die "$1 did not start (no $2; see $DIR/log)"
  cp "$2" "$DIR/pids/$1"
  say "started $1 (pid $(cat "$DIR/pids/$1"))"
}

# munge: Slurm's authentication.
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! running munged && ! { munge -n | unmunge; } >/dev/null 2>&1; then
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  keep munged /run/munge/munged.pid
fi
{ munge -n | unmunge; } >/dev/null 2>&1 || die "munge does not work"

# Accounting (--with-dbd): MariaDB on a port and socket of its own, then slurmdbd.
if [ "$DBD" = 1 ]; then
  if ! running mariadbd; then
    if [ ! -d "$DIR/mysql/mysql" ]; then
      mariadb-install-db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
        --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $DIR/log)"
    fi
    rm -f "$DIR/run/mysqld.pid"
    mariadbd --user=root --datadir="$DIR/mysql" --socket="$DIR/run/mysqld.sock" \
      --pid-file="$DIR/run/mysqld.pid" --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
      --innodb-buffer-pool-size=32M --log-error="$DIR/log/mariadb.log" </dev/null >/dev/null 2>&1 &
    keep mariadbd "$DIR/run/mysqld.pid"
  fi
  for _ in $(seq 100); do mariadb -S "$DIR/run/mysqld.sock" -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb -S "$DIR/run/mysqld.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "MariaDB does not answer (see $DIR/log)"
  # slurmdbd reads slurmdbd.conf beside SLURM_CONF, and wants it private.
  (umask 077 && cat >"$DIR/slurmdbd.conf" <<DBDCONF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
DBDCONF
  )
  if ! running slurmdbd; then
    rm -f "$DIR/run/slurmdbd.pid"
    SLURM_CONF="$DIR/slurm.conf" slurmdbd
    keep slurmdbd "$DIR/run/slurmdbd.pid"
  fi
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$DBD_PORT") 2>/dev/null && break; sleep 0.1; done
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/none"
else
  ACCT="# No accounting daemon: sacct does not work; ended jobs stay in scontrol for MinJobAge s.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

conf="$DIR/slurm.conf"
cat >"$conf.new" <<CONF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups here: follow a job's processes by parent pid.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
$ACCT
MinJobAge=300
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
InactiveLimit=0
KillWait=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
if [ -f "$conf" ] && cmp -s "$conf" "$conf.new"; then rm "$conf.new"; else mv "$conf.new" "$conf"; fi
mkdir -p /etc/slurm
if [ "$DBD" = 1 ]; then
  export SLURM_CONF="$conf"
elif [ ! -e /etc/slurm/slurm.conf ] || grep -qF "$MARK" /etc/slurm/slurm.conf; then
  cmp -s "$conf" /etc/slurm/slurm.conf || cp "$conf" /etc/slurm/slurm.conf
else
  die "/etc/slurm/slurm.conf belongs to another Slurm that does not answer; start that one, or move it away"
fi

if ! running slurmctld; then
  rm -f "$DIR/run/slurmctld.pid"
  slurmctld -f "$conf"
  keep slurmctld "$DIR/run/slurmctld.pid"
fi
if ! running slurmd; then
  rm -f "$DIR/run/slurmd.pid"
  slurmd -f "$conf" -N "$NODE"
  keep slurmd "$DIR/run/slurmd.pid"
fi

for _ in $(seq 300); do
  s=$(node_state)
  if usable "$s"; then
    say "node $NODE is $s"
    if [ "$DBD" = 1 ]; then
      # slurmctld registers the cluster with slurmdbd as it starts: wait until sacct answers.
      for _ in $(seq 150); do sacct -n -X -j 1 >/dev/null 2>&1 && break; sleep 0.2; done
      sacct -n -X -j 1 >/dev/null || die "sacct does not answer (see $DIR/log)"
      echo "$conf"
    fi
    exit 0
  fi
  case "$s" in drain*|down*|fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;; esac
  sleep 0.2
done
tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
die "node $NODE not up after 60 s (state '$(node_state)')"
