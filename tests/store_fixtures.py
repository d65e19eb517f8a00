"""The packaged rules and a SessionWriter over a DB file, as the CLI builds them."""
from __future__ import annotations

from pathlib import Path

from core.analysis.rules import load_rules
from core.storage.sessions import SessionWriter
from core.storage.store import Store

RULES = load_rules(Path(__file__).resolve().parent.parent / "core" / "analysis" / "default_rules.toml")


def writer_for(db: str | Path, rules=RULES) -> SessionWriter:
    return SessionWriter(Store(db), rules)
