"""Fuzzing the page cache's opcodes on the hostcall server: LOOKUP (13), FILL (12) and
FILL_PUSH (14).

The same setup as tests/test_fuzz_server.py (its Harness, Sandbox and request strategies:
lanes written straight from Python, one `Server.sweep()` per batch, the test is the poller),
with gpuvfs.hostcall.cache.CacheFiles registered on the server and a stage of NLANES x DATA
bytes attached (`attach_stage`: lane i's region is stage + i x DATA; the cpu backend's
device memory is host memory: `device_zeros`, GUARD bytes of a fixed pattern on either side
of the attached part). Each batch goes to a random subset of the lanes (the first and last
lanes included at times), so pushes land all over the stage and the lanes left idle are
checked too. Batches mix malformed and random requests with valid ones:
  LOOKUP     every path shape of the server fuzzer (escapes through `..` and symlinks,
             directories, unterminated, over-long, relative, empty), random flags/fd words;
  FILL       file_no live, retired (its file changed since), never handed out, 0, 2^24 (past
             the key's file bits), 2^63, 2^64 - 1 and random; offsets and lengths at the edges
             (lengths past the lane's 4096 bytes, offsets near 2^63 and 2^64, huge and random);
  FILL_PUSH  a FILL whose bytes are then copied into the lane's stage region: the same
             file_nos, offsets and lengths, plus offsets and lengths at lane-size and file
             edges (from the end of the version: short reads, reads at and past EOF); data_len
             0 as the device sends it or random (ignored), random bytes left in the lane
             (ignored: the read overwrites them), random values in the unused words.
  Each batch also carries one or two FILL_PUSHes as the device sends them (a lane's worth at
  a lane-aligned offset of ref.bin's version or of a cached file's newest).
Between batches a cached file may be rewritten (its versions go stale: FILL and FILL_PUSH
answer -ESTALE, LOOKUP hands out a new version).

Checked for every request: answered exactly once, with a result >= 0 or a negative errno;
FILL and FILL_PUSH: -EINVAL for a length past the lane or an offset past 2^63 - 1, -ESTALE
for a version that is not live (FILL_PUSH with no stage attached: -ENOSYS, whatever it
asks), else exactly the version's bytes in the range (short at the end of the file) in the
lane, and nothing written past them in the lane (on an error, the lane as it was). The
stage is poisoned before every batch; after it, the region of each lane whose FILL_PUSH
succeeded holds exactly the bytes it read in [0, result) and the poison after them, and
every other lane's region (idle lanes, FILL and LOOKUP lanes, failed pushes) and every
guard byte is unchanged. LOOKUP: the validation errnos of a path, and a version handed out
for a path names a regular file INSIDE the root (its inode is one of the root's), with its
size and mode, the same version while the file is unchanged. Nothing outside the root is
created, modified or even read (the sandbox's snapshot, atime included, after every batch;
contents at the end).

`GPUVFS_FUZZ_CACHE_EXAMPLES` sets the number of batches (default 300, under 10 s on 2 cores).
"""
from __future__ import annotations

import errno
import os
import random
import stat
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuvfs import abi
from gpuvfs.hostcall.cache import MAX_FILE_NO, CacheFiles
import gpuvfs.hostcall.cache as cache_module
from gpuvfs.hostcall.files import MAX_OFFSET
from gpuvfs.hostcall.paths import Confined
from gpuvfs.hostcall.server import DELEGATED

from test_fuzz_server import (DATA, I32, JUNK, NLANES, OFFSETS, PHASES, REF, SIZES, U32, U64,
                              Answer, Harness, Req, Sandbox, _fill, _sane, path_fields)

EXAMPLES = int(os.environ.get("GPUVFS_FUZZ_CACHE_EXAMPLES", "300"))
NCACHED = 3                      # /cache/f0 .. f2: files the fuzzer's valid requests read, rewritten now and then
HUGE_NOS = [0, MAX_FILE_NO, MAX_FILE_NO + 1, 1 << 24, 2**31, 2**32, 2**40, 2**63, 2**64 - 2, 2**64 - 1]
STAGE = NLANES * DATA            # the lanes' stage in device memory: lane i's region at i x DATA
GUARD = DATA + 256               # bytes of device memory either side of the stage, never to change
GUARD_BYTES = np.random.default_rng(99).integers(0, 256, 2 * GUARD, dtype=np.uint8)


def _content(i: int, gen: int) -> bytes:
    """Generation `gen` of /cache/f{i}: a size that differs from the previous generation's."""
    sizes = [0, 1, 255, DATA - 1, DATA, DATA + 1, 3 * DATA + 5, 10000]
    n = sizes[(i * 3 + gen) % len(sizes)]
    return np.random.default_rng(1000 * i + gen).integers(0, 256, n, dtype=np.uint8).tobytes()


@dataclass
class Model:
    """What the test knows of the server's versions."""
    live: dict[int, bytes] = field(default_factory=dict)   # file_no -> the bytes of that version
    inode_of: dict[int, tuple[int, int]] = field(default_factory=dict)
    stale: set[int] = field(default_factory=set)             # handed out, then its file changed
    gen: list[int] = field(default_factory=lambda: [0] * NCACHED)
    current: list[int] = field(default_factory=lambda: [0] * NCACHED)  # newest version of /cache/f{i}
    ref_no: int = 0                                          # /keep/ref.bin's version: never changes


class CacheHarness(Harness):
    def __init__(self, root: str, stage: bool = True) -> None:
        super().__init__(root)
        assert self.lanes.data_bytes == DATA
        self.root = os.path.realpath(root)
        self.cache = CacheFiles(self.server, Confined(root))
        self.registered = frozenset(self.server._routes)
        # A fill handed to the native readers is answered by its reader (readers.c, R4), not
        # by Server.answer(): counted here when handed over (DELEGATED), so "answered exactly
        # once" covers both ways, and a request answered both ways shows as two.
        self.delegated = 0
        route = self.server._routes[abi.Op.FILL]
        inline, batch = route.inline, self.server._batched.get(abi.Op.FILL)

        def counting_inline(lane: int, q: abi.Request) -> object:
            word = self.server.taken_word(lane)
            out = inline(lane, q)  # type: ignore[misc]
            if out is DELEGATED:
                self._count_delegated([(lane, word)])
            return out

        def counting_batch(reqs: list[tuple[int, int]]) -> list[int]:
            out = batch(reqs)  # type: ignore[misc]
            words = dict(reqs)
            self._count_delegated([(lane, words[lane]) for lane in out])
            return out

        if inline is not None:
            route.inline = counting_inline
        if batch is not None:
            self.server._batched[abi.Op.FILL] = counting_batch
        self.model = Model()
        # The lanes' stage in device memory, with guard bytes either side of the part attached.
        self.mem, ptr = self.backend.device_zeros(GUARD + STAGE + GUARD)
        self.mem[:GUARD], self.mem[GUARD + STAGE:] = GUARD_BYTES[:GUARD], GUARD_BYTES[GUARD:]
        self.stage = self.mem[GUARD:GUARD + STAGE].reshape(NLANES, DATA)   # a view: row i is lane i's region
        self.has_stage = stage
        if stage:
            self.cache.attach_stage(self.backend, ptr + GUARD)
        self.push_stats: Counter[str] = Counter()   # what the FILL_PUSH checks saw: coverage

    def _count_delegated(self, taken: list[tuple[int, int]]) -> None:
        with self._answers_lock:
            for lane, word in taken:
                self.answers[(self.batch, lane, word)] += 1
                self.delegated += 1

    def answering_elsewhere(self) -> bool:
        return self.cache.busy()

    def poison(self, seed: int) -> np.ndarray:
        """Fills the stage with random bytes (as earlier fills would leave it); returns a copy."""
        self.stage[:] = np.random.default_rng(seed).integers(0, 256, (NLANES, DATA), dtype=np.uint8)
        return self.stage.copy()

    def check_guards(self) -> None:
        assert np.array_equal(self.mem[:GUARD], GUARD_BYTES[:GUARD]), \
            f"FILL_PUSH wrote before the stage: {np.flatnonzero(self.mem[:GUARD] != GUARD_BYTES[:GUARD]) - GUARD}"
        assert np.array_equal(self.mem[GUARD + STAGE:], GUARD_BYTES[GUARD:]), \
            f"FILL_PUSH wrote past the stage: {np.flatnonzero(self.mem[GUARD + STAGE:] != GUARD_BYTES[GUARD:]) + STAGE}"

    def close(self) -> None:
        self.cache.close()
        super().close()

    @staticmethod
    def lookup_req(path: str | bytes) -> Req:
        p = (path.encode() if isinstance(path, str) else path) + b"\0"
        return Req(abi.Op.LOOKUP, data_len=len(p), payload=p)

    def lookup(self, path: str | bytes) -> Answer:
        return self.run([self.lookup_req(path)])[0]

    @staticmethod
    def fill_req(file_no: int, offset: int, length: int) -> Req:
        return Req(abi.Op.FILL, offset=offset, length=length, arg=(file_no, 0, 0, 0))

    def fill(self, file_no: int, offset: int, length: int) -> Answer:
        return self.run([self.fill_req(file_no, offset, length)])[0]

    @staticmethod
    def push_req(file_no: int, offset: int, length: int, data_len: int = 0, payload: bytes = b"") -> Req:
        """FILL_PUSH as the device sends it: a FILL's fields, data_len 0, nothing in the lane."""
        return Req(abi.Op.FILL_PUSH, offset=offset, length=length, data_len=data_len, arg=(file_no, 0, 0, 0),
                   payload=payload)

    def push(self, file_no: int, offset: int, length: int, data_len: int = 0, payload: bytes = b"",
             lane: int = 0, seed: int = 0) -> Answer:
        """One FILL_PUSH on `lane` with a freshly poisoned stage, checked by the oracle (lane, stage, guards)."""
        before = self.poison(seed)
        r = self.push_req(file_no, offset, length, data_len, payload)
        a = self.run([r], lanes=[lane])[0]
        got = _push_expect(self, r, a, lane, dict(self.model.live), self.cache._next_no)
        _check_stage(self, before, {lane: got} if got is not None else {})
        return a

    def root_inodes(self) -> dict[tuple[int, int], str]:
        """(dev, ino) -> path of every regular file inside the root (links not followed)."""
        out: dict[tuple[int, int], str] = {}
        for dirpath, _dirs, files in os.walk(self.root, followlinks=False):
            for name in files:
                p = os.path.join(dirpath, name)
                st_ = os.stat(p, follow_symlinks=False)
                if stat.S_ISREG(st_.st_mode):
                    out[(st_.st_dev, st_.st_ino)] = p
        return out

    def learn_lookup(self, a: Answer, what: object) -> None:
        """A LOOKUP answered a version: it must name a regular file inside the root, with its
        size and mode; the test records that version's bytes (read independently)."""
        f = a.result
        assert 1 <= f <= MAX_FILE_NO, f"LOOKUP {what} answered file_no {f}"
        v = self.cache._by_no.get(f)
        assert v is not None, f"LOOKUP {what} answered {f}, which the registry does not hold"
        inodes = self.root_inodes()
        assert (v.dev, v.ino) in inodes, f"LOOKUP {what} opened a file outside the root (inode {v.ino})"
        if f in self.model.live:
            assert self.model.inode_of[f] == (v.dev, v.ino), f"version {f} changed its file"
            return
        assert f not in self.model.stale, f"LOOKUP {what} answered the stale version {f}"
        with open(inodes[(v.dev, v.ino)], "rb") as fh:
            data = fh.read()
        assert a.aux[0] == len(data) and stat.S_ISREG(a.aux[2]), f"LOOKUP {what}: aux {a.aux} for {len(data)} bytes"
        self.model.live[f] = data
        self.model.inode_of[f] = (v.dev, v.ino)

    def rewrite(self, i: int) -> None:
        """/cache/f{i} changes in place (same inode, another size): its versions go stale."""
        m = self.model
        m.gen[i] += 1
        path = os.path.join(self.root, "cache", f"f{i}")
        ino = os.stat(path)
        with open(path, "r+b") as fh:
            fh.truncate(0)
            fh.write(_content(i, m.gen[i]))
        for f, key in list(m.inode_of.items()):
            if key == (ino.st_dev, ino.st_ino) and f in m.live:
                del m.live[f]
                m.stale.add(f)


@pytest.fixture
def sandbox(data_root: str) -> Sandbox:
    return Sandbox(data_root)


@pytest.fixture
def ch(sandbox: Sandbox) -> Iterator[CacheHarness]:
    os.makedirs(os.path.join(sandbox.root, "cache"), exist_ok=True)
    for i in range(NCACHED):
        with open(os.path.join(sandbox.root, "cache", f"f{i}"), "wb") as fh:
            fh.write(_content(i, 0))
    h = CacheHarness(sandbox.root)
    m = h.model
    for i in range(NCACHED):
        a = h.lookup(f"/cache/f{i}")
        h.learn_lookup(a, f"/cache/f{i}")
        m.current[i] = a.result
    a = h.lookup("/keep/ref.bin")
    h.learn_lookup(a, "/keep/ref.bin")
    m.ref_no = a.result
    yield h
    h.close()
    sandbox.check_content()


def _fill_expect(h: CacheHarness, r: Req, a: Answer, live0: dict[int, bytes], next_no0: int) -> None:
    """The oracle for one FILL, given the live versions and the next file_no at batch start."""
    f, off, n, res = r.arg[0], r.offset, r.length, a.result
    assert _sane(res), f"FILL answered {res}: {r}"
    if n > DATA:
        assert res == -errno.EINVAL, f"FILL longer than the lane answered {res}: {r}"
    elif off > MAX_OFFSET or off + n > MAX_OFFSET:
        assert res == -errno.EINVAL, f"FILL past 2^63 - 1 answered {res}: {r}"
    elif f in live0:
        want = live0[f][off:off + n]
        assert res == len(want), f"FILL of live version {f} answered {res}, want {len(want)}: {r}"
        assert a.data[:res] == want, f"FILL of live version {f}: wrong bytes: {r}"
    elif f >= next_no0 and f in h.model.live:   # handed out by a LOOKUP of this very batch
        assert res == -errno.ESTALE or (res >= 0 and a.data[:res] == h.model.live[f][off:off + n]), \
            f"FILL of version {f}, new in the batch, answered {res}: {r}"
    else:
        assert res == -errno.ESTALE, f"FILL of a version that is not live answered {res}: {r}"
    # Nothing is written into the lane past the bytes the FILL returned.
    tail = a.data[max(res, 0):]
    assert tail == bytes([JUNK]) * len(tail), f"FILL answered {res} but wrote past it: {r}"


def _lane_before(r: Req) -> bytes:
    """The lane's data as the harness wrote it: the payload, then junk."""
    p = r.payload[:DATA]
    return p + bytes([JUNK]) * (DATA - len(p))


def _push_expect(h: CacheHarness, r: Req, a: Answer, lane: int, live0: dict[int, bytes],
                 next_no0: int) -> bytes | None:
    """The oracle for one FILL_PUSH on `lane`, given the live versions and the next file_no at
    batch start; returns the bytes it must have copied into the lane's stage region (by the
    rules, not by the server), None where it must have copied nothing (an error)."""
    f, off, n, res = r.arg[0], r.offset, r.length, a.result
    assert _sane(res), f"FILL_PUSH answered {res}: {r}"
    lane_before = _lane_before(r)
    data: bytes | None = None
    if not h.has_stage:
        err, why, rule = errno.ENOSYS, "with no stage attached", "no_stage"
    elif n > DATA:
        err, why, rule = errno.EINVAL, "longer than the lane", "length"
    elif off > MAX_OFFSET or off + n > MAX_OFFSET:
        err, why, rule = errno.EINVAL, "past 2^63 - 1", "offset"
    elif f in live0:
        data = live0[f]
    elif f >= next_no0 and f in h.model.live and res != -errno.ESTALE:   # handed out in this very batch
        data = h.model.live[f]
    else:
        err, why, rule = errno.ESTALE, "of a version that is not live", "version"
    if data is None:
        assert res == -err, f"FILL_PUSH {why} answered {res}, want -{errno.errorcode[err]}: {r}"
        h.push_stats["refused_" + rule] += 1
        h.push_stats["refused_with_data_len"] += r.data_len != 0
        assert a.data == lane_before, f"FILL_PUSH answered {res} but changed the lane's data: {r}"
        return None
    want = data[off:off + n]
    assert res == len(want), f"FILL_PUSH of version {f} answered {res}, want {len(want)}: {r}"
    assert a.data[:res] == want, f"FILL_PUSH of version {f}: wrong bytes in the lane: {r}"
    assert a.data[res:] == lane_before[res:], f"FILL_PUSH answered {res} but wrote past it in the lane: {r}"
    st_ = h.push_stats
    st_["ok"] += 1
    st_["full_lane"] += res == DATA
    st_["short_read"] += 0 < res < n
    st_["past_eof"] += res == 0 < n
    st_["zero_length"] += n == 0
    st_["data_len_ignored"] += r.data_len != 0
    st_["lane_junk_ignored"] += bool(r.payload) and res > 0
    st_["first_lane"] += lane == 0 and res > 0
    st_["last_lane"] += lane == NLANES - 1 and res > 0
    return want


def _check_stage(h: CacheHarness, before: np.ndarray, pushed: dict[int, bytes]) -> None:
    """After a batch: the region of each lane whose FILL_PUSH succeeded holds exactly the bytes
    it read, then the poison; every other lane's region and every guard byte is unchanged."""
    final = h.stage.copy()
    for lane in range(NLANES):
        want = pushed.get(lane, b"")
        got, was = final[lane], before[lane]
        k = len(want)
        if got[:k].tobytes() != want:
            bad = int(np.flatnonzero(got[:k] != np.frombuffer(want, dtype=np.uint8))[0])
            raise AssertionError(f"lane {lane}'s stage byte {bad} is {got[bad]:#04x}, the push read "
                                 f"{want[bad]:#04x} (of {k} bytes)")
        if not np.array_equal(got[k:], was[k:]):
            bad = k + int(np.flatnonzero(got[k:] != was[k:])[0])
            raise AssertionError(f"lane {lane}'s stage byte {bad} changed ({was[bad]:#04x} -> {got[bad]:#04x}); "
                                 f"{'its push read ' + str(k) + ' bytes' if lane in pushed else 'no push of this batch succeeded on it'}")
        h.push_stats["bytes_exact"] += k
        h.push_stats["bytes_untouched"] += DATA - k
    h.check_guards()


def _lookup_expect(r: Req, a: Answer) -> None:
    res = a.result
    assert _sane(res), f"LOOKUP answered {res}: {r}"
    if r.data_len == 0:
        assert res == -errno.EINVAL, f"empty path answered {res}: {r}"
    elif r.data_len > abi.PATH_MAX:
        assert res == -errno.ENAMETOOLONG, f"data_len {r.data_len} answered {res}: {r}"
    elif b"\0" not in r.payload[:r.data_len]:
        assert res == -errno.ENAMETOOLONG, f"unterminated path answered {res}: {r}"
    elif not r.payload.startswith(b"/"):
        assert res == -errno.EINVAL, f"relative path answered {res}: {r}"


# ---------------------------------------------------------------- one test per rule
@pytest.mark.parametrize("length", [DATA + 1, 2 * DATA, 2**32, 2**63, 2**64 - 1])
def test_fill_longer_than_the_lane_is_einval(ch: CacheHarness, length: int) -> None:
    a = ch.fill(ch.model.ref_no, 0, length)
    assert a.result == -errno.EINVAL and a.data == bytes([JUNK]) * DATA


@pytest.mark.parametrize("offset,length", [(2**63, 0), (2**63, 1), (MAX_OFFSET, 1), (MAX_OFFSET - 10, 11),
                                           (2**64 - DATA, DATA), (2**64 - 1, 1)])
def test_fill_past_max_offset_is_einval(ch: CacheHarness, offset: int, length: int) -> None:
    assert ch.fill(ch.model.ref_no, offset, length).result == -errno.EINVAL


@pytest.mark.parametrize("file_no", HUGE_NOS + [12345])
def test_fill_of_unknown_version_is_estale(ch: CacheHarness, file_no: int) -> None:
    assert ch.fill(file_no, 0, 16).result == -errno.ESTALE


def test_fill_reads_the_version_and_stops_at_its_end(ch: CacheHarness) -> None:
    ref = REF.tobytes()
    for off, n in [(0, DATA), (5, 100), (len(ref) - 10, DATA), (len(ref), 10), (len(ref) + 99, DATA), (2**62, 1),
                   (7, 0)]:
        a = ch.fill(ch.model.ref_no, off, n)
        want = ref[off:off + n]
        assert a.result == len(want) and a.data[:len(want)] == want, (off, n, a.result)
        assert a.data[len(want):] == bytes([JUNK]) * (DATA - len(want))


def test_changed_file_gets_a_new_version_and_the_old_is_estale(ch: CacheHarness) -> None:
    m = ch.model
    old = m.current[1]
    assert ch.lookup("/cache/f1").result == old        # unchanged: the same version
    ch.rewrite(1)
    assert ch.fill(old, 0, 10).result == -errno.ESTALE  # changed since: refused (and retired)
    a = ch.lookup("/cache/f1")
    assert a.result > old
    ch.learn_lookup(a, "/cache/f1")
    assert ch.fill(old, 0, 10).result == -errno.ESTALE  # retired for good
    new = _content(1, m.gen[1])
    b = ch.fill(a.result, 0, DATA)
    assert b.result == min(len(new), DATA) and b.data[:b.result] == new[:DATA]


@pytest.mark.parametrize("path,err", [("/", errno.EISDIR), ("/sub", errno.EISDIR), ("/dir_link", errno.EISDIR),
                                      ("/nothing", errno.ENOENT), ("/loop", errno.ELOOP), ("/../outside.txt", errno.EACCES),
                                      ("/rel_out", errno.EACCES), ("/abs_out", errno.EACCES),
                                      ("/dir_out/victim.txt", errno.EACCES), ("/sneaky", errno.EACCES),
                                      ("/sub/upabs/outside.txt", errno.EACCES), ("a.bin", errno.EINVAL)])
def test_lookup_refuses(ch: CacheHarness, sandbox: Sandbox, path: str, err: int) -> None:
    assert ch.lookup(path).result == -err
    sandbox.check_content()


def test_lookup_follows_links_inside(ch: CacheHarness) -> None:
    a, b = ch.lookup("/a.bin"), ch.lookup("/in_link")
    assert a.result >= 1 and a.result == b.result and a.aux[0] == 100   # one file, one version
    ch.learn_lookup(a, "/a.bin")


def test_push_without_a_stage_is_enosys(sandbox: Sandbox) -> None:
    h = CacheHarness(sandbox.root, stage=False)
    try:
        f = h.lookup("/keep/ref.bin").result
        assert f >= 1
        # whatever it asks, even what would be EINVAL or ESTALE: nothing read, nothing copied
        for file_no, offset, length in [(f, 0, DATA), (f, 0, 0), (f, 0, DATA + 1), (f, 2**63, 1), (12345, 0, 16)]:
            assert h.push(file_no, offset, length, lane=NLANES - 1).result == -errno.ENOSYS
        assert h.fill(f, 0, 16).result == 16     # FILL does not need a stage
    finally:
        h.close()


@pytest.mark.parametrize("length", [DATA + 1, 2 * DATA, 2**32, 2**63, 2**64 - 1])
@pytest.mark.parametrize("lane", [0, NLANES - 1])
def test_push_longer_than_the_lane_is_einval(ch: CacheHarness, length: int, lane: int) -> None:
    a = ch.push(ch.model.ref_no, 0, length, lane=lane)   # the oracle: lane and stage unchanged
    assert a.result == -errno.EINVAL and a.data == bytes([JUNK]) * DATA


@pytest.mark.parametrize("offset,length", [(2**63, 0), (2**63, 1), (MAX_OFFSET, 1), (MAX_OFFSET - 10, 11),
                                           (2**64 - DATA, DATA), (2**64 - 1, 1)])
def test_push_past_max_offset_is_einval(ch: CacheHarness, offset: int, length: int) -> None:
    assert ch.push(ch.model.ref_no, offset, length, lane=9).result == -errno.EINVAL


@pytest.mark.parametrize("file_no", HUGE_NOS + [12345])
def test_push_of_unknown_version_is_estale(ch: CacheHarness, file_no: int) -> None:
    assert ch.push(file_no, 0, DATA, lane=NLANES - 1).result == -errno.ESTALE


def test_push_of_a_changed_file_is_estale(ch: CacheHarness) -> None:
    m = ch.model
    old = m.current[2]
    ch.rewrite(2)
    assert ch.push(old, 0, DATA, lane=4).result == -errno.ESTALE   # changed since: refused, nothing copied
    a = ch.lookup("/cache/f2")
    ch.learn_lookup(a, "/cache/f2")
    assert ch.push(old, 0, DATA, lane=4).result == -errno.ESTALE   # retired for good
    new = _content(2, m.gen[2])
    b = ch.push(a.result, 0, DATA, lane=4)
    assert b.result == min(len(new), DATA) and ch.stage[4, :b.result].tobytes() == new[:DATA]


@pytest.mark.parametrize("offset,length", [
    (0, DATA),                        # a whole lane
    (5, 100),
    (DATA, DATA),
    (1, DATA - 1),
    (3 * DATA, DATA),                 # short: the last 123 bytes of the file
    (REF.size - 10, DATA),            # short: 10 bytes
    (REF.size - 1, 1),
    (REF.size, 10),                   # at EOF: 0, nothing copied
    (REF.size + 99, DATA),            # past EOF
    (2**62, 1),
    (MAX_OFFSET - DATA, DATA),        # the last range allowed: past EOF
    (7, 0),                           # nothing at all
])
@pytest.mark.parametrize("lane", [0, 37, NLANES - 1])
def test_push_copies_the_read_into_the_lanes_stage(ch: CacheHarness, offset: int, length: int, lane: int) -> None:
    seed = offset % 1000 + length + lane
    a = ch.push(ch.model.ref_no, offset, length, lane=lane, seed=seed)   # checked by the oracle
    want = REF.tobytes()[offset:offset + length]
    # and again, by hand: the lane and its stage region hold the bytes, the rest as poisoned
    before = np.random.default_rng(seed).integers(0, 256, (NLANES, DATA), dtype=np.uint8)
    assert a.result == len(want) and a.data[:len(want)] == want
    assert ch.stage[lane, :len(want)].tobytes() == want
    assert np.array_equal(ch.stage[lane, len(want):], before[lane, len(want):])
    others = [i for i in range(NLANES) if i != lane]
    assert np.array_equal(ch.stage[others], before[others])
    ch.check_guards()


@pytest.mark.parametrize("data_len", [1, 4, 8, 4 * 8, 255, DATA, DATA + 1, 2**31, 2**32 - 1])
@pytest.mark.parametrize("offset", [100, REF.size - 10])
def test_push_ignores_data_len_and_the_lanes_old_bytes(ch: CacheHarness, data_len: int, offset: int) -> None:
    ref = ch.model.ref_no
    base = ch.push(ref, offset, DATA, lane=3, seed=1)
    stage0 = ch.stage.copy()
    slots = np.arange(8, dtype="<u4").tobytes()   # what the lane held under the old slot-list rules
    for payload in (b"", slots, np.random.default_rng(data_len).integers(0, 256, 200, dtype=np.uint8).tobytes()):
        a = ch.push(ref, offset, DATA, data_len=data_len, payload=payload, lane=3, seed=1)   # the oracle checks the lane
        assert a.result == base.result > 0 and a.data[:a.result] == base.data[:a.result], (data_len, payload)
        assert np.array_equal(ch.stage, stage0), (data_len, payload)


def test_pushes_on_every_lane_land_in_their_own_regions(ch: CacheHarness) -> None:
    """A batch of NLANES pushes (lane k reads from another offset of ref.bin, some short, some
    empty, some past EOF): each lane's region holds its own bytes, the guards are intact."""
    before = ch.poison(5)
    m = ch.model
    reqs = [ch.push_req(m.ref_no if k % 4 else m.current[k % NCACHED], (k * 211) % (REF.size + 50),
                        DATA - (k * 67) % DATA) for k in range(NLANES)]
    lanes = list(range(NLANES))[::-1]   # request k on lane NLANES - 1 - k
    answers = ch.run(reqs, lanes=lanes)
    pushed = {}
    for lane, r, a in zip(lanes, reqs, answers):
        got = _push_expect(ch, r, a, lane, dict(m.live), ch.cache._next_no)
        assert got is not None, (lane, r, a.result)
        pushed[lane] = got
    assert sum(map(len, pushed.values())) > 0 and any(len(v) == 0 for v in pushed.values())
    _check_stage(ch, before, pushed)


def test_fill_and_failed_pushes_leave_the_stage_alone(ch: CacheHarness) -> None:
    before = ch.poison(6)
    m = ch.model
    reqs = [ch.fill_req(m.ref_no, 0, DATA), ch.push_req(m.ref_no, 0, DATA + 1), ch.push_req(12345, 0, DATA),
            ch.push_req(m.ref_no, 2**63, 1), ch.push_req(m.ref_no, REF.size, DATA), ch.lookup_req("/keep/ref.bin")]
    answers = ch.run(reqs, lanes=[0, 1, 2, 3, NLANES - 2, NLANES - 1])
    assert [a.result for a in answers] == [DATA, -errno.EINVAL, -errno.ESTALE, -errno.EINVAL, 0, m.ref_no]
    assert np.array_equal(ch.stage, before)
    ch.check_guards()


# ---------------------------------------------------------------- the fuzzer
FILE_REFS = st.one_of(
    st.tuples(st.just("current"), st.integers(0, NCACHED - 1)),
    st.tuples(st.just("current"), st.integers(0, NCACHED - 1)),
    st.tuples(st.just("ref"), st.just(0)),
    st.tuples(st.just("stale"), st.integers(0, 1000)),
    st.tuples(st.just("next"), st.integers(0, 3)),          # not handed out yet (maybe in this batch)
    st.tuples(st.just("raw"), st.one_of(st.sampled_from(HUGE_NOS), st.integers(0, 64), U64)),
)
FILL_SIZES = st.one_of(st.integers(0, DATA), st.integers(0, 300), SIZES)


@st.composite
def fill_req(draw: st.DrawFn) -> tuple[tuple[str, int], Req]:
    ref = draw(FILE_REFS)
    junk = draw(st.booleans())   # the words FILL does not use: zero (as the device sends), or anything
    r = Req(abi.Op.FILL, offset=draw(OFFSETS), length=draw(FILL_SIZES),
            flags=draw(U32) if junk else 0, fd=draw(I32) if junk else -1, data_len=draw(U32) if junk else 0,
            arg=(0, draw(U64) if junk else 0, draw(U64) if junk else 0, 0))
    return ref, r


@st.composite
def lookup_req(draw: st.DrawFn) -> tuple[tuple[str, int], Req]:
    r = Req(abi.Op.LOOKUP, flags=draw(st.one_of(st.just(0), U32)), fd=draw(st.one_of(st.just(-1), I32)),
            offset=draw(st.one_of(st.just(0), U64)), length=draw(st.one_of(st.just(0), U64)),
            **draw(path_fields()))  # type: ignore[arg-type]
    return ("none", 0), r


LANE_CHUNKS = REF.size // DATA + 1
# Offsets of a FILL_PUSH: anywhere (as FILL's), at a lane-size edge, or from the end of the
# version (("end", d): its size + d, ("end_lane", k): the start of its k-th lane-sized chunk
# from the last one).
PUSH_OFFSETS = st.one_of(
    OFFSETS.map(lambda o: ("abs", o)),
    st.integers(0, REF.size + 10).map(lambda o: ("abs", o)),
    st.integers(0, LANE_CHUNKS + 1).map(lambda k: ("abs", k * DATA)),
    st.tuples(st.just("end"), st.one_of(st.integers(-DATA - 16, 16), st.sampled_from([-DATA, -1, 0, 1]))),
    st.tuples(st.just("end_lane"), st.integers(0, 2)))
PUSH_LENGTHS = st.one_of(st.integers(0, DATA), st.integers(0, DATA),
                         st.sampled_from([0, 1, DATA - 1, DATA, DATA, DATA + 1]), SIZES)
PUSH_FILE_REFS = st.one_of(FILE_REFS, st.tuples(st.just("current"), st.integers(0, NCACHED - 1)),
                           st.tuples(st.just("ref"), st.just(0)))   # more of the pushes get as far as copying
# data_len: 0 as the device sends it, or anything (ignored); the lane: the harness's junk, or
# bytes left there (an old slot list, random): ignored, the read overwrites what it covers.
DATA_LENS = st.one_of(st.just(0), st.just(0),
                      st.sampled_from([1, 4, 8, 32, DATA - 1, DATA, DATA + 1, 2**31, 2**32 - 1]), U32)
LANE_LEFTOVERS = st.one_of(st.just(b""), st.just(b""), st.binary(min_size=1, max_size=64),
                           st.lists(U32, min_size=1, max_size=9).map(lambda s: np.asarray(s, dtype="<u4").tobytes()))


@st.composite
def push_req(draw: st.DrawFn) -> tuple[tuple, Req]:
    ref = draw(PUSH_FILE_REFS)
    junk = draw(st.booleans())   # the words FILL_PUSH does not use: zero (as the device sends), or anything
    off = draw(PUSH_OFFSETS)
    r = Req(abi.Op.FILL_PUSH, offset=off[1] if off[0] == "abs" else 0, length=draw(PUSH_LENGTHS),
            data_len=draw(DATA_LENS), payload=draw(LANE_LEFTOVERS),
            flags=draw(U32) if junk else 0, fd=draw(I32) if junk else -1,
            arg=(0, draw(U64) if junk else 0, draw(U64) if junk else 0, draw(U64) if junk else 0))
    if off[0] != "abs":
        ref = ref + off    # resolved against the version's size
    return ref, r


UNKNOWN_OPS = [0, max(abi.Op) + 1, 200, 255]
CACHE_REQUESTS = st.one_of(fill_req(), fill_req(), fill_req(), push_req(), push_req(), push_req(),
                           lookup_req(), lookup_req(),
                           st.builds(lambda op: (("none", 0), Req(op)), st.sampled_from(UNKNOWN_OPS)),
                           st.just((("raw", 0), Req(abi.Op.FILL_PUSH))))   # all zero: version 0


def _resolve(h: CacheHarness, ref: tuple, r: Req) -> Req:
    kind, k = ref[:2]
    m = h.model
    if kind == "none":
        return r
    if kind == "current":
        f = m.current[k]
    elif kind == "ref":
        f = m.ref_no
    elif kind == "stale":
        f = sorted(m.stale)[k % len(m.stale)] if m.stale else 0
    elif kind == "next":
        f = h.cache._next_no + k
    else:
        f = k
    r = replace(r, arg=(f,) + tuple(r.arg[1:]))  # type: ignore[arg-type]
    if len(ref) > 2:   # a FILL_PUSH's offset from the end of the version
        size = len(m.live[f]) if f in m.live else REF.size
        edge, d = ref[2:]
        off = size + d if edge == "end" else (size // DATA - d) * DATA
        r = replace(r, offset=max(0, off))
    return r


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=st.lists(CACHE_REQUESTS, min_size=30, max_size=NLANES - 14),
       reads=st.lists(st.tuples(st.integers(0, REF.size + 50), st.integers(0, DATA)), min_size=1, max_size=4),
       pushes=st.lists(st.tuples(st.integers(-1, NCACHED - 1), st.integers(0, LANE_CHUNKS)), min_size=1, max_size=2),
       rewrite=st.one_of(st.none(), st.none(), st.integers(0, NCACHED - 1)),
       shuffle_seed=st.integers(0, 2**32 - 1))
def _fuzz_cache_batch(h: CacheHarness, sandbox: Sandbox, batch: list[tuple[tuple, Req]],
                      reads: list[tuple[int, int]], pushes: list[tuple[int, int]], rewrite: int | None,
                      shuffle_seed: int) -> None:
    sandbox.begin()
    m = h.model
    if rewrite is not None:
        h.rewrite(rewrite)
    live0, next_no0 = dict(m.live), h.cache._next_no
    rnd = random.Random(shuffle_seed)
    before = h.poison(shuffle_seed)
    fuzz = [_resolve(h, ref, r if r.opcode == abi.Op.FILL_PUSH else _fill(r, sandbox.sandbox, sandbox.root))
            for ref, r in batch]
    # Valid requests, as the device sends them: the cached files looked up again, FILLs of
    # ref.bin's version and of each cached file's newest version (-ESTALE if just rewritten),
    # and FILL_PUSHes of a lane's worth of them at a lane-aligned offset.
    valid = [h.lookup_req(f"/cache/f{i}") for i in range(NCACHED)] + [h.lookup_req("/keep/ref.bin")]
    valid += [h.fill_req(m.ref_no, off, n) for off, n in reads]
    valid += [h.fill_req(m.current[i], 0, DATA) for i in range(NCACHED)]
    valid += [h.push_req(m.ref_no if i < 0 else m.current[i], k * DATA, DATA) for i, k in pushes]
    tagged = [(r, False) for r in fuzz] + [(r, True) for r in valid]
    rnd.shuffle(tagged)
    lanes = rnd.sample(range(NLANES), len(tagged))   # a random subset: the others idle, their stage checked too
    answers = h.run([r for r, _ in tagged], lanes=lanes)
    # LOOKUPs first (they teach the model the versions handed out in this batch), then FILLs.
    for (r, is_valid), a in zip(tagged, answers):
        if r.opcode == abi.Op.LOOKUP:
            _lookup_expect(r, a)
            if a.result >= 0:
                h.learn_lookup(a, r.payload[:80])
            if is_valid:
                assert a.result >= 1, f"valid LOOKUP {r.payload!r} answered {a.result}"
                if r.payload == b"/keep/ref.bin\0":
                    assert a.result == m.ref_no, "ref.bin (unchanged) got a new version"
                else:
                    i = int(r.payload[len(b"/cache/f"):-1])
                    if m.current[i] in m.live:
                        assert a.result == m.current[i], f"/cache/f{i} (unchanged) got a new version"
                    else:
                        assert a.result >= next_no0, f"/cache/f{i} (rewritten) kept version {a.result}"
        elif r.opcode not in h.registered:
            assert a.result == -errno.ENOSYS, f"unknown opcode answered {a.result}: {r}"
    pushed: dict[int, bytes] = {}
    for (r, is_valid), lane, a in zip(tagged, lanes, answers):
        if r.opcode == abi.Op.FILL:
            _fill_expect(h, r, a, live0, next_no0)
        elif r.opcode == abi.Op.FILL_PUSH:
            got = _push_expect(h, r, a, lane, live0, next_no0)
            if got is not None:
                pushed[lane] = got
            if is_valid:
                assert a.result >= 0 or (r.arg[0] != m.ref_no and a.result == -errno.ESTALE), \
                    f"valid FILL_PUSH answered {a.result}: {r}"
    _check_stage(h, before, pushed)
    # The registry agrees with the model: every live version known, none of the stale ones
    # left (the valid LOOKUPs retired the versions of a rewritten file), one per file.
    registry = set(h.cache.all_versions())
    assert registry <= set(m.live), f"live versions the model does not know: {registry - set(m.live)}"
    assert not registry & m.stale, f"stale versions still live: {registry & m.stale}"
    for i in range(NCACHED):
        st_ = os.stat(os.path.join(h.root, "cache", f"f{i}"))
        mine = [f for f in registry if m.inode_of[f] == (st_.st_dev, st_.st_ino)]
        assert len(mine) == 1, f"/cache/f{i} has live versions {mine}"
        m.current[i] = mine[0]
    sandbox.check_untouched()


@pytest.mark.parametrize("fills", ["as shipped", "batched"])
def test_fuzz_cache(ch: CacheHarness, sandbox: Sandbox, record_property: pytest.RecordProperty,
                    monkeypatch: pytest.MonkeyPatch, fills: str) -> None:
    """EXAMPLES batches of fuzzed LOOKUP/FILL/FILL_PUSH requests (deterministic: derandomized, no database).
    "batched": no fill counts as tiny (the lanes here are 4 KiB, below FILL_INLINE_TINY), so a
    sweep's FILLs go to CacheFiles.fill_batch and the native readers together."""
    started: list[int] = []
    if fills == "batched":
        if not ch.cache.native:
            pytest.skip("no native readers here: no batches")
        monkeypatch.setattr(cache_module, "FILL_INLINE_TINY", 0)
        batch = ch.server._batched[abi.Op.FILL]

        def counted(reqs: list[tuple[int, int]]) -> list[int]:
            out = batch(reqs)
            started.append(len(out))
            return out
        ch.server._batched[abi.Op.FILL] = counted
    t0 = time.perf_counter()
    _fuzz_cache_batch(ch, sandbox)
    if fills == "batched":
        assert sum(started) > 0, "no fill was started in a batch"
        assert ch.delegated >= sum(started), "fills taken in batches were not counted as answered by their readers"
        print(f"fuzz cache, batched: {sum(started)} fills started in {len(started)} batches, "
              f"{ch.delegated} answered by their readers")
    record_property("requests", ch.sent)
    print(f"fuzz cache: {ch.sent} requests in {EXAMPLES} batches, {time.perf_counter() - t0:.1f} s; outcomes: "
          + ", ".join(f"{op}:{res}={n}" for (op, res), n in sorted(ch.outcomes.items()))
          + "; FILL_PUSH: " + ", ".join(f"{k}={n}" for k, n in sorted(ch.push_stats.items())))
    assert ch.sent >= EXAMPLES * 30, f"only {ch.sent} requests were sent"
    assert dict(ch.answers) and max(ch.answers.values()) == 1, "a request was answered twice"
    for op in ("FILL", "FILL_PUSH", "LOOKUP"):   # the fuzzer reached both the errors and the successes
        assert ch.outcomes[(op, "ok")] > 0, ch.outcomes
    for op in ("FILL", "FILL_PUSH"):
        for res in ("EINVAL", "ESTALE"):
            assert ch.outcomes[(op, res)] > 0, ch.outcomes
    for what in ("full_lane", "short_read", "past_eof", "zero_length", "data_len_ignored", "lane_junk_ignored",
                 "first_lane", "last_lane", "bytes_exact",                                          # successes
                 "refused_length", "refused_offset", "refused_version", "refused_with_data_len"):   # errors
        assert ch.push_stats[what] > 0, ch.push_stats
    for res in ("EACCES", "ENAMETOOLONG", "EINVAL"):
        assert ch.outcomes[("LOOKUP", res)] > 0, ch.outcomes
    sandbox.check_content()
