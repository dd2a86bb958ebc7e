// gpuvfs hostcall: lanes of mailboxes through which device threads ask the host server
// to do what the GPU cannot (open a file, read from disk, write a line to stdout).
//
// One lane = one outstanding request. The words of a lane and their single writers:
//
//   word              lives in            written by             read by
//   lock[i]           device memory       device threads (CAS)   device threads
//   seq[i]            device memory       the lane's owner       the lane's owner
//   req[i], data[i]   pinned host memory  the lane's owner       host server, after req_word
//   req_word[i]       pinned host memory  the lane's owner       host server (NumPy sweep)
//   resp[i], data[i]  pinned host memory  host server           the lane's owner, after resp_word
//   resp_word[i]      pinned host memory  host server           the lane's owner
//
// No word in host memory is ever written by both sides, so no atomic read-modify-write
// crosses PCIe (PCIe atomics are not needed and not assumed). Device threads compete for
// lanes only through lock[], which lives in device memory.
//
// The two 4-byte words carry the common case alone (protocol v2, docs/protocol.md):
//   req_word  = opcode << 24 | (seq & 0xFFFFFF)    seq: the owner's count of requests on
//               the lane (seq[i], device memory), of which the word carries the low 24 bits
//   resp_word = code << 24   | (seq & 0xFFFFFF)    the seq of the request it answers;
//               code 0: the answer is in resp[i] (result, aux), written before the word;
//               code 1..255: the result is code - 128 (-127..127), aux words are zero.
// The word's opcode is the one the server routes by. A request whose opcode carries no
// arguments (NOP, WALLCLOCK) is the word alone: req[i] is not written and not read. NOP is
// 0x80, so its answer is its own word echoed (code 0x80: result 0): a sweep answers every
// pending NOP with one masked copy of the request words into the response words.
//
// The state of lane i, as seen from the seq bits of the pair (req_word[i], resp_word[i]):
//   IDLE     req seq == resp seq, lock == 0      nobody owns it
//   CLAIMED  req seq == resp seq, lock == 1      a device thread owns it, writes req/data
//   PENDING  req seq != resp seq                 the host owns req/data/resp
//   ANSWERED req seq == resp seq, lock == 1      the owner reads resp/data, then unlocks
// Transitions, each by exactly one party:
//   IDLE -> CLAIMED     device: CAS lock 0 -> 1 (acquire: see the previous owner's writes)
//   CLAIMED -> PENDING  device: seq += 1; writes req/data (if the opcode has any), then
//                       store-release(sys) req_word = opcode << 24 | (seq & 0xFFFFFF)
//   PENDING -> ANSWERED host: reads req_word, then req/data; writes resp/data (unless the
//                       code says it all), then stores resp_word (x86 keeps stores in
//                       order, so resp and data are visible before resp_word)
//   ANSWERED -> IDLE    device: load-acquire(sys) saw resp_word's seq == its own; decodes the
//                       code, reads resp only when it is 0; then store-release(dev) lock = 0
// Invariants:
//   I1  at most one device thread owns a lane (lock is taken by CAS and released only by it);
//   I2  the host touches req/data/resp of lane i only while req seq != resp seq;
//   I3  the device touches them only while it holds lock[i] and req seq == resp seq;
//   I4  a request is answered once: the server remembers the last req_word it took
//       (host side, `taken[i]`) and takes lane i again only when req_word[i] differs.
//       Consecutive requests of a lane differ in their seq bits, so the 24-bit wrap is
//       harmless: only the previous word of the same lane is ever compared against.
// When every lane is busy a thread keeps probing other lanes with growing backoff (no
// queue, no deadlock: lanes are freed by the host answering, which needs no device thread).
// docs/protocol.md argues each fence and gives the layout the host mirrors (gpuvfs/abi.py).
#pragma once
#include "port.cuh"

// ---- ABI shared with the host (mirrored in gpuvfs/abi.py, checked by tests/test_abi.py) ----
#define GVFS_ABI_VERSION 2u
#define GVFS_PATH_MAX 4096u    // bytes, including the terminating NUL
#define GVFS_LANE_DATA_MIN 4096u
#ifndef GVFS_WAIT_MAX_NS
#define GVFS_WAIT_MAX_NS 16384u  // longest pause between two polls of an answer
#endif
// The lane words (see above).
#define GVFS_WORD_SEQ_MASK 0xFFFFFFu   // the seq bits of req_word and resp_word
#define GVFS_WORD_SHIFT 24u            // opcode (req_word) or code (resp_word) above them
#define GVFS_CODE_RECORD 0u            // resp_word's code: the answer is in resp[i]
#define GVFS_CODE_BIAS 128             // code 1..255: result = code - GVFS_CODE_BIAS

enum gvfs_opcode : gvfs_u32 {   // 8 bits: they travel in req_word's top byte
  GVFS_OP_NOP = 0x80,     // answers 0; used by benchmarks and health checks. The word alone;
                          //   0x80 so that the echoed word is its answer (code 0x80: 0)
  GVFS_OP_OPEN = 2,       // data: path (NUL-terminated); flags; result: fd or -errno;
                          //   aux0 = size, aux1 = mtime_ns, aux2 = file id (dev<<32 ^ ino)
  GVFS_OP_PREAD = 3,      // fd, offset, length (<= data_bytes); data <- bytes; result: count
  GVFS_OP_PWRITE = 4,     // fd, offset, length (<= data_bytes); data -> file; result: count
  GVFS_OP_FSTAT = 5,      // fd; result 0; aux0 = size, aux1 = mtime_ns, aux2 = mode
  GVFS_OP_CLOSE = 6,      // fd
  GVFS_OP_FSYNC = 7,      // fd
  GVFS_OP_UNLINK = 8,     // data: path
  GVFS_OP_WRITE_LINE = 9, // flags: 1 stdout, 2 stderr; length bytes of data: one line
  GVFS_OP_READ_LINE = 10, // length = capacity; data <- bytes of one stdin line; result: count
  GVFS_OP_WALLCLOCK = 11, // result: ns since the Unix epoch. The word alone
  GVFS_OP_FILL = 12,      // arg0 = file_no, offset, length (<= data_bytes); data <- bytes; result: count
                          //   or -ESTALE if the file changed since that version was looked up
  GVFS_OP_LOOKUP = 13,    // data: path; opens it read-only for the page cache; result: file_no
                          //   (a version: a changed file gets a new one); aux0 = size, aux1 = mtime_ns, aux2 = mode
};

// Opcodes whose request is the word alone: no field of req[i] is written or read.
GVFS_FN bool gvfs_op_word_only(gvfs_u32 opcode) { return opcode == GVFS_OP_NOP || opcode == GVFS_OP_WALLCLOCK; }

struct gvfs_request {   // 64 bytes; written by the lane owner, read by the host
  gvfs_u32 opcode;      // a copy of req_word's opcode, for debugging: the server routes by the word
  gvfs_u32 flags;
  gvfs_i32 fd;
  gvfs_u32 data_len;    // bytes of lane data that carry input (path incl. NUL, or pwrite bytes)
  gvfs_u64 offset;
  gvfs_u64 length;
  gvfs_u64 arg[4];
};
struct gvfs_response {  // 32 bytes; written by the host (when resp_word's code is 0), read by the lane owner
  gvfs_i64 result;      // >= 0, or -errno
  gvfs_u64 aux[3];
};

struct gvfs_lanes {
  gvfs_u32 count;               // number of lanes
  gvfs_u32 data_bytes;          // payload bytes per lane (>= GVFS_LANE_DATA_MIN, multiple of 256)
  volatile gvfs_u32 *req_word;  // [count] host memory: device writes, host reads
  volatile gvfs_u32 *resp_word; // [count] host memory: host writes, device reads
  gvfs_request *req;            // [count] host memory
  gvfs_response *resp;          // [count] host memory
  gvfs_u8 *data;                // [count * data_bytes] host memory
  gvfs_u32 *lock;               // [count] device memory
  gvfs_u32 *seq;                // [count] device memory
};

// Linux errno values (NVRTC has no <errno.h>); results are their negations.
#define GVFS_EPERM 1
#define GVFS_ENOENT 2
#define GVFS_EIO 5
#define GVFS_EBADF 9
#define GVFS_EAGAIN 11
#define GVFS_ENOMEM 12
#define GVFS_EACCES 13
#define GVFS_EFAULT 14
#define GVFS_EEXIST 17
#define GVFS_ENOTDIR 20
#define GVFS_EISDIR 21
#define GVFS_EINVAL 22
#define GVFS_EMFILE 24
#define GVFS_EFBIG 27
#define GVFS_ENOSPC 28
#define GVFS_ENAMETOOLONG 36
#define GVFS_ENOSYS 38
#define GVFS_ELOOP 40
#define GVFS_EOVERFLOW 75
#define GVFS_ESTALE 116

// ---- the device side of the protocol ----

// Claims a lane (IDLE -> CLAIMED). Starts at a lane derived from the thread id so that
// threads spread out, probes a few neighbours, then backs off and moves on.
GVFS_FN gvfs_u32 gvfs_lane_acquire(gvfs_lanes *L) {
  const gvfs_u32 n = L->count;
  gvfs_u32 start = (gvfs_u32)(gvfs_global_tid() % n);
  gvfs_u32 ns = 64;
  for (gvfs_u32 round = 0;; ++round) {
    const gvfs_u32 probes = n < 16u ? n : 16u;
    for (gvfs_u32 k = 0; k < probes; ++k) {
      gvfs_u32 i = start + k;
      if (i >= n) i -= n;
      // Test before CAS: a relaxed load is cheap; the CAS (acq_rel) is what takes ownership
      // and makes the previous owner's writes to seq[i] visible (it released lock[i]).
      if (gvfs_load_relaxed_dev(&L->lock[i]) == 0u && gvfs_cas_acq_rel_dev(&L->lock[i], 0u, 1u) == 0u) return i;
    }
    gvfs_backoff(ns);
    if (ns < 8192u) ns *= 2u;
    start = (gvfs_u32)((start + probes * 7u + round) % n);
  }
}

// One sweep of probes, no waiting: true and *lane when a lane was claimed. For callers that
// must not wait for a lane while holding another resource (the warp read path).
GVFS_FN bool gvfs_lane_try_acquire(gvfs_lanes *L, gvfs_u32 *lane) {
  const gvfs_u32 n = L->count;
  const gvfs_u32 start = (gvfs_u32)(gvfs_global_tid() % n);
  const gvfs_u32 probes = n < 32u ? n : 32u;
  for (gvfs_u32 k = 0; k < probes; ++k) {
    gvfs_u32 i = start + k;
    if (i >= n) i -= n;
    if (gvfs_load_relaxed_dev(&L->lock[i]) == 0u && gvfs_cas_acq_rel_dev(&L->lock[i], 0u, 1u) == 0u) {
      *lane = i;
      return true;
    }
  }
  return false;
}

GVFS_FN gvfs_request *gvfs_lane_req(gvfs_lanes *L, gvfs_u32 lane) { return &L->req[lane]; }
GVFS_FN gvfs_u8 *gvfs_lane_data(gvfs_lanes *L, gvfs_u32 lane) { return L->data + (gvfs_u64)lane * L->data_bytes; }

// CLAIMED -> PENDING: publishes the request word. The release at system scope orders every
// store the owner made to req[lane] and data[lane] before the store of req_word: the host,
// which reads req_word first, then sees a whole request. `opcode` must fit in 8 bits (every
// GVFS_OP_ does); the mask only keeps a stray one from reaching the seq bits.
GVFS_FN void gvfs_lane_submit(gvfs_lanes *L, gvfs_u32 lane, gvfs_u32 opcode) {
  gvfs_u32 s = L->seq[lane] + 1u;  // owner-only word, ordered by the lock's acquire
  L->seq[lane] = s;
  gvfs_store_release_sys(&L->req_word[lane], (opcode & 0xFFu) << GVFS_WORD_SHIFT | (s & GVFS_WORD_SEQ_MASK));
}

// A request that is its opcode alone (gvfs_op_word_only: NOP, WALLCLOCK): one 4-byte store
// crosses PCIe; req[lane] keeps whatever the lane's previous request left there, which the
// host does not read for these opcodes.
GVFS_FN void gvfs_lane_post_word(gvfs_lanes *L, gvfs_u32 lane, gvfs_u32 opcode) { gvfs_lane_submit(L, lane, opcode); }

// Writes the whole request and submits it (CLAIMED -> PENDING): every field, so nothing of
// the lane's previous request reaches the host; for a word-only opcode, the word alone (the
// opcode is a constant at every call site, so the test costs nothing).
GVFS_FN void gvfs_lane_post(gvfs_lanes *L, gvfs_u32 lane, gvfs_u32 opcode, gvfs_u32 flags, gvfs_i32 fd,
                            gvfs_u32 data_len, gvfs_u64 offset, gvfs_u64 length, gvfs_u64 arg0 = 0) {
  if (gvfs_op_word_only(opcode)) {
    gvfs_lane_post_word(L, lane, opcode);
    return;
  }
  gvfs_request *q = gvfs_lane_req(L, lane);
  q->opcode = opcode; q->flags = flags; q->fd = fd; q->data_len = data_len;
  q->offset = offset; q->length = length;
  q->arg[0] = arg0; q->arg[1] = q->arg[2] = q->arg[3] = 0;
  gvfs_lane_submit(L, lane, opcode);
}

// PENDING -> ANSWERED, seen by the owner; returns the answer's word. Only the seq bits are
// compared: the last word the host wrote before this answer carries the previous seq, which
// differs in its low bit whatever the wrap. The acquire at system scope orders the reads of
// resp[lane] and data[lane] after the read that saw the host's resp_word store.
GVFS_FN gvfs_u32 gvfs_lane_await(gvfs_lanes *L, gvfs_u32 lane) {
  const gvfs_u32 s = L->seq[lane] & GVFS_WORD_SEQ_MASK;
  gvfs_u32 spins = 0, ns = 32;
  for (;;) {
    const gvfs_u32 w = gvfs_load_acquire_sys(&L->resp_word[lane]);
    if ((w & GVFS_WORD_SEQ_MASK) == s) return w;
    // The first polls go straight back out: a PCIe read already takes ~1 us on the GPU.
    // Then the wait grows to GVFS_WAIT_MAX_NS: each poll is a read across PCIe, and
    // hundreds of lanes polling every microsecond take bandwidth from the data.
    if (++spins > 4u) { gvfs_backoff(ns); if (ns < GVFS_WAIT_MAX_NS) ns *= 2u; }
  }
}

// The answer's result alone: decoded from the word when its code carries it (no second
// read over PCIe), else the record's result word.
GVFS_FN gvfs_i64 gvfs_lane_wait_result(gvfs_lanes *L, gvfs_u32 lane) {
  const gvfs_u32 code = gvfs_lane_await(L, lane) >> GVFS_WORD_SHIFT;
  if (code != GVFS_CODE_RECORD) return (gvfs_i64)code - GVFS_CODE_BIAS;
  return ((const volatile gvfs_response *)&L->resp[lane])->result;
}

// The whole answer: the record when the code says so, else the decoded result and zero aux.
GVFS_FN gvfs_response gvfs_lane_wait(gvfs_lanes *L, gvfs_u32 lane) {
  const gvfs_u32 code = gvfs_lane_await(L, lane) >> GVFS_WORD_SHIFT;
  gvfs_response r;
  if (code != GVFS_CODE_RECORD) {
    r.result = (gvfs_i64)code - GVFS_CODE_BIAS;
    r.aux[0] = r.aux[1] = r.aux[2] = 0;
    return r;
  }
  const volatile gvfs_response *vr = &L->resp[lane];
  r.result = vr->result;
  r.aux[0] = vr->aux[0];
  r.aux[1] = vr->aux[1];
  r.aux[2] = vr->aux[2];
  return r;
}

// ANSWERED -> IDLE. Release at device scope: our reads of resp/data and our write of
// seq[lane] happen before the next owner's CAS acquires the lock.
GVFS_FN void gvfs_lane_release(gvfs_lanes *L, gvfs_u32 lane) { gvfs_store_release_dev(&L->lock[lane], 0u); }

// A whole call for requests whose input fits in the request words: claim, fill, submit,
// wait, release. Calls that move data through data[lane] use the steps above.
GVFS_FN gvfs_u32 gvfs_hostcall_submit(gvfs_lanes *L, gvfs_u32 opcode, gvfs_i32 fd, gvfs_u32 flags,
                                      gvfs_u64 offset, gvfs_u64 length) {
  gvfs_u32 lane = gvfs_lane_acquire(L);
  gvfs_lane_post(L, lane, opcode, flags, fd, 0, offset, length);
  return lane;
}
GVFS_FN gvfs_response gvfs_hostcall(gvfs_lanes *L, gvfs_u32 opcode, gvfs_i32 fd, gvfs_u32 flags,
                                    gvfs_u64 offset, gvfs_u64 length) {
  gvfs_u32 lane = gvfs_hostcall_submit(L, opcode, fd, flags, offset, length);
  gvfs_response r = gvfs_lane_wait(L, lane);
  gvfs_lane_release(L, lane);
  return r;
}
// The same, for calls whose answer is the result word alone.
GVFS_FN gvfs_i64 gvfs_hostcall_result(gvfs_lanes *L, gvfs_u32 opcode, gvfs_i32 fd, gvfs_u32 flags,
                                      gvfs_u64 offset, gvfs_u64 length) {
  gvfs_u32 lane = gvfs_hostcall_submit(L, opcode, fd, flags, offset, length);
  gvfs_i64 r = gvfs_lane_wait_result(L, lane);
  gvfs_lane_release(L, lane);
  return r;
}
