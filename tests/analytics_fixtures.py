"""Hand-built segment tables for the analytics tests: every value is chosen to be checked by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.base.labels import LABELS


def onehot(label: str, confidence: float = 0.9) -> list[float]:
    """Scores with `confidence` on `label` and the rest spread evenly."""
    v = np.full(len(LABELS), (1 - confidence) / (len(LABELS) - 1))
    v[LABELS.index(label)] = confidence
    return v.tolist()


def segments(rows, session_id: str = "s1") -> pd.DataFrame:
    """rows: (speaker, start, end, label[, confidence[, embedding[, flags]]]).

    Channel follows the speaker (agent 0, customer 1, anything else 0); embeddings default to
    a 1-D position so distances are easy to count.
    """
    out = []
    counters: dict[int, int] = {}
    for i, r in enumerate(rows):
        speaker, start, end, label = r[:4]
        conf = r[4] if len(r) > 4 else 0.9
        emb = r[5] if len(r) > 5 else [float(i)]
        flags = r[6] if len(r) > 6 else []
        ch = 1 if speaker == "customer" else 0
        n = counters.get(ch, 0)
        counters[ch] = n + 1
        out.append({"segment_id": f"{session_id}-c{ch}-{n:05d}", "channel": ch,
                    "speaker": speaker, "start_s": float(start), "end_s": float(end),
                    "label": label, "confidence": float(conf), "scores": onehot(label, conf),
                    "embedding": [float(x) for x in emb], "flags": list(flags)})
    return pd.DataFrame(out)


def channels(*pairs) -> pd.DataFrame:
    """pairs: (speaker, flags) per channel."""
    return pd.DataFrame({"channel": list(range(len(pairs))),
                         "speaker": [p[0] for p in pairs], "flags": [list(p[1]) for p in pairs]})
