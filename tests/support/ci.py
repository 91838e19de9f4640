"""What a test does when a real part it needs is missing: skip on a workstation, FAIL in CI.

CI is any environment with ``CI`` set to a true value (``.ci/run`` sets ``CI=true``): there, everything the
suite needs is installed on purpose, so a missing PostgreSQL, Chromium or extra is a broken machine, and a
silent skip would hide that its tests did not run.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["in_ci", "missing", "require_module"]


def in_ci() -> bool:
    """Whether the tests run in CI (``CI`` is set and not ``0``/``false``/``no``/empty)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def missing(reason: str) -> NoReturn:
    """A real part the test needs is not there: ``pytest.fail`` in CI, ``pytest.skip`` elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: a test that cannot run fails here instead of skipping)", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, reason: str | None = None) -> ModuleType:
    """``pytest.importorskip`` that fails instead in CI (usable at module level, like ``importorskip``)."""
    if not in_ci():
        return pytest.importorskip(name, reason=reason)
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{name} is needed by these tests and CI is set: {reason or exc}") from exc
