"""Reaction time: how soon someone hears about a NaN loss, and about a training process killed with SIGKILL.

- **NaN → alert**, per framework (Lightning, Keras, transformers), with the default ``check_every_n_steps=None``
  (held losses read together about every 0.05 s), ``=1`` and ``=10`` (``--quick``: the default only): the loss
  turns NaN at a known step of a real training loop; the ``AlertCallback`` sends to a webhook receiver
  on loopback (a thread of the training process, so arrival and step times share one clock). The figure is
  the number of steps that began after the NaN step before the alert arrived (0: it arrived before the next
  step began), with the milliseconds from the start of the NaN step in the note.
- **SIGKILL → notification**: a training process (a plain loop over ``RunMonitor`` with ``server=`` and
  ``heartbeat_interval=1`` s) is killed with SIGKILL; the server (``heartbeat_timeout=3`` s, silent runs looked
  for every 0.5 s) fails the run and notifies the project's webhook integration. The figure is the seconds from
  the kill to the webhook's arrival (the floor is the heartbeat timeout minus the time since the last beat).

``python -m benchmarks.bench_reaction FRAMEWORK --every N`` runs one NaN measurement and prints
``{"steps": ..., "ms": ...}``; ``python -m benchmarks.bench_reaction sigkill-target --server URL`` is the
process that gets killed; ``run(quick)`` is the suite for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from bisect import bisect_right
from typing import Any

from benchmarks import _models
from benchmarks.harness import ROOT, Row, run_variant, zygote_for

SUITE = "reaction"
MODULE = "benchmarks.bench_reaction"
FRAMEWORKS = ["lightning", "keras", "transformers"]
NAN_AT = 53  # 0-based index of the first step whose loss is NaN (mid-way between two checks every 10)
TOTAL_STEPS = 100  # one epoch
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 3.0
HEARTBEAT_CHECK = 0.5


def _callback_options(url: str, every: int | None) -> dict[str, Any]:
    from runalert.channels import Webhook

    return {
        "channels": [Webhook(url, secret="benchmark-secret")],
        "check_every_n_steps": every,
        "on_stage_end": (),
        "run_name": "reaction",
        "server": False,
    }


def _lightning(url: str, every: int | None, begins: list[float]) -> None:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from runalert.lightning import AlertCallback

    x, y = _models.synthetic(TOTAL_STEPS * _models.BATCH, nan_at_batch=NAN_AT)
    data = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=_models.BATCH)

    class MLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(_models.FEATURES, _models.HIDDEN), torch.nn.ReLU(), torch.nn.Linear(_models.HIDDEN, 1)
            )

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            inputs, target = batch
            return torch.nn.functional.mse_loss(self.net(inputs), target)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Begins(pl.Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            begins.append(time.monotonic())

    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[Begins(), AlertCallback(**_callback_options(url, every))],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(MLP(), data)


def _keras(url: str, every: int | None, begins: list[float]) -> None:
    import keras

    from runalert.keras import AlertCallback

    x, y = _models.synthetic(TOTAL_STEPS * _models.BATCH, nan_at_batch=NAN_AT)
    model = keras.Sequential(
        [keras.Input((_models.FEATURES,)), keras.layers.Dense(_models.HIDDEN, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")

    class Begins(keras.callbacks.Callback):
        async_safe = True  # a batch-begin hook only (always synchronous): keep Keras' asynchronous batch ends

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            begins.append(time.monotonic())

    callbacks = [Begins(), AlertCallback(**_callback_options(url, every))]
    model.fit(x, y, batch_size=_models.BATCH, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)


def _transformers(url: str, every: int | None, begins: list[float], workdir: str) -> None:
    from transformers import TrainerCallback

    from benchmarks.bench_transformers import tiny_trainer
    from runalert.transformers import AlertCallback

    class Begins(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            begins.append(time.monotonic())

    callbacks = [Begins(), AlertCallback(**_callback_options(url, every))]
    # Trainer's steps are 1-based: the step in progress at begins[NAN_AT] is global step NAN_AT + 1.
    tiny_trainer(workdir, TOTAL_STEPS, callbacks, nan_at_step=NAN_AT + 1).train()


def measure_nan(framework: str, every: int | None) -> dict[str, Any]:
    """Train with a NaN loss from step ``NAN_AT`` on; steps and ms until the alert arrived at the receiver."""
    warnings.filterwarnings("ignore")
    receiver = _models.Receiver()
    begins: list[float] = []
    with tempfile.TemporaryDirectory() as workdir:
        os.environ.setdefault("RUNALERT_HOME", os.path.join(workdir, "runalert"))
        if framework == "lightning":
            _lightning(receiver.url, every, begins)
        elif framework == "keras":
            _keras(receiver.url, every, begins)
        else:
            _transformers(receiver.url, every, begins, workdir)
    receiver.event.wait(10)
    found = receiver.first("non-finite")
    receiver.close()
    if found is None or len(begins) <= NAN_AT:
        return {"steps": float("nan"), "ms": float("nan"), "error": "no alert arrived"}
    arrived, _body = found
    began_after = bisect_right(begins, arrived) - 1 - NAN_AT  # steps begun after the NaN step, before arrival
    late = began_after >= len(begins) - 1 - NAN_AT  # it came after the last step (at the end-of-run flush)
    return {"steps": began_after, "ms": (arrived - begins[NAN_AT]) * 1000, "after_end": late}


def sigkill_target(server: str) -> None:
    """The process that gets killed: a plain loop over RunMonitor, streaming to ``server``, heartbeats every 1 s."""
    from runalert.channels import Console
    from runalert.monitor import RunMonitor

    monitor = RunMonitor(
        channels=[Console()],
        server=server,
        project="bench",
        heartbeat_interval=HEARTBEAT_INTERVAL,
        on_stage_end=(),
    )
    monitor.start("sigkill-target")
    step = 0
    while True:
        monitor.step(step, {"loss": 1.0 / (step + 1)})
        step += 1
        if step == 10:
            print("ready", flush=True)
        time.sleep(0.001)


def measure_sigkill(home: str, attempts: int) -> tuple[list[float], str]:
    """Seconds from SIGKILL to the server's webhook, per attempt; an empty list and why if it cannot run."""
    samples: list[float] = []
    settings = {"heartbeat_timeout": HEARTBEAT_TIMEOUT, "heartbeat_check_interval": HEARTBEAT_CHECK}
    with _models.server(home, **settings) as url:
        if url is None:
            return [], "the server does not start here (runalert[server] not installed?)"
        receiver = _models.Receiver()
        integration = {"kind": "webhook", "url": receiver.url}
        if _models.http("PUT", f"{url}/api/v1/projects/bench/integrations/hook", integration) is None:
            return [], "could not create the webhook integration on the server"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env["RUNALERT_HOME"] = os.path.join(home, "client")
        for _ in range(attempts):
            receiver.arrivals.clear()
            receiver.event.clear()
            proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, "sigkill-target", "--server", url],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    return samples, "the target process did not start"
                time.sleep(2 * HEARTBEAT_INTERVAL + 0.5)  # a few heartbeats have reached the server
                killed = time.monotonic()
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            deadline = killed + 30
            found = None
            while found is None and time.monotonic() < deadline:
                receiver.event.wait(0.1)
                found = receiver.first("heartbeat")
            if found is None:
                return samples, "no notification within 30 s"
            samples.append(found[0] - killed)
        receiver.close()
    return samples, ""


def run(quick: bool) -> list[Row]:
    rounds = 1 if quick else 3
    settings: tuple[int | None, ...] = (None,) if quick else (None, 1, 10)
    rows: list[Row] = []
    with zygote_for(MODULE) as zygote:
        measured = {
            (framework, every): [
                run_variant(MODULE, framework, ["--every", str(every or "time")], zygote=zygote) for _ in range(rounds)
            ]
            for framework in FRAMEWORKS
            for every in settings
        }
    for framework in FRAMEWORKS:
        for every in settings:
            results = measured[(framework, every)]
            steps = [float(r["steps"]) for r in results]
            ms = [float(r["ms"]) for r in results]
            late = any(r.get("after_end") for r in results)
            note = f"NaN at step index {NAN_AT}; {statistics.median(ms):.0f} ms from the NaN step's start"
            if late:
                note += "; arrived only at the end-of-run flush"
            if every is None:
                target = "reads ≈ 0.05 s apart"
                how = "reads paced by time (default)"
            else:
                target = "≤ 1 step" if every == 1 else "≤ 10 steps"
                how = f"check every {every}"
            rows.append(
                Row(
                    SUITE,
                    f"{framework}: NaN → webhook, {how}",
                    statistics.median(steps),
                    "steps",
                    len(steps),
                    target=target,
                    note=note,
                    spread={"min": min(steps), "max": max(steps)},
                )
            )
    with tempfile.TemporaryDirectory() as home:
        seconds, why = measure_sigkill(home, rounds)
    name = "SIGKILL → server webhook"
    setup = (
        f"heartbeat every {HEARTBEAT_INTERVAL:g} s, server timeout {HEARTBEAT_TIMEOUT:g} s, "
        f"checked every {HEARTBEAT_CHECK:g} s"
    )
    if seconds:
        rows.append(
            Row(
                SUITE,
                name,
                statistics.median(seconds),
                "s",
                len(seconds),
                target=f"≈ timeout ({HEARTBEAT_TIMEOUT:g} s) + check interval",
                note=setup + (f"; {why}" if why else ""),
                spread={"min": min(seconds), "max": max(seconds)},
            )
        )
    else:
        rows.append(Row(SUITE, name, float("nan"), "s", 0, note=f"not measured: {why}"))
    return rows


def preload() -> None:
    """Imports done once in the zygote (benchmarks.harness.Zygote), before each measured process forks."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    _models.pin_threads()
    import keras  # noqa: F401
    import lightning.pytorch  # noqa: F401
    import transformers  # noqa: F401

    import runalert.keras
    import runalert.lightning
    import runalert.transformers  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("what", choices=[*FRAMEWORKS, "sigkill-target"])
    parser.add_argument("--every", default="time", help="check_every_n_steps: N, or 'time' (None: the default)")
    parser.add_argument("--server", default=None, help="sigkill-target: the server's URL")
    args = parser.parse_args(argv)
    if args.what == "keras":
        os.environ.setdefault("KERAS_BACKEND", "torch")
    _models.pin_threads()
    if args.what == "sigkill-target":
        sigkill_target(args.server)
        return
    _models.emit(measure_nan(args.what, None if args.every == "time" else int(args.every)))


if __name__ == "__main__":
    main(sys.argv[1:])
