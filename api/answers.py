"""Model outputs → the seed's answer: label, confidence, nine scores, fallback and reply."""
from __future__ import annotations

import numpy as np

from core.analysis import fusion
from core.base.curves import pool
from core.analysis.metrics import REQUEST_CLARIFICATION
from core.analysis.predict_answer import judged
from core.analysis.rules import Rules

LANGS = ("en", "zh")


def suggested_response(label: str, fallback: str | None, rules: Rules, lang: str,
                       fused: str | None = None) -> str | None:
    """Seed §4.1 reply for the fused state (core/analysis/fusion: its own where voice and words
    disagree, else the emotion's); §4.3's "could you say it again" when the answer is too
    uncertain to act on (the rules give other/unknown that reply)."""
    if fallback == REQUEST_CLARIFICATION:
        return rules.response("unknown", lang)
    return rules.fused_response(fused, label, lang)


def judge(scores: np.ndarray, rules: Rules, lang: str, sentiment: float | None = None) -> dict:
    """emotion, confidence, scores, fallback_action, fused state and suggested_response for
    one score vector (and the words' sentiment, where the clip's words are known)."""
    a = judged(scores, rules.confidence_threshold)  # core/analysis/predict_answer: the one shape
    fused = fusion.fuse(sentiment, fusion.voice_label(scores, rules), rules)
    return a | {"fused": fused, "suggested_response": suggested_response(
        a["emotion"], a["fallback_action"], rules, lang, fused)}


def curve(frame_logits: np.ndarray, start_s: float, hop_s: float, window_s: float,
          after_s: float | None = None) -> dict:
    """The pooled curve as JSON: times and 9 probabilities per point (canonical label order);
    only points later than `after_s` when given."""
    t, probs = pool(frame_logits, start_s, hop_s, window_s)
    if after_s is not None:
        keep = t > after_s + 1e-9
        t, probs = t[keep], probs[keep]
    return {"hop_s": hop_s, "t_s": np.round(t, 3).tolist(), "probs": np.round(probs, 4).tolist()}


def vector(x: np.ndarray) -> list[float]:
    return np.round(np.asarray(x, np.float64), 6).tolist()
