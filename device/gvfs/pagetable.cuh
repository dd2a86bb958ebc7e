// gpuvfs page table: (file version, page number) -> slot in the pool of page slots.
//
// Layout. The pool has nsets * ways slots. A key hashes to one set; the set's `ways`
// consecutive slots are the key's probe window (open addressing with a bounded window, so
// there are no tombstones and a lookup reads one or two cache lines of tags). Each slot has:
//   state[s]  u32  kind in bits 0..7 (EMPTY, FILLING, VALID, DIRTY, EVICTING),
//                  pin count in bits 8..31 (threads that may be copying the slot's bytes)
//   tag[s]    u64  key of the page the slot holds or is being filled with (0: none)
//   ref[s]    u32  clock reference bit, set on every hit
// Per set: set_lock (taken only by misses, while they claim a slot) and the clock hand.
// A set has at most GVFS_PT_MAX_WAYS ways (the Runtime makes 16): a claim reads the whole
// set's tags, states and reference bits in one batch of loads.
//
// Keys: key = file_no << 40 | page_no. file_no names one *version* of a file (the host
// hands out a new one when the file changes), so pages of an old version can never be
// mixed with pages of a new one: they are simply unreachable and age out of the clock.
//
// Slot state machine (who moves it, and how):
//   EMPTY,0     -> EVICTING   a miss holding set_lock: CAS (no pins, so no reader)
//   VALID,0     -> EVICTING   a miss holding set_lock, the clock chose it: CAS
//   EVICTING,n  -> FILLING,n+1 the same miss: writes tag = key, then fetch-add (release)
//   FILLING,n   -> VALID,n    the filler, after the bytes are in the slot: add +1 (release)
//   FILLING,n   -> EMPTY,n    the filler, when the fill failed: add -1 (release); waiters
//                             see EMPTY and give up
//                             (A FILLING slot's kind is changed by its filler alone; pins
//                             only add and subtract above the kind bits, so an add moves
//                             the kind whatever the pins, with no load and no CAS loop.)
//   k,n         -> k,n+1      a reader: fetch-add (acquire), kept only if k was FILLING,
//                             VALID or DIRTY and the tag still holds its key; otherwise it
//                             takes the pin straight back (fetch-sub); a warp hit checks the
//                             tag after its copy, and holds a wrong pin that long
//                             (gvfs_pt_lookup_unconfirmed)
//   k,n+1       -> k,n        a reader done with the bytes: fetch-sub (release)
//   VALID       <-> DIRTY     the write path (later work; DIRTY is never evicted)
// A reader pins with one fetch-add instead of a load and a CAS loop: the pin is one L2
// round trip, and the old state it returns says at once whether the bytes are there. So
// any slot may carry a pin for a moment (a reader whose tag check raced an eviction);
// every transition above either tolerates extra pins (the adds) or requires none (the two
// CASes to EVICTING, which then simply fail).
// Invariants:
//   P1  a slot with pins > 0 is never evicted (eviction CASes from exactly VALID,0/EMPTY,0);
//   P2  within a set, at most one slot holds a given key in FILLING/VALID/DIRTY: misses of
//       one set are serialised by set_lock, and each re-looks up the key under the lock;
//   P3  so N threads missing one page cause exactly one fill; the others pin the FILLING
//       slot and wait for VALID;
//   P4  a reader trusts a slot only after pinning it AND then re-reading tag == key (the
//       pin's acquire reads from the claimer's release fetch-add, so the re-read sees the
//       claimer's tag store): a slot recycled between the reader's first tag read and its
//       pin is detected and let go;
//   P5  the bytes of a slot are written only by its filler while it is FILLING, and are
//       read only by pinners after they saw VALID (acquire), or by the lanes of a pinner's
//       warp after a __syncwarp that follows the pin -- the filler's release orders the
//       bytes before VALID;
//   P6  set_lock is held only across a bounded scan (never across a hostcall), so a miss
//       never waits on another miss's IO.
// The host changes states and tags only while no kernel of its Runtime runs (rt.evict, which
// holds every launch off while it writes).
#pragma once
#include "port.cuh"

#define GVFS_SLOT_EMPTY 0u
#define GVFS_SLOT_FILLING 1u
#define GVFS_SLOT_VALID 2u
#define GVFS_SLOT_DIRTY 3u
#define GVFS_SLOT_EVICTING 4u
#define GVFS_SLOT_KIND_MASK 0xffu
#define GVFS_PIN 0x100u
#define GVFS_PAGE_BITS 40u
#define GVFS_PT_MAX_WAYS 16u

struct gvfs_pagetable {
  gvfs_u32 nsets;       // power of two (0: the cache is off)
  gvfs_u32 ways;        // slots per set
  gvfs_u32 page_shift;  // log2(page size)
  gvfs_u32 reserved;
  gvfs_u32 *state;      // [nsets * ways]
  gvfs_u64 *tag;        // [nsets * ways]
  gvfs_u32 *ref;        // [nsets * ways]
  gvfs_u32 *set_lock;   // [nsets]
  gvfs_u32 *hand;       // [nsets]
  gvfs_u8 *pool;        // [nsets * ways << page_shift]
};

enum gvfs_pt_result { GVFS_PT_HIT = 0, GVFS_PT_MISS = 1, GVFS_PT_FULL = 2 };

GVFS_FN gvfs_u64 gvfs_pt_key(gvfs_u64 file_no, gvfs_u64 page) { return (file_no << GVFS_PAGE_BITS) | page; }
GVFS_FN gvfs_u32 gvfs_slot_kind(gvfs_u32 st) { return st & GVFS_SLOT_KIND_MASK; }
GVFS_FN gvfs_u8 *gvfs_pt_page(const gvfs_pagetable *pt, gvfs_u32 slot) {
  return pt->pool + ((gvfs_u64)slot << pt->page_shift);
}

GVFS_FN gvfs_u32 gvfs_pt_set_of(const gvfs_pagetable *pt, gvfs_u64 key) {
  // splitmix64 finaliser: neighbouring pages of a file land in unrelated sets.
  gvfs_u64 z = key + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (gvfs_u32)z & (pt->nsets - 1u);
}

GVFS_FN bool gvfs_slot_readable(gvfs_u32 kind) {
  return kind == GVFS_SLOT_FILLING || kind == GVFS_SLOT_VALID || kind == GVFS_SLOT_DIRTY;
}

// Pins `slot`; true if it is readable (FILLING/VALID/DIRTY), with *kind its kind when pinned
// (VALID or DIRTY: the bytes are there). Not yet trusted: the slot may hold another key (P4).
// A slot that is not readable is let go at once.
GVFS_FN bool gvfs_pt_pin_readable(const gvfs_pagetable *pt, gvfs_u32 slot, gvfs_u32 *kind) {
  // Acquire only: the pin publishes nothing of ours, and a release would wait for every
  // store this thread has in flight.
  const gvfs_u32 old = gvfs_fetch_add_acquire_dev(&pt->state[slot], GVFS_PIN);
  *kind = gvfs_slot_kind(old);
  if (gvfs_slot_readable(*kind)) return true;
  gvfs_fetch_sub_acq_rel_dev(&pt->state[slot], GVFS_PIN);
  return false;
}

// Pins `slot` if it is readable (FILLING/VALID/DIRTY) and holds `key` (P4). On success
// *kind is the slot's kind when it was pinned: VALID or DIRTY means the bytes are there.
GVFS_FN bool gvfs_pt_try_pin(const gvfs_pagetable *pt, gvfs_u32 slot, gvfs_u64 key, gvfs_u32 *kind) {
  // The reference bit is a hint for the clock: read in the same round trip as the pin,
  // not after it.
  const gvfs_u32 referenced = gvfs_load_relaxed_dev(&pt->ref[slot]);
  if (!gvfs_pt_pin_readable(pt, slot, kind)) return false;
  if (gvfs_load_relaxed_u64_dev(&pt->tag[slot]) == key) {
    if (referenced == 0u) gvfs_store_relaxed_dev(&pt->ref[slot], 1u);
    return true;
  }
  gvfs_fetch_sub_acq_rel_dev(&pt->state[slot], GVFS_PIN);  // recycled under us
  return false;
}

// Done with the slot's bytes. Release: our reads of the bytes happen before an evictor's
// CAS can see the pin gone (P1). No value is needed back, so a reduction (fire and forget).
GVFS_FN void gvfs_pt_unpin(const gvfs_pagetable *pt, gvfs_u32 slot) { gvfs_sub_release_dev(&pt->state[slot], GVFS_PIN); }

#define GVFS_PT_TAG_BATCH 8u

// The first slot of the key's set. The set's states and reference bits come after its tags
// (the pin, or a miss's claim), each one round trip later: L2 is asked for their lines now,
// while the tags are in flight. (A random read's set is rarely in L2: each of those lines
// was a DRAM round trip.)
GVFS_FN gvfs_u32 gvfs_pt_set_base(const gvfs_pagetable *pt, gvfs_u64 key) {
  const gvfs_u32 base = gvfs_pt_set_of(pt, key) * pt->ways;
  gvfs_prefetch_l2(&pt->state[base]);
  gvfs_prefetch_l2(&pt->ref[base]);
  return base;
}
// Tags of ways w0 .. w0 + GVFS_PT_TAG_BATCH - 1 of the set at `base`, all in flight at once
// (0 past the set's `ways`).
GVFS_FN void gvfs_pt_load_tags(const gvfs_pagetable *pt, gvfs_u32 base, gvfs_u32 w0, gvfs_u32 ways, gvfs_u64 *t) {
  GVFS_UNROLL
  for (gvfs_u32 u = 0; u < GVFS_PT_TAG_BATCH; ++u)
    t[u] = w0 + u < ways ? gvfs_load_relaxed_u64_dev(&pt->tag[base + w0 + u]) : 0ull;
}

// Looks the key up in its set; returns a pinned slot or -1 (*kind as gvfs_pt_try_pin).
// The set's tags are loaded GVFS_PT_TAG_BATCH at a time, all in flight together: a lookup
// costs one or two memory round trips, not one per way.
GVFS_FN int gvfs_pt_lookup(gvfs_pagetable *pt, gvfs_u64 key, gvfs_u32 *kind) {
  const gvfs_u32 ways = pt->ways;
  const gvfs_u32 base = gvfs_pt_set_base(pt, key);
  for (gvfs_u32 w0 = 0; w0 < ways; w0 += GVFS_PT_TAG_BATCH) {
    gvfs_u64 t[GVFS_PT_TAG_BATCH];
    gvfs_pt_load_tags(pt, base, w0, ways, t);
    // P2 allows one live slot per key, but stale tags (a slot being evicted) may repeat it.
    GVFS_UNROLL
    for (gvfs_u32 u = 0; u < GVFS_PT_TAG_BATCH; ++u)
      if (t[u] == key && gvfs_pt_try_pin(pt, base + w0 + u, key, kind)) return (int)(base + w0 + u);
  }
  return -1;
}

// gvfs_pt_lookup for a reader that confirms the tag later, overlapping that round trip with
// its copy of the bytes: the first slot of the key's set whose tag matched and that pinned
// readable, or -1 (nothing pinned). The pin is not yet trusted (P4): the caller compares
// p->tag_now, the tag re-read after the pin's acquire, with its key (gvfs_pt_confirm)
// before it trusts or returns any byte it read from the slot, and unpins either way. It may
// read the bytes meanwhile: a pinned VALID or DIRTY slot is neither evicted nor refilled
// (P1), so they are some page's whole bytes, maybe another key's, never a fill in progress.
// (A stale duplicate of the key in the set, which gvfs_pt_lookup would try next, sends this
// reader the general way instead.)
struct gvfs_pt_pin {
  int slot;
  gvfs_u32 kind;
  gvfs_u32 referenced;  // the reference bit, read beside the pin
  gvfs_u64 tag_now;
};
// No slot pinned (what a lookup that found none returns).
GVFS_FN gvfs_pt_pin gvfs_pt_no_pin() {
  gvfs_pt_pin p;
  p.slot = -1; p.kind = 0; p.referenced = 1; p.tag_now = 0;
  return p;
}
// A test harness may define this to act between such a lookup's read of the tags and its
// pin (tests/native/tsan_pagetable.cpp recycles the slot there: P4's case); nothing otherwise.
#ifndef GVFS_PT_TEST_BEFORE_PIN
#define GVFS_PT_TEST_BEFORE_PIN(pt, slot) ((void)0)
#endif
GVFS_FN gvfs_pt_pin gvfs_pt_lookup_unconfirmed(const gvfs_pagetable *pt, gvfs_u64 key) {
  gvfs_pt_pin p = gvfs_pt_no_pin();
  const gvfs_u32 ways = pt->ways;
  const gvfs_u32 base = gvfs_pt_set_base(pt, key);
  for (gvfs_u32 w0 = 0; w0 < ways; w0 += GVFS_PT_TAG_BATCH) {
    gvfs_u64 t[GVFS_PT_TAG_BATCH];
    gvfs_pt_load_tags(pt, base, w0, ways, t);
    gvfs_u32 match = 0;
    GVFS_UNROLL
    for (gvfs_u32 u = 0; u < GVFS_PT_TAG_BATCH; ++u) match |= (t[u] == key ? 1u : 0u) << u;
    if (match == 0u) continue;
    const gvfs_u32 s = base + w0 + (gvfs_u32)gvfs_ctz(match);
    GVFS_PT_TEST_BEFORE_PIN(pt, s);
    p.referenced = gvfs_load_relaxed_dev(&pt->ref[s]);
    if (gvfs_pt_pin_readable(pt, s, &p.kind)) {
      p.slot = (int)s;
      p.tag_now = gvfs_load_relaxed_u64_dev(&pt->tag[s]);  // after the pin's acquire (P4)
    }
    return p;
  }
  return p;
}
// True when the pinned slot holds `key` (P4); then sets its reference bit if it was clear.
GVFS_FN bool gvfs_pt_confirm(const gvfs_pagetable *pt, const gvfs_pt_pin &p, gvfs_u64 key) {
  if (p.tag_now != key) return false;
  if (p.referenced == 0u) gvfs_store_relaxed_dev(&pt->ref[p.slot], 1u);
  return true;
}

// The first try is the CAS itself (an uncontended lock costs one round trip); once it
// failed, the set is contended and waiters test with loads before they try again.
GVFS_FN void gvfs_pt_lock_set(gvfs_pagetable *pt, gvfs_u32 set) {
  if (gvfs_cas_acq_rel_dev(&pt->set_lock[set], 0u, 1u) == 0u) return;
  gvfs_u32 ns = 32;
  while (gvfs_load_relaxed_dev(&pt->set_lock[set]) != 0u || gvfs_cas_acq_rel_dev(&pt->set_lock[set], 0u, 1u) != 0u) {
    gvfs_backoff(ns);
    if (ns < 1024u) ns *= 2u;
  }
}
GVFS_FN void gvfs_pt_unlock_set(gvfs_pagetable *pt, gvfs_u32 set) { gvfs_store_release_dev(&pt->set_lock[set], 0u); }

// The miss half of gvfs_pt_acquire (called, not inlined: a miss waits for a hostcall
// anyway, and the readers that inline the hit path keep their registers). Under the set
// lock, one batch of loads reads every way's tag, state and reference bit (their lines
// were asked of L2 by the lookup); the re-lookup (P2), the choice of an EMPTY slot and the
// clock then work on that snapshot, and only the CAS that takes the victim goes back to
// memory. The clock's hand is read only when no slot is EMPTY (its line, prefetched before
// the lock, is then in L2). What can change under the lock, and so be stale in the snapshot:
// pins (readers pin and unpin without it), and a FILLING slot's kind and tag (its filler
// publishes VALID, or EMPTY with the tag cleared, without it). Nothing that matters follows:
// the CASes work on the live state, so a slot pinned since is refused (P1); a key's live
// holder was claimed under this lock, so its tag is in the snapshot (P2); a slot that became
// free since is only left for the next miss (this one may read around the cache). The table comes by value: callers
// keep theirs in registers, which a pointer would force onto the stack.
GVFS_COLD gvfs_pt_result gvfs_pt_claim(gvfs_pagetable table, gvfs_u64 key, gvfs_u32 set, gvfs_u32 *slot,
                                       bool *evicted, gvfs_u32 *kind) {
  gvfs_pagetable *const pt = &table;
  const gvfs_u32 ways = pt->ways < GVFS_PT_MAX_WAYS ? pt->ways : GVFS_PT_MAX_WAYS;
  const gvfs_u32 base = set * pt->ways;
  gvfs_prefetch_l2(&pt->hand[set]);  // the clock's hand, if it is needed: on its way meanwhile
  gvfs_pt_lock_set(pt, set);
  gvfs_u64 t[GVFS_PT_MAX_WAYS];
  gvfs_u32 st[GVFS_PT_MAX_WAYS], rf[GVFS_PT_MAX_WAYS];
  if (pt->ways == GVFS_PT_MAX_WAYS) {  // the Runtime's sets: 16 loads of 16 bytes, not 48 one word each
    GVFS_UNROLL
    for (gvfs_u32 u = 0; u < GVFS_PT_MAX_WAYS; u += 2) gvfs_load_relaxed_u64x2_dev(&pt->tag[base + u], &t[u], &t[u + 1]);
    GVFS_UNROLL
    for (gvfs_u32 u = 0; u < GVFS_PT_MAX_WAYS; u += 4) {
      gvfs_load_relaxed_u32x4_dev(&pt->state[base + u], &st[u], &st[u + 1], &st[u + 2], &st[u + 3]);
      gvfs_load_relaxed_u32x4_dev(&pt->ref[base + u], &rf[u], &rf[u + 1], &rf[u + 2], &rf[u + 3]);
    }
  } else {
    GVFS_UNROLL
    for (gvfs_u32 u = 0; u < GVFS_PT_MAX_WAYS; ++u) {
      const bool in = u < ways;
      t[u] = in ? gvfs_load_relaxed_u64_dev(&pt->tag[base + u]) : 0ull;
      st[u] = in ? gvfs_load_relaxed_dev(&pt->state[base + u]) : ~0u;
      rf[u] = in ? gvfs_load_relaxed_dev(&pt->ref[base + u]) : 0u;
    }
  }
  gvfs_u32 match = 0, empty = 0, valid0 = 0, refd = 0;
  GVFS_UNROLL
  for (gvfs_u32 u = 0; u < GVFS_PT_MAX_WAYS; ++u) {
    if (t[u] == key) match |= 1u << u;
    if (st[u] == GVFS_SLOT_EMPTY) empty |= 1u << u;
    if (st[u] == GVFS_SLOT_VALID) valid0 |= 1u << u;
    if (rf[u] != 0u) refd |= 1u << u;
  }
  // P2: another miss may have claimed the key while we waited for the lock.
  for (gvfs_u32 m = match; m != 0u; m &= m - 1u) {
    const gvfs_u32 s = base + (gvfs_u32)gvfs_ctz(m);
    if (gvfs_pt_try_pin(pt, s, key, kind)) { gvfs_pt_unlock_set(pt, set); *slot = s; return GVFS_PT_HIT; }
  }
  int victim = -1;
  for (gvfs_u32 m = empty; m != 0u && victim < 0; m &= m - 1u) {
    const gvfs_u32 s = base + (gvfs_u32)gvfs_ctz(m);
    if (gvfs_cas_acq_rel_dev(&pt->state[s], GVFS_SLOT_EMPTY, GVFS_SLOT_EVICTING) == GVFS_SLOT_EMPTY) victim = (int)s;
  }
  if (victim < 0) {
    // Clock (second chance) over the set: a referenced page loses its bit and is passed
    // over once; the first unreferenced, unpinned VALID page is taken (P1).
    const gvfs_u32 hand = gvfs_load_relaxed_dev(&pt->hand[set]);
    for (gvfs_u32 step = 0; step < 2u * ways && victim < 0; ++step) {
      const gvfs_u32 w = (hand + step) % ways;
      if (!((valid0 >> w) & 1u)) continue;  // pinned, filling, dirty, empty
      if ((refd >> w) & 1u) { gvfs_store_relaxed_dev(&pt->ref[base + w], 0u); refd &= ~(1u << w); continue; }
      if (gvfs_cas_acq_rel_dev(&pt->state[base + w], GVFS_SLOT_VALID, GVFS_SLOT_EVICTING) == GVFS_SLOT_VALID) {
        victim = (int)(base + w);
        *evicted = true;
        gvfs_store_relaxed_dev(&pt->hand[set], (hand + step + 1u) % ways);
      }
    }
  }
  if (victim < 0) { gvfs_pt_unlock_set(pt, set); return GVFS_PT_FULL; }
  gvfs_store_relaxed_u64_dev(&pt->tag[victim], key);
  gvfs_store_relaxed_dev(&pt->ref[victim], 1u);
  // EVICTING -> FILLING with our pin, by an add so that the passing pins of readers who
  // raced us (and will take them back) are kept. Release: the tag is visible before anyone
  // can pin the slot as FILLING (P4).
  gvfs_fetch_add_acq_rel_dev(&pt->state[victim], GVFS_PIN + GVFS_SLOT_FILLING - GVFS_SLOT_EVICTING);
  *kind = GVFS_SLOT_FILLING;
  gvfs_pt_unlock_set(pt, set);
  *slot = (gvfs_u32)victim;
  return GVFS_PT_MISS;
}

// Finds the page or claims a slot for it. On HIT or MISS *slot is pinned by the caller;
// on MISS the caller is the filler and must call gvfs_pt_fill_done. FULL: every slot of
// the set is pinned, filling or dirty; the caller reads around the cache.
// `evicted` is set when a VALID page was evicted to make room.
GVFS_FN gvfs_pt_result gvfs_pt_acquire(gvfs_pagetable *pt, gvfs_u64 key, gvfs_u32 *slot, bool *evicted,
                                       gvfs_u32 *kind) {
  *evicted = false;
  int s = gvfs_pt_lookup(pt, key, kind);
  if (s >= 0) { *slot = (gvfs_u32)s; return GVFS_PT_HIT; }
  return gvfs_pt_claim(*pt, key, gvfs_pt_set_of(pt, key), slot, evicted, kind);
}

// The filler publishes its slot: VALID (the bytes are in), or EMPTY (the fill failed).
// Pins are kept: waiters still hold theirs, and the filler keeps its own. One reduction
// (see the state machine: the kind of a FILLING slot is the filler's alone), released so
// that the bytes (P5), or the cleared tag, come before the kind a pinner acquires.
GVFS_FN void gvfs_pt_fill_done(gvfs_pagetable *pt, gvfs_u32 slot, bool ok) {
  if (!ok) gvfs_store_relaxed_u64_dev(&pt->tag[slot], 0ull);
  gvfs_add_release_dev(&pt->state[slot], ok ? GVFS_SLOT_VALID - GVFS_SLOT_FILLING : 0u - (GVFS_SLOT_FILLING - GVFS_SLOT_EMPTY));
}

// A pinner of a FILLING slot waits for the fill; true when the bytes are readable.
GVFS_FN bool gvfs_pt_wait_filled(gvfs_pagetable *pt, gvfs_u32 slot) {
  gvfs_u32 ns = 64;
  for (;;) {
    gvfs_u32 k = gvfs_slot_kind(gvfs_load_acquire_dev(&pt->state[slot]));
    if (k == GVFS_SLOT_VALID || k == GVFS_SLOT_DIRTY) return true;
    if (k != GVFS_SLOT_FILLING) return false;
    gvfs_backoff(ns);
    if (ns < 4096u) ns *= 2u;
  }
}
