"""File targets: walking, limits and exclusions accounted in coverage, never silently dropped."""

from __future__ import annotations

import os

from scanner.targets.base import Skipped, Unit
from scanner.targets.files import FilePolicy, FileTarget
from scanner.verdicts import GapKind


def plan(paths, **policy):
    return list(FileTarget([str(p) for p in paths], FilePolicy(**policy)).plan())


def test_walks_regular_files_sorted_and_ignores_symlinks(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z")
    (tmp_path / "a.txt").write_text("a")
    os.symlink("/etc/passwd", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    items = plan([tmp_path])
    assert [i.name for i in items] == [str(tmp_path / "a.txt"), str(tmp_path / "b" / "z.txt")]
    assert all(isinstance(i, Unit) for i in items)


def test_size_limit_is_a_gap_and_exclusion_is_counted(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"x" * 100)
    (tmp_path / "movie.iso").write_bytes(b"y")
    (tmp_path / "ok.txt").write_bytes(b"z")
    items = {os.path.basename(i.name): i for i in plan([tmp_path], max_file_size=50, exclude_extensions=("iso",))}
    big, iso = items["big.bin"], items["movie.iso"]
    assert isinstance(big, Skipped) and big.kind is GapKind.SKIPPED_LIMIT and big.gap
    assert isinstance(iso, Skipped) and iso.kind is GapKind.SKIPPED_POLICY and not iso.gap
    assert isinstance(items["ok.txt"], Unit)
    strict = plan([tmp_path / "movie.iso"], exclude_extensions=("iso",), exclusions_are_gaps=True)
    assert strict[0].gap


def test_missing_path_and_depth_limit_are_reported(tmp_path):
    deep = tmp_path
    for i in range(5):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    items = plan([tmp_path / "nope", tmp_path], max_depth=3)
    kinds = {i.kind for i in items if isinstance(i, Skipped)}
    assert kinds == {GapKind.UNREADABLE, GapKind.SKIPPED_LIMIT}


def test_file_unit_window_is_zero_copy_view_of_the_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 100)
    [unit] = plan([path])
    with unit.window(0, unit.size) as view:
        assert isinstance(view, memoryview)
        assert view[:4].tobytes() == b"\x00\x01\x02\x03"
    assert unit.externals["filename"] == "f.bin" and unit.externals["extension"] == "bin"
