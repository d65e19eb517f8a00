"""From audio files to stored sessions: decode → quality → VAD → emotion2vec+ → store.

Decoding and VAD of the next file run on a CPU thread while the current file is on the model,
so a GPU is not left waiting for the decoder.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from core import quality
from core.audio import SAMPLE_RATE, AudioError, decode, default_roles, sha256_of
from core.errors import first_line
from core.sessions import SessionWriter
from core.types import ChannelQuality, SessionMeta, SessionResult
from ingest.assemble import Prepared, assemble, infer_function
from ingest.model import LoadedModel
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


def prepare(path: Path, meta: SessionMeta, opts: IngestOptions,
            already_stored: Callable[[str], bool] | None = None) -> Prepared:
    """Hash, decode, quality and VAD; `already_stored(sha256)` True skips the file."""
    t0 = time.perf_counter()
    try:
        sha = sha256_of(path)
    except OSError as e:
        reason = "file not found" if isinstance(e, FileNotFoundError) else f"unreadable: {e.strerror}"
        # Nothing to identify it by, so it is reported but not stored.
        return Prepared(path, "", meta, result=SessionResult.failed(path, "", meta, reason))
    prep = Prepared(path, sha, meta)
    if already_stored is not None and already_stored(sha):
        prep.skipped = True
        return prep
    from ingest.streamed import is_long
    if is_long(path):  # never held whole in memory: analyse() streams it
        prep.streamed = True
        return prep
    try:
        dec = decode(path)
    except AudioError as e:
        prep.result = SessionResult.failed(path, sha, meta, str(e))
        return prep
    t1 = time.perf_counter()
    roles = meta.roles or (opts.stereo_roles if dec.n_channels == 2 else default_roles(dec.n_channels))
    if len(roles) != dec.n_channels:
        prep.result = SessionResult.failed(path, sha, meta, f"{len(roles)} speaker roles given for "
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
        prep.result = SessionResult.failed(path, sha, meta, "no speech found (silent or too quiet: "
                                               f"RMS {loudest:.4f})")
    return prep


def analyse(prep: Prepared, lm: LoadedModel, opts: IngestOptions) -> SessionResult:
    if prep.streamed:
        from ingest.streamed import analyse_streamed
        return analyse_streamed(prep, lm, opts)
    waves = [prep.samples[ch, int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)]
             for ch, s, e in prep.spans]
    outputs = infer_function(opts.engine, opts.batch_seconds)(lm, waves)
    return assemble(prep, outputs, opts)


ProgressHook = Callable[[str, dict], None]


def ingest_paths(paths: Iterable[str | Path], writer: SessionWriter, lm: LoadedModel,
                 opts: IngestOptions = IngestOptions(), metadata: dict[Path, SessionMeta] | None = None,
                 force: bool = False, progress: ProgressHook | None = None) -> Report:
    """Ingest files and folders through `writer`; every file ends ok, failed or skipped."""
    files = expand(paths)
    metadata = metadata or {}
    report = Report()
    progress = progress or (lambda event, info: None)
    started = time.perf_counter()
    writer.store.migrate()
    skip = None if force else writer.already_stored
    run_id = writer.start_run(lm.name, lm.path, lm.trained, lm.device, opts.engine, opts.to_dict())
    progress("start", {"files": len(files)})

    def meta_for(p: Path) -> SessionMeta:
        return metadata.get(p.resolve(), metadata.get(Path(p.name), SessionMeta()))

    with ThreadPoolExecutor(max_workers=1) as pool_:
        pending = pool_.submit(prepare, files[0], meta_for(files[0]), opts, skip) \
            if files else None
        for i, path in enumerate(files):
            prep = pending.result()
            pending = (pool_.submit(prepare, files[i + 1], meta_for(files[i + 1]), opts, skip)
                       if i + 1 < len(files) else None)
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
                    result = SessionResult.failed(path, prep.sha256, prep.meta,
                                                  f"model failed: {first_line(e)}")
                report.timings["model"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if result.sha256:
                writer.save(result, run_id)
            report.timings["store"] += time.perf_counter() - t0
            if result.status == "ok":
                report.ok.append(str(path))
                report.audio_s += result.duration_s
            else:
                report.failed.append((str(path), result.error or "failed"))
            progress("file", {"path": str(path), "status": result.status,
                              "error": result.error, "audio_s": result.duration_s})
    report.wall_s = time.perf_counter() - started
    writer.finish_run(run_id, len(report.ok), len(report.failed), len(report.skipped),
                     report.audio_s)
    return report
