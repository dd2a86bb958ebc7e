// ThreadSanitizer harness for the device half of the hostcall protocol
// (device/gvfs/hostcall.cuh, and the calls built on it in files.cuh / stdio.cuh).
//
// Built and run by tests/native/run-tsan.sh:
//   g++ -std=c++20 -O1 -g -fsanitize=thread -I device -pthread tests/native/tsan_hostcall.cpp
//
// "Device threads" are plain std::threads that set the CPU port's thread-locals
// (threadIdx, blockIdx, blockDim, gridDim) themselves and then call the real device code:
// gvfs_lane_acquire / _req / _data / _submit / _wait / _release, gvfs_hostcall(_result), and
// the calls built on the lanes: gvfs_path_call, gvfs_pread_hostcall, gvfs_pwrite_hostcall,
// gvfs_write_line, gvfs_fprintf (formats into the lane it holds), gvfs_read_line, gvfs_nop,
// and gvfs_wallclock_ns with its device-side cache (a seqlock that hostcalls refresh). The
// device fd table, name cache and page cache above them are not exercised here.
//
// One or more "server" threads stand in for the Python server (gpuvfs/hostcall/server.py):
// each sweeps its share of the lanes, takes a lane when an acquire load of req_seq differs
// from its own taken[] word, reads the request and its payload, writes a response that is a
// function of the request (and a byte pattern derived from the request into the payload),
// and publishes resp_seq with a release store.
//
// Every answer is checked by the device thread that asked (result, aux words, every payload
// byte), the server checks every payload byte it receives and the invariants it can see
// (I2: a lane it takes is PENDING; I4: each sequence number moves by one and is answered
// once), and a shadow owner word per lane checks I1 (one owner at a time). Any failed check
// prints a line and exits 1; any TSan report exits 66 (TSAN_OPTIONS=halt_on_error=1).
//
// Built with -DGVFS_TSAN_SELFTEST, `--selftest=MODE` breaks the protocol on purpose, so that
// run-tsan.sh can prove TSan catches it:
//   relaxed  the server writes the whole response, then stores resp_seq with a RELAXED store
//            (the values are right on x86: only the missing happens-before edge is wrong);
//   early    the server publishes resp_seq (release) before it writes the result and payload;
//   submit   the device publishes req_seq with a relaxed store (device-side bug);
//   unlock   the device drops the lane's lock with a relaxed store, so the next owner does
//            not see the previous owner's (and through it the server's) accesses.
#include "gpuvfs.cuh"

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

// ---------------------------------------------------------------- configuration
struct Config {
  unsigned lanes = 4;
  unsigned servers = 1;
  unsigned threads = 16;   // device threads (blocks of 4)
  unsigned iters = 2000;   // calls per device thread
  unsigned data_bytes = GVFS_LANE_DATA_MIN;
  unsigned seed = 1;
  std::string selftest;    // "", "relaxed", "early", "submit", "unlock"
};
Config cfg;

enum : gvfs_u32 {
  T_OP_CALC = 100,   // no payload: result = offset*3 + length; aux = (fd^flags, ~offset, opcode*7)
  T_OP_XCHG = 101,   // payload in (data_len bytes, pattern from arg[0]); payload out (length
                     // bytes, pattern from offset): result = length, aux0 = checksum(in)
  T_OP_UNKNOWN = 777 // answered -ENOSYS
};

constexpr int FIRST_FD = 3;
constexpr int NFILES = 8;

// ---------------------------------------------------------------- failing loudly
[[noreturn]] void fail(const char *fmt, ...) {
  std::va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "tsan_hostcall: check failed: ");
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::fflush(stderr);
  // A broken build (selftest) may read a stale answer before the racing write happens:
  // give TSan the moment it needs to see that write and report the race itself.
  if (!cfg.selftest.empty()) std::this_thread::sleep_for(std::chrono::seconds(1));
  std::_Exit(1);
}
#define CHECK(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)

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

struct Rng {  // xorshift64*
  gvfs_u64 s;
  explicit Rng(gvfs_u64 seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  gvfs_u64 next() { s ^= s >> 12; s ^= s << 25; s ^= s >> 27; return s * 2685821657736338717ull; }
  gvfs_u64 below(gvfs_u64 n) { return next() % n; }
};

// ---------------------------------------------------------------- shared state
gvfs_ctx ctx;                                 // what a kernel receives
std::vector<std::atomic<int>> *owner;         // I1 shadow: who holds lane i (-1 nobody); relaxed
std::atomic<bool> stop_servers{false};
std::atomic<gvfs_u64> progress{0};            // relaxed: watchdog only
std::atomic<gvfs_u64> answered{0};            // relaxed: summed at the end
constexpr gvfs_u64 WALL_CACHE_NS = 100000;     // wall-clock cache: short, so refreshes race with readers
constexpr gvfs_u64 WALL_MAX_RTT_NS = 20000000; // (TSan is slow: allow 20 ms round trips into the cache)

template <class T> std::atomic_ref<T> ref(volatile T *p) { return std::atomic_ref<T>(*const_cast<T *>(p)); }

// ---------------------------------------------------------------- the stand-in server
// Answers one request of lane i: checks its payload, writes the reply payload into the
// lane's data, and returns the response words (the caller writes them, then publishes).
gvfs_response serve(gvfs_lanes *L, gvfs_u32 i, gvfs_u32 seq) {
  gvfs_response r;
  const gvfs_request q = L->req[i];  // a plain copy: ordered after the acquire of req_seq
  gvfs_u8 *d = L->data + (gvfs_u64)i * L->data_bytes;
  r.result = 0; r.aux[0] = r.aux[1] = r.aux[2] = 0;
  CHECK(q.data_len <= L->data_bytes, "lane %u: data_len %u > data_bytes", i, q.data_len);
  auto fd_ok = [](int fd) { return fd >= FIRST_FD && fd < FIRST_FD + NFILES; };
  gvfs_u64 fill_n = 0;  // bytes of payload to write back (pattern chosen below)
  int fill_kind = 0;    // 1: file bytes of fd from offset; 2: out_byte(offset, k); 3: 'a' + k % 26
  switch (q.opcode) {
    case GVFS_OP_NOP: break;
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
  std::vector<gvfs_u32> mine;
  for (gvfs_u32 i = sid; i < L->count; i += cfg.servers) mine.push_back(i);
  std::vector<gvfs_u32> taken(mine.size(), 0);  // I4: last sequence taken per lane
  const bool sel_relaxed = cfg.selftest == "relaxed", sel_early = cfg.selftest == "early";
  for (;;) {
    bool any = false;
    for (size_t j = 0; j < mine.size(); ++j) {
      const gvfs_u32 i = mine[j];
      const gvfs_u32 s = ref(&L->req_seq[i]).load(std::memory_order_acquire);
      if (s == taken[j]) continue;
      any = true;
      // I4: the owner waits for each answer before it submits again, so a sequence word moves by one.
      CHECK(s == taken[j] + 1u, "lane %u: req_seq jumped from %u to %u", i, taken[j], s);
      // I2: the lane is PENDING (we are the only writer of resp_seq).
      CHECK(ref(&L->resp_seq[i]).load(std::memory_order_relaxed) == taken[j], "lane %u: resp_seq moved under the server", i);
      taken[j] = s;
      if (sel_early) ref(&L->resp_seq[i]).store(s, std::memory_order_release);  // broken on purpose
      const gvfs_response r = serve(L, i, s);
      L->resp[i].result = r.result;
      L->resp[i].aux[0] = r.aux[0];
      L->resp[i].aux[1] = r.aux[1];
      L->resp[i].aux[2] = r.aux[2];
      if (!sel_early)
        ref(&L->resp_seq[i]).store(s, sel_relaxed ? std::memory_order_relaxed : std::memory_order_release);
      answered.fetch_add(1, std::memory_order_relaxed);
    }
    if (!any) {
      if (stop_servers.load(std::memory_order_acquire)) break;
      sched_yield();
    }
  }
  // At the end every lane of ours is IDLE: answered, and nothing left pending.
  for (size_t j = 0; j < mine.size(); ++j) {
    const gvfs_u32 i = mine[j];
    CHECK(ref(&L->req_seq[i]).load(std::memory_order_acquire) == taken[j], "lane %u: request left unanswered", i);
    CHECK(ref(&L->resp_seq[i]).load(std::memory_order_relaxed) == taken[j], "lane %u: resp_seq != req_seq at the end", i);
  }
}

// ---------------------------------------------------------------- device threads
gvfs_u32 acquire_checked(gvfs_lanes *L, int me) {
  gvfs_u32 lane = gvfs_lane_acquire(L);
  CHECK(lane < L->count, "thread %d: lane %u out of range", me, lane);
  int prev = (*owner)[lane].exchange(me, std::memory_order_relaxed);
  CHECK(prev == -1, "I1: thread %d acquired lane %u held by thread %d", me, lane, prev);
  // CLAIMED: our own request is not in flight.
  CHECK(ref(&L->req_seq[lane]).load(std::memory_order_relaxed) == L->seq[lane], "lane %u claimed but not IDLE", lane);
  return lane;
}
void release_checked(gvfs_lanes *L, gvfs_u32 lane, int me) {
  int prev = (*owner)[lane].exchange(-1, std::memory_order_relaxed);
  CHECK(prev == me, "I1: thread %d releases lane %u owned by %d", me, lane, prev);
#ifdef GVFS_TSAN_SELFTEST
  if (cfg.selftest == "unlock") {  // broken on purpose: the lock is dropped with a relaxed store
    gvfs_store_relaxed_dev(&L->lock[lane], 0u);
    return;
  }
#endif
  gvfs_lane_release(L, lane);
}

void submit(gvfs_lanes *L, gvfs_u32 lane) {
#ifdef GVFS_TSAN_SELFTEST
  if (cfg.selftest == "submit") {  // broken on purpose: a relaxed publish of the request
    gvfs_u32 s = L->seq[lane] + 1u;
    L->seq[lane] = s;
    ref(&L->req_seq[lane]).store(s, std::memory_order_relaxed);
    return;
  }
#endif
  gvfs_lane_submit(L, lane);
}

// The lane steps one by one, payload both ways.
void do_xchg(gvfs_lanes *L, Rng &rng, int me, unsigned it) {
  gvfs_u32 in_n = (gvfs_u32)(rng.below(16) == 0 ? rng.below(L->data_bytes + 1) : rng.below(200));
  gvfs_u64 out_n = rng.below(16) == 0 ? rng.below(L->data_bytes + 1) : rng.below(200);
  gvfs_u64 seed = rng.next(), off = rng.next() >> 20;
  gvfs_u32 lane = acquire_checked(L, me);
  gvfs_request *q = gvfs_lane_req(L, lane);
  gvfs_u8 *d = gvfs_lane_data(L, lane);
  for (gvfs_u32 k = 0; k < in_n; ++k) d[k] = in_byte(seed, k);
  q->opcode = T_OP_XCHG; q->flags = 0; q->fd = me; q->data_len = in_n;
  q->offset = off; q->length = out_n;
  q->arg[0] = seed; q->arg[1] = q->arg[2] = q->arg[3] = 0;
  const gvfs_u32 before = L->seq[lane];
  submit(L, lane);
  CHECK(L->seq[lane] == before + 1u, "lane %u: submit did not advance seq", lane);
  gvfs_response r = gvfs_lane_wait(L, lane);
  CHECK(ref(&L->resp_seq[lane]).load(std::memory_order_relaxed) == L->seq[lane], "lane %u: wait returned early", lane);
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
  release_checked(L, lane, me);
}

gvfs_i64 realtime_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (gvfs_i64)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

void device_thread(int me) {
  // The CPU port's CUDA built-ins: blocks of 4 threads.
  blockDim = dim3(4, 1, 1);
  gridDim = dim3((cfg.threads + 3) / 4, 1, 1);
  blockIdx = uint3{(unsigned)me / 4u, 0, 0};
  threadIdx = uint3{(unsigned)me % 4u, 0, 0};
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
    } else if (pick < 28) {
      gvfs_u64 off = rng.next() >> 24, len = rng.next() >> 24;
      gvfs_i64 r = gvfs_hostcall_result(L, T_OP_CALC, -1, 0, off, len);
      CHECK(r == (gvfs_i64)(off * 3u + len), "thread %d iter %u: CALC (result only) %lld", me, it, (long long)r);
    } else if (pick < 50) {
      do_xchg(L, rng, me, it);
    } else if (pick < 62) {
      // Reads through the lanes (files.cuh), several chunks now and then.
      int fd = FIRST_FD + (int)rng.below(NFILES);
      gvfs_u64 size = file_size(fd);
      gvfs_u64 off = rng.below(size + 100);
      gvfs_u64 n = rng.below(8) == 0 ? rng.below(sizeof buf - 64) : rng.below(300);
      gvfs_u8 *dst = buf + rng.below(16);
      long got = gvfs_pread_hostcall(&ctx, fd, dst, n, off);
      gvfs_u64 want = off >= size ? 0 : std::min<gvfs_u64>(n, size - off);
      CHECK(got == (long)want, "thread %d iter %u: pread(fd %d, n %llu, off %llu) = %ld, want %llu", me, it, fd,
            (unsigned long long)n, (unsigned long long)off, got, (unsigned long long)want);
      for (gvfs_u64 k = 0; k < want; ++k)
        CHECK(dst[k] == file_byte(fd, off + k), "thread %d iter %u: pread byte %llu wrong", me, it, (unsigned long long)k);
      CHECK(gvfs_pread_hostcall(&ctx, 99, dst, 10, 0) == -GVFS_EBADF, "thread %d: pread of a bad fd", me);
    } else if (pick < 70) {
      int fd = FIRST_FD + (int)rng.below(NFILES);
      gvfs_u64 size = file_size(fd);
      gvfs_u64 off = rng.below(size + 100);
      gvfs_u64 n = rng.below(8) == 0 ? rng.below(sizeof buf - 64) : rng.below(300);
      gvfs_u8 *src = buf + rng.below(16);
      for (gvfs_u64 k = 0; k < n; ++k) src[k] = file_byte(fd, off + k);
      long put = gvfs_pwrite_hostcall(&ctx, fd, src, n, off);
      gvfs_u64 want = off >= size ? 0 : std::min<gvfs_u64>(n, size - off);
      CHECK(put == (long)want, "thread %d iter %u: pwrite(fd %d, n %llu, off %llu) = %ld, want %llu", me, it, fd,
            (unsigned long long)n, (unsigned long long)off, put, (unsigned long long)want);
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
  for (int a = 1; a < argc; ++a) {
    std::string s = argv[a];
    auto val = [&](const char *key) -> const char * {
      size_t n = std::strlen(key);
      return s.compare(0, n, key) == 0 ? s.c_str() + n : nullptr;
    };
    if (const char *v = val("--lanes=")) cfg.lanes = (unsigned)std::atoi(v);
    else if (const char *v = val("--servers=")) cfg.servers = (unsigned)std::atoi(v);
    else if (const char *v = val("--threads=")) cfg.threads = (unsigned)std::atoi(v);
    else if (const char *v = val("--iters=")) cfg.iters = (unsigned)std::atoi(v);
    else if (const char *v = val("--seed=")) cfg.seed = (unsigned)std::atoi(v);
    else if (const char *v = val("--selftest=")) cfg.selftest = v;
    else { std::fprintf(stderr, "tsan_hostcall: unknown argument %s\n", argv[a]); return false; }
  }
#ifndef GVFS_TSAN_SELFTEST
  if (!cfg.selftest.empty()) { std::fprintf(stderr, "tsan_hostcall: --selftest needs -DGVFS_TSAN_SELFTEST\n"); return false; }
#endif
  if (!cfg.selftest.empty() && cfg.selftest != "relaxed" && cfg.selftest != "early" && cfg.selftest != "submit" &&
      cfg.selftest != "unlock") {
    std::fprintf(stderr, "tsan_hostcall: unknown selftest %s\n", cfg.selftest.c_str());
    return false;
  }
  return cfg.lanes >= 1 && cfg.servers >= 1 && cfg.servers <= cfg.lanes && cfg.threads >= 1;
}

}  // namespace

int main(int argc, char **argv) {
  if (!parse(argc, argv)) {
    std::fprintf(stderr, "usage: tsan_hostcall [--lanes=N] [--servers=N] [--threads=N] [--iters=N] [--seed=N]"
                         " [--selftest=relaxed|early|submit|unlock]\n");
    return 2;
  }
  const unsigned n = cfg.lanes;
  // "Pinned host memory" and "device memory": plain heap arrays here.
  std::vector<gvfs_u32> req_seq(n, 0), resp_seq(n, 0), lock(n, 0), seq(n, 0);
  std::vector<gvfs_request> req(n);
  std::vector<gvfs_response> resp(n);
  std::vector<gvfs_u8> data((size_t)n * cfg.data_bytes + 64, 0);
  std::vector<gvfs_u64> counters(GVFS_NCOUNTERS, 0);
  std::vector<std::atomic<int>> own(n);
  for (auto &o : own) o.store(-1, std::memory_order_relaxed);
  owner = &own;
  std::memset(&ctx, 0, sizeof ctx);
  ctx.magic = GVFS_CTX_MAGIC;
  ctx.abi_version = GVFS_ABI_VERSION;
  ctx.lanes.count = n;
  ctx.lanes.data_bytes = cfg.data_bytes;
  ctx.lanes.req_seq = req_seq.data();
  ctx.lanes.resp_seq = resp_seq.data();
  ctx.lanes.req = req.data();
  ctx.lanes.resp = resp.data();
  ctx.lanes.data = data.data();
  ctx.lanes.lock = lock.data();
  ctx.lanes.seq = seq.data();
  ctx.counters = counters.data();
  gvfs_stdio_state wall{};
  wall.cache_ns = WALL_CACHE_NS;
  wall.max_rtt_ns = WALL_MAX_RTT_NS;
  ctx.stdio = &wall;

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> servers, devices;
  for (unsigned s = 0; s < cfg.servers; ++s) servers.emplace_back(server_thread, s);
  for (unsigned t = 0; t < cfg.threads; ++t) devices.emplace_back(device_thread, (int)t);

  // Watchdog: a lost wakeup or a lane never answered shows as no progress at all.
  std::atomic<bool> done{false};
  std::thread watchdog([&] {
    gvfs_u64 last = 0;
    auto since = std::chrono::steady_clock::now();
    while (!done.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      gvfs_u64 p = progress.load(std::memory_order_relaxed);
      auto now = std::chrono::steady_clock::now();
      if (p != last) { last = p; since = now; continue; }
      if (now - since > std::chrono::seconds(60)) fail("no progress for 60 s after %llu calls (deadlock?)", (unsigned long long)p);
    }
  });
  for (auto &t : devices) t.join();
  stop_servers.store(true, std::memory_order_release);
  for (auto &t : servers) t.join();
  done.store(true, std::memory_order_relaxed);
  watchdog.join();

  // Every lane IDLE: unlocked, and its owner-side sequence equals what the server answered.
  for (unsigned i = 0; i < n; ++i) {
    CHECK(lock[i] == 0, "lane %u still locked at the end", i);
    CHECK(seq[i] == req_seq[i] && req_seq[i] == resp_seq[i], "lane %u: seq %u req_seq %u resp_seq %u", i, seq[i],
          req_seq[i], resp_seq[i]);
  }
  gvfs_u64 requests = 0;
  for (unsigned i = 0; i < n; ++i) requests += req_seq[i];
  CHECK(requests == answered.load(), "requests %llu != answered %llu", (unsigned long long)requests,
        (unsigned long long)answered.load());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("requests=%llu lanes=%u servers=%u threads=%u iters=%u seconds=%.2f\n", (unsigned long long)requests,
              n, cfg.servers, cfg.threads, cfg.iters, secs);
  return 0;
}
