#!/usr/bin/env bash
# bench/python_peers.py in its own venv (peers from PyPI), on a release build.
# Usage: bench/python_peers.sh [python_peers.py options...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LATTICE_BENCH_VENV:-/var/cache/lattice/bench-venv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/lattice/target}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check parsl "dask[distributed]" celery -e ./sdk/python
cargo build --release -p lattice-cli
exec "$VENV/bin/python" bench/python_peers.py --lattice-bin "$CARGO_TARGET_DIR/release/lattice" "$@"
