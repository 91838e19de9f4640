"""Where each rank's system readings go on the server: names that never collide between ranks or hosts.

Every rank samples its own devices (:mod:`runalert.system_metrics` names them ``system/...`` as a single process
would). :class:`SeriesNames` gives each reading the name it is stored under, so that the readings of many ranks
land in one run without overwriting each other:

- global rank zero keeps the plain names (``system/gpu.0.memory_percent``, ``system/cpu_percent``): a
  single-process run, and the rank that logs the run's training values, read as before;
- what belongs to a process (its GPUs, its resident memory) is qualified by the global rank on the other ranks:
  ``system/rank.3/gpu.3.memory_percent``, ``system/rank.3/process_rss_bytes``;
- what belongs to a host (CPU, host memory, disk) is sent once per host, by its first process (local rank 0),
  and qualified by the node on nodes other than the first: ``system/node.1/cpu_percent``. When the launcher says
  neither the node nor the local rank, a rank other than zero sends them qualified by its rank.

``docs/system-metrics.md`` documents the scheme.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runalert.system_metrics import HOST_METRICS, PREFIX

__all__ = ["HOST_WIDE", "SeriesNames", "group_by_source", "source_of"]

HOST_WIDE = frozenset(name for name in HOST_METRICS if name != f"{PREFIX}process_rss_bytes")
"""The readings that describe the whole host (the same in every process of it), sent once per host."""


@dataclass(frozen=True)
class SeriesNames:
    """The stored names of one process's readings.

    Args:
        rank: the global rank.
        local_rank: the rank within the host (``None``: no launcher said).
        node: the node (host) index (``None``: not known).
    """

    rank: int = 0
    local_rank: int | None = None
    node: int | None = 0

    @property
    def sends_host_metrics(self) -> bool:
        """Whether this process sends the host-wide readings: the first process of its host (local rank 0), or
        any process whose local rank is not known."""
        return self.local_rank in (None, 0)

    def name(self, metric: str) -> str | None:
        """The stored name of ``metric`` (a ``system/...`` name); ``None``: not sent from this process."""
        if not metric.startswith(PREFIX):
            return metric
        rest = metric[len(PREFIX) :]
        if metric in HOST_WIDE:
            if not self.sends_host_metrics:
                return None
            if self.node == 0 or (self.node is None and self.rank == 0):
                return metric
            if self.node is not None:
                return f"{PREFIX}node.{self.node}/{rest}"
        elif self.rank == 0:
            return metric
        return f"{PREFIX}rank.{self.rank}/{rest}"

    def apply(self, values: Mapping[str, float]) -> dict[str, float]:
        """``values`` under their stored names (those not sent from this process left out)."""
        if self.rank == 0 and self.node in (0, None) and self.sends_host_metrics:
            return dict(values)  # the plain names
        named: dict[str, float] = {}
        for metric, value in values.items():
            stored = self.name(metric)
            if stored is not None:
                named[stored] = value
        return named

    @classmethod
    def for_process(cls, rank: int, *, env: Mapping[str, str] | None = None) -> SeriesNames:
        """The names of the process of global rank ``rank``, its local rank and node from the launcher's
        variables (:func:`runalert.ranks.local_rank`, :func:`runalert.ranks.node_index`)."""
        from runalert.ranks import local_rank, node_index

        return cls(rank=rank, local_rank=local_rank(env=env), node=node_index(rank, env=env))


_QUALIFIED = re.compile(rf"^{re.escape(PREFIX)}(rank|node)\.(\d+)/")


def source_of(name: str) -> tuple[tuple[int, int], str] | None:
    """Which process or host the stored system metric ``name`` describes, for grouping on a run's page: a sort key
    and a label (``"rank 0 · node 0"`` for the plain names, ``"rank 3"``, ``"node 1"``); ``None``: not a system
    metric."""
    if not name.startswith(PREFIX):
        return None
    found = _QUALIFIED.match(name)
    if found is None:
        return (0, 0), "rank 0 · node 0"
    kind, number = found.group(1), int(found.group(2))
    return ((1 if kind == "rank" else 2), number), f"{kind} {number}"


def group_by_source(names: Iterable[str], limit: int) -> list[tuple[str, list[str]]]:
    """The system metrics among ``names`` grouped by :func:`source_of` (rank zero's first, then each rank's, then
    each node's), at most ``limit`` names in all, each group's names in the order given."""
    groups: dict[tuple[int, int], tuple[str, list[str]]] = {}
    taken = 0
    for name in names:
        source = source_of(name)
        if source is None or taken >= limit:
            continue
        groups.setdefault(source[0], (source[1], []))[1].append(name)
        taken += 1
    return [groups[key] for key in sorted(groups)]
