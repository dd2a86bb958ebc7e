"""examples/hello_gpu.py, run as a user runs it: a subprocess with its stdin piped, on each
backend. Its kernel prints a greeting, reads a name from stdin, prints the time, writes
hello.txt and reads it back."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hello_gpu.py"


def _run(backend: str, root: str, stdin: bytes) -> tuple[subprocess.CompletedProcess, float, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.time()
    p = subprocess.run([sys.executable, str(EXAMPLE), "--backend", backend, "--dir", root], input=stdin,
                       capture_output=True, timeout=300, env=env, cwd=root)
    return p, t0, time.time()


def _file_text(secs: int, name: str) -> str:
    return ("This file was created from a GPU, using gpuvfs.\n"
            "We are \"gpuvfs\"\n"
            f"Current time (seconds since the epoch): {secs}\n"
            f"User name: {name}\n")


def test_hello_example_greets_reads_a_name_and_writes_the_file(backend: str, data_root: str) -> None:
    p, t0, t1 = _run(backend, data_root, b"Ada Lovelace\nnot read\n")
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode().split("\n")
    where = "the GPU" if backend == "cuda" else "the CPU port (each GPU thread an OS thread)"
    assert out[0] == f"Hello from gpuvfs, running on {where}!"
    assert out[1] == "What is your name?"
    assert out[2] == "Hello, Ada Lovelace! Nice to meet you from the GPU."
    m = re.fullmatch(r"Current time \(seconds since the epoch\): (\d+)", out[3])
    assert m, out[3]
    secs = int(m.group(1))
    assert int(t0) - 1 <= secs <= int(t1) + 1
    want = _file_text(secs, "Ada Lovelace")
    assert (Path(data_root) / "hello.txt").read_text() == want
    n = len(want.encode())
    assert out[4] == f"Wrote {n} bytes to /hello.txt."
    assert "\n".join(out[5:10]) + "\n" == f"Read {n} bytes back from /hello.txt:\n" + want
    assert out[10] == "The bytes read back are the same as the bytes written."
    assert re.fullmatch(r"That took \d+\.\d{3} ms on the device clock\.", out[11])
    assert out[12:] == [""]
    assert p.stderr == b""


def test_hello_example_without_input_greets_a_stranger(data_root: str) -> None:
    p, _, _ = _run("cpu", data_root, b"")
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode().split("\n")
    assert out[2] == "Hello, stranger! Nice to meet you from the GPU."
    assert "User name: stranger\n" in (Path(data_root) / "hello.txt").read_text()
