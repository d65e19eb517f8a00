"""A store with two teams of calls and one programme of diaries, their recordings in the
worker's archive, and an emoscope.toml that grants each kind of user its part."""
from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
from pathlib import Path

import duckdb
import numpy as np

from core.guard.access import EVERYTHING, Scope, Viewer
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from core.base.types import Curve, SessionResult, Utterance, utterance_id_for
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


# What the customer says in each of a call's five turns (segments neutral, angry, neutral,
# angry, sad), and the agent's reply after each: word search finds them within a scope.
CUSTOMER_LINES = ["hello I was charged twice this month", "I want a refund right now",
                  "the payment went out on the first", "this is the third time I am calling",
                  "fine I will wait for the refund"]
AGENT_LINES = ["let me check your billing history", "I can refund the duplicate payment",
               "I see both payments here", "I am sorry about that", "thank you for waiting"]


def transcript(session_id: str, team: str) -> tuple[Utterance, ...]:
    """The call's turns as utterances; team B's customer also asks to cancel."""
    out = []
    for i, (said, reply) in enumerate(zip(CUSTOMER_LINES, AGENT_LINES)):
        if team == "B" and i == 3:
            said = "please cancel my account"
        out.append(Utterance(utterance_id_for(session_id, 1, i), 1, "customer", 10.0 * i + 0.5,
                             10.0 * i + 5.5, said, "en", 0.9, "test"))
        out.append(Utterance(utterance_id_for(session_id, 0, i), 0, "agent", 10.0 * i + 6.2,
                             10.0 * i + 8.8, reply, "en", 0.9, "test"))
    return tuple(out)


def results(archive: Path) -> list[SessionResult]:
    out = []
    archive.mkdir(parents=True, exist_ok=True)
    for k, (team, tags, customer) in LAYOUT.items():
        r = call(k, ["neutral", "angry", "neutral", "angry", "sad"], [0, 3, 0, 4, 1], day=k - 8)
        audio = write(archive / f"{r.session_id}.wav", silence(1.0))
        curve = Curve(1, "customer", np.arange(20) * 0.5, np.full((20, 9), 1 / 9, np.float32))
        out.append(dataclasses.replace(
            r, source_path=str(audio), file_name=f"{team}-{k}.wav", curves=(curve,),
            utterances=transcript(r.session_id, team),
            meta=dataclasses.replace(r.meta, team=team, tags=tags, customer_id=customer)))
    return out


def _fresh(folder: Path) -> tuple[Path, dict[str, list[str]]]:
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


_template: tuple[Path, dict[str, list[str]]] | None = None


def build(folder: Path) -> tuple[Path, dict[str, list[str]]]:
    """(database path, {team: its session ids}); the config is written beside it.

    Written once per test process and copied: eight test files build it, some per test. The
    recordings' paths are the only place the folder is named inside the store."""
    global _template
    if _template is None:
        _template = _fresh(Path(tempfile.mkdtemp(prefix="emoscope-scope-")) / "data")
        atexit.register(shutil.rmtree, _template[0].parent.parent, True)
    relocate(_template[0].parent, folder)
    return folder / _template[0].name, {team: list(ids) for team, ids in _template[1].items()}


def relocate(template: Path, folder: Path) -> None:
    """Copy a store's folder and rename the folder wherever it is written down: the store's
    text columns (recordings' paths) and the JSON beside it (the audit spool's export paths)."""
    shutil.copytree(template, folder, dirs_exist_ok=True)
    old, new = str(template), str(folder)
    with duckdb.connect(str(folder / "emoscope.duckdb")) as con:
        for table, column in con.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE data_type = 'VARCHAR'").fetchall():
            con.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f'WHERE contains("{column}", ?)', [old, new, old])
    for f in folder.rglob("*.json*"):
        text = f.read_text()
        if old in text:
            f.write_text(text.replace(old, new))
