#!/bin/bash
# python.sh SERVER LIBRARY: the synchmess Python module (python/synchmess, ctypes over LIBRARY,
# libsynchmess.so.0) against a running server, on either transport (CUSE through
# run-cuse-test; --fuse-mount through fuse-host-run): tests/python/test_synchmess.py.
set -euo pipefail
SCENARIO=python
# shellcheck source=tests/sandbox/lib.sh
source "$(dirname "$0")/lib.sh"

(($# == 2)) || {
    echo "usage: $0 SERVER LIBRARY" >&2
    exit 2
}
server=$1
library=$2
top=$(cd "$(dirname "$0")/../.." && pwd)
command -v python3 >/dev/null || {
    fail "python3 is missing (tools/install-deps.sh installs it)"
    summary
}
read -r -a server_options <<<"${SERVER_OPTIONS:-}"
start_server "$server" "${server_options[@]}" || {
    summary || true
    exit 1
}
if SYNCHMESS_DIR=$SYNCH_DIR SYNCHMESS_LIBRARY=$library SYNCHMESS_EXPECT_FAST_PATH=1 \
    PYTHONPATH=$top/python PYTHONDONTWRITEBYTECODE=1 \
    python3 "$top/tests/python/test_synchmess.py" 2>&1; then
    ok "the Python module's tests passed"
else
    fail "the Python module's tests (above)"
fi
stop_server TERM
summary
