// Byte copies used by the device layers: 16-byte accesses where both sides allow it.
#pragma once
#include "port.cuh"

GVFS_FN void gvfs_copy(void *dst_, const void *src_, gvfs_u64 n) {
  gvfs_u8 *dst = (gvfs_u8 *)dst_;
  const gvfs_u8 *src = (const gvfs_u8 *)src_;
  gvfs_u64 i = 0;
  if ((((gvfs_u64)dst | (gvfs_u64)src) & 15u) == 0) {
    struct v16 { gvfs_u64 a, b; };
    for (; i + 16 <= n; i += 16) *(v16 *)(dst + i) = *(const v16 *)(src + i);
  } else if ((((gvfs_u64)dst | (gvfs_u64)src) & 7u) == 0) {
    for (; i + 8 <= n; i += 8) *(gvfs_u64 *)(dst + i) = *(const gvfs_u64 *)(src + i);
  }
  for (; i < n; ++i) dst[i] = src[i];
}

// All lanes of `mask` (a whole warp, lanes in order) copy n bytes together: lane k moves
// 16-byte pieces k, k+32, ... so one warp instruction moves 512 contiguous bytes.
GVFS_FN void gvfs_copy_warp(void *dst_, const void *src_, gvfs_u64 n, gvfs_u32 lane, gvfs_u32 nlanes) {
  gvfs_u8 *dst = (gvfs_u8 *)dst_;
  const gvfs_u8 *src = (const gvfs_u8 *)src_;
  gvfs_u64 head = 0;
  if (((gvfs_u64)dst & 15u) == ((gvfs_u64)src & 15u)) {
    head = (16u - ((gvfs_u64)dst & 15u)) & 15u;
    if (head > n) head = n;
    for (gvfs_u64 i = lane; i < head; i += nlanes) dst[i] = src[i];
    struct v16 { gvfs_u64 a, b; };
    gvfs_u64 body = (n - head) / 16u;
    v16 *d = (v16 *)(dst + head);
    const v16 *s = (const v16 *)(src + head);
    for (gvfs_u64 i = lane; i < body; i += nlanes) d[i] = s[i];
    for (gvfs_u64 i = head + body * 16u + lane; i < n; i += nlanes) dst[i] = src[i];
  } else {
    for (gvfs_u64 i = lane; i < n; i += nlanes) dst[i] = src[i];
  }
}
