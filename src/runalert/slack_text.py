"""Slack text: escaping, mention tokens and Block Kit messages.

Slack treats ``<...>`` as control sequences: ``<!channel>`` pings a whole channel. Everything runalert puts
in a message is escaped (``&``, ``<``, ``>``) except the tokens a user deliberately wrote in an alert's
text (user, channel, user-group and special mentions, and ``<url|label>`` links), so a metric or a run
name can never ping anyone.

Mentions in an alert's title ping too (as in W&B: "title or text"): the header block is ``plain_text``, which
Slack never parses, so the title's mention tokens are repeated at the start of the message text, and the header
shows them readably (``<@U123|ana>`` as ``@ana``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from runalert.alert import Alert, AlertLevel

__all__ = [
    "build_message",
    "escape",
    "format_text",
    "link",
    "normalize_mention",
    "normalize_mentions",
    "plain_title",
    "title_mentions",
]

_TOKEN = re.compile(
    r"<(?:"
    r"@[UW][A-Z0-9]+(?:\|[^<>]*)?"  # user
    r"|#C[A-Z0-9]+(?:\|[^<>]*)?"  # channel
    r"|!subteam\^S[A-Z0-9]+(?:\|[^<>]*)?"  # user group
    r"|!(?:here|channel|everyone)(?:\|[^<>]*)?"  # special mentions
    r"|!date\^\d+\^[^<>|]*(?:\|[^<>]*)?"  # date formatting
    r"|(?:https?|mailto):[^<>|\s]+(?:\|[^<>]*)?"  # links
    r")>"
)

_PING = re.compile(
    r"<(?:@[UW][A-Z0-9]+|!subteam\^S[A-Z0-9]+|!(?:here|channel|everyone))(?:\|[^<>]*)?>"
)  # the tokens that notify someone: user, user-group and special mentions

EMOJI = {
    AlertLevel.INFO: ":large_blue_circle:",
    AlertLevel.WARN: ":warning:",
    AlertLevel.ERROR: ":rotating_light:",
}
_SECTION_LIMIT = 3000
_FALLBACK_LIMIT = 4000
_HEADER_LIMIT = 150
_FIELD_LIMIT = 2000
_FIELDS_PER_SECTION = 10
_MAX_FIELD_SECTIONS = 45  # a header, the text, the fields and the context within Slack's 50 blocks
_URL_LIMIT = 2000
_RUN_LABEL_LIMIT = 100  # with a link: 2,000 + 5 × (100 + 60) + the rest fits in 3,000
_HOST_LABEL_LIMIT = 60


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` so nothing in ``text`` is read as a Slack control sequence."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_text(text: str, *, markup: bool = True) -> str:
    """Escape ``text``, letting the user's own mention and link tokens through when ``markup`` is true."""
    if not markup:
        return escape(text)
    out: list[str] = []
    last = 0
    for match in _TOKEN.finditer(text):
        out.append(escape(text[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(escape(text[last:]))
    return "".join(out)


_BARE_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")


def normalize_mention(mention: str) -> str:
    """Format one mention for Slack.

    ``U…``/``W…`` become ``<@…>``, ``S…`` (a user group) ``<!subteam^…>``, ``here``/``channel``/``everyone``
    (with or without ``@``) ``<!here>``... A user group written ``<@S…>`` pings nobody in Slack, so it is
    rewritten as ``<!subteam^S…>``. Already formatted tokens pass. Anything else is a ``ValueError``.
    """
    if not isinstance(mention, str):
        raise ValueError(f"a mention must be a string, not {type(mention).__name__}")
    m = mention.strip()
    bare = m.lstrip("@").lower()
    if bare in ("here", "channel", "everyone"):
        return f"<!{bare}>"
    group = re.fullmatch(r"<@(S[A-Z0-9]+)(\|[^<>]*)?>", m)
    if group:
        return f"<!subteam^{group.group(1)}>"
    if _BARE_ID.match(m):
        return f"<!subteam^{m}>" if m.startswith("S") else f"<@{m}>"
    if _TOKEN.fullmatch(m) and not m.startswith(("<http", "<mailto")):
        return m
    raise ValueError(
        f"mention {mention!r} is not a Slack member or group: use a member ID (U…/W…), a user-group ID "
        "(S…), 'here', 'channel', or a token like <@U…> or <!subteam^S…> (Slack shows IDs under "
        "'Copy member ID' in a profile)"
    )


def normalize_mentions(
    mentions: Mapping[str, Iterable[str]] | Iterable[str] | None,
) -> dict[AlertLevel, tuple[str, ...]]:
    """Per-level mentions. A plain list applies to ERROR alerts; a mapping names levels (any case)."""
    if not mentions:
        return {}
    if isinstance(mentions, str):
        raise ValueError("mentions must be a mapping of level to a list of mentions, e.g. {'ERROR': ['U123']}")
    if not isinstance(mentions, Mapping):
        mentions = {"ERROR": mentions}
    result: dict[AlertLevel, tuple[str, ...]] = {}
    for level, items in mentions.items():
        parsed = AlertLevel.parse(level, argument="mentions level")
        names = [items] if isinstance(items, str) else list(items)
        result[parsed] = tuple(normalize_mention(item) for item in names)
    return result


def title_mentions(title: str) -> list[str]:
    """The mention tokens (users, user groups, ``<!here>``...) in a title, in order, each once."""
    return list(dict.fromkeys(match.group(0) for match in _PING.finditer(title)))


def _readable(match: re.Match[str]) -> str:
    token = match.group(0)[1:-1]
    target, _, label = token.partition("|")
    if target.startswith("!date^"):
        return label or target
    if target.startswith(("@", "!subteam^", "!")):
        name = label or target.removeprefix("!subteam^").lstrip("@!")
        return name if name.startswith("@") else f"@{name}"
    if target.startswith("#"):
        name = label or target[1:]
        return name if name.startswith("#") else f"#{name}"
    return label or target  # a link


def plain_title(title: str, *, markup: bool = True) -> str:
    """The title for a ``plain_text`` header: a user's tokens (with ``markup``) written readably, ``<@U1|ana>``
    as ``@ana``, ``<!here>`` as ``@here``, ``<https://x|run>`` as ``run``; anything else as it is."""
    return _TOKEN.sub(_readable, title) if markup else title


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def link(url: str, label: str) -> str:
    """A Slack link ``<url|label>``: the URL's ``<``, ``>``, ``|`` and white space percent-encoded, ``&`` escaped
    (as Slack asks), the label escaped."""
    return f"<{_target(url)}|{escape(label)}>"


def _target(url: str) -> str:
    encoded = "".join(f"%{ord(c):02X}" if c in "<>|" or c.isspace() else c for c in url)
    return encoded.replace("&", "&amp;")


def _linkable(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("https://", "http://")) and len(_target(str(url))) <= _URL_LIMIT


def _context(alert: Alert, emoji: str) -> str:
    """The context line: level, the run (a link to its page when the alert has a ``url``), host and time.

    The link is never cut: with one, the run name and the host are shortened to leave it room (a URL longer than
    Slack can take, over 2,000 characters once encoded, or one that is not http(s), is left out)."""
    head = f"{emoji} *{alert.level.value}*"
    date = f"<!date^{int(alert.created_at)}^{{date_short_pretty}} {{time_secs}}|now>"
    if alert.url is not None and _linkable(alert.url):
        host = _truncate(alert.host, _HOST_LABEL_LIMIT)
        run = f" · run {link(alert.url, _truncate(alert.run, _RUN_LABEL_LIMIT))}" if alert.run else ""
        return f"{head}{run or ' · ' + link(alert.url, 'run page')} · {escape(host)} · {date}"
    run = f" · run {escape(alert.run)}" if alert.run else ""
    return _truncate(f"{head}{run} · {escape(alert.host)} · {date}", _SECTION_LIMIT)


def _field_sections(alert: Alert) -> list[dict[str, Any]]:
    """The alert's fields, 10 to a section (Slack's limit), as many sections as it takes, within the blocks a
    message may have. A field holding the run's link is left out: the context line links the run."""
    fields = [
        {"type": "mrkdwn", "text": _truncate(f"*{escape(k)}*\n{escape(v)}", _FIELD_LIMIT)}
        for k, v in alert.fields.items()
        if not (alert.url and v == alert.url)
    ]
    room = _MAX_FIELD_SECTIONS * _FIELDS_PER_SECTION
    if len(fields) > room:
        more = len(fields) - room + 1
        fields = [*fields[: room - 1], {"type": "mrkdwn", "text": f"_… and {more} more fields_"}]
    return [
        {"type": "section", "fields": fields[i : i + _FIELDS_PER_SECTION]}
        for i in range(0, len(fields), _FIELDS_PER_SECTION)
    ]


def build_message(alert: Alert, mentions: Iterable[str] = ()) -> dict[str, Any]:
    """A Slack message for ``alert``: Block Kit blocks plus a plain-text fallback for notifications."""
    emoji = EMOJI[alert.level]
    mentions = tuple(mentions)
    ping = " ".join(mentions)
    body = format_text(alert.text, markup=alert.markup)
    if alert.suppressed:
        body = (body + "\n" if body else "") + (
            f"_({alert.suppressed} similar alert{'s' if alert.suppressed != 1 else ''} suppressed)_"
        )
    title = format_text(alert.title, markup=alert.markup)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _truncate(plain_title(alert.title, markup=alert.markup), _HEADER_LIMIT),
                "emoji": True,
            },
        }
    ]
    # A header cannot ping: the title's mentions go first in the text (once, unless already there).
    given = set(mentions) | set(_PING.findall(body))
    from_title = " ".join(m for m in title_mentions(alert.title) if m not in given) if alert.markup else ""
    section = " ".join(part for part in (ping, from_title, body) if part)
    if section:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _truncate(section, _SECTION_LIMIT)}})
    blocks += _field_sections(alert)
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _context(alert, emoji)}]})
    fallback = " ".join(part for part in (ping, f"{emoji} [{alert.level.value}] {title}") if part)
    if body:
        fallback += f": {body}"
    return {"text": _truncate(fallback, _FALLBACK_LIMIT), "blocks": blocks}
