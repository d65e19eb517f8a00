"""Response shapes, for the OpenAPI document and for checking what the endpoints return."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.base.labels import LABELS

_STRICT = ConfigDict(extra="forbid")


class Curve(BaseModel):
    model_config = _STRICT
    hop_s: float
    t_s: list[float] = Field(description="Seconds from the start of the clip.")
    probs: list[list[float]] = Field(description=f"Per time, 9 probabilities in the order "
                                                 f"{', '.join(LABELS)}.")


class Judgement(BaseModel):
    model_config = _STRICT
    emotion: str = Field(description="Top label: " + ", ".join(LABELS) + ".")
    confidence: float
    scores: dict[str, float] = Field(description="All 9 labels.")
    fallback_action: Literal["request_clarification"] | None = Field(
        description="request_clarification when the label is other/unknown or the confidence "
                    "is under the threshold in emoscope.toml (seed §4.3).")
    suggested_response: str | None = Field(
        description="The reply strategy for the fused state (seed §4.1: the emotion's, or "
                    "the disagreement's own), or the request to repeat when fallback_action "
                    "is set; from emoscope.toml.")


class ChannelAnswer(Judgement):
    channel: int
    speaker: str
    flags: list[str] = Field(description="Quality flags: too_quiet, clipped, too_short "
                                         "(narrowband is judged on stored sessions).")
    curve: Curve | None = None
    embedding: list[float] | None = None
    text: str | None = Field(None, description="asr=true: what was said on the channel, "
                                               "redacted ([card], [phone], ...).")
    language: str | None = None
    words: list[dict] | None = Field(None, description="asr=true: word, start_s, end_s, "
                                                       "confidence, where the backend gives "
                                                       "word times.")
    asr_model: str | None = None
    sentiment: float | None = Field(None, description="asr=true: what the words say, in "
                                                      "[-1, 1] (VADER or SnowNLP).")
    sentiment_source: str | None = None
    fused: str | None = Field(
        None, description="Voice and words together (docs/metrics.md, Fusion): "
                          "masked_frustration, suppressed_distress, negative, positive, "
                          "neutral, mixed or unclear; from the voice alone without asr=true.")
    text_raw: str | None = Field(None, description="asr=true, only where `[redaction] "
                                 "keep_raw` is on and the caller's role is in `raw_roles`: "
                                 "the text before redaction (`text` and `words` are redacted).")


class PredictAnswer(ChannelAnswer):
    """A mono clip (or stereo whose channels carry the same signal)."""
    model: str
    trained: bool = Field(description="False for random-weight models: labels mean nothing.")
    duration_s: float


class ChannelsAnswer(BaseModel):
    """A clip with two or more speakers: one answer per channel, never one for the mix."""
    model_config = _STRICT
    channels: list[ChannelAnswer]
    model: str
    trained: bool
    duration_s: float


class Health(BaseModel):
    status: str
    detail: str | None = None
    model: str | None = None
    trained: bool | None = None
    device: str | None = None
    batching: bool | None = None
    queued: int | None = None
    streams: int | None = None
    batcher: dict | None = None


class Problem(BaseModel):
    detail: str


# -- the store ------------------------------------------------------------------------------------
class SessionRow(BaseModel):
    session_id: str
    file_name: str | None = None
    status: str | None = None
    error: str | None = None
    when: str | None = Field(None, description="Recorded (else ingested) at, ISO 8601.")
    duration_s: float | None = None
    n_channels: int | None = None
    agent_id: str | None = None
    customer_id: str | None = None
    team: str | None = None
    tags: list[str] = []
    speakers: list[str] = []
    flags: list[str] = Field([], description="Quality flags (too_quiet, clipped, too_short, "
                                             "narrowband) and the rules that alerted.")
    alerts: int = 0
    severity: str | None = None
    volatility: float | None = None
    talk_s: float | None = None
    negative_share: float | None = None
    dominant: str | None = None
    categories: list[str] = Field([], description="The emoscope.toml categories it meets.")
    model: str | None = Field(None, description="The model that analysed it (core.base.models).")
    trained: bool | None = Field(None, description="False for random-weight models: labels "
                                                   "mean nothing.")
    head: str | None = Field(None, description="The head (NAME@vN, trained on reviewers' "
                                               "corrections) that gave the labels; null: the "
                                               "model's own.")


class SessionPage(BaseModel):
    total: int = Field(description="Sessions passing the filters.")
    offset: int
    limit: int
    next_offset: int | None = Field(description="The offset of the next page; null on the last.")
    sessions: list[SessionRow]


class SessionDetail(BaseModel):
    session: dict = Field(description="The session's metadata, status and quality.")
    model: dict | None = Field(description="The model that analysed it, whether it was "
                                           "trained, and the head that gave its labels (null: "
                                           "the model's own).")
    channels: list[dict]
    segments: list[dict] = Field(description="Per segment: times, speaker, label, confidence, "
                                             "9 scores, flags, fallback_action, rolling "
                                             "volatility, and how it sounded: pitch_hz, "
                                             "loudness_dbfs, rate_wps, pitch_curve and "
                                             "loudness_curve (one value per 0.1 s).")
    curves: list[dict] | None = Field(description="Per channel: t_s and 9 probabilities per "
                                                  "point, in the order of `labels`.")
    metrics: list[dict] = Field(description="Per speaker and `all`: docs/metrics.md.")
    alerts: list[dict]
    categories: list[dict] = Field(
        default_factory=list,
        description="The emoscope.toml categories it meets: category, severity, and the "
                    "first utterance that met it (speaker, t_s, utterance_id), n_utterances.")
    notes: list[dict]
    analyses: dict[str, list[dict]] = Field({}, description="Rows of each analyser's own table "
                                            "(core.storage.analysers), e.g. utterances and words.")
    transcript: list[dict] = Field(
        default_factory=list,
        description="What was said, in time order: per utterance its id, channel, speaker, "
                    "start_s, end_s, text, language, confidence, asr_model, the emotion2vec "
                    "label of the segment it lies in (label, label_confidence), the speech-to-"
                    "text model's own emotion where it has one, sentiment, voice and words "
                    "together (voice, fused, turn, turn_fused), and its words with times.")
    audio_events: list[dict] = Field(
        default_factory=list,
        description="Non-speech sounds the speech-to-text model heard (laughter, crying...).")
    caveats: list[str] = Field(
        default_factory=list,
        description="What the labels' reader must know, e.g. that the audio is narrowband "
                    "(telephone band), where the model is known to be less reliable.")


class SimilarHit(BaseModel):
    segment_id: str
    session_id: str
    speaker: str | None = None
    label: str | None = None
    confidence: float | None = None
    start_s: float | None = None
    end_s: float | None = None
    team: str | None = None
    when: str | None = None
    similarity: float | None = None


class SimilarAnswer(BaseModel):
    segment: dict
    searched: int = Field(description="Segments compared with (those the caller may see).")
    similar: list[SimilarHit]


class SearchHit(BaseModel):
    """One moment: an utterance whose words matched, in a session the caller may see."""
    utterance_id: str
    session_id: str = Field(description="GET /v1/sessions/{it}; play from start_s with "
                                         "GET /v1/sessions/{it}/audio.")
    channel: int | None = None
    speaker: str | None = Field(None, description="The speaker's role: customer, agent, speaker.")
    start_s: float | None = None
    end_s: float | None = None
    text: str = Field(description="What was said, as the speech-to-text backend heard it.")
    label: str | None = Field(None, description="Emotion of the segment overlapping it most.")
    confidence: float | None = None
    labels: list[str] = Field(description="Emotions of every segment overlapping it.")
    when: str | None = Field(None, description="The session's date (recorded, else ingested).")
    team: str | None = None
    agent_id: str | None = None
    file_name: str | None = None


class SearchAnswer(BaseModel):
    model_config = _STRICT
    query: str = Field(description="The query as understood: its terms, OR groups, phrases.")
    hits: list[SearchHit] = Field(description="Newest session first, then in the order spoken.")
    more: bool = Field(description="More moments match than `limit`.")


class JobAnswer(BaseModel):
    job_id: str
    status: Literal["queued", "running", "done", "failed"]
    original_name: str | None = None
    error: str | None = None
    session_id: str | None = Field(None, description="When done: GET /v1/sessions/{it}.")
    attempts: int | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    metadata: dict | None = None


# -- calibration ----------------------------------------------------------------------------------
class LabelRequest(BaseModel):
    model_config = _STRICT
    label: str = Field(min_length=1, max_length=40, description="One of the nine emotions, or a "
                       "label the organisation defines in emoscope.toml ([calibration.labels]).")
    also: list[str] = Field([], max_length=100, description="More segment ids to give the same "
                            "label in the same act: the similar moments the reviewer confirmed.")


class Correction(BaseModel):
    correction_id: str
    segment_id: str
    session_id: str
    label: str
    reviewer: str
    created_at: str
    pending: bool = Field(description="True until the worker has stored it (seconds).")


class LabelAnswer(BaseModel):
    corrections: list[Correction]
