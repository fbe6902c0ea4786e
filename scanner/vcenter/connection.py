"""One vCenter session through pyvmomi: TLS policy, re-login, keep-alive, calls off the loop.

Contract:
- Certificates are verified by default (system CAs or ``ca_file``); ``thumbprint`` pins the
  server certificate instead; ``insecure`` (labs) turns verification off and must be explicit.
- The password is read when logging in and never logged or kept in messages.
- ``run`` (blocking) retries a call once after logging in again when vCenter says the session is
  gone (``NotAuthenticated``: idle expiry, a restart, an administrator terminating it); calls
  that lose the same session together log in again once, not once each.
- ``call`` runs ``run`` on a worker thread under a timeout; the socket timeout is the same, so a
  hung vCenter frees the thread too. Nothing here blocks the event loop.
- ``wait_task`` polls ``info.state`` through the PropertyCollector (never ``task.info`` whole: a
  task on a snapshot names it as ``entity``, which pyvmomi refuses to deserialize) and raises
  :class:`TaskFailed` with vCenter's fault message.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from scanner.errors import ScannerError, Unavailable
from scanner.vcenter.settings import VCenterSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


class VCenterError(ScannerError):
    """vCenter refused or failed a call; ``transient`` says whether retrying may help."""

    code = "UNAVAILABLE"

    def __init__(self, message: str, transient: bool = True, not_found: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.not_found = not_found


class TaskFailed(VCenterError):
    """A vCenter task ended in ``error``; transient only when the object was busy (see ``BUSY_FAULTS``)."""

    def __init__(self, what: str, message: str, transient: bool = False) -> None:
        super().__init__(f"{what}: task failed: {message}", transient=transient)


BUSY_FAULTS = ("TaskInProgress", "ConcurrentAccess", "HostCommunication", "Timedout")
"""Faults of a task that say "not now" (another task on the VM, a host briefly away): retried like outages."""


def pyvmomi() -> tuple[Any, Any]:
    """``(vim, vmodl)``, or Unavailable naming the package to install."""
    try:
        from pyVmomi import vim, vmodl
    except ImportError as e:
        raise Unavailable("unavailable: vCenter support needs pyvmomi (pip install pyvmomi)") from e
    return vim, vmodl


class Connection:
    def __init__(self, settings: VCenterSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.path = parts.path or "/sdk"
        self._si: Any = None
        self._login_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vcenter")
        self.logins = 0  # how many times a session was established (tests and metrics)
        self._session = 0  # which session ``_si`` holds: bumped at every login
        self.instance_uuid = ""

    # session

    def connect(self) -> Any:
        """Log in (blocking) unless already connected; returns the ServiceInstance."""
        return self._connect()[0]

    def _connect(self) -> tuple[Any, int]:
        """The ServiceInstance and the number of its session (see ``_relogin``)."""
        with self._login_lock:
            if self._si is None:
                self._si = self._login()
            return self._si, self._session

    def _login(self) -> Any:
        pyvmomi()
        from pyVim.connect import SmartConnect

        kwargs: dict[str, Any] = {
            "protocol": self.scheme,
            "host": self.host,
            "port": self.port,
            "path": self.path,
            "user": self.settings.user,
            "pwd": self.settings.secret(),
            "httpConnectionTimeout": self.settings.call_timeout,
        }
        if self.scheme == "https":
            if self.settings.thumbprint:
                kwargs["thumbprint"] = normalize_thumbprint(self.settings.thumbprint)
                kwargs["disableSslCertValidation"] = True
            elif self.settings.insecure:
                kwargs["disableSslCertValidation"] = True
            else:
                kwargs["sslContext"] = self.ssl_context()
        try:
            si = SmartConnect(**kwargs)  # type: ignore[no-untyped-call]
        except Exception as e:
            raise classify(e, f"login to {self.host}:{self.port} as {self.settings.user}") from e
        self.logins += 1
        self._session += 1
        self.instance_uuid = str(si.content.about.instanceUuid)
        log.info("vCenter session established with %s (%s)", self.host, si.content.about.fullName)
        return si

    def _relogin(self, stale: Any, session: int) -> Any:
        """Log in again after session number ``session`` was lost, unless another call already
        did (the stub is reused by a re-login, so only the session number tells): calls that
        lose one session together log in once."""
        with self._login_lock:
            if self._si is not None and self._session != session:
                return self._si
            log.warning("vCenter session lost; logging in again")
            try:
                stale.content.sessionManager.Login(self.settings.user, self.settings.secret())
                self.logins += 1
                self._session += 1
            except Exception:  # the stub itself is unusable (e.g. vCenter restarted): start over
                self._si = self._login()
                return self._si
            self._si = stale
            return self._si

    def close(self) -> None:
        with self._login_lock:
            si, self._si = self._si, None
        if si is not None:
            try:
                si.content.sessionManager.Logout()
            except Exception:  # best effort: the session expires on its own
                log.debug("logout failed", exc_info=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # calls

    def run(self, fn: Callable[[Any], T], what: str) -> T:
        """``fn(service_instance)`` with one re-login on NotAuthenticated; errors become VCenterError."""
        vim, _ = pyvmomi()
        si, session = self._connect()
        try:
            return fn(si)
        except vim.fault.NotAuthenticated:
            si = self._relogin(si, session)
        except VCenterError:
            raise
        except Exception as e:
            raise classify(e, what) from e
        try:
            return fn(si)
        except VCenterError:
            raise
        except Exception as e:
            raise classify(e, what) from e

    async def call(self, fn: Callable[[Any], T], what: str, timeout: float | None = None) -> T:
        """``run`` on a worker thread, bounded by ``timeout`` (default ``call_timeout``)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self.run, fn, what)
        try:
            return await asyncio.wait_for(future, timeout or self.settings.call_timeout)
        except TimeoutError:
            raise VCenterError(
                f"{what}: no answer from vCenter within {timeout or self.settings.call_timeout} s"
            ) from None

    def keepalive(self) -> None:
        """A cheap call that keeps the session alive (and re-logs in when it expired)."""
        self.run(lambda si: si.CurrentTime(), "keep-alive")

    def invalidate_session(self) -> None:
        """Log the current session out behind our back (tests: an expired or terminated session)."""
        si = self.connect()
        si.content.sessionManager.Logout()

    def wait_task(self, si: Any, task: Any, what: str, timeout: float | None = None) -> Any:
        """Block until ``task`` succeeds (returns ``info.result``) or fails (TaskFailed)."""
        vim, vmodl = pyvmomi()
        pc = si.content.propertyCollector
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task)],
            propSet=[
                vmodl.query.PropertyCollector.PropertySpec(
                    type=vim.Task, pathSet=["info.state", "info.error", "info.result"]
                )
            ],
        )
        deadline = time.monotonic() + (timeout or self.settings.call_timeout * 4)
        delay = 0.05
        while True:
            props = {p.name: p.val for obj in pc.RetrieveContents([spec]) for p in obj.propSet}
            state = props.get("info.state")
            if state == "success":
                return props.get("info.result")
            if state == "error":
                error = props.get("info.error")
                busy = any(
                    isinstance(error, cls)
                    for name in BUSY_FAULTS
                    for cls in (getattr(vim.fault, name, None), getattr(vmodl.fault, name, None))
                    if cls is not None
                )
                detail = getattr(error, "msg", "") or ""
                raise TaskFailed(what, f"{type(error).__name__}: {detail}" if detail else type(error).__name__, busy)
            if time.monotonic() > deadline:
                raise VCenterError(f"{what}: task still {state} after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    # HTTP (datastore files, REST)

    def ssl_context(self) -> ssl.SSLContext:
        if self.settings.insecure or self.settings.thumbprint:
            return ssl._create_unverified_context()  # noqa: S323 - pinned below, or explicitly insecure
        return ssl.create_default_context(cafile=self.settings.ca_file or None)

    def http(self, timeout: float) -> http.client.HTTPConnection:
        """A connection to vCenter's HTTP endpoint with the configured TLS policy (pin checked)."""
        if self.scheme == "http":
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_context())
        if self.settings.thumbprint:
            conn.connect()
            assert isinstance(conn.sock, ssl.SSLSocket)
            check_thumbprint(conn.sock.getpeercert(binary_form=True) or b"", self.settings.thumbprint)
        return conn

    def cookie(self) -> str:
        si = self.connect()
        return str(si._stub.cookie)


def normalize_thumbprint(value: str) -> str:
    digits = value.replace(":", "").replace(" ", "").lower()
    if len(digits) not in (40, 64, 128) or any(c not in "0123456789abcdef" for c in digits):
        raise VCenterError("vcenter.thumbprint: expected a SHA-1, SHA-256 or SHA-512 hex digest", transient=False)
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2)).upper()


def check_thumbprint(der: bytes, expected: str) -> None:
    digits = normalize_thumbprint(expected).replace(":", "").lower()
    algo = {40: "sha1", 64: "sha256", 128: "sha512"}[len(digits)]
    if hashlib.new(algo, der).hexdigest() != digits:
        raise VCenterError("vCenter certificate does not match vcenter.thumbprint", transient=False)


def classify(e: BaseException, what: str) -> VCenterError:  # noqa: PLR0911 - one return per fault family
    """A VCenterError saying what failed; ``not_found`` for a deleted object, ``transient`` for outages."""
    try:
        vim, vmodl = pyvmomi()
    except Unavailable:
        return VCenterError(f"{what}: {e}", transient=False)
    if isinstance(e, VCenterError):
        return e
    if isinstance(e, vmodl.fault.ManagedObjectNotFound):
        return VCenterError(f"{what}: the object no longer exists in vCenter", transient=False, not_found=True)
    if isinstance(e, vim.fault.InvalidLogin):
        return VCenterError(f"{what}: vCenter refused the credentials", transient=False)
    if isinstance(e, (OSError, socket.timeout, http.client.HTTPException, ConnectionError)):
        return VCenterError(f"{what}: vCenter unreachable: {type(e).__name__}: {e}")
    if isinstance(e, vmodl.MethodFault):
        return VCenterError(f"{what}: {type(e).__name__}: {getattr(e, 'msg', '') or e}", transient=False)
    return VCenterError(f"{what}: {type(e).__name__}: {e}")
