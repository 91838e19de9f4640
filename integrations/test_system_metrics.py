"""System metrics beside a real Lightning fit on the CPU: sampled on their thread, through local rules and the
built-in alerts to a webhook receiver on loopback, and streamed to a real server whose run page shows them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from integrations.conftest import Receiver  # noqa: E402
from integrations.metric_server import metric_server_fixture  # noqa: E402, F401 (the metric_server fixture)
from integrations.test_lightning import Tiny, loader  # noqa: E402
from runalert.alerting import Alerter  # noqa: E402
from runalert.automations import RunEvent  # noqa: E402
from runalert.lightning import AlertCallback  # noqa: E402


class StopAfterReadings(pl.Callback):
    """Ends the fit (gracefully, through ``trainer.should_stop``) once the callback's sampler has taken
    ``readings`` readings and sent ``alerts`` built-in alerts: the training lasts as long as the test needs."""

    def __init__(self, alert_callback: AlertCallback, readings: int, alerts: int = 0) -> None:
        self.alert_callback, self.readings, self.alerts = alert_callback, readings, alerts

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        watch = self.alert_callback.monitor.system
        if watch is not None and watch.sampler.samples >= self.readings and len(watch.sent) >= self.alerts:
            trainer.should_stop = True


def _fit(callback: AlertCallback, tmp_path: Path, stopper: StopAfterReadings) -> Any:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=10_000,
        max_time="00:00:01:00",  # a bound if sampling never happened: the assertions then say what is missing
        default_root_dir=str(tmp_path),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[callback, stopper],
    )
    trainer.fit(Tiny(), loader(32))
    return trainer


def test_a_fit_feeds_system_metrics_to_a_rule_and_the_disk_alert_fires_once(
    receiver: Receiver, alerter: Alerter, tmp_path: Path
) -> None:
    callback = AlertCallback(
        alerter=alerter,
        system_metrics_interval=0.05,
        # A disk can never have 10^18 bytes free: the disk alert trips on the first reading and stays tripped.
        system_alerts={"disk_free_bytes": 1e18},
        rules=[RunEvent.metric("system/memory_percent") > 0],
    )
    trainer = _fit(callback, tmp_path, StopAfterReadings(callback, readings=4, alerts=1))
    watch = callback.monitor.system
    assert watch is not None and not watch.sampler.running  # stopped with the run
    assert watch.sampler.samples >= 4, "the sampler took too few readings before max_time"
    assert trainer.global_step > 0
    # Where checkpoints go: Lightning's checkpoint directory under default_root_dir.
    assert watch.sampler.disk_path.startswith(str(tmp_path))
    alerts = receiver.settle()
    disk = receiver.titled("Disk nearly full")
    assert len(disk) == 1, [a["title"] for a in alerts]  # once per run, though every reading trips it
    assert disk[0]["level"].upper() == "WARN"
    assert "checkpoints" in disk[0]["text"]
    rule = receiver.titled("Rule")
    assert len(rule) == 1, [a["title"] for a in alerts]
    assert "system/memory_percent" in rule[0]["title"] + rule[0]["text"]
    assert not receiver.titled("Resolved")
    assert not [a for a in alerts if "GPU" in a["title"]]  # a CPU run on any host: no GPU alert


def test_system_metrics_off_sends_nothing_of_them(receiver: Receiver, alerter: Alerter, tmp_path: Path) -> None:
    callback = AlertCallback(
        alerter=alerter,
        system_metrics_interval=None,
        system_alerts={"disk_free_bytes": 1e18},
        rules=[RunEvent.metric("system/memory_percent") > 0],
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=8,
        default_root_dir=str(tmp_path),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(Tiny(), loader(32))
    assert callback.monitor.system is None
    alerts = receiver.settle()  # the fit is over and the alerter drained: nothing more can come
    assert not receiver.titled("Disk nearly full") and not receiver.titled("Rule"), [a["title"] for a in alerts]


def test_system_metrics_reach_the_server_and_its_run_page(alerter: Alerter, metric_server: Any, tmp_path: Path) -> None:
    import requests

    from runalert.client import Client

    callback = AlertCallback(
        alerter=alerter,
        run_name="sys-stream",
        project="sys-stream",
        server=metric_server.url,
        system_metrics_interval=0.05,
    )
    _fit(callback, tmp_path, StopAfterReadings(callback, readings=3))
    server_run = callback.monitor.server_run
    watch = callback.monitor.system
    assert server_run is not None and watch is not None
    series = Client(metric_server.url, project="sys-stream").metrics(server_run.run_id)
    for name in ("system/cpu_percent", "system/memory_percent", "system/process_rss_bytes", "system/disk_free_bytes"):
        assert name in series, sorted(series)
        assert len(series[name]) == watch.sampler.samples, (name, series[name])
    assert all(value is not None and value > 0 for _step, value, _time in series["system/process_rss_bytes"])
    page = requests.get(f"{metric_server.url}/runs/sys-stream/{server_run.run_id}", timeout=10)
    assert page.status_code == 200
    assert "system/memory_percent" in page.text
