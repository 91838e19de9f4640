"""Run (and artifact) filters: ``RunEvent.name.contains("bert") & (RunEvent.user == "ana")``.

A filter is a small tree of pydantic models (``field``, ``and``, ``or``, ``not``) that serialises to JSON and
is evaluated against a run's attributes with :meth:`matches`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, Union

import re2
from pydantic import Field, field_validator, model_validator

from runalert.automations._base import Model

__all__ = [
    "And",
    "FieldFilter",
    "FilterableField",
    "Not",
    "Or",
    "RunFilter",
    "matches_everything",
]

FieldName = Literal["display_name", "username", "tags", "alias", "tag", "artifact_name", "collection"]
"""Attributes a filter can test: runs (``display_name``, ``username``, ``tags``), artifacts (the rest)."""

Op = Literal["$eq", "$ne", "$in", "$nin", "$contains", "$regex"]

_OPS: tuple[str, ...] = ("$eq", "$ne", "$in", "$nin", "$contains", "$regex")


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


class FieldFilter(_Combinable, Model):
    """One test on one attribute: ``{"field": "display_name", "op": "$contains", "value": "bert"}``.

    On list attributes (``tags``, ``alias``), ``$eq``/``$contains`` mean "is one of them", ``$in`` "any of them
    is in the list", ``$regex`` "any of them matches" (a search, in RE2 syntax); ``$ne``/``$nin`` are their negations.
    """

    kind: Literal["field"] = "field"
    field: FieldName
    op: Op
    value: str | list[str]

    @field_validator("op", mode="before")
    @classmethod
    def _op(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.startswith("$"):
            value = "$" + value.strip().lower()
        if value not in _OPS:
            raise ValueError(f"op must be one of {', '.join(_OPS)}, not {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> FieldFilter:
        if self.op in ("$in", "$nin"):
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

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        actual = attrs.get(self.field)
        if actual is None:
            return self.op in ("$ne", "$nin")
        items: Sequence[str] = [str(a) for a in actual] if isinstance(actual, list | tuple | set) else [str(actual)]
        single = not isinstance(actual, list | tuple | set)
        value = self.value
        if self.op == "$eq":
            return value in items
        if self.op == "$ne":
            return value not in items
        if self.op == "$in":
            return any(item in value for item in items)
        if self.op == "$nin":
            return not any(item in value for item in items)
        if self.op == "$contains":
            return str(value) in items[0] if single else value in items
        pattern = _pattern(str(value))
        return any(pattern.search(item) for item in items)

    def __repr__(self) -> str:
        return f"{self.field} {self.op} {self.value!r}"


class And(_Combinable, Model):
    """All of ``filters`` (an empty ``And`` matches every run)."""

    kind: Literal["and"] = "and"
    filters: list[RunFilter] = Field(default_factory=list)

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        return all(f.matches(attrs) for f in self.filters)


class Or(_Combinable, Model):
    """Any of ``filters`` (an empty ``Or`` matches nothing)."""

    kind: Literal["or"] = "or"
    filters: list[RunFilter] = Field(default_factory=list)

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        return any(f.matches(attrs) for f in self.filters)


class Not(_Combinable, Model):
    """The negation of ``filter``."""

    kind: Literal["not"] = "not"
    filter: RunFilter

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        return not self.filter.matches(attrs)


RunFilter = Annotated[Union[FieldFilter, And, Or, Not], Field(discriminator="kind")]  # noqa: UP007
And.model_rebuild()
Or.model_rebuild()
Not.model_rebuild()


def matches_everything(node: Any) -> bool:
    """Whether ``node`` is the empty filter."""
    return isinstance(node, And) and not node.filters


class FilterableField:
    """``RunEvent.name``, ``RunEvent.user``, ``RunEvent.tags``: builds :class:`FieldFilter` objects."""

    def __init__(self, field: str) -> None:
        self.field = field

    def _make(self, op: str, value: Any) -> FieldFilter:
        return FieldFilter(field=self.field, op=op, value=value)

    def eq(self, value: str) -> FieldFilter:
        return self._make("$eq", value)

    def ne(self, value: str) -> FieldFilter:
        return self._make("$ne", value)

    def in_(self, values: Iterable[str]) -> FieldFilter:
        return self._make("$in", _as_list(values, "in_"))

    def not_in(self, values: Iterable[str]) -> FieldFilter:
        return self._make("$nin", _as_list(values, "not_in"))

    def contains(self, text: str) -> FieldFilter:
        return self._make("$contains", text)

    def matches_regex(self, pattern: str) -> FieldFilter:
        return self._make("$regex", pattern)

    def __eq__(self, other: object) -> FieldFilter:  # type: ignore[override]
        return self.eq(other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> FieldFilter:  # type: ignore[override]
        return self.ne(other)  # type: ignore[arg-type]

    def __hash__(self) -> int:
        return hash(self.field)

    def __repr__(self) -> str:
        return f"FilterableField({self.field!r})"


def _as_list(values: Iterable[str], method: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"{method}() takes a list of strings, not {values!r}")
    return [str(v) for v in values]
