from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runalert import Alert, AlertLevel
from runalert.slack_limits import block_kit_problems
from runalert.slack_text import build_message, escape, format_text, normalize_mention, normalize_mentions, plain_title


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


def assert_block_kit_limits(message: dict) -> None:
    """Slack's Block Kit limits (``runalert.slack_limits``): nothing Slack would refuse or cut."""
    assert block_kit_problems(message) == []


def test_a_mention_in_the_title_pings_from_the_text_and_the_header_stays_plain() -> None:
    # W&B's example: run.alert(title=..., text=...) with a member mention; here the mention is in the title.
    alert = Alert(title="Loss is NaN <@U1234ABCD>", text="loss has gone to NaN", level=AlertLevel.ERROR)
    message = build_message(alert)
    assert_block_kit_limits(message)
    header, section = message["blocks"][0], message["blocks"][1]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "Loss is NaN @U1234ABCD", "emoji": True}}
    assert section["text"] == {"type": "mrkdwn", "text": "<@U1234ABCD> loss has gone to NaN"}
    assert message["text"] == ":rotating_light: [ERROR] Loss is NaN <@U1234ABCD>: loss has gone to NaN"


def test_title_mentions_of_every_kind_and_only_mentions_go_to_the_text() -> None:
    alert = Alert(title="<!subteam^S0GROUP1|@ml> <!here> <#C0123ABC|gen> <@W1ABC|ana>", text="body")
    message = build_message(alert)
    assert_block_kit_limits(message)
    assert message["blocks"][0]["text"]["text"] == "@ml @here #gen @ana"
    assert message["blocks"][1]["text"]["text"] == "<!subteam^S0GROUP1|@ml> <!here> <@W1ABC|ana> body"
    link = build_message(Alert(title="<https://x.example/r/1|run 1> done", text=""))
    assert link["blocks"][0]["text"]["text"] == "run 1 done"
    assert [b["type"] for b in link["blocks"]] == ["header", "context"]  # a link pings nobody: no text block


def test_title_mentions_are_not_repeated_and_a_title_alone_still_pings() -> None:
    alert = Alert(title="<@U1AB> <@U2CD> diverged", text="cc <@U2CD>", level=AlertLevel.ERROR)
    message = build_message(alert, ["<@U1AB>"])  # the channel's ERROR mentions
    assert_block_kit_limits(message)
    assert message["blocks"][1]["text"]["text"] == "<@U1AB> cc <@U2CD>"
    only_title = build_message(Alert(title="done <!channel>"))
    assert only_title["blocks"][1]["text"]["text"] == "<!channel>"
    # with a long text, the mentions come first and survive the truncation
    long = build_message(Alert(title="NaN <@U1AB>", text="x" * 5000))
    assert_block_kit_limits(long)
    assert long["blocks"][1]["text"]["text"].startswith("<@U1AB> xxx")


def test_title_of_a_markup_false_alert_never_pings() -> None:
    alert = Alert(title="run <!channel> <@U1AB>", text="t", markup=False)
    message = build_message(alert)
    assert message["blocks"][0]["text"]["text"] == "run <!channel> <@U1AB>"  # plain_text: shown, never parsed
    assert message["blocks"][1]["text"]["text"] == "t"
    assert "<!channel>" not in message["text"] and "<@U1AB>" not in message["text"]


def test_block_kit_limits_hold_for_large_alerts() -> None:
    fields = {f"k{i}": "v" * 3000 for i in range(15)}
    alert = Alert(title="t" * 64, text="x" * 10_000, fields=fields, run="r" * 500).with_suppressed(7)
    message = build_message(alert, ["<!here>"] * 3)
    assert_block_kit_limits(message)


# -- pinned by mutation testing (docs/mutation.md) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "header"),
    [
        ("<@U1AB|ana> done", "@ana done"),  # markup is the default
        ("<!subteam^S0GROUP1> paged", "@S0GROUP1 paged"),
        ("<!everyone>", "@everyone"),
        ("in <#C0123ABC>", "in #C0123ABC"),
        ("in <#C0123ABC|#gen>", "in #gen"),  # a label that already has its sign keeps one
        ("at <!date^1700000000^{date_short}|Nov 14>", "at Nov 14"),
        ("<https://x.example/r/1>", "https://x.example/r/1"),
    ],
)
def test_the_header_shows_every_kind_of_token_readably(title: str, header: str) -> None:
    assert plain_title(title) == header
    assert build_message(Alert(title=title, text="b"))["blocks"][0]["text"]["text"] == header


def test_a_text_of_exactly_the_limit_is_not_cut() -> None:
    assert build_message(Alert(title="t", text="x" * 3000))["blocks"][1]["text"]["text"] == "x" * 3000
    assert build_message(Alert(title="t", text="x" * 3001))["blocks"][1]["text"]["text"] == "x" * 2999 + "…"


@pytest.mark.parametrize(
    ("text", "suppressed", "section"),
    [
        ("", 1, "_(1 similar alert suppressed)_"),
        ("", 2, "_(2 similar alerts suppressed)_"),
        ("loss high", 1, "loss high\n_(1 similar alert suppressed)_"),
    ],
)
def test_the_suppressed_count_is_its_own_line_singular_or_plural(text: str, suppressed: int, section: str) -> None:
    message = build_message(Alert(title="t", text=text).with_suppressed(suppressed))
    assert message["blocks"][1]["text"]["text"] == section


def test_the_context_block_names_the_level_the_run_and_the_host() -> None:
    alert = Alert(title="t", text="x", level=AlertLevel.WARN, run="r1", host="gpu-7", created_at=1_700_000_000.0)
    context = build_message(alert)["blocks"][-1]
    assert context == {
        "type": "context",
        "elements": [
            {
                "type": "mrkdwn",
                "text": ":warning: *WARN* · run r1 · gpu-7 · <!date^1700000000^{date_short_pretty} {time_secs}|now>",
            }
        ],
    }


def test_everyone_is_a_special_mention_too() -> None:
    assert normalize_mention("@everyone") == "<!everyone>"
    assert normalize_mention("everyone") == "<!everyone>"


@pytest.mark.parametrize("bad", ["<mailto:ana@example.com|Ana>", "Xchannel", "<!channelz>"])
def test_links_and_near_misses_are_not_mentions(bad: str) -> None:
    with pytest.raises(ValueError, match="member ID"):
        normalize_mention(bad)


def test_a_bad_mention_error_lists_what_is_allowed() -> None:
    with pytest.raises(ValueError) as info:
        normalize_mention("ana")
    assert str(info.value) == (
        "mention 'ana' is not a Slack member or group: use a member ID (U…/W…), a user-group ID (S…), 'here', "
        "'channel', or a token like <@U…> or <!subteam^S…> (Slack shows IDs under 'Copy member ID' in a profile)"
    )
    with pytest.raises(ValueError, match=r"^a mention must be a string, not int$"):
        normalize_mention(123)  # type: ignore[arg-type]


def test_a_single_string_of_mentions_is_refused_with_the_shape_to_use() -> None:
    with pytest.raises(ValueError) as info:
        normalize_mentions("U1AB")  # would otherwise be read one character at a time
    assert str(info.value) == "mentions must be a mapping of level to a list of mentions, e.g. {'ERROR': ['U123']}"


# -- the run link, and Block Kit's limits over many shapes of alert (issue 18) -----------------------------------

RUN_URL = "https://runalert.example.org/runs/vision/bert-7?tab=alerts&from=1"


def test_the_run_link_is_in_the_context_block_and_never_cut_by_the_ten_field_limit() -> None:
    fields = {f"metric {i}": str(i) for i in range(23)} | {"run url": RUN_URL}
    alert = Alert(title="Loss diverging", run="bert-7", fields=fields, url=RUN_URL, created_at=1_700_000_000.0)
    message = build_message(alert)
    assert_block_kit_limits(message)
    context = message["blocks"][-1]["elements"][0]["text"]
    assert "· run <https://runalert.example.org/runs/vision/bert-7?tab=alerts&amp;from=1|bert-7> ·" in context
    sections = [b["fields"] for b in message["blocks"] if b["type"] == "section" and "fields" in b]
    assert [len(s) for s in sections] == [10, 10, 3]  # every field shown, ten to a section
    shown = [f["text"] for s in sections for f in s]
    assert shown[0] == "*metric 0*\n0" and shown[-1] == "*metric 22*\n22"
    assert not any(RUN_URL in f or "run url" in f for f in shown)  # the link is the context's, once


def test_without_a_run_name_the_context_links_the_run_page_and_odd_urls_are_not_links() -> None:
    message = build_message(Alert(title="t", url="https://x.example/r|1 2"))
    assert "· <https://x.example/r%7C1%202|run page> ·" in message["blocks"][-1]["elements"][0]["text"]
    for odd in ("javascript:alert(1)", "https://x.example/" + "a" * 3000):
        context = build_message(Alert(title="t", run="r1", url=odd))["blocks"][-1]["elements"][0]["text"]
        assert "<javascript" not in context and "aaaa" not in context and "· run r1 ·" in context


def test_hundreds_of_fields_stay_within_fifty_blocks_and_say_how_many_are_not_shown() -> None:
    message = build_message(Alert(title="t", text="x", fields={f"k{i}": "v" for i in range(600)}, url=RUN_URL))
    assert_block_kit_limits(message)
    assert len(message["blocks"]) == 48
    assert message["blocks"][-2]["fields"][-1]["text"] == "_… and 151 more fields_"
    assert "|run page>" in message["blocks"][-1]["elements"][0]["text"]


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"text": "", "blocks": []}, "text: the fallback text is required"),
        ({"text": "x" * 4001, "blocks": []}, "text: 4001 characters"),
        ({"text": "x", "blocks": [{"type": "divider"}] * 51}, "blocks: 51 blocks (at most 50)"),
        ({"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]}, "151"),
        ({"text": "x", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]}, "must be plain_text"),
        ({"text": "x", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}]}, "3001"),
        ({"text": "x", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}]}, "0 characters"),
        ({"text": "x", "blocks": [{"type": "section"}]}, "needs a text or fields"),
        ({"text": "x", "blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}]}, "11 fields"),
        ({"text": "x", "blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}]}, "2001"),
        ({"text": "x", "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}]}, "11 el"),
        ({"text": "x", "blocks": [{"type": "context", "elements": []}]}, "0 elements"),
        ({"text": "x", "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c" * 3001}]}]}, "3001"),
        (
            {
                "text": "x",
                "blocks": [
                    {
                        "type": "actions",
                        "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b" * 76}}],
                    }
                ],
            },
            "76 characters",
        ),
        (
            {
                "text": "x",
                "blocks": [
                    {
                        "type": "actions",
                        "elements": [
                            {"type": "button", "text": {"type": "plain_text", "text": "b"}, "url": "u" * 3001}
                        ],
                    }
                ],
            },
            "url must be",
        ),
    ],
)
def test_block_kit_problems_names_each_limit_broken(message: dict, problem: str) -> None:
    problems = block_kit_problems(message)
    assert problems and any(problem in p for p in problems), problems


_printable = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)
_long = st.one_of(_printable, st.builds(lambda c, n: c * n, st.sampled_from("x<&>|é🙂 "), st.integers(0, 9000)))
_title = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=64)
_tokens = st.sampled_from(["<@U1AB>", "<!here>", "<!channel>", "<!subteam^S0G>", "<https://x.example|x>", "<&>"])


@st.composite
def _alerts(draw: st.DrawFn) -> tuple[Alert, list[str]]:
    title = draw(st.one_of(_title, st.builds(lambda t, k: (k + " " + t)[:64], _title, _tokens)))
    fields = draw(st.dictionaries(_printable.filter(bool), _long, max_size=draw(st.sampled_from([0, 3, 10, 11, 60]))))
    url = draw(
        st.one_of(
            st.none(),
            st.just(RUN_URL),
            st.builds(lambda p: "https://r.example/runs/" + p, _long),
            st.builds(lambda p: "http://r.example/?q=" + p, _printable),
        )
    )
    alert = Alert(
        title=title,
        text=draw(st.one_of(_long, st.builds(lambda t, k: k + t, _long, _tokens))),
        level=draw(st.sampled_from(list(AlertLevel))),
        run=draw(st.one_of(st.none(), _long.filter(bool))),
        fields=fields,
        markup=draw(st.booleans()),
        suppressed=draw(st.integers(0, 10**6)),
        host=draw(st.one_of(st.just("gpu-7"), _printable)),
        url=url,
        id="0" * 32,
        created_at=1_700_000_000.0,
    )
    return alert, draw(st.lists(_tokens, max_size=5))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_alerts())
def test_every_shape_of_alert_gives_a_message_within_block_kit_limits_with_the_link_whole(
    case: tuple[Alert, list[str]],
) -> None:
    alert, mentions = case
    message = build_message(alert, mentions)
    assert block_kit_problems(message) == []
    shown = [f for b in message["blocks"] if "fields" in b for f in b["fields"]]
    kept = [v for v in alert.fields.values() if v != alert.url]
    assert len(shown) == len(kept) or shown[-1]["text"].startswith("_… and ")
    context = message["blocks"][-1]["elements"][0]["text"]
    if alert.url and len(alert.url) <= 400:  # a URL Slack can take is linked whole (even if all of it is escaped)
        target = "".join(f"%{ord(c):02X}" if c in "<>|" or c.isspace() else c for c in alert.url)
        assert f"<{target.replace('&', '&amp;')}|" in context
