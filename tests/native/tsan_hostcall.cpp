// ThreadSanitizer harness for the device half of the hostcall protocol
// (device/gvfs/hostcall.cuh, and the calls built on it in files.cuh / stdio.cuh).
//
// Built and run by tests/native/run-tsan.sh:
//   g++ -std=c++20 -O1 -g -fsanitize=thread -I device -pthread tests/native/tsan_hostcall.cpp
// (what it shares with tsan_pagetable.cpp is in tsan_common.h).
//
// "Device threads" are plain std::threads that set the CPU port's thread-locals
// (threadIdx, blockIdx, blockDim, gridDim) themselves and then call the real device code:
// the lane steps (gvfs_lane_claim / _acquire / _req / _data / _submit / _wait / _release, in
// both their forms: on a gvfs_claim and on a bare lane index), gvfs_hostcall(_result), and
// the calls built on the lanes: gvfs_path_call, gvfs_pread_hostcall, gvfs_pwrite_hostcall,
// gvfs_write_line, gvfs_fprintf (formats into the lane it holds), gvfs_read_line, gvfs_nop,
// and gvfs_wallclock_ns with its device-side cache (a seqlock that hostcalls refresh). The
// device fd table, name cache and page cache above them are not exercised here.
//
// One or more "server" threads stand in for the Python server (gpuvfs/hostcall/server.py):
// each sweeps its share of the lanes, takes a lane when an acquire load of req_word differs
// from its own taken[] word, routes by the word's opcode, reads the request record (except
// for the word-only opcodes, NOP and WALLCLOCK, whose record it must not need) and its
// payload, writes a response that is a function of the request (and a byte pattern derived
// from the request into the payload), and publishes resp_word with a release store: a NOP's
// own word, a small result without aux in the word's code (most of the time), a result equal
// to the request's length as code 255 (most of the time), anything else through the
// response record (tsan_common.h, ServerSweep). The device threads' calls thus
// decode answers both ways: gvfs_lane_wait and gvfs_lane_wait_result, from the word alone
// and from the record.
//
// Every answer is checked by the device thread that asked (result, aux words, every payload
// byte), the server checks every payload byte it receives and the invariants it can see
// (I2: a lane it takes is PENDING; I4: each request word's seq bits move by one and each
// word is answered once; a record's opcode is the word's), and a shadow owner word per lane
// checks I1 (one owner at a time). Any failed check prints a line and exits 1; any TSan
// report exits 66 (TSAN_OPTIONS=halt_on_error=1).
//
// Built with -DGVFS_TSAN_SELFTEST, `--selftest=MODE` breaks the protocol on purpose, so that
// run-tsan.sh can prove TSan catches it:
//   relaxed  the server writes the whole response, then stores resp_word with a RELAXED store
//            (the values are right on x86: only the missing happens-before edge is wrong);
//   early    the server publishes resp_word (release, code 0) before it writes the record and
//            payload;
//   submit   the device publishes req_word with a relaxed store (device-side bug);
//   unlock   the device drops the lane's lock with a relaxed store, so the next owner does
//            not see the previous owner's (and through it the server's) accesses;
//   claim    the device takes a lane with a RELAXED fetch_or (the lock word's values are as
//            ever: only the acquire that pairs with the last owner's release is missing).
#include "gpuvfs.cuh"
#include "tsan_common.h"

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace tsan;

namespace {

// ---------------------------------------------------------------- configuration
struct Config : Options {  // lanes, servers, threads, iters, seed, selftest ("", "relaxed", "early", "submit", "unlock")
  unsigned data_bytes = GVFS_LANE_DATA_MIN;
  Config() : Options(/*threads=*/16, /*iters=*/2000) {}
};
Config cfg;

enum : gvfs_u32 {    // 8 bits, as every opcode (they travel in req_word's top byte)
  T_OP_CALC = 100,   // no payload: result = offset*3 + length; aux = (fd^flags, ~offset, opcode*7)
  T_OP_XCHG = 101,   // payload in (data_len bytes, pattern from arg[0]); payload out (length
                     // bytes, pattern from offset): result = length, aux0 = checksum(in)
  T_OP_SMALL = 102,  // no payload: result = offset % 255 - 127 (all of -127..127), no aux:
                     // the answer fits in the response word's code
  T_OP_UNKNOWN = 0xFE // answered -ENOSYS
};

constexpr int FIRST_FD = 3;
constexpr int NFILES = 8;

// ---------------------------------------------------------------- patterns
// A virtual file per fd: its size and its bytes.
gvfs_u64 file_size(int fd) { return 3000u + 1777u * (gvfs_u64)(fd - FIRST_FD); }
gvfs_u8 file_byte(int fd, gvfs_u64 pos) { return (gvfs_u8)(pos * 131u + (gvfs_u64)fd * 29u + (pos >> 8)); }
// Payload the device sends with T_OP_XCHG, and what the server sends back.
gvfs_u8 in_byte(gvfs_u64 seed, gvfs_u64 k) { return (gvfs_u8)(seed + k * 13u + (k >> 5)); }
gvfs_u8 out_byte(gvfs_u64 offset, gvfs_u64 k) { return (gvfs_u8)(offset * 7u + k * 3u + 0x5a); }
gvfs_u64 checksum(const gvfs_u8 *p, gvfs_u64 n) {  // FNV-1a
  gvfs_u64 h = 1469598103934665603ull;
  for (gvfs_u64 i = 0; i < n; ++i) { h ^= p[i]; h *= 1099511628211ull; }
  return h;
}

// ---------------------------------------------------------------- shared state
gvfs_ctx ctx;                                 // what a kernel receives
std::vector<std::atomic<int>> *owner;         // I1 shadow: who holds lane i (-1 nobody); relaxed
constexpr gvfs_u64 WALL_CACHE_NS = 100000;     // wall-clock cache: short, so refreshes race with readers
constexpr gvfs_u64 WALL_MAX_RTT_NS = 20000000; // (TSan is slow: allow 20 ms round trips into the cache)

// ---------------------------------------------------------------- the stand-in server
// Answers request word w of lane i: checks its payload, writes the reply payload into the
// lane's data, and returns the answer (the caller encodes it, writes it, then publishes).
gvfs_response serve(gvfs_lanes *L, gvfs_u32 i, gvfs_u32 w) {
  gvfs_response r;
  const gvfs_u32 op = w >> GVFS_WORD_SHIFT, seq = w & GVFS_WORD_SEQ_MASK;
  gvfs_request q{};
  if (!gvfs_op_word_only(op)) {
    q = L->req[i];  // a plain copy: ordered after the acquire of req_word
    CHECK(q.opcode == op, "lane %u seq %u: the record says opcode %u, the word %u", i, seq, q.opcode, op);
  }
  gvfs_u8 *d = L->data + (gvfs_u64)i * L->data_bytes;
  r.result = 0; r.aux[0] = r.aux[1] = r.aux[2] = 0;
  CHECK(q.data_len <= L->data_bytes, "lane %u: data_len %u > data_bytes", i, q.data_len);
  auto fd_ok = [](int fd) { return fd >= FIRST_FD && fd < FIRST_FD + NFILES; };
  gvfs_u64 fill_n = 0;  // bytes of payload to write back (pattern chosen below)
  int fill_kind = 0;    // 1: file bytes of fd from offset; 2: out_byte(offset, k); 3: 'a' + k % 26
  switch (op) {
    case GVFS_OP_NOP: break;
    case T_OP_SMALL: r.result = (gvfs_i64)(q.offset % 255u) - 127; break;
    case T_OP_CALC:
      r.result = (gvfs_i64)(q.offset * 3u + q.length);
      r.aux[0] = (gvfs_u64)(gvfs_u32)q.fd ^ q.flags; r.aux[1] = ~q.offset; r.aux[2] = (gvfs_u64)q.opcode * 7u;
      break;
    case T_OP_XCHG: {
      CHECK(q.length <= L->data_bytes, "lane %u: XCHG length %" PRIu64, i, (uint64_t)q.length);
      for (gvfs_u32 k = 0; k < q.data_len; ++k)
        CHECK(d[k] == in_byte(q.arg[0], k), "lane %u seq %u: XCHG payload byte %u is %u, want %u",
              i, seq, k, d[k], in_byte(q.arg[0], k));
      r.result = (gvfs_i64)q.length;
      r.aux[0] = checksum(d, q.data_len);
      r.aux[1] = q.arg[0];
      fill_n = q.length; fill_kind = 2;
      break;
    }
    case GVFS_OP_OPEN: {
      CHECK(q.data_len >= 2 && q.data_len <= GVFS_PATH_MAX, "lane %u: OPEN data_len %u", i, q.data_len);
      CHECK(d[q.data_len - 1] == 0, "lane %u: OPEN path not NUL-terminated at data_len", i);
      CHECK(std::strlen((const char *)d) + 1 == q.data_len, "lane %u: OPEN strlen+1 != data_len", i);
      unsigned n = 0;
      if (std::sscanf((const char *)d, "/f%u", &n) != 1) { r.result = -GVFS_ENOENT; break; }
      int fd = FIRST_FD + (int)(n % NFILES);
      r.result = fd; r.aux[0] = file_size(fd); r.aux[1] = (gvfs_u64)fd * 1000u; r.aux[2] = (gvfs_u64)fd << 32;
      break;
    }
    case GVFS_OP_PREAD: {
      if (!fd_ok(q.fd)) { r.result = -GVFS_EBADF; break; }
      if (q.length > L->data_bytes) { r.result = -GVFS_EINVAL; break; }
      gvfs_u64 size = file_size(q.fd);
      gvfs_u64 n = q.offset >= size ? 0 : std::min<gvfs_u64>(q.length, size - q.offset);
      r.result = (gvfs_i64)n;
      fill_n = n; fill_kind = 1;
      break;
    }
    case GVFS_OP_PWRITE: {
      if (!fd_ok(q.fd)) { r.result = -GVFS_EBADF; break; }
      if (q.length > L->data_bytes || q.data_len != q.length) { r.result = -GVFS_EINVAL; break; }
      // The device writes the file's own bytes back; a write past the end is cut there.
      gvfs_u64 size = file_size(q.fd);
      gvfs_u64 n = q.offset >= size ? 0 : std::min<gvfs_u64>(q.length, size - q.offset);
      for (gvfs_u64 k = 0; k < n; ++k)
        CHECK(d[k] == file_byte(q.fd, q.offset + k), "lane %u seq %u: PWRITE byte %" PRIu64 " wrong", i, seq,
              (uint64_t)k);
      r.result = (gvfs_i64)n;
      break;
    }
    case GVFS_OP_FSTAT:
      if (!fd_ok(q.fd)) { r.result = -GVFS_EBADF; break; }
      r.result = 0; r.aux[0] = file_size(q.fd); r.aux[1] = (gvfs_u64)q.fd * 1000u; r.aux[2] = 0100644;
      break;
    case GVFS_OP_CLOSE: r.result = fd_ok(q.fd) ? 0 : -GVFS_EBADF; break;
    case GVFS_OP_WRITE_LINE: {
      if (q.flags != 1u && q.flags != 2u) { r.result = -GVFS_EBADF; break; }
      CHECK(q.data_len == q.length, "lane %u: WRITE_LINE data_len %u != length", i, q.data_len);
      CHECK(q.data_len >= 2 && d[0] == 'L' && d[q.data_len - 1] == '.', "lane %u: WRITE_LINE payload", i);
      for (gvfs_u32 k = 0; k < q.data_len; ++k) CHECK(d[k] >= 0x20 && d[k] < 0x7f, "lane %u: WRITE_LINE byte %u", i, k);
      r.result = (gvfs_i64)q.length;
      break;
    }
    case GVFS_OP_READ_LINE: {
      CHECK(q.length >= 1 && q.length <= L->data_bytes, "lane %u: READ_LINE capacity %llu", i,
            (unsigned long long)q.length);
      fill_n = (gvfs_u64)seq % (q.length + 1); fill_kind = 3;  // a line of 'a'..'z', as long as it fits
      r.result = (gvfs_i64)fill_n;
      break;
    }
    case GVFS_OP_WALLCLOCK: {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      r.result = (gvfs_i64)ts.tv_sec * 1000000000ll + ts.tv_nsec;
      break;
    }
    default: r.result = -GVFS_ENOSYS; break;
  }
  const gvfs_u64 off = q.offset;
  const int fd = q.fd;
  for (gvfs_u64 k = 0; k < fill_n; ++k)
    d[k] = fill_kind == 1 ? file_byte(fd, off + k) : fill_kind == 2 ? out_byte(off, k) : (gvfs_u8)('a' + k % 26);
  return r;
}

void server_thread(unsigned sid) {
  gvfs_lanes *L = &ctx.lanes;
  ServerSweep sweep(L, sid, cfg.servers, cfg.seed);
  const bool sel_relaxed = cfg.selftest == "relaxed", sel_early = cfg.selftest == "early";
  sweep.run(
      [&](gvfs_u32 i, gvfs_u32 s, gvfs_u32 prev) {
        // I2: the lane is PENDING (we are the only writer of resp_word: it still answers prev).
        CHECK((ref(&L->resp_word[i]).load(std::memory_order_relaxed) & GVFS_WORD_SEQ_MASK) == (prev & GVFS_WORD_SEQ_MASK),
              "lane %u: resp_word moved under the server", i);
        if (sel_early) ref(&L->resp_word[i]).store(s & GVFS_WORD_SEQ_MASK, std::memory_order_release);  // broken on purpose
        return serve(L, i, s);
      },
      sel_early ? Publish::NONE : sel_relaxed ? Publish::RELAXED : Publish::RELEASE);
  // At the end every lane of ours is IDLE: answered, and nothing left pending.
  for (size_t j = 0; j < sweep.mine.size(); ++j) {
    const gvfs_u32 i = sweep.mine[j];
    CHECK(ref(&L->req_word[i]).load(std::memory_order_acquire) == sweep.taken[j], "lane %u: request left unanswered", i);
    CHECK((ref(&L->resp_word[i]).load(std::memory_order_relaxed) & GVFS_WORD_SEQ_MASK) ==
              (sweep.taken[j] & GVFS_WORD_SEQ_MASK),
          "lane %u: resp_word's seq != req_word's at the end", i);
  }
}

// ---------------------------------------------------------------- device threads
// The lane steps work on a gvfs_claim, whose seq the thread keeps in registers from the
// claim to the release; the harness checks that the lock word agrees with it (I5).

// Claims a lane and checks I1 and that it is IDLE.
gvfs_claim claim(gvfs_lanes *L) {
#ifdef GVFS_TSAN_SELFTEST
  if (cfg.selftest == "claim") {  // broken on purpose: gvfs_lane_claim's fetch_or, relaxed
    for (gvfs_u32 i = (gvfs_u32)(gvfs_global_tid() % L->count);; i = (i + 1u) % L->count) {
      const gvfs_u32 old = ref(&L->lock[i]).fetch_or(GVFS_LANE_HELD, std::memory_order_relaxed);
      if ((old & GVFS_LANE_HELD) == 0u) return gvfs_claim{i, old >> 1};
      gvfs_backoff(0);
    }
  }
#endif
  return gvfs_lane_claim(L);
}

gvfs_claim acquire_checked(gvfs_lanes *L, int me) {
  const gvfs_claim c = claim(L);
  const gvfs_u32 lane = c.lane;
  CHECK(lane < L->count, "thread %d: lane %u out of range", me, lane);
  int prev = (*owner)[lane].exchange(me, std::memory_order_relaxed);
  CHECK(prev == -1, "I1: thread %d acquired lane %u held by thread %d", me, lane, prev);
  // CLAIMED: held, and the lane's seq (lock >> 1, I5) is its last request's, which is answered.
  const gvfs_u32 lock = gvfs_load_relaxed_dev(&L->lock[lane]);
  CHECK((lock & GVFS_LANE_HELD) != 0u && lock >> 1 == c.seq, "lane %u claimed with seq %u but lock is %#x", lane,
        c.seq, lock);
  CHECK((ref(&L->req_word[lane]).load(std::memory_order_relaxed) & GVFS_WORD_SEQ_MASK) == (c.seq & GVFS_WORD_SEQ_MASK),
        "lane %u claimed but not IDLE", lane);
  return c;
}
void release_checked(gvfs_lanes *L, const gvfs_claim &c, int me) {
  int prev = (*owner)[c.lane].exchange(-1, std::memory_order_relaxed);
  CHECK(prev == me, "I1: thread %d releases lane %u owned by %d", me, c.lane, prev);
#ifdef GVFS_TSAN_SELFTEST
  if (cfg.selftest == "unlock") {  // broken on purpose: the lock is dropped with a relaxed store
    gvfs_store_relaxed_dev(&L->lock[c.lane], c.seq << 1);
    return;
  }
#endif
  gvfs_lane_release(L, c);
}

void submit(gvfs_lanes *L, gvfs_claim &c, gvfs_u32 opcode) {
#ifdef GVFS_TSAN_SELFTEST
  if (cfg.selftest == "submit") {  // broken on purpose: a relaxed publish of the request
    c.seq += 1u;
    ref(&L->req_word[c.lane]).store(opcode << GVFS_WORD_SHIFT | (c.seq & GVFS_WORD_SEQ_MASK), std::memory_order_relaxed);
    return;
  }
#endif
  gvfs_lane_submit(L, c, opcode);
}

// The lane steps one by one, payload both ways.
void do_xchg(gvfs_lanes *L, Rng &rng, int me, unsigned it) {
  gvfs_u32 in_n = (gvfs_u32)(rng.below(16) == 0 ? rng.below(L->data_bytes + 1) : rng.below(200));
  gvfs_u64 out_n = rng.below(16) == 0 ? rng.below(L->data_bytes + 1) : rng.below(200);
  gvfs_u64 seed = rng.next(), off = rng.next() >> 20;
  gvfs_claim c = acquire_checked(L, me);
  const gvfs_u32 lane = c.lane, before = c.seq;
  gvfs_request *q = gvfs_lane_req(L, lane);
  gvfs_u8 *d = gvfs_lane_data(L, lane);
  for (gvfs_u32 k = 0; k < in_n; ++k) d[k] = in_byte(seed, k);
  q->opcode = T_OP_XCHG; q->flags = 0; q->fd = me; q->data_len = in_n;
  q->offset = off; q->length = out_n;
  q->arg[0] = seed; q->arg[1] = q->arg[2] = q->arg[3] = 0;
  submit(L, c, T_OP_XCHG);
  const gvfs_u32 lock = gvfs_load_relaxed_dev(&L->lock[lane]);  // held, the claim's seq until the release
  CHECK(c.seq == before + 1u && lock == (before << 1 | GVFS_LANE_HELD),
        "lane %u: submit took seq %u to %u, the lock word is %#x", lane, before, c.seq, lock);
  gvfs_response r = gvfs_lane_wait(L, c, out_n);
  CHECK((ref(&L->resp_word[lane]).load(std::memory_order_relaxed) & GVFS_WORD_SEQ_MASK) == (c.seq & GVFS_WORD_SEQ_MASK),
        "lane %u: wait returned early", lane);
  CHECK(r.result == (gvfs_i64)out_n, "thread %d iter %u: XCHG result %lld, want %llu", me, it, (long long)r.result,
        (unsigned long long)out_n);
  // Checksum of what we sent, computed from the pattern (the server overwrote the buffer).
  gvfs_u64 h = 1469598103934665603ull;
  for (gvfs_u32 k = 0; k < in_n; ++k) { h ^= in_byte(seed, k); h *= 1099511628211ull; }
  CHECK(r.aux[0] == h, "thread %d iter %u: XCHG checksum mismatch", me, it);
  CHECK(r.aux[1] == seed, "thread %d iter %u: XCHG aux1 mismatch", me, it);
  for (gvfs_u64 k = 0; k < out_n; ++k)
    CHECK(d[k] == out_byte(off, k), "thread %d iter %u: XCHG reply byte %llu is %u, want %u", me, it,
          (unsigned long long)k, d[k], out_byte(off, k));
  release_checked(L, c, me);
}

// A random range of a random file for pread/pwrite through the lanes: offsets up to 100 past
// the end, lengths of up to `cap` now and then (several chunks), a place in `buf` unaligned.
struct FileRange {
  int fd;
  gvfs_u64 off, n;
  gvfs_u8 *p;      // buf + 0..15
  gvfs_u64 want;   // what a call over it moves: cut at the file's end
};
FileRange random_range(Rng &rng, gvfs_u8 *buf, gvfs_u64 cap) {
  FileRange r;
  r.fd = FIRST_FD + (int)rng.below(NFILES);
  const gvfs_u64 size = file_size(r.fd);
  r.off = rng.below(size + 100);
  r.n = rng.below(8) == 0 ? rng.below(cap) : rng.below(300);
  r.p = buf + rng.below(16);
  r.want = r.off >= size ? 0 : std::min<gvfs_u64>(r.n, size - r.off);
  return r;
}

gvfs_i64 realtime_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (gvfs_i64)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

void device_thread(int me) {
  be_device_thread(me, cfg.threads);
  CHECK(gvfs_global_tid() == (gvfs_u64)me, "gvfs_global_tid %llu != %d", (unsigned long long)gvfs_global_tid(), me);
  gvfs_lanes *L = &ctx.lanes;
  Rng rng(cfg.seed * 1000003u + (unsigned)me);
  static thread_local gvfs_u8 buf[3 * GVFS_LANE_DATA_MIN + 64];
  for (unsigned it = 0; it < cfg.iters; ++it) {
    const unsigned pick = (unsigned)rng.below(100);
    if (pick < 20) {
      gvfs_u64 off = rng.next() >> 24, len = rng.next() >> 24;
      gvfs_i32 fd = (gvfs_i32)rng.next();
      gvfs_u32 flags = (gvfs_u32)rng.next();
      gvfs_response r = gvfs_hostcall(L, T_OP_CALC, fd, flags, off, len);
      CHECK(r.result == (gvfs_i64)(off * 3u + len), "thread %d iter %u: CALC result %lld, want %llu", me, it,
            (long long)r.result, (unsigned long long)(off * 3u + len));
      CHECK(r.aux[0] == ((gvfs_u64)(gvfs_u32)fd ^ flags) && r.aux[1] == ~off && r.aux[2] == T_OP_CALC * 7u,
            "thread %d iter %u: CALC aux mismatch", me, it);
    } else if (pick < 24) {
      gvfs_u64 off = rng.next() >> 24, len = rng.next() >> 24;
      gvfs_i64 r = gvfs_hostcall_result(L, T_OP_CALC, -1, 0, off, len);
      CHECK(r == (gvfs_i64)(off * 3u + len), "thread %d iter %u: CALC (result only) %lld", me, it, (long long)r);
    } else if (pick < 28) {
      // Results of -127..127 without aux: the answer's word carries them (or the record does).
      const gvfs_u64 off = rng.next() >> 20;
      const gvfs_i64 want = (gvfs_i64)(off % 255u) - 127;
      const gvfs_i64 r = gvfs_hostcall_result(L, T_OP_SMALL, -1, 0, off, 0);
      CHECK(r == want, "thread %d iter %u: SMALL (result only) %lld, want %lld", me, it, (long long)r, (long long)want);
      const gvfs_response full = gvfs_hostcall(L, T_OP_SMALL, -1, 0, off + 1, 0);
      const gvfs_i64 want1 = (gvfs_i64)((off + 1) % 255u) - 127;
      CHECK(full.result == want1 && full.aux[0] == 0 && full.aux[1] == 0 && full.aux[2] == 0,
            "thread %d iter %u: SMALL %lld, want %lld and no aux", me, it, (long long)full.result, (long long)want1);
    } else if (pick < 50) {
      do_xchg(L, rng, me, it);
    } else if (pick < 62) {
      // Reads through the lanes (files.cuh), several chunks now and then.
      const FileRange fr = random_range(rng, buf, sizeof buf - 64);
      gvfs_u8 *dst = fr.p;
      long got = gvfs_pread_hostcall(&ctx, fr.fd, dst, fr.n, fr.off);
      CHECK(got == (long)fr.want, "thread %d iter %u: pread(fd %d, n %llu, off %llu) = %ld, want %llu", me, it, fr.fd,
            (unsigned long long)fr.n, (unsigned long long)fr.off, got, (unsigned long long)fr.want);
      for (gvfs_u64 k = 0; k < fr.want; ++k)
        CHECK(dst[k] == file_byte(fr.fd, fr.off + k), "thread %d iter %u: pread byte %llu wrong", me, it,
              (unsigned long long)k);
      CHECK(gvfs_pread_hostcall(&ctx, 99, dst, 10, 0) == -GVFS_EBADF, "thread %d: pread of a bad fd", me);
    } else if (pick < 70) {
      const FileRange fr = random_range(rng, buf, sizeof buf - 64);
      gvfs_u8 *src = fr.p;
      for (gvfs_u64 k = 0; k < fr.n; ++k) src[k] = file_byte(fr.fd, fr.off + k);
      long put = gvfs_pwrite_hostcall(&ctx, fr.fd, src, fr.n, fr.off);
      CHECK(put == (long)fr.want, "thread %d iter %u: pwrite(fd %d, n %llu, off %llu) = %ld, want %llu", me, it, fr.fd,
            (unsigned long long)fr.n, (unsigned long long)fr.off, put, (unsigned long long)fr.want);
    } else if (pick < 76) {
      // Path calls (files.cuh): the path goes through the lane's payload.
      char path[64];
      unsigned n = (unsigned)rng.below(1000);
      std::snprintf(path, sizeof path, "/f%u", n);
      gvfs_response o = gvfs_path_call(&ctx, GVFS_OP_OPEN, path, GVFS_O_RDONLY);
      const int fd = (int)o.result;
      CHECK(fd == FIRST_FD + (int)(n % NFILES) && o.aux[0] == file_size(fd), "thread %d iter %u: open(%s) = %d", me,
            it, path, fd);
      gvfs_response st = gvfs_hostcall(L, GVFS_OP_FSTAT, fd, 0, 0, 0);
      CHECK(st.result == 0 && st.aux[0] == file_size(fd) && st.aux[1] == (gvfs_u64)fd * 1000u && st.aux[2] == 0100644,
            "thread %d iter %u: fstat words wrong", me, it);
      CHECK(gvfs_hostcall_result(L, GVFS_OP_CLOSE, fd, 0, 0, 0) == 0, "thread %d: close failed", me);
      CHECK(gvfs_path_call(&ctx, GVFS_OP_OPEN, "/nothing", 0).result == -GVFS_ENOENT, "thread %d: open /nothing", me);
      if (rng.below(16) == 0) {  // too long for a path: refused on the device, the lane given back unused
        static thread_local char longpath[GVFS_PATH_MAX + 8];
        std::memset(longpath, 'p', sizeof longpath - 1);
        longpath[0] = '/';
        longpath[sizeof longpath - 1] = 0;
        CHECK(gvfs_path_call(&ctx, GVFS_OP_OPEN, longpath, 0).result == -GVFS_ENAMETOOLONG, "thread %d: long path", me);
      }
    } else if (pick < 84) {
      char line[96];
      int len = std::snprintf(line, sizeof line, "L thread %d iter %u.", me, it);
      long w = gvfs_write_line(&ctx, 1u + (unsigned)rng.below(2), line, (unsigned long)len);
      CHECK(w == len, "thread %d iter %u: write_line = %ld, want %d", me, it, w, len);
      // printf formats straight into the lane's payload while it holds the lane.
      int p = gvfs_fprintf(&ctx, 1u + (unsigned)rng.below(2), "L printf %d %u %s %x.", me, it, "str", it * 7u);
      int plen = std::snprintf(line, sizeof line, "L printf %d %u %s %x.", me, it, "str", it * 7u);
      CHECK(p == plen + 1, "thread %d iter %u: printf = %d, want %d", me, it, p, plen + 1);
      CHECK(gvfs_write_line(&ctx, 7u, line, (unsigned long)len) == -GVFS_EBADF, "thread %d: write_line stream 7", me);
    } else if (pick < 90) {
      char in[200];
      unsigned long cap = 2 + rng.below(sizeof in - 2);
      long n = gvfs_read_line(&ctx, in, cap);
      CHECK(n >= 0 && (unsigned long)n <= cap - 1 && in[n] == 0, "thread %d iter %u: read_line = %ld (cap %lu)", me, it,
            n, cap);
      for (long k = 0; k < n; ++k)
        CHECK(in[k] == (char)('a' + k % 26), "thread %d iter %u: read_line byte %ld", me, it, k);
    } else if (pick < 96) {
      // The wall clock: a device-side cache (a seqlock) that hostcalls refresh.
      const gvfs_i64 t0 = realtime_ns();
      const gvfs_i64 w = gvfs_wallclock_ns(&ctx);
      const gvfs_i64 t1 = realtime_ns();
      const gvfs_i64 tol = (gvfs_i64)(WALL_MAX_RTT_NS / 2 + 2000000);
      CHECK(w >= t0 - tol && w <= t1 + tol, "thread %d iter %u: wallclock %lld outside [%lld, %lld] +- %lld", me, it,
            (long long)w, (long long)t0, (long long)t1, (long long)tol);
    } else if (pick < 98) {
      CHECK(gvfs_nop(&ctx) == 0, "thread %d: nop", me);
    } else {
      CHECK(gvfs_hostcall(L, T_OP_UNKNOWN, -1, 0, 0, 0).result == -GVFS_ENOSYS, "thread %d: unknown opcode", me);
    }
    progress.fetch_add(1, std::memory_order_relaxed);
  }
}

bool parse(int argc, char **argv) {
#ifdef GVFS_TSAN_SELFTEST
  const bool built = true;
#else
  const bool built = false;
#endif
  return parse_options("tsan_hostcall", cfg, argc, argv, {}, built, "GVFS_TSAN_SELFTEST",
                       {"relaxed", "early", "submit", "unlock", "claim"}) &&
         lanes_ok(cfg);
}

}  // namespace

int main(int argc, char **argv) {
  if (!parse(argc, argv)) {
    std::fprintf(stderr, "usage: tsan_hostcall [--lanes=N] [--servers=N] [--threads=N] [--iters=N] [--seed=N]"
                         " [--selftest=relaxed|early|submit|unlock|claim]\n");
    return 2;
  }
  const unsigned n = cfg.lanes;
  LaneMemory mem(n, cfg.data_bytes);
  std::vector<std::atomic<int>> own(n);
  for (auto &o : own) o.store(-1, std::memory_order_relaxed);
  owner = &own;
  mem.attach(ctx, cfg.data_bytes);
  gvfs_stdio_state wall{};
  wall.cache_ns = WALL_CACHE_NS;
  wall.max_rtt_ns = WALL_MAX_RTT_NS;
  ctx.stdio = &wall;

  const auto t0 = std::chrono::steady_clock::now();
  Servers servers(cfg.servers, server_thread);
  std::vector<std::thread> devices;
  for (unsigned t = 0; t < cfg.threads; ++t) devices.emplace_back(device_thread, (int)t);
  Watchdog watchdog("calls");
  for (auto &t : devices) t.join();
  servers.stop();
  watchdog.stop();

  // Every lane IDLE: not held, and its seq (lock >> 1) equals what the server answered.
  const gvfs_u64 requests = mem.check_all_answered(answered.load());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("requests=%llu lanes=%u servers=%u threads=%u iters=%u seconds=%.2f\n", (unsigned long long)requests,
              n, cfg.servers, cfg.threads, cfg.iters, secs);
  return 0;
}
