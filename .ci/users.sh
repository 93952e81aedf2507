#!/usr/bin/env bash
# Local Unix accounts for the multi-user endpoint tests: lattice-alice and
# lattice-bob (with home dirs), created only if missing. Idempotent; runs as
# root. `.ci/run` calls it; by hand: `sudo .ci/users.sh`.
set -euo pipefail
for user in lattice-alice lattice-bob; do
  if ! getent passwd "$user" >/dev/null; then
    useradd -m -s /bin/sh -U "$user"
  fi
  home=$(getent passwd "$user" | cut -d: -f6)
  mkdir -p "$home"
  chown "$user:" "$home"
  chmod 0700 "$home"
done
# The Slurm test cluster enforces associations: let both users submit jobs
# under the test account (a multi-user agent's children submit as them).
if command -v sacctmgr >/dev/null 2>&1 && sacctmgr -n show cluster >/dev/null 2>&1; then
  for user in lattice-alice lattice-bob; do
    if [ -z "$(sacctmgr -n -P show assoc where user=$user account=lattice format=user 2>/dev/null)" ]; then
      sacctmgr -i add user "$user" account=lattice defaultaccount=lattice cluster=lattice-test >/dev/null
    fi
  done
fi
