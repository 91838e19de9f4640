"""Packaging: what ``import runalert`` loads, and the wheel and sdist installed as a user would.

The import checks run in fresh interpreters (this process has imported everything already) and look at the
mechanism, never at a clock: after ``import runalert`` none of the heavy modules is in ``sys.modules``, every
public name still resolves (to the object its module defines), and ``runalert.alert()`` works at once.

The install check builds the wheel and sdist with ``python -m build`` (the wheel from the sdist, as a release
would), runs ``twine check``, installs the wheel into a bare virtual environment (the core dependencies from
the index, no framework, no server), runs the quickstart and the ``runalert`` command there, and imports each
adapter, which must fail with a message naming its extra.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import runalert
from tests.support import missing

ROOT = Path(__file__).resolve().parent.parent

# Modules ``import runalert`` must not load: the rest of the package, its dependencies (loaded by the first
# alert), the command line's (typer, rich: only when ``runalert`` runs) and the server's.
NOT_ON_IMPORT = [
    "runalert.alerting",
    "runalert.automations",
    "runalert.channels",
    "runalert.client",
    "runalert.config",
    "runalert.monitor",
    "runalert.cli",
    "runalert.server",
    "requests",
    "tenacity",
    "pydantic",
    "pydantic_settings",
    "typer",
    "click",
    "rich",
    "fastapi",
    "sqlalchemy",
    "uvicorn",
]
# The runalert modules an adapter may load at import time (the rest waits for the first callback); each of these
# imports only the standard library (runalert.checkpoints: finding the framework's checkpoint saves).
ADAPTER_MAY_LOAD = {
    "runalert",
    "runalert.alert",
    "runalert._default_alerter",
    "runalert._log",
    "runalert._adapter",
    "runalert._lightning_results",
    "runalert.checkpoints",
}

# The package's own docstring example, as a user copies it.
QUICKSTART = """\
import runalert
from runalert import AlertLevel

runalert.alert(title="Low accuracy", text="val_acc 0.41 < 0.5", level=AlertLevel.WARN, wait_duration=300)
"""


def fresh(code: str, *, python: str = sys.executable, cwd: Path | None = None, timeout: float = 60) -> str:
    """Run ``code`` in a new interpreter (this test's environment: RUNALERT_HOME isolated); its stdout."""
    done = subprocess.run(
        [python, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_env(bare=python != sys.executable),
    )
    assert done.returncode == 0, f"{code!r} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout


def _env(*, bare: bool = False) -> dict[str, str]:
    """This test's environment; for the bare virtual environment, without anything that points at this checkout."""
    env = {k: v for k, v in os.environ.items() if not (bare and k in ("PYTHONPATH", "PYTHONHOME"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


# -- import runalert ------------------------------------------------------------------------------------------
def test_import_runalert_loads_no_heavy_module() -> None:
    loaded = fresh(
        f"import json, sys\nimport runalert\nprint(json.dumps([m for m in {NOT_ON_IMPORT!r} if m in sys.modules]))"
    )
    assert json.loads(loaded) == []


def test_every_public_name_resolves_after_a_plain_import() -> None:
    report = json.loads(
        fresh(
            "import importlib, json, runalert\n"
            "names = {}\n"
            "for name in runalert.__all__:\n"
            "    value = getattr(runalert, name)\n"
            "    home = getattr(value, '__module__', None)\n"
            "    same = home is None or getattr(importlib.import_module(home), name, None) is value\n"
            "    names[name] = [home, same]\n"
            "try:\n"
            "    runalert.no_such_name\n"
            "    missing = None\n"
            "except AttributeError as exc:\n"
            "    missing = str(exc)\n"
            "print(json.dumps({'names': names, 'dir': dir(runalert), 'missing': missing,\n"
            "                  'channels': runalert.channels.Console.__module__,\n"
            "                  'alert_is_function': callable(runalert.alert)}))"
        )
    )
    assert set(report["names"]) == set(runalert.__all__)
    assert all(same for _, same in report["names"].values()), report["names"]  # the module's own object
    assert report["names"]["Alerter"][0] == "runalert.alerting.alerter"
    assert report["names"]["Settings"][0] == "runalert.config"
    assert report["names"]["Client"][0].startswith("runalert.client")
    assert report["names"]["SendNotification"][0].startswith("runalert.automations")
    assert set(runalert.__all__) <= set(report["dir"])  # dir() lists the lazy names too
    assert {"channels", "automations", "client"} <= set(report["dir"])
    assert report["channels"] == "runalert.channels.console"  # the former subpackage attributes still work
    assert report["missing"] == "module 'runalert' has no attribute 'no_such_name'"
    assert report["alert_is_function"]  # loading runalert.alerting did not rebind runalert.alert to the module


def test_alert_right_after_import_reaches_the_console(tmp_path: Path) -> None:
    # No channel configured: the console. The first alert builds the default alerter (loading its modules);
    # the second one proves runalert.alert is still the function once they are loaded.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            QUICKSTART + "runalert.alert('Second alert', 'after the modules loaded', 'error', 0)\n"
            "assert runalert.finish(10)\n",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    assert "WARN  Low accuracy" in done.stderr and "val_acc 0.41 < 0.5" in done.stderr
    assert "ERROR Second alert" in done.stderr


@pytest.mark.slow  # imports Lightning in a new process: seconds
def test_lightning_adapter_loads_only_what_its_import_needs() -> None:
    if importlib.util.find_spec("lightning") is None:
        missing("lightning is not installed (pip install 'runalert[lightning]')")
    loaded = json.loads(
        fresh(
            "import json, sys\nimport lightning.pytorch\nimport runalert.lightning\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('runalert'))))",
            timeout=300,
        )
    )
    assert set(loaded) - {"runalert.lightning"} <= ADAPTER_MAY_LOAD, loaded


# -- the wheel and sdist, installed into a bare virtual environment -----------------------------------------------
def _run(args: list[str | Path], *, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_env(bare=True),
    )


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_wheel_installs_into_a_bare_venv_and_runs_the_quickstart(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = _run([sys.executable, "-m", "build", "--outdir", dist, ROOT])  # the sdist, then the wheel from it
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel = next(dist.glob("runalert-*.whl"))
    sdist = next(dist.glob("runalert-*.tar.gz"))
    assert wheel.name == f"runalert-{runalert.__version__}-py3-none-any.whl"
    checked = _run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist])
    assert checked.returncode == 0, checked.stdout + checked.stderr

    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "runalert/py.typed",
        "runalert/server/templates/index.html",
        "runalert/server/migrations/env.py",
        "runalert/server/migrations/script.py.mako",
    ):
        assert needed in names, f"{needed} is not in the wheel"
    assert not any(n.startswith(("tests/", "benchmarks/", "integrations/")) for n in names)

    # A bare environment: the wheel and the core dependencies it declares, nothing else.
    venv = tmp_path / "bare"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-compile", "-q", wheel])
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    absent = json.loads(
        fresh(
            "import importlib.util, json\n"
            "print(json.dumps([m for m in ('lightning', 'torch', 'transformers', 'keras', 'fastapi', 'sqlalchemy',"
            " 'uvicorn', 'psycopg') if importlib.util.find_spec(m) is None]))",
            python=str(python),
        )
    )
    assert len(absent) == 8, f"a bare install brought {absent}"

    # The quickstart, from the installed wheel (not this checkout), to the console.
    work = tmp_path / "work"
    work.mkdir()
    quick = _run([python, "-c", QUICKSTART + "assert runalert.finish(10)\nprint(runalert.__file__)\n"], cwd=work)
    assert quick.returncode == 0, quick.stderr
    assert Path(quick.stdout.strip()).is_relative_to(venv)
    assert "WARN  Low accuracy" in quick.stderr and "val_acc 0.41 < 0.5" in quick.stderr
    version = fresh(
        "import importlib.metadata as m, runalert; print(m.version('runalert'), runalert.__version__)",
        python=str(python),
        cwd=work,
    )
    assert version.split() == [runalert.__version__, runalert.__version__]

    # The command, with the core's typer and rich.
    sent = _run([venv / "bin" / "runalert", "send", "From the wheel", "a bare install", "--level", "error"], cwd=work)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "sent to 1 channel(s); failed 0" in sent.stdout
    assert "ERROR From the wheel" in sent.stderr

    # A server command without the server extra: the extra to install, not a traceback.
    serve = _run([venv / "bin" / "runalert", "serve", "--port", "0"], cwd=work, timeout=60)
    assert serve.returncode == 2, serve.stdout + serve.stderr
    assert "pip install 'runalert[server]'" in serve.stderr and "Traceback" not in serve.stderr, serve.stderr

    # Each adapter without its framework: an ImportError that names the extra to install.
    for adapter, extra in (("lightning", "lightning"), ("transformers", "transformers"), ("keras", "keras")):
        failed = _run([python, "-c", f"import runalert.{adapter}"], cwd=work)
        assert failed.returncode != 0
        assert "ImportError" in failed.stderr or "ModuleNotFoundError" in failed.stderr
        assert f"pip install 'runalert[{extra}]'" in failed.stderr, failed.stderr[-1500:]


def test_postgresql_without_its_driver_names_the_postgres_extra() -> None:
    # psycopg is the postgres extra's, not the server's: a server without it is told which extra to install.
    # (sys.modules[name] = None is how Python marks a module as not importable.)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nsys.modules['psycopg'] = None\nfrom runalert.server.db import make_engine\n"
            "make_engine('postgresql+psycopg://runalert@127.0.0.1:1/runalert')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr
    assert "pip install 'runalert[postgres]'" in done.stderr, done.stderr[-1500:]
