"""Generates the Python code for the protos into ``scanner/v1/``; ``--check`` fails if stale.

Run from anywhere: ``python proto/generate.py [--check]``. The generated files are committed so
the package installs without protoc; a test runs ``--check`` so they never drift.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
OUT = ROOT.parent
PROTOS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "scanner" / "v1").glob("*.proto"))


def generate(out: Path) -> None:
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc", f"-I{ROOT}", f"-I{include}",
        f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = out / "scanner" / "v1" / "__init__.py"
    init.write_text('"""Generated gRPC/protobuf code for scanner.v1 (proto/generate.py)."""\n')


def generated_files(base: Path) -> list[Path]:
    return sorted(p.relative_to(base) for p in (base / "scanner" / "v1").glob("*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if not check:
            for rel in generated_files(fresh):
                shutil.copyfile(fresh / rel, OUT / rel)
            return 0
        new, old = generated_files(fresh), generated_files(OUT)
        stale = [str(r) for r in new if r not in old or not filecmp.cmp(fresh / r, OUT / r, shallow=False)]
        stale += [f"{r} (not generated any more)" for r in old if r not in new]
        if stale:
            print("stale generated code, run python proto/generate.py:", *stale, sep="\n  ")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
