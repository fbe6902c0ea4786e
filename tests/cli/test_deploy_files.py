"""deploy/: the example config documents every key the code accepts (and nothing it does not),
loads as shipped, and the systemd unit passes systemd's own checks."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from scanner.config import accepted_keys, load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SETTING = re.compile(r"^# ?((\[\[?[a-z_.]+\]\]?)|([a-z_0-9]+ = .*))$")


def documented_keys(text: str) -> set[str]:
    """Keys of the example with every commented-out setting switched on (tables by their path)."""
    lines = [m.group(1) if (m := SETTING.match(line)) else line for line in text.splitlines()]
    keys: set[str] = set()

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, list) and node and all(isinstance(i, dict) for i in node):
            for item in node:
                walk(item, prefix)
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            keys.add(prefix.rstrip("."))

    walk(tomllib.loads("\n".join(lines)), "")
    return keys


def test_example_config_documents_exactly_the_accepted_keys():
    documented = documented_keys((DEPLOY / "avscan.toml").read_text())
    assert sorted(accepted_keys() - documented) == [], "keys the code accepts but deploy/avscan.toml omits"
    assert sorted(documented - accepted_keys()) == [], "keys deploy/avscan.toml documents that the code refuses"


def test_example_config_loads_as_shipped():
    config = load_config(DEPLOY / "avscan.toml")
    assert config.listen == "127.0.0.1:50051" and config.log_format == "text"


def test_systemd_unit_is_sandboxed():
    unit = DEPLOY / "avscan.service"
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=30", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    exposure = float(re.search(r"Overall exposure level for avscan.service: ([0-9.]+)", result.stdout).group(1))
    assert exposure <= 3.0
    text = unit.read_text()
    assert "CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_SYS_PTRACE\n" in text
