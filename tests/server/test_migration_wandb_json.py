"""Migration 0005: stored automations move to W&B's JSON form (and back on downgrade), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from runalert.automations import Automation, NewAutomation, OnRunMetric, Project, RunEvent, SendWebhook
from runalert.client.run import automation_spec
from runalert.server.db import MIGRATIONS, Database

# Specs as revision 0004's code stored them (runalert's earlier form), written out by hand.
OLD_EVENT = {
    "event_type": "RUN_METRIC",
    "scope": {"scope_type": "PROJECT", "name": "p", "entity": None},
    "filter": {
        "kind": "run_metric",
        "run": {"kind": "field", "field": "display_name", "op": "$contains", "value": "bert"},
        "metric": {"kind": "threshold", "name": "loss", "agg": "AVERAGE", "window": 5, "cmp": "$gt", "threshold": 2.0},
    },
}
OLD_ACTION = {"action_type": "GENERIC_WEBHOOK", "integration": "hook", "payload": {"run": "${run_id}"}}
OLD_LINK = {
    "name": "linked",
    "description": "",
    "enabled": True,
    "cooldown": 86400.0,
    "notify_resolved": False,
    "event": {"event_type": "LINK_ARTIFACT", "scope": None, "filter": {"kind": "and", "filters": []}},
    "action": {"action_type": "NO_OP", "no_op": True},
}
OLD_STATE = {
    "name": "failed",
    "description": "d",
    "enabled": False,
    "cooldown": 60.0,
    "notify_resolved": True,
    "event": {
        "event_type": "RUN_STATE",
        "scope": None,
        "filter": {
            "kind": "run_state",
            "run": {"kind": "and", "filters": []},
            "state": {"kind": "state", "states": ["FAILED"]},
        },
    },
    "action": {
        "action_type": "NOTIFICATION",
        "integration": "team",
        "title": "Run failed",
        "message": "",
        "severity": "ERROR",
    },
}


def _old_auto_name() -> str:
    """The name revision 0004's client gave ``OLD_EVENT >> OLD_ACTION`` registered without one."""
    dumped = {"description": None, "enabled": None, "event": OLD_EVENT, "action": OLD_ACTION}
    return "auto-" + hashlib.sha1(json.dumps(dumped, sort_keys=True).encode(), usedforsecurity=False).hexdigest()[:10]


def _old_auto_spec() -> dict[str, Any]:
    return {
        "name": _old_auto_name(),
        "description": "",
        "enabled": True,
        "cooldown": 86400.0,
        "notify_resolved": False,
        "event": OLD_EVENT,
        "action": OLD_ACTION,
    }


def _alembic(db: Database, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def _specs(db: Database) -> dict[str, Any]:
    with db.engine.begin() as connection:
        rows = connection.execute(text("SELECT name, spec FROM automations ORDER BY id")).all()
    return {name: json.loads(spec) if isinstance(spec, str) else spec for name, spec in rows}


def _insert(db: Database, specs: list[dict[str, Any]]) -> None:
    with db.engine.begin() as connection:
        connection.execute(text("INSERT INTO projects (name, created_at) VALUES ('p', 0)"))
        connection.execute(
            text(
                "INSERT INTO automations (project_id, name, spec, fingerprint, enabled, version, created_at, "
                "updated_at) VALUES (1, :name, :spec, '', true, 1, 0, 0)"
            ),
            [{"name": s["name"], "spec": json.dumps(s)} for s in specs],
        )


def test_stored_automations_move_to_wandbs_form_and_back(database_url: str) -> None:
    db = Database(database_url, migrate=False)
    try:
        _alembic(db, "upgrade", "0004")
        old = [_old_auto_spec(), OLD_LINK, OLD_STATE]
        _insert(db, old)
        _alembic(db, "upgrade", "0005")
        new = _specs(db)
        # an automation the client named from its spec now has the name the client gives it today
        expected_auto = automation_spec(
            NewAutomation(
                event=OnRunMetric(
                    scope=Project("p"), filter=(RunEvent.metric("loss").avg(5) > 2.0) & RunEvent.name.contains("bert")
                ),
                action=SendWebhook(integration_id="hook", request_payload={"run": "${run_id}"}),
            )
        )
        assert set(new) == {expected_auto["name"], "linked", "failed"}
        assert new[expected_auto["name"]] == expected_auto
        assert new[expected_auto["name"]]["event"]["filter"] == {
            "run_filter": {"$and": [{"display_name": {"$contains": "bert"}}]},
            "run_metric_filter": {
                "threshold_filter": {
                    "name": "loss",
                    "agg_op": "AVERAGE",
                    "window_size": 5,
                    "cmp_op": "$gt",
                    "threshold": 2.0,
                }
            },
        }
        assert new["linked"]["event"]["event_type"] == "LINK_MODEL"
        assert new["linked"]["event"]["filter"] == {"$or": [{"$and": []}]}
        assert new["failed"]["action"] == {
            "action_type": "NOTIFICATION",
            "integrationID": "team",
            "title": "Run failed",
            "message": "",
            "severity": "ERROR",
        }
        for spec in new.values():  # what the API answers with: the same JSON
            assert Automation.model_validate(spec).spec() == spec
        _alembic(db, "downgrade", "0004")
        back = _specs(db)
        restored_auto = back.pop(expected_auto["name"])
        assert {**restored_auto, "name": _old_auto_name()} == _old_auto_spec()
        assert back == {"linked": OLD_LINK, "failed": OLD_STATE}
    finally:
        db.dispose()


def test_a_downgrade_that_would_lose_an_automation_stops_naming_it(database_url: str) -> None:
    db = Database(database_url, migrate=False)
    try:
        _alembic(db, "upgrade", "0005")
        unlink = Automation.model_validate(
            {"name": "unlinked", "event": {"event_type": "UNLINK_ARTIFACT"}, "action": {"action_type": "NO_OP"}}
        )
        _insert(db, [unlink.spec()])
        with pytest.raises(RuntimeError, match=r"'unlinked'.*event type UNLINK_ARTIFACT"):
            _alembic(db, "downgrade", "0004")
        assert _specs(db) == {"unlinked": unlink.spec()}
    finally:
        db.dispose()
