"""Host handlers of the stdio and time opcodes: a line to stdout/stderr, a line of stdin,
and the wall clock; and the device state of the wall-clock cache (docs/stdio.md).

A line from the device is written with one call under one lock (shared by stdout and
stderr) and flushed, so lines from many threads never interleave and a thread's lines come
in the order it wrote them (each gvfs_printf waits for its answer). `stdout`/`stderr`/`stdin`
are callables returning binary streams (default: the process's own, looked up at each call
so redirections made later are honoured); a text stream is used through its `.buffer`, or
by decoding UTF-8 when it has none (io.StringIO).

Newline convention: the device sends a line without its final newline and the host adds
one. A stdin line goes to the device as read, '\\n' included (fgets style; see
gvfs_read_line in device/gvfs/stdio.cuh).
"""
from __future__ import annotations

import errno
import io
import sys
import threading
import time
from typing import Any, BinaryIO, Callable

import numpy as np

from .. import abi
from .server import Server

# device/gvfs/stdio.cuh: struct gvfs_stdio_state (the wall-clock cache), 64 bytes.
STDIO_STATE = np.dtype(
    [("seq", "<u4"), ("rtt_ns", "<u4"), ("off_lo", "<u4"), ("off_hi", "<u4"), ("at_lo", "<u4"),
     ("at_hi", "<u4"), ("cache_ns", "<u8"), ("max_rtt_ns", "<u8"), ("reserved", "<u8", (3,))],
    align=True,
)
assert STDIO_STATE.itemsize == 64

# The wall-clock cache's defaults. A cached answer is off from the host's clock by at most
# max_rtt/2 (when the entry was made) + cache_ns x the rate difference of the device clock
# and the host's wall clock (<= 500 ppm even while NTP slews: 5 us over 10 ms), and a step of
# the host's clock (settimeofday, an NTP step) shows on the device within cache_ns.
WALLCLOCK_CACHE_NS = 10_000_000      # 10 ms
WALLCLOCK_MAX_RTT_NS = 200_000       # 200 us: bound 100 us + 5 us


def _default_out() -> BinaryIO:
    return sys.stdout.buffer


def _default_err() -> BinaryIO:
    return sys.stderr.buffer


def _default_in() -> BinaryIO:
    return sys.stdin.buffer


def _binary(stream: Any) -> Any:
    if isinstance(stream, io.TextIOBase) and hasattr(stream, "buffer"):
        return stream.buffer
    return stream


class StdioHandlers:
    def __init__(self, server: Server, *, stdout: Callable[[], BinaryIO] | None = None,
                 stderr: Callable[[], BinaryIO] | None = None, stdin: Callable[[], BinaryIO] | None = None,
                 wallclock_cache_ns: int = WALLCLOCK_CACHE_NS,
                 wallclock_max_rtt_ns: int = WALLCLOCK_MAX_RTT_NS) -> None:
        self.lanes = server.lanes
        self.counters = server.counters
        self._streams = {abi.STDOUT: stdout or _default_out, abi.STDERR: stderr or _default_err}
        self._default = {abi.STDOUT: stdout is None, abi.STDERR: stderr is None}
        self._stdin = stdin or _default_in
        self._out_lock = threading.Lock()    # one lock for both: a line never splits another
        self._in_lock = threading.Lock()
        self._wallclock = (int(wallclock_cache_ns), int(wallclock_max_rtt_ns))
        self._state: tuple[Any, Any] | None = None   # (backend, device array) once attached
        server.register(abi.Op.WRITE_LINE, self.write_line, blocking=True)
        server.register(abi.Op.READ_LINE, self.read_line, blocking=True)
        server.register(abi.Op.WALLCLOCK, self.wallclock, blocking=False)

    # ---- the device state ----
    def attach_device(self, backend: Any) -> int:
        """Allocates the wall-clock cache in device memory; returns its address for ctx.stdio."""
        arr, ptr = backend.device_zeros(STDIO_STATE.itemsize)
        self._state = (backend, arr)
        self.configure_wallclock_cache(*self._wallclock)
        return int(ptr)

    def configure_wallclock_cache(self, cache_ns: int, max_rtt_ns: int | None = None) -> None:
        """Sets how long a cached wall-clock entry serves on the device (0: every call is a
        hostcall) and the longest refresh round trip that may fill the cache. Call it between
        launches; it also empties the cache."""
        if cache_ns < 0 or (max_rtt_ns is not None and max_rtt_ns < 0):
            raise ValueError("wall-clock cache settings must be >= 0")
        self._wallclock = (int(cache_ns), self._wallclock[1] if max_rtt_ns is None else int(max_rtt_ns))
        if self._state is None:
            return
        backend, arr = self._state
        st = np.zeros(1, dtype=STDIO_STATE)
        st["cache_ns"], st["max_rtt_ns"] = self._wallclock
        backend.copy_to_device(arr, st.view(np.uint8))

    def wallclock_cache_state(self) -> dict[str, int]:
        """The device's cache entry as it stands (for tests and diagnostics)."""
        if self._state is None:
            return {}
        backend, arr = self._state
        st = np.asarray(backend.to_host(arr)).view(STDIO_STATE)[0]
        off = (int(st["off_hi"]) << 32 | int(st["off_lo"]))
        off -= (1 << 64) if off >> 63 else 0
        return {"seq": int(st["seq"]), "rtt_ns": int(st["rtt_ns"]), "offset_ns": off,
                "at_ns": int(st["at_hi"]) << 32 | int(st["at_lo"]),
                "cache_ns": int(st["cache_ns"]), "max_rtt_ns": int(st["max_rtt_ns"])}

    # ---- handlers ----
    def write_line(self, lane: int, q: abi.Request) -> int:
        which = q.flags
        get = self._streams.get(which)
        n = q.length
        if get is None:
            raise OSError(errno.EBADF, "stream must be 1 (stdout) or 2 (stderr)")
        if n > self.lanes.data_bytes or q.data_len != n:
            raise OSError(errno.EINVAL, "bad line length")
        line = self.lanes.data[lane, :n].tobytes() + b"\n"
        with self._out_lock:
            if self._default[which]:
                # What Python code printed before (sys.stdout's text buffer) goes out first.
                text = sys.stdout if which == abi.STDOUT else sys.stderr
                if text is not None:
                    text.flush()
            s = get()
            if s is None:
                raise OSError(errno.EBADF, "the stream is closed")
            s = _binary(s)
            try:
                s.write(line)
            except TypeError:        # a text stream without .buffer (io.StringIO)
                s.write(line.decode("utf-8", errors="replace"))
            s.flush()
        self.counters.add(bytes_to_host=n)
        return n

    def read_line(self, lane: int, q: abi.Request) -> int:
        cap = q.length
        if cap < 1 or cap > self.lanes.data_bytes:
            raise OSError(errno.EINVAL, "bad capacity")
        with self._in_lock:
            s = self._stdin()
            if s is None:
                raise OSError(errno.EBADF, "no stdin")
            try:
                line = _binary(s).readline(cap)
            except (OSError, ValueError) as e:  # closed or unreadable stdin
                raise OSError(getattr(e, "errno", None) or errno.EIO, str(e)) from None
        if isinstance(line, str):
            line = line.encode()
        if len(line) > cap:  # a text stream counts characters, not bytes
            raise OSError(errno.EIO, "stdin line longer than asked for")
        n = len(line)
        if n:
            self.lanes.data[lane, :n] = np.frombuffer(line, dtype=np.uint8)
        self.counters.add(bytes_from_host=n)
        return n

    def wallclock(self, lane: int, q: abi.Request) -> int:
        return time.time_ns()
