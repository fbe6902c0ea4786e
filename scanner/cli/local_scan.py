"""``avscan scan``: scan files, directories and memory images here, without a server."""

from __future__ import annotations

import contextlib
import re
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import click

from scanner.cli.progress import ProgressBar
from scanner.config import Config
from scanner.engine import Engine, Ruleset
from scanner.errors import InvalidArgument, ScannerError
from scanner.outputs import ecs, text
from scanner.targets import Target, TargetSpec, build_target
from scanner.verdicts import Verdict, VerdictKind

EXIT_CLEAN, EXIT_FOUND, EXIT_ERROR = 0, 1, 2


def load_ruleset(config: Config, rules: Path | None) -> tuple[Ruleset, int, int]:
    """(ruleset, rule count, version): ``rules`` ad hoc, else the active set, else the default."""
    from scanner.rulesets import RulesetStore, compile_path

    if rules is not None:
        loaded = compile_path(rules)
        return loaded, loaded.rule_count, 0
    store_root = config.state_dir / "rulesets"
    if store_root.exists():
        active = RulesetStore(store_root).active()
        if active is not None:
            return active, active.rule_count, active.version
    loaded = compile_path(config.signatures_dir)
    return loaded, loaded.rule_count, 0


@dataclass(frozen=True)
class Report:
    """How ``avscan scan`` reports: ECS JSON or clamscan-like text, and what to leave out."""

    as_json: bool = False
    infected_only: bool = False
    summary: bool = True
    strings: bool = False
    host_name: str = ""  # the VM the images or guests belong to, for host.* in ECS documents


SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def with_file_options(
    config: Config, exclude: tuple[str, ...], exclude_dir: tuple[str, ...], max_filesize: str | None
) -> Config:
    """``config`` with clamscan's --exclude, --exclude-dir and --max-filesize applied."""
    for pattern in (*exclude, *exclude_dir):
        try:
            re.compile(pattern)
        except re.error as e:
            raise click.BadParameter(f"{pattern!r}: {e}", param_hint="--exclude/--exclude-dir") from e
    policy = replace(config.files, exclude_regex=exclude, exclude_dir_regex=exclude_dir)
    if max_filesize:
        m = re.fullmatch(r"(\d+)([KMG]?)B?", max_filesize.strip().upper())
        if m is None:
            raise click.BadParameter(f"{max_filesize!r}: a size like 100, 25K, 25M or 2G", param_hint="--max-filesize")
        policy = replace(policy, max_file_size=int(m.group(1)) * SIZE_SUFFIXES[m.group(2)])
    return replace(config, files=policy)


@contextlib.contextmanager
def tee(path: str | None) -> Iterator[None]:
    """With ``path``: everything printed also goes to the end of that file (clamscan --log)."""
    if path is None:
        yield
        return
    try:
        log = open(path, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 - closed below
    except OSError as e:
        raise click.FileError(path, e.strerror) from e
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(saved[0], log), _Tee(saved[1], log)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
        log.close()


class _Tee:
    def __init__(self, out: TextIO, copy: TextIO) -> None:
        self.out, self.copy = out, copy

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.copy.flush()
        self.out.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.out, name)


def run_scan(config: Config, specs: list[TargetSpec], rules: Path | None, report: Report) -> int:
    if not specs:
        raise click.UsageError("give PATH arguments, --memory IMAGE, --guest-ram FILE or --guest-qmp SOCKET")
    try:
        ruleset, rule_count, version = load_ruleset(config, rules)
    except ScannerError as e:
        click.echo(f"avscan: {e.message}", err=True)
        for d in getattr(e, "diagnostics", []):
            click.echo(f"  {d}", err=True)
        return EXIT_ERROR
    engine = Engine(config.engine)
    worst = EXIT_CLEAN
    try:
        for spec in specs:
            started = time.monotonic()
            verdict = _scan_one(engine, ruleset, spec, config, report.as_json)
            subject = ecs.Subject(name=report.host_name) if report.host_name else ecs.Subject()
            facts = ecs.ScanFacts(f"local-{uuid.uuid4().hex}", spec.kind, spec.describe(), version, subject)
            _report(verdict, rule_count, facts, time.monotonic() - started, report)
            worst = max(worst, exit_code(verdict))
    finally:
        engine.close()
    return worst


def _scan_one(engine: Engine, ruleset: Ruleset, spec: TargetSpec, config: Config, as_json: bool) -> Verdict:
    from scanner.engine import error_verdict

    try:
        if spec.kind == "stdin":
            target: Target = _stdin(config.files.max_file_size)
        else:
            target = build_target(spec, config.files, config.state_dir / "profiles")
    except ScannerError as e:
        return error_verdict(ruleset.digest, e.message, time.time())
    bar = ProgressBar() if ProgressBar.wanted(as_json) else None
    try:
        with target:
            return engine.scan(ruleset, target, bar)
    finally:
        if bar is not None:
            bar.close()


def _stdin(limit: int) -> Target:
    """Standard input as one buffer unit (read up to the file size limit)."""
    from scanner.targets.buffer import BufferTarget

    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise InvalidArgument("stdin", f"larger than max_file_size {limit}")
    return BufferTarget("stdin", data)


def _report(verdict: Verdict, rule_count: int, facts: ecs.ScanFacts, elapsed: float, report: Report) -> None:
    if report.as_json:  # every finding, then the scan's end (clean, incomplete and error scans too)
        for doc in ecs.scan_documents(verdict, facts):
            click.echo(ecs.to_json(doc))
        out = sys.stderr
    else:
        for f in verdict.findings:
            click.echo(text.finding_line(f))
            if report.strings:
                for line in text.string_lines(f):
                    click.echo(line)
        out = sys.stdout
    if verdict.kind is VerdictKind.ERROR:
        click.echo(f"avscan: {verdict.error}", err=True)
    if not report.infected_only or report.as_json:
        for gap in verdict.coverage.gaps:
            click.echo(text.gap_line(gap), file=out)
    if report.summary:
        for line in text.summary(verdict, rule_count, elapsed):
            click.echo(line, file=out)


def exit_code(verdict: Verdict) -> int:
    """0 clean, 1 found (even if coverage is partial), 2 error or incomplete."""
    if verdict.kind in (VerdictKind.MALICIOUS, VerdictKind.SUSPICIOUS):
        return EXIT_FOUND
    if verdict.kind is VerdictKind.CLEAN:
        return EXIT_CLEAN
    return EXIT_ERROR
