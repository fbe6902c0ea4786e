"""Rescans of unchanged files and disk images without reading them (``scanner.targets.identity``).

The shortcut is only as good as its refusals, so most tests here change something the way an
attacker or an operator would (rewrite in place keeping size and mtime, replace by rename,
``touch``, write into the image with ``debugfs``) and check the next scan reads and finds it.
Stamps are taken on a clock running ``SETTLE_NS`` ahead (``identity.CLOCK``) so the tests do not
wait 3 s for files to settle; a change waits for the kernel's clock to tick (``tick_past``), never a
sleep. Two tests keep the real clock and check that a file written just now is never taken on trust.
"""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yara

from scanner.engine import Engine, EngineSettings
from scanner.engine.cache import ResultCache
from scanner.targets import identity
from scanner.targets.disk import DiskFileUnit, DiskTarget
from scanner.targets.files import FilePolicy, FileTarget, FileUnit
from tests.support.samples import marker, marker_rule

MiB = 1024 * 1024
EXTERNALS = {"filename": "", "filepath": "", "extension": "", "filetype": "", "owner": ""}


class Rules:
    def __init__(self, *names: str) -> None:
        source = b"".join(marker_rule(n) for n in names).decode()
        self.rules = yara.compile(source=source, externals=EXTERNALS)
        self.digest = "sha256:" + "".join(names).encode().hex().ljust(64, "0")[:64]
        self.externals = dict(EXTERNALS)


RULES = Rules("ONE", "TWO")


@pytest.fixture
def settle(monkeypatch):
    """Stamps are taken on a clock running SETTLE_NS ahead: every file counts as left alone that
    long, with no sleep. File times stay the kernel's, so a change still needs :func:`tick_past`."""
    monkeypatch.setattr(identity, "CLOCK", lambda: time.time_ns() + identity.SETTLE_NS)


def tick_past(path: Path, timeout: float = 10.0) -> None:
    """Wait until a change made now gives ``path`` a new ctime: an unnamed file in the same
    directory is written until its ctime (the kernel's clock) passes ``path``'s."""
    target = os.stat(path).st_ctime_ns
    fd = os.open(path.parent, os.O_RDWR | os.O_TMPFILE, 0o600)
    deadline = time.monotonic() + timeout
    try:
        while os.fstat(fd).st_ctime_ns <= target:
            assert time.monotonic() < deadline, f"the filesystem clock did not move past {path}'s ctime"
            os.pwrite(fd, b"t", 0)
    finally:
        os.close(fd)


@pytest.fixture
def engine(tmp_path):
    cache = ResultCache(tmp_path / "cache.sqlite3", max_bytes=64 * MiB)
    e = Engine(EngineSettings(threads=2), cache)
    yield e
    e.close()
    cache.close()


@pytest.fixture
def reads(monkeypatch):
    """Counts every window opened on a host file (a read of its bytes)."""
    opened: list[str] = []
    original = FileUnit.window

    def window(self, offset, length):
        opened.append(self.path)
        return original(self, offset, length)

    monkeypatch.setattr(FileUnit, "window", window)
    return opened


def rules_of(verdict) -> set[tuple[str, str]]:
    return {(Path(f.unit).name, f.rule) for f in verdict.findings}


def tree(root: Path, count: int = 5) -> Path:
    root.mkdir()
    for i in range(count):
        (root / f"f{i}.bin").write_bytes(b"x" * (1000 + i) + (marker("ONE") if i == 2 else b""))
    return root


def test_an_unchanged_settled_file_tree_is_rescanned_without_reading_clean_files(tmp_path, engine, settle, reads):
    root = tree(tmp_path / "t")
    first = engine.scan(RULES, FileTarget([str(root)]))
    assert len(reads) >= 5
    reads.clear()
    again = engine.scan(RULES, FileTarget([str(root)]))
    assert reads == [str(root / "f2.bin")]  # only the finding's file, for its SHA-256 evidence
    assert rules_of(first) == rules_of(again) == {("f2.bin", "Marker_ONE")}
    assert (again.coverage.cache_hits, again.coverage.cache_misses) == (5, 0)
    assert again.findings[0].context["sha256"] == first.findings[0].context["sha256"]
    assert again.kind is first.kind


def test_a_file_rewritten_in_place_with_its_old_size_and_mtime_is_read_again(tmp_path, engine, settle, reads):
    root = tree(tmp_path / "t")
    victim = root / "f0.bin"
    engine.scan(RULES, FileTarget([str(root)]))
    before = os.stat(victim)
    tick_past(victim)
    data = bytearray(victim.read_bytes())
    data[: len(marker("TWO"))] = marker("TWO")
    with victim.open("r+b") as f:  # same inode, same size
        f.write(data)
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # hide the write from mtime
    assert os.stat(victim).st_mtime_ns == before.st_mtime_ns
    reads.clear()
    again = engine.scan(RULES, FileTarget([str(root)]))
    assert str(victim) in reads  # ctime moved: no trust, read and hashed
    assert rules_of(again) == {("f0.bin", "Marker_TWO"), ("f2.bin", "Marker_ONE")}


def test_a_file_replaced_by_rename_is_read_again(tmp_path, engine, settle, reads):
    root = tree(tmp_path / "t")
    engine.scan(RULES, FileTarget([str(root)]))
    staged = tmp_path / "staged"
    staged.write_bytes(b"x" * 1001 + marker("TWO"))
    shutil.copystat(root / "f1.bin", staged)  # same mtime as the file it replaces
    os.replace(staged, root / "f1.bin")
    reads.clear()
    again = engine.scan(RULES, FileTarget([str(root)]))
    assert str(root / "f1.bin") in reads
    assert ("f1.bin", "Marker_TWO") in rules_of(again)


def test_a_file_written_just_now_is_never_taken_on_trust(tmp_path, engine, reads):
    """Real SETTLE_NS: a file younger than it has no identity, every scan hashes it."""
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"fresh" + marker("ONE"))
    unit = next(iter(FileTarget([str(path)]).plan()))
    assert isinstance(unit, FileUnit) and unit.identity() is None
    engine.scan(RULES, FileTarget([str(path)]))
    engine.scan(RULES, FileTarget([str(path)]))
    assert reads.count(str(path)) >= 2


def test_a_file_that_changes_between_walk_and_open_loses_its_identity(tmp_path, settle):
    path = tmp_path / "moving.bin"
    path.write_bytes(b"a" * 100)
    unit = next(iter(FileTarget([str(path)]).plan()))
    assert isinstance(unit, FileUnit) and unit.identity() is not None
    tick_past(path)
    path.write_bytes(b"b" * 100)
    with unit.window(0, unit.size):
        pass
    assert unit.identity() is None


# -- disk images: the whole result reused ---------------------------------------------------------


def ext4_image(tmp_path: Path, files: dict[str, bytes]) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    image = tmp_path / "disk.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(image), "16M"], check=True, capture_output=True)
    return image


def test_an_unchanged_settled_disk_image_gives_back_its_complete_result(tmp_path, engine, settle):
    image = ext4_image(tmp_path, {"a.bin": b"clean" * 100, "b.bin": b"pad" + marker("ONE")})
    first = engine.scan(RULES, DiskTarget(str(image)))
    again = engine.scan(RULES, DiskTarget(str(image)))
    assert "cache.reused" not in first.details and "cache.reused" in again.details
    assert [(f.unit, f.rule, f.strings) for f in again.findings] == [
        (f.unit, f.rule, f.strings) for f in first.findings
    ]
    assert again.findings[0].context == first.findings[0].context
    assert again.kind is first.kind and again.coverage.complete
    assert again.coverage.bytes_scanned == first.coverage.bytes_scanned
    assert again.coverage.cache_hits == again.coverage.units_total == first.coverage.units_total
    assert again.details["disk.format"] == first.details["disk.format"]


def test_a_disk_image_written_to_is_scanned_again_and_the_new_file_found(tmp_path, engine, settle):
    image = ext4_image(tmp_path, {"a.bin": b"clean" * 100})
    assert not engine.scan(RULES, DiskTarget(str(image))).findings
    planted = tmp_path / "planted.bin"
    planted.write_bytes(b"dropped " + marker("TWO"))
    tick_past(image)
    subprocess.run(["debugfs", "-w", "-R", f"write {planted} dropped.bin", str(image)], check=True, capture_output=True)
    again = engine.scan(RULES, DiskTarget(str(image)))
    assert "cache.reused" not in again.details
    assert {(f.unit, f.rule) for f in again.findings} == {("disk:/dropped.bin", "Marker_TWO")}


def test_incomplete_disk_results_and_other_rulesets_are_not_reused(tmp_path, engine, settle, monkeypatch):
    files = {"big.bin": b"b" * 5000, "small.bin": b"s" + marker("ONE"), "clean.bin": b"c" * 3000}
    image = ext4_image(tmp_path, files)
    policy = FilePolicy(max_file_size=4096)  # big.bin becomes a SKIPPED_LIMIT gap
    first = engine.scan(RULES, DiskTarget(str(image), policy=policy))
    read: list[str] = []
    original = DiskFileUnit._read
    monkeypatch.setattr(DiskFileUnit, "_read", lambda self, o, n: (read.append(self.path), original(self, o, n))[1])
    again = engine.scan(RULES, DiskTarget(str(image), policy=policy))
    assert not first.coverage.complete and "cache.reused" not in again.details
    assert not again.coverage.complete
    # the result is scanned again, but each file is answered by the image's stamp: only the file
    # with a finding is read, for its SHA-256 evidence
    assert read == ["/small.bin"] and again.coverage.cache_hits == 2
    whole = engine.scan(RULES, DiskTarget(str(image)))
    assert "cache.reused" not in whole.details  # another policy, another key
    other = Rules("ONE")
    assert "cache.reused" not in engine.scan(other, DiskTarget(str(image))).details


def test_an_image_scanned_right_after_it_was_written_is_not_reused(tmp_path, engine):
    """Real SETTLE_NS: mkfs just wrote the image; its identity is withheld."""
    image = ext4_image(tmp_path, {"b.bin": marker("ONE")})
    assert DiskTarget(str(image)).identity() is None
    engine.scan(RULES, DiskTarget(str(image)))
    assert "cache.reused" not in engine.scan(RULES, DiskTarget(str(image))).details


@pytest.fixture
def trusted_dir(tmp_path):
    """A directory on a filesystem in TRUSTED_FILESYSTEMS: ``tmp_path`` when it is on one, else
    a loop-mounted ext4 made here (tests run as root)."""
    if identity.filesystem(os.stat(tmp_path).st_dev) in identity.TRUSTED_FILESYSTEMS:
        yield tmp_path
        return
    image, mnt = tmp_path / "trusted.ext4", tmp_path / "mnt"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image), "16M"], check=True, capture_output=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True, capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True, capture_output=True)


def test_a_write_through_a_mapping_after_the_stamp_moves_ctime(settle, trusted_dir):
    """The mapped-write hazard: a page already dirty takes more writes through a mapping with no
    new ctime. Stamping syncs the file first, so the next mapped write faults and moves ctime."""
    path = trusted_dir / "mapped.bin"
    path.write_bytes(b"a" * 4096)
    assert identity.filesystem(os.stat(path).st_dev) in identity.TRUSTED_FILESYSTEMS
    with path.open("r+b") as f, mmap.mmap(f.fileno(), 4096) as m:
        m[:1] = b"1"  # dirties the page (one fault, one time update)
        first = identity.stamp(path)
        assert first is not None and first.settled
        tick_past(path)
        m[:1] = b"2"  # the same mapping, the same page: faults again only because we synced
        second = identity.stamp(path)
    assert path.read_bytes()[:1] == b"2"
    assert second is not None and second.key != first.key


def test_tmpfs_files_are_never_trusted(settle):
    """tmpfs never writes back: once a page was written through a mapping, later writes to it
    leave ctime alone (this is how a guest's RAM file changes), so no stamp is vouched for."""
    path = f"/dev/shm/avscan-identity-{os.getpid()}"
    try:
        with open(path, "wb") as f:
            f.write(b"a" * 4096)
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 4096) as m:
            m[:1] = b"1"
            before = os.stat(path)
            os.fdatasync(f.fileno())
            tick_past(Path(path))
            m[:1] = b"2"
            after = os.stat(path)
        assert Path(path).read_bytes()[:1] == b"2"
        assert after.st_ctime_ns == before.st_ctime_ns  # changed content, same ctime
        unit = next(iter(FileTarget([path]).plan()))
        assert isinstance(unit, FileUnit) and unit.identity() is None
    finally:
        os.unlink(path)


def test_device_nodes_say_nothing_about_their_contents(settle):
    assert identity.settled_identity("disk", [], ["/dev/null"]) is None


# -- memory dumps -------------------------------------------------------------------------------


def dump_with(path: Path, marker_name: str | None, size: int = 4 * MiB) -> Path:
    data = bytearray(os.urandom(size))
    if marker_name:
        m = marker(marker_name)
        data[MiB + 100 : MiB + 100 + len(m)] = m
    path.write_bytes(data)
    return path


def memory_scan(engine, path: Path, os_mode: str = "physical"):
    from scanner.targets import TargetSpec, build_target

    with build_target(TargetSpec("memory", {"path": str(path), "format": "raw", "os": os_mode})) as target:
        return engine.scan(RULES, target)


def test_an_unchanged_settled_dump_is_answered_whole_and_a_mapped_write_is_seen(tmp_path, engine, settle):
    dump = dump_with(tmp_path / "guest.raw", "ONE")
    first, again = memory_scan(engine, dump), memory_scan(engine, dump)
    assert "cache.reused" not in first.details and "cache.reused" in again.details
    assert [(f.rule, f.address) for f in again.findings] == [(f.rule, f.address) for f in first.findings]
    assert [f.rule for f in first.findings] == ["Marker_ONE"]
    tick_past(dump)
    with dump.open("r+b") as f, mmap.mmap(f.fileno(), 0) as m:  # a tool patching the dump in place
        m[3 * MiB : 3 * MiB + len(marker("TWO"))] = marker("TWO")
    changed = memory_scan(engine, dump)
    assert "cache.reused" not in changed.details
    assert sorted(f.rule for f in changed.findings) == ["Marker_ONE", "Marker_TWO"]


def test_a_dump_on_tmpfs_is_hashed_every_time(engine, settle):
    dump = dump_with(Path(f"/dev/shm/avscan-identity-dump-{os.getpid()}"), "ONE")
    try:
        memory_scan(engine, dump)
        again = memory_scan(engine, dump)
        assert "cache.reused" not in again.details and again.coverage.cache_hits > 0  # hashed, then hit
    finally:
        dump.unlink()
