"""Compile YARA source into rules, in a child process with limits.

Contract:
- Only source goes in; the compiler runs as ``python -m scanner.rulesets.compile_worker`` (a new
  interpreter, never a fork of the threaded server) that lowers its own address-space, CPU-time
  and file-size limits before it imports yara. The parent enforces a wall-clock timeout and kills
  the child when it passes. A child that crashes, times out or hits a limit gives a
  :class:`RulesetError` saying which; the caller is never left hanging.
- ``include`` directives are disabled; every file is its own namespace, named by its relative
  path; the externals in :data:`EXTERNALS` are always defined (as empty strings).
- Every diagnostic names the ruleset-relative file and line (temp paths never leak).
- Input is bounded before anything runs: file count and total size (:class:`CompileLimits`),
  beyond which :class:`ResourceExhausted` is raised.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yara  # type: ignore[import-not-found,unused-ignore]

from scanner.errors import Diagnostic, InvalidArgument, NotFound, ResourceExhausted, RulesetError
from scanner.rulesets.model import (
    RULE_EXTENSIONS,
    LoadedRuleset,
    RulesetFile,
    check_file_set,
    ruleset_digest,
)

#: Variables every rule may use (signature-base needs them); the scanner fills them per file.
EXTERNALS: Mapping[str, str] = {
    "filename": "",
    "filepath": "",
    "extension": "",
    "filetype": "",
    "owner": "",
}
_WORKER = "scanner.rulesets.compile_worker"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_MIB = 1 << 20


@dataclass(frozen=True)
class CompileLimits:
    """Bounds on one compilation: input size, and what the child process may use."""

    max_files: int = 10_000
    max_total_bytes: int = 64 * _MIB
    timeout_s: float = 300.0
    cpu_seconds: int = 120
    memory_bytes: int = 4096 * _MIB
    output_bytes: int = 1024 * _MIB
    probe_bytes: int = 16 * _MIB  # pushed rules are timed on a reference buffer this big...
    probe_seconds: float = 5.0  # ...and refused past this (unless forced)


@dataclass(frozen=True)
class Probe:
    """Time the compiled rules on the reference buffer (``CompileLimits.probe_*``); ``force``
    turns "too slow" from an error into a warning."""

    force: bool = False


@dataclass(frozen=True)
class CompileResult:
    """What the child reported: ``ok`` when there were no errors; warnings come either way."""

    ok: bool
    rule_count: int
    diagnostics: tuple[Diagnostic, ...]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity != "error")


def check_limits(files: Iterable[RulesetFile], limits: CompileLimits) -> list[RulesetFile]:
    """The files sorted and checked (see ``check_file_set``); ResourceExhausted past a limit."""
    ordered = check_file_set(files)
    if len(ordered) > limits.max_files:
        raise ResourceExhausted(f"ruleset: {len(ordered)} files, limit {limits.max_files}")
    total = sum(len(f.data) for f in ordered)
    if total > limits.max_total_bytes:
        raise ResourceExhausted(f"ruleset: {total} bytes of source, limit {limits.max_total_bytes}")
    return ordered


def run_compiler(
    files: Iterable[RulesetFile],
    limits: CompileLimits | None = None,
    output: Path | None = None,
    probe: Probe | None = None,
) -> CompileResult:
    """Compile ``files`` in a child process; on success save the rules to ``output`` if given.

    ``probe``: also time the rules on the reference buffer; a ruleset slower than the budget
    gets error diagnostics naming the slow files (``slow_pattern``), or warnings when forced.

    Errors in the rules are returned in the result (``ok`` False); a failure of the child itself
    (crash, timeout, limit) raises :class:`RulesetError`.
    """
    limits = limits or CompileLimits()
    ordered = check_limits(files, limits)
    with tempfile.TemporaryDirectory(prefix="yara-compile-") as tmp:
        job = _write_job(Path(tmp), ordered, limits, output, probe)
        _run_child(job, limits)
        result = _read_result(Path(tmp) / "result.json")
    for d in result.errors:
        if d.message == "not enough memory":
            raise ResourceExhausted(f"ruleset: compiler memory limit of {limits.memory_bytes} bytes exceeded at {d}")
    return result


def compile_files(files: Iterable[RulesetFile], name: str, limits: CompileLimits | None = None) -> LoadedRuleset:
    """Compile ``files`` into an ad-hoc ruleset (version 0); RulesetError on errors."""
    ordered = check_limits(files, limits or CompileLimits())
    with tempfile.TemporaryDirectory(prefix="yara-rules-") as tmp:
        out = Path(tmp) / "compiled.yarc"
        result = run_compiler(ordered, limits, out)
        raise_on_errors(result)
        rules = yara.load(str(out))
    return LoadedRuleset(
        digest=ruleset_digest(ordered),
        version=0,
        name=name,
        rules=rules,
        rule_count=result.rule_count,
        externals=dict(EXTERNALS),
        warnings=result.warnings,
    )


def compile_path(path: Path, limits: CompileLimits | None = None) -> LoadedRuleset:
    """Compile a local ``.yar``/``.yara`` file or a directory of them (recursive), not stored."""
    limits = limits or CompileLimits()
    return compile_files(read_rule_tree(path, limits), name=path.name, limits=limits)


def read_rule_tree(path: Path, limits: CompileLimits | None = None) -> list[RulesetFile]:
    """The rule files at ``path`` (a file, or a directory searched recursively), sorted.

    Sizes are checked before reading, so a huge tree fails fast with ResourceExhausted.
    Symlinked directories are not followed.
    """
    limits = limits or CompileLimits()
    if path.is_file():
        found = [(path.name, path)]
    elif path.is_dir():
        found = sorted(
            (p.relative_to(path).as_posix(), p)
            for p in _walk(path)
            if p.suffix.lower() in RULE_EXTENSIONS and p.is_file()
        )
    else:
        raise NotFound(f"{path}: no such rule file or directory")
    if not found:
        raise InvalidArgument("rules", f"{path}: no .yar or .yara files")
    if len(found) > limits.max_files:
        raise ResourceExhausted(f"{path}: {len(found)} rule files, limit {limits.max_files}")
    total = sum(p.stat().st_size for _, p in found)
    if total > limits.max_total_bytes:
        raise ResourceExhausted(f"{path}: {total} bytes of rules, limit {limits.max_total_bytes}")
    return [RulesetFile(rel, p.read_bytes()) for rel, p in found]


def raise_on_errors(result: CompileResult) -> None:
    """Raise :class:`RulesetError` with every diagnostic when ``result`` has errors."""
    if result.ok:
        return
    errors = result.errors
    first = str(errors[0]) if errors else "compilation failed"
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    raise RulesetError(f"ruleset does not compile: {first}{more}", list(result.diagnostics))


def _walk(root: Path) -> Iterable[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            yield Path(dirpath) / n


def _write_job(
    tmp: Path, files: list[RulesetFile], limits: CompileLimits, output: Path | None, probe: Probe | None
) -> Path:
    """Write the sources as ``src/<n>.yar`` (plain names: the child sees no hostile paths)."""
    src = tmp / "src"
    src.mkdir()
    sources = []
    for i, f in enumerate(files):
        p = src / f"{i:05d}.yar"
        p.write_bytes(f.data)
        sources.append([f.path, str(p)])
    job: dict[str, Any] = {
        "sources": sources,
        "externals": dict(EXTERNALS),
        "output": str(output) if output else None,
        "result": str(tmp / "result.json"),
        "limits": {
            "as": limits.memory_bytes,
            "cpu": limits.cpu_seconds,
            "fsize": limits.output_bytes,
        },
        "probe": None
        if probe is None
        else {"bytes": limits.probe_bytes, "budget": limits.probe_seconds, "force": probe.force},
    }
    path = tmp / "job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def _run_child(job: Path, limits: CompileLimits) -> None:
    cmd = [sys.executable, "-m", _WORKER, str(job)]
    try:
        proc = subprocess.run(
            cmd,
            cwd=_PACKAGE_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=limits.timeout_s,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise RulesetError(f"compiler timed out after {limits.timeout_s:g} s (killed)") from e
    except OSError as e:
        raise RulesetError(f"compiler could not start: {e}") from e
    if proc.returncode != 0:
        raise RulesetError(_child_failure(proc.returncode, proc.stderr, limits))


def _child_failure(returncode: int, stderr: bytes, limits: CompileLimits) -> str:
    if returncode < 0:
        sig = signal.Signals(-returncode)
        why = {
            signal.SIGXCPU: f"CPU limit of {limits.cpu_seconds} s exceeded",
            signal.SIGXFSZ: f"compiled output over {limits.output_bytes} bytes",
            signal.SIGKILL: "killed (out of memory?)",
        }.get(sig, "crashed")
        return f"compiler {why} (signal {sig.name})"
    lines = stderr.decode(errors="replace").strip().splitlines()
    last = lines[-1] if lines else "no output"
    if "MemoryError" in last:
        return f"compiler ran out of memory (limit {limits.memory_bytes} bytes): {last}"
    return f"compiler failed with exit status {returncode}: {last}"


def _read_result(path: Path) -> CompileResult:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        diags = tuple(Diagnostic(**d) for d in raw["diagnostics"])
        return CompileResult(ok=bool(raw["ok"]), rule_count=int(raw["rule_count"]), diagnostics=diags)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RulesetError(f"compiler gave no usable result: {e}") from e
