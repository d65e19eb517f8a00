"""Two stores made from the same files, compared row for row (the streaming and serial
executors must agree); model outputs within a tolerance, everything else exactly."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.storage import analysers
from core.storage.store import Store

# (table, key columns, columns compared with a tolerance, columns left out)
TABLES = (
    ("sessions", ["file_name"], ["duration_s"], ["ingested_at", "run_id", "session_id"]),
    ("channels", ["session_id", "channel"], ["duration_s", "rms", "clip_ratio", "speech_s"], []),
    ("segments", ["segment_id"], ["confidence", "scores", "embedding", "rolling_volatility"],
     ["label", "fallback_action"]),
    ("frames", ["session_id", "channel", "t_s"], "probs", []),
    ("session_metrics", ["session_id", "speaker"], "numbers", []),
    ("alerts", ["session_id", "speaker", "rule", "t_s"], [], ["detail"]),
)


def differences(a: Store, b: Store, tol: float = 1e-4) -> list[str]:
    """Where two stores differ, in words; [] when they hold the same rows."""
    out = []
    mine = [(t.name, ["segment_id", "n"], [], []) for t in analysers.tables()]
    for table, keys, loose, skip in [*TABLES, *mine]:
        x = a.query(f"SELECT * FROM {table}").sort_values(keys, ignore_index=True)
        y = b.query(f"SELECT * FROM {table}").sort_values(keys, ignore_index=True)
        if len(x) != len(y):
            out.append(f"{table}: {len(x)} rows against {len(y)}")
            continue
        if loose == "probs":
            loose = [c for c in x.columns if c not in keys and c != "t_s"]
        elif loose == "numbers":
            loose = [c for c in x.columns if c not in keys and c != "trend"
                     and c != "unreliable_cause" and c != "rules_digest"
                     and x[c].dtype != bool]
        for col in x.columns:
            if col in skip:
                continue
            if col in loose:
                gap = _max_gap(x[col], y[col])
                if gap > tol:
                    out.append(f"{table}.{col}: differs by {gap:.2e}")
            elif not _same(x[col], y[col]):
                out.append(f"{table}.{col}: values differ")
    out += _labels(a, b, tol)
    return out


def _as_matrix(s: pd.Series) -> np.ndarray:
    vals = s.to_numpy(object)
    if len(vals) and isinstance(vals[0], (list, np.ndarray)):
        return np.stack([np.asarray(v, dtype=np.float64) for v in vals])
    return pd.to_numeric(s, errors="coerce").to_numpy(np.float64)


def _max_gap(a: pd.Series, b: pd.Series) -> float:
    x, y = _as_matrix(a), _as_matrix(b)
    if x.shape != y.shape:
        return float("inf")
    both_nan = np.isnan(x) & np.isnan(y)
    gap = np.where(both_nan, 0.0, np.abs(x - y))
    return float(np.nan_to_num(gap, nan=np.inf).max()) if gap.size else 0.0


def _same(a: pd.Series, b: pd.Series) -> bool:
    norm = [[tuple(v) if isinstance(v, (list, np.ndarray)) else (None if v is None or (
        isinstance(v, float) and np.isnan(v)) else v) for v in s.to_numpy(object)]
            for s in (a, b)]
    return norm[0] == norm[1]


def _labels(a: Store, b: Store, tol: float) -> list[str]:
    """Top labels agree wherever the top two scores are further apart than the tolerance."""
    q = "SELECT segment_id, label, fallback_action, scores FROM segments ORDER BY segment_id"
    x, y = a.query(q), b.query(q)
    if len(x) != len(y):
        return []
    s = np.sort(_as_matrix(x.scores), axis=1)
    clear = (s[:, -1] - s[:, -2]) > 2 * tol
    bad = clear & ((x.label != y.label) | (x.fallback_action.fillna("") !=
                                           y.fallback_action.fillna(""))).to_numpy()
    return [f"segments.label: {int(bad.sum())} clear labels differ"] if bad.any() else []
