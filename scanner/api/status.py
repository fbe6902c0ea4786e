"""The one place errors become gRPC statuses, with rich details (google.rpc)."""

from __future__ import annotations

import re

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from scanner.errors import InvalidArgument, RulesetError, ScannerError

DOMAIN = "avscan.scanner"


def to_status(error: ScannerError) -> grpc.Status:
    """A grpc.Status for ``error``: the code its class names, the message, and details.

    INVALID_ARGUMENT carries a ``BadRequest`` naming the field; a ruleset that does not compile
    carries one violation per diagnostic (``file:line``).
    """
    code = getattr(code_pb2, error.code, code_pb2.INTERNAL)
    details = [_packed(error_info(error))]
    if isinstance(error, RulesetError) and error.diagnostics:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=f"{d.file}:{d.line}", description=f"{d.severity}: {d.message}"
            )
            for d in error.diagnostics
        ]
        details.append(_packed(error_details_pb2.BadRequest(field_violations=violations)))
    elif isinstance(error, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    return rpc_status.to_status(status_pb2.Status(code=code, message=error.message, details=details))


def error_info(error: ScannerError) -> error_details_pb2.ErrorInfo:
    """``google.rpc.ErrorInfo``: a stable, machine-readable reason (UPPER_SNAKE, never reworded)
    in the ``avscan.scanner`` domain, and the field or class that caused it as metadata."""
    metadata = {"class": type(error).__name__}
    if isinstance(error, InvalidArgument):
        metadata["field"] = error.field
    return error_details_pb2.ErrorInfo(reason=reason(error), domain=DOMAIN, metadata=metadata)


def reason(error: ScannerError) -> str:
    """The stable reason of an error: its class name in UPPER_SNAKE (``RulesetError`` -> ``RULESET_ERROR``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).upper()


def internal_status() -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason="INTERNAL_ERROR", domain=DOMAIN)
    return rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.INTERNAL, message="internal error; see the service log", details=[_packed(info)]
        )
    )


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a received error ("" if none; client side)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) pairs from a received error's BadRequest details (client side)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    out: list[tuple[str, str]] = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out
