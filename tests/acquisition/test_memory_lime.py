"""LiME dumps: ranges with inclusive ends; the writer; hostile headers end in errors or gaps."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.acquisition.memory import PhysRange, detect_format, open_memory
from scanner.acquisition.memory.lime import MAX_LIME_RANGES, LimeMemory, to_lime
from scanner.acquisition.memory.raw import RawMemory
from scanner.errors import SourceError, UnreadableError
from scanner.lab import eicar
from scanner.rulesets import LoadedRuleset
from scanner.targets.memory import MemoryTarget
from scanner.verdicts import VerdictKind

from .samples import lime_file, lime_header, pattern
from .scanning import eicar_addresses, read_every_range, scan

MiB = 1 << 20


def read(source: LimeMemory, address: int, length: int) -> bytes:
    with source.window(address, length) as view:
        return bytes(view)


def raw_with_holes(path: Path) -> bytes:
    """8 MiB: data in MiB 0, 2-3 and 7; zeros elsewhere; EICAR in MiB 3."""
    data = bytearray(8 * MiB)
    data[0:MiB] = pattern(1, MiB)
    data[2 * MiB : 4 * MiB] = pattern(2, 2 * MiB)
    data[7 * MiB : 8 * MiB - 4096] = pattern(3, MiB - 4096)
    data[3 * MiB + 777 : 3 * MiB + 777 + 68] = eicar()
    path.write_bytes(bytes(data))
    return bytes(data)


def test_to_lime_skips_zero_megabytes_and_reads_back_the_same_bytes(tmp_path: Path) -> None:
    data = raw_with_holes(tmp_path / "raw")
    written = to_lime(tmp_path / "raw", tmp_path / "dump.lime")
    expected = [PhysRange(0, MiB), PhysRange(2 * MiB, 2 * MiB), PhysRange(7 * MiB, MiB)]
    assert written == expected
    source = LimeMemory(str(tmp_path / "dump.lime"))
    assert list(source.ranges()) == expected
    assert source.unreadable() == []
    for r in expected:
        assert read(source, r.start, r.length) == data[r.start : r.end]
    with pytest.raises(UnreadableError):
        read(source, MiB, 16)


def test_lime_from_a_source_finds_eicar_at_the_same_physical_address(tmp_path: Path, rules: LoadedRuleset) -> None:
    raw_with_holes(tmp_path / "raw")
    raw = RawMemory(str(tmp_path / "raw"))
    to_lime(raw, tmp_path / "dump.lime")
    lime = LimeMemory(str(tmp_path / "dump.lime"))
    from_raw, from_lime = scan(raw, rules), scan(lime, rules)
    assert from_lime.kind is VerdictKind.MALICIOUS
    assert eicar_addresses(from_lime) == eicar_addresses(from_raw) == {3 * MiB + 777}


def test_inclusive_end_address(tmp_path: Path) -> None:
    lime_file(tmp_path / "d", [(0x1000, b"abc")])
    source = LimeMemory(str(tmp_path / "d"))
    assert list(source.ranges()) == [PhysRange(0x1000, 3)]
    assert read(source, 0x1000, 3) == b"abc"


def test_adjacent_ranges_join_into_one_readable_range(tmp_path: Path) -> None:
    a, b = pattern(4, 8192), pattern(5, 8192)
    lime_file(tmp_path / "d", [(0, a), (8192, b)])
    source = LimeMemory(str(tmp_path / "d"))
    assert list(source.ranges()) == [PhysRange(0, 16384)]
    assert read(source, 8000, 400) == a[8000:] + b[:208]


def test_range_past_end_of_file_keeps_its_start_and_the_rest_is_unreadable(tmp_path: Path) -> None:
    a, b = pattern(6, 4096), pattern(7, 8192)
    path = lime_file(tmp_path / "d", [(0, a), (MiB, b)])
    path.write_bytes(path.read_bytes()[:-5000])
    source = LimeMemory(str(path))
    assert list(source.ranges()) == [PhysRange(0, 4096), PhysRange(MiB, 8192 - 5000)]
    [(gap, reason)] = source.unreadable()
    assert gap == PhysRange(MiB + 8192 - 5000, 5000)
    assert "truncated" in reason
    assert read(source, MiB, 100) == b[:100]


def test_bad_magic_mid_file_names_the_offset(tmp_path: Path) -> None:
    a = pattern(8, 4096)
    bad = lime_header(MiB, MiB + 4095, magic=0xDEADBEEF)
    (tmp_path / "d").write_bytes(lime_header(0, 4095) + a + bad + a)
    with pytest.raises(SourceError) as e:
        LimeMemory(str(tmp_path / "d"))
    assert "bad LiME magic 0xdeadbeef at offset 0x1020" in e.value.message


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (lime_header(MiB, MiB + 15, version=2) + bytes(16), "unsupported LiME version 2 at offset 0x1020"),
        (lime_header(MiB + 16, MiB) + bytes(16), r"ends \(0x100000\) before it starts"),
        (b"EMiL\x01\x00", "truncated LiME header at offset 0x1020"),
        (lime_header(0x800, 0x17FF) + bytes(4096), "overlapping"),
    ],
)
def test_lying_headers_are_source_errors(tmp_path: Path, tail: bytes, message: str) -> None:
    (tmp_path / "d").write_bytes(lime_header(0, 4095) + pattern(9, 4096) + tail)
    with pytest.raises(SourceError, match=message):
        LimeMemory(str(tmp_path / "d"))


def test_range_count_is_bounded(tmp_path: Path) -> None:
    lime_file(tmp_path / "d", [(i * 0x2000, b"x") for i in range(MAX_LIME_RANGES + 1)])
    with pytest.raises(SourceError, match=f"more than {MAX_LIME_RANGES} LiME ranges"):
        LimeMemory(str(tmp_path / "d"))


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(SourceError, match="empty"):
        LimeMemory(str(tmp_path / "empty"))
    with pytest.raises(SourceError, match="cannot open"):
        LimeMemory(str(tmp_path / "missing"))


def test_auto_format_detects_lime_and_falls_back_to_raw(tmp_path: Path) -> None:
    lime_file(tmp_path / "d", [(0, b"abcd")])
    (tmp_path / "r").write_bytes(b"\0" * 4096)
    assert detect_format(str(tmp_path / "d")) == "lime"
    assert detect_format(str(tmp_path / "r")) == "raw"
    assert open_memory(str(tmp_path / "d"), "auto").format == "lime"
    target = MemoryTarget.from_params({"path": str(tmp_path / "d"), "format": "auto"})
    assert target.details()["memory.format"] == "lime"
    with pytest.raises(SourceError, match="cannot open"):
        detect_format(str(tmp_path / "missing"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 3 * (32 + 4096) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_corrupted_dumps_never_crash(tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    ranges = [(0, pattern(1, 4096)), (MiB, pattern(2, 4096)), (0x3000, pattern(3, 4096))]
    path = lime_file(tmp_path / "fuzz", ranges)
    data = bytearray(path.read_bytes())
    for at, value in edits:
        data[at] = value
    path.write_bytes(bytes(data))
    headers_intact = all(at % (32 + 4096) >= 32 for at, _ in edits)  # edits only in range data
    try:
        source = LimeMemory(str(path))
    except SourceError:
        assert not headers_intact, "intact headers were refused"
        return
    got = read_every_range(source, bytes(data))
    if headers_intact:  # every range reads back, with the edits in it
        assert got == {start: bytes(data[i * 4128 + 32 : (i + 1) * 4128]) for i, (start, _) in enumerate(ranges)}


def test_auto_format_reads_an_elf_executable_as_raw_bytes_not_a_core(tmp_path):
    from scanner.acquisition.memory import detect_format

    exe = tmp_path / "prog"
    exe.write_bytes(Path("/bin/true").read_bytes())
    assert detect_format(str(exe)) == "raw"
