"""Crash reports: exceptions, KeyboardInterrupt, SIGTERM, chained and restored process hooks, ranks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from runalert.crash import CrashHooks
from tests.monitor.helpers import Receiver

ROOT = Path(__file__).resolve().parents[2]


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_exception_is_reported_once_with_type_message_frames_and_context(receiver: Receiver) -> None:
    monitor = receiver.monitor(on_stage_end=())
    monitor.start("crashy")
    monitor.step(41, {"loss": 0.2}, epoch=3)
    exc = _raise(ValueError("shapes (3,4) and (5,6) not aligned"))
    monitor.exception(exc)
    monitor.exception(_raise(RuntimeError("later")))  # once per run
    monitor.finish("failed")
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Run crashed: ValueError" and alert["level"] == "ERROR"
    assert "ValueError: shapes (3,4) and (5,6) not aligned" in alert["text"]
    # The step being computed: the one after the last step handed over (step 41 completed), in text and field.
    assert "crashed at step 42, epoch 3" in alert["text"]
    assert "Last frames (most recent call last):" in alert["text"] and "in _raise" in alert["text"]
    assert alert["fields"]["step"] == "42" and alert["fields"]["epoch"] == "3" and alert["fields"]["rank"] == "0"
    assert alert["fields"]["exception"] == "ValueError" and alert["fields"]["host"] == alert["host"]
    assert alert["run"] == "crashy"


def test_keyboard_interrupt_is_a_warning(receiver: Receiver) -> None:
    monitor = receiver.monitor(on_stage_end=())
    monitor.start("ctrl-c")
    monitor.step(5, {"loss": 0.2})
    monitor.exception(_raise(KeyboardInterrupt()))
    monitor.exception(_raise(SystemExit(1)))  # Lightning's sys.exit(1) after an interrupt: already reported
    monitor.finish("failed")
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Run interrupted" and alert["level"] == "WARN"
    assert "at step 6" in alert["text"] and alert["fields"]["step"] == "6"


def test_lightning_sigterm_exception_without_a_code_is_a_preemption_at_the_step_given(receiver: Receiver) -> None:
    class SIGTERMException(SystemExit):  # the name Lightning uses; Lightning raises it without a code
        pass

    monitor = receiver.monitor(on_stage_end=())
    monitor.start("preempted-0")
    monitor.step(4, {"loss": 0.2}, epoch=1)
    monitor.exception(_raise(SIGTERMException()), step=5)
    monitor.finish("failed")
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Run preempted (SIGTERM)" and alert["level"] == "ERROR"
    assert alert["fields"]["step"] == "5" and "at step 5, epoch 1" in alert["text"]
    assert monitor.crash_reported


def test_exception_text_leaves_without_terminal_escape_codes(receiver: Receiver) -> None:
    monitor = receiver.monitor(on_stage_end=())
    monitor.start("escapes")
    # Keras' error text: bold with ANSI codes; a terminal hyperlink (OSC 8) too.
    message = "Exception in Dense.call().\n\n\x1b[1mshapes do not match\x1b[0m \x1b]8;;u\x07x\x1b]8;;\x07"
    monitor.exception(_raise(ValueError(message)))
    monitor.finish("failed")
    (alert,) = receiver.wait(1)
    assert "\x1b" not in alert["text"] and "\x1b" not in alert["title"]
    assert "shapes do not match x" in alert["text"]


def test_lightning_sigterm_exception_is_a_preemption(receiver: Receiver) -> None:
    class SIGTERMException(SystemExit):  # the name Lightning uses
        pass

    monitor = receiver.monitor(on_stage_end=())
    monitor.start("preempted")
    monitor.exception(_raise(SIGTERMException(1)))
    monitor.finish("failed")
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Run preempted (SIGTERM)" and alert["level"] == "ERROR"


def test_clean_system_exit_is_not_a_crash(receiver: Receiver) -> None:
    monitor = receiver.monitor(on_stage_end=())
    monitor.start("exit0")
    monitor.exception(SystemExit(0))
    monitor.finish()
    assert receiver.alerts() == [] and not monitor.crash_reported


def test_on_crash_false_sends_nothing(receiver: Receiver) -> None:
    monitor = receiver.monitor(on_crash=False, on_stage_end=(), framework="keras")
    before = sys.excepthook
    monitor.start("quiet")
    assert sys.excepthook is before  # no hooks either
    monitor.exception(_raise(ValueError("x")))
    monitor.finish("failed")
    assert receiver.alerts() == []


def test_crash_hooks_are_chained_and_restored(receiver: Receiver) -> None:
    seen: list[str] = []

    def previous_hook(tp: type[BaseException], exc: BaseException, tb: object) -> None:
        seen.append(f"previous {tp.__name__}")

    def previous_thread_hook(args: threading.ExceptHookArgs) -> None:
        seen.append(f"previous thread {args.exc_type.__name__}")

    original, original_thread = sys.excepthook, threading.excepthook
    original_sigterm = signal.getsignal(signal.SIGTERM)
    sys.excepthook, threading.excepthook = previous_hook, previous_thread_hook
    try:
        monitor = receiver.monitor(on_stage_end=(), framework="transformers")
        monitor.start("hooked")
        assert sys.excepthook is not previous_hook and threading.excepthook is not previous_thread_hook
        assert signal.getsignal(signal.SIGTERM) is not original_sigterm
        monitor.step(3, {"loss": 0.1})
        exc = _raise(ZeroDivisionError("division by zero"))
        sys.excepthook(type(exc), exc, exc.__traceback__)  # what the interpreter does with an uncaught exception
        thread = threading.Thread(target=lambda: 1 / 0, name="loader")
        thread.start()
        thread.join()
        assert seen == ["previous ZeroDivisionError", "previous thread ZeroDivisionError"]
        monitor.finish("failed")
        assert sys.excepthook is previous_hook and threading.excepthook is previous_thread_hook
        assert signal.getsignal(signal.SIGTERM) is original_sigterm
    finally:
        sys.excepthook, threading.excepthook = original, original_thread
    (alert,) = receiver.wait(1)  # the thread's exception came second: once per run
    assert alert["title"] == "Run crashed: ZeroDivisionError" and "(caught by sys.excepthook)" in alert["text"]


def test_lightning_gets_no_process_hooks_by_default(receiver: Receiver) -> None:
    before = sys.excepthook
    monitor = receiver.monitor(on_stage_end=(), framework="lightning")
    monitor.start("pl")
    assert sys.excepthook is before
    monitor.finish()


def test_a_hook_chained_on_top_of_ours_stays_and_ours_goes_quiet() -> None:
    calls: list[str] = []
    hooks = CrashHooks(lambda exc, where: calls.append(where), lambda s: None, lambda: None)
    original = sys.excepthook
    try:
        hooks.install()
        ours = sys.excepthook

        def theirs(tp: type[BaseException], exc: BaseException, tb: object) -> None:
            ours(tp, exc, tb)

        sys.excepthook = theirs
        hooks.uninstall()
        assert sys.excepthook is theirs  # not ripped out from under someone else
        sys.excepthook = lambda *a: None
        exc = _raise(ValueError())
        ours(ValueError, exc, None)  # still chains, but reports nothing
        assert calls == []
    finally:
        sys.excepthook = original


def test_rank_one_sends_no_routine_alerts_but_its_crash(receiver: Receiver) -> None:
    monitor = receiver.monitor(on_stage_end=("fit",), stall_after=60)
    monitor.start("ddp", rank=1, world_size=2)
    assert monitor.rank == 1 and not monitor.is_sender
    monitor.stage_start("fit")
    monitor.step(1, {"loss": float("nan")})
    assert monitor.nonfinite_sent is True  # detected (and would stop training) on every rank
    monitor.stage_end("fit")
    monitor.exception(_raise(RuntimeError("CUDA error: an illegal memory access was encountered")))
    monitor.finish("failed")
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Run crashed: RuntimeError" and alert["level"] == "ERROR"
    assert alert["fields"]["rank"] == "1" and "on rank 1" in alert["text"]


def test_consequential_failure_on_rank_three_is_a_warning(receiver: Receiver) -> None:
    monitor = receiver.monitor(on_stage_end=())
    monitor.start("ddp", rank=3, world_size=4)
    monitor.step(7, {"loss": 0.4})
    error = RuntimeError("[../third_party/gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.0.0.2]:4312")
    monitor.exception(_raise(error))
    monitor.finish("failed")
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Rank 3 failed after another rank" and alert["level"] == "WARN"
    assert alert["fields"]["rank"] == "3" and "Connection closed by peer" in alert["text"]


def test_ranks_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from runalert.ranks import global_rank, world_size

    for name in (
        "RANK",
        "SLURM_PROCID",
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "SLURM_NTASKS",
    ):
        monkeypatch.delenv(name, raising=False)
    assert global_rank() == 0 and world_size() == 1
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert global_rank() == 1
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert global_rank() == 5 and world_size() == 8
    monkeypatch.setenv("RANK", "2")
    assert global_rank() == 2 and global_rank(7) == 7 and world_size(3) == 3


CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from runalert.alerting import Alerter, RetryPolicy
    from runalert.channels import Webhook
    from runalert.monitor import RunMonitor

    alerter = Alerter([Webhook(sys.argv[1])], retry=RetryPolicy(initial=0.05, max_backoff=0.2, jitter=0.01),
                      flush_timeout=5.0)
    monitor = RunMonitor(alerter=alerter, on_stage_end=(), framework="transformers")
    monitor.start("preemptible")
    monitor.step(12, {"loss": 0.3}, epoch=2)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    print("still alive", flush=True)
    """
)


def test_sigterm_in_a_child_is_reported_and_the_child_still_dies_of_sigterm(receiver: Receiver) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, receiver.url], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert "still alive" not in done.stdout
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Run preempted (SIGTERM)" and alert["level"] == "ERROR"
    assert alert["fields"]["step"] == "13" and alert["fields"]["signal"] == "SIGTERM"  # the step after step 12
    assert "at step 13, epoch 2" in alert["text"]
    assert "preempted" in alert["title"]


CHILD_WITH_HANDLER = textwrap.dedent(
    """
    import os, signal, sys
    from runalert.alerting import Alerter, RetryPolicy
    from runalert.channels import Webhook
    from runalert.monitor import RunMonitor

    def previous(signum, frame):
        print("previous handler ran", flush=True)
        sys.exit(3)

    signal.signal(signal.SIGTERM, previous)
    alerter = Alerter([Webhook(sys.argv[1])], retry=RetryPolicy(initial=0.05, max_backoff=0.2, jitter=0.01),
                      flush_timeout=5.0)
    monitor = RunMonitor(alerter=alerter, on_stage_end=(), framework="keras")
    monitor.start("handled")
    os.kill(os.getpid(), signal.SIGTERM)
    """
)


def test_sigterm_chains_to_the_previous_handler(receiver: Receiver) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, "-c", CHILD_WITH_HANDLER, receiver.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a bound on a hang: a child importing runalert took over 30 s at load 15
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "previous handler ran" in done.stdout
    assert receiver.wait(1)[0]["title"] == "Run preempted (SIGTERM)"
