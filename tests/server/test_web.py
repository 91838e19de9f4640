"""The web page: runs with state and sparklines, a run page with charts and alerts, automations, alert history
with deliveries; escaping; the same auth as the API; ``${run_url}`` filled from the public URL."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from runalert.automations import OnRunMetric, Project, RunEvent, SendWebhook
from runalert.server.auth import create_key
from runalert.server.routers.web import COOKIE, chart, run_path
from tests.server.test_automations import loss_rule, spec
from tests.server.test_delivery import Receiver
from tests.support import wait_for

P = "/api/v1/projects"
SECRET = "s3cret-token-value"


def _setup(client: Any, url: str) -> None:
    client.put(f"{P}/p/secrets/TOKEN", json={"value": SECRET})
    assert client.put(f"{P}/p/integrations/hook", json={"kind": "webhook", "url": url}).status_code == 201
    assert client.put(f"{P}/p/automations/loss-diverging", json=loss_rule()).status_code == 201


def _log(client: Any, run: str, values: list[float], start: int = 0, name: str = "loss") -> dict[str, Any]:
    rows = [{"step": start + i, "metrics": {name: v, "lr": 0.001 * (i + 1)}} for i, v in enumerate(values)]
    answer = client.post(f"{P}/p/runs/{run}/metrics", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    return answer.json()


def csrf_token(client: Any, path: str) -> str:
    """The CSRF token of the form on ``path`` (the client keeps the session cookie that goes with it)."""
    page = client.get(path)
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert found, f"no CSRF token on {path} ({page.status_code})"
    return found.group(1)


def _key(client: Any, project: str) -> str:
    ctx = client.app.state.ctx
    with ctx.db.session() as session:
        _row, token = create_key(session, project)
    return token


def test_pages_show_runs_states_sparklines_automations_and_alerts_with_deliveries(client: Any) -> None:
    _setup(client, "http://127.0.0.1:9/hook")  # nothing listens: the delivery is retried
    client.put(f"{P}/p/runs/r1", json={"name": "bert-base", "tags": ["nlp"]})
    _log(client, "r1", [1.0, 1.2, 1.1, 1.0])
    assert _log(client, "r1", [3.0, 5.0, 8.0, 13.0], start=4)["fired"]
    client.put(f"{P}/p/runs/r2", json={"name": "resnet-50"})
    _log(client, "r2", [0.5, 0.4, "nan", 0.3])  # type: ignore[list-item]
    client.post(f"{P}/p/runs/r2/state", json={"state": "FAILED", "reason": "preempted"})
    client.put(f"{P}/p/runs/r3", json={"name": "no-metrics-yet"})
    client.post(f"{P}/p/runs/r3/state", json={"state": "FINISHED"})
    client.app.state.ctx.dispatcher.run_once()

    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    for needle in ("bert-base", "resnet-50", "no-metrics-yet", "RUNNING", "FAILED", "preempted", "FINISHED"):
        assert needle in html
    assert html.count('class="sparkline"') == 4  # loss and lr of two runs
    assert re.search(r'<polyline [^>]*points="[0-9., ]+"', html)
    assert 'stroke="#cf222e"' in html  # the NaN of r2 is marked
    assert 'href="/runs/p/r1"' in html
    # Automations: name, summary, enabled.
    assert "loss-diverging" in html and "loss" in html and "GENERIC_WEBHOOK" in html
    # Alert history: the firing and its delivery, retried, with the error (never the secret).
    assert "hook: retrying" in html
    assert "1 attempt" in html
    assert SECRET not in html

    run = client.get("/runs/p/r1")
    assert run.status_code == 200
    assert "bert-base" in run.text
    assert run.text.count('class="chart-svg"') == 2
    assert "loss-diverging" in run.text
    assert "hook: retrying" in run.text
    assert "resnet-50" not in run.text
    assert client.get("/runs/p/nope").status_code == 404
    assert client.get("/runs/nope/r1").status_code == 404
    assert "hook: " not in client.get("/runs/p/r3").text  # its alerts only
    filtered = client.get("/?state=FAILED").text
    assert "resnet-50" in filtered and "bert-base" not in filtered


def test_everything_is_escaped(client: Any) -> None:
    nasty = "<script>alert(1)</script>"
    client.put(f"{P}/p/runs/r1", json={"name": nasty, "user": '"><img src=x onerror=alert(2)>', "tags": ["<b>"]})
    client.post(f"{P}/p/runs/r1/metrics", json={"rows": [{"step": 1, "metrics": {"<i>m</i>": 1.0}}]})
    client.post(f"{P}/p/alerts", json={"title": "<svg onload=alert(3)>", "text": "</td></tr></table><h1>x"})
    for path in ("/", "/runs/p/r1"):
        html = client.get(path).text
        assert "<script>alert(1)" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<img src=x" not in html
        assert "<svg onload" not in html and "<i>m</i>" not in html and "<b>" not in html
    assert "&lt;svg onload=alert(3)&gt;" in client.get("/").text
    assert "<h1>x" not in client.get("/").text


def test_page_auth_follows_the_api(client: Any) -> None:
    client.put(f"{P}/p/runs/r1", json={"name": "secret-run"})
    client.put(f"{P}/q/runs/r9", json={"name": "other-team-run"})
    key = _key(client, "p")
    other = _key(client, "q")

    denied = client.get("/")
    assert denied.status_code == 401
    assert "secret-run" not in denied.text
    assert 'action="/login"' in denied.text
    assert client.get("/runs/p/r1").status_code == 401
    assert client.get("/?key=ra_wrong").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer ra_wrong"}).status_code == 401

    # ?key= goes into an HttpOnly cookie, and the address loses it.
    moved = client.get("/?key=" + key, follow_redirects=False)
    assert moved.status_code == 303
    assert moved.headers["location"] == "/"
    cookie = moved.headers["set-cookie"]
    assert cookie.startswith(COOKIE + "=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    client.cookies.set(COOKIE, key)
    page = client.get("/")
    assert page.status_code == 200
    assert "secret-run" in page.text
    assert "other-team-run" not in page.text  # a key sees its project only
    assert key not in page.text
    assert client.get("/runs/q/r9").status_code == 404
    client.cookies.clear()

    bearer = client.get("/runs/q/r9", headers={"Authorization": f"Bearer {other}"})
    assert bearer.status_code == 200 and "other-team-run" in bearer.text and other not in bearer.text

    # The login form sets the same cookie and goes back to a local page only; it carries the CSRF token.
    token = csrf_token(client, "/login")
    refused = client.post("/login", data={"key": key, "next": "/"}, follow_redirects=False)
    assert refused.status_code == 403 and COOKIE not in refused.headers.get("set-cookie", "")
    bad = client.post("/login", data={"key": "ra_nope", "next": "/", "csrf_token": token}, follow_redirects=False)
    assert bad.status_code == 401
    good = client.post(
        "/login", data={"key": key, "next": "//evil.example/x", "csrf_token": token}, follow_redirects=False
    )
    assert good.status_code == 303 and good.headers["location"] == "/"
    assert COOKIE in good.headers["set-cookie"]
    out = client.get("/logout", follow_redirects=False)
    assert out.status_code == 303 and COOKIE in out.headers["set-cookie"]


def test_page_without_keys_is_for_loopback_only(make_client: Any) -> None:
    from fastapi.testclient import TestClient

    client = make_client(background=False)
    client.put(f"{P}/p/runs/r1", json={"name": "visible-here"})
    assert "visible-here" in client.get("/").text
    remote = TestClient(client.app, client=("203.0.113.7", 4242))
    answer = remote.get("/")
    assert answer.status_code == 401
    assert "visible-here" not in answer.text


@pytest.mark.parametrize("public_url", ["https://runalert.example.org/", None])
def test_run_url_is_filled_from_the_public_url(
    make_client: Any, httpserver: HTTPServer, public_url: str | None
) -> None:
    receiver = Receiver(httpserver)
    client = make_client(public_url=public_url)
    client.put(f"{P}/p/integrations/hook", json={"kind": "webhook", "url": receiver.url})
    event = OnRunMetric(scope=Project("p"), filter=RunEvent.metric("loss") > 2.0)
    rule = spec(event >> SendWebhook(integration="hook", payload={"url": "${run_url}", "run": "${run_id}"}), "hot")
    assert client.put(f"{P}/p/automations/hot", json=rule).status_code == 201
    client.put(f"{P}/p/runs/run-1:a@b", json={"name": "x"})
    assert client.post(f"{P}/p/runs/run-1:a@b/metrics", json={"rows": [{"metrics": {"loss": 9.0}}]}).json()["fired"]
    client.post(f"{P}/p/alerts", json={"title": "from the client", "run_id": "run-1:a@b"})
    assert wait_for(lambda: len(receiver.requests) == 2)
    webhook, notification = receiver.bodies
    if public_url is None:
        assert webhook == {"url": "", "run": "run-1:a@b"}
        assert "run url" not in notification["fields"]
    else:
        expected = "https://runalert.example.org/runs/p/run-1%3Aa%40b"
        assert webhook == {"url": expected, "run": "run-1:a@b"}
        assert notification["fields"]["run url"] == expected
        assert client.get(expected.removeprefix("https://runalert.example.org")).status_code == 200


def test_charts_downsample_and_keep_spikes() -> None:
    assert run_path("p", "a/b c") == "/runs/p/a%2Fb%20c"
    flat = chart("x", [(i, 1.0) for i in range(10)], width=100, height=20)
    assert len(flat.lines) == 1 and all(p.split(",")[1] == "10.0" for p in flat.lines[0].split())
    values: list[tuple[int | None, float | None]] = [(i, 0.0) for i in range(10_000)]
    values[7_777] = (7_777, 100.0)
    big = chart("loss", values, width=120, height=30)
    points = [tuple(map(float, p.split(","))) for p in big.lines[0].split()]
    assert len(points) <= 120  # 60 buckets, a min and a max each
    assert min(y for _x, y in points) == pytest.approx(2.0)  # the spike survives the downsampling
    assert big.high == "100" and big.last == "0" and big.count == 10_000
    gaps = chart("g", [(0, 1.0), (1, None), (2, 2.0), (3, 3.0)], width=100, height=20)
    assert len(gaps.lines) == 2 and len(gaps.nonfinite) == 1
    single = chart("s", [(0, 1.0)], width=100, height=20)
    assert len(single.lines) == 1 and len(single.lines[0].split()) == 2
    nothing = chart("n", [(0, None)], width=100, height=20)
    assert nothing.lines == [] and nothing.last == "non-finite"
    assert chart("e", [], width=10, height=10).lines == []
    huge = chart("h", [(0, -1e308), (1, 1e308)], width=10, height=10)
    assert all(math.isfinite(float(c)) for p in huge.lines[0].split() for c in p.split(","))
