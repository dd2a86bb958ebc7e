// gpuvfs file cache: reads answered from the pool of page slots in device memory.
//
// Hit path: pin the slot (pagetable.cuh), copy on the GPU, unpin. Miss path: claim the slot
// (FILLING), issue ONE hostcall (GVFS_OP_FILL) that reads the page(s) from the host file
// into the lane's payload buffer in pinned host memory, copy them into the slot(s), mark
// them VALID. Every other thread that wants the same page pins the FILLING slot and waits
// for that one fill. Misses of a warp for neighbouring pages go out as one FILL (one
// request per run of consecutive missing pages), and a per-thread sequential reader has the
// next pages filled with its miss (readahead, bounded by readahead_pages and the lane size).
// When every slot of a set is busy (FULL), the read goes around the cache through a FILL
// straight into the caller's buffer: a miss never waits for cache space.
#pragma once
#include "port.cuh"
#include "hostcall.cuh"
#include "context.cuh"
#include "copy.cuh"
#include "pagetable.cuh"

#define GVFS_MAX_READAHEAD 16u

// One FILL: bytes [off, off+len) of file version `file_no` into the lane's buffer; with
// `pushed`, a FILL_PUSH: the host then copies them on into the lane's device-memory stage
// (ctx->fill_stage) with one DMA before it answers. The caller holds the lane `c`. Returns
// bytes read (short at end of file) or -errno.
GVFS_FN gvfs_i64 gvfs_fill_call(gvfs_ctx *ctx, gvfs_lanes *L, gvfs_claim &c, gvfs_u64 file_no, gvfs_u64 off,
                                gvfs_u64 len, bool pushed = false) {
  gvfs_lane_post(L, c, pushed ? GVFS_OP_FILL_PUSH : GVFS_OP_FILL, 0, -1, 0, off, len, file_no);
  gvfs_count(ctx, GVFS_C_FILLS, 1);
  if (pushed) gvfs_count(ctx, GVFS_C_FILLS_PUSHED, 1);
  return gvfs_lane_wait_result(L, c, len, gvfs_wait_cap_ns(len));
}

// Whether a fill of `len` bytes is pushed (FILL_PUSH): the host's copy engine moves the
// bytes into device memory in one DMA and the GPU copies them on from there, instead of
// pulling them across PCIe itself (a warp's loads move ~4.5 GB/s; a DMA runs at PCIe
// speed). A small fill costs the host a copy call and a wait longer than the pull.
// ctx->fill_push_bytes: Runtime(fill_push_bytes=...); 0 (no stage): never.
GVFS_FN bool gvfs_fill_pushed(gvfs_u32 push_min, gvfs_u64 len) { return push_min != 0u && len >= push_min; }

// Where the bytes of a fill on `lane` are once answered: its stage in device memory if
// pushed, else its buffer in pinned host memory.
GVFS_FN const gvfs_u8 *gvfs_fill_src(gvfs_ctx *ctx, gvfs_lanes *L, gvfs_u32 lane, bool pushed) {
  return pushed ? ctx->fill_stage + (gvfs_u64)lane * L->data_bytes : gvfs_lane_data(L, lane);
}

// Reads around the cache: FILLs straight into `buf`, a lane buffer at a time.
GVFS_FN gvfs_i64 gvfs_read_around(gvfs_ctx *ctx, gvfs_u64 file_no, gvfs_u8 *buf, gvfs_u64 n, gvfs_u64 off) {
  gvfs_lanes l = ctx->lanes, *L = &l;  // in registers (see gvfs_lane_claim)
  gvfs_u64 done = 0;
  while (done < n) {
    gvfs_u64 chunk = n - done < L->data_bytes ? n - done : L->data_bytes;
    gvfs_claim c = gvfs_lane_claim(L);
    gvfs_i64 got = gvfs_fill_call(ctx, L, c, file_no, off + done, chunk);
    if (got > 0 && buf) gvfs_copy_alone(buf + done, gvfs_lane_data(L, c.lane), (gvfs_u64)got);
    gvfs_lane_release(L, c);
    if (got < 0) return done ? (gvfs_i64)done : got;
    done += (gvfs_u64)got;
    if ((gvfs_u64)got < chunk) break;
  }
  return (gvfs_i64)done;
}

// Fills the claimed slots of `npages` consecutive pages starting at `page0` with one FILL,
// and publishes each (VALID, or EMPTY for pages the host could not supply). Returns the
// FILL's result (bytes or -errno); *first_ok: the first page was filled.
GVFS_FN gvfs_i64 gvfs_fill_run(gvfs_ctx *ctx, gvfs_pagetable *pt, gvfs_u64 file_no, gvfs_u64 size, gvfs_u64 page0,
                               const gvfs_u32 *slots, gvfs_u32 npages, bool *first_ok) {
  gvfs_lanes l = ctx->lanes, *L = &l;
  const gvfs_u64 psz = 1ull << pt->page_shift;
  const gvfs_u64 off = page0 << pt->page_shift;
  gvfs_u64 len = (gvfs_u64)npages * psz;
  if (len > size - off) len = size - off;
  gvfs_claim c = gvfs_lane_claim(L);
  const bool push = gvfs_fill_pushed(ctx->fill_push_bytes, len);
  gvfs_i64 got = gvfs_fill_call(ctx, L, c, file_no, off, len, push);
  const gvfs_u8 *src = gvfs_fill_src(ctx, L, c.lane, push);
  for (gvfs_u32 i = 0; i < npages; ++i) {
    gvfs_u64 start = (gvfs_u64)i * psz;
    gvfs_u64 want = len - start < psz ? len - start : psz;
    bool ok = got >= 0 && (gvfs_u64)got >= start + want;  // a short fill: the file shrank
    if (ok) gvfs_copy_alone(gvfs_pt_page(pt, slots[i]), src + start, want);
    gvfs_pt_fill_done(pt, slots[i], ok);
    if (i == 0) *first_ok = ok;
  }
  gvfs_lane_release(L, c);
  return got;
}

// Per-thread read through the cache. `next_off` is the fd's sequential-read hint.
GVFS_COLD long gvfs_cache_pread(gvfs_ctx *ctx, gvfs_u64 file_no, gvfs_u64 size, gvfs_u64 *next_off,
                              void *buf_, unsigned long n, unsigned long off) {
  // The page table, the counters and the fd's hint in one batch of loads up front: after
  // the page table's first acquire each would be a round trip to L2 of its own.
  gvfs_pagetable ptc = ctx->pt, *pt = &ptc;  // in registers (a pointer into ctx would be a load per use)
  gvfs_u64 *const counters = gvfs_counter(ctx, 0);
  const gvfs_u64 hint = next_off ? gvfs_load_relaxed_u64_dev(next_off) : ~0ull;
  gvfs_u8 *buf = (gvfs_u8 *)buf_;
  if (off >= size || n == 0) return 0;
  if (n > size - off) n = size - off;
  const gvfs_u32 shift = pt->page_shift;
  const gvfs_u64 psz = 1ull << shift;
  // Page numbers are 40 bits of the key: pages beyond (petabytes in) are read around.
  if (((off + n - 1) >> shift) >> GVFS_PAGE_BITS) return (long)gvfs_read_around(ctx, file_no, buf, n, off);
  const bool sequential = hint == off;
  gvfs_u32 ra = ctx->readahead_pages;
  gvfs_u32 lane_pages = (gvfs_u32)(ctx->lanes.data_bytes >> shift);
  if (ra + 1u > lane_pages) ra = lane_pages ? lane_pages - 1u : 0u;
  if (ra > GVFS_MAX_READAHEAD - 1u) ra = GVFS_MAX_READAHEAD - 1u;
  unsigned long done = 0;
  while (done < n) {
    gvfs_u64 pos = off + done, page = pos >> shift, in = pos & (psz - 1u);
    gvfs_u64 len = n - done < psz - in ? n - done : psz - in;
    gvfs_u32 slot, kind;
    bool evicted;
    gvfs_pt_result r = gvfs_pt_acquire(pt, gvfs_pt_key(file_no, page), &slot, &evicted, &kind);
    if (evicted) gvfs_count_dev(counters + GVFS_C_EVICTIONS, 1);
    bool readable = true;
    if (r == GVFS_PT_MISS) {
      gvfs_count_dev(counters + GVFS_C_CACHE_MISSES, 1);
      gvfs_u32 run[GVFS_MAX_READAHEAD];
      gvfs_u32 nrun = 1;
      run[0] = slot;
      if (sequential && psz <= ctx->lanes.data_bytes) {
        for (gvfs_u32 k = 1; k <= ra && ((page + k) << shift) < size; ++k) {
          gvfs_u32 s2, k2;
          gvfs_pt_result r2 = gvfs_pt_acquire(pt, gvfs_pt_key(file_no, page + k), &s2, &evicted, &k2);
          if (evicted) gvfs_count_dev(counters + GVFS_C_EVICTIONS, 1);
          if (r2 == GVFS_PT_MISS) { run[nrun++] = s2; continue; }
          if (r2 == GVFS_PT_HIT) gvfs_pt_unpin(pt, s2);
          break;
        }
        if (nrun > 1) gvfs_count_dev(counters + GVFS_C_READAHEADS, nrun - 1u);
      }
      bool filled = false;
      gvfs_i64 got = gvfs_fill_run(ctx, pt, file_no, size, page, run, nrun, &filled);
      for (gvfs_u32 k = 1; k < nrun; ++k) gvfs_pt_unpin(pt, run[k]);
      if (got < 0) { gvfs_pt_unpin(pt, slot); return done ? (long)done : (long)got; }
      // The filler knows its own page's fate (and wrote its bytes): no load of the state.
      readable = filled;
    } else if (r == GVFS_PT_HIT) {
      const bool was_filling = kind == GVFS_SLOT_FILLING;  // the pin saw the state: no reload
      gvfs_count_dev(counters + (was_filling ? GVFS_C_FILL_WAITS : GVFS_C_CACHE_HITS), 1);
      readable = !was_filling || gvfs_pt_wait_filled(pt, slot);
    } else {
      readable = false;
    }
    if (!readable) {  // FULL, or a fill that failed: read this piece around the cache
      if (r != GVFS_PT_FULL) gvfs_pt_unpin(pt, slot);
      gvfs_i64 got = gvfs_read_around(ctx, file_no, buf ? buf + done : (gvfs_u8 *)0, len, pos);
      if (got < 0) return done ? (long)done : (long)got;
      done += (unsigned long)got;
      if ((gvfs_u64)got < len) break;
      continue;
    }
    if (buf) gvfs_copy_alone(buf + done, gvfs_pt_page(pt, slot) + in, len);
    if (r == GVFS_PT_HIT) gvfs_count_dev(counters + GVFS_C_BYTES_HIT, len);
    gvfs_pt_unpin(pt, slot);
    done += len;
  }
  // The hint is shared by every thread reading through the fd: write it only when it moves
  // (from what it was when this read began: a racy guess either way, and no reload).
  if (next_off && hint != off + done) gvfs_store_relaxed_u64_dev(next_off, off + done);
  return (long)done;
}

// Per-thread reads by lanes that are here together (gvfs_coalesced_lanes): each lane looks
// up its own page at once, and a lane whose whole read lies in one resident page is served
// by the group: every lane copies a share of each such read, so a warp instruction moves
// 512 contiguous bytes. Alone, a thread streams its page 16 bytes a load, uncoalesced, a
// 4 KiB page in 32 dependent rounds of loads. Every other read (a miss, a page still
// filling, a read across pages, a read into a stack array, which only its own thread can
// address) then goes the per-thread way, alone.
GVFS_FN long gvfs_cache_pread_group(gvfs_ctx *ctx, gvfs_u64 file_no, gvfs_u64 size, gvfs_u64 *next_off,
                                    void *buf_, unsigned long n, unsigned long off) {
  const gvfs_u32 group = gvfs_coalesced_lanes();
  if ((group & (group - 1u)) == 0u) return gvfs_cache_pread(ctx, file_no, size, next_off, buf_, n, off);
  gvfs_pagetable ptc = ctx->pt, *pt = &ptc;  // in registers (a pointer into ctx would be a load per use)
  gvfs_u64 *const counters = gvfs_counter(ctx, 0);
  gvfs_u8 *buf = (gvfs_u8 *)buf_;
  const gvfs_u32 shift = pt->page_shift;
  const gvfs_u64 psz = 1ull << shift;
  gvfs_u64 len = 0, in = 0;
  gvfs_u32 slot = 0;
  bool hit = false;
  if (off < size && n != 0 && !gvfs_is_local(buf)) {
    len = n < size - off ? n : size - off;
    in = off & (psz - 1u);
    const gvfs_u64 page = off >> shift;
    if (in + len <= psz && (page >> GVFS_PAGE_BITS) == 0) {
      gvfs_u32 kind;
      const int s = gvfs_pt_lookup(pt, gvfs_pt_key(file_no, page), &kind);
      if (s >= 0) {
        if (kind == GVFS_SLOT_VALID || kind == GVFS_SLOT_DIRTY) { hit = true; slot = (gvfs_u32)s; }
        else gvfs_pt_unpin(pt, (gvfs_u32)s);  // still filling: the per-thread path waits for it
      }
    }
  }
  const gvfs_u32 hits = gvfs_ballot(group, hit);
  if (hits != 0u) {
    const gvfs_u32 me = gvfs_lane_id();
    const gvfs_u32 rank = gvfs_popc(group & ((1u << me) - 1u)), nlanes = gvfs_popc(group);
    const gvfs_u64 src = hit ? (gvfs_u64)(gvfs_pt_page(pt, slot) + in) : 0ull;
    gvfs_u64 bytes = 0;
    gvfs_syncwarp(group);  // each page's bytes after its pinner's acquire, for every lane that copies them (P5)
    for (gvfs_u32 ls = hits; ls != 0u; ls &= ls - 1u) {
      const int l = gvfs_ctz(ls);
      const gvfs_u8 *s = (const gvfs_u8 *)gvfs_shfl_u64(group, src, l);
      gvfs_u8 *d = (gvfs_u8 *)gvfs_shfl_u64(group, (gvfs_u64)buf, l);
      const gvfs_u64 m = gvfs_shfl_u64(group, len, l);
      if (d) gvfs_copy_warp_dev(d, s, m, rank, nlanes);
      bytes += m;
    }
    // Every share of every page is read before its owner unpins it (P1): the barrier
    // orders the group's loads before the owners' release below.
    gvfs_syncwarp(group);
    if (me == (gvfs_u32)gvfs_ctz(hits)) {  // one lane counts for the group
      gvfs_count_sum_at(counters, GVFS_C_CACHE_HITS, gvfs_popc(hits));
      gvfs_count_sum_at(counters, GVFS_C_BYTES_HIT, bytes);
    }
  }
  if (!hit) return gvfs_cache_pread(ctx, file_no, size, next_off, buf_, n, off);
  gvfs_pt_unpin(pt, slot);
  // The readahead hint (shared by every reader of the fd) moves only for a sequential
  // reader: random hits leave its cache line alone.
  if (next_off && gvfs_load_relaxed_u64_dev(next_off) == off) gvfs_store_relaxed_u64_dev(next_off, off + len);
  return (long)len;
}

// Warp-collective read through the cache, the general way (gvfs_cache_pread_warp tries
// the all-resident case first, inline): all lanes of a full warp pass the same
// arguments. Each round takes up to 32 pages, one per lane; runs of consecutive missing
// pages go out as one FILL each (issued by the run's first lane), and the whole warp
// copies every page, 512 bytes per instruction.
// (Unlike the per-thread paths, this one reads the page table's fields through ctx: a
// copy in registers, loaded with the fd's fields, measured slower on the H100 when this
// path was inlined in every warp read (4 KiB warp hits 1,060 -> 980 GB/s): at the
// 128-register cap the copy's registers cost spills. The inline hit path before it does
// take such a copy, and gains by it.)
// If the hit path before it copied a page that turned out to hold another key, this path
// writes every byte of buf again; past a short count or an error, buf's bytes are
// unspecified (as read(2)'s), and may be that other page's.
GVFS_COLD long gvfs_cache_pread_warp_any(gvfs_ctx *ctx, gvfs_u64 file_no, gvfs_u64 size,
                                         void *buf_, unsigned long n, unsigned long off) {
  gvfs_pagetable *pt = &ctx->pt;
  gvfs_lanes *L = &ctx->lanes;
  gvfs_u8 *buf = (gvfs_u8 *)buf_;
  const gvfs_u32 FULL = 0xffffffffu;
  const gvfs_u32 me = gvfs_lane_id();
  if (off >= size || n == 0) return 0;
  if (n > size - off) n = size - off;
  const gvfs_u32 shift = pt->page_shift;
  const gvfs_u64 psz = 1ull << shift;
  if (((off + n - 1) >> shift) >> GVFS_PAGE_BITS) {  // beyond 40-bit page numbers: around the cache
    long r = 0;
    if (me == 0) r = (long)gvfs_read_around(ctx, file_no, buf, n, off);
    gvfs_syncwarp(FULL);  // lane 0's bytes in buf, seen by every lane (as after the copies below)
    return (long)gvfs_shfl_u64(FULL, (gvfs_u64)r, 0);
  }
  gvfs_u32 maxrun = (gvfs_u32)(L->data_bytes >> shift);
  if (maxrun == 0) maxrun = 1;  // (the runtime keeps lane_bytes >= page_size)
  unsigned long done = 0;
  gvfs_i64 err = 0;
  while (done < n && err == 0) {
    const gvfs_u64 pos0 = off + done;
    const gvfs_u64 page0 = pos0 >> shift;
    const gvfs_u64 last_page = (off + n - 1) >> shift;
    const gvfs_u64 npages = last_page - page0 + 1 < 32 ? last_page - page0 + 1 : 32;
    const bool mine = me < npages;
    gvfs_u32 slot = 0, kind = 0;
    gvfs_pt_result r = GVFS_PT_FULL;
    if (mine) {
      bool evicted;
      r = gvfs_pt_acquire(pt, gvfs_pt_key(file_no, page0 + me), &slot, &evicted, &kind);
      if (evicted) gvfs_count(ctx, GVFS_C_EVICTIONS, 1);
      if (r == GVFS_PT_MISS) gvfs_count(ctx, GVFS_C_CACHE_MISSES, 1);
    }
    // Runs of consecutive misses, cut every maxrun pages: each run's first lane fills it.
    gvfs_u32 miss = gvfs_ballot(FULL, mine && r == GVFS_PT_MISS);
    gvfs_u32 run_start = me;
    while (run_start > 0 && (miss >> (run_start - 1)) & 1u) --run_start;
    bool leader = ((miss >> me) & 1u) && ((me - run_start) % maxrun == 0);
    gvfs_u32 run_len = 0;
    if (leader) {
      while (me + run_len < 32 && run_len < maxrun && ((miss >> (me + run_len)) & 1u)) ++run_len;
    }
    // The runs are filled in batches: in each, the leaders that could take a lane WITHOUT
    // waiting fill their runs, the warp copies them, the owners publish, the lanes go back.
    // A leader never holds a lane while the warp waits for another leader to find one (that
    // hold-and-wait across warps could take every lane and deadlock).
    const gvfs_u32 my_leader = (mine && r == GVFS_PT_MISS) ? run_start + ((me - run_start) / maxrun) * maxrun : me;
    gvfs_u32 todo = gvfs_ballot(FULL, leader);
    gvfs_u32 wait_ns = 64;
    while (todo != 0u) {
      gvfs_claim hc;
      hc.lane = 0;
      bool have = ((todo >> me) & 1u) && gvfs_lane_try_claim(L, &hc);
      const gvfs_u32 batch = gvfs_ballot(FULL, have);
      if (batch == 0u) {  // every lane busy: wait holding none
        gvfs_backoff(wait_ns);
        if (wait_ns < 8192u) wait_ns *= 2u;
        continue;
      }
      gvfs_i64 got = 0;
      bool pushed = false;
      if (have) {  // (computed here, not kept live across the loop: registers, see above)
        const gvfs_u64 foff = (page0 + me) << shift;
        gvfs_u64 flen = (gvfs_u64)run_len * psz;
        if (flen > size - foff) flen = size - foff;
        pushed = gvfs_fill_pushed(ctx->fill_push_bytes, flen);
        got = gvfs_fill_call(ctx, L, hc, file_no, foff, flen, pushed);
      }
      gvfs_syncwarp(FULL);  // the leaders' acquire of their answers, before anyone reads them
      // The whole warp copies each run of the batch into the slots: from the leader's stage
      // in device memory (pushed) or from its lane buffer across PCIe (pulled).
      const gvfs_u32 pushes = gvfs_ballot(FULL, pushed);
      for (gvfs_u32 ls = batch; ls != 0u; ls &= ls - 1u) {
        const int l = gvfs_ctz(ls);
        gvfs_u32 l_lane = gvfs_shfl_u32(FULL, hc.lane, l);
        gvfs_i64 l_got = (gvfs_i64)gvfs_shfl_u64(FULL, (gvfs_u64)got, l);
        gvfs_u32 l_len = gvfs_shfl_u32(FULL, run_len, l);
        const gvfs_u8 *src = gvfs_fill_src(ctx, L, l_lane, (pushes >> l) & 1u);
        for (gvfs_u32 j = 0; j < l_len; ++j) {
          gvfs_u32 s = gvfs_shfl_u32(FULL, slot, l + (int)j);
          gvfs_u64 start = (gvfs_u64)j * psz;
          gvfs_u64 page_off = (page0 + l + j) << shift;
          gvfs_u64 want = size - page_off < psz ? size - page_off : psz;
          if (l_got >= 0 && (gvfs_u64)l_got >= start + want) gvfs_copy_warp(gvfs_pt_page(pt, s), src + start, want, me, 32);
        }
      }
      gvfs_syncwarp(FULL);  // the copies are done (and ordered) before the owners publish
      // Each missing page of this batch: its owner learns the run's result and publishes.
      const gvfs_i64 l_got = (gvfs_i64)gvfs_shfl_u64(FULL, (gvfs_u64)got, (int)my_leader);
      if (mine && r == GVFS_PT_MISS && ((batch >> my_leader) & 1u)) {
        gvfs_u64 start = (gvfs_u64)(me - my_leader) * psz;
        gvfs_u64 page_off = (page0 + me) << shift;
        gvfs_u64 want = size - page_off < psz ? size - page_off : psz;
        gvfs_pt_fill_done(pt, slot, l_got >= 0 && (gvfs_u64)l_got >= start + want);
      }
      if (have) gvfs_lane_release(L, hc);
      todo &= ~batch;
    }
    // Hits wait for fills in flight elsewhere; a slot that is not readable is read around.
    bool readable = false;
    if (mine && r == GVFS_PT_HIT) {
      const bool was_filling = kind == GVFS_SLOT_FILLING;
      readable = !was_filling || gvfs_pt_wait_filled(pt, slot);
    } else if (mine && r == GVFS_PT_MISS) {
      readable = gvfs_slot_kind(gvfs_load_acquire_dev(&pt->state[slot])) == GVFS_SLOT_VALID;
    }
    gvfs_i64 my_err = 0;
    gvfs_u64 my_pos = mine ? ((page0 + me) << shift) : 0;
    gvfs_u64 my_lo = mine ? (my_pos > pos0 ? my_pos : pos0) : 0;
    gvfs_u64 my_hi = mine ? ((my_pos + psz) < (off + n) ? (my_pos + psz) : (off + n)) : 0;
    if (mine && !readable) {
      if (r != GVFS_PT_FULL) { gvfs_pt_unpin(pt, slot); }
      gvfs_i64 g = gvfs_read_around(ctx, file_no, buf ? buf + (my_lo - off) : (gvfs_u8 *)0, my_hi - my_lo, my_lo);
      if (g < 0) my_err = g;
      else if ((gvfs_u64)g < my_hi - my_lo) my_err = -GVFS_EIO;  // the file shrank under us
    }
    gvfs_u32 ok_pages = gvfs_ballot(FULL, mine && readable);
    gvfs_syncwarp(FULL);
    // Copy every readable page into the caller's buffer, the whole warp on each page.
    for (gvfs_u32 k = 0; k < npages; ++k) {
      gvfs_u32 s = gvfs_shfl_u32(FULL, slot, (int)k);
      if (!((ok_pages >> k) & 1u)) continue;
      gvfs_u64 p_pos = (page0 + k) << shift;
      gvfs_u64 lo = p_pos > pos0 ? p_pos : pos0;
      gvfs_u64 hi = p_pos + psz < off + n ? p_pos + psz : off + n;
      if (buf) gvfs_copy_warp_dev(buf + (lo - off), gvfs_pt_page(pt, s) + (lo - p_pos), hi - lo, me, 32);
    }
    gvfs_syncwarp(FULL);
    if (mine && readable) gvfs_pt_unpin(pt, slot);
    // The round's counts, summed by lane 0 from what the ballots say (one add per counter,
    // not one per page).
    const gvfs_u32 waited = gvfs_ballot(FULL, mine && r == GVFS_PT_HIT && kind == GVFS_SLOT_FILLING);
    const gvfs_u32 hit_pages = gvfs_ballot(FULL, mine && r == GVFS_PT_HIT) & ~waited;
    const gvfs_u32 hit_read = gvfs_ballot(FULL, mine && readable && r == GVFS_PT_HIT);
    if (me == 0u) {
      gvfs_u64 bytes = 0;
      for (gvfs_u32 m = hit_read; m != 0u; m &= m - 1u) {
        const gvfs_u64 p_pos = (page0 + (gvfs_u64)gvfs_ctz(m)) << shift;
        const gvfs_u64 lo = p_pos > pos0 ? p_pos : pos0;
        const gvfs_u64 hi = p_pos + psz < off + n ? p_pos + psz : off + n;
        bytes += hi - lo;
      }
      gvfs_count_sum(ctx, GVFS_C_CACHE_HITS, gvfs_popc(hit_pages));
      gvfs_count_sum(ctx, GVFS_C_FILL_WAITS, gvfs_popc(waited));
      gvfs_count_sum(ctx, GVFS_C_BYTES_HIT, bytes);
    }
    // Errors: the call returns what was read before the first failing page.
    gvfs_u32 bad = gvfs_ballot(FULL, my_err != 0);
    if (bad) {
      int first = gvfs_ctz(bad);
      err = (gvfs_i64)gvfs_shfl_u64(FULL, (gvfs_u64)my_err, first);
      gvfs_u64 first_pos = ((page0 + (gvfs_u64)first) << shift);
      if (first_pos < pos0) first_pos = pos0;
      done = (unsigned long)(first_pos - off);
      break;
    }
    gvfs_u64 end = ((page0 + npages) << shift) < off + n ? ((page0 + npages) << shift) : off + n;
    done = (unsigned long)(end - off);
  }
  if (err != 0 && done == 0) return (long)err;
  return (long)done;
}

// Warp-collective read through the cache (gvfs_pread_warp): the case a data loader makes
// most, every page of the read resident, inline and small; anything else (a miss, a page
// still filling, more than 32 pages, page numbers past 40 bits) goes the general way,
// called. A miss waits for a hostcall anyway; the hit keeps few registers and spills none
// (the general path inlined here gave the warp read kernel 161 registers, capped at 128 with
// spills, which an acquire makes round trips to L2). `pt` and `counters` are the caller's
// copies of ctx's, loaded in the batch with the fd's fields: each would otherwise be a
// round trip of its own, after the shuffle of the fd's fields and after the unpin.
GVFS_FN long gvfs_cache_pread_warp_at(gvfs_ctx *ctx, const gvfs_pagetable *pt, gvfs_u64 *counters, gvfs_u64 file_no,
                                      gvfs_u64 size, void *buf_, unsigned long n, unsigned long off) {
  const gvfs_u32 FULL = 0xffffffffu;
  const gvfs_u32 me = gvfs_lane_id();
  if (off >= size || n == 0) return 0;
  if (n > size - off) n = size - off;
  const gvfs_u32 shift = pt->page_shift;
  const gvfs_u64 page0 = off >> shift, last = (off + n - 1) >> shift;
  if (last - page0 < 32u && (last >> GVFS_PAGE_BITS) == 0) {
    const gvfs_u32 npages = (gvfs_u32)(last - page0) + 1u;
    const bool mine = me < npages;
    const gvfs_u64 key = gvfs_pt_key(file_no, page0 + me);
    const gvfs_pt_pin p = mine ? gvfs_pt_lookup_unconfirmed(pt, key) : gvfs_pt_no_pin();
    const bool ready = p.slot >= 0 && (p.kind == GVFS_SLOT_VALID || p.kind == GVFS_SLOT_DIRTY);
    if (gvfs_ballot(FULL, mine && !ready) == 0u) {
      // The bytes are copied while the tags' confirmation (P4) is on its way; a page that
      // turns out to hold another key sends the whole read the general way, which writes
      // every byte of buf again.
      gvfs_u8 *buf = (gvfs_u8 *)buf_;
      const gvfs_u64 psz = 1ull << shift;
      // Each page's bytes after its pinner's acquire, for every lane that copies them (P5).
      gvfs_syncwarp(FULL);
      for (gvfs_u32 k = 0; k < npages; ++k) {
        const gvfs_u32 s = gvfs_shfl_u32(FULL, (gvfs_u32)p.slot, (int)k);
        const gvfs_u64 p_pos = (page0 + k) << shift;
        const gvfs_u64 lo = p_pos > off ? p_pos : off;
        const gvfs_u64 hi = p_pos + psz < off + n ? p_pos + psz : off + n;
        if (buf) gvfs_copy_warp_dev(buf + (lo - off), gvfs_pt_page(pt, s) + (lo - p_pos), hi - lo, me, 32);
      }
      const bool ok = !mine || gvfs_pt_confirm(pt, p, key);
      const bool all = gvfs_ballot(FULL, !ok) == 0u;
      // Every lane's share of every page is read before its owner unpins it (P1).
      gvfs_syncwarp(FULL);
      if (mine) gvfs_pt_unpin(pt, (gvfs_u32)p.slot);
      if (all) {
        if (me == 0u) {
          gvfs_count_sum_at(counters, GVFS_C_CACHE_HITS, npages);
          gvfs_count_sum_at(counters, GVFS_C_BYTES_HIT, n);
        }
        return (long)n;
      }
    } else if (p.slot >= 0) {
      // Not all there: the pins go back, and the general path looks again (and waits for a
      // page still filling, or fills the missing ones).
      gvfs_pt_unpin(pt, (gvfs_u32)p.slot);
    }
  }
  return gvfs_cache_pread_warp_any(ctx, file_no, size, buf_, n, off);
}

GVFS_FN long gvfs_cache_pread_warp(gvfs_ctx *ctx, gvfs_u64 file_no, gvfs_u64 size, void *buf_, unsigned long n,
                                   unsigned long off) {
  const gvfs_pagetable pt = ctx->pt;
  return gvfs_cache_pread_warp_at(ctx, &pt, gvfs_counter(ctx, 0), file_no, size, buf_, n, off);
}
