"""Checkpoints as artifacts, end to end: a real Lightning run with ModelCheckpoint on a real server process, whose
automations (OnCreateArtifact, OnAddArtifactAlias("best")) deliver webhooks to a loopback receiver."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from runalert.automations import ArtifactEvent, OnAddArtifactAlias, OnCreateArtifact, Project, SendWebhook
from tests.support import Receiver, wait_for

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

P = "/api/v1/projects"
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PAYLOAD = {
    "event": "${event_type}",
    "collection": "${artifact_collection_name}",
    "version": "${artifact_version}",
    "alias": "${alias}",
    "path": "${artifact_path}",
    "run": "${run_id}",
}
VAL_LOSS = [0.5, 0.3, 0.7, 0.2]  # by epoch: saves (top-1, min) at epochs 0, 1 and 3


class Scripted(pl.LightningModule):
    """A tiny model whose validation loss follows VAL_LOSS, epoch by epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", VAL_LOSS[self.current_epoch])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)), batch_size=8)


def _automations(server: Any, url: str) -> None:
    assert server.api("PUT", f"{P}/p/integrations/hook", json={"kind": "webhook", "url": url}).status_code == 201
    rules = {
        "new-version": OnCreateArtifact(scope=Project("p")),
        "new-best": OnAddArtifactAlias(scope=Project("p"), filter=ArtifactEvent.alias.eq("best")),
    }
    for name, event in rules.items():
        spec = (event >> SendWebhook(integration="hook", payload=PAYLOAD)).model_dump(mode="json")
        spec = {k: v for k, v in {**spec, "name": name}.items() if v is not None}
        assert server.api("PUT", f"{P}/p/automations/{name}", json=spec).status_code == 201


@sqlite_only
def test_lightning_checkpoints_fire_create_and_best_on_a_real_server(
    server_process: Any, httpserver: HTTPServer, tmp_path: Any
) -> None:
    from runalert.lightning import AlertCallback

    receiver = Receiver(httpserver)
    server = server_process()
    _automations(server, receiver.url)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=str(tmp_path / "ckpt"), monitor="val_loss", mode="min", save_top_k=1
    )
    callback = AlertCallback(server=server.url, project="p", run_name="lit-ckpt")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=len(VAL_LOSS),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[callback, checkpoint],
    )
    trainer.fit(Scripted(), _loader(), _loader())
    run_id = callback.monitor.server_run.run_id
    collection = f"model-{run_id}"
    # 3 saves: 3 versions (OnCreateArtifact each), each the best so far (OnAddArtifactAlias best each)
    artifact_bodies = lambda: [b for b in receiver.bodies if "event" in b]  # noqa: E731 (not the run's own alerts)
    assert wait_for(lambda: len(artifact_bodies()) >= 6, timeout=30)
    bodies = artifact_bodies()
    created = [b for b in bodies if b["event"] == "CREATE_ARTIFACT"]
    best = [b for b in bodies if b["event"] == "ADD_ARTIFACT_ALIAS"]
    assert [b["version"] for b in created] == ["v0", "v1", "v2"]
    assert [(b["version"], b["alias"]) for b in best] == [("v0", "best"), ("v1", "best"), ("v2", "best")]
    assert {b["collection"] for b in bodies} == {collection} and {b["run"] for b in bodies} == {run_id}
    assert [os.path.basename(b["path"]) for b in created] == [
        "epoch=0-step=2.ckpt",
        "epoch=1-step=4.ckpt",
        "epoch=3-step=8.ckpt",
    ]
    shown = server.api("GET", f"{P}/p/artifacts/{collection}").json()
    assert shown["aliases"] == {"latest": 2, "best": 2}  # one version holds an alias
    versions = shown["versions"]
    assert [(v["step"], v["metric"], v["value"]) for v in versions] == [
        (2, "val_loss", pytest.approx(0.5)),  # float32 in Lightning
        (4, "val_loss", pytest.approx(0.3)),
        (8, "val_loss", pytest.approx(0.2)),
    ]
    assert versions[-1]["path"] == os.path.abspath(checkpoint.best_model_path)
    assert versions[-1]["size"] == os.path.getsize(checkpoint.best_model_path)
    assert [v["aliases"] for v in versions] == [[], [], ["best", "latest"]]
    # nothing more: every alert of the server delivered, and still the six
    alerts = lambda: server.api("GET", f"{P}/p/alerts").json()  # noqa: E731
    assert wait_for(lambda: all(d["status"] == "delivered" for a in alerts() for d in a["deliveries"]), timeout=30)
    assert len(artifact_bodies()) == 6, receiver.bodies


@sqlite_only
def test_transformers_checkpoints_fire_create_and_best_on_a_real_server(
    server_process: Any, httpserver: HTTPServer, tmp_path: Any
) -> None:
    transformers = pytest.importorskip("transformers")
    from runalert.transformers import AlertCallback

    class Tokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self, n: int, seed: int) -> None:
            g = torch.Generator().manual_seed(seed)
            self.ids = torch.randint(1, 64, (n, 8), generator=g)
            self.labels = (self.ids[:, 0] >= 32).long()

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"input_ids": self.ids[i], "labels": self.labels[i]}

    scores = iter([0.5, 0.3, 0.7, 0.2])  # each evaluation's score (lower is better): best at saves 1, 2 and 4
    receiver = Receiver(httpserver)
    server = server_process()
    _automations(server, receiver.url)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=8,
        num_labels=2,
    )
    callback = AlertCallback(server=server.url, project="p", run_name="hf-ckpt")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=8,
        per_device_train_batch_size=8,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        metric_for_best_model="score",
        greater_is_better=False,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=transformers.BertForSequenceClassification(config),
        args=args,
        train_dataset=Tokens(64, 0),
        eval_dataset=Tokens(8, 1),
        compute_metrics=lambda _prediction: {"score": next(scores)},
        callbacks=[callback],
    )
    trainer.train()
    run_id = callback.monitor.server_run.run_id
    collection = f"model-{run_id}"
    artifact_bodies = lambda: [b for b in receiver.bodies if "event" in b]  # noqa: E731
    assert wait_for(lambda: len(artifact_bodies()) >= 7, timeout=30)
    created = [b for b in artifact_bodies() if b["event"] == "CREATE_ARTIFACT"]
    best = [b for b in artifact_bodies() if b["event"] == "ADD_ARTIFACT_ALIAS"]
    assert [(b["version"], os.path.basename(b["path"])) for b in created] == [
        ("v0", "checkpoint-2"),
        ("v1", "checkpoint-4"),
        ("v2", "checkpoint-6"),
        ("v3", "checkpoint-8"),
    ]
    assert [b["version"] for b in best] == ["v0", "v1", "v3"]
    shown = server.api("GET", f"{P}/p/artifacts/{collection}").json()
    assert shown["aliases"] == {"latest": 3, "best": 3}
    assert [(v["step"], v["metric"], v["value"]) for v in shown["versions"]] == [
        (2, "score", 0.5),
        (4, "score", 0.3),
        (6, "score", 0.7),
        (8, "score", 0.2),
    ]
    assert all(v["size"] and v["size"] > 0 for v in shown["versions"])  # the folder's files
    assert os.path.abspath(trainer.state.best_model_checkpoint) == shown["versions"][3]["path"]
    alerts = lambda: server.api("GET", f"{P}/p/alerts").json()  # noqa: E731
    assert wait_for(lambda: all(d["status"] == "delivered" for a in alerts() for d in a["deliveries"]), timeout=30)
    assert len(artifact_bodies()) == 7, receiver.bodies


@sqlite_only
def test_keras_checkpoints_fire_create_and_best_on_a_real_server(
    server_process: Any, httpserver: HTTPServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "torch"))  # read by Keras' first import
    keras = pytest.importorskip("keras")
    np = pytest.importorskip("numpy")
    from runalert.keras import AlertCallback

    class Scripted(keras.callbacks.Callback):
        """Puts VAL_LOSS[epoch] in the epoch's logs as ``score``, before ModelCheckpoint reads them."""

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs["score"] = VAL_LOSS[epoch]

    receiver = Receiver(httpserver)
    server = server_process()
    _automations(server, receiver.url)
    path = tmp_path / "best.keras"
    checkpoint = keras.callbacks.ModelCheckpoint(str(path), monitor="score", mode="min", save_best_only=True)
    callback = AlertCallback(server=server.url, project="p", run_name="keras-ckpt")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    model.fit(x, y, epochs=len(VAL_LOSS), batch_size=8, verbose=0, callbacks=[callback, Scripted(), checkpoint])
    run_id = callback.monitor.server_run.run_id
    artifact_bodies = lambda: [b for b in receiver.bodies if "event" in b]  # noqa: E731
    assert wait_for(lambda: len(artifact_bodies()) >= 6, timeout=30)
    created = [b for b in artifact_bodies() if b["event"] == "CREATE_ARTIFACT"]
    best = [b for b in artifact_bodies() if b["event"] == "ADD_ARTIFACT_ALIAS"]
    assert [(b["version"], b["path"]) for b in created] == [(f"v{i}", str(path)) for i in range(3)]  # rewritten
    assert [b["version"] for b in best] == ["v0", "v1", "v2"]
    shown = server.api("GET", f"{P}/p/artifacts/model-{run_id}").json()
    assert shown["aliases"] == {"latest": 2, "best": 2}
    assert [(v["step"], v["metric"], v["value"]) for v in shown["versions"]] == [
        (2, "score", 0.5),
        (4, "score", 0.3),
        (8, "score", 0.2),
    ]
    alerts = lambda: server.api("GET", f"{P}/p/alerts").json()  # noqa: E731
    assert wait_for(lambda: all(d["status"] == "delivered" for a in alerts() for d in a["deliveries"]), timeout=30)
    assert len(artifact_bodies()) == 6, receiver.bodies
