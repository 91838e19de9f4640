"""A run's group (a sweep, a job array, a torchrun job): ``group=`` if given, else from the environment.

A run belongs to at most one group. :func:`group_from_env` is the default the client uses when a run is
opened without ``group=``: ``RUNALERT_GROUP``, else a W&B sweep (``WANDB_SWEEP_ID``), a Slurm job array
(``SLURM_ARRAY_JOB_ID``) or a torchrun/elastic job (``TORCHELASTIC_RUN_ID``), first found wins. The sweep,
array and torchrun ids are prefixed with their kind (``wandb-sweep/abc123``, ``slurm-array/4242``,
``torchrun/job-7``) so that two kinds of id never name the same group; ``RUNALERT_GROUP`` is taken as it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["GROUP_SOURCES", "MAX_GROUP_LENGTH", "clean_group", "group_from_env"]

MAX_GROUP_LENGTH = 128
"""The longest group name the server stores."""

GROUP_SOURCES: tuple[tuple[str, str], ...] = (
    ("RUNALERT_GROUP", ""),
    ("WANDB_SWEEP_ID", "wandb-sweep/"),
    ("SLURM_ARRAY_JOB_ID", "slurm-array/"),
    ("TORCHELASTIC_RUN_ID", "torchrun/"),
)
"""(environment variable, prefix of the group name), in the order they are tried."""

_UNSET = {"", "none"}  # torchrun sets TORCHELASTIC_RUN_ID=none when no --rdzv-id was given


def clean_group(value: object) -> str | None:
    """``value`` as a group name: stripped, ``None`` when empty; ``ValueError`` (naming ``group``) when it is not
    a string or longer than :data:`MAX_GROUP_LENGTH`."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"group must be a string (or None), not {type(value).__name__}")
    value = value.strip()
    if len(value) > MAX_GROUP_LENGTH:
        raise ValueError(f"group must be at most {MAX_GROUP_LENGTH} characters, not {len(value)}")
    return value or None


def group_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The run's group from ``env`` (default ``os.environ``), or ``None`` when no source is set."""
    env = os.environ if env is None else env
    for name, prefix in GROUP_SOURCES:
        value = (env.get(name) or "").strip()
        if not value or (name != "RUNALERT_GROUP" and value.lower() in _UNSET):
            continue
        return (prefix + value)[:MAX_GROUP_LENGTH]
    return None
