"""``avscan demo`` end to end (the README's first command), through the installed entry point.

The demo starts the service, boots two lab guests and a vcsim; this test runs it once as a user
would and checks what it shows: the broken rule named by file and line, each planted sample found
(and the clean ones not), the memory markers at their planted addresses, the live guest's
infected process, the VM quarantined in vcsim and released again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yara

from scanner.cli.demo import BROKEN_RULE

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1500 + 120)]
BOUND = 1500  # seconds: the whole demo, first lab image build included; killed past it


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    workdir = tmp_path_factory.mktemp("demo")
    avscan = Path(sys.executable).with_name("avscan")
    assert avscan.exists(), f"{avscan}: the console script is not installed (run .ci/setup)"
    proc = subprocess.Popen(
        [str(avscan), "demo", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the service, QEMU and vcsim go with it
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        out, _ = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"avscan demo ran past {BOUND} s:\n{out[-4000:]}")
    return proc.returncode, out, workdir


def found_lines(out: str, rule: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip().startswith(f"FOUND {rule} ")]


def test_the_demo_ends_well_and_says_so(demo: tuple[int, str, Path]) -> None:
    code, out, _ = demo
    assert code == 0, out[-4000:]
    assert "== demo finished" in out and "UNEXPECTED" not in out
    assert "Traceback" not in out


def test_a_broken_rule_is_refused_with_its_file_and_line(demo: tuple[int, str, Path]) -> None:
    _, out, _ = demo
    [(path, source)] = BROKEN_RULE.items()
    with pytest.raises(yara.SyntaxError) as yara_says:  # the oracle: libyara compiling it directly
        yara.compile(source=source)
    line, message = re.fullmatch(r"line (\d+): (.*)", str(yara_says.value)).groups()  # type: ignore[union-attr]
    assert f"{path}:{line}: error: {message}" in out
    assert "push refused: INVALID_ARGUMENT" in out


def test_files_are_found_by_the_rule_that_matches_them_and_clean_ones_are_not(demo: tuple[int, str, Path]) -> None:
    _, out, workdir = demo
    samples = workdir / "samples"
    assert any(line.endswith(f"in {samples / 'eicar.com'}") for line in found_lines(out, "EICAR_Test_File"))
    assert any(line.endswith(f"in {samples / 'dropper.sh'}") for line in found_lines(out, "Demo_Backdoor_Marker"))
    miner = samples / "nested" / "miner.conf"
    assert any(line.endswith(f"in {miner}") for line in found_lines(out, "Demo_Miner_Pool_Config"))
    reported = "\n".join(line for line in out.splitlines() if line.strip().startswith("FOUND "))
    assert "notes.txt" not in reported and "clean.bin" not in reported


def test_memory_markers_are_found_where_they_were_planted(demo: tuple[int, str, Path]) -> None:
    _, out, _ = demo
    assert "marker addresses found in memory: 0x1000, 0xfffff9, 0x2800000" in out


def test_the_live_guest_names_its_infected_process_and_resumes(demo: tuple[int, str, Path]) -> None:
    _, out, _ = demo
    pid = re.search(r"inside the guest: pid (\d+) holds the marker", out)
    assert pid, out[-4000:]
    assert any(f"process {pid[1]} avscan-marker" in line for line in found_lines(out, "EICAR_Test_File"))
    assert re.search(r"marker at physical 0x[0-9a-f]+.*: read back from RAM, matches", out)
    assert re.search(r"guest paused [0-9.]+ s, now running", out)


def test_the_vm_is_quarantined_in_vcenter_then_released(demo: tuple[int, str, Path]) -> None:
    _, out, _ = demo
    quarantined = re.search(r"NICs now: (\[.*?\]);", out)
    assert quarantined, out[-4000:]
    nics = re.findall(r"\((\d+), (True|False), (True|False)\)", quarantined[1])
    assert nics and all(c == s == "False" for _, c, s in nics)  # every vNIC disconnected in vcsim
    assert re.search(r"'avscan\.verdict': 'MALICIOUS", out)
    released = re.search(
        r"NICs after release: (\[.*?\]); avscan\.release = released by .*; avscan\.verdict = MALICIOUS", out
    )
    assert released, out[-4000:]
    nics = re.findall(r"\((\d+), (True|False), (True|False)\)", released[1])
    assert nics and all(c == s == "True" for _, c, s in nics)
