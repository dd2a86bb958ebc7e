// gpuvfs files: the POSIX-like calls of the public contract (gvfs_open, gvfs_pread, ...).
//
// This layer turns each call into hostcalls (device/gvfs/hostcall.cuh). Every call is safe
// from any thread of any block: the only shared state it touches is a lane, owned for
// the length of one request. fds are the host server's (one table per Runtime, shared by
// all threads, as a process shares its fds). Data moves through the lane's payload buffer
// in pinned host memory, data_bytes at a time.
#pragma once
#include "port.cuh"
#include "hostcall.cuh"
#include "context.cuh"
#include "copy.cuh"

#define GVFS_O_RDONLY 0x0
#define GVFS_O_WRONLY 0x1
#define GVFS_O_RDWR 0x2
#define GVFS_O_ACCMODE 0x3
#define GVFS_O_CREAT 0x40
#define GVFS_O_EXCL 0x80
#define GVFS_O_TRUNC 0x200
#define GVFS_O_APPEND 0x400

struct gvfs_stat {
  gvfs_u64 size;       // bytes
  gvfs_u64 mtime_ns;   // last modification, ns since the Unix epoch
  gvfs_u32 mode;       // st_mode bits
  gvfs_u32 reserved;
};

// Copies a NUL-terminated path into the lane; returns its length + 1, or -errno.
GVFS_FN gvfs_i64 gvfs_put_path(gvfs_u8 *data, const char *path) {
  if (path == NULL) return -GVFS_EFAULT;
  gvfs_u32 n = 0;
  while (n < GVFS_PATH_MAX && path[n] != 0) { data[n] = (gvfs_u8)path[n]; ++n; }
  if (n == GVFS_PATH_MAX) return -GVFS_ENAMETOOLONG;
  data[n] = 0;
  return (gvfs_i64)n + 1;
}

GVFS_FN gvfs_response gvfs_path_call(gvfs_ctx *ctx, gvfs_u32 opcode, const char *path, gvfs_u32 flags) {
  gvfs_lanes *L = &ctx->lanes;
  gvfs_u32 lane = gvfs_lane_acquire(L);
  gvfs_i64 len = gvfs_put_path(gvfs_lane_data(L, lane), path);
  gvfs_response r;
  if (len < 0) {
    gvfs_lane_release(L, lane);
    r.result = len; r.aux[0] = r.aux[1] = r.aux[2] = 0;
    return r;
  }
  gvfs_request *q = gvfs_lane_req(L, lane);
  q->opcode = opcode; q->flags = flags; q->fd = -1; q->data_len = (gvfs_u32)len;
  q->offset = 0; q->length = 0;
  q->arg[0] = q->arg[1] = q->arg[2] = q->arg[3] = 0;
  gvfs_lane_submit(L, lane);
  r = gvfs_lane_wait(L, lane);
  gvfs_lane_release(L, lane);
  return r;
}

GVFS_FN int gvfs_open(gvfs_ctx *ctx, const char *path, int flags) {
  return (int)gvfs_path_call(ctx, GVFS_OP_OPEN, path, (gvfs_u32)flags).result;
}

GVFS_FN int gvfs_unlink(gvfs_ctx *ctx, const char *path) {
  return (int)gvfs_path_call(ctx, GVFS_OP_UNLINK, path, 0).result;
}

// Reads through the lanes, data_bytes at a time; a short read from the host (end of
// file) ends the call. Returns the bytes read, or -errno if nothing was read.
GVFS_FN long gvfs_pread_hostcall(gvfs_ctx *ctx, int fd, void *buf, unsigned long n, unsigned long off) {
  gvfs_lanes *L = &ctx->lanes;
  unsigned long done = 0;
  do {
    gvfs_u64 chunk = n - done;
    if (chunk > L->data_bytes) chunk = L->data_bytes;
    gvfs_u32 lane = gvfs_lane_acquire(L);
    gvfs_request *q = gvfs_lane_req(L, lane);
    q->opcode = GVFS_OP_PREAD; q->flags = 0; q->fd = fd; q->data_len = 0;
    q->offset = off + done; q->length = chunk;
    q->arg[0] = q->arg[1] = q->arg[2] = q->arg[3] = 0;
    gvfs_lane_submit(L, lane);
    gvfs_response r = gvfs_lane_wait(L, lane);
    if (r.result > 0) gvfs_copy((gvfs_u8 *)buf + done, gvfs_lane_data(L, lane), (gvfs_u64)r.result);
    gvfs_lane_release(L, lane);
    if (r.result < 0) return done ? (long)done : (long)r.result;
    done += (unsigned long)r.result;
    if ((gvfs_u64)r.result < chunk) break;
  } while (done < n);
  return (long)done;
}

GVFS_FN long gvfs_pwrite_hostcall(gvfs_ctx *ctx, int fd, const void *buf, unsigned long n, unsigned long off) {
  gvfs_lanes *L = &ctx->lanes;
  unsigned long done = 0;
  do {
    gvfs_u64 chunk = n - done;
    if (chunk > L->data_bytes) chunk = L->data_bytes;
    gvfs_u32 lane = gvfs_lane_acquire(L);
    gvfs_request *q = gvfs_lane_req(L, lane);
    if (chunk) gvfs_copy(gvfs_lane_data(L, lane), (const gvfs_u8 *)buf + done, chunk);
    q->opcode = GVFS_OP_PWRITE; q->flags = 0; q->fd = fd; q->data_len = (gvfs_u32)chunk;
    q->offset = off + done; q->length = chunk;
    q->arg[0] = q->arg[1] = q->arg[2] = q->arg[3] = 0;
    gvfs_lane_submit(L, lane);
    gvfs_response r = gvfs_lane_wait(L, lane);
    gvfs_lane_release(L, lane);
    if (r.result < 0) return done ? (long)done : (long)r.result;
    done += (unsigned long)r.result;
    if ((gvfs_u64)r.result < chunk) break;
  } while (done < n);
  return (long)done;
}

GVFS_FN long gvfs_pread(gvfs_ctx *ctx, int fd, void *buf, unsigned long n, unsigned long off) {
  return gvfs_pread_hostcall(ctx, fd, buf, n, off);
}

GVFS_FN long gvfs_pwrite(gvfs_ctx *ctx, int fd, const void *buf, unsigned long n, unsigned long off) {
  return gvfs_pwrite_hostcall(ctx, fd, buf, n, off);
}

GVFS_FN int gvfs_fstat(gvfs_ctx *ctx, int fd, gvfs_stat *st) {
  if (st == NULL) return -GVFS_EFAULT;
  gvfs_response r = gvfs_hostcall(&ctx->lanes, GVFS_OP_FSTAT, fd, 0, 0, 0);
  if (r.result < 0) return (int)r.result;
  st->size = r.aux[0]; st->mtime_ns = r.aux[1]; st->mode = (gvfs_u32)r.aux[2]; st->reserved = 0;
  return 0;
}

GVFS_FN int gvfs_close(gvfs_ctx *ctx, int fd) {
  return (int)gvfs_hostcall(&ctx->lanes, GVFS_OP_CLOSE, fd, 0, 0, 0).result;
}

GVFS_FN int gvfs_fsync(gvfs_ctx *ctx, int fd) {
  return (int)gvfs_hostcall(&ctx->lanes, GVFS_OP_FSYNC, fd, 0, 0, 0).result;
}

// A hostcall that does nothing: what benchmarks and health checks time.
GVFS_FN long gvfs_nop(gvfs_ctx *ctx) { return (long)gvfs_hostcall(&ctx->lanes, GVFS_OP_NOP, -1, 0, 0, 0).result; }
