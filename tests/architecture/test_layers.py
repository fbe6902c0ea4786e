"""The layout's promises: the core imports no edge library; generated code is fresh.

Acquisition backends (LibVMI, QMP) and the API/CLI are edges; the engine, targets, signature
store, state and jobs are the core.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = [
    "engine",
    "targets",
    "rulesets",
    "state",
    "jobs",
    "verdicts.py",
    "errors.py",
    "app.py",
    "config.py",
]
EDGE_MODULES = {"grpc", "libvmi", "pyVmomi", "pyVim", "scanner.api", "scanner.v1", "scanner.cli"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_never_imports_grpc_libvmi_or_pyvmomi():
    offenders = []
    for entry in CORE:
        base = REPO / "scanner" / entry
        for path in [base] if base.is_file() else sorted(base.rglob("*.py")):
            for name in imported_modules(path):
                if any(name == edge or name.startswith(edge + ".") for edge in EDGE_MODULES):
                    offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []


def test_generated_proto_code_is_fresh():
    result = subprocess.run(
        [sys.executable, str(REPO / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
