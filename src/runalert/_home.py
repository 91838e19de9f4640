"""``RUNALERT_HOME`` and the files runalert writes there: the folder private (0700), every file 0600.

Alerts, run names, configurations and webhook URLs are written there, so nothing in it is readable by other
local users, whatever the umask of the process that created it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "open_private", "private_dir"]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) if needed; a folder created here is exactly 0700.

    A folder that already exists keeps its mode (it may be shared on purpose); the files runalert puts in it
    are 0600 all the same. Raises ``OSError`` when the folder cannot be created (a parent is a regular file, a
    read-only file system, no permission).
    """
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=PRIVATE_DIR_MODE)
    except FileExistsError:
        if not folder.is_dir():
            raise
        return folder
    os.chmod(folder, PRIVATE_DIR_MODE)  # the umask may have taken bits away (0o277 would leave 0o500)
    return folder


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """``os.open`` with ``O_CREAT``: a new file is created 0600; an existing one loses group and other bits."""
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # created under a strict umask, or left 0644 by an older version
    except PermissionError:
        pass  # someone else's file: it keeps its mode
    return fd
