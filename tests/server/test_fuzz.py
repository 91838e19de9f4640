"""Fuzzed request bodies: any JSON to any write endpoint gets a 2xx or a 4xx, never a 500 (SQLite, in process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

P = "/api/v1/projects/p"

# Text with a lone surrogate (JSON's "\ud800" escape) now and then: it decodes to a string UTF-8 cannot hold.
lone_surrogate = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
any_text = st.text(max_size=20) | st.builds(
    lambda before, lone, after: before + lone + after, st.text(max_size=5), lone_surrogate, st.text(max_size=5)
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12) | any_text, children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        "rows",
        "metrics",
        "step",
        "time",
        "dropped",
        "title",
        "text",
        "level",
        "run_id",
        "wait_duration",
        "kind",
        "url",
        "name",
        "event",
        "action",
        "filter",
        "scope",
        "value",
        "state",
        "reason",
        "event_type",
        "tags",
        "config",
        "user",
    ]
)
metric_rows = st.fixed_dictionaries(
    {
        "rows": st.lists(
            st.fixed_dictionaries(
                {"metrics": st.dictionaries(st.text(max_size=8), st.floats() | st.none() | st.text(max_size=4))},
                optional={"step": st.integers(min_value=-(2**64), max_value=2**64), "time": st.floats()},
            ),
            max_size=5,
        )
    },
    optional={"dropped": st.integers(min_value=-5, max_value=2**64)},
)
run_bodies = st.fixed_dictionaries(  # a run's free JSON: stored as it comes, so it must be servable
    {"config": st.dictionaries(any_text, any_text | json_values, max_size=4)}, optional={"name": st.text(max_size=8)}
)
bodies = st.dictionaries(keys, json_values, max_size=5) | json_values | metric_rows | run_bodies
ENDPOINTS = [
    ("PUT", "/runs/r"),
    ("POST", "/runs/r/metrics"),
    ("POST", "/runs/r/state"),
    ("POST", "/alerts"),
    ("PUT", "/integrations/hook"),
    ("PUT", "/secrets/TOKEN"),
    ("PUT", "/automations/rule"),
    ("POST", "/automations"),
    ("PATCH", "/automations/rule"),
    ("POST", "/events"),
]


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from runalert.server.app import create_app
    from runalert.server.settings import ServerSettings

    home: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(ServerSettings(home=home, database_url=f"sqlite:///{home / 'fuzz.db'}", background=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.put(f"{P}/runs/r", json={})
        client.put(f"{P}/integrations/hook", json={"kind": "webhook", "url": "http://127.0.0.1:9/h"})
        yield client


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies)
def test_no_body_gets_a_500(fuzz_client: Any, endpoint: tuple[str, str], body: Any) -> None:
    import json

    method, path = endpoint
    raw = json.dumps(body, allow_nan=True)
    answer = fuzz_client.request(method, P + path, content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code < 500, (method, path, raw, answer.text)


READS = ["/runs", "/runs/r", "/runs/r/metrics", "/alerts", "/integrations", "/automations", "/secrets"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies)
def test_no_body_leaves_the_project_unreadable(fuzz_client: Any, endpoint: tuple[str, str], body: Any) -> None:
    """Whatever a write took, every read of the project still answers 200 (a value stored but not servable,
    such as a lone surrogate or JSON nested too deep, made a run or a list fail for good)."""
    import json

    method, path = endpoint
    raw = json.dumps(body, allow_nan=True)
    fuzz_client.request(method, P + path, content=raw, headers={"Content-Type": "application/json"})
    for read in READS:
        answer = fuzz_client.get(P + read)
        assert answer.status_code == 200, (method, path, raw, read, answer.text)
