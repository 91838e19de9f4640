"""Formatting helpers for alert texts: the host, durations, values, one-line texts and the last frames of a traceback.

Exception texts leave the process (Slack, email, webhooks), so terminal escape codes (colours and bold that
Keras and rich put in their messages) are stripped from them: :func:`strip_ansi`.
"""

from __future__ import annotations

import math
import re
import socket
import traceback
from collections.abc import Mapping
from typing import Any

__all__ = ["HOST", "format_duration", "format_frames", "format_value", "one_line", "strip_ansi"]

HOST = socket.gethostname()

# ANSI/VT100 escape sequences: CSI (colours, bold, cursor moves: ESC [ ... final byte, or the 8-bit CSI), OSC
# (hyperlinks, titles: ESC ] ... BEL or ESC \\) and the other escapes (ESC, intermediate bytes, a final byte).
_ANSI = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (``"\\x1b[1mloss\\x1b[0m"`` -> ``"loss"``)."""
    return _ANSI.sub("", text) if "\x1b" in text or "\x9b" in text else text


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, without terminal escape codes, cut to ``limit`` characters."""
    flat = " ".join(strip_ansi(str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_frames(exc: BaseException, limit: int = 5, code_limit: int = 160) -> str:
    """The last ``limit`` frames of ``exc``'s traceback, most recent call last, as plain text (no escape codes)."""
    frames = traceback.extract_tb(exc.__traceback__)[-limit:] if exc.__traceback__ is not None else []
    lines = []
    for frame in frames:
        lines.append(strip_ansi(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}'))
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
