"""Slack threads on the server (integration option ``threads``, a bot token): a run's first message starts a
thread and its follow-ups are replies in it (ERROR replies broadcast to the channel), remembered in the database
so that a restarted server goes on in the same thread. Against a Slack Web API on loopback (tests/slack_api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.slack_api import TOKEN, SlackAPI
from tests.support import wait_for

P = "/api/v1/projects"


@pytest.fixture
def slack() -> Iterator[SlackAPI]:
    with SlackAPI() as api:
        yield api


def _setup(api: Any, slack: SlackAPI, **options: Any) -> None:
    assert api("PUT", f"{P}/p/secrets/SLACK_TOKEN", json={"value": TOKEN}).status_code in (200, 201)
    spec = {"kind": "slack", "bot_token_secret": "SLACK_TOKEN", "channel": "#alerts", "api_url": slack.url, **options}
    answer = api("PUT", f"{P}/p/integrations/team", json=spec)
    assert answer.status_code == 201, answer.text


def test_recovered_after_a_heartbeat_timeout_is_a_reply_in_the_runs_thread_with_the_run_link(
    make_client: Any, slack: SlackAPI
) -> None:
    client = make_client(heartbeat_timeout=0.5, public_url="https://runalert.example.org")
    _setup(client.request, slack, threads=True)
    client.put(f"{P}/p/runs/r1", json={"name": "bert-large"})
    assert wait_for(lambda: len(slack.messages) == 1)  # FAILED for silence: the run's first message
    # Stopped (its thread joined), the monitor cannot fail the run a second time if a loaded machine lets another
    # 0.5 s of silence pass between the heartbeat and the state change below.
    client.app.state.ctx.heartbeats.stop()
    assert client.post(f"{P}/p/runs/r1/heartbeat").json()["state"] == "RUNNING"
    assert client.post(f"{P}/p/runs/r1/state", json={"state": "finished"}).status_code == 200
    assert wait_for(lambda: len(slack.messages) == 2)
    failed, recovered = slack.messages
    assert "no heartbeat" in failed.header and failed.thread_ts is None
    assert "recovered" in recovered.header
    assert (recovered.thread_ts, recovered.reply_broadcast) == (failed.ts, False)
    link = "<https://runalert.example.org/runs/p/r1|bert-large>"
    assert all(link in m.blocks[-1]["elements"][0]["text"] for m in (failed, recovered))
    assert slack.top_level() == [failed]  # the channel shows one message; the rest is in its thread


def test_the_thread_survives_a_restart_and_error_replies_are_broadcast(server_process: Any, slack: SlackAPI) -> None:
    server = server_process()
    _setup(server.api, slack, threads=True)
    server.api("PUT", f"{P}/p/runs/r1", json={"name": "bert"})
    server.api("PUT", f"{P}/p/runs/r2", json={"name": "gpt"})
    server.api("POST", f"{P}/p/alerts", json={"title": "Loss is NaN", "run_id": "r1", "level": "warn"})
    assert wait_for(lambda: len(slack.messages) == 1, timeout=60)

    def recorded() -> bool:  # the delivery is recorded (with its thread), not only received by Slack
        return bool(server.api("GET", f"{P}/p/alerts").json()[0]["deliveries"][0]["status"] == "delivered")

    assert wait_for(recorded, timeout=60)
    server.kill()
    server.start()  # a new process: the thread comes from the database
    for body in (
        {"title": "Training summary", "text": "finite again from step 40", "run_id": "r1"},
        {"title": "Run crashed", "text": "CUDA out of memory", "run_id": "r1", "level": "error"},
        {"title": "Loss is NaN", "run_id": "r2", "level": "warn"},
    ):
        server.api("POST", f"{P}/p/alerts", json=body)
    assert wait_for(lambda: len(slack.messages) == 4, timeout=60)
    assert wait_for(
        lambda: all(
            d["status"] == "delivered" for a in server.api("GET", f"{P}/p/alerts").json() for d in a["deliveries"]
        )
    )
    assert len(slack.messages) == 4
    first = slack.messages[0]
    assert [(m.header, m.reply_broadcast) for m in slack.replies(first.ts)] == [
        ("Training summary", False),
        ("Run crashed", True),
    ]
    other = slack.messages[3]
    assert other.thread_ts is None and "gpt" in other.flat  # another run: its own thread
    assert [m.header for m in slack.top_level()] == ["Loss is NaN", "Run crashed", "Loss is NaN"]


def test_without_threads_every_alert_is_a_message_of_its_own(make_client: Any, slack: SlackAPI) -> None:
    client = make_client()
    _setup(client.request, slack)
    client.put(f"{P}/p/runs/r1", json={"name": "bert"})
    for title in ("one", "two"):
        client.post(f"{P}/p/alerts", json={"title": title, "run_id": "r1"})
    assert wait_for(lambda: len(slack.messages) == 2)
    assert all(m.thread_ts is None for m in slack.messages)


def test_slack_refusing_the_thread_dead_letters_with_slacks_error_and_no_token(
    make_client: Any, slack: SlackAPI
) -> None:
    client = make_client()
    _setup(client.request, slack, threads=True)
    slack.token = "xoxb-another-token"  # the app was reinstalled: the stored token is no longer valid
    client.put(f"{P}/p/runs/r1", json={"name": "bert"})
    client.post(f"{P}/p/alerts", json={"title": "one", "run_id": "r1"})

    def delivery() -> dict[str, Any]:
        return client.get(f"{P}/p/alerts").json()[0]["deliveries"][0]  # type: ignore[no-any-return]

    assert wait_for(lambda: delivery()["status"] == "dead")
    assert "invalid_auth" in delivery()["last_error"] and TOKEN not in delivery()["last_error"]
