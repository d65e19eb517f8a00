"""The nine emotion2vec+ labels in the model's canonical order, with display names and colours."""
from __future__ import annotations

# Order of the model's tokens.txt; every `scores` vector in the store follows it.
TOKENS = ["生气/angry", "厌恶/disgusted", "恐惧/fearful", "开心/happy", "中立/neutral",
          "其他/other", "难过/sad", "吃惊/surprised", "<unk>"]
LABELS = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised",
          "unknown"]
ZH = {"angry": "生气", "disgusted": "厌恶", "fearful": "恐惧", "happy": "开心", "neutral": "中立",
      "other": "其他", "sad": "难过", "surprised": "吃惊", "unknown": "未知"}
NEGATIVE = ("angry", "disgusted", "fearful", "sad")
UNCERTAIN = ("other", "unknown")

# One colour per emotion across every chart.
COLORS = {"angry": "#d62728", "disgusted": "#8c564b", "fearful": "#9467bd", "happy": "#f2b701",
          "neutral": "#7f7f7f", "other": "#17becf", "sad": "#1f77b4", "surprised": "#ff7f0e",
          "unknown": "#c7c7c7"}


def label_of_token(token: str) -> str:
    """Map a tokens.txt entry ("生气/angry", "angry", "<unk>", "unuse_0") to a canonical label."""
    tail = token.split("/")[-1].strip().lower()
    if tail in ("<unk>", "unk"):
        return "unknown"
    return tail


def display(label: str, lang: str = "en") -> str:
    return ZH.get(label, label) if lang == "zh" else label
