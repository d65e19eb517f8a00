"""Time `Store.recompute` on synthetic sessions and print seconds per 1,000 sessions.

    .venv/bin/python bench/recompute.py --sessions 500 --segments 40 --dim 1024
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.base.labels import LABELS  # noqa: E402
from core.storage import derived  # noqa: E402
from core.analysis.rules import load_rules  # noqa: E402
from core.storage.sessions import SessionWriter  # noqa: E402
from core.storage.store import Store  # noqa: E402
from core.base.types import (ChannelQuality, Segment, SessionMeta, SessionResult,  # noqa: E402
                        segment_id_for, session_id_for)


def synthetic(k: int, n_segments: int, dim: int, rng: np.random.Generator) -> SessionResult:
    """A two-channel call: agent and customer alternate, with some overlap."""
    sha = hashlib.sha256(f"bench-{k}".encode()).hexdigest()
    sid = session_id_for(sha)
    segs, t = [], 0.0
    per = max(n_segments // 2, 1)
    for i in range(per):
        for ch, speaker in ((0, "agent"), (1, "customer")):
            length = float(rng.uniform(1.0, 6.0))
            start = max(t - float(rng.uniform(0, 0.8)), 0.0)
            scores = rng.dirichlet(np.full(9, 0.5)).astype(np.float32)
            top = int(scores.argmax())
            segs.append(Segment(segment_id_for(sid, ch, i), ch, speaker, start, start + length,
                                LABELS[top], float(scores[top]), scores,
                                rng.normal(size=dim).astype(np.float32), 0.1, 0.0, (), None))
            t = start + length + float(rng.uniform(0.1, 2.0))
    chans = tuple(ChannelQuality(c, s, t, 0.1, 0.0, t / 2, ()) for c, s in
                  ((0, "agent"), (1, "customer")))
    meta = SessionMeta(agent_id=f"a{k % 20}", customer_id=f"c{k % 300}", team=f"t{k % 3}",
                       recorded_at=f"2026-{1 + k % 12:02d}-{1 + k % 28:02d}")
    return SessionResult(sid, f"/bench/{k}.wav", f"{k}.wav", sha, t, 2, meta, chans,
                         tuple(segs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=300)
    ap.add_argument("--segments", type=int, default=40, help="segments per session")
    ap.add_argument("--dim", type=int, default=1024, help="embedding size (large model: 1024)")
    ap.add_argument("--db", type=Path, default=None, help="keep the store here")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tmp = tempfile.TemporaryDirectory()
    db = args.db or Path(tmp.name) / "bench.duckdb"
    store = Store(db)
    store.migrate()
    rules = load_rules()
    writer = SessionWriter(store, rules)
    t0 = time.perf_counter()
    for k in range(args.sessions):
        writer.save(synthetic(k, args.segments, args.dim, rng), None)
    build = time.perf_counter() - t0
    out = derived.recompute(store, rules)
    per_1000 = out["seconds"] / args.sessions * 1000
    print(f"{args.sessions} sessions × {args.segments} segments, embedding {args.dim}: "
          f"built in {build:.1f} s ({1000 * build / args.sessions:.0f} ms per save with "
          f"analytics); recompute {out['seconds']:.2f} s "
          f"({out['alerts']} alerts) → {per_1000:.1f} s per 1,000 sessions")
    tmp.cleanup()


if __name__ == "__main__":
    main()
