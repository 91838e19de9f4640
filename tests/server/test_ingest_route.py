"""The metric batch route in front of FastAPI's router (``runalert.server.ingest_route``): the same paths, the same
answers, and the server process's garbage-collector settings and state versions of the ingest path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Annotated, Any

import pytest
from pydantic import StringConstraints, TypeAdapter, ValidationError
from sqlalchemy import text

from runalert.server.auth import create_key
from runalert.server.ingest_route import metrics_path
from runalert.server.schemas import PROJECT_PATTERN, RUN_ID_PATTERN

P = "/api/v1/projects"

NAMES = [
    "p",
    "a.b_c-d",
    "run:1@x+y",
    "A" * 128,
    "A" * 129,
    "-p",
    ".p",
    "p\n",
    "p ",
    "p%2Fq",
    "é",
    "p:q",
    "p@q",
    "0",
]


@pytest.mark.parametrize("name", NAMES)
def test_the_fast_route_takes_exactly_the_names_the_fastapi_route_accepts(name: str) -> None:
    """A project or run id the route's patterns refuse is left to FastAPI (its 422 names the path field): the
    fast route's expression must not take more, or less (Python's ``$`` matches before a final newline)."""

    def accepts(pattern: str) -> bool:
        try:
            TypeAdapter(Annotated[str, StringConstraints(pattern=pattern)]).validate_python(name)
        except ValidationError:
            return False
        return True

    as_project = metrics_path.fullmatch(f"{P}/{name}/runs/r/metrics") is not None
    as_run = metrics_path.fullmatch(f"{P}/p/runs/{name}/metrics") is not None
    assert as_project == accepts(PROJECT_PATTERN)
    assert as_run == accepts(RUN_ID_PATTERN)


def _answer(response: Any) -> tuple[int, Any, str | None, str | None]:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body, response.headers.get("content-type"), response.headers.get("www-authenticate")


def test_a_metric_batch_gets_the_answers_fastapi_gave(make_client: Any) -> None:
    """Every answer of the fast route, request for request, is the FastAPI route's (reached here through a
    ``root_path``, which the fast route leaves to FastAPI): accepted batches, each kind of refusal, and the key
    checks of the combined project-and-run query on PostgreSQL."""
    from fastapi.testclient import TestClient

    fast = make_client(background=False, max_batch_points=20, max_body_bytes=4096)
    app = fast.app
    slow = TestClient(app, root_path="/mounted")
    remote_fast = TestClient(app, client=("10.1.2.3", 5555))
    remote_slow = TestClient(app, client=("10.1.2.3", 5555), root_path="/mounted")
    for run in ("r", "s"):
        assert fast.put(f"{P}/p/runs/{run}", json={}).status_code == 201
    assert fast.put(f"{P}/q/runs/r", json={}).status_code == 201

    def both(path: str, clients: tuple[Any, Any] = (fast, slow), **kwargs: Any) -> tuple[Any, Any]:
        return tuple(_answer(c.post(path, **kwargs)) for c in clients)  # type: ignore[return-value]

    batch = {"rows": [{"step": 1, "metrics": {"loss": 1.0, "acc": None}}, {"step": 2.0, "metrics": {"loss": "nan"}}]}
    cases: list[tuple[str, dict[str, Any]]] = [
        (f"{P}/p/runs/r/metrics", {"json": batch}),
        (f"{P}/p/runs/r/metrics", {"json": {"rows": [{"step": 1.5, "metrics": {"loss": 1.0}}]}}),
        (f"{P}/p/runs/r/metrics", {"json": {"rows": [{"metrics": {"loss": "1.5"}}]}}),
        (f"{P}/p/runs/r/metrics", {"json": {"rows": [], "extra": 1}}),
        (f"{P}/p/runs/r/metrics", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        (f"{P}/p/runs/r/metrics", {"content": b'{"rows": [{"metrics": {"\\ud800": 1}}]}'}),
        (f"{P}/p/runs/r/metrics", {"json": {"rows": [{"metrics": {f"m{i}": 1.0 for i in range(21)}}]}}),
        (f"{P}/p/runs/r/metrics", {"content": b" " * 5000}),
        (f"{P}/p/runs/missing/metrics", {"json": batch}),
        (f"{P}/nope/runs/r/metrics", {"json": batch}),
        (f"{P}/-p/runs/r/metrics", {"json": batch}),
    ]
    for path, kwargs in cases:
        got, expected = both(path, **kwargs)
        assert got == expected, path
    got, expected = both(f"{P}/p/runs/r/metrics", (remote_fast, remote_slow), json=batch)
    assert got == expected
    assert got[0] == 401  # no keys: loopback clients only

    ctx = app.state.ctx
    with ctx.db.session() as session:
        _key, token_p = create_key(session, "p")
        _key, token_q = create_key(session, "q")
    keyed = [
        {},
        {"Authorization": "Bearer ra_wrong"},
        {"Authorization": "Basic abc"},
        {"Authorization": f"Bearer {token_q}"},  # another project's key: 404
        {"Authorization": f"Bearer {token_p}"},
    ]
    for headers in keyed:
        for run in ("r", "missing"):
            got, expected = both(f"{P}/p/runs/{run}/metrics", json=batch, headers=headers)
            assert got == expected, (headers, run)
    assert both(f"{P}/p/runs/r/metrics", json=batch)[0][:2] == (
        401,
        {"detail": "an API key is required: send 'Authorization: Bearer <api key>'"},
    )
    assert both(f"{P}/p/runs/s/metrics", json=batch, headers={"Authorization": f"Bearer {token_p}"})[0][:2] == (
        200,
        {"accepted": 2, "fired": []},
    )
    with ctx.db.engine.connect() as conn:
        used = conn.execute(text("SELECT last_used_at FROM api_keys ORDER BY id")).scalars().all()
    assert used[0] is not None  # the key was recorded as used


def test_a_server_process_freezes_its_start_up_objects_and_collects_young_less_often() -> None:
    code = (
        "import gc, json; from runalert.server.worker import GC_THRESHOLD, _tune_gc; before = gc.get_threshold(); "
        "_tune_gc(); print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count(), GC_THRESHOLD]))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=os.environ)
    before, after, frozen, threshold = json.loads(out.stdout)
    assert after == [threshold, before[1], before[2]]
    assert threshold > before[0]
    assert frozen > 10_000  # the imports and the app's modules: out of every collection


def test_state_versions_are_distinct_62_bit_numbers_never_zero() -> None:
    from runalert.server.automation_runtime import _versions

    drawn = _versions(50_000)
    assert len(drawn) == 50_000
    assert len(set(drawn)) == 50_000
    assert all(1 <= v <= 2**62 for v in drawn)
    assert max(drawn) > 2**61  # all 62 bits are used
    assert _versions(1) != _versions(1)
