"""The cuda backend: CuPy's RawModule (NVRTC) compiles the device sources; kernels run on
a non-blocking stream of the runtime's own, so the host server's copies (cache fills) can
run beside them; the lanes are pinned host memory mapped into the device.
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CompileError, LaunchError
from .base import env_defines
from .cpu import sources_digest

try:
    import cupy
    from cupy.cuda import runtime as cudart
except ImportError:  # pragma: no cover - select() checks before importing this module
    cupy = None

_HOST_ALLOC_PORTABLE = 1
_HOST_ALLOC_MAPPED = 2
NVRTC_FLAGS = ("-std=c++17",)
# The gvfs_* calls inline a lot of code, and left alone ptxas gives a kernel that reads
# through the cache ~150 registers a thread: 12 warps an SM. Capped at 128 (16 warps) the
# warp-collective 4 KiB hit path ran 1,041 GB/s instead of 671 on the H100 (96 and 64 spill
# and are slower). A kernel's own -maxrregcount (or __launch_bounds__) overrides it.
DEFAULT_MAXRREGCOUNT = 128
COPY_STREAMS = 32   # streams for the server workers' copies; workers beyond share them


class PinnedMapped:
    """Pinned host memory mapped into the device's address space."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._ptr = cudart.hostAlloc(max(nbytes, 1), _HOST_ALLOC_MAPPED | _HOST_ALLOC_PORTABLE)
        self.array = np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(self._ptr))[:nbytes]
        # With unified addressing (every 64-bit Linux system) the device sees mapped pinned
        # memory at its host address; ask the runtime where this CuPy exposes the call.
        get = getattr(cudart, "hostGetDevicePointer", None)
        self.device_ptr = int(get(self._ptr, 0)) if get is not None else int(self._ptr)

    def close(self) -> None:
        if self._ptr:
            cudart.freeHost(self._ptr)
            self._ptr = 0


class CudaKernel:
    def __init__(self, raw: Any, name: str) -> None:
        self.raw, self.name = raw, name


class CudaModule:
    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def get_function(self, name: str) -> CudaKernel:
        try:
            return CudaKernel(self._raw.get_function(name), name)
        except Exception as e:
            raise LaunchError(f"no kernel named {name!r} in the module: declare it extern \"C\" __global__ ({e})") from None


class _Launch:
    def __init__(self, event: Any) -> None:
        self._event = event

    def done(self) -> bool:
        return bool(self._event.done)

    def wait(self) -> None:
        try:
            self._event.synchronize()
        except Exception as e:
            raise LaunchError(f"kernel failed on the GPU: {e}") from e


class CudaBackend:
    name = "cuda"
    xp = cupy

    def __init__(self, device_dir: Path, **_: Any) -> None:
        self.device_dir = Path(device_dir)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.copy_stream = cupy.cuda.Stream(non_blocking=True)
        # The server workers' copy streams (start_copy_to_device), made here and not by the
        # workers: on the H100 a worker's cudaStreamCreate while this runtime's kernel ran
        # blocked for good in 2 of 5 benchmark runs (every worker in it, the kernel waiting
        # for their answers). Stream creation can wait for a running kernel; MPICH's yaksa
        # met the same deadlock with a kernel that waits on the host and made its streams at
        # init (pmodels/yaksa#228).
        self._copy_streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(COPY_STREAMS)]
        self._next_stream = 0
        self._streams_lock = threading.Lock()
        self._local = threading.local()    # a worker's stream, once it has one
        self._mapped: list[PinnedMapped] = []
        props = cudart.getDeviceProperties(cupy.cuda.Device().id)
        self.device_name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])

    def host_mapped(self, nbytes: int) -> PinnedMapped:
        m = PinnedMapped(nbytes)
        self._mapped.append(m)
        return m

    def device_zeros(self, nbytes: int) -> tuple[Any, int]:
        a = cupy.zeros(max(nbytes, 1), dtype=cupy.uint8)
        return a, int(a.data.ptr)

    def empty(self, shape: Any, dtype: Any) -> Any:
        return cupy.empty(shape, dtype=dtype)

    def zeros(self, shape: Any, dtype: Any) -> Any:
        return cupy.zeros(shape, dtype=dtype)

    def to_host(self, array: Any) -> np.ndarray:
        return cupy.asnumpy(array)

    def copy_to_device(self, dst: Any, src: np.ndarray) -> None:
        dst.set(np.ascontiguousarray(src).view(dst.dtype).reshape(dst.shape))

    def write_u32(self, array: Any, index: int, value: int, concurrent: bool = False) -> None:
        # Normally on the kernel stream, so it lands after the last launch and before the
        # next; `concurrent`: on the copy stream, beside a running kernel, and waited for.
        stream = self.copy_stream if concurrent else self.stream
        with stream:
            array.view(cupy.uint32)[index] = value
        if concurrent:
            stream.synchronize()

    def start_copy_to_device(self, dst_ptr: int, src_ptr: int, n: int) -> Callable[[], bool]:
        # Each calling thread (a server worker) queues on a non-blocking stream of its own:
        # the copy runs beside the kernels and other workers' copies, and the worker goes on
        # to its next request while it runs; the server's polling thread asks the event. (On
        # the H100, 16 workers each waiting in cudaStreamSynchronize spun 16 cores and the
        # pushed cold read ran at a quarter of the pulled one: probe 2026-11-24, 14:17 UTC.)
        stream = getattr(self._local, "stream", None)
        if stream is None:
            with self._streams_lock:
                stream = self._local.stream = self._copy_streams[self._next_stream % len(self._copy_streams)]
                self._next_stream += 1
        cudart.memcpyAsync(dst_ptr, src_ptr, n, cudart.memcpyHostToDevice, stream.ptr)
        event = stream.record()
        return lambda: bool(event.done)

    def compile(self, source: str, options: Sequence[str] = ()) -> CudaModule:
        opts = tuple(NVRTC_FLAGS) + (f"-I{self.device_dir}",) + env_defines() + tuple(options)
        if not any("maxrregcount" in o for o in options):
            opts += (f"-maxrregcount={DEFAULT_MAXRREGCOUNT}",)
        # CuPy caches compiled modules by source text only: name the headers' digest in the
        # source, so a changed header is never answered with a stale binary.
        source = f"// gpuvfs device headers {sources_digest(self.device_dir)}\n{source}"
        try:
            mod = cupy.RawModule(code=source, options=opts)
            mod.compile()
        except cupy.cuda.compiler.CompileException as e:
            raise CompileError("compiling the kernel source failed (cuda backend, NVRTC)", str(e)) from None
        return CudaModule(mod)

    def launch(self, kernel: CudaKernel, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: Sequence[Any], shared_mem: int = 0) -> _Launch:
        caller = cupy.cuda.get_current_stream()
        # Order the launch after work the caller queued on its stream, and the caller's
        # later work after the launch: stream semantics stay what a CuPy user expects.
        self.stream.wait_event(caller.record())
        try:
            with self.stream:
                kernel.raw(grid, block, tuple(args), shared_mem=shared_mem)
        except TypeError as e:  # CuPy's word for an argument it cannot pack
            raise TypeError(f"cannot pass that argument to {kernel.name}: {e} "
                            "(use CuPy arrays and NumPy scalars)") from None
        except Exception as e:
            raise LaunchError(f"launch of {kernel.name} failed: {e}") from e
        # A blocking-sync event: a thread waiting for the launch (synchronize(), rt.read)
        # sleeps rather than spinning a core, which the native readers need while a kernel
        # reads cold data. On the H100 host (16 cores) a cold read with 15 readers and the
        # waiter asleep ran 45.1-48.2 GB/s (medians of 8, four processes) against 44.7-45.9
        # with 14 readers beside a spinning waiter, taking turns (2026-11-25). The wake-up
        # costs a short kernel's waiter some microseconds.
        done = cupy.cuda.Event(block=True, disable_timing=True)
        done.record(self.stream)
        caller.wait_event(done)
        return _Launch(done)

    def synchronize(self) -> None:
        try:
            self.stream.synchronize()
        except Exception as e:
            raise LaunchError(f"kernel failed on the GPU: {e}") from e

    def sync_current_stream(self) -> None:
        cupy.cuda.get_current_stream().synchronize()

    def close(self) -> None:
        try:
            self.stream.synchronize()
        finally:
            for m in self._mapped:
                m.close()
            self._mapped.clear()
