"""RunMonitor with ``server=``: the run opened, automations registered there, metrics streamed, heartbeats,
the final state; a server down at start-up, or down mid-run and back; a SIGKILLed client noticed by the server.
Real ``runalert serve`` processes and real receivers on loopback."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runalert.automations import OnRunMetric, OnRunState, Project, RunEvent, SendNotification, SendWebhook
from runalert.channels import Webhook
from runalert.client import Client, NotFoundError, ServerUnavailableError
from runalert.monitor import RunMonitor
from tests.client.conftest import Receiver
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _loss_automation(project: str, name: str | None = "loss-diverging") -> Any:
    payload = {
        "text": "run ${run_name}: ${metric_name} = ${metric_value} > ${threshold}",
        "automation": "${automation_name}",
        "project": "${project_name}",
        "run_id": "${run_id}",
    }
    new = OnRunMetric(
        event_type="RUN_METRIC", scope=Project(name=project), filter=RunEvent.metric("loss").avg(3) > 2.0
    ) >> SendWebhook(integration="hook", payload=payload)
    return new.model_copy(update={"name": name}) if name else new


def _stored(client: Client, run_id: str) -> dict[str, Any]:
    """The run as the server has it, or ``{}`` while it is not there (yet)."""
    try:
        return client.run(run_id)
    except (NotFoundError, ServerUnavailableError):
        return {}


def _monitor(url: str, project: str, **options: Any) -> RunMonitor:
    options.setdefault("on_stage_end", ())
    options.setdefault("heartbeat_interval", 0.2)
    # These tests count the points a run stores: the system metrics' readings (on by default) would add to them.
    options.setdefault("system_metrics_interval", None)
    return RunMonitor(server=url, project=project, install_crash_hooks=False, **options)


def test_streams_metrics_and_a_server_automation_fires_a_filled_webhook(
    server: Any, project: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client(server.url, project=project)
    client.put_integration("hook", "webhook", url=receiver.url)
    caplog.set_level(logging.DEBUG, logger="runalert")
    local_rule = RunEvent.metric("acc") < -1.0  # local rules stay local
    monitor = _monitor(server.url, project, automations=[_loss_automation(project)], rules=[local_rule], tags=["t1"])
    monitor.start("bert base", config={"lr": 0.1, "bad": math.nan})
    run = monitor.server_run
    assert run is not None and run.opened
    assert run.registered == {"loss-diverging": "created"}
    assert "automation 'loss-diverging' on the server: created" in caplog.text
    # automations went to the server, not to the local engine; the local rule is on the local engine
    assert [a.name for a in monitor.engine.automations()] == ["rule 1: acc < -1"]
    losses = [1.0, 1.2, 1.1, 1.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    for step, loss in enumerate(losses):
        monitor.step(step, {"loss": loss, "acc": 0.5, "name": "not a number"})
    monitor.metrics({"val_loss": 0.25}, step=len(losses), stage="validate")
    monitor.finish()
    assert wait_for(lambda: len(receiver.bodies) == 1, timeout=60)
    body = receiver.bodies[0]
    assert body["automation"] == "loss-diverging"
    assert body["project"] == project
    assert body["run_id"] == run.run_id
    assert body["text"].startswith("run bert base: loss = ")
    stored = client.run(run.run_id)
    assert (stored["state"], stored["reason"], stored["name"], stored["tags"]) == (
        "FINISHED",
        None,
        "bert base",
        ["t1"],
    )
    assert stored["points"] == 2 * len(losses) + 1 and stored["dropped"] == 0
    assert stored["config"]["lr"] == 0.1 and stored["config"]["runalert"]["rank"] == 0
    series = client.metrics(run.run_id)
    assert [value for _step, value, _time in series["loss"]] == losses
    assert series["val_loss"][0][:2] == (len(losses), 0.25)
    # The same automation from the next run: unchanged, still one automation on the server.
    again = _monitor(server.url, project, automations=[_loss_automation(project)])
    again.start("second")
    assert again.server_run is not None and again.server_run.registered == {"loss-diverging": "unchanged"}
    again.finish()
    assert [a["name"] for a in client.automations()] == ["loss-diverging"]


def test_held_tensor_values_reach_the_server_in_step_order_before_later_metrics(server: Any, project: str) -> None:
    torch = pytest.importorskip("torch")
    # Tensors are held and read every 4 steps; floats are checked at once. A step's values go to the stream only
    # when its tensors are read, and the steps in between wait with it: every series stays in step order, and
    # epoch metrics come after the steps before them.
    monitor = _monitor(server.url, project, rules=[RunEvent.metric("loss") > 8.5], check_every_n_steps=4)
    monitor.start("held")
    run = monitor.server_run
    assert run is not None
    losses = [float(step) for step in range(10)]
    for step, loss in enumerate(losses):
        values: dict[str, Any] = {"acc": 0.5 + step / 100}
        if step != 5:  # step 5 has floats only, while earlier tensors are held
            values["loss"] = torch.tensor(loss)
        monitor.step(step, values)
        assert monitor.stats.steps == step + 1  # (stats evaluates what the rule thread was given: at once)
    monitor.metrics({"val_loss": 0.25}, step=10, stage="validate")  # reads steps 8 and 9 first
    assert monitor.stats.rule_firings == 1  # the local rule saw step 9's loss once it was read
    monitor.finish()
    series = Client(server.url, project=project).metrics(run.run_id)
    assert [(step, value) for step, value, _time in series["loss"]] == [(s, v) for s, v in enumerate(losses) if s != 5]
    assert [step for step, _value, _time in series["acc"]] == list(range(10))
    assert series["val_loss"][0][:2] == (10, 0.25)
    times = sorted((time, name) for name in ("loss", "acc", "val_loss") for _step, _value, time in series[name])
    assert times[-1][1] == "val_loss"  # streamed after every step before it


def test_unnamed_automations_get_a_stable_name(server: Any, project: str, receiver: Receiver) -> None:
    client = Client(server.url, project=project)
    client.put_integration("hook", "webhook", url=receiver.url)
    names = []
    for _ in range(2):
        monitor = _monitor(server.url, project, automations=[_loss_automation(project, name=None)])
        monitor.start("r")
        assert monitor.server_run is not None
        names.append(dict(monitor.server_run.registered))
        monitor.finish()
    (name,) = names[0]
    assert name.startswith("auto-")
    assert names == [{name: "created"}, {name: "unchanged"}]


def test_a_crash_sends_failed_with_its_reason_and_rank_one_does_not_stream(server: Any, project: str) -> None:
    client = Client(server.url, project=project)
    cases = [(RuntimeError("boom"), "exception"), (KeyboardInterrupt(), "interrupted")]
    for exc, reason in cases:
        monitor = _monitor(server.url, project, channels=[])
        monitor.start("crashy")
        monitor.step(1, {"loss": 0.5})
        monitor.exception(exc)
        run_id = monitor.server_run.run_id
        assert (client.run(run_id)["state"], client.run(run_id)["reason"]) == ("FAILED", reason)
        monitor.finish("failed")
        assert client.run(run_id)["points"] == 1
    # With a local rule too, the values go to the server through the rule thread: a crash sends them first.
    ruled = _monitor(server.url, project, channels=[], rules=[RunEvent.metric("loss") > 100.0])
    ruled.start("crashy with a rule")
    ruled.step(1, {"loss": 0.5})
    ruled.step(2, {"loss": 0.25})
    ruled.exception(RuntimeError("boom"))
    stored = client.run(ruled.server_run.run_id)
    assert (stored["state"], stored["points"]) == ("FAILED", 2)  # before finish
    ruled.finish("failed")
    monitor = _monitor(server.url, project, channels=[])
    monitor.start("preempted")
    monitor.signal(signal.SIGTERM)
    assert client.run(monitor.server_run.run_id)["reason"] == "preempted"
    monitor.finish()
    other = _monitor(server.url, project, channels=[])
    other.start("ddp", rank=1, world_size=2)
    other.step(1, {"loss": 0.5})
    assert other.server_run is None
    other.finish()


def test_a_resumed_monitor_continues_the_same_server_run(server: Any, project: str) -> None:
    client = Client(server.url, project=project)
    first = _monitor(server.url, project)
    first.start("resumable")
    first.step(1, {"loss": 1.0})
    first.finish()
    state = first.state_dict()
    second = _monitor(server.url, project)
    second.load_state_dict(state)
    second.start("resumable")
    assert second.server_run is not None and second.server_run.run_id == state["server_run_id"]
    assert client.run(state["server_run_id"])["state"] == "RUNNING"
    second.step(2, {"loss": 0.5})
    second.finish()
    stored = client.run(state["server_run_id"])
    assert (stored["state"], stored["points"]) == ("FINISHED", 2)


def test_server_down_at_start_one_warning_local_alerts_bounded_buffer_drops_reported(
    make_server: Any, project: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server()  # not started: nothing listens on its port yet
    caplog.set_level(logging.DEBUG, logger="runalert")
    options = {"max_buffer": 50, "retry_initial": 0.05, "retry_max": 0.2, "interval": 0.05}
    monitor = _monitor(server.url, project, channels=[Webhook(receiver.url)], server_options=options)
    monitor.start("offline")
    for step in range(200):
        monitor.step(step, {"loss": float(step) if step != 150 else math.nan})
    # Training went on and local alerting works: the NaN alert reached the local receiver.
    assert wait_for(lambda: receiver.titled("Non-finite loss"), timeout=30)
    stream = monitor.server_run.stream
    assert wait_for(lambda: stream.stats.dropped_rows == 200 - 50, timeout=30)  # 200 steps (the NaN too), 50 kept
    server.start()
    run_id = monitor.server_run.run_id
    client = Client(server.url, project=project)
    assert wait_for(lambda: _stored(client, run_id).get("points") == 50, timeout=30)
    assert wait_for(lambda: _stored(client, run_id).get("dropped") == 150, timeout=30)
    monitor.finish()
    stored = client.run(run_id)
    assert stored["state"] == "FINISHED"
    assert [v for _s, v, _t in client.metrics(run_id)["loss"]][-1] == 199.0
    down = [r for r in caplog.records if r.levelno >= logging.WARNING and "does not answer" in r.getMessage()]
    assert len(down) == 1 and server.url in down[0].getMessage()
    full = [r for r in caplog.records if r.levelno >= logging.WARNING and "is full" in r.getMessage()]
    assert len(full) == 1


def test_server_down_mid_run_then_back_loses_nothing(make_server: Any, project: str) -> None:
    server = make_server().start()
    client = Client(server.url, project=project)
    options = {"retry_initial": 0.05, "retry_max": 0.3, "interval": 0.05}
    monitor = _monitor(server.url, project, server_options=options)
    monitor.start("flaky network")
    for step in range(100):
        monitor.step(step, {"loss": 1.0 / (step + 1), "lr": 0.1})
    assert monitor.server_run.stream.flush(30)
    server.kill()
    for step in range(100, 300):
        monitor.step(step, {"loss": 1.0 / (step + 1), "lr": 0.1})
    assert not monitor.server_run.stream.flush(0.3)  # nobody takes them
    server.start()  # same database, same port
    assert wait_for(lambda: _stored(client, monitor.server_run.run_id).get("points") == 600, timeout=30)
    monitor.finish()
    stored = client.run(monitor.server_run.run_id)
    assert (stored["state"], stored["dropped"], stored["last_step"]) == ("FINISHED", 0, 299)
    steps = [s for s, _v, _t in client.metrics(monitor.server_run.run_id, names=["loss"])["loss"]]
    assert steps == list(range(300))
    assert monitor.server_run.stream.stats.dropped_points == 0


CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from runalert.monitor import RunMonitor
    monitor = RunMonitor(server=sys.argv[1], project=sys.argv[2], heartbeat_interval=0.2, channels=[],
                         install_crash_hooks=False, on_stage_end=())
    monitor.start("doomed")
    monitor.step(1, {"loss": 0.5})
    print(monitor.server_run.run_id, flush=True)
    time.sleep(600)
    """
)


def test_heartbeats_keep_a_run_running_and_a_sigkilled_client_is_failed_by_the_server(
    make_server: Any, project: str, receiver: Receiver
) -> None:
    # A heartbeat every 0.2 s against a timeout of 5 s: only 5 s without one answered (a starved client or server)
    # could fail the run while it lives.
    server = make_server(RUNALERT_HEARTBEAT_TIMEOUT="5").start()
    client = Client(server.url, project=project)
    client.put_integration("hook", "webhook", url=receiver.url)
    payload = {"run": "${run_name}", "state": "${run_state}", "reason": "${reason}"}
    event = OnRunState(scope=Project(name=project), filter=RunEvent.state.in_(["failed"]))
    client.upsert_automation(
        (event >> SendWebhook(integration="hook", payload=payload)).model_dump(mode="json") | {"name": "died"}
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT_SCRIPT, server.url, project], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert run_id, "the client process did not start"
        # Longer than the heartbeat timeout: the heartbeats keep it RUNNING.
        assert not wait_for(lambda: client.run(run_id)["state"] != "RUNNING", timeout=6.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert wait_for(lambda: client.run(run_id)["state"] == "FAILED", timeout=60)
        assert client.run(run_id)["reason"] == "heartbeat_timeout"
        assert wait_for(lambda: receiver.bodies, timeout=60)
        assert receiver.bodies[0] == {"run": "doomed", "state": "FAILED", "reason": "heartbeat_timeout"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_automations_refused_by_the_server_are_reported_and_training_goes_on(
    server: Any, project: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runalert")
    bad = OnRunMetric(
        event_type="RUN_METRIC", scope=Project(name=project), filter=RunEvent.metric("loss") > 1.0
    ) >> SendNotification(integration="not-defined", title="x")
    monitor = _monitor(server.url, project, automations=[bad.model_copy(update={"name": "needs-an-integration"})])
    monitor.start("r")
    monitor.step(1, {"loss": 5.0})
    monitor.finish()
    assert monitor.server_run.registered == {"needs-an-integration": "refused"}
    assert "refused automation 'needs-an-integration'" in caplog.text
    assert Client(server.url, project=project).run(monitor.server_run.run_id)["state"] == "FINISHED"
    assert monitor.stats.errors == 0


def test_a_server_that_never_answers_gives_one_warning_of_each_kind(
    project: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support import free_port

    caplog.set_level(logging.DEBUG, logger="runalert")
    options = {"max_buffer": 10, "retry_initial": 0.05, "retry_max": 0.1}
    monitor = _monitor(f"http://127.0.0.1:{free_port()}", project, channels=[], server_options=options)
    monitor.start("alone")
    for step in range(100):
        monitor.step(step, {"loss": 1.0})
    monitor.finish(timeout=3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "does not answer" in warnings[0] and "is full" in warnings[1] and "never answered" in warnings[2]
    assert "100 metric values" in warnings[2] and "FINISHED" in warnings[2]
    assert monitor.stats.errors == 0
