#!/usr/bin/env bash
# The main job: start synchmess-cuse and run the test application against it.
#
# Natively when this kernel has CUSE (/dev/cuse) and we are root; otherwise inside the sandbox
# kernel (User-Mode Linux, tests/sandbox/uml-run) with udevd applying udev/50-synchmess.rules,
# and it says so. Expects a build in build/run (cmake --preset run && cmake --build --preset
# run: the server, the library and the test application only), else in build/default;
# BUILD_DIR=... selects another one.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${BUILD_DIR:-}" ]; then
  build=$BUILD_DIR
elif [ -x "$top/build/run/server/synchmess-cuse" ] || [ ! -d "$top/build/default" ]; then
  build=$top/build/run
else
  build=$top/build/default
fi
export BUILD_DIR=$build  # the same build inside the sandbox kernel
server=$build/server/synchmess-cuse
app=$build/examples/synchmess-test-app
for binary in "$server" "$app"; do
  [ -x "$binary" ] || { echo "demo: $binary is missing: build first (cmake --preset run && cmake --build --preset run)" >&2; exit 1; }
done

if [ "${1:-}" = "--inside" ]; then
  # Runs where /dev/cuse exists, as root: server in the background, the application, then stop.
  log=$(mktemp -t synchmess-demo.XXXXXX)
  "$server" >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do [ -e /dev/synch/config ] && break; sleep 0.05; done
  echo "== synchmess-cuse is serving:"; ls -l /dev/synch/
  echo "== synchmess-test-app as root"
  status=0
  "$app" || status=$?
  if command -v setpriv >/dev/null; then
    echo "== synchmess-test-app as the unprivileged user nobody (udev modes)"
    setpriv --reuid=65534 --regid=65534 --clear-groups "$app" || status=$?
  fi
  kill -TERM "$server_pid"
  wait "$server_pid" || { echo "demo: synchmess-cuse exited with $?" >&2; status=1; }
  echo "== synchmess-cuse log"; cat "$log"; rm -f "$log"
  exit "$status"
fi

if [ -e /dev/cuse ] && [ "$(id -u)" -eq 0 ]; then
  echo "demo: this kernel has CUSE: running natively (udev rules: install udev/50-synchmess.rules for other users)"
  exec "$0" --inside
fi
echo "demo: this kernel has no CUSE (/dev/cuse is missing) or we are not root:"
echo "demo: running synchmess-cuse and the test application inside the sandbox kernel (User-Mode Linux)"
exec "$top/tests/sandbox/uml-run" --timeout 300 --rules "$top/udev/50-synchmess.rules" -- "$0" --inside
