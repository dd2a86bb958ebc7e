"""What every backend provides to the Runtime (gpuvfs/runtime.py)."""
from __future__ import annotations

import os
import re
from typing import Any, Callable, Protocol, Sequence

import numpy as np


class MappedBuffer(Protocol):
    """Host memory the device can address: `array` for the host, `device_ptr` for kernels."""
    array: np.ndarray
    device_ptr: int

    def close(self) -> None: ...


class Completion(Protocol):
    """The end of one launch."""

    def done(self) -> bool: ...
    def wait(self) -> None: ...      # raises LaunchError if the kernel failed


class RawKernel(Protocol):
    name: str


class RawModule(Protocol):
    def get_function(self, name: str) -> RawKernel: ...


class Backend(Protocol):
    name: str

    def host_mapped(self, nbytes: int) -> MappedBuffer: ...
    def device_zeros(self, nbytes: int) -> tuple[Any, int]: ...
    def empty(self, shape: int | Sequence[int], dtype: Any) -> Any: ...
    def zeros(self, shape: int | Sequence[int], dtype: Any) -> Any: ...
    def to_host(self, array: Any) -> np.ndarray: ...
    def copy_to_device(self, dst: Any, src: np.ndarray) -> None: ...
    def write_u32(self, array: Any, index: int, value: int) -> None: ...
    def start_copy_to_device(self, dst_ptr: int, src_ptr: int, n: int) -> Callable[[], bool]:
        """Starts copying n bytes of host memory at src_ptr (pinned: a lane) to device memory
        at dst_ptr, beside running kernels; returns a call that says (without blocking)
        whether they landed. The source must stay untouched until then."""
        ...
    def compile(self, source: str, options: Sequence[str] = ()) -> RawModule: ...
    def launch(self, kernel: RawKernel, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: Sequence[Any], shared_mem: int = 0) -> Completion: ...
    def synchronize(self) -> None: ...
    def sync_current_stream(self) -> None:
        """Waits for the device work the calling thread queued outside the launches (array
        writes on its current stream)."""
        ...
    def close(self) -> None: ...


_DEFINE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(=[A-Za-z0-9_]*)?")


def env_defines() -> tuple[str, ...]:
    """Device-code defines from the environment, the same on every backend:
    GPUVFS_DEVICE_DEFINES="NAME NAME=VALUE ..." adds -DNAME ... to every compile. For runs
    under a checker (`scripts/gpu-check.sh --sanitize` sets them):
      GVFS_PATH_EXACT_READS  read a path a byte at a time up to its NUL (device/gvfs/files.cuh).
                             The fast path reads the rest of the path's aligned 32-byte block,
                             as strlen does: it cannot fault, but memcheck (or ASan) reports
                             the bytes past the end of the path's allocation.
      GVFS_STAGE_BYTES=0     no shared staging buffer for a lone thread's copies (copy.cuh).
                             Its holders are ordered by an atomic lock, which racecheck, a
                             checker of barriers, cannot see."""
    words = os.environ.get("GPUVFS_DEVICE_DEFINES", "").split()
    bad = [w for w in words if not _DEFINE.fullmatch(w)]
    if bad:
        raise ValueError(f"GPUVFS_DEVICE_DEFINES: {bad[0]!r} is not NAME or NAME=VALUE")
    return tuple(f"-D{w}" for w in words)
