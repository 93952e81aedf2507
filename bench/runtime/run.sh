#!/usr/bin/env bash
# Function runtime benchmark: per-invocation overhead of a no-op for each
# kind (Wasm, shell `true`, container `true`), release build.
#   1. in the worker: `Runtime::run` called directly (function-runtime's
#      `bench_runtime` example);
#   2. end to end: submit-to-result latency through `lattice dev`
#      (cli's `bench_runtime_e2e` example), one task at a time.
# Containers need `.ci/runtime.sh` (podman API + localbusybox image).
#   bench/runtime/run.sh [WASM_CALLS] [SHELL_CALLS] [CONTAINER_CALLS] [E2E_SINGLES]
set -euo pipefail
cd "$(dirname "$0")/../.."
WASM_CALLS=${1:-5000}
SHELL_CALLS=${2:-1000}
CONTAINER_CALLS=${3:-30}
SINGLES=${4:-200}
if [ -z "${LATTICE_CONTAINER_SOCKET:-}" ] && [ -S /tmp/lattice-podman/podman.sock ]; then
  export LATTICE_CONTAINER_SOCKET=/tmp/lattice-podman/podman.sock
fi

cargo build --release -q -p lattice-function-runtime --example bench_runtime
cargo build --release -q -p lattice-cli --bin lattice --example bench_runtime_e2e
TARGET=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}

echo "== in the worker (Runtime::run, one call at a time)"
"$TARGET/release/examples/bench_runtime" "$WASM_CALLS" "$SHELL_CALLS" "$CONTAINER_CALLS"

echo "== end to end through lattice dev (submit -> result, one task at a time)"
LATTICE=$TARGET/release/lattice
dir=$(mktemp -d)
XDG_CONFIG_HOME=$dir/cfg LATTICE_LOG=warn "$LATTICE" dev --data-dir "$dir/data" --listen 127.0.0.1:0 --workers 2 &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 200); do [ -f "$dir/cfg/lattice/profile.json" ] && break; sleep 0.05; done
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$dir/cfg/lattice/profile.json")
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$dir/cfg/lattice/profile.json")
endpoint=
for _ in $(seq 1 200); do
  endpoint=$(XDG_CONFIG_HOME=$dir/cfg "$LATTICE" endpoint list --format json --jmespath "[?name=='local' && status=='online'].id | [0]" 2>/dev/null | tr -d '"')
  [ -n "$endpoint" ] && [ "$endpoint" != null ] && break; sleep 0.1
done
if [ -n "${LATTICE_CONTAINER_SOCKET:-}" ]; then
  export LATTICE_BENCH_CONTAINER_IMAGE=${LATTICE_BENCH_CONTAINER_IMAGE:-localbusybox}
fi
"$TARGET/release/examples/bench_runtime_e2e" "$url" "$token" "$endpoint" "$SINGLES" "$CONTAINER_CALLS"
