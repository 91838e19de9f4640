"""A pytest plugin loaded only under ``make mutate`` (``[tool.mutmut] pytest_add_cli_args`` in pyproject.toml).

While mutmut collects which tests reach which function (its "stats" pass), the mutated code looks for mutmut's
configuration in the current directory whenever it runs. Tests that start a child Python (a real SIGTERM to a
real process) run it elsewhere, where it finds none and fails. This plugin keeps the stats mode in the test
process only: it moves ``MUTANT_UNDER_TEST=stats`` out of the environment children inherit into mutmut's own
process-local state, so a child runs the original code. While a mutant is tested the variable stays, so children
run the mutant too.

mutmut also runs the tests in its own order (fastest first), so the plugin forgets, before each test, which
problems runalert has already logged once in this process (``runalert._log``): a test that checks "logged once"
must not depend on which test ran before it. For the same reason it empties the non-finite detector's per-type
cache (``runalert.nonfinite._KINDS``), which mutmut's fork server fills before any mutant runs.
"""

from __future__ import annotations

import os

import pytest


def _keep_stats_mode_in_this_process() -> None:
    if os.environ.get("MUTANT_UNDER_TEST") != "stats":
        return
    from mutmut.mutation import trampoline

    trampoline._mutant_under_test = os.environ.pop("MUTANT_UNDER_TEST")


def pytest_sessionstart(session: pytest.Session) -> None:
    """At the start of a run (mutmut runs pytest in its own process for the stats pass)."""
    _keep_stats_mode_in_this_process()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before each test: the stats mode (in case mutmut set it again), and a fresh log-once memory."""
    _keep_stats_mode_in_this_process()
    from runalert import _log, nonfinite

    with _log._lock:
        _log._seen.clear()
    # The per-type cache of how values are checked, filled while mutmut's fork server collected the tests (with
    # no mutant active): inherited as it is, it would keep every mutant of value_kind() from ever running.
    for tp in [tp for tp in nonfinite._KINDS if tp not in (float, int, bool)]:
        del nonfinite._KINDS[tp]
