"""Real disk images made by the real tools, at test time, from a directory of benign samples.

Every builder runs the same commands an operator would (``mkfs.ext4 -d``, ``mkfs.xfs -p``,
``mkfs.ntfs`` + ``ntfs-3g``/``ntfscp``, ``mkfs.vfat`` + ``mcopy``, ``sgdisk``/``sfdisk``, LVM2's own
tools, ``qemu-img``/``qemu-io``); what a format cannot hold (a symlink on FAT, a name with a space
in an XFS protofile) is left out of that format's *staged* copy, and the ground truth is ``yara``
run over exactly that staged copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.samples import eicar, marker

MiB = 1 << 20
RULES = """
import "elf"
rule EICAR_Test_File { strings: $e = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE" condition: $e at 0 or $e }
rule Marker_DISK { strings: $m = "%s" condition: $m }
rule Elf_True_Exact { condition: elf.number_of_sections > 0 and filesize == %d and uint32(0) == 0x464c457f }
"""
ELF_SAMPLE = Path("/usr/bin/true")


def rules_source() -> str:
    return RULES % (marker("DISK").decode(), ELF_SAMPLE.stat().st_size)


def run(*cmd: str | Path, env: dict[str, str] | None = None, **kw: object) -> str:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MTOOLS_SKIP_CHECK": "1", **(env or {})}
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, check=False, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return str(done.stdout)


def populate(root: Path, late: bool = True) -> Path:
    """The sample tree; ``late`` adds ``late/eicar-late.com`` (the file a snapshot delta adds)."""
    root.mkdir(parents=True)
    (root / "eicar.com").write_bytes(eicar())
    (root / "empty.txt").write_bytes(b"")
    (root / "readme.txt").write_bytes(b"nothing to see here\n" * 100)
    deep = root / "docs" / "nested" / "deeper"
    deep.mkdir(parents=True)
    (deep / "evil file.txt").write_bytes(b"prefix " + eicar())
    (deep / "ünïcödé-файл.txt").write_bytes(b"clean unicode text\n" * 10)
    (root / "données").mkdir()
    (root / "données" / "résumé.com").write_bytes(eicar())
    big = bytearray(os.urandom(300_000))
    big[200_000 : 200_000 + len(marker("DISK"))] = marker("DISK")  # spans several filesystem blocks
    (root / "docs" / "marker.bin").write_bytes(bytes(big))
    (root / "bin").mkdir()
    shutil.copyfile(ELF_SAMPLE, root / "bin" / "true")
    os.symlink("../eicar.com", root / "bin" / "link-to-eicar")
    if late:
        (root / "late").mkdir()
        (root / "late" / "eicar-late.com").write_bytes(eicar())
    return root


def stage(src: Path, dst: Path, *, symlinks: bool = True, spaces: bool = True, flat: bool = False) -> Path:
    """A copy of ``src`` with only what the target filesystem can hold."""
    dst.mkdir(parents=True)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if (not spaces and " " in str(rel)) or (not symlinks and path.is_symlink()):
            continue
        if flat:
            if path.is_file() and not path.is_symlink():
                shutil.copyfile(path, dst / str(rel).replace("/", "_"))
            continue
        if path.is_symlink():
            os.symlink(os.readlink(path), dst / rel)
        elif path.is_dir():
            (dst / rel).mkdir()
        else:
            shutil.copyfile(path, dst / rel)
    return dst


def yara_truth(rules: Path, root: Path) -> set[tuple[str, str]]:
    """(rule, path inside the tree) for every match of the ``yara`` CLI (symlinks not followed)."""
    out = run("yara", "-r", "-N", rules, root)
    found = set()
    for line in out.splitlines():
        rule, _, path = line.partition(" ")
        found.add((rule, "/" + str(Path(path).relative_to(root))))
    return found


# -- filesystems -----------------------------------------------------------------------------


def ext4(src: Path, out: Path, size_mib: int = 32) -> Path:
    run("mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", src, out, f"{size_mib}M")
    return out


def xfs(src: Path, out: Path, size_mib: int = 320) -> Path:
    proto = out.with_suffix(".proto")
    lines = ["/dev/null", "0 0", "d--755 0 0"]

    def walk(d: Path, indent: int) -> None:
        for p in sorted(d.iterdir()):
            pad = " " * indent
            if p.is_symlink():
                lines.append(f"{pad}{p.name} l--777 0 0 {os.readlink(p)}")
            elif p.is_dir():
                lines.append(f"{pad}{p.name} d--755 0 0")
                walk(p, indent + 1)
                lines.append(f"{pad}$")
            else:
                lines.append(f"{pad}{p.name} ---644 0 0 {p}")

    walk(src, 1)
    lines.append("$")
    proto.write_text("\n".join(lines) + "\n")
    with out.open("wb") as f:
        f.truncate(size_mib * MiB)
    run("mkfs.xfs", "-q", "-f", "-p", proto, out)
    return out


def ntfs(src: Path, out: Path, size_mib: int = 32) -> Path:
    """``mkfs.ntfs``, then the tree copied in through ``ntfs-3g`` (FUSE, userspace) when FUSE
    works here, else file by file with ``ntfscp`` (which cannot make directories: ``src`` must
    then be flat)."""
    with out.open("wb") as f:
        f.truncate(size_mib * MiB)
    run("mkfs.ntfs", "-q", "-F", "-f", out)
    if any(p.is_dir() for p in src.iterdir()):
        mnt = out.with_suffix(".mnt")
        mnt.mkdir()
        run("ntfs-3g", out, mnt)
        try:
            run("cp", "-r", "--no-preserve=all", f"{src}/.", mnt)
        finally:
            run("fusermount", "-u", mnt) if shutil.which("fusermount") else run("umount", mnt)
            mnt.rmdir()
    else:
        for p in sorted(src.iterdir()):
            run("ntfscp", "-f", out, p, p.name)
    return out


def ntfs_fuse_works() -> bool:
    return Path("/dev/fuse").exists() and shutil.which("ntfs-3g") is not None and os.geteuid() == 0


def fat32(src: Path, out: Path, size_mib: int = 40) -> Path:
    run("mkfs.vfat", "-F", "32", "-C", out, str(size_mib * 1024))
    entries = [str(p) for p in sorted(src.iterdir())]
    run("mcopy", "-s", "-i", out, *entries, "::/")
    return out


# -- volumes ---------------------------------------------------------------------------------


def gpt(fs: Path, out: Path) -> Path:
    """A GPT disk with one Linux partition at 1 MiB holding ``fs``."""
    _disk_with(fs, out)
    run("sgdisk", "-o", "-n", "1:2048:0", "-t", "1:8300", out)
    _put(fs, out, MiB)
    return out


def mbr(fs: Path, out: Path, type_code: str = "83") -> Path:
    _disk_with(fs, out)
    run("sfdisk", "-q", out, input=f"label: dos\n2048,,{type_code}\n")
    _put(fs, out, MiB)
    return out


def lvm(fs: Path, out: Path, vg: str = "avscanvg", lv: str = "data") -> Path:
    """A PV on the whole disk, a VG and one linear LV holding ``fs``, written by LVM2's own tools.

    ``lvcreate`` needs device-mapper in the kernel (absent here), so the LV is added to the VG
    metadata with ``vgcfgbackup``/``vgcfgrestore`` (the same tools write the same on-disk format)
    and ``fs`` is written at the LV's first extent.
    """
    size = fs.stat().st_size
    with out.open("wb") as f:
        f.truncate(size + 16 * MiB)
    loop = run("losetup", "-f", "--show", out).strip()
    env = {"LVM_SUPPRESS_FD_WARNINGS": "1"}
    try:
        devices = ["--devices", loop]
        run("pvcreate", "-q", *devices, loop, env=env)
        run("vgcreate", "-q", "-s", "1M", *devices, vg, loop, env=env)
        backup = out.with_suffix(".vgcfg")
        run("vgcfgbackup", "-q", *devices, "-f", backup, vg, env=env)
        extents = size // MiB
        text = backup.read_text()
        pv_name = re.search(r"physical_volumes \{\s*(\w+) \{", text)
        assert pv_name, text
        lv_text = (
            f'\nlogical_volumes {{\n{lv} {{\nid = "abcdef-ghij-klmn-opqr-stuv-wxyz-012345"\n'
            f'status = ["READ", "WRITE", "VISIBLE"]\nflags = []\nsegment_count = 1\n'
            f'segment1 {{\nstart_extent = 0\nextent_count = {extents}\ntype = "striped"\n'
            f'stripe_count = 1\nstripes = ["{pv_name.group(1)}", 0]\n}}\n}}\n}}\n'
        )
        pos = text.rindex("}")  # the VG's closing brace
        backup.write_text(text[:pos] + lv_text + text[pos:])
        run("vgcfgrestore", "-q", *devices, "-f", backup, vg, env=env)
        pe_start = int(
            run("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", *devices, loop, env=env).strip()
        )
    finally:
        run("losetup", "-d", loop)
    _put(fs, out, pe_start)
    return out


def lvm_works() -> str:
    """Why LVM2 images cannot be built here, or ``""``."""
    for tool in ("pvcreate", "vgcfgrestore", "losetup"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install lvm2)"
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        return "LVM2 tools need a loop device (root and /dev/loop-control)"
    return ""


def _disk_with(fs: Path, out: Path) -> None:
    with out.open("wb") as f:
        f.truncate(fs.stat().st_size + 2 * MiB)


def _put(fs: Path, disk: Path, offset: int) -> None:
    run(
        "dd",
        f"if={fs}",
        f"of={disk}",
        "bs=1M",
        f"seek={offset}",
        "oflag=seek_bytes",
        "conv=notrunc,sparse",
        "status=none",
    )


# -- containers ------------------------------------------------------------------------------


def convert(raw: Path, out: Path, fmt: str, *options: str) -> Path:
    run("qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, *options, raw, out)
    return out


def overlay(base: Path, fmt: str, out: Path, new_raw: Path, old_raw: Path, base_fmt: str | None = None) -> Path:
    """A ``fmt`` overlay on ``base`` (relative backing name), then the clusters where ``new_raw``
    differs from ``old_raw`` written into it with ``qemu-io``, as a guest would write them."""
    run("qemu-img", "create", "-q", "-f", fmt, "-b", base.name, "-F", base_fmt or fmt, out, cwd=out.parent)
    chunk = 64 * 1024
    cmds: list[str] = []
    piece = out.with_suffix(".piece")
    with new_raw.open("rb") as new, old_raw.open("rb") as old:
        offset = 0
        while True:
            a, b = new.read(chunk), old.read(chunk)
            if not a:
                break
            if a != b:
                part = piece.with_name(f"{piece.name}.{offset}")
                part.write_bytes(a)
                cmds += ["-c", f"write -s {part} {offset} {len(a)}"]
            offset += len(a)
    for i in range(0, len(cmds), 400):
        run("qemu-io", "-f", fmt, *cmds[i : i + 400], out)
    for part in out.parent.glob(f"{piece.name}.*"):
        part.unlink()
    return out
