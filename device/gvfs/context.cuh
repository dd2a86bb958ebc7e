// gpuvfs device context: the one struct a kernel receives (`rt.ctx`), holding each layer's
// state. It lives in device memory; the host fills it once per Runtime (gpuvfs/abi.py
// mirrors the layout and tests/test_abi.py checks the mirror against this file).
#pragma once
#include "port.cuh"
#include "hostcall.cuh"

#define GVFS_CTX_MAGIC 0x53465647u  // "GVFS"

// Device-side counters, summed into rt.stats(). Index names mirror gpuvfs/abi.py.
enum gvfs_counter : gvfs_u32 {
  GVFS_C_CACHE_HITS = 0,
  GVFS_C_CACHE_MISSES = 1,
  GVFS_C_FILLS = 2,
  GVFS_C_EVICTIONS = 3,
  GVFS_C_OPENS_ON_DEVICE = 4,
  GVFS_C_BYTES_HIT = 5,
  GVFS_C_FILL_WAITS = 6,
  GVFS_C_READAHEADS = 7,
  GVFS_NCOUNTERS = 16
};

struct gvfs_ctx {
  gvfs_u32 magic;        // GVFS_CTX_MAGIC: a kernel handed something else traps early
  gvfs_u32 abi_version;  // GVFS_ABI_VERSION
  gvfs_u32 flags;        // reserved
  gvfs_u32 reserved;
  gvfs_lanes lanes;
  gvfs_u64 *counters;    // [GVFS_NCOUNTERS] device memory, relaxed atomics
};

GVFS_FN void gvfs_count(gvfs_ctx *ctx, gvfs_u32 which, gvfs_u64 v) { gvfs_count_dev(&ctx->counters[which], v); }
