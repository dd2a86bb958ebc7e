// ThreadSanitizer harness for the page cache (device/gvfs/pagetable.cuh, filecache.cuh) and
// the device fd table and name cache built on it (device/gvfs/files.cuh).
//
// Built and run by tests/native/run-tsan.sh:
//   g++ -std=c++20 -O1 -g -fsanitize=thread -I device -pthread tests/native/tsan_pagetable.cpp -lffi
// (the CPU port's launcher, device/cpu/launcher.cpp, is compiled into this file: it supplies
// the warp intrinsics and runs the warp-collective read path as a real kernel launch). What it
// shares with tsan_hostcall.cpp is in tsan_common.h.
//
// A small pool (by default 4 sets x 8 ways of 256-byte pages) and a few "files" whose pages
// are several times the pool, so reads evict, sets fill up (FULL: reads go around the
// cache), threads wait on FILLING slots, and sequential readers claim readahead runs.
// Everything a kernel would receive (lanes, counters, page table, pool, fd table, name
// cache) is a host array here.
//
// One or two "server" threads stand in for gpuvfs/hostcall/cache.py: FILL (file_no, offset,
// length) writes pat(file_no, byte offset) into the lane's data and returns length (the
// device never asks past the file's size: checked), publishing resp_word with a release store
// after the data (the result in the word's code when it fits: -ESTALE, -EIO, short fills); LOOKUP hands out file versions of a few paths (a version names its path).
// FILL_PUSH (with --push=BYTES, ctx.fill_push_bytes: cache fills of at least that many bytes)
// is answered as FILL (data_len 0, at a page), but before answering the server also copies
// the bytes it read into the lane's stage, ctx.fill_stage + lane x data_bytes (allocated,
// lanes x data_bytes, only when --push is on): plain byte stores from the server thread
// standing in for the host's DMA into device memory. Then it poisons the lane's copy (every
// byte inverted), so a device that copied a pushed fill into the slots from the lane buffer
// instead of the stage would fail the byte checks; likewise a plain FILL, when there is a
// stage, poisons the lane's stage over its length (a pulled fill read from the stage fails).
// Same -ESTALE / -EIO faults as FILL.
// The server counts every FILL and FILL_PUSH per page, so "one fill per page" is checked
// exactly, and at the end checks its counts against the devices' (GVFS_C_FILLS,
// GVFS_C_FILLS_PUSHED): pushes iff --push is on, on both paths when every fill is pushed.
//
// Phases (each checks every byte a call returns against the pattern, and canary bytes past
// the buffer; any failed check prints a line and exits 1; any TSan report exits 66):
//   unit    deterministic: a set whose ways are all pinned is FULL and a read goes around
//           the cache (one FILL, right bytes, no slot taken); a failed fill leaves EMPTY; a
//           miss fills once and the next read hits; a warp's hit whose slot is recycled
//           between its look and its pin (injected: the hook before the includes) returns the
//           file's bytes by the general way, and leaves that slot unpinned (P4).
//   same    rounds in which every device thread reads inside ONE page of a never-read file at
//           once: exactly one FILL per round (P3). Every other round (pool emptied first) all
//           read the same 4-page range with a shared sequential hint: each page filled exactly
//           once, and with readahead >= 3 one FILL in all (the first miss claims the rest of
//           the range as readahead before anyone else can reach it).
//   random  per-thread gvfs_cache_pread at random offsets/lengths (and sequential runs sharing
//           a per-file hint, so readahead claims race with other readers), pages past 2^40
//           (read around the cache), and name-cache traffic: gvfs_open / gvfs_fstat /
//           gvfs_pread / gvfs_close on a few paths while a "forget" thread calls
//           gvfs_name_forget, bumps *files.epoch, and makes files change (new versions; the
//           server answers FILLs of a retired version -ESTALE). Every fd's file_no must be a
//           version the server handed out for that path. Meanwhile a kernel launch of warps
//           (gvfs_cache_pread_warp, through the CPU launcher) reads the same files.
//   fail    the same, with the server answering some FILLs -EIO: every page p % 4 == 1 of
//           files 2 and 5, and 1 in 10 other FILLs. Callers must get -EIO or a correct
//           prefix that stops before the first bad page; never wrong bytes; nothing hangs.
//   recover every byte of every file reads back whole (failed fills were not cached).
// A watchdog fails the run if no read completes for 60 s (a lost wakeup or a slot left
// FILLING). After each phase: no slot pinned or mid-fill, each VALID slot in its key's set,
// holding its page's bytes, no key twice (P2), no set lock or lane held, no fd left open.
// Counts come from the server (FILLs per page and per file) and the device counters (the
// warp kernel gets a ctx of its own with its own counters, so per-thread read-arounds of
// FULL sets are counted exactly: FILLs - miss runs - reads past page 2^40).
//
// Not seen by TSan: whether a name-cache answer is whole. Its four words are relaxed atomics
// stamped with the version that wrote them (files.cuh, N1), so no access to them is a data
// race whatever a reader does; a torn answer is caught by value instead: an fd's size, mtime
// and mode must be those of its file_no.
//
// Built with -DGVFS_TSAN_SELFTEST_PT, `--selftest=MODE` breaks the page table on purpose,
// through macro hooks defined HERE (device/ is untouched), so that run-tsan.sh can prove
// TSan catches a race in this code (with --push=1 too, where every cache fill's bytes come
// to the slots from the stage, not from the lane buffer):
//   relaxed  gvfs_pt_fill_done publishes VALID with a relaxed CAS (P5's release is missing:
//            the filler's copy into the slot is not ordered before readers' copies out);
//   wait     gvfs_pt_wait_filled sees VALID with a relaxed load (P5's acquire is missing);
//   unpin    gvfs_pt_unpin drops the pin with a relaxed fetch_sub (the reader's copy out is
//            not ordered before the evictor's refill of the slot: P1's ordering is missing).
#include "gvfs/port.cuh"
// P4's case, on demand: the warp hit reads a pinned slot before it confirms the slot's tag
// (filecache.cuh, gvfs_pt_lookup_unconfirmed). The unit phase arms `recycle_armed` once: at
// the lookup's hook between its read of the tags and its pin, the slot is evicted and
// refilled with another page, as another thread's miss may do there. The reader must give
// the slot back and read the general way, writing every byte of its buffer again.
struct gvfs_pagetable;
namespace {
std::atomic<bool> recycle_armed{false};
void recycle_slot(const gvfs_pagetable *pt, gvfs_u32 s);
}  // namespace
#define GVFS_PT_TEST_BEFORE_PIN(pt, s)                                                                   \
  do {                                                                                                  \
    if (recycle_armed.load(std::memory_order_relaxed) && recycle_armed.exchange(false, std::memory_order_relaxed)) \
      recycle_slot(pt, s);                                                                              \
  } while (0)
#include "gvfs/hostcall.cuh"
#include "gvfs/pagetable.cuh"
#include "tsan_common.h"  // types only: the hooks below still come before the code that calls them

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <new>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace tsan;

namespace {
// Options: lanes, servers, threads (per-thread device threads, blocks of 4), iters (calls per
// device thread in the random phase, half in the fail phase), seed, selftest ("", "relaxed",
// "wait", "unpin"); and these:
struct Config : Options {
  unsigned sets = 4, ways = 8;
  unsigned warps = 2;      // warps of the concurrent kernel launch (0: none)
  unsigned witers = 60;    // calls per warp and phase
  unsigned rounds = 24;    // rounds of the `same` phase
  unsigned ra = 3;         // ctx.readahead_pages
  unsigned push = 0;       // ctx.fill_push_bytes: cache fills of >= this many bytes are FILL_PUSH (0: none)
  Config() : Options(/*threads=*/12, /*iters=*/1500) {}
};
Config cfg;
}  // namespace

#ifdef GVFS_TSAN_SELFTEST_PT
// ---------------------------------------------------------------- deliberately broken hooks
// pagetable.cuh is already included (#pragma once): filecache.cuh and files.cuh, included
// below, call these in place of the real functions. Only the chosen mode is broken.
inline void harness_pt_fill_done(gvfs_pagetable *pt, gvfs_u32 slot, bool ok) {
  if (cfg.selftest != "relaxed" || !ok) { gvfs_pt_fill_done(pt, slot, ok); return; }
  gvfs_u32 st = ref(&pt->state[slot]).load(std::memory_order_relaxed);
  while (!ref(&pt->state[slot]).compare_exchange_weak(st, (st & ~GVFS_SLOT_KIND_MASK) | GVFS_SLOT_VALID,
                                                      std::memory_order_relaxed)) {}
}
inline bool harness_pt_wait_filled(gvfs_pagetable *pt, gvfs_u32 slot) {
  if (cfg.selftest != "wait") return gvfs_pt_wait_filled(pt, slot);
  for (;;) {
    gvfs_u32 k = gvfs_slot_kind(ref(&pt->state[slot]).load(std::memory_order_relaxed));
    if (k == GVFS_SLOT_VALID || k == GVFS_SLOT_DIRTY) return true;
    if (k != GVFS_SLOT_FILLING) return false;
    sched_yield();
  }
}
inline void harness_pt_unpin(const gvfs_pagetable *pt, gvfs_u32 slot) {
  if (cfg.selftest != "unpin") { gvfs_pt_unpin(pt, slot); return; }
  ref(&pt->state[slot]).fetch_sub(GVFS_PIN, std::memory_order_relaxed);
}
#define gvfs_pt_fill_done harness_pt_fill_done
#define gvfs_pt_wait_filled harness_pt_wait_filled
#define gvfs_pt_unpin harness_pt_unpin
#endif

#include "gpuvfs.cuh"
#include "cpu/launcher.cpp"  // warp intrinsics + gvfs_cpu_launch (link with -lffi)

namespace {
typedef unsigned long long ull;

// ---------------------------------------------------------------- the files
constexpr gvfs_u32 PAGE_SHIFT = 8;
constexpr gvfs_u64 PSZ = 1ull << PAGE_SHIFT;
constexpr int NSTATIC = 6;                   // file_no 1..6: the random phase's files
constexpr gvfs_u64 STATIC_SIZE[NSTATIC + 1] = {0, 5000, 7937, 3001, 6144, 20 * 256 + 1, 9000};
constexpr gvfs_u64 HUGE_NO = 7;               // 2^50 bytes: pages past 2^40 are read around
constexpr gvfs_u64 HUGE_SIZE = 1ull << 50;
constexpr gvfs_u64 FLAKY_NO = 8;              // what /flaky names when its LOOKUP succeeds
constexpr gvfs_u64 UNIT_NO = 50, UNIT2_NO = 51;
constexpr gvfs_u64 SP_BASE = 100;             // same-phase files: SP_BASE + round, never read before
constexpr unsigned MAX_ROUNDS = 256;
constexpr unsigned SP_PAGES = 16;
constexpr gvfs_u64 SP_SIZE = SP_PAGES * 256 - 77;
constexpr gvfs_u64 PATH_BASE = 1000;          // path versions: PATH_BASE + version * NPATHS + path
constexpr unsigned NPATHS = 4;                // "/p0".."/p3"; also "/missing" (ENOENT), "/flaky"

gvfs_u64 mix64(gvfs_u64 z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// The byte at `pos` of file version `file_no`: depends on the file, the page and the place
// in the page, so a page of another file or another page shows.
gvfs_u8 pat(gvfs_u64 file_no, gvfs_u64 pos) {
  return (gvfs_u8)(mix64(file_no * 0x100000001b3ull ^ (pos >> 3)) >> (8u * (pos & 7u)));
}
gvfs_u64 size_of(gvfs_u64 f) {
  if (f >= 1 && f <= (gvfs_u64)NSTATIC) return STATIC_SIZE[f];
  if (f == HUGE_NO) return HUGE_SIZE;
  if (f == FLAKY_NO) return 2000;
  if (f == UNIT_NO) return 1000;
  if (f == UNIT2_NO) return 1ull << 30;
  if (f >= SP_BASE && f < SP_BASE + MAX_ROUNDS) return SP_SIZE;
  if (f >= PATH_BASE) return 700 + mix64(f) % 4000;
  return 0;  // not a file the server ever handed out
}
bool is_static(gvfs_u64 f) { return f >= 1 && f <= (gvfs_u64)NSTATIC; }
// The failure rule of the fail phase: files 2 and 5 have unreadable pages.
bool bad_page(gvfs_u64 f, gvfs_u64 page) { return (f == 2 || f == 5) && page % 4 == 1; }

// ---------------------------------------------------------------- shared state
// What the per-thread device threads receive: the context and, after it, its fd table, in one
// allocation as the Runtime makes it (context.cuh: a read finds an fd's entry from ctx alone).
alignas(256) gvfs_u8 ctx_mem[GVFS_CTX_HINTS_BYTES + GVFS_CTX_FDS_OFFSET + GVFS_FD_TABLE_MIN * sizeof(gvfs_fdent)];
gvfs_ctx &ctx = *new (ctx_mem + GVFS_CTX_HINTS_BYTES) gvfs_ctx();
gvfs_ctx ctx_warp;   // the same, but its own counters: the warp kernel's (its calls take file numbers, never fds)
std::atomic<int> fail_mode{0};                // servers: answer some FILLs -EIO
std::atomic<gvfs_u64> n_fills{0}, n_pushes{0}, n_lookups{0}, n_eio{0}, n_estale{0};  // n_fills counts pushes too
std::atomic<gvfs_u32> sp_fills[MAX_ROUNDS][SP_PAGES];   // FILLs that covered a page of a same-phase file
std::atomic<gvfs_u32> sp_round_fills[MAX_ROUNDS];       // FILLs of a same-phase file
std::atomic<gvfs_u32> unit_fills{0};
std::atomic<gvfs_u32> changed[NPATHS];        // version of each path's file (the file "changes": +1)
std::atomic<gvfs_u32> flaky_lookups{0};
gvfs_u64 hint[NSTATIC + 1];                   // a sequential hint per file, shared like an fd's (device atomics)

// ---------------------------------------------------------------- the stand-in server
gvfs_response serve(gvfs_lanes *L, gvfs_u32 i, gvfs_u32 w, Rng &rng) {
  gvfs_response r;
  r.result = 0; r.aux[0] = r.aux[1] = r.aux[2] = 0;
  const gvfs_u32 op = w >> GVFS_WORD_SHIFT, seq = w & GVFS_WORD_SEQ_MASK;
  const gvfs_request q = L->req[i];  // a plain copy: ordered after the acquire of req_word
  CHECK(q.opcode == op, "lane %u seq %u: the record says opcode %u, the word %u", i, seq, q.opcode, op);
  gvfs_u8 *d = L->data + (gvfs_u64)i * L->data_bytes;
  if (op == GVFS_OP_FILL || op == GVFS_OP_FILL_PUSH) {
    const bool push = op == GVFS_OP_FILL_PUSH;
    const char *name = push ? "FILL_PUSH" : "FILL";
    const gvfs_u64 f = q.arg[0], off = q.offset, len = q.length, size = size_of(f);
    CHECK(q.fd == -1 && q.data_len == 0 && q.flags == 0 && q.arg[1] == 0,
          "lane %u: %s request words (data_len %u for %llu bytes)", i, name, q.data_len, (ull)len);
    CHECK(size != 0, "lane %u: %s of file_no %llu, never handed out", i, name, (ull)f);
    CHECK(len >= 1 && len <= L->data_bytes, "lane %u: %s length %llu (lane holds %u)", i, name, (ull)len, L->data_bytes);
    CHECK(off < size && len <= size - off, "lane %u: %s file %llu [%llu, +%llu) past its size %llu", i, name, (ull)f,
          (ull)off, (ull)len, (ull)size);
    // The lane's stage in "device memory": a FILL_PUSH's bytes land there (only with --push).
    gvfs_u8 *stage = ctx.fill_stage ? ctx.fill_stage + (gvfs_u64)i * L->data_bytes : nullptr;
    if (push) {
      CHECK(stage != nullptr, "lane %u: FILL_PUSH with no stage (fill_push_bytes %u)", i, ctx.fill_push_bytes);
      CHECK((off & (PSZ - 1)) == 0, "lane %u: FILL_PUSH offset %llu not at a page", i, (ull)off);
      n_pushes.fetch_add(1, std::memory_order_relaxed);
    }
    n_fills.fetch_add(1, std::memory_order_relaxed);
    const gvfs_u64 p0 = off >> PAGE_SHIFT, p1 = (off + len - 1) >> PAGE_SHIFT;
    if (f >= SP_BASE && f < SP_BASE + MAX_ROUNDS) sp_round_fills[f - SP_BASE].fetch_add(1, std::memory_order_relaxed);
    if (f >= SP_BASE && f < SP_BASE + MAX_ROUNDS)
      for (gvfs_u64 p = p0; p <= p1; ++p) sp_fills[f - SP_BASE][p].fetch_add(1, std::memory_order_relaxed);
    if (f == UNIT_NO) unit_fills.fetch_add(1, std::memory_order_relaxed);
    if (f >= PATH_BASE) {
      gvfs_u64 v = (f - PATH_BASE) / NPATHS, p = (f - PATH_BASE) % NPATHS;
      if (v < changed[p].load(std::memory_order_relaxed)) {  // the file changed since: that version is gone
        n_estale.fetch_add(1, std::memory_order_relaxed);
        r.result = -GVFS_ESTALE;
        return r;
      }
    }
    if (fail_mode.load(std::memory_order_relaxed)) {
      bool bad = rng.below(10) == 0 && f != UNIT_NO;
      for (gvfs_u64 p = p0; p <= p1 && !bad; ++p) bad = bad_page(f, p);
      if (bad) {
        n_eio.fetch_add(1, std::memory_order_relaxed);
        r.result = -GVFS_EIO;
        return r;
      }
    }
    for (gvfs_u64 k = 0; k < len; ++k) d[k] = pat(f, off + k);  // the read, into the lane
    // (Loops, not std::memcpy, here: g++ expands a memcpy of bounded size inline, and TSan
    // then sees none of its accesses.)
    if (push) {
      // FILL_PUSH: the host's copy of the read into the lane's stage, plain writes from this
      // thread (the DMA), before the answer; then the lane's copy is poisoned: the device
      // must take a pushed fill's bytes from the stage.
      for (gvfs_u64 k = 0; k < len; ++k) stage[k] = d[k];
      for (gvfs_u64 k = 0; k < len; ++k) d[k] = (gvfs_u8)~d[k];
    } else if (stage != nullptr) {
      // A pulled FILL with a stage: poison the stage over the bytes answered, so a device
      // that took a pulled fill's bytes from the stage gets wrong ones. (Only the lane's
      // holder reads its stage, and not during a FILL: no race with the device.)
      for (gvfs_u64 k = 0; k < len; ++k) stage[k] = (gvfs_u8)~pat(f, off + k);
    }
    r.result = (gvfs_i64)len;
    return r;
  }
  if (op == GVFS_OP_LOOKUP) {
    CHECK(q.data_len >= 2 && q.data_len <= GVFS_PATH_MAX && d[q.data_len - 1] == 0 &&
          std::strlen((const char *)d) + 1 == q.data_len, "lane %u: LOOKUP path words", i);
    n_lookups.fetch_add(1, std::memory_order_relaxed);
    const char *path = (const char *)d;
    gvfs_u64 f = 0;
    unsigned p = 0;
    if (std::strcmp(path, "/flaky") == 0) {
      if (flaky_lookups.fetch_add(1, std::memory_order_relaxed) % 2 == 0) { r.result = -GVFS_EIO; return r; }
      f = FLAKY_NO;
    } else if (std::sscanf(path, "/p%u", &p) == 1 && p < NPATHS) {
      f = PATH_BASE + (gvfs_u64)changed[p].load(std::memory_order_relaxed) * NPATHS + p;
    } else {
      r.result = -GVFS_ENOENT;
      return r;
    }
    r.result = (gvfs_i64)f; r.aux[0] = size_of(f); r.aux[1] = f * 1000u + 7u; r.aux[2] = 0100644;
    return r;
  }
  fail("lane %u seq %u: unexpected opcode %u", i, seq, op);
}

void server_thread(unsigned sid) {
  gvfs_lanes *L = &ctx.lanes;
  Rng rng(cfg.seed * 7919u + sid);
  ServerSweep(L, sid, cfg.servers, cfg.seed).run([&](gvfs_u32 i, gvfs_u32 w, gvfs_u32) { return serve(L, i, w, rng); });
}

// ---------------------------------------------------------------- helpers for device threads
// The CPU port's CUDA built-ins of a per-thread device thread (+1 in the grid: the forget thread).
void be_pt_thread(int me) { be_device_thread(me, cfg.threads + 1); }

struct Barrier {  // mutex + condition: TSan sees its edges; used only between rounds
  std::mutex m;
  std::condition_variable cv;
  unsigned n, arrived = 0;
  unsigned long gen = 0;
  explicit Barrier(unsigned n_) : n(n_) {}
  void wait() {
    std::unique_lock<std::mutex> lk(m);
    unsigned long g = gen;
    if (++arrived == n) { arrived = 0; ++gen; cv.notify_all(); return; }
    cv.wait(lk, [&] { return gen != g; });
  }
};

constexpr gvfs_u8 CANARY = 0xC5;
constexpr size_t BUF = 12 * 1024;
constexpr size_t GUARD = 32;

// Checks one read's result. fail: the server may have answered -EIO (bad pages, and 1 in 10
// FILLs); stale_ok: the version may have been retired (-ESTALE), or a prefix before it was.
void check_read(const char *what, int me, unsigned it, gvfs_u64 f, gvfs_u64 size, gvfs_u64 off, gvfs_u64 n,
                long got, const gvfs_u8 *dst, bool fail, bool stale_ok) {
  const gvfs_u64 want = off >= size ? 0 : std::min<gvfs_u64>(n, size - off);
  for (size_t k = 0; k < GUARD; ++k)
    CHECK(dst[n + k] == CANARY, "%s: thread %d iter %u: file %llu off %llu n %llu: wrote past the buffer", what, me,
          it, (ull)f, (ull)off, (ull)n);
  if (got < 0) {
    CHECK((fail && got == -GVFS_EIO) || (stale_ok && got == -GVFS_ESTALE),
          "%s: thread %d iter %u: file %llu off %llu n %llu: error %ld", what, me, it, (ull)f, (ull)off, (ull)n, got);
    return;
  }
  if (fail || stale_ok) {
    CHECK((gvfs_u64)got <= want, "%s: thread %d iter %u: file %llu off %llu n %llu: %ld bytes, want <= %llu", what, me,
          it, (ull)f, (ull)off, (ull)n, got, (ull)want);
    // Never a byte of a page the server refused.
    for (gvfs_u64 p = off >> PAGE_SHIFT; fail && got > 0 && p <= (off + (gvfs_u64)got - 1) >> PAGE_SHIFT; ++p)
      CHECK(!bad_page(f, p), "%s: thread %d iter %u: file %llu off %llu: %ld bytes include bad page %llu", what, me,
            it, (ull)f, (ull)off, got, (ull)p);
  } else {
    CHECK((gvfs_u64)got == want, "%s: thread %d iter %u: file %llu (size %llu) off %llu n %llu: %ld bytes, want %llu",
          what, me, it, (ull)f, (ull)size, (ull)off, (ull)n, got, (ull)want);
  }
  for (gvfs_u64 k = 0; k < (gvfs_u64)got; ++k)
    CHECK(dst[k] == pat(f, off + k), "%s: thread %d iter %u: file %llu off %llu n %llu: byte %llu is %u, want %u",
          what, me, it, (ull)f, (ull)off, (ull)n, (ull)k, dst[k], pat(f, off + k));
}

// One checked per-thread read. `h`: the sequential hint (or null).
long read_checked(const char *what, int me, unsigned it, gvfs_u8 *buf, Rng &rng, gvfs_u64 f, gvfs_u64 off, gvfs_u64 n,
                  gvfs_u64 *h, bool fail) {
  gvfs_u8 *dst = buf + rng.below(16);
  std::memset(dst + n, CANARY, GUARD);
  long got = gvfs_cache_pread(&ctx, f, size_of(f), h, dst, n, off);
  check_read(what, me, it, f, size_of(f), off, n, got, dst, fail, false);
  progress.fetch_add(1, std::memory_order_relaxed);
  return got;
}

// ---------------------------------------------------------------- phase: same page / range
std::atomic<gvfs_u64> same_reads{0};
gvfs_u64 sp_hint;  // the shared hint of the multi-page rounds (device atomics)

// The 4 pages of the range and their readahead fit the free ways of any one set: no eviction.
bool multi_rounds_ok() { return cfg.ways >= 4 + cfg.ra; }

void reset_pool() {  // the host's rt.evict: only while no device thread runs
  const size_t n = (size_t)cfg.sets * cfg.ways;
  std::memset(ctx.pt.state, 0, n * sizeof(gvfs_u32));
  std::memset(ctx.pt.tag, 0, n * sizeof(gvfs_u64));
  std::memset(ctx.pt.ref, 0, n * sizeof(gvfs_u32));
  std::memset(ctx.pt.hand, 0, cfg.sets * sizeof(gvfs_u32));
}

void same_thread(int me, Barrier *bar) {
  be_pt_thread(me);
  Rng rng(cfg.seed * 1000003u + (unsigned)me + 77u);
  static thread_local gvfs_u8 buf[BUF + 64];
  for (unsigned r = 0; r < cfg.rounds; ++r) {
    const gvfs_u64 f = SP_BASE + r;
    const bool multi = (r & 1u) && multi_rounds_ok();
    const gvfs_u64 page = 2 + r % 7;
    if (multi) {
      bar->wait();
      if (me == 0) { reset_pool(); sp_hint = page << PAGE_SHIFT; }
      bar->wait();
      // Everybody reads the same 4 pages; the hint says "sequential", so the first miss also
      // claims the following pages as readahead (bounded by the 4 + ra <= ways free slots).
      read_checked("same-range", me, r, buf, rng, f, page << PAGE_SHIFT, 4 * PSZ, &sp_hint, false);
    } else {
      bar->wait();
      const gvfs_u64 in = rng.below(PSZ), len = 1 + rng.below(PSZ - in);
      read_checked("same-page", me, r, buf, rng, f, (page << PAGE_SHIFT) + in, len, nullptr, false);
    }
    same_reads.fetch_add(1, std::memory_order_relaxed);
    bar->wait();
    if (me == 0) {
      const unsigned hi = page + (multi ? 4 : 1);
      for (unsigned p = 0; p < SP_PAGES; ++p) {
        const gvfs_u32 c = sp_fills[r][p].load(std::memory_order_relaxed);
        if (p >= page && p < hi)
          CHECK(c == 1, "round %u (%s): page %u was filled %u times (P3: one fill per page)", r,
                multi ? "same range" : "same page", p, c);
        else if (multi && p >= hi && p < hi + cfg.ra)
          CHECK(c <= 1, "round %u: readahead page %u was filled %u times", r, p, c);
        else
          CHECK(c == 0, "round %u: page %u, not read, was filled %u times", r, p, c);
      }
      // One FILL in all: the first miss saw the hint, so it claimed the rest of the range as
      // readahead before anyone could reach those pages (they wait for its first page).
      const gvfs_u32 nf = sp_round_fills[r].load(std::memory_order_relaxed);
      CHECK(nf == 1 || (multi && cfg.ra < 3), "round %u (%s): %u FILLs", r, multi ? "same range" : "same page", nf);
    }
  }
}

// ---------------------------------------------------------------- phase: random (and fail)
std::atomic<gvfs_u64> pt_reads{0}, huge_reads{0}, opens{0}, open_errs{0}, stale_reads{0};
std::atomic<bool> stop_forget{false};

gvfs_u64 random_len(Rng &rng) {
  const gvfs_u64 k = rng.below(16);
  if (k == 0) return 0;
  if (k < 3) return 1 + rng.below(BUF - 64);  // many pages: several runs, ra bounded by the lane
  return 1 + rng.below(600);
}

void name_op(int me, unsigned it, Rng &rng, gvfs_u8 *buf, bool fail) {
  const unsigned pick = (unsigned)rng.below(12);
  if (pick == 0) {
    CHECK(gvfs_open(&ctx, "/missing", GVFS_O_RDONLY) == -GVFS_ENOENT, "thread %d: open /missing", me);
    return;
  }
  char path[16];
  unsigned p = 0;
  if (pick == 1) std::snprintf(path, sizeof path, "/flaky");
  else { p = (unsigned)rng.below(NPATHS); std::snprintf(path, sizeof path, "/p%u", p); }
  const int fd = gvfs_open(&ctx, path, GVFS_O_RDONLY);
  opens.fetch_add(1, std::memory_order_relaxed);
  if (pick == 1 && fd == -GVFS_EIO) { open_errs.fetch_add(1, std::memory_order_relaxed); return; }
  CHECK(fd >= GVFS_FD_BASE, "thread %d iter %u: open(%s) = %d", me, it, path, fd);
  gvfs_fdent *e = gvfs_fd_get(&ctx, fd);
  CHECK(e && e->kind == GVFS_FD_CACHED, "thread %d: fd %d not a cached fd", me, fd);
  const gvfs_u64 f = e->file_no;
  if (pick == 1) {
    CHECK(f == FLAKY_NO, "thread %d: /flaky opened as file_no %llu", me, (ull)f);
  } else {
    // A version the server handed out for THIS path: right path, and not newer than the
    // newest (the server's load of changed[p] happened before our answer: coherence).
    CHECK(f >= PATH_BASE && (f - PATH_BASE) % NPATHS == p, "thread %d iter %u: open(%s) gave file_no %llu", me, it,
          path, (ull)f);
    CHECK((f - PATH_BASE) / NPATHS <= changed[p].load(std::memory_order_relaxed),
          "thread %d: open(%s) gave version %llu never handed out", me, path, (ull)((f - PATH_BASE) / NPATHS));
  }
  gvfs_stat st{};
  CHECK(gvfs_fstat(&ctx, fd, &st) == 0 && st.size == size_of(f) && st.mtime_ns == f * 1000u + 7u &&
        st.mode == 0100644, "thread %d: fstat of fd %d (file_no %llu) wrong", me, fd, (ull)f);
  for (int k = 0; k < 2; ++k) {
    const gvfs_u64 size = size_of(f);
    const gvfs_u64 off = k ? rng.below(size + 100) : 0;
    const gvfs_u64 n = 1 + rng.below(1200);
    gvfs_u8 *dst = buf + rng.below(16);
    std::memset(dst + n, CANARY, GUARD);
    const long got = gvfs_pread(&ctx, fd, dst, n, off);
    // -ESTALE (or a prefix) only for a version the file has moved past.
    const bool stale_ok = f >= PATH_BASE && (f - PATH_BASE) / NPATHS < changed[p].load(std::memory_order_relaxed);
    if (got == -GVFS_ESTALE) stale_reads.fetch_add(1, std::memory_order_relaxed);
    check_read("fd pread", me, it, f, size, off, n, got, dst, fail, stale_ok);
  }
  CHECK(gvfs_close(&ctx, fd) == 0, "thread %d: close(%d)", me, fd);
  CHECK(gvfs_close(&ctx, fd) == -GVFS_EBADF, "thread %d: second close(%d)", me, fd);
}

void random_thread(int me, bool fail) {
  be_pt_thread(me);
  Rng rng(cfg.seed * 1000003u + (unsigned)me + (fail ? 5000u : 0u));
  static thread_local gvfs_u8 buf[BUF + 64];
  const unsigned iters = fail ? cfg.iters / 2 : cfg.iters;
  for (unsigned it = 0; it < iters; ++it) {
    const unsigned pick = (unsigned)rng.below(100);
    if (pick < 8) {
      name_op(me, it, rng, buf, fail);
    } else if (pick < 11) {
      // Past page 2^40 (byte 2^48 with 256-byte pages): around the cache, whatever the pool holds.
      const gvfs_u64 off = (1ull << 48) - 300 + rng.below(HUGE_SIZE - (1ull << 48) + 400);
      read_checked("huge", me, it, buf, rng, HUGE_NO, off, 1 + rng.below(3000), nullptr, fail);
      huge_reads.fetch_add(1, std::memory_order_relaxed);
    } else if (pick < 30) {
      // A sequential run through one file, sharing its hint with every other thread (as
      // threads share an fd): readahead claims race with other readers and evictions.
      const gvfs_u64 f = 1 + rng.below(NSTATIC), size = size_of(f);
      gvfs_u64 pos = rng.below(size);
      for (int k = 0; k < 6 && pos < size; ++k) {
        const gvfs_u64 n = 32 + rng.below(700);
        long got = read_checked("sequential", me, it, buf, rng, f, pos, n, &hint[f], fail);
        pt_reads.fetch_add(1, std::memory_order_relaxed);
        if (got <= 0) break;
        pos += (gvfs_u64)got;
      }
    } else {
      const gvfs_u64 f = 1 + rng.below(NSTATIC), size = size_of(f);
      const gvfs_u64 off = rng.below(size + 300), n = random_len(rng);
      read_checked("random", me, it, buf, rng, f, off, n, rng.below(4) == 0 ? &hint[f] : nullptr, fail);
      pt_reads.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// The host and the device changing what the name cache knows, while it is used.
void forget_thread(int me) {
  be_pt_thread(me);
  Rng rng(cfg.seed * 31u + 5u);
  unsigned it = 0;
  while (!stop_forget.load(std::memory_order_relaxed)) {
    char path[16];
    const unsigned p = (unsigned)rng.below(NPATHS);
    std::snprintf(path, sizeof path, "/p%u", p);
    gvfs_name_forget(&ctx.files, gvfs_name_index(&ctx.files, path));  // as after a device write
    if (it % 3 == 0)  // the host's _bump_epoch (a launch, or rt.revalidate())
      std::atomic_ref<gvfs_u32>(*ctx.files.epoch).fetch_add(1, std::memory_order_relaxed);
    if (it % 5 == 0) changed[p].fetch_add(1, std::memory_order_relaxed);  // the file changes on disk
    ++it;
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
}

// ---------------------------------------------------------------- the warp kernel
struct WarpArgs {
  gvfs_ctx *ctx;
  unsigned iters;
  int fail;
  unsigned seed;
  gvfs_u8 *bufs;  // [nwarps][BUF + 64]
};
std::atomic<gvfs_u64> warp_reads{0};

}  // namespace

extern "C" __global__ void pt_warp_kernel(WarpArgs *a) {
  const gvfs_u32 FULL = 0xffffffffu;
  const unsigned warp = blockIdx.x * (blockDim.x / 32u) + threadIdx.x / 32u;
  const gvfs_u32 lane = gvfs_lane_id();
  Rng rng(a->seed * 4099u + warp);  // every lane draws the same numbers: same arguments
  gvfs_u8 *buf = a->bufs + (size_t)warp * (BUF + 64);
  for (unsigned it = 0; it < a->iters; ++it) {
    const unsigned pick = (unsigned)rng.below(10);
    gvfs_u64 f, off, n;
    if (pick == 0) {
      f = HUGE_NO;
      off = (1ull << 48) - 300 + rng.below(1000);
      n = 1 + rng.below(3000);
    } else {
      f = 1 + rng.below(NSTATIC);
      off = rng.below(size_of(f) + 200);
      n = pick < 3 ? 1 + rng.below(BUF - 64) : 1 + rng.below(1500);  // up to 48 pages: two rounds of 32
    }
    const size_t shift = rng.below(16);
    gvfs_u8 *dst = buf + shift;
    if (lane == 0) std::memset(dst + n, CANARY, GUARD);
    gvfs_syncwarp(FULL);
    const long got = gvfs_cache_pread_warp(a->ctx, f, size_of(f), dst, n, off);
    const long got0 = (long)gvfs_shfl_u64(FULL, (gvfs_u64)got, 0);
    CHECK(got == got0, "warp %u iter %u: lane %u returned %ld, lane 0 %ld", warp, it, lane, got, got0);
    gvfs_syncwarp(FULL);  // every lane's copies are done before lane 0 checks them
    if (lane == 0) {
      check_read("warp", (int)(1000 + warp), it, f, size_of(f), off, n, got, dst, a->fail != 0, false);
      warp_reads.fetch_add(1, std::memory_order_relaxed);
      progress.fetch_add(1, std::memory_order_relaxed);
    }
    gvfs_syncwarp(FULL);  // and before anyone writes the buffer again
  }
}

namespace {
void launch_warps(WarpArgs *args) {
  if (cfg.warps == 0) return;
  const unsigned grid[3] = {cfg.warps, 1, 1}, block[3] = {32, 1, 1};
  unsigned char codes[1] = {0};
  unsigned long long values[1] = {(unsigned long long)(uintptr_t)args};
  char err[256] = {0};
  int rc = gvfs_cpu_launch((void *)&pt_warp_kernel, grid, block, 1, codes, values, cfg.warps, 1u << 20, err,
                           (int)sizeof err);
  CHECK(rc == 0, "gvfs_cpu_launch: %s", err);
}

// ---------------------------------------------------------------- P4's case (see the hook at the top)
gvfs_u64 recycled_to = 0;  // the key the recycled slot is given
int recycled_slot = -1;
std::atomic<int> recycles{0};

void recycle_slot(const gvfs_pagetable *pt, gvfs_u32 s) {
  // Another miss's work, as gvfs_pt_claim and its fill do it: VALID,0 -> EVICTING, the new
  // tag, the new page's bytes, VALID (release). The reader then pins and re-reads the tag.
  gvfs_u32 expect = GVFS_SLOT_VALID;
  CHECK(ref(&pt->state[s]).compare_exchange_strong(expect, GVFS_SLOT_EVICTING, std::memory_order_acq_rel),
        "recycle: slot %u is not VALID and unpinned (state %#x)", s, expect);
  ref(&pt->tag[s]).store(recycled_to, std::memory_order_relaxed);
  const gvfs_u64 f2 = recycled_to >> GVFS_PAGE_BITS, page2 = recycled_to & ((1ull << GVFS_PAGE_BITS) - 1);
  for (gvfs_u64 k = 0; k < PSZ; ++k) pt->pool[((gvfs_u64)s << PAGE_SHIFT) + k] = pat(f2, (page2 << PAGE_SHIFT) + k);
  ref(&pt->state[s]).store(GVFS_SLOT_VALID, std::memory_order_release);
  recycled_slot = (int)s;
  recycles.fetch_add(1);
}

struct UnitWarpArgs {
  gvfs_ctx *ctx;
  gvfs_u8 *buf;
  gvfs_u64 off, n;
  long got;
};
}  // namespace

// One warp reads [off, off + n) of the unit file with gvfs_cache_pread_warp.
extern "C" __global__ void pt_unit_warp_kernel(UnitWarpArgs *a) {
  const long got = gvfs_cache_pread_warp(a->ctx, UNIT_NO, size_of(UNIT_NO), a->buf, a->n, a->off);
  if (gvfs_lane_id() == 0) a->got = got;
}

namespace {
void launch_one_warp(void *kernel, void *args) {
  const unsigned grid[3] = {1, 1, 1}, block[3] = {32, 1, 1};
  unsigned char codes[1] = {0};
  unsigned long long values[1] = {(unsigned long long)(uintptr_t)args};
  char err[256] = {0};
  int rc = gvfs_cpu_launch(kernel, grid, block, 1, codes, values, 1, 1u << 20, err, (int)sizeof err);
  CHECK(rc == 0, "gvfs_cpu_launch: %s", err);
}

// ---------------------------------------------------------------- phase: unit (one thread)
void unit_phase() {
  be_pt_thread(0);
  gvfs_pagetable *pt = &ctx.pt;
  static gvfs_u8 buf[BUF + 64];
  Rng rng(cfg.seed);
  reset_pool();
  const gvfs_u64 key = gvfs_pt_key(UNIT_NO, 0);
  const gvfs_u32 set = gvfs_pt_set_of(pt, key);
  // Pin every way of that set with pages of another file (MISS: each claimed FILLING).
  std::vector<gvfs_u32> held;
  for (gvfs_u64 page = 0; held.size() < cfg.ways; ++page) {
    const gvfs_u64 k2 = gvfs_pt_key(UNIT2_NO, page);
    if (gvfs_pt_set_of(pt, k2) != set) continue;
    gvfs_u32 slot, kind;
    bool ev;
    CHECK(gvfs_pt_acquire(pt, k2, &slot, &ev, &kind) == GVFS_PT_MISS && !ev, "unit: claim of way %zu", held.size());
    held.push_back(slot);
  }
  {
    gvfs_u32 slot, kind;
    bool ev;
    CHECK(gvfs_pt_acquire(pt, key, &slot, &ev, &kind) == GVFS_PT_FULL, "unit: a set whose ways are all pinned is not FULL");
  }
  // FULL: the read goes around the cache: one FILL, the right bytes, no slot taken.
  read_checked("unit-full", 0, 0, buf, rng, UNIT_NO, 10, 200, nullptr, false);  // inside page 0
  CHECK(unit_fills.load() == 1, "unit: FULL read made %u fills", unit_fills.load());
  for (gvfs_u32 w = 0; w < cfg.ways; ++w) CHECK(ctx.pt.tag[set * cfg.ways + w] != key, "unit: FULL read took a slot");
  // The fills fail: EMPTY (with the pins still held), then nothing once unpinned.
  for (gvfs_u32 s : held) gvfs_pt_fill_done(pt, s, false);
  for (gvfs_u32 s : held) {
    CHECK(gvfs_slot_kind(ctx.pt.state[s]) == GVFS_SLOT_EMPTY && ctx.pt.tag[s] == 0, "unit: failed fill not EMPTY");
    gvfs_pt_unpin(pt, s);
    CHECK(ctx.pt.state[s] == GVFS_SLOT_EMPTY, "unit: slot %u state %#x after unpin", s, ctx.pt.state[s]);
  }
  // Now a miss: one FILL, VALID; the next read of the page hits.
  read_checked("unit-miss", 0, 1, buf, rng, UNIT_NO, 0, 256, nullptr, false);
  CHECK(unit_fills.load() == 2, "unit: miss made %u fills in all", unit_fills.load());
  read_checked("unit-hit", 0, 2, buf, rng, UNIT_NO, 5, 200, nullptr, false);
  CHECK(unit_fills.load() == 2, "unit: a hit made a fill");
  // A warp's hit on that page whose slot is recycled between its look and its pin (P4): the
  // warp may copy the other page's bytes, but must return the file's, read the general way
  // (one more FILL), and leave the recycled slot unpinned, holding its new page.
  for (gvfs_u64 page = 0;; ++page) {
    recycled_to = gvfs_pt_key(UNIT2_NO, page);
    if (gvfs_pt_set_of(pt, recycled_to) == set) break;
  }
  static gvfs_u8 wbuf[BUF + 64];
  std::memset(wbuf, 0xEE, sizeof wbuf);  // poison
  UnitWarpArgs ua{&ctx, wbuf, 5, 200, 0};
  std::memset(wbuf + ua.n, CANARY, GUARD);
  recycle_armed.store(true);
  launch_one_warp((void *)&pt_unit_warp_kernel, &ua);
  CHECK(!recycle_armed.load() && recycles.load() == 1, "unit: the warp read did not look its page up once");
  check_read("unit-recycled", 0, 3, UNIT_NO, size_of(UNIT_NO), ua.off, ua.n, ua.got, wbuf, false, false);
  CHECK(unit_fills.load() == 3, "unit: a hit on a recycled slot made %u fills in all, want 3", unit_fills.load());
  CHECK(ctx.pt.state[recycled_slot] == GVFS_SLOT_VALID && ctx.pt.tag[recycled_slot] == recycled_to,
        "unit: the recycled slot is left state %#x tag %llx", ctx.pt.state[recycled_slot],
        (ull)ctx.pt.tag[recycled_slot]);
  reset_pool();
}

// ---------------------------------------------------------------- end-of-phase checks
void check_quiescent(const char *phase) {
  const size_t n = (size_t)cfg.sets * cfg.ways;
  for (size_t s = 0; s < n; ++s) {
    const gvfs_u32 st = ctx.pt.state[s];
    CHECK(st == GVFS_SLOT_EMPTY || st == GVFS_SLOT_VALID, "after %s: slot %zu state %#x (pinned or not published)",
          phase, s, st);
    if (st == GVFS_SLOT_VALID) {  // a VALID slot holds its page's bytes (P5), whatever file it is
      const gvfs_u64 key = ctx.pt.tag[s], f = key >> GVFS_PAGE_BITS, page = key & ((1ull << GVFS_PAGE_BITS) - 1);
      CHECK(size_of(f) != 0 && (page << PAGE_SHIFT) < size_of(f), "after %s: slot %zu holds unknown key", phase, s);
      CHECK(gvfs_pt_set_of(&ctx.pt, key) == s / cfg.ways, "after %s: slot %zu is in the wrong set", phase, s);
      const gvfs_u64 len = std::min<gvfs_u64>(PSZ, size_of(f) - (page << PAGE_SHIFT));
      for (gvfs_u64 k = 0; k < len; ++k)
        CHECK(ctx.pt.pool[(s << PAGE_SHIFT) + k] == pat(f, (page << PAGE_SHIFT) + k),
              "after %s: slot %zu (file %llu page %llu) byte %llu wrong", phase, s, (ull)f, (ull)page, (ull)k);
      for (size_t t = s + 1; t < (s / cfg.ways + 1) * cfg.ways; ++t)
        CHECK(ctx.pt.state[t] != GVFS_SLOT_VALID || ctx.pt.tag[t] != key, "after %s: key in two slots (P2)", phase);
    }
  }
  for (unsigned s = 0; s < cfg.sets; ++s) CHECK(ctx.pt.set_lock[s] == 0, "after %s: set %u still locked", phase, s);
  for (unsigned i = 0; i < ctx.lanes.count; ++i)
    CHECK((ctx.lanes.lock[i] & GVFS_LANE_HELD) == 0u, "after %s: lane %u held", phase, i);
  for (unsigned i = 0; i < cfg.threads * 2 + 8; ++i)
    CHECK(ctx.files.fds[i].state == GVFS_FD_FREE, "after %s: fd %u left open", phase, i + GVFS_FD_BASE);
}

gvfs_u64 counter(const gvfs_ctx &c, gvfs_u32 which) { return c.counters[which]; }

bool parse(int argc, char **argv) {
#ifdef GVFS_TSAN_SELFTEST_PT
  const bool built = true;
#else
  const bool built = false;
#endif
  if (!parse_options("tsan_pagetable", cfg, argc, argv,
                     {{"--sets=", &cfg.sets}, {"--ways=", &cfg.ways}, {"--warps=", &cfg.warps},
                      {"--witers=", &cfg.witers}, {"--rounds=", &cfg.rounds}, {"--ra=", &cfg.ra},
                      {"--push=", &cfg.push}},
                     built, "GVFS_TSAN_SELFTEST_PT", {"relaxed", "wait", "unpin"}))
    return false;
  const bool pow2 = cfg.sets && (cfg.sets & (cfg.sets - 1)) == 0;
  return pow2 && cfg.ways >= 1 && cfg.ways <= GVFS_PT_MAX_WAYS && lanes_ok(cfg) && cfg.rounds <= MAX_ROUNDS && cfg.ra <= 15;
}

template <class F> void run_threads(unsigned n, F &&body) {
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < n; ++t) ts.emplace_back(body, (int)t);
  for (auto &t : ts) t.join();
}

}  // namespace

int main(int argc, char **argv) {
  if (!parse(argc, argv)) {
    std::fprintf(stderr, "usage: tsan_pagetable [--sets=N (power of 2)] [--ways=N] [--lanes=N] [--servers=N]"
                         " [--threads=N] [--iters=N] [--warps=N] [--witers=N] [--rounds=N] [--ra=N] [--push=BYTES] [--seed=N]"
                         " [--selftest=relaxed|wait|unpin]\n");
    return 2;
  }
  const unsigned nl = cfg.lanes, nslots = cfg.sets * cfg.ways;
  const unsigned data_bytes = GVFS_LANE_DATA_MIN;  // 16 pages: a run of up to 16, readahead up to 15
  // "Pinned host memory" and "device memory": plain heap arrays.
  LaneMemory mem(nl, data_bytes);
  std::vector<gvfs_u64> counters_warp(GVFS_NCOUNTERS, 0);
  std::vector<gvfs_u32> state(nslots, 0), refbits(nslots, 0), set_lock(cfg.sets, 0), hand(cfg.sets, 0);
  std::vector<gvfs_u64> tag(nslots, 0);
  std::vector<gvfs_u8> pool((size_t)nslots << PAGE_SHIFT, 0);
  const unsigned max_fds = cfg.threads * 2 + 8;
  if (gvfs_ctx_bytes(max_fds) > sizeof(ctx_mem)) {
    std::fprintf(stderr, "--threads=%u: more fds than the harness's table holds (%u)\n", cfg.threads, GVFS_FD_TABLE_MIN);
    return 2;
  }
  std::vector<gvfs_nameent> names(16);
  std::memset(names.data(), 0, names.size() * sizeof(gvfs_nameent));
  gvfs_u32 files_words[2] = {1, 0};  // epoch, fd_hint
  std::vector<gvfs_u8> warp_bufs((size_t)std::max(1u, cfg.warps) * (BUF + 64), 0);
  for (auto &c : changed) c.store(0);
  for (auto &row : sp_fills) for (auto &c : row) c.store(0);
  for (auto &c : sp_round_fills) c.store(0);

  mem.attach(ctx, data_bytes);
  ctx.readahead_pages = cfg.ra;
  ctx.fill_push_bytes = cfg.push;
  // The FILL_PUSH stage ("device memory", lanes x data_bytes) when fills are pushed, and
  // canary bytes past it (nobody writes there); none (null) otherwise.
  constexpr size_t STAGE_GUARD = 64;
  constexpr gvfs_u8 STAGE_CANARY = 0x5A;
  std::vector<gvfs_u8> stage(cfg.push ? (size_t)nl * data_bytes + STAGE_GUARD : 0, 0);
  for (size_t k = 0; k < stage.size(); ++k) stage[k] = k < (size_t)nl * data_bytes ? 0 : STAGE_CANARY;
  ctx.fill_stage = cfg.push ? stage.data() : nullptr;
  ctx.pt = gvfs_pagetable{.nsets = cfg.sets, .ways = cfg.ways, .page_shift = PAGE_SHIFT, .reserved = 0,
                          .state = state.data(), .tag = tag.data(), .ref = refbits.data(),
                          .set_lock = set_lock.data(), .hand = hand.data(), .pool = pool.data()};
  ctx.files = gvfs_files{.max_fds = max_fds, .nnames = (gvfs_u32)names.size(), .epoch = &files_words[0],
                         .fd_hint = &files_words[1], .fds = gvfs_ctx_fds(&ctx), .names = names.data()};
  ctx_warp = ctx;
  ctx_warp.counters = counters_warp.data();

  const auto t0 = std::chrono::steady_clock::now();
  Servers servers(cfg.servers, server_thread);
  Watchdog watchdog("reads");

  // unit
  unit_phase();
  check_quiescent("unit");
  // same
  {
    Barrier bar(cfg.threads);
    run_threads(cfg.threads, [&](int me) { same_thread(me, &bar); });
    check_quiescent("same");
  }
  const gvfs_u64 waits_same = counter(ctx, GVFS_C_FILL_WAITS);
  // random, then fail: per-thread readers, the name-cache traffic, the warp kernel
  gvfs_u64 full_random = 0;
  for (int fail = 0; fail < 2; ++fail) {
    const gvfs_u64 fills0 = counter(ctx, GVFS_C_FILLS), misses0 = counter(ctx, GVFS_C_CACHE_MISSES);
    const gvfs_u64 huge0 = huge_reads.load();
    if (fail) reset_pool();  // (rt.evict) so that no bad page is cached from the random phase
    fail_mode.store(fail, std::memory_order_relaxed);
    stop_forget.store(false);
    WarpArgs wa{&ctx_warp, fail ? cfg.witers / 2 : cfg.witers, fail, cfg.seed + 17u * (unsigned)fail, warp_bufs.data()};
    std::thread kernel([&] { launch_warps(&wa); });
    std::thread forget([&] { forget_thread((int)cfg.threads); });
    run_threads(cfg.threads, [&](int me) { random_thread(me, fail != 0); });
    kernel.join();
    stop_forget.store(true);
    forget.join();
    fail_mode.store(0, std::memory_order_relaxed);
    check_quiescent(fail ? "fail" : "random");
    if (!fail) {
      // Per-thread path: FILLs = one per miss run + one per piece read around the cache. The
      // pieces read around: pages past 2^40, and FULL sets (no failed fills in this phase);
      // name-cache reads may also go around, for -ESTALE after a change.
      const gvfs_u64 fills = counter(ctx, GVFS_C_FILLS) - fills0, misses = counter(ctx, GVFS_C_CACHE_MISSES) - misses0;
      const gvfs_u64 around = fills - misses, huge = huge_reads.load() - huge0;
      full_random = around > huge ? around - huge : 0;
    }
  }
  // recover: every byte of every static file reads back whole, bad pages included.
  run_threads(cfg.threads, [&](int me) {
    be_pt_thread(me);
    Rng rng(cfg.seed * 99u + (unsigned)me);
    static thread_local gvfs_u8 buf[BUF + 64];
    for (gvfs_u64 f = 1; f <= (gvfs_u64)NSTATIC; ++f)
      for (gvfs_u64 off = (gvfs_u64)me * 97u % 512u; off < size_of(f); off += 2000)
        read_checked("recover", me, 0, buf, rng, f, off, 2000, nullptr, false);
  });
  check_quiescent("recover");

  servers.stop();
  watchdog.stop();
  mem.check_all_answered(answered.load());
  for (size_t k = (size_t)nl * data_bytes; k < stage.size(); ++k)
    CHECK(stage[k] == STAGE_CANARY, "a write past the FILL_PUSH stage (byte %zu)", k);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const gvfs_u64 reads = same_reads.load() + pt_reads.load() + huge_reads.load() + warp_reads.load();
  const gvfs_u64 pushed = counter(ctx, GVFS_C_FILLS_PUSHED), pushed_warp = counter(ctx_warp, GVFS_C_FILLS_PUSHED);
  std::printf("reads=%llu fills=%llu pushed=%llu lookups=%llu opens=%llu (hinted %llu) pool=%ux%u lanes=%u servers=%u "
              "threads=%u warps=%u push=%u seconds=%.2f\n",
              (ull)reads, (ull)n_fills.load(), (ull)n_pushes.load(), (ull)n_lookups.load(), (ull)opens.load(),
              (ull)counter(ctx, GVFS_C_OPENS_HINTED), cfg.sets,
              cfg.ways, nl, cfg.servers, cfg.threads, cfg.warps, cfg.push, secs);
  std::printf("  per-thread: hits=%llu misses=%llu fill_waits=%llu (same-phase %llu) evictions=%llu readaheads=%llu "
              "full_read_around=%llu huge=%llu; warp: reads=%llu misses=%llu hits=%llu fill_waits=%llu evictions=%llu; "
              "pushed: per-thread %llu, warp %llu; eio=%llu estale=%llu (stale preads %llu) flaky_errs=%llu\n",
              (ull)counter(ctx, GVFS_C_CACHE_HITS), (ull)counter(ctx, GVFS_C_CACHE_MISSES),
              (ull)counter(ctx, GVFS_C_FILL_WAITS), (ull)waits_same, (ull)counter(ctx, GVFS_C_EVICTIONS),
              (ull)counter(ctx, GVFS_C_READAHEADS), (ull)full_random, (ull)huge_reads.load(), (ull)warp_reads.load(),
              (ull)counter(ctx_warp, GVFS_C_CACHE_MISSES), (ull)counter(ctx_warp, GVFS_C_CACHE_HITS),
              (ull)counter(ctx_warp, GVFS_C_FILL_WAITS), (ull)counter(ctx_warp, GVFS_C_EVICTIONS), (ull)pushed,
              (ull)pushed_warp, (ull)n_eio.load(),
              (ull)n_estale.load(), (ull)stale_reads.load(), (ull)open_errs.load());
  // Coverage the run must have had (deterministic given the sizes: the files are several
  // times the pool, and sequential runs start on pages nobody has).
  CHECK(counter(ctx, GVFS_C_EVICTIONS) > 0 && (cfg.ra == 0 || counter(ctx, GVFS_C_READAHEADS) > 0), "no evictions or no readahead");
  CHECK(n_eio.load() > 0 && n_lookups.load() > 0, "no failed fills or no lookups");
  CHECK(opens.load() == 0 || counter(ctx, GVFS_C_OPENS_HINTED) > 0, "no open went through its hint (files.cuh, N5)");
  // Every FILL and FILL_PUSH the devices counted reached the server, and no other.
  const gvfs_u64 dev_fills = counter(ctx, GVFS_C_FILLS) + counter(ctx_warp, GVFS_C_FILLS);
  CHECK(n_fills.load() == dev_fills && n_pushes.load() == pushed + pushed_warp,
        "the server saw %llu fills (%llu pushed), the devices counted %llu (%llu pushed)", (ull)n_fills.load(),
        (ull)n_pushes.load(), (ull)dev_fills, (ull)(pushed + pushed_warp));
  // The push path was taken exactly when asked for: never with --push=0; with a threshold of
  // a page or less every cache fill is pushed, on both paths (reads around the cache stay FILLs).
  if (cfg.push == 0) CHECK(pushed + pushed_warp == 0, "%llu fills pushed with --push=0", (ull)(pushed + pushed_warp));
  else CHECK(pushed + pushed_warp > 0, "--push=%u: no fill was pushed", cfg.push);
  if (cfg.push != 0 && cfg.push <= PSZ)
    CHECK(pushed > 0 && (cfg.warps == 0 || pushed_warp > 0) && n_fills.load() > n_pushes.load(),
          "--push=%u: pushed %llu per-thread, %llu warp, of %llu fills", cfg.push, (ull)pushed, (ull)pushed_warp,
          (ull)n_fills.load());
  return 0;
}
