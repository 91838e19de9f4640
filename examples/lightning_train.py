"""Train a tiny model with PyTorch Lightning and hear about it through runalert.

One line does it: ``Trainer(callbacks=[AlertCallback()])``. With no channel configured the alerts print on the
console; set ``RUNALERT_SLACK_WEBHOOK_URL`` (or ``RUNALERT_WEBHOOK_URL``, SMTP settings ...) to send them there.
Trains on synthetic data on the CPU in seconds::

    python examples/lightning_train.py                          # INFO "Fit finished" and "Test finished"
    python examples/lightning_train.py --nan-at-step 20         # ERROR "Non-finite loss" at step 20, once
    python examples/lightning_train.py --nan-at-step 20 --stop-on-nan   # ... and training stops there
    python examples/lightning_train.py --crash-at-step 10       # ERROR "Run crashed: RuntimeError"
    python examples/lightning_train.py --threshold 0.5          # a local rule fires: loss > 0.5
    python examples/lightning_train.py --devices 2 --crash-at-step 5 --crash-rank 1   # DDP on CPU (gloo)

Steps are optimizer steps, 1-based: step N is Lightning's ``global_step`` once that step completes
(``global_step + 1`` inside ``training_step``); epochs are 1-based. See docs/semantics.md.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch.utils.data import DataLoader, TensorDataset

try:
    import lightning.pytorch as pl
except ImportError:  # the standalone package works too
    import pytorch_lightning as pl  # type: ignore[no-redef]

from runalert.lightning import AlertCallback


class TinyRegressor(pl.LightningModule):
    """A two-layer MLP on synthetic data, with switches that make it diverge or crash on purpose."""

    def __init__(self, nan_at_step: int | None = None, crash_at_step: int | None = None, crash_rank: int | None = None):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.nan_at_step = nan_at_step
        self.crash_at_step = crash_at_step
        self.crash_rank = crash_rank

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        step = self.global_step + 1  # the optimizer step this batch computes (1-based)
        crash_here = self.crash_rank is None or self.global_rank == self.crash_rank
        if self.crash_at_step is not None and step == self.crash_at_step and crash_here:
            raise RuntimeError(f"simulated failure at step {step} on rank {self.global_rank}")
        if self.nan_at_step is not None and step >= self.nan_at_step:
            loss = loss * math.nan  # diverged: NaN from here on
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y), sync_dist=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def synthetic(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    y = x[:, :1] * 0.5 - x[:, 1:2] + 0.1 * torch.randn(n, 1, generator=generator)
    return TensorDataset(x, y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    parser.add_argument("--nan-at-step", type=int, default=None, help="make the loss NaN from this step on")
    parser.add_argument("--stop-on-nan", action="store_true", help="stop training on a non-finite loss")
    parser.add_argument("--crash-at-step", type=int, default=None, help="raise RuntimeError at this step")
    parser.add_argument("--crash-rank", type=int, default=None, help="with --devices > 1: only this rank crashes")
    parser.add_argument("--threshold", type=float, default=None, help="a local rule: alert when loss > THRESHOLD")
    parser.add_argument("--devices", type=int, default=1, help="CPU processes; > 1 runs DDP with gloo")
    parser.add_argument("--run-name", default=None, help="the run's name in alerts")
    args = parser.parse_args(argv)

    rules = []
    if args.threshold is not None:
        from runalert.automations import RunEvent

        rules.append(RunEvent.metric("loss") > args.threshold)

    callback = AlertCallback(stop_on_nonfinite=args.stop_on_nan, rules=rules, run_name=args.run_name)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_steps=args.steps,
        val_check_interval=10,
        check_val_every_n_epoch=None,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = TinyRegressor(args.nan_at_step, args.crash_at_step, args.crash_rank)
    trainer.fit(model, DataLoader(synthetic(512, 0), batch_size=16), DataLoader(synthetic(64, 1), batch_size=32))
    trainer.test(model, DataLoader(synthetic(64, 2), batch_size=32), verbose=False)


if __name__ == "__main__":
    main()
