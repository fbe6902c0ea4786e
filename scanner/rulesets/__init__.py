"""The signature store: YARA rulesets pushed as source, compiled in a child process with limits,
content-addressed, versioned, activated atomically and rolled back.

- :mod:`.model` -- ``RulesetFile``, ``LoadedRuleset``, ``RulesetInfo``, the digest.
- :mod:`.compiler` -- compile source in a child (:mod:`.compile_worker`); ``compile_path``.
- :mod:`.store` -- ``RulesetStore`` on disk: push, validate, activate, rollback, list, load.

Names are imported lazily, so the compile worker (``python -m scanner.rulesets.compile_worker``)
starts without loading the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scanner.rulesets.compiler import (
        EXTERNALS,
        CompileLimits,
        compile_files,
        compile_path,
        read_rule_tree,
    )
    from scanner.rulesets.model import LoadedRuleset, RulesetFile, RulesetInfo, ruleset_digest
    from scanner.rulesets.store import RulesetStore

_EXPORTS = {
    "EXTERNALS": "compiler",
    "CompileLimits": "compiler",
    "compile_files": "compiler",
    "compile_path": "compiler",
    "read_rule_tree": "compiler",
    "LoadedRuleset": "model",
    "RulesetFile": "model",
    "RulesetInfo": "model",
    "ruleset_digest": "model",
    "RulesetStore": "store",
}
__all__ = [
    "EXTERNALS",
    "CompileLimits",
    "LoadedRuleset",
    "RulesetFile",
    "RulesetInfo",
    "RulesetStore",
    "compile_files",
    "compile_path",
    "read_rule_tree",
    "ruleset_digest",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
