// What the ThreadSanitizer harnesses (tsan_hostcall.cpp, tsan_pagetable.cpp) share: failing
// loudly (fail / CHECK), the options both take, a random generator, the lanes' memory and the
// ctx words that hold them, the stand-in server's sweep of its lanes, the CPU port's thread
// indices for a "device thread", and the watchdog.
//
// Includes only the device headers that declare types (port, hostcall, context), so that
// tsan_pagetable.cpp can include it before it swaps in its broken page-table hooks and only
// then includes the code that calls them (filecache.cuh, files.cuh).
#pragma once
#include "gvfs/port.cuh"
#include "gvfs/hostcall.cuh"
#include "gvfs/context.cuh"

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

namespace tsan {

// ---------------------------------------------------------------- failing loudly
inline const char *harness = "tsan";  // the program's name: the first word of its messages
inline bool in_selftest = false;      // a --selftest run (set by parse_options)

[[noreturn]] inline void fail(const char *fmt, ...) {
  std::va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "%s: check failed: ", harness);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::fflush(stderr);
  // A broken build (selftest) may read a stale answer or copy stale bytes before the racing
  // write happens: give TSan the moment it needs to see that write and report the race itself.
  if (in_selftest) std::this_thread::sleep_for(std::chrono::seconds(1));
  std::_Exit(1);
}
#define CHECK(cond, ...) do { if (!(cond)) ::tsan::fail(__VA_ARGS__); } while (0)

// ---------------------------------------------------------------- options
// The options both harnesses take; a harness's Config derives from this and adds its own.
struct Options {
  unsigned lanes = 4;
  unsigned servers = 1;
  unsigned threads;        // device threads (blocks of 4)
  unsigned iters;          // calls per device thread
  unsigned seed = 1;
  std::string selftest;    // "": the code as is; else the breakage a self-test build runs
  Options(unsigned threads_, unsigned iters_) : threads(threads_), iters(iters_) {}
};

struct Flag {              // a harness's own `--key=N`
  const char *key;         // "--sets="
  unsigned *value;
};

// Reads `--key=value` arguments (the common ones and the harness's `own`) into `o`; a
// --selftest needs the self-test build (`selftest_built`, made with -D`selftest_macro`) and
// one of its `modes`. Names the harness (`name`) for fail(). False, with a line on stderr,
// on anything unknown; the harness checks the values' ranges itself (lanes_ok below).
inline bool parse_options(const char *name, Options &o, int argc, char **argv, std::initializer_list<Flag> own,
                          bool selftest_built, const char *selftest_macro, std::initializer_list<const char *> modes) {
  harness = name;
  const Flag common[] = {{"--lanes=", &o.lanes}, {"--servers=", &o.servers}, {"--threads=", &o.threads},
                         {"--iters=", &o.iters}, {"--seed=", &o.seed}};
  auto set = [](const std::string &s, const Flag &f) {
    const size_t n = std::strlen(f.key);
    if (s.compare(0, n, f.key) != 0) return false;
    *f.value = (unsigned)std::atoi(s.c_str() + n);
    return true;
  };
  for (int a = 1; a < argc; ++a) {
    const std::string s = argv[a];
    bool known = false;
    for (const Flag &f : own) known = known || set(s, f);
    for (const Flag &f : common) known = known || set(s, f);
    if (!known && s.compare(0, 11, "--selftest=") == 0) { o.selftest = s.substr(11); known = true; }
    if (!known) { std::fprintf(stderr, "%s: unknown argument %s\n", name, argv[a]); return false; }
  }
  if (!selftest_built && !o.selftest.empty()) {
    std::fprintf(stderr, "%s: --selftest needs -D%s\n", name, selftest_macro);
    return false;
  }
  bool mode_ok = o.selftest.empty();
  for (const char *m : modes) mode_ok = mode_ok || o.selftest == m;
  if (!mode_ok) {
    std::fprintf(stderr, "%s: unknown selftest %s\n", name, o.selftest.c_str());
    return false;
  }
  in_selftest = !o.selftest.empty();
  return true;
}

// The ranges both harnesses need: a lane, a server, no server without a lane, a thread.
inline bool lanes_ok(const Options &o) {
  return o.lanes >= 1 && o.servers >= 1 && o.servers <= o.lanes && o.threads >= 1;
}

// ---------------------------------------------------------------- small tools
struct Rng {  // xorshift64*
  gvfs_u64 s;
  explicit Rng(gvfs_u64 seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  gvfs_u64 next() { s ^= s >> 12; s ^= s << 25; s ^= s >> 27; return s * 2685821657736338717ull; }
  gvfs_u64 below(gvfs_u64 n) { return next() % n; }
};

template <class T> std::atomic_ref<T> ref(volatile T *p) { return std::atomic_ref<T>(*const_cast<T *>(p)); }

// The CPU port's CUDA built-ins for "device thread" `me` of `nthreads`: blocks of 4 threads.
inline void be_device_thread(int me, unsigned nthreads) {
  blockDim = dim3(4, 1, 1);
  gridDim = dim3((nthreads + 3) / 4, 1, 1);
  blockIdx = uint3{(unsigned)me / 4u, 0, 0};
  threadIdx = uint3{(unsigned)me % 4u, 0, 0};
}

// ---------------------------------------------------------------- the lanes' memory
// "Pinned host memory" and "device memory": plain heap arrays here.
struct LaneMemory {
  std::vector<gvfs_u32> req_word, resp_word, lock;  // lock[i] = seq << 1 | held
  std::vector<gvfs_request> req;
  std::vector<gvfs_response> resp;
  std::vector<gvfs_u8> data;
  std::vector<gvfs_u64> counters;
  LaneMemory(unsigned n, unsigned data_bytes)
      : req_word(n, 0), resp_word(n, 0), lock(n, 0), req(n), resp(n), data((size_t)n * data_bytes + 64, 0),
        counters(GVFS_NCOUNTERS, 0) {}

  // `ctx` zeroed, then what every kernel receives: the magic words, these lanes and counters.
  void attach(gvfs_ctx &ctx, unsigned data_bytes) {
    std::memset(&ctx, 0, sizeof ctx);
    ctx.magic = GVFS_CTX_MAGIC;
    ctx.abi_version = GVFS_ABI_VERSION;
    ctx.lanes = gvfs_lanes{.count = (gvfs_u32)req_word.size(), .data_bytes = data_bytes, .req_word = req_word.data(),
                           .resp_word = resp_word.data(), .req = req.data(), .resp = resp.data(), .data = data.data(),
                           .lock = lock.data()};
    ctx.counters = counters.data();
  }

  // After the device threads and the servers stopped: every lane is free, its seq (lock[i]
  // >> 1, I5) is what the last request word carried and the last response word answered,
  // and the servers answered every request (the seq counts the requests of lane i). Returns
  // the number of requests.
  gvfs_u64 check_all_answered(gvfs_u64 answered) const {
    for (size_t i = 0; i < lock.size(); ++i) {
      const gvfs_u32 seq = lock[i] >> 1;
      CHECK((lock[i] & GVFS_LANE_HELD) == 0u, "lane %u still held at the end (lock %#x)", (unsigned)i, lock[i]);
      CHECK((seq & GVFS_WORD_SEQ_MASK) == (req_word[i] & GVFS_WORD_SEQ_MASK) &&
                (req_word[i] & GVFS_WORD_SEQ_MASK) == (resp_word[i] & GVFS_WORD_SEQ_MASK),
            "lane %u: seq %u req_word %#x resp_word %#x", (unsigned)i, seq, req_word[i], resp_word[i]);
    }
    gvfs_u64 requests = 0;
    for (gvfs_u32 w : lock) requests += w >> 1;
    CHECK(requests == answered, "requests %llu != answered %llu", (unsigned long long)requests,
          (unsigned long long)answered);
    return requests;
  }
};

// ---------------------------------------------------------------- the stand-in server
inline std::atomic<bool> stop_servers{false};
inline std::atomic<gvfs_u64> answered{0};    // relaxed: summed at the end

// How a server publishes an answer. RELEASE is the protocol; the others are hostcall
// self-tests: RELAXED stores resp_word relaxed, NONE leaves it to `serve` (which stored it
// early, with code 0: the record, which is written after it).
enum class Publish { RELEASE, RELAXED, NONE };

// One server's sweep (gpuvfs/hostcall/server.py's loop) over its share of the lanes: sid,
// sid + nservers, ... A lane whose req_word (acquire) differs from the word last taken has a
// request; `serve(i, w, prev)` answers request word w of lane i (prev: the one taken before)
// and writes the reply payload, and returns the answer. The answer is then encoded as the
// Python server does: a NOP by echoing its word; a result in -127..127 without aux in the
// response word's code (but in 1 of 4 such answers through the record anyway, as the
// protocol allows, so that the device's record path sees small results too); anything else
// through the response record, written first. Then resp_word is published (after the data
// and the record) and `answered` counts it. Returns once stop_servers is set and a sweep
// found nothing.
struct ServerSweep {
  gvfs_lanes *L;
  std::vector<gvfs_u32> mine;   // this server's lanes
  std::vector<gvfs_u32> taken;  // I4: the last request word taken, per lane of `mine`
  Rng rng;                      // picks the record for some answers that fit in the word

  ServerSweep(gvfs_lanes *L_, unsigned sid, unsigned nservers, gvfs_u64 seed = 1) : L(L_), rng(seed * 31u + sid) {
    for (gvfs_u32 i = sid; i < L->count; i += nservers) mine.push_back(i);
    taken.assign(mine.size(), 0);
  }

  template <class Serve> void run(Serve &&serve, Publish publish = Publish::RELEASE) {
    for (;;) {
      bool any = false;
      for (size_t j = 0; j < mine.size(); ++j) {
        const gvfs_u32 i = mine[j];
        const gvfs_u32 w = ref(&L->req_word[i]).load(std::memory_order_acquire);
        if (w == taken[j]) continue;
        any = true;
        // I4: the owner waits for each answer before it submits again, so the seq bits move
        // by one (mod 2^24) from one request word of a lane to the next.
        CHECK(((w - taken[j]) & GVFS_WORD_SEQ_MASK) == 1u, "lane %u: req_word went from %#x to %#x", i, taken[j], w);
        const gvfs_u32 prev = taken[j];
        taken[j] = w;
        const gvfs_response r = serve(i, w, prev);
        const gvfs_u32 op = w >> GVFS_WORD_SHIFT, seq = w & GVFS_WORD_SEQ_MASK;
        const bool no_aux = r.aux[0] == 0 && r.aux[1] == 0 && r.aux[2] == 0;
        const bool fits = no_aux && r.result >= 1 - GVFS_CODE_BIAS && r.result <= 254 - GVFS_CODE_BIAS;
        // Code 255 says "the request's length": the server may send it when the result is
        // that field (read from the record, which word-only requests do not have).
        const bool is_length = no_aux && !gvfs_op_word_only(op) && r.result >= 0 &&
                               (gvfs_u64)r.result == L->req[i].length;
        gvfs_u32 word;
        if (op == GVFS_OP_NOP && publish != Publish::NONE) {
          CHECK(r.result == 0 && fits, "lane %u: a NOP answered %lld", i, (long long)r.result);
          word = w;  // the echo: code 0x80 is the result 0
        } else if (fits && publish != Publish::NONE && rng.below(4) != 0) {
          word = (gvfs_u32)(r.result + GVFS_CODE_BIAS) << GVFS_WORD_SHIFT | seq;
        } else if (is_length && publish != Publish::NONE && rng.below(4) != 0) {
          word = GVFS_CODE_LENGTH << GVFS_WORD_SHIFT | seq;
        } else {
          L->resp[i].result = r.result;
          L->resp[i].aux[0] = r.aux[0];
          L->resp[i].aux[1] = r.aux[1];
          L->resp[i].aux[2] = r.aux[2];
          word = seq;  // code 0: the record
        }
        if (publish != Publish::NONE)
          ref(&L->resp_word[i]).store(word, publish == Publish::RELAXED ? std::memory_order_relaxed
                                                                       : std::memory_order_release);
        answered.fetch_add(1, std::memory_order_relaxed);
      }
      if (!any) {
        if (stop_servers.load(std::memory_order_acquire)) break;
        sched_yield();
      }
    }
  }
};

// The server threads: server(0) .. server(n - 1) from construction to stop().
struct Servers {
  std::vector<std::thread> threads;
  template <class F> Servers(unsigned n, F server) {
    for (unsigned s = 0; s < n; ++s) threads.emplace_back(server, s);
  }
  void stop() {
    stop_servers.store(true, std::memory_order_release);
    for (auto &t : threads) t.join();
  }
};

// ---------------------------------------------------------------- the watchdog
inline std::atomic<gvfs_u64> progress{0};    // relaxed: the watchdog's only input

// A lost wakeup, a lane never answered or a slot left mid-fill shows as no progress at all:
// fails the run when `progress` stands still for 60 s (`what`: the unit it counts).
struct Watchdog {
  std::atomic<bool> done{false};
  std::thread thread;
  explicit Watchdog(const char *what) {
    thread = std::thread([this, what] {
      gvfs_u64 last = 0;
      auto since = std::chrono::steady_clock::now();
      while (!done.load(std::memory_order_relaxed)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        gvfs_u64 p = progress.load(std::memory_order_relaxed);
        auto now = std::chrono::steady_clock::now();
        if (p != last) { last = p; since = now; continue; }
        if (now - since > std::chrono::seconds(60))
          fail("no progress for 60 s after %llu %s (deadlock?)", (unsigned long long)p, what);
      }
    });
  }
  void stop() {
    done.store(true, std::memory_order_relaxed);
    thread.join();
  }
};

}  // namespace tsan
