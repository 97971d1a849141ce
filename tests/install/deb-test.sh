#!/bin/bash
# deb-test.sh SOURCE_DIR: the Debian packages on this machine, from build to purge.
#
# Builds the packages (the deb preset's settings, in a scratch build directory; cpack), installs
# all four with dpkg, checks what they put in place (the library known to the loader, the
# service enabled the Debian way, pkg-config and Python finding what they need without help),
# runs the installed daemon with the installed synchctl against it (tests/sandbox/synchctl.sh,
# through run-cuse-test: the sandbox kernel where this host has no CUSE), then purges them and
# checks that nothing they installed or made is left. Needs root. Refuses to run where a
# synchmess package is installed already (it would replace and then purge it).
# ok, fail always return 0: "A && ok || fail" is an if-then-else here.
# shellcheck disable=SC2015
set -euo pipefail
(($# == 1)) || {
    echo "usage: $0 SOURCE_DIR" >&2
    exit 2
}
source=$(cd "$1" && pwd)
packages=(synchmess libsynchmess0 libsynchmess-dev python3-synchmess)
failures=0
fail() {
    echo "deb-test: FAIL $*"
    failures=$((failures + 1))
}
ok() { echo "deb-test: ok   $*"; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

(($(id -u) == 0)) || {
    echo "deb-test: must run as root (dpkg -i, dpkg --purge)" >&2
    exit 1
}
for package in "${packages[@]}"; do
    if installed "$package"; then
        echo "deb-test: $package is installed on this machine: this test would replace and" \
            "purge it; purge it first (dpkg --purge ${packages[*]})" >&2
        exit 1
    fi
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/synchmess-deb.XXXXXX")
ours=0
cleanup() {
    if ((ours)); then dpkg --purge "${packages[@]}" >/dev/null 2>&1 || true; fi
    rm -rf -- "$scratch"
}
trap cleanup EXIT

# 1. Build the packages.
build=$scratch/build
if ! {
    cmake -S "$source" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_INSTALL_PREFIX=/usr -DSYNCHMESS_BUILD_TESTS=OFF -DSYNCHMESS_BUILD_BENCHMARKS=OFF &&
        cmake --build "$build" && (cd "$build" && cpack)
} >"$scratch/build.log" 2>&1; then
    tail -n 40 "$scratch/build.log"
    fail "building the packages (above)"
    exit 1
fi
debs=()
for package in "${packages[@]}"; do
    deb=$(find "$build" -maxdepth 1 -name "${package}_*.deb" | head -n 1)
    [[ -n $deb ]] && debs+=("$deb") || fail "no ${package}_*.deb was built"
done
((failures == 0)) || exit 1
ok "built: $(for deb in "${debs[@]}"; do printf '%s ' "${deb##*/}"; done)"
depends=$(dpkg-deb -f "${debs[0]}" Depends)
[[ $depends == *libfuse3-3* && $depends == *libudev1* ]] &&
    ok "synchmess depends on: $depends" || fail "synchmess's Depends: '$depends'"

# 2. Install them.
ours=1
if dpkg -i "${debs[@]}" >"$scratch/dpkg-install.log" 2>&1; then
    ok "dpkg -i of the four packages"
else
    cat "$scratch/dpkg-install.log"
    fail "dpkg -i (above)"
    exit 1
fi
files=()
for package in "${packages[@]}"; do
    installed "$package" && ok "$package is installed" || fail "$package is not installed"
    while IFS= read -r path; do
        [[ -f $path || -L $path ]] && files+=("$path")
    done < <(dpkg -L "$package")
done
ok "${#files[@]} files installed"

version=$(/usr/sbin/synchmess-cuse --version) && [[ $version == "synchmess-cuse 0.1.0 "* ]] &&
    ok "/usr/sbin/synchmess-cuse --version: $version" || fail "synchmess-cuse --version: '$version'"
ldconfig -p | grep -q 'libsynchmess.so.0 ' && ok "the loader knows libsynchmess.so.0 (ldconfig)" ||
    fail "libsynchmess.so.0 is not in ldconfig's cache"
libs=$(pkg-config --libs synchmess 2>&1) && [[ $libs == *-lsynchmess* ]] &&
    ok "pkg-config --libs synchmess: $libs" || fail "pkg-config: '$libs'"
python=$(SYNCHMESS_DIR=/nonexistent /usr/bin/python3 -c 'import synchmess; print(synchmess.device_dir())' 2>&1) &&
    [[ $python == /nonexistent ]] && ok "Debian's python3 imports synchmess and loads libsynchmess.so.0" ||
    fail "python3 -c 'import synchmess': $python"
wants=/etc/systemd/system/multi-user.target.wants/synchmess-cuse.service
if command -v deb-systemd-helper >/dev/null; then
    [[ -L $wants ]] && ok "the service is enabled the Debian way ($wants)" ||
        fail "$wants is missing: the service was not enabled"
fi

# 3. The installed daemon, with the installed synchctl.
if "$source/tests/sandbox/run-cuse-test" --timeout 300 -- "$source/tests/sandbox/synchctl.sh" \
    /usr/sbin/synchmess-cuse /usr/bin/synchctl >"$scratch/synchctl.log" 2>&1; then
    ok "the installed synchmess-cuse and synchctl pass tests/sandbox/synchctl.sh" \
        "($(grep -c ' ok ' "$scratch/synchctl.log") checks)"
else
    cat "$scratch/synchctl.log"
    fail "the installed synchmess-cuse and synchctl (above)"
fi

# 4. Purge, and nothing is left.
if dpkg --purge "${packages[@]}" >"$scratch/dpkg-purge.log" 2>&1; then
    ours=0
    ok "dpkg --purge of the four packages"
else
    cat "$scratch/dpkg-purge.log"
    fail "dpkg --purge (above)"
fi
for package in "${packages[@]}"; do
    installed "$package" && fail "$package is still installed" || true
done
left=()
for path in "${files[@]}"; do
    [[ -e $path || -L $path ]] && left+=("$path")
done
for path in "$wants" /var/lib/systemd/deb-systemd-helper-enabled/synchmess-cuse.service.dsh-also \
    /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/synchmess-cuse.service \
    /var/lib/systemd/deb-systemd-helper-masked/synchmess-cuse.service; do
    [[ -e $path || -L $path ]] && left+=("$path")
done
((${#left[@]} == 0)) && ok "nothing is left after the purge" ||
    fail "left after the purge: ${left[*]}"

if ((failures)); then
    echo "deb-test: $failures check(s) FAILED"
    exit 1
fi
echo "deb-test: all checks passed"
