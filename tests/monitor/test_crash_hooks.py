"""runalert.crash.CrashHooks on its own: what each hook reports, and that it always hands over to what was there.

The signal handler is called here as the interpreter calls it, with the signal blocked in this thread, so a
handler that re-raises the signal leaves it pending (checked, then taken back) instead of killing the test
process. The tests that send a real SIGTERM to a real child process are in ``test_crash.py``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from runalert._log import error_counts
from runalert.crash import CrashHooks

SIG = signal.SIGTERM
Handler = Callable[[int, Any], Any] | int | None


@contextmanager
def _previous_handler(handler: Handler) -> Iterator[None]:
    """``handler`` installed for SIGTERM (as the previous one), SIGTERM blocked in this thread; both put back."""
    original = signal.getsignal(SIG)
    signal.pthread_sigmask(signal.SIG_BLOCK, {SIG})
    signal.signal(SIG, handler)
    try:
        yield
    finally:
        _take_pending()
        signal.signal(SIG, original)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {SIG})


def _ours() -> Callable[[int, Any], Any]:
    """The SIGTERM handler installed now (ours, once the hooks are installed)."""
    handler = signal.getsignal(SIG)
    assert callable(handler)
    return handler


def _take_pending() -> bool:
    """Whether SIGTERM was pending (raised while blocked); it is no longer."""
    pending = SIG in signal.sigpending()
    if pending:
        signal.sigtimedwait({SIG}, 0)
    return pending


class Calls:
    """Records what the hooks report, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.exceptions: list[BaseException] = []

    def on_exception(self, exc: BaseException, where: str) -> None:
        self.events.append(("exception", where))
        self.exceptions.append(exc)

    def on_signal(self, signum: int) -> None:
        self.events.append(("signal", signum))

    def on_exit(self) -> None:
        self.events.append(("exit", None))

    def hooks(self, **kwargs: Any) -> CrashHooks:
        return CrashHooks(self.on_exception, self.on_signal, self.on_exit, **kwargs)


@pytest.fixture
def first_time() -> Iterator[None]:
    """runalert's log-once memory emptied for the test (and put back): each problem is logged as a first time."""
    from runalert import _log

    with _log._lock:
        saved = set(_log._seen)
        _log._seen.clear()
    yield
    with _log._lock:
        _log._seen |= saved


def _logged(caplog: pytest.LogCaptureFixture, message: str) -> logging.LogRecord:
    """The one record of runalert's logger whose message is exactly ``message``."""
    (record,) = [r for r in caplog.records if r.name == "runalert" and r.getMessage() == message]
    return record


@pytest.fixture
def restore_hooks() -> Iterator[None]:
    """sys.excepthook and threading.excepthook put back after the test, whatever it did."""
    before = sys.excepthook, threading.excepthook
    yield
    sys.excepthook, threading.excepthook = before


def test_a_signal_is_reported_then_handed_to_the_previous_python_handler() -> None:
    calls = Calls()

    frames: list[object] = []

    def previous(signum: int, frame: object) -> str:
        calls.events.append(("previous", signum))
        frames.append(frame)
        return "previous's answer"

    with _previous_handler(previous):
        hooks = calls.hooks()
        hooks.install()
        try:
            ours = _ours()
            assert ours is not previous
            frame = sys._getframe()
            assert ours(SIG, frame) == "previous's answer"
            assert calls.events == [("signal", SIG), ("previous", SIG)] and frames == [frame]
            assert not _take_pending()  # handled by the previous handler, not raised again
            assert signal.getsignal(SIG) == ours  # still ours: the next SIGTERM is reported too
        finally:
            hooks.uninstall()
        assert signal.getsignal(SIG) is previous


def test_a_signal_that_was_ignored_is_reported_and_still_ignored() -> None:
    calls = Calls()
    with _previous_handler(signal.SIG_IGN):
        hooks = calls.hooks()
        hooks.install()
        try:
            ours = _ours()
            assert ours(SIG, None) is None
            assert calls.events == [("signal", SIG)]
            assert not _take_pending()  # not raised again: the process lives on, as it would have
            assert signal.getsignal(SIG) == ours
        finally:
            hooks.uninstall()
        assert signal.getsignal(SIG) == signal.SIG_IGN


def test_with_the_default_action_before_the_signal_is_reported_then_raised_again_to_kill() -> None:
    calls = Calls()
    with _previous_handler(signal.SIG_DFL):
        hooks = calls.hooks()
        hooks.install()
        try:
            ours = _ours()
            ours(SIG, None)
            assert calls.events == [("signal", SIG)]
            # The default action is back and the signal raised again: unblocked, the process dies of SIGTERM.
            assert signal.getsignal(SIG) == signal.SIG_DFL
            assert _take_pending()
        finally:
            hooks.uninstall()
        assert signal.getsignal(SIG) == signal.SIG_DFL


def test_a_slow_signal_report_is_not_waited_for_past_the_timeout() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    handed_over: list[bool] = []
    reporter: list[threading.Thread] = []

    def slow_report(signum: int) -> None:
        reporter.append(threading.current_thread())
        started.set()
        release.wait(30)
        finished.set()

    def previous(signum: int, frame: object) -> None:
        handed_over.append(finished.is_set())

    with _previous_handler(previous):
        hooks = CrashHooks(lambda exc, where: None, slow_report, lambda: None, signal_timeout=0.01)
        hooks.install()
        try:
            _ours()(SIG, None)
            # The report was started on its own thread (it may be scheduled after the hand-over: the handler
            # waited only signal_timeout for it, 0.01 s, less than a loaded machine may take to run it) ...
            assert started.wait(30)
            assert handed_over == [False]  # ... and the previous handler ran while it was still stuck
            # A stuck report cannot keep the process alive either, and it is named in a thread dump.
            (thread,) = reporter
            assert thread is not threading.main_thread() and thread.daemon and thread.name == "runalert-signal"
        finally:
            release.set()
            hooks.uninstall()


def test_a_failing_signal_report_is_logged_and_the_signal_still_handed_over(
    caplog: pytest.LogCaptureFixture, first_time: None
) -> None:
    handed_over: list[int] = []

    def broken_report(signum: int) -> None:
        raise RuntimeError("report broke")

    before = error_counts().get("signal-report", 0)
    with _previous_handler(lambda signum, frame: handed_over.append(signum)), caplog.at_level(logging.DEBUG):
        hooks = CrashHooks(lambda exc, where: None, broken_report, lambda: None)
        hooks.install()
        try:
            _ours()(SIG, None)
        finally:
            hooks.uninstall()
    assert handed_over == [SIG]
    assert error_counts()["signal-report"] == before + 1
    record = _logged(caplog, "runalert: signal report failed (report broke)")
    assert record.levelno == logging.WARNING  # with the report's traceback:
    assert record.exc_info and isinstance(record.exc_info[1], RuntimeError)


def test_uninstalled_hooks_left_under_someone_elses_hand_over_without_reporting() -> None:
    calls = Calls()
    handed_over: list[int] = []
    with _previous_handler(lambda signum, frame: handed_over.append(signum)):
        hooks = calls.hooks()
        hooks.install()
        ours = _ours()

        def theirs(signum: int, frame: object) -> None:
            ours(signum, frame)

        signal.signal(SIG, theirs)
        hooks.uninstall()
        assert signal.getsignal(SIG) is theirs  # not ripped out from under them
        theirs(SIG, None)
        assert calls.events == []  # ours is quiet now
        assert handed_over == [SIG]  # ... but still hands over


def test_installing_twice_reports_once_and_hands_over_once(restore_hooks: None) -> None:
    calls = Calls()
    seen: list[object] = []
    sys.excepthook = lambda tp, exc, tb: seen.append((tp, exc, tb))
    with _previous_handler(lambda signum, frame: seen.append("previous handler")):
        hooks = calls.hooks()
        hooks.install()
        hooks.install()  # a second install must not chain our hooks to themselves
        try:
            exc = ValueError("x")
            sys.excepthook(ValueError, exc, exc.__traceback__)
            _ours()(SIG, None)
            assert calls.events == [("exception", "sys.excepthook"), ("signal", SIG)]
            assert seen == [(ValueError, exc, exc.__traceback__), "previous handler"]
            # The previous hook gets exactly what the interpreter gave: the exception and its traceback.
            caught = _raise(KeyError("k"))
            sys.excepthook(KeyError, caught, caught.__traceback__)
            assert seen[-1] == (KeyError, caught, caught.__traceback__) and caught.__traceback__ is not None
        finally:
            hooks.uninstall()


def test_an_uncaught_exception_is_reported_and_printed_by_the_default_hook(
    restore_hooks: None, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = Calls()
    sys.excepthook = sys.__excepthook__
    hooks = calls.hooks()
    hooks.install()
    try:
        try:
            raise KeyError("lost key")
        except KeyError as caught:
            sys.excepthook(KeyError, caught, caught.__traceback__)
    finally:
        hooks.uninstall()
    assert calls.events == [("exception", "sys.excepthook")]
    assert "KeyError: 'lost key'" in capsys.readouterr().err  # the traceback still prints
    assert sys.excepthook is sys.__excepthook__


def test_a_failing_crash_report_never_replaces_the_users_exception(
    restore_hooks: None, caplog: pytest.LogCaptureFixture, first_time: None
) -> None:
    seen: list[BaseException] = []
    sys.excepthook = lambda tp, exc, tb: seen.append(exc)

    def broken(exc: BaseException, where: str) -> None:
        raise RuntimeError("report broke")

    before = error_counts().get("crash-report", 0)
    hooks = CrashHooks(broken, lambda s: None, lambda: None)
    hooks.install()
    error = ValueError("the user's")
    try:
        with caplog.at_level(logging.DEBUG):
            sys.excepthook(ValueError, error, None)
    finally:
        hooks.uninstall()
    assert seen == [error]
    assert error_counts()["crash-report"] == before + 1
    record = _logged(caplog, "runalert: crash report failed (report broke)")
    assert record.levelno == logging.WARNING
    assert record.exc_info and isinstance(record.exc_info[1], RuntimeError)


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _die_in_thread(target: Callable[[], None], name: str) -> None:
    thread = threading.Thread(target=target, name=name)
    thread.start()
    thread.join()


def test_a_thread_exception_is_reported_with_the_threads_name_and_chained(restore_hooks: None) -> None:
    calls = Calls()
    chained: list[str] = []
    threading.excepthook = lambda args: chained.append(
        f"{args.exc_type.__name__} in {getattr(args.thread, 'name', '?')}"
    )
    hooks = calls.hooks()
    hooks.install()
    try:

        def exit_quietly() -> None:
            raise SystemExit(0)

        def fail() -> None:
            raise IndexError("no batch")

        _die_in_thread(fail, "loader")
        _die_in_thread(exit_quietly, "quitter")  # SystemExit in a thread is no crash
        # What the interpreter may also pass: no thread object (reported as "thread ?"), no exception value.
        error = _raise(OSError("gone"))
        threading.excepthook(threading.ExceptHookArgs([OSError, error, error.__traceback__, None]))
        threading.excepthook(threading.ExceptHookArgs([OSError, None, None, None]))
    finally:
        hooks.uninstall()
    assert calls.events == [("exception", "thread loader"), ("exception", "thread ?")]
    assert [type(e) for e in calls.exceptions] == [IndexError, OSError] and calls.exceptions[1] is error
    assert chained == ["IndexError in loader", "SystemExit in quitter", "OSError in ?", "OSError in ?"]


def test_uninstall_puts_every_hook_back(restore_hooks: None) -> None:
    calls = Calls()

    def previous_hook(tp: type[BaseException], exc: BaseException, tb: object) -> None:
        pass

    def previous_thread_hook(args: Any) -> None:
        pass

    sys.excepthook, threading.excepthook = previous_hook, previous_thread_hook
    with _previous_handler(signal.SIG_IGN):
        hooks = calls.hooks()
        hooks.install()
        assert sys.excepthook is not previous_hook and threading.excepthook is not previous_thread_hook
        hooks.uninstall()
        hooks.uninstall()  # twice is harmless
        assert sys.excepthook is previous_hook and threading.excepthook is previous_thread_hook
        assert signal.getsignal(SIG) == signal.SIG_IGN
    assert calls.events == []


EXIT_CHILD = """
import sys
from runalert.crash import CrashHooks

def on_exit():
    if sys.argv[1] == "broken":
        1 / 0
    print("on_exit ran", flush=True)

hooks = CrashHooks(lambda exc, where: None, lambda s: None, on_exit)
hooks.install()
if sys.argv[1] == "uninstall":
    hooks.uninstall()
print("exiting", flush=True)
"""


@pytest.mark.parametrize(("how", "reported"), [("exit", True), ("uninstall", False), ("broken", False)])
def test_on_exit_runs_at_interpreter_exit_unless_uninstalled(how: str, reported: bool) -> None:
    import os
    import subprocess
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src"
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run(
        [sys.executable, "-c", EXIT_CHILD, how], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr  # a failing exit report does not change how the process ends
    assert done.stdout.splitlines() == (["exiting", "on_exit ran"] if reported else ["exiting"])
    if how == "broken":
        lines = done.stderr.splitlines()
        assert "runalert: exit report failed (division by zero)" in lines
        assert "ZeroDivisionError: division by zero" in lines  # with the traceback of the failed report


def test_the_exit_hook_reports_once_installed_and_stays_quiet_after_uninstall(
    restore_hooks: None, caplog: pytest.LogCaptureFixture, first_time: None
) -> None:
    # The exit hook called as the interpreter calls it at exit (the child processes above show it runs then);
    # here, in this process, so that what it does is seen by the mutation run too.
    calls = Calls()
    with _previous_handler(lambda signum, frame: None):
        hooks = calls.hooks()
        hooks._atexit_hook()
        assert calls.events == []  # never installed: nothing to report
        hooks.install()
        hooks._atexit_hook()
        assert calls.events == [("exit", None)]
        hooks.uninstall()
        hooks._atexit_hook()
        assert calls.events == [("exit", None)]

        def broken() -> None:
            raise RuntimeError("report failed")

        failing = CrashHooks(calls.on_exception, calls.on_signal, broken)
        failing.install()
        before = error_counts().get("atexit-report", 0)
        try:
            failing._atexit_hook()  # raises nothing: the interpreter's exit goes on
            failing._atexit_hook()
        finally:
            failing.uninstall()
    assert error_counts()["atexit-report"] == before + 2  # counted each time, logged once
    (record,) = [r for r in caplog.records if r.name == "runalert" and r.levelno == logging.WARNING]
    assert record.getMessage() == "runalert: exit report failed (report failed)"
    assert record.exc_info is not None and record.exc_info[1] is not None  # with the failed report's traceback
    assert str(record.exc_info[1]) == "report failed"


def test_hooks_can_be_installed_again_after_uninstall(restore_hooks: None) -> None:
    calls = Calls()
    with _previous_handler(lambda signum, frame: None):
        hooks = calls.hooks()
        for _ in range(2):
            hooks.install()
            try:
                _ours()(SIG, None)
            finally:
                hooks.uninstall()
    assert calls.events == [("signal", SIG), ("signal", SIG)]


def test_uninstalled_hooks_are_not_kept_alive_by_the_interpreter(restore_hooks: None) -> None:
    # A long-lived process (a notebook, a sweep) starts and finishes many runs: once uninstalled, nothing of the
    # interpreter's (exit hooks, excepthooks, signal handlers) may still hold the hooks and, through their
    # callbacks, the run's monitor and alerter.
    import gc
    import weakref

    with _previous_handler(lambda signum, frame: None):
        hooks = Calls().hooks()
        hooks.install()
        hooks.install()
        hooks.uninstall()
        gone = weakref.ref(hooks)
        del hooks
        gc.collect()
        assert gone() is None


def test_new_hooks_are_inactive_and_wait_ten_seconds_for_a_signal_report_by_default(restore_hooks: None) -> None:
    hooks = Calls().hooks()
    assert hooks.active is False
    assert hooks.signal_timeout == 10.0  # the documented default (CrashHooks' docstring)
    hooks.install()
    assert hooks.active is True
    hooks.uninstall()
    assert hooks.active is False


def test_a_thread_hook_chained_on_top_of_ours_stays(restore_hooks: None) -> None:
    calls = Calls()
    hooks = calls.hooks()
    hooks.install()
    ours = threading.excepthook

    def theirs(args: Any) -> None:
        ours(args)

    threading.excepthook = theirs
    hooks.uninstall()
    assert threading.excepthook is theirs


def test_a_signal_that_cannot_be_caught_is_skipped_with_a_note(caplog: pytest.LogCaptureFixture) -> None:
    calls = Calls()
    with _previous_handler(signal.SIG_IGN), caplog.at_level(logging.DEBUG, logger="runalert"):
        hooks = calls.hooks(signals=(int(signal.SIGKILL), int(SIG)))
        hooks.install()  # never raises into the training script
        try:
            _ours()(SIG, None)  # the other signals are installed all the same
        finally:
            hooks.uninstall()
    assert calls.events == [("signal", SIG)]
    (note,) = [r.getMessage() for r in caplog.records if "cannot install" in r.getMessage()]
    assert note.startswith(f"runalert: cannot install a handler for signal {int(signal.SIGKILL)} (")
    assert note.endswith(")") and "Invalid argument" in note  # the system's reason


def _in_a_thread(target: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:  # handed to the test
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def test_installed_off_the_main_thread_the_signal_handler_is_left_alone(
    restore_hooks: None, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls()
    with _previous_handler(signal.SIG_IGN), caplog.at_level(logging.DEBUG, logger="runalert"):
        hooks = calls.hooks()
        _in_a_thread(hooks.install)  # Python only lets the main thread set signal handlers
        try:
            assert signal.getsignal(SIG) == signal.SIG_IGN
            sys.excepthook(ValueError, ValueError("x"), None)  # the exception hooks are installed
        finally:
            _in_a_thread(hooks.uninstall)
    assert calls.events == [("exception", "sys.excepthook")]
    messages = [r.getMessage() for r in caplog.records if r.name == "runalert"]
    assert messages == ["runalert: not on the main thread; the SIGTERM handler is not installed"]


def test_uninstalled_off_the_main_thread_the_handler_stays_but_goes_quiet(caplog: pytest.LogCaptureFixture) -> None:
    calls = Calls()
    handed_over: list[int] = []
    with _previous_handler(lambda signum, frame: handed_over.append(signum)):
        hooks = calls.hooks()
        hooks.install()
        ours = _ours()
        with caplog.at_level(logging.DEBUG, logger="runalert"):
            _in_a_thread(hooks.uninstall)
        assert signal.getsignal(SIG) == ours  # only the main thread could put the old one back
        ours(SIG, None)
        assert calls.events == [] and handed_over == [SIG]  # inactive: hands over without reporting
        hooks.uninstall()  # already uninstalled: nothing more happens
        assert signal.getsignal(SIG) == ours
    messages = [r.getMessage() for r in caplog.records if r.name == "runalert"]
    assert messages == ["runalert: not on the main thread; the SIGTERM handler stays installed (inactive)"]
