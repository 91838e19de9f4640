"""A run's default group from the environment: RUNALERT_GROUP, a W&B sweep, a Slurm job array, a torchrun job."""

from __future__ import annotations

import pytest

from runalert.run_group import clean_group, group_from_env


@pytest.mark.parametrize(
    ("env", "group"),
    [
        ({}, None),
        ({"RUNALERT_GROUP": "ablation-3"}, "ablation-3"),
        ({"WANDB_SWEEP_ID": "abc123"}, "wandb-sweep/abc123"),
        ({"SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7"}, "slurm-array/4242"),
        ({"TORCHELASTIC_RUN_ID": "job-7"}, "torchrun/job-7"),
        ({"TORCHELASTIC_RUN_ID": "none"}, None),  # torchrun without --rdzv-id
        ({"WANDB_SWEEP_ID": "  "}, None),
        # The first source set wins: RUNALERT_GROUP, then the sweep, the array, the torchrun job.
        ({"RUNALERT_GROUP": "mine", "WANDB_SWEEP_ID": "s", "SLURM_ARRAY_JOB_ID": "1"}, "mine"),
        ({"WANDB_SWEEP_ID": "s", "SLURM_ARRAY_JOB_ID": "1", "TORCHELASTIC_RUN_ID": "t"}, "wandb-sweep/s"),
        ({"SLURM_ARRAY_JOB_ID": "1", "TORCHELASTIC_RUN_ID": "t"}, "slurm-array/1"),
    ],
)
def test_group_from_env(env: dict[str, str], group: str | None) -> None:
    assert group_from_env(env) == group


def test_group_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RUNALERT_GROUP", "WANDB_SWEEP_ID", "SLURM_ARRAY_JOB_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "99")
    assert group_from_env() == "slurm-array/99"


def test_clean_group_names_the_field() -> None:
    assert clean_group("  g  ") == "g" and clean_group("") is None and clean_group(None) is None
    with pytest.raises(ValueError, match="group must be at most 128"):
        clean_group("x" * 129)
    with pytest.raises(ValueError, match="group must be a string"):
        clean_group(7)
