#!/usr/bin/env python3
"""Writes the seed corpus of request_fuzzer (tests/fuzz/corpus/request/): one file per scenario,
in the fuzzer's input format (an opcode byte and its arguments, see request_fuzzer.cpp's
run_one()). Run it from anywhere after changing that format; the files are committed."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "request")

# Operations (run_one()'s switch) and the harness's choices.
LOOKUP, OPEN, READ, WRITE, IOCTL, POLL, RELEASE, FLUSH, FSYNC, INTERRUPT = range(10)
GETATTR, SETATTR, READDIR, TIME, UID, FORGET, RAW = range(10, 17)
CONTROL, CONFIG, FOUND = 1, 2, 3  # inode choices: the control file, config, the first found
RDWR, RDONLY, WRONLY, RDWR_NONBLOCK = 0, 1, 2, 3
# ioctl "which": an index into the harness's kCommands.
INSTALL, REMOVE, SLEEP, AWAKE, SET_DELAY, GET_DELAY, REVOKE, FLUSH_IOC, SET_RECV_TIMEOUT, \
    GET_STATS, GET_PARAMS, SET_PARAMS, SET_SEND_TIMEOUT, FASTPATH_OFFER = range(14)
SIZES = {INSTALL: 200, REMOVE: 64, SET_DELAY: 4, SET_RECV_TIMEOUT: 4, SET_PARAMS: 16,
         SET_SEND_TIMEOUT: 4}


def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)


def group(n): return u8(2 + n)  # name choice "g<n>" (2..127: "g" + choice % 6)


def lookup(name): return u8(LOOKUP) + name
def open_(inode, flags=RDWR): return u8(OPEN) + u8(inode) + u8(flags)
def read(fh, size=256): return u8(READ) + u8(fh) + u16(size // 2) + u8(0)
def write(fh, data): return u8(WRITE) + u8(fh) + u16(len(data)) + data
def poll(fh): return u8(POLL) + u8(fh) + u8(1)
def release(fh): return u8(RELEASE) + u8(fh)
def interrupt(back=0): return u8(INTERRUPT) + u8(back)
def advance(ms): return u8(TIME) + u16(ms)
def uid(choice): return u8(UID) + u8(choice)


def ioctl(fh, which, payload=b"", name=None, params=None):
    """An ioctl with the sizes its number encodes; payload pads the argument."""
    body = u8(IOCTL) + u8(fh) + u8(which) + u8(0 if name is not None or params is not None else 8)
    size = SIZES.get(which, 0)
    body += payload.ljust(size, b"\0")[:size]
    if name is not None:
        body += name
    if params is not None:
        body += u32(params[0]) + u32(params[1])
    return body


def install(n): return open_(CONTROL) + ioctl(0, INSTALL, name=group(n))


SEEDS = {
    "config-text": lookup(u8(1)) + open_(CONFIG) + write(0, b"max_message_size=2000\n") +
    read(0) + ioctl(0, GET_PARAMS) + ioctl(0, SET_PARAMS, params=(3000, 40000)),
    "messages": install(0) + lookup(group(0)) + open_(FOUND) + write(1, b"hello") +
    write(1, b"world") + read(1) + ioctl(1, GET_STATS) + poll(1) + read(1, 2) + release(1),
    "receive-timeout": install(1) + lookup(group(1)) + open_(FOUND) +
    ioctl(1, SET_RECV_TIMEOUT, u32(100)) + read(1) + advance(150) + read(1) + interrupt(0),
    "barrier": install(2) + lookup(group(2)) + open_(FOUND) + open_(FOUND) + ioctl(1, SLEEP) +
    ioctl(2, AWAKE) + ioctl(1, SLEEP) + interrupt(0),
    "send-timeout": install(3) + ioctl(0, SET_PARAMS, params=(16, 16)) + lookup(group(3)) +
    open_(FOUND) + ioctl(1, SET_SEND_TIMEOUT, u32(500)) + write(1, b"0123456789") +
    write(1, b"abcdefghij") + write(1, b"klmnopqrst") + read(1) + interrupt(0) + advance(600),
    "delays": install(4) + lookup(group(4)) + open_(FOUND) + ioctl(1, SET_DELAY, u32(1000)) +
    write(1, b"later") + write(1, b"later2") + ioctl(1, FLUSH_IOC) + write(1, b"gone") +
    ioctl(1, REVOKE) + advance(2000) + read(1),
    "quotas": uid(1) + b"".join(install(n) for n in range(5)) + uid(0) + install(5) +
    uid(1) + open_(CONTROL) + ioctl(0, REMOVE, name=group(5)),
    "file-system": u8(READDIR) + u8(0) + u16(4096) + u8(GETATTR) + u8(CONFIG) +
    u8(SETATTR) + u8(CONFIG) + u32(1 << 3) + u8(0) + lookup(u8(200) + b"no-such-name" +
    b"\0" * 60) + u8(FORGET) + u8(FOUND),
    "poll-notify": install(0) + lookup(group(0)) + open_(FOUND) + poll(1) + open_(FOUND) +
    write(2, b"wake") + poll(1) + read(1),
    "fast-path-offer": install(1) + lookup(group(1)) + open_(FOUND) + ioctl(1, FASTPATH_OFFER) +
    open_(FOUND, RDONLY) + ioctl(2, FASTPATH_OFFER) + uid(1) + ioctl(1, FASTPATH_OFFER),
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(SEEDS)} seeds in {OUT}")
