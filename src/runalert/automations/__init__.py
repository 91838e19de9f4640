"""Automations: W&B-compatible rules (``event >> action``) and the one engine that evaluates them.

::

    from runalert import Api
    from runalert.automations import OnRunMetric, RunEvent, SendNotification

    api = Api()
    event = OnRunMetric(scope=api.project("my-project"), filter=RunEvent.metric("loss").avg(5) > 2.0)
    api.create_automation(event >> SendNotification.from_integration(api.slack_integration("team"),
                          title="Loss diverging", level="ERROR"), name="loss-diverging")

See ``docs/rules.md`` for the semantics (windows, change, z-score, edge-triggering, cooldown).
"""

from runalert.automations.actions import Action, ActionType, DoNothing, SendNotification, SendWebhook
from runalert.automations.api import Api, AutomationBackend, LocalBackend
from runalert.automations.automation import DEFAULT_COOLDOWN, Automation, NewAutomation
from runalert.automations.backtest import backtest
from runalert.automations.engine import (
    FAILURE_REASONS,
    AutomationNotFoundError,
    Firing,
    LocalEngine,
    RunInfo,
    default_engine,
    set_default_engine,
)
from runalert.automations.evaluators import (
    ChangeEvaluator,
    Evaluator,
    NonFiniteEvaluator,
    SlidingAgg,
    ThresholdEvaluator,
    Trigger,
    ZScoreEvaluator,
    make_evaluator,
)
from runalert.automations.events import (
    ArtifactEvent,
    Event,
    EventType,
    OnAddArtifactAlias,
    OnAddArtifactTag,
    OnAddCollectionTag,
    OnCreateArtifact,
    OnGroupFinished,
    OnLinkArtifact,
    OnRemoveArtifactTag,
    OnRemoveCollectionTag,
    OnRunMetric,
    OnRunState,
    OnSchedule,
    OnUnlinkArtifact,
    RunEvent,
)
from runalert.automations.filters import (
    Agg,
    ChangeDir,
    ChangeType,
    MetricAgg,
    MetricChangeFilter,
    MetricFilter,
    MetricNonFiniteFilter,
    MetricThresholdFilter,
    MetricVal,
    MetricZScoreFilter,
    RunMetricFilter,
    RunState,
    RunStateFilter,
    StateFilter,
    ZScoreMetricOperand,
)
from runalert.automations.integrations import EmailIntegration, Integration, SlackIntegration, WebhookIntegration
from runalert.automations.run_filters import And, FieldFilter, FilterableField, Not, Or, RunFilter
from runalert.automations.scopes import (
    ArtifactCollectionScope,
    AutomationScope,
    Project,
    ProjectScope,
    RegistryScope,
    Scope,
    ScopeType,
)
from runalert.automations.templates import TEMPLATE_VARIABLES, fill_template

__all__ = [
    "DEFAULT_COOLDOWN",
    "FAILURE_REASONS",
    "TEMPLATE_VARIABLES",
    "Action",
    "ActionType",
    "Agg",
    "And",
    "Api",
    "ArtifactCollectionScope",
    "ArtifactEvent",
    "Automation",
    "AutomationBackend",
    "AutomationNotFoundError",
    "AutomationScope",
    "ChangeDir",
    "ChangeEvaluator",
    "ChangeType",
    "DoNothing",
    "EmailIntegration",
    "Evaluator",
    "Event",
    "EventType",
    "FieldFilter",
    "FilterableField",
    "Firing",
    "Integration",
    "LocalBackend",
    "LocalEngine",
    "MetricAgg",
    "MetricChangeFilter",
    "MetricFilter",
    "MetricNonFiniteFilter",
    "MetricThresholdFilter",
    "MetricVal",
    "MetricZScoreFilter",
    "NewAutomation",
    "NonFiniteEvaluator",
    "Not",
    "OnAddArtifactAlias",
    "OnAddArtifactTag",
    "OnAddCollectionTag",
    "OnCreateArtifact",
    "OnGroupFinished",
    "OnLinkArtifact",
    "OnRemoveArtifactTag",
    "OnRemoveCollectionTag",
    "OnRunMetric",
    "OnRunState",
    "OnSchedule",
    "OnUnlinkArtifact",
    "Or",
    "Project",
    "ProjectScope",
    "RegistryScope",
    "RunEvent",
    "RunFilter",
    "RunInfo",
    "RunMetricFilter",
    "RunState",
    "RunStateFilter",
    "Scope",
    "ScopeType",
    "SendNotification",
    "SendWebhook",
    "SlackIntegration",
    "SlidingAgg",
    "StateFilter",
    "ThresholdEvaluator",
    "Trigger",
    "WebhookIntegration",
    "ZScoreEvaluator",
    "ZScoreMetricOperand",
    "backtest",
    "default_engine",
    "fill_template",
    "make_evaluator",
    "set_default_engine",
]
