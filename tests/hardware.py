"""The one list of reasons a test may skip under ``CI=true``: hardware the machine lacks.

Everything else a test needs (packages, the public rule set, volatility3, the native core) is
installed or checked by ``.ci/setup``, so a skip for it under CI hides a broken setup: the root
``tests/conftest.py`` turns such a skip into a failure, and ``.ci/run`` counts the skips in the
JUnit report (``python -m tests.hardware REPORT.xml``) and fails on any reason not listed here.

A test skips for hardware only through :func:`require`, whose reason starts with ``hardware:``
and the listed device, so the check is a prefix match on a fixed string, not a guess.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# device -> why no package can provide it (a kernel module or the host's virtualisation)
HARDWARE: dict[str, str] = {
    "/dev/kvm": "hardware virtualisation, absent on hosts without VT-x/AMD-V or nested KVM",
    "/dev/fuse": "the FUSE kernel device, absent in containers started without it",
}


def reason_for(device: str) -> str:
    return f"hardware: no {device} ({HARDWARE[device]})"


def require(device: str) -> None:
    """Skip the current test when ``device`` (a key of :data:`HARDWARE`) does not exist."""
    if device not in HARDWARE:
        raise KeyError(f"{device} is not listed in tests/hardware.py HARDWARE")
    if not os.path.exists(device):
        pytest.skip(reason_for(device))


def listed(reason: str) -> bool:
    """``reason`` (a skip message, with or without pytest's ``Skipped: `` prefix) names listed
    hardware."""
    reason = reason.removeprefix("Skipped: ")
    return any(reason.startswith(reason_for(device)) for device in HARDWARE)


def ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skips_in(report: Path) -> list[tuple[str, str]]:
    """(test id, reason) of every skipped test case in a JUnit XML report."""
    out = []
    for case in ET.parse(report).iter("testcase"):
        for skipped in case.iter("skipped"):
            test = f"{case.get('classname', '')}::{case.get('name', '')}"
            out.append((test, skipped.get("message", "")))
    return out


def main(argv: list[str]) -> int:
    """Print the skip count of a JUnit report and each skip; 1 if any names unlisted hardware."""
    if len(argv) != 1:
        print("usage: python -m tests.hardware REPORT.xml", file=sys.stderr)
        return 2
    skips = skips_in(Path(argv[0]))
    unlisted = [(test, reason) for test, reason in skips if not listed(reason)]
    print(f"skips: {len(skips)} ({len(skips) - len(unlisted)} for listed hardware, {len(unlisted)} unlisted)")
    for test, reason in skips:
        print(f"  {'UNLISTED ' if (test, reason) in unlisted else ''}{test}: {reason}")
    return 1 if unlisted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
