// gpuvfs device port: the one place that decides CUDA vs CPU.
//
// Everything else under device/ is written once against the names defined here:
//   - fixed-width types (gvfs_u32, gvfs_u64, ...): NVRTC has no <cstdint>;
//   - memory operations with an explicit order AND scope:
//       *_dev  : ordered among threads of this device (CUDA scope .gpu);
//       *_sys  : ordered also against the host server (CUDA scope .sys), used on
//                mailbox words that live in pinned host memory mapped into the device;
//   - gvfs_backoff(): how a spin-wait gives way (GPU: __nanosleep; CPU: a yield, since
//     with 2 cores a thread that spins without yielding starves the one it waits for);
//   - gvfs_globaltimer_ns(): the device clock (GPU %globaltimer; CPU CLOCK_MONOTONIC).
//
// The CPU port maps each operation to std::atomic_ref with the same memory order the
// CUDA side uses, so ThreadSanitizer checks the same happens-before edges the GPU relies
// on. What it cannot prove: x86 is TSO and the GPU is weaker; every fence is argued in
// docs/protocol.md. The CPU port also supplies the CUDA built-ins user kernels need
// (threadIdx, __syncthreads, warp shuffles, atomics); their runtime lives in
// device/cpu/launcher.cpp.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
// ======================================================================= CUDA side
#define GVFS_CUDA 1
#define GVFS_FN __device__ __forceinline__
#define GVFS_NOINLINE __device__ __noinline__
// A function compiled once per module and called, not inlined at every call site: the
// calls that are hostcalls, and the per-thread read, pwrite, fstat, close and fsync. Every
// gvfs_* call inlined took a test kernel with 7 opens and 4 preads to 159,000 lines of PTX
// and 40 s in nvcc (NVRTC on the GPU host: 96 s); with these out of line, 11 s. What stays
// inline is measured to need it (H100, A/B in one run): the open answered from the name
// cache (called: 1.26 -> 1.75 us) and the warp read (a call anywhere in it cost its kernel
// spills). A called per-thread read was as fast on hits (4 KiB: 0.91 -> 0.90x of a
// device-to-device copy) and a 4 KiB miss went 29.8 -> 32 us.
// A function template with a defaulted parameter: called as a plain function, and safe to
// define in a header that more than one translation unit of the CPU port includes, which a
// plain noinline function is not.
#define GVFS_COLD template <int gvfs_cold_ = 0> GVFS_NOINLINE

typedef unsigned char gvfs_u8;
typedef unsigned short gvfs_u16;
typedef unsigned int gvfs_u32;
typedef int gvfs_i32;
typedef unsigned long long gvfs_u64;
typedef long long gvfs_i64;
#ifndef NULL
#define NULL 0
#endif

// --- device-scope operations (words in device memory, shared by GPU threads) ---
GVFS_FN gvfs_u32 gvfs_load_relaxed_dev(const gvfs_u32 *p) {
  gvfs_u32 v; asm volatile("ld.relaxed.gpu.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory"); return v;
}
GVFS_FN gvfs_u32 gvfs_load_acquire_dev(const gvfs_u32 *p) {
  gvfs_u32 v; asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory"); return v;
}
GVFS_FN void gvfs_store_release_dev(gvfs_u32 *p, gvfs_u32 v) {
  asm volatile("st.release.gpu.u32 [%0], %1;" :: "l"(p), "r"(v) : "memory");
}
GVFS_FN void gvfs_store_relaxed_dev(gvfs_u32 *p, gvfs_u32 v) {
  asm volatile("st.relaxed.gpu.u32 [%0], %1;" :: "l"(p), "r"(v) : "memory");
}
// Returns the previous value; succeeded iff it equals `expected`. acq_rel on success.
GVFS_FN gvfs_u32 gvfs_cas_acq_rel_dev(gvfs_u32 *p, gvfs_u32 expected, gvfs_u32 desired) {
  gvfs_u32 old;
  asm volatile("atom.acq_rel.gpu.cas.b32 %0, [%1], %2, %3;" : "=r"(old) : "l"(p), "r"(expected), "r"(desired) : "memory");
  return old;
}
GVFS_FN gvfs_u32 gvfs_cas_acquire_dev(gvfs_u32 *p, gvfs_u32 expected, gvfs_u32 desired) {
  gvfs_u32 old;
  asm volatile("atom.acquire.gpu.cas.b32 %0, [%1], %2, %3;" : "=r"(old) : "l"(p), "r"(expected), "r"(desired) : "memory");
  return old;
}
// Release only: what came before is published, nothing after waits (an acquire would also
// empty this SM's L1).
GVFS_FN gvfs_u32 gvfs_cas_release_dev(gvfs_u32 *p, gvfs_u32 expected, gvfs_u32 desired) {
  gvfs_u32 old;
  asm volatile("atom.release.gpu.cas.b32 %0, [%1], %2, %3;" : "=r"(old) : "l"(p), "r"(expected), "r"(desired) : "memory");
  return old;
}
// Sets bits; returns the previous value. Acquire only: a lock taken this way publishes nothing.
GVFS_FN gvfs_u32 gvfs_fetch_or_acquire_dev(gvfs_u32 *p, gvfs_u32 v) {
  gvfs_u32 old; asm volatile("atom.acquire.gpu.or.b32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory"); return old;
}
GVFS_FN gvfs_u32 gvfs_fetch_add_acq_rel_dev(gvfs_u32 *p, gvfs_u32 v) {
  gvfs_u32 old; asm volatile("atom.acq_rel.gpu.add.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory"); return old;
}
GVFS_FN gvfs_u32 gvfs_fetch_add_acquire_dev(gvfs_u32 *p, gvfs_u32 v) {
  gvfs_u32 old; asm volatile("atom.acquire.gpu.add.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory"); return old;
}
GVFS_FN gvfs_u32 gvfs_fetch_sub_acq_rel_dev(gvfs_u32 *p, gvfs_u32 v) {
  return gvfs_fetch_add_acq_rel_dev(p, (gvfs_u32)(0u - v));
}
// An add whose old value nobody needs: a reduction, which the SM issues without waiting.
GVFS_FN void gvfs_add_release_dev(gvfs_u32 *p, gvfs_u32 v) {
  asm volatile("red.release.gpu.add.u32 [%0], %1;" :: "l"(p), "r"(v) : "memory");
}
GVFS_FN void gvfs_sub_release_dev(gvfs_u32 *p, gvfs_u32 v) { gvfs_add_release_dev(p, 0u - v); }
GVFS_FN gvfs_u64 gvfs_load_relaxed_u64_dev(const gvfs_u64 *p) {
  gvfs_u64 v; asm volatile("ld.relaxed.gpu.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory"); return v;
}
// Neighbouring words in one request (p aligned to the vector's size): each word is read
// atomically on its own (a vector access is one access per element), the group is not. In
// the claim (H100, 17:22 UTC) a set's 48 words read one by one took 2.7 us and 16 wide loads
// 0.48 us, so wide loads are worth their alignment there. Why is not settled: a lone thread's
// loads overlap about 8 words at a time whatever their width (probe, 18:10 UTC), which
// predicts a smaller gap.
GVFS_FN void gvfs_load_relaxed_u64x2_dev(const gvfs_u64 *p, gvfs_u64 *a, gvfs_u64 *b) {
  asm volatile("ld.relaxed.gpu.v2.u64 {%0, %1}, [%2];" : "=l"(*a), "=l"(*b) : "l"(p) : "memory");
}
GVFS_FN void gvfs_load_relaxed_u32x4_dev(const gvfs_u32 *p, gvfs_u32 *a, gvfs_u32 *b, gvfs_u32 *c, gvfs_u32 *d) {
  asm volatile("ld.relaxed.gpu.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(*a), "=r"(*b), "=r"(*c), "=r"(*d) : "l"(p) : "memory");
}
GVFS_FN void gvfs_store_relaxed_u64_dev(gvfs_u64 *p, gvfs_u64 v) {
  asm volatile("st.relaxed.gpu.u64 [%0], %1;" :: "l"(p), "l"(v) : "memory");
}
GVFS_FN void gvfs_fence_acq_rel_dev() { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }
// Asks L2 for the line of `p` and goes on (no register, nothing waits): a later access to
// the line, dependent on something else in flight now, then finds it in L2, not in DRAM.
GVFS_FN void gvfs_prefetch_l2(const void *p) { asm volatile("prefetch.L2 [%0];" :: "l"(p)); }
GVFS_FN void gvfs_fence_sc_dev() { asm volatile("fence.sc.gpu;" ::: "memory"); }
// Counters: relaxed, only summed by the host after the kernel. The lanes of a warp that
// count into the same word at once add their sum with one atomic: every read counts, and
// 32 atomics per warp instruction on one address would serialise the hit path.
GVFS_FN void gvfs_count_dev(gvfs_u64 *p, gvfs_u64 v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const gvfs_u32 mask = __activemask();
  const gvfs_u32 peers = __match_any_sync(mask, (unsigned long long)p);
  if (__any_sync(peers, v > 0xffffffffull)) { atomicAdd(p, v); return; }
  const gvfs_u32 total = __reduce_add_sync(peers, (gvfs_u32)v);
  gvfs_u32 lane; asm("mov.u32 %0, %%laneid;" : "=r"(lane));
  if (lane == (gvfs_u32)(__ffs((int)peers) - 1)) atomicAdd(p, (gvfs_u64)total);
#else
  atomicAdd(p, v);
#endif
}
GVFS_FN gvfs_u64 gvfs_fetch_add_u64_relaxed_dev(gvfs_u64 *p, gvfs_u64 v) { return atomicAdd(p, v); }
// Counters are spread over shards by SM: a hit costs two counter updates, and every SM
// adding into the same two words would serialise the hit path at one L2 slice.
#define GVFS_COUNTER_SHARDS 32u
GVFS_FN gvfs_u32 gvfs_counter_shard() { gvfs_u32 s; asm("mov.u32 %0, %%smid;" : "=r"(s)); return s & (GVFS_COUNTER_SHARDS - 1u); }

// --- bulk copies by the Tensor Memory Accelerator (sm_90), for gvfs_copy_alone (copy.cuh) ---
// One thread can have a whole page of pinned host memory in flight with one instruction
// (its loads keep 8 x 16 bytes in flight: 4 KiB took 65 us on the H100, the bulk copy 1.7).
// The copy engine is the *async proxy*: its reads and writes are ordered against this
// thread's ordinary (generic proxy) accesses only through fence.proxy.async.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define GVFS_HAVE_BULK_COPY 1
GVFS_FN gvfs_u32 gvfs_smem(const void *p) { return (gvfs_u32)__cvta_generic_to_shared(p); }
// Whether a generic address is in the global window (device memory, or pinned host memory
// mapped into the device): a bulk copy's global operand must be, and a caller's buffer may
// be a local or __shared__ array instead.
GVFS_FN bool gvfs_is_global(const void *p) {
  gvfs_u32 r; asm("{\n\t.reg .pred g;\n\tisspacep.global g, %1;\n\tselp.u32 %0, 1, 0, g;\n\t}" : "=r"(r) : "l"(p));
  return r != 0u;
}
// Ordinary accesses before it are ordered before async-proxy accesses after it, and the
// other way round (both global and shared state spaces).
GVFS_FN void gvfs_fence_proxy_async() { asm volatile("fence.proxy.async;" ::: "memory"); }
// A block-local word taken by exchange (see gvfs_copy_staged for why not a CAS).
GVFS_FN gvfs_u32 gvfs_exch_acquire_cta(gvfs_u32 *p, gvfs_u32 v) {
  gvfs_u32 old; asm volatile("atom.acquire.cta.shared::cta.exch.b32 %0, [%1], %2;" : "=r"(old) : "r"(gvfs_smem(p)), "r"(v) : "memory");
  return old;
}
GVFS_FN void gvfs_store_release_cta(gvfs_u32 *p, gvfs_u32 v) {
  asm volatile("st.release.cta.shared::cta.u32 [%0], %1;" :: "r"(gvfs_smem(p)), "r"(v) : "memory");
}
// An mbarrier that this thread alone arrives at: each phase completes when its bytes land.
GVFS_FN void gvfs_mbar_init(gvfs_u64 *bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(gvfs_smem(bar)) : "memory");
}
GVFS_FN void gvfs_mbar_inval(gvfs_u64 *bar) {
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];" :: "r"(gvfs_smem(bar)) : "memory");
}
// Bytes [src, src+n) of global memory into shared `dst`, completing the barrier's current
// phase (n: a multiple of 16, both addresses 16-byte aligned).
GVFS_FN void gvfs_bulk_to_shared(void *dst, const void *src, gvfs_u32 n, gvfs_u64 *bar) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(gvfs_smem(bar)), "r"(n) : "memory");
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               :: "r"(gvfs_smem(dst)), "l"(src), "r"(n), "r"(gvfs_smem(bar)) : "memory");
}
GVFS_FN void gvfs_mbar_wait(gvfs_u64 *bar, gvfs_u32 phase) {
  gvfs_u32 done = 0;
  while (!done) {
    asm volatile("{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
                 : "=r"(done) : "r"(gvfs_smem(bar)), "r"(phase) : "memory");
  }
}
// Shared `src` into global `dst` (n: a multiple of 16, 16-byte aligned); returns once
// `src` has been read (the staging buffer may be refilled).
GVFS_FN void gvfs_bulk_to_global(void *dst, const void *src, gvfs_u32 n) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" :: "l"(dst), "r"(gvfs_smem(src)), "r"(n) : "memory");
  asm volatile("cp.async.bulk.commit_group;\n\tcp.async.bulk.wait_group.read 0;" ::: "memory");
}
// Every bulk store of this thread has landed (is visible to its later accesses).
GVFS_FN void gvfs_bulk_wait_stores() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
#endif

// --- system-scope operations (mailbox words in pinned host memory) ---
GVFS_FN gvfs_u32 gvfs_load_acquire_sys(const volatile gvfs_u32 *p) {
  gvfs_u32 v; asm volatile("ld.acquire.sys.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory"); return v;
}
GVFS_FN void gvfs_store_release_sys(volatile gvfs_u32 *p, gvfs_u32 v) {
  asm volatile("st.release.sys.u32 [%0], %1;" :: "l"(p), "r"(v) : "memory");
}
GVFS_FN void gvfs_fence_sys() { asm volatile("fence.sc.sys;" ::: "memory"); }

GVFS_FN void gvfs_backoff(gvfs_u32 ns) { __nanosleep(ns); }
GVFS_FN gvfs_u64 gvfs_globaltimer_ns() {
  gvfs_u64 t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t;
}
GVFS_FN gvfs_u32 gvfs_lane_id() { gvfs_u32 l; asm("mov.u32 %0, %%laneid;" : "=r"(l)); return l; }
GVFS_FN gvfs_u32 gvfs_linear_tid() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
GVFS_FN gvfs_u64 gvfs_global_tid() {
  gvfs_u64 block = blockIdx.x + (gvfs_u64)gridDim.x * (blockIdx.y + (gvfs_u64)gridDim.y * blockIdx.z);
  return block * (blockDim.x * blockDim.y * blockDim.z) + gvfs_linear_tid();
}
GVFS_FN gvfs_u32 gvfs_activemask() { return __activemask(); }
GVFS_FN void gvfs_syncwarp(gvfs_u32 mask) { __syncwarp(mask); }
GVFS_FN gvfs_u32 gvfs_ballot(gvfs_u32 mask, int pred) { return __ballot_sync(mask, pred); }
GVFS_FN gvfs_u64 gvfs_shfl_u64(gvfs_u32 mask, gvfs_u64 v, int src) { return __shfl_sync(mask, v, src); }
GVFS_FN gvfs_u32 gvfs_shfl_u32(gvfs_u32 mask, gvfs_u32 v, int src) { return __shfl_sync(mask, v, src); }
GVFS_FN void gvfs_trap() { __trap(); }
#define GVFS_UNROLL _Pragma("unroll")
#define GVFS_NO_UNROLL _Pragma("unroll 1")  // a rare path: no unrolled copies of it holding registers
GVFS_FN int gvfs_ctz(gvfs_u32 v) { return __ffs((int)v) - 1; }
GVFS_FN gvfs_u32 gvfs_popc(gvfs_u32 v) { return (gvfs_u32)__popc(v); }
GVFS_FN int gvfs_ctz64(gvfs_u64 v) { return __ffsll((long long)v) - 1; }
// The lanes of this warp executing this call together (converged), for per-thread calls
// that work together when they can (cooperative groups' coalesced_threads()). Every lane
// of the mask must then make the same sequence of *_sync calls with this mask.
GVFS_FN gvfs_u32 gvfs_coalesced_lanes() { return __activemask(); }
// Whether a generic address is in this thread's local window (a stack array): no other
// thread can reach those bytes through the same address, so a buffer there must be filled
// by its own thread, never by its warp.
GVFS_FN bool gvfs_is_local(const void *p) {
  gvfs_u32 r; asm("{\n\t.reg .pred l;\n\tisspacep.local l, %1;\n\tselp.u32 %0, 1, 0, l;\n\t}" : "=r"(r) : "l"(p));
  return r != 0u;
}

#else
// ======================================================================= CPU port
#define GVFS_CPU 1
#include <atomic>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cmath>
#include <algorithm>
#include <pthread.h>
#include <sched.h>
#include <time.h>

typedef std::uint8_t gvfs_u8;
typedef std::uint16_t gvfs_u16;
typedef std::uint32_t gvfs_u32;
typedef std::int32_t gvfs_i32;
typedef unsigned long long gvfs_u64;
typedef long long gvfs_i64;

#define __global__ __attribute__((visibility("default"), used))
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
// A __shared__ variable is one per block. The CPU port makes it a static and runs the
// blocks of a module that declares one one at a time (gpuvfs.backends.cpu sees the word
// in the source); see docs/design.md, "CPU port".
#define __shared__ static
#define GVFS_FN inline
#define GVFS_NOINLINE __attribute__((noinline))
#define GVFS_COLD template <int gvfs_cold_ = 0> GVFS_NOINLINE

struct uint3 { unsigned int x, y, z; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Per-thread CUDA built-ins, set by the launcher before the kernel body runs.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace gvfs_cpu {
// Implemented in device/cpu/launcher.cpp (linked into every CPU module).
void syncthreads();
void syncwarp(unsigned mask);
unsigned long long warp_exchange(unsigned mask, unsigned long long v, int src_lane);
unsigned ballot(unsigned mask, int pred);
unsigned activemask();
}  // namespace gvfs_cpu

template <class T> inline std::atomic_ref<T> gvfs_ref(const T *p) { return std::atomic_ref<T>(*const_cast<T *>(p)); }
template <class T> inline std::atomic_ref<T> gvfs_ref(const volatile T *p) {
  return std::atomic_ref<T>(*const_cast<T *>(p));
}

// --- device-scope operations ---
inline gvfs_u32 gvfs_load_relaxed_dev(const gvfs_u32 *p) { return gvfs_ref(p).load(std::memory_order_relaxed); }
inline gvfs_u32 gvfs_load_acquire_dev(const gvfs_u32 *p) { return gvfs_ref(p).load(std::memory_order_acquire); }
inline void gvfs_store_release_dev(gvfs_u32 *p, gvfs_u32 v) { gvfs_ref(p).store(v, std::memory_order_release); }
inline void gvfs_store_relaxed_dev(gvfs_u32 *p, gvfs_u32 v) { gvfs_ref(p).store(v, std::memory_order_relaxed); }
inline gvfs_u32 gvfs_cas_acq_rel_dev(gvfs_u32 *p, gvfs_u32 expected, gvfs_u32 desired) {
  gvfs_ref(p).compare_exchange_strong(expected, desired, std::memory_order_acq_rel, std::memory_order_acquire);
  return expected;  // compare_exchange writes the old value here on failure; equals it on success
}
inline gvfs_u32 gvfs_cas_acquire_dev(gvfs_u32 *p, gvfs_u32 expected, gvfs_u32 desired) {
  gvfs_ref(p).compare_exchange_strong(expected, desired, std::memory_order_acquire, std::memory_order_relaxed);
  return expected;
}
inline gvfs_u32 gvfs_cas_release_dev(gvfs_u32 *p, gvfs_u32 expected, gvfs_u32 desired) {
  gvfs_ref(p).compare_exchange_strong(expected, desired, std::memory_order_release, std::memory_order_relaxed);
  return expected;
}
inline gvfs_u32 gvfs_fetch_or_acquire_dev(gvfs_u32 *p, gvfs_u32 v) { return gvfs_ref(p).fetch_or(v, std::memory_order_acquire); }
inline gvfs_u32 gvfs_fetch_add_acq_rel_dev(gvfs_u32 *p, gvfs_u32 v) { return gvfs_ref(p).fetch_add(v, std::memory_order_acq_rel); }
inline gvfs_u32 gvfs_fetch_add_acquire_dev(gvfs_u32 *p, gvfs_u32 v) { return gvfs_ref(p).fetch_add(v, std::memory_order_acquire); }
inline gvfs_u32 gvfs_fetch_sub_acq_rel_dev(gvfs_u32 *p, gvfs_u32 v) { return gvfs_ref(p).fetch_sub(v, std::memory_order_acq_rel); }
inline void gvfs_add_release_dev(gvfs_u32 *p, gvfs_u32 v) { gvfs_ref(p).fetch_add(v, std::memory_order_release); }
inline void gvfs_sub_release_dev(gvfs_u32 *p, gvfs_u32 v) { gvfs_ref(p).fetch_sub(v, std::memory_order_release); }
inline gvfs_u64 gvfs_load_relaxed_u64_dev(const gvfs_u64 *p) { return gvfs_ref(p).load(std::memory_order_relaxed); }
inline void gvfs_load_relaxed_u64x2_dev(const gvfs_u64 *p, gvfs_u64 *a, gvfs_u64 *b) {
  *a = gvfs_ref(p).load(std::memory_order_relaxed);
  *b = gvfs_ref(p + 1).load(std::memory_order_relaxed);
}
inline void gvfs_load_relaxed_u32x4_dev(const gvfs_u32 *p, gvfs_u32 *a, gvfs_u32 *b, gvfs_u32 *c, gvfs_u32 *d) {
  *a = gvfs_ref(p).load(std::memory_order_relaxed);
  *b = gvfs_ref(p + 1).load(std::memory_order_relaxed);
  *c = gvfs_ref(p + 2).load(std::memory_order_relaxed);
  *d = gvfs_ref(p + 3).load(std::memory_order_relaxed);
}
inline void gvfs_store_relaxed_u64_dev(gvfs_u64 *p, gvfs_u64 v) { gvfs_ref(p).store(v, std::memory_order_relaxed); }
inline void gvfs_fence_acq_rel_dev() { std::atomic_thread_fence(std::memory_order_acq_rel); }
inline void gvfs_prefetch_l2(const void *) {}
inline void gvfs_fence_sc_dev() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void gvfs_count_dev(gvfs_u64 *p, gvfs_u64 v) { gvfs_ref(p).fetch_add(v, std::memory_order_relaxed); }
inline gvfs_u64 gvfs_fetch_add_u64_relaxed_dev(gvfs_u64 *p, gvfs_u64 v) { return gvfs_ref(p).fetch_add(v, std::memory_order_relaxed); }
#define GVFS_COUNTER_SHARDS 1u  // a few OS threads: nothing to spread
inline gvfs_u32 gvfs_counter_shard() { return 0u; }

// --- system-scope operations: the "host" is another thread of this process ---
inline gvfs_u32 gvfs_load_acquire_sys(const volatile gvfs_u32 *p) { return gvfs_ref(p).load(std::memory_order_acquire); }
inline void gvfs_store_release_sys(volatile gvfs_u32 *p, gvfs_u32 v) { gvfs_ref(p).store(v, std::memory_order_release); }
inline void gvfs_fence_sys() { std::atomic_thread_fence(std::memory_order_seq_cst); }

inline void gvfs_backoff(gvfs_u32) { sched_yield(); }
inline gvfs_u64 gvfs_globaltimer_ns() {
  struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
  return (gvfs_u64)ts.tv_sec * 1000000000ull + (gvfs_u64)ts.tv_nsec;
}
inline gvfs_u32 gvfs_linear_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
inline gvfs_u32 gvfs_lane_id() { return gvfs_linear_tid() & 31u; }
inline gvfs_u64 gvfs_global_tid() {
  gvfs_u64 block = blockIdx.x + (gvfs_u64)gridDim.x * (blockIdx.y + (gvfs_u64)gridDim.y * blockIdx.z);
  return block * (blockDim.x * blockDim.y * blockDim.z) + gvfs_linear_tid();
}
inline gvfs_u32 gvfs_activemask() { return gvfs_cpu::activemask(); }
inline void gvfs_syncwarp(gvfs_u32 mask) { gvfs_cpu::syncwarp(mask); }
inline gvfs_u32 gvfs_ballot(gvfs_u32 mask, int pred) { return gvfs_cpu::ballot(mask, pred); }
inline gvfs_u64 gvfs_shfl_u64(gvfs_u32 mask, gvfs_u64 v, int src) { return gvfs_cpu::warp_exchange(mask, v, src); }
inline gvfs_u32 gvfs_shfl_u32(gvfs_u32 mask, gvfs_u32 v, int src) { return (gvfs_u32)gvfs_cpu::warp_exchange(mask, v, src); }
inline void gvfs_trap() { __builtin_trap(); }
#define GVFS_UNROLL
#define GVFS_NO_UNROLL
inline int gvfs_ctz(gvfs_u32 v) { return __builtin_ctz(v); }
inline gvfs_u32 gvfs_popc(gvfs_u32 v) { return (gvfs_u32)__builtin_popcount(v); }
inline int gvfs_ctz64(gvfs_u64 v) { return __builtin_ctzll(v); }
// OS threads are never converged: each lane calls alone. A test whose kernel keeps every
// lane of its warps in step (same calls, same count) defines GVFS_CPU_COALESCED to run the
// cooperative per-thread paths with whole warps, as the GPU would.
#ifdef GVFS_CPU_COALESCED
inline gvfs_u32 gvfs_coalesced_lanes() { return gvfs_cpu::activemask(); }
#else
inline gvfs_u32 gvfs_coalesced_lanes() { return 1u << gvfs_lane_id(); }
#endif
// An address on this OS thread's stack. (Every thread could reach it here, but a GPU
// thread's stack is its alone: answering as the GPU does keeps the CPU port on the paths
// the GPU takes for a stack buffer.)
inline bool gvfs_is_local(const void *p) {
  thread_local bool known = false;
  thread_local const char *lo = nullptr, *hi = nullptr;  // [lo, hi); empty when the stack is unknown
  if (!known) {
    known = true;
    pthread_attr_t a;
    void *base = nullptr;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
      if (pthread_attr_getstack(&a, &base, &size) == 0) {
        lo = (const char *)base;
        hi = lo + size;
      }
      pthread_attr_destroy(&a);
    }
  }
  return (const char *)p >= lo && (const char *)p < hi;
}

// --- CUDA built-ins for user kernels on the CPU port ---
inline void __syncthreads() { gvfs_cpu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { gvfs_cpu::syncwarp(mask); }
inline unsigned __activemask() { return gvfs_cpu::activemask(); }
inline unsigned __ballot_sync(unsigned mask, int pred) { return gvfs_cpu::ballot(mask, pred); }
inline int __any_sync(unsigned mask, int pred) { return gvfs_cpu::ballot(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return (gvfs_cpu::ballot(mask, pred) & mask & gvfs_cpu::activemask()) == (mask & gvfs_cpu::activemask()); }
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  static_assert(sizeof(T) <= 8, "__shfl_sync: value wider than 8 bytes");
  unsigned long long bits = 0; std::memcpy(&bits, &v, sizeof(T));
  int lane = (int)gvfs_lane_id();
  int base = lane & ~(width - 1);
  bits = gvfs_cpu::warp_exchange(mask, bits, base + (src & (width - 1)));
  T out; std::memcpy(&out, &bits, sizeof(T)); return out;
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
  int lane = (int)gvfs_lane_id(); int src = lane + (int)d;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  unsigned long long bits = 0; std::memcpy(&bits, &v, sizeof(T));
  bits = gvfs_cpu::warp_exchange(mask, bits, src); T out; std::memcpy(&out, &bits, sizeof(T)); return out;
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
  int lane = (int)gvfs_lane_id(); int src = lane ^ m;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  unsigned long long bits = 0; std::memcpy(&bits, &v, sizeof(T));
  bits = gvfs_cpu::warp_exchange(mask, bits, src); T out; std::memcpy(&out, &bits, sizeof(T)); return out;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __nanosleep(unsigned) { sched_yield(); }
inline long long clock64() { return (long long)gvfs_globaltimer_ns(); }
inline void __trap() { __builtin_trap(); }
template <class T> inline T atomicAdd(T *p, T v) { return gvfs_ref(p).fetch_add(v, std::memory_order_relaxed); }
template <class T> inline T atomicSub(T *p, T v) { return gvfs_ref(p).fetch_sub(v, std::memory_order_relaxed); }
template <class T> inline T atomicExch(T *p, T v) { return gvfs_ref(p).exchange(v, std::memory_order_relaxed); }
template <class T> inline T atomicCAS(T *p, T expected, T desired) {
  gvfs_ref(p).compare_exchange_strong(expected, desired, std::memory_order_relaxed); return expected;
}
template <class T> inline T atomicMax(T *p, T v) {
  T cur = gvfs_ref(p).load(std::memory_order_relaxed);
  while (cur < v && !gvfs_ref(p).compare_exchange_weak(cur, v, std::memory_order_relaxed)) {}
  return cur;
}
template <class T> inline T atomicMin(T *p, T v) {
  T cur = gvfs_ref(p).load(std::memory_order_relaxed);
  while (cur > v && !gvfs_ref(p).compare_exchange_weak(cur, v, std::memory_order_relaxed)) {}
  return cur;
}
template <class T> inline T atomicOr(T *p, T v) { return gvfs_ref(p).fetch_or(v, std::memory_order_relaxed); }
template <class T> inline T atomicAnd(T *p, T v) { return gvfs_ref(p).fetch_and(v, std::memory_order_relaxed); }
using std::min;
using std::max;
#endif
