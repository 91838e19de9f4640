"""The built-in system alerts: a pure, edge-triggered state machine over system metric readings.

:class:`SystemAlerts` is fed each reading of :class:`runalert.system_metrics.SystemSampler` (with the time and the
training steps done so far) and answers what changed: an alert that fires (WARN) or one that resolved (INFO,
"Resolved: ..."). Each alert fires at most once per run (per GPU for the GPU ones) and resolves once when its
condition clears; it does not fire again in that run. No I/O, no clock of its own: the caller sends.

The alerts and their default thresholds (:class:`SystemAlertOptions`, ``docs/system-metrics.md``):

- GPU memory nearly full: ``system/gpu.{i}.memory_percent`` >= 95 for 2 readings in a row;
- GPU idle while training steps continue: ``system/gpu.{i}.utilization_percent`` <= 5 for 5 minutes while the
  step count grows (the input pipeline is the bottleneck);
- disk nearly full where checkpoints go: ``system/disk_free_percent`` < 5 or ``system/disk_free_bytes`` < 5 GB;
- host memory nearly full: ``system/memory_percent`` >= 95.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from runalert._formatting import format_duration

__all__ = ["SystemAlert", "SystemAlertOptions", "SystemAlerts"]

_GPU = re.compile(r"^system/gpu\.(\d+)\.(memory_percent|utilization_percent)$")


@dataclass(frozen=True)
class SystemAlertOptions:
    """Thresholds of the built-in system alerts; ``None`` turns one alert off.

    Args:
        gpu_memory_percent: GPU memory in use, percent, at or above which the GPU memory alert counts a reading.
        gpu_memory_samples: readings in a row at or above ``gpu_memory_percent`` before it fires.
        gpu_idle_percent: GPU utilisation, percent, at or below which a GPU counts as idle.
        gpu_idle_seconds: seconds a GPU stays idle, while training steps continue, before the idle alert fires.
        disk_free_percent: free space, percent of the disk where checkpoints go, below which the disk alert fires.
        disk_free_bytes: free bytes there below which the disk alert fires (either condition fires it).
        host_memory_percent: host memory in use, percent, at or above which the host memory alert fires.
    """

    gpu_memory_percent: float | None = 95.0
    gpu_memory_samples: int = 2
    gpu_idle_percent: float | None = 5.0
    gpu_idle_seconds: float | None = 300.0
    disk_free_percent: float | None = 5.0
    disk_free_bytes: float | None = 5e9
    host_memory_percent: float | None = 95.0

    def __post_init__(self) -> None:
        for name in ("gpu_memory_percent", "gpu_idle_percent", "disk_free_percent", "host_memory_percent"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100
            ):
                raise ValueError(f"system_alerts: {name} must be a percentage from 0 to 100 or None, not {value!r}")
        samples = self.gpu_memory_samples
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"system_alerts: gpu_memory_samples must be an integer >= 1, not {samples!r}")
        idle = self.gpu_idle_seconds
        if isinstance(idle, timedelta):
            object.__setattr__(self, "gpu_idle_seconds", idle.total_seconds())
        elif idle is not None and (isinstance(idle, bool) or not isinstance(idle, int | float) or idle < 0):
            raise ValueError(f"system_alerts: gpu_idle_seconds must be seconds >= 0, a timedelta or None, not {idle!r}")
        free = self.disk_free_bytes
        if free is not None and (isinstance(free, bool) or not isinstance(free, int | float) or free < 0):
            raise ValueError(f"system_alerts: disk_free_bytes must be bytes >= 0 or None, not {free!r}")

    @classmethod
    def from_option(cls, value: Any) -> SystemAlertOptions | None:
        """The ``system_alerts=`` option: ``True`` (the defaults), ``False``/``None`` (every built-in alert off), a
        :class:`SystemAlertOptions`, or a mapping of some of its fields (``{"disk_free_bytes": 20e9,
        "gpu_idle_percent": None}``). Bad input raises ``ValueError`` naming the field and the allowed values."""
        if value is True:
            return cls()
        if value is False or value is None:
            return None
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = [f.name for f in dataclasses.fields(cls)]
            unknown = sorted(str(key) for key in value if key not in known)
            if unknown:
                raise ValueError(
                    f"system_alerts: unknown option(s) {', '.join(unknown)}; the options are: {', '.join(known)}"
                )
            return cls(**{str(key): item for key, item in value.items()})
        raise ValueError(
            "system_alerts must be True, False, None, a SystemAlertOptions or a mapping of its fields "
            f"({', '.join(f.name for f in dataclasses.fields(cls))}), not {type(value).__name__}"
        )


@dataclass(frozen=True)
class SystemAlert:
    """One change of a built-in alert: ``kind`` "fired" (send at WARN) or "resolved" (send at INFO).

    ``key`` names the alert and its device (``"gpu_memory:0"``, ``"disk"``); ``scope`` is ``"gpu"`` (this rank's
    own device: sent by the rank that reads it) or ``"host"`` (one per host)."""

    key: str
    kind: Literal["fired", "resolved"]
    title: str
    text: str
    scope: Literal["gpu", "host"]
    fields: Mapping[str, str]

    @property
    def level(self) -> str:
        """``"WARN"`` when fired, ``"INFO"`` when resolved."""
        return "WARN" if self.kind == "fired" else "INFO"


def _pct(value: float) -> str:
    return f"{value:.1f}%"


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f} GB"


class SystemAlerts:
    """The built-in alerts' state for one run. Feed readings in time order with :meth:`observe`."""

    def __init__(self, options: SystemAlertOptions | None = None) -> None:
        self.options = options if options is not None else SystemAlertOptions()
        self.active: set[str] = set()
        """Alerts fired and not resolved yet."""
        self.done: set[str] = set()
        """Alerts that fired in this run (they do not fire again)."""
        self._streak: dict[int, int] = {}  # GPU -> readings in a row at or above the memory threshold
        self._idle_since: dict[int, tuple[float, int]] = {}  # GPU -> (time, steps) when it turned idle

    def state_dict(self) -> dict[str, Any]:
        """What a later stage of the same run (or a resume) needs to keep "once per run": the alerts that fired,
        and those not resolved yet."""
        return {"done": sorted(self.done), "active": sorted(self.active)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`: those alerts do not fire again; an active one still resolves."""
        self.done |= {str(key) for key in state.get("done", ())}
        self.active |= {str(key) for key in state.get("active", ())} & self.done

    def observe(self, values: Mapping[str, float], *, now: float, steps: int) -> list[SystemAlert]:
        """One reading (``system/...`` names to floats) taken at ``now`` (monotonic seconds), ``steps`` training
        steps done by then. Returns the alerts that fired or resolved with it, in a stable order."""
        changes: list[SystemAlert] = []
        opts = self.options
        for name, value in values.items():
            match = _GPU.match(name)
            if match is None:
                continue
            gpu, metric = int(match.group(1)), match.group(2)
            if metric == "memory_percent" and opts.gpu_memory_percent is not None:
                self._gpu_memory(gpu, value, changes)
            elif metric == "utilization_percent" and opts.gpu_idle_percent is not None:
                self._gpu_idle(gpu, value, now, steps, changes)
        if opts.disk_free_percent is not None or opts.disk_free_bytes is not None:
            self._disk(values, changes)
        memory = values.get("system/memory_percent")
        if memory is not None and opts.host_memory_percent is not None:
            limit = opts.host_memory_percent
            self._edge(
                "host_memory",
                memory >= limit,
                changes,
                scope="host",
                title="Host memory nearly full",
                text=f"Host memory is {_pct(memory)} in use (threshold {_pct(limit)}); the run may start swapping "
                "or be killed by the out-of-memory killer.",
                cleared=f"Host memory is {_pct(memory)} in use, below {_pct(limit)}.",
                fields={"memory_percent": _pct(memory)},
            )
        return changes

    def _gpu_memory(self, gpu: int, value: float, changes: list[SystemAlert]) -> None:
        opts = self.options
        limit = float(opts.gpu_memory_percent or 0.0)
        streak = self._streak[gpu] = self._streak.get(gpu, 0) + 1 if value >= limit else 0
        need = opts.gpu_memory_samples
        self._edge(
            f"gpu_memory:{gpu}",
            streak >= need,
            changes,
            scope="gpu",
            hold=value >= limit,
            title=f"GPU {gpu} memory nearly full",
            text=f"GPU {gpu} memory is {_pct(value)} in use, at or above {_pct(limit)} for {streak} readings in a "
            "row: an out-of-memory error may follow.",
            cleared=f"GPU {gpu} memory is {_pct(value)} in use, below {_pct(limit)}.",
            fields={"gpu": str(gpu), "memory_percent": _pct(value)},
        )

    def _gpu_idle(self, gpu: int, value: float, now: float, steps: int, changes: list[SystemAlert]) -> None:
        opts = self.options
        limit = float(opts.gpu_idle_percent or 0.0)
        wait = opts.gpu_idle_seconds
        idle = value <= limit
        if not idle:
            self._idle_since.pop(gpu, None)
        elif gpu not in self._idle_since:
            self._idle_since[gpu] = (now, steps)
        since, steps_then = self._idle_since.get(gpu, (now, steps))
        lasted = now - since
        trips = idle and wait is not None and lasted >= wait and steps > steps_then
        self._edge(
            f"gpu_idle:{gpu}",
            trips,
            changes,
            scope="gpu",
            hold=idle,
            title=f"GPU {gpu} idle while training",
            text=f"GPU {gpu} utilisation is {_pct(value)} (at or below {_pct(limit)}) for "
            f"{format_duration(lasted)} while {steps - steps_then:,} training steps ran: the input pipeline (data "
            "loading, augmentation) is likely the bottleneck.",
            cleared=f"GPU {gpu} utilisation is {_pct(value)}, above {_pct(limit)}.",
            fields={"gpu": str(gpu), "utilization_percent": _pct(value), "idle_for": format_duration(lasted)},
        )

    def _disk(self, values: Mapping[str, float], changes: list[SystemAlert]) -> None:
        percent = values.get("system/disk_free_percent")
        free = values.get("system/disk_free_bytes")
        if percent is None and free is None:
            return
        opts = self.options
        low_percent = percent is not None and opts.disk_free_percent is not None and percent < opts.disk_free_percent
        low_bytes = free is not None and opts.disk_free_bytes is not None and free < opts.disk_free_bytes
        limits = []
        if opts.disk_free_percent is not None:
            limits.append(_pct(opts.disk_free_percent))
        if opts.disk_free_bytes is not None:
            limits.append(_gb(opts.disk_free_bytes))
        shown = ", ".join(
            part
            for part in (_pct(percent) if percent is not None else "", _gb(free) if free is not None else "")
            if part
        )
        fields = {"disk_free": shown}
        self._edge(
            "disk",
            low_percent or low_bytes,
            changes,
            scope="host",
            title="Disk nearly full",
            text=f"The disk where checkpoints go has {shown} free (threshold: below {' or '.join(limits)}); "
            "saving a checkpoint may fail.",
            cleared=f"The disk where checkpoints go has {shown} free again.",
            fields=fields,
        )

    def _edge(
        self,
        key: str,
        trips: bool,
        changes: list[SystemAlert],
        *,
        scope: Literal["gpu", "host"],
        title: str,
        text: str,
        cleared: str,
        fields: Mapping[str, str],
        hold: bool | None = None,
    ) -> None:
        """Fire ``key`` when ``trips`` turns true (once per run); resolve it when its condition (``hold``, default
        ``trips``) is no longer true."""
        if key in self.active:
            if not (trips if hold is None else hold):
                self.active.discard(key)
                changes.append(SystemAlert(key, "resolved", f"Resolved: {title}", cleared, scope, fields))
        elif trips and key not in self.done:
            self.active.add(key)
            self.done.add(key)
            changes.append(SystemAlert(key, "fired", title, text, scope, fields))
