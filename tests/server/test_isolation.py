"""Delivery isolation: slow receivers in one project never delay another project's alerts (real dispatcher,
real hostile receivers on loopback)."""

from __future__ import annotations

import time
from typing import Any

from tests.hostile import HostileReceiver, ok, trickles
from tests.support import wait_for

P = "/api/v1/projects"


def _hook(client: Any, project: str, name: str, url: str) -> None:
    answer = client.put(f"{P}/{project}/integrations/{name}", json={"kind": "webhook", "url": url})
    assert answer.status_code == 201, answer.text


def test_slow_receivers_in_one_project_do_not_delay_another_projects_alert(make_client: Any) -> None:
    # Four receivers in project A answer headers, then one byte every 0.5 s: each attempt would hold its worker
    # for the whole 120 s deadline. Project B's receiver is healthy.
    slow = [HostileReceiver(trickles(0.5, headers_too=True)) for _ in range(4)]
    good = HostileReceiver(ok())
    try:
        client = make_client(delivery_timeout=120, dispatcher_threads=4)
        for i, receiver in enumerate(slow):
            _hook(client, "a", f"slow{i}", receiver.url())
        _hook(client, "b", "good", good.url())
        client.post(f"{P}/a/alerts", json={"title": "from a"})
        # A's deliveries hold workers now (as many as the dispatcher gives them).
        assert wait_for(lambda: sum(r.connections for r in slow) >= 2)
        client.post(f"{P}/b/alerts", json={"title": "from b"})
        # Delivered within 15 s, where A's receivers hold their attempts for 120 s.
        assert good.wait_for_requests(1, timeout=30)
        assert b'"title":"from b"' in good.received[0].body
        delivery = client.get(f"{P}/b/alerts").json()[0]["deliveries"][0]
        assert wait_for(lambda: client.get(f"{P}/b/alerts").json()[0]["deliveries"][0]["status"] == "delivered")
        assert delivery["attempts"] <= 1
    finally:
        for receiver in [*slow, good]:
            receiver.stop()


def test_an_integration_in_flight_is_not_claimed_again_when_its_lease_runs_out(make_client: Any) -> None:
    # The lease (0.3 s) is shorter than the attempt: the dispatcher that holds the attempt must not start a
    # second one on the same integration (one integration holds one worker at most).
    receiver = HostileReceiver(trickles(0.5, headers_too=True))
    try:
        client = make_client(delivery_timeout=120, lease_seconds=0.3)
        _hook(client, "a", "slow", receiver.url())
        client.post(f"{P}/a/alerts", json={"title": "one"})
        assert receiver.wait_for_connections(1)
        leased = client.get(f"{P}/a/alerts").json()[0]["deliveries"][0]
        assert leased["status"] == "pending"
        ctx = client.app.state.ctx
        from runalert.server.models import Delivery

        def lease_over() -> bool:
            with ctx.db.read_session() as session:
                row = session.query(Delivery).one()
                return row.lease_until is not None and row.lease_until < time.time()

        assert wait_for(lease_over)
        assert ctx.dispatcher.claim(10, fair=True) == []  # what the dispatcher's own loop asks
        assert receiver.connections == 1
    finally:
        receiver.stop()


def test_every_attempt_ends_at_the_delivery_timeout_and_each_trick_is_recorded(make_client: Any) -> None:
    from tests.hostile import closes_mid_body, hangs, huge

    script = [trickles(0.2, headers_too=True), huge(status=500), closes_mid_body(status=503), hangs()]
    with HostileReceiver(script, default=ok()) as receiver:
        client = make_client(delivery_timeout=1)
        _hook(client, "a", "hostile", receiver.url())
        client.post(f"{P}/a/alerts", json={"title": "persistent"})

        def delivery() -> dict[str, Any]:
            return client.get(f"{P}/a/alerts").json()[0]["deliveries"][0]  # type: ignore[no-any-return]

        assert wait_for(lambda: delivery()["status"] == "delivered", timeout=60)
        assert len(receiver.received) == 5
    log = delivery()["attempt_log"]
    assert [a["outcome"] for a in log] == ["retry"] * 4 + ["delivered"]
    errors = [a["error"] for a in log[:4]]
    assert errors[0] == errors[3] == "no answer within 1 s (the whole attempt's deadline)"
    assert errors[1].startswith("HTTP 500 Internal Server Error: xxxx") and len(errors[1]) < 100
    assert errors[2].startswith("HTTP 503 Service Unavailable: yyyy") and len(errors[2]) < 100
