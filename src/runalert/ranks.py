"""Which process am I? Global rank and world size from arguments, launcher variables or torch.distributed."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["RANK_VARIABLES", "WORLD_SIZE_VARIABLES", "global_rank", "world_size"]

RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK")
"""Environment variables read for the global rank, in this order (LOCAL_RANK is the last resort)."""

WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "LOCAL_WORLD_SIZE")
"""Environment variables read for the world size, in this order."""


def _initialised_dist() -> Any:
    """``torch.distributed`` if it is already imported and initialised (never imports torch)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return None
    try:
        if dist.is_available() and dist.is_initialized():
            return dist
    except Exception:  # pragma: no cover - a broken torch build must not stop the run
        return None
    return None


def _from_env(names: tuple[str, ...], env: Mapping[str, str]) -> int | None:
    for name in names:
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            return int(raw.strip())
        except ValueError:
            continue
    return None


def global_rank(rank: int | None = None, *, env: Mapping[str, str] | None = None) -> int:
    """The global rank: ``rank`` if given, else torch.distributed's if initialised, else the launcher's variables
    (RANK, SLURM_PROCID, OMPI_COMM_WORLD_RANK, PMI_RANK, then LOCAL_RANK), else 0."""
    if rank is not None:
        return int(rank)
    dist = _initialised_dist()
    if dist is not None:
        try:
            return int(dist.get_rank())
        except Exception:  # pragma: no cover
            pass
    found = _from_env(RANK_VARIABLES, os.environ if env is None else env)
    return found if found is not None and found >= 0 else 0


def world_size(size: int | None = None, *, env: Mapping[str, str] | None = None) -> int:
    """The number of processes: ``size`` if given, else torch.distributed's, else the launcher's variables, else 1."""
    if size is not None:
        return max(1, int(size))
    dist = _initialised_dist()
    if dist is not None:
        try:
            return int(dist.get_world_size())
        except Exception:  # pragma: no cover
            pass
    found = _from_env(WORLD_SIZE_VARIABLES, os.environ if env is None else env)
    return found if found is not None and found >= 1 else 1
