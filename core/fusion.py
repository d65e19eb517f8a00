"""Voice and words together: one fused state per utterance and per turn (seed §3.1's fusion
engine), naming where they disagree.

The voice is emotion2vec's scores of the segments on the utterance's channel that overlap it,
averaged by seconds of overlap; its top label is read only when its score reaches
`[fusion] voice_confidence`. The words are the utterance's stored sentiment (core/sentiment:
VADER or SnowNLP on the redacted text): positive at or above `positive_words`, negative at or
below `negative_words`. Then:

| words \\ voice | angry, disgusted | sad, fearful | neutral | happy | unclear or none |
|---|---|---|---|---|---|
| positive | masked_frustration | mixed | positive | positive | positive |
| neutral | negative | negative | neutral | positive | neutral |
| negative | negative | negative | suppressed_distress | mixed | negative |
| none (no text) | negative | negative | neutral | positive | unclear |

masked_frustration is sarcasm or frustration behind polite words; suppressed_distress is
distress said flatly (it matters in wellbeing diaries). A turn is a run of one speaker's
utterances with nobody else's between them; its words are its utterances' sentiments averaged
by duration, its voice every segment overlapping them. The fused state picks the suggested
response (`Rules.fused_response`) and is what categories test (core/categories).

Pure: stored rows in, states out, so `emoscope recompute` redoes it with no model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.labels import LABELS

MASKED = "masked_frustration"
SUPPRESSED = "suppressed_distress"
DISAGREEMENTS = (MASKED, SUPPRESSED)  # the states with replies of their own in emoscope.toml
STATES = (MASKED, SUPPRESSED, "negative", "positive", "neutral", "mixed", "unclear")
# What each state means, in one line (the Session page's legend, docs/metrics.md).
MEANING = {MASKED: "positive words in an angry or disgusted voice (frustration, sarcasm)",
           SUPPRESSED: "negative words in a flat, neutral voice",
           "negative": "voice and words negative, or one negative and the other neutral",
           "positive": "voice and words positive, or one positive and the other neutral",
           "neutral": "neither says anything either way",
           "mixed": "happy voice with negative words, or sad/fearful voice with positive words",
           "unclear": "no words and no clear voice"}

ZH = {MASKED: "掩饰的不满", SUPPRESSED: "压抑的痛苦", "negative": "负面", "positive": "正面",
      "neutral": "中性", "mixed": "矛盾", "unclear": "不明"}
# The two disagreements stand out wherever states are shown.
TINTS = {MASKED: "red", SUPPRESSED: "violet", "negative": "orange", "positive": "green",
         "neutral": "gray", "mixed": "blue", "unclear": "gray"}


def display(state: str, lang: str = "en") -> str:
    return ZH.get(state, state) if lang == "zh" else state.replace("_", " ")


_HARSH, _LOW = ("angry", "disgusted"), ("sad", "fearful")
_FUSED_COLUMNS = ["utterance_id", "voice", "fused", "turn", "turn_fused"]


def words_reading(sentiment, rules) -> str | None:
    if sentiment is None or pd.isna(sentiment):
        return None
    if sentiment >= rules.fusion_positive_words:
        return "positive"
    if sentiment <= rules.fusion_negative_words:
        return "negative"
    return "neutral"


def voice_label(scores, rules) -> str | None:
    """The voice's top label, or None when nothing overlaps or it is too uncertain to read."""
    if scores is None:
        return None
    scores = np.asarray(scores, float)
    top = int(np.argmax(scores))
    if scores[top] < rules.fusion_voice_confidence - 1e-9:
        return None
    return LABELS[top]


def fuse(sentiment, voice: str | None, rules) -> str:
    """The fused state of words (a sentiment, or None) and voice (a label, or None)."""
    words = words_reading(sentiment, rules)
    v = ("harsh" if voice in _HARSH else "low" if voice in _LOW else
         "flat" if voice == "neutral" else "bright" if voice == "happy" else None)
    if words == "positive":
        return {"harsh": MASKED, "low": "mixed"}.get(v, "positive")
    if words == "negative":
        return {"flat": SUPPRESSED, "bright": "mixed"}.get(v, "negative")
    if v in ("harsh", "low"):
        return "negative"
    if v == "bright":
        return "positive"
    if v == "flat" or words == "neutral":
        return "neutral"
    return "unclear"


def voice_scores(start: float, end: float, seg_start, seg_end, seg_scores) -> np.ndarray | None:
    """Segment scores averaged by their seconds of overlap with [start, end); None if none."""
    overlap = np.minimum(seg_end, end) - np.maximum(seg_start, start)
    keep = overlap > 1e-9
    if not keep.any():
        return None
    w = overlap[keep]
    return (np.asarray(seg_scores, float)[keep] * w[:, None]).sum(0) / w.sum()


def session_fusion(utts: pd.DataFrame, seg, rules) -> pd.DataFrame:
    """One session's utterances (utterance_id, channel, speaker, start_s, end_s, sentiment)
    and segments (channel, start_s, end_s, scores) → utterance_id, voice, fused, turn (its
    number in the session, from 0) and turn_fused."""
    if utts is None or len(utts) == 0:
        return pd.DataFrame(columns=_FUSED_COLUMNS)
    u = utts.sort_values(["start_s", "channel", "utterance_id"]).reset_index(drop=True)
    s_ch = seg["channel"].to_numpy(int) if len(seg) else np.zeros(0, int)
    s_start = seg["start_s"].to_numpy(float) if len(seg) else np.zeros(0)
    s_end = seg["end_s"].to_numpy(float) if len(seg) else np.zeros(0)
    s_scores = np.stack(seg["scores"].tolist()).astype(float) if len(seg) else np.zeros((0, 9))
    turn = (u.speaker != u.speaker.shift()).cumsum().to_numpy() - 1
    rows, per_turn = [], {}
    for i, x in enumerate(u.itertuples(index=False)):
        on = s_ch == int(x.channel)
        sc = voice_scores(x.start_s, x.end_s, s_start[on], s_end[on], s_scores[on])
        voice = voice_label(sc, rules)
        sent = getattr(x, "sentiment", None)
        rows.append({"utterance_id": x.utterance_id, "voice": voice,
                     "fused": fuse(sent, voice, rules), "turn": int(turn[i])})
        t = per_turn.setdefault(int(turn[i]), {"w": [], "s": [], "v": [], "vw": []})
        if sent is not None and not pd.isna(sent):
            t["w"].append(max(x.end_s - x.start_s, 1e-3))
            t["s"].append(float(sent))
        if sc is not None:
            t["v"].append(sc)
            t["vw"].append(max(x.end_s - x.start_s, 1e-3))
    fused_turn = {}
    for k, t in per_turn.items():
        sent = float(np.average(t["s"], weights=t["w"])) if t["s"] else None
        sc = np.average(np.stack(t["v"]), axis=0, weights=t["vw"]) if t["v"] else None
        fused_turn[k] = fuse(sent, voice_label(sc, rules), rules)
    out = pd.DataFrame(rows, columns=_FUSED_COLUMNS[:-1])
    out["turn_fused"] = out.turn.map(fused_turn)
    return out


def clip_state(scores, sentiment, rules) -> dict:
    """One clip or live utterance: its voice label, words reading and fused state."""
    voice = voice_label(scores, rules)
    return {"sentiment": None if sentiment is None else round(float(sentiment), 4),
            "voice": voice, "fused": fuse(sentiment, voice, rules)}
