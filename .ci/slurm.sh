#!/usr/bin/env bash
# A one-node Slurm cluster (slurmctld + slurmd + slurmdbd on MariaDB) for the
# Slurm provider's end-to-end test and benchmark. Idempotent: installs the
# Debian packages if missing, starts only what is not running, waits until
# `sinfo` shows the node idle. Runs as root, needs no systemd.
#
# Afterwards: export SLURM_CONF=<repo>/.ci/slurm/slurm.conf (the tests also
# find it there on their own). The cluster has the account `lattice` (root's
# default); any other account is refused at submission.
# Stop it: scontrol shutdown; kill $(cat /tmp/lattice-slurm/slurmdbd.pid);
#          runuser -u munge -- /usr/sbin/munged --stop
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export SLURM_CONF="$ROOT/.ci/slurm/slurm.conf"
RUN=/tmp/lattice-slurm

say() { printf '[slurm] %s\n' "$*"; }

wait_for() { # seconds description command...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq 1 $((seconds * 4))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  echo "[slurm] timed out after ${seconds}s waiting for $what" >&2
  for log in "$RUN"/log/*.log; do
    [ -f "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
  done
  return 1
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm, slurmdbd and munge"
  apt-get install -y -q -o DPkg::Lock::Timeout=600 slurm-wlm slurmdbd munge >/dev/null
fi

mkdir -p "$RUN/state" "$RUN/spool" "$RUN/log"
chmod 600 "$ROOT/.ci/slurm/slurmdbd.conf"

# munge: a key and the daemon.
if [ ! -s /etc/munge/munge.key ]; then
  say "creating the munge key"
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge && chown munge:munge /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 "munged" sh -c 'munge -n </dev/null | unmunge'
fi

# MariaDB (already running on these machines) holds the accounting database.
if ! (echo > /dev/tcp/127.0.0.1/3306) 2>/dev/null; then
  say "MariaDB is not listening on 3306; starting it"
  (mysqld_safe >/dev/null 2>&1 &)
  wait_for 60 "MariaDB" sh -c 'echo > /dev/tcp/127.0.0.1/3306'
fi
mysql -u root <<'SQL'
CREATE DATABASE IF NOT EXISTS lattice_slurm_acct;
CREATE USER IF NOT EXISTS 'lattice_slurm'@'localhost' IDENTIFIED BY 'lattice-slurm-test';
GRANT ALL ON lattice_slurm_acct.* TO 'lattice_slurm'@'localhost';
SQL

if ! running "$RUN/slurmdbd.pid"; then
  say "starting slurmdbd"
  slurmdbd
  wait_for 60 "slurmdbd" sacctmgr -n show cluster
fi
if [ -z "$(sacctmgr -n -P show cluster format=cluster lattice-test 2>/dev/null)" ]; then
  sacctmgr -i add cluster lattice-test >/dev/null
fi

if ! running "$RUN/slurmctld.pid"; then
  say "starting slurmctld"
  slurmctld
  wait_for 30 "slurmctld" scontrol ping
fi
if ! running "$RUN/slurmd.pid"; then
  say "starting slurmd"
  slurmd -N localhost
fi

# The account every test job uses; root may use it (and only it).
if [ -z "$(sacctmgr -n -P show account lattice format=account 2>/dev/null)" ]; then
  sacctmgr -i add account lattice cluster=lattice-test description=tests organization=lattice >/dev/null
fi
if [ -z "$(sacctmgr -n -P show assoc where user=root account=lattice format=user 2>/dev/null)" ]; then
  sacctmgr -i add user root account=lattice defaultaccount=lattice cluster=lattice-test >/dev/null
fi

wait_for 60 "the node to be idle" sh -c 'sinfo -h -o %t | grep -qx idle'
# The controller learns new associations asynchronously: wait until a job runs.
wait_for 60 "a test job" sh -c 'out=$(srun -A lattice -t 1 -Q true 2>&1) && [ -z "$out" ]'
say "ready: SLURM_CONF=$SLURM_CONF ($(sinfo -h -o '%P %t %c cpus'))"
