"""Benchmark: the serial executor against the streaming one, end to end, on the same files.

    python bench/ingest.py --hours 0.5                       # tiny-random, --device auto
    python bench/ingest.py --model-shape large --device cuda --hours 8 --speech speech.flac

It makes its own corpus (cached under bench/out/): N distinct recordings — stereo calls (agent
and customer taking turns) and mono diaries, 30 s to 3 min each — cut from espeak-ng speech
(or from `--speech FILE`, speech made elsewhere, where espeak-ng is missing) and written as
WAV, MP3, Opus and M4A. Each executor then ingests the whole corpus into a fresh store, in a
fresh process (model loaded and warmed before the clock starts); with `--rounds 2` the order
alternates. The two stores must hold the same rows (model outputs within 1e-4). The table
gives wall time, × real time, how busy each stage was, peak memory (the main process and
all of its processes together) and, on CUDA, peak GPU memory. The last line is
`ratio: X.XX` (streaming ÷ serial throughput). A benchmark, not a test: it asserts nothing.

`--model-shape base|large` uses random weights in the true shapes of emotion2vec_plus_base or
_large (ingest/tiny.py), as bench/inference.py does.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.speech import SR, espeak_pieces  # noqa: E402

FORMATS = ("pcm16.wav", "mp3", "opus.ogg", "m4a")


# -- the corpus ---------------------------------------------------------------------------
def utterances(speech: Path | None) -> list[np.ndarray]:
    """Pieces of speech to build recordings from: espeak-ng sentences in several voices, or a
    carried speech file cut where its speech pauses."""
    from core.media.audio import decode
    if speech is not None:
        from ingest.options import IngestOptions
        from ingest.vad import speech_spans
        x = decode(speech).samples.mean(axis=0)
        return [x[int(s * SR):int(e * SR)] for s, e in speech_spans(x, IngestOptions())]
    return espeak_pieces()


def save_speech(path: Path) -> None:
    """The espeak-ng pieces, with pauses, as one file to carry where espeak-ng is missing."""
    from tests.audio_gen import write
    gap = np.zeros(SR // 2, np.float32)
    write(path, np.concatenate([y for u in utterances(None) for y in (u, gap)]), "flac")


def recording(pieces: list[np.ndarray], seconds: float, stereo: bool, seed: int) -> np.ndarray:
    """Turns of speech with pauses, about `seconds` long; a call alternates its channels."""
    rng = np.random.default_rng(seed)
    chans = [[], []] if stereo else [[]]
    n = 0
    turn = 0
    while n < seconds * SR:
        u = pieces[int(rng.integers(len(pieces)))] * rng.uniform(0.25, 1.0)
        gap = np.zeros(int(rng.uniform(0.2, 1.5) * SR), np.float32)
        for c, parts in enumerate(chans):
            parts += [u if c == turn else np.zeros_like(u), gap]
        n += u.size + gap.size
        if stereo and rng.random() < 0.7:
            turn = 1 - turn
    x = np.stack([np.concatenate(p) for p in chans]).astype(np.float32)
    x += rng.normal(0, 3e-4, x.shape).astype(np.float32)  # a room: no two files alike
    return x


_PIECES: list[np.ndarray] = []


def _keep_pieces(pieces: list[np.ndarray]) -> None:
    _PIECES[:] = pieces  # once per corpus process, not once per file


def _write_one(job) -> tuple[str, float]:
    from tests.audio_gen import write
    path, seconds, stereo, fmt, seed = job
    x = recording(_PIECES, seconds, stereo, seed)
    write(Path(path), x, fmt)
    return path, x.shape[1] / SR


def corpus(args) -> tuple[Path, float, int]:
    """The corpus folder (made once per settings), its audio seconds and its file count."""
    key = f"{args.hours:g}h-{args.files or 'auto'}-{'speech' if args.speech else 'espeak'}"
    folder = Path(args.out) / f"corpus-{key}"
    manifest = folder / "corpus.json"
    if manifest.exists():
        info = json.loads(manifest.read_text())
        return folder, info["audio_s"], info["files"]
    folder.mkdir(parents=True, exist_ok=True)
    pieces = utterances(Path(args.speech) if args.speech else None)
    rng = np.random.default_rng(7)
    total = args.hours * 3600
    count = args.files or max(2, round(total / 105))
    lengths = rng.uniform(30, 180, count)
    lengths *= total / lengths.sum()
    jobs = []
    for i, seconds in enumerate(lengths):
        stereo = i % 2 == 0
        fmt = FORMATS[(i // 2) % len(FORMATS)]
        name = f"{'call' if stereo else 'diary'}-{i:05d}.{fmt}"
        jobs.append((str(folder / name), float(seconds), stereo, fmt, 1000 + i))
    with ProcessPoolExecutor(max_workers=os.cpu_count(), initializer=_keep_pieces,
                             initargs=(pieces,)) as pool:
        audio_s = sum(s for _, s in pool.map(_write_one, jobs))
    manifest.write_text(json.dumps({"audio_s": audio_s, "files": count}))
    return folder, audio_s, count


# -- one executor's run, in its own process ------------------------------------------------
def _tree_rss() -> tuple[int, int]:
    """(this process's RSS, RSS of it and every process below it), in bytes."""
    me = os.getpid()
    parent, rss = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            parent[int(d.name)] = int(fields[1])
            rss[int(d.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, grew = {me}, True
    while grew:
        grew = False
        for pid, pp in parent.items():
            if pp in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return rss.get(me, 0), sum(rss.get(p, 0) for p in tree)


def run_one(args) -> None:
    """Ingest the corpus with one executor; print one JSON line of figures."""
    import torch

    from core.storage.sessions import SessionWriter
    from core.storage.store import Store
    from core.analysis.rules import load_rules
    from ingest.engine import warm_up
    from ingest.model import load
    from ingest.options import IngestOptions
    from ingest.pipeline import ingest_paths
    from ingest.tiny import build

    lm = load("tiny-random" if args.model_shape == "tiny" else str(build(args.model_shape)),
              args.device)
    warm_up(lm)
    if args.serial_threads and args._run == "serial":
        torch.set_num_threads(args.serial_threads)
    opts = IngestOptions(batch_seconds=args.batch_seconds)
    writer = SessionWriter(Store(args.db), load_rules(ROOT / "core" / "default_rules.toml"))
    peak = [0, 0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            me, tree = _tree_rss()
            peak[0], peak[1] = max(peak[0], me), max(peak[1], tree)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if lm.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    report = ingest_paths([args.corpus], writer, lm, opts, executor=args._run,
                          workers=args.workers)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    gpu = torch.cuda.max_memory_allocated() if lm.device.startswith("cuda") else None
    print(json.dumps({"executor": args._run, "wall_s": wall, "audio_s": report.audio_s,
                      "ok": len(report.ok), "failed": len(report.failed),
                      "busy": report.busy, "timings": report.timings, "workers": report.workers,
                      "rss_main": peak[0], "rss_all": peak[1], "gpu_peak": gpu,
                      "device": torch.cuda.get_device_name() if gpu is not None else "cpu",
                      "peaks": report.peaks}))


def launch(args, executor: str, db: Path) -> dict:
    cmd = [sys.executable, __file__, "--_run", executor, "--db", str(db), "--corpus",
           str(args.corpus_dir), "--model-shape", args.model_shape, "--device", args.device]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.batch_seconds:
        cmd += ["--batch-seconds", str(args.batch_seconds)]
    if args.serial_threads:
        cmd += ["--serial-threads", str(args.serial_threads)]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    res = subprocess.run(cmd, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": path})
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        sys.exit(f"{executor} run failed:\n{res.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=0.5, help="audio in the corpus")
    ap.add_argument("--files", type=int, default=None, help="recordings (default: ~105 s each)")
    ap.add_argument("--model-shape", choices=["tiny", "base", "large"], default="tiny")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--workers", type=int, default=None, help="prepare processes (streaming)")
    ap.add_argument("--batch-seconds", type=float, default=None)
    ap.add_argument("--serial-threads", type=int, default=None,
                    help="CPU: torch threads for the serial run's model (default: one per "
                         "core, as `emoscope ingest` sets; the streaming run gives the model "
                         "the cores its prepare processes leave)")
    ap.add_argument("--speech", default=None, help="speech to cut the corpus from (any audio "
                                                   "file) instead of espeak-ng")
    ap.add_argument("--save-speech", default=None, help="write the espeak-ng speech to this "
                                                        "file (FLAC) to carry, and stop")
    ap.add_argument("--rounds", type=int, default=1, help="pairs of runs, order alternating")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"), help="corpus and stores")
    ap.add_argument("--_run", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("EMOSCOPE_CACHE", str(ROOT / ".cache" / "emoscope"))
    if args._run:
        return run_one(args)
    if args.save_speech:
        return save_speech(Path(args.save_speech))

    from core.storage.store import Store
    from tests.store_compare import differences

    t0 = time.perf_counter()
    args.corpus_dir, audio_s, n_files = corpus(args)
    made_s = time.perf_counter() - t0
    for f in sorted(args.corpus_dir.iterdir()):  # the page cache warm for both executors
        f.read_bytes()
    stores = Path(tempfile.mkdtemp(prefix="ingest-bench-", dir=args.out))
    runs: dict[str, list[dict]] = {"serial": [], "streaming": []}
    for r in range(args.rounds):
        for executor in (("serial", "streaming") if r % 2 == 0 else ("streaming", "serial")):
            runs[executor].append(launch(args, executor, stores / f"{executor}-{r}.duckdb"))
    same = differences(Store(stores / "serial-0.duckdb"), Store(stores / "streaming-0.duckdb"))

    first = runs["streaming"][0]
    print(f"corpus: {n_files} recordings, {audio_s / 3600:.2f} h (stereo calls and mono diaries; "
          f"{', '.join(f.split('.')[-1].upper() for f in FORMATS)}), "
          f"{'from ' + args.speech if args.speech else 'espeak-ng'}; made in {made_s:.0f} s")
    threads = f"; serial model on {args.serial_threads} thread(s)" if args.serial_threads else ""
    print(f"model: {args.model_shape}{'-random' if args.model_shape == 'tiny' else ' shapes, random weights'}"
          f" on {first['device']}; streaming with {first['workers']} prepare process(es); "
          f"{args.rounds} round(s){threads}")
    head = (f"{'executor':<11}{'wall s':>8}{'× real time':>13}{'prepare':>9}{'model':>7}"
            f"{'store':>7}{'RSS main MB':>13}{'RSS all MB':>12}{'GPU MB':>8}")
    print("busy: share of each stage's capacity in use (prepare: over all its processes)")
    print(head)
    print("-" * len(head))
    thr = {}
    for executor, results in runs.items():
        wall = sum(x["wall_s"] for x in results)
        thr[executor] = sum(x["audio_s"] for x in results) / wall
        busy = {k: np.mean([x["busy"].get(k, 0.0) for x in results])
                for k in ("prepare", "model", "store")}
        gpu = max((x["gpu_peak"] or 0) for x in results)
        print(f"{executor:<11}{wall / len(results):>8.1f}{thr[executor]:>13.1f}"
              f"{busy['prepare']:>9.0%}{busy['model']:>7.0%}{busy['store']:>7.0%}"
              f"{max(x['rss_main'] for x in results) / 2**20:>13.0f}"
              f"{max(x['rss_all'] for x in results) / 2**20:>12.0f}"
              f"{(f'{gpu / 2**20:.0f}' if gpu else '—'):>8}")
    ok = {e: (r[0]["ok"], r[0]["failed"]) for e, r in runs.items()}
    print(f"stores: {'the same rows' if not same else 'DIFFER: ' + '; '.join(same)} "
          f"(ok/failed serial {ok['serial']}, streaming {ok['streaming']}; model outputs "
          f"within 1e-4); streaming peaks {json.dumps(first['peaks'])}")
    print(f"ratio: {thr['streaming'] / thr['serial']:.2f}")


if __name__ == "__main__":
    main()
