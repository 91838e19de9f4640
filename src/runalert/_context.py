"""Context put on alerts: the host, durations, values and the last frames of a traceback."""

from __future__ import annotations

import math
import socket
import traceback
from collections.abc import Mapping
from typing import Any

__all__ = ["HOST", "format_duration", "format_frames", "format_value", "one_line"]

HOST = socket.gethostname()


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_frames(exc: BaseException, limit: int = 5, code_limit: int = 160) -> str:
    """The last ``limit`` frames of ``exc``'s traceback, most recent call last, as plain text."""
    frames = traceback.extract_tb(exc.__traceback__)[-limit:] if exc.__traceback__ is not None else []
    lines = []
    for frame in frames:
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
        if frame.line:
            lines.append("    " + one_line(frame.line, code_limit))
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """``3725.2`` → ``1h 2m 5s``; under a minute with one decimal."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s"


def format_value(value: Any) -> str:
    """A metric value for a message: floats with 6 significant digits, the rest as ``str``."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_metrics(metrics: Mapping[str, Any], limit: int = 20) -> str:
    """``a=1, b=0.5`` sorted by name, at most ``limit`` entries."""
    items = sorted(metrics.items())
    text = ", ".join(f"{key}={format_value(value)}" for key, value in items[:limit])
    if len(items) > limit:
        text += f", … ({len(items) - limit} more)"
    return text
