"""Which ATen operations code dispatches, recorded with torch's own hook (``TorchDispatchMode``): the tests that
show a hook reads no tensor on the training thread use it. Imported only by tests that have torch."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class OpRecorder(TorchDispatchMode):
    """Records the name of each ATen operation dispatched while it is active (``with OpRecorder() as ops:``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(func._overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


__all__ = ["OpRecorder"]
