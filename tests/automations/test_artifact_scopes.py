"""Artifact events in the in-process engine: a collection scope respects its project, a registry scope matches
every collection of the registry (including one first seen later), and each artifact payload variable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runalert import Alerter
from runalert.automations import (
    ArtifactCollectionScope,
    LocalEngine,
    OnAddArtifactAlias,
    OnAddArtifactTag,
    OnCreateArtifact,
    OnLinkArtifact,
    Project,
    RegistryScope,
    SendWebhook,
)
from runalert.channels import Webhook

PAYLOAD = {
    "collection": "${artifact_collection_name}",
    "version": "${artifact_version}",
    "full": "${artifact_version_string}",
    "alias": "${alias}",
    "tag": "${tag}",
    "path": "${artifact_path}",
}


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    alerter = Alerter([], resend_spooled=False)
    yield LocalEngine(alerter, integrations={"hook": Webhook("http://127.0.0.1:9/hook")})
    alerter.close(timeout=2)


def test_a_collection_scope_with_a_project_matches_that_project_only(engine: LocalEngine) -> None:
    scope = ArtifactCollectionScope("ckpt", project="p")
    engine.create(OnCreateArtifact(scope=scope) >> SendWebhook(integration="hook"), name="p-ckpt")
    engine.create(
        OnCreateArtifact(scope=ArtifactCollectionScope("ckpt")) >> SendWebhook(integration="hook"), name="any"
    )
    assert [f.automation for f in engine.artifact_event("CREATE_ARTIFACT", project="q", collection="ckpt")] == ["any"]
    fired = engine.artifact_event("CREATE_ARTIFACT", project="p", collection="ckpt")
    assert sorted(f.automation for f in fired) == ["any", "p-ckpt"]
    assert engine.artifact_event("CREATE_ARTIFACT", project="p", collection="other") == []


def test_a_registry_scope_matches_every_collection_of_the_registry(engine: LocalEngine) -> None:
    # a registry is a project: its scope matches every collection in it, one first seen after the automation too
    hook = SendWebhook(integration="hook", payload={"full": "${artifact_version_string}"})
    engine.create(OnLinkArtifact(scope=RegistryScope("reg")) >> hook, name="linked")
    for collection in ("text", "vision-made-later"):
        [fired] = engine.artifact_event("LINK_ARTIFACT", project="reg", collection=collection, version=1)
        assert (fired.automation, fired.alert.payload) == ("linked", {"full": f"reg/{collection}:v1"})
    assert engine.artifact_event("LINK_ARTIFACT", project="not-reg", collection="text") == []


def test_each_artifact_payload_variable(engine: LocalEngine) -> None:
    engine.create(OnAddArtifactAlias(scope=Project("p")) >> SendWebhook(integration="hook", payload=PAYLOAD), name="a")
    engine.create(OnAddArtifactTag(scope=Project("p")) >> SendWebhook(integration="hook", payload=PAYLOAD), name="t")
    [alias] = engine.artifact_event(
        "ADD_ARTIFACT_ALIAS", project="p", collection="ckpt", version=3, alias="best", path="/c/epoch=3.ckpt"
    )
    assert alias.alert.payload == {
        "collection": "ckpt",
        "version": "v3",
        "full": "p/ckpt:v3",
        "alias": "best",
        "tag": "",
        "path": "/c/epoch=3.ckpt",
    }
    [tag] = engine.artifact_event("ADD_ARTIFACT_TAG", project="p", artifact="model:v7", tag="golden")
    assert tag.alert.payload == {
        "collection": "model",
        "version": "v7",
        "full": "p/model:v7",
        "alias": "",
        "tag": "golden",
        "path": "",
    }


def test_the_default_payload_of_an_artifact_event_has_its_variables(engine: LocalEngine) -> None:
    engine.create(OnCreateArtifact(scope=Project("p")) >> SendWebhook(integration="hook"), name="all")
    [fired] = engine.artifact_event("CREATE_ARTIFACT", project="p", collection="ckpt", version=0, path="/c/a.ckpt")
    payload = fired.alert.payload
    assert (payload["artifact_collection_name"], payload["artifact_version"], payload["artifact_path"]) == (
        "ckpt",
        "v0",
        "/c/a.ckpt",
    )
    assert payload["artifact_version_string"] == "p/ckpt:v0" and payload["alias"] == "" and payload["tag"] == ""
