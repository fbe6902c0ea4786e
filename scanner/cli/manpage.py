"""The man page, generated from the CLI itself: ``python -m scanner.cli.manpage [OUT]``.

Writes ``avscan.1`` (roff, man(7) macros): synopsis, every command and subcommand with its help
text and every option, the exit codes and the files. Nothing is written by hand, so the page
cannot drift from ``--help``.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path

import click

EXIT_STATUS = (
    ("0", "Clean: everything asked for was scanned and nothing matched."),
    ("1", "Found: at least one finding (MALICIOUS or SUSPICIOUS), even if coverage is partial."),
    ("2", "Error or incomplete: a usage or configuration error, an unreachable service, or a scan "
          "that could not cover everything (never reported as clean)."),
)
FILES = (
    ("/etc/avscan/avscan.toml", "Configuration used without --config (or $AVSCAN_CONFIG)."),
    ("/var/lib/avscan", "State as root: SQLite state, signature store, event queue."),
    ("~/.local/state/avscan", "State for other users ($XDG_STATE_HOME/avscan)."),
)


def render(cli: click.Group, name: str = "avscan") -> str:
    ctx = click.Context(cli, info_name=name)
    version = _version()
    lines = [
        f'.TH {name.upper()} 1 "{dt.date.today().isoformat()}" "{name} {version}" "User Commands"',
        ".SH NAME",
        f"{name} \\- {_roff(_first_line(cli.help or ''))}",
        ".SH SYNOPSIS",
        f".B {name}",
        _roff(" ".join(cli.collect_usage_pieces(ctx))),
        ".SH DESCRIPTION",
        _roff(cli.help or ""),
        ".SH OPTIONS",
        *_options(cli, ctx),
        ".SH COMMANDS",
    ]
    for path, command, sub in _commands(cli, ctx, [name]):
        lines += [f'.SS "{" ".join(path)}"', _roff(" ".join(command.collect_usage_pieces(sub)))]
        lines += [".PP", _roff(command.help or ""), *_options(command, sub)]
    lines.append(".SH EXIT STATUS")
    for code, meaning in EXIT_STATUS:
        lines += [".TP", f".B {code}", _roff(meaning)]
    lines.append(".SH FILES")
    for file, purpose in FILES:
        lines += [".TP", f".I {file}", _roff(purpose)]
    lines += [".SH ENVIRONMENT", ".TP", ".B AVSCAN_CONFIG, AVSCAN_STATE_DIR, AVSCAN_SERVER, AVSCAN_TOKEN",
              "Defaults of --config, --state-dir, --server and --token."]
    lines += [".SH SHELL COMPLETION", _roff('eval "$(_AVSCAN_COMPLETE=bash_source avscan)"  (zsh_source, fish_source)')]
    return "\n".join(lines) + "\n"


def _commands(
    group: click.Group, ctx: click.Context, path: list[str]
) -> Iterator[tuple[list[str], click.Command, click.Context]]:
    for cmd_name in group.list_commands(ctx):
        command = group.get_command(ctx, cmd_name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=cmd_name, parent=ctx)
        yield [*path, cmd_name], command, sub
        if isinstance(command, click.Group):
            yield from _commands(command, sub, [*path, cmd_name])


def _options(command: click.Command, ctx: click.Context) -> Iterator[str]:
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        flags, text = record
        yield ".TP"
        yield f".B {_roff(flags)}"
        yield _roff(text or "")


def _roff(text: str) -> str:
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in out.splitlines())


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("avscan")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str]) -> int:
    from scanner.cli.main import cli

    out = Path(argv[0]) if argv else Path("avscan.1")
    if out.is_dir():
        out = out / "avscan.1"
    out.write_text(render(cli))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
