"""The store's transcripts in a full-text index (SQLite FTS5) beside it, kept equal to the store.

What it holds: every utterance of an ok session — its words (FTS5, unicode61 tokens, positions
kept for phrases), its speaker role, and the emotions of the segments that overlap it on its
channel (a 9-bit mask, core.base.labels order) — in `<db>.words/index.sqlite`. It answers one
question: the newest utterances whose words match. Nothing is read from it as truth: the rows a
search returns are read back from DuckDB through the reader's scope (core.index.word_search).

Order without sorting: an utterance's rowid is its session's date in seconds, shifted left by
20 bits, plus a counter, so FTS5 walks matches newest session first (`ORDER BY rowid DESC` is
its native order) and a date filter is a rowid range.

Kept equal to the store by `sync`: the store's per-session state (session id, ingest time,
number of utterances) against the index's; sessions that differ are deleted and added again,
sessions the store no longer has are deleted. The writer calls it after each commit, erasure
after its rows are gone (then the index is merged and vacuumed so erased words leave the file),
and a reader whose index does not match the store's fingerprint calls it before searching.
"""
from __future__ import annotations

import calendar
import fcntl
import logging
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.base import places
from core.base.labels import LABELS
from core.base.private import private_dir
from core.storage import commit_hooks
from core.storage.store import Store

log = logging.getLogger("emoscope.words")

VERSION = "4"  # the layout below; another value is rebuilt
# unicode61 reads a run of Han characters as one token, so a word inside a Chinese sentence
# could not be found. Each Han character is indexed as a token of its own (a zero-width space,
# a separator to unicode61, on either side), a Chinese word is searched as the phrase of its
# characters (core.index.word_search.parse), and the text is shown without the marks.
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
_HAN_CHAR = re.compile(f"([{HAN}])")
MARK = "\u200b"


def indexed_text(text: str | None) -> str:
    """What the index holds of an utterance's text: each Han character a token of its own."""
    return _HAN_CHAR.sub(MARK + r"\1" + MARK, text or "")
SHIFT = 20  # rowid = (session date in epoch seconds) << SHIFT | n
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS sessions (session_id TEXT PRIMARY KEY, stamp TEXT, n INTEGER);
CREATE TABLE IF NOT EXISTS utt (rowid INTEGER PRIMARY KEY, utterance_id TEXT NOT NULL,
                                session_id TEXT NOT NULL, role TEXT, emo INTEGER NOT NULL,
                                label TEXT, confidence REAL, channel INTEGER, start_s REAL,
                                end_s REAL);
CREATE INDEX IF NOT EXISTS utt_session ON utt (session_id);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5 (text,
    tokenize = 'unicode61 remove_diacritics 2');
"""
# The store's side: one row per ok session that has utterances.
STATE_SQL = ("SELECT u.session_id, s.ingested_at::VARCHAR AS stamp, count(*) AS n "
             "FROM utterances u JOIN sessions s USING (session_id) WHERE s.status = 'ok' "
             "GROUP BY ALL ORDER BY 1")
LABEL_LIST = "[" + ", ".join(f"'{x}'" for x in LABELS) + "]"
OVERLAP = "least(g.end_s, u.end_s) - greatest(g.start_s, u.start_s)"
ROWS_SQL = (
    "SELECT u.utterance_id, any_value(u.session_id) AS session_id, any_value(u.speaker), "
    "any_value(u.text), epoch(any_value(coalesce(s.recorded_at, s.ingested_at)))::BIGINT AS t, "
    f"coalesce(bit_or((1 << (list_position({LABEL_LIST}, g.label) - 1))::INTEGER), 0), "
    f"arg_max(g.label, {OVERLAP}), arg_max(g.confidence, {OVERLAP}), "
    "any_value(u.channel) AS channel, any_value(u.start_s) AS start_s, any_value(u.end_s) "
    "FROM utterances u JOIN sessions s USING (session_id) "
    "LEFT JOIN segments g ON g.session_id = u.session_id AND g.channel = u.channel "
    "AND g.start_s < u.end_s AND g.end_s > u.start_s {where_g} "
    "WHERE s.status = 'ok' {where_u} GROUP BY u.utterance_id "
    # Allocated in this order, walked backwards: newest session first, then (same second) by
    # session id, each session's utterances in the order spoken — the read-back's order.
    "ORDER BY t, session_id DESC, start_s DESC, channel DESC")
# The fingerprint readers compare before searching: cheap (one pass, no grouping), and moved
# by any session added, removed or re-ingested and by any change in its number of utterances.
FINGERPRINT_SQL = ("SELECT count(*)::VARCHAR || ':' || coalesce(sum(hash(s.session_id, "
                   "s.ingested_at)::HUGEINT), 0)::VARCHAR FROM utterances u "
                   "JOIN sessions s USING (session_id) WHERE s.status = 'ok'")
REBUILD_SHARE = 0.5  # past this share of sessions differing, start from an empty index


class NoTranscripts(Exception):
    """The store keeps no transcripts (a store from before speech-to-text): nothing to search."""


def folder_of(db: str | Path) -> Path:
    return places.beside(db, places.WORDS)


def path_of(db: str | Path) -> Path:
    return folder_of(db) / "index.sqlite"


def mask_of(labels) -> int:
    """The emotion mask of some labels (core.base.labels order); unknown labels are refused."""
    out = 0
    for label in labels or ():
        out |= 1 << LABELS.index(label)
    return out


def labels_of(mask: int) -> list[str]:
    return [x for i, x in enumerate(LABELS) if mask >> i & 1]


def rowid_of_time(ts) -> int:
    """The first rowid of sessions dated at or after `ts` (a naive UTC datetime)."""
    return calendar.timegm(ts.timetuple()) << SHIFT


# -- the store's state ------------------------------------------------------------------------
def _require_transcripts(con, store: Store) -> None:
    has = con.execute("SELECT count(*) FROM information_schema.tables "
                      "WHERE table_name = 'utterances'").fetchone()[0]
    if not has:
        raise NoTranscripts(f"{store.path} keeps no transcripts (ingest with --asr to store "
                            "what was said)")


def store_state(store: Store) -> tuple[dict[str, tuple[str, int]], str]:
    """(session_id → (ingest stamp, number of utterances) of every ok session with
    utterances, the fingerprint of them), read in one transaction; NoTranscripts when the store
    has no utterances table."""
    state, fp, _ = _store_state(store)
    return state, fp


def _store_state(store: Store):
    """store_state, and the store's marks (`_marks`) read in the same transaction."""
    with store.read() as con:
        _require_transcripts(con, store)
        con.execute("BEGIN TRANSACTION")
        rows = con.execute(STATE_SQL).fetchall()
        fp = str(con.execute(FINGERPRINT_SQL).fetchone()[0])
        marks = _marks(con, [])
        con.execute("COMMIT")
    return {sid: (stamp, int(n)) for sid, stamp, n in rows}, fp, marks


# -- one commit's sessions --------------------------------------------------------------------
# What the last sync of this process left, per store: the fingerprint it recorded, and the
# store's marks then. The next commit's sync compares the store with them in two cheap reads
# and then replaces only the committed sessions' rows (`_sync_sessions`).
_left: dict[str, tuple[str, int, object]] = {}  # db → (fingerprint, utterances stored, latest)
# Each ok session's share of FINGERPRINT_SQL: its utterances × the hash of (id, ingest time).
SHARE_SQL = ("SELECT u.session_id, any_value(s.ingested_at)::VARCHAR, count(*), "
             "sum(hash(s.session_id, s.ingested_at)::HUGEINT) FROM utterances u "
             "JOIN sessions s USING (session_id) WHERE s.status = 'ok' "
             "AND u.session_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL")
HELD_SHARE_SQL = ("SELECT coalesce(sum(hash(sid, stamp::TIMESTAMP)::HUGEINT * n), 0) FROM "
                  "(SELECT unnest(?::VARCHAR[]) AS sid, unnest(?::VARCHAR[]) AS stamp, "
                  "unnest(?::BIGINT[]) AS n)")


def _marks(con, session_ids: list[str]) -> tuple[int, object, object]:
    """(utterances stored, of any session — counted from DuckDB's row-group statistics; the
    latest ingest of the ok sessions other than `session_ids`, and of all of them — a scan of
    the sessions table only)."""
    return tuple(con.execute(
        "SELECT (SELECT count(*) FROM utterances), (SELECT max(ingested_at) FROM sessions "
        "WHERE status = 'ok' AND NOT list_contains(?::VARCHAR[], session_id)), "
        "(SELECT max(ingested_at) FROM sessions WHERE status = 'ok')",
        [list(session_ids)]).fetchall()[0])


def _sync_sessions(store: Store, session_ids: list[str]) -> Synced | None:
    """Replace only these sessions' rows, and move the recorded fingerprint by their shares;
    None (a full sync is due) unless the index is as this process's last sync left it and
    the store changed since only by this commit: no other session ingested since, and its
    utterances moved by exactly as many rows as these sessions' did."""
    t0 = time.perf_counter()
    db, key = store.path, str(store.path.resolve())
    left = _left.pop(key, None)
    if left is None or not path_of(db).is_file():
        return None
    fp0, rows0, latest0 = left
    count0, sum0 = (int(x) for x in fp0.split(":"))
    with _updating(db):
        try:
            con = connect(db, writable=True)
        except sqlite3.DatabaseError:
            return None
        try:
            meta = dict(con.execute("SELECT k, v FROM meta").fetchall())
            if meta.get("version") != VERSION or meta.get("fingerprint") != fp0:
                return None  # changed by someone else since: compare it with the store
            ids = sorted(set(session_ids))
            held = {sid: (stamp, n) for sid, stamp, n in con.execute(
                "SELECT session_id, stamp, n FROM sessions WHERE session_id IN "
                f"({', '.join('?' * len(ids))})", ids).fetchall()} if ids else {}
            with store.read() as dcon:
                _require_transcripts(dcon, store)
                dcon.execute("BEGIN TRANSACTION")
                shares = dcon.execute(SHARE_SQL, [ids]).fetchall()
                rows, latest, newest = _marks(dcon, ids)
                old = int(dcon.execute(HELD_SHARE_SQL, [list(held), [v[0] for v in held.values()],
                                                        [v[1] for v in held.values()]]
                                       ).fetchone()[0])
                dcon.execute("COMMIT")
            state = {sid: (stamp, int(n)) for sid, stamp, n, _ in shares}
            count = count0 - sum(n for _, n in held.values()) + sum(n for _, n in state.values())
            if (latest is not None and (latest0 is None or latest > latest0)
                    or rows - count != rows0 - count0):
                return None
            fp = f"{count}:{sum0 - old + sum(int(h) for *_, h in shares)}"
            out = Synced(incremental=True)
            con.execute("BEGIN IMMEDIATE")
            try:
                _delete(con, list(held))
                out.removed = len([s for s in held if s not in state])
                out.added = _add(con, store, sorted(state), state)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", [fp])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as e:  # a damaged file: the full sync starts it again
            log.warning("%s: %s; syncing it with the store in full", path_of(db), e)
            return None
        finally:
            con.close()
    _left[key] = (fp, rows, newest)
    out.seconds = time.perf_counter() - t0
    return out


def _delete(con: sqlite3.Connection, session_ids: list[str]) -> None:
    for sid in session_ids:
        con.execute("DELETE FROM fts WHERE rowid IN "
                    "(SELECT rowid FROM utt WHERE session_id = ?)", [sid])
        con.execute("DELETE FROM utt WHERE session_id = ?", [sid])
        con.execute("DELETE FROM sessions WHERE session_id = ?", [sid])


def fingerprint(store: Store) -> str:
    """The store's fingerprint of its transcripts (FINGERPRINT_SQL): what a reader compares
    with the one the index was synced to."""
    with store.read() as con:
        _require_transcripts(con, store)
        return str(con.execute(FINGERPRINT_SQL).fetchone()[0])


# -- the index file ---------------------------------------------------------------------------
def connect(db: str | Path, writable: bool = False) -> sqlite3.Connection:
    """A connection to the index; read-only ones still get temp tables (the allowed set)."""
    path = path_of(db)
    if writable:
        private_dir(path.parent)
        con = sqlite3.connect(path, timeout=30, isolation_level=None)
        # Freed pages are zeroed: erased words do not linger in the file's free space.
        con.execute("PRAGMA secure_delete = ON")
        con.executescript(SCHEMA)
        return con
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30,
                          isolation_level=None, check_same_thread=False)
    return con


def recorded_fingerprint(db: str | Path) -> str | None:
    """The fingerprint the index was last synced to, or None when it is missing or unusable."""
    if not path_of(db).is_file():
        return None
    try:
        con = connect(db)
        try:
            rows = dict(con.execute("SELECT k, v FROM meta").fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return rows.get("fingerprint") if rows.get("version") == VERSION else None


@contextmanager
def _updating(db: str | Path):
    """One updater at a time (the writer, erasure, or a reader repairing a stale index)."""
    lock = private_dir(folder_of(db)) / "update.lock"
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class Synced:
    added: int = 0  # sessions (re)added
    removed: int = 0  # sessions removed
    rebuilt: bool = False
    seconds: float = 0.0
    incremental: bool = False  # only the commit's sessions read (no state of every session)


def sync(store: Store, erased: bool = False, session_ids: list[str] | None = None) -> Synced:
    """Make the index hold exactly the store's utterances (see the module's note); with
    `erased`, also merge the FTS segments and vacuum so deleted words leave the file. With
    `session_ids` (a commit's), only those sessions are read when the store changed by nothing
    else since this process's last sync (`_sync_sessions`); otherwise every session's state."""
    t0 = time.perf_counter()
    out = Synced()
    if session_ids is not None and not erased:
        done = _sync_sessions(store, session_ids)
        if done is not None:
            return done
    state, fp, (rows, _, newest) = _store_state(store)
    db = store.path
    _left.pop(str(db.resolve()), None)
    with _updating(db):
        try:
            con = connect(db, writable=True)
        except sqlite3.DatabaseError as e:  # a corrupt file is of no use to anyone: start again
            log.warning("%s: %s; rebuilding it from the store", path_of(db), e)
            path_of(db).unlink(missing_ok=True)
            con = connect(db, writable=True)
        meta = dict(con.execute("SELECT k, v FROM meta").fetchall())
        held = {sid: (stamp, n) for sid, stamp, n in
                con.execute("SELECT session_id, stamp, n FROM sessions").fetchall()}
        stale = sorted(s for s in held if state.get(s) != held[s])
        # Another layout, or most of it changed: a new file is quicker than deleting rows.
        out.rebuilt = meta.get("version", VERSION) != VERSION or (
            len(stale) > REBUILD_SHARE * max(len(held), 1) and len(stale) > 100)
        if out.rebuilt:
            con.close()
            path_of(db).unlink(missing_ok=True)
            con = connect(db, writable=True)
            held, stale = {}, []
        fresh = sorted(s for s in state if held.get(s) != state[s])
        try:
            con.execute("BEGIN IMMEDIATE")
            _delete(con, stale)
            out.removed = len([s for s in stale if s not in state])
            out.added = _add(con, store, fresh, state,
                             everything=bool(fresh) and len(fresh) == len(state))
            con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                            [("version", VERSION), ("fingerprint", fp)])
            con.execute("COMMIT")
            if erased:
                con.execute("INSERT INTO fts(fts) VALUES ('optimize')")
                con.execute("VACUUM")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()
    _left[str(db.resolve())] = (fp, rows, newest)
    out.seconds = time.perf_counter() - t0
    return out


def _add(con: sqlite3.Connection, store: Store, session_ids: list[str],
         state: dict[str, tuple[str, int]], batch: int = 2000, everything: bool = False) -> int:
    """Insert these sessions' utterances, read from the store in batches of sessions (with
    `everything`, all of the store's in one streamed read: the index starts empty)."""
    next_free: dict[int, int] = {}

    def insert(rows) -> None:
        utt, fts = [], []
        for utterance_id, sid, role, text, t, emo, label, confidence, ch, start, end in rows:
            base = int(t) << SHIFT
            if base not in next_free:
                top = con.execute("SELECT max(rowid) FROM utt WHERE rowid >= ? AND rowid < ?",
                                  [base, base + (1 << SHIFT)]).fetchone()[0]
                next_free[base] = base if top is None else top + 1
            utt.append((next_free[base], utterance_id, sid, role, int(emo), label, confidence,
                        ch, start, end))
            fts.append((next_free[base], indexed_text(text)))
            next_free[base] += 1
        con.executemany("INSERT INTO utt VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", utt)
        con.executemany("INSERT INTO fts(rowid, text) VALUES (?, ?)", fts)

    if everything:
        with store.read() as dcon:
            reader = dcon.sql(ROWS_SQL.format(where_u="", where_g="")).to_arrow_reader(50_000)
            for rb in reader:
                insert(zip(*(rb.column(i).to_pylist() for i in range(rb.num_columns))))
    else:
        for lo in range(0, len(session_ids), batch):
            part = session_ids[lo:lo + batch]
            with store.read() as dcon:
                # Both sides filtered: the segments' scan is pruned to these sessions' row groups.
                where = "AND {}.session_id IN (SELECT unnest($ids::VARCHAR[]))"
                insert(dcon.execute(ROWS_SQL.format(where_u=where.format("u"),
                                                    where_g=where.format("g")),
                                    {"ids": part}).fetchall())
    con.executemany("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)",
                    [(s, *state[s]) for s in session_ids])
    return len(session_ids)


def _after_commit(store: Store, c: commit_hooks.Committed) -> Synced | None:
    try:
        return sync(store, session_ids=list(c.session_ids))
    except NoTranscripts:  # a store of older versions, before transcripts: nothing to index
        return None


commit_hooks.register(commit_hooks.CommitHook("words", after=_after_commit))
