"""The server's artifact model: versions, aliases unique per collection (moving one moves it), tags, links to a
registry; every change fires the artifact automations on it, with the artifact payload variables."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import text

from runalert.automations import (
    ArtifactCollectionScope,
    OnAddArtifactAlias,
    OnAddArtifactTag,
    OnAddCollectionTag,
    OnCreateArtifact,
    OnLinkArtifact,
    OnRemoveArtifactTag,
    OnUnlinkArtifact,
    Project,
    RegistryScope,
    SendWebhook,
)

P = "/api/v1/projects"
PAYLOAD = {
    "event": "${event_type}",
    "collection": "${artifact_collection_name}",
    "version": "${artifact_version}",
    "full": "${artifact_version_string}",
    "alias": "${alias}",
    "tag": "${tag}",
    "path": "${artifact_path}",
    "run": "${run_id}",
}


def _automation(client: Any, project: str, name: str, event: Any, payload: Any = PAYLOAD) -> None:
    client.put(f"{P}/{project}/integrations/hook", json={"kind": "webhook", "url": "http://127.0.0.1:9/hook"})
    data = (event >> SendWebhook(integration="hook", payload=payload)).model_dump(mode="json")
    data["name"] = name
    answer = client.put(f"{P}/{project}/automations/{name}", json={k: v for k, v in data.items() if v is not None})
    assert answer.status_code == 201, answer.text


def _payloads(client: Any, fired: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ctx = client.app.state.ctx
    found = []
    with ctx.db.session() as session:
        for item in fired:
            stored = session.execute(text("SELECT payload FROM alerts WHERE id = :i"), {"i": item["alert_id"]}).scalar()
            stored = json.loads(stored) if isinstance(stored, str) else stored
            found.append(ctx.cipher.decrypt_json(stored["__encrypted__"]))
    return found


def _version(client: Any, project: str = "p", **body: Any) -> dict[str, Any]:
    answer = client.post(f"{P}/{project}/artifacts", json={"collection": "ckpt", **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_new_version_fires_create_with_the_payload_variables(client: Any) -> None:
    _automation(client, "p", "new", OnCreateArtifact(scope=Project("p")))
    client.put(f"{P}/p/runs/r1", json={})
    first = _version(client, path="/ckpt/epoch=0.ckpt", size=10, step=5, run_id="r1")
    second = _version(client, path="/ckpt/epoch=1.ckpt", size=11, step=9)
    assert (first["version"], second["version"], second["version_string"]) == (0, 1, "v1")
    assert _payloads(client, first["fired"] + second["fired"]) == [
        {
            "event": "CREATE_ARTIFACT",
            "collection": "ckpt",
            "version": "v0",
            "full": "p/ckpt:v0",
            "alias": "",
            "tag": "",
            "path": "/ckpt/epoch=0.ckpt",
            "run": "r1",
        },
        {
            "event": "CREATE_ARTIFACT",
            "collection": "ckpt",
            "version": "v1",
            "full": "p/ckpt:v1",
            "alias": "",
            "tag": "",
            "path": "/ckpt/epoch=1.ckpt",
            "run": "",
        },
    ]
    shown = client.get(f"{P}/p/artifacts/ckpt").json()
    assert [(v["version"], v["path"], v["size"], v["step"], v["run_id"]) for v in shown["versions"]] == [
        (0, "/ckpt/epoch=0.ckpt", 10, 5, "r1"),
        (1, "/ckpt/epoch=1.ckpt", 11, 9, None),
    ]


def test_an_alias_is_unique_in_its_collection_and_moves(client: Any) -> None:
    _automation(client, "p", "best", OnAddArtifactAlias(scope=Project("p")))
    first = _version(client, aliases=["latest", "best"], metric="val_loss", value=0.5)
    assert [p["alias"] for p in _payloads(client, first["fired"])] == ["latest", "best"]
    second = _version(client, aliases=["latest"], value=0.7)
    assert second["moved"] == {"latest": 0}
    assert [(p["alias"], p["version"]) for p in _payloads(client, second["fired"])] == [("latest", "v1")]
    third = _version(client, aliases=["latest", "best"], value=0.3)
    assert third["moved"] == {"latest": 1, "best": 0}
    shown = client.get(f"{P}/p/artifacts/ckpt").json()
    assert shown["aliases"] == {"latest": 2, "best": 2}
    assert [v["aliases"] for v in shown["versions"]] == [[], [], ["best", "latest"]]
    # by hand: "best" back to v1 moves it off v2; giving it again to v1 changes nothing and fires nothing
    again = client.post(f"{P}/p/artifacts/ckpt/versions/1/aliases", json={"alias": "best"}).json()
    assert again["moved"] == {"best": 2} and len(again["fired"]) == 1
    same = client.post(f"{P}/p/artifacts/ckpt/versions/1/aliases", json={"alias": "best"}).json()
    assert same == {**same, "moved": {}, "fired": []}
    assert client.get(f"{P}/p/artifacts/ckpt").json()["aliases"] == {"latest": 2, "best": 1}
    assert client.delete(f"{P}/p/artifacts/ckpt/aliases/best").status_code == 204
    assert client.get(f"{P}/p/artifacts/ckpt").json()["aliases"] == {"latest": 2}
    missing = client.post(f"{P}/p/artifacts/ckpt/versions/9/aliases", json={"alias": "best"})
    assert missing.status_code == 404 and "ckpt:v9" in missing.text


def test_tags_of_versions_and_collections_fire_their_events(client: Any) -> None:
    _automation(client, "p", "tag", OnAddArtifactTag(scope=Project("p")))
    _automation(client, "p", "untag", OnRemoveArtifactTag(scope=Project("p")))
    _automation(client, "p", "ctag", OnAddCollectionTag(scope=Project("p")))
    _version(client)
    added = client.post(f"{P}/p/artifacts/ckpt/versions/0/tags", json={"tag": "golden"}).json()
    assert [(p["event"], p["tag"], p["version"]) for p in _payloads(client, added["fired"])] == [
        ("ADD_ARTIFACT_TAG", "golden", "v0")
    ]
    assert client.post(f"{P}/p/artifacts/ckpt/versions/0/tags", json={"tag": "golden"}).json()["fired"] == []
    removed = client.delete(f"{P}/p/artifacts/ckpt/versions/0/tags/golden").json()
    assert [p["event"] for p in _payloads(client, removed["fired"])] == ["REMOVE_ARTIFACT_TAG"]
    collection = client.post(f"{P}/p/artifacts/ckpt/tags", json={"tag": "team-a"}).json()
    assert [(p["event"], p["tag"], p["version"]) for p in _payloads(client, collection["fired"])] == [
        ("ADD_COLLECTION_TAG", "team-a", "")
    ]
    assert client.get(f"{P}/p/artifacts/ckpt").json()["tags"] == ["team-a"]


def test_registry_scope_matches_every_collection_of_the_registry_including_later_ones(client: Any) -> None:
    _automation(client, "reg", "linked", OnLinkArtifact(scope=RegistryScope("reg")))
    _automation(client, "reg", "unlinked", OnUnlinkArtifact(scope=RegistryScope("reg")))
    _automation(client, "reg", "only-vision", OnLinkArtifact(scope=ArtifactCollectionScope("vision", project="reg")))
    _version(client)
    _version(client)
    first = client.post(f"{P}/p/artifacts/ckpt/versions/1/links", json={"registry": "reg", "collection": "text"})
    assert first.status_code == 200, first.text
    # "vision" does not exist yet when the automations are made: created by this link, matched all the same
    later = client.post(f"{P}/p/artifacts/ckpt/versions/0/links", json={"registry": "reg", "collection": "vision"})
    fired = [f["automation"] for f in first.json()["fired"]], [f["automation"] for f in later.json()["fired"]]
    assert fired == (["linked"], ["linked", "only-vision"])
    assert [(p["collection"], p["full"]) for p in _payloads(client, later.json()["fired"])] == [
        ("vision", "reg/vision:v0"),
        ("vision", "reg/vision:v0"),
    ]
    again = client.post(f"{P}/p/artifacts/ckpt/versions/0/links", json={"registry": "reg", "collection": "vision"})
    assert again.json()["fired"] == []
    gone = client.post(f"{P}/p/artifacts/ckpt/versions/0/unlink", json={"registry": "reg", "collection": "vision"})
    assert [f["automation"] for f in gone.json()["fired"]] == ["unlinked"]


def test_a_collection_scope_matches_its_collection_in_its_project_only(client: Any) -> None:
    _automation(client, "p", "ckpt-only", OnCreateArtifact(scope=ArtifactCollectionScope("ckpt", project="p")))
    assert [f["automation"] for f in _version(client)["fired"]] == ["ckpt-only"]
    assert _version(client, collection="other")["fired"] == []
    assert _version(client, project="q")["fired"] == []  # the same collection name in another project


def test_bad_input_names_the_field(client: Any) -> None:
    answer = client.post(f"{P}/p/artifacts", json={"collection": "ckpt", "size": -1})
    assert answer.status_code == 422 and "size" in answer.text
    answer = client.post(f"{P}/p/artifacts", json={"collection": "ckpt", "aliases": [""]})
    assert answer.status_code == 422 and "aliases" in answer.text
    assert client.get(f"{P}/p/artifacts/nothing").status_code == 404


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_processes_creating_versions_at_once_number_them_once(make_client: Any) -> None:
    first, second = make_client(background=False), make_client(background=False)
    assert first.put(f"{P}/p/runs/r", json={}).status_code in {200, 201}  # the project exists
    start = threading.Barrier(2)
    answers: list[Any] = []

    def post(client: Any) -> None:
        start.wait()
        answers.extend(
            client.post(f"{P}/p/artifacts", json={"collection": "new", "aliases": ["latest"]}) for _ in range(5)
        )

    threads = [threading.Thread(target=post, args=(c,)) for c in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [201] * 10, [a.text for a in answers]
    assert sorted(a.json()["version"] for a in answers) == list(range(10))
    assert first.get(f"{P}/p/artifacts/new").json()["aliases"] == {"latest": 9}
