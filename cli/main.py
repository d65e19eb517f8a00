"""Entry point: `emoscope` (pyproject) or `python -m cli.main`. Exit 0: all good; 1: some
inputs failed; 2: usage errors."""
from __future__ import annotations

import sys

from cli import analyse, export, serve  # noqa: F401 — each module registers its commands
from cli.common import app


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
