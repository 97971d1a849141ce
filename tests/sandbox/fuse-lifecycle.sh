#!/bin/bash
# fuse-lifecycle.sh SERVER CLIENT: the life of a --fuse-mount server, on this host (run it
# through fuse-host-run, which makes the mount directory, exports SYNCHMESS_DIR and
# SERVER_OPTIONS). CLIENT is synchmess_load_client.
#   - the files show SPEC.md's modes; cat and echo > work on the config file;
#   - a second server on the same directory refuses to start, and the first keeps serving;
#   - SIGTERM: exit 0 and the directory is no longer a mount point;
#   - a server killed with SIGKILL leaves a stale mount: the next start fails with a message
#     that names it and the command that clears it; after that command, a start succeeds;
#   - a missing directory or a regular file as DIR: a clear message and a non-zero exit;
#   - SIGHUP, SIGQUIT, SIGUSR1, SIGALRM: a clean stop, no stale mount; SIGUSR2 does nothing;
#   - a DIR too long for DIR/<63-byte name> to fit SYNCH_PATH_MAX is refused; one of exactly the
#     longest length works, and an install there answers the whole path;
#   - a DIR that holds files is refused (it would hide them), unless --allow-nonempty.
set -euo pipefail
SCENARIO=fuse-lifecycle
# shellcheck source=tests/sandbox/lib.sh
source "$(dirname "$0")/lib.sh"

take_executables SERVER CLIENT -- "$@"
server=$1
client=$2
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

# 6. SIGHUP (an ssh session that drops), SIGQUIT (Ctrl-\), SIGUSR1 and SIGALRM are clean
# stops, not a stale mount; SIGUSR2 (the reader's own wake-up) does nothing.
for signal in HUP QUIT USR1 ALRM; do
    start_server "$server" "${options[@]}" || exit 1
    stop_server "$signal"
    if is_mount_point; then
        fail "$dir is still mounted after SIG$signal"
    else
        ok "SIG$signal unmounted $dir"
    fi
done
start_server "$server" "${options[@]}" || exit 1
kill -USR2 "$SERVER_PID"
sleep 0.3 # the subject: a span in which the signal must not stop it (nothing to wait on)
if kill -0 "$SERVER_PID" 2>/dev/null && is_mount_point &&
    timeout 5 cat "$dir/config" 2>/dev/null | grep -q '^max_message_size='; then
    ok "SIGUSR2 from outside leaves the server serving"
else
    fail "SIGUSR2 from outside stopped the server"
fi
stop_server TERM

# serve_at DIR ARGS...: a server on DIR (not $dir) until stop_at; its pid in other_pid.
other_pid=""
other_log=$WORK_DIR/other-server.log
serve_at() {
    local at=$1
    shift
    "$server" --fuse-mount="$at" "$@" >"$other_log" 2>&1 &
    other_pid=$!
    if ! wait_path "$at/synchmess" 20; then
        fail "the server on $at did not come up"
        show_file "server log" "$other_log"
    fi
}
stop_at() {
    kill -TERM "$other_pid" 2>/dev/null || true
    wait_pid "$other_pid" 15
    [[ $WAIT_STATUS == 0 ]] || fail "the server on $1 exited with $WAIT_STATUS after SIGTERM"
    other_pid=""
}

# 7. The longest mount directory: 63 bytes (127 = 63 + '/' + 63-byte name; + NUL = 128).
base=$(mktemp -d "${TMPDIR:-/var/tmp}/synchmess-long.XXXXXX")
chmod 0755 "$base"
longest=$base/$(printf 'd%.0s' $(seq 1 $((63 - ${#base} - 1))))
mkdir "$longest"
too_long=${longest}x
mkdir "$too_long"
expect_refusal "--fuse-mount of a ${#too_long}-byte directory" "bytes long.*at most 63 bytes" \
    "--fuse-mount=$too_long"
serve_at "$longest"
name=$(printf 'n%.0s' $(seq 1 63))
out=$WORK_DIR/install-long.out
SYNCHMESS_DIR=$longest "$client" install "$name" >"$out" 2>&1 || true
if [[ $(cat "$out") == "$longest/$name created=1" && -e $longest/$name ]]; then
    ok "a ${#longest}-byte mount directory serves a 63-byte group at its whole ${#longest}+64-byte path"
else
    fail "install of a 63-byte name under a ${#longest}-byte directory: $(cat "$out")"
fi
stop_at "$longest"

# 8. A directory that holds files.
full=$base/full
mkdir "$full"
echo precious >"$full/kept.txt"
expect_refusal "--fuse-mount of a directory that holds files" "not empty .*kept.txt.*--allow-nonempty" \
    "--fuse-mount=$full"
serve_at "$full" --allow-nonempty
if [[ -e $full/synchmess && ! -e $full/kept.txt ]]; then
    ok "--allow-nonempty mounts over the files (hidden while it runs)"
else
    fail "--allow-nonempty: the mount did not come up over $full"
fi
stop_at "$full"
if [[ $(cat "$full/kept.txt" 2>/dev/null) == precious ]]; then
    ok "the files are back after the server stopped"
else
    fail "$full/kept.txt is not back after the server stopped"
fi
rm -rf "$base"

summary
