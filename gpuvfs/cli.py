"""The gpuvfs command line: `gpuvfs demo` (and, as later work lands, mount and bench).

Errors are reported as one line on stderr with a non-zero exit status, never a traceback
(set GPUVFS_DEBUG=1 for one).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

from . import Runtime, __version__
from .errors import GvfsError

DEMO_KERNEL = r"""
#include <gpuvfs.cuh>

// One block per shard: every thread opens the shard (the same path from many threads),
// reads its slice of the records with gvfs_pread, and adds up its bytes.
extern "C" __global__ void load_shards(gvfs_ctx *ctx, int nshards, long shard_bytes,
                                       unsigned char *out, unsigned long long *sums, long *errs) {
  int shard = blockIdx.x;
  if (shard >= nshards) return;
  char path[32] = "/shards/shard-00.bin";
  path[14] = (char)('0' + shard / 10);
  path[15] = (char)('0' + shard % 10);
  int fd = gvfs_open(ctx, path, GVFS_O_RDONLY);
  if (fd < 0) { errs[shard] = fd; return; }
  long per = (shard_bytes + blockDim.x - 1) / blockDim.x;
  long off = per * threadIdx.x;
  long n = off >= shard_bytes ? 0 : (off + per > shard_bytes ? shard_bytes - off : per);
  unsigned char *dst = out + shard * shard_bytes + off;
  long got = n ? gvfs_pread(ctx, fd, dst, n, off) : 0;
  if (got < 0) errs[shard] = got;
  unsigned long long s = 0;
  for (long i = 0; i < got; ++i) s += dst[i];
  atomicAdd(&sums[shard], s);
  gvfs_close(ctx, fd);
}
"""


def make_demo_data(root: str, nshards: int, shard_bytes: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "shards"), exist_ok=True)
    shards = []
    for i in range(nshards):
        data = rng.integers(0, 256, shard_bytes, dtype=np.uint8)
        data.tofile(os.path.join(root, "shards", f"shard-{i:02d}.bin"))
        shards.append(data)
    return shards


def cmd_demo(args: argparse.Namespace) -> int:
    root = args.data or tempfile.mkdtemp(prefix="gpuvfs-demo-")
    shards = make_demo_data(root, args.shards, args.shard_bytes)
    print(f"gpuvfs {__version__}: demo data set in {root}: {args.shards} shards x {args.shard_bytes} bytes")
    with Runtime(root=root, backend=args.backend) as rt:
        print(f"backend: {rt.backend.name}" + (f" ({rt.backend.device_name})" if hasattr(rt.backend, "device_name") else ""))
        mod = rt.compile(DEMO_KERNEL)
        k = mod.get_function("load_shards")
        out = rt.zeros(args.shards * args.shard_bytes, "uint8")
        sums = rt.zeros(args.shards, "uint64")
        errs = rt.zeros(args.shards, "int64")
        t0 = time.perf_counter()
        k((args.shards,), (args.threads,), (rt.ctx, np.int32(args.shards), np.int64(args.shard_bytes), out, sums, errs))
        rt.synchronize()
        dt = time.perf_counter() - t0
        got, sums_h, errs_h = rt.asnumpy(out), rt.asnumpy(sums), rt.asnumpy(errs)
        ok = True
        for i, want in enumerate(shards):
            same = bool(np.array_equal(got[i * args.shard_bytes:(i + 1) * args.shard_bytes], want))
            ok &= same and errs_h[i] == 0
            print(f"  shard-{i:02d}.bin: {args.shard_bytes} bytes read on the device, sum {int(sums_h[i])}, "
                  f"{'bytes equal to the file' if same else 'BYTES DIFFER'}"
                  + (f", error {int(errs_h[i])}" if errs_h[i] else ""))
        total = args.shards * args.shard_bytes
        print(f"read {total} bytes in {dt * 1e3:.1f} ms with {args.shards * args.threads} GPU threads")
        print("stats:", ", ".join(f"{k}={v}" for k, v in rt.stats().items()))
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpuvfs", description="A file system for GPU kernels.")
    p.add_argument("--version", action="version", version=f"gpuvfs {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the runtime does")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="read a small data set from a kernel and print what was read")
    d.add_argument("--backend", default="auto", choices=["auto", "cuda", "cpu"])
    d.add_argument("--data", help="directory for the data set (default: a new temporary one)")
    d.add_argument("--shards", type=int, default=4)
    d.add_argument("--shard-bytes", type=int, default=1 << 18)
    d.add_argument("--threads", type=int, default=64, help="threads per block")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="gpuvfs: %(levelname)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("gpuvfs: interrupted", file=sys.stderr)
        return 130
    except (GvfsError, OSError, ValueError) as e:
        if os.environ.get("GPUVFS_DEBUG"):
            raise
        print(f"gpuvfs: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
