"""Editing in the page: automations and integrations created, edited, enabled/disabled and deleted through
server-rendered forms (in-process, Starlette's TestClient), each POST checked for its session's CSRF token, the
API's own validation messages shown, a test message to a real receiver on loopback, and a backtest drawn on a
run's chart. The same in a real browser: ``test_web_chromium.py``."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from runalert.server.auth import create_key
from runalert.server.routers.web import COOKIE
from runalert.webhooks import verify
from tests.server.test_automations import loss_rule
from tests.server.test_web import csrf_token
from tests.support import Receiver

P = "/api/v1/projects"
SECRET = "s3cret-signing-value"


def _spec_text(rule: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in rule.items() if k not in ("name", "description", "enabled")})


def _automation_form(token: str, rule: dict[str, Any], **fields: str) -> dict[str, str]:
    form = {"csrf_token": token, "project": "p", "name": rule["name"], "spec": _spec_text(rule), "enabled": "on"}
    form.update(fields)
    return form


def bad_threshold(rule: dict[str, Any]) -> dict[str, Any]:
    """``rule`` with its threshold a word (whatever the JSON form's field names, the threshold's key stays)."""
    text = json.dumps(rule)
    assert '"threshold": 2.0' in text
    changed: dict[str, Any] = json.loads(text.replace('"threshold": 2.0', '"threshold": "high"'))
    return changed


def _rule_in(project: str) -> dict[str, Any]:
    rule = loss_rule()
    rule["event"]["scope"]["name"] = project
    return rule


def _hook(client: Any, url: str = "http://127.0.0.1:9/hook", project: str = "p") -> None:
    """The integration and the secret that ``loss_rule()`` uses."""
    client.put(f"{P}/{project}/secrets/TOKEN", json={"value": "s3cret-token-value"})
    assert client.put(f"{P}/{project}/integrations/hook", json={"kind": "webhook", "url": url}).status_code == 201


def _api_error(client: Any, method: str, path: str, body: dict[str, Any]) -> str:
    """The API's 422 message for ``body`` (its detail, or each error's ``field: message``)."""
    answer = client.request(method, path, json=body)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    if isinstance(detail, str):
        return detail
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in detail)


def _brief(page: Any) -> str:
    """A failed answer in a line: its status and the error it shows."""
    found = re.search(r'class="error[^"]*">(.*?)</p>', page.text, re.S)
    return f"{page.status_code}: {html.unescape(found.group(1)) if found else page.text[:300]}"


def _textarea(page: Any) -> str:
    found = re.search(r'<textarea id="spec" name="spec"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert found, "no spec text area"
    return html.unescape(found.group(1))


def _shown_error(page: Any) -> str:
    found = re.search(r'<p class="error form-error">(.*?)</p>', page.text, re.S)
    assert found, f"no error shown ({page.status_code})"
    return html.unescape(found.group(1))


# -- automations ---------------------------------------------------------------------------------------------
def test_an_automation_is_created_from_the_form_and_listed(client: Any) -> None:
    _hook(client)
    token = csrf_token(client, "/automations/new")
    new = client.get("/automations/new")
    assert "OnRunMetric" not in new.text and "RUN_METRIC" in new.text  # a starting point made by the Python API
    done = client.post("/automations/new", data=_automation_form(token, loss_rule()), follow_redirects=False)
    assert done.status_code == 303, _brief(done)
    assert done.headers["location"] == "/automations?done=created&name=loss-diverging"
    stored = client.get(f"{P}/p/automations/loss-diverging").json()
    assert stored["enabled"] is True
    assert stored["spec"]["event"] == loss_rule()["event"]
    listing = client.get(done.headers["location"])
    assert "loss-diverging: created" in listing.text
    assert 'href="/automations/p/loss-diverging"' in listing.text
    # The same name again is refused (the API's 409), and the stored one is untouched.
    again = client.post("/automations/new", data=_automation_form(token, loss_rule(threshold=9.0)))
    assert again.status_code == 409 and "exists" in _shown_error(again)  # the API's 409
    assert client.get(f"{P}/p/automations/loss-diverging").json()["spec"] == stored["spec"]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: r.update(bad_threshold(r)), id="threshold-not-a-number"),
        pytest.param(lambda r: r["event"].pop("event_type"), id="no-event-type"),
        pytest.param(lambda r: r["action"].update(action_type="PAGER"), id="unknown-action"),
        pytest.param(lambda r: r["event"]["scope"].update(name="other"), id="scope-of-another-project"),
    ],
)
def test_an_invalid_automation_shows_the_apis_message_and_stores_nothing(client: Any, change: Any) -> None:
    _hook(client)
    rule = loss_rule()
    change(rule)
    expected = _api_error(client, "PUT", f"{P}/p/automations/loss-diverging", rule)
    token = csrf_token(client, "/automations/new")
    page = client.post("/automations/new", data=_automation_form(token, rule))
    assert page.status_code == 422
    assert _shown_error(page) == expected
    assert _textarea(page) == _spec_text(rule)  # what was typed is kept
    assert client.get(f"{P}/p/automations").json() == []


def test_a_spec_that_is_not_json_names_the_field(client: Any) -> None:
    token = csrf_token(client, "/automations/new")
    page = client.post("/automations/new", data={**_automation_form(token, loss_rule()), "spec": '{"event": [1,'})
    assert page.status_code == 422
    assert _shown_error(page).startswith("spec: not valid JSON or YAML")
    laughs = "a: &a [x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 8)}]\n" for i in range(8)
    )
    bomb = client.post("/automations/new", data={**_automation_form(token, loss_rule()), "spec": laughs})
    assert bomb.status_code == 422
    assert _shown_error(bomb) == "spec: not valid JSON or YAML at line 2, column 8: aliases (*name) are not allowed"
    deep = client.post("/automations/new", data={**_automation_form(token, loss_rule()), "spec": "[" * 5000})
    assert deep.status_code == 422 and _shown_error(deep).startswith("spec: ")
    name = client.post("/automations/new", data={**_automation_form(token, loss_rule()), "name": "-bad/name"})
    assert name.status_code == 422 and _shown_error(name).startswith("name: String should match pattern")


def test_an_automation_is_edited_enabled_disabled_and_deleted(client: Any) -> None:
    _hook(client)
    assert client.put(f"{P}/p/automations/loss-diverging", json=loss_rule()).status_code == 201
    edit = client.get("/automations/p/loss-diverging")
    assert edit.status_code == 200
    assert json.loads(_textarea(edit))["event"] == loss_rule()["event"]
    token = csrf_token(client, "/automations/p/loss-diverging")

    saved = client.post(
        "/automations/p/loss-diverging",
        data=_automation_form(token, loss_rule(threshold=5.0), description="louder"),
        follow_redirects=False,
    )
    assert saved.status_code == 303 and "done=updated" in saved.headers["location"]
    stored = client.get(f"{P}/p/automations/loss-diverging").json()
    assert stored["spec"]["event"] == loss_rule(threshold=5.0)["event"]
    assert stored["spec"]["description"] == "louder" and stored["version"] == 2

    bad = client.post("/automations/p/loss-diverging", data=_automation_form(token, loss_rule(), spec='{"action": {}}'))
    assert bad.status_code == 422 and "event" in _shown_error(bad)
    assert client.get(f"{P}/p/automations/loss-diverging").json()["version"] == 2

    off = client.post("/automations/p/loss-diverging/disable", data={"csrf_token": token}, follow_redirects=False)
    assert off.status_code == 303 and "done=disabled" in off.headers["location"]
    assert client.get(f"{P}/p/automations/loss-diverging").json()["enabled"] is False
    assert client.put(f"{P}/p/runs/r1", json={"name": "r1"}).is_success
    assert client.post(f"{P}/p/runs/r1/metrics", json={"rows": [{"metrics": {"loss": 99.0}}]}).json()["fired"] == []
    on = client.post("/automations/p/loss-diverging/enable", data={"csrf_token": token}, follow_redirects=False)
    assert on.status_code == 303
    assert client.get(f"{P}/p/automations/loss-diverging").json()["enabled"] is True

    gone = client.post("/automations/p/loss-diverging/delete", data={"csrf_token": token}, follow_redirects=False)
    assert gone.status_code == 303 and "done=deleted" in gone.headers["location"]
    assert client.get(f"{P}/p/automations/loss-diverging").status_code == 404
    missing = client.post("/automations/p/loss-diverging/delete", data={"csrf_token": token})
    assert missing.status_code == 404 and "not found" in missing.text


# -- CSRF ----------------------------------------------------------------------------------------------------
POSTS = [
    ("/automations/new", "automation"),
    ("/automations/p/loss-diverging", "automation"),
    ("/automations/p/loss-diverging/disable", "automation"),
    ("/automations/p/loss-diverging/delete", "automation"),
    ("/integrations/new", "integration"),
    ("/integrations/p/hook", "integration"),
    ("/integrations/p/hook/test", "integration"),
    ("/integrations/p/hook/delete", "integration"),
]


@pytest.mark.parametrize(("path", "_kind"), POSTS)
@pytest.mark.parametrize("token", ["missing", "wrong", "another-sessions"])
def test_a_post_without_its_sessions_csrf_token_is_refused(
    make_client: Any, httpserver: HTTPServer, path: str, _kind: str, token: str
) -> None:
    client = make_client(background=False)
    receiver = Receiver(httpserver)
    _hook(client, receiver.url)
    assert client.put(f"{P}/p/automations/loss-diverging", json=loss_rule()).status_code == 201
    before = (client.get(f"{P}/p/automations").json(), client.get(f"{P}/p/integrations").json())
    csrf_token(client, "/automations")  # this client has a session
    other = make_client(background=False)
    values = {
        "missing": None,
        "wrong": "0" * 64,
        "another-sessions": csrf_token(other, "/automations"),  # valid, but for the other browser's session
    }
    form = {**_automation_form("", loss_rule(threshold=7.0)), "kind": "webhook", "url": receiver.url + "x"}
    form.pop("csrf_token")
    if values[token] is not None:
        form["csrf_token"] = str(values[token])
    answer = client.post(path, data=form, follow_redirects=False)
    assert answer.status_code == 403
    assert "CSRF" in answer.text
    assert (client.get(f"{P}/p/automations").json(), client.get(f"{P}/p/integrations").json()) == before
    client.app.state.ctx.dispatcher.run_once()
    assert receiver.requests == []  # no test message went out


def test_the_session_cookie_is_httponly_and_strict(client: Any) -> None:
    page = client.get("/automations/new")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("runalert_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert token and token.group(1) not in cookie  # the cookie holds the session id, not the token
    assert "set-cookie" not in client.get("/automations/new").headers  # one session per browser


# -- integrations --------------------------------------------------------------------------------------------
def _integration_form(token: str, **fields: str) -> dict[str, str]:
    form = {"csrf_token": token, "project": "p", "name": "hook", "kind": "webhook", "min_level": "INFO"}
    form.update(fields)
    return form


def test_an_integration_is_created_tested_on_a_real_receiver_edited_and_deleted(
    client: Any, httpserver: HTTPServer
) -> None:
    receiver = Receiver(httpserver)
    token = csrf_token(client, "/integrations/new")
    # A refused form sets no secret and does not echo its value.
    form = _integration_form(token, url="ftp://x", signing_secret="SIGNING", secret_name="SIGNING", secret_value=SECRET)
    refused = client.post("/integrations/new", data=form)
    assert refused.status_code == 422 and SECRET not in refused.text
    assert 'value="SIGNING"' in refused.text  # the rest of what was typed comes back
    assert client.get(f"{P}/p/secrets").json() == []
    bad_name = client.post("/integrations/new", data={**form, "url": receiver.url, "secret_name": "no such"})
    assert bad_name.status_code == 422 and _shown_error(bad_name).startswith("secret_name: String should match")
    assert SECRET not in bad_name.text and client.get(f"{P}/p/integrations").json() == []

    made = client.post(
        "/integrations/new",
        data={**form, "url": receiver.url, "default": "on"},
        follow_redirects=False,
    )
    assert made.status_code == 303, _brief(made)
    assert [s["name"] for s in client.get(f"{P}/p/secrets").json()] == ["SIGNING"]
    stored = client.get(f"{P}/p/integrations/hook").json()
    assert stored["kind"] == "webhook" and stored["spec"]["url"] == receiver.url and stored["default"] is True
    listing = client.get(made.headers["location"]).text
    assert "hook: created" in html.unescape(listing) and receiver.url in listing
    assert SECRET not in listing
    edit = client.get("/integrations/p/hook")
    assert 'value="SIGNING"' in edit.text and SECRET not in edit.text

    sent = client.post("/integrations/p/hook/test", data={"csrf_token": token}, follow_redirects=False)
    assert sent.status_code == 303 and "done=tested" in sent.headers["location"]
    client.app.state.ctx.dispatcher.run_once()
    receiver.drain()
    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    assert "runalert test: hook" in json.dumps(body)
    raw = httpserver.log[-1][0].get_data()
    assert verify(raw, headers, SECRET)  # signed with the secret set through the form
    alerts = client.get(f"{P}/p/alerts").json()
    assert alerts[0]["kind"] == "test" and alerts[0]["deliveries"][0]["status"] == "delivered"

    saved = client.post(
        "/integrations/p/hook",
        data=_integration_form(token, url=receiver.url, description="the ops hook", min_level="ERROR"),
        follow_redirects=False,
    )
    assert saved.status_code == 303 and "done=updated" in saved.headers["location"]
    stored = client.get(f"{P}/p/integrations/hook").json()
    assert stored["description"] == "the ops hook" and stored["min_level"] == "ERROR"
    assert stored["default"] is False and "signing_secret" not in {k for k, v in stored["spec"].items() if v}

    gone = client.post("/integrations/p/hook/delete", data={"csrf_token": token}, follow_redirects=False)
    assert gone.status_code == 303
    assert client.get(f"{P}/p/integrations/hook").status_code == 404


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"url": "http://127.0.0.1:9/h", "port": "99999"}, id="port-out-of-range"),
        pytest.param({"url": "ftp://example.org/h"}, id="url-scheme"),
        pytest.param({}, id="webhook-without-url"),
        pytest.param({"url": "http://127.0.0.1:9/h", "signing_secret": "not a name"}, id="secret-name"),
        pytest.param({"kind": "pager", "url": "http://127.0.0.1:9/h"}, id="unknown-kind"),
        pytest.param({"kind": "slack", "bot_token_secret": "BOT"}, id="slack-bot-without-channel"),
    ],
)
def test_an_invalid_integration_shows_the_apis_message_and_stores_nothing(client: Any, fields: dict[str, str]) -> None:
    form = _integration_form("", **fields)
    body = {k: v for k, v in form.items() if k not in ("csrf_token", "project", "name") and v}
    body["default"] = False
    if "port" in body:
        body["port"] = int(body["port"])
    expected = _api_error(client, "PUT", f"{P}/p/integrations/hook", body)
    form["csrf_token"] = csrf_token(client, "/integrations/new")
    page = client.post("/integrations/new", data=form)
    assert page.status_code == 422
    assert _shown_error(page) == expected
    assert client.get(f"{P}/p/integrations").json() == []


class _Browser(HTMLParser):
    """What a browser submits for a page's first form: each named field's value (a checked checkbox's, the
    selected option's, a text area's), repeated names kept in order."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if self._done or "disabled" in a:
            return
        if tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind == "checkbox":
                if "checked" in a:
                    self.fields.append((a["name"], a.get("value") or "on"))
            elif kind not in ("submit", "button"):
                self.fields.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self._select, self._options = a.get("name"), []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select is not None:
            chosen = [v for v, selected in self._options if selected] or [v for v, _ in self._options[:1]]
            self.fields.extend((self._select, v) for v in chosen)
            self._select = None
        elif tag == "form":
            self._done = True


def _submitted(page: Any, **changes: str) -> dict[str, Any]:
    """The form on ``page`` as a browser submits it, with ``changes`` typed in (httpx's form data)."""
    browser = _Browser()
    browser.feed(page.text)
    form: dict[str, Any] = {}
    for name, value in browser.fields:
        form[name] = [*form.get(name, []), value] if name == "group_by" else value
    form.update(changes)
    return form


BOT = {"kind": "slack", "bot_token_secret": "SLACK_TOKEN", "channel": "#alerts"}
DELIVERY = {"threads": True, "group_interval": 30.0, "group_by": ["title", "host"], "api_url": "http://127.0.0.1:9/api"}


def test_an_integrations_delivery_options_are_shown_and_kept_when_edited_on_the_page(client: Any) -> None:
    assert client.put(f"{P}/p/integrations/bot", json={**BOT, **DELIVERY}).status_code == 201
    before = client.get(f"{P}/p/integrations/bot").json()
    assert {k: before["spec"].get(k) for k in DELIVERY} == DELIVERY
    page = client.get("/integrations/p/bot")
    shown = _submitted(page)
    assert shown["threads"] == "on" and shown["group_interval"] == "30" and shown["group_by"] == ["title", "host"]
    assert shown["api_url"] == DELIVERY["api_url"]

    saved = client.post("/integrations/p/bot", data=_submitted(page, description="the team"), follow_redirects=False)
    assert saved.status_code == 303 and "done=updated" in saved.headers["location"], _brief(saved)
    after = client.get(f"{P}/p/integrations/bot").json()
    assert after["description"] == "the team" and after["spec"] == before["spec"]
    again = client.post(
        "/integrations/p/bot", data=_submitted(client.get("/integrations/p/bot")), follow_redirects=False
    )
    assert "done=unchanged" in again.headers["location"], _brief(again)

    # Unchecking and emptying them on the page turns them off (the API's defaults).
    off = _submitted(client.get("/integrations/p/bot"), group_interval="0", api_url="", group_by="title")
    del off["threads"]
    assert client.post("/integrations/p/bot", data=off, follow_redirects=False).status_code == 303
    assert not set(DELIVERY) & set(client.get(f"{P}/p/integrations/bot").json()["spec"])


@pytest.mark.parametrize(
    ("fields", "api"),
    [
        pytest.param({"group_by": ["title", "bogus"]}, {"group_by": ["title", "bogus"]}, id="group_by"),
        pytest.param({"group_interval": "-5"}, {"group_interval": -5}, id="group_interval-negative"),
        pytest.param({"group_interval": "soon"}, {"group_interval": "soon"}, id="group_interval-not-a-number"),
        pytest.param({"api_url": "ftp://x"}, {"api_url": "ftp://x"}, id="api_url-scheme"),
        pytest.param({"kind": "webhook", "url": "http://127.0.0.1:9/h", "threads": "on"}, {}, id="threads-webhook"),
    ],
)
def test_an_invalid_delivery_option_shows_the_apis_message_and_stores_nothing(
    client: Any, fields: dict[str, Any], api: dict[str, Any]
) -> None:
    form = {**_integration_form("", name="bot", **{k: v for k, v in BOT.items() if k != "kind"}), "kind": "slack"}
    form.update(fields)
    body = {k: v for k, v in form.items() if k not in ("csrf_token", "project", "name")} | api
    body["default"] = False
    body["threads"] = body.get("threads") == "on"
    if body["kind"] == "webhook":
        del body["bot_token_secret"], body["channel"]
        form.update(bot_token_secret="", channel="")
    expected = _api_error(client, "PUT", f"{P}/p/integrations/bot", body)
    assert expected.startswith(next(iter(fields.keys() - {"kind", "url"})))  # the message names the option
    form["csrf_token"] = csrf_token(client, "/integrations/new")
    page = client.post("/integrations/new", data=form)
    assert page.status_code == 422
    assert _shown_error(page) == expected
    assert client.get(f"{P}/p/integrations").json() == []


# -- keys ----------------------------------------------------------------------------------------------------
def test_a_key_changes_its_own_project_only(client: Any) -> None:
    _hook(client)
    _hook(client, project="q")
    assert client.put(f"{P}/q/integrations/theirs", json={"kind": "webhook", "url": "http://127.0.0.1:9/q"}).is_success
    assert client.put(f"{P}/q/automations/loss-diverging", json=_rule_in("q")).status_code == 201
    ctx = client.app.state.ctx
    with ctx.db.session() as session:
        _row, key = create_key(session, "p")
    assert client.get("/automations").status_code == 401  # keys exist now: the page needs one
    client.cookies.set(COOKIE, key)
    token = csrf_token(client, "/automations/new")
    listing = client.get("/integrations").text
    assert "hook" in listing and "theirs" not in listing and key not in listing
    for path in ("/automations/q/loss-diverging/disable", "/integrations/q/theirs/delete"):
        assert client.post(path, data={"csrf_token": token}).status_code == 404
    refused = client.post("/automations/new", data=_automation_form(token, _rule_in("q"), project="q"))
    assert refused.status_code == 422 and "project" in _shown_error(refused)
    assert client.get("/automations/q/loss-diverging").status_code == 404
    mine = client.post("/automations/new", data=_automation_form(token, loss_rule()), follow_redirects=False)
    assert mine.status_code == 303
    client.cookies.delete(COOKIE)
    assert client.get(f"{P}/p/automations/loss-diverging", headers={"Authorization": f"Bearer {key}"}).is_success
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get(f"{P}/q/automations/loss-diverging", headers=auth).status_code == 404
    with ctx.db.session() as session:
        _row, qkey = create_key(session, "q")
    theirs = client.get(f"{P}/q/automations/loss-diverging", headers={"Authorization": f"Bearer {qkey}"}).json()
    assert theirs["enabled"] is True


# -- backtest ------------------------------------------------------------------------------------------------
def test_a_backtest_draws_the_firings_on_the_runs_chart(client: Any) -> None:
    _hook(client)
    rule = loss_rule(threshold=2.0, window=1)
    rule["name"] = "hot"
    assert client.put(f"{P}/p/automations/hot", json=rule).is_success
    client.patch(f"{P}/p/automations/hot", json={"enabled": False})  # a backtest replays, it sends nothing
    losses = [1.0, 3.0, 4.0, 1.0, 5.0, 1.0, float("nan"), 1.5]
    rows = [{"step": 10 + i, "metrics": {"loss": v if v == v else "NaN", "lr": 0.1}} for i, v in enumerate(losses)]
    assert client.put(f"{P}/p/runs/r1", json={"name": "bert"}).is_success
    assert client.post(f"{P}/p/runs/r1/metrics", json={"rows": rows}).status_code == 200
    run_page = client.get("/runs/p/r1").text
    assert 'href="/automations/p/hot/backtest?run=r1"' in run_page

    page = client.get("/automations/p/hot/backtest?run=r1")
    assert page.status_code == 200
    firings = re.findall(r'<tr class="firing"><td class="num">(\d+)</td><td class="num">([^<]+)</td>', page.text)
    assert firings == [("11", "3"), ("14", "5")]  # edge-triggered: 3 and 4 are one firing
    assert page.text.count('<g class="firing">') == 2
    assert "Fires 2 times on this run." in page.text
    assert client.get(f"{P}/p/alerts").json() == []

    assert "There is no run nope" in client.get("/automations/p/hot/backtest?run=nope").text
    choose = client.get("/automations/p/hot/backtest").text
    assert 'href="/automations/p/hot/backtest?run=r1"' in choose
