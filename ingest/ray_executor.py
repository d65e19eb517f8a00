"""The Ray executor: the ingest stages as a Ray Data pipeline, results as Parquet shards.

    input files ─► prepare: CPU tasks, one file per row (num_cpus=1) ─► one row per segment
                ─► model: an actor pool (a GPU each on CUDA; CPU actors otherwise), segments
                   of many files per call, cut into batches at the audio-seconds budget
                ─► group by file ─► assemble ─► the file's Parquet shard (core/intake/shards.py)

Every stage is the local one (`prepare_stream`, `analysed` through `run_model`, `assemble`),
so a shard holds the SessionResult the local executors would store; `emoscope import` loads
shards through the one writer. Files whose shard is already whole are not sent again, so a
run killed and restarted does only the rest. Ray retries a task or actor that dies; the
assembly keeps one copy of each segment, so a retried task never doubles a row.

Paths are made absolute here, on the driver: workers on other machines read the same path
(a shared filesystem mounted alike on every node).
"""
from __future__ import annotations

import functools
import logging
import os
import pickle
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from core.storage import analysers
from core.base.errors import first_line
from core.intake.shards import (done_keys, open_folder, read_run, shard_key, write_run,
                         write_shard)
from core.base.types import SessionMeta, SessionResult, session_id_for
from ingest.options import IngestOptions
from ingest.prepare import Part, Prepared, PrepareTask

SEGMENTS_PER_CALL = 64  # segments handed to a model actor at once (the engine batches them)
# A prepare task whose process dies is run again (asked through ray_remote_args_fn, which
# also keeps Ray Data from fusing prepare into the model actors: prepare stays CPU tasks).
PREPARE_RETRIES = 3

# One row per segment, and one per file (its summary), from prepare to the model.
_PREPARED = pa.schema([
    ("file", pa.int64()), ("kind", pa.string()), ("part", pa.int32()), ("index", pa.int32()),
    ("channel", pa.int32()), ("start_s", pa.float64()), ("end_s", pa.float64()),
    ("offset_s", pa.float64()), ("rms", pa.float64()), ("clip", pa.float64()),
    ("flags", pa.list_(pa.string())), ("wave", pa.large_binary()),
    ("summary", pa.large_binary()), ("node", pa.string()),
])
# From the model to assembly: a segment's analysis (pickled: a few hundred bytes), or an error.
_ANALYSED = pa.schema([
    ("file", pa.int64()), ("kind", pa.string()), ("part", pa.int32()), ("index", pa.int32()),
    ("payload", pa.large_binary()), ("error", pa.string()), ("node", pa.string()),
])
_WRITTEN = pa.schema([("file", pa.int64()), ("status", pa.string()), ("error", pa.string()),
                      ("note", pa.string()), ("audio_s", pa.float64()),
                      ("node", pa.string())])


def _node() -> str:
    import ray
    return ray.get_runtime_context().get_node_id()


@dataclass(frozen=True)
class Job:
    """What every worker needs about the run, sent once with each stage."""
    shards: str
    opts: IngestOptions
    files: tuple  # (path, key, meta) per file, by position
    run: str
    analysers: tuple = ((), {})  # core.storage.analysers.state() of the driver: modules, configs


# -- prepare: CPU tasks ---------------------------------------------------------------------
def prepare_rows(batch: pa.Table, job: Job, task: Callable | None = None,
                 skip=None) -> pa.Table:
    """Files (one per row) → a row per speech segment, then each file's summary row."""
    task = task or PrepareTask(job.opts, skip)
    rows, node = [], _node()
    for i in batch["file"].to_pylist():
        path, _, meta = job.files[i]
        rows.extend(_prepared(i, Path(path), meta, task, node))
    return pa.Table.from_pylist(rows, schema=_PREPARED)


def _prepared(i: int, path: Path, meta: SessionMeta, task: Callable, node: str) -> list[dict]:
    rows, k, prep = [], 0, None
    try:
        for item in task(path, meta):
            if isinstance(item, Part):
                rows.extend(_segment_rows(i, k, item))
                k += 1
            else:
                prep = item
    except Exception as e:  # noqa: BLE001 — one file's surprise fails that file only
        prep = Prepared(path, "", meta).fail(f"internal error while preparing: "
                                             f"{type(e).__name__}: {first_line(e)}")
    if prep is None:
        prep = Prepared(path, "", meta).fail("prepare ended without a summary of the file")
    if prep.result is not None or prep.skipped:
        rows, k = [], 0  # nothing for the model
    prep.parts = []
    # The summary counts the file's parts and segments, so assembly knows the file is whole.
    rows.append({"file": i, "kind": "summary", "part": k, "index": len(rows),
                 "summary": pickle.dumps(prep), "node": node})
    return rows


def _segment_rows(i: int, k: int, part: Part) -> list[dict]:
    return [{"file": i, "kind": "segment", "part": k, "index": j, "channel": ch,
             "start_s": s, "end_s": e, "offset_s": part.offset_s, "rms": q[0], "clip": q[1],
             "flags": list(q[2]), "wave": w.tobytes()}
            for j, ((ch, s, e), q, w) in enumerate(zip(part.spans, part.quality, part.waves))]


# -- the model: an actor pool ---------------------------------------------------------------
class Model:
    """Loads the model once per actor; each call analyses the segments it is given (of many
    files), the engine cutting them into batches at the audio-seconds budget. A model failure
    fails only the files whose segments failed."""

    def __init__(self, model: str, device: str, opts: IngestOptions,
                 held: tuple = ((), {})):
        from ingest.model import load
        analysers.restore(*held)  # this process holds the driver's analysers
        self.lm = load(model, device)
        self.opts = opts
        self.node = _node()

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ingest.report import MODEL_ERRORS
        rows = batch.to_pylist()
        segs = [r for r in rows if r["kind"] == "segment"]
        out = [{"file": r["file"], "kind": "summary", "part": r["part"], "index": r["index"],
                "payload": r["summary"], "node": r["node"]} for r in rows if r["kind"] != "segment"]
        try:
            outs = self._run(segs)
        except MODEL_ERRORS:
            # Several files shared the call: each alone, so a failure is only its own file's.
            outs = [None] * len(segs)
            for f in dict.fromkeys(r["file"] for r in segs):
                idx = [n for n, r in enumerate(segs) if r["file"] == f]
                try:
                    done = self._run([segs[n] for n in idx])
                except MODEL_ERRORS as e:
                    done = [f"model failed: {first_line(e)}"] * len(idx)
                for n, o in zip(idx, done):
                    outs[n] = o
        for r, o in zip(segs, outs):
            row = {"file": r["file"], "kind": "segment", "part": r["part"], "index": r["index"],
                   "node": self.node}
            if isinstance(o, str):
                row.update(kind="error", error=o)
            else:
                row["payload"] = pickle.dumps(o)
            out.append(row)
        return pa.Table.from_pylist(out, schema=_ANALYSED)

    def _run(self, segs: list[dict]) -> list:
        from ingest.assemble import analysed, run_model
        waves = [np.frombuffer(r["wave"], np.float32) for r in segs]
        outputs = run_model(self.lm, waves, self.opts) if waves else []
        done: list = [None] * len(segs)
        # The analysers see each file's part's segments of this call together.
        groups: dict[tuple, list[int]] = {}
        for n, r in enumerate(segs):
            groups.setdefault((r["file"], r["part"]), []).append(n)
        for idx in groups.values():
            rs = [segs[n] for n in idx]
            part = Part(rs[0]["offset_s"], [(r["channel"], r["start_s"], r["end_s"]) for r in rs],
                        [(r["rms"], r["clip"], tuple(r["flags"] or ())) for r in rs], None,
                        np.zeros(len(rs) + 1, np.int64))
            a = analysed(part, [outputs[n] for n in idx], self.opts, [waves[n] for n in idx])
            at: dict[int, int] = {}  # channel → its next curve piece (pieces in span order)
            for j, n in enumerate(idx):
                ch = part.spans[j][0]
                k = at.get(ch, 0)
                at[ch] = k + 1
                done[n] = (a.segments[j], {ch: [a.curves[ch][k]]})
        return done


# -- assemble and write: per file -----------------------------------------------------------
def assemble_group(group: pa.Table, job: Job) -> pa.Table:
    """One file's rows (its summary, its analysed segments) → its shard, written."""
    from ingest.assemble import Analysed, assemble
    analysers.restore(*job.analysers)  # the shard holds their columns and tables
    rows = group.to_pylist()
    i = rows[0]["file"]
    path, key, meta = job.files[i]
    summary = next((r for r in rows if r["kind"] == "summary"), None)
    prep: Prepared = pickle.loads(summary["payload"]) if summary else \
        Prepared(Path(path), "", meta).fail("its summary was lost")
    error = next((r["error"] for r in rows if r["kind"] == "error"), None)
    # One copy of each segment, in file order (a retried task may have sent one twice).
    segs = {(r["part"], r["index"]): r for r in rows if r["kind"] == "segment"}
    parts = []
    for k in range(summary["part"] if summary else 0):
        a = Analysed([], {})
        for j in range(len(segs)):
            r = segs.get((k, j))
            if r is None:
                break
            seg, curves = pickle.loads(r["payload"])
            a.segments.append(seg)
            for ch, pieces in curves.items():
                a.curves.setdefault(ch, []).extend(pieces)
        parts.append(a)
    if error is None and summary and len(segs) != summary["index"]:
        error = f"{summary['index'] - len(segs)} of its segments never came back from the model"
    if error is not None and prep.result is None:
        prep.fail(error)
    skipped = prep.skipped
    if skipped:
        result = SessionResult(session_id_for(prep.sha256), str(prep.path), prep.path.name,
                               prep.sha256, 0.0, 0, prep.meta)
    else:
        result = assemble(prep, parts)
    note = "; ".join(prep.notes) or None
    nodes = sorted({r["node"] for r in rows if r["kind"] != "summary" and r["node"]})
    info = {"run": job.run, "position": i, "prepare_node": summary and summary["node"],
            "model_nodes": nodes, "assemble_node": _node()}
    write_shard(job.shards, key, result, info, note, skipped=skipped)
    status = "skipped" if skipped else result.status
    return pa.Table.from_pylist([{
        "file": i, "status": status, "error": result.error, "note": note,
        "audio_s": result.duration_s if status == "ok" else 0.0,
        "node": info["prepare_node"]}], schema=_WRITTEN)


# -- the run --------------------------------------------------------------------------------
@dataclass
class RayRun:
    files: int = 0
    done_before: int = 0  # whole shards already there: not analysed again
    written: list = field(default_factory=list)  # (path, status, error, note, node)
    wall_s: float = 0.0
    nodes: dict = field(default_factory=dict)  # prepare node → files


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (auto: the one this machine belongs to; ray://: a remote
    one through Ray Client) or start one here (local); a session already connected is kept."""
    import ray
    if ray.is_initialized():
        return
    kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    # The workers find the model cache, and measure prosody (ingest/prosody.py), as here.
    given = {k: os.environ[k] for k in ("EMOSCOPE_CACHE", "EMOSCOPE_PROSODY", "NUMBA_CACHE_DIR")
             if os.environ.get(k)}
    env = {"env_vars": given} if given else None
    if address in (None, "local"):
        ray.init(num_cpus=num_cpus, runtime_env=env, **kw)
    else:
        ray.init(address=address, runtime_env=env, **kw)


def model_actors(device: str) -> tuple[int, dict]:
    """How many model actors and what each holds: a GPU each on CUDA, one CPU otherwise."""
    import ray
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if device.startswith("cuda") or (device == "auto" and gpus):
        return max(1, gpus), {"num_gpus": 1}
    # On CPU the one actor stays (softly) on the driver's node, so the cores of the other
    # nodes are left to prepare tasks.
    here = ray.get_runtime_context().get_node_id()
    return 1, {"num_cpus": 1, "ray_remote_args_fn": functools.partial(_near, here)}


def _near(node: str) -> dict:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=True)}


def _retried() -> dict:
    return {"max_retries": PREPARE_RETRIES}


def run_shards(files: list[Path], meta_for, shards: str | Path, model: str, device: str,
               opts: IngestOptions, model_info: dict, force: bool = False, skip=None,
               task: Callable | None = None, progress=None,
               segments_per_call: int = SEGMENTS_PER_CALL) -> RayRun:
    """Analyse `files` on the connected Ray cluster into shards under `shards`; files whose
    shard is already whole are left alone unless `force`."""
    import ray.data

    progress = progress or (lambda event, info: None)
    started = time.perf_counter()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the caller's progress hook shows the files
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    shards = os.fspath(shards)
    fs, root = open_folder(shards)
    if "://" not in shards:
        shards = root
    have = set() if force else done_keys(fs, root)
    entries = [(os.path.abspath(p), shard_key(p), meta_for(p)) for p in files]
    todo = [i for i, (_, key, _) in enumerate(entries) if key not in have]
    # A restart continues the folder's run: import orders shards by run, then by the file's
    # place in the input, so files redone later still go in where a local run has them.
    run = read_run(fs, root).get("run") or f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
    write_run(shards, {**model_info, "options": opts.to_dict(), "run": run})
    report = RayRun(files=len(files), done_before=len(files) - len(todo))
    progress("start", {"files": len(todo), "executor": "ray", "workers": _cpus()})
    if not todo:
        report.wall_s = time.perf_counter() - started
        return report
    job = Job(shards, opts, tuple(entries), run, analysers.state())
    with warnings.catch_warnings():
        # ray_remote_args_fn (task retries, the CPU actor's node) is deprecated from Ray 2.64,
        # which pyproject excludes; the warning would only reach the command's user.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = _pipeline(job, todo, model, device, task, skip, segments_per_call)
    for row in ds.iter_rows():
        path = entries[row["file"]][0]
        report.written.append((path, row["status"], row["error"], row["note"], row["node"]))
        report.nodes[row["node"]] = report.nodes.get(row["node"], 0) + 1
        progress("file", {"path": path, "status": row["status"], "error": row["error"],
                          "note": row["note"], "audio_s": row["audio_s"]})
    report.wall_s = time.perf_counter() - started
    return report


def _pipeline(job: Job, todo: list[int], model: str, device: str, task, skip,
              segments_per_call: int):
    import ray.data
    n_actors, holds = model_actors(device)
    ds = ray.data.from_items([{"file": i} for i in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(prepare_rows, fn_kwargs={"job": job, "task": task, "skip": skip},
                        batch_size=1, batch_format="pyarrow", num_cpus=1,
                        ray_remote_args_fn=_retried)
    ds = ds.map_batches(Model, fn_constructor_kwargs={"model": model, "device": device,
                                                      "opts": job.opts,
                                                      "held": job.analysers},
                        batch_size=segments_per_call, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=n_actors), **holds)
    # A few partitions, not Ray's default 200: groups are small (one file each).
    parts = max(1, min(len(todo), 2 * _cpus()))
    return ds.groupby("file", num_partitions=parts).map_groups(
        assemble_group, fn_kwargs={"job": job}, batch_format="pyarrow", num_cpus=0.5)


def _cpus() -> int:
    import ray
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
