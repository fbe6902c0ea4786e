"""``avscan``: the scanner's command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from scanner.cli import local_scan, remote
from scanner.cli import vcenter as vcenter_cli
from scanner.config import Config, load_config
from scanner.errors import ConfigError
from scanner.targets import TargetSpec


def _config(ctx: click.Context) -> Config:
    obj: dict[str, Any] = ctx.obj
    overrides = {"state_dir": obj["state_dir"]} if obj["state_dir"] else {}
    try:
        return load_config(obj["config"], **overrides)
    except ConfigError as e:
        raise click.ClickException(f"config: {e.message}") from e


@click.group()
@click.option("--config", "config_path", type=click.Path(path_type=Path, exists=True), help="TOML config file.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="State directory (default ./var or $AVSCAN_STATE_DIR).",
)
@click.option("-v", "--verbose", count=True)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, state_dir: Path | None, verbose: int) -> None:
    """Agentless anti-malware scanner: guest memory and disks from outside, with YARA."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = {"config": config_path, "state_dir": state_dir}


@cli.command()
@click.option("--listen", help="host:port (default 127.0.0.1:50051; non-loopback needs TLS).")
@click.pass_context
def serve(ctx: click.Context, listen: str | None) -> None:
    """Run the gRPC service until SIGINT/SIGTERM."""
    from scanner.api.server import run

    config = _config(ctx)
    if listen:
        try:
            config = load_config(ctx.obj["config"], state_dir=config.state_dir, listen=listen)
        except ConfigError as e:
            raise click.ClickException(f"config: {e.message}") from e
    run(config)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--memory", multiple=True, type=click.Path(), help="A memory image to scan (repeatable).")
@click.option(
    "--format",
    "fmt",
    default="auto",
    show_default=True,
    help="Memory image format: auto (from the headers), raw, elfcore, kdump, lime, vmware, wincrash.",
)
@click.option(
    "--os",
    "os_mode",
    type=click.Choice(["auto", "processes", "physical"]),
    default="auto",
    show_default=True,
    help="Memory: auto = all RAM, findings named by process; processes = one unit per process region.",
)
@click.option("--kernel", type=click.Path(exists=True), help="Guest kernel image, if memory alone gives no profile.")
@click.option("--disk", multiple=True, type=click.Path(), help="A disk image or block device (repeatable).")
@click.option("--disk-format", default="auto", show_default=True, help="raw, qcow2, vmdk, vhdx or auto.")
@click.option("--guest-ram", multiple=True, help="A live guest's RAM file (QEMU memory-backend-file).")
@click.option("--guest-qmp", multiple=True, help="A live guest's QMP socket (finds its RAM file).")
@click.option("--pause", is_flag=True, help="Pause live guests while scanning (needs --guest-qmp).")
@click.option("--max-pause", default=30.0, show_default=True, help="Upper bound of a pause, seconds.")
@click.option("--rules", type=click.Path(path_type=Path, exists=True), help="Scan with the YARA sources at PATH.")
@click.option("--json", "as_json", is_flag=True, help="One ECS JSON object per finding on stdout.")
@click.option("-i", "--infected", is_flag=True, help="Print only findings (no gap lines).")
@click.pass_context
def scan(
    ctx: click.Context,
    paths: tuple[str, ...],
    memory: tuple[str, ...],
    fmt: str,
    os_mode: str,
    kernel: str | None,
    disk: tuple[str, ...],
    disk_format: str,
    guest_ram: tuple[str, ...],
    guest_qmp: tuple[str, ...],
    pause: bool,
    max_pause: float,
    rules: Path | None,
    as_json: bool,
    infected: bool,
) -> None:
    """Scan files, directories, memory dumps, disk images and live guests here, without a server.

    Exit code: 0 clean, 1 found, 2 error or incomplete.
    """
    config = _config(ctx)
    specs = [TargetSpec("files", {"paths": list(paths)})] if paths else []
    awareness = {"os": os_mode, **({"kernel": kernel} if kernel else {})}
    specs += [TargetSpec("memory", {"path": m, "format": fmt, **awareness}) for m in memory]
    specs += [TargetSpec("disk", {"path": d, "format": disk_format}) for d in disk]
    consistency = "paused" if pause else "running"
    live = [{"ram": r} for r in guest_ram] + [{"qmp": q} for q in guest_qmp]
    specs += [TargetSpec("guest", {**g, "consistency": consistency, "max_pause_seconds": max_pause}) for g in live]
    sys.exit(local_scan.run_scan(config, specs, rules, as_json, infected))


@cli.command()
@click.option(
    "--workdir", type=click.Path(path_type=Path), help="Where the demo keeps its files (default: a temp dir)."
)
def demo(workdir: Path | None) -> None:
    """Start the service on an embedded default and show a detection end to end."""
    from scanner.cli.demo import run_demo

    sys.exit(run_demo(workdir))


cli.add_command(remote.rules)
cli.add_command(remote.scans)
cli.add_command(vcenter_cli.vcenter)


@cli.command("fleet")
@click.pass_context
def fleet_view(ctx: click.Context) -> None:
    """The appliances sharing this config's PostgreSQL state ([state] url), alive or down."""
    from scanner.cli.fleet import fleet_lines

    for line in fleet_lines(_config(ctx)):
        click.echo(line)


def main() -> None:
    cli(prog_name="avscan")


if __name__ == "__main__":
    main()
