"""ELF core dumps: PT_LOAD segments map physical memory; hostile headers end in errors or gaps."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.acquisition.memory import PhysRange, open_memory
from scanner.acquisition.memory.elfcore import MAX_PHDRS, ElfCoreMemory
from scanner.errors import SourceError, UnreadableError
from scanner.lab import eicar
from scanner.rulesets import LoadedRuleset
from scanner.verdicts import GapKind, VerdictKind

from .samples import Load, elf_core, pattern
from .scanning import eicar_addresses, read_every_range, scan

MiB = 1 << 20
LOW = pattern(1, 640 * 1024)
HIGH = pattern(2, 2 * MiB)


def read(source: ElfCoreMemory, address: int, length: int) -> bytes:
    with source.window(address, length) as view:
        return bytes(view)


def test_segments_map_physical_addresses_with_a_hole(tmp_path: Path) -> None:
    core = elf_core(tmp_path / "core", [Load(0, LOW), Load(MiB, HIGH)])
    with_map = ElfCoreMemory(str(core))
    assert list(with_map.ranges()) == [PhysRange(0, len(LOW)), PhysRange(MiB, len(HIGH))]
    assert read(with_map, 0x1000, 4096) == LOW[0x1000:0x2000]
    assert read(with_map, MiB + 12345, 1000) == HIGH[12345:13345]
    assert with_map.unreadable() == []
    with pytest.raises(UnreadableError) as e:
        read(with_map, len(LOW), 16)
    assert e.value.offset == len(LOW)
    with_map.close()


@pytest.mark.parametrize(("elf_class", "big_endian"), [(32, False), (32, True), (64, True)])
def test_elf32_and_big_endian_cores(tmp_path: Path, elf_class: int, big_endian: bool) -> None:
    core = elf_core(tmp_path / "core", [Load(0x2000, LOW)], elf_class=elf_class, big_endian=big_endian)
    source = ElfCoreMemory(str(core))
    assert list(source.ranges()) == [PhysRange(0x2000, len(LOW))]
    assert read(source, 0x2000, 64) == LOW[:64]


def test_segments_adjacent_in_memory_and_file_become_one(tmp_path: Path) -> None:
    core = elf_core(tmp_path / "core", [Load(0, LOW[:0x8000]), Load(0x8000, LOW[0x8000:])])
    source = ElfCoreMemory(str(core))
    assert len(source.segments()) == 1
    assert list(source.ranges()) == [PhysRange(0, len(LOW))]
    assert read(source, 0x7000, 0x2000) == LOW[0x7000:0x9000]


def test_window_across_a_seam_stored_out_of_order_reads_both_sides(tmp_path: Path) -> None:
    # phys [0, 1 MiB) is stored after phys [1 MiB, 3 MiB): contiguous in memory, not in the file
    first, second = pattern(3, MiB), HIGH
    core = elf_core(tmp_path / "core", [Load(MiB, second), Load(0, first)])
    source = ElfCoreMemory(str(core))
    assert len(source.segments()) == 2
    assert list(source.ranges()) == [PhysRange(0, 3 * MiB)]
    assert read(source, MiB - 100, 200) == first[-100:] + second[:100]
    with source.window(MiB - 100, 200) as joined, source.window(MiB + 10, 200) as direct:
        assert joined.readonly and isinstance(joined.obj, bytearray)  # the seam: a private copy
        assert isinstance(direct.obj, mmap.mmap)  # inside one segment: zero-copy


def test_signature_across_a_seam_is_found_once_at_its_physical_address(tmp_path: Path, rules: LoadedRuleset) -> None:
    first, second = bytearray(MiB), bytearray(MiB)
    first[-30:] = eicar()[:30]
    second[: len(eicar()) - 30] = eicar()[30:]
    core = elf_core(tmp_path / "core", [Load(MiB, bytes(second)), Load(0, bytes(first))])
    verdict = scan(ElfCoreMemory(str(core)), rules)
    assert verdict.kind is VerdictKind.MALICIOUS
    assert eicar_addresses(verdict) == {MiB - 30}
    assert len(verdict.findings) == 1


def test_segment_past_end_of_file_is_unreadable_not_a_crash(tmp_path: Path, rules: LoadedRuleset) -> None:
    core = elf_core(tmp_path / "core", [Load(0, LOW), Load(MiB, HIGH)])
    data = core.read_bytes()
    core.write_bytes(data[: len(data) - MiB])  # the dump was cut short
    source = ElfCoreMemory(str(core))
    assert list(source.ranges()) == [PhysRange(0, len(LOW)), PhysRange(MiB, MiB)]
    [(gap, reason)] = source.unreadable()
    assert gap == PhysRange(2 * MiB, MiB)
    assert "truncated" in reason
    assert "0x200000" in reason
    verdict = scan(source, rules)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert verdict.coverage.bytes_unreadable == MiB
    [gap_seen] = verdict.coverage.gaps
    assert gap_seen.kind is GapKind.UNREADABLE
    assert "truncated" in gap_seen.detail


def test_memsz_beyond_filesz_is_unreadable_with_the_reason(tmp_path: Path) -> None:
    core = elf_core(tmp_path / "core", [Load(0, LOW, memsz=len(LOW) + 0x4000)])
    source = ElfCoreMemory(str(core))
    assert list(source.ranges()) == [PhysRange(0, len(LOW))]
    [(gap, reason)] = source.unreadable()
    assert gap == PhysRange(len(LOW), 0x4000)
    assert "p_memsz" in reason


def test_filesz_beyond_memsz_is_a_source_error(tmp_path: Path) -> None:
    core = elf_core(tmp_path / "core", [Load(0x1000, LOW, memsz=16)])
    with pytest.raises(SourceError, match=r"PT_LOAD #1 \(phys 0x1000\): p_filesz"):
        ElfCoreMemory(str(core))


def test_overlapping_segments_that_disagree_are_a_source_error_naming_both(tmp_path: Path) -> None:
    core = elf_core(tmp_path / "core", [Load(0, LOW), Load(0x8000, HIGH)])
    with pytest.raises(SourceError) as e:
        ElfCoreMemory(str(core))
    assert "overlapping" in e.value.message
    assert "0x8000" in e.value.message
    assert f"{len(LOW):#x}" in e.value.message


def test_overlapping_segments_that_agree_are_merged(tmp_path: Path) -> None:
    # QEMU's paging dumps list a physical page once per virtual mapping, at the same file offset
    data_at = 64 + 3 * 56 + 8  # ELF header, PT_NOTE + 2 PT_LOAD headers, the note: then LOW
    core = elf_core(tmp_path / "core", [Load(0, LOW), Load(0x1000, LOW[0x1000:0x3000], offset=data_at + 0x1000)])
    source = ElfCoreMemory(str(core))
    assert list(source.ranges()) == [PhysRange(0, len(LOW))]
    assert read(source, 0x1800, 0x100) == LOW[0x1800:0x1900]


def test_extended_program_header_count(tmp_path: Path) -> None:
    core = elf_core(tmp_path / "core", [Load(0, LOW), Load(MiB, HIGH)], xnum=True)
    assert len(ElfCoreMemory(str(core)).ranges()) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"xnum": True, "sh_info": MAX_PHDRS + 1}, "program headers"),
        ({"phnum": 60000}, "past end of file"),
        ({"e_type": 2}, "not a core file"),
        ({"elf_class": 3}, "unsupported ELF class"),
    ],
)
def test_lying_elf_headers_are_source_errors(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    if kwargs.get("elf_class") == 3:
        core = elf_core(tmp_path / "core", [Load(0, LOW)])
        data = bytearray(core.read_bytes())
        data[4] = 3
        core.write_bytes(bytes(data))
    else:
        core = elf_core(tmp_path / "core", [Load(0, LOW)], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(SourceError, match=message):
        ElfCoreMemory(str(core))


def test_not_elf_truncated_and_empty_cores(tmp_path: Path) -> None:
    for name, data in {"garbage": b"MZ" + bytes(100), "short": b"\x7fELF\x02\x01", "empty": b""}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError):
            ElfCoreMemory(str(tmp_path / name))
    no_loads = elf_core(tmp_path / "noload", [])
    with pytest.raises(SourceError, match="no PT_LOAD"):
        ElfCoreMemory(str(no_loads))
    with pytest.raises(SourceError, match="cannot open"):
        ElfCoreMemory(str(tmp_path / "missing"))


def test_dump_that_shrinks_after_open_gives_unreadable_windows(tmp_path: Path) -> None:
    core = elf_core(tmp_path / "core", [Load(0, LOW), Load(MiB, HIGH)])
    source = ElfCoreMemory(str(core))
    size = core.stat().st_size
    with core.open("r+b") as f:
        f.truncate(size - MiB)
    with pytest.raises(UnreadableError) as e:
        read(source, 2 * MiB + 5, 10)
    assert e.value.offset == 2 * MiB + 5
    assert "beyond end of file" in e.value.reason


def test_auto_format_detects_an_elf_core(tmp_path: Path) -> None:
    core = elf_core(tmp_path / "core", [Load(0, LOW)])
    source = open_memory(str(core), "auto")
    assert source.format == "elfcore"
    assert isinstance(source, ElfCoreMemory)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 64 + 4 * 56 + 40), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_headers_never_crash(tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    core = elf_core(tmp_path / "fuzz", [Load(0, LOW[:0x3000]), Load(MiB, HIGH[:0x3000]), Load(0x5000, LOW[:16])])
    data = bytearray(core.read_bytes())
    for at, value in edits:
        data[at] = value
    core.write_bytes(bytes(data))
    try:
        source = ElfCoreMemory(str(core))
    except SourceError:
        return
    read_every_range(source, bytes(data))
