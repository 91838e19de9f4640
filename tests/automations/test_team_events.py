"""``OnGroupFinished`` and ``OnSchedule``: their JSON (runalert's and W&B's exported form) reads back the same,
bad values are refused naming the field, and the in-process engine stores them without firing them."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from runalert import Alerter
from runalert.automations import (
    LocalEngine,
    OnGroupFinished,
    OnSchedule,
    Project,
    RunEvent,
    SendNotification,
    SendWebhook,
)
from runalert.automations.automation import Automation, NewAutomation
from runalert.automations.wandb_json import from_wandb, to_wandb
from runalert.channels import Webhook

GROUP = OnGroupFinished(
    scope=Project("p"), filter=RunEvent.group.matches_regex("^sweep-"), settle=30, metric="val_loss", mode="max"
)
DIGEST = OnSchedule(scope=Project("p"), cron="0  9 * * 1-5", timezone="Europe/Berlin", metric="loss")


@pytest.mark.parametrize("event", [GROUP, DIGEST], ids=["group", "schedule"])
def test_the_json_reads_back_the_same(event: OnGroupFinished | OnSchedule) -> None:
    new = event >> SendNotification(integration="hook", title="done")
    again = NewAutomation.model_validate_json(new.model_dump_json())
    assert again == new and type(again.event) is type(event)
    automation = Automation(name="a", event=event, action=new.action)
    exported = to_wandb(automation)
    assert exported["event"]["eventType"] == event.event_type.value
    assert json.loads(exported["event"]["filter"]) == event.model_dump(mode="json")["filter"]
    assert Automation.model_validate(from_wandb(exported)).event == event


def test_fields_as_written() -> None:
    dumped = GROUP.model_dump(mode="json")
    assert dumped["event_type"] == "GROUP_FINISHED" and dumped["scope"]["name"] == "p"
    assert dumped["filter"] == {"$and": [{"group": {"$regex": "^sweep-"}}]}
    assert (dumped["settle"], dumped["metric"], dumped["mode"]) == (30.0, "val_loss", "max")
    assert DIGEST.cron == "0 9 * * 1-5" and DIGEST.mode == "min" and OnSchedule(cron="* * * * *").timezone == "UTC"
    assert GROUP.matches({"group": "sweep-3"}) and not GROUP.matches({"group": "other"})
    assert not GROUP.matches({"group": None})


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: OnGroupFinished(settle=-1), "settle must be seconds >= 0"),
        (lambda: OnGroupFinished(settle=float("nan")), "settle must be seconds >= 0"),
        (lambda: OnGroupFinished(mode="best"), 'mode must be "min"'),
        (lambda: OnSchedule(cron="0 9 * *"), "cron must be a cron expression of 5 fields"),
        (lambda: OnSchedule(cron="0 25 * * *"), "cron must be a cron expression of 5 fields"),
        (lambda: OnSchedule(cron="0 9 * * *", timezone="Mars/Olympus"), "timezone must be an IANA time zone"),
        (lambda: OnSchedule(cron="0 9 * * *", event_type="GROUP_FINISHED"), "event_type"),
    ],
)
def test_bad_values_name_the_field(make: object, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        make()  # type: ignore[operator]


def test_a_webhook_payload_may_use_the_group_and_digest_variables() -> None:
    engine = LocalEngine(Alerter([]), integrations={"ci": Webhook("http://127.0.0.1:9/hook")})
    payload = {"group": "${group}", "best": "${best_run}", "n": "${group_runs}", "digest": "${digest}"}
    engine.create(GROUP >> SendWebhook(integration="ci", payload=payload), name="g")
    with pytest.raises(ValueError, match=r"\$\{nope\}"):
        engine.create(GROUP >> SendWebhook(integration="ci", payload={"x": "${nope}"}), name="bad")


def test_the_in_process_engine_stores_them_and_never_fires_them() -> None:
    engine = LocalEngine(Alerter([]))
    engine.create(GROUP >> SendNotification(title="sweep done"), name="sweep-done")
    engine.create(DIGEST >> SendNotification(title="digest"), name="digest")
    assert sorted(a.name for a in engine.automations()) == ["digest", "sweep-done"]
    engine.start_run("r1", name="r1")
    assert engine.log("r1", {"val_loss": 0.1}, step=1) == []
    assert engine.set_state("r1", "FINISHED") == []
