"""The suite's pytest plugin (loaded by the repository's root ``conftest.py``): markers by path and fixture,
and, in CI, a skipped PostgreSQL or Chromium test reported as a failure.

Markers (registered in ``pyproject.toml``; ``--strict-markers``) are given here, so new test files get them
without writing them:

- ``integration``: every test under ``integrations/`` (real Lightning, transformers and Keras loops);
- ``postgres``: every test that uses the PostgreSQL cluster (the ``postgres_server`` fixture, or the
  ``database_url`` fixture in its ``postgresql`` variant);
- ``chromium``: every test that uses the ``chromium`` fixture, lives in a file named ``*chromium*`` or calls a
  function whose name contains ``chromium``;
- ``slow``: every test that starts a process: a server (``server_process``, ``make_server``, ``metric_server``,
  ``hub``), a browser, or a training script (a test function that calls ``run_example``). ``pytest -m "not
  slow"`` leaves them out.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from tests.support.ci import in_ci

ROOT = Path(__file__).resolve().parents[2]
INTEGRATIONS = ROOT / "integrations"

POSTGRES_FIXTURES = frozenset({"postgres_server", "_postgres_dropper"})
CHROMIUM_FIXTURES = frozenset({"chromium"})
SLOW_FIXTURES = frozenset({"server_process", "make_server", "metric_server", "hub"})
SLOW_CALLS = frozenset({"run_example"})
NEVER_SKIPPED_IN_CI = ("postgres", "chromium")


def markers_for(item: pytest.Item) -> set[str]:
    """The markers ``item`` gets from where it lives and what it uses."""
    names: set[str] = set()
    path = Path(str(item.path)).resolve()
    fixtures = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if INTEGRATIONS in path.parents:
        names.add("integration")
    if fixtures & POSTGRES_FIXTURES or params.get("database_url") == "postgresql":
        names.add("postgres")
    code = getattr(getattr(item, "function", None), "__code__", None)
    calls = set(code.co_names) if code is not None else set()
    if fixtures & CHROMIUM_FIXTURES or "chromium" in path.name or any("chromium" in name for name in calls):
        names.add("chromium")
    if fixtures & SLOW_FIXTURES or calls & SLOW_CALLS or "chromium" in names:
        names.add("slow")
    return names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        have = {mark.name for mark in item.iter_markers()}
        for name in sorted(markers_for(item) - have):
            item.add_marker(name)


def pytest_report_header(config: pytest.Config) -> str | None:
    if in_ci():
        return "runalert: CI is set: a skipped postgres or chromium test is a failure"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI, a ``postgres`` or ``chromium`` test that skipped (however it skipped) fails instead."""
    report = yield
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return report
    strict = [name for name in NEVER_SKIPPED_IN_CI if item.get_closest_marker(name) is not None]
    if strict:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"a {strict[0]} test skipped in CI, which counts as a failure: {reason}"
    return report
