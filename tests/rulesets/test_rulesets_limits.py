"""Signature uploads and compiles stay inside their limits (issue 15, item 5).

- An upload over ``max_upload_bytes`` is refused while it streams: the server stops reading
  long before the caller has sent it all (it used to buffer the whole stream first).
- The compiler child only lowers resource limits: under a hard limit already lower than the one
  it asks for (``ulimit -v``, a service manager's cap), compiling still works.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.inproc import ServerThread

from scanner.api.client import Client
from scanner.config import Config
from scanner.engine.settings import MiB
from scanner.v1 import signatures_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
CHUNK = 256 * 1024
SENT_CHUNKS = 1024  # 256 MiB offered against a 1 MiB limit


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    server = ServerThread(Config(listen="127.0.0.1:0", state_dir=tmp_path / "state", max_upload_bytes=MiB))
    try:
        with Client(server.address, timeout=120) as c:
            yield c
    finally:
        server.stop()


class Counted:
    """Chunks of one oversized rule file; counts how many the server pulled."""

    def __init__(self, header: bool) -> None:
        self.header = header
        self.pulled = 0

    def push(self) -> Iterator[pb.PushRulesetRequest]:
        if self.header:
            yield pb.PushRulesetRequest(header=pb.RulesetHeader(name="huge"))
        for chunk in self.chunks():
            yield pb.PushRulesetRequest(chunk=chunk)

    def validate(self) -> Iterator[pb.ValidateRulesetRequest]:
        for chunk in self.chunks():
            yield pb.ValidateRulesetRequest(chunk=chunk)

    def chunks(self) -> Iterator[pb.RuleFileChunk]:
        data = b"/" * CHUNK
        for _ in range(SENT_CHUNKS):
            self.pulled += 1
            yield pb.RuleFileChunk(path="huge.yar", data=data)


@pytest.mark.parametrize("method", ["PushRuleset", "ValidateRuleset"])
def test_an_oversized_upload_is_refused_while_it_streams(client: Client, method: str) -> None:
    upload = Counted(header=method == "PushRuleset")
    stream = upload.push() if method == "PushRuleset" else upload.validate()
    with pytest.raises(grpc.RpcError) as refused:
        getattr(client.signatures, method)(stream, timeout=120)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"larger than the {MiB} byte limit" in refused.value.details()
    assert upload.pulled < SENT_CHUNKS // 4, f"the server read {upload.pulled} of {SENT_CHUNKS} chunks"


LOWERED = """
import resource, sys
from scanner.rulesets.compiler import compile_files
from scanner.rulesets.model import RulesetFile
for key, value in ((resource.RLIMIT_AS, {as_bytes}), (resource.RLIMIT_CPU, 100), (resource.RLIMIT_FSIZE, 256 << 20)):
    resource.setrlimit(key, (value, value))
loaded = compile_files([RulesetFile("a.yar", b"rule a {{ strings: $a = \\"abc\\" condition: $a }}")], name="t")
print("rules", sum(1 for _ in loaded.rules))
"""


def test_the_compiler_works_under_hard_limits_lower_than_its_own() -> None:
    """Hard limits below the compiler's (4 GiB address space, 120 s CPU, 1 GiB files), as
    ``ulimit -v`` or a service manager sets them: an unprivileged raise would fail every compile."""
    script = textwrap.dedent(LOWERED.format(as_bytes=3 << 30))
    unprivileged = ["setpriv", "--bounding-set=-sys_resource", "--inh-caps=-sys_resource"]  # root may raise
    result = subprocess.run(
        [*unprivileged, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "rules 1"
