"""The child process that compiles YARA source: ``python -m scanner.rulesets.compile_worker JOB``.

It runs in its own process so that a hostile or huge ruleset can only exhaust the child. It first
lowers its own resource limits (address space, CPU seconds, file size, no core dumps), then
compiles with includes disabled, one namespace per file, and writes a JSON result (and, on
success, the compiled rules) to the paths named in the job file. It imports nothing from the
scanner beyond the standard library and yara. See ``scanner.rulesets.compiler`` for the parent.

Job (JSON): ``sources`` [[namespace, source path], ...], ``externals`` {name: value},
``output`` path or null, ``result`` path, ``limits`` {as, cpu, fsize}, ``probe`` null or
{bytes, budget, force}: time the compiled rules on a reference buffer of ``bytes`` (see
:func:`probe`); rules slower than ``budget`` seconds are an error (a warning with ``force``).
Result (JSON): ``ok``, ``rule_count``, ``diagnostics`` [{severity, file, line, message,
slow_pattern}] with ``file`` the namespace (the file's relative path in the ruleset).
"""

from __future__ import annotations

import json
import math
import random
import re
import resource
import sys
import time
from typing import Any

# "<path>(<line>): <message>" as libyara formats compiler errors and warnings for files.
_LOCATED = re.compile(r"^(?P<path>.*)\((?P<line>\d+)\): (?P<message>.*)$", re.DOTALL)
_SLOW = re.compile(r"slow(ing)? down scanning|consider using|performance", re.IGNORECASE)


def set_limits(limits: dict[str, int]) -> None:
    """Lower this process's limits, hard limits too, so compiled code cannot raise them again.

    Only ever lowers: under a limit already lower than asked (``ulimit -v``, a service manager's
    memory cap) that limit stays; an unprivileged process may not raise a hard limit at all.
    """
    for name, key in (("as", resource.RLIMIT_AS), ("cpu", resource.RLIMIT_CPU), ("fsize", resource.RLIMIT_FSIZE)):
        if limits.get(name):
            resource.setrlimit(key, lowered(resource.getrlimit(key), limits[name]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def lowered(current: tuple[int, int], wanted: int) -> tuple[int, int]:
    """(soft, hard) both at most ``wanted`` and never above the current hard limit."""
    hard = wanted if current[1] == resource.RLIM_INFINITY else min(current[1], wanted)
    return hard, hard


def diagnostic(severity: str, text: str, names: dict[str, str]) -> dict[str, Any]:
    """Turn one libyara message into a diagnostic naming the ruleset-relative file and line."""
    file, line, message = "", 0, text
    m = _LOCATED.match(text)
    if m and m.group("path") in names:
        file, line, message = names[m.group("path")], int(m.group("line")), m.group("message")
    for path, name in names.items():  # never leak temp paths, wherever they appear
        message = message.replace(path, name)
    slow = severity == "warning" and bool(_SLOW.search(message))
    return {
        "severity": severity,
        "file": file,
        "line": line,
        "message": message,
        "slow_pattern": slow,
    }


def compile_all(yara: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Compile every file together; on an error, compile each file alone to report them all."""
    names = {path: ns for ns, path in job["sources"]}
    filepaths = dict(job["sources"])
    try:
        rules = yara.compile(filepaths=filepaths, externals=job["externals"], includes=False)
    except yara.Error as e:
        diags = per_file_errors(yara, job, names) or [diagnostic("error", str(e), names)]
        return {"ok": False, "rule_count": 0, "diagnostics": diags}
    diags = [diagnostic("warning", w, names) for w in rules.warnings]
    if job.get("probe"):
        diags.extend(probe(yara, rules, job))
    if any(d["severity"] == "error" for d in diags):
        return {"ok": False, "rule_count": 0, "diagnostics": diags}
    if job.get("output"):
        rules.save(job["output"])
    return {"ok": True, "rule_count": sum(1 for _ in rules), "diagnostics": diags}


def reference_buffer(size: int) -> bytes:
    """The fixed buffer rules are timed on: quarters of zeros, random bytes, English-like text
    and x86-like filler (NOPs, 0xFF), the kinds of content guest memory and files hold."""
    quarter = size // 4
    text = b"The quick brown fox jumps over the lazy dog; GET /index.html HTTP/1.1\r\n"
    filler = b"\x90\x90\xff\xff\x00\x00\xcc\x55\x48\x89\xe5"
    parts = [
        bytes(quarter),
        random.Random(20260601).randbytes(quarter),  # noqa: S311 - a fixed, reproducible buffer
        (text * (quarter // len(text) + 1))[:quarter],
        (filler * (quarter // len(filler) + 1))[: size - 3 * quarter],
    ]
    return b"".join(parts)


def timed_match(yara: Any, rules: Any, data: bytes, budget: float) -> float | None:
    """Seconds ``rules`` took over ``data``, or None if they ran past ``budget``."""
    started = time.monotonic()
    try:
        rules.match(data=data, timeout=max(1, math.ceil(budget)), console_callback=lambda _m: None)
    except yara.TimeoutError:
        return None
    elapsed = time.monotonic() - started
    return elapsed if elapsed <= budget else None


def probe(yara: Any, rules: Any, job: dict[str, Any]) -> list[dict[str, Any]]:
    """Time the whole ruleset on the reference buffer; past the budget, time each file alone
    (for at most four budgets in all) to name the slow ones. Errors unless ``force``."""
    spec = job["probe"]
    budget, size = float(spec["budget"]), int(spec["bytes"])
    data = reference_buffer(size)
    if timed_match(yara, rules, data, budget) is not None:
        return []
    severity = "warning" if spec.get("force") else "error"
    advice = "" if spec.get("force") else "; fix the rule or push with force"
    out: list[dict[str, Any]] = []
    stop_at = time.monotonic() + 4 * budget
    for ns, path in job["sources"]:
        if time.monotonic() > stop_at:
            break
        alone = yara.compile(filepaths={ns: path}, externals=job["externals"], includes=False)
        if timed_match(yara, alone, data, budget) is None:
            message = f"scanning the {size >> 20} MiB reference buffer took over the {budget:g} s budget{advice}"
            out.append({"severity": severity, "file": ns, "line": 0, "message": message, "slow_pattern": True})
    if not out:  # slow only together, or not found in time
        message = f"the ruleset took over {budget:g} s on the {size >> 20} MiB reference buffer{advice}"
        out.append({"severity": severity, "file": "", "line": 0, "message": message, "slow_pattern": True})
    return out


def per_file_errors(yara: Any, job: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """Errors and warnings of each file compiled on its own (libyara stops at a first error)."""
    diags: list[dict[str, Any]] = []
    for ns, path in job["sources"]:
        try:
            rules = yara.compile(filepaths={ns: path}, externals=job["externals"], includes=False)
        except yara.Error as e:
            diags.append(diagnostic("error", str(e), names))
            continue
        diags.extend(diagnostic("warning", w, names) for w in rules.warnings)
    return diags if any(d["severity"] == "error" for d in diags) else []


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as f:
        job = json.load(f)
    set_limits(job.get("limits", {}))
    import yara  # type: ignore[import-not-found,unused-ignore]  # after the limits: nothing runs unlimited

    result = compile_all(yara, job)
    with open(job["result"], "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
