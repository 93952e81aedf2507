#!/usr/bin/env bash
# A quick run of bench/transfer.sh (small sizes: Lattice, GridFTP, rsync, cp
# and the floors of bench_floor) so the benchmark never rots. Called from
# .ci/run after the tests; its figures mean nothing at these sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_QUICK=1 BENCH_DIR=${BENCH_DIR:-/tmp/lattice-bench-ci} bench/transfer.sh
