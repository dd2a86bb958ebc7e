"""Native code the package builds on first use: the cpu backend's modules and the host's
reader pool (gpuvfs/hostcall/readers.c). Shared libraries are kept under
~/.cache/gpuvfs (or $GPUVFS_CACHE_DIR), named by a hash of what went into them."""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """The cache folder for one kind of build ("cpu": kernel modules, "host": host code)."""
    base = os.environ.get("GPUVFS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gpuvfs")
    return Path(base) / kind


@lru_cache(maxsize=None)
def compiler_version(compiler: str) -> str:
    """`compiler --version`'s output (part of every cache key), or "" if it cannot run."""
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def build_c_library(source: Path, name: str, flags: tuple[str, ...] = ("-O2", "-shared", "-fPIC", "-pthread"),
                    libs: tuple[str, ...] = ()) -> Path:
    """Compiles one C file into a shared library with $CC (a command, e.g. "ccache gcc";
    default cc, else gcc), linked with `libs`, cached by a hash of the source, flags and
    compiler. Raises OSError (no compiler, or it failed)."""
    cc = shlex.split(os.environ.get("CC", "")) or [next((c for c in ("cc", "gcc") if shutil.which(c)), "cc")]
    if shutil.which(cc[0]) is None:
        raise OSError(f"no C compiler ({cc[0]!r} not found; set CC)")
    text = source.read_bytes()
    key = hashlib.sha256(b"\0".join([text, compiler_version(cc[0]).encode(), " ".join(cc).encode(), " ".join(flags + libs).encode()])).hexdigest()[:32]
    out_dir = cache_dir("host")
    lib = out_dir / f"{name}-{key}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        out = Path(tmp) / lib.name
        try:
            r = subprocess.run([*cc, *flags, "-x", "c", str(source), "-x", "none", *libs, "-o", str(out)],
                               capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise OSError(f"{cc[0]} took over 300 s to build {source.name}") from None
        if r.returncode != 0:
            raise OSError(f"{cc[0]} could not build {source.name}: {r.stderr.strip()[:2000]}")
        os.replace(out, lib)   # atomic: a concurrent build of the same key is equivalent
    return lib
