#!/usr/bin/env bash
# Data plane CI: the lattice-data-plane tests with every fault test required
# (the tmpfs NO_SPACE_LEFT test needs root, which CI has), then a quick run
# of bench/transfer.sh so the benchmark never rots. Called from .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export LATTICE_REQUIRE_SERVICES=1
cargo test -p lattice-data-plane
BENCH_QUICK=1 BENCH_DIR=${BENCH_DIR:-/tmp/lattice-bench-ci} bench/transfer.sh
