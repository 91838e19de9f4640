"""The suites' own rules (``tests/support/plugin.py``): markers given by path and fixture, and in CI no silent
skip of a PostgreSQL or Chromium test. Each case runs a small suite in a pytester sandbox."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.support import in_ci, plugin

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """
import pytest

def pytest_collection_finish(session):
    for item in session.items:
        print("MARKS", item.nodeid.split("::")[-1], ",".join(sorted({m.name for m in item.iter_markers()})))

@pytest.fixture
def postgres_server():
    pytest.skip("no PostgreSQL here")

@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    return request.param

@pytest.fixture
def server_process():
    return None

@pytest.fixture
def chromium():
    from tests.support import missing
    missing("no chromium here")
"""

TESTS = """
import pytest

def run_example():
    pass

def test_plain(): pass
def test_db(database_url): pass
def test_cluster(postgres_server): pass
def test_process(server_process): pass
def test_script(): run_example()
def test_browser(chromium): pass
def test_skips(): pytest.skip("an optional extra is missing")

@pytest.mark.xfail(reason="known")
def test_known(): assert False
"""


@pytest.fixture
def sandbox(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A suite with the fixtures the rules look at, the markers as registered in pyproject.toml, and a
    directory that the plugin takes for ``integrations/``."""
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    pytester.makeini(
        "[pytest]\naddopts = --strict-markers -p tests.support.plugin\nmarkers =\n    " + "\n    ".join(markers)
    )
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=TESTS)
    (pytester.path / "integrations").mkdir()
    (pytester.path / "integrations" / "test_framework.py").write_text("def test_fit(): pass\n")
    monkeypatch.setattr(plugin, "INTEGRATIONS", pytester.path / "integrations")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the sandbox needs no installed plugin: faster
    return pytester


def test_markers_come_from_path_and_fixtures(sandbox: pytest.Pytester) -> None:
    result = sandbox.runpytest_inprocess("--collect-only", "-q", "-s")
    marks = dict(line.split(" ", 2)[1:] for line in result.outlines if line.startswith("MARKS "))
    assert marks == {
        "test_plain": "",
        "test_db[sqlite]": "",
        "test_db[postgresql]": "postgres",
        "test_cluster": "postgres",
        "test_process": "slow",
        "test_script": "slow",
        "test_browser": "chromium,slow",
        "test_skips": "",
        "test_known": "xfail",
        "test_fit": "integration",
    }


def test_outside_ci_a_missing_database_or_browser_skips(sandbox: pytest.Pytester) -> None:
    result = sandbox.runpytest_inprocess("-q")
    result.assert_outcomes(passed=6, skipped=3, xfailed=1)


def test_in_ci_a_skipped_postgres_or_chromium_test_fails_and_other_skips_stay(
    sandbox: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = sandbox.runpytest_inprocess("-rEs")
    # Both fail in their set-up (where they skipped): an error, and the run's exit status is not 0.
    result.assert_outcomes(passed=6, errors=2, skipped=1, xfailed=1)
    assert result.ret != 0
    errors = [line for line in result.outlines if line.startswith("ERROR")]
    assert len(errors) == 2, result.outlines
    output = "\n".join(result.outlines)
    assert "a postgres test skipped in CI, which counts as a failure: Skipped: no PostgreSQL here" in output
    assert "no chromium here (CI is set" in output
    assert "SKIPPED [1] test_suite.py:12: an optional extra is missing" in output  # not a postgres test: skips
    assert "runalert: CI is set" in output  # said at the top of the run


@pytest.mark.parametrize(
    ("value", "ci"), [("true", True), ("1", True), ("yes", True), ("", False), ("0", False), ("false", False)]
)
def test_what_counts_as_ci(monkeypatch: pytest.MonkeyPatch, value: str, ci: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is ci


def test_a_marker_not_registered_is_an_error(sandbox: pytest.Pytester) -> None:
    sandbox.makepyfile(test_typo="import pytest\n\n@pytest.mark.postgress\ndef test_x(): pass\n")
    result = sandbox.runpytest_inprocess("-q", "test_typo.py")
    assert result.ret != 0
    assert any("'postgress' not found in `markers`" in line for line in result.outlines)


def test_in_ci_a_skip_in_a_worker_process_fails_the_run_too(
    sandbox: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make test` runs the suite in pytest-xdist workers: the rule applies in each worker, and the failure it
    # makes travels to the main process's report (and its exit status, and the JUnit report CI reads again).
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = sandbox.runpytest_subprocess("-p", "xdist", "-n", "2", "-rEs", "--junitxml=junit.xml")
    result.assert_outcomes(passed=6, errors=2, skipped=1, xfailed=1)
    assert result.ret != 0
    output = "\n".join(result.outlines)
    assert "a postgres test skipped in CI, which counts as a failure: Skipped: no PostgreSQL here" in output
    assert "no chromium here (CI is set" in output
    junit = (sandbox.path / "junit.xml").read_text()
    assert 'errors="2"' in junit and 'tests="10"' in junit, junit[:400]
