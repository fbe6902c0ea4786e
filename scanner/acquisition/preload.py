"""Import the parser packages once, before any scan can race to import them.

Python's per-module import locks detect a cycle between two threads importing packages that
import each other (``dissect.hypervisor``'s disk formats do) and fail one of them with
``_DeadlockError``: the first qcow2 and VMDK scans started together on a fresh service failed.
The service imports them here at start, on one thread, under one lock; later imports are
dictionary lookups. A package that is not installed is skipped: its backend reports
"unavailable: install X" when used, as before.
"""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger(__name__)

PARSERS = (
    "dissect.hypervisor.disk.qcow2",
    "dissect.hypervisor.disk.vmdk",
    "dissect.hypervisor.disk.vhdx",
    "dissect.volume.disk",
    "dissect.volume.lvm",
    "dissect.extfs",
    "dissect.xfs",
    "dissect.fat",
)
_lock = threading.Lock()
_missing: dict[str, str] | None = None  # what the first call could not import


def preload(names: tuple[str, ...] = PARSERS) -> dict[str, str]:
    """Import ``names`` (and the backend registries' modules) once: the service calls it at start,
    a disk target before its first open (the CLI has no start-up). Returns those that could not
    be imported, with the reason."""
    global _missing  # noqa: PLW0603 - one import pass per process
    with _lock:
        if _missing is None:
            _missing = _import(names)
        return dict(_missing)


def _import(names: tuple[str, ...]) -> dict[str, str]:
    from scanner.acquisition.disk.containers import FORMATS
    from scanner.acquisition.disk.filesystems import FILESYSTEMS
    from scanner.acquisition.memory import REGISTRY

    modules = [*names, *FORMATS.values(), *FILESYSTEMS.values(), *(v.split(":")[0] for v in REGISTRY.values())]
    missing: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            missing[name] = str(e)
    if missing:
        log.info("parsers not available: %s", ", ".join(sorted(missing)))
    return missing
