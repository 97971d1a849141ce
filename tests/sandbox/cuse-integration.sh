#!/bin/bash
# cuse-integration.sh SERVER SUITE [SUITE-ARGS...]
#
# Starts SERVER (synchmess-cuse, as root, default options), waits for its nodes, runs the
# end-to-end suite SUITE (synchmess_integration_tests) against it, checks that the suite left no
# group behind, stops the server with SIGTERM (exit 0, nodes gone) and prints the server log.
# Needs root and /dev/cuse: run it through run-cuse-test (UML guest or native).
# Exit status: 0 passed; 77 (CTest's SKIP_RETURN_CODE) when the suite passed but skipped cases it
# could not run here (it lists them at its end); else a failure.
# Environment: SUITE_TIMEOUT (seconds, default 420); SERVER_OPTIONS (extra server options,
# split on spaces, for experiments).
set -euo pipefail
SCENARIO=integration
# shellcheck source=tests/sandbox/lib.sh
source "$(dirname "$0")/lib.sh"

(($# >= 2)) || {
    echo "usage: $0 SERVER SUITE [SUITE-ARGS...]" >&2
    exit 2
}
server=$1
suite=$2
shift 2
SUITE_TIMEOUT=${SUITE_TIMEOUT:-420}
[[ -x $server ]] || {
    echo "$0: server binary not found: $server" >&2
    exit 2
}
[[ -x $suite ]] || {
    echo "$0: suite binary not found: $suite" >&2
    exit 2
}

read -ra server_options <<<"${SERVER_OPTIONS:-}"
start_server "$server" "${server_options[@]}" || {
    summary || true
    exit 1
}

log "running $suite $*"
# Straight to stdout: what it printed survives a guest killed on timeout (uml-run prints it).
# The suite's own watchdog ends a test case after SYNCHMESS_TEST_CASE_TIMEOUT (180 s here). A
# process blocked in a request the server never answers cannot even be killed (the kernel waits
# for the answer), so after SUITE_TIMEOUT the server is stopped first: that answers everything.
# SYNCHMESS_SERVER_PID: whose threads the suite counts (other servers may run beside ours).
# A copy goes to SUITE_LOG: the failed checks are printed again at the end, where a log that
# keeps only its head and tail (CI) still shows them.
SUITE_LOG=$WORK_DIR/suite.log
SUITE_SKIPPED=0
SYNCHMESS_TEST_CASE_TIMEOUT=${SYNCHMESS_TEST_CASE_TIMEOUT:-180} SYNCHMESS_SERVER_PID=$SERVER_PID \
    "$suite" --duration=true "$@" > >(tee "$SUITE_LOG") 2>&1 &
suite_pid=$!
wait_pid "$suite_pid" "$SUITE_TIMEOUT"
if [[ $WAIT_STATUS == timeout ]]; then
    fail "the end-to-end suite did not finish within $SUITE_TIMEOUT s: stopping the server to" \
        "release it"
    if [[ -d /proc/$suite_pid ]]; then
        for task in /proc/"$suite_pid"/task/*; do
            log "  suite thread ${task##*/}: state $(awk '{print $3}' "$task/stat" 2>/dev/null)," \
                "wchan $(cat "$task/wchan" 2>/dev/null)"
        done
    fi
    dump_server_state
    kill -KILL "$suite_pid" 2>/dev/null || true
    stop_server TERM
    wait_pid "$suite_pid" 30
    [[ $WAIT_STATUS != timeout ]] || fail "the suite could not be killed even after the server stopped"
else
    case $WAIT_STATUS in
        0) ok "the end-to-end suite passed" ;;
        77)
            ok "the end-to-end suite passed the cases it ran"
            log "SKIPPED: some cases did not run (listed at the end of the suite's output)"
            SUITE_SKIPPED=1
            ;;
        *) fail "the end-to-end suite failed (exit status $WAIT_STATUS)" ;;
    esac
fi

if [[ -n $SERVER_PID ]] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    wait_pid "$SERVER_PID" 1
    fail "the server died during the suite (status $WAIT_STATUS)"
    SERVER_PID=""
fi
if [[ -n $SERVER_PID ]]; then
    # Every test removes its groups: the listing must be empty now...
    leftover=$(cat "$SYNCH_DIR/synchmess" || true)
    if [[ -n $leftover ]]; then
        fail "groups left behind by the suite:"
        printf '%s\n' "$leftover" | sed 's/^/  /'
    else
        ok "no group left behind"
    fi
    # ...and no node may outlive its group.
    stray=()
    for node in "$SYNCH_DIR"/*; do
        case ${node##*/} in synchmess | config | '*') ;; *) stray+=("${node##*/}") ;; esac
    done
    if ((${#stray[@]})); then
        fail "device nodes left in $SYNCH_DIR after the suite (orphaned devices): ${stray[*]}"
    else
        ok "no device node left behind"
    fi
fi
stop_server TERM
check_server_log
show_file "server log" "$SERVER_LOG"
if ((FAILURES)) && grep -q 'ERROR:' "$SUITE_LOG" 2>/dev/null; then
    # doctest prints a failure as "file:line:" then "TEST SUITE/CASE" lines, then "ERROR: ...".
    echo "----- failed checks of the end-to-end suite (again, from $SUITE_LOG) -----"
    grep -B6 -A4 'ERROR:' "$SUITE_LOG" | head -n 200 | sed 's/^/  /'
fi
summary
# Reached only when every check passed (summary fails otherwise, and set -e ends the script).
((SUITE_SKIPPED == 0)) || exit 77
