#!/bin/bash
# fuse-lifecycle.sh SERVER: the life of a --fuse-mount server, on this host (run it through
# fuse-host-run, which makes the mount directory, exports SYNCHMESS_DIR and SERVER_OPTIONS).
#   - the files show SPEC.md's modes; cat and echo > work on the config file;
#   - a second server on the same directory refuses to start, and the first keeps serving;
#   - SIGTERM: exit 0 and the directory is no longer a mount point;
#   - a server killed with SIGKILL leaves a stale mount: the next start fails with a message
#     that names it and the command that clears it; after that command, a start succeeds;
#   - a missing directory or a regular file as DIR: a clear message and a non-zero exit.
set -euo pipefail
SCENARIO=fuse-lifecycle
# shellcheck source=tests/sandbox/lib.sh
source "$(dirname "$0")/lib.sh"

take_executables SERVER -- "$@"
server=$1
dir=$SYNCH_DIR
read -r -a options <<<"${SERVER_OPTIONS:-}"
[[ ${options[*]} == *--fuse-mount=* ]] || {
    echo "$0: run me through fuse-host-run (SERVER_OPTIONS has no --fuse-mount)" >&2
    exit 2
}

is_mount_point() { grep -q " $dir " /proc/self/mountinfo; }

# expect_refusal WHAT PATTERN ARGS...: the server must exit non-zero within 10 s and say PATTERN.
expect_refusal() {
    local what=$1 pattern=$2
    shift 2
    local err status
    err=$(mktemp "$WORK_DIR/refusal.XXXXXX.log")
    run_bounded 10 /dev/null "$err" "$server" "$@"
    status=$RUN_STATUS
    if ((status == 0 || status == 124 || status == 137)); then
        fail "$what: expected a refusal, got exit status $status"
        show_file "server stderr" "$err"
    elif ! grep -qiE "$pattern" "$err"; then
        fail "$what: exit status $status, but the message does not match /$pattern/"
        show_file "server stderr" "$err"
    else
        ok "$what: exit status $status, '$(grep -iE -m1 "$pattern" "$err" | sed 's/.*error: //')'"
    fi
}

# 1. A running server: modes, cat, echo >.
start_server "$server" "${options[@]}" || exit 1
modes=$(stat -c '%n=%a' "$dir/synchmess" "$dir/config" | sed "s|$dir/||g" | tr '\n' ' ')
if [[ $modes == "synchmess=666 config=644 " ]]; then ok "modes: $modes"; else fail "modes: $modes"; fi
if grep -q '^max_message_size=' "$dir/config"; then ok "cat config"; else fail "cat config"; fi
if echo max_storage_size=65536 >"$dir/config" && grep -q '^max_storage_size=65536$' "$dir/config"; then
    ok "echo max_storage_size=65536 > config, then cat shows it"
else
    fail "echo > config did not take effect"
fi

# 2. A second server on the same directory.
expect_refusal "a second server on the same directory" "already a mount point" "${options[@]}"
if grep -q '^max_storage_size=65536$' "$dir/config"; then
    ok "the first server keeps serving"
else
    fail "the first server stopped serving after the second one's attempt"
fi

# 3. SIGTERM unmounts.
stop_server TERM
check_server_log
if is_mount_point; then fail "$dir is still a mount point after SIGTERM"; else ok "$dir unmounted"; fi

# 4. A crashed server leaves a stale mount; the next start says so and what to do.
start_server "$server" "${options[@]}" || exit 1
kill -KILL "$SERVER_PID"
wait_pid "$SERVER_PID" 10
SERVER_PID=""
if is_mount_point; then ok "SIGKILL left the mount behind (stale)"; else fail "no stale mount after SIGKILL"; fi
expect_refusal "a start on the stale mount" "stale FUSE mount.*fusermount3 -u" "${options[@]}"
if fusermount3 -u "$dir" 2>/dev/null || umount -l "$dir"; then ok "fusermount3 -u cleared it"; fi
start_server "$server" "${options[@]}" || exit 1
ok "a start after clearing the stale mount succeeds"
stop_server TERM
check_server_log

# 5. Bad directories.
expect_refusal "--fuse-mount of a missing directory" "cannot use .* as the mount point" \
    "--fuse-mount=$dir/missing"
file=$(mktemp "$WORK_DIR/not-a-dir.XXXXXX")
expect_refusal "--fuse-mount of a regular file" "not a directory" "--fuse-mount=$file"

summary
