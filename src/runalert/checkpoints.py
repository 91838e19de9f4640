"""Checkpoints as artifacts: each checkpoint a framework saves becomes a version of the run's checkpoint collection
on the server (``model-<run id>``, W&B's name for a run's logged model), which fires ``OnCreateArtifact``, then
``OnAddArtifactAlias`` with ``latest`` (every save) and ``best`` (when the checkpoint callback says that it is
the best so far, by its monitor and mode). The file stays where the framework wrote it: the version carries its
path, size, the step and the monitored value.

Detection, one function per framework, called from the adapter's hooks:

- Lightning: :func:`lightning_saves` compares the trainer's ``ModelCheckpoint`` callbacks' files (``best_k_models``
  and ``last_model_path``) with those already reported; ``best`` is ``best_model_path``. Called at each epoch's
  start and at the end (the saves of the epoch before, the last ones).
- transformers: :func:`transformers_save` in ``on_save`` (called once the checkpoint is written): the folder
  ``<output_dir>/checkpoint-<step>``; ``best`` is ``state.best_model_checkpoint``.
- Keras: :func:`keras_saves` at each epoch's start and the end: ``ModelCheckpoint``'s file, when it changed;
  ``best`` when its ``best`` changed with the save.

Reporting (:class:`CheckpointReporter`) is done by a thread of its own, in order: a slow server never holds the
training loop. A failure is logged once (``logging.getLogger("runalert")``) and counted; training goes on.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import threading
from dataclasses import dataclass
from string import Formatter
from typing import Any

__all__ = [
    "CheckpointReporter",
    "CheckpointSave",
    "checkpoint_collection",
    "file_size",
    "keras_saves",
    "lightning_saves",
    "report_saves",
    "transformers_save",
]

log = logging.getLogger("runalert")

_STOP = object()


@dataclass(frozen=True)
class CheckpointSave:
    """One checkpoint written by the framework: where, at which step, what it scored, and whether it is the best."""

    path: str
    step: int | None = None
    metric: str | None = None
    value: float | None = None
    best: bool = False
    size: int | None = None  # read when the save is found (top-k may delete the file before it is reported)

    @property
    def aliases(self) -> tuple[str, ...]:
        """``latest``, and ``best`` when it is the best so far."""
        return ("latest", "best") if self.best else ("latest",)


def checkpoint_collection(run_id: str) -> str:
    """The run's checkpoint collection: ``model-<run id>`` (W&B's name for a run's logged model)."""
    return f"model-{run_id}"[:128]


def file_size(path: str) -> int | None:
    """The size of a file, or of every file under a folder (a transformers checkpoint); None if it is not there."""
    try:
        if os.path.isdir(path):
            total = 0
            for root, _dirs, files in os.walk(path):
                for name in files:
                    try:
                        total += os.path.getsize(os.path.join(root, name))
                    except OSError:
                        continue
            return total
        return os.path.getsize(path)
    except OSError:
        return None


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _stamp(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class _Seen:
    """The (path, modification time) of the files already reported: a file written again is a new save."""

    def __init__(self) -> None:
        self.files: dict[str, int] = {}

    def new(self, path: str) -> bool:
        stamp = _stamp(path)
        if not path or stamp is None or self.files.get(path) == stamp:
            return False
        self.files[path] = stamp
        return True


def lightning_saves(trainer: Any, seen: _Seen) -> list[CheckpointSave]:
    """The checkpoints the trainer's ``ModelCheckpoint`` callbacks wrote since the last call (oldest first)."""
    saves: list[tuple[int, CheckpointSave]] = []
    for callback in getattr(trainer, "checkpoint_callbacks", None) or ():
        best_k = dict(getattr(callback, "best_k_models", None) or {})
        best = str(getattr(callback, "best_model_path", "") or "")
        monitor = getattr(callback, "monitor", None)
        paths = [*best_k, str(getattr(callback, "last_model_path", "") or "")]
        for path in dict.fromkeys(p for p in paths if p):
            if not seen.new(path):
                continue
            value = best_k.get(path, getattr(callback, "current_score", None) if monitor else None)
            save = CheckpointSave(
                path=path,
                step=int(trainer.global_step),
                metric=monitor,
                value=_number(value),
                best=bool(monitor) and path == best,
                size=file_size(path),
            )
            saves.append((seen.files[path], save))
    return [save for _stamp, save in sorted(saves, key=lambda pair: pair[0])]


def transformers_save(args: Any, state: Any) -> CheckpointSave:
    """The checkpoint ``Trainer`` just wrote (``on_save``): ``<output_dir>/checkpoint-<global_step>``; the best when
    ``metric_for_best_model`` is set and this step is ``state.best_global_step`` (or ``best_model_checkpoint``)."""
    step = int(state.global_step)
    path = os.path.join(str(args.output_dir), f"checkpoint-{step}")
    metric = getattr(args, "metric_for_best_model", None)
    best_path = getattr(state, "best_model_checkpoint", None)
    best_step = getattr(state, "best_global_step", None)
    if best_step is not None:
        best = bool(metric) and int(best_step) == step
        if best and best_path and os.path.basename(str(best_path)) == f"checkpoint-{step}":
            path = str(best_path)  # a hyperparameter search writes under a run folder of its own
    else:
        best = bool(metric) and best_path is not None and os.path.abspath(best_path) == os.path.abspath(path)
    value = None
    if metric:
        key = metric if metric.startswith("eval_") else f"eval_{metric}"
        for entry in reversed(list(getattr(state, "log_history", None) or ())):
            if key in entry:
                value = _number(entry[key])
                break
    return CheckpointSave(path=path, step=step, metric=metric, value=value, best=best, size=file_size(path))


def keras_saves(callbacks: Any, seen: _Seen, step: int | None, last: dict[int, Any]) -> list[CheckpointSave]:
    """The files Keras ``ModelCheckpoint`` callbacks (re)wrote since the last call; ``last`` keeps each callback's
    ``best`` as it was, so that a save that changed it is the best."""
    saves: list[CheckpointSave] = []
    for callback in callbacks or ():
        if type(callback).__name__ != "ModelCheckpoint":
            continue
        path = str(getattr(callback, "filepath", "") or "")
        if "{" in path:  # a template ("model-{epoch:02d}.keras"): the files it made, oldest first
            folder = os.path.dirname(path) or "."
            pattern = _template_pattern(os.path.basename(path))
            try:
                names = [os.path.join(folder, n) for n in os.listdir(folder) if pattern.fullmatch(n)]
            except OSError:
                names = []
            candidates = sorted((p for p in names if os.path.isfile(p)), key=lambda p: _stamp(p) or 0)
        else:
            candidates = [path]
        current = _number(getattr(callback, "best", None))
        improved = current is not None and current != last.get(id(callback))
        for candidate in candidates:
            if seen.new(candidate):
                monitor = getattr(callback, "monitor", None)
                value = current if improved else None
                saves.append(CheckpointSave(candidate, step, monitor, value, improved, file_size(candidate)))
        last[id(callback)] = current
    return saves


def _template_pattern(template: str) -> re.Pattern[str]:
    """The file names a Keras file path template can give: its text as is, each ``{field}`` anything."""
    try:
        parts = [
            re.escape(text) + (".+" if field is not None else "") for text, field, _s, _c in Formatter().parse(template)
        ]
    except ValueError:
        return re.compile(re.escape(template))
    return re.compile("".join(parts))


class CheckpointReporter:
    """Sends checkpoint saves to the server as versions of the run's checkpoint collection, in order, from a
    thread of its own. ``server_run``: the monitor's ``ServerRun`` (its client, project and run id)."""

    def __init__(self, server_run: Any) -> None:
        self.server_run = server_run
        self.collection = checkpoint_collection(str(server_run.run_id))
        self.sent = 0
        self.failed = 0
        self.seen = _Seen()
        self.keras_best: dict[int, Any] = {}
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None

    def report(self, saves: list[CheckpointSave]) -> None:
        """Queue ``saves`` for the server (never blocks)."""
        if not saves:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="runalert-checkpoints", daemon=True)
            self._thread.start()
        for save in saves:
            self._queue.put(save)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` seconds until every queued save was sent (or failed); whether it was."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _run(self) -> None:
        from runalert.client.artifacts import create_artifact_version

        run = self.server_run
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                create_artifact_version(
                    run.client,
                    self.collection,
                    project=run.project,
                    run_id=str(run.run_id),
                    path=os.path.abspath(item.path),
                    size=item.size,
                    step=item.step,
                    metric=item.metric,
                    value=item.value,
                    aliases=item.aliases,
                )
                self.sent += 1
            except Exception as exc:
                self.failed += 1
                if self.failed == 1:
                    log.warning("runalert: a checkpoint could not be reported to the server (%s)", type(exc).__name__)


def report_saves(owner: Any, find: Any, *, flush: bool = False) -> None:
    """The adapters' one call: when ``owner``'s monitor has a server run, report what ``find(reporter)`` returns
    (a list of :class:`CheckpointSave`); ``flush``: wait (bounded) until they are sent (the end of training)."""
    server_run = getattr(owner.monitor, "server_run", None)
    if server_run is None:
        return
    reporter = getattr(owner, "_runalert_checkpoints", None)
    if reporter is None or reporter.server_run is not server_run:
        reporter = CheckpointReporter(server_run)
        owner._runalert_checkpoints = reporter
    reporter.report(find(reporter))
    if flush:
        reporter.flush()
