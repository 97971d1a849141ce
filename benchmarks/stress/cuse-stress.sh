#!/bin/bash
# cuse-stress.sh SERVER PROGRAM [OPTIONS...]
#
# The stress load (synchmess_stress) through real CUSE character devices under /dev/synch. Needs
# root and /dev/cuse: benchmarks/benchmark.sh --cuse runs it through tests/sandbox/run-cuse-test
# (inside a User-Mode Linux guest where the host has no CUSE). Starts the server, runs the load
# against it, stops the server with SIGTERM (exit 0 and every node gone expected). Exit status:
# the load program's when it failed, else 1 on any failed check of the server, else 0.
set -euo pipefail
SCENARIO=cuse-stress
# shellcheck source=tests/sandbox/lib.sh
source "$(dirname "$0")/../../tests/sandbox/lib.sh"

(($# >= 2)) || {
    echo "usage: $0 SERVER STRESS [STRESS-OPTIONS...]" >&2
    exit 2
}
take_executables SERVER STRESS -- "$1" "$2"
server=$1
stress=$2
shift 2

if [[ ${UML_RUN:-} == 1 ]]; then
    log "inside the User-Mode Linux sandbox kernel: timings are NOT meaningful, only the checks"
fi
start_server "$server" || exit 1
status=0
"$stress" --server-pid "$SERVER_PID" "$@" || status=$?
if ((status == 0)); then
    ok "$(basename "$stress") passed through CUSE devices"
else
    fail "$(basename "$stress") exited with status $status"
fi
stop_server TERM
check_server_log
if ((FAILURES)); then show_file "server log" "$SERVER_LOG"; fi
summary || { ((status != 0)) && exit "$status"; exit 1; }
