"""PyTorch Lightning end to end: real Trainer runs of a tiny model on the CPU, alerts received over HTTP."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest
from tests.support import wait_for

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from integrations.conftest import Receiver, level_counts, run_example  # noqa: E402
from integrations.metric_server import metric_server_fixture  # noqa: E402, F401 (the metric_server fixture)
from integrations.signals import SIGINT, SIGTERM, signal_pair  # noqa: E402
from runalert.alerting import Alerter  # noqa: E402
from runalert.automations import RunEvent  # noqa: E402
from runalert.lightning import AlertCallback  # noqa: E402


class Tiny(pl.LightningModule):
    def __init__(self, nan_from: int | None = None, crash_at: int | None = None) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.nan_from, self.crash_at = nan_from, crash_at

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.crash_at is not None and self.global_step == self.crash_at:
            raise RuntimeError(f"boom at step {self.global_step}")
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        if self.nan_from is not None and self.global_step >= self.nan_from:
            loss = loss * math.nan
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader(n: int = 64, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)), batch_size=8)


def trainer(callback: Any, module: Any = pl, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 8,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    options.update(kwargs)
    callbacks = [callback, *options.pop("extra_callbacks", [])]
    return module.Trainer(callbacks=callbacks, **options)


def test_nan_loss_alerts_once_with_key_and_step(receiver: Receiver, alerter: Alerter) -> None:
    callback = AlertCallback(alerter=alerter, run_name="lit-nan")
    t = trainer(callback, max_steps=10)
    t.fit(Tiny(nan_from=3), loader())
    assert t.global_step == 10  # not stopped: stop_on_nonfinite is off
    alerter.flush(5)
    nan = receiver.wait(1, "Non-finite")
    assert len(nan) == 1, nan
    assert nan[0]["level"] == "ERROR"
    assert nan[0]["title"] == "Non-finite loss"
    # NaN from the training_step that sees global_step 3: optimizer step 4 (1-based, global_step once it completes)
    assert nan[0]["fields"]["step"] == "4" and nan[0]["fields"]["epoch"] == "1"
    assert nan[0]["fields"]["key"] == "loss"  # the returned loss first (the logged train_loss is NaN too)
    assert nan[0]["run"] == "lit-nan"
    assert "loss = nan at step 4, epoch 1," in nan[0]["text"]
    receiver.settle()
    assert len(receiver.titled("Non-finite")) == 1
    assert sys.excepthook is sys.__excepthook__  # Lightning has on_exception: no process hooks at all


def test_stop_on_nonfinite_stops_training_on_the_step_with_reads_every_step(
    receiver: Receiver, alerter: Alerter
) -> None:
    callback = AlertCallback(alerter=alerter, stop_on_nonfinite=True, check_every_n_steps=1)
    t = trainer(callback, max_steps=20)
    t.fit(Tiny(nan_from=4), loader())
    assert t.global_step == 5  # the NaN step ran (and stepped the optimizer), then the loop stopped
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert "Training will stop" in nan["text"] and nan["fields"]["step"] == "5"
    (fit,) = receiver.wait(1, "Fit finished")
    assert "after 5 steps" in fit["text"] and fit["fields"]["steps"] == "5"
    assert fit["fields"]["stopped"] == "stop_on_nonfinite: non-finite loss (nan) at step 5"


class WaitsForTheRead(Tiny):
    """Steps slower than the reads' pace (as a real model's): from the step after the first NaN on, each training
    step waits (30 s at most) until runalert, off the training thread, has read the NaN and asked to stop."""

    def __init__(self, callback: Any, nan_from: int) -> None:
        super().__init__(nan_from=nan_from)
        self.callback = callback
        self.waited: list[bool] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.nan_from is not None and self.global_step > self.nan_from:
            self.waited.append(wait_for(lambda: self.callback.monitor.should_stop, timeout=30))
        return super().training_step(batch, batch_idx)


def test_stop_on_nonfinite_with_reads_paced_by_time_stops_at_the_first_step_end_after_the_read(
    receiver: Receiver, alerter: Alerter
) -> None:
    # The default reads the held losses off the training thread, about every 0.05 s: the alert still names the
    # NaN's own step, and training stops at the first step end after the read that found it. Here the NaN is at
    # step 5 and step 6 lasts until that read: training stops after step 6. (The old code read on the training
    # thread, only in its own hooks: step 6 would have waited for a read that never came.)
    callback = AlertCallback(alerter=alerter, stop_on_nonfinite=True)
    module = WaitsForTheRead(callback, nan_from=4)
    t = trainer(callback, max_steps=40)
    t.fit(module, loader())
    assert module.waited == [True]  # one step waited, and the read came while it did
    assert t.global_step == 6
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["fields"]["step"] == "5" and "Training will stop" in nan["text"]
    (fit,) = receiver.wait(1, "Fit finished")
    assert "Stopped: stop_on_nonfinite: non-finite loss (nan) at step 5." in fit["text"]


def test_the_step_hook_reads_nothing_and_dispatches_no_torch_operation_on_the_training_thread(
    receiver: Receiver, alerter: Alerter
) -> None:
    # Every torch operation dispatched inside on_train_batch_end, on the training thread, is recorded with torch's
    # own dispatch-mode hook (thread-local: the queue's thread is not recorded). With the default reads, the hook
    # only appends references; the values are still read (off the training thread) and the NaN found at its step.
    # (The old code read the held tensors inside the hook: a stack and a copy every few steps.)
    from tests.support.torch_ops import OpRecorder

    callback = AlertCallback(alerter=alerter, run_name="lit-no-sync")
    recorder = OpRecorder()
    hook = callback.on_train_batch_end

    def recorded(*args: Any, **kwargs: Any) -> None:
        with recorder:
            hook(*args, **kwargs)

    callback.on_train_batch_end = recorded  # type: ignore[method-assign]
    t = trainer(callback, max_steps=24)
    t.fit(Tiny(nan_from=20), loader())
    assert t.global_step == 24
    assert recorder.ops == []
    assert callback.monitor.stats.steps == 24 and callback.monitor.stats.checks >= 1
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["fields"]["step"] == "21" and nan["fields"]["epoch"] == "3"


def test_crash_alerts_once_and_exception_propagates(receiver: Receiver, alerter: Alerter) -> None:
    callback = AlertCallback(alerter=alerter, run_name="lit-crash")
    t = trainer(callback)
    with pytest.raises(RuntimeError, match="boom at step 2"):
        t.fit(Tiny(crash_at=2), loader())
    alerter.flush(5)
    (crash,) = receiver.wait(1, "Run crashed")
    assert crash["level"] == "ERROR"
    assert crash["title"] == "Run crashed: RuntimeError"
    assert "boom at step 2" in crash["text"]
    assert crash["fields"]["exception"] == "RuntimeError"
    assert crash["fields"]["rank"] == "0"
    receiver.settle()
    assert level_counts(receiver.alerts()) == {"ERROR": 1}  # no fit summary after a crash


def test_fit_and_test_summaries_with_early_stopping_reason(receiver: Receiver, alerter: Alerter) -> None:
    from lightning.pytorch.callbacks import EarlyStopping

    early = EarlyStopping(monitor="val_loss", stopping_threshold=1e9)  # stops at the first validation
    callback = AlertCallback(alerter=alerter, run_name="lit-summary")
    t = trainer(callback, max_steps=40, val_check_interval=4, check_val_every_n_epoch=None, extra_callbacks=[early])
    t.fit(Tiny(), loader(), loader(16, 1))
    assert early.stopping_reason_message
    t.test(t.lightning_module, loader(16, 2), verbose=False)
    alerter.flush(5)
    (fit,) = receiver.wait(1, "Fit finished")
    assert fit["level"] == "INFO"
    assert "val_loss" in fit["text"]
    assert early.stopping_reason_message.strip() in fit["text"]
    (test,) = receiver.wait(1, "Test finished")
    assert "test_loss" in test["text"]
    assert test["run"] == "lit-summary"
    receiver.settle()
    assert level_counts(receiver.alerts()) == {"INFO": 2}


def test_local_rule_fires_once(receiver: Receiver, alerter: Alerter) -> None:
    callback = AlertCallback(alerter=alerter, rules=[RunEvent.metric("loss") > -1.0])  # true from the first step
    trainer(callback, max_steps=8).fit(Tiny(), loader())
    alerter.flush(5)
    rules = receiver.wait(1, "Rule")
    receiver.settle()
    assert len(receiver.titled("Rule")) == 1, rules
    assert "loss" in rules[0]["title"] + rules[0]["text"]


def test_state_dict_survives_checkpoint_resume(receiver: Receiver, alerter: Alerter, tmp_path: Any) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    first = AlertCallback(alerter=alerter, run_name="lit-resume")
    trainer(first, max_steps=4, enable_checkpointing=True, extra_callbacks=[checkpoints]).fit(
        Tiny(nan_from=2), loader()
    )
    assert first.state_dict()["nonfinite_sent"] is True
    alerter.flush(5)
    assert len(receiver.wait(1, "Non-finite")) == 1
    (path,) = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    saved = torch.load(path, weights_only=False)["callbacks"]
    assert any(state.get("nonfinite_sent") for state in saved.values())

    # A new process would build a new callback: its state comes from the checkpoint, so the NaN that goes on
    # after the resume is not reported a second time.
    second = AlertCallback(alerter=alerter, run_name="lit-resume")
    trainer(second, max_steps=8, enable_checkpointing=False).fit(Tiny(nan_from=2), loader(), ckpt_path=str(path))
    assert second.monitor.nonfinite_sent is True
    alerter.flush(5)
    receiver.settle()
    assert len(receiver.titled("Non-finite")) == 1


class ManualTiny(Tiny):
    """Manual optimization: the module steps its optimizer itself (global_step counts those steps)."""

    def __init__(self, nan_from: int | None = None) -> None:
        super().__init__(nan_from=nan_from)
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        loss = super().training_step(batch, batch_idx)
        optimizer.zero_grad()
        if not math.isnan(float(loss.detach())):
            self.manual_backward(loss)
        optimizer.step()
        return loss


@pytest.mark.parametrize(
    ("module", "options", "batches"),
    [
        (Tiny, {"accumulate_grad_batches": 2}, 7),  # global_step 3 is batches 6 and 7
        (ManualTiny, {}, 4),
    ],
    ids=["accumulate_grad_batches=2", "manual_optimization"],
)
def test_the_step_reported_is_the_optimizer_step_being_computed(
    receiver: Receiver, alerter: Alerter, module: Any, options: dict[str, Any], batches: int
) -> None:
    callback = AlertCallback(alerter=alerter, run_name="lit-steps", check_every_n_steps=1)
    t = trainer(callback, max_steps=5, **options)
    t.fit(module(nan_from=3), loader())
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["fields"]["step"] == "4"  # training_step saw global_step 3: it computes optimizer step 4
    (fit,) = receiver.wait(1, "Fit finished")
    assert fit["fields"]["steps"] == "5" and "after 5 steps" in fit["text"]  # global_step, not batches
    assert callback.monitor.stats.steps >= batches


def test_the_step_reported_after_a_checkpoint_resume_goes_on_from_the_checkpoint(
    receiver: Receiver, alerter: Alerter, tmp_path: Any
) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    trainer(AlertCallback(alerter=alerter), max_steps=4, enable_checkpointing=True, extra_callbacks=[checkpoints]).fit(
        Tiny(), loader()
    )
    (path,) = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    resumed = AlertCallback(alerter=alerter, run_name="lit-resumed-steps")
    trainer(resumed, max_steps=9).fit(Tiny(nan_from=6), loader(), ckpt_path=str(path))
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["fields"]["step"] == "7"  # training_step saw global_step 6
    assert resumed.monitor.stats.steps == 5  # steps 5 to 9, after the resume


def test_invalid_options_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="on_nonfinite"):
        AlertCallback(on_nonfinite="sometimes")
    with pytest.raises(ValueError, match="on_stage_end"):
        AlertCallback(on_stage_end=("fit", "deploy"))
    with pytest.raises(ValueError, match="check_every_n_steps"):
        AlertCallback(check_every_n_steps=0)
    with pytest.raises(TypeError, match=r"unknown option.*stop_on_nan.*the options are"):
        AlertCallback(stop_on_nan=True)
    assert AlertCallback(rule_cooldown=60).options.rule_cooldown == 60  # the rest of MonitorOptions passes through


def test_standalone_pytorch_lightning_trainer(receiver: Receiver, alerter: Alerter) -> None:
    standalone = pytest.importorskip("pytorch_lightning")
    callback = AlertCallback(alerter=alerter)
    assert isinstance(callback, standalone.Callback) and isinstance(callback, pl.Callback)

    class PLTiny(standalone.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y) * (math.nan if self.global_step >= 2 else 1.0)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    trainer(callback, module=standalone, max_steps=4).fit(PLTiny(), loader())
    alerter.flush(5)
    assert receiver.wait(1, "Non-finite")[0]["fields"]["step"] == "3"
    assert len(receiver.wait(1, "Fit finished")) == 1


def test_ddp_two_ranks_one_crash_alert_naming_rank_1(receiver: Receiver) -> None:
    # Real DDP on the CPU: Lightning starts rank 1 by running the script again; gloo between the two.
    # Both ranks diverge at step 2 (one NaN alert, from rank zero), then rank 1 raises at step 5.
    result = run_example(
        "lightning_train.py",
        *("--devices", "2", "--steps", "12", "--nan-at-step", "2", "--crash-at-step", "5", "--crash-rank", "1"),
        receiver=receiver,
        timeout=180,
    )
    assert result.returncode != 0
    assert "simulated failure at step 5 on rank 1" in result.stderr
    receiver.wait(1, "Run crashed", timeout=15)
    alerts = receiver.settle(1.0)
    errors = [a for a in alerts if a["level"] == "ERROR"]
    crashes = [a for a in errors if a["title"].startswith("Run crashed")]
    assert len(crashes) == 1, alerts
    assert crashes[0]["fields"]["rank"] == "1"
    assert "rank 1" in crashes[0]["text"]
    nan = [a for a in alerts if a["title"].startswith("Non-finite")]
    assert len(nan) == 1 and nan[0]["fields"]["rank"] == "0", alerts
    others = [a for a in alerts if a not in crashes and a not in nan]
    assert all(a["level"] == "WARN" and a["fields"]["rank"] == "0" for a in others), others
    assert len({a["run"] for a in alerts}) == 1  # one run name on both ranks


def test_ddp_stop_on_nonfinite_stops_every_rank_and_only_rank_zero_sends(receiver: Receiver) -> None:
    # The ranks agree on stopping (one all-reduce every 10 steps), so none waits for the other in a collective.
    result = run_example(
        "lightning_train.py",
        *("--devices", "2", "--steps", "30", "--nan-at-step", "3", "--stop-on-nan"),
        receiver=receiver,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    receiver.wait(1, "Test finished", timeout=15)
    alerts = receiver.settle(1.0)
    assert sorted(a["title"] for a in alerts) == ["Fit finished", "Non-finite loss", "Test finished"], alerts
    assert all(a["fields"]["rank"] == "0" for a in alerts)
    (fit,) = receiver.titled("Fit finished")
    # The ranks agree on stopping on steps 10, 20 ... (with reads paced by time): both stop after step 10.
    assert fit["fields"]["steps"] == "10" and "stop_on_nonfinite" in fit["text"]


class Untouchable:
    """A value whose attributes raise: runalert must not let that reach the training loop."""

    @property
    def ndim(self) -> int:
        raise RuntimeError("do not touch")


class UnreadableError(Exception):
    """Raised by :class:`Unreadable` (its own type: runalert logs each kind of failure once per process)."""


class Unreadable(float):
    """A float that cannot be read as one: reading a watched value fails inside runalert."""

    def __float__(self) -> float:
        raise UnreadableError("unreadable")


class OddOutputs(Tiny):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        loss = super().training_step(batch, batch_idx)
        return {"loss": loss, "odd": Untouchable(), "aux_loss": Unreadable(1.0)}


def test_a_failure_inside_a_step_hook_never_reaches_training(
    receiver: Receiver, alerter: Alerter, caplog: pytest.LogCaptureFixture
) -> None:
    callback = AlertCallback(alerter=alerter, run_name="lit-odd")
    t = trainer(callback, max_steps=6)
    t.fit(OddOutputs(), loader())
    assert t.global_step == 6  # trained to the end
    # "aux_loss" is watched (a loss) and fails on each step: each failure counted, logged once; "odd" is
    # neither watched nor fed to a rule, so runalert never touches it.
    assert callback.monitor.stats.errors == 6
    assert callback.monitor.stats.steps == 6
    logged = [r for r in caplog.records if r.name == "runalert" and "UnreadableError" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
    assert "RunMonitor.step failed" in logged[0].getMessage()
    assert "Fit finished" in [a["title"] for a in receiver.wait(1)]


def test_a_bug_in_a_step_hook_is_counted_logged_once_and_never_reaches_training(
    receiver: Receiver, alerter: Alerter, caplog: pytest.LogCaptureFixture
) -> None:
    callback = AlertCallback(alerter=alerter, run_name="lit-bug")

    def broken(*args: Any, **kwargs: Any) -> None:  # a bug in runalert's own step code (fault injection)
        raise KeyError("a bug")

    callback.monitor.step = broken  # type: ignore[method-assign]
    t = trainer(callback, max_steps=6)
    t.fit(Tiny(), loader())
    assert t.global_step == 6  # trained to the end
    assert callback.hook_failures == 6  # each failure counted
    logged = [r for r in caplog.records if r.name == "runalert" and "on_train_batch_end" in r.getMessage()]
    assert len(logged) == 1  # logged once
    assert "Fit finished" in [a["title"] for a in receiver.wait(1)]


@pytest.mark.timeout(900)  # two fresh interpreters importing Lightning side by side: minutes at load 15 (signals.py)
@pytest.mark.parametrize("accumulate", [1, 2], ids=["plain", "accumulate_grad_batches=2"])
def test_a_real_sigterm_during_fit_is_one_preemption_alert_and_the_exit_status_is_lightnings(
    receiver: Receiver, accumulate: int
) -> None:
    # Lightning's handler only notes the SIGTERM; the step in progress completes, then Lightning raises its
    # SIGTERMException (a SystemExit without a code): the process exits 0, with runalert or without it.
    without, ended = signal_pair("lightning", SIGTERM, receiver, wait_at_step=3, accumulate=accumulate)
    assert ended.returncode == without.returncode == 0, ended.stderr[-3000:]
    assert "FIT RETURNED" not in ended.lines
    (alert,) = ended.alerts  # delivered before the process ended, and nothing else
    assert alert["title"] == "Run preempted (SIGTERM)" and alert["level"] == "ERROR"
    # The batch in progress when SIGTERM came completed, then Lightning stopped: plain, that batch completed step 3
    # and the alert names the next one (completed + 1); accumulating 2 batches a step, it was the first half of
    # step 3, still the step being computed. The text and the field agree.
    assert ended.last_done == (3 if accumulate == 1 else 2)
    step = ended.last_done + 1
    assert alert["fields"]["step"] == str(step) and f"at step {step}, epoch 1" in alert["text"]


@pytest.mark.timeout(900)  # two fresh interpreters importing Lightning side by side: minutes at load 15 (signals.py)
def test_a_real_sigint_during_fit_is_one_interruption_warning(receiver: Receiver) -> None:
    without, ended = signal_pair("lightning", SIGINT, receiver, wait_at_step=3)
    assert ended.returncode == without.returncode == 1  # Lightning's sys.exit(1) after an interrupt
    (alert,) = ended.alerts
    assert alert["title"] == "Run interrupted" and alert["level"] == "WARN"
    assert ended.last_done == 2  # the interrupted step (3) never completed
    assert alert["fields"]["step"] == "3" and "at step 3, epoch 1" in alert["text"]


class Logging(Tiny):
    """Logs as most Lightning code does: ``self.log``/``self.log_dict`` in ``training_step`` (``on_step=True``, the
    default there), a scripted ``aux_loss`` (NaN in optimizer step ``aux_nan_at``) and ``train_loss`` (10.0 from
    step ``loss_jump_at`` on), besides a key logged on step and epoch both."""

    def __init__(self, aux_nan_at: int | None = None, loss_jump_at: int | None = None, epoch_key: bool = True) -> None:
        super().__init__()
        self.aux_nan_at, self.loss_jump_at, self.epoch_key = aux_nan_at, loss_jump_at, epoch_key

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        step = self.global_step + 1
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        jumped = self.loss_jump_at is not None and step >= self.loss_jump_at
        aux = torch.tensor(math.nan if step == self.aux_nan_at else 0.25)
        self.log_dict({"train_loss": torch.tensor(10.0) if jumped else torch.tensor(1.0), "aux_loss": aux})
        if self.epoch_key:
            self.log("seen", float(step), on_step=True, on_epoch=True)
        return loss


def test_a_nan_in_a_value_logged_with_self_log_is_reported_at_its_step(receiver: Receiver, alerter: Alerter) -> None:
    # 480 samples in batches of 8: one 60-step epoch; aux_loss is NaN in step 5 only.
    callback = AlertCallback(alerter=alerter, run_name="lit-logged-nan")
    t = trainer(callback, max_steps=-1, max_epochs=1)
    t.fit(Logging(aux_nan_at=5), loader(480))
    assert t.global_step == 60
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["title"] == "Non-finite aux_loss" and nan["fields"]["key"] == "aux_loss"  # on_nonfinite="loss"
    assert nan["fields"]["step"] == "5" and nan["fields"]["epoch"] == "1"
    assert "aux_loss = nan at step 5, epoch 1," in nan["text"]
    receiver.settle()
    assert len(receiver.titled("Non-finite")) == 1


def test_a_rule_on_a_value_logged_with_self_log_fires_at_its_step(receiver: Receiver, alerter: Alerter) -> None:
    callback = AlertCallback(alerter=alerter, run_name="lit-logged-rule", rules=[RunEvent.metric("train_loss") > 5])
    trainer(callback, max_steps=-1, max_epochs=1).fit(Logging(loss_jump_at=7), loader(480))
    alerter.flush(5)
    (rule,) = receiver.wait(1, "Rule")
    assert rule["fields"]["step"] == "7", rule
    # Each field once: the value (no "value" beside an equal "metric value"), the run (no "run id" equal to it).
    assert rule["fields"]["metric value"] == "10" and "value" not in rule["fields"]
    assert rule["fields"]["run"] == "lit-logged-rule" and "run id" not in rule["fields"]
    receiver.settle()
    assert len(receiver.titled("Rule")) == 1


def test_a_server_stores_each_logged_value_once_per_step_in_order(alerter: Alerter, metric_server: Any) -> None:
    from runalert.client import Client

    epochs, per_epoch = 2, 12
    callback = AlertCallback(alerter=alerter, run_name="lit-stream", server=metric_server.url, project="lit-stream")
    t = trainer(callback, max_steps=-1, max_epochs=epochs)
    t.fit(Logging(), loader(8 * per_epoch), loader(16, 1))
    assert callback.monitor.server_run is not None
    series = Client(metric_server.url, project="lit-stream").metrics(callback.monitor.server_run.run_id)
    steps = list(range(1, epochs * per_epoch + 1))
    for key in ("train_loss", "aux_loss", "seen_step", "loss"):  # logged on step (and the returned loss)
        assert [step for step, _value, _time in series[key]] == steps, (key, series[key])
    assert [value for _step, value, _time in series["seen_step"]] == [float(s) for s in steps]
    # Logged on epoch too: its epoch mean once per epoch, at the epoch's last step.
    assert [step for step, _value, _time in series["seen_epoch"]] == [per_epoch * e for e in range(1, epochs + 1)]
    assert [step for step, _value, _time in series["val_loss"]] == [per_epoch * e for e in range(1, epochs + 1)]


def test_a_nan_in_an_epochs_last_step_is_reported_with_that_epoch(receiver: Receiver, alerter: Alerter) -> None:
    # Reads every 3 steps: step 8, the first epoch's last, would be read at step 9, in the second epoch; the
    # epoch's end reads what is held first (also with no epoch-level value logged).
    callback = AlertCallback(alerter=alerter, run_name="lit-epoch-end", check_every_n_steps=3)
    trainer(callback, max_steps=-1, max_epochs=2).fit(Logging(aux_nan_at=8, epoch_key=False), loader(64))
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["fields"]["step"] == "8" and nan["fields"]["epoch"] == "1", nan
    assert "at step 8, epoch 1," in nan["text"]
