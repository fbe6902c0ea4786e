"""Benign samples and rule sources built at run time (nothing harmful is ever written to the repo)."""

from __future__ import annotations

from pathlib import Path

from scanner.config import DEFAULT_SIGNATURES

EICAR_RULE = "EICAR_Test_File"


def eicar() -> bytes:
    """The EICAR test string, assembled from two halves so no repo file holds it whole."""
    return ("X5O!P%@AP[4\\PZX54(P^)7CC)7}" + "$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*").encode()


def marker(name: str) -> bytes:
    """A benign marker string that only the rule :func:`marker_rule` of the same name matches."""
    return f"AVSCAN-TEST-MARKER-{name}-5c1d".encode()


def marker_rule(name: str, padding: int = 0) -> bytes:
    """YARA source of rule ``Marker_<name>``; ``padding`` bytes of comment make the file large."""
    comment = ("// " + "p" * 76 + "\n") * (padding // 80)
    return (
        f"{comment}rule Marker_{name} {{\n  meta:\n    severity = 90\n  strings:\n"
        f'    $m = "{marker(name).decode()}"\n  condition:\n    $m\n}}\n'
    ).encode()


BROKEN_RULE = b"rule Broken {\n  condition:\n    true and\n    undefined_thing\n}\n"
"""Line 4 names an undefined identifier: the compiler must point at that file and line 4."""


def default_files() -> list[tuple[str, bytes]]:
    """The shipped default ruleset as (path, source) pairs, as a publisher would push it."""
    return [
        (p.relative_to(DEFAULT_SIGNATURES).as_posix(), p.read_bytes())
        for p in sorted(DEFAULT_SIGNATURES.rglob("*.yar*"))
    ]


def sparse_image(path: Path, size: int, plants: dict[int, bytes] | None = None) -> Path:
    """A raw memory image of ``size`` bytes, sparse (no disk used) except for ``plants``."""
    with path.open("wb") as f:
        f.truncate(size)
        for offset, data in (plants or {}).items():
            f.seek(offset)
            f.write(data)
    return path


def sample_dir(root: Path, infected: int = 1, clean: int = 1) -> Path:
    """``infected`` EICAR files and ``clean`` benign files under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(infected):
        (root / f"eicar{i}.com").write_bytes(eicar())
    for i in range(clean):
        (root / f"notes{i}.txt").write_bytes(b"quarterly report draft\n" * 50)
    return root
