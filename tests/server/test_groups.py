"""Run groups on a real server: ``group`` on the run, ``OnGroupFinished`` gives one message per group (a small
leaderboard with the failures), and a run that joins later re-opens the group. A webhook receiver on loopback."""

from __future__ import annotations

from typing import Any

from pytest_httpserver import HTTPServer

from runalert.automations import OnGroupFinished, Project, RunEvent, SendNotification
from tests.slack_api import TOKEN, SlackAPI
from tests.support import Receiver, wait_for

P = "/api/v1/projects"
FAST_GROUPS = {"RUNALERT_GROUP_CHECK_INTERVAL": "0.1"}


def _automation(api: Any, receiver: Receiver) -> None:
    assert api("PUT", f"{P}/p/integrations/hook", json={"kind": "webhook", "url": receiver.url}).status_code == 201
    event = OnGroupFinished(
        scope=Project("p"), filter=RunEvent.group.matches_regex("^sweep-"), settle=1, metric="loss", mode="min"
    )
    spec = (event >> SendNotification(integration="hook", severity="WARN")).model_dump(mode="json")
    spec = {k: v for k, v in {**spec, "name": "sweep-done"}.items() if v is not None}
    answer = api("PUT", f"{P}/p/automations/sweep-done", json=spec)
    assert answer.status_code in (200, 201), answer.text


def _run(api: Any, run: str, group: str | None, loss: float | None = None) -> None:
    body = {"name": run, **({"group": group} if group else {})}
    answer = api("PUT", f"{P}/p/runs/{run}", json=body)
    assert answer.status_code == 201 and answer.json()["group"] == group, answer.text
    if loss is not None:
        rows = [{"step": 0, "metrics": {"loss": loss + 1}}, {"step": 1, "metrics": {"loss": loss}}]
        assert api("POST", f"{P}/p/runs/{run}/metrics", json={"rows": rows}).status_code == 200


def _end(api: Any, run: str, state: str = "FINISHED", **extra: Any) -> None:
    answer = api("POST", f"{P}/p/runs/{run}/state", json={"state": state, **extra})
    assert answer.status_code == 200, answer.text


def _barrier(api: Any, receiver: Receiver, name: str) -> None:
    """A one-run group that finishes and is told: every check before its message has been made (the server looks
    at its groups in order at each check), so what has not arrived by then did not fire."""
    _run(api, name, name)
    _end(api, name)
    assert wait_for(lambda: receiver.titled(f"Group {name} finished"), timeout=30)


def test_a_three_run_group_gives_one_message_with_the_right_counts(server_process: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    server = server_process(**FAST_GROUPS)
    api = server.api
    _automation(api, receiver)
    _run(api, "run-a", "sweep-7", loss=0.5)
    _run(api, "run-b", "sweep-7", loss=0.2)
    _run(api, "run-c", "sweep-7")
    _run(api, "solo", None)
    _run(api, "other-1", "other")  # a group the filter does not take
    _end(api, "run-a")
    _end(api, "run-b")
    _end(api, "solo")
    _end(api, "other-1")
    _barrier(api, receiver, "sweep-barrier-1")
    assert not receiver.titled("Group sweep-7")  # run-c is still running
    failure = {"exception": "OutOfMemoryError", "message": "CUDA out of memory"}
    _end(api, "run-c", "FAILED", reason="exception", failure=failure)
    assert wait_for(lambda: receiver.titled("Group sweep-7 finished"), timeout=30)
    _barrier(api, receiver, "sweep-barrier-2")
    (message,) = receiver.titled("Group sweep-7 finished")  # exactly one
    assert message["level"] == "WARN"
    assert message["fields"]["group"] == "sweep-7"
    assert (message["fields"]["runs"], message["fields"]["finished"], message["fields"]["failed"]) == ("3", "2", "1")
    assert (message["fields"]["best run"], message["fields"]["best value"]) == ("run-b", "0.2")
    assert message["text"] == (
        "3 runs: 2 finished, 1 failed.\n"
        "Best by loss (lowest first):\n"
        "1. run-b: 0.2\n"
        "2. run-a: 0.5\n"
        "Failed:\n"
        "- run-c: exception: OutOfMemoryError: CUDA out of memory"
    )
    assert not receiver.titled("Group other")
    assert api("GET", f"{P}/p/runs/run-a").json()["group"] == "sweep-7"


def test_a_run_joining_later_reopens_the_group(server_process: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    server = server_process(**FAST_GROUPS)
    api = server.api
    _automation(api, receiver)
    for run in ("run-a", "run-b"):
        _run(api, run, "sweep-9", loss=0.3)
        _end(api, run)
    assert wait_for(lambda: receiver.titled("Group sweep-9 finished"), timeout=30)
    _run(api, "run-late", "sweep-9", loss=0.1)  # joins: the group is open again
    _barrier(api, receiver, "sweep-barrier-1")
    assert len(receiver.titled("Group sweep-9 finished")) == 1  # not while run-late runs
    _end(api, "run-late")
    assert wait_for(lambda: len(receiver.titled("Group sweep-9 finished")) == 2, timeout=30)
    _barrier(api, receiver, "sweep-barrier-2")
    first, second = receiver.titled("Group sweep-9 finished")
    assert first["fields"]["runs"] == "2" and second["fields"]["runs"] == "3"
    assert second["fields"]["best run"] == "run-late"


def test_the_page_shows_groups_with_counts_and_the_best_run(client: Any) -> None:
    api = client.request
    _run(api, "run-a", "sweep-7", loss=0.5)
    _run(api, "run-b", "sweep-7", loss=0.2)
    _run(api, "run-c", "sweep-7")
    _run(api, "solo", None)
    _end(api, "run-a")
    _end(api, "run-b", "FAILED", reason="exception")
    page = client.get("/?metric=loss&mode=min")
    assert page.status_code == 200
    html = page.text
    row = html[html.index('<tr class="group">') :]
    row = row[: row.index("</tr>")]
    assert '<td class="group-name">sweep-7</td>' in row
    cells = [c.split(">", 1)[1] for c in row.split("<td")[1:]]
    assert [c.split("<", 1)[0] for c in cells[2:6]] == ["3", "1", "1", "1"]  # runs, running, finished, failed
    assert '<a href="/runs/p/run-b">run-b</a> 0.2' in row
    assert html.count('<tr class="group">') == 1  # a run without a group is in none
    highest = client.get("/?metric=loss&mode=max").text
    assert '<a href="/runs/p/run-a">run-a</a> 0.5' in highest
    assert client.get("/?mode=sideways").status_code == 422


def test_with_a_slack_bot_a_group_finishing_again_updates_its_message_in_place(server_process: Any) -> None:
    """A Slack bot: the group's summary is one message, updated (``chat.update``) when a late run re-opens the
    group and it finishes again, never a second post. The Slack Web API is a real server on loopback."""
    with SlackAPI() as slack:
        server = server_process(**FAST_GROUPS)
        api = server.api
        assert api("PUT", f"{P}/p/secrets/SLACK_TOKEN", json={"value": TOKEN}).status_code in (200, 201)
        bot = {"kind": "slack", "bot_token_secret": "SLACK_TOKEN", "channel": "#alerts", "api_url": slack.url}
        assert api("PUT", f"{P}/p/integrations/team", json=bot).status_code == 201
        event = OnGroupFinished(scope=Project("p"), filter=RunEvent.group.matches_regex("^sweep-"), settle=1)
        spec = (event >> SendNotification(integration="team")).model_dump(mode="json")
        spec = {k: v for k, v in {**spec, "name": "sweep-done"}.items() if v is not None}
        assert api("PUT", f"{P}/p/automations/sweep-done", json=spec).status_code in (200, 201)

        def summaries() -> list[Any]:
            return [m for m in slack.top_level() if m.header == "Group sweep-9 finished"]

        for run in ("run-a", "run-b"):
            _run(api, run, "sweep-9")
            _end(api, run)
        assert wait_for(lambda: len(summaries()) == 1, timeout=30)
        assert "2 runs: 2 finished, 0 failed." in summaries()[0].flat
        _run(api, "run-late", "sweep-9")  # joins: the group is open again
        _end(api, "run-late")
        assert wait_for(lambda: slack.ok_calls("chat.update") >= 1, timeout=30)
        # A later group's message was posted after every earlier delivery: nothing more is coming for sweep-9.
        _run(api, "sweep-barrier", "sweep-barrier")
        _end(api, "sweep-barrier")
        assert wait_for(lambda: any(m.header == "Group sweep-barrier finished" for m in slack.top_level()), timeout=30)
        (message,) = summaries()  # no second post
        assert "3 runs: 3 finished, 0 failed." in message.flat
        assert slack.ok_calls("chat.update") == 1 and len(message.versions) == 2
        assert slack.ok_calls("chat.postMessage") == 2  # sweep-9 once, the barrier once
