"""One clip → the seed's JSON: emotion, confidence, nine scores, fallback action, model."""
from __future__ import annotations

import numpy as np

from core.curves import pool
from core.labels import LABELS
from core.metrics import fallback_action
from core.rules import load_rules
from ingest.model import LoadedModel, Output
from ingest.options import IngestOptions


def _one(lm: LoadedModel, clip: np.ndarray, engine: str, frame_feats: bool) -> Output:
    if engine == "reference":
        from ingest.model import reference_infer
        return reference_infer(lm, [clip], frame_feats=frame_feats)[0]
    from ingest.engine import infer
    return infer(lm, [clip], frame_feats=frame_feats)[0]


def predict_clip(lm: LoadedModel, clip: np.ndarray, granularity: str = "utterance",
                 engine: str = "engine") -> tuple[dict, np.ndarray]:
    """The predict JSON and the embedding, shaped (D,) or (T, D) for frame granularity."""
    frame = granularity == "frame"
    out = _one(lm, clip, engine, frame_feats=frame)  # frame features only when they are shown
    top = int(np.argmax(out.scores))
    opts = IngestOptions()
    result = {
        "emotion": LABELS[top],
        "confidence": round(float(out.scores[top]), 4),
        "scores": {lab: round(float(s), 4) for lab, s in zip(LABELS, out.scores)},
        "fallback_action": fallback_action(LABELS[top], float(out.scores[top]),
                                           load_rules().confidence_threshold),
        "model": lm.name,
        "trained": lm.trained,
    }
    if frame:
        t, probs = pool(out.frame_logits, 0.0, opts.curve_hop_s, opts.curve_window_s)
        result["curve"] = {"hop_s": opts.curve_hop_s, "t_s": np.round(t, 3).tolist(),
                           "probs": np.round(probs, 4).tolist()}
        return result, out.frame_feats
    return result, out.embedding
