"""``python -m scanner.lab.kernel_layouts [PACKAGE ...]``: which Debian kernel builds share a walker layout.

For each kernel package (default: every ``linux-image-6.1.0-*`` build of a lab flavour apt offers),
the package is fetched into the lab cache like the lab's own kernel, the BTF is read from its
``vmlinuz`` (as ``--kernel`` does) and the walkers' :class:`~scanner.guestos.linux.layout.Layout`
derived from it. Builds are then grouped by identical layout: the kernel matrix
(``tests/guestos/test_kernel_matrix_lab.py``) needs one build of each group. No guest is booted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from scanner.errors import ScannerError
from scanner.guestos.btf import parse_btf
from scanner.guestos.linux.kernel_image import btf_from_image
from scanner.guestos.linux.layout import Layout, layout_from_btf
from scanner.lab import debs
from scanner.lab.errors import LabError
from scanner.lab.image import cache_dir


def offered() -> list[str]:
    """Every versioned 6.1 kernel package of a lab flavour in apt's lists, sorted."""
    argv = ["apt-cache", "pkgnames", "linux-image-6.1.0-"]
    listed = subprocess.run(argv, capture_output=True, text=True, check=False).stdout.split()
    return sorted(p for p in listed if debs.KERNEL_PACKAGE_RE.match(p))


def package_layout(package: str, cache: Path | None = None) -> Layout:
    """The walker layout of ``package``'s kernel, from the BTF in its ``vmlinuz``."""
    ref = debs._show(package)
    if ref is None:
        raise LabError(f"apt does not know {package}")
    deb = debs.download(ref, (cache or cache_dir()) / "debs")
    with tempfile.TemporaryDirectory() as tmp:
        vmlinuz = Path(tmp) / "vmlinuz"
        debs.extract_member(deb, "./boot/vmlinuz-*", vmlinuz)
        blob, _ = btf_from_image(vmlinuz)
    return layout_from_btf(parse_btf(blob))


def group(layouts: Mapping[str, Layout]) -> list[list[str]]:
    """Package names grouped by identical layout (offsets, array lengths and struct sizes), in
    the order each layout is first met; names keep their order within a group."""
    groups: dict[str, list[str]] = {}
    for name, layout in layouts.items():
        groups.setdefault(json.dumps(layout.to_json(), sort_keys=True), []).append(name)
    return list(groups.values())


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scanner.lab.kernel_layouts", description=__doc__)
    parser.add_argument("packages", nargs="*", help="linux-image-<version>-<flavour> packages (default: all)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    packages = args.packages or offered()
    try:
        layouts = {p: package_layout(p) for p in packages}
    except ScannerError as e:
        print(f"kernel_layouts: {e}", file=sys.stderr)
        return 2
    groups = group(layouts)
    print(f"{len(packages)} builds, {len(groups)} distinct walker layouts")
    for names in groups:
        print("  " + " ".join(n.removeprefix("linux-image-") for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
