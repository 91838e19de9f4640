"""No host-device synchronisation on steps that are not checked.

A host sync happens when a tensor's value is read on the host: ``.item()``, ``float()``, ``.tolist()``,
``bool()``, a copy to the CPU. Below, every ATen operation the detector dispatches is recorded with torch's
own dispatch-mode hook (the mechanism torch's profiler and FakeTensor use; nothing is patched). Steps between
reads dispatch nothing at all (the tensors are held); a read step reads once per device.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from runalert.nonfinite import NonFiniteDetector  # noqa: E402
from tests.support.torch_ops import OpRecorder  # noqa: E402


def test_steps_between_reads_dispatch_nothing_and_a_read_step_reads_once() -> None:
    detector = NonFiniteDetector("all", check_every_n_steps=4)
    losses = [torch.tensor(0.5 + i) for i in range(12)]
    per_step: list[tuple[list[str], int]] = []
    for step, loss in enumerate(losses, start=1):
        values = {"loss": loss, "grad_norm": loss * 2}
        reads = detector.reads
        with OpRecorder() as recorder:
            detector.step(values, step)
        per_step.append((recorder.ops, detector.reads - reads))
    for step, (ops, reads) in enumerate(per_step, start=1):
        if step % 4:
            assert ops == [] and reads == 0, (step, ops)  # held: not a kernel, not a read
        else:
            # One read of the 8 values held (4 steps, 2 keys, one device): one stack, then one .tolist() (which
            # reads a CPU tensor's memory without dispatching; on a GPU it is the one device-to-host copy).
            assert ops == ["stack"] and reads == 1, (step, ops)
    assert detector.reads == 3


def test_reads_paced_by_time_hold_more_steps_as_steps_are_quicker() -> None:
    # check_every_n_steps=None: a read about every read_interval seconds. Steps far quicker than the interval:
    # the steps held between reads double at each read (1, 2, 4, 8 ...), up to what fits in the interval.
    quick = NonFiniteDetector("loss", None, read_interval=3600.0)
    read_at = []
    for step in range(1, 64):
        reads = quick.reads
        quick.step({"loss": torch.tensor(1.0)}, step)
        if quick.reads > reads:
            read_at.append(step)
    assert read_at == [1, 3, 7, 15, 31, 63]
    # Steps slower than the interval: every step is read.
    slow = NonFiniteDetector("loss", None, read_interval=0.0)
    for step in range(1, 11):
        slow.step({"loss": torch.tensor(1.0)}, step)
    assert slow.reads == 10


def test_nan_between_checks_is_found_at_the_next_check() -> None:
    detector = NonFiniteDetector("loss", check_every_n_steps=4)
    findings = [detector.step({"loss": torch.tensor(float("nan") if step == 6 else 1.0)}, step) for step in range(1, 9)]
    assert [f is not None for f in findings] == [False] * 7 + [True]
    assert findings[-1] is not None and findings[-1].key == "loss"


def test_held_tensors_are_bounded_a_read_comes_early_beyond(monkeypatch: pytest.MonkeyPatch) -> None:
    import runalert.nonfinite

    monkeypatch.setattr(runalert.nonfinite, "_MAX_HELD", 10)
    detector = NonFiniteDetector("all", check_every_n_steps=1000)
    for step in range(1, 21):
        detector.step({"a": torch.tensor(1.0), "b": torch.tensor(2.0), "c": torch.tensor(float(step))}, step)
        assert len(detector.held) < 10
    assert detector.reads == 5  # after steps 4, 8, 12, 16 and 20 (12 values each time)
