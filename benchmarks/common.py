"""Shared pieces of the gpuvfs benchmarks (benchmarks/*_bench.py).

Every benchmark prints one table last (figure, value, floor or baseline, ratio, goal, result)
and, with --json PATH, writes the same figures and the raw samples as JSON. The floor or
baseline of each figure is measured in the same run, on the same machine: ratios matter
more than absolute figures (docs/benchmarks.md).

Run a benchmark from the repository root with the repository on the path, e.g.
    PYTHONPATH=. python3 benchmarks/hostcall_bench.py --quick --backend cpu
"""
from __future__ import annotations

import argparse
import datetime as _dt
import faulthandler
import json
import math
import os
import platform
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python3 benchmarks/x_bench.py` from anywhere
    sys.path.insert(0, str(REPO))


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=["auto", "cuda", "cpu"],
                   help="where device code runs (default: cuda when a GPU is present, else cpu)")
    p.add_argument("--quick", action="store_true", help="small sizes: finishes within about a minute on the GPU")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds after which the whole run is stopped with a traceback (a hang guard; "
                        "default 240 with --quick, else 900)")
    p.add_argument("--strict", action="store_true", help="exit with status 3 when a goal is missed")


def resolve_backend(name: str) -> str:
    """'auto' -> 'cuda' or 'cpu' (what gpuvfs.backends.select would pick)."""
    if name != "auto":
        return name
    from gpuvfs.backends import cuda_available
    return "cuda" if cuda_available() else "cpu"


def start_watchdog(args: argparse.Namespace) -> float:
    """A hang in device code must not hang the caller: after the timeout, print every
    thread's stack and exit (status 1). Returns the timeout used."""
    t = args.timeout if args.timeout is not None else (240.0 if args.quick else 900.0)
    faulthandler.dump_traceback_later(t, exit=True)
    return t


@dataclass
class Figure:
    """One row of the results table."""
    key: str                    # stable identifier, e.g. "rtt_1lane_median"
    name: str                   # what it is, in words
    unit: str                   # unit of value and floor: "us", "M/s", ...
    value: float
    floor: float | None = None  # the ceiling/floor/baseline measured in the same run
    floor_name: str = ""
    goal: str = ""              # e.g. "<= 1.25x floor", ">= 0.70x floor", ">= 20 M/s"; "" = information only
    goal_kind: str = ""         # "ratio_max", "ratio_min", "value_min", "value_max" or ""
    goal_value: float | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.floor is None or not self.floor or not math.isfinite(self.value):
            return None
        return self.value / self.floor

    @property
    def passed(self) -> bool | None:
        if not self.goal_kind or self.goal_value is None or not math.isfinite(self.value):
            return None if not self.goal_kind else False
        r = self.ratio
        if self.goal_kind == "ratio_max":
            return r is not None and r <= self.goal_value
        if self.goal_kind == "ratio_min":
            return r is not None and r >= self.goal_value
        if self.goal_kind == "value_min":
            return self.value >= self.goal_value
        if self.goal_kind == "value_max":
            return self.value <= self.goal_value
        return None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        d["pass"] = self.passed
        return d


def fmt(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    a = abs(v)
    s = f"{v:.3g}" if a < 10 else (f"{v:.1f}" if a < 1000 else f"{v:,.0f}")
    return f"{s} {unit}".strip()


def print_table(title: str, figures: Sequence[Figure], notes: Iterable[str] = ()) -> None:
    rows = [("figure", "value", "floor", "ratio", "goal", "result")]
    for f in figures:
        r = f.ratio
        p = f.passed
        rows.append((f.name, fmt(f.value, f.unit), fmt(f.floor, f.unit), "-" if r is None else f"{r:.2f}x",
                     f.goal or "(info)", "" if p is None else ("PASS" if p else "FAIL")))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = "  ".join("-" * x for x in w)
    print()
    print(title)
    print(line)
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w[j]) if j == 0 else c.rjust(w[j]) if j < 4 else c.ljust(w[j])
                        for j, c in enumerate(r)).rstrip())
        if i == 0:
            print(line)
    print(line)
    floors = [(f.name, f.floor_name) for f in figures if f.floor_name]
    for name, fl in floors:
        print(f"  floor of '{name}': {fl}")
    for n in notes:
        print(f"  note: {n}")
    sys.stdout.flush()


def machine_info(backend: str, rt_backend: Any = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "backend": backend,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    if backend == "cuda":
        try:
            import cupy
            info["cupy"] = cupy.__version__
            rv = cupy.cuda.runtime.runtimeGetVersion()
            dv = cupy.cuda.runtime.driverGetVersion()
            info["cuda_runtime"] = f"{rv // 1000}.{rv % 1000 // 10}"
            info["cuda_driver"] = f"{dv // 1000}.{dv % 1000 // 10}"
        except Exception as e:  # information only
            info["cupy_error"] = str(e)
        name = getattr(rt_backend, "device_name", None)
        if name:
            info["device"] = name
    else:
        info["device"] = f"cpu backend ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return info


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload)
    payload.setdefault("time", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    p.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    print(f"results written to {p}")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Figure):
        return o.to_json()
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def summary_stats(xs: Sequence[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(xs, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "median": float(np.median(a)), "mean": float(a.mean()), "min": float(a.min()),
            "p10": float(np.percentile(a, 10)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def exit_status(figures: Sequence[Figure], strict: bool) -> int:
    if strict and any(f.passed is False for f in figures):
        return 3
    return 0
