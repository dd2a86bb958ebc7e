"""The cpu backend: the device sources built by g++, each CUDA thread an OS thread.

A module is one shared library: the user's source and device/cpu/launcher.cpp, cached
under ~/.cache/gpuvfs/cpu by a hash of the source, every header, the flags and the
compiler. A launch runs on the backend's stream thread (so it is asynchronous, as on a
GPU) and runs at most `max_threads` OS threads at once: the resident blocks.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import hashlib
import mmap
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import BackendUnavailable, CompileError, LaunchError
from ..native import cache_dir, compiler_version
from .base import env_defines

BASE_FLAGS = ("-std=c++20", "-O2", "-g", "-fPIC", "-pthread", "-fno-strict-aliasing", "-Wno-unused-function")

# Argument type codes understood by gvfs_cpu_launch (device/cpu/launcher.cpp).
_CODES = {
    np.dtype("int8"): 1, np.dtype("uint8"): 2, np.dtype("int16"): 3, np.dtype("uint16"): 4,
    np.dtype("int32"): 5, np.dtype("uint32"): 6, np.dtype("int64"): 7, np.dtype("uint64"): 8,
    np.dtype("float32"): 9, np.dtype("float64"): 10, np.dtype("bool"): 2,
}


def sources_digest(device_dir: Path) -> str:
    """A hash of every device source file: part of each compiled module's cache key."""
    h = hashlib.sha256()
    for p in sorted(Path(device_dir).rglob("*")):
        if p.suffix in (".cuh", ".h", ".cpp") and p.is_file():
            h.update(str(p.relative_to(device_dir)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _done() -> bool:
    return True


class HostBuffer:
    """Page-aligned host memory; on this backend the device addresses it directly."""

    def __init__(self, nbytes: int) -> None:
        self._mm = mmap.mmap(-1, max(nbytes, 1))
        self.array = np.frombuffer(self._mm, dtype=np.uint8, count=nbytes)
        self.device_ptr = self.array.ctypes.data if nbytes else 0

    def close(self) -> None:
        pass  # freed with the last view; closing the mmap under live views would crash


class CpuKernel:
    def __init__(self, module: "CpuModule", name: str, address: int) -> None:
        self.module, self.name, self.address = module, name, address


class CpuModule:
    def __init__(self, path: Path, uses_shared: bool) -> None:
        self.path = path
        self.uses_shared = uses_shared
        self._lib = ctypes.CDLL(str(path))
        self._lib.gvfs_cpu_launch.restype = ctypes.c_int
        self.launch_fn = self._lib.gvfs_cpu_launch

    def get_function(self, name: str) -> CpuKernel:
        try:
            fn = getattr(self._lib, name)
        except AttributeError:
            raise LaunchError(
                f"no kernel named {name!r} in the module: declare it extern \"C\" __global__") from None
        return CpuKernel(self, name, ctypes.cast(fn, ctypes.c_void_p).value or 0)


def pack_args(args: Sequence[Any]) -> tuple[Any, Any, list[Any]]:
    """Packs kernel arguments as CuPy does: arrays as pointers, scalars by their dtype."""
    n = len(args)
    codes = (ctypes.c_ubyte * max(n, 1))()
    values = (ctypes.c_ulonglong * max(n, 1))()
    keep: list[Any] = []
    for i, a in enumerate(args):
        if a is None:
            codes[i], values[i] = 0, 0
        elif isinstance(a, np.ndarray):
            codes[i], values[i] = 0, a.ctypes.data
            keep.append(a)
        elif isinstance(a, np.generic):
            dt = a.dtype
            if dt not in _CODES:
                raise TypeError(f"kernel argument {i}: unsupported scalar dtype {dt}")
            codes[i] = _CODES[dt]
            raw = np.zeros(1, dtype=np.uint64)
            raw.view(np.uint8)[: dt.itemsize] = np.frombuffer(a.tobytes(), dtype=np.uint8)
            values[i] = int(raw[0])
        elif isinstance(a, bool):
            codes[i], values[i] = 2, int(a)
        elif isinstance(a, int):
            codes[i], values[i] = 7, a & 0xFFFFFFFFFFFFFFFF
        elif isinstance(a, float):
            codes[i], values[i] = 10, int(np.float64(a).view(np.uint64))
        elif type(a).__module__.startswith("cupy"):
            raise TypeError(f"kernel argument {i}: a CuPy array cannot be used on the cpu backend; "
                            "allocate with rt.empty() / rt.zeros()")
        else:
            raise TypeError(f"kernel argument {i}: cannot pass {type(a).__name__} to a kernel "
                            "(use a NumPy array or a NumPy scalar)")
    return codes, values, keep


class _Launch:
    def __init__(self, future: concurrent.futures.Future) -> None:
        self._future = future

    def done(self) -> bool:
        return self._future.done()

    def wait(self) -> None:
        self._future.result()


class CpuBackend:
    name = "cpu"
    xp = np

    def __init__(self, device_dir: Path, *, max_threads: int = 1024, cxx: str | None = None,
                 stack_bytes: int = 1 << 20) -> None:
        self.device_dir = Path(device_dir)
        self.cxx = cxx or os.environ.get("CXX") or "g++"
        if shutil.which(self.cxx) is None:
            raise BackendUnavailable(f"the cpu backend needs a C++ compiler ({self.cxx!r} not found): "
                                     "install g++ (apt-get install g++), or set CXX")
        self.max_threads = max_threads
        self.stack_bytes = stack_bytes
        self._stream = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpuvfs-cpu-stream")
        self._pending: list[concurrent.futures.Future] = []
        self._lock = threading.Lock()
        self._cxx_version = compiler_version(self.cxx)

    # ---- memory ----
    def host_mapped(self, nbytes: int) -> HostBuffer:
        return HostBuffer(nbytes)

    def device_zeros(self, nbytes: int) -> tuple[np.ndarray, int]:
        buf = HostBuffer(nbytes)
        return buf.array, buf.device_ptr

    def empty(self, shape: Any, dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def zeros(self, shape: Any, dtype: Any) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def to_host(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def copy_to_device(self, dst: Any, src: np.ndarray) -> None:
        np.copyto(dst, src.view(dst.dtype).reshape(dst.shape))

    def write_u32(self, array: Any, index: int, value: int, concurrent: bool = False) -> None:
        array.view("<u4")[index] = value

    def start_copy_to_device(self, dst_ptr: int, src_ptr: int, n: int) -> Callable[[], bool]:
        ctypes.memmove(dst_ptr, src_ptr, n)   # device memory is host memory here: done at once
        return _done

    # ---- compiling ----
    def _sources_digest(self) -> str:
        return sources_digest(self.device_dir)

    def _run(self, cmd: list[str], what: str) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise CompileError(f"{what} failed (cpu backend, {self.cxx})", r.stderr.strip())

    def compile(self, source: str, options: Sequence[str] = ()) -> CpuModule:
        if not isinstance(source, str):
            raise TypeError("source must be a str of CUDA C++")
        opts = [o for o in options]
        flags = list(BASE_FLAGS) + [f"-I{self.device_dir}", *env_defines()] + opts
        digest = self._sources_digest()
        key = hashlib.sha256("\0".join([source, digest, self._cxx_version, *flags]).encode()).hexdigest()[:32]
        cache = cache_dir("cpu")
        cache.mkdir(parents=True, exist_ok=True)
        lib = cache / f"mod-{key}.so"
        if not lib.exists():
            launcher = cache / f"launcher-{hashlib.sha256((digest + self._cxx_version + ' '.join(flags)).encode()).hexdigest()[:32]}.o"
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                if not launcher.exists():
                    obj = Path(tmp) / "launcher.o"
                    self._run([self.cxx, *flags, "-c", str(self.device_dir / "cpu" / "launcher.cpp"), "-o", str(obj)],
                              "building the cpu launcher")
                    os.replace(obj, launcher)
                src = Path(tmp) / "module.cu"
                src.write_text(source)
                out = Path(tmp) / "module.so"
                self._run([self.cxx, *flags, "-shared", "-x", "c++", str(src), "-x", "none", str(launcher),
                           "-lffi", "-o", str(out)], "compiling the kernel source")
                os.replace(out, lib)
        return CpuModule(lib, uses_shared=re.search(r"\b__shared__\b", source) is not None)

    # ---- launching ----
    def launch(self, kernel: CpuKernel, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: Sequence[Any], shared_mem: int = 0) -> _Launch:
        if shared_mem:
            raise LaunchError("dynamic shared memory is not supported on the cpu backend")
        nthreads = block[0] * block[1] * block[2]
        if nthreads > 1024:
            raise LaunchError(f"a block has at most 1024 threads; got {nthreads}")
        nblocks = grid[0] * grid[1] * grid[2]
        resident = 1 if kernel.module.uses_shared else max(1, min(nblocks, self.max_threads // max(nthreads, 1)))
        codes, values, keep = pack_args(args)
        g = (ctypes.c_uint * 3)(*grid)
        b = (ctypes.c_uint * 3)(*block)
        err = ctypes.create_string_buffer(512)
        fn = kernel.module.launch_fn

        def run() -> None:
            _ = keep  # the arrays stay alive until the launch ends
            rc = fn(ctypes.c_void_p(kernel.address), g, b, ctypes.c_int(len(args)), codes, values,
                    ctypes.c_uint(resident), ctypes.c_ulong(self.stack_bytes), err, ctypes.c_int(len(err)))
            if rc != 0:
                raise LaunchError(f"launch of {kernel.name} failed: {err.value.decode(errors='replace')}")

        fut = self._stream.submit(run)
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()] + [fut]
        return _Launch(fut)

    def sync_current_stream(self) -> None:
        pass  # host arrays: every write has happened when it returns

    def synchronize(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def close(self) -> None:
        self._stream.shutdown(wait=True)
