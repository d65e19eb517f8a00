"""Every tunable of an ingest run in one place; stored as JSON with the run."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class IngestOptions:
    # Voice activity detection (silero-vad) and segment shaping
    vad_threshold: float = 0.5
    merge_gap_s: float = 0.3  # join speech separated by shorter pauses
    max_segment_s: float = 12.0  # split longer speech at its quietest point
    min_segment_s: float = 0.25  # drop blips shorter than this
    speech_pad_s: float = 0.05
    # Emotion curves: softmax of frame logits averaged over a window, sampled every hop
    curve_hop_s: float = 0.1
    curve_window_s: float = 0.5
    # Below this confidence (or on other/unknown) a segment asks for clarification (seed §4.3);
    # the CLI takes it from the rules file (emoscope.toml) so ingest and predict agree.
    low_confidence: float = 0.4
    # Speaker per channel when neither the manifest nor the upload says otherwise
    stereo_roles: tuple[str, str] = ("agent", "customer")
    engine: str = "engine"  # "engine" (batched) or "reference" (FunASR's own loop)
    batch_seconds: float | None = None  # padded audio-seconds per batch; None: sized per device
    # predict: the clip downmixed and analysed as one segment, no speech detection
    whole_clip: bool = False
    # Speech-to-text (ingest/speech_to_text.py): auto, pocketsphinx, sensevoice[:PATH],
    # sensevoice-tiny, whisper[:MODEL] or none. The CLI's default is auto.
    asr: str = "none"

    def to_dict(self) -> dict:
        return asdict(self)
