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
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from runalert._default_alerter import finish, flush, get_alerter, init

# Imported eagerly, before the function ``alert`` below: it is light (the standard library only), and once it is in
# sys.modules, no later import of the submodule ``runalert.alert`` can rebind the package's attribute ``alert``.
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
