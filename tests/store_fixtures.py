"""The packaged rules and a SessionWriter over a DB file, as the CLI builds them."""
from __future__ import annotations

from pathlib import Path

from core.rules import load_rules
from core.sessions import SessionWriter
from core.store import Store

RULES = load_rules(Path(__file__).resolve().parent.parent / "core" / "default_rules.toml")


def writer_for(db: str | Path, rules=RULES) -> SessionWriter:
    return SessionWriter(Store(db), rules)
