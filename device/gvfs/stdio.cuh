// gpuvfs stdio and time for GPU code: lines to the host's stdout/stderr, and clocks.
#pragma once
#include "port.cuh"
#include "hostcall.cuh"
#include "context.cuh"

#define GVFS_STDOUT 1u
#define GVFS_STDERR 2u

// Writes `len` bytes as one line on the host's stream (1 stdout, 2 stderr); the host adds
// the newline. A line longer than a lane's payload is cut there. Returns bytes written or -errno.
GVFS_FN long gvfs_write_line(gvfs_ctx *ctx, gvfs_u32 stream, const char *s, unsigned long len) {
  gvfs_lanes *L = &ctx->lanes;
  if (len > L->data_bytes) len = L->data_bytes;
  gvfs_u32 lane = gvfs_lane_acquire(L);
  gvfs_u8 *d = gvfs_lane_data(L, lane);
  for (unsigned long i = 0; i < len; ++i) d[i] = (gvfs_u8)s[i];
  gvfs_request *q = gvfs_lane_req(L, lane);
  q->opcode = GVFS_OP_WRITE_LINE; q->flags = stream; q->fd = -1; q->data_len = (gvfs_u32)len;
  q->offset = 0; q->length = len;
  q->arg[0] = q->arg[1] = q->arg[2] = q->arg[3] = 0;
  gvfs_lane_submit(L, lane);
  gvfs_response r = gvfs_lane_wait(L, lane);
  gvfs_lane_release(L, lane);
  return (long)r.result;
}

GVFS_FN long gvfs_puts(gvfs_ctx *ctx, const char *s) {
  unsigned long n = 0;
  while (s[n]) ++n;
  return gvfs_write_line(ctx, GVFS_STDOUT, s, n);
}

// Monotonic nanoseconds from the device's own clock: no hostcall.
GVFS_FN gvfs_u64 gvfs_monotonic_ns() { return gvfs_globaltimer_ns(); }

// Nanoseconds since the Unix epoch, from the host.
GVFS_FN gvfs_i64 gvfs_wallclock_ns(gvfs_ctx *ctx) {
  return gvfs_hostcall(&ctx->lanes, GVFS_OP_WALLCLOCK, -1, 0, 0, 0).result;
}
