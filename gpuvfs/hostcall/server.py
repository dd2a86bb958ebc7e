"""The hostcall server: the host half of the protocol in device/gvfs/hostcall.cuh.

The lanes live in one block of pinned host memory mapped into the device (on the cpu
backend, plain host memory). The server sweeps every lane at once with NumPy, takes the
requests whose sequence number moved, answers cheap opcodes on the polling thread (NOP in
one vectorised step), and hands those that can block (file IO, stdin) to a thread pool so
one slow read never stalls other lanes. Every field read from a lane is untrusted:
handlers validate it and answer -errno; nothing a lane says can stop the server.

While no kernel of the runtime is in flight (and nothing is pending) the polling thread
sleeps on an event: it does not burn a core.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .. import abi

log = logging.getLogger("gpuvfs.hostcall")

PAGE = 4096


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
        off_req_seq = 0
        off_resp_seq = _align(4 * count)
        off_req = off_resp_seq + _align(4 * count)
        off_resp = off_req + _align(abi.REQUEST.itemsize * count)
        off_data = off_resp + _align(abi.RESPONSE.itemsize * count)
        total = off_data + data_bytes * count
        self._mem = backend.host_mapped(total)
        buf = self._mem.array
        buf[:] = 0
        dp = self._mem.device_ptr
        self.req_seq = buf[off_req_seq:off_req_seq + 4 * count].view("<u4")
        self.resp_seq = buf[off_resp_seq:off_resp_seq + 4 * count].view("<u4")
        self.req = buf[off_req:off_req + abi.REQUEST.itemsize * count].view(abi.REQUEST)
        self.resp = buf[off_resp:off_resp + abi.RESPONSE.itemsize * count].view(abi.RESPONSE)
        self.data = buf[off_data:off_data + data_bytes * count].reshape(count, data_bytes)
        self._dev_words, dev_ptr = backend.device_zeros(8 * count)  # lock[count], seq[count]
        self.device = {
            "count": count, "data_bytes": data_bytes,
            "req_seq": dp + off_req_seq, "resp_seq": dp + off_resp_seq,
            "req": dp + off_req, "resp": dp + off_resp, "data": dp + off_data,
            "lock": dev_ptr, "seq": dev_ptr + 4 * count,
        }

    def close(self) -> None:
        close = getattr(self._mem, "close", None)
        if close:
            close()


Handler = Callable[[int, np.void], "int | tuple[int, int, int, int]"]


# A handler's fast form: answers without blocking, or returns None to hand the request
# to the pool (e.g. a read whose bytes are not in the page cache).
InlineHandler = Callable[[int, np.void], "int | tuple[int, int, int, int] | None"]


@dataclass
class _Route:
    handler: Handler
    blocking: bool
    inline: InlineHandler | None = None


class Counters:
    """Host-side counters, read by Runtime.stats(). `hostcalls` is written only by the
    polling thread (no lock on the hot path); the others by handlers, under one lock."""

    FIELDS = ("bytes_from_host", "bytes_to_host", "errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._v = dict.fromkeys(self.FIELDS, 0)
        self.hostcalls = 0
        self.ops: dict[int, int] = {}   # opcode -> requests taken (polling thread only)
        self.nops = 0                   # NOPs, counted apart on the hot path

    @property
    def by_opcode(self) -> dict[str, int]:
        """Requests taken per opcode, by name ("unknown" for opcodes no handler knows)."""
        out: dict[str, int] = {"nop": self.nops} if self.nops else {}
        for op, n in list(self.ops.items()):
            name = abi.Op(op).name.lower() if op in abi.Op._value2member_map_ else "unknown"
            out[name] = out.get(name, 0) + n
        return out

    def add(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                self._v[k] += v

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"hostcalls": self.hostcalls, **self._v}


class Server:
    """Polls the lanes and answers requests; see the module docstring."""

    def __init__(self, lanes: Lanes, *, workers: int = 16, in_flight: Callable[[], bool] = lambda: False,
                 spin_seconds: float = 0.002, spin_yield: bool = True) -> None:
        self.lanes = lanes
        self.counters = Counters()
        self._routes: dict[int, _Route] = {}
        self._taken = np.zeros(lanes.count, dtype="<u4")   # I4: last sequence taken per lane
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="gpuvfs-io")
        self._in_flight = in_flight
        self._spin_seconds = spin_seconds
        self._spin_yield = spin_yield
        self._wake = threading.Event()
        self._handoff = threading.Event()  # set by a pool thread as it starts a request
        self._submitted = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._busy_pool = 0
        self._busy_lock = threading.Lock()
        self.register(abi.Op.NOP, lambda lane, q: 0)  # answered vectorised in sweep()
        # Views for the hot path (strided views into the lanes: no copies).
        self._req_opcode = lanes.req["opcode"]
        self._resp_result = lanes.resp["result"]
        self._resp_aux = lanes.resp["aux"]

    # ---- configuration ----
    def register(self, op: int, handler: Handler, *, blocking: bool = False,
                 inline: InlineHandler | None = None) -> None:
        """Routes opcode `op` to `handler(lane, request) -> result | (result, aux0, aux1, aux2)`.

        A handler raises OSError for a -errno answer; `blocking` handlers run on the pool.
        `inline`, if given, is tried first on the polling thread: it must not block, and
        returns None when the request has to go to the pool after all."""
        self._routes[int(op)] = _Route(handler, blocking, inline)

    # ---- answering ----
    def answer(self, lane: int, seq: int, result: int, aux: tuple[int, int, int] = (0, 0, 0)) -> None:
        """Writes the response, then the sequence number (x86 keeps the stores in order)."""
        self._resp_aux[lane] = aux        # column views: a structured scalar's field
        self._resp_result[lane] = result  # stores cost microseconds each
        if result < 0:
            self.counters.add(errors=1)
        self.lanes.resp_seq[lane] = seq

    def _run_one(self, lane: int, seq: int, q: np.void, fast: bool = False) -> bool:
        """Answers one request; with `fast`, only through the route's inline form, and
        returns False (answering nothing) when that declines."""
        route = self._routes.get(int(q["opcode"]))
        try:
            if route is None:
                raise OSError(errno.ENOSYS, f"unknown opcode {int(q['opcode'])}")
            out = route.inline(lane, q) if fast and route.inline else route.handler(lane, q)
            if out is None:
                return False
            result, *aux = out if isinstance(out, tuple) else (out, 0, 0, 0)
            aux = tuple(int(a) & 0xFFFFFFFFFFFFFFFF for a in aux) + (0,) * (3 - len(aux))
            self.answer(lane, seq, int(result), aux[:3])  # type: ignore[arg-type]
        except OSError as e:
            self.answer(lane, seq, -(e.errno or errno.EIO))
        except Exception:  # a bug in a handler: log it, answer EIO, keep serving
            log.exception("hostcall handler for opcode %s failed", int(q["opcode"]))
            self.answer(lane, seq, -errno.EIO)
        return True

    def _run_pooled(self, lane: int, seq: int, q: np.void) -> None:
        self._handoff.set()  # we hold the GIL now: the polling thread may go on
        try:
            self._run_one(lane, seq, q)
        finally:
            with self._busy_lock:
                self._busy_pool -= 1

    def sweep(self) -> int:
        """One pass over every lane; returns how many requests it took.

        The hot path is a handful of NumPy calls whatever the number of lanes: one compare
        finds the pending lanes; NOPs are answered in three vectorised stores; one pending
        lane (the latency-bound case) is handled with scalar reads of prebuilt views."""
        L = self.lanes
        # Read the sequence words first (I2); x86 keeps the later loads of the requests
        # after this one. A pending lane's word cannot move until we answer it.
        pending = np.flatnonzero(L.req_seq != self._taken)
        n = pending.size
        if n == 0:
            return 0
        self.counters.hostcalls += n
        if n == 1:
            lane = int(pending[0])
            seq = int(L.req_seq[lane])
            self._taken[lane] = seq
            if self._req_opcode[lane] == abi.Op.NOP:
                self._resp_result[lane] = 0
                L.resp_seq[lane] = seq
                self.counters.nops += 1
                return 1
            self._dispatch(lane, seq, L.req[lane].copy())
            return 1
        seqs = L.req_seq[pending]
        self._taken[pending] = seqs
        ops = self._req_opcode[pending]
        nop = ops == abi.Op.NOP
        n_nop = int(np.count_nonzero(nop))
        if n_nop:
            idx = pending if n_nop == n else pending[nop]
            self._resp_result[idx] = 0
            L.resp_seq[idx] = seqs if n_nop == n else seqs[nop]
            self.counters.nops += n_nop
            if n_nop == n:
                return n
        rest = np.flatnonzero(~nop)
        reqs = L.req[pending[rest]]           # copies: handlers see a snapshot
        for j, i in enumerate(rest.tolist()):
            self._dispatch(int(pending[i]), int(seqs[i]), reqs[j])
        return n

    def _dispatch(self, lane: int, seq: int, q: np.void) -> None:
        op = int(q["opcode"])
        route = self._routes.get(op)
        key = op if route is not None else -1  # untrusted: unknown opcodes share one count
        op_counts = self.counters.ops
        op_counts[key] = op_counts.get(key, 0) + 1
        if route is not None and route.blocking:
            if route.inline is not None and self._run_one(lane, seq, q, fast=True):
                return
            with self._busy_lock:
                self._busy_pool += 1
            self._submitted = True
            self._pool.submit(self._run_pooled, lane, seq, q)
        else:
            self._run_one(lane, seq, q)

    # ---- the polling thread ----
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="gpuvfs-server", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """A kernel was launched (or host work queued): start polling now."""
        self._wake.set()

    def _loop(self) -> None:
        last_work = time.perf_counter()
        last_check = 0.0
        active = False
        while not self._stop:
            try:
                took = self.sweep()
            except Exception:  # never let the polling thread die
                log.exception("hostcall sweep failed")
                took = 0
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
                continue
            if now - last_check > 0.0002 or not active:
                last_check = now
                with self._busy_lock:
                    busy = self._busy_pool > 0
                active = busy or self._in_flight()
            if not active:
                # Nothing in flight: sleep until a launch wakes us. The timeout only bounds
                # how long a request written without a launch (tests) waits.
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            if now - last_work < self._spin_seconds:
                # Spin. sched_yield releases the GIL but takes it straight back, so pool
                # threads waiting for the GIL would wait for Python's switch interval: while
                # the pool has work, nap for real instead (sleep(0) sleeps the timer slack,
                # ~50 us), and the requests that arrive meanwhile are taken in one sweep.
                # On the cpu backend the device threads need our core: always nap.
                if self._spin_yield and not self._busy_pool:
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
