#!/bin/bash
# cuse-lifecycle.sh SERVER CLIENT
#
# The server's life cycle, through real CUSE devices (needs root and /dev/cuse: run it through
# run-cuse-test):
#   - --help exits 0 with the usage; a bad option exits 2 with a message;
#   - run as an unprivileged user, it exits non-zero at once saying it needs root;
#   - SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGALRM stop it with exit 0 and remove every node (control, config,
#     groups), and the log says which signal it was;
#   - a config change of two lines is one log record on one line;
#   - stopped under load: clients busy writing, reading, sleeping on the barrier, waiting in
#     read(), blocked in poll() and installing/removing groups all return (with an error) within
#     a bounded time; a client that hangs is named and fails the run;
#   - killed with SIGKILL, fast-path clients waiting in the shared region (a receive, the
#     barrier) return ENOTCONN within a few hundred milliseconds;
#   - hostile members forging their regions: a removal, an install beside it and a stop return
#     within a bound, and each corrupt region is logged once;
#   - the parameters start at their defaults, or at the values of the options;
#   - --max-groups: one group more fails with ENOSPC (logged), a removal makes room;
#   - a second server refuses to start while one runs, and the first keeps serving.
# CLIENT is synchmess_load_client (tests/integration/load_client.cpp). SERVER_OPTIONS are added to
# every server start: fuse-host-run sets --fuse-mount to run the same checks on a FUSE mount
# (where the "needs root" check does not apply).
set -euo pipefail
SCENARIO=lifecycle
# shellcheck source=tests/sandbox/lib.sh
source "$(dirname "$0")/lib.sh"

take_executables SERVER CLIENT -- "$@"
server=$1
client=$2
read -ra server_options <<<"${SERVER_OPTIONS:-}"
fuse_mount=0
[[ ${SERVER_OPTIONS:-} != *--fuse-mount* ]] || fuse_mount=1

# How long clients may take to return once the server got SIGTERM.
readonly CLIENT_BOUND_S=20

check_options() {
    local out=$WORK_DIR/opt.out err=$WORK_DIR/opt.err
    run_bounded 10 "$out" "$err" "$server" --help
    if [[ $RUN_STATUS == 0 ]] && grep -q '^Usage: ' "$out"; then
        ok "--help exits 0 and prints the usage"
    else
        fail "--help: exit status $RUN_STATUS (expected 0 with 'Usage: ' on stdout)"
        show_file "stdout" "$out"
        show_file "stderr" "$err"
    fi
    local bad
    for bad in --no-such-option --threads=0 --max-message-size=126977 extra-argument; do
        run_bounded 10 "$out" "$err" "$server" "$bad"
        if [[ $RUN_STATUS == 2 && -s $err ]] && grep -qi -- "--help" "$err"; then
            ok "bad command line '$bad' exits 2: $(head -n 1 "$err")"
        else
            fail "bad command line '$bad': exit status $RUN_STATUS (expected 2 and a message on stderr)"
            show_file "stderr" "$err"
        fi
    done
    if devices_taken; then fail "a command-line check left nodes behind"; fi
}

check_unprivileged() {
    if ((fuse_mount)); then
        log "not applicable: with --fuse-mount the server does not need root"
        return 0
    fi
    local out=$WORK_DIR/nobody.out err=$WORK_DIR/nobody.err
    run_bounded 10 "$out" "$err" setpriv --reuid=65534 --regid=65534 --clear-groups "$server"
    if [[ $RUN_STATUS == 124 ]]; then
        fail "run as nobody, the server did not exit within 10 s"
    elif [[ $RUN_STATUS == 0 ]]; then
        fail "run as nobody, the server exited 0 (expected a failure)"
    elif ((RUN_MS > 5000)); then
        fail "run as nobody, the server took ${RUN_MS} ms to fail (expected at once)"
    elif ! grep -qi 'root' "$err"; then
        fail "run as nobody, the server's message does not say it needs root"
        show_file "stderr" "$err"
    else
        ok "as nobody the server exits $RUN_STATUS in ${RUN_MS} ms: $(head -n 1 "$err")"
    fi
    if devices_taken; then fail "the unprivileged server left nodes behind"; fi
}

# stop_with SIGNAL: a group with an open reader, then SIGNAL; exit 0 and every node gone.
check_stop_signal() {
    local signal=$1 group=life-$1-$$
    start_server "$server" "${server_options[@]}" || return 0
    local out=$WORK_DIR/install.out
    if ! "$client" install "$group" >"$out" 2>&1; then
        fail "install $group: $(cat "$out")"
    fi
    # A client holding the group open while the server stops must not keep anything alive.
    "$client" reader "$SYNCH_DIR/$group" >"$WORK_DIR/reader-$signal.log" 2>&1 &
    local reader=$!
    stop_server "$signal" "$SYNCH_DIR/$group"
    wait_pid "$reader" "$CLIENT_BOUND_S"
    if [[ $WAIT_STATUS == timeout ]]; then
        fail "a reader of $group did not return within ${CLIENT_BOUND_S}s after SIG$signal"
        kill -KILL "$reader" 2>/dev/null || true
    fi
    if grep -q "SIG$signal received: stopping" "$SERVER_LOG"; then
        ok "the log says SIG$signal stopped it"
    else
        fail "the log does not say 'SIG$signal received: stopping'"
    fi
    check_server_log
}

# A config change is one log record on one line (the text written has two lines).
check_config_log() {
    start_server "$server" "${server_options[@]}" || return 0
    printf 'max_message_size=2000\nmax_storage_size=70000\n' >"$SYNCH_DIR/config" ||
        fail "writing two settings to $SYNCH_DIR/config failed"
    stop_server TERM
    if grep -qE '^synchmess-cuse .*parameters set .*max_message_size=2000 max_storage_size=70000$' \
        "$SERVER_LOG"; then
        ok "a config change of two lines is logged as one record on one line"
    else
        fail "the config change is not one record on one line"
        show_file "server log" "$SERVER_LOG"
    fi
    if grep -vq '^synchmess-cuse \[' "$SERVER_LOG"; then
        fail "the server log has lines that are not records: $(grep -v '^synchmess-cuse \[' "$SERVER_LOG" | head -n 3)"
    fi
    check_server_log
}

# spawn NAME MODE GROUP: a load client in the background (pids[] and names[] record it).
pids=()
names=()
spawn() {
    local target=$SYNCH_DIR/$3
    [[ $2 != churner ]] || target=$3
    "$client" "$2" "$target" >"$WORK_DIR/client-$1.log" 2>&1 &
    pids+=($!)
    names+=("$1")
}

# Clients of every kind busy when SIGTERM arrives: each must return, none may hang.
check_stop_under_load() {
    start_server "$server" "${server_options[@]}" --threads=2 || return 0
    local messages=load-msg-$$ barrier=load-barrier-$$ waiting=load-wait-$$ g out
    for g in "$messages" "$barrier" "$waiting"; do
        out=$WORK_DIR/install-$g.out
        "$client" install "$g" >"$out" 2>&1 || fail "install $g: $(cat "$out")"
    done
    pids=()
    names=()
    spawn writer1 writer "$messages"
    spawn writer2 writer "$messages"
    spawn reader1 reader "$messages"
    spawn reader2 reader "$messages"
    spawn sleeper1 sleeper "$barrier"
    spawn sleeper2 sleeper "$barrier"
    spawn sleeper3 sleeper "$barrier"
    spawn waiter1 waiter "$waiting"
    spawn waiter2 waiter "$waiting"
    spawn poller1 poller "$waiting"
    spawn churner1 churner "load-churn-$$"
    # The same kinds through the client library's fast path (the groups' shared regions).
    spawn fastwriter fast-writer "$messages"
    spawn fastreader fast-reader "$messages"
    spawn fastsleeper fast-sleeper "$barrier"
    spawn fastwaiter fast-waiter "$waiting"

    # Every client has made its first call (blocking ones are parked in the server).
    local i started=1
    for i in "${!names[@]}"; do
        if ! wait_for_line "$WORK_DIR/client-${names[i]}.log" ': started' 20; then
            fail "client ${names[i]} did not start"
            show_file "client ${names[i]}" "$WORK_DIR/client-${names[i]}.log"
            started=0
        fi
    done
    if ! "$client" wait-stats "$SYNCH_DIR/$barrier" 4 0 20000 >"$WORK_DIR/ws1" 2>&1; then
        fail "the sleepers did not park: $(cat "$WORK_DIR/ws1")"
        started=0
    fi
    if ! "$client" wait-stats "$SYNCH_DIR/$waiting" 0 3 20000 >"$WORK_DIR/ws2" 2>&1; then
        fail "the waiting readers did not park: $(cat "$WORK_DIR/ws2")"
        started=0
    fi
    ((started)) && ok "15 clients busy: 3 writers, 3 readers, 4 sleepers, 3 waiting readers, 1 poller," \
        "1 installing and removing a group (4 of them on the fast path)"
    sleep 0.3 # let the writers and readers run for a while

    local stop_us
    stop_us=$(now_us)
    stop_server TERM "$SYNCH_DIR/$messages" "$SYNCH_DIR/$barrier" "$SYNCH_DIR/$waiting"
    local hung=() bad=()
    for i in "${!pids[@]}"; do
        local left=$((CLIENT_BOUND_S - ($(now_us) - stop_us) / 1000000))
        ((left > 0)) || left=1
        wait_pid "${pids[i]}" "$left"
        if [[ $WAIT_STATUS == timeout ]]; then
            hung+=("${names[i]}")
            kill -KILL "${pids[i]}" 2>/dev/null || true
            wait_pid "${pids[i]}" 5
        elif [[ $WAIT_STATUS != 0 ]] || ! grep -q 'ended with' "$WORK_DIR/client-${names[i]}.log"; then
            bad+=("${names[i]}")
        fi
    done
    local elapsed_ms=$((($(now_us) - stop_us) / 1000))
    for i in "${!names[@]}"; do
        log "  ${names[i]}: $(tail -n 1 "$WORK_DIR/client-${names[i]}.log")"
    done
    if ((${#hung[@]})); then
        fail "clients still blocked ${CLIENT_BOUND_S}s after SIGTERM (killed): ${hung[*]}"
    fi
    if ((${#bad[@]})); then
        fail "clients that did not end with an error: ${bad[*]}"
    fi
    if ((${#hung[@]} == 0 && ${#bad[@]} == 0)); then
        ok "every client returned with an error within ${elapsed_ms} ms of SIGTERM"
    fi
    check_server_log
    if ((FAILURES)); then show_file "server log (stopped under load)" "$SERVER_LOG"; fi
}

# wait_for_line FILE REGEX SECONDS
wait_for_line() {
    local file=$1 regex=$2 seconds=$3 deadline
    deadline=$(($(now_us) + seconds * 1000000))
    until grep -qE -- "$regex" "$file" 2>/dev/null; do
        (($(now_us) < deadline)) || return 1
        sleep 0.02
    done
}

# check_initial_params EXPECTED-TEXT [OPTIONS...]: the config device right after the start.
# What a killed server leaves: a stale FUSE mount (cleared as its message says), or CUSE nodes
# the kernel removes with the server's sessions.
after_server_killed() {
    if ((fuse_mount)); then
        fusermount3 -u "$SYNCH_DIR" 2>/dev/null || umount -l "$SYNCH_DIR" 2>/dev/null ||
            fail "cannot clear the killed server's mount"
    fi
    wait_path "$SYNCH_DIR/synchmess" 10 gone || fail "the killed server's nodes stay"
}

# A server killed with SIGKILL: fast-path clients waiting in the shared region (a receive, the
# barrier) must notice (their socket ends) and return ENOTCONN, never wait on.
check_server_killed() {
    start_server "$server" "${server_options[@]}" || return 0
    local g=killed-$$ out=$WORK_DIR/install-killed.out
    "$client" install "$g" >"$out" 2>&1 || fail "install $g: $(cat "$out")"
    pids=()
    names=()
    spawn killwaiter fast-waiter "$g"
    spawn killsleeper fast-sleeper "$g"
    local i
    for i in "${!names[@]}"; do
        wait_for_line "$WORK_DIR/client-${names[i]}.log" ': started' 60 ||
            fail "client ${names[i]} did not start: $(cat "$WORK_DIR/client-${names[i]}.log")"
    done
    "$client" wait-stats "$SYNCH_DIR/$g" 1 1 20000 >"$WORK_DIR/ws-killed" 2>&1 ||
        fail "the fast-path clients did not wait: $(cat "$WORK_DIR/ws-killed")"
    local kill_us
    kill_us=$(now_us)
    kill -KILL "$SERVER_PID"
    wait_pid "$SERVER_PID" 10
    SERVER_PID=""
    for i in "${!pids[@]}"; do
        wait_pid "${pids[i]}" 5
        if [[ $WAIT_STATUS == timeout ]]; then
            fail "${names[i]} still waiting 5 s after the server was killed"
            kill -KILL "${pids[i]}" 2>/dev/null || true
            wait_pid "${pids[i]}" 5
        elif grep -q 'ended with ENOTCONN' "$WORK_DIR/client-${names[i]}.log"; then
            ok "${names[i]}: $(tail -n 1 "$WORK_DIR/client-${names[i]}.log")" \
                "($((($(now_us) - kill_us) / 1000)) ms after SIGKILL)"
        else
            fail "${names[i]}: $(tail -n 1 "$WORK_DIR/client-${names[i]}.log") (expected ENOTCONN)"
        fi
    done
    after_server_killed
}

# Hostile members forging their groups' regions on a large ring (issue 14; the load client's
# forge-* modes, tests/integration/hostile.hpp): the removal of a group whose ring never empties
# returns at once, an install of another group beside it is not held up, a server stopped while
# members forge stops within the usual bound, and each corrupt region is logged, once, with its
# group. The members forge for up to 120 s: a server that waited for them fails the bounds here.
readonly FORGED_BOUND_MS=5000
check_forged_regions() {
    # The largest ring natively; inside the sandbox kernel (slow page faults: forging 16 MiB
    # there takes the members most of a minute) one of 1 MiB.
    local ring=16M
    [[ ${UML_RUN:-} != 1 ]] || ring=1M
    start_server "$server" "${server_options[@]}" --region-size=$ring || return 0
    local victim=forged-$$ held=forged-held-$$ broken=forged-broken-$$ other=forged-other-$$
    local honest=forged-honest-$$ g out=$WORK_DIR/forged.out
    for g in "$victim" "$held" "$broken" "$honest"; do
        "$client" install "$g" >"$out" 2>&1 || fail "install $g: $(cat "$out")"
    done
    # The baseline: an honest group's removal, the same way (a load client's whole run).
    run_bounded 30 "$out" "$out" "$client" remove "$honest"
    local honest_ms=$RUN_MS
    [[ $RUN_STATUS == 0 ]] || fail "remove $honest: $(cat "$out")"
    pids=()
    names=()
    # At the lowest priority: three processes that never sleep would otherwise take the
    # sandbox's CPU from the server, which is the scheduler's business, not the region's.
    spawn_nice() {
        "$client" "$2" "$SYNCH_DIR/$3" >"$WORK_DIR/client-$1.log" 2>&1 &
        renice -n 19 -p $! >/dev/null
        pids+=($!)
        names+=("$1")
    }
    spawn_nice forger-endless forge-endless "$victim"
    spawn_nice forger-held forge-endless "$held"
    spawn_nice forger-broken forge-budget "$broken"
    local i
    for i in "${!names[@]}"; do
        wait_for_line "$WORK_DIR/client-${names[i]}.log" ': started' 60 ||
            fail "${names[i]} did not start: $(cat "$WORK_DIR/client-${names[i]}.log")"
    done
    # A device write makes the server look at the broken ring (and call it so).
    printf 'x' >"$SYNCH_DIR/$broken" || fail "a write to $broken failed"

    # The removal, and an install of another group beside it.
    local start_us remover
    start_us=$(now_us)
    "$client" remove "$victim" >"$WORK_DIR/forged-remove.out" 2>&1 &
    remover=$!
    run_bounded 30 "$out" "$out" "$client" install "$other"
    local install_ms=$RUN_MS install_status=$RUN_STATUS
    wait_pid "$remover" 30
    local remove_ms=$((($(now_us) - start_us) / 1000))
    if [[ $WAIT_STATUS != 0 ]]; then
        fail "removing $victim while a member refills its ring: $WAIT_STATUS after ${remove_ms} ms: $(cat "$WORK_DIR/forged-remove.out")"
        kill -KILL "$remover" 2>/dev/null || true
    elif ((remove_ms > FORGED_BOUND_MS)); then
        fail "removing $victim while a member refills its ring took ${remove_ms} ms (bound ${FORGED_BOUND_MS} ms)"
    else
        ok "a group whose member refills its ring without end is removed in ${remove_ms} ms" \
            "(an honest group's removal: ${honest_ms} ms)"
    fi
    if [[ $install_status != 0 ]] || ((install_ms > FORGED_BOUND_MS)); then
        fail "an install of another group beside that removal: status $install_status after ${install_ms} ms: $(cat "$out")"
    else
        ok "an install of another group beside it took ${install_ms} ms"
    fi

    # A stop while members still forge (held: a ring that never empties; broken).
    start_us=$(now_us)
    stop_server TERM
    local stop_ms=$((($(now_us) - start_us) / 1000))
    if ((stop_ms > FORGED_BOUND_MS)); then
        fail "SIGTERM took ${stop_ms} ms to stop the server while members forged (bound ${FORGED_BOUND_MS} ms)"
    else
        ok "SIGTERM stopped the server in ${stop_ms} ms while members forged"
    fi
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[i]}" 2>/dev/null; then
            fail "${names[i]} stopped before the checks were done: $(cat "$WORK_DIR/client-${names[i]}.log")"
        fi
        kill -TERM "${pids[i]}" 2>/dev/null || true
        wait_pid "${pids[i]}" 10
    done
    for g in "$victim" "$held" "$broken"; do
        local logged
        logged=$(grep -c "group '$g' (owner uid [0-9]*): .*shared ring" "$SERVER_LOG" || true)
        if [[ $logged == 1 ]]; then
            ok "the corrupt region of $g is logged once: $(grep -o "group '$g' (owner uid [0-9]*): .*" "$SERVER_LOG")"
        else
            fail "the corrupt region of $g is logged $logged times (expected once)"
        fi
    done
    check_server_log
    if ((FAILURES)); then show_file "server log (forged regions)" "$SERVER_LOG"; fi
}

check_initial_params() {
    local expected=$1
    shift
    start_server "$server" "${server_options[@]}" "$@" || return 0
    local text
    text=$(cat "$SYNCH_DIR/config" 2>&1 || true)
    if [[ $text == "$expected" ]]; then
        ok "parameters at start${*:+ with $*}: $(echo "$text" | tr '\n' ' ')"
    else
        fail "parameters at start${*:+ with $*}: got '$text', expected '$expected'"
    fi
    stop_server TERM
    check_server_log
}

check_max_groups() {
    start_server "$server" "${server_options[@]}" --max-groups=2 || return 0
    local a=maxg-a-$$ b=maxg-b-$$ c=maxg-c-$$ out=$WORK_DIR/maxg.out
    "$client" install "$a" >"$out" 2>&1 || fail "install $a: $(cat "$out")"
    "$client" install "$b" >"$out" 2>&1 || fail "install $b: $(cat "$out")"
    if "$client" install "$c" >"$out" 2>&1; then
        fail "a third group with --max-groups=2 was installed"
    elif grep -q 'error=ENOSPC' "$out"; then
        ok "--max-groups=2: the third install fails with ENOSPC"
    else
        fail "--max-groups=2: the third install failed with $(cat "$out") (expected ENOSPC)"
    fi
    [[ ! -e $SYNCH_DIR/$c ]] || fail "the refused group's node exists"
    if grep -q "install of '$c' refused (ENOSPC).*--max-groups" "$SERVER_LOG"; then
        ok "the refusal at --max-groups is logged"
    else
        fail "the refusal at --max-groups is not logged"
    fi
    "$client" remove "$a" >"$out" 2>&1 || fail "remove $a: $(cat "$out")"
    if "$client" install "$c" >"$out" 2>&1; then
        ok "after a removal the third group installs"
    else
        fail "after a removal the third group still fails: $(cat "$out")"
    fi
    stop_server TERM "$SYNCH_DIR/$b" "$SYNCH_DIR/$c"
    check_server_log
}

check_second_server() {
    start_server "$server" "${server_options[@]}" || return 0
    local first_log=$SERVER_LOG out=$WORK_DIR/second.out group=second-$$
    run_bounded 20 "$out" "$out" "$server" "${server_options[@]}"
    if [[ $RUN_STATUS == 0 || $RUN_STATUS == 124 ]]; then
        fail "a second server started while one runs: exit status $RUN_STATUS"
        show_file "second server" "$out"
    else
        ok "a second server exits $RUN_STATUS: $(grep -m1 -i 'error' "$out" || head -n 1 "$out")"
    fi
    if "$client" install "$group" >"$WORK_DIR/second-install.out" 2>&1 &&
        "$client" remove "$group" >>"$WORK_DIR/second-install.out" 2>&1; then
        ok "the first server keeps serving"
    else
        fail "the first server no longer serves: $(cat "$WORK_DIR/second-install.out")"
    fi
    SERVER_LOG=$first_log
    stop_server TERM
    check_server_log
}

check_options
check_unprivileged
check_stop_signal TERM
check_stop_signal INT
check_stop_signal HUP
check_stop_signal QUIT
check_stop_signal USR1
check_stop_signal ALRM
check_config_log
check_stop_under_load
check_server_killed
check_forged_regions
check_initial_params $'max_message_size=4096\nmax_storage_size=1048576'
check_initial_params $'max_message_size=1000\nmax_storage_size=5000' \
    --max-message-size=1000 --max-storage-size=5000
check_max_groups
check_second_server
summary
