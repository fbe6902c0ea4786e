"""A LiME dump written by LiME's own kernel module, read by our reader and by Volatility 3.

The lab guest (128 MiB, one marker process) loads ``lime.ko`` (Debian's lime-forensics source,
built at test time against the lab kernel's headers, :mod:`scanner.lab.lime`) once its workers are
up, and dumps its memory in ``format=lime`` onto an NVMe disk. The disk image is turned into a
plain file with ``qemu-img convert`` and cut where LiME stopped writing: after one 32-byte header
plus the bytes of each range of the guest's own ``/proc/iomem`` ``System RAM`` list (the ranges
LiME dumps). Nothing here is made by the project's LiME writer.

Oracles: the guest's ``/proc/iomem`` for the range list, Volatility 3's ``LimeLayer`` for the
ranges and every byte, and the EICAR marker the guest's marker process holds for the scan.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scanner.acquisition.memory import PhysRange, open_memory
from scanner.acquisition.memory.base import MemorySource
from scanner.acquisition.memory.lime import HEADER, LimeMemory
from scanner.lab import eicar
from scanner.lab.pytest_plugin import start_or_skip
from scanner.rulesets import LoadedRuleset
from scanner.verdicts import VerdictKind

from .scanning import eicar_addresses, scan

pytestmark = pytest.mark.lab

MiB = 1 << 20
MEMORY_MIB = 128
CHUNK = 4 * MiB


@dataclass(frozen=True)
class ModuleDump:
    """The LiME file the guest's lime.ko wrote, and the System RAM ranges the guest listed."""

    path: Path
    ram: list[PhysRange]
    disk_tail_zero: bool


@pytest.fixture(scope="module")
def module_dump(tmp_path_factory: pytest.TempPathFactory) -> ModuleDump:
    out = tmp_path_factory.mktemp("lime-module")
    disk = out / "disk.qcow2"
    size = (MEMORY_MIB + 64) * MiB
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(size)], check=True)
    with start_or_skip(memory_mib=MEMORY_MIB, markers=1, variant="limemod", disk=disk, disk_bus="nvme", lime=True) as g:
        ram = [PhysRange(r.start, r.end - r.start + 1) for r in g.lime_ranges()]
    # QEMU has flushed the disk once it has quit
    raw = out / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
    written = sum(HEADER.size + r.length for r in ram)
    path = out / "guest.lime"
    with raw.open("rb") as src, path.open("wb") as dst:
        left = written
        while left:
            block = src.read(min(CHUNK, left))
            assert block, "the disk is shorter than the ranges the guest listed"
            dst.write(block)
            left -= len(block)
        tail_zero = all(not any(block) for block in iter(lambda: src.read(CHUNK), b""))
    raw.unlink()
    return ModuleDump(path, ram, tail_zero)


def volatility_lime(path: Path) -> Any:
    """Volatility 3's LiME layer over ``path`` (its own header parser and segment map)."""
    from volatility3.framework import contexts
    from volatility3.framework.layers import lime, physical

    ctx = contexts.Context()
    ctx.config["lime.file.location"] = path.resolve().as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "lime.file", "file"))
    ctx.config["lime.base_layer"] = "file"
    return lime.LimeLayer(ctx, "lime", "lime")


def volatility_ranges(layer: Any) -> list[PhysRange]:
    mapped = layer.mapping(layer.minimum_address, layer.maximum_address - layer.minimum_address + 1, ignore_errors=True)
    return [PhysRange(offset, length) for offset, length, _, _, _ in mapped]


def digest(read: Callable[[int, int], bytes], r: PhysRange) -> str:
    h = hashlib.sha256()
    for at in range(r.start, r.end, CHUNK):
        h.update(read(at, min(CHUNK, r.end - at)))
    return h.hexdigest()


def ours(source: MemorySource) -> Callable[[int, int], bytes]:
    def read(at: int, n: int) -> bytes:
        with source.window(at, n) as view:
            return bytes(view)

    return read


def test_lime_ko_wrote_exactly_the_guests_system_ram(module_dump: ModuleDump) -> None:
    # Two ranges on a q35 guest: the low 640 KiB less the first page, and 1 MiB up to the top.
    assert len(module_dump.ram) >= 2
    assert sum(r.length for r in module_dump.ram) > (MEMORY_MIB - 8) * MiB
    assert module_dump.disk_tail_zero, "LiME wrote past the ranges the guest listed"


def test_our_reader_sees_the_guests_ranges_as_volatility_does(module_dump: ModuleDump) -> None:
    source = LimeMemory(str(module_dump.path))
    layer = volatility_lime(module_dump.path)
    assert list(source.ranges()) == module_dump.ram == volatility_ranges(layer)
    assert source.unreadable() == []
    source.close()


def test_every_byte_reads_as_volatility_reads_it(module_dump: ModuleDump) -> None:
    source = LimeMemory(str(module_dump.path))
    layer = volatility_lime(module_dump.path)
    for r in module_dump.ram:
        assert digest(ours(source), r) == digest(layer.read, r), f"range {r.start:#x}+{r.length:#x} differs"
    source.close()


def test_scan_finds_the_guests_marker_where_volatility_reads_it(module_dump: ModuleDump, rules: LoadedRuleset) -> None:
    source = open_memory(str(module_dump.path), "auto")
    assert source.format == "lime"
    verdict = scan(source, rules)
    assert verdict.kind is VerdictKind.MALICIOUS
    assert verdict.coverage.complete, verdict.reason
    found = eicar_addresses(verdict)
    assert found
    layer = volatility_lime(module_dump.path)
    for address in found:
        assert layer.read(address, 68) == eicar()
    source.close()
