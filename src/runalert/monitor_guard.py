"""Internal-error guarding for the monitor and the adapters: a failure inside runalert never reaches training.

One :class:`InternalErrors` per owner (a :class:`~runalert.monitor.RunMonitor`, an adapter) counts failures and
logs each kind once through ``logging.getLogger("runalert")`` (:func:`runalert._log.log_once`). Hooks use it
as a context manager, as sentry-python's ``capture_internal_exceptions``::

    with self._errors.capture("start"):
        ...

The guard objects are made once per hook name and reused (no allocation per call). The per-step paths, where
even a ``with`` costs a measurable share of the step, use a plain ``try`` that calls :meth:`InternalErrors.record`:
the same count and the same log line.
"""

from __future__ import annotations

import logging
from types import TracebackType

from runalert._formatting import one_line
from runalert._log import log_once

__all__ = ["InternalErrors"]


class _Capture:
    """The context manager for one hook: swallows an ``Exception`` (never a ``BaseException`` such as
    ``KeyboardInterrupt``), records it, and lets the caller go on after the ``with`` block."""

    __slots__ = ("_errors", "_where")

    def __init__(self, errors: InternalErrors, where: str) -> None:
        self._errors = errors
        self._where = where

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self._errors.record(self._where, exc)
        return True


class InternalErrors:
    """Counts the internal failures of one owner and logs each kind once.

    Args:
        key: the log-once key's prefix (``"monitor"``, ``"adapter-lightning"``): one log line per
            (key, hook, exception type) in the process.
        label: what failed, with ``{where}`` for the hook: ``"RunMonitor.{where} failed"``.
        details: put the exception's type and message in the log line (besides its traceback).
        level: the log level of the first occurrence.
    """

    def __init__(self, key: str, label: str, *, details: bool = True, level: int = logging.WARNING) -> None:
        self.key = key
        self.label = label
        self.details = details
        self.level = level
        self.count = 0
        """Failures so far."""
        self._captures: dict[str, _Capture] = {}

    def capture(self, where: str) -> _Capture:
        """The guard for ``where`` (a hook's name): ``with errors.capture("finish"): ...``."""
        guard = self._captures.get(where)
        if guard is None:
            guard = self._captures[where] = _Capture(self, where)
        return guard

    def record(self, where: str, exc: BaseException) -> None:
        """Count ``exc`` (raised in ``where``) and log it the first time its kind is seen. Never raises."""
        try:
            self.count += 1
            label = self.label.format(where=where)
            if self.details:
                kind = f"{self.key}-{where}-{type(exc).__name__}"
                log_once(
                    kind,
                    self.level,
                    "runalert: %s (%s: %s); training goes on",
                    label,
                    type(exc).__name__,
                    one_line(str(exc), 200),
                    exc_info=True,
                )
            else:
                log_once(f"{self.key}-{where}", self.level, "runalert: %s; training goes on", label, exc_info=True)
        except Exception:  # pragma: no cover - the last line of defence
            pass
