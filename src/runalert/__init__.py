"""runalert: hear about your training runs when it matters.

The module-level functions use one default :class:`Alerter`, built from settings (``RUNALERT_*``
environment variables or ``runalert.toml``) on first use, or by :func:`init`::

    import runalert
    from runalert import AlertLevel

    runalert.alert(title="Low accuracy", text="val_acc 0.41 < 0.5", level=AlertLevel.WARN, wait_duration=300)

``import runalert`` loads only :mod:`runalert.alert` (the standard library's cost): the other public names
(:class:`Alerter`, :class:`Settings`, the automations, :class:`Client`, ...) and the subpackages that used to
come with the package (``runalert.channels``, ``runalert.automations``, ...) are imported on first access
(PEP 562), and the default alerter's modules on the first :func:`alert`. The framework adapters
(``runalert.lightning``, ``runalert.transformers``, ``runalert.keras``) and the server are imported by name.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

# Imported eagerly, and first: it is light (the standard library only), and once it is in sys.modules, no later
# import of the submodule ``runalert.alert`` can rebind the package's attribute ``alert`` (the function below).
from runalert.alert import Alert, AlertLevel

if TYPE_CHECKING:  # what mypy and IDEs see; at run time these come from __getattr__ on first access
    from runalert.alerting import Alerter, RetryPolicy
    from runalert.automations import (
        Api,
        DoNothing,
        OnRunMetric,
        OnRunState,
        RunEvent,
        SendNotification,
        SendWebhook,
    )
    from runalert.channels import Channel
    from runalert.client import Client
    from runalert.config import Settings

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "AlertLevel",
    "Alerter",
    "Api",
    "Channel",
    "Client",
    "DoNothing",
    "OnRunMetric",
    "OnRunState",
    "RetryPolicy",
    "RunEvent",
    "SendNotification",
    "SendWebhook",
    "Settings",
    "__version__",
    "alert",
    "finish",
    "flush",
    "get_alerter",
    "init",
]

# Public name -> the module it is imported from on first access.
_LAZY_NAMES = {
    "Alerter": "runalert.alerting",
    "RetryPolicy": "runalert.alerting",
    "Api": "runalert.automations",
    "DoNothing": "runalert.automations",
    "OnRunMetric": "runalert.automations",
    "OnRunState": "runalert.automations",
    "RunEvent": "runalert.automations",
    "SendNotification": "runalert.automations",
    "SendWebhook": "runalert.automations",
    "Channel": "runalert.channels",
    "Client": "runalert.client",
    "Settings": "runalert.config",
}
# Subpackages that ``import runalert`` used to load, still reachable as attributes (``runalert.channels.Console``).
_LAZY_SUBMODULES = frozenset({"alerting", "automations", "backoff", "channels", "client", "config", "webhooks"})


def __getattr__(name: str) -> Any:
    """Import a public name or a subpackage on first access (PEP 562) and keep it in the module."""
    source = _LAZY_NAMES.get(name)
    if source is not None:
        value = getattr(importlib.import_module(source), name)
    elif name in _LAZY_SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _LAZY_SUBMODULES)


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


def alert(
    title: str,
    text: str = "",
    level: AlertLevel | str = AlertLevel.INFO,
    wait_duration: float | timedelta | None = 60,
    *,
    run: str | None = None,
    fields: Mapping[str, Any] | None = None,
) -> bool:
    """Send an alert through the default alerter (see :meth:`Alerter.alert`).

    ``title`` at most 64 characters; ``level`` INFO, WARN or ERROR (any case); ``wait_duration`` in seconds or
    a ``timedelta``: a repeat of the same title inside it is suppressed and counted (``0`` turns this off).
    Returns ``True`` if queued, ``False`` if suppressed. Never blocks on the network.
    """
    return get_alerter().alert(title, text, level, wait_duration, run=run, fields=fields)


def flush(timeout: float | None = None) -> bool:
    """Wait up to ``timeout`` seconds for the default alerter's queued alerts; ``True`` if all were settled."""
    return _default.flush(timeout) if _default is not None else True


def finish(timeout: float | None = None) -> bool:
    """Flush and close the default alerter (spooling what is left); the next :func:`alert` builds a new one."""
    global _default
    with _default_lock:
        current, _default = _default, None
    return current.close(timeout) if current is not None else True
