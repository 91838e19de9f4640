"""Metric filters (threshold, change, z-score), run-state filters and their builders.

Names, fields and defaults follow ``wandb.automations``::

    RunEvent.metric("loss").avg(5) > 2.0               # MetricThresholdFilter (>, >=, <, <=, ==, !=)
    RunEvent.metric("acc").decreases_by(frac=0.1)      # MetricChangeFilter
    abs(RunEvent.metric("loss").zscore(30)) > 3        # MetricZScoreFilter
    RunEvent.metric("loss").is_nonfinite()             # MetricNonFiniteFilter (NaN or inf appears)
    RunEvent.state.in_(["finished", "failed"])         # StateFilter

A comparison builds a filter, never a ``bool``: ``if m > 1``, ``m > 0 and m < 1`` or ``0 < m < 1`` raise a
``TypeError`` saying what to write instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, field_serializer, field_validator, model_validator

from runalert.automations._base import LenientStrEnum, Model, finite_number
from runalert.automations.event_types import EventType
from runalert.automations.run_filters import And, FieldFilter, Not, Or, RunFilter, run_event_filter

__all__ = [
    "Agg",
    "ChangeDir",
    "ChangeType",
    "MetricAgg",
    "MetricChangeFilter",
    "MetricFilter",
    "MetricNonFiniteFilter",
    "MetricThresholdFilter",
    "MetricVal",
    "MetricZScoreFilter",
    "RunMetricFilter",
    "RunState",
    "RunStateFilter",
    "StateFilter",
    "StateOperand",
    "ZScoreMetricOperand",
    "parse_metric_filter",
]

_CMP_ALIASES = {">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte", "gt": "$gt", "gte": "$gte", "lt": "$lt"}
_CMP_ALIASES |= {"lte": "$lte", "==": "$eq", "eq": "$eq", "!=": "$ne", "ne": "$ne"}
_CMP_SYMBOLS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<=", "$eq": "==", "$ne": "!="}


class Agg(LenientStrEnum):
    """How a window of values is aggregated."""

    MAX = "MAX"
    MIN = "MIN"
    AVERAGE = "AVERAGE"
    AVG = "AVERAGE"
    MEAN = "AVERAGE"


class ChangeType(LenientStrEnum):
    """ABSOLUTE: ``cur - prior``; RELATIVE: ``(cur - prior) / |prior|``."""

    ABSOLUTE = "ABSOLUTE"
    RELATIVE = "RELATIVE"
    ABS = "ABSOLUTE"
    REL = "RELATIVE"


class ChangeDir(LenientStrEnum):
    """Which way a change (or z-score) must go to fire."""

    INCREASE = "INCREASE"
    DECREASE = "DECREASE"
    ANY = "ANY"
    INC = "INCREASE"
    DEC = "DECREASE"


def _window(value: Any, field: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{field} must be a positive integer (a number of logged values), not {value!r}")
    if value < 1:
        raise ValueError(f"{field} must be a positive integer (>= 1 logged values), not {value!r}")
    return value


def _no_bool(rule: object) -> TypeError:
    return TypeError(
        f"{rule!r} is a rule, not a truth value: Python asked for its bool (an if, and/or/not, or a chained "
        "comparison such as 0 < m < 1). Pass it as OnRunMetric(filter=...) or to backtest(); add a run filter "
        "with & (not 'and'); for a range write two rules, m > 0 and m < 1, as two automations"
    )


def _comparand(value: Any, operand: str, op: str) -> float | int:
    """``value`` as the right-hand side of ``operand op value``, or a ``TypeError`` saying what it must be."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{operand} {op} ...: a metric compares with a number (int or float), not {type(value).__name__}"
        )
    return value


def _threshold_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(
            f"threshold must be a finite number, not {value!r}; to fire on NaN or inf use "
            "RunEvent.metric(name).is_nonfinite()"
        )
    return finite_number(value, "threshold")


def _drop_kind(data: Any, kind: str) -> Any:
    """``data`` without runalert's earlier ``"kind"`` tag (when it is ``kind``)."""
    if isinstance(data, Mapping) and data.get("kind") == kind:
        return {k: v for k, v in data.items() if k != "kind"}
    return data


class _MetricFilterBase(Model):
    name: str

    def __bool__(self) -> bool:
        raise _no_bool(self)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name (the metric's name) must be a non-empty string")
        return value

    def __and__(self, other: Any) -> RunMetricFilter:
        if isinstance(other, FieldFilter | And | Or | Not):
            return RunMetricFilter(run=other, metric=self)
        return NotImplemented

    def __rand__(self, other: Any) -> RunMetricFilter:
        return self.__and__(other)

    @property
    def metric_name(self) -> str:
        return self.name


class MetricThresholdFilter(_MetricFilterBase):
    """``metric`` (or ``agg`` of its last ``window`` values) compared with ``threshold`` by ``cmp``.

    W&B's JSON: ``{"name", "agg_op", "window_size", "cmp_op", "threshold"}``. Evaluated on every new value once the
    window is full. Without ``agg`` the window is ignored (as in W&B): the latest value is compared. A threshold given
    as an integer stays an integer (``2**53 + 1`` is kept exactly).
    """

    name: str
    agg: Annotated[Agg | None, Field(alias="agg_op")] = None
    window: Annotated[int, Field(alias="window_size")] = 1
    cmp: Annotated[Literal["$gt", "$gte", "$lt", "$lte", "$eq", "$ne"], Field(alias="cmp_op")]
    threshold: int | float

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        return _drop_kind(data, "threshold")

    @field_validator("cmp", mode="before")
    @classmethod
    def _cmp(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = _CMP_ALIASES.get(value.strip(), value.strip())
        if value not in _CMP_SYMBOLS:
            raise ValueError(f"cmp must be one of >, >=, <, <=, ==, != ($gt, $gte, $lt, $lte, $eq, $ne), not {value!r}")
        return value

    @field_validator("window", mode="before")
    @classmethod
    def _win(cls, value: Any) -> Any:
        return _window(value, "window")

    @field_validator("threshold", mode="before")
    @classmethod
    def _thr(cls, value: Any) -> Any:
        return _threshold_number(value)

    @property
    def event_type(self) -> EventType:
        return EventType.RUN_METRIC_THRESHOLD

    @property
    def kind(self) -> str:
        """``"threshold"`` (runalert's earlier tag, for code that dispatches on it)."""
        return "threshold"

    @property
    def threshold_filter(self) -> MetricThresholdFilter:
        """This filter (W&B's path: ``event.filter.metric.threshold_filter``)."""
        return self

    def describe(self) -> str:
        metric = f"{_AGG_NAMES[self.agg]}({self.name}, {self.window})" if self.agg else self.name
        return f"{metric} {_CMP_SYMBOLS[self.cmp]} {_num(self.threshold)}"

    def __repr__(self) -> str:
        metric = f"{self.agg.value}({self.name})" if self.agg else self.name
        return repr(f"{metric} {_CMP_SYMBOLS[self.cmp]} {self.threshold}")


class MetricChangeFilter(_MetricFilterBase):
    """A change between the current window (last ``window`` values) and the ``prior_window`` values before it.

    W&B's JSON: ``{"name", "agg_op", "current_window_size", "prior_window_size", "change_type", "change_dir",
    "change_amount"}``. ``change_type`` ABSOLUTE (``cur - prior``) or RELATIVE (``(cur - prior) / |prior|``);
    ``change_dir`` INCREASE fires at ``>= threshold``, DECREASE at ``<= -threshold``, ANY at ``|change| >= threshold``.
    Without ``agg`` the windows are ignored, as in W&B (the latest value against the one before): they are stored as 1.
    """

    name: str
    agg: Annotated[Agg | None, Field(alias="agg_op")] = None
    window: Annotated[int, Field(alias="current_window_size")] = 1
    prior_window: Annotated[int, Field(default_factory=lambda data: data.get("window", 1), alias="prior_window_size")]
    change_type: ChangeType
    change_dir: ChangeDir = ChangeDir.ANY
    threshold: Annotated[int | float, Field(alias="change_amount")]

    @model_validator(mode="before")
    @classmethod
    def _before(cls, data: Any) -> Any:
        data = _drop_kind(data, "change")
        if not isinstance(data, Mapping):
            return data
        data = {k: v for k, v in data.items() if not (k in ("cmp", "cmp_op") and v is None)}  # W&B's ignored cmp
        if data.get("agg", data.get("agg_op")) is None:
            for key in ("window", "current_window_size", "prior_window", "prior_window_size"):
                if key in data:
                    _window(data[key], key)  # a bad window is still an error
                    data[key] = 1
        return data

    @field_validator("window", "prior_window", mode="before")
    @classmethod
    def _win(cls, value: Any, info: Any) -> Any:
        return _window(value, info.field_name)

    @field_validator("threshold", mode="before")
    @classmethod
    def _thr(cls, value: Any) -> Any:
        value = finite_number(value, "threshold (the change amount, diff or frac)")
        if value <= 0:
            raise ValueError(
                f"threshold (the change amount, diff or frac) must be > 0, not {value!r}; "
                "pick the direction with increases_by/decreases_by/changes_by"
            )
        return value

    @property
    def event_type(self) -> EventType:
        return EventType.RUN_METRIC_CHANGE

    @property
    def kind(self) -> str:
        """``"change"`` (runalert's earlier tag)."""
        return "change"

    @property
    def change_filter(self) -> MetricChangeFilter:
        """This filter (W&B's path: ``event.filter.metric.change_filter``)."""
        return self

    def describe(self) -> str:
        metric = f"{_AGG_NAMES[self.agg]}({self.name}, {self.window})" if self.agg else self.name
        verb = "changes" if self.change_dir is ChangeDir.ANY else f"{self.change_dir.value.lower()}s"
        amount = f"{self.threshold:.2%}" if self.change_type is ChangeType.RELATIVE else _num(self.threshold)
        prior = f" vs the {self.prior_window} before" if self.agg else ""
        return f"{metric} {verb} by {amount}{prior}"

    def __repr__(self) -> str:
        metric = f"{self.agg.value}({self.name})" if self.agg else self.name
        verb = "changes" if self.change_dir is ChangeDir.ANY else f"{self.change_dir.value.lower()}s"
        amount = f"{self.threshold:.2%}" if self.change_type is ChangeType.RELATIVE else f"{self.threshold}"
        return repr(f"{metric} {verb} {amount}")


class MetricZScoreFilter(_MetricFilterBase):
    """The newest value's z-score against the mean and population std of the ``window`` values before it.

    W&B's JSON: ``{"name", "window_size", "threshold", "change_dir"}``. INCREASE: ``z >= threshold``; DECREASE:
    ``z <= -threshold``; ANY: ``|z| >= threshold``. std 0: not evaluated.
    """

    name: str
    window: Annotated[int, Field(alias="window_size")] = 30
    threshold: int | float = 3.0
    change_dir: ChangeDir = ChangeDir.ANY

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        return _drop_kind(data, "zscore")

    @field_validator("window", mode="before")
    @classmethod
    def _win(cls, value: Any) -> Any:
        return _window(value, "window")

    @field_validator("threshold", mode="before")
    @classmethod
    def _thr(cls, value: Any) -> Any:
        value = finite_number(value, "threshold (z-score)")
        if value <= 0:
            raise ValueError(
                f"threshold (z-score) must be > 0, not {value!r}; the direction is change_dir "
                "(zscore(n) > t: INCREASE, zscore(n) < -t: DECREASE, abs(zscore(n)) > t: ANY)"
            )
        return value

    @property
    def event_type(self) -> EventType:
        return EventType.RUN_METRIC_ZSCORE

    @property
    def kind(self) -> str:
        """``"zscore"`` (runalert's earlier tag)."""
        return "zscore"

    @property
    def zscore_filter(self) -> MetricZScoreFilter:
        """This filter (W&B's path: ``event.filter.metric.zscore_filter``)."""
        return self

    def describe(self) -> str:
        z = f"zscore({self.name}, {self.window})"
        if self.change_dir is ChangeDir.ANY:
            return f"abs({z}) >= {_num(self.threshold)}"
        if self.change_dir is ChangeDir.DECREASE:
            return f"{z} <= -{_num(self.threshold)}"
        return f"{z} >= {_num(self.threshold)}"

    def __repr__(self) -> str:
        if self.change_dir is ChangeDir.ANY:
            return repr(f"abs(zscore({self.name!r})) > {self.threshold}")
        if self.change_dir is ChangeDir.DECREASE:
            return repr(f"zscore({self.name!r}) < -{self.threshold}")
        return repr(f"zscore({self.name!r}) > +{self.threshold}")


class MetricNonFiniteFilter(_MetricFilterBase):
    """A NaN, inf or -inf value of the metric: ``RunEvent.metric("loss").is_nonfinite()`` (a runalert extension).

    JSON: ``{"name"}`` under ``"nonfinite_filter"``. The condition is "the latest value is not finite", so it fires
    when a non-finite value appears and, being edge-triggered, again only after a finite value came in between (and
    the cooldown has passed).
    """

    name: str

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        return _drop_kind(data, "nonfinite")

    @property
    def event_type(self) -> EventType:
        return EventType.RUN_METRIC_NONFINITE

    @property
    def kind(self) -> str:
        """``"nonfinite"`` (runalert's earlier tag)."""
        return "nonfinite"

    @property
    def nonfinite_filter(self) -> MetricNonFiniteFilter:
        """This filter (as ``threshold_filter`` is for a threshold)."""
        return self

    def describe(self) -> str:
        return f"{self.name} is non-finite (NaN or inf)"

    def __repr__(self) -> str:
        return repr(f"{self.name} is NaN or inf")


_WRAPPER_KEYS: dict[str, type[_MetricFilterBase]] = {
    "threshold_filter": MetricThresholdFilter,
    "change_filter": MetricChangeFilter,
    "zscore_filter": MetricZScoreFilter,
    "nonfinite_filter": MetricNonFiniteFilter,
}
_LEGACY_KINDS: dict[str, type[_MetricFilterBase]] = {
    "threshold": MetricThresholdFilter,
    "change": MetricChangeFilter,
    "zscore": MetricZScoreFilter,
    "nonfinite": MetricNonFiniteFilter,
}


def parse_metric_filter(raw: Any) -> Any:
    """A metric filter from W&B's JSON (``{"threshold_filter": {...}}``, ``{"change_filter": ...}``,
    ``{"zscore_filter": ...}``; runalert's ``{"nonfinite_filter": ...}``), a JSON string of it, runalert's earlier
    form (``{"kind": "threshold", ...}``) or a filter's own fields (told apart by ``cmp_op`` or ``change_type``)."""
    if isinstance(raw, _MetricFilterBase):
        return raw
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"a metric filter must be a JSON object (or its JSON text): {exc}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"a metric filter must be a JSON object, not {type(raw).__name__}")
    wrapped = [key for key in raw if key in _WRAPPER_KEYS]
    if len(wrapped) == 1 and len(raw) == 1:
        return _WRAPPER_KEYS[wrapped[0]].model_validate(raw[wrapped[0]])
    kind = raw.get("kind")
    if isinstance(kind, str) and kind in _LEGACY_KINDS:
        return _LEGACY_KINDS[kind].model_validate(raw)
    if {"cmp", "cmp_op"} & raw.keys():
        return MetricThresholdFilter.model_validate(raw)
    if {"change_type", "change_amount", "current_window_size", "prior_window_size"} & raw.keys():
        return MetricChangeFilter.model_validate(raw)
    raise ValueError(
        f"a metric filter is one of {', '.join(repr(k) for k in _WRAPPER_KEYS)} (W&B's run_metric_filter), "
        f"not an object with keys {sorted(map(str, raw))}"
    )


MetricFilter = Annotated[
    Union[MetricThresholdFilter, MetricChangeFilter, MetricZScoreFilter, MetricNonFiniteFilter],  # noqa: UP007
    BeforeValidator(parse_metric_filter),
]

METRIC_FILTERS = (MetricThresholdFilter, MetricChangeFilter, MetricZScoreFilter, MetricNonFiniteFilter)
"""Every metric filter class (for ``isinstance``)."""


_AGG_NAMES = {Agg.AVERAGE: "avg", Agg.MIN: "min", Agg.MAX: "max"}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


# -- builders ------------------------------------------------------------------------------------------------
class _Operand(Model):
    """Comparisons and change builders shared by a bare metric and an aggregate.

    ``==`` and ``!=`` with a number build a filter, as ``>`` does; between two operands they keep the models'
    structural equality (``RunEvent.metric("m").mean(3) == RunEvent.metric("m").avg(3)`` is ``True``).
    """

    name: str

    def _label(self) -> str:
        return f"RunEvent.metric({self.name!r})"

    def _threshold(self, cmp: str, value: Any) -> MetricThresholdFilter:
        data: dict[str, Any] = {"name": self.name, "cmp": cmp, "threshold": value}
        if isinstance(self, MetricAgg):
            data.update(agg=self.agg, window=self.window)
        return MetricThresholdFilter(**data)

    def gt(self, value: float, /) -> MetricThresholdFilter:
        return self._threshold("$gt", value)

    def gte(self, value: float, /) -> MetricThresholdFilter:
        return self._threshold("$gte", value)

    def lt(self, value: float, /) -> MetricThresholdFilter:
        return self._threshold("$lt", value)

    def lte(self, value: float, /) -> MetricThresholdFilter:
        return self._threshold("$lte", value)

    def eq(self, value: float, /) -> MetricThresholdFilter:
        """Fires when the value (or aggregate) becomes exactly ``value`` (floats compare exactly)."""
        return self._threshold("$eq", _comparand(value, self._label(), "=="))

    def ne(self, value: float, /) -> MetricThresholdFilter:
        """Fires when the value (or aggregate) becomes anything but ``value``."""
        return self._threshold("$ne", _comparand(value, self._label(), "!="))

    def __eq__(self, other: object) -> Any:
        if isinstance(other, _Operand | ZScoreMetricOperand):
            return Model.__eq__(self, other)
        return self.eq(other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> Any:
        if isinstance(other, _Operand | ZScoreMetricOperand):
            return not Model.__eq__(self, other)
        return self.ne(other)  # type: ignore[arg-type]

    def __hash__(self) -> int:  # structural, as pydantic's for frozen models (a class defining __eq__ must say)
        return hash((type(self), *self.__dict__.values()))

    def __gt__(self, other: Any) -> MetricThresholdFilter:
        return self.gt(other)

    def __ge__(self, other: Any) -> MetricThresholdFilter:
        return self.gte(other)

    def __lt__(self, other: Any) -> MetricThresholdFilter:
        return self.lt(other)

    def __le__(self, other: Any) -> MetricThresholdFilter:
        return self.lte(other)

    def changes_by(
        self, *, diff: float | None = None, frac: float | None = None, _dir: ChangeDir = ChangeDir.ANY
    ) -> MetricChangeFilter:
        """Fires when the metric changes (up or down) by ``diff`` (absolute) or ``frac`` (relative, 0.1 = 10%)."""
        if (diff is None) == (frac is None):
            raise ValueError("give exactly one of diff (an absolute change) or frac (a relative change), not both")
        amount, field = (diff, "diff") if diff is not None else (frac, "frac")
        amount = finite_number(amount, field)
        if amount <= 0:
            raise ValueError(f"{field} must be a positive number (> 0), not {amount!r}")
        data: dict[str, Any] = {
            "name": self.name,
            "change_type": ChangeType.ABSOLUTE if diff is not None else ChangeType.RELATIVE,
            "change_dir": _dir,
            "threshold": amount,
        }
        if isinstance(self, MetricAgg):
            data.update(agg=self.agg, window=self.window, prior_window=self.window)
        return MetricChangeFilter(**data)

    def increases_by(self, *, diff: float | None = None, frac: float | None = None) -> MetricChangeFilter:
        """Fires when the metric rises by at least ``diff`` or ``frac``."""
        return self.changes_by(diff=diff, frac=frac, _dir=ChangeDir.INCREASE)

    def decreases_by(self, *, diff: float | None = None, frac: float | None = None) -> MetricChangeFilter:
        """Fires when the metric falls by at least ``diff`` or ``frac``."""
        return self.changes_by(diff=diff, frac=frac, _dir=ChangeDir.DECREASE)


class MetricVal(_Operand):
    """A single logged value: ``RunEvent.metric("loss")``."""

    def max(self, window: int) -> MetricAgg:
        return MetricAgg(name=self.name, agg=Agg.MAX, window=window)

    def min(self, window: int) -> MetricAgg:
        return MetricAgg(name=self.name, agg=Agg.MIN, window=window)

    def avg(self, window: int) -> MetricAgg:
        return MetricAgg(name=self.name, agg=Agg.AVERAGE, window=window)

    def mean(self, window: int) -> MetricAgg:
        return self.avg(window)

    def zscore(self, window: int = 30) -> ZScoreMetricOperand:
        return ZScoreMetricOperand(name=self.name, window=window)

    def is_nonfinite(self) -> MetricNonFiniteFilter:
        """Fires when a NaN, inf or -inf value is logged (again only after a finite value)."""
        return MetricNonFiniteFilter(name=self.name)


class MetricAgg(_Operand):
    """An aggregate of the last ``window`` values: ``RunEvent.metric("loss").avg(5)``."""

    agg: Annotated[Agg, Field(alias="agg_op")]
    window: Annotated[int, Field(alias="window_size")]

    @field_validator("window", mode="before")
    @classmethod
    def _win(cls, value: Any) -> Any:
        return _window(value, "window")

    def _label(self) -> str:
        return f"RunEvent.metric({self.name!r}).{_AGG_NAMES[self.agg]}({self.window})"


class ZScoreMetricOperand(Model):
    """``RunEvent.metric(m).zscore(n)``: compare with ``> t`` (INCREASE), ``< -t`` (DECREASE) or ``abs(...) > t``."""

    name: str
    window: int = 30
    is_absolute: bool = False

    @field_validator("window", mode="before")
    @classmethod
    def _win(cls, value: Any) -> Any:
        return _window(value, "window")

    def gt(self, value: float, /) -> MetricZScoreFilter:
        value = finite_number(value, "z-score threshold")
        if value <= 0:
            raise ValueError(
                f"zscore({self.window}) > {value!r}: the threshold must be positive "
                "(zscore(n) > t watches for increases, zscore(n) < -t for decreases)"
            )
        direction = ChangeDir.ANY if self.is_absolute else ChangeDir.INCREASE
        return MetricZScoreFilter(name=self.name, window=self.window, threshold=value, change_dir=direction)

    def lt(self, value: float, /) -> MetricZScoreFilter:
        value = finite_number(value, "z-score threshold")
        if self.is_absolute:
            raise ValueError(
                f"abs(zscore({self.window})) < {value!r} is not supported: use abs(zscore(n)) > t to watch both ways"
            )
        if value >= 0:
            raise ValueError(
                f"zscore({self.window}) < {value!r}: the threshold must be negative, e.g. zscore({self.window}) < "
                f"-{value!r} (decreases), or use zscore({self.window}) > {value!r} (increases) or "
                f"abs(zscore({self.window})) > {value!r} (either way)"
            )
        return MetricZScoreFilter(name=self.name, window=self.window, threshold=-value, change_dir=ChangeDir.DECREASE)

    def __gt__(self, other: Any) -> MetricZScoreFilter:
        return self.gt(other)

    def __ge__(self, other: Any) -> MetricZScoreFilter:
        return self.gt(other)

    def __lt__(self, other: Any) -> MetricZScoreFilter:
        return self.lt(other)

    def __le__(self, other: Any) -> MetricZScoreFilter:
        return self.lt(other)

    def __eq__(self, other: object) -> Any:
        if isinstance(other, _Operand | ZScoreMetricOperand):
            return Model.__eq__(self, other)
        raise TypeError(
            f"zscore({self.window}) == ... is not a rule: write zscore(n) > t (increases), zscore(n) < -t "
            "(decreases) or abs(zscore(n)) > t (either way)"
        )

    def __ne__(self, other: object) -> Any:
        if isinstance(other, _Operand | ZScoreMetricOperand):
            return not Model.__eq__(self, other)
        return self.__eq__(other)

    def __hash__(self) -> int:
        return hash((type(self), *self.__dict__.values()))

    def __abs__(self) -> ZScoreMetricOperand:
        return self.model_copy(update={"is_absolute": True})

    def abs(self) -> ZScoreMetricOperand:
        return self.__abs__()


# -- run state -----------------------------------------------------------------------------------------------
class RunState(LenientStrEnum):
    """States a run-state event can watch; CRASHED is an alias of FAILED."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CRASHED = "FAILED"

    @classmethod
    def parse(cls, value: Any) -> RunState:
        try:
            return value if isinstance(value, RunState) else cls(value)
        except ValueError:
            raise ValueError(
                f"state must be one of RUNNING, FINISHED, FAILED (CRASHED is an alias of FAILED; any case), "
                f"not {value!r}"
            ) from None


class StateFilter(Model):
    """The run entered one of ``states``: W&B's ``{"states": [...]}`` (deduplicated, in alphabetical order).

    An empty list is a valid filter here, as in W&B; an ``OnRunState`` with no state (it could never fire) is refused.
    """

    states: list[RunState]

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("kind") == "state":
            return {k: v for k, v in data.items() if k != "kind"}
        return data

    @field_validator("states", mode="before")
    @classmethod
    def _states(cls, value: Any) -> Any:
        if isinstance(value, str | RunState):
            value = [value]
        if not isinstance(value, Iterable):
            raise ValueError(f"states must be a list of run states, not {value!r}")
        return sorted({RunState.parse(v) for v in value}, key=lambda state: state.value)

    @property
    def event_type(self) -> EventType:
        return EventType.RUN_STATE

    @property
    def kind(self) -> str:
        """``"state"`` (runalert's earlier tag)."""
        return "state"

    def __and__(self, other: Any) -> RunStateFilter:
        if isinstance(other, FieldFilter | And | Or | Not):
            return RunStateFilter(run=other, state=self)
        return NotImplemented

    def __rand__(self, other: Any) -> RunStateFilter:
        return self.__and__(other)

    def describe(self) -> str:
        return "state in " + ", ".join(s.value for s in self.states)


class StateOperand:
    """``RunEvent.state``: ``== "finished"``, ``.eq(...)``, ``.in_([...])``."""

    def eq(self, state: str | RunState, /) -> StateFilter:
        return StateFilter(states=[state])

    def in_(self, states: Iterable[str | RunState], /) -> StateFilter:
        return StateFilter(states=list(states))

    def __eq__(self, other: object) -> StateFilter:  # type: ignore[override]
        if isinstance(other, str | RunState):
            return self.eq(other)
        raise TypeError(f"RunEvent.state can be compared with a state name, not {type(other).__name__}")

    def __hash__(self) -> int:
        return hash("RunEvent.state")

    def __repr__(self) -> str:
        return "RunEvent.state"


# -- a metric/state filter with a run filter -------------------------------------------------------------------
def _json_object(data: Any, what: str) -> Any:
    if isinstance(data, str | bytes):
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ValueError(f"{what} must be a JSON object (or its JSON text): {exc}") from None
    return data


class RunMetricFilter(Model):
    """A metric filter plus a run filter, as W&B's JSON: ``{"run_filter": {"$and": [...]}, "run_metric_filter":
    {"threshold_filter": {...}}}``. ``run`` (every run by default) is always an ``$and``, as W&B stores it.

    ``metric`` is the metric filter itself (``event.filter.metric.threshold_filter`` also works, as in W&B).
    """

    run: RunFilter = Field(default_factory=And, alias="run_filter")
    metric: Annotated[MetricFilter, Field(alias="run_metric_filter")]

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, data: Any) -> Any:
        if isinstance(data, METRIC_FILTERS):
            return {"metric": data}
        data = _json_object(data, "a run metric filter")
        if isinstance(data, Mapping):
            data = {k: v for k, v in data.items() if not (k == "kind" and v == "run_metric")}
            legacy = data.pop("metric_filter", None)  # W&B's deprecated field: a threshold filter
            if legacy is not None and "metric" not in data and "run_metric_filter" not in data:
                data["run_metric_filter"] = {"threshold_filter": _json_object(legacy, "metric_filter")}
        return data

    @field_validator("run", mode="after")
    @classmethod
    def _run(cls, value: Any) -> Any:
        return run_event_filter(value)

    @field_serializer("metric", mode="wrap")
    def _wrap_metric(self, value: Any, handler: Any) -> dict[str, Any]:
        key = {v: k for k, v in _WRAPPER_KEYS.items()}[type(value)]
        return {key: handler(value)}

    @property
    def event_type(self) -> EventType:
        return self.metric.event_type

    def __bool__(self) -> bool:
        raise _no_bool(self)

    def __and__(self, other: Any) -> RunMetricFilter:
        if isinstance(other, FieldFilter | And | Or | Not):
            return self.model_copy(update={"run": run_event_filter(self.run & other)})
        return NotImplemented

    def __rand__(self, other: Any) -> RunMetricFilter:
        return self.__and__(other)


class RunStateFilter(Model):
    """A state filter plus a run filter, as W&B's JSON: ``{"run_filter": {"$and": [...]}, "run_state_filter":
    {"states": [...]}}``."""

    run: RunFilter = Field(default_factory=And, alias="run_filter")
    state: Annotated[StateFilter, Field(alias="run_state_filter")]

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, data: Any) -> Any:
        if isinstance(data, StateFilter):
            return {"state": data}
        data = _json_object(data, "a run state filter")
        if isinstance(data, Mapping):
            data = {k: v for k, v in data.items() if not (k == "kind" and v == "run_state")}
        return data

    @field_validator("run", mode="after")
    @classmethod
    def _run(cls, value: Any) -> Any:
        return run_event_filter(value)

    @property
    def event_type(self) -> EventType:
        return EventType.RUN_STATE

    def __and__(self, other: Any) -> RunStateFilter:
        if isinstance(other, FieldFilter | And | Or | Not):
            return self.model_copy(update={"run": run_event_filter(self.run & other)})
        return NotImplemented

    def __rand__(self, other: Any) -> RunStateFilter:
        return self.__and__(other)
