"""Which ``Linux version`` banner names the kernel, wherever its copies lie in RAM.

A Linux 6.1 image holds two banners: the weak ``linux_banner`` that ``init/version.c`` compiles
with no build number (``# SMP``), never used, and the real one from ``version-timestamp.o``
(``#1 SMP``). Copies of the real one also sit elsewhere in RAM (log buffer, page cache). The
banner chosen must not depend on which copy has the lowest physical address, or the same kernel
gets a different profile key on each guest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.guestos.linux.locate import locate

TAIL = " (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) SMP PREEMPT_DYNAMIC Debian 6.1.192-3"
WEAK = b"Linux version 6.1.0-57-cloud-amd64" + TAIL.replace(" SMP", " # SMP", 1).encode() + b"\n\0"
REAL = b"Linux version 6.1.0-57-cloud-amd64" + TAIL.replace(" SMP", " #1 SMP", 1).encode() + b"\n\0"


@pytest.mark.parametrize(
    "order", [(WEAK, REAL), (REAL, WEAK), (WEAK, REAL, REAL)], ids=["weak-first", "real-first", "copies"]
)
def test_the_banner_with_a_build_number_is_chosen_wherever_it_lies(tmp_path: Path, order: tuple[bytes, ...]) -> None:
    ram = bytearray(4 << 20)
    for i, banner in enumerate(order):
        ram[(i + 1) << 20 : ((i + 1) << 20) + len(banner)] = banner
    path = tmp_path / "ram.raw"
    path.write_bytes(ram)
    found = locate(RawMemory(str(path)))
    assert len(found.banners) == len(order)
    assert found.banner == REAL[:-2].decode()


def test_a_kernel_with_only_the_weak_banner_is_still_named(tmp_path: Path) -> None:
    path = tmp_path / "ram.raw"
    ram = bytearray(2 << 20)
    ram[4096 : 4096 + len(WEAK)] = WEAK
    path.write_bytes(ram)
    assert locate(RawMemory(str(path))).banner == WEAK[:-2].decode()
