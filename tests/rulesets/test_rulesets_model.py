"""Ruleset paths, file sets and the content digest."""

from __future__ import annotations

import hashlib
import posixpath
import struct
from pathlib import Path

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from scanner.errors import InvalidArgument
from scanner.rulesets.model import RulesetFile, check_file_set, check_rule_path, ruleset_digest


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/rules.yar",
        "../x.yar",
        "a/../../x.yar",
        "a/./b.yar",
        "./a.yar",
        "a//b.yar",
        "a.yar/",
        "a\x00.yar",
        "a\nb.yar",
        "a\\b.yar",
        "rules.txt",
        "rules.yar.sh",
        "rules",
        "a" * 300 + ".yar",
        "/".join(["d"] * 600) + ".yar",
    ],
)
def test_hostile_paths_are_rejected(path: str) -> None:
    with pytest.raises(InvalidArgument):
        RulesetFile(path, b"rule a { condition: true }")


@pytest.mark.parametrize("path", ["a.yar", "linux/miners.yara", "UPPER.YAR", "a b/c-d_e.yar"])
def test_ordinary_paths_are_accepted(path: str) -> None:
    assert RulesetFile(path, b"").path == path


def test_data_must_be_bytes() -> None:
    with pytest.raises(InvalidArgument):
        RulesetFile("a.yar", "rule a { condition: true }")  # type: ignore[arg-type]


COMPONENTS = st.sampled_from(["..", ".", "", "a", "rules", "x y", "é", "a\\b", "t\tab", "...", "a.yar"])
SUFFIXES = st.sampled_from([".yar", ".YARA", ".yara", ".txt", "", "/"])


@st.composite
def rule_paths(draw: st.DrawFn) -> str:
    """Paths that are often fine and often hostile: '..', '.', empty components, a leading '/',
    backslashes, control characters, wrong extensions."""
    parts = draw(st.lists(COMPONENTS | st.text("ab.", min_size=1, max_size=4), min_size=1, max_size=5))
    return draw(st.sampled_from(["", "", "/"])) + "/".join(parts) + draw(SUFFIXES)


def _safe(path: str) -> bool:
    """The oracle, from posixpath and the filesystem rather than the checker: a relative path that
    normalisation leaves alone, that resolves below the base, with no control character or
    backslash, naming a .yar/.yara file."""
    base = Path("/base")
    return (
        bool(path)
        and not path.startswith("/")
        and posixpath.normpath(path) == path
        and (base / path).resolve(strict=False).is_relative_to(base)
        and not any(ord(c) < 0x20 or c in "\\\x7f" for c in path)
        and path.lower().endswith((".yar", ".yara"))
    )


@settings(max_examples=400)
@given(rule_paths())
def test_a_path_is_accepted_exactly_when_it_stays_inside_the_ruleset(path: str) -> None:
    try:
        check_rule_path(path)
        accepted = True
    except InvalidArgument:
        accepted = False
    assert accepted == _safe(path)


def test_the_path_property_sees_both_outcomes() -> None:
    """The property above would be vacuous if the generator made only rejected paths."""
    assert check_rule_path(find(rule_paths(), lambda p: _safe(p) and "/" in p))
    with pytest.raises(InvalidArgument):
        check_rule_path(find(rule_paths(), lambda p: not _safe(p) and "/.." in p))


def test_file_set_rejects_empty_duplicates_and_file_dir_clash() -> None:
    with pytest.raises(InvalidArgument):
        check_file_set([])
    with pytest.raises(InvalidArgument, match="duplicate"):
        check_file_set([RulesetFile("a.yar", b"1"), RulesetFile("a.yar", b"2")])
    with pytest.raises(InvalidArgument, match="both a file and a directory"):
        check_file_set([RulesetFile("a.yar", b"1"), RulesetFile("a.yar/b.yar", b"2")])


def test_digest_follows_the_documented_encoding() -> None:
    files = [RulesetFile("z.yar", b"second"), RulesetFile("a/b.yar", b"first")]
    h = hashlib.sha256(b"scanner-ruleset-v1\n")
    for path, data in [(b"a/b.yar", b"first"), (b"z.yar", b"second")]:
        h.update(struct.pack(">Q", len(path)) + path + struct.pack(">Q", len(data)) + data)
    assert ruleset_digest(files) == "sha256:" + h.hexdigest()


def test_digest_depends_on_content_and_paths_not_order() -> None:
    a, b = RulesetFile("a.yar", b"x"), RulesetFile("b.yar", b"y")
    assert ruleset_digest([a, b]) == ruleset_digest([b, a])
    assert ruleset_digest([a, b]) != ruleset_digest([a, RulesetFile("b.yar", b"y ")])
    assert ruleset_digest([a]) != ruleset_digest([RulesetFile("c.yar", b"x")])
