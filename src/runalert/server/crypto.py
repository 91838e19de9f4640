"""Secrets at rest: Fernet with the key from ``RUNALERT_SECRET_KEY`` or a 0600 key file in ``RUNALERT_HOME``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from runalert._home import private_dir

__all__ = ["Cipher", "InvalidToken", "load_key"]

KEY_FILE = "secret.key"


def load_key(secret_key: str | None, home: Path) -> bytes:
    """The Fernet key: ``secret_key`` if given, else ``home/secret.key`` (created with mode 0600 if missing)."""
    if secret_key:
        key = secret_key.strip().encode()
        Fernet(key)  # raises ValueError for a malformed key
        return key
    path = home / KEY_FILE
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path} is readable by others (mode {mode:o}): run chmod 600 {path}")
        return path.read_bytes().strip()
    private_dir(home)  # created 0700
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key + b"\n")
    finally:
        os.close(fd)
    return key


class Cipher:
    """Encrypts strings and JSON values. Never logs what it handles."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode()).decode()

    def encrypt_json(self, value: Any) -> str:
        return self.encrypt(json.dumps(value, sort_keys=True))

    def decrypt_json(self, token: str) -> Any:
        return json.loads(self.decrypt(token)) if token else {}

    def __repr__(self) -> str:
        return "Cipher(***)"
