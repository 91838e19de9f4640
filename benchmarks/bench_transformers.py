"""transformers: what an alerting callback costs ``Trainer.train``.

A tiny BERT built from a config (no download) on synthetic tokens, same steps, CPU, one thread; each variant in
its own process, interleaved round by round, only the training loop after a warm-up epoch timed. Variants:

- ``none``: no callback (the baseline);
- ``runalert``: ``runalert.transformers.AlertCallback`` (every step's model output loss checked through a
  forward hook, the held losses read together about every 0.05 s, 3 local rules on the logged ``loss``,
  streaming to a local server with ``--server``).

``report_to="none"``, ``disable_tqdm=True``, ``save_strategy="no"``, ``logging_steps=50``.

``python -m benchmarks.bench_transformers VARIANT [--steps N] [--server URL]`` runs one variant and prints
``{"seconds": ...}``; ``run(quick)`` is the suite for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings
from typing import Any

from benchmarks import _models
from benchmarks.harness import Row

SUITE = "transformers"
MODULE = "benchmarks.bench_transformers"
VARIANTS = ["none", "runalert"]
TOKEN_BATCH = 16


def tiny_trainer(
    workdir: str, steps: int, callbacks: list[Any], *, nan_at_step: int | None = None, logging_steps: int = 50
) -> Any:
    """A ``Trainer`` of a 2-layer BERT (hidden 32) on random tokens; the loss turns NaN at ``nan_at_step``."""
    import torch
    from torch.utils.data import Dataset
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    class Tokens(Dataset):  # type: ignore[type-arg]
        def __init__(self, n: int, vocab: int = 64, length: int = 12) -> None:
            generator = torch.Generator().manual_seed(0)
            self.ids = torch.randint(1, vocab, (n, length), generator=generator)
            self.labels = (self.ids[:, 0] >= vocab // 2).long()

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": self.ids[i], "labels": self.labels[i]}

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
    )
    args = TrainingArguments(
        output_dir=workdir,
        max_steps=steps,
        per_device_train_batch_size=TOKEN_BATCH,
        learning_rate=1e-3,
        logging_steps=logging_steps,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=args,
        train_dataset=Tokens(_models.STEPS_PER_EPOCH * TOKEN_BATCH),
        callbacks=callbacks,
    )
    if nan_at_step is not None:

        def diverge(module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
            if module.training and trainer.state.global_step + 1 >= nan_at_step:  # the step in progress
                output.loss = output.loss * math.nan
            return output

        trainer.model.register_forward_hook(diverge, with_kwargs=True)
    return trainer


def _train(variant: str, steps: int, server: str | None, workdir: str) -> dict[str, Any]:
    from transformers import TrainerCallback

    warnings.filterwarnings("ignore")

    class LoopTimer(TrainerCallback):
        """From the first step after the warm-up epoch to the end of the training loop."""

        def __init__(self) -> None:
            self.marks: list[_models.Mark] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= _models.STEPS_PER_EPOCH and state.global_step % _models.STEPS_PER_EPOCH == 0:
                self.marks.append(_models.mark())

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.marks.append(_models.mark())

    timer = LoopTimer()
    callbacks: list[Any] = [timer]
    if variant == "runalert":
        from runalert.transformers import AlertCallback, _LossTap

        callback = AlertCallback(rules=_models.rules(), server=server, project="bench", run_name="bench")
        # The loss tap, a forward hook on the model, runs on every forward pass: its time counts too.
        callbacks.append(_models.measured(callback, base=TrainerCallback, also=((_LossTap, "__call__"),)))
    trainer = tiny_trainer(workdir, _models.STEPS_PER_EPOCH + steps, callbacks)
    trainer.train()
    return _models.loop_result(timer.marks, trainer.state.global_step - _models.STEPS_PER_EPOCH)


def preload() -> None:
    """Imports done once in the zygote (benchmarks.harness.Zygote), before the variants' processes fork."""
    _models.pin_threads()
    import transformers  # noqa: F401

    import runalert.transformers  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=1_000, help="timed steps, after a warm-up epoch")
    parser.add_argument("--server", default=None, help="a runalert server for the runalert variant's streaming")
    args = parser.parse_args(argv)
    _models.pin_threads()
    with tempfile.TemporaryDirectory() as workdir:
        os.environ.setdefault("RUNALERT_HOME", os.path.join(workdir, "runalert"))
        result = _train(args.variant, args.steps, args.server, workdir)
    _models.emit(result)


def run(quick: bool) -> list[Row]:
    rows: list[Row] = _models.compare(
        SUITE,
        MODULE,
        VARIANTS,
        quick=quick,
        sizes=((100, 1), (2_000, 5)),  # quick: one round (a smoke run; a tiny BERT takes seconds to set up)
        target="≤ 1.01",
        checks="every step's model-output loss checked (reads paced by time), 3 rules",
        setting=f", tiny BERT (batch {TOKEN_BATCH})",
    )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
