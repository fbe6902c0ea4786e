"""The default ruleset in ``signatures/``: ensure_default, metadata, and what each rule finds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from scanner.rulesets.compiler import compile_path
from scanner.rulesets.store import RulesetStore

from .conftest import SIGNATURES
from .samples import BENIGN, MINER_BINARY, MINER_CONFIG, REVERSE_SHELLS, eicar, upx_elf

if TYPE_CHECKING:
    from scanner.rulesets.model import LoadedRuleset

    from .conftest import AuditLog


@pytest.fixture(scope="module")
def default_rules() -> LoadedRuleset:
    return compile_path(SIGNATURES)


def matches(rules: LoadedRuleset, data: bytes) -> list[str]:
    return sorted(m.rule for m in rules.rules.match(data=data, externals=dict(rules.externals)))


def test_ensure_default_activates_the_shipped_rules_once(tmp_path: Path, audit: AuditLog) -> None:
    store = RulesetStore(tmp_path, audit=audit)
    info = store.ensure_default(SIGNATURES)
    assert info is not None
    assert (info.version, info.active, info.pushed_by) == (1, True, "system")
    active = store.active()
    assert active is not None
    assert matches(active, b"prefix " + eicar() + b" suffix") == ["EICAR_Test_File"]
    assert matches(active, eicar()[:-1]) == []  # the whole test string, not a part of it
    assert store.ensure_default(SIGNATURES) is None
    assert audit.actions() == ["ruleset.push", "ruleset.activate"]


def test_default_rules_compile_cleanly_with_the_metadata_convention(
    default_rules: LoadedRuleset,
) -> None:
    assert default_rules.warnings == ()
    assert default_rules.rule_count >= 4
    for rule in default_rules.rules:
        meta = rule.meta
        assert {"author", "description", "severity", "scan_context"} <= set(meta), rule.identifier
        assert isinstance(meta["severity"], int)
        assert 0 <= meta["severity"] <= 100
        assert meta["scan_context"] in ("file", "file, memory")


def test_no_file_in_the_repository_is_an_eicar_sample() -> None:
    for path in [*SIGNATURES.rglob("*"), *Path(__file__).parent.rglob("*")]:
        if path.is_file():
            assert eicar() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("sample", "rule"),
    [
        (upx_elf(), "Linux_ELF_UPX_Packed"),
        *[(s, "Linux_Script_Reverse_Shell") for s in REVERSE_SHELLS],
        (MINER_CONFIG, "Linux_Miner_XMRig_Config"),
        (MINER_BINARY, "Linux_Miner_XMRig_Binary"),
    ],
)
def test_each_rule_finds_its_sample(default_rules: LoadedRuleset, sample: bytes, rule: str) -> None:
    assert matches(default_rules, sample) == [rule]


@pytest.mark.parametrize("sample", BENIGN)
def test_ordinary_files_do_not_match(default_rules: LoadedRuleset, sample: bytes) -> None:
    assert matches(default_rules, sample) == []


def test_the_python_interpreter_does_not_match(default_rules: LoadedRuleset) -> None:
    assert matches(default_rules, Path(sys.executable).resolve().read_bytes()) == []
