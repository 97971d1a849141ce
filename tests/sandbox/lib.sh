# shellcheck shell=bash
# Shared helpers of the CUSE end-to-end scripts (cuse-*.sh). Sourced, not run.
#
# The scripts run as root where /dev/cuse exists: inside the UML guest (uml-run) or natively
# (run-cuse-test decides). Every wait is bounded; whatever hangs is named, killed, and fails the
# run. Output goes to stdout, which uml-run (or CTest directly) hands back.

SYNCH_DIR=${SYNCHMESS_DIR:-/dev/synch}
FAILURES=0
SERVER_PID=""
SERVER_LOG=""
# Logs (server, clients) go to SYNCHMESS_E2E_LOG_DIR when it is set (run-cuse-test sets it to a
# host directory, so they survive a guest killed on timeout), else to a temporary directory.
if [[ -n ${SYNCHMESS_E2E_LOG_DIR:-} ]]; then
    mkdir -p "$SYNCHMESS_E2E_LOG_DIR"
    WORK_DIR=$SYNCHMESS_E2E_LOG_DIR
    KEEP_WORK_DIR=1
else
    WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/synchmess-e2e.XXXXXX")
    KEEP_WORK_DIR=0
fi
readonly SYNCH_DIR WORK_DIR KEEP_WORK_DIR

# The scripts take the paths of executables: "take_executables NAMES... -- PATHS..." checks that
# there are as many paths as names and that each is executable, or prints the usage and exits 2.
take_executables() {
    local -a names=()
    while [[ $1 != -- ]]; do
        names+=("$1")
        shift
    done
    shift
    (($# == ${#names[@]})) || {
        echo "usage: $0 ${names[*]}" >&2
        exit 2
    }
    local binary
    for binary in "$@"; do
        [[ -x $binary ]] || {
            echo "$0: not executable: $binary" >&2
            exit 2
        }
    done
}

# Microseconds since the epoch, without forking.
now_us() {
    local t=${EPOCHREALTIME/[.,]/}
    echo "$((10#$t))"
}
START_US=$(now_us)
readonly START_US

log() {
    local elapsed=$((($(now_us) - START_US) / 1000))
    printf '[%s +%d.%03ds] %s\n' "${SCENARIO:-e2e}" $((elapsed / 1000)) $((elapsed % 1000)) "$*"
}
ok() { log "ok   $*"; }
fail() {
    log "FAIL $*"
    FAILURES=$((FAILURES + 1))
}

# run_bounded SECONDS OUT ERR CMD...: runs CMD with a time bound; sets RUN_STATUS (124 when it
# had to be killed) and RUN_MS.
# shellcheck disable=SC2034  # RUN_STATUS and RUN_MS are read by the scripts that source this
run_bounded() {
    local seconds=$1 out=$2 err=$3
    shift 3
    local start
    start=$(now_us)
    RUN_STATUS=0
    timeout -k 5 "$seconds" "$@" >"$out" 2>"$err" || RUN_STATUS=$?
    RUN_MS=$((($(now_us) - start) / 1000))
}

# Prints a file with a header, indented (for logs of the server and of clients).
show_file() {
    local title=$1 file=$2
    echo "----- $title ($file) -----"
    if [[ -s $file ]]; then sed 's/^/  | /' "$file"; else echo "  (empty)"; fi
    echo "----- end of $title -----"
}

# wait_pid PID SECONDS: waits for a child of this shell (started with &) to end; sets
# WAIT_STATUS to its exit status, or to "timeout" (the process is left running).
WAIT_STATUS=""
wait_pid() {
    local pid=$1 seconds=$2 deadline
    deadline=$(($(now_us) + seconds * 1000000))
    # bash reaps finished children at once (SIGCHLD) and keeps their status for "wait".
    while kill -0 "$pid" 2>/dev/null; do
        if (($(now_us) >= deadline)); then
            WAIT_STATUS=timeout
            return 0
        fi
        sleep 0.02
    done
    WAIT_STATUS=0
    wait "$pid" 2>/dev/null || WAIT_STATUS=$?
}

# Waits up to $2 seconds for path $1 to exist (-e) or, with $3 = gone, not to exist.
wait_path() {
    local path=$1 seconds=$2 want=${3:-exists} deadline
    deadline=$(($(now_us) + seconds * 1000000))
    for (( ; ; )); do
        if [[ $want == exists && -e $path ]] || [[ $want == gone && ! -e $path ]]; then
            return 0
        fi
        if (($(now_us) >= deadline)); then return 1; fi
        sleep 0.02
    done
}

# True if a synchmess-cuse other than ours holds the devices (a native host with one running).
devices_taken() { [[ -e $SYNCH_DIR/synchmess || -e $SYNCH_DIR/config ]]; }

# start_server SERVER [OPTIONS...]: starts the server as root in the background, logs to a new
# file, waits (20 s at most) for both nodes. Returns 1 (after printing the log) when it does not
# come up.
start_server() {
    local server=$1
    shift
    SERVER_LOG=$(mktemp "$WORK_DIR/server.XXXXXX.log")
    if devices_taken; then
        fail "$SYNCH_DIR/synchmess or config already exists: is another synchmess-cuse running?"
        return 1
    fi
    "$server" "$@" >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local deadline=$(($(now_us) + 20 * 1000000))
    while ! [[ -e $SYNCH_DIR/synchmess && -e $SYNCH_DIR/config ]]; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            local status=0
            wait "$SERVER_PID" || status=$?
            fail "the server exited with status $status before its nodes appeared"
            show_file "server log" "$SERVER_LOG"
            SERVER_PID=""
            return 1
        fi
        if (($(now_us) >= deadline)); then
            fail "the server's nodes did not appear within 20 s"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
            wait "$SERVER_PID" 2>/dev/null || true
            show_file "server log" "$SERVER_LOG"
            SERVER_PID=""
            return 1
        fi
        sleep 0.02
    done
    log "server started (pid $SERVER_PID): $*"
}

# stop_server SIGNAL [NODE...]: sends SIGNAL, expects exit 0 within 15 s and the nodes gone
# (extra node paths may be given to check as well). Records failures (FAILURES).
stop_server() {
    local signal=$1
    shift
    [[ -n $SERVER_PID ]] || return 0
    local before=$FAILURES node
    kill -s "$signal" "$SERVER_PID"
    wait_pid "$SERVER_PID" 15
    if [[ $WAIT_STATUS == timeout ]]; then
        fail "the server did not exit within 15 s of SIG$signal (killing it)"
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait_pid "$SERVER_PID" 10
    elif [[ $WAIT_STATUS != 0 ]]; then
        fail "the server exited with status $WAIT_STATUS after SIG$signal (expected 0)"
    else
        ok "SIG$signal stopped the server with exit status 0"
    fi
    SERVER_PID=""
    for node in "$SYNCH_DIR/synchmess" "$SYNCH_DIR/config" "$@"; do
        if ! wait_path "$node" 5 gone; then fail "$node still exists after the server stopped"; fi
    done
    local remaining=()
    for node in "$SYNCH_DIR"/*; do
        if [[ -e $node ]]; then remaining+=("${node##*/}"); fi
    done
    if ((${#remaining[@]})); then
        fail "nodes left in $SYNCH_DIR after the server stopped: ${remaining[*]}"
    fi
    if ((FAILURES == before)); then ok "nodes removed after SIG$signal"; fi
    return 0
}

# Fails when the current server log shows a sanitizer report.
check_server_log() {
    if grep -qE 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|ThreadSanitizer|runtime error:' "$SERVER_LOG"; then
        fail "the server log contains a sanitizer report"
    fi
}

# Prints what the server is doing: its threads' states and its descriptors, with the epoll
# registrations (fdinfo "tfd: FD events: MASK data: ID"; a one-shot entry that fired and was not
# re-armed shows no event bits). For hangs.
dump_server_state() {
    [[ -n $SERVER_PID && -d /proc/$SERVER_PID ]] || return 0
    local task fd target
    log "server state (pid $SERVER_PID):"
    for task in /proc/"$SERVER_PID"/task/*; do
        echo "  thread ${task##*/} $(cat "$task/comm" 2>/dev/null): state" \
            "$(awk '{print $3}' "$task/stat" 2>/dev/null), wchan $(cat "$task/wchan" 2>/dev/null)"
    done
    if command -v gdb >/dev/null; then
        echo "  user-space stacks (gdb):"
        timeout 60 gdb -p "$SERVER_PID" -batch -nx -ex "set pagination off" \
            -ex "thread apply all bt 25" 2>&1 | grep -E '^(Thread|#)' | sed 's/^/    /' || true
    fi
    for fd in /proc/"$SERVER_PID"/fd/*; do
        target=$(readlink "$fd" 2>/dev/null || true)
        echo "  fd ${fd##*/} -> $target"
        if [[ $target == anon_inode:\[eventpoll\] ]]; then
            grep '^tfd:' "/proc/$SERVER_PID/fdinfo/${fd##*/}" 2>/dev/null | sed 's/^/      /'
        fi
    done
}

# An emergency stop for traps: no server or client is left behind, whatever happened.
cleanup_processes() {
    local pid
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait_pid "$SERVER_PID" 10
        if [[ $WAIT_STATUS == timeout ]]; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
        SERVER_PID=""
    fi
    for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null || true; done
}

# make_reachable VAR: unprivileged runs (uid 65534 or others, through setpriv) need to execute
# the program in VAR. A checkout in a directory other users cannot traverse (a 'mktemp -d'
# directory, a private home) keeps them out, so when uid 65534 cannot execute it, the program is
# copied to a scratch directory every user can reach and VAR is set to the copy.
REACHABLE_DIR=""
make_reachable() {
    local -n program_path=$1
    if setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$program_path"; then
        return 0
    fi
    if [[ -z $REACHABLE_DIR ]]; then
        REACHABLE_DIR=$(mktemp -d /var/tmp/synchmess-bin.XXXXXX)
        chmod 0755 "$REACHABLE_DIR"
    fi
    local copy
    copy=$REACHABLE_DIR/$(basename "$program_path")
    cp "$program_path" "$copy"
    chmod 0755 "$copy"
    log "uid 65534 cannot reach $program_path (a private checkout?): running a copy, $copy"
    program_path=$copy
}

finish() {
    cleanup_processes
    if [[ -n $REACHABLE_DIR ]]; then rm -rf -- "$REACHABLE_DIR"; fi
    if ((!KEEP_WORK_DIR)); then rm -rf -- "$WORK_DIR"; fi
}
trap finish EXIT

summary() {
    if ((FAILURES)); then
        log "$FAILURES check(s) FAILED"
        return 1
    fi
    log "all checks passed"
}
