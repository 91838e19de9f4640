"""transformers end to end: real Trainer runs of a tiny BERT (built from a config) on the CPU."""

from __future__ import annotations

import math
import re
import sys
import threading
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from torch.utils.data import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from integrations.conftest import Receiver, level_counts, run_example  # noqa: E402
from integrations.metric_server import metric_server_fixture  # noqa: E402, F401 (the metric_server fixture)
from runalert.alerting import Alerter  # noqa: E402
from runalert.automations import RunEvent  # noqa: E402
from runalert.transformers import AlertCallback  # noqa: E402


class Tokens(Dataset):  # type: ignore[type-arg]
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 64, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] >= 32).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=8,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def make_trainer(callback: Any, tmp_path: Any, *, nan_from: int | None = None, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 8,
        "per_device_train_batch_size": 8,
        "logging_steps": 4,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
    }
    options.update(kwargs)
    extra = options.pop("extra_callbacks", [])
    trainer_class = options.pop("trainer_class", Trainer)
    trainer = trainer_class(
        model=tiny_bert(),
        args=TrainingArguments(**options),
        train_dataset=Tokens(128, 0),
        eval_dataset=Tokens(16, 1),
        callbacks=[callback, *extra],
    )
    if nan_from is not None:

        def diverge(module: Any, args: Any, kwargs: Any, output: Any) -> Any:
            if module.training and trainer.state.global_step + 1 >= nan_from:
                output.loss = output.loss * math.nan
            return output

        trainer.model.register_forward_hook(diverge, with_kwargs=True)
    return trainer


def test_nan_loss_caught_under_default_logging_nan_inf_filter(
    receiver: Receiver, alerter: Alerter, tmp_path: Any
) -> None:
    callback = AlertCallback(alerter=alerter, run_name="hf-nan")
    trainer = make_trainer(callback, tmp_path, nan_from=3)
    assert trainer.args.logging_nan_inf_filter is True  # the default, which hides the NaN from the logs
    trainer.train()
    assert trainer.state.global_step == 8
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(math.isfinite(value) for value in logged)  # on_log never saw the NaN
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["level"] == "ERROR"
    assert nan["fields"]["step"] == "3"
    assert nan["run"] == "hf-nan"
    assert nan["title"] == "Non-finite loss (model output)"  # says where the value came from
    assert nan["fields"]["key"] == "loss (model output)"
    receiver.settle()
    assert len(receiver.titled("Non-finite")) == 1


def test_stop_on_nonfinite_stops_training(receiver: Receiver, alerter: Alerter, tmp_path: Any) -> None:
    callback = AlertCallback(alerter=alerter, stop_on_nonfinite=True, check_every_n_steps=1)
    trainer = make_trainer(callback, tmp_path, nan_from=3, max_steps=20)
    trainer.train()
    assert trainer.state.global_step == 3
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert "Training will stop" in nan["text"]
    (fit,) = receiver.wait(1, "Fit finished")
    assert "after 3 steps" in fit["text"]
    assert fit["fields"]["stopped"] == "stop_on_nonfinite: non-finite loss (model output) (nan) at step 3"


def test_train_and_predict_summaries(receiver: Receiver, alerter: Alerter, tmp_path: Any) -> None:
    callback = AlertCallback(alerter=alerter, run_name="hf-summary")
    trainer = make_trainer(callback, tmp_path, eval_strategy="steps", eval_steps=4)
    trainer.train()
    trainer.predict(Tokens(16, 2))
    alerter.flush(5)
    (fit,) = receiver.wait(1, "Fit finished")
    assert fit["level"] == "INFO" and "eval_loss" in fit["text"] and "train_loss" in fit["text"]
    (test,) = receiver.wait(1, "Test finished")
    assert "test_loss" in test["text"] and test["run"] == "hf-summary"
    receiver.settle()
    assert level_counts(receiver.alerts()) == {"INFO": 2}


def test_local_rule_fires_once(receiver: Receiver, alerter: Alerter, tmp_path: Any) -> None:
    callback = AlertCallback(alerter=alerter, rules=[RunEvent.metric("loss") > -1.0])
    make_trainer(callback, tmp_path).train()
    alerter.flush(5)
    receiver.wait(1, "Rule")
    receiver.settle()
    assert len(receiver.titled("Rule")) == 1


def test_crash_hooks_live_only_while_training(receiver: Receiver, alerter: Alerter, tmp_path: Any) -> None:
    seen: list[Any] = []

    class Spy(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seen.append((sys.excepthook, threading.excepthook))

    original = (sys.excepthook, threading.excepthook)
    make_trainer(AlertCallback(alerter=alerter), tmp_path, extra_callbacks=[Spy()]).train()
    assert seen and all(hooks != original for hooks in seen)  # chained during train()
    assert (sys.excepthook, threading.excepthook) == original  # restored after it


def test_crash_alerts_once_and_exception_propagates(receiver: Receiver) -> None:
    # No exception hook in transformers: the crash must reach sys.excepthook, so the script runs on its own.
    result = run_example("transformers_train.py", "--steps", "10", "--crash-at-step", "4", receiver=receiver)
    assert result.returncode == 1
    assert "RuntimeError: simulated failure at step 4" in result.stderr  # the traceback still prints
    (crash,) = receiver.wait(1, "Run crashed")
    assert crash["level"] == "ERROR" and crash["title"] == "Run crashed: RuntimeError"
    assert crash["fields"]["exception"] == "RuntimeError"
    receiver.settle()
    assert level_counts(receiver.alerts()) == {"ERROR": 1}


def test_invalid_options_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="stall_after"):
        AlertCallback(stall_after=-5)


class AuxLogging(Trainer):
    """A Trainer that adds its own ``aux_loss`` to each training log (as TRL's trainers add their metrics): NaN in
    the log of optimizer step ``nan_at``."""

    nan_at = 0

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:
            logs = {**logs, "aux_loss": math.nan if self.state.global_step == self.nan_at else 0.25}
        super().log(logs, *args, **kwargs)


def test_a_nan_in_a_logged_value_is_reported_at_its_step_and_epoch(
    receiver: Receiver, alerter: Alerter, tmp_path: Any
) -> None:
    callback = AlertCallback(alerter=alerter, run_name="hf-aux")
    AuxLogging.nan_at = 21
    make_trainer(callback, tmp_path, max_steps=32, logging_steps=1, trainer_class=AuxLogging).train()  # 16 an epoch
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["title"] == "Non-finite aux_loss"
    assert nan["fields"]["step"] == "21" and nan["fields"]["epoch"] == "2"  # epochs 1-based: step 21 is in the 2nd
    assert "aux_loss = nan at step 21, epoch 2," in nan["text"]


def test_summary_without_framework_noise_nor_the_filtered_loss_beside_its_nan(
    receiver: Receiver, alerter: Alerter, tmp_path: Any
) -> None:
    callback = AlertCallback(alerter=alerter, run_name="hf-noise")
    make_trainer(callback, tmp_path, nan_from=1, max_steps=8).train()  # every loss NaN: the logs say loss=0.0
    alerter.flush(5)
    (fit,) = receiver.wait(1, "Fit finished")
    assert "loss (model output)=nan" in fit["text"]
    assert not re.search(r"(^|[ ,])loss=", fit["text"]), fit["text"]  # the filtered 0 is not shown beside the NaN
    for noise in ("total_flos", "train_runtime", "_per_second"):
        assert noise not in fit["text"], fit["text"]
    assert "after 8 steps" in fit["text"] and fit["fields"]["stopped"] == "max_steps=8 reached"


def test_a_server_stores_each_logged_value_once_per_step_in_order(
    alerter: Alerter, tmp_path: Any, metric_server: Any
) -> None:
    from runalert.client import Client

    callback = AlertCallback(alerter=alerter, run_name="hf-stream", server=metric_server.url, project="hf-stream")
    trainer = make_trainer(callback, tmp_path, max_steps=8, logging_steps=2, eval_strategy="steps", eval_steps=4)
    trainer.train()
    trainer.predict(Tokens(16, 2))
    assert callback.monitor.server_run is not None
    series = Client(metric_server.url, project="hf-stream").metrics(callback.monitor.server_run.run_id)
    assert [step for step, _v, _t in series["loss (model output)"]] == list(range(1, 9))
    assert [step for step, _v, _t in series["loss"]] == [2, 4, 6, 8]
    assert [step for step, _v, _t in series["eval_loss"]] == [4, 8]
    assert [step for step, _v, _t in series["test_loss"]] == [8]  # once (the stage end only shows it)


class AuxInStep(Trainer):
    """Logs ``aux_loss`` from ``compute_loss``, while the step is computed (as custom trainers log their extra
    losses): NaN in optimizer step ``nan_at``."""

    nan_at = 0

    def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        loss = super().compute_loss(model, inputs, *args, **kwargs)
        if model.training:
            computing = self.state.global_step + 1
            self.log({"aux_loss": math.nan if computing == self.nan_at else 0.25})
        return loss


@pytest.mark.parametrize(("nan_at", "epoch"), [(5, 1), (17, 2)], ids=["mid-epoch", "an-epoch's-first-step"])
def test_a_value_logged_while_a_step_is_computed_is_at_that_step(
    receiver: Receiver, alerter: Alerter, tmp_path: Any, nan_at: int, epoch: int
) -> None:
    callback = AlertCallback(alerter=alerter, run_name="hf-in-step")
    AuxInStep.nan_at = nan_at
    make_trainer(callback, tmp_path, max_steps=20, trainer_class=AuxInStep).train()  # 16 steps an epoch
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["title"] == "Non-finite aux_loss"
    assert nan["fields"]["step"] == str(nan_at) and nan["fields"]["epoch"] == str(epoch)
    assert f"at step {nan_at}, epoch {epoch}," in nan["text"]
