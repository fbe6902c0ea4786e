"""``avscan demo``: the service's main job on an embedded default, shown end to end.

Starts the real service (its own process, SQLite state and default signatures in a work
directory), then acts as a security team and a SOC client would: validates a broken rule, pushes
and activates a ruleset, scans generated samples and a raw memory image through the API,
watches findings stream in, scans a buffer, rolls back, and stops the service gracefully.
Test samples are EICAR-style strings assembled at run time; nothing harmful is written.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import grpc

from scanner.api.client import Client, files_target, guest_target, memory_target
from scanner.api.status import field_violations
from scanner.cli.remote import diagnostic_line, ruleset_line, verdict_text
from scanner.errors import ScannerError
from scanner.v1 import scans_pb2

EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}" + "$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
DEMO_MARKER = "AVSCAN-DEMO-" + "BACKDOOR-MARKER-7f3a"
DEMO_RULES = {
    "demo/backdoor.yar": f"""rule Demo_Backdoor_Marker {{
    meta:
        author = "avscan demo"
        description = "Benign marker standing in for a backdoor's config string"
        severity = 90
        scan_context = "file, memory"
    strings:
        $m = "{DEMO_MARKER}"
    condition:
        $m
}}
""",
    "demo/miner.yar": """rule Demo_Miner_Pool_Config {
    meta:
        author = "avscan demo"
        description = "Stratum pool URL with a wallet, as miners embed it"
        severity = 60
    strings:
        $pool = /stratum\\+tcp:\\/\\/[a-z0-9.\\-]{3,64}:[0-9]{2,5}/
        $wallet = "--user=" ascii
    condition:
        $pool and $wallet
}
""",
}
BROKEN_RULE = {"demo/broken.yar": 'rule Broken {\n  strings:\n    $a = "x"\n  condition:\n    $a and $b\n}\n'}


def say(text: str) -> None:
    click.secho(text, fg="cyan", bold=True)


def run_demo(workdir: Path | None) -> int:
    base = Path(workdir or tempfile.mkdtemp(prefix="avscan-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    say(f"== avscan demo (work directory {base})")
    server = _start_service(base, port)
    try:
        with Client(f"127.0.0.1:{port}") as client:
            _wait_ready(client, server)
            _signatures(client)
            ok = _scans(client, base)
            ok = _live_guest(client) and ok
            _rollback(client)
    finally:
        _stop_service(server)
    ok = _vcenter(base) and ok
    say("== demo finished" + ("" if ok else " WITH UNEXPECTED RESULTS"))
    return 0 if ok else 1


def _start_service(
    base: Path, port: int, config: Path | None = None, state: str = "state", env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    options = ["--config", str(config)] if config else []
    shown = " ".join([*options, "--state-dir", str(base / state)])
    say(f"-- starting the service: avscan {shown} serve --listen 127.0.0.1:{port}")
    cmd = [sys.executable, "-m", "scanner", *options, "--state-dir", str(base / state), "serve"]
    cmd += ["--listen", f"127.0.0.1:{port}"]
    log = (base / ("service.log" if state == "state" else f"service-{state}.log")).open("wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def _wait_ready(client: Client, server: subprocess.Popen[bytes]) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(client.channel)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise click.ClickException("the service exited; see service.log in the work directory")
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                print("   health: SERVING")
                return
        except grpc.RpcError:
            time.sleep(0.2)
    raise click.ClickException("the service did not become ready within 60 s")


def _signatures(client: Client) -> None:
    say("-- security team: the default ruleset is active on first start")
    for r in client.list_rulesets():
        print("  ", ruleset_line(r))
    say("-- validate a broken rule: the service names the file and line")
    response = client.validate_ruleset([(p, s.encode()) for p, s in BROKEN_RULE.items()])
    for d in response.diagnostics:
        print("  ", diagnostic_line(d))
    try:
        client.push_ruleset([(p, s.encode()) for p, s in BROKEN_RULE.items()], "broken")
    except grpc.RpcError as e:
        print(f"   push refused: {e.code().name}: {e.details()}")
        for field, description in field_violations(e):
            print(f"     {field}: {description}")
    say("-- push and activate a ruleset (default rules + two demo rules)")
    files = _default_files() + [(p, s.encode()) for p, s in DEMO_RULES.items()]
    pushed = client.push_ruleset(files, "demo", "default signatures plus demo rules")
    for d in pushed.diagnostics:
        print("   warning:", diagnostic_line(d))
    print("  ", ruleset_line(client.activate(digest=pushed.ruleset.digest)))


def _default_files() -> list[tuple[str, bytes]]:
    from scanner.config import DEFAULT_SIGNATURES

    return [
        (p.relative_to(DEFAULT_SIGNATURES).as_posix(), p.read_bytes())
        for p in sorted(DEFAULT_SIGNATURES.rglob("*.yar*"))
    ]


def _scans(client: Client, base: Path) -> bool:
    samples = _make_samples(base / "samples")
    say(f"-- SOC: scan a directory of generated samples ({samples})")
    files_scan = _watch_scan(client, client.start_scan(files_target(str(samples)), request_id="demo-files"))
    image = _make_memory_image(base / "guest-memory.raw")
    say(f"-- SOC: scan a 64 MiB raw memory image ({image}); one marker straddles a 16 MiB chunk edge")
    memory_scan = _watch_scan(client, client.start_scan(memory_target(str(image))))
    say("-- SOC: scan a buffer directly (ScanBytes)")
    verdict = client.scan_bytes(f"GET /x?cmd={DEMO_MARKER} HTTP/1.1".encode(), name="http-request").verdict
    print("  ", verdict_text(verdict), [f.rule for f in verdict.findings])
    planted = {0x1000, 16 * 1024 * 1024 - 7, 40 * 1024 * 1024}
    found = _marker_addresses(client, memory_scan)
    print(f"   marker addresses found in memory: {', '.join(hex(a) for a in sorted(found))}")
    return files_scan.verdict.findings_count == 3 and found == planted and len(verdict.findings) == 1


def _marker_addresses(client: Client, scan: scans_pb2.Scan) -> set[int]:
    return {
        s.address
        for page in client.findings(scan.scan_id)
        for f in page.findings
        for s in f.strings
        if s.identifier in ("$head", "$m")
    }


def _watch_scan(client: Client, scan: scans_pb2.Scan) -> scans_pb2.Scan:
    print(f"   scan {scan.scan_id} accepted")
    for event in client.watch(scan.scan_id, timeout=300):
        if event.HasField("finding"):
            f = event.finding
            where = f.unit if f.unit_kind == "file" else f"physical {f.address:#x}"
            if f.context.get("pid"):
                where += f", process {f.context['pid']} {f.context.get('process', '')} ({f.context.get('region', '')})"
            print(f"   FOUND {f.rule} (severity {f.severity}) in {where}")
        elif event.HasField("done"):
            print("  ", verdict_text(event.done.verdict))
            return event.done
    return client.get_scan(scan.scan_id)


def _make_samples(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "eicar.com").write_text(EICAR)
    (root / "notes.txt").write_text("quarterly report draft\n" * 100)
    (root / "dropper.sh").write_text(f"#!/bin/sh\n# {DEMO_MARKER}\nexit 0\n")
    (root / "nested").mkdir(exist_ok=True)
    (root / "nested" / "miner.conf").write_text("--url=stratum+tcp://pool.example.org:3333 --user=wallet\n")
    (root / "nested" / "clean.bin").write_bytes(bytes(range(256)) * 64)
    return root


def _make_memory_image(path: Path) -> Path:
    with path.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
        for offset, text in (
            (0x1000, EICAR),
            (16 * 1024 * 1024 - 7, DEMO_MARKER),
            (40 * 1024 * 1024, DEMO_MARKER),
        ):
            f.seek(offset)
            f.write(text.encode())
    return path


def _live_guest(client: Client) -> bool:
    """Boot a lab guest (tiny Debian kernel + busybox on QEMU) and scan its RAM from outside."""
    from scanner.lab import LabGuest

    say("-- hypervisor side: boot a lab guest whose processes hold an EICAR string in their heap")
    try:
        guest = LabGuest.start(memory_mib=256, markers=1, variant="demo")
    except ScannerError as e:
        print(f"   the guest lab cannot run here: {e.message}")
        return False
    with guest:
        print(f"   guest up under {guest.accel} in {guest.boot_seconds:.1f} s; RAM file {guest.ram_path}")
        marker = guest.marker_pids[0]
        print(f"   inside the guest: pid {marker} holds the marker, pid {guest.clean_pid} is clean")
        say("-- SOC: scan the running guest's memory through LibVMI (no agent, guest keeps running)")
        live = _watch_scan(client, client.start_scan(guest_target(qmp=str(guest.scanner_qmp_path))))
        say("-- SOC: scan it again, paused for a consistent view (pause bounded at 10 s)")
        paused = _watch_scan(
            client, client.start_scan(guest_target(qmp=str(guest.scanner_qmp_path), paused=True, max_pause=10))
        )
        details = paused.verdict.details
        print(f"   guest paused {details.get('paused_seconds', '?')} s, now {guest.status()}")
        found = _marker_addresses(client, live)
        ram = guest.ram_path.read_bytes()
        real = all(ram[a : a + len(EICAR)] == EICAR.encode() for a in found)
        where = ", ".join(hex(a) for a in sorted(found))
        print(f"   marker at physical {where}: read back from RAM, {'matches' if real else 'DIFFERS'}")
    return bool(found) and real and paused.verdict.findings_count > 0


def _rollback(client: Client) -> None:
    say("-- security team: roll back to the previous ruleset")
    print("   now active:", ruleset_line(client.rollback()).strip())
    for r in client.list_rulesets():
        print("  ", ruleset_line(r))


VC_VM = "DC0_H0_VM0"


def _vcenter(base: Path) -> bool:
    """vCenter in the loop on vcsim: a marked VM is snapshotted, scanned, quarantined, released."""
    from scanner.lab import LabGuest
    from scanner.lab.vcsim import PASSWORD, USER, Vcsim

    say("-- vCenter: start vcsim (govmomi's simulator, built from Debian's source) as the vCenter")
    try:
        sim_server = Vcsim.start()
    except ScannerError as e:
        print(f"   vcsim cannot run here: {e.message}")
        return False
    with sim_server:
        from scanner.lab.vcsim.client import SimClient

        sim = SimClient(sim_server.port)
        say(f"-- lab: the RAM of a real guest becomes {VC_VM}'s memory on vcsim's datastore")
        try:
            with LabGuest.start(memory_mib=256, markers=1, variant="vc-demo") as guest:
                guest.dump_raw(base / "vc-guest.vmem")
        except ScannerError as e:
            print(f"   the guest lab cannot run here: {e.message}")
            return False
        print("  ", sim.place_memory(VC_VM, base / "vc-guest.vmem"))
        sim.set_nics(VC_VM, connected=True, start=True)
        print(f"   {VC_VM} NICs (key, connected, startConnected): {sim.nics(VC_VM)}")
        config = base / "avscan-vcenter.toml"
        config.write_text(
            f'[vcenter]\nurl = "{sim_server.url}"\nuser = "{USER}"\ninsecure = true  # vcsim: plain HTTP\n'
            'password_env = "AVSCAN_DEMO_VC_PASSWORD"\n'
        )
        port = _free_port()
        server = _start_service(base, port, config, "state-vcenter", {"AVSCAN_DEMO_VC_PASSWORD": PASSWORD})
        try:
            with Client(f"127.0.0.1:{port}") as client:
                _wait_ready(client, server)
                return _vcenter_flow(client, sim)
        finally:
            _stop_service(server)


def _vcenter_flow(client: Client, sim: Any) -> bool:
    from scanner.cli.vcenter import action_line
    from scanner.v1 import vcenter_pb2, vcenter_pb2_grpc

    stub = vcenter_pb2_grpc.VCenterServiceStub(client.channel)
    vms = stub.ListVMs(vcenter_pb2.ListVMsRequest(), timeout=60).vms
    say("-- SOC: the inventory the appliance sees (avscan vcenter inventory)")
    for vm in vms:
        print(f"   {vm.name:<16} {vm.instance_uuid} host {vm.host:<10} {vm.guest_os} {len(vm.files)} files")
    say(f"-- vCenter admin: set custom attribute avscan.request on {VC_VM}")
    sim.set_attribute(VC_VM, "avscan.request", "scan please")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and any(c for _, c, _ in sim.nics(VC_VM)):
        time.sleep(0.5)
    uuid = sim.uuid(VC_VM)
    print(f"   attributes in vCenter: {sim.attributes(VC_VM)}")
    print(f"   NICs now: {sim.nics(VC_VM)}; snapshots left: {sim.snapshots(VC_VM) or 'none'}")
    for e in sim.events(VC_VM, "GeneralUserEvent")[:2]:
        print(f"   VM event: {e.message}")
    say("-- the outbox (avscan vcenter actions): each action confirmed by vCenter")
    for a in stub.ListActions(vcenter_pb2.ListActionsRequest(vm_uuid=uuid), timeout=60).actions:
        print("  ", action_line(a))
    quarantined = all(not c for _, c, _ in sim.nics(VC_VM))
    say(f"-- security team: release {VC_VM} (avscan vcenter release {uuid})")
    stub.Release(vcenter_pb2.ReleaseRequest(vm_uuid=uuid, reason="demo"), timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        all(c for _, c, _ in sim.nics(VC_VM)) and sim.attributes(VC_VM).get("avscan.release", "").startswith("released")
    ):  # the release is several actions: NICs restored, then the release attribute written
        time.sleep(0.3)
    attributes = sim.attributes(VC_VM)
    print(
        f"   NICs after release: {sim.nics(VC_VM)}; avscan.release = {attributes.get('avscan.release', '')}; "
        f"avscan.verdict = {attributes.get('avscan.verdict', '')}"
    )
    return quarantined and all(c and s for _, c, s in sim.nics(VC_VM))


def _stop_service(server: subprocess.Popen[bytes]) -> None:
    say("-- stopping the service (SIGTERM: health NOT_SERVING, scans finish or are recorded)")
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    print(f"   service exited with {server.returncode}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
