#!/usr/bin/env bash
# The Python SDK's suite: a venv with the SDK and the test tools, the
# `lattice` debug binary, then pytest against a real `lattice dev` (started
# by the tests). Idempotent; `.ci/run` calls it, and it runs by hand too.
# With LATTICE_REQUIRE_SERVICES=1 a missing binary fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${LATTICE_VENV:-/var/cache/lattice/venv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/lattice/target}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
fi
# The SDK (editable: the tests run this tree's code) with its dill extra,
# and what the tests and the notebook need.
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$ROOT/sdk/python[dill,test]"

cargo build --quiet -p lattice-cli
export LATTICE_BIN="$CARGO_TARGET_DIR/debug/lattice"
# The Rust runtime's own Python tests use this interpreter too.
export LATTICE_PYTHON="$VENV/bin/python"

cd "$ROOT/sdk/python"
# -p no:cacheprovider: no .pytest_cache in the tree. Exit code 5 (no tests
# collected) is a failure here, as any other non-zero code.
"$VENV/bin/python" -m pytest -p no:cacheprovider -ra tests
