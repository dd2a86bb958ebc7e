"""The file calls of the public contract, end to end through hostcalls, on every backend."""
from __future__ import annotations

import errno
import os
import threading
import time

import numpy as np
import pytest

import gpuvfs
from conftest import write_random

KERNELS = r"""
#include <gpuvfs.cuh>

// Each thread reads, from file (t % nfiles), `len` bytes at a thread-specific offset that
// crosses lane-buffer boundaries, and stores them at out[t * stride].
extern "C" __global__ void many_readers(gvfs_ctx *ctx, int nfiles, long file_size, long len,
                                        unsigned char *out, long stride, long *res, long *offs) {
  long t = blockIdx.x * (long)blockDim.x + threadIdx.x;
  char path[32] = "/in/f00.bin";
  int f = (int)(t % nfiles);
  path[5] = (char)('0' + f / 10); path[6] = (char)('0' + f % 10);
  int fd = gvfs_open(ctx, path, GVFS_O_RDONLY);
  if (fd < 0) { res[t] = fd; return; }
  unsigned long long h = (unsigned long long)t * 2654435761ull + 12345ull;
  long off = (long)(h % (unsigned long long)file_size);
  offs[t] = off;
  long got = gvfs_pread(ctx, fd, out + t * stride, len, off);
  gvfs_stat st;
  int rs = gvfs_fstat(ctx, fd, &st);
  int rc = gvfs_close(ctx, fd);
  res[t] = (rs < 0 || rc < 0 || (long)st.size != file_size) ? -1000 - rs - rc : got;
}

// Each thread writes its own file with a pattern, then reads it back.
extern "C" __global__ void writers(gvfs_ctx *ctx, long len, unsigned char *scratch, long *res) {
  long t = blockIdx.x * (long)blockDim.x + threadIdx.x;
  char path[32] = "/out/w000.bin";
  path[6] = (char)('0' + (t / 100) % 10); path[7] = (char)('0' + (t / 10) % 10); path[8] = (char)('0' + t % 10);
  unsigned char *mine = scratch + t * 2 * len;
  for (long i = 0; i < len; ++i) mine[i] = (unsigned char)(i * 7 + t * 13);
  int fd = gvfs_open(ctx, path, GVFS_O_RDWR | GVFS_O_CREAT | GVFS_O_TRUNC);
  if (fd < 0) { res[t] = fd; return; }
  long put = gvfs_pwrite(ctx, fd, mine, len, 0);
  int sy = gvfs_fsync(ctx, fd);
  long got = gvfs_pread(ctx, fd, mine + len, len, 0);
  gvfs_close(ctx, fd);
  res[t] = (put != len) ? -2000 + put : (sy != 0 ? -3000 + sy : got);
}

// Every call of the contract, one after the other, each result recorded.
extern "C" __global__ void every_call(gvfs_ctx *ctx, long *r, unsigned char *buf) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  const char msg[] = "hello from the device";
  int fd = gvfs_open(ctx, "/every.txt", GVFS_O_WRONLY | GVFS_O_CREAT | GVFS_O_TRUNC);
  r[0] = fd;
  r[1] = gvfs_pwrite(ctx, fd, msg, sizeof(msg) - 1, 0);
  r[2] = gvfs_fsync(ctx, fd);
  r[3] = gvfs_pread(ctx, fd, buf, 4, 0);           // write-only fd: -EBADF
  r[4] = gvfs_close(ctx, fd);
  r[5] = gvfs_close(ctx, fd);                      // closed twice: -EBADF
  fd = gvfs_open(ctx, "/every.txt", GVFS_O_RDONLY);
  r[6] = fd;
  gvfs_stat st; st.size = 999;
  r[7] = gvfs_fstat(ctx, fd, &st);
  r[8] = (long)st.size;
  r[9] = gvfs_pread(ctx, fd, buf, 64, 0);          // short read at end of file
  r[10] = gvfs_pread(ctx, fd, buf + 64, 10, 100);  // past end of file: 0
  r[11] = gvfs_pwrite(ctx, fd, msg, 3, 0);         // read-only fd: -EBADF
  r[12] = gvfs_close(ctx, fd);
  r[13] = gvfs_unlink(ctx, "/every.txt");
  r[14] = gvfs_open(ctx, "/every.txt", GVFS_O_RDONLY);   // gone: -ENOENT
  r[15] = gvfs_open(ctx, "/../outside.txt", GVFS_O_RDONLY);  // escapes the root: -EACCES
  r[16] = gvfs_open(ctx, "relative.txt", GVFS_O_RDONLY);    // not absolute: -EINVAL
  r[17] = gvfs_pread(ctx, 12345, buf, 4, 0);                // never opened: -EBADF
  r[18] = gvfs_open(ctx, "/", GVFS_O_RDONLY);               // a directory: -EISDIR
  r[19] = gvfs_nop(ctx);
  r[20] = gvfs_wallclock_ns(ctx);
  r[21] = gvfs_open(ctx, "/x", 0x7000);                     // unknown flags: -EINVAL
}

// A path longer than GVFS_PATH_MAX is refused on the device, before any hostcall.
extern "C" __global__ void long_path(gvfs_ctx *ctx, char *path, long *r) {
  r[0] = gvfs_open(ctx, path, GVFS_O_RDONLY);
}
"""


@pytest.fixture
def mod_rt(make_runtime, data_root):
    rt = make_runtime(data_root, lanes=64, lane_bytes=8192, page_size=4096)
    return rt, rt.compile(KERNELS)


def test_many_threads_many_files_read_bytes_equal(mod_rt, data_root):
    rt, mod = mod_rt
    os.makedirs(os.path.join(data_root, "in"))
    nfiles, size, length = 7, 50_000, 20_000   # 20 kB reads cross the 8 kB lane buffers
    files = [write_random(os.path.join(data_root, "in", f"f{i:02d}.bin"), size, seed=i) for i in range(nfiles)]
    blocks, threads = 6, 32
    n = blocks * threads
    out = rt.zeros(n * length, "uint8")
    out[...] = 0xAB                              # poison
    res = rt.zeros(n, "int64")
    offs = rt.zeros(n, "int64")
    mod.get_function("many_readers")((blocks,), (threads,), (rt.ctx, np.int32(nfiles), np.int64(size),
                                     np.int64(length), out, np.int64(length), res, offs))
    rt.synchronize()
    out, res, offs = rt.asnumpy(out), rt.asnumpy(res), rt.asnumpy(offs)
    for t in range(n):
        data, off = files[t % nfiles], int(offs[t])
        want = data[off:off + length]
        assert res[t] == len(want), f"thread {t}: result {res[t]}"
        assert np.array_equal(out[t * length:t * length + len(want)], want), f"thread {t}: bytes differ"
        assert (out[t * length + len(want):(t + 1) * length] == 0xAB).all(), f"thread {t}: wrote past its read"
    st = rt.stats()
    assert st["errors"] == 0 and st["open_files"] == 0
    # Through the cache each page crosses from the host at most once (nothing was evicted).
    assert st["evictions"] == 0 and 0 < st["bytes_from_host"] <= nfiles * size


def test_many_writers_then_host_sees_bytes(mod_rt, data_root):
    rt, mod = mod_rt
    os.makedirs(os.path.join(data_root, "out"))
    blocks, threads, length = 4, 32, 10_000
    n = blocks * threads
    scratch = rt.zeros(n * 2 * length, "uint8")
    res = rt.zeros(n, "int64")
    mod.get_function("writers")((blocks,), (threads,), (rt.ctx, np.int64(length), scratch, res))
    rt.synchronize()
    res, scratch = rt.asnumpy(res), rt.asnumpy(scratch)
    i = np.arange(length)
    for t in range(n):
        assert res[t] == length, f"thread {t}: {res[t]}"
        want = ((i * 7 + t * 13) & 0xFF).astype(np.uint8)
        on_disk = np.fromfile(os.path.join(data_root, "out", f"w{t:03d}.bin"), dtype=np.uint8)
        assert np.array_equal(on_disk, want), f"file of thread {t} differs"
        assert np.array_equal(scratch[t * 2 * length + length:(t + 1) * 2 * length], want)
    assert rt.stats()["bytes_to_host"] == n * length


def test_every_call_and_its_errors(mod_rt, data_root):
    rt, mod = mod_rt
    r = rt.zeros(32, "int64")
    r[...] = 7777
    buf = rt.zeros(256, "uint8")
    before = time.time_ns()
    mod.get_function("every_call")((1,), (1,), (rt.ctx, r, buf))
    rt.synchronize()
    after = time.time_ns()
    r, buf = rt.asnumpy(r), rt.asnumpy(buf)
    msg = b"hello from the device"
    assert r[0] >= 3
    assert r[1] == len(msg) and r[2] == 0
    assert r[3] == -errno.EBADF
    assert r[4] == 0 and r[5] == -errno.EBADF
    assert r[6] >= 3 and r[7] == 0 and r[8] == len(msg)
    assert r[9] == len(msg) and bytes(buf[:len(msg)]) == msg
    assert r[10] == 0
    assert r[11] == -errno.EBADF and r[12] == 0 and r[13] == 0
    assert r[14] == -errno.ENOENT
    assert r[15] == -errno.EACCES
    assert r[16] == -errno.EINVAL
    assert r[17] == -errno.EBADF
    assert r[18] == -errno.EISDIR
    assert r[19] == 0
    assert before <= r[20] <= after
    assert r[21] == -errno.EINVAL
    assert not os.path.exists(os.path.join(data_root, "every.txt"))
    sandbox = os.path.dirname(data_root)
    assert open(os.path.join(sandbox, "outside.txt"), "rb").read() == b"must not change"
    # Answered -errno by the host: r[3], r[14], r[15], r[16], r[18], r[21]; the other
    # errors (closed/unknown fds, a write to a cached read-only fd) never leave the GPU.
    assert rt.stats()["errors"] == 6


def test_over_long_path_refused_on_device(mod_rt):
    rt, mod = mod_rt
    path = np.full(5000, ord("a"), dtype=np.uint8)
    path[0], path[-1] = ord("/"), 0
    dpath = rt.asarray(path)
    r = rt.zeros(1, "int64")
    calls = rt.stats()["hostcalls"]
    mod.get_function("long_path")((1,), (1,), (rt.ctx, dpath, r))
    rt.synchronize()
    assert int(rt.asnumpy(r)[0]) == -errno.ENAMETOOLONG
    assert rt.stats()["hostcalls"] == calls


def _thread_cpu_seconds(native_id: int) -> float:
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_server_sleeps_while_no_kernel_is_in_flight(mod_rt):
    rt, mod = mod_rt
    r = rt.zeros(32, "int64")
    buf = rt.zeros(256, "uint8")
    mod.get_function("every_call")((1,), (1,), (rt.ctx, r, buf))
    rt.synchronize()
    time.sleep(0.2)  # let the server notice the kernel ended
    tid = rt.server._thread.native_id
    c0 = _thread_cpu_seconds(tid)
    time.sleep(1.0)
    used = _thread_cpu_seconds(tid) - c0
    assert used < 0.1, f"the idle server used {used:.2f} s of CPU in 1 s"


def test_runtime_errors_are_clear(data_root, backend):
    with pytest.raises(gpuvfs.GvfsError, match="not a directory"):
        gpuvfs.Runtime(root=os.path.join(data_root, "missing"), backend=backend)
    with pytest.raises(ValueError, match="backend must be one of"):
        gpuvfs.Runtime(root=data_root, backend="tpu")
    with pytest.raises(ValueError, match="lanes"):
        gpuvfs.Runtime(root=data_root, backend=backend, lanes=0)
    with gpuvfs.Runtime(root=data_root, backend=backend) as rt:
        with pytest.raises(gpuvfs.CompileError) as ei:
            rt.compile('#include <gpuvfs.cuh>\nextern "C" __global__ void k() { this is not C++; }\n')
        assert ei.value.log
        mod = rt.compile('#include <gpuvfs.cuh>\nextern "C" __global__ void k(int *p) { p[0] = 1; }\n')
        with pytest.raises(gpuvfs.LaunchError, match="no kernel named 'nope'"):
            mod.get_function("nope")
        with pytest.raises(ValueError, match="grid"):
            mod.get_function("k")((0,), (1,), (rt.zeros(1, "int32"),))
        with pytest.raises(TypeError):
            mod.get_function("k")((1,), (1,), (object(),))
    with pytest.raises(gpuvfs.GvfsError, match="closed"):
        rt.compile("")


def test_concurrent_launches_from_python_threads(make_runtime, data_root):
    """Two Python threads launching on one Runtime at once both get right answers."""
    rt = make_runtime(data_root, lanes=16, lane_bytes=8192, page_size=4096)
    mod = rt.compile(KERNELS)
    os.makedirs(os.path.join(data_root, "in"))
    files = [write_random(os.path.join(data_root, "in", f"f{i:02d}.bin"), 4096, seed=100 + i) for i in range(3)]
    errors: list[str] = []

    def work() -> None:
        try:
            n, length = 64, 1000
            out, res, offs = rt.zeros(n * length, "uint8"), rt.zeros(n, "int64"), rt.zeros(n, "int64")
            mod.get_function("many_readers")((2,), (32,), (rt.ctx, np.int32(3), np.int64(4096), np.int64(length),
                                             out, np.int64(length), res, offs))
            rt.synchronize()
            out, res, offs = rt.asnumpy(out), rt.asnumpy(res), rt.asnumpy(offs)
            for t in range(n):
                want = files[t % 3][int(offs[t]):int(offs[t]) + length]
                if res[t] != len(want) or not np.array_equal(out[t * length:t * length + len(want)], want):
                    errors.append(f"thread {t}")
        except Exception as e:  # reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=work) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_device_defines_from_the_environment(monkeypatch, data_root, backend):
    """GPUVFS_DEVICE_DEFINES reaches the device compile as -D flags; a malformed one is a
    clear error, not a compiler's."""
    src = ('#include <gpuvfs.cuh>\n#ifndef GVFS_TEST_DEFINE\n#define GVFS_TEST_DEFINE 0\n#endif\n'
           'extern "C" __global__ void k(long *r) { r[0] = GVFS_TEST_DEFINE; }\n')
    with gpuvfs.Runtime(root=data_root, backend=backend) as rt:
        for defines, want in [("", 0), ("GVFS_TEST_DEFINE=7", 7), ("  GVFS_PATH_EXACT_READS GVFS_TEST_DEFINE=3 ", 3)]:
            monkeypatch.setenv("GPUVFS_DEVICE_DEFINES", defines)
            r = rt.zeros(1, "int64")
            rt.compile(src).get_function("k")((1,), (1,), (r,))
            rt.synchronize()
            assert int(rt.asnumpy(r)[0]) == want, defines
        monkeypatch.setenv("GPUVFS_DEVICE_DEFINES", "GVFS_X=1;rm")
        with pytest.raises(ValueError, match="GPUVFS_DEVICE_DEFINES: 'GVFS_X=1;rm' is not NAME or NAME=VALUE"):
            rt.compile(src)
