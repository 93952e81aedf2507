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
