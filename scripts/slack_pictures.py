"""The pictures of docs/teams.md: what a Slack channel shows of a roll-up, a run's thread, a group's end, a digest.

    python scripts/slack_pictures.py              # writes docs/images/slack-{rollup,thread,group,digest}.png
    python scripts/slack_pictures.py --out /tmp   # elsewhere

The messages are real: a server app (in this process) delivers them to the loopback Slack Web API of the tests
(``tests/slack_api.py``), which keeps them as Slack would (messages, thread replies, updates in place). They are
then drawn as Slack lays out Block Kit (header, text, fields, context; replies under their message) in a small
HTML page, and photographed with the headless Chromium driver the tests use (``tests/support/chromium.py``).
The group message (``OnGroupFinished``) comes from the server's own check of groups; the digest (``OnSchedule``)
from its check of schedules, with the server's clock moved past the next scheduled time (``clock_offset``). Every
message photographed is checked against Slack's Block Kit limits (``runalert.slack_limits``) first.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from croniter import croniter  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from tests.slack_api import TOKEN, Message, SlackAPI  # noqa: E402
from tests.support.chromium import Chromium  # noqa: E402

from runalert.automations import (  # noqa: E402
    OnGroupFinished,
    OnRunMetric,
    OnSchedule,
    Project,
    RunEvent,
    SendNotification,
)
from runalert.automations.automation import NewAutomation  # noqa: E402
from runalert.server.app import create_app  # noqa: E402
from runalert.server.settings import ServerSettings  # noqa: E402
from runalert.slack_limits import block_kit_problems  # noqa: E402

P = "/api/v1/projects/vision"
EMOJI = {":rotating_light:": "#e01e5a", ":warning:": "#ecb22e", ":large_blue_circle:": "#1d9bd1"}
CSS = """
body { font-family: 'DejaVu Sans', sans-serif; font-size: 15px; color: #1d1c1d; margin: 0; background: #fff; }
.channel { padding: 12px 20px; border-bottom: 1px solid #ddd; font-weight: bold; }
.msg { display: flex; padding: 10px 20px; }
.avatar { width: 36px; height: 36px; border-radius: 6px; background: #4a154b; color: #fff; font-weight: bold;
          display: flex; align-items: center; justify-content: center; margin-right: 10px; flex: none; }
.who { font-weight: bold; } .who small { color: #616061; font-weight: normal; margin-left: 6px; }
.header { font-size: 18px; font-weight: bold; margin: 4px 0; }
.section { margin: 4px 0; white-space: pre-wrap; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 4px 24px; margin: 6px 0; max-width: 640px; }
.context { color: #616061; font-size: 13px; margin-top: 4px; }
a { color: #1264a3; text-decoration: none; }
.dot { display: inline-block; width: 12px; height: 12px; border-radius: 6px; vertical-align: -1px; }
.thread { margin-left: 66px; border-left: 3px solid #ddd; }
.note { color: #616061; font-size: 13px; margin: 0 20px 6px 66px; }
"""


def mrkdwn(text: str) -> str:
    """Slack's mrkdwn (already escaped with &amp; &lt; &gt;, which HTML reads alike) as HTML."""

    def token(match: re.Match[str]) -> str:
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("!date^"):
            stamp = int(target.split("^")[1])
            return time.strftime("%b %d %H:%M:%S", time.gmtime(stamp))
        if target.startswith(("http://", "https://")):
            return f'<a href="{target}">{label or target}</a>'
        return f"<b>@{label or target.lstrip('@!')}</b>"

    out = re.sub(r"<([^<>]+)>", token, text)
    for code, colour in EMOJI.items():
        out = out.replace(code, f'<span class="dot" style="background:{colour}"></span>')
    out = re.sub(r"\*([^*\n]+)\*", r"<b>\1</b>", out)
    return re.sub(r"(?<![\w/])_([^_\n]+)_(?!\w)", r"<i>\1</i>", out)


def block_html(block: dict[str, Any]) -> str:
    kind = block["type"]
    if kind == "header":
        text = html.escape(block["text"]["text"])
        for code, colour in EMOJI.items():
            text = text.replace(code, f'<span class="dot" style="background:{colour}"></span>')
        return f'<div class="header">{text}</div>'
    if kind == "section":
        parts = []
        if "text" in block:
            parts.append(f'<div class="section">{mrkdwn(block["text"]["text"])}</div>')
        if "fields" in block:
            cells = "".join(f'<div class="section">{mrkdwn(f["text"])}</div>' for f in block["fields"])
            parts.append(f'<div class="fields">{cells}</div>')
        return "".join(parts)
    if kind == "context":
        return '<div class="context">' + " ".join(mrkdwn(e["text"]) for e in block["elements"]) + "</div>"
    return ""


def message_html(message: Message, note: str = "") -> str:
    stamp = time.strftime("%H:%M", time.gmtime())
    body = "".join(block_html(b) for b in message.blocks)
    edited = " <small>(edited)</small>" if len(message.versions) > 1 else ""
    out = (
        f'<div class="msg"><div class="avatar">ra</div><div><div class="who">runalert <small>APP {stamp}'
        f"</small>{edited}</div>{body}</div></div>"
    )
    if message.reply_broadcast:
        note = note or "also sent to # training-alerts"
    return out + (f'<div class="note">{html.escape(note)}</div>' if note else "")


def channel_html(slack: SlackAPI, notes: dict[str, str], only: Callable[[Message], bool] = lambda _m: True) -> str:
    parts = [f"<style>{CSS}</style>", '<div class="channel"># training-alerts</div>']
    for message in slack.top_level():
        problems = block_kit_problems({"text": message.text, "blocks": message.blocks})
        if problems:
            raise SystemExit(f"{message.header!r} breaks Block Kit's limits: {problems}")
        if not only(message):
            continue
        if message.thread_ts is not None and message.thread_ts != message.ts:
            continue  # a broadcast reply: shown in its thread below
        parts.append(message_html(message, notes.get(message.ts, "")))
        replies = slack.replies(message.ts)
        if replies:
            parts.append('<div class="thread">' + "".join(message_html(r) for r in replies) + "</div>")
    return "".join(parts)


def wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def app(home: Path, **overrides: Any) -> TestClient:
    settings = ServerSettings(
        home=home,
        database_url=f"sqlite:///{home / 'runalert.db'}",
        public_url="https://runalert.example.org",
        dispatch_interval=0.05,
        retry_initial=0.05,
        **overrides,
    )
    client = TestClient(create_app(settings))
    client.__enter__()
    return client


def integration(client: TestClient, slack: SlackAPI, **options: Any) -> None:
    client.put(f"{P}/secrets/SLACK_TOKEN", json={"value": TOKEN}).raise_for_status()
    spec = {"kind": "slack", "bot_token_secret": "SLACK_TOKEN", "channel": "#alerts", "api_url": slack.url}
    client.put(f"{P}/integrations/team", json={**spec, **options}).raise_for_status()


def settled(client: TestClient) -> bool:
    statuses = [d["status"] for a in client.get(f"{P}/alerts?limit=100").json() for d in a["deliveries"]]
    return bool(statuses) and not {"pending", "held"} & set(statuses)


def rollup(home: Path) -> SlackAPI:
    """Five runs crash with the same error within the interval: the first message, and one roll-up."""
    slack = SlackAPI().__enter__()
    client = app(home)
    integration(client, slack, group_interval=3)
    hosts = {"run-a": "gpu-node-7", "run-b": "gpu-node-7", "run-c": "gpu-node-7", "run-d": "gpu-node-7"}
    for name, host in [*hosts.items(), ("run-e", "gpu-node-2")]:
        client.put(f"{P}/runs/{name}", json={"name": name}).raise_for_status()
        body = {
            "title": "Run crashed: OutOfMemoryError",
            "text": "CUDA out of memory. Tried to allocate 2.00 GiB",
            "level": "error",
            "run_id": name,
            "fields": {"host": host, "step": "1200"},
        }
        client.post(f"{P}/alerts", json=body).raise_for_status()
    wait(lambda: settled(client), "the roll-up")
    client.__exit__(None, None, None)
    return slack


def thread(home: Path) -> SlackAPI:
    """A run goes silent, is failed for it, then speaks again: the recovery is a reply in the run's thread."""
    slack = SlackAPI().__enter__()
    client = app(home, heartbeat_timeout=1.0, heartbeat_check_interval=0.05)
    integration(client, slack, threads=True)
    client.put(f"{P}/runs/bert-large", json={"name": "bert-large"}).raise_for_status()
    wait(lambda: len(slack.messages) == 1, "the heartbeat timeout")
    client.post(f"{P}/runs/bert-large/heartbeat").raise_for_status()
    body = {"title": "Run crashed: OutOfMemoryError", "text": "CUDA out of memory", "level": "error"}
    client.post(f"{P}/alerts", json={**body, "run_id": "bert-large"}).raise_for_status()
    client.post(f"{P}/runs/bert-large/state", json={"state": "failed", "reason": "exception"}).raise_for_status()
    wait(lambda: settled(client) and len(slack.messages) == 3, "the replies")
    client.__exit__(None, None, None)
    return slack


def automation(client: TestClient, name: str, new: NewAutomation) -> None:
    data = {**new.model_dump(mode="json"), "name": name}
    spec = {k: v for k, v in data.items() if v is not None}
    client.put(f"{P}/automations/{name}", json=spec).raise_for_status()


def finish(client: TestClient, run: str, state: str = "FINISHED", **extra: Any) -> None:
    client.post(f"{P}/runs/{run}/state", json={"state": state, **extra}).raise_for_status()


SWEEP = [  # run, final val_loss (None: failed before it logged one), how it ended
    ("lr-3e-4", 0.213, None),
    ("lr-1e-3", 0.351, None),
    ("lr-1e-4", 0.402, None),
    ("lr-3e-3", 0.688, None),
    ("lr-1e-5", 0.934, None),
    ("lr-3e-5", 0.871, None),
    ("lr-1e-2", None, {"exception": "OutOfMemoryError", "message": "CUDA out of memory. Tried to allocate 2.00 GiB"}),
]


def sweep(client: TestClient, group: str) -> None:
    """The runs of a W&B sweep: six finish, with their val_loss, and one crashes before logging any."""
    for run, loss, failure in SWEEP:
        client.put(f"{P}/runs/{run}", json={"name": run, "group": group}).raise_for_status()
        if loss is not None:
            rows = [{"step": s, "metrics": {"val_loss": round(loss + 1.5 / (s + 1), 3)}} for s in range(0, 300, 100)]
            rows.append({"step": 300, "metrics": {"val_loss": loss}})
            client.post(f"{P}/runs/{run}/metrics", json={"rows": rows}).raise_for_status()
            finish(client, run)
        else:
            finish(client, run, "FAILED", reason="exception", failure=failure)


def group(home: Path) -> SlackAPI:
    """A sweep's seven runs end: one message, the leaderboard by val_loss and the failed run with its reason."""
    slack = SlackAPI().__enter__()
    client = app(home, group_check_interval=0.1)
    integration(client, slack)
    event = OnGroupFinished(
        scope=Project("vision"), filter=RunEvent.group.matches_regex("^wandb-sweep/"), settle=1, metric="val_loss"
    )
    automation(client, "sweep-done", event >> SendNotification(integration_id="team", severity="INFO"))
    sweep(client, "wandb-sweep/k3x9")
    wait(lambda: any(m.header.startswith("Group ") for m in slack.top_level()), "the group's message")
    wait(lambda: settled(client), "the deliveries")
    client.__exit__(None, None, None)
    return slack


DIGEST_CRON, DIGEST_ZONE = "0 9 * * 1-5", "Europe/Berlin"


def digest(home: Path) -> SlackAPI:
    """A morning digest: the server's clock is moved just past the next 9:00 of a weekday (Berlin)."""
    start = datetime.fromtimestamp(time.time(), tz=ZoneInfo(DIGEST_ZONE))
    slot = croniter(DIGEST_CRON, start).get_next(datetime).timestamp()
    slack = SlackAPI().__enter__()
    client = app(home, group_check_interval=0.1, clock_offset=slot - time.time() + 1)
    integration(client, slack)
    diverging = OnRunMetric(scope=Project("vision"), filter=RunEvent.metric("loss") > 10.0)
    automation(client, "loss-diverging", diverging >> SendNotification(integration_id="team", severity="WARN"))
    sweep(client, "wandb-sweep/k3x9")
    for run, loss in (("vit-b-5", 14.2), ("bert-base-2", 1.9)):
        client.put(f"{P}/runs/{run}", json={"name": run}).raise_for_status()
        rows = {"rows": [{"step": 1, "metrics": {"loss": loss}}]}
        client.post(f"{P}/runs/{run}/metrics", json=rows).raise_for_status()
    client.put(f"{P}/runs/vit-b-2", json={"name": "vit-b-2"}).raise_for_status()
    finish(client, "vit-b-2", "FAILED", reason="heartbeat_timeout")
    daily = OnSchedule(scope=Project("vision"), cron=DIGEST_CRON, timezone=DIGEST_ZONE, metric="val_loss")
    automation(client, "daily", daily >> SendNotification(integration_id="team", title="Morning digest"))
    wait(lambda: any(m.header == "Morning digest" for m in slack.top_level()), "the digest")
    wait(lambda: settled(client), "the deliveries")
    client.__exit__(None, None, None)
    return slack


def photograph(page: str, out: Path, folder: Path) -> None:
    source = folder / (out.stem + ".html")
    source.write_text(f"<!doctype html><meta charset=utf-8>{page}", encoding="utf-8")
    with Chromium(width=760, height=400) as browser:
        browser.open(source.as_uri())
        browser.screenshot(out, full_page=True)
    print(f"{out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        storm = rollup(folder / "storm")
        _first, second = storm.top_level()
        updates = len(second.versions) - 1
        notes = {
            second.ts: f"updated in place {'once' if updates == 1 else f'{updates} times'} while the interval was open"
        }
        photograph(channel_html(storm, notes), args.out / "slack-rollup.png", folder)
        photograph(channel_html(thread(folder / "thread"), {}), args.out / "slack-thread.png", folder)
        groups = channel_html(group(folder / "group"), {}, lambda m: m.header.startswith("Group "))
        photograph(groups, args.out / "slack-group.png", folder)
        digests = channel_html(digest(folder / "digest"), {}, lambda m: m.header == "Morning digest")
        photograph(digests, args.out / "slack-digest.png", folder)


if __name__ == "__main__":
    main()
