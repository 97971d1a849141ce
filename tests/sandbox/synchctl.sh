#!/bin/bash
# synchctl.sh SERVER SYNCHCTL: synchctl end to end against a running server, on either
# transport (CUSE through run-cuse-test; --fuse-mount through fuse-host-run, SERVER_OPTIONS).
# Every command: what it prints, its exit status (0 done, 1 failed, 2 usage, 3 no message), and
# its error messages for the usual mistakes.
# ok, fail, same and contains always return 0: "A && ok || fail" is an if-then-else here.
# shellcheck disable=SC2015
set -euo pipefail
SCENARIO=synchctl
# shellcheck source=tests/sandbox/lib.sh
source "$(dirname "$0")/lib.sh"

take_executables SERVER SYNCHCTL -- "$@"
server=$1
synchctl=$2
read -r -a server_options <<<"${SERVER_OPTIONS:-}"
start_server "$server" "${server_options[@]}" || {
    summary || true
    exit 1
}
export SYNCHMESS_DIR=$SYNCH_DIR
group=ctl$$

# expect STATUS WHAT CMD...: runs CMD; its status must be STATUS; OUT and ERR hold its output.
OUT=""
ERR=""
expect() {
    local wanted=$1 what=$2
    shift 2
    local status=0
    OUT=$("$@" 2>"$WORK_DIR/err") || status=$?
    ERR=$(cat "$WORK_DIR/err")
    if ((status == wanted)); then
        ok "$what (exit $status)"
        return 0
    fi
    fail "$what: exit $status, wanted $wanted; stdout: '$OUT'; stderr: '$ERR'"
    return 1
}
# same WHAT ACTUAL WANTED
same() {
    if [[ $2 == "$3" ]]; then ok "$1"; else fail "$1: got '$2', wanted '$3'"; fi
}
contains() {
    if [[ $2 == *"$3"* ]]; then ok "$1"; else fail "$1: '$2' does not contain '$3'"; fi
}

# install, twice
expect 0 "install prints the device path" "$synchctl" install "$group" &&
    same "  the path" "$OUT" "$SYNCH_DIR/$group"
expect 0 "installing it again is no error" "$synchctl" install "$group" &&
    same "  and says so" "$OUT" "$SYNCH_DIR/$group (already installed)"

# send: an argument, lines from standard input, a file
expect 0 "send TEXT" "$synchctl" send "$group" "first message" || :
expect 0 "send --lines from standard input" bash -c "printf 'two\nthree\n' | '$synchctl' send $group --lines" || :
printf 'from a file\nwith two lines' >"$WORK_DIR/message"
expect 0 "send --file" "$synchctl" send "$group" --file "$WORK_DIR/message" || :

# list, stats
expect 0 "list" "$synchctl" list &&
    contains "  the table has the group with 4 messages" "$OUT" "$group"
[[ $OUT =~ $group\ +0\ +4\  ]] && ok "  owner 0, 4 messages" || fail "  row: '$OUT'"
expect 0 "list --json" "$synchctl" list --json &&
    contains "  the group as an object" "$OUT" "{\"name\": \"$group\", \"owner\": 0, \"queued_messages\": 4,"
expect 0 "list --names" "$synchctl" list --names && contains "  its name" "$OUT" "$group"
expect 0 "stats" "$synchctl" stats "$group" && contains "  4 queued" "$OUT" "queued_messages=4"
expect 0 "stats --json" "$synchctl" stats "$group" --json &&
    contains "  as JSON" "$OUT" '"queued_messages": 4, "queued_bytes": 47,'

# receive: FIFO, -n, empty, timeout
expect 0 "receive takes the oldest" "$synchctl" receive "$group" &&
    same "  first message" "$OUT" "first message"
expect 0 "receive -n 2" "$synchctl" receive "$group" -n 2 && same "  two, three" "$OUT" $'two\nthree'
expect 0 "receive --raw" "$synchctl" receive "$group" --raw &&
    same "  the file's message, whole" "$OUT" $'from a file\nwith two lines'
expect 3 "receive on an empty group: exit 3 at once" "$synchctl" receive "$group" &&
    contains "  and says so" "$ERR" "the group is empty"
start=$(now_us)
expect 3 "receive --timeout 300 waits, then exit 3" "$synchctl" receive "$group" --timeout 300 || :
elapsed_ms=$((($(now_us) - start) / 1000))
((elapsed_ms >= 240)) && ok "  it waited ($elapsed_ms ms)" || fail "  it returned after $elapsed_ms ms"

# receive --follow in the background: every message, then SIGTERM ends it with status 0.
"$synchctl" receive "$group" --follow >"$WORK_DIR/followed" 2>&1 &
follower=$!
for _ in $(seq 100); do
    [[ $("$synchctl" stats "$group") == *readers_waiting=1* ]] && break
    sleep 0.05
done
"$synchctl" send "$group" "followed 1"
"$synchctl" send "$group" "followed 2"
for _ in $(seq 100); do
    [[ $(wc -l <"$WORK_DIR/followed") -ge 2 ]] && break
    sleep 0.05
done
kill -TERM "$follower"
wait_pid "$follower" 10
same "receive --follow: exit 0 at SIGTERM" "$WAIT_STATUS" 0
same "  it printed both" "$(cat "$WORK_DIR/followed")" $'followed 1\nfollowed 2'

# Regression: a SIGTERM that arrives while receive --follow is not waiting for a message (here:
# blocked writing one to a full pipe nobody reads) must still end it; it used to go back to
# waiting for the next message, forever.
mkfifo "$WORK_DIR/full-pipe"
exec {pipe_fd}<>"$WORK_DIR/full-pipe"  # held open, never read
"$synchctl" receive "$group" --follow >"$WORK_DIR/full-pipe" 2>/dev/null &
follower=$!
big=$(printf 'x%.0s' $(seq 4000))
for _ in $(seq 24); do "$synchctl" send "$group" "$big"; done  # more than a pipe holds
for _ in $(seq 100); do
    [[ $(awk '{print $3}' "/proc/$follower/stat" 2>/dev/null) == S ]] &&
        [[ $("$synchctl" stats "$group") == *queued_messages=[1-9]* ]] && break
    sleep 0.05
done
kill -TERM "$follower"
wait_pid "$follower" 10
same "receive --follow: a SIGTERM while it writes ends it too (exit 0)" "$WAIT_STATUS" 0
[[ $WAIT_STATUS == timeout ]] && kill -KILL "$follower" 2>/dev/null
exec {pipe_fd}<&-
while "$synchctl" receive "$group" >/dev/null 2>&1; do :; done  # what it left

# the barrier: sleep in the background, awake prints how many it woke
"$synchctl" sleep "$group" &
sleeper=$!
for _ in $(seq 100); do
    [[ $("$synchctl" stats "$group") == *sleepers=1* ]] && break
    sleep 0.05
done
expect 0 "awake" "$synchctl" awake "$group" && same "  woke 1" "$OUT" 1
wait_pid "$sleeper" 10
same "sleep returns 0 once awoken" "$WAIT_STATUS" 0

# delay, revoke, flush
expect 0 "delay NAME MS sets the send delay" "$synchctl" delay "$group" 60000 || :
expect 0 "delay NAME reads it back" "$synchctl" delay "$group" && same "  60000" "$OUT" 60000
expect 0 "revoke" "$synchctl" revoke "$group" && same "  nothing to revoke" "$OUT" 0
expect 0 "flush" "$synchctl" flush "$group" && same "  nothing to flush" "$OUT" 0
expect 0 "delay 0" "$synchctl" delay "$group" 0 || :

# params: read, set as root, refused to others
expect 0 "params" "$synchctl" params && contains "  max_message_size" "$OUT" "max_message_size="
expect 0 "params --max-message-size 16" "$synchctl" params --max-message-size 16 &&
    contains "  applied" "$OUT" "max_message_size=16"
expect 1 "a message over max_message_size: exit 1" "$synchctl" send "$group" "seventeen bytes!!" &&
    contains "  EMSGSIZE, with what to do" "$ERR" "(EMSGSIZE) (larger than max_message_size"
expect 0 "params --max-message-size 4096 --json" "$synchctl" params --max-message-size 4096 --json &&
    contains "  JSON" "$OUT" '{"max_message_size": 4096,'
nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
make_reachable synchctl
expect 1 "params set by nobody: refused" "${nobody[@]}" "$synchctl" params --max-storage-size 100 || :
contains "  says why" "$ERR" "set the parameters:"
expect 1 "remove by nobody: refused" "${nobody[@]}" "$synchctl" remove "$group" || :

# usage errors and help
expect 2 "an unknown command: exit 2" "$synchctl" frobnicate && contains "  names it" "$ERR" "unknown command 'frobnicate'"
expect 2 "send without a group: exit 2" "$synchctl" send && contains "  says what is missing" "$ERR" "which group?"
expect 2 "an unknown option: exit 2" "$synchctl" receive "$group" --colour && contains "  names it" "$ERR" "unknown option --colour"
expect 2 "a bad timeout: exit 2" "$synchctl" receive "$group" --timeout soon || :
for command in install remove list send receive sleep awake delay revoke flush stats params; do
    if expect 0 "$command --help" "$synchctl" "$command" --help; then
        [[ $OUT == "usage: synchctl [--dir DIR] $command"* ]] || fail "  $command --help: '$OUT'"
    fi
done
expect 0 "help" "$synchctl" help && contains "  lists the commands" "$OUT" "commands:"
expect 0 "--version" "$synchctl" --version && contains "  names itself" "$OUT" "synchctl "
expect 1 "--dir where no server is: exit 1" "$synchctl" --dir /nonexistent list &&
    contains "  with a hint" "$ERR" "is synchmess-cuse running?"
expect 1 "a group that does not exist: exit 1" "$synchctl" receive "no-such-$group" &&
    contains "  ENOENT" "$ERR" "(ENOENT)"

# bash completion: commands, options, and the group names in the device directory
completion=$(dirname "$0")/../../cli/synchctl.bash-completion
complete_words() {
    bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _synchctl
             printf "%s\n" "${COMPREPLY[@]}"' _ "$completion" "$@"
}
same "completion: 'synchctl rec' gives receive" "$(complete_words synchctl rec)" receive
same "completion: 'synchctl receive --fo' gives --follow" "$(complete_words synchctl receive --fo)" --follow
contains "completion: 'synchctl --dir DIR stats ' offers the group" \
    "$(complete_words synchctl --dir "$SYNCH_DIR" stats "")" "$group"

# remove, twice
expect 0 "remove" "$synchctl" remove "$group" || :
expect 1 "removing it again: exit 1" "$synchctl" remove "$group" && contains "  ENOENT" "$ERR" "(ENOENT)"

stop_server TERM
summary
