"""One clip → the seed's JSON: emotion, confidence, nine scores, fallback action, model."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.base.curves import pool
from core.analysis.predict_answer import judged
from core.analysis.rules import load_rules
from core.base.types import SessionMeta
from ingest.assemble import run_model
from ingest.model import LoadedModel, Output
from ingest.options import IngestOptions


def predict_clip(lm: LoadedModel, clip: np.ndarray, granularity: str = "utterance",
                 engine: str = "engine") -> tuple[dict, np.ndarray]:
    """The predict JSON and the embedding, shaped (D,) or (T, D) for frame granularity."""
    frame = granularity == "frame"  # frame features only when they are shown
    out = run_model(lm, [clip], IngestOptions(engine=engine), frame_feats=frame)[0]
    return describe(lm, out, granularity)


def predict_file(path: Path, lm: LoadedModel, granularity: str = "utterance",
                 engine: str = "engine") -> tuple[dict | None, np.ndarray | None, str | None]:
    """`predict_clip` of a file, through the same prepare → model path as ingest (the whole
    clip, downmixed, as one segment): (JSON, embedding, None) or (None, None, reason)."""
    from ingest.pipeline import process_file
    opts = IngestOptions(engine=engine, whole_clip=True)
    outputs: list[Output] = []
    done = process_file(path, SessionMeta(), lm, opts, outputs=outputs,
                        frame_feats=granularity == "frame")
    if done.result is None or done.result.status != "ok" or not outputs:
        return None, None, (done.result.error if done.result is not None else "not analysed")
    return (*describe(lm, outputs[0], granularity), None)


def describe(lm: LoadedModel, out: Output, granularity: str) -> tuple[dict, np.ndarray]:
    opts = IngestOptions()
    result = judged(out.scores, load_rules().confidence_threshold, lm.name, lm.trained)
    if granularity == "frame":
        t, probs = pool(out.frame_logits, 0.0, opts.curve_hop_s, opts.curve_window_s)
        result["curve"] = {"hop_s": opts.curve_hop_s, "t_s": np.round(t, 3).tolist(),
                           "probs": np.round(probs, 4).tolist()}
        return result, out.frame_feats
    return result, out.embedding
