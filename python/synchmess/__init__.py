"""synchmess from Python: groups, messages, delays and the barrier of /dev/synch.

A thin layer (the standard library's ctypes) over the client library libsynchmess.so.0, so a
group opened for reading and writing takes the fast path when the server offers it. Errors are
OSError with the errno (FileNotFoundError, PermissionError, ... where Python has a subclass),
raised from the library's -1/errno results.

    import synchmess
    synchmess.install("jobs")
    with synchmess.Group("jobs") as jobs:
        jobs.send(b"build 42")
        print(jobs.receive())          # b'build 42'
        jobs.receive_timeout = 1.5     # seconds; None: wait forever; 0: do not wait

A Group's fileno() is the device's descriptor: select, selectors and poll wait on it (readable:
a message is queued; writable: a message of max_message_size fits).

multiprocessing: a Group passes to another process with either start method. Inherited across
fork(), or pickled (multiprocessing sends its descriptor with SCM_RIGHTS, or hands it to a
spawned child), it is the same open file in the new process and takes the fast path there at
its first call, in a client slot of that process's own; each process closes its own copy.

    def consume(jobs):
        print(jobs.receive())
    with synchmess.Group("jobs") as jobs:
        jobs.receive_timeout = 5
        worker = multiprocessing.get_context("spawn").Process(target=consume, args=(jobs,))
        worker.start()
        jobs.send(b"from the parent")
        worker.join()

The library is looked for as $SYNCHMESS_LIBRARY, else "libsynchmess.so.0"; the devices in
$SYNCHMESS_DIR, else /dev/synch (or the directory given to set_dir()).
"""

import ctypes
import os
import threading
from multiprocessing import reduction as _reduction

__all__ = [
    "Group", "install", "remove", "groups", "params", "set_params", "device_dir", "set_dir",
    "MAX_MESSAGE_SIZE_LIMIT",
]

MAX_MESSAGE_SIZE_LIMIT = 126976  # SYNCH_MAX_MESSAGE_SIZE_LIMIT: what one CUSE request carries
_PATH_MAX = 128                  # SYNCH_PATH_MAX
_FOREVER = 0xFFFFFFFF            # SYNCH_RECV_TIMEOUT_FOREVER, SYNCH_SEND_TIMEOUT_FOREVER


class _Stats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "queued_messages", "queued_bytes", "delayed_messages", "delayed_bytes", "sleepers",
        "readers_waiting")]


class _Params(ctypes.Structure):
    _fields_ = [("max_message_size", ctypes.c_uint64), ("max_storage_size", ctypes.c_uint64)]


def _load():
    name = os.environ.get("SYNCHMESS_LIBRARY") or "libsynchmess.so.0"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as error:
        raise ImportError(
            "synchmess: cannot load the client library %s (%s): install it, or point "
            "SYNCHMESS_LIBRARY at libsynchmess.so.0" % (name, error)) from error
    c_int, c_char_p, c_size_t, c_void_p = ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p
    c_ssize_t, c_uint32 = ctypes.c_ssize_t, ctypes.c_uint32
    signatures = {
        "synch_dir": (c_char_p, []),
        "synch_install_group": (c_int, [c_char_p, c_char_p, c_size_t, ctypes.POINTER(c_int)]),
        "synch_remove_group": (c_int, [c_char_p]),
        "synch_open_group": (c_int, [c_char_p, c_int]),
        "synch_close_group": (c_int, [c_int]),
        "synch_fast_path_active": (c_int, [c_int]),
        "synch_send": (c_ssize_t, [c_int, c_void_p, c_size_t]),
        "synch_receive": (c_ssize_t, [c_int, c_void_p, c_size_t]),
        "synch_sleep_on_barrier": (c_int, [c_int]),
        "synch_awake_barrier": (c_int, [c_int]),
        "synch_set_send_delay": (c_int, [c_int, c_uint32]),
        "synch_get_send_delay": (c_int, [c_int, ctypes.POINTER(c_uint32)]),
        "synch_revoke_delayed_messages": (c_int, [c_int]),
        "synch_flush": (c_int, [c_int]),
        "synch_set_recv_timeout": (c_int, [c_int, c_uint32]),
        "synch_set_send_timeout": (c_int, [c_int, c_uint32]),
        "synch_get_stats": (c_int, [c_int, ctypes.POINTER(_Stats)]),
        "synch_get_params": (c_int, [ctypes.POINTER(_Params)]),
        "synch_set_params": (c_int, [ctypes.POINTER(_Params)]),
        "synch_device_path": (c_int, [c_char_p, c_char_p, c_size_t]),
    }
    for function, (result, arguments) in signatures.items():
        entry = getattr(lib, function)
        entry.restype = result
        entry.argtypes = arguments
    return lib


_lib = _load()


def _check(result, what):
    """The library's result, or OSError(errno) for -1."""
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, "%s: %s" % (what, os.strerror(error)))
    return result


def _name(name):
    if isinstance(name, str):
        return name.encode()
    if isinstance(name, bytes):
        return name
    raise TypeError("a group name is str or bytes, not %s" % type(name).__name__)


def _millis(seconds, what):
    """Seconds (None: forever) to the library's milliseconds."""
    if seconds is None:
        return _FOREVER
    ms = round(seconds * 1000)
    if ms < 0 or ms >= _FOREVER:
        raise ValueError("%s: from 0 to %d seconds, or None (forever)" % (what, (_FOREVER - 1) // 1000))
    return ms


def device_dir():
    """The directory that holds the devices: $SYNCHMESS_DIR, else /dev/synch."""
    return _lib.synch_dir().decode()


def set_dir(path):
    """Looks for the devices in `path` from now on (as SYNCHMESS_DIR does)."""
    os.environ["SYNCHMESS_DIR"] = os.fspath(path)


def install(name):
    """Installs the group `name` (nothing happens if it exists); returns its device's path."""
    path = ctypes.create_string_buffer(_PATH_MAX)
    created = ctypes.c_int(0)
    _check(_lib.synch_install_group(_name(name), path, _PATH_MAX, ctypes.byref(created)),
           "install %s" % name)
    return path.value.decode()


def remove(name):
    """Removes the group `name`: its messages go, its waiters get EIDRM."""
    _check(_lib.synch_remove_group(_name(name)), "remove %s" % name)


def groups():
    """The installed groups: {name: {"owner": uid, "queued_messages": n, ...}}, from the control
    device's listing."""
    path = ctypes.create_string_buffer(_PATH_MAX)
    _check(_lib.synch_device_path(b"synchmess", path, _PATH_MAX), "the control device")
    with open(path.value, "rb", buffering=0) as control:
        text = control.read().decode()
    listed = {}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        fields = {}
        for word in words[1:]:
            key, _, value = word.partition("=")
            fields[key] = int(value) if value.isdigit() else value
        listed[words[0]] = fields
    return listed


def params():
    """{"max_message_size": bytes, "max_storage_size": bytes}."""
    now = _Params()
    _check(_lib.synch_get_params(ctypes.byref(now)), "read the parameters")
    return {"max_message_size": now.max_message_size, "max_storage_size": now.max_storage_size}


def set_params(max_message_size=None, max_storage_size=None):
    """Sets the parameters given (root only; they apply to every group at once)."""
    wanted = _Params(max_message_size or 0, max_storage_size or 0)
    _check(_lib.synch_set_params(ctypes.byref(wanted)), "set the parameters")


class Group:
    """An open group device. `mode` "rw" (the default: the fast path when offered), "r" or "w";
    nonblocking=True opens it O_NONBLOCK (receive on an empty group raises BlockingIOError).
    A context manager; close() closes it, and so does the garbage collector."""

    def __init__(self, name, mode="rw", nonblocking=False):
        flags = {"rw": os.O_RDWR, "r": os.O_RDONLY, "w": os.O_WRONLY}.get(mode)
        if flags is None:
            raise ValueError("mode is 'rw', 'r' or 'w', not %r" % (mode,))
        if nonblocking:
            flags |= os.O_NONBLOCK
        self.name = name if isinstance(name, str) else name.decode()
        self._fd = -1
        self._fd = _check(_lib.synch_open_group(_name(name), flags), "open group %s" % self.name)
        self._receive_timeout = 0.0
        self._send_timeout = 0.0

    # -- the descriptor
    def fileno(self):
        if self._fd < 0:
            raise ValueError("the group is closed")
        return self._fd

    @property
    def closed(self):
        return self._fd < 0

    @property
    def fast_path(self):
        """True while this descriptor works in the group's shared memory."""
        return _lib.synch_fast_path_active(self.fileno()) == 1

    def close(self):
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            _check(_lib.synch_close_group(fd), "close group %s" % self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_fd", -1) >= 0:
            try:
                self.close()
            except OSError:
                pass

    def __repr__(self):
        return "<synchmess.Group %r %s>" % (self.name, "closed" if self.closed else "fd %d" % self._fd)

    def __reduce__(self):
        # For multiprocessing: the descriptor goes as one (DupFd: passed to a spawned child, or
        # sent with SCM_RIGHTS), never as a number that means nothing in another process.
        return (_rebuild_group,
                (self.name, _reduction.DupFd(self.fileno()), self._receive_timeout,
                 self._send_timeout))

    # -- messages
    def send(self, message):
        """Sends `message` (bytes-like; str is sent as UTF-8) as one message; returns its size.
        A full group: OSError ENOSPC, after waiting up to send_timeout for room."""
        if isinstance(message, str):
            message = message.encode()
        data = bytes(message)
        return _check(_lib.synch_send(self.fileno(), data, len(data)), "send to %s" % self.name)

    def receive(self, max_size=MAX_MESSAGE_SIZE_LIMIT):
        """The oldest message (at most `max_size` bytes of it: the rest is dropped, as read()
        does), or None when there is none within receive_timeout."""
        buffer = _receive_buffer(max_size)
        got = _check(_lib.synch_receive(self.fileno(), buffer, max_size), "receive from %s" % self.name)
        return ctypes.string_at(buffer, got) if got > 0 else None

    def __iter__(self):
        """The messages, each as it comes (receive_timeout between them; None ends it)."""
        while True:
            message = self.receive()
            if message is None:
                return
            yield message

    @property
    def receive_timeout(self):
        """Seconds a receive waits for a message: 0 (the default) not at all, None forever."""
        return self._receive_timeout

    @receive_timeout.setter
    def receive_timeout(self, seconds):
        _check(_lib.synch_set_recv_timeout(self.fileno(), _millis(seconds, "receive_timeout")),
               "set the receive timeout of %s" % self.name)
        self._receive_timeout = seconds

    @property
    def send_timeout(self):
        """Seconds a send that does not fit waits for room: 0 (the default) not at all, None
        forever."""
        return self._send_timeout

    @send_timeout.setter
    def send_timeout(self, seconds):
        _check(_lib.synch_set_send_timeout(self.fileno(), _millis(seconds, "send_timeout")),
               "set the send timeout of %s" % self.name)
        self._send_timeout = seconds

    # -- delays
    @property
    def send_delay(self):
        """The group's send delay in seconds (0: messages are available at once)."""
        ms = ctypes.c_uint32(0)
        _check(_lib.synch_get_send_delay(self.fileno(), ctypes.byref(ms)),
               "get the send delay of %s" % self.name)
        return ms.value / 1000

    @send_delay.setter
    def send_delay(self, seconds):
        ms = round(seconds * 1000)
        if ms < 0 or ms > 0xFFFFFFFF:
            raise ValueError("send_delay: from 0 to %d seconds" % (0xFFFFFFFF // 1000))
        _check(_lib.synch_set_send_delay(self.fileno(), ms), "set the send delay of %s" % self.name)

    def revoke(self):
        """Discards the delayed messages not due yet; returns how many."""
        return _check(_lib.synch_revoke_delayed_messages(self.fileno()), "revoke %s" % self.name)

    def flush(self):
        """Makes the delayed messages available now, in write order; returns how many."""
        return _check(_lib.synch_flush(self.fileno()), "flush %s" % self.name)

    # -- the barrier
    def sleep(self):
        """Sleeps on the group's barrier until awake() (InterruptedError on a signal whose
        handler raised nothing is retried by Python; the group's removal: OSError EIDRM)."""
        while True:
            try:
                _check(_lib.synch_sleep_on_barrier(self.fileno()), "sleep on %s" % self.name)
                return
            except InterruptedError:
                continue  # PEP 475: retried after the signal's handler ran

    def awake(self):
        """Wakes every sleeper of the barrier; returns how many."""
        return _check(_lib.synch_awake_barrier(self.fileno()), "awake %s" % self.name)

    def stats(self):
        """{"queued_messages", "queued_bytes", "delayed_messages", "delayed_bytes", "sleepers",
        "readers_waiting"}."""
        stats = _Stats()
        _check(_lib.synch_get_stats(self.fileno(), ctypes.byref(stats)), "stats of %s" % self.name)
        return {name: getattr(stats, name) for name, _ in _Stats._fields_}


_buffers = threading.local()


def _receive_buffer(size):
    """This thread's receive buffer, at least `size` bytes, kept between calls: a fresh 124 KiB
    buffer per receive cost more than the receive (glibc gives such a block back to the system
    at its free and takes it again, zeroed page by page: 0.7 ms a message in a forked child)."""
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = ctypes.create_string_buffer(size)
        _buffers.buffer = buffer
    return buffer


def _rebuild_group(name, duplicate, receive_timeout, send_timeout):
    """A Group around a descriptor received from another process (Group.__reduce__). The open
    file's timeouts are the device's, set by the sender; the values only mirror them."""
    group = Group.__new__(Group)
    group.name = name
    group._fd = duplicate.detach()
    group._receive_timeout = receive_timeout
    group._send_timeout = send_timeout
    return group
