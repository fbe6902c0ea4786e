"""The benign test marker the lab guest holds in memory, kept in halves.

The EICAR anti-malware test string is harmless by design, but the whole string is never written
into a source file or the guest image: it is joined only in memory (here, and by the guest's
marker processes). ``variant_tag`` is the extra string each guest process writes into its heap.
"""

from __future__ import annotations

EICAR_HALVES = (rb"X5O!P%@AP[4\PZX54(P^)7CC)7}", b"$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")


def eicar() -> bytes:
    """The 68-byte EICAR test string."""
    return EICAR_HALVES[0] + EICAR_HALVES[1]


def variant_tag(variant: str, role: str, index: int, pid: int) -> bytes:
    """What process ``pid`` of a guest booted with ``variant`` holds besides any marker."""
    return f"AVSCAN-LAB-VARIANT={variant};ROLE={role};INDEX={index};PID={pid};".encode()
