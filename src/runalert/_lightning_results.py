"""The values a LightningModule logs with ``self.log``/``self.log_dict``, read where Lightning keeps them.

Lightning stores each logged key in a result collection (``trainer.fit_loop.epoch_loop._results`` while
training, the evaluation loop's ``_results`` after validation and testing): a dict of ``_ResultMetric`` objects,
one per ``"<hook>.<name>"``. A key logged with ``on_step=True`` (the default in ``training_step``) keeps the
batch's value in ``_forward_cache``: a new detached tensor at each ``self.log`` call, already reduced by
Lightning itself when ``sync_dist=True``. :class:`StepValues` takes references to those tensors at the batch's
end (no ``.item()``, no reduction, no collective: one attribute read per key on the training thread) and, off the
training thread, keeps only the ones logged since the batch before, so each value is handed over once, at the step
it was logged. The names are the ones Lightning's loggers get (``train_loss``, or ``train_loss_step`` when the key
is also logged ``on_epoch``).

Every access to Lightning's internals is guarded by the callers: a layout this module does not know gives no
values (the epoch-end ``callback_metrics`` still arrive), never an error in the training loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["CACHE", "StepValues", "epoch_keys", "evaluation_results", "training_results"]

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


class _Entry:
    """One ``on_step`` key: its name as loggers get it, its ``_ResultMetric``, and the last value handed over (off
    the training thread only)."""

    __slots__ = ("last", "metric", "name")

    def __init__(self, name: str, metric: Any) -> None:
        self.name = name
        self.metric = metric
        self.last: Any = None


CACHE = "_forward_cache"
"""The ``_ResultMetric`` attribute holding the batch's value, read as ``vars(metric)[CACHE]``: a dict lookup (the
attribute itself goes through ``torch.nn.Module``'s ``__getattr__`` machinery, several times dearer)."""


class StepValues:
    """The training batch's ``on_step`` values, captured on the training thread as references and named off it.

    Lightning rebinds ``_forward_cache`` to a new tensor at each ``self.log`` (``value.clone()``, reduced by
    Lightning itself for ``sync_dist``) and never changes one in place, so a reference taken at the batch's end is
    that batch's value whenever it is read. On the training thread, per batch (``runalert.lightning``): if
    ``len(results)`` is not :attr:`size` (a key logged for the first time, or a new epoch), :meth:`index`; then
    the values are one dict lookup per key in :attr:`dicts` (:meth:`capture`; with one key, the caller does the
    lookup itself). Off the training thread, in step order, :meth:`new` names the values logged since the batch
    before (a key not logged in a batch keeps its previous tensor: the identity check skips it), so each value is
    handed over once, at the step it was logged.
    """

    def __init__(self) -> None:
        self.results: Any = {}
        """The training result collection (an empty dict: none, or a layout this module does not know)."""
        self.size = 0
        """``len(results)`` when indexed (-1: index at the next batch)."""
        self.entries: tuple[_Entry, ...] = ()
        self.dicts: tuple[dict[str, Any], ...] = ()
        """The entries' ``_ResultMetric`` instance dicts, in the entries' order."""
        self.names: set[str] = set()
        """The names of the ``on_step`` keys seen so far (their epoch-end ``callback_metrics`` copies are not new
        values)."""

    def bind(self, results: Any) -> None:
        """At each epoch's start: the collection (looked up once), indexed again at the next batch (a checkpoint
        restored into it may have replaced its metric objects)."""
        self.results = results if results is not None else {}
        self.size = -1

    def index(self) -> None:
        """Rebuild the list of ``on_step`` keys (training thread; when the collection grew or was bound). Entries
        already known keep their last value; a key first seen now has this batch's value."""
        results = self.results
        known = {id(entry.metric): entry for entry in self.entries}
        entries: list[_Entry] = []
        for metric, meta in _metas(results):
            if not meta.on_step or str(meta.fx).split(".", 1)[0] in _LATE_HOOKS:
                continue
            if CACHE not in getattr(metric, "__dict__", ()):  # a layout we do not know: no values from it
                continue
            entry = known.get(id(metric))
            if entry is None:
                entry = _Entry(str(meta.forked_name(True)), metric)
            entries.append(entry)
            self.names.add(entry.name)
        self.entries = tuple(entries)
        self.dicts = tuple(vars(entry.metric) for entry in entries)
        self.size = len(results)

    def capture(self) -> list[Any] | None:
        """Every key's value now, in the entries' order (training thread); ``None`` without keys."""
        return [d[CACHE] for d in self.dicts] if self.dicts else None

    @staticmethod
    def new(entries: tuple[_Entry, ...], captured: Any) -> dict[str, Any] | None:
        """The values ``captured`` with ``entries`` (one key: the value itself; else :meth:`capture`'s list) that
        were logged since the batch before, by name, or ``None``. Off the training thread, in step order."""
        if not entries:
            return None
        caches = (captured,) if len(entries) == 1 else captured
        found: dict[str, Any] | None = None
        for entry, value in zip(entries, caches, strict=True):
            if value is not None and value is not entry.last:
                entry.last = value
                if found is None:
                    found = {}
                found[entry.name] = value
        return found
