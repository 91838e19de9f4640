"""``runalert automations import`` and ``export`` against a real server, with W&B-shaped JSON written by hand from
W&B's documented shapes (tests/automations/wandb_json/wandb_export.json)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from runalert.automations.wandb_json import from_wandb
from runalert.cli import app

EXPORT_FILE = Path(__file__).parents[1] / "automations" / "wandb_json" / "wandb_export.json"
EXPORT = json.loads(EXPORT_FILE.read_text())


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["automations", *args])


def _integrations(server: Any, project: str) -> None:
    for name in ("training-alerts", "ci-hook"):
        answer = server.api(
            "PUT",
            f"/api/v1/projects/{project}/integrations/{name}",
            json={"kind": "webhook", "url": "http://127.0.0.1:9/h"},
        )
        assert answer.status_code in (200, 201), answer.text


def test_wandbs_automations_import_to_a_server_and_export_back(
    server_process: Callable[..., Any], tmp_path: Path
) -> None:
    server = server_process()
    for project in ("my-project", "wandb-registry-model"):
        _integrations(server, project)
    result = _cli("import", str(EXPORT_FILE), "--server", server.url)
    # the collection-scoped automation names no project: it is left out, named, and the exit code says so
    assert result.exit_code == 1, result.output
    assert "new-prod-model: its scope names no project: give --project" in result.output
    for name in ("loss-diverging", "acc-drop", "loss-spike", "run-failed", "registry-alias"):
        assert f"{name}: created" in result.output
    single = tmp_path / "link.json"
    single.write_text(json.dumps(EXPORT[4]))
    result = _cli("import", str(single), "--project", "my-project", "--server", server.url)
    assert result.exit_code == 0 and "new-prod-model: created" in result.output, result.output
    again = _cli("import", str(EXPORT_FILE), "--project", "my-project", "--server", server.url)
    assert "loss-diverging: unchanged" in again.output  # idempotent, as apply

    stored = {a["name"]: a["spec"] for a in server.api("GET", "/api/v1/projects/my-project/automations").json()}
    assert set(stored) == {"loss-diverging", "acc-drop", "loss-spike", "run-failed", "new-prod-model"}
    assert stored["loss-diverging"]["event"]["filter"]["run_metric_filter"]["threshold_filter"]["window_size"] == 5
    assert stored["acc-drop"]["action"]["integrationID"] == "ci-hook"

    out = tmp_path / "export.json"
    result = _cli("export", "--project", "my-project", "--server", server.url, "-o", str(out))
    assert result.exit_code == 0, result.output
    exported = json.loads(out.read_text())
    assert {e["name"] for e in exported} == set(stored)
    assert all(e["__typename"] == "Trigger" and isinstance(e["event"]["filter"], str) for e in exported)
    for item in exported:  # W&B's form back to the same automations
        assert from_wandb(item) == stored[item["name"]]


def test_a_wandb_automation_can_be_put_as_wandb_returns_it(server_process: Callable[..., Any]) -> None:
    server = server_process()
    _integrations(server, "my-project")
    answer = server.api("PUT", "/api/v1/projects/my-project/automations/loss-diverging", json=EXPORT[0])
    assert answer.status_code == 201, answer.text
    assert answer.json()["spec"] == from_wandb(EXPORT[0])
    entity = {**EXPORT[0], "scope": {"__typename": "Entity", "id": "RW50aXR5OjE=", "name": "team"}}
    refused = server.api("PUT", "/api/v1/projects/my-project/automations/loss-diverging", json=entity)
    assert refused.status_code == 422 and "runalert has no entities" in refused.json()["detail"]


def test_import_writes_a_spec_file_that_apply_takes(server_process: Callable[..., Any], tmp_path: Path) -> None:
    spec = tmp_path / "automations.json"
    result = _cli("import", str(EXPORT_FILE), "-o", str(spec), "--integration", "SW50ZWdyYXRpb246OTk==team")
    assert result.exit_code == 0, result.output
    written = json.loads(spec.read_text())["automations"]
    assert [a["name"] for a in written] == [e["name"] for e in EXPORT]
    assert written[0]["action"]["integrationID"] == "team"
    server = server_process()
    _integrations(server, "my-project")
    server.api(
        "PUT", "/api/v1/projects/my-project/integrations/team", json={"kind": "webhook", "url": "http://127.0.0.1:9/t"}
    )
    first = tmp_path / "first.json"
    first.write_text(json.dumps({"automations": written[:4]}))
    result = _cli("apply", "-f", str(first), "-p", "my-project", "--server", server.url)
    assert result.exit_code == 0 and "loss-diverging: created" in result.output, result.output


def test_a_large_integer_threshold_is_stored_and_served_exactly(client: Any) -> None:
    big = 2**53 + 1  # a float would make it 2**53
    assert client.put("/api/v1/projects/p/integrations/hook", json={"kind": "webhook", "url": "http://127.0.0.1:9/h"})
    spec = {
        "name": "big",
        "event": {
            "event_type": "RUN_METRIC",
            "filter": {"run_metric_filter": {"threshold_filter": {"name": "step", "cmp_op": "$gte", "threshold": big}}},
        },
        "action": {"action_type": "GENERIC_WEBHOOK", "integrationID": "hook"},
    }
    assert client.put("/api/v1/projects/p/automations/big", json=spec).status_code == 201
    served = client.get("/api/v1/projects/p/automations/big").json()["spec"]
    assert served["event"]["filter"]["run_metric_filter"]["threshold_filter"]["threshold"] == big
    again = client.put("/api/v1/projects/p/automations/big", json=served)
    assert again.json()["result"] == "unchanged"
