"""Kernel payloads as the kernel build writes them: a compressed stream, then the vmlinux size.

``size_append`` (scripts/Makefile.lib) puts the 4-byte little-endian size after xz, LZMA and
bzip2 payloads; Debian's generic and rt kernels are xz. The streams here are made by the ``xz``,
``lzma`` and ``bzip2`` tools, not by Python.
"""

from __future__ import annotations

import struct
import subprocess

import pytest

from scanner.guestos.btf import BtfError
from scanner.guestos.linux.kernel_image import decompress

VMLINUX = b"\x7fELF" + bytes(range(256)) * 4096  # 1 MiB and a bit, compressible


def _tool(argv: list[str], data: bytes) -> bytes:
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize(
    "argv",
    [["xz", "--check=crc32", "-c"], ["lzma", "-c"], ["bzip2", "-c"]],
    ids=["xz", "lzma", "bzip2"],
)
def test_a_payload_with_the_kernels_size_trailer_decompresses(argv: list[str]) -> None:
    stream = _tool(argv, VMLINUX)
    assert decompress(stream + struct.pack("<I", len(VMLINUX))) == VMLINUX
    assert decompress(stream) == VMLINUX


@pytest.mark.parametrize("argv", [["xz", "--check=crc32", "-c"], ["bzip2", "-c"]], ids=["xz", "bzip2"])
def test_a_cut_stream_is_an_error_that_says_so(argv: list[str]) -> None:
    stream = _tool(argv, VMLINUX)
    with pytest.raises(BtfError, match="does not decompress"):
        decompress(stream[: len(stream) // 2])
