"""Crash hooks for frameworks that give callbacks no exception hook (transformers, Keras).

:class:`CrashHooks` chains ``sys.excepthook``, ``threading.excepthook``, a SIGTERM handler and an ``atexit``
function. Each reports to the monitor and then hands over to what was there before, so the original behaviour
is kept: the traceback still prints, the previous SIGTERM handler still runs, and with no previous handler the
process still dies of SIGTERM (the default action, re-raised after a bounded flush). :meth:`CrashHooks.uninstall`
restores everything; a hook that someone else chained on top of ours stays in place but passes straight through.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from runalert._log import log_once, logger

__all__ = ["CrashHooks"]


class CrashHooks:
    """Chained process-level hooks that report to ``on_exception`` / ``on_signal`` / ``on_exit``.

    Args:
        on_exception: called with an uncaught exception and where it was caught (``"sys.excepthook"`` or
            ``"thread <name>"``).
        on_signal: called with the signal number (SIGTERM) before the previous handler or the default action.
            It runs on a helper thread joined for at most ``signal_timeout`` seconds, so a lock held by the
            interrupted main thread can never hang the process.
        on_exit: called at interpreter exit if :meth:`uninstall` was not called before.
        signal_timeout: the most the SIGTERM handler waits for ``on_signal``.
    """

    def __init__(
        self,
        on_exception: Callable[[BaseException, str], None],
        on_signal: Callable[[int], None],
        on_exit: Callable[[], None],
        *,
        signal_timeout: float = 10.0,
        signals: tuple[int, ...] = (signal.SIGTERM,),
    ) -> None:
        self._on_exception = on_exception
        self._on_signal = on_signal
        self._on_exit = on_exit
        self.signal_timeout = float(signal_timeout)
        self._signals = signals
        self.active = False
        self._prev_excepthook: Callable[..., Any] | None = None
        self._prev_threading_hook: Callable[..., Any] | None = None
        self._prev_signals: dict[int, Any] = {}
        self._installed_signals: dict[int, Any] = {}

    # -- install / uninstall -------------------------------------------------------------------------------------
    def install(self) -> None:
        if self.active:
            return
        self.active = True
        self._prev_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        self._prev_threading_hook = threading.excepthook
        threading.excepthook = self._threading_excepthook
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals:
                try:
                    self._prev_signals[signum] = signal.getsignal(signum)
                    signal.signal(signum, self._signal_handler)
                    self._installed_signals[signum] = self._signal_handler
                except (ValueError, OSError) as exc:  # pragma: no cover - embedded interpreters
                    logger.debug("runalert: cannot install a handler for signal %s (%s)", signum, exc)
        else:
            logger.debug("runalert: not on the main thread; the SIGTERM handler is not installed")
        atexit.register(self._atexit_hook)

    def uninstall(self) -> None:
        if not self.active:
            return
        self.active = False
        if sys.excepthook == self._excepthook and self._prev_excepthook is not None:
            sys.excepthook = self._prev_excepthook
        if threading.excepthook == self._threading_excepthook and self._prev_threading_hook is not None:
            threading.excepthook = self._prev_threading_hook
        if self._installed_signals and threading.current_thread() is threading.main_thread():
            for signum, handler in self._installed_signals.items():
                # On the main thread, for a signal whose handler was set here, signal.signal does not fail; an
                # embedded interpreter's oddity is no reason to stop putting the other hooks back.
                with contextlib.suppress(ValueError, OSError):
                    if signal.getsignal(signum) == handler:
                        previous = self._prev_signals.get(signum)
                        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            self._installed_signals = {}
        elif self._installed_signals:
            logger.debug("runalert: not on the main thread; the SIGTERM handler stays installed (inactive)")
        atexit.unregister(self._atexit_hook)  # registered by install (which set ``active``)

    # -- the hooks -----------------------------------------------------------------------------------------------
    def _excepthook(self, exc_type: type[BaseException], exc: BaseException, tb: types.TracebackType | None) -> None:
        if self.active:
            self._report(exc, "sys.excepthook")
        previous = self._prev_excepthook or sys.__excepthook__
        previous(exc_type, exc, tb)

    def _threading_excepthook(self, args: Any) -> None:
        if self.active and args.exc_value is not None and not isinstance(args.exc_value, SystemExit):
            name = getattr(args.thread, "name", None) or "?"
            self._report(args.exc_value, f"thread {name}")
        previous = self._prev_threading_hook or threading.__excepthook__
        previous(args)

    def _report(self, exc: BaseException, where: str) -> None:
        try:
            self._on_exception(exc, where)
        except Exception as error:  # never let our report replace the user's exception
            log_once("crash-report", logging.WARNING, "runalert: crash report failed (%s)", error, exc_info=True)

    def _signal_handler(self, signum: int, frame: types.FrameType | None) -> Any:
        if self.active:
            helper = threading.Thread(target=self._signal_report, args=(signum,), name="runalert-signal", daemon=True)
            helper.start()
            helper.join(self.signal_timeout)
        previous = self._prev_signals.get(signum)
        if callable(previous):
            return previous(signum, frame)
        if previous == signal.SIG_IGN:
            return None
        # SIG_DFL (or a handler not set from Python): restore the default action and die of the signal.
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return None

    def _signal_report(self, signum: int) -> None:
        try:
            self._on_signal(signum)
        except Exception as error:
            log_once("signal-report", logging.WARNING, "runalert: signal report failed (%s)", error, exc_info=True)

    def _atexit_hook(self) -> None:
        if not self.active:
            return
        try:
            self._on_exit()
        except Exception as error:  # pragma: no cover - exit must go on
            log_once("atexit-report", logging.WARNING, "runalert: exit report failed (%s)", error, exc_info=True)
