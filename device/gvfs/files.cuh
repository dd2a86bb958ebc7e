// gpuvfs files: the POSIX-like calls of the public contract (gvfs_open, gvfs_pread, ...).
//
// fds live in a device-side table (gvfs_files.fds, one per Runtime, shared by every thread
// as a process shares its fds). Two kinds:
//   CACHED  a read-only open while the page cache is on. Reads are answered from the cache
//           (filecache.cuh); fstat and close never leave the GPU; and a repeated open of a
//           path the name cache knows, confirmed in the current epoch, never leaves it either.
//   HOST    anything else (writes, creation, the cache off): each call is a hostcall on the
//           host server's fd; data moves through the lane's buffer, data_bytes at a time.
// Name cache (gvfs_files.names): path -> file version, open addressing on a 64-bit hash of
// the path's words. An entry's owner (one at a time, by CAS on its state) writes the host's
// answer as four words stamped with a version; readers take the four in one batch of
// relaxed loads and use them when the stamps agree (N1..N4 below): no fence on the hit.
// Entries are only added, never removed (for the Runtime's life).
// Consistency: the host bumps `epoch` before every launch and on rt.revalidate(); an entry
// confirmed in an older epoch is confirmed again by one hostcall (LOOKUP), which hands out
// a new file version if the file changed (docs/consistency.md).
#pragma once
#include "port.cuh"
#include "hostcall.cuh"
#include "context.cuh"
#include "copy.cuh"
#include "filecache.cuh"

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

GVFS_COLD gvfs_response gvfs_path_call(gvfs_ctx *ctx, gvfs_u32 opcode, const char *path, gvfs_u32 flags) {
  gvfs_lanes l = ctx->lanes, *L = &l;  // in registers (see gvfs_lane_claim)
  gvfs_claim c = gvfs_lane_claim(L);
  gvfs_i64 len = gvfs_put_path(gvfs_lane_data(L, c.lane), path);
  gvfs_response r;
  if (len < 0) {
    gvfs_lane_release(L, c);
    r.result = len; r.aux[0] = r.aux[1] = r.aux[2] = 0;
    return r;
  }
  gvfs_lane_post(L, c, opcode, flags, -1, (gvfs_u32)len, 0, 0);
  r = gvfs_lane_wait(L, c, 0);
  gvfs_lane_release(L, c);
  return r;
}

GVFS_FN void gvfs_name_forget(gvfs_files *F, int idx);
GVFS_FN int gvfs_name_index(gvfs_files *F, const char *path);

GVFS_COLD int gvfs_unlink(gvfs_ctx *ctx, const char *path) {
  int r = (int)gvfs_path_call(ctx, GVFS_OP_UNLINK, path, 0).result;
  if (r == 0) gvfs_name_forget(&ctx->files, gvfs_name_index(&ctx->files, path));
  return r;
}

// Reads through the lanes, data_bytes at a time; a short read from the host (end of
// file) ends the call. Returns the bytes read, or -errno if nothing was read.
GVFS_COLD long gvfs_pread_hostcall(gvfs_ctx *ctx, int fd, void *buf, unsigned long n, unsigned long off) {
  gvfs_lanes l = ctx->lanes, *L = &l;
  unsigned long done = 0;
  do {
    gvfs_u64 chunk = n - done;
    if (chunk > L->data_bytes) chunk = L->data_bytes;
    gvfs_claim c = gvfs_lane_claim(L);
    gvfs_lane_post(L, c, GVFS_OP_PREAD, 0, fd, 0, off + done, chunk);
    gvfs_i64 got = gvfs_lane_wait_result(L, c, chunk, gvfs_wait_cap_ns(chunk));
    if (got > 0) gvfs_copy_alone((gvfs_u8 *)buf + done, gvfs_lane_data(L, c.lane), (gvfs_u64)got);
    gvfs_lane_release(L, c);
    if (got < 0) return done ? (long)done : (long)got;
    done += (unsigned long)got;
    if ((gvfs_u64)got < chunk) break;
  } while (done < n);
  return (long)done;
}

GVFS_COLD long gvfs_pwrite_hostcall(gvfs_ctx *ctx, int fd, const void *buf, unsigned long n, unsigned long off) {
  gvfs_lanes l = ctx->lanes, *L = &l;
  unsigned long done = 0;
  do {
    gvfs_u64 chunk = n - done;
    if (chunk > L->data_bytes) chunk = L->data_bytes;
    gvfs_claim c = gvfs_lane_claim(L);
    if (chunk) gvfs_copy(gvfs_lane_data(L, c.lane), (const gvfs_u8 *)buf + done, chunk);
    gvfs_lane_post(L, c, GVFS_OP_PWRITE, 0, fd, (gvfs_u32)chunk, off + done, chunk);
    gvfs_i64 put = gvfs_lane_wait_result(L, c, chunk, gvfs_wait_cap_ns(chunk));
    gvfs_lane_release(L, c);
    if (put < 0) return done ? (long)done : (long)put;
    done += (unsigned long)put;
    if ((gvfs_u64)put < chunk) break;
  } while (done < n);
  return (long)done;
}

// ---- the device fd table ----
// The table entry an fd number names, or null when the number is out of range.
GVFS_FN gvfs_fdent *gvfs_fd_entry(gvfs_ctx *ctx, int fd) {
  const gvfs_u32 i = (gvfs_u32)fd - (gvfs_u32)GVFS_FD_BASE;  // a number below the base wraps past any table
  return i < ctx->files.max_fds ? gvfs_ctx_fds(ctx) + i : (gvfs_fdent *)0;
}

// The entry of an open fd, or null. A relaxed load: the fields are ordered before any use
// of the fd's number by how the number was learnt (see gvfs_fd_publish).
GVFS_FN gvfs_fdent *gvfs_fd_get(gvfs_ctx *ctx, int fd) {
  gvfs_fdent *e = gvfs_fd_entry(ctx, fd);
  return e && gvfs_load_relaxed_dev(&e->state) == GVFS_FD_OPEN ? e : (gvfs_fdent *)0;
}

// What the read paths need of an fd, in one batch of loads (one memory round trip where
// gvfs_fd_get and the field loads after it take two). Relaxed loads suffice for the reason
// gvfs_fd_publish gives. The state check still catches an fd never opened or closed since.
struct gvfs_fd_view { gvfs_u32 kind; gvfs_i32 host_fd; gvfs_u64 file_no, size; gvfs_u64 *next_off; };

// The entry's loads do not wait for max_fds: below GVFS_FD_TABLE_MIN the entry is inside the
// context's allocation whatever max_fds is (context.cuh), so they go out in one batch with
// the load of max_fds (and with whatever context fields the caller loaded just before), and
// the range check comes after them. The branch to a number past GVFS_FD_TABLE_MIN tests the
// number alone: a test that also read max_fds would hold the entry's loads until max_fds
// came back (a predicated instruction waits for its operands whether or not it runs).
GVFS_FN void gvfs_fd_view_load(gvfs_fdent *e, gvfs_u32 *st, gvfs_fd_view *v) {
  *st = gvfs_load_relaxed_dev(&e->state);
  v->kind = gvfs_load_relaxed_dev(&e->kind);
  v->host_fd = (gvfs_i32)gvfs_load_relaxed_dev((const gvfs_u32 *)&e->host_fd);
  v->file_no = gvfs_load_relaxed_u64_dev(&e->file_no);
  v->size = gvfs_load_relaxed_u64_dev(&e->size);
  v->next_off = &e->next_off;
}
GVFS_FN bool gvfs_fd_view_of(gvfs_ctx *ctx, int fd, gvfs_fd_view *v) {
  const gvfs_u32 max_fds = ctx->files.max_fds;
  const gvfs_u32 i = (gvfs_u32)fd - (gvfs_u32)GVFS_FD_BASE;
  gvfs_u32 st;
  if (i >= GVFS_FD_TABLE_MIN) {  // past the room every table has: checked first
    gvfs_fdent *e = gvfs_fd_entry(ctx, fd);
    if (!e) return false;
    gvfs_fd_view_load(e, &st, v);
    return st == GVFS_FD_OPEN;
  }
  gvfs_fd_view_load(gvfs_ctx_fds(ctx) + i, &st, v);
  return i < max_fds && st == GVFS_FD_OPEN;
}

// An fd entry is reserved (FREE -> SETUP by CAS), filled, then published (OPEN); a
// reservation that is not needed goes back with a plain store. The CAS acquires (but does
// not release: it publishes nothing, and a release would wait for every store in flight): it
// reads from the closer's release, so the closer's last reads of the fields happen before
// the new owner's writes to them. Publishing OPEN needs no release either (a release costs
// as much as the rest of an open): a thread learns an fd's number only from gvfs_open's
// return, in its own program order, or from another thread through the kernel's own
// synchronisation (a barrier, a flag it releases), and either orders the fields before
// any use of the number. The state word then only tells a live fd from a closed or never
// opened one.
// Each open starts its search at a place of its own, the thread's number mixed with the
// SM's clock: no shared counter to contend on, and no place a thread comes back to. (A
// fixed start per thread found the thread's own open fd there at every later open, and
// then paid a failed CAS before a second round trip.) While the table is mostly free, as
// Runtime(max_fds=...) sizes it, the first try is the CAS at once, with no load before it;
// the caller may issue it early and look at its result late (gvfs_open_cached overlaps it
// with the name-cache read).
GVFS_FN gvfs_u32 gvfs_fd_start(gvfs_files *F) {
  const gvfs_u64 x = (gvfs_global_tid() ^ ((gvfs_u64)clock64() << 24)) * 0x9E3779B97F4A7C15ull;
  // x's top half scaled to [0, max_fds) by a multiply: a division by max_fds, a variable,
  // cost the open ~4% (H100, 2026-11-25, 1.21 against 1.16-1.17 us).
  return (gvfs_u32)(((x >> 32) * (gvfs_u64)F->max_fds) >> 32);
}
GVFS_FN gvfs_u32 gvfs_fd_try_start(gvfs_files *F, gvfs_u32 start) {
  return gvfs_cas_acquire_dev(&F->fds[start].state, GVFS_FD_FREE, GVFS_FD_SETUP);
}
// The rest of the search, when the start entry was taken: the entries after it, 8 states
// loaded at once (a crowded table is scanned 8 entries a round trip, not one).
GVFS_FN int gvfs_fd_reserve_scan(gvfs_files *F, gvfs_u32 start) {
  for (gvfs_u32 k = 1; k < F->max_fds; k += 8u) {
    gvfs_u32 idx[8], st[8];
    GVFS_UNROLL
    for (gvfs_u32 u = 0; u < 8u; ++u) {
      idx[u] = start + k + u;  // < 2 * max_fds: one wrap, no division
      if (idx[u] >= F->max_fds) idx[u] -= F->max_fds;
      st[u] = k + u < F->max_fds ? gvfs_load_relaxed_dev(&F->fds[idx[u]].state) : GVFS_FD_OPEN;
    }
    for (gvfs_u32 u = 0; u < 8u; ++u)
      if (st[u] == GVFS_FD_FREE &&
          gvfs_cas_acquire_dev(&F->fds[idx[u]].state, GVFS_FD_FREE, GVFS_FD_SETUP) == GVFS_FD_FREE)
        return (int)idx[u];
  }
  return -1;
}

GVFS_FN int gvfs_fd_reserve(gvfs_files *F) {
  const gvfs_u32 start = gvfs_fd_start(F);
  if (gvfs_fd_try_start(F, start) == GVFS_FD_FREE) return (int)start;
  return gvfs_fd_reserve_scan(F, start);
}

GVFS_FN void gvfs_fd_unreserve(gvfs_files *F, int i) { gvfs_store_relaxed_dev(&F->fds[i].state, GVFS_FD_FREE); }

GVFS_FN int gvfs_fd_publish(gvfs_files *F, int i, gvfs_u32 kind, gvfs_i32 host_fd, gvfs_u64 file_no, gvfs_u64 size,
                            gvfs_u64 mtime_ns, gvfs_u32 mode) {
  gvfs_fdent *e = &F->fds[i];
  e->kind = kind; e->host_fd = host_fd; e->mode = mode;
  e->file_no = file_no; e->size = size; e->mtime_ns = mtime_ns;
  gvfs_store_relaxed_u64_dev(&e->next_off, 0ull);
  gvfs_store_relaxed_dev(&e->state, GVFS_FD_OPEN);  // no release: see above
  return i + GVFS_FD_BASE;
}

GVFS_FN int gvfs_fd_alloc(gvfs_ctx *ctx, gvfs_u32 kind, gvfs_i32 host_fd, gvfs_u64 file_no, gvfs_u64 size,
                          gvfs_u64 mtime_ns, gvfs_u32 mode) {
  const int i = gvfs_fd_reserve(&ctx->files);
  if (i < 0) return -GVFS_EMFILE;
  return gvfs_fd_publish(&ctx->files, i, kind, host_fd, file_no, size, mtime_ns, mode);
}

// ---- the name cache ----
// A path as the name cache compares it: hash, length, and (when it fits an entry) its
// bytes packed into 8-byte words, NUL and zero padding included, so that a comparison with
// an entry is a few independent word loads rather than a loop of dependent byte loads.
#define GVFS_NAME_WORDS (GVFS_NAME_MAX / 8u)
struct gvfs_pathkey {
  gvfs_u64 h;
  gvfs_u32 len;
  gvfs_u32 nwords;   // words holding the path and its NUL (0 when it does not fit an entry)
  gvfs_u64 w[GVFS_NAME_WORDS];
};

// The zero bytes of v: the lowest set bit marks the first zero byte (bits above it may be
// false alarms, and are never used).
GVFS_FN gvfs_u64 gvfs_zero_bytes(gvfs_u64 v) { return (v - 0x0101010101010101ull) & ~v & 0x8080808080808080ull; }

// Builds the key of a NUL-terminated path. The path is read in aligned 8-byte words, as
// strlen does, the first four at once (gvfs_pathblock_load, which stops at a 4 KiB boundary):
// this faults only where a byte loop would; bytes past the NUL among those words are read
// but never used (so a memory checker may flag a path that ends within 31 bytes of the end
// of its allocation; GVFS_PATH_EXACT_READS reads a byte at a time instead, for such
// checkers). Each word of the key is 8 bytes of the path itself,
// whatever its alignment, zero after the NUL; the hash mixes a word at a time. Paths too
// long for an entry (GVFS_NAME_MAX with the NUL) get nwords = 0 and are read no further.
// Key word i is c, with nb path bytes before a NUL in it (8: none): stores it and mixes it
// into the hash; true when the path ends in it.
GVFS_FN bool gvfs_pathkey_put(gvfs_pathkey *k, gvfs_u32 i, gvfs_u64 c, gvfs_u32 nb, gvfs_u64 *h) {
  k->w[i] = c;
  *h = (*h ^ c) * 0x9e3779b97f4a7c15ull;
  *h ^= *h >> 29;
  if (nb == 8u) return false;
  k->len = 8u * i + nb;
  k->nwords = i + 1u;
  return true;
}

// The path's first words as one batch of loads: the aligned 8-byte words from the one that
// holds the path's first byte, four of them, cut where the next 4 KiB begins (a path that
// ends before that boundary cannot fault beyond it: memory is mapped in pages of 4 KiB or
// more). Bytes past the NUL among them are read but never used (see gvfs_pathkey_make).
struct gvfs_pathblock {
  gvfs_u64 w[4];           // the words; 0 past the cut
  const gvfs_u64 *wp;      // the first word's address
  gvfs_u32 off;            // the path's first byte within w[0]
  gvfs_u32 nw;             // words loaded (1..4)
};

GVFS_FN void gvfs_pathblock_load(const char *p, gvfs_pathblock *b) {
  const gvfs_u64 addr = (gvfs_u64)p;
  b->off = (gvfs_u32)(addr & 7u);
  b->wp = (const gvfs_u64 *)(addr - b->off);
  const gvfs_u32 left = (4096u - (gvfs_u32)(addr & 4095u & ~7u)) >> 3;  // words before the next 4 KiB
  b->nw = left < 4u ? left : 4u;
  GVFS_UNROLL
  for (gvfs_u32 u = 0; u < 4u; ++u) b->w[u] = u < b->nw ? b->wp[u] : 0ull;
}

// The key from the path's first words (loaded by gvfs_pathblock_load); reads on past them
// only while the path goes on.
GVFS_FN void gvfs_pathkey_from(gvfs_pathkey *k, const gvfs_pathblock *b) {
  gvfs_u64 h = 0xcbf29ce484222325ull;
  k->nwords = 0;
  k->len = GVFS_NAME_MAX;
  const gvfs_u32 off = b->off, sh = off * 8u, npre = b->nw;
  const gvfs_u64 *wp = b->wp;
  gvfs_u64 a = b->w[0];
  for (gvfs_u32 i = 0; i < GVFS_NAME_WORDS; ++i) {
    gvfs_u64 c = a;
    if (off != 0u) {
      c = a >> sh;  // the path's bytes 8i .. 8i+7-off; the rest are in the next aligned word,
      if (gvfs_zero_bytes(c | (~0ull << (64u - sh))) == 0ull) {  // which is read only if the path goes on
        a = i + 1u < npre ? b->w[i + 1u] : wp[i + 1u];
        c |= a << (64u - sh);
      }
    }
    const gvfs_u64 z = gvfs_zero_bytes(c);
    const gvfs_u32 nb = z ? (gvfs_u32)gvfs_ctz64(z) / 8u : 8u;  // path bytes before the NUL in this word
    if (nb < 8u) c &= nb ? ~0ull >> (64u - 8u * nb) : 0ull;
    if (gvfs_pathkey_put(k, i, c, nb, &h)) break;
    if (off == 0u) a = i + 1u < npre ? b->w[i + 1u] : wp[i + 1u];  // no NUL yet: the next word is the path's
  }
  k->h = h ? h : 1u;  // 0 means "not written yet" in an entry (N3)
}

GVFS_FN void gvfs_pathkey_make(gvfs_pathkey *k, const char *p) {
#ifdef GVFS_PATH_EXACT_READS
  // For memory checkers (GPUVFS_DEVICE_DEFINES, gpuvfs/backends/base.py): a byte at a
  // time up to the NUL, nothing past it; the same words, length and hash.
  gvfs_u64 h = 0xcbf29ce484222325ull;
  k->nwords = 0;
  k->len = GVFS_NAME_MAX;
  for (gvfs_u32 i = 0; i < GVFS_NAME_WORDS; ++i) {
    gvfs_u64 c = 0;
    gvfs_u32 nb = 8u;
    for (gvfs_u32 b = 0; b < 8u; ++b) {
      const gvfs_u8 ch = (gvfs_u8)p[8u * i + b];
      if (ch == 0u) { nb = b; break; }
      c |= (gvfs_u64)ch << (8u * b);
    }
    if (gvfs_pathkey_put(k, i, c, nb, &h)) break;
  }
  k->h = h ? h : 1u;
#else
  gvfs_pathblock b;
  gvfs_pathblock_load(p, &b);
  gvfs_pathkey_from(k, &b);
#endif
}

// Name-cache entry states: kind in bits 0..1, a version above (bumped by every write of the
// answer).
//   EMPTY    -> CLAIMED  an opener of a new path (CAS); it then writes hash/len/path
//   CLAIMED  -> BUSY     the same opener, store-release: from now on the path is readable
//   READY    -> BUSY     an opener that found the entry unconfirmed in this epoch (CAS), or
//                        gvfs_name_forget
//   BUSY     -> READY    the owner, after writing the answer (store-release, version + 1)
// Whoever holds CLAIMED/BUSY does the one LOOKUP; other openers of the path wait for READY
// (the name-cache twin of one fill per page). A LOOKUP that failed is kept as a negative
// entry (file_no 0, mode = errno) for the rest of the epoch.
//
// Reading an entry takes one batch of relaxed loads and no fence (an open answered on the
// GPU is a few memory round trips, and a fence costs as much as one):
//   N1  The answer is four words, each stamped in its top 12 bits with the low bits of the
//       version that wrote it (only the owner writes them, and every write stamps all four
//       with a new version). Each aligned 8-byte load is single-copy atomic, so four loads
//       that show the same stamp all come from one write: a whole answer, whatever order
//       the loads were performed in. A mix shows two stamps and is read again. (A reader
//       would have to stall across 4096 writes of one entry, each a LOOKUP hostcall, to
//       be fooled by the wrap.)
//   N2  Whether the answer is current is its epoch, not the state: an answer confirmed in
//       this epoch is good even while an owner is busy writing the next one.
//   N3  hash, len and path are written once, before the state's release of BUSY, and the
//       hash is never 0. Loaded relaxed beside the state, they can still show the bytes
//       from before that write; only a hash that is 0 or that matches while len or path do
//       not can be such a view, and those are loaded again after an acquire of the state.
//       A nonzero hash that differs is another path for good.
//   N4  Entries are only added, never removed (for the Runtime's life), so an index found
//       stays that path's entry.
#define GVFS_NAME_EMPTY 0u
#define GVFS_NAME_CLAIMED 1u
#define GVFS_NAME_READY 2u
#define GVFS_NAME_BUSY 3u

struct gvfs_name_snap { gvfs_u64 file_no, size, mtime_ns; gvfs_u32 mode, epoch; };

// The answer's four words (N1): a 12-bit stamp over 52 bits each.
//   w0 = size   w1 = mtime bits 0..51   w2 = mtime bits 52..63 << 40 | file_no (40 bits)
//   w3 = mode (16 bits) << 32 | epoch
#define GVFS_STAMP_SHIFT 52u
#define GVFS_STAMP_LOW ((1ull << GVFS_STAMP_SHIFT) - 1ull)
#define GVFS_NAME_FILE_BITS 40u

// Whether an answer fits the words: sizes up to 4 PiB, any mtime, 16-bit modes (st_mode and
// errno values do). One that does not is stored unconfirmed, so every open asks the host.
GVFS_FN bool gvfs_snap_fits(const gvfs_name_snap *s) {
  return s->size <= GVFS_STAMP_LOW && (s->file_no >> GVFS_NAME_FILE_BITS) == 0ull && s->mode <= 0xffffu;
}
GVFS_FN void gvfs_snap_pack(const gvfs_name_snap *s, gvfs_u32 version, gvfs_u64 w[4]) {
  const gvfs_u64 t = (gvfs_u64)(version & 0xfffu) << GVFS_STAMP_SHIFT;
  w[0] = t | (s->size & GVFS_STAMP_LOW);
  w[1] = t | (s->mtime_ns & GVFS_STAMP_LOW);
  w[2] = t | (s->mtime_ns >> GVFS_STAMP_SHIFT) << GVFS_NAME_FILE_BITS | (s->file_no & ((1ull << GVFS_NAME_FILE_BITS) - 1ull));
  w[3] = t | (gvfs_u64)(s->mode & 0xffffu) << 32 | s->epoch;
}
// Decodes the words; false when they come from more than one write (N1).
GVFS_FN bool gvfs_snap_unpack(const gvfs_u64 w[4], gvfs_name_snap *s) {
  s->size = w[0] & GVFS_STAMP_LOW;
  s->mtime_ns = (w[1] & GVFS_STAMP_LOW) | ((w[2] & GVFS_STAMP_LOW) >> GVFS_NAME_FILE_BITS) << GVFS_STAMP_SHIFT;
  s->file_no = w[2] & ((1ull << GVFS_NAME_FILE_BITS) - 1ull);
  s->mode = (gvfs_u32)(w[3] >> 32) & 0xffffu;
  s->epoch = (gvfs_u32)w[3];
  const gvfs_u64 t = w[0] >> GVFS_STAMP_SHIFT;
  return (w[1] >> GVFS_STAMP_SHIFT) == t && (w[2] >> GVFS_STAMP_SHIFT) == t && (w[3] >> GVFS_STAMP_SHIFT) == t;
}

// The owner (CLAIMED or BUSY) writes the answer and publishes READY. The release orders the
// answer before READY for openers that waited for it (they load the entry again after an
// acquire of the state: gvfs_name_find's `ordered`).
GVFS_FN void gvfs_name_publish(gvfs_nameent *e, const gvfs_name_snap *s) {
  const gvfs_u32 st = gvfs_load_relaxed_dev(&e->state);  // ours: only the owner writes it now
  const gvfs_u32 version = (st >> 2) + 1u;
  gvfs_name_snap put = *s;
  if (!gvfs_snap_fits(&put)) { put.file_no = 0; put.size = 0; put.mode = 0; put.epoch = 0; }  // unconfirmed
  gvfs_u64 w[4];
  gvfs_snap_pack(&put, version, w);
  GVFS_UNROLL
  for (gvfs_u32 u = 0; u < 4u; ++u) gvfs_store_relaxed_u64_dev(&e->answer[u], w[u]);
  gvfs_store_release_dev(&e->state, version << 2 | GVFS_NAME_READY);
}

#define GVFS_NAME_PROBES 32u

// One entry as loaded: everything in one batch of relaxed loads (one memory round trip),
// the path's first 4 words included. Nothing is computed from the loads here, so that the
// caller can issue more (gvfs_open_cached's CAS) before it waits for them.
struct gvfs_name_view { gvfs_u32 st, len; gvfs_u64 hash, w[4], p[4]; };

// Loads entry `e` for key `k`. `ordered`: after an acquire of the state, so that what the
// state shows was written is seen (N3); otherwise nothing waits for anything.
GVFS_FN void gvfs_name_load(const gvfs_nameent *e, const gvfs_pathkey *k, bool ordered, gvfs_name_view *v) {
  v->st = ordered ? gvfs_load_acquire_dev(&e->state) : gvfs_load_relaxed_dev(&e->state);
  v->len = gvfs_load_relaxed_dev(&e->len);
  v->hash = gvfs_load_relaxed_u64_dev(&e->hash);
  const gvfs_u64 *ew = (const gvfs_u64 *)e->path;
  GVFS_UNROLL
  for (gvfs_u32 u = 0; u < 4u; ++u) {
    v->w[u] = gvfs_load_relaxed_u64_dev(&e->answer[u]);
    v->p[u] = u < k->nwords ? gvfs_load_relaxed_u64_dev(&ew[u]) : 0ull;
  }
}

// Whether the entry's path is the key's: the loaded words, then the rest 4 at a time.
GVFS_FN bool gvfs_name_matches(const gvfs_nameent *e, const gvfs_pathkey *k, const gvfs_name_view *v) {
  if (v->hash != k->h || v->len != k->len) return false;
  gvfs_u64 diff = 0;
  GVFS_UNROLL
  for (gvfs_u32 u = 0; u < 4u; ++u) diff |= u < k->nwords ? v->p[u] ^ k->w[u] : 0ull;
  const gvfs_u64 *ew = (const gvfs_u64 *)e->path;
  for (gvfs_u32 j0 = 4; j0 < k->nwords; j0 += 4u) {  // 4 words of the path in flight at once
    gvfs_u64 w[4];
    GVFS_UNROLL
    for (gvfs_u32 u = 0; u < 4u; ++u) w[u] = j0 + u < k->nwords ? gvfs_load_relaxed_u64_dev(&ew[j0 + u]) : 0ull;
    GVFS_UNROLL
    for (gvfs_u32 u = 0; u < 4u; ++u) diff |= j0 + u < k->nwords ? w[u] ^ k->w[j0 + u] : 0ull;
  }
  return diff == 0;
}

GVFS_FN gvfs_u32 gvfs_name_slot(const gvfs_files *F, const gvfs_pathkey *k, gvfs_u32 p) {
  return (gvfs_u32)(k->h + p) & (F->nnames - 1u);
}

// Finds the entry of the path (its path readable); -1 if none. Waits out entries whose path
// is still being written. `free_slot`: the first empty slot of the probe sequence (where the
// path would go), or -1 if the window is full. `snap` gets the entry's answer and *snap_ok
// says whether it is whole (N1); *seen is the entry's state as loaded with it (a confirmer
// takes over exactly that version, by CAS from it). `first`: the first probe's entry, already
// loaded (relaxed) by the caller, or null. `ordered`: every entry loaded after an acquire of
// its state.
GVFS_FN int gvfs_name_find(gvfs_files *F, const gvfs_pathkey *k, int *free_slot, gvfs_name_snap *snap, bool *snap_ok,
                           gvfs_u32 *seen, const gvfs_name_view *first, bool ordered) {
  *free_slot = -1;
  *snap_ok = false;
  gvfs_u32 probes = F->nnames < GVFS_NAME_PROBES ? F->nnames : GVFS_NAME_PROBES;
  for (gvfs_u32 p = 0; p < probes; ++p) {
    const gvfs_u32 i = gvfs_name_slot(F, k, p);
    gvfs_nameent *e = &F->names[i];
    gvfs_name_view v;
    bool acquired = ordered;
    if (p == 0 && first && !ordered) v = *first;
    else gvfs_name_load(e, k, ordered, &v);
    for (;;) {
      if ((v.st & 3u) == GVFS_NAME_CLAIMED) {  // the path is being written: wait, then look again
        gvfs_backoff(32);
        gvfs_name_load(e, k, acquired = true, &v);
        continue;
      }
      if ((v.st & 3u) == GVFS_NAME_EMPTY) { *free_slot = (int)i; return -1; }  // (N4) the claim's CAS decides
      if (gvfs_name_matches(e, k, &v)) {
        *snap_ok = gvfs_snap_unpack(v.w, snap);
        *seen = v.st;
        return (int)i;
      }
      if (acquired || (v.hash != 0 && v.hash != k->h)) break;  // another path (N3)
      gvfs_name_load(e, k, acquired = true, &v);  // maybe a view from before the path's write (N3)
    }
  }
  return -1;
}

GVFS_FN bool gvfs_cache_on(gvfs_ctx *ctx) { return ctx->pt.nsets != 0u; }

// Marks a name-cache entry unconfirmed, so the next open of its path asks the host (which
// hands out a new version if the file changed). Used after the device itself changes a
// file: open for writing, pwrite, unlink. The answer it leaves is an empty one from an
// epoch that is never current: nobody uses an unconfirmed answer.
GVFS_FN void gvfs_name_forget(gvfs_files *F, int idx) {
  if (idx < 0) return;
  gvfs_nameent *e = &F->names[idx];
  for (;;) {
    gvfs_u32 st = gvfs_load_relaxed_dev(&e->state);
    if ((st & 3u) != GVFS_NAME_READY) { gvfs_backoff(64); continue; }  // an owner is on it: wait
    if (gvfs_cas_acq_rel_dev(&e->state, st, (st & ~3u) | GVFS_NAME_BUSY) != st) continue;
    gvfs_name_snap s;
    s.file_no = 0; s.size = 0; s.mtime_ns = 0; s.mode = 0;
    s.epoch = 0;  // never current (the host skips 0), whichever epoch a reader loaded
    gvfs_name_publish(e, &s);
    return;
  }
}

// The name-cache entry of `path`, or -1.
GVFS_FN int gvfs_name_index(gvfs_files *F, const char *path) {
  if (F->nnames == 0u || path == NULL) return -1;
  gvfs_pathkey k;
  gvfs_pathkey_make(&k, path);
  int free_slot;
  gvfs_name_snap snap;
  bool ok;
  gvfs_u32 seen;
  return k.nwords ? gvfs_name_find(F, &k, &free_slot, &snap, &ok, &seen, (const gvfs_name_view *)0, true) : -1;
}

GVFS_COLD gvfs_name_snap gvfs_lookup_call(gvfs_ctx *ctx, const char *path, gvfs_u32 epoch) {
  gvfs_response r = gvfs_path_call(ctx, GVFS_OP_LOOKUP, path, 0);
  gvfs_name_snap s;
  s.epoch = epoch;
  if (r.result < 0) {
    s.file_no = 0; s.size = 0; s.mtime_ns = 0; s.mode = (gvfs_u32)(-r.result);
    // Only answers about the path itself are remembered for the epoch; a passing failure
    // (EMFILE, EIO, ...) leaves the entry unconfirmed, so the next open asks again.
    gvfs_i64 e = -r.result;
    if (e != GVFS_ENOENT && e != GVFS_ENOTDIR && e != GVFS_EACCES && e != GVFS_EISDIR && e != GVFS_ELOOP &&
        e != GVFS_ENAMETOOLONG && e != GVFS_EINVAL) s.epoch = 0;  // never current
    return s;
  }
  s.file_no = (gvfs_u64)r.result; s.size = r.aux[0]; s.mtime_ns = r.aux[1]; s.mode = (gvfs_u32)r.aux[2];
  return s;
}

// Publishes the reserved fd `slot` for a looked-up version, or hands it back and returns
// the negative entry's error.
GVFS_FN int gvfs_fd_for(gvfs_files *F, int slot, const gvfs_name_snap *s) {
  if (s->file_no == 0) { gvfs_fd_unreserve(F, slot); return -(int)s->mode; }
  return gvfs_fd_publish(F, slot, GVFS_FD_CACHED, -1, s->file_no, s->size, s->mtime_ns, s->mode);
}

// Read-only open through the name cache: answered on the GPU when the path was confirmed
// in this epoch; otherwise exactly one opener asks the host and the others wait for it.
// A hit is two memory round trips: the path's first words with the context's fields (the
// caller's copy `F`, loaded together), then the epoch, the path's first entry (state, path,
// answer) and the fd's first try, all in flight together. The entry's loads are issued
// before the CAS, whose acquire would hold back every load after it. (An acquire also
// empties the SM's L1: without the copy, each context field the open needs would be a
// dependent L2 round trip of its own.) `opens`: this SM's opens_on_device counter.
// `*name_idx`: the path's entry, for the open's hint (N5), or -1.
GVFS_FN int gvfs_open_cached(gvfs_ctx *ctx, gvfs_files *F, gvfs_u64 *opens, const char *path, const gvfs_pathkey &k,
                             int *name_idx) {
  *name_idx = -1;
  const bool named = F->nnames != 0u && k.nwords != 0u;
  gvfs_name_view first;
  if (named) gvfs_name_load(&F->names[gvfs_name_slot(F, &k, 0)], &k, false, &first);
  const gvfs_u32 epoch = gvfs_load_relaxed_dev(F->epoch);
  const gvfs_u32 start = gvfs_fd_start(F);
  bool reserved = gvfs_fd_try_start(F, start) == GVFS_FD_FREE;
  int slot = (int)start;
  if (!named) {
    if (!reserved && (slot = gvfs_fd_reserve_scan(F, start)) < 0) return -GVFS_EMFILE;
    gvfs_name_snap s = gvfs_lookup_call(ctx, path, epoch);
    return gvfs_fd_for(F, slot, &s);
  }
  gvfs_u32 ns = 64;
  for (gvfs_u32 round = 0;; ++round) {
    int free_slot;
    bool ok;
    gvfs_name_snap s;
    // Round 0 looks at the relaxed view; a view that says "ask the host" may be from before
    // another opener's answer, so every later round looks in order (acquire) before acting.
    const bool ordered = round != 0u;
    gvfs_u32 seen = 0;
    int idx = gvfs_name_find(F, &k, &free_slot, &s, &ok, &seen, &first, ordered);
    if (!reserved) {  // the start entry was taken: search on (as on Linux, no fd is EMFILE whatever the path)
      if ((slot = gvfs_fd_reserve_scan(F, start)) < 0) return -GVFS_EMFILE;
      reserved = true;
    }
    if (idx >= 0 && ok && s.epoch == epoch && epoch != 0u) {  // (N2; epoch 0: no launch yet)
      gvfs_fetch_add_u64_relaxed_dev(opens, 1);  // a plain add: no warp vote on the open path
      *name_idx = idx;
      return gvfs_fd_for(F, slot, &s);
    }
    if (!ordered) continue;
    if (idx >= 0) {
      // Unconfirmed as seen: take over exactly the version whose answer we saw. (A state
      // loaded again here could be a READY published since, whose answer is current: its
      // confirmer would ask the host a second time.)
      gvfs_nameent *e = &F->names[idx];
      if ((seen & 3u) == GVFS_NAME_READY &&
          gvfs_cas_acq_rel_dev(&e->state, seen, (seen & ~3u) | GVFS_NAME_BUSY) == seen) {
        s = gvfs_lookup_call(ctx, path, epoch);   // we confirm it for everybody
        gvfs_name_publish(e, &s);
        *name_idx = idx;
        return gvfs_fd_for(F, slot, &s);
      }
      gvfs_backoff(ns);                           // another opener is confirming it
      if (ns < 4096u) ns *= 2u;
      continue;
    }
    if (free_slot < 0) {                          // probe window full: not cached
      s = gvfs_lookup_call(ctx, path, epoch);
      return gvfs_fd_for(F, slot, &s);
    }
    gvfs_nameent *e = &F->names[free_slot];
    if (gvfs_cas_acq_rel_dev(&e->state, GVFS_NAME_EMPTY, GVFS_NAME_CLAIMED) != GVFS_NAME_EMPTY) continue;
    gvfs_store_relaxed_u64_dev(&e->hash, k.h);
    gvfs_store_relaxed_dev(&e->len, k.len);
    gvfs_u64 *ew = (gvfs_u64 *)e->path;
    for (gvfs_u32 j = 0; j < k.nwords; ++j) gvfs_store_relaxed_u64_dev(&ew[j], k.w[j]);
    gvfs_store_release_dev(&e->state, GVFS_NAME_BUSY);  // the path is readable from here on
    s = gvfs_lookup_call(ctx, path, epoch);
    gvfs_name_publish(e, &s);
    *name_idx = free_slot;
    return gvfs_fd_for(F, slot, &s);
  }
}

// ---- the open's hint: the path's address -> its name-cache entry ----
// A repeated open of one path is mostly an open through one pointer (a thread's path
// string, a table of paths). Each open looks up a hint word by the path's address (a table
// of GVFS_NAME_HINTS in the context's allocation, context.cuh): the name-cache index the last
// open through an address that hashes there found, under a tag of the address's hash.
// With a hint, the open checks the entry against the path's bytes themselves and skips the
// key: building it is a lone thread's longest dependent chain of arithmetic on the open's
// path, ~90 instructions a word (SASS, sm_90). The hint's load goes out with the path's first
// words and the context's fields; the entry's loads, the epoch and the fd's CAS go out
// together after them, as on the keyed path.
//   N5  A hint is only a guess: nothing trusts it. The entry it names is used only if its
//       len (L, >= 1) and path words, loaded relaxed, match the path's own bytes 0..L, the
//       path's bytes below L hold no NUL, and its answer is whole and current (N1, N2). A
//       relaxed view can show len and each path word either as 0 (from before the entry's
//       path was written; entries are zeroed at allocation) or as their one final value
//       (N3, N4). A view with len 0 is refused; with a path word 0 where the path's is not,
//       the path's bytes below L (nonzero: no NUL) differ from it. So a match is a match
//       with the entry's path as written: the path is that entry's. Anything else (no hint,
//       another tag, a path too long for its first words, an answer not current) takes the
//       keyed path (gvfs_open_cached), which then leaves its entry's index as the hint. A
//       stale or raced hint costs one extra round trip, never a wrong answer.
// A path in a stack array has the same address in every thread (each its own bytes): there
// the thread's number is hashed in too, so that threads do not take turns at one hint.
GVFS_FN gvfs_u32 *gvfs_name_hint_of(gvfs_ctx *ctx, const char *path, gvfs_u32 *tag) {
  gvfs_u64 a = (gvfs_u64)path;
  if (gvfs_is_local(path)) a ^= gvfs_global_tid() << 32;
  const gvfs_u64 x = a * 0x9E3779B97F4A7C15ull;
  *tag = (gvfs_u32)(x >> 20) & ~GVFS_HINT_INDEX_MASK;  // bits 40..51 of the hash, in the word's top 12
  return gvfs_ctx_hints(ctx) + (gvfs_u32)(x >> (64u - GVFS_NAME_HINT_BITS));
}

// The mask of a word's low n bytes, n clamped to 0..8; no branch (a lone thread pays for
// each one on the open's path).
GVFS_FN gvfs_u64 gvfs_low_bytes(gvfs_i32 n) {
  const gvfs_u32 c = (gvfs_u32)(n < 0 ? 0 : n > 8 ? 8 : n);
  return ((1ull << (8u * (c & 7u))) - 1ull) | (0ull - (gvfs_u64)(c >> 3));
}

// The open through hint `hv` (N5): true with *fd set when the hint answered it (an fd, or
// the current negative answer's -errno), false when the keyed path must. A reservation it
// made is handed back before it returns false.
GVFS_FN bool gvfs_open_hinted(gvfs_files *F, gvfs_u64 *opens, const gvfs_pathblock *b, gvfs_u32 hv, gvfs_u32 tag,
                              int *fd) {
  const gvfs_u32 idx = (hv & GVFS_HINT_INDEX_MASK) - 1u;  // no hint (0): ~0u, past any table
  if ((hv & ~GVFS_HINT_INDEX_MASK) != tag || idx >= F->nnames) return false;
  const gvfs_nameent *e = &F->names[idx];
  const gvfs_u64 *ew = (const gvfs_u64 *)e->path;
  const gvfs_u32 len = gvfs_load_relaxed_dev(&e->len);
  gvfs_u64 w[4], p[4];
  GVFS_UNROLL
  for (gvfs_u32 u = 0; u < 4u; ++u) {
    w[u] = gvfs_load_relaxed_u64_dev(&e->answer[u]);
    p[u] = gvfs_load_relaxed_u64_dev(&ew[u]);
  }
  const gvfs_u32 epoch = gvfs_load_relaxed_dev(F->epoch);
  const gvfs_u32 start = gvfs_fd_start(F);
  const bool reserved = gvfs_fd_try_start(F, start) == GVFS_FD_FREE;  // after the loads: its acquire holds later ones
  // The path's word u is its bytes 8u .. 8u+7 (past the loaded words: 0, and never used,
  // since the path and its NUL must lie within them). Compared under a mask of bytes 0..L
  // (the entry's words past its NUL are 0, and never written), and checked for a NUL below L.
  const gvfs_u32 sh = 8u * b->off;
  gvfs_u64 diff = 0;
  GVFS_UNROLL
  for (gvfs_u32 u = 0; u < 4u; ++u) {
    const gvfs_u64 hi = u + 1u < 4u ? b->w[u + 1u] : 0ull;
    const gvfs_u64 c = sh ? (b->w[u] >> sh) | (hi << (64u - sh)) : b->w[u];
    const gvfs_i32 r = (gvfs_i32)len - (gvfs_i32)(8u * u);
    const gvfs_u64 below = gvfs_low_bytes(r), upto = gvfs_low_bytes(r + 1);  // bytes below L; and the NUL's
    diff |= (gvfs_zero_bytes(c) & below) | ((c & upto) ^ p[u]);
  }
  gvfs_name_snap s;
  const bool whole = gvfs_snap_unpack(w, &s);
  if (len == 0u || len >= 8u * b->nw - b->off || diff != 0ull || !whole || s.epoch != epoch || epoch == 0u) {
    if (reserved) gvfs_fd_unreserve(F, (int)start);
    return false;
  }
  const int slot = reserved ? (int)start : gvfs_fd_reserve_scan(F, start);
  if (slot < 0) { *fd = -GVFS_EMFILE; return true; }
  gvfs_fetch_add_u64_relaxed_dev(opens + (GVFS_C_OPENS_HINTED - GVFS_C_OPENS_ON_DEVICE), 1);
  *fd = gvfs_fd_for(F, slot, &s);
  return true;
}

// An open the host answers (a HOST fd: any flags but O_RDONLY, or the cache off).
GVFS_COLD int gvfs_open_host(gvfs_ctx *ctx, const char *path, int flags) {
  gvfs_response r = gvfs_path_call(ctx, GVFS_OP_OPEN, path, (gvfs_u32)flags);
  if (r.result < 0) return (int)r.result;
  // A HOST fd keeps its path's name-cache entry (+1; 0: none) in file_no, to forget it
  // again after each write.
  int idx = (flags & (GVFS_O_ACCMODE | GVFS_O_CREAT | GVFS_O_TRUNC)) != 0 ? gvfs_name_index(&ctx->files, path) : -1;
  gvfs_name_forget(&ctx->files, idx);
  int fd = gvfs_fd_alloc(ctx, GVFS_FD_HOST, (gvfs_i32)r.result, (gvfs_u64)(idx + 1), r.aux[0], r.aux[1], 0);
  if (fd < 0) gvfs_hostcall(&ctx->lanes, GVFS_OP_CLOSE, (gvfs_i32)r.result, 0, 0, 0);
  return fd;
}

// Inline: the open answered from the name cache is a chain of L2 round trips that a call
// made slower (H100, A/B in one run: 1.26 -> 1.75 us, the called open spilling).
GVFS_FN int gvfs_open(gvfs_ctx *ctx, const char *path, int flags) {
  if (path == NULL) return -GVFS_EFAULT;
  // The fields the open needs (they do not change during a kernel) and the path's first
  // words, in one batch of loads: nothing here waits for anything else here.
  gvfs_files F = ctx->files;
  const bool cache_on = gvfs_cache_on(ctx);
  gvfs_u64 *opens = gvfs_counter(ctx, GVFS_C_OPENS_ON_DEVICE);
  if (flags == GVFS_O_RDONLY) {
    gvfs_pathkey k;
    int idx;
#ifdef GVFS_PATH_EXACT_READS
    gvfs_pathkey_make(&k, path);  // no hints: their check reads the path's words past its NUL
    if (cache_on) return gvfs_open_cached(ctx, &F, opens, path, k, &idx);
#else
    gvfs_u32 tag;
    gvfs_u32 *hint = gvfs_name_hint_of(ctx, path, &tag);
    const gvfs_u32 hv = gvfs_load_relaxed_dev(hint);
    gvfs_pathblock b;
    gvfs_pathblock_load(path, &b);
    int fd;
    if (cache_on && gvfs_open_hinted(&F, opens, &b, hv, tag, &fd)) return fd;
    gvfs_pathkey_from(&k, &b);
    if (cache_on) {
      fd = gvfs_open_cached(ctx, &F, opens, path, k, &idx);
      const gvfs_u32 nv = tag | ((gvfs_u32)idx + 1u);
      if (idx >= 0 && (gvfs_u32)idx < GVFS_HINT_INDEX_MASK && k.nwords <= 4u && nv != hv)
        gvfs_store_relaxed_dev(hint, nv);  // N5: a guess for the next open through this address
      return fd;
    }
#endif
  }
  return gvfs_open_host(ctx, path, flags);
}

GVFS_COLD long gvfs_pread(gvfs_ctx *ctx, int fd, void *buf, unsigned long n, unsigned long off) {
  gvfs_fd_view v;
  if (!gvfs_fd_view_of(ctx, fd, &v)) return -GVFS_EBADF;
  if (off > 0x7fffffffffffffffull || n > 0x7fffffffffffffffull - off) return -GVFS_EINVAL;
  if (v.kind == GVFS_FD_CACHED) return gvfs_cache_pread_group(ctx, v.file_no, v.size, v.next_off, buf, n, off);
  return gvfs_pread_hostcall(ctx, v.host_fd, buf, n, off);
}

// Warp-collective pread: every lane of a full warp passes the same arguments and gets
// the same result, and on return every lane sees the bytes read; the warp copies together
// and coalesces its misses (filecache.cuh).
GVFS_FN long gvfs_pread_warp(gvfs_ctx *ctx, int fd, void *buf, unsigned long n, unsigned long off) {
  // Lane 0 reads the fd entry and the warp takes its view, so every lane takes the same
  // path even if the fd is closed meanwhile (the collectives below need the whole warp).
  // The warp fills one buffer together, so it must be one every lane can address: a stack
  // array is its lane's alone (the same address names each lane's own). Read those with
  // gvfs_pread. (Reading per lane here instead, even out of line, took the warp read
  // kernel's spills from 52 to 156 bytes: ptxas, sm_90, 128 registers.)
  if (gvfs_is_local(buf)) return -GVFS_EFAULT;
  // The page table's fields and the counters' address, loaded now with the fd's fields (one
  // batch, one round trip) rather than each after the last (filecache.cuh).
  const gvfs_pagetable pt = ctx->pt;
  gvfs_u64 *const counters = gvfs_counter(ctx, 0);
  const gvfs_u32 FULL = 0xffffffffu;
  gvfs_u32 kind = 0, host_fd = 0;
  gvfs_u64 file_no = 0, size = 0;
  if (gvfs_lane_id() == 0) {
    gvfs_fd_view v;
    if (gvfs_fd_view_of(ctx, fd, &v)) { kind = v.kind; host_fd = (gvfs_u32)v.host_fd; file_no = v.file_no; size = v.size; }
  }
  kind = gvfs_shfl_u32(FULL, kind, 0);
  host_fd = gvfs_shfl_u32(FULL, host_fd, 0);
  file_no = gvfs_shfl_u64(FULL, file_no, 0);
  size = gvfs_shfl_u64(FULL, size, 0);
  if (kind == 0) return -GVFS_EBADF;
  if (off > 0x7fffffffffffffffull || n > 0x7fffffffffffffffull - off) return -GVFS_EINVAL;
  if (kind == GVFS_FD_CACHED) return gvfs_cache_pread_warp_at(ctx, &pt, counters, file_no, size, buf, n, off);
  long r = 0;
  if (gvfs_lane_id() == 0) r = gvfs_pread_hostcall(ctx, (int)host_fd, buf, n, off);
  gvfs_syncwarp(FULL);  // lane 0's bytes in buf, seen by every lane, as the cached path's are
  return (long)gvfs_shfl_u64(FULL, (gvfs_u64)r, 0);
}

GVFS_COLD long gvfs_pwrite(gvfs_ctx *ctx, int fd, const void *buf, unsigned long n, unsigned long off) {
  gvfs_fdent *e = gvfs_fd_get(ctx, fd);
  if (!e || e->kind != GVFS_FD_HOST) return -GVFS_EBADF;  // cached fds are read-only
  long r = gvfs_pwrite_hostcall(ctx, e->host_fd, buf, n, off);
  if (r > 0) gvfs_name_forget(&ctx->files, (int)e->file_no - 1);
  return r;
}

GVFS_COLD int gvfs_fstat(gvfs_ctx *ctx, int fd, gvfs_stat *st) {
  if (st == NULL) return -GVFS_EFAULT;
  gvfs_fdent *e = gvfs_fd_get(ctx, fd);
  if (!e) return -GVFS_EBADF;
  if (e->kind == GVFS_FD_CACHED) {
    st->size = e->size; st->mtime_ns = e->mtime_ns; st->mode = e->mode; st->reserved = 0;
    return 0;
  }
  gvfs_response r = gvfs_hostcall(&ctx->lanes, GVFS_OP_FSTAT, e->host_fd, 0, 0, 0);
  if (r.result < 0) return (int)r.result;
  st->size = r.aux[0]; st->mtime_ns = r.aux[1]; st->mode = (gvfs_u32)r.aux[2]; st->reserved = 0;
  return 0;
}

GVFS_COLD int gvfs_close(gvfs_ctx *ctx, int fd) {
  gvfs_fdent *e = gvfs_fd_get(ctx, fd);
  if (!e) return -GVFS_EBADF;
  gvfs_u32 kind = e->kind;
  gvfs_i32 host_fd = e->host_fd;
  // Release: our reads of the entry happen before the next owner's writes (its CAS
  // acquires). No acquire: nothing after reads the entry, and an acquire would empty the
  // SM's L1, which the next open's loads of ctx would then miss.
  if (gvfs_cas_release_dev(&e->state, GVFS_FD_OPEN, GVFS_FD_FREE) != GVFS_FD_OPEN) return -GVFS_EBADF;
  if (kind == GVFS_FD_HOST) return (int)gvfs_hostcall_result(&ctx->lanes, GVFS_OP_CLOSE, host_fd, 0, 0, 0);
  return 0;
}

GVFS_COLD int gvfs_fsync(gvfs_ctx *ctx, int fd) {
  gvfs_fdent *e = gvfs_fd_get(ctx, fd);
  if (!e) return -GVFS_EBADF;
  if (e->kind == GVFS_FD_CACHED) return 0;  // nothing of a read-only fd to make durable
  return (int)gvfs_hostcall_result(&ctx->lanes, GVFS_OP_FSYNC, e->host_fd, 0, 0, 0);
}

// A hostcall that does nothing: what benchmarks and health checks time.
GVFS_FN long gvfs_nop(gvfs_ctx *ctx) { return (long)gvfs_hostcall_result(&ctx->lanes, GVFS_OP_NOP, -1, 0, 0, 0); }
