"""Real receivers for event delivery tests: rsyslog (Debian's) and a CloudEvents HTTP endpoint.

rsyslog runs in the foreground with its own config on a loopback port, writing each message's
MSG part to a file; the test owns its PID and stops it by that PID (never by name).
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CONFIG = """
global(workDirectory="{dir}")
module(load="imtcp")
module(load="imudp")
template(name="msgonly" type="string" string="%msg%\\n")
template(name="header" type="string" string="%pri% %app-name% %msgid% %structured-data%\\n")
ruleset(name="avscan") {{
  action(type="omfile" file="{dir}/received.log" template="msgonly")
  action(type="omfile" file="{dir}/headers.log" template="header")
}}
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="avscan")
input(type="imudp" port="{port}" address="127.0.0.1" ruleset="avscan")
"""


TLS_CONFIG = """
global(workDirectory="{dir}" DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
template(name="msgonly" type="string" string="%msg%\\n")
template(name="header" type="string" string="%pri% %app-name% %msgid% %structured-data%\\n")
ruleset(name="avscan") {{
  action(type="omfile" file="{dir}/received.log" template="msgonly")
  action(type="omfile" file="{dir}/headers.log" template="header")
}}
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="avscan")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rsyslog:
    """``rsyslogd -n`` on 127.0.0.1:``port`` (TCP and UDP), restartable on the same port."""

    def __init__(self, directory: Path, port: int | None = None, tls: tuple[Path, Path, Path] | None = None) -> None:
        """``tls``: (CA, certificate, key) to listen with TLS (RFC 5425) instead of TCP and UDP."""
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.dir / "rsyslog.conf"
        if tls is None:
            self.conf.write_text(CONFIG.format(dir=self.dir, port=self.port))
        else:
            ca, cert, key = tls
            self.conf.write_text(TLS_CONFIG.format(dir=self.dir, port=self.port, ca=ca, cert=cert, key=key))
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "rsyslogd.err").open("ab"),
        )
        deadline = time.monotonic() + 30
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rsyslogd did not start: {(self.dir / 'rsyslogd.err').read_text()}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.proc = None

    def messages(self) -> list[str]:
        path = self.dir / "received.log"
        return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def headers(self) -> list[str]:
        path = self.dir / "headers.log"
        return path.read_text().splitlines() if path.exists() else []


class Webhook:
    """An HTTP endpoint that keeps every CloudEvent POSTed to it; ``down`` answers 503."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: (certificate, key) to serve HTTPS."""
        self.events: list[dict[str, Any]] = []
        self.content_types: set[str] = set()
        self.authorizations: set[str] = set()
        self.down = False
        self.refused = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if owner.down:
                    owner.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                owner.content_types.add(self.headers.get("Content-Type", ""))
                owner.authorizations.add(self.headers.get("Authorization", ""))
                owner.events.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://localhost:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(what: str, check: Any, timeout: float = 60.0) -> None:
    """Poll ``check()`` until true (waiting on a state, not a duration)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
