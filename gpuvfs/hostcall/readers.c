/* The host's native reader pool: cache fills (FILL requests) read into their lanes' buffers
 * by threads that never touch Python.
 *
 * Why: a fill is one preadv of up to lane_bytes. Run on Python's thread pool, every fill
 * takes the GIL twice and wakes the pool's queue; with 16 readers and the polling thread
 * all wanting the one GIL, 16 Python threads copied a page-cached file into pinned memory at
 * 13-35 GB/s on the H100 host (1-8 MiB reads; probe 2026-11-24, 19:43 UTC) while KvikIO's
 * C++ threads moved the same file to the GPU at 44 GB/s. Here the polling thread only
 * queues a job (one ctypes call) and later collects its result; the copy runs without the GIL.
 *
 * The pool is a mutex-guarded ring of jobs and a ring of results. Who touches what:
 *   - the submitter (the server's polling thread, or any thread: submit takes the lock)
 *     appends to `jobs` and signals `work`;
 *   - a reader thread takes the oldest job, runs it with the lock released (the job is its
 *     own copy), then appends {tag, result} to `done` and bumps `finished`;
 *   - the reaper (the polling thread) copies results out of `done` under the lock.
 * `finished` counts results ever appended. It is written under the lock but also read
 * without it (rp_finished_addr): a reaper compares it with what it has reaped to learn,
 * in one load and no call, whether anything finished. A stale read only delays a reap to
 * the next sweep; the results themselves are always read under the lock, so the release
 * store is there for the lock-free reader's sake alone: whoever sees the new count and then
 * takes the lock finds the result (the lock orders the rest).
 *
 * A job may also push its bytes on into device memory (FILL_PUSH: `dev` != 0), once the pool
 * was told how (rp_push_*):
 *   - memcpy (the cpu backend, whose device memory is host memory): the reader copies them;
 *   - cuda: the reader queues one host-to-device copy on a stream of its own (CUDA driver API,
 *     found with dlsym in the libcuda.so.1 the process has loaded) and records an event, then
 *     goes on to its next job; a waiter thread polls the events in the order they were
 *     recorded and only then appends the job's result, so a result never comes back before
 *     its bytes are in device memory. Streams and events are made by rp_push_cuda, on the
 *     caller's thread, before any kernel runs: creating a stream can wait for a running
 *     kernel, and the kernel may be waiting for this very pool's answers. rp_push_cuda
 *     returns only once the waiter has made the context current on its thread (else pushes
 *     stay off). A copy that failed to get its event recorded, or whose event reports an
 *     error, is waited for on its stream before the job's -EIO goes back (R2). The driver's
 *     calls come through a table (rp_cuda_api), so tests/native/tsan_readers.c runs this path
 *     under ThreadSanitizer with a stand-in driver.
 *
 * Invariants:
 *   R1 at most `cap` jobs are queued, running, waiting for their push or done-but-unreaped;
 *      so the `cap` events never run out, and rp_submit refuses a job
 *      beyond that (-EAGAIN) rather than overwrite one. The server has one request per lane
 *      at a time, so cap = lanes never refuses: a job that answers itself (R4) leaves the
 *      count before it stores its word, since the device may send the lane's next request
 *      as soon as it sees the word.
 *   R2 every job submitted before rp_destroy produces exactly one result (readers, then the
 *      waiter, drain their queues before they exit), and its buffers (the host one, and the
 *      device one it is pushed to) are written only before its result is appended: once the
 *      reaper has a job's result, nothing of the pool touches its buffers again.
 *   R3 a job whose file no longer has the expected size and mtime (the file changed since
 *      the device looked it up: docs/consistency.md) reads nothing and results in -ESTALE;
 *      a copy from a mapping is checked again after the copy, and is -ESTALE if the file
 *      changed under it.
 *
 * A job may also answer its request itself (`answer` != 0, once the pool was told where the
 * lanes' response words and records are: rp_answer_into). Then nothing of it goes back
 * through `done`: the server's polling thread neither reaps nor answers it, and the job
 * costs that thread only its share of one rp_submit_jobs call (its Python bookkeeping per
 * fill had made it the bound of cold reads on slower machines: docs/protocol.md, the
 * server). `answer` is the server's word for "the length you asked for" (code 255 and the
 * request's seq); the reader encodes the result as the server would (Server.answer): the
 * code alone for -127..126, code 255 for all n bytes, else the record then code 0. At the
 * end of such a job, in this order:
 *   1. the job's hold on its file is given back (below), and its result added to the
 *      answered counts (rp_counts_addr), so that a count read after the device saw the
 *      answer is never short;
 *   2. the lane's busy flag is cleared (rp_busy_addr), and the record written if one is due;
 *   3. the word is stored with a release: the job's bytes and steps 1-2 are visible to
 *      whoever sees it. (The stores travel to a GPU over PCIe in program order, x86-TSO; the
 *      copy's stores, which may be a fast-string copy in the kernel, are fenced from it by
 *      the syscall's return or the signal fence after the memcpy, and the counts' locked
 *      instructions.)
 *   4. `completed` is bumped (rp_in_flight's count).
 * Pushed jobs never answer here: they finish on the waiter once their copy landed, through
 * `done`, as jobs without `answer` do.
 *   R4 a job with `answer` answers exactly once (R2's "exactly one result", delivered as an
 *      answer instead of through `done`), and the word is its last touch of the lane: the
 *      device may write the lane's next request as soon as it sees the word, and the server,
 *      which sees that request only after the word, then finds the lane's busy flag clear.
 *   R5 a job with a hold (`users` != 0: the address of the caller's pair of int32 for the
 *      job's file, {holds, stale}) adds one to holds when it is queued and takes it back once
 *      it no longer touches the file (its fd, its mapping): the caller closes a file no job
 *      holds, never one a queued or running job will still read. A job that finds its file
 *      changed (-ESTALE) first sets the pair's stale word and counts it (counts.stale), so
 *      the caller, which answers nothing of it, can still retire the file.
 * A job may copy its bytes from a mapping of its file (`src` != 0: rp_map) instead of a
 * pread: memcpy from the page cache through page-table entries that stay in place from one
 * read of the file to the next, with no system call and none of the kernel's per-page work
 * (on the H100 host 15 threads copied a page-cached file at 107 GB/s that way, against 82 with
 * pread, 2026-11-25; the first touch of each page costs about what a pread would). The
 * copy stops at the size the job was checked against (R3), and a file truncated between
 * the check and the copy raises SIGBUS in the reader: a handler installed with the first
 * mapping jumps back out of that copy alone and the job results in -ESTALE, as for any file
 * that changed under a read (R3); a SIGBUS anywhere else goes on to the handler that was there
 * before.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int64_t tag;            /* the caller's name for the job (the server: the lane) */
  int32_t fd;
  uint32_t answer;        /* != 0: answer the tag's request with this word's seq, whatever the result (R4) */
  uint64_t dst, n, off;   /* read n bytes at off into the host address dst */
  int64_t size, mtime_ns; /* what the file must still be (R3); size < 0: do not check */
  uint64_t dev;           /* != 0: then push the bytes read to this device address */
  uint64_t src;           /* != 0 (and size >= 0): the file is mapped here (rp_map): copy, do not pread */
  uint64_t users;         /* != 0: the address of the caller's {holds, stale} pair for the file (R5) */
} rp_job;

typedef struct {
  int64_t tag, result;    /* result: bytes read (short only at the end of the file), or -errno */
} rp_result;

typedef struct {
  _Atomic uint64_t answered;   /* jobs that answered themselves (R4) */
  _Atomic uint64_t bytes;      /* bytes read by every job */
  _Atomic uint64_t errors;     /* of the jobs that answered themselves, those that failed */
  _Atomic uint64_t submitted, completed;   /* jobs queued, and jobs answered or appended to `done` */
  _Atomic uint64_t stale;      /* jobs that found their file changed (-ESTALE; see R5) */
} rp_counts;

typedef struct {
  int64_t tag, result;
  uint32_t event;         /* index into cuda.events */
  int reader;             /* whose stream the copy is on */
} rp_wait;

/* The CUDA driver API calls a cuda push makes (CUresult is an int; 0 is success), found in
 * libcuda.so.1 by rp_push_cuda, or handed in by a test (rp_push_cuda_api). */
typedef struct {
  int (*ctx_get)(void **ctx);
  int (*ctx_set)(void *ctx);
  int (*stream_create)(void **stream, unsigned flags);
  int (*stream_sync)(void *stream);
  int (*stream_destroy)(void *stream);
  int (*event_create)(void **event, unsigned flags);
  int (*event_destroy)(void *event);
  int (*record)(void *event, void *stream);
  int (*query)(void *event);                       /* 0: done, RP_CUDA_NOT_READY: not yet */
  int (*copy)(uint64_t dst, const void *src, size_t n, void *stream);  /* cuMemcpyHtoDAsync_v2 */
} rp_cuda_api;

enum { RP_CUDA_NOT_READY = 600 };

typedef struct {
  rp_cuda_api api;
  void *ctx;                                       /* the context the pushes run in (CUcontext) */
  void **streams;                                  /* one per reader */
  void **events;                                   /* cap of them (R1) */
  uint32_t *free_events, nfree;                    /* stack of free event indices (under lock) */
} rp_cuda;

enum { RP_PUSH_NONE, RP_PUSH_MEMCPY, RP_PUSH_CUDA };

typedef struct rp_pool rp_pool;
typedef struct { rp_pool *pool; int index; } rp_reader_arg;

struct rp_pool {
  pthread_mutex_t lock;
  pthread_cond_t work;    /* readers wait here for jobs */
  pthread_cond_t pushed;  /* the waiter waits here for pushes to wait for */
  rp_job *jobs;           /* ring: jobs[(jhead + i) % cap], i < jlen */
  rp_wait *waits;         /* ring: waits[(whead + i) % cap], i < wlen (cuda pushes in flight) */
  rp_result *done;        /* ring: done[(dhead + i) % cap], i < dlen */
  uint32_t cap, jhead, jlen, whead, wlen, dhead, dlen, running;
  uint32_t idle;          /* readers waiting on `work` (the wake chain: rp_reader) */
  int stop, stop_waiter;
  int nthreads;
  pthread_t *threads;
  rp_reader_arg *args;
  int push;               /* RP_PUSH_*: set once, before the first job that pushes */
  rp_cuda cuda;
  int have_waiter;
  int waiter_state;       /* 0 starting, 1 running, -1 could not make the context current */
  pthread_t waiter;
  _Atomic uint32_t *answers;  /* the response words jobs answer into (rp_answer_into), or NULL */
  char *records;             /* ... the response records (32 bytes each: result, aux[3]) */
  uint32_t nanswers;         /* ... and how many: a tag outside [0, nanswers) never answers */
  _Atomic uint8_t *busy;     /* per tag < nanswers: 1 while a job of that tag is queued or running */
  rp_counts counts;
  _Atomic uint64_t finished;
  _Atomic uint64_t busy_ns;  /* time the readers spent in jobs, summed (statistics only) */
};

static uint64_t rp_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- mapped files: the SIGBUS guard ---- */
/* Set while this thread copies from a mapping. initial-exec: the handler reads it in any
 * thread, and the general dynamic model's __tls_get_addr (which may allocate) is not
 * async-signal-safe in a thread that never touched it. */
static __thread sigjmp_buf *volatile rp_guard __attribute__((tls_model("initial-exec")));
static struct sigaction rp_old_bus;     /* the SIGBUS action before ours */
static pthread_once_t rp_bus_once = PTHREAD_ONCE_INIT;
static int rp_bus_installed;
static _Atomic uint64_t rp_bus_caught;  /* copies the guard cut short (statistics, tests) */

static void rp_on_sigbus(int sig, siginfo_t *info, void *uc) {
  const int fault = info && info->si_code > 0;   /* raised by an access, not sent (kill, raise) */
  sigjmp_buf *guard = rp_guard;
  if (guard && fault) {        /* a reader's copy from a truncated file: that copy alone fails */
    rp_guard = NULL;
    atomic_fetch_add_explicit(&rp_bus_caught, 1, memory_order_relaxed);
    siglongjmp(*guard, 1);
  }
  /* Not ours: what was there before gets it. */
  if (rp_old_bus.sa_flags & SA_SIGINFO) {
    if (rp_old_bus.sa_sigaction) {
      rp_old_bus.sa_sigaction(sig, info, uc);
      return;
    }
  } else if (rp_old_bus.sa_handler != SIG_DFL && rp_old_bus.sa_handler != SIG_IGN) {
    rp_old_bus.sa_handler(sig);
    return;
  }
  if (!fault && rp_old_bus.sa_handler == SIG_IGN) return;   /* ignored, as it was before us */
  /* The default: put it back, and the process ends as it would have without us (a fault
   * runs its access again and raises SIGBUS once more; a sent signal is sent again). */
  sigaction(SIGBUS, &rp_old_bus, NULL);
  if (!fault) raise(sig);
}

static void rp_install_sigbus(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = rp_on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;   /* NODEFER: a jump out of the handler leaves SIGBUS unblocked */
  sigemptyset(&sa.sa_mask);
  rp_bus_installed = sigaction(SIGBUS, &sa, &rp_old_bus) == 0;
}

/* Copies n bytes from a mapping; 0, or -ESTALE if the file shrank under the copy (SIGBUS). */
static int rp_copy_mapped(void *dst, const void *src, size_t n) {
  sigjmp_buf guard;
  if (sigsetjmp(guard, 0)) return -ESTALE;
  rp_guard = &guard;
  /* The compiler knows memcpy touches nothing but its arguments, and would sink the stores
   * of the guard past it (or drop the first): the signal fences keep them on either side. */
  atomic_signal_fence(memory_order_seq_cst);
  memcpy(dst, src, n);
  atomic_signal_fence(memory_order_seq_cst);
  rp_guard = NULL;
  return 0;
}

/* Maps `size` bytes of `fd` read-only for jobs to copy from (their `src`); 0 if it cannot
 * be mapped (the jobs then pread) or the SIGBUS guard could not be installed. */
uint64_t rp_map(int32_t fd, uint64_t size) {
  pthread_once(&rp_bus_once, rp_install_sigbus);
  if (!rp_bus_installed || size == 0) return 0;
  void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
  return m == MAP_FAILED ? 0 : (uint64_t)(uintptr_t)m;
}

/* How many copies from a mapping the SIGBUS guard has cut short, in this process. */
uint64_t rp_faults(void) { return atomic_load_explicit(&rp_bus_caught, memory_order_relaxed); }

/* Undoes rp_map, once no job copies from it. */
int rp_unmap(uint64_t addr, uint64_t size) {
  return munmap((void *)(uintptr_t)addr, (size_t)size) == 0 ? 0 : -errno;
}

/* One job, with no lock held. */
/* 0 while fd's file still has the size and mtime a job expects, else -ESTALE (R3), or
 * -errno when it cannot be told. */
static int rp_check_version(const rp_job *j) {
  struct stat st;
  if (fstat(j->fd, &st) != 0) return -errno;
  int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  return (int64_t)st.st_size == j->size && mtime == j->mtime_ns ? 0 : -ESTALE;
}

static int64_t rp_run(const rp_job *j) {
  if (j->size >= 0) {
    int err = rp_check_version(j);
    if (err) return err;
    if (j->src) {               /* mapped: up to the size just checked (a short read at the end) */
      uint64_t size = (uint64_t)j->size;
      uint64_t n = j->off >= size ? 0 : (size - j->off < j->n ? size - j->off : j->n);
      if (n && rp_copy_mapped((void *)(uintptr_t)j->dst, (const char *)(uintptr_t)j->src + j->off, (size_t)n))
        return -ESTALE;
      /* Checked again after the copy: a file truncated under it (the bytes of a last page
       * past the new end read as zeros, with no fault) or rewritten is a stale read, where a
       * pread would have come back short. */
      err = rp_check_version(j);
      return err ? err : (int64_t)n;
    }
  }
  uint64_t got = 0;
  while (got < j->n) {
    ssize_t r = pread(j->fd, (char *)(uintptr_t)j->dst + got, j->n - got, (off_t)(j->off + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return got ? (int64_t)got : -errno;   /* as read(2): the bytes read come first */
    }
    if (r == 0) break;                      /* end of file */
    got += (uint64_t)r;
  }
  return (int64_t)got;
}

/* The store order of an answer (R4). A macro so that the TSan harness's self-test can weaken
 * it and see the race it guards against. */
#ifndef RP_ANSWER_ORDER
#define RP_ANSWER_ORDER memory_order_release
#endif

/* Whether a tag names a lane the pool knows (rp_answer_into: its busy flags and answers). */
static int rp_known(const rp_pool *p, int64_t tag) { return p->busy && tag >= 0 && (uint64_t)tag < p->nanswers; }

/* Appends a result (lock held). */
static void rp_finish(rp_pool *p, int64_t tag, int64_t result) {
  if (rp_known(p, tag)) atomic_store_explicit(&p->busy[tag], 0, memory_order_relaxed);
  atomic_fetch_add_explicit(&p->counts.completed, 1, memory_order_relaxed);
  p->done[(p->dhead + p->dlen) % p->cap] = (rp_result){tag, result};
  p->dlen++;
  atomic_store_explicit(&p->finished, atomic_load_explicit(&p->finished, memory_order_relaxed) + 1,
                        memory_order_release);
}

/* Starts a cuda push of a job that read `result` > 0 bytes (no lock held): 1 if it is on its
 * way (the waiter will finish the job), 0 if it could not be queued (*result is then -EIO). */
static int rp_push_start(rp_pool *p, int reader, const rp_job *j, int64_t *result) {
  rp_cuda *c = &p->cuda;
  pthread_mutex_lock(&p->lock);
  uint32_t ev = c->free_events[--c->nfree];   /* never empty: R1 */
  pthread_mutex_unlock(&p->lock);
  void *stream = c->streams[reader];
  int copied = c->api.copy(j->dev, (const void *)(uintptr_t)j->dst, (size_t)*result, stream) == 0;
  if (copied && c->api.record(c->events[ev], stream) == 0) {
    pthread_mutex_lock(&p->lock);
    p->running--;
    p->waits[(p->whead + p->wlen) % p->cap] = (rp_wait){j->tag, *result, ev, reader};
    p->wlen++;
    pthread_cond_signal(&p->pushed);
    pthread_mutex_unlock(&p->lock);
    return 1;
  }
  /* A copy queued without its event: wait for it here, so nothing of it is in flight when
   * the job's -EIO goes back (R2). The stream is this reader's own: no kernel runs on it. */
  if (copied) c->api.stream_sync(stream);
  pthread_mutex_lock(&p->lock);
  c->free_events[c->nfree++] = ev;
  pthread_mutex_unlock(&p->lock);
  *result = -EIO;
  return 0;
}

/* R4: answers job `j` with its result, as Server.answer would encode it (no lock held). */
static void rp_answer(rp_pool *p, const rp_job *j, int64_t result) {
  const uint32_t seq = j->answer & 0xFFFFFFu;
  uint32_t word;
  atomic_fetch_add_explicit(&p->counts.answered, 1, memory_order_relaxed);
  if (result < 0) atomic_fetch_add_explicit(&p->counts.errors, 1, memory_order_relaxed);
  atomic_store_explicit(&p->busy[j->tag], 0, memory_order_relaxed);
  if (result >= -127 && result <= 126) {
    word = (uint32_t)(result + 128) << 24 | seq;
  } else if (result == (int64_t)j->n) {
    word = j->answer;                                  /* code 255: the length asked for */
  } else {                                             /* the record, then code 0 */
    int64_t *rec = (int64_t *)(void *)(p->records + (size_t)j->tag * 32);
    rec[0] = result;
    rec[1] = rec[2] = rec[3] = 0;
    word = seq;
  }
  atomic_store_explicit(&p->answers[j->tag], word, RP_ANSWER_ORDER);
  atomic_fetch_add_explicit(&p->counts.completed, 1, memory_order_relaxed);
}

static void *rp_reader(void *arg) {
  rp_pool *p = ((rp_reader_arg *)arg)->pool;
  const int index = ((rp_reader_arg *)arg)->index;
  int ctx_set = 0;
  pthread_setname_np(pthread_self(), "gpuvfs-reader");   /* as top -H and gdb show it */
  pthread_mutex_lock(&p->lock);
  for (;;) {
    while (p->jlen == 0 && !p->stop) {
      p->idle++;
      pthread_cond_wait(&p->work, &p->lock);
      p->idle--;
    }
    if (p->jlen == 0) break;                /* stopping, and the queue is drained (R2) */
    rp_job j = p->jobs[p->jhead];
    p->jhead = (p->jhead + 1) % p->cap;
    p->jlen--;
    p->running++;
    const int push = j.dev ? p->push : RP_PUSH_NONE;
    /* The wake chain: a submitter wakes one reader, and each reader that takes a job wakes
     * the next while jobs wait and readers sleep, before it starts its own. A broadcast
     * from the submitter made the server's polling thread pay for every reader's wake-up:
     * rp_submit_jobs took ~58 us a call under a cold read on the H100 host (2026-11-25,
     * cProfile), a quarter of that thread's time. (Signalled after the unlock: a reader
     * that then finds the queue empty goes back to sleep; none sleeps while a job waits.) */
    const int wake_next = p->jlen > 0 && p->idle > 0;
    pthread_mutex_unlock(&p->lock);
    if (wake_next) pthread_cond_signal(&p->work);
    uint64_t t0 = rp_now_ns();
    int64_t result = rp_run(&j);
    if (result == -ESTALE) {                /* R5: the caller learns which file changed */
      if (j.users) atomic_store_explicit((_Atomic int32_t *)(uintptr_t)j.users + 1, 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&p->counts.stale, 1, memory_order_release);
    }
    if (j.users) atomic_fetch_sub_explicit((_Atomic int32_t *)(uintptr_t)j.users, 1, memory_order_release);  /* R5 */
    if (result > 0) atomic_fetch_add_explicit(&p->counts.bytes, (uint64_t)result, memory_order_relaxed);
    if (result > 0 && push == RP_PUSH_MEMCPY) memcpy((void *)(uintptr_t)j.dev, (const void *)(uintptr_t)j.dst, (size_t)result);
    int on_its_way = 0;
    if (result > 0 && push == RP_PUSH_CUDA) {
      if (!ctx_set) ctx_set = p->cuda.api.ctx_set(p->cuda.ctx) == 0;
      if (ctx_set) on_its_way = rp_push_start(p, index, &j, &result);
      else result = -EIO;
    }
    atomic_fetch_add_explicit(&p->busy_ns, rp_now_ns() - t0, memory_order_relaxed);
    /* R4: a job that answers (never a push: those finish on the waiter once their copy
     * landed, and carry no answer) answers here, with no lock: nothing of it goes to `done`. */
    const int answer = j.answer && !j.dev && rp_known(p, j.tag);
    pthread_mutex_lock(&p->lock);
    if (!on_its_way) {
      p->running--;                         /* R1: before the answer, which frees the lane */
      if (!answer) rp_finish(p, j.tag, result);
    }
    if (answer) {
      pthread_mutex_unlock(&p->lock);
      rp_answer(p, &j, result);
      pthread_mutex_lock(&p->lock);
    }
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

/* The cuda pushes' waiter: finishes each job once its copy has landed, in the order the
 * copies were queued. It polls the oldest copy's event every few microseconds rather than
 * sleep in a blocking-sync wait: one such wait per fill (an interrupt and a wake-up each)
 * held pushed cold reads to 21-30 GB/s on the H100 against 36-39 pulled (2026-11-24,
 * 20:05 UTC), the waiter answering one fill at a time. */
static void *rp_waiter(void *arg) {
  rp_pool *p = arg;
  rp_cuda *c = &p->cuda;
  pthread_setname_np(pthread_self(), "gpuvfs-pushwait");
  prctl(PR_SET_TIMERSLACK, 1000ul);   /* ns: the naps below are a few us, not the default 50 */
  const struct timespec nap = {0, 2000};
  const int ctx_set = c->api.ctx_set(c->ctx) == 0;
  pthread_mutex_lock(&p->lock);
  p->waiter_state = ctx_set ? 1 : -1;   /* rp_push_cuda_api waits for this */
  pthread_cond_broadcast(&p->pushed);
  if (!ctx_set) {                       /* pushes stay off: no push was ever queued */
    pthread_mutex_unlock(&p->lock);
    return NULL;
  }
  for (;;) {
    while (p->wlen == 0 && !p->stop_waiter) pthread_cond_wait(&p->pushed, &p->lock);
    if (p->wlen == 0) break;                /* stopping, and every push has landed (R2) */
    rp_wait w = p->waits[p->whead];
    pthread_mutex_unlock(&p->lock);
    int rc = c->api.query(c->events[w.event]);
    if (rc == RP_CUDA_NOT_READY) {
      nanosleep(&nap, NULL);
      pthread_mutex_lock(&p->lock);
      continue;
    }
    int ok = rc == 0;
    if (!ok) c->api.stream_sync(c->streams[w.reader]);  /* an error: still nothing in flight (R2) */
    pthread_mutex_lock(&p->lock);
    p->whead = (p->whead + 1) % p->cap;     /* dequeued only now: R1 counts it until it lands */
    p->wlen--;
    c->free_events[c->nfree++] = w.event;
    rp_finish(p, w.tag, ok ? w.result : -EIO);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

void rp_destroy(rp_pool *p);
void rp_stop(rp_pool *p);

/* A pool of `threads` readers holding at most `cap` jobs (R1); NULL if out of memory or
 * threads. */
rp_pool *rp_create(int threads, uint32_t cap) {
  if (threads < 1 || cap < 1) return NULL;
  rp_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->cap = cap;
  p->jobs = calloc(cap, sizeof *p->jobs);
  p->waits = calloc(cap, sizeof *p->waits);
  p->done = calloc(cap, sizeof *p->done);
  p->threads = calloc((size_t)threads, sizeof *p->threads);
  p->args = calloc((size_t)threads, sizeof *p->args);
  if (!p->jobs || !p->waits || !p->done || !p->threads || !p->args || pthread_mutex_init(&p->lock, NULL) ||
      pthread_cond_init(&p->work, NULL) || pthread_cond_init(&p->pushed, NULL)) {
    free(p->jobs); free(p->waits); free(p->done); free(p->threads); free(p->args); free(p);
    return NULL;
  }
  for (int i = 0; i < threads; i++) {
    p->args[i] = (rp_reader_arg){p, i};
    if (pthread_create(&p->threads[i], NULL, rp_reader, &p->args[i]) != 0) break;
    p->nthreads++;
  }
  if (p->nthreads == 0) {
    rp_destroy(p);
    return NULL;
  }
  return p;
}

/* Queues one job; 0, or -EAGAIN when `cap` jobs are already in the pool (R1). `answer`,
 * `src` and `users`: as the job's fields (R4; a mapping from rp_map; R5); 0 for none. */
/* Queues a job (lock held, room checked): its hold (R5), its lane's busy flag, the count. */
static void rp_enqueue(rp_pool *p, const rp_job *j) {
  if (j->users) atomic_fetch_add_explicit((_Atomic int32_t *)(uintptr_t)j->users, 1, memory_order_relaxed);
  if (rp_known(p, j->tag)) atomic_store_explicit(&p->busy[j->tag], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&p->counts.submitted, 1, memory_order_relaxed);
  p->jobs[(p->jhead + p->jlen) % p->cap] = *j;
  p->jlen++;
}

int rp_submit(rp_pool *p, int64_t tag, int32_t fd, uint64_t dst, uint64_t n, uint64_t off, int64_t size,
              int64_t mtime_ns, uint64_t dev, uint32_t answer, uint64_t src, uint64_t users) {
  pthread_mutex_lock(&p->lock);
  if (dev && p->push == RP_PUSH_NONE) {   /* nobody said how to push */
    pthread_mutex_unlock(&p->lock);
    return -EINVAL;
  }
  if (p->jlen + p->running + p->wlen + p->dlen >= p->cap) {
    pthread_mutex_unlock(&p->lock);
    return -EAGAIN;
  }
  rp_enqueue(p, &(rp_job){tag, fd, answer, dst, n, off, size, mtime_ns, dev, src, users});
  const int wake = p->idle > 0;            /* none asleep: a busy reader takes it next */
  pthread_mutex_unlock(&p->lock);
  if (wake) pthread_cond_signal(&p->work);
  return 0;
}

/* rp_submit for k jobs at once, under one lock: a sweep's fills cost the polling thread one
 * call. `jobs` is an array of rp_job as the caller packed them (80 bytes each, the layout
 * above; gpuvfs/hostcall/readers.py packs the same). None may push: the pool may not be set
 * up for it (-EINVAL, nothing queued). Queues them in order while there is room and returns
 * how many it queued (the caller keeps the rest), or -EINVAL for k < 0. */
_Static_assert(sizeof(rp_job) == 80, "rp_job is 80 bytes: readers.py packs it as <qiIQQQqqQQQ");
int rp_submit_jobs(rp_pool *p, int k, const rp_job *jobs) {
  if (k < 0) return -EINVAL;
  for (int i = 0; i < k; i++)
    if (jobs[i].dev) return -EINVAL;
  int q = 0;
  pthread_mutex_lock(&p->lock);
  while (q < k && p->jlen + p->running + p->wlen + p->dlen < p->cap) {
    rp_enqueue(p, &jobs[q]);
    q++;
  }
  const int wake = q > 0 && p->idle > 0;   /* one: the readers wake each other (rp_reader) */
  pthread_mutex_unlock(&p->lock);
  if (wake) pthread_cond_signal(&p->work);
  return q;
}

/* Moves up to `max` results out of the pool, oldest first; returns how many. (Jobs that
 * answered themselves have none: R4.) */
int rp_reap(rp_pool *p, int64_t *tags, int64_t *results, int max) {
  int k = 0;
  pthread_mutex_lock(&p->lock);
  while (k < max && p->dlen) {
    rp_result r = p->done[p->dhead];
    p->dhead = (p->dhead + 1) % p->cap;
    p->dlen--;
    tags[k] = r.tag;
    results[k] = r.result;
    k++;
  }
  pthread_mutex_unlock(&p->lock);
  return k;
}

/* Where `finished` lives: the reaper may load it (8 bytes, aligned) without a call. */
const _Atomic uint64_t *rp_finished_addr(rp_pool *p) { return &p->finished; }

/* Where the counts live (rp_counts: six 8-byte words, aligned), for loads without a call. */
const rp_counts *rp_counts_addr(rp_pool *p) { return &p->counts; }

/* Where the busy flags live (rp_answer_into's `count` bytes), for loads without a call; NULL
 * before rp_answer_into. */
const _Atomic uint8_t *rp_busy_addr(rp_pool *p) { return p->busy; }

/* Jobs with an answer store it into words[tag] (and, when the result needs one, the record
 * at records + 32 x tag), for tags in [0, count) (R4); the busy flags of those tags start.
 * Call once, before the first job that answers; the words and records must outlive the
 * pool. 0, or -EBUSY if it was already called, -EINVAL for a NULL address or no words,
 * -ENOMEM. */
int rp_answer_into(rp_pool *p, uint64_t words, uint64_t records, uint32_t count) {
  if (!words || !records || !count) return -EINVAL;
  _Atomic uint8_t *busy = calloc(count, 1);
  if (!busy) return -ENOMEM;
  pthread_mutex_lock(&p->lock);
  int rc = p->answers ? -EBUSY : 0;
  if (!rc) {
    p->answers = (_Atomic uint32_t *)(uintptr_t)words;
    p->records = (char *)(uintptr_t)records;
    p->busy = busy;
    p->nanswers = count;
  }
  pthread_mutex_unlock(&p->lock);
  if (rc) free(busy);
  return rc;
}

/* Pushes are copies in host memory (the cpu backend's device memory). Call before the
 * first job that pushes. 0, or -EBUSY if pushes were already set up. */
int rp_push_memcpy(rp_pool *p) {
  pthread_mutex_lock(&p->lock);
  int rc = p->push == RP_PUSH_NONE ? 0 : -EBUSY;
  if (!rc) p->push = RP_PUSH_MEMCPY;
  pthread_mutex_unlock(&p->lock);
  return rc;
}

/* Pushes are CUDA copies through `api`, in the context current on the calling thread. Call
 * once, before the first job that pushes and before any kernel that may wait for a push runs
 * (streams are made here). 0; or -EBUSY (pushes already set up), a CUresult, or -1: pushes
 * stay off. */
int rp_push_cuda_api(rp_pool *p, const rp_cuda_api *api) {
  pthread_mutex_lock(&p->lock);
  int busy = p->push != RP_PUSH_NONE || p->cuda.events != NULL;
  pthread_mutex_unlock(&p->lock);
  if (busy) return -EBUSY;
  rp_cuda *c = &p->cuda;
  c->api = *api;
  int rc = c->api.ctx_get(&c->ctx);
  if (rc || !c->ctx) return rc ? rc : -1;
  /* What is made here is freed by rp_destroy, whatever fails halfway. */
  c->streams = calloc((size_t)p->nthreads, sizeof *c->streams);
  c->events = calloc(p->cap, sizeof *c->events);
  c->free_events = calloc(p->cap, sizeof *c->free_events);
  if (!c->streams || !c->events || !c->free_events) return -1;
  for (int i = 0; i < p->nthreads; i++)
    if ((rc = c->api.stream_create(&c->streams[i], 1 /* CU_STREAM_NON_BLOCKING */))) return rc;
  for (uint32_t i = 0; i < p->cap; i++) {
    if ((rc = c->api.event_create(&c->events[i], 0x2 /* CU_EVENT_DISABLE_TIMING */))) return rc;
    c->free_events[c->nfree++] = i;
  }
  if (pthread_create(&p->waiter, NULL, rp_waiter, p) != 0) return -1;
  pthread_mutex_lock(&p->lock);
  while (p->waiter_state == 0) pthread_cond_wait(&p->pushed, &p->lock);
  int up = p->waiter_state == 1;
  if (up) p->push = RP_PUSH_CUDA;
  pthread_mutex_unlock(&p->lock);
  if (!up) {
    pthread_join(p->waiter, NULL);
    return -1;
  }
  p->have_waiter = 1;
  return 0;
}

/* rp_push_cuda_api with the driver's own calls, from the libcuda.so.1 the process loaded. */
int rp_push_cuda(rp_pool *p) {
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);   /* the one CuPy loaded */
  if (!lib) lib = dlopen("libcuda.so.1", RTLD_NOW);
  if (!lib) return -1;
  rp_cuda_api a;
  a.ctx_get = (int (*)(void **))dlsym(lib, "cuCtxGetCurrent");
  a.ctx_set = (int (*)(void *))dlsym(lib, "cuCtxSetCurrent");
  a.stream_create = (int (*)(void **, unsigned))dlsym(lib, "cuStreamCreate");
  a.stream_sync = (int (*)(void *))dlsym(lib, "cuStreamSynchronize");
  a.stream_destroy = (int (*)(void *))dlsym(lib, "cuStreamDestroy_v2");
  a.event_create = (int (*)(void **, unsigned))dlsym(lib, "cuEventCreate");
  a.event_destroy = (int (*)(void *))dlsym(lib, "cuEventDestroy_v2");
  a.record = (int (*)(void *, void *))dlsym(lib, "cuEventRecord");
  a.query = (int (*)(void *))dlsym(lib, "cuEventQuery");
  a.copy = (int (*)(uint64_t, const void *, size_t, void *))dlsym(lib, "cuMemcpyHtoDAsync_v2");
  if (!a.ctx_get || !a.ctx_set || !a.stream_create || !a.stream_sync || !a.stream_destroy || !a.event_create ||
      !a.event_destroy || !a.record || !a.query || !a.copy)
    return -1;
  return rp_push_cuda_api(p, &a);
}

/* Nanoseconds the readers have spent running jobs, summed over readers. */
uint64_t rp_busy_ns(rp_pool *p) { return atomic_load_explicit(&p->busy_ns, memory_order_relaxed); }

/* Stops the readers (and the pushes' waiter) once every queued job has run (R2); the pool
 * still holds its results and counts until rp_destroy. Safe to call more than once. */
void rp_stop(rp_pool *p) {
  pthread_mutex_lock(&p->lock);
  const int stopped = p->stop;
  p->stop = 1;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->lock);
  if (stopped) return;
  for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
  if (p->have_waiter) {   /* the readers are gone: no push can start now */
    pthread_mutex_lock(&p->lock);
    p->stop_waiter = 1;
    pthread_cond_signal(&p->pushed);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->waiter, NULL);
  }
}

/* rp_stop, then frees the pool. Results not yet reaped are dropped. */
void rp_destroy(rp_pool *p) {
  if (!p) return;
  rp_stop(p);
  rp_cuda *c = &p->cuda;
  for (uint32_t i = 0; c->events && i < p->cap; i++)
    if (c->events[i]) c->api.event_destroy(c->events[i]);
  for (int i = 0; c->streams && i < p->nthreads; i++)
    if (c->streams[i]) c->api.stream_destroy(c->streams[i]);
  free(c->events); free(c->free_events); free(c->streams);
  pthread_cond_destroy(&p->work);
  pthread_cond_destroy(&p->pushed);
  pthread_mutex_destroy(&p->lock);
  free((void *)p->busy);
  free(p->jobs);
  free(p->waits);
  free(p->done);
  free(p->threads);
  free(p->args);
  free(p);
}
