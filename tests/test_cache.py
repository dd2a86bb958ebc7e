"""The device page cache, name cache and fd table (device/gvfs/pagetable.cuh,
filecache.cuh, files.cuh) on every backend: bytes always equal the file's."""
from __future__ import annotations

import errno
import os
import threading
import time

import numpy as np
import pytest

from conftest import write_random

from gpuvfs import abi

KERNELS = r"""
#include <gpuvfs.cuh>

// Thread t reads req_len[t] bytes at req_off[t] of file (t % nfiles), per thread or
// (warp != 0) warp-collectively with the request of the warp's first lane.
extern "C" __global__ void reads(gvfs_ctx *ctx, int nfiles, const long *req_off, const long *req_len,
                                 unsigned char *out, long stride, long *res, int warp) {
  long t = blockIdx.x * (long)blockDim.x + threadIdx.x;
  char path[16] = "/c/f00.bin";
  long src = warp ? (t & ~31L) : t;
  int f = (int)(src % nfiles);
  path[4] = (char)('0' + f / 10); path[5] = (char)('0' + f % 10);
  int fd = gvfs_open(ctx, path, GVFS_O_RDONLY);
  if (fd < 0) { res[t] = fd; return; }
  long got;
  if (warp) got = gvfs_pread_warp(ctx, fd, out + src * stride, req_len[src], req_off[src]);
  else got = gvfs_pread(ctx, fd, out + t * stride, req_len[t], req_off[t]);
  res[t] = got;
  gvfs_close(ctx, fd);
}

// Every thread reads the same page at once.
extern "C" __global__ void same_page(gvfs_ctx *ctx, unsigned char *out, long len, long *res) {
  long t = blockIdx.x * (long)blockDim.x + threadIdx.x;
  int fd = gvfs_open(ctx, "/c/f00.bin", GVFS_O_RDONLY);
  res[t] = fd < 0 ? fd : gvfs_pread(ctx, fd, out + t * len, len, 0);
  if (fd >= 0) gvfs_close(ctx, fd);
}

// One thread opens a path twice: the second open is answered on the GPU.
extern "C" __global__ void open_twice(gvfs_ctx *ctx, long *res) {
  for (int i = 0; i < 2; ++i) {
    int fd = gvfs_open(ctx, "/c/f00.bin", GVFS_O_RDONLY);
    res[i] = fd;
    if (fd >= 0) gvfs_close(ctx, fd);
  }
}
"""


def _hints_on() -> bool:
    """Whether opens use the open's hints: not in the build for memory checkers
    (GVFS_PATH_EXACT_READS in GPUVFS_DEVICE_DEFINES), which reads paths a byte at a time."""
    return "GVFS_PATH_EXACT_READS" not in os.environ.get("GPUVFS_DEVICE_DEFINES", "").split()


def _files(root: str, n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    os.makedirs(os.path.join(root, "c"), exist_ok=True)
    return [write_random(os.path.join(root, "c", f"f{i:02d}.bin"), size + 977 * i, seed + i) for i in range(n)]


def _run_reads(rt, mod, files, offs, lens, stride, blocks, threads, warp):
    n = blocks * threads
    out = rt.asarray(np.full(n * stride, 0xCD, dtype=np.uint8))   # poisoned
    res = rt.asarray(np.full(n, -12345, dtype=np.int64))
    mod.get_function("reads")((blocks,), (threads,), (rt.ctx, np.int32(len(files)), rt.asarray(offs),
                              rt.asarray(lens), out, np.int64(stride), res, np.int32(warp)))
    rt.synchronize()
    out, res = rt.asnumpy(out), rt.asnumpy(res)
    for t in range(n):
        src = (t & ~31) if warp else t
        data = files[src % len(files)]
        want = data[offs[src]:offs[src] + lens[src]]
        assert res[t] == len(want), f"thread {t}: got {res[t]}, want {len(want)}"
        region = out[src * stride:(src + 1) * stride]
        assert np.array_equal(region[:len(want)], want), f"thread {t}: bytes differ"
        assert (region[len(want):] == 0xCD).all(), f"thread {t}: wrote past the end of its read"


# Per-thread reads on the GPU are served together by the lanes that make them at once
# (filecache.cuh, gvfs_cache_pread_group); on the cpu backend each OS thread reads alone
# unless the kernel defines GVFS_CPU_COALESCED (its warps then act as converged, which
# these kernels allow: every lane makes the same calls). "coalesced" runs that path.
COALESCED = "#define GVFS_CPU_COALESCED 1\n"
VARIANTS = pytest.mark.parametrize("variant", ["per-thread", "coalesced", "warp"])
# How fills land in the slots: pulled by the GPU from the lane, or pushed by the host (a DMA
# on cuda: FILL_PUSH); fill_push_bytes=1 pushes every fill.
FILLS = pytest.mark.parametrize("fills", ["pull", "push"])
PUSH_BYTES = {"pull": 0, "push": 1}


def _check_fills(st: dict, fills: str, native: bool = False) -> None:
    assert st["fills"] > 0, st
    if fills == "push":   # every fill of slots; a read around the cache (no slot free) is a FILL still
        assert 0 < st["fills_pushed"] <= st["fills"], st
        if native:        # each FILL_PUSH read and pushed by the native readers
            assert st["hostcalls_native"] >= st["fills_pushed"], st
    else:
        assert st["fills_pushed"] == 0, st


@FILLS
@VARIANTS
def test_random_reads_cross_pages_and_file_end(make_runtime, data_root, variant, fills):
    warp = int(variant == "warp")
    rt = make_runtime(data_root, page_size=4096, cache_bytes=4 << 20, lane_bytes=32768, lanes=64,
                      fill_push_bytes=PUSH_BYTES[fills])
    mod = rt.compile((COALESCED if variant == "coalesced" else "") + KERNELS)
    files = _files(data_root, 5, 60_000)
    rng = np.random.default_rng(7 + warp)
    blocks, threads, stride = 4, 64, 20_000
    n = blocks * threads
    sizes = np.array([len(files[(t if not warp else t & ~31) % 5]) for t in range(n)])
    offs = (rng.random(n) * (sizes + 3000)).astype(np.int64)        # some start past the end
    lens = rng.integers(1, stride, n).astype(np.int64)
    offs[:8] = [0, 4095, 4096, 4097, sizes[4] - 1, sizes[5] - 5, 12287, 3]   # page edges
    if variant == "coalesced":  # two thirds of the reads inside one page: the group serves those
        inside = np.arange(n) % 3 != 0
        lens[inside] = np.minimum(lens[inside], 4096 - offs[inside] % 4096)
    for rep in range(2):                   # cold, then warm
        _run_reads(rt, mod, files, offs, lens, stride, blocks, threads, warp)
    st = rt.stats()
    assert st["cache_misses"] > 0 and st["cache_hits"] > 0 and st["errors"] == 0
    assert st["opens_on_device"] > 0
    _check_fills(st, fills, rt.cache_files.native)


@FILLS
@VARIANTS
def test_working_set_four_times_the_cache(make_runtime, data_root, variant, fills):
    warp = int(variant == "warp")
    cache = 256 * 1024
    rt = make_runtime(data_root, page_size=4096, cache_bytes=cache, lane_bytes=16384, lanes=32,
                      fill_push_bytes=PUSH_BYTES[fills])
    assert rt.stats()["cache_bytes"] == cache
    mod = rt.compile((COALESCED if variant == "coalesced" else "") + KERNELS)
    files = _files(data_root, 4, cache, seed=40)           # 4x the cache in all
    rng = np.random.default_rng(11)
    blocks, threads, stride = 4, 64, 9000 if not warp else 40_000   # a warp reads one request
    n = blocks * threads
    sizes = np.array([len(f) for f in files])
    offs = (rng.random(n) * sizes[np.arange(n) % 4]).astype(np.int64)
    lens = rng.integers(1, stride, n).astype(np.int64)
    if variant == "coalesced":   # single-page reads over twice the cache: hits and evictions
        offs = offs % (cache // 2)
        lens = np.minimum(lens, 4096 - offs % 4096)
    for _ in range(3 if not warp else 8):
        offs = np.roll(offs, 17)
        if warp:
            idx = np.arange(n) & ~31
            offs = (rng.random(n) * sizes[idx % 4]).astype(np.int64)
        _run_reads(rt, mod, files, offs, lens, stride, blocks, threads, warp)
    st = rt.stats()
    assert st["evictions"] > 0, st
    assert st["pages_resident"] <= cache // 4096
    _check_fills(st, fills, rt.cache_files.native)


def test_one_fill_for_many_threads_missing_one_page(make_runtime, data_root):
    rt = make_runtime(data_root, page_size=65536, cache_bytes=1 << 20, readahead_pages=0)
    mod = rt.compile(KERNELS)
    files = _files(data_root, 1, 200_000, seed=3)
    blocks, threads, length = 4, 64, 3000
    n = blocks * threads
    out = rt.zeros(n * length, "uint8")
    res = rt.zeros(n, "int64")
    mod.get_function("same_page")((blocks,), (threads,), (rt.ctx, out, np.int64(length), res))
    rt.synchronize()
    out, res = rt.asnumpy(out), rt.asnumpy(res)
    assert (res == length).all()
    assert np.array_equal(out.reshape(n, length), np.broadcast_to(files[0][:length], (n, length)))
    st = rt.stats()
    assert st["fills"] == 1 and st["cache_misses"] == 1, st
    assert st["cache_hits"] + st["fill_waits"] == n - 1, st


def test_host_rewrite_between_launches_is_seen(make_runtime, data_root):
    rt = make_runtime(data_root, page_size=4096, cache_bytes=1 << 20)
    mod = rt.compile(KERNELS)
    files = _files(data_root, 1, 50_000, seed=5)
    n, stride = 64, 50_000
    offs = np.zeros(n, dtype=np.int64)
    lens = np.full(n, 50_000, dtype=np.int64)
    _run_reads(rt, mod, files, offs, lens, stride, 1, n, 0)
    path = os.path.join(data_root, "c", "f00.bin")
    new = np.random.default_rng(99).integers(0, 256, len(files[0]), dtype=np.uint8)
    mtime = os.stat(path).st_mtime_ns
    new.tofile(path)                                   # same size, new bytes
    os.utime(path, ns=(mtime + 1_000_000, mtime + 1_000_000))  # even on a coarse clock
    _run_reads(rt, mod, [new], offs, lens, stride, 1, n, 0)
    shorter = new[:30_001].copy()
    shorter.tofile(path)                               # and a different size
    _run_reads(rt, mod, [shorter], offs, lens, stride, 1, n, 0)


def test_repeated_open_is_answered_on_the_gpu(make_runtime, data_root):
    rt = make_runtime(data_root)
    mod = rt.compile(KERNELS)
    _files(data_root, 1, 1000)
    res = rt.zeros(2, "int64")
    mod.get_function("open_twice")((1,), (1,), (rt.ctx, res))
    rt.synchronize()
    assert (rt.asnumpy(res) >= 3).all()
    st = rt.stats()
    assert st["opens_on_device"] == 1
    assert st["opens_hinted"] == (1 if _hints_on() else 0)   # the second open, through the path's address (N5)
    # Only the first open asked the host (plus nothing else: close of a cached fd is local).
    assert st["hostcalls"] == 1


OPEN_ALIGNED = r"""
#include <gpuvfs.cuh>
// Thread t opens the path at paths + offs[t]; res[t] = the file's size (or -errno).
extern "C" __global__ void open_aligned(gvfs_ctx *ctx, const char *paths, const int *offs, long *res) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  int fd = gvfs_open(ctx, paths + offs[t], GVFS_O_RDONLY);
  if (fd < 0) { res[t] = fd; return; }
  gvfs_stat st;
  res[t] = gvfs_fstat(ctx, fd, &st) == 0 ? (long)st.size : -1;
  gvfs_close(ctx, fd);
}
"""


@pytest.mark.parametrize("exact", [False, True], ids=["words", "exact-reads"])
def test_open_keys_paths_at_any_alignment(make_runtime, data_root, monkeypatch, exact):
    """The name cache reads paths a word at a time: the same path at each of 8 alignments,
    with non-NUL garbage after it, is one entry (one LOOKUP, the other opens on the GPU);
    lengths around word edges and past an entry's capacity open the right file. The same with
    the byte-at-a-time reads for memory checkers (GVFS_PATH_EXACT_READS)."""
    monkeypatch.setenv("GPUVFS_DEVICE_DEFINES", "GVFS_PATH_EXACT_READS" if exact else "")
    rt = make_runtime(data_root)
    mod = rt.compile(OPEN_ALIGNED)
    # "/" + name: around word edges, around the 4 words a key keeps in registers (31-33
    # bytes), the longest that fits an entry, and one longer.
    names = ["a", "b" * 6, "c" * 7, "d" * 8, "e" * 14, "f" * 15, "i" * 30, "j" * 31, "k" * 32, "g" * 222, "h" * 230]
    for i, n in enumerate(names):
        with open(os.path.join(data_root, n), "wb") as f:
            f.write(b"x" * (100 + i))
    buf = bytearray(b"\xa5" * (len(names) * 8 * 256))
    offs = []
    for i, n in enumerate(names):
        for a in range(8):
            o = (i * 8 + a) * 256 + a          # alignment a
            p = ("/" + n).encode() + b"\0"
            buf[o:o + len(p)] = p
            offs.append(o)
    res = rt.zeros(len(offs), "int64")
    mod.get_function("open_aligned")((len(names),), (8,), (rt.ctx, rt.asarray(np.frombuffer(bytes(buf), np.uint8)),
                                                  rt.asarray(np.array(offs, np.int32)), res))
    rt.synchronize()
    got = rt.asnumpy(res)
    assert list(got) == [100 + i for i in range(len(names)) for _ in range(8)]
    # All paths but the last (231 bytes) fit an entry: one LOOKUP each, 7 opens on the GPU each.
    assert rt.stats()["opens_on_device"] == (len(names) - 1) * 7


OPEN_HINT = r"""
#include <gpuvfs.cuh>
// One thread, step i: copies the path at paths + src[i] (with its NUL) to work + at[i], and
// opens it there; res[i] = the file's size or -errno. One buffer holding one path after
// another: the open's hint for that address names the last path opened through it.
extern "C" __global__ void open_steps(gvfs_ctx *ctx, const char *paths, const int *src, const int *at, int n,
                                      char *work, long *res) {
  if (gvfs_global_tid() != 0) return;
  for (int i = 0; i < n; ++i) {
    const char *p = paths + src[i];
    char *w = work + at[i];
    int j = 0;
    do { w[j] = p[j]; } while (p[j++] != 0);
    int fd = gvfs_open(ctx, w, GVFS_O_RDONLY);
    if (fd < 0) { res[i] = fd; continue; }
    gvfs_stat st;
    res[i] = gvfs_fstat(ctx, fd, &st) == 0 ? (long)st.size : -1;
    gvfs_close(ctx, fd);
  }
}

// Thread t opens paths + offs[t % n] k times; res[t * k + i] = the size or -errno.
extern "C" __global__ void open_shared_paths(gvfs_ctx *ctx, const char *paths, const int *offs, int n, int k,
                                             long *res) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  for (int i = 0; i < k; ++i) {
    int fd = gvfs_open(ctx, paths + offs[t % n], GVFS_O_RDONLY);
    if (fd < 0) { res[t * k + i] = fd; continue; }
    gvfs_stat st;
    res[t * k + i] = gvfs_fstat(ctx, fd, &st) == 0 ? (long)st.size : -1;
    gvfs_close(ctx, fd);
  }
}
"""


def _address(a) -> int:
    return int(a.data.ptr) if hasattr(a.data, "ptr") else int(a.ctypes.data)


@pytest.mark.parametrize("exact", [False, True], ids=["words", "exact-reads"])
def test_open_hint_is_checked_against_the_path(make_runtime, data_root, monkeypatch, exact):
    """An open through an address whose last open was another path (a prefix of it, a longer
    one, a missing one) opens its own file: the hint is a guess checked against the path's
    bytes (files.cuh, N5). Paths too long for their first words, or cut by a 4 KiB boundary,
    take the keyed path and open the right file. Which opens the hint answered is exact; the
    byte-at-a-time build for memory checkers uses no hints and gives the same answers."""
    monkeypatch.setenv("GPUVFS_DEVICE_DEFINES", "GVFS_PATH_EXACT_READS" if exact else "")
    rt = make_runtime(data_root)
    mod = rt.compile(OPEN_HINT)
    os.makedirs(os.path.join(data_root, "hint"))
    sizes = {"/hint/alpha.bin": 11, "/hint/alpha.bi": 22, "/hint/alpha.bin.x": 33, "/hint/" + "x" * 25: 44,
             "/hint/" + "y" * 26: 55, "/ab": 66}
    for p, n in sizes.items():
        with open(os.path.join(data_root, p[1:]), "wb") as f:
            f.write(b"z" * n)
    missing = "/hint/missing"
    names = list(sizes) + [missing]
    blob, src = b"", {}
    for p in names:
        src[p] = len(blob)
        blob += p.encode() + b"\0"
    work = rt.zeros(3 * 4096, "uint8")
    cut = (4091 - _address(work)) % 4096    # a path here has 5 bytes before the next 4 KiB
    A, P, X = "/hint/alpha.bin", "/hint/alpha.bi", "/hint/alpha.bin.x"
    x25, y26 = "/hint/" + "x" * 25, "/hint/" + "y" * 26
    # (path, where in work, answered through the hint?)
    steps = [(A, 0, False), (A, 0, True),            # first open asks the host; the next takes the hint
             (P, 0, False), (P, 0, True),            # a prefix of the hinted path: not it
             (A, 0, False),                          # the hint names P now: keyed, on the GPU
             (X, 0, False), (X, 0, True),            # the hinted path is a prefix of this one
             (missing, 0, False), (missing, 0, True),  # a current negative answer, through the hint
             (x25, 0, False), (x25, 0, True),        # 31 bytes and the NUL: the first four words
             (y26, 0, False), (y26, 0, False),       # 32 bytes: past them, never hinted
             ("/ab", cut, False), ("/ab", cut, True),  # 4 bytes with the NUL, before the cut
             (A, cut, False), (A, cut, False),       # crosses the cut: keyed
             ("/ab", 3, False), ("/ab", 3, True)]    # a misaligned address
    res = rt.asarray(np.full(len(steps), -12345, np.int64))
    st0 = rt.stats()
    mod.get_function("open_steps")((1,), (1,), (
        rt.ctx, rt.asarray(np.frombuffer(blob, np.uint8)), rt.asarray(np.array([src[p] for p, _, _ in steps], np.int32)),
        rt.asarray(np.array([a for _, a, _ in steps], np.int32)), np.int32(len(steps)), work, res))
    rt.synchronize()
    want = [sizes.get(p, -errno.ENOENT) for p, _, _ in steps]
    assert list(rt.asnumpy(res)) == want
    st = rt.stats()
    lookups = len(names)                      # each path's first open in the launch asks the host
    assert st["hostcalls"] - st0["hostcalls"] == lookups
    assert st["opens_on_device"] - st0["opens_on_device"] == len(steps) - lookups
    assert st["opens_hinted"] - st0["opens_hinted"] == (0 if exact else sum(h for _, _, h in steps))


def test_open_hints_shared_by_many_threads(make_runtime, data_root):
    """256 threads open 16 paths of one table (16 threads a path) 4 times each, at once:
    every open answers its own file's size; the hints, written by many threads at once,
    answer most of the repeated opens."""
    rt = make_runtime(data_root)
    mod = rt.compile(OPEN_HINT)
    n, k, threads = 16, 4, 256
    offs, blob = [], b""
    for i in range(n):
        with open(os.path.join(data_root, f"s{i:02d}"), "wb") as f:
            f.write(b"q" * (10 + i))
        offs.append(len(blob) + i % 8)          # several alignments
        blob += b"\xa5" * (i % 8) + f"/s{i:02d}".encode() + b"\0"
    res = rt.asarray(np.full(threads * k, -12345, np.int64))
    mod.get_function("open_shared_paths")((threads // 64,), (64,), (
        rt.ctx, rt.asarray(np.frombuffer(blob, np.uint8)), rt.asarray(np.array(offs, np.int32)), np.int32(n),
        np.int32(k), res))
    rt.synchronize()
    got = rt.asnumpy(res).reshape(threads, k)
    assert (got == np.array([10 + t % n for t in range(threads)])[:, None]).all()
    st = rt.stats()
    assert st["hostcalls"] == n                               # one LOOKUP a path
    assert st["opens_on_device"] == threads * k - n
    if _hints_on():
        assert threads * (k - 1) // 2 <= st["opens_hinted"] <= threads * k - n
    else:
        assert st["opens_hinted"] == 0


FD_TABLE = r"""
#include <gpuvfs.cuh>
// One thread opens `path` n times without closing (flags), then closes what it got and
// opens once more. res[i]: the i-th fd or -errno; res[n]: the last open.
extern "C" __global__ void fill_fds(gvfs_ctx *ctx, const char *path, int flags, int n, long *res) {
  if (gvfs_global_tid() != 0) return;
  for (int i = 0; i < n; ++i) res[i] = gvfs_open(ctx, path, flags);
  for (int i = 0; i < n; ++i) if (res[i] >= 0) gvfs_close(ctx, (int)res[i]);
  res[n] = gvfs_open(ctx, path, flags);
  if (res[n] >= 0) gvfs_close(ctx, (int)res[n]);
}
"""


@pytest.mark.parametrize("flags", [0, 2], ids=["cached", "host"])
def test_full_fd_table_is_emfile_and_recovers(make_runtime, data_root, flags):
    rt = make_runtime(data_root, max_fds=5)
    mod = rt.compile(FD_TABLE)
    _files(data_root, 1, 1000)
    res = rt.zeros(9, "int64")
    path = rt.asarray(np.frombuffer(b"/c/f00.bin\0", np.uint8))
    mod.get_function("fill_fds")((1,), (32,), (rt.ctx, path, np.int32(flags), np.int32(8), res))
    rt.synchronize()
    got = [int(x) for x in rt.asnumpy(res)]
    fds = got[:5]
    assert sorted(fds) == list(range(3, 8)), got      # every entry, each once
    assert got[5:8] == [-errno.EMFILE] * 3, got
    assert got[8] >= 3, got                           # closed entries are reused


FD_BOUNDS = r"""
#include <gpuvfs.cuh>
// One warp. fds[i] for i < nbad: numbers never opened, around the table's bounds; each gets
// pread, pread_warp, fstat, close: res[4i..4i+3]. Then thread 0 opens `path` nopen times
// (res[4 nbad + j]: the fd), the warp reads 64 bytes at 64 j from every fd past
// GVFS_FD_TABLE_MIN entries (pread_warp into out[128 j], pread into out[128 j + 64]), and
// thread 0 closes them all.
extern "C" __global__ void fd_bounds(gvfs_ctx *ctx, const int *fds, int nbad, const char *path, int nopen,
                                     long *res, unsigned char *out) {
  const int lane = threadIdx.x;
  for (int i = 0; i < nbad; ++i) {
    const long w = gvfs_pread_warp(ctx, fds[i], out, 16, 0);
    if (lane == 0) {
      gvfs_stat st;
      res[4 * i] = gvfs_pread(ctx, fds[i], out, 16, 0);
      res[4 * i + 1] = w;
      res[4 * i + 2] = gvfs_fstat(ctx, fds[i], &st);
      res[4 * i + 3] = gvfs_close(ctx, fds[i]);
    }
  }
  long *opened = res + 4 * nbad;
  if (lane == 0) for (int j = 0; j < nopen; ++j) opened[j] = gvfs_open(ctx, path, GVFS_O_RDONLY);
  __syncwarp();
  for (int j = 0; j < nopen; ++j) {
    const int fd = (int)opened[j];
    if (fd < GVFS_FD_BASE + (int)GVFS_FD_TABLE_MIN) continue;
    const long w = gvfs_pread_warp(ctx, fd, out + 128L * j, 64, 64L * j);
    if (lane == 0) {
      const long t = gvfs_pread(ctx, fd, out + 128L * j + 64, 64, 64L * j);
      if (w != 64 || t != 64) opened[j] = -1000 - (w != 64);
    }
  }
  __syncwarp();
  if (lane == 0) for (int j = 0; j < nopen; ++j) if (opened[j] >= 0) gvfs_close(ctx, (int)opened[j]);
}
"""


def test_fd_numbers_around_the_table_bounds(make_runtime, data_root):
    """The fd table lives in the context's allocation with room for GVFS_FD_TABLE_MIN
    entries, and a read loads an entry below that before it checks max_fds: numbers past
    max_fds but inside the room, past the room, negative and huge are EBADF on every call."""
    rt = make_runtime(data_root, max_fds=5, page_size=4096, cache_bytes=1 << 20)
    mod = rt.compile(FD_BOUNDS)
    _files(data_root, 1, 4096)
    table_min = abi.FD_TABLE_MIN
    bad = [-1, 0, 2, 3, 7, 8, 100, table_min + 2, table_min + 3, table_min + 4, 1 << 30, 2**31 - 1, -(2**31)]
    res = rt.asarray(np.full(4 * len(bad) + 1, 77, dtype=np.int64))
    out = rt.zeros(256, "uint8")
    path = rt.asarray(np.frombuffer(b"/c/f00.bin\0", np.uint8))
    mod.get_function("fd_bounds")((1,), (32,), (rt.ctx, rt.asarray(np.array(bad, np.int32)), np.int32(len(bad)),
                                                path, np.int32(0), res, out))
    rt.synchronize()
    got = rt.asnumpy(res)[: 4 * len(bad)].reshape(len(bad), 4)
    for fd, row in zip(bad, got):
        assert list(row) == [-errno.EBADF] * 4, (fd, list(row))


def test_fds_past_the_table_minimum_are_read(make_runtime, data_root):
    """A table longer than GVFS_FD_TABLE_MIN: fds whose entries lie past it are found the
    checked way, and read the file's bytes per thread and per warp."""
    nopen = abi.FD_TABLE_MIN + 300
    rt = make_runtime(data_root, max_fds=nopen + 100, page_size=4096, cache_bytes=1 << 20)
    mod = rt.compile(FD_BOUNDS)
    data = _files(data_root, 1, 64 * nopen, seed=9)[0]
    res = rt.asarray(np.full(nopen, 77, dtype=np.int64))
    out = rt.asarray(np.full(128 * nopen, 0xEE, dtype=np.uint8))
    path = rt.asarray(np.frombuffer(b"/c/f00.bin\0", np.uint8))
    mod.get_function("fd_bounds")((1,), (32,), (rt.ctx, rt.asarray(np.zeros(1, np.int32)), np.int32(0),
                                                path, np.int32(nopen), res, out))
    rt.synchronize()
    fds = rt.asnumpy(res)
    assert (fds >= abi.FD_BASE).all(), fds[fds < abi.FD_BASE][:8]
    assert len(set(fds.tolist())) == nopen
    high = np.flatnonzero(fds >= abi.FD_BASE + abi.FD_TABLE_MIN)
    assert len(high) > 0
    got = rt.asnumpy(out).reshape(nopen, 2, 64)
    for j in high:
        want = data[64 * j: 64 * j + 64]
        assert np.array_equal(got[j, 0], want) and np.array_equal(got[j, 1], want), j


ONCHIP_KERNEL = COALESCED + r"""
#include <gpuvfs.cuh>
// Each thread (blocks of 32) reads len <= 1024 bytes at off[t] into a buffer of its own on
// its stack or in shared memory (16-byte aligned, as a fast path would like), then copies
// it out. warp != 0: each warp reads off[first thread of the warp] with gvfs_pread_warp
// into one shared buffer (the same arguments on every lane); a stack array is refused.
extern "C" __global__ void onchip(gvfs_ctx *ctx, const long *off, long len, int shared, int warp,
                                  unsigned char *out, long *res) {
  __shared__ __align__(16) unsigned char sh[32][1024];
  __align__(16) unsigned char loc[1024];
  const long t = blockIdx.x * (long)blockDim.x + threadIdx.x;
  unsigned char *buf = shared ? sh[warp ? 0 : threadIdx.x & 31] : loc;
  int fd = gvfs_open(ctx, "/c/f00.bin", GVFS_O_RDONLY);
  if (fd < 0) res[t] = fd;
  else if (warp) res[t] = gvfs_pread_warp(ctx, fd, buf, (unsigned long)len, (unsigned long)off[t & ~31L]);
  else res[t] = gvfs_pread(ctx, fd, buf, (unsigned long)len, (unsigned long)off[t]);
  if (fd >= 0) gvfs_close(ctx, fd);
  for (long i = 0; i < len; ++i) out[t * len + i] = buf[i];
}
"""


@pytest.mark.parametrize("call", ["thread", "warp"])
@pytest.mark.parametrize("where", ["stack", "shared"])
@pytest.mark.parametrize("cache", ["cached", "cache-off"])
def test_reads_into_stack_and_shared_buffers(make_runtime, data_root, where, cache, call):
    """A caller's buffer need not be global memory: reads of 1 KiB (page-aligned and not)
    into a 16-byte aligned stack or __shared__ array land whole, on the cache's miss and hit
    paths and with the cache off, per thread and (__shared__ only) per warp. On the GPU a
    stack array is its thread's alone: the lanes reading together must not fill it for their
    owner, gvfs_pread_warp refuses it (-EFAULT) and the lone-thread copy must not take the
    bulk path, which addresses global memory only."""
    rt = make_runtime(data_root, page_size=4096, cache_bytes=(1 << 20) if cache == "cached" else 0,
                      lane_bytes=8192, readahead_pages=0)
    mod = rt.compile(ONCHIP_KERNEL)
    files = _files(data_root, 1, 200_000, seed=51)
    n, length = 64, 1024
    offs = np.random.default_rng(5).integers(0, len(files[0]) - length, n).astype(np.int64)
    offs[:8] = [0, 4096, 8192, 4096 * 7, 3072, 16, 4096 * 3 + 512, 12288]
    offs[32] = 4096 * 5 - 512   # the second warp's read crosses a page
    want = offs if call == "thread" else offs[np.arange(n) & ~31]
    refused = call == "warp" and where == "stack"
    for rep in range(2):   # misses, then hits
        out = rt.asarray(np.full(n * length, 0xCD, dtype=np.uint8))
        res = rt.asarray(np.full(n, -1, dtype=np.int64))
        mod.get_function("onchip")((2,), (32,), (rt.ctx, rt.asarray(offs), np.int64(length),
                                                 np.int32(where == "shared"), np.int32(call == "warp"), out, res))
        rt.synchronize()
        out, res = rt.asnumpy(out).reshape(n, length), rt.asnumpy(res)
        if refused:
            assert list(res) == [-errno.EFAULT] * n
            continue
        for t in range(n):
            assert res[t] == length, f"rep {rep}, thread {t}: {res[t]}"
            assert np.array_equal(out[t], files[0][want[t]:want[t] + length]), f"rep {rep}, thread {t}: bytes differ"
    stats = rt.stats()
    assert stats["errors"] == 0
    if cache == "cached" and not refused:
        assert stats["cache_hits"] > 0


def test_cache_off_every_read_is_a_hostcall(make_runtime, data_root):
    rt = make_runtime(data_root, cache_bytes=0, lane_bytes=8192)
    mod = rt.compile(KERNELS)
    files = _files(data_root, 3, 30_000, seed=21)
    rng = np.random.default_rng(2)
    n, stride = 64, 12_000
    sizes = np.array([len(files[t % 3]) for t in range(n)])
    offs = (rng.random(n) * sizes).astype(np.int64)
    lens = rng.integers(1, stride, n).astype(np.int64)
    _run_reads(rt, mod, files, offs, lens, stride, 2, 32, 0)
    st = rt.stats()
    assert st["cache_misses"] == 0 and st["cache_hits"] == 0 and st["pages_resident"] == 0
    assert st["bytes_from_host"] > 0


def test_rt_read_prefetch_evict(make_runtime, data_root):
    rt = make_runtime(data_root, page_size=4096, cache_bytes=8 << 20, lane_bytes=65536)
    files = _files(data_root, 2, 700_001, seed=31)
    got = rt.asnumpy(rt.read("c/f00.bin"))
    assert np.array_equal(got, files[0])
    part = rt.asnumpy(rt.read("/c/f01.bin", offset=4095, size=123_457))
    assert np.array_equal(part, files[1][4095:4095 + 123_457])
    assert rt.asnumpy(rt.read("/c/f01.bin", offset=10**9)).size == 0
    with pytest.raises(FileNotFoundError):
        rt.read("/c/missing.bin")
    with pytest.raises(PermissionError):
        rt.read("/../outside.txt")
    assert rt.evict() > 0 and rt.stats()["pages_resident"] == 0
    rt.prefetch(["c/f00.bin"])
    resident = rt.stats()["pages_resident"]
    assert resident == -(-len(files[0]) // 4096)
    misses = rt.stats()["cache_misses"]
    assert np.array_equal(rt.asnumpy(rt.read("c/f00.bin", size=300_000)), files[0][:300_000])
    assert rt.stats()["cache_misses"] == misses          # all hits after the prefetch
    rt.prefetch("c/f01.bin")
    n1 = rt.evict("c/f01.bin")
    assert n1 == -(-len(files[1]) // 4096) and rt.stats()["pages_resident"] == resident


def test_evict_from_another_thread_while_kernels_read(make_runtime, data_root):
    """rt.evict() in one host thread while another launches reads, over and over: every read
    returns the file's bytes, and the page table ends with no slot pinned or mid-fill (an
    evict that rewrote slots under a running kernel would leave one FILLING or corrupt)."""
    rt = make_runtime(data_root, page_size=4096, cache_bytes=1 << 20, lane_bytes=16384, lanes=32)
    files = _files(data_root, 2, 150_001, seed=41)
    mod = rt.compile(KERNELS)
    rng = np.random.default_rng(41)
    threads, blocks = 32, 2
    stop = threading.Event()
    evictions = [0]
    errors: list[BaseException] = []
    # Widen the gap between evict's wait for running kernels and its rewrite of the slots,
    # where a launch from this thread would land if evict did not hold launches off.
    synchronize = rt.synchronize

    def slow_synchronize() -> None:
        synchronize()
        if threading.current_thread() is t:
            time.sleep(0.002)

    rt.synchronize = slow_synchronize  # type: ignore[method-assign]

    def evictor() -> None:
        try:
            while not stop.is_set():
                rt.evict()
                evictions[0] += 1
        except BaseException as e:   # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=evictor)
    t.start()
    try:
        for _ in range(6):
            n = blocks * threads
            offs = rng.integers(0, 150_000, n).astype(np.int64)
            lens = rng.integers(1, 9000, n).astype(np.int64)
            _run_reads(rt, mod, files, offs, lens, 9000, blocks, threads, 0)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert evictions[0] > 0
    rt.synchronize()
    states = np.asarray(rt.backend.to_host(rt._slot_state)).view("<u4")
    kinds = states & abi.SLOT_KIND_MASK
    assert not (states >> 8).any(), "a slot is still pinned after every kernel ended"
    assert np.isin(kinds, [abi.SLOT_EMPTY, abi.SLOT_VALID]).all(), np.unique(kinds)


def test_stale_version_fill_is_refused(make_runtime, data_root):
    """A FILL for a version of a file that changed since answers -ESTALE, never new bytes."""
    rt = make_runtime(data_root)
    _files(data_root, 1, 10_000)
    lanes = rt.lanes
    path = b"/c/f00.bin\0"
    lanes.data[0, :len(path)] = np.frombuffer(path, dtype=np.uint8)
    q = abi.Request(opcode=abi.Op.LOOKUP, data_len=len(path))
    file_no, size, _, _ = rt.cache_files.lookup(0, q)
    assert size == 10_000
    fill = abi.Request(opcode=abi.Op.FILL, length=4096, arg0=file_no)
    assert rt.cache_files.fill(1, fill) == 4096
    time.sleep(0.01)
    with open(os.path.join(data_root, "c", "f00.bin"), "ab") as f:
        f.write(b"more")
    with pytest.raises(OSError) as ei:
        rt.cache_files.fill(1, fill)
    assert ei.value.errno == errno.ESTALE


@pytest.mark.timeout(120)
def test_warp_reads_with_few_lanes_do_not_deadlock(make_runtime, data_root):
    """Warps with several runs to fill and fewer lanes than they need at once: a warp never
    holds a lane while it waits for another (a hold-and-wait that once hung rt.read)."""
    rt = make_runtime(data_root, lanes=8, page_size=65536, lane_bytes=1 << 20, cache_bytes=96 << 20)
    data = _files(data_root, 1, 64 << 20, seed=77)[0]   # 32 warps, each with 2 runs to fill
    got = rt.asnumpy(rt.read("c/f00.bin"))
    assert np.array_equal(got, data)
    st = rt.stats()
    assert st["fills"] >= len(data) // (1 << 20) and st["errors"] == 0


CREATE_KERNEL = r"""
#include <gpuvfs.cuh>
extern "C" __global__ void create_after_miss(gvfs_ctx *ctx, long *r) {
  r[0] = gvfs_open(ctx, "/made.txt", GVFS_O_RDONLY);                  // -ENOENT, remembered
  int fd = gvfs_open(ctx, "/made.txt", GVFS_O_RDONLY | GVFS_O_CREAT);  // the device creates it
  r[1] = fd;
  if (fd >= 0) gvfs_close(ctx, fd);
  fd = gvfs_open(ctx, "/made.txt", GVFS_O_RDONLY);                     // must see it now
  r[2] = fd;
  if (fd >= 0) gvfs_close(ctx, fd);
}
"""


def test_device_create_clears_a_negative_name_entry(make_runtime, data_root):
    rt = make_runtime(data_root)
    r = rt.zeros(3, "int64")
    rt.compile(CREATE_KERNEL).get_function("create_after_miss")((1,), (1,), (rt.ctx, r))
    rt.synchronize()
    r = rt.asnumpy(r)
    assert r[0] == -errno.ENOENT and r[1] >= 3 and r[2] >= 3, r
    assert os.path.exists(os.path.join(data_root, "made.txt"))
