"""``RunEvent.metric(...).is_nonfinite()`` given to a framework callback (``rules=`` or ``automations=``) fires on
real training loops of tiny models on the CPU, delivered to a loopback webhook (and, through a real runalert
server, from the values the callback streams). The callbacks' own NaN alert stays one ERROR per run."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from tests.support import wait_for

from integrations.conftest import Receiver
from integrations.metric_server import metric_server_fixture  # noqa: F401 (the metric_server fixture)
from runalert.alerting import Alerter
from runalert.automations import OnRunMetric, Project, RunEvent, SendWebhook

LOSS_RULE = "Rule: loss is non-finite (NaN or inf)"


# -- Lightning ------------------------------------------------------------------------------------------------
def _lightning() -> tuple[Any, Any]:
    pl = pytest.importorskip("lightning.pytorch")
    torch = pytest.importorskip("torch")
    return pl, torch


def _fit_lightning(callback: Any, *, nan_steps: set[int] | None = None, probe_nan: set[int] | None = None) -> Any:
    """Fit a tiny model for 10 steps: its loss is NaN from the first of ``nan_steps`` (1-based optimizer steps,
    the weights stay NaN afterwards); a logged ``probe`` value is NaN at the steps in ``probe_nan``, else 1.0."""
    pl, torch = _lightning()
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            step = self.global_step + 1  # the optimizer step being computed (docs/semantics.md)
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            if nan_steps and step >= min(nan_steps):
                loss = loss * math.nan
            self.log("probe", math.nan if probe_nan and step in probe_nan else 1.0)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)), batch_size=8)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[callback],
    )
    trainer.fit(Tiny(), data)
    assert trainer.global_step == 10  # not stopped: stop_on_nonfinite is off
    return trainer


def test_lightning_an_is_nonfinite_rule_fires_once_at_the_nan_step(receiver: Receiver, alerter: Alerter) -> None:
    _lightning()
    from runalert.lightning import AlertCallback

    callback = AlertCallback(
        alerter=alerter, run_name="lit-nan-rule", on_stage_end=(), rules=[RunEvent.metric("loss").is_nonfinite()]
    )
    _fit_lightning(callback, nan_steps={7})
    alerts = receiver.settle()
    (rule,) = [a for a in alerts if a["title"] == LOSS_RULE]  # NaN from step 7 to 10: one activation
    assert rule["level"] == "WARN" and rule["fields"]["step"] == "7" and rule["run"] == "lit-nan-rule"
    assert "value nan at step 7" in rule["text"]
    (own,) = [a for a in alerts if a["title"] == "Non-finite loss"]  # the callback's own alert: once
    assert own["level"] == "ERROR" and own["fields"]["step"] == "7"
    assert len(alerts) == 2, [a["title"] for a in alerts]


def test_lightning_a_value_that_goes_nan_finite_nan_fires_the_rule_twice(receiver: Receiver, alerter: Alerter) -> None:
    _lightning()
    from runalert.lightning import AlertCallback

    rule = RunEvent.metric("probe").is_nonfinite()
    callback = AlertCallback(alerter=alerter, run_name="lit-edges", on_stage_end=(), rules=[rule], rule_cooldown=0)
    _fit_lightning(callback, probe_nan={3, 4, 8})
    alerts = receiver.settle()
    assert [(a["title"], a["fields"]["step"]) for a in alerts] == [
        ("Rule: probe is non-finite (NaN or inf)", "3"),  # steps 3-4: one activation
        ("Rule: probe is non-finite (NaN or inf)", "8"),  # finite in between: fires again
    ]  # "probe" names no loss: the callback's own check (on_nonfinite="loss") does not watch it


def test_lightning_an_is_nonfinite_automation_fires_on_the_server_from_the_streamed_nan(
    receiver: Receiver, alerter: Alerter, metric_server: Any
) -> None:
    _lightning()
    from runalert.client import Client
    from runalert.lightning import AlertCallback

    project = f"nan-{uuid.uuid4().hex[:8]}"
    Client(metric_server.url, project=project).put_integration("hook", "webhook", url=receiver.url)
    payload = {"text": "${metric_name} = ${metric_value} at ${step}", "automation": "${automation_name}"}
    event = OnRunMetric(scope=Project(name=project), filter=RunEvent.metric("loss").is_nonfinite())
    automation = (event >> SendWebhook(integration="hook", payload=payload)).model_copy(update={"name": "loss-nan"})
    callback = AlertCallback(
        alerter=alerter,
        run_name="lit-server-nan",
        on_stage_end=(),
        server=metric_server.url,
        project=project,
        automations=[automation],
    )
    _fit_lightning(callback, nan_steps={7})
    client = Client(metric_server.url, project=project)
    run_id = callback.monitor.server_run.run_id
    points = client.metrics(run_id, names=["loss"])["loss"]  # finished: every step was streamed and evaluated
    assert client.run(run_id)["state"] == "FINISHED"
    assert [step for step, _value, _time in points] == list(range(1, 11))
    assert [value is None for _step, value, _time in points] == [False] * 6 + [True] * 4  # NaN: stored as null
    # The server's firings, each delivered (nothing pending): what the receiver has from them is final.
    assert wait_for(lambda: not client.alerts(pending=True), timeout=30)
    assert [a["automation"] for a in client.alerts(run_id=run_id)] == ["loss-nan"]  # NaN from 7 to 10: one edge
    bodies = [b for b in receiver.bodies if isinstance(b, dict) and b.get("automation") == "loss-nan"]
    assert bodies == [{"text": "loss = nan at 7", "automation": "loss-nan"}]
    receiver.settle()
    assert len(receiver.titled("Non-finite loss")) == 1


# -- Keras ----------------------------------------------------------------------------------------------------
def test_keras_an_is_nonfinite_rule_fires_once_at_the_nan_step(receiver: Receiver, alerter: Alerter) -> None:
    keras = pytest.importorskip("keras")
    np = pytest.importorskip("numpy")
    from runalert.keras import AlertCallback

    steps_per_epoch = 5

    class NanFromStep(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
        """Makes the model's output NaN from the optimizer step ``step`` (1-based) on."""

        def __init__(self, switch: Any, step: int) -> None:
            super().__init__()
            self.switch, self.step, self.epoch = switch, step, 0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if self.epoch * steps_per_epoch + batch + 1 == self.step:
                self.switch.assign(1.0)

    class Diverge(keras.layers.Layer):  # type: ignore[misc, name-defined]
        """Identity until its ``on`` weight is set, then NaN."""

        def __init__(self) -> None:
            super().__init__()
            self.on = self.add_weight(shape=(), initializer="zeros", trainable=False, name="on")

        def call(self, t: Any) -> Any:
            return t + keras.ops.where(self.on > 0, math.nan, 0.0)

    keras.utils.set_random_seed(0)
    diverge = Diverge()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1), diverge])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 4)).astype("float32")
    y = (x[:, :1] - x[:, 1:2]).astype("float32")
    callback = AlertCallback(
        alerter=alerter, run_name="keras-nan-rule", on_stage_end=(), rules=[RunEvent.metric("loss").is_nonfinite()]
    )
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        steps_per_epoch=steps_per_epoch,
        callbacks=[NanFromStep(diverge.on, 7), callback],
        verbose=0,
    )
    alerts = receiver.settle()
    (rule,) = [a for a in alerts if a["title"] == LOSS_RULE]  # NaN from step 7 to 15: one activation
    assert rule["level"] == "WARN" and rule["fields"]["step"] == "7"  # batch 1 of epoch 2: optimizer step 7
    assert "value nan at step 7" in rule["text"]
    (own,) = [a for a in alerts if a["title"] == "Non-finite loss"]
    assert own["level"] == "ERROR" and own["fields"]["step"] == "7"
    assert len(alerts) == 2, [a["title"] for a in alerts]
