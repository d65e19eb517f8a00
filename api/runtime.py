"""What the server holds while it runs: the model (loaded and warmed once), the rules, the
batcher in front of the engine, and the count of open streams."""
from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass, field

from api.batcher import Batcher
from api.settings import Settings
from core.analysis.rules import Rules, load_rules
from ingest.model import LoadedModel
from ingest.options import IngestOptions

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    lm: LoadedModel
    rules: Rules
    opts: IngestOptions
    batcher: Batcher
    streams: int = 0
    streams_by: Counter = field(default_factory=Counter)  # open streams per caller
    state: str = "ready"  # ready → draining at shutdown
    transcriber: object = None  # the speech-to-text backend (settings.asr), None for none


def engine_run(lm: LoadedModel, batch_seconds: float | None):
    """The one call the batcher makes: the batched engine (FunASR's loop for checkpoints it
    does not cover), on one list of waveforms."""
    from ingest.engine import EngineOptions, infer
    return functools.partial(infer, lm, opts=EngineOptions(batch_seconds=batch_seconds))


def budget(lm: LoadedModel, settings: Settings) -> float:
    if settings.batch_seconds:
        return float(settings.batch_seconds)
    from ingest.engine import default_batch_seconds
    return default_batch_seconds(lm.device)


def load_runtime(settings: Settings) -> Runtime:
    """Load the model and rules and warm the engine (seed §5.1); blocking, seconds to minutes."""
    from ingest.engine import warm_up
    from ingest.model import load

    rules = load_rules(settings.rules)
    lm = load(settings.model, settings.device)
    warm_up(lm)
    opts = IngestOptions(low_confidence=rules.confidence_threshold)
    secs = budget(lm, settings)
    batcher = Batcher(engine_run(lm, secs), batch_seconds=secs,
                      max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue,
                      timeout_s=settings.request_timeout_s, enabled=settings.batching)
    log.info("model %s on %s ready (batching %s, budget %g audio-s)", lm.name, lm.device,
             "on" if settings.batching else "off", secs)
    from ingest.speech_to_text import load as load_asr
    transcriber = load_asr(settings.asr)  # loaded now: a backend that cannot load stops start-up
    from ingest.prosody import use as use_prosody
    use_prosody()  # librosa's kernels loaded now, not while the first live stream waits
    return Runtime(settings, lm, rules, opts, batcher, transcriber=transcriber)
