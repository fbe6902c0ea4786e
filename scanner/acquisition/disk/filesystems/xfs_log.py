"""Whether an XFS log holds changes not yet in place (the log is not replayed here).

An XFS unmounted cleanly ends its log with an unmount record; one frozen under a running guest
(or crashed) does not, and metadata the guest already committed may be only in the log. Until
the log is replayed here, such a volume is read as it lies and the gap says why.

Contract: :func:`log_problem` reads the internal log (``sb_logstart``, ``sb_logblocks``), finds
the newest record header (highest LSN; headers start sectors with ``0xFEEDBABE``, data sectors
cannot since their first word is swapped for the cycle number) and returns ``""`` when that
record is an unmount record, else a reason. A log it cannot read or an external log is a reason too.
"""

from __future__ import annotations

import struct
from typing import Any

LOG_MAGIC = b"\xfe\xed\xba\xbe"
SECTOR = 512
HEADER = struct.Struct(">4sIIIQ")  # magic, cycle, version, len, lsn
NUM_LOGOPS = 40
H_SIZE = 320
CYCLE_SIZE = 32768  # data per header sector of cycle words
OP_FLAGS = 9  # in the op header: tid 4, len 4, clientid 1, flags 1
UNMOUNT_TRANS = 0x20  # XLOG_UNMOUNT_TRANS
MAX_LOG = 2 << 30


def log_problem(fs: Any) -> str:
    sb = fs.sb
    if not int(sb.sb_logstart):
        return "XFS log is on another device: whether it holds changes not yet in place is unknown"
    block_size = int(fs.block_size)
    size = int(sb.sb_logblocks) * block_size
    if not 0 < size <= MAX_LOG:
        return f"XFS log of {sb.sb_logblocks} blocks: not read"
    start = _byte(sb, int(sb.sb_logstart), block_size)
    fs.fh.seek(start)
    log = bytes(fs.fh.read(size))
    if len(log) != size:
        return "XFS log is unreadable: whether it holds changes not yet in place is unknown"
    newest = _newest_header(log)
    if newest is None:
        return "XFS log has no record: whether it holds changes not yet in place is unknown"
    if _is_unmount(log, newest):
        return ""
    return "XFS log holds changes not yet in place (not replayed here): files written last may be missing"


def _byte(sb: Any, fsblock: int, block_size: int) -> int:
    agblklog = int(sb.sb_agblklog)
    agno, agbno = fsblock >> agblklog, fsblock & ((1 << agblklog) - 1)
    return (agno * int(sb.sb_agblocks) + agbno) * block_size


def _newest_header(log: bytes) -> int | None:
    best: tuple[int, int] | None = None
    at = log.find(LOG_MAGIC)
    while at >= 0:
        if at % SECTOR == 0 and at + HEADER.size <= len(log):
            lsn = HEADER.unpack_from(log, at)[4]
            if best is None or lsn > best[0]:
                best = (lsn, at)
        at = log.find(LOG_MAGIC, at + 1)
    return None if best is None else best[1]


def _is_unmount(log: bytes, at: int) -> bool:
    """A record of one op whose op header carries the unmount flag."""
    if at + H_SIZE + 4 > len(log) or struct.unpack_from(">I", log, at + NUM_LOGOPS)[0] != 1:
        return False
    version = HEADER.unpack_from(log, at)[2]
    h_size = struct.unpack_from(">I", log, at + H_SIZE)[0] if version >= 2 else CYCLE_SIZE
    header_sectors = max(1, -(-h_size // CYCLE_SIZE))
    data = at + header_sectors * SECTOR
    return data + OP_FLAGS < len(log) and bool(log[data + OP_FLAGS] & UNMOUNT_TRANS)
