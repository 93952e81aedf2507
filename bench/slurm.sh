#!/usr/bin/env bash
# Measures the Slurm provider on the one-node cluster of .ci/slurm.sh, in
# release: time from submitting the first task to its result with a cold
# block, and throughput of 1,000 short tasks through one block of 2 workers.
# Prints the numbers (lines starting with MEASURED); asserts nothing about
# them. Usage: bench/slurm.sh   (starts the cluster if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/slurm.sh
export SLURM_CONF="$PWD/.ci/slurm/slurm.conf"
cargo build --release -p lattice-cli
cargo test --release -p lattice-tests --test e2e bench_slurm -- --ignored --nocapture 2>&1 \
  | grep -E '^(MEASURED|test |SKIPPED)'
