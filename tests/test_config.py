"""Settings: RUNALERT_* environment variables and runalert.toml become validated channels."""

from __future__ import annotations

from pathlib import Path

import pytest

from runalert import AlertLevel
from runalert.channels import Console, Email, SlackBot, SlackWebhook, Webhook
from runalert.config import Settings, build_channels

SLACK_URL = "https://hooks.slack.com/services/T0AAAA/B0BBBB/supersecrettoken123"


def test_nothing_configured_means_the_console() -> None:
    channels = build_channels(Settings())
    assert [type(c) for c in channels] == [Console]


def test_environment_variables_become_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNALERT_SLACK_WEBHOOK_URL", SLACK_URL)
    monkeypatch.setenv("RUNALERT_SLACK_MENTIONS", '{"ERROR": ["U1234ABCD", "S0GROUP1"]}')
    monkeypatch.setenv("RUNALERT_SLACK_BOT_TOKEN", "xoxb-1-2-abcdef")
    monkeypatch.setenv("RUNALERT_SLACK_CHANNEL", "#training")
    monkeypatch.setenv("RUNALERT_WEBHOOK_URL", "https://example.com/hooks/runs")
    monkeypatch.setenv("RUNALERT_WEBHOOK_SECRET", "whsec-0123456789")
    monkeypatch.setenv("RUNALERT_WEBHOOK_MIN_LEVEL", "warning")
    monkeypatch.setenv("RUNALERT_SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("RUNALERT_SMTP_PORT", "2525")
    monkeypatch.setenv("RUNALERT_SMTP_SENDER", "runs@example.com")
    monkeypatch.setenv("RUNALERT_SMTP_RECIPIENTS", "ana@example.com, bo@example.com")
    monkeypatch.setenv("RUNALERT_SMTP_PASSWORD", "hunter22")
    monkeypatch.setenv("RUNALERT_SMTP_USERNAME", "runs")
    settings = Settings()
    kinds = {type(c): c for c in build_channels(settings)}
    assert set(kinds) == {SlackWebhook, SlackBot, Webhook, Email}  # no console once something is set
    assert kinds[Webhook].min_level is AlertLevel.WARN
    assert kinds[Email].min_level is AlertLevel.WARN  # email defaults to WARN and above
    assert kinds[Email].recipients == ["ana@example.com", "bo@example.com"]
    assert kinds[Email].port == 2525
    assert kinds[SlackWebhook].mentions[AlertLevel.ERROR] == ("<@U1234ABCD>", "<!subteam^S0GROUP1>")
    # Secrets never show in reprs of the settings or of the channels.
    text = repr(settings) + str(settings) + "".join(repr(c) for c in kinds.values())
    for secret in ("supersecrettoken123", "xoxb-1-2-abcdef", "whsec-0123456789", "hunter22"):
        assert secret not in text


def test_toml_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "alerts.toml"
    config.write_text(
        'webhook_url = "https://example.com/from-toml"\nrun_name = "from-toml"\nflush_timeout = 3\nconsole = true\n'
    )
    monkeypatch.setenv("RUNALERT_CONFIG", str(config))
    monkeypatch.setenv("RUNALERT_RUN_NAME", "from-env")
    settings = Settings()
    assert settings.run_name == "from-env"
    assert settings.flush_timeout == 3
    assert [type(c) for c in build_channels(settings)] == [Webhook, Console]


def test_runalert_toml_in_the_working_directory_is_found() -> None:
    Path("runalert.toml").write_text('slack_webhook_url = "' + SLACK_URL + '"\n')
    assert [type(c) for c in build_channels(Settings())] == [SlackWebhook]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RUNALERT_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0"}, "looks incomplete"),
        ({"RUNALERT_SLACK_BOT_TOKEN": "xoxb-1-2-3"}, "RUNALERT_SLACK_CHANNEL"),
        ({"RUNALERT_WEBHOOK_URL": "example.com/hook"}, "URL"),
        ({"RUNALERT_WEBHOOK_URL": "https://example.com/h", "RUNALERT_WEBHOOK_SECRET": "short"}, "secret"),
        ({"RUNALERT_SMTP_RECIPIENTS": "ana@example.com"}, "host"),
        ({"RUNALERT_SMTP_HOST": "smtp.example.com", "RUNALERT_SMTP_SENDER": "a@example.com"}, "recipient"),
    ],
)
def test_bad_configuration_fails_at_set_up_with_what_to_fix(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message) as info:
        build_channels(Settings())
    assert "supersecret" not in str(info.value)


def test_bad_level_names_the_allowed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNALERT_SLACK_MIN_LEVEL", "loud")
    with pytest.raises(ValueError, match="INFO, WARN, ERROR"):
        Settings()
