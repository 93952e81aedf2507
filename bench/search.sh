#!/usr/bin/env bash
# Search benchmark, in one run on this machine: Lattice's two engines
# (embedded tantivy and PostgreSQL, through the SearchEngine trait) against
# SQLite FTS5 and PostgreSQL full text answering the same queries with
# hand-written SQL. Same generated records (seeded), same caller, same
# queries; see search/examples/search_bench.rs for the data and the queries.
#
#   bench/search.sh                    # 1,000,000 records, all four engines
#   N=100000 bench/search.sh           # fewer records
#   ENGINES=tantivy,sqlite-fts5 bench/search.sh
#   BENCH_QUICK=1 bench/search.sh      # 20,000 records, 10 runs per query (smoke run)
#   BENCH_RUNS=20 bench/search.sh      # runs per query (default 60, after 3 warm-up runs)
#
# Needs PostgreSQL at LATTICE_BENCH_PG (default postgres://postgres@127.0.0.1:5432/test);
# each run makes and drops its own database. A full run takes several minutes:
# start it with a time cap, e.g. `timeout 900 bench/search.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${BENCH_QUICK:-}" ]; then N=${N:-20000}; export BENCH_RUNS=${BENCH_RUNS:-10}; else N=${N:-1000000}; fi
ENGINES=${ENGINES:-tantivy,postgres,sqlite-fts5,pg-fts}
echo "building the search bench (release)" >&2
cargo build --release -q -p lattice-search --example search_bench
exec "${CARGO_TARGET_DIR:-target}/release/examples/search_bench" "$N" "$ENGINES"
