"""Per-rank system metrics: the names each rank's readings are stored under, the node and local rank from the
launchers' variables, and how every rank finds the one run id. Pure functions; the real multi-process run against a
real server is tests/client/test_rank_system_metrics.py."""

from __future__ import annotations

import logging

import pytest

from runalert.client import make_run_id
from runalert.monitor_server import job_key, plan_run_id
from runalert.ranks import local_rank, node_index
from runalert.system_names import HOST_WIDE, SeriesNames, group_by_source
from runalert.system_watch import host_alert_rank

READING = {
    "system/cpu_percent": 10.0,
    "system/memory_percent": 20.0,
    "system/disk_free_percent": 30.0,
    "system/disk_free_bytes": 4e10,
    "system/process_rss_bytes": 1e9,
    "system/gpu.1.memory_percent": 97.0,
}


def test_rank_zero_keeps_the_plain_names() -> None:
    assert SeriesNames(rank=0, local_rank=0, node=0).apply(READING) == READING
    assert SeriesNames(rank=0, local_rank=None, node=0).apply(READING) == READING


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        # a second rank on the first host: its process's readings under its rank; the host's are rank zero's
        (
            SeriesNames(rank=1, local_rank=1, node=0),
            {"system/rank.1/process_rss_bytes": 1e9, "system/rank.1/gpu.1.memory_percent": 97.0},
        ),
        # the first rank of the second host: the host's readings under the node, its process's under its rank
        (
            SeriesNames(rank=8, local_rank=0, node=1),
            {
                "system/node.1/cpu_percent": 10.0,
                "system/node.1/memory_percent": 20.0,
                "system/node.1/disk_free_percent": 30.0,
                "system/node.1/disk_free_bytes": 4e10,
                "system/rank.8/process_rss_bytes": 1e9,
                "system/rank.8/gpu.1.memory_percent": 97.0,
            },
        ),
        # the first rank of a host whose index no launcher gave: the host's readings under its rank
        (
            SeriesNames(rank=4, local_rank=0, node=None),
            {
                "system/rank.4/cpu_percent": 10.0,
                "system/rank.4/memory_percent": 20.0,
                "system/rank.4/disk_free_percent": 30.0,
                "system/rank.4/disk_free_bytes": 4e10,
                "system/rank.4/process_rss_bytes": 1e9,
                "system/rank.4/gpu.1.memory_percent": 97.0,
            },
        ),
    ],
)
def test_other_ranks_readings_are_named_by_rank_and_node(names: SeriesNames, expected: dict[str, float]) -> None:
    assert names.apply(READING) == expected


def test_no_two_processes_of_a_job_share_a_name() -> None:
    """Two nodes of four ranks each: every (process, reading) that is sent has a name of its own."""
    seen: dict[str, tuple[int, str]] = {}
    for rank in range(8):
        names = SeriesNames(rank=rank, local_rank=rank % 4, node=rank // 4)
        for metric in READING:
            stored = names.name(metric)
            if stored is None:
                assert metric in HOST_WIDE and rank % 4 != 0
                continue
            assert stored not in seen, (stored, seen[stored], (rank, metric))
            seen[stored] = (rank, metric)
    assert len(seen) == 2 * len(HOST_WIDE) + 8 * (len(READING) - len(HOST_WIDE))
    assert SeriesNames(rank=3).name("loss") == "loss"  # not a system reading: untouched


@pytest.mark.parametrize(
    ("env", "rank", "local", "node"),
    [
        ({}, 0, None, 0),
        ({"LOCAL_RANK": "1", "RANK": "1"}, 1, 1, 0),  # one host, no node given
        ({"LOCAL_RANK": "1", "NODE_RANK": "2"}, 9, 1, 2),  # Lightning
        ({"LOCAL_RANK": "0", "GROUP_RANK": "1"}, 4, 0, 1),  # torchrun
        ({"LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4"}, 7, 3, 1),  # torchrun without GROUP_RANK
        ({"SLURM_LOCALID": "2", "SLURM_NODEID": "3"}, 14, 2, 3),  # Slurm
        ({"OMPI_COMM_WORLD_LOCAL_RANK": "0"}, 4, 0, None),  # several hosts, which one unknown
        ({"LOCAL_RANK": "x"}, 0, None, 0),
    ],
)
def test_local_rank_and_node_from_the_launchers_variables(
    env: dict[str, str], rank: int, local: int | None, node: int | None
) -> None:
    assert local_rank(env=env) == local
    assert node_index(rank, env=env) == node
    assert SeriesNames.for_process(rank, env=env) == SeriesNames(rank=rank, local_rank=local, node=node)
    assert host_alert_rank(env) is (local in (None, 0))


def test_the_run_id_every_rank_finds() -> None:
    job = {"TORCHELASTIC_RUN_ID": "job-7"}
    # a resumed run's id wins, then RUNALERT_RUN_ID
    assert plan_run_id("a", rank=1, world_size=2, resumed="kept-1", env={"RUNALERT_RUN_ID": "x"}).run_id == "kept-1"
    env_plan = plan_run_id("a", rank=3, world_size=4, env={"RUNALERT_RUN_ID": "shared.run-1", **job})
    assert (env_plan.run_id, env_plan.source) == ("shared.run-1", "environment")
    # torch.distributed's store: rank zero makes a new id and publishes it, the others read it later
    zero = plan_run_id("a", rank=0, world_size=2, store=True, env=job)
    assert zero.source == "new" and zero.publish and zero.run_id is not None and zero.run_id.startswith("a-")
    assert plan_run_id("b", rank=1, world_size=2, store=True, env=job) == type(zero)(None, "store")
    # a launcher's job id: the same id on every rank with the same name; another job or name, another id
    ids = {plan_run_id("bert", rank=r, world_size=2, env=job).run_id for r in (0, 1)}
    assert ids == {make_run_id("bert", "torchrun/job-7")}
    assert make_run_id("bert", "torchrun/job-8") not in ids and make_run_id("bert2", "torchrun/job-7") not in ids
    # nothing shared: rank zero a new random id, the others none
    assert plan_run_id("a", rank=0, world_size=2, env={}).source == "new"
    assert plan_run_id("a", rank=1, world_size=2, env={}) == type(zero)(None, "unknown")
    # one process: the job id is not used (two runs of one Slurm job are two runs)
    assert (
        plan_run_id("a", rank=0, world_size=1, env={"SLURM_JOB_ID": "5"}).run_id
        != plan_run_id("a", rank=0, world_size=1, env={"SLURM_JOB_ID": "5"}).run_id
    )


def test_job_key_of_the_launchers() -> None:
    assert job_key({"TORCHELASTIC_RUN_ID": "none", "SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0"}) == "slurm/42.0"
    assert job_key({"TORCHELASTIC_RUN_ID": "abc"}) == "torchrun/abc"
    assert job_key({}) is None


def test_a_bad_run_id_in_the_environment_is_named_and_not_used(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="runalert")
    plan = plan_run_id("a", rank=0, world_size=1, env={"RUNALERT_RUN_ID": "has spaces/and slashes"})
    assert plan.source == "new"
    assert "RUNALERT_RUN_ID='has spaces/and slashes' is not a run id" in caplog.text
    assert "letters, digits or ._:@+-" in caplog.text


def test_the_run_page_groups_system_metrics_by_rank_and_node() -> None:
    names = [
        "loss",
        "system/cpu_percent",
        "system/gpu.0.memory_percent",
        "system/node.1/cpu_percent",
        "system/process_rss_bytes",
        "system/rank.1/gpu.1.memory_percent",
        "system/rank.10/process_rss_bytes",
        "system/rank.2/process_rss_bytes",
        "val_loss",
    ]
    assert group_by_source(names, 48) == [
        ("rank 0 · node 0", ["system/cpu_percent", "system/gpu.0.memory_percent", "system/process_rss_bytes"]),
        ("rank 1", ["system/rank.1/gpu.1.memory_percent"]),
        ("rank 2", ["system/rank.2/process_rss_bytes"]),
        ("rank 10", ["system/rank.10/process_rss_bytes"]),
        ("node 1", ["system/node.1/cpu_percent"]),
    ]
    assert group_by_source(names, 2) == [("rank 0 · node 0", ["system/cpu_percent", "system/gpu.0.memory_percent"])]
