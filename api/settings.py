"""Every tunable of the HTTP API in one place."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DB = Path("data/emoscope.duckdb")


@dataclass(frozen=True)
class Settings:
    # Where and what to serve
    host: str = "127.0.0.1"
    port: int = 8000
    db: Path = DEFAULT_DB  # read by the session endpoints (not served yet)
    model: str = "emotion2vec_plus_large"
    device: str = "auto"
    rules: str | None = None  # emoscope.toml; None → $EMOSCOPE_RULES, ./emoscope.toml, defaults

    # Micro-batching: requests that arrive within max_wait_ms of the first one waiting, up to
    # batch_seconds of audio, share one forward pass. batching=False runs each request alone.
    batching: bool = True
    max_wait_ms: float = 5.0
    batch_seconds: float | None = None  # None → the engine's budget for the device
    max_queue: int = 64  # requests waiting for the model; more are answered 503
    request_timeout_s: float = 30.0  # waiting for the model, per request

    # /v1/predict
    max_upload_mb: float = 20.0  # request body; larger is 413
    min_clip_s: float = 0.5  # shorter is 422 (quality's too_short)
    max_clip_s: float = 30.0  # one utterance per channel; longer is 422

    # /v1/stream
    tick_s: float = 0.5  # one update message per tick
    stream_context_s: float = 1.5  # audio before the new part that the live curve sees
    max_streams: int = 16
    max_stream_s: float = 3600.0  # audio per stream; the whole stream is kept for the final pass
    max_chunk_bytes: int = 256 * 1024  # one WebSocket message of audio
    # Earlier rolling volatilities per speaker role, for the volatility_percentile rule while
    # streaming. Empty → the rule waits (as it does for a store without enough sessions).
    volatility_reference: dict[str, tuple[float, ...]] = field(default_factory=dict,
                                                              compare=False, hash=False)

    # Authentication. None → loopback clients only (see api.security).
    auth: object | None = None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
