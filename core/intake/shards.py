"""Parquet shards: analysed recordings as files, written by many machines, imported by one.

A shard is one input file's answer, up to seven Parquet files under a staging folder or object-store
URL (anything `pyarrow.fs` opens: a path, file://, s3://, gs://):

    <root>/channels/<key>.parquet   channel quality rows        (the store's `channels`)
    <root>/segments/<key>.parquet   segments, scores, embedding (the store's `segments`)
    <root>/frames/<key>.parquet     the emotion curves          (the store's `frames`)
    <root>/utterances/<key>.parquet what was said; words/ and audio_events/ beside it
    <root>/<table>/<key>.parquet    each analyser table's rows  (core.storage.analysers; their
                                    segment columns ride in the segments file)
    <root>/sessions/<key>.parquet   the session row, written LAST: its presence marks the
                                    shard whole; its metadata says where it came from
    <root>/run.json                 the model and options every shard was made with

Each file is written under a temporary name and renamed, so a run killed at any moment leaves
whole files only, and a shard without its sessions file is simply not there yet. `key` names
the input file (its path, size and modification time), so a rerun knows which files are done.
The tables are those `core.storage.group_tables` builds and the writer inserts, so a shard read back is the same SessionResult
the writer would have stored directly.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.base.labels import LABELS
from core.base.names import shown
from core.storage import analysers
from core.storage.group_tables import analysis_table, channel_table, frame_table, segment_table
from core.text.transcripts import event_table, events_of, utterance_table, utterances_of, word_table
from core.base.types import ChannelQuality, Curve, Segment, SessionMeta, SessionResult

# sessions last: the shard is whole
TABLES = ("channels", "segments", "frames", "utterances", "words", "audio_events", "sessions")


def tables() -> list[str]:
    """The shard's files in the order written: analysers' tables before sessions."""
    return [*TABLES[:-1], *(t.name for t in analysers.tables()), TABLES[-1]]
RUN_FILE = "run.json"
META_KEY = b"emoscope"  # the sessions file's metadata: JSON of where the shard came from

_SESSION_SCHEMA = pa.schema([
    ("session_id", pa.string()), ("source_path", pa.string()), ("file_name", pa.string()),
    ("sha256", pa.string()), ("duration_s", pa.float64()), ("n_channels", pa.int32()),
    ("codec", pa.string()), ("sample_rate", pa.int32()),
    ("status", pa.string()),  # ok, failed, or skipped (audio already stored when analysed)
    ("error", pa.string()), ("agent_id", pa.string()), ("customer_id", pa.string()),
    ("team", pa.string()), ("recorded_at", pa.string()), ("tags", pa.list_(pa.string())),
    ("roles", pa.list_(pa.string())), ("flags", pa.list_(pa.string())),
])


def shard_key(path: str | Path) -> str:
    """The input file's key: its absolute path, size and modification time (a changed file
    is a new shard); a file that cannot be looked at is keyed by its path alone."""
    full = os.path.abspath(path)
    try:
        st = os.stat(full)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "-"
    return hashlib.sha256(os.fsencode(full) + b"\0" + stamp.encode()).hexdigest()[:32]


def open_folder(where: str | Path) -> tuple[pafs.FileSystem, str]:
    """(file system, root) for a local folder or an object-store URL."""
    text = os.fspath(where)
    if "://" in text:
        fs, root = pafs.FileSystem.from_uri(text)
    else:
        fs, root = pafs.LocalFileSystem(), os.path.abspath(text)
    fs.create_dir(root, recursive=True)
    return fs, root.rstrip("/")


def _put(fs: pafs.FileSystem, path: str, write) -> None:
    """Write through `write(stream)` under a temporary name, then rename: whole or absent."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as out:
        write(out)
    fs.move(tmp, path)


def write_run(where: str | Path, info: dict) -> None:
    fs, root = open_folder(where)
    body = json.dumps(info, sort_keys=True, default=str).encode()
    _put(fs, f"{root}/{RUN_FILE}", lambda out: out.write(body))


def read_run(fs: pafs.FileSystem, root: str) -> dict:
    try:
        with fs.open_input_stream(f"{root}/{RUN_FILE}") as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError):
        return {}


def write_shard(where: str | Path, key: str, result: SessionResult, info: dict,
                note: str | None = None, skipped: bool = False) -> None:
    """One file's shard. `skipped`: its audio was already stored when it was analysed (the
    shard says so, so a rerun does not analyse it again). `info` (position in the run, which
    nodes ran it) goes into the sessions file's metadata."""
    fs, root = open_folder(where)
    for table in tables():
        fs.create_dir(f"{root}/{table}", recursive=True)
    ok = [result] if result.status == "ok" and not skipped else []
    pieces = {
        "channels": channel_table(ok) if ok and result.channels else None,
        "segments": segment_table(ok) if ok and result.segments else None,
        "frames": frame_table(ok) if ok and result.curves else None,
        "utterances": utterance_table(ok) if ok and result.utterances else None,
        "words": word_table(ok) if ok and any(u.words for u in result.utterances) else None,
        "audio_events": event_table(ok) if ok and result.audio_events else None,
        **{t.name: analysis_table(ok, t) if ok and result.analyses.get(t.name) else None
           for t in analysers.tables()},
    }
    for table, data in pieces.items():
        path = f"{root}/{table}/{key}.parquet"
        if data is None:
            if _exists(fs, path):  # left by an earlier answer for this file
                fs.delete_file(path)
            continue
        _put(fs, path, lambda out, data=data: pq.write_table(data, out))
    row = _session_row(result, "skipped" if skipped else result.status)
    meta = {**info, "key": key, "note": note}
    data = pa.Table.from_pylist([row], schema=_SESSION_SCHEMA).replace_schema_metadata(
        {META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()})
    _put(fs, f"{root}/sessions/{key}.parquet", lambda out: pq.write_table(data, out))


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _session_row(r: SessionResult, status: str) -> dict:
    m = r.meta
    return {"session_id": r.session_id, "source_path": shown(r.source_path),
            "file_name": shown(r.file_name), "sha256": r.sha256, "duration_s": r.duration_s,
            "n_channels": r.n_channels, "codec": r.codec, "sample_rate": r.sample_rate,
            "status": status, "error": None if r.error is None else shown(r.error),
            "agent_id": m.agent_id, "customer_id": m.customer_id, "team": m.team,
            "recorded_at": None if m.recorded_at is None else str(m.recorded_at),
            "tags": list(m.tags), "roles": None if m.roles is None else list(m.roles),
            "flags": list(r.flags)}


def done_keys(fs: pafs.FileSystem, root: str) -> set[str]:
    """Keys of whole shards (their sessions file is there)."""
    sel = pafs.FileSelector(f"{root}/sessions", allow_not_found=True)
    return {Path(i.path).name[:-len(".parquet")] for i in fs.get_file_info(sel)
            if i.type == pafs.FileType.File and i.path.endswith(".parquet")}


def matching(where: str | Path, session_ids: set[str], audio: set[str],
             customer: str | None = None, before=None) -> list[Path]:
    """The files of every whole shard in local folder `where` holding one of these sessions or
    recordings (SHA-256), this customer's, or (retention) recorded before `before`: what an
    erasure deletes, so `emoscope import` cannot bring them back."""
    root = Path(where)
    out: list[Path] = []
    for f in sorted((root / "sessions").glob("*.parquet")):
        try:
            row = pq.read_table(f, columns=["session_id", "sha256", "customer_id",
                                            "recorded_at"]).to_pylist()[0]
        except (OSError, ValueError, IndexError, pa.ArrowException):
            continue  # not a shard of ours; left alone
        old = before is not None and row["recorded_at"] and \
            str(row["recorded_at"]) < before.isoformat()
        if row["session_id"] in session_ids or row["sha256"] in audio or old or \
                (customer is not None and row["customer_id"] == customer):
            key = f.name[:-len(".parquet")]
            out += [root / table / f"{key}.parquet" for table in TABLES
                    if (root / table / f"{key}.parquet").exists()]
    return out


@dataclass
class Shard:
    key: str
    status: str  # ok, failed or skipped
    result: SessionResult
    info: dict = field(default_factory=dict)  # position, run, nodes, note


def read_heads(fs: pafs.FileSystem, root: str, keys: Iterable[str]) -> list[Shard]:
    """The session row and metadata of each shard (no segments yet), in run order: by run,
    then by the file's position in its run, as the input was given."""
    heads = []
    for key in keys:
        table = _table(fs, f"{root}/sessions/{key}.parquet")
        info = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
        row = table.to_pylist()[0]
        heads.append(Shard(key, row["status"], _result_of(row), info))
    heads.sort(key=lambda s: (str(s.info.get("run", "")), int(s.info.get("position", 0)), s.key))
    return heads


def _result_of(row: dict) -> SessionResult:
    meta = SessionMeta(row["agent_id"], row["customer_id"], row["team"], row["recorded_at"],
                       tuple(row["tags"] or ()), None if row["roles"] is None
                       else tuple(row["roles"]))
    return SessionResult(row["session_id"], row["source_path"], row["file_name"], row["sha256"],
                         row["duration_s"], row["n_channels"], meta,
                         status="ok" if row["status"] == "skipped" else row["status"],
                         error=row["error"], codec=row["codec"],
                         sample_rate=row["sample_rate"], flags=tuple(row["flags"] or ()))


def read_whole(fs: pafs.FileSystem, root: str, head: Shard) -> SessionResult:
    """The shard's SessionResult with its channels, segments, curves and transcript."""
    r = head.result
    if head.status != "ok":
        return r
    channels = _read(fs, root, "channels", head.key)
    segments = _read(fs, root, "segments", head.key)
    frames = _read(fs, root, "frames", head.key)
    quality = tuple(ChannelQuality(c["channel"], c["speaker"], c["duration_s"], c["rms"],
                                   c["clip_ratio"], c["speech_s"], tuple(c["flags"] or ()))
                    for c in (channels.to_pylist() if channels is not None else []))
    speakers = {c.channel: c.speaker for c in quality}
    analyses = {}
    for t in analysers.tables():
        rows = _read(fs, root, t.name, head.key)
        if rows is not None and rows.num_rows:
            analyses[t.name] = [{k: v for k, v in row.items() if k not in ("session_id", "n")}
                                for row in rows.sort_by("n").to_pylist()]
    return SessionResult(r.session_id, r.source_path, r.file_name, r.sha256, r.duration_s,
                         r.n_channels, r.meta, quality, _segments(segments),
                         _curves(frames, speakers),
                         utterances_of(_read(fs, root, "utterances", head.key),
                                       _read(fs, root, "words", head.key)),
                         events_of(_read(fs, root, "audio_events", head.key)),
                         status=r.status, error=r.error,
                         codec=r.codec, sample_rate=r.sample_rate, flags=r.flags,
                         analyses=analyses)


def _read(fs, root: str, table: str, key: str) -> pa.Table | None:
    path = f"{root}/{table}/{key}.parquet"
    return _table(fs, path) if _exists(fs, path) else None


def _table(fs: pafs.FileSystem, path: str) -> pa.Table:
    """One small Parquet file, read as a file: pq.read_table's dataset discovery and thread
    pool cost several times the read itself, for each of a shard's files."""
    with fs.open_input_file(path) as f:
        return pq.ParquetFile(f).read()


def _matrix(col: pa.ChunkedArray) -> np.ndarray:
    arr = col.combine_chunks()
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), -1)


def _segments(t: pa.Table | None) -> tuple[Segment, ...]:
    if t is None or not t.num_rows:
        return ()
    scores, emb = _matrix(t["scores"]), _matrix(t["embedding"])
    cols = {n: t[n].to_pylist() for n in t.column_names if n not in ("scores", "embedding")}
    extra = [c.name for c in analysers.segment_columns() if c.name in cols]
    return tuple(
        Segment(cols["segment_id"][i], cols["channel"][i], cols["speaker"][i],
                cols["start_s"][i], cols["end_s"][i], cols["label"][i], cols["confidence"][i],
                scores[i], emb[i], cols["rms"][i], cols["clip_ratio"][i],
                tuple(cols["flags"][i] or ()), cols["fallback_action"][i],
                {n: cols[n][i] for n in extra})
        for i in range(t.num_rows))


def _curves(t: pa.Table | None, speakers: dict[int, str]) -> tuple[Curve, ...]:
    if t is None or not t.num_rows:
        return ()
    channel = t["channel"].to_numpy()
    t_s = t["t_s"].to_numpy()
    probs = np.stack([t[lab].to_numpy() for lab in LABELS], axis=1)
    out = []
    for ch in dict.fromkeys(channel.tolist()):  # channels in the order written
        sel = channel == ch
        out.append(Curve(int(ch), speakers.get(int(ch), ""), t_s[sel], probs[sel]))
    return tuple(out)
