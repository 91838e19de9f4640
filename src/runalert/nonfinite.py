"""Non-finite (NaN / inf) detection on logged values, without a host-device sync on most steps.

- Python floats (and ints) are checked at once: ``value - value == 0.0`` is false exactly for NaN and ±inf.
- numpy scalars and 0-d arrays are converted with ``float()``; larger arrays are checked with ``numpy.isfinite``.
- torch tensors (recognised by ``type(x).__module__``; torch is never imported here) are *held*, not read: a
  step appends the tensor to a list, which launches no kernel and reads nothing. The held tensors are read
  together, stacked per device and copied with one ``.tolist()`` (one host-device sync per device), when a read
  is due:

  - ``check_every_n_steps=n``: on every n-th step;
  - ``None`` (the default): about every :data:`READ_INTERVAL` seconds. The detector measures the steps'
    pace at each read and holds as many steps as fit in that time (every step when a step takes longer).

  Reading a scalar costs 6-10 µs inside a real training loop on a CPU, and a pipeline stall on a GPU; the
  default bounds that cost by time, whatever the model, while each value is still checked with its own step:
  a NaN is reported with the step and value where it appeared, at most :data:`READ_INTERVAL` later. A tensor
  is read when its batch is read: one that is updated in place afterwards is read as it is then.
- Anything else (strings, None, lists ...) is skipped, with one warning per key.

The detector also hands out the values of the keys rules (and the metric stream) want (``feed``): floats at once,
tensors when they are read (into the ``feed`` dict of their own step, given with them). NaN and inf values are
handed out too, as floats (``is_nonfinite()`` rules fire on them; the rule engine keeps them out of every other
rule's window); a tensor with more than one element is checked, never handed out.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from runalert._log import logger

__all__ = ["READ_INTERVAL", "Finding", "NonFiniteDetector", "base_key", "is_loss_key", "value_kind"]

FLOAT, INT, TENSOR, NUMPY, OTHER, SKIP = range(6)
_KINDS: dict[type, int] = {float: FLOAT, int: INT, bool: SKIP}

WATCH = 1
FEED = 2

READ_INTERVAL = 0.05
"""Seconds between two reads of the held tensors when ``check_every_n_steps`` is ``None``."""
_MAX_BATCH = 1024  # steps held at most between two reads (``None`` mode)
_MAX_HELD = 65_536  # tensors held at most: beyond, a read comes early (a bound on memory)

_LOSS_KEY = re.compile(r"(^|[_/.\-\s])loss($|[_/.\-\s])", re.IGNORECASE)

Held = tuple[Any, str, int, "int | None", "dict[str, float] | None"]
"""A tensor waiting to be read: (tensor, key, role, step, the step's feed dict)."""


def is_loss_key(key: str) -> bool:
    """Whether ``key`` names a loss: ``loss``, ``train_loss``, ``val/loss``, ``loss_step`` ... (not ``lossy``)."""
    return bool(_LOSS_KEY.search(key))


def base_key(key: str) -> str:
    """``key`` without a note of where the value came from: ``"loss (model output)"`` -> ``"loss"``."""
    return key.split(" (", 1)[0] if key.endswith(")") else key


def value_kind(value: Any) -> int:
    """How a value is checked: FLOAT, INT, TENSOR, NUMPY, SKIP (bools) or OTHER (non-numeric). Cached per type."""
    tp = type(value)
    kind = _KINDS.get(tp)
    if kind is None:
        module = getattr(tp, "__module__", "") or ""
        if module.startswith("torch") and hasattr(value, "detach"):
            kind = TENSOR
        elif module.startswith("numpy"):
            kind = NUMPY
        elif isinstance(value, bool):
            kind = SKIP
        elif isinstance(value, float):
            kind = FLOAT
        elif isinstance(value, int):
            kind = INT
        else:
            kind = OTHER
        if len(_KINDS) < 256:
            _KINDS[tp] = kind
    return kind


@dataclass(frozen=True)
class Finding:
    """A non-finite value: ``value`` is NaN/±inf when known, ``None`` when only a reduction says so (a
    tensor with more than one element).

    ``step`` is the step the value came with.
    """

    key: str
    value: float | None
    step: int | None
    note: str = ""

    @property
    def value_text(self) -> str:
        if self.value is None:
            return "nan or inf"
        return str(self.value)


class NonFiniteDetector:
    """Watches ``watch`` keys for NaN/inf; also extracts the values of ``feed`` keys (NaN and inf too) for rules.

    Args:
        watch: ``"loss"`` (keys naming a loss, see :func:`is_loss_key`), ``"all"``, a collection of key
            names, or ``None`` (no non-finite checks).
        check_every_n_steps: held tensors are read every n :meth:`step` calls (1: every step); ``None``: about
            every ``read_interval`` seconds (see the module's docstring).
        feed: keys whose values are wanted (rules, the metric stream), ``"all"`` or ``None``.
        read_interval: seconds between two reads when ``check_every_n_steps`` is ``None``.
    """

    def __init__(
        self,
        watch: str | Collection[str] | None = "loss",
        check_every_n_steps: int | None = None,
        feed: str | Collection[str] | None = None,
        *,
        read_interval: float = READ_INTERVAL,
    ) -> None:
        self.watch = watch if isinstance(watch, str) or watch is None else frozenset(watch)
        self.feed_keys = feed if isinstance(feed, str) or feed is None else frozenset(feed)
        self.every = None if check_every_n_steps is None else max(1, int(check_every_n_steps))
        self.read_interval = float(read_interval)
        self.count = 0
        """:meth:`step` calls so far."""
        self.reads = 0
        """Host-device reads done (one per device per read of held tensors)."""
        self.held: list[Held] = []
        """Tensors not read yet, in step order (a step's feed dict gets their values when they are read)."""
        self._roles: dict[str, int] = {}
        self._warned: set[str] = set()
        self._batch = 1  # steps between two reads (None mode: adapted at each read)
        self._due = self.every or 1  # the step count at which the next read comes
        self._last_time = time.monotonic()  # when the last read was (None mode)
        self._last_count = 0  # self.count at the last read

    # -- roles -------------------------------------------------------------------------------------------------
    def role(self, key: str) -> int:
        """WATCH and/or FEED for ``key`` (cached); 0 for a key that is not a string (a step's output may hold any)."""
        role = self._roles.get(key)
        if role is None:
            role = 0
            if isinstance(key, str):
                watch = self.watch
                if (
                    watch == "all"
                    or (watch == "loss" and is_loss_key(key))
                    or (isinstance(watch, frozenset) and (key in watch or base_key(key) in watch))
                ):
                    role |= WATCH
                feed = self.feed_keys
                if feed == "all" or (isinstance(feed, frozenset) and key in feed):
                    role |= FEED
            if len(self._roles) < 10_000:
                self._roles[key] = role
        return role

    def set_feed(self, feed: str | Collection[str] | None) -> None:
        """Change which keys' values are handed out (rules registered at start)."""
        self.feed_keys = feed if isinstance(feed, str) or feed is None else frozenset(feed)
        self._roles.clear()

    @property
    def active(self) -> bool:
        """Whether there is anything to do at all."""
        return self.watch is not None or self.feed_keys is not None

    # -- scanning ----------------------------------------------------------------------------------------------
    def step(self, values: Mapping[str, Any], step: int | None, feed: dict[str, float] | None = None) -> Finding | None:
        """One training step: check host values now, hold tensors, read what is held when a read is due.

        Values of feed keys (NaN and inf too) are put in ``feed`` when given: host values now, tensors when they
        are read (while :attr:`held` is not empty, ``feed`` may still be filled in). Returns the first non-finite
        finding of a watched key, if any: a held one from an earlier step first.
        """
        found: Finding | None = None
        roles = self._roles
        held = self.held
        for key, value in values.items():
            role = roles.get(key)
            if role is None:
                role = self.role(key)
            if not role:
                continue
            if type(value) is float:
                if feed is not None and role & FEED:
                    feed[key] = value  # NaN and inf too: is_nonfinite() rules take them
                if value - value != 0.0 and found is None and role & WATCH:
                    found = Finding(key, value, step)
                continue
            kind = _KINDS.get(type(value))
            if kind is None:
                kind = value_kind(value)
            if kind == TENSOR:
                held.append((value, key, role, step, feed))
                continue
            hit = self._host_value(key, value, kind, role, step, feed=feed)
            if hit is not None and found is None:
                found = hit
        self.count = count = self.count + 1
        if held and (count >= self._due or len(held) >= _MAX_HELD):
            earlier = self.read()
            if earlier is not None:
                return earlier
        return found

    def read(self) -> Finding | None:
        """Read every held tensor now (due, or at the end of a stage or run); returns the first non-finite.
        Nothing held: nothing to do (the schedule stands)."""
        held = self.held
        if not held:
            return None
        self.held = []
        found = self._settle(held)
        self._schedule()
        return found

    def check(
        self, values: Mapping[str, Any], step: int | None, feed: dict[str, float] | None = None
    ) -> Finding | None:
        """Check every watched value now (epoch-level metrics: tensors are read at once, not held)."""
        found: Finding | None = None
        tensors: list[Held] = []
        for key, value in values.items():
            role = self.role(key)
            if not role:
                continue
            kind = value_kind(value)
            if kind == TENSOR:
                tensors.append((value, key, role, step, feed))
                continue
            hit = self._host_value(key, value, kind, role, step, feed=feed)
            if hit is not None and found is None:
                found = hit
        if tensors:
            hit = self._settle(tensors)
            if hit is not None and found is None:
                found = hit
        return found

    # -- internals ---------------------------------------------------------------------------------------------
    def _schedule(self) -> None:
        """After a read: when the next one is due."""
        count = self.count
        steps = count - self._last_count
        self._last_count = count
        every = self.every
        if every is not None:
            batch = every - count % every  # the next multiple of n
        else:
            now = time.monotonic()
            if steps > 0:
                pace = (now - self._last_time) / steps
                fit = int(self.read_interval / pace) if pace > 0 else _MAX_BATCH
                self._batch = max(1, min(fit, 2 * self._batch, _MAX_BATCH))  # grows at most twofold a read
            self._last_time = now
            batch = self._batch
        self._due = count + batch

    def _settle(self, held: list[Held]) -> Finding | None:
        """Read ``held`` (one read per device), put the values in their steps' feeds (NaN and inf too), return the
        first non-finite value of a watched key (in the order held)."""
        numbers = self._numbers(held)
        found: Finding | None = None
        for (_, key, role, step, feed), number in zip(held, numbers, strict=True):
            if number is None:
                continue
            if type(number) is _Reduced:
                if found is None and math.isnan(number):
                    found = Finding(key, None, step, "non-finite element(s)")
                continue
            if feed is not None and role & FEED:
                feed[key] = number
            if number - number != 0.0 and found is None and role & WATCH:
                found = Finding(key, number, step)
        return found

    def _numbers(self, held: list[Held]) -> list[float | None]:
        """The held tensors' values as floats: a scalar's value, a larger tensor's :class:`_Reduced` flag (0.0,
        or NaN if any element is not finite), ``None`` for what is not checked. One read per device."""
        try:
            # The common cases: one value (one .item()), or scalars on one device (one stack, one .tolist();
            # stack promotes mixed dtypes, and fails on mixed devices or shapes: then the general path).
            if len(held) == 1:
                number = held[0][0].item()
                if type(number) is float:
                    self.reads += 1
                    return [number]
            else:
                import torch

                stacked = torch.stack([entry[0] for entry in held])
                if stacked.dim() == 1 and stacked.is_floating_point():
                    numbers: list[float | None] = stacked.tolist()
                    self.reads += 1
                    return numbers
        except (RuntimeError, ValueError, TypeError):
            pass
        return self._numbers_by_device(held)

    def _numbers_by_device(self, held: list[Held]) -> list[float | None]:
        import torch

        numbers: list[float | None] = [None] * len(held)  # None: not checked (integers, booleans)
        reduced: set[int] = set()
        groups: dict[Any, tuple[list[int], list[Any]]] = {}
        for index, (tensor, _, role, _, _) in enumerate(held):
            t = tensor.detach()
            if t.numel() != 1 or t.is_complex():  # checked, not fed: reduced to a flag on the device
                if not role & WATCH or not (t.is_floating_point() or t.is_complex()):
                    continue  # integers and booleans are always finite
                t = ((t.abs() if t.is_complex() else t) * 0).sum()  # NaN if an element is not finite, else 0
                reduced.add(index)
            group = groups.setdefault(t.device, ([], []))
            group[0].append(index)
            group[1].append(t.reshape(()))
        for device, (indices, values) in groups.items():
            dtype = torch.float32 if getattr(device, "type", "cpu") == "mps" else torch.float64
            read = torch.stack([value.to(dtype) for value in values]).tolist()
            self.reads += 1
            for index, number in zip(indices, read, strict=True):
                numbers[index] = _Reduced(number) if index in reduced else float(number)
        return numbers

    def _host_value(
        self, key: str, value: Any, kind: int, role: int, step: int | None, *, feed: dict[str, float] | None = None
    ) -> Finding | None:
        if kind in (FLOAT, INT):
            number = float(value)
        elif kind == NUMPY:
            try:
                number = float(value)
            except TypeError:  # an array with more than one element
                import numpy

                if role & WATCH and not bool(numpy.isfinite(value).all()):
                    return Finding(key, None, step, "non-finite element(s)")
                return None
        elif kind == SKIP:
            return None
        else:
            self._warn_non_numeric(key, value)
            return None
        if feed is not None and role & FEED:
            feed[key] = number  # NaN and inf too
        if math.isfinite(number):
            return None
        if role & WATCH:
            return Finding(key, number, step)
        return None

    def _warn_non_numeric(self, key: str, value: Any) -> None:
        if key in self._warned:
            return
        if len(self._warned) < 10_000:
            self._warned.add(key)
        logger.warning(
            "runalert: value %r is not a number (%s); it is skipped by the non-finite check and rules",
            key,
            type(value).__name__,
        )


class _Reduced(float):
    """The flag of a tensor with more than one element: 0.0, or NaN when one of them is not finite."""
