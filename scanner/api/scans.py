"""scanner.v1.ScanService: start, watch, get, list, cancel scans; scan a buffer directly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from grpc import aio

from scanner.api import pages
from scanner.api.auth import current_identity
from scanner.api.convert import (
    SCAN_STATE_NAMES,
    SCAN_STATES,
    finding_message,
    progress_message,
    scan_message,
    target_spec,
    verdict_message,
)
from scanner.app import App
from scanner.engine import Progress
from scanner.errors import InvalidArgument, ResourceExhausted
from scanner.jobs.manager import options_from
from scanner.state.db import ScanRecord
from scanner.targets.buffer import BufferTarget
from scanner.v1 import scans_pb2 as pb
from scanner.v1 import scans_pb2_grpc
from scanner.verdicts import Finding

log = logging.getLogger(__name__)

MAX_PAGE_SCANS = 500
MAX_PAGE_FINDINGS = 1000


class ScanService(scans_pb2_grpc.ScanServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def StartScan(self, request: pb.StartScanRequest, context: aio.ServicerContext) -> pb.StartScanResponse:
        if not request.HasField("target"):
            raise InvalidArgument("target", "required")
        spec = target_spec(request.target)
        o = request.options
        options = options_from(o.unit_timeout_seconds, o.ruleset_digest, o.subject.name, o.subject.id)
        if len(request.request_id) > 200:
            raise InvalidArgument("request_id", "at most 200 characters")
        record = await self.app.scans.submit(spec, options, current_identity.get().name, request.request_id)
        return pb.StartScanResponse(scan=scan_message(record))

    async def WatchScan(
        self, request: pb.WatchScanRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.WatchScanResponse]:
        _require_id(request.scan_id)
        async for event in self.app.scans.watch(request.scan_id):
            if isinstance(event, Finding):
                yield pb.WatchScanResponse(finding=finding_message(event))
            elif isinstance(event, Progress):
                yield pb.WatchScanResponse(progress=progress_message(event))
        record, progress = await self.app.scans.get(request.scan_id)
        yield pb.WatchScanResponse(done=scan_message(record, progress))

    async def GetScan(self, request: pb.GetScanRequest, context: aio.ServicerContext) -> pb.GetScanResponse:
        _require_id(request.scan_id)
        record, progress = await self.app.scans.get(request.scan_id)
        return pb.GetScanResponse(scan=scan_message(record, progress))

    async def ListScans(self, request: pb.ListScansRequest, context: aio.ServicerContext) -> pb.ListScansResponse:
        size = pages.page_size(request.page_size, 50, MAX_PAGE_SCANS)
        if request.state and request.state not in SCAN_STATE_NAMES:
            raise InvalidArgument("state", f"unknown scan state {request.state}")
        state = SCAN_STATE_NAMES.get(request.state) if request.state else None
        before = pages.decode(request.page_token, "scans", state or "")
        records = await asyncio.to_thread(self.app.db.list_scans, size + 1, before, state)
        more = len(records) > size
        records = records[:size]
        token = pages.encode("scans", records[-1].seq, state or "") if more and records else ""
        return pb.ListScansResponse(scans=[_listed(r) for r in records], next_page_token=token)

    async def ListFindings(
        self, request: pb.ListFindingsRequest, context: aio.ServicerContext
    ) -> pb.ListFindingsResponse:
        _require_id(request.scan_id)
        await asyncio.to_thread(self.app.db.get_scan, request.scan_id)
        size = pages.page_size(request.page_size, 100, MAX_PAGE_FINDINGS)
        offset = pages.decode(request.page_token, "findings", request.scan_id) or 0
        found = await asyncio.to_thread(self.app.db.findings, request.scan_id, offset, size + 1)
        token = pages.encode("findings", offset + size, request.scan_id) if len(found) > size else ""
        return pb.ListFindingsResponse(findings=[finding_message(f) for f in found[:size]], next_page_token=token)

    async def CancelScan(self, request: pb.CancelScanRequest, context: aio.ServicerContext) -> pb.CancelScanResponse:
        _require_id(request.scan_id)
        record = await self.app.scans.cancel(request.scan_id, current_identity.get().name)
        return pb.CancelScanResponse(scan=scan_message(record))

    async def ScanBytes(
        self, request_iterator: AsyncIterator[pb.ScanBytesRequest], context: aio.ServicerContext
    ) -> pb.ScanBytesResponse:
        limit = self.app.config.max_upload_bytes
        name, digest, total = "buffer", "", 0
        parts: list[bytes] = []
        async for message in request_iterator:
            if message.HasField("header"):
                if parts:
                    raise InvalidArgument("header", "the header must come before the chunks")
                name = message.header.name or name
                digest = message.header.ruleset_digest
            else:
                total += len(message.chunk)
                if total > limit:
                    raise ResourceExhausted(f"buffer larger than the {limit} byte limit; use StartScan")
                parts.append(message.chunk)
        ruleset = await asyncio.to_thread(self.app.ruleset, digest)
        target = BufferTarget(name, b"".join(parts))
        verdict = await asyncio.to_thread(self.app.engine.scan, ruleset, target)
        return pb.ScanBytesResponse(verdict=verdict_message(verdict, with_findings=True))


def _listed(record: ScanRecord) -> pb.Scan:
    """One listing entry; a record that cannot be shown whole is shown by id and state, never
    breaking the rest of the page."""
    try:
        return scan_message(record)
    except Exception:
        log.exception("scan %s: cannot be listed whole", record.id)
        return pb.Scan(scan_id=record.id, state=SCAN_STATES.get(record.state, pb.SCAN_STATE_UNSPECIFIED))


def _require_id(scan_id: str) -> None:
    if not scan_id:
        raise InvalidArgument("scan_id", "required")

