// The CPU port's kernel launcher: runs a __global__ function over a grid with each CUDA
// thread an OS thread, as the cpu backend of gpuvfs (gpuvfs/backends/cpu.py) asks.
//
// Linked into every module the cpu backend builds, beside the user's source.
//   - At most `resident` blocks run at once, as on a GPU; each resident slot keeps its
//     threads for the whole launch and takes the next block when its current one is done.
//   - __syncthreads is a block barrier; warp operations (__shfl_sync, __ballot_sync,
//     __syncwarp) meet at a warp barrier with an exchange array. A thread that returns
//     leaves the block and its warp, so later barriers count only threads still running
//     (what the hardware does for exited threads).
//   - Warp operations assume every running lane of the warp takes part (the usual
//     full-warp use); a warp split into groups that call them with different masks at the
//     same time is not modelled.
//   - Arguments come packed as CuPy packs them (arrays as pointers, scalars by dtype) and
//     are passed through libffi, so any extern "C" kernel signature works.
#include "../gpuvfs.cuh"

#include <ffi.h>
#include <pthread.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <vector>

namespace gvfs_cpu {

struct WarpSync {
  unsigned present = 0;       // lanes still running
  unsigned arrived = 0;
  unsigned long generation = 0;
  unsigned long long exchange[32] = {};
};

// One monitor (mutex + condition) per resident block guards its barriers.
struct BlockSync {
  std::mutex m;
  std::condition_variable cv;
  unsigned nthreads = 0;
  unsigned running = 0;       // threads of the current block that have not returned
  unsigned arrived = 0;             // at __syncthreads
  unsigned long generation = 0;
  unsigned slot_arrived = 0;        // at the slot barrier between blocks (its own count:
  unsigned long slot_generation = 0;  // threads that left early wait there meanwhile)
  std::vector<WarpSync> warps;

  // Called with m held: releases the block barrier if everyone still running has arrived.
  void maybe_release_block() {
    if (arrived > 0 && arrived >= running) { arrived = 0; ++generation; cv.notify_all(); }
  }
  void maybe_release_warp(WarpSync &w, unsigned expected) {
    if (w.arrived > 0 && w.arrived >= expected) { w.arrived = 0; ++w.generation; cv.notify_all(); }
  }
};

struct ThreadState {
  BlockSync *block = nullptr;
  unsigned tid = 0;
};
static thread_local ThreadState t_state;

static unsigned popcount(unsigned v) { return (unsigned)__builtin_popcount(v); }

void syncthreads() {
  BlockSync &b = *t_state.block;
  std::unique_lock<std::mutex> lk(b.m);
  unsigned long g = b.generation;
  ++b.arrived;
  b.maybe_release_block();
  b.cv.wait(lk, [&] { return b.generation != g; });
}

// One rendezvous of the running lanes of `mask` in this thread's warp. Runs `at_meet`
// (under the block's lock) once everybody has arrived, before anyone leaves.
template <class F> static void warp_meet(unsigned mask, std::unique_lock<std::mutex> &lk, F &&after) {
  BlockSync &b = *t_state.block;
  WarpSync &w = b.warps[t_state.tid / 32];
  unsigned long g = w.generation;
  ++w.arrived;
  b.maybe_release_warp(w, popcount(mask & w.present));
  b.cv.wait(lk, [&] { return w.generation != g; });
  after(w);
}

void syncwarp(unsigned mask) {
  std::unique_lock<std::mutex> lk(t_state.block->m);
  warp_meet(mask, lk, [](WarpSync &) {});
}

unsigned long long warp_exchange(unsigned mask, unsigned long long v, int src_lane) {
  BlockSync &b = *t_state.block;
  WarpSync &w = b.warps[t_state.tid / 32];
  unsigned lane = t_state.tid & 31u;
  unsigned long long out = v;
  std::unique_lock<std::mutex> lk(b.m);
  w.exchange[lane] = v;
  warp_meet(mask, lk, [&](WarpSync &ws) {
    unsigned src = (unsigned)src_lane & 31u;
    if (ws.present & (1u << src)) out = ws.exchange[src];
  });
  // Second rendezvous: nobody writes the exchange array again until everybody has read it.
  warp_meet(mask, lk, [](WarpSync &) {});
  return out;
}

unsigned ballot(unsigned mask, int pred) {
  BlockSync &b = *t_state.block;
  WarpSync &w = b.warps[t_state.tid / 32];
  unsigned lane = t_state.tid & 31u;
  unsigned out = 0;
  std::unique_lock<std::mutex> lk(b.m);
  w.exchange[lane] = pred ? 1u : 0u;
  warp_meet(mask, lk, [&](WarpSync &ws) {
    unsigned live = mask & ws.present;
    for (unsigned i = 0; i < 32; ++i)
      if ((live & (1u << i)) && ws.exchange[i]) out |= 1u << i;
  });
  warp_meet(mask, lk, [](WarpSync &) {});
  return out;
}

unsigned activemask() {
  BlockSync &b = *t_state.block;
  std::lock_guard<std::mutex> lk(b.m);
  return b.warps[t_state.tid / 32].present;
}

// ---------------------------------------------------------------- launching a grid
struct Launch {
  void (*fn)();
  ffi_cif cif;
  std::vector<ffi_type *> types;
  std::vector<void *> argv;
  dim3 grid, block;
  unsigned long long nblocks;
  std::atomic<unsigned long long> next_block{0};
};

struct Slot {
  Launch *launch;
  BlockSync sync;
  unsigned long long current = 0;
};

struct Worker {
  Slot *slot;
  unsigned tid;
};

static void reset_block(BlockSync &b) {
  // Called with b.m held, by the last thread to reach the slot barrier.
  b.running = b.nthreads;
  b.arrived = 0;
  for (size_t w = 0; w < b.warps.size(); ++w) {
    unsigned lanes = std::min(32u, b.nthreads - (unsigned)w * 32u);
    b.warps[w].present = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
    b.warps[w].arrived = 0;
  }
}

static void *worker_main(void *arg) {
  Worker *wk = (Worker *)arg;
  Slot &s = *wk->slot;
  Launch &L = *s.launch;
  BlockSync &b = s.sync;
  t_state.block = &b;
  t_state.tid = wk->tid;
  blockDim = L.block;
  gridDim = L.grid;
  threadIdx.x = wk->tid % L.block.x;
  threadIdx.y = (wk->tid / L.block.x) % L.block.y;
  threadIdx.z = wk->tid / (L.block.x * L.block.y);
  for (;;) {
    // Slot barrier: every thread of the slot has left the previous block (so the block is
    // done); the last to arrive takes the next block and resets the barriers for it.
    {
      std::unique_lock<std::mutex> lk(b.m);
      unsigned long g = b.slot_generation;
      if (++b.slot_arrived >= b.nthreads) {
        b.slot_arrived = 0;
        s.current = L.next_block.fetch_add(1);
        reset_block(b);
        ++b.slot_generation;
        b.cv.notify_all();
      } else {
        b.cv.wait(lk, [&] { return b.slot_generation != g; });
      }
    }
    unsigned long long blk = s.current;
    if (blk >= L.nblocks) break;
    blockIdx.x = (unsigned)(blk % L.grid.x);
    blockIdx.y = (unsigned)((blk / L.grid.x) % L.grid.y);
    blockIdx.z = (unsigned)(blk / ((unsigned long long)L.grid.x * L.grid.y));
    ffi_call(&L.cif, L.fn, nullptr, L.argv.data());
    {
      // This thread leaves the block: its barriers now wait for one thread fewer.
      std::unique_lock<std::mutex> lk(b.m);
      --b.running;
      WarpSync &w = b.warps[wk->tid / 32];
      w.present &= ~(1u << (wk->tid & 31u));
      b.maybe_release_block();
      b.maybe_release_warp(w, popcount(w.present));
    }
  }
  return nullptr;
}

}  // namespace gvfs_cpu

// Argument type codes (gpuvfs/backends/cpu.py packs with the same codes).
static ffi_type *ffi_type_of(unsigned char code) {
  switch (code) {
    case 0: return &ffi_type_pointer;
    case 1: return &ffi_type_sint8;
    case 2: return &ffi_type_uint8;
    case 3: return &ffi_type_sint16;
    case 4: return &ffi_type_uint16;
    case 5: return &ffi_type_sint32;
    case 6: return &ffi_type_uint32;
    case 7: return &ffi_type_sint64;
    case 8: return &ffi_type_uint64;
    case 9: return &ffi_type_float;
    case 10: return &ffi_type_double;
    default: return nullptr;
  }
}

extern "C" __attribute__((visibility("default"))) int gvfs_cpu_launch(
    void *fn, const unsigned *grid3, const unsigned *block3, int nargs, const unsigned char *codes,
    unsigned long long *values, unsigned resident, unsigned long stack_bytes, char *err, int errlen) {
  using namespace gvfs_cpu;
  Launch L;
  L.fn = (void (*)())fn;
  L.grid = dim3(grid3[0], grid3[1], grid3[2]);
  L.block = dim3(block3[0], block3[1], block3[2]);
  L.nblocks = (unsigned long long)grid3[0] * grid3[1] * grid3[2];
  unsigned nthreads = block3[0] * block3[1] * block3[2];
  if (L.nblocks == 0 || nthreads == 0) return 0;
  L.types.resize(nargs);
  L.argv.resize(nargs);
  for (int i = 0; i < nargs; ++i) {
    L.types[i] = ffi_type_of(codes[i]);
    if (!L.types[i]) { snprintf(err, errlen, "argument %d has unknown type code %d", i, codes[i]); return -1; }
    L.argv[i] = &values[i];  // little-endian: the value's bytes start at the slot's address
  }
  if (ffi_prep_cif(&L.cif, FFI_DEFAULT_ABI, (unsigned)nargs, &ffi_type_void, L.types.data()) != FFI_OK) {
    snprintf(err, errlen, "libffi could not prepare the call");
    return -1;
  }
  if (resident == 0) resident = 1;
  if (resident > L.nblocks) resident = (unsigned)L.nblocks;
  std::vector<Slot> slots(resident);
  std::vector<Worker> workers((size_t)resident * nthreads);
  std::vector<pthread_t> threads;
  threads.reserve(workers.size());
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, stack_bytes);
  int rc = 0;
  for (unsigned s = 0; s < resident; ++s) {
    slots[s].launch = &L;
    slots[s].sync.nthreads = nthreads;
    slots[s].sync.warps.resize((nthreads + 31) / 32);
    for (unsigned t = 0; t < nthreads; ++t) {
      Worker &w = workers[(size_t)s * nthreads + t];
      w.slot = &slots[s];
      w.tid = t;
    }
  }
  for (auto &w : workers) {
    pthread_t th;
    if (pthread_create(&th, &attr, worker_main, &w) != 0) {
      // Cannot start the launch whole; the threads already started would wait forever for
      // their siblings, so this is fatal for the process rather than a silent hang.
      snprintf(err, errlen, "could not start thread %zu of %zu", threads.size(), workers.size());
      fprintf(stderr, "gpuvfs cpu launcher: %s\n", err);
      abort();
    }
    threads.push_back(th);
  }
  for (auto th : threads) pthread_join(th, nullptr);
  pthread_attr_destroy(&attr);
  return rc;
}

// Layout of the ABI structs, for tests/test_abi.py (the host mirror must match).
#include <cstddef>
extern "C" __attribute__((visibility("default"))) int gvfs_cpu_abi(unsigned long long *out, int cap) {
  unsigned long long v[] = {
      GVFS_ABI_VERSION, GVFS_PATH_MAX, GVFS_CTX_MAGIC, (unsigned long long)GVFS_NCOUNTERS,
      sizeof(gvfs_request), offsetof(gvfs_request, opcode), offsetof(gvfs_request, flags),
      offsetof(gvfs_request, fd), offsetof(gvfs_request, data_len), offsetof(gvfs_request, offset),
      offsetof(gvfs_request, length), offsetof(gvfs_request, arg),
      sizeof(gvfs_response), offsetof(gvfs_response, result), offsetof(gvfs_response, aux),
      sizeof(gvfs_lanes), offsetof(gvfs_lanes, count), offsetof(gvfs_lanes, data_bytes),
      offsetof(gvfs_lanes, req_word), offsetof(gvfs_lanes, resp_word), offsetof(gvfs_lanes, req),
      offsetof(gvfs_lanes, resp), offsetof(gvfs_lanes, data), offsetof(gvfs_lanes, lock),
      sizeof(gvfs_ctx), offsetof(gvfs_ctx, magic), offsetof(gvfs_ctx, lanes), offsetof(gvfs_ctx, counters),
      offsetof(gvfs_ctx, fill_push_bytes), offsetof(gvfs_ctx, readahead_pages), offsetof(gvfs_ctx, pt), offsetof(gvfs_ctx, files),
      offsetof(gvfs_ctx, fill_stage),
      sizeof(gvfs_pagetable), offsetof(gvfs_pagetable, state), offsetof(gvfs_pagetable, pool),
      sizeof(gvfs_files), offsetof(gvfs_files, epoch), offsetof(gvfs_files, names),
      sizeof(gvfs_fdent), sizeof(gvfs_nameent), GVFS_NAME_MAX, GVFS_FD_BASE, GVFS_CTX_FDS_OFFSET, GVFS_FD_TABLE_MIN,
      GVFS_CTX_HINTS_BYTES, GVFS_NAME_HINTS, GVFS_HINT_INDEX_MASK,
      sizeof(gvfs_stat),
      GVFS_OP_NOP, GVFS_OP_OPEN, GVFS_OP_PREAD, GVFS_OP_PWRITE, GVFS_OP_FSTAT, GVFS_OP_CLOSE,
      GVFS_OP_FSYNC, GVFS_OP_UNLINK, GVFS_OP_WRITE_LINE, GVFS_OP_READ_LINE, GVFS_OP_WALLCLOCK, GVFS_OP_FILL, GVFS_OP_LOOKUP,
      GVFS_OP_FILL_PUSH,
      GVFS_O_WRONLY, GVFS_O_RDWR, GVFS_O_CREAT, GVFS_O_EXCL, GVFS_O_TRUNC, GVFS_O_APPEND,
      GVFS_WORD_SEQ_MASK, GVFS_WORD_SHIFT, GVFS_CODE_RECORD, GVFS_CODE_BIAS, GVFS_CODE_LENGTH, GVFS_PT_MAX_WAYS,
      // which opcodes are the word alone, in the order of the opcodes above
      gvfs_op_word_only(GVFS_OP_NOP), gvfs_op_word_only(GVFS_OP_OPEN), gvfs_op_word_only(GVFS_OP_PREAD),
      gvfs_op_word_only(GVFS_OP_PWRITE), gvfs_op_word_only(GVFS_OP_FSTAT), gvfs_op_word_only(GVFS_OP_CLOSE),
      gvfs_op_word_only(GVFS_OP_FSYNC), gvfs_op_word_only(GVFS_OP_UNLINK), gvfs_op_word_only(GVFS_OP_WRITE_LINE),
      gvfs_op_word_only(GVFS_OP_READ_LINE), gvfs_op_word_only(GVFS_OP_WALLCLOCK), gvfs_op_word_only(GVFS_OP_FILL),
      gvfs_op_word_only(GVFS_OP_LOOKUP), gvfs_op_word_only(GVFS_OP_FILL_PUSH),
  };
  int n = (int)(sizeof(v) / sizeof(v[0]));
  for (int i = 0; i < n && i < cap; ++i) out[i] = v[i];
  return n;
}
