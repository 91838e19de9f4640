"""Train a tiny BERT classifier with the transformers Trainer and hear about it through runalert.

One line does it: ``Trainer(..., callbacks=[AlertCallback()])``. The model is built from a config (2 layers,
hidden size 32: nothing is downloaded) and trained on synthetic tokens on the CPU in seconds. With no channel
configured the alerts print on the console; set ``RUNALERT_SLACK_WEBHOOK_URL`` (or ``RUNALERT_WEBHOOK_URL`` ...)
to send them there::

    python examples/transformers_train.py                       # INFO "Fit finished" and "Test finished"
    python examples/transformers_train.py --nan-at-step 5       # ERROR "Non-finite loss" at step 5, although
                                                                # Trainer's logging_nan_inf_filter hides it
    python examples/transformers_train.py --nan-at-step 5 --stop-on-nan
    python examples/transformers_train.py --crash-at-step 5     # ERROR "Run crashed: RuntimeError"
    python examples/transformers_train.py --threshold 0.5       # a local rule fires: loss > 0.5

Steps are ``TrainerState.global_step`` (1-based, as in the Trainer's logs).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from runalert.transformers import AlertCallback


class SyntheticTokens(Dataset):  # type: ignore[type-arg]
    """Random token sequences; the label is whether token 0 is in the upper half of the vocabulary."""

    def __init__(self, n: int, seed: int, vocab: int = 64, length: int = 12) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab, (n, length), generator=generator)
        self.labels = (self.ids[:, 0] >= vocab // 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def tiny_bert() -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def add_faults(trainer: Trainer, nan_at_step: int | None, crash_at_step: int | None) -> None:
    """Forward hooks that make the loss NaN from a step on, or raise at a step (1-based, as global_step)."""

    def step_in_progress() -> int:
        return trainer.state.global_step + 1

    def pre_hook(module: torch.nn.Module, args: Any, kwargs: Any) -> None:
        if module.training and crash_at_step is not None and step_in_progress() == crash_at_step:
            raise RuntimeError(f"simulated failure at step {crash_at_step}")

    def hook(module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        if module.training and nan_at_step is not None and step_in_progress() >= nan_at_step:
            output.loss = output.loss * math.nan  # diverged: NaN from here on
        return output

    trainer.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    trainer.model.register_forward_hook(hook, with_kwargs=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="training steps (default 30)")
    parser.add_argument("--nan-at-step", type=int, default=None, help="make the loss NaN from this step on")
    parser.add_argument("--stop-on-nan", action="store_true", help="stop training on a non-finite loss")
    parser.add_argument("--crash-at-step", type=int, default=None, help="raise RuntimeError at this step")
    parser.add_argument("--threshold", type=float, default=None, help="a local rule: alert when loss > THRESHOLD")
    parser.add_argument("--run-name", default=None, help="the run's name in alerts")
    args = parser.parse_args(argv)

    rules = []
    if args.threshold is not None:
        from runalert.automations import RunEvent

        rules.append(RunEvent.metric("loss") > args.threshold)

    callback = AlertCallback(stop_on_nonfinite=args.stop_on_nan, rules=rules)
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            run_name=args.run_name,
            max_steps=args.steps,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=32,
            learning_rate=1e-3,
            logging_steps=10,
            eval_strategy="steps",
            eval_steps=10,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=tiny_bert(),
            args=training_args,
            train_dataset=SyntheticTokens(512, 0),
            eval_dataset=SyntheticTokens(64, 1),
            callbacks=[callback],
        )
        add_faults(trainer, args.nan_at_step, args.crash_at_step)
        trainer.train()
        trainer.predict(SyntheticTokens(64, 2))  # the test stage: INFO "Test finished" with test_* metrics


if __name__ == "__main__":
    main()
