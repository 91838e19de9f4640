"""The documentation runs: every ``python`` block of README.md and docs/*.md, and every file format a command reads.

Each Python block is executed as written, in a fresh namespace, with the environment a user would have:
``RUNALERT_WEBHOOK_URL``/``RUNALERT_WEBHOOK_SECRET``, ``RUNALERT_SLACK_WEBHOOK_URL`` and ``RUNALERT_SMTP_*``
point at receivers on loopback (a webhook receiver, a Slack-shaped receiver, an aiosmtpd server), so every alert
a block sends is really delivered. A block fails if it raises, if runalert logs a warning (a failed delivery),
or, when it sends alerts (``.alert(``, ``.fit(``, ``.train(``), if none arrives. A block preceded by
``<!-- docs-test: server -->`` also gets ``RUNALERT_SERVER_URL`` of a real server process started for this
module. Blocks that are not Python to run carry another language tag (``bash``, ``text``, ``toml``...).

The documented files are applied too: ``runalert.toml`` (docs/channels.md) is loaded as settings, and the YAML
and JSON files of ``runalert automations apply -f`` (docs/rules.md) are applied to a real server.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from aiosmtpd.controller import Controller
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

import runalert
from tests.support import Receiver, free_port, missing, wait_for

if TYPE_CHECKING:
    from tests.server.conftest import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
FENCE = re.compile(
    r"(?:^<!-- docs-test: (?P<marker>[a-z, ]+) -->\n)?^```(?P<lang>[\w+-]*)(?P<info>[^\n]*)\n(?P<code>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
SENDS = re.compile(r"\.alert\(|\.fit\(|\.train\(")
WEBHOOK_SECRET = "docs-signing-secret-0123456789"


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its ``title="..."``, its markers and its text."""

    page: Path
    line: int
    lang: str
    title: str
    markers: frozenset[str]
    code: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(pages: list[Path] = PAGES) -> list[Block]:
    found: list[Block] = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            title = re.search(r'title="([^"]+)"', match["info"])
            markers = frozenset(m.strip() for m in (match["marker"] or "").split(",") if m.strip())
            line = text.count("\n", 0, match.start("lang")) + 1
            found.append(Block(page, line, match["lang"], title[1] if title else "", markers, match["code"]))
    return found


PYTHON = [b for b in blocks() if b.lang == "python"]


def titled(title: str) -> Block:
    matches = [b for b in blocks() if b.title == title]
    assert len(matches) == 1, f"expected one block titled {title!r} in the docs, found {len(matches)}"
    return matches[0]


# -- receivers --------------------------------------------------------------------------------------------------
class Inbox:
    """An SMTP handler for aiosmtpd: keeps every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``python -m runalert.server`` on a free loopback port, SQLite in its own home, no API keys, none of the
    machine's RUNALERT_* settings (it starts before the tests' own isolated environment)."""
    pytest.importorskip("fastapi", reason="the server blocks need the server extra")
    from tests.server.conftest import ServerProcess

    home = tmp_path_factory.mktemp("server-home")
    with pytest.MonkeyPatch.context() as env:
        for name in [name for name in os.environ if name.startswith("RUNALERT_")]:
            env.delenv(name)
        proc = ServerProcess(home, f"sqlite:///{home / 'runalert.db'}", {}).start()
    yield proc
    proc.stop()


@dataclass
class DocsEnv:
    webhook: Receiver
    slack: Receiver
    inbox: Inbox


@pytest.fixture
def docs_env(
    isolated_env: Path, httpserver: HTTPServer, smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> DocsEnv:
    """The credentials a user would export, pointed at receivers on loopback (after isolated_env cleared them)."""
    webhook, slack = Receiver(httpserver, "/hook"), Receiver(httpserver, "/slack")
    inbox, port = smtp
    monkeypatch.setenv("RUNALERT_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("RUNALERT_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("RUNALERT_SLACK_WEBHOOK_URL", slack.url)
    monkeypatch.setenv("RUNALERT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("RUNALERT_SMTP_PORT", str(port))
    monkeypatch.setenv("RUNALERT_SMTP_SENDER", "runs@example.com")
    monkeypatch.setenv("RUNALERT_SMTP_RECIPIENTS", "ana@example.com")
    return DocsEnv(webhook, slack, inbox)


# -- every Python block runs --------------------------------------------------------------------------------------
def test_the_docs_have_python_blocks_to_run() -> None:
    pages = {b.page.name for b in PYTHON}
    assert {"README.md", "index.md", "lightning.md", "transformers.md", "keras.md", "channels.md"} <= pages


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_runs(
    block: Block, docs_env: DocsEnv, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    for framework in ("keras", "lightning", "transformers"):  # not imported here: Keras reads KERAS_BACKEND then
        imported = f"import {framework}" in block.code or f"from {framework}" in block.code
        if imported and importlib.util.find_spec(framework) is None:
            missing(f"{block.id} needs {framework}")
    if "server" in block.markers:
        server: ServerProcess = request.getfixturevalue("server")
        os.environ["RUNALERT_SERVER_URL"] = server.url  # removed with the rest of the environment below
        os.environ["RUNALERT_PROJECT"] = "my-project"
    environ = dict(os.environ)
    caplog.set_level(logging.WARNING, logger="runalert")
    try:
        exec(compile(block.code, block.id, "exec"), {"__name__": "__main__"})
        assert runalert.flush(timeout=30) is not False
    finally:
        os.environ.clear()
        os.environ.update(environ)
        os.environ.pop("RUNALERT_SERVER_URL", None)
        os.environ.pop("RUNALERT_PROJECT", None)
    failures = [
        r.getMessage() for r in caplog.records if r.name.startswith("runalert") and r.levelno >= logging.WARNING
    ]
    assert not failures, f"{block.id} made runalert log: {failures}"
    if SENDS.search(block.code):
        assert docs_env.webhook.wait(1), f"{block.id} sends alerts, but none reached the webhook receiver"
    if "Email(" in block.code:
        assert wait_for(lambda: docs_env.inbox.messages), f"{block.id} sends an email, none arrived"


# -- runalert.toml ----------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return getattr(value, "value", value)


def test_the_documented_runalert_toml_is_what_settings_read(isolated_env: Path) -> None:
    from runalert.config import Settings, build_channels

    block = titled("runalert.toml")
    Path("runalert.toml").write_text(block.code)
    settings = Settings()
    for key, value in tomllib.loads(block.code).items():
        got = _plain(getattr(settings, key))
        assert got == value or str(got).upper() == str(value).upper(), f"{key}: the file says {value!r}, got {got!r}"
    names = sorted(type(c).__name__ for c in build_channels(settings))
    assert names == ["Email", "SlackWebhook", "Webhook"]


def test_a_wrong_runalert_toml_names_the_key(isolated_env: Path) -> None:
    from runalert.config import Settings

    Path("runalert.toml").write_text(
        titled("runalert.toml").code.replace('slack_min_level = "WARN"', 'slack_min_level = "LOUD"')
    )
    with pytest.raises(ValueError, match="slack_min_level"):
        Settings()


# -- runalert automations apply -f -------------------------------------------------------------------------------
def _apply(server: ServerProcess, path: Path) -> str:
    from runalert.cli import app

    result = CliRunner().invoke(
        app, ["automations", "apply", "-f", str(path), "-p", "my-project", "--server", server.url]
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("title", ["automations.yaml", "automations.json"])
def test_the_documented_automations_file_applies(
    title: str, server: ServerProcess, docs_env: DocsEnv, isolated_env: Path
) -> None:
    from runalert import Client

    client = Client(server.url, project="my-project")
    client.put_integration("ops", "webhook", url=docs_env.webhook.url)
    block = titled(title)
    path = isolated_env.parent / title
    path.write_text(block.code)
    if title.endswith(".yaml"):
        import yaml

        specs = yaml.safe_load(block.code)["automations"]
    else:
        import json

        specs = json.loads(block.code)["automations"]
    names = [s["name"] for s in specs]

    first = _apply(server, path)
    assert [line.split(": ")[0] for line in first.splitlines()] == names
    assert all(line.split(": ")[1] in ("created", "updated", "unchanged") for line in first.splitlines())
    again = _apply(server, path)
    assert again.splitlines() == [f"{name}: unchanged" for name in names]
    stored = {
        a["name"]: a for a in requests.get(f"{server.url}/api/v1/projects/my-project/automations", timeout=10).json()
    }
    for spec in specs:
        assert stored[spec["name"]]["spec"]["event"]["event_type"] == spec["event"]["event_type"]
        assert stored[spec["name"]]["spec"]["action"]["action_type"] == spec["action"]["action_type"]


GUESSED = {
    "no event_type": (
        "name: guessed\nevent: {type: run_metric, metric: loss, op: '>', value: 2}\naction: {action_type: NO_OP}\n"
    ),
    "unknown event_type": "name: guessed\nevent: {event_type: RUN_METRICS, filter: {}}\naction: {action_type: NO_OP}\n",
}


@pytest.mark.parametrize(
    "case",
    [
        "no event_type",
        "unknown event_type",
    ],
)
def test_a_wrong_automations_file_names_the_field_and_the_allowed_values(
    case: str, server: ServerProcess, isolated_env: Path
) -> None:
    from runalert.cli import app

    path = isolated_env.parent / "guessed.yaml"
    path.write_text(GUESSED[case])
    result = CliRunner().invoke(
        app, ["automations", "apply", "-f", str(path), "-p", "my-project", "--server", server.url]
    )
    assert result.exit_code != 0
    assert "event_type" in result.output
    assert "RUN_METRIC" in result.output and "RUN_STATE" in result.output, result.output
    names = [a["name"] for a in requests.get(f"{server.url}/api/v1/projects/my-project/automations", timeout=10).json()]
    assert "guessed" not in names
