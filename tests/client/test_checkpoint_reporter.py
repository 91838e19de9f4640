"""The checkpoint reporter on its own: a server that fails loses the reports, never the training loop, and says so
once (without the API key); Keras file name templates match the files they make only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from runalert.checkpoints import CheckpointReporter, CheckpointSave, _template_pattern, file_size
from runalert.client import Client
from runalert.client.rest import NO_RETRY


@dataclass
class _Run:  # what the reporter reads of a ServerRun
    client: Client
    project: str = "p"
    run_id: str = "r1"


def test_a_failing_server_loses_the_reports_and_logs_once(
    httpserver: HTTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request("/api/v1/projects/p/artifacts").respond_with_data("down", status=500)
    client = Client(httpserver.url_for("/"), api_key="rk-very-secret-key", project="p", retry=NO_RETRY)
    reporter = CheckpointReporter(_Run(client))
    assert reporter.collection == "model-r1"
    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(b"x" * 10)
    with caplog.at_level(logging.WARNING, logger="runalert"):
        reporter.report([CheckpointSave(str(ckpt), step=1, best=True, size=10), CheckpointSave(str(ckpt), step=2)])
        assert reporter.flush(30)
    assert (reporter.sent, reporter.failed) == (0, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "checkpoint" in warnings[0]
    assert "rk-very-secret-key" not in caplog.text
    bodies = [request.get_json() for request, _ in httpserver.log]
    assert [(b["collection"], b["aliases"], b["step"]) for b in bodies] == [
        ("model-r1", ["latest", "best"], 1),
        ("model-r1", ["latest"], 2),
    ]


def test_keras_templates_match_their_own_files_only() -> None:
    pattern = _template_pattern("model-{epoch:02d}-{val_loss:.2f}.keras")
    assert pattern.fullmatch("model-03-0.12.keras")
    assert not pattern.fullmatch("other.keras") and not pattern.fullmatch("model-03-0.12.keras.tmp")


def test_the_size_of_a_folder_is_its_files(tmp_path: Path) -> None:
    (tmp_path / "ckpt" / "sub").mkdir(parents=True)
    (tmp_path / "ckpt" / "a").write_bytes(b"1234")
    (tmp_path / "ckpt" / "sub" / "b").write_bytes(b"12")
    assert (file_size(str(tmp_path / "ckpt")), file_size(str(tmp_path / "missing"))) == (6, None)
