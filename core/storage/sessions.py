"""Writing sessions: runs, and analysed recordings with their derived analytics.

`SessionWriter` is the one way rows get into sessions, channels, segments and frames. It always
writes the analytics (core.storage.derived) in the same transaction, so no caller can store a session
without its metrics and alerts, and a crash leaves either all of it or none. Sessions go in
groups (`save_many`): one transaction and one bulk insert per table for the group, analytics
computed in ingest order exactly as saving them one at a time would.
"""
from __future__ import annotations

import json
import logging
import os
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
from core.storage.store import Connection, Store
from core.base.times import as_timestamp, utc_now
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

InTransaction = Callable[[Connection, str], None]  # (connection, session_id)


def stored_source(path: str | Path, audio_root: str | Path | None = None) -> str:
    """How a recording's path is stored: absolute, or relative to the audio root when it lies
    inside it (so a moved recordings share needs one setting changed, not every row)."""
    full = Path(os.path.abspath(path))
    if audio_root is not None:
        try:
            return str(full.relative_to(os.path.abspath(audio_root)))
        except ValueError:
            pass
    return str(full)


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
            base = utc_now()
            for lo, hi in _runs_without_repeats([r.session_id for r in results]):
                stored[lo:hi] = _save_group(con, results[lo:hi], run_id, base, lo, self.rules,
                                             self.audio_root, gone)
            for result, hook in zip(results, hooks):
                if hook is not None:
                    hook(con, result.session_id)
        self._saved_ok.update(r.sha256 for r, s in zip(results, stored) if s and r.status == "ok")
        if any(stored):  # one index update for the whole group
            self.update_index(sorted({r.session_id for r, s in zip(results, stored) if s}),
                              keys_for(gone))
            if _words_changed([r for r, s in zip(results, stored) if s], gone):
                self.update_words()
        return stored

    def update_index(self, session_ids: list[str], gone_keys: np.ndarray) -> dict | None:
        """After a commit: the ANN index beside the store takes the saved sessions' rows in
        place of `gone_keys` (the "vectors" commit hook, core.index.segment_index). The rows
        are stored whatever happens here: a failure leaves the index stale, and a stale index
        is repaired or rebuilt before use."""
        hook = commit_hooks.hooks().get("vectors")
        try:
            self.last_index_update = hook and hook.after(self.store, session_ids, gone_keys, False)
        except Exception as e:  # the commit stands; the index catches up on its next check
            log.warning("the similarity index was not updated (%s); it is rebuilt from the "
                        "store when next opened", e)
            self.last_index_update = None
        return self.last_index_update

    def update_words(self) -> None:
        """After a commit: the word index beside the store (the "words" commit hook,
        core.index.word_index) takes the saved transcripts. As with the ANN index, a failure
        leaves it stale, and a stale one is synced from the store before any search uses it."""
        hook = commit_hooks.hooks().get("words")
        try:
            hook and hook.after(self.store, [], np.zeros(0, np.uint64), True)
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
                base, first_pos: int, rules: Rules, audio_root, gone: list[str]) -> list[bool]:
    """One group (no session twice) in bulk: one query for what is stored under its ids, the
    analytics of its ok sessions computed from memory in one pass (core.analysis.analytics
    .analyze_group), then one Arrow insert per table — the segments already carrying their
    rolling volatility and fallback action."""
    # (A failed statement aborts the transaction and Store.write rolls it back; registered
    # tables belong to this connection, which closes then, so none is unregistered on error.)
    con.register("ids_tbl", _ids([r.session_id for r in results]))
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
        con.register("del_tbl", _ids(replaced))
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
    analysis = derived.analyse(con, [_group_session(r, rules) for r in ok],
                               _group_segments(ok, *blocks),
                               base + timedelta(microseconds=first_ok))
    _insert(con, "sessions", _session_table(kept, run_id, base, audio_root))
    if any(r.channels for r in ok):
        _insert(con, "channels", channel_table(ok))
    if blocks[0]:
        _insert(con, "segments", segment_arrow(*blocks, {
            "rolling_volatility": pa.array(analysis.rolling_volatility, pa.float64(),
                                           from_pandas=True),
            "fallback_action": pa.array(analysis.fallback_action, pa.string()), **head_cols}),
            casts={"scores": "FLOAT[9]", "embedding": "FLOAT[]"})
    if any(r.curves for r in ok):
        _insert(con, "frames", frame_table(ok))
    if any(r.utterances for r in ok):
        _insert(con, "utterances", _with_fused(utterance_table(ok), analysis.fused))
        if any(u.words for r in ok for u in r.utterances):
            _insert(con, "words", word_table(ok))
    if any(r.audio_events for r in ok):
        _insert(con, "audio_events", event_table(ok))
    for t in analysers.tables():
        if any(r.analyses.get(t.name) for r in ok):
            _insert(con, t.name, analysis_table(ok, t))
    derived.insert(con, analysis)
    return keep


def _group_session(r: SessionResult, rules: Rules) -> GroupSession:
    return GroupSession(r.session_id, r.duration_s, rules.for_session(r.meta.team, r.meta.tags),
                        [(c.speaker, tuple(c.flags)) for c in
                         sorted(r.channels, key=lambda c: c.channel)], r.utterances)


def _group_segments(results: list[SessionResult], segs: list, scores, emb) -> GroupSegments:
    """The analytics' view of `segment_blocks`: arrays, widened from float32 as a read of the
    store would give them."""
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
        emb=emb.astype(np.float64) if n and has_emb else None,
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


def _with_fused(utts: pa.Table, fused) -> pa.Table:
    """The utterances with their fused states (core.analysis.fusion, computed with the analytics)."""
    if fused is None or not len(fused):
        return utts
    at = dict(zip(fused.utterance_id.tolist(), range(len(fused))))
    pos = [at.get(u) for u in utts["utterance_id"].to_pylist()]
    for col, kind in (("voice", pa.string()), ("fused", pa.string()), ("turn", pa.int32()),
                      ("turn_fused", pa.string())):
        values = fused[col].tolist()
        utts = utts.append_column(col, pa.array([None if p is None else values[p] for p in pos],
                                                kind, from_pandas=True))
    return utts


def _ids(ids: list[str]) -> pa.Table:
    return pa.table({"session_id": pa.array(ids, pa.string())})


_SESSION_SCHEMA = pa.schema([
    ("session_id", pa.string()), ("source_path", pa.string()), ("file_name", pa.string()),
    ("sha256", pa.string()), ("duration_s", pa.float64()), ("n_channels", pa.int32()),
    ("codec", pa.string()), ("sample_rate", pa.int32()), ("status", pa.string()),
    ("error", pa.string()), ("agent_id", pa.string()), ("customer_id", pa.string()),
    ("team", pa.string()), ("recorded_at", pa.timestamp("us")), ("tags", pa.list_(pa.string())),
    ("run_id", pa.string()), ("ingested_at", pa.timestamp("us")),
    ("flags", pa.list_(pa.string())),
])
_CHANNEL_SCHEMA = pa.schema([
    ("session_id", pa.string()), ("channel", pa.int32()), ("speaker", pa.string()),
    ("duration_s", pa.float64()), ("rms", pa.float64()), ("clip_ratio", pa.float64()),
    ("speech_s", pa.float64()), ("flags", pa.list_(pa.string())),
])


def _session_table(kept: list[tuple[int, SessionResult]], run_id, base,
                   audio_root) -> pa.Table:
    rows = []
    for pos, r in kept:
        m = r.meta
        rows.append({
            "session_id": r.session_id, "source_path": shown(stored_source(r.source_path, audio_root)),
            "file_name": shown(r.file_name), "sha256": r.sha256, "duration_s": r.duration_s,
            "n_channels": r.n_channels, "codec": r.codec, "sample_rate": r.sample_rate,
            "status": r.status, "error": None if r.error is None else shown(r.error),
            "agent_id": m.agent_id, "customer_id": m.customer_id, "team": m.team,
            "recorded_at": as_timestamp(m.recorded_at), "tags": list(m.tags),
            "run_id": run_id,
            # One microsecond apart, in the order given: the ingest order analytics follow.
            "ingested_at": base + timedelta(microseconds=pos),
            "flags": list(r.flags)})
    return pa.Table.from_pylist(rows, schema=_SESSION_SCHEMA)


def channel_table(results: list[SessionResult]) -> pa.Table:
    """Every channel's quality row of the group (the same table Parquet shards hold)."""
    return pa.Table.from_pylist([
        {"session_id": r.session_id, "channel": c.channel, "speaker": c.speaker,
         "duration_s": c.duration_s, "rms": c.rms, "clip_ratio": c.clip_ratio,
         "speech_s": c.speech_s, "flags": list(c.flags)}
        for r in results for c in r.channels], schema=_CHANNEL_SCHEMA)


def segment_table(results: list[SessionResult]) -> pa.Table:
    """Every segment of the group; scores and embeddings as fixed-size float32 lists built
    from one numpy block each, not from Python lists of floats."""
    return segment_arrow(*segment_blocks(results))


def segment_blocks(results: list[SessionResult]) -> tuple[list, np.ndarray, np.ndarray]:
    """(session id, segment) pairs of the group with their scores and embeddings stacked as
    float32, as the store holds them."""
    segs = [(r.session_id, s) for r in results for s in r.segments]
    scores = np.stack([s.scores for _, s in segs]).astype(np.float32, copy=False)
    emb = np.stack([s.embedding for _, s in segs]).astype(np.float32, copy=False)
    return segs, scores, emb


def segment_arrow(segs: list, scores: np.ndarray, emb: np.ndarray,
                  derived_values: dict | None = None) -> pa.Table:
    """The segments table of `segment_blocks`; `derived_values` (rolling_volatility and
    fallback_action as computed by the analytics) in place of the segments' own."""
    cols = {
        "segment_id": [s.segment_id for _, s in segs],
        "session_id": [sid for sid, _ in segs],
        "channel": pa.array([s.channel for _, s in segs], pa.int32()),
        "speaker": [s.speaker for _, s in segs],
        "start_s": pa.array([s.start_s for _, s in segs], pa.float64()),
        "end_s": pa.array([s.end_s for _, s in segs], pa.float64()),
        "label": [s.label for _, s in segs],
        "confidence": pa.array([s.confidence for _, s in segs], pa.float64()),
        "scores": pa.FixedSizeListArray.from_arrays(pa.array(scores.reshape(-1)), scores.shape[1]),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1]),
        "rms": pa.array([s.rms for _, s in segs], pa.float64()),
        "clip_ratio": pa.array([s.clip_ratio for _, s in segs], pa.float64()),
        "flags": pa.array([list(s.flags) for _, s in segs], pa.list_(pa.string())),
        "fallback_action": pa.array([s.fallback_action for _, s in segs], pa.string()),
        "segment_key": pa.array(keys_for(s.segment_id for _, s in segs), pa.uint64()),
        **{c.name: pa.array([s.values.get(c.name) for _, s in segs], c.arrow)
           for c in analysers.segment_columns()},
    }
    cols.update(derived_values or {})
    return pa.table(cols)


def analysis_table(results: list[SessionResult], t: analysers.Table) -> pa.Table:
    """An analyser table's rows of the group, numbered per session (n)."""
    rows = []
    for r in results:
        for n, row in enumerate(r.analyses.get(t.name, ())):
            rows.append({**row, "session_id": r.session_id, "n": n})
    return pa.Table.from_pylist(rows, schema=analysers.table_schema(t))


def frame_table(results: list[SessionResult]) -> pa.Table:
    curves = [(r.session_id, c) for r in results for c in r.curves]
    probs = np.concatenate([c.probs for _, c in curves]).astype(np.float32, copy=False)
    cols = {
        "session_id": np.repeat([sid for sid, _ in curves], [len(c.t_s) for _, c in curves]),
        "channel": np.repeat([c.channel for _, c in curves],
                             [len(c.t_s) for _, c in curves]).astype(np.int32),
        "t_s": np.concatenate([c.t_s for _, c in curves]).astype(np.float64),
    }
    cols.update({lab: probs[:, i] for i, lab in enumerate(LABELS)})
    return pa.table(cols)


def delete_session(con: Connection, session_id: str) -> None:
    """Every row of one session, on the caller's transaction."""
    for table in session_tables():
        con.execute(f"DELETE FROM {table} WHERE session_id = ?", [session_id])


def _insert(con: Connection, table: str, data: pa.Table, casts: dict | None = None) -> None:
    """INSERT ... SELECT from a registered Arrow table: one bulk statement, not a row loop."""
    casts = casts or {}
    names = data.column_names
    select = ", ".join(f"{n}::{casts[n]}" if n in casts else n for n in names)
    con.register("insert_tbl", data)
    con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM insert_tbl")
    con.unregister("insert_tbl")
