"""Per-run evaluator state in the database: server processes on one PostgreSQL database that take a run's batches
in turn fire exactly what one process fires, and edge and cooldown state survive a restart.

The two "processes" are two apps in this process (two ``AutomationRuntime`` s, each with its own cache, its own
connection pool), on one database: what one of them evaluated, the other finds only in the database.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from runalert.automations import OnRunMetric, Project, RunEvent, SendNotification
from runalert.automations.evaluation import RuleState

P = "/api/v1/projects"
loss = RunEvent.metric("loss")
_projects = itertools.count()


def register(client: Any, project: str, name: str, event: Any, *, cooldown: float = 0) -> None:
    new = event >> SendNotification(title=name)
    spec = {**new.model_dump(mode="json"), "name": name, "cooldown": cooldown}
    answer = client.put(f"{P}/{project}/automations/{name}", json=spec)
    assert answer.status_code == 201, answer.text


def post(client: Any, project: str, run: str, rows: list[tuple[int, dict[str, float]]]) -> list[tuple[str, int]]:
    body = {"rows": [{"step": step, "metrics": metrics} for step, metrics in rows]}
    answer = client.post(
        f"{P}/{project}/runs/{run}/metrics",
        content=json.dumps(body, allow_nan=True),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    return [(f["automation"], f["alert_id"]) for f in answer.json()["fired"]]


def fired(client: Any, project: str, ids: list[tuple[str, str]]) -> list[tuple[str, str | None, str | None]]:
    alerts = {a["id"]: a for a in client.get(f"{P}/{project}/alerts", params={"limit": 1000}).json()}
    return [(name, alerts[i]["fields"].get("step"), alerts[i]["fields"].get("metric value")) for name, i in ids]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_processes_taking_a_runs_batches_in_turn_fire_once(make_client: Callable[..., Any]) -> None:
    first, second = make_client(background=False), make_client(background=False)
    # the second process knows the project (and its run) before the automation exists: it must see it appear
    assert second.put(f"{P}/p/runs/r", json={"name": "bert"}).status_code == 201
    register(first, "p", "avg-high", OnRunMetric(scope=Project("p"), filter=loss.avg(3) > 5))
    batches = [[0.0, 0.0, 0.0, 0.0], [6.0, 6.0, 6.0], [7.0, 7.0, 7.0], [1.0, 1.0, 1.0], [8.0, 8.0, 8.0]]
    ids: list[tuple[str, str]] = []
    step = 0
    for index, values in enumerate(batches):
        server = (first, second)[index % 2]
        ids += post(server, "p", "r", [(step + i, {"loss": v}) for i, v in enumerate(values)])
        step += len(values)
    # one process: fired at step 6 (avg 6), resolved silently at step 10 (avg 5), fired again at step 14 (avg
    # 5.67); without shared state the first process, which never saw the 6s, fired again at step 9 (avg 7)
    assert fired(first, "p", ids) == [("avg-high", "6", "6"), ("avg-high", "14", "5.66667")]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("seed", range(4))
def test_batches_spread_over_two_processes_fire_what_one_process_fires(
    make_client: Callable[..., Any], seed: int
) -> None:
    first, second = make_client(background=False), make_client(background=False)
    rng = random.Random(seed)
    events = {
        "avg": loss.avg(3) > 5,
        "max": RunEvent.metric("acc").max(4) >= 7,
        "change": loss.avg(2).changes_by(diff=3),
        "zscore": RunEvent.metric("acc").zscore(4).abs() > 1.5,
    }
    values = [(round(rng.uniform(0, 10)), round(rng.uniform(0, 10))) for _ in range(80)]
    cuts = sorted(rng.sample(range(1, len(values)), 15))
    batches = [values[a:b] for a, b in itertools.pairwise([0, *cuts, len(values)])]
    results = []
    for spread in (False, True):
        project = f"s{next(_projects)}"
        for name, f in events.items():
            register(first, project, name, OnRunMetric(scope=Project(project), filter=f))
        assert first.put(f"{P}/{project}/runs/r", json={}).status_code == 201
        ids: list[tuple[str, str]] = []
        step = 0
        for batch in batches:
            server = rng.choice((first, second)) if spread else first
            rows = [(step + i, {"loss": float(a), "acc": float(b)}) for i, (a, b) in enumerate(batch)]
            ids += post(server, project, "r", rows)
            step += len(batch)
        results.append(sorted(fired(first, project, ids), key=str))
    assert results[0]  # the sequence fires something
    assert results[1] == results[0]


def test_edge_and_cooldown_state_survive_a_restart(make_client: Callable[..., Any]) -> None:
    client = make_client(background=False)
    register(client, "p", "plain", OnRunMetric(scope=Project("p"), filter=loss > 5), cooldown=3600)
    register(client, "p", "avg", OnRunMetric(scope=Project("p"), filter=loss.avg(2) > 5), cooldown=0)
    assert client.put(f"{P}/p/runs/r", json={}).status_code == 201
    assert sorted(n for n, _ in post(client, "p", "r", [(0, {"loss": 6.0}), (1, {"loss": 6.0})])) == ["avg", "plain"]
    assert client.post(f"{P}/p/runs/r/state", json={"state": "FINISHED"}).status_code == 200
    client.__exit__(None, None, None)
    restarted = make_client(background=False)
    assert restarted.put(f"{P}/p/runs/r", json={}).status_code == 200  # resumed: RUNNING again
    # both conditions still hold: the same activations, nothing fires
    assert post(restarted, "p", "r", [(2, {"loss": 7.0})]) == []
    # both turn false and true again: "avg" fires (no cooldown), "plain" is within its hour of cooldown
    ids = post(restarted, "p", "r", [(3, {"loss": 1.0}), (4, {"loss": 1.0}), (5, {"loss": 7.0}), (6, {"loss": 7.0})])
    assert fired(restarted, "p", ids) == [("avg", "6", "7")]


def test_state_rows_are_written_with_the_batch_and_versioned(make_client: Callable[..., Any]) -> None:
    from sqlalchemy import select

    from runalert.server.automation_runtime import decode_state, encode_state
    from runalert.server.models import EvaluatorState

    client = make_client(background=False)
    register(client, "p", "avg", OnRunMetric(scope=Project("p"), filter=loss.avg(2) > 5))
    client.put(f"{P}/p/runs/r", json={})
    post(client, "p", "r", [(0, {"loss": 1.0}), (1, {"other": 1.0})])
    ctx = client.app.state.ctx

    def rows() -> list[tuple[int, dict[str, Any]]]:
        with ctx.db.session() as session:
            found = session.scalars(select(EvaluatorState)).all()
            return [(row.version, decode_state(row.state)) for row in found]

    [(version, state)] = rows()
    assert state["evaluator"]["values"] == [1.0] and state["trigger"]["active"] is False
    post(client, "p", "r", [(2, {"loss": 9.5})])
    [(again, state)] = rows()
    assert again != version
    assert state["evaluator"]["values"] == [1.0, 9.5] and state["trigger"]["active"] is True
    assert state["trigger"]["last_fired"] is not None
    post(client, "p", "r", [(3, {"other": 2.0})])  # no watched metric: the state is not written
    assert rows()[0][0] == again
    assert decode_state(encode_state(state)) == state
    assert "values" not in json.loads(encode_state(state))["evaluator"]  # packed: no float text


def test_stored_states_read_back_exactly() -> None:
    from runalert.automations import Automation, DoNothing
    from runalert.server.automation_runtime import decode_state, encode_state

    filters = [
        loss > 1,
        loss.avg(3) > 1,
        loss.max(2).changes_by(frac=0.5),
        loss.zscore(4).abs() > 2,
        loss.is_nonfinite(),
        loss == 2,
    ]
    for f in filters:
        automation = Automation(name="a", event=OnRunMetric(filter=f), action=DoNothing())
        for values in ([], [1.5, 1e300, -2.0, 0.1, 7.0], [1.0, float("nan")], [float("inf")]):
            rule = RuleState.fresh(automation)
            assert rule.evaluator is not None
            for v in values:
                if rule.evaluator.takes_nonfinite or (v == v and abs(v) != float("inf")):
                    rule.evaluator.push(v)
            rule.trigger.step(True, 12345.678, 0)
            exported = json.loads(json.dumps(rule.export()))
            text = encode_state(rule.export())
            assert decode_state(text) == exported, (f, values)
            restored = RuleState.restored(automation, "", decode_state(text))
            assert json.loads(json.dumps(restored.export())) == exported


def test_a_changed_event_starts_afresh_and_overwrites_its_stored_state(make_client: Callable[..., Any]) -> None:
    client = make_client(background=False)
    register(client, "p", "avg", OnRunMetric(scope=Project("p"), filter=loss.avg(2) > 5))
    client.put(f"{P}/p/runs/r", json={})
    assert [n for n, _ in post(client, "p", "r", [(0, {"loss": 9.0}), (1, {"loss": 9.0})])] == ["avg"]
    new = OnRunMetric(scope=Project("p"), filter=loss.avg(2) > 8) >> SendNotification(title="avg")
    answer = client.put(f"{P}/p/automations/avg", json={**new.model_dump(mode="json"), "name": "avg", "cooldown": 0})
    assert answer.status_code == 200, answer.text
    assert post(client, "p", "r", [(2, {"loss": 9.0})]) == []  # a fresh window: one value is not enough
    assert [n for n, _ in post(client, "p", "r", [(3, {"loss": 9.0})])] == ["avg"]
