"""Linux profiles from the running kernel's own memory (or its kernel image), cached by banner.

A profile is the kernel's banner, the :class:`~scanner.guestos.linux.layout.Layout` the walkers
need and the BTF blob it came from (kept for the Volatility ISF). Sources, in order: the cache
(``<cache>/<sha256(banner)[:16]>.json`` + ``.btf``), a kernel image given by the caller
(``--kernel``), the BTF blob found in guest memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scanner.acquisition.memory import MemorySource
from scanner.errors import UnreadableError
from scanner.guestos.btf import Btf, BtfError, parse_btf
from scanner.guestos.linux.layout import Layout, layout_from_btf
from scanner.guestos.linux.locate import Found, locate, read_physical

FORMAT = 2  # 2: layouts carry the maple nodes' parent and the task's exit fields


@dataclass(frozen=True)
class Profile:
    banner: str
    layout: Layout
    btf_blob: bytes
    origin: str  # "cache", "memory", "kernel image"

    @property
    def key(self) -> str:
        return profile_key(self.banner)

    def btf(self) -> Btf:
        return parse_btf(self.btf_blob)


def profile_key(banner: str) -> str:
    return hashlib.sha256(banner.encode()).hexdigest()[:16]


def load_profile(
    source: MemorySource, kernel: Path | None = None, cache: Path | None = None
) -> tuple[Profile | None, Found, str]:
    """The profile for the kernel running in ``source``; else None and why."""
    found = locate(source)
    banner = found.banner
    if cache is not None and banner:
        cached = _from_cache(cache, banner)
        if cached is not None:
            return cached, found, ""
    profile: Profile | None = None
    why = ""
    if kernel is not None:
        from scanner.guestos.linux.kernel_image import btf_from_image

        try:
            blob, image_banner = btf_from_image(kernel)
            if banner and image_banner and image_banner != banner:
                why = f"kernel image {kernel} is {image_banner!r}, memory runs {banner!r}"
            else:
                profile = Profile(banner or image_banner, layout_from_btf(parse_btf(blob)), blob, "kernel image")
        except BtfError as e:
            why = f"kernel image {kernel}: {e.message}"
    if profile is None and not why:
        profile, why = _from_memory(source, found)
    if profile is not None and cache is not None and profile.banner:
        _store(cache, profile)
    return profile, found, why


def _from_memory(source: MemorySource, found: Found) -> tuple[Profile | None, str]:
    if not found.banners:
        return None, "no Linux banner in memory"
    if not found.btfs:
        return None, f"profile missing for {found.banner}: no BTF in memory"
    errors: list[str] = []
    for address, length in found.btfs:
        try:
            blob = read_physical(source, address, length)
            return Profile(found.banner, layout_from_btf(parse_btf(blob)), blob, "memory"), ""
        except (BtfError, UnreadableError) as e:
            errors.append(f"{address:#x}: {e.message}")
    return None, f"profile missing for {found.banner}: " + "; ".join(errors[:3])


def _from_cache(cache: Path, banner: str) -> Profile | None:
    key = profile_key(banner)
    try:
        meta = json.loads((cache / f"{key}.json").read_text())
        blob = (cache / f"{key}.btf").read_bytes()
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT or meta.get("banner") != banner:
        return None
    if hashlib.sha256(blob).hexdigest() != meta.get("btf_sha256"):
        return None
    return Profile(banner, Layout.from_json(meta["layout"]), blob, "cache")


def _store(cache: Path, profile: Profile) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "banner": profile.banner,
        "btf_sha256": hashlib.sha256(profile.btf_blob).hexdigest(),
        "layout": profile.layout.to_json(),
    }
    _atomic(cache / f"{profile.key}.btf", profile.btf_blob)
    _atomic(cache / f"{profile.key}.json", json.dumps(meta, indent=1).encode())


def _atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
