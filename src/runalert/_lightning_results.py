"""The values a LightningModule logs with ``self.log``/``self.log_dict``, read where Lightning keeps them.

Lightning stores each logged key in a result collection (``trainer.fit_loop.epoch_loop._results`` while
training, the evaluation loop's ``_results`` after validation and testing): a dict of ``_ResultMetric`` objects,
one per ``"<hook>.<name>"``. A key logged with ``on_step=True`` (the default in ``training_step``) keeps the
batch's value in ``_forward_cache``: a new detached tensor at each ``self.log`` call, already reduced by
Lightning itself when ``sync_dist=True``. :class:`StepValues` takes those tensors as they are (no ``.item()``,
no reduction, no collective: the monitor holds them like the loss) and only the ones logged since the last read,
so each value is handed over once, at the step it was logged. The names are the ones Lightning's loggers get
(``train_loss``, or ``train_loss_step`` when the key is also logged ``on_epoch``).

Every access to Lightning's internals is guarded by the callers: a layout this module does not know gives no
values (the epoch-end ``callback_metrics`` still arrive), never an error in the training loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["StepValues", "epoch_keys", "evaluation_results", "training_results"]

# Hooks that log after runalert's on_train_batch_end (another callback's, or the module's own hook, which
# Lightning calls after the callbacks'): their values would be seen a batch late, at the wrong step.
_LATE_HOOKS = frozenset({"on_train_batch_end", "on_train_epoch_start", "on_train_epoch_end"})


def training_results(trainer: Any) -> Any:
    """The training loop's result collection (a dict of ``_ResultMetric``), or ``None`` if not found."""
    try:
        results = trainer.fit_loop.epoch_loop._results
    except AttributeError:
        return None
    return results if isinstance(results, dict) else None


def evaluation_results(trainer: Any) -> Any:
    """The running evaluation loop's result collection (validation or test), or ``None``."""
    try:
        results = trainer._evaluation_loop._results
    except (AttributeError, RuntimeError):
        return None
    return results if isinstance(results, dict) else None


def _metas(results: Any) -> Iterator[tuple[Any, Any]]:
    for metric in list(results.values()):
        meta = getattr(metric, "meta", None)
        if meta is not None:
            yield metric, meta


def epoch_keys(results: Any) -> set[str] | None:
    """The names of the epoch-level values in ``results`` (``on_epoch=True``) as ``callback_metrics`` holds
    them (``val_loss``, ``train_loss_epoch``); ``None`` if ``results`` is not a result collection."""
    if results is None:
        return None
    keys: set[str] = set()
    try:
        for metric, meta in _metas(results):
            if meta.on_epoch and not getattr(metric, "has_reset", False):
                keys.add(str(meta.forked_name(False)))
    except Exception:
        return None
    return keys


class StepValues:
    """Reads the training batch's ``on_step`` values from the training result collection.

    :meth:`bind` at each epoch's start (the collection object, looked up once); :meth:`read` at each batch's
    end: a ``len()`` and, per logged key, one attribute read and an identity check. The list of keys is rebuilt
    only when a new key appears (the collection grows on a key's first ``self.log``).
    """

    def __init__(self) -> None:
        self.results: Any = None
        self._size = -1
        self._entries: list[list[Any]] = []  # [name, _ResultMetric, the last value handed over]
        self.names: set[str] = set()
        """The names handed over so far (their epoch-end ``callback_metrics`` copies are not new values)."""

    def bind(self, results: Any) -> None:
        if results is not self.results:
            self.results = results
            self._size = -1

    def read(self) -> dict[str, Any] | None:
        """The values logged since the last read, by name, or ``None`` (nothing new)."""
        results = self.results
        if results is None:
            return None
        if len(results) != self._size:
            self._index(results)
        found: dict[str, Any] | None = None
        for entry in self._entries:
            value = entry[1]._forward_cache
            if value is not None and value is not entry[2]:
                entry[2] = value
                if found is None:
                    found = {}
                found[entry[0]] = value
        return found

    def _index(self, results: Any) -> None:
        known = {id(entry[1]): entry for entry in self._entries}
        entries: list[list[Any]] = []
        for metric, meta in _metas(results):
            if not meta.on_step or str(meta.fx).split(".", 1)[0] in _LATE_HOOKS:
                continue
            entry = known.get(id(metric))
            if entry is None:
                # A key first seen now: its value is this batch's (the collection grew in this batch).
                entry = [str(meta.forked_name(True)), metric, None]
            entries.append(entry)
            self.names.add(entry[0])
        self._entries = entries
        self._size = len(results)
