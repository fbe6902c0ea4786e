"""The native core equals the pure-Python reference, bit for bit, on buffers of every shape."""

from __future__ import annotations

import os
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner import native
from scanner.native import PurePython

requires_native = pytest.mark.skipif(
    not native.NATIVE and os.environ.get("CI") != "true", reason="scanner._native not built (no compiler?)"
)


def _native():
    from scanner import _native

    return _native


def test_the_extension_is_built_in_ci():
    """Under CI the extension must exist: a silent fallback would hide a broken build."""
    if os.environ.get("CI") == "true":
        assert native.NATIVE
    if not native.NATIVE:
        pytest.skip("scanner._native not built; running on the pure-Python fallback")
    assert native.HASH_NAME == "xxh3"


pages = st.binary(min_size=0, max_size=3 * 4096 + 17)


@requires_native
@settings(max_examples=200, deadline=None)
@given(data=pages, page_size=st.sampled_from([1, 7, 64, 4096]), zeros=st.integers(0, 3))
def test_zero_pages_match_reference(data, page_size, zeros):
    data = bytes(zeros * page_size) + data + bytes(zeros * page_size)
    assert _native().zero_pages(data, page_size) == PurePython.zero_pages(data, page_size)


@requires_native
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=1000), seed=st.integers(0, 2**64 - 1))
def test_hashes_match_reference_at_every_length(data, seed):
    """XXH3 has separate code paths below 16, 128 and 240 bytes: hypothesis hits them all."""
    assert PurePython.hash_name == "xxh3"  # xxhash is a runtime dependency: the reference is there
    n = _native()
    assert n.hash128(data, seed=seed) == PurePython.hash128(data, seed=seed)
    assert n.page_hashes(data, 64, seed=seed) == PurePython.page_hashes(data, 64, seed=seed)


@requires_native
@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b"b", b"\x00", b"Linux version ", b"\x9f"]), max_size=400).map(b"".join),
    needle=st.sampled_from([b"a", b"ab", b"aba", b"\x00\x00", b"Linux version "]),
    limit=st.integers(0, 50),
)
def test_find_all_finds_every_occurrence_as_re_does(data, needle, limit):
    """Offsets (overlapping ones too) against ``re``'s lookahead search, in both implementations."""
    data = data + needle + data[:7]
    expected = [m.start() for m in re.finditer(b"(?=" + re.escape(needle) + b")", data)][:limit]
    assert _native().find_all(memoryview(data), needle, limit) == expected
    assert PurePython.find_all(data, needle, limit) == expected


@requires_native
def test_known_xxh3_values():
    """Published XXH3 values (xxHash's sanity tests), independent of any Python package."""
    n = _native()
    assert struct.unpack("<Q", n.page_hashes(b"a", 1))[0] == 0xE6C632B61E964E1F
    assert n.hash128(b"") == bytes.fromhex("99aa06d3014798d86001c324468d497f")


def test_repeated_pages_finds_duplicates_only():
    data = b"A" * 64 + b"B" * 64 + b"A" * 64 + bytes(64) + bytes(64)
    assert native.repeated_pages(native.page_hashes(data, 64)) == {2: 0, 4: 3}


def test_functions_reject_bad_page_sizes():
    for fn in (native.zero_pages, native.page_hashes):
        with pytest.raises(ValueError):
            fn(b"abc", 0)


SHM = "/dev/shm"  # tmpfs: where reading a hole through a mapping allocates it


@pytest.mark.parametrize("impl", ["native", "python"])
@settings(max_examples=40, deadline=None)
@given(
    written=st.lists(st.tuples(st.integers(0, 63), st.binary(min_size=1, max_size=9000)), max_size=6),
    offset=st.integers(0, 64 * 4096 - 1),
    length=st.integers(1, 64 * 4096),
)
def test_map_file_equals_the_file_and_never_allocates_its_holes(impl, written, offset, length):
    if impl == "native" and not native.NATIVE:
        pytest.skip("scanner._native not built")
    mod = _native() if impl == "native" else PurePython
    size = 64 * 4096
    length = min(length, size - offset)
    fd = os.open(SHM, os.O_RDWR | os.O_TMPFILE, 0o600)
    try:
        os.ftruncate(fd, size)
        for page, data in written:
            os.pwrite(fd, data[: size - page * 4096], page * 4096)
        expected = os.pread(fd, length, offset)
        holes, position = [], 0
        while position < size:  # the file's holes, as scanner.acquisition.mapped.file_holes finds them
            try:
                data = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                holes.append((position, size))
                break
            if data > position:
                holes.append((position, data))
            position = os.lseek(fd, data, os.SEEK_HOLE)
        before = os.fstat(fd).st_blocks
        mapping = mod.map_file(fd, offset, length, holes)
        with memoryview(mapping) as view:
            assert view.tobytes() == expected
        if hasattr(mapping, "close"):
            mapping.close()
        assert os.fstat(fd).st_blocks == before
        with pytest.raises(ValueError):
            mod.map_file(fd, size - 10, 20, [])  # past the end of the file: refused, never SIGBUS
    finally:
        os.close(fd)


@pytest.mark.skipif(not native.NATIVE, reason="scanner._native not built")
def test_a_mapping_stays_open_while_a_view_of_it_lives(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10000)
    with path.open("rb") as f:
        mapping = _native().map_file(f.fileno(), 100, 5000, [])
    view = memoryview(mapping)
    with pytest.raises(BufferError):
        mapping.close()
    assert view[:3].tobytes() == b"xxx" and len(view) == 5000
    view.release()
    mapping.close()
    assert mapping.closed
    with pytest.raises(ValueError):
        memoryview(mapping)


@pytest.mark.parametrize("impl", ["native", "python"])
def test_pread_runs_reads_scattered_runs_in_order_and_refuses_bad_ones(tmp_path, impl):
    if impl == "native" and not native.NATIVE:
        pytest.skip("scanner._native not built")
    mod = _native() if impl == "native" else PurePython
    path = tmp_path / "f"
    data = os.urandom(20000)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        runs = [(19990, 10), (0, 4096), (5000, 1)]
        offs, lens = (struct.pack("<3Q", *(r[i] for r in runs)) for i in (0, 1))
        dst = bytearray(4107)
        assert mod.pread_runs(fd, offs, lens, dst) == 4107
        assert bytes(dst) == data[19990:] + data[:4096] + data[5000:5001]
        with pytest.raises(OSError):  # the file ends inside the run
            mod.pread_runs(fd, struct.pack("<Q", 19995), struct.pack("<Q", 10), bytearray(10))
        with pytest.raises(ValueError):  # runs longer than dst
            mod.pread_runs(fd, struct.pack("<Q", 0), struct.pack("<Q", 10), bytearray(9))
        with pytest.raises(ValueError):  # arrays of different lengths
            mod.pread_runs(fd, struct.pack("<2Q", 0, 1), struct.pack("<Q", 1), bytearray(9))
    finally:
        os.close(fd)


@pytest.mark.parametrize("impl", ["native", "python"])
def test_writeback_cleans_a_file_and_refuses_a_bad_descriptor(tmp_path, impl):
    if impl == "native" and not native.NATIVE:
        pytest.skip("scanner._native not built")
    mod = _native() if impl == "native" else PurePython
    path = tmp_path / "f"
    with path.open("wb") as f:
        f.write(b"x" * 8192)
        f.flush()
        assert mod.writeback(f.fileno()) is None
    with pytest.raises(OSError):
        mod.writeback(10_000)  # not an open descriptor
