"""Every rank's system readings on the server: two real processes of one run (``torch.distributed`` over gloo on
the CPU, and two plain processes of a launcher's job) against a real ``runalert serve`` process.

Rank zero streams the run's training values and its own readings under the plain names; rank 1 streams only its
system readings, under ``system/rank.1/...`` (its host-wide ones are rank zero's host's: not sent twice), to the
same run, which it finds through the process group's store (the ranks' generated run names differ) or the job's
id. A server automation on a rank-1 metric fires. The naming itself: tests/test_system_names.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import requests

from runalert.client import Client, NotFoundError
from tests.client.conftest import Receiver
from tests.support import free_port, require_module, wait_for

ROOT = Path(__file__).resolve().parents[2]
RANK1_GPU = "system/rank.1/gpu.1.memory_percent"

# One rank of the run. Rank 1 hands its sampler's path two GPU readings (what the sampler reads from NVML on a GPU
# host; this machine has none) after its sampler stopped: from the reading on, the path is the real one. Rank 1
# finishes (its stream flushed) before rank zero finishes the run: a barrier of the process group, or, for the
# plain processes, files (rank 1 waits for "go" before finishing, rank zero for rank 1's "done").
CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from runalert.automations import OnRunMetric, Project, RunEvent, SendWebhook
    from runalert.monitor import RunMonitor

    args = json.loads(sys.argv[1])
    rank = int(os.environ["RANK"])
    gates = Path(args.get("gates") or ".")

    def gate(name):
        wait = time.monotonic() + 120
        while not (gates / name).exists() and time.monotonic() < wait:
            time.sleep(0.02)

    if args["torch"]:
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method=args["init"], rank=rank, world_size=2)
        before_rank1_finish = before_rank0_finish = dist.barrier
        after_rank1_finish = lambda: None
    else:
        before_rank1_finish = lambda: gate("go")
        after_rank1_finish = lambda: (gates / "done").touch()
        before_rank0_finish = lambda: gate("done")
    automation = None
    if args["automation"]:  # a server automation on a metric of rank 1
        automation = OnRunMetric(
            event_type="RUN_METRIC",
            scope=Project(name=args["project"]),
            filter=RunEvent.metric(args["automation"]) > 95,
        ) >> SendWebhook(integration="hook", payload={"metric": "${metric_name}", "value": "${metric_value}"})
    monitor = RunMonitor(
        server=args["url"], project=args["project"], channels=[], install_crash_hooks=False, on_stage_end=(),
        system_metrics_interval=0.2, heartbeat_interval=0.5, run_name=args.get("name"),
        server_options={"interval": 0.2, "retry_initial": 0.1, "retry_max": 0.5},
        automations=[automation] if automation is not None else [],
    )
    monitor.start()  # rank and world size from the launcher's variables
    (gates / f"up{rank}").touch()
    for step in range(1, 21):
        monitor.step(step, {"loss": 1.0 + rank})
        time.sleep(0.02)
    wait = time.monotonic() + 60
    while monitor.system.sampler.samples < 3 and time.monotonic() < wait:
        time.sleep(0.05)
    monitor.system.stop()
    if rank == 1:
        monitor.system.feed({"system/gpu.1.memory_percent": 97.0})
        monitor.system.feed({"system/gpu.1.memory_percent": 98.0})
    if rank == 1:
        before_rank1_finish()
        monitor.finish(timeout=30)
        after_rank1_finish()
    if rank == 0:
        before_rank0_finish()
        monitor.finish(timeout=30)
    print(json.dumps({"rank": rank, "run_id": monitor.server.run_id if monitor.server else None,
                      "name": monitor.run_name, "errors": monitor.stats.errors}), flush=True)
    """
)


def _spawn(rank: int, args: dict[str, Any], env: dict[str, str]) -> subprocess.Popen[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNALERT_", "TORCHELASTIC", "SLURM"))}
    child_env.update(env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _results(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    found = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        found.append(json.loads(out.strip().splitlines()[-1]))
    return found


def _runs(client: Client) -> list[dict[str, Any]]:
    try:
        return client.runs()
    except NotFoundError:  # the project does not exist yet
        return []


def _check_run(client: Client, run_id: str, receiver: Receiver | None) -> None:
    """What the server stored of the two ranks (and, given ``receiver``, the automation on rank 1's GPU)."""
    series = client.metrics(run_id)
    names = set(series)
    # rank zero: its training values and its readings, under the plain names
    assert {"loss", "system/cpu_percent", "system/memory_percent", "system/process_rss_bytes"} <= names, names
    assert {v for _s, v, _t in series["loss"]} == {1.0}  # rank 1's training values (2.0) never reach the server
    assert len(series["loss"]) == 20
    # rank 1: its own process's readings under its rank; the host's readings are rank zero's (not sent twice)
    assert {n for n in names if n.startswith("system/rank.1/")} == {"system/rank.1/process_rss_bytes", RANK1_GPU}
    assert len(series["system/rank.1/process_rss_bytes"]) >= 3
    assert [v for _s, v, _t in series[RANK1_GPU]] == [97.0, 98.0]
    assert "system/gpu.1.memory_percent" not in names  # rank 1's GPU does not pass for rank zero's
    assert not {n for n in names if n.startswith(("system/rank.0/", "system/node."))}, names
    stored = client.run(run_id)
    assert stored["state"] == "FINISHED" and stored["dropped"] == 0
    assert stored["config"]["runalert"]["rank"] == 0  # rank 1 never opened (or rewrote) the run
    # The run page charts the logged values, then each rank's and host's system metrics under a heading of its own.
    page = requests.get(f"{client.server_url}/runs/{client.project}/{run_id}", timeout=30)
    assert page.status_code == 200
    html = page.text
    assert html.index("<h3>loss ") < html.index("System · rank 0 · node 0") < html.index("System · rank 1")
    assert html.index("System · rank 1") < html.index(f"<h3>{RANK1_GPU} ")
    if receiver is not None:
        assert wait_for(lambda: len(receiver.bodies) >= 1, timeout=30)
        assert receiver.bodies[0]["metric"] == RANK1_GPU
        assert float(receiver.bodies[0]["value"]) == 97.0


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_two_torch_distributed_ranks_stream_their_readings_to_one_run(
    server: Any, project: str, receiver: Receiver, tmp_path: Path
) -> None:
    require_module("torch", "torch is not installed")
    client = Client(server.url, project=project)
    client.put_integration("hook", "webhook", url=receiver.url)
    args = {
        "torch": True,
        "init": f"tcp://127.0.0.1:{free_port()}",
        "url": server.url,
        "project": project,
        "automation": RANK1_GPU,
    }
    procs = [_spawn(rank, {**args, "gates": str(tmp_path)}, {}) for rank in (0, 1)]
    zero, one = _results(procs)
    # No run name was given: each rank generated its own, and rank 1 learnt rank zero's run id from the store.
    assert zero["name"] != one["name"]
    assert zero["run_id"] == one["run_id"] and zero["errors"] == one["errors"] == 0
    _check_run(client, zero["run_id"], receiver)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_two_ranks_of_a_launchers_job_find_one_run_by_the_job_id(server: Any, project: str, tmp_path: Path) -> None:
    """No torch.distributed: the run id comes from the job's id (torchrun's TORCHELASTIC_RUN_ID) and the run name.
    Rank 1 starts first, alone: its batches get 404 and wait until rank zero has opened the run."""
    client = Client(server.url, project=project)
    args = {"torch": False, "url": server.url, "project": project, "automation": None, "name": "job-run"}
    args["gates"] = str(tmp_path)
    env = {"TORCHELASTIC_RUN_ID": f"job-{project}"}
    one = _spawn(1, args, env)
    assert wait_for((tmp_path / "up1").exists, timeout=60)
    assert _runs(client) == []  # rank 1 is running and the run does not exist: rank 1 never opens it
    zero = _spawn(0, args, env)
    assert wait_for(lambda: len(_runs(client)) == 1, timeout=60)
    (tmp_path / "go").touch()
    second, first = _results([one, zero])
    assert first["run_id"] == second["run_id"] and first["run_id"].startswith("job-run-")
    assert first["errors"] == second["errors"] == 0
    _check_run(client, first["run_id"], None)


LIGHTNING_FIT = textwrap.dedent(
    """
    import json, sys, time
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from runalert.lightning import AlertCallback

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, index):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("loss", loss)
            time.sleep(0.05)  # a few of the sampler's readings per epoch
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    url, project, out = sys.argv[1:4]
    callback = AlertCallback(
        channels=[], server=url, project=project, system_metrics_interval=0.2, on_stage_end=(),
        server_options={"interval": 0.2, "retry_initial": 0.1, "retry_max": 0.5},
    )
    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=8)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=3, callbacks=[callback], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(Tiny(), data)
    with open(f"{out}.{trainer.global_rank}", "w") as f:
        server = callback.monitor.server
        json.dump({"run_id": server.run_id if server else None, "errors": callback.monitor.stats.errors}, f)
    """
)


@pytest.mark.slow  # Lightning's DDP on the CPU, two processes: about a minute
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_lightning_ddp_on_the_cpu_streams_both_ranks_readings(server: Any, project: str, tmp_path: Path) -> None:
    require_module("lightning", "lightning is not installed")
    script = tmp_path / "fit.py"
    script.write_text(LIGHTNING_FIT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNALERT_", "TORCHELASTIC", "SLURM"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run(
        [sys.executable, str(script), server.url, project, str(tmp_path / "out")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    zero, one = (json.loads((tmp_path / f"out.{rank}").read_text()) for rank in (0, 1))
    assert zero["run_id"] == one["run_id"] and zero["errors"] == one["errors"] == 0
    series = Client(server.url, project=project).metrics(zero["run_id"])
    names = set(series)
    assert {"loss", "system/cpu_percent", "system/process_rss_bytes", "system/rank.1/process_rss_bytes"} <= names
    assert {n for n in names if n.startswith("system/rank.")} == {"system/rank.1/process_rss_bytes"}
    assert len(series["loss"]) == 12  # rank zero's steps (4 a epoch), not rank 1's too
