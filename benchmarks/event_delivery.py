"""What durable SIEM delivery costs: the transactional event outbox and the relay's throughput.

Two measurements, each against a baseline taken in the same run:

- **commit**: building the ECS documents of a scan with ``--findings`` findings and queueing them
  in the same transaction as ``Database.finish_scan``, against the same call without them (what
  the service did before). Reported as the ratio and as the added cost per document; target: at
  most 0.5 ms per document (1,000 findings add at most 0.5 s on a worker thread, less than YARA
  takes for 64 MiB here), whatever the ratio.
- **drain**: the relay delivering ``--docs`` queued documents to a JSON-lines sink (batches of
  500, an fsync per batch, the cursor committed per batch), against appending the same JSON lines
  to a file with one fsync per 100 lines. Target: at least 0.5x the baseline's documents per second.

Run: ``python -m benchmarks.event_delivery [--findings 200] [--docs 5000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from scanner.outputs import ecs
from scanner.outputs.queue import EventQueue
from scanner.outputs.relay import EventRelay
from scanner.outputs.sinks import build_sink
from scanner.state.db import Database
from scanner.targets import TargetSpec
from scanner.verdicts import Coverage, Finding, StringMatch, Verdict, VerdictKind

PER_DOC_TARGET_MS = 0.5
DRAIN_TARGET = 0.5


def verdict(findings: int) -> Verdict:
    hits = tuple(
        Finding(
            "Marker",
            "bench.yar",
            ("bench",),
            {"severity": 90, "version": "1"},
            f"/srv/files/{i}.bin",
            "file",
            0,
            0,
            (StringMatch("$m", 0, 0, 24, b"AVSCAN-BENCH-MARKER-5c1d"),),
            False,
            {"sha256": "0" * 64, "size": "4096"},
        )
        for i in range(findings)
    )
    now = time.time()
    return Verdict(VerdictKind.MALICIOUS, "sha256:" + "1" * 64, Coverage(units_total=findings), hits, "", now, now)


def commit(work: Path, findings: int, with_events: bool) -> float:
    db = Database(work / f"state-{with_events}-{time.monotonic_ns()}.sqlite3")
    v = verdict(findings)
    spec = TargetSpec("files", {"paths": ["/srv/files"]})
    record, _ = db.create_scan(spec, {}, "bench")
    t0 = time.perf_counter()
    docs = ecs.scan_documents(v, ecs.ScanFacts(record.id, "files", spec.describe())) if with_events else []
    db.finish_scan(record.id, "DONE", v, docs)
    elapsed = time.perf_counter() - t0
    db.close()
    return elapsed


def drain(work: Path, count: int) -> float:
    path = work / f"drain-{time.monotonic_ns()}.sqlite3"
    sink = build_sink(0, {"kind": "jsonl", "name": "file", "path": str(work / "events" / f"{path.stem}.jsonl")})
    queue = EventQueue(path, [sink.name])
    docs = ecs.scan_documents(verdict(count - 1), ecs.ScanFacts("bench", "files"))
    queue.append(docs)

    async def run() -> float:
        relay = EventRelay(queue, [sink])
        t0 = time.perf_counter()
        relay.start()
        while queue.states()[0].backlog:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        await relay.stop()
        return elapsed

    elapsed = asyncio.run(run())
    queue.close()
    return elapsed


def baseline_write(work: Path, count: int) -> float:
    """The same documents, already JSON (as the queue holds them), appended with an fsync per 100."""
    lines = [ecs.to_json(d) + "\n" for d in ecs.scan_documents(verdict(count - 1), ecs.ScanFacts("bench", "files"))]
    t0 = time.perf_counter()
    with (work / f"plain-{time.monotonic_ns()}.jsonl").open("ab") as f:
        for i in range(0, len(lines), 100):
            f.write("".join(lines[i : i + 100]).encode())
            f.flush()
            os.fsync(f.fileno())
    return time.perf_counter() - t0


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=200)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avscan-bench-events-") as tmp:
        work = Path(tmp)
        plain = min(commit(work, args.findings, False) for _ in range(args.repeat))
        queued = min(commit(work, args.findings, True) for _ in range(args.repeat))
        write = min(baseline_write(work, args.docs) for _ in range(args.repeat))
        relay = min(drain(work, args.docs) for _ in range(args.repeat))
    commit_ratio = queued / plain
    per_doc_ms = (queued - plain) * 1e3 / (args.findings + 1)
    drain_ratio = write / relay  # documents per second of the relay over the baseline's
    ok_commit = per_doc_ms <= PER_DOC_TARGET_MS
    ok_drain = drain_ratio >= DRAIN_TARGET
    rows = [
        (f"commit, {args.findings} findings, no events (baseline)", f"{plain * 1e3:.1f} ms", "", ""),
        (
            f"commit, {args.findings} findings + {args.findings + 1} ECS documents",
            f"{queued * 1e3:.1f} ms",
            f"{commit_ratio:.2f}x",
            "",
        ),
        ("  added per document", f"{per_doc_ms:.3f} ms", "", f"<= {PER_DOC_TARGET_MS} ms " + _verdict(ok_commit)),
        (f"write {args.docs} JSON lines, fsync per 100 (baseline)", f"{args.docs / write:.0f} doc/s", "", ""),
        (
            f"relay {args.docs} queued documents to a JSON-lines sink",
            f"{args.docs / relay:.0f} doc/s",
            f"{drain_ratio:.2f}x",
            f">= {DRAIN_TARGET}x " + _verdict(ok_drain),
        ),
    ]
    for what, value, ratio, target in rows:
        print(f"{what:<60}{value:>13}{ratio:>8}  {target}")
    return 0 if ok_commit and ok_drain else 1


if __name__ == "__main__":
    sys.exit(main())
