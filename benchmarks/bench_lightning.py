"""Lightning: what an alerting callback costs a training loop, against what people use instead.

Same tiny MLP, same synthetic data, same steps, CPU, one thread; each variant runs in its own process, the
variants interleaved round by round (``harness.interleaved``), and only the training loop after a warm-up
epoch is timed. Variants:

- ``none``: no callback (the baseline);
- ``early_stopping``: ``EarlyStopping(monitor="loss", check_finite=True)``, Lightning's own NaN check (it
  looks at epoch ends; ``patience`` so large it never stops a healthy run);
- ``runalert``: ``runalert.lightning.AlertCallback`` as a user adds it (every step's loss checked, the held
  losses read together about every 0.05 s), 3 local rules and,
  when the server starts here, every value streamed to a local ``runalert`` server (started by the suite);
- ``wandb_offline``: W&B's ``WandbLogger`` in offline mode (``WANDB_MODE=offline``; left out if ``wandb`` is
  not installed), logging every 50 steps (Lightning's default);
- ``knockknock``: a knockknock-style decorator around the training function: one message at the start and one
  at the end (through ``runalert.alert`` to the console), nothing per step.

Besides each variant's wall time, the suite measures what runalert, W&B's logger and EarlyStopping cost from
inside the loop (``_models.CostMeter``: the training thread's time in their code, and the CPU they use beside
it, W&B's service process included): rows "<variant>: its code per step".

``python -m benchmarks.bench_lightning VARIANT [--steps N] [--server URL]`` runs one variant and prints
``{"seconds": ...}``; ``run(quick)`` is the suite for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

from benchmarks import _models
from benchmarks.harness import Row

SUITE = "lightning"
MODULE = "benchmarks.bench_lightning"
VARIANTS = ["none", "early_stopping", "runalert", "wandb_offline", "knockknock"]


def knockknock(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A knockknock-style decorator: a message when the wrapped function starts, and when it ends or raises."""
    import runalert

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        runalert.alert("Training started", f"{fn.__name__} started on {socket.gethostname()}", wait_duration=0)
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            runalert.alert("Training crashed", f"{fn.__name__}: {type(exc).__name__}: {exc}", "ERROR", 0)
            raise
        runalert.alert("Training finished", f"{fn.__name__} took {time.monotonic() - started:.1f} s", wait_duration=0)
        return value

    return wrapper


def _train(variant: str, steps: int, server: str | None, workdir: str) -> dict[str, Any]:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    x, y = _models.synthetic(_models.STEPS_PER_EPOCH * _models.BATCH)
    data = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=_models.BATCH)

    class MLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            f, h = _models.FEATURES, _models.HIDDEN
            self.net = torch.nn.Sequential(
                torch.nn.Linear(f, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 1)
            )

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            inputs, target = batch
            loss = torch.nn.functional.mse_loss(self.net(inputs), target)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class LoopTimer(pl.Callback):
        """From the first step after the warm-up epoch to the end of the training loop."""

        def __init__(self) -> None:
            self.marks: list[_models.Mark] = []

        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.current_epoch >= 1:
                self.marks.append(_models.mark())

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.marks.append(_models.mark())

    timer = LoopTimer()
    callbacks: list[Any] = [timer]
    logger: Any = False
    if variant == "early_stopping":
        stopping = pl.callbacks.EarlyStopping(monitor="loss", check_finite=True, patience=10**9)
        callbacks.append(_models.measured(stopping, base=pl.Callback))
    elif variant == "runalert":
        from runalert.lightning import AlertCallback

        callback = AlertCallback(rules=_models.rules(), server=server, project="bench", run_name="bench")
        callbacks.append(_models.measured(callback, base=pl.Callback))
    elif variant == "wandb_offline":
        from lightning.pytorch.loggers import WandbLogger
        from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

        # W&B's cost on the training thread: Lightning's logger hand-off, which exists only for loggers (with
        # none it returns at once): every log_every_n_steps, the logged tensors read, then the logger's
        # log_metrics and save.
        logger = _models.measured(
            WandbLogger(project="bench", offline=True, save_dir=workdir),
            names=(),
            also=((_LoggerConnector, "log_metrics"),),
        )

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=_models.epochs_for(steps),
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )

    def fit() -> None:
        trainer.fit(MLP(), data)

    (knockknock(fit) if variant == "knockknock" else fit)()
    if variant == "wandb_offline":
        import wandb

        wandb.finish()
    return _models.loop_result(timer.marks, trainer.global_step - _models.STEPS_PER_EPOCH)


def preload() -> None:
    """Imports done once in the zygote (benchmarks.harness.Zygote), before the variants' processes fork."""
    _models.pin_threads()
    import lightning.pytorch  # noqa: F401
    import torch.utils.data  # noqa: F401

    import runalert.lightning  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=2_000, help="timed steps, after a warm-up epoch")
    parser.add_argument("--server", default=None, help="a runalert server for the runalert variant's streaming")
    args = parser.parse_args(argv)
    _models.pin_threads()
    with tempfile.TemporaryDirectory() as workdir:
        os.environ.setdefault("RUNALERT_HOME", os.path.join(workdir, "runalert"))
        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=workdir)
        result = _train(args.variant, args.steps, args.server, workdir)
    _models.emit(result)


def run(quick: bool) -> list[Row]:
    variants = list(VARIANTS)
    notes = {
        "early_stopping": "checks at epoch ends (every 100 steps)",
        "wandb_offline": "WandbLogger(offline=True), log_every_n_steps=50",
        "knockknock": "start/end messages only",
    }
    if importlib.util.find_spec("wandb") is None:
        variants.remove("wandb_offline")
        notes["none"] = "wandb not installed: no W&B row"
    rows: list[Row] = _models.compare(
        SUITE,
        MODULE,
        variants,
        quick=quick,
        sizes=((300, 2), (10_000, 5)),
        target="≤ 1.01 and < wandb_offline",
        checks="every step's loss checked (reads paced by time), 3 rules",
        notes=notes,
        measured=("runalert", "wandb_offline", "early_stopping"),
    )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
