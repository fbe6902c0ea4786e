"""The one exception hierarchy of the scanner.

Every error the product raises on purpose is a :class:`ScannerError`. Each subclass names the
gRPC status it maps to (``code``, a plain string so the core does not import grpc); the API edge
maps them in one place (``scanner.api.status``). Errors carry what caused them: the field, the
path, the address or the rule.
"""

from __future__ import annotations

from dataclasses import dataclass


class ScannerError(Exception):
    """Base of all deliberate errors. ``code`` is the gRPC status name it maps to."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ScannerError):
    """A request or input was wrong; ``field`` names the part that was wrong."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class NotFound(ScannerError):
    code = "NOT_FOUND"


class AlreadyExists(ScannerError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(ScannerError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(ScannerError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ScannerError):
    """A backend or dependency cannot run here (e.g. ``unavailable: install X``)."""

    code = "UNAVAILABLE"


class DeliveryError(Unavailable):
    """An event sink (SIEM, syslog, webhook) did not take a batch; it stays queued and is retried."""


class Unauthenticated(ScannerError):
    code = "UNAUTHENTICATED"


class PermissionDenied(ScannerError):
    code = "PERMISSION_DENIED"


class Cancelled(ScannerError):
    code = "CANCELLED"


class ConfigError(ScannerError):
    """The configuration file or environment is wrong; names the key."""

    code = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class Diagnostic:
    """One compiler message about a rule source: where it is and what it says."""

    severity: str  # "error" or "warning"
    file: str
    line: int
    message: str
    slow_pattern: bool = False

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"


class RulesetError(InvalidArgument):
    """A ruleset did not compile; ``diagnostics`` lists every error and warning with file and line."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None) -> None:
        super().__init__("ruleset", message)
        self.diagnostics = list(diagnostics or [])


class SourceError(ScannerError):
    """Acquisition failed for a whole target (corrupt dump header, missing file...)."""

    code = "INVALID_ARGUMENT"

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


class UnreadableError(ScannerError):
    """A range of a unit could not be read. The engine records it in coverage, never as CLEAN."""

    code = "DATA_LOSS"

    def __init__(self, where: str, offset: int, length: int, reason: str) -> None:
        super().__init__(f"{where}: {length} bytes at {offset:#x} unreadable: {reason}")
        self.where = where
        self.offset = offset
        self.length = length
        self.reason = reason
