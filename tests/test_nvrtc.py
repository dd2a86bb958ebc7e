"""Every kernel source that includes <gpuvfs.cuh> compiles under NVRTC, as the cuda backend
compiles it (CuPy's RawModule), on a machine without a GPU.

The cpu port builds the same headers with g++, which accepts more than NVRTC does: NVRTC has no
host headers, and its releases differ (NVRTC 13.0-13.3 refuse `__builtin_offsetof` inside a
`static_assert`, and no release knows `__builtin_memcpy`; both compiled with g++ and nvcc). A
source NVRTC refuses fails only on the GPU host, where device time is scarce. NVRTC itself needs
no GPU: this compiles to PTX with the library from the `nvidia-cuda-nvrtc` wheel (the `test`
extra) and skips cleanly without it. GPUVFS_NVRTC=/path/to/libnvrtc.so picks another one.

The sources: the runtime's internal kernels, the demo's, the benchmarks', every module-level
kernel string of the test modules that includes <gpuvfs.cuh>, and the examples' .cu files; the
library's header also with the device defines that the checkers use (gpuvfs/backends/base.py)."""
from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

from gpuvfs.backends.cuda import NVRTC_FLAGS

REPO = Path(__file__).resolve().parent.parent
DEVICE = REPO / "device"
ARCH = "compute_90"      # the H100's; front-end errors do not depend on it
MAXRREG = "-maxrregcount=128"


def _libnvrtc_path() -> str | None:
    env = os.environ.get("GPUVFS_NVRTC")
    if env:
        return env
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(glob.glob(os.path.join(base, "*", "lib", "libnvrtc.so*")))
        found = [f for f in found if "builtins" not in os.path.basename(f)]
        if found:
            return found[0]
    return None


class Nvrtc:
    def __init__(self, path: str) -> None:
        # Some releases find their builtins library only if it is loaded already.
        for builtins in sorted(glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*"))):
            ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
        self.lib = ctypes.CDLL(path)
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        self.version = f"{major.value}.{minor.value}"

    def compile(self, source: str, options: list[str]) -> tuple[bool, str]:
        lib = self.lib
        prog = ctypes.c_void_p()
        rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernel.cu", 0, None, None)
        assert rc == 0, f"nvrtcCreateProgram: {rc}"
        try:
            opts = [o.encode() for o in options]
            rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            return rc == 0, log.value.decode(errors="replace")
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


@pytest.fixture(scope="module")
def nvrtc() -> Nvrtc:
    path = _libnvrtc_path()
    if path is None:
        pytest.skip("no libnvrtc (pip install nvidia-cuda-nvrtc, or set GPUVFS_NVRTC)")
    return Nvrtc(path)


def _module_from(path: Path) -> object:
    name = "nvrtc_src_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod   # (dataclasses look their module up there)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


def _kernel_sources() -> Iterator[tuple[str, str]]:
    """(name, source) of every module-level kernel string that includes <gpuvfs.cuh>, and the
    examples' .cu files."""
    from gpuvfs import cli, runtime
    modules: list[tuple[str, object]] = [("gpuvfs.runtime", runtime), ("gpuvfs.cli", cli)]
    for pattern in ("benchmarks/*_bench.py", "tests/test_*.py"):
        for path in sorted(REPO.glob(pattern)):
            if path.name == Path(__file__).name:
                continue
            modules.append((str(path.relative_to(REPO)), _module_from(path)))
    for modname, mod in modules:
        for attr, value in sorted(vars(mod).items()):
            if not attr.startswith("__") and isinstance(value, str) and "#include <gpuvfs.cuh>" in value \
                    and "__global__" in value:
                yield f"{modname}:{attr}", value
    for path in sorted(REPO.glob("examples/*.cu")):
        yield str(path.relative_to(REPO)), path.read_text()


SOURCES = list(_kernel_sources())

# Every public call, for the header alone under the checkers' defines.
EVERY_CALL = r"""
#include <gpuvfs.cuh>
extern "C" __global__ void every_call(gvfs_ctx *ctx, const char *path, unsigned char *buf) {
  int fd = gvfs_open(ctx, path, GVFS_O_RDONLY);
  gvfs_stat st;
  long r = gvfs_pread(ctx, fd, buf, 64, 0) + gvfs_pread_warp(ctx, fd, buf, 64, 0) + gvfs_fstat(ctx, fd, &st);
  r += gvfs_pwrite(ctx, fd, buf, 1, 0) + gvfs_fsync(ctx, fd) + gvfs_close(ctx, fd) + gvfs_unlink(ctx, path);
  r += gvfs_nop(ctx);
  buf[0] = (unsigned char)r;
}
"""


def _options(*defines: str) -> list[str]:
    return list(NVRTC_FLAGS) + [f"-I{DEVICE}", f"-arch={ARCH}", MAXRREG] + [f"-D{d}" for d in defines]


def test_the_sources_were_found() -> None:
    names = [n for n, _ in SOURCES]
    for want in ("gpuvfs.runtime:INTERNAL_KERNELS", "gpuvfs.cli:DEMO_KERNEL", "benchmarks/read_bench.py:SOURCE",
                 "examples/hello_gpu.cu"):
        assert want in names, names
    assert sum(n.startswith("tests/") for n in names) >= 8, names


@pytest.mark.parametrize("name,source", SOURCES, ids=[n for n, _ in SOURCES])
def test_kernel_source_compiles_under_nvrtc(nvrtc: Nvrtc, name: str, source: str) -> None:
    ok, log = nvrtc.compile(source, _options())
    assert ok, f"NVRTC {nvrtc.version} refused {name}:\n{log}"


@pytest.mark.parametrize("defines", [(), ("GVFS_PATH_EXACT_READS",), ("GVFS_PATH_EXACT_READS", "GVFS_STAGE_BYTES=0")],
                         ids=["plain", "memcheck", "racecheck"])
def test_every_call_compiles_under_nvrtc(nvrtc: Nvrtc, defines: tuple[str, ...]) -> None:
    ok, log = nvrtc.compile(EVERY_CALL, _options(*defines))
    assert ok, f"NVRTC {nvrtc.version} refused the header with {defines}:\n{log}"
