"""The server and the in-process engine give the same firings on the same values (a differential test over random
sequences with NaN/inf, ``==``/``!=`` and ``is_nonfinite()``), and the non-finite event's state survives a restart."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runalert import Alerter
from runalert.automations import LocalEngine, OnRunMetric, Project, RunEvent, SendNotification

P = "/api/v1/projects"
NAN, INF = math.nan, math.inf

halves = st.integers(-6, 6).map(lambda i: i / 2)  # few distinct values: == and != change often
special = st.sampled_from([NAN, INF, -INF])
cell = st.one_of(halves, halves, halves, special, st.none())
_projects = itertools.count()


def rules(project: str, window: int, threshold: float) -> dict[str, Any]:
    """Name -> event: every kind of metric rule, on two metrics."""
    a, b = RunEvent.metric("a"), RunEvent.metric("b")
    filters = {
        "plain": a > threshold,
        "avg": a.avg(window) >= threshold,
        "min": b.min(window) < threshold,
        "change": a.avg(window).changes_by(diff=abs(threshold) + 0.5),
        "zscore": b.zscore(window + 1).abs() > 1.5,
        "eq": a == threshold,
        "ne": b.max(window) != threshold,
        "eq-avg": b.avg(2).eq(threshold),
        "nonfinite-a": a.is_nonfinite(),
        "nonfinite-b": b.is_nonfinite(),
    }
    return {name: OnRunMetric(scope=Project(project), filter=f) for name, f in filters.items()}


def _body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"content": json.dumps({"rows": rows}, allow_nan=True), "headers": {"Content-Type": "application/json"}}


def register(client: Any, project: str, events: dict[str, Any], notify_resolved: bool) -> None:
    assert client.put(
        f"{P}/{project}/integrations/hook", json={"kind": "webhook", "url": "http://127.0.0.1:9/h"}
    ).is_success
    for name, event in events.items():
        new = event >> SendNotification(integration="hook", title=name)
        spec = {**new.model_dump(mode="json"), "name": name, "cooldown": 0, "notify_resolved": notify_resolved}
        answer = client.put(f"{P}/{project}/automations/{name}", json=spec)
        assert answer.status_code == 201, answer.text


def server_firings(client: Any, project: str, fired_ids: list[tuple[str, str]]) -> dict[str, list[tuple[Any, ...]]]:
    alerts = {a["id"]: a for a in client.get(f"{P}/{project}/alerts", params={"limit": 1000}).json()}
    out: dict[str, list[tuple[Any, ...]]] = {}
    for alert_id, automation in fired_ids:
        alert = alerts[alert_id]
        fields = alert["fields"]
        out.setdefault(automation, []).append((alert["title"], fields.get("step"), fields.get("metric value")))
    return out


@pytest.fixture(scope="module")
def parity_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from runalert.server.app import create_app
    from runalert.server.settings import ServerSettings

    home: Path = tmp_path_factory.mktemp("parity")
    app = create_app(ServerSettings(home=home, database_url=f"sqlite:///{home / 'parity.db'}", background=False))
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def quiet_alerter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alerter]:
    """An alerter with no channels: the in-process engine builds its alerts, nothing is sent."""
    alerter = Alerter([], home=tmp_path_factory.mktemp("alerter"), resend_spooled=False)
    yield alerter
    alerter.close(timeout=2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(cell, cell), max_size=40),
    window=st.integers(1, 4),
    threshold=halves,
    notify_resolved=st.booleans(),
    cuts=st.lists(st.integers(0, 40), max_size=3),
)
def test_server_and_in_process_engine_fire_the_same(
    parity_client: Any,
    quiet_alerter: Alerter,
    rows: list[tuple[float | None, float | None]],
    window: int,
    threshold: float,
    notify_resolved: bool,
    cuts: list[int],
) -> None:
    project = f"parity{next(_projects)}"
    events = rules(project, window, threshold)
    register(parity_client, project, events, notify_resolved)
    assert parity_client.put(f"{P}/{project}/runs/r", json={"name": "run-r"}).is_success
    # the server: the rows posted in batches cut anywhere (its ingest evaluates each batch column by column)
    logged = [
        {"step": i, "metrics": {k: v for k, v in (("a", a), ("b", b)) if v is not None}}
        for i, (a, b) in enumerate(rows)
    ]
    fired_ids: list[tuple[str, str]] = []
    bounds = [0, *sorted(min(c, len(logged)) for c in cuts), len(logged)]
    for start, end in itertools.pairwise(bounds):
        if start == end:
            continue
        answer = parity_client.post(f"{P}/{project}/runs/r/metrics", **_body(logged[start:end]))
        assert answer.status_code == 200, answer.text
        fired_ids += [(f["alert_id"], f["automation"]) for f in answer.json()["fired"]]
    on_server = server_firings(parity_client, project, fired_ids)
    # in process: the same automations, the rows logged one at a time
    engine = LocalEngine(quiet_alerter)
    for name, event in events.items():
        engine.create(event >> SendNotification(title=name), name=name, cooldown=0, notify_resolved=notify_resolved)
    engine.start_run("r", name="run-r", project=project)
    in_process: dict[str, list[tuple[Any, ...]]] = {}
    for row in logged:
        for firing in engine.log("r", row["metrics"], row["step"]):
            if firing.alert is not None:
                fields = firing.alert.fields
                key = (firing.alert.title, fields.get("step"), fields.get("metric value"))
                in_process.setdefault(firing.automation, []).append(key)
    assert on_server == in_process


def _post(client: Any, values: list[float], start: int) -> list[str]:
    rows = [{"step": start + i, "metrics": {"loss": v}} for i, v in enumerate(values)]
    answer = client.post(f"{P}/p/runs/r1/metrics", **_body(rows))
    assert answer.status_code == 200, answer.text
    return [f["title"] for f in answer.json()["fired"]]


def test_nonfinite_event_fires_on_the_server_and_its_state_survives_a_restart(make_client: Any) -> None:
    client = make_client(background=False)
    loss = RunEvent.metric("loss")
    events = {
        "nan": OnRunMetric(scope=Project("p"), filter=loss.is_nonfinite()),
        "loss-zero": OnRunMetric(scope=Project("p"), filter=loss == 0),
    }
    register(client, "p", events, notify_resolved=False)
    client.put(f"{P}/p/runs/r1", json={})
    assert sorted(_post(client, [1.0, NAN, NAN, 0.0], 0)) == ["loss-zero", "nan"]
    assert _post(client, [INF], 4) == ["nan"]
    alerts = client.get(f"{P}/p/alerts").json()
    nan_alerts = [a for a in alerts if a["title"] == "nan"]
    assert sorted(a["fields"]["metric value"] for a in nan_alerts) == ["inf", "nan"]
    assert all(a["kind"] == "metric" for a in nan_alerts)
    client.__exit__(None, None, None)
    restarted = make_client(background=False)
    # The last value before the restart was inf: a NaN now is the same activation, not a new one.
    assert _post(restarted, [NAN], 5) == []
    # loss == 0 held at the restart too (the 0.0 at step 3): it fires again only after another value
    assert _post(restarted, [0.0], 6) == []
    assert sorted(_post(restarted, [2.0, 0.0, -INF], 7)) == ["loss-zero", "nan"]
