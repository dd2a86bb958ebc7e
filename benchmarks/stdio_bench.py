"""What stdio and time cost GPU code, beside the one-lane hostcall round trip of the same run.

One device thread times each call with the SM clock (scaled to ns by %globaltimer over the
whole loop, as hostcall_bench does; %globaltimer itself ticks too coarsely on some GPUs):
  - gvfs_nop: the one-lane round trip, the floor every other figure is compared with;
  - gvfs_printf of a typical line (an int, a float with precision, a string): formatting on
    the device plus one WRITE_LINE hostcall (the host writes to /dev/null here);
  - gvfs_wallclock_ns: the device's cached wall clock (a hostcall only to refresh it);
  - gvfs_wallclock_host_ns: the wall clock asked of the host every time;
  - gvfs_monotonic_ns: the device clock, no hostcall.
The issue asks for the figures, not for a goal: each row is information beside its floor.

    PYTHONPATH=. python3 benchmarks/stdio_bench.py --quick --backend cuda --json out/stdio.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Figure, add_common_args, exit_status, machine_info, print_table,  # noqa: E402
                    resolve_backend, start_watchdog, summary_stats, write_json)

import gpuvfs  # noqa: E402

SOURCE = r"""
#include <gpuvfs.cuh>
#if defined(GVFS_CUDA)
GVFS_FN gvfs_u64 bench_clock() { gvfs_u64 c; asm volatile("mov.u64 %0, %%clock64;" : "=l"(c)); return c; }
#else
GVFS_FN gvfs_u64 bench_clock() { return gvfs_globaltimer_ns(); }
#endif

// which: 0 nop, 1 printf, 2 cached wall clock, 3 host wall clock, 4 monotonic, 5 snprintf
// of printf's line into a local buffer (the device's formatting alone).
// lat[i]: clock ticks of call i; out[0]: globaltimer ns of the timed loop, out[1]: its ticks,
// out[2]: calls that failed (a negative result).
extern "C" __global__ void stdio_cost(gvfs_ctx *ctx, int which, int warm, int n, gvfs_u64 *lat, gvfs_u64 *out) {
  if (gvfs_global_tid() != 0) return;
  gvfs_u64 bad = 0;
  for (int i = -warm; i < n; ++i) {
    if (i == 0) { out[0] = gvfs_globaltimer_ns(); out[1] = bench_clock(); }
    const gvfs_u64 c0 = bench_clock();
    long long r = 0;
    switch (which) {
      case 0: r = gvfs_nop(ctx); break;
      case 1: r = gvfs_printf(ctx, "step %d loss %.4f %s", i, 0.25 + i * 1e-3, "ok"); break;
      case 2: r = gvfs_wallclock_ns(ctx); break;
      case 3: r = gvfs_wallclock_host_ns(ctx); break;
      case 5: { char line[96]; r = gvfs_snprintf(line, sizeof line, "step %d loss %.4f %s", i, 0.25 + i * 1e-3, "ok");
                if (line[0] != 's') r = -1; break; }
      default: r = (long long)gvfs_monotonic_ns(); break;
    }
    const gvfs_u64 c1 = bench_clock();
    if (r < 0) ++bad;
    if (i >= 0) lat[i] = c1 - c0;
  }
  out[0] = gvfs_globaltimer_ns() - out[0];
  out[1] = bench_clock() - out[1];
  out[2] = bad;
}
"""

CALLS = [(0, "nop", "one-lane hostcall round trip (gvfs_nop)"),
         (1, "printf", "gvfs_printf of one line (int, %.4f float, string)"),
         (5, "snprintf", "gvfs_snprintf of the same line (formatting alone)"),
         (2, "wallclock", "gvfs_wallclock_ns (device-cached wall clock)"),
         (3, "wallclock_host", "gvfs_wallclock_host_ns (asks the host each time)"),
         (4, "monotonic", "gvfs_monotonic_ns (device clock, no hostcall)")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    args = p.parse_args()
    backend = resolve_backend(args.backend)
    start_watchdog(args)
    n = 2000 if args.quick else 20000
    warm = 100
    if backend == "cpu":
        n = min(n, 300)
    root = tempfile.mkdtemp(prefix="gpuvfs-stdio-bench-")
    sink = open(os.devnull, "wb")
    results: dict[str, dict] = {}
    problems: list[str] = []
    with gpuvfs.Runtime(root=root, backend=backend, lanes=1, stdout=sink) as rt:
        k = rt.compile(SOURCE).get_function("stdio_cost")
        for which, key, _ in CALLS:
            lat = rt.zeros(n, "uint64")
            out = rt.zeros(3, "uint64")
            k((1,), (1,), (rt.ctx, np.int32(which), np.int32(warm), np.int32(n), lat, out))
            rt.synchronize()
            lat_h, out_h = rt.asnumpy(lat), rt.asnumpy(out)
            ns_per_tick = float(out_h[0]) / float(out_h[1]) if out_h[1] else 1.0
            ns = lat_h.astype(np.float64) * ns_per_tick
            results[key] = {"ns": summary_stats(ns), "ns_per_tick": ns_per_tick}
            if out_h[2]:
                problems.append(f"{key}: {int(out_h[2])} calls returned an error")
        info = machine_info(backend, rt.backend)
    sink.close()
    floor = results["nop"]["ns"]["median"] / 1e3
    figures = []
    for which, key, name in CALLS:
        v = results[key]["ns"]["median"] / 1e3
        figures.append(Figure(key=f"{key}_median", name=f"{name} (median)", unit="us", value=v,
                              floor=None if key == "nop" else floor,
                              floor_name="" if key == "nop" else "gvfs_nop round trip, same run (median)"))
    notes = [f"one thread, {n} timed calls each after {warm} untimed; SM clock scaled by %globaltimer over the loop",
             "printf output goes to /dev/null through the host's WRITE_LINE handler"]
    if backend == "cpu":
        notes.append("cpu backend: a smoke test of the code paths; the figures say nothing about a GPU")
    notes += [f"PROBLEM: {x}" for x in problems]
    print_table(f"stdio benchmark ({backend}: {info.get('device', info.get('gpu', ''))})", figures, notes)
    write_json(args.json, {"benchmark": "stdio", "backend": backend, "machine": info,
                           "figures": [f.to_json() for f in figures], "raw": results,
                           "checks_ok": not problems, "problems": problems})
    return 2 if problems else exit_status(figures, args.strict)


if __name__ == "__main__":
    sys.exit(main())
