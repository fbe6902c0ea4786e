"""The gRPC server: services, health, reflection, TLS, graceful shutdown on uvloop.

Shutdown order: health goes NOT_SERVING, the scan manager stops taking jobs and gives running
scans the grace period (the rest are recorded INTERRUPTED and re-run at next start), then the
server stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from scanner.api.auth import Authenticator
from scanner.api.interceptor import GuardInterceptor
from scanner.api.scans import ScanService
from scanner.api.signatures import SignatureService
from scanner.api.vcenter import VCenterService
from scanner.app import App
from scanner.config import Config
from scanner.v1 import scans_pb2, scans_pb2_grpc, signatures_pb2, signatures_pb2_grpc, vcenter_pb2, vcenter_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    scans_pb2.DESCRIPTOR.services_by_name["ScanService"].full_name,
    signatures_pb2.DESCRIPTOR.services_by_name["SignatureService"].full_name,
    vcenter_pb2.DESCRIPTOR.services_by_name["VCenterService"].full_name,
)
MAX_MESSAGE = 8 * 1024 * 1024
HEALTH_TICK = 0.5  # seconds between looks for stuck scans


@dataclass
class Running:
    """A started server: its port and the handles to stop it."""

    app: App
    server: aio.Server
    health: Any  # grpc_health's aio HealthServicer (untyped)
    port: int
    watchdog: asyncio.Task[None] | None = None

    async def stop(self, grace: float | None = None) -> None:
        grace = self.app.config.shutdown_grace if grace is None else grace
        if self.watchdog is not None:
            self.watchdog.cancel()
        await self.health.enter_graceful_shutdown()
        await self.app.stop_vcenter()
        await self.app.scans.shutdown(grace)
        await self.app.stop_outputs()
        await self.server.stop(1.0)
        await asyncio.to_thread(self.app.close)


async def start_server(config: Config) -> Running:
    """Prepare the app, resume unfinished scans, bind and start serving."""
    app = App(config)
    await asyncio.to_thread(app.prepare)
    server = aio.server(
        interceptors=[GuardInterceptor(Authenticator(config))],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ],
    )
    scans_pb2_grpc.add_ScanServiceServicer_to_server(ScanService(app), server)
    signatures_pb2_grpc.add_SignatureServiceServicer_to_server(SignatureService(app), server)
    vcenter_pb2_grpc.add_VCenterServiceServicer_to_server(VCenterService(app), server)
    health_servicer: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        names = (
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        _serve_reflection_v1(names, server)
    port = _bind(server, config)
    await server.start()
    await app.start_outputs()
    await app.scans.start()
    await app.start_vcenter()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("listening on %s (port %d)", config.listen, port)
    running = Running(app, server, health_servicer, port)
    running.watchdog = asyncio.create_task(_health_watch(app, health_servicer), name="health-watch")
    return running


async def _health_watch(app: App, health_servicer: Any) -> None:
    """NOT_SERVING while any scan's thread is stuck (abandoned and still not returned): the
    appliance cannot vouch for its capacity, so an orchestrator should restart it."""
    serving = True
    while True:
        await asyncio.sleep(HEALTH_TICK)
        stuck = app.scans.stuck()
        if bool(stuck) == serving:
            serving = not stuck
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            if stuck:
                log.error("NOT_SERVING: %d scan(s) stuck in a read: %s", len(stuck), ", ".join(stuck))
            for name in ("", *SERVICE_NAMES):
                await health_servicer.set(name, status)


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _serve_reflection_v1(names: tuple[str, ...], server: aio.Server) -> None:
    """Reflection v1 (``buf curl --reflect-protocol grpc-v1``, newer grpcurl) next to v1alpha.

    grpcio-reflection only ships v1alpha; v1 has the same messages under a new package, so the
    v1alpha servicer answers it byte for byte."""
    from grpc_reflection.v1alpha import reflection_pb2
    from grpc_reflection.v1alpha._async import ReflectionServicer

    servicer = ReflectionServicer(names)  # v1 itself is not listed: its descriptor is not in the pool
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler}),)
    )


def _bind(server: aio.Server, config: Config) -> int:
    if config.tls is None:
        return server.add_insecure_port(config.listen)
    tls = config.tls
    credentials = grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
        require_client_auth=tls.client_ca is not None,
    )
    return server.add_secure_port(config.listen, credentials)


async def serve_forever(config: Config, ready: asyncio.Event | None = None) -> bool:
    """Run until SIGINT or SIGTERM, then shut down gracefully; True if scan threads are stuck."""
    running = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"avscan: serving on {config.listen.rsplit(':', 1)[0]}:{running.port}", flush=True)
    if ready:
        ready.set()
    await stop.wait()
    log.info("shutting down")
    await running.stop()
    return bool(running.app.scans.stuck())


def run(config: Config) -> None:
    """Serve on uvloop until stopped. Threads stuck in a read are not waited for: the process
    exits at once (everything is recorded by then), so SIGTERM always ends it in its grace."""
    import uvloop

    if uvloop.run(serve_forever(config)):
        log.error("exiting with scan threads still stuck in reads")
        logging.shutdown()
        os._exit(0)
