"""Suite-wide policy: under ``CI=true`` a skip fails unless it names hardware listed in
``tests/hardware.py`` (a green run must mean every test ran).

Suite-wide fixtures: ``postgres`` (one PostgreSQL server for the session) and ``state_url``
(a test taking it runs on both state backends); see ``tests/support/postgres.py``. A module
that imports ``postgres`` itself gets a server of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import hardware
from tests.support.postgres import postgres, state_url

__all__ = ["postgres", "state_url"]


def _reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_unlisted(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail") or not hardware.ci():
        return
    reason = _reason(report.longrepr)
    if hardware.listed(reason):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under CI=true without a listed hardware reason (tests/hardware.py): {reason}\n"
        "install what is missing in .ci/setup, or skip through tests.hardware.require(device)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    _fail_unlisted(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _fail_unlisted(outcome.get_result())
