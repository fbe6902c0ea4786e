"""vCenter in the loop on vcsim: trigger -> quarantine latency, and a trigger storm with admission.

1. **Latency**: ``avscan.request`` set on a VM -> its NICs disconnected in vcsim (trigger,
   snapshot, download of a 64 MiB ``.vmem`` with an EICAR string, scan, verdict, outbox). The
   baseline, measured in the same run, is a plain scan of the same image through the same
   ScanManager; the ratio says what vCenter adds (target: latency <= baseline + 5 s).
2. **Storm**: every VM of a 16-VM vcsim triggered at once. Reports sustained jobs in flight,
   the per-host peak (must stay <= ``per_host_limit``) and VMs quarantined per second.
Run: ``python -m benchmarks.vcenter_quarantine [--vms-per-host 8] [--per-host-limit 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from scanner.app import App
from scanner.config import load_config
from scanner.lab import eicar
from scanner.lab.vcsim import PASSWORD, USER, Vcsim
from scanner.lab.vcsim.client import SimClient
from scanner.targets import TargetSpec
from scanner.vcenter.settings import QuarantinePolicy, VCenterSettings

MiB = 1 << 20


def make_vmem(path: Path, size_mib: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size_mib * MiB)
        f.seek(size_mib * MiB // 2)
        f.write(eicar())
    return path


async def wait_disconnected(sim: SimClient, names: list[str], timeout: float) -> float:
    start, pending = time.monotonic(), set(names)
    while pending and time.monotonic() - start < timeout:
        for name in list(pending):
            if all(not c for _, c, _ in await asyncio.to_thread(sim.nics, name)):
                pending.discard(name)
        await asyncio.sleep(0.05)
    if pending:
        raise TimeoutError(f"not quarantined in {timeout} s: {sorted(pending)}")
    return time.monotonic() - start


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="avscan-vc-bench-"))
    vmem = make_vmem(work / "guest.vmem", args.size_mib)
    with Vcsim.start(vms=args.vms_per_host) as vcsim:
        sim = SimClient(vcsim.port)
        view = sim.content.viewManager.CreateContainerView(sim.content.rootFolder, [], True)
        names = sorted(v.name for v in view.view if type(v).__name__.endswith("VirtualMachine"))
        for name in names:
            sim.set_nics(name, True, True)
            sim.place_memory(name, vmem)
        policy = QuarantinePolicy(
            dedupe_seconds=0,
            per_host_limit=args.per_host_limit,
            max_concurrent=args.max_concurrent,
            triggers=frozenset({"attribute"}),
        )
        settings = VCenterSettings(
            url=vcsim.url, user=USER, password=PASSWORD, insecure=True, poll_seconds=0.2, policy=policy
        )
        config = replace(load_config(), state_dir=work / "state", vcenter=settings, max_concurrent_scans=2)
        app = App(config)
        await asyncio.to_thread(app.prepare)
        await app.scans.start()
        try:
            # baseline: the same image scanned directly
            base = []
            for _i in range(args.repeat):
                t0 = time.monotonic()
                rec = await app.scans.submit(TargetSpec("memory", {"path": str(vmem), "format": "vmware"}), {}, "bench")
                async for _ in app.scans.watch(rec.id):
                    pass
                base.append(time.monotonic() - t0)
            await app.start_vcenter()
            svc = app.vcenter
            assert svc is not None
            await asyncio.sleep(1)
            lat = []
            for name in names[: args.repeat]:
                t0 = time.monotonic()
                await asyncio.to_thread(sim.set_attribute, name, "avscan.request", "bench")
                await wait_disconnected(sim, [name], 120)
                lat.append(time.monotonic() - t0)
            storm = names[args.repeat :]
            t0 = time.monotonic()
            await asyncio.gather(*(svc.scan_vm(sim.uuid(n), "bench") for n in storm))
            await wait_disconnected(sim, storm, 600)
            storm_s = time.monotonic() - t0
        finally:
            await app.stop_vcenter()
            await app.scans.shutdown(5)
            await asyncio.to_thread(app.close)
    b, m = statistics.median(base), statistics.median(lat)
    ok_latency = m <= b + 5
    ok_hosts = max(svc.peak_by_host.values()) <= args.per_host_limit
    print(f"image {args.size_mib} MiB; vcsim with {len(names)} VMs on {len(svc.peak_by_host)} hosts")
    print(f"baseline plain scan        median {b:6.2f} s  (n={len(base)})")
    print(
        f"trigger -> NICs cut        median {m:6.2f} s  (n={len(lat)})  = {m / b:5.1f}x baseline, "
        f"+{m - b:.2f} s  target <= +5 s  {'PASS' if ok_latency else 'MISS'}"
    )
    print(
        f"storm: {len(storm)} VMs quarantined in {storm_s:.2f} s = {len(storm) / storm_s:.2f} VM/s; "
        f"peak in flight {svc.peak_running} (limit {args.max_concurrent}); per host "
        f"{dict(svc.peak_by_host)} (limit {args.per_host_limit}) {'PASS' if ok_hosts else 'MISS'}"
    )
    return 0 if ok_latency and ok_hosts else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms-per-host", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--per-host-limit", type=int, default=2)
    parser.add_argument("--max-concurrent", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
