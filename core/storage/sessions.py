"""Writing sessions: runs, and analysed recordings with their derived analytics.

`SessionWriter` is the one way rows get into sessions, channels, segments and frames. It always
writes the analytics (core.storage.derived) in the same transaction, so no caller can store a session
without its metrics and alerts, and a crash leaves either all of it or none. Sessions go in
groups (`save_many`): one transaction and one bulk insert per table for the group, analytics
computed in ingest order exactly as saving them one at a time would. The Arrow tables a group
is inserted as are built in core.storage.group_tables.
"""
from __future__ import annotations

import json
import logging
import uuid
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from core.storage import analysers, commit_hooks, derived, heads
from core.analysis.analytics import GroupSegments, GroupSession
from core.base.labels import LABELS
from core.base.names import shown
from core.analysis.rules import Rules
from core.storage.group_tables import (SEGMENT_KEY, analysis_table, channel_table, frame_table,
                                       ids_table, insert, segment_arrow, segment_blocks,
                                       session_table, with_fused)
from core.storage.store import Connection, Store
from core.base.times import utc_now
from core.text.transcripts import event_table, utterance_table, word_table
from core.base.types import KnownAudio, SessionResult
from core.storage.vector_keys import keys_for

log = logging.getLogger("emoscope.store")

FRAME_COLUMNS = ", ".join(LABELS)
# Deleted child tables first, sessions last.
SESSION_TABLES = ("segment_patterns", "session_categories", "alerts", "session_metrics",
                  "audio_events", "words",
                  "utterances", "frames", "segments", "channels", "sessions")


def session_tables() -> list[str]:
    """Every table holding a session's rows: the analysers' tables (core.storage.analysers), then
    SESSION_TABLES — what a re-save replaces and an erasure deletes."""
    return [t.name for t in analysers.tables()] + list(SESSION_TABLES)


RUN_STATUSES = ("running", "finished", "interrupted")

# A group at least this large is checkpointed without DuckDB's row-group vacuum, which merges
# the tables' small row groups into full ones by rewriting them (the segments' embeddings
# most): over 16 commits of 64 sessions it rewrote them at commits 4, 8, 12 and 16, each
# time more (0.24, 0.48, 0.25, 0.81 s of CPU), 2.6 s in all against 1.3 s without; in groups
# of 128, 1,024 sessions took 3.1 s against 1.2 s and the file came out 157 MiB against 231.
# Such a group writes row groups of 1,500 segments and more; reads pay a little for them
# (1,024 sessions in 8 segment row groups instead of 1: a scan of every embedding 298 ms
# against 259, a per-label count 2.5 ms against 1.2, a session's rows by id the same; a
# shared 2-core machine at load 9). The small commits (the worker's one session) keep the
# vacuum, or their row groups would be tiny.
BULK = 32

InTransaction = Callable[[Connection, str], None]  # (connection, session_id)


class SessionWriter:
    def __init__(self, store: Store, rules: Rules, audio_root: str | Path | None = None):
        self.store, self.rules = store, rules
        self.audio_root = audio_root
        self._saved_ok: set[str] = set()  # audio stored ok since the last start_run
        self.last_index_update: dict | None = None  # what the last save did to the ANN index

    # -- runs -----------------------------------------------------------------------------
    def start_run(self, model: str, model_path: str, trained: bool, device: str,
                  engine: str, options: dict, asr: str | None = None,
                  weights: str = "") -> str:
        """A run's record: its emotion model and, `asr`, its speech-to-text backend (None when
        the run transcribed nothing). `model` is the model's one name (core.base.models) and
        `weights` its weights' hash: weights the store already knows keep the name they were
        first stored under, so one set of weights is one model however it was given."""
        run_id = f"r{utc_now():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
        self._saved_ok = set()
        with self.store.write() as con:
            if weights:
                known = con.execute("SELECT model FROM runs WHERE weights = ? "
                                    "ORDER BY started_at LIMIT 1", [weights]).fetchall()
                model = known[0][0] if known else model
            con.execute("INSERT INTO runs (run_id, model, model_path, trained, device, engine, "
                        "options, started_at, status, asr, weights) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                        [run_id, model, shown(model_path), trained, device, engine,
                         json.dumps(options, sort_keys=True, default=str), utc_now(), asr,
                         weights or None])
        return run_id

    def finish_run(self, run_id: str, n_ok: int, n_failed: int, n_skipped: int,
                   audio_s: float, status: str = "finished") -> None:
        """Counts so far and how the run ended: finished, interrupted, or still running (the
        worker keeps its run current after every job)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, not {status!r}")
        with self.store.write() as con:
            con.execute("UPDATE runs SET finished_at = ?, n_ok = ?, n_failed = ?, n_skipped = ?, "
                        "audio_s = ?, status = ? WHERE run_id = ?",
                        [utc_now(), n_ok, n_failed, n_skipped, audio_s, status, run_id])

    # -- "already stored?" ----------------------------------------------------------------
    def status_of(self, sha256: str) -> str | None:
        """'ok', 'failed' or None for audio with this hash."""
        if not self.store.exists():
            return None
        with self.store.write() as con:  # the writer asks; a read-only open would fight its own lock
            row = con.execute("SELECT status FROM sessions WHERE sha256 = ? "
                              "ORDER BY status = 'ok' DESC LIMIT 1", [sha256]).fetchone()
        return row[0] if row else None

    def already_stored(self, sha256: str) -> bool:
        return self.status_of(sha256) == "ok"

    def saved_this_run(self, sha256: str) -> bool:
        """Stored ok since this writer's run started (two copies of one recording in one
        batch: the later one is skipped)."""
        return sha256 in self._saved_ok

    def known_audio(self) -> KnownAudio:
        """Every stored ok session's audio hash at once, for runs that ask about many files."""
        if not self.store.exists():
            return KnownAudio(self._saved_ok)
        with self.store.write() as con:
            rows = con.execute("SELECT DISTINCT sha256 FROM sessions WHERE status = 'ok'").fetchall()
        return KnownAudio([r[0] for r in rows] + list(self._saved_ok))

    def audio_status(self) -> dict[str, str]:
        """Every stored audio hash with its best status ('ok' over 'failed'), at once."""
        if not self.store.exists():
            return {}
        with self.store.write() as con:
            rows = con.execute("SELECT sha256, bool_or(status = 'ok') FROM sessions "
                               "GROUP BY sha256").fetchall()
        return {sha: "ok" if good else "failed" for sha, good in rows}

    # -- sessions -------------------------------------------------------------------------
    def save(self, result: SessionResult, run_id: str | None,
             also: InTransaction | None = None) -> bool:
        """Replace everything stored for this session, analytics included, in one transaction.

        A failed result never overwrites a session stored as ok (returns False then): what is
        stored stays whole. `also(con, session_id)` runs last inside the same transaction (the
        worker marks its job done there).
        """
        return self.save_many([result], run_id, [also])[0]

    def save_many(self, results: Sequence[SessionResult], run_id: str | None,
                  also: Sequence[InTransaction | None] | None = None) -> list[bool]:
        """`save` for a group of sessions in one transaction; each True where it was stored.

        The sessions are stored in the order given, each with its own ingest time, so the
        analytics (which compare a session with those ingested before it) are the rows that
        saving them one by one would write. The same audio twice in a group: the later wins,
        as it would one at a time.
        """
        results = list(results)
        hooks = list(also) if also is not None else [None] * len(results)
        stored = [False] * len(results)
        gone: list[str] = []  # segment ids the replaced sessions had
        with ExitStack() as held:  # e.g. readers wait for the similarity index to catch up
            for h in commit_hooks.hooks().values():
                if h.holding is not None:
                    held.enter_context(h.holding(self.store))
            return self._save_many(results, run_id, hooks, stored, gone)

    def _save_many(self, results, run_id, hooks, stored, gone) -> list[bool]:
        with self.store.write() as con:
            if len(results) >= BULK:
                con.execute("SET max_vacuum_tasks = 0")  # this connection's checkpoint only
            base = utc_now()
            runs = _runs_without_repeats([r.session_id for r in results])
            held: list = []  # (segment ids, embeddings) of what each group stored
            for lo, hi in runs:
                stored[lo:hi] = _save_group(con, results[lo:hi], run_id, base, lo, self.rules,
                                             self.audio_root, gone, held=held)
            for result, hook in zip(results, hooks):
                if hook is not None:
                    hook(con, result.session_id)
        self._saved_ok.update(r.sha256 for r, s in zip(results, stored) if s and r.status == "ok")
        if any(stored):  # one index update for the whole group
            ids = sorted({r.session_id for r, s in zip(results, stored) if s})
            # The stored embeddings go to the index as held, unless a session came twice (a
            # later group replaced an earlier one's rows): then the index reads them back.
            vectors = None if len(runs) > 1 or len(held) != 1 else (
                keys_for(held[0][0]), held[0][1])
            self.update_index(ids, keys_for(gone), vectors)
            if _words_changed([r for r, s in zip(results, stored) if s], gone):
                self.update_words(ids)
        return stored

    def update_index(self, session_ids: list[str], gone_keys: np.ndarray,
                     vectors: tuple[np.ndarray, np.ndarray] | None = None) -> dict | None:
        """After a commit: the ANN index beside the store takes the saved sessions' rows in
        place of `gone_keys` (the "vectors" commit hook, core.index.segment_index). The rows
        are stored whatever happens here: a failure leaves the index stale, and a stale index
        is repaired or rebuilt before use."""
        hook = commit_hooks.hooks().get("vectors")
        try:
            self.last_index_update = hook and hook.after(self.store, commit_hooks.Committed(
                session_ids, gone_keys, vectors))
        except Exception as e:  # the commit stands; the index catches up on its next check
            log.warning("the similarity index was not updated (%s); it is rebuilt from the "
                        "store when next opened", e)
            self.last_index_update = None
        return self.last_index_update

    def update_words(self, session_ids: list[str]) -> None:
        """After a commit: the word index beside the store (the "words" commit hook,
        core.index.word_index) takes the saved sessions' transcripts. As with the ANN index, a
        failure leaves it stale, and a stale one is synced from the store before any search
        uses it."""
        hook = commit_hooks.hooks().get("words")
        try:
            hook and hook.after(self.store, commit_hooks.Committed(
                session_ids, np.zeros(0, np.uint64)))
        except Exception as e:  # the commit stands
            log.warning("the word index was not updated (%s); it is synced from the store "
                        "before the next search", e)


def _words_changed(saved: list[SessionResult], gone: list[str]) -> bool:
    """Whether a commit can have changed the transcripts the word index holds: it stored
    some, or replaced sessions that had speech (transcripts come from segments). Otherwise
    the index is as equal to the store as it was, and its sync (a read of every session's
    transcript state) is skipped; a stale index is synced before any search anyway."""
    return bool(gone) or any(r.utterances for r in saved)


def _runs_without_repeats(ids: list[str]) -> list[tuple[int, int]]:
    """Consecutive (lo, hi) slices in which no session id appears twice."""
    out, lo, seen = [], 0, set()
    for i, sid in enumerate(ids):
        if sid in seen:
            out.append((lo, i))
            lo, seen = i, set()
        seen.add(sid)
    if lo < len(ids):
        out.append((lo, len(ids)))
    return out


def _save_group(con: Connection, results: list[SessionResult], run_id: str | None,
                base, first_pos: int, rules: Rules, audio_root, gone: list[str],
                held: list | None = None) -> list[bool]:
    """One group (no session twice) in bulk: one query for what is stored under its ids, the
    analytics of its ok sessions computed from memory in one pass (core.analysis.analytics
    .analyze_group), then one Arrow insert per table — the segments already carrying their
    rolling volatility and fallback action."""
    # (A failed statement aborts the transaction and Store.write rolls it back; registered
    # tables belong to this connection, which closes then, so none is unregistered on error.)
    con.register("ids_tbl", ids_table([r.session_id for r in results]))
    stored = dict(con.execute("SELECT session_id, status FROM sessions WHERE session_id IN "
                              "(SELECT session_id FROM ids_tbl)").fetchall())
    con.unregister("ids_tbl")
    # A failed result never replaces a stored ok session.
    keep = [r.status == "ok" or stored.get(r.session_id) != "ok" for r in results]
    kept = [(first_pos + i, r) for i, (r, k) in enumerate(zip(results, keep)) if k]
    if not kept:
        return keep
    # Rows go only with their session's row (every writer and erasure keeps it so): sessions
    # never stored have nothing to delete, and a new group scans no table for them.
    replaced = [r.session_id for _, r in kept if r.session_id in stored]
    if replaced:
        con.register("del_tbl", ids_table(replaced))
        gone += [row[0] for row in con.execute(  # their rows in the ANN index go too
            "SELECT segment_id FROM segments WHERE session_id IN "
            "(SELECT session_id FROM del_tbl)").fetchall()]
        for table in session_tables():
            con.execute(f"DELETE FROM {table} WHERE session_id IN "
                        "(SELECT session_id FROM del_tbl)")
        con.unregister("del_tbl")
    ok = [r for _, r in kept if r.status == "ok"]
    first_ok = next((pos for pos, r in kept if r.status == "ok"), 0)
    blocks = segment_blocks(ok) if any(r.segments for r in ok) else ([], None, None)
    # The active head labels new sessions too (core/storage/heads), before their analytics.
    head_cols = {}
    if blocks[0]:
        labelled, head_cols = heads.label_new(con, blocks[0], blocks[2], run_id)
        blocks = (labelled, blocks[1], blocks[2])
        if held is not None:
            held.append(([s.segment_id for _, s in blocks[0]], blocks[2]))
    analysis = derived.analyse(con, [_group_session(r, rules) for r in ok],
                               _group_segments(ok, *blocks),
                               base + timedelta(microseconds=first_ok))
    insert(con, "sessions", session_table(kept, run_id, base, audio_root))
    if any(r.channels for r in ok):
        insert(con, "channels", channel_table(ok))
    if blocks[0]:
        insert(con, "segments", segment_arrow(*blocks, {
            "rolling_volatility": pa.array(analysis.rolling_volatility, pa.float64(),
                                           from_pandas=True),
            "fallback_action": pa.array(analysis.fallback_action, pa.string()), **head_cols},
            keys=False), casts={"scores": "FLOAT[9]", "embedding": "FLOAT[]"},
            computed=SEGMENT_KEY)
    if any(r.curves for r in ok):
        insert(con, "frames", frame_table(ok))
    if any(r.utterances for r in ok):
        insert(con, "utterances", with_fused(utterance_table(ok), analysis.fused))
        if any(u.words for r in ok for u in r.utterances):
            insert(con, "words", word_table(ok))
    if any(r.audio_events for r in ok):
        insert(con, "audio_events", event_table(ok))
    for t in analysers.tables():
        if any(r.analyses.get(t.name) for r in ok):
            insert(con, t.name, analysis_table(ok, t))
    derived.insert(con, analysis)
    return keep


def _group_session(r: SessionResult, rules: Rules) -> GroupSession:
    return GroupSession(r.session_id, r.duration_s, rules.for_session(r.meta.team, r.meta.tags),
                        [(c.speaker, tuple(c.flags)) for c in
                         sorted(r.channels, key=lambda c: c.channel)], r.utterances)


def _group_segments(results: list[SessionResult], segs: list, scores, emb) -> GroupSegments:
    """The analytics' view of `segment_blocks`: arrays, the scores widened from float32 as a
    read of the store would give them (the embeddings stay float32: the analytics widen them
    a block at a time)."""
    n = len(segs)
    counts = [len(r.segments) for r in results]
    has_emb = emb is not None and emb.ndim == 2 and emb.shape[1] > 0
    obj = (lambda values: np.array(values, dtype=object) if values else np.zeros(0, object))
    return GroupSegments(
        segment_id=obj([s.segment_id for _, s in segs]),
        channel=np.array([s.channel for _, s in segs], dtype=int),
        speaker=obj([s.speaker for _, s in segs]),
        start=np.array([s.start_s for _, s in segs], dtype=float),
        end=np.array([s.end_s for _, s in segs], dtype=float),
        label=obj([s.label for _, s in segs]),
        confidence=np.array([s.confidence for _, s in segs], dtype=float),
        scores=scores.astype(np.float64) if n else np.zeros((0, len(LABELS))),
        emb=emb if n and has_emb else None,
        has_emb=np.full(len(results), has_emb),
        flags=[list(s.flags) for _, s in segs],
        bounds=np.concatenate([[0], np.cumsum(counts)]).astype(int),
        pitch=_measured(segs, "pitch_hz"), loudness=_measured(segs, "loudness_dbfs"))


def _measured(segs: list, name: str) -> np.ndarray:
    """An analyser's numeric segment column as the store will hold it (through its Arrow
    type), NaN where it is missing; all NaN when no analyser declares it."""
    col = next((c for c in analysers.segment_columns() if c.name == name), None)
    if col is None or not segs:
        return np.full(len(segs), np.nan)
    values = pa.array([s.values.get(name) for _, s in segs], col.arrow)
    return pa.compute.cast(values, pa.float64()).to_numpy(zero_copy_only=False)


def delete_session(con: Connection, session_id: str) -> None:
    """Every row of one session, on the caller's transaction."""
    for table in session_tables():
        con.execute(f"DELETE FROM {table} WHERE session_id = ?", [session_id])
