// gpuvfs: a file system for GPU kernels. Include this from CUDA C++ compiled by
// gpuvfs.Runtime.compile (NVRTC on the cuda backend, g++ on the cpu backend):
//
//   #include <gpuvfs.cuh>
//   extern "C" __global__ void load(gvfs_ctx *ctx, unsigned char *out, int n) {
//     int fd = gvfs_open(ctx, "/data.bin", GVFS_O_RDONLY);
//     long got = gvfs_pread(ctx, fd, out, n, 0);
//     gvfs_close(ctx, fd);
//   }
//
// Every call is per-thread and safe from any thread of any block. Errors are Linux errno
// values, negated. Paths are absolute in the runtime's view: "/" is the Runtime's root.
#pragma once
#include "gvfs/port.cuh"
#include "gvfs/hostcall.cuh"
#include "gvfs/context.cuh"
#include "gvfs/copy.cuh"
#include "gvfs/files.cuh"
#include "gvfs/stdio.cuh"
