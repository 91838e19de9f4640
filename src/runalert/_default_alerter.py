"""The process's default alerter: :func:`init` builds it, :func:`get_alerter` returns it (built from settings on first
use), :func:`flush` and :func:`finish` wait for and close it.

Re-exported by :mod:`runalert` (``runalert.init``, ``runalert.get_alerter`` ...); the modules inside the package that
need the default alerter (the monitor, the automation engine) import it from here, not from the package itself.
Importing this module loads nothing beyond the standard library: the alerter's modules come with the first call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runalert.alerting import Alerter
    from runalert.channels import Channel
    from runalert.config import Settings

__all__ = ["finish", "flush", "get_alerter", "init"]

_default: Alerter | None = None
_default_lock = threading.Lock()


def init(
    channels: Sequence[Channel] | None = None,
    *,
    run: str | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> Alerter:
    """Build the default alerter, replacing (and closing) any earlier one.

    ``channels`` wins over settings; otherwise channels come from ``settings`` (default: the environment and
    ``runalert.toml``), with ``overrides`` applied as setting values (``init(slack_webhook_url=...)``). Bad
    configuration raises ``ValueError`` here, at set-up, not when an alert fires.
    """
    from runalert.alerting import Alerter
    from runalert.config import Settings, build_channels

    global _default
    chosen = settings if settings is not None else Settings(**overrides)
    alerter = Alerter(
        channels if channels is not None else build_channels(chosen),
        run=run if run is not None else chosen.run_name,
        home=chosen.home,
        flush_timeout=chosen.flush_timeout,
    )
    with _default_lock:
        previous, _default = _default, alerter
    if previous is not None:
        previous.close()
    return alerter


def get_alerter() -> Alerter:
    """The default alerter, built from settings on first use.

    If the settings are invalid, the error is logged once and alerts go to the console rather than nowhere
    (call :func:`init` to get the error raised at set-up instead).
    """
    global _default
    with _default_lock:
        if _default is not None and not _default.closed:
            return _default
    try:
        return init()
    except Exception as exc:
        import logging

        from runalert._log import log_once
        from runalert.alerting import Alerter
        from runalert.channels import Console

        log_once(
            "default-alerter-config",
            logging.ERROR,
            "runalert: invalid settings (%s); alerts go to the console until this is fixed",
            type(exc).__name__ + ": " + str(exc).splitlines()[0],
        )
        alerter = Alerter([Console()])
        with _default_lock:
            _default = alerter
        return alerter


def flush(timeout: float | None = None) -> bool:
    """Wait up to ``timeout`` seconds for the default alerter's queued alerts; ``True`` if all were settled."""
    return _default.flush(timeout) if _default is not None else True


def finish(timeout: float | None = None) -> bool:
    """Flush and close the default alerter (spooling what is left); the next :func:`alert` builds a new one."""
    global _default
    with _default_lock:
        current, _default = _default, None
    return current.close(timeout) if current is not None else True
