"""A run opened by the client carries its group: from ``RUNALERT_GROUP`` or a sweep/array/torchrun job id in the
environment, or set on the run. A real server process (SQLite) on loopback."""

from __future__ import annotations

import pytest

from runalert.client import Client
from runalert.client.run import ServerRun
from tests.server.conftest import ServerProcess


@pytest.mark.parametrize(
    ("env", "group"),
    [
        ({"RUNALERT_GROUP": "ablation-3"}, "ablation-3"),
        ({"WANDB_SWEEP_ID": "abc123"}, "wandb-sweep/abc123"),
        ({"SLURM_ARRAY_JOB_ID": "4242"}, "slurm-array/4242"),
        ({"TORCHELASTIC_RUN_ID": "job-7"}, "torchrun/job-7"),
        ({}, None),
    ],
)
def test_the_client_sends_the_group_from_the_environment(
    server: ServerProcess, project: str, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], group: str | None
) -> None:
    for name in ("RUNALERT_GROUP", "WANDB_SWEEP_ID", "SLURM_ARRAY_JOB_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = Client(server.url, project=project)
    run = ServerRun(client, "run-1", name="bert")
    assert run.start()
    try:
        assert client.run("run-1")["group"] == group
    finally:
        run.finish("FINISHED")


def test_a_group_set_on_the_run_and_on_upsert(server: ServerProcess, project: str) -> None:
    client = Client(server.url, project=project)
    run = ServerRun(client, "run-2")
    run.group = "sweep-x"
    assert run.start()
    run.finish("FINISHED")
    assert client.run("run-2")["group"] == "sweep-x"
    assert client.upsert_run("run-3", group="sweep-y")["group"] == "sweep-y"
