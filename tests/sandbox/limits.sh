#!/bin/bash
# limits.sh SERVER CLIENT
#
# Limits and quotas (SPEC "Limits and quotas"), end to end, against a server started with small
# limits (--max-memory 4M --max-user-memory 1M --max-user-groups 4):
#   - an unprivileged uid installs groups until refused: EDQUOT after its 4th;
#   - it floods 1-byte messages into its groups until refused: EDQUOT at its 1 MiB share; a
#     second uid likewise; root, exempt from the shares, floods until the global bound: ENOSPC;
#   - root can still install a group while the users are at their limits;
#   - the server's resident memory stays under --max-memory plus the documented overhead
#     (docs/DESIGN.md "Limits and quotas": the server's own baseline + 4 MiB, and per group its
#     ring, 64 KiB here, and 40 KiB);
#   - every refusal is logged, rate-limited: thousands of refused sends and an install/remove
#     churn leave a bounded number of log lines;
#   - after the groups are drained and removed, the memory goes back to the system: RSS returns
#     to within 2 MiB of the baseline;
#   - root fragments the server's heap on purpose (delayed messages of growing sizes, every
#     other one revoked, round after round): the server's anonymous memory still stays under
#     --max-memory plus the documented overhead (the count alone let it grow ~1.5x past it).
# CLIENT is synchmess_load_client. Needs root (it runs clients as other uids with setpriv).
# SERVER_OPTIONS are added to the server's options (fuse-host-run: --fuse-mount).
set -euo pipefail
SCENARIO=limits
# shellcheck source=tests/sandbox/lib.sh
source "$(dirname "$0")/lib.sh"

take_executables SERVER CLIENT -- "$@"
server=$1
client=$2
read -ra server_options <<<"${SERVER_OPTIONS:-}"

# The sizes are small: every message is one device request (~0.7 ms in the sandbox kernel on a
# loaded machine), so the floods, the drain and the fragmenting take time in proportion; each
# limit is still exceeded many times over (~10000 heap messages a share, thousands refused).
readonly MAX_MEMORY_MIB=4 USER_MEMORY_MIB=1 USER_GROUPS=4
# A group's ring (the fast path's region) holds messages before the server's heap does, as its
# fixed memory: the smallest ring (--region-size) here, so that the floods and the drain, one
# device request a message, are about the heap and take a third less time (the sandbox kernel
# runs a request in about 0.6 ms); one record of at least 32 bytes per message.
readonly RING_KIB=64
readonly OVERHEAD_KIB=4096 PER_GROUP_KIB=$((RING_KIB + 40)) RETURNED_SLACK_KIB=2048
readonly RING_MESSAGES=$((RING_KIB * 1024 / 32))

# The unprivileged clients must reach the client binary and the devices.
make_reachable client
if ! setpriv --reuid=60001 --regid=60001 --clear-groups test -x "$client"; then  # see as_uid
    fail "uid 60001 cannot execute $client (copy it to a directory it can reach)"
    summary
    exit 1
fi

# as_uid UID: the command prefix that runs a program as UID (no supplementary groups).
as_uid() { printf '%s\n' setpriv --reuid="$1" --regid="$1" --clear-groups; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }
anon_kib() { awk '/^RssAnon:/ {print $2}' "/proc/$SERVER_PID/status"; }

# expect_line FILE PATTERN WHAT: the client's output matches PATTERN, else a failure.
expect_line() {
    local file=$1 pattern=$2 what=$3
    if grep -qE "$pattern" "$file"; then
        ok "$what: $(head -n 1 "$file")"
    else
        fail "$what: expected /$pattern/, got: $(cat "$file")"
    fi
}

start_server "$server" "${server_options[@]}" --max-memory="${MAX_MEMORY_MIB}M" \
    --max-user-memory="${USER_MEMORY_MIB}M" --max-user-groups="$USER_GROUPS" \
    --region-size="${RING_KIB}K" || {
    summary || true
    exit 1
}
baseline=$(rss_kib)
anon_baseline=$(anon_kib)
log "server RSS at start: $baseline KiB ($anon_baseline KiB anonymous)"

paths=()
for uid in 60001 60002; do
    out=$WORK_DIR/install-$uid.out
    mapfile -t run_as < <(as_uid "$uid")
    "${run_as[@]}" "$client" install-many "u$uid" >"$out" 2>&1 || true
    expect_line "$out" "^install-many: $USER_GROUPS groups, ended with EDQUOT" \
        "uid $uid installs $USER_GROUPS groups, then EDQUOT"
    user_paths=()
    for ((i = 0; i < USER_GROUPS; i++)); do user_paths+=("$SYNCH_DIR/u$uid-$i"); done
    paths+=("${user_paths[@]}")
    out=$WORK_DIR/flood-$uid.out
    run_bounded 300 "$out" "$out.err" "${run_as[@]}" "$client" flood 1 2000 "${user_paths[@]}"
    expect_line "$out" "^flood: [0-9]+ messages, ended with EDQUOT, 2000 more refused" \
        "uid $uid floods 1-byte messages until its share is full"
    sent=$(sed -n 's/^flood: \([0-9]*\) messages.*/\1/p' "$out")
    # The rings hold their share, then the server's heap: its share counts the real overhead,
    # so far fewer than ${USER_MEMORY_MIB} MiB of 1-byte messages fit there.
    heap=$((${sent:-0} - USER_GROUPS * RING_MESSAGES))
    if [[ -n $sent ]] && ((sent > 0 && heap * 64 < USER_MEMORY_MIB * 1048576)); then
        ok "uid $uid stored $sent 1-byte messages: its groups' rings, then its ${USER_MEMORY_MIB} MiB share (>= 64 bytes each)"
    else
        fail "uid $uid stored '${sent:-?}' 1-byte messages: the overhead is not counted"
    fi
done

# Root can still install while both users are at their limits.
out=$WORK_DIR/install-root.out
"$client" install root-limits >"$out" 2>&1 || true
expect_line "$out" "created=1" "root installs a group while the users are at their limits"
paths+=("$SYNCH_DIR/root-limits")
out=$WORK_DIR/flood-root.out
run_bounded 300 "$out" "$out.err" "$client" flood 1 2000 "$SYNCH_DIR/root-limits"
expect_line "$out" "^flood: [0-9]+ messages, ended with ENOSPC, 2000 more refused" \
    "root floods 1-byte messages until the global bound (ENOSPC)"

# SYNCHMESS_RSS_CHECKS=0 (CMake sets it for AddressSanitizer and ThreadSanitizer builds, whose
# allocators keep freed memory): the quotas are checked, resident memory is not.
rss_checks=${SYNCHMESS_RSS_CHECKS:-1}
((rss_checks)) || log "RSS checks not made: a sanitizer's allocator runs this server"
groups=$((2 * USER_GROUPS + 1))
full=$(rss_kib)
bound=$((baseline + MAX_MEMORY_MIB * 1024 + OVERHEAD_KIB + groups * PER_GROUP_KIB))
if ((!rss_checks)); then
    :
elif ((full <= bound)); then
    ok "server RSS with every limit reached: $full KiB <= $bound KiB (baseline $baseline + ${MAX_MEMORY_MIB} MiB + overhead)"
else
    fail "server RSS with every limit reached: $full KiB > $bound KiB"
fi

# A churn of installs and removes by an unprivileged uid, 2 s.
mapfile -t run_as < <(as_uid 60003)
"${run_as[@]}" "$client" churner "churn-limits" >"$WORK_DIR/churner.log" 2>&1 &
churner=$!
sleep 2
kill -TERM "$churner" 2>/dev/null || true
wait "$churner" 2>/dev/null || true

# Drain and remove everything; the memory must go back.
out=$WORK_DIR/drain.out
run_bounded 300 "$out" "$out.err" "$client" drain "${paths[@]}"
expect_line "$out" "^drain: [0-9]+ messages" "drained every group"
for path in "${paths[@]}"; do
    "$client" remove "${path##*/}" >/dev/null 2>&1 || fail "remove ${path##*/}"
done
returned=""
for ((i = 0; i < 50 && rss_checks; i++)); do
    returned=$(rss_kib)
    ((returned > baseline + RETURNED_SLACK_KIB)) || break
    sleep 0.1
done
if ((!rss_checks)); then
    :
elif ((returned <= baseline + RETURNED_SLACK_KIB)); then
    ok "memory returned after drain and removal: RSS $returned KiB (baseline $baseline KiB, peak $full KiB)"
else
    fail "memory not returned: RSS $returned KiB after drain and removal (baseline $baseline KiB, peak $full KiB)"
fi

# Held and freed within a second, between two of the server's looks at its memory: it goes
# back all the same.
before_burst=$(rss_kib)
out=$WORK_DIR/burst.out
printf 'max_storage_size=%d\n' $((64 << 20)) >"$SYNCH_DIR/config"  # the global bound first
run_bounded 60 "$out" "$out.err" "$client" burst burst 4000
printf 'max_storage_size=%d\n' $((1 << 20)) >"$SYNCH_DIR/config"
expect_line "$out" "^burst: [0-9]+ messages, ended with ENOSPC, [0-9]+ revoked" \
    "root holds ${MAX_MEMORY_MIB} MiB of delayed messages for a moment, revokes them, removes the group"
after_burst=""
for ((i = 0; i < 30 && rss_checks; i++)); do
    after_burst=$(rss_kib)
    ((after_burst > before_burst + 1024)) || break
    sleep 0.1
done
if ((!rss_checks)); then
    :
elif ((after_burst <= before_burst + 1024)); then
    ok "memory held for a moment is returned: RSS $after_burst KiB (before it $before_burst KiB)"
else
    fail "memory held for a moment is not returned: RSS $after_burst KiB after 3 s (before it $before_burst KiB)"
fi

# Removed groups that files still hold open (a FUSE mount keeps a file until its release;
# CUSE lets go of it with the device) linger: a uid may have at most --max-user-groups of them,
# or install, open, remove, repeat would pin the server's memory without end.
uid=60004
mapfile -t run_as < <(as_uid "$uid")
out=$WORK_DIR/install-held.out
"${run_as[@]}" "$client" install-many held >"$out" 2>&1 || true
expect_line "$out" "^install-many: $USER_GROUPS groups, ended with EDQUOT" \
    "uid $uid installs $USER_GROUPS groups, then EDQUOT"
held_fds=()
for ((i = 0; i < USER_GROUPS; i++)); do
    exec {fd}<"$SYNCH_DIR/held-$i"
    held_fds+=("$fd")
    "${run_as[@]}" "$client" remove "held-$i" >/dev/null 2>&1 || fail "uid $uid removes held-$i"
done
if [[ " ${server_options[*]}" == *" --fuse-mount"* ]]; then
    while_open=EDQUOT  # the files hold the groups until their release
else
    while_open=created=1  # the devices and their files went with the removals
fi
out=$WORK_DIR/install-while-open.out
for ((i = 0; i < 50; i++)); do  # CUSE: the last references go just after the removal's answer
    "${run_as[@]}" "$client" install held-x >"$out" 2>&1 || true
    grep -q "$while_open" "$out" && break
    sleep 0.05
done
expect_line "$out" "$while_open" \
    "$USER_GROUPS removed groups still open: uid $uid installs another: ${while_open%=1}"
for fd in "${held_fds[@]}"; do exec {fd}<&-; done
out=$WORK_DIR/install-after-close.out
for ((i = 0; i < 50; i++)); do  # FUSE sends the release after close() returned
    "${run_as[@]}" "$client" install held-y >"$out" 2>&1 || true
    grep -q "created=1" "$out" && break
    sleep 0.05
done
expect_line "$out" "created=1" "their files closed: uid $uid installs another"
for name in held-x held-y; do "$client" remove "$name" >/dev/null 2>&1 || true; done

# The log's checks, on this server's log (the fragmenting phase below has a server of its own).
refusals=$(grep -c 'refused' "$SERVER_LOG" || true)
changes=$(grep -cE "installing group|removing group|ready at" "$SERVER_LOG" || true)
stop_server TERM
check_server_log
# Rate-limited: a burst of 10, then 2 a second, for as long as each phase of refusals lasts, which
# is longer on a loaded machine (41 lines were seen there, beside the end-to-end suites); one
# line per refusal would be over 6000.
if ((refusals >= 3 && refusals <= 120)); then
    ok "refusals are logged, rate-limited: $refusals lines for over 6000 refusals"
else
    fail "refusal log lines: $refusals (expected 3..120 for over 6000 refusals)"
fi
if grep -q 'similar records suppressed' "$SERVER_LOG"; then
    ok "the log says how many similar records it suppressed"
else
    fail "no 'similar records suppressed' in the log"
fi
if ((changes <= 80)); then
    ok "an install/remove churn leaves $changes group lines in the log"
else
    fail "an install/remove churn left $changes group lines in the log (rate limit: <= 80)"
fi
head -n 60 "$SERVER_LOG" >"$WORK_DIR/server-head.log"
show_file "server log (first 60 lines)" "$WORK_DIR/server-head.log"

# Fragmentation on purpose, by root (exempt from the shares, not from the global bound), on a
# server of its own with a larger bound (what fragmentation adds grows with the bound, the
# fixed overhead does not): delayed messages stay on the server's heap; each round fills the
# bound with messages of a new, larger size into two groups in turn and revokes one group's,
# leaving holes the next size cannot use. Without the guard the heap reached 60.3 MiB for a
# 32 MiB bound, and 23.0 MiB for the 12 MiB bound used here, whose limit below is 18.4 MiB (seen
# on the host with the guard taken out; with it, 17.7 MiB); the server must refuse (ENOSPC)
# before its heap passes the documented limit.
readonly FRAGMENT_MEMORY_MIB=12 FRAGMENT_SIZES=(240 500 1000 2000 4000)
start_server "$server" "${server_options[@]}" --max-memory="${FRAGMENT_MEMORY_MIB}M" || {
    summary || true
    exit 1
}
anon_baseline=$(anon_kib)
printf 'max_storage_size=%d\n' $((64 << 20)) >"$SYNCH_DIR/config"  # the global bound first
out=$WORK_DIR/fragment.out
"$client" fragment frag "${FRAGMENT_SIZES[@]}" >"$out" 2>&1 &
fragmenter=$!
for ((i = 0; i < 1800; i++)); do  # 180 s at most
    if grep -q '^fragment:' "$out" || ! kill -0 "$fragmenter" 2>/dev/null; then break; fi
    sleep 0.1
done
anon=$(anon_kib)
kill -TERM "$fragmenter" 2>/dev/null || true
wait "$fragmenter" 2>/dev/null || true
show_file "fragmenting client" "$out"
expect_line "$out" "^fragment: [0-9]+ messages in ${#FRAGMENT_SIZES[@]} rounds, ended with ENOSPC" \
    "root fragments the heap round after round until the global bound (ENOSPC)"
if grep '^round' "$out" | grep -qv 'ended with ENOSPC'; then
    fail "a fragmenting round ended otherwise than with ENOSPC"
fi
fragment_groups=$((2 * ${#FRAGMENT_SIZES[@]}))
# The guard's limit (docs/DESIGN.md): --max-memory and a sixteenth of it, 4 MiB, 32 KiB a group,
# 64 KiB and twice max_message_size a serving thread (the default 4 workers, or FUSE's worker
# and reader); and what it may pass that by: a message per worker admitted during a reading,
# and the kernel's per-CPU counters behind statm (up to 128 KiB a CPU here): 512 KiB.
anon_bound=$((anon_baseline + FRAGMENT_MEMORY_MIB * 1024 * 17 / 16 + OVERHEAD_KIB + fragment_groups * 40 + 4 * (64 + 8) + 512))
if ((!rss_checks)); then
    :
elif ((anon <= anon_bound)); then
    ok "server heap with a fragmented bound: $anon KiB anonymous <= $anon_bound KiB (baseline $anon_baseline + ${FRAGMENT_MEMORY_MIB} MiB + overhead)"
else
    fail "server heap with a fragmented bound: $anon KiB anonymous > $anon_bound KiB (baseline $anon_baseline + ${FRAGMENT_MEMORY_MIB} MiB + overhead)"
fi
if grep -q 'the server.s heap holds more than its messages count' "$SERVER_LOG" || ((!rss_checks)); then
    ok "the heap's refusals are logged as such"
else
    fail "no refusal by the heap in the log"
fi
stop_server TERM
check_server_log
summary
