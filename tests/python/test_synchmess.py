"""The synchmess Python module against a running server (tests/sandbox/python.sh starts one and
sets SYNCHMESS_DIR and SYNCHMESS_LIBRARY): every operation, its errors as OSError with the
errno, the context manager, readiness through select and selectors, and groups handed to
other processes by multiprocessing (fork and spawn)."""

import errno
import multiprocessing
import os
import select
import selectors
import threading
import time
import unittest

import synchmess


_MESSAGES = 2000


def _produce(group, results):
    """multiprocessing target: sends _MESSAGES numbered messages through an inherited or pickled
    Group, and says whether it took the fast path."""
    fast = group.fast_path
    for i in range(_MESSAGES):
        group.send(b"m%d" % i)
    results.put(("producer", fast, None))


def _consume(group, results):
    """multiprocessing target: receives _MESSAGES messages (waiting by the receive timeout its
    parent set on the open file) and reports the first one out of order, if any."""
    fast = group.fast_path
    wrong = None
    for i in range(_MESSAGES):
        got = group.receive()
        if got != b"m%d" % i:
            wrong = "message %d: %r" % (i, got)
            break
    group.close()
    results.put(("consumer", fast, wrong))


class SynchmessTest(unittest.TestCase):
    def setUp(self):
        self.name = "py%d-%s" % (os.getpid(), self._testMethodName[-20:].strip("_"))
        self.path = synchmess.install(self.name)

    def tearDown(self):
        try:
            synchmess.remove(self.name)
        except FileNotFoundError:
            pass

    def test_install_is_idempotent_and_listed(self):
        self.assertEqual(self.path, os.path.join(synchmess.device_dir(), self.name))
        self.assertEqual(synchmess.install(self.name), self.path)
        listed = synchmess.groups()
        self.assertIn(self.name, listed)
        self.assertEqual(listed[self.name]["owner"], os.geteuid())
        self.assertEqual(listed[self.name]["queued_messages"], 0)

    def test_send_receive_fifo_exactly_once(self):
        with synchmess.Group(self.name) as group:
            for i in range(10):
                self.assertEqual(group.send(b"message %d" % i), len(b"message %d" % i))
            group.send("text is UTF-8: \u00e9")
            self.assertEqual(group.stats()["queued_messages"], 11)
            self.assertEqual([group.receive() for _ in range(10)],
                             [b"message %d" % i for i in range(10)])
            self.assertEqual(group.receive(), "text is UTF-8: \u00e9".encode())
            self.assertIsNone(group.receive())  # empty: None at once

    def test_short_receive_consumes_the_message(self):
        with synchmess.Group(self.name) as group:
            group.send(b"0123456789")
            group.send(b"next")
            self.assertEqual(group.receive(4), b"0123")
            self.assertEqual(group.receive(), b"next")

    def test_iteration_and_receive_timeout(self):
        with synchmess.Group(self.name) as group:
            group.send(b"a")
            group.send(b"b")
            group.receive_timeout = 0.2
            start = time.monotonic()
            self.assertEqual(list(group), [b"a", b"b"])  # ends after one timeout with nothing
            self.assertGreaterEqual(time.monotonic() - start, 0.15)

    def test_a_waiting_receive_gets_a_message_from_another_descriptor(self):
        with synchmess.Group(self.name) as reader, synchmess.Group(self.name, "w") as writer:
            reader.receive_timeout = None
            got = []
            thread = threading.Thread(target=lambda: got.append(reader.receive()))
            thread.start()
            deadline = time.monotonic() + 10
            while reader.stats()["readers_waiting"] != 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            writer.send(b"to the waiting reader")
            thread.join(10)
            self.assertEqual(got, [b"to the waiting reader"])

    def test_errors_carry_the_errno(self):
        with self.assertRaises(FileNotFoundError) as caught:
            synchmess.Group("no-such-group-%d" % os.getpid())
        self.assertEqual(caught.exception.errno, errno.ENOENT)
        with self.assertRaises(OSError) as caught:
            synchmess.install("bad name")
        self.assertEqual(caught.exception.errno, errno.EINVAL)
        limit = synchmess.params()["max_message_size"]
        with synchmess.Group(self.name) as group:
            with self.assertRaises(OSError) as caught:
                group.send(b"x" * (limit + 1))
            self.assertEqual(caught.exception.errno, errno.EMSGSIZE)
        with synchmess.Group(self.name, nonblocking=True) as group:
            with self.assertRaises(BlockingIOError):
                group.receive()
        with self.assertRaises(ValueError):
            synchmess.Group(self.name, "x")

    def test_context_manager_closes(self):
        with synchmess.Group(self.name) as group:
            fd = group.fileno()
        self.assertTrue(group.closed)
        with self.assertRaises(ValueError):
            group.fileno()
        with self.assertRaises(OSError):
            os.fstat(fd)  # the descriptor is gone

    def test_select_and_selectors_see_a_message(self):
        with synchmess.Group(self.name) as group, synchmess.Group(self.name, "w") as writer:
            self.assertEqual(select.select([group], [], [], 0)[0], [])
            readable, writable, _ = select.select([], [group], [], 0)
            self.assertEqual(writable, [group])  # room for a max-size message
            with selectors.DefaultSelector() as selector:
                selector.register(group, selectors.EVENT_READ)
                threading.Timer(0.1, writer.send, args=(b"wake the selector",)).start()
                events = selector.select(10)
                self.assertEqual([key.fileobj for key, _ in events], [group])
            self.assertEqual(group.receive(), b"wake the selector")

    def test_barrier(self):
        with synchmess.Group(self.name) as group:
            self.assertEqual(group.awake(), 0)
            sleepers = [threading.Thread(target=group.sleep) for _ in range(3)]
            for sleeper in sleepers:
                sleeper.start()
            deadline = time.monotonic() + 10
            while group.stats()["sleepers"] != 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(group.awake(), 3)
            for sleeper in sleepers:
                sleeper.join(10)
                self.assertFalse(sleeper.is_alive())

    def test_delay_revoke_flush(self):
        with synchmess.Group(self.name) as group:
            group.send_delay = 60
            self.assertEqual(group.send_delay, 60)
            group.send(b"delayed 1")
            group.send(b"delayed 2")
            stats = group.stats()
            self.assertEqual((stats["delayed_messages"], stats["queued_messages"]), (2, 0))
            self.assertIsNone(group.receive())
            self.assertEqual(group.flush(), 2)
            self.assertEqual(group.receive(), b"delayed 1")
            self.assertEqual(group.receive(), b"delayed 2")
            group.send(b"revoked")
            self.assertEqual(group.revoke(), 1)
            group.send_delay = 0
            self.assertIsNone(group.receive())

    def test_send_timeout_waits_for_room(self):
        saved = synchmess.params()
        try:
            synchmess.set_params(max_message_size=8, max_storage_size=16)
            with synchmess.Group(self.name) as group:
                group.send(b"12345678")
                group.send(b"abcdefgh")
                with self.assertRaises(OSError) as caught:
                    group.send(b"full")
                self.assertEqual(caught.exception.errno, errno.ENOSPC)
                group.send_timeout = 0.2
                start = time.monotonic()
                with self.assertRaises(OSError):
                    group.send(b"full")
                self.assertGreaterEqual(time.monotonic() - start, 0.15)
        finally:
            synchmess.set_params(**saved)

    def test_fast_path_when_offered(self):
        with synchmess.Group(self.name) as both, synchmess.Group(self.name, "r") as reading:
            self.assertFalse(reading.fast_path)  # O_RDONLY never takes the region
            if os.environ.get("SYNCHMESS_EXPECT_FAST_PATH") == "1":
                self.assertTrue(both.fast_path)
            both.send(b"either door")
            self.assertEqual(reading.receive(), b"either door")

    def test_receive_keeps_one_buffer_per_thread(self):
        # A fresh 124 KiB buffer per receive cost 0.7 ms a message in a forked child (glibc
        # gave it back and took it again at each call): one buffer per thread, kept.
        self.assertIs(synchmess._receive_buffer(100), synchmess._receive_buffer(50))
        other = []
        thread = threading.Thread(target=lambda: other.append(synchmess._receive_buffer(50)))
        thread.start()
        thread.join()
        self.assertIsNot(other[0], synchmess._receive_buffer(50))  # threads never share one
        with synchmess.Group(self.name) as group:
            group.send(b"long message")
            group.send(b"short")
            self.assertEqual(group.receive(), b"long message")
            self.assertEqual(group.receive(), b"short")  # nothing of the longer one left

    def _exchange_between_processes(self, method):
        context = multiprocessing.get_context(method)
        results = context.Queue()
        with synchmess.Group(self.name) as group:
            group.receive_timeout = 20  # the open file's: the consumer waits by it too
            consumer = context.Process(target=_consume, args=(group, results))
            producer = context.Process(target=_produce, args=(group, results))
            consumer.start()
            producer.start()
            reports = dict((role, (fast, wrong)) for role, fast, wrong in
                           (results.get(timeout=60) for _ in range(2)))
            producer.join(30)
            consumer.join(30)
            self.assertEqual(producer.exitcode, 0)
            self.assertEqual(consumer.exitcode, 0)
            self.assertIsNone(reports["consumer"][1])  # FIFO, exactly once
            if os.environ.get("SYNCHMESS_EXPECT_FAST_PATH") == "1":
                self.assertTrue(reports["producer"][0], "the producer did not take the fast path")
                self.assertTrue(reports["consumer"][0], "the consumer did not take the fast path")
                self.assertTrue(group.fast_path)  # the parent's stays the parent's
            stats = group.stats()
            self.assertEqual(stats["queued_messages"], 0)
            self.assertEqual(stats["readers_waiting"], 0)

    def test_multiprocessing_fork_processes_share_a_group(self):
        self._exchange_between_processes("fork")

    def test_multiprocessing_spawn_processes_share_a_group(self):
        self._exchange_between_processes("spawn")


if __name__ == "__main__":
    unittest.main(verbosity=2)
