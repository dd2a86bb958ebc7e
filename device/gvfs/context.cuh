// gpuvfs device context: the one struct a kernel receives (`rt.ctx`), holding each layer's
// state. It lives in device memory; the host fills it once per Runtime (gpuvfs/abi.py
// mirrors the layout and tests/test_abi.py checks the mirror against this file).
#pragma once
#include "port.cuh"
#include "hostcall.cuh"
#include "pagetable.cuh"

#define GVFS_CTX_MAGIC 0x53465647u  // "GVFS"

struct gvfs_stdio_state;  // device/gvfs/stdio.cuh

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
  GVFS_C_FILLS_PUSHED = 8,  // of GVFS_C_FILLS: FILL_PUSH
  GVFS_C_OPENS_HINTED = 9,  // opens answered through the open's hint (files.cuh, N5); rt.stats()
                            // adds them into opens_on_device, which counts the keyed ones here
  GVFS_NCOUNTERS = 16
};

// ---- the files layer's device state (device/gvfs/files.cuh) ----
#define GVFS_FD_BASE 3        // device fds start here: 0, 1, 2 look like stdio
#define GVFS_NAME_MAX 224u    // path bytes (with NUL) a name-cache entry holds
#define GVFS_FD_FREE 0u
#define GVFS_FD_SETUP 1u
#define GVFS_FD_OPEN 2u
#define GVFS_FD_CACHED 1u     // read-only, answered from the page cache
#define GVFS_FD_HOST 2u       // every call is a hostcall on the host fd

struct gvfs_fdent {           // 48 bytes
  gvfs_u32 state;             // FREE -> SETUP (CAS by the opener) -> OPEN (the opener) -> FREE (CAS by close)
  gvfs_u32 kind;
  gvfs_i32 host_fd;           // GVFS_FD_HOST: the host server's fd
  gvfs_u32 mode;
  gvfs_u64 file_no;           // GVFS_FD_CACHED: the file version whose pages this fd reads
  gvfs_u64 size;
  gvfs_u64 mtime_ns;
  gvfs_u64 next_off;          // where the last read ended: the sequential-readahead hint
};

struct gvfs_nameent {         // 272 bytes (files.cuh: the name cache)
  gvfs_u32 state;             // version << 2 | kind (empty, claimed, ready, busy)
  gvfs_u32 len;               // path length without NUL; immutable once the path is readable
  gvfs_u64 hash;              // of the path, never 0; 0 until the path is written, then immutable
  gvfs_u64 answer[4];         // the host's answer (file version, size, mtime, mode, epoch),
                              // each word stamped with the version that wrote it
  char path[GVFS_NAME_MAX];   // immutable once readable
};

struct gvfs_files {
  gvfs_u32 max_fds;
  gvfs_u32 nnames;            // power of two; 0: no name cache
  gvfs_u32 *epoch;            // [1] bumped by the host at each launch and rt.revalidate()
  gvfs_u32 *fd_hint;          // [1] reserved (fds are searched from a per-thread start)
  gvfs_fdent *fds;            // [max_fds], always gvfs_ctx_fds(ctx): in the context's allocation (below)
  gvfs_nameent *names;        // [nnames]
};

// The fd table lives in the context's own allocation, GVFS_CTX_FDS_OFFSET bytes after its
// start, with room for at least GVFS_FD_TABLE_MIN entries whatever max_fds is (gvfs_ctx_bytes;
// the Runtime allocates it so, and so must a test harness that reads through fds). An fd's
// entry is then found from ctx and the fd alone, with no load: a read sends its loads out in
// the batch with the context's fields instead of one memory round trip after them. (H100,
// 2026-11-25, interleaved runs: warp 4 KiB hits 1,204-1,213 GB/s against 1,104-1,197 with the
// table elsewhere, a ~1,490 GB/s device copy beside them.) files.fds holds the same address,
// for the code that works on its copy of the files fields (the open).
#define GVFS_CTX_FDS_OFFSET 1024u
#define GVFS_FD_TABLE_MIN 4096u

// The open's hints (files.cuh, N5) live in the same allocation, just before the struct (the
// allocation starts GVFS_CTX_HINTS_BYTES before ctx; the fd table keeps its place after it):
// GVFS_NAME_HINTS words, found from ctx and the path's address alone, so that the hint's load
// goes out in the open's first batch with the path's words and the context's fields.
// A hint is tag << 20 | (name-cache index + 1); 0: none.
#define GVFS_NAME_HINT_BITS 12u
#define GVFS_NAME_HINTS (1u << GVFS_NAME_HINT_BITS)
#define GVFS_HINT_INDEX_MASK 0xfffffu  // low 20 bits: index + 1
#define GVFS_CTX_HINTS_BYTES (4u * GVFS_NAME_HINTS)

struct gvfs_ctx {
  gvfs_u32 magic;        // GVFS_CTX_MAGIC: names the struct in a memory dump (no call checks it: a load
                         // on every call's path)
  gvfs_u32 abi_version;  // GVFS_ABI_VERSION
  gvfs_u32 fill_push_bytes;  // a cache fill of at least this many bytes is a FILL_PUSH (the host
                             // copies it into fill_stage); 0: every fill is pulled by the GPU
  gvfs_u32 readahead_pages;  // bound of per-thread sequential readahead (filecache.cuh)
  gvfs_lanes lanes;
  gvfs_u64 *counters;    // [shard][GVFS_NCOUNTERS], GVFS_COUNTER_SHARDS (<= 32) shards; device memory,
                         // relaxed atomics; the host sums the shards
  gvfs_pagetable pt;     // the page cache (pt.nsets == 0: off, every read is a hostcall)
  gvfs_files files;
  gvfs_stdio_state *stdio;  // device memory: the wall-clock cache (device/gvfs/stdio.cuh)
  gvfs_u8 *fill_stage;   // device memory, lanes.count x lanes.data_bytes: lane i's FILL_PUSH bytes
                         // land at fill_stage + i x data_bytes (null when fill_push_bytes is 0)
};

static_assert(sizeof(gvfs_ctx) <= GVFS_CTX_FDS_OFFSET, "the fd table starts after the context struct");
static_assert(GVFS_CTX_FDS_OFFSET % 16u == 0u, "the fd table starts 16-byte aligned");

GVFS_FN gvfs_u32 *gvfs_ctx_hints(gvfs_ctx *ctx) { return (gvfs_u32 *)((gvfs_u8 *)ctx - GVFS_CTX_HINTS_BYTES); }

GVFS_FN gvfs_fdent *gvfs_ctx_fds(gvfs_ctx *ctx) { return (gvfs_fdent *)((gvfs_u8 *)ctx + GVFS_CTX_FDS_OFFSET); }
// Bytes of a context's allocation whose fd table has max_fds entries (ctx is
// GVFS_CTX_HINTS_BYTES into it).
GVFS_FN gvfs_u64 gvfs_ctx_bytes(gvfs_u32 max_fds) {
  return GVFS_CTX_HINTS_BYTES + GVFS_CTX_FDS_OFFSET + (gvfs_u64)sizeof(gvfs_fdent) * (max_fds > GVFS_FD_TABLE_MIN ? max_fds : GVFS_FD_TABLE_MIN);
}

// This SM's word of counter `which`.
GVFS_FN gvfs_u64 *gvfs_counter(gvfs_ctx *ctx, gvfs_u32 which) {
  return &ctx->counters[gvfs_counter_shard() * GVFS_NCOUNTERS + which];
}
// For a caller that already summed its warp's counts (one lane adds for all).
GVFS_FN void gvfs_count_sum_at(gvfs_u64 *counters, gvfs_u32 which, gvfs_u64 v) {
  if (v) gvfs_fetch_add_u64_relaxed_dev(counters + which, v);  // counters: gvfs_counter(ctx, 0), loaded early
}
GVFS_FN void gvfs_count_sum(gvfs_ctx *ctx, gvfs_u32 which, gvfs_u64 v) { gvfs_count_sum_at(gvfs_counter(ctx, 0), which, v); }
GVFS_FN void gvfs_count(gvfs_ctx *ctx, gvfs_u32 which, gvfs_u64 v) { gvfs_count_dev(gvfs_counter(ctx, which), v); }
