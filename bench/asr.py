"""Speech-to-text, measured: word error rate against known text and real-time factor per
backend and voice, and what transcribing costs an ingest — all in one run, side by side.

1. WER and RTF per backend × voice: bench/speech.py's sentences spoken by flite's 16 kHz voices
   (slt, rms, awb) and its 8 kHz voice kal (a phone line), each sentence one piece, as the
   ingest hands a speech segment to the backend. RTF = decoding seconds / audio seconds (lower
   is faster), in CPU seconds of this process (steady on a shared machine) and in wall seconds. `sensevoice-tiny` has random weights: its RTF is the architecture's cost at
   toy size, its WER means nothing and is not shown. SenseVoiceSmall and Whisper are measured
   only where their weights are on this machine.
2. Ingest × real time (audio seconds per wall second) of the same flite calls with
   `--asr none` and `--asr pocketsphinx` (tiny-random emotion model, serial executor), and
   the WER of the stored transcripts against the calls' scripts.

Usage: python bench/asr.py [--sentences 14] [--calls 2] [--backends pocketsphinx,sensevoice-tiny]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.speech import SENTENCES  # noqa: E402
from ingest import speech_to_text as stt  # noqa: E402

VOICES = ("slt", "rms", "awb", "kal")
SR = 16_000


def flite(text: str, voice: str) -> np.ndarray:
    """flite speech as 16 kHz float32 mono (kal's 8 kHz resampled, as a phone line would be)."""
    import subprocess

    from core.media.audio import decode
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "s.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wav)], check=True,
                       capture_output=True)
        return decode(wav).samples.mean(axis=0).astype(np.float32)


def per_voice(backend_name: str, sentences: list[str]) -> list[dict]:
    try:
        backend = stt.load(backend_name)
    except stt.AsrUnavailable as e:
        return [{"backend": backend_name, "voice": "-", "skipped": str(e)}]
    out = []
    for voice in VOICES:
        waves = [flite(s, voice) for s in sentences]
        backend.transcribe(waves[:1])  # warm
        t, c = time.perf_counter(), time.process_time()
        heard = backend.transcribe(waves)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        audio = sum(w.size for w in waves) / SR
        ref = " ".join(sentences)
        hyp = " ".join(h.text for h in heard)
        trained = not backend.name.endswith("tiny-random")
        out.append({"backend": backend.name, "voice": voice, "audio_s": audio,
                    "wer": stt.word_error_rate(ref, hyp) if trained else None,
                    "rtf": wall / audio, "rtf_cpu": cpu / audio})
    return out


def call_files(folder: Path, n: int) -> list[tuple[Path, dict[int, str]]]:
    """`n` stereo flite calls (agent rms, customer slt), each with its script per channel."""
    from tests.audio_gen import write
    out = []
    for k in range(n):
        lines = SENTENCES[k % len(SENTENCES):] + SENTENCES[:k % len(SENTENCES)]
        chans = [[], []]
        script = {0: [], 1: []}
        for i, text in enumerate(lines[:8]):
            ch = i % 2
            w = flite(text, ("rms", "slt")[ch])
            for c in (0, 1):
                chans[c].append(w if c == ch else np.zeros_like(w))
                chans[c].append(np.zeros(int(0.6 * SR), np.float32))
            script[ch].append(text)
        x = np.stack([np.concatenate(c) for c in chans]) * 0.7
        path = write(folder / f"call{k}.wav", x)
        out.append((path, {c: " ".join(t) for c, t in script.items()}))
    return out


def ingest_cost(calls, asr_names: list[str]) -> list[dict]:
    from core.guard.access import operator
    from core.storage.queries import Reader
    from core.analysis.rules import load_rules
    from core.storage.sessions import SessionWriter
    from core.storage.store import Store
    from ingest.model import load as load_model
    from ingest.options import IngestOptions
    from ingest.pipeline import ingest_paths
    from core.analysis.rules import DEFAULT_RULES
    rules = load_rules(DEFAULT_RULES)
    lm = load_model("tiny-random", "cpu")
    audio = 0.0
    out = []
    for name in asr_names:
        with tempfile.TemporaryDirectory() as d:
            store = Store(Path(d) / "db.duckdb")
            store.migrate()
            writer = SessionWriter(store, rules)
            opts = IngestOptions(asr=name)
            t, c = time.perf_counter(), time.process_time()
            ingest_paths([p for p, _ in calls], writer, lm, opts, executor="serial")
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            r = Reader(store, operator())
            audio = float(r.session_rows().duration_s.sum())
            utts = r.utterances()
            wers = []
            for path, script in calls:
                sess = r.session_rows()
                sid = sess[sess.file_name == path.name].session_id.iloc[0]
                for ch, text in script.items():
                    said = " ".join(utts[(utts.session_id == sid) & (utts.channel == ch)].text)
                    wers.append(stt.word_error_rate(text, said))
            out.append({"asr": name, "audio_s": audio, "wall_s": wall, "x_rt": audio / wall,
                        "cpu_s": cpu, "x_rt_cpu": audio / cpu,
                        "wer": float(np.mean(wers)) if name != "none" else None})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=len(SENTENCES))
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--backends", default="pocketsphinx,sensevoice-tiny,sensevoice,whisper")
    args = ap.parse_args(argv)
    sentences = SENTENCES[:args.sentences]
    print(f"# bench/asr.py — {len(sentences)} sentences per voice, {args.calls} calls\n")
    print("| backend | voice | audio (s) | WER | RTF (CPU s / audio s) | RTF (wall) |")
    print("|---|---|---|---|---|---|")
    for name in (args.backends.split(",") if sentences else []):
        for row in per_voice(name, sentences):
            if "skipped" in row:
                print(f"| {row['backend']} | – | – | not measured: {row['skipped']} | – | – |")
                continue
            wer = f"{row['wer']:.3f}" if row["wer"] is not None else "meaningless (random weights)"
            print(f"| {row['backend']} | {row['voice']} | {row['audio_s']:.1f} | {wer} | "
                  f"{row['rtf_cpu']:.3f} | {row['rtf']:.3f} |")
    if args.calls:
        with tempfile.TemporaryDirectory() as d:
            calls = call_files(Path(d), args.calls)
            rows = ingest_cost(calls, ["none", "pocketsphinx"])
        print("\n| ingest --asr | audio (s) | CPU (s) | × real time (CPU) | wall (s) | "
              "× real time (wall) | WER of stored transcripts |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            wer = f"{r['wer']:.3f}" if r["wer"] is not None else "–"
            print(f"| {r['asr']} | {r['audio_s']:.1f} | {r['cpu_s']:.1f} | {r['x_rt_cpu']:.1f} | "
                  f"{r['wall_s']:.1f} | {r['x_rt']:.1f} | {wer} |")
        if len(rows) == 2:
            print(f"\nspeech-to-text costs the ingest {rows[1]['cpu_s'] / rows[0]['cpu_s']:.2f}× "
                  f"the CPU time ({rows[1]['wall_s'] / rows[0]['wall_s']:.2f}× the wall time) of "
                  "ingesting without it (same files, same run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
