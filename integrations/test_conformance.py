"""Conformance: one table of scenarios, run against Lightning, transformers and Keras, with the same expected alerts.

Each scenario is a real training loop of the framework's own models (Lightning's ``BoringModel`` and
``LightningLSTM`` demos; a tiny BERT or GPT-2 built from a config; a ``keras.applications`` MobileNet with
``weights=None``; see :mod:`integrations._conformance_scripts`), with runalert's ``AlertCallback`` sending to a
webhook on loopback. The alerts that arrive are compared with the table: title, level, ``step`` and ``epoch``
fields, what the text names, and how many came, counted once the alerter is flushed (in this process) or once
the run's process has ended (a child process), never after a sleep.

The semantics the table encodes (the project's, ``docs/semantics.md``):

- step N is the optimizer step, 1-based: the framework's global step once that step completes (Lightning
  ``trainer.global_step``, transformers ``state.global_step``, Keras ``optimizer.iterations``). A value logged
  while computing a step is at that step; under gradient accumulation every micro-batch of a step belongs to it.
  A crash, preemption or interruption is at the step being computed (completed + 1); text and field agree.
- epochs are 1-based everywhere.
- a crash: one ERROR; SIGTERM: one ERROR "Run preempted", and the process ends as it would without runalert;
  KeyboardInterrupt (a real SIGINT): one WARN; a NaN: one ERROR per run; a local rule: one WARN when it becomes
  true, at the step of the value; the end of ``fit``: one INFO summary naming the steps, the epoch it ended in,
  the epochs completed and why training stopped (max_epochs, max_steps, EarlyStopping with its monitor and
  patience, stop_on_nonfinite), without the frameworks' throughput, flos and runtime keys.
- no alert repeats a field under two names, and no text carries terminal escape codes.

Runs go in this process, except where a real signal or an exception that must go uncaught needs a process of its
own: those are forked from a per-framework zygote that imported the framework once
(:mod:`integrations._conformance_scripts.zygote`), and signal runs are compared with the same run without
runalert. Frameworks' own key names differ (transformers' validation loss is ``eval_loss``, its per-step loss
tap ``loss (model output)``); the table names them through :data:`KEYS`. Keras has no ``max_steps``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support import wait_for

from integrations._conformance_scripts.spec import Spec, threads_for_tiny_models
from integrations._conformance_scripts.zygote import Zygote
from runalert._log import error_counts

pytestmark = pytest.mark.integration

FRAMEWORKS = ("lightning", "transformers", "keras")
MODULES = {"lightning": "lightning.pytorch", "transformers": "transformers", "keras": "keras"}

KEYS = {
    "lightning": {"loss": "loss", "val_loss": "val_loss"},
    "transformers": {"loss": "loss (model output)", "val_loss": "eval_loss"},
    "keras": {"loss": "loss", "val_loss": "val_loss"},
}
"""The framework's own name for the training loss runalert watches and for the validation loss."""

IN_PROCESS, CRASH, SIGTERM, SIGINT = "in-process", "crash", "SIGTERM", "SIGINT"

CALLBACK_PROBLEMS = ("monitor-", "adapter-", "crash-report", "signal-report", "atexit-report", "rules-", "watchdog")
"""The kinds of internal problems (``runalert._log``) of the callbacks and their monitor: none may happen in a run
(other kinds, such as delivery problems, may come from other tests' alerters in this process)."""


@dataclass(frozen=True)
class Expected:
    """One alert. ``title`` is a regular expression (full match) and ``says`` regular expressions the text must
    contain; both may name ``{loss}`` and ``{val_loss}``, the framework's keys (:data:`KEYS`). ``epoch`` ``None``:
    the alert need not name one (a rule's alert comes from the rule engine, which knows steps)."""

    level: str
    title: str
    step: int
    epoch: int | None
    says: tuple[str, ...] = ()
    summary: bool = False


def fit_summary(steps: int, epoch: int, completed: int, *why: str) -> Expected:
    """The INFO summary at the end of ``fit``: ``steps`` optimizer steps, ending in epoch ``epoch`` after
    ``completed`` whole epochs, and why it stopped (``why``: what the text must name)."""
    named = (rf"\b{steps} (optimizer )?steps\b", rf"\bepoch {epoch}\b", rf"\b{completed} epochs? completed\b")
    return Expected("INFO", "Fit finished", steps, epoch, (*named, *why), True)


def nonfinite(key: str, step: int, epoch: int) -> Expected:
    return Expected("ERROR", f"Non-finite {key}", step, epoch, (rf"\bat step {step}\b",))


@dataclass(frozen=True)
class Case:
    """A scenario: the run (``spec``), how it runs (``how``) and the alerts it must send, exactly these."""

    name: str
    spec: Spec
    alerts: tuple[Expected, ...]
    how: str = IN_PROCESS
    frameworks: tuple[str, ...] = FRAMEWORKS
    options: tuple[tuple[str, Any], ...] = ()
    """``AlertCallback`` options besides the alerter and the run name (in-process cases only)."""
    rule_above: tuple[str, float] | None = None
    """A local rule ``RunEvent.metric(name) > threshold``, as ``(name, threshold)`` (in-process cases only)."""


CASES = (
    Case("normal_fit", Spec(epochs=2, batches=8), (fit_summary(16, 2, 2, "max_epochs"),)),
    # The returned loss turns NaN in micro-batch 2, step 3, and stays NaN: one alert, training goes on.
    Case(
        "nan_loss",
        Spec(epochs=1, batches=8, nan_loss_from=2),
        (nonfinite("{loss}", 3, 1), fit_summary(8, 1, 1, "max_epochs")),
    ),
    # A logged aux_loss (self.log / Trainer.log / a Keras metric) is NaN at step 5 of a 16-step epoch: the alert
    # names step 5, not the epoch's end.
    Case(
        "nan_logged_value",
        Spec(epochs=1, batches=16, aux_at=4, sequence_model=True),
        (nonfinite("aux_loss", 5, 1), fit_summary(16, 1, 1, "max_epochs")),
    ),
    # The same, logged from inside the training step: Lightning's self.log_dict in training_step, transformers'
    # Trainer.log in compute_loss (while state.global_step is still 4). Keras' batch logs exist only at the
    # batch's end (the case above).
    Case(
        "nan_logged_in_step",
        Spec(epochs=1, batches=16, aux_at=4, log_in_step=True),
        (nonfinite("aux_loss", 5, 1), fit_summary(16, 1, 1, "max_epochs")),
        frameworks=("lightning", "transformers"),
    ),
    # A local rule on the logged aux_loss (100 at step 5, 0.25 at the others; in Keras the epoch's running mean):
    # it becomes true at step 5 and fires once, naming that step.
    Case(
        "rule_on_logged_value",
        Spec(epochs=1, batches=16, aux_at=4, aux_value=100.0),
        (Expected("WARN", r"Rule: .*aux_loss.*", 5, None), fit_summary(16, 1, 1, "max_epochs")),
        rule_above=("aux_loss", 1.0),
    ),
    # Only the validation loss is NaN: found at the first validation, after step 4 (epoch 1).
    Case(
        "nan_val_loss",
        Spec(epochs=2, batches=4, validate=True, nan_val=True),
        (nonfinite("{val_loss}", 4, 1), fit_summary(8, 2, 2, "max_epochs")),
    ),
    # RuntimeError computing step 3: one ERROR at step 3 and no summary.
    Case(
        "exception",
        Spec(epochs=1, batches=8, crash_at=2),
        (Expected("ERROR", "Run crashed: RuntimeError", 3, 1, (r"\bat step 3\b", "simulated failure at step 3")),),
        how=CRASH,
    ),
    # The same under 4-way gradient accumulation, in the second micro-batch of step 3 (micro-batch 9).
    Case(
        "exception_mid_accumulation",
        Spec(epochs=1, batches=16, accumulate=4, crash_at=9),
        (Expected("ERROR", "Run crashed: RuntimeError", 3, 1, (r"\bat step 3\b", "simulated failure at step 3")),),
        how=CRASH,
    ),
    # SIGTERM after step 2 completed, before step 3: one ERROR preemption at step 3 (the step being computed).
    Case(
        "sigterm",
        Spec(epochs=1, batches=8, wait_after_step=2),
        (Expected("ERROR", r"Run preempted.*", 3, 1, (r"\bat step 3\b", "SIGTERM")),),
        how=SIGTERM,
    ),
    Case(
        "keyboard_interrupt",
        Spec(epochs=1, batches=8, wait_after_step=2),
        (Expected("WARN", "Run interrupted", 3, 1, (r"\bat step 3\b",)),),
        how=SIGINT,
    ),
    # EarlyStopping on the validation loss, patience 1, min_delta no loss can beat: stops after epoch 2.
    Case(
        "early_stopping",
        Spec(epochs=5, batches=4, validate=True, early_stop=True),
        (fit_summary(8, 2, 2, "EarlyStopping", "{val_loss}", "patience"),),
    ),
    # 4 micro-batches a step over 64 batches: 16 steps; the NaN in micro-batch 9 is in step 3.
    Case(
        "gradient_accumulation",
        Spec(epochs=1, batches=64, accumulate=4, nan_loss_from=9),
        (nonfinite("{loss}", 3, 1), fit_summary(16, 1, 1, "max_epochs")),
    ),
    # max_steps=12 with 8 steps an epoch: stops in the middle of epoch 2.
    Case(
        "max_steps_mid_epoch",
        Spec(epochs=10, batches=8, max_steps=12),
        (fit_summary(12, 2, 1, "max_steps"),),
        frameworks=("lightning", "transformers"),  # Keras has no max_steps
    ),
    # stop_on_nonfinite, the held losses read at every step: the NaN at step 3 stops training after step 3, and
    # the summary says why. (Keras runs its batch ends on a thread pool: its stop lands a batch or two later,
    # at no step a table can name; integrations/test_keras.py checks that it stops.)
    Case(
        "stop_on_nonfinite",
        Spec(epochs=2, batches=8, nan_loss_from=2),
        (
            Expected("ERROR", "Non-finite {loss}", 3, 1, (r"\bat step 3\b", "Training will stop")),
            fit_summary(3, 1, 0, "stop_on_nonfinite"),
        ),
        frameworks=("lightning", "transformers"),
        options=(("stop_on_nonfinite", True), ("check_every_n_steps", 1)),
    ),
)

KNOWN_BUGS: dict[tuple[str, str], str] = {}
"""(case, framework) -> the bug that still makes it fail: marked xfail(strict), so the fix turns it into a failure
to be removed from here."""


def _params() -> Iterator[Any]:
    for case in CASES:
        for framework in case.frameworks:
            marks: list[Any] = []
            if in_child(case, framework):
                # Slow, and may wait for the zygotes' imports on a loaded machine.
                marks += [pytest.mark.slow, pytest.mark.timeout(300)]
            bug = KNOWN_BUGS.get((case.name, framework))
            if bug is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=bug))
            yield pytest.param(case, framework, id=f"{case.name}-{framework}", marks=marks)


REPEATED_FIELDS = (("value", "metric value"), ("run", "run id"))
"""Pairs of fields that say the same thing: an alert carries one of each pair."""

SUMMARY_NOISE = r"flos|runtime|per_second"
"""Left out of summaries by default (transformers' ``total_flos``, ``train_runtime``, ``*_per_second``)."""


# -- running ------------------------------------------------------------------------------------------------------
def in_child(case: Case, framework: str) -> bool:
    """Whether the case needs a process of its own: a real signal, or a crash that must go uncaught to reach
    ``sys.excepthook`` (Lightning reports crashes from its own ``on_exception``)."""
    return case.how in (SIGTERM, SIGINT) or (case.how == CRASH and framework != "lightning")


@pytest.fixture(scope="module")
def zygotes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Zygote]]:
    """A zygote for each framework with a selected case that runs in a child, all started with the module's first
    test: their imports overlap with the runs in this process."""
    needed = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.module is request.module and "case" in params and in_child(params["case"], params["framework"]):
            needed.add(params["framework"])
    started = {
        framework: Zygote(framework, tmp_path_factory.mktemp("zygote") / f"{framework}.log")
        for framework in sorted(needed)
        if hasattr(os, "fork") and importlib.util.find_spec(MODULES[framework].split(".")[0]) is not None
    }
    yield started
    for zygote in started.values():
        zygote.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Child:
    status: int
    log: str


def run_child(zygote: Zygote, case: Case, tmp_path: Path, receiver: Any, *, with_runalert: bool) -> Child:
    """Run ``case`` in a child forked from ``zygote``; send it the case's signal once it waits for one."""
    tag = "runalert" if with_runalert else "without"
    ready, log = tmp_path / f"ready-{tag}", tmp_path / f"child-{tag}.log"
    env = {"RUNALERT_HOME": os.environ.get("RUNALERT_HOME", str(tmp_path / "home"))}
    if with_runalert:
        env["RUNALERT_WEBHOOK_URL"] = receiver.url
    request = {
        "spec": case.spec.as_dict(),
        "runalert": with_runalert,
        "run_name": f"conformance-{case.name}",
        "env": env,
        "cwd": str(tmp_path),
        "ready": str(ready),
        "log": str(log),
    }
    pid = zygote.start(request)
    try:
        if case.how in (SIGTERM, SIGINT):
            wait_for(lambda: ready.exists() or not _alive(pid), timeout=90)
            assert ready.exists(), f"the run never waited for its signal:\n{log.read_text()[-4000:]}"
            os.kill(pid, signal.SIGTERM if case.how == SIGTERM else signal.SIGINT)
        status = zygote.wait(timeout=120)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise
    return Child(status, log.read_text())


def run_in_process(case: Case, framework: str, alerter: Any) -> Any:
    """Run ``case`` here with runalert's callback sending through ``alerter``; the run's outcome (or ``None``)."""
    runs = importlib.import_module(f"integrations._conformance_scripts.{framework}_runs")
    adapter = importlib.import_module(f"runalert.{framework}")
    options = dict(case.options)
    if case.rule_above is not None:
        from runalert.automations import RunEvent

        metric, threshold = case.rule_above
        options["rules"] = [RunEvent.metric(metric) > threshold]
    callback = adapter.AlertCallback(alerter=alerter, run_name=f"conformance-{case.name}", **options)
    restore = threads_for_tiny_models()
    try:
        if case.how == CRASH:
            with pytest.raises(RuntimeError, match="simulated failure at step"):
                runs.run(case.spec, callback)
            return None
        return runs.run(case.spec, callback)
    finally:
        restore()


def callback_problems() -> dict[str, int]:
    return {kind: n for kind, n in error_counts().items() if kind.startswith(CALLBACK_PROBLEMS)}


# -- checking -----------------------------------------------------------------------------------------------------
def _describe(alerts: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {a.get('level')} {a.get('title')!r} fields={a.get('fields')} text={a.get('text')!r}" for a in alerts
    )


def check_alerts(received: list[dict[str, Any]], case: Case, framework: str) -> None:
    """``received`` is exactly the case's alerts, each with its title, level, step, epoch and text."""
    keys = {name: re.escape(key) for name, key in KEYS[framework].items()}
    expected = list(case.alerts)
    context = f"{case.name} on {framework}; received:\n{_describe(received)}"
    assert len(received) == len(expected), f"{len(expected)} alert(s) expected, {len(received)} came: {context}"
    left = list(received)
    for want in expected:
        title = want.title.format(**keys)
        matching = [a for a in left if re.fullmatch(title, str(a.get("title", "")))]
        assert len(matching) == 1, f"one alert titled {title!r} expected: {context}"
        got = matching[0]
        left.remove(got)
        text, fields = str(got.get("text", "")), dict(got.get("fields") or {})
        assert got.get("level") == want.level, f"{title}: level {got.get('level')}, not {want.level}: {context}"
        assert got.get("run") == f"conformance-{case.name}", context
        assert fields.get("step") == str(want.step), f"{title}: step field {fields.get('step')!r}: {context}"
        if want.epoch is not None:
            assert fields.get("epoch") == str(want.epoch), f"{title}: epoch field {fields.get('epoch')!r}: {context}"
        for pattern in want.says:
            assert re.search(pattern.format(**keys), text), f"{title}: the text does not say {pattern!r}: {context}"
        named_epochs = {int(n) for n in re.findall(r"\bepoch (\d+)", text)}
        if want.epoch is not None:
            assert named_epochs <= {want.epoch}, f"{title}: the text names epoch(s) {named_epochs}: {context}"
        if not want.summary:  # the step the text names is the step field
            named_steps = {int(n) for n in re.findall(r"\bstep (\d+)", text)}
            assert named_steps <= {want.step}, f"{title}: the text names step(s) {named_steps}: {context}"
        assert "\x1b" not in text + str(got.get("title")), f"{title}: terminal escape codes left in: {context}"
        for one, other in REPEATED_FIELDS:
            assert not {one, other} <= fields.keys(), f"{title}: fields {one!r} and {other!r} both: {context}"
        if want.summary:
            assert not re.search(SUMMARY_NOISE, text), f"{title}: framework noise in the summary: {context}"
            source = KEYS[framework]["loss"]
            if source != "loss" and f"{source}=nan" in text:  # the framework's filtered value is left out
                assert not re.search(r"(^|[\s,:])loss=", text), f"{title}: loss= beside {source}=nan: {context}"


def check_outcome(outcome: Any, case: Case, framework: str) -> None:
    """The framework itself ended where the table's fit summary says (the table is checked against it)."""
    summary = next((a for a in case.alerts if a.summary), None)
    if outcome is None or summary is None:
        return
    assert (outcome.global_step, outcome.epochs) == (summary.step, summary.epoch), (
        f"{case.name} on {framework}: the framework ended at step {outcome.global_step}, epoch {outcome.epochs}"
    )


# -- the suite ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "framework"), list(_params()))
def test_conformance(
    case: Case,
    framework: str,
    receiver: Any,
    alerter: Any,
    zygotes: dict[str, Zygote],
    tmp_path: Path,
) -> None:
    pytest.importorskip(MODULES[framework])
    if not in_child(case, framework):
        problems = callback_problems()
        outcome = run_in_process(case, framework, alerter)
        assert alerter.flush(10), "the alerter could not deliver within 10 s"
        check_outcome(outcome, case, framework)
        assert callback_problems() == problems, f"runalert logged internal problems: {callback_problems()}"
        check_alerts(receiver.alerts(), case, framework)
        return

    if not hasattr(os, "fork"):
        pytest.skip("the runs with a process of their own are forked from a zygote: POSIX only")
    zygote = zygotes[framework]
    without = None
    if case.how in (SIGTERM, SIGINT):
        without = run_child(zygote, case, tmp_path, receiver, with_runalert=False)
        assert receiver.alerts() == []
    child = run_child(zygote, case, tmp_path, receiver, with_runalert=True)
    assert "RETURNED" not in child.log, f"the fit returned:\n{child.log[-4000:]}"
    assert not re.search(r"runalert: .*(internal error|failed)", child.log), child.log[-4000:]
    if without is not None:
        assert child.status == without.status, (
            f"with runalert the process ended with {child.status}, without it {without.status}:\n{child.log[-4000:]}"
        )
    else:
        assert child.status == 1, child.log[-4000:]
        assert "RuntimeError" in child.log and "simulated failure at step" in child.log  # the traceback printed
    # The child has ended: whatever it sent has arrived, and nothing more can.
    check_alerts(receiver.alerts(), case, framework)
