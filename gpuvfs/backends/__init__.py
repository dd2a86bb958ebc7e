"""Backends: where device code runs. This module is the one place that decides CUDA vs CPU.

- ``cuda``: CuPy compiles the device sources with NVRTC and runs them on a GPU; the lanes
  are pinned host memory mapped into the device.
- ``cpu``: g++ compiles the same sources; each CUDA thread is an OS thread and "device
  memory" is host memory. CI runs the real protocol code this way.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailable
from .base import Backend, Completion, MappedBuffer, RawKernel, RawModule

DEVICE_DIR = Path(__file__).resolve().parent.parent / "device"
BACKENDS = ("auto", "cuda", "cpu")


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        import cupy  # noqa: F401
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def select(name: str = "auto", **options: object) -> Backend:
    """Returns a backend instance: "cuda", "cpu", or "auto" (cuda when usable, else cpu)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    if name == "auto":
        name = "cuda" if cuda_available() else "cpu"
    if name == "cuda":
        if not cuda_available():
            raise BackendUnavailable(
                "backend 'cuda' needs CuPy and a GPU: install gpuvfs[cuda12] or gpuvfs[cuda13] "
                "on a machine with an NVIDIA GPU, or use backend='cpu'")
        from .cuda import CudaBackend
        return CudaBackend(DEVICE_DIR, **options)  # type: ignore[arg-type]
    from .cpu import CpuBackend
    return CpuBackend(DEVICE_DIR, **options)  # type: ignore[arg-type]


__all__ = ["Backend", "Completion", "MappedBuffer", "RawKernel", "RawModule", "select", "cuda_available",
           "DEVICE_DIR", "BackendUnavailable"]
