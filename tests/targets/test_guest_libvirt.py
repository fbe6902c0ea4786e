"""libvirt domains scanned live: a private libvirtd, a default domain (TCG, anonymous RAM, no NIC).

The oracle for every address is libvirt's own reader of guest-physical memory
(``virDomainMemoryPeek``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.engine import Engine, EngineSettings
from scanner.errors import SourceError, Unavailable
from scanner.lab import eicar
from scanner.lab.pytest_plugin import lab_unavailable
from scanner.rulesets import compile_path
from scanner.targets import TargetSpec, build_target
from scanner.verdicts import VerdictKind

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
DISK_MIB = 128


@pytest.fixture(scope="module")
def lab():
    from scanner.lab.libvirt import LibvirtLab

    try:
        with LibvirtLab.start() as started:
            yield started
    except Unavailable as e:
        lab_unavailable(e.message)


@pytest.fixture(scope="module")
def disk_image(lab):
    """A qcow2 image (made by mkfs.ext4 -d and qemu-img) holding one EICAR file in a filesystem
    that is almost empty, on a disk whose every byte holds data (random bytes under the
    filesystem, every cluster allocated): a reader that copies the whole disk reads all of it."""
    tree = lab.workdir / "tree"
    (tree / "srv").mkdir(parents=True)
    (tree / "srv" / "sample.com").write_bytes(eicar())
    (tree / "srv" / "readme.txt").write_text("nothing to see\n")
    raw, image = lab.workdir / "disk.raw", lab.workdir / "disk.qcow2"
    raw.write_bytes(os.urandom(DISK_MIB << 20))
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", str(tree), str(raw)], check=True)
    convert = ["qemu-img", "convert", "-q", "-S", "0", "-f", "raw", "-O", "qcow2"]
    subprocess.run([*convert, str(raw), str(image)], check=True)
    raw.unlink()
    return image


@pytest.fixture(scope="module")
def domain(lab, disk_image):
    return lab.start_domain(memory_mib=256, markers=2, variant="libvirt", disk=disk_image)


def avscan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanner", "--state-dir", str(cwd / "state"), "scan", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def test_default_domain_has_anonymous_ram_and_no_network(domain):
    xml = domain.dom.XMLDesc(0)
    assert "<interface" not in xml and "memoryBacking" not in xml


def test_running_domains_disk_is_scanned_through_a_backup_export_leaving_its_image_unchanged(lab, domain, disk_image):
    import libvirt

    before = hashlib.sha256(disk_image.read_bytes()).hexdigest()
    chain_before = domain.dom.XMLDesc(0).count("<source file=")
    engine = Engine(EngineSettings(threads=2))
    try:
        spec = TargetSpec("disk", {"libvirt": domain.uuid, "device": "vda", "libvirt_uri": lab.uri})
        with build_target(spec) as target:
            verdict = engine.scan(compile_path(REPO / "signatures"), target)
    finally:
        engine.close()
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
    assert {f.context.get("path") for f in verdict.findings} == {"/srv/sample.com"}
    assert "backup pull" in verdict.details["disk.live"] or "released" in verdict.details["disk.live"]
    assert hashlib.sha256(disk_image.read_bytes()).hexdigest() == before  # not one byte of the image written
    assert domain.dom.XMLDesc(0).count("<source file=") == chain_before  # no overlay left in the chain
    assert domain.dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE  # the backup job ended
    assert domain.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING



def test_a_domains_disk_is_read_in_place_only_where_the_filesystem_needs_it(lab, domain):
    """The export is read in place: the scan fetches the ext4 metadata and the files, not the
    disk. The independent count is the kernel's: bytes QEMU read (``/proc/PID/io`` rchar) while
    serving the export from the image."""
    from scanner.acquisition.libvirt import qemu_pid

    qemu_io = Path(f"/proc/{qemu_pid(domain.uuid)}/io")
    before = _rchar(qemu_io)
    engine = Engine(EngineSettings(threads=2))
    try:
        spec = TargetSpec("disk", {"libvirt": domain.name, "device": "vda", "libvirt_uri": lab.uri})
        with build_target(spec) as target:
            verdict = engine.scan(compile_path(REPO / "signatures"), target)
    finally:
        engine.close()
    served = _rchar(qemu_io) - before
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
    assert {f.context.get("path") for f in verdict.findings} == {"/srv/sample.com"}
    size = DISK_MIB << 20
    assert served < size // 4, f"QEMU read {served} bytes of its image for a {size}-byte disk"
    read, exported = (int(x) for x in verdict.details["disk.export"].split()[0:3:2])
    assert exported == size
    assert 0 < read < size // 8, verdict.details["disk.export"]


def _rchar(io: Path) -> int:
    return int(next(line for line in io.read_text().splitlines() if line.startswith("rchar:")).split()[1])


def test_cli_scans_a_domains_disk_by_name_and_device(lab, domain, disk_image, tmp_path):
    before = hashlib.sha256(disk_image.read_bytes()).hexdigest()
    result = avscan("--libvirt-disk", f"{domain.name}:vda", "--libvirt-uri", lab.uri, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "EICAR_Test_File" in result.stdout and "/srv/sample.com" in result.stdout
    assert hashlib.sha256(disk_image.read_bytes()).hexdigest() == before


def test_domain_by_name_is_scanned_live_and_findings_sit_where_libvirt_reads_them(lab, domain):
    engine = Engine(EngineSettings(threads=2))
    try:
        spec = TargetSpec("guest", {"libvirt": domain.name, "libvirt_uri": lab.uri})
        with build_target(spec) as target:
            verdict = engine.scan(compile_path(REPO / "signatures"), target)
    finally:
        engine.close()
    assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
    assert verdict.details["memory.format"] == "qemu-process"
    marked = [f for f in verdict.findings if f.rule == "EICAR_Test_File"]
    heads = sorted(s.address for f in marked for s in f.strings if s.identifier == "$head")
    assert len(heads) == domain.markers
    for address in heads:
        assert domain.peek(address, len(eicar())) == eicar()
    assert {p for f in marked for p in f.context.get("process", "").split(",")} == {"avscan-marker"}
    assert not _taints(domain), _taints(domain)  # no monitor command was sent through libvirt


def test_a_layout_that_disagrees_with_memorypeek_is_refused(lab, domain):
    """The derived layout is checked against libvirt's reader: the same RAM block taken a few
    pages off (what a wrong mapping or a wrong rule would give) is refused, not scanned."""
    from dataclasses import replace

    from scanner.acquisition.libvirt import LibvirtGuest

    guest = LibvirtGuest(domain.name, lab.uri)
    try:
        layout = guest.ram_layout()
        assert guest.layout_check.split()[0] == guest.layout_check.split()[2] != "0"  # all non-zero samples agree
        off = 0x10000  # inside the same mapping: every shifted range stays mapped
        shifted = replace(
            layout, ranges=tuple(replace(r, host=r.host + off, length=r.length - off) for r in layout.ranges)
        )
        with pytest.raises(SourceError, match="memoryPeek disagree"):
            guest._check_with_peek(shifted, "test")
    finally:
        guest.close()
    assert not _taints(domain)


def test_a_domain_with_memfd_ram_is_scanned_without_a_monitor_command(lab):
    """``<memoryBacking><source type='memfd'/>``: shared RAM, the same derived layout, read
    through the memfd; addresses checked with memoryPeek, the domain left untainted."""
    shared = lab.start_domain(
        memory_mib=256, markers=1, variant="memfd", memory_backing="<source type='memfd'/><access mode='shared'/>"
    )
    try:
        engine = Engine(EngineSettings(threads=2))
        try:
            spec = TargetSpec("guest", {"libvirt": shared.uuid, "libvirt_uri": lab.uri})
            with build_target(spec) as target:
                assert any(b is not None and b.fd >= 0 for b in target.source._backings)  # through the memfd
                verdict = engine.scan(compile_path(REPO / "signatures"), target)
        finally:
            engine.close()
        assert verdict.kind is VerdictKind.MALICIOUS and verdict.coverage.complete
        marked = [f for f in verdict.findings if f.rule == "EICAR_Test_File"]
        heads = sorted(s.address for f in marked for s in f.strings if s.identifier == "$head")
        assert len(heads) == shared.markers
        for address in heads:
            assert shared.peek(address, len(eicar())) == eicar()
        assert not _taints(shared)
    finally:
        shared.dom.destroy()


def _taints(domain) -> list[str]:
    """What libvirt says tainted the domain (``virsh dommessages``), e.g. custom-monitor."""
    import libvirt

    return [m for m in domain.dom.messages(libvirt.VIR_DOMAIN_MESSAGE_TAINTING) if "taint" in m]


def test_cli_pauses_through_libvirt_by_uuid_and_resumes(lab, domain, tmp_path):
    import libvirt

    result = avscan("--guest-libvirt", domain.uuid, "--libvirt-uri", lab.uri, "--pause", "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert '"EICAR_Test_File"' in result.stdout
    assert domain.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_a_domain_destroyed_mid_scan_is_incomplete_never_clean(lab, tmp_path):
    """The CLI is stopped (SIGSTOP) once it reads the guest's RAM (its pagemap of QEMU open), the
    domain is destroyed, the CLI continues: the rest of RAM is a gap naming why, exit 2."""
    from scanner.acquisition.libvirt import qemu_pid

    victim = lab.start_domain(memory_mib=256, markers=0, variant="victim")
    pagemap = f"/proc/{qemu_pid(victim.uuid)}/pagemap"
    command = [sys.executable, "-m", "scanner", "--state-dir", str(tmp_path / "state"), "scan"]
    cli = subprocess.Popen(
        [*command, "--guest-libvirt", victim.name, "--libvirt-uri", lab.uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        # only the scan's reader opens QEMU's pagemap (the layout check before it preads
        # /proc/PID/mem); it reads 8 bytes of it per page of each window it scans
        while pagemap not in _open_files(cli.pid):
            assert cli.poll() is None, cli.communicate()
        began = _rchar(Path(f"/proc/{cli.pid}/io"))
        while _rchar(Path(f"/proc/{cli.pid}/io")) < began + 2 * (16 << 20) // 4096 * 8:  # two windows read
            assert cli.poll() is None, cli.communicate()
        os.kill(cli.pid, signal.SIGSTOP)
        victim.dom.destroy()
        os.kill(cli.pid, signal.SIGCONT)
        out, err = cli.communicate(timeout=300)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 2, out + err
    verdict = [line for line in out.splitlines() if line.startswith("Verdict:")]
    assert len(verdict) == 1 and verdict[0].startswith("Verdict: INCOMPLETE"), out
    assert "CLEAN" not in out and "Traceback" not in out + err
    assert not err.strip(), err  # nothing but the report: no library noise on stderr
    assert "guest stopped: QEMU process" in verdict[0]
    assert f"of domain {victim.name} exited" in out  # the gaps name the domain


def _open_files(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            out.add(os.readlink(fd))
    return out


@pytest.mark.parametrize(
    ("which", "reason"),
    [("unknown-domain", "no domain 'avscan-no-such-domain'"), ("libvirtd-down", "cannot connect to libvirtd")],
)
def test_refusals_are_one_line_errors_never_clean(lab, tmp_path, which, reason):
    if which == "unknown-domain":
        args = ("--guest-libvirt", "avscan-no-such-domain", "--libvirt-uri", lab.uri)
    else:
        args = ("--guest-libvirt", "x", "--libvirt-uri", f"qemu:///system?socket={tmp_path}/no-libvirtd-sock")
    result = avscan(*args, cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Verdict: ERROR" in result.stdout and reason in out
    assert "Traceback" not in out and "CLEAN" not in out
