"""The native reader pool (readers.c): cache fills read into their lanes by C threads,
off Python's GIL. Built with the system's C compiler on first use and cached; where it
cannot be built (no compiler) or GPUVFS_NATIVE_READERS=0, fills run on the server's
Python pool as every other blocking request does."""
from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading
import weakref
from pathlib import Path

import numpy as np

from ..native import build_c_library

_SOURCE = Path(__file__).with_name("readers.c")
# One job as rp_submit_jobs reads it (readers.c's rp_job, 80 bytes): tag, fd, answer, dst, n,
# off, size, mtime_ns, dev, src, users.
JOB = struct.Struct("<qiIQQQqqQQQ")


class _Lib:
    """The pool's calls, each through the handle that suits it: calls that may wait release
    the GIL (CDLL); the polling thread's own calls keep it (PyDLL), sparing it a release and
    a retake per call, and a wait behind another Python thread for the GIL."""

    def __init__(self, path: str) -> None:
        lib, quick = ctypes.CDLL(path), ctypes.PyDLL(path)
        u32, u64, i64, i32, vp = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
        p64 = ctypes.POINTER(i64)
        for dll, name, args, res in (
                (lib, "rp_create", [ctypes.c_int, u32], vp),
                (lib, "rp_push_memcpy", [vp], ctypes.c_int),
                (lib, "rp_push_cuda", [vp], ctypes.c_int),
                (lib, "rp_destroy", [vp], None),
                (lib, "rp_stop", [vp], None),
                (lib, "rp_answer_into", [vp, u64, u64, u32], ctypes.c_int),
                (lib, "rp_map", [i32, u64], u64),
                (lib, "rp_unmap", [u64, u64], ctypes.c_int),
                (lib, "rp_faults", [], u64),
                (quick, "rp_submit", [vp, i64, i32, u64, u64, u64, i64, i64, u64, u32, u64, u64], ctypes.c_int),
                (quick, "rp_submit_jobs", [vp, ctypes.c_int, vp], ctypes.c_int),
                (quick, "rp_reap", [vp, p64, p64, ctypes.c_int], ctypes.c_int),
                (quick, "rp_finished_addr", [vp], vp),
                (quick, "rp_counts_addr", [vp], vp),
                (quick, "rp_busy_addr", [vp], vp),
                (quick, "rp_busy_ns", [vp], u64)):
            fn = getattr(dll, name)
            fn.argtypes, fn.restype = args, res
            setattr(self, name, fn)


_lib: _Lib | None = None
_lib_error: str | None = None
_lib_lock = threading.Lock()


def _load() -> _Lib | None:
    """The pool's library, built on first use; None (and a reason in _lib_error) if not."""
    global _lib, _lib_error
    with _lib_lock:
        if _lib is None and _lib_error is None:
            try:
                _lib = _Lib(str(build_c_library(_SOURCE, "readers", libs=("-ldl",))))
            except OSError as e:
                _lib_error = str(e)
        return _lib


def native_readers_wanted() -> bool:
    return os.environ.get("GPUVFS_NATIVE_READERS", "1") != "0"


class NativeReaders:
    """`threads` C threads that run read jobs: each reads n bytes at off of an OS fd into
    host memory, after checking the file still has the size and mtime the caller expects.
    At most `capacity` jobs at once (queued, running or not yet reaped). submit() may be
    called from any thread; ready() and reap() from one."""

    def __init__(self, threads: int, capacity: int) -> None:
        lib = _load()
        if lib is None:
            raise OSError(errno.ENOSYS, f"the native reader pool is unavailable: {_lib_error}")
        self._lib = lib
        self._pool = lib.rp_create(threads, capacity)
        if not self._pool:
            raise OSError(errno.ENOMEM, "could not start the native reader threads")
        # A pool its owner dropped without close() (e.g. after a failure) still stops its threads.
        self._finalizer = weakref.finalize(self, lib.rp_destroy, self._pool)
        self._finished = ctypes.c_uint64.from_address(lib.rp_finished_addr(self._pool))
        # rp_counts: answered, bytes, errors, submitted, completed, stale (loads, no call)
        self._counts = (ctypes.c_uint64 * 6).from_address(lib.rp_counts_addr(self._pool))
        self._closing = threading.Lock()   # counts() from any thread against close()
        self._reaped = 0
        self._tags = (ctypes.c_int64 * capacity)()
        self._results = (ctypes.c_int64 * capacity)()
        self.busy: np.ndarray | None = None   # per lane, once answer_into was called
        self._final_counts = (0, 0, 0)
        self._capacity = capacity

    def push_by_memcpy(self) -> None:
        """Jobs with a device address copy their bytes there in host memory (the cpu
        backend, whose device memory is host memory)."""
        rc = self._lib.rp_push_memcpy(self._check())
        if rc:
            raise OSError(-rc, "pushes are already set up for this pool")

    def push_by_cuda(self) -> None:
        """Jobs with a device address copy their bytes there with the copy engine, in the
        CUDA context current on this thread; their results come back once the bytes have
        landed. Call once, before any kernel that may wait for a push runs. OSError if the
        CUDA driver cannot be used from here (pushes stay off)."""
        rc = self._lib.rp_push_cuda(self._check())
        if rc:
            raise OSError(errno.EBUSY if rc == -errno.EBUSY else errno.ENOSYS,
                          f"native pushes need the CUDA driver (libcuda.so.1): error {rc}")

    def answer_into(self, words_address: int, records_address: int, count: int) -> None:
        """Jobs submitted with an `answer` word answer their requests themselves (readers.c,
        R4): into the uint32 at words_address + 4 x tag and, when the result needs one, the
        32-byte record at records_address + 32 x tag (tags 0..count-1): the server's response
        words and records. Their results never come back through reap(). Makes `busy` (one
        flag per tag: a job of that tag is queued or running). Call once, before such a job;
        the words and records must outlive the pool."""
        rc = self._lib.rp_answer_into(self._check(), words_address, records_address, count)
        if rc:
            raise OSError(-rc, "the pool already answers into other words" if rc == -errno.EBUSY
                          else "no response words to answer into")
        self.busy = np.ctypeslib.as_array((ctypes.c_uint8 * count).from_address(self._lib.rp_busy_addr(self._pool)))

    def map_file(self, fd: int, size: int) -> int:
        """Maps the first `size` bytes of `fd` read-only for jobs to copy from instead of
        reading (their `src`; readers.c: mapped files). Returns the address, or 0 where the
        file cannot be mapped (jobs then read it). unmap_file() once no job copies from it."""
        return int(self._lib.rp_map(fd, size)) if size > 0 else 0

    def faults(self) -> int:
        """How many copies from a mapping a SIGBUS cut short (the file shrank under them),
        in this process, all pools together."""
        return int(self._lib.rp_faults())

    def unmap_file(self, address: int, size: int) -> None:
        rc = self._lib.rp_unmap(address, size)
        if rc:
            raise OSError(-rc, os.strerror(-rc))

    def submit(self, tag: int, fd: int, dst: int, n: int, off: int, size: int = -1, mtime_ns: int = 0,
               dev: int = 0, answer: int = 0, src: int = 0, users: int = 0) -> None:
        """Queues a read of n bytes at `off` of `fd` into host address `dst`; the result
        (bytes read, or -errno: -ESTALE when the file's size or mtime_ns is no longer the
        one given) comes back from reap() under `tag`. size < 0: no check. `dev` != 0: the
        bytes read are also pushed to that device address before the result comes back
        (push_by_memcpy or push_by_cuda first). `answer` != 0 (no push; answer_into first):
        the job answers the tag's request itself, whatever its result, with this word's seq
        (readers.c, R4), and does not come back through reap(). `src` != 0 (with
        size >= 0): the file is mapped there (map_file()), and the job copies from the mapping,
        up to `size`. `users` != 0: the address of a pair of int32 for the file, {holds,
        stale}: holds one up while the job may still touch it, stale set if it found the file
        changed (R5). OSError(EAGAIN) when the pool is full."""
        rc = self._lib.rp_submit(self._check(), tag, fd, dst, n, off, size, mtime_ns, dev, answer, src, users)
        if rc:
            raise OSError(-rc, os.strerror(-rc))

    def submit_jobs(self, jobs_address: int, k: int) -> int:
        """submit() for k jobs at once, in one call: `jobs_address` holds k records packed
        with JOB (tag, fd, answer, dst, n, off, size, mtime_ns, dev = 0: none pushed, src, users).
        Queues them in order while the pool has room; returns how many it queued."""
        rc = self._lib.rp_submit_jobs(self._check(), k, jobs_address)
        if rc < 0:
            raise OSError(-rc, os.strerror(-rc))
        return int(rc)

    def ready(self) -> bool:
        """Whether results wait to be reaped (one load, no call)."""
        return bool(self._pool) and self._finished.value != self._reaped

    def reap(self) -> list[tuple[int, int]]:
        """The (tag, result) of every finished job not reaped yet (none for jobs that
        answered themselves)."""
        k = self._lib.rp_reap(self._check(), self._tags, self._results, self._capacity)
        self._reaped += k
        return list(zip(self._tags[:k], self._results[:k]))

    def counts(self) -> tuple[int, int, int]:
        """(jobs answered by themselves, bytes read by all jobs, errors among the jobs
        answered by themselves) so far: loads, no call; each counted before its answer."""
        with self._closing:
            c = self._counts
            return (int(c[0]), int(c[1]), int(c[2])) if self._pool else self._final_counts

    def stale_count(self) -> int:
        """Jobs so far that found their file changed (-ESTALE): each set the stale word of
        its hold pair first (readers.c, R5). One load, no call (the polling thread's)."""
        return int(self._counts[5]) if self._pool else 0

    def in_flight(self) -> int:
        """Jobs queued or running, not yet answered or reaped-ready (two loads, no call)."""
        c = self._counts
        if not self._pool:
            return 0
        completed = int(c[4])                # first: a completion after it only lowers the count
        return int(c[3]) - completed

    def busy_ns(self) -> int:
        """Nanoseconds the threads have spent in jobs, summed over threads."""
        return int(self._lib.rp_busy_ns(self._pool)) if self._pool else 0

    def close(self) -> None:
        """Waits for queued jobs to run, stops the threads. Results not reaped are dropped."""
        if self._pool:
            self._lib.rp_stop(self._pool)   # every queued job runs first (R2)
            with self._closing:             # the counts stay readable until the pool is gone
                c = self._counts
                self._final_counts = (int(c[0]), int(c[1]), int(c[2]))
                self._pool = None
            self._finalizer()               # rp_destroy, once

    def _check(self) -> int:
        if not self._pool:
            raise OSError(errno.EBADF, "the native reader pool is closed")
        return self._pool
