/* ThreadSanitizer harness for the host's native reader pool (gpuvfs/hostcall/readers.c).
 *
 * The main thread is the server's polling thread: it keeps `cap` jobs in the pool (random
 * offsets and lengths of a random file, each into a buffer of its own), spins on the
 * lock-free `finished` count as the server does (rp_finished_addr), reaps, and compares
 * every buffer with the file's bytes before reusing it (R2: a reaped job's buffer is no
 * longer written). A second thread submits jobs of its own at the same time (submit is safe
 * from any thread). Every run must end with all checks passed and no TSan report.
 *
 * Without pushes, every other round of the main thread's submissions is one rp_submit_jobs
 * (the server's batch of fills) instead of one rp_submit a job.
 *
 * --push=1: every main-thread job also pushes its bytes to a second buffer (rp_push_memcpy,
 * the cpu backend's FILL_PUSH), and both buffers are compared.
 * --push=2: the same through the cuda push path (the readers' copies, the events, the waiter
 * and its handshake, rp_push_cuda_api) with a stand-in driver: a copy is a memcpy, an event
 * is "not ready" for a random few queries. --fail=P: P% of copies, and of event records,
 * fail; such a job must come back -EIO (and nothing else may).
 *
 * Every job holds the file (R5: one counter for all of them), which must be back at 0 at the
 * end; the main thread's slots are the pool's tags (rp_answer_into), so their busy flags run.
 *
 * --answer=1 (no pushes): every main-thread job answers itself (readers.c, R4) into its
 * slot's word (and record), as a reader answers a fill into a lane's response word and
 * record, and never comes back through rp_reap. The main thread plays the device: it polls
 * the words of its jobs out (an acquire load), and on seeing one decodes the result (code
 * 255: the length; 1..254: code - 128; 0: the record), finds the slot's busy flag clear, and
 * compares the slot's buffer with the file at once, with no lock: the word alone must order
 * the reader's bytes, record and flag before those reads.
 *
 * Every other job of the main thread copies from a mapping of the file (rp_map, a job's src)
 * instead of reading it; and before the jobs, a copy from a file truncated under its mapping
 * must come back -ESTALE through the SIGBUS guard, the process going on.
 *
 * -DRP_TSAN_SELFTEST: rp_reap reads the results ring without the lock, the race TSan must
 * report (run-tsan.sh checks that it does). -DRP_ANSWER_ORDER=memory_order_relaxed with
 * --answer=1: the answer's store without its release, so the "device"'s read of the bytes
 * races with the reader's pread (run-tsan.sh checks that TSan reports it).
 * Usage: tsan_readers [--jobs=N] [--threads=N] [--cap=N] [--seed=N] [--push=0|1|2] [--fail=P]
 *                     [--answer=0|1] */
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

/* The stand-in driver (--push=2). Each event is a countdown of "not ready" answers. */
typedef struct { _Atomic int polls; } fake_event;
static int fail_pct;
static __thread uint64_t fake_rng = 0x2545F4914F6CDD1Dull;
static int fake_roll(void) {
  fake_rng ^= fake_rng << 13; fake_rng ^= fake_rng >> 7; fake_rng ^= fake_rng << 17;
  return (int)(fake_rng % 100);
}
static int fake_ctx_get(void **ctx) { *ctx = (void *)1; return 0; }
static int fake_ctx_set(void *ctx) { return ctx == (void *)1 ? 0 : 1; }
static int fake_stream_create(void **s, unsigned flags) { (void)flags; *s = malloc(1); return *s ? 0 : 2; }
static int fake_stream_sync(void *s) { (void)s; return 0; }     /* copies land at once here */
static int fake_free(void *x) { free(x); return 0; }
static int fake_event_create(void **e, unsigned flags) { (void)flags; *e = calloc(1, sizeof(fake_event)); return *e ? 0 : 2; }
static int fake_record(void *e, void *s) {
  (void)s;
  if (fake_roll() < fail_pct) return 1;
  atomic_store(&((fake_event *)e)->polls, fake_roll() % 6);
  return 0;
}
static int fake_query(void *e) {
  fake_event *f = e;
  if (atomic_load(&f->polls) > 0) { atomic_fetch_sub(&f->polls, 1); return RP_CUDA_NOT_READY; }
  return 0;
}
static int fake_copy(uint64_t dst, const void *src, size_t n, void *s) {
  (void)s;
  if (fake_roll() < fail_pct) return 1;
  memcpy((void *)(uintptr_t)dst, src, n);
  return 0;
}
static const rp_cuda_api fake_api = {fake_ctx_get, fake_ctx_set, fake_stream_create, fake_stream_sync, fake_free,
                                     fake_event_create, fake_free, fake_record, fake_query, fake_copy};
#include <fcntl.h>
#include <sys/wait.h>
#include <stdio.h>

enum { FILE_BYTES = 1 << 20, MAX_LEN = 9000 };
static unsigned char file_bytes[FILE_BYTES];
static int fd, push;

static uint64_t rng(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

typedef struct { uint64_t off, n; uint32_t word; int seen; unsigned char buf[MAX_LEN], dev[MAX_LEN]; } slot;
static int answer;                       /* --answer=1 */
static _Atomic uint32_t *answer_words;   /* one per main-thread slot */
static int64_t (*answer_records)[4];     /* ... and its record */
static uint32_t answer_seq;
static _Atomic int32_t file_hold;        /* every job's hold on the file (R5) */

/* The word a main-thread job answers with (0 without --answer): code 255 and a seq of its own. */
static uint32_t next_word(void) { return answer ? 0xFF000000u | (++answer_seq & 0xFFFFFFu) : 0; }

/* The result an answered word says, as the device decodes it (the record for code 0). */
static int64_t decode(uint32_t w, uint64_t n, int slot) {
  uint32_t code = w >> 24;
  if (code == 255) return (int64_t)n;
  if (code) return (int64_t)code - 128;
  return answer_records[slot][0];
}

static int check(const slot *s, int64_t result, int64_t tag) {
  if (result == -EIO && fail_pct && tag < (1ll << 40)) return 1;   /* an injected failure */
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
    while (rp_submit(a->p, (1ll << 40) + i, fd, (uint64_t)(uintptr_t)s->buf, s->n, s->off, -1, 0, 0, 0, 0,
                     (uint64_t)(uintptr_t)&file_hold) == -EAGAIN)
      sched_yield();
  }
  return NULL;
}

/* The SIGBUS guard. First, a SIGBUS sent to the process (not a fault) is not the guard's:
 * with the default action before ours, it still ends the process (killed by it; under TSan,
 * whose handler reports a deadly signal, with exit status 66), never silently. (Checked
 * before any jump out of the handler: TSan does not follow siglongjmp out of its handler
 * wrapper, and defers every later signal of that thread.) Then a copy from a mapping of a
 * file truncated under it faults: the guard turns that copy alone into -ESTALE, and the
 * copy of what is still there works. */
static int check_sigbus_guard(void) {
  char path[] = "/tmp/tsan_readers_bus_XXXXXX";
  int f = mkstemp(path);
  if (f < 0) return 0;
  unlink(path);
  static unsigned char page[4 * 4096], out[4 * 4096];
  memset(page, 0x3C, sizeof page);
  int ok = write(f, page, sizeof page) == (ssize_t)sizeof page;
  uint64_t m = ok ? rp_map(f, sizeof page) : 0;   /* installs the handler */
  pid_t child = fork();
  if (child == 0) {
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 2);   /* (TSan's report of the deadly signal is expected) */
    raise(SIGBUS);
    _exit(0);
  }
  int status = 0;
  ok = ok && child > 0 && waitpid(child, &status, 0) == child &&
       ((WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) || (WIFEXITED(status) && WEXITSTATUS(status) != 0));
  ok = ok && m && ftruncate(f, 4096) == 0;
  ok = ok && rp_copy_mapped(out, (const void *)(uintptr_t)m, 4096) == 0 && out[4095] == 0x3C;
  ok = ok && rp_copy_mapped(out, (const void *)(uintptr_t)(m + 8192), 4096) == -ESTALE;
  ok = ok && rp_copy_mapped(out, (const void *)(uintptr_t)m, 2048) == 0;   /* and again after a fault */
  if (m) rp_unmap(m, sizeof page);
  close(f);
  return ok;
}

int main(int argc, char **argv) {
  int jobs = 20000, threads = 8, cap = 24;
  uint64_t seed = 1;
  for (int i = 1; i < argc; i++) {
    sscanf(argv[i], "--jobs=%d", &jobs); sscanf(argv[i], "--threads=%d", &threads);
    sscanf(argv[i], "--cap=%d", &cap); sscanf(argv[i], "--seed=%llu", (unsigned long long *)&seed);
    sscanf(argv[i], "--push=%d", &push); sscanf(argv[i], "--fail=%d", &fail_pct);
    sscanf(argv[i], "--answer=%d", &answer);
  }
  if (answer && push) { fprintf(stderr, "--answer needs --push=0: pushed jobs never answer\n"); return 2; }
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
  /* Every other main-thread job copies from a mapping of the file instead of reading it. */
  uint64_t mapped = rp_map(fd, (uint64_t)st.st_size);
  if (!mapped || !check_sigbus_guard()) { fprintf(stderr, "mapped copies: setup or SIGBUS guard failed\n"); return 2; }

  int side_n = answer ? 0 : jobs / 8;   /* answering: the main thread's slots are all the room (R1) */
  rp_pool *p = rp_create(threads, (uint32_t)cap);
  slot *slots = calloc((size_t)cap, sizeof *slots), *side = calloc((size_t)side_n, sizeof *side);
  if (!p || !slots || !side) { fprintf(stderr, "setup failed\n"); return 2; }
  if (push == 1 && rp_push_memcpy(p)) { fprintf(stderr, "rp_push_memcpy failed\n"); return 2; }
  if (push == 2 && rp_push_cuda_api(p, &fake_api)) { fprintf(stderr, "rp_push_cuda_api failed\n"); return 2; }
  if (push && rp_push_memcpy(p) != -EBUSY) { fprintf(stderr, "pushes set up twice\n"); return 2; }
  answer_words = calloc((size_t)cap, sizeof *answer_words);
  answer_records = calloc((size_t)cap, sizeof *answer_records);
  if (!answer_words || !answer_records ||
      rp_answer_into(p, (uint64_t)(uintptr_t)answer_words, (uint64_t)(uintptr_t)answer_records, (uint32_t)cap)) {
    fprintf(stderr, "rp_answer_into failed\n");
    return 2;
  }
  if (rp_answer_into(p, (uint64_t)(uintptr_t)answer_words, (uint64_t)(uintptr_t)answer_records, (uint32_t)cap) !=
      -EBUSY) {
    fprintf(stderr, "answers set up twice\n");
    return 2;
  }
  const _Atomic uint8_t *busy = rp_busy_addr(p);
  const uint64_t hold = (uint64_t)(uintptr_t)&file_hold;
  side_arg sa = {p, side, side_n, NULL, seed * 7 + 3};
  pthread_t th;
  pthread_create(&th, NULL, side_submitter, &sa);

  const _Atomic uint64_t *finished = rp_finished_addr(p);
  uint64_t reaped = 0;
  int submitted = 0, done = 0, side_done = 0, ok = 1, free_n = cap, many_turn = 0, answered_n = 0, errors_n = 0;
  int *free_slots = malloc(sizeof(int) * (size_t)cap);
  for (int i = 0; i < cap; i++) free_slots[i] = i;
  int64_t tags[64], results[64];
  while (ok && (done < jobs || side_done < side_n)) {
    if (!push && (many_turn ^= 1)) {   /* every other round without pushes: one rp_submit_jobs */
      int k = 0;
      rp_job batch[64];
      while (submitted + k < jobs && k < free_n && k < 64) {
        int i = free_slots[free_n - 1 - k];   /* the stack's top first: the q queued are popped */
        slot *sl = &slots[i];
        sl->n = rng(&s) % MAX_LEN;
        sl->off = rng(&s) % (FILE_BYTES + 2000);
        memset(sl->buf, 0xA5, sizeof sl->buf);
        sl->word = next_word();
        sl->seen = 0;
        batch[k] = (rp_job){i, fd, sl->word, (uint64_t)(uintptr_t)sl->buf, sl->n, sl->off, (int64_t)st.st_size,
                            mtime, 0, (k & 1) ? mapped : 0, hold};
        k++;
      }
      int q = rp_submit_jobs(p, k, batch);
      if (q < 0 || q > k || (answer && q < k)) {   /* R1: with one job per slot, room for all */
        fprintf(stderr, "rp_submit_jobs returned %d of %d\n", q, k);
        ok = 0;
        break;
      }
      free_n -= q;
      submitted += q;
    }
    while (submitted < jobs && free_n > 0) {
      int k = free_slots[free_n - 1];
      slot *sl = &slots[k];
      sl->n = rng(&s) % MAX_LEN;
      sl->off = rng(&s) % (FILE_BYTES + 2000);
      memset(sl->buf, 0xA5, sizeof sl->buf);
      memset(sl->dev, 0x5A, sizeof sl->dev);
      sl->word = next_word();
      sl->seen = 0;
      if (rp_submit(p, k, fd, (uint64_t)(uintptr_t)sl->buf, sl->n, sl->off, (int64_t)st.st_size, mtime,
                    push ? (uint64_t)(uintptr_t)sl->dev : 0, sl->word, (k & 1) ? mapped : 0, hold) == -EAGAIN) {
        if (answer) {   /* R1: an answered job left the count before its word */
          fprintf(stderr, "slot %d refused for room with one job per slot\n", k);
          ok = 0;
        }
        break;  /* the side submitter holds the room: reap first */
      }
      free_n--;
      submitted++;
    }
    if (answer) {   /* the device's side: a job's word, then its result and bytes, with no lock between */
      for (int i = 0; i < cap && ok; i++) {
        slot *sl = &slots[i];
        if (!sl->word || sl->seen) continue;
        uint32_t w = atomic_load_explicit(&answer_words[i], memory_order_acquire);
        if ((w & 0xFFFFFFu) != (sl->word & 0xFFFFFFu)) continue;
        sl->seen = 1;
        if (atomic_load_explicit(&busy[i], memory_order_relaxed)) {
          fprintf(stderr, "slot %d: answered, but still busy\n", i);
          ok = 0;
        }
        int64_t result = decode(w, sl->n, i);
        ok = ok && check(sl, result, i);
        if (result < 0) errors_n++;
        answered_n++;
        free_slots[free_n++] = i;
        done++;
      }
    }
    if (atomic_load_explicit(finished, memory_order_acquire) == reaped) { sched_yield(); continue; }
#ifdef RP_TSAN_SELFTEST
    rp_selftest_skip_lock = 1;   /* the reap alone reads the results without the lock */
#endif
    int n = rp_reap(p, tags, results, 64);
#ifdef RP_TSAN_SELFTEST
    rp_selftest_skip_lock = 0;
#endif
    reaped += (uint64_t)n;
    for (int i = 0; i < n && ok; i++) {
      if (tags[i] >= (1ll << 40)) {
        ok = check(&side[tags[i] - (1ll << 40)], results[i], tags[i]);
        side_done++;
      }
      else {
        slot *sl = &slots[tags[i]];
        if (answer) {
          fprintf(stderr, "job %lld answered itself but came back through rp_reap too\n", (long long)tags[i]);
          ok = 0;
        }
        if (atomic_load_explicit(&busy[tags[i]], memory_order_relaxed)) {
          fprintf(stderr, "slot %lld: reaped, but still busy\n", (long long)tags[i]);
          ok = 0;
        }
        ok = ok && check(sl, results[i], tags[i]);
        free_slots[free_n++] = (int)tags[i];
        done++;
      }
    }
  }
  pthread_join(th, NULL);
  if (push == 2) {   /* every event back on the free stack once every result is in */
    pthread_mutex_lock(&p->lock);
    if (p->cuda.nfree != (uint32_t)cap) { fprintf(stderr, "events free %u of %d\n", p->cuda.nfree, cap); ok = 0; }
    pthread_mutex_unlock(&p->lock);
  }
  const rp_counts *counts = rp_counts_addr(p);
  if (atomic_load(&counts->answered) != (uint64_t)answered_n || atomic_load(&counts->errors) != (uint64_t)errors_n ||
      atomic_load(&counts->submitted) != atomic_load(&counts->completed)) {
    fprintf(stderr, "counts: answered %llu (saw %d), errors %llu (saw %d), submitted %llu, completed %llu\n",
            (unsigned long long)atomic_load(&counts->answered), answered_n,
            (unsigned long long)atomic_load(&counts->errors), errors_n,
            (unsigned long long)atomic_load(&counts->submitted), (unsigned long long)atomic_load(&counts->completed));
    ok = 0;
  }
  if (atomic_load(&file_hold) != 0) { fprintf(stderr, "holds left on the file: %d\n", atomic_load(&file_hold)); ok = 0; }
  if (answer && answered_n == 0) { fprintf(stderr, "no job answered itself\n"); ok = 0; }
  rp_destroy(p);
  rp_unmap(mapped, (uint64_t)st.st_size);
  free(answer_words);
  free(answer_records);
  printf("jobs=%d side=%d threads=%d cap=%d push=%d fail=%d answered=%d %s\n", done, side_done, threads, cap, push,
         fail_pct, answered_n, ok ? "all checks passed" : "CHECK FAILED");
  return ok ? 0 : 1;
}
