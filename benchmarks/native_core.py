"""The native core and the result cache, as ratios against baselines measured in the same run.

1. unique data, no cache: engine (native zero detection, 1 and 2 threads) vs one plain
   single-threaded ``rules.match(data=...)``; targets >= 1.0x and >= 1.8x;
2. fleet: lab guests cloned from one template (each then runs its own workload) and guests booted
   separately from one image, each paused and scanned cold without a cache and then with one
   cache shared by all; target >= 5x in total;
3. rescan of an unchanged paused guest, of a memory dump, of a tree of files and of a disk image
   vs the first scan (fresh cache, one long-lived engine); target >= 20x;
4. peak RSS (VmHWM) of a child process scanning a 4 GiB memory image with the cache: <= 400 MiB.

Every cached run's findings are compared with the uncached run of the same bytes and settings.
Run: ``python -m benchmarks.native_core`` (``--help`` for sizes; ``--guests 0`` skips the lab).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.corpus import DEFAULT_RULESETS_DIR, REPO_ROOT, MiB, system_files, write_corpus
from benchmarks.engine_throughput import best_of
from scanner import native
from scanner.acquisition.mapped import file_window
from scanner.engine import Engine, EngineSettings
from scanner.engine.cache import ResultCache
from scanner.errors import ScannerError
from scanner.rulesets import compile_path
from scanner.targets import TargetSpec, build_target
from scanner.targets.files import FileTarget
from scanner.targets.identity import SETTLE_NS

RULESETS = ("elastic-protections-artifacts/rules", "signature-base/rules")
FLEET_RULESET = "elastic-protections-artifacts/rules"
ROWS: list[tuple[str, str, float, float, bool | None]] = []  # section, what, ratio, target, same findings


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f}/{five:.2f} (1/5 min), {os.cpu_count()} CPUs"


def row(section: str, what: str, ratio: float, target: float, same: bool | None = None) -> None:
    ROWS.append((section, what, ratio, target, same))
    verdict = "PASS" if ratio >= target and same is not False else "MISS"
    findings = "" if same is None else ("same findings" if same else "FINDINGS DIFFER")
    print(f"  {what:<52}{ratio:>8.2f}x  target {target:>5.1f}x  {verdict}  {findings}")


def summary(verdict: Any) -> list[tuple[Any, ...]]:
    return sorted(
        (f.namespace, f.rule, f.unit, f.address, tuple((s.identifier, s.address, s.data) for s in f.strings))
        for f in verdict.findings
    )


def scan(ruleset: Any, target_fn: Callable[[], Any], threads: int, cache: ResultCache | None = None, **kw: Any) -> Any:
    engine = Engine(EngineSettings(threads=threads, **kw), cache)
    try:
        with target_fn() as target:
            return engine.scan(ruleset, target)
    finally:
        engine.close()


def memory(path: Path | str) -> Callable[[], Any]:
    """A raw image scanned physically: the engine and cache, without OS awareness (attribution of
    findings to processes opens the guest kernel: about a second per infected guest, outside them)."""
    return lambda: build_target(TargetSpec("memory", {"path": str(path), "format": "raw", "os": "physical"}))


# -- physical limits ---------------------------------------------------------------------------


def physical_limits(data: bytes, repeat: int) -> None:
    mib = len(data) / MiB
    touched = bytearray(len(data))
    halves = (memoryview(data)[: len(data) // 2], memoryview(data)[len(data) // 2 :])
    zeros = bytes(len(data))
    with ThreadPoolExecutor(2) as pool:
        cases: list[tuple[str, Callable[[], Any]]] = [
            ("memory copy into a touched buffer", lambda: touched.__setitem__(slice(None), data)),
            (f"hash128 ({native.HASH_NAME}, native={native.NATIVE}), 1 thread", lambda: native.hash128(data)),
            ("hash128, 2 threads (halves)", lambda: list(pool.map(native.hash128, halves))),
            ("zero_pages (1 MiB pages), 1 thread", lambda: native.zero_pages(zeros, MiB)),
            ("sha256, 1 thread", lambda: hashlib.sha256(data).digest()),
            ("sha256, 2 threads (halves)", lambda: list(pool.map(lambda h: hashlib.sha256(h).digest(), halves))),
        ]
        times = {name: best_of(repeat, fn)[0] for name, fn in cases}
    for name, secs in times.items():
        print(f"  limit {name:<50}{mib / secs:>10.0f} MiB/s")
    scaling = times["sha256, 1 thread"] / times["sha256, 2 threads (halves)"]
    print(f"  machine 2-thread scaling (sha256): {scaling:.2f}x ({load()})")


# -- 1. unique data ----------------------------------------------------------------------------


def unique_data(rulesets_dir: Path, image: Path, data: bytes, repeat: int) -> None:
    for name in RULESETS:
        ruleset = compile_path(rulesets_dir / name)
        base, matches = best_of(repeat, lambda: ruleset.rules.match(data=data))  # noqa: B023
        rules = {(m.namespace, m.rule) for m in matches}
        print(f"\n1. unique data, {len(data) // MiB} MiB, {name} ({ruleset.rule_count} rules)"
              f" baseline {len(data) / MiB / base:.0f} MiB/s, {load()}")  # fmt: skip
        for threads, target in ((1, 1.0), (2, 1.8)):
            secs, verdict = best_of(repeat, lambda: scan(ruleset, memory(image), threads))  # noqa: B023
            same = {(f.namespace, f.rule) for f in verdict.findings} == rules
            row("unique", f"engine, {threads} thread(s), no cache", base / secs, target, same)
        with tempfile.TemporaryDirectory() as tmp:
            runs = iter(range(repeat))

            def cold() -> Any:
                cache = ResultCache(Path(tmp) / f"c{next(runs)}.sqlite3")  # noqa: B023 - empty every run
                try:
                    return scan(ruleset, memory(image), 2, cache)  # noqa: B023
                finally:
                    cache.close()

            secs, verdict = best_of(repeat, cold)
            same = {(f.namespace, f.rule) for f in verdict.findings} == rules
            row("unique", "engine, 2 threads, cold cache (hash + store)", base / secs, 1.8, same)


# -- 3. rescans --------------------------------------------------------------------------------


def rescan(what: str, ruleset: Any, target_fn: Callable[[], Any], repeat: int, **kw: Any) -> None:
    """First scan and rescans through one engine and cache, as the service keeps them (its pool
    threads are started once, not per scan)."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResultCache(Path(tmp) / "c.sqlite3", max_bytes=1024 * MiB)
        plain = scan(ruleset, target_fn, 2, **kw)
        engine = Engine(EngineSettings(threads=2, **kw), cache)

        def run() -> Any:
            with target_fn() as target:
                return engine.scan(ruleset, target)

        try:
            t0 = time.perf_counter()
            first = run()
            first_s = time.perf_counter() - t0
            again_s, again = best_of(repeat, run)
        finally:
            engine.close()
            cache.close()
    same = summary(plain) == summary(first) == summary(again)
    c = again.coverage
    reused = " (whole result reused)" if "cache.reused" in again.details else ""
    print(f"  {what}: first {first_s:.2f} s, rescan {again_s * 1000:.1f} ms ({c.cache_hits} hits,"
          f" {c.cache_misses} misses){reused}")  # fmt: skip
    row("rescan", what, first_s / again_s, 20.0, same)


def file_tree(size: int) -> list[str]:
    paths, total = [], 0
    for path in system_files():
        st = path.stat()
        if st.st_size > 64 * MiB:
            continue
        paths.append(str(path))
        total += st.st_size
        if total >= size:
            return paths
    return paths


def disk_image(ruleset: Any, paths: list[str], tmp: Path, repeat: int) -> None:
    """The same files in an ext4 image (``mkfs.ext4 -d``), scanned through the disk target."""
    tree, image = tmp / "tree", tmp / "disk.ext4"
    for i, path in enumerate(paths):
        dest = tree / f"{i:05d}" / Path(path).name
        dest.parent.mkdir(parents=True)
        shutil.copyfile(path, dest)
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), f"{size * 3 // 2 // MiB + 64}M"],
                       check=True, capture_output=True)  # fmt: skip
        shutil.rmtree(tree)
        # An image written less than SETTLE_NS ago gets no identity (scanner.targets.identity):
        # a real image is not scanned in the milliseconds after mkfs, so let it settle first.
        time.sleep(SETTLE_NS / 1e9)
        target = lambda: build_target(TargetSpec("disk", {"path": str(image)}))  # noqa: E731
        rescan(f"disk target, ext4 image of the same {len(paths)} files", ruleset, target, repeat)
    except (OSError, subprocess.CalledProcessError, ScannerError) as e:
        print(f"  disk target: not measured ({e})")
    finally:
        shutil.rmtree(tree, ignore_errors=True)
        image.unlink(missing_ok=True)


# -- 2. fleet ----------------------------------------------------------------------------------


@contextmanager
def booted(variants: list[str]) -> Iterator[list[Any]]:
    from scanner.lab import LabGuest

    guests: list[Any] = []
    try:
        with ThreadPoolExecutor(len(variants)) as pool:
            futures = [pool.submit(LabGuest.start, memory_mib=256, markers=1, variant=v) for v in variants]
            for f in futures:
                guests.append(f.result())
        yield guests
    finally:
        for g in guests:
            g.stop()


@contextmanager
def cloned(snapshot: Any, variant: str) -> Iterator[Any]:
    from scanner.lab import LabGuest

    guest = LabGuest.clone(snapshot, workload=variant, workload_mib=2)
    try:
        yield guest
    finally:
        guest.stop()


@contextmanager
def fleet_sources(kind: str, count: int, batch: int, tmp: Path) -> Iterator[Iterator[tuple[int, Any]]]:
    """The fleet's guests one batch at a time, as (index, guest): ``clones`` of one template
    (instant/linked clones: resumed from one saved memory image, then each starts its own
    workload), or guests ``booted`` separately from the same boot image."""
    from scanner.lab import LabGuest

    if kind == "booted":

        def booted_all() -> Iterator[tuple[int, Any]]:
            for start in range(0, count, batch):
                with booted([str(i) for i in range(start, min(count, start + batch))]) as guests:
                    yield from enumerate(guests, start)

        yield booted_all()
        return
    with LabGuest.start(memory_mib=256, markers=1, clonable=True) as template:
        snapshot = template.save_template(tmp / "template")

    def clones() -> Iterator[tuple[int, Any]]:
        for i in range(count):
            with cloned(snapshot, f"w{i}") as g:
                yield i, g

    yield clones()


def fleet(
    ruleset: Any, kind: str, count: int, batch: int, chunk_sizes: list[int], repeat: int, tmp: Path, rescan_first: bool
) -> None:
    how = "cloned from one template" if kind == "clones" else f"booted separately, {batch} at a time"
    print(f"\n2. fleet of {count} lab guests {how} (256 MiB, paused while scanned), {load()}")
    caches = {c: ResultCache(tmp / f"fleet-{kind}-{c}.sqlite3", max_bytes=1024 * MiB) for c in chunk_sizes}
    engines = {c: Engine(EngineSettings(threads=2, chunk_size=c), caches[c]) for c in chunk_sizes}
    cold = dict.fromkeys(chunk_sizes, 0.0)
    shared = dict.fromkeys(chunk_sizes, 0.0)
    hits = {c: [0, 0] for c in chunk_sizes}
    same = True
    first_pages: list[bytes] = []
    bounds: list[tuple[float, float]] = []
    try:
        with fleet_sources(kind, count, batch, tmp) as guests:
            for i, g in guests:
                g.pause()
                pages = page_digests(g.ram_path)
                if i == 0:
                    first_pages = pages
                else:
                    bounds.append(shared_pages(first_pages, pages))
                for c in chunk_sizes:
                    t0 = time.perf_counter()
                    plain = scan(ruleset, memory(g.ram_path), 2, chunk_size=c)
                    cold[c] += time.perf_counter() - t0
                    with memory(g.ram_path)() as target:
                        t0 = time.perf_counter()
                        cached = engines[c].scan(ruleset, target)
                        shared[c] += time.perf_counter() - t0
                    hits[c][0] += cached.coverage.cache_hits
                    hits[c][1] += cached.coverage.cache_misses
                    same = same and summary(plain) == summary(cached) and bool(plain.findings)
                if i == 0 and rescan_first:
                    rescan("paused guest 0 (256 MiB)", ruleset, memory(g.ram_path), repeat)
    finally:
        for c in chunk_sizes:
            engines[c].close()
            caches[c].close()
    if bounds:
        in_place = sum(b[0] for b in bounds) / len(bounds)
        anywhere = sum(b[1] for b in bounds) / len(bounds)
        print(
            f"  content bound: of each guest's non-zero 4 KiB pages, {in_place:.0%} equal guest 0's page at"
            f" the same address, {anywhere:.0%} equal one anywhere in guest 0 (mean of {len(bounds)} guests)"
        )
    base = cold[chunk_sizes[0]]  # the baseline: cold scans at the first (default) chunk size
    for c in chunk_sizes:
        h, m = hits[c]
        print(f"  chunk {c / MiB:g} MiB: {count} cold scans {cold[c]:.2f} s, with the shared cache {shared[c]:.2f} s"
              f" ({h} window hits, {m} misses: {h / max(1, h + m):.0%} shared)")  # fmt: skip
        row("fleet", f"{count} {kind}, shared cache, chunk {c / MiB:g} MiB", base / shared[c], 5.0, same)


def page_digests(path: Path | str) -> list[bytes]:
    """XXH3-64 of every 4 KiB page (b"" for zero pages), read with the native core; the RAM
    file's holes are read as zero without being allocated (a plain mapping would fill them, and
    every later scan of this guest would have to read 256 MiB instead of its ~110)."""
    with open(path, "rb") as f, file_window(f.fileno(), 0, os.fstat(f.fileno()).st_size, str(path), holes=True) as view:
        hashes, zero = native.page_hashes(view, 4096), native.zero_pages(view, 4096)
    return [b"" if z else hashes[8 * i : 8 * i + 8] for i, z in enumerate(zero)]


def shared_pages(a: list[bytes], b: list[bytes]) -> tuple[float, float]:
    """Fractions of ``b``'s non-zero pages equal to ``a``'s at the same index, and anywhere in ``a``."""
    anywhere = set(a)
    nonzero = [i for i, h in enumerate(b) if h]
    same = sum(1 for i in nonzero if i < len(a) and a[i] == b[i])
    found = sum(1 for i in nonzero if b[i] in anywhere)
    return same / max(1, len(nonzero)), found / max(1, len(nonzero))


# -- 4. peak RSS -------------------------------------------------------------------------------


def rss_child(image: str, rulesets_dir: str, cache_path: str) -> None:
    ruleset = compile_path(Path(rulesets_dir) / FLEET_RULESET)
    report: dict[str, Any] = {}
    if image:
        cache = ResultCache(cache_path)
        t0 = time.perf_counter()
        verdict = scan(ruleset, memory(image), 2, cache)
        report.update(seconds=time.perf_counter() - t0, scanned=verdict.coverage.bytes_scanned,
                      zero=verdict.coverage.bytes_zero, total=verdict.coverage.bytes_total)  # fmt: skip
        cache.close()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            report["peak_rss_mib"] = int(line.split()[1]) / 1024
    print(json.dumps(report))


def peak_rss(rulesets_dir: Path, size_mib: int, tmp: Path) -> None:
    from benchmarks.memory_rss import POOL_MIB, write_image

    pool, image = tmp / "pool", tmp / "rss.raw"
    write_corpus(pool, POOL_MIB * MiB)
    write_image(image, size_mib * MiB, pool.read_bytes())
    out = {}
    for label, img in (("import + compile", ""), ("import + compile + scan", str(image))):
        cmd = [sys.executable, "-m", "benchmarks.native_core", "--rss-child", img, str(rulesets_dir), str(tmp / "c")]
        result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
        out[label] = json.loads(result.stdout.splitlines()[-1])
    image.unlink()
    scan_report = out["import + compile + scan"]
    print(
        f"\n4. peak RSS, {size_mib} MiB image, {FLEET_RULESET}, 2 threads, cache on:"
        f" scan {scan_report['seconds']:.1f} s"
    )
    for label, report in out.items():
        print(f"  child {label:<40}{report['peak_rss_mib']:>8.1f} MiB VmHWM")
    ok = scan_report["scanned"] + scan_report["zero"] == scan_report["total"]
    row("rss", "400 MiB / peak RSS of the scanning child", 400 / scan_report["peak_rss_mib"], 1.0, ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="unique data and file tree size")
    parser.add_argument("--repeat", type=int, default=1, help="best of N for every timed scan")
    parser.add_argument("--guests", type=int, default=10, help="fleet size (0: skip the lab)")
    parser.add_argument("--batch", type=int, default=2, help="guests booted at a time")
    parser.add_argument("--fleet-chunks", default="16,1", help="chunk sizes (MiB) on the fleet; first = baseline")
    parser.add_argument("--fleet", default="clones,booted", help="fleets to measure: clones, booted")
    parser.add_argument("--rss-mib", type=int, default=4096, help="image size for the RSS check (0: skip)")
    parser.add_argument("--rulesets-dir", type=Path, default=DEFAULT_RULESETS_DIR)
    parser.add_argument("--sections", default="unique,rescan,fleet,rss", help="which sections to run")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if args.rss_child:
        rss_child(*args.rss_child)
        return 0
    print(f"native core: {'C extension' if native.NATIVE else 'pure-Python fallback'}, hash {native.HASH_NAME}")
    with tempfile.TemporaryDirectory(prefix="bench-native-", dir="/tmp") as tmpdir:
        tmp = Path(tmpdir)
        image = tmp / "corpus.raw"
        files = write_corpus(image, args.size_mib * MiB)
        data = image.read_bytes()
        print(f"data: {len(data) // MiB} MiB from {files} system files")
        physical_limits(data, args.repeat)
        if "unique" in sections:
            unique_data(args.rulesets_dir, image, data, args.repeat)
        del data
        ruleset = compile_path(args.rulesets_dir / FLEET_RULESET)
        if "rescan" in sections:
            print(f"\n3. rescans ({FLEET_RULESET}, 2 threads), {load()}")
            rescan(f"memory dump, {args.size_mib} MiB unique data", ruleset, memory(image), args.repeat)
            paths = file_tree(args.size_mib * MiB)
            rescan(f"files target, {len(paths)} system files (as extracted from a disk)", ruleset,
                   lambda: FileTarget(paths), args.repeat)  # fmt: skip
            disk_image(ruleset, paths, tmp, args.repeat)
        if args.guests and "fleet" in sections:
            chunks = [int(float(c) * MiB) for c in args.fleet_chunks.split(",")]
            for n, kind in enumerate(args.fleet.split(",")):
                fleet(ruleset, kind, args.guests, args.batch, chunks, args.repeat, tmp, rescan_first=n == 0)
        if args.rss_mib and "rss" in sections:
            peak_rss(args.rulesets_dir, args.rss_mib, tmp)
    print(f"\nsummary ({load()})")
    print(f"{'section':<8} {'what':<52}{'ratio':>8}  {'target':>7}  result")
    for section, what, ratio, target, same in ROWS:
        ok = ratio >= target and same is not False
        print(f"{section:<8} {what:<52}{ratio:>7.2f}x  {target:>6.1f}x  {'PASS' if ok else 'MISS'}")
    return 0 if all(r >= t and s is not False for _, _, r, t, s in ROWS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
