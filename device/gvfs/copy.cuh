// Byte copies used by the device layers: 16-byte accesses where both sides allow it, and
// several independent loads in flight before the first store. The source is often pinned
// host memory read over PCIe (~1 us a load): a loop that waits for each load before the
// next moves 16 bytes per thread per microsecond; batches of GVFS_COPY_BATCH keep that many
// loads in flight.
#pragma once
#include "port.cuh"

#define GVFS_COPY_BATCH 8        // per thread
// Per lane of a warp copy. Out of pinned host memory (a fill pulled across PCIe, ~1 us a
// load): 16, 8 KiB in flight per warp. Between slots and buffers in device memory (a hit): 8,
// 4 KiB, a 4 KiB page in one batch. (H100, 2026-11-24, 22:53: warp hits 4 KiB 1,138-1,173 GB/s
// at 8 against 1,092-1,106 at 16; 64 KiB 1,432-1,435 against 1,417-1,418: the registers of
// the larger batch cost more than its loads in flight give, where the source is this close.)
#ifndef GVFS_COPY_BATCH_WARP
#define GVFS_COPY_BATCH_WARP 16
#endif
#ifndef GVFS_COPY_BATCH_WARP_DEV
#define GVFS_COPY_BATCH_WARP_DEV 8
#endif

struct alignas(16) gvfs_v16 { gvfs_u64 a, b; };

// One batch: B loads, then B stores.
template <int B>
GVFS_FN void gvfs_copy_batch(gvfs_v16 *d, const gvfs_v16 *s, gvfs_u64 i, gvfs_u64 step) {
  gvfs_v16 t[B];
  GVFS_UNROLL
  for (int u = 0; u < B; ++u) t[u] = s[i + u * step];
  GVFS_UNROLL
  for (int u = 0; u < B; ++u) d[i + u * step] = t[u];
}

// Copies `count` 16-byte units, unit i of this thread being first + i * step, B loads at a time.
// Rolled: the batch loop is kept rolled, so the copy holds B units of registers and no more
// (copies between device buffers: warp hits were measured so, H100 22:59-23:14). Otherwise
// the compiler may unroll it, keeping more loads in flight, which a pull across PCIe wants
// (cold reads, 23:20-23:23, interleaved: 45.9-46.9 GB/s unrolled, 43.4-44.4 rolled).
template <int B, bool Rolled = false>
GVFS_FN void gvfs_copy_units(gvfs_v16 *d, const gvfs_v16 *s, gvfs_u64 first, gvfs_u64 count, gvfs_u64 step) {
  gvfs_u64 i = first;
  if (!Rolled) {
    for (; i + (B - 1) * step < count; i += B * step) gvfs_copy_batch<B>(d, s, i, step);
  } else {
    GVFS_NO_UNROLL
    for (; i + (B - 1) * step < count; i += B * step) gvfs_copy_batch<B>(d, s, i, step);
  }
  if (B > 8) {  // what is left, in batches of 8 (a 4 KiB page copied by a warp is 8 units a lane: one batch)
    GVFS_NO_UNROLL
    for (; i + 7 * step < count; i += 8 * step) {
      gvfs_v16 t[8];
      GVFS_UNROLL
      for (int u = 0; u < 8; ++u) t[u] = s[i + u * step];
      GVFS_UNROLL
      for (int u = 0; u < 8; ++u) d[i + u * step] = t[u];
    }
  }
  if (B > 4) {  // then in batches of 4
    GVFS_NO_UNROLL
    for (; i + 3 * step < count; i += 4 * step) {
      gvfs_v16 t0 = s[i], t1 = s[i + step], t2 = s[i + 2 * step], t3 = s[i + 3 * step];
      d[i] = t0; d[i + step] = t1; d[i + 2 * step] = t2; d[i + 3 * step] = t3;
    }
  }
  GVFS_NO_UNROLL
  for (; i < count; i += step) d[i] = s[i];
}

GVFS_FN void gvfs_copy(void *dst_, const void *src_, gvfs_u64 n) {
  gvfs_u8 *dst = (gvfs_u8 *)dst_;
  const gvfs_u8 *src = (const gvfs_u8 *)src_;
  gvfs_u64 i = 0;
  if ((((gvfs_u64)dst | (gvfs_u64)src) & 15u) == 0) {
    gvfs_copy_units<GVFS_COPY_BATCH>((gvfs_v16 *)dst, (const gvfs_v16 *)src, 0, n / 16u, 1);
    i = n & ~(gvfs_u64)15u;
  } else if ((((gvfs_u64)dst | (gvfs_u64)src) & 7u) == 0) {
    for (; i + 8 <= n; i += 8) *(gvfs_u64 *)(dst + i) = *(const gvfs_u64 *)(src + i);
  }
  for (; i < n; ++i) dst[i] = src[i];
}

// All lanes of a warp (lane of nlanes) copy n bytes together: lane k moves 16-byte pieces
// k, k + nlanes, ... so one warp instruction moves 512 contiguous bytes. B: 16-byte loads in
// flight per lane (GVFS_COPY_BATCH_WARP from host memory, GVFS_COPY_BATCH_WARP_DEV between
// device buffers, through gvfs_copy_warp_dev).
template <int B = GVFS_COPY_BATCH_WARP, bool Rolled = false>
GVFS_FN void gvfs_copy_warp(void *dst_, const void *src_, gvfs_u64 n, gvfs_u32 lane, gvfs_u32 nlanes) {
  gvfs_u8 *dst = (gvfs_u8 *)dst_;
  const gvfs_u8 *src = (const gvfs_u8 *)src_;
  if (((gvfs_u64)dst & 15u) == ((gvfs_u64)src & 15u)) {
    gvfs_u64 head = (16u - ((gvfs_u64)dst & 15u)) & 15u;
    if (head > n) head = n;
    GVFS_NO_UNROLL
    for (gvfs_u64 i = lane; i < head; i += nlanes) dst[i] = src[i];
    gvfs_u64 body = (n - head) / 16u;
    gvfs_copy_units<B, Rolled>((gvfs_v16 *)(dst + head), (const gvfs_v16 *)(src + head), lane, body, nlanes);
    GVFS_NO_UNROLL
    for (gvfs_u64 i = head + body * 16u + lane; i < n; i += nlanes) dst[i] = src[i];
  } else {
    GVFS_NO_UNROLL
    for (gvfs_u64 i = lane; i < n; i += nlanes) dst[i] = src[i];
  }
}

// gvfs_copy_warp between buffers in device memory (a hit: from a slot into the caller's buffer).
GVFS_FN void gvfs_copy_warp_dev(void *dst, const void *src, gvfs_u64 n, gvfs_u32 lane, gvfs_u32 nlanes) {
  gvfs_copy_warp<GVFS_COPY_BATCH_WARP_DEV, true>(dst, src, n, lane, nlanes);
}

// ---- gvfs_copy_alone: one thread copying a span by itself ----
// A thread's loads keep GVFS_COPY_BATCH x 16 bytes in flight, so a page copied by one
// thread alone is a chain of round trips: across PCIe from pinned host memory (4 KiB: 65 us
// on the H100), and even from device memory (~0.3 us a round). On sm_90 the Tensor Memory
// Accelerator copies the bytes into a staging buffer in shared memory, all in flight at
// once, and a bulk store moves them on (from pinned memory, 4 KiB: 1.7 us; 64 KiB: 8.8 us;
// probe of 2026-11-24). The buffer is one per block (GVFS_STAGE_BYTES of static shared
// memory in every kernel that reads through gpuvfs; define it 0 before including
// gpuvfs.cuh to do without); a thread that finds it taken copies the plain way.
#ifndef GVFS_STAGE_BYTES
#define GVFS_STAGE_BYTES 8192
#endif
#define GVFS_STAGE_HELD 0x67766673u  // "gvfs": the stage word while a thread holds the buffer

#if defined(GVFS_HAVE_BULK_COPY) && GVFS_STAGE_BYTES > 0
static_assert(GVFS_STAGE_BYTES % 16 == 0 && GVFS_STAGE_BYTES <= 32768,
              "GVFS_STAGE_BYTES: a multiple of 16 (the bulk copy's unit), at most 32 KiB of static shared memory");
// Copies n bytes (a multiple of 16; both addresses 16-byte aligned) through the block's
// staging buffer; false, copying nothing, if another thread of the block holds it.
//
// The stage word is shared memory nobody initialises (a library cannot run code at the
// start of a user's block), so it is taken by exchange, not by CAS from a known free
// value: any value but HELD means free. The holder wrote HELD into this block's own shared
// memory, and writes something else before it returns, so a thread never takes the buffer
// while another holds it. Garbage that happens to equal HELD only makes this block's
// threads copy the plain way: slower, never wrong. The mbarrier is initialised by each
// holder and invalidated before the word is given back.
GVFS_FN bool gvfs_copy_staged(gvfs_u8 *dst, const gvfs_u8 *src, gvfs_u64 n) {
  __shared__ __align__(128) gvfs_u8 stage[GVFS_STAGE_BYTES];
  __shared__ __align__(8) gvfs_u64 bar;
  __shared__ gvfs_u32 stage_word;
  if (gvfs_exch_acquire_cta(&stage_word, GVFS_STAGE_HELD) == GVFS_STAGE_HELD) return false;
  gvfs_mbar_init(&bar);
  // This thread's earlier accesses (generic proxy: the acquire of a hostcall answer, the
  // acquire that saw a page VALID) before the bulk reads of the bytes they announced
  // (async proxy); also the mbarrier's initialisation before the copy engine completes on it.
  gvfs_fence_proxy_async();
  gvfs_u32 phase = 0;
  for (gvfs_u64 o = 0; o < n; o += GVFS_STAGE_BYTES) {
    const gvfs_u32 m = (gvfs_u32)(n - o < GVFS_STAGE_BYTES ? n - o : GVFS_STAGE_BYTES);
    gvfs_bulk_to_shared(stage, src + o, m, &bar);
    gvfs_mbar_wait(&bar, phase);
    phase ^= 1u;
    gvfs_bulk_to_global(dst + o, stage, m);
  }
  gvfs_bulk_wait_stores();
  // The bulk stores (async proxy) before this thread's later accesses and releases: a
  // slot is published VALID only after its bytes are in it.
  gvfs_fence_proxy_async();
  gvfs_mbar_inval(&bar);
  gvfs_store_release_cta(&stage_word, 0u);
  return true;
}
#endif

// Copies n bytes from `src` (device memory, or pinned host memory mapped into the device)
// to `dst`, by one thread that has no other lanes to share the work with. (The bulk path
// commits and waits for this thread's bulk-copy groups: a caller's own uncommitted bulk
// stores are waited for with it.)
GVFS_FN void gvfs_copy_alone(void *dst_, const void *src_, gvfs_u64 n) {
  gvfs_u8 *dst = (gvfs_u8 *)dst_;
  const gvfs_u8 *src = (const gvfs_u8 *)src_;
#if defined(GVFS_HAVE_BULK_COPY) && GVFS_STAGE_BYTES > 0
  const gvfs_u64 body = n & ~(gvfs_u64)15u;
  // The bulk copy reads and writes the global state space: a caller's buffer on the stack
  // or in __shared__ memory goes the plain way.
  if (body >= 256u && (((gvfs_u64)src | (gvfs_u64)dst) & 15u) == 0 && gvfs_is_global(dst) && gvfs_is_global(src) &&
      gvfs_copy_staged(dst, src, body)) {
    if (n > body) gvfs_copy(dst + body, src + body, n - body);
    return;
  }
#endif
  gvfs_copy(dst, src, n);
}
