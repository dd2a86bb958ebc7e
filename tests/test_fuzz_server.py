"""Fuzzing the hostcall server with what a buggy or hostile kernel could write into a lane.

The lanes' mailboxes are written straight from Python (no device code): random and
malformed request words (unknown opcodes, the seq bits jumping or standing still while the
opcode changes, the 24-bit wrap) and records (a record opcode that disagrees with the word,
bad fds, huge and negative-as-unsigned lengths and offsets, data_len mismatches,
unterminated and over-long paths, `..` and symlinks leading out of the root, directories,
unknown open flags), many lanes at once, then one `Server.sweep()` takes them all and the
test waits (bounded) for every answer. The server's polling thread is never started: the
test is the poller.

Checked for every request: it is answered exactly once, by a response word that carries its
seq bits, with a result >= 0 or a negative errno in -1..-133 (and the errno the validation
rules promise, where the request breaks one); a NOP by its own word echoed; an answer in the
word's code leaves the response record alone; the server keeps answering valid requests
interleaved with the garbage, with the right bytes; and nothing outside the root is
created, deleted, modified or even read (listing, inode, size, mtime, ctime and atime of
everything in the sandbox beside the root, and outside.txt's content at the end).

Explicit unit tests of each validation rule come first; the hypothesis fuzzer last.
`GPUVFS_FUZZ_EXAMPLES` sets the fuzzer's number of batches (default 420);
`GPUVFS_FUZZ_SHRINK=1` lets hypothesis shrink a failing batch (slow).
"""
from __future__ import annotations

import errno
import io
import os
import random
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gpuvfs import abi, backends
from gpuvfs.hostcall.files import FIRST_FD, MAX_OFFSET, FileHandlers, FileTable
from gpuvfs.hostcall.paths import Confined
from gpuvfs.hostcall.server import SMALL_SWEEP, Lanes, Pending, Server
from gpuvfs.hostcall.stdio import StdioHandlers

NLANES = 64
DATA = abi.LANE_DATA_MIN          # 4096 payload bytes per lane
MAX_FDS = 24                      # a small fd table: fuzzed opens fill it, EMFILE is exercised
NEVER_FD = FIRST_FD + MAX_FDS + 7  # outside the table's range: never handed out
JUNK = 0xAB                       # lane data beyond a payload: non-NUL, so short data_len is unterminated
REF = np.random.default_rng(7).integers(0, 256, 3 * DATA + 123, dtype=np.uint8)  # /keep/ref.bin
EXAMPLES = int(os.environ.get("GPUVFS_FUZZ_EXAMPLES", "420"))
WAIT_S = 5.0


@dataclass
class Req:
    opcode: int                    # the request word's opcode (8 bits): what the server routes by
    flags: int = 0
    fd: int = -1
    data_len: int = 0
    offset: int = 0
    length: int = 0
    arg: tuple[int, int, int, int] = (0, 0, 0, 0)
    payload: bytes = b""
    rec_opcode: int | None = None  # the record's opcode field (None: the word's), never read
    seq_step: int = 1              # how far the word's seq bits move (a device bug may jump)


POISON = -0x1111111111111112       # a response record the server did not write


@dataclass
class Answer:
    result: int
    aux: tuple[int, int, int]
    data: bytes = field(repr=False)


# ---------------------------------------------------------------- the sandbox
# Inside the root: files, a directory, symlinks that stay inside, and symlinks that lead out
# (absolute and relative, to files and directories, dangling). Outside: the targets of those
# links exist, so following one would reach a real file.
FILES = {"a.bin": b"A" * 100, "b.txt": b"bee\n", "sub/c.txt": b"sea\n"}
DIRS = ["sub", "dir", "keep"]
OUTSIDE_FILES = {"target_rel.txt": b"rel target", "target_abs.txt": b"abs target", "outdir/victim.txt": b"victim"}


def _links(sandbox: str, root: str) -> dict[str, str]:
    return {
        "in_link": "a.bin",                            # inside: followed
        "abs_in": os.path.join(root, "a.bin"),         # absolute, inside: followed
        "dir_link": "sub",                             # inside, a directory
        "loop": "loop",                                # ELOOP
        "rel_out": "../target_rel.txt",                # relative, out
        "abs_out": os.path.join(sandbox, "target_abs.txt"),
        "dir_out": "../outdir",                        # a directory outside
        "abs_dir_out": os.path.join(sandbox, "outdir"),
        "dangling_out": "../not_there.txt",            # O_CREAT through it would create outside
        "abs_dangling": os.path.join(sandbox, "not_there_abs.txt"),
        "sneaky": "sub/../../outside.txt",             # goes in, then out
        "abs_sneaky": root + "/../outside.txt",        # starts with the root's path, leads out
        "sub/up": "../../outside.txt",
        "sub/upabs": sandbox,
    }


class Sandbox:
    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.sandbox = os.path.dirname(self.root)
        for rel, content in OUTSIDE_FILES.items():
            p = os.path.join(self.sandbox, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(content)
        self.links = _links(self.sandbox, self.root)
        self.repair()
        self.outside_content = {rel: open(os.path.join(self.sandbox, rel), "rb").read()
                                for rel in ["outside.txt", *OUTSIDE_FILES]}
        self._rearm()
        self.initial = self.before

    def begin(self) -> None:
        """Starts one fuzz example with the sandbox as it was at first, so that an escape
        made by one example fails that example only, and again when hypothesis replays it
        (and shrinks it). Only does anything after an escape (or a read outside)."""
        if self.snapshot() == self.before:
            return
        for dirpath, dirs, files in list(self._walk_outside()):
            for name in files + dirs:
                p = os.path.join(dirpath, name)
                if os.path.relpath(p, self.sandbox) not in self.initial:
                    shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        for rel, content in self.outside_content.items():
            with open(os.path.join(self.sandbox, rel), "wb") as f:
                f.write(content)
        self._rearm()

    def _rearm(self) -> None:
        """Sets atime < mtime on every file beside the root, then takes the reference snapshot.
        With relatime (or strictatime) any read of such a file moves its atime, so a read
        through an escape shows. (With noatime the atime check is a no-op; content, size,
        mtime and ctime are still checked.)"""
        for dirpath, dirs, files in self._walk_outside():
            for name in files:
                p = os.path.join(dirpath, name)
                st_ = os.stat(p)
                os.utime(p, ns=(st_.st_mtime_ns - 10**9, st_.st_mtime_ns))
        self.before = self.snapshot()

    def reset(self) -> None:
        """Puts the root back as it was (fuzzed requests create, truncate, write and unlink
        inside it), so that every fuzz example starts from the same tree. /keep is never
        named by the fuzzer, so it is left alone (and checked at the end)."""
        for name in os.listdir(self.root):
            if name == "keep":
                continue
            p = os.path.join(self.root, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
        self.repair()

    def repair(self) -> None:
        """Creates what is missing of the root's tree (links, files, directories)."""
        for d in DIRS:
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        for rel, content in FILES.items():
            p = os.path.join(self.root, rel)
            if os.path.islink(p) or not os.path.isfile(p) or os.path.getsize(p) != len(content):
                if os.path.lexists(p):
                    os.unlink(p)
                with open(p, "wb") as f:
                    f.write(content)
        ref = os.path.join(self.root, "keep", "ref.bin")
        if not os.path.exists(ref):
            REF.tofile(ref)
        for rel, target in self.links.items():
            p = os.path.join(self.root, rel)
            try:
                if os.readlink(p) == target:
                    continue
            except OSError:
                pass
            if os.path.lexists(p):
                os.unlink(p)
            os.symlink(target, p)

    def _walk_outside(self) -> Iterator[tuple[str, list[str], list[str]]]:
        for dirpath, dirs, files in os.walk(self.sandbox, followlinks=False):
            if dirpath == self.sandbox:
                dirs[:] = [d for d in dirs if os.path.join(dirpath, d) != self.root]
            yield dirpath, dirs, files

    def snapshot(self) -> dict[str, tuple]:
        """Everything beside the root, without reading any file (so atime stays put)."""
        snap: dict[str, tuple] = {}
        for dirpath, dirs, files in self._walk_outside():
            st_ = os.stat(dirpath, follow_symlinks=False)
            snap[os.path.relpath(dirpath, self.sandbox)] = ("dir", st_.st_ino, st_.st_mtime_ns, st_.st_ctime_ns)
            for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
                p = os.path.join(dirpath, name)
                st_ = os.stat(p, follow_symlinks=False)
                key = os.path.relpath(p, self.sandbox)
                if stat.S_ISLNK(st_.st_mode):
                    snap[key] = ("link", os.readlink(p))
                else:
                    snap[key] = (stat.S_IFMT(st_.st_mode), st_.st_ino, st_.st_size, st_.st_mtime_ns,
                                 st_.st_ctime_ns, st_.st_atime_ns, st_.st_nlink)
        return snap

    def check_untouched(self) -> None:
        now = self.snapshot()
        assert now == self.before, f"something outside the root changed: {_diff(self.before, now)}"

    def check_content(self) -> None:
        """check_untouched, then the content of the files beside the root (reading them moves
        their atime, so the reference snapshot is taken again afterwards)."""
        self.check_untouched()
        assert self.before.keys() == self.initial.keys(), \
            f"entries beside the root were created or removed: {_diff(self.initial, self.before)}"
        for rel, content in self.outside_content.items():
            with open(os.path.join(self.sandbox, rel), "rb") as f:
                assert f.read() == content, f"{rel} outside the root was modified"
        self._rearm()
        ref = np.fromfile(os.path.join(self.root, "keep", "ref.bin"), dtype=np.uint8)
        assert np.array_equal(ref, REF), "/keep/ref.bin (never named by the fuzzer) changed"


def _diff(a: dict, b: dict) -> str:
    out = [f"- {k}: {a[k]}" for k in sorted(a.keys() - b.keys())]
    out += [f"+ {k}: {b[k]}" for k in sorted(b.keys() - a.keys())]
    out += [f"~ {k}: {a[k]} -> {b[k]}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return "; ".join(out)


# ---------------------------------------------------------------- the server under test
class Harness:
    """Lanes + Server + FileHandlers + StdioHandlers on the cpu backend; the test sweeps."""

    def __init__(self, root: str) -> None:
        self.backend = backends.select("cpu")
        self.lanes = Lanes(self.backend, NLANES, DATA)
        self.server = Server(self.lanes, workers=4)
        self.table = FileTable(max_fds=MAX_FDS)
        self.files = FileHandlers(self.server, Confined(root), self.table)
        self.out, self.err = io.BytesIO(), io.BytesIO()
        self.inp = io.BytesIO(b"".join(b"line %d %s\n" % (i, b"x" * (i % 97)) for i in range(20000)))
        self.stdio = StdioHandlers(self.server, stdout=lambda: self.out, stderr=lambda: self.err,
                                   stdin=lambda: self.inp)
        # What this server answers; anything else must be -ENOSYS. (The cache's LOOKUP/FILL
        # handlers are not registered here: tests/test_fuzz_cache.py fuzzes them.)
        self.registered = frozenset(self.server._routes)
        # (batch, lane, request word) -> times answered. The batch is part of the key: with
        # the seq bits jumping, a lane may see the same word again in a later batch.
        self.answers: Counter[tuple[int, int, int]] = Counter()
        self.batch = 0
        self._answers_lock = threading.Lock()
        self.sent = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (opcode, errno name or "ok"): coverage
        real_answer = self.server.answer

        def counting_answer(lane: int, word: int, result: int, aux: tuple[int, int, int] | None = None,
                            length: int | None = None) -> None:
            real_answer(lane, word, result, aux, length)
            with self._answers_lock:       # counted once written: run() may wait for the count
                self.answers[(self.batch, lane, word)] += 1

        self.server.answer = counting_answer  # type: ignore[method-assign]

    def answering_elsewhere(self) -> bool:
        """Whether requests handed to work that answers them itself may still be out (a word
        whose seq bits stood still looks answered already: run() waits for this too)."""
        return False

    def new_table(self) -> None:
        """Closes every fd and starts an empty table (fds numbered from FIRST_FD again)."""
        self.table.close_all()
        self.table = self.files.table = FileTable(max_fds=MAX_FDS)

    def close(self) -> None:
        self.server.close()
        self.table.close_all()
        self.backend.close()
        self.lanes.close()

    def run(self, reqs: list[Req], lanes: list[int] | None = None) -> list[Answer]:
        """Writes reqs into `lanes` (default 0..n-1): records and payloads, then each lane's
        request word moved by the request's seq_step; sweeps once; waits for every answer."""
        n = len(reqs)
        assert 1 <= n <= NLANES
        idx = np.arange(n) if lanes is None else np.asarray(lanes)
        assert len(set(idx.tolist())) == n and all(0 <= i < NLANES for i in idx.tolist())
        L = self.lanes
        self.batch += 1
        arr = np.zeros(n, dtype=abi.REQUEST)
        for k in ("flags", "fd", "data_len", "offset", "length"):
            arr[k] = [getattr(r, k) for r in reqs]
        arr["opcode"] = [r.opcode if r.rec_opcode is None else r.rec_opcode for r in reqs]
        arr["arg"] = [r.arg for r in reqs]
        L.data[idx] = JUNK
        for i, r in zip(idx.tolist(), reqs):
            if r.payload:
                p = r.payload[:DATA]
                L.data[i, :len(p)] = np.frombuffer(p, dtype=np.uint8)
        L.resp["result"][idx] = POISON  # a response left unwritten shows
        L.resp["aux"][idx] = 0xEEEEEEEEEEEEEEEE
        assert np.array_equal(L.req_word[idx] & abi.WORD_SEQ_MASK, L.resp_word[idx] & abi.WORD_SEQ_MASK), \
            "a lane was still pending before the batch"
        L.req[idx] = arr
        words = []
        prev_words = {}
        for i, r in zip(idx.tolist(), reqs):
            assert 0 <= r.opcode <= 0xFF, f"an opcode is 8 bits in the request word: {r}"
            prev = prev_words[i] = int(L.req_word[i])
            w = abi.encode_req_word(r.opcode, prev + r.seq_step)
            if w == prev:   # the word did not move: that is no request at all
                w = abi.encode_req_word(r.opcode, prev + 1)
            words.append(w)
        words_a = np.array(words, dtype="<u4")
        L.req_word[idx] = words_a       # after the records (the device's release orders them)
        took = self.server.sweep()
        assert took == n, f"sweep took {took} of {n} requests"
        # Every request but a NOP (answered within the sweep) is waited for twice: its word, and
        # its count in self.answers, which answer() adds after it wrote the word (a pool thread
        # may be between the two when the word shows), and a hand-over to work that answers by
        # itself adds when it hands over. A word whose seq bits stood still (only its opcode
        # moved) looks answered by the previous answer's word: the device could not tell, and
        # for it the count is all there is to wait for.
        counted = [(k, i, w) for k, (i, r, w) in enumerate(zip(idx.tolist(), reqs, words))
                   if r.opcode != abi.Op.NOP]
        deadline = time.monotonic() + WAIT_S
        seqs = words_a & abi.WORD_SEQ_MASK

        def waiting() -> list[int]:
            late = np.flatnonzero((L.resp_word[idx] & abi.WORD_SEQ_MASK) != seqs).tolist()
            with self._answers_lock:
                late += [k for k, i, w in counted if not self.answers.get((self.batch, i, w))]
            return late or ([0] if self.answering_elsewhere() else [])

        while late := waiting():
            if time.monotonic() > deadline:
                raise AssertionError(f"requests not answered within {WAIT_S} s: {[reqs[k] for k in late[:5]]}")
            time.sleep(0.0002)
            # As the polling thread goes on sweeping: it sends the answers handlers left
            # Pending (a copy to the device that must land first). No new words: takes none.
            self.server.sweep()
        out = []
        for i, r, w in zip(idx.tolist(), reqs, words):
            rw = int(L.resp_word[i])
            res = abi.decode_resp_word(rw, length=r.length)
            if res is None:
                out.append(Answer(int(L.resp[i]["result"]), tuple(int(a) for a in L.resp[i]["aux"]),  # type: ignore[arg-type]
                                  L.data[i].tobytes()))
                assert out[-1].result != POISON, f"lane {i}: code 0 but no response record: {r}"
            else:
                # The word said it all: the record was left alone (the device will not read it).
                assert int(L.resp[i]["result"]) == POISON, f"lane {i}: answered in the word, record written too"
                out.append(Answer(res, (0, 0, 0), L.data[i].tobytes()))
            if r.opcode == abi.Op.NOP:
                assert rw == w, f"NOP on lane {i}: answered {rw:#x}, not its own word {w:#x}"
        assert self.server.sweep() == 0, "a lane was taken twice"
        with self._answers_lock:
            for i, r, w, a in zip(idx.tolist(), reqs, words, out):
                times = self.answers.get((self.batch, i, w), 0)
                if r.opcode == abi.Op.NOP:   # answered by echo in the sweep, not through answer()
                    assert times == 0 and a.result == 0, f"NOP on lane {i}: {a}"
                else:
                    assert times == 1, f"lane {i} word {w:#x} answered {times} times: {r}"
        self.sent += n
        for r, a in zip(reqs, out):
            name = abi.Op(r.opcode).name if r.opcode in abi.Op._value2member_map_ else "unknown"
            self.outcomes[(name, "ok" if a.result >= 0 else errno.errorcode.get(-a.result, str(a.result)))] += 1
        return out

    def call(self, opcode: int, **kw: object) -> Answer:
        return self.run([Req(int(opcode), **kw)])[0]  # type: ignore[arg-type]

    # -- valid requests, built as the device builds them --
    @staticmethod
    def open_req(path: str | bytes, flags: int = abi.O_RDONLY) -> Req:
        p = (path.encode() if isinstance(path, str) else path) + b"\0"
        return Req(abi.Op.OPEN, flags=flags, data_len=len(p), payload=p)

    def open(self, path: str | bytes, flags: int = abi.O_RDONLY) -> int:
        return self.run([self.open_req(path, flags)])[0].result

    def pread(self, fd: int, offset: int, length: int) -> Answer:
        return self.call(abi.Op.PREAD, fd=fd, offset=offset, length=length)

    def close_fd(self, fd: int) -> int:
        return self.call(abi.Op.CLOSE, fd=fd).result


@pytest.fixture
def sandbox(data_root: str) -> Sandbox:
    return Sandbox(data_root)


@pytest.fixture
def h(sandbox: Sandbox) -> Iterator[Harness]:
    hh = Harness(sandbox.root)
    yield hh
    hh.close()
    sandbox.check_content()


def _sane(result: int) -> bool:
    return result >= 0 or -133 <= result <= -1


# ---------------------------------------------------------------- one test per validation rule
@pytest.mark.parametrize("opcode", [0, 1, max(op for op in abi.Op if op != abi.Op.NOP) + 1, 0x7F, 0x81, 0xFF])
def test_unknown_opcode_is_enosys(h: Harness, opcode: int) -> None:
    assert h.call(opcode, fd=3, length=10).result == -errno.ENOSYS


def test_answer_travels_in_the_word_when_it_fits(h: Harness) -> None:
    """Server.answer: a result in -127..126 without aux is the word's code alone, and so is
    one equal to the request's length (code 255); anything else (aux given, or a result out
    of that range and not the length) is the record, then code 0."""
    L, lane = h.lanes, NLANES - 1
    w = abi.encode_req_word(abi.Op.CLOSE, 0xABCDEF)
    for result, aux, length, code in [
            (0, None, None, 128), (-127, None, None, 1), (126, None, None, 254), (127, None, None, 0),
            (-9, None, None, 128 - 9), (-128, None, None, 0), (128, None, None, 0), (2**62, None, None, 0),
            (5, (1, 2, 3), None, 0), (0, (0, 0, 0), None, 0),
            (127, None, 127, 255), (4096, None, 4096, 255), (4095, None, 4096, 0),
            (4096, (0, 0, 0), 4096, 0), (5, None, 5, 128 + 5)]:
        L.resp["result"][lane] = POISON
        h.server.answer(lane, w, result, aux, length)
        rw = int(L.resp_word[lane])
        assert rw & abi.WORD_SEQ_MASK == 0xABCDEF and rw >> abi.WORD_SHIFT == code, (result, aux, hex(rw))
        if code:
            assert abi.decode_resp_word(rw, length=length) == result and int(L.resp["result"][lane]) == POISON
        else:
            assert int(L.resp["result"][lane]) == result
            assert tuple(int(a) for a in L.resp["aux"][lane]) == (aux or (0, 0, 0))
    assert abi.encode_resp_word(w, 0) == abi.encode_req_word(abi.Op.NOP, 0xABCDEF), "NOP's echo is not result 0"


def test_pending_answers_wait_for_their_work(h: Harness) -> None:
    """A handler that returns Pending is answered by a later sweep once done() says so, with
    its result (or result and aux); a done() that raises is answered -EIO; the server
    counts the request busy until then (so its polling thread stays awake)."""
    op = 0x7E                                 # an opcode no handler uses
    gate = threading.Event()
    def boom() -> bool:
        raise RuntimeError("the copy failed")
    answers = iter([Pending(gate.is_set, 5), Pending(gate.is_set, (7, 1, 2, 3)), Pending(boom, 9)])
    h.server.register(op, lambda lane, q: next(answers))
    L, lane = h.lanes, 3
    for want, aux in ((5, (0, 0, 0)), (7, (1, 2, 3)), (-errno.EIO, (0, 0, 0))):
        gate.clear()
        L.resp["result"][lane] = POISON
        w = abi.encode_req_word(op, int(L.req_word[lane]) + 1)
        L.req_word[lane] = w
        assert h.server.sweep() == 1
        if want != -errno.EIO:
            for _ in range(3):
                assert h.server.sweep() == 0 and h.server._busy_pool == 1
            assert int(L.resp_word[lane]) & abi.WORD_SEQ_MASK != w & abi.WORD_SEQ_MASK, "answered before done()"
            gate.set()
        assert h.server.sweep() == 1 and h.server._busy_pool == 0
        rw = int(L.resp_word[lane])
        assert rw & abi.WORD_SEQ_MASK == w & abi.WORD_SEQ_MASK
        got = abi.decode_resp_word(rw)
        if got is None:
            got = int(L.resp["result"][lane])
            assert tuple(int(a) for a in L.resp["aux"][lane]) == aux
        assert got == want


def _post_words(L: Lanes, lanes: list[int], op: int = abi.Op.NOP) -> dict[int, int]:
    """Moves each lane's request word to a new request `op` (as the device posts one, with
    no record); returns lane -> word."""
    words = {i: abi.encode_req_word(op, int(L.req_word[i]) + 1) for i in lanes}
    for i, w in words.items():
        L.req_word[i] = w
    return words


def test_nop_sweeps_leave_other_lanes_alone(h: Harness) -> None:
    """The vector path's two ways of answering NOPs: sweeps where every lane's word is a NOP
    (a memcmp says so, and the new lanes are the NOPs) and sweeps mixed with other requests.
    Each new NOP is answered by its echo and counted once, a NOP lane taken before keeps its
    answer, and a lane whose request is still on the pool, or was answered, is never written
    by the echo."""
    L, s, c = h.lanes, h.server, h.server.counters
    gate = threading.Event()
    slow = 0x7E                                   # an opcode no handler uses
    s.register(slow, lambda lane, q: Pending(gate.is_set, 9))

    def check(before: tuple[int, int], words: dict[int, int], nops: int) -> None:
        assert (c.hostcalls - before[0], c.nops - before[1]) == (len(words), nops)

    everyone = list(range(NLANES))
    before = (c.hostcalls, c.nops)
    first = _post_words(L, everyone)           # every lane's word a NOP
    assert s.sweep() == NLANES
    check(before, first, NLANES)
    assert [int(L.resp_word[i]) for i in everyone] == [first[i] for i in everyone]
    rng = random.Random(5)
    for _ in range(20):                           # about half the lanes move, as on a GPU
        lanes = sorted(rng.sample(everyone, rng.randrange(2, NLANES)))
        old = L.resp_word.copy()
        before = (c.hostcalls, c.nops)
        words = _post_words(L, lanes)
        assert s.sweep() == len(lanes)
        check(before, words, len(lanes))
        got = L.resp_word.copy()
        for i in everyone:
            assert int(got[i]) == words.get(i, int(old[i])), f"lane {i}"
    # One lane's request goes to the pool and waits; NOPs on the others keep coming.
    held = 17
    before = (c.hostcalls, c.nops)
    w_held = _post_words(L, [held], slow)[held]
    words = _post_words(L, [i for i in everyone if i % 3 and i != held])
    assert s.sweep() == len(words) + 1
    check(before, {**words, held: w_held}, len(words))
    stale = int(L.resp_word[held])
    assert stale & abi.WORD_SEQ_MASK != w_held & abi.WORD_SEQ_MASK, "answered before its work was done"
    for _ in range(3):
        before = (c.hostcalls, c.nops)
        words = _post_words(L, [i for i in everyone if i != held and rng.random() < 0.6] or [0, 1])
        assert s.sweep() == len(words)
        check(before, words, len(words))
        assert int(L.resp_word[held]) == stale, "the NOP echo wrote a lane whose request is on the pool"
        assert all(int(L.resp_word[i]) == w for i, w in words.items())
    gate.set()
    assert s.sweep() == 1                        # the pool's answer, sent by the next sweep
    answer = int(L.resp_word[held])
    assert answer & abi.WORD_SEQ_MASK == w_held & abi.WORD_SEQ_MASK and abi.decode_resp_word(answer) == 9
    words = _post_words(L, [i for i in everyone if i != held])
    assert s.sweep() == len(words)
    assert int(L.resp_word[held]) == answer, "the NOP echo overwrote an answer"


def test_busy_spin_answers_nop_sweeps_and_hands_back_the_rest(h: Harness) -> None:
    """Server._spin_busy, the polling thread's loop while many lanes are busy: sweeps in
    which every lane's word is a NOP it answers itself (each NOP once, counted); a sweep
    with one new lane, or with a lane that is not a NOP, it hands back untouched (nothing
    answered, nothing marked taken), and sweep() then takes that snapshot; with work
    pending it does not start."""
    L, s, c = h.lanes, h.server, h.server.counters
    everyone = list(range(NLANES))

    _post_words(L, everyone)
    assert s.sweep() == NLANES and s._many and s._all_nops   # the polling thread would spin busy
    words = _post_words(L, everyone[::2])
    before = (c.hostcalls, c.nops)
    assert s._spin_busy() == (None, len(words))
    assert (c.hostcalls - before[0], c.nops - before[1]) == (len(words), len(words))
    assert all(int(L.resp_word[i]) == w for i, w in words.items())
    for lanes, op in (([3], abi.Op.NOP), ([3, 4, 9], abi.Op.CLOSE)):
        resp = L.resp_word.copy()
        before = (c.hostcalls, c.nops)
        if op == abi.Op.NOP:
            words = _post_words(L, lanes)
        else:
            words = {**_post_words(L, lanes[:2]), **_post_words(L, lanes[2:], op)}
        sb, answered = s._spin_busy()
        assert sb is s._snap_b and answered == 0
        assert np.array_equal(L.resp_word, resp) and (c.hostcalls, c.nops) == before, "answered before the sweep"
        assert s.sweep(sb) == len(lanes)
        assert not s._all_nops, "a sweep that was not all NOPs leaves the busy spin"
        for i, w in words.items():
            rw = int(L.resp_word[i])
            assert rw & abi.WORD_SEQ_MASK == w & abi.WORD_SEQ_MASK, f"lane {i} not answered"
            if w >> abi.WORD_SHIFT == abi.Op.NOP:
                assert rw == w
            else:
                assert abi.decode_resp_word(rw) == -errno.EBADF
    _post_words(L, everyone)                   # every lane a NOP again
    assert s.sweep() == NLANES
    gate = threading.Event()
    s.register(0x7E, lambda lane, q: Pending(gate.is_set, 1))
    _post_words(L, [5], 0x7E)
    assert s.sweep() == 1 and s._busy_pool == 1
    _post_words(L, everyone[6:])
    assert s._spin_busy() == (None, 0), "ran with a Pending answer to send"
    gate.set()
    assert s.sweep() == NLANES - 6 + 1


def test_lone_requests_on_any_lane(h: Harness) -> None:
    """One request at a time on changing lanes, and pairs that include the last lone lane:
    the lone-lane shortcut, its miss, and the vector path all answer each request once."""
    fd = h.open("/keep/ref.bin")
    plan = [[5], [5], [5], [9], [9], [9, 5], [5, 9, 12], [12], [0], [NLANES - 1], [NLANES - 1, 0], [3]]
    for k, lanes in enumerate(plan):
        reqs = [[Req(abi.Op.NOP), Req(abi.Op.CLOSE, fd=NEVER_FD), Req(abi.Op.PREAD, fd=fd, offset=7, length=200),
                 Req(abi.Op.PREAD, fd=fd, offset=9, length=100), Req(abi.Op.WALLCLOCK)][(k + j) % 5]
                for j in range(len(lanes))]
        for r, a in zip(reqs, h.run(reqs, lanes)):
            if r.opcode == abi.Op.PREAD:
                assert a.result == r.length and a.data[:r.length] == REF[r.offset:r.offset + r.length].tobytes()
            else:
                _expect(r, a, h.registered)
            if r.opcode == abi.Op.CLOSE:
                assert a.result == -errno.EBADF
    assert h.close_fd(fd) == 0


def test_seq_bits_wrap(h: Harness) -> None:
    """The word carries 24 bits of the device's seq: across the wrap every request is still
    new to the server (it compares with the lane's previous word only) and answered once."""
    lane = [7]
    h.run([Req(abi.Op.NOP, seq_step=2**24 - 2)], lane)   # the seq bits at 0xFFFFFE
    assert int(h.lanes.req_word[7]) & abi.WORD_SEQ_MASK == 0xFFFFFE
    for k in range(6):
        r = [Req(abi.Op.NOP), Req(abi.Op.CLOSE, fd=NEVER_FD), Req(abi.Op.WALLCLOCK)][k % 3]
        _expect(r, h.run([r], lane)[0], h.registered)
    assert int(h.lanes.req_word[7]) & abi.WORD_SEQ_MASK == 4


def test_the_word_routes_not_the_record(h: Harness) -> None:
    """The server routes by the word's opcode; the record's opcode field is never read, and
    a word-only request (NOP, WALLCLOCK) is answered without reading the record at all."""
    path = _path_fields("/a.bin")
    opened = len(h.table)
    # A NOP and a WALLCLOCK whose stale records say OPEN: nothing is opened.
    assert h.call(abi.Op.NOP, rec_opcode=abi.Op.OPEN, **path).result == 0
    assert h.call(abi.Op.WALLCLOCK, rec_opcode=abi.Op.OPEN, **path).result > 1_600_000_000 * 10**9
    # A CLOSE whose record says OPEN is a CLOSE (of fd -1).
    assert h.call(abi.Op.CLOSE, rec_opcode=abi.Op.OPEN, **path).result == -errno.EBADF
    # An OPEN whose record says NOP is an OPEN.
    fd = h.call(abi.Op.OPEN, rec_opcode=abi.Op.NOP, **path).result
    assert fd >= FIRST_FD and len(h.table) == opened + 1
    assert h.close_fd(fd) == 0 and len(h.table) == opened


def test_valid_open_pread_fstat_close(h: Harness) -> None:
    fd = h.open("/keep/ref.bin")
    assert fd >= FIRST_FD
    a = h.pread(fd, 100, 1000)
    assert a.result == 1000 and a.data[:1000] == REF[100:1100].tobytes()
    st_ = h.call(abi.Op.FSTAT, fd=fd)
    assert st_.result == 0 and st_.aux[0] == REF.size and stat.S_ISREG(st_.aux[2])
    assert h.pread(fd, REF.size - 10, 4096).result == 10
    assert h.pread(fd, REF.size + 10, 4096).result == 0
    assert h.close_fd(fd) == 0


@pytest.mark.parametrize("op", [abi.Op.PREAD, abi.Op.PWRITE, abi.Op.FSTAT, abi.Op.CLOSE, abi.Op.FSYNC])
@pytest.mark.parametrize("fd", [-1, -(2**31), 0, 1, 2, NEVER_FD, 12345, 2**31 - 1, "closed"])
def test_bad_fd_is_ebadf(h: Harness, op: abi.Op, fd: int | str) -> None:
    if fd == "closed":
        fd = h.open("/a.bin")
        assert fd >= FIRST_FD and h.close_fd(fd) == 0
    assert h.call(op, fd=fd, length=4, data_len=4 if op == abi.Op.PWRITE else 0).result == -errno.EBADF


def test_write_to_read_only_fd_is_ebadf(h: Harness, sandbox: Sandbox) -> None:
    fd = h.open("/b.txt", abi.O_RDONLY)
    assert h.call(abi.Op.PWRITE, fd=fd, length=3, data_len=3, payload=b"xyz").result == -errno.EBADF
    assert open(os.path.join(sandbox.root, "b.txt"), "rb").read() == FILES["b.txt"]
    wfd = h.open("/b.txt", abi.O_WRONLY)
    assert h.pread(wfd, 0, 3).result == -errno.EBADF            # and reading a write-only fd
    assert h.close_fd(fd) == 0 and h.close_fd(wfd) == 0


@pytest.mark.parametrize("op", [abi.Op.PREAD, abi.Op.PWRITE])
@pytest.mark.parametrize("length", [DATA + 1, 2 * DATA, 2**32, 2**63, 2**64 - 1])
def test_length_over_lane_bytes_is_einval(h: Harness, op: abi.Op, length: int) -> None:
    fd = h.open("/a.bin", abi.O_RDWR)
    dl = length & 0xFFFFFFFF
    assert h.call(op, fd=fd, length=length, data_len=dl).result == -errno.EINVAL
    assert h.close_fd(fd) == 0


@pytest.mark.parametrize("op", [abi.Op.PREAD, abi.Op.PWRITE])
@pytest.mark.parametrize("offset,length", [(2**63, 0), (2**63, 1), (2**64 - 1, 1), (MAX_OFFSET, 1),
                                           (MAX_OFFSET - 10, 11), (2**64 - 4096, 4096)])
def test_offset_past_max_is_einval(h: Harness, sandbox: Sandbox, op: abi.Op, offset: int, length: int) -> None:
    fd = h.open("/a.bin", abi.O_RDWR)
    a = h.call(op, fd=fd, offset=offset, length=length, data_len=length, payload=b"q" * length)
    assert a.result == -errno.EINVAL
    assert os.path.getsize(os.path.join(sandbox.root, "a.bin")) == len(FILES["a.bin"])
    assert h.close_fd(fd) == 0


def test_pwrite_data_len_mismatch_is_einval(h: Harness) -> None:
    fd = h.open("/a.bin", abi.O_RDWR)
    for dl in (0, 3, 5, DATA, 2**32 - 1):
        assert h.call(abi.Op.PWRITE, fd=fd, length=4, data_len=dl, payload=b"zzzz").result == -errno.EINVAL
    assert h.call(abi.Op.PWRITE, fd=fd, length=4, data_len=4, payload=b"zzzz").result == 4
    assert h.close_fd(fd) == 0


@pytest.mark.parametrize("op", [abi.Op.OPEN, abi.Op.UNLINK])
def test_unterminated_path_is_enametoolong(h: Harness, op: abi.Op) -> None:
    # no NUL within data_len (the bytes after it are junk, also not NUL)
    assert h.call(op, data_len=6, payload=b"/a.bin").result == -errno.ENAMETOOLONG
    assert h.call(op, data_len=DATA, payload=b"/" + b"a" * (DATA - 1)).result == -errno.ENAMETOOLONG
    # data_len past PATH_MAX, or past the lane: refused before anything is read
    assert h.call(op, data_len=abi.PATH_MAX + 1, payload=b"/a.bin\0").result == -errno.ENAMETOOLONG
    assert h.call(op, data_len=2**32 - 1, payload=b"/a.bin\0").result == -errno.ENAMETOOLONG
    # data_len 0: no path at all
    assert h.call(op, data_len=0, payload=b"/a.bin\0").result == -errno.EINVAL


def test_over_long_component_is_enametoolong(h: Harness) -> None:
    assert h.open(b"/" + b"n" * 256, abi.O_RDWR | abi.O_CREAT) == -errno.ENAMETOOLONG


@pytest.mark.parametrize("path", ["/../x", "/..", "/../outside.txt", "/sub/../../outside.txt", "/./../root/a.bin",
                                  "/sub/../sub/../../target_rel.txt"])
@pytest.mark.parametrize("flags", [abi.O_RDONLY, abi.O_RDWR | abi.O_CREAT | abi.O_TRUNC])
def test_dotdot_escape_is_eacces(h: Harness, sandbox: Sandbox, path: str, flags: int) -> None:
    assert h.open(path, flags) == -errno.EACCES
    assert h.call(abi.Op.UNLINK, **_path_fields(path)).result == -errno.EACCES
    sandbox.check_content()


@pytest.mark.parametrize("path", ["/rel_out", "/abs_out", "/dir_out/victim.txt", "/abs_dir_out/victim.txt",
                                  "/dangling_out", "/abs_dangling", "/sneaky", "/abs_sneaky", "/sub/up",
                                  "/sub/upabs/outside.txt", "/dir_link/up", "/dir_out/new.txt"])
@pytest.mark.parametrize("flags", [abi.O_RDONLY, abi.O_WRONLY | abi.O_CREAT | abi.O_TRUNC,
                                   abi.O_RDWR | abi.O_CREAT | abi.O_EXCL])
def test_symlink_out_is_eacces(h: Harness, sandbox: Sandbox, path: str, flags: int) -> None:
    assert h.open(path, flags) == -errno.EACCES
    sandbox.check_content()


@pytest.mark.parametrize("path", ["/dir_out/victim.txt", "/abs_dir_out/victim.txt", "/sub/upabs/outside.txt"])
def test_unlink_through_symlink_out_is_eacces(h: Harness, sandbox: Sandbox, path: str) -> None:
    assert h.call(abi.Op.UNLINK, **_path_fields(path)).result == -errno.EACCES
    sandbox.check_content()


def test_unlink_of_a_link_out_removes_only_the_link(h: Harness, sandbox: Sandbox) -> None:
    assert h.call(abi.Op.UNLINK, **_path_fields("/abs_out")).result == 0
    assert not os.path.lexists(os.path.join(sandbox.root, "abs_out"))
    sandbox.check_content()


def test_symlinks_inside_are_followed(h: Harness) -> None:
    for p in ("/in_link", "/abs_in", "/dir_link/c.txt", "/sub/../in_link"):
        fd = h.open(p)
        assert fd >= FIRST_FD, p
        assert h.close_fd(fd) == 0
    assert h.open("/loop") == -errno.ELOOP


# Swaps root/NAME and root/NAME.other for each NAME, atomically (renameat2 RENAME_EXCHANGE),
# as fast as it can, until killed. A process of its own: no GIL shared with the server.
_FLIPPER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
root, names = sys.argv[1], sys.argv[2:]
pairs = [(os.fsencode(os.path.join(root, n)), os.fsencode(os.path.join(root, n + ".other"))) for n in names]
fn = getattr(libc, "renameat2", None)
if fn is None:
    sys.exit(3)
print("ready", flush=True)
while True:
    for a, b in pairs:
        if fn(-100, a, -100, b, 2) != 0:
            sys.exit(4)
"""


def test_symlink_swapped_in_while_opening_never_escapes(h: Harness, sandbox: Sandbox) -> None:
    """Races the walk: while opens with O_TRUNC run, another process keeps swapping /flip
    between a regular file and a symlink to a file outside, and /flipdir between a
    directory and a symlink to a directory outside. Whatever the interleaving, nothing
    outside may be truncated or created."""
    r = sandbox.root
    with open(os.path.join(r, "flip"), "wb") as f:
        f.write(b"inside")
    os.symlink(os.path.join(sandbox.sandbox, "target_abs.txt"), os.path.join(r, "flip.other"))
    os.mkdir(os.path.join(r, "flipdir"))
    os.symlink("../outdir", os.path.join(r, "flipdir.other"))
    flipper = subprocess.Popen([sys.executable, "-c", _FLIPPER, r, "flip", "flipdir"], stdout=subprocess.PIPE)
    seen: Counter[int] = Counter()
    try:
        if flipper.stdout is None or flipper.stdout.readline() != b"ready\n":
            pytest.skip("no renameat2(RENAME_EXCHANGE) here")
        deadline = time.monotonic() + 1.0
        flags = abi.O_WRONLY | abi.O_CREAT | abi.O_TRUNC
        while time.monotonic() < deadline:
            answers = h.run([h.open_req("/flip" if i % 2 else "/flipdir/victim.txt", flags) for i in range(MAX_FDS)])
            seen.update(min(a.result, 0) for a in answers)
            h.run([Req(abi.Op.CLOSE, fd=a.result) for a in answers if a.result >= 0] or [Req(abi.Op.NOP)])
        assert flipper.poll() is None, f"the flipper stopped (exit {flipper.returncode})"
    finally:
        flipper.kill()
        flipper.wait()
    sandbox.check_content()
    # Opened inside, or refused: the link was seen (EACCES), or a directory turned into a
    # link between the look and the open (ENOTDIR).
    assert set(seen) <= {0, -errno.EACCES, -errno.ENOTDIR}, seen
    assert seen[0] > 0 and seen[-errno.EACCES] > 0, seen   # both sides of the race were hit


@pytest.mark.parametrize("path", ["x", "a.bin", "", "./a.bin", "../outside.txt", "\x00/a.bin"])
def test_relative_path_is_einval(h: Harness, path: str) -> None:
    assert h.open(path, abi.O_RDWR | abi.O_CREAT) == -errno.EINVAL
    assert h.call(abi.Op.UNLINK, **_path_fields(path)).result == -errno.EINVAL


@pytest.mark.parametrize("path", ["/", "/sub", "/dir", "/sub/..", "/dir_link", "/sub/.", "//"])
@pytest.mark.parametrize("flags", [abi.O_RDONLY, abi.O_RDWR, abi.O_WRONLY | abi.O_CREAT | abi.O_TRUNC])
def test_directory_is_eisdir(h: Harness, path: str, flags: int) -> None:
    assert h.open(path, flags) == -errno.EISDIR


@pytest.mark.parametrize("flags", [abi.O_ACCMODE, 0x8, 0x10000, 0x20000, 0x200000, 0x80000000, 0xFFFFFFFF])
def test_unknown_open_flags_are_einval(h: Harness, sandbox: Sandbox, flags: int) -> None:
    assert h.open("/new.txt", flags | abi.O_CREAT) == -errno.EINVAL
    assert not os.path.exists(os.path.join(sandbox.root, "new.txt"))


def test_fd_table_full_is_emfile_and_recovers(h: Harness) -> None:
    fds = h.run([h.open_req("/a.bin") for _ in range(MAX_FDS + 5)])
    ok = sorted(a.result for a in fds if a.result >= 0)
    assert len(ok) == MAX_FDS and all(a.result in (-errno.EMFILE,) for a in fds if a.result < 0)
    assert h.run([Req(abi.Op.CLOSE, fd=fd) for fd in ok]) and len(h.table) == 0
    assert h.open("/a.bin") >= FIRST_FD


def test_stdio_rules(h: Harness) -> None:
    line = b"hello"
    assert h.call(abi.Op.WRITE_LINE, flags=1, length=5, data_len=5, payload=line).result == 5
    assert h.call(abi.Op.WRITE_LINE, flags=2, length=5, data_len=5, payload=line).result == 5
    assert h.out.getvalue() == b"hello\n" and h.err.getvalue() == b"hello\n"
    for flags in (0, 3, 2**32 - 1):
        assert h.call(abi.Op.WRITE_LINE, flags=flags, length=5, data_len=5, payload=line).result == -errno.EBADF
    for length, dl in ((5, 4), (DATA + 1, DATA + 1), (2**64 - 1, 2**32 - 1)):
        assert h.call(abi.Op.WRITE_LINE, flags=1, length=length, data_len=dl).result == -errno.EINVAL
    for cap in (0, DATA + 1, 2**63, 2**64 - 1):
        assert h.call(abi.Op.READ_LINE, length=cap).result == -errno.EINVAL
    a = h.call(abi.Op.READ_LINE, length=4)
    assert a.result == 4 and a.data[:4] == b"line"
    assert h.call(abi.Op.WALLCLOCK).result > 1_600_000_000 * 10**9
    assert h.out.getvalue() == b"hello\n"     # failed requests wrote nothing


def _path_fields(path: str | bytes) -> dict[str, object]:
    p = (path.encode() if isinstance(path, str) else path) + b"\0"
    return {"data_len": len(p), "payload": p}


# ---------------------------------------------------------------- the fuzzer
U32 = st.integers(0, 2**32 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)
U64 = st.integers(0, 2**64 - 1)
EDGE64 = st.sampled_from([0, 1, 2, 255, DATA - 1, DATA, DATA + 1, 2 * DATA, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
                          2**62, MAX_OFFSET - DATA, MAX_OFFSET - 1, MAX_OFFSET, 2**63, 2**63 + 1, 2**64 - DATA,
                          2**64 - 2, 2**64 - 1])
SIZES = st.one_of(st.integers(0, 300), st.integers(0, DATA + 16), EDGE64, U64)
OFFSETS = st.one_of(st.integers(0, 6000), EDGE64, U64)
SETUP_OPENS = [("/a.bin", abi.O_RDWR), ("/b.txt", abi.O_RDONLY), ("/sub/c.txt", abi.O_WRONLY),
               ("/new.txt", abi.O_RDWR | abi.O_CREAT), ("/in_link", abi.O_RDWR | abi.O_APPEND)]
LIVE_FDS = st.integers(FIRST_FD, FIRST_FD + len(SETUP_OPENS) - 1)   # opened before each batch
FDS = st.one_of(LIVE_FDS, LIVE_FDS,
                st.integers(FIRST_FD, FIRST_FD + MAX_FDS + 1),   # live, opened in the batch, or never

                st.sampled_from([0, 1, 2, -1, -2, -(2**31), 2**31 - 1, NEVER_FD, 65539, 1 << 20]), I32)
OPCODES = st.one_of(st.sampled_from(sorted(int(op) for op in abi.Op)), st.integers(0, 20), st.integers(0, 255))
# How far a fuzzed word's seq bits move: by one as the device moves them, or anywhere (0: the
# seq stands still and only the opcode moves; 2**24: the same, through the wrap).
SEQ_STEPS = st.one_of(st.just(1), st.just(1), st.integers(0, 2**24 + 1), st.sampled_from([0, 2**24, 2**32 - 1]))
FLAG_BITS = [abi.O_CREAT, abi.O_EXCL, abi.O_TRUNC, abi.O_APPEND]
OPEN_FLAGS = st.one_of(
    st.tuples(st.sampled_from([abi.O_RDONLY, abi.O_WRONLY, abi.O_RDWR, abi.O_ACCMODE]),
              st.lists(st.sampled_from(FLAG_BITS), max_size=4),
              st.sampled_from([0, 0, 0, 0x8, 0x800, 0x10000, 0x20000, 0x200000, 0x80000000]))
    .map(lambda t: t[0] | sum(set(t[1])) | t[2]),
    U32)
NAMES = [b"a.bin", b"b.txt", b"sub", b"c.txt", b"dir", b"new.txt", b"made", b"in_link", b"abs_in", b"dir_link",
         b"loop", b"rel_out", b"abs_out", b"dir_out", b"abs_dir_out", b"dangling_out", b"abs_dangling", b"sneaky",
         b"abs_sneaky", b"up", b"upabs", b"..", b"..", b".", b"", b"outside.txt", b"target_rel.txt",
         b"target_abs.txt", b"not_there.txt", b"victim.txt", b"outdir", b"root", b"@SANDBOX", b"@ROOT",
         b"n" * 255, b"n" * 256]
COMPONENT = st.one_of(st.sampled_from(NAMES), st.binary(min_size=1, max_size=12))
ESCAPES = [b"/../x", b"/..", b"/../outside.txt", b"/sub/../../outside.txt", b"/./../root/a.bin", b"/rel_out",
           b"/abs_out", b"/dir_out/victim.txt", b"/abs_dir_out/victim.txt", b"/dangling_out", b"/abs_dangling",
           b"/sneaky", b"/abs_sneaky", b"/sub/up", b"/sub/upabs/outside.txt", b"/dir_link/up", b"/dir_out/new.txt",
           b"/sub/upabs/not_there.txt", b"/abs_dir_out/../outside.txt", b"/dir_link/../../target_rel.txt"]
PATHS = st.one_of(
    st.sampled_from(ESCAPES),
    st.tuples(st.sampled_from([b"/", b"/", b"/", b"/", b"", b"//", b"/./", b"/../", b"./"]),
              st.lists(COMPONENT, max_size=6), st.sampled_from([b"", b"", b"", b"/", b"/.", b"/.."]))
    .map(lambda t: t[0] + b"/".join(t[1]) + t[2]),
    st.integers(1, 2100).map(lambda k: b"/" + b"a/" * k),                  # long, up to past PATH_MAX
    st.integers(1, 1400).map(lambda k: b"/sub/.." * k + b"/a.bin"),
    st.integers(1, 6000).map(lambda k: b"/" + b"z" * k))


@st.composite
def path_fields(draw: st.DrawFn) -> dict[str, object]:
    path = draw(PATHS)
    mode = draw(st.sampled_from(["exact"] * 7 + ["unterminated", "any_len", "zero", "short", "past_lane"]))
    payload = path + b"\0"
    if mode == "exact":
        dl = len(payload)
    elif mode == "unterminated":
        payload = path + b"Z" * draw(st.integers(0, 40))
        dl = len(payload)
    elif mode == "any_len":
        dl = draw(st.one_of(U32, st.integers(0, DATA + 8)))
    elif mode == "zero":
        dl = 0
    elif mode == "short":
        dl = draw(st.integers(1, len(payload)))
    else:
        dl = draw(st.integers(DATA + 1, 2**32 - 1))
    return {"data_len": dl, "payload": payload}


def _req(opcode: object, **kw: object) -> st.SearchStrategy[Req]:
    return st.builds(Req, opcode=opcode if isinstance(opcode, st.SearchStrategy) else st.just(opcode), **kw)


def _with_path(op: int, flags: st.SearchStrategy[int]) -> st.SearchStrategy[Req]:
    @st.composite
    def build(draw: st.DrawFn) -> Req:
        return Req(int(op), flags=draw(flags), fd=draw(FDS), offset=draw(OFFSETS), length=draw(SIZES),
                   **draw(path_fields()))  # type: ignore[arg-type]
    return build()


@st.composite
def io_req(draw: st.DrawFn) -> Req:
    op = draw(st.sampled_from([abi.Op.PREAD, abi.Op.PWRITE]))
    length = draw(SIZES)
    dl = draw(st.one_of(st.just(length & 0xFFFFFFFF), st.just(length & 0xFFFFFFFF), U32))
    n = min(length, DATA)
    return Req(int(op), fd=draw(FDS), offset=draw(OFFSETS), length=length, data_len=dl,
               flags=draw(st.one_of(st.just(0), U32)), payload=bytes([draw(st.integers(1, 255))]) * n)


@st.composite
def line_req(draw: st.DrawFn) -> Req:
    if draw(st.booleans()):
        length = draw(SIZES)
        dl = draw(st.one_of(st.just(length & 0xFFFFFFFF), U32))
        return Req(abi.Op.WRITE_LINE, flags=draw(st.one_of(st.sampled_from([0, 1, 2, 3]), U32)), length=length,
                   data_len=dl, payload=b"w" * min(length, DATA))
    return Req(abi.Op.READ_LINE, length=draw(SIZES), flags=draw(U32), data_len=draw(U32))


RAW = st.builds(Req, opcode=OPCODES, flags=U32, fd=I32, data_len=st.one_of(st.integers(0, DATA + 1), U32),
                offset=st.one_of(OFFSETS, U64), length=st.one_of(SIZES, U64),
                arg=st.tuples(U64, U64, U64, U64), payload=st.binary(max_size=64),
                rec_opcode=st.one_of(st.none(), OPCODES, U32), seq_step=SEQ_STEPS)
REQUESTS = st.one_of(
    _with_path(abi.Op.OPEN, OPEN_FLAGS), _with_path(abi.Op.OPEN, OPEN_FLAGS), _with_path(abi.Op.OPEN, OPEN_FLAGS),
    io_req(), io_req(), io_req(),
    _req(st.sampled_from([abi.Op.FSTAT, abi.Op.CLOSE, abi.Op.FSYNC]), fd=FDS),
    _req(st.sampled_from([abi.Op.FSTAT, abi.Op.CLOSE, abi.Op.FSYNC]), fd=FDS),
    _with_path(abi.Op.UNLINK, U32),
    line_req(),
    _req(st.one_of(st.sampled_from([abi.Op.NOP, abi.Op.WALLCLOCK, abi.Op.FILL, 0]), st.integers(13, 255)),
         flags=U32, fd=I32, offset=U64, length=U64, data_len=U32, rec_opcode=st.one_of(st.none(), U32),
         seq_step=SEQ_STEPS),
    RAW, RAW,
)


def _expect(r: Req, a: Answer, registered: frozenset[int]) -> None:
    """The oracle for one fuzzed request."""
    res, op = a.result, r.opcode
    assert _sane(res), f"result {res} is neither >= 0 nor a negative errno: {r}"
    if op not in registered:
        assert res == -errno.ENOSYS, f"unknown opcode answered {res}: {r}"
    elif op in (abi.Op.PREAD, abi.Op.PWRITE):
        if r.length > DATA or r.offset > MAX_OFFSET or r.offset + r.length > MAX_OFFSET:
            assert res == -errno.EINVAL, f"bad length/offset answered {res}: {r}"
        elif op == abi.Op.PWRITE and r.data_len != r.length:
            assert res == -errno.EINVAL, f"data_len mismatch answered {res}: {r}"
        else:
            assert res <= r.length, f"moved {res} bytes for a length of {r.length}: {r}"
    elif op in (abi.Op.OPEN, abi.Op.UNLINK):
        if r.data_len == 0:
            assert res == -errno.EINVAL, f"empty path answered {res}: {r}"
        elif r.data_len > abi.PATH_MAX:
            assert res == -errno.ENAMETOOLONG, f"data_len {r.data_len} answered {res}: {r}"
        elif b"\0" not in r.payload[:r.data_len]:   # the junk after the payload is not NUL either
            assert res == -errno.ENAMETOOLONG, f"unterminated path answered {res}: {r}"
        elif not r.payload.startswith(b"/"):
            assert res == -errno.EINVAL, f"relative path answered {res}: {r}"
        if op == abi.Op.OPEN and res >= 0:
            assert FIRST_FD <= res < FIRST_FD + MAX_FDS and (r.flags & ~abi.O_KNOWN) == 0, f"opened {res}: {r}"
            assert (r.flags & abi.O_ACCMODE) != abi.O_ACCMODE
    elif op == abi.Op.WRITE_LINE:
        if r.flags not in (1, 2):
            assert res == -errno.EBADF, f"write_line to stream {r.flags} answered {res}"
        elif r.length > DATA or r.data_len != r.length:
            assert res == -errno.EINVAL, f"bad line length answered {res}: {r}"
        else:
            assert res == r.length
    elif op == abi.Op.READ_LINE:
        if r.length < 1 or r.length > DATA:
            assert res == -errno.EINVAL, f"bad capacity answered {res}: {r}"
        else:
            assert 0 <= res <= r.length
    elif op == abi.Op.WALLCLOCK:
        assert res > 1_600_000_000 * 10**9
    elif op == abi.Op.NOP:
        assert res == 0


def _short(b: bytes, n: int = 90) -> str:
    return repr(b) if len(b) <= n else f"{b[:n]!r}... ({len(b)} bytes)"


def _fill(r: Req, sandbox: str, root: str) -> Req:
    """Fills in the sandbox's own paths, and keeps the fuzzer away from /keep."""
    p = r.payload.replace(b"@SANDBOX", sandbox.encode().lstrip(b"/")).replace(b"@ROOT", root.encode().lstrip(b"/"))
    p = p.replace(b"keep", b"kexp")
    if p != r.payload:
        r = replace(r, payload=p, data_len=len(p) if r.data_len == len(r.payload) else r.data_len)
    return r


# No shrinking unless asked for: with ~50 requests an example and a shared file system it
# takes minutes; a failure names the request (or, for a change outside the root, lists the
# batch's path requests and their answers) without it.
PHASES = (Phase.explicit, Phase.generate) + ((Phase.shrink,) if os.environ.get("GPUVFS_FUZZ_SHRINK") else ())


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=st.lists(REQUESTS, min_size=40, max_size=NLANES - 8),
       reads=st.lists(st.tuples(st.integers(0, REF.size + 50), st.integers(0, DATA)), min_size=1, max_size=5),
       shuffle_seed=st.integers(0, 2**32 - 1))
def _fuzz_one_batch(h: Harness, sandbox: Sandbox, batch: list[Req], reads: list[tuple[int, int]],
                    shuffle_seed: int) -> None:
    """One example: ~50 fuzzed requests and a few valid ones, shuffled over the lanes, in one sweep."""
    sandbox.reset()
    sandbox.begin()
    h.new_table()
    # fds for the fuzzed requests to hit (opened one at a time: the same numbers every example)
    for i, (path, flags) in enumerate(SETUP_OPENS):
        fd = h.open(path, flags)
        assert fd == FIRST_FD + i, f"the server stopped serving valid opens: {path} -> {fd}"
    ref_fd = h.open("/keep/ref.bin")
    assert ref_fd >= FIRST_FD, f"the server stopped serving valid opens: {ref_fd}"
    fuzz = [_fill(r, sandbox.sandbox, sandbox.root) for r in batch]
    # A fuzzed close must not close our reference fd under our own reads (that would be a
    # correct -EBADF, just not one this test can predict).
    fuzz = [replace(r, fd=NEVER_FD) if r.opcode == abi.Op.CLOSE and r.fd == ref_fd else r for r in fuzz]
    valid = [Req(abi.Op.PREAD, fd=ref_fd, offset=off, length=n) for off, n in reads]
    valid += [h.open_req("/keep/ref.bin"), Req(abi.Op.FSTAT, fd=ref_fd), Req(abi.Op.NOP)]
    tagged = [(r, False) for r in fuzz] + [(r, True) for r in valid]
    rnd = random.Random(shuffle_seed)
    rnd.shuffle(tagged)
    reqs = [r for r, _ in tagged]
    answers = h.run(reqs, rnd.sample(range(NLANES), len(reqs)))   # any lanes, not only the first
    extra_fd = None
    for (r, is_valid), a in zip(tagged, answers):
        _expect(r, a, h.registered)
        if not is_valid:
            continue
        if r.opcode == abi.Op.PREAD:
            want = REF[r.offset:r.offset + r.length].tobytes()
            assert a.result == len(want), f"valid pread {r} answered {a.result}"
            assert a.data[:len(want)] == want, f"valid pread {r}: wrong bytes"
        elif r.opcode == abi.Op.OPEN:
            assert a.result >= FIRST_FD or a.result == -errno.EMFILE, f"valid open answered {a.result}"
            extra_fd = a.result if a.result >= 0 else None
            if extra_fd is not None:
                assert a.aux[0] == REF.size
        elif r.opcode == abi.Op.FSTAT:
            assert a.result == 0 and a.aux[0] == REF.size
    assert h.close_fd(ref_fd) == 0
    if extra_fd is not None:
        assert h.close_fd(extra_fd) in (0, -errno.EBADF)   # a fuzzed close may have got it first
    try:
        sandbox.check_untouched()
    except AssertionError as e:
        paths = [f"{abi.Op(r.opcode).name} flags={r.flags:#x} {_short(r.payload[:r.data_len])} -> {a.result}"
                 for (r, _), a in zip(tagged, answers) if r.opcode in (abi.Op.OPEN, abi.Op.UNLINK)]
        raise AssertionError(f"{e}\nthe batch's path requests:\n  " + "\n  ".join(paths)) from None


def test_fuzz_server(h: Harness, sandbox: Sandbox, record_property: pytest.RecordProperty) -> None:
    """EXAMPLES batches of fuzzed requests (deterministic: derandomized, no database)."""
    t0 = time.perf_counter()
    _fuzz_one_batch(h, sandbox)
    record_property("requests", h.sent)
    print(f"fuzz: {h.sent} requests in {EXAMPLES} batches, {time.perf_counter() - t0:.1f} s; outcomes: "
          + ", ".join(f"{op}:{res}={n}" for (op, res), n in sorted(h.outcomes.items())))
    assert h.sent >= EXAMPLES * 40, f"only {h.sent} requests were sent"
    assert dict(h.answers) and max(h.answers.values()) == 1, "a request was answered twice"
    sandbox.check_content()


def test_fuzz_totals(h: Harness, sandbox: Sandbox) -> None:
    """A short sequential run after everything: the server still serves, nothing leaked."""
    fd = h.open("/keep/ref.bin")
    a = h.pread(fd, 5, DATA)
    assert a.result == DATA and a.data == REF[5:5 + DATA].tobytes()
    assert h.close_fd(fd) == 0 and len(h.table) == 0


def test_pooled_requests_are_counted(h: Harness) -> None:
    """hostcalls_pooled counts the requests handed to the worker pool, not those answered
    on the polling thread (an inline handler that accepts, a non-blocking route)."""
    inline_ok = 0x7C
    to_pool = 0x7D
    h.server.register(inline_ok, lambda lane, q: 1, blocking=True, inline=lambda lane, q: 2)
    h.server.register(to_pool, lambda lane, q: 3, blocking=True, inline=lambda lane, q: None)
    L, lane = h.lanes, 5
    before = h.server.counters.snapshot()
    for op, want, pooled in ((inline_ok, 2, 0), (to_pool, 3, 1), (abi.Op.NOP, 0, 0)):
        w = abi.encode_req_word(op, int(L.req_word[lane]) + 1)
        L.req_word[lane] = w
        assert h.server.sweep() == 1
        deadline = time.monotonic() + 10
        while int(L.resp_word[lane]) & abi.WORD_SEQ_MASK != w & abi.WORD_SEQ_MASK:
            assert time.monotonic() < deadline, "no answer"
            time.sleep(0.001)
        assert abi.decode_resp_word(int(L.resp_word[lane]), length=0) == want
        after = h.server.counters.snapshot()
        assert after["hostcalls_pooled"] - before["hostcalls_pooled"] == pooled
        assert after["hostcalls"] - before["hostcalls"] == 1
        before = after


def test_inline_handlers_see_how_many_requests_came_together(h: Harness) -> None:
    """Server.dispatching, what an inline handler knows of the load (the cache reads a fill
    inline only when it came alone): the number of requests other than NOPs that the sweep
    handing them out took; 1 for a lone request on either of the sweep's lone-lane paths."""
    op = 0x7B
    seen: list[int] = []
    h.server.register(op, lambda lane, q: 1, blocking=True,
                      inline=lambda lane, q: seen.append(h.server.dispatching) or 2)
    L, srv = h.lanes, h.server
    for lanes, nops, want in (([3], [], [1]),                      # a lone request
                              ([3, 4, 9], [5, 6], [3, 3, 3]),      # three, NOPs beside them
                              ([7], [2, 8], [1]),                  # one, among NOPs
                              ([7], [], [1]),                      # one again: now the lone lane's
                              ([7], [], [1])):                     # path, with no NumPy call
        seen.clear()
        srv.dispatching = -1                                       # what a path that set nothing leaves
        _post_words(L, nops)
        words = _post_words(L, lanes, op)
        assert srv.sweep() == len(lanes) + len(nops)
        assert seen == want
        assert all(abi.decode_resp_word(int(L.resp_word[i]), length=0) == 2
                   and int(L.resp_word[i]) & abi.WORD_SEQ_MASK == w & abi.WORD_SEQ_MASK for i, w in words.items())


def test_batch_routes_take_their_requests_together_and_decline_to_the_lane_way(h: Harness) -> None:
    """A route's batch handler gets a sweep's requests of its opcode, with their words, when
    there are two or more (never one), beside NOPs and other opcodes; what it takes is its
    own to answer (DELEGATED: the server neither answers nor tracks it, and the source's
    busy() keeps the polling thread polling); what it declines goes the per-lane way; a
    batch handler that fails takes nothing and every request still gets an answer."""
    op, other = 0x79, 0x7A
    L, srv = h.lanes, h.server
    calls: list[list[int]] = []
    taken: dict[int, int] = {}                                 # lane -> word, the handler's to answer
    fail = [False]

    def batch(reqs: list[tuple[int, int]]) -> list[int]:
        lanes = [lane for lane, _ in reqs]
        calls.append(lanes)
        assert all(int(L.req_word[i]) == w and w >> abi.WORD_SHIFT == op for i, w in reqs)
        if fail[0]:
            raise RuntimeError("injected")
        taken.update((i, w) for i, w in reqs if i % 2 == 0)   # odd lanes are declined
        return [i for i in lanes if i % 2 == 0]

    def answer_taken(result: int) -> None:                     # as the work that took them would
        for i, w in taken.items():
            L.resp_word[i] = abi.encode_resp_word(w, result, length=4096)
        taken.clear()

    srv.register(op, lambda lane, q: 7, blocking=True, inline=lambda lane, q: 7, batch=batch)
    srv.register(other, lambda lane, q: 5)

    def answer_of(lane: int, w: int) -> int | None:
        r = int(L.resp_word[lane])
        return abi.decode_resp_word(r, length=4096) if r & abi.WORD_SEQ_MASK == w & abi.WORD_SEQ_MASK else None

    words = _post_words(L, [2, 3, 4, 9], op) | _post_words(L, [5], other)
    _post_words(L, [6, 7])                                     # NOPs beside them
    assert srv.sweep() == 7
    assert calls == [[2, 3, 4, 9]] and sorted(taken) == [2, 4]
    assert [answer_of(i, words[i]) for i in (3, 9, 5)] == [7, 7, 5]   # declined and other: per lane
    assert answer_of(2, words[2]) is None and answer_of(4, words[4]) is None   # taken: not by the server
    assert not srv._started
    assert srv.sweep() == 0                                    # nothing more to do for them
    answer_taken(4096)
    assert answer_of(4, words[4]) == 4096 and answer_of(2, words[2]) == 4096
    assert srv.counters.ops.get(op, 0) == 4                   # two taken, two declined and served

    calls.clear()                                              # one request: never batched
    w1 = _post_words(L, [8], op)
    assert srv.sweep() == 1 and calls == [] and answer_of(8, w1[8]) == 7
    w1 = _post_words(L, [8], op) | _post_words(L, [5], other)  # one of its opcode among others
    assert srv.sweep() == 2 and calls == [] and answer_of(8, w1[8]) == 7

    calls.clear()                                              # more than SMALL_SWEEP: the vector path
    many = list(range(20, 20 + SMALL_SWEEP + 4))
    w3 = _post_words(L, many, op)
    _post_words(L, [40, 41, 42])
    assert srv.sweep() == len(many) + 3 and calls == [many]
    assert all(answer_of(i, w3[i]) == (None if i % 2 == 0 else 7) for i in many)
    answer_taken(-errno.EIO)
    assert all(answer_of(i, w3[i]) == (-errno.EIO if i % 2 == 0 else 7) for i in many)
    w3 = _post_words(L, many, op)                              # the lanes again, at once
    assert srv.sweep() == len(many) and calls[-1] == many

    calls.clear()
    taken.clear()
    fail[0] = True                                             # a failing batch handler
    w2 = _post_words(L, [10, 11, 12], op)
    assert srv.sweep() == 3 and calls == [[10, 11, 12]]
    assert [answer_of(i, w2[i]) for i in (10, 11, 12)] == [7, 7, 7]


def test_a_few_lanes_all_nops_hand_over_to_the_busy_spin() -> None:
    """With SMALL_SWEEP lanes or fewer, a sweep of NOPs on every lane goes _sweep_few's way and
    still marks the case _spin_busy answers (every lane's word a NOP); one lane that is not a
    NOP, or a lane left out, does not."""
    L = Lanes(backends.select("cpu"), SMALL_SWEEP, 4096)
    srv = Server(L)
    try:
        srv.register(0x7B, lambda lane, q: 1)
        for lanes, other, want in ((range(SMALL_SWEEP), [], True), (range(1, SMALL_SWEEP), [], False),
                                   (range(1, SMALL_SWEEP), [0], False), (range(SMALL_SWEEP), [], True)):
            _post_words(L, list(lanes))
            _post_words(L, other, 0x7B)
            assert srv.sweep() == len(lanes) + len(other)
            assert srv._all_nops is want
    finally:
        srv.close()
        L.close()


def test_spin_answers_a_lone_nop_and_leaves_the_rest_to_the_sweep(h: Harness) -> None:
    """The polling thread's spin answers a NOP on the lane of the last lone request itself
    (the one-lane round trip's path), counts it, and takes it once; anything else it
    hands to the sweep: another opcode on that lane, other lanes, any lane after a sweep
    that took several."""
    L, srv = h.lanes, h.server
    h.run([Req(abi.Op.NOP)], [5])          # lane 5 is now the lone lane

    def post(lane: int, op: int) -> int:
        w = abi.encode_req_word(op, int(L.req_word[lane]) + 1)
        L.req_word[lane] = w
        return w

    before = srv.counters.hostcalls
    w5 = post(5, abi.Op.NOP)
    assert srv._spin() == (None, 1)
    assert int(L.resp_word[5]) == w5 and srv.counters.hostcalls == before + 1
    assert srv.sweep() == 0, "the spin's NOP was taken again by the sweep"

    # A NOP on lane 5 and a CLOSE on lane 9 at once: the spin answers the NOP, the sweep the CLOSE.
    L.resp["result"][9] = POISON
    L.req["fd"][9] = NEVER_FD              # the record before the word, as the device writes them
    w5, w9 = post(5, abi.Op.NOP), post(9, abi.Op.CLOSE)
    sb, n = srv._spin()
    assert n == 1 and sb is not None and int(L.resp_word[5]) == w5
    assert int(L.resp_word[9]) & abi.WORD_SEQ_MASK != w9 & abi.WORD_SEQ_MASK, "the spin answered a CLOSE"
    assert srv.sweep(sb) == 1
    assert abi.decode_resp_word(int(L.resp_word[9]), length=0) == -errno.EBADF
    assert srv.counters.hostcalls == before + 3 and srv.sweep() == 0

    # The sweep that took two requests left no lone lane: a NOP on lane 5 goes to the sweep.
    w5 = post(5, abi.Op.NOP)
    sb, n = srv._spin()
    assert n == 0 and sb is not None and int(L.resp_word[5]) != w5
    assert srv.sweep(sb) == 1 and int(L.resp_word[5]) == w5     # a lone request again: lane 5

    # Another opcode on the lone lane: the sweep's.
    L.req["fd"][5] = NEVER_FD
    w5 = post(5, abi.Op.CLOSE)
    sb, n = srv._spin()
    assert n == 0 and sb is not None
    assert srv.sweep(sb) == 1 and abi.decode_resp_word(int(L.resp_word[5]), length=0) == -errno.EBADF
    assert srv.sweep() == 0 and srv.counters.hostcalls == before + 5
