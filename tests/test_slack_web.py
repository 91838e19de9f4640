"""The Slack bot against a Slack Web API on loopback (tests/slack_api.py): threads per run, ``chat.update``,
Slack's errors and its 429s."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from runalert import Alert, Alerter, AlertLevel
from runalert.channels import PermanentError, TransientError
from runalert.channels.slack import SlackBot, SlackMessage
from tests.slack_api import TOKEN, SlackAPI
from tests.support import FAST_RETRY


@pytest.fixture
def slack() -> Iterator[SlackAPI]:
    with SlackAPI() as api:
        yield api


def _bot(slack: SlackAPI, **kwargs: object) -> SlackBot:
    return SlackBot(TOKEN, "#alerts", api_url=slack.url, rate_limit=None, **kwargs)  # type: ignore[arg-type]


def test_a_runs_follow_ups_are_replies_in_the_thread_of_its_first_message_errors_broadcast(slack: SlackAPI) -> None:
    bot = _bot(slack, threads=True)
    with Alerter([bot], run="bert-7", retry=FAST_RETRY) as alerter:
        alerter.alert("Loss is NaN", "at step 12", AlertLevel.WARN)
        alerter.alert("Run recovered", "finite again at step 40", AlertLevel.INFO)
        alerter.alert("Run crashed", "CUDA out of memory", AlertLevel.ERROR)
        assert alerter.flush(30)
    bot.send(Alert(title="Loss is NaN", run="gpt-2"))
    first, other = slack.top_level()[0], slack.top_level()[-1]
    assert bot.thread_of("bert-7") == SlackMessage("C0ALERTS", first.ts)
    assert first.header == "Loss is NaN" and first.thread_ts is None
    replies = slack.replies(first.ts)
    assert [(m.header, m.reply_broadcast) for m in replies] == [("Run recovered", False), ("Run crashed", True)]
    assert other.thread_ts is None and "gpt-2" in other.flat and slack.replies(other.ts) == []
    # Broadcast replies show in the channel as well; plain replies do not.
    assert [m.header for m in slack.top_level()] == ["Loss is NaN", "Run crashed", "Loss is NaN"]


def test_without_threads_every_message_is_its_own_and_alerts_without_a_run_never_thread(slack: SlackAPI) -> None:
    plain, threaded = _bot(slack), _bot(slack, threads=True)
    for _ in range(2):
        plain.send(Alert(title="a", run="r1"))
        threaded.send(Alert(title="b"))
    assert all(m.thread_ts is None for m in slack.messages) and len(slack.top_level()) == 4


def test_the_thread_memory_is_bounded_to_the_latest_runs(slack: SlackAPI) -> None:
    bot = _bot(slack, threads=True, max_threads=2)
    for run in ("r1", "r2", "r3"):
        bot.send(Alert(title="t", run=run))
    assert bot.thread_of("r1") is None and bot.thread_of("r3") is not None
    bot.send(Alert(title="again", run="r2"))
    assert slack.messages[-1].thread_ts == bot.thread_of("r2").ts  # type: ignore[union-attr]


def test_update_replaces_a_message_in_place_by_the_channel_id_slack_answered_with(slack: SlackAPI) -> None:
    bot = _bot(slack)
    posted = bot.post(Alert(title="1 more run: Run crashed"))
    assert posted == SlackMessage("C0ALERTS", posted.ts)  # #alerts answered with its ID
    bot.update(posted, Alert(title="3 more runs: Run crashed"))
    (message,) = slack.messages
    assert message.versions == [
        ":large_blue_circle: [INFO] 1 more run: Run crashed",
        ":large_blue_circle: [INFO] 3 more runs: Run crashed",
    ]
    with pytest.raises(PermanentError, match="message_not_found"):
        bot.update(SlackMessage("C0ALERTS", "1.0"), Alert(title="x"))


def test_a_429_is_retried_after_retry_after_and_delivers_once(slack: SlackAPI) -> None:
    bot = _bot(slack)
    slack.rate_limit(1, retry_after=2)
    with pytest.raises(TransientError) as info:
        bot.send(Alert(title="x"))
    assert info.value.retry_after == 2.0
    slack.rate_limit(2, retry_after=0)
    with Alerter([bot], retry=FAST_RETRY) as alerter:
        alerter.alert("after the storm")
        assert alerter.flush(30)
    assert [m.header for m in slack.messages] == ["after the storm"]


def test_slack_errors_are_permanent_and_never_show_the_token(slack: SlackAPI, caplog: pytest.LogCaptureFixture) -> None:
    wrong = SlackBot("xoxb-9-wrong-token", "#alerts", api_url=slack.url, rate_limit=None)
    missing = SlackBot(TOKEN, "#nowhere", api_url=slack.url, rate_limit=None)
    for bot, error in ((wrong, "invalid_auth"), (missing, "channel_not_found")):
        with pytest.raises(PermanentError, match=error) as info:
            bot.send(Alert(title="x"))
        assert "xoxb" not in str(info.value)
    with caplog.at_level(logging.DEBUG, logger="runalert"), Alerter([wrong], retry=FAST_RETRY) as alerter:
        alerter.alert("x")
        alerter.flush(30)
    assert "invalid_auth" in caplog.text and "xoxb-9-wrong-token" not in caplog.text
    assert slack.messages == []
