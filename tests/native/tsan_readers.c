/* ThreadSanitizer harness for the host's native reader pool (gpuvfs/hostcall/readers.c).
 *
 * The main thread is the server's polling thread: it keeps `cap` jobs in the pool (random
 * offsets and lengths of a random file, each into a buffer of its own), spins on the
 * lock-free `finished` count as the server does (rp_finished_addr), reaps, and compares
 * every buffer with the file's bytes before reusing it (R2: a reaped job's buffer is no
 * longer written). A second thread submits jobs of its own at the same time (submit is safe
 * from any thread). Every run must end with all checks passed and no TSan report.
 *
 * --push=1: every main-thread job also pushes its bytes to a second buffer (rp_push_memcpy,
 * the cpu backend's FILL_PUSH), and both buffers are compared.
 *
 * -DRP_TSAN_SELFTEST: rp_reap reads the results ring without the lock, the race TSan must
 * report (run-tsan.sh checks that it does).
 * Usage: tsan_readers [--jobs=N] [--threads=N] [--cap=N] [--seed=N] [--push=0|1] */
#define _GNU_SOURCE
#include <stdio.h>
#ifdef RP_TSAN_SELFTEST
#include <pthread.h>  /* declared before the wrappers below are defined */
static __thread int rp_selftest_skip_lock;  /* set on the reaping thread only */
#define pthread_mutex_lock(m) (rp_selftest_skip_lock ? 0 : pthread_mutex_lock(m))
#define pthread_mutex_unlock(m) (rp_selftest_skip_lock ? 0 : pthread_mutex_unlock(m))
#endif
#undef _GNU_SOURCE  /* readers.c defines it */
#include "../../gpuvfs/hostcall/readers.c"
#ifdef RP_TSAN_SELFTEST
#undef pthread_mutex_lock
#undef pthread_mutex_unlock
#endif
#include <fcntl.h>
#include <stdio.h>

enum { FILE_BYTES = 1 << 20, MAX_LEN = 9000 };
static unsigned char file_bytes[FILE_BYTES];
static int fd, push;

static uint64_t rng(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

typedef struct { uint64_t off, n; unsigned char buf[MAX_LEN], dev[MAX_LEN]; } slot;

static int check(const slot *s, int64_t result, int64_t tag) {
  uint64_t want = s->off >= FILE_BYTES ? 0 : (FILE_BYTES - s->off < s->n ? FILE_BYTES - s->off : s->n);
  if (result != (int64_t)want) { fprintf(stderr, "job %lld: result %lld, want %llu\n", (long long)tag, (long long)result, (unsigned long long)want); return 0; }
  if (memcmp(s->buf, file_bytes + s->off, want)) { fprintf(stderr, "job %lld: bytes differ\n", (long long)tag); return 0; }
  if (push && tag < (1ll << 40) && memcmp(s->dev, file_bytes + s->off, want)) {
    fprintf(stderr, "job %lld: pushed bytes differ\n", (long long)tag);
    return 0;
  }
  return 1;
}

/* The second submitter: its own slots, tags from 1 << 40 up; the main thread reaps them. */
typedef struct { rp_pool *p; slot *slots; int n; _Atomic int *ready; uint64_t seed; } side_arg;
static void *side_submitter(void *a_) {
  side_arg *a = a_;
  for (int i = 0; i < a->n; i++) {
    slot *s = &a->slots[i];
    s->n = 1 + rng(&a->seed) % MAX_LEN;
    s->off = rng(&a->seed) % (FILE_BYTES + 2000);
    while (rp_submit(a->p, (1ll << 40) + i, fd, (uint64_t)(uintptr_t)s->buf, s->n, s->off, -1, 0, 0) == -EAGAIN)
      sched_yield();
  }
  return NULL;
}

int main(int argc, char **argv) {
  int jobs = 20000, threads = 8, cap = 24;
  uint64_t seed = 1;
  for (int i = 1; i < argc; i++) {
    sscanf(argv[i], "--jobs=%d", &jobs); sscanf(argv[i], "--threads=%d", &threads);
    sscanf(argv[i], "--cap=%d", &cap); sscanf(argv[i], "--seed=%llu", (unsigned long long *)&seed);
    sscanf(argv[i], "--push=%d", &push);
  }
  uint64_t s = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (int i = 0; i < FILE_BYTES; i++) file_bytes[i] = (unsigned char)rng(&s);
  char path[] = "/tmp/tsan_readers_XXXXXX";
  int wfd = mkstemp(path);
  if (wfd < 0 || write(wfd, file_bytes, FILE_BYTES) != FILE_BYTES) { perror("temp file"); return 2; }
  close(wfd);
  fd = open(path, O_RDONLY);
  unlink(path);
  struct stat st;
  fstat(fd, &st);
  int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;

  int side_n = jobs / 8;
  rp_pool *p = rp_create(threads, (uint32_t)cap);
  slot *slots = calloc((size_t)cap, sizeof *slots), *side = calloc((size_t)side_n, sizeof *side);
  if (!p || !slots || !side) { fprintf(stderr, "setup failed\n"); return 2; }
  if (push) rp_push_memcpy(p);
  side_arg sa = {p, side, side_n, NULL, seed * 7 + 3};
  pthread_t th;
  pthread_create(&th, NULL, side_submitter, &sa);

  const _Atomic uint64_t *finished = rp_finished_addr(p);
  uint64_t reaped = 0;
  int submitted = 0, done = 0, side_done = 0, ok = 1, free_n = cap;
  int *free_slots = malloc(sizeof(int) * (size_t)cap);
  for (int i = 0; i < cap; i++) free_slots[i] = i;
  int64_t tags[64], results[64];
#ifdef RP_TSAN_SELFTEST
  rp_selftest_skip_lock = 1;
#endif
  while (ok && (done < jobs || side_done < side_n)) {
    while (submitted < jobs && free_n > 0) {
      int k = free_slots[free_n - 1];
      slot *sl = &slots[k];
      sl->n = rng(&s) % MAX_LEN;
      sl->off = rng(&s) % (FILE_BYTES + 2000);
      memset(sl->buf, 0xA5, sizeof sl->buf);
      memset(sl->dev, 0x5A, sizeof sl->dev);
      if (rp_submit(p, k, fd, (uint64_t)(uintptr_t)sl->buf, sl->n, sl->off, (int64_t)st.st_size, mtime,
                    push ? (uint64_t)(uintptr_t)sl->dev : 0) == -EAGAIN)
        break;  /* the side submitter holds the room: reap first */
      free_n--;
      submitted++;
    }
    if (atomic_load_explicit(finished, memory_order_acquire) == reaped) { sched_yield(); continue; }
    int n = rp_reap(p, tags, results, 64);
    reaped += (uint64_t)n;
    for (int i = 0; i < n && ok; i++) {
      if (tags[i] >= (1ll << 40)) { ok = check(&side[tags[i] - (1ll << 40)], results[i], tags[i]); side_done++; }
      else { ok = check(&slots[tags[i]], results[i], tags[i]); free_slots[free_n++] = (int)tags[i]; done++; }
    }
  }
  pthread_join(th, NULL);
  rp_destroy(p);
  printf("jobs=%d side=%d threads=%d cap=%d push=%d %s\n", done, side_done, threads, cap, push,
         ok ? "all checks passed" : "CHECK FAILED");
  return ok ? 0 : 1;
}
