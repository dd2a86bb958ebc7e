"""Shared fixtures. Every test that runs device code takes the `backend` fixture, which is
"cpu" always and "cuda" (marked gpu) where CuPy sees a GPU; gpu tests skip cleanly elsewhere.
Compiled modules are cached per session (and on disk by the cpu backend)."""
from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np
import pytest

import gpuvfs
from gpuvfs.backends import cuda_available

_HAVE_GPU = cuda_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs a GPU and CuPy (cuda backend)")
    for item in items:
        if "gpu" in item.keywords and not _HAVE_GPU:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)], scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def data_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty directory to use as a Runtime's root, inside a sandbox directory whose
    other contents (`outside.txt`) must never be touched by the runtime."""
    sandbox = tmp_path_factory.mktemp("sandbox")
    (sandbox / "outside.txt").write_bytes(b"must not change")
    root = sandbox / "root"
    root.mkdir()
    return str(root)


@pytest.fixture
def make_runtime(backend: str) -> Iterator[Callable[..., gpuvfs.Runtime]]:
    made: list[gpuvfs.Runtime] = []

    def make(root: str, **kw: object) -> gpuvfs.Runtime:
        rt = gpuvfs.Runtime(root=root, backend=backend, **kw)  # type: ignore[arg-type]
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


def write_random(path: str | os.PathLike[str], size: int, seed: int) -> np.ndarray:
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    data.tofile(path)
    return data
