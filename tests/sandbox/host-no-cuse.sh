#!/bin/bash
# host-no-cuse.sh SERVER
#
# On a machine without /dev/cuse (this project's hosts: the kernel has no CONFIG_CUSE), the server
# must exit 1 at once with a message that says how to fix it ('modprobe cuse'), and create
# nothing. Runs on the host, no sandbox. Where /dev/cuse exists the check cannot be made: it exits
# 77 (CTest SKIP_RETURN_CODE) saying so. As a non-root user the server's first complaint is the
# missing root: then that message is what is checked.
set -euo pipefail

(($# == 1)) || {
    echo "usage: $0 SERVER" >&2
    exit 2
}
server=$1
[[ -x $server ]] || {
    echo "$0: not executable: $server" >&2
    exit 2
}

if [[ -e /dev/cuse ]]; then
    echo "SKIPPED: this host has /dev/cuse, so the 'no CUSE' behaviour cannot be observed here" \
        "(the sandbox tests cover the server on a kernel with CUSE)"
    exit 77
fi

err=$(mktemp)
trap 'rm -f "$err"' EXIT
start=${EPOCHREALTIME/[.,]/}
status=0
timeout -k 5 10 "$server" >/dev/null 2>"$err" || status=$?
end=${EPOCHREALTIME/[.,]/}
ms=$(((10#$end - 10#$start) / 1000))
echo "synchmess-cuse without /dev/cuse (uid $(id -u)): exit status $status after ${ms} ms; stderr:"
sed 's/^/  | /' "$err"

failures=0
if ((status == 124 || status == 137)); then
    echo "FAIL: the server did not exit within 10 s"
    failures=$((failures + 1))
elif ((status != 1)); then
    echo "FAIL: exit status $status, expected 1"
    failures=$((failures + 1))
fi
if ((ms > 5000)); then
    echo "FAIL: it took ${ms} ms to give up (expected at once)"
    failures=$((failures + 1))
fi
if [[ $(id -u) == 0 ]]; then
    expected='modprobe cuse'
else
    expected='root'
fi
if ! grep -q "$expected" "$err"; then
    echo "FAIL: the message does not mention '$expected'"
    failures=$((failures + 1))
fi
if [[ -e /dev/synch/synchmess || -e /dev/synch/config ]]; then
    echo "FAIL: /dev/synch nodes exist after the failed start"
    failures=$((failures + 1))
fi
if ((failures)); then exit 1; fi
echo "ok: exits 1 at once and says '$expected'"
