"""A rank other than zero is a second writer of its run on the server: its batches are stored, but they are no sign
of the run's life (``alive`` false). A real ``runalert serve`` process with a short heartbeat timeout."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from runalert.client import Client
from tests.support import wait_for


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_another_ranks_readings_never_keep_a_dead_run_alive(make_server: Any, project: str) -> None:
    """Rank zero opened the run and died (no heartbeats, no batches); rank 1 goes on sending its readings. They are
    stored, but the run still fails for its heartbeat timeout and stays failed: only rank zero's own batches and
    heartbeats are signs of the run's life (a batch with ``alive`` false is not)."""
    # 3 s: the run, alive again below, must not fail for silence before the next request reads its state (1 s
    # between two requests is not rare on a loaded machine).
    server = make_server(RUNALERT_HEARTBEAT_TIMEOUT="3").start()
    client = Client(server.url, project=project)
    client.upsert_run("r", name="rank zero died")
    sent = 0

    def rank_one_reads() -> bool:
        nonlocal sent
        sent += 1
        row = {"step": sent, "metrics": {"system/rank.1/process_rss_bytes": float(sent)}}
        assert client.log_metrics("r", [row], alive=False)["accepted"] == 1
        return client.run("r")["state"] == "FAILED"

    assert wait_for(rank_one_reads, timeout=60, interval=0.1)
    for _ in range(3):  # more of them: the run is not revived
        assert rank_one_reads()
    stored = client.run("r")
    assert (stored["state"], stored["reason"]) == ("FAILED", "heartbeat_timeout")
    assert len(client.metrics("r")["system/rank.1/process_rss_bytes"]) == sent
    # rank zero's own batch (alive, the default) is a sign of life: the run is running again
    client.log_metrics("r", [{"step": sent, "metrics": {"loss": 1.0}}])
    assert client.run("r")["state"] == "RUNNING"


@pytest.mark.integration
def test_alive_takes_a_json_boolean_and_nothing_else(server: Any, project: str) -> None:
    client = Client(server.url, project=project)
    client.upsert_run("r")
    url = f"{server.url}/api/v1/projects/{project}/runs/r/metrics"
    taken = requests.post(url, json={"rows": [{"step": 1, "metrics": {"x": 1.0}}], "alive": False}, timeout=30)
    assert taken.status_code == 200 and taken.json()["accepted"] == 1
    for bad in ("false", 0, None):
        answer = requests.post(url, json={"rows": [{"step": 1, "metrics": {"x": 1.0}}], "alive": bad}, timeout=30)
        assert answer.status_code == 422, bad
        assert answer.json()["detail"][0]["loc"] == ["body", "alive"]
    assert client.run("r")["points"] == 1  # nothing of a refused batch is stored
