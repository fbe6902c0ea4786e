"""vcsim for tests and the demo: govmomi's vCenter simulator, built here from Debian's source.

``build()`` compiles ``main.go`` (next to this file) once with Debian's Go in GOPATH mode
(``GO111MODULE=off GOPATH=/usr/share/gocode``) and caches the binary under
``<lab cache>/vcsim/<hash of main.go>/``. ``Vcsim.start()`` runs it on a free loopback port;
``stop``/``restart`` (same port, fresh inventory: vcsim keeps no state) and ``pause``/``resume``
(SIGSTOP/SIGCONT: a vCenter that hangs) inject outages. It serves plain HTTP; the SOAP SDK is at
``/sdk``, the REST tagging subset at ``/rest``, datastore files at ``/folder``, and each datastore
is a local directory (``Datastore.info.url``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

from scanner.errors import Unavailable
from scanner.lab.image import cache_dir

APT_PACKAGES = ("golang-go", "golang-github-vmware-govmomi-dev")
GOPATH = Path("/usr/share/gocode")
GOVMOMI = GOPATH / "src/github.com/vmware/govmomi/simulator"
USER, PASSWORD = "user", "pass"  # vcsim accepts any credentials
_URL = re.compile(r"VCSIM_URL=(\S+)")


def build(cache: Path | None = None) -> Path:
    """The vcsim binary, built on first use; Unavailable says which Debian package is missing."""
    source = resources.files("scanner.lab.vcsim").joinpath("main.go").read_bytes()
    out = (cache or cache_dir()) / "vcsim" / hashlib.sha256(source).hexdigest()[:16]
    binary = out / "vcsim"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None or not GOVMOMI.is_dir():
        raise Unavailable(f"unavailable: vcsim needs Debian packages {' '.join(APT_PACKAGES)} (apt-get install)")
    out.mkdir(parents=True, exist_ok=True)
    with (out / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():
            return binary
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            (Path(tmp) / "main.go").write_bytes(source)
            env = {
                **os.environ,
                "GO111MODULE": "off",
                "GOPATH": str(GOPATH),
                "GOCACHE": str(out / "gocache"),
                "GOFLAGS": "",
            }
            result = subprocess.run(
                [go, "build", "-o", str(Path(tmp) / "vcsim"), "main.go"],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if result.returncode != 0:
                raise Unavailable(f"unavailable: building vcsim failed: {result.stderr[-2000:]}")
            os.replace(Path(tmp) / "vcsim", binary)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Vcsim:
    """A running vcsim. Use ``with Vcsim.start() as sim:``; ``sim.url`` is ``http://127.0.0.1:PORT/sdk``."""

    def __init__(self, binary: Path, port: int, vms: int) -> None:
        self.binary = binary
        self.port = port
        self.vms = vms
        self.url = ""
        self.log = Path(tempfile.mkstemp(prefix="vcsim-", suffix=".log")[1])
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, port: int = 0, vms: int = 2, cache: Path | None = None) -> Vcsim:
        sim = cls(build(cache), port or free_port(), vms)
        sim._spawn()
        return sim

    def _spawn(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                [str(self.binary), "-listen", f"127.0.0.1:{self.port}", "-vm", str(self.vms)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _URL.search(self.log.read_text(errors="replace"))
            if found and self._listening():
                self.url = f"http://127.0.0.1:{self.port}/sdk"
                return
            if self._proc.poll() is not None:
                raise Unavailable(f"unavailable: vcsim exited: {self.log.read_text(errors='replace')[-1000:]}")
            time.sleep(0.05)
        self.stop()
        raise Unavailable(f"unavailable: vcsim not listening after {timeout} s")

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same port (a fresh inventory with the same names and UUIDs)."""
        self.stop()
        self._spawn()

    def pause(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Vcsim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)
