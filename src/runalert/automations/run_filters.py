"""Run (and artifact) filters in W&B's MongoDB-style JSON: ``RunEvent.name.contains("bert") & (RunEvent.user == "a")``.

A filter is a small tree of pydantic models that dumps to W&B's JSON form and is evaluated against a run's (or an
artifact event's) attributes with :meth:`matches`::

    {"display_name": {"$contains": "bert"}}                         # FieldFilter
    {"$and": [{"display_name": {"$contains": "bert"}}, ...]}         # And
    {"$or": [...]}, {"$not": {...}}                                  # Or, Not

On input the same JSON is read (also as a JSON string, as W&B's GraphQL sends it), with the shorthands MongoDB allows
(``{"tags": "prod"}`` is ``$eq``; several operators on one field, or several fields in one object, are an ``$and``;
``$nor`` is ``$not`` of an ``$or``), and runalert's earlier form (``{"kind": "field", "field": ..., "op": ...,
"value": ...}``, ``{"kind": "and", "filters": [...]}``) so that stored automations and users' files keep working.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args

import re2
from pydantic import BeforeValidator, Field, model_serializer, model_validator

from runalert.automations._base import Model

__all__ = [
    "And",
    "FieldFilter",
    "FilterableField",
    "Not",
    "Or",
    "RunFilter",
    "artifact_event_filter",
    "matches_everything",
    "parse_run_filter",
    "run_event_filter",
    "simplify",
]

FieldName = Literal["display_name", "username", "tags", "alias", "tag", "artifact_name", "collection", "group"]
"""Attributes a filter can test: runs (``display_name``, ``username``, ``tags``, ``group``), artifacts (the rest)."""

Op = Literal["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$contains", "$regex", "$exists"]

_OPS: tuple[str, ...] = get_args(Op)
_FIELDS: tuple[str, ...] = get_args(FieldName)
_FIELD_ALIASES = {"name": "display_name", "user": "username", "tag_name": "tag"}
_ORDER_OPS = {"$gt", "$gte", "$lt", "$lte"}


class _Combinable:
    """``&``, ``|`` and ``~`` for run filters."""

    def __and__(self, other: Any) -> Any:
        if isinstance(other, FieldFilter | And | Or | Not):
            return And(filters=[*_flatten(self, And), *_flatten(other, And)])
        return NotImplemented

    def __or__(self, other: Any) -> Any:
        if isinstance(other, FieldFilter | And | Or | Not):
            return Or(filters=[*_flatten(self, Or), *_flatten(other, Or)])
        return NotImplemented

    def __invert__(self) -> Any:
        if isinstance(self, Not):
            return self.filter
        return Not(filter=self)


def _flatten(node: Any, kind: type) -> list[Any]:
    return list(getattr(node, "filters", ())) if isinstance(node, kind) else [node]


@functools.lru_cache(maxsize=1024)
def _pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2, whose matching time is linear in the text's length.

    A ``$regex`` filter runs on the server against names that clients choose; with a backtracking engine
    (``re``) a pattern such as ``^(a+)+$`` against ``"a" * 40 + "!"`` would hold the server for hours. RE2 is
    also the syntax W&B's own ``$regex`` filters use.
    """
    return re2.compile(pattern)


def _field(value: Any) -> Any:
    if isinstance(value, str):
        value = _FIELD_ALIASES.get(value, value)
    if value not in _FIELDS:
        raise ValueError(f"filter field must be one of {', '.join(_FIELDS)}, not {value!r}")
    return value


class FieldFilter(_Combinable, Model):
    """One test on one attribute: ``{"display_name": {"$contains": "bert"}}`` (attributes ``field``, ``op``, ``value``).

    On list attributes (``tags``, ``alias``), ``$eq``/``$contains`` mean "is one of them", ``$in`` "any of them
    is in the list", ``$regex`` "any of them matches" (a search, in RE2 syntax), ``$gt``/``$gte``/``$lt``/``$lte``
    "any of them compares so" (strings compare by code point); ``$ne``/``$nin`` are the negations of ``$eq``/``$in``.
    ``$exists``: whether the attribute has a value.
    """

    field: Annotated[FieldName, BeforeValidator(_field)]
    op: Op
    value: str | list[str] | bool

    @model_validator(mode="before")
    @classmethod
    def _mongo(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "field" not in data and len(data) == 1:
            ((name, ops),) = data.items()
            if isinstance(name, str) and not name.startswith("$"):
                if not isinstance(ops, Mapping):
                    ops = {"$eq": ops}
                if len(ops) != 1:
                    raise ValueError(f"one operator per FieldFilter, not {sorted(ops)}: parse it as a RunFilter")
                ((op, value),) = ops.items()
                data = {"field": name, "op": op, "value": value}
        if isinstance(data, Mapping) and data.get("kind") == "field":  # runalert's earlier form
            data = {k: v for k, v in data.items() if k != "kind"}
        if isinstance(data, Mapping) and isinstance(data.get("op"), str):
            op = data["op"].strip()
            op = op if op.startswith("$") else "$" + op.lower()
            if op not in _OPS:
                raise ValueError(f"op must be one of {', '.join(_OPS)}, not {data['op']!r}")
            data = {**data, "op": op}
        return data

    @model_validator(mode="after")
    def _check(self) -> FieldFilter:
        if self.op == "$exists":
            if not isinstance(self.value, bool):
                raise ValueError(f"value for $exists must be true or false, not {self.value!r}")
        elif self.op in ("$in", "$nin"):
            if not isinstance(self.value, list):
                raise ValueError(f"value for {self.op} must be a list of strings, not {self.value!r}")
        elif not isinstance(self.value, str):
            raise ValueError(f"value for {self.op} must be a string, not {self.value!r}")
        if self.op == "$regex":
            try:
                _pattern(str(self.value))
            except re2.error as exc:
                raise ValueError(
                    f"value {self.value!r} is not a valid regular expression in RE2 syntax (as W&B's; no "
                    f"backreferences or lookaround, so that matching takes linear time): {exc}"
                ) from None
        return self

    @model_serializer(mode="plain")
    def _to_mongo(self) -> dict[str, Any]:
        return {self.field: {self.op: self.value}}

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        """Whether the attributes ``attrs`` (``display_name``, ``username``, ``tags`` ...) pass this test."""
        actual = attrs.get(self.field)
        if self.op == "$exists":
            present = actual is not None and actual not in ([], "")
            return present is self.value
        if actual is None:
            return self.op in ("$ne", "$nin")
        items: Sequence[str] = [str(a) for a in actual] if isinstance(actual, list | tuple | set) else [str(actual)]
        single = not isinstance(actual, list | tuple | set)
        value = self.value
        op = self.op
        if op == "$eq":
            return value in items
        if op == "$ne":
            return value not in items
        if op == "$in":
            return any(item in value for item in items)  # type: ignore[operator]
        if op == "$nin":
            return not any(item in value for item in items)  # type: ignore[operator]
        if op == "$contains":
            return str(value) in items[0] if single else value in items
        if op in _ORDER_OPS:
            text = str(value)
            compare = {
                "$gt": str.__gt__,
                "$gte": str.__ge__,
                "$lt": str.__lt__,
                "$lte": str.__le__,
            }[op]
            return any(compare(item, text) for item in items)
        pattern = _pattern(str(value))
        return any(pattern.search(item) for item in items)

    def __repr__(self) -> str:
        return f"FilterExpr({self.field}: {self.op} {self.value!r})"


class And(_Combinable, Model):
    """All of ``filters`` (an empty ``And`` matches every run): ``{"$and": [...]}``."""

    filters: list[RunFilter] = Field(default_factory=list, alias="$and")

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        return _legacy_group(data, "and")

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        """Whether every filter matches ``attrs``."""
        return all(f.matches(attrs) for f in self.filters)

    @classmethod
    def wrap(cls, node: Any) -> And:
        """``node`` if it is an ``And``, else an ``And`` of it (W&B's wrapping of run filters)."""
        return node if isinstance(node, And) else And(filters=[node])

    def __repr__(self) -> str:
        return f"And({', '.join(map(repr, self.filters))})"


class Or(_Combinable, Model):
    """Any of ``filters`` (an empty ``Or`` matches nothing): ``{"$or": [...]}``."""

    filters: list[RunFilter] = Field(default_factory=list, alias="$or")

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        return _legacy_group(data, "or")

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        """Whether any filter matches ``attrs``."""
        return any(f.matches(attrs) for f in self.filters)

    @classmethod
    def wrap(cls, node: Any) -> Or:
        """``node`` if it is an ``Or``, else an ``Or`` of it."""
        return node if isinstance(node, Or) else Or(filters=[node])

    def __repr__(self) -> str:
        return f"Or({', '.join(map(repr, self.filters))})"


class Not(_Combinable, Model):
    """The negation of ``filter``: ``{"$not": {...}}``."""

    filter: RunFilter = Field(alias="$not")

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("kind") == "not":
            return {"filter": data.get("filter")}
        return data

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        """Whether ``filter`` does not match ``attrs``."""
        return not self.filter.matches(attrs)

    def __repr__(self) -> str:
        return f"Not({self.filter!r})"


def _legacy_group(data: Any, kind: str) -> Any:
    if isinstance(data, Mapping) and data.get("kind") == kind:
        return {"filters": data.get("filters", [])}
    return data


def parse_run_filter(raw: Any) -> Any:
    """A filter node from W&B's JSON (or a JSON string of it), runalert's earlier form, or a node.

    Errors name the operator or field at fault and the allowed ones.
    """
    if isinstance(raw, FieldFilter | And | Or | Not):
        return raw
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"a filter must be a JSON object (or its JSON text): {exc}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"a filter must be a JSON object such as {{'display_name': {{'$eq': 'x'}}}}, not {raw!r}")
    kind = raw.get("kind")
    if kind in ("field", "and", "or", "not"):  # runalert's earlier form
        models: dict[str, type[Model]] = {"field": FieldFilter, "and": And, "or": Or, "not": Not}
        return models[kind].model_validate(raw)
    if not raw:
        return And()
    nodes: list[Any] = []
    for key, value in raw.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list):
                raise ValueError(f"{key} takes a list of filters, not {value!r}")
            group = And if key == "$and" else Or
            nodes.append(group(filters=[parse_run_filter(v) for v in value]))
        elif key == "$nor":
            if not isinstance(value, list):
                raise ValueError(f"$nor takes a list of filters, not {value!r}")
            nodes.append(Not(filter=Or(filters=[parse_run_filter(v) for v in value])))
        elif key == "$not":
            nodes.append(Not(filter=parse_run_filter(value)))
        elif isinstance(key, str) and key.startswith("$"):
            raise ValueError(f"unknown filter operator {key!r}: one of $and, $or, $nor, $not, or a field name")
        elif isinstance(value, Mapping) and len(value) != 1:
            if not value:
                raise ValueError(f"filter on {key!r} names no operator (one of {', '.join(_OPS)})")
            nodes.extend(FieldFilter.model_validate({key: {op: v}}) for op, v in value.items())
        else:
            nodes.append(FieldFilter.model_validate({key: value}))
    return nodes[0] if len(nodes) == 1 else And(filters=nodes)


RunFilter = Annotated[Union[FieldFilter, And, Or, Not], BeforeValidator(parse_run_filter)]  # noqa: UP007
And.model_rebuild()
Or.model_rebuild()
Not.model_rebuild()


def simplify(node: Any) -> Any:
    """``node`` with nested ``And``/``Or`` flattened, single-member groups unnested and ``~~x`` = ``x``.

    An empty group inside a group of its kind is dropped; an empty group at the top stays (``And()``: every run).
    """
    if isinstance(node, And | Or):
        kind = type(node)
        members: list[Any] = []
        for member in node.filters:
            child = simplify(member)
            if isinstance(child, kind):  # an empty group of the same kind is its identity: it goes
                members.extend(child.filters)
            else:  # an empty group of the other kind stays (an empty $or inside an $and matches nothing)
                members.append(child)
        return members[0] if len(members) == 1 else kind(filters=members)
    if isinstance(node, Not):
        inner = simplify(node.filter)
        return inner.filter if isinstance(inner, Not) else Not(filter=inner)
    return node


def run_event_filter(node: Any) -> And:
    """A run event's run filter as W&B stores it: simplified, in an ``$and``."""
    return And.wrap(simplify(node))


def artifact_event_filter(node: Any) -> Or:
    """An artifact event's filter as W&B stores it: ``{"$or": [{"$and": [...]}]}``."""
    if isinstance(node, Or) and len(node.filters) == 1 and isinstance(node.filters[0], And):
        return node
    return Or.wrap(And.wrap(simplify(node)))


def matches_everything(node: Any) -> bool:
    """Whether ``node`` is the empty filter (``{"$and": []}``, or ``{"$or": [{"$and": []}]}``)."""
    if isinstance(node, Or) and len(node.filters) == 1:
        node = node.filters[0]
    return isinstance(node, And) and not node.filters


class FilterableField:
    """``RunEvent.name``, ``RunEvent.user``, ``ArtifactEvent.alias`` ...: builds :class:`FieldFilter` objects.

    ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` build filters (``$eq`` ... ``$lte``; strings compare by code point).
    """

    def __init__(self, field: str) -> None:
        self.field = field

    def _make(self, op: str, value: Any) -> FieldFilter:
        return FieldFilter(field=self.field, op=op, value=value)

    def eq(self, value: str, /) -> FieldFilter:
        return self._make("$eq", value)

    def ne(self, value: str, /) -> FieldFilter:
        return self._make("$ne", value)

    def gt(self, value: str, /) -> FieldFilter:
        return self._make("$gt", value)

    def gte(self, value: str, /) -> FieldFilter:
        return self._make("$gte", value)

    def lt(self, value: str, /) -> FieldFilter:
        return self._make("$lt", value)

    def lte(self, value: str, /) -> FieldFilter:
        return self._make("$lte", value)

    def in_(self, values: Iterable[str], /) -> FieldFilter:
        return self._make("$in", _as_list(values, "in_"))

    def not_in(self, values: Iterable[str], /) -> FieldFilter:
        return self._make("$nin", _as_list(values, "not_in"))

    def contains(self, text: str, /) -> FieldFilter:
        return self._make("$contains", text)

    def matches_regex(self, pattern: str, /) -> FieldFilter:
        return self._make("$regex", pattern)

    def exists(self, exists: bool = True, /) -> FieldFilter:
        return self._make("$exists", exists)

    def __eq__(self, other: object) -> FieldFilter:  # type: ignore[override]
        return self.eq(other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> FieldFilter:  # type: ignore[override]
        return self.ne(other)  # type: ignore[arg-type]

    def __gt__(self, other: Any) -> FieldFilter:
        return self.gt(other)

    def __ge__(self, other: Any) -> FieldFilter:
        return self.gte(other)

    def __lt__(self, other: Any) -> FieldFilter:
        return self.lt(other)

    def __le__(self, other: Any) -> FieldFilter:
        return self.lte(other)

    def __hash__(self) -> int:
        return hash(self.field)

    def __str__(self) -> str:
        return self.field

    def __repr__(self) -> str:
        return f"FilterableField({self.field!r})"


def _as_list(values: Iterable[str], method: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"{method}() takes a list of strings, not {values!r}")
    return [str(v) for v in values]
