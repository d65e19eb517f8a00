"""The Arrow tables a group of sessions is written as: one table per store table, built from
numpy blocks rather than Python rows, and inserted in one bulk statement each. The writer
(core.storage.sessions) inserts them; Parquet shards (core.intake.shards) hold the same tables,
so a shard read back is what the writer would have stored.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.base.labels import LABELS
from core.base.names import shown
from core.base.times import as_timestamp
from core.base.types import SessionResult
from core.storage import analysers
from core.storage.store import Connection
from core.storage.vector_keys import key_sql, keys_for

# A segment's key computed by DuckDB over the inserted rows: md5 in one vectorised pass rather
# than once per segment in Python (the same number as vector_keys.key_of).
SEGMENT_KEY = {"segment_key": key_sql("segment_id")}


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



def with_fused(utts: pa.Table, fused) -> pa.Table:
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


def ids_table(ids: list[str]) -> pa.Table:
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


def session_table(kept: list[tuple[int, SessionResult]], run_id, base,
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
                  derived_values: dict | None = None, keys: bool = True) -> pa.Table:
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
        **{c.name: pa.array([s.values.get(c.name) for _, s in segs], c.arrow)
           for c in analysers.segment_columns()},
    }
    if keys:  # the writer has DuckDB compute them as it inserts (SEGMENT_KEY)
        cols["segment_key"] = pa.array(keys_for(s.segment_id for _, s in segs), pa.uint64())
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
    lengths = [len(c.t_s) for _, c in curves]
    # Each id once, then taken per frame by Arrow: no numpy string array a frame long.
    at = np.repeat(np.arange(len(curves)), lengths)
    cols = {
        "session_id": pa.array([sid for sid, _ in curves], pa.string()).take(at),
        "channel": np.repeat([c.channel for _, c in curves], lengths).astype(np.int32),
        "t_s": np.concatenate([c.t_s for _, c in curves]).astype(np.float64),
    }
    cols.update({lab: probs[:, i] for i, lab in enumerate(LABELS)})
    return pa.table(cols)


def insert(con: Connection, table: str, data: pa.Table, casts: dict | None = None,
           computed: dict | None = None) -> None:
    """INSERT ... SELECT from a registered Arrow table: one bulk statement, not a row loop.
    `computed`: more columns as SQL over the table's (SEGMENT_KEY)."""
    casts, computed = casts or {}, computed or {}
    names = data.column_names
    select = ", ".join([f"{n}::{casts[n]}" if n in casts else n for n in names]
                       + list(computed.values()))
    con.register("insert_tbl", data)
    con.execute(f"INSERT INTO {table} ({', '.join(names + list(computed))}) "
                f"SELECT {select} FROM insert_tbl")
    con.unregister("insert_tbl")
