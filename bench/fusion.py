"""Benchmark: what voice-and-words fusion and the categories add to `emoscope recompute`.

    python bench/fusion.py                       # 200 transcribed calls, 3 rounds
    python bench/fusion.py --sessions 1000 --rounds 5

The same store (tests/views_fixtures' calls, transcribed one utterance per segment, copied
`--sessions` times with fresh ids) is recomputed under the packaged rules with their
categories and with none, alternating so a busy machine slows both alike; then fusion alone
(core.analysis.fusion.session_fusion) and the categories alone (core.analysis.categories.judge) are timed over
the stored rows. Seconds per 1,000 sessions; the last line is `ratio: ` and recompute's time
with categories ÷ without, to three places. A benchmark, not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.analysis import categories, fusion  # noqa: E402
from core.storage import derived
from core.guard.access import operator  # noqa: E402
from core.storage.queries import Reader  # noqa: E402
from core.analysis.rules import load_rules  # noqa: E402
from core.storage.sessions import SessionWriter  # noqa: E402
from core.storage.store import Store  # noqa: E402
from core.base.types import session_id_for, segment_id_for, utterance_id_for  # noqa: E402
from tests.views_fixtures import call  # noqa: E402


def calls(n: int):
    rng = np.random.default_rng(7)
    for k in range(n):
        r = call(k % 28, rng)
        sid = session_id_for(hashlib.sha256(f"bench-fusion-{k}".encode()).hexdigest())
        segs = tuple(replace(s, segment_id=segment_id_for(sid, s.channel, i))
                     for i, s in enumerate(r.segments))
        utts = tuple(replace(u, utterance_id=utterance_id_for(sid, u.channel, i))
                     for i, u in enumerate(r.utterances))
        yield replace(r, session_id=sid, sha256=sid[1:] + "0" * 48, segments=segs,
                      utterances=utts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rules = load_rules(ROOT / "core" / "default_rules.toml")
    bare = replace(rules, categories=(), sets=tuple(replace(s, categories=())
                                                    for s in rules.sets))
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "bench.duckdb")
        store.migrate()
        writer = SessionWriter(store, rules)
        run = writer.start_run("bench", "", False, "cpu", "engine", {})
        batch = list(calls(a.sessions))
        for lo in range(0, len(batch), 50):
            writer.save_many(batch[lo:lo + 50], run)
        times = {"with": [], "without": []}
        for _ in range(a.rounds):
            for name, r in (("with", rules), ("without", bare)):
                t0 = time.perf_counter()
                derived.recompute(store, r)
                times[name].append(time.perf_counter() - t0)
        reader = Reader(store, operator())
        utts, seg = reader.utterances(), store.query(
            "SELECT session_id, channel, start_s, end_s, scores FROM segments")
        t0 = time.perf_counter()
        for sid, u in utts.groupby("session_id"):
            fusion.session_fusion(u, seg[seg.session_id == sid], rules)
        t_fusion = time.perf_counter() - t0
        dur = dict(zip(*[reader.sessions()[c] for c in ("session_id", "duration_s")]))
        t0 = time.perf_counter()
        for sid, u in utts.groupby("session_id"):
            categories.judge(sid, u, dur[sid], rules)
        t_cats = time.perf_counter() - t0
        n_utts = len(utts)
    per = 1000.0 / a.sessions
    best = {k: min(v) for k, v in times.items()}
    print(f"{a.sessions} calls, {n_utts} utterances, {a.rounds} rounds (best of each)")
    print(f"recompute with categories:    {best['with'] * per:7.2f} s per 1,000 sessions")
    print(f"recompute without categories: {best['without'] * per:7.2f} s per 1,000 sessions")
    print(f"fusion alone (session_fusion, from stored rows, with the segment filter): "
          f"{t_fusion * per:.2f} s per 1,000 sessions")
    print(f"categories alone (2 packaged, from stored rows): {t_cats * per:.2f} s per 1,000 "
          "sessions")
    print(f"ratio: {best['with'] / best['without']:.3f}")


if __name__ == "__main__":
    main()
