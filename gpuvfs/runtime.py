"""Runtime: owns the device memory, the hostcall server, kernel compilation and launch.

    with gpuvfs.Runtime(root="data", backend="auto") as rt:
        mod = rt.compile(source)              # CUDA C++ that does #include <gpuvfs.cuh>
        k = mod.get_function("load")
        out = rt.empty(1 << 20, "uint8")
        k((4,), (64,), (rt.ctx, out, 1 << 20))
        rt.synchronize()
        rt.stats()

One Runtime owns one server; kernels (and, in later layers, the sync engine and the FUSE
handlers) all go through it. Counters live in one place that stats() reads.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np

from . import abi, backends
from .errors import GvfsError, LaunchError
from .hostcall.files import FileHandlers
from .hostcall.paths import Confined
from .hostcall.server import Lanes, Server
from .hostcall.stdio import StdioHandlers

log = logging.getLogger("gpuvfs")

Dim = "int | tuple[int] | tuple[int, int] | tuple[int, int, int]"


def _dim3(v: Any, what: str) -> tuple[int, int, int]:
    t = (v,) if isinstance(v, (int, np.integer)) else tuple(v)
    if not 1 <= len(t) <= 3 or any(not isinstance(x, (int, np.integer)) or x < 1 for x in t):
        raise ValueError(f"{what} must be 1 to 3 positive integers, got {v!r}")
    t = tuple(int(x) for x in t) + (1,) * (3 - len(t))
    return t  # type: ignore[return-value]


class Kernel:
    """A __global__ function of a compiled module. Call it as CuPy's RawKernel is called:
    ``k(grid, block, args, shared_mem=0)``; the launch is asynchronous."""

    def __init__(self, rt: "Runtime", raw: Any) -> None:
        self._rt, self._raw = rt, raw
        self.name: str = raw.name

    def __call__(self, grid: Any, block: Any, args: Sequence[Any], *, shared_mem: int = 0) -> None:
        if not isinstance(args, (tuple, list)):
            raise TypeError("args must be a tuple of kernel arguments")
        self._rt._launch(self._raw, _dim3(grid, "grid"), _dim3(block, "block"), args, shared_mem)

    def __repr__(self) -> str:
        return f"<gpuvfs.Kernel {self.name}>"


class Module:
    """Device code compiled for this Runtime's backend."""

    def __init__(self, rt: "Runtime", raw: Any) -> None:
        self._rt, self._raw = rt, raw

    def get_function(self, name: str) -> Kernel:
        return Kernel(self._rt, self._raw.get_function(name))


class Runtime:
    """A file system for GPU kernels, rooted at `root`.

    Parameters
    ----------
    root: directory that device paths are confined to ("/" on the device is `root`).
    backend: "auto" (cuda when CuPy imports and a GPU is present, else cpu), "cuda", "cpu".
    lanes: number of hostcall lanes (requests in flight at once).
    lane_bytes: payload bytes per lane (the largest single hostcall transfer).
    workers: threads that run blocking hostcalls (file IO) on the host.
    stdout, stderr, stdin: binary streams for device stdio (default: the process's own).
    """

    def __init__(self, root: str | os.PathLike[str] = ".", backend: str = "auto", *, lanes: int = 256,
                 lane_bytes: int = 1 << 16, workers: int = 16,
                 stdout: BinaryIO | None = None, stderr: BinaryIO | None = None, stdin: BinaryIO | None = None,
                 backend_options: dict[str, Any] | None = None) -> None:
        try:
            self._root = Confined(root)
        except OSError as e:
            raise GvfsError(f"root {os.fspath(root)!r} is not a directory that can be used: {e.strerror}") from None
        self.backend = backends.select(backend, **(backend_options or {}))
        self._launches: list[Any] = []
        self._launch_lock = threading.Lock()
        self._closed = False
        self.lanes = Lanes(self.backend, lanes, lane_bytes)
        self._counters_dev, counters_ptr = self.backend.device_zeros(8 * abi.NCOUNTERS)
        self.server = Server(self.lanes, workers=workers, in_flight=self._in_flight)
        self.files = FileHandlers(self.server, self._root)
        self.stdio = StdioHandlers(
            self.server,
            stdout=(lambda: stdout) if stdout is not None else None,
            stderr=(lambda: stderr) if stderr is not None else None,
            stdin=(lambda: stdin) if stdin is not None else None,
        )
        ctx = np.zeros(1, dtype=abi.CTX)
        ctx["magic"] = abi.CTX_MAGIC
        ctx["abi_version"] = abi.ABI_VERSION
        for k, v in self.lanes.device.items():
            ctx["lanes"][k] = v
        ctx["counters"] = counters_ptr
        self._ctx, _ = self.backend.device_zeros(abi.CTX.itemsize)
        self.backend.copy_to_device(self._ctx, ctx.view(np.uint8))
        self.server.start()

    # ---- public API ----
    @property
    def root(self) -> str:
        return self._root.root

    @property
    def ctx(self) -> Any:
        """The device context: pass it to kernels as their `gvfs_ctx *` argument."""
        return self._ctx

    def compile(self, source: str, *, options: Sequence[str] = ()) -> Module:
        """Compiles CUDA C++ that includes <gpuvfs.cuh> for this Runtime's backend."""
        self._check_open()
        return Module(self, self.backend.compile(source, options))

    def empty(self, shape: int | Sequence[int], dtype: Any = "uint8") -> Any:
        """A device array (cupy.ndarray on cuda, numpy.ndarray on cpu)."""
        return self.backend.empty(shape, dtype)

    def zeros(self, shape: int | Sequence[int], dtype: Any = "uint8") -> Any:
        return self.backend.zeros(shape, dtype)

    def asarray(self, array: Any) -> Any:
        """A device copy of a host array."""
        host = np.ascontiguousarray(array)
        dev = self.backend.empty(host.shape, host.dtype)
        self.backend.copy_to_device(dev, host)
        return dev

    def asnumpy(self, array: Any) -> np.ndarray:
        """A host copy of a device array."""
        return self.backend.to_host(array)

    def synchronize(self) -> None:
        """Waits for every kernel launched through this Runtime; raises LaunchError on failure."""
        with self._launch_lock:
            launches, self._launches = self._launches, []
        err: BaseException | None = None
        for l in launches:
            try:
                l.wait()
            except BaseException as e:  # wait for the rest, then report the first failure
                err = err or e
        self.backend.synchronize()
        if err is not None:
            raise err

    def stats(self) -> dict[str, int]:
        """Counters of this Runtime: hostcalls, bytes_from_host, bytes_to_host, errors, and
        the device-side counters (cache_hits, cache_misses, ...)."""
        out: dict[str, int] = self.server.counters.snapshot()
        dev = self.backend.to_host(self._counters_dev).view("<u8")
        for c in abi.Counter:
            out[c.name.lower()] = int(dev[c.value])
        out["open_files"] = len(self.files.table)
        return out

    def close(self) -> None:
        """Waits for running kernels, stops the server and frees the lanes."""
        if self._closed:
            return
        self._closed = True
        try:
            self.synchronize()
        finally:
            self.server.close()
            self.files.table.close_all()
            self.backend.close()
            self.lanes.close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<gpuvfs.Runtime root={self.root!r} backend={self.backend.name} lanes={self.lanes.count}>"

    # ---- internals ----
    def _check_open(self) -> None:
        if self._closed:
            raise GvfsError("this Runtime is closed")

    def _launch(self, raw: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
                args: Sequence[Any], shared_mem: int) -> None:
        self._check_open()
        handle = self.backend.launch(raw, grid, block, args, shared_mem)
        with self._launch_lock:
            self._launches.append(handle)  # kept until synchronize(), which reports failures
        self.server.wake()

    def _in_flight(self) -> bool:
        with self._launch_lock:
            return any(not l.done() for l in self._launches)
