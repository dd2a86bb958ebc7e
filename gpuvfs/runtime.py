"""Runtime: owns the device memory, the hostcall server, kernel compilation and launch.

    with gpuvfs.Runtime(root="data", backend="auto") as rt:
        mod = rt.compile(source)              # CUDA C++ that does #include <gpuvfs.cuh>
        k = mod.get_function("load")
        out = rt.empty(1 << 20, "uint8")
        k((4,), (64,), (rt.ctx, out, 1 << 20))
        rt.synchronize()
        rt.stats()

One Runtime owns one server; kernels (and, in later layers, the sync engine and the FUSE
handlers) all go through it. Counters live in one place that stats() reads.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, BinaryIO, Sequence

import numpy as np

from . import abi, backends
from .errors import GvfsError
from .hostcall.cache import CacheFiles
from .hostcall.files import FileHandlers
from .hostcall.paths import Confined
from .hostcall.server import Lanes, Server
from .hostcall.stdio import StdioHandlers

log = logging.getLogger("gpuvfs")



def _dim3(v: Any, what: str) -> tuple[int, int, int]:
    t = (v,) if isinstance(v, (int, np.integer)) else tuple(v)
    if not 1 <= len(t) <= 3 or any(not isinstance(x, (int, np.integer)) or x < 1 for x in t):
        raise ValueError(f"{what} must be 1 to 3 positive integers, got {v!r}")
    t = tuple(int(x) for x in t) + (1,) * (3 - len(t))
    return t  # type: ignore[return-value]


class Kernel:
    """A __global__ function of a compiled module. Call it as CuPy's RawKernel is called:
    ``k(grid, block, args, shared_mem=0)``; the launch is asynchronous."""

    def __init__(self, rt: "Runtime", raw: Any) -> None:
        self._rt, self._raw = rt, raw
        self.name: str = raw.name

    def __call__(self, grid: Any, block: Any, args: Sequence[Any], *, shared_mem: int = 0) -> None:
        if not isinstance(args, (tuple, list)):
            raise TypeError("args must be a tuple of kernel arguments")
        self._rt._launch(self._raw, _dim3(grid, "grid"), _dim3(block, "block"), args, shared_mem, True)

    def _launch_same_epoch(self, grid: Any, block: Any, args: Sequence[Any]) -> None:
        # For the runtime's own follow-up launches: opens stay confirmed by the launch
        # just before (rt.read confirms the file once, then reads it).
        self._rt._launch(self._raw, _dim3(grid, "grid"), _dim3(block, "block"), args, 0, False)

    def __repr__(self) -> str:
        return f"<gpuvfs.Kernel {self.name}>"


class Module:
    """Device code compiled for this Runtime's backend."""

    def __init__(self, rt: "Runtime", raw: Any) -> None:
        self._rt, self._raw = rt, raw

    def get_function(self, name: str) -> Kernel:
        return Kernel(self._rt, self._raw.get_function(name))


INTERNAL_KERNELS = r"""
#include <gpuvfs.cuh>

// Opens `path` once (so later opens of it are answered from the name cache) and reports
// fd and size.
extern "C" __global__ void gvfs_internal_stat(gvfs_ctx *ctx, const char *path, long long *out) {
  int fd = gvfs_open(ctx, path, GVFS_O_RDONLY);
  out[0] = fd;
  if (fd < 0) return;
  gvfs_stat st;
  out[1] = gvfs_fstat(ctx, fd, &st) == 0 ? (long long)st.size : -1;
  gvfs_close(ctx, fd);
}

// Every warp reads chunks w, w + nwarps, ... of [off, off + n) with gvfs_pread_warp, into
// out (or only into the cache when out is NULL). status[0] gets the first error.
extern "C" __global__ void gvfs_internal_read(gvfs_ctx *ctx, const char *path, unsigned char *out,
                                              unsigned long long off, unsigned long long n,
                                              unsigned long long chunk, long long *status) {
  const unsigned long long gtid = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
  const unsigned long long warp = gtid / 32, nwarps = (gridDim.x * (unsigned long long)blockDim.x) / 32;
  const bool lead = (threadIdx.x & 31u) == 0;
  int fd = 0;
  if (lead) fd = gvfs_open(ctx, path, GVFS_O_RDONLY);
  fd = (int)gvfs_shfl_u32(0xffffffffu, (gvfs_u32)fd, 0);
  if (fd < 0) { if (lead) atomicCAS((unsigned long long *)status, 0ull, (unsigned long long)(long long)fd); return; }
  for (unsigned long long c = warp; c * chunk < n; c += nwarps) {
    unsigned long long len = n - c * chunk < chunk ? n - c * chunk : chunk;
    long got = gvfs_pread_warp(ctx, fd, out ? out + c * chunk : (unsigned char *)0, len, off + c * chunk);
    if (got != (long)len && lead) {
      long long e = got < 0 ? (long long)got : -(long long)GVFS_EIO;  // short: the file shrank
      atomicCAS((unsigned long long *)status, 0ull, (unsigned long long)e);
    }
  }
  if (lead) gvfs_close(ctx, fd);
}
"""


def _device_path(path: str | bytes | os.PathLike[str]) -> bytes:
    p = os.fsencode(path)
    if not p.startswith(b"/"):
        p = b"/" + p
    if b"\0" in p:
        raise ValueError("a path cannot contain NUL bytes")
    return p


class Runtime:
    """A file system for GPU kernels, rooted at `root`.

    Parameters
    ----------
    root: directory that device paths are confined to ("/" on the device is `root`).
    backend: "auto" (cuda when CuPy imports and a GPU is present, else cpu), "cuda", "cpu".
    lanes: number of hostcall lanes (requests in flight at once).
    lane_bytes: payload bytes per lane (the largest single hostcall transfer, so also the
        most one cache fill brings in).
    workers: threads that run blocking hostcalls (file IO) on the host; cache fills run on
        as many native reader threads (gpuvfs/hostcall/readers.py). For bulk loading leave
        a core or two free: on a 16-core host 14 read fastest.
    cache_bytes: device memory for the page cache (0: off, every read is a hostcall).
        Default: 1 GiB on cuda, 64 MiB on cpu.
    page_size: bytes per cache page, a power of two from 4 KiB to 2 MiB (default 64 KiB).
    readahead_pages: pages a sequential per-thread reader has filled with each miss.
    fill_push_bytes: a cache fill of at least this many bytes is pushed: the host copies it
        into device memory (one DMA on cuda) and the GPU takes it from there, rather than
        pulling it across PCIe itself; 0 (the default): every fill is pulled. Pushing costs a
        stage of lanes x lane_bytes of device memory.
    max_fds: size of the device fd table; name_slots: entries of the device name cache.
    stdout, stderr, stdin: binary streams for device stdio (default: the process's own).
    """

    def __init__(self, root: str | os.PathLike[str] = ".", backend: str = "auto", *, lanes: int = 256,
                 lane_bytes: int = 1 << 20, workers: int = 16, cache_bytes: int | None = None,
                 page_size: int = 1 << 16, readahead_pages: int = 8, fill_push_bytes: int = 0,
                 max_fds: int = 4096,
                 name_slots: int = 4096,
                 stdout: BinaryIO | None = None, stderr: BinaryIO | None = None, stdin: BinaryIO | None = None,
                 backend_options: dict[str, Any] | None = None) -> None:
        try:
            self._root = Confined(root)
        except OSError as e:
            raise GvfsError(f"root {os.fspath(root)!r} is not a directory that can be used: {e.strerror}") from None
        if page_size < 4096 or page_size > 2 << 20 or page_size & (page_size - 1):
            raise ValueError(f"page_size must be a power of two from 4 KiB to 2 MiB, got {page_size}")
        if max_fds < 1 or max_fds > 1 << 24:
            raise ValueError(f"max_fds must be between 1 and {1 << 24}, got {max_fds}")
        if name_slots < 0 or name_slots & (name_slots - 1):
            raise ValueError(f"name_slots must be 0 or a power of two, got {name_slots}")
        if not 0 <= readahead_pages <= 15:
            raise ValueError(f"readahead_pages must be between 0 and 15, got {readahead_pages}")
        if not 0 <= fill_push_bytes < 1 << 32:
            raise ValueError(f"fill_push_bytes must be between 0 and 2**32 - 1, got {fill_push_bytes}")
        self.backend = backends.select(backend, **(backend_options or {}))
        self._launches: list[Any] = []
        self._launch_lock = threading.Lock()
        # Held while the host rewrites the page table (evict), and by every launch: no kernel
        # starts while pages are dropped under it (a slot a kernel claimed meanwhile would be
        # overwritten mid-fill). Reentrant: evict's own synchronize() and internal launches.
        self._pages_lock = threading.RLock()
        self._closed = False
        try:
            self._setup(lanes, lane_bytes, workers, cache_bytes, page_size, readahead_pages, fill_push_bytes,
                        max_fds, name_slots, stdout, stderr, stdin)
        except BaseException:
            self._abandon()
            raise

    def _setup(self, lanes: int, lane_bytes: int, workers: int, cache_bytes: int | None, page_size: int,
               readahead_pages: int, fill_push_bytes: int, max_fds: int, name_slots: int,
               stdout: BinaryIO | None, stderr: BinaryIO | None, stdin: BinaryIO | None) -> None:
        self.lanes = Lanes(self.backend, lanes, lane_bytes)
        self._counters_dev, counters_ptr = self.backend.device_zeros(8 * abi.NCOUNTERS * abi.COUNTER_SHARDS)
        # Beside a GPU the server spins on a core of its own; on the cpu backend the device
        # threads need the cores, so it naps between empty sweeps.
        self.server = Server(self.lanes, workers=workers, in_flight=self._in_flight,
                             spin_yield=self.backend.name != "cpu")
        self.files = FileHandlers(self.server, self._root)
        self.cache_files = CacheFiles(self.server, self._root, workers=workers)
        self.stdio = StdioHandlers(
            self.server,
            stdout=(lambda: stdout) if stdout is not None else None,
            stderr=(lambda: stderr) if stderr is not None else None,
            stdin=(lambda: stdin) if stdin is not None else None,
        )
        ctx = np.zeros(1, dtype=abi.CTX)
        ctx["magic"] = abi.CTX_MAGIC
        ctx["abi_version"] = abi.ABI_VERSION
        for k, v in self.lanes.device.items():
            ctx["lanes"][k] = v
        ctx["counters"] = counters_ptr
        ctx["stdio"] = self.stdio.attach_device(self.backend)  # the wall-clock cache (stdio.cuh)
        ctx["readahead_pages"] = readahead_pages
        ctx["fill_push_bytes"] = fill_push_bytes
        if fill_push_bytes:
            self._fill_stage, stage_ptr = self.backend.device_zeros(lanes * lane_bytes)
            ctx["fill_stage"] = stage_ptr
            self.cache_files.attach_stage(self.backend, stage_ptr)
        self._init_cache(ctx, cache_bytes, page_size)
        self._init_files(ctx, max_fds, name_slots)
        # The context's allocation holds the open's hints and its fd table too (abi.ctx_bytes,
        # context.cuh), zeroed: no hint, every fd FREE. Allocated after the other device
        # arrays, as the context alone was: made first, it moved them, and the open on the
        # H100 went from 1.16 to 1.21 us with a p99 of 1.5 us (2026-11-25; the kernel's code
        # was the same).
        self._ctx_mem, mem_ptr = self.backend.device_zeros(abi.ctx_bytes(max_fds))
        self._ctx = self._ctx_mem[abi.CTX_HINTS_BYTES:]   # the struct; the open's hints before it
        ctx_ptr = mem_ptr + abi.CTX_HINTS_BYTES
        ctx["files"]["fds"] = ctx_ptr + abi.CTX_FDS_OFFSET
        self._internal_module: Module | None = None
        self._max_blocks = 1024 if self.backend.name == "cuda" else 4
        self.backend.copy_to_device(self._ctx[: abi.CTX.itemsize], ctx.view(np.uint8))
        self.server.start()

    # ---- public API ----
    @property
    def root(self) -> str:
        return self._root.root

    @property
    def ctx(self) -> Any:
        """The device context: pass it to kernels as their `gvfs_ctx *` argument."""
        return self._ctx

    def compile(self, source: str, *, options: Sequence[str] = ()) -> Module:
        """Compiles CUDA C++ that includes <gpuvfs.cuh> for this Runtime's backend."""
        self._check_open()
        return Module(self, self.backend.compile(source, options))

    def empty(self, shape: int | Sequence[int], dtype: Any = "uint8") -> Any:
        """A device array (cupy.ndarray on cuda, numpy.ndarray on cpu)."""
        return self.backend.empty(shape, dtype)

    def zeros(self, shape: int | Sequence[int], dtype: Any = "uint8") -> Any:
        return self.backend.zeros(shape, dtype)

    def asarray(self, array: Any) -> Any:
        """A device copy of a host array."""
        host = np.ascontiguousarray(array)
        dev = self.backend.empty(host.shape, host.dtype)
        self.backend.copy_to_device(dev, host)
        return dev

    def asnumpy(self, array: Any) -> np.ndarray:
        """A host copy of a device array."""
        return self.backend.to_host(array)

    def synchronize(self) -> None:
        """Waits for every kernel launched through this Runtime; raises LaunchError on failure."""
        with self._launch_lock:
            launches = list(self._launches)
        err: BaseException | None = None
        for l in launches:
            try:
                l.wait()
            except BaseException as e:  # wait for the rest, then report the first failure
                err = err or e
        # Only now off the list: while we wait, the server must see them in flight (else it
        # naps between sweeps and every hostcall after a quiet spell waits up to 50 ms).
        with self._launch_lock:
            self._launches = [l for l in self._launches if all(l is not w for w in launches)]
        self.backend.synchronize()
        if err is not None:
            raise err

    # ---- the page cache from the host ----
    def read(self, path: str | os.PathLike[str], offset: int = 0, size: int | None = None) -> Any:
        """Reads `size` bytes of `path` (a runtime path; default: to the end) from `offset`
        into a new device uint8 array, through the page cache: warps of an internal kernel
        fill the cache with coalesced requests and copy on the GPU."""
        self._check_open()
        if offset < 0 or (size is not None and size < 0):
            raise ValueError("offset and size must be >= 0")
        dpath = self.asarray(np.frombuffer(_device_path(path) + b"\0", dtype=np.uint8))
        file_size = self._stat_on_device(dpath, path)
        end = file_size if size is None else min(file_size, offset + size)
        n = max(0, end - offset)
        out = self.empty(n, "uint8")
        if n:
            self._read_range(dpath, out, offset, n, path)
        return out

    def prefetch(self, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> None:
        """Brings whole files into the page cache (and their names into the name cache)."""
        self._check_open()
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        for path in paths:
            dpath = self.asarray(np.frombuffer(_device_path(path) + b"\0", dtype=np.uint8))
            size = self._stat_on_device(dpath, path)
            if size and self._pt_shape[0]:
                self._read_range(dpath, None, 0, size, path)

    def evict(self, path: str | os.PathLike[str] | None = None) -> int:
        """Drops every cached page (or those of `path`); returns how many. Waits for running
        kernels first: pages are only ever dropped while no kernel can be reading them (and
        launches from other threads wait until the pages are gone). Where the native readers
        map files (gpuvfs.hostcall.cache.MAP_FILES, off by default), the mappings of those
        files go too: a mapping keeps a file's pages in the host's page cache, where
        `echo 3 > /proc/sys/vm/drop_caches` cannot drop them; the next fill maps it again."""
        self._check_open()
        with self._pages_lock:
            return self._evict_locked(path)

    def _evict_locked(self, path: str | os.PathLike[str] | None) -> int:
        self.synchronize()
        xp = self.backend.xp
        states = self._slot_state.view(xp.uint32)
        tags = self._slot_tag.view(xp.uint64)
        kinds = states & abi.SLOT_KIND_MASK
        held = (kinds == abi.SLOT_VALID) | (kinds == abi.SLOT_DIRTY)
        versions = None if path is None else self.cache_files.versions_of(_device_path(path))
        self.cache_files.unmap(versions)
        if versions is not None:
            held &= xp.isin(tags >> abi.PAGE_BITS, xp.asarray(np.array(versions, dtype=np.uint64)))
        n = int(held.sum())
        states[held] = abi.SLOT_EMPTY
        tags[held] = 0
        self._slot_ref.view(xp.uint32)[held] = 0
        counters = self._counters_dev.view(xp.uint64)
        counters[abi.Counter.EVICTIONS] += n
        self.backend.synchronize()
        self.backend.sync_current_stream()  # the writes above landed before the next launch
        return n

    def revalidate(self) -> None:
        """Makes every later open confirm its file with the host once, so changes the host
        made before this call are seen, also by kernels already running."""
        self._check_open()
        self._bump_epoch(concurrent=True)

    def stats(self) -> dict[str, int]:
        """Counters of this Runtime: hostcalls (hostcalls_pooled of them went to the host's
        worker pool rather than being answered on its polling thread, hostcalls_native to
        the native reader threads: cache fills), bytes_from_host,
        bytes_to_host, errors, and the device-side counters (cache_hits, cache_misses, ...;
        opens_on_device counts every open answered on the GPU, opens_hinted those of them
        answered through the open's hint, without building the path's key)."""
        out: dict[str, int] = self.server.counters.snapshot()
        dev = self.backend.to_host(self._counters_dev).view("<u8").reshape(abi.COUNTER_SHARDS, abi.NCOUNTERS).sum(0)
        for c in abi.Counter:
            out[c.name.lower()] = int(dev[c.value])
        out["opens_on_device"] += out["opens_hinted"]   # the device counts each open once, in one of the two
        out["open_files"] = len(self.files.table)
        states = self.backend.to_host(self._slot_state).view("<u4")
        kinds = states & abi.SLOT_KIND_MASK
        out["pages_resident"] = int(np.count_nonzero((kinds == abi.SLOT_VALID) | (kinds == abi.SLOT_DIRTY)))
        out["cache_bytes"] = self.cache_bytes
        out["page_size"] = self.page_size
        return out

    def _abandon(self) -> None:
        """Frees what a failed __init__ had made (the reader threads, pinned memory)."""
        self._closed = True
        self._teardown(made_only=True)

    def _teardown(self, made_only: bool = False) -> None:
        """Stops and frees the parts, in the one order both close() and a failed __init__
        need: the server (no request is taken after it), the files' OS fds, the cache's
        readers (they write into the lanes), the backend, the lanes' memory. `made_only`:
        skip the parts not made yet, and log a part's failure instead of raising it (the
        error that stopped __init__ is the one to report)."""
        for name, step in (("server", lambda: self.server.close()),
                           ("files", lambda: self.files.table.close_all()),
                           ("cache_files", lambda: self.cache_files.close()),
                           ("backend", lambda: self.backend.close()),
                           ("lanes", lambda: self.lanes.close())):
            if not made_only:
                step()
            elif name in self.__dict__:
                try:
                    step()
                except Exception:
                    log.debug("cleaning up %s after a failed Runtime() failed", name, exc_info=True)

    def close(self) -> None:
        """Waits for running kernels, stops the server and frees the lanes."""
        if self._closed:
            return
        self._closed = True
        try:
            self.synchronize()
        finally:
            self._teardown()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<gpuvfs.Runtime root={self.root!r} backend={self.backend.name} lanes={self.lanes.count}>"

    # ---- internals ----
    def _init_cache(self, ctx: np.ndarray, cache_bytes: int | None, page_size: int) -> None:
        if cache_bytes is None:
            cache_bytes = (1 << 30) if self.backend.name == "cuda" else (64 << 20)
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        if cache_bytes and self.lanes.data_bytes < page_size:
            raise ValueError(f"lane_bytes ({self.lanes.data_bytes}) must be at least page_size ({page_size}): "
                             "a cache fill brings whole pages through one lane")
        nslots = cache_bytes // page_size
        ways = abi.PT_MAX_WAYS if nslots >= abi.PT_MAX_WAYS else max(nslots, 1)
        nsets = 1 << max(0, (nslots // ways).bit_length() - 1) if nslots >= ways else 0
        self.page_size = page_size
        self.cache_bytes = nsets * ways * page_size
        self._pt_shape = (nsets, ways)
        pt = ctx["pt"]
        pt["nsets"], pt["ways"], pt["page_shift"] = nsets, ways, page_size.bit_length() - 1
        n = max(nsets * ways, 1)
        self._slot_state, pt["state"] = self.backend.device_zeros(4 * n)
        self._slot_tag, pt["tag"] = self.backend.device_zeros(8 * n)
        self._slot_ref, pt["ref"] = self.backend.device_zeros(4 * n)
        self._set_words, words = self.backend.device_zeros(8 * max(nsets, 1))
        pt["set_lock"], pt["hand"] = words, words + 4 * max(nsets, 1)
        self._pool, pt["pool"] = self.backend.device_zeros(max(self.cache_bytes, 1))
        # The device reads a set's tags, states and reference bits in 16-byte loads.
        if any(int(pt[k][0]) % 16 for k in ("state", "tag", "ref")):
            raise GvfsError("the backend returned page-table arrays that are not 16-byte aligned")

    def _init_files(self, ctx: np.ndarray, max_fds: int, name_slots: int) -> None:
        f = ctx["files"]
        f["max_fds"], f["nnames"] = max_fds, name_slots   # the table itself: in the context's allocation
        self._words, words = self.backend.device_zeros(8)   # epoch, fd_hint
        f["epoch"], f["fd_hint"] = words, words + 4
        self._names, f["names"] = self.backend.device_zeros(abi.NAMEENT_SIZE * max(name_slots, 1))
        self._epoch = 0

    def _bump_epoch(self, concurrent: bool = False) -> None:
        """Every open after this confirms its file with the host once (docs/consistency.md).
        `concurrent`: now, beside running kernels (else ordered before the next launch)."""
        with self._launch_lock:
            self._epoch = (self._epoch + 1) & 0xFFFFFFFF or 1   # 0: "before any launch" (files.cuh)
            self.backend.write_u32(self._words, 0, self._epoch, concurrent=concurrent)

    def _internal(self, name: str) -> Kernel:
        if self._internal_module is None:
            self._internal_module = self.compile(INTERNAL_KERNELS)
        return self._internal_module.get_function(name)

    def _stat_on_device(self, dpath: Any, path: object) -> int:
        out = self.zeros(2, "int64")
        self._internal("gvfs_internal_stat")((1,), (1,), (self.ctx, dpath, out))
        self.synchronize()
        fd, size = (int(v) for v in self.asnumpy(out))
        if fd < 0:
            raise OSError(-fd, os.strerror(-fd), os.fspath(path))  # type: ignore[arg-type]
        return size

    def _read_range(self, dpath: Any, out: Any, offset: int, n: int, path: object) -> None:
        # A warp's chunk is what one fill brings (a lane's bytes, whole pages, 32 at most): a
        # warp pulls its fills across PCIe one after another while holding their lanes, so
        # one fill a warp keeps the most lanes moving (H100, 2 GiB cold: 8 MiB a warp with
        # 1 MiB lanes ran 35-38 GB/s, 1 MiB a warp 42-47; 2026-11-24).
        if self._pt_shape[0]:
            chunk = min(32, max(1, self.lanes.data_bytes // self.page_size)) * self.page_size
        else:
            chunk = self.lanes.data_bytes
        warps = -(-n // chunk)
        threads = 256
        blocks = max(1, min(-(-warps * 32 // threads), self._max_blocks))
        status = self.zeros(1, "int64")
        self._internal("gvfs_internal_read")._launch_same_epoch((blocks,), (threads,), (
            self.ctx, dpath, out if out is not None else np.uint64(0) if self.backend.name == "cuda" else None,
            np.uint64(offset), np.uint64(n), np.uint64(chunk), status))
        self.synchronize()
        err = int(self.asnumpy(status)[0])
        if err:
            raise OSError(-err, os.strerror(-err), os.fspath(path))  # type: ignore[arg-type]

    def _check_open(self) -> None:
        if self._closed:
            raise GvfsError("this Runtime is closed")

    def _launch(self, raw: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
                args: Sequence[Any], shared_mem: int, new_epoch: bool) -> None:
        self._check_open()
        with self._pages_lock:
            if new_epoch:
                self._bump_epoch()
            handle = self.backend.launch(raw, grid, block, args, shared_mem)
            with self._launch_lock:
                self._launches.append(handle)  # kept until synchronize(), which reports failures
        self.server.wake()

    def _in_flight(self) -> bool:
        with self._launch_lock:
            return any(not l.done() for l in self._launches)
