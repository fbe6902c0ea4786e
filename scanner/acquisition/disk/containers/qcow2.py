"""qcow2 (v2/v3): backing chains, external data files, subclusters, zlib and zstd compression.

``dissect.hypervisor`` parses the header and tables; everything the image *names* is opened here,
confined (:meth:`Chain.open_ref`): the backing file (absolute, or relative to the overlay's
directory, as QEMU resolves it) through the container registry, so a qcow2 over a raw or qcow2
base works; the external data file (``data_file=``) the same way. A backing or data file that is
refused or missing is a gap (:meth:`Chain.absent`), never zeros.

Bounds: the L1 table must fit ``max_table_bytes``; the L2 cache holds at most ``max_table_bytes``
of tables. Runs are computed here one cluster at a time (:class:`BoundedStream`): dissect's run
counter reads an extended L2 entry's bitmap from the wrong word, which on a subcluster image
(``extended_l2=on``) gives runs of zero bytes and an endless loop that grew the scanner past 20 GB.
Encrypted images (AES, LUKS) cannot be read without their key: an error naming the encryption.
Internal snapshots (``qemu-img snapshot -c``) are not scanned: a gap says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache, lru_cache
from typing import Any, BinaryIO

from scanner.acquisition.disk.containers import Chain, open_container
from scanner.acquisition.disk.errors import CorruptData, DiskFormatError, ReferenceRefused, unavailable
from scanner.acquisition.disk.image import StrictFile

ENCRYPTION = {1: "AES", 2: "LUKS"}


def open_disk(image: StrictFile, chain: Chain) -> BinaryIO:
    try:
        from dissect.hypervisor.disk import qcow2  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise unavailable("dissect.hypervisor", e) from e
    _refuse_encrypted(image)
    try:
        disk = qcow2.QCow2(image, allow_no_backing_file=True, allow_no_data_file=True)
    except RuntimeError as e:  # raised when the zstd module is missing
        raise unavailable("backports.zstd (zstd-compressed qcow2)", ImportError(str(e))) from e
    l1_bytes = 8 * disk.header.l1_size
    if l1_bytes > chain.max_table_bytes:
        raise DiskFormatError(str(image.path), f"L1 table of {l1_bytes} bytes exceeds max_table_bytes")
    l2_bytes = disk.l2_size * disk._l2_entry_size
    disk.l2_table = lru_cache(max(1, min(128, chain.max_table_bytes // l2_bytes)))(lambda o: qcow2.L2Table(disk, o))
    if disk.needs_data_file:
        disk.data_file = _referenced(chain, image, disk.image_data_file or "", "data file", disk.size)
    if disk.needs_backing_file:
        disk.backing_file = _backing(chain, image, disk)
    if disk.header.nb_snapshots:
        count = disk.header.nb_snapshots
        chain.problems.append(f"{count} internal snapshot(s) in {image.path.name} not scanned: only the current state")
    return _stream_class()(disk)  # type: ignore[no-any-return]


def _refuse_encrypted(image: StrictFile) -> None:
    image.seek(32)
    method = int.from_bytes(image.read(4), "big")
    image.seek(0)
    if method:
        kind = ENCRYPTION.get(method, f"method {method}")
        raise DiskFormatError(str(image.path), f"encrypted qcow2 ({kind}): cannot be read without its key, not scanned")


def _referenced(chain: Chain, image: StrictFile, name: str, what: str, size: int) -> BinaryIO:
    try:
        return chain.open_ref(name, image.path.parent)  # type: ignore[return-value]
    except ReferenceRefused as e:
        return chain.absent(what, e, size)


def _backing(chain: Chain, image: StrictFile, disk: Any) -> BinaryIO:
    name = disk.auto_backing_file or ""
    try:
        handle = chain.open_ref(name, image.path.parent)
    except ReferenceRefused as e:
        return chain.absent("backing file", e, disk.size)
    fmt = (disk.backing_format or "auto").lower()
    stream, _ = open_container(handle, fmt if fmt in ("raw", "qcow2", "vmdk") else "auto", chain)
    return stream


@cache
def _stream_class() -> type:
    """dissect's qcow2 stream with runs computed here (see the module docstring); built on first use
    so that a missing dissect is ``unavailable``, not an ImportError at import."""
    from dissect.hypervisor.disk.qcow2 import QCow2Stream  # type: ignore[import-untyped,unused-ignore]

    class BoundedStream(QCow2Stream):  # type: ignore[misc]
        def _yield_runs(self, offset: int, length: int) -> Iterator[tuple[Any, int, int, int]]:
            return _runs(self.qcow2, self.l1_table, offset, length)

    return BoundedStream


def _runs(q: Any, l1_table: list[int], offset: int, length: int) -> Iterator[tuple[Any, int, int, int]]:
    """(type, guest offset, host offset, bytes) runs, never crossing a cluster, each > 0 bytes."""
    from dissect.hypervisor.disk import qcow2  # type: ignore[import-untyped,unused-ignore]

    while length > 0:
        l1_index = offset >> (q.l2_bits + q.cluster_bits)
        in_cluster = offset & (q.cluster_size - 1)
        l2_offset = l1_table[l1_index] & qcow2.c_qcow2.L1E_OFFSET_MASK if l1_index < len(l1_table) else 0
        if not l2_offset:
            sc_type, host, count = qcow2.QCow2SubclusterType.QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN, 0, q.cluster_size
            count -= in_cluster
        else:
            sc_type, host, count = _run(q, q.l2_table(l2_offset), offset, in_cluster)
        count = min(count, length)
        if count <= 0:
            raise CorruptData(f"qcow2: empty run at guest offset {offset:#x}: corrupt L2 entry")
        yield sc_type, offset, host, count
        offset += count
        length -= count


def _run(q: Any, table: Any, offset: int, in_cluster: int) -> tuple[Any, int, int]:
    """The run starting at ``offset`` inside its cluster: (type, host offset, bytes)."""
    from dissect.hypervisor.disk import qcow2  # type: ignore[import-untyped,unused-ignore]

    kinds = qcow2.QCow2SubclusterType
    index = (offset >> q.cluster_bits) & (q.l2_size - 1)
    entry, bitmap = table.entry(index), table.bitmap(index)
    sc_from = in_cluster >> q.subcluster_bits
    sc_type = qcow2.get_subcluster_type(q, entry, bitmap, sc_from)
    if sc_type == kinds.QCOW2_SUBCLUSTER_INVALID:
        raise CorruptData(f"qcow2: invalid subcluster bitmap for guest offset {offset:#x}")
    sc_count = _same_type_subclusters(q, sc_type, bitmap, sc_from)
    count = ((sc_from + sc_count) << q.subcluster_bits) - in_cluster
    host = 0
    if sc_type == kinds.QCOW2_SUBCLUSTER_COMPRESSED:
        host = entry & qcow2.c_qcow2.L2E_COMPRESSED_OFFSET_SIZE_MASK
    elif sc_type in qcow2.NORMAL_SUBCLUSTER_TYPES:
        host = (entry & qcow2.c_qcow2.L2E_OFFSET_MASK) + in_cluster
    return sc_type, host, count


def _same_type_subclusters(q: Any, sc_type: Any, bitmap: int, sc_from: int) -> int:
    """How many subclusters from ``sc_from`` share its type (QEMU's qcow2_get_subcluster_range_type:
    trailing *ones* of the allocation or zero bits, trailing zeros of both for unallocated)."""
    from dissect.hypervisor.disk import qcow2  # type: ignore[import-untyped,unused-ignore]

    kinds = qcow2.QCow2SubclusterType
    if not q.has_subclusters or sc_type == kinds.QCOW2_SUBCLUSTER_COMPRESSED:
        return int(q.subclusters_per_cluster) - sc_from
    below = (1 << sc_from) - 1
    if sc_type == kinds.QCOW2_SUBCLUSTER_NORMAL:
        return _trailing_zeros32(~(bitmap | below)) - sc_from
    if sc_type in qcow2.ZERO_SUBCLUSTER_TYPES:
        return _trailing_zeros32(~((bitmap >> 32) | below)) - sc_from
    return _trailing_zeros32(((bitmap >> 32) | bitmap) & ~below) - sc_from


def _trailing_zeros32(value: int) -> int:
    value &= 0xFFFFFFFF
    return 32 if value == 0 else (value & -value).bit_length() - 1
