"""Huge pages for a test: reserved in the kernel's pool and a hugetlbfs mounted in a temporary
directory, both undone afterwards (tests run as root).

2 MiB pages need contiguous host memory, so memory is compacted first; a kernel that still
cannot reserve them fails the test with the counts (this is not missing hardware: every x86-64
kernel with hugetlbfs has 2 MiB pages).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

MiB = 1 << 20
HUGE = 2 * MiB
NR = Path("/proc/sys/vm/nr_hugepages")
SLACK = 160  # pages for processes that start meanwhile and take free huge pages


def meminfo(field: str) -> int:
    """``HugePages_<field>`` of ``/proc/meminfo`` (Total, Free, Rsvd, Surp)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"HugePages_{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no HugePages_{field} in /proc/meminfo")


def free_pages() -> int:
    """Pages of the pool no process holds (a reservation QEMU made at mmap time still counts as
    free until a page is allocated)."""
    return meminfo("Free")


def available() -> int:
    """Pages a new mapping can still reserve: free and not reserved by someone else."""
    return meminfo("Free") - meminfo("Rsvd")


@contextlib.contextmanager
def hugetlbfs(pages: int) -> Iterator[Path]:
    """``pages`` more 2 MiB pages in the pool and a hugetlbfs mounted on the directory yielded;
    the pool goes back to its old size and the mount is removed (lazily: it goes once the last
    user, such as a QEMU being stopped, closes its file)."""
    Path("/proc/sys/vm/compact_memory").write_text("1")
    before = int(NR.read_text())
    # the pool is the host's: other processes hold or reserve pages of it, and take free ones
    # as they start (PostgreSQL maps its shared memory on huge pages whenever there are some:
    # about 72 for a test cluster), so grow it past what they use, with room for a few more
    in_use = meminfo("Total") - available()
    NR.write_text(str(max(before, in_use + pages + SLACK)))
    mnt = Path(tempfile.mkdtemp(prefix="avscan-hugetlbfs-"))
    try:
        got = available()
        assert got >= pages, f"the kernel reserved {got} of {pages} huge pages of {HUGE} bytes"
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", f"pagesize={HUGE}", "avscan-test", str(mnt)], check=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", "--lazy", str(mnt)], check=True)
    finally:
        NR.write_text(str(before))
        mnt.rmdir()
