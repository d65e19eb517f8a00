"""Write a synthetic store of the size the dashboard must stay fast on.

    .venv/bin/python bench/synth_store.py --db /tmp/bench.duckdb            # 10,000 × 50, dim 768
    .venv/bin/python bench/synth_store.py --db /tmp/s.duckdb --sessions 200 --segments 10000

Sessions are calls (agent + customer channels) and diaries (one speaker) spread over 13 weeks,
with agents, teams, customers and tags. Each segment has Dirichlet scores, the label of the top
score, and an embedding drawn around a centroid per label (so a 2-D map shows clusters).
Frames (the 9 curves, 10 per second) are written for the first --frame-sessions sessions only.
Rows go in through Arrow in chunks, one transaction each, then `Store.recompute` fills the
analytics tables (volatility, alerts).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.base.labels import LABELS  # noqa: E402
from core.storage import derived  # noqa: E402
from core.guard.access import operator  # noqa: E402
from core.storage.queries import Reader  # noqa: E402
from core.analysis.rules import load_rules  # noqa: E402
from core.storage.sessions import SessionWriter  # noqa: E402
from core.storage.store import Store  # noqa: E402
from core.storage.vector_keys import key_sql  # noqa: E402

TEAMS = ["billing", "support", "retention", "sales", "wellbeing"]
TAGS = ["refund", "delivery", "outage", "upgrade", "complaint", "follow-up", "sleep", "work"]
START = pd.Timestamp("2026-08-03")


def sessions_chunk(lo: int, hi: int, n_seg: np.ndarray, rng: np.random.Generator,
                   run_id: str) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    ids = [f"s{k:015d}" for k in range(lo, hi)]
    diary = (np.arange(lo, hi) % 5) == 4  # every fifth session is a one-voice diary
    rec = START + pd.to_timedelta(rng.integers(0, 91 * 24 * 3600, hi - lo), unit="s")
    sessions = pd.DataFrame({
        "session_id": ids, "source_path": [f"/synthetic/{s}.wav" for s in ids],
        "file_name": [f"{s}.wav" for s in ids], "sha256": [f"{k:064x}" for k in range(lo, hi)],
        "n_channels": np.where(diary, 1, 2), "codec": "pcm_s16le", "sample_rate": 16000,
        "status": "ok", "error": None,
        "agent_id": [None if d else f"a-{k % 60:03d}" for k, d in zip(range(lo, hi), diary)],
        "customer_id": [f"{'p' if d else 'c'}-{k * 7919 % 4000:04d}"
                        for k, d in zip(range(lo, hi), diary)],
        "team": [TEAMS[4] if d else TEAMS[k % 4] for k, d in zip(range(lo, hi), diary)],
        "recorded_at": rec, "tags": [[TAGS[k % 8], TAGS[(k * 3) % 8]] for k in range(lo, hi)],
        "run_id": run_id, "ingested_at": pd.Timestamp("2026-11-20")})
    chan, spans = [], []
    for i, sid in enumerate(ids):
        roles = ["speaker"] if diary[i] else ["agent", "customer"]
        n = int(n_seg[i])
        length = rng.uniform(1.0, 8.0, n)
        gap = rng.uniform(0.2, 3.0, n)
        start = np.concatenate([[0.5], np.cumsum(length + gap)[:-1] + 0.5])
        ch = np.arange(n) % len(roles)
        spans.append((sid, ch, [roles[c] for c in ch], start, start + length))
        dur = float(start[-1] + length[-1] + 1.0)
        sessions.loc[i, "duration_s"] = dur
        for c, r in enumerate(roles):
            chan.append((sid, c, r, dur, 0.05, 0.0, float(length[ch == c].sum()), []))
    channels = pd.DataFrame(chan, columns=["session_id", "channel", "speaker", "duration_s",
                                           "rms", "clip_ratio", "speech_s", "flags"])
    return sessions, channels, spans


def segments_table(spans: list, dim: int, centroids: np.ndarray,
                   rng: np.random.Generator) -> pa.Table:
    sid = np.concatenate([np.full(len(s[1]), s[0]) for s in spans])
    ch = np.concatenate([s[1] for s in spans])
    n = len(sid)
    # A per-session mood tilts the scores, so sessions differ in their mix.
    mood = np.concatenate([np.full(len(s[1]), rng.integers(0, 9)) for s in spans])
    alpha = np.full((n, 9), 0.6, np.float32)
    alpha[np.arange(n), mood] += 1.2
    alpha[:, LABELS.index("neutral")] += 0.8
    scores = rng.gamma(alpha).astype(np.float32)
    scores /= scores.sum(axis=1, keepdims=True)
    top = scores.argmax(axis=1)
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    emb += centroids[top]
    seq = np.zeros(n, int)  # n-th segment of its (session, channel)
    key = pd.Series(sid).str.cat(pd.Series(ch).astype(str), sep="-")
    seq[:] = key.groupby(key).cumcount().to_numpy()
    ids = [f"{s}-c{c}-{q:05d}" for s, c, q in zip(sid, ch, seq)]
    conf = scores[np.arange(n), top]
    labels = np.array(LABELS)[top]
    fallback = np.where((conf < 0.4) | np.isin(labels, ["other", "unknown"]),
                        "request_clarification", None)
    return pa.table({
        "segment_id": ids, "session_id": sid, "channel": ch.astype(np.int32),
        "speaker": np.concatenate([s[2] for s in spans]),
        "start_s": np.concatenate([s[3] for s in spans]),
        "end_s": np.concatenate([s[4] for s in spans]),
        "label": labels, "confidence": conf.astype(np.float64),
        "scores": pa.FixedSizeListArray.from_arrays(pa.array(scores.ravel()), 9),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim),
        "rms": np.full(n, 0.05), "clip_ratio": np.zeros(n),
        "flags": pa.array([[] for _ in range(n)], pa.list_(pa.string())),
        "fallback_action": fallback})


def frames_table(sessions: pd.DataFrame, channels: pd.DataFrame,
                 rng: np.random.Generator, hop: float = 0.1) -> pd.DataFrame:
    parts = []
    for c in channels.itertuples(index=False):
        t = np.arange(0.0, c.duration_s, hop)
        walk = np.cumsum(rng.normal(0, 0.3, (len(t), 9)), axis=0).astype(np.float32)
        p = np.exp(walk - walk.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        df = pd.DataFrame(p, columns=LABELS)
        df.insert(0, "t_s", t)
        df.insert(0, "channel", c.channel)
        df.insert(0, "session_id", c.session_id)
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def build(db: Path, n_sessions: int, n_segments: int, dim: int, frame_sessions: int,
          chunk: int = 500, analytics: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    if db.exists():
        db.unlink()
    store = Store(db)
    store.migrate()
    rules = load_rules()
    writer = SessionWriter(store, rules)
    run_id = writer.start_run("synthetic", "", False, "cpu", "synthetic", {"seed": seed})
    # Segments per session around the mean, summing to exactly n_segments.
    per = rng.integers(max(2, n_segments // n_sessions // 2),
                       n_segments // n_sessions * 3 // 2 + 1, n_sessions)
    per = np.maximum(2, np.round(per * n_segments / per.sum()).astype(int))
    per[-1] += n_segments - per.sum()
    centroids = rng.standard_normal((9, dim), dtype=np.float32) * 1.5
    t0 = time.perf_counter()
    for lo in range(0, n_sessions, chunk):
        hi = min(lo + chunk, n_sessions)
        sessions, channels, spans = sessions_chunk(lo, hi, per[lo:hi], rng, run_id)
        seg = segments_table(spans, dim, centroids, rng)
        with store.write() as con:
            for name, df in (("sessions", sessions), ("channels", channels)):
                con.register("chunk_df", df)
                con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM chunk_df")
                con.unregister("chunk_df")
            con.register("seg_arrow", seg)
            con.execute("INSERT INTO segments BY NAME SELECT * EXCLUDE (scores, embedding), "
                        "scores::FLOAT[9] AS scores, embedding::FLOAT[] AS embedding, "
                        f"{key_sql()} AS segment_key FROM seg_arrow")
            con.unregister("seg_arrow")
            if lo < frame_sessions:
                fr = frames_table(sessions, channels[channels.session_id.isin(
                    sessions.session_id.iloc[:max(0, frame_sessions - lo)])], rng)
                con.register("frame_df", fr)
                con.execute("INSERT INTO frames BY NAME SELECT * FROM frame_df")
                con.unregister("frame_df")
        print(f"\r{hi:,}/{n_sessions:,} sessions written ({time.perf_counter() - t0:.0f} s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    write_s = time.perf_counter() - t0
    out = {"sessions": n_sessions, "segments": int(per.sum()), "dim": dim,
           "write_s": round(write_s, 1)}
    if analytics:
        r = derived.recompute(store, rules, progress=lambda d, t: print(f"\ranalytics {d:,}/{t:,}", end="",
                                                        file=sys.stderr, flush=True))
        print(file=sys.stderr)
        out.update(analytics_s=round(r["seconds"], 1), alerts=r["alerts"])
    writer.finish_run(run_id, n_sessions, 0, 0, float(0))
    out["counts"] = Reader(store, operator()).counts()
    out["db_mb"] = round(db.stat().st_size / 2**20)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--segments", type=int, default=500_000, help="segments in all")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--frame-sessions", type=int, default=200,
                    help="how many sessions get frame curves")
    ap.add_argument("--no-analytics", action="store_true", help="skip Store.recompute")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = build(args.db, args.sessions, args.segments, args.dim, args.frame_sessions,
                analytics=not args.no_analytics)
    out["total_s"] = round(time.perf_counter() - t0, 1)
    print(out)


if __name__ == "__main__":
    main()
