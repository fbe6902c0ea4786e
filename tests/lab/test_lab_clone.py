"""Clones of one lab template: resumed from one saved memory image, each with its own workload."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.lab import LabError, LabGuest, LabSnapshot, eicar, variant_tag
from scanner.lab.guest import SHM_DIR, SHM_PREFIX
from scanner.lab.pytest_plugin import start_or_skip

pytestmark = pytest.mark.lab

PAGE = 4096
_ZERO = bytes(PAGE)


def _our_shm_files() -> set[Path]:
    return set(SHM_DIR.glob(f"{SHM_PREFIX}{os.getpid()}-*"))


def _same_page_share(a: bytes, b: bytes) -> float:
    """Of the non-zero 4 KiB pages of ``a``, the share equal to ``b``'s page at the same offset."""
    va, vb = memoryview(a), memoryview(b)
    nonzero = same = 0
    for off in range(0, len(a), PAGE):
        page = va[off : off + PAGE]
        if page == _ZERO:
            continue
        nonzero += 1
        same += page == vb[off : off + PAGE]
    assert nonzero > 0
    return same / nonzero


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> LabSnapshot:
    """A 256 MiB template with one marker, saved, then stopped."""
    with start_or_skip(memory_mib=256, markers=1, variant="tmpl", clonable=True) as template:
        return template.save_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="module")
def clones(snapshot: LabSnapshot) -> Iterator[tuple[LabGuest, LabGuest]]:
    with LabGuest.clone(snapshot, workload="clone-a") as a, LabGuest.clone(snapshot, workload="clone-b") as b:
        yield a, b


def test_each_clone_runs_its_template_and_its_own_workload(clones: tuple[LabGuest, LabGuest]) -> None:
    a, b = clones
    assert a.ram_path != b.ram_path
    assert a.qmp_path != b.qmp_path
    for clone, variant in ((a, "clone-a"), (b, "clone-b")):
        assert clone.status() == "running"
        procs = {p.pid: p for p in clone.processes()}
        work = procs[clone.workload_pid]
        assert (work.comm, work.role, work.ppid) == ("avscan-work", "workload", 1)
        assert any(m.path == "[heap]" for m in work.maps)
        assert len(clone.marker_pids) == 1
        ram = clone.ram_path.read_bytes()
        assert len(ram) == 256 << 20
        assert eicar() in ram  # the template's marker process lives on in the clone
        assert variant_tag("tmpl", "marker", 0, clone.marker_pids[0]) in ram
        assert variant_tag(variant, "workload", 0, clone.workload_pid) in ram
        assert f"AVSCAN-WORK {variant} ".encode() in ram
        other = "clone-b" if clone is a else "clone-a"
        assert f"AVSCAN-LAB-VARIANT={other};".encode() not in ram
        assert f"AVSCAN-WORK {other} ".encode() not in ram


def test_template_ram_holds_no_clone_data(snapshot: LabSnapshot, clones: tuple[LabGuest, LabGuest]) -> None:
    ram = snapshot.ram.read_bytes()
    assert eicar() in ram
    assert b"AVSCAN-LAB-VARIANT=tmpl;ROLE=clean;" in ram
    assert b"AVSCAN-LAB-VARIANT=clone-" not in ram  # "ROLE=workload" is in the unpacked initramfs
    assert b"AVSCAN-WORK clone-" not in ram


def test_clones_share_most_pages_at_the_same_addresses(
    snapshot: LabSnapshot, clones: tuple[LabGuest, LabGuest]
) -> None:
    a, b = (clone.ram_path.read_bytes() for clone in clones)
    template = snapshot.ram.read_bytes()
    assert _same_page_share(a, b) > 0.8
    assert _same_page_share(a, template) > 0.8
    assert a != b  # 2 MiB of workload text each, at least, differ


def test_a_template_resumes_after_saving_and_runs_a_workload(tmp_path: Path) -> None:
    with start_or_skip(memory_mib=128, markers=0, variant="own", clonable=True) as template:
        snap = template.save_template(tmp_path / "snap", resume=True)
        assert template.status() == "running"
        pid = template.start_workload("own-work", mib=1)
        assert template.processes()[-1].role == "workload"
        assert variant_tag("own-work", "workload", 0, pid) in template.ram_path.read_bytes()
        assert b"AVSCAN-LAB-VARIANT=own-work;" not in snap.ram.read_bytes()


def test_missing_snapshot_is_a_clear_error_and_leaves_no_files(tmp_path: Path) -> None:
    before = _our_shm_files()
    with pytest.raises(LabError, match="not a lab snapshot"):
        LabGuest.clone(tmp_path / "no-such-snapshot", workload="x")
    assert _our_shm_files() == before


def test_corrupt_state_fails_the_clone_and_leaves_no_files(snapshot: LabSnapshot, tmp_path: Path) -> None:
    broken = dataclasses.replace(snapshot, directory=tmp_path)
    broken.ram.symlink_to(snapshot.ram)
    broken.console.symlink_to(snapshot.console)
    broken.vmstate.write_bytes(snapshot.vmstate.read_bytes()[: snapshot.vmstate.stat().st_size // 2])
    broken.write_manifest()
    before = _our_shm_files()
    with pytest.raises(LabError, match=r"qemu exited .* during clone from"):
        LabGuest.clone(tmp_path, workload="x")
    assert _our_shm_files() == before
