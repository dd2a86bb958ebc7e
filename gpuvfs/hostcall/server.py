"""The hostcall server: the host half of the protocol in device/gvfs/hostcall.cuh.

The lanes live in one block of pinned host memory mapped into the device (on the cpu
backend, plain host memory). Each lane has a request word and a response word
(docs/protocol.md): the server snapshots every request word at once, takes the lanes whose
word moved, answers NOPs by echoing their word, other cheap opcodes on the polling thread,
and hands those that can block (file IO, stdin) to a thread pool so one slow read never
stalls other lanes. Every word and field read from a lane is untrusted: handlers validate
it and answer -errno; nothing a lane says can stop the server.

While no kernel of the runtime is in flight (and nothing is pending) the polling thread
sleeps on an event: it does not burn a core.
"""
from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .. import abi

log = logging.getLogger("gpuvfs.hostcall")

PAGE = 4096
_U32 = struct.Struct("<I")       # one lane word, read from or written into a bytes snapshot
_unpack, _pack = _U32.unpack_from, _U32.pack_into
_I32 = np.dtype("<i4")           # the vector path's view of the words (see _sweep_many)
_NOP = int(abi.Op.NOP)
_REQ_SIZE = abi.REQUEST.itemsize
_RESP_SIZE = abi.RESPONSE.itemsize
_request = abi.Request.unpack_from
_pack_resp = abi.RESPONSE_STRUCT.pack_into
# As int32, the words with opcode 0x80 (NOP) are the lowest: those below 0x81000000. A 0-d
# array, as a NumPy scalar operand costs a conversion on every call.
_NOP_END = np.array((_NOP + 1) << 24, dtype=np.uint32).view(np.int32)
_SEQ = abi.WORD_SEQ_MASK
_SHIFT = abi.WORD_SHIFT
_BIAS = abi.CODE_BIAS
_CODE_MIN, _CODE_MAX = abi.CODE_MIN_RESULT, abi.CODE_MAX_RESULT
_CODE_LENGTH_WORD = abi.CODE_LENGTH << abi.WORD_SHIFT
_AUX_MASK = 0xFFFFFFFFFFFFFFFF
# While spinning, idle checks (~0.1 us each) between two sched_yield calls (~0.5 us each).
SPIN_POLLS = 64
# _spin_busy's idle checks are NumPy calls (~1-3 us each, not ~0.1): as many as spend about
# the same few microseconds before the polling thread goes back to its naps and yields.
BUSY_POLLS = 8
# A sweep that took this many new lanes or fewer looks at each in Python (_sweep_few)
# rather than making the vector path's calls over every lane.
SMALL_SWEEP = 8


def _align(n: int, a: int = PAGE) -> int:
    return (n + a - 1) // a * a


class Backend(Protocol):  # what the server needs of a backend (gpuvfs/backends)
    def host_mapped(self, nbytes: int) -> "MappedBuffer": ...
    def device_zeros(self, nbytes: int) -> tuple[object, int]: ...


class MappedBuffer(Protocol):
    array: np.ndarray   # uint8 view the host reads and writes
    device_ptr: int     # the same bytes, as the device addresses them


class Lanes:
    """The lanes' memory as the host sees it, and the device addresses of every part."""

    def __init__(self, backend: Backend, count: int, data_bytes: int) -> None:
        if count < 1 or count > 1 << 20:
            raise ValueError(f"lanes must be between 1 and {1 << 20}, got {count}")
        if data_bytes < abi.LANE_DATA_MIN or data_bytes % 256 or data_bytes > 1 << 26:
            raise ValueError(
                f"lane_bytes must be a multiple of 256 between {abi.LANE_DATA_MIN} and {1 << 26}, got {data_bytes}")
        self.count = count
        self.data_bytes = data_bytes
        off_req_word = 0
        off_resp_word = _align(4 * count)
        off_req = off_resp_word + _align(4 * count)
        off_resp = off_req + _align(abi.REQUEST.itemsize * count)
        off_data = off_resp + _align(abi.RESPONSE.itemsize * count)
        total = off_data + data_bytes * count
        self._mem = backend.host_mapped(total)
        buf = self._mem.array
        buf[:] = 0
        dp = self._mem.device_ptr
        self.req_word = buf[off_req_word:off_req_word + 4 * count].view("<u4")
        self.resp_word = buf[off_resp_word:off_resp_word + 4 * count].view("<u4")
        self.req = buf[off_req:off_req + abi.REQUEST.itemsize * count].view(abi.REQUEST)
        self.resp = buf[off_resp:off_resp + abi.RESPONSE.itemsize * count].view(abi.RESPONSE)
        self.data = buf[off_data:off_data + data_bytes * count].reshape(count, data_bytes)
        self._data_mv = memoryview(self.data.reshape(-1))
        self._data_addr = self.data.ctypes.data
        self._dev_words, dev_ptr = backend.device_zeros(4 * count)  # lock[count]: seq << 1 | held
        self.device = {
            "count": count, "data_bytes": data_bytes,
            "req_word": dp + off_req_word, "resp_word": dp + off_resp_word,
            "req": dp + off_req, "resp": dp + off_resp, "data": dp + off_data,
            "lock": dev_ptr,
        }

    def data_address(self, lane: int) -> int:
        """The host address of `lane`'s payload (for native code that reads into it)."""
        return self._data_addr + lane * self.data_bytes

    def buffer(self, lane: int, n: int) -> memoryview:
        """The first n bytes of `lane`'s payload, for preadv/pwrite (a slice of one flat
        memoryview: ~4x cheaper than a NumPy slice wrapped in a new memoryview)."""
        o = lane * self.data_bytes
        return self._data_mv[o:o + n]

    def close(self) -> None:
        close = getattr(self._mem, "close", None)
        if close:
            close()


Handler = Callable[[int, abi.Request], "int | tuple[int, int, int, int]"]


# A handler's fast form: answers without blocking, or returns None to hand the request
# to the pool (e.g. a read whose bytes are not in the page cache).
InlineHandler = Callable[[int, abi.Request], "int | tuple[int, int, int, int] | None"]

# A handler for a sweep's requests of one opcode at once ((lane, request word) each), on the
# polling thread: it hands what it can to work that answers by itself, without blocking,
# and returns those lanes (DELEGATED, each: the server does nothing more for them). What it
# did not take goes the per-lane way (inline, then the pool), so it declines anything
# unusual: errors are answered in one place. One that raises must have taken nothing.
BatchHandler = Callable[[list[tuple[int, int]]], list[int]]


@dataclass
class _Route:
    handler: Handler
    blocking: bool
    inline: InlineHandler | None = None


class Pending:
    """A handler's answer that is not ready yet: `result` (or result, aux...) is sent once
    `done()` returns True (e.g. a copy to the device has landed). The polling thread asks
    `done()` between sweeps, so the worker that started the work is free at once; `done()`
    must not block, and an exception from it is answered -EIO."""

    __slots__ = ("done", "result")

    def __init__(self, done: Callable[[], bool], result: "int | tuple[int, ...]") -> None:
        self.done = done
        self.result = result


class Started:
    """What a handler returns when it handed the request to a completion source (see
    Server.add_source): the source reports the result for the lane later. Only the polling
    thread may return it (inline handlers), so the request is on record before any sweep
    can collect the result."""

    __slots__ = ()


STARTED = Started()


class Delegated:
    """What a handler returns when it handed the request to work that answers it by itself
    (the native readers answer the fills they take: readers.c, R4): the server neither
    tracks nor answers it. Only the polling thread may return it (inline and batch handlers),
    and the work's owner registers a CompletionSource whose busy() is true while any such
    request is out, so that the polling thread keeps polling for the requests that follow."""

    __slots__ = ()


DELEGATED = Delegated()


class CompletionSource(Protocol):
    """Work that finishes off the server's threads (the native reader pool): `ready()` says
    without blocking whether results wait; `reap()` returns them as (lane, result), where a
    result is a handler's: bytes or a count, or -errno; `busy()`, whether any request it was
    handed (STARTED or DELEGATED) is still out."""

    def ready(self) -> bool: ...
    def busy(self) -> bool: ...
    def reap(self) -> list[tuple[int, int]]: ...


class Counters:
    """Host-side counters, read by Runtime.stats(). `hostcalls` and `hostcalls_pooled` (of
    those, the requests handed to the worker pool: a handoff costs tens of microseconds, so
    a latency-bound caller wants it near 0) are written only by the polling thread (no lock
    on the hot path); the others by handlers, under one lock."""

    FIELDS = ("bytes_from_host", "bytes_to_host", "errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._v = dict.fromkeys(self.FIELDS, 0)
        self.hostcalls = 0
        self.pooled = 0
        self.native = 0                 # requests answered through a completion source
        self.ops: dict[int, int] = {}   # opcode -> requests taken (polling thread only)
        self.nops = 0                   # NOPs, counted apart on the hot path
        self._live: list[Callable[[], dict[str, int]]] = []   # counts kept elsewhere (add_live)

    @property
    def by_opcode(self) -> dict[str, int]:
        """Requests taken per opcode, by name ("unknown" for opcodes no handler knows)."""
        out: dict[str, int] = {"nop": self.nops} if self.nops else {}
        for op, n in list(self.ops.items()):
            name = abi.Op(op).name.lower() if op in abi.Op._value2member_map_ else "unknown"
            out[name] = out.get(name, 0) + n
        return out

    def add_one(self, field: str, v: int) -> None:
        """add(field=v), without building a keyword dict (the fill path calls it per request)."""
        with self._lock:
            self._v[field] += v

    def add_live(self, counts: Callable[[], dict[str, int]]) -> None:
        """Adds what `counts()` returns (snapshot()'s keys) to every snapshot: counts kept
        by someone else, e.g. the requests a completion source answered itself."""
        self._live.append(counts)

    def add(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                self._v[k] += v

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            out = {"hostcalls": self.hostcalls, "hostcalls_pooled": self.pooled, "hostcalls_native": self.native,
                   **self._v}
        for counts in self._live:
            for k, v in counts().items():
                out[k] += v
        return out


class Server:
    """Polls the lanes and answers requests; see the module docstring."""

    def __init__(self, lanes: Lanes, *, workers: int = 16, in_flight: Callable[[], bool] = lambda: False,
                 spin_seconds: float = 0.002, spin_yield: bool = True) -> None:
        self.lanes = lanes
        self.counters = Counters()
        self._routes: dict[int, _Route] = {}
        self._batched: dict[int, BatchHandler] = {}   # the routes with a batch handler, by opcode
        n = lanes.count
        # I4: the last request word taken per lane. Kept as bytes, so that the idle check is
        # one copy and one memcmp of the request words; the same memory as an array for the
        # vector path, and as a memoryview for copying a snapshot in.
        self._taken_b = bytearray(4 * n)
        self._taken = np.frombuffer(self._taken_b, dtype=_I32)
        self._taken_mv = memoryview(self._taken_b)
        # The snapshot of the request words that a sweep or a spin poll works on: one buffer
        # for the Server's life, copied into (a memcpy) rather than a new bytes object per
        # poll, with its int32 view made once (a np.frombuffer per busy sweep cost ~0.3 us).
        self._snap_b = bytearray(4 * n)
        self._snap_mv = memoryview(self._snap_b)
        self._snap = np.frombuffer(self._snap_b, dtype=_I32)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="gpuvfs-io")
        self._in_flight = in_flight
        self._spin_seconds = spin_seconds
        self._spin_yield = spin_yield
        self._wake = threading.Event()
        self._handoff = threading.Event()  # set by a pool thread as it starts a request
        self._submitted = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._busy_pool = 0                 # requests on the pool or Pending (under _busy_lock)
        self._busy_lock = threading.Lock()
        self._pending: list[tuple[int, int, Pending, int]] = []   # (lane, word, answer, length), under _busy_lock
        self._started: dict[int, tuple[int, int]] = {}   # lane -> (word, length) of a STARTED request (polling thread)
        self._sources: list[CompletionSource] = []
        self.register(abi.Op.NOP, lambda lane, q: 0)  # answered by echo in sweep(), never called
        # The hot path's views (no copies): the request words as bytes, the response words
        # for scalar stores and as int32 (the vector path), the response record's columns,
        # and preallocated sweep buffers.
        self._req_bytes = memoryview(lanes.req_word).cast("B")
        self._resp_words = memoryview(lanes.resp_word).cast("B").cast("I")
        self._resp_i32 = lanes.resp_word.view(_I32)
        self._req_rec = memoryview(lanes.req.view(np.uint8))   # the request records' bytes
        self._resp_rec = memoryview(lanes.resp.view(np.uint8))  # the response records' bytes
        self._new = np.empty(n, dtype=bool)
        # The lanes whose word is a NOP, as bytes too: "is every lane's word a NOP" is then one
        # memcmp against all_nop rather than a NumPy call (_sweep_many).
        self._nop_b = bytearray(n)
        self._nop = np.frombuffer(self._nop_b, dtype=bool)
        self._all_nop = b"\x01" * n
        self._hint4 = 0                     # 4 x the lane the last lone request came on
        self._many = False                  # the last sweep took several requests
        self._all_nops = False              # ... and every lane's word was a NOP (_spin_busy's case)
        # How many requests other than NOPs the sweep now handing them out took: what an
        # inline handler knows of the load (a cache fill is read on the polling thread only
        # when it came alone; CacheFiles.fill_inline). Set before each dispatch.
        self.dispatching = 0
        self._blank = abi.Request()         # what a handler sees of a word-only request

    # ---- configuration ----
    def register(self, op: int, handler: Handler, *, blocking: bool = False,
                 inline: InlineHandler | None = None, batch: BatchHandler | None = None) -> None:
        """Routes opcode `op` to `handler(lane, request) -> result | (result, aux0, aux1, aux2)`.

        A handler raises OSError for a -errno answer; `blocking` handlers run on the pool.
        `inline`, if given, is tried first on the polling thread: it must not block, and
        returns None when the request has to go to the pool after all. A handler that
        returns a tuple is answered through the response record; one that returns a result
        alone, through the response word's code where it fits (answer()). `batch`, if
        given, gets a sweep's requests of `op` at once when it took two or more of them
        (BatchHandler)."""
        op = int(op)
        if not 0 <= op <= 0xFF:
            raise ValueError(f"opcodes are 8 bits (they travel in the request word), got {op}")
        self._routes[op] = _Route(handler, blocking, inline)
        if batch is not None:
            self._batched[op] = batch
        else:
            self._batched.pop(op, None)

    def add_source(self, source: CompletionSource) -> None:
        """Has every sweep collect `source`'s results and answer the STARTED requests they
        belong to."""
        self._sources.append(source)

    @property
    def started(self) -> dict[int, tuple[int, int]]:
        """lane -> (word, length) of each STARTED request not answered yet (the polling
        thread's; read-only to others): a handler refuses a second request on such a lane."""
        return self._started

    def taken_word(self, lane: int) -> int:
        """The request word last taken on `lane`. While an inline or batch handler runs, that
        is its own request's word (I4: a word is marked taken before it is handed out): a
        handler that starts work which answers by itself builds the answer from its seq."""
        return _unpack(self._taken_b, 4 * lane)[0]

    # ---- answering ----
    def answer(self, lane: int, word: int, result: int, aux: tuple[int, int, int] | None = None,
               length: int | None = None) -> None:
        """Answers request `word` of `lane`. A result without aux travels in the response
        word's code alone when it is in -127..126, or when it equals `length`, the request's
        length field (code 255: a read that moved every byte asked for costs the device no
        second read across PCIe). Anything else is written into the response record, then
        the word with code 0 (x86 keeps the stores in order: the device, which reads the
        record only after its acquire of the word, sees the record)."""
        seq = word & _SEQ
        if result < 0:
            self.counters.add(errors=1)
        if aux is None:
            if _CODE_MIN <= result <= _CODE_MAX:
                self._resp_words[lane] = (result + _BIAS) << _SHIFT | seq
                return
            if result == length:
                self._resp_words[lane] = _CODE_LENGTH_WORD | seq
                return
        a0, a1, a2 = aux if aux is not None else (0, 0, 0)
        _pack_resp(self._resp_rec, lane * _RESP_SIZE, result, a0, a1, a2)
        self._resp_words[lane] = seq

    def _run_one(self, lane: int, word: int, q: abi.Request, route: _Route | None, fast: bool = False) -> bool:
        """Answers request `word` of `lane` (record `q`, `route` its opcode's); with `fast`,
        only through the route's inline form, and returns False (answering nothing) when
        that declines."""
        try:
            if route is None:
                raise OSError(errno.ENOSYS, f"unknown opcode {word >> _SHIFT}")
            out = route.inline(lane, q) if fast and route.inline else route.handler(lane, q)
            if out is None:
                return False
            if out is STARTED:                 # answered by the polling thread once a source reports it
                self._started[lane] = (word, q.length)
                return True
            if out is DELEGATED:               # answered by whoever took it
                return True
            if isinstance(out, Pending):    # answered by the polling thread once it is done
                with self._busy_lock:
                    self._busy_pool += 1
                    self._pending.append((lane, word, out, q.length))
                return True
            self._send(lane, word, out, q.length)
        except OSError as e:
            self.answer(lane, word, -(e.errno or errno.EIO))
        except Exception:  # a bug in a handler: log it, answer EIO, keep serving
            log.exception("hostcall handler for opcode %s failed", word >> _SHIFT)
            self.answer(lane, word, -errno.EIO)
        return True

    def _send(self, lane: int, word: int, out: "int | tuple[int, ...]", length: int) -> None:
        """Answers with a handler's return value: a result, or (result, aux0, aux1, aux2);
        `length`: the request's length field."""
        if type(out) is int:                 # the common answer, first
            self.answer(lane, word, out, None, length)
        elif isinstance(out, tuple):
            result, *rest = out
            aux = [int(a) & _AUX_MASK for a in rest[:3]]
            aux += [0] * (3 - len(aux))
            self.answer(lane, word, int(result), tuple(aux))  # type: ignore[arg-type]
        else:
            self.answer(lane, word, int(out), None, length)

    def _finish_pending(self) -> int:
        """The polling thread answers every Pending whose work is done; returns how many."""
        with self._busy_lock:
            waiting = self._pending
            self._pending = []
        keep, n = [], 0
        for item in waiting:
            lane, word, p, length = item
            try:
                if not p.done():
                    keep.append(item)
                    continue
                self._send(lane, word, p.result, length)
            except Exception:  # the work failed (e.g. the copy): the request fails, we go on
                log.exception("hostcall answer for lane %d failed", lane)
                self.answer(lane, word, -errno.EIO)
            n += 1
        with self._busy_lock:
            self._pending.extend(keep)
            self._busy_pool -= n
        return n

    def _reap_started(self) -> int:
        """The polling thread answers every STARTED request whose source has reported."""
        n = 0
        for src in self._sources:
            if not src.ready():
                continue
            for lane, result in src.reap():
                entry = self._started.pop(lane, None)
                if entry is None:            # a source reporting a lane it was not given: a bug
                    log.error("a completion source reported lane %d, which has no request out", lane)
                    continue
                word, length = entry
                self.answer(lane, word, result, None, length)
                n += 1
        self.counters.native += n
        return n

    def _run_pooled(self, lane: int, word: int, q: abi.Request, route: _Route) -> None:
        self._handoff.set()  # we hold the GIL now: the polling thread may go on
        try:
            self._run_one(lane, word, q, route)
        finally:
            with self._busy_lock:
                self._busy_pool -= 1

    def sweep(self, sb: bytes | bytearray | None = None) -> int:
        """One pass: the Pending answers whose work is done, then every lane. Returns how
        many of both. `sb`: as for _take."""
        finished = self._finish_pending() if self._pending else 0
        if self._started:
            finished += self._reap_started()
        return finished + self._take(sb)

    def _take(self, sb: bytes | bytearray | None = None) -> int:
        """Takes the new requests of every lane; returns how many. `sb`: a snapshot of the
        request words that differs from the words taken: the snapshot buffer itself, as the
        spin left it, or any bytes of its length (copied into it); None: take one now.

        One snapshot of the request words decides everything (I2: the words are read
        first; x86 keeps the later loads of the records after it). Nothing pending: one
        memcmp against the words taken last. One request on the lane of the last lone
        request (the latency-bound case: a thread keeps getting the same lane): found by
        patching that lane's word into the taken words and comparing again, and a NOP
        answered by echo, with no NumPy call at all. Anything else: _sweep_many."""
        taken = self._taken_b
        snap = self._snap_b
        if sb is None:
            self._snap_mv[:] = self._req_bytes
            if snap == taken:
                return 0
        elif sb is not snap:
            self._snap_mv[:] = sb
        if self._many:                       # busy lanes: the lone-lane try would only cost a
            return self._sweep_many()        # second compare of every word before the vector path
        o = self._hint4
        w = _unpack(snap, o)[0]
        old = _unpack(taken, o)[0]
        if w != old:
            _pack(taken, o, w)               # I4: taken before it is answered
            if snap == taken:                # that lane alone moved
                c = self.counters
                c.hostcalls += 1
                if w >> _SHIFT == _NOP:
                    self._resp_words[o >> 2] = w   # the echo is the answer (code 0x80: 0)
                    c.nops += 1
                else:
                    self.dispatching = 1
                    self._dispatch(o >> 2, w)
                return 1
            _pack(taken, o, old)             # more lanes moved: _sweep_many takes them all
        return self._sweep_many()

    def _sweep_many(self) -> int:
        """The vector path, on the snapshot buffer (which differs from the taken words): a
        handful of NumPy calls over the words whatever the number of lanes, on int32 views
        (a NOP's word, 0x80 in the top byte, is below 0x81000000 as int32: one compare
        finds them). Every new NOP is answered by one masked copy of its word; only the
        other new lanes' records are read. When every lane's word is a NOP (one memcmp of
        the mask, not a NumPy call) the new lanes are the new NOPs: the sweep is then the
        floor's four calls (compare, count, mask, masked copy)."""
        s, sb = self._snap, self._snap_b
        new = np.not_equal(s, self._taken, out=self._new)
        n = int(np.count_nonzero(new))       # >= 1: sb differs from the taken words
        self._taken_mv[:] = sb               # I4: this sweep takes every lane whose word moved
        self._many = n > 1
        self._all_nops = False
        c = self.counters
        c.hostcalls += n
        if n == 1:                           # a lone request: look at its lane first next time
            lane = int(new.argmax())
            self._hint4 = o = 4 * lane
            w = _unpack(sb, o)[0]
            if w >> _SHIFT == _NOP:
                c.nops += 1
                self._resp_words[lane] = w
            else:
                self.dispatching = 1
                self._dispatch(lane, w)
            return 1
        if n <= SMALL_SWEEP:
            return self._sweep_few(n)
        nop = np.less(s, _NOP_END, out=self._nop)
        # The answer to a NOP is its own word. A masked copy stores the masked elements only
        # (NumPy copies each run of True), so pool threads' answers on other lanes stand.
        if self._nop_b == self._all_nop:
            c.nops += n                      # counted before they are answered (_spin_busy)
            np.copyto(self._resp_i32, s, where=new)
            self._all_nops = True
            return n
        np.logical_and(nop, new, out=nop)
        rest = np.greater(new, nop, out=new).nonzero()[0]   # new and not a NOP
        c.nops += n - len(rest)
        np.copyto(self._resp_i32, s, where=nop)
        self._dispatch_all([(lane, _unpack(sb, 4 * lane)[0]) for lane in rest.tolist()])
        return n

    def _sweep_few(self, n: int) -> int:
        """_sweep_many's mixed case for a few new lanes (2..SMALL_SWEEP): one NumPy call finds
        them and each word is looked at in Python, where the vector path would make four more
        calls over every lane (find the NOPs, mask them, the rest, the masked copy: ~2 us
        each on the GPU host, where a cold read's sweeps take two or three fills at a time)."""
        sb, resp, c = self._snap_b, self._resp_words, self.counters
        rest = []
        for lane in self._new.nonzero()[0].tolist():
            w = _unpack(sb, 4 * lane)[0]
            if w >> _SHIFT == _NOP:
                resp[lane] = w               # the echo is the answer (code 0x80: 0)
                c.nops += 1
            else:
                rest.append((lane, w))
        self._all_nops = not rest and n == self.lanes.count   # every lane's word a NOP (_spin_busy's case)
        self._dispatch_all(rest)
        return n

    def _dispatch_all(self, reqs: list[tuple[int, int]]) -> None:
        """Hands out a sweep's new requests other than NOPs, (lane, word) each, the words
        as the sweep's snapshot has them: batch routes first, then each."""
        self.dispatching = len(reqs)
        if self._batched and len(reqs) > 1:
            reqs = self._dispatch_batches(reqs)
        for lane, word in reqs:
            self._dispatch(lane, word)

    def _dispatch_batches(self, reqs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Hands each batch route its new requests at once when there are two or more (what
        it takes, it has delegated: DELEGATED); returns the requests left for _dispatch. One call into the
        readers for a sweep's fills instead of one each, and none of _dispatch's per-request
        calls: one at a time a fill cost the polling thread ~12 us on the H100 host, which
        was then busy through most of a cold read (docs/protocol.md, the server)."""
        batched = self._batched
        groups: dict[int, list[tuple[int, int]]] = {}
        for lane, word in reqs:
            op = word >> _SHIFT
            if op in batched:
                groups.setdefault(op, []).append((lane, word))
        done: set[int] = set()
        for op, group in groups.items():
            if len(group) < 2:
                continue
            try:
                started = batched[op](group)
            except Exception:   # a bug in the handler (which then started nothing): per lane
                log.exception("hostcall batch handler for opcode %s failed", op)
                continue
            done.update(started)
            op_counts = self.counters.ops
            op_counts[op] = op_counts.get(op, 0) + len(started)
        return [r for r in reqs if r[0] not in done] if done else reqs

    def _dispatch(self, lane: int, word: int) -> None:
        op = word >> _SHIFT
        route = self._routes.get(op)
        key = op if route is not None else -1  # untrusted: unknown opcodes share one count
        op_counts = self.counters.ops
        op_counts[key] = op_counts.get(key, 0) + 1
        if route is None or op in abi.WORD_ONLY:
            q = self._blank                    # nothing to read: the device wrote no record
        else:
            # A snapshot (the handler may run later, and the words are untrusted: the device
            # could rewrite them meanwhile): one struct unpack, ~0.2 us.
            q = _request(self._req_rec, lane * _REQ_SIZE)
        if route is not None and route.blocking:
            if route.inline is not None and self._run_one(lane, word, q, route, fast=True):
                return
            with self._busy_lock:
                self._busy_pool += 1
            self.counters.pooled += 1
            self._submitted = True
            self._pool.submit(self._run_pooled, lane, word, q, route)
        else:
            self._run_one(lane, word, q, route)

    # ---- the polling thread ----
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="gpuvfs-server", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """A kernel was launched (or host work queued): start polling now."""
        self._wake.set()

    def _spin(self) -> tuple[bytearray | None, int]:
        """Polls the request words SPIN_POLLS times (a copy and a compare each, ~0.1 us).
        Returns the snapshot buffer when a poll left a snapshot in it that needs a sweep
        (else None; the buffer is the Server's own: sweep() takes it as it is, before the
        next poll overwrites it), and how many requests the polls answered themselves: a
        NOP on the lane of the last lone request (a thread calling in a loop) is answered
        right here, and the polls go on. A one-lane round
        trip waits on exactly this path, so the answer is the first store after the compares
        that find it, not after sweep()'s calls and checks (docs/protocol.md, the server).
        The bookkeeping follows the store: I4 holds, since only this thread reads the taken
        words and it marks the word taken before its next poll; and the counts cannot lag
        behind what a stats() caller sees, since no Python code of another thread runs
        between the store and the counts (no call or backward jump between them lets this
        thread give up the GIL). (_take's lone-lane path answers such a NOP the same way when
        a sweep finds it first: inlined in both, since a call before the store is the cost
        this path exists to avoid.)"""
        req_bytes, taken, resp = self._req_bytes, self._taken_b, self._resp_words
        s, snap_mv = self._snap_b, self._snap_mv
        o = self._hint4
        lane = o >> 2
        last = _unpack(taken, o)[0] if not self._many else -1   # -1: no lone lane to watch
        answered = 0
        for _ in range(SPIN_POLLS):
            snap_mv[:] = req_bytes
            if s == taken:
                continue
            if last >= 0:                    # (busy lanes: straight to the sweep)
                w = _unpack(s, o)[0]
                if w != last and w >> _SHIFT == _NOP:
                    resp[lane] = w           # the echo is the answer (code 0x80: 0)
                    _pack(taken, o, w)       # I4: taken before the next poll
                    last = w
                    c = self.counters
                    c.hostcalls += 1
                    c.nops += 1
                    answered += 1
                    if s == taken:           # that lane alone moved
                        continue
            return s, answered               # the sweep takes the other lanes
        return None, answered

    def _spin_busy(self) -> tuple[bytearray | None, int]:
        """_spin's twin for busy lanes (the last sweep took several requests, every lane's word
        was a NOP, and nothing is on the pool): sweeps in a loop of its own, as long as every
        lane's word is a NOP, with the floor's calls (copy, compare, count, masked copy) plus
        the NOP mask and its memcmp, on local names (no method call between them). Returns
        like _spin: the snapshot buffer as soon as a sweep finds anything else (one new lane,
        a lane that is not a NOP), which sweep() then takes from the start; None after
        BUSY_POLLS polls in a row found nothing new. Answering here is _sweep_many's all-NOP
        case, inlined (a call per sweep is what this loop saves); I4 holds the same way: the
        words are marked taken before the next snapshot."""
        if self._started or self._pending:
            return None, 0
        req_bytes, snap_mv, sb = self._req_bytes, self._snap_mv, self._snap_b
        taken_mv = self._taken_mv
        s, taken, new, nop = self._snap, self._taken, self._new, self._nop
        nop_b, all_nop, resp = self._nop_b, self._all_nop, self._resp_i32
        not_equal, count_nonzero, less, copyto = np.not_equal, np.count_nonzero, np.less, np.copyto
        c = self.counters
        answered = idle = 0
        while idle < BUSY_POLLS and not self._stop:
            snap_mv[:] = req_bytes
            not_equal(s, taken, out=new)
            n = int(count_nonzero(new))
            if not n:
                idle += 1
                continue
            less(s, _NOP_END, out=nop)
            if n == 1 or nop_b != all_nop:
                return sb, answered          # sweep() takes this snapshot
            c.hostcalls += n                 # counted before they are answered: a stats()
            c.nops += n                      # after the kernel never sees fewer
            copyto(resp, s, where=new)
            taken_mv[:] = sb
            answered += n
            idle = 0
        return None, answered

    def _loop(self) -> None:
        last_work = time.perf_counter()
        last_check = 0.0
        active = False
        sb = None    # a snapshot of the request words in which the spin saw a request
        while not self._stop:
            try:
                took = self.sweep(sb)
            except Exception:  # never let the polling thread die
                log.exception("hostcall sweep failed")
                took = 0
            sb = None
            now = time.perf_counter()
            if took:
                last_work = now
                active = True
                if self._submitted:
                    # Hand the GIL to the pool thread now rather than at our next nap: wait
                    # (GIL released) until it has started, 100 us at most.
                    self._submitted = False
                    self._handoff.wait(0.0001)
                    self._handoff.clear()
                elif not self._busy_pool:
                    # A thread that got its answer often calls again at once: poll a few
                    # microseconds before any nap or yield (a nap sleeps the timer slack, ~50
                    # us, and the sweep that answered took well under one). Not while the
                    # pool has work: its threads need the GIL, which the polls keep.
                    # After a sweep of NOPs on every lane, the busy twin, which answers such
                    # sweeps itself; after any other (lanes never used hold word 0, others
                    # real requests), the plain spin, whose idle poll is a memcmp.
                    sb, answered = self._spin_busy() if self._all_nops else self._spin()
                    if answered:
                        last_work = time.perf_counter()
                continue
            if now - last_check > 0.0002 or not active:
                last_check = now
                with self._busy_lock:
                    busy = self._busy_pool > 0
                active = (busy or bool(self._started) or self._in_flight()
                          or any(src.busy() for src in self._sources))
            if not active:
                # Nothing in flight: sleep until a launch wakes us. The timeout only bounds
                # how long a request written without a launch (tests) waits.
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            if now - last_work < self._spin_seconds:
                # Spin. A poll is one copy and one compare of the request words (~0.1 us);
                # sched_yield costs ~0.5 us, so it comes once per SPIN_POLLS idle polls rather
                # than after every one (a request that lands during a yield waits for it).
                # sched_yield releases the GIL but takes it straight back, so pool threads
                # waiting for the GIL would wait for Python's switch interval: while the pool
                # has work, nap for real instead (sleep(0) sleeps the timer slack, ~50 us), and
                # the requests that arrive meanwhile are taken in one sweep. On the cpu backend
                # the device threads need our core: always nap.
                if self._spin_yield and not self._busy_pool:
                    sb, answered = self._spin()   # sweep() goes on from a snapshot it returns
                    if answered:
                        last_work = time.perf_counter()
                    elif sb is None:
                        os.sched_yield()
                else:
                    time.sleep(0)
            else:
                time.sleep(0.00005)    # a kernel is running but quiet: poll every 50 us

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._pool.shutdown(wait=True)
