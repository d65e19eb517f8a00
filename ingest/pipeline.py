"""From audio files to stored sessions: prepare → model → assemble → one writer.

`process_file` is the one way a file is analysed (the serial executor, the worker and
`predict` all use it). `ingest_paths` runs a whole batch with an executor that runs here, from
the registry in ingest/executors.py: `streaming` (the default, ingest/streaming.py: prepare
processes, batches across files, bulk commits) or `serial` (`run_serial`, here: one file at a
time, preparing the next file on a thread while the model runs). Both store the same rows;
every file ends ok, failed (with its reason) or skipped.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from core.base.errors import first_line
from core.base.manifest import resolved
from core.base.names import shown
from core.storage.sessions import SessionWriter
from core.base.types import SessionMeta, SessionResult
from ingest import executors
from ingest.assemble import analysed, assemble, run_model
from ingest.executors import Batch
from ingest.model import LoadedModel, Output
from ingest.options import IngestOptions
from ingest.prepare import Part, Prepared, Skip, prepare_stream
from ingest.report import MODEL_ERRORS, ProgressHook, Report, stored_before

AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".wma",
                  ".webm", ".oga", ".aif", ".aiff", ".au", ".amr", ".3gp", ".caf", ".mka"}


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders walked for audio files (sorted, so runs are repeatable). Links
    are listed too, broken or looping ones included, so each gets its own reason."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES
                              and (f.is_symlink() or f.is_file())))
        else:
            out.append(p)
    return out


def meta_lookup(metadata: dict[Path, SessionMeta]) -> Callable[[Path], SessionMeta]:
    """Metadata by resolved path, else by bare name (a link loop by its own path)."""
    def meta_for(p: Path) -> SessionMeta:
        return metadata.get(resolved(p), metadata.get(Path(p.name), SessionMeta()))
    return meta_for


@dataclass
class Processed:
    prep: Prepared  # who the file is, its notes and stage timings (decode, vad, model)
    result: SessionResult | None  # None: already stored, skipped


def process_file(path: Path, meta: SessionMeta, lm: LoadedModel, opts: IngestOptions,
                 skip: Skip | None = None, items: Iterator[Part | Prepared] | None = None,
                 outputs: list[Output] | None = None, frame_feats: bool = False) -> Processed:
    """prepare → model → assemble for one file, block by block (a long file is never whole in
    memory). `items`: the file's prepare_stream when someone else runs it (the serial
    executor's prefetch thread). `outputs`: when a list, the model's raw outputs are added to
    it (with frame features when `frame_feats`), for predict."""
    items = items if items is not None else prepare_stream(path, meta, opts, skip)
    parts, prep, model_error, model_s = [], None, None, 0.0
    try:
        for item in items:
            if isinstance(item, Prepared):
                prep = item
                continue
            if model_error is not None:
                continue  # the rest of the file is decoded to its end, not analysed
            t = time.perf_counter()
            try:
                outs = run_model(lm, item.waves, opts, frame_feats=frame_feats)
            except MODEL_ERRORS as e:
                model_error = f"model failed: {first_line(e)}"
                continue
            finally:
                model_s += time.perf_counter() - t
            if outputs is not None:
                outputs.extend(outs)
            parts.append(analysed(item, outs, opts))
            item.release()
    except Exception as e:  # noqa: BLE001 — one file's surprise never stops the batch
        failed = Prepared(Path(path), "", meta).fail(f"internal error: {type(e).__name__}: "
                                                     f"{first_line(e)}")
        return Processed(failed, failed.result)
    prep.timings["model"] = model_s
    if prep.skipped:
        return Processed(prep, None)
    if model_error is not None and prep.result is None:
        prep.fail(model_error)
    return Processed(prep, assemble(prep, parts))


def ingest_paths(paths: Iterable[str | Path], writer: SessionWriter, lm: LoadedModel,
                 opts: IngestOptions = IngestOptions(),
                 metadata: dict[Path, SessionMeta] | None = None, force: bool = False,
                 progress: ProgressHook | None = None, executor: str = executors.DEFAULT,
                 workers: int | None = None) -> Report:
    """Ingest files and folders through `writer`; every file ends ok, failed or skipped.

    Ctrl-C (or SIGTERM turned into KeyboardInterrupt) stops the run: what was committed stays,
    the run is marked interrupted, and the report says so."""
    chosen = executors.get(executor)  # UsageError (a ValueError) naming the choices
    if not chosen.here:
        raise executors.UsageError(f"the {executor} executor runs a whole ingest of its own "
                                   f"(emoscope ingest --executor {executor}), not ingest_paths")
    files = expand(paths)
    meta_for = meta_lookup(metadata or {})
    progress = progress or (lambda event, info: None)
    report = Report(executor=executor)
    started = time.perf_counter()
    # The run is the single writer: a lock held elsewhere (a reader, the worker between jobs)
    # is waited out, however long, never a traceback.
    writer.store.retry_s = None
    writer.store.on_wait = lambda s: progress("waiting", {"seconds": s})
    writer.store.migrate()
    from ingest.prosody import use as use_prosody
    from ingest.speech_to_text import use
    asr = use(opts.asr)  # every executor's analysers transcribe with it (or not at all)
    use_prosody()  # librosa's kernels loaded before the first file, not inside its timing
    run_id = writer.start_run(lm.name, lm.path, lm.trained, lm.device, opts.engine,
                              {**opts.to_dict(), "executor": executor}, asr=asr,
                              weights=lm.weights)
    status = "finished"
    try:
        chosen.load()(Batch(files, meta_for, writer, lm, opts, force, run_id, report, progress,
                            workers))
    except KeyboardInterrupt:
        report.interrupted, status = True, "interrupted"
    finally:
        report.wall_s = time.perf_counter() - started
        if not report.busy:  # serial: each stage ran on one thread
            report.busy = serial_shares(report.timings, report.wall_s)
        writer.finish_run(run_id, len(report.ok), len(report.failed), len(report.skipped),
                          report.audio_s, status)
    return report


def serial_shares(timings: dict, wall: float) -> dict[str, float]:
    wall = max(wall, 1e-9)
    return {"prepare": (timings["decode"] + timings["vad"]) / wall,
            "model": timings["model"] / wall, "store": timings["store"] / wall}


def run_serial(batch: Batch) -> None:
    """The serial executor (registered in ingest/executors.py)."""
    batch.progress("start", {"files": len(batch.files), "executor": "serial", "workers": 1})
    _serial(batch.files, batch.meta_for, batch.writer, batch.lm, batch.opts, batch.force,
            batch.run_id, batch.report, batch.progress)


def _serial(files: list[Path], meta_for, writer: SessionWriter, lm: LoadedModel,
            opts: IngestOptions, force: bool, run_id: str, report: Report,
            progress: ProgressHook) -> None:
    # What is stored, asked once: the prepare thread never opens the database beside the
    # writer (the final word on a copy stored earlier in this run is `stored_before`).
    skip = None if force else writer.known_audio()
    started = time.perf_counter()
    with _Prefetch(files, meta_for, opts, skip) as ahead:
        for i, path in enumerate(files):
            done = process_file(path, meta_for(path), lm, opts, items=ahead.items(i))
            for k, v in done.prep.timings.items():
                report.timings[k] = report.timings.get(k, 0.0) + v
            result = done.result
            if result is not None and stored_before(writer, result, force):
                result = None
            t0 = time.perf_counter()
            if result is not None and result.sha256:
                writer.save(result, run_id)
            report.timings["store"] += time.perf_counter() - t0
            note = "; ".join(done.prep.notes) or None
            status = report.add(shown(path), result, note)
            progress("file", {"path": shown(path), "status": status, "note": note,
                              "error": result.error if result is not None else None,
                              "audio_s": result.duration_s if result is not None else 0.0})
            progress("busy", serial_shares(report.timings, time.perf_counter() - started))


class _Prefetch:
    """The serial executor's one helper thread: prepares the next file while the model runs
    on this one, handing parts over through a two-item queue (so memory stays bounded)."""

    _DONE = object()

    def __init__(self, files: list[Path], meta_for, opts: IngestOptions, skip: Skip | None):
        self.files, self.meta_for, self.opts, self.skip = files, meta_for, opts, skip
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="prepare", daemon=True)

    def __enter__(self) -> "_Prefetch":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        while self.thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self.q.get(timeout=0.05)
            except queue.Empty:
                pass

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        for i, path in enumerate(self.files):
            try:
                for item in prepare_stream(path, self.meta_for(path), self.opts, self.skip):
                    if not self._put((i, item)):
                        return
            except Exception as e:  # noqa: BLE001 — handed to the consumer as this file's error
                if not self._put((i, e)):
                    return

    def items(self, i: int) -> Iterator[Part | Prepared]:
        """File `i`'s items, up to and including its summary."""
        while True:
            j, item = self.q.get()
            assert j == i, (j, i)
            if isinstance(item, Exception):
                raise item
            yield item
            if isinstance(item, Prepared):
                return
