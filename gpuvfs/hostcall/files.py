"""Host handlers of the file opcodes: open, pread, pwrite, fstat, close, fsync, unlink.

The fd table is the Runtime's (shared by every thread of every kernel, as a process
shares its fds). Each field of a request is checked before use; a bad one gets -errno.
An fd in use by one lane cannot be closed under it by another: the OS fd is closed when
the last request using it finishes.
"""
from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass, field

from .. import abi
from .paths import Confined
from .server import Counters, Lanes, Server

MAX_OFFSET = (1 << 63) - 1
FIRST_FD = 3  # 0, 1, 2 stay free, so a device fd never looks like stdio
INLINE_READ_MAX = 256 << 10  # the polling thread answers reads (and fills) up to this size itself
CAN_READ_CACHED = hasattr(os, "RWF_NOWAIT")


def _err(code: int, what: str = "") -> OSError:
    return OSError(code, what or os.strerror(code))


def io_args(lanes: Lanes, q: abi.Request) -> tuple[int, int]:
    """The (length, offset) of a read or write request, checked."""
    n, off = q.length, q.offset
    if n > lanes.data_bytes:
        raise _err(errno.EINVAL, "length larger than the lane's buffer")
    if off > MAX_OFFSET or off + n > MAX_OFFSET:
        raise _err(errno.EINVAL, "offset out of range")
    return n, off


def read_cached(osfd: int, buf: list[memoryview], off: int) -> int | None:
    """preadv that copies only bytes already in the host's page cache (RWF_NOWAIT): the
    count, or None when some would have to come from disk or the file system cannot say."""
    try:
        return os.preadv(osfd, buf, off, os.RWF_NOWAIT)
    except BlockingIOError:
        return None
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # no RWF_NOWAIT on this file system
            return None
        raise


def read_path(lanes: Lanes, lane: int, q: abi.Request) -> bytes:
    """The NUL-terminated path a request carries in its lane, checked."""
    n = q.data_len
    if n < 1 or n > min(abi.PATH_MAX, lanes.data_bytes):
        raise _err(errno.ENAMETOOLONG if n > abi.PATH_MAX else errno.EINVAL, "bad path length")
    raw = lanes.data[lane, :n].tobytes()
    nul = raw.find(b"\0")
    if nul < 0:
        raise _err(errno.ENAMETOOLONG, "path is not NUL-terminated within its length")
    path = raw[:nul]
    if not path.startswith(b"/"):
        raise _err(errno.EINVAL, "path must be absolute")
    return path


@dataclass
class OpenFile:
    osfd: int
    path: bytes
    readable: bool
    writable: bool
    users: int = 0
    closing: bool = False


@dataclass
class FileTable:
    """Device fd -> open host file. Thread-safe."""

    max_fds: int = 65536
    _files: dict[int, OpenFile] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = FIRST_FD

    def add(self, f: OpenFile) -> int:
        with self._lock:
            if len(self._files) >= self.max_fds:
                raise _err(errno.EMFILE)
            fd = self._next  # fds are handed out round-robin, so a stale fd rarely names a new file
            while fd in self._files:
                fd = FIRST_FD + (fd - FIRST_FD + 1) % self.max_fds
            self._files[fd] = f
            self._next = FIRST_FD + (fd - FIRST_FD + 1) % self.max_fds
            return fd

    def use(self, fd: int) -> OpenFile:
        with self._lock:
            f = self._files.get(fd)
            if f is None or f.closing:
                raise _err(errno.EBADF)
            f.users += 1
            return f

    def done(self, f: OpenFile) -> None:
        with self._lock:
            f.users -= 1
            last = f.closing and f.users == 0
        if last:
            os.close(f.osfd)

    def remove(self, fd: int) -> None:
        with self._lock:
            f = self._files.pop(fd, None)
            if f is None or f.closing:
                raise _err(errno.EBADF)
            f.closing = True
            last = f.users == 0
        if last:
            os.close(f.osfd)

    def close_all(self) -> None:
        with self._lock:
            files, self._files = list(self._files.values()), {}
        for f in files:
            if not f.closing:
                f.closing = True
                if f.users == 0:
                    os.close(f.osfd)

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)


def stat_words(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_mode


def file_id(st: os.stat_result) -> int:
    return ((st.st_dev & 0xFFFFFFFF) << 32) ^ st.st_ino


class FileHandlers:
    """Registers the file opcodes on a Server and answers them inside `root`."""

    def __init__(self, server: Server, root: Confined, table: FileTable | None = None) -> None:
        self.lanes = server.lanes
        self.counters: Counters = server.counters
        self.root = root
        self.table = table if table is not None else FileTable()  # not `or`: an empty table is falsy
        server.register(abi.Op.OPEN, self.open, blocking=True)
        # The polling thread's try (RWF_NOWAIT): a small read whose bytes are all in the
        # host's page cache is answered at once; anything else goes to the pool.
        server.register(abi.Op.PREAD, self.pread, blocking=True, inline=self.pread_nowait if CAN_READ_CACHED else None)
        server.register(abi.Op.PWRITE, self.pwrite, blocking=True)
        server.register(abi.Op.FSTAT, self.fstat, blocking=True)
        server.register(abi.Op.CLOSE, self.close, blocking=False)
        server.register(abi.Op.FSYNC, self.fsync, blocking=True)
        server.register(abi.Op.UNLINK, self.unlink, blocking=True)

    def _fd(self, q: abi.Request) -> int:
        return q.fd

    def open(self, lane: int, q: abi.Request) -> tuple[int, int, int, int]:
        path = read_path(self.lanes, lane, q)
        flags = q.flags
        acc = flags & abi.O_ACCMODE
        if flags & ~abi.O_KNOWN or acc == abi.O_ACCMODE:
            raise _err(errno.EINVAL, "unknown open flags")
        osflags = {abi.O_RDONLY: os.O_RDONLY, abi.O_WRONLY: os.O_WRONLY, abi.O_RDWR: os.O_RDWR}[acc]
        for mine, theirs in ((abi.O_CREAT, os.O_CREAT), (abi.O_EXCL, os.O_EXCL),
                             (abi.O_TRUNC, os.O_TRUNC), (abi.O_APPEND, os.O_APPEND)):
            if flags & mine:
                osflags |= theirs
        osfd = self.root.open(path, osflags)
        try:
            st = os.fstat(osfd)
            fd = self.table.add(OpenFile(osfd, path, acc != abi.O_WRONLY, acc != abi.O_RDONLY))
        except BaseException:
            os.close(osfd)
            raise
        return fd, st.st_size, st.st_mtime_ns, file_id(st)

    def pread(self, lane: int, q: abi.Request) -> int:
        return self._pread(lane, q, nowait=False)  # type: ignore[return-value]

    def pread_nowait(self, lane: int, q: abi.Request) -> int | None:
        """PREAD from the page cache alone, or None (see __init__)."""
        return self._pread(lane, q, nowait=True)

    def _pread(self, lane: int, q: abi.Request, nowait: bool) -> int | None:
        n, off = io_args(self.lanes, q)
        if nowait and n > INLINE_READ_MAX:
            return None
        f = self.table.use(self._fd(q))
        try:
            if not f.readable:
                raise _err(errno.EBADF, "fd not open for reading")
            buf = [self.lanes.buffer(lane, n)]
            if not n:
                got = 0
            elif nowait:
                got = read_cached(f.osfd, buf, off)
                if got is None or got < n:  # part not cached, or the end of the file: the pool decides
                    return None
            else:
                got = os.preadv(f.osfd, buf, off)
        finally:
            self.table.done(f)
        self.counters.add_one("bytes_from_host", got)
        return got

    def pwrite(self, lane: int, q: abi.Request) -> int:
        n, off = io_args(self.lanes, q)
        if q.data_len != n:
            raise _err(errno.EINVAL, "data_len differs from length")
        f = self.table.use(self._fd(q))
        try:
            if not f.writable:
                raise _err(errno.EBADF, "fd not open for writing")
            put = os.pwrite(f.osfd, self.lanes.buffer(lane, n), off) if n else 0
        finally:
            self.table.done(f)
        self.counters.add_one("bytes_to_host", put)
        return put

    def fstat(self, lane: int, q: abi.Request) -> tuple[int, int, int, int]:
        f = self.table.use(self._fd(q))
        try:
            st = os.fstat(f.osfd)
        finally:
            self.table.done(f)
        return (0, *stat_words(st))

    def close(self, lane: int, q: abi.Request) -> int:
        self.table.remove(self._fd(q))
        return 0

    def fsync(self, lane: int, q: abi.Request) -> int:
        f = self.table.use(self._fd(q))
        try:
            os.fsync(f.osfd)
        finally:
            self.table.done(f)
        return 0

    def unlink(self, lane: int, q: abi.Request) -> int:
        path = read_path(self.lanes, lane, q)
        self.root.unlink(path)
        return 0


__all__ = ["FileHandlers", "FileTable", "OpenFile", "io_args", "read_cached", "read_path", "stat_words", "file_id"]
