"""The native reader pool (gpuvfs/hostcall/readers.c) on its own, then as the cache's fill
path in a Runtime. The pool needs a C compiler, which the cpu backend's tests need anyway."""
from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from typing import Any, Iterator

import numpy as np
import pytest

import gpuvfs
from gpuvfs.hostcall.readers import NativeReaders

POISON = 0xA5


@pytest.fixture
def data_file(tmp_path):
    data = np.random.default_rng(11).integers(0, 256, 3 * 1000 * 1000 + 17, dtype=np.uint8)
    p = tmp_path / "data.bin"
    data.tofile(p)
    fd = os.open(p, os.O_RDONLY)
    st = os.fstat(fd)
    yield fd, data, st
    os.close(fd)


def reap_all(rp: NativeReaders, n: int, timeout: float = 30.0) -> dict[int, int]:
    out: dict[int, int] = {}
    end = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < end, f"only {len(out)} of {n} jobs finished"
        if rp.ready():
            for tag, result in rp.reap():
                assert tag not in out, f"job {tag} reported twice"
                out[tag] = result
        else:
            time.sleep(0.0005)
    return out


def check_reads(data: np.ndarray, bufs: list[np.ndarray], want: dict[int, tuple[int, int]],
                got: dict[int, int]) -> None:
    """Each job `tag` (n bytes at off) read what the file has there, into bufs[tag], and
    wrote nothing past it (the buffers were poisoned)."""
    for tag, (n, off) in want.items():
        expect = data[off:off + n]
        assert got[tag] == expect.size, (tag, n, off)
        assert np.array_equal(bufs[tag][:expect.size], expect)
        assert (bufs[tag][expect.size:] == POISON).all(), "bytes written past what was read"


def test_random_reads_give_the_files_bytes(data_file) -> None:
    fd, data, st = data_file
    rng = np.random.default_rng(3)
    jobs = 400
    bufs = [np.full(70000, POISON, dtype=np.uint8) for _ in range(jobs)]
    want = {}
    rp = NativeReaders(8, jobs)
    try:
        for tag in range(jobs):
            n = int(rng.integers(0, 70000))
            off = int(rng.integers(0, data.size + 5000))   # some past the end: short or empty reads
            want[tag] = (n, off)
            rp.submit(tag, fd, bufs[tag].ctypes.data, n, off, st.st_size, st.st_mtime_ns)
        got = reap_all(rp, jobs)
    finally:
        rp.close()
    check_reads(data, bufs, want, got)


def test_jobs_submitted_together_read_the_files_bytes(data_file) -> None:
    """submit_jobs: many jobs packed with JOB, one call; it queues only what the pool has
    room for (the rest is the caller's), and refuses pushed jobs whole."""
    import ctypes
    from gpuvfs.hostcall.readers import JOB
    fd, data, st = data_file
    rng = np.random.default_rng(5)
    cap, k = 48, 64
    bufs = [np.full(70000, POISON, dtype=np.uint8) for _ in range(k)]
    jobs = bytearray(JOB.size * k)
    want = {}
    for tag in range(k):
        n, off = int(rng.integers(1, 70000)), int(rng.integers(0, data.size + 5000))
        want[tag] = (n, off)
        JOB.pack_into(jobs, JOB.size * tag, tag, fd, 0, bufs[tag].ctypes.data, n, off, st.st_size, st.st_mtime_ns, 0, 0, 0)
    address = ctypes.addressof(ctypes.c_char.from_buffer(jobs))
    rp = NativeReaders(4, cap)
    try:
        pushed = bytearray(jobs[:JOB.size])
        JOB.pack_into(pushed, 0, 0, fd, 0, bufs[0].ctypes.data, 10, 0, st.st_size, st.st_mtime_ns, 12345, 0, 0)
        with pytest.raises(OSError) as e:
            rp.submit_jobs(ctypes.addressof(ctypes.c_char.from_buffer(pushed)), 1)
        assert e.value.errno == errno.EINVAL
        mixed = bytearray(jobs[:3 * JOB.size]) + pushed        # a pushed job after three good ones
        with pytest.raises(OSError) as e:
            rp.submit_jobs(ctypes.addressof(ctypes.c_char.from_buffer(mixed)), 4)
        assert e.value.errno == errno.EINVAL
        assert not rp.ready() and (bufs[0] == POISON).all()    # refused whole: nothing was queued
        assert rp.submit_jobs(address, k) == cap               # room for cap jobs only
        got = reap_all(rp, cap)
        assert rp.submit_jobs(address + JOB.size * cap, k - cap) == k - cap
        got.update(reap_all(rp, k - cap))
    finally:
        rp.close()
    check_reads(data, bufs, want, got)


@pytest.mark.parametrize("together", [False, True], ids=["submit", "submit_jobs"])
def test_jobs_with_an_answer_answer_themselves(data_file, together) -> None:
    """answer_into + a job's answer word (readers.c, R4): the job answers its own request as
    Server.answer would, into words[tag] (and the record at records[tag] when due): code 255
    for all the bytes it asked for, the code alone for -127..126 (errors, tiny short reads),
    else the record then code 0; nothing comes back through reap(). The lane's busy flag is
    set while the job is out and clear once its word is there; its hold counter goes up while
    it is queued and back to 0 after (R5); the counts add up. Jobs without a word reap as
    before."""
    import ctypes
    from gpuvfs import abi
    from gpuvfs.hostcall.readers import JOB
    fd, data, st = data_file
    rng = np.random.default_rng(8)
    k = 300
    words = np.zeros(k, dtype=np.uint32)
    records = np.zeros((k, 4), dtype=np.int64)
    records[:] = -7                                   # poison: a record left unwritten shows
    hold = np.zeros(1, dtype=np.int32)
    bufs = [np.full(70000, POISON, dtype=np.uint8) for _ in range(k)]
    want: dict[int, tuple[int, int]] = {}
    seqs: dict[int, int] = {}
    rp = NativeReaders(6, k)
    try:
        with pytest.raises(OSError):
            rp.answer_into(0, records.ctypes.data, k)
        rp.answer_into(words.ctypes.data, records.ctypes.data, k)
        with pytest.raises(OSError) as e:
            rp.answer_into(words.ctypes.data, records.ctypes.data, k)
        assert e.value.errno == errno.EBUSY
        busy = rp.busy
        assert busy is not None and busy.shape == (k,) and not busy.any()
        jobs = bytearray(JOB.size * k)
        for tag in range(k):
            n = int(rng.integers(1, 70000))
            off = int(rng.integers(0, data.size + 5000)) if tag % 5 else data.size - n // 2   # some short
            if tag % 13 == 6:
                off = data.size - 50                                                          # short, tiny
            seq = (tag * 7919 + 1) & abi.WORD_SEQ_MASK
            word = 0 if tag % 7 == 3 else abi.CODE_LENGTH << abi.WORD_SHIFT | seq
            size = st.st_size if tag % 11 != 4 else st.st_size + 1                            # some -ESTALE
            want[tag] = (n, off)
            if word:
                seqs[tag] = seq
            if together:
                JOB.pack_into(jobs, JOB.size * tag, tag, fd, word, bufs[tag].ctypes.data, n, off, size,
                              st.st_mtime_ns, 0, 0, hold.ctypes.data)
            else:
                rp.submit(tag, fd, bufs[tag].ctypes.data, n, off, size, st.st_mtime_ns, answer=word,
                          users=hold.ctypes.data)
        if together:
            assert rp.submit_jobs(ctypes.addressof(ctypes.c_char.from_buffer(jobs)), k) == k
        got = reap_all(rp, k - len(seqs))               # the jobs without a word
        end = time.monotonic() + 30
        while True:
            done = [t for t in seqs if int(words[t]) & abi.WORD_SEQ_MASK == seqs[t]]
            assert not busy[done].any(), "a lane still busy after its answer"
            if len(done) == len(seqs):
                break
            assert time.monotonic() < end, f"only {len(done)} of {len(seqs)} jobs answered"
            time.sleep(0.0005)
        answered, nbytes, errors = rp.counts()
        assert rp.in_flight() == 0 and int(hold[0]) == 0 and not busy.any()
        assert not rp.ready() and rp.reap() == []
    finally:
        rp.close()
    assert answered == len(seqs)
    for tag, seq in seqs.items():                       # decode as the device would
        n, _ = want[tag]
        w = int(words[tag])
        res = abi.decode_resp_word(w, length=n)
        if res is None:
            res = int(records[tag, 0])
            assert res != -7 and records[tag, 1:].tolist() == [0, 0, 0], tag
        else:
            assert records[tag].tolist() == [-7] * 4, f"job {tag}: answered in the word, record written too"
        got[tag] = res
    assert errors == sum(1 for t in seqs if got[t] < 0)
    assert {got[t] for t in want if t % 11 == 4} == {-errno.ESTALE}
    assert any(-127 <= got[t] <= 126 and got[t] >= 0 for t in seqs), "no tiny short read was answered"
    assert any(got[t] > 126 and got[t] != want[t][0] for t in seqs), "no answer went through the record"
    assert nbytes == sum(r for r in got.values() if r > 0)
    check_reads(data, bufs, {t: w for t, w in want.items() if t % 11 != 4}, got)


@pytest.mark.parametrize("together", [False, True], ids=["submit", "submit_jobs"])
def test_jobs_copy_from_a_mapped_file(data_file, together) -> None:
    """map_file + a job's src: the bytes are copied from the mapping, up to the size the job
    checked (short at the end of the file, nothing past it); a job whose file changed reads
    nothing (-ESTALE), mapped or not."""
    import ctypes
    from gpuvfs.hostcall.readers import JOB
    fd, data, st = data_file
    rng = np.random.default_rng(9)
    k = 200
    bufs = [np.full(70000, POISON, dtype=np.uint8) for _ in range(k)]
    want: dict[int, tuple[int, int]] = {}
    rp = NativeReaders(4, k)
    try:
        assert rp.map_file(fd, 0) == 0
        src = rp.map_file(fd, st.st_size)
        assert src
        jobs = bytearray(JOB.size * k)
        for tag in range(k):
            n = int(rng.integers(1, 70000))
            off = int(rng.integers(0, data.size + 5000)) if tag % 4 else data.size - n // 3   # some short, past the end
            size = st.st_size if tag % 9 != 5 else st.st_size - 1                           # some -ESTALE
            want[tag] = (n, off)
            if together:
                JOB.pack_into(jobs, JOB.size * tag, tag, fd, 0, bufs[tag].ctypes.data, n, off, size, st.st_mtime_ns,
                              0, src, 0)
            else:
                rp.submit(tag, fd, bufs[tag].ctypes.data, n, off, size, st.st_mtime_ns, src=src)
        if together:
            assert rp.submit_jobs(ctypes.addressof(ctypes.c_char.from_buffer(jobs)), k) == k
        got = reap_all(rp, k)
        rp.unmap_file(src, st.st_size)
    finally:
        rp.close()
    assert {got[t] for t in want if t % 9 == 5} == {-errno.ESTALE}
    assert all((bufs[t] == POISON).all() for t in want if t % 9 == 5)
    check_reads(data, bufs, {t: w for t, w in want.items() if t % 9 != 5}, got)


def test_a_file_truncated_under_mapped_copies_fails_them_cleanly(tmp_path) -> None:
    """A file truncated and written again, over and over, while jobs copy from its mapping:
    the process survives the SIGBUS of a copy past the new end (the guard turns it into
    -ESTALE), and every job either reads exactly the file's bytes (it was whole and the same
    before and after the copy) or says -ESTALE. Each job expects the size and mtime seen
    when it was queued."""
    import threading
    rng = np.random.default_rng(12)
    size, n, k = 8 << 20, 1 << 20, 16
    data = rng.integers(0, 256, size, dtype=np.uint8)
    path = tmp_path / "shrinking.bin"
    data.tofile(path)
    fd = os.open(path, os.O_RDONLY)
    bufs = np.zeros((k, n), dtype=np.uint8)
    stop = threading.Event()

    def rewrite() -> None:                  # whole for a while; truncated for a while; written back
        w = os.open(path, os.O_WRONLY)
        pause = np.random.default_rng(13)
        try:
            while not stop.is_set():
                time.sleep(float(pause.uniform(0, 0.002)))
                os.ftruncate(w, int(pause.integers(0, size)))
                time.sleep(0.0005)
                for off in range(0, size, n):
                    os.pwrite(w, data[off:off + n].tobytes(), off)
        finally:
            os.close(w)

    rp = NativeReaders(4, k)
    faults0 = rp.faults()
    src = rp.map_file(fd, size)
    assert src
    t = threading.Thread(target=rewrite)
    t.start()
    results: list[int] = []
    try:
        start = time.monotonic()            # 2 s at least, and on until a copy faulted (10 s at most;
        while time.monotonic() < start + 2 or (rp.faults() == faults0 and time.monotonic() < start + 10):
            st = os.fstat(fd)
            if st.st_size != size:
                continue
            offs = rng.integers(0, size // n, k) * n
            bufs[:] = 0xEE
            for tag in range(k):
                rp.submit(tag, fd, bufs[tag].ctypes.data, n, int(offs[tag]), size, st.st_mtime_ns, src=src)
            got = reap_all(rp, k)
            for tag, r in got.items():
                results.append(r)
                if r >= 0:
                    assert r == n and np.array_equal(bufs[tag], data[offs[tag]:offs[tag] + n]), \
                        f"a copy that did not fail read {r} bytes, not the file's"
                else:
                    assert r == -errno.ESTALE, r
    finally:
        stop.set()
        t.join()
        rp.unmap_file(src, size)
        rp.close()
        os.close(fd)
    faults = rp.faults() - faults0          # (the deterministic check of the guard: tsan_readers.c)
    print(f"truncation race: {len(results)} copies, {results.count(n)} whole, "
          f"{results.count(-errno.ESTALE)} -ESTALE, {faults} cut short by SIGBUS")
    assert results.count(n) > 0 and results.count(-errno.ESTALE) > 0


def test_a_changed_file_reads_nothing_and_says_estale(data_file) -> None:
    fd, data, st = data_file
    buf = np.full(4096, POISON, dtype=np.uint8)
    rp = NativeReaders(2, 4)
    try:
        rp.submit(1, fd, buf.ctypes.data, 4096, 0, st.st_size + 1, st.st_mtime_ns)
        rp.submit(2, fd, buf.ctypes.data, 4096, 0, st.st_size, st.st_mtime_ns + 1)
        rp.submit(3, 999_999, buf.ctypes.data, 4096, 0)                  # no such fd
        got = reap_all(rp, 3)
    finally:
        rp.close()
    assert got == {1: -errno.ESTALE, 2: -errno.ESTALE, 3: -errno.EBADF}
    assert (buf == POISON).all()


def test_a_full_pool_refuses_rather_than_overwrites(data_file) -> None:
    fd, data, st = data_file
    bufs = [np.zeros(100, dtype=np.uint8) for _ in range(3)]
    rp = NativeReaders(1, 2)
    try:
        rp.submit(0, fd, bufs[0].ctypes.data, 100, 0)
        rp.submit(1, fd, bufs[1].ctypes.data, 100, 100)
        with pytest.raises(OSError) as e:     # two jobs held (queued, running or unreaped)
            rp.submit(2, fd, bufs[2].ctypes.data, 100, 200)
        assert e.value.errno == errno.EAGAIN
        assert reap_all(rp, 2) == {0: 100, 1: 100}
        rp.submit(2, fd, bufs[2].ctypes.data, 100, 200)  # room again once reaped
        assert reap_all(rp, 1) == {2: 100}
    finally:
        rp.close()
    for i, b in enumerate(bufs):
        assert np.array_equal(b, data[100 * i:100 * (i + 1)])


def test_close_runs_every_queued_job_first(data_file) -> None:
    fd, data, st = data_file
    jobs = 64
    buf = np.full((jobs, 40000), POISON, dtype=np.uint8)
    rp = NativeReaders(2, jobs)
    for j in range(jobs):
        rp.submit(j, fd, buf[j].ctypes.data, 40000, j * 40000)
    rp.close()                                 # no reap: the jobs still run, then the threads stop
    assert np.array_equal(buf.reshape(-1), data[:jobs * 40000])


def test_submitters_on_many_threads(data_file) -> None:
    """submit() is safe from any thread (one reaper): 8 threads submit at once."""
    fd, data, st = data_file
    per, nthreads = 50, 8
    bufs = np.full((nthreads * per, 5000), POISON, dtype=np.uint8)
    rp = NativeReaders(4, nthreads * per)
    start = threading.Barrier(nthreads)

    def submit(t: int) -> None:
        start.wait()
        for i in range(per):
            tag = t * per + i
            rp.submit(tag, fd, bufs[tag].ctypes.data, 5000, tag * 5000)

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(nthreads)]
    try:
        for th in threads:
            th.start()
        got = reap_all(rp, nthreads * per)
        for th in threads:
            th.join()
    finally:
        rp.close()
    assert set(got.values()) == {5000}
    assert np.array_equal(bufs.reshape(-1), data[:nthreads * per * 5000])


@pytest.mark.parametrize("push", [0, 1 << 16], ids=["pulled", "pushed"])
@pytest.mark.parametrize("native", ["1", "0"])
def test_runtime_fills_through_the_native_readers_or_the_pool(data_root, monkeypatch, native, push) -> None:
    """Fills (FILL, or FILL_PUSH with fill_push_bytes) read by the native readers, or with
    GPUVFS_NATIVE_READERS=0 by the Python pool: the same bytes either way."""
    monkeypatch.setenv("GPUVFS_NATIVE_READERS", native)
    data = np.random.default_rng(5).integers(0, 256, 5 * (1 << 20) + 333, dtype=np.uint8)
    data.tofile(os.path.join(data_root, "f.bin"))
    with gpuvfs.Runtime(root=data_root, backend="cpu", lane_bytes=1 << 20, cache_bytes=16 << 20,
                        fill_push_bytes=push) as rt:
        assert rt.cache_files.native == (native == "1")
        got = rt.asnumpy(rt.read("f.bin"))
        st = rt.stats()
    assert np.array_equal(got, data)
    assert st["errors"] == 0
    assert st["bytes_from_host"] == data.size
    assert (st["fills_pushed"] > 0) == bool(push)
    if native == "1":
        assert st["hostcalls_native"] >= 5 and st["hostcalls_pooled"] <= 1   # the LOOKUP alone pooled
    else:
        assert st["hostcalls_native"] == 0 and st["hostcalls_pooled"] >= 5


def test_a_version_the_readers_find_changed_is_retired(data_root) -> None:
    """A fill the native readers find stale (the file changed since its LOOKUP) is answered
    -ESTALE by its reader, which marks the version (readers.c, R5); the next look (here a
    LOOKUP of another file) retires it and closes its fd, as the polling thread's own stale
    fills do."""
    from gpuvfs import abi
    lane_bytes = 64 << 10
    rng = np.random.default_rng(7)
    files = {name: rng.integers(0, 256, 1 << 20, dtype=np.uint8) for name in ("a.bin", "b.bin")}
    with cache_files(data_root, files, 8, lane_bytes, 2) as (lanes, server, cf, fno):
        v = cf._by_no[fno["a.bin"]]
        for lane in (1, 2):
            lanes.req[lane]["offset"], lanes.req[lane]["length"] = lane * lane_bytes, lane_bytes
            lanes.req[lane]["arg"][0] = v.file_no
        time.sleep(0.01)
        with open(os.path.join(data_root, "a.bin"), "ab") as f:   # changed: another size, mtime
            f.write(b"more")
        for lane in (1, 2):
            take(server, lane, 60 + lane)
        assert cf.fill_batch([(lane, server.taken_word(lane)) for lane in (1, 2)]) == [1, 2]
        assert answers_of(cf, {1: lane_bytes, 2: lane_bytes}) == {1: -errno.ESTALE, 2: -errno.ESTALE}
        assert v.file_no in cf._by_no and not v.closed            # not looked at yet
        p = b"/b.bin\0"
        lanes.data[0, :len(p)] = np.frombuffer(p, np.uint8)
        cf.lookup(0, abi.Request(opcode=abi.Op.LOOKUP, data_len=len(p)))
        assert v.file_no not in cf._by_no and v.retired and v.closed
        with pytest.raises(OSError):
            os.fstat(v.osfd)                                      # its fd is closed


@pytest.mark.parametrize("map_files", [True, False], ids=["mapped", "read"])
def test_readers_map_files_and_evict_unmaps_them(data_root, monkeypatch, map_files) -> None:
    """With cache.MAP_FILES, a version the native readers fill is mapped at its first fill and
    stays mapped from one read to the next (its page-table entries are what the copies save);
    rt.evict() drops the mapping with the pages (a mapped file's pages cannot be dropped from
    the host's page cache), and the next read maps it again. Without (the default), nothing
    is mapped. Bytes right every time."""
    from gpuvfs.hostcall import cache
    monkeypatch.setattr(cache, "MAP_FILES", map_files)
    data = np.random.default_rng(6).integers(0, 256, 3 * (1 << 20) + 77, dtype=np.uint8)
    data.tofile(os.path.join(data_root, "m.bin"))
    with gpuvfs.Runtime(root=data_root, backend="cpu", lane_bytes=1 << 20, cache_bytes=16 << 20) as rt:
        if not rt.cache_files.native:
            pytest.skip("no native readers here")

        def mapped() -> list[int]:
            return [v.mapped for v in rt.cache_files._by_no.values()]

        assert np.array_equal(rt.asnumpy(rt.read("m.bin")), data)
        first = mapped()
        if not map_files:
            assert first == [-1] and rt.cache_files._mapped_bytes == 0   # -1: never mapped
            rt.evict()
            assert np.array_equal(rt.asnumpy(rt.read("m.bin")), data) and mapped() == [-1]
            return
        assert len(first) == 1 and first[0] > 0
        rt.evict("other.bin")                    # another file: this mapping stays
        assert mapped() == first
        rt.evict("m.bin")
        assert mapped() == [0] and rt.cache_files._mapped_bytes == 0
        assert np.array_equal(rt.asnumpy(rt.read("m.bin")), data)
        assert mapped()[0] > 0
        rt.evict()
        assert mapped() == [0]


def _reader_threads() -> int:
    n = 0
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                n += f.read().strip() == "gpuvfs-reader"
        except OSError:
            pass
    return n


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_a_runtime_that_fails_to_start_leaves_no_reader_threads(data_root) -> None:
    before = _reader_threads()
    for _ in range(3):
        with pytest.raises(ValueError, match="lane_bytes"):   # found after the readers started
            gpuvfs.Runtime(root=data_root, backend="cpu", lane_bytes=4096, page_size=65536, workers=8)
    assert _reader_threads() == before


@contextlib.contextmanager
def cache_files(root: str, files: dict[str, np.ndarray], count: int, lane_bytes: int,
                workers: int) -> Iterator[tuple[Any, Any, Any, dict[str, int]]]:
    """The cache's host side alone, on the cpu backend: `files` written under `root` and
    looked up; yields (lanes, server, cache files, name -> file_no). The test sweeps nothing:
    it calls the handlers itself. Skips where the native readers cannot be built."""
    from gpuvfs import abi, backends
    from gpuvfs.hostcall.cache import CacheFiles
    from gpuvfs.hostcall.paths import Confined
    from gpuvfs.hostcall.server import Lanes, Server
    for name, data in files.items():
        data.tofile(os.path.join(root, name))
    lanes = Lanes(backends.select("cpu"), count, lane_bytes)
    server = Server(lanes)
    cf = CacheFiles(server, Confined(root), workers=workers)
    try:
        if not cf.native:
            pytest.skip("no native readers here")
        fno = {}
        for name in files:
            p = f"/{name}\0".encode()
            lanes.data[0, :len(p)] = np.frombuffer(p, np.uint8)
            fno[name] = cf.lookup(0, abi.Request(opcode=abi.Op.LOOKUP, data_len=len(p)))[0]
        yield lanes, server, cf, fno
    finally:
        server.close()
        cf.close()
        lanes.close()


def take(server: Any, lane: int, seq: int) -> None:
    """Marks a FILL with `seq` taken on `lane`, as a sweep does before it hands the request
    out (the readers answer with the seq of the word taken: Server.taken_word)."""
    from gpuvfs import abi
    server._taken[lane] = np.uint32(abi.encode_req_word(abi.Op.FILL, seq)).view(np.int32)


def answers_of(cf: Any, asked: dict[int, int], timeout: float = 10.0) -> dict[int, int]:
    """lane -> result of the fills the native readers took on the lanes in `asked` (lane ->
    the length asked for), as the device decodes them from the response words (readers.c,
    R4), once every one was answered with the seq of the word the server took on its lane
    (or the time is up). Nothing may come back through reap()."""
    from gpuvfs import abi
    L = cf._server.lanes
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        seq = {lane: cf._server.taken_word(lane) & abi.WORD_SEQ_MASK for lane in asked}
        if all(int(L.resp_word[lane]) & abi.WORD_SEQ_MASK == seq[lane] for lane in asked):
            break
        time.sleep(0.001)
    assert not cf.ready(), "a fill the readers answered came back through reap() too"
    out = {}
    for lane, n in asked.items():
        w = int(L.resp_word[lane])
        if w & abi.WORD_SEQ_MASK == cf._server.taken_word(lane) & abi.WORD_SEQ_MASK:
            r = abi.decode_resp_word(w, length=n)
            out[lane] = int(L.resp[lane]["result"]) if r is None else r
    return out


def test_a_second_fill_on_a_busy_lane_is_refused_and_loses_nothing(data_root) -> None:
    """A device that breaks the protocol (a new FILL on a lane whose fill is still out) gets
    -EBUSY, from the readers' busy flag or, for a pushed fill, the server's record; the fill
    already out still answers, and the version's holds come back to 0. (A read out is shown
    by setting the lane's flag: a real one may finish before the second call.)"""
    from gpuvfs import abi
    from gpuvfs.hostcall.server import DELEGATED
    data = np.random.default_rng(2).integers(0, 256, 1 << 20, dtype=np.uint8)
    with cache_files(data_root, {"f.bin": data}, 4, 1 << 16, 2) as (lanes, server, cf, fno):
        file_no = fno["f.bin"]
        q = abi.Request(opcode=abi.Op.FILL, offset=0, length=1 << 16, arg0=file_no)
        tiny = abi.Request(opcode=abi.Op.FILL, offset=0, length=4096, arg0=file_no)
        assert cf.fill_push_inline(0, q) is None                  # no stage: FILL_PUSH is the pool's
        take(server, 0, 5)
        started = cf._start(0, q, 0)
        got = answers_of(cf, {0: 1 << 16})
        for lane in (0, 1):
            lanes.req[lane]["length"], lanes.req[lane]["arg"][0] = 1 << 16, file_no
        for busy_how in ("readers", "server"):
            take(server, 1, 9 if busy_how == "readers" else 10)
            if busy_how == "readers":
                cf._busy[0] = 1
            else:
                server._started[0] = (0, 0)
            for call in (lambda: cf._start(0, q, 0), lambda: cf.fill_inline(0, tiny),   # not inline either
                         lambda: cf.fill_batch([(0, 0), (1, server.taken_word(1))])):
                try:
                    out = call()
                except OSError as e:
                    assert e.errno == errno.EBUSY
                else:
                    assert out == [1], f"fill_batch took a busy lane: {out}"   # declined: the per-lane way
            cf._busy[0] = 0
            server._started.pop(0, None)
            assert answers_of(cf, {1: 1 << 16}) == {1: 1 << 16}
        assert started is DELEGATED and got == {0: 1 << 16}
        assert np.array_equal(lanes.data[0], data[:1 << 16])
        v = cf._by_no[file_no]
        assert v.users == 0 and cf._holds.count(v.hold[0]) == 0 and not cf._busy.any()


def test_fills_are_read_inline_alone_and_by_the_readers_under_load(data_root) -> None:
    """The polling thread reads a fill itself only when it is tiny, or when it came alone
    (the sweep took no other request and no native read is out); under load every other
    fill goes to the native readers, which read in parallel where the polling thread would
    read one at a time. Bytes checked either way."""
    from gpuvfs import abi
    from gpuvfs.hostcall.cache import FILL_INLINE_TINY
    from gpuvfs.hostcall.files import CAN_READ_CACHED
    from gpuvfs.hostcall.server import DELEGATED
    if not CAN_READ_CACHED:
        pytest.skip("no RWF_NOWAIT here: no fill is read inline")
    lane_bytes = 256 << 10
    data = np.random.default_rng(3).integers(0, 256, 4 * lane_bytes, dtype=np.uint8)
    with cache_files(data_root, {"f.bin": data}, 5, lane_bytes, 2) as (lanes, server, cf, fno):
        lanes.data[:] = 0xEE

        def fill(lane: int, off: int, n: int, together: int) -> object:
            server.dispatching = together
            take(server, lane, 40 + lane)
            return cf.fill_inline(lane, abi.Request(opcode=abi.Op.FILL, offset=off, length=n, arg0=fno["f.bin"]))

        assert fill(0, 0, lane_bytes, 1) == lane_bytes                  # alone: read here, at once
        assert fill(1, lane_bytes, lane_bytes, 3) is DELEGATED          # with others: to the readers
        readers = cf._readers
        readers.in_flight = lambda: 1                                   # (one may finish before the next call)
        assert fill(2, 2 * lane_bytes, lane_bytes, 1) is DELEGATED      # alone, but a read is out
        del readers.in_flight
        assert fill(3, 3 * lane_bytes, FILL_INLINE_TINY, 3) == FILL_INLINE_TINY   # tiny: read here
        assert answers_of(cf, {1: lane_bytes, 2: lane_bytes}) == {1: lane_bytes, 2: lane_bytes}
        assert fill(4, lane_bytes, lane_bytes, 1) == lane_bytes        # the readers idle again: here
        for lane, (off, n) in enumerate([(0, lane_bytes), (lane_bytes, lane_bytes), (2 * lane_bytes, lane_bytes),
                                         (3 * lane_bytes, FILL_INLINE_TINY), (lane_bytes, lane_bytes)]):
            assert np.array_equal(lanes.data[lane, :n], data[off:off + n]), lane


def test_fills_taken_together_go_to_the_readers_in_one_batch(data_root) -> None:
    """CacheFiles.fill_batch (a sweep's FILLs, together): the fills it can take go to the
    native readers in one call, read the right bytes and answer themselves with the seq of
    their own request word; it declines, for the per-lane way, a tiny fill, a length over the
    lane's buffer, an offset out of range, an unknown version and a lane whose read is still
    out; every hold on a version is given back."""
    from gpuvfs import abi
    from gpuvfs.hostcall.cache import FILL_INLINE_TINY
    from gpuvfs.hostcall.files import MAX_OFFSET
    lane_bytes = 64 << 10
    rng = np.random.default_rng(4)
    files = {name: rng.integers(0, 256, 1 << 20, dtype=np.uint8) for name in ("a.bin", "b.bin")}
    with cache_files(data_root, files, 16, lane_bytes, 3) as (lanes, server, cf, fno):
        lanes.data[:] = 0xEE
        # lane -> (file, offset, length, taken?)
        plan = {1: ("a.bin", 0, lane_bytes, True), 2: ("b.bin", 3 * lane_bytes + 5, lane_bytes - 5, True),
                3: ("a.bin", 7 * lane_bytes, lane_bytes, True), 4: ("a.bin", 0, FILL_INLINE_TINY, False),
                5: ("a.bin", 0, lane_bytes + 1, False), 6: ("a.bin", MAX_OFFSET, lane_bytes, False),
                7: (None, 0, lane_bytes, False), 8: ("b.bin", 1 << 19, 1 << 15, True),
                15: ("a.bin", 0, lane_bytes, False)}
        cf._busy[15] = 1                                        # lane 15: a read out
        for lane, (name, off, n, _) in plan.items():
            lanes.req[lane]["offset"], lanes.req[lane]["length"] = off, n
            lanes.req[lane]["arg"][0] = fno[name] if name else 999_999
        words = {lane: abi.encode_req_word(abi.Op.FILL, 100 + 3 * lane) for lane in plan}
        for lane, w in words.items():                           # as the sweep took them
            server._taken[lane] = np.int32(np.uint32(w).view(np.int32))
        started = cf.fill_batch(sorted(words.items()))
        cf._busy[15] = 0
        assert started == [lane for lane, p in sorted(plan.items()) if p[3]]
        want = {lane: p[2] for lane, p in plan.items() if p[3]}
        got = answers_of(cf, want)
        assert got == want
        for lane, (name, off, n, go) in plan.items():
            if go:
                assert int(lanes.resp_word[lane]) & abi.WORD_SEQ_MASK == words[lane] & abi.WORD_SEQ_MASK
                assert np.array_equal(lanes.data[lane, :n], files[name][off:off + n]), lane
            else:
                assert (lanes.data[lane] == 0xEE).all(), f"lane {lane} was declined but written"
        assert all(v.users == 0 and cf._holds.count(v.hold[0]) == 0 for v in cf._by_no.values())
        assert not cf._busy.any()
