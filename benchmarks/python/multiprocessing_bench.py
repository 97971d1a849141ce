#!/usr/bin/env python3
"""Python's multiprocessing through one synchmess group, beside multiprocessing's own queue.

A producer process sends MESSAGES messages of SIZE bytes to a consumer process through one
group, the Group handed to both by multiprocessing:
  synchmess fork     the Group inherited across fork() (the fork start method)
  synchmess spawn    the Group pickled to spawned children (its descriptor passed along)
  synchmess device   as fork, with SYNCHMESS_FASTPATH=0 in the children: the device path
  mp.Queue           multiprocessing.Queue (fork), the baseline a Python user has
Each figure is messages/s of the whole exchange (the consumer's first receive to its last),
the median of PASSES passes, the variants seconds apart in each pass; ratios are per pass.
Targets (issue 16): synchmess fork and spawn at the library's speed, not the device's (both
far above the device figure), and within 10 % of each other.

The group's max_storage_size is set for the run (--max-storage, default 128 KiB: 2048 messages
of 64 B, what synchmess_process_bench uses, and what the default 256 KiB ring holds) and put
back after. A larger budget than the ring holds lets a producer that runs ahead fill the
server's overflow behind the ring, whose messages go through the server (SPEC "Fast path"):
--max-storage 1M (the default parameter) shows that case.

Needs a running server (SYNCHMESS_DIR, default /dev/synch) and the client library
(SYNCHMESS_LIBRARY, PYTHONPATH=python), or --server PATH to start one on a fresh FUSE mount
(as root). benchmarks/README.md says how to read it.
"""

import argparse
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import synchmess


def _produce(group, messages, size):
    payload = b"p" * size
    for _ in range(messages):
        while True:
            try:
                group.send(payload)
                break
            except OSError as error:  # full: the consumer's turn (as synchmess_process_bench)
                if error.errno != 28:  # ENOSPC
                    raise
                os.sched_yield()
    group.close()


def _consume(group, messages, results, fast_path_off):
    if fast_path_off:
        os.environ["SYNCHMESS_FASTPATH"] = "0"
    fast = group.fast_path
    first = group.receive()
    start = time.monotonic()
    got = 1 if first is not None else 0
    while got < messages:
        if group.receive() is None:
            break  # the receive timeout passed: something is wrong, reported below
        got += 1
    results.put((got, time.monotonic() - start, fast))
    group.close()


def _produce_device(group, messages, size):
    os.environ["SYNCHMESS_FASTPATH"] = "0"
    _produce(group, messages, size)


def synchmess_pass(method, name, messages, size, device):
    context = multiprocessing.get_context(method)
    results = context.Queue()
    with synchmess.Group(name) as group:
        group.receive_timeout = 10
        producer_target = _produce_device if device else _produce
        consumer = context.Process(target=_consume, args=(group, messages, results, device))
        producer = context.Process(target=producer_target, args=(group, messages, size))
        consumer.start()
        producer.start()
        got, seconds, fast = results.get(timeout=120)
        producer.join()
        consumer.join()
    if got != messages:
        sys.exit("%s: the consumer received %d of %d messages" % (method, got, messages))
    if fast == device:
        sys.exit("%s%s: the consumer's fast path was %s" % (
            method, " (device)" if device else "", "on" if fast else "off"))
    return (messages - 1) / seconds


def _queue_produce(queue, messages, size):
    payload = b"p" * size
    for _ in range(messages):
        queue.put(payload)


def _queue_consume(queue, messages, results):
    queue.get()
    start = time.monotonic()
    for _ in range(messages - 1):
        queue.get()
    results.put(time.monotonic() - start)


def queue_pass(messages, size):
    context = multiprocessing.get_context("fork")
    queue = context.Queue(maxsize=1024)
    results = context.Queue()
    consumer = context.Process(target=_queue_consume, args=(queue, messages, results))
    producer = context.Process(target=_queue_produce, args=(queue, messages, size))
    consumer.start()
    producer.start()
    seconds = results.get(timeout=120)
    producer.join()
    consumer.join()
    return (messages - 1) / seconds


def start_server(server):
    mount = tempfile.mkdtemp(prefix="synchmess-pybench.", dir="/var/tmp")
    os.chmod(mount, 0o755)
    process = subprocess.Popen([server, "--fuse-mount=" + mount],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(os.path.join(mount, "config")):
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit("the server %s did not start on %s" % (server, mount))
        time.sleep(0.05)
    return process, mount


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--max-storage", type=int, default=128 * 1024,
                        help="the group's max_storage_size for the run (bytes)")
    parser.add_argument("--server", help="start this synchmess-cuse on a fresh FUSE mount")
    options = parser.parse_args()
    server = mount = None
    if options.server:
        server, mount = start_server(options.server)
        synchmess.set_dir(mount)
        os.environ["SYNCHMESS_DIR"] = mount  # for spawned children
    name = "pybench%d" % os.getpid()
    saved = synchmess.params()
    synchmess.set_params(max_message_size=max(options.size, 64),
                         max_storage_size=options.max_storage)
    synchmess.install(name)
    figures = {"fork": [], "spawn": [], "device": [], "queue": []}
    try:
        for _ in range(options.passes):
            figures["fork"].append(synchmess_pass("fork", name, options.messages, options.size, False))
            figures["spawn"].append(synchmess_pass("spawn", name, options.messages, options.size, False))
            device_messages = max(1000, options.messages // 20)  # the device path is slow
            figures["device"].append(synchmess_pass("fork", name, device_messages, options.size, True))
            figures["queue"].append(queue_pass(options.messages, options.size))
    finally:
        synchmess.remove(name)
        synchmess.set_params(**saved)
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
            shutil.rmtree(mount, ignore_errors=True)

    def ratio(subject, baseline):
        values = [a / b for a, b in zip(figures[subject], figures[baseline])]
        return "%5.2fx [%.2f-%.2f]" % (statistics.median(values), min(values), max(values))

    def rate(key):
        return "%.1fk msg/s" % (statistics.median(figures[key]) / 1000)

    print("-- producer process -> consumer process, %d B, %d messages, %d passes, "
          "max_storage_size %d (python %s)" % (options.size, options.messages, options.passes,
                                               options.max_storage, sys.version.split()[0]))
    for key, label in (("fork", "synchmess, Group inherited (fork)"),
                       ("spawn", "synchmess, Group pickled (spawn)"),
                       ("device", "synchmess, device path (SYNCHMESS_FASTPATH=0)"),
                       ("queue", "multiprocessing.Queue")):
        print("  %-50s %s" % (label, rate(key)))
    print("  %-50s %s" % ("synchmess fork vs multiprocessing.Queue", ratio("fork", "queue")))
    print("  %-50s %s" % ("synchmess spawn vs multiprocessing.Queue", ratio("spawn", "queue")))
    print("  %-50s %s" % ("synchmess fork vs the device path", ratio("fork", "device")))
    spawn_vs_fork = [a / b for a, b in zip(figures["spawn"], figures["fork"])]
    median = statistics.median(spawn_vs_fork)
    print("  %-50s %5.2fx [%.2f-%.2f]  target within 10 %%: %s" % (
        "synchmess spawn vs fork", median, min(spawn_vs_fork), max(spawn_vs_fork),
        "MET" if 0.9 <= median <= 1.1 else "NOT MET"))


if __name__ == "__main__":
    main()
