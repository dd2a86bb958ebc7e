"""The host's mirror of the device ABI (gpuvfs/abi.py) matches the device headers."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

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
        L.itemsize, *(L.fields[f][1] for f in ("count", "data_bytes", "req_word", "resp_word", "req", "resp", "data",
                                                 "lock")),
        C.itemsize, C.fields["magic"][1], C.fields["lanes"][1], C.fields["counters"][1],
        C.fields["fill_push_bytes"][1], C.fields["readahead_pages"][1], C.fields["pt"][1], C.fields["files"][1],
        C.fields["fill_stage"][1],
        abi.PAGETABLE.itemsize, abi.PAGETABLE.fields["state"][1], abi.PAGETABLE.fields["pool"][1],
        abi.FILES.itemsize, abi.FILES.fields["epoch"][1], abi.FILES.fields["names"][1],
        abi.FDENT_SIZE, abi.NAMEENT_SIZE, abi.NAME_MAX, abi.FD_BASE, abi.CTX_FDS_OFFSET, abi.FD_TABLE_MIN,
        abi.CTX_HINTS_BYTES, abi.NAME_HINTS, abi.HINT_INDEX_MASK,
        abi.STAT_SIZE,
        *(int(op) for op in abi.Op),
        abi.O_WRONLY, abi.O_RDWR, abi.O_CREAT, abi.O_EXCL, abi.O_TRUNC, abi.O_APPEND,
        abi.WORD_SEQ_MASK, abi.WORD_SHIFT, abi.CODE_RECORD, abi.CODE_BIAS, abi.CODE_LENGTH, abi.PT_MAX_WAYS,
        *(int(op in abi.WORD_ONLY) for op in abi.Op),
    ]
    assert got[: len(want)] == want
    assert len(got) == len(want), "device exports fields the mirror does not check"


def test_lane_word_encoding() -> None:
    """The word helpers (the device's encoding, docs/protocol.md): a NOP's request word is
    its own answer; results of -127..127 travel in the code, others (and aux) need the record."""
    w = abi.encode_req_word(abi.Op.NOP, 0x1234567)
    assert w == 0x80234567 and abi.decode_resp_word(w) == 0     # the echo is the result 0
    for result in range(abi.CODE_MIN_RESULT, abi.CODE_MAX_RESULT + 1):
        r = abi.encode_resp_word(w, result)
        assert r & abi.WORD_SEQ_MASK == 0x234567 and abi.decode_resp_word(r) == result
    for result in (abi.CODE_MIN_RESULT - 1, abi.CODE_MAX_RESULT + 1, -(2**63), 2**63 - 1, None):
        r = abi.encode_resp_word(w, result)
        assert r == 0x234567 and abi.decode_resp_word(r) is None   # code 0: read the record
    # A result equal to the request's length (that does not fit the code) is code 255,
    # decoded with that length; an unequal one, or no length given, goes to the record.
    for length in (127, 4096, 1 << 26):
        r = abi.encode_resp_word(w, length, length=length)
        assert r == abi.CODE_LENGTH << 24 | 0x234567 and abi.decode_resp_word(r, length=length) == length
        assert abi.encode_resp_word(w, length + 1, length=length) == 0x234567
        assert abi.encode_resp_word(w, length) == 0x234567
    assert abi.encode_resp_word(w, 5, length=5) == (5 + abi.CODE_BIAS) << 24 | 0x234567   # the code first
    with pytest.raises(ValueError):
        abi.decode_resp_word(abi.CODE_LENGTH << 24 | 7)   # code 255 needs the request's length
    assert abi.encode_req_word(abi.Op.CLOSE, 2**24) == abi.Op.CLOSE << 24   # the seq bits wrap


def test_record_structs_match_the_dtypes() -> None:
    """The server's struct views of the records (abi.Request, RESPONSE_STRUCT) read and
    write the same bytes as the NumPy record dtypes, signed where the device's field is."""
    rng = np.random.default_rng(7)
    recs = np.zeros(3, dtype=abi.REQUEST)
    raw = recs.view(np.uint8)
    raw[:] = rng.integers(0, 256, raw.size, dtype=np.uint8)
    for i in range(3):
        q = abi.Request.unpack_from(raw.tobytes(), i * abi.REQUEST.itemsize)
        r = recs[i]
        assert (q.opcode, q.flags, q.fd, q.data_len, q.offset, q.length) == (
            int(r["opcode"]), int(r["flags"]), int(r["fd"]), int(r["data_len"]), int(r["offset"]), int(r["length"]))
        assert (q.arg0, q.arg1, q.arg2, q.arg3) == tuple(int(a) for a in r["arg"])
    resp = np.zeros(2, dtype=abi.RESPONSE)
    abi.RESPONSE_STRUCT.pack_into(memoryview(resp.view(np.uint8)), abi.RESPONSE.itemsize, -5, 1, 2**64 - 1, 3)
    assert int(resp["result"][1]) == -5 and [int(a) for a in resp["aux"][1]] == [1, 2**64 - 1, 3]
    assert int(resp["result"][0]) == 0 and not resp["aux"][0].any()
