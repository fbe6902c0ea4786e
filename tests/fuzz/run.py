"""One fuzz target under atheris (libFuzzer), as a child of ``benchmarks/fuzz.py``.

``python -m tests.fuzz.run NAME CORPUS ARTIFACTS SECONDS HANG_SECONDS``: the scanner's modules
(and the parser packages they use) are imported instrumented, then libFuzzer runs the target
for SECONDS, calling an input that takes over HANG_SECONDS a hang; crashers and hangs are
written under ARTIFACTS (``crash-*``, ``timeout-*``, ``oom-*``) and the final stats to stderr.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    import atheris  # type: ignore[import-not-found,unused-ignore]

    name, corpus, artifacts, seconds, hang = argv[1:6]
    with atheris.instrument_imports(include=["scanner", "dissect"]):
        from scanner.acquisition.preload import preload

        preload()
        import scanner.api.convert
        import scanner.guestos.btf
        import scanner.targets.disk
        import scanner.targets.memory  # noqa: F401
        from tests.fuzz.targets import TARGETS
    target = TARGETS[name]
    options = [
        f"-max_total_time={seconds}",
        f"-timeout={hang}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        "-rss_limit_mb=3072",
        "-max_len=4194304",
        corpus,
    ]
    atheris.Setup([argv[0], *options], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
