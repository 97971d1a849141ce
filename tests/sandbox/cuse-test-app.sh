#!/bin/bash
# cuse-test-app.sh SERVER APP
#
# Runs the user's test application (synchmess-test-app, examples/test_app.c) against a real
# server through CUSE, as root and then as the unprivileged user nobody (uid 65534): both runs
# must pass. Then the server is stopped with SIGTERM (exit 0, nodes gone). Needs root and
# /dev/cuse: run it through run-cuse-test.
set -euo pipefail
SCENARIO=test-app
# shellcheck source=tests/sandbox/lib.sh
source "$(dirname "$0")/lib.sh"

take_executables SERVER APP -- "$@"
server=$1
app=$2

read -ra server_options <<<"${SERVER_OPTIONS:-}"
start_server "$server" "${server_options[@]}" || {
    summary || true
    exit 1
}

# run_app WHO CMD...: runs the app (bounded), prints its output, records the outcome.
run_app() {
    local who=$1
    shift
    local out=$WORK_DIR/app-$who.log status=0
    log "running the test app as $who"
    timeout -k 5 120 "$@" --timeout 90 >"$out" 2>&1 || status=$?
    show_file "synchmess-test-app as $who" "$out"
    case $status in
        0) ok "synchmess-test-app passed as $who" ;;
        124 | 137) fail "synchmess-test-app as $who did not finish within 120 s (killed)" ;;
        *) fail "synchmess-test-app as $who failed (exit status $status)" ;;
    esac
}

run_app root "$app"
nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
make_reachable app
if "${nobody[@]}" test -x "$app"; then
    run_app nobody "${nobody[@]}" "$app"
else
    fail "nobody cannot execute $app (its directory or file modes keep uid 65534 out)"
fi

leftover=$(cat "$SYNCH_DIR/synchmess" 2>/dev/null || true)
if [[ -n $leftover ]]; then
    fail "groups left behind by the test app:"
    printf '%s\n' "$leftover" | sed 's/^/  /'
fi
stop_server TERM
check_server_log
show_file "server log" "$SERVER_LOG"
summary
