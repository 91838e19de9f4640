"""A killed test run leaves nothing behind (:mod:`tests.support.reaper`): a pytest child run killed with SIGKILL
takes its server processes and its PostgreSQL cluster with it, and a cluster whose run died with its reaper is
swept by the next session."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import reaper, wait_for

ROOT = Path(__file__).resolve().parents[2]
KilledRun = Callable[[str], tuple[int, Path | None]]
"""``killed_run(variant)``: the killed child run's server pid and its cluster's data folder (``None`` on SQLite)."""

INNER = """
import os
import time
from pathlib import Path

import pytest
import sqlalchemy


@pytest.mark.parametrize("database_url", ["{variant}"], indirect=True)
def test_hold(server_process, database_url):
    server = server_process()
    data = ""
    if database_url.startswith("postgresql"):
        engine = sqlalchemy.create_engine(database_url)
        with engine.connect() as conn:
            data = conn.exec_driver_sql("SHOW data_directory").scalar()
        engine.dispose()
    report = Path(os.environ["REAPER_REPORT"])
    if data:  # read now: once this run is killed its reaper may remove the folder at once
        postmaster = Path(data, "postmaster.pid").read_text().split("\\n", 1)[0]
        report.with_name("postmaster.txt").write_text(postmaster)
    report.with_suffix(".tmp").write_text(f"{{server.proc.pid}}\\n{{data}}\\n")
    report.with_suffix(".tmp").rename(report)
    time.sleep(600)  # killed long before
"""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def killed_run(tmp_path: Path) -> Iterator[KilledRun]:
    """Run a pytest child whose test starts a server (and, for ``postgresql``, the cluster), SIGKILL the child
    once both are up; yield the server's pid and the cluster's data folder. Whatever survives is cleaned up."""
    started: list[tuple[int, Path | None]] = []

    def run(variant: str) -> tuple[int, Path | None]:
        inner = tmp_path / "inner" / "test_inner.py"
        inner.parent.mkdir()
        inner.write_text(textwrap.dedent(INNER.format(variant=variant)))
        report = tmp_path / "report.txt"
        # A run of its own: not a pytest-xdist worker of the outer run (its PYTEST_XDIST_* variables), and in this
        # process alone whatever the outer run's -n (`make test` runs the suite in workers).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env["REAPER_REPORT"] = str(report)
        env.pop("PYTEST_ADDOPTS", None)  # CI's options (its JUnit report) are the outer run's, not this child's
        plugins = ["no:cacheprovider", "no:xdist", "tests.support.env", "tests.server.conftest"]
        args = ["-q", *(arg for plugin in plugins for arg in ("-p", plugin))]
        child = subprocess.Popen(
            [sys.executable, "-m", "pytest", *args, str(inner)],
            cwd=inner.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the SIGKILL below reaches pytest alone, as a kill by pid does
        )
        try:
            # A bound on a child that never gets its server up (a loaded machine takes tens of seconds).
            assert wait_for(lambda: report.exists() or child.poll() is not None, timeout=180, interval=0.05)
            assert report.exists(), f"the child run ended with {child.returncode} before its server was up"
        finally:
            child.kill()
            child.wait()
        pid_text, data_text = report.read_text().split("\n")[:2]
        started.append((int(pid_text), Path(data_text) if data_text else None))
        return started[-1]

    yield run
    for pid, data in started:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        if data is not None:
            with contextlib.suppress(OSError):
                reaper._stop_cluster(data.parent, timeout=30)


@pytest.mark.slow
def test_a_killed_run_leaves_no_server_process(killed_run: KilledRun) -> None:
    server, _ = killed_run("sqlite")
    # The reaper notices at once (its pipe closes); 60 s is a bound for a loaded machine, not a timing check.
    assert wait_for(lambda: not _alive(server), timeout=60), f"server {server} outlived its killed test run"


@pytest.mark.slow
@pytest.mark.postgres
def test_a_killed_run_leaves_no_postgres_cluster(killed_run: KilledRun, postgres_server: str, tmp_path: Path) -> None:
    server, data = killed_run("postgresql")
    assert data is not None
    pid = int((tmp_path / "postmaster.txt").read_text())  # the child's reaper may have removed data/ already
    assert wait_for(lambda: not _alive(server) and not _alive(pid), timeout=60), "the run's processes outlived it"
    assert wait_for(lambda: not data.parent.exists(), timeout=30), f"{data.parent} was left behind"


def test_the_sweep_stops_and_removes_only_clusters_whose_owner_is_gone(tmp_path: Path) -> None:
    def cluster(name: str, owner: str | None) -> tuple[Path, subprocess.Popen[bytes]]:
        base = tmp_path / f"{reaper.CLUSTER_PREFIX}{name}"
        (base / "data").mkdir(parents=True)
        # A stand-in postmaster: a process whose command line names the data folder, as postgres's does.
        postmaster = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(base / "data")])
        (base / "data" / "postmaster.pid").write_text(f"{postmaster.pid}\n{base / 'data'}\n")
        if owner is not None:
            (base / "owner").write_text(owner)
        return base, postmaster

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = os.getpid()
    live = Path(f"/proc/{me}/stat").read_text().rsplit(")", 1)[1].split()[19]
    clusters = {
        "dead": cluster("dead", f"{gone.pid} 1\n"),  # the owner's pid runs no more
        "reused": cluster("reused", f"{me} 1\n"),  # the pid runs, but started at another time: not the owner
        "alive": cluster("alive", f"{me} {live}\n"),
        "unowned": cluster("unowned", None),  # made by a run that wrote no owner: not ours to judge
    }
    try:
        swept = reaper.sweep_stale_clusters(tmp_path, timeout=30)
        assert sorted(p.name for p in swept) == [f"{reaper.CLUSTER_PREFIX}dead", f"{reaper.CLUSTER_PREFIX}reused"]
        for name, (base, postmaster) in clusters.items():
            stale = name in ("dead", "reused")
            assert base.exists() is not stale, name
            if stale:
                assert postmaster.wait(30) == -signal.SIGQUIT, name
            else:
                assert postmaster.poll() is None, name
    finally:
        for _, postmaster in clusters.values():
            postmaster.kill()
            postmaster.wait()
