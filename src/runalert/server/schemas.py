"""Request and response bodies of the REST API (``/api/v1``). Requests forbid unknown fields."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, field_validator

from runalert.alert import MAX_TITLE_LENGTH, AlertLevel

PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._:@+-]{0,127}$"
SECRET_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
MAX_STEP = 2**62

MetricName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ShortText = Annotated[str, StringConstraints(max_length=256)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Result = Literal["created", "updated", "unchanged"]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _level(value: Any) -> str:
    return AlertLevel.parse(value).value


MAX_CONFIG_DEPTH = 32
"""A run's config nests at most this deep: deeper JSON is stored fine but cannot be served back (pydantic's
serializer and the page stop at a few hundred levels), so it is refused."""


def _depth(value: Any) -> int:
    """How deep ``value`` nests (a scalar 0, ``{}`` 1), counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        elif not isinstance(node, list):
            continue
        level += 1
        deepest = max(deepest, level)
        if level > MAX_CONFIG_DEPTH:
            return level
        stack.extend((child, level) for child in node)
    return deepest


# -- runs ------------------------------------------------------------------------------------------------
class RunIn(Request):
    """Create a run or resume it (the same ``run_id`` again: state RUNNING, the fields given are updated)."""

    name: ShortText | None = None
    user: Annotated[str, StringConstraints(max_length=128)] | None = None
    tags: list[Tag] | None = Field(None, max_length=100)
    config: dict[str, Any] | None = None
    group: Annotated[str, StringConstraints(max_length=128, strip_whitespace=True)] | None = Field(
        None, description="the run's group (a sweep, a job array): at most one; OnGroupFinished fires per group"
    )

    @field_validator("config")
    @classmethod
    def _config(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            if _depth(value) > MAX_CONFIG_DEPTH:
                raise ValueError(f"config is nested too deeply (at most {MAX_CONFIG_DEPTH} levels)")
            try:
                size = len(json.dumps(value, allow_nan=False, ensure_ascii=False).encode())
            except UnicodeEncodeError:
                raise ValueError("config must be valid Unicode text (no lone surrogates such as \\ud800)") from None
            except ValueError:
                raise ValueError("config must be plain JSON (no NaN or Infinity)") from None
            if size > 100_000:
                raise ValueError("config is too large (at most 100 kB of JSON)")
        return value


class FailureIn(Request):
    """How a run crashed, for its page: the exception's type and message and the last frames of its traceback."""

    exception: Annotated[str, StringConstraints(max_length=256)] = ""
    message: Annotated[str, StringConstraints(max_length=4000)] = ""
    frames: list[Annotated[str, StringConstraints(max_length=1000)]] = Field(default_factory=list, max_length=50)


class StateIn(Request):
    state: Literal["RUNNING", "FINISHED", "FAILED", "CRASHED", "running", "finished", "failed", "crashed"]
    reason: Literal["exception", "interrupted", "preempted", "heartbeat_timeout"] | None = None
    failure: FailureIn | None = Field(None, description="with FAILED: the crash's exception (shown on the run's page)")


class NonFiniteIn(Request):
    """A non-finite value the run saw: the server keeps the first one of the run for its page."""

    key: MetricName
    step: int | None = Field(None, ge=-MAX_STEP, le=MAX_STEP)
    value: Literal["nan", "inf", "-inf", "NaN", "Infinity", "-Infinity", "nan or inf"] = Field(
        description='"nan or inf": a reduction over a tensor said so, the element is not known'
    )


class RunOut(BaseModel):
    run_id: str
    name: str
    user: str | None
    tags: list[str]
    config: dict[str, Any]
    state: str
    reason: str | None
    created_at: float
    updated_at: float
    last_seen_at: float
    failed_at: float | None
    last_step: int | None
    points: int
    dropped: int
    failure: dict[str, Any] | None = Field(None, description="a crash's exception type, message and last frames")
    nonfinite: dict[str, Any] | None = Field(None, description="the first non-finite value: key, step, value")
    group: str | None = Field(None, description="the run's group (a sweep, a job array), if any")


class RunUpsertOut(RunOut):
    created: bool = Field(description="true: a new run; false: an existing run resumed")


class HeartbeatOut(BaseModel):
    state: str
    reason: str | None
    heartbeat_timeout: float


# -- metrics ---------------------------------------------------------------------------------------------
# Numbers are strict: a JSON number is a number, a string or a boolean is not (``"1.5"`` and ``true`` are refused,
# not coerced). The one exception: the strings of the non-finite values, for clients whose JSON has no NaN.
NON_FINITE_TEXT = r"^[+-]?(?i:nan|inf|infinity)$"
MetricValue = Annotated[float, Strict()] | Annotated[str, StringConstraints(pattern=NON_FINITE_TEXT)] | None
"""A metric value: a JSON number (``NaN``, ``Infinity`` and ``-Infinity`` too), ``null`` (no value), or one of
the strings "nan", "inf", "-inf", "infinity" (any case)."""
METRIC_VALUE_HELP = (
    "a metric value must be a JSON number (NaN, Infinity and -Infinity too), null, or one of the strings "
    "'nan', 'inf', '-inf', 'infinity' (any case)"
)
StepInt = Annotated[int, Strict(), Field(ge=-MAX_STEP, le=MAX_STEP)]
StepFloat = Annotated[float, Strict(), Field(ge=-MAX_STEP, le=MAX_STEP)]


class MetricRow(Request):
    """Values logged at one step. ``NaN``/``Infinity`` (or the strings "nan", "inf") are non-finite values."""

    step: StepInt | StepFloat | None = Field(None, description="an integer (a float only if integral)")
    time: Annotated[float, Strict()] | None = Field(None, ge=0, le=1e11)
    metrics: dict[MetricName, MetricValue] = Field(max_length=1000)


class MetricBatchIn(Request):
    rows: list[MetricRow] = Field(max_length=10000)
    dropped: Annotated[int, Strict()] = Field(
        0, ge=0, le=MAX_STEP, description="points the client dropped since its last batch"
    )
    alive: Annotated[bool, Strict()] = Field(
        True,
        description="whether the batch is a sign of the run's life (false: another writer of the run, a rank "
        "other than zero sending its system metrics; it neither keeps the run from a heartbeat timeout nor revives "
        "it after one)",
    )


class FiredOut(BaseModel):
    alert_id: str
    automation: str | None
    title: str


class MetricBatchOut(BaseModel):
    accepted: int
    fired: list[FiredOut]


class MetricSeriesOut(BaseModel):
    name: str
    points: list[tuple[int | None, float | None, float]] = Field(description="(step, value, time); None: non-finite")


# -- alerts ----------------------------------------------------------------------------------------------
class AlertIn(Request):
    """An alert forwarded from ``runalert.alert()``."""

    title: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE_LENGTH)]
    text: Annotated[str, StringConstraints(max_length=20000)] = ""
    level: str = "INFO"
    run_id: Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)] | None = None
    wait_duration: float = Field(0.0, ge=0, le=10 * 365 * 86400, description="seconds; 0: no suppression")
    fields: dict[Annotated[str, StringConstraints(max_length=128)], ShortText] = Field(
        default_factory=dict, max_length=50
    )
    markup: bool = True
    integrations: list[Annotated[str, StringConstraints(pattern=NAME_PATTERN)]] | None = Field(
        None, max_length=50, description="names; default: the project's default integrations"
    )
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,32}$")] | None = Field(
        None, description="the client's alert id: the same id twice is stored once (safe retries)"
    )
    suppressed: int = Field(0, ge=0, le=MAX_STEP, description="repeats the sender held back before this one")
    created_at: float | None = Field(
        None, ge=0, le=1e11, description="when the sender raised it (Unix seconds); kept when in the past year"
    )
    run_name: ShortText | None = Field(
        None, description="without run_id: the alert goes with the project's latest run of this name, if any"
    )

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> str:
        return _level(value)

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("title must not be blank")
        return value


class AttemptOut(BaseModel):
    started_at: float
    duration: float
    outcome: str
    error: str | None


class DeliveryOut(BaseModel):
    id: str = Field(description="the X-Runalert-Delivery id")
    integration: str
    status: Literal["pending", "delivered", "dead", "held", "rolled_up"] = Field(
        description="held: kept for its group's roll-up (group_interval); rolled_up: sent in that roll-up"
    )
    attempts: int
    next_attempt_at: float
    created_at: float
    finished_at: float | None
    last_error: str | None
    attempt_log: list[AttemptOut]


class AlertOut(BaseModel):
    id: str
    title: str
    text: str
    level: str
    source: str
    kind: str
    run_id: str | None
    automation: str | None
    fields: dict[str, str]
    created_at: float
    suppressed: bool
    suppressed_before: int
    deliveries: list[DeliveryOut]


# -- integrations and secrets ----------------------------------------------------------------------------
class IntegrationOut(BaseModel):
    name: str
    kind: str
    default: bool
    min_level: str
    description: str
    spec: dict[str, Any] = Field(description="the integration; secrets appear by name only")
    missing_secrets: list[str]
    created_at: float
    updated_at: float
    result: Result | None = None


class SecretIn(Request):
    value: Annotated[str, StringConstraints(min_length=1, max_length=10000)]


class SecretOut(BaseModel):
    name: str
    created_at: float
    updated_at: float


# -- projects, keys --------------------------------------------------------------------------------------
class ProjectOut(BaseModel):
    name: str
    created_at: float
    runs: int


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    version: str


class IntegrationIn(Request):
    """An integration (``runalert.automations`` integration fields; secrets by name, set them under /secrets).

    - ``slack``: ``webhook_url_secret``, or ``bot_token_secret`` and ``channel``; optional ``mentions`` per level;
    - ``webhook``: ``url``, optional ``signing_secret`` (HMAC) and ``access_token_secret`` (Bearer token);
    - ``email``: ``host``, ``port``, ``sender``, ``to``, optional ``username``/``password_secret``,
      ``starttls``/``ssl``.

    ``default``: also receives alerts forwarded from ``runalert.alert()`` and server notices (runs failed for
    silence with no automation to tell); ``min_level``: the least level of those it receives.

    Delivery options (any kind unless said): ``group_interval`` (seconds, 0 = off): alert storms roll up, the
    first alert of a group at once and the rest of the interval as one roll-up at its end; ``group_by``: the group
    key besides the project (``title``, ``reason``, ``host``, ``group``; default ``["title"]``); ``threads`` (Slack
    bot): a run's follow-ups as replies in the thread of its first message; ``api_url`` (Slack bot): Slack's Web
    API address.
    """

    kind: Literal["slack", "webhook", "email"]
    default: bool = True
    min_level: str = "INFO"
    description: ShortText = ""
    webhook_url_secret: Annotated[str, StringConstraints(pattern=SECRET_PATTERN)] | None = None
    bot_token_secret: Annotated[str, StringConstraints(pattern=SECRET_PATTERN)] | None = None
    channel: ShortText | None = None
    url: Annotated[str, StringConstraints(max_length=2048)] | None = None
    signing_secret: Annotated[str, StringConstraints(pattern=SECRET_PATTERN)] | None = None
    access_token_secret: Annotated[str, StringConstraints(pattern=SECRET_PATTERN)] | None = None
    to: list[ShortText] | None = Field(None, max_length=100)
    host: ShortText | None = None
    port: int | None = Field(None, ge=1, le=65535)
    sender: ShortText | None = None
    username: ShortText | None = None
    password_secret: Annotated[str, StringConstraints(pattern=SECRET_PATTERN)] | None = None
    starttls: bool | None = None
    ssl: bool | None = None
    mentions: dict[ShortText, list[ShortText]] | None = Field(
        None, max_length=3, description='slack: per-level mentions, e.g. {"ERROR": ["U123", "S456"]}'
    )
    threads: bool | None = Field(
        None, description="slack bot: a run's follow-ups as replies in its first message's thread"
    )
    group_interval: float | None = Field(
        None, ge=0, le=7 * 86400, description="seconds (0: off): alerts of a group after the first are rolled up"
    )
    group_by: list[Literal["title", "reason", "host", "group"]] | None = Field(
        None, min_length=1, max_length=4, description='the roll-up group key besides the project (default ["title"])'
    )
    api_url: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        None, description="slack bot: Slack's Web API address (default https://slack.com/api)"
    )

    @field_validator("min_level", mode="before")
    @classmethod
    def _min_level(cls, value: Any) -> str:
        return _level(value)

    def spec_data(self) -> dict[str, Any]:
        """The integration fields alone (for ``runalert.automations``' integration models)."""
        return self.model_dump(exclude_unset=True, exclude={"default", "min_level", "description"}) | {
            "kind": self.kind
        }


# -- automations and events ------------------------------------------------------------------------------
class AutomationOut(BaseModel):
    name: str
    enabled: bool
    summary: str = Field(description="a one-line description of the event and the action")
    spec: dict[str, Any] = Field(
        description="the automation as runalert.automations.Automation JSON (W&B's form of events, filters, actions)"
    )
    version: int
    created_at: float
    updated_at: float
    result: Result | None = None


class AutomationPatch(Request):
    enabled: bool | None = None
    description: ShortText | None = None


class ArtifactEventIn(Request):
    """An artifact event; automations on it (``OnCreateArtifact`` ...) whose scope and filter match fire."""

    event_type: Literal[
        "CREATE_ARTIFACT",
        "ADD_ARTIFACT_ALIAS",
        "ADD_ARTIFACT_TAG",
        "REMOVE_ARTIFACT_TAG",
        "ADD_COLLECTION_TAG",
        "REMOVE_COLLECTION_TAG",
        "LINK_ARTIFACT",
        "LINK_MODEL",
        "UNLINK_ARTIFACT",
    ] = Field(description="W&B's artifact event types (LINK_MODEL is W&B's server name of LINK_ARTIFACT)")
    artifact: ShortText | None = None
    alias: ShortText | None = None
    tag: ShortText | None = None
    collection: ShortText | None = None
    author: ShortText | None = None


class EventOut(BaseModel):
    fired: list[FiredOut]
