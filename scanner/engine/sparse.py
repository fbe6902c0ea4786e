"""Zero-block skipping for memory units: only blocks holding non-zero bytes go to YARA.

Guest RAM is mostly zero (79% of a booted 512 MiB lab guest, in 1 MiB blocks). The planner maps
the unit once in 16 MiB pieces and tests each ``BLOCK``-aligned block in place (the native core,
no copy, on the engine's threads: ``blockmap``). Windows cover the runs of non-zero blocks, each
run widened by ``overlap`` into the zero blocks on both sides so a string that starts or ends
next to a zero block is still seen whole (``windows.aligned_windows``); each byte has one owner.

What is lost: a match lying wholly inside a skipped block, i.e. a string of only zero bytes, or a
condition-only rule about zero memory. The skipped bytes are reported as ``bytes_zero`` in
coverage, never as a gap. A block that cannot be read is kept, so the scan reports it as unreadable.
Blocks inside holes the source reports (``Unit.holes``: a sparse RAM file's never-written pages)
are zero without being read, so scanning an idle guest does not allocate its holes on tmpfs.
"""

from __future__ import annotations

BLOCK = 1024 * 1024
"""Zero blocks are this big, aligned to unit offsets."""
