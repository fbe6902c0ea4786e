"""Fuzz targets: one per parser family, each through the public entry points (open, plan, read).

Each target takes the fuzzer's bytes as the content of a hostile input (a dump, an image, a BTF
blob, a request on the wire), runs it the way a scan would, and checks the contract: the only
exceptions that may come out are the documented ones (``ScannerError`` and its subclasses: a
bad input is a one-line error, an unreadable range a gap). Anything else propagates: that is a
crash. Walks and reads are bounded here as well, so a hang is the parser's, not the harness's.

``SEEDS[name]()`` builds the starting corpus with other tools (``mkfs.*``, ``qemu-img``,
``sgdisk``) or by hand, at run time; nothing binary is committed.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from scanner.errors import ScannerError

MAX_UNITS = 64  # units read per input
MAX_READ = 1 << 20  # bytes read per unit
SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


@contextmanager
def as_file(data: bytes, suffix: str = "") -> Iterator[Path]:
    """``data`` in a private temporary file (on tmpfs where there is one)."""
    fd, name = tempfile.mkstemp(prefix="avscan-fuzz-", suffix=suffix, dir=SCRATCH)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield Path(name)
    finally:
        os.unlink(name)


def drain(target: object) -> None:
    """Plan ``target`` and read the first bytes of each unit, as the engine would."""
    from scanner.targets.base import Target, Unit

    assert isinstance(target, Target)
    try:
        for n, item in enumerate(target.plan()):
            if n >= MAX_UNITS:
                break
            if isinstance(item, Unit) and item.size:
                try:
                    with item.window(0, min(item.size, MAX_READ)) as view:
                        bytes(view[:16])
                except ScannerError:
                    pass  # an unreadable range: a gap, as documented
    finally:
        target.close()


def memory(data: bytes) -> None:
    """Every memory format on the same bytes (raw, ELF core, LiME, VMware checkpoint)."""
    from scanner.targets.memory import MemoryTarget

    for fmt, suffix in (("auto", ".bin"), ("elfcore", ".core"), ("lime", ".lime"), ("vmware", ".vmsn")):
        with as_file(data, suffix) as path:
            try:
                target = MemoryTarget.from_params({"path": str(path), "format": fmt})
            except ScannerError:
                continue
            drain(target)


def disk(data: bytes) -> None:
    """A disk image: container (sniffed), volume system, filesystem, walk, file reads."""
    from scanner.targets.disk import DiskTarget
    from scanner.targets.files import FilePolicy

    with as_file(data, ".img") as path:
        try:
            target = DiskTarget.from_params({"path": str(path)}, FilePolicy(max_files=MAX_UNITS))
        except ScannerError:
            return
        with suppress(ScannerError):  # the image as a whole cannot be opened: one-line error
            drain(target)


def btf(data: bytes) -> None:
    from scanner.guestos.btf import blob_length, parse_btf

    try:
        blob_length(data[:24])
        parsed = parse_btf(data)
    except ScannerError:
        return
    for t in parsed.types[:MAX_UNITS]:
        str(t)
    with suppress(ScannerError):
        parsed.get(parsed.find("task_struct"))


def proto(data: bytes) -> None:
    """A StartScan request off the wire into a target spec (the API edge's first step)."""
    from google.protobuf.message import DecodeError

    from scanner.api.convert import target_spec
    from scanner.v1 import scans_pb2

    request = scans_pb2.StartScanRequest()
    try:
        request.ParseFromString(data)
    except DecodeError:
        return
    try:
        target_spec(request.target)
    except ScannerError:
        return


TARGETS: dict[str, Callable[[bytes], None]] = {
    "memory": memory,
    "containers": disk,
    "volumes": disk,
    "filesystems": disk,
    "btf": btf,
    "proto": proto,
}


def _run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True)


def _memory_seeds(tmp: Path) -> list[bytes]:
    elf = bytearray(64)
    elf[:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", elf, 16, 4, 62, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 4, 120, 0x1000, 0x1000, 16, 16, 0)
    lime = struct.pack("<IIQQQ", 0x4C694D45, 1, 0x1000, 0x100F, 0) + b"L" * 16
    return [bytes(4096), bytes(elf) + phdr + b"M" * 16, lime, b"\xd2\xbe\xd2\xbe" + bytes(64)]


def _image(tmp: Path, fs: str, size: str = "8M") -> Path:
    raw = tmp / f"{fs}.raw"
    _run("truncate", "-s", size, raw)
    mkfs = {"ext4": ["mkfs.ext4", "-q", "-F"], "fat": ["mkfs.vfat"], "ntfs": ["mkntfs", "-q", "-F", "-f"]}[fs]
    _run(*mkfs, raw)
    return raw


def _container_seeds(tmp: Path) -> list[bytes]:
    raw = tmp / "small.raw"
    raw.write_bytes(b"hello" + bytes(65536))
    out = []
    for fmt in ("qcow2", "vmdk", "vhdx"):
        _run("qemu-img", "convert", "-O", fmt, raw, tmp / f"small.{fmt}")
        out.append((tmp / f"small.{fmt}").read_bytes())
    return out


def _volume_seeds(tmp: Path) -> list[bytes]:
    out = []
    for table in ("gpt", "mbr"):
        disk = tmp / f"{table}.raw"
        _run("truncate", "-s", "2M", disk)
        if table == "gpt":
            _run("sgdisk", "-n", "1:2048:3000", disk)
        else:
            _run("sh", "-c", f"echo 'start=2048, size=1000, type=83' | sfdisk -q {disk}")
        out.append(disk.read_bytes()[:65536])
    return out


def _fs_seeds(tmp: Path) -> list[bytes]:
    return [_image(tmp, fs).read_bytes()[: 2 << 20] for fs in ("ext4", "fat", "ntfs")]


def _btf_seeds(tmp: Path) -> list[bytes]:
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 16, 16, 8)
    int_type = struct.pack("<III", 1, 0x01000000, 4) + struct.pack("<I", 32)
    return [header + int_type + b"\0int\0\0\0\0"]


def _proto_seeds(tmp: Path) -> list[bytes]:
    from scanner.api.client import files_target, memory_target
    from scanner.v1 import scans_pb2

    return [
        scans_pb2.StartScanRequest(target=files_target("/etc/hostname")).SerializeToString(),
        scans_pb2.StartScanRequest(target=memory_target("/tmp/x.raw", "lime")).SerializeToString(),
    ]


SEEDS: dict[str, Callable[[Path], list[bytes]]] = {
    "memory": _memory_seeds,
    "containers": _container_seeds,
    "volumes": _volume_seeds,
    "filesystems": _fs_seeds,
    "btf": _btf_seeds,
    "proto": _proto_seeds,
}
