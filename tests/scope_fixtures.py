"""A store with two teams of calls and one programme of diaries, their recordings in the
worker's archive, and an emoscope.toml that grants each kind of user its part."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from core.access import EVERYTHING, Scope, Viewer
from core.sessions import SessionWriter
from core.store import Store
from core.types import Curve, SessionResult
from tests.audio_gen import silence, write
from tests.store_fixtures import RULES
from tests.test_analytics_store import call

# k → (team, tags, customer): team A's calls, team B's calls, and a wellbeing diary.
LAYOUT = {10: ("A", ("north",), "c-a1"), 11: ("A", (), "c-a2"), 12: ("A", (), "c-shared"),
          13: ("B", ("south",), "c-b1"), 14: ("B", ("south",), "c-shared"),
          15: ("W", ("wellbeing",), "p-001")}

CONFIG = """
[access]
groups_claim = "groups"

[access.programmes]
wellbeing = { tags = ["wellbeing"] }

[[access.grants]]
group = "leads-a"
role = "supervisor"
teams = ["A"]

[[access.grants]]
email = "ana@example.com"
role = "analyst"
programmes = ["wellbeing"]

[[access.grants]]
group = "emoscope-admins"
role = "admin"
"""

SUP_A = Viewer("lead-a@example.com", frozenset({"supervisor"}), Scope(teams=frozenset({"A"})))
ANALYST = Viewer("ana@example.com", frozenset({"analyst"}), Scope(tags=frozenset({"wellbeing"})))
ADMIN = Viewer("boss@example.com", frozenset({"admin"}), EVERYTHING)


def results(archive: Path) -> list[SessionResult]:
    out = []
    archive.mkdir(parents=True, exist_ok=True)
    for k, (team, tags, customer) in LAYOUT.items():
        r = call(k, ["neutral", "angry", "neutral", "angry", "sad"], [0, 3, 0, 4, 1], day=k - 8)
        audio = write(archive / f"{r.session_id}.wav", silence(1.0))
        curve = Curve(1, "customer", np.arange(20) * 0.5, np.full((20, 9), 1 / 9, np.float32))
        out.append(dataclasses.replace(
            r, source_path=str(audio), file_name=f"{team}-{k}.wav", curves=(curve,),
            meta=dataclasses.replace(r.meta, team=team, tags=tags, customer_id=customer)))
    return out


def build(folder: Path) -> tuple[Path, dict[str, list[str]]]:
    """(database path, {team: its session ids}); the config is written beside it."""
    db = folder / "emoscope.duckdb"
    store = Store(db)
    store.migrate()
    writer = SessionWriter(store, RULES)
    run = writer.start_run("tiny-random", "", False, "cpu", "engine", {})
    teams: dict[str, list[str]] = {}
    for r in results(folder / "archive"):
        writer.save(r, run)
        teams.setdefault(r.meta.team, []).append(r.session_id)
    (folder / "emoscope.toml").write_text(CONFIG)
    return db, teams
