#!/usr/bin/env bash
# Provisions what the function runtime's tests need, idempotently (root, no
# registry reachable): podman serving the Docker Engine API on a unix socket
# with a `localbusybox` image built from a rootfs, and clang + wasi-libc for
# C test modules. `.ci/run` calls it; run it by hand before
# `cargo test -p lattice-function-runtime` to get the container tests.
#
# Afterwards: export LATTICE_CONTAINER_SOCKET=/tmp/lattice-podman/podman.sock
# (the tests also look there when the variable is unset).
set -euo pipefail
cd "$(dirname "$0")/.."

PODMAN_DIR=/tmp/lattice-podman
SOCKET=$PODMAN_DIR/podman.sock

need=()
command -v podman >/dev/null || need+=(podman)
command -v curl >/dev/null || need+=(curl)
command -v runc >/dev/null || need+=(runc)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v clang >/dev/null || need+=(clang)
command -v wasm-ld >/dev/null || need+=(lld)
[ -d /usr/include/wasm32-wasi ] || need+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || need+=(libclang-rt-14-dev-wasm32)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# podman's configuration lives in the repo; containers.conf names these
# paths for conmon, so they are copied to a fixed place.
mkdir -p "$PODMAN_DIR"
cp .ci/podman/containers.conf .ci/podman/storage.conf "$PODMAN_DIR/"
export CONTAINERS_CONF=$PODMAN_DIR/containers.conf
export CONTAINERS_STORAGE_CONF=$PODMAN_DIR/storage.conf

if ! podman image exists localbusybox; then
  echo "building the localbusybox image from /bin/busybox"
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/work"
  cp /bin/busybox "$rootfs/bin/"
  for applet in $("$rootfs/bin/busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
  done
  tar -C "$rootfs" -c . | podman import --quiet - localbusybox >/dev/null
  rm -rf "$rootfs"
fi

# The Docker-compatible API. A live socket is reused; a stale one replaced.
# A service whose working directory was deleted (started from a CI clone that
# is gone) answers pings but conmon fails to start containers: replace it.
for pid in $(pgrep -x podman || true); do
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "system service.*$SOCKET" || continue
  if [ ! -d "/proc/$pid/cwd/" ] || readlink "/proc/$pid/cwd" | grep -q '(deleted)'; then
    echo "replacing podman service $pid (its working directory is gone)"
    kill "$pid" || true
    sleep 0.5
  fi
done
if ! curl -sf --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; then
  rm -f "$SOCKET"
  # Started from / so that it never depends on this checkout's directory.
  (cd / && nohup podman system service --time=0 "unix://$SOCKET" >"$PODMAN_DIR/service.log" 2>&1 &)
  for _ in $(seq 1 100); do
    curl -sf --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -sf --unix-socket "$SOCKET" http://d/_ping >/dev/null || {
    echo "podman system service did not answer on $SOCKET; see $PODMAN_DIR/service.log" >&2
    exit 1
  }
fi
echo "podman API on $SOCKET (image localbusybox)"
