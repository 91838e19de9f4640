"""The outbox on its own (``runalert.server.outbox``): what ``record_alert`` stores in the caller's transaction, on
the server's migrated database (SQLite file or PostgreSQL), read back through the server's models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from runalert.alert import MAX_TITLE_LENGTH, fingerprint
from runalert.server.db import Database
from runalert.server.delivery_models import Rollup, RollupMember
from runalert.server.models import AlertRecord, Delivery, Integration, Project, Run
from runalert.server.outbox import default_integrations, record_alert, short_title
from tests.server.migrated import migrated_copy

NOW = 1_800_000_000.0


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    migrated_copy(database_url)
    database = Database(database_url)
    yield database
    database.dispose()


def _project(db: Database, name: str = "p") -> int:
    with db.session() as session:
        project = Project(name=name)
        session.add(project)
        session.flush()
        return project.id


def _integration(db: Database, project_id: int, name: str, **columns: Any) -> int:
    columns.setdefault("spec", {"kind": "webhook", "url": f"http://127.0.0.1:9/{name}"})
    with db.session() as session:
        row = Integration(project_id=project_id, name=name, kind="webhook", **columns)
        session.add(row)
        session.flush()
        return row.id


def _run(db: Database, project_id: int, run_id: str = "r1") -> int:
    with db.session() as session:
        row = Run(project_id=project_id, run_id=run_id, name="bert")
        session.add(row)
        session.flush()
        return row.id


def _record(db: Database, project_id: int, *, integrations: list[int] | None = None, **kw: Any) -> dict[str, Any]:
    """``record_alert`` in its own transaction; the stored alert and its deliveries, read back."""
    kw.setdefault("title", "alert")
    kw.setdefault("source", "client")
    kw.setdefault("now", NOW)
    run_pk = kw.pop("run_pk", None)
    with db.session() as session:
        targets = None if integrations is None else [session.get(Integration, i) for i in integrations]
        run = session.get(Run, run_pk) if run_pk is not None else None
        record_id = record_alert(session, project_id, run=run, integrations=targets, **kw).id
    return _read(db, record_id)


def _read(db: Database, record_id: str) -> dict[str, Any]:
    with db.read_session() as session:
        record = session.get(AlertRecord, record_id)
        assert record is not None
        deliveries = list(
            session.scalars(select(Delivery).where(Delivery.alert_id == record_id).order_by(Delivery.seq))
        )
        return {
            "id": record.id,
            "project_id": record.project_id,
            "run_pk": record.run_pk,
            "automation_id": record.automation_id,
            "source": record.source,
            "kind": record.kind,
            "key": record.key,
            "title": record.title,
            "text": record.text,
            "level": record.level,
            "fields": record.fields,
            "payload": record.payload,
            "markup": record.markup,
            "suppressed": record.suppressed,
            "suppressed_before": record.suppressed_before,
            "created_at": record.created_at,
            "deliveries": [
                {
                    "integration_id": d.integration_id,
                    "integration_name": d.integration_name,
                    "status": d.status,
                    "created_at": d.created_at,
                    "next_attempt_at": d.next_attempt_at,
                    "attempts": d.attempts,
                    "seq": d.seq,
                }
                for d in deliveries
            ],
        }


# -- short_title ---------------------------------------------------------------------------------------------
def test_short_title_collapses_whitespace_and_names_an_empty_title() -> None:
    assert short_title("  Run   bert\tfailed\n ") == "Run bert failed"
    assert short_title("") == "alert"
    assert short_title(" \n\t") == "alert"


def test_short_title_cuts_at_the_longest_title_with_an_ellipsis() -> None:
    exact = "x" * MAX_TITLE_LENGTH
    assert short_title(exact) == exact
    cut = short_title("y" * (MAX_TITLE_LENGTH + 1))
    assert cut == "y" * (MAX_TITLE_LENGTH - 1) + "…"
    assert len(cut) == MAX_TITLE_LENGTH
    assert short_title("a " * MAX_TITLE_LENGTH) == ("a " * MAX_TITLE_LENGTH)[: MAX_TITLE_LENGTH - 1] + "…"


# -- default_integrations ------------------------------------------------------------------------------------
def test_default_integrations_are_the_projects_defaults_in_creation_order(db: Database) -> None:
    p, q = _project(db, "p"), _project(db, "q")
    second = _integration(db, p, "b-second")
    _integration(db, p, "not-default", is_default=False)
    first_q = _integration(db, q, "other-project")
    third = _integration(db, p, "a-third")
    with db.session() as session:
        assert [i.id for i in default_integrations(session, p)] == [second, third]
        assert [i.id for i in default_integrations(session, q)] == [first_q]


# -- record_alert ----------------------------------------------------------------------------------------------
def test_an_alert_is_stored_as_given_with_one_pending_delivery_per_default_integration(db: Database) -> None:
    p = _project(db)
    run = _run(db, p)
    hooks = [_integration(db, p, "a"), _integration(db, p, "b")]
    _integration(db, p, "off", is_default=False)
    stored = _record(
        db,
        p,
        title="Loss is NaN",
        text="at step 7",
        level="warn",
        source="automation",
        kind="metric",
        run_pk=run,
        fields={"step": 7, 3: None},
        payload={"a": [1, 2]},
        markup=True,
        alert_id="client-id-1",
    )
    assert stored["id"] == "client-id-1"
    assert (stored["project_id"], stored["run_pk"], stored["automation_id"]) == (p, run, None)
    assert (stored["source"], stored["kind"], stored["title"], stored["text"]) == (
        "automation",
        "metric",
        "Loss is NaN",
        "at step 7",
    )
    assert stored["level"] == "WARN"
    assert stored["key"] == fingerprint("r1", "Loss is NaN")
    assert stored["fields"] == {"step": "7", "3": "None"}  # every name and value as text
    assert stored["payload"] == {"a": [1, 2]}
    assert stored["markup"] is True
    assert (stored["suppressed"], stored["suppressed_before"], stored["created_at"]) == (False, 0, NOW)
    assert [(d["integration_id"], d["integration_name"]) for d in stored["deliveries"]] == [
        (hooks[0], "a"),
        (hooks[1], "b"),
    ]
    for delivery in stored["deliveries"]:
        assert (delivery["status"], delivery["attempts"]) == ("pending", 0)
        assert delivery["created_at"] == delivery["next_attempt_at"] == NOW


def test_defaults_of_an_alert_without_a_run(db: Database) -> None:
    p = _project(db)
    _integration(db, p, "a")
    stored = _record(db, p, title="plain")
    assert (stored["run_pk"], stored["kind"], stored["text"], stored["level"]) == (None, "alert", "", "INFO")
    assert (stored["fields"], stored["payload"], stored["markup"]) == ({}, None, False)
    assert stored["key"] == fingerprint(None, "plain")
    assert len(stored["id"]) == 32  # the default id (a uuid), not an empty alert_id
    assert _record(db, p, title="plain", alert_id="")["id"] != ""


def test_an_empty_payload_is_kept_empty_not_dropped(db: Database) -> None:
    p = _project(db)
    assert _record(db, p, payload={})["payload"] == {}


def test_an_automation_alert_names_its_automation(db: Database) -> None:
    from runalert.server.models import Automation

    p = _project(db)
    with db.session() as session:
        automation = Automation(project_id=p, name="nan", spec={})
        session.add(automation)
        session.flush()
        automation_id = automation.id
    assert _record(db, p, source="automation", automation_id=automation_id)["automation_id"] == automation_id


def test_the_time_defaults_to_now(db: Database) -> None:
    import time

    p = _project(db)
    _integration(db, p, "a")
    before = time.time()
    stored = _record(db, p, now=None)
    assert before <= stored["created_at"] <= time.time()
    assert stored["deliveries"][0]["next_attempt_at"] == stored["created_at"]


def test_given_integrations_replace_the_defaults_once_each(db: Database) -> None:
    p = _project(db)
    _integration(db, p, "default")
    extra = _integration(db, p, "extra", is_default=False)
    stored = _record(db, p, integrations=[extra, extra])
    assert [d["integration_id"] for d in stored["deliveries"]] == [extra]
    assert _record(db, p, integrations=[])["deliveries"] == []


def test_integrations_below_their_min_level_are_skipped_unless_told_not_to(db: Database) -> None:
    p = _project(db)
    info = _integration(db, p, "info")
    warn = _integration(db, p, "warn", min_level="WARN")
    errors = _integration(db, p, "errors", min_level="ERROR")

    def ids(stored: dict[str, Any]) -> list[int]:
        return [d["integration_id"] for d in stored["deliveries"]]

    assert ids(_record(db, p, title="i", level="info")) == [info]
    assert ids(_record(db, p, title="w", level="warn")) == [info, warn]  # at the level: sent
    assert ids(_record(db, p, title="e", level="error")) == [info, warn, errors]
    assert ids(_record(db, p, title="forced", level="info", respect_min_level=False)) == [info, warn, errors]


def test_a_repeat_within_wait_duration_is_stored_suppressed_without_deliveries(db: Database) -> None:
    p = _project(db)
    run = _run(db, p)
    _integration(db, p, "a")
    first = _record(db, p, title="slow", run_pk=run, wait_duration=60.0, now=NOW)
    assert (first["suppressed"], len(first["deliveries"])) == (False, 1)
    repeat = _record(db, p, title="slow", run_pk=run, wait_duration=60.0, now=NOW + 59.9)
    assert (repeat["suppressed"], repeat["deliveries"]) == (True, [])
    again = _record(db, p, title="slow", run_pk=run, wait_duration=60.0, now=NOW + 30)
    assert again["suppressed"] is True
    # Another title, another run, or no wait_duration: not a repeat.
    assert _record(db, p, title="other", run_pk=run, wait_duration=60.0, now=NOW + 1)["suppressed"] is False
    assert _record(db, p, title="slow", wait_duration=60.0, now=NOW + 1)["suppressed"] is False
    # At wait_duration after the last one sent it goes out, counting the repeats held back since.
    sent = _record(db, p, title="slow", run_pk=run, wait_duration=60.0, now=NOW + 60.0)
    assert (sent["suppressed"], sent["suppressed_before"], len(sent["deliveries"])) == (False, 2, 1)
    # The next one sent counts only the repeats held back since this one.
    held = _record(db, p, title="slow", run_pk=run, wait_duration=60.0, now=NOW + 61.0)
    assert held["suppressed"] is True
    later = _record(db, p, title="slow", run_pk=run, wait_duration=60.0, now=NOW + 200.0)
    assert (later["suppressed"], later["suppressed_before"]) == (False, 1)


def test_without_wait_duration_a_repeat_is_sent_and_counts_none(db: Database) -> None:
    p = _project(db)
    _integration(db, p, "a")
    _record(db, p, title="same", now=NOW)
    again = _record(db, p, title="same", now=NOW + 1)
    assert (again["suppressed"], again["suppressed_before"], len(again["deliveries"])) == (False, 0, 1)


def test_repeats_are_counted_per_project(db: Database) -> None:
    p, q = _project(db, "p"), _project(db, "q")
    _record(db, p, title="same", wait_duration=60.0, now=NOW)
    assert _record(db, p, title="same", wait_duration=60.0, now=NOW + 1)["suppressed"] is True
    # q has sent nothing of that title: its first is sent; then q's repeats are q's.
    assert _record(db, q, title="same", wait_duration=60.0, now=NOW + 2)["suppressed"] is False
    assert _record(db, q, title="same", wait_duration=60.0, now=NOW + 62.0)["suppressed_before"] == 0
    assert _record(db, p, title="same", wait_duration=60.0, now=NOW + 63.0)["suppressed_before"] == 1


def test_a_repeat_held_back_before_the_last_one_sent_is_not_counted_again(db: Database) -> None:
    p = _project(db)
    _record(db, p, title="t", wait_duration=10.0, now=NOW)
    _record(db, p, title="t", wait_duration=10.0, now=NOW + 5)  # held back
    assert _record(db, p, title="t", wait_duration=10.0, now=NOW + 10)["suppressed_before"] == 1
    # No repeat since: the next one counts none (not the one held back before the last one sent).
    assert _record(db, p, title="t", wait_duration=10.0, now=NOW + 30)["suppressed_before"] == 0


def test_grouped_integrations_send_the_first_of_a_group_and_hold_the_rest(db: Database) -> None:
    p = _project(db)
    spec = {"kind": "webhook", "url": "http://127.0.0.1:9/g", "group_interval": 300.0}
    grouped = _integration(db, p, "grouped", spec=spec)
    plain = _integration(db, p, "plain")
    first = _record(db, p, title="crash", now=NOW)
    assert [(d["integration_id"], d["status"]) for d in first["deliveries"]] == [
        (grouped, "pending"),
        (plain, "pending"),
    ]
    second = _record(db, p, title="crash", now=NOW + 10)
    by_integration = {d["integration_id"]: d for d in second["deliveries"]}
    assert by_integration[plain]["status"] == "pending"
    held = by_integration[grouped]
    assert held["status"] == "held"
    assert held["next_attempt_at"] == NOW + 300.0  # when the group's interval closes
    with db.read_session() as session:
        (rollup,) = session.scalars(select(Rollup))
        assert rollup.held == 1
        members = [m.delivery_seq for m in session.scalars(select(RollupMember))]
    assert members == [held["seq"]]
    # A test message is never held.
    test = _record(db, p, title="crash", kind="test", now=NOW + 20)
    assert [d["status"] for d in test["deliveries"]] == ["pending", "pending"]


def test_each_held_alert_of_a_group_joins_its_roll_up(db: Database) -> None:
    p = _project(db)
    _integration(db, p, "grouped", spec={"kind": "webhook", "url": "http://127.0.0.1:9/g", "group_interval": 60.0})
    for i in range(4):
        _record(db, p, title="crash", now=NOW + i)
    with db.read_session() as session:
        (rollup,) = session.scalars(select(Rollup))
        assert rollup.held == 3
        assert len(list(session.scalars(select(RollupMember)))) == 3


def test_stored_options_that_no_longer_pass_the_check_are_treated_as_off(db: Database) -> None:
    p = _project(db)
    bad = {"kind": "webhook", "url": "http://127.0.0.1:9/g", "group_interval": "soon"}
    _integration(db, p, "old", spec=bad)
    _record(db, p, title="crash", now=NOW)
    second = _record(db, p, title="crash", now=NOW + 1)
    assert [d["status"] for d in second["deliveries"]] == ["pending"]


def test_a_wait_duration_under_a_second_still_holds_repeats_back(db: Database) -> None:
    p = _project(db)
    _record(db, p, title="t", wait_duration=0.5, now=NOW)
    assert _record(db, p, title="t", wait_duration=0.5, now=NOW + 0.25)["suppressed"] is True
    assert _record(db, p, title="t", wait_duration=0.5, now=NOW + 0.5)["suppressed"] is False


def test_a_repeat_at_the_same_instant_is_counted_by_the_next_one_sent(db: Database) -> None:
    p = _project(db)
    _record(db, p, title="t", wait_duration=10.0, now=NOW)
    assert _record(db, p, title="t", wait_duration=10.0, now=NOW)["suppressed"] is True
    assert _record(db, p, title="t", wait_duration=10.0, now=NOW + 10)["suppressed_before"] == 1


def test_a_repeated_integration_does_not_stop_the_ones_after_it(db: Database) -> None:
    p = _project(db)
    a, b = _integration(db, p, "a"), _integration(db, p, "b")
    stored = _record(db, p, integrations=[a, a, b, a])
    assert [d["integration_id"] for d in stored["deliveries"]] == [a, b]


def test_without_grouping_no_roll_up_is_opened(db: Database) -> None:
    p = _project(db)
    _integration(db, p, "plain")
    _integration(db, p, "zero", spec={"kind": "webhook", "url": "http://127.0.0.1:9/z", "group_interval": 0})
    for i in range(3):
        stored = _record(db, p, title="crash", now=NOW + i)
        assert [d["status"] for d in stored["deliveries"]] == ["pending", "pending"]
    with db.read_session() as session:
        assert list(session.scalars(select(Rollup))) == []


def test_an_integration_above_the_alerts_level_does_not_stop_the_ones_after_it(db: Database) -> None:
    p = _project(db)
    _integration(db, p, "errors", min_level="ERROR")
    info = _integration(db, p, "info")
    assert [d["integration_id"] for d in _record(db, p, level="info")["deliveries"]] == [info]


def test_without_wait_duration_nothing_is_held_back_even_out_of_order(db: Database) -> None:
    p = _project(db)
    _record(db, p, title="t", now=NOW)
    earlier = _record(db, p, title="t", now=NOW - 5)  # recorded with an earlier time than the last one sent
    assert (earlier["suppressed"], len(earlier["deliveries"])) == (False, 0)  # no integration: none, but sent


def test_held_back_repeats_are_counted_for_their_own_project_and_title(db: Database) -> None:
    p, q = _project(db, "p"), _project(db, "q")
    _record(db, q, title="same", wait_duration=60.0, now=NOW)
    _record(db, p, title="same", wait_duration=60.0, now=NOW + 1)
    assert _record(db, p, title="same", wait_duration=60.0, now=NOW + 2)["suppressed"] is True  # p's repeat
    _record(db, q, title="other", wait_duration=60.0, now=NOW + 3)
    assert _record(db, q, title="other", wait_duration=60.0, now=NOW + 4)["suppressed"] is True  # another title
    # q's "same" again, after wait_duration: nothing of its own was held back.
    assert _record(db, q, title="same", wait_duration=60.0, now=NOW + 61)["suppressed_before"] == 0


def test_a_group_interval_under_a_second_still_groups(db: Database) -> None:
    p = _project(db)
    _integration(db, p, "grouped", spec={"kind": "webhook", "url": "http://127.0.0.1:9/g", "group_interval": 0.5})
    _record(db, p, title="crash", now=NOW)
    assert [d["status"] for d in _record(db, p, title="crash", now=NOW + 0.25)["deliveries"]] == ["held"]


def test_alerts_naming_their_runs_are_grouped_as_one(db: Database) -> None:
    p = _project(db)
    _integration(db, p, "grouped", spec={"kind": "webhook", "url": "http://127.0.0.1:9/g", "group_interval": 60.0})
    with db.session() as session:
        runs = [Run(project_id=p, run_id=f"id-{name}", name=name) for name in ("bert-7", "gpt-2")]
        session.add_all(runs)
        session.flush()
        pks = [run.id for run in runs]
    first = _record(db, p, title="Run bert-7 failed: no heartbeat", run_pk=pks[0], now=NOW)
    second = _record(db, p, title="Run gpt-2 failed: no heartbeat", run_pk=pks[1], now=NOW + 1)
    assert [d["status"] for d in first["deliveries"]] == ["pending"]
    assert [d["status"] for d in second["deliveries"]] == ["held"]  # one group: the title without the run's name
