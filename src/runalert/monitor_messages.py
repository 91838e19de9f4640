"""The wording of the monitor's alerts, as pure functions: what the run was doing goes in, a :class:`Message`
(title, text, level) comes out. No state, no I/O: each is tested on its own (``tests/monitor/test_messages.py``).

Steps and epochs follow ``docs/semantics.md``: a crash is "at step N", N the step being computed; epochs are
1-based.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runalert._formatting import format_duration, format_metrics, one_line
from runalert.alert import MAX_TITLE_LENGTH, AlertLevel

__all__ = [
    "Message",
    "crashed",
    "interrupted",
    "nonfinite",
    "preempted",
    "rank_failure",
    "received_signal",
    "recovered",
    "stage_summary",
    "stalled",
    "title",
    "where_text",
]


@dataclass(frozen=True)
class Message:
    """An alert's wording: ``title`` (one line, at most ``MAX_TITLE_LENGTH``), ``text`` and ``level``."""

    title: str
    text: str
    level: AlertLevel


def title(text: str) -> str:
    """``text`` as an alert title: one line, cut with an ellipsis to ``MAX_TITLE_LENGTH`` characters."""
    text = one_line(text, MAX_TITLE_LENGTH)
    return text if len(text) <= MAX_TITLE_LENGTH else text[: MAX_TITLE_LENGTH - 1] + "…"


def where_text(step: int | None, *, stage: str | None, last_step: int | None, epoch: int | None) -> str:
    """Where the run was: "at step N, epoch E" (N: the step being computed); without a step, the stage (and the
    last step handed over), or start-up."""
    if step is not None:
        text = f"at step {step}"
    elif stage is not None:
        text = f"during {stage}" + (f" (after step {last_step})" if last_step is not None else "")
    else:
        text = "during start-up (before the first step)"
    if epoch is not None:
        text += f", epoch {epoch}"
    return text


def interrupted(run: str | None, where: str) -> Message:
    """KeyboardInterrupt (Ctrl-C, SIGINT)."""
    return Message("Run interrupted", f"Run {run} was interrupted (KeyboardInterrupt) {where}.", AlertLevel.WARN)


def preempted(run: str | None, where: str) -> Message:
    """SIGTERM: a preemption or a cancellation."""
    text = f"Run {run} received SIGTERM (preemption or cancellation) {where}."
    return Message("Run preempted (SIGTERM)", text, AlertLevel.ERROR)


def rank_failure(run: str | None, *, rank: int, where: str, exc_type: str, message: str, frames: str) -> Message:
    """A rank failed in a way that looks like a consequence of another rank's failure (a collective error)."""
    text = (
        f"Rank {rank} of run {run} failed {where} with {exc_type}: {message}\n"
        "This looks like a consequence of a failure on another rank (a collective or connection error); "
        "look for that rank's crash alert.\n\n"
        f"Last frames (most recent call last):\n{frames}"
    )
    return Message(title(f"Rank {rank} failed after another rank"), text, AlertLevel.WARN)


def crashed(run: str | None, *, rank: int, host: str, where: str, exc_type: str, message: str, frames: str) -> Message:
    """An exception ended the run."""
    text = (
        f"Run {run} crashed {where} on rank {rank} ({host}).\n"
        f"{exc_type}: {message}\n\n"
        f"Last frames (most recent call last):\n{frames}"
    )
    return Message(title(f"Run crashed: {exc_type}"), text, AlertLevel.ERROR)


def received_signal(run: str | None, signame: str, where: str) -> Message:
    """A fatal signal arrived (SIGTERM: a preemption)."""
    if signame == "SIGTERM":
        return preempted(run, where)
    return Message(title(f"Run received {signame}"), f"Run {run} received {signame} {where}.", AlertLevel.ERROR)


def nonfinite(
    key: str,
    value: str,
    step: int | None,
    *,
    note: str = "",
    epoch: int | None,
    run: str | None,
    rank: int,
    stop: bool,
) -> Message:
    """A watched value is NaN or infinite (the first of the run)."""
    span = f"at step {step}" if step is not None else "at an unknown step"
    text = f"{key} = {value} {span}"
    if note:
        text += f" ({note})"
    if epoch is not None:
        text += f", epoch {epoch},"
    text += f" in run {run} on rank {rank}."
    text += (
        " Training will stop (stop_on_nonfinite=True)."
        if stop
        else " Training goes on; set stop_on_nonfinite=True to stop it."
    )
    return Message(title(f"Non-finite {key}"), text, AlertLevel.ERROR)


def stage_summary(
    run: str | None,
    stage: str,
    duration: float,
    *,
    steps: int | None = None,
    epoch: int | None = None,
    epochs: int | None = None,
    stopped: str | None = None,
    final: Mapping[str, Any] | None = None,
    limit: int = 20,
    note: str | None = None,
) -> Message:
    """A stage (fit, validate, test, predict) ended: how long, how far, why it stopped, the last values."""
    head = f"Run {run}: {stage} finished in {format_duration(duration)}"
    if steps is not None:
        head += f" after {steps:,} step{'s' if steps != 1 else ''}"
        if epoch is not None:
            head += f", in epoch {epoch}"
        if epochs is not None:
            head += f" ({epochs} epoch{'s' if epochs != 1 else ''} completed)"
    parts = [head + "."]
    if stopped:
        parts.append(f"Stopped: {stopped.rstrip('.')}.")
    if final:
        parts.append("Final metrics: " + format_metrics(final, limit))
    if note:
        parts.append(str(note))
    return Message(title(f"{stage.capitalize()} finished"), "\n".join(parts), AlertLevel.INFO)


def stalled(run: str | None, idle: float, stall_after: float, last_step: int | None) -> Message:
    """No step for ``idle`` seconds (the watchdog's ``stall_after``)."""
    text = (
        f"Run {run} made no step for {format_duration(idle)} "
        f"(stall_after={format_duration(stall_after)}); last step {last_step}."
    )
    return Message("Run stalled", text, AlertLevel.WARN)


def recovered(run: str | None, stalled_for: float, step: int | None) -> Message:
    """Steps again after a stall."""
    text = f"Run {run} is making steps again after {format_duration(stalled_for)} (step {step})."
    return Message("Run recovered", text, AlertLevel.INFO)
