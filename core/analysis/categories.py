"""Categories: named conditions over what was said and how it sounded, that tag sessions and
may raise alerts (call analytics' categories: Contact Lens's, CallMiner's).

A category (`[[categories]]` in emoscope.toml) holds for an utterance when every condition it
sets holds there:

* `phrases`, matched on the utterance's words (lower case; a Chinese character is a word):
  `match = "any"` (one of them), `"all"` (every one) or `"near"` (every one, all within
  `within` words of each other). A phrase written `"not ... refund"` matches "refund" only
  when a negation ("not", "no", "never", a word ending in "n't", 不, 没, 别) stands at most
  `negation_window` words before it; `ignore_negated = true` makes the plain phrases skip
  negated mentions ("I don't want to cancel").
* `speakers`: the utterance's speaker role; `part`: `first_quarter` or `last_quarter` of the
  session (the utterance's midpoint);
* `emotions`: its voice (core/analysis/fusion's reading of the overlapping segments); `fused`: its
  fused state;
* `raised_voice = true`: a segment of its channel overlapping it has a raised voice
  (core/analysis/prosody: pitch and loudness above the speaker's own medians, by the thresholds of the
  `raised_voice` alert rule), where prosody was measured.

A session carries the category when at least `min_count` (1) of its utterances meet it; the
row names the first. With `alert = true` the category also raises an alert of its severity
(`urgent` above `high`: first on the Alerts page) at that utterance, with the suggested
response of its fused state. Pure: stored rows in, rows out; ingest, `emoscope recompute` and
the what-if view all call `judge`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.analysis import prosody
from core.analysis.fusion import STATES
from core.base.labels import LABELS

PARTS = ("any", "first_quarter", "last_quarter")
MATCHES = ("any", "all", "near")
CATEGORY_COLUMNS = ["session_id", "category", "severity", "speaker", "t_s", "utterance_id",
                    "n_utterances"]
NEGATIONS = {"not", "no", "never", "nothing", "nobody", "cannot", "without", "不", "没", "别"}
_WORD = re.compile(r"[\u4e00-\u9fff]|[\w']+")
_NEGATED = re.compile(r"^\s*not\s*(\.\.\.|…)\s*")


@dataclass(frozen=True)
class Category:
    name: str
    severity: str = "medium"
    alert: bool = False
    phrases: tuple[str, ...] = ()
    match: str = "any"
    within: int = 10
    negation_window: int = 3
    ignore_negated: bool = False
    speakers: tuple[str, ...] = ()
    part: str = "any"
    emotions: tuple[str, ...] = ()
    fused: tuple[str, ...] = ()
    raised_voice: bool = False
    min_count: int = 1


def words(text) -> list[str]:
    return _WORD.findall(str(text).lower()) if isinstance(text, str) else []


def _negation(word: str) -> bool:
    return word in NEGATIONS or word.endswith("n't")


def _phrase(p: str) -> tuple[tuple[str, ...], bool]:
    """A phrase as words, and whether it must be negated ("not ... X")."""
    m = _NEGATED.match(p.lower())
    return (tuple(words(p[m.end():])), True) if m else (tuple(words(p)), False)


def _hits(ws: list[str], phrase: tuple[str, ...], negated: bool, c: Category) -> list[int]:
    """Where `phrase` starts in `ws`, keeping negated mentions only (or skipping them)."""
    n = len(phrase)
    out = []
    for i in range(len(ws) - n + 1):
        if tuple(ws[i:i + n]) != phrase:
            continue
        before = any(_negation(w) for w in ws[max(0, i - c.negation_window):i])
        if (negated and before) or (not negated and not (c.ignore_negated and before)):
            out.append(i)
    return out


def said(text, c: Category) -> bool:
    """The phrase condition on one utterance's text (true when the category sets none)."""
    if not c.phrases:
        return True
    ws = words(text)
    hits = [_hits(ws, *_phrase(p), c) for p in c.phrases]
    if c.match == "any":
        return any(hits)
    if not all(hits):
        return False
    if c.match == "all":
        return True
    # near: some choice of one mention per phrase spans at most `within` words
    starts = sorted((i, k) for k, h in enumerate(hits) for i in h)
    need = len(hits)
    for a in range(len(starts)):
        seen = {}
        for i, k in starts[a:]:
            if i - starts[a][0] > c.within:
                break
            seen[k] = i
            if len(seen) == need:
                return True
    return False


def matches(utts: pd.DataFrame, c: Category, duration_s: float,
            raised: np.ndarray | None = None) -> np.ndarray:
    """Which of one session's utterances meet `c` (a bool per row). `utts` has speaker,
    start_s, end_s, text, voice, fused; `raised`: per row, whether the voice was raised."""
    n = len(utts)
    keep = np.ones(n, bool)
    if c.speakers:
        keep &= utts.speaker.isin(c.speakers).to_numpy()
    if c.part != "any":
        mid = (utts.start_s.to_numpy(float) + utts.end_s.to_numpy(float)) / 2
        q = 0.25 * float(duration_s or 0)
        keep &= (mid < q) if c.part == "first_quarter" else (mid >= float(duration_s) - q)
    if c.emotions:
        keep &= utts.voice.isin(c.emotions).to_numpy()
    if c.fused:
        keep &= utts.fused.isin(c.fused).to_numpy()
    if c.raised_voice:
        keep &= raised if raised is not None else np.zeros(n, bool)
    if c.phrases:
        texts = utts.text.tolist()
        keep &= np.array([bool(k) and said(t, c) for k, t in zip(keep, texts)], bool)
    return keep


def raised(utts: pd.DataFrame, seg, rules) -> np.ndarray:
    """Per utterance: does a segment of its channel overlapping it have a raised voice
    (core.analysis.prosody: pitch and loudness above the speaker's own medians, by the thresholds of
    the rules' `raised_voice` alert rule, else prosody's defaults)? `seg`: the session's
    segments, a DataFrame with pitch_hz and loudness_dbfs or a core.analysis.metrics.Seq."""
    out = np.zeros(len(utts), bool)
    if seg is None or not len(seg) or not len(utts):
        return out
    if isinstance(seg, pd.DataFrame):
        if "pitch_hz" not in seg or "loudness_dbfs" not in seg:
            return out
        ch, sp = seg.channel.to_numpy(int), seg.speaker.to_numpy(object)
        start, end = seg.start_s.to_numpy(float), seg.end_s.to_numpy(float)
        pitch = pd.to_numeric(seg.pitch_hz, errors="coerce").to_numpy(float)
        loud = pd.to_numeric(seg.loudness_dbfs, errors="coerce").to_numpy(float)
    else:
        ch, sp, start, end = seg.channel, seg.speaker, seg.start, seg.end
        pitch, loud = getattr(seg, "pitch", None), getattr(seg, "loudness", None)
        if pitch is None or loud is None:
            return out
    rule = next((a for a in rules.alerts if a.kind == "raised_voice"), None)
    up = np.zeros(len(ch), bool)
    for who in dict.fromkeys(np.asarray(sp, object).tolist()):
        mine = np.asarray(sp, object) == who
        kw = {} if rule is None else {"pitch_semitones": rule.pitch_semitones,
                                      "loudness_db": rule.loudness_db}
        up[mine] = prosody.speaker_raised(pitch[mine], loud[mine], **kw)[0]
    for i, (c, a, b) in enumerate(zip(utts.channel.to_numpy(int), utts.start_s.to_numpy(float),
                                      utts.end_s.to_numpy(float))):
        out[i] = bool((up & (ch == c) & (start < b) & (end > a)).any())
    return out


def judge(session_id: str, utts: pd.DataFrame, duration_s: float, rules,
          seg=None) -> tuple[list[dict], list[dict]]:
    """One session's category rows (CATEGORY_COLUMNS) and the alerts its alerting categories
    raise (core.analysis.alerts.ALERT_COLUMNS), under `rules` (the session's set); `seg` (its
    segments) for the raised-voice condition."""
    tags, alerts = [], []
    if utts is None or not len(utts) or not rules.categories:
        return tags, alerts
    utts = utts.sort_values(["start_s", "channel"], kind="stable").reset_index(drop=True)
    up = raised(utts, seg, rules) if any(c.raised_voice for c in rules.categories) else None
    for c in rules.categories:
        hit = np.flatnonzero(matches(utts, c, duration_s, up))
        if len(hit) < c.min_count:
            continue
        u = utts.iloc[hit[0]]
        tags.append({"session_id": session_id, "category": c.name, "severity": c.severity,
                     "speaker": u.speaker, "t_s": float(u.start_s),
                     "utterance_id": u.utterance_id, "n_utterances": int(len(hit))})
        if c.alert:
            voice = u.voice if isinstance(u.voice, str) else None
            fused = u.fused if isinstance(u.fused, str) else None
            how = ", ".join(x for x in (voice and f"voice {voice}",
                                        fused and f"fused {fused.replace('_', ' ')}") if x)
            alerts.append({
                "session_id": session_id, "speaker": u.speaker, "rule": c.name,
                "t_s": float(u.start_s), "severity": c.severity,
                "detail": f"category {c.name}: {len(hit)} utterance(s) from "
                          f"{u.start_s:.1f} s" + (f" ({how})" if how else ""),
                "emotion": voice,
                "suggested_response": rules.fused_response(fused, voice, "en"),
                "suggested_response_zh": rules.fused_response(fused, voice, "zh")})
    return tags, alerts


def parse(raw: dict, where: str, severities, error) -> Category:
    """One `[[categories]]` entry, checked; `error(message)` is the exception to raise."""
    known = set(Category.__dataclass_fields__)
    extra = set(raw) - known
    if extra:
        raise error(f"{where}: unknown key(s) {', '.join(sorted(extra))} in a category")
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        raise error(f"{where}: every category needs a `name`")
    name = raw["name"]
    checks = [("severity", severities), ("match", MATCHES), ("part", PARTS)]
    for key, allowed in checks:
        if key in raw and raw[key] not in allowed:
            raise error(f"{where}: category {name!r} has {key} {raw[key]!r}; use one of "
                        f"{', '.join(allowed)}")
    for key, allowed in (("emotions", LABELS), ("fused", STATES)):
        bad = [x for x in raw.get(key, ()) if x not in allowed]
        if bad:
            raise error(f"{where}: category {name!r} names unknown {key} {bad}; use "
                        f"{', '.join(allowed)}")
    vals = dict(raw)
    for key in ("phrases", "speakers", "emotions", "fused"):
        if key in vals:
            if not isinstance(vals[key], list) or not all(isinstance(x, str)
                                                          for x in vals[key]):
                raise error(f"{where}: category {name!r}: {key} is a list of strings")
            vals[key] = tuple(vals[key])
    if vals.get("match", "any") != "any" and len(vals.get("phrases", ())) < 2:
        raise error(f"{where}: category {name!r}: match = {vals['match']!r} needs two or "
                    "more phrases")
    if not any(vals.get(k) for k in ("phrases", "emotions", "fused", "raised_voice")):
        raise error(f"{where}: category {name!r} needs phrases, emotions, fused or "
                    "raised_voice: it would tag every session")
    try:
        return Category(**vals)
    except TypeError as e:
        raise error(f"{where}: category {name!r}: {e}") from None
