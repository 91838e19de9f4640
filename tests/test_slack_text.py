from __future__ import annotations

import pytest

from runalert import Alert, AlertLevel
from runalert.slack_text import build_message, escape, format_text, normalize_mention, normalize_mentions


def test_escape_controls() -> None:
    assert escape("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"
    assert escape("<!channel>") == "&lt;!channel&gt;"


@pytest.mark.parametrize(
    "token",
    [
        "<@U1234ABCD>",
        "<@W1234ABCD|ana>",
        "<#C0123ABC>",
        "<!here>",
        "<!channel>",
        "<!subteam^S0123ABC>",
        "<https://example.com/run/1|the run>",
        "<mailto:ana@example.com|Ana>",
    ],
)
def test_user_tokens_pass_through(token: str) -> None:
    assert format_text(f"see {token} now & then") == f"see {token} now &amp; then"


def test_markup_false_escapes_everything() -> None:
    assert format_text("loss <!channel>", markup=False) == "loss &lt;!channel&gt;"


def test_broken_or_unknown_tokens_are_escaped() -> None:
    assert format_text("<!channel") == "&lt;!channel"
    assert format_text("<javascript:alert(1)|x>") == "&lt;javascript:alert(1)|x&gt;"
    assert format_text("<@lowercase>") == "&lt;@lowercase&gt;"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("U1234ABCD", "<@U1234ABCD>"),
        ("W1234ABCD", "<@W1234ABCD>"),
        ("S0GROUP1", "<!subteam^S0GROUP1>"),
        ("<@S0GROUP1>", "<!subteam^S0GROUP1>"),  # a group written as a user pings nobody: fixed
        ("here", "<!here>"),
        ("@channel", "<!channel>"),
        ("<@U1234ABCD>", "<@U1234ABCD>"),
        ("<!subteam^S0GROUP1>", "<!subteam^S0GROUP1>"),
    ],
)
def test_mentions_are_formatted(given: str, expected: str) -> None:
    assert normalize_mention(given) == expected


@pytest.mark.parametrize("bad", ["ana", "@ana", "<https://x.y>", "u123"])
def test_bad_mentions_fail_with_help(bad: str) -> None:
    with pytest.raises(ValueError, match="member ID"):
        normalize_mention(bad)


def test_mentions_per_level_and_plain_list_means_error() -> None:
    assert normalize_mentions({"error": ["U1AB"], "Warn": "here"}) == {
        AlertLevel.ERROR: ("<@U1AB>",),
        AlertLevel.WARN: ("<!here>",),
    }
    assert normalize_mentions(["U1AB"]) == {AlertLevel.ERROR: ("<@U1AB>",)}
    with pytest.raises(ValueError, match="mentions level must be one of"):
        normalize_mentions({"urgent": ["U1AB"]})


def test_message_blocks_escape_names_and_keep_mentions() -> None:
    alert = Alert(
        title="NaN <!channel> loss",
        text="loss is nan for run <!everyone>",
        level=AlertLevel.ERROR,
        run="run-<!here>",
        fields={"metric": "<@U999>", "step": "12"},
        markup=False,
    ).with_suppressed(3)
    message = build_message(alert, ["<@U1234ABCD>"])
    # The header is plain_text, which Slack never parses for mentions; every mrkdwn part must be escaped.
    assert message["blocks"][0]["text"]["type"] == "plain_text"
    flat = str([message["text"], *message["blocks"][1:]])
    assert message["text"].startswith("<@U1234ABCD> :rotating_light: [ERROR] NaN &lt;!channel&gt; loss")
    # No control sequence other than the configured mention and our own date token survives.
    assert "<!channel>" not in flat
    assert "<!everyone>" not in flat and "<!here>" not in flat and "<@U999>" not in flat
    section = message["blocks"][1]["text"]["text"]
    assert section.startswith("<@U1234ABCD> loss is nan")
    assert "3 similar alerts suppressed" in section
    assert message["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": alert.title, "emoji": True},
    }
    fields = message["blocks"][2]["fields"]
    assert {"type": "mrkdwn", "text": "*metric*\n&lt;@U999&gt;"} in fields


def test_message_truncates_long_text() -> None:
    message = build_message(Alert(title="t", text="x" * 5000))
    assert len(message["blocks"][1]["text"]["text"]) == 3000
    assert len(message["text"]) <= 4000
