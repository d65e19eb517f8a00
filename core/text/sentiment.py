"""What the words say, per utterance: a sentiment in [-1, 1] from the redacted text.

English by VADER (`vaderSentiment`: its lexicon and rules ship in the wheel), its compound
score as is; Chinese by SnowNLP (its sentiment model ships in the wheel), whose probability of
positive p becomes 2p - 1. The utterance's language picks one ("en…" → VADER, "zh…"/"yue" →
SnowNLP); with no language, text holding Chinese characters goes to SnowNLP and the rest to
VADER. Placeholders left by redaction ([card], ...) are taken out first, so they weigh
nothing. Both models load on first use, once per process (SnowNLP takes a few seconds).
"""
from __future__ import annotations

import functools
import re
from dataclasses import replace

from core.text.redaction import PLACEHOLDERS

_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
_HAN = re.compile(r"[\u4e00-\u9fff]")


@functools.lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    return SentimentIntensityAnalyzer()


def source_for(text: str, language: str | None) -> str:
    lang = (language or "").lower()
    if lang.startswith(("zh", "yue", "cmn")):
        return "snownlp"
    if lang.startswith("en"):
        return "vader"
    return "snownlp" if _HAN.search(text) else "vader"


def score(text: str | None, language: str | None = None) -> tuple[float | None, str | None]:
    """(sentiment in [-1, 1], the analysis that gave it); (None, None) when nothing is left
    to judge."""
    words = _PLACEHOLDER.sub(" ", text or "").strip()
    if not any(c.isalnum() for c in words):
        return None, None
    source = source_for(words, language)
    if source == "vader":
        value = _vader().polarity_scores(words)["compound"]
    else:
        from snownlp import SnowNLP
        value = 2.0 * SnowNLP(words).sentiments - 1.0
    return round(max(-1.0, min(1.0, float(value))), 4), source


def score_result(result):
    """The SessionResult with each utterance's sentiment (on its text as it will be stored)."""
    if not result.utterances:
        return result
    utts = []
    for u in result.utterances:
        value, source = score(u.text, u.language)
        utts.append(replace(u, sentiment=value, sentiment_source=source))
    return replace(result, utterances=tuple(utts))
