"""``python -m runalert.server [serve options]``: the same as ``runalert serve``."""

from __future__ import annotations

from runalert.server.cli import serve_main

if __name__ == "__main__":
    serve_main()
