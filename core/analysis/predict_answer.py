"""The predict answer, shaped once: emotion, confidence, the nine scores, the fallback action and
the model that judged. `emoscope predict` (ingest/predict.py), POST /v1/predict and the live
stream (api/answers.py) and the JSON export of stored segments (core/reporting/reports.py) all build it
here, so the three cannot drift apart."""
from __future__ import annotations

import numpy as np

from core.base.labels import LABELS
from core.analysis.metrics import fallback_action


UNSAID = object()  # model/trained not part of this answer (the API says them once per clip)


def answer(label: str, confidence: float, scores, fallback: str | None,
           model: str | None = UNSAID, trained: bool | None = UNSAID) -> dict:
    """The answer for a judged label (a stored segment keeps its own, which an active
    calibration head may have set); `model` and `trained` when given, None included."""
    out = {"emotion": label, "confidence": round(float(confidence), 4),
           "scores": {lab: round(float(s), 4) for lab, s in zip(LABELS, scores)},
           "fallback_action": fallback}
    if model is not UNSAID:
        out.update(model=model, trained=None if trained is UNSAID else trained)
    return out


def judged(scores, threshold: float, model: str | None = UNSAID,
           trained: bool | None = UNSAID) -> dict:
    """The answer for one score vector as the model gives it: its top label, and the seed's
    fallback (§4.3) when that label is uncertain or below `threshold`."""
    top = int(np.argmax(scores))
    label, conf = LABELS[top], float(scores[top])
    return answer(label, conf, scores, fallback_action(label, conf, threshold), model, trained)
