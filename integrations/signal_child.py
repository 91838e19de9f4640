"""A real training run that waits for a real signal inside a chosen training step (run as a child process).

    python integrations/signal_child.py lightning --wait-at-step 3 [--no-runalert] [--accumulate 1]

The run trains a tiny model on the CPU with the framework's own trainer. In optimizer step ``--wait-at-step``
(1-based: the framework's global step once it completes) the training step prints ``WAITING <step>`` and waits
(at most 60 s) for the parent to send SIGTERM or SIGINT. With SIGTERM, Lightning's own handler only sets
``trainer.received_sigterm``: the wait ends, the step completes and Lightning raises ``SIGTERMException``; in
transformers and Keras the signal's handler (runalert's chained one, or the default) acts at once. Each
completed step prints ``DONE <global step>``. Alerts go to ``RUNALERT_WEBHOOK_URL``. ``--no-runalert`` runs the
same loop without runalert's callback: the exit status to compare with.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
# A process started in the background by a shell without job control (`nohup make test &`, a script's `cmd &`)
# has SIGINT ignored, its children too, and Python then leaves it so: Ctrl-C would do nothing, with or without
# runalert, and the SIGINT tests would wait for nothing. This run is the foreground run a user interrupts.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_for_signal(stop: Any = None) -> None:
    say("WAITING")
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if stop is not None and stop():
            return
        time.sleep(0.005)
    say("NO SIGNAL")


def lightning(wait_at: int, with_runalert: bool, accumulate: int) -> None:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            if self.global_step + 1 == wait_at:
                wait_for_signal(lambda: self.trainer.received_sigterm)
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Progress(pl.Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            say(f"DONE {trainer.global_step}")

    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(256, 4, generator=g), torch.randn(256, 1, generator=g)), batch_size=8)
    callbacks: list[Any] = [Progress()]
    if with_runalert:
        from runalert.lightning import AlertCallback

        callbacks.append(AlertCallback(run_name="signal-child"))
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=wait_at + 20,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(Tiny(), data)
    say("FIT RETURNED")


def transformers(wait_at: int, with_runalert: bool, accumulate: int) -> None:
    import torch
    from torch.utils.data import Dataset
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    class Tokens(Dataset):  # type: ignore[type-arg]
        def __init__(self, n: int) -> None:
            g = torch.Generator().manual_seed(0)
            self.ids = torch.randint(1, 64, (n, 8), generator=g)

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"input_ids": self.ids[i], "labels": (self.ids[i, 0] >= 32).long()}

    class Progress(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            say(f"DONE {state.global_step}")

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=8,
        num_labels=2,
    )
    callbacks: list[Any] = [Progress()]
    if with_runalert:
        from runalert.transformers import AlertCallback

        callbacks.append(AlertCallback(run_name="signal-child"))
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=BertForSequenceClassification(config),
            args=TrainingArguments(
                output_dir=out,
                max_steps=wait_at + 20,
                per_device_train_batch_size=4,
                gradient_accumulation_steps=accumulate,
                save_strategy="no",
                report_to="none",
                use_cpu=True,
                disable_tqdm=True,
                logging_steps=1000,
            ),
            train_dataset=Tokens(512),
            callbacks=callbacks,
        )

        def pre_hook(module: Any, args: Any) -> None:
            if module.training and trainer.state.global_step + 1 == wait_at:
                wait_for_signal()

        trainer.model.register_forward_pre_hook(pre_hook)
        trainer.train()
    say("FIT RETURNED")


def keras_fit(wait_at: int, with_runalert: bool, accumulate: int) -> None:
    import keras
    import numpy as np

    class Waiter(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.done = 0

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if self.done + 1 == wait_at:
                wait_for_signal()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.done += 1
            say(f"DONE {self.done}")

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    callbacks: list[Any] = [Waiter()]
    if with_runalert:
        from runalert.keras import AlertCallback

        callbacks.append(AlertCallback(run_name="signal-child"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 4)).astype("float32")
    model.fit(x, x[:, :1], batch_size=8, epochs=1, callbacks=callbacks, verbose=0)
    say("FIT RETURNED")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=["lightning", "transformers", "keras"])
    parser.add_argument("--wait-at-step", type=int, default=3)
    parser.add_argument("--no-runalert", action="store_true")
    parser.add_argument("--accumulate", type=int, default=1)
    args = parser.parse_args()
    run = {"lightning": lightning, "transformers": transformers, "keras": keras_fit}[args.framework]
    run(args.wait_at_step, not args.no_runalert, args.accumulate)


if __name__ == "__main__":
    main()
