"""Keys never reach the access log: a filter on uvicorn's access logger that masks secrets in request targets.

uvicorn writes each request's path with its query string (``GET /?key=ra_... HTTP/1.1``). The filter rewrites
the target: the values of parameters whose name suggests a credential (``key``, ``api_key``, ``token``,
``secret``, ``password``, ``auth``, ``signature`` ...) become ``***``, and anything shaped like a runalert API
key (``ra_`` and 20 or more URL-safe characters) anywhere in the target too.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, quote

__all__ = ["ACCESS_LOGGER", "RedactSecrets", "install", "redact_target"]

ACCESS_LOGGER = "uvicorn.access"
MASK = "***"
_SECRET_NAME = re.compile(r"key|token|secret|passw|auth|sig|credential|session|cookie", re.IGNORECASE)
_API_KEY = re.compile(r"ra_[A-Za-z0-9_%-]{20,}")


def redact_target(target: str) -> str:
    """``target`` (a path with its query string) with credentials masked."""
    path, sep, query = target.partition("?")
    if sep:
        pairs = parse_qsl(query, keep_blank_values=True)
        if pairs:
            query = "&".join(
                f"{quote(name, safe='')}={MASK if _SECRET_NAME.search(name) else quote(value, safe='')}"
                for name, value in pairs
            )
        elif query:
            query = MASK  # not name=value pairs: nothing to tell a key from
    return _API_KEY.sub(MASK, path + sep + query)


class RedactSecrets(logging.Filter):
    """Masks credentials in uvicorn's access records (``client, method, target, version, status``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_target(args[2]), *args[3:])
        return True


def install(logger_name: str = ACCESS_LOGGER) -> None:
    """Add the filter to uvicorn's access logger (once)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
