"""The what-if view at scale: stored alerts read vs alerts re-judged from stored rows with
moved thresholds (core.analysis.rejudge), for the whole store and for one week, side by side.

    .venv/bin/python bench/whatif.py --db /tmp/emoscope-bench.duckdb   # make bench-dashboard's store

Also checks that re-judging with the rules file's own values gives back the stored alerts.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from core.guard.access import operator  # noqa: E402
from core.insight import rejudged  # noqa: E402
from core.storage.queries import Reader, SessionFilter  # noqa: E402
from core.analysis.rules import load_rules, tuned  # noqa: E402
from core.storage.store import Store  # noqa: E402

KEY = ["session_id", "speaker", "rule", "t_s"]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--rules", type=Path, default=None)
    args = ap.parse_args()
    reader, rules = Reader(Store(args.db), operator()), load_rules(args.rules)
    moved = tuned(rules, rules.name, {a.rule: 0.7 for a in rules.alerts
                                      if a.kind == "last_quarter_share"})
    when = reader.sessions()["when"]
    last = when.max().normalize()
    week = SessionFilter(since=str((last - pd.Timedelta(days=6)).date()),
                         until=str((last + pd.Timedelta(days=1)).date()))
    for name, f in (("whole store", SessionFilter()), ("last week", week)):
        stored, t_read = timed(lambda: reader.alerts(f))
        same, t_same = timed(lambda: rejudged.judged_alerts(reader, rules, f))
        _, t_moved = timed(lambda: rejudged.judged_alerts(reader, moved, f))
        equal = stored.sort_values(KEY)[KEY].reset_index(drop=True).equals(
            same.sort_values(KEY)[KEY].reset_index(drop=True))
        print(f"{name}: {reader.n_sessions(f):,} sessions, {len(stored):,} alerts; stored read "
              f"{t_read:.2f} s, re-judged {t_same:.2f} s (file values; equal to stored: "
              f"{equal}), {t_moved:.2f} s (moved); ratio re-judged/stored "
              f"{t_moved / t_read:.1f}")


if __name__ == "__main__":
    main()
