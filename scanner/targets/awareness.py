"""How guest memory is cut into units: by OS awareness mode.

- ``auto`` (default): every byte of RAM is scanned physically (nothing a process does not map is
  missed), and when a Linux kernel is found in the memory each finding is attributed to the
  process(es) that map it: pid, process, region, virtual address (``scanner.guestos`` reverse
  map). Then the *page seams* of every process are scanned (``scanner.targets.seams``): a string
  that crosses a virtual page boundary whose two pages are far apart in RAM is found there,
  attributed to every process that maps it at its virtual address. A process whose memory could
  not be walked, or seams past the cap, are gaps; memory with no Linux kernel found has no
  processes to walk (``details()["seams"]`` says why nothing was).
- ``processes``: one unit per process region (VMA) plus kernel memory, as Volatility's
  ``vmayarascan`` does, so rules that need several strings in one region work; falls back to a
  physical scan, saying why, when no Linux kernel is found.
- ``physical``: the plain physical scan.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from scanner.acquisition.memory import MemorySource
from scanner.errors import InvalidArgument
from scanner.targets.base import Skipped, Target, Unit
from scanner.targets.memory import MemoryTarget, PhysicalRangeUnit, memory_identity

MODES = ("auto", "processes", "physical")
MAX_ATTRIBUTED = 16  # owners listed per finding (shared pages can have many)
MAX_PROBLEMS_SHOWN = 8  # unwalkable processes named in a finding or the verdict details


def memory_view(source: MemorySource, params: Mapping[str, Any], profile_cache: Path | None) -> Target:
    """The target over ``source`` for the ``os`` mode and optional ``kernel`` image in ``params``."""
    mode = str(params.get("os") or "auto")
    if mode not in MODES:
        source.close()
        raise InvalidArgument("target.os", f"must be one of {', '.join(MODES)}")
    kernel = Path(str(params["kernel"])) if params.get("kernel") else None
    if kernel is not None and not kernel.is_file():
        source.close()
        raise InvalidArgument("target.kernel", f"{kernel}: no such kernel image")
    if mode == "physical":
        return MemoryTarget(source)
    if mode == "processes":
        from scanner.targets.processes import ProcessTarget

        return ProcessTarget(source, kernel, profile_cache)
    return AttributedMemoryTarget(source, kernel, profile_cache)


class _Attribution:
    """Opens the guest's Linux kernel view once and maps addresses to owners. The view is opened
    in the background as soon as a window matched (:meth:`start`), while the scan goes on, or else
    at the first finding; :meth:`wait` ends the background work (before the source is closed)."""

    def __init__(self, source: MemorySource, kernel: Path | None, profile_cache: Path | None) -> None:
        self.source, self.kernel_image, self.profile_cache = source, kernel, profile_cache
        self._lock = threading.RLock()  # also held by the seam walk (same view, another thread)
        self._opened = False
        self._view: Any = None
        self.details: dict[str, str] = {}
        self.counts: dict[str, int] = {}  # processes.listed / walked / failed of the last reverse map
        self._regions: Any = None  # KernelRegions, built on the first finding no process owns
        self.walked: Any = None  # the seam walk's SeamMap, when it ran: its mappings answer owners()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None  # of the background open, raised at the first finding

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def kernel(self) -> Any:
        """The guest's Linux kernel view (opened on the first call), or None (``details["os"]`` says why)."""
        with self._lock:
            if not self._opened:
                self._open()
            if self._failure is not None:  # the background open failed: as if this call had opened it
                raise self._failure
            return self._view

    def start(self) -> None:
        """Open the kernel view on a background thread, unless it is opened or being opened."""
        if self._thread is None and not self._opened:
            thread = threading.Thread(target=self._open_in_background, name="attribution", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: the first finding opens it, as before
                return
            self._thread = thread

    def wait(self) -> None:
        """Until the background open (if any) has ended."""
        if self._thread is not None:
            self._thread.join()

    def _open_in_background(self) -> None:
        with self._lock:
            if self._opened:
                return
            try:
                self._open()
            except BaseException as e:  # given to the first finding, as if it had opened the view
                self._failure = e

    def owners(self, addresses: Sequence[int]) -> Mapping[str, str]:
        """Finding context naming the processes that map ``addresses``; when none can be named, or
        some processes could not be walked, ``attribution`` says so and why."""
        with self._lock:
            if not self._opened:
                self._open()
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._view is None:
                return {"attribution": f"none ({self.details.get('os', 'no Linux kernel found')})"}
            from scanner.guestos.linux.reverse import reverse_map
            from scanner.guestos.linux.seams import reverse_from

            walked = self.walked
            if walked is not None and walked.mappings is not None:  # the seam walk saw every mapping
                found = reverse_from(walked, addresses)
            else:
                found = reverse_map(self._view, addresses)
            self.counts = found.accounting()
            if found.failed:
                self.details["os.problems"] = _problems_text(found.failed)
            per_pid: dict[int, Any] = {}
            for address in addresses:  # first mapping of each owning process, in address order
                for owner in found.owners.get(address, []):
                    per_pid.setdefault(owner.pid, owner)
            kernel = {} if per_pid else self._kernel_owner(addresses)
        unwalked = f"{len(found.failed)} process(es) could not be walked: {_problems_text(found.failed)}"
        if not per_pid and found.failed:
            nobody = "no process that could be walked maps these addresses"
            return {"owner": nobody, **kernel, "attribution": f"none ({unwalked})"}
        if not per_pid:
            return {"owner": "no process maps these addresses", **kernel}
        shown = list(per_pid.values())[:MAX_ATTRIBUTED]
        context = {
            "pid": ",".join(str(o.pid) for o in shown),
            "process": ",".join(o.process for o in shown),
            "virtual_address": ",".join(f"{o.virtual:#x}" for o in shown),
            "region": " | ".join(o.region for o in shown),
        }
        if found.failed:
            context["attribution"] = f"partial ({unwalked})"
        return context

    def _kernel_owner(self, addresses: Sequence[int]) -> Mapping[str, str]:
        """``kernel_region`` (a module, or the kernel image) for the first address the kernel maps,
        else ``kernel_region: none`` (page cache or free memory). Called under the lock."""
        if self._regions is None:
            from scanner.guestos.linux.modules import modules
            from scanner.guestos.linux.regions import kernel_regions

            self._regions = kernel_regions(self._view, modules(self._view)[0], with_physical=True)
        for address in addresses:
            virtual = self._regions.virtual_of(address)
            if virtual is not None:
                return {"kernel_region": self._regions.name(virtual), "virtual_address": f"{virtual:#x}"}
        return {"kernel_region": "none (not kernel image or module memory: page cache or free memory)"}

    def _open(self) -> None:
        from scanner.guestos.linux.detect import open_linux

        self._opened = True
        detection = open_linux(self.source, self.kernel_image, self.profile_cache)
        self._view = detection.kernel
        if detection.kernel is None:
            self.details["os"] = detection.reason or "no Linux kernel found"
        else:
            self.details.update({"os": "linux", "os.banner": detection.banner})


class AttributedUnit(PhysicalRangeUnit):
    def __init__(self, source: MemorySource, start: int, length: int, attribution: _Attribution) -> None:
        super().__init__(source, start, length)
        self._attribution = attribution

    def attribute(self, offsets: Sequence[int]) -> Mapping[str, str]:
        return self._attribution.owners([self.base + o for o in offsets])

    def matched(self) -> None:
        self._attribution.start()


class AttributedMemoryTarget(MemoryTarget):
    """Physical scan of all RAM, then the page seams of every process; findings attributed to
    processes when the guest is Linux. ``seams`` False leaves the seams out (a baseline to measure
    their cost against); ``seam_context`` and ``max_seams`` are the bounds of
    :mod:`scanner.targets.seams` (defaults there)."""

    def __init__(
        self,
        source: MemorySource,
        kernel: Path | None = None,
        profile_cache: Path | None = None,
        *,
        seams: bool = True,
        seam_context: int | None = None,
        max_seams: int | None = None,
    ) -> None:
        super().__init__(source)
        self._attribution = _Attribution(source, kernel, profile_cache)
        self._seams, self._seam_context, self._max_seams = seams, seam_context, max_seams
        self._seam_counts: dict[str, int] = {}
        self._seam_details: dict[str, str] = {}

    def plan(self) -> Iterator[Unit | Skipped]:
        for item in super().plan():
            if isinstance(item, PhysicalRangeUnit):
                yield AttributedUnit(self.source, item.base, item.size, self._attribution)
            else:
                yield item

    def deferred_plan(self) -> Iterator[Unit | Skipped]:
        """The page seams: the process walk runs while the physical units are scanned."""
        if self._seams:
            yield from self._seam_plan()

    def _seam_plan(self) -> Iterator[Unit | Skipped]:
        from scanner.guestos.linux.seams import find_seams
        from scanner.targets.seams import SEAM_CONTEXT, max_seams_for, seam_units

        with self._attribution.lock:  # findings made meanwhile wait for the walk, not walk beside it
            view = self._attribution.kernel()
            if view is None:
                reason = self._attribution.details.get("os", "no Linux kernel found")
                self._seam_details["seams"] = f"none scanned: no processes to walk ({reason})"
                return
            found = find_seams(view, self._max_seams or max_seams_for(self.source))
            self._attribution.walked = found
        self._seam_counts = {**found.accounting(), "processes.seams": len(found.seams)}
        if found.over_cap:
            self._seam_counts["processes.seams_over_cap"] = found.over_cap
        mapped = sum(s.mapped for s in found.seams.values())
        self._seam_details["seams"] = f"{len(found.seams)} distinct page seams ({mapped} mappings) scanned"
        units = list(seam_units(self.source, found, self._seam_context or SEAM_CONTEXT))
        # Seam bytes are RAM already counted once by the physical scan, read again across the seam.
        self._seam_counts["processes.seam_bytes"] = sum(u.size for u in units if isinstance(u, Unit))
        yield from units

    def details(self) -> Mapping[str, str]:
        mode = "physical+attribution" + ("+seams" if self._seams else "")
        return {**super().details(), "mode": mode, **self._attribution.details, **self._seam_details}

    def finish(self) -> None:
        """The background kernel open (if a window matched) has ended: the source may be closed."""
        self._attribution.wait()

    def close(self) -> None:
        self._attribution.wait()
        super().close()

    def accounting(self) -> Mapping[str, int]:
        """The process walk's ``processes.*`` counts (listed, walked, failed; from the seam walk, or
        the reverse map's when something needed attributing) and ``processes.seams``: distinct page
        seams offered for scanning (``processes.seams_over_cap``: mappings past the cap) and
        ``processes.seam_bytes``: the bytes of those seams, read again on top of the physical scan."""
        return {**self._seam_counts, **self._attribution.counts}

    def identity(self) -> bytes | None:
        kernel = self._attribution.kernel_image
        return memory_identity(type(self).__name__, self.source, *([str(kernel)] if kernel else []))


def _problems_text(problems: Sequence[Any]) -> str:
    shown = "; ".join(str(p) for p in problems[:MAX_PROBLEMS_SHOWN])
    more = len(problems) - MAX_PROBLEMS_SHOWN
    return shown + (f"; and {more} more" if more > 0 else "")
