"""Search by words across calls: what was said, with who said it, how it sounded, and when.

The query language (`parse`):
    refund                      the word (any case, accents ignored)
    refund credit               both words in one utterance
    "cancel my account"         the phrase, its words in that order
    refund OR credit            either; OR binds tighter than the implicit AND:
                                `charged twice OR double` = charged AND (twice OR double)
    refund*                     words starting with refund (refunds, refunded)
    退款                        a Chinese word: its characters in that order, anywhere in a
                                sentence (each Han character is a token of the index)
Filters (`Filters`): speaker role, emotion (any segment overlapping the utterance on its
channel has it), team, agent, person, dates.

How it runs: the words, role and emotion go to the full-text index (core.index.word_index), which
walks its matches newest first; the sessions a match may come from are decided in SQL by
`Reader._sessions_where` (the reader's scope, team, agent, person, dates) and handed to the
index as the only ones it may return, and a hit shows its session's date, team, agent and
file from that same read. That read, and the index's comparison with the store's fingerprint
(synced when it differs), are made once per store version (a commit moves it), so an erased
session or a changed scope shows at the next search.
"""
from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import pandas as pd

from core.index import word_index
from core.base.keyed import pseudonym
from core.base.labels import LABELS
from core.storage.queries import Reader, SessionFilter
from core.storage.store import Store, file_version
from core.base.times import as_timestamp

MAX_QUERY = 200  # characters
MAX_TERMS = 16
MAX_LIMIT = 200
HIT_COLUMNS = ["utterance_id", "session_id", "channel", "speaker", "start_s", "end_s", "text",
               "label", "confidence", "labels", "when", "team", "agent_id", "file_name"]
MATCH_COLUMNS = ["utterance_id", "session_id", "channel", "speaker", "start_s", "end_s", "text",
                 "label", "confidence", "emo"]
_TOKEN = re.compile(r'"([^"]*)"?|(\S+)')
_WORD = re.compile(r"\w+", re.UNICODE)
_PIECE = re.compile(f"[{word_index.HAN}]|[^{word_index.HAN}]+")
_HAN_ONLY = re.compile(f"[{word_index.HAN}]")


def _pieces(word: str) -> list[str]:
    """A word as the index tokenised it: each Han character alone, other runs whole."""
    return _PIECE.findall(word)


class QueryError(ValueError):
    """A query that cannot be searched; the message says why in one line."""


@dataclass(frozen=True)
class Term:
    words: tuple[str, ...]  # one word, or a phrase's words in order
    prefix: bool = False

    def fts(self) -> str:
        quoted = '"' + " ".join(self.words).replace('"', '""') + '"'
        return quoted + (" *" if self.prefix else "")

    def __str__(self) -> str:
        s = " ".join(self.words)
        return (f'"{s}"' if len(self.words) > 1 else s) + ("*" if self.prefix else "")


@dataclass(frozen=True)
class Query:
    """All of `groups` must match; within a group, any of its terms."""
    groups: tuple[tuple[Term, ...], ...]

    def fts(self) -> str:
        """The FTS5 MATCH expression: every term a quoted string, so no word of the user's
        is ever read as FTS5 syntax (a column filter, NEAR, a bare operator)."""
        return " AND ".join("(" + " OR ".join(t.fts() for t in g) + ")" for g in self.groups)

    @property
    def n_terms(self) -> int:
        return sum(len(g) for g in self.groups)

    def __str__(self) -> str:
        return " ".join(" OR ".join(str(t) for t in g) for g in self.groups)


def parse(text: str) -> Query:
    """The query language in the module's note; QueryError for an empty or oversized one."""
    text = (text or "").strip()
    if len(text) > MAX_QUERY:
        raise QueryError(f"a query of at most {MAX_QUERY} characters, not {len(text)}")
    groups: list[list[Term]] = []
    join_next = False
    for m in _TOKEN.finditer(text):
        phrase, bare = m.group(1), m.group(2)
        if bare == "OR":
            join_next = bool(groups)
            continue
        raw = phrase if phrase is not None else bare
        prefix = phrase is None and raw.endswith("*")
        words = tuple(piece for w in _WORD.findall(raw) for piece in _pieces(w.lower()))
        if not words:
            continue  # punctuation alone, or an empty phrase
        if phrase is None and len(words) > 1:  # a Chinese word: the phrase of its characters
            prefix = prefix and not _HAN_ONLY.fullmatch(words[-1])
        term = Term(words, prefix and (len(words) == 1 or phrase is None))
        if join_next:
            groups[-1].append(term)
        else:
            groups.append([term])
        join_next = False
    if not groups:
        raise QueryError("give at least one word to search for")
    q = Query(tuple(tuple(g) for g in groups))
    if q.n_terms > MAX_TERMS:
        raise QueryError(f"at most {MAX_TERMS} words or phrases, not {q.n_terms}")
    return q


def audit_target(q: Query, key: bytes) -> str:
    """How a search is named in the audit: a keyed pseudonym of the normalised query
    (core.base.keyed, with the store's secret), never its words — what was searched for can be
    personal, and a bare hash of a short query is reversed by trying the likely ones. An
    auditor who suspects a query computes its pseudonym with the same secret."""
    return "words " + pseudonym(key, str(q), text=True)


@dataclass(frozen=True)
class Filters:
    roles: tuple[str, ...] = ()
    emotions: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    agent: str | None = None
    person: str | None = None
    since: str | None = None  # a day or time; `until` exclusive
    until: str | None = None
    categories: tuple[str, ...] = ()  # sessions carrying any of them (core/analysis/categories)

    def check(self) -> None:
        bad = sorted(set(self.emotions) - set(LABELS))
        if bad:
            raise QueryError(f"unknown emotion {', '.join(bad)}: one of {', '.join(LABELS)}")
        for name, v in (("since", self.since), ("until", self.until)):
            if v is not None and as_timestamp(v) is None:
                raise QueryError(f"{name}: a date like 2026-11-02, not {str(v)[:40]!r}")

    def names(self) -> list[str]:
        """Which filters were given (their names only: values such as a person's id are
        not written to the audit)."""
        return [k for k, v in self.__dict__.items() if v]

    @property
    def narrows_sessions(self) -> bool:
        return bool(self.teams or self.agent or self.person or self.since or self.until
                    or self.categories)


@dataclass(frozen=True)
class Found:
    hits: pd.DataFrame  # HIT_COLUMNS, newest session first, then by time in the session
    more: bool  # more matches than `limit` exist
    seconds: float = 0.0
    query: str = ""  # the query as understood (core.index.word_search.Query's text)
    sessions: list[str] = field(default_factory=list)
    terms: int = 0


# -- the index, checked against the store once per commit --------------------------------------
_lock = threading.Lock()
_checked: dict[str, tuple] = {}  # db → the store version whose fingerprint matched the index


def _version(store: Store) -> tuple:
    return file_version(store.path)


def ready_index(store: Store) -> None:
    """Make sure the index matches the store before it is searched: compared once per store
    version (a commit moves it), synced from the store when missing, stale or corrupt."""
    key, version = str(store.path.resolve()), _version(store)
    with _lock:
        if _checked.get(key) == version and word_index.path_of(store.path).is_file():
            return
        if word_index.recorded_fingerprint(store.path) != word_index.fingerprint(store):
            word_index.sync(store)
        _checked[key] = version


_KEPT = 32
_sessions_kept: OrderedDict = OrderedDict()  # (db, version, scope, filter, teams) → sessions


def _sessions_key(reader: Reader, sf: SessionFilter, teams: tuple) -> tuple:
    return (str(reader.store.path.resolve()), _version(reader.store), reader.viewer.scope, sf,
            tuple(sorted(teams)))


def _sessions(reader: Reader, sf: SessionFilter, teams: tuple) -> pd.DataFrame:
    """The sessions the reader's scope and the filters admit, with what a hit shows of them
    (Reader.search_sessions), indexed by session id and kept per store version: they change
    only with a commit (as the dashboard's cached reads), so a search between commits opens
    no store connection (~10 ms on an idle machine, ~60 ms on a busy one)."""
    key = _sessions_key(reader, sf, teams)
    with _lock:
        got = _sessions_kept.get(key)
        if got is not None:
            _sessions_kept.move_to_end(key)
            return got
    got = reader.search_sessions(sf, teams).set_index("session_id")
    with _lock:
        _sessions_kept[key] = got
        while len(_sessions_kept) > _KEPT:
            _sessions_kept.popitem(last=False)
    return got


def _match(store: Store, q: Query, f: Filters, allowed: list[str] | None,
           limit: int, key: tuple) -> list[tuple]:
    """The newest matches with what the index keeps of them (MATCH_COLUMNS), from the index
    (its role, emotion and date filters, and the allowed sessions when given)."""
    where, params = ["fts MATCH ?"], [q.fts()]
    for op, v in ((">=", f.since), ("<", f.until)):
        ts = as_timestamp(v)
        if ts is not None:
            where.append(f"fts.rowid {op} ?")
            params.append(word_index.rowid_of_time(ts))
    if f.roles:
        where.append(f"u.role IN ({', '.join('?' * len(f.roles))})")
        params += list(f.roles)
    if f.emotions:
        where.append("(u.emo & ?) != 0")
        params.append(word_index.mask_of(f.emotions))
    if allowed is not None:
        where.append("u.session_id IN (SELECT session_id FROM temp.allowed)")
    con, lock = _connection(store, key, allowed)
    with lock:
        return con.execute(
            "SELECT u.utterance_id, u.session_id, u.channel, u.role, u.start_s, u.end_s, "
            f"replace(fts.text, '{word_index.MARK}', ''), u.label, u.confidence, u.emo FROM fts "
            f"JOIN utt u ON u.rowid = fts.rowid WHERE {' AND '.join(where)} "
            "ORDER BY fts.rowid DESC LIMIT ?", [*params, int(limit)]).fetchall()


_CONNECTIONS_KEPT = 8
_connections: OrderedDict = OrderedDict()  # (index file, sessions' key) → (connection, lock)


def _connection(store: Store, key: tuple, allowed: list[str] | None):
    """A read-only connection to the index whose temp table holds `allowed`, kept per store
    version, scope and filters like the sessions themselves: filling the table costs ~10 µs a
    session (over 100 ms for a team's 12,500), so it is paid once per commit, not per search.
    The index file's inode is in the key: a rebuilt file is a new one."""
    try:
        inode = word_index.path_of(store.path).stat().st_ino
    except FileNotFoundError:
        inode = 0
    full = (inode, key if allowed is not None else key[:2])
    with _lock:
        got = _connections.get(full)
        if got is not None:
            _connections.move_to_end(full)
            return got
    con = word_index.connect(store.path)
    if allowed is not None:
        con.execute("PRAGMA temp_store = MEMORY")
        con.execute("CREATE TEMP TABLE allowed (session_id TEXT PRIMARY KEY) WITHOUT ROWID")
        con.execute("BEGIN")  # one transaction: a commit per row would cost ~10 µs each
        con.executemany("INSERT OR IGNORE INTO allowed VALUES (?)", [(s,) for s in allowed])
        con.execute("COMMIT")
    got = (con, threading.Lock())
    with _lock:
        _connections[full] = got
        while len(_connections) > _CONNECTIONS_KEPT:
            old, old_lock = _connections.popitem(last=False)[1]
            with old_lock:  # a search still running on it finishes first
                old.close()
    return got


def audit_detail(found: Found, filters: Filters) -> dict:
    """What the audit keeps of a search: how many terms, which filters (names only), and the
    sessions whose words were shown."""
    return {"terms": found.terms, "filters": filters.names(),
            "hits": len(found.hits), "sessions": found.sessions}


def hit_record(row: dict) -> dict:
    """One hit as JSON-ready values (the CLI's --json and the API)."""
    out = {}
    for c in HIT_COLUMNS:
        v = row.get(c)
        if c == "labels":
            v = [str(x) for x in (v if v is not None else [])]
        elif isinstance(v, pd.Timestamp):
            v = None if pd.isna(v) else v.isoformat()
        elif v is not None and not isinstance(v, str) and pd.isna(v):
            v = None
        elif hasattr(v, "item"):
            v = v.item()
        out[c] = v
    return out


def search(reader: Reader, text: str | Query, filters: Filters = Filters(),
           limit: int = 50) -> Found:
    """The newest `limit` utterances matching `text` that the reader may see and the filters
    admit (QueryError for a bad query or filter; word_index.NoTranscripts for a store without
    transcripts)."""
    t0 = time.perf_counter()
    q = text if isinstance(text, Query) else parse(text)
    filters.check()
    limit = max(1, min(int(limit), MAX_LIMIT))
    store = reader.store
    ready_index(store)
    sf = SessionFilter(agent=filters.agent, person=filters.person, since=filters.since,
                       until=filters.until, categories=tuple(filters.categories) or None)
    sessions = _sessions(reader, sf, filters.teams)
    # The index may match only in these sessions (all of them: no need to say so).
    allowed = None if reader.viewer.scope.everything and not filters.narrows_sessions \
        else list(sessions.index)
    found = [] if allowed == [] else _match(store, q, filters, allowed, limit + 1,
                                            _sessions_key(reader, sf, filters.teams))
    hits = pd.DataFrame(found[:limit], columns=MATCH_COLUMNS)
    hits["labels"] = [word_index.labels_of(m) for m in hits.emo]
    # A hit of a session the store no longer has (an index that lags a commit) is left out.
    hits = hits.merge(sessions, left_on="session_id", right_index=True, how="inner")
    hits = hits.reset_index(drop=True)
    hits = hits.sort_values(["when", "session_id", "start_s", "channel"],
                            ascending=[False, True, True, True], kind="stable")
    hits = hits[HIT_COLUMNS].reset_index(drop=True)
    return Found(hits, len(found) > limit, time.perf_counter() - t0, str(q),
                 sorted(set(hits.session_id)), q.n_terms)
