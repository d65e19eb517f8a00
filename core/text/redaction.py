"""Redaction: card numbers, phone numbers, e-mail addresses, digit runs and configured terms
replaced in transcripts by typed placeholders before anything stores them.

`redact_result` is applied where transcripts enter a SessionResult (core.storage.analysers.finish, on
every ingest path), so utterances.text, the words table, the word index derived from them,
exports and the API only ever see the placeholders. The raw text is not kept anywhere.

What counts, on the digits a stretch of speech holds (written digits, digits spoken as words,
"four one one one", and Chinese numerals read digit by digit, "四一一一"), joined across spaces,
dashes and parentheses and across the consecutive utterances of one speaker (a number read in
two breaths is one number):
  [card]    13 to 19 digits passing the Luhn check
  [phone]   7 to 15 digits (a leading + is taken with them)
  [number]  any other run of 4 or more digits spoken as words or Chinese numerals, or of 16
            or more written digits (written 4-6 digit runs stay: years, amounts, times)
  [email]   an address (a@b.com) or one spoken ("john at example dot com")
  [term]    each term of `[redaction] terms` in emoscope.toml, case-insensitive, whole words
Placeholders hold no digits or number words, so redacting twice changes nothing.
"""
from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass, replace

from core.guard.access import ROLES
from core.base.config_file import config_path, read_config

PLACEHOLDERS = ("[card]", "[phone]", "[email]", "[number]", "[term]")

_SPOKEN = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
           "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_CHINESE = {"零": "0", "〇": "0", "一": "1", "幺": "1", "二": "2", "两": "2", "三": "3",
            "四": "4", "五": "5", "六": "6", "七": "7", "八": "8", "九": "9"}
_UNIT = re.compile(r"(\d+)|\b(" + "|".join(_SPOKEN) + r")\b|([" + "".join(_CHINESE) + "])",
                   re.IGNORECASE)
_GAP = re.compile(r"[\s\-–—()/]*")  # what may stand between the digits of one number
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
    r"|\b[a-z0-9_]+(?:\s+dot\s+[a-z0-9_]+)*\s+at\s+[a-z0-9-]+(?:\s+dot\s+[a-z0-9-]+)*"
    r"\s+dot\s+(?:com|org|net|edu|gov|io|co|uk|cn|de|fr)\b", re.IGNORECASE)


@dataclass(frozen=True)
class RedactionConfig:
    """[redaction] in emoscope.toml. `enabled` is on by default; `terms` are extra words or
    phrases (names of products, account words) always replaced by [term]. `keep_raw` lets the
    roles in `raw_roles` (default: admin) also see the raw text in answers that store nothing
    (/v1/predict?asr=true, the live stream); what is stored is redacted whatever it says."""
    enabled: bool = True
    terms: tuple[str, ...] = ()
    keep_raw: bool = False
    raw_roles: tuple[str, ...] = ("admin",)

    @classmethod
    def from_toml(cls, section: dict) -> "RedactionConfig":
        unknown = set(section) - {"enabled", "terms", "keep_raw", "raw_roles"}
        if unknown:
            raise ValueError(f"[redaction]: unknown setting(s) {sorted(unknown)}; "
                             "known: enabled, terms, keep_raw, raw_roles")
        terms = section.get("terms", [])
        if not isinstance(terms, list) or not all(isinstance(t, str) and t.strip()
                                                  for t in terms):
            raise ValueError("[redaction] terms must be a list of non-empty strings")
        keep_raw = section.get("keep_raw", False)
        if not isinstance(keep_raw, bool):
            raise ValueError("[redaction] keep_raw must be true or false")
        roles = section.get("raw_roles", ["admin"])
        if not isinstance(roles, list) or not all(r in ROLES for r in roles):
            raise ValueError(f"[redaction] raw_roles must be a list of roles ({', '.join(ROLES)})")
        return cls(bool(section.get("enabled", True)), tuple(t.strip() for t in terms),
                   keep_raw, tuple(roles))

    def shows_raw(self, roles) -> bool:
        """Whether a caller with these roles may see the raw text where nothing is stored."""
        return self.keep_raw and bool(set(roles) & set(self.raw_roles))


@functools.lru_cache(maxsize=8)
def _config_at(path) -> RedactionConfig:
    return RedactionConfig.from_toml(read_config(path).get("redaction", {}))


def config() -> RedactionConfig:
    """This process's redaction settings, from the emoscope.toml core.admin.settings finds."""
    return _config_at(config_path())


def luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digit_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, placeholder) of each run of digits that must go."""
    runs: list[list] = []  # [start, end, digits, spoken?]
    for m in _UNIT.finditer(text):
        written, word, han = m.groups()
        digits = written or (_SPOKEN[word.lower()] if word else _CHINESE[han])
        if runs and _GAP.fullmatch(text, runs[-1][1], m.start()):
            run = runs[-1]
            run[1], run[2], run[3] = m.end(), run[2] + digits, run[3] or not written
        else:
            runs.append([m.start(), m.end(), digits, not written])
    out = []
    for start, end, digits, spoken in runs:
        n = len(digits)
        if 13 <= n <= 19 and luhn(digits):
            kind = "[card]"
        elif 7 <= n <= 15:
            kind = "[phone]"
            if start and text[start - 1] == "+":
                start -= 1
        elif (spoken and n >= 4) or n >= 16:
            kind = "[number]"
        else:
            continue
        out.append((start, end, kind))
    return out


def _term_pattern(terms: tuple[str, ...]) -> re.Pattern | None:
    if not terms:
        return None
    parts = []
    for t in sorted(terms, key=len, reverse=True):
        body = r"\s+".join(re.escape(w) for w in t.split())
        # Whole words where words have edges; Chinese terms have none to look for.
        parts.append(body if not t.isascii() else rf"(?<!\w){body}(?!\w)")
    return re.compile("|".join(parts), re.IGNORECASE)


def spans(text: str, cfg: RedactionConfig) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, placeholder) of everything in `text` to redact, in order."""
    found = [(m.start(), m.end(), "[email]") for m in _EMAIL.finditer(text)]
    terms = _term_pattern(cfg.terms)
    if terms is not None:
        found += [(m.start(), m.end(), "[term]") for m in terms.finditer(text)]
    found += _digit_spans(text)
    found.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    out, end = [], -1
    for s in found:
        if s[0] >= end:
            out.append(s)
            end = s[1]
    return out


def redact_pieces(pieces: list[str], cfg: RedactionConfig | None = None) -> list[str]:
    """Each of `pieces` (consecutive texts of one speaker, or its words in order) with what
    must go replaced; a value that runs across pieces is replaced in each piece it touches."""
    cfg = cfg or config()
    if not cfg.enabled or not pieces:
        return list(pieces)
    starts, pos = [], 0
    for p in pieces:
        starts.append(pos)
        pos += len(p) + 1
    joined = " ".join(pieces)
    cuts: list[list[tuple[int, int, str]]] = [[] for _ in pieces]
    for s, e, kind in spans(joined, cfg):
        i = bisect.bisect_right(starts, s) - 1  # the pieces it touches, from the first on
        while i < len(pieces) and starts[i] < e:
            at = starts[i]
            lo, hi = max(s, at), min(e, at + len(pieces[i]))
            if lo < hi:
                cuts[i].append((lo - at, hi - at, kind))
            i += 1
    out = []
    for p, cs in zip(pieces, cuts):
        for lo, hi, kind in reversed(cs):
            p = p[:lo] + kind + p[hi:]
        out.append(p)
    return out


def redact_text(text: str, cfg: RedactionConfig | None = None) -> str:
    return redact_pieces([text], cfg)[0]


def redact_said(text: str, words: list[str], cfg: RedactionConfig | None = None
                ) -> tuple[str, list[str]]:
    """One piece's text and its words, redacted (what /v1/predict?asr=true answers)."""
    return redact_text(text or "", cfg), redact_pieces(list(words), cfg)


def redact_result(result, cfg: RedactionConfig | None = None):
    """The SessionResult with each speaker's utterances and words redacted, the utterances of
    one channel taken together in time order."""
    cfg = cfg or config()
    if not cfg.enabled or not result.utterances:
        return result
    utts = list(result.utterances)
    by_channel: dict[int, list[int]] = {}
    for i, u in enumerate(utts):
        by_channel.setdefault(u.channel, []).append(i)
    for idx in by_channel.values():
        idx.sort(key=lambda i: (utts[i].start_s, i))
        texts = redact_pieces([utts[i].text or "" for i in idx], cfg)
        words = [(i, n) for i in idx for n in range(len(utts[i].words))]
        said = redact_pieces([utts[i].words[n].word for i, n in words], cfg)
        new_words = {i: list(utts[i].words) for i in idx}
        for (i, n), w in zip(words, said):
            if w != new_words[i][n].word:
                new_words[i][n] = replace(new_words[i][n], word=w)
        for i, t in zip(idx, texts):
            if t != (utts[i].text or "") or tuple(new_words[i]) != utts[i].words:
                utts[i] = replace(utts[i], text=t, words=tuple(new_words[i]))
    return replace(result, utterances=tuple(utts))
