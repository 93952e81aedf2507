#!/usr/bin/env bash
# Flows benchmark (cli/examples/bench_flows.rs) on a release `lattice dev`
# with 2 workers, on (SQLite, embedded queue) and on (PostgreSQL, RabbitMQ):
# a 10-state Pass flow, a one-compute-action flow against the task alone, a
# Map over ITEMS items against a batch of ITEMS tasks; and, once, the same
# fan-out as a Parsl join_app (HighThroughputExecutor, 2 workers) if Parsl
# is installed in the bench venv.
#   bench/flows.sh [RUNS] [ITEMS]        (defaults 200 and 1000)
#   BENCH_QUICK=1 bench/flows.sh         (20 and 100)
# The venv: $LATTICE_BENCH_VENV, else /var/cache/lattice/bench-venv (the one
# bench/python_peers.sh installs Parsl into), else /var/cache/lattice/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  RUNS=${1:-20}; ITEMS=${2:-100}
else
  RUNS=${1:-200}; ITEMS=${2:-1000}
fi
PG_URL=${LATTICE_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
AMQP_URL=${LATTICE_BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
cargo build --release -q -p lattice-cli --bin lattice --example bench_flows
TARGET=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
LATTICE=$TARGET/release/lattice
BENCH=$TARGET/release/examples/bench_flows
echo "flows benchmark: RUNS=$RUNS ITEMS=$ITEMS, 2 workers, release build"

# --- Parsl: the same fan-out as a join_app launching ITEMS no-op python_apps.
PARSL_SECS=
PYTHON=
for venv in ${LATTICE_BENCH_VENV:-} /var/cache/lattice/bench-venv /var/cache/lattice/venv; do
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import parsl' 2>/dev/null; then
    PYTHON=$venv/bin/python; break
  fi
done
if [ -z "$PYTHON" ]; then
  echo "== Parsl: NOT INSTALLED (no venv with parsl among \$LATTICE_BENCH_VENV," \
    "/var/cache/lattice/bench-venv, /var/cache/lattice/venv); the Parsl comparison is skipped." \
    "Install it with bench/python_peers.sh or: python3 -m venv /var/cache/lattice/bench-venv &&" \
    "/var/cache/lattice/bench-venv/bin/pip install parsl"
else
  echo "== Parsl join_app, HighThroughputExecutor, 2 workers ($PYTHON)"
  # Parsl starts its interchange and workers as commands of the venv.
  parsl_out=$(PATH=$(dirname "$PYTHON"):$PATH timeout 600 "$PYTHON" - "$ITEMS" <<'EOF'
import shutil, sys, tempfile, time
import parsl
from parsl import join_app, python_app
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

items = int(sys.argv[1])

@python_app
def noop(i):
    return i

@join_app
def fan(n):
    return [noop(i) for i in range(n)]

run_dir = tempfile.mkdtemp(prefix="parsl-flows-bench-")
config = Config(
    executors=[HighThroughputExecutor(label="htex", max_workers_per_node=2, cores_per_worker=1,
                                      provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))],
    run_dir=run_dir, strategy="none", usage_tracking=0,
)
dfk = parsl.load(config)
try:
    # Warm up: workers started (as Lattice's are before it is measured).
    [f.result() for f in [noop(i) for i in range(20)]]
    fan(20).result()
    started = time.perf_counter()
    out = fan(items).result()
    elapsed = time.perf_counter() - started
    assert out == list(range(items)), "wrong join_app result"
    print(f"join_app over {items} no-op python_apps: {elapsed:.3f} s ({items / elapsed:.0f} items/s)")
    print(f"PARSL_SECONDS={elapsed:.6f}")
finally:
    dfk.cleanup()
    parsl.clear()
    shutil.rmtree(run_dir, ignore_errors=True)
EOF
  ) || { echo "Parsl run failed (status $?): the Parsl comparison is skipped"; parsl_out=; }
  grep -v '^PARSL_SECONDS=' <<<"$parsl_out" || true
  PARSL_SECS=$(sed -n 's/^PARSL_SECONDS=//p' <<<"$parsl_out")
fi

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
  local status=0
  "$BENCH" "$url" "$token" "$endpoint" "$RUNS" "$ITEMS" "$PARSL_SECS" || status=$?
  kill -INT "$pid"; wait "$pid" || true
  rm -rf "$dir"
  [ "$status" = 0 ] || echo "bench_flows failed on $label (status $status)"
}

run "SQLite + embedded queue"
SCHEMA=bench_flows_$(date +%s)
psql "$PG_URL" -qc "CREATE SCHEMA $SCHEMA" >/dev/null
run "PostgreSQL + RabbitMQ" --database-url "$PG_URL?options=-c%20search_path%3D$SCHEMA" --amqp-url "$AMQP_URL"
psql "$PG_URL" -qc "DROP SCHEMA $SCHEMA CASCADE" >/dev/null 2>&1
