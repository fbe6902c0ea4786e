"""``avscan scan``: scan files, directories and memory images here, without a server."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import click

from scanner.config import Config
from scanner.engine import Engine, Ruleset
from scanner.errors import ScannerError
from scanner.outputs import ecs, text
from scanner.targets import TargetSpec, build_target
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


def run_scan(
    config: Config,
    specs: list[TargetSpec],
    rules: Path | None,
    as_json: bool,
    infected_only: bool,
) -> int:
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
            verdict = _scan_one(engine, ruleset, spec, config)
            facts = ecs.ScanFacts(f"local-{uuid.uuid4().hex}", spec.kind, spec.describe(), version, state="DONE")
            _report(verdict, rule_count, facts, time.monotonic() - started, as_json, infected_only)
            worst = max(worst, exit_code(verdict))
    finally:
        engine.close()
    return worst


def _scan_one(engine: Engine, ruleset: Ruleset, spec: TargetSpec, config: Config) -> Verdict:
    from scanner.engine import error_verdict

    try:
        target = build_target(spec, config.files, config.state_dir / "profiles")
    except ScannerError as e:
        return error_verdict(ruleset.digest, e.message, time.time())
    with target:
        return engine.scan(ruleset, target)


def _report(
    verdict: Verdict, rule_count: int, facts: ecs.ScanFacts, elapsed: float, as_json: bool, quiet: bool
) -> None:
    if as_json:  # every finding, then the scan's end (clean, incomplete and error scans too)
        for doc in ecs.scan_documents(verdict, facts):
            click.echo(ecs.to_json(doc))
        out = sys.stderr
    else:
        for f in verdict.findings:
            click.echo(text.finding_line(f))
        out = sys.stdout
    if verdict.kind is VerdictKind.ERROR:
        click.echo(f"avscan: {verdict.error}", err=True)
    if not quiet or as_json:
        for gap in verdict.coverage.gaps:
            click.echo(text.gap_line(gap), file=out)
    for line in text.summary(verdict, rule_count, elapsed):
        click.echo(line, file=out)


def exit_code(verdict: Verdict) -> int:
    """0 clean, 1 found (even if coverage is partial), 2 error or incomplete."""
    if verdict.kind in (VerdictKind.MALICIOUS, VerdictKind.SUSPICIOUS):
        return EXIT_FOUND
    if verdict.kind is VerdictKind.CLEAN:
        return EXIT_CLEAN
    return EXIT_ERROR
