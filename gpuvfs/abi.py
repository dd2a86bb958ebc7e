"""The host's mirror of the device ABI (device/gvfs/hostcall.cuh, context.cuh, files.cuh).

One definition per constant; tests/test_abi.py compiles the device headers on the cpu
backend and checks every value and offset here against them.
"""
from __future__ import annotations

import enum
import struct
from typing import NamedTuple

import numpy as np

ABI_VERSION = 7
PATH_MAX = 4096          # bytes, including the terminating NUL
LANE_DATA_MIN = 4096
CTX_MAGIC = 0x53465647   # "GVFS"


# The lane words (device/gvfs/hostcall.cuh, docs/protocol.md). The host reads and writes
# only the two in host memory; lock[i] = seq << 1 | held lives in device memory, where the
# device keeps each lane's seq (the host only allocates it, zeroed).
#   req_word  = opcode << 24 | (seq & 0xFFFFFF)
#   resp_word = code << 24 | (seq & 0xFFFFFF); code 0: the answer is in the response record,
#               code 1..254: the result is code - 128 and the aux words are zero,
#               code 255: the result is the request's length field and the aux words are zero.
WORD_SEQ_MASK = 0xFFFFFF
WORD_SHIFT = 24
CODE_RECORD = 0
CODE_BIAS = 128
CODE_LENGTH = 255
CODE_MIN_RESULT, CODE_MAX_RESULT = 1 - CODE_BIAS, 254 - CODE_BIAS   # -127..126


def encode_req_word(opcode: int, seq: int) -> int:
    """The word a device thread publishes for request `seq` of a lane."""
    return (opcode & 0xFF) << WORD_SHIFT | (seq & WORD_SEQ_MASK)


def encode_resp_word(req: int, result: int | None = None, length: int | None = None) -> int:
    """The answer's word for request word `req`: the result in the code where it fits, code
    255 when it equals the request's `length` field (given), else code 0 (`result` None: the
    answer is in the record)."""
    seq = req & WORD_SEQ_MASK
    if result is None:
        return seq
    if CODE_MIN_RESULT <= result <= CODE_MAX_RESULT:
        return (result + CODE_BIAS) << WORD_SHIFT | seq
    if length is not None and result == length:
        return CODE_LENGTH << WORD_SHIFT | seq
    return seq


def decode_resp_word(word: int, length: int | None = None) -> int | None:
    """The result a response word carries, or None when it says "read the record";
    `length`: the request's length field, what code 255 stands for."""
    code = word >> WORD_SHIFT
    if code == CODE_RECORD:
        return None
    if code == CODE_LENGTH:
        if length is None:
            raise ValueError("code 255 is the request's length: pass length=")
        return length
    return code - CODE_BIAS


class Op(enum.IntEnum):
    # NOP is 0x80 so that the answer to a NOP is its request word echoed: code 0x80 is the
    # result 0. A sweep answers all pending NOPs with one masked copy (server.py).
    NOP = 0x80
    OPEN = 2
    PREAD = 3
    PWRITE = 4
    FSTAT = 5
    CLOSE = 6
    FSYNC = 7
    UNLINK = 8
    WRITE_LINE = 9
    READ_LINE = 10
    WALLCLOCK = 11
    FILL = 12
    LOOKUP = 13
    FILL_PUSH = 14


# Requests that are the word alone: the device writes no record and the server reads none.
WORD_ONLY = frozenset({Op.NOP, Op.WALLCLOCK})

# open(2) flags as the device passes them (Linux values).
O_RDONLY = 0x0
O_WRONLY = 0x1
O_RDWR = 0x2
O_ACCMODE = 0x3
O_CREAT = 0x40
O_EXCL = 0x80
O_TRUNC = 0x200
O_APPEND = 0x400
O_KNOWN = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND

STDOUT = 1
STDERR = 2

REQUEST = np.dtype(
    [("opcode", "<u4"), ("flags", "<u4"), ("fd", "<i4"), ("data_len", "<u4"),
     ("offset", "<u8"), ("length", "<u8"), ("arg", "<u8", (4,))],
    align=True,
)
RESPONSE = np.dtype([("result", "<i8"), ("aux", "<u8", (3,))], align=True)
# The same two records as struct formats: the server's hot path reads a request and writes
# an answer with one struct call each (a NumPy record's field access costs ~0.3 us apiece).
REQUEST_STRUCT = struct.Struct("<IIiIQQ4Q")
RESPONSE_STRUCT = struct.Struct("<q3Q")


class Request(NamedTuple):
    """One request record as a handler sees it: a snapshot, taken once (the device could
    rewrite the lane's memory meanwhile), every field untrusted."""
    opcode: int = 0
    flags: int = 0
    fd: int = 0
    data_len: int = 0
    offset: int = 0
    length: int = 0
    arg0: int = 0
    arg1: int = 0
    arg2: int = 0
    arg3: int = 0

    @classmethod
    def unpack_from(cls, buf: "bytes | memoryview", offset: int = 0) -> "Request":
        """The record at `offset` of `buf` (the layout of REQUEST)."""
        return cls._make(REQUEST_STRUCT.unpack_from(buf, offset))


LANES = np.dtype(
    [("count", "<u4"), ("data_bytes", "<u4"), ("req_word", "<u8"), ("resp_word", "<u8"),
     ("req", "<u8"), ("resp", "<u8"), ("data", "<u8"), ("lock", "<u8")],
    align=True,
)
PAGETABLE = np.dtype(
    [("nsets", "<u4"), ("ways", "<u4"), ("page_shift", "<u4"), ("reserved", "<u4"),
     ("state", "<u8"), ("tag", "<u8"), ("ref", "<u8"), ("set_lock", "<u8"), ("hand", "<u8"), ("pool", "<u8")],
    align=True,
)
FILES = np.dtype(
    [("max_fds", "<u4"), ("nnames", "<u4"), ("epoch", "<u8"), ("fd_hint", "<u8"), ("fds", "<u8"), ("names", "<u8")],
    align=True,
)
CTX = np.dtype(
    [("magic", "<u4"), ("abi_version", "<u4"), ("fill_push_bytes", "<u4"), ("readahead_pages", "<u4"),
     ("lanes", LANES), ("counters", "<u8"), ("pt", PAGETABLE), ("files", FILES),
     ("stdio", "<u8"),   # gvfs_stdio_state *: the wall-clock cache (gpuvfs/hostcall/stdio.py)
     ("fill_stage", "<u8")],  # device memory, lanes x lane_bytes: where FILL_PUSH copies each lane's bytes
    align=True,
)
FDENT_SIZE = 48
NAME_MAX = 224
NAMEENT_SIZE = 272
FD_BASE = 3
# The fd table lives in the context's allocation, at this offset after the struct, with room
# for at least FD_TABLE_MIN entries (device/gvfs/context.cuh: a read finds an fd's entry
# without a load). The allocation starts CTX_HINTS_BYTES before the struct, with the open's
# hints (NAME_HINTS 4-byte words; files.cuh, N5).
NAME_HINTS = 4096
CTX_HINTS_BYTES = 4 * NAME_HINTS
CTX_FDS_OFFSET = 1024
HINT_INDEX_MASK = 0xFFFFF   # a hint word: tag << 20 | (name-cache index + 1)
FD_TABLE_MIN = 4096


def ctx_bytes(max_fds: int) -> int:
    """Bytes of the device context's allocation: the open's hints, the struct (at
    CTX_HINTS_BYTES), then the fd table."""
    return CTX_HINTS_BYTES + CTX_FDS_OFFSET + FDENT_SIZE * max(max_fds, FD_TABLE_MIN)

# Page-table slot states (device/gvfs/pagetable.cuh): kind in bits 0..7, pins above.
SLOT_EMPTY, SLOT_FILLING, SLOT_VALID, SLOT_DIRTY, SLOT_EVICTING = 0, 1, 2, 3, 4
SLOT_KIND_MASK = 0xFF
PAGE_BITS = 40
PT_MAX_WAYS = 16      # slots per set at most (a miss reads its whole set in one batch of loads)
STAT_SIZE = 24


class Counter(enum.IntEnum):
    """Device-side counters (device/gvfs/context.cuh), summed into Runtime.stats()."""
    CACHE_HITS = 0
    CACHE_MISSES = 1
    FILLS = 2
    EVICTIONS = 3
    OPENS_ON_DEVICE = 4
    BYTES_HIT = 5
    FILL_WAITS = 6
    READAHEADS = 7
    FILLS_PUSHED = 8     # of FILLS: the host copied the bytes into the slots (FILL_PUSH)
    OPENS_HINTED = 9     # opens answered through the open's hint; stats() adds them into opens_on_device


NCOUNTERS = 16
COUNTER_SHARDS = 32   # counter words reserved per counter: the device spreads its adds over up to this many

assert REQUEST.itemsize == REQUEST_STRUCT.size == 64 and RESPONSE.itemsize == RESPONSE_STRUCT.size == 32
