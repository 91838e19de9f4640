"""transformers conformance runs: a real ``Trainer`` on the CPU training a tiny ``BertForSequenceClassification``
(or a tiny ``GPT2LMHeadModel``) built from a config: nothing is downloaded."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    EarlyStoppingCallback,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from integrations._conformance_scripts.spec import Outcome, Spec, wait_for_a_signal

__all__ = ["BATCH", "run"]

BATCH = 4


class _Tokens(Dataset):  # type: ignore[type-arg]
    def __init__(self, n: int, seed: int, *, causal: bool) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 64, (n, 8), generator=g)
        self.labels = self.ids if causal else (self.ids[:, 0] >= 32).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _model(spec: Spec) -> Any:
    torch.manual_seed(0)
    if spec.sequence_model:
        return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2))
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


class _Faults:
    """Forward hooks on the model: count the training micro-batches, raise or turn the loss NaN where asked."""

    def __init__(self, spec: Spec, model: Any) -> None:
        self.spec, self.micro = spec, -1
        model.register_forward_pre_hook(self.before)
        model.register_forward_hook(self.after)

    def before(self, module: Any, args: Any) -> None:
        if not module.training:
            return
        self.micro += 1
        if self.spec.crash_at == self.micro:
            raise RuntimeError(f"simulated failure at step {self.spec.step_of(self.micro)}")

    def after(self, module: Any, args: Any, output: Any) -> Any:
        spec = self.spec
        training_nan = spec.nan_loss_from is not None and self.micro >= spec.nan_loss_from
        if training_nan if module.training else spec.nan_val:
            output.loss = output.loss * math.nan
        return output


class _AuxLogging(Trainer):
    """A trainer that logs its own ``aux_loss``: added to each training log (as TRL's trainers add their
    metrics), or, with ``spec.log_in_step``, logged from ``compute_loss`` while the step is being computed."""

    spec: Spec
    micro = 0

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and not self.spec.log_in_step:  # a training log, after the step it belongs to
            bad = self.spec.step_of(self.spec.aux_at or 0) == self.state.global_step
            logs = {**logs, "aux_loss": self.spec.aux_value if bad else 0.25}
        super().log(logs, *args, **kwargs)

    def compute_loss(self, model: Any, *args: Any, **kwargs: Any) -> Any:
        result = super().compute_loss(model, *args, **kwargs)
        if self.spec.log_in_step and model.training:
            micro, self.micro = self.micro, self.micro + 1
            self.log({"aux_loss": self.spec.aux_value if micro == self.spec.aux_at else 0.25})
        return result


class _WaitAfterStep(TrainerCallback):
    """After optimizer step ``step`` (its ``on_step_end``, after the callbacks before this one), wait for a signal."""

    def __init__(self, step: int, ready: Path | None) -> None:
        self.step, self.ready = step, ready

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            wait_for_a_signal(self.ready)


def run(spec: Spec, callback: Any, ready: Path | None = None) -> Outcome:
    """Train the spec's model; ``callback`` (runalert's, or ``None``) first among the callbacks."""
    callbacks: list[Any] = [callback] if callback is not None else []
    if spec.early_stop:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=1, early_stopping_threshold=1e9))
    if spec.wait_after_step is not None:
        callbacks.append(_WaitAfterStep(spec.wait_after_step, ready))
    model = _model(spec)
    _Faults(spec, model)
    with tempfile.TemporaryDirectory(prefix="conformance-hf-") as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=spec.epochs,
            max_steps=spec.max_steps or -1,
            per_device_train_batch_size=BATCH,
            per_device_eval_batch_size=8,
            gradient_accumulation_steps=spec.accumulate,
            eval_strategy="epoch" if spec.validate else "no",
            metric_for_best_model="eval_loss" if spec.early_stop else None,
            logging_steps=1 if spec.aux_at is not None else 500,
            learning_rate=1e-3,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
        )
        trainer_class = _AuxLogging if spec.aux_at is not None else Trainer
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=_Tokens(spec.batches * BATCH, 0, causal=spec.sequence_model),
            eval_dataset=_Tokens(16, 1, causal=spec.sequence_model) if spec.validate else None,
            callbacks=callbacks,
        )
        if isinstance(trainer, _AuxLogging):
            trainer.spec = spec
        trainer.train()
    return Outcome(global_step=int(trainer.state.global_step), epochs=math.ceil(trainer.state.epoch or 0))
