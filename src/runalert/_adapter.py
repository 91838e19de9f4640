"""What the three framework adapters share: their options, and owning one :class:`RunMonitor`.

The adapters are thin: they translate framework hooks into :class:`~runalert.monitor.RunMonitor` calls and
make no decisions of their own. This module only builds the monitor from the common keyword arguments (so
that ``AlertCallback(...)`` takes the same options, and fails the same way, in every framework) and offers a
few guarded helpers that never let a problem in runalert reach the training loop.
"""

from __future__ import annotations

import logging
import math
import sys
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from runalert._log import log_once

if TYPE_CHECKING:
    from runalert.monitor import MonitorOptions, RunMonitor
    from runalert.monitor_guard import InternalErrors

__all__ = ["MonitorOwner", "epoch_number", "guarded", "log_hook_failure", "plain_metrics", "sibling_callbacks"]


def log_hook_failure(framework: str, hook: str) -> None:
    """Log the exception being handled, once per (framework, hook): training goes on."""
    log_once(
        f"adapter-{framework}-{hook}",
        logging.ERROR,
        "runalert: internal error in the %s callback (%s); training goes on",
        framework,
        hook,
        exc_info=True,
    )


def guarded(framework: str, hook: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; an internal failure is logged once per (framework, hook) and never reaches the caller."""
    try:
        return fn()
    except Exception:
        log_hook_failure(framework, hook)
        return None


def plain_metrics(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``values`` with string keys (frameworks hand out their own mutable dicts)."""
    if not values:
        return {}
    return {str(key): value for key, value in values.items()}


def epoch_number(epoch: float | None) -> int | None:
    """The 1-based epoch a fractional epoch count falls in (transformers' ``state.epoch``: 0.25 -> 1, 1.0 -> 1,
    1.25 -> 2); ``None`` stays ``None``."""
    if epoch is None:
        return None
    return max(1, math.ceil(float(epoch) - 1e-6))


def sibling_callbacks(callback: object, *, depth: int = 6) -> list[Any]:
    """The callbacks run beside ``callback`` (to name an EarlyStopping that stopped training), found once at the
    start of training in the framework's callback container that is calling it: an object with a
    ``callbacks`` list holding ``callback``, as ``self`` in one of the ``depth`` calling frames (Keras'
    ``CallbackList``, transformers' ``CallbackHandler``). Empty if not found."""
    try:
        frame: types.FrameType | None = sys._getframe(1)
        for _ in range(depth):
            if frame is None:
                break
            owner = frame.f_locals.get("self")
            found = getattr(owner, "callbacks", None)
            if isinstance(found, list) and any(item is callback for item in found):
                return [item for item in found if item is not callback]
            frame = frame.f_back
    except Exception:  # an interpreter without frames: no names in the summary, nothing else lost
        pass
    return []


class MonitorOwner:
    """Mixin for an adapter that owns one :class:`RunMonitor` built from the common options.

    Subclasses set ``framework`` and whether the monitor must catch crashes itself (``install_crash_hooks``:
    chained ``sys.excepthook``/``threading.excepthook``, SIGTERM and ``atexit``) because the framework has no
    exception hook (transformers, Keras).
    """

    framework: ClassVar[str] = "generic"
    install_crash_hooks: ClassVar[bool] = False

    options: MonitorOptions
    monitor: RunMonitor

    def _setup_monitor(self, **options: Any) -> None:
        """Build :class:`MonitorOptions` from the adapter's keyword arguments (the same in every framework:
        ``AlertCallback(channels=None, **options: Unpack[AlertOptions])``)."""
        from runalert.monitor_options import MonitorOptions, option_names

        known = option_names()
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"AlertCallback got unknown option(s) {', '.join(unknown)}; the options are: {', '.join(sorted(known))}"
            )
        # MonitorOptions validates every option here, at construction, with a message naming the field.
        self.options = MonitorOptions(**options)
        self.monitor = self._new_monitor()

    def _new_monitor(self) -> RunMonitor:
        from runalert.monitor import RunMonitor

        return RunMonitor(self.options, framework=self.framework, install_crash_hooks=self.install_crash_hooks)

    def _begin(
        self,
        run_name: str | None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        checkpoint_dir: Any = None,
    ) -> None:
        """Start the monitor (idempotent). After :meth:`RunMonitor.finish` (the end of an earlier ``fit``), a
        later stage of the same run (``test``, ``evaluate``, ``predict``) gets a fresh monitor that carries the
        earlier one's state (non-finite already sent, suppression, cooldowns), as a checkpoint resume would.
        ``checkpoint_dir``: where the framework saves checkpoints (a path or a callable), for the disk metrics."""
        if self.monitor.finished:
            previous = self.monitor
            run_name = run_name or previous.run_name
            self.monitor = self._new_monitor()
            self.monitor.load_state_dict(previous.state_dict())
            self.monitor.checkpoint_dir = previous.checkpoint_dir
        if checkpoint_dir is not None:
            self.monitor.checkpoint_dir = checkpoint_dir
        self.monitor.start(run_name, rank=rank, world_size=world_size)

    def _run_name(self, derived: Callable[[], str | None] | None = None) -> str | None:
        """The run name to start with: the user's ``run_name=`` wins, else the framework's (``derived``)."""
        if self.options.run_name:
            return str(self.options.run_name)
        if derived is None:
            return None
        name = guarded(self.framework, "run_name", derived)
        return str(name) if name else None

    _hook_errors: InternalErrors | None = None

    @property
    def hook_errors(self) -> InternalErrors:
        """The adapter's internal-error guard (:class:`runalert.monitor_guard.InternalErrors`): one log line per
        hook, every failure counted."""
        errors = self._hook_errors
        if errors is None:  # made at the first use: the guard's module loads with the monitor, not at import
            from runalert.monitor_guard import InternalErrors

            errors = self._hook_errors = InternalErrors(
                f"adapter-{self.framework}",
                f"internal error in the {self.framework} callback ({{where}})",
                details=False,
                level=logging.ERROR,
            )
        return errors

    @property
    def hook_failures(self) -> int:
        """Failures inside the adapter's hooks so far (each logged once per hook)."""
        errors = self._hook_errors
        return errors.count if errors is not None else 0

    def _guard(self, hook: str, fn: Callable[[], Any]) -> Any:
        with self.hook_errors.capture(hook):
            return fn()
        return None

    def _hook_failed(self, hook: str) -> None:
        """A hook failed (called in its ``except``: the per-step hooks guard themselves with a plain ``try``, no
        closure nor ``with`` on the hot path): count it, log it once per hook, and let training go on."""
        exc = sys.exc_info()[1]
        self.hook_errors.record(hook, exc if exc is not None else RuntimeError(hook))
