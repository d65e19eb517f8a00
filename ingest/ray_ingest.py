"""`emoscope ingest --executor ray` end to end, as the `ray` executor of ingest/executors.py:
the cluster writes Parquet shards (ingest/ray_executor.py), then this process imports them
through the one writer (`import_into`, also `emoscope import`). Ray is imported only here,
when the executor runs."""
from __future__ import annotations

import sys
from pathlib import Path

from ingest.executors import Request, UsageError


def default_shards(db: Path) -> Path:
    from core.base import places
    return places.beside(db, places.SHARDS, resolve=False)


def ingest(req: Request) -> int:
    """Shards for `req.targets` on the cluster at options["address"], then (unless
    options["no_import"]) imported into `req.db`; the exit code."""
    from ingest.model import ModelUnavailable, canonical_name, locate, weights_hash
    from ingest.pipeline import expand, meta_lookup
    from ingest.progress import CliProgress
    from ingest.ray_executor import connect, model_actors, run_shards
    from ingest.speech_to_text import use

    address, then_import = req.options.get("address"), not req.options.get("no_import")
    if req.device not in ("auto", "cpu") and not req.device.startswith("cuda"):
        raise UsageError(f"unknown device {req.device!r}; use auto, cpu or cuda")
    try:
        target, trained = locate(req.model)
    except ModelUnavailable as e:
        raise UsageError(str(e)) from None
    where = req.options.get("shards") or str(default_shards(req.db))
    files = expand(req.targets)
    writer = req.open_writer() if then_import else None
    # Audio already in the store is not decoded again (asked once, handed to every task).
    skip = writer.known_audio() if writer is not None and not req.force else None
    try:
        connect(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {e}") from None
    n, holds = model_actors(req.device)
    on = "cuda" if "num_gpus" in holds else "cpu"
    opts = req.opts
    info = {"model": canonical_name(req.model, target), "weights": weights_hash(target),
            "model_path": target, "trained": trained, "device": on, "engine": opts.engine,
            "asr": use(opts.asr)}  # the workers get it with the analysers
    with CliProgress() as bar:
        run = run_shards(files, meta_lookup(req.metadata), where, req.model, on, opts, info,
                         req.force, skip, progress=bar.hook)
    print(f"shards: {len(run.written)} written, {run.done_before} already there · "
          f"{n} model actor(s) on {on} · prepare nodes "
          f"{', '.join(f'{k[:8]}×{v}' for k, v in sorted(run.nodes.items())) or '-'} · "
          f"{run.wall_s:.1f} s → {where}", file=sys.stderr)
    if not then_import:
        return 1 if any(w[1] == "failed" for w in run.written) else 0
    return import_into(writer, where, req.force)


def import_into(writer, where: str, force: bool) -> int:
    """Load the shards at `where` through `writer`, with a summary; the exit code."""
    from core.admin.shard_import import import_shards
    from ingest import prosody  # noqa: F401  (its columns are read from the shards and stored)
    from ingest.progress import CliProgress, print_summary
    from ingest.report import Report

    with CliProgress() as bar:
        done = import_shards(writer, where, force, progress=bar.hook)
    report = Report(done.ok, done.failed + done.refused, done.skipped, done.flagged,
                    done.audio_s, done.wall_s,
                    timings={"decode": 0.0, "vad": 0.0, "model": 0.0, "store": done.wall_s},
                    executor="import")
    print_summary(report)
    print(f"imported {done.sessions} sessions, {done.rows} rows in {done.wall_s:.1f} s",
          file=sys.stderr)
    return report.exit_code
