"""scanner.v1.SignatureService: push, validate, activate, roll back, list."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc import aio

from scanner.api import pages
from scanner.api.auth import current_identity
from scanner.api.convert import diagnostic_message, rollout_message, ruleset_message
from scanner.app import App
from scanner.errors import InvalidArgument, ResourceExhausted
from scanner.fleet.rollout import rollout
from scanner.rulesets.model import RulesetFile
from scanner.rulesets.signing import MAX_KEY_ID, BundleSignature
from scanner.rulesets.store import PushOptions
from scanner.state.postgres import PostgresDatabase
from scanner.v1 import signatures_pb2 as pb
from scanner.v1 import signatures_pb2_grpc


class SignatureService(signatures_pb2_grpc.SignatureServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def PushRuleset(
        self, request_iterator: AsyncIterator[pb.PushRulesetRequest], context: aio.ServicerContext
    ) -> pb.PushRulesetResponse:
        header: pb.RulesetHeader | None = None
        upload = _Upload(self.app.config.max_upload_bytes)
        async for message in request_iterator:
            if message.HasField("header"):
                if header is not None or upload.parts:
                    raise InvalidArgument("header", "send the header once, as the first message")
                header = message.header
            elif message.HasField("chunk"):
                upload.add(message.chunk)
        if header is None or not header.name:
            raise InvalidArgument("header.name", "the first message must be a header with a name")
        files = upload.files()
        actor = current_identity.get().name
        options = PushOptions(
            signature=signature_from(header.signature) if header.HasField("signature") else None,
            allow_rollback=header.allow_rollback,
            force_slow_rules=header.force_slow_rules,
        )
        info = await asyncio.to_thread(self.app.store.push, files, header.name, header.description, actor, options)
        return pb.PushRulesetResponse(
            ruleset=ruleset_message(info), diagnostics=[diagnostic_message(d) for d in info.warnings]
        )

    async def ValidateRuleset(
        self, request_iterator: AsyncIterator[pb.ValidateRulesetRequest], context: aio.ServicerContext
    ) -> pb.ValidateRulesetResponse:
        upload = _Upload(self.app.config.max_upload_bytes)
        async for message in request_iterator:
            upload.add(message.chunk)
        files = upload.files()
        diagnostics = await asyncio.to_thread(self.app.store.validate, files, current_identity.get().name)
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
        actor = current_identity.get().name
        info = await asyncio.to_thread(self.app.store.activate, which, actor, request.allow_rollback)
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

    async def GetRulesetRollout(
        self, request: pb.GetRulesetRolloutRequest, context: aio.ServicerContext
    ) -> pb.GetRulesetRolloutResponse:
        db = self.app.db
        if not isinstance(db, PostgresDatabase):
            return pb.GetRulesetRolloutResponse()
        state = await asyncio.to_thread(rollout, db)
        return rollout_message(state)


def signature_from(message: pb.BundleSignature) -> BundleSignature:
    if len(message.signature) != 64:
        raise InvalidArgument("header.signature.signature", "an Ed25519 signature is 64 bytes")
    if not message.key_id or len(message.key_id) > MAX_KEY_ID:
        raise InvalidArgument("header.signature.key_id", f"required, at most {MAX_KEY_ID} characters")
    return BundleSignature(message.key_id, message.bundle_version, bytes(message.signature))


class _Upload:
    """Rule files arriving as chunks, counted as they stream: the call is refused at the first
    chunk past ``limit`` bytes in total, so an oversized upload is never held in memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: dict[str, list[bytes]] = {}
        self.total = 0
        self.last = ""

    def add(self, chunk: pb.RuleFileChunk) -> None:
        """Consecutive chunks per path; raises as soon as the total passes the limit."""
        if not chunk.path:
            raise InvalidArgument("chunk.path", "every chunk needs the file's path")
        if chunk.path in self.parts and chunk.path != self.last:
            raise InvalidArgument("chunk.path", f"{chunk.path}: chunks of one file must be consecutive")
        self.total += len(chunk.data)
        if self.total > self.limit:
            self.parts.clear()
            raise ResourceExhausted(f"ruleset larger than the {self.limit} byte limit")
        self.parts.setdefault(chunk.path, []).append(chunk.data)
        self.last = chunk.path

    def files(self) -> list[RulesetFile]:
        if not self.parts:
            raise InvalidArgument("chunk", "no rule files sent")
        return [RulesetFile(path, b"".join(data)) for path, data in self.parts.items()]
