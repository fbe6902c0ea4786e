"""Compressed kdumps and other dump formats others write: read, checked against independent readers.

One paused lab guest (256 MiB, 2 marker processes) is dumped by QEMU three ways: its ELF core
(the reference, read by the ELF reader tested elsewhere), ``dump-guest-memory format=kdump-zlib``
(QEMU 7.2 writes the *flattened* kdump form, as libvirt's ``virsh dump --format kdump-zlib`` does)
and a QEMU migration stream. ``makedumpfile -R`` turns the flattened dump into the plain form;
libkdumpfile (Debian's ``python3-libkdumpfile``) is the second reader of every plain kdump.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.acquisition.memory import MemorySource, open_memory
from scanner.acquisition.memory.kdump import KdumpMemory
from scanner.errors import SourceError, UnreadableError
from scanner.lab import LabGuest, eicar
from scanner.rulesets import LoadedRuleset
from scanner.verdicts import GapKind, VerdictKind

from .kdumps import descriptor, oracle_digests, recompress
from .scanning import eicar_addresses, scan

pytestmark = pytest.mark.lab

MiB = 1 << 20
PAGE = 4096
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Dumps:
    elf: Path
    flat: Path
    plain: Path
    migration: Path
    eicar: set[int]  # physical addresses of EICAR in the ELF dump


@pytest.fixture(scope="module")
def dumps(lab_guest: LabGuest, tmp_path_factory: pytest.TempPathFactory, rules: LoadedRuleset) -> Iterator[Dumps]:
    out = tmp_path_factory.mktemp("kdump")
    lab_guest.pause()
    try:
        lab_guest.dump_elf(out / "guest.elf")
        lab_guest.dump_elf(out / "guest.kdump-zlib", fmt="kdump-zlib")
        migration = out / "guest.migration"
        lab_guest.qmp("migrate", {"uri": f"exec:cat > {migration}"})
        lab_guest.wait_migration()
    finally:
        lab_guest.resume()
    plain = out / "guest.kdump"
    with (out / "guest.kdump-zlib").open("rb") as flat:
        subprocess.run(["makedumpfile", "-R", str(plain)], stdin=flat, check=True, capture_output=True)
    elf = open_memory(str(out / "guest.elf"), "auto")
    found = eicar_addresses(scan(elf, rules))
    assert len(found) >= 2
    yield Dumps(out / "guest.elf", out / "guest.kdump-zlib", plain, migration, found)


def read(source: MemorySource, address: int, length: int) -> bytes:
    with source.window(address, length) as view:
        return bytes(view)


def digests(source: MemorySource) -> list[str | None]:
    import hashlib

    out: list[str | None] = []
    for r in source.ranges():
        for a in range(r.start, r.end, MiB):
            out.append(hashlib.sha256(read(source, a, min(MiB, r.end - a))).hexdigest())
    return out


@pytest.mark.parametrize("form", ["flat", "plain"])
def test_qemu_kdump_finds_eicar_where_the_elf_dump_has_it(dumps: Dumps, rules: LoadedRuleset, form: str) -> None:
    source = open_memory(str(getattr(dumps, form)), "auto")
    assert source.format == "kdump"
    elf = open_memory(str(dumps.elf), "auto")
    assert list(source.ranges()) == list(elf.ranges())
    verdict = scan(source, rules)
    assert verdict.kind is VerdictKind.MALICIOUS
    assert verdict.coverage.complete, verdict.reason
    assert eicar_addresses(verdict) == dumps.eicar
    for address in dumps.eicar:
        assert read(open_memory(str(dumps.plain), "auto"), address, 68) == eicar()


@pytest.mark.parametrize("method", ["zlib", "lzo", "snappy", "zstd"])
def test_every_page_equals_what_libkdumpfile_reads(dumps: Dumps, tmp_path: Path, method: str) -> None:
    path = dumps.plain
    if method != "zlib":
        path = tmp_path / f"guest.{method}"
        recompress(dumps.plain, path, method)
        assert descriptor(path, 0)[2] != descriptor(dumps.plain, 0)[2]
    source = open_memory(str(path), "auto")
    ranges = [(r.start, r.length) for r in source.ranges()]
    ours = digests(source)
    assert ours == oracle_digests(path, ranges)
    assert ours == digests(open_memory(str(dumps.elf), "auto"))


def _exclude(plain: Path, out: Path, frames: set[int], level: int) -> None:
    """``plain`` as makedumpfile at dump ``level`` would write it with ``frames`` left out:
    their bits cleared in the dumped bitmap and their descriptors removed."""
    data = bytearray(plain.read_bytes())
    block, sub_blocks, bitmap_blocks = struct.unpack_from("<iiI", data, 428)
    struct.pack_into("<i", data, block + 8, level)
    half = bitmap_blocks * block // 2
    bitmap_at = block * (1 + sub_blocks) + half
    desc_at = block * (1 + sub_blocks + bitmap_blocks)
    index = 0
    kept = bytearray()
    for byte in range(half):
        for bit in range(8):
            if not data[bitmap_at + byte] >> bit & 1:
                continue
            if byte * 8 + bit in frames:
                data[bitmap_at + byte] &= ~(1 << bit) & 0xFF
            else:
                kept += data[desc_at + index * 24 : desc_at + index * 24 + 24]
            index += 1
    data[desc_at : desc_at + len(kept)] = kept
    out.write_bytes(bytes(data))


def test_pages_left_out_by_the_dump_level_are_gaps_never_clean(
    dumps: Dumps, tmp_path: Path, rules: LoadedRuleset
) -> None:
    frames = {a // PAGE + i for a in dumps.eicar for i in range(2)}
    path = tmp_path / "guest-level31.kdump"
    _exclude(dumps.plain, path, frames, level=31)
    source = open_memory(str(path), "auto")
    left_out = {r.start // PAGE + i for r, _ in source.unreadable() for i in range(r.length // PAGE)}
    assert left_out == frames
    assert all("dump level 31" in why for _, why in source.unreadable())
    oracle = oracle_digests(path, [(a & ~(MiB - 1), MiB) for a in sorted(dumps.eicar)])
    assert oracle and all(d is None for d in oracle)  # libkdumpfile: the same pages are excluded
    verdict = scan(source, rules)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert verdict.coverage.bytes_unreadable == len(frames) * PAGE
    assert {g.kind for g in verdict.coverage.gaps} == {GapKind.UNREADABLE}


def test_zero_pages_left_out_at_dump_level_1_read_as_zeros(dumps: Dumps, tmp_path: Path) -> None:
    plain = open_memory(str(dumps.plain), "auto")
    zero = next(a for a in range(0, 256 * MiB, PAGE) if read(plain, a, PAGE) == bytes(PAGE) and a > MiB)
    path = tmp_path / "guest-level1.kdump"
    _exclude(dumps.plain, path, {zero // PAGE}, level=1)
    source = open_memory(str(path), "auto")
    assert not source.unreadable()
    assert source.holes(zero, PAGE) == [(zero, zero + PAGE)]
    assert read(source, zero - PAGE, 3 * PAGE) == read(plain, zero - PAGE, 3 * PAGE)


def test_truncated_kdump_is_incomplete_never_clean(dumps: Dumps, tmp_path: Path, rules: LoadedRuleset) -> None:
    path = tmp_path / "truncated.kdump"
    shutil.copyfile(dumps.plain, path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size * 6 // 10)
    verdict = scan(open_memory(str(path), "auto"), rules)
    assert verdict.kind is not VerdictKind.CLEAN
    assert not verdict.coverage.complete
    assert verdict.coverage.bytes_unreadable > 0
    assert any("not in the dump" in g.detail for g in verdict.coverage.gaps)


def test_corrupt_page_data_is_a_gap_naming_the_frame(dumps: Dumps, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.kdump"
    data = bytearray(dumps.plain.read_bytes())
    source = KdumpMemory(str(dumps.plain))
    frame = next(iter(dumps.eicar)) // PAGE
    index = sum(1 for pfn in range(frame) if source._dumped[pfn >> 3] >> (pfn & 7) & 1)
    offset, size, flags = descriptor(dumps.plain, index)
    assert flags & 1  # zlib
    data[offset : offset + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableError, match=rf"frame {frame:#x}: zlib data does not decompress"):
        read(KdumpMemory(str(path)), frame * PAGE, PAGE)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({428: struct.pack("<i", 3)}, "block size 3"),
        ({436: struct.pack("<I", 0xFFFFFFFF)}, "bitmap of 4294967295 blocks"),
        ({0: b"KDUMP   ", 4096 * 9: b""}, "bitmaps"),
    ],
)
def test_hostile_kdump_headers_are_errors_naming_the_field(
    dumps: Dumps, tmp_path: Path, patch: dict[int, bytes], message: str
) -> None:
    data = bytearray(dumps.plain.read_bytes())
    for at, value in patch.items():
        if value:
            data[at : at + len(value)] = value
        else:
            del data[at:]
    path = tmp_path / "hostile.kdump"
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=message):
        open_memory(str(path), "auto")


def test_flattened_record_past_the_end_is_an_error(dumps: Dumps, tmp_path: Path) -> None:
    data = bytearray(dumps.flat.read_bytes()[: 4096 + 16])
    struct.pack_into(">qq", data, 4096, 0, 1 << 40)
    path = tmp_path / "flat.kdump"
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="flattened kdump: record at 0x1000"):
        open_memory(str(path), "auto")


def test_qemu_migration_stream_is_named_and_incomplete(dumps: Dumps, rules: LoadedRuleset) -> None:
    source = open_memory(str(dumps.migration), "auto")
    verdict = scan(source, rules)
    assert verdict.kind is VerdictKind.INCOMPLETE
    assert "QEMU migration stream" in verdict.reason
    assert verdict.coverage.bytes_scanned == 0


def avscan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "scanner", "--state-dir", str(tmp_path / "state"), "scan", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)


def test_cli_scans_a_qemu_kdump_as_a_kdump(dumps: Dumps, tmp_path: Path) -> None:
    done = avscan(tmp_path, "--json", "--memory", str(dumps.flat))
    assert done.returncode == 1, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert any("EICAR_Test_File" in json.dumps(e) for e in events)


def test_cli_says_a_hibernation_file_was_not_scanned(tmp_path: Path) -> None:
    """No public hiberfil.sys sample fits in the repo: a file with its signature stands in."""
    path = tmp_path / "hiberfil.sys"
    path.write_bytes(b"HIBR" + bytes(4092) + eicar() + bytes(4096))
    done = avscan(tmp_path, "--memory", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Verdict: INCOMPLETE" in done.stdout
    assert "Windows hibernation file" in done.stdout
