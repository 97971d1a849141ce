#!/bin/bash
# benchmark.sh: the stress benchmark of the original kernel module, against synchmess-cuse.
#
# Starts a fresh server on a fresh FUSE mount (or, with --cuse, CUSE devices in the sandbox
# kernel), runs the load program built by CMake, stops the server with SIGTERM (exit 0 expected)
# and cleans up. It builds nothing: build first (cmake --preset default && cmake --build --preset
# default). Everything it prints is explained in benchmarks/README.md ("benchmark.sh").
set -euo pipefail

readonly PROG=benchmark.sh
here=$(cd "$(dirname "$0")" && pwd -P)
repo=$(cd "$here/.." && pwd -P)
readonly here repo

usage() {
    cat <<EOF
Usage: benchmarks/$PROG [OPTIONS] [-- PROGRAM-OPTIONS...]

Stress benchmark: N producer and N consumer threads over G groups for T seconds (immediate
sends), then delayed sends with flushes, then barrier rounds. Prints messages/s, send-to-receive
latency p50/p99, the server's CPU time and peak RSS, and checks that every message was received
exactly once and in per-producer FIFO order within its group (exit 1 otherwise). With --scale it
prints the scale figures instead (1000 groups, 10,000 sleepers, 100,000 delayed messages), each
beside its target.

The server (synchmess-cuse --fuse-mount) runs on a fresh mount under /var/tmp and is stopped
with SIGTERM at the end (anything but exit 0 fails the run). A default run takes about 10 s.

Options:
  -n, --threads N        N producer and N consumer threads (default 2)
  -g, --groups G         groups installed for the run (default 4)
  -t, --seconds T        duration of the immediate-send phase in seconds (default 5)
      --size BYTES       message size, 32..4096 (default 64)
      --rate R           pace the sends at R messages/s in total (default 0: as fast as
                         possible, so the latency includes the backlog the consumers carry)
      --delay-ms D       send delay of the delayed phase (default 100)
      --delay-seconds T  duration of the delayed phase, 0 skips it (default 2)
      --flush-ms F       delayed phase: one group flushed every F ms, in turn (default 50)
      --barrier-rounds R awake rounds per group of the barrier phase, 0 skips it (default 1000)
      --sleepers S       sleepers per group in the barrier phase (default 2)
      --one-group-pairs N  instead of the phases: immediate sends on ONE group with one
                         producer/consumer pair, then with N pairs (-t seconds each), and
                         both figures side by side (target: N pairs at least as fast)
      --poll             consumers wait in poll() and then read, as the original benchmark's
                         did, instead of waiting in read() with a receive timeout
      --scale            print the scale figures (synchmess_scale) instead of the stress load;
                         the load options above do not apply
      --cuse             run the stress load against CUSE devices: natively when /dev/cuse
                         exists and we are root, else inside the User-Mode Linux sandbox kernel
                         (tests/sandbox/run-cuse-test). UML has one slow virtual CPU: its
                         timings mean nothing, only the checks do. Needs a build without
                         AddressSanitizer (the default preset). With --scale: the thread and
                         RSS figures of CUSE devices (one CUSE session per group), e.g.
                         --scale --cuse -- --parts groups,sleepers --sleepers 1000
      --build-dir DIR    where the build is (default: build/default of the repository)
      --keep-log         print the server's log at the end even when everything passed
  -h, --help             print this help

PROGRAM-OPTIONS after "--" go to the load program unchanged, e.g.
  benchmarks/$PROG -- --drain-timeout 60
  benchmarks/$PROG --scale -- --parts delays --poll-us 50
(see build/default/benchmarks/stress/synchmess_stress --help, synchmess_scale --help).

Exit status: 0 every check passed (scale targets MET or NOT MET alike); 1 a check failed
(message lost, duplicated or out of order, a sleeper not woken, the server crashed or did not
exit 0 on SIGTERM); 2 bad command line; 3 missing binaries or the server did not start.
EOF
}

die_usage() {
    echo "$PROG: $*" >&2
    echo "Try '$PROG --help'." >&2
    exit 2
}
die_setup() {
    echo "$PROG: error: $*" >&2
    exit 3
}
say() { echo "[$PROG] $*"; }

# ---- command line ----
threads=2
groups=4
seconds=5
size=64
rate=0
delay_ms=100
delay_seconds=2
flush_ms=50
barrier_rounds=1000
sleepers=2
one_group_pairs=0
poll=0
scale=0
cuse=0
keep_log=0
build_dir=$repo/build/default
extra=()

# number NAME VALUE MIN MAX: VALUE is a decimal integer in [MIN, MAX], else a usage error.
number() {
    local name=$1 value=$2 min=$3 max=$4
    [[ $value =~ ^[0-9]+$ ]] || die_usage "$name takes a number, not '$value'"
    ((${#value} <= 9 && 10#$value >= min && 10#$value <= max)) ||
        die_usage "$name takes a number from $min to $max, not '$value'"
    echo "$((10#$value))"
}

while (($#)); do
    option=$1
    value=""
    case $option in
        --*=*)
            value=${option#*=}
            option=${option%%=*}
            set -- "$option" "$value" "${@:2}"
            ;;
    esac
    case $option in
        -n | --threads | -g | --groups | -t | --seconds | --size | --rate | --delay-ms | \
            --delay-seconds | --flush-ms | --barrier-rounds | --sleepers | --build-dir | \
            --one-group-pairs)
            (($# >= 2)) || die_usage "$option needs a value"
            value=$2
            shift 2
            ;;
        *) shift ;;
    esac
    case $option in
        -n | --threads) threads=$(number "$option" "$value" 1 1000) ;;
        -g | --groups) groups=$(number "$option" "$value" 1 1000) ;;
        -t | --seconds) seconds=$(number "$option" "$value" 1 3600) ;;
        --size) size=$(number "$option" "$value" 32 4096) ;;
        --rate) rate=$(number "$option" "$value" 0 100000000) ;;
        --delay-ms) delay_ms=$(number "$option" "$value" 1 3600000) ;;
        --delay-seconds) delay_seconds=$(number "$option" "$value" 0 3600) ;;
        --flush-ms) flush_ms=$(number "$option" "$value" 1 60000) ;;
        --barrier-rounds) barrier_rounds=$(number "$option" "$value" 0 1000000) ;;
        --sleepers) sleepers=$(number "$option" "$value" 1 1000) ;;
        --one-group-pairs) one_group_pairs=$(number "$option" "$value" 1 1000) ;;
        --poll) poll=1 ;;
        --build-dir)
            [[ -n $value ]] || die_usage "--build-dir needs a directory"
            build_dir=$value
            ;;
        --scale) scale=1 ;;
        --cuse) cuse=1 ;;
        --keep-log) keep_log=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        --)
            extra=("$@")
            break
            ;;
        *) die_usage "unknown option or argument: $option" ;;
    esac
done

# ---- binaries ----
[[ -d $build_dir ]] || die_setup "no build directory $build_dir (build first: cmake --preset" \
    "default && cmake --build --preset default, or give --build-dir)"
build_dir=$(cd "$build_dir" && pwd -P)
server=$build_dir/server/synchmess-cuse
stress=$build_dir/benchmarks/stress/synchmess_stress
scale_bin=$build_dir/benchmarks/stress/synchmess_scale
if ((scale)); then program=$scale_bin; else program=$stress; fi
for binary in "$server" "$program"; do
    [[ -x $binary ]] || die_setup "$binary is missing: build it (cmake --build $build_dir)," \
        "or point --build-dir at a build with benchmarks (SYNCHMESS_BUILD_BENCHMARKS=ON)"
done

load_args=()
if ((!scale)); then
    load_args=(--producers "$threads" --consumers "$threads" --groups "$groups"
        --seconds "$seconds" --size "$size" --rate "$rate" --delay-ms "$delay_ms"
        --delay-seconds "$delay_seconds" --flush-interval-ms "$flush_ms"
        --barrier-rounds "$barrier_rounds" --sleepers "$sleepers")
    ((one_group_pairs == 0)) || load_args+=(--one-group-pairs "$one_group_pairs")
    ((poll == 0)) || load_args+=(--poll)
fi
load_args+=(${extra[@]+"${extra[@]}"})

# ---- CUSE: the same load through real character devices ----
if ((cuse)); then
    mode=${SYNCHMESS_SANDBOX:-auto}
    if [[ $mode == auto ]]; then
        if [[ -c /dev/cuse && $(id -u) == 0 ]]; then mode=native; else mode=uml; fi
    fi
    if [[ $mode == uml ]]; then
        say "CUSE devices inside the User-Mode Linux sandbox kernel (no /dev/cuse here, or not root):"
        say "NOTE: timings inside UML are NOT meaningful (one slow virtual CPU); only the checks count."
    else
        say "CUSE devices of this host's kernel (/dev/cuse)"
    fi
    status=0
    SYNCHMESS_SANDBOX=$mode "$repo/tests/sandbox/run-cuse-test" --timeout 900 -- \
        "$here/stress/cuse-stress.sh" "$server" "$program" "${load_args[@]}" || status=$?
    if ((status == 0)); then
        say "PASS (CUSE${mode:+, $mode})"
    else
        say "FAILED (exit status $status)"
    fi
    exit "$status"
fi

# ---- FUSE: a fresh server on a fresh mount ----
[[ -c /dev/fuse ]] || die_setup "/dev/fuse is missing: load it with 'modprobe fuse' (in a" \
    "container: --device /dev/fuse)"
command -v fusermount3 >/dev/null || die_setup "fusermount3 not found (apt-get install fuse3)"

work=$(mktemp -d "${TMPDIR:-/tmp}/synchmess-bench-log.XXXXXX")
mount_dir=$(mktemp -d /var/tmp/synchmess-bench.XXXXXX)
server_log=$work/server.log
server_pid=""
failed=0

is_mounted() { grep -q " $mount_dir " /proc/self/mountinfo 2>/dev/null; }

# shellcheck disable=SC2317  # invoked by the traps
cleanup() {
    local status=$?
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if is_mounted; then
        fusermount3 -u -z "$mount_dir" 2>/dev/null || umount -l "$mount_dir" 2>/dev/null || true
    fi
    rmdir "$mount_dir" 2>/dev/null || true
    if ((status != 0 || keep_log)) && [[ -s $server_log ]]; then
        echo "----- server log ($server_log) -----"
        sed 's/^/  | /' "$server_log"
        echo "----- end of server log -----"
    fi
    rm -rf -- "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

chmod 0755 "$mount_dir"
say "server: $server --fuse-mount=$mount_dir"
"$server" --fuse-mount="$mount_dir" >"$server_log" 2>&1 &
server_pid=$!
for ((i = 0; i < 200; i++)); do
    [[ -e $mount_dir/synchmess ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        status=0
        wait "$server_pid" || status=$?
        server_pid=""
        die_setup "the server exited with status $status before its mount appeared (log below)"
    fi
    sleep 0.05
done
[[ -e $mount_dir/synchmess ]] || die_setup "the server's mount did not appear within 10 s (log below)"
say "server pid $server_pid up"

program_status=0
SYNCHMESS_DIR=$mount_dir "$program" --server-pid "$server_pid" "${load_args[@]}" || program_status=$?
case $program_status in
    0) ;;
    1) failed=1 ;;
    2) die_usage "the load program refused its options (see above)" ;;
    *) failed=1 ;;
esac

if ! kill -0 "$server_pid" 2>/dev/null; then
    status=0
    wait "$server_pid" || status=$?
    server_pid=""
    say "FAILED: the server died during the run (exit status $status)"
    exit 1
fi

kill -TERM "$server_pid"
status=timeout
for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        status=0
        wait "$server_pid" || status=$?
        break
    fi
    sleep 0.05
done
if [[ $status == timeout ]]; then
    say "FAILED: the server did not exit within 15 s of SIGTERM"
    exit 1
fi
server_pid=""
if [[ $status != 0 ]]; then
    say "FAILED: the server exited with status $status after SIGTERM (expected 0)"
    failed=1
elif is_mounted; then
    say "FAILED: the server exited but $mount_dir is still mounted"
    failed=1
else
    say "server stopped by SIGTERM: exit status 0, unmounted"
fi

if ((failed)); then
    say "FAILED (exit status of the load program: $program_status)"
    exit 1
fi
say "PASS"
