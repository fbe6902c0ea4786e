"""Which kernels the lab boots: a flavour (apt's current build of it) or one versioned package."""

from __future__ import annotations

import pytest

from scanner.errors import InvalidArgument
from scanner.lab import LabGuest
from scanner.lab.debs import _kernel_name, is_kernel


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
