"""gpuvfs: a file system for GPU kernels.

GPU code calls gvfs_open / gvfs_pread / gvfs_pwrite / gvfs_fstat / gvfs_close / gvfs_fsync
(device/gpuvfs.cuh); a host server answers through hostcalls. See README.md and docs/.
"""
from __future__ import annotations

from .backends import cuda_available
from .errors import BackendUnavailable, CompileError, GvfsError, LaunchError
from .runtime import Kernel, Module, Runtime

__version__ = "0.1.0"

__all__ = ["Runtime", "Module", "Kernel", "GvfsError", "BackendUnavailable", "CompileError", "LaunchError",
           "cuda_available", "__version__"]
