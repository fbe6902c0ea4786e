"""The child-process compiler: diagnostics with file and line, limits, the public rule sets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yara

from scanner.errors import InvalidArgument, NotFound, ResourceExhausted, RulesetError
from scanner.rulesets.compiler import EXTERNALS, CompileLimits, compile_files, compile_path, run_compiler
from scanner.rulesets.model import RulesetFile
from tests.support.public_rules import PUBLIC_RULESETS as PUBLIC

from .samples import rule_file

BROKEN = b"""rule ok { condition: true }

rule broken {
  strings: $a = "abc"
  condition: $a and
}
"""
SLOW = b"rule slow {\n  strings:\n    $a = { 00 ?? ?? ?? }\n  condition:\n    $a\n}\n"


def test_broken_rule_is_rejected_with_its_file_and_line() -> None:
    files = [rule_file("good.yar", "good", "marker"), RulesetFile("linux/bad.yar", BROKEN)]
    with pytest.raises(RulesetError, match=r"linux/bad\.yar:6") as info:
        compile_files(files, name="t")
    (error,) = [d for d in info.value.diagnostics if d.severity == "error"]
    assert (error.file, error.line) == ("linux/bad.yar", 6)
    assert "syntax error" in error.message
    assert "/tmp" not in str(info.value)  # temp paths of the child never leak


def test_every_broken_file_is_reported() -> None:
    undefined = RulesetFile("b.yara", b"rule b {\n  condition:\n    nosuchthing\n}\n")
    result = run_compiler([RulesetFile("a.yar", BROKEN), undefined])
    assert not result.ok
    assert [(d.file, d.line) for d in result.errors] == [("a.yar", 6), ("b.yara", 3)]
    assert "undefined identifier" in result.errors[1].message


def test_slow_pattern_warning_carries_file_and_line() -> None:
    loaded = compile_files([RulesetFile("perf/slow.yar", SLOW)], name="t")
    (warning,) = loaded.warnings
    assert (warning.severity, warning.file, warning.line) == ("warning", "perf/slow.yar", 3)
    assert warning.slow_pattern
    assert "slow down scanning" in warning.message


def test_includes_are_disabled() -> None:
    files = [RulesetFile("inc.yar", b'include "/etc/passwd"\nrule a { condition: true }\n')]
    with pytest.raises(RulesetError, match="includes are disabled") as info:
        compile_files(files, name="t")
    assert info.value.diagnostics[0].file == "inc.yar"


def test_externals_are_defined_and_each_file_is_its_own_namespace() -> None:
    src = b'rule same { condition: filename == "" and owner == "" and filetype == "" }\n'
    loaded = compile_files([RulesetFile("a.yar", src), RulesetFile("b/c.yar", src)], name="t")
    assert loaded.rule_count == 2
    assert set(loaded.externals) == {"filename", "filepath", "extension", "filetype", "owner"}
    matches = loaded.rules.match(data=b"x", externals=dict(loaded.externals))
    assert sorted(m.namespace for m in matches) == ["a.yar", "b/c.yar"]
    assert loaded.version == 0
    assert loaded.digest.startswith("sha256:")


def test_input_over_the_size_or_count_limit_is_refused_before_compiling() -> None:
    big = RulesetFile("big.yar", b"// " + b"x" * 2000 + b"\nrule a { condition: true }\n")
    with pytest.raises(ResourceExhausted, match="limit 1024"):
        run_compiler([big], CompileLimits(max_total_bytes=1024))
    many = [rule_file(f"r{i}.yar", f"r{i}", "m") for i in range(3)]
    with pytest.raises(ResourceExhausted, match="3 files, limit 2"):
        run_compiler(many, CompileLimits(max_files=2))


def test_a_compiler_that_overruns_its_time_is_killed_with_a_clear_error() -> None:
    with pytest.raises(RulesetError, match=r"timed out after 0\.01 s"):  # the deadline, not the run, ended it
        run_compiler([rule_file("a.yar", "a", "m")], CompileLimits(timeout_s=0.01))


def test_a_compiler_that_runs_out_of_memory_fails_clearly() -> None:
    # 16 MiB of address space: the child cannot even map libyara. It must fail, not hang.
    with pytest.raises((RulesetError, ResourceExhausted), match="compiler"):
        run_compiler([rule_file("a.yar", "a", "m")], CompileLimits(memory_bytes=16 << 20))


def test_compile_path_reads_one_file_or_a_tree(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "one.yar").write_bytes(b"rule one { condition: true }")
    (tmp_path / "sub" / "two.yara").write_bytes(b"rule two { condition: true }")
    (tmp_path / "notes.txt").write_text("not a rule")
    assert compile_path(tmp_path).rule_count == 2
    assert compile_path(tmp_path / "one.yar").rule_count == 1
    with pytest.raises(NotFound):
        compile_path(tmp_path / "missing")
    with pytest.raises(InvalidArgument):
        compile_path(_empty(tmp_path))
    with pytest.raises(ResourceExhausted):
        compile_path(tmp_path, CompileLimits(max_total_bytes=10))


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


@pytest.mark.parametrize(
    ("folder", "min_rules"),
    [("elastic-protections-artifacts/rules", 2500), ("signature-base/rules", 5000)],
)
def test_public_rule_sets_compile(folder: str, min_rules: int) -> None:
    path = PUBLIC / folder
    assert path.is_dir(), f"{path} not present (set SCANNER_RULESETS to ../shared/rulesets)"
    loaded = compile_path(path)
    # every rule of every file is there: yara-python, compiling each file on its own outside our
    # child process, counts the same rules, and the compiled file we load iterates them all
    files = [f for f in sorted(path.rglob("*")) if f.is_file() and f.suffix.lower() in (".yar", ".yara")]
    externals = dict.fromkeys(EXTERNALS, "")
    theirs = sum(sum(1 for _ in yara.compile(filepath=str(f), externals=externals, includes=False)) for f in files)
    assert loaded.rule_count == theirs == sum(1 for _ in loaded.rules) >= min_rules
