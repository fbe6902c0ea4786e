"""Windows crash dumps, read by this project and by Volatility 3's crash layers side by side.

No Windows guest runs here (QEMU's ``win-dmp`` writer needs one) and no public complete dump is
small enough to commit, so the dumps are written by this test from the layout of
``_DUMP_HEADER64``/``_DUMP_HEADER`` and ``_SUMMARY_DUMP``; Volatility 3 is the second reader of
every byte, and of what is missing.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from volatility3.framework import contexts, exceptions
from volatility3.framework.layers import crash, physical

from scanner.acquisition.memory import open_memory
from scanner.engine import Engine, EngineSettings
from scanner.lab import eicar
from scanner.rulesets import compile_path
from scanner.targets.memory import MemoryTarget
from scanner.verdicts import VerdictKind

PAGE = 0x1000
MiB = 1 << 20
SIGNATURES = Path(__file__).resolve().parents[2] / "signatures"
RUNS = [(0, 16 * MiB), (0x100000000, 2 * MiB)]  # low RAM, and RAM above 4 GiB
PLANTS = {0x9F0: eicar(), 5 * MiB - 30: eicar(), 0x100000000 + MiB + 7: eicar()}


def memory() -> dict[int, bytearray]:
    """The machine's RAM: per run, pseudo-random bytes with EICAR planted."""
    rng = bytearray(os.urandom(256)) * (16 * MiB // 256)
    ram = {start: bytearray(rng[:length]) for start, length in RUNS}
    for address, data in PLANTS.items():
        start = max(s for s in ram if s <= address)
        ram[start][address - start : address - start + len(data)] = data
    return ram


def write_dump(path: Path, ram: dict[int, bytearray], bits64: bool, left_out: set[int] | None = None) -> None:
    """A complete dump (``left_out`` None) or a bitmap dump storing every frame but ``left_out``."""
    shape = (2, 136, "<QQ", 16, 3992) if bits64 else (1, 100, "<II", 8, 3976)
    header_pages, runs_at, run_fmt, table_at, type_at = shape
    header = bytearray(header_pages * PAGE)
    header[0:8] = b"PAGEDU64" if bits64 else b"PAGEDUMP"
    struct.pack_into("<I", header, runs_at, len(RUNS))
    struct.pack_into("<I", header, runs_at + 4, sum(n for _, n in RUNS) // PAGE)
    for i, (start, length) in enumerate(RUNS):
        at = runs_at + table_at + i * struct.calcsize(run_fmt)
        struct.pack_into(run_fmt, header, at, start // PAGE, length // PAGE)
    with path.open("wb") as f:
        if left_out is None:
            struct.pack_into("<I", header, type_at, 1)
            f.write(header)
            for start, _ in RUNS:
                f.write(ram[start])
            return
        struct.pack_into("<I", header, type_at, 5)
        frames = max(start + length for start, length in RUNS) // PAGE
        bitmap = bytearray(-(-frames // 8))
        stored = [
            a // PAGE
            for start, length in RUNS
            for a in range(start, start + length, PAGE)
            if a // PAGE not in left_out
        ]
        for pfn in stored:
            bitmap[pfn >> 3] |= 1 << (pfn & 7)
        summary_size = -(-(56 + len(bitmap)) // PAGE) * PAGE
        sizes = struct.pack("<QQQ", header_pages * PAGE + summary_size, len(stored), frames)
        summary = bytearray(b"SDMPDUMP") + bytes(24) + sizes
        f.write(header)
        f.write(bytes(summary + bitmap).ljust(summary_size, b"\0"))
        for pfn in stored:
            start = max(s for s in ram if s <= pfn * PAGE)
            f.write(ram[start][pfn * PAGE - start : pfn * PAGE - start + PAGE])


def volatility_layer(path: Path, bits64: bool) -> crash.WindowsCrashDump32Layer:
    ctx = contexts.Context()
    ctx.config["file.location"] = path.as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    ctx.config["crash.base_layer"] = "file"
    cls = crash.WindowsCrashDump64Layer if bits64 else crash.WindowsCrashDump32Layer
    layer = cls(ctx, "crash", "crash")
    ctx.add_layer(layer)
    return layer


def ours(path: Path, address: int, length: int) -> bytes:
    source = open_memory(str(path), "auto")
    with source.window(address, length) as view:
        return bytes(view)


@pytest.mark.parametrize("bits64", [True, False])
def test_complete_dump_reads_what_volatility_reads_and_finds_every_plant(tmp_path: Path, bits64: bool) -> None:
    ram = memory()
    path = tmp_path / "MEMORY.DMP"
    write_dump(path, ram, bits64)
    source = open_memory(str(path), "auto")
    assert source.format == "wincrash"
    assert [(r.start, r.length) for r in source.ranges()] == RUNS
    vol = volatility_layer(path, bits64)
    for start, length in RUNS:
        for a in range(start, start + length, MiB):
            assert ours(path, a, MiB) == vol.read(a, MiB) == bytes(ram[start][a - start : a - start + MiB])
    engine = Engine(EngineSettings(threads=2, chunk_size=MiB, overlap=4096))
    try:
        verdict = engine.scan(compile_path(SIGNATURES), MemoryTarget(source))
    finally:
        engine.close()
    assert verdict.kind is VerdictKind.MALICIOUS
    assert verdict.coverage.complete
    found = {s.address for f in verdict.findings for s in f.strings if s.identifier == "$head"}
    assert found == set(PLANTS)


def test_bitmap_dump_frames_not_stored_are_gaps_like_volatility_says(tmp_path: Path) -> None:
    ram = memory()
    left_out = {(5 * MiB - 30) // PAGE, (5 * MiB) // PAGE, 0x100000000 // PAGE + 3}
    path = tmp_path / "MEMORY.DMP"
    write_dump(path, ram, True, left_out)
    source = open_memory(str(path), "auto")
    missing = {r.start // PAGE + i for r, _ in source.unreadable() for i in range(r.length // PAGE)}
    assert missing == left_out
    assert all("not stored in this bitmap dump" in why for _, why in source.unreadable())
    vol = volatility_layer(path, True)
    for pfn in left_out:
        with pytest.raises(exceptions.InvalidAddressException):
            vol.read(pfn * PAGE, PAGE)
    for a in (0, 0x9F0 & ~(PAGE - 1), 0x100000000 + MiB):
        assert ours(path, a, PAGE) == vol.read(a, PAGE)
    engine = Engine(EngineSettings(threads=2, chunk_size=MiB, overlap=4096))
    try:
        verdict = engine.scan(compile_path(SIGNATURES), MemoryTarget(source))
    finally:
        engine.close()
    assert verdict.kind is VerdictKind.MALICIOUS  # the plants still stored are found
    assert not verdict.coverage.complete
    assert verdict.coverage.bytes_unreadable == len(left_out) * PAGE


def test_triage_dump_is_an_error_naming_its_type(tmp_path: Path) -> None:
    path = tmp_path / "MEMORY.DMP"
    write_dump(path, memory(), True)
    data = bytearray(path.read_bytes()[: 2 * PAGE])
    struct.pack_into("<I", data, 3992, 4)
    path.write_bytes(bytes(data))
    from scanner.errors import SourceError

    with pytest.raises(SourceError, match=r"type 4 \(triage"):
        open_memory(str(path), "auto")
