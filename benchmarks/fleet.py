"""A fleet on one machine: N appliance processes on one PostgreSQL, many small guests across them.

For each fleet size (``--sizes``, default 2 4 8; appliance k is alone on host ``esx<k>``), the
driver places ``--guests`` memory images (guest i clones golden i % ``--goldens`` and has one
1 MiB block of its own; consecutive rounds of goldens go to the next host, so every golden's
clones are spread over all hosts) and triggers one scan per guest at
``--rate`` per second, routed to the guest's host. Measured per size:

- trigger-to-verdict latency p50/p99 (``finished_at - created_at`` of each scan, one clock);
- jobs lost (triggered but not DONE when the fleet is idle) and duplicate runs
  (``attempts > 1``): both must be 0;
- the result cache hit ratio over all windows, with the fleet's shared cache (PostgreSQL) and,
  as the baseline of the same run, with one private SQLite cache per appliance (largest size);
- PostgreSQL connections held by the appliances at the end of the run;
- every size's figures next to the smallest size's (the baseline): how they grow.

Signatures to active everywhere (``--activations``, default 5, per size): the driver is the
appliance the security team talks to: it pushes a new ruleset and activates it (the call returns
once the ruleset runs on the driver: the single-appliance activation time, the baseline of the
same run), and the clock runs until every appliance of the fleet reports that digest running in
``ruleset_status`` (each compiled it itself, woken by NOTIFY). p50 and max per size, and the p50
against the single-appliance p50.

``--simulate HOSTSxVMS`` (default 100x50) then measures the queue's polling cost at that scale:
the state holds HOSTS x VMS finished scans plus one queued scan per host, and the driver times
the idle claim every appliance issues every ``poll_seconds`` (the only periodic query besides the
heartbeat). Run: ``python -m benchmarks.fleet`` (``--help``); needs Debian ``postgresql``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import MiB

BLOCK = MiB


@dataclass(frozen=True)
class Run:
    appliances: int
    shared_cache: bool
    p50: float
    p99: float
    lost: int
    duplicates: int
    hit_ratio: float
    seconds: float
    connections: int


def write_guests(root: Path, guests: int, goldens: int, blocks: int) -> list[Path]:
    """``goldens`` random images of ``blocks`` MiB; guest i clones golden i % goldens and owns one block."""
    rng = random.Random(16)
    golden = [[rng.randbytes(BLOCK) for _ in range(blocks)] for _ in range(goldens)]
    paths = []
    for i in range(guests):
        cells = list(golden[i % goldens])
        cells[1 + i % (blocks - 1)] = rng.randbytes(BLOCK)  # its own process heap, say
        path = root / f"guest{i:04d}.raw"
        path.write_bytes(b"".join(cells))
        paths.append(path)
    return paths


def appliance(url: str, host: str, state_dir: str, shared_cache: bool) -> None:
    """One appliance process: the real App with the fleet manager, until SIGTERM."""
    from scanner.app import App
    from scanner.config import Config
    from scanner.engine.cache import CacheSettings
    from scanner.engine.settings import EngineSettings
    from scanner.fleet.settings import FleetSettings
    from scanner.state.settings import StateSettings

    config = Config(
        state_dir=Path(state_dir),
        state=StateSettings(url),
        fleet=FleetSettings(host=host, name=host, lease_seconds=10, poll_seconds=1),
        cache=CacheSettings(url=url) if shared_cache else CacheSettings(),
        engine=EngineSettings(threads=1, chunk_size=1 * MiB, overlap=4096),
        max_concurrent_scans=1,
    )
    app = App(config)
    app.prepare()

    async def serve() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await app.scans.start()
        await stop.wait()
        await app.scans.shutdown(5)

    try:
        asyncio.run(serve())
    finally:
        app.close()


def run_fleet(url: str, work: Path, guests: list[Path], size: int, rate: float, shared: bool, goldens: int) -> Run:
    from scanner.state.postgres import PostgresDatabase
    from scanner.targets import TargetSpec

    hosts = [f"esx{k}" for k in range(size)]
    procs = spawn(url, work, hosts, shared)
    driver = PostgresDatabase(url, host="driver", appliance="driver")
    try:
        from scanner.fleet.registry import Registry

        registry = Registry(driver, dead_after=30)
        while sum(1 for a in registry.fleet() if a.alive and a.host in hosts) < size:
            time.sleep(0.2)  # each appliance compiles its ruleset first
        began = time.time()
        ids = []
        for i, path in enumerate(guests):
            due = began + i / rate
            time.sleep(max(0.0, due - time.time()))
            spec = TargetSpec("memory", {"path": str(path)})
            ids.append(driver.create_scan(spec, {}, "bench", host=hosts[(i // goldens) % size])[0].id)
        deadline = time.time() + 600
        while time.time() < deadline and len(driver.list_scans(len(ids) + 1, None, "DONE")) < len(ids):
            time.sleep(0.2)
        seconds = time.time() - began
        with driver.connection() as conn:  # every appliance's, not the driver's own
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        connections = int(row[0]) if row else 0
        records = [driver.get_scan(i) for i in ids]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
        driver.close()
    done = [r for r in records if r.state == "DONE" and r.verdict is not None and r.finished_at]
    latencies = sorted(r.finished_at - r.created_at for r in done)  # type: ignore[operator]
    hits = sum(r.verdict.coverage.cache_hits for r in done)  # type: ignore[union-attr]
    misses = sum(r.verdict.coverage.cache_misses for r in done)  # type: ignore[union-attr]
    return Run(
        appliances=size,
        shared_cache=shared,
        p50=statistics.median(latencies) if latencies else float("nan"),
        p99=latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan"),
        lost=len(ids) - len(done),
        duplicates=sum(1 for r in records if r.attempts > 1),
        hit_ratio=hits / (hits + misses) if hits + misses else 0.0,
        seconds=seconds,
        connections=connections,
    )


@dataclass(frozen=True)
class SignatureRun:
    appliances: int
    single: list[float]  # push + activate, returned: running on the pushing appliance
    everywhere: list[float]  # push + activate until every appliance reports it running


def spawn(url: str, work: Path, hosts: list[str], shared: bool) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fleet", "--appliance", url, host, str(work / host), str(int(shared))]
        )
        for host in hosts
    ]


def run_signatures(url: str, work: Path, size: int, activations: int) -> SignatureRun:
    """Push + activate ``activations`` new rulesets on the driver; time until all ``size`` run each."""
    from scanner.fleet.rollout import rollout
    from scanner.rulesets.compiler import CompileLimits
    from scanner.rulesets.fleet_store import FleetRulesetStore
    from scanner.rulesets.model import RulesetFile
    from scanner.rulesets.store import RulesetStore
    from scanner.state.postgres import PostgresDatabase

    hosts = [f"esx{k}" for k in range(size)]
    procs = spawn(url, work, hosts, False)
    driver = PostgresDatabase(url, host="driver", appliance="driver")
    store = FleetRulesetStore(driver, RulesetStore(work / "driver-rulesets", limits=CompileLimits(probe_seconds=60)))

    def everyone_runs(digest: str) -> bool:
        state = rollout(driver)
        running = {a.appliance: a.running for a in state.appliances}
        return all(running.get(h) == digest for h in hosts)

    single, everywhere = [], []
    try:
        store.ensure_default(Path(__file__).resolve().parent.parent / "signatures", "bench")
        deadline = time.time() + 300
        while not everyone_runs(rollout(driver).active):  # each appliance compiles the default first
            assert time.time() < deadline, "the fleet never came up"
            time.sleep(0.05)
        for i in range(activations):
            marker = f"AVSCAN-BENCH-MARKER-{size}-{i}-{random.getrandbits(64):016x}"
            rule = f'rule bench_{i} {{ strings: $m = "{marker}" condition: $m }}\n'
            files = [RulesetFile("bench/marker.yar", rule.encode())]
            began = time.perf_counter()
            info = store.push(files, f"bench {i}", "", "bench")
            store.activate(info.digest, "bench")
            single.append(time.perf_counter() - began)
            while not everyone_runs(info.digest):
                assert time.perf_counter() - began < 300, f"{info.digest} never ran everywhere"
                time.sleep(0.01)
            everywhere.append(time.perf_counter() - began)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
        driver.close()
    return SignatureRun(size, single, everywhere)


def report_signatures(runs: list[SignatureRun]) -> None:
    print(f"{'appliances':>10} {'single p50 s':>12} {'everywhere p50 s':>16} {'max s':>7} {'p50/single':>10}")
    for run in runs:
        single = statistics.median(run.single)
        p50 = statistics.median(run.everywhere)
        print(f"{run.appliances:>10} {single:12.3f} {p50:16.3f} {max(run.everywhere):7.3f} {p50 / single:9.2f}x")


def simulate(url: str, hosts: int, vms: int, polls: int) -> tuple[float, float, int]:
    """Idle-claim cost (ms, p50 and p99) with ``hosts * vms`` scans in the state; rows stored."""
    import psycopg

    from scanner.fleet.queue import JobQueue
    from scanner.state.postgres import PostgresDatabase

    seed = PostgresDatabase(url, host="sim", appliance="sim")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO scans (id, target_kind, target_params, options, requested_by, state, created_at, host,"
            " attempts, finished_at) SELECT md5(g::text), 'memory', '{}', '{}', 'sim', 'DONE', 0, 'h' || (g %% %s),"
            " 1, 0 FROM generate_series(1, %s) g",
            (hosts, hosts * vms),
        )
        conn.execute("ANALYZE scans")
        rows = int(conn.execute("SELECT COUNT(*) FROM scans").fetchone()[0])  # type: ignore[index]
    seed.close()
    times = []
    queues = [JobQueue(PostgresDatabase(url, host=f"h{h}", appliance=f"a{h}")) for h in range(min(hosts, 8))]
    try:
        for i in range(polls):
            queue = queues[i % len(queues)]
            t = time.perf_counter()
            assert queue.claim() is None
            times.append((time.perf_counter() - t) * 1000)
    finally:
        for queue in queues:
            queue.db.close()
    times.sort()
    return statistics.median(times), times[int(0.99 * len(times))], rows


def fresh(server: object, name: str) -> str:
    import psycopg

    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"CREATE DATABASE {name}")
    return server.url(name)  # type: ignore[attr-defined,no-any-return]


def report(runs: list[Run]) -> bool:
    base = runs[0]
    print(f"{'appliances':>10} {'cache':>8} {'p50 s':>7} {'p99 s':>7} {'p99/base':>8} {'lost':>5} {'dup':>4}"
          f" {'hit ratio':>9} {'jobs/s':>7} {'conns':>5}")  # fmt: skip
    ok = True
    for run in runs:
        ok &= run.lost == 0 and run.duplicates == 0
        print(
            f"{run.appliances:>10} {'fleet' if run.shared_cache else 'private':>8} {run.p50:7.3f} {run.p99:7.3f}"
            f" {run.p99 / base.p99:7.2f}x {run.lost:5d} {run.duplicates:4d} {run.hit_ratio:9.3f}"
            f" {GUESTS / run.seconds:7.1f} {run.connections:5d}"
        )
    return ok


GUESTS = 0


def main() -> int:
    global GUESTS  # noqa: PLW0603 - the report's jobs/s
    if len(sys.argv) > 1 and sys.argv[1] == "--appliance":
        appliance(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--guests", type=int, default=400)
    parser.add_argument("--goldens", type=int, default=40)
    parser.add_argument("--blocks", type=int, default=8, help="MiB per guest image")
    parser.add_argument("--rate", type=float, default=10.0, help="triggers per second")
    parser.add_argument("--simulate", default="100x50")
    parser.add_argument("--activations", type=int, default=5, help="rulesets pushed and activated per size")
    parser.add_argument("--sections", nargs="+", default=["jobs", "signatures"], choices=["jobs", "signatures"])
    args = parser.parse_args()
    GUESTS = args.guests
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.postgres import start_postgres, stop_postgres

    with tempfile.TemporaryDirectory(prefix="avscan-fleet-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        server = start_postgres(root / "pg")
        try:
            ok = True
            if "signatures" in args.sections:
                signature_runs = [
                    run_signatures(fresh(server, f"sig{size}"), root / f"s{size}", size, args.activations)
                    for size in args.sizes
                ]
                report_signatures(signature_runs)
            if "jobs" not in args.sections:
                return 0
            guests = write_guests(root, args.guests, args.goldens, args.blocks)
            runs = []
            for size in args.sizes:
                url = fresh(server, f"fleet{size}")
                runs.append(run_fleet(url, root / f"f{size}", guests, size, args.rate, True, args.goldens))
            url = fresh(server, "private")  # the baseline for the hit ratio: no cache shared
            runs.append(run_fleet(url, root / "p", guests, args.sizes[-1], args.rate, False, args.goldens))
            ok = report(runs)
            hosts, vms = (int(x) for x in args.simulate.split("x"))
            p50, p99, rows = simulate(fresh(server, "sim"), hosts, vms, 2000)
            per_second = hosts / 5.0  # one idle claim per appliance per poll_seconds (default 5)
            print(f"simulated {hosts} hosts x {vms} VMs ({rows} scans stored): idle claim p50 {p50:.2f} ms,"
                  f" p99 {p99:.2f} ms; {per_second:.0f} claims/s fleet-wide = {per_second * p50 / 1000:.3f}"
                  " of one PostgreSQL core")  # fmt: skip
        finally:
            stop_postgres(server)
    print("PASS" if ok else "MISS", "(no job lost, none run twice)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
