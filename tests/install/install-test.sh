#!/bin/bash
# install-test.sh BUILD_DIR SOURCE_DIR
#
# Stages an install of BUILD_DIR (DESTDIR=<tmp> cmake --install --prefix /usr) and checks it as
# a user building against it would: every file under the stage (nothing written elsewhere), the
# udev rule under <prefix>/lib/udev/rules.d, libsynchmess.so with its soname exporting only the
# synch_* API, then builds the consumer program (tests/install/consumer) with pkg-config and with
# find_package(synchmess), shared and static, and runs each.
# ok, fail and run_consumer always return 0, so "A && ok || fail" is an if-then-else here.
# shellcheck disable=SC2015
set -euo pipefail
(($# == 2)) || {
    echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2
    exit 2
}
build=$1
source=$2
stage=$(mktemp -d "${TMPDIR:-/tmp}/synchmess-install.XXXXXX")
trap 'rm -rf -- "$stage"' EXIT
failures=0
fail() {
    echo "install-test: FAIL $*"
    failures=$((failures + 1))
}
ok() { echo "install-test: ok   $*"; }

DESTDIR=$stage/root cmake --install "$build" --prefix /usr >"$stage/install.log"
root=$stage/root
# The manifest names each file by its place without DESTDIR: every one must lie under DESTDIR.
manifest=$build/install_manifest.txt
missing=()
while IFS= read -r file; do
    [[ -e $root$file || -L $root$file ]] || missing+=("$file")
done <"$manifest"
if ((${#missing[@]})); then
    fail "installed outside DESTDIR (or not at all): ${missing[*]}"
else
    ok "$(wc -l <"$manifest") files, all under DESTDIR"
fi
libdir=$(cd "$root/usr" && dirname "$(find . -name 'libsynchmess.so' | head -n 1)")
libdir=$root/usr/${libdir#./}
for file in usr/sbin/synchmess-cuse usr/lib/udev/rules.d/50-synchmess.rules \
    usr/include/synchmess/client.h usr/lib/systemd/system/synchmess-cuse.service \
    usr/lib/systemd/system/synchmess-fuse@.service usr/lib/modules-load.d/synchmess.conf \
    usr/share/doc/synchmess/README.md usr/bin/synchctl \
    usr/share/bash-completion/completions/synchctl usr/lib/python3/dist-packages/synchmess/__init__.py \
    usr/share/man/man8/synchmess-cuse.8.gz usr/share/man/man1/synchctl.1.gz \
    usr/share/man/man7/synchmess.7.gz usr/share/man/man1/synchmess-test-app.1.gz \
    usr/share/man/man3/libsynchmess.3.gz usr/share/doc/libsynchmess0/copyright; do
    [[ -e $root/$file ]] && ok "/$file" || fail "/$file is missing"
done
for file in libsynchmess.so libsynchmess.so.0 libsynchmess.a pkgconfig/synchmess.pc \
    cmake/synchmess/synchmessConfig.cmake; do
    [[ -e $libdir/$file ]] && ok "${libdir#"$root"}/$file" || fail "${libdir#"$root"}/$file is missing"
done

soname=$(readelf -d "$libdir/libsynchmess.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ $soname == libsynchmess.so.0 ]] && ok "soname $soname" || fail "soname is '$soname'"
exported=$(nm -D --defined-only "$libdir/libsynchmess.so" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' |
    sed 's/@.*//' | sort -u)
stray=$(grep -v '^synch_' <<<"$exported" | grep -v '^SYNCHMESS_0$' || true)
if [[ -n $stray ]]; then
    fail "libsynchmess.so exports more than synch_*: $(tr '\n' ' ' <<<"$stray")"
else
    ok "libsynchmess.so exports $(wc -l <<<"$exported") symbols, all synch_*"
fi
needed=$(readelf -d "$libdir/libsynchmess.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
[[ $needed != *stdc++* ]] && ok "needs only: $needed" || fail "needs the C++ runtime: $needed"

# The systemd units: ExecStart= where this install put the server; no warning from
# systemd-analyze verify (run on copies that name the staged server, as the real path is not
# there); the CUSE unit's sandbox rated 4.0 or lower by systemd-analyze security.
units=$root/usr/lib/systemd/system
for unit in synchmess-cuse.service synchmess-fuse@.service; do
    grep -q '^ExecStart=/usr/sbin/synchmess-cuse' "$units/$unit" &&
        ok "$unit: ExecStart=/usr/sbin/synchmess-cuse" || fail "$unit: ExecStart= is not /usr/sbin"
    copy=$stage/${unit/@/@run-synch}
    sed "s|^ExecStart=/usr/sbin/synchmess-cuse|ExecStart=$root/usr/sbin/synchmess-cuse|" \
        "$units/$unit" >"$copy"
    if ! command -v systemd-analyze >/dev/null; then
        fail "systemd-analyze is missing (tools/install-deps.sh installs systemd)"
        continue
    fi
    # (MANPATH: its Documentation=man: pages are the staged ones.)
    complaints=$(MANPATH=$root/usr/share/man systemd-analyze verify "$copy" 2>&1) &&
        [[ -z $complaints ]] &&
        ok "$unit: systemd-analyze verify is silent" ||
        fail "$unit: systemd-analyze verify: $complaints"
done
exposure=$(systemd-analyze security --offline=true --threshold=40 "$units/synchmess-cuse.service" \
    2>&1 | tail -n 1) &&
    ok "synchmess-cuse.service: ${exposure#→ }" ||
    fail "synchmess-cuse.service rated above 4.0: $exposure"

run_consumer() {
    local what=$1
    shift
    local out
    if out=$(LD_LIBRARY_PATH=$libdir "$@" 2>&1) && [[ $out == "consumer: ok" ]]; then
        ok "$what runs"
    else
        fail "$what: $out"
    fi
}

export PKG_CONFIG_PATH=$libdir/pkgconfig
flags=$(pkg-config --cflags --libs synchmess)
# shellcheck disable=SC2086  # the flags are words
cc -Wall -Werror -o "$stage/consumer-pc" "$source/tests/install/consumer/consumer.c" $flags &&
    ok "built with pkg-config: $flags" || fail "cc with pkg-config flags '$flags'"
if readelf -d "$stage/consumer-pc" 2>/dev/null | grep -q 'NEEDED.*libsynchmess.so.0'; then
    run_consumer "the pkg-config build (libsynchmess.so.0)" "$stage/consumer-pc"
else
    fail "the pkg-config build does not need libsynchmess.so.0"
fi
static_flags=$(pkg-config --cflags --libs --static synchmess)
# shellcheck disable=SC2086
cc -Wall -Werror -o "$stage/consumer-pc-static" "$source/tests/install/consumer/consumer.c" \
    -Wl,-Bstatic $static_flags -Wl,-Bdynamic &&
    run_consumer "the pkg-config static build" "$stage/consumer-pc-static" ||
    fail "cc with --static pkg-config flags"

if cmake -S "$source/tests/install/consumer" -B "$stage/consumer-build" \
    -DCMAKE_PREFIX_PATH="$root/usr" >"$stage/consumer-cmake.log" 2>&1 &&
    cmake --build "$stage/consumer-build" >>"$stage/consumer-cmake.log" 2>&1; then
    ok "built with find_package(synchmess)"
    run_consumer "the find_package build, synchmess::synchmess" "$stage/consumer-build/consumer_shared"
    run_consumer "the find_package build, synchmess::synchmess_static" \
        "$stage/consumer-build/consumer_static"
else
    fail "the find_package build:"
    sed 's/^/  /' "$stage/consumer-cmake.log"
fi

# The Python module, from the staged copy, loading the staged library.
if out=$(PYTHONPATH=$root/usr/lib/python3/dist-packages SYNCHMESS_LIBRARY=$libdir/libsynchmess.so.0 \
    SYNCHMESS_DIR=/nonexistent/synchmess-consumer python3 -c '
import errno, synchmess
try:
    synchmess.Group("consumer")
except FileNotFoundError as error:
    assert error.errno == errno.ENOENT
    print("python: ok")
' 2>&1) && [[ $out == "python: ok" ]]; then
    ok "the staged Python module imports and loads the staged library"
else
    fail "the staged Python module: $out"
fi

if ((failures)); then
    echo "install-test: $failures check(s) FAILED"
    exit 1
fi
echo "install-test: all checks passed"
