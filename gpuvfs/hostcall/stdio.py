"""Host handlers of the stdio and time opcodes: a line to stdout/stderr, a line of stdin,
and the wall clock.

A line from the device is written with one call under the stream's lock, so lines from
many threads never interleave. `stdout`/`stdin` are binary streams (default: the process's
own, looked up at each call so redirections made later are honoured).
"""
from __future__ import annotations

import errno
import sys
import threading
import time
from typing import BinaryIO, Callable

import numpy as np

from .. import abi
from .server import Server


def _default_out() -> BinaryIO:
    return sys.stdout.buffer


def _default_err() -> BinaryIO:
    return sys.stderr.buffer


def _default_in() -> BinaryIO:
    return sys.stdin.buffer


class StdioHandlers:
    def __init__(self, server: Server, *, stdout: Callable[[], BinaryIO] | None = None,
                 stderr: Callable[[], BinaryIO] | None = None, stdin: Callable[[], BinaryIO] | None = None) -> None:
        self.lanes = server.lanes
        self.counters = server.counters
        self._streams = {abi.STDOUT: stdout or _default_out, abi.STDERR: stderr or _default_err}
        self._stdin = stdin or _default_in
        self._out_lock = threading.Lock()    # one lock for both: a line never splits another
        self._in_lock = threading.Lock()
        server.register(abi.Op.WRITE_LINE, self.write_line, blocking=True)
        server.register(abi.Op.READ_LINE, self.read_line, blocking=True)
        server.register(abi.Op.WALLCLOCK, self.wallclock, blocking=False)

    def write_line(self, lane: int, q: np.void) -> int:
        stream = self._streams.get(int(q["flags"]))
        n = int(q["length"])
        if stream is None:
            raise OSError(errno.EBADF, "stream must be 1 (stdout) or 2 (stderr)")
        if n > self.lanes.data_bytes or int(q["data_len"]) != n:
            raise OSError(errno.EINVAL, "bad line length")
        line = self.lanes.data[lane, :n].tobytes() + b"\n"
        with self._out_lock:
            s = stream()
            s.write(line)
            s.flush()
        self.counters.add(bytes_to_host=n)
        return n

    def read_line(self, lane: int, q: np.void) -> int:
        cap = int(q["length"])
        if cap < 1 or cap > self.lanes.data_bytes:
            raise OSError(errno.EINVAL, "bad capacity")
        with self._in_lock:
            try:
                line = self._stdin().readline(cap)
            except (OSError, ValueError) as e:  # closed or unreadable stdin
                raise OSError(getattr(e, "errno", None) or errno.EIO, str(e)) from None
        n = len(line)
        self.lanes.data[lane, :n] = np.frombuffer(line, dtype=np.uint8)
        self.counters.add(bytes_from_host=n)
        return n

    def wallclock(self, lane: int, q: np.void) -> int:
        return time.time_ns()
