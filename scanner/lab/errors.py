"""Errors of the guest lab, inside the scanner's one exception hierarchy."""

from __future__ import annotations

from scanner.errors import ScannerError


class LabError(ScannerError):
    """The lab could not build, boot or drive a guest; the message says which step and why."""

    code = "INTERNAL"
