"""From audio files to stored sessions: decode → quality → VAD → emotion2vec+ → store.

Decoding and VAD of the next file run on a CPU thread while the current file is on the model,
so a GPU is not left waiting for the decoder.
"""
from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from core import quality
from core.audio import SAMPLE_RATE, AudioError, decode, default_roles, sha256_of
from core.curves import pool
from core.labels import LABELS
from core.metrics import fallback_action
from core.store import Store
from core.types import (ChannelQuality, Curve, Segment, SessionMeta, SessionResult,
                        segment_id_for, session_id_for)
from ingest.model import LoadedModel, Output
from ingest.options import IngestOptions
from ingest.vad import speech_spans

AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".wma",
                  ".webm", ".oga", ".aif", ".aiff", ".au", ".amr", ".3gp", ".caf", ".mka"}


@dataclass
class Report:
    """What an ingest run did, file by file, for the closing summary."""
    ok: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    audio_s: float = 0.0
    wall_s: float = 0.0
    timings: dict = field(default_factory=lambda: {"decode": 0.0, "vad": 0.0, "model": 0.0,
                                                     "store": 0.0})

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


@dataclass
class Prepared:
    """A decoded file with its speech found, waiting for the model."""
    path: Path
    sha256: str
    meta: SessionMeta
    result: SessionResult | None = None  # set when the file already failed or was skipped
    skipped: bool = False
    streamed: bool = False  # long file: decoded and analysed block by block (ingest/streamed)
    samples: np.ndarray | None = None
    codec: str | None = None
    rate: int | None = None
    roles: tuple[str, ...] = ()
    channels: tuple[ChannelQuality, ...] = ()
    spans: list[tuple[int, float, float]] = field(default_factory=list)  # (channel, start, end)
    timings: dict = field(default_factory=dict)


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders walked for audio files (sorted, so runs are repeatable)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*")
                              if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES))
        else:
            out.append(p)
    return out


def _failed(path: Path, sha: str, meta: SessionMeta, reason: str) -> SessionResult:
    return SessionResult(session_id_for(sha), str(path), path.name, sha, 0.0, 0, meta,
                         status="failed", error=reason)


def prepare(path: Path, meta: SessionMeta, opts: IngestOptions, store: Store | None,
            force: bool) -> Prepared:
    t0 = time.perf_counter()
    try:
        sha = sha256_of(path)
    except OSError as e:
        reason = "file not found" if isinstance(e, FileNotFoundError) else f"unreadable: {e.strerror}"
        # Nothing to identify it by, so it is reported but not stored.
        return Prepared(path, "", meta, result=_failed(path, "", meta, reason))
    prep = Prepared(path, sha, meta)
    if store is not None and not force and store.status_of(sha) == "ok":
        prep.skipped = True
        return prep
    from ingest.streamed import is_long
    if is_long(path):  # never held whole in memory: analyse() streams it
        prep.streamed = True
        return prep
    try:
        dec = decode(path)
    except AudioError as e:
        prep.result = _failed(path, sha, meta, str(e))
        return prep
    t1 = time.perf_counter()
    roles = meta.roles or (opts.stereo_roles if dec.n_channels == 2 else default_roles(dec.n_channels))
    if len(roles) != dec.n_channels:
        prep.result = _failed(path, sha, meta, f"{len(roles)} speaker roles given for "
                                               f"{dec.n_channels} channels")
        return prep
    chans, spans = [], []
    for ch, x in enumerate(dec.samples):
        found = speech_spans(x, opts)
        level, clipped, flags = quality.measure(x, SAMPLE_RATE)
        speech_s = sum(e - s for s, e in found)
        chans.append(ChannelQuality(ch, roles[ch], x.size / SAMPLE_RATE, level, clipped,
                                    speech_s, flags))
        spans.extend((ch, s, e) for s, e in found)
    t2 = time.perf_counter()
    prep.samples, prep.codec, prep.rate = dec.samples, dec.codec, dec.source_rate
    prep.roles, prep.channels = tuple(roles), tuple(chans)
    prep.spans = sorted(spans, key=lambda s: (s[1], s[0]))
    prep.timings = {"decode": t1 - t0, "vad": t2 - t1}
    if not spans:
        loudest = max(c.rms for c in chans)
        prep.result = _failed(path, sha, meta, "no speech found (silent or too quiet: "
                                               f"RMS {loudest:.4f})")
    return prep


def finish(prep: Prepared, outputs: list[Output], opts: IngestOptions) -> SessionResult:
    """Turn model outputs for a prepared file into a SessionResult."""
    sid = session_id_for(prep.sha256)
    segments, per_channel = [], {}
    counters: dict[int, int] = {}
    for (ch, s, e), out in zip(prep.spans, outputs):
        n = counters.get(ch, 0)
        counters[ch] = n + 1
        x = prep.samples[ch, int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)]
        level, clipped, flags = quality.measure(x, SAMPLE_RATE)
        top = int(np.argmax(out.scores))
        label, conf = LABELS[top], float(out.scores[top])
        segments.append(Segment(segment_id_for(sid, ch, n), ch, prep.roles[ch], round(s, 3),
                                round(e, 3), label, conf, out.scores, out.embedding, level,
                                clipped, flags, fallback_action(label, conf, opts.low_confidence)))
        t, probs = pool(out.frame_logits, s, opts.curve_hop_s, opts.curve_window_s)
        per_channel.setdefault(ch, []).append((t, probs))
    curves = tuple(
        Curve(ch, prep.roles[ch], np.concatenate([t for t, _ in parts]),
              np.concatenate([p for _, p in parts]))
        for ch, parts in sorted(per_channel.items()))
    return SessionResult(sid, str(prep.path), prep.path.name, prep.sha256,
                         prep.samples.shape[1] / SAMPLE_RATE, prep.samples.shape[0], prep.meta,
                         prep.channels, tuple(segments), curves, codec=prep.codec,
                         sample_rate=prep.rate)


def infer_function(engine: str, batch_seconds: float | None = None
                   ) -> Callable[[LoadedModel, list[np.ndarray]], list[Output]]:
    """The batched engine (default) or FunASR's own loop; both give the same outputs."""
    if engine == "reference":
        from ingest.model import reference_infer
        return reference_infer
    from ingest.engine import EngineOptions, infer
    return functools.partial(infer, opts=EngineOptions(batch_seconds=batch_seconds))


def analyse(prep: Prepared, lm: LoadedModel, opts: IngestOptions) -> SessionResult:
    if prep.streamed:
        from ingest.streamed import analyse_streamed
        return analyse_streamed(prep, lm, opts)
    waves = [prep.samples[ch, int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)]
             for ch, s, e in prep.spans]
    outputs = infer_function(opts.engine, opts.batch_seconds)(lm, waves)
    return finish(prep, outputs, opts)


ProgressHook = Callable[[str, dict], None]


def ingest_paths(paths: Iterable[str | Path], store: Store, lm: LoadedModel,
                 opts: IngestOptions = IngestOptions(), metadata: dict[Path, SessionMeta] | None = None,
                 force: bool = False, progress: ProgressHook | None = None,
                 derived=None) -> Report:
    """Ingest files and folders into `store`; every file ends ok, failed or skipped."""
    files = expand(paths)
    metadata = metadata or {}
    report = Report()
    progress = progress or (lambda event, info: None)
    started = time.perf_counter()
    store.migrate()
    run_id = store.start_run(lm.name, lm.path, lm.trained, lm.device, opts.engine, opts.to_dict())
    progress("start", {"files": len(files)})

    def meta_for(p: Path) -> SessionMeta:
        return metadata.get(p.resolve(), metadata.get(Path(p.name), SessionMeta()))

    with ThreadPoolExecutor(max_workers=1) as pool_:
        pending = pool_.submit(prepare, files[0], meta_for(files[0]), opts, store, force) \
            if files else None
        for i, path in enumerate(files):
            prep = pending.result()
            pending = (pool_.submit(prepare, files[i + 1], meta_for(files[i + 1]), opts, store,
                                    force) if i + 1 < len(files) else None)
            for k, v in prep.timings.items():
                report.timings[k] += v
            if prep.skipped:
                report.skipped.append(str(path))
                progress("file", {"path": str(path), "status": "skipped", "audio_s": 0.0})
                continue
            result = prep.result
            if result is None:
                t0 = time.perf_counter()
                try:
                    result = analyse(prep, lm, opts)
                except (RuntimeError, ValueError, MemoryError) as e:
                    result = _failed(path, prep.sha256, prep.meta,
                                     f"model failed: {str(e).splitlines()[0][:200]}")
                report.timings["model"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if result.sha256:
                store.save_session(result, run_id, derived=derived)
            report.timings["store"] += time.perf_counter() - t0
            if result.status == "ok":
                report.ok.append(str(path))
                report.audio_s += result.duration_s
            else:
                report.failed.append((str(path), result.error or "failed"))
            progress("file", {"path": str(path), "status": result.status,
                              "error": result.error, "audio_s": result.duration_s})
    report.wall_s = time.perf_counter() - started
    store.finish_run(run_id, len(report.ok), len(report.failed), len(report.skipped),
                     report.audio_s)
    return report
