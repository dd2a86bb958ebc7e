"""The host's mirror of the device ABI (gpuvfs/abi.py) matches the device headers."""
from __future__ import annotations

import ctypes

import gpuvfs
from gpuvfs import abi


def test_abi_mirror_matches_device_headers(data_root: str) -> None:
    with gpuvfs.Runtime(root=data_root, backend="cpu") as rt:
        mod = rt.compile('#include <gpuvfs.cuh>\nextern "C" __global__ void k() {}\n')
        lib = mod._raw._lib
        out = (ctypes.c_ulonglong * 128)()
        n = lib.gvfs_cpu_abi(out, 128)
        got = list(out[:n])
    R, S, L, C = abi.REQUEST, abi.RESPONSE, abi.LANES, abi.CTX
    want = [
        abi.ABI_VERSION, abi.PATH_MAX, abi.CTX_MAGIC, abi.NCOUNTERS,
        R.itemsize, *(R.fields[f][1] for f in ("opcode", "flags", "fd", "data_len", "offset", "length", "arg")),
        S.itemsize, S.fields["result"][1], S.fields["aux"][1],
        L.itemsize, *(L.fields[f][1] for f in ("count", "data_bytes", "req_seq", "resp_seq", "req", "resp", "data",
                                                 "lock", "seq")),
        C.itemsize, C.fields["magic"][1], C.fields["lanes"][1], C.fields["counters"][1],
        C.fields["readahead_pages"][1], C.fields["pt"][1], C.fields["files"][1],
        abi.PAGETABLE.itemsize, abi.PAGETABLE.fields["state"][1], abi.PAGETABLE.fields["pool"][1],
        abi.FILES.itemsize, abi.FILES.fields["epoch"][1], abi.FILES.fields["names"][1],
        abi.FDENT_SIZE, abi.NAMEENT_SIZE, abi.NAME_MAX, abi.FD_BASE,
        abi.STAT_SIZE,
        *(int(op) for op in abi.Op),
        abi.O_WRONLY, abi.O_RDWR, abi.O_CREAT, abi.O_EXCL, abi.O_TRUNC, abi.O_APPEND,
    ]
    assert got[: len(want)] == want
    assert len(got) == len(want), "device exports fields the mirror does not check"
