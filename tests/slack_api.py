"""A Slack Web API on loopback: the parts runalert uses (``chat.postMessage``, ``chat.update``), over real HTTP.

It answers as Slack does: ``Authorization: Bearer <token>`` is required (``not_authed``, ``invalid_auth``); errors
are HTTP 200 with ``{"ok": false, "error": ...}`` (``channel_not_found``, ``message_not_found``,
``invalid_blocks`` when the blocks break Block Kit's limits); a ``thread_ts`` that names no message of the channel
is refused with ``thread_not_found`` (Slack's word for it in ``conversations.replies``; what ``chat.postMessage``
does then is not documented, and refusing it means no test passes by replying to a thread that does not exist); a
message posted to ``#name`` is answered with the channel's ID; a scripted rate limit answers HTTP 429 with
``Retry-After``. Messages are kept per channel with their thread, so tests read the channel as a person would.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runalert.slack_limits import block_kit_problems

TOKEN = "xoxb-1111-2222-test-token"


@dataclass
class Message:
    """One message as the channel shows it (``versions``: its text after each ``chat.update``)."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    reply_broadcast: bool = False
    versions: list[str] = field(default_factory=list)

    @property
    def header(self) -> str:
        return str(self.blocks[0]["text"]["text"]) if self.blocks else ""

    @property
    def flat(self) -> str:
        """Every text in the message, joined (to look for a word anywhere in it)."""
        return json.dumps([self.text, self.blocks], ensure_ascii=False)


class SlackAPI:
    """``with SlackAPI() as slack:`` a server at ``slack.url`` (the ``api_url``) with channel ``#alerts``
    (ID ``C0ALERTS``); ``slack.rate_limit(2, retry_after=1)`` answers the next 2 calls with 429."""

    def __init__(self, channels: dict[str, str] | None = None, token: str = TOKEN) -> None:
        self.channels = channels or {"#alerts": "C0ALERTS"}
        self.token = token
        self.messages: list[Message] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self._ts = itertools.count(1)
        self._limited: list[float] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, answer, headers = api._answer(self.path, dict(self.headers), raw)
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> SlackAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what tests look at ---------------------------------------------------------------------------------
    def rate_limit(self, calls: int, retry_after: float = 1) -> None:
        """Answer the next ``calls`` calls with HTTP 429 and ``Retry-After``."""
        with self._lock:
            self._limited += [retry_after] * calls

    def top_level(self, channel: str = "C0ALERTS") -> list[Message]:
        """The channel's own messages (not replies; broadcast replies count, as Slack shows them)."""
        with self._lock:
            return [
                m
                for m in self.messages
                if m.channel == channel and (m.thread_ts is None or m.thread_ts == m.ts or m.reply_broadcast)
            ]

    def replies(self, ts: str) -> list[Message]:
        """The replies in the thread of the message ``ts``."""
        with self._lock:
            return [m for m in self.messages if m.thread_ts == ts and m.ts != ts]

    def ok_calls(self, method: str) -> int:
        """How many calls of ``method`` Slack answered with ``ok``."""
        with self._lock:
            pairs = zip(self.calls, self.answers, strict=True)
            return sum(1 for (name, _), (_, answer) in pairs if name == method and answer.get("ok"))

    # -- the API -------------------------------------------------------------------------------------------
    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        method = path.rsplit("/", 1)[-1]
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        with self._lock:
            status, answer, extra = self._handle(method, headers, body)
            self.calls.append((method, body))
            self.answers.append((status, answer))
        return status, answer, extra

    def _handle(
        self, method: str, headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self._limited:
            retry = self._limited.pop(0)
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": f"{retry:g}"}
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if not auth:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if auth != f"Bearer {self.token}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        channel = str(self.channels.get(body.get("channel", ""), body.get("channel")))
        if channel not in self.channels.values():
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        if method not in ("chat.postMessage", "chat.update"):
            return 200, {"ok": False, "error": "unknown_method"}, {}
        if block_kit_problems(body):
            return 200, {"ok": False, "error": "invalid_blocks", "errors": block_kit_problems(body)}, {}
        if method == "chat.postMessage":
            thread = body.get("thread_ts")
            if thread is not None and not any(m.ts == thread and m.channel == channel for m in self.messages):
                return 200, {"ok": False, "error": "thread_not_found"}, {}
            ts = f"1700000000.{next(self._ts):06d}"
            message = Message(
                channel, ts, body["text"], body.get("blocks", []), thread, bool(body.get("reply_broadcast")), []
            )
            message.versions.append(message.text)
            self.messages.append(message)
            return 200, {"ok": True, "channel": channel, "ts": ts, "message": {"text": body["text"]}}, {}
        found = [m for m in self.messages if m.ts == body.get("ts") and m.channel == channel]
        if not found:
            return 200, {"ok": False, "error": "message_not_found"}, {}
        if body.get("channel") != channel:  # chat.update takes the channel's ID, never its name
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        message = found[0]
        message.text, message.blocks = body["text"], body.get("blocks", [])
        message.versions.append(message.text)
        return 200, {"ok": True, "channel": channel, "ts": message.ts, "text": message.text}, {}
