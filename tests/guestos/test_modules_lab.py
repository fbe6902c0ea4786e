"""The kernel-module walker, on synthetic memory and on a real lab guest that loaded two modules.

The lab guest (``load_modules=True``) insmods ``dummy.ko`` and ``crc-itu-t.ko`` from its own
kernel package and prints ``/proc/modules``: that is the reference for names, sizes, addresses
and list order. Volatility 3's ``linux.lsmod`` run with the ISF we emit is the independent
cross-check of the ``struct module`` fields.
"""

from __future__ import annotations

import gzip
import json
import lzma
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.acquisition.memory.raw import RawMemory
from scanner.guestos.linux.detect import open_linux
from scanner.guestos.linux.isf import isf
from scanner.guestos.linux.kaslr import KERNEL_MAP, KERNEL_MAP_END, MODULES_END, KernelAnchor
from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.layout import Layout
from scanner.guestos.linux.modules import module_list, modules
from scanner.guestos.linux.paging import PRESENT, WRITABLE
from scanner.guestos.problems import Limits
from scanner.lab import LabError, LabGuest
from scanner.lab.console import GuestModule, parse_modules
from scanner.lab.image import module_file
from scanner.lab.pytest_plugin import start_or_skip
from scanner.rulesets import LoadedRuleset
from scanner.targets.processes import process_target
from scanner.verdicts import VerdictKind

from .test_paging import BytesMemory, idx, put
from .test_processes_lab import _vol, scan

LAB_MODULES = {"dummy", "crc_itu_t"}  # image.GUEST_MODULES as the kernel names them
VOL_ADDRESS_MASK = (1 << 48) - 1

# -- offline: the console parser and the image's module files --------------------------------

CONSOLE = """\
AVSCAN-MODULES-BEGIN\r
AVSCAN-MODULE dummy 16384 0 - Live 0xffffffffc05b0000\r
[    3.2] dummy: noise in between\r
AVSCAN-MODULE crc_itu_t 16384 0 - Live 0xffffffffc05a9000 (E)\r
AVSCAN-MODULES-END\r
AVSCAN-LAB-READY markers=1 variant=0\r
"""


def test_console_parser_reads_proc_modules() -> None:
    assert parse_modules(CONSOLE) == [
        GuestModule("dummy", 16384, 0, "Live", 0xFFFFFFFFC05B0000),
        GuestModule("crc_itu_t", 16384, 0, "Live", 0xFFFFFFFFC05A9000, "E"),
    ]
    assert parse_modules("AVSCAN-MODULES-BEGIN\nAVSCAN-MODULES-END\n") == []
    assert parse_modules("AVSCAN-LAB-READY markers=1 variant=0\n") is None  # not listed at all
    assert parse_modules("AVSCAN-MODULES-BEGIN\nAVSCAN-MODULE x 1 0 - Live 0x0\n") is None  # cut short


def test_module_files_are_plain_elf_whatever_the_package_compression() -> None:
    elf = b"\x7fELF" + bytes(60)
    assert module_file("./lib/modules/6.1.0-1-cloud-amd64/kernel/drivers/net/dummy.ko", elf) == ("dummy.ko", elf)
    assert module_file("./lib/modules/v/kernel/lib/crc-itu-t.ko.xz", lzma.compress(elf)) == ("crc-itu-t.ko", elf)
    assert module_file("./lib/modules/v/kernel/lib/crc-itu-t.ko.gz", gzip.compress(elf)) == ("crc-itu-t.ko", elf)
    with pytest.raises(LabError):
        module_file("./lib/modules/v/kernel/lib/crc-itu-t.ko.zst", b"(\xb5/\xfd")


# -- synthetic memory: where a struct module may sit, and what a broken list gives ------------

MOD = KERNEL_MAP_END  # first page of the modules area
HEAD = KERNEL_MAP + 0x100  # the `modules` list head, in the kernel image
LAYOUT = Layout(
    {
        "module.state": 0,
        "module.list": 8,
        "module.name": 24,
        "module.core_layout.base": 320,
        "module.core_layout.size": 328,
    },
    counts={"module.name": 56},
    sizes={"module": 896},
)
# module pages: virtual page i of the modules area -> physical (deliberately not contiguous)
PAGES = {0: 0x40000, 1: 0x20000, 2: 0x60000, 3: 0x30000}


class Synthetic:
    def __init__(self) -> None:
        self.mem = bytearray(1 << 20)
        flags = PRESENT | WRITABLE
        put(self.mem, 0x1000, idx(MOD, 39), 0x2000 | flags)  # one PML4 slot covers both
        put(self.mem, 0x2000, idx(MOD, 30), 0x3000 | flags)
        put(self.mem, 0x3000, idx(MOD, 21), 0x4000 | flags)
        for page, phys in PAGES.items():
            put(self.mem, 0x4000, idx(MOD, 12) + page, phys | flags)
        put(self.mem, 0x2000, idx(KERNEL_MAP, 30), 0x5000 | flags)
        put(self.mem, 0x5000, idx(KERNEL_MAP, 21), 0x6000 | flags)
        put(self.mem, 0x6000, idx(KERNEL_MAP, 12), 0x10000 | flags)

    def phys(self, virtual: int) -> int:
        if virtual >= MOD:
            page, off = divmod(virtual - MOD, 4096)
            return PAGES[page] + off
        return 0x10000 + virtual - KERNEL_MAP

    def write(self, virtual: int, data: bytes) -> None:
        for i, b in enumerate(data):  # byte by byte: the data may cross a page
            self.mem[self.phys(virtual + i)] = b

    def module(self, address: int, name: bytes, base: int = 0, size: int = 0) -> None:
        self.write(address, struct.pack("<I", 0))
        self.write(address + 24, name + b"\0")
        self.write(address + 320, struct.pack("<QI", base, size))

    def ring(self, nodes: list[int]) -> None:
        """Link list_heads ``nodes`` into a circular list in this order."""
        for a, b in zip(nodes, nodes[1:] + nodes[:1], strict=True):
            self.write(a, struct.pack("<Q", b))
            self.write(b + 8, struct.pack("<Q", a))

    def kernel(self, limits: Limits | None = None) -> LinuxKernel:
        anchor = KernelAnchor(0, 0, 0x1000, 4, KERNEL_MAP, 0x10000, 0)
        return LinuxKernel(BytesMemory(self.mem), "synthetic", LAYOUT, anchor, limits or Limits())


@pytest.mark.parametrize("before_end", [0x100, 64], ids=["struct-crosses", "name-crosses"])
def test_a_lone_module_near_a_page_end_is_found(before_end: int) -> None:
    # The struct (896 bytes) starts near a page end and runs on into a page that is not physically
    # next (64 bytes before: even its name crosses). The first carve only tried structs wholly in
    # one page, so a lone module there (a 14-in-64 chance per page offset) was reported as none.
    s = Synthetic()
    at = MOD + 0x1000 - before_end
    s.module(at, b"a_module_whose_name_crosses_a_page", base=MOD, size=0x3000)
    s.ring([HEAD, at + 8])
    found = module_list(s.kernel())
    assert [(m.address, m.name, m.base, m.size) for m in found.modules] == [
        (at, "a_module_whose_name_crosses_a_page", MOD, 0x3000)
    ]
    assert found.head == HEAD and found.problems == ()


def test_modules_come_in_list_order_from_the_head_and_a_bad_name_does_not_end_the_walk() -> None:
    s = Synthetic()
    a, b, c = MOD + 0x2100, MOD + 0x40, MOD + 0x3000  # the carve meets b first
    s.module(a, b"newest")
    s.module(b, b"middle")
    s.module(c, b"\x01bad")
    s.ring([HEAD, c + 8, a + 8, b + 8])
    found = module_list(s.kernel())
    # c's name does not match, so it was not carved, but its links hold: a problem, and the walk
    # goes on to a (the first walker stopped there: b, head, c... and never saw a)
    assert [m.name for m in found.modules] == ["newest", "middle"]
    assert found.head == HEAD
    assert [p.what for p in found.problems] == ["module list"] and "not printable" in found.problems[0].reason
    assert [m.name for m in modules(s.kernel())[0]] == ["middle", "newest"]  # by address


def test_a_broken_or_endless_module_list_is_a_bounded_problem() -> None:
    s = Synthetic()
    nodes = [MOD + 0x40 * i for i in range(1, 40)]
    for i, n in enumerate(nodes):
        s.module(n, f"m{i}".encode())
    s.ring([HEAD] + [n + 8 for n in nodes])
    found = module_list(s.kernel(Limits(max_modules=10)))
    assert len(found.modules) <= 11 and "more than 10 modules" in found.problems[-1].reason
    s.write(nodes[5] + 8 + 8, struct.pack("<Q", HEAD))  # node 6's prev no longer points back at 5
    found = module_list(s.kernel())
    assert "does not point back" in found.problems[-1].reason


# -- the lab guest with two modules loaded ----------------------------------------------------


@dataclass(frozen=True)
class ModulesDumped:
    guest: LabGuest
    raw: Path
    elf: Path
    modules: list[GuestModule]


@pytest.fixture(scope="module")
def with_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModulesDumped]:
    out = tmp_path_factory.mktemp("modules")
    with start_or_skip(memory_mib=256, markers=1, variant="mod1", load_modules=True) as guest:
        guest.pause()
        guest.dump_raw(out / "guest.raw")
        guest.dump_elf(out / "guest.elf")
        yield ModulesDumped(guest, out / "guest.raw", out / "guest.elf", guest.modules())


@pytest.mark.lab
def test_the_guest_loaded_its_modules(with_modules: ModulesDumped) -> None:
    assert "AVSCAN-MODULE-ERROR" not in with_modules.guest.console_text()
    assert {m.name for m in with_modules.modules} == LAB_MODULES
    for m in with_modules.modules:
        assert m.state == "Live" and m.size > 0 and KERNEL_MAP_END <= m.address < MODULES_END


@pytest.mark.lab
def test_the_walker_lists_exactly_what_the_guest_printed(with_modules: ModulesDumped) -> None:
    kernel = open_linux(RawMemory(str(with_modules.raw))).kernel
    assert kernel is not None
    found = module_list(kernel)
    assert found.problems == ()
    # /proc/modules is the list from the head: same order, names, sizes and core bases
    assert [(m.name, m.size, m.base) for m in found.modules] == [
        (g.name, g.size, g.address) for g in with_modules.modules
    ]
    assert all(m.state == 0 for m in found.modules)  # MODULE_STATE_LIVE
    assert all(m.base <= m.address < m.base + m.size for m in found.modules)  # struct module is in its core
    assert KERNEL_MAP <= found.head < KERNEL_MAP_END  # `modules` is in the kernel image
    listed, problems = modules(kernel)
    assert {m.name for m in listed} == LAB_MODULES and problems == []


@pytest.mark.lab
def test_the_process_scan_names_the_modules(with_modules: ModulesDumped, rules: LoadedRuleset, tmp_path: Path) -> None:
    verdict = scan(process_target(RawMemory(str(with_modules.raw)), profile_cache=tmp_path), rules)
    assert verdict.kind is VerdictKind.MALICIOUS  # the marker, as without modules
    assert set(verdict.details["os.modules"].split(",")) == LAB_MODULES
    assert not [g for g in verdict.coverage.gaps if "module list" in g.unit]


@pytest.mark.lab
def test_volatility3_lsmod_reads_the_same_modules(with_modules: ModulesDumped, tmp_path: Path) -> None:
    detection = open_linux(RawMemory(str(with_modules.raw)))
    assert detection.kernel is not None and detection.profile is not None
    doc = isf(detection.profile, detection.kernel)
    head = module_list(detection.kernel).head
    # isf.py writes `modules` (lsmod starts from it) at the head our walker found; Volatility walks
    # the list and reads every struct module itself with our BTF-derived types, and what it lists
    # is checked against the guest's own /proc/modules below, so a wrong head cannot pass.
    assert doc["symbols"]["modules"]["address"] + detection.kernel.anchor.virtual_shift == head
    path = tmp_path / "symbols" / "linux" / f"avscan-{detection.profile.key}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    (tmp_path / "cache").mkdir()
    common = ["-s", str(tmp_path / "symbols"), "--cache-path", str(tmp_path / "cache"), "-f", str(with_modules.elf)]
    rows = _vol([*common, "linux.lsmod.Lsmod"])
    theirs = [(int(r["Offset"]), str(r["Module Name"]), int(r["Code Size"])) for r in rows]  # type: ignore[call-overload]
    # Volatility's Intel layer gives offsets without the sign extension (the low 48 bits)
    ours = [(m.address & VOL_ADDRESS_MASK, m.name, m.size) for m in module_list(detection.kernel).modules]
    assert theirs == ours
    assert [(name, size) for _, name, size in theirs] == [(g.name, g.size) for g in with_modules.modules]
