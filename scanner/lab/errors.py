"""Errors of the guest lab, inside the scanner's one exception hierarchy."""

from __future__ import annotations

from scanner.errors import ScannerError


class LabError(ScannerError):
    """The lab could not build, boot or drive a guest; the message says which step and why."""

    code = "INTERNAL"


class QmpError(LabError):
    """QEMU answered a QMP command with an error, or the QMP socket failed."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"qmp {command}: {message}")
        self.command = command
