"""Client commands: talk to a running service (``avscan rules ...``, ``avscan scans ...``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc

from scanner.api.client import Client, ClientTLS, disk_target, files_target, guest_target, memory_target
from scanner.api.status import field_violations
from scanner.v1 import scans_pb2, signatures_pb2, verdict_pb2

F = TypeVar("F", bound=Callable[..., Any])


def client_options(fn: F) -> F:
    options = [
        click.option(
            "--server",
            default=os.environ.get("AVSCAN_SERVER", "127.0.0.1:50051"),
            show_default=True,
            help="Service address (env AVSCAN_SERVER).",
        ),
        click.option("--token", default=os.environ.get("AVSCAN_TOKEN", ""), help="Bearer token (env AVSCAN_TOKEN)."),
        click.option("--ca", type=click.Path(path_type=Path, exists=True), help="CA certificate: use TLS."),
        click.option("--cert", type=click.Path(path_type=Path, exists=True), help="Client certificate (mTLS)."),
        click.option("--key", type=click.Path(path_type=Path, exists=True), help="Client key (mTLS)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def connect(server: str, token: str, ca: Path | None, cert: Path | None, key: Path | None) -> Client:
    tls = ClientTLS(ca, cert, key) if ca else None
    return Client(server, token, tls)


def rpc_errors(fn: F) -> F:
    """Print a failed call's status and field details, exit 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as e:
            click.echo(f"avscan: {e.code().name}: {e.details()}", err=True)
            for field, description in field_violations(e):
                click.echo(f"  {field}: {description}", err=True)
            raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]


def read_rule_files(path: Path) -> list[tuple[str, bytes]]:
    if path.is_file():
        return [(path.name, path.read_bytes())]
    files = sorted(p for p in path.rglob("*") if p.suffix in (".yar", ".yara") and p.is_file())
    return [(p.relative_to(path).as_posix(), p.read_bytes()) for p in files]


def ruleset_line(r: signatures_pb2.Ruleset) -> str:
    mark = "*" if r.active else " "
    return f"{mark} v{r.version:<4} {r.digest[:19]}  {r.rule_count:>5} rules  {r.name}  (by {r.pushed_by})"


def diagnostic_line(d: signatures_pb2.Diagnostic) -> str:
    kind = signatures_pb2.DiagnosticSeverity.Name(d.severity).removeprefix("DIAGNOSTIC_SEVERITY_").lower()
    return f"{d.file}:{d.line}: {kind}: {d.message}"


def verdict_text(v: verdict_pb2.Verdict) -> str:
    kind = verdict_pb2.VerdictKind.Name(v.kind).removeprefix("VERDICT_KIND_")
    c = v.coverage
    zero = f" + {_mib(c.bytes_zero)} all-zero" if c.bytes_zero else ""
    text = (
        f"{kind}: {v.findings_count} findings; scanned {_mib(c.bytes_scanned)}{zero} of {_mib(c.bytes_total)}, "
        f"{c.units_scanned}/{c.units_total} units"
    )
    return text + (f"; {v.reason}" if v.reason else "")


def _mib(n: int) -> str:
    return f"{n} bytes" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def scan_exit(s: scans_pb2.Scan) -> int:
    """Like ``avscan scan``: 0 clean, 1 found (malicious or suspicious), 2 anything else (error,
    incomplete, cancelled, or not finished yet)."""
    kind = verdict_pb2.VerdictKind.Name(s.verdict.kind) if s.HasField("verdict") else ""
    if s.state != scans_pb2.SCAN_STATE_DONE:
        return 2
    if kind in ("VERDICT_KIND_MALICIOUS", "VERDICT_KIND_SUSPICIOUS"):
        return 1
    return 0 if kind == "VERDICT_KIND_CLEAN" else 2


def scan_line(s: scans_pb2.Scan) -> str:
    state = scans_pb2.ScanState.Name(s.state).removeprefix("SCAN_STATE_")
    verdict = verdict_text(s.verdict) if s.HasField("verdict") else ""
    return f"{s.scan_id}  {state:<11} {verdict}"


@click.group("rules")
def rules() -> None:
    """Push, validate, activate, list and roll back signature sets on the service."""


@rules.command("push")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--name", required=True)
@click.option("--description", default="")
@click.option("--activate", is_flag=True, help="Activate it once stored.")
@click.option("--signature", type=click.Path(path_type=Path, exists=True, dir_okay=False), help="From 'rules sign'.")
@click.option("--allow-rollback", is_flag=True, help="Accept a bundle version older than the active one.")
@click.option("--force-slow-rules", is_flag=True, help="Store rules slower than the service's budget.")
@client_options
@rpc_errors
def rules_push(
    path: Path,
    name: str,
    description: str,
    activate: bool,
    signature: Path | None,
    allow_rollback: bool,
    force_slow_rules: bool,
    **conn: Any,
) -> None:
    """Push the YARA sources at PATH (a file or a directory)."""
    from scanner.cli.signing import read_signature

    signed = read_signature(signature) if signature else None
    with connect(**conn) as client:
        response = client.push_ruleset(
            read_rule_files(path), name, description, signed, allow_rollback, force_slow_rules
        )
        for d in response.diagnostics:
            click.echo(diagnostic_line(d), err=True)
        digest = response.ruleset.digest
        ruleset = client.activate(digest=digest, allow_rollback=allow_rollback) if activate else response.ruleset
        click.echo(ruleset_line(ruleset))


@rules.command("validate")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@client_options
@rpc_errors
def rules_validate(path: Path, **conn: Any) -> None:
    """Compile the sources at PATH on the service and print every error and warning."""
    with connect(**conn) as client:
        response = client.validate_ruleset(read_rule_files(path))
    for d in response.diagnostics:
        click.echo(diagnostic_line(d))
    click.echo("ok" if response.ok else "failed")
    raise SystemExit(0 if response.ok else 1)


@rules.command("activate")
@click.argument("which")
@click.option("--allow-rollback", is_flag=True, help="Accept a signed bundle older than the active one.")
@client_options
@rpc_errors
def rules_activate(which: str, allow_rollback: bool, **conn: Any) -> None:
    """Activate a stored version (a number) or digest (sha256:...)."""
    with connect(**conn) as client:
        if which.isdigit():
            ruleset = client.activate(version=int(which), allow_rollback=allow_rollback)
        else:
            ruleset = client.activate(digest=which, allow_rollback=allow_rollback)
    click.echo(ruleset_line(ruleset))


@rules.command("rollback")
@client_options
@rpc_errors
def rules_rollback(**conn: Any) -> None:
    """Re-activate the previously active version."""
    with connect(**conn) as client:
        click.echo(ruleset_line(client.rollback()))


@rules.command("list")
@client_options
@rpc_errors
def rules_list(**conn: Any) -> None:
    """List stored versions; * marks the active one."""
    with connect(**conn) as client:
        for r in client.list_rulesets():
            click.echo(ruleset_line(r))


@click.group("scans")
def scans() -> None:
    """Start, watch, get, list and cancel scans on the service."""


@scans.command("start")
@click.argument("paths", nargs=-1)
@click.option("--memory", help="A memory image on the appliance instead of PATHS.")
@click.option("--format", "fmt", default="auto", show_default=True)
@click.option("--disk", help="A disk image or block device on the appliance.")
@click.option("--guest-ram", help="A live guest's RAM file on the appliance.")
@click.option("--guest-qmp", help="A live guest's QMP socket on the appliance.")
@click.option("--pause", is_flag=True, help="Pause the live guest while scanning.")
@click.option("--watch/--no-watch", default=True, show_default=True)
@click.option("--request-id", default="")
@click.option("--host-name", default="", help="The VM the target belongs to (host.name in the scan's events).")
@client_options
@rpc_errors
def scans_start(
    paths: tuple[str, ...],
    memory: str | None,
    fmt: str,
    disk: str | None,
    guest_ram: str | None,
    guest_qmp: str | None,
    pause: bool,
    watch: bool,
    request_id: str,
    host_name: str,
    **conn: Any,
) -> None:
    """Start a scan of PATHS (files, directories), a memory image or a live guest on the appliance."""
    if memory:
        target = memory_target(memory, fmt)
    elif disk:
        target = disk_target(disk)
    elif guest_ram or guest_qmp:
        target = guest_target(guest_ram or "", guest_qmp or "", paused=pause)
    else:
        target = files_target(*[os.path.abspath(p) for p in paths])
    with connect(**conn) as client:
        scan = client.start_scan(target, request_id=request_id, subject=(host_name, ""))
        click.echo(f"scan {scan.scan_id} queued")
        if watch:
            raise SystemExit(_watch(client, scan.scan_id))


def _watch(client: Client, scan_id: str) -> int:
    """Print progress and findings until the scan ends; returns its exit code (see ``scan_exit``)."""
    for event in client.watch(scan_id):
        if event.HasField("finding"):
            f = event.finding
            click.echo(f"  FOUND {f.rule} in {f.unit} at {f.address:#x}")
        elif event.HasField("progress"):
            p = event.progress
            click.echo(f"  progress {p.bytes_done}/{p.bytes_total} bytes, {p.units_done}/{p.units_total} units")
        elif event.HasField("done"):
            click.echo(scan_line(event.done))
            return scan_exit(event.done)
    final = client.get_scan(scan_id)
    click.echo(scan_line(final))
    return scan_exit(final)


@scans.command("watch")
@click.argument("scan_id")
@client_options
@rpc_errors
def scans_watch(scan_id: str, **conn: Any) -> None:
    """Stream a scan's progress and findings until it ends; exits like ``avscan scan``."""
    with connect(**conn) as client:
        raise SystemExit(_watch(client, scan_id))


@scans.command("get")
@click.argument("scan_id")
@click.option("--findings", is_flag=True, help="Also list the findings.")
@client_options
@rpc_errors
def scans_get(scan_id: str, findings: bool, **conn: Any) -> None:
    """Show a scan's state and verdict. Exit code: 0 clean, 1 found, 2 error, incomplete,
    cancelled or not finished yet."""
    with connect(**conn) as client:
        scan = client.get_scan(scan_id)
        click.echo(scan_line(scan))
        if findings:
            for page in client.findings(scan_id):
                for f in page.findings:
                    click.echo(f"  {f.unit}: {f.rule} FOUND at {f.address:#x}")
    raise SystemExit(scan_exit(scan))


@scans.command("list")
@click.option("--limit", default=20, show_default=True)
@client_options
@rpc_errors
def scans_list(limit: int, **conn: Any) -> None:
    """List recent scans, newest first."""
    with connect(**conn) as client:
        for s in client.list_scans(page_size=limit).scans:
            click.echo(scan_line(s))


@scans.command("cancel")
@click.argument("scan_id")
@client_options
@rpc_errors
def scans_cancel(scan_id: str, **conn: Any) -> None:
    """Cancel a queued or running scan."""
    with connect(**conn) as client:
        click.echo(scan_line(client.cancel(scan_id)))
