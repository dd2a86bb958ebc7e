"""Fuzzing the page cache's opcodes on the hostcall server: LOOKUP (13), FILL (12) and
FILL_PUSH (14).

The same setup as tests/test_fuzz_server.py (its Harness, Sandbox and request strategies:
lanes written straight from Python, one `Server.sweep()` per batch, the test is the poller),
with gpuvfs.hostcall.cache.CacheFiles registered on the server and a pool of NSLOTS page
slots of PAGE bytes attached (`attach_pool`; the cpu backend's device memory is host memory:
`device_zeros`, GUARD bytes of a fixed pattern on either side of the attached part).
Batches mix malformed and random requests with valid ones:
  LOOKUP     every path shape of the server fuzzer (escapes through `..` and symlinks,
             directories, unterminated, over-long, relative, empty), random flags/fd words;
  FILL       file_no live, retired (its file changed since), never handed out, 0, 2^24 (past
             the key's file bits), 2^63, 2^64 - 1 and random; offsets and lengths at the edges
             (lengths past the lane's 4096 bytes, offsets near 2^63 and 2^64, huge and random);
  FILL_PUSH  the same file_nos, offsets and lengths, plus offsets and lengths at page and file
             edges (page-aligned or not, from the end of the version); the lane's data holds
             the slot list (u32 each) as the device writes it: valid lists (random slots, so
             often repeated, all one slot, consecutive runs that the host copies in one piece,
             wrapping past the last slot) and malformed ones (one slot >= NSLOTS up to 2^32 - 1,
             data_len off by a byte or a slot, 0 or random, a list shorter than data_len so the
             rest is the lane's junk, random bytes); random values in the unused words.
  Each batch also carries one or two FILL_PUSHes as the device sends them (page-aligned, of
  ref.bin's version and of a cached file's newest, into slots no other of them names).
Between batches a cached file may be rewritten (its versions go stale: FILL and FILL_PUSH
answer -ESTALE, LOOKUP hands out a new version).

Checked for every request: answered exactly once, with a result >= 0 or a negative errno;
FILL: -EINVAL for a length past the lane or an offset past 2^63 - 1, -ESTALE for a version
that is not live, else exactly the version's bytes (and nothing written past them in the
lane); FILL_PUSH: -EINVAL for a length past the lane, an offset past 2^63 - 1, data_len not
4 x ceil(length / PAGE) or a slot >= NSLOTS (even one for a page past the end of the file;
all before the version is looked at), -ESTALE for a version that is not live, and on any
error the lane's data left as the device wrote it; else the count of the version's bytes in
the range (short at the end of the file), those bytes in the lane (the slot list and junk
after them untouched) and page i of them in slot slots[i]. The pool is poisoned before every batch;
after it, every byte that some successful FILL_PUSH wrote holds what one of them wrote there
(within one request the last page named for a slot wins; where only one request wrote a
byte, exactly its byte), and every other byte -- unnamed slots, the bytes past a short last
page, the slots of pages past the end of the file, of failed requests -- and every guard
byte is unchanged. LOOKUP: the validation errnos of a path, and a version handed out for a
path names a regular file INSIDE the root (its inode is one of the root's), with its size and
mode, the same version while the file is unchanged. Nothing outside the root is created,
modified or even read (the sandbox's snapshot, atime included, after every batch; contents
at the end).

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
from gpuvfs.hostcall.files import MAX_OFFSET
from gpuvfs.hostcall.paths import Confined

from test_fuzz_server import (DATA, I32, JUNK, NLANES, OFFSETS, PHASES, REF, SIZES, U32, U64,
                              Answer, Harness, Req, Sandbox, _fill, _sane, path_fields)

EXAMPLES = int(os.environ.get("GPUVFS_FUZZ_CACHE_EXAMPLES", "300"))
NCACHED = 3                      # /cache/f0 .. f2: files the fuzzer's valid requests read, rewritten now and then
HUGE_NOS = [0, MAX_FILE_NO, MAX_FILE_NO + 1, 1 << 24, 2**31, 2**32, 2**40, 2**63, 2**64 - 2, 2**64 - 1]
PAGE = 512                       # the pool's page (slot) size: a power of two, DATA // PAGE pages fit a lane
NSLOTS = 16                      # slots in the pool: two pushes of a full lane fit side by side
POOL = NSLOTS * PAGE
GUARD = 256                      # bytes of device memory either side of the pool, never to change
GUARD_BYTES = np.random.default_rng(99).integers(0, 256, 2 * GUARD, dtype=np.uint8)
JUNK_WORD = int.from_bytes(bytes([JUNK]) * 4, "little")   # a slot read from the lane's junk


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
    def __init__(self, root: str, pool: bool = True) -> None:
        super().__init__(root)
        self.root = os.path.realpath(root)
        self.cache = CacheFiles(self.server, Confined(root))
        self.registered = frozenset(self.server._routes)
        self.model = Model()
        # The device's pool of slots, with guard bytes either side of the part attached.
        self.mem, ptr = self.backend.device_zeros(GUARD + POOL + GUARD)
        self.mem[:GUARD], self.mem[GUARD + POOL:] = GUARD_BYTES[:GUARD], GUARD_BYTES[GUARD:]
        self.pool = self.mem[GUARD:GUARD + POOL]
        self.has_pool = pool
        if pool:
            self.cache.attach_pool(self.backend, ptr + GUARD, NSLOTS, PAGE)
        self.push_stats: Counter[str] = Counter()   # what the FILL_PUSH checks saw: coverage

    def poison(self, seed: int) -> np.ndarray:
        """Fills the pool with random bytes (as stale pages would leave it); returns a copy."""
        self.pool[:] = np.random.default_rng(seed).integers(0, 256, POOL, dtype=np.uint8)
        return self.pool.copy()

    def check_guards(self) -> None:
        assert np.array_equal(self.mem[:GUARD], GUARD_BYTES[:GUARD]), \
            f"FILL_PUSH wrote before the pool: {np.flatnonzero(self.mem[:GUARD] != GUARD_BYTES[:GUARD]) - GUARD}"
        assert np.array_equal(self.mem[GUARD + POOL:], GUARD_BYTES[GUARD:]), \
            f"FILL_PUSH wrote past the pool: {np.flatnonzero(self.mem[GUARD + POOL:] != GUARD_BYTES[GUARD:]) + POOL}"

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
    def push_req(file_no: int, offset: int, length: int, slots: list[int] | None = None,
                 data_len: int | None = None) -> Req:
        """FILL_PUSH as the device sends it: the slot list (default 0, 1, 2, ...) in the lane."""
        if slots is None:
            slots = list(range(-(-length // PAGE)))
        p = np.asarray(slots, dtype="<u4").tobytes()
        return Req(abi.Op.FILL_PUSH, offset=offset, length=length, data_len=len(p) if data_len is None else data_len,
                   arg=(file_no, 0, 0, 0), payload=p)

    def push(self, file_no: int, offset: int, length: int, slots: list[int] | None = None,
             data_len: int | None = None, seed: int = 0) -> Answer:
        """One FILL_PUSH on a freshly poisoned pool, checked by the oracle (lane, pool, guards)."""
        before = self.poison(seed)
        r = self.push_req(file_no, offset, length, slots, data_len)
        a = self.run([r])[0]
        writes = _push_expect(self, r, a, dict(self.model.live), self.cache._next_no)
        _check_pool(self, before, [(r, writes)] if writes else [])
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
    """The lane's data as the harness wrote it: the payload (the slot list), then junk."""
    p = r.payload[:DATA]
    return p + bytes([JUNK]) * (DATA - len(p))


Writes = list[tuple[int, bytes]]   # (slot, bytes) a FILL_PUSH copied into the pool, in its order


def _push_expect(h: CacheHarness, r: Req, a: Answer, live0: dict[int, bytes], next_no0: int) -> Writes:
    """The oracle for one FILL_PUSH, given the live versions and the next file_no at batch
    start; returns the copies into the pool that it made (by the rules, not by the server)."""
    f, off, n, res = r.arg[0], r.offset, r.length, a.result
    assert _sane(res), f"FILL_PUSH answered {res}: {r}"
    lane = _lane_before(r)
    npages = -(-n // PAGE)
    slots = np.frombuffer(lane[:4 * npages], dtype="<u4").tolist() if npages <= DATA // PAGE + 1 else []
    data: bytes | None = None
    if not h.has_pool:
        err, why, rule = errno.ENOSYS, "with no pool attached", "no_pool"
    elif n > DATA:
        err, why, rule = errno.EINVAL, "longer than the lane", "length"
    elif off > MAX_OFFSET or off + n > MAX_OFFSET:
        err, why, rule = errno.EINVAL, "past 2^63 - 1", "offset"
    elif r.data_len != 4 * npages:
        err, why, rule = errno.EINVAL, f"with data_len {r.data_len} for {npages} pages", "data_len"
    elif any(s >= NSLOTS for s in slots):
        err, why, rule = errno.EINVAL, f"into slot {max(slots)} of {NSLOTS}", "slot"
    elif f in live0:
        data = live0[f]
    elif f >= next_no0 and f in h.model.live and res != -errno.ESTALE:   # handed out in this very batch
        data = h.model.live[f]
    else:
        err, why, rule = errno.ESTALE, "of a version that is not live", "version"
    if data is None:
        assert res == -err, f"FILL_PUSH {why} answered {res}, want -{errno.errorcode[err]}: {r}"
        h.push_stats["refused_" + rule] += 1
        assert a.data == lane, f"FILL_PUSH answered {res} but changed the lane's data: {r}"
        return []
    want = data[off:off + n]
    assert res == len(want), f"FILL_PUSH of version {f} answered {res}, want {len(want)}: {r}"
    assert a.data[:res] == want, f"FILL_PUSH of version {f}: wrong bytes in the lane: {r}"
    assert a.data[res:] == lane[res:], f"FILL_PUSH answered {res} but wrote past it in the lane: {r}"
    writes = [(slots[i], want[i * PAGE:(i + 1) * PAGE]) for i in range(-(-res // PAGE))]
    st_ = h.push_stats
    st_["ok"] += 1
    st_["pages"] += len(writes)
    st_["several_pages"] += len(writes) > 1
    st_["short_page"] += bool(res % PAGE)
    st_["past_eof"] += res < n
    st_["repeated_slot"] += len({s for s, _ in writes}) < len(writes)
    st_["run"] += any(b == a_ + 1 for a_, b in zip(slots[:len(writes)], slots[1:len(writes)]))
    return writes


def _check_pool(h: CacheHarness, before: np.ndarray, pushes: list[tuple[Req, Writes]]) -> None:
    """After a batch: every byte of the pool that some successful FILL_PUSH wrote holds the
    byte one of them wrote (each request's own last write; the requests ran side by side, so
    any of them may be last), every other byte is as poisoned; the guards are unchanged."""
    final = h.pool.copy()
    covered = np.zeros(POOL, dtype=np.int32)
    ok = np.zeros(POOL, dtype=bool)
    images = []
    for _r, writes in pushes:
        img, mask = np.zeros(POOL, dtype=np.uint8), np.zeros(POOL, dtype=bool)
        for slot, page in writes:          # in the request's order: the last page for a slot wins
            img[slot * PAGE:slot * PAGE + len(page)] = np.frombuffer(page, dtype=np.uint8)
            mask[slot * PAGE:slot * PAGE + len(page)] = True
        covered += mask
        ok |= mask & (final == img)
        images.append((img, mask))
    ok |= (covered == 0) & (final == before)
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        who = [f"{r} wrote {img[i]:#04x}" for (r, _), (img, mask) in zip(pushes, images) if mask[i]]
        raise AssertionError(f"pool byte {i} (slot {i // PAGE}, byte {i % PAGE}) is {final[i]:#04x}, poisoned "
                             f"{before[i]:#04x}; {len(bad)} bytes wrong; writers: {who or 'none'}")
    h.push_stats["bytes_exact"] += int((covered == 1).sum())
    h.push_stats["bytes_untouched"] += int((covered == 0).sum())
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


def test_push_without_a_pool_is_enosys(sandbox: Sandbox) -> None:
    h = CacheHarness(sandbox.root, pool=False)
    try:
        f = h.lookup("/keep/ref.bin").result
        assert f >= 1
        assert h.push(f, 0, PAGE).result == -errno.ENOSYS
        assert h.push(f, 0, 0).result == -errno.ENOSYS
    finally:
        h.close()


@pytest.mark.parametrize("length,data_len", [(0, 4), (1, 0), (PAGE, 8), (PAGE + 1, 4), (PAGE + 1, 12), (DATA, 4),
                                             (DATA, 4 * (DATA // PAGE) - 1), (DATA, 4 * (DATA // PAGE) + 1),
                                             (DATA - 1, DATA), (1, 2**32 - 1), (2 * PAGE, 7)])
def test_push_data_len_not_4_per_page_is_einval(ch: CacheHarness, length: int, data_len: int) -> None:
    assert ch.push(ch.model.ref_no, 0, length, slots=list(range(DATA // PAGE)), data_len=data_len).result \
        == -errno.EINVAL


@pytest.mark.parametrize("bad", [NSLOTS, NSLOTS + 1, 2**31, JUNK_WORD, 2**32 - 1])
@pytest.mark.parametrize("where", [0, 3, DATA // PAGE - 1])
def test_push_slot_beyond_the_pool_is_einval(ch: CacheHarness, bad: int, where: int) -> None:
    slots = list(range(DATA // PAGE))
    slots[where] = bad
    assert ch.push(ch.model.ref_no, 0, DATA, slots).result == -errno.EINVAL
    # even a slot for a page past the end of the file (the file has 1 page here)
    assert ch.push(ch.model.ref_no, REF.size - 10, DATA, slots).result == -errno.EINVAL


def test_push_slot_list_shorter_than_data_len_reads_the_lanes_junk(ch: CacheHarness) -> None:
    # data_len says 3 slots, the lane holds 2 then junk: the third slot is 0xABABABAB
    assert ch.push(ch.model.ref_no, 0, 3 * PAGE, [0, 1], data_len=12).result == -errno.EINVAL


@pytest.mark.parametrize("offset,length", [(0, DATA + 1), (0, 2**63), (0, 2**64 - 1), (2**63, 0), (2**63, PAGE),
                                           (MAX_OFFSET, 1), (MAX_OFFSET - 10, 11), (2**64 - DATA, DATA),
                                           (2**64 - 1, 1)])
def test_push_past_the_lane_or_max_offset_is_einval(ch: CacheHarness, offset: int, length: int) -> None:
    npages = -(-length // PAGE)
    assert ch.push(ch.model.ref_no, offset, length, [0] * min(npages, DATA // PAGE + 1),
                   data_len=(4 * npages) & 0xFFFFFFFF).result == -errno.EINVAL


@pytest.mark.parametrize("file_no", HUGE_NOS + [12345])
def test_push_of_unknown_version_is_estale(ch: CacheHarness, file_no: int) -> None:
    assert ch.push(file_no, 0, 2 * PAGE, [3, 4]).result == -errno.ESTALE


@pytest.mark.parametrize("offset,length,slots", [
    (0, DATA, list(range(DATA // PAGE))),                       # one run: one copy
    (0, DATA, list(range(NSLOTS - DATA // PAGE, NSLOTS))),     # the run ends at the last slot
    (0, DATA, [15, 0, 1, 2, 9, 8, 7, 3]),                      # runs and breaks
    (PAGE, 3 * PAGE, [NSLOTS - 1, 0, 1]),                      # wraps: two pieces
    (5, 2 * PAGE + 7, [6, 2, 11]),                             # not page-aligned; three pages
    (REF.size - REF.size % PAGE, DATA, [4] + [5] * 7),         # short last (only) page, the rest past EOF
    (REF.size - PAGE - 1, 2 * PAGE, [9, 10]),                  # a page, then one byte short
    (REF.size - 3 * PAGE, DATA, [0, 1, 2, 3, 4, 5, 6, 7]),     # 3 pages of 8 there
    (REF.size, PAGE, [7]),                                     # at EOF: 0, nothing written
    (REF.size + 99, DATA, list(range(8))),                     # past EOF
    (2**62, 1, [2]),
    (7, 0, []),                                                # nothing at all
    (0, DATA, [3] * 8),                                        # all one slot: the last page wins
    (0, 3 * PAGE, [3, 4, 3]),                                  # the third page wins slot 3
    (REF.size - PAGE - 10, 2 * PAGE, [1, 1]),                  # a short last page over a full one
])
def test_push_copies_each_page_into_its_slot(ch: CacheHarness, offset: int, length: int, slots: list[int]) -> None:
    a = ch.push(ch.model.ref_no, offset, length, slots, seed=offset + length)   # checked by the oracle
    ref = REF.tobytes()
    assert a.result == len(ref[offset:offset + length])
    # and again, by hand, for the simple cases: each slot's page, the rest as poisoned
    if len(set(slots)) == len(slots):
        before = np.random.default_rng(offset + length).integers(0, 256, POOL, dtype=np.uint8)
        for i, s in enumerate(slots):
            page = np.frombuffer(ref[offset:offset + length][i * PAGE:(i + 1) * PAGE], dtype=np.uint8)
            want = np.concatenate([page, before[s * PAGE + len(page):(s + 1) * PAGE]])
            assert np.array_equal(ch.pool[s * PAGE:(s + 1) * PAGE], want), (i, s)
        rest = [s for s in range(NSLOTS) if s not in slots]
        for s in rest:
            assert np.array_equal(ch.pool[s * PAGE:(s + 1) * PAGE], before[s * PAGE:(s + 1) * PAGE]), s


def test_push_of_a_changed_file_is_estale(ch: CacheHarness) -> None:
    m = ch.model
    old = m.current[2]
    ch.rewrite(2)
    assert ch.push(old, 0, PAGE, [0]).result == -errno.ESTALE   # changed since: refused, nothing copied
    a = ch.lookup("/cache/f2")
    ch.learn_lookup(a, "/cache/f2")
    assert ch.push(old, 0, PAGE, [0]).result == -errno.ESTALE
    new = _content(2, m.gen[2])
    assert ch.push(a.result, 0, DATA, [8, 9, 10, 11, 12, 13, 14, 15]).result == min(len(new), DATA)


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


LANE_PAGES = DATA // PAGE
# Offsets of a FILL_PUSH: anywhere (as FILL's), at a page edge, or from the end of the version
# (("end", d): its size + d, ("end_page", k): the start of its k-th page from the last one).
PUSH_OFFSETS = st.one_of(
    OFFSETS.map(lambda o: ("abs", o)),
    st.integers(0, REF.size).map(lambda o: ("abs", o)),
    st.integers(0, 30).map(lambda k: ("abs", k * PAGE)),
    st.tuples(st.sampled_from(["end"]), st.one_of(st.integers(-DATA - PAGE, PAGE), st.sampled_from([-PAGE, -1, 0, 1]))),
    st.tuples(st.just("end_page"), st.integers(0, LANE_PAGES + 1)))
PUSH_LENGTHS = st.one_of(
    st.integers(0, DATA), st.integers(0, DATA),
    st.tuples(st.integers(0, LANE_PAGES + 1), st.sampled_from([-1, 0, 0, 1])).map(lambda t: max(0, t[0] * PAGE + t[1])),
    SIZES)
PUSH_FILE_REFS = st.one_of(FILE_REFS, st.tuples(st.just("current"), st.integers(0, NCACHED - 1)),
                           st.tuples(st.just("ref"), st.just(0)))   # more of the pushes get as far as copying
SLOT_NOS = st.one_of(st.integers(0, NSLOTS - 1), st.sampled_from([0, NSLOTS - 1]))
BAD_SLOTS = st.one_of(st.sampled_from([NSLOTS, NSLOTS + 1, 2**31 - 1, 2**31, JUNK_WORD, 2**32 - 1]), st.integers(NSLOTS, 2**32 - 1))
SLOT_MODES = ["random"] * 5 + ["run"] * 3 + ["same"] * 2 + ["bad_slot"] * 2 + ["data_len"] * 2 + ["short", "raw"]


@st.composite
def push_req(draw: st.DrawFn) -> tuple[tuple[str, int], Req]:
    """A FILL_PUSH with its slot list in the lane: most lists are valid, the others broken in one way."""
    ref = draw(PUSH_FILE_REFS)
    length = draw(PUSH_LENGTHS)
    npages = -(-length // PAGE)
    k = min(npages, LANE_PAGES + 1)      # the slots to write: past a lane's worth, EINVAL for the length anyway
    mode = draw(st.sampled_from(SLOT_MODES))
    if mode == "run":   # consecutive slots (one copy), wrapping past the last one, maybe broken once
        start = draw(st.integers(0, NSLOTS - 1))
        slots = [(start + i) % NSLOTS for i in range(k)]
        if k > 1 and draw(st.booleans()):
            slots[draw(st.integers(1, k - 1))] = draw(SLOT_NOS)
    elif mode == "same":
        slots = [draw(SLOT_NOS)] * k
    else:
        slots = draw(st.lists(SLOT_NOS, min_size=k, max_size=k))
    if mode == "bad_slot" and k:
        slots[draw(st.integers(0, k - 1))] = draw(BAD_SLOTS)
    payload = np.asarray(slots, dtype="<u4").tobytes()
    data_len = (4 * npages) & 0xFFFFFFFF
    if mode == "data_len":
        data_len = draw(st.one_of(st.sampled_from([data_len - 4, data_len + 4, data_len - 1, data_len + 1, data_len + 2,
                                                   0, 4, DATA, DATA + 4, 2**32 - 1]), U32)) & 0xFFFFFFFF
    elif mode == "short" and k:          # the rest of the list is the lane's junk
        payload = payload[:draw(st.integers(0, 4 * k - 1))]
    elif mode == "raw":
        payload = draw(st.binary(max_size=48))
        data_len = draw(st.one_of(st.integers(0, 48), U32))
    junk = draw(st.booleans())   # the words FILL_PUSH does not use: zero (as the device sends), or anything
    off = draw(PUSH_OFFSETS)
    r = Req(abi.Op.FILL_PUSH, offset=off[1] if off[0] == "abs" else 0, length=length, data_len=data_len,
            payload=payload, flags=draw(U32) if junk else 0, fd=draw(I32) if junk else -1,
            arg=(0, draw(U64) if junk else 0, draw(U64) if junk else 0, draw(U64) if junk else 0))
    if off[0] != "abs":
        ref = ref + off    # resolved against the version's size
    return ref, r


UNKNOWN_OPS = [0, max(abi.Op) + 1, 200, 255]
CACHE_REQUESTS = st.one_of(fill_req(), fill_req(), fill_req(), push_req(), push_req(), push_req(),
                           lookup_req(), lookup_req(),
                           st.builds(lambda op: (("none", 0), Req(op)), st.sampled_from(UNKNOWN_OPS)),
                           st.just((("raw", 0), Req(abi.Op.FILL_PUSH))))   # all zero: version 0, nothing to push


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
        off = size + d if edge == "end" else (size // PAGE - d) * PAGE
        r = replace(r, offset=max(0, off))
    return r


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=st.lists(CACHE_REQUESTS, min_size=30, max_size=NLANES - 14),
       reads=st.lists(st.tuples(st.integers(0, REF.size + 50), st.integers(0, DATA)), min_size=1, max_size=4),
       pushes=st.lists(st.tuples(st.integers(-1, NCACHED - 1), st.integers(0, REF.size // PAGE + 1),
                                 st.integers(1, LANE_PAGES)), min_size=1, max_size=2),
       rewrite=st.one_of(st.none(), st.none(), st.integers(0, NCACHED - 1)),
       shuffle_seed=st.integers(0, 2**32 - 1))
def _fuzz_cache_batch(h: CacheHarness, sandbox: Sandbox, batch: list[tuple[tuple, Req]],
                      reads: list[tuple[int, int]], pushes: list[tuple[int, int, int]], rewrite: int | None,
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
    # and page-aligned FILL_PUSHes of them into slots no other of these names.
    valid = [h.lookup_req(f"/cache/f{i}") for i in range(NCACHED)] + [h.lookup_req("/keep/ref.bin")]
    valid += [h.fill_req(m.ref_no, off, n) for off, n in reads]
    valid += [h.fill_req(m.current[i], 0, DATA) for i in range(NCACHED)]
    free = rnd.sample(range(NSLOTS), NSLOTS)
    for i, page, npages in pushes:
        slots, free = free[:npages], free[npages:]
        valid.append(h.push_req(m.ref_no if i < 0 else m.current[i], page * PAGE, npages * PAGE, slots))
    tagged = [(r, False) for r in fuzz] + [(r, True) for r in valid]
    rnd.shuffle(tagged)
    answers = h.run([r for r, _ in tagged])
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
    pushed: list[tuple[Req, Writes]] = []
    for (r, is_valid), a in zip(tagged, answers):
        if r.opcode == abi.Op.FILL:
            _fill_expect(h, r, a, live0, next_no0)
        elif r.opcode == abi.Op.FILL_PUSH:
            writes = _push_expect(h, r, a, live0, next_no0)
            if writes:
                pushed.append((r, writes))
            if is_valid:
                assert a.result >= 0 or (r.arg[0] != m.ref_no and a.result == -errno.ESTALE), \
                    f"valid FILL_PUSH answered {a.result}: {r}"
    _check_pool(h, before, pushed)
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


def test_fuzz_cache(ch: CacheHarness, sandbox: Sandbox, record_property: pytest.RecordProperty) -> None:
    """EXAMPLES batches of fuzzed LOOKUP/FILL/FILL_PUSH requests (deterministic: derandomized, no database)."""
    t0 = time.perf_counter()
    _fuzz_cache_batch(ch, sandbox)
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
    for what in ("several_pages", "short_page", "past_eof", "repeated_slot", "run", "bytes_exact",   # successes
                 "refused_length", "refused_offset", "refused_data_len", "refused_slot", "refused_version"):
        assert ch.push_stats[what] > 0, ch.push_stats
    for res in ("EACCES", "ENAMETOOLONG", "EINVAL"):
        assert ch.outcomes[("LOOKUP", res)] > 0, ch.outcomes
    sandbox.check_content()
