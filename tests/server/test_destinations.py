"""The destination policy: checked when an integration is saved and again when a delivery connects, against the
address the host resolves to."""

from __future__ import annotations

from typing import Any

import pytest

from runalert.server.auth import create_key
from tests.hostile import HostileReceiver, ok
from tests.support import wait_for

P = "/api/v1/projects"


def _key(client: Any, project: str = "p") -> dict[str, str]:
    with client.app.state.ctx.db.session() as session:
        _row, token = create_key(session, project)
    return {"Authorization": f"Bearer {token}"}


def _put(client: Any, spec: dict[str, Any], headers: dict[str, str] | None = None, name: str = "hook") -> Any:
    return client.put(f"{P}/p/integrations/{name}", json=spec, headers=headers or {})


REFUSED_WITH_KEYS = [
    ({"kind": "webhook", "url": "http://127.0.0.1:9/hook"}, "loopback"),
    ({"kind": "webhook", "url": "http://localhost:9/hook"}, "localhost (127.0.0.1) is a loopback"),
    ({"kind": "webhook", "url": "https://10.1.2.3/hook"}, "private"),
    ({"kind": "webhook", "url": "https://192.168.0.10/hook"}, "private"),
    ({"kind": "webhook", "url": "https://169.254.169.254/latest/meta-data"}, "cloud metadata"),
    ({"kind": "webhook", "url": "https://[fd00:ec2::254]/latest"}, "cloud metadata"),
    ({"kind": "webhook", "url": "https://[::ffff:127.0.0.1]/x"}, "loopback"),
    ({"kind": "webhook", "url": "https://169.254.10.1/x"}, "link-local"),
    ({"kind": "email", "host": "10.0.0.25", "sender": "a@b.c", "to": ["d@e.f"]}, "private"),
    ({"kind": "email", "host": "127.0.0.1", "port": 25, "sender": "a@b.c", "to": ["d@e.f"]}, "loopback"),
]


@pytest.mark.parametrize(("spec", "kind"), REFUSED_WITH_KEYS)
def test_with_api_keys_private_destinations_are_refused_naming_the_setting(
    make_client: Any, spec: dict[str, Any], kind: str
) -> None:
    client = make_client(background=False)
    answer = _put(client, spec, _key(client))
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert kind in detail and "API keys are configured" in detail
    assert "RUNALERT_ALLOW_PRIVATE_DESTINATIONS=true" in detail


def test_without_keys_loopback_is_allowed_but_not_private_or_metadata(make_client: Any) -> None:
    client = make_client(background=False)
    assert _put(client, {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}).status_code == 201
    for url, kind in (("https://10.1.2.3/x", "private"), ("https://169.254.169.254/x", "cloud metadata")):
        answer = _put(client, {"kind": "webhook", "url": url}, name="other")
        assert answer.status_code == 422 and kind in answer.json()["detail"]
        assert "RUNALERT_ALLOW_PRIVATE_DESTINATIONS=true" in answer.json()["detail"]


def test_the_setting_allows_a_labs_internal_webhook(make_client: Any) -> None:
    with HostileReceiver(ok()) as receiver:
        client = make_client(allow_private_destinations=True)
        key = _key(client)
        assert _put(client, {"kind": "webhook", "url": receiver.url()}, key).status_code == 201
        assert _put(client, {"kind": "webhook", "url": "https://10.1.2.3/x"}, key, name="lab").status_code == 201
        client.post(f"{P}/p/alerts", json={"title": "internal", "integrations": ["hook"]}, headers=key)
        assert receiver.wait_for_requests(1)


def test_the_policy_is_checked_again_when_a_delivery_connects(make_client: Any) -> None:
    # Saved while the server had no keys (loopback allowed); a key appears; the address ``localhost`` resolves to
    # at connect time is refused and nothing reaches the receiver. A Slack URL (a secret, never checked when the
    # integration is saved) is refused the same way.
    with HostileReceiver(ok()) as receiver:
        client = make_client()
        url = receiver.url().replace("127.0.0.1", "localhost")
        assert _put(client, {"kind": "webhook", "url": url}).status_code == 201
        client.put(f"{P}/p/secrets/SLACK", json={"value": receiver.url("/services/T1/B1/x")})
        assert _put(client, {"kind": "slack", "webhook_url_secret": "SLACK"}, name="slack").status_code == 201
        key = _key(client)
        client.post(f"{P}/p/alerts", json={"title": "after the key"}, headers=key)

        def settled() -> list[Any]:
            deliveries = client.get(f"{P}/p/alerts", headers=key).json()[0]["deliveries"]
            return deliveries if all(d["status"] != "pending" for d in deliveries) else []

        assert wait_for(settled)
        errors = {d["integration"]: (d["status"], d["attempts"], d["last_error"]) for d in settled()}
        assert errors["hook"][:2] == ("dead", 1) and errors["slack"][:2] == ("dead", 1)
        assert "destination localhost (127.0.0.1) is a loopback address" in errors["hook"][2]
        assert "destination 127.0.0.1 is a loopback address" in errors["slack"][2]
        assert "RUNALERT_ALLOW_PRIVATE_DESTINATIONS=true" in errors["slack"][2]
        assert receiver.connections == 0
