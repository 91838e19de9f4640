"""The spool: alerts not delivered before exit, kept as JSON lines under ``RUNALERT_HOME`` and sent later."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runalert.alert import Alert

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Spool", "SpooledAlert"]

logger = logging.getLogger("runalert")


@dataclass(frozen=True)
class SpooledAlert:
    """An alert waiting for a channel, known by the channel's key (never by its secrets)."""

    channel_key: str
    channel_name: str
    alert: Alert
    spooled_at: float


class Spool:
    """An append-only JSON-lines file with an advisory lock, shared by the processes of one machine.

    :meth:`claim` removes and returns the records of the given channels atomically, so two processes
    starting together (the ranks of a job) do not both resend the same alert.
    """

    FILENAME = "spool.jsonl"

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.path = Path(home).expanduser() / self.FILENAME

    def append(self, items: list[SpooledAlert]) -> None:
        """Add ``items`` to the spool (file mode 0600: alerts may hold sensitive text)."""
        if not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            json.dumps(
                {
                    "channel": i.channel_key,
                    "channel_name": i.channel_name,
                    "spooled_at": i.spooled_at,
                    "alert": i.alert.to_dict(),
                }
            )
            + "\n"
            for i in items
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle, _locked(handle):
            handle.write(lines)

    def claim(self, channel_keys: Collection[str] | None = None) -> list[SpooledAlert]:
        """Remove and return the spooled alerts for ``channel_keys`` (all when ``None``), oldest first."""
        if not self.path.exists():
            return []
        claimed: list[SpooledAlert] = []
        with open(self.path, "r+", encoding="utf-8") as handle, _locked(handle):
            kept: list[str] = []
            for line in handle:
                record = _parse(line)
                if record is None:
                    if line.strip():
                        logger.warning("runalert: skipped an unreadable line in %s", self.path)
                    continue
                if channel_keys is None or record.channel_key in channel_keys:
                    claimed.append(record)
                else:
                    kept.append(line if line.endswith("\n") else line + "\n")
            handle.seek(0)
            handle.truncate()
            handle.writelines(kept)
        return claimed

    def pending(self) -> list[SpooledAlert]:
        """The spooled alerts, without removing them."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as handle, _locked(handle):
            return [r for r in map(_parse, handle) if r is not None]

    def __len__(self) -> int:
        return len(self.pending())


def _parse(line: str) -> SpooledAlert | None:
    try:
        data: dict[str, Any] = json.loads(line)
        return SpooledAlert(
            channel_key=str(data["channel"]),
            channel_name=str(data.get("channel_name", data["channel"])),
            alert=Alert.from_dict(data["alert"]),
            spooled_at=float(data.get("spooled_at", time.time())),
        )
    except (ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _locked(handle: IO[str]) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
