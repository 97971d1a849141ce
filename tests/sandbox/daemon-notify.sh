#!/bin/bash
# daemon-notify.sh SERVER DAEMON_CHECK: synchmess-cuse as systemd runs it (Type=notify, stderr
# on the journal), on either transport: DAEMON_CHECK (daemon_check.cpp) starts SERVER with the
# options of this run (SERVER_OPTIONS: --fuse-mount=DIR through fuse-host-run; CUSE otherwise)
# and checks READY=1 (the control device opens by then), STOPPING=1 and exit 0 at SIGTERM, and
# that every log record is one line with its syslog priority.
set -euo pipefail
SCENARIO=daemon
# shellcheck source=tests/sandbox/lib.sh
source "$(dirname "$0")/lib.sh"

take_executables SERVER DAEMON_CHECK -- "$@"
read -r -a options <<<"${SERVER_OPTIONS:-}"
if "$2" "$SYNCH_DIR/synchmess" "$1" "${options[@]}"; then
    ok "synchmess-cuse behaves as a Type=notify service with its log on the journal"
else
    fail "synchmess-cuse as a Type=notify service (above)"
fi
summary
