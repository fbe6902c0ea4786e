"""Open a Linux guest's memory as a :class:`LinuxKernel`: profile, KASLR, then a verified task list.

:func:`open_linux` returns the kernel view, or None with the reason (no banner, no profile, no
``init_task``, a task list that is not sane); the caller falls back to a physical scan and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scanner.acquisition.memory import MemorySource
from scanner.guestos.linux.kaslr import find_anchor
from scanner.guestos.linux.kernel import LinuxKernel
from scanner.guestos.linux.profile import Profile, load_profile
from scanner.guestos.problems import Limits

MIN_TASKS = 2


@dataclass(frozen=True)
class Detection:
    kernel: LinuxKernel | None
    profile: Profile | None
    banner: str
    reason: str  # why there is no kernel view ("" when there is)


def open_linux(
    source: MemorySource,
    kernel_image: Path | None = None,
    profile_cache: Path | None = None,
    limits: Limits | None = None,
) -> Detection:
    profile, found, why = load_profile(source, kernel_image, profile_cache)
    if profile is None:
        return Detection(None, None, found.banner, why)
    anchor, rejected = find_anchor(source, profile.layout, found.swappers)
    if anchor is None:
        return Detection(None, profile, profile.banner, "init_task not found: " + "; ".join(rejected[:3]))
    view = LinuxKernel(source, profile.banner, profile.layout, anchor, limits or Limits())
    listing = view.processes()
    pids = [p.pid for p in listing.processes]
    if len(pids) < MIN_TASKS or pids[0] != 0 or 1 not in pids:
        reason = "; ".join(str(p) for p in listing.problems[:3]) or f"pids {pids[:8]}"
        return Detection(None, profile, profile.banner, f"task list from init_task is not sane: {reason}")
    return Detection(view, profile, profile.banner, "")
