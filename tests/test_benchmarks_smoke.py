"""The benchmarks run end to end on the cpu backend (quick mode) and check what they measured.

Their figures mean nothing here (the CPU port stands in for a GPU); what this guards is that
each benchmark still runs, checks its bytes and counts, and writes its JSON, so that a GPU
session does not find one broken. On the GPU the same scripts run by hand (docs/benchmarks.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script, args", [
    ("hostcall_bench.py", ["--quick", "--backend", "cpu"]),
    ("stdio_bench.py", ["--quick", "--backend", "cpu"]),
    ("read_bench.py", ["--quick", "--backend", "cpu"]),
    ("sweep_cost.py", ["--repeats", "1"]),
])
def test_benchmark_runs_and_checks(script: str, args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, "--json", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{script} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    d = json.loads(out.read_text())
    assert d["checks_ok"] is True and d["problems"] == [], (script, d["problems"])
    assert d["figures"], f"{script} reported no figures"
    for f in d["figures"]:
        assert f["value"] is not None and f["value"] == f["value"], (script, f)   # measured, not NaN
