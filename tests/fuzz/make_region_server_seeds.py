#!/usr/bin/env python3
"""Writes the seed corpus of region_server_fuzzer (tests/fuzz/corpus/region_server/): one file
per forgery, in the fuzzer's input format (see region_server_fuzzer.cpp). Run it from anywhere
after changing that format; the files are committed."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "region_server")

# Header offsets (lib/region/layout.hpp): one 64-byte line each.
TAIL, HEAD, RECLAIM, STORED, BARRIER, FLAGS = 128, 192, 256, 320, 448, 84
RESERVED, COMMITTED, CLAIMED, FREE, PAD = 1, 2, 3, 4, 5


def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v & (2**64 - 1))


def records_byte(state, log2_count):
    """The byte that asks for 2^log2_count forged records of `state`."""
    for b in range(1, 256, 2):
        if 1 + b // 2 % 5 == state and b // 16 % 17 == log2_count:
            return b
    raise ValueError((state, log2_count))


def header_write(offset, value, width=8):
    """A write into the header: a `where` byte that is not 0 mod 4, then the offset."""
    return u8(1) + u16(offset) + u8({1: 0, 2: 1, 4: 2, 8: 3}[width]) + u64(value)


def seed(ring, honest, forged, writes=(), scribbles=(), refill=False, start=1 << 20, length=1):
    data = u8(ring) + u8(honest)
    if forged is None:
        data += u8(0)
    else:
        data += u8(records_byte(*forged)) + u32(start) + u16(length)
    data += u8(len(writes)) + b"".join(writes)
    data += u8(len(scribbles)) + b"".join(scribbles)
    data += u8(0 if refill else 1)
    return data


SEEDS = {
    # A ring that never empties: committed records, the front turned back while the server works.
    "endless": seed(0, 4, (COMMITTED, 12), refill=True),
    "endless-large": seed(1, 4, (COMMITTED, 15), refill=True),
    # Consumed records all the way: walks that pass FREE and PAD records.
    "free-ring": seed(1, 0, (FREE, 15), scribbles=[header_write(HEAD, 1 << 20)]),
    "pad-ring": seed(0, 2, (PAD, 11), length=16),
    # A broken ring (an unaligned tail), the budget counter held at 0.
    "broken-zero-budget": seed(0, 8, None, writes=[header_write(TAIL, (1 << 20) | 8)],
                               scribbles=[header_write(STORED, 0)]),
    # The budget and the barrier word moved without pause; flags flipped.
    "hammered-words": seed(0, 4, None, scribbles=[header_write(STORED, 12345),
                                                  header_write(BARRIER, 7 << 32 | 3),
                                                  header_write(FLAGS, 0, 4)]),
    # Positions wound back and forth.
    "wound-back": seed(1, 16, (COMMITTED, 10),
                       scribbles=[header_write(HEAD, 1 << 20), header_write(RECLAIM, 1 << 20)]),
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(SEEDS)} seeds in {OUT}")
