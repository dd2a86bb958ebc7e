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
 * Invariants:
 *   R1 at most `cap` jobs are queued, running or done-but-unreaped; rp_submit refuses a job
 *      beyond that (-EAGAIN) rather than overwrite one. The server has one request per lane
 *      at a time, so cap = lanes never refuses.
 *   R2 every job submitted before rp_destroy produces exactly one result (readers drain the
 *      queue before they exit), and its destination buffer is written only before its result
 *      is appended: once the reaper has a job's result, no reader touches its buffer again.
 *   R3 a job whose file no longer has the expected size and mtime (the file changed since
 *      the device looked it up: docs/consistency.md) reads nothing and results in -ESTALE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int64_t tag;            /* the caller's name for the job (the server: the lane) */
  int32_t fd;
  uint64_t dst, n, off;   /* read n bytes at off into the host address dst */
  int64_t size, mtime_ns; /* what the file must still be (R3); size < 0: do not check */
} rp_job;

typedef struct {
  int64_t tag, result;    /* result: bytes read (short only at the end of the file), or -errno */
} rp_result;

typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t work;
  rp_job *jobs;           /* ring: jobs[(jhead + i) % cap], i < jlen */
  rp_result *done;        /* ring: done[(dhead + i) % cap], i < dlen */
  uint32_t cap, jhead, jlen, dhead, dlen, running;
  int stop;
  int nthreads;
  pthread_t *threads;
  _Atomic uint64_t finished;
  _Atomic uint64_t busy_ns;  /* time the readers spent in jobs, summed (statistics only) */
} rp_pool;

static uint64_t rp_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* One job, with no lock held. */
static int64_t rp_run(const rp_job *j) {
  if (j->size >= 0) {
    struct stat st;
    if (fstat(j->fd, &st) != 0) return -errno;
    int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if ((int64_t)st.st_size != j->size || mtime != j->mtime_ns) return -ESTALE;
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

static void *rp_reader(void *arg) {
  rp_pool *p = arg;
  pthread_mutex_lock(&p->lock);
  for (;;) {
    while (p->jlen == 0 && !p->stop) pthread_cond_wait(&p->work, &p->lock);
    if (p->jlen == 0) break;                /* stopping, and the queue is drained (R2) */
    rp_job j = p->jobs[p->jhead];
    p->jhead = (p->jhead + 1) % p->cap;
    p->jlen--;
    p->running++;
    pthread_mutex_unlock(&p->lock);
    uint64_t t0 = rp_now_ns();
    int64_t result = rp_run(&j);
    atomic_fetch_add_explicit(&p->busy_ns, rp_now_ns() - t0, memory_order_relaxed);
    pthread_mutex_lock(&p->lock);
    p->running--;
    p->done[(p->dhead + p->dlen) % p->cap] = (rp_result){j.tag, result};
    p->dlen++;
    atomic_store_explicit(&p->finished, atomic_load_explicit(&p->finished, memory_order_relaxed) + 1,
                          memory_order_release);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

void rp_destroy(rp_pool *p);

/* A pool of `threads` readers holding at most `cap` jobs (R1); NULL if out of memory or
 * threads. */
rp_pool *rp_create(int threads, uint32_t cap) {
  if (threads < 1 || cap < 1) return NULL;
  rp_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->cap = cap;
  p->jobs = calloc(cap, sizeof *p->jobs);
  p->done = calloc(cap, sizeof *p->done);
  p->threads = calloc((size_t)threads, sizeof *p->threads);
  if (!p->jobs || !p->done || !p->threads || pthread_mutex_init(&p->lock, NULL) ||
      pthread_cond_init(&p->work, NULL)) {
    free(p->jobs); free(p->done); free(p->threads); free(p);
    return NULL;
  }
  for (int i = 0; i < threads; i++) {
    if (pthread_create(&p->threads[i], NULL, rp_reader, p) != 0) break;
    p->nthreads++;
  }
  if (p->nthreads == 0) {
    rp_destroy(p);
    return NULL;
  }
  return p;
}

/* Queues one job; 0, or -EAGAIN when `cap` jobs are already in the pool (R1). */
int rp_submit(rp_pool *p, int64_t tag, int32_t fd, uint64_t dst, uint64_t n, uint64_t off, int64_t size,
              int64_t mtime_ns) {
  pthread_mutex_lock(&p->lock);
  if (p->jlen + p->running + p->dlen >= p->cap) {
    pthread_mutex_unlock(&p->lock);
    return -EAGAIN;
  }
  p->jobs[(p->jhead + p->jlen) % p->cap] = (rp_job){tag, fd, dst, n, off, size, mtime_ns};
  p->jlen++;
  pthread_cond_signal(&p->work);
  pthread_mutex_unlock(&p->lock);
  return 0;
}

/* Moves up to `max` results out of the pool, oldest first; returns how many. */
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

/* Nanoseconds the readers have spent running jobs, summed over readers. */
uint64_t rp_busy_ns(rp_pool *p) { return atomic_load_explicit(&p->busy_ns, memory_order_relaxed); }

/* Stops the readers once every queued job has run (R2), and frees the pool. Results not yet
 * reaped are dropped. */
void rp_destroy(rp_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->lock);
  p->stop = 1;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->lock);
  for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
  pthread_cond_destroy(&p->work);
  pthread_mutex_destroy(&p->lock);
  free(p->jobs);
  free(p->done);
  free(p->threads);
  free(p);
}
