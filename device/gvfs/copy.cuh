// Byte copies used by the device layers: 16-byte accesses where both sides allow it, and
// several independent loads in flight before the first store. The source is often pinned
// host memory read over PCIe (~1 us a load): a loop that waits for each load before the
// next moves 16 bytes per thread per microsecond; batches of GVFS_COPY_BATCH keep that many
// loads in flight.
#pragma once
#include "port.cuh"

#define GVFS_COPY_BATCH 8        // per thread
#define GVFS_COPY_BATCH_WARP 16  // per lane of a warp copy: 8 KiB in flight per warp

struct gvfs_v16 { gvfs_u64 a, b; };

// Copies `count` 16-byte units, unit i of this thread being first + i * step, B loads at a time.
template <int B>
GVFS_FN void gvfs_copy_units(gvfs_v16 *d, const gvfs_v16 *s, gvfs_u64 first, gvfs_u64 count, gvfs_u64 step) {
  gvfs_u64 i = first;
  for (; i + (B - 1) * step < count; i += B * step) {
    gvfs_v16 t[B];
    GVFS_UNROLL
    for (int u = 0; u < B; ++u) t[u] = s[i + u * step];
    GVFS_UNROLL
    for (int u = 0; u < B; ++u) d[i + u * step] = t[u];
  }
  if (B > 8) {  // what is left, in batches of 8 (a 4 KiB page copied by a warp is 8 units a lane: one batch)
    for (; i + 7 * step < count; i += 8 * step) {
      gvfs_v16 t[8];
      GVFS_UNROLL
      for (int u = 0; u < 8; ++u) t[u] = s[i + u * step];
      GVFS_UNROLL
      for (int u = 0; u < 8; ++u) d[i + u * step] = t[u];
    }
  }
  if (B > 4) {  // then in batches of 4
    for (; i + 3 * step < count; i += 4 * step) {
      gvfs_v16 t0 = s[i], t1 = s[i + step], t2 = s[i + 2 * step], t3 = s[i + 3 * step];
      d[i] = t0; d[i + step] = t1; d[i + 2 * step] = t2; d[i + 3 * step] = t3;
    }
  }
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
// k, k + nlanes, ... so one warp instruction moves 512 contiguous bytes.
GVFS_FN void gvfs_copy_warp(void *dst_, const void *src_, gvfs_u64 n, gvfs_u32 lane, gvfs_u32 nlanes) {
  gvfs_u8 *dst = (gvfs_u8 *)dst_;
  const gvfs_u8 *src = (const gvfs_u8 *)src_;
  if (((gvfs_u64)dst & 15u) == ((gvfs_u64)src & 15u)) {
    gvfs_u64 head = (16u - ((gvfs_u64)dst & 15u)) & 15u;
    if (head > n) head = n;
    for (gvfs_u64 i = lane; i < head; i += nlanes) dst[i] = src[i];
    gvfs_u64 body = (n - head) / 16u;
    gvfs_copy_units<GVFS_COPY_BATCH_WARP>((gvfs_v16 *)(dst + head), (const gvfs_v16 *)(src + head), lane, body, nlanes);
    for (gvfs_u64 i = head + body * 16u + lane; i < n; i += nlanes) dst[i] = src[i];
  } else {
    for (gvfs_u64 i = lane; i < n; i += nlanes) dst[i] = src[i];
  }
}
