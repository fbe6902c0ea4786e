"""A disk read in place over NBD, through libnbd (Debian ``libnbd0``, bound with ctypes).

The stream reads only what its reader asks for: a filesystem walk over an export fetches the
metadata and the files it scans, not the whole disk, and nothing is copied to the appliance.

Contract: :class:`NbdDisk` is a read-only, seekable stream of exactly the export's size. A read
past the end raises :class:`~scanner.acquisition.disk.errors.TruncatedImage`; a read the server
refuses or a connection that broke raises :class:`NbdError` (an ``OSError``: the file being read
becomes a gap, never zeros). :attr:`NbdDisk.bytes_read` counts what was fetched from the export.
Reads are split at :data:`MAX_REQUEST` (NBD servers refuse larger requests); libnbd serialises
requests on one handle, so threads may share a stream.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from scanner.acquisition.disk.errors import TruncatedImage
from scanner.acquisition.disk.image import ReadOnlyStream
from scanner.errors import Unavailable

MAX_REQUEST = 4 << 20  # QEMU's NBD server accepts up to 32 MiB; smaller keeps latency even


class NbdError(OSError):
    """libnbd could not connect or read; carries libnbd's own message."""


_lib: list[Any] = []  # libnbd, loaded once
_lib_lock = threading.Lock()


def _libnbd() -> Any:
    with _lib_lock:
        if not _lib:
            try:
                lib = ctypes.CDLL("libnbd.so.0")
            except OSError as e:
                raise Unavailable("nbd: unavailable: install libnbd0 (apt-get install libnbd0)") from e
            lib.nbd_create.restype = ctypes.c_void_p
            lib.nbd_create.argtypes = []
            lib.nbd_connect_uri.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nbd_get_size.restype = ctypes.c_int64
            lib.nbd_get_size.argtypes = [ctypes.c_void_p]
            lib.nbd_pread.argtypes = [
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_uint32
            ]
            lib.nbd_close.restype = None
            lib.nbd_close.argtypes = [ctypes.c_void_p]
            lib.nbd_get_error.restype = ctypes.c_char_p
            lib.nbd_get_error.argtypes = []
            _lib.append(lib)
        return _lib[0]


def _error(lib: Any, what: str) -> NbdError:
    message = lib.nbd_get_error()
    return NbdError(f"nbd {what}: {(message or b'failed').decode(errors='replace')}")


class NbdDisk(ReadOnlyStream):
    """The export at ``uri`` (e.g. ``nbd+unix:///vda?socket=/run/x.sock``) as a read-only stream."""

    def __init__(self, uri: str) -> None:
        super().__init__()
        self.uri = uri
        self.bytes_read = 0
        self._lib = _libnbd()
        self._pos = 0
        self._lock = threading.Lock()
        self._h = self._lib.nbd_create()
        if not self._h:
            raise _error(self._lib, "create")
        try:
            if self._lib.nbd_connect_uri(self._h, uri.encode()) == -1:
                raise _error(self._lib, f"connect {uri}")
            size = int(self._lib.nbd_get_size(self._h))
            if size < 0:
                raise _error(self._lib, "size")
        except BaseException:
            self._lib.nbd_close(self._h)
            self._h = None
            raise
        self.size = size

    def where(self) -> str:
        return self.uri

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        buf = bytearray(size)
        self.readinto(buf)
        return bytes(buf)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        length = len(view)
        if length == 0:
            return 0
        if self._pos + length > self.size:
            raise TruncatedImage(
                f"{self.uri}: read of {length} bytes at {self._pos:#x} ends past the end of the export "
                f"({self.size} bytes)"
            )
        self.pread_into(view, self._pos)
        self._pos += length
        return length

    def pread_into(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` with the export's bytes at ``offset`` (inside the export)."""
        with self._lock:
            if self._h is None:
                raise NbdError(f"{self.uri}: closed")
            done = 0
            while done < len(view):
                n = min(MAX_REQUEST, len(view) - done)
                target = (ctypes.c_char * n).from_buffer(view[done : done + n])
                try:
                    if self._lib.nbd_pread(self._h, ctypes.addressof(target), n, offset + done, 0) == -1:
                        raise _error(self._lib, f"read of {n} bytes at {offset + done:#x}")
                finally:
                    del target
                done += n
                self.bytes_read += n

    def close(self) -> None:
        with self._lock:
            if self._h is not None:
                self._lib.nbd_close(self._h)
                self._h = None
        super().close()
