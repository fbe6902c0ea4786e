"""Which kernels the lab boots (a flavour: apt's current build of it, or one versioned package), and
which builds share a walker layout."""

from __future__ import annotations

import pytest

from scanner.errors import InvalidArgument
from scanner.guestos.linux.layout import Layout
from scanner.lab import LabGuest
from scanner.lab.debs import _kernel_name, is_kernel
from scanner.lab.kernel_layouts import group, package_layout


@pytest.mark.parametrize(
    "kernel",
    ["cloud-amd64", "amd64", "rt-amd64", "linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-rt-amd64"],
)
def test_flavours_and_versioned_packages_are_kernels(kernel: str) -> None:
    assert is_kernel(kernel)


@pytest.mark.parametrize(
    "kernel",
    ["", "arm64", "linux-image-amd64", "linux-image-6.1.0-47-amd64-unsigned", "linux-image-6.1.0-47-amd64 x", "-o=x"],
)
def test_anything_else_is_refused_before_apt_or_qemu_runs(kernel: str) -> None:
    assert not is_kernel(kernel)
    with pytest.raises(InvalidArgument, match="flavour"):
        LabGuest.start(flavour=kernel)


def test_a_versioned_package_is_its_own_kernel_package() -> None:
    assert _kernel_name("linux-image-6.1.0-52-cloud-amd64") == "linux-image-6.1.0-52-cloud-amd64"


def test_builds_are_grouped_by_identical_layout() -> None:
    a = Layout({"mm.brk": 288, "task.pid": 2416}, {"task.comm": 16}, {"mm": 1096})
    moved = Layout({"mm.brk": 280, "task.pid": 2416}, {"task.comm": 16}, {"mm": 1088})
    bigger = Layout({"mm.brk": 288, "task.pid": 2416}, {"task.comm": 16}, {"mm": 1104})  # same offsets
    same = Layout({"task.pid": 2416, "mm.brk": 288}, {"task.comm": 16}, {"mm": 1096})
    assert group({"57": a, "52": moved, "x": bigger, "56": same}) == [["57", "56"], ["52"], ["x"]]


@pytest.mark.lab
@pytest.mark.slow
def test_mm_struct_moved_between_abi_52_and_57() -> None:
    # why the kernel matrix takes two ABIs of each flavour (the debs are the matrix's, cached)
    old, new = (package_layout(f"linux-image-6.1.0-{abi}-cloud-amd64") for abi in (52, 57))
    assert group({"52": old, "57": new}) == [["52"], ["57"]]
    moved = {k for k in new.offsets if old.offsets.get(k) != new.offsets[k]}
    assert moved and all(k.startswith("mm.") for k in moved)
    assert new.offsets["mm.brk"] - old.offsets["mm.brk"] == 8 and new.offsets["mm.pgd"] == old.offsets["mm.pgd"]
