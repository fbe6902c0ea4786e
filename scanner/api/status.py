"""The one place errors become gRPC statuses, with rich details (google.rpc)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from scanner.errors import InvalidArgument, RulesetError, ScannerError


def to_status(error: ScannerError) -> grpc.Status:
    """A grpc.Status for ``error``: the code its class names, the message, and details.

    INVALID_ARGUMENT carries a ``BadRequest`` naming the field; a ruleset that does not compile
    carries one violation per diagnostic (``file:line``).
    """
    code = getattr(code_pb2, error.code, code_pb2.INTERNAL)
    details = []
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


def internal_status() -> grpc.Status:
    return rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see the service log")
    )


def _packed(message: error_details_pb2.BadRequest) -> any_pb2.Any:
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
