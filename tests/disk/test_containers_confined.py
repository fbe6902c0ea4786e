"""A disk image is hostile: it opens only files inside its own directory, never through a symlink,
never a special file, never /proc or /sys (issue 15). Each vector is built with qemu-img or a
hand-written VMDK descriptor; a reference outside is a gap naming it, never a read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from scanner.targets import FilePolicy
from scanner.verdicts import GapKind, VerdictKind
from tests.disk import images
from tests.disk.conftest import need, skip_or_fail
from tests.disk.scanning import found, scan

pytestmark = pytest.mark.timeout(120)  # a FIFO opened blocking would hang here, not pass


@pytest.fixture(scope="module")
def infected(disk_dir: Path, samples: Path) -> Path:
    """An ext4 image holding EICAR files: the host-only file an image must not pull in."""
    need("mkfs.ext4", "qemu-img")
    return images.ext4(images.stage(samples, disk_dir / "confined-src"), disk_dir / "confined-infected.img")


@pytest.fixture
def rooms(tmp_path: Path, infected: Path) -> tuple[Path, Path]:
    """(vm, host): the image's directory, and a sibling directory with the infected raw disk."""
    vm, host = tmp_path / "vm", tmp_path / "host"
    vm.mkdir()
    host.mkdir()
    shutil.copyfile(infected, host / "secret.raw")
    return vm, host


def qcow2_over(vm: Path, backing: str, fmt: str = "raw") -> Path:
    overlay = vm / "overlay.qcow2"
    images.run("qemu-img", "create", "-q", "-u", "-f", "qcow2", "-b", backing, "-F", fmt, overlay, "32M", cwd=vm)
    return overlay


def refused(verdict, reference: str, why: str) -> None:
    """INCOMPLETE, no finding from the outside file, a gap naming ``reference`` and ``why``."""
    assert verdict.kind is VerdictKind.INCOMPLETE and not verdict.findings, (verdict.kind, verdict.error)
    assert any(reference in g.detail and why in g.detail and "not opened" in g.detail for g in verdict.coverage.gaps), [
        g.detail for g in verdict.coverage.gaps
    ]
    assert all(g.kind is GapKind.UNREADABLE for g in verdict.coverage.gaps if reference in g.detail)


def chain_of(verdict) -> list[str]:
    return verdict.details["disk.chain"].split(" <- ")


@pytest.mark.parametrize("spelling", ["absolute", "climbing"])
def test_qcow2_backing_outside_the_directory_is_a_gap_not_a_read(spelling, rooms, engine, ruleset):
    vm, host = rooms
    name = str(host / "secret.raw") if spelling == "absolute" else "../host/secret.raw"
    verdict = scan(engine, ruleset, path=str(qcow2_over(vm, name)))
    refused(verdict, name, "outside the image's directory")
    assert chain_of(verdict) == [str(vm / "overlay.qcow2")]


def test_the_same_backing_file_is_read_when_its_directory_is_allowed(rooms, engine, ruleset):
    vm, host = rooms
    policy = FilePolicy(disk_backing_dirs=(str(host),))
    verdict = scan(engine, ruleset, policy, path=str(qcow2_over(vm, str(host / "secret.raw"))))
    assert ("EICAR_Test_File", "/eicar.com") in found(verdict) and verdict.coverage.complete
    assert chain_of(verdict) == [str(vm / "overlay.qcow2"), str(host / "secret.raw")]


@pytest.mark.parametrize("host_file", ["/etc/shadow", "/proc/self/environ", "/sys/kernel/notes"])
def test_host_files_named_as_backing_are_never_opened(host_file, rooms, engine, ruleset):
    vm, _ = rooms
    verdict = scan(engine, ruleset, path=str(qcow2_over(vm, host_file)))
    refused(verdict, host_file, "outside the image's directory")
    assert chain_of(verdict) == [str(vm / "overlay.qcow2")]
    if os.path.exists(host_file):  # its size must not leak into any gap text
        size = str(os.stat(host_file).st_size)
        assert not any(f"{size} bytes" in g.detail for g in verdict.coverage.gaps if host_file in g.detail)


def test_symlinked_backing_file_inside_the_directory_is_not_followed(rooms, engine, ruleset):
    vm, host = rooms
    (vm / "base.raw").symlink_to(host / "secret.raw")
    verdict = scan(engine, ruleset, path=str(qcow2_over(vm, "base.raw")))
    refused(verdict, "base.raw", "symlink")


def test_symlinked_directory_component_is_not_followed(rooms, engine, ruleset):
    vm, host = rooms
    (vm / "sub").symlink_to(host)
    verdict = scan(engine, ruleset, path=str(qcow2_over(vm, "sub/secret.raw")))
    refused(verdict, "sub/secret.raw", "symlink")


def test_fifo_backing_file_is_refused_without_blocking(rooms, engine, ruleset):
    vm, _ = rooms
    os.mkfifo(vm / "base.raw")
    verdict = scan(engine, ruleset, path=str(qcow2_over(vm, "base.raw")))
    refused(verdict, "base.raw", "a FIFO, not a regular file")


def test_missing_backing_file_is_a_gap(rooms, engine, ruleset):
    vm, _ = rooms
    verdict = scan(engine, ruleset, path=str(qcow2_over(vm, "gone.raw")))
    refused(verdict, "gone.raw", "not found beside the image")


@pytest.mark.parametrize("special", ["fifo", "proc", "chardev"])
def test_special_files_named_as_the_disk_are_errors(special, tmp_path, engine, ruleset):
    if special == "fifo":
        path = tmp_path / "disk.fifo"
        os.mkfifo(path)
    else:
        path = Path("/proc/self/environ" if special == "proc" else "/dev/null")
    verdict = scan(engine, ruleset, path=str(path))
    assert verdict.kind is VerdictKind.ERROR
    expected = {"fifo": "a FIFO", "proc": "kernel pseudo-filesystem", "chardev": "a character device"}[special]
    assert expected in verdict.error and "\n" not in verdict.error


def test_vmdk_parent_hint_outside_is_a_gap(rooms, engine, ruleset):
    vm, host = rooms
    parent = images.convert(host / "secret.raw", host / "parent.vmdk", "vmdk")
    delta = vm / "delta.vmdk"
    images.run("qemu-img", "create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk", delta)
    verdict = scan(engine, ruleset, path=str(delta))
    refused(verdict, str(parent), "outside the image's directory")
    assert chain_of(verdict) == [str(delta)]


def descriptor(extents: list[str], parent: str = "") -> str:
    head = 'version=1\nCID=12345678\nparentCID={}\ncreateType="{}"\n'.format(
        "87654321" if parent else "ffffffff", "monolithicFlat"
    )
    if parent:
        head += f'parentFileNameHint="{parent}"\n'
    return "# Disk DescriptorFile\n" + head + "\n# Extent description\n" + "\n".join(extents) + "\n"


@pytest.mark.parametrize("spelling", ["climbing", "absolute", "symlink"])
def test_vmdk_extent_outside_or_symlinked_is_a_gap(spelling, rooms, engine, ruleset):
    vm, host = rooms
    sectors = (host / "secret.raw").stat().st_size // 512
    name = {"climbing": "../host/secret.raw", "absolute": str(host / "secret.raw"), "symlink": "flat.raw"}[spelling]
    if spelling == "symlink":
        (vm / "flat.raw").symlink_to(host / "secret.raw")
    top = vm / "disk.vmdk"
    top.write_text(descriptor([f'RW {sectors} FLAT "{name}" 0']))
    verdict = scan(engine, ruleset, path=str(top))
    refused(verdict, name, "symlink" if spelling == "symlink" else "outside the image's directory")
    assert chain_of(verdict) == [str(top)]


def test_vmdk_flat_extent_inside_is_read(rooms, engine, ruleset):
    """The positive control of the descriptor tests: the same descriptor, its extent beside it."""
    vm, host = rooms
    shutil.copyfile(host / "secret.raw", vm / "flat.raw")
    top = vm / "disk.vmdk"
    top.write_text(descriptor([f'RW {(vm / "flat.raw").stat().st_size // 512} FLAT "flat.raw" 0']))
    verdict = scan(engine, ruleset, path=str(top))
    assert ("EICAR_Test_File", "/eicar.com") in found(verdict) and verdict.coverage.complete
    assert chain_of(verdict) == [str(top), str(vm / "flat.raw")]


def test_vmdk_that_is_its_own_parent_is_one_error(rooms, engine, ruleset):
    vm, host = rooms
    shutil.copyfile(host / "secret.raw", vm / "flat.raw")
    top = vm / "self.vmdk"
    top.write_text(descriptor([f'RW {(vm / "flat.raw").stat().st_size // 512} FLAT "flat.raw" 0'], parent="self.vmdk"))
    verdict = scan(engine, ruleset, path=str(top))
    assert verdict.kind is VerdictKind.ERROR and "loops back" in verdict.error


def test_qcow2_external_data_file_outside_is_a_gap(rooms, tmp_path, engine, ruleset):
    vm, host = rooms
    image = vm / "external.qcow2"
    data = host / "external.data"
    images.run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", f"data_file={data}", host / "secret.raw",
               image)  # fmt: skip
    verdict = scan(engine, ruleset, path=str(image))
    refused(verdict, str(data), "outside the image's directory")
    assert chain_of(verdict) == [str(image)]


def test_sparse_vmdk_delta_naming_itself_as_parent_is_one_error(rooms, engine, ruleset):
    """qemu-img's own delta, its embedded parentFileNameHint patched to its own name."""
    vm, host = rooms
    images.convert(host / "secret.raw", vm / "b.vmdk", "vmdk")
    images.run("qemu-img", "create", "-q", "-f", "vmdk", "-b", "b.vmdk", "-F", "vmdk", "d.vmdk", cwd=vm)
    data = (vm / "d.vmdk").read_bytes()
    assert data.count(b'parentFileNameHint="b.vmdk"') == 1
    (vm / "d.vmdk").write_bytes(data.replace(b'parentFileNameHint="b.vmdk"', b'parentFileNameHint="d.vmdk"'))
    verdict = scan(engine, ruleset, path=str(vm / "d.vmdk"))
    assert verdict.kind is VerdictKind.ERROR and "loops back" in verdict.error


def test_backing_chain_deeper_than_the_bound_is_one_error(rooms, engine, ruleset):
    vm, host = rooms
    shutil.copyfile(host / "secret.raw", vm / "l0.img")
    images.run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "l0.img", "-F", "raw", "l1.qcow2", cwd=vm)
    for level in range(2, 18):
        images.run("qemu-img", "create", "-q", "-f", "qcow2", "-b", f"l{level - 1}.qcow2", "-F", "qcow2",
                   f"l{level}.qcow2", cwd=vm)  # fmt: skip
    assert scan(engine, ruleset, path=str(vm / "l15.qcow2")).kind is VerdictKind.MALICIOUS  # 16 deep: read
    verdict = scan(engine, ruleset, path=str(vm / "l17.qcow2"))
    assert verdict.kind is VerdictKind.ERROR and "deeper than 16" in verdict.error


def test_vmdk_split_into_many_flat_extents_is_read(rooms, engine, ruleset):
    """A descriptor with 24 extents (more files than the chain depth bound): all read, in order."""
    vm, host = rooms
    data = (host / "secret.raw").read_bytes()
    piece = -(-len(data) // 24 // 512) * 512
    lines = []
    for i in range(24):
        part = data[i * piece : (i + 1) * piece]
        (vm / f"split-s{i:03}.vmdk").write_bytes(part)
        lines.append(f'RW {len(part) // 512} FLAT "split-s{i:03}.vmdk" 0')
    top = vm / "split.vmdk"
    top.write_text(descriptor(lines))
    oracle = vm / "oracle.raw"
    images.run("qemu-img", "convert", "-q", "-f", "vmdk", "-O", "raw", top, oracle)
    assert oracle.read_bytes() == data  # qemu-img reads the same disk through the descriptor
    verdict = scan(engine, ruleset, path=str(top))
    assert ("EICAR_Test_File", "/eicar.com") in found(verdict) and verdict.coverage.complete
    assert len(chain_of(verdict)) == 25


def test_a_symlink_named_as_the_disk_is_scanned_with_references_beside_the_link(rooms, engine, ruleset):
    """As QEMU does: the link is what the user asked for; its backing is looked up beside the link."""
    vm, host = rooms
    shutil.copyfile(host / "secret.raw", vm / "base.raw")
    images.run(
        "qemu-img", "create", "-q", "-u", "-f", "qcow2", "-b", "base.raw", "-F", "raw", host / "real.qcow2", "32M"
    )
    (vm / "link.qcow2").symlink_to(host / "real.qcow2")
    images.run("qemu-img", "info", "--backing-chain", vm / "link.qcow2")  # qemu-img opens this chain too
    verdict = scan(engine, ruleset, path=str(vm / "link.qcow2"))
    assert ("EICAR_Test_File", "/eicar.com") in found(verdict) and verdict.coverage.complete
    assert chain_of(verdict) == [str(vm / "link.qcow2"), str(vm / "base.raw")]


def test_an_allowed_directory_never_opens_proc(rooms, engine, ruleset):
    """Even with / allowed (a careless config), /proc is never opened: named directly or bind-mounted."""
    vm, _ = rooms
    policy = FilePolicy(disk_backing_dirs=("/",))
    pid = os.getpid()
    verdict = scan(engine, ruleset, policy, path=str(qcow2_over(vm, f"/proc/{pid}/environ")))
    refused(verdict, f"/proc/{pid}/environ", "kernel pseudo-filesystem")
    mounted = vm / "p"
    mounted.mkdir()
    images.run("mount", "--bind", "/proc", mounted)
    try:
        verdict = scan(engine, ruleset, path=str(qcow2_over(vm, f"p/{pid}/environ")))
    finally:
        images.run("umount", mounted)
    refused(verdict, f"p/{pid}/environ", "kernel pseudo-filesystem")


def test_a_qcow2_on_a_block_device_reaches_nothing_in_dev(rooms, engine, ruleset):
    """The image's own directory is /dev here: it is not a root (/dev/shm holds regular files)."""
    vm, host = rooms
    if not Path("/dev/shm").is_dir() or not Path("/dev/loop-control").exists():
        skip_or_fail("needs /dev/shm and loop devices (root and /dev/loop-control)")
    secret = Path("/dev/shm") / f"avscan-test-{os.getpid()}.raw"
    shutil.copyfile(host / "secret.raw", secret)
    image = qcow2_over(vm, f"shm/{secret.name}")
    os.truncate(image, 1 << 20)  # a loop device ends at a whole sector; the L1 table is at the file's end
    loop = images.run("losetup", "-f", "--show", "-r", image).strip()
    try:
        verdict = scan(engine, ruleset, path=loop)
    finally:
        images.run("losetup", "-d", loop)
        secret.unlink()
    refused(verdict, f"shm/{secret.name}", "outside the image's directory")
    assert chain_of(verdict) == [loop]
