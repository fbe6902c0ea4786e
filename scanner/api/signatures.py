"""scanner.v1.SignatureService: push, validate, activate, roll back, list."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc import aio

from scanner.api import pages
from scanner.api.auth import current_identity
from scanner.api.convert import diagnostic_message, ruleset_message
from scanner.app import App
from scanner.errors import InvalidArgument, ResourceExhausted
from scanner.rulesets.model import RulesetFile
from scanner.v1 import signatures_pb2 as pb
from scanner.v1 import signatures_pb2_grpc


class SignatureService(signatures_pb2_grpc.SignatureServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def PushRuleset(
        self, request_iterator: AsyncIterator[pb.PushRulesetRequest], context: aio.ServicerContext
    ) -> pb.PushRulesetResponse:
        header: pb.RulesetHeader | None = None
        chunks: list[pb.RuleFileChunk] = []
        async for message in request_iterator:
            if message.HasField("header"):
                if header is not None or chunks:
                    raise InvalidArgument("header", "send the header once, as the first message")
                header = message.header
            elif message.HasField("chunk"):
                chunks.append(message.chunk)
        if header is None or not header.name:
            raise InvalidArgument("header.name", "the first message must be a header with a name")
        files = _assemble(chunks, self.app.config.max_upload_bytes)
        actor = current_identity.get().name
        info = await asyncio.to_thread(self.app.store.push, files, header.name, header.description, actor)
        return pb.PushRulesetResponse(
            ruleset=ruleset_message(info), diagnostics=[diagnostic_message(d) for d in info.warnings]
        )

    async def ValidateRuleset(
        self, request_iterator: AsyncIterator[pb.ValidateRulesetRequest], context: aio.ServicerContext
    ) -> pb.ValidateRulesetResponse:
        chunks = [m.chunk async for m in request_iterator]
        files = _assemble(chunks, self.app.config.max_upload_bytes)
        diagnostics = await asyncio.to_thread(self.app.store.validate, files)
        from scanner.rulesets.model import ruleset_digest

        return pb.ValidateRulesetResponse(
            ok=not any(d.severity == "error" for d in diagnostics),
            diagnostics=[diagnostic_message(d) for d in diagnostics],
            digest=ruleset_digest(files),
        )

    async def ActivateRuleset(
        self, request: pb.ActivateRulesetRequest, context: aio.ServicerContext
    ) -> pb.ActivateRulesetResponse:
        if not request.digest and not request.version:
            raise InvalidArgument("digest", "give a digest or a version")
        which: str | int = request.digest or request.version
        info = await asyncio.to_thread(self.app.store.activate, which, current_identity.get().name)
        return pb.ActivateRulesetResponse(ruleset=ruleset_message(info))

    async def RollbackRuleset(
        self, request: pb.RollbackRulesetRequest, context: aio.ServicerContext
    ) -> pb.RollbackRulesetResponse:
        info = await asyncio.to_thread(self.app.store.rollback, current_identity.get().name)
        return pb.RollbackRulesetResponse(ruleset=ruleset_message(info))

    async def ListRulesets(
        self, request: pb.ListRulesetsRequest, context: aio.ServicerContext
    ) -> pb.ListRulesetsResponse:
        size = pages.page_size(request.page_size, 100, 1000)
        below = pages.decode(request.page_token, "rulesets")
        infos = await asyncio.to_thread(self.app.store.list)  # oldest first; the API lists newest first
        newest = [i for i in reversed(infos) if below is None or i.version < below]
        page = newest[:size]
        token = pages.encode("rulesets", page[-1].version) if len(newest) > size else ""
        return pb.ListRulesetsResponse(rulesets=[ruleset_message(i) for i in page], next_page_token=token)


def _assemble(chunks: list[pb.RuleFileChunk], limit: int) -> list[RulesetFile]:
    """Concatenate consecutive chunks per path; bounded by ``limit`` bytes in total."""
    parts: dict[str, list[bytes]] = {}
    total = 0
    last = ""
    for chunk in chunks:
        if not chunk.path:
            raise InvalidArgument("chunk.path", "every chunk needs the file's path")
        if chunk.path in parts and chunk.path != last:
            raise InvalidArgument("chunk.path", f"{chunk.path}: chunks of one file must be consecutive")
        total += len(chunk.data)
        if total > limit:
            raise ResourceExhausted(f"ruleset larger than the {limit} byte limit")
        parts.setdefault(chunk.path, []).append(chunk.data)
        last = chunk.path
    if not parts:
        raise InvalidArgument("chunk", "no rule files sent")
    return [RulesetFile(path, b"".join(data)) for path, data in parts.items()]
