"""The built-in system alerts: each fires once (WARN) and resolves (INFO) with lowered thresholds, fed real readings
of this machine (psutil) and readings given through the public interface; never twice in a run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from runalert.automations import RunEvent
from runalert.monitor import MonitorOptions, RunMonitor
from runalert.system_alerts import SystemAlert, SystemAlertOptions, SystemAlerts
from runalert.system_metrics import SystemSampler
from runalert.system_watch import SystemWatch, host_alert_rank
from tests.support import Receiver, wait_for

OFF = {
    "gpu_memory_percent": None,
    "gpu_idle_percent": None,
    "disk_free_percent": None,
    "disk_free_bytes": None,
    "host_memory_percent": None,
}


def _only(**given: object) -> SystemAlertOptions:
    options = SystemAlertOptions.from_option({**OFF, **given})
    assert options is not None
    return options


def _real_reading(tmp_path: Path) -> dict[str, float]:
    return SystemSampler(60, lambda values: None, disk_path=tmp_path, gpu=False).sample()


def _kinds(changes: list[SystemAlert]) -> list[tuple[str, str]]:
    return [(change.key, change.kind) for change in changes]


def test_host_memory_fires_on_a_real_reading_then_resolves_once(tmp_path: Path) -> None:
    reading = _real_reading(tmp_path)
    used = reading["system/memory_percent"]
    alerts = SystemAlerts(_only(host_memory_percent=max(0.0, used - 1.0)))  # just below this machine's use
    fired = alerts.observe(reading, now=0, steps=1)
    assert _kinds(fired) == [("host_memory", "fired")]
    assert fired[0].level == "WARN" and fired[0].title == "Host memory nearly full" and fired[0].scope == "host"
    assert f"{used:.1f}%" in fired[0].text
    assert alerts.observe(reading, now=1, steps=2) == []  # still true: edge-triggered, nothing new
    resolved = alerts.observe({**reading, "system/memory_percent": 0.0}, now=2, steps=3)
    assert _kinds(resolved) == [("host_memory", "resolved")]
    assert resolved[0].level == "INFO" and resolved[0].title == "Resolved: Host memory nearly full"
    assert alerts.observe(reading, now=3, steps=4) == []  # once per run
    assert alerts.observe({**reading, "system/memory_percent": 0.0}, now=4, steps=5) == []


def test_disk_fires_on_a_real_reading_by_bytes_or_percent_and_resolves(tmp_path: Path) -> None:
    reading = _real_reading(tmp_path)
    free = reading["system/disk_free_bytes"]
    by_bytes = SystemAlerts(_only(disk_free_bytes=free * 2))
    fired = by_bytes.observe(reading, now=0, steps=0)
    assert _kinds(fired) == [("disk", "fired")]
    assert fired[0].title == "Disk nearly full" and f"{free / 1e9:.2f} GB" in fired[0].text
    roomy = {**reading, "system/disk_free_bytes": free * 4}
    assert _kinds(by_bytes.observe(roomy, now=1, steps=0)) == [("disk", "resolved")]
    assert by_bytes.observe(reading, now=2, steps=0) == []

    percent = reading["system/disk_free_percent"]
    by_percent = SystemAlerts(_only(disk_free_percent=min(100.0, percent + 1.0)))
    assert _kinds(by_percent.observe(reading, now=0, steps=0)) == [("disk", "fired")]
    assert _kinds(by_percent.observe({**reading, "system/disk_free_percent": 100.0}, now=1, steps=0)) == [
        ("disk", "resolved")
    ]


def test_default_disk_thresholds_either_condition_fires() -> None:
    alerts = SystemAlerts()
    assert alerts.observe({"system/disk_free_percent": 50.0, "system/disk_free_bytes": 100e9}, now=0, steps=0) == []
    low_bytes = alerts.observe({"system/disk_free_percent": 50.0, "system/disk_free_bytes": 4.9e9}, now=1, steps=0)
    assert _kinds(low_bytes) == [("disk", "fired")]
    assert _kinds(
        alerts.observe({"system/disk_free_percent": 50.0, "system/disk_free_bytes": 6e9}, now=2, steps=0)
    ) == [("disk", "resolved")]
    other = SystemAlerts()
    assert _kinds(other.observe({"system/disk_free_percent": 4.9, "system/disk_free_bytes": 1e12}, now=0, steps=0)) == [
        ("disk", "fired")
    ]


def test_gpu_memory_needs_two_readings_in_a_row_then_resolves_once() -> None:
    alerts = SystemAlerts(_only(gpu_memory_percent=95.0))
    name = "system/gpu.1.memory_percent"
    assert alerts.observe({name: 96.0}, now=0, steps=1) == []
    assert alerts.observe({name: 50.0}, now=1, steps=2) == []  # the streak is broken
    assert alerts.observe({name: 95.0}, now=2, steps=3) == []
    fired = alerts.observe({name: 97.5}, now=3, steps=4)
    assert _kinds(fired) == [("gpu_memory:1", "fired")]
    assert fired[0].title == "GPU 1 memory nearly full" and fired[0].scope == "gpu" and "97.5%" in fired[0].text
    assert alerts.observe({name: 99.0}, now=4, steps=5) == []
    assert _kinds(alerts.observe({name: 94.9}, now=5, steps=6)) == [("gpu_memory:1", "resolved")]
    assert alerts.observe({name: 99.0}, now=6, steps=7) == []
    assert alerts.observe({name: 99.0}, now=7, steps=8) == []  # once per run
    # Another GPU is its own alert.
    assert alerts.observe({"system/gpu.0.memory_percent": 99.0}, now=8, steps=9) == []
    assert _kinds(alerts.observe({"system/gpu.0.memory_percent": 99.0}, now=9, steps=10)) == [("gpu_memory:0", "fired")]


def test_a_later_stage_of_the_run_keeps_once_per_run() -> None:
    first = SystemAlerts(_only(host_memory_percent=90.0, disk_free_bytes=5e9))
    assert len(first.observe({"system/memory_percent": 99.0, "system/disk_free_bytes": 1e9}, now=0, steps=1)) == 2
    assert _kinds(first.observe({"system/memory_percent": 10.0}, now=1, steps=2)) == [("host_memory", "resolved")]
    later = SystemAlerts(_only(host_memory_percent=90.0, disk_free_bytes=5e9))
    later.load_state_dict(first.state_dict())
    assert later.observe({"system/memory_percent": 99.0, "system/disk_free_bytes": 1e9}, now=2, steps=3) == []
    assert _kinds(later.observe({"system/disk_free_bytes": 9e9}, now=3, steps=4)) == [("disk", "resolved")]


def test_gpu_memory_samples_option() -> None:
    alerts = SystemAlerts(_only(gpu_memory_percent=90.0, gpu_memory_samples=1))
    assert _kinds(alerts.observe({"system/gpu.0.memory_percent": 90.0}, now=0, steps=0)) == [("gpu_memory:0", "fired")]


def test_gpu_idle_fires_after_its_time_only_while_steps_continue_and_resolves() -> None:
    alerts = SystemAlerts(_only(gpu_idle_percent=5.0, gpu_idle_seconds=300))
    name = "system/gpu.0.utilization_percent"
    assert alerts.observe({name: 3.0}, now=1000, steps=10) == []
    assert alerts.observe({name: 5.0}, now=1200, steps=50) == []
    fired = alerts.observe({name: 0.0}, now=1300, steps=90)
    assert _kinds(fired) == [("gpu_idle:0", "fired")]
    assert fired[0].title == "GPU 0 idle while training" and "80 training steps" in fired[0].text
    assert "input pipeline" in fired[0].text
    assert alerts.observe({name: 1.0}, now=1400, steps=95) == []
    assert _kinds(alerts.observe({name: 60.0}, now=1500, steps=99)) == [("gpu_idle:0", "resolved")]
    assert alerts.observe({name: 0.0}, now=1600, steps=100) == []
    assert alerts.observe({name: 0.0}, now=2000, steps=200) == []  # once per run


def test_gpu_idle_without_steps_is_no_input_pipeline_problem() -> None:
    alerts = SystemAlerts(_only(gpu_idle_percent=5.0, gpu_idle_seconds=300))
    name = "system/gpu.0.utilization_percent"
    for now in (0, 100, 300, 600):
        assert alerts.observe({name: 0.0}, now=now, steps=7) == []  # stalled: the watchdog's business
    # Busy in between restarts the clock.
    other = SystemAlerts(_only(gpu_idle_percent=5.0, gpu_idle_seconds=300))
    assert other.observe({name: 0.0}, now=0, steps=1) == []
    assert other.observe({name: 90.0}, now=200, steps=2) == []
    assert other.observe({name: 0.0}, now=250, steps=3) == []
    assert other.observe({name: 0.0}, now=500, steps=4) == []
    assert _kinds(other.observe({name: 0.0}, now=550, steps=5)) == [("gpu_idle:0", "fired")]


def test_defaults_and_the_option_surface() -> None:
    defaults = SystemAlertOptions.from_option(True)
    assert defaults == SystemAlertOptions(
        gpu_memory_percent=95.0,
        gpu_memory_samples=2,
        gpu_idle_percent=5.0,
        gpu_idle_seconds=300.0,
        disk_free_percent=5.0,
        disk_free_bytes=5e9,
        host_memory_percent=95.0,
    )
    assert SystemAlertOptions.from_option(False) is None
    assert SystemAlertOptions.from_option(None) is None
    chosen = SystemAlertOptions.from_option({"disk_free_bytes": 20e9, "gpu_idle_seconds": timedelta(minutes=10)})
    assert chosen is not None and chosen.disk_free_bytes == 20e9 and chosen.gpu_idle_seconds == 600.0
    assert chosen.host_memory_percent == 95.0
    with pytest.raises(ValueError, match=r"unknown option\(s\) disk_free; the options are: gpu_memory_percent"):
        SystemAlertOptions.from_option({"disk_free": 1})
    with pytest.raises(ValueError, match="host_memory_percent must be a percentage from 0 to 100 or None, not 120"):
        SystemAlertOptions.from_option({"host_memory_percent": 120})
    with pytest.raises(ValueError, match="gpu_memory_samples must be an integer >= 1, not 0"):
        SystemAlertOptions(gpu_memory_samples=0)
    with pytest.raises(ValueError, match="gpu_idle_seconds must be seconds >= 0"):
        SystemAlertOptions(gpu_idle_seconds=-1)
    with pytest.raises(ValueError, match="disk_free_bytes must be bytes >= 0 or None"):
        SystemAlertOptions(disk_free_bytes="5GB")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="system_alerts must be True, False, None, a SystemAlertOptions or a mapping"):
        SystemAlertOptions.from_option("on")


def test_an_alert_turned_off_never_fires(tmp_path: Path) -> None:
    reading = _real_reading(tmp_path)
    alerts = SystemAlerts(_only())
    for now in range(5):
        assert alerts.observe({**reading, "system/gpu.0.memory_percent": 100.0}, now=now, steps=now) == []


# ------------------------------------------------------------------------------------------------ the watch
def test_the_watch_sends_each_alert_once_from_real_readings(tmp_path: Path) -> None:
    logged: list[dict[str, float]] = []
    sent: list[SystemAlert] = []
    watch = SystemWatch(
        0.02,
        _only(disk_free_bytes=1e18, host_memory_percent=0.0),  # this machine trips both on every reading
        log=logged.append,
        send=sent.append,
        steps=lambda: len(logged),
        disk_path=tmp_path,
        host_alerts=True,
    ).start()
    try:
        assert wait_for(lambda: len(logged) >= 5)
    finally:
        watch.stop()
    assert sorted(_kinds(sent)) == [("disk", "fired"), ("host_memory", "fired")]
    assert watch.sent == sent
    assert all("system/disk_free_bytes" in reading for reading in logged)
    assert watch.errors == 0


def test_host_alerts_come_from_the_first_process_of_a_host_only(tmp_path: Path) -> None:
    assert host_alert_rank({}) is True
    assert host_alert_rank({"LOCAL_RANK": "0"}) is True
    assert host_alert_rank({"LOCAL_RANK": "3"}) is False
    sent: list[SystemAlert] = []
    readings: list[dict[str, float]] = []
    watch = SystemWatch(
        0.02,
        _only(disk_free_bytes=1e18),
        log=readings.append,
        send=sent.append,
        steps=lambda: 0,
        disk_path=tmp_path,
        host_alerts=False,
    ).start()
    try:
        assert wait_for(lambda: len(readings) >= 3)
    finally:
        watch.stop()
    assert sent == []


def test_a_failing_log_or_send_never_stops_the_other_or_the_sampling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="runalert")
    sent: list[SystemAlert] = []
    readings = 0

    def log(values: dict[str, float]) -> None:
        nonlocal readings
        readings += 1
        raise OSError("metric path down")

    watch = SystemWatch(
        0.01,
        _only(disk_free_bytes=1e18),
        log=log,
        send=sent.append,
        steps=lambda: 0,
        disk_path=tmp_path,
        host_alerts=True,
    ).start()
    try:
        assert wait_for(lambda: readings >= 3)
    finally:
        watch.stop()
    assert _kinds(sent) == [("disk", "fired")]
    assert watch.errors == readings
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "metric path down" in warned[0].getMessage()


# ------------------------------------------------------------------------------------------------ through RunMonitor
@pytest.fixture
def receiver(httpserver: HTTPServer) -> Iterator[Receiver]:
    made = Receiver(httpserver, method="POST")
    yield made
    made.close()


def test_each_builtin_alert_fires_once_and_resolves_through_a_monitor(receiver: Receiver) -> None:
    monitor = RunMonitor(
        alerter=receiver.alerter(),
        on_stage_end=(),
        system_metrics_interval=3600,  # one real reading at the start; the others are given by hand below
        system_alerts={"gpu_memory_percent": 90, "gpu_idle_seconds": 0, "disk_free_bytes": 1e18},
    )
    monitor.start("sys-alerts")
    watch = monitor.system
    assert watch is not None
    assert wait_for(lambda: watch.sampler.samples >= 1)  # this machine's real reading trips the raised disk threshold
    tripped = {
        "system/gpu.0.memory_percent": 97.0,
        "system/gpu.0.utilization_percent": 1.0,
        "system/memory_percent": 99.0,
        "system/disk_free_bytes": 1e9,
    }
    for step in (1, 2):
        monitor.step(step, {"loss": 1.0})
        watch.feed(dict(tripped))  # two readings: the GPU memory one needs them; idle needs steps to go on
    monitor.step(3, {"loss": 1.0})
    watch.feed(dict(tripped))
    cleared = {
        "system/gpu.0.memory_percent": 10.0,
        "system/gpu.0.utilization_percent": 90.0,
        "system/memory_percent": 10.0,
        "system/disk_free_bytes": 2e18,
        "system/disk_free_percent": 50.0,
    }
    watch.feed(dict(cleared))
    for step in (4, 5, 6):
        monitor.step(step, {"loss": 1.0})
        watch.feed(dict(tripped))  # tripped again: once per run, nothing more
    monitor.finish()
    alerts = receiver.drain()
    titles = sorted(a["title"] for a in alerts)
    names = ["Disk nearly full", "GPU 0 idle while training", "GPU 0 memory nearly full", "Host memory nearly full"]
    assert titles == sorted([*names, *(f"Resolved: {name}" for name in names)]), titles
    for alert in alerts:
        assert alert["level"].upper() == ("INFO" if alert["title"].startswith("Resolved") else "WARN")
        assert "sys-alerts" in alert["text"]
    assert monitor.stats.by_kind == {"system_fired": 4, "system_resolved": 4}


def test_a_monitor_feeds_real_readings_to_a_rule_and_stops_sampling_at_finish(receiver: Receiver) -> None:
    monitor = RunMonitor(
        alerter=receiver.alerter(),
        on_stage_end=(),
        system_metrics_interval=0.02,
        system_alerts=False,
        rules=[RunEvent.metric("system/process_rss_bytes") > 0],
    )
    monitor.start("sys-rule")
    watch = monitor.system
    assert watch is not None and watch.alerts is None
    for step in (1, 2, 3):
        seen = watch.sampler.samples
        monitor.step(step, {"loss": 1.0})
        assert wait_for(lambda seen=seen: watch.sampler.samples > seen)  # a reading at this step
    monitor.finish()
    assert not watch.sampler.running
    receiver.drain()
    rules = receiver.titled("Rule")
    assert len(rules) == 1 and "system/process_rss_bytes" in rules[0]["title"]


def test_system_metrics_off() -> None:
    monitor = RunMonitor(system_metrics_interval=None, on_stage_end=(), on_crash=False)
    monitor.start("sys-off")
    try:
        assert monitor.system is None
    finally:
        monitor.finish()


def test_the_system_options_are_checked_when_the_monitor_is_built() -> None:
    assert MonitorOptions().system_metrics_interval == 15.0
    assert MonitorOptions().system_alerts == SystemAlertOptions()
    assert MonitorOptions(system_metrics_interval=timedelta(seconds=30)).system_metrics_interval == 30.0
    assert MonitorOptions(system_alerts=False).system_alerts is None
    for bad in (0, -5, True, "15s"):
        with pytest.raises(ValueError, match="system_metrics_interval must be seconds > 0, a timedelta or None"):
            MonitorOptions(system_metrics_interval=bad)
    with pytest.raises(ValueError, match=r"system_alerts: unknown option\(s\) gpu_memory; the options are"):
        MonitorOptions(system_alerts={"gpu_memory": 90})
    with pytest.raises(ValueError, match="system_alerts: disk_free_percent must be a percentage from 0 to 100"):
        RunMonitor(system_alerts={"disk_free_percent": 500})
