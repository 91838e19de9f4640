"""Helpers shared by every test suite (``tests/`` and ``integrations/``), one implementation each:

- :func:`wait_for`, :func:`free_port`, :data:`FAST_RETRY` (:mod:`tests.support.waiting`);
- :class:`Clock`, a clock moved by hand (:mod:`tests.support.clock`);
- :class:`Receiver`, the webhook receiver on loopback, with :meth:`Receiver.drain` for negative checks
  (:mod:`tests.support.receiver`);
- :func:`isolated_env`, the autouse fixture that isolates RUNALERT_* settings (:mod:`tests.support.env`);
- :func:`in_ci`, :func:`missing`, :func:`require_module`: skip on a workstation, fail in CI (:mod:`tests.support.ci`).

The markers and the CI rules are in :mod:`tests.support.plugin`, loaded by the root ``conftest.py``.
Hostile receivers (hangs, trickles, redirects...) are in :mod:`tests.hostile`.
"""

from tests.support.ci import in_ci, missing, require_module
from tests.support.clock import Clock
from tests.support.env import isolated_env
from tests.support.receiver import Receiver
from tests.support.waiting import FAST_RETRY, free_port, wait_for

__all__ = [
    "FAST_RETRY",
    "Clock",
    "Receiver",
    "free_port",
    "in_ci",
    "isolated_env",
    "missing",
    "require_module",
    "wait_for",
]
