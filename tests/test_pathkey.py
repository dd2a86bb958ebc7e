"""The name cache's key of a path (device/gvfs/files.cuh, gvfs_pathkey_make): its words are
the path's own bytes, its length is the path's, and its hash depends on the bytes alone,
wherever the path lies in memory (every offset within an aligned 32-byte block, so both the
one-block path and the word-by-word path are taken, for every length up to past what an
entry holds). Bytes after the NUL are never zero here, so a key that read past the NUL would
show it."""
from __future__ import annotations

import numpy as np

KERNEL = r"""
#include <gpuvfs.cuh>
// out[i * 32 + ...]: hash, length, words, then the key words themselves.
extern "C" __global__ void keys(const char *buf, const long long *starts, int n, unsigned long long *out) {
  const int i = (int)gvfs_global_tid();
  if (i >= n) return;
  gvfs_pathkey k;
  gvfs_pathkey_make(&k, buf + starts[i]);
  unsigned long long *o = out + (long long)i * 32;
  o[0] = k.h;
  o[1] = k.len;
  o[2] = k.nwords;
  for (unsigned j = 0; j < k.nwords && j < 29u; ++j) o[3 + j] = k.w[j];
}
"""

NAME_MAX = 224   # GVFS_NAME_MAX: path bytes with the NUL that an entry holds
SLOT = 512       # bytes of buffer per (length, offset) case


def test_path_keys_are_the_bytes_whatever_the_alignment(make_runtime, data_root):
    rt = make_runtime(data_root, lanes=8)
    rng = np.random.default_rng(5)
    lengths = list(range(0, 70)) + [100, 200, 215, 222, 223, 224, 300]
    offsets = list(range(32))
    buf = rng.integers(1, 256, len(lengths) * len(offsets) * SLOT, dtype=np.uint8)   # no zero byte
    paths = {n: rng.integers(1, 256, n, dtype=np.uint8) for n in lengths}
    starts = []
    for a, n in enumerate(lengths):
        for b, off in enumerate(offsets):
            s = (a * len(offsets) + b) * SLOT + 64 + off     # 64: the slot's start is 64-aligned
            buf[s:s + n] = paths[n]
            buf[s + n] = 0
            starts.append(s)
    cases = len(starts)
    out = rt.zeros(cases * 32, "uint64")
    out[...] = 0xEEEEEEEEEEEEEEEE                            # poison
    block = 64
    rt.compile(KERNEL).get_function("keys")(((cases + block - 1) // block,), (block,), (
        rt.asarray(buf), rt.asarray(np.array(starts, dtype=np.int64)), np.int32(cases), out))
    rt.synchronize()
    got = rt.asnumpy(out).reshape(cases, 32)
    hashes: dict[int, int] = {}
    for a, n in enumerate(lengths):
        for b, off in enumerate(offsets):
            h, ln, nw = (int(x) for x in got[a * len(offsets) + b, :3])
            where = f"length {n}, offset {off}"
            assert h != 0, where
            if n + 1 > NAME_MAX:         # too long for an entry: not cached, and read no further
                assert (ln, nw) == (NAME_MAX, 0), where
                continue
            assert (ln, nw) == (n, n // 8 + 1), where
            want = np.zeros(nw * 8, dtype=np.uint8)
            want[:n] = paths[n]
            assert np.array_equal(got[a * len(offsets) + b, 3:3 + nw], want.view("<u8")), where
            assert hashes.setdefault(n, h) == h, f"{where}: the hash depends on where the path lies"
    assert len(set(hashes.values())) == len(hashes), "two different paths hashed alike"
