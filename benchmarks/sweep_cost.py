#!/usr/bin/env python3
"""What the hostcall server's polling thread costs per sweep, host only (no device, no GPU).

The round trip and the many-lane rate that benchmarks/hostcall_bench.py measures on the GPU
are each a device part (PCIe) plus the host's work per sweep; this script times the host's
part alone, in this process, against the host loops of that benchmark's floors, which do
the least a mailbox can do (hostcall_bench.echo_pingpong / echo_sweep):

  idle check         Server.sweep() with nothing pending, 256 and 4096 lanes. Floors: one
                     poll of echo_pingpong (read one word, compare) and one idle iteration of
                     echo_sweep (hostcall_bench.echo_sweep_once: copy the words into a
                     buffer, compare with the answers, count_nonzero()).
  one NOP            Server.sweep() answering one NOP: on the lane of the last lone request
                     (the latency-bound case: one device thread keeps its lane) and on another
                     lane (the lone-lane shortcut misses, the vector path finds it). Floor:
                     one answering iteration of echo_pingpong.
  4096 NOPs          Server.sweep() answering a NOP on every one of 4096 lanes. Floor: one
                     answering iteration of echo_sweep (copy, compare, count, masked copy).
  one-lane round    a NOP round trip through the running server (its polling thread, as
  trip, host part    beside a GPU), with a C thread standing in for the device: it stores the
                     request word and spins until the answer's seq comes back. Floor: the same
                     C thread against hostcall_bench.echo_pingpong on a Python thread. Needs a
                     C compiler (skipped without one).
  one 4 KiB FILL     Server.sweep() taking a FILL of 4 KiB whose bytes are in the page cache
                     and answering it on the polling thread (version check, read into the
                     lane, answer in the word). Floor: its two system calls alone (fstat,
                     preadv with RWF_NOWAIT). The rest is the server's Python.
  32 FILLs of        the polling thread's time per fill for a sweep that takes 32 FILLs of
  256 KiB, batched   256 KiB and hands them to the native readers, plus the sweep that answers
                     them once read (the reads themselves, on the readers, are not counted).
                     Baseline: the same with the batch route off, each fill handed out on its
                     own (_dispatch, fill_inline, one ctypes call each). The least of 60
                     rounds, its median over the repeats. Needs a C compiler.

Each figure but the batched FILLs' is the median over repeats of (a loop of the operation -
the same loop with only its "device" step, which moves the words, and no answer). Plain NumPy arrays on the
cpu backend's memory, so no figure here includes a PCIe access or a cache miss on memory
the GPU wrote: they are the Python and NumPy overheads, which is what the server's code
decides.

    PYTHONPATH=. python3 benchmarks/sweep_cost.py [--json out.json] [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figure, machine_info, print_table, write_json  # noqa: E402
from hostcall_bench import echo_sweep_once  # noqa: E402

from gpuvfs import abi, backends  # noqa: E402
from gpuvfs.hostcall.cache import CacheFiles  # noqa: E402
from gpuvfs.hostcall.paths import Confined  # noqa: E402
from gpuvfs.hostcall.server import Lanes, Server  # noqa: E402

NOP = int(abi.Op.NOP)


def per_op_ns(body: Callable[[int], None], base: Callable[[int], None], n: int, repeats: int) -> float:
    """Median over `repeats` of (time of body(n) - time of base(n)) / n, in ns."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        base(n)
        t1 = time.perf_counter_ns()
        body(n)
        t2 = time.perf_counter_ns()
        out.append(((t2 - t1) - (t1 - t0)) / n)
    return float(np.median(out))


class Rig:
    """A Server on `lanes` lanes of the cpu backend's memory; the test is the device."""

    def __init__(self, lanes: int) -> None:
        self.backend = backends.select("cpu")
        self.lanes = Lanes(self.backend, lanes, abi.LANE_DATA_MIN)
        self.server = Server(self.lanes, workers=1)
        self.req = memoryview(self.lanes.req_word).cast("B").cast("I")
        self.seq = 0

    def close(self) -> None:
        self.server.close()
        self.lanes.close()
        self.backend.close()


def measure(repeats: int) -> tuple[list[Figure], dict[str, float]]:
    raw: dict[str, float] = {}
    figs: list[Figure] = []
    floor_ping = np.zeros(64, dtype=np.uint32)
    ping, pong = memoryview(floor_ping[0:1]), memoryview(floor_ping[32:33])

    # ---- idle
    for L in (256, 4096):
        rig = Rig(L)
        sweep = rig.server.sweep

        def idle(n: int) -> None:
            for _ in range(n):
                sweep()

        def nothing(n: int) -> None:
            for _ in range(n):
                pass

        raw[f"idle_{L}"] = per_op_ns(idle, nothing, 20000, repeats)
        fq, fr, fs = (np.zeros(L, dtype=np.uint32) for _ in range(3))
        fc = np.zeros(L, dtype=bool)

        def floor_idle(n: int) -> None:
            for _ in range(n):
                echo_sweep_once(fq, fr, fs, fc)

        raw[f"floor_sweep_idle_{L}"] = per_op_ns(floor_idle, nothing, 20000, repeats)
        rig.close()

    def floor_poll(n: int) -> None:
        cur = 0
        for _ in range(n):
            v = ping[0]
            if v != cur:
                pong[0] = v
                cur = v

    def nothing(n: int) -> None:
        for _ in range(n):
            pass

    raw["floor_poll_idle"] = per_op_ns(floor_poll, nothing, 100000, repeats)
    for L in (256, 4096):
        figs.append(Figure(f"idle_{L}", f"idle check, {L} lanes", "us", raw[f"idle_{L}"] * 1e-3,
                           raw[f"floor_sweep_idle_{L}"] * 1e-3, "one idle iteration of echo_sweep",
                           "<= 0.3 us" if L == 256 else "", "value_max" if L == 256 else "", 0.3))
    figs.append(Figure("idle_poll_floor", "idle poll of echo_pingpong (1 word)", "us", raw["floor_poll_idle"] * 1e-3))

    # ---- one NOP, 256 lanes: on the hinted lane, and on changing lanes
    rig = Rig(256)
    srv, req = rig.server, rig.req
    state = {"seq": 0}

    def one_nop_same(n: int) -> None:
        s = state["seq"]
        sweep = srv.sweep
        for _ in range(n):
            s += 1
            req[0] = NOP << 24 | (s & 0xFFFFFF)
            sweep()
        state["seq"] = s

    def post_same(n: int) -> None:   # the device's step alone: the word moves, nobody answers
        s = state["seq"]
        for _ in range(n):
            s += 1
            req[0] = NOP << 24 | (s & 0xFFFFFF)
        state["seq"] = s
        srv.sweep()                      # answers the last one (outside the n-loop's cost: once)

    raw["nop_one_lane_hinted"] = per_op_ns(one_nop_same, post_same, 20000, repeats)
    seqs = [0] * 256

    def one_nop_moving(n: int) -> None:
        sweep = srv.sweep
        for k in range(n):
            lane = (k * 37 + 1) & 255
            seqs[lane] += 1
            req[lane] = NOP << 24 | (seqs[lane] & 0xFFFFFF)
            sweep()

    def post_moving(n: int) -> None:
        for k in range(n):
            lane = (k * 37 + 1) & 255
            seqs[lane] += 1
            req[lane] = NOP << 24 | (seqs[lane] & 0xFFFFFF)
        srv.sweep()

    raw["nop_one_lane_moving"] = per_op_ns(one_nop_moving, post_moving, 20000, repeats)
    rig.close()

    cur = {"v": 0}

    def floor_answer(n: int) -> None:
        v0 = cur["v"]
        c = v0
        for k in range(n):
            ping[0] = (v0 + k + 1) & 0xFFFFFFFF   # the device's step
            v = ping[0]
            if v != c:
                pong[0] = v
                c = v
        cur["v"] = c

    def floor_post(n: int) -> None:
        v0 = cur["v"]
        for k in range(n):
            ping[0] = (v0 + k + 1) & 0xFFFFFFFF
        cur["v"] = (v0 + n) & 0xFFFFFFFF

    raw["floor_pingpong_answer"] = per_op_ns(floor_answer, floor_post, 100000, repeats)
    figs.append(Figure("nop_one_lane_hinted", "one NOP, 256 lanes, the last lone lane", "us",
                       raw["nop_one_lane_hinted"] * 1e-3, raw["floor_pingpong_answer"] * 1e-3,
                       "one answering iteration of echo_pingpong"))
    figs.append(Figure("nop_one_lane_moving", "one NOP, 256 lanes, another lane each time", "us",
                       raw["nop_one_lane_moving"] * 1e-3, raw["floor_pingpong_answer"] * 1e-3))

    # ---- NOPs on many lanes a sweep: all 4096 at once, and the GPU's pattern
    # (fewer than 2^24 sweeps in all, so the seq bits never carry into the opcode here)
    L = 4096
    raw["nops_4096"], raw["floor_sweep_4096"], nops = nop_sweeps(L, None, repeats)
    figs.append(Figure("nops_4096", "4096 NOPs answered in one sweep", "us", raw["nops_4096"] * 1e-3,
                       raw["floor_sweep_4096"] * 1e-3, "one answering iteration of echo_sweep, 4096 lanes"))
    raw["nops_answered"] = float(nops)
    # About half of the lanes a sweep, in runs of 32 (a warp's threads call at once, and
    # thread t starts at lane t): the pattern a GPU's sweeps see (docs/benchmarks.md, ninth
    # session: ~2,060 requests a sweep), which all lanes at once does not exercise (a masked
    # copy's cost depends on its mask).
    rng = np.random.default_rng(11)
    masks = [np.repeat(rng.random(L // 32) < 0.5, 32) for _ in range(64)]
    raw["nops_warp_runs"], raw["floor_sweep_warp_runs"], _ = nop_sweeps(L, masks, repeats)
    figs.append(Figure("nops_warp_runs", "~2048 NOPs a sweep, in runs of 32 lanes", "us",
                       raw["nops_warp_runs"] * 1e-3, raw["floor_sweep_warp_runs"] * 1e-3,
                       "echo_sweep_once on the same masks"))
    measure_round_trip(repeats, figs, raw)
    if os.name == "posix" and hasattr(os, "RWF_NOWAIT"):
        measure_fill(repeats, figs, raw)
    measure_fill_batch(repeats, figs, raw)
    return figs, raw


def nop_sweeps(lanes: int, masks: list[np.ndarray] | None, repeats: int) -> tuple[float, float, int]:
    """ns of one Server.sweep() and of one echo_sweep_once() that answer a new NOP on the
    lanes of mask k % len(masks) in sweep k (masks None: every lane, every sweep), each
    minus its loop with the device's step alone; and the NOPs the server answered."""
    one = np.uint32(1)
    rig = Rig(lanes)
    srv, words = rig.server, rig.lanes.req_word
    cur = np.full(lanes, NOP << 24, dtype=np.uint32)

    def bump(a: np.ndarray, k: int) -> None:
        if masks is None:
            np.add(a, one, out=a)
        else:
            np.add(a, one, out=a, where=masks[k % len(masks)])

    def step(k: int) -> None:
        bump(cur, k)
        np.copyto(words, cur)

    def body(n: int) -> None:
        sweep = srv.sweep
        for k in range(n):
            step(k)
            sweep()

    def base(n: int) -> None:
        for k in range(n):
            step(k)
        srv.sweep()

    server_ns = per_op_ns(body, base, 2000, repeats)
    nops = srv.counters.nops
    rig.close()
    fq, fr, fs = (np.zeros(lanes, dtype=np.uint32) for _ in range(3))
    fc = np.zeros(lanes, dtype=bool)

    def floor_body(n: int) -> None:
        for k in range(n):
            bump(fq, k)
            echo_sweep_once(fq, fr, fs, fc)

    def floor_base(n: int) -> None:
        for k in range(n):
            bump(fq, k)
        echo_sweep_once(fq, fr, fs, fc)

    return server_ns, per_op_ns(floor_body, floor_base, 2000, repeats), nops


DEVICE_C = r"""
#include <stdint.h>
#include <stdatomic.h>
#include <time.h>
static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}
/* A device thread's round trips on one lane: n requests (op << 24 | seq), each waited for
   until the response word carries its seq. lat[i]: ns of round trip i. Between two, gap_ns of
   spinning (a device thread's claim and release). Returns the last seq, or -1 on timeout. */
long rt_device(volatile uint32_t *req, volatile uint32_t *resp, uint32_t seq, uint32_t op, int n,
               uint64_t gap_ns, uint64_t timeout_ns, uint64_t *lat) {
  for (int i = 0; i < n; ++i) {
    seq = (seq + 1u) & 0xFFFFFFu;
    const uint64_t t0 = now_ns();
    atomic_thread_fence(memory_order_release);
    *req = op << 24 | seq;
    while ((*resp & 0xFFFFFFu) != seq)
      if (now_ns() - t0 > timeout_ns) return -1;
    atomic_thread_fence(memory_order_acquire);
    lat[i] = now_ns() - t0;
    const uint64_t g = now_ns();
    while (now_ns() - g < gap_ns) {}
  }
  return (long)seq;
}
"""


def measure_round_trip(repeats: int, figs: list[Figure], raw: dict[str, float]) -> None:
    """The host's part of a one-lane round trip, end to end through the server's polling
    thread (what a GPU's round trip adds its PCIe time to), against the floor's echo loop."""
    import ctypes
    import threading

    from hostcall_bench import echo_pingpong

    from gpuvfs import native
    try:
        with tempfile.TemporaryDirectory(prefix="gpuvfs-sweep-cost-") as d:
            src = Path(d) / "device.c"
            src.write_text(DEVICE_C)
            lib = ctypes.CDLL(str(native.build_c_library(src, "sweep-cost-device")))
    except OSError as e:
        print(f"note: no round-trip figure: {e}", file=sys.stderr)
        return
    dev = lib.rt_device
    dev.restype = ctypes.c_long
    dev.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int,
                    ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p]
    n, gap, timeout = 5000, 1000, 10_000_000_000
    lat = np.zeros(n, dtype=np.uint64)

    def run(req: np.ndarray, resp: np.ndarray, seq: int, op: int) -> int:
        last = dev(req.ctypes.data, resp.ctypes.data, seq, op, n, gap, timeout, lat.ctypes.data)
        if last < 0:
            raise SystemExit("round trip: the host loop stopped answering")
        return int(last)

    b = backends.select("cpu")
    lanes = Lanes(b, 1, abi.LANE_DATA_MIN)
    srv = Server(lanes, workers=1, in_flight=lambda: True)   # polls as beside a running kernel
    srv.start()
    srv.wake()
    server_med: list[float] = []
    seq = 0
    try:
        for _ in range(repeats):
            seq = run(lanes.req_word, lanes.resp_word, seq, NOP)
            server_med.append(float(np.median(lat)))
    finally:
        srv.close()
        lanes.close()
        b.close()
    words = np.zeros(64, dtype=np.uint32)
    ping, pong = memoryview(words[0:1]), memoryview(words[32:33])
    floor_med: list[float] = []
    for _ in range(repeats):
        cur = int(ping[0])
        stop = [False]
        last = (cur + n) & abi.WORD_SEQ_MASK
        t = threading.Thread(target=echo_pingpong,
                             args=(ping, pong, cur, last, lambda: stop[0], time.perf_counter() + 60))
        t.start()
        try:
            run(words[0:1], words[32:33], cur, 0)
        finally:
            stop[0] = True
            t.join()
        floor_med.append(float(np.median(lat)))
    raw["round_trip_host"] = float(np.median(server_med))
    raw["floor_round_trip_host"] = float(np.median(floor_med))
    figs.append(Figure("round_trip_host", "one-lane round trip, host part (C thread as device)", "us",
                       raw["round_trip_host"] * 1e-3, raw["floor_round_trip_host"] * 1e-3,
                       "the same C thread against echo_pingpong"))


def measure_fill(repeats: int, figs: list[Figure], raw: dict[str, float]) -> None:
    """One 4 KiB FILL answered on the polling thread (its bytes in the page cache): the
    sweep that takes it, the version check, the read into the lane, the answer. Floor: the
    two system calls the handler cannot do without (fstat for the version, preadv)."""
    with tempfile.TemporaryDirectory(prefix="gpuvfs-sweep-cost-") as d:
        path = os.path.join(d, "f.bin")
        data = np.random.default_rng(3).integers(0, 256, 2 << 20, dtype=np.uint8)
        data.tofile(path)
        rig = Rig(256)
        srv, req, lanes = rig.server, rig.req, rig.lanes
        files = CacheFiles(srv, Confined(d))
        name = b"/f.bin\0"
        lanes.data[0, :len(name)] = np.frombuffer(name, dtype=np.uint8)
        file_no = files.lookup(0, abi.Request(opcode=abi.Op.LOOKUP, data_len=len(name)))[0]
        lane, pages = 1, data.size // 4096
        lanes.req["opcode"][lane], lanes.req["length"][lane], lanes.req["arg"][lane, 0] = abi.Op.FILL, 4096, file_no
        offsets = lanes.req["offset"]
        state = {"seq": 0}
        fill_word = int(abi.Op.FILL) << 24

        def post(n: int, answer: bool) -> None:
            s = state["seq"]
            sweep = srv.sweep
            for k in range(n):
                s += 1
                offsets[lane] = (k * 7919 % pages) * 4096
                req[lane] = fill_word | (s & 0xFFFFFF)
                if answer:
                    sweep()
            state["seq"] = s
            if not answer:
                sweep()

        post(1, True)
        deadline = time.monotonic() + 10
        while srv._busy_pool and time.monotonic() < deadline:   # went to the pool: let it finish
            time.sleep(0.001)
        if srv.counters.pooled:
            print(f"note: {d}'s file system cannot say what is in the page cache (RWF_NOWAIT): "
                  "FILLs go to the pool there; no FILL figure", file=sys.stderr)
            files.close()
            rig.close()
            return
        got = lanes.resp_word[lane]
        if abi.decode_resp_word(int(got), length=4096) != 4096:
            raise SystemExit(f"the FILL was not answered with 4096 bytes (word {int(got):#x})")
        off = int(offsets[lane])
        if not np.array_equal(lanes.data[lane, :4096], data[off:off + 4096]):
            raise SystemExit("the FILL read the wrong bytes")
        raw["fill_4k_inline"] = per_op_ns(lambda n: post(n, True), lambda n: post(n, False), 5000, repeats)
        fd = os.open(path, os.O_RDONLY)
        buf = [lanes.buffer(lane, 4096)]

        def syscalls(n: int) -> None:
            for k in range(n):
                os.fstat(fd)
                os.preadv(fd, buf, (k * 7919 % pages) * 4096, os.RWF_NOWAIT)

        def loop(n: int) -> None:
            for k in range(n):
                (k * 7919 % pages) * 4096

        raw["floor_fill_syscalls"] = per_op_ns(syscalls, loop, 5000, repeats)
        os.close(fd)
        files.close()
        rig.close()
    figs.append(Figure("fill_4k_inline", "one 4 KiB FILL answered inline (page cache)", "us",
                       raw["fill_4k_inline"] * 1e-3, raw["floor_fill_syscalls"] * 1e-3,
                       "its two system calls alone: fstat + preadv(RWF_NOWAIT)"))


def measure_fill_batch(repeats: int, figs: list[Figure], raw: dict[str, float]) -> None:
    """The polling thread's own time per cache fill handed to the native readers: the sweep
    that takes a batch of 32 FILLs of 256 KiB and the next sweep (the readers answer the
    fills themselves: it has nothing left to do for them), timed apart from the reads
    (waited for, untimed). Batched (Server batch route, CacheFiles.fill_batch, one
    rp_submit_jobs) against one at a time (the route's batch handler taken away)."""
    k, lane_bytes, rounds = 32, 256 << 10, 60
    with tempfile.TemporaryDirectory(prefix="gpuvfs-sweep-cost-") as d:
        data = np.random.default_rng(4).integers(0, 256, 16 << 20, dtype=np.uint8)
        data.tofile(os.path.join(d, "f.bin"))
        for key, batched in (("fill_256k_one_at_a_time", False), ("fill_256k_batched", True)):
            got = _fill_batch_rig(d, data, k, lane_bytes, rounds, repeats, batched)
            if got is None:
                print("note: no native readers here (no C compiler?): no batched-FILL figure", file=sys.stderr)
                return
            raw[key] = got
    figs.append(Figure("fill_256k_batched", "polling thread's time per FILL, 32 x 256 KiB to the readers", "us",
                       raw["fill_256k_batched"] * 1e-3, raw["fill_256k_one_at_a_time"] * 1e-3,
                       "the same, each handed out on its own"))


def _fill_batch_rig(d: str, data: np.ndarray, k: int, lane_bytes: int, rounds: int, repeats: int,
                    batched: bool) -> float | None:
    """measure_fill_batch's one arm, on a server of its own: ns per fill, or None without
    native readers."""
    backend = backends.select("cpu")
    lanes = Lanes(backend, k, lane_bytes)
    srv = Server(lanes, workers=1)
    files = CacheFiles(srv, Confined(d), workers=4)
    try:
        if not files.native:
            return None
        if not batched:
            srv._batched.pop(abi.Op.FILL, None)
        name = b"/f.bin\0"
        lanes.data[0, :len(name)] = np.frombuffer(name, dtype=np.uint8)
        file_no = files.lookup(0, abi.Request(opcode=abi.Op.LOOKUP, data_len=len(name)))[0]
        lanes.req["opcode"][:], lanes.req["length"][:], lanes.req["arg"][:, 0] = abi.Op.FILL, lane_bytes, file_no
        words = memoryview(lanes.req_word).cast("B").cast("I")
        fill_word, chunks = int(abi.Op.FILL) << 24, data.size // lane_bytes
        seq = [0]

        def one_round(r: int) -> int:
            """ns of the polling thread's two sweeps for k fills (the one that takes them, the next)."""
            lanes.req["offset"][:] = (np.arange(k) + r) % chunks * lane_bytes
            seq[0] += 1
            for i in range(k):
                words[i] = fill_word | (seq[0] & 0xFFFFFF)
            t0 = time.perf_counter_ns()
            took = srv.sweep()
            t1 = time.perf_counter_ns()
            deadline = time.monotonic() + 10
            while files.busy():
                if time.monotonic() > deadline:
                    raise SystemExit("the native readers did not finish the fills")
                time.sleep(0.0001)
            t2 = time.perf_counter_ns()
            answered = srv.sweep()
            t3 = time.perf_counter_ns()
            if took != k or answered or srv._started:
                raise SystemExit(f"a sweep took {took} of {k} fills, and the next answered {answered}")
            if any(int(lanes.resp_word[i]) & 0xFFFFFF != seq[0] & 0xFFFFFF
                   or abi.decode_resp_word(int(lanes.resp_word[i]), length=lane_bytes) != lane_bytes for i in range(k)):
                raise SystemExit("a FILL was not answered with its length")
            off = int(lanes.req["offset"][r % k])
            if not np.array_equal(lanes.data[r % k], data[off:off + lane_bytes]):
                raise SystemExit("a FILL read the wrong bytes")
            return (t1 - t0) + (t3 - t2)

        one_round(0)                  # warm: the readers' threads, the pages
        return float(np.median([min(one_round(r) for r in range(rounds)) / k for _ in range(repeats)]))
    finally:
        srv.close()
        files.close()
        lanes.close()
        backend.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="repeats of every measurement (the median is reported)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    figs, raw = measure(args.repeats)
    info = machine_info("cpu")
    print_table("hostcall server, host cost per sweep (no device)", figs,
                [f"median of {args.repeats} repeats; each minus its loop with the device step alone",
                 "host only: no PCIe, no cache misses on memory a GPU wrote"])
    write_json(args.json, {"benchmark": "sweep_cost", "schema": 1, "backend": "cpu", "machine": info,
                           "figures": [f.to_json() for f in figs], "raw_ns": raw, "checks_ok": True, "problems": []})
    return 0


if __name__ == "__main__":
    sys.exit(main())
