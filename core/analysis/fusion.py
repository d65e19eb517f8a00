"""Voice and words together: one fused state per utterance and per turn (seed §3.1's fusion
engine), naming where they disagree.

The voice is emotion2vec's scores of the segments on the utterance's channel that overlap it,
averaged by seconds of overlap; its top label is read only when its score reaches
`[fusion] voice_confidence`. The words are the utterance's stored sentiment (core/text/sentiment:
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
response (`Rules.fused_response`) and is what categories test (core/analysis/categories).

Pure: stored rows in, states out, so `emoscope recompute` redoes it with no model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.base.labels import LABELS

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
    number in the session, from 0) and turn_fused. The overlaps are one matrix per channel
    (utterances × segments), so a session costs a few numpy calls, not one per utterance."""
    if utts is None or len(utts) == 0:
        return pd.DataFrame(columns=_FUSED_COLUMNS)
    u = utts.sort_values(["start_s", "channel", "utterance_id"]).reset_index(drop=True)
    n = len(u)
    u_ch, u_start = u.channel.to_numpy(int), u.start_s.to_numpy(float)
    u_end = u.end_s.to_numpy(float)
    sent = pd.to_numeric(u.sentiment, errors="coerce").to_numpy(float) \
        if "sentiment" in u else np.full(n, np.nan)
    scores = np.zeros((n, 9))  # each utterance's voice: overlap-weighted segment scores
    heard = np.zeros(n, bool)
    if len(seg):
        s_ch, s_start = seg["channel"].to_numpy(int), seg["start_s"].to_numpy(float)
        s_end = seg["end_s"].to_numpy(float)
        s_scores = np.stack(seg["scores"].tolist()).astype(float)
        for ch in np.unique(u_ch):
            ui, si = np.flatnonzero(u_ch == ch), np.flatnonzero(s_ch == ch)
            if not len(si):
                continue
            ov = np.minimum(u_end[ui, None], s_end[None, si]) - \
                np.maximum(u_start[ui, None], s_start[None, si])
            ov = np.where(ov > 1e-9, ov, 0.0)
            total = ov.sum(axis=1)
            got = total > 0
            scores[ui[got]] = (ov[got] @ s_scores[si]) / total[got, None]
            heard[ui[got]] = True
    voices = [voice_label(scores[i], rules) if heard[i] else None for i in range(n)]
    turn = (u.speaker != u.speaker.shift()).cumsum().to_numpy() - 1
    # a turn: its sentiments and its utterances' voices, each averaged by duration
    w = np.maximum(u_end - u_start, 1e-3)
    n_turns = int(turn.max()) + 1
    has_s = ~np.isnan(sent)
    s_w = np.bincount(turn, weights=np.where(has_s, w, 0.0), minlength=n_turns)
    s_sum = np.bincount(turn, weights=np.where(has_s, w * np.nan_to_num(sent), 0.0),
                        minlength=n_turns)
    v_w = np.bincount(turn, weights=np.where(heard, w, 0.0), minlength=n_turns)
    v_sum = np.zeros((n_turns, 9))
    np.add.at(v_sum, turn, scores * np.where(heard, w, 0.0)[:, None])
    fused_turn = [fuse(s_sum[k] / s_w[k] if s_w[k] > 0 else None,
                       voice_label(v_sum[k] / v_w[k], rules) if v_w[k] > 0 else None, rules)
                  for k in range(n_turns)]
    return pd.DataFrame({
        "utterance_id": u.utterance_id.to_numpy(object), "voice": voices,
        "fused": [fuse(None if np.isnan(x) else float(x), v, rules)
                  for x, v in zip(sent, voices)],
        "turn": turn.astype(int), "turn_fused": [fused_turn[k] for k in turn]},
        columns=_FUSED_COLUMNS)


def clip_state(scores, sentiment, rules) -> dict:
    """One clip or live utterance: its voice label, words reading and fused state."""
    voice = voice_label(scores, rules)
    return {"sentiment": None if sentiment is None else round(float(sentiment), 4),
            "voice": voice, "fused": fuse(sentiment, voice, rules)}
