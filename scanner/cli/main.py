"""``avscan``: the scanner's command line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from scanner.cli import local_scan, remote, signing
from scanner.cli import vcenter as vcenter_cli
from scanner.config import Config, default_config_path, load_config
from scanner.errors import ConfigError, ScannerError
from scanner.targets import TargetSpec


def _config(ctx: click.Context) -> Config:
    obj: dict[str, Any] = ctx.obj
    overrides = {"state_dir": obj["state_dir"]} if obj["state_dir"] else {}
    try:
        if obj["config"] is None:
            obj["config"] = default_config_path()
        return load_config(obj["config"], **overrides)
    except ConfigError as e:
        raise click.ClickException(f"config: {e.message}") from e


EXIT_ERROR = 2
"""Every error exits 2, as ``avscan scan`` does for error or incomplete: 1 always means "found"."""


class AvscanGroup(click.Group):
    """The root command: any error (usage, configuration, I/O, interrupt) is one line and exit 2,
    also where click would exit 1, so a script never reads an error as "found"."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            code = e.exit_code
        except click.ClickException as e:
            e.show()
            code = EXIT_ERROR
        except (click.Abort, KeyboardInterrupt):
            click.echo("avscan: interrupted", err=True)
            code = EXIT_ERROR
        except OSError as e:
            click.echo(f"avscan: {e.filename or ''}: {e.strerror}" if e.strerror else f"avscan: {e}", err=True)
            code = EXIT_ERROR
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=AvscanGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="avscan", prog_name="avscan", message="%(prog)s %(version)s")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="TOML config file (default $AVSCAN_CONFIG, else /etc/avscan/avscan.toml if present).",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="State directory (default $AVSCAN_STATE_DIR, /var/lib/avscan as root, else ~/.local/state/avscan).",
)
@click.option("-v", "--verbose", count=True)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, state_dir: Path | None, verbose: int) -> None:
    """Agentless anti-malware scanner: guest memory and disks from outside, with YARA."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = {"config": config_path, "state_dir": state_dir, "verbose": verbose}


@cli.command()
@click.option("--listen", help="host:port (default 127.0.0.1:50051; non-loopback needs TLS).")
@click.option("--metrics-listen", help="host:port serving Prometheus metrics at /metrics (default: off).")
@click.pass_context
def serve(ctx: click.Context, listen: str | None, metrics_listen: str | None) -> None:
    """Run the gRPC service until SIGINT/SIGTERM."""
    from scanner.api.server import run

    config = _config(ctx)
    from scanner.outputs.logs import configure

    configure(config.log_format, logging.DEBUG if ctx.obj.get("verbose", 0) > 1 else config.log_level)
    overrides = {k: v for k, v in (("listen", listen), ("metrics_listen", metrics_listen)) if v}
    if overrides:
        try:
            config = load_config(ctx.obj["config"], state_dir=config.state_dir, **overrides)
        except ConfigError as e:
            raise click.ClickException(f"config: {e.message}") from e
    try:
        run(config)
    except ScannerError as e:
        raise click.ClickException(e.message) from e
    except RuntimeError as e:  # grpc: the address cannot be bound
        raise click.ClickException(str(e).split(";", 1)[0]) from e


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
@click.option("--disk-format", default="auto", show_default=True, help="raw, qcow2, vmdk, vhdx, vhd, vdi or auto.")
@click.option("--guest-ram", multiple=True, help="A live guest's RAM file (QEMU memory-backend-file).")
@click.option("--guest-qmp", multiple=True, help="A live guest's QMP socket (finds its RAM file).")
@click.option("--guest-libvirt", multiple=True, help="A running libvirt domain on this host, by name or UUID.")
@click.option("--libvirt-disk", multiple=True, help="DOMAIN:DEV, a running libvirt domain's disk (e.g. vm1:vda).")
@click.option("--libvirt-uri", default="qemu:///system", show_default=True, help="libvirt connection URI.")
@click.option("--pause", is_flag=True, help="Pause live guests while scanning (needs --guest-qmp or --guest-libvirt).")
@click.option("--max-pause", default=30.0, show_default=True, help="Upper bound of a pause, seconds.")
@click.option("--rules", type=click.Path(path_type=Path, exists=True), help="Scan with the YARA sources at PATH.")
@click.option("--json", "as_json", is_flag=True, help="One ECS JSON object per finding on stdout.")
@click.option("-i", "--infected", is_flag=True, help="Print only findings (no gap lines).")
@click.option("-r", "--recursive", is_flag=True, help="Scan directories recursively (always on; clamscan habit).")
@click.option("--no-summary", is_flag=True, help="Do not print the summary at the end.")
@click.option("--exclude", multiple=True, metavar="REGEX", help="Do not scan files whose path matches REGEX.")
@click.option("--exclude-dir", multiple=True, metavar="REGEX", help="Do not enter directories matching REGEX.")
@click.option("--max-filesize", metavar="SIZE", help="Skip larger files (e.g. 25M; a gap: INCOMPLETE, never CLEAN).")
@click.option("--log", "log_file", type=click.Path(dir_okay=False), help="Also append the report to FILE.")
@click.option("-s", "--print-strings", is_flag=True, help="Print the matched strings of each finding (yara -s).")
@click.option("--host-name", default="", help="The VM the images belong to: host.name in --json documents.")
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
    guest_libvirt: tuple[str, ...],
    libvirt_disk: tuple[str, ...],
    libvirt_uri: str,
    pause: bool,
    max_pause: float,
    rules: Path | None,
    as_json: bool,
    infected: bool,
    recursive: bool,
    no_summary: bool,
    exclude: tuple[str, ...],
    exclude_dir: tuple[str, ...],
    max_filesize: str | None,
    log_file: str | None,
    print_strings: bool,
    host_name: str,
) -> None:
    """Scan files, directories, memory dumps, disk images and live guests here, without a server.
    PATH "-" scans standard input.

    Exit code: 0 clean, 1 found, 2 error or incomplete.
    """
    del recursive  # directories are always walked (bounded by [files] max_depth)
    config = local_scan.with_file_options(_config(ctx), exclude, exclude_dir, max_filesize)
    files = [p for p in paths if p != "-"]
    specs = [TargetSpec("stdin", {"name": "stdin"})] if "-" in paths else []
    specs += [TargetSpec("files", {"paths": files})] if files else []
    awareness = {"os": os_mode, **({"kernel": kernel} if kernel else {})}
    specs += [TargetSpec("memory", {"path": m, "format": fmt, **awareness}) for m in memory]
    specs += [TargetSpec("disk", {"path": d, "format": disk_format}) for d in disk]
    for item in libvirt_disk:
        domain, _, device = item.rpartition(":")
        if not domain or not device:
            raise click.BadParameter(f"{item!r}: expected DOMAIN:DEV, e.g. vm1:vda", param_hint="--libvirt-disk")
        specs.append(TargetSpec("disk", {"libvirt": domain, "device": device, "libvirt_uri": libvirt_uri}))
    consistency = "paused" if pause else "running"
    live = [{"ram": r} for r in guest_ram] + [{"qmp": q} for q in guest_qmp]
    live += [{"libvirt": d, "libvirt_uri": libvirt_uri} for d in guest_libvirt]
    specs += [TargetSpec("guest", {**g, "consistency": consistency, "max_pause_seconds": max_pause}) for g in live]
    report = local_scan.Report(as_json, infected, not no_summary, print_strings, host_name)
    with local_scan.tee(log_file):
        code = local_scan.run_scan(config, specs, rules, report)
    sys.exit(code)


@cli.command()
@click.option(
    "--workdir", type=click.Path(path_type=Path), help="Where the demo keeps its files (default: a temp dir)."
)
def demo(workdir: Path | None) -> None:
    """Start the service on an embedded default and show a detection end to end."""
    from scanner.cli.demo import run_demo

    sys.exit(run_demo(workdir))


cli.add_command(remote.rules)
remote.rules.add_command(signing.rules_keygen)
remote.rules.add_command(signing.rules_sign)
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
