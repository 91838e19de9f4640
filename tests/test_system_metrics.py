"""The system metrics sampler: real psutil values from this machine, NVML's absence and its error types, the
pure choice of this process's GPUs, and the sampling thread (never raising, failures logged once)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import psutil
import pynvml
import pytest

from runalert.system_metrics import (
    GPU_METRICS,
    HOST_METRICS,
    GpuReader,
    SystemSampler,
    describe_metrics,
    gpu_metric,
    nvml_target,
    parse_visible_devices,
    torch_device_ordinal,
    used_ordinals,
)
from tests.support import wait_for


def _nvml_usable() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


HAS_NVML = _nvml_usable()


# ------------------------------------------------------------------------------------------------ host, for real
def test_host_metrics_are_this_machines(tmp_path: Path) -> None:
    sampler = SystemSampler(60, lambda values: None, disk_path=tmp_path, gpu=False)
    values = sampler.sample()
    assert set(values) == set(HOST_METRICS)
    assert all(isinstance(value, float) for value in values.values())
    assert 0.0 <= values["system/cpu_percent"] <= 100.0
    assert 0.0 < values["system/memory_percent"] <= 100.0
    rss = psutil.Process().memory_info().rss
    assert 0.5 * rss < values["system/process_rss_bytes"] < 2 * rss
    usage = shutil.disk_usage(tmp_path)  # an independent reading of the same file system
    assert abs(values["system/disk_free_bytes"] - usage.free) < max(1e9, 0.01 * usage.total)
    assert values["system/disk_free_percent"] == pytest.approx(100.0 * values["system/disk_free_bytes"] / usage.total)
    assert sampler.errors == 0


def test_disk_metrics_follow_the_checkpoint_directory_even_before_it_exists(tmp_path: Path) -> None:
    target = tmp_path / "not" / "made" / "yet"
    where: list[Path] = [target]
    sampler = SystemSampler(60, lambda values: None, disk_path=lambda: where[0], gpu=False)
    values = sampler.sample()
    assert values["system/disk_free_bytes"] > 0
    assert sampler.errors == 0
    assert sampler.disk_path == str(tmp_path)  # the nearest existing directory
    assert not target.exists()  # only read, never created
    where[0] = tmp_path / "not"
    (tmp_path / "not").mkdir()
    assert sampler.disk_path == str(tmp_path / "not")  # asked again at each reading
    assert SystemSampler(60, lambda values: None, gpu=False).disk_path == os.getcwd()


def _burn_cpu(seconds: float) -> None:
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass


def test_cpu_percent_measures_the_interval_between_readings_even_the_threads_first() -> None:
    readings: list[dict[str, float]] = []
    sampler = SystemSampler(60, readings.append, gpu=False)
    _burn_cpu(0.2)  # this process was busy since the sampler was made: its thread's first reading sees it
    sampler.start()
    try:
        assert wait_for(lambda: readings)
    finally:
        sampler.stop()
    assert 0.0 < readings[0]["system/cpu_percent"] <= 100.0
    _burn_cpu(0.2)
    assert 0.0 < sampler.sample()["system/cpu_percent"] <= 100.0


# ------------------------------------------------------------------------------------------------ NVML
@pytest.mark.skipif(HAS_NVML, reason="NVML works on this machine: the absent-NVML path is not reachable")
def test_absent_nvml_is_skipped_with_one_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runalert")
    sampler = SystemSampler(60, lambda values: None)
    values = sampler.sample()
    values = sampler.sample()
    assert not [name for name in values if name.startswith("system/gpu.")]
    assert set(values) == set(HOST_METRICS)
    assert sampler.errors == 0
    nvml_lines = [r for r in caplog.records if r.name == "runalert" and "NVML" in r.getMessage()]
    assert len(nvml_lines) == 1, [r.getMessage() for r in nvml_lines]
    assert nvml_lines[0].levelno == logging.DEBUG
    assert "NVMLError_" in nvml_lines[0].getMessage()  # NVML's own error type, named (LibraryNotFound here)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.skipif(HAS_NVML, reason="NVML works on this machine")
def test_nvml_calls_that_fail_are_counted_and_logged_once_per_metric(caplog: pytest.LogCaptureFixture) -> None:
    # Without a driver every real NVML call raises NVML's own NVMLError_Uninitialized: the per-metric error path.
    caplog.set_level(logging.DEBUG, logger="runalert")
    reader = GpuReader()
    assert reader.open() is False
    values: dict[str, float] = {}
    for _ in range(3):
        reader.read_device(0, None, values, nvml=pynvml)
    assert values == {}
    assert reader.errors == 12  # 4 readings (utilisation, memory, temperature, power) x 3
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 4
    assert all("NVMLError_Uninitialized" in line and "GPU 0" in line for line in warned)


class _PartialDevice:
    """NVML's module where the device lacks power readings (NVML answers NOT_SUPPORTED, as on MIG slices), its
    utilisation is lost (GPU_IS_LOST) and the rest is answered as NVML's structures answer it."""

    def __getattr__(self, name: str) -> Any:
        return getattr(pynvml, name)

    @staticmethod
    def nvmlDeviceGetPowerUsage(handle: object) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)  # pynvml turns this into NVMLError_NotSupported

    @staticmethod
    def nvmlDeviceGetUtilizationRates(handle: object) -> Any:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    @staticmethod
    def nvmlDeviceGetMemoryInfo(handle: object) -> Any:
        info = pynvml.c_nvmlMemory_t()
        info.total, info.used, info.free = 80 * 2**30, 60 * 2**30, 20 * 2**30
        return info

    @staticmethod
    def nvmlDeviceGetTemperature(handle: object, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return 61


def test_unsupported_metrics_are_left_out_and_other_nvml_errors_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runalert")
    reader = GpuReader()
    first: dict[str, float] = {}
    reader.read_device(1, object(), first, nvml=_PartialDevice())
    assert first == {
        "system/gpu.1.memory_used_bytes": float(60 * 2**30),
        "system/gpu.1.memory_percent": 75.0,
        "system/gpu.1.temperature_c": 61.0,
    }
    assert reader.errors == 1  # the lost GPU's utilisation; "not supported" is no error
    second: dict[str, float] = {}
    reader.read_device(1, object(), second, nvml=_PartialDevice())
    assert second == first
    assert reader.errors == 2
    unsupported = [r for r in caplog.records if "not supported" in r.getMessage()]
    assert len(unsupported) == 1 and unsupported[0].levelno == logging.DEBUG  # asked once, then left out
    lost = [r for r in caplog.records if "NVMLError_GpuIsLost" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(lost) == 1


# ------------------------------------------------------------------------------------------------ which GPUs
def test_visible_devices_as_cuda_reads_them() -> None:
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("") == []
    assert parse_visible_devices("-1") == []
    assert parse_visible_devices("2,0") == ["2", "0"]
    assert parse_visible_devices(" 3 , 1 ") == ["3", "1"]
    assert parse_visible_devices("1,-1,2") == ["1"]  # CUDA stops at the first invalid entry
    assert parse_visible_devices("GPU-8d2e1f,MIG-1a2b") == ["GPU-8d2e1f", "MIG-1a2b"]
    assert parse_visible_devices("0,banana,1") == ["0"]


def test_torch_device_ordinal() -> None:
    assert torch_device_ordinal(0) == 0
    assert torch_device_ordinal(3) == 3
    assert torch_device_ordinal("cuda") == 0
    assert torch_device_ordinal("cuda:2") == 2
    assert torch_device_ordinal("cpu") is None
    assert torch_device_ordinal("mps") is None
    with pytest.raises(ValueError, match="device must be"):
        torch_device_ordinal("cuda:x")
    with pytest.raises(ValueError, match="device must be"):
        torch_device_ordinal(-1)
    with pytest.raises(ValueError, match="device must be"):
        torch_device_ordinal(True)


def test_torch_devices_too() -> None:
    torch = pytest.importorskip("torch")
    assert torch_device_ordinal(torch.device("cuda", 1)) == 1
    assert torch_device_ordinal(torch.device("cuda")) == 0
    assert torch_device_ordinal(torch.device("cpu")) is None


def _used(device: Any = None, **given: Any) -> list[int]:
    facts: dict[str, Any] = {
        "torch_imported": True,
        "torch_cuda_ready": True,
        "torch_current": None,
        "local_rank": None,
        "visible_count": 8,
    }
    facts.update(given)
    return used_ordinals(device, **facts)


def test_the_gpus_this_process_uses() -> None:
    assert _used("cuda:3") == [3]
    assert _used("cpu") == []
    assert _used(9) == []  # not visible
    assert _used(torch_current=2, local_rank="5") == [2]  # torch's device, as the training thread saw it
    assert _used(local_rank="5") == [5]  # CUDA initialised after start: the launcher's local rank
    assert _used() == [0]
    assert _used(torch_cuda_ready=False, local_rank="1") == []  # torch on the CPU: no GPU to report or alert on
    assert _used(torch_imported=False, torch_cuda_ready=False, local_rank="1") == [1]  # JAX, TensorFlow
    assert _used(torch_imported=False, torch_cuda_ready=False, visible_count=2) == [0, 1]
    assert _used(torch_imported=False, torch_cuda_ready=False, visible_count=0) == []
    assert _used(torch_current=0, visible_count=0) == []  # CUDA_VISIBLE_DEVICES hides every device


def test_which_nvml_device_an_ordinal_is() -> None:
    assert nvml_target(1, None) == 1
    assert nvml_target(1, ["3", "5"]) == 5
    assert nvml_target(2, ["3", "5"]) is None
    assert nvml_target(0, ["GPU-8d2e1f"]) == "GPU-8d2e1f"
    assert nvml_target(0, ["3"], uuid="8d2e1f00-aaaa") == "GPU-8d2e1f00-aaaa"  # torch's UUID wins over the order
    assert nvml_target(0, None, uuid="MIG-77") == "MIG-77"


def test_metric_names() -> None:
    assert gpu_metric(0, "memory_percent") == "system/gpu.0.memory_percent"
    assert {f"system/gpu.{{i}}.{suffix}" for suffix in GPU_METRICS} | set(HOST_METRICS) == set(describe_metrics())
    assert {
        "utilization_percent",
        "memory_percent",
        "memory_used_bytes",
        "temperature_c",
        "power_watts",
        "torch_max_memory_allocated_bytes",
    } == set(GPU_METRICS)


# ------------------------------------------------------------------------------------------------ the thread
def test_the_sampler_thread_hands_readings_to_the_sink_until_stopped() -> None:
    readings: list[dict[str, float]] = []
    sampler = SystemSampler(0.02, readings.append, gpu=False)
    sampler.start()
    assert sampler.running
    assert wait_for(lambda: len(readings) >= 3)
    sampler.stop()
    assert not sampler.running
    after = len(readings)
    assert after == sampler.samples  # the join waited for the last reading: nothing more can come
    assert all(set(reading) == set(HOST_METRICS) for reading in readings)
    sampler.start()  # stopped for good
    assert not sampler.running


def test_a_failing_sink_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runalert")

    def sink(values: dict[str, float]) -> None:
        raise RuntimeError("sink broke")

    sampler = SystemSampler(0.01, sink, gpu=False).start()
    try:
        assert wait_for(lambda: sampler.errors >= 3)
    finally:
        sampler.stop()
    assert sampler.samples >= 3
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and "system metrics" in r.getMessage()]
    assert len(warned) == 1
    assert "sink broke" in warned[0].getMessage()


def test_a_failing_disk_reading_is_counted_and_logged_once_and_the_rest_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="runalert")
    # The checkpoint directory's lookup hands back something that is no path: the disk reading fails (TypeError),
    # the others go on.
    sampler = SystemSampler(60, lambda values: None, disk_path=lambda: 5, gpu=False)  # type: ignore[arg-type,return-value]
    for _ in range(3):
        values = sampler.sample()
        assert "system/disk_free_bytes" not in values
        assert "system/memory_percent" in values
    assert sampler.errors == 3
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1
    assert "disk" in warned[0].getMessage() and "TypeError" in warned[0].getMessage()


def test_bad_options_fail_at_construction_naming_the_option() -> None:
    for bad in (0, -1, True, "15"):
        with pytest.raises(ValueError, match="system_metrics_interval must be seconds > 0 or None"):
            SystemSampler(bad, lambda values: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="device must be"):
        SystemSampler(1, lambda values: None, device="cuda:one")


# ------------------------------------------------------------------------------------------------ on a GPU
@pytest.mark.skipif(not HAS_NVML, reason="needs an NVIDIA GPU (the device machine)")
def test_gpu_metrics_for_real_and_no_host_device_sync() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    torch.cuda.set_device(0)
    x = torch.randn(1024, 1024, device="cuda")
    sampler = SystemSampler(60, lambda values: None)
    sampler.capture_device()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises from here on
    try:
        for _ in range(3):
            x = x @ x / 1024
            values = sampler.sample()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for suffix in ("utilization_percent", "memory_percent", "memory_used_bytes", "torch_max_memory_allocated_bytes"):
        assert gpu_metric(0, suffix) in values, sorted(values)
    assert 0 < values["system/gpu.0.memory_percent"] <= 100
    assert values["system/gpu.0.torch_max_memory_allocated_bytes"] >= 4 * 1024 * 1024
    assert not [name for name in values if name.startswith("system/gpu.1.")]  # only this process's device
    assert sampler.errors == 0
    if os.environ.get("CUDA_VISIBLE_DEVICES") is None:
        assert values["system/gpu.0.memory_used_bytes"] > 0
