"""Response shapes, for the OpenAPI document and for checking what the endpoints return."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.labels import LABELS

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
        description="The reply strategy for this emotion (seed §4.1), or the request to "
                    "repeat when fallback_action is set; from emoscope.toml.")


class ChannelAnswer(Judgement):
    channel: int
    speaker: str
    flags: list[str] = Field(description="Quality flags: too_quiet, clipped, too_short.")
    curve: Curve | None = None
    embedding: list[float] | None = None


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
