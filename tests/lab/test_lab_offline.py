"""Lab parts that need neither QEMU nor apt: the cpio writer and the console parser."""

from __future__ import annotations

import io

from scanner.lab import newc
from scanner.lab.console import is_ready, parse_processes
from scanner.lab.markers import eicar, variant_tag


def _members(data: bytes) -> dict[str, tuple[int, bytes, int, int]]:
    """A minimal newc reader: name -> (mode, data, rdevmajor, rdevminor)."""
    out: dict[str, tuple[int, bytes, int, int]] = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (f[1], data[body : body + filesize], f[9], f[10])
        pos = body + filesize + (-filesize % 4)


def test_newc_round_trip_keeps_modes_data_and_devices() -> None:
    buf = io.BytesIO()
    newc.write(
        buf,
        [
            newc.directory("bin"),
            newc.regular("bin/x", b"hello", 0o755),
            newc.symlink("bin/sh", "x"),
            newc.char_device("dev/console", 5, 1),
        ],
    )
    assert len(buf.getvalue()) % 4 == 0
    members = _members(buf.getvalue())
    assert members["bin/x"] == (0o100755, b"hello", 0, 0)
    assert members["bin/sh"][:2] == (0o120777, b"x")
    assert members["dev/console"] == (0o020600, b"", 5, 1)
    assert members["bin"][0] == 0o040755


def test_eicar_is_the_68_byte_test_string() -> None:
    value = eicar()
    assert len(value) == 68
    assert value.startswith(b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR")
    assert value.endswith(b"-TEST-FILE!$H+H*")
    assert variant_tag("v", "marker", 0, 9) == b"AVSCAN-LAB-VARIANT=v;ROLE=marker;INDEX=0;PID=9;"


CONSOLE = """\
[    0.1] kernel noise
AVSCAN-PROCS-BEGIN\r
AVSCAN-PROC pid=1 ppid=0 uid=0 comm=init\r
AVSCAN-PROC pid=2 ppid=0 uid=0 comm=kthreadd\r
AVSCAN-PROC pid=84 ppid=1 uid=0 comm=avscan-marker\r
AVSCAN-PROC pid=86 ppid=1 uid=0 comm=avscan clean\r
AVSCAN-PROCS-END\r
AVSCAN-ROLE pid=84 role=marker index=0\r
AVSCAN-ROLE pid=86 role=clean index=0\r
AVSCAN-MAPS-BEGIN pid=84\r
00400000-00401000 r--p 00000000 00:02 14                                 /bin/busybox\r
23b2a000-23b4c000 rw-p 00000000 00:00 0                                  [heap]\r
005e5000-005ec000 rw-p 00000000 00:00 0 \r
AVSCAN-MAPS-END pid=84\r
"""


def test_console_parser_reads_processes_roles_and_maps() -> None:
    assert not is_ready(CONSOLE)
    ready = CONSOLE + "AVSCAN-LAB-READY markers=1 variant=0\r\n"
    procs = {p.pid: p for p in parse_processes(ready)}
    assert set(procs) == {1, 2, 84, 86}
    assert procs[1].comm == "init"
    assert procs[1].role is None
    assert procs[86].comm == "avscan clean"
    assert procs[86].role == "clean"
    marker = procs[84]
    assert marker.role == "marker"
    assert marker.ppid == 1
    assert marker.uid == 0
    assert [(m.start, m.perms, m.path) for m in marker.maps] == [
        (0x400000, "r--p", "/bin/busybox"),
        (0x23B2A000, "rw-p", "[heap]"),
        (0x5E5000, "rw-p", ""),
    ]
    assert is_ready(CONSOLE + "AVSCAN-LAB-READY markers=1 variant=0\r\n")


def test_console_iomem_keeps_top_level_resources_and_the_lime_outcome() -> None:
    from scanner.lab.console import IomemRange, lime_outcome, parse_iomem

    text = (
        "AVSCAN-IOMEM 00001000-0009fbff : System RAM\r\n"
        "[    3.1] nvme nvme0: 1/0/0 default/read/poll queues\n"
        "AVSCAN-IOMEM 00100000-07fd6fff : System RAM\n"
        "AVSCAN-IOMEM   04400000-05201ef1 : Kernel code\n"
        "AVSCAN-IOMEM 100000000-8ffffffff : PCI Bus 0000:00\n"
    )
    assert parse_iomem(text) == [
        IomemRange(0x1000, 0x9FBFF, "System RAM"),
        IomemRange(0x100000, 0x7FD6FFF, "System RAM"),
        IomemRange(0x100000000, 0x8FFFFFFFF, "PCI Bus 0000:00"),
    ]
    assert lime_outcome(text) is None
    assert lime_outcome(text + "AVSCAN-LIME-DONE device=nvme0n1\n") == (True, "")
    assert lime_outcome(text + "AVSCAN-LIME-ERROR device=nvme0n1 reason=insmod\n") == (False, "insmod")
