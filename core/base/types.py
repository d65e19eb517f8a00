"""One small frozen dataclass per domain noun. Times are seconds from the start of the session."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SessionMeta:
    """What a manifest row or an upload form says about a recording."""
    agent_id: str | None = None
    customer_id: str | None = None
    team: str | None = None
    recorded_at: str | None = None  # ISO date or datetime
    tags: tuple[str, ...] = ()
    roles: tuple[str, ...] | None = None  # speaker per channel; None → defaults


@dataclass(frozen=True)
class ChannelQuality:
    channel: int
    speaker: str
    duration_s: float
    rms: float
    clip_ratio: float
    speech_s: float
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Segment:
    segment_id: str
    channel: int
    speaker: str
    start_s: float
    end_s: float
    label: str
    confidence: float
    scores: np.ndarray  # (9,) canonical order
    embedding: np.ndarray  # (D,)
    rms: float
    clip_ratio: float
    flags: tuple[str, ...]
    fallback_action: str | None
    values: dict = field(default_factory=dict)  # analysers' columns (core.storage.analysers)


@dataclass(frozen=True)
class Curve:
    """Per-channel emotion probabilities on a regular grid of times (seconds)."""
    channel: int
    speaker: str
    t_s: np.ndarray  # (N,)
    probs: np.ndarray  # (N, 9)


@dataclass(frozen=True)
class Word:
    """One recognised word with its times (backends that give word times)."""
    word: str
    start_s: float
    end_s: float
    confidence: float | None = None


@dataclass(frozen=True)
class Utterance:
    """What one speaker said in one stretch of speech, as a speech-to-text backend heard it.
    `emotion` is the backend's own emotion tag where it has one (SenseVoice): a second opinion
    beside emotion2vec's segments, never used in their place."""
    utterance_id: str
    channel: int
    speaker: str
    start_s: float
    end_s: float
    text: str
    language: str | None = None
    confidence: float | None = None
    asr_model: str | None = None
    emotion: str | None = None
    words: tuple[Word, ...] = ()
    # What the words say (core/text/sentiment): [-1, 1] on the redacted text, and "vader" or "snownlp"
    sentiment: float | None = None
    sentiment_source: str | None = None


@dataclass(frozen=True)
class AudioEvent:
    """A non-speech sound a backend heard (laughter, crying, coughing, music...)."""
    channel: int
    start_s: float
    end_s: float
    event: str
    source: str  # which backend said so


@dataclass(frozen=True)
class SessionResult:
    session_id: str
    source_path: str
    file_name: str
    sha256: str
    duration_s: float
    n_channels: int
    meta: SessionMeta
    channels: tuple[ChannelQuality, ...] = ()
    segments: tuple[Segment, ...] = ()
    curves: tuple[Curve, ...] = ()
    utterances: tuple[Utterance, ...] = ()
    audio_events: tuple[AudioEvent, ...] = ()
    status: str = "ok"
    error: str | None = None
    codec: str | None = None
    sample_rate: int | None = None
    flags: tuple[str, ...] = ()  # "truncated": decoding stopped before the end of the file
    # Analysers' own tables: name → rows (segment_id, channel, then the table's columns)
    analyses: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict, compare=False)

    @classmethod
    def failed(cls, path: str | Path, sha256: str, meta: SessionMeta,
               reason: str) -> "SessionResult":
        """A file that could not be analysed: stored with its reason and no other rows."""
        return cls(session_id_for(sha256), str(path), Path(path).name, sha256, 0.0, 0, meta,
                   status="failed", error=reason)


class KnownAudio:
    """The SHA-256 of audio already stored, as sorted 16-byte digests: small enough (16 MB per
    million sessions) to hand to every prepare process, so a stored file is skipped before it
    is decoded. Calling it with a hash answers "already stored?"."""

    def __init__(self, hashes=()):
        keys = sorted({bytes.fromhex(h[:32]) for h in hashes if h})
        self._keys = np.array(keys, dtype="S16") if keys else np.zeros(0, dtype="S16")

    def __len__(self) -> int:
        return int(self._keys.size)

    def __call__(self, sha256: str) -> bool:
        if not self._keys.size or not sha256:
            return False
        key = np.array(bytes.fromhex(sha256[:32]), dtype="S16")
        i = int(np.searchsorted(self._keys, key))
        return i < self._keys.size and self._keys[i] == key


def session_id_for(sha256: str) -> str:
    """Same audio bytes → same id, so a re-ingest overwrites instead of duplicating."""
    return "s" + sha256[:15]


def segment_id_for(session_id: str, channel: int, n: int) -> str:
    return f"{session_id}-c{channel}-{n:05d}"


def utterance_id_for(session_id: str, channel: int, n: int) -> str:
    return f"{session_id}-c{channel}-u{n:05d}"
