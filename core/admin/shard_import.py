"""`emoscope import`: Parquet shards (core/intake/shards.py) into the store, by its one writer.

Shards go in in run order (each run's files as they were given), in groups of whole sessions
through `SessionWriter.save_many` — one transaction per group, the analytics written with the
sessions exactly as ingest writes them. Idempotent by SHA-256: audio already stored (ok, or
failed with nothing better to replace it) is left as it is, so importing a folder twice
changes nothing — not even the runs table; `force` replaces what is stored. A shard of a
session or recording erased from this store (core.admin.erasure's erased list, keyed pseudonyms) is
refused, `force` or not: an erasure is not undone by importing an old copy.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.admin.erasure import erased
from core.base.keyed import pseudonym, secret
from core.storage.sessions import SessionWriter
from core.intake.shards import done_keys, open_folder, read_heads, read_run, read_whole
from core.base.types import SessionResult

# Sessions per transaction. DuckDB's checkpoint at each commit rewrites the tables' partly
# filled last row groups, so its cost per session falls as a group grows: inserting and
# committing 512 synthetic sessions (bench/import.py's, 24 segments, dim 1024) took 2.57 s of
# CPU in groups of 64, 1.72 s in 128, 1.31 s in 256 (a shared 2-core machine, load 10). The
# whole writer (analytics and the similarity index too) took 4.6 s in 64, 4.0 s in 128 and
# 4.7 s in 256: the first commit into an empty index builds its graph from the whole group.
# Readers wait at the gate for one commit, another reason not to go larger.
GROUP = 128


@dataclass
class Imported:
    ok: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already stored (or a copy of stored audio)
    flagged: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # erased here before
    rows: int = 0  # session, channel, segment and frame rows written
    audio_s: float = 0.0
    wall_s: float = 0.0
    run_id: str | None = None

    @property
    def sessions(self) -> int:
        return len(self.ok) + len(self.failed)


def import_shards(writer: SessionWriter, where: str | Path, force: bool = False,
                  progress: Callable[[str, dict], None] | None = None) -> Imported:
    started = time.perf_counter()
    progress = progress or (lambda event, info: None)
    fs, root = open_folder(where)
    heads = read_heads(fs, root, sorted(done_keys(fs, root)))
    writer.store.retry_s = None  # the one writer: a lock held elsewhere is waited out
    writer.store.migrate()
    stored = {} if force else writer.audio_status()
    out = Imported()
    gone = erased(writer.store.path)
    if gone:
        key = secret(writer.store.path)
        kept = []
        for head in heads:
            r = head.result
            if {pseudonym(key, r.session_id), pseudonym(key, r.sha256 or "")} & gone:
                out.refused.append((r.source_path, "erased from this store; not imported"))
            else:
                kept.append(head)
        heads = kept
    progress("start", {"files": len(heads), "executor": "import", "workers": 1})
    try:
        _import(writer, fs, root, heads, stored, force, out, progress)
    except KeyboardInterrupt:
        if out.run_id is not None:  # what was committed stays; the run says it was cut short
            writer.finish_run(out.run_id, len(out.ok), len(out.failed), len(out.skipped),
                              out.audio_s, "interrupted")
        raise
    if out.run_id is not None:
        writer.finish_run(out.run_id, len(out.ok), len(out.failed), len(out.skipped),
                          out.audio_s)
    out.wall_s = time.perf_counter() - started
    return out


def _import(writer, fs, root, heads, stored, force, out: Imported, progress) -> None:
    groups: list[list] = [[]]
    seen: set[str] = set()
    for head in heads:
        r, note = head.result, head.info.get("note")
        # Skipped: audio stored before (unless forced) or earlier in this import (a copy).
        if head.status == "skipped" or (r.sha256 and (r.sha256 in seen or not force and (
                stored.get(r.sha256) == "ok" or r.status == "failed" and r.sha256 in stored))):
            out.skipped.append(r.source_path)
            progress("file", {"path": r.source_path, "status": "skipped", "audio_s": 0.0,
                              "note": None, "error": None})
            continue
        if r.status == "ok":
            seen.add(r.sha256)
        if len(groups[-1]) >= GROUP:
            groups.append([])
        groups[-1].append((head, note))

    def read(group: list) -> list[tuple[SessionResult, str | None]]:
        return [(read_whole(fs, root, h) if h.result.sha256 else h.result, note)
                for h, note in group]

    # The next group's shards are read (Parquet, which frees the GIL) while this one commits.
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(read, groups[0])
        for i in range(len(groups)):
            group = ahead.result()
            if i + 1 < len(groups):
                ahead = pool.submit(read, groups[i + 1])
            if group:
                _save(writer, root, group, out, progress)


def _save(writer: SessionWriter, root: str, group: list, out: Imported, progress) -> None:
    # Audio that cannot be identified (unreadable files) is reported, never stored.
    storable = [r for r, _ in group if r.sha256]
    if storable and out.run_id is None:  # a run only when something is written
        run = read_run(*open_folder(root))
        out.run_id = writer.start_run(
            run.get("model", "unknown"), run.get("model_path", ""), bool(run.get("trained")),
            run.get("device", "unknown"), run.get("engine", "engine"),
            {**run.get("options", {}), "executor": "ray", "imported_from": root},
            asr=run.get("asr"), weights=run.get("weights", ""))
    saved = dict.fromkeys(range(len(storable)), False)
    if storable:
        saved = dict(enumerate(writer.save_many(storable, out.run_id)))
    i = 0
    for r, note in group:
        kept = saved[i] if r.sha256 else False
        i += bool(r.sha256)
        if r.status == "ok" and kept:
            out.ok.append(r.source_path)
            out.audio_s += r.duration_s
            out.rows += 1 + len(r.channels) + len(r.segments) + sum(len(c.t_s) for c in r.curves)
            if note:
                out.flagged.append((r.source_path, note))
            status = "ok"
        elif r.status == "ok":  # a failed row never replaces a stored ok one; ok always saves
            out.skipped.append(r.source_path)
            status = "skipped"
        else:
            out.failed.append((r.source_path, r.error or "failed"))
            out.rows += int(kept)
            status = "failed"
        progress("file", {"path": r.source_path, "status": status, "note": note,
                          "error": r.error, "audio_s": r.duration_s if status == "ok" else 0.0})
