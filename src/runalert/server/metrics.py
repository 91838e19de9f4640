"""The server's counters (prometheus-client) and the text of ``/metrics``.

``ServerMetrics.count(name, n)`` is what the rest of the server calls (ingest, engine, dispatcher, heartbeats).

With ``PROMETHEUS_MULTIPROC_DIR`` set, the counters use prometheus-client's multiprocess mode: each process
writes its counts to a memory-mapped file of its own in that folder, and a scrape of any process sums every
file there, so ``/metrics`` answers with the counts of all the server processes on the host (a process that
died still counts: its file stays). ``runalert serve`` sets it (see :func:`multiprocess_directory`). Without it
(an app built in-process, as the tests do) the counters are the app's own.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["COUNTERS", "ENV", "ServerMetrics", "multiprocess_directory"]

ENV = "PROMETHEUS_MULTIPROC_DIR"

COUNTERS: dict[str, str] = {
    "metric_points_total": "Metric points accepted.",
    "alerts_client_total": "Alerts forwarded by clients.",
    "automation_firings_total": "Automation firings.",
    "deliveries_delivered_total": "Delivery attempts that succeeded.",
    "deliveries_retry_total": "Delivery attempts that failed and will be retried.",
    "deliveries_dead_total": "Deliveries dead-lettered.",
    "heartbeat_timeouts_total": "Runs failed for silence.",
}
"""The counters every server exposes (``runalert_<name>``), with their help text; others are made when counted."""

PREFIX = "runalert_"

# In the multiprocess mode a process has one set of counters (their values live in the folder's file of this
# process, one entry per name): every ServerMetrics of the process shares them.
_process_counters: dict[str, Any] = {}
_process_lock = threading.Lock()


@contextmanager
def multiprocess_directory() -> Iterator[str]:
    """The folder the server processes share their counters in: ``PROMETHEUS_MULTIPROC_DIR`` when the
    environment sets it (then it is the operator's: made if missing, never emptied), else a new private folder,
    set in this process's environment (its children inherit it) and removed when the block ends."""
    given = os.environ.get(ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        yield given
        return
    _remove_stale_directories()
    made = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-")  # 0700
    os.environ[ENV] = made
    try:
        yield made
    finally:
        if os.environ.get(ENV) == made:
            del os.environ[ENV]
        shutil.rmtree(made, ignore_errors=True)


_DIR_PREFIX = "runalert-metrics-"


def _remove_stale_directories() -> None:
    """Remove the private folders of server processes that are gone (a server stopped by a signal, which
    uvicorn re-raises after its shutdown, or by SIGKILL, leaves its folder behind)."""
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), _DIR_PREFIX + "*")):
        pid = os.path.basename(folder)[len(_DIR_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            if os.stat(folder).st_uid == os.getuid():
                shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class _WithoutCreated:
    """A registry's metrics without the ``_created`` samples (a counter's start time: noise on a dashboard)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Any]:
        for family in self.registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class ServerMetrics:
    """Named counters, and the Prometheus text of them plus any other collectors (the database's gauges)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        self.directory = os.environ.get(ENV) or None
        self._lock = _process_lock if self.directory else threading.Lock()
        if self.directory:
            from prometheus_client import values

            os.makedirs(self.directory, exist_ok=True)
            if values.ValueClass is values.MutexValue:  # prometheus_client was imported before ENV was set
                values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
            self._registry = None
            self._counters = _process_counters
        else:
            self._registry = CollectorRegistry(auto_describe=False)
            self._counters = {}
        with self._lock:
            for name in COUNTERS:
                self._counter(name)

    def _counter(self, name: str) -> Any:
        """The counter called ``runalert_<name>`` (made on first use; call with the lock held)."""
        counter = self._counters.get(name)
        if counter is None:
            from prometheus_client import Counter

            help_text = COUNTERS.get(name, name.replace("_", " "))
            counter = Counter(PREFIX + name, help_text, registry=self._registry)
            self._counters[name] = counter
        return counter

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``runalert_<name>``."""
        counter = self._counters.get(name)
        if counter is None:
            with self._lock:
                counter = self._counter(name)
        counter.inc(n)

    def exposition(self, *collectors: Any) -> bytes:
        """The Prometheus text (format 0.0.4) of the counters (summed over the folder's processes in the
        multiprocess mode) and of ``collectors``."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        if self.directory:
            MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        else:
            registry.register(_WithoutCreated(self._registry))
        for collector in collectors:
            registry.register(collector)
        return generate_latest(registry)
