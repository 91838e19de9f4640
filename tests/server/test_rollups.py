"""Alert storms roll up (``group_interval``): the first alert of a group at once, the rest of the interval as one
roll-up at its end; held alerts are outbox rows, so a restart loses none. Real receivers on loopback: a webhook
receiver, and a Slack Web API (tests/slack_api.py) for the roll-up updated in place."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from runalert.server.models import Run
from runalert.server.outbox import record_alert
from runalert.server.rollup import close_due
from tests.slack_api import TOKEN, SlackAPI
from tests.support import Receiver, wait_for

P = "/api/v1/projects"
CRASH = "Run crashed: CUDA out of memory"


@pytest.fixture
def slack() -> Iterator[SlackAPI]:
    with SlackAPI() as api:
        yield api


def _statuses(api: Any) -> list[str]:
    answer = api("GET", f"{P}/p/alerts?limit=100")
    return sorted(d["status"] for a in answer.json() for d in a["deliveries"])


def _crash(api: Any, run: str, host: str = "gpu-node-7") -> dict[str, Any]:
    assert api("PUT", f"{P}/p/runs/{run}", json={"name": run}).status_code in (200, 201)
    body = {"title": CRASH, "text": "torch.OutOfMemoryError", "level": "error", "run_id": run, "fields": {"host": host}}
    answer = api("POST", f"{P}/p/alerts", json=body)
    assert answer.status_code == 202, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_five_crashes_within_the_interval_give_two_messages_on_a_real_server(
    server_process: Any, httpserver: HTTPServer
) -> None:
    receiver = Receiver(httpserver)
    server = server_process()
    hook = {"kind": "webhook", "url": receiver.url, "group_interval": 8}
    assert server.api("PUT", f"{P}/p/integrations/hook", json=hook).status_code == 201
    sent = [_crash(server.api, f"run-{c}", host="gpu-node-2" if c == "e" else "gpu-node-7") for c in "abcde"]
    # All within the interval: the first goes out at once, the other four are held (never sent on their own).
    assert [a["deliveries"][0]["status"] for a in sent] == ["pending", "held", "held", "held", "held"]
    assert wait_for(lambda: len(receiver.requests) == 2, timeout=30)
    assert wait_for(lambda: _statuses(server.api) == ["delivered"] * 2 + ["rolled_up"] * 4, timeout=30)
    first, rollup = receiver.bodies
    assert (first["title"], first["run"]) == (CRASH, "run-a")
    assert rollup["title"] == f"4 more runs: {CRASH}"
    assert rollup["text"] == "run-b, run-c, run-d, run-e\nBy host: gpu-node-7: 3, gpu-node-2: 1"
    assert rollup["level"] == "ERROR" and rollup["fields"]["alerts"] == "4"
    assert len(receiver.requests) == 2  # everything is settled: nothing more is coming


def test_a_restart_in_the_middle_of_the_interval_loses_nothing(server_process: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    server = server_process()
    # Long enough for a kill and a restart to fit in the interval on a loaded machine: with 8 s, a restart that
    # took longer (server starts of 30 s and more were seen at load average 35) would end the interval first.
    hook = {"kind": "webhook", "url": receiver.url, "group_interval": 30}
    assert server.api("PUT", f"{P}/p/integrations/hook", json=hook).status_code == 201
    before = [_crash(server.api, run) for run in ("run-a", "run-b", "run-c")]
    assert [a["deliveries"][0]["status"] for a in before] == ["pending", "held", "held"]
    # The first is delivered and recorded (killed between the two, it would come again: at least once).
    assert wait_for(lambda: _statuses(server.api) == ["delivered", "held", "held"], timeout=60)
    server.kill()  # SIGKILL: nothing is flushed on the way out
    server.start()  # the same database and home
    after = [_crash(server.api, run) for run in ("run-d", "run-e")]
    assert [a["deliveries"][0]["status"] for a in after] == ["held", "held"]  # the same interval goes on
    assert wait_for(lambda: len(receiver.requests) == 2, timeout=60)
    assert wait_for(lambda: _statuses(server.api) == ["delivered"] * 2 + ["rolled_up"] * 4, timeout=30)
    rollup = receiver.bodies[1]
    assert rollup["title"] == f"4 more runs: {CRASH}" and rollup["text"].startswith("run-b, run-c, run-d, run-e")
    assert len(receiver.requests) == 2


def test_with_a_slack_bot_the_roll_up_is_one_message_updated_in_place(make_client: Any, slack: SlackAPI) -> None:
    client = make_client()
    assert client.put(f"{P}/p/secrets/SLACK_TOKEN", json={"value": TOKEN}).status_code in (200, 201)
    spec = {
        "kind": "slack",
        "bot_token_secret": "SLACK_TOKEN",
        "channel": "#alerts",
        "api_url": slack.url,
        "group_interval": 10,
    }
    assert client.put(f"{P}/p/integrations/team", json=spec).status_code == 201

    def api(method: str, path: str, **kwargs: Any) -> Any:
        return client.request(method, path, **kwargs)

    _crash(api, "run-a")
    _crash(api, "run-b")
    # The roll-up is posted while the interval is open, as soon as one alert is held ...
    assert wait_for(lambda: len(slack.top_level()) == 2 and "1 more run" in slack.top_level()[1].header)
    for run in ("run-c", "run-d", "run-e"):
        _crash(api, run)
    # ... and updated in place as the others join, the last time when the interval ends.
    assert wait_for(lambda: _statuses(api).count("rolled_up") == 4, timeout=60)
    assert wait_for(lambda: "pending" not in _statuses(api))
    first, rollup = slack.top_level()
    assert first.header == CRASH and "run-a" in first.flat
    assert rollup.header == f"4 more runs: {CRASH}"
    assert "run-b, run-c, run-d, run-e" in rollup.blocks[1]["text"]["text"]
    assert len(rollup.versions) >= 2 and slack.ok_calls("chat.update") == len(rollup.versions) - 1
    assert len(slack.messages) == 2


def _hook(client: Any, receiver: Receiver, **options: Any) -> None:
    spec = {"kind": "webhook", "url": receiver.url, **options}
    assert client.put(f"{P}/p/integrations/hook", json=spec).status_code == 201


def _record(client: Any, run_id: str, now: float, title: str = CRASH, host: str = "gpu-node-7") -> str:
    """An alert recorded at ``now`` (a time in the past: what happens at each moment is decided here, not by how
    fast the machine is), as the server's ingest records it."""
    ctx = client.app.state.ctx
    client.put(f"{P}/p/runs/{run_id}", json={"name": run_id})
    with ctx.db.session() as session:
        run = session.query(Run).filter(Run.run_id == run_id).one()
        record = record_alert(
            session,
            run.project_id,
            title=title,
            level="ERROR",
            source="client",
            run=run,
            fields={"host": host},
            now=now,
        )
        return str(record.deliveries[0].status)


def _close_and_deliver(client: Any, now: float) -> None:
    ctx = client.app.state.ctx
    with ctx.db.session() as session:
        close_due(session, now)
    while jobs := ctx.dispatcher.claim(100):  # not run_once: it would close roll-ups at the real time
        for job in jobs:
            ctx.dispatcher.deliver(job)


def test_a_storm_rolls_up_once_per_interval_and_a_quiet_interval_ends_the_group(
    client: Any, httpserver: HTTPServer
) -> None:
    receiver = Receiver(httpserver)
    _hook(client, receiver, group_interval=60)
    t0 = time.time() - 1000
    assert _record(client, "run-a", t0) == "pending"
    assert [_record(client, r, t0 + 10) for r in ("run-b", "run-c")] == ["held", "held"]
    _close_and_deliver(client, t0 + 59)  # not over yet: nothing
    assert len(receiver.drain()) == 1
    _close_and_deliver(client, t0 + 60)
    assert _record(client, "run-d", t0 + 70) == "held"  # the storm goes on: the next interval holds too
    _close_and_deliver(client, t0 + 120)
    _close_and_deliver(client, t0 + 180)  # an interval with nothing held closes the group
    assert _record(client, "run-e", t0 + 200) == "pending"  # ... so the next crash goes out at once
    _close_and_deliver(client, t0 + 200)
    bodies = receiver.drain()
    assert [(b["title"], b.get("run")) for b in bodies] == [
        (CRASH, "run-a"),
        (f"2 more runs: {CRASH}", None),
        (f"1 more run: {CRASH}", None),
        (CRASH, "run-e"),
    ]
    assert bodies[1]["text"] == "run-b, run-c\nBy host: gpu-node-7: 2"  # one node for all: that explains it
    assert bodies[2]["text"] == "run-d"  # one run on one host: a count by host would say nothing more


def test_group_by_title_and_host_keeps_nodes_apart_and_titles_apart(client: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    _hook(client, receiver, group_interval=60, group_by=["title", "host"])
    t0 = time.time() - 1000
    got = [
        _record(client, "a1", t0, host="gpu-1"),
        _record(client, "a2", t0 + 1, host="gpu-1"),
        _record(client, "b1", t0 + 2, host="gpu-2"),
        _record(client, "b2", t0 + 3, host="gpu-2"),
        _record(client, "b3", t0 + 4, host="gpu-2"),
        _record(client, "c1", t0 + 5, title="Loss is NaN", host="gpu-2"),
    ]
    assert got == ["pending", "held", "pending", "held", "held", "pending"]
    _close_and_deliver(client, t0 + 70)
    titles = sorted(b["title"] for b in receiver.drain())
    assert titles == sorted(
        [CRASH, CRASH, "Loss is NaN", f"1 more run: {CRASH} · gpu-1", f"2 more runs: {CRASH} · gpu-2"]
    )


def test_grouping_is_off_by_default_and_test_messages_are_never_held(client: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    _hook(client, receiver)
    t0 = time.time() - 1000
    assert [_record(client, f"r{i}", t0 + i) for i in range(3)] == ["pending"] * 3
    _hook_again = client.put(
        f"{P}/p/integrations/hook", json={"kind": "webhook", "url": receiver.url, "group_interval": 60}
    )
    assert _hook_again.json()["spec"]["group_interval"] == 60
    for _ in range(2):
        assert client.post(f"{P}/p/integrations/hook/test").json()["deliveries"][0]["status"] == "pending"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"group_interval": -1}, "group_interval"),
        ({"group_interval": 8 * 86400}, "group_interval"),
        ({"group_by": ["title", "node"]}, "group_by"),
        ({"group_by": []}, "group_by"),
        ({"threads": True}, "threads needs a Slack bot"),
        ({"api_url": "https://slack.com/api"}, "api_url"),
    ],
)
def test_bad_options_are_refused_naming_the_field_and_what_is_allowed(
    client: Any, options: dict[str, Any], message: str
) -> None:
    answer = client.put(f"{P}/p/integrations/hook", json={"kind": "webhook", "url": "https://example.com/h", **options})
    assert answer.status_code == 422 and message in answer.text
    assert client.get(f"{P}/p/integrations").json() == []
    if options.get("group_by"):
        assert "title" in answer.text and "reason" in answer.text and "host" in answer.text


def test_deleting_an_integration_dead_letters_the_alerts_it_held(client: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    _hook(client, receiver, group_interval=60)
    t0 = time.time() - 1000
    assert [_record(client, r, t0 + i) for i, r in enumerate(("run-a", "run-b", "run-c"))] == [
        "pending",
        "held",
        "held",
    ]
    assert client.delete(f"{P}/p/integrations/hook").status_code == 204
    _close_and_deliver(client, t0 + 100)

    def api(method: str, path: str, **kwargs: Any) -> Any:
        return client.request(method, path, **kwargs)

    assert _statuses(api) == ["dead"] * 3
    assert receiver.drain() == []


def test_titles_that_name_their_run_group_without_the_name(client: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    _hook(client, receiver, group_interval=60)
    t0 = time.time() - 1000
    runs = ("bert-7", "gpt-2", "t5-small")
    got = [_record(client, r, t0 + i, title=f"Run {r} failed: no heartbeat") for i, r in enumerate(runs)]
    assert got == ["pending", "held", "held"]  # a lost node: one group, whatever the runs are called
    _close_and_deliver(client, t0 + 60)
    first, rollup = receiver.drain()
    assert first["title"] == "Run bert-7 failed: no heartbeat"
    assert (rollup["title"], rollup["text"]) == (
        "2 more runs: Run failed: no heartbeat",
        "gpt-2, t5-small\nBy host: gpu-node-7: 2",
    )
