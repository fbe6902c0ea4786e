"""VMware .vmem + .vmsn/.vmss: memory regions above the PCI hole are not at offset = address."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.acquisition.memory import PhysRange, detect_format, open_memory
from scanner.acquisition.memory.vmware import PCI_HOLE_START, VmwareMemory
from scanner.errors import SourceError, UnreadableError
from scanner.lab import eicar
from scanner.rulesets import LoadedRuleset
from scanner.verdicts import VerdictKind

from .samples import PAGE, pattern, vmsn
from .scanning import eicar_addresses, read_every_range, scan

MiB = 1 << 20
FOUR_GIB = 1 << 32
LOW_PAGES, HIGH_PAGES = 256, 128  # 1 MiB below the hole, 512 KiB above it (at 4 GiB)
LOW, HIGH = pattern(1, LOW_PAGES * PAGE), pattern(2, HIGH_PAGES * PAGE)
REGIONS = [(0, 0, LOW_PAGES), (FOUR_GIB // PAGE, LOW_PAGES, HIGH_PAGES)]


def pair(tmp_path: Path, suffix: str = ".vmsn", vmem: bytes = LOW + HIGH, **kwargs: Any) -> Path:
    """``guest.vmem`` (low RAM then high RAM) and its checkpoint with two regions."""
    (tmp_path / "guest.vmem").write_bytes(vmem)
    vmsn(tmp_path / f"guest{suffix}", REGIONS, **kwargs)
    return tmp_path / "guest.vmem"


def read(source: VmwareMemory, address: int, length: int) -> bytes:
    with source.window(address, length) as view:
        return bytes(view)


def test_regions_map_memory_on_both_sides_of_the_hole(tmp_path: Path) -> None:
    source = VmwareMemory(str(pair(tmp_path)))
    assert list(source.ranges()) == [PhysRange(0, len(LOW)), PhysRange(FOUR_GIB, len(HIGH))]
    assert read(source, 0x3000, 0x100) == LOW[0x3000:0x3100]
    assert read(source, FOUR_GIB + 0x1234, 0x100) == HIGH[0x1234:0x1334]
    # the file offset of the high region is not its address: reading there as flat would be wrong
    with pytest.raises(UnreadableError):
        read(source, len(LOW), 16)
    assert source.unreadable() == []


@pytest.mark.parametrize("suffix", [".vmss", ".vmsn"])
def test_checkpoint_found_by_name_or_given_as_the_path(tmp_path: Path, suffix: str) -> None:
    vmem = pair(tmp_path, suffix)
    for path in (vmem, vmem.with_suffix(suffix)):
        source = open_memory(str(path), "vmware")
        assert isinstance(source, VmwareMemory)
        assert source.checkpoint == str(vmem.with_suffix(suffix))
        assert len(source.ranges()) == 2


def test_eicar_above_the_hole_is_reported_at_its_physical_address(tmp_path: Path, rules: LoadedRuleset) -> None:
    high = bytearray(HIGH)
    high[0x2000 : 0x2000 + 68] = eicar()
    source = VmwareMemory(str(pair(tmp_path, vmem=LOW + bytes(high))))
    verdict = scan(source, rules)
    assert verdict.kind is VerdictKind.MALICIOUS
    assert eicar_addresses(verdict) == {FOUR_GIB + 0x2000}


def test_vmem_shorter_than_the_checkpoint_says_is_unreadable_with_the_reason(tmp_path: Path) -> None:
    source = VmwareMemory(str(pair(tmp_path, vmem=LOW + HIGH[: 32 * PAGE])))
    assert list(source.ranges()) == [PhysRange(0, len(LOW)), PhysRange(FOUR_GIB, 32 * PAGE)]
    [(gap, reason)] = source.unreadable()
    assert gap == PhysRange(FOUR_GIB + 32 * PAGE, (HIGH_PAGES - 32) * PAGE)
    assert "truncated" in reason
    assert f"{FOUR_GIB + 32 * PAGE:#x}" in reason


def test_without_checkpoint_a_small_vmem_is_flat(tmp_path: Path) -> None:
    (tmp_path / "guest.vmem").write_bytes(LOW)
    source = open_memory(str(tmp_path / "guest.vmem"), "auto")
    assert isinstance(source, VmwareMemory)
    assert source.checkpoint is None
    assert list(source.ranges()) == [PhysRange(0, len(LOW))]


def test_without_checkpoint_a_vmem_past_the_pci_hole_is_a_source_error(tmp_path: Path) -> None:
    with (tmp_path / "big.vmem").open("wb") as f:
        f.truncate(PCI_HOLE_START + PAGE)  # sparse
    with pytest.raises(SourceError, match=r"\.vmss or \.vmsn is needed"):
        VmwareMemory(str(tmp_path / "big.vmem"))


def test_checkpoint_without_regions_means_flat(tmp_path: Path) -> None:
    vmem = pair(tmp_path, count=0)
    assert list(VmwareMemory(str(vmem)).ranges()) == [PhysRange(0, len(LOW) + len(HIGH))]


def test_overlapping_regions_are_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "guest.vmem").write_bytes(LOW + HIGH)
    vmsn(tmp_path / "guest.vmsn", [(0, 0, LOW_PAGES), (16, LOW_PAGES, HIGH_PAGES)])
    with pytest.raises(SourceError, match=r"overlapping segments .* phys 0x10000"):
        VmwareMemory(str(tmp_path / "guest.vmem"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"magic": b"\xde\xad\xbe\xef"}, "bad checkpoint magic deadbeef"),
        ({"memory_group": b"cpu2"}, "no 'memory' group"),
        ({"drop": (b"regionPageNum", 1)}, "memory region 1 has no regionPageNum"),
        ({"count": 5000}, "regionsCount 5000"),
    ],
)
def test_lying_checkpoints_are_source_errors(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    vmem = pair(tmp_path, **kwargs)
    with pytest.raises(SourceError, match=message):
        VmwareMemory(str(vmem))


def test_truncated_checkpoint_is_a_source_error(tmp_path: Path) -> None:
    vmem = pair(tmp_path)
    checkpoint = vmem.with_suffix(".vmsn")
    data = checkpoint.read_bytes()
    for cut in (4, 100, len(data) - 30):
        checkpoint.write_bytes(data[:cut])
        with pytest.raises(SourceError):
            VmwareMemory(str(vmem))


def test_version_zero_checkpoint_uses_four_byte_blob_sizes(tmp_path: Path) -> None:
    vmem = pair(tmp_path, magic=b"\xd0\xbe\xd2\xbe")
    assert len(VmwareMemory(str(vmem)).ranges()) == 2


def test_detect_format_knows_checkpoints_and_vmem_by_name(tmp_path: Path) -> None:
    vmem = pair(tmp_path)
    assert detect_format(str(vmem)) == "vmware"
    assert detect_format(str(vmem.with_suffix(".vmsn"))) == "vmware"
    assert open_memory(str(vmem.with_suffix(".vmsn")), "auto").format == "vmware"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 700), st.integers(0, 255)), min_size=1, max_size=6))
def test_corrupted_checkpoints_never_crash(tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    vmem = pair(tmp_path)
    checkpoint = vmem.with_suffix(".vmsn")
    data = bytearray(checkpoint.read_bytes())
    for at, value in edits:
        if at < len(data):
            data[at] = value
    checkpoint.write_bytes(bytes(data))
    try:
        source = VmwareMemory(str(vmem))
    except SourceError:
        return
    read_every_range(source, vmem.read_bytes())
