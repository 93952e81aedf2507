#!/usr/bin/env bash
# Compute benchmark: 10,000 tasks of a shell function running `true` on 2
# workers, and single-task latency on an idle system, on (SQLite, embedded
# queue) and on (PostgreSQL, RabbitMQ). Release build.
#   bench/compute.sh [TASKS] [SINGLES]
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${1:-10000}
SINGLES=${2:-200}
PG_URL=${LATTICE_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
AMQP_URL=${LATTICE_BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
cargo build --release -q -p lattice-cli --bin lattice --example bench_compute
TARGET=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
LATTICE=$TARGET/release/lattice
BENCH=$TARGET/release/examples/bench_compute

run() { # label, extra dev args...
  local label=$1; shift
  local dir; dir=$(mktemp -d)
  XDG_CONFIG_HOME=$dir/cfg LATTICE_LOG=warn "$LATTICE" dev --data-dir "$dir/data" --listen 127.0.0.1:0 --workers 2 "$@" &
  local pid=$!
  for _ in $(seq 1 200); do [ -f "$dir/cfg/lattice/profile.json" ] && break; sleep 0.05; done
  local url token endpoint
  url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$dir/cfg/lattice/profile.json")
  token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$dir/cfg/lattice/profile.json")
  for _ in $(seq 1 200); do
    endpoint=$(XDG_CONFIG_HOME=$dir/cfg "$LATTICE" endpoint list --format json --jmespath "[?name=='local' && status=='online'].id | [0]" 2>/dev/null | tr -d '"')
    [ -n "$endpoint" ] && [ "$endpoint" != null ] && break; sleep 0.1
  done
  echo "== $label"
  "$BENCH" "$url" "$token" "$endpoint" "$TASKS" "$SINGLES"
  kill -INT "$pid"; wait "$pid" || true
  rm -rf "$dir"
}

run "SQLite + embedded queue"
SCHEMA=bench_$(date +%s)
psql "$PG_URL" -qc "CREATE SCHEMA $SCHEMA" >/dev/null
run "PostgreSQL + RabbitMQ" --database-url "$PG_URL?options=-c%20search_path%3D$SCHEMA" --amqp-url "$AMQP_URL"
psql "$PG_URL" -qc "DROP SCHEMA $SCHEMA CASCADE" >/dev/null 2>&1
