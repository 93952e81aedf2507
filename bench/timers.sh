#!/usr/bin/env bash
# Timer tick precision on `lattice dev` (which allows 1 s intervals), on
# (SQLite, embedded queue) and on (PostgreSQL, RabbitMQ): a flow timer of
# one Pass state ticking every second TICKS times. Reports how late each
# tick started its work (ran_at - due_at) and how long after the due time
# the flow run it started existed (the run's start_time - due_at): p50,
# p99 and max, from `lattice timer runs` and `lattice flow run show`.
#   bench/timers.sh [TICKS]                 (default 60; about TICKS seconds per back end)
#   BENCH_PROFILE=debug bench/timers.sh 20  (the debug binary `cargo test` built)
set -euo pipefail
cd "$(dirname "$0")/.."
TICKS=${1:-60}
PROFILE=${BENCH_PROFILE:-release}
PG_URL=${LATTICE_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
AMQP_URL=${LATTICE_BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p lattice-cli --bin lattice
else
  cargo build -q -p lattice-cli --bin lattice
fi
TARGET=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
LATTICE=$TARGET/$PROFILE/lattice
echo "timer tick precision: $TICKS ticks, 1 s apart, $PROFILE build"

run() { # label, extra dev args...
  local label=$1; shift
  local dir; dir=$(mktemp -d)
  XDG_CONFIG_HOME=$dir/cfg LATTICE_LOG=warn "$LATTICE" dev --data-dir "$dir/data" --listen 127.0.0.1:0 --no-endpoint "$@" &
  local pid=$!
  for _ in $(seq 1 200); do [ -f "$dir/cfg/lattice/profile.json" ] && break; sleep 0.05; done
  local cli=(env XDG_CONFIG_HOME="$dir/cfg" "$LATTICE")
  printf 'StartAt: Done\nStates:\n  Done:\n    Type: Pass\n    End: true\n' > "$dir/pass.yaml"
  for _ in $(seq 1 100); do "${cli[@]}" flow create "$dir/pass.yaml" --title tick >/dev/null 2>&1 && break; sleep 0.1; done
  "${cli[@]}" timer create flow tick --interval 1s --stop-after-runs "$TICKS" --name bench >/dev/null
  for _ in $(seq 1 $((TICKS * 4 + 60))); do
    [ "$("${cli[@]}" timer show bench --format json --jmespath status | tr -d '"')" = ended ] && break
    sleep 0.5
  done
  sleep 1
  echo "== $label"
  "${cli[@]}" timer runs bench --limit 1000 --format json > "$dir/runs.json"
  "${cli[@]}" flow run list --flow tick --all --format json > "$dir/flow_runs.json"
  python3 - "$dir/runs.json" "$dir/flow_runs.json" <<'EOF'
import json, sys
from datetime import datetime

def t(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))

runs = json.load(open(sys.argv[1]))["runs"]
flow_runs = {r["id"]: r for r in json.load(open(sys.argv[2]))["runs"]}
late, started = [], []
for r in runs:
    if r.get("ran_at"):
        late.append((t(r["ran_at"]) - t(r["due_at"])).total_seconds() * 1000)
    rid = (r.get("resource_id") or "").removeprefix("run:")
    if rid in flow_runs:
        started.append((t(flow_runs[rid]["start_time"]) - t(r["due_at"])).total_seconds() * 1000)

def stats(xs):
    xs = sorted(xs)
    if not xs:
        return "no data"
    p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return f"p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {xs[-1]:.1f} ms (n={len(xs)})"

statuses = {}
for r in runs:
    statuses[r["status"]] = statuses.get(r["status"], 0) + 1
print(f"ticks: {statuses}")
print(f"tick started (ran_at - due_at):        {stats(late)}")
print(f"flow run created (start_time - due_at): {stats(started)}")
EOF
  kill -INT "$pid"; wait "$pid" || true
  rm -rf "$dir"
}

run "SQLite + embedded queue"
SCHEMA=bench_timers_$(date +%s)
psql "$PG_URL" -qc "CREATE SCHEMA $SCHEMA" >/dev/null
run "PostgreSQL + RabbitMQ" --database-url "$PG_URL?options=-c%20search_path%3D$SCHEMA" --amqp-url "$AMQP_URL"
psql "$PG_URL" -qc "DROP SCHEMA $SCHEMA CASCADE" >/dev/null 2>&1
