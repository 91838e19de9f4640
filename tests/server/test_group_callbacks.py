"""The callbacks put their run in a group: ``group=`` (the callbacks' option surface), else the environment. Real
Lightning training of a tiny model on the CPU, against a real server process."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import wait_for

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

P = "/api/v1/projects"
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(callback: Any) -> None:
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)), batch_size=8)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[callback],
    )
    trainer.fit(Tiny(), data)


@sqlite_only
@pytest.mark.parametrize(
    ("option", "env", "group"),
    [
        ("sweep-lit", {"SLURM_ARRAY_JOB_ID": "77"}, "sweep-lit"),  # the option wins over the environment
        (None, {"SLURM_ARRAY_JOB_ID": "77"}, "slurm-array/77"),
        (None, {}, None),
    ],
)
def test_a_lightning_run_joins_its_group(
    server_process: Any, monkeypatch: pytest.MonkeyPatch, option: str | None, env: dict[str, str], group: str | None
) -> None:
    from runalert.lightning import AlertCallback

    for name in ("RUNALERT_GROUP", "WANDB_SWEEP_ID", "SLURM_ARRAY_JOB_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    server = server_process()
    options = {"group": option} if option else {}
    callback = AlertCallback(server=server.url, project="p", run_name="lit", **options)
    _fit(callback)
    run_id = callback.monitor.server_run.run_id
    run = server.api("GET", f"{P}/p/runs/{run_id}").json()
    assert run["group"] == group
    assert wait_for(lambda: server.api("GET", f"{P}/p/runs/{run_id}").json()["state"] == "FINISHED", timeout=60)


def test_a_bad_group_names_the_field() -> None:
    from runalert.lightning import AlertCallback

    with pytest.raises(ValueError, match="group must be at most 128 characters"):
        AlertCallback(group="x" * 200, server=False)
