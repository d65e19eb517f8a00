"""Every tunable of the HTTP API in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DB = Path("data/emoscope.duckdb")


def _upload_mb() -> float:
    """The dashboard's upload limit ($EMOSCOPE_UPLOAD_MB, else 500): one limit for uploads
    wherever they come in."""
    try:
        return max(1.0, float(os.environ.get("EMOSCOPE_UPLOAD_MB", 500)))
    except ValueError:
        return 500.0


@dataclass(frozen=True)
class Settings:
    # Where and what to serve
    host: str = "127.0.0.1"
    port: int = 8000
    db: Path = DEFAULT_DB  # read by the session endpoints; uploads queue in its inbox
    inbox: Path | None = None  # None → inbox/ beside the database (the worker's default)
    model: str = "emotion2vec_plus_large"
    device: str = "auto"
    # emoscope.toml: the rules and the settings ([access], [auth], [api], [storage]).
    # None → $EMOSCOPE_CONFIG, $EMOSCOPE_RULES, ./emoscope.toml, defaults.
    rules: str | None = None
    # Serve loopback clients without credentials even though authentication was configured for
    # this store once (its keys since revoked or removed): only when asked for explicitly.
    open_loopback: bool = False

    # Micro-batching: requests that arrive within max_wait_ms of the first one waiting, up to
    # batch_seconds of audio, share one forward pass. batching=False runs each request alone.
    batching: bool = True
    max_wait_ms: float = 5.0
    batch_seconds: float | None = None  # None → the engine's budget for the device
    max_queue: int = 64  # requests waiting for the model; more are answered 503
    request_timeout_s: float = 30.0  # waiting for the model, per request

    # Speech-to-text (ingest/speech_to_text.py) for /v1/predict?asr=true and the live
    # stream's text of each finished utterance: auto, pocketsphinx, sensevoice[:DIR], none.
    asr: str = "none"

    # /v1/predict
    max_upload_mb: float = 20.0  # request body; larger is 413
    min_clip_s: float = 0.5  # shorter is 422 (quality's too_short)
    max_clip_s: float = 30.0  # one utterance per channel; longer is 422

    # /v1/stream
    tick_s: float = 0.5  # one update message per tick
    stream_context_s: float = 1.5  # audio before the new part that the live curve sees
    max_streams: int = 16
    max_streams_per_caller: int = 8  # one key (or identity) never holds every slot
    stream_idle_s: float = 30.0  # a stream that sends no audio this long is closed
    max_stream_s: float = 3600.0  # audio per stream; the whole stream is kept for the final pass
    max_chunk_bytes: int = 256 * 1024  # one WebSocket message of audio
    # Earlier sessions' volatility per speaker role, for the volatility_percentile rule while
    # streaming: read from the store through the streaming viewer's scope and read again every
    # reference_refresh_s. A non-empty volatility_reference is used instead, as it is.
    reference_refresh_s: float = 300.0
    volatility_reference: dict[str, tuple[float, ...]] = field(default_factory=dict,
                                                              compare=False, hash=False)

    # The session endpoints
    max_session_mb: float = field(default_factory=_upload_mb)  # POST /v1/sessions body
    max_page: int = 500  # sessions per page of GET /v1/sessions
    max_similar: int = 100  # k of GET /v1/segments/{id}/similar

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_session_bytes(self) -> int:
        return int(self.max_session_mb * 1024 * 1024)
