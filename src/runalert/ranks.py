"""Which process am I? Global rank and world size from arguments, launcher variables or torch.distributed; the
local rank (within a host) and the node (host) index from the launcher's variables."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

__all__ = [
    "LOCAL_RANK_VARIABLES",
    "NODE_VARIABLES",
    "RANK_VARIABLES",
    "WORLD_SIZE_VARIABLES",
    "global_rank",
    "local_rank",
    "node_index",
    "world_size",
]

RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK")
"""Environment variables read for the global rank, in this order (LOCAL_RANK is the last resort)."""

WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "LOCAL_WORLD_SIZE")
"""Environment variables read for the world size, in this order."""

LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")
"""Environment variables read for the rank within a host, in this order (torchrun and Lightning, Slurm, Open MPI,
MPICH)."""

NODE_VARIABLES = ("NODE_RANK", "GROUP_RANK", "SLURM_NODEID")
"""Environment variables read for the node (host) index, in this order (Lightning, torchrun, Slurm)."""


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


def local_rank(*, env: Mapping[str, str] | None = None) -> int | None:
    """The rank within this host from the launcher's variables (:data:`LOCAL_RANK_VARIABLES`); ``None`` when no
    launcher set one."""
    found = _from_env(LOCAL_RANK_VARIABLES, os.environ if env is None else env)
    return found if found is not None and found >= 0 else None


def node_index(rank: int, *, env: Mapping[str, str] | None = None) -> int | None:
    """The index of this process's node (host) among the job's: :data:`NODE_VARIABLES`, else ``rank //
    LOCAL_WORLD_SIZE`` (torchrun), else 0 when this process's local rank is its global rank (one node), else
    ``None`` (several nodes, which one not known)."""
    env = os.environ if env is None else env
    found = _from_env(NODE_VARIABLES, env)
    if found is not None and found >= 0:
        return found
    per_node = _from_env(("LOCAL_WORLD_SIZE",), env)
    if per_node is not None and per_node >= 1:
        return rank // per_node
    local = local_rank(env=env)
    if local is None or local == rank:
        return 0
    return None
