"""Host handlers of the page cache's opcodes: LOOKUP (open a file for the cache), FILL
(read bytes of one file version into a lane) and FILL_PUSH (read them, then copy them into
the lane's stage in device memory: one DMA, where the GPU would pull across PCIe).

A *file version* (file_no) names a file as it was when looked up: (device, inode, size,
mtime). The device keys its pages by version, so when the host sees that a file changed
(a LOOKUP finds another size or mtime) it hands out a new version, and the old version's
pages can never be mixed with the new one's. A FILL for a version whose file has changed
since is answered -ESTALE rather than with bytes of the new file (docs/consistency.md).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import abi
from .files import CAN_READ_CACHED, INLINE_READ_MAX, MAX_OFFSET, io_args, read_cached, read_path
from .paths import Confined
from .readers import JOB, NativeReaders, native_readers_wanted
from .server import DELEGATED, STARTED, Delegated, Pending, Server, Started

log = logging.getLogger("gpuvfs.hostcall")

MAX_FILE_NO = (1 << (64 - abi.PAGE_BITS)) - 1
# A fill this small is read on the polling thread whatever the load (when its bytes are all
# in the page cache): its copy costs about what handing it to a reader and answering it
# later would cost the polling thread anyway (fill_inline).
FILL_INLINE_TINY = 16 << 10
# Whether the native readers copy a file version's bytes from a mapping of it (readers.c:
# mapped files) rather than pread them, and up to how many bytes of versions are mapped at
# once (the page tables of what was touched cost ~2 MiB a GiB; past the budget, versions are
# read). Read when a CacheFiles is made. Off: a mapping pays only while it is kept from one
# read of a file to the next (the readers' CPU time per cold read fell ~40% on the H100
# host), but a kept mapping holds the file's pages where drop_caches cannot reach them, so
# Runtime.evict() unmaps; and a read that maps afresh ran no faster than pread, and from a
# cold disk slower (docs/benchmarks.md, sixteenth session).
MAP_FILES = False
MAP_BYTES_MAX = 64 << 30
_ANSWER_LENGTH = abi.CODE_LENGTH << abi.WORD_SHIFT   # code 255: "the length you asked for"


def _close_quietly(fd: int) -> None:
    """Closes a version's read-only fd. A close that fails (EIO from a network file system)
    has lost nothing: the fd is gone either way, and a reader's answer must still go out."""
    try:
        os.close(fd)
    except OSError as e:
        log.warning("closing a cached file's descriptor failed: %s", e)


@dataclass
class Version:
    file_no: int
    path: bytes
    osfd: int
    dev: int
    ino: int
    size: int
    mtime_ns: int
    mode: int
    users: int = 0      # holds of the Python side (_use/_release)
    retired: bool = False
    mapped: int = 0     # where the native readers copy it from (CacheFiles._src); 0: not mapped, -1: never
    hold: tuple[int, int] = (-1, 0)   # its pair of the native readers' holds (_Holds): (slot, address)
    closed: bool = False


class _Holds:
    """The native readers' words about versions (readers.c, R5), a pair of int32 per version:
    holds (a job adds one when queued and takes it back when it no longer touches the file)
    and stale (set by a job that found the file changed). In blocks that never move: the
    readers have their addresses."""

    BLOCK = 1024

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self._free: list[int] = []

    def take(self) -> tuple[int, int]:
        """A pair at 0: (slot, address)."""
        if not self._free:
            self._blocks.append(np.zeros((self.BLOCK, 2), dtype=np.int32))
            base = (len(self._blocks) - 1) * self.BLOCK
            self._free.extend(range(base + self.BLOCK - 1, base - 1, -1))
        slot = self._free.pop()
        return slot, self._blocks[slot // self.BLOCK].ctypes.data + 8 * (slot % self.BLOCK)

    def count(self, slot: int) -> int:
        return int(self._blocks[slot // self.BLOCK][slot % self.BLOCK, 0])

    def stale(self, slot: int) -> bool:
        return bool(self._blocks[slot // self.BLOCK][slot % self.BLOCK, 1])

    def give(self, slot: int) -> None:
        """Gives back a pair whose holds are at 0 (no reader writes it any more)."""
        self._blocks[slot // self.BLOCK][slot % self.BLOCK, 1] = 0
        self._free.append(slot)


class CacheFiles:
    """The registry of file versions the device caches pages of."""

    def __init__(self, server: Server, root: Confined, *, workers: int = 16) -> None:
        self._server = server
        self.lanes = server.lanes
        self.counters = server.counters
        self.root = root
        self._lock = threading.Lock()
        self._current: dict[tuple[int, int], Version] = {}  # (dev, ino) -> newest version
        self._by_no: dict[int, Version] = {}
        self._next_no = 1
        # Fills run on native reader threads where they can be built (readers.py): the
        # polling thread queues them, and each reader answers its fill itself (readers.c, R4);
        # a pushed fill comes back through reap(), and the polling thread answers it.
        self._readers: NativeReaders | None = None
        self._holds = _Holds()
        self._closing: list[Version] = []   # retired, but still held by a native read (under _lock)
        self._stale_seen = 0                 # the readers' stale count when last looked at (_retire_stale)
        # fill_batch's request records (read by struct, as the server's), and the jobs it
        # packs for the readers: one per lane at most.
        self._req_rec = memoryview(self.lanes.req.view(np.uint8))
        self._jobs = bytearray(JOB.size * self.lanes.count)
        self._jobs_address = ctypes.addressof(ctypes.c_char.from_buffer(self._jobs))
        if native_readers_wanted():
            try:
                self._readers = NativeReaders(max(1, workers), self.lanes.count)
            except OSError as e:
                log.info("cache fills run on the Python worker pool: %s", e.strerror or e)
        self._map_files = MAP_FILES
        self._mapped_bytes = 0       # of the versions mapped now (under _lock)
        # (kept past close(): the versions are unmapped once the readers are gone)
        self._unmap = self._readers.unmap_file if self._readers is not None else None
        self._busy = np.zeros(self.lanes.count, dtype=np.uint8)   # the readers' busy flag per lane
        if self._readers is not None:
            server.add_source(self)
            self._readers.answer_into(self.lanes.resp_word.ctypes.data, self.lanes.resp.ctypes.data, self.lanes.count)
            assert self._readers.busy is not None
            self._busy = self._readers.busy
            # The server counts what the readers answered from the pool's own counts (each
            # stored before its answer, so a stats() after a kernel is not short; kept
            # readable after close()).
            server.counters.add_live(self._reader_counts(self._readers))
        server.register(abi.Op.LOOKUP, self.lookup, blocking=True)
        # The polling thread's try: a small fill whose bytes are all in the host's page cache
        # (RWF_NOWAIT) is answered at once; any other goes to the native readers, or where
        # there are none, to the pool.
        inline = self.fill_inline if (CAN_READ_CACHED or self._readers is not None) else None
        server.register(abi.Op.FILL, self.fill, blocking=True, inline=inline,
                        batch=self.fill_batch if self._readers is not None else None)
        server.register(abi.Op.FILL_PUSH, self.fill_push, blocking=True, inline=self.fill_push_inline)
        self._stage: tuple[object, int] | None = None  # (backend, device pointer)
        self._push_native = False   # FILL_PUSH runs on the native readers too (attach_stage)

    def attach_stage(self, backend: object, stage_ptr: int) -> None:
        """The lanes' stage in device memory (lanes x lane_bytes) that FILL_PUSH copies into.
        Call before any kernel runs (the native readers make their CUDA streams here)."""
        self._stage = (backend, stage_ptr)
        if self._readers is None:
            return
        try:
            if getattr(backend, "name", "") == "cuda":
                self._readers.push_by_cuda()
            else:   # the cpu backend: device memory is host memory
                self._readers.push_by_memcpy()
            self._push_native = True
        except OSError as e:
            log.info("pushed cache fills run on the Python worker pool: %s", e.strerror or e)

    # ---- versions ----
    def _retire(self, v: Version) -> None:
        """Called with the lock held: the version can no longer be filled."""
        if not v.retired:
            v.retired = True
            self._by_no.pop(v.file_no, None)
            if self._current.get((v.dev, v.ino)) is v:
                del self._current[(v.dev, v.ino)]
            self._close_if_free(v)

    def _close_if_free(self, v: Version) -> None:
        """Called with the lock held, for a retired version: closes it once nothing holds it
        (neither the Python side nor a native read), else keeps it for a later look."""
        if v.closed:
            return
        if v.users == 0 and (v.hold[0] < 0 or self._holds.count(v.hold[0]) == 0):
            self._dispose(v)
        elif v not in self._closing:
            self._closing.append(v)

    def _look_at_closing(self) -> None:
        """Called with the lock held: closes the retired versions no read holds any more."""
        waiting, self._closing = self._closing, []
        for v in waiting:
            self._close_if_free(v)

    def _retire_stale(self) -> None:
        """Called with the lock held: retires the versions a native read found changed since
        the last look (the readers answer such fills -ESTALE themselves, and mark the
        version: readers.c, R5), then closes what no read holds any more. One load when
        nothing went stale."""
        stale = self._readers.stale_count() if self._readers is not None else self._stale_seen
        if stale != self._stale_seen:
            self._stale_seen = stale
            for v in [v for v in self._by_no.values() if self._holds.stale(v.hold[0])]:
                self._retire(v)
        if self._closing:
            self._look_at_closing()

    def _dispose(self, v: Version) -> None:
        """Called with the lock held, once a retired version has no holds: its mapping, its
        hold counter and its fd go."""
        v.closed = True
        if v.hold[0] >= 0:
            self._holds.give(v.hold[0])
            v.hold = (-1, 0)
        self._unmap_version(v)                # no job copies from it: no job holds it
        v.mapped = -1
        _close_quietly(v.osfd)

    def _unmap_version(self, v: Version) -> None:
        """Called with the lock held, for a version no native read holds: unmaps it if it
        is mapped (v.mapped 0: a later fill maps it again). A munmap that fails leaves the
        mapping, and its bytes, counted."""
        if v.mapped <= 0 or self._unmap is None:
            return
        try:
            self._unmap(v.mapped, v.size)
        except OSError as e:
            log.warning("unmapping a cached file failed: %s", e)
            return
        self._mapped_bytes -= v.size
        v.mapped = 0

    def _src(self, v: Version) -> int:
        """Called with the lock held: where the native readers copy version `v` from, mapped
        at its first fill; 0 (they pread it) when mapping is off, over MAP_BYTES_MAX, or the
        file cannot be mapped."""
        if v.mapped:
            return max(v.mapped, 0)
        v.mapped = -1
        if self._map_files and self._readers is not None and 0 < v.size <= MAP_BYTES_MAX - self._mapped_bytes:
            addr = self._readers.map_file(v.osfd, v.size)
            if addr:
                v.mapped = addr
                self._mapped_bytes += v.size
        return max(v.mapped, 0)

    def unmap(self, file_nos: list[int] | None = None) -> None:
        """Unmaps the live versions `file_nos` (None: all) that no native read holds now; a
        later fill maps them again (Runtime.evict)."""
        if self._unmap is None:
            return
        with self._lock:
            self._retire_stale()             # (and closes, so unmaps, what no read holds)
            for v in (list(self._by_no.values()) if file_nos is None
                      else [self._by_no[f] for f in file_nos if f in self._by_no]):
                if self._holds.count(v.hold[0]) == 0:
                    self._unmap_version(v)

    def versions_of(self, path: bytes) -> list[int]:
        """file_nos of every live version whose file was looked up by `path`."""
        with self._lock:
            return [v.file_no for v in self._by_no.values() if v.path == path]

    def all_versions(self) -> list[int]:
        with self._lock:
            return list(self._by_no)

    @property
    def native(self) -> bool:
        """Whether fills run on the native reader threads."""
        return self._readers is not None

    def close(self) -> None:
        if self._readers is not None:   # after the server stopped: no fill can start now
            self._readers.close()       # every queued job has run (readers.c, R2): no holds left
            self._readers = None
            self._busy = np.zeros(self.lanes.count, dtype=np.uint8)   # (the pool's flags are freed)
        with self._lock:
            for v in list(self._by_no.values()):
                self._retire(v)
            self._look_at_closing()

    # ---- handlers ----
    def lookup(self, lane: int, q: abi.Request) -> tuple[int, int, int, int]:
        path = read_path(self.lanes, lane, q)
        osfd = self.root.open(path, os.O_RDONLY)
        st = os.fstat(osfd)
        key = (st.st_dev, st.st_ino)
        with self._lock:
            self._retire_stale()
            cur = self._current.get(key)
            if cur is not None and cur.size == st.st_size and cur.mtime_ns == st.st_mtime_ns:
                os.close(osfd)
                return cur.file_no, cur.size, cur.mtime_ns, cur.mode
            if cur is not None:
                self._retire(cur)
            if self._next_no > MAX_FILE_NO:
                os.close(osfd)
                raise OSError(errno.ENFILE, "file versions exhausted")
            v = Version(self._next_no, path, osfd, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode,
                        hold=self._holds.take())
            self._next_no += 1
            self._current[key] = v
            self._by_no[v.file_no] = v
            return v.file_no, v.size, v.mtime_ns, v.mode

    def fill(self, lane: int, q: abi.Request) -> int:
        return self._fill(lane, q, False)  # type: ignore[return-value]

    def fill_inline(self, lane: int, q: abi.Request) -> "int | Delegated | None":
        """FILL on the polling thread: from the page cache at once when it is small and all
        cached, and either tiny or alone (below), else handed to the native readers, which
        answer it; None: to the pool (see __init__).

        A fill read here holds up every other lane for as long as its copy takes: ~50 us
        for 256 KiB on the GPU host, one thread's ~5 GB/s. That is the fastest answer for a
        miss that comes alone (a reader thread would add its wake-up), but under load the
        polling thread becomes one reader where the pool has many: 128 lanes of 256 KiB
        fills read a cold file at 5 GB/s on the H100 host, every fill inline (2026-11-25).
        So with native readers a fill over FILL_INLINE_TINY is read here only when the
        sweep took no other request and no native read is in flight."""
        self._refuse_busy(lane)              # (read inline, its answer would be followed by the read's)
        readers = self._readers
        if CAN_READ_CACHED and (readers is None or q.length <= FILL_INLINE_TINY
                                or (self._server.dispatching == 1 and not readers.in_flight())):
            got = self._fill(lane, q, True)
            if got is not None:
                return got
        if readers is None:
            return None
        return self._start(lane, q, 0)

    def _refuse_busy(self, lane: int) -> None:
        """-EBUSY for a fill on a lane whose native read is still out (or whose pushed fill
        the server has yet to answer). The device's protocol never does this: a lane has one
        request out at a time. A device that does gets an error, and the read still out keeps
        its lane buffer and its one answer."""
        if self._busy[lane] or lane in self._server.started:
            raise OSError(errno.EBUSY, "a fill is already in progress on this lane")

    def fill_batch(self, reqs: list[tuple[int, int]]) -> list[int]:
        """The FILLs a sweep took together, (lane, request word) each (Server's BatchHandler),
        handed to the native readers in one call; returns the lanes it handed over. Each
        reader answers its fill itself (readers.c, R4: the word is built from the request's
        seq), so the server does nothing more for them. Each record is read once (one struct
        unpack: the device may rewrite it, and what is checked is what is read). Declined,
        for the per-lane way: tiny fills (read inline there), lengths or offsets out of range
        and unknown versions (answered with their errors there), a lane whose read is still
        out (-EBUSY there), and whatever the pool has no room for."""
        readers = self._readers
        assert readers is not None
        unpack, rec, size = abi.REQUEST_STRUCT.unpack_from, self._req_rec, abi.REQUEST.itemsize
        pack, jobs = JOB.pack_into, self._jobs
        data_bytes, base = self.lanes.data_bytes, self.lanes.data_address(0)
        busy, out, by_no, seq = self._busy, self._server.started, self._by_no, abi.WORD_SEQ_MASK
        started: list[int] = []
        with self._lock:
            for lane, word in reqs:
                _, _, _, _, off, n, file_no, _, _, _ = unpack(rec, lane * size)
                if n <= FILL_INLINE_TINY or n > data_bytes or off > MAX_OFFSET - n or busy[lane] or lane in out:
                    continue
                v = by_no.get(file_no)
                if v is None:
                    continue
                pack(jobs, JOB.size * len(started), lane, v.osfd, _ANSWER_LENGTH | (word & seq),
                     base + lane * data_bytes, n, off, v.size, v.mtime_ns, 0,
                     v.mapped if v.mapped > 0 else self._src(v), v.hold[1])
                started.append(lane)
            # Queued under the lock: a version retired meanwhile (lookup) sees the jobs' holds.
            queued = readers.submit_jobs(self._jobs_address, len(started)) if started else 0
        return started[:queued]

    def fill_push_inline(self, lane: int, q: abi.Request) -> "int | Started | None":
        """FILL_PUSH on the polling thread: handed to the native readers, which read and push
        it; None (to the pool) where they cannot push."""
        if not self._push_native:
            return None
        return self._start(lane, q, self._stage_address(lane))

    def _stage_address(self, lane: int) -> int:
        """Where `lane`'s pushed bytes go in device memory (attach_stage)."""
        assert self._stage is not None
        return self._stage[1] + lane * self.lanes.data_bytes

    def _start(self, lane: int, q: abi.Request, dev: int) -> "Started | Delegated | None":
        """Hands one fill to the native readers: a FILL (dev 0), which its reader answers
        (DELEGATED), or a FILL_PUSH, which the server answers once reap() has its result
        (STARTED). None: the pool's way (nothing to read, or no room)."""
        n, off = io_args(self.lanes, q)
        if not n:   # nothing to read, but the version is still checked: the pool's way
            return None
        assert self._readers is not None
        self._refuse_busy(lane)
        # A pushed fill is answered once its copy landed, by the server.
        answer = 0 if dev else _ANSWER_LENGTH | (self._server.taken_word(lane) & abi.WORD_SEQ_MASK)
        with self._lock:
            v = self._by_no.get(q.arg0)
            if v is None:
                raise OSError(errno.ESTALE, "unknown or retired file version")
            try:
                self._readers.submit(lane, v.osfd, self.lanes.data_address(lane), n, off, v.size, v.mtime_ns, dev,
                                     answer, self._src(v), v.hold[1])
            except OSError as e:
                if e.errno == errno.EAGAIN:   # the pool is full: the Python pool serves this one
                    return None
                raise
        return STARTED if dev else DELEGATED

    # CompletionSource (server.add_source): the native readers' pushed fills.
    def ready(self) -> bool:
        return self._readers is not None and self._readers.ready()

    def busy(self) -> bool:
        return self._readers is not None and self._readers.in_flight() > 0

    def reap(self) -> list[tuple[int, int]]:
        """The results of the pushed fills (the others answered themselves); every one goes
        back to the server (a lost answer would leave a kernel waiting for good). Their bytes
        and holds were counted and given back by the readers."""
        assert self._readers is not None
        return self._readers.reap()

    @staticmethod
    def _reader_counts(readers: NativeReaders) -> Callable[[], dict[str, int]]:
        """What the readers did, for Runtime.stats() (Counters.add_live): the fills they
        answered (and of those, the errors), and the bytes every one of them read."""
        def counts() -> dict[str, int]:
            answered, nbytes, errors = readers.counts()
            return {"hostcalls_native": answered, "bytes_from_host": nbytes, "errors": errors}
        return counts

    def fill_push(self, lane: int, q: abi.Request) -> "int | Pending":
        """FILL_PUSH: FILL, then the bytes read are copied (one DMA on cuda) from the lane's
        buffer into the lane's stage in device memory, where the device copies them on from.
        The worker only starts the copy; the server answers once it has landed (the lane's
        buffer, the copy's source, is the device's until then). The result is FILL's."""
        if self._stage is None:
            raise OSError(errno.ENOSYS, "this server has no device stage to push fills into")
        backend = self._stage[0]
        got = self._fill(lane, q, nowait=False)
        assert got is not None
        if not got:
            return got
        done = backend.start_copy_to_device(self._stage_address(lane),  # type: ignore[attr-defined]
                                            self.lanes.data_address(lane), got)
        return Pending(done, got)

    def _fill(self, lane: int, q: abi.Request, nowait: bool) -> int | None:
        n, off = io_args(self.lanes, q)
        if nowait and n > INLINE_READ_MAX:
            return None
        v = self._use(q.arg0)
        try:
            st = os.fstat(v.osfd)
            if st.st_size != v.size or st.st_mtime_ns != v.mtime_ns:
                with self._lock:
                    self._retire(v)
                raise OSError(errno.ESTALE, "the file changed since this version was looked up")
            buf = [self.lanes.buffer(lane, n)]
            if nowait:
                got = read_cached(v.osfd, buf, off) if n else 0
                if got is None or (got < n and off + got < v.size):  # partly cached: the pool reads it whole
                    return None
            else:
                got = os.preadv(v.osfd, buf, off) if n else 0
        finally:
            self._release(v)
        self.counters.add_one("bytes_from_host", got)
        return got

    def _use(self, file_no: int) -> Version:
        """The live version `file_no`, held open (its fd stays open) until _release."""
        with self._lock:
            v = self._by_no.get(file_no)
            if v is None:
                raise OSError(errno.ESTALE, "unknown or retired file version")
            v.users += 1
            return v

    def _release(self, v: Version) -> None:
        """Gives back a hold of _use: a retired version is closed once nothing holds it."""
        with self._lock:
            v.users -= 1
            if v.retired:
                self._close_if_free(v)
