"""Values for the monitor's texts: which exceptions are preemptions or consequences of another rank's failure,
and which values a stage summary shows. Pure functions, no state."""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from runalert.nonfinite import FLOAT, INT, NUMPY, TENSOR, base_key, value_kind

__all__ = ["PREEMPTION_TYPES", "is_consequential", "is_preemption", "summary_values", "to_number"]

PREEMPTION_TYPES = frozenset({"SIGTERMException"})  # Lightning raises this after SIGTERM

# A failure on one rank makes the others fail later in a collective; these errors look like that.
_CONSEQUENTIAL = re.compile(
    r"NCCL|gloo|ProcessGroup|collective|connection closed by peer|connection reset by peer|broken pipe|"
    r"Socket Timeout|timed out|timeout|heartbeat|peer .*(closed|died|failed)|store.*(closed|failed)",
    re.IGNORECASE,
)
_CONSEQUENTIAL_TYPES = frozenset(
    {
        "DistError",
        "DistBackendError",
        "DistNetworkError",
        "DistStoreError",
        "ConnectionResetError",
        "BrokenPipeError",
        "ConnectionAbortedError",
    }
)


def is_preemption(exc: BaseException) -> bool:
    """Whether ``exc`` says the process got SIGTERM (Lightning's ``SIGTERMException``)."""
    return type(exc).__name__ in PREEMPTION_TYPES


def is_consequential(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause or context) looks like the consequence of another rank's failure: a
    collective, ``torch.distributed`` or connection error."""
    for error in (exc, exc.__cause__, exc.__context__):
        if error is None:
            continue
        tp = type(error)
        if tp.__name__ in _CONSEQUENTIAL_TYPES or tp.__module__.startswith("torch.distributed"):
            return True
        if _CONSEQUENTIAL.search(str(error)):
            return True
    return False


def to_number(value: Any) -> float | int | None:
    """``value`` as a number for a summary (a one-element tensor is read: only at a stage's end), else ``None``."""
    kind = value_kind(value)
    if kind in (FLOAT, INT):
        return value  # type: ignore[no-any-return]
    if kind in (TENSOR, NUMPY):
        try:
            if kind == TENSOR and value.numel() != 1:
                return None
            return float(value.item() if kind == TENSOR else value)
        except Exception:
            return None
    return None


def summary_values(final: Mapping[str, Any], exclude: Collection[str]) -> dict[str, Any]:
    """The values a summary shows: without keys matching ``exclude`` (shell-style, case-insensitive: framework
    noise), and without a filtered value beside a non-finite one of the same name from its source
    (transformers' logged ``loss=0`` beside ``loss (model output)=nan``)."""
    patterns = [pattern.lower() for pattern in exclude]
    shown: dict[str, Any] = {}
    for key, value in final.items():
        lowered = key.lower()
        if any(fnmatch.fnmatchcase(lowered, pattern) for pattern in patterns):
            continue
        shown[key] = value
    for key, value in list(shown.items()):
        base = base_key(key)
        if base != key and base in shown and isinstance(value, float) and not math.isfinite(value):
            del shown[base]
    return shown
