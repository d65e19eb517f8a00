"""Entry point: `emoscope` (pyproject) or `python -m cli.main`. Exit 0: all good; 1: some
inputs failed; 2: usage errors."""
from __future__ import annotations

import sys

from cli import admin, analyse, cluster, export, head, index, search, serve  # noqa: F401 — each module registers its commands
from cli.common import app
from core.base.private import private_umask


@app.callback()
def _private() -> None:
    """Emotion timelines for recorded conversations."""
    # Recordings and everything derived from them: files 0600, folders 0700.
    private_umask()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
