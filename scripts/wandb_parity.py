"""Run W&B's own unit tests of ``wandb.automations`` against runalert: a manual measurement (docs/wandb-parity.md).

No W&B code is in this repository. This script takes a checkout of W&B's public repository (``git clone
https://github.com/wandb/wandb``; CI cannot reach GitHub, so this is run by hand), copies its automation tests
(``tests/unit_tests/test_automations/`` and ``tests/unit_tests/test_filters/``) to a folder outside the project,
rewrites only their import lines (``wandb.automations`` -> ``runalert.automations``; W&B's test helpers and client
objects -> ``_parity_support``, a small module this script writes: runalert's scopes for W&B's mocked
``Project``/``ArtifactCollection``/``Registry``, base64 ids for ``b64encode_ascii``), runs them with pytest and prints
how many pass among those that apply to the public API. Tests that need W&B's GraphQL layer, its client objects or
its private ``wandb._filters`` module do not apply and are listed apart (``NOT_APPLICABLE``).

    .venv/bin/python scripts/wandb_parity.py --wandb ~/src/wandb --out /tmp/wandb-parity
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

TEST_DIRS = ("tests/unit_tests/test_automations", "tests/unit_tests/test_filters")

NOT_APPLICABLE = {
    "test_automations.test_automations": "W&B's GraphQL mutation inputs (prepare_to_create/prepare_to_update in "
    "wandb.automations._inputs)",
    "test_automations.test_scopes": "scopes validated from W&B's client objects (wandb.apis.public "
    "Team/Organization/Registry) and GraphQL fragments; entity scopes (runalert has no entities)",
    "test_filters.test_filters": "W&B's private wandb._filters module (MongoDB operator classes, simplify_expr)",
    "test_filters.test_validation": "W&B's private wandb._filters.FilterValidator",
    "test_public_action_type_enum_is_subset_of_generated": "W&B's GraphQL schema enums (wandb.automations._generated)",
    "test_public_event_type_enum_is_subset_of_generated": "W&B's GraphQL schema enums (wandb.automations._generated)",
}

SUPPORT = '''"""Stand-ins for W&B's test helpers and client objects, as runalert objects (scripts/wandb_parity.py)."""

import base64
import re
from typing import Any

from runalert.alert import AlertLevel
from runalert.automations import *  # noqa: F403 - W&B's internal module paths -> runalert's public names
from runalert.automations import Action, ArtifactCollectionScope, Event, ProjectScope, RegistryScope
from runalert.automations import RunState as ReportedRunState
from runalert.automations.scopes import AutomationScope

FIELD_REGEX = re.compile(r"\\A[a-zA-Z_]\\w*\\Z", flags=re.ASCII)
AlertSeverity = AlertLevel
TriggeredActionType = EventTriggeringConditionType = TriggerScopeType = None
INVALID_INPUT_EVENTS: tuple[Any, ...] = ()
INVALID_INPUT_ACTIONS: tuple[Any, ...] = ()
InputAction, InputEvent = Action, Event
SavedAction = SavedNoOpAction = SavedNotificationAction = SavedWebhookAction = SavedEvent = None
REGISTRY_PREFIX = "wandb-registry-"


def b64encode_ascii(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def nameof(obj: Any) -> str:
    return getattr(obj, "__name__", type(obj).__name__)


def ArtifactCollectionFragment(**kwargs: Any) -> dict[str, Any]:
    return kwargs


RegistryFragment = ProjectScopeFields = ArtifactCollectionFragment


class Project:
    def __new__(cls, service_api: Any = None, entity: str = "", project: str = "", attrs: Any = None) -> Any:
        return ProjectScope(name=project, entity=entity)


class ArtifactCollection:
    def __new__(cls, service_api: Any = None, entity: str = "", project: str = "", name: str = "", **_: Any) -> Any:
        return ArtifactCollectionScope(name=name, project=project)


class Registry:
    def __new__(cls, service_api: Any = None, name: str = "", **_: Any) -> Any:
        return RegistryScope(name=REGISTRY_PREFIX + name)


class Team:
    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return None


class Organization(Team):
    pass


MockerFixture = Any
'''

CONFTEST = '''"""pytest-mock's session_mocker, as much of it as W&B's conftest uses (by scripts/wandb_parity.py)."""

import types
import unittest.mock

import pytest


@pytest.fixture(scope="session")
def session_mocker():
    return types.SimpleNamespace(Mock=unittest.mock.Mock)
'''

# (pattern, replacement) on import lines only.
IMPORTS = [
    (
        r"^from wandb\.automations\._run_state_filters import ReportedRunState$",
        "from runalert.automations import RunState as ReportedRunState",
    ),
    (r"^from wandb\.automations\.\w+ import ", "from _parity_support import "),
    (r"^from wandb\.automations import ", "from runalert.automations import "),
    (r"^from wandb\.automations\._generated import ", "from _parity_support import "),
    (r"^from wandb\.automations\._inputs import ", "from _parity_support import "),
    (r"^from wandb\.sdk\.wandb_alerts import AlertLevel$", "from runalert.alert import AlertLevel"),
    (r"^from wandb\._strutils import ", "from _parity_support import "),
    (r"^from wandb\.apis\.public import ", "from _parity_support import "),
    (r"^from wandb\.sdk\.artifacts\.\S+ import ", "from _parity_support import "),
    (r"^from wandb\._filters import FIELD_REGEX$", "from _parity_support import FIELD_REGEX"),
    (r"^from pytest_mock import MockerFixture$", "from _parity_support import MockerFixture"),
    (r"^    from wandb\.apis\.public\.service_api import ServiceApi$", "    ServiceApi = object"),
    (r"^    from wandb\.apis\.public import ", "    from _parity_support import "),
    (r"^    from wandb\.automations\.\w+ import ", "    from _parity_support import "),
]


def _rewrite(text: str) -> str:
    lines = []
    for original in text.splitlines():
        line = original
        for pattern, replacement in IMPORTS:
            if re.match(pattern, line):
                line = re.sub(pattern, replacement, line)
                break
        lines.append(line)
    text = "\n".join(lines) + "\n"
    # multi-line "from wandb.automations import (" blocks
    text = re.sub(r"^from wandb\.automations import \(", "from runalert.automations import (", text, flags=re.M)
    return re.sub(r"^from wandb\.automations\.\w+ import \(", "from _parity_support import (", text, flags=re.M)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wandb", type=Path, required=True, help="a checkout of github.com/wandb/wandb")
    parser.add_argument("--out", type=Path, default=Path("/tmp/wandb-parity"), help="where to copy (outside the repo)")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    if Path(__file__).resolve().parents[1] in out.parents:
        parser.error("--out must be outside the project (no W&B code goes into it)")
    shutil.rmtree(out, ignore_errors=True)
    for folder in TEST_DIRS:
        target = out / folder
        shutil.copytree(args.wandb / folder, target)
        for path in target.glob("*.py"):
            path.write_text(_rewrite(path.read_text()))
    for init in (out / "tests", out / "tests/unit_tests"):
        (init / "__init__.py").touch()
    (out / "_parity_support.py").write_text(SUPPORT)
    (out / "conftest.py").write_text(CONFTEST)
    report = out / "report.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--rootdir",
            str(out),
            "--continue-on-collection-errors",
            "--junitxml",
            str(out / "junit.xml"),
            "tests/unit_tests",
            "-o",
            "addopts=",
        ],
        cwd=out,
        check=False,
    )
    if not (out / "junit.xml").exists():
        print("\npytest ran nothing (W&B's conftest did not import against this runalert): 0 pass")
        return 1
    results = _results(out / "junit.xml")
    applies = {k: v for k, v in results.items() if _not_applicable(k) is None}
    passed = sorted(k for k, v in applies.items() if v == "passed")
    failed = sorted(k for k, v in applies.items() if v != "passed")
    report.write_text(json.dumps({"passed": passed, "failed": failed}, indent=1))
    print(f"\napply to the public API: {len(applies)}; passed {len(passed)} ({len(passed) / max(1, len(applies)):.1%})")
    print(f"not applicable: {len(results) - len(applies)}")
    for name in failed:
        print(f"  failed: {name}")
    return 0


def _not_applicable(test_id: str) -> str | None:
    test_id = test_id.replace("/", ".").replace(".py", "")
    for key, why in NOT_APPLICABLE.items():
        if key in test_id:
            return why
    return None


def _results(junit: Path) -> dict[str, str]:
    import xml.etree.ElementTree as ET

    found: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('file') or case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        if outcome != "skipped":
            found[name] = outcome
    return found


if __name__ == "__main__":
    raise SystemExit(main())
