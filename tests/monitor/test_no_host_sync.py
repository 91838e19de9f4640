"""No host-device synchronisation on steps that are not checked.

A host sync happens when a tensor's value is read on the host: ``.item()``, ``float()``, ``.tolist()``,
``bool()``, a copy to the CPU. Below, every ATen operation the detector dispatches is recorded with torch's
own dispatch-mode hook (the mechanism torch's profiler and FakeTensor use; nothing is patched). Steps that are
not check steps may only launch asynchronous kernels on the device; check steps read once.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from runalert.nonfinite import NonFiniteDetector  # noqa: E402

# Operations that read a tensor's value on the host (on a GPU each waits for the device).
HOST_READS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "_to_copy", "copy_"}


class Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(func._overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_unchecked_steps_launch_only_asynchronous_kernels() -> None:
    detector = NonFiniteDetector("all", check_every_n_steps=4)
    losses = [torch.tensor(0.5 + i) for i in range(12)]
    per_step: list[list[str]] = []
    for step, loss in enumerate(losses, start=1):
        with Recorder() as recorder:
            detector.step({"loss": loss, "grad_norm": loss * 2}, step)
        per_step.append(recorder.ops)
    for step, ops in enumerate(per_step, start=1):
        if step % 4:
            assert not HOST_READS.intersection(ops), (step, ops)
            assert "addcmul_" in ops  # the device-side accumulation (the recorder sees the detector's ops)
        else:
            assert HOST_READS.intersection(ops), (step, ops)  # check steps do read
    # The accumulation is on the device: check steps are the only ones that read (3 of 12).
    assert detector.reads == 3


def test_nan_between_checks_is_found_at_the_next_check() -> None:
    detector = NonFiniteDetector("loss", check_every_n_steps=4)
    findings = [detector.step({"loss": torch.tensor(float("nan") if step == 6 else 1.0)}, step) for step in range(1, 9)]
    assert [f is not None for f in findings] == [False] * 7 + [True]
    assert findings[-1] is not None and findings[-1].key == "loss"
