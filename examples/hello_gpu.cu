// hello_gpu.cu: a first program, run by one GPU thread (examples/hello_gpu.py launches it).
// It prints a greeting, asks for a name and reads it from the host's stdin, tells the time,
// writes a file with those in it, and reads the file back. The same source runs on the GPU
// (NVRTC) and on the cpu backend (g++), and it cannot tell which answers a call: printf is
// formatted on the device and written by the host, the monotonic clock is the device's own,
// the wall clock comes from the host (through a device-side cache), files go through gpuvfs.
#include <gpuvfs.cuh>

#define HELLO_FILE "/hello.txt"

extern "C" __global__ void hello(gvfs_ctx *ctx, int *status) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  const gvfs_u64 start = gvfs_monotonic_ns();
#ifdef GVFS_CUDA
  const char *where = "the GPU";
#else
  const char *where = "the CPU port (each GPU thread an OS thread)";
#endif
  gvfs_printf(ctx, "Hello from gpuvfs, running on %s!", where);

  gvfs_printf(ctx, "What is your name?");
  char name[128];
  long n = gvfs_read_line(ctx, name, sizeof name);  // the line with its '\n'; 0 at end of input
  if (n < 0) { gvfs_eprintf(ctx, "hello: reading stdin failed: error %ld", -n); *status = 1; return; }
  n = gvfs_chomp(name, n);
  if (n == 0) gvfs_snprintf(name, sizeof name, "stranger");
  gvfs_printf(ctx, "Hello, %s! Nice to meet you from the GPU.", name);

  const gvfs_i64 now = gvfs_wallclock_ns(ctx);
  const long long secs = now / 1000000000ll;
  gvfs_printf(ctx, "Current time (seconds since the epoch): %lld", secs);

  char text[512];
  const int len = gvfs_snprintf(text, sizeof text,
                                "This file was created from a GPU, using gpuvfs.\n"
                                "We are %s\n"
                                "Current time (seconds since the epoch): %lld\n"
                                "User name: %s\n",
                                "\"gpuvfs\"", secs, name);
  int fd = gvfs_open(ctx, HELLO_FILE, GVFS_O_WRONLY | GVFS_O_CREAT | GVFS_O_TRUNC);
  if (fd < 0) { gvfs_eprintf(ctx, "hello: open %s failed: error %d", HELLO_FILE, -fd); *status = 2; return; }
  const long put = gvfs_pwrite(ctx, fd, text, (unsigned long)len, 0);
  const int closed = gvfs_close(ctx, fd);  // after close the host sees the bytes
  if (put != len || closed != 0) {
    gvfs_eprintf(ctx, "hello: writing %s failed: %ld of %d bytes, close %d", HELLO_FILE, put, len, closed);
    *status = 3;
    return;
  }
  gvfs_printf(ctx, "Wrote %ld bytes to %s.", put, HELLO_FILE);

  char back[512];
  fd = gvfs_open(ctx, HELLO_FILE, GVFS_O_RDONLY);
  if (fd < 0) { gvfs_eprintf(ctx, "hello: reopen %s failed: error %d", HELLO_FILE, -fd); *status = 4; return; }
  gvfs_stat st;
  const int sr = gvfs_fstat(ctx, fd, &st);
  const long got = gvfs_pread(ctx, fd, back, sizeof back - 1, 0);
  gvfs_close(ctx, fd);
  back[got > 0 ? got : 0] = 0;
  bool same = got == len && sr == 0 && st.size == (gvfs_u64)len;
  for (long i = 0; same && i < len; ++i) same = back[i] == text[i];
  // One printf, one line on the host: the file's lines arrive together, never split by another.
  gvfs_printf(ctx, "Read %ld bytes back from %s:\n%s", got, HELLO_FILE, back);
  gvfs_printf(ctx, "The bytes read back are %s the bytes written.", same ? "the same as" : "NOT");
  gvfs_printf(ctx, "That took %.3f ms on the device clock.", (double)(gvfs_monotonic_ns() - start) / 1e6);
  *status = same ? 0 : 5;
}
