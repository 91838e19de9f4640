"""Shared fixtures of ``tests/``: an isolated RUNALERT_HOME for every test (:func:`tests.support.isolated_env`).

The markers and CI rules come from :mod:`tests.support.plugin` (loaded by the root ``conftest.py``).
"""

from __future__ import annotations

from tests.support import isolated_env

__all__ = ["isolated_env"]
