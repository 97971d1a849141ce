#!/usr/bin/env bash
# Installs synchmess's dependencies from Debian 12's own packages (nothing else is downloaded, at
# install or at build time). Safe to re-run: it only calls apt-get when a package is missing.
# Needs root, or sudo.
#
#   install-deps.sh          everything: building, running the demo, and every test and benchmark
#   install-deps.sh --run    only what building the server, the library and the test application
#                            and running the demo need (the README's main-job command)
set -euo pipefail

run_packages=(
  gcc g++ cmake ninja-build pkg-config  # toolchain (GCC 12, CMake 3.25); gcc also builds uml-run's shim
  libfuse3-dev fuse3                 # CUSE/FUSE server side (libfuse 3.14)
  libudev-dev udev                   # waiting for udev after creating a device; udevd in the sandbox
  libfmt-dev                         # server logging
  libsystemd-dev                     # sd_notify: READY/STOPPING for the Type=notify unit
  user-mode-linux kmod               # the sandbox kernel with cuse.ko, where the host has no CUSE
  util-linux procps                  # setpriv (the demo's unprivileged run), ps
)
test_packages=(
  doctest-dev                        # unit tests
  libbenchmark-dev                   # benchmarks
  iceoryx libiceoryx-binding-c-dev   # Eclipse iceoryx 2.0 side by side in synchmess_process_bench
  clang-format shellcheck            # the format check and the harness scripts' lint
  clang libclang-rt-14-dev           # the fuzz preset: libFuzzer with ASan and UBSan (clang 14)
  systemd                            # systemd-analyze: the units' security score (a test)
  python3                            # the Python module's tests
  man-db groff-base                  # man --warnings: the man pages' check
  dpkg-dev file binutils             # cpack -G DEB: dpkg-shlibdeps, file, readelf (the .deb test)
  init-system-helpers                # deb-systemd-helper: the package enables its service
)

case "${1:-}" in
  "") packages=("${run_packages[@]}" "${test_packages[@]}") ;;
  --run) packages=("${run_packages[@]}") ;;
  *) echo "usage: $0 [--run]   (--run: only what building and running the demo need)" >&2; exit 2 ;;
esac

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  as_root=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
