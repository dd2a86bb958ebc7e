// gpuvfs hostcall: lanes of mailboxes through which device threads ask the host server
// to do what the GPU cannot (open a file, read from disk, write a line to stdout).
//
// One lane = one outstanding request (protocol v3, docs/protocol.md). Its words, and who
// may write each:
//
//   word              lives in            written by                     read by
//   lock[i]           device memory       the held bit: any device       device threads
//                                         thread (fetch_or); the value:
//                                         the lane's owner
//   req[i], data[i]   pinned host memory  the lane's owner               host server, after req_word
//   req_word[i]       pinned host memory  the lane's owner               host server (NumPy sweep)
//   resp[i], data[i]  pinned host memory  host server                    the lane's owner, after resp_word
//   resp_word[i]      pinned host memory  host server                    the lane's owner
//
// No word in host memory is ever written by both sides, so no atomic read-modify-write
// crosses PCIe (PCIe atomics are not needed and not assumed). Device threads compete for
// lanes only through lock[], which lives in device memory.
//
// The three words of a lane:
//   lock[i]   = seq << 1 | held                  seq (31 bits): the requests ever made on
//               the lane; held: a device thread owns it
//   req_word  = opcode << 24 | (seq & 0xFFFFFF)  the request's seq, its low 24 bits
//   resp_word = code << 24   | (seq & 0xFFFFFF)  the seq of the request it answers;
//               code 0: the answer is in resp[i] (result, aux), written before the word;
//               code 1..254: the result is code - 128 (-127..126), aux words are zero;
//               code 255: the result is the request's own `length`, aux words are zero
//               (a read, write or fill that moved every byte asked for: no second read
//               across PCIe for the count).
// The seq lives in the lock word so that the one atomic that takes a lane also says its
// seq: a claim is one device-memory round trip, and the request leaves right after it. The
// owner keeps the seq in registers from the claim to the release (gvfs_claim), and writes
// the lock word only to release it.
// The request word's opcode is the one the server routes by. A request whose opcode carries
// no arguments (NOP, WALLCLOCK) is the word alone: req[i] is not written and not read. NOP is
// 0x80, so its answer is its own word echoed (code 0x80: result 0): a sweep answers every
// pending NOP with one masked copy of the request words into the response words.
//
// The state of lane i ("req seq", "resp seq": the low 24 bits of req_word[i], resp_word[i]):
//   IDLE     held == 0, req seq == resp seq      nobody owns it
//   CLAIMED  held == 1, req seq == resp seq      a device thread owns it, writes req/data
//   PENDING  held == 1, req seq != resp seq      the host owns req/data/resp
//   ANSWERED held == 1, req seq == resp seq      the owner reads resp/data, then unlocks
// Transitions, each by exactly one party, with each fence and why it is there:
//   IDLE -> CLAIMED     device: old = fetch_or(lock, 1) with acquire order (dev). The thread
//                       took the lane iff old's held bit was clear; old >> 1 is the lane's
//                       seq. The acquire reads from the previous owner's releasing store
//                       (ANSWERED -> IDLE), so that owner's reads of resp/data happen before
//                       our writes to req/data. No release: taking a lane publishes nothing.
//                       On a held lane the bit is already set and the fetch_or writes back
//                       the value it read: a miss changes nothing.
//   CLAIMED -> PENDING  device: seq += 1; writes req/data (if the opcode has any), then
//                       store-release(sys) req_word = opcode << 24 | (seq & 0xFFFFFF). The
//                       release orders the record and the payload (posted writes across
//                       PCIe) before the word: the host, which reads the word first, sees
//                       the whole request. The lock word is not written: the owner has its
//                       seq in registers, and the releasing store carries it to the next owner.
//   PENDING -> ANSWERED host: reads req_word, then req/data (x86 keeps loads in order);
//                       writes resp/data (unless the code says it all), then stores resp_word
//                       (x86 keeps stores in order, so resp and data are visible before it).
//   ANSWERED -> IDLE    device: a load-acquire(sys) saw resp_word's seq == its own; the
//                       acquire orders the owner's reads of resp/data after that load. It
//                       decodes the code, reads resp only when it is 0, reads the payload if
//                       the call has one; then store-release(dev) lock = seq << 1. The release
//                       orders all those reads before the next owner's fetch_or (which reads
//                       from this store) and so before its writes to the same words.
//   CLAIMED -> IDLE     device, a lane taken and given back unused (a path too long for a
//                       request): the same releasing store, the seq unchanged.
// Invariants:
//   I1  at most one device thread owns a lane: the held bit is set only by a fetch_or, which
//       owns the lane only if it found the bit clear, and cleared only by the owner's release;
//   I2  the host touches req/data/resp of lane i only while req seq != resp seq;
//   I3  the device touches them only while it holds lane i and req seq == resp seq;
//   I4  a request is answered once: the server remembers the last req_word it took
//       (host side, `taken[i]`) and takes lane i again only when req_word[i] differs.
//       Consecutive requests of a lane differ in their seq bits, so the 24-bit wrap is
//       harmless: only the previous word of the same lane is ever compared against;
//   I5  while lane i is IDLE, lock[i] >> 1 is the seq of its last request, the count of its
//       requests so far (mod 2^31): the next owner goes on from it, so the request words of a
//       lane carry consecutive seqs whoever makes them.
// Waiting for the answer (gvfs_lane_await): four polls back to back (a read across PCIe
// already takes ~1 us), then pauses from 32 ns, doubling up to a cap. A short request (no
// lane data: NOP, OPEN, LOOKUP, FSTAT, CLOSE, WALLCLOCK...) caps at GVFS_WAIT_SHORT_NS, so a
// slow one is seen within ~2 us of its answer. A request that moves `length` bytes through
// the lane caps at length / GVFS_WAIT_BYTES_PER_NS (gvfs_wait_cap_ns), within
// [GVFS_WAIT_SHORT_NS, GVFS_WAIT_MAX_NS]: each poll is a read across PCIe, and hundreds of
// lanes polling every microsecond for big FILLs took bandwidth from the data itself.
// When every lane is busy a thread keeps probing other lanes with growing backoff (no
// queue, no deadlock: lanes are freed by the host answering, which needs no device thread).
// docs/protocol.md argues each fence and gives the layout the host mirrors (gpuvfs/abi.py).
#pragma once
#include "port.cuh"

// ---- ABI shared with the host (mirrored in gpuvfs/abi.py, checked by tests/test_abi.py) ----
#define GVFS_ABI_VERSION 7u
#define GVFS_PATH_MAX 4096u    // bytes, including the terminating NUL
#define GVFS_LANE_DATA_MIN 4096u
// The pauses between two polls of an answer (see above): the cap for requests that move
// no lane data, the longest cap, and the rate that scales the cap of those that do.
#ifndef GVFS_WAIT_SHORT_NS
#define GVFS_WAIT_SHORT_NS 2048u
#endif
#ifndef GVFS_WAIT_MAX_NS
#define GVFS_WAIT_MAX_NS 16384u
#endif
#if GVFS_WAIT_SHORT_NS > GVFS_WAIT_MAX_NS
#error "GVFS_WAIT_SHORT_NS must not exceed GVFS_WAIT_MAX_NS"
#endif
#define GVFS_WAIT_BYTES_PER_NS 4u  // 4 GB/s
// The lane words (see above).
#define GVFS_WORD_SEQ_MASK 0xFFFFFFu   // the seq bits of req_word and resp_word
#define GVFS_WORD_SHIFT 24u            // opcode (req_word) or code (resp_word) above them
#define GVFS_CODE_RECORD 0u            // resp_word's code: the answer is in resp[i]
#define GVFS_CODE_BIAS 128             // code 1..254: result = code - GVFS_CODE_BIAS
#define GVFS_CODE_LENGTH 255u          // resp_word's code: result = the request's length
#define GVFS_LANE_HELD 1u              // lock[i]'s held bit; the lane's seq is above it

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
  GVFS_OP_FILL_PUSH = 14, // as FILL, and the host then copies the bytes into the lane's stage
                          //   in device memory (ctx fill_stage: one DMA) and answers once they landed
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
  gvfs_u32 *lock;               // [count] device memory: seq << 1 | held
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

// A lane as its owner holds it: the index, and the seq of the lane's latest request. The
// claim returns it and it stays in registers through submit, wait and release: none of them
// reads lock[lane] back.
struct gvfs_claim {
  gvfs_u32 lane;
  gvfs_u32 seq;
};

// One try at lane i (`lock`: the lanes' lock words), one atomic: the fetch_or sets the held
// bit, and if the bit was clear the lane is ours and the rest of the old word is its seq
// (IDLE -> CLAIMED). Acquire, not acq_rel: it must see the previous owner's accesses (it
// reads from that owner's release), and taking a lane publishes nothing. On a held lane the
// bit is already set, so the atomic writes back what it read: a miss costs its round trip
// and changes nothing.
GVFS_FN bool gvfs_lane_take(gvfs_u32 *lock, gvfs_u32 i, gvfs_claim *c) {
  const gvfs_u32 old = gvfs_fetch_or_acquire_dev(&lock[i], GVFS_LANE_HELD);
  c->lane = i;
  c->seq = old >> 1;
  return (old & GVFS_LANE_HELD) == 0u;
}

// A probe after the first one: a relaxed test load, then the fetch_or only if the lane
// looks free. The first probe goes straight to the fetch_or (the common case is a free
// lane, usually the one this thread used last: a test load would only add a round trip).
// Once it failed, lanes are contended, and a load costs about the round trip a fetch_or
// would but writes nothing: threads circling over busy lanes then do not queue atomics at
// the L2 on the very words whose owners are about to release them and whose next takers
// need their own fetch_or to get through.
GVFS_FN bool gvfs_lane_probe(gvfs_u32 *lock, gvfs_u32 i, gvfs_claim *c) {
  return (gvfs_load_relaxed_dev(&lock[i]) & GVFS_LANE_HELD) == 0u && gvfs_lane_take(lock, i, c);
}

// Claims a lane (IDLE -> CLAIMED). Starts at a lane derived from the thread id, so that
// threads spread out and a thread that calls again tries the lane it had last; then probes
// a few neighbours, backs off and moves on.
// The lanes' words are addressed through pointers in L, which lives in memory: every
// function here reads the pointers it needs before its first ordered operation. The asm's
// "memory" clobber makes the compiler read L again after each one, and after an acquire
// (which invalidates the SM's L1) that read is one more round trip to L2 on the way.
GVFS_FN gvfs_claim gvfs_lane_claim(gvfs_lanes *L) {
  const gvfs_u32 n = L->count;
  gvfs_u32 *const lock = L->lock;
  gvfs_u32 start = (gvfs_u32)(gvfs_global_tid() % n);
  gvfs_claim c;
  if (gvfs_lane_take(lock, start, &c)) return c;
  const gvfs_u32 probes = n < 16u ? n : 16u;
  gvfs_u32 ns = 64;
  for (gvfs_u32 round = 0;; ++round) {
    for (gvfs_u32 k = round == 0u ? 1u : 0u; k < probes; ++k) {  // round 0's k = 0 was the try above
      gvfs_u32 i = start + k;
      if (i >= n) i -= n;
      if (gvfs_lane_probe(lock, i, &c)) return c;
    }
    gvfs_backoff(ns);
    if (ns < 8192u) ns *= 2u;
    start = (gvfs_u32)((start + probes * 7u + round) % n);
  }
}

// One sweep of probes, no waiting: true and *c when a lane was claimed. For callers that
// must not wait for a lane while holding another resource (the warp read path).
GVFS_FN bool gvfs_lane_try_claim(gvfs_lanes *L, gvfs_claim *c) {
  const gvfs_u32 n = L->count;
  gvfs_u32 *const lock = L->lock;
  const gvfs_u32 start = (gvfs_u32)(gvfs_global_tid() % n);
  if (gvfs_lane_take(lock, start, c)) return true;
  const gvfs_u32 probes = n < 32u ? n : 32u;
  for (gvfs_u32 k = 1; k < probes; ++k) {
    gvfs_u32 i = start + k;
    if (i >= n) i -= n;
    if (gvfs_lane_probe(lock, i, c)) return true;
  }
  return false;
}

GVFS_FN gvfs_request *gvfs_lane_req(gvfs_lanes *L, gvfs_u32 lane) { return &L->req[lane]; }
GVFS_FN gvfs_u8 *gvfs_lane_data(gvfs_lanes *L, gvfs_u32 lane) { return L->data + (gvfs_u64)lane * L->data_bytes; }

// CLAIMED -> PENDING: publishes the request word. The release at system scope orders every
// store the owner made to req[lane] and data[lane] before the store of req_word: the host,
// which reads req_word first, then sees a whole request. The new seq stays in `c` until the
// release stores it in lock[lane]. `opcode` must fit in 8 bits (every GVFS_OP_ does); the mask only
// keeps a stray one from reaching the seq bits. The seq wraps at 2^31 (`seq << 1` drops
// the bit above), which the words, carrying its low 24 bits, do not see.
GVFS_FN void gvfs_lane_submit(gvfs_lanes *L, gvfs_claim &c, gvfs_u32 opcode) {
  c.seq += 1u;
  gvfs_store_release_sys(&L->req_word[c.lane], (opcode & 0xFFu) << GVFS_WORD_SHIFT | (c.seq & GVFS_WORD_SEQ_MASK));
}

// A request that is its opcode alone (gvfs_op_word_only: NOP, WALLCLOCK): one 4-byte store
// crosses PCIe; req[lane] keeps whatever the lane's previous request left there, which the
// host does not read for these opcodes.
GVFS_FN void gvfs_lane_post_word(gvfs_lanes *L, gvfs_claim &c, gvfs_u32 opcode) { gvfs_lane_submit(L, c, opcode); }

// Writes the whole request and submits it (CLAIMED -> PENDING): every field, so nothing of
// the lane's previous request reaches the host; for a word-only opcode, the word alone (the
// opcode is a constant at every call site, so the test costs nothing).
GVFS_FN void gvfs_lane_post(gvfs_lanes *L, gvfs_claim &c, gvfs_u32 opcode, gvfs_u32 flags, gvfs_i32 fd,
                            gvfs_u32 data_len, gvfs_u64 offset, gvfs_u64 length, gvfs_u64 arg0 = 0) {
  if (gvfs_op_word_only(opcode)) {
    gvfs_lane_post_word(L, c, opcode);
    return;
  }
  gvfs_request *q = gvfs_lane_req(L, c.lane);
  q->opcode = opcode; q->flags = flags; q->fd = fd; q->data_len = data_len;
  q->offset = offset; q->length = length;
  q->arg[0] = arg0; q->arg[1] = q->arg[2] = q->arg[3] = 0;
  gvfs_lane_submit(L, c, opcode);
}

// The cap on the pause between two polls for a request that moves `bytes` of lane data:
// bytes / GVFS_WAIT_BYTES_PER_NS, within [GVFS_WAIT_SHORT_NS, GVFS_WAIT_MAX_NS]. Such a
// request is rarely answered sooner than bytes / 4 GB/s (16 host workers preadv-ing into
// pinned memory moved ~40 GB/s, 2.5 GB/s each: docs/benchmarks.md), so a pause that long
// adds about the request's own time at most, and spares PCIe the polls meanwhile. With the
// defaults, 8 KiB and less keep the short cap, 64 KiB and more reach 16 us.
GVFS_FN gvfs_u32 gvfs_wait_cap_ns(gvfs_u64 bytes) {
  const gvfs_u64 ns = bytes / GVFS_WAIT_BYTES_PER_NS;
  return ns < GVFS_WAIT_SHORT_NS ? GVFS_WAIT_SHORT_NS : ns > GVFS_WAIT_MAX_NS ? GVFS_WAIT_MAX_NS : (gvfs_u32)ns;
}
// The opcodes that move `length` bytes through the lane's payload, one way or the other.
GVFS_FN bool gvfs_op_moves_data(gvfs_u32 opcode) {
  return opcode == GVFS_OP_FILL || opcode == GVFS_OP_FILL_PUSH || opcode == GVFS_OP_PREAD || opcode == GVFS_OP_PWRITE ||
         opcode == GVFS_OP_READ_LINE || opcode == GVFS_OP_WRITE_LINE;
}
// The cap for a request of `opcode` with `length` (gvfs_hostcall's; callers of the lane
// steps pass gvfs_wait_cap_ns(length) themselves when they move data).
GVFS_FN gvfs_u32 gvfs_op_wait_cap_ns(gvfs_u32 opcode, gvfs_u64 length) {
  return gvfs_op_moves_data(opcode) ? gvfs_wait_cap_ns(length) : GVFS_WAIT_SHORT_NS;
}

// PENDING -> ANSWERED, seen by the owner; returns the answer's word. Only the seq bits are
// compared: the last word the host wrote before this answer carries the previous seq, which
// differs in its low bit whatever the wrap. The acquire at system scope orders the reads of
// resp[lane] and data[lane] after the read that saw the host's resp_word store. The first
// polls go straight back out (a PCIe read already takes ~1 us on the GPU); then the pause
// between polls doubles from 32 ns up to `cap_ns` (see the top of this file).
GVFS_FN gvfs_u32 gvfs_lane_await(gvfs_lanes *L, const gvfs_claim &c, gvfs_u32 cap_ns = GVFS_WAIT_SHORT_NS) {
  const volatile gvfs_u32 *const word = &L->resp_word[c.lane];
  const gvfs_u32 s = c.seq & GVFS_WORD_SEQ_MASK;
  gvfs_u32 spins = 0, ns = 32;
  for (;;) {
    const gvfs_u32 w = gvfs_load_acquire_sys(word);
    if ((w & GVFS_WORD_SEQ_MASK) == s) return w;
    if (++spins > 4u) {
      gvfs_backoff(ns);
      if (ns < cap_ns) ns = ns * 2u < cap_ns ? ns * 2u : cap_ns;
    }
  }
}

// The result a word-borne code carries (code != GVFS_CODE_RECORD); `length`: the request's.
GVFS_FN gvfs_i64 gvfs_code_result(gvfs_u32 code, gvfs_u64 length) {
  return code == GVFS_CODE_LENGTH ? (gvfs_i64)length : (gvfs_i64)code - GVFS_CODE_BIAS;
}

// The answer's result alone: decoded from the word when its code carries it (no second
// read over PCIe), else the record's result word. `length`: the length field of the
// request posted (what code 255 stands for); `cap_ns`: see gvfs_lane_await.
GVFS_FN gvfs_i64 gvfs_lane_wait_result(gvfs_lanes *L, const gvfs_claim &c, gvfs_u64 length,
                                       gvfs_u32 cap_ns = GVFS_WAIT_SHORT_NS) {
  const volatile gvfs_response *const vr = &L->resp[c.lane];
  const gvfs_u32 code = gvfs_lane_await(L, c, cap_ns) >> GVFS_WORD_SHIFT;
  if (code != GVFS_CODE_RECORD) return gvfs_code_result(code, length);
  return vr->result;
}

// The whole answer: the record when the code says so, else the decoded result and zero aux.
GVFS_FN gvfs_response gvfs_lane_wait(gvfs_lanes *L, const gvfs_claim &c, gvfs_u64 length,
                                     gvfs_u32 cap_ns = GVFS_WAIT_SHORT_NS) {
  const volatile gvfs_response *const vr = &L->resp[c.lane];
  const gvfs_u32 code = gvfs_lane_await(L, c, cap_ns) >> GVFS_WORD_SHIFT;
  gvfs_response r;
  if (code != GVFS_CODE_RECORD) {
    r.result = gvfs_code_result(code, length);
    r.aux[0] = r.aux[1] = r.aux[2] = 0;
    return r;
  }
  r.result = vr->result;
  r.aux[0] = vr->aux[0];
  r.aux[1] = vr->aux[1];
  r.aux[2] = vr->aux[2];
  return r;
}

// ANSWERED (or CLAIMED) -> IDLE: the held bit cleared, the seq kept. Release at device
// scope: our reads of resp/data, and every earlier access of ours to the lane, happen before
// the next owner's fetch_or, which reads from this store.
GVFS_FN void gvfs_lane_release(gvfs_lanes *L, const gvfs_claim &c) { gvfs_store_release_dev(&L->lock[c.lane], c.seq << 1); }

// A whole call for requests whose input fits in the request words: claim, fill, submit,
// wait, release. Calls that move data through data[lane] use the steps above.
// gvfs_hostcall and gvfs_hostcall_result work on a copy of *L taken before the claim (the
// compiler keeps it in registers): the seq and every address stay in registers from the
// claim to the release, so one atomic is all that precedes the request word's store.
GVFS_FN gvfs_claim gvfs_hostcall_submit(gvfs_lanes *L, gvfs_u32 opcode, gvfs_i32 fd, gvfs_u32 flags,
                                        gvfs_u64 offset, gvfs_u64 length) {
  gvfs_claim c = gvfs_lane_claim(L);
  gvfs_lane_post(L, c, opcode, flags, fd, 0, offset, length);
  return c;
}
GVFS_FN gvfs_response gvfs_hostcall(gvfs_lanes *L, gvfs_u32 opcode, gvfs_i32 fd, gvfs_u32 flags,
                                    gvfs_u64 offset, gvfs_u64 length) {
  gvfs_lanes l = *L;
  const gvfs_claim c = gvfs_hostcall_submit(&l, opcode, fd, flags, offset, length);
  gvfs_response r = gvfs_lane_wait(&l, c, length, gvfs_op_wait_cap_ns(opcode, length));
  gvfs_lane_release(&l, c);
  return r;
}
// The same, for calls whose answer is the result word alone.
GVFS_FN gvfs_i64 gvfs_hostcall_result(gvfs_lanes *L, gvfs_u32 opcode, gvfs_i32 fd, gvfs_u32 flags,
                                      gvfs_u64 offset, gvfs_u64 length) {
  gvfs_lanes l = *L;
  const gvfs_claim c = gvfs_hostcall_submit(&l, opcode, fd, flags, offset, length);
  gvfs_i64 r = gvfs_lane_wait_result(&l, c, length, gvfs_op_wait_cap_ns(opcode, length));
  gvfs_lane_release(&l, c);
  return r;
}
