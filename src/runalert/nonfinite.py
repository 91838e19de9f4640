"""Non-finite (NaN / inf) detection on logged values, without host-device syncs on unchecked steps.

- Python floats (and ints) are checked at once: ``value - value == 0.0`` is false exactly for NaN and ±inf.
- numpy scalars and 0-d arrays are converted with ``float()``; larger arrays are checked with ``numpy.isfinite``.
- torch tensors (recognised by ``type(x).__module__``; torch is never imported here) are *accumulated on their
  own device*: on an unchecked step, ``acc.addcmul_(t.detach(), zero)`` adds ``t * 0`` to a per-key float32
  accumulator: ``0`` for a finite value, NaN for NaN or ±inf, and it can never overflow. That is one
  asynchronous kernel and no synchronisation. Every ``check_every_n_steps`` steps the dirty accumulators and
  the current tensors (watched keys, and rule keys whose values are wanted) are stacked per device and read
  with a single ``.tolist()``: one host-device sync per device per check step, none on other steps.
- Anything else (strings, None, lists ...) is skipped, with one warning per key.

The detector also hands out the finite values of the keys rules want (``feed``): floats on every step,
tensors only on check steps (converted in the same read).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from runalert._log import logger

__all__ = ["Finding", "NonFiniteDetector", "base_key", "is_loss_key", "value_kind"]

FLOAT, INT, TENSOR, NUMPY, OTHER, SKIP = range(6)
_KINDS: dict[type, int] = {float: FLOAT, int: INT, bool: SKIP}

WATCH = 1
FEED = 2

_LOSS_KEY = re.compile(r"(^|[_/.\-\s])loss($|[_/.\-\s])", re.IGNORECASE)


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
    """A non-finite value: ``value`` is NaN/±inf when known, ``None`` when only the accumulated flag says so.

    ``first_step`` .. ``step`` is the span in which it happened (equal when seen at once).
    """

    key: str
    value: float | None
    step: int | None
    first_step: int | None
    note: str = ""

    @property
    def value_text(self) -> str:
        if self.value is None:
            return "nan or inf"
        return str(self.value)


class NonFiniteDetector:
    """Watches ``watch`` keys for NaN/inf; also extracts finite values of ``feed`` keys for rules.

    Args:
        watch: ``"loss"`` (keys naming a loss, see :func:`is_loss_key`), ``"all"``, a collection of key
            names, or ``None`` (no non-finite checks).
        check_every_n_steps: tensors are read every n :meth:`step` calls (1: every step).
        feed: keys whose finite values are wanted (rules), ``"all"`` or ``None``.
    """

    def __init__(
        self,
        watch: str | Collection[str] | None = "loss",
        check_every_n_steps: int = 1,
        feed: str | Collection[str] | None = None,
    ) -> None:
        self.watch = watch if isinstance(watch, str) or watch is None else frozenset(watch)
        self.feed_keys = feed if isinstance(feed, str) or feed is None else frozenset(feed)
        self.every = max(1, int(check_every_n_steps))
        self.count = 0
        self.reads = 0
        """Host-device reads done (one per device per check step with pending tensors)."""
        self._roles: dict[str, int] = {}
        self._acc: dict[str, Any] = {}  # key -> (accumulator, zero) on the key's device
        self._dirty: dict[str, int | None] = {}  # key -> first step accumulated since the last read
        self._warned: set[str] = set()
        self._late: list[Finding] = []  # found while moving a key's accumulator to another device

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
        """Change which keys' finite values are handed out (rules registered at start)."""
        self.feed_keys = feed if isinstance(feed, str) or feed is None else frozenset(feed)
        self._roles.clear()

    @property
    def active(self) -> bool:
        """Whether there is anything to do at all."""
        return self.watch is not None or self.feed_keys is not None

    # -- scanning ----------------------------------------------------------------------------------------------
    def step(self, values: Mapping[str, Any], step: int | None, feed: dict[str, float] | None = None) -> Finding | None:
        """One training step: check watched values, accumulate tensors, read them on check steps.

        Finite values of feed keys are put in ``feed`` when given. Returns the first non-finite finding, if any.
        """
        self.count += 1
        check = self.every == 1 or self.count % self.every == 0
        found: Finding | None = None
        roles = self._roles
        # Tensors to read on a check step: the first one in locals, more in a list (one read per device).
        first: tuple[str, int, Any] | None = None
        more: list[tuple[str, int, Any]] | None = None
        for key, value in values.items():
            role = roles.get(key)
            if role is None:
                role = self.role(key)
            if not role:
                continue
            if type(value) is float:
                if value - value == 0.0:
                    if feed is not None and role & FEED:
                        feed[key] = value
                elif found is None and role & WATCH:
                    found = Finding(key, value, step, step)
                continue
            kind = _KINDS.get(type(value))
            if kind is None:
                kind = value_kind(value)
            if kind == TENSOR:
                if check:
                    if first is None:
                        first = (key, role, value)
                    elif more is None:
                        more = [first, (key, role, value)]
                    else:
                        more.append((key, role, value))
                elif role & WATCH:
                    self._accumulate(key, value, step)
                continue
            hit = self._host_value(key, value, kind, role, step, feed=feed)
            if hit is not None and found is None:
                found = hit
        if not check:
            return found
        if first is not None and more is None and not self._dirty and not self._late:
            # The common case (a loss, checked every step): one .item(), nothing stacked.
            key, role, tensor = first
            try:
                number = tensor.item()
                finite = math.isfinite(number)
            except (RuntimeError, ValueError, TypeError):  # more than one element, or complex: the general read
                pass
            else:
                self.reads += 1
                if finite:
                    if feed is not None and role & FEED:
                        feed[key] = float(number)
                    return found
                if found is None and role & WATCH:
                    found = Finding(key, float(number), step, step)
                return found
        if first is not None or self._dirty:
            hit = self._read(more or ([first] if first is not None else []), step, feed)
            if hit is not None and found is None:
                found = hit
        return found

    def check(
        self, values: Mapping[str, Any], step: int | None, feed: dict[str, float] | None = None
    ) -> Finding | None:
        """Check every watched value now (epoch-level metrics: tensors are read at once)."""
        found: Finding | None = None
        to_read: list[tuple[str, int, Any]] = []
        for key, value in values.items():
            role = self.role(key)
            if not role:
                continue
            kind = value_kind(value)
            if kind == TENSOR:
                to_read.append((key, role, value))
                continue
            hit = self._host_value(key, value, kind, role, step, feed=feed)
            if hit is not None and found is None:
                found = hit
        if to_read:
            hit = self._read(to_read, step, feed, include_dirty=False)
            if hit is not None and found is None:
                found = hit
        return found

    def flush(self, step: int | None) -> Finding | None:
        """Read what was accumulated since the last check step (at the end of a stage or run)."""
        if not self._dirty:
            return None
        return self._read([], step, None)

    # -- internals ---------------------------------------------------------------------------------------------
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
                    return Finding(key, None, step, step, "non-finite element(s)")
                return None
        elif kind == SKIP:
            return None
        else:
            self._warn_non_numeric(key, value)
            return None
        if math.isfinite(number):
            if feed is not None and role & FEED:
                feed[key] = number
            return None
        if role & WATCH:
            return Finding(key, number, step, step)
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

    def _accumulate(self, key: str, tensor: Any, step: int | None) -> None:
        entry = self._acc.get(key)
        try:
            if entry is None:
                raise LookupError
            entry[0].addcmul_(tensor.detach(), entry[1])
        except Exception:
            self._accumulate_slow(key, tensor, step)
            return
        if key not in self._dirty:
            self._dirty[key] = step

    def _accumulate_slow(self, key: str, tensor: Any, step: int | None) -> None:
        """First sight of a key, a new device, a non-scalar tensor or an odd dtype."""
        import torch

        t = tensor.detach()
        if t.dtype == torch.bool or not (t.is_floating_point() or t.is_complex()):
            return  # integers and booleans are always finite
        if t.is_complex():
            t = torch.view_as_real(t)
        if t.numel() != 1:
            t = (t * 0).sum()  # NaN if any element is non-finite, else 0 (never overflows)
        t = t.reshape(())
        dtype = torch.float32
        entry = self._acc.get(key)
        if entry is not None and entry[0].device != t.device:
            # The value moved to another device: read what was accumulated so far, then start afresh.
            pending = self._read([], step, None)
            if pending is not None:
                self._late.append(pending)
            entry = None
        if entry is None:
            entry = (torch.zeros((), dtype=dtype, device=t.device), torch.zeros((), dtype=dtype, device=t.device))
            self._acc[key] = entry
        entry[0].addcmul_(t, entry[1])
        if key not in self._dirty:
            self._dirty[key] = step

    def _read(
        self,
        current: list[tuple[str, int, Any]],
        step: int | None,
        feed: dict[str, float] | None,
        include_dirty: bool = True,
    ) -> Finding | None:
        """One read per device: the dirty accumulators and the current tensors, stacked and copied at once (a
        lone value with one ``.item()``; the step path reads a lone tensor itself, see :meth:`step`)."""
        import torch

        groups: dict[Any, list[tuple[str, str, int, Any]]] = {}
        if include_dirty:
            for key in self._dirty:
                acc = self._acc[key][0]
                groups.setdefault(acc.device, []).append(("acc", key, WATCH, acc))
        for key, role, tensor in current:
            t = tensor.detach()
            if t.numel() != 1:
                if role & WATCH and (t.is_floating_point() or t.is_complex()):
                    flag = (t.abs() * 0).sum() if t.is_complex() else (t * 0).sum()
                    groups.setdefault(t.device, []).append(("flag", key, WATCH, flag))
                continue
            groups.setdefault(t.device, []).append(("value", key, role, t.reshape(())))
        found: Finding | None = None
        dirty = dict(self._dirty) if include_dirty else {}
        if include_dirty:
            self._dirty.clear()
        if self._late:
            found = self._late.pop(0)
        for device, items in groups.items():
            if len(items) == 1:  # the common case (a loss, every step): one .item(), no stack
                numbers = [float(items[0][3].item())]
            else:
                dtype = torch.float32 if getattr(device, "type", "cpu") == "mps" else torch.float64
                numbers = torch.stack([item[3].to(dtype) for item in items]).tolist()
            self.reads += 1
            for (what, key, role, tensor), number in zip(items, numbers, strict=True):
                if what == "acc":
                    tensor.zero_()
                if math.isfinite(number):
                    if what == "value" and feed is not None and role & FEED:
                        feed[key] = number
                    continue
                if not role & WATCH or found is not None:
                    continue
                if what == "value":
                    found = Finding(key, number, step, step)
                elif what == "flag":
                    found = Finding(key, None, step, step, "non-finite element(s)")
                else:
                    found = Finding(key, None, step, dirty.get(key), f"read every {self.every} steps")
        return found
