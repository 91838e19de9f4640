"""System metrics sampled beside training: host (psutil) and the GPUs this process uses (NVML, torch).

A :class:`SystemSampler` reads every ``interval`` seconds on a daemon thread and hands each reading (a dict of
``system/...`` names to floats) to a sink; the training thread pays nothing. Both sources are optional:
without ``psutil`` (the ``system`` extra) or without NVML (``nvidia-ml-py``, a driver and a GPU) that part is
skipped with one debug line. A reading that fails is logged once (logger ``runalert``), counted in
:attr:`SystemSampler.errors`, and never raised: the sampler goes on with what it can read.

The metric names, units and sources are :data:`HOST_METRICS` and :data:`GPU_METRICS` (``docs/system-metrics.md``).
Which GPUs are "this process's" (:func:`used_ordinals`) and which NVML device each one is (:func:`nvml_target`)
are pure functions of ``CUDA_VISIBLE_DEVICES``, ``LOCAL_RANK`` and torch's device, testable without a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runalert._log import log_once, logger

__all__ = [
    "GPU_METRICS",
    "HOST_METRICS",
    "PREFIX",
    "GpuReader",
    "HostReader",
    "SystemSampler",
    "gpu_metric",
    "nvml_target",
    "parse_visible_devices",
    "torch_device_ordinal",
    "used_ordinals",
]

PREFIX = "system/"

HOST_METRICS: dict[str, tuple[str, str]] = {
    "system/cpu_percent": ("%", "psutil.cpu_times(): busy share of every CPU of the host since the previous reading"),
    "system/memory_percent": ("%", "psutil.virtual_memory().percent: host memory in use"),
    "system/process_rss_bytes": ("bytes", "psutil.Process().memory_info().rss: this process's resident memory"),
    "system/disk_free_percent": ("%", "psutil.disk_usage(path): free / total, where checkpoints go"),
    "system/disk_free_bytes": ("bytes", "psutil.disk_usage(path).free, where checkpoints go"),
}
"""Host metric name -> (unit, source)."""

GPU_METRICS: dict[str, tuple[str, str]] = {
    "utilization_percent": ("%", "nvmlDeviceGetUtilizationRates().gpu: time a kernel ran, last sample period"),
    "memory_percent": ("%", "nvmlDeviceGetMemoryInfo(): used / total"),
    "memory_used_bytes": ("bytes", "nvmlDeviceGetMemoryInfo().used"),
    "temperature_c": ("°C", "nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)"),
    "power_watts": ("W", "nvmlDeviceGetPowerUsage() / 1000"),
    "torch_max_memory_allocated_bytes": (
        "bytes",
        "torch.cuda.max_memory_allocated(i): the caching allocator's peak (host-side counter, no sync)",
    ),
}
"""Per-GPU metric suffix -> (unit, source); the name is ``system/gpu.{i}.{suffix}`` (:func:`gpu_metric`)."""


def gpu_metric(index: int, suffix: str) -> str:
    """The metric name of GPU ``index`` (its CUDA ordinal in this process, torch's ``cuda:{index}``)."""
    return f"{PREFIX}gpu.{index}.{suffix}"


# ----------------------------------------------------------------------------------------------------------------
# which GPUs: pure functions


def parse_visible_devices(value: str | None) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as CUDA reads it: ``None`` when unset (every device, in NVML's order); else the
    entries, comma-separated and stripped, up to the first invalid one (CUDA ignores it and everything after it:
    ``"-1"`` or ``""`` hides every device). An entry is an index (``"1"``) or a UUID (``"GPU-…"``, ``"MIG-…"``)."""
    if value is None:
        return None
    entries: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if entry.isdigit() or (entry[:4].upper() in ("GPU-", "MIG-") and len(entry) > 4):
            entries.append(entry)
        else:
            break
    return entries


def torch_device_ordinal(device: Any) -> int | None:
    """The CUDA ordinal of ``device`` (an int, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``); ``None`` when it is
    no CUDA device (``"cpu"``, ``"mps"``, ...). ``"cuda"`` without an index is ordinal 0 here."""
    if isinstance(device, bool):
        raise ValueError(f"device must be an int, 'cuda:N' or a torch.device, not {device!r}")
    if isinstance(device, int):
        if device < 0:
            raise ValueError(f"device must be an ordinal >= 0, not {device!r}")
        return device
    kind = getattr(device, "type", None)
    if kind is not None:  # a torch.device
        return (getattr(device, "index", None) or 0) if kind == "cuda" else None
    if isinstance(device, str):
        name, _, index = device.strip().partition(":")
        if name != "cuda":
            return None
        if not index:
            return 0
        if index.isdigit():
            return int(index)
    raise ValueError(f"device must be an int, 'cuda', 'cuda:N' or a torch.device, not {device!r}")


def used_ordinals(
    device: Any = None,
    *,
    torch_imported: bool,
    torch_cuda_ready: bool,
    torch_current: int | None,
    local_rank: str | None,
    visible_count: int,
) -> list[int]:
    """The CUDA ordinals this process uses, in this order of evidence:

    1. ``device`` when given (an int, ``"cuda:N"``, a ``torch.device``; a CPU device: none);
    2. torch has initialised CUDA: ``torch_current``, torch's current device as the training thread saw it (the
       current device is per thread), else ``LOCAL_RANK``, else 0;
    3. torch is imported but has not touched CUDA: none (a CPU run on a GPU host must not report, or alert on,
       GPUs it does not use; asked again at each sample);
    4. no torch (Keras on JAX or TensorFlow): ``LOCAL_RANK`` when a launcher set it, else every visible device.

    Ordinals beyond ``visible_count`` are left out.
    """
    if device is not None:
        ordinal = torch_device_ordinal(device)
        chosen = [] if ordinal is None else [ordinal]
    elif torch_cuda_ready:
        chosen = [torch_current if torch_current is not None else _int_or(local_rank, 0)]
    elif torch_imported:
        chosen = []
    else:
        rank = _int_or(local_rank, -1)
        chosen = [rank] if rank >= 0 else list(range(visible_count))
    return [ordinal for ordinal in chosen if 0 <= ordinal < visible_count]


def _int_or(value: str | None, default: int) -> int:
    try:
        return int(str(value).strip()) if value is not None else default
    except ValueError:
        return default


def nvml_target(ordinal: int, visible: list[str] | None, uuid: str | None = None) -> int | str | None:
    """Which NVML device CUDA ordinal ``ordinal`` is: ``uuid`` when torch gave one (exact whatever
    ``CUDA_DEVICE_ORDER`` says), else the ``CUDA_VISIBLE_DEVICES`` entry (an NVML index, or a UUID), else the
    ordinal itself as an NVML index (no ``CUDA_VISIBLE_DEVICES``). ``None``: no such visible device.
    Without a UUID, CUDA's and NVML's orders agree only with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or one GPU."""
    if uuid:
        return uuid if uuid.upper().startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    if visible is None:
        return ordinal
    if ordinal >= len(visible):
        return None
    entry = visible[ordinal]
    return int(entry) if entry.isdigit() else entry


# ----------------------------------------------------------------------------------------------------------------
# readers


def _existing(path: str | os.PathLike[str]) -> str:
    """``path``, or its nearest existing parent (a checkpoint directory not created yet)."""
    current = Path(path).absolute()
    while not current.exists() and current.parent != current:
        current = current.parent
    return str(current)


class HostReader:
    """Host metrics through ``psutil`` (:data:`HOST_METRICS`). ``available`` is ``False`` without psutil."""

    def __init__(self) -> None:
        self.available = False
        self._psutil: Any = None
        self._process: Any = None
        try:
            import psutil
        except ImportError:
            logger.debug("runalert: psutil is not installed: no host system metrics (pip install runalert[system])")
            return
        self._psutil = psutil
        self._process = psutil.Process()
        self._cpu = psutil.cpu_times()  # the first interval starts now (psutil's own state is per thread)
        self.available = True

    def cpu_percent(self) -> float:
        """Busy share of every CPU since the previous call (or since construction), as ``psutil.cpu_percent``
        computes it, but with the previous reading kept here: psutil keeps it per thread, so its first call on
        the sampler's thread would answer a meaningless 0.0."""
        now = self._psutil.cpu_times()
        before, self._cpu = self._cpu, now
        total = _cpu_total(now) - _cpu_total(before)
        busy = total - (_cpu_idle(now) - _cpu_idle(before))
        if total <= 0:
            return 0.0
        return min(100.0, max(0.0, 100.0 * busy / total))

    def read(self, into: dict[str, float]) -> None:
        """Add CPU, host memory and this process's resident memory to ``into``. Raises what psutil raises."""
        psutil = self._psutil
        if psutil is None:
            return
        into["system/cpu_percent"] = self.cpu_percent()
        into["system/memory_percent"] = float(psutil.virtual_memory().percent)
        into["system/process_rss_bytes"] = float(self._process.memory_info().rss)

    def read_disk(self, path: str | os.PathLike[str] | None, into: dict[str, float]) -> None:
        """Add the free space of the file system holding ``path`` (the current directory when ``None``) to
        ``into``. Raises what psutil raises."""
        psutil = self._psutil
        if psutil is None:
            return
        usage = psutil.disk_usage(_existing(path if path is not None else os.getcwd()))
        into["system/disk_free_bytes"] = float(usage.free)
        into["system/disk_free_percent"] = 100.0 * usage.free / usage.total if usage.total else 0.0


def _cpu_total(times: Any) -> float:
    # Linux counts guest time in user time too (psutil leaves it out the same way).
    return float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _cpu_idle(times: Any) -> float:
    return float(times.idle) + getattr(times, "iowait", 0.0)


class GpuReader:
    """GPU metrics through NVML (``nvidia-ml-py``) and torch, for the given CUDA ordinals (:data:`GPU_METRICS`).

    :meth:`open` initialises NVML once; without the package, the library or a driver it returns ``False`` after
    one debug line. A metric a device does not support (``NVMLError_NotSupported``: a MIG slice's utilisation,
    a board without power readings) is left out for that device from then on; any other NVML error is counted
    and logged once, and the other metrics are still read.
    """

    def __init__(self) -> None:
        self.available = False
        self.errors = 0
        self._nvml: Any = None
        self._opened = False
        self._handles: dict[int | str, Any] = {}
        self._unsupported: set[tuple[int, str]] = set()

    def open(self) -> bool:
        """Initialise NVML (once). ``False``, after one debug line, when it cannot be used here."""
        if self._opened:
            return self.available
        self._opened = True
        try:
            import pynvml
        except ImportError:
            logger.debug(
                "runalert: nvidia-ml-py is not installed: no GPU system metrics (pip install runalert[system])"
            )
            return False
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, _NoPermission ...
            logger.debug("runalert: NVML is not usable here (%s: %s): no GPU system metrics", type(exc).__name__, exc)
            return False
        self._nvml = pynvml
        self.available = True
        return True

    def close(self) -> None:
        """Shut NVML down (when :meth:`open` initialised it)."""
        nvml, self._nvml = self._nvml, None
        self.available = False
        self._handles.clear()
        if nvml is not None:
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()

    def device_count(self) -> int:
        """NVML's device count (0 when NVML is not open)."""
        return int(self._nvml.nvmlDeviceGetCount()) if self._nvml is not None else 0

    def handle(self, target: int | str) -> Any:
        """The NVML handle of ``target`` (an NVML index or a UUID), cached."""
        handle = self._handles.get(target)
        if handle is None:
            nvml = self._nvml
            if isinstance(target, int):
                handle = nvml.nvmlDeviceGetHandleByIndex(target)
            else:
                handle = nvml.nvmlDeviceGetHandleByUUID(target)
            self._handles[target] = handle
        return handle

    def read_device(self, index: int, handle: Any, into: dict[str, float], nvml: Any = None) -> None:
        """Add GPU ``index``'s NVML metrics read through ``handle`` to ``into``; ``nvml`` is the ``pynvml``
        module (default: the opened one). Per-metric errors are handled as the class says."""
        nvml = nvml if nvml is not None else self._nvml
        readers: tuple[tuple[str, Callable[[], tuple[float, ...]]], ...] = (
            ("utilization_percent", lambda: (float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),)),
            ("memory", lambda: _memory(nvml.nvmlDeviceGetMemoryInfo(handle))),
            ("temperature_c", lambda: (float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),)),
            ("power_watts", lambda: (nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,)),
        )
        for name, read in readers:
            if (index, name) in self._unsupported:
                continue
            try:
                values = read()
            except nvml.NVMLError_NotSupported:
                self._unsupported.add((index, name))
                logger.debug("runalert: GPU %d does not report %s (NVML: not supported)", index, name)
                continue
            except nvml.NVMLError as exc:
                self.errors += 1
                log_once(
                    f"system-gpu-{name}-{type(exc).__name__}",
                    logging.WARNING,
                    "runalert: reading GPU %d's %s through NVML failed (%s: %s); the other metrics go on",
                    index,
                    name,
                    type(exc).__name__,
                    exc,
                )
                continue
            if name == "memory":
                into[gpu_metric(index, "memory_used_bytes")] = values[0]
                into[gpu_metric(index, "memory_percent")] = values[1]
            else:
                into[gpu_metric(index, name)] = values[0]


def _memory(info: Any) -> tuple[float, float]:
    used, total = float(info.used), float(info.total)
    return used, (100.0 * used / total if total else 0.0)


def _torch_cuda() -> Any:
    """``torch.cuda`` when torch is imported and has initialised CUDA (never imports torch, never initialises)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        cuda = torch.cuda
        return cuda if cuda.is_initialized() else None
    except Exception:  # pragma: no cover - a broken torch build
        return None


# ----------------------------------------------------------------------------------------------------------------
# the sampler


class SystemSampler:
    """Reads :data:`HOST_METRICS` and the GPU metrics every ``interval`` seconds on a daemon thread and calls
    ``sink(values)`` with each reading (on that thread). Never raises into the caller or the training loop.

    Args:
        interval: seconds between two readings (the first is taken when the thread starts).
        sink: receives each reading, a fresh ``dict`` of metric name to float; a sink that raises is counted and
            logged once.
        disk_path: the directory whose file system ``system/disk_*`` describe (where checkpoints go), or a
            callable returning it (asked at each reading: a framework may name it after the start); ``None``: the
            current directory.
        device: the CUDA device this process trains on (int, ``"cuda:N"``, ``torch.device``); ``None``: found as
            :func:`used_ordinals` says.
        host, gpu: read these sources at all.
    """

    def __init__(
        self,
        interval: float,
        sink: Callable[[dict[str, float]], None],
        *,
        disk_path: str | os.PathLike[str] | Callable[[], str | os.PathLike[str] | None] | None = None,
        device: Any = None,
        host: bool = True,
        gpu: bool = True,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
            raise ValueError(f"system_metrics_interval must be seconds > 0 or None, not {interval!r}")
        if device is not None:
            torch_device_ordinal(device)  # a bad device fails here, at construction
        self.interval = float(interval)
        self._sink = sink
        self._disk_path = disk_path
        self._device = device
        self._host = HostReader() if host else None
        self._gpu = GpuReader() if gpu else None
        self._visible = parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
        self._torch_current: int | None = None
        self._uuids: dict[int, str | None] = {}  # CUDA ordinal -> the UUID torch reports (asked once)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.errors = 0
        self.cpu_seconds = 0.0
        """CPU time the sampler's thread spent reading (``time.thread_time``), over :attr:`samples` readings."""

    def capture_device(self) -> None:
        """Note torch's current CUDA device as the calling (training) thread sees it; call it from that thread
        (:meth:`start` does). Does nothing when torch has not initialised CUDA."""
        cuda = _torch_cuda()
        if cuda is not None:
            try:
                self._torch_current = int(cuda.current_device())
            except Exception:  # pragma: no cover - a broken torch build
                self._torch_current = None

    def start(self) -> SystemSampler:
        """Start the thread (idempotent). Call it from the training thread (it notes torch's device)."""
        if self._thread is None and not self._stop.is_set():
            self.capture_device()
            self._thread = threading.Thread(target=self._run, name="runalert-system", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (a reading in progress finishes first, within ``timeout``) and close NVML. Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._gpu is not None and (thread is None or not thread.is_alive()):
            self._gpu.close()

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def sample(self) -> dict[str, float]:
        """One reading now, on the caller's thread: every metric that could be read (failures are counted and
        logged once)."""
        values: dict[str, float] = {}
        host = self._host
        if host is not None and host.available:
            try:
                host.read(values)
            except Exception as exc:
                self._failed("host", exc)
            try:
                host.read_disk(self._current_disk_path(), values)
            except Exception as exc:
                self._failed("disk", exc)
        gpu = self._gpu
        if gpu is not None and gpu.open():
            try:
                self._read_gpus(gpu, values)
            except Exception as exc:
                self._failed("gpu", exc)
        return values

    @property
    def disk_path(self) -> str:
        """The directory whose file system the disk metrics describe now (the nearest existing one)."""
        path = self._current_disk_path()
        return _existing(path if path is not None else os.getcwd())

    def _current_disk_path(self) -> str | os.PathLike[str] | None:
        path = self._disk_path
        return path() if callable(path) else path

    def _read_gpus(self, gpu: GpuReader, values: dict[str, float]) -> None:
        cuda = _torch_cuda()
        visible_count = gpu.device_count() if self._visible is None else len(self._visible)
        ordinals = used_ordinals(
            self._device,
            torch_imported="torch" in sys.modules,
            torch_cuda_ready=cuda is not None,
            torch_current=self._torch_current,
            local_rank=os.environ.get("LOCAL_RANK"),
            visible_count=visible_count,
        )
        for ordinal in ordinals:
            uuid = None
            if cuda is not None:
                if ordinal not in self._uuids:
                    try:
                        found = getattr(cuda.get_device_properties(ordinal), "uuid", "")
                        self._uuids[ordinal] = str(found or "") or None
                    except Exception:  # older torch: no uuid; the CUDA_VISIBLE_DEVICES mapping stands
                        self._uuids[ordinal] = None
                uuid = self._uuids[ordinal]
            target = nvml_target(ordinal, self._visible, uuid)
            if target is None:
                continue
            gpu.read_device(ordinal, gpu.handle(target), values)
            if cuda is not None:
                # The caching allocator's host-side counter: no device synchronisation.
                values[gpu_metric(ordinal, "torch_max_memory_allocated_bytes")] = float(
                    cuda.max_memory_allocated(ordinal)
                )

    def _failed(self, source: str, exc: BaseException) -> None:
        self.errors += 1
        log_once(
            f"system-{source}-{type(exc).__name__}",
            logging.WARNING,
            "runalert: reading %s system metrics failed (%s: %s); sampling goes on",
            source,
            type(exc).__name__,
            exc,
        )

    def _run(self) -> None:
        while True:
            started = time.thread_time()
            try:
                values = self.sample()
            except Exception as exc:  # pragma: no cover - sample() guards itself
                self._failed("sample", exc)
                values = {}
            self.cpu_seconds += time.thread_time() - started
            self.samples += 1
            if values:
                try:
                    self._sink(values)
                except Exception as exc:
                    self.errors += 1
                    log_once(
                        f"system-sink-{type(exc).__name__}",
                        logging.WARNING,
                        "runalert: handing system metrics on failed (%s: %s); sampling goes on",
                        type(exc).__name__,
                        exc,
                        exc_info=True,
                    )
            if self._stop.wait(self.interval):
                return


def describe_metrics() -> Mapping[str, tuple[str, str]]:
    """Every metric name (GPU ones with ``{i}``) with its unit and source, for documentation."""
    described = dict(HOST_METRICS)
    for suffix, meta in GPU_METRICS.items():
        described[f"{PREFIX}gpu.{{i}}.{suffix}"] = meta
    return described
