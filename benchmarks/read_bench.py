#!/usr/bin/env python3
"""The read benchmark: reads through gpuvfs, each figure beside a ceiling or a baseline
measured in the same run (docs/read-benchmark.md says more).

Ceilings and baselines, all in this process on this GPU:
  - device->device copy (cudaMemcpyAsync, events). Counted as BYTES COPIED (one copy of N
    bytes = N), which is half of the "bytes read + written" of DESIGN.md's table; the hit
    path is counted the same way (bytes landed in the caller's buffer), like with like.
  - pinned host->device copy (cupy.cuda.alloc_pinned_memory + cudaMemcpyAsync, events);
  - cupy.asarray(numpy.fromfile(p)) of the cold-read file (host clock);
  - KvikIO kvikio.CuFile(p).read(buf), compat mode (POSIX), a sweep of threads x task size;
    "KvikIO best" is the best median of the sweep (host clock around read()).

Figures (goals from DESIGN.md "Goals"):
  1. hit path: Runtime(page_size = request size), rt.prefetch(file), then a kernel filling
     the GPU where each thread (gvfs_pread) or each warp (gvfs_pread_warp) makes R reads
     at random page-aligned offsets into its own output region. GB/s = bytes read / kernel
     time (events). Goal: >= 0.8x device->device copy.
  2. round trip: the same kernels with Runtime(cache_bytes=0): every read is a hostcall.
     Information: the ratio is against the hit path of the same size and variant.
  3. cold read of a file in the host page cache: a kernel whose warps read it with
     gvfs_pread_warp (grid-stride over chunks; device time by events) and rt.read (host
     clock), rt.evict() before each, for each Runtime setting of a small sweep. Then the
     judged round: gpuvfs's best setting and KvikIO's best setting read the file again,
     taking turns, N times each; the medians are compared (phase_cold_duel says why).
     Goal: >= 1.05x KvikIO. The sweeps' bests are printed too, for information.
  4. the same from a cold disk (echo 3 > /proc/sys/vm/drop_caches before each read; where
     that is not permitted, posix_fadvise(DONTNEED) of the file, said so in the table).
     Goal: >= 0.9x KvikIO (its best setting) from the same cold disk.
  5. open answered on the GPU: one thread opens a path once (host), then K times, each
     timed with gvfs_monotonic_ns() (and the SM clock). Goal: median < 1 us.
  6. one 4 KiB miss: one thread alternates gvfs_nop() and a gvfs_pread of a 4 KiB page not
     in the cache (a new page each time, rt.evict() between launches). Goal: median miss
     <= 1.5x median nop.

    PYTHONPATH=. python3 benchmarks/read_bench.py --quick --backend cuda --json out.json --plot read.png
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (REPO, Figure, add_common_args, exit_status, machine_info, print_table,  # noqa: E402
                    resolve_backend, start_watchdog, summary_stats, write_json)

import gpuvfs  # noqa: E402

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
GB = 1e9

SOURCE = r"""
#include <gpuvfs.cuh>

// splitmix64's finaliser: the benchmark's random page numbers (the host recomputes them).
GVFS_FN gvfs_u64 rb_mix(gvfs_u64 z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// The page of read r of unit u (a thread or a warp): random in [0, mask].
GVFS_FN gvfs_u64 rb_page(gvfs_u64 seed, gvfs_u64 u, gvfs_u32 reads, gvfs_u32 r, gvfs_u64 mask) {
  return rb_mix(seed * 0x632be59bd9b4e019ull + u * (gvfs_u64)reads + (gvfs_u64)r) & mask;
}

// Opens `path` read-only; out[0] = fd, out[1] = size. The fd stays open for later launches.
extern "C" __global__ void rb_open_fd(gvfs_ctx *ctx, const char *path, long long *out) {
  if (gvfs_global_tid() != 0) return;
  int fd = gvfs_open(ctx, path, GVFS_O_RDONLY);
  out[0] = fd;
  gvfs_stat st;
  out[1] = (fd >= 0 && gvfs_fstat(ctx, fd, &st) == 0) ? (long long)st.size : -1;
}

extern "C" __global__ void rb_close_fd(gvfs_ctx *ctx, int fd, long long *out) {
  if (gvfs_global_tid() != 0) return;
  out[0] = gvfs_close(ctx, fd);
}

// Hit path / round trip, per thread: thread u makes `reads` gvfs_pread calls of `req` bytes
// at random page-aligned offsets (page = request size); read r lands in slot r % slots of
// the thread's own region (slots * req bytes). bad[0] += reads that did not return req.
extern "C" __global__ void rb_read_thread(gvfs_ctx *ctx, int fd, unsigned char *out, unsigned long long req,
                                          unsigned long long mask, unsigned int reads, unsigned int slots,
                                          unsigned long long seed, unsigned long long *bad) {
  const gvfs_u64 u = gvfs_global_tid();
  unsigned char *mine = out + u * (gvfs_u64)slots * req;
  unsigned long long nbad = 0;
  for (unsigned int r = 0; r < reads; ++r) {
    const gvfs_u64 page = rb_page(seed, u, reads, r, mask);
    long got = gvfs_pread(ctx, fd, mine + (gvfs_u64)(r % slots) * req, req, page * req);
    if (got != (long)req) ++nbad;
  }
  if (nbad) atomicAdd(bad, nbad);
}

// The same, warp-collective: warp u makes the reads with gvfs_pread_warp (blockDim.x is a
// multiple of 32), one request at a time.
extern "C" __global__ void rb_read_warp(gvfs_ctx *ctx, int fd, unsigned char *out, unsigned long long req,
                                        unsigned long long mask, unsigned int reads, unsigned int slots,
                                        unsigned long long seed, unsigned long long *bad) {
  const gvfs_u64 u = gvfs_global_tid() / 32u;
  const bool lead = gvfs_lane_id() == 0u;
  unsigned char *mine = out + u * (gvfs_u64)slots * req;
  unsigned long long nbad = 0;
  for (unsigned int r = 0; r < reads; ++r) {
    const gvfs_u64 page = rb_page(seed, u, reads, r, mask);
    long got = gvfs_pread_warp(ctx, fd, mine + (gvfs_u64)(r % slots) * req, req, page * req);
    if (lead && got != (long)req) ++nbad;
  }
  if (lead && nbad) atomicAdd(bad, nbad);
}

// GPU-initiated cold read of a whole file: every warp opens it, then reads chunks
// w, w + nwarps, ... of [0, n) with gvfs_pread_warp into out. status[0]: first error.
extern "C" __global__ void rb_read_file(gvfs_ctx *ctx, const char *path, unsigned char *out,
                                        unsigned long long n, unsigned long long chunk, long long *status) {
  const gvfs_u64 gtid = gvfs_global_tid();
  const gvfs_u64 warp = gtid / 32u, nwarps = ((gvfs_u64)gridDim.x * blockDim.x) / 32u;
  const bool lead = gvfs_lane_id() == 0u;
  int fd = 0;
  if (lead) fd = gvfs_open(ctx, path, GVFS_O_RDONLY);
  fd = (int)gvfs_shfl_u32(0xffffffffu, (gvfs_u32)fd, 0);
  if (fd < 0) {
    if (lead) atomicCAS((unsigned long long *)status, 0ull, (unsigned long long)(long long)fd);
    return;
  }
  for (gvfs_u64 c = warp; c * chunk < n; c += nwarps) {
    const gvfs_u64 len = n - c * chunk < chunk ? n - c * chunk : chunk;
    long got = gvfs_pread_warp(ctx, fd, out + c * chunk, len, c * chunk);
    if (got != (long)len && lead) {
      long long e = got < 0 ? (long long)got : -5ll;  // short read: -EIO
      atomicCAS((unsigned long long *)status, 0ull, (unsigned long long)e);
    }
  }
  if (lead) gvfs_close(ctx, fd);
}

// Open latency: one thread opens `path` once (a LOOKUP hostcall: the launch began a new
// epoch), then k times more, each answered from the device name cache and closed again
// (untimed). mono[i] / ticks[i]: open i by gvfs_monotonic_ns() / by the SM clock.
// out[0] = monotonic ns of the loop, out[1] = clock ticks of the loop (their ratio scales
// ticks to ns), out[2] = failed opens, out[3] = the first open's fd.
extern "C" __global__ void rb_open_lat(gvfs_ctx *ctx, const char *path, int k, unsigned long long *mono,
                                       unsigned long long *ticks, long long *out) {
  if (gvfs_global_tid() != 0) return;
  const int fd0 = gvfs_open(ctx, path, GVFS_O_RDONLY);
  out[3] = fd0;
  if (fd0 < 0) return;
  long long nbad = 0;
  const gvfs_u64 m0 = gvfs_monotonic_ns();
  const long long c0 = clock64();
  for (int i = 0; i < k; ++i) {
    const gvfs_u64 a = gvfs_monotonic_ns();
    const long long c1 = clock64();
    const int fd = gvfs_open(ctx, path, GVFS_O_RDONLY);
    const long long c2 = clock64();
    const gvfs_u64 b = gvfs_monotonic_ns();
    mono[i] = b - a;
    ticks[i] = (unsigned long long)(c2 - c1);
    if (fd < 0) ++nbad; else gvfs_close(ctx, fd);
  }
  const long long c3 = clock64();
  const gvfs_u64 m3 = gvfs_monotonic_ns();
  out[0] = (long long)(m3 - m0);
  out[1] = c3 - c0;
  out[2] = nbad;
  gvfs_close(ctx, fd0);
}

// Miss latency: one thread alternates a gvfs_nop() and a gvfs_pread of `req` bytes of a page
// not in the cache: page i = (A * (base + i) + B) & mask, A odd, so every page differs and
// no read follows its neighbour (no readahead). Read i lands at out + i * req.
// t_nop/t_miss: SM clock ticks; g_nop/g_miss: gvfs_monotonic_ns(). out as rb_open_lat.
extern "C" __global__ void rb_miss_lat(gvfs_ctx *ctx, int fd, unsigned char *out, unsigned long long req,
                                       unsigned long long mask, unsigned long long base, int n,
                                       unsigned long long *t_nop, unsigned long long *t_miss,
                                       unsigned long long *g_nop, unsigned long long *g_miss, long long *tot) {
  if (gvfs_global_tid() != 0) return;
  long long nbad = 0;
  for (int i = 0; i < 8; ++i) nbad += gvfs_nop(ctx) != 0 ? 1 : 0;  // warm: lanes, server
  const gvfs_u64 m0 = gvfs_monotonic_ns();
  const long long c0 = clock64();
  for (int i = 0; i < n; ++i) {
    const gvfs_u64 page = (0x9e3779b97f4a7c15ull * (base + (gvfs_u64)i) + 12345ull) & mask;
    unsigned char *dst = out + (gvfs_u64)i * req;
    const gvfs_u64 a = gvfs_monotonic_ns();
    const long long c1 = clock64();
    const long r = gvfs_nop(ctx);
    const long long c2 = clock64();
    const gvfs_u64 b = gvfs_monotonic_ns();
    const long got = gvfs_pread(ctx, fd, dst, req, page * req);
    const long long c3 = clock64();
    const gvfs_u64 d = gvfs_monotonic_ns();
    t_nop[i] = (unsigned long long)(c2 - c1);
    t_miss[i] = (unsigned long long)(c3 - c2);
    g_nop[i] = b - a;
    g_miss[i] = d - b;
    if (r != 0) ++nbad;
    if (got != (long)req) ++nbad;
  }
  const long long c4 = clock64();
  const gvfs_u64 m4 = gvfs_monotonic_ns();
  tot[0] = (long long)(m4 - m0);
  tot[1] = c4 - c0;
  tot[2] = nbad;
}
"""

# A plain CuPy kernel (not through gpuvfs) that spins GATE_NS on the device clock: see Dev.gate.
SPIN_SOURCE = r"""
extern "C" __global__ void rb_spin(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); } while (t - t0 < ns);
}
"""
GATE_NS = 3_000_000

MISS_A = 0x9E3779B97F4A7C15
MISS_B = 12345


# ------------------------------------------------------------------------------ host mirrors

def _u64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.uint64)


def rb_page(seed: int, unit: Any, reads: int, r: Any, mask: int) -> np.ndarray:
    """The device's rb_page, in NumPy (uint64 arithmetic wraps as in C)."""
    with np.errstate(over="ignore"):
        z = _u64(seed) * _u64(0x632BE59BD9B4E019) + _u64(unit) * _u64(reads) + _u64(r)
        z = z + _u64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _u64(30))) * _u64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _u64(27))) * _u64(0x94D049BB133111EB)
        z = z ^ (z >> _u64(31))
        return z & _u64(mask)


def miss_pages(base: int, n: int, mask: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        i = _u64(base) + np.arange(n, dtype=np.uint64)
        return (_u64(MISS_A) * i + _u64(MISS_B)) & _u64(mask)


def pow2_at_least(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def human(n: float) -> str:
    for unit, f in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= f and n % f == 0:
            return f"{n // f:.0f} {unit}"
    return f"{n:.0f} B"


def short(n: int) -> str:
    return human(n).replace(" KiB", "K").replace(" MiB", "M").replace(" GiB", "G")


def parse_size(s: str) -> int:
    s = s.strip().upper().replace("IB", "").replace("B", "")
    mult = 1
    if s and s[-1] in "KMG":
        mult = {"K": KIB, "M": MIB, "G": GIB}[s[-1]]
        s = s[:-1]
    return int(float(s) * mult)


def med(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------ sizes

# Cold-read settings (each a Runtime; the best is judged). On the H100 host (16 cores) one
# fill a warp read fastest. Since the server hands a sweep's fills to the readers in one
# batch (2026-11-25), 96 lanes of 512 KiB beat 64 of 1 MiB (the lanes' footprint 48 MiB
# against 64) in each of three processes taking turns, by 2-9%; before, the polling
# thread's cost per fill made smaller fills lose. Since a thread waiting for a kernel
# sleeps (the cuda backend's blocking-sync events), 15 readers beat 14 (one core each left
# for the polling thread): docs/benchmarks.md, fifteenth session.
COLD_DEFAULT_FULL = ("page=256K,chunk=512K,lanes=96,lane=512K,workers=15;"
                     "page=256K,chunk=512K,lanes=128,lane=512K,workers=15;"
                     "page=256K,chunk=512K,lanes=96,lane=512K,workers=14;"
                     "page=256K,chunk=1M,lanes=64,lane=1M,workers=14")
COLD_DEFAULT_QUICK = ("page=256K,chunk=512K,lanes=96,lane=512K,workers=15;"
                      "page=256K,chunk=1M,lanes=64,lane=1M,workers=14")
COLD_DEFAULT_CPU = "page=64K,chunk=2M,lanes=16,lane=2M,workers=4"


def parse_settings(spec: str) -> list[dict[str, int]]:
    out = []
    for part in spec.split(";"):
        part = part.strip()
        if not part:
            continue
        d = {"page": 64 * KIB, "chunk": 2 * MIB, "lanes": 256, "lane": 2 * MIB, "workers": 16, "push": 0}
        for kv in part.split(","):
            k, _, v = kv.partition("=")
            k = k.strip()
            if k not in d:
                raise SystemExit(f"--cold-settings: unknown key {k!r} (page, chunk, lanes, lane, workers, push)")
            d[k] = parse_size(v) if k in ("page", "chunk", "lane", "push") else int(v)
        out.append(d)
    if not out:
        raise SystemExit("--cold-settings: no setting given")
    return out


def setting_name(s: dict[str, int]) -> str:
    return f"page {short(s['page'])}, chunk {short(s['chunk'])}, {s['lanes']} lanes x {short(s['lane'])}, " \
           f"{s['workers']} workers" + (f", fills of {short(s['push'])}+ pushed" if s.get("push") else "")


def sizes(backend: str, quick: bool, args: argparse.Namespace) -> dict[str, Any]:
    if backend == "cuda":
        S: dict[str, Any] = dict(
            file=2 * GIB, hit_span=1 * GIB, hit_out=4 * GIB, hit_target=16 * GIB, hit_target_s=0.1, hit_reps=5,
            req_sizes=[4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, 1 * MIB],
            block=256, blocks_per_sm=8, rt_lanes=256, rt_target_s=0.25, rt_reps=3,
            d2d=1 * GIB, h2d=1 * GIB, copy_reps=10, numpy_reps=3, cold_reps=3,
            kvikio_threads=[8, 16, 32], kvikio_task=[4 * MIB, 16 * MIB, 64 * MIB], kvikio_reps=3,
            disk_reps=2, open_k=2000, open_launches=3, miss_n=1000, miss_launches=4,
            cold_settings=COLD_DEFAULT_FULL, duel_reps=7)
        if quick:
            S.update(file=512 * MIB, hit_span=256 * MIB, hit_out=2 * GIB, hit_target=4 * GIB, hit_target_s=0.03,
                     hit_reps=3,
                     req_sizes=[4 * KIB, 64 * KIB], rt_target_s=0.1, rt_reps=2, d2d=512 * MIB,
                     h2d=256 * MIB, copy_reps=5, numpy_reps=2, cold_reps=2, kvikio_reps=2, disk_reps=1,
                     open_k=1000, open_launches=2, miss_n=500, miss_launches=2,
                     cold_settings=COLD_DEFAULT_QUICK, duel_reps=5)
    else:  # the cpu port: a smoke run of every code path, small
        S = dict(file=16 * MIB, hit_span=4 * MIB, hit_out=8 * MIB, hit_target=16 * MIB, hit_target_s=0.3, hit_reps=2,
                 req_sizes=[4 * KIB, 64 * KIB], block=64, blocks_per_sm=2, rt_lanes=16, rt_target_s=0.05,
                 rt_reps=2, d2d=64 * MIB, h2d=0, copy_reps=3, numpy_reps=2, cold_reps=1,
                 kvikio_threads=[], kvikio_task=[], kvikio_reps=0, disk_reps=1, open_k=200, open_launches=2,
                 miss_n=100, miss_launches=2, cold_settings=COLD_DEFAULT_CPU, duel_reps=0)
    if args.file_mib:
        S["file"] = args.file_mib * MIB
    if args.hit_span_mib:
        S["hit_span"] = pow2_at_least(args.hit_span_mib * MIB)
    if args.sizes:
        S["req_sizes"] = [parse_size(x) for x in args.sizes.split(",")]
    if args.cold_settings:
        S["cold_settings"] = args.cold_settings
    if args.kvikio_threads:
        S["kvikio_threads"] = [int(x) for x in args.kvikio_threads.split(",")]
    if args.kvikio_task_mib:
        S["kvikio_task"] = [int(x) * MIB for x in args.kvikio_task_mib.split(",")]
    if args.blocks_per_sm:
        S["blocks_per_sm"] = args.blocks_per_sm
    if args.block:
        if args.block % 32 or not 32 <= args.block <= 1024:
            raise SystemExit(f"--block: a multiple of 32 from 32 to 1024, not {args.block}")
        S["block"] = args.block
    S["compile_options"] = [f"-maxrregcount={args.maxrregcount}"] if getattr(args, "maxrregcount", 0) else []
    if args.rt_lanes:
        S["rt_lanes"] = args.rt_lanes
    for r in S["req_sizes"]:
        if r < 4 * KIB or r > 2 * MIB or r & (r - 1):
            raise SystemExit(f"request sizes must be powers of two from 4 KiB to 2 MiB (they are the page size): {r}")
    S["hit_span"] = max(S["hit_span"], max(S["req_sizes"]) * 64)
    return S


# ------------------------------------------------------------------------------ the machine

class Dev:
    """What differs between cuda and cpu for the benchmark's own host code: timing, syncs,
    memory. cuda: CuPy (imported lazily, never on the cpu backend)."""

    def __init__(self, backend: str) -> None:
        self.cuda = backend == "cuda"
        self.cp: Any = None
        self._spin: Any = None
        self.sms = 2
        if self.cuda:
            import cupy
            self.cp = cupy
            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            self.sms = int(props["multiProcessorCount"])

    def sync(self) -> None:
        if self.cuda:
            self.cp.cuda.Device().synchronize()  # every stream: rt.evict's work runs on the current one

    def gate(self, stream: Any) -> None:
        """Keeps `stream` busy for GATE_NS with a one-thread spin kernel, so that the host has
        queued the timed work (and its start event) before the GPU reaches it: host-side
        launch latency then stays out of event timings."""
        if not self.cuda:
            return
        if self._spin is None:
            self._spin = self.cp.RawKernel(SPIN_SOURCE, "rb_spin")
        with stream:
            self._spin((1,), (1,), (np.uint64(GATE_NS),))

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.sync()
            self.cp.get_default_memory_pool().free_all_blocks()
            self.cp.get_default_pinned_memory_pool().free_all_blocks()

    def kernel_s(self, rt: gpuvfs.Runtime, launch: Callable[[], None]) -> float:
        """Seconds of one launch through `rt`: cuda events on the Runtime's kernel stream
        around it (cpu: host clock around launch + synchronize)."""
        rt.synchronize()
        self.sync()
        if self.cuda:
            cp = self.cp
            start, end = cp.cuda.Event(), cp.cuda.Event()
            stream = rt.backend.stream
            self.gate(stream)
            start.record(stream)
            launch()
            end.record(stream)
            rt.synchronize()  # raises LaunchError if the kernel failed
            end.synchronize()
            return cp.cuda.get_elapsed_time(start, end) / 1e3
        t0 = time.perf_counter()
        launch()
        rt.synchronize()
        return time.perf_counter() - t0

    def wall_s(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        self.sync()
        t0 = time.perf_counter()
        r = fn()
        self.sync()
        return time.perf_counter() - t0, r

    def equal(self, a: Any, b: Any) -> bool:
        if self.cuda:
            return bool((a == b).all())
        return bool(np.array_equal(a, b))


def fs_type(path: str) -> str:
    best, typ = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, typ = mnt, parts[2]
    except OSError:
        pass
    return typ


def pick_data_dir(args: argparse.Namespace, need: int, notes: list[str]) -> tuple[str, str]:
    cands = [args.data_dir] if args.data_dir else [tempfile.gettempdir(), str(REPO)]
    chosen = None
    for c in cands:
        c = os.path.abspath(c)
        try:
            free = shutil.disk_usage(c).free
        except OSError:
            continue
        if free < need + 256 * MIB:
            notes.append(f"data dir {c}: only {free / GIB:.1f} GiB free, {need / GIB:.1f} GiB needed")
            continue
        if chosen is None:
            chosen = c
        if fs_type(c) not in ("tmpfs", "ramfs"):
            chosen = c
            break
    if chosen is None:
        raise SystemExit(f"no directory with {need / GIB:.1f} GiB free for the benchmark's files (use --data-dir)")
    d = tempfile.mkdtemp(prefix=".read-bench-", dir=chosen)
    return d, fs_type(d)


def write_random(path: str, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MIB)
            f.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            left -= n
        f.flush()
        os.fsync(f.fileno())  # clean pages: the page cache can drop them for the cold-disk runs


def warm_page_cache(path: str) -> float:
    """Reads the file once (as cat would), so it is in the host page cache. Returns GB/s."""
    buf = bytearray(16 * MIB)
    t0 = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            k = f.readinto(buf)
            if not k:
                break
            n += k
    return n / (time.perf_counter() - t0) / GB


# ------------------------------------------------------------------------------ baselines

def time_memcpy(dev: Dev, dst: int, src: int, n: int, kind: int, reps: int) -> list[float]:
    """Seconds of each of `reps` cudaMemcpyAsync calls of n bytes, timed by events on a stream
    of their own after the gate (one more, first, as a warm-up)."""
    cp = dev.cp
    stream = cp.cuda.Stream(non_blocking=True)
    ts = []
    for i in range(reps + 1):
        e0, e1 = cp.cuda.Event(), cp.cuda.Event()
        dev.gate(stream)
        e0.record(stream)
        cp.cuda.runtime.memcpyAsync(dst, src, n, kind, stream.ptr)
        e1.record(stream)
        e1.synchronize()
        if i:
            ts.append(cp.cuda.get_elapsed_time(e0, e1) / 1e3)
    return ts


def bench_d2d(dev: Dev, src: Any, n: int, reps: int) -> dict[str, Any]:
    """Device->device copy of n bytes: seconds per copy (bytes copied = n)."""
    if not dev.cuda:
        a = np.asarray(src[:n])
        b = np.empty_like(a)
        ts = []
        for i in range(reps + 1):
            t0 = time.perf_counter()
            np.copyto(b, a)
            if i:
                ts.append(time.perf_counter() - t0)
        return {"n": n, "s": ts, "ok": bool(np.array_equal(a, b)), "how": "np.copyto (cpu stand-in)"}
    cp = dev.cp
    rtm = cp.cuda.runtime
    a = src[:n]
    b = cp.empty(n, dtype=cp.uint8)
    ts = time_memcpy(dev, b.data.ptr, a.data.ptr, n, getattr(rtm, "memcpyDeviceToDevice", 3), reps)
    ok = dev.equal(a, b)
    del b
    return {"n": n, "s": ts, "ok": ok, "how": "cudaMemcpyAsync device->device, events"}


def bench_h2d(dev: Dev, host_src: np.ndarray, n: int, reps: int) -> dict[str, Any]:
    """Pinned host->device copy of n bytes (cupy.cuda.alloc_pinned_memory)."""
    cp = dev.cp
    rtm = cp.cuda.runtime
    mem = cp.cuda.alloc_pinned_memory(n)
    h = np.frombuffer(mem, dtype=np.uint8, count=n)
    h[:] = host_src[:n]
    d = cp.empty(n, dtype=cp.uint8)
    ts = time_memcpy(dev, d.data.ptr, h.ctypes.data, n, getattr(rtm, "memcpyHostToDevice", 1), reps)
    step = max(1, n // 65536)
    ok = bool(np.array_equal(cp.asnumpy(d[::step]), h[::step]))
    del d, h, mem
    return {"n": n, "s": ts, "ok": ok, "how": "cudaMemcpyAsync pinned host->device, events"}


def bench_numpy(dev: Dev, path: str, size: int, reps: int) -> tuple[dict[str, Any], Any]:
    """cupy.asarray(numpy.fromfile(p)): host clock, file in the page cache. Returns the last
    array: the reference the other reads are checked against."""
    ts, ref = [], None
    for _ in range(reps):
        ref = None
        gc.collect()
        if dev.cuda:
            cp = dev.cp
            t, ref = dev.wall_s(lambda: cp.asarray(np.fromfile(path, dtype=np.uint8)))
        else:
            t, ref = dev.wall_s(lambda: np.fromfile(path, dtype=np.uint8))
        ts.append(t)
    ok = ref is not None and int(ref.size) == size
    return {"n": size, "s": ts, "ok": ok,
            "how": "cupy.asarray(numpy.fromfile(p))" if dev.cuda else "numpy.fromfile(p) (cpu stand-in)"}, ref


def import_kvikio(notes: list[str]) -> Any:
    """KvikIO in compat mode (POSIX reads, no GDS), 16 threads by default: the environment
    is set before the import, as KvikIO reads it then."""
    os.environ["KVIKIO_COMPAT_MODE"] = "ON"
    os.environ["KVIKIO_NTHREADS"] = "16"
    os.environ["KVIKIO_TASK_SIZE"] = str(4 * MIB)
    err = None
    for attempt in range(2):
        try:
            import kvikio  # noqa: F401
            import kvikio.defaults  # noqa: F401
            return kvikio
        except Exception as e:  # ImportError, or a missing shared library
            err = e
            if attempt == 0:  # where scripts/gpu-check.sh installs the offline bundle
                added = False
                for extra in ("/tmp/gpuvfs-env/site", "/tmp/gpuvfs-whl"):
                    if os.path.isdir(extra) and extra not in sys.path:
                        sys.path.append(extra)
                        added = True
                if not added:
                    break
                for m in [m for m in sys.modules if m == "kvikio" or m.startswith("kvikio.")]:
                    del sys.modules[m]
    notes.append(f"KvikIO not importable ({type(err).__name__}: {str(err)[:120]}): its lines are skipped, "
                 "and the goals measured against it are not judged")
    return None


def kvikio_configure(kv: Any, threads: int, task: int) -> tuple[int, int]:
    """Sets KvikIO's thread count and task size; returns what it reads back."""
    d = kv.defaults
    try:
        d.set({"num_threads": threads, "task_size": task})  # KvikIO >= 25.02 (applied at once)
    except AttributeError:
        d.num_threads_reset(threads)  # older KvikIO
        d.task_size_reset(task)
    return kvikio_settings(kv)


def kvikio_settings(kv: Any) -> tuple[int, int]:
    d = kv.defaults
    if hasattr(d, "get"):  # KvikIO >= 25.02: defaults.get(name)
        return int(d.get("num_threads")), int(d.get("task_size"))
    return int(d.num_threads()), int(d.task_size())


def kvikio_compat(kv: Any) -> str:
    try:
        d = kv.defaults
        return str(d.get("compat_mode") if hasattr(d, "get") else d.compat_mode())
    except Exception as e:
        return f"? ({e})"


def kvikio_read(dev: Dev, kv: Any, path: str, buf: Any, size: int) -> float:
    """Seconds of one CuFile.read of the whole file (opened before the clock starts)."""
    with kv.CuFile(path, "r") as f:
        dev.sync()
        t0 = time.perf_counter()
        n = f.read(buf)
        dev.sync()
        t = time.perf_counter() - t0
    if int(n) != size:
        raise RuntimeError(f"KvikIO read {n} bytes of {size}")
    return t


def bench_kvikio(dev: Dev, kv: Any, path: str, size: int, ref: Any, S: dict[str, Any],
                 notes: list[str]) -> dict[str, Any]:
    cp = dev.cp
    buf = cp.empty(size, dtype=cp.uint8)
    env = kvikio_settings(kv)  # as the environment set it before the import: 16 threads, 4 MiB
    kvikio_read(dev, kv, path, buf, size)  # warm-up: thread pool, bounce buffers
    ok = dev.equal(buf, ref)
    ts = [kvikio_read(dev, kv, path, buf, size) for _ in range(S["kvikio_reps"])]
    std = {"threads": 16, "task": 4 * MIB, "threads_set": env[0], "task_set": env[1], "s": ts,
           "gbps": size / med(ts) / GB}
    log(f"  KvikIO (environment: {env[0]} threads, task {short(env[1])}): {std['gbps']:.2f} GB/s")
    if env != (16, 4 * MIB):
        notes.append(f"KvikIO read its environment as {env[0]} threads, task {short(env[1])} (16, 4M wanted)")
    sweep = [std]
    for th in S["kvikio_threads"]:
        for task in S["kvikio_task"]:
            if (th, task) == (16, 4 * MIB):
                continue
            try:
                got = kvikio_configure(kv, th, task)
            except Exception as e:
                notes.append(f"KvikIO: setting {th} threads, task {short(task)} failed ({type(e).__name__}: {e})")
                continue
            if got != (th, task):
                notes.append(f"KvikIO: asked for {th} threads, task {short(task)}, reads back {got}")
            kvikio_read(dev, kv, path, buf, size)  # warm-up: a new thread count makes a new pool
            ts = [kvikio_read(dev, kv, path, buf, size) for _ in range(S["kvikio_reps"])]
            sweep.append({"threads": th, "task": task, "threads_set": got[0], "task_set": got[1], "s": ts,
                          "gbps": size / med(ts) / GB})
            log(f"  KvikIO {th} threads, task {short(task)}: {size / med(ts) / GB:.2f} GB/s")
    del buf
    best = max(sweep, key=lambda x: x["gbps"])
    return {"sweep": sweep, "best": best, "std": std if env == (16, 4 * MIB) else None, "env_setting": env,
            "ok": ok, "compat": kvikio_compat(kv), "version": getattr(kv, "__version__", "?")}


# ------------------------------------------------------------------------------ cold disk

class Cold:
    """Makes a file cold: echo 3 > /proc/sys/vm/drop_caches (root), or, where that is not
    permitted (or on the cpu backend: never drop a shared machine's caches), the file's own
    pages by posix_fadvise(POSIX_FADV_DONTNEED)."""

    def __init__(self, mode: str, backend: str, notes: list[str]) -> None:
        self.method = "off"
        if mode == "off":
            return
        if mode in ("drop", "auto") and not (mode == "auto" and backend != "cuda"):
            try:
                self._drop()
                self.method = "drop_caches"
                return
            except OSError as e:
                notes.append(f"echo 3 > /proc/sys/vm/drop_caches not permitted ({e.strerror or e}): "
                             "the cold-disk lines drop only the file's pages (posix_fadvise DONTNEED)")
        if hasattr(os, "posix_fadvise"):
            self.method = "fadvise"
        else:
            notes.append("no way to drop the page cache here: cold-disk lines skipped")

    @staticmethod
    def _drop() -> None:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")

    def make_cold(self, path: str) -> None:
        if self.method == "drop_caches":
            self._drop()
        elif self.method == "fadvise":
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# ------------------------------------------------------------------------------ gvfs phases

def dev_path(rt: gpuvfs.Runtime, name: str) -> Any:
    return rt.asarray(np.frombuffer(("/" + name).encode() + b"\0", dtype=np.uint8))


def open_fd(rt: gpuvfs.Runtime, mod: Any, name: str) -> tuple[int, int]:
    out = rt.zeros(2, "int64")
    mod.get_function("rb_open_fd")((1,), (1,), (rt.ctx, dev_path(rt, name), out))
    rt.synchronize()
    fd, size = (int(v) for v in rt.asnumpy(out))
    if fd < 0:
        raise OSError(-fd, f"gvfs_open(/{name}) on the device: {os.strerror(-fd)}")
    return fd, size


def close_fd(rt: gpuvfs.Runtime, mod: Any, fd: int) -> None:
    out = rt.zeros(1, "int64")
    mod.get_function("rb_close_fd")((1,), (1,), (rt.ctx, np.int32(fd), out))
    rt.synchronize()


def stat_delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    keys = ("hostcalls", "hostcalls_pooled", "bytes_from_host", "errors", "cache_hits", "cache_misses", "fills", "evictions",
            "opens_on_device", "bytes_hit", "fill_waits", "readaheads", "fills_pushed")
    return {k: int(b[k]) - int(a[k]) for k in keys if k in a and k in b}


def grid_for(S: dict[str, Any], dev: Dev, variant: str, req: int, cap: int, max_blocks: int | None = None
             ) -> tuple[int, int, int]:
    """(blocks, block, units) that fill the GPU (SMs x blocks_per_sm x block threads), fewer
    when the units' own output regions (units x req) would pass `cap`."""
    block = S["block"]
    per_block = block if variant == "thread" else block // 32
    blocks = max_blocks or dev.sms * S["blocks_per_sm"]
    blocks = max(1, min(blocks, (cap // req) // per_block))
    return blocks, block, blocks * per_block


class ReadRun:
    """Runs rb_read_thread / rb_read_warp through one Runtime and checks what they read."""

    def __init__(self, rt: gpuvfs.Runtime, mod: Any, dev: Dev, fd: int, host: np.ndarray, span: int) -> None:
        self.rt, self.mod, self.dev, self.fd, self.host, self.span = rt, mod, dev, fd, host, span

    def run(self, variant: str, req: int, blocks: int, block: int, units: int, max_reads: int, cap: int,
            reps: int, target_s: float, problems: list[str], what: str) -> dict[str, Any]:
        """R reads per unit: as many as take about target_s per launch (one launch with R = 1
        is timed to calibrate), at most max_reads."""
        rt, dev = self.rt, self.dev
        k = self.mod.get_function("rb_read_thread" if variant == "thread" else "rb_read_warp")
        mask = self.span // req - 1
        bad = rt.zeros(1, "uint64")
        state: dict[str, Any] = {}

        def setup(r: int) -> None:
            slots = max(1, min(r, cap // (units * req)))
            if state.get("slots") != slots or state.get("out") is None:
                state["out"] = None
                dev.free()
                state["out"] = rt.empty(units * slots * req, "uint8")
            state["slots"], state["reads"] = slots, r

        def launch(seed: int) -> Callable[[], None]:
            return lambda: k((blocks,), (block,), (rt.ctx, np.int32(self.fd), state["out"], np.uint64(req),
                                                   np.uint64(mask), np.uint32(state["reads"]),
                                                   np.uint32(state["slots"]), np.uint64(seed), bad))

        setup(1)
        dev.kernel_s(rt, launch(1))  # warm-up: module load, first launch
        t_one = dev.kernel_s(rt, launch(2))
        reads = int(max(1, min(max_reads, target_s / max(t_one, 1e-7))))
        setup(reads)
        st0 = rt.stats()
        ts = [dev.kernel_s(rt, launch(100 + i)) for i in range(reps)]
        st1 = rt.stats()
        # check: poison, one more launch, compare a sample of regions with the file
        out = state["out"]
        out.fill(0xEE)
        seed = 977
        dev.kernel_s(rt, launch(seed))
        slots, reads = state["slots"], state["reads"]
        nbad = int(rt.asnumpy(bad)[0])
        rng = np.random.default_rng(req + units)
        sample_u = rng.integers(0, units, size=min(units, 48))
        sample_u[0], sample_u[-1] = 0, units - 1
        mismatches = 0
        for u in sample_u:
            s = int(rng.integers(0, slots))
            r_last = s + slots * ((reads - 1 - s) // slots)
            page = int(rb_page(seed, int(u), reads, r_last, mask))
            got = rt.asnumpy(out[(int(u) * slots + s) * req:(int(u) * slots + s + 1) * req])
            if not np.array_equal(got, self.host[page * req:(page + 1) * req]):
                mismatches += 1
        if nbad:
            problems.append(f"{what}: {nbad} reads did not return {req} bytes")
        if stat_delta(st0, st1).get("errors", 0):
            problems.append(f"{what}: the host server counted {stat_delta(st0, st1)['errors']} errors")
        if mismatches:
            problems.append(f"{what}: {mismatches} of {len(sample_u)} sampled regions differ from the file")
        nbytes = units * reads * req
        state["out"] = None
        dev.free()
        return {"variant": variant, "req": req, "blocks": blocks, "block": block, "units": units, "reads": reads,
                "slots": slots, "bytes_per_launch": nbytes, "s": ts, "gbps": [nbytes / t / GB for t in ts],
                "one_read_s": t_one, "stats": stat_delta(st0, st1), "bad_reads": nbad, "mismatches": mismatches,
                "sampled": int(len(sample_u))}


def phase_hit(S: dict[str, Any], dev: Dev, root: str, backend: str, host: np.ndarray, res: dict[str, Any],
              problems: list[str], notes: list[str]) -> None:
    span = S["hit_span"]
    for req in S["req_sizes"]:
        t = time.perf_counter()
        cache = pow2_at_least(4 * span)  # 4x the file: no 16-way set overflows, every page stays
        rt = gpuvfs.Runtime(root=root, backend=backend, cache_bytes=cache, page_size=req,
                            lane_bytes=max(MIB, req))
        try:
            res.setdefault("machine_rt", rt.backend)
            mod = rt.compile(SOURCE, options=S["compile_options"])
            rt.prefetch("hit.bin")
            st = rt.stats()
            want = span // req
            if st["pages_resident"] < want:
                notes.append(f"hit {short(req)}: only {st['pages_resident']} of {want} pages resident after "
                             "rt.prefetch: some reads miss")
            fd, size = open_fd(rt, mod, "hit.bin")
            if size != span:
                problems.append(f"hit.bin: the device saw size {size}, expected {span}")
            rr = ReadRun(rt, mod, dev, fd, host, span)
            for variant in ("thread", "warp"):
                blocks, block, units = grid_for(S, dev, variant, req, S["hit_out"])
                max_reads = int(max(1, min(1 << 16, S["hit_target"] // (units * req))))
                r = rr.run(variant, req, blocks, block, units, max_reads, S["hit_out"], S["hit_reps"],
                           S["hit_target_s"], problems, f"hit {variant} {short(req)}")
                r["pages_resident"] = int(st["pages_resident"])
                if r["stats"].get("cache_misses", 0):
                    notes.append(f"hit {variant} {short(req)}: {r['stats']['cache_misses']} misses during the "
                                 "timed launches (not a pure hit path)")
                res["hit"].append(r)
                log(f"  hit {variant:6s} {short(req):>4s}: {med(r['gbps']):9.4g} GB/s  ({units} {variant}s x "
                    f"{r['reads']} reads, {blocks} blocks)")
            close_fd(rt, mod, fd)
        finally:
            rt.close()
            dev.free()
        log(f"hit path {short(req)} measured ({time.perf_counter() - t:.1f} s)")


def phase_roundtrip(S: dict[str, Any], dev: Dev, root: str, backend: str, host: np.ndarray, res: dict[str, Any],
                    problems: list[str]) -> None:
    t = time.perf_counter()
    lanes = S["rt_lanes"]
    rt = gpuvfs.Runtime(root=root, backend=backend, cache_bytes=0, lanes=lanes,
                        lane_bytes=max(MIB, max(S["req_sizes"])))
    try:
        res.setdefault("machine_rt", rt.backend)
        mod = rt.compile(SOURCE)
        fd, _ = open_fd(rt, mod, "hit.bin")
        rr = ReadRun(rt, mod, dev, fd, host, S["hit_span"])
        for req in S["req_sizes"]:
            for variant in ("thread", "warp"):
                # a few threads per lane, or one warp per lane: the lanes are what is shared
                want_units = (2 * lanes if req <= 64 * KIB else lanes) if variant == "thread" else lanes
                per_block = S["block"] if variant == "thread" else S["block"] // 32
                blocks, block, units = grid_for(S, dev, variant, req, S["hit_out"],
                                                max_blocks=max(1, want_units // per_block))
                r = rr.run(variant, req, blocks, block, units, 4096, S["hit_out"], S["rt_reps"], S["rt_target_s"],
                           problems, f"round trip {variant} {short(req)}")
                if r["stats"].get("hostcalls", 0) < units * r["reads"] * S["rt_reps"]:
                    problems.append(f"round trip {variant} {short(req)}: fewer hostcalls than reads "
                                    f"({r['stats'].get('hostcalls')}): not every read went to the host")
                res["rt"].append(r)
                log(f"  round trip {variant:6s} {short(req):>4s}: {med(r['gbps']):9.4g} GB/s  ({units} {variant}s x "
                    f"{r['reads']} reads)")
        close_fd(rt, mod, fd)
    finally:
        rt.close()
        dev.free()
    log(f"round trips measured ({time.perf_counter() - t:.1f} s)")


def cold_runtime(root: str, backend: str, size: int, s: dict[str, int]) -> gpuvfs.Runtime:
    return gpuvfs.Runtime(root=root, backend=backend, cache_bytes=pow2_at_least(2 * size), page_size=s["page"],
                          lanes=s["lanes"], lane_bytes=s["lane"], workers=s["workers"], fill_push_bytes=s["push"])


class ColdRun:
    """gpuvfs reads of the whole cold-read file: a kernel (GPU-initiated) and rt.read."""

    def __init__(self, rt: gpuvfs.Runtime, dev: Dev, S: dict[str, Any], s: dict[str, int], size: int) -> None:
        self.rt, self.dev, self.s, self.size = rt, dev, s, size
        self.mod = rt.compile(SOURCE)
        self.k = self.mod.get_function("rb_read_file")
        self.path = dev_path(rt, "cold.bin")
        warps = -(-size // s["chunk"])
        self.block = 256 if dev.cuda else 64
        self.blocks = max(1, min(-(-warps * 32 // self.block), dev.sms * S["blocks_per_sm"]))
        self.out = rt.empty(size, "uint8")
        self.status = rt.zeros(1, "int64")

    def kernel(self, ref: Any, check: bool, problems: list[str], what: str) -> tuple[float, dict[str, int]]:
        rt = self.rt
        rt.evict()
        self.status.fill(0)
        if check:
            self.out.fill(0xEE)
        st0 = rt.stats()
        t = self.dev.kernel_s(rt, lambda: self.k((self.blocks,), (self.block,), (
            rt.ctx, self.path, self.out, np.uint64(self.size), np.uint64(self.s["chunk"]), self.status)))
        st1 = rt.stats()
        err = int(rt.asnumpy(self.status)[0])
        if err:
            problems.append(f"{what}: the kernel's reads failed: {os.strerror(-err) if err < 0 else err}")
        if check and not self.dev.equal(self.out, ref):
            problems.append(f"{what}: bytes differ from the file")
        return t, stat_delta(st0, st1)

    def rtread(self, ref: Any, check: bool, problems: list[str], what: str) -> tuple[float, dict[str, int]]:
        rt = self.rt
        rt.evict()
        st0 = rt.stats()
        t, a = self.dev.wall_s(lambda: rt.read("cold.bin"))
        st1 = rt.stats()
        if int(a.size) != self.size or (check and not self.dev.equal(a, ref)):
            problems.append(f"{what}: rt.read returned other bytes than the file's")
        del a
        return t, stat_delta(st0, st1)

    def close(self) -> None:
        self.out = None
        self.rt.close()


def check_cold_stats(what: str, stats: list[dict[str, int]], size: int, problems: list[str]) -> None:
    """The counter deltas of cold reads: no server errors in any, and every byte of each came
    from the host (else rt.evict() did not make it cold, and the time is not a cold read's)."""
    if any(x.get("errors", 0) for x in stats):
        problems.append(f"{what}: the host server counted errors")
    got = min(x.get("bytes_from_host", size) for x in stats)
    if got < size:
        problems.append(f"{what}: only {got} bytes came from the host (of {size}): rt.evict() did not make it cold")


def phase_cold(S: dict[str, Any], dev: Dev, root: str, backend: str, size: int, ref: Any, res: dict[str, Any],
               problems: list[str]) -> None:
    for s in parse_settings(S["cold_settings"]):
        t = time.perf_counter()
        name = setting_name(s)
        try:
            rt = cold_runtime(root, backend, size, s)
        except Exception as e:
            problems.append(f"cold read [{name}]: Runtime failed: {type(e).__name__}: {e}")
            continue
        res.setdefault("machine_rt", rt.backend)
        cr = None
        try:
            cr = ColdRun(rt, dev, S, s, size)
            cr.kernel(ref, True, problems, f"cold kernel [{name}] warm-up")
            cr.rtread(ref, True, problems, f"cold rt.read [{name}] warm-up")
            kt, rtt, kst, rst = [], [], [], []
            for i in range(S["cold_reps"]):
                a, b = cr.kernel(ref, i == 0, problems, f"cold kernel [{name}]")
                kt.append(a)
                kst.append(b)
                a, b = cr.rtread(ref, i == 0, problems, f"cold rt.read [{name}]")
                rtt.append(a)
                rst.append(b)
            for what, st in (("kernel", kst), ("rt.read", rst)):
                check_cold_stats(f"cold {what} [{name}]", st, size, problems)
            r = {"setting": s, "name": name, "kernel_s": kt, "rtread_s": rtt, "kernel_gbps": size / med(kt) / GB,
                 "rtread_gbps": size / med(rtt) / GB, "kernel_stats": kst[0], "rtread_stats": rst[0],
                 "blocks": cr.blocks, "block": cr.block}
            res["cold"].append(r)
            log(f"  cold [{name}]: kernel {r['kernel_gbps']:.4g} GB/s, rt.read {r['rtread_gbps']:.4g} GB/s")
        except Exception as e:
            problems.append(f"cold read [{name}]: {type(e).__name__}: {e}")
            traceback.print_exc()
        finally:
            if cr is not None:
                cr.close()
            else:
                rt.close()
            dev.free()
        log(f"cold read [{name}] measured ({time.perf_counter() - t:.1f} s)")


def phase_cold_duel(S: dict[str, Any], dev: Dev, root: str, backend: str, path: str, size: int, ref: Any,
                    kv: Any, res: dict[str, Any], problems: list[str]) -> None:
    """The judged cold-read figures: gpuvfs's best setting of the sweep and KvikIO's best
    setting of its sweep, measured again in the same rounds, taking turns (KvikIO, kernel,
    rt.read, the order rotating each round), S["duel_reps"] rounds; each side's median.

    Why not the sweeps' bests themselves: each is the largest of several noisy medians, and
    the larger a sweep the more its best is luck (KvikIO's has 9 settings, the quick gvfs
    sweep 2). Choosing on one set of runs and judging on fresh ones, interleaved so that a
    machine's drift falls on both alike, compares the two settings and not the luck."""
    t = time.perf_counter()
    best = max(res["cold"], key=lambda r: r["kernel_gbps"] + r["rtread_gbps"])
    s, name = best["setting"], best["name"]
    kvb = res["kvikio"]["best"]
    got = kvikio_configure(kv, kvb["threads"], kvb["task"])
    out: dict[str, Any] = {"setting": s, "name": name, "kvikio_setting": {"threads": got[0], "task": got[1]},
                           "kvikio_s": [], "kernel_s": [], "rtread_s": []}
    buf = dev.cp.empty(size, dtype=dev.cp.uint8)
    rt = cold_runtime(root, backend, size, s)
    cr = None
    try:
        cr = ColdRun(rt, dev, S, s, size)
        kvikio_read(dev, kv, path, buf, size)  # warm-ups: KvikIO's new pool, the kernel's module
        cr.kernel(ref, False, problems, "cold duel kernel warm-up")
        cr.rtread(ref, False, problems, "cold duel rt.read warm-up")
        turns = ("kvikio", "kernel", "rtread")
        label = {"kernel": "cold duel kernel", "rtread": "cold duel rt.read"}
        stats: dict[str, list[dict[str, int]]] = {"kernel": [], "rtread": []}
        for i in range(S["duel_reps"]):
            for k in range(3):
                who = turns[(i + k) % 3]
                if who == "kvikio":
                    buf.fill(0xEE)
                    out["kvikio_s"].append(kvikio_read(dev, kv, path, buf, size))
                    if i == 0 and not dev.equal(buf, ref):
                        problems.append("cold duel: KvikIO's bytes differ from the file")
                    continue
                secs, st = (cr.kernel if who == "kernel" else cr.rtread)(ref, i == 0, problems, label[who])
                out[who + "_s"].append(secs)
                stats[who].append(st)
        for who, st in stats.items():
            if st:
                check_cold_stats(label[who], st, size, problems)
    finally:
        if cr is not None:
            cr.close()
        else:
            rt.close()
        buf = None
        dev.free()
    res["duel"] = out
    g = {k: size / med(out[k + "_s"]) / GB for k in ("kvikio", "kernel", "rtread")}
    log(f"  cold duel [{name}; KvikIO {got[0]} threads, task {short(got[1])}]: "
        + ", ".join(f"{k} {v:.4g} GB/s" for k, v in g.items()))
    log(f"cold duel measured ({time.perf_counter() - t:.1f} s)")


def phase_disk(S: dict[str, Any], dev: Dev, root: str, backend: str, path: str, size: int, ref: Any, kv: Any,
               kv_best: dict[str, Any] | None, cold: Cold, res: dict[str, Any], problems: list[str]) -> None:
    t = time.perf_counter()
    best = max(res["cold"], key=lambda r: max(r["kernel_gbps"], r["rtread_gbps"]), default=None)
    s = best["setting"] if best else parse_settings(S["cold_settings"])[0]
    out: dict[str, Any] = {"method": cold.method, "setting": s, "kernel_s": [], "rtread_s": [], "kvikio_s": [],
                           "host_s": []}
    buf = dev.cp.empty(size, dtype=dev.cp.uint8) if (kv is not None and dev.cuda) else None
    if buf is not None and kv_best is not None:
        try:
            got = kvikio_configure(kv, kv_best["threads"], kv_best["task"])
        except Exception as e:  # keep whatever KvikIO has now, and say so
            got = kvikio_settings(kv)
            problems.append(f"cold-disk KvikIO: could not set its best setting ({type(e).__name__}: {e})")
        out["kvikio_setting"] = {"threads": got[0], "task": got[1]}
    cr = ColdRun(cold_runtime(root, backend, size, s), dev, S, s, size)
    try:
        cr.kernel(ref, False, problems, "cold-disk kernel warm-up")
        # The Runtime's readers map the file and so keep its pages in the page cache, where a
        # drop cannot reach them: evict (which unmaps) before every drop.
        cr.rt.evict()
        for i in range(S["disk_reps"]):
            if buf is not None:
                cold.make_cold(path)
                out["kvikio_s"].append(kvikio_read(dev, kv, path, buf, size))
                if i == 0 and not dev.equal(buf, ref):
                    problems.append("cold-disk KvikIO: bytes differ from the file")
            cold.make_cold(path)
            a, st = cr.kernel(ref, i == 0, problems, "cold-disk kernel")
            out["kernel_s"].append(a)
            out.setdefault("kernel_stats", st)
            cr.rt.evict()
            cold.make_cold(path)
            a, st = cr.rtread(ref, i == 0, problems, "cold-disk rt.read")
            out["rtread_s"].append(a)
            out.setdefault("rtread_stats", st)
            cr.rt.evict()
            cold.make_cold(path)  # the host alone, for reference: how fast is this disk?
            out["host_s"].append(warm_page_cache_time(path))
    finally:
        cr.close()
        buf = None
        dev.free()
    res["disk"] = out
    g = {k: (size / med(out[k + "_s"]) / GB if out[k + "_s"] else None) for k in ("kvikio", "kernel", "rtread", "host")}
    log(f"  cold disk ({cold.method}): " + ", ".join(f"{k} {v:.4g} GB/s" for k, v in g.items() if v))
    log(f"cold disk measured ({time.perf_counter() - t:.1f} s)")


def warm_page_cache_time(path: str) -> float:
    size = os.path.getsize(path)
    return size / (warm_page_cache(path) * GB)


def phase_latency(S: dict[str, Any], dev: Dev, root: str, backend: str, host: np.ndarray, res: dict[str, Any],
                  problems: list[str]) -> None:
    t = time.perf_counter()
    req = 4 * KIB
    span = S["hit_span"]
    rt = gpuvfs.Runtime(root=root, backend=backend, cache_bytes=max(64 * MIB, pow2_at_least(4 * req * S["miss_n"])),
                        page_size=req)
    try:
        res.setdefault("machine_rt", rt.backend)
        mod = rt.compile(SOURCE)
        path = dev_path(rt, "hit.bin")
        # ---- open answered on the GPU
        k = S["open_k"]
        kop = mod.get_function("rb_open_lat")
        mono, ticks, out = rt.zeros(k, "uint64"), rt.zeros(k, "uint64"), rt.zeros(4, "int64")
        kop((1,), (1,), (rt.ctx, path, np.int32(min(k, 50)), mono, ticks, out))  # warm-up
        rt.synchronize()
        opens = {"mono_ns": [], "tick_ns": [], "ns_per_tick": [], "loop_ns": []}
        st0 = rt.stats()
        for _ in range(S["open_launches"]):
            kop((1,), (1,), (rt.ctx, path, np.int32(k), mono, ticks, out))
            rt.synchronize()
            o = rt.asnumpy(out).copy()
            if o[3] < 0 or o[2]:
                problems.append(f"open latency: first open {o[3]}, {o[2]} failed opens")
            scale = float(o[0]) / float(o[1]) if o[1] > 0 else 1.0
            opens["mono_ns"] += rt.asnumpy(mono).astype(np.float64).tolist()
            opens["tick_ns"] += (rt.asnumpy(ticks).astype(np.float64) * scale).tolist()
            opens["ns_per_tick"].append(scale)
            opens["loop_ns"].append(float(o[0]) / k)
        st1 = rt.stats()
        d = stat_delta(st0, st1)
        want = S["open_launches"] * k
        if d.get("opens_on_device", want) < want:
            problems.append(f"open latency: only {d.get('opens_on_device')} of {want} opens were answered on the GPU")
        opens["stats"] = d
        res["open"] = opens
        # ---- one 4 KiB miss vs one hostcall
        # The file in the host's page cache, as it is after the hit phase: the disk phase,
        # when it ran before this one, dropped it (a miss would then time the disk: 102 us
        # against 25, H100, 2026-11-25).
        warm_page_cache(os.path.join(root, "hit.bin"))
        fd, _ = open_fd(rt, mod, "hit.bin")
        n = S["miss_n"]
        mask = span // req - 1
        if (S["miss_launches"] + 1) * n > span // req:
            raise SystemExit("the hit file has too few pages for the miss runs: raise --hit-span-mib")
        km = mod.get_function("rb_miss_lat")
        buf = rt.empty(n * req, "uint8")
        arrs = [rt.zeros(n, "uint64") for _ in range(4)]
        tot = rt.zeros(4, "int64")
        miss = {"nop_ns": [], "miss_ns": [], "nop_mono_ns": [], "miss_mono_ns": [], "ns_per_tick": [], "stats": []}
        for launch in range(S["miss_launches"] + 1):  # the first is a warm-up
            rt.evict()
            base = launch * n
            buf.fill(0xEE)
            st0 = rt.stats()
            km((1,), (1,), (rt.ctx, np.int32(fd), buf, np.uint64(req), np.uint64(mask), np.uint64(base), np.int32(n),
                            *arrs, tot))
            rt.synchronize()
            st1 = rt.stats()
            o = rt.asnumpy(tot).copy()
            if o[2]:
                problems.append(f"miss latency: {o[2]} calls failed (nop != 0 or a short read)")
            pages = miss_pages(base, n, mask).astype(np.int64)
            got = rt.asnumpy(buf).reshape(n, req)
            want_b = host.reshape(-1, req)[pages]
            if not np.array_equal(got, want_b):
                problems.append(f"miss latency: {int((got != want_b).any(axis=1).sum())} of {n} reads differ from the file")
            d = stat_delta(st0, st1)
            if d.get("cache_misses", n) != n:
                problems.append(f"miss latency: {d.get('cache_misses')} cache misses for {n} reads of new pages")
            if launch == 0:
                continue
            scale = float(o[0]) / float(o[1]) if o[1] > 0 else 1.0
            t_nop, t_miss, g_nop, g_miss = (rt.asnumpy(a).astype(np.float64) for a in arrs)
            miss["nop_ns"] += (t_nop * scale).tolist()
            miss["miss_ns"] += (t_miss * scale).tolist()
            miss["nop_mono_ns"] += g_nop.tolist()
            miss["miss_mono_ns"] += g_miss.tolist()
            miss["ns_per_tick"].append(scale)
            miss["stats"].append(d)
        res["miss"] = miss
        close_fd(rt, mod, fd)
    finally:
        rt.close()
        dev.free()
    log(f"open and miss latency measured ({time.perf_counter() - t:.1f} s)")


def clock_tick_ns(xs: list[float]) -> float:
    """The apparent resolution of a ns clock from short intervals read with it: the smallest
    positive difference, or infinity when more than a tenth of them read 0 (a coarse clock)."""
    a = np.asarray(xs, dtype=np.float64)
    if a.size == 0 or np.count_nonzero(a == 0) > a.size // 10:
        return float("inf")
    pos = a[a > 0]
    return float(pos.min()) if pos.size else float("inf")


# ------------------------------------------------------------------------------ figures, plot

def build_figures(S: dict[str, Any], res: dict[str, Any], dev: Dev, notes: list[str]) -> list[Figure]:
    figs: list[Figure] = []
    size = S["file"]
    gb = lambda n, ts: n / med(ts) / GB if ts else float("nan")  # noqa: E731
    d2d = res.get("d2d")
    d2d_gbps = gb(d2d["n"], d2d["s"]) if d2d else None
    d2d_name = "device->device copy, BYTES COPIED (= half of bytes read + written)"
    if d2d:
        figs.append(Figure("d2d_copy", "device->device copy (bytes copied)", "GB/s", d2d_gbps, None, "",
                           notes=f"{d2d['how']}, {human(d2d['n'])}; bytes read + written = {2 * d2d_gbps:.1f} GB/s",
                           extra={"read_plus_written_gbps": 2 * d2d_gbps}))
    h2d = res.get("h2d")
    if h2d:
        figs.append(Figure("h2d_pinned", "pinned host->device copy", "GB/s", gb(h2d["n"], h2d["s"]), None, "",
                           notes=h2d["how"]))
    npb = res.get("numpy")
    if npb:
        figs.append(Figure("numpy_cupy", f"{'cupy.asarray(numpy.fromfile(p))' if dev.cuda else 'numpy.fromfile(p)'}, "
                           f"{short(size)} file in page cache", "GB/s", gb(npb["n"], npb["s"]), None, ""))
    kvr = res.get("kvikio")
    kv_best = kvr["best"]["gbps"] if kvr and kvr.get("best") else None
    kv_best_name = (f"KvikIO best of the sweep ({kvr['best']['threads']} threads, task "
                    f"{short(kvr['best']['task'])}), compat mode, same file in page cache") if kv_best else ""
    if kvr and kvr.get("std"):
        figs.append(Figure("kvikio_16t", f"KvikIO CuFile.read, compat, 16 threads, task 4M, {short(size)} file",
                           "GB/s", kvr["std"]["gbps"], None, ""))
    if kv_best:
        figs.append(Figure("kvikio_best", f"KvikIO best ({kvr['best']['threads']} thr, task "
                           f"{short(kvr['best']['task'])}), {short(size)} file", "GB/s", kv_best, None, ""))
    # ---- hit path
    hit_by = {(r["variant"], r["req"]): r for r in res["hit"]}
    for r in res["hit"]:
        goal = r["req"] in (4 * KIB, 64 * KIB)
        v = med(r["gbps"])
        label = "per-thread gvfs_pread" if r["variant"] == "thread" else "warp gvfs_pread_warp"
        figs.append(Figure(f"hit_{r['variant']}_{short(r['req'])}", f"hit, random {short(r['req'])}, {label}", "GB/s",
                           v, d2d_gbps, d2d_name if d2d else "",
                           ">= 0.80x floor" if goal and d2d else "", "ratio_min" if goal and d2d else "",
                           0.8 if goal and d2d else None,
                           notes="bytes copied into the caller's buffers / kernel time"))
    # ---- round trip
    for r in res["rt"]:
        h = hit_by.get((r["variant"], r["req"]))
        label = "per-thread" if r["variant"] == "thread" else "warp"
        figs.append(Figure(f"roundtrip_{r['variant']}_{short(r['req'])}",
                           f"round trip (cache off), random {short(r['req'])}, {label}", "GB/s", med(r["gbps"]),
                           med(h["gbps"]) if h else None, "the hit path, same size and variant" if h else ""))
    # ---- cold read, page cache
    duel = res.get("duel")
    if res["cold"]:
        bk = max(res["cold"], key=lambda r: r["kernel_gbps"])
        br = max(res["cold"], key=lambda r: r["rtread_gbps"])
        # Judged on the duel when there is one (phase_cold_duel says why); the sweeps' bests
        # are then information.
        judged = kv_best is not None and duel is None
        for key, name, r, v in (("cold_kernel", "GPU-initiated (kernel, gvfs_pread_warp)", bk, bk["kernel_gbps"]),
                                ("cold_rtread", "host-initiated (rt.read)", br, br["rtread_gbps"])):
            figs.append(Figure(key if duel is None else key + "_sweep",
                               f"cold read {short(size)}, page cache, {name}"
                               + (", best of the sweeps" if duel is not None else "")
                               + ("" if kv_best is not None else " [no KvikIO: goal not judged]"), "GB/s", v,
                               kv_best, kv_best_name, ">= 1.05x floor" if judged else "",
                               "ratio_min" if judged else "", 1.05 if judged else None,
                               notes=f"best of {len(res['cold'])} setting(s): {r['name']}",
                               extra={"setting": r["setting"]}))
    if duel:
        kvd = size / med(duel["kvikio_s"]) / GB
        kvs = duel["kvikio_setting"]
        kvd_name = (f"KvikIO at its best setting of the sweep ({kvs['threads']} threads, task {short(kvs['task'])}), "
                    f"compat mode, median of {len(duel['kvikio_s'])} reads taking turns with gpuvfs's")
        for key, name, k in (("cold_kernel", "GPU-initiated (kernel, gvfs_pread_warp)", "kernel_s"),
                             ("cold_rtread", "host-initiated (rt.read)", "rtread_s")):
            figs.append(Figure(key, f"cold read {short(size)}, page cache, {name}, interleaved", "GB/s",
                               size / med(duel[k]) / GB, kvd, kvd_name, ">= 1.05x floor", "ratio_min", 1.05,
                               notes=f"gpuvfs's best setting of the sweep ({duel['name']}), median of "
                                     f"{len(duel[k])} reads taking turns with KvikIO's",
                               extra={"setting": duel["setting"], "kvikio_setting": kvs}))
    if len(res["cold"]) > 1:
        for r in res["cold"]:
            notes.append(f"cold read [{r['name']}]: kernel {r['kernel_gbps']:.2f} GB/s, "
                         f"rt.read {r['rtread_gbps']:.2f} GB/s")
    # ---- cold disk
    dk = res.get("disk")
    if dk:
        how = "drop_caches" if dk["method"] == "drop_caches" else "fadvise DONTNEED"
        kvd = size / med(dk["kvikio_s"]) / GB if dk["kvikio_s"] else None
        if kvd:
            figs.append(Figure("disk_kvikio", f"cold disk ({how}), KvikIO (its best setting)", "GB/s", kvd, None, ""))
        if dk["host_s"]:
            figs.append(Figure("disk_host", f"cold disk ({how}), host read() only, 16 MiB reads", "GB/s",
                               size / med(dk["host_s"]) / GB, None, ""))
        for key, name, k in (("disk_kernel", "GPU-initiated (kernel)", "kernel_s"),
                             ("disk_rtread", "host-initiated (rt.read)", "rtread_s")):
            if dk[k]:
                figs.append(Figure(key, f"cold disk ({how}), {name}" + ("" if kvd else " [no KvikIO: goal not judged]"),
                                   "GB/s", size / med(dk[k]) / GB, kvd,
                                   "KvikIO from the same cold disk" if kvd else "",
                                   ">= 0.90x floor" if kvd else "",
                                   "ratio_min" if kvd else "", 0.9 if kvd else None,
                                   notes=setting_name(dk["setting"])))
        if kvd and kv_best and kvd > 0.7 * kv_best:
            notes.append("the cold-disk KvikIO read was nearly as fast as from the page cache: the drop may not "
                         "have reached the disk")
    # ---- latencies
    op = res.get("open")
    if op and op["mono_ns"]:
        tick = clock_tick_ns(op["mono_ns"])
        m_mono = med(op["mono_ns"])
        m_tick = med(op["tick_ns"])
        use_mono = tick <= 100
        primary = m_mono if use_mono else m_tick
        figs.append(Figure("open_on_gpu_median", "open answered on the GPU (median, "
                           + ("gvfs_monotonic_ns" if use_mono else "SM clock; globaltimer too coarse") + ")", "us",
                           primary / 1e3, None, "", "< 1 us", "value_max", 1.0,
                           notes=f"gvfs_monotonic_ns median {m_mono:.0f} ns (resolution ~{tick:.0f} ns), SM clock "
                                 f"median {m_tick:.0f} ns, loop mean {np.mean(op['loop_ns']):.0f} ns per open+close",
                           extra={"mono_median_ns": m_mono, "clock_median_ns": m_tick, "mono_tick_ns": tick}))
        if not use_mono:
            notes.append(f"gvfs_monotonic_ns() ticks every ~{tick:.0f} ns here: the open figure uses SM clock ticks "
                         f"scaled by it over the whole loop (gvfs_monotonic_ns median {m_mono:.0f} ns)")
        figs.append(Figure("open_on_gpu_p99", "open answered on the GPU (p99, same clock)", "us",
                           float(np.percentile(op["mono_ns"] if use_mono else op["tick_ns"], 99)) / 1e3))
    ms = res.get("miss")
    if ms and ms["miss_ns"]:
        figs.append(Figure("miss_4k_median", "one 4 KiB miss, gvfs_pread (median)", "us", med(ms["miss_ns"]) / 1e3,
                           med(ms["nop_ns"]) / 1e3, "one hostcall round trip (gvfs_nop), same thread, interleaved",
                           "<= 1.50x floor", "ratio_max", 1.5,
                           notes=f"SM clock; gvfs_monotonic_ns medians: miss {med(ms['miss_mono_ns']):.0f} ns, "
                                 f"nop {med(ms['nop_mono_ns']):.0f} ns; requests the host handed to its pool: "
                                 f"{sum(d.get('hostcalls_pooled', 0) for d in ms['stats'])} of "
                                 f"{sum(d.get('hostcalls', 0) for d in ms['stats'])}"))
    return figs


def plot(path: str, S: dict[str, Any], res: dict[str, Any], title: str, notes: list[str]) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        notes.append(f"no plot: matplotlib not importable ({type(e).__name__}: {e})")
        return
    fig, ax = plt.subplots(figsize=(12, 6))
    styles = {("hit", "thread"): ("tab:blue", "o", "-"), ("hit", "warp"): ("tab:blue", "s", "--"),
              ("rt", "thread"): ("tab:red", "o", "-"), ("rt", "warp"): ("tab:red", "s", "--")}
    names = {("hit", "thread"): "hit, per-thread gvfs_pread", ("hit", "warp"): "hit, warp gvfs_pread_warp",
             ("rt", "thread"): "round trip (cache off), per-thread", ("rt", "warp"): "round trip (cache off), warp"}
    for kind in ("hit", "rt"):
        for variant in ("thread", "warp"):
            pts = sorted((r["req"], med(r["gbps"])) for r in res[kind] if r["variant"] == variant)
            if pts:
                c, m, ls = styles[(kind, variant)]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=c, marker=m, linestyle=ls,
                        label=names[(kind, variant)])
    size = S["file"]
    lines = []
    if res.get("d2d"):
        lines.append((res["d2d"]["n"] / med(res["d2d"]["s"]) / GB, "device->device copy (bytes copied)", "black", "-"))
    if res.get("h2d"):
        lines.append((res["h2d"]["n"] / med(res["h2d"]["s"]) / GB, "pinned host->device copy", "gray", "-"))
    kvr = res.get("kvikio")
    if kvr and kvr.get("best"):
        lines.append((kvr["best"]["gbps"], f"KvikIO best, {short(size)} file in page cache", "tab:green", ":"))
    if res.get("numpy"):
        lines.append((res["numpy"]["n"] / med(res["numpy"]["s"]) / GB, "cupy.asarray(numpy.fromfile)",
                      "tab:olive", ":"))
    if res["cold"]:
        lines.append((max(r["kernel_gbps"] for r in res["cold"]), f"gvfs cold read {short(size)}, kernel",
                      "tab:purple", "-."))
        lines.append((max(r["rtread_gbps"] for r in res["cold"]), f"gvfs cold read {short(size)}, rt.read",
                      "tab:orange", "-."))
    for y, label, c, ls in lines:
        if y and math.isfinite(y) and y > 0:
            ax.axhline(y, color=c, linestyle=ls, linewidth=1.2, label=f"{label}: {y:.3g} GB/s")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    xs = S["req_sizes"]
    ax.set_xticks(xs)
    ax.set_xticklabels([short(x) for x in xs])
    ax.set_xlabel("request size (random page-aligned reads; page size = request size)")
    ax.set_ylabel("GB/s (bytes landed in the reader's buffer per second)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    log(f"plot written to {path}")


# ------------------------------------------------------------------------------ main

PHASES = ("baselines", "hit", "roundtrip", "cold", "disk", "latency")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--plot", metavar="PNG", help="write a plot of bandwidth against request size to PNG")
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma-separated subset of {','.join(PHASES)} (default: all; baselines always run)")
    p.add_argument("--data-dir", help="where the benchmark's files go (default: the temp dir unless it is tmpfs, "
                                      "else the repository); a fresh subdirectory is made and removed")
    p.add_argument("--keep-data", action="store_true", help="keep the data files")
    p.add_argument("--file-mib", type=int, default=0, help="size of the cold-read file (default 2048, quick 512)")
    p.add_argument("--hit-span-mib", type=int, default=0, help="size of the hit-path file (default 1024, quick 256)")
    p.add_argument("--sizes", help="request sizes of the hit and round-trip lines, e.g. 4K,16K,64K")
    p.add_argument("--maxrregcount", type=int, default=0,
                   help="hit-path kernels: compile with -maxrregcount=N (occupancy against registers; default: "
                        "the cuda backend's cap, 128)")
    p.add_argument("--blocks-per-sm", type=int, default=0, help="hit-path grid: blocks per SM (default 8)")
    p.add_argument("--block", type=int, default=0,
                   help="hit-path grid: threads per block, a multiple of 32 (default 256 on cuda, 64 on cpu; with "
                        "--maxrregcount, what fits an SM is what runs at once)")
    p.add_argument("--rt-lanes", type=int, default=0, help="lanes of the cache-off Runtime (default 256)")
    p.add_argument("--cold-settings", help="Runtime settings for the cold reads, ';'-separated, each "
                                           "'page=64K,chunk=2M,lanes=256,lane=2M,workers=16[,push=256K]' "
                                           "(push: Runtime fill_push_bytes, default 0)")
    p.add_argument("--kvikio-threads", help="KvikIO sweep: thread counts (default 8,16,32)")
    p.add_argument("--kvikio-task-mib", help="KvikIO sweep: task sizes in MiB (default 4,16,64)")
    p.add_argument("--cold-disk", default="auto", choices=["auto", "drop", "fadvise", "off"],
                   help="how the cold-disk runs drop the page cache (auto: drop_caches on cuda, falling back to "
                        "posix_fadvise DONTNEED of the file; fadvise on cpu)")
    args = p.parse_args(argv)
    backend = resolve_backend(args.backend)
    timeout = start_watchdog(args)
    S = sizes(backend, args.quick, args)
    phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    unknown = phases - set(PHASES)
    if unknown:
        raise SystemExit(f"--phases: unknown {', '.join(sorted(unknown))}")
    t_start = time.perf_counter()
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    log(f"read benchmark: backend {backend}, {'quick' if args.quick else 'full'} mode, watchdog {timeout:.0f} s, {date}")
    log("sizes: " + ", ".join(f"{k}={v if not isinstance(v, int) or v < MIB else human(v)}" for k, v in S.items()))
    notes: list[str] = []
    problems: list[str] = []
    res: dict[str, Any] = {"hit": [], "rt": [], "cold": []}
    dev = Dev(backend)
    data_dir, fstype = pick_data_dir(args, S["file"] + S["hit_span"], notes)
    log(f"data: {data_dir} ({fstype})")
    if fstype in ("tmpfs", "ramfs"):
        notes.append(f"the data files live on {fstype}: the cold-disk lines read memory, not a disk")
    size = S["file"]
    cold_path = os.path.join(data_dir, "cold.bin")
    hit_path = os.path.join(data_dir, "hit.bin")

    def phase(name: str, fn: Callable[[], None]) -> None:
        if name != "baselines" and name not in phases:
            return
        try:
            fn()
        except SystemExit:
            raise
        except BaseException as e:  # record, go on: the table is still printed
            problems.append(f"phase {name} failed: {type(e).__name__}: {e}")
            traceback.print_exc()
            sys.stdout.flush()

    kv = None
    ref: Any = None
    try:
        t = time.perf_counter()
        write_random(cold_path, size, 1)
        write_random(hit_path, S["hit_span"], 2)
        host_hit = np.fromfile(hit_path, dtype=np.uint8)
        pc = warm_page_cache(cold_path)
        log(f"files written and read once into the page cache ({time.perf_counter() - t:.1f} s; "
            f"one read() stream: {pc:.2f} GB/s)")

        def baselines() -> None:
            nonlocal ref, kv
            t = time.perf_counter()
            r, ref = bench_numpy(dev, cold_path, size, S["numpy_reps"])
            res["numpy"] = r
            if not r["ok"]:
                problems.append("numpy baseline: wrong size")
            d2d_n = min(S["d2d"], size)
            res["d2d"] = bench_d2d(dev, ref, d2d_n, S["copy_reps"])
            if not res["d2d"]["ok"]:
                problems.append("device->device copy: bytes differ")
            if dev.cuda and S["h2d"]:
                host = np.fromfile(cold_path, dtype=np.uint8, count=min(S["h2d"], size))
                res["h2d"] = bench_h2d(dev, host, min(S["h2d"], size), S["copy_reps"])
                if not res["h2d"]["ok"]:
                    problems.append("pinned host->device copy: bytes differ")
                del host
            if dev.cuda and ("cold" in phases or "disk" in phases):
                kv = import_kvikio(notes)
                if kv is not None:
                    try:
                        res["kvikio"] = bench_kvikio(dev, kv, cold_path, size, ref, S, notes)
                        if not res["kvikio"]["ok"]:
                            problems.append("KvikIO: bytes differ from the file")
                        if "ON" not in res["kvikio"]["compat"].upper() and "TRUE" not in res["kvikio"]["compat"].upper():
                            notes.append(f"KvikIO compat mode reads back as {res['kvikio']['compat']}")
                    except Exception as e:
                        notes.append(f"KvikIO failed ({type(e).__name__}: {str(e)[:160]}): its lines are skipped")
                        traceback.print_exc()
                        kv = None
            elif not dev.cuda:
                notes.append("cpu backend: no pinned host->device copy and no KvikIO; the 'device' copy and "
                             "the fromfile baseline are NumPy stand-ins")
            dev.free()
            log(f"baselines measured ({time.perf_counter() - t:.1f} s)")

        phase("baselines", baselines)
        phase("hit", lambda: phase_hit(S, dev, data_dir, backend, host_hit, res, problems, notes))
        phase("roundtrip", lambda: phase_roundtrip(S, dev, data_dir, backend, host_hit, res, problems))
        if ref is not None:
            phase("cold", lambda: phase_cold(S, dev, data_dir, backend, size, ref, res, problems))
            if res["cold"] and kv is not None and res.get("kvikio") and S["duel_reps"]:
                phase("cold", lambda: phase_cold_duel(S, dev, data_dir, backend, cold_path, size, ref, kv, res,
                                                      problems))
        if "disk" in phases and ref is not None:
            cold = Cold(args.cold_disk, backend, notes)
            if cold.method != "off":
                kv_best = res["kvikio"]["best"] if res.get("kvikio") else None
                phase("disk", lambda: phase_disk(S, dev, data_dir, backend, cold_path, size, ref, kv, kv_best, cold,
                                                 res, problems))
            elif args.cold_disk == "off":
                notes.append("cold-disk lines skipped (--cold-disk off)")
        phase("latency", lambda: phase_latency(S, dev, data_dir, backend, host_hit, res, problems))
    finally:
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    ref = None

    info = machine_info(backend, res.pop("machine_rt", None))
    figs = build_figures(S, res, dev, notes)
    for f in figs:
        if f.notes and f.key in ("d2d_copy", "cold_kernel", "cold_rtread", "disk_kernel", "open_on_gpu_median",
                                 "miss_4k_median"):
            notes.append(f"{f.name}: {f.notes}")
    if backend == "cpu":
        notes.append("cpu backend: a smoke run of the benchmark's code paths, NOT a performance figure; "
                     "the goals are judged on the GPU (cuda backend) only")
    notes.append("GB/s = 1e9 bytes/s; hit and round-trip lines count the bytes landed in the readers' buffers "
                 "(one copy), the device->device ceiling counts bytes copied the same way")
    notes += [f"CHECK FAILED: {x}" for x in problems]
    elapsed = time.perf_counter() - t_start
    notes.append(f"ran in {elapsed:.1f} s")
    title = f"read benchmark ({backend}: {info.get('device', '?')}, {date})"
    if args.plot:
        try:
            plot(args.plot, S, res, title, notes)
        except Exception as e:
            notes.append(f"plot failed: {type(e).__name__}: {e}")
    print_table(title, figs, notes)
    write_json(args.json, {
        "benchmark": "read", "schema": 1, "backend": backend, "quick": bool(args.quick), "machine": info,
        "date": date, "sizes": S, "data_fs": fstype, "figures": [f.to_json() for f in figs],
        "checks_ok": not problems, "problems": problems, "notes": notes, "elapsed_s": elapsed,
        "details": _details(res),
    })
    if problems:
        return 2
    return exit_status(figs, args.strict)


def _details(res: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k in ("d2d", "h2d", "numpy", "kvikio", "duel", "disk"):
        if res.get(k):
            d[k] = res[k]
    d["hit"] = res["hit"]
    d["roundtrip"] = res["rt"]
    d["cold"] = res["cold"]
    if res.get("open"):
        op = res["open"]
        d["open"] = {"mono_ns": summary_stats(op["mono_ns"]), "clock_ns": summary_stats(op["tick_ns"]),
                     "ns_per_tick": op["ns_per_tick"], "loop_ns_per_open_close": op["loop_ns"],
                     "mono_tick_ns": clock_tick_ns(op["mono_ns"]), "stats": op["stats"]}
    if res.get("miss"):
        ms = res["miss"]
        d["miss"] = {"miss_ns": summary_stats(ms["miss_ns"]), "nop_ns": summary_stats(ms["nop_ns"]),
                     "miss_mono_ns": summary_stats(ms["miss_mono_ns"]), "nop_mono_ns": summary_stats(ms["nop_mono_ns"]),
                     "ns_per_tick": ms["ns_per_tick"], "stats": ms["stats"]}
    return d


if __name__ == "__main__":
    sys.exit(main())
