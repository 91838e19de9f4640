"""Lightning conformance runs: the ``BoringModel`` demo (its own data and optimizer) and the ``LightningLSTM``
demo (which logs ``train_loss`` with ``self.log``), trained by a real ``Trainer`` on the CPU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.demos import BoringModel, LightningLSTM, SimpleLSTM
from torch.utils.data import DataLoader, Dataset

from integrations._conformance_scripts.spec import Outcome, Spec, wait_for_a_signal

__all__ = ["run"]


class _Faults:
    """The spec's faults around the demo model's own ``training_step`` and ``validation_step``."""

    spec: Spec
    micro = 0

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        spec, micro = self.spec, self.micro
        self.micro += 1
        if spec.crash_at == micro:
            raise RuntimeError(f"simulated failure at step {spec.step_of(micro)}")
        out = super().training_step(batch, batch_idx)  # type: ignore[misc]
        loss = out["loss"] if isinstance(out, dict) else out
        if spec.nan_loss_from is not None and micro >= spec.nan_loss_from:
            loss = loss * math.nan
        if spec.aux_at is not None:
            aux = loss.detach() * 0.0 + (spec.aux_value if micro == spec.aux_at else 0.25)
            if spec.log_in_step:
                self.log_dict({"aux_loss": aux, "aux_weight": 0.5})  # type: ignore[attr-defined]
            else:
                self.log("aux_loss", aux)  # type: ignore[attr-defined]
        return {**out, "loss": loss} if isinstance(out, dict) else loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        out = super().validation_step(batch, batch_idx)  # type: ignore[misc]
        loss = out["x"] * (math.nan if self.spec.nan_val else 1.0)
        self.log("val_loss", loss)  # type: ignore[attr-defined]


class _Boring(_Faults, BoringModel):
    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.spec = spec


class _Tokens(Dataset):  # type: ignore[type-arg]
    def __init__(self, n: int) -> None:
        self.data = torch.randint(0, 64, (n, 9))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data[i, :-1], self.data[i, 1:]


class _LSTM(_Faults, LightningLSTM):
    """The demo's training step and ``self.log("train_loss", ...)``, on a small LSTM and random tokens (the demo's
    WikiText2 would be downloaded)."""

    def __init__(self, spec: Spec) -> None:
        super().__init__(vocab_size=64)
        self.model = SimpleLSTM(vocab_size=64, ninp=32, nhid=32, nlayers=2)
        self.spec = spec

    def prepare_data(self) -> None:
        pass

    def train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(_Tokens(self.spec.batches * 4), batch_size=4, drop_last=True)


class _WaitAfterStep(pl.Callback):
    """After optimizer step ``step`` completed (its last batch's end, after the callbacks before this one), wait
    for a signal. Lightning's own SIGTERM handler only notes the signal: the wait ends when it has."""

    def __init__(self, step: int, ready: Path | None) -> None:
        self.step, self.ready, self.done = step, ready, False

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.done and trainer.global_step == self.step:
            self.done = True
            wait_for_a_signal(self.ready, lambda: bool(trainer.received_sigterm))


def run(spec: Spec, callback: Any, ready: Path | None = None) -> Outcome:
    """Fit the spec's model; ``callback`` (runalert's, or ``None``) first among the callbacks."""
    torch.manual_seed(0)
    model = _LSTM(spec) if spec.sequence_model else _Boring(spec)
    callbacks: list[Any] = [callback] if callback is not None else []
    if spec.early_stop:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=1, min_delta=1e9))
    if spec.wait_after_step is not None:
        callbacks.append(_WaitAfterStep(spec.wait_after_step, ready))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=spec.epochs,
        max_steps=spec.max_steps or -1,
        limit_train_batches=spec.batches,
        limit_val_batches=2 if spec.validate else 0,
        accumulate_grad_batches=spec.accumulate,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model)
    return Outcome(global_step=int(trainer.global_step), epochs=int(trainer.fit_loop.epoch_progress.current.started))
