// gpuvfs stdio and time for GPU code: printf, a line of stdin, clocks (docs/stdio.md).
//
//   gvfs_printf(ctx, "x=%d y=%.3f %s\n", x, y, name);  // one whole line on the host's stdout
//   gvfs_eprintf(ctx, ...);                              // the same on stderr
//   long n = gvfs_read_line(ctx, buf, cap);              // one line of the host's stdin
//   gvfs_u64 t = gvfs_monotonic_ns();                    // device clock, no hostcall
//   gvfs_i64 w = gvfs_wallclock_ns(ctx);                 // ns since the Unix epoch
//
// Each call is answered where it is cheapest: formatting and the monotonic clock on the
// device, the write of a line and the read of stdin by one hostcall, the wall clock from a
// device-side cache of the host's clock that a hostcall refreshes when it is too old.
//
// gvfs_printf is a variadic template, not C varargs: every argument's type is known at
// compile time, so a conversion that does not fit its argument (%s given an int, %d given a
// double, a missing argument, %n, %q) writes a marker such as
//   <gvfs_printf: bad %s at 7: got an integer>
// into the line instead of reading garbage. The formatting core is compiled once per module
// and called (GVFS_COLD, port.cuh), so each printf call site only packs its arguments.
#pragma once
#include "port.cuh"
#include "hostcall.cuh"
#include "context.cuh"
#include "copy.cuh"

#define GVFS_STDOUT 1u
#define GVFS_STDERR 2u

// ============================================================== formatting: arguments
enum gvfs_fmt_kind : gvfs_u32 {
  GVFS_FA_END = 0,    // past the last argument
  GVFS_FA_INT = 1,    // signed integer (value sign-extended to 64 bits)
  GVFS_FA_UINT = 2,   // unsigned integer (zero-extended), bool
  GVFS_FA_DBL = 3,    // float, double
  GVFS_FA_STR = 4,    // char *, unsigned char * (also fine for %p)
  GVFS_FA_PTR = 5,    // any other pointer, nullptr
  GVFS_FA_OTHER = 6,  // a type printf cannot print (struct, enum, long double, ...)
};

struct gvfs_fmt_arg {
  gvfs_u32 kind;
  gvfs_u32 bytes;     // the argument's size (integers: its width for %u/%x and %d)
  union { gvfs_u64 u; double d; const void *p; } v;
};

GVFS_FN gvfs_fmt_arg gvfs_fmt_i(gvfs_i64 x, gvfs_u32 bytes) { gvfs_fmt_arg a; a.kind = GVFS_FA_INT; a.bytes = bytes; a.v.u = (gvfs_u64)x; return a; }
GVFS_FN gvfs_fmt_arg gvfs_fmt_u(gvfs_u64 x, gvfs_u32 bytes) { gvfs_fmt_arg a; a.kind = GVFS_FA_UINT; a.bytes = bytes; a.v.u = x; return a; }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(char x) { return (char)-1 < 0 ? gvfs_fmt_i((gvfs_i64)x, 1) : gvfs_fmt_u((gvfs_u64)(unsigned char)x, 1); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(signed char x) { return gvfs_fmt_i(x, 1); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(unsigned char x) { return gvfs_fmt_u(x, 1); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(short x) { return gvfs_fmt_i(x, sizeof(short)); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(unsigned short x) { return gvfs_fmt_u(x, sizeof(short)); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(int x) { return gvfs_fmt_i(x, sizeof(int)); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(unsigned int x) { return gvfs_fmt_u(x, sizeof(int)); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(long x) { return gvfs_fmt_i(x, sizeof(long)); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(unsigned long x) { return gvfs_fmt_u(x, sizeof(long)); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(long long x) { return gvfs_fmt_i(x, sizeof(long long)); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(unsigned long long x) { return gvfs_fmt_u(x, sizeof(long long)); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(bool x) { return gvfs_fmt_u(x ? 1u : 0u, sizeof(int)); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(double x) { gvfs_fmt_arg a; a.kind = GVFS_FA_DBL; a.bytes = 8; a.v.d = x; return a; }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(float x) { return gvfs_fmt_make((double)x); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_str(const void *s) { gvfs_fmt_arg a; a.kind = GVFS_FA_STR; a.bytes = sizeof(void *); a.v.p = s; return a; }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(const char *s) { return gvfs_fmt_str(s); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(char *s) { return gvfs_fmt_str(s); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(const unsigned char *s) { return gvfs_fmt_str(s); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(unsigned char *s) { return gvfs_fmt_str(s); }
GVFS_FN gvfs_fmt_arg gvfs_fmt_make(decltype(nullptr)) { gvfs_fmt_arg a; a.kind = GVFS_FA_PTR; a.bytes = sizeof(void *); a.v.p = NULL; return a; }
template <class T> GVFS_FN gvfs_fmt_arg gvfs_fmt_make(T *p) {
  gvfs_fmt_arg a; a.kind = GVFS_FA_PTR; a.bytes = sizeof(void *); a.v.p = (const void *)p; return a;
}
// Anything else (structs, enums: cast them to int) is kept only as "a type printf cannot print".
template <class T> GVFS_FN gvfs_fmt_arg gvfs_fmt_make(const T &) {
  gvfs_fmt_arg a; a.kind = GVFS_FA_OTHER; a.bytes = sizeof(T); a.v.u = 0; return a;
}
GVFS_FN gvfs_fmt_arg gvfs_fmt_end() { gvfs_fmt_arg a; a.kind = GVFS_FA_END; a.bytes = 0; a.v.u = 0; return a; }

// ============================================================== formatting: the sink
// Bytes go to `dst` (a lane's payload in host memory, or a caller's buffer) through a
// 32-byte staging area, so the payload is written 8 or 16 bytes at a time. Bytes past `cap`
// are dropped and counted; so is a fill of any length in O(room), never O(count).
struct gvfs_fmt_sink {
  gvfs_u8 *dst;
  gvfs_u64 cap;       // bytes that may be written to dst
  gvfs_u64 len;       // bytes accepted (written to dst or staged), <= cap
  gvfs_u64 dropped;   // bytes that did not fit
  gvfs_u32 staged;    // the last `staged` accepted bytes are still in stage
  gvfs_u32 last;      // the last byte produced (accepted or not)
  union { gvfs_u64 w[4]; gvfs_u8 b[32]; } stage;
};

GVFS_FN void gvfs_sink_init(gvfs_fmt_sink *k, void *dst, gvfs_u64 cap) {
  k->dst = (gvfs_u8 *)dst; k->cap = cap; k->len = 0; k->dropped = 0; k->staged = 0; k->last = 0;
}
GVFS_FN void gvfs_sink_flush(gvfs_fmt_sink *k) {
  if (k->staged) gvfs_copy(k->dst + (k->len - k->staged), k->stage.b, k->staged);
  k->staged = 0;
}
GVFS_FN void gvfs_sink_put(gvfs_fmt_sink *k, char c) {
  k->last = (gvfs_u8)c;
  if (k->len >= k->cap) { ++k->dropped; return; }
  k->stage.b[k->staged++] = (gvfs_u8)c;
  ++k->len;
  if (k->staged == 32u) gvfs_sink_flush(k);
}
GVFS_FN void gvfs_sink_fill(gvfs_fmt_sink *k, char c, gvfs_u64 n) {
  if (n == 0) return;
  gvfs_u64 room = k->cap - k->len;
  gvfs_u64 put = n < room ? n : room;
  for (gvfs_u64 i = 0; i < put; ++i) gvfs_sink_put(k, c);
  k->dropped += n - put;
  k->last = (gvfs_u8)c;
}
GVFS_FN void gvfs_sink_puts(gvfs_fmt_sink *k, const char *s) { while (*s) gvfs_sink_put(k, *s++); }
GVFS_FN void gvfs_sink_putu(gvfs_fmt_sink *k, gvfs_u64 v) {
  char d[24]; int n = 0;
  do { d[n++] = (char)('0' + v % 10u); v /= 10u; } while (v);
  while (n) gvfs_sink_put(k, d[--n]);
}

// ============================================================== formatting: conversions
struct gvfs_fmt_spec {
  gvfs_u32 minus, plus, space, alt, zero;
  gvfs_u64 width;
  gvfs_i64 prec;      // -1: none given
  char conv;
};

#define GVFS_FMT_MAX_WIDTH (1ull << 24)  // larger widths/precisions are clamped (output is cut anyway)

// The marker a conversion that cannot be done writes in place of its output.
GVFS_FN void gvfs_fmt_bad(gvfs_fmt_sink *k, const char *fmt, gvfs_u64 start, gvfs_u64 end, const char *why) {
  gvfs_sink_puts(k, "<gvfs_printf: bad ");
  for (gvfs_u64 i = start; i < end && i < start + 24u; ++i) {
    char c = fmt[i];
    gvfs_sink_put(k, (c >= 32 && c < 127) ? c : '?');
  }
  gvfs_sink_puts(k, " at ");
  gvfs_sink_putu(k, start);
  gvfs_sink_puts(k, ": ");
  gvfs_sink_puts(k, why);
  gvfs_sink_put(k, '>');
}

GVFS_FN const char *gvfs_fmt_kind_name(gvfs_u32 kind) {
  switch (kind) {
    case GVFS_FA_INT: case GVFS_FA_UINT: return "got an integer";
    case GVFS_FA_DBL: return "got a floating-point number";
    case GVFS_FA_STR: return "got a string";
    case GVFS_FA_PTR: return "got a pointer";
    case GVFS_FA_END: return "missing argument";
    default: return "got a type printf cannot print";
  }
}

// Pads `body` bytes of output to the spec's width: spaces before (or after, with '-').
GVFS_FN gvfs_u64 gvfs_fmt_pad_before(gvfs_fmt_sink *k, const gvfs_fmt_spec *s, gvfs_u64 body) {
  gvfs_u64 pad = s->width > body ? s->width - body : 0;
  if (!s->minus) { gvfs_sink_fill(k, ' ', pad); return 0; }
  return pad;
}

GVFS_FN void gvfs_fmt_integer(gvfs_fmt_sink *k, const gvfs_fmt_spec *s, gvfs_u64 mag, bool neg, gvfs_u32 base,
                              bool upper) {
  char d[24]; int nd = 0;
  const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  if (!(s->prec == 0 && mag == 0)) {
    gvfs_u64 v = mag;
    do { d[nd++] = digits[v % base]; v /= base; } while (v);
  }
  gvfs_u64 zeros = (s->prec > nd) ? (gvfs_u64)s->prec - nd : 0;
  if (base == 8 && s->alt && zeros == 0 && (nd == 0 || d[nd - 1] != '0')) zeros = 1;  // "%#o": a leading 0
  const char *prefix = "";
  if (neg) prefix = "-";
  else if (s->conv == 'd' || s->conv == 'i') prefix = s->plus ? "+" : (s->space ? " " : "");
  if (base == 16 && s->alt && mag != 0) prefix = upper ? "0X" : "0x";
  gvfs_u64 plen = 0;
  while (prefix[plen]) ++plen;
  gvfs_u64 body = plen + zeros + nd;
  if (s->zero && !s->minus && s->prec < 0 && s->width > body) { zeros += s->width - body; body = s->width; }
  gvfs_u64 after = gvfs_fmt_pad_before(k, s, body);
  gvfs_sink_puts(k, prefix);
  gvfs_sink_fill(k, '0', zeros);
  while (nd) gvfs_sink_put(k, d[--nd]);
  gvfs_sink_fill(k, ' ', after);
}

GVFS_FN void gvfs_fmt_string(gvfs_fmt_sink *k, const gvfs_fmt_spec *s, const char *str) {
  if (str == NULL) str = "(null)";
  gvfs_u64 n = 0;  // never reads past the precision: the string need not be terminated there
  if (s->prec >= 0) { while (n < (gvfs_u64)s->prec && str[n]) ++n; }
  else { while (str[n]) ++n; }
  gvfs_u64 after = gvfs_fmt_pad_before(k, s, n);
  for (gvfs_u64 i = 0; i < n; ++i) gvfs_sink_put(k, str[i]);
  gvfs_sink_fill(k, ' ', after);
}

// ---------------------------------------------------------------- floating point
// Exact decimal conversion (%f %e %g and capitals) with a small bignum: the value m * 2^e is
// written as r/s * 10^k with 0.1 <= r/s < 1, and digits are produced by long division, so
// every printed digit is the exact one, rounded half to even, at every magnitude and
// precision (what glibc prints). A first pass finds how rounding ends (which digit is the
// last significant one, whether all of them carry); a second pass prints. Work is bounded by
// the value's exact expansion (at most ~770 significant digits), not by the precision: the
// zeros past it are a fill.
#define GVFS_BIG_LIMBS 36  // 1152 bits: r, s < 2^1083 at the extremes (2^1074 * 10 * 10)

struct gvfs_big {
  gvfs_u32 n;                    // limbs in use; w[n-1] != 0 (n == 0 is zero)
  gvfs_u32 w[GVFS_BIG_LIMBS];    // little-endian
};

GVFS_FN void gvfs_big_set(gvfs_big *a, gvfs_u64 v) {
  a->n = 0;
  while (v) { a->w[a->n++] = (gvfs_u32)v; v >>= 32; }
}
GVFS_FN void gvfs_big_mul_small(gvfs_big *a, gvfs_u32 m) {
  gvfs_u64 carry = 0;
  for (gvfs_u32 i = 0; i < a->n; ++i) {
    gvfs_u64 t = (gvfs_u64)a->w[i] * m + carry;
    a->w[i] = (gvfs_u32)t; carry = t >> 32;
  }
  if (carry && a->n < GVFS_BIG_LIMBS) a->w[a->n++] = (gvfs_u32)carry;
}
GVFS_FN void gvfs_big_mul_pow10(gvfs_big *a, int e) {
  for (; e >= 9; e -= 9) gvfs_big_mul_small(a, 1000000000u);
  gvfs_u32 p = 1;
  for (; e > 0; --e) p *= 10u;
  if (p != 1) gvfs_big_mul_small(a, p);
}
GVFS_FN void gvfs_big_shl(gvfs_big *a, int bits) {
  if (a->n == 0 || bits <= 0) return;
  int limbs = bits >> 5, sh = bits & 31;
  int n = (int)a->n;
  int top = n + limbs + (sh ? 1 : 0);
  if (top > GVFS_BIG_LIMBS) top = GVFS_BIG_LIMBS;  // cannot happen for doubles; never write past w
  for (int i = top - 1; i >= 0; --i) {
    int src = i - limbs;
    gvfs_u32 hi = (src >= 0 && src < n) ? a->w[src] : 0u;
    gvfs_u32 lo = (src - 1 >= 0 && src - 1 < n) ? a->w[src - 1] : 0u;
    a->w[i] = sh ? ((hi << sh) | (lo >> (32 - sh))) : hi;
  }
  a->n = (gvfs_u32)top;
  while (a->n && a->w[a->n - 1] == 0) --a->n;
}
GVFS_FN int gvfs_big_cmp(const gvfs_big *a, const gvfs_big *b) {
  if (a->n != b->n) return a->n < b->n ? -1 : 1;
  for (int i = (int)a->n - 1; i >= 0; --i)
    if (a->w[i] != b->w[i]) return a->w[i] < b->w[i] ? -1 : 1;
  return 0;
}
// Sign of a*m - b, without a temporary.
GVFS_FN int gvfs_big_cmp_mul(const gvfs_big *a, gvfs_u32 m, const gvfs_big *b) {
  gvfs_u32 n = a->n + 1 > b->n ? a->n + 1 : b->n;
  gvfs_u64 carry = 0;
  int res = 0;
  for (gvfs_u32 i = 0; i < n; ++i) {
    gvfs_u64 t = (i < a->n ? (gvfs_u64)a->w[i] * m : 0u) + carry;
    gvfs_u32 p = (gvfs_u32)t; carry = t >> 32;
    gvfs_u32 q = i < b->n ? b->w[i] : 0u;
    if (p != q) res = p < q ? -1 : 1;
  }
  return carry ? 1 : res;
}
GVFS_FN void gvfs_big_sub(gvfs_big *a, const gvfs_big *b) {  // a -= b, a >= b
  gvfs_i64 borrow = 0;
  for (gvfs_u32 i = 0; i < a->n; ++i) {
    gvfs_i64 t = (gvfs_i64)a->w[i] - (i < b->n ? (gvfs_i64)b->w[i] : 0) - borrow;
    borrow = t < 0;
    a->w[i] = (gvfs_u32)(t + (borrow ? (1ll << 32) : 0));
  }
  while (a->n && a->w[a->n - 1] == 0) --a->n;
}

struct gvfs_flt {       // the digit generator of a finite, non-zero double
  gvfs_big r, s;
  int k;                // value = 0.d1 d2 d3 ... * 10^k, d1 != 0
};

// r/s = |x| / 10^k with 0.1 <= r/s < 1.
GVFS_FN void gvfs_flt_setup(gvfs_flt *g, gvfs_u64 m, int e) {
  gvfs_big_set(&g->r, m);
  gvfs_big_set(&g->s, 1);
  if (e >= 0) gvfs_big_shl(&g->r, e); else gvfs_big_shl(&g->s, -e);
  int bl = 0;
  for (gvfs_u64 t = m; t; t >>= 1) ++bl;
  gvfs_i64 e2 = (gvfs_i64)e + bl - 1;                       // 2^e2 <= x < 2^(e2+1)
  gvfs_i64 p = e2 * 1292913986ll;                           // log10(2) * 2^32
  gvfs_i64 fl = p >= 0 ? (p >> 32) : -((-p + 0xffffffffll) >> 32);  // floor(e2 * log10(2))
  int k = (int)fl + 1;
  if (k >= 0) gvfs_big_mul_pow10(&g->s, k); else gvfs_big_mul_pow10(&g->r, -k);
  if (gvfs_big_cmp(&g->r, &g->s) >= 0) { gvfs_big_mul_small(&g->s, 10u); ++k; }
  else if (gvfs_big_cmp_mul(&g->r, 10u, &g->s) < 0) { gvfs_big_mul_small(&g->r, 10u); --k; }
  g->k = k;
}
GVFS_FN int gvfs_flt_digit(gvfs_flt *g) {
  if (g->r.n == 0) return 0;
  gvfs_big_mul_small(&g->r, 10u);
  int d = 0;
  while (gvfs_big_cmp(&g->r, &g->s) >= 0) { gvfs_big_sub(&g->r, &g->s); ++d; }
  return d;
}

// The rounded digits of a value, produced in order (second pass).
struct gvfs_digits {
  gvfs_flt g;
  gvfs_u64 m;
  int e;
  int k;                // value = 0.D0 D1 ... * 10^k after rounding
  int idx;              // next digit index
  int last_sig;         // index of the last non-zero rounded digit (-1: the value prints as 0)
  int bump;             // digit index that rounding increments (-1: none)
  bool virt;            // the digits are "1000...": all carried, or rounded up from below
};

// First pass: n digits of the value (n + k with from_point: the digits up to n places after
// the point) rounded half-even at the last one; n <= 0 is rounding to a place before the first
// digit. Sets k, last_sig and how the second pass prints.
GVFS_FN void gvfs_digits_plan(gvfs_digits *D, gvfs_i64 n, bool from_point) {
  gvfs_flt *g = &D->g;
  D->idx = 0; D->bump = -1; D->virt = false;
  gvfs_flt_setup(g, D->m, D->e);
  D->k = g->k;
  if (from_point) n += g->k;
  if (n <= 0) {
    // |x| * 10^(n - k) < 1: rounds to 0, or to one unit of digit n (then it prints as "1").
    bool up = n == 0 && gvfs_big_cmp_mul(&g->r, 2u, &g->s) > 0;
    if (up) { D->virt = true; D->k = g->k + 1; D->last_sig = 0; }
    else D->last_sig = -1;
    return;
  }
  int last_nz = -1, last_non9 = -1, d = 0;
  gvfs_i64 i = 0;
  for (; i < n; ++i) {
    if (g->r.n == 0) break;                      // the exact expansion ended: zeros follow
    d = gvfs_flt_digit(g);
    if (d) last_nz = (int)i;
    if (d != 9) last_non9 = (int)i;
  }
  bool up = false;
  if (i == n && g->r.n != 0) {
    int c = gvfs_big_cmp_mul(&g->r, 2u, &g->s);
    up = c > 0 || (c == 0 && (d & 1));
  }
  if (i < n && last_non9 < (int)n - 1) last_non9 = (int)n - 1;  // the trailing zeros are not 9s
  if (!up) { D->last_sig = last_nz; }
  else if (last_non9 < 0) { D->virt = true; D->k = g->k + 1; D->last_sig = 0; }  // 9.99 -> 10.0
  else { D->bump = last_non9; D->last_sig = last_non9; }
  gvfs_flt_setup(g, D->m, D->e);  // rewind for the second pass
}
GVFS_FN int gvfs_digits_next(gvfs_digits *D) {
  int i = D->idx++;
  if (i > D->last_sig) return 0;
  if (D->virt) return i == 0 ? 1 : 0;
  int d = gvfs_flt_digit(&D->g);
  return i == D->bump ? d + 1 : d;
}
// `count` digits; the zeros past the last significant one are one fill.
GVFS_FN void gvfs_digits_emit(gvfs_fmt_sink *k, gvfs_digits *D, gvfs_u64 count) {
  for (gvfs_u64 j = 0; j < count; ++j) {
    if (D->idx > D->last_sig) {
      gvfs_u64 rest = count - j;
      gvfs_sink_fill(k, '0', rest);
      D->idx += (int)(rest < (1u << 30) ? rest : (1u << 30));
      return;
    }
    gvfs_sink_put(k, (char)('0' + gvfs_digits_next(D)));
  }
}

GVFS_COLD void gvfs_fmt_float(gvfs_fmt_sink *k, const gvfs_fmt_spec *s, double x) {
  union { double d; gvfs_u64 u; } cv;
  cv.d = x;
  const bool neg = (cv.u >> 63) != 0;
  const int bexp = (int)((cv.u >> 52) & 0x7ffu);
  const gvfs_u64 frac = cv.u & ((1ull << 52) - 1);
  char conv = s->conv;
  const bool upper = conv == 'F' || conv == 'E' || conv == 'G';
  if (upper) conv = (char)(conv + ('a' - 'A'));
  const char *sign = neg ? "-" : (s->plus ? "+" : (s->space ? " " : ""));
  gvfs_u64 slen = sign[0] ? 1 : 0;

  if (bexp == 0x7ff) {  // inf, nan: never zero-padded
    const char *t = frac ? (upper ? "NAN" : "nan") : (upper ? "INF" : "inf");
    gvfs_u64 after = gvfs_fmt_pad_before(k, s, slen + 3);
    gvfs_sink_puts(k, sign); gvfs_sink_puts(k, t);
    gvfs_sink_fill(k, ' ', after);
    return;
  }
  gvfs_i64 prec = s->prec < 0 ? 6 : s->prec;
  gvfs_digits D;
  D.m = bexp ? (frac | (1ull << 52)) : frac;
  D.e = bexp ? bexp - 1075 : -1074;
  const bool zero = D.m == 0;

  // Plan: which layout, how many digits, where rounding happens.
  bool efmt = conv == 'e';
  gvfs_i64 fprec = prec;  // digits after the point
  if (zero) {
    D.idx = 0; D.k = 1; D.last_sig = -1; D.bump = -1; D.virt = false;
    if (conv == 'g') { efmt = false; fprec = (prec == 0 ? 1 : prec) - 1; }
  } else if (conv == 'f') {
    gvfs_digits_plan(&D, prec, true);
  } else if (conv == 'e') {
    gvfs_digits_plan(&D, prec + 1, false);
  } else {  // 'g': P significant digits, %e style if the exponent is < -4 or >= P
    gvfs_i64 P = prec == 0 ? 1 : prec;
    gvfs_digits_plan(&D, P, false);
    gvfs_i64 E = D.k - 1;
    if (E < -4 || E >= P) { efmt = true; fprec = P - 1; }
    else { efmt = false; fprec = P - 1 - E; }
  }
  if (conv == 'g' && !s->alt) {  // %g drops trailing zeros (and then a bare point)
    gvfs_i64 sig = efmt ? (gvfs_i64)D.last_sig : (gvfs_i64)D.last_sig + 1 - D.k;
    if (sig < 0) sig = 0;
    if (sig < fprec) fprec = sig;
  }
  const bool point = fprec > 0 || s->alt;

  // Length first, so padding is known before any digit is printed.
  gvfs_u64 body = slen + (point ? 1 + (gvfs_u64)fprec : 0);
  gvfs_i64 E = zero ? 0 : D.k - 1;
  gvfs_u64 eabs = (gvfs_u64)(E < 0 ? -E : E);
  if (efmt) {
    gvfs_u64 ed = 0;
    for (gvfs_u64 t = eabs; t; t /= 10) ++ed;
    body += 1 + 2 + (ed < 2 ? 2 : ed);
  } else {
    body += D.k > 0 ? (gvfs_u64)D.k : 1;
  }
  gvfs_u64 zpad = 0, after = 0;
  if (s->zero && !s->minus && s->width > body) zpad = s->width - body;
  else after = gvfs_fmt_pad_before(k, s, body);
  gvfs_sink_puts(k, sign);
  gvfs_sink_fill(k, '0', zpad);
  if (efmt) {
    gvfs_digits_emit(k, &D, 1);
    if (point) gvfs_sink_put(k, '.');
    gvfs_digits_emit(k, &D, (gvfs_u64)fprec);
    gvfs_sink_put(k, upper ? 'E' : 'e');
    gvfs_sink_put(k, E < 0 ? '-' : '+');
    if (eabs < 10) gvfs_sink_put(k, '0');
    gvfs_sink_putu(k, eabs);
  } else {
    if (D.k > 0) gvfs_digits_emit(k, &D, (gvfs_u64)D.k);
    else gvfs_sink_put(k, '0');
    if (point) gvfs_sink_put(k, '.');
    gvfs_u64 lead = 0;
    if (D.k < 0) { lead = (gvfs_u64)(-(gvfs_i64)D.k); if (lead > (gvfs_u64)fprec) lead = (gvfs_u64)fprec; }
    gvfs_sink_fill(k, '0', lead);
    gvfs_digits_emit(k, &D, (gvfs_u64)fprec - lead);
  }
  gvfs_sink_fill(k, ' ', after);
}

// ---------------------------------------------------------------- the format loop
GVFS_FN gvfs_u64 gvfs_fmt_num(const char *f, gvfs_u64 *i) {
  gvfs_u64 v = 0;
  while (f[*i] >= '0' && f[*i] <= '9') {
    v = v * 10u + (gvfs_u64)(f[*i] - '0');
    if (v > GVFS_FMT_MAX_WIDTH) v = GVFS_FMT_MAX_WIDTH;
    ++*i;
  }
  return v;
}

// Formats `fmt` with the arguments argv[0..] (ended by a GVFS_FA_END) into the sink.
GVFS_COLD void gvfs_vformat(gvfs_fmt_sink *k, const char *fmt, const gvfs_fmt_arg *argv) {
  if (fmt == NULL) { gvfs_sink_puts(k, "<gvfs_printf: null format>"); return; }
  gvfs_u32 ai = 0;
  for (gvfs_u64 i = 0; fmt[i];) {
    if (fmt[i] != '%') { gvfs_sink_put(k, fmt[i++]); continue; }
    const gvfs_u64 start = i++;
    gvfs_fmt_spec s;
    s.minus = s.plus = s.space = s.alt = s.zero = 0; s.width = 0; s.prec = -1; s.conv = 0;
    const char *bad = NULL;
    for (;; ++i) {
      char c = fmt[i];
      if (c == '-') s.minus = 1; else if (c == '+') s.plus = 1; else if (c == ' ') s.space = 1;
      else if (c == '#') s.alt = 1; else if (c == '0') s.zero = 1; else break;
    }
    if (fmt[i] == '*') {
      ++i;
      const gvfs_fmt_arg *a = &argv[ai];
      if (a->kind == GVFS_FA_INT || a->kind == GVFS_FA_UINT) {
        ++ai;
        gvfs_i64 w = a->kind == GVFS_FA_INT ? (gvfs_i64)a->v.u : (gvfs_i64)(a->v.u & 0x7fffffffffffffffull);
        if (a->bytes == 4) w = a->kind == GVFS_FA_INT ? (gvfs_i64)(gvfs_i32)a->v.u : (gvfs_i64)(gvfs_u32)a->v.u;
        if (w < 0) { s.minus = 1; w = -w; }
        s.width = (gvfs_u64)w > GVFS_FMT_MAX_WIDTH ? GVFS_FMT_MAX_WIDTH : (gvfs_u64)w;
      } else {
        if (a->kind != GVFS_FA_END) ++ai;
        bad = a->kind == GVFS_FA_END ? "missing argument for *" : "* wants an integer";
      }
    } else {
      s.width = gvfs_fmt_num(fmt, &i);
    }
    if (fmt[i] == '.') {
      ++i;
      if (fmt[i] == '*') {
        ++i;
        const gvfs_fmt_arg *a = &argv[ai];
        if (a->kind == GVFS_FA_INT || a->kind == GVFS_FA_UINT) {
          ++ai;
          gvfs_i64 p = (gvfs_i64)a->v.u;
          if (a->bytes == 4) p = a->kind == GVFS_FA_INT ? (gvfs_i64)(gvfs_i32)a->v.u : (gvfs_i64)(gvfs_u32)a->v.u;
          s.prec = p < 0 ? -1 : (p > (gvfs_i64)GVFS_FMT_MAX_WIDTH ? (gvfs_i64)GVFS_FMT_MAX_WIDTH : p);
        } else if (!bad) {
          if (a->kind != GVFS_FA_END) ++ai;
          bad = a->kind == GVFS_FA_END ? "missing argument for .*" : ".* wants an integer";
        }
      } else {
        s.prec = (gvfs_i64)gvfs_fmt_num(fmt, &i);
      }
    }
    int len = 0;  // 0 none, -2 hh, -1 h, 1 l/L/ll/j/z/t (the argument's own type decides)
    if (fmt[i] == 'h') { ++i; len = -1; if (fmt[i] == 'h') { ++i; len = -2; } }
    else if (fmt[i] == 'l') { ++i; len = 1; if (fmt[i] == 'l') ++i; }
    else if (fmt[i] == 'L' || fmt[i] == 'j' || fmt[i] == 'z' || fmt[i] == 't') { ++i; len = 1; }
    const char conv = fmt[i];
    if (conv == 0) { gvfs_fmt_bad(k, fmt, start, i, "incomplete conversion"); break; }
    ++i;
    s.conv = conv;
    int want;  // the argument kinds a conversion accepts
    switch (conv) {
      case 'd': case 'i': case 'u': case 'x': case 'X': case 'o': case 'c': want = 1; break;
      case 'f': case 'F': case 'e': case 'E': case 'g': case 'G': want = 2; break;
      case 's': want = 3; break;
      case 'p': want = 4; break;
      default: want = 0;
    }
    if (bad) {  // a bad * still owns its conversion's argument: the ones after stay aligned
      if (want && argv[ai].kind != GVFS_FA_END) ++ai;
      gvfs_fmt_bad(k, fmt, start, i, bad);
      continue;
    }
    if (conv == '%') { gvfs_sink_put(k, '%'); continue; }
    if (conv == 'n') { gvfs_fmt_bad(k, fmt, start, i, "%n is not supported"); continue; }
    if (want == 0) { gvfs_fmt_bad(k, fmt, start, i, "unknown conversion"); continue; }
    const gvfs_fmt_arg *a = &argv[ai];
    if (a->kind == GVFS_FA_END) { gvfs_fmt_bad(k, fmt, start, i, "missing argument"); continue; }
    ++ai;
    const bool is_int = a->kind == GVFS_FA_INT || a->kind == GVFS_FA_UINT;
    const bool ok = (want == 1 && is_int) || (want == 2 && a->kind == GVFS_FA_DBL) ||
                    (want == 3 && a->kind == GVFS_FA_STR) ||
                    (want == 4 && (a->kind == GVFS_FA_PTR || a->kind == GVFS_FA_STR));
    if (!ok) { gvfs_fmt_bad(k, fmt, start, i, gvfs_fmt_kind_name(a->kind)); continue; }

    if (want == 1) {
      gvfs_u32 bits = a->bytes * 8u;
      if (len == -1 && bits > 16u) bits = 16u;
      if (len == -2 && bits > 8u) bits = 8u;
      gvfs_u64 raw = a->v.u;
      if (bits < 64u) raw &= (1ull << bits) - 1u;
      if (conv == 'c') {
        gvfs_u64 after = gvfs_fmt_pad_before(k, &s, 1);
        gvfs_sink_put(k, (char)(gvfs_u8)raw);
        gvfs_sink_fill(k, ' ', after);
      } else if (conv == 'd' || conv == 'i') {
        gvfs_i64 v = (gvfs_i64)raw;  // C's reading: the bits of the argument, as signed
        if (bits < 64u && (raw >> (bits - 1u)) & 1u) v = (gvfs_i64)(raw | ~((1ull << bits) - 1u));
        const bool neg = v < 0;
        gvfs_fmt_integer(k, &s, neg ? (gvfs_u64)0 - (gvfs_u64)v : (gvfs_u64)v, neg, 10, false);
      } else {
        const gvfs_u32 base = conv == 'u' ? 10u : (conv == 'o' ? 8u : 16u);
        gvfs_fmt_integer(k, &s, raw, false, base, conv == 'X');
      }
    } else if (want == 2) {
      gvfs_fmt_float(k, &s, a->v.d);
    } else if (want == 3) {
      gvfs_fmt_string(k, &s, (const char *)a->v.p);
    } else {
      if (a->v.p == NULL) { s.prec = -1; gvfs_fmt_string(k, &s, "(nil)"); }
      else { s.alt = 1; s.conv = 'x'; s.prec = -1; gvfs_fmt_integer(k, &s, (gvfs_u64)a->v.p, false, 16, false); }
    }
  }
}

// ============================================================== lines to the host
// Writes `len` bytes as one line on the host's stream (1 stdout, 2 stderr); the host adds
// the newline. A line longer than a lane's payload is cut there. Returns bytes written or -errno.
GVFS_COLD long gvfs_write_line(gvfs_ctx *ctx, gvfs_u32 stream, const char *s, unsigned long len) {
  gvfs_lanes *L = &ctx->lanes;
  if (len > L->data_bytes) len = L->data_bytes;
  gvfs_claim c = gvfs_lane_claim(L);
  gvfs_u8 *d = gvfs_lane_data(L, c.lane);
  for (unsigned long i = 0; i < len; ++i) d[i] = (gvfs_u8)s[i];
  gvfs_lane_post(L, c, GVFS_OP_WRITE_LINE, stream, -1, (gvfs_u32)len, 0, len);
  gvfs_response r = gvfs_lane_wait(L, c, len, gvfs_wait_cap_ns(len));
  gvfs_lane_release(L, c);
  return (long)r.result;
}

GVFS_COLD long gvfs_puts(gvfs_ctx *ctx, const char *s) {
  unsigned long n = 0;
  while (s[n]) ++n;
  return gvfs_write_line(ctx, GVFS_STDOUT, s, n);
}

#define GVFS_PRINTF_CUT_ROOM 64u  // payload bytes a cut line keeps for its marker

// Formats into a lane's payload and writes it as one line: claim a lane, format, submit, wait.
GVFS_COLD int gvfs_vprintf(gvfs_ctx *ctx, gvfs_u32 stream, const char *fmt, const gvfs_fmt_arg *argv) {
  gvfs_lanes *L = &ctx->lanes;
  gvfs_claim c = gvfs_lane_claim(L);
  gvfs_fmt_sink k;
  gvfs_sink_init(&k, gvfs_lane_data(L, c.lane), L->data_bytes);
  gvfs_vformat(&k, fmt, argv);
  if (k.dropped) {
    // Too long for one lane: keep what fits before the marker, say how much was dropped.
    gvfs_sink_flush(&k);
    gvfs_u64 keep = L->data_bytes - GVFS_PRINTF_CUT_ROOM;  // a multiple of 32: staging stays aligned
    gvfs_u64 dropped = k.dropped + (k.len - keep);
    k.len = keep; k.dropped = 0;
    gvfs_sink_puts(&k, "<gvfs_printf: line cut, ");
    gvfs_sink_putu(&k, dropped);
    gvfs_sink_puts(&k, " bytes dropped>");
  } else if (k.len && k.last == '\n') {
    // The host ends every line with a newline: one the text ends with is that newline.
    --k.len;
    if (k.staged) --k.staged;
  }
  gvfs_sink_flush(&k);
  gvfs_lane_post(L, c, GVFS_OP_WRITE_LINE, stream, -1, (gvfs_u32)k.len, 0, k.len);
  gvfs_response r = gvfs_lane_wait(L, c, k.len, gvfs_wait_cap_ns(k.len));
  gvfs_lane_release(L, c);
  return r.result < 0 ? (int)r.result : (int)r.result + 1;  // + the newline
}

// printf to the host's stdout as one line: a trailing "\n" in the text is optional (the host
// ends the line with one either way); interior newlines are written with the line, atomically.
// Returns the bytes written to the stream (newline included), or -errno.
template <class... A> GVFS_FN int gvfs_printf(gvfs_ctx *ctx, const char *fmt, A... args) {
  const gvfs_fmt_arg argv[] = {gvfs_fmt_make(args)..., gvfs_fmt_end()};
  return gvfs_vprintf(ctx, GVFS_STDOUT, fmt, argv);
}
template <class... A> GVFS_FN int gvfs_eprintf(gvfs_ctx *ctx, const char *fmt, A... args) {
  const gvfs_fmt_arg argv[] = {gvfs_fmt_make(args)..., gvfs_fmt_end()};
  return gvfs_vprintf(ctx, GVFS_STDERR, fmt, argv);
}
template <class... A> GVFS_FN int gvfs_fprintf(gvfs_ctx *ctx, gvfs_u32 stream, const char *fmt, A... args) {
  const gvfs_fmt_arg argv[] = {gvfs_fmt_make(args)..., gvfs_fmt_end()};
  return gvfs_vprintf(ctx, stream, fmt, argv);
}

// snprintf into a device buffer (no hostcall): at most cap-1 bytes and a NUL (when cap > 0).
// Returns the length the whole text has (C's snprintf), so a result >= cap means it was cut.
GVFS_COLD int gvfs_vsnprintf(char *buf, unsigned long cap, const char *fmt, const gvfs_fmt_arg *argv) {
  gvfs_fmt_sink k;
  gvfs_sink_init(&k, buf, cap ? cap - 1 : 0);
  gvfs_vformat(&k, fmt, argv);
  gvfs_sink_flush(&k);
  if (cap) buf[k.len] = 0;
  return (int)(k.len + k.dropped);
}
template <class... A> GVFS_FN int gvfs_snprintf(char *buf, unsigned long cap, const char *fmt, A... args) {
  const gvfs_fmt_arg argv[] = {gvfs_fmt_make(args)..., gvfs_fmt_end()};
  return gvfs_vsnprintf(buf, cap, fmt, argv);
}

// ============================================================== stdin
// Reads one line of the host process's stdin into buf, fgets-style: the line's bytes with its
// '\n' (when it has one), then a NUL. Returns the bytes stored (NUL not counted): an empty
// line is 1 ("\n"), end of input is 0, an error is -errno. A line longer than
// min(cap - 1, the lane payload) is cut there and comes without '\n'; the rest of it is what
// the next call returns. Lines are handed out whole and in order, one per call, to whichever
// thread asks; every caller gets 0 once the input has ended. cap < 2 is -EINVAL.
GVFS_COLD long gvfs_read_line(gvfs_ctx *ctx, char *buf, unsigned long cap) {
  if (buf == NULL) return -GVFS_EFAULT;
  if (cap < 2) { if (cap) buf[0] = 0; return -GVFS_EINVAL; }
  gvfs_lanes *L = &ctx->lanes;
  gvfs_u64 want = cap - 1;
  if (want > L->data_bytes) want = L->data_bytes;
  gvfs_claim c = gvfs_lane_claim(L);
  gvfs_lane_post(L, c, GVFS_OP_READ_LINE, 0, 0, 0, 0, want);
  gvfs_response r = gvfs_lane_wait(L, c, want, gvfs_wait_cap_ns(want));
  gvfs_i64 n = r.result;
  if (n > (gvfs_i64)want) n = -GVFS_EIO;  // never trust a length beyond what was asked
  if (n > 0) gvfs_copy_alone(buf, gvfs_lane_data(L, c.lane), (gvfs_u64)n);
  gvfs_lane_release(L, c);
  buf[n > 0 ? n : 0] = 0;
  return (long)n;
}

// Drops a trailing "\n" (and a "\r" before it) from a line of n bytes; returns the new length.
GVFS_FN long gvfs_chomp(char *buf, long n) {
  if (n > 0 && buf[n - 1] == '\n') buf[--n] = 0;
  if (n > 0 && buf[n - 1] == '\r') buf[--n] = 0;
  return n;
}

// ============================================================== time
// Monotonic nanoseconds from the device's own clock (the GPU's %globaltimer; on the cpu
// backend the host's CLOCK_MONOTONIC): no hostcall.
GVFS_FN gvfs_u64 gvfs_monotonic_ns() { return gvfs_globaltimer_ns(); }

// The device half of the wall clock (ctx->stdio, device memory; the host fills the two
// settings, gpuvfs/hostcall/stdio.py mirrors the layout). A seqlock over u32 words: the writer
// makes seq odd, stores the data with release, makes seq even (release); a reader that sees
// the same even seq before and after its acquire loads of the data saw one whole entry.
// (Release stores of the data: a reader that read any of them synchronizes with the writer,
// so its second load of seq sees the odd value or a later one.)
struct gvfs_stdio_state {
  gvfs_u32 seq;          // 0: never filled; odd: being written
  gvfs_u32 rtt_ns;       // round trip of the hostcall that filled the entry (its error is <= half)
  gvfs_u32 off_lo, off_hi;  // wall - monotonic at the refresh (ns, two's complement)
  gvfs_u32 at_lo, at_hi;    // monotonic time of the refresh
  gvfs_u64 cache_ns;     // host-set: an entry serves this long (0: every call asks the host)
  gvfs_u64 max_rtt_ns;   // host-set: a refresh whose round trip took longer is not cached
  gvfs_u64 reserved[3];  // 64 bytes in all
};

// Nanoseconds since the Unix epoch, straight from the host (one hostcall).
GVFS_COLD gvfs_i64 gvfs_wallclock_host_ns(gvfs_ctx *ctx) {
  return gvfs_hostcall(&ctx->lanes, GVFS_OP_WALLCLOCK, -1, 0, 0, 0).result;
}

// Nanoseconds since the Unix epoch. Answered on the device from the cached offset between the
// host's wall clock and the device clock while the cache entry is younger than cache_ns, else
// by a hostcall that refreshes it. Error bound (docs/stdio.md): half the refreshing round trip
// (<= max_rtt_ns / 2) + cache_ns x the rate difference of the two clocks, and a step of the
// host's clock shows within cache_ns.
GVFS_FN gvfs_i64 gvfs_wallclock_ns(gvfs_ctx *ctx) {
  gvfs_stdio_state *st = ctx->stdio;
  const gvfs_u64 life = st ? st->cache_ns : 0;
  if (life) {
    const gvfs_u64 now = gvfs_monotonic_ns();
    const gvfs_u32 s1 = gvfs_load_acquire_dev(&st->seq);
    if (s1 != 0 && (s1 & 1u) == 0) {
      const gvfs_u64 off = (gvfs_u64)gvfs_load_acquire_dev(&st->off_lo) | ((gvfs_u64)gvfs_load_acquire_dev(&st->off_hi) << 32);
      const gvfs_u64 at = (gvfs_u64)gvfs_load_acquire_dev(&st->at_lo) | ((gvfs_u64)gvfs_load_acquire_dev(&st->at_hi) << 32);
      const gvfs_u32 s2 = gvfs_load_acquire_dev(&st->seq);
      if (s1 == s2 && (gvfs_i64)(now - at) < (gvfs_i64)life) return (gvfs_i64)(now + off);
    }
  }
  const gvfs_u64 t0 = gvfs_monotonic_ns();
  const gvfs_i64 w = gvfs_wallclock_host_ns(ctx);
  const gvfs_u64 t1 = gvfs_monotonic_ns();
  if (life && w > 0 && t1 - t0 <= st->max_rtt_ns && t1 - t0 < 0xffffffffull) {
    // The host read its clock somewhere in [t0, t1]: take the middle.
    const gvfs_u64 off = (gvfs_u64)w - (t0 + (t1 - t0) / 2u);
    const gvfs_u32 s = gvfs_load_acquire_dev(&st->seq);
    // Replace the entry when it is empty or old, or when this measurement is tighter (threads
    // that all found it old refresh together: the entry ends as the best of them). A racy
    // read of the current entry only decides whether to try; the CAS decides who writes.
    bool better = s == 0;
    if (!better && (s & 1u) == 0) {
      const gvfs_u32 cur_rtt = gvfs_load_acquire_dev(&st->rtt_ns);
      const gvfs_u64 at = (gvfs_u64)gvfs_load_acquire_dev(&st->at_lo) | ((gvfs_u64)gvfs_load_acquire_dev(&st->at_hi) << 32);
      better = (gvfs_i64)(t1 - at) >= (gvfs_i64)life || (t1 - t0) < cur_rtt;
    }
    if (better && (s & 1u) == 0 && gvfs_cas_acq_rel_dev(&st->seq, s, s + 1u) == s) {  // else: someone else refreshes
      gvfs_store_release_dev(&st->rtt_ns, (gvfs_u32)(t1 - t0));
      gvfs_store_release_dev(&st->off_lo, (gvfs_u32)off);
      gvfs_store_release_dev(&st->off_hi, (gvfs_u32)(off >> 32));
      gvfs_store_release_dev(&st->at_lo, (gvfs_u32)t1);
      gvfs_store_release_dev(&st->at_hi, (gvfs_u32)(t1 >> 32));
      gvfs_store_release_dev(&st->seq, s + 2u);
    }
  }
  return w;
}
