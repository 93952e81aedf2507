#!/usr/bin/env bash
# Transfer benchmark on loopback, in one run: Lattice (two agent processes,
# QUIC + TLS 1.3, blake3 verification on) against a real GridFTP server with
# globus-url-copy, rsync and cp.
#
#   bench/transfer.sh                 # (a) 2 GiB file, (b) 20,000 x 16 KiB, (c) mixed tree
#   BENCH_QUICK=1 bench/transfer.sh   # small sizes (CI smoke)
#
# Env: BENCH_DIR (work dir, default /tmp/lattice-bench), BIG_MIB, SMALL_FILES,
# RUNS (repetitions, the median is reported), BENCH_PREWARM (default 1).
# Needs root for apt-get/useradd.
#
# Fairness between the tools (each gets the same conditions):
# - Every run writes into a fresh destination directory. The previous
#   one's files are truncated to free the disk space, but the inodes are
#   only removed when the bench ends: on ext4 without a journal (this
#   machine's root), inodes freed in the last 60 s (360 s while their inode
#   table block is dirty) are skipped by a linear scan when new ones are
#   allocated, so a tool that starts right after `rm -rf` of 20,000 files
#   pays O(n^2) in file creation.
# - Before every run, twice the data set's size plus 256 MiB of memory is
#   written and freed (BENCH_PREWARM=1): on a VM with free page reporting,
#   memory freed for a few seconds goes back to the host and the first
#   write to it costs a host fault per page (~300 MB/s instead of GB/s into
#   the page cache), which otherwise penalises whichever tool runs first.
#   The data set's size alone left the tools' heaps and the kernel's inode
#   and directory caches to fault in.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WORK=${BENCH_DIR:-/tmp/lattice-bench}
if [ -n "${BENCH_QUICK:-}" ]; then
  BIG_MIB=${BIG_MIB:-128}; SMALL_FILES=${SMALL_FILES:-1000}; MIXED_SCALE=${MIXED_SCALE:-8}
else
  BIG_MIB=${BIG_MIB:-2048}; SMALL_FILES=${SMALL_FILES:-20000}; MIXED_SCALE=${MIXED_SCALE:-1}
fi
RUNS=${RUNS:-1}
PORT_GSIFTP=2811
PORT_LATTICE=47011

need() { command -v "$1" >/dev/null 2>&1; }
if ! need globus-url-copy || ! need globus-gridftp-server || ! need rsync; then
  apt-get install -y globus-gridftp-server-progs globus-gass-copy-progs rsync >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y globus-gridftp-server-progs globus-gass-copy-progs rsync >/dev/null; }
fi
[ -x /usr/bin/time ] || apt-get install -y time >/dev/null
id gftp >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin gftp

echo "building the Lattice bench agent (release)" >&2
cargo build --release -q -p lattice-data-plane --example transfer_bench --example bench_floor
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
AGENT=$TARGET/release/examples/transfer_bench
FLOOR=$TARGET/release/examples/bench_floor

mkdir -p "$WORK"; chmod 755 "$WORK"
DATA=$WORK/data
gen() { # dir count size_bytes
  python3 - "$@" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(d, exist_ok=True)
for i in range(n):
    sub = os.path.join(d, "d%03d" % (i // 1000))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%06d.bin" % i), "wb") as f:
        f.write(os.urandom(size))
PY
}
if [ ! -f "$DATA/.ready-$BIG_MIB-$SMALL_FILES-$MIXED_SCALE" ]; then
  echo "generating data sets in $DATA" >&2
  rm -rf "$DATA"; mkdir -p "$DATA/big" "$DATA/small" "$DATA/mixed"
  head -c $((BIG_MIB << 20)) /dev/urandom > "$DATA/big/file.bin"
  gen "$DATA/small" "$SMALL_FILES" 16384
  # mixed: one 512 MiB file, 16 x 32 MiB, 2,000 x 64 KiB, 5,000 x 4 KiB, nested
  head -c $((512 << 20 >> (MIXED_SCALE - 1) )) /dev/urandom > "$DATA/mixed/large.bin"
  gen "$DATA/mixed/medium" $((16 / MIXED_SCALE + 1)) $((32 << 20))
  gen "$DATA/mixed/a/b/small" $((2000 / MIXED_SCALE)) 65536
  gen "$DATA/mixed/a/tiny" $((5000 / MIXED_SCALE)) 4096
  chmod -R a+rX "$DATA"
  touch "$DATA/.ready-$BIG_MIB-$SMALL_FILES-$MIXED_SCALE"
fi
# Warm the page cache for every tool alike.
find "$DATA" -type f -exec cat {} + > /dev/null

# GridFTP server (anonymous, loopback only), as in the services notes.
GFTP_PID=$WORK/gridftp.pid
if ! (echo > /dev/tcp/127.0.0.1/$PORT_GSIFTP) 2>/dev/null; then
  globus-gridftp-server -aa -anonymous-user gftp -p $PORT_GSIFTP -control-interface 127.0.0.1 \
    -data-interface 127.0.0.1 -S -pidfile "$GFTP_PID" -l "$WORK/gridftp.log"
  for _ in $(seq 1 50); do (echo > /dev/tcp/127.0.0.1/$PORT_GSIFTP) 2>/dev/null && break; sleep 0.1; done
fi
cleanup() { [ -f "$GFTP_PID" ] && kill "$(cat "$GFTP_PID")" 2>/dev/null || true; rm -f "$GFTP_PID"; }
trap cleanup EXIT

$AGENT identity "$WORK/id-src" > "$WORK/fp-src"
$AGENT identity "$WORK/id-dst" > "$WORK/fp-dst"
DST_BASE=$WORK/dst
if [ -e "$DST_BASE" ]; then
  # sync: ext4 skips freed inodes for 60 s, or 360 s while their inode
  # table block is still dirty (fs/ext4/ialloc.c, recently_deleted)
  rm -rf "$DST_BASE"; sync; sleep 61
fi
DST_SEQ=0
DST=
WARM_MIB=0
cleanup_dst() { rm -rf "$DST_BASE"; }
trap 'cleanup; cleanup_dst' EXIT
# fresh_dst: a new, empty destination directory in $DST, memory pre-warmed.
fresh_dst() {
  if [ -n "${DST:-}" ] && [ -d "$DST" ]; then
    find "$DST" -type f -exec truncate -s 0 {} +
  fi
  DST_SEQ=$((DST_SEQ + 1)); DST=$DST_BASE/$DST_SEQ; mkdir -p "$DST"
  if [ "${BENCH_PREWARM:-1}" = 1 ] && [ "$WARM_MIB" -gt 0 ]; then
    dd if=/dev/zero of="$WORK/prewarm" bs=1M count="$WARM_MIB" status=none; rm -f "$WORK/prewarm"
  fi
}
now() { date +%s.%N; }
# CPU seconds the whole machine has been busy (user, nice, system, irq,
# softirq from /proc/stat): the delta over a run is what the tool cost both
# cores, its server and kernel work (a GridFTP server, loopback softirqs) included.
busy() { awk '/^cpu /{printf "%.2f", ($2+$3+$4+$7+$8)/100}' /proc/stat; }
RESULTS=$WORK/results.tsv
: > "$RESULTS"

# lattice NAME SRC_ROOT SRC_PATH RECURSIVE(0|1)
lattice() {
  local name=$1 src_root=$2 src_path=$3 recursive=$4 id="bench-$1-$RANDOM$RANDOM" flags=()
  [ "$recursive" = 1 ] && flags+=(--recursive)
  local dst_path=/; [ "$recursive" = 1 ] || dst_path=/$(basename "$src_path")
  local cred; cred=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  mkdir -p "$WORK/state"; fresh_dst
  /usr/bin/time -f "%M" -o "$WORK/rss-dst" "$AGENT" receive --identity "$WORK/id-dst" --peer "$(cat "$WORK/fp-src")" \
    --credential "$cred" --listen 127.0.0.1:$PORT_LATTICE --root "$DST" --path "$dst_path" --state "$WORK/state" \
    --id "$id" "${flags[@]}" > "$WORK/out-dst" 2> "$WORK/err-dst" &
  local receiver=$!
  # The destination agent's endpoint is long-lived in production: start the
  # clock once it listens (a datagram sent earlier is lost and re-sent after ~1 s).
  for _ in $(seq 1 200); do grep -q "listening on" "$WORK/err-dst" 2>/dev/null && break; sleep 0.02; done
  local start; start=$(now); local busy0; busy0=$(busy)
  /usr/bin/time -f "%M" -o "$WORK/rss-src" "$AGENT" send --identity "$WORK/id-src" --peer "$(cat "$WORK/fp-dst")" \
    --credential "$cred" --to 127.0.0.1:$PORT_LATTICE --root "$src_root" --path "$src_path" --id "$id" "${flags[@]}" \
    > "$WORK/out-src" 2> "$WORK/err-src" || { cat "$WORK/out-src" "$WORK/err-src" >&2; }
  wait $receiver || { cat "$WORK/out-dst" "$WORK/err-dst" >&2; return 1; }
  local end; end=$(now); local busy1; busy1=$(busy)
  grep -q '"ok":true' "$WORK/out-dst" || { echo "lattice $name failed" >&2; cat "$WORK/out-dst" >&2; return 1; }
  local rss; rss=$(( ($(cat "$WORK/rss-dst") > $(cat "$WORK/rss-src") ? $(cat "$WORK/rss-dst") : $(cat "$WORK/rss-src")) / 1024 ))
  record "$name" lattice "$(echo "$end - $start" | bc)" "$rss" "$(echo "$busy1 - $busy0" | bc)"
}

# timed NAME TOOL CMD... (run fresh_dst first: the command names $DST)
timed() {
  local name=$1 tool=$2; shift 2
  local start; start=$(now); local busy0; busy0=$(busy)
  "$@" > "$WORK/out-$tool" 2>&1 || { echo "$tool $name failed:" >&2; cat "$WORK/out-$tool" >&2; return 1; }
  local end; end=$(now); local busy1; busy1=$(busy)
  record "$name" "$tool" "$(echo "$end - $start" | bc)" - "$(echo "$busy1 - $busy0" | bc)"
}

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$RESULTS"; }

size_of() { du -sb --apparent-size "$1" | cut -f1; }
count_of() { find "$1" -type f | wc -l; }

run_set() { # NAME SRC_DIR (tree) | file
  local name=$1 src=$2 kind=$3
  WARM_MIB=$(( 2 * $(du -sm --apparent-size "$src" | cut -f1) + 256 ))
  for _ in $(seq 1 "$RUNS"); do
    if [ "$kind" = file ]; then
      lattice "$name" "$(dirname "$src")" "/$(basename "$src")" 0
      fresh_dst; timed "$name" "guc -p 4" globus-url-copy -p 4 "ftp://127.0.0.1:$PORT_GSIFTP$src" "file://$DST/"
      fresh_dst; timed "$name" rsync rsync -a "$src" "$DST/"
      fresh_dst; timed "$name" cp cp "$src" "$DST/"
    else
      lattice "$name" "$src" / 1
      fresh_dst; timed "$name" "guc -cc 4 -pp" globus-url-copy -r -cc 4 -pp -cd "ftp://127.0.0.1:$PORT_GSIFTP$src/" "file://$DST/"
      fresh_dst; timed "$name" rsync rsync -a "$src/" "$DST/"
      fresh_dst; timed "$name" cp cp -a "$src/." "$DST/"
    fi
  done
}

run_set "a: 1 file ${BIG_MIB} MiB" "$DATA/big/file.bin" file
run_set "b: $SMALL_FILES x 16 KiB" "$DATA/small" tree
# The floors of (a) and (b) on this machine, (b)'s measured on the same
# file system in the same state as the tools' runs (see bench_floor.rs).
fresh_dst
"$FLOOR" "$(echo "scale=3; $BIG_MIB / 1024" | bc)" --small-files "$SMALL_FILES" "$DST/files" > "$WORK/floor.txt"
run_set "c: mixed tree" "$DATA/mixed" tree

python3 - "$RESULTS" "$(size_of "$DATA/big/file.bin")" "$(size_of "$DATA/small")" "$(count_of "$DATA/small")" \
  "$(size_of "$DATA/mixed")" "$(count_of "$DATA/mixed")" <<'PY'
import sys, statistics, collections
path, big, small, small_n, mixed, mixed_n = sys.argv[1], *map(int, sys.argv[2:])
rows = collections.defaultdict(list)
rss = collections.defaultdict(list)
cpu = collections.defaultdict(list)
order = []
for line in open(path):
    name, tool, secs, mem, busy = line.rstrip("\n").split("\t")
    if (name, tool) not in rows: order.append((name, tool))
    rows[(name, tool)].append(float(secs))
    cpu[(name, tool)].append(float(busy))
    if mem != "-": rss[name].append(int(mem))
def volume(name):
    if name.startswith("a"): return big, 1
    if name.startswith("b"): return small, small_n
    return mixed, mixed_n
print("| data set | tool | seconds | MiB/s | files/s | CPU s | Lattice speed-up |")
print("|---|---|---:|---:|---:|---:|---:|")
for name, tool in order:
    t = statistics.median(rows[(name, tool)])
    lat = statistics.median(rows[(name, "lattice")])
    size, n = volume(name)
    ratio = "—" if tool == "lattice" else "%.2fx" % (t / lat)
    c = statistics.median(cpu[(name, tool)])
    print(f"| {name} | {tool} | {t:.2f} | {size / t / 2**20:,.0f} | {n / t:,.0f} | {c:.2f} | {ratio} |")
print()
for name in rss:
    print(f"peak RSS of a Lattice agent, {name}: {max(rss[name])} MiB")
print("Lattice: QUIC + TLS 1.3 (AES-GCM), blake3 of every file on both sides; guc: plain GridFTP (no encryption, no checksum).")
print("'Lattice speed-up' = peer time / Lattice time (above 1: Lattice is faster).")
print("'CPU s' = CPU seconds the machine was busy during the run (both cores, all processes).")
PY
echo
echo "Floors: what any encrypted, verified copy must spend on this machine (data-plane/examples/bench_floor.rs):"
cat "$WORK/floor.txt"
