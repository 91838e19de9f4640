"""What every automations model shares: strict pydantic config and case-insensitive string enums."""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["LenientStrEnum", "Model", "finite_number"]


class Model(BaseModel):
    """Immutable, strict (unknown fields are errors), constructible by field name or alias.

    Dumped by alias: a field's alias is its name in W&B's JSON (``window_size``, ``agg_op``, ``integrationID``), so
    ``model_dump()`` gives W&B's form while the Python attributes keep W&B's Python names (``window``, ``agg``).
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class LenientStrEnum(str, Enum):
    """A string enum that accepts its values and its aliases in any case (``"avg"`` -> ``AVERAGE``)."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            key = value.strip().upper()
            for member in cls:
                if member.value == key:
                    return member
            if key in cls.__members__:
                return cls.__members__[key]
        return None

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:  # as W&B's: the member's name (``EventType.LINK_ARTIFACT`` -> ``LINK_ARTIFACT``)
        return self.name


def finite_number(value: Any, field: str) -> float | int:
    """``value`` if it is a finite int or float (not a bool), else a ``ValueError`` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field} must be a number (int or float), not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, not {value!r}")
    return value
