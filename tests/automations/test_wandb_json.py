"""W&B's JSON as the wire and storage form: filters, events and actions dump as W&B's, W&B's exported automations
(written by hand from W&B's documented shapes, ``wandb_json/wandb_export.json``) import, and runalert's earlier
form is still read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runalert.automations import (
    And,
    ArtifactCollectionScope,
    ArtifactEvent,
    Automation,
    DoNothing,
    EventType,
    FieldFilter,
    MetricChangeFilter,
    MetricThresholdFilter,
    MetricZScoreFilter,
    Not,
    OnAddArtifactAlias,
    OnAddCollectionTag,
    OnLinkArtifact,
    OnRemoveArtifactTag,
    OnRemoveCollectionTag,
    OnRunMetric,
    OnRunState,
    OnUnlinkArtifact,
    Or,
    Project,
    RegistryScope,
    RunEvent,
    RunStateFilter,
    ScopeType,
    SendNotification,
    SendWebhook,
    StateFilter,
)
from runalert.automations.run_filters import parse_run_filter
from runalert.automations.wandb_json import from_wandb, is_wandb_form, to_wandb

EXPORT = json.loads((Path(__file__).parent / "wandb_json" / "wandb_export.json").read_text())
loss = RunEvent.metric("loss")


# -- the JSON form of each part ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (RunEvent.name.contains("bert"), {"display_name": {"$contains": "bert"}}),
        (RunEvent.name == "a", {"display_name": {"$eq": "a"}}),
        (RunEvent.name != "a", {"display_name": {"$ne": "a"}}),
        (RunEvent.name > "a", {"display_name": {"$gt": "a"}}),
        (RunEvent.name >= "a", {"display_name": {"$gte": "a"}}),
        (RunEvent.name.lt("a"), {"display_name": {"$lt": "a"}}),
        (RunEvent.name <= "a", {"display_name": {"$lte": "a"}}),
        (RunEvent.tags.in_(["x", "y"]), {"tags": {"$in": ["x", "y"]}}),
        (RunEvent.user.exists(), {"username": {"$exists": True}}),
        (ArtifactEvent.alias.matches_regex("^prod"), {"alias": {"$regex": "^prod"}}),
        (~RunEvent.name.contains("tmp"), {"$not": {"display_name": {"$contains": "tmp"}}}),
        (
            RunEvent.name.contains("a") | (RunEvent.user == "ana"),
            {"$or": [{"display_name": {"$contains": "a"}}, {"username": {"$eq": "ana"}}]},
        ),
    ],
)
def test_run_and_artifact_filters_dump_as_wandbs_mongodb_form(expr: Any, expected: dict[str, Any]) -> None:
    assert expr.model_dump() == expected
    assert type(expr).model_validate(expected) == expr


def test_string_comparisons_on_run_fields_match_by_code_point() -> None:
    attrs = {"display_name": "bert-b", "tags": ["alpha", "zeta"]}
    assert (RunEvent.name > "bert-a").matches(attrs) and not (RunEvent.name > "bert-b").matches(attrs)
    assert (RunEvent.name >= "bert-b").matches(attrs) and (RunEvent.name <= "bert-b").matches(attrs)
    assert not (RunEvent.name < "bert-b").matches(attrs)
    assert (RunEvent.tags > "y").matches(attrs)  # any tag: "zeta"
    assert not (RunEvent.tags < "alpha").matches(attrs)
    assert (RunEvent.user.exists(False)).matches(attrs) and not RunEvent.name.exists(False).matches(attrs)


def test_metric_filters_dump_with_wandbs_field_names_and_keep_integer_thresholds() -> None:
    big = 2**53 + 1  # not a float
    assert (loss.avg(5) > big).model_dump() == {
        "name": "loss",
        "agg_op": "AVERAGE",
        "window_size": 5,
        "cmp_op": "$gt",
        "threshold": big,
    }
    assert json.loads((loss.avg(5) > big).model_dump_json())["threshold"] == big
    assert loss.max(3).decreases_by(diff=2).model_dump() == {
        "name": "loss",
        "agg_op": "MAX",
        "current_window_size": 3,
        "prior_window_size": 3,
        "change_type": "ABSOLUTE",
        "change_dir": "DECREASE",
        "change_amount": 2,
    }
    assert (abs(loss.zscore(10)) > 2.5).model_dump() == {
        "name": "loss",
        "window_size": 10,
        "threshold": 2.5,
        "change_dir": "ANY",
    }


def test_reprs_are_wandbs() -> None:
    assert repr(loss.avg(5) > 2.5) == repr("AVERAGE(loss) > 2.5")
    assert repr(loss <= 3) == repr("loss <= 3")
    assert repr(loss.min(2).increases_by(frac=0.1)) == repr("MIN(loss) increases 10.00%")
    assert repr(loss.changes_by(diff=2)) == repr("loss changes 2")
    assert repr(abs(loss.zscore(5)) > 3) == repr("abs(zscore('loss')) > 3")
    assert repr(loss.zscore(5) < -2.0) == repr("zscore('loss') < -2.0")
    assert repr(EventType.LINK_ARTIFACT) == "LINK_ARTIFACT"


def test_events_carry_wandbs_enums_and_wrapped_filters() -> None:
    event = OnRunMetric(scope=Project("p"), filter=loss.avg(5) > 2)
    assert event.event_type is EventType.RUN_METRIC_THRESHOLD
    assert event.filter.metric.threshold_filter is event.filter.metric
    assert event.model_dump(mode="json")["filter"] == {
        "run_filter": {"$and": []},
        "run_metric_filter": {
            "threshold_filter": {"name": "loss", "agg_op": "AVERAGE", "window_size": 5, "cmp_op": "$gt", "threshold": 2}
        },
    }
    state = OnRunState(filter=RunEvent.name.contains("x") & (RunEvent.state == "failed"))
    assert state.model_dump(mode="json")["filter"] == {
        "run_filter": {"$and": [{"display_name": {"$contains": "x"}}]},
        "run_state_filter": {"states": ["FAILED"]},
    }
    link = OnLinkArtifact(scope=ArtifactCollectionScope("models"), filter=ArtifactEvent.alias == "prod")
    dumped = link.model_dump(mode="json")
    assert dumped["event_type"] == "LINK_MODEL" and link.event_type is EventType.LINK_ARTIFACT
    assert dumped["filter"] == {"$or": [{"$and": [{"alias": {"$eq": "prod"}}]}]}
    assert dumped["scope"] == {"scope_type": "ARTIFACT_COLLECTION", "name": "models", "project": None}


@pytest.mark.parametrize(
    ("cls", "value"),
    [
        (OnRemoveArtifactTag, "REMOVE_ARTIFACT_TAG"),
        (OnAddCollectionTag, "ADD_COLLECTION_TAG"),
        (OnRemoveCollectionTag, "REMOVE_COLLECTION_TAG"),
        (OnUnlinkArtifact, "UNLINK_ARTIFACT"),
    ],
)
def test_the_new_artifact_events_round_trip(cls: Any, value: str) -> None:
    event = cls(scope=Project("p"), filter=ArtifactEvent.tag.eq("golden"))
    automation = Automation(name="a", event=event, action=DoNothing())
    again = Automation.model_validate(json.loads(automation.model_dump_json()))
    assert again == automation and type(again.event) is cls
    assert automation.spec()["event"]["event_type"] == value


def test_actions_use_wandbs_names() -> None:
    note = SendNotification(integration_id="team", text="body", level="warn")
    assert note.model_dump(mode="json") == {
        "action_type": "NOTIFICATION",
        "integrationID": "team",
        "title": "",
        "message": "body",
        "severity": "WARN",
    }
    hook = SendWebhook(integration_id="hook", request_payload={"run": "${run_id}"})
    assert hook.model_dump(mode="json") == {
        "action_type": "GENERIC_WEBHOOK",
        "integrationID": "hook",
        "requestPayload": '{"run":"${run_id}"}',
    }
    assert SendWebhook.model_validate(hook.model_dump(mode="json")) == hook
    assert (hook.integration, hook.payload) == ("hook", {"run": "${run_id}"})  # the earlier names still work
    assert DoNothing().model_dump(mode="json") == {"action_type": "NO_OP", "noOp": True}


def test_registry_scope_is_a_project_flagged_as_a_registry() -> None:
    event = OnAddArtifactAlias(scope=RegistryScope("wandb-registry-model"))
    assert event.scope.scope_type is ScopeType.PROJECT and event.scope.is_registry is True
    assert event.project == "wandb-registry-model"
    dumped = event.model_dump(mode="json")["scope"]
    assert dumped == {"scope_type": "PROJECT", "name": "wandb-registry-model", "entity": None, "is_registry": True}
    assert type(OnAddArtifactAlias.model_validate(event.model_dump(mode="json")).scope) is RegistryScope
    assert Project("p").is_registry is False and "is_registry" not in Project("p").model_dump()


def test_wandbs_lenient_inputs_are_accepted() -> None:
    # W&B ignores the window without an aggregate: so does runalert (a change filter stores 1)
    assert MetricThresholdFilter(name="m", window=5, cmp=">", threshold=1).window == 5
    change = MetricChangeFilter(name="m", window=4, prior_window=6, change_type="ABS", threshold=1)
    assert (change.window, change.prior_window) == (1, 1)
    assert StateFilter(states=[]).model_dump() == {"states": []}
    assert StateFilter(states=["running", "crashed", "finished"]).model_dump() == {
        "states": ["FAILED", "FINISHED", "RUNNING"]
    }
    # ... but an automation that could never fire is refused
    with pytest.raises(pydantic.ValidationError, match="could never fire"):
        OnRunState(filter=StateFilter(states=[]))


def test_runaleris_earlier_json_form_still_reads() -> None:
    old = {
        "name": "loss-diverging",
        "event": {
            "event_type": "RUN_METRIC",
            "scope": {"scope_type": "PROJECT", "name": "p"},
            "filter": {
                "kind": "run_metric",
                "run": {
                    "kind": "and",
                    "filters": [
                        {"kind": "field", "field": "display_name", "op": "$contains", "value": "bert"},
                        {"kind": "not", "filter": {"kind": "field", "field": "tags", "op": "$in", "value": ["x"]}},
                    ],
                },
                "metric": {
                    "kind": "threshold",
                    "name": "loss",
                    "agg": "AVERAGE",
                    "window": 5,
                    "cmp": "$gt",
                    "threshold": 2.0,
                },
            },
        },
        "action": {"action_type": "GENERIC_WEBHOOK", "integration": "hook", "payload": {"run": "${run_id}"}},
    }
    automation = Automation.model_validate(old)
    new = OnRunMetric(
        scope=Project("p"),
        filter=(loss.avg(5) > 2.0) & (RunEvent.name.contains("bert") & ~RunEvent.tags.in_(["x"])),
    )
    assert automation.event == new
    assert automation.action == SendWebhook(integration_id="hook", request_payload={"run": "${run_id}"})
    old_link = {"event_type": "LINK_ARTIFACT", "filter": {"kind": "and", "filters": []}}
    assert Automation.model_validate({"name": "l", "event": old_link, "action": {"action_type": "NO_OP"}}).event == (
        OnLinkArtifact()
    )


def test_unknown_fields_and_operators_are_named() -> None:
    with pytest.raises(pydantic.ValidationError, match="filter field must be one of display_name"):
        OnRunState.model_validate(
            {"filter": {"run_filter": {"config.lr": {"$eq": "1"}}, "run_state_filter": {"states": ["FAILED"]}}}
        )
    with pytest.raises(pydantic.ValidationError, match=r"op must be one of \$eq"):
        OnAddArtifactAlias.model_validate({"filter": {"alias": {"$size": 2}}})


# -- W&B's exported automations -----------------------------------------------------------------------------------
def test_wandbs_exported_automations_import() -> None:
    specs = [from_wandb(item) for item in EXPORT]
    assert all(is_wandb_form(item) and not is_wandb_form(spec) for item, spec in zip(EXPORT, specs, strict=True))
    threshold, change, zscore, state, link, registry = (Automation.model_validate(s) for s in specs)
    assert threshold.event == OnRunMetric(
        scope=Project("my-project"), filter=(loss.avg(5) > 2) & RunEvent.name.contains("bert")
    )
    assert threshold.action == SendNotification(
        integration_id="training-alerts", title="Loss diverging", message="check ${run_name}", severity="ERROR"
    )
    assert (threshold.description, threshold.enabled) == ("avg loss over 5 steps above 2", True)
    assert change.event.filter.metric == RunEvent.metric("val/acc").min(3).decreases_by(frac=0.1).model_copy(
        update={"prior_window": 10}
    )
    assert change.enabled is False
    assert change.action == SendWebhook(
        integration_id="ci-hook",
        request_payload={"run": "${run_id}", "metric": "${metric_name}", "value": "${metric_value}"},
    )
    assert zscore.event.filter.metric == MetricZScoreFilter(name="loss", window=30, threshold=3.0)
    assert zscore.event.filter.run.matches({"display_name": "bert-7", "tags": []})
    assert not zscore.event.filter.run.matches({"display_name": "gpt", "tags": ["dev"]})
    assert isinstance(zscore.action, DoNothing)
    assert state.event == OnRunState(
        scope=Project("my-project"), filter=RunEvent.name.contains("my-run") & (RunEvent.state == "failed")
    )
    assert state.action == SendNotification(integration_id="training-alerts", title="Run failed")
    assert link.event == OnLinkArtifact(
        scope=ArtifactCollectionScope("text-classifier"), filter=ArtifactEvent.alias.matches_regex("^prod-.*")
    )
    assert registry.event.scope == RegistryScope("wandb-registry-model")


def test_integration_ids_map_to_names() -> None:
    spec = from_wandb(EXPORT[0], integrations={"SW50ZWdyYXRpb246OTk=": "team-slack"})
    assert spec["action"]["integrationID"] == "team-slack"


@pytest.mark.parametrize("index", range(len(EXPORT)))
def test_export_then_import_gives_the_same_automation(index: int) -> None:
    automation = Automation.model_validate(from_wandb(EXPORT[index]))
    exported = to_wandb(automation)
    assert exported["__typename"] == "Trigger" and isinstance(exported["event"]["filter"], str)
    assert from_wandb(json.loads(json.dumps(exported))) == automation.spec()


def test_what_wandb_has_and_runalert_not_is_refused_naming_it() -> None:
    entity = {
        **EXPORT[0],
        "scope": {"__typename": "Entity", "id": "RW50aXR5OjE=", "name": "team", "entityType": "team"},
    }
    with pytest.raises(ValueError, match="entity"):
        from_wandb(entity)
    launch = {**EXPORT[0], "action": {"__typename": "QueueJobTriggeredAction", "queue": None, "template": "{}"}}
    with pytest.raises(ValueError, match="Launch jobs are not supported"):
        from_wandb(launch)
    unscoped = Automation(name="x", event=OnRunMetric(filter=loss > 1), action=DoNothing())
    with pytest.raises(ValueError, match="W&B needs one"):
        to_wandb(unscoped)
    assert to_wandb(unscoped, project="p")["scope"] == {"__typename": "Project", "id": "p", "name": "p"}


def test_the_snake_case_form_of_wandbs_own_models_imports_too() -> None:
    """What ``wandb.automations.NewAutomation(...).model_dump()`` gives: the event's filter as JSON text, the scope
    with W&B's ``__typename`` and ID, the action with ``integrationID``."""
    dumped = {
        "name": "loss-high",
        "enabled": True,
        "event": {
            "event_type": "RUN_METRIC",
            "scope": {
                "__typename": "Project",
                "id": "UHJvamVjdDox",
                "name": "p",
                "scopeType": "PROJECT",
                "isRegistry": False,
            },
            "filter": json.dumps(
                {
                    "run_filter": json.dumps({"$and": [{"display_name": {"$contains": "my-run"}}]}),
                    "run_metric_filter": {
                        "threshold_filter": {
                            "name": "loss",
                            "agg_op": None,
                            "window_size": 1,
                            "cmp_op": "$gt",
                            "threshold": 5,
                        }
                    },
                    "metric_filter": None,
                }
            ),
        },
        "action": {
            "action_type": "NOTIFICATION",
            "integrationID": "team",
            "title": "t",
            "message": "",
            "severity": "WARN",
        },
    }
    assert is_wandb_form(dumped)
    automation = Automation.model_validate(from_wandb(dumped))
    assert automation.event == OnRunMetric(scope=Project("p"), filter=(loss > 5) & RunEvent.name.contains("my-run"))
    assert automation.action == SendNotification(integration_id="team", title="t", severity="WARN")
    entity = {**dumped["event"], "scope": {"scope_type": "ENTITY", "name": "team"}}
    with pytest.raises(pydantic.ValidationError, match="which has no entities: scope the automation to a project"):
        OnRunMetric.model_validate(entity)


# -- random filters: W&B's JSON, its JSON text and runalert's earlier form all give the same filter -----------------
_fields = st.sampled_from(["display_name", "username", "tags"])
_texts = st.text(alphabet="abcxyz-_ ", max_size=6)


def _leaf(draw: Any) -> Any:
    field = draw(_fields)
    op = draw(st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$contains", "$regex", "$in", "$nin"]))
    value = draw(st.lists(_texts, max_size=3)) if op in ("$in", "$nin") else draw(_texts)
    return FieldFilter(field=field, op=op, value=value)


@st.composite
def run_filters(draw: Any, depth: int = 2) -> Any:
    if depth == 0 or draw(st.booleans()):
        return _leaf(draw)
    kind = draw(st.sampled_from(["and", "or", "not"]))
    if kind == "not":
        return Not(filter=draw(run_filters(depth - 1)))
    members = draw(st.lists(run_filters(depth - 1), max_size=3))
    return (And if kind == "and" else Or)(filters=members)


def _legacy(node: Any) -> dict[str, Any]:
    """``node`` in runalert's earlier JSON form (what revision 0004 stored)."""
    if isinstance(node, FieldFilter):
        return {"kind": "field", "field": node.field, "op": node.op, "value": node.value}
    if isinstance(node, Not):
        return {"kind": "not", "filter": _legacy(node.filter)}
    return {"kind": "and" if isinstance(node, And) else "or", "filters": [_legacy(f) for f in node.filters]}


_ATTRS = st.fixed_dictionaries(
    {"display_name": _texts, "username": st.none() | _texts, "tags": st.lists(_texts, max_size=3)}
)


@given(node=run_filters(), attrs=_ATTRS)
@settings(max_examples=200, deadline=None)
def test_any_run_filter_reads_back_from_each_form_and_matches_the_same(node: Any, attrs: dict[str, Any]) -> None:
    dumped = node.model_dump(mode="json")
    for form in (dumped, json.dumps(dumped), _legacy(node)):
        again = parse_run_filter(form)
        assert again == node
    wrapped = OnRunState(filter=RunStateFilter(run=node, state=StateFilter(states=["FAILED"])))
    assert wrapped.filter.run.matches(attrs) == node.matches(attrs)  # W&B's $and wrapping changes nothing
    assert OnRunState.model_validate(json.loads(wrapped.model_dump_json())) == wrapped


_windows = st.integers(min_value=1, max_value=50)
_amounts = st.integers(min_value=1, max_value=2**70) | st.floats(min_value=1e-6, max_value=1e12)
_aggs = st.sampled_from([None, "AVERAGE", "MIN", "MAX"])


@st.composite
def metric_filters(draw: Any) -> Any:
    kind = draw(st.sampled_from(["threshold", "change", "zscore"]))
    if kind == "threshold":
        cmp = draw(st.sampled_from(["$gt", "$gte", "$lt", "$lte", "$eq", "$ne"]))
        threshold = draw(st.integers() | st.floats(allow_nan=False, allow_infinity=False))
        return MetricThresholdFilter(name="m", agg=draw(_aggs), window=draw(_windows), cmp=cmp, threshold=threshold)
    if kind == "change":
        return MetricChangeFilter(
            name="m",
            agg=draw(_aggs),
            window=draw(_windows),
            prior_window=draw(_windows),
            change_type=draw(st.sampled_from(["ABSOLUTE", "RELATIVE"])),
            change_dir=draw(st.sampled_from(["INCREASE", "DECREASE", "ANY"])),
            threshold=draw(_amounts),
        )
    return MetricZScoreFilter(
        name="m", window=draw(_windows), threshold=draw(_amounts), change_dir=draw(st.sampled_from(["ANY", "DECREASE"]))
    )


@given(metric=metric_filters())
@settings(max_examples=200, deadline=None)
def test_any_metric_filter_reads_back_from_each_form(metric: Any) -> None:
    legacy = {"kind": metric.kind, **metric.model_dump(by_alias=False)}  # runalert's earlier field names
    for form in (metric.model_dump(mode="json"), legacy):
        again = type(metric).model_validate(form)
        assert again == metric and type(again.threshold) is type(metric.threshold)  # an int stays an int
    event = OnRunMetric(filter=metric)
    assert OnRunMetric.model_validate_json(event.model_dump_json()) == event
    assert OnRunMetric.model_validate({"filter": json.dumps(event.model_dump(mode="json")["filter"])}) == event
