"""The NTFS reader on what Windows volumes hold: every stream, reparse points by tag, initialized
size, allocation from the MFT. Images from ``mkntfs`` + ``ntfs-3g`` (see ``ntfs_images.py``);
expected bytes read back through ntfs-3g wherever it can read them."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.acquisition.disk.filesystems import Node
from scanner.acquisition.disk.filesystems.ntfs import FIRST_USER_RECORD, NtfsRoot, open_fs
from scanner.acquisition.disk.walk import GuestFile, Walker, WalkLimits, WalkProblem
from scanner.verdicts import VerdictKind
from tests.disk import images, ntfs_images
from tests.disk.conftest import need, skip_or_fail
from tests.disk.ntfs_images import MARK, STALE_FILE, STALE_SIZE, STALE_VALID
from tests.disk.scanning import found, scan


@pytest.fixture(scope="module")
def features(disk_dir: Path) -> tuple[Path, dict[str, bytes]]:
    need("mkntfs", "ntfs-3g", "ifind", "yara")
    if not images.ntfs_fuse_works():
        skip_or_fail("ntfs-3g needs /dev/fuse and root to write streams and reparse points")
    image = disk_dir / "ntfs-features.img"
    return image, ntfs_images.build_features(image)


def walk(image: Path) -> tuple[NtfsRoot, dict[str, Node], dict[str, WalkProblem]]:
    root = open_fs(image.open("rb"))
    files: dict[str, Node] = {}
    problems: dict[str, WalkProblem] = {}
    for item in Walker(WalkLimits()).walk(root):
        if isinstance(item, GuestFile):
            files[item.path] = item.node
        else:
            problems[item.path] = item
    return root, files, problems


def listing(root: NtfsRoot, path: str) -> dict[str, Node]:
    node: Node = root
    for part in filter(None, path.split("/")):
        node = {c.name: c for c in node.children()}[part]
    return {c.name: c for c in node.children()}


def test_named_streams_are_files_of_their_own_with_the_bytes_ntfs3g_reads(features):
    image, _ = features
    _, files, _ = walk(image)
    host, hidden = files["/ads/host.txt"], files["/ads/host.txt:hidden"]
    assert hidden.kind == "file" and hidden.key == (host.key, "hidden") and isinstance(host.key, int)
    assert files["/ads/folder:dirstream"].key[1] == "dirstream"  # a directory's stream too
    assert files["/:rootstream"].key == (5, "rootstream")  # the root directory's too
    with ntfs_images.mounted(image, "ro") as mnt:
        streams = ("/ads/host.txt:hidden", "/ads/only-ads.txt:payload", "/ads/folder:dirstream", "/:rootstream")
        for path in ("/ads/host.txt", *streams):
            assert files[path].open().read() == Path(f"{mnt}{path}").read_bytes(), path
            assert files[path].size == len(Path(f"{mnt}{path}").read_bytes())
    assert not [p for p in files if "WofCompressedData" in p]  # a WOF file's chunks are its data, listed once


def test_reparse_points_by_tag(features):
    image, wofs = features
    root, files, problems = walk(image)
    kinds = {name: node.kind for name, node in listing(root, "/reparse").items()}
    assert kinds["link"] == "symlink" and kinds["junction"] == "symlink"  # not followed
    for name in ("cloud.bin", "dehydrated.bin", "vendor.bin", "wof.bin", "wof-lzx.bin", "wof-bad.bin"):
        assert kinds[name] == "file", name
    for path, payload in wofs.items():  # WOF: read decompressed (raw chunks) at the logical size
        assert files[path].size == len(payload) and files[path].open().read() == payload
    assert files["/reparse/dehydrated.bin"].open().read() == bytes(50000)  # a placeholder: nothing here
    assert MARK in files["/reparse/cloud.bin"].open().read() and MARK in files["/reparse/vendor.bin"].open().read()
    assert "Data Deduplication" in problems["/reparse/dedup.bin"].reason
    assert "EFS-encrypted" in problems["/efs.bin"].reason  # ciphertext scanned would be a false CLEAN
    with pytest.raises(OSError, match=r"WOF-compressed data of MFT record .* LZXPRESS"):
        files["/reparse/wof-bad.bin"].open().read()


def test_bytes_past_the_initialized_size_read_as_zeros_like_ntfs3g(features):
    image, _ = features
    _, files, _ = walk(image)
    data = files[f"/{STALE_FILE}"].open().read()
    assert data == b"v" * STALE_VALID + bytes(STALE_SIZE - STALE_VALID)
    with ntfs_images.mounted(image, "ro") as mnt:
        assert (mnt / STALE_FILE).read_bytes() == data
    raw = image.read_bytes()
    assert MARK in raw  # the stale cluster still holds the marker on disk


def test_allocated_gives_every_stream_of_every_user_record_with_walk_keys(features):
    image, _ = features
    root, files, _ = walk(image)
    allocated = list(root.allocated() or [])
    by_key = {n.key: n for n in allocated}
    walked = {n.key: p for p, n in files.items()}
    assert set(walked) <= set(by_key)
    [behind] = [n for k, n in by_key.items() if k not in walked and n.kind == "file"]
    assert behind.name.startswith("<mft ") and behind.open().read().startswith(b"X5O!P%@AP")  # behind the junction
    hidden = by_key[files["/ads/host.txt:hidden"].key]
    assert hidden.name == f"<mft {hidden.key[0]}:hidden>" and hidden.open().read().endswith(MARK)
    gaps = " ".join(n.problem for n in allocated if n.kind == "damaged")
    assert "Data Deduplication" in gaps and "EFS-encrypted" in gaps
    assert {k for k in by_key if (k[0] if isinstance(k, tuple) else k) < FIRST_USER_RECORD} == {(5, "rootstream")}


def test_reserved_and_extend_records_are_not_listed(features, disk_dir):
    image, _ = features
    root, files, _ = walk(image)
    assert not [p for p in files if p.startswith("/$")]
    keys = {n.key for n in root.allocated() or []}
    segments = {k[0] if isinstance(k, tuple) else k for k in keys}
    assert min(segments - {5}) >= FIRST_USER_RECORD and (5, "rootstream") in keys  # the root: its stream only
    extend = _extend_records(image)
    assert extend and not extend & segments  # $ObjId, $Quota, $Reparse (records >= 16 under $Extend)
    # a writer that does not flag them as system files in their record headers: still not listed
    copy = disk_dir / "ntfs-features-extend.img"
    data = bytearray(image.read_bytes())
    mft = struct.unpack_from("<Q", data, 48)[0] * struct.unpack_from("<H", data, 11)[0] * data[13]
    for record in extend:
        struct.pack_into("<H", data, mft + record * 1024 + 0x16, 0x0001)
    copy.write_bytes(bytes(data))
    root, _, _ = walk(copy)
    assert not extend & {n.key[0] if isinstance(n.key, tuple) else n.key for n in root.allocated() or []}


def _extend_records(image: Path) -> set[int]:
    """Record numbers of the files in ``$Extend`` (record 11), as The Sleuth Kit lists them."""
    out = images.run("fls", image, "11")  # lines like "r/r 25-144-2:<TAB>$ObjId:$O"
    return {int(line.split()[1].split("-")[0]) for line in out.splitlines() if line.strip()}


def test_disk_target_finds_streams_and_placeholders_and_reports_gaps(features, engine, ruleset):
    image, _ = features
    verdict = scan(engine, ruleset, path=str(image))
    hits = found(verdict)
    for hit in (
        ("Marker_DISK", "/ads/host.txt:hidden"),
        ("EICAR_Test_File", "/ads/only-ads.txt:payload"),
        ("Marker_DISK", "/ads/folder:dirstream"),
        ("Marker_DISK", "/reparse/wof.bin"),
        ("Marker_DISK", "/reparse/wof-lzx.bin"),
        ("Marker_DISK", "/reparse/cloud.bin"),
        ("Marker_DISK", "/reparse/vendor.bin"),
        ("EICAR_Test_File", "/docs/eicar.com"),
        ("Marker_DISK", "/odd/\\uD800name.txt"),
        ("Marker_DISK", "/:rootstream"),
    ):
        assert hit in hits, hit
    assert not [h for h in hits if h[1] in (f"/{STALE_FILE}", "/reparse/link")]
    gaps = {g.unit: g.detail for g in verdict.coverage.gaps}
    assert "WOF-compressed" in gaps["disk:/reparse/wof-bad.bin"] and "dedup" in gaps["disk:/reparse/dedup.bin"].lower()
    assert "EFS-encrypted" in gaps["disk:/efs.bin"]
    assert verdict.kind is VerdictKind.MALICIOUS and not verdict.coverage.complete


def test_sha256_of_a_stream_finding_is_of_the_stream(features, engine, ruleset):
    image, _ = features
    verdict = scan(engine, ruleset, path=str(image))
    [finding] = [f for f in verdict.findings if f.context["path"] == "/ads/host.txt:hidden"]
    assert finding.context["sha256"] == hashlib.sha256(b"x" * 5000 + MARK).hexdigest()
    assert finding.context["mtime"].endswith("+00:00")  # NTFS times are UTC, and say so


def test_allocated_reports_records_it_cannot_trust_as_damaged(features, disk_dir):
    image, _ = features
    copy = disk_dir / "ntfs-features-damaged.img"
    data = bytearray(image.read_bytes())
    mft = struct.unpack_from("<Q", data, 48)[0] * struct.unpack_from("<H", data, 11)[0] * data[13]
    behind = int(images.run("ifind", "-n", "/reparse/junction/behind.com", image).split()[0])
    plain = int(images.run("ifind", "-n", "/plain.txt", image).split()[0])
    struct.pack_into("<H", data, mft + behind * 1024 + 0x16, 0x0101)  # in use, plus a flag NTFS never sets
    data[mft + plain * 1024 : mft + plain * 1024 + 4] = b"BAAD"  # what chkdsk leaves after a torn write
    copy.write_bytes(bytes(data))
    root, _, problems = walk(copy)
    damaged = {n.key: n.problem for n in root.allocated() or [] if n.kind == "damaged"}
    assert "flags 0x101" in damaged[behind] and "BAAD" in damaged[plain]
    assert "does not load" in problems["/plain.txt"].reason  # the walk cannot either: a gap, not a silent miss


def test_names_no_utf8_string_can_hold_are_escaped_and_still_read(features):
    image, _ = features
    root, files, problems = walk(image)
    assert files["/odd/\\uD800name.txt"].open().read() == MARK
    for path in files:
        path.encode("utf-8")  # every name is a valid string for units, logs, SQLite and gRPC
    # libfsntfs cannot load a record whose stream name holds one: that record is a gap, never silent
    record = int(images.run("ifind", "-n", "/odd-stream.txt", image).split()[0])
    assert not [p for p in files if p.startswith("/odd-stream.txt")]
    assert [p for p in problems.values() if "surrogate" in p.reason]
    assert "surrogate" in {n.key: n.problem for n in root.allocated() or []}[record]


def test_a_volume_libfsntfs_cannot_open_is_a_gap_with_one_line_reason(features, disk_dir, engine, ruleset):
    image, _ = features
    copy = disk_dir / "ntfs-features-badboot.img"
    data = bytearray(image.read_bytes())
    data[11:13] = b"\0\0"  # bytes per sector
    copy.write_bytes(bytes(data))
    verdict = scan(engine, ruleset, path=str(copy))
    [gap] = verdict.coverage.gaps
    assert gap.detail.endswith("volume does not open: unsupported bytes per sector: 0"), gap.detail
    assert verdict.kind is VerdictKind.INCOMPLETE


MUTANTS = r"""
import io, random, struct, sys
from scanner.acquisition.disk.filesystems.ntfs import open_fs
from scanner.acquisition.disk.walk import GuestFile, Walker, WalkLimits
data = open(sys.argv[1], "rb").read()
rng = random.Random(int(sys.argv[2]))
mft = struct.unpack_from("<Q", data, 48)[0] * struct.unpack_from("<H", data, 11)[0] * data[13]
indx = [i for i in range(0, len(data), 4096) if data[i : i + 4] == b"INDX"]
for case in range(int(sys.argv[3])):
    buf = bytearray(data)
    for _ in range(rng.randint(1, 40)):
        if indx and rng.random() < 0.4:
            at = rng.choice(indx) + rng.randrange(4096)  # a directory index block
        else:
            at = mft + rng.randrange(128 * 1024)  # the first 128 MFT records
        buf[at] = rng.randrange(256)
    try:
        root = open_fs(io.BytesIO(bytes(buf)))
    except Exception:
        continue
    nodes = [i.node for i in Walker(WalkLimits()).walk(root) if isinstance(i, GuestFile)]
    for node in nodes + [n for n in root.allocated() or [] if n.kind == "file"]:
        try:
            node.open().read()
        except OSError:
            pass
print("survived", case + 1)
"""


def test_libfsntfs_survives_damaged_records_and_indexes_in_a_child_process(features):
    """A C parser on hostile data: mutated MFT records and index blocks must give gaps and errors
    (OSError from reads only), never a crash of the process or an exception of another kind."""
    image, _ = features
    command = [sys.executable, "-c", MUTANTS, str(image), "11", "60"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "survived 60", done.stderr[-2000:]
