"""What erasing one customer costs on a large store, and what compaction adds.

    .venv/bin/python bench/synth_store.py --db /tmp/s500k.duckdb          # 10,000 × 50 segments
    .venv/bin/python bench/erasure.py --db /tmp/s500k.duckdb --work /tmp/erase-bench

The store is copied into --work first (it is changed). One customer (the one with most sessions
unless --customer) is erased as `emoscope forget` does, timed in two parts side by side: the
erasure without compaction (plan, shards, rows, audit, index) and `Store.compact` (the copy into
a fresh file that takes the freed blocks, and the erased values in them, away). Before, between
and after, the database file is searched for the customer id, as `grep -a -c` would.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.admin import erasure  # noqa: E402
from core.storage.store import Store  # noqa: E402


def occurrences(path: Path, needle: bytes, block: int = 64 << 20) -> int:
    """How often `needle` occurs in the file (read in blocks, overlapping by its length)."""
    n, tail = 0, b""
    with open(path, "rb") as f:
        while chunk := f.read(block):
            data = tail + chunk
            n += data.count(needle)
            tail = data[-(len(needle) - 1):]
            n -= tail.count(needle)  # counted again with the next block
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True, help="a store (bench/synth_store.py)")
    ap.add_argument("--work", type=Path, required=True, help="folder for the copy it changes")
    ap.add_argument("--customer", help="whom to erase (default: the one with most sessions)")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    db = a.work / a.db.name
    t = time.perf_counter()
    shutil.copyfile(a.db, db)
    print(f"copied {a.db.stat().st_size / 1e6:,.0f} MB in {time.perf_counter() - t:.1f} s")
    store = Store(db)
    segments = int(store.query("SELECT count(*) n FROM segments").n[0])
    who = a.customer or store.query(
        "SELECT customer_id FROM sessions GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    ).customer_id[0]
    needle = who.encode()
    found = {"before": occurrences(db, needle)}

    t = time.perf_counter()
    p = erasure.plan(store, "customer", who, "bench")
    p.compact = False
    erasure.execute(store, p)
    erase_s = time.perf_counter() - t
    found["after the delete"] = occurrences(db, needle)

    size = db.stat().st_size
    t = time.perf_counter()
    out = erasure.compact_if_due(store)
    compact_s = time.perf_counter() - t
    found["after compaction"] = occurrences(db, needle)

    print(f"store: {segments:,} segments, {size / 1e6:,.0f} MB; erased customer {who}: "
          f"{len(p.session_ids)} sessions, {len(p.segment_ids)} segments")
    print(f"erasure without compaction  {erase_s:7.1f} s")
    print(f"compaction (fresh file)     {compact_s:7.1f} s   "
          f"{out['bytes_before'] / 1e6:,.0f} MB → {out['bytes_after'] / 1e6:,.0f} MB")
    print(f"compaction / erasure        {compact_s / erase_s:7.1f} ×")
    print("occurrences of the id in the database file: "
          + ", ".join(f"{k} {v}" for k, v in found.items()))


if __name__ == "__main__":
    main()
