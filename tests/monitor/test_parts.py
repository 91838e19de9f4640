"""The monitor's parts on their own: options, wording, the value pipeline and the internal-error guard."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import typing

import pytest

from runalert.alert import AlertLevel
from runalert.monitor_guard import InternalErrors
from runalert.monitor_messages import crashed, nonfinite, preempted, stage_summary, title, where_text
from runalert.monitor_options import AlertOptions, MonitorOptions, option_names
from runalert.monitor_pipeline import RuleSink, ValuePipeline
from runalert.monitor_values import is_consequential, summary_values
from runalert.rulefeed import Item


# -- options --------------------------------------------------------------------------------------------------
def test_the_adapters_keyword_options_are_exactly_the_monitor_options() -> None:
    # One option surface: a field added to MonitorOptions without its AlertOptions key (or the reverse) fails here.
    assert set(typing.get_type_hints(AlertOptions)) | {"channels"} == set(option_names())


def test_options_are_frozen_once_checked() -> None:
    options = MonitorOptions(on_nonfinite=["loss", "acc"], stall_after=5)
    assert options.on_nonfinite == ("loss", "acc") and options.stall_after == 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.stall_after = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("stage_summary_metrics", 0, "stage_summary_metrics must be an integer >= 1"),
        ("on_stage_end", ["fit", "train"], "on_stage_end stages must be among fit, validate, test, predict"),
        ("check_every_n_steps", 0, "check_every_n_steps must be an integer >= 1 or None"),
    ],
)
def test_a_bad_option_names_the_field_and_what_is_allowed(option: str, value: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        MonitorOptions(**{option: value})  # type: ignore[arg-type]


# -- wording --------------------------------------------------------------------------------------------------
def test_crash_wording_names_the_step_being_computed_and_strips_nothing_it_is_given() -> None:
    where = where_text(5, stage="fit", last_step=4, epoch=2)
    assert where == "at step 5, epoch 2"
    message = crashed("r", rank=1, host="h", where=where, exc_type="ValueError", message="bad", frames="  F")
    assert message.title == "Run crashed: ValueError" and message.level is AlertLevel.ERROR
    assert message.text.startswith("Run r crashed at step 5, epoch 2 on rank 1 (h).\nValueError: bad")
    assert where_text(None, stage=None, last_step=None, epoch=None) == "during start-up (before the first step)"
    assert where_text(None, stage="test", last_step=7, epoch=None) == "during test (after step 7)"
    assert preempted("r", where).title == "Run preempted (SIGTERM)"


def test_nonfinite_and_summary_wording() -> None:
    message = nonfinite("loss", "nan", 3, epoch=1, run="r", rank=0, stop=True)
    assert message.title == "Non-finite loss"
    assert (
        message.text
        == "loss = nan at step 3, epoch 1, in run r on rank 0. Training will stop (stop_on_nonfinite=True)."
    )
    summary = stage_summary(
        "r", "fit", 2.0, steps=1, epoch=1, epochs=1, stopped="max_steps=1 reached.", final={"b": 1, "a": 0.5}
    )
    assert summary.title == "Fit finished" and summary.level is AlertLevel.INFO
    assert summary.text == (
        "Run r: fit finished in 2.0s after 1 step, in epoch 1 (1 epoch completed).\n"
        "Stopped: max_steps=1 reached.\nFinal metrics: a=0.5, b=1"
    )
    assert len(title("x" * 500)) <= 150 and title("a\nb") == "a b"


def test_summary_values_and_consequential_errors() -> None:
    shown = summary_values({"loss": 0.0, "loss (model output)": math.nan, "total_flos": 1.0}, ("*flos*",))
    assert list(shown) == ["loss (model output)"]
    assert is_consequential(RuntimeError("NCCL error: unhandled system error"))
    assert not is_consequential(ValueError("shapes do not match"))


# -- the value pipeline ---------------------------------------------------------------------------------------
class _Engine:
    """Stands for LocalEngine.log_columns: records what the rule sink hands it."""

    def __init__(self) -> None:
        self.columns: list[dict[str, tuple[list[int | None], list[float]]]] = []

    def log_columns(self, run: str, columns: dict[str, tuple[list[int | None], list[float]]]) -> list[object]:
        self.columns.append(columns)
        return []


class _Sink:
    def __init__(self, name: str, seen: list[tuple[str, int | None, str]], fail: bool = False) -> None:
        self.name, self.seen, self.fail = name, seen, fail

    def take(self, batch: list[Item]) -> None:
        self.seen.extend((self.name, step, threading.current_thread().name) for _values, step in batch)
        if self.fail:
            raise RuntimeError("a broken sink")


def test_one_queue_feeds_every_sink_in_order_and_a_failing_sink_keeps_nothing_from_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, int | None, str]] = []
    pipeline = ValuePipeline([_Sink("first", seen, fail=True), _Sink("second", seen)], interval=0.01)
    queue, _cap = pipeline.appender()
    for step in range(1, 51):
        queue.append(({"loss": float(step)}, step))
    with caplog.at_level(logging.ERROR, logger="runalert"):
        pipeline.close(30)
    assert [step for name, step, _ in seen if name == "first"] == list(range(1, 51))
    assert [step for name, step, _ in seen if name == "second"] == list(range(1, 51))
    assert pipeline.errors >= 1
    assert len([r for r in caplog.records if "first sink failed" in r.getMessage()]) == 1


def test_the_rule_sink_hands_the_engine_only_the_watched_keys_by_column() -> None:
    engine = _Engine()
    sink = RuleSink(engine, "run", frozenset({"loss"}), lambda firings: None)
    sink.take([({"loss": 1.0, "lr": 0.1}, 1), ({"loss": math.nan}, 2), ({"lr": 0.2}, 3)])
    assert len(engine.columns) == 1
    steps, values = engine.columns[0]["loss"]
    assert steps == [1, 2] and values[0] == 1.0 and math.isnan(values[1])
    assert set(engine.columns[0]) == {"loss"}


# -- the guard ------------------------------------------------------------------------------------------------
def test_the_guard_counts_every_failure_logs_each_kind_once_and_lets_base_exceptions_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = InternalErrors("guard-test", "Thing.{where} failed")
    with caplog.at_level(logging.WARNING, logger="runalert"):
        for _ in range(3):
            with errors.capture("hook"):
                raise KeyError("guard-test-key")
    assert errors.count == 3
    lines = [r.getMessage() for r in caplog.records if "Thing.hook failed" in r.getMessage()]
    assert lines == ["runalert: Thing.hook failed (KeyError: 'guard-test-key'); training goes on"]
    with pytest.raises(KeyboardInterrupt), errors.capture("hook"):
        raise KeyboardInterrupt
    assert errors.count == 3
