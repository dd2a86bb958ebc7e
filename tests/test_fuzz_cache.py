"""Fuzzing the page cache's opcodes on the hostcall server: LOOKUP (13) and FILL (12).

The same setup as tests/test_fuzz_server.py (its Harness, Sandbox and request strategies:
lanes written straight from Python, one `Server.sweep()` per batch, the test is the poller),
with gpuvfs.hostcall.cache.CacheFiles registered on the server. Batches mix malformed and
random requests with valid ones:
  LOOKUP  every path shape of the server fuzzer (escapes through `..` and symlinks,
          directories, unterminated, over-long, relative, empty), random flags/fd words;
  FILL    file_no live, retired (its file changed since), never handed out, 0, 2^24 (past the
          key's file bits), 2^63, 2^64 - 1 and random; offsets and lengths at the edges
          (lengths past the lane's 4096 bytes, offsets near 2^63 and 2^64, huge and random).
Between batches a cached file may be rewritten (its versions go stale: FILL answers -ESTALE,
LOOKUP hands out a new version).

Checked for every request: answered exactly once, with a result >= 0 or a negative errno;
FILL: -EINVAL for a length past the lane or an offset past 2^63 - 1, -ESTALE for a version
that is not live, else exactly the version's bytes (and nothing written past them in the
lane); LOOKUP: the validation errnos of a path, and a version handed out for a path names a
regular file INSIDE the root (its inode is one of the root's), with its size and mode, the
same version while the file is unchanged. Nothing outside the root is created, modified or
even read (the sandbox's snapshot, atime included, after every batch; contents at the end).

`GPUVFS_FUZZ_CACHE_EXAMPLES` sets the number of batches (default 300, under 10 s on 2 cores).
"""
from __future__ import annotations

import errno
import os
import random
import stat
import time
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
    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.root = os.path.realpath(root)
        self.cache = CacheFiles(self.server, Confined(root))
        self.registered = frozenset(self.server._routes)
        self.model = Model()

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


CACHE_REQUESTS = st.one_of(fill_req(), fill_req(), fill_req(), lookup_req(), lookup_req(),
                           st.builds(lambda op: (("none", 0), Req(op)),
                                     st.sampled_from([0, 14, 15, 255])))   # unknown opcodes


def _resolve(h: CacheHarness, ref: tuple[str, int], r: Req) -> Req:
    kind, k = ref
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
    return replace(r, arg=(f,) + tuple(r.arg[1:]))  # type: ignore[arg-type]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=st.lists(CACHE_REQUESTS, min_size=30, max_size=NLANES - 12),
       reads=st.lists(st.tuples(st.integers(0, REF.size + 50), st.integers(0, DATA)), min_size=1, max_size=4),
       rewrite=st.one_of(st.none(), st.none(), st.integers(0, NCACHED - 1)),
       shuffle_seed=st.integers(0, 2**32 - 1))
def _fuzz_cache_batch(h: CacheHarness, sandbox: Sandbox, batch: list[tuple[tuple[str, int], Req]],
                      reads: list[tuple[int, int]], rewrite: int | None, shuffle_seed: int) -> None:
    sandbox.begin()
    m = h.model
    if rewrite is not None:
        h.rewrite(rewrite)
    live0, next_no0 = dict(m.live), h.cache._next_no
    fuzz = [_resolve(h, ref, _fill(r, sandbox.sandbox, sandbox.root)) for ref, r in batch]
    # Valid requests, as the device sends them: the cached files looked up again, and FILLs of
    # ref.bin's version and of each cached file's newest version (-ESTALE if just rewritten).
    valid = [h.lookup_req(f"/cache/f{i}") for i in range(NCACHED)] + [h.lookup_req("/keep/ref.bin")]
    valid += [h.fill_req(m.ref_no, off, n) for off, n in reads]
    valid += [h.fill_req(m.current[i], 0, DATA) for i in range(NCACHED)]
    tagged = [(r, False) for r in fuzz] + [(r, True) for r in valid]
    random.Random(shuffle_seed).shuffle(tagged)
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
    for (r, _), a in zip(tagged, answers):
        if r.opcode == abi.Op.FILL:
            _fill_expect(h, r, a, live0, next_no0)
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
    """EXAMPLES batches of fuzzed LOOKUP/FILL requests (deterministic: derandomized, no database)."""
    t0 = time.perf_counter()
    _fuzz_cache_batch(ch, sandbox)
    record_property("requests", ch.sent)
    print(f"fuzz cache: {ch.sent} requests in {EXAMPLES} batches, {time.perf_counter() - t0:.1f} s; outcomes: "
          + ", ".join(f"{op}:{res}={n}" for (op, res), n in sorted(ch.outcomes.items())))
    assert ch.sent >= EXAMPLES * 30, f"only {ch.sent} requests were sent"
    assert dict(ch.answers) and max(ch.answers.values()) == 1, "a request was answered twice"
    for op in ("FILL", "LOOKUP"):   # the fuzzer reached both the errors and the successes
        assert ch.outcomes[(op, "ok")] > 0, ch.outcomes
    for res in ("EINVAL", "ESTALE"):
        assert ch.outcomes[("FILL", res)] > 0, ch.outcomes
    for res in ("EACCES", "ENAMETOOLONG", "EINVAL"):
        assert ch.outcomes[("LOOKUP", res)] > 0, ch.outcomes
    sandbox.check_content()
