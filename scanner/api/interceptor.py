"""Authentication, authorization and error mapping around every RPC handler.

The aio interceptor API does not show the peer's certificate, so the interceptor wraps each
handler: the wrapper sees the ``ServicerContext``, identifies the caller, checks the method's
roles, runs the handler with the identity in a context variable, and turns any exception into a
status: a :class:`ScannerError` by its code, anything else as INTERNAL (logged; the server keeps
running).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from scanner.api.auth import PUBLIC_PREFIXES, Authenticator, authorize, current_identity
from scanner.api.status import internal_status, to_status
from scanner.errors import ScannerError

log = logging.getLogger(__name__)


class GuardInterceptor(aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        return _wrap(handler, method, self.authenticator)


def _wrap(handler: grpc.RpcMethodHandler, method: str, auth: Authenticator) -> grpc.RpcMethodHandler:
    async def guard(context: aio.ServicerContext) -> None:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        identity = auth.identify(context.auth_context(), metadata)
        authorize(method, identity)
        current_identity.set(identity)

    async def fail(context: aio.ServicerContext, error: BaseException) -> None:
        if isinstance(error, ScannerError):
            status = to_status(error)
        else:
            log.exception("unexpected error in %s", method, exc_info=error)
            status = internal_status()
        await context.abort(status.code, status.details, status.trailing_metadata)

    if handler.unary_unary or handler.stream_unary:
        inner: Any = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            try:
                await guard(context)
                return await inner(request, context)
            except aio.AbortError:
                raise
            except Exception as e:
                await fail(context, e)

        factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return factory(unary, handler.request_deserializer, handler.response_serializer)

    inner_stream: Any = handler.unary_stream or handler.stream_stream

    async def streaming(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            await guard(context)
            async for item in inner_stream(request, context):
                yield item
        except aio.AbortError:
            raise
        except Exception as e:
            await fail(context, e)

    factory = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return factory(streaming, handler.request_deserializer, handler.response_serializer)
