"""The builder API, JSON round trips of every object, and the error message of every invalid construction."""

from __future__ import annotations

import json
from datetime import timedelta

import pydantic
import pytest

from runalert.alert import AlertLevel
from runalert.automations import (
    Agg,
    ArtifactCollectionScope,
    ArtifactEvent,
    Automation,
    ChangeDir,
    ChangeType,
    DoNothing,
    EmailIntegration,
    MetricChangeFilter,
    MetricNonFiniteFilter,
    MetricThresholdFilter,
    MetricZScoreFilter,
    NewAutomation,
    OnAddArtifactAlias,
    OnAddArtifactTag,
    OnCreateArtifact,
    OnLinkArtifact,
    OnRunMetric,
    OnRunState,
    Project,
    RunEvent,
    RunMetricFilter,
    RunState,
    RunStateFilter,
    SendNotification,
    SendWebhook,
    SlackIntegration,
    StateFilter,
    WebhookIntegration,
)

loss = RunEvent.metric("loss")


# -- builders ----------------------------------------------------------------------------------------------------
def test_threshold_builders_match_wandb_fields() -> None:
    f = loss.avg(5) > 2.0
    assert isinstance(f, MetricThresholdFilter)
    assert (f.name, f.agg, f.window, f.cmp, f.threshold) == ("loss", Agg.AVERAGE, 5, "$gt", 2.0)
    assert (loss >= 1).cmp == "$gte" and (loss < 1).cmp == "$lt" and (loss <= 1).cmp == "$lte"
    assert loss.gt(1) == (loss > 1) and loss.lte(1) == (loss <= 1) and loss.gte(1) == (loss >= 1)
    assert loss.lt(1) == (loss < 1)
    assert (loss > 1).window == 1 and (loss > 1).agg is None
    assert loss.mean(3) == loss.avg(3)
    assert (loss.min(4) > 0).agg is Agg.MIN and (loss.max(4) > 0).agg is Agg.MAX
    assert MetricThresholdFilter(name="loss", cmp=">", threshold=1) == (loss > 1)


def test_change_builders() -> None:
    f = loss.avg(3).decreases_by(frac=0.1)
    assert isinstance(f, MetricChangeFilter)
    assert (f.window, f.prior_window, f.change_type, f.change_dir, f.threshold) == (
        3,
        3,
        ChangeType.RELATIVE,
        ChangeDir.DECREASE,
        0.1,
    )
    assert loss.increases_by(diff=2).change_dir is ChangeDir.INCREASE
    assert loss.changes_by(diff=2).change_type is ChangeType.ABSOLUTE
    assert loss.changes_by(diff=2).change_dir is ChangeDir.ANY
    # prior window defaults to the current window, and W&B's aliases are accepted
    g = MetricChangeFilter(name="x", agg="avg", current_window_size=4, change_type="rel", change_amount=0.5)
    assert (g.window, g.prior_window, g.agg, g.change_type, g.change_dir) == (
        4,
        4,
        Agg.AVERAGE,
        ChangeType.RELATIVE,
        ChangeDir.ANY,
    )


def test_zscore_builders_and_defaults() -> None:
    assert MetricZScoreFilter(name="x").window == 30
    assert MetricZScoreFilter(name="x").threshold == 3.0
    assert (loss.zscore(30) > 3).change_dir is ChangeDir.INCREASE
    f = loss.zscore(30) < -3
    assert (f.change_dir, f.threshold) == (ChangeDir.DECREASE, 3)
    assert (abs(loss.zscore(10)) > 2).change_dir is ChangeDir.ANY
    assert (loss.zscore(10).abs() >= 2).window == 10


def test_state_builders() -> None:
    assert (RunEvent.state == "finished").states == [RunState.FINISHED]
    f = RunEvent.state.in_(["Failed", "crashed", "RUNNING"])
    assert f.states == [RunState.FAILED, RunState.RUNNING]  # as W&B: deduplicated, in alphabetical order
    assert RunEvent.state.eq("CRASHED").states == [RunState.FAILED]


def test_run_filters_combine_and_match() -> None:
    f = RunEvent.name.contains("bert") & (RunEvent.user == "ana")
    attrs = {"display_name": "bert-large", "username": "ana", "tags": ["nlp", "big"]}
    assert f.matches(attrs)
    assert not f.matches({**attrs, "username": "bob"})
    assert (RunEvent.name.matches_regex(r"^gpt-\d+$") | RunEvent.tags.contains("nlp")).matches(attrs)
    assert not (~RunEvent.tags.contains("nlp")).matches(attrs)
    assert ~~RunEvent.tags.contains("nlp") == RunEvent.tags.contains("nlp")
    assert RunEvent.tags.in_(["big", "x"]).matches(attrs)
    assert RunEvent.name.in_(["a", "bert-large"]).matches(attrs)
    assert RunEvent.name.eq("bert-large").matches(attrs)
    assert (RunEvent.name != "x").matches(attrs)
    assert not RunEvent.user.eq("ana").matches({"display_name": "r"})
    combined = (loss > 1) & RunEvent.name.contains("bert")
    assert isinstance(combined, RunMetricFilter)
    assert RunEvent.name.contains("bert") & (loss > 1) == combined
    assert isinstance((RunEvent.state == "failed") & RunEvent.user.eq("ana"), RunStateFilter)


def test_event_type_is_inferred_from_the_filter() -> None:
    assert OnRunMetric(filter=loss > 1).event_type == "RUN_METRIC"
    assert OnRunMetric(filter=loss.changes_by(diff=1)).event_type == "RUN_METRIC_CHANGE"
    assert OnRunMetric(filter=loss.zscore(5) > 2).event_type == "RUN_METRIC_ZSCORE"
    assert OnRunState(filter=RunEvent.state == "finished").event_type == "RUN_STATE"


def test_equality_builders_build_filters() -> None:
    f = loss == 1
    assert isinstance(f, MetricThresholdFilter)
    assert (f.name, f.agg, f.window, f.cmp, f.threshold) == ("loss", None, 1, "$eq", 1)
    g = loss.avg(3) != 0
    assert (g.agg, g.window, g.cmp, g.threshold) == (Agg.AVERAGE, 3, "$ne", 0)
    assert loss.eq(1) == (loss == 1) and loss.max(2).ne(5) == (loss.max(2) != 5)
    assert (1 == loss) == (loss == 1)  # noqa: SIM300 - reflected: the operand builds the filter
    assert (loss == 1).describe() == "loss == 1" and g.describe() == "avg(loss, 3) != 0"
    # W&B's JSON form and the symbols are accepted
    assert MetricThresholdFilter(name="loss", cmp_op="$ne", threshold=0) == (loss != 0)
    assert MetricThresholdFilter(name="loss", cmp="==", threshold=1) == (loss == 1)
    assert MetricThresholdFilter.model_validate({"name": "loss", "cmp": "ne", "threshold": 2}).cmp == "$ne"
    assert OnRunMetric(filter=loss == 1).event_type == "RUN_METRIC"


def test_operands_keep_structural_equality_and_hashing() -> None:
    # between two operands == and != are still comparisons of the models (and give bools)
    assert (loss.mean(3) == loss.avg(3)) is True
    assert (loss.avg(3) == loss.avg(4)) is False
    assert (loss.avg(3) != loss.avg(4)) is True and (loss != RunEvent.metric("loss")) is False
    assert (loss.zscore(5) == loss.zscore(5)) is True and (loss.zscore(5) != abs(loss.zscore(5))) is True
    assert len({loss, RunEvent.metric("loss"), loss.avg(3), loss.mean(3), loss.avg(4), loss.zscore(5)}) == 4
    # filters and automations compare structurally (idempotent upserts compare them)
    assert (loss == 1) == (loss == 1) and (loss == 1) != (loss == 2) and (loss == 1) != (loss != 1)
    assert len({loss == 1, loss.eq(1), loss != 1, loss.is_nonfinite(), loss.is_nonfinite()}) == 3


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: bool(loss > 1), r"is a rule, not a truth value"),
        (lambda: 0 < loss < 1, r"chained comparison such as 0 < m < 1"),
        (lambda: 0 < loss.avg(3) <= 1, r"two rules"),
        (lambda: (loss == 1) or (loss == 2), r"not a truth value"),
        (lambda: (loss > 1) and RunEvent.name.contains("bert"), r"add a run filter with & \(not 'and'\)"),
        (lambda: not loss.is_nonfinite(), r"not a truth value"),
        (lambda: bool((loss > 1) & RunEvent.name.contains("bert")), r"not a truth value"),
        (lambda: bool(loss.zscore(5) > 2), r"not a truth value"),
        (lambda: loss == "high", r"a metric compares with a number \(int or float\), not str"),
        (lambda: loss.avg(3) != None, r"RunEvent.metric\('loss'\).avg\(3\) != \.\.\.: .* not NoneType"),  # noqa: E711
        (lambda: loss == True, r"not bool"),  # noqa: E712
        (lambda: loss.zscore(5) == 3, r"zscore\(5\) == \.\.\. is not a rule: write zscore\(n\) > t"),
        (lambda: loss.zscore(5) != 3, r"is not a rule"),
    ],
)
def test_comparisons_python_would_turn_into_a_bool_raise_a_clear_type_error(build: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        build()  # type: ignore[operator]


def test_nonfinite_builder_and_event() -> None:
    f = loss.is_nonfinite()
    assert isinstance(f, MetricNonFiniteFilter)
    assert (f.name, f.kind, f.describe()) == ("loss", "nonfinite", "loss is non-finite (NaN or inf)")
    event = OnRunMetric(scope=Project("p"), filter=f)
    assert event.event_type == "RUN_METRIC_NONFINITE" and event.metric_name == "loss"
    assert OnRunMetric.model_validate(json.loads(event.model_dump_json())) == event
    with pytest.raises(ValueError, match="does not match"):
        OnRunMetric(event_type="RUN_METRIC", filter=f)
    with pytest.raises(ValueError, match=r"threshold must be a finite number, not nan; .*is_nonfinite\(\)"):
        loss.eq(float("nan"))


def test_wandb_docs_event_example() -> None:
    event = OnRunMetric(scope=Project("my-project"), filter=RunEvent.metric("my-metric").avg(5).gt(123.45))
    assert event.scope.name == "my-project"
    assert event.filter.metric.threshold == 123.45


def test_actions() -> None:
    n = SendNotification.from_integration(SlackIntegration(name="team"), title="Hi", text="body", level="warning")
    assert (n.integration, n.title, n.message, n.severity) == ("team", "Hi", "body", AlertLevel.WARN)
    assert SendNotification(integration_id="t", text="x", level="error").severity is AlertLevel.ERROR
    w = SendWebhook.from_integration(WebhookIntegration(name="hook"), payload='{"a": "${run_name}"}')
    assert w.payload == {"a": "${run_name}"}
    assert SendWebhook(integration="hook", request_payload={"b": 1}).payload == {"b": 1}
    assert DoNothing().no_op


# -- JSON round trips ---------------------------------------------------------------------------------------------
ACTIONS = [
    SendNotification.from_integration("team", title="Loss", text="is high", level="ERROR"),
    SendWebhook.from_integration("hook", payload={"text": "${run_name} ${metric_value}", "n": [1, {"k": None}]}),
    DoNothing(),
]
EVENTS = [
    OnRunMetric(scope=Project("p"), filter=loss.avg(5) > 2.0),
    OnRunMetric(filter=(loss.max(3) <= -1.5) & RunEvent.name.contains("bert")),
    OnRunMetric(filter=loss.avg(2).increases_by(frac=0.25) & ((RunEvent.user == "ana") | RunEvent.tags.contains("x"))),
    OnRunMetric(
        filter=MetricChangeFilter(name="a", agg="MIN", window=2, prior_window=5, change_type="ABS", threshold=1)
    ),
    OnRunMetric(scope=Project("p", entity="team"), filter=abs(loss.zscore(30)) > 3),
    OnRunMetric(filter=~RunEvent.name.matches_regex("^tmp") & (loss.zscore(7) < -2.5)),
    OnRunMetric(filter=loss == 1),
    OnRunMetric(scope=Project("p"), filter=(loss.avg(3) != 0) & RunEvent.name.contains("b")),
    OnRunMetric(scope=Project("p"), filter=loss.is_nonfinite() & RunEvent.user.eq("ana")),
    OnRunState(scope=Project("p"), filter=RunEvent.state.in_(["finished", "crashed"]) & RunEvent.user.in_(["a"])),
    OnCreateArtifact(scope=ArtifactCollectionScope("models", project="p")),
    OnAddArtifactAlias(scope=Project("p"), filter=ArtifactEvent.alias.matches_regex("^prod")),
    OnAddArtifactTag(filter=ArtifactEvent.tag.eq("golden")),
    OnLinkArtifact(scope=ArtifactCollectionScope("registry/models")),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.event_type)
@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.action_type)
def test_new_automation_and_automation_round_trip(event: object, action: object) -> None:
    new = event >> action  # type: ignore[operator]
    assert isinstance(new, NewAutomation)
    assert NewAutomation.model_validate_json(new.model_dump_json()) == new
    assert NewAutomation.model_validate(json.loads(new.model_dump_json())) == new
    stored = Automation(
        name="a", description="d", cooldown=timedelta(hours=1), notify_resolved=True, event=event, action=action
    )
    again = Automation.model_validate_json(stored.model_dump_json())
    assert again == stored
    assert again.cooldown == 3600.0


@pytest.mark.parametrize(
    "obj",
    [
        SlackIntegration(name="s", webhook_url_secret="SLACK_URL"),
        WebhookIntegration(name="w", url="https://example.com/hook", signing_secret="SIGN", access_token_secret="TOK"),
        EmailIntegration(name="e", to=["a@example.com"], host="smtp.example.com", sender="r@example.com"),
        loss > 1,
        loss.avg(2) != 0,
        loss.is_nonfinite(),
        RunEvent.state == "failed",
        Project("p"),
    ],
    ids=lambda o: type(o).__name__,
)
def test_other_objects_round_trip(obj: pydantic.BaseModel) -> None:
    assert type(obj).model_validate_json(obj.model_dump_json()) == obj


def test_automation_defaults() -> None:
    a = Automation(name="a", event=EVENTS[0], action=DoNothing())
    assert (a.enabled, a.cooldown, a.notify_resolved, a.description) == (True, 86400.0, False, "")
    assert a.project == "p"


# -- invalid constructions ----------------------------------------------------------------------------------------
INVALID = [
    (lambda: loss.avg(-1), "window must be a positive integer"),
    (lambda: loss.avg(0), "window must be a positive integer"),
    (lambda: loss.min(2.5), "window must be a positive integer"),
    (lambda: loss.changes_by(frac=0), "frac must be a positive number"),
    (lambda: loss.changes_by(diff=-1), "diff must be a positive number"),
    (lambda: loss.changes_by(diff=1, frac=0.1), "exactly one of diff"),
    (loss.increases_by, "exactly one of diff"),
    (lambda: loss.changes_by(diff=float("nan")), "diff must be a finite number"),
    (lambda: loss.zscore(30) < 3, r"must be negative, e.g. zscore\(30\) < -3"),
    (lambda: loss.zscore(30) > -3, "threshold must be positive"),
    (lambda: abs(loss.zscore(30)) < 3, "not supported"),
    (lambda: loss.zscore(0), "window must be a positive integer"),
    (lambda: loss > float("inf"), "threshold must be a finite number"),
    (lambda: loss > "high", "threshold must be a number"),
    (lambda: RunEvent.state == "exploded", "state must be one of RUNNING, FINISHED, FAILED"),
    (lambda: OnRunState(filter=RunEvent.state.in_([])), "could never fire"),
    (lambda: MetricThresholdFilter(name="x", cmp="~", threshold=1), "cmp must be one of >, >=, <, <=, ==, !="),
    (lambda: MetricThresholdFilter(name="x", window=0, cmp=">", threshold=1), "window must be a positive integer"),
    (lambda: MetricThresholdFilter(name="", cmp=">", threshold=1), "name"),
    (lambda: MetricThresholdFilter(name="x", agg="median", window=3, cmp=">", threshold=1), "agg"),
    (lambda: MetricChangeFilter(name="x", change_type="ABS", threshold=0), "threshold .* must be > 0"),
    (lambda: MetricChangeFilter(name="x", change_type="sideways", threshold=1), "change_type"),
    (lambda: MetricChangeFilter(name="x", change_type="ABS", change_dir="up", threshold=1), "change_dir"),
    (lambda: MetricZScoreFilter(name="x", threshold=-3), r"threshold \(z-score\) must be > 0"),
    (lambda: MetricZScoreFilter(name="x", window=-30), "window must be a positive integer"),
    (lambda: StateFilter(states=["finished", "bogus"]), "state must be one of"),
    (lambda: RunEvent.name.matches_regex("("), "not a valid regular expression"),
    (lambda: RunEvent.name.in_("abc"), "takes a list of strings"),
    (lambda: SendNotification(integration="t", level="loud"), "severity .*INFO, WARN, ERROR"),
    (lambda: SendNotification(integration="t", title="x" * 65), "title must be at most 64"),
    (lambda: SendWebhook(integration="h", payload="{not json"), "payload must be a JSON object"),
    (lambda: SendWebhook(integration="h", payload=[1, 2]), "payload must be a JSON object"),
    (lambda: SendWebhook(integration="h", payload={"a": "${not a name}"}), "not a valid name"),
    (lambda: OnRunMetric(filter=RunEvent.state == "finished"), "use OnRunState"),
    (lambda: OnRunState(filter=loss > 1), "use OnRunMetric"),
    (lambda: OnRunMetric(event_type="RUN_METRIC_CHANGE", filter=loss > 1), "does not match"),
    (lambda: Automation(name="a", cooldown=-1, event=EVENTS[0], action=DoNothing()), "cooldown must be >= 0"),
    (lambda: Automation(name=" ", event=EVENTS[0], action=DoNothing()), "name must be a non-empty string"),
    (lambda: Automation(name="a", event=EVENTS[0], action=DoNothing(), colour="red"), "colour"),
    (lambda: Project(""), "name must be a non-empty string"),
]


@pytest.mark.parametrize(("build", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_construction_names_the_field_and_what_is_allowed(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_event_rshift_rejects_non_actions() -> None:
    with pytest.raises(TypeError, match="SendNotification, SendWebhook or DoNothing"):
        OnRunMetric(filter=loss > 1) >> "slack"  # type: ignore[operator]


def test_a_regex_filter_matches_in_linear_time_on_a_hostile_name() -> None:
    # With a backtracking engine this search takes hours (each character doubles it) and, on the server, holds
    # the event loop; pytest's timeout fails the test then. RE2 answers at once.
    hostile = RunEvent.name.matches_regex(r"^(a+)+$")
    assert not hostile.matches({"display_name": "a" * 64 + "!"})
    assert hostile.matches({"display_name": "a" * 64})


@pytest.mark.parametrize("pattern", [r"(a)\1", r"foo(?=bar)", r"(?<!x)y"])
def test_a_regex_outside_re2_syntax_is_refused_naming_why(pattern: str) -> None:
    with pytest.raises(ValueError, match="RE2 syntax"):
        RunEvent.name.matches_regex(pattern)


def test_a_spec_without_its_tags_names_each_missing_field_and_its_allowed_values() -> None:
    from pydantic import ValidationError

    from runalert.automations.automation import describe_errors

    with pytest.raises(ValidationError) as caught:
        Automation.model_validate({"name": "guessed", "event": {"type": "run_metric"}, "action": {}})
    message = describe_errors(caught.value)
    assert "Unable to extract tag" not in message
    assert "event.event_type: missing or unknown; one of RUN_METRIC, RUN_METRIC_CHANGE" in message
    assert "action.action_type: missing or unknown; one of NOTIFICATION, GENERIC_WEBHOOK, NO_OP" in message
