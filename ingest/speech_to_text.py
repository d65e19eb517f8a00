"""Speech-to-text backends, one registry: what was said in each stretch of speech.

A backend turns pieces of 16 kHz mono speech (the segments voice activity detection found on a
channel) into `Heard`: text, language, confidence, word times where it gives them, and — for
SenseVoice — its own emotion tag and the sounds it heard. `utterances()` makes the stored
`Utterance`s of a session from them: one per speech segment, numbered per channel in time
order, so each transcript line lines up with the emotion of the same stretch.

The `asr` analyser (core/storage/analysers) runs the chosen backend on every ingest path and its
`finish` turns the answers into the session's utterances; `use(NAME)` chooses it for the
process. `--asr NAME` picks one: `pocketsphinx` (its English model ships in its wheel: works anywhere),
`sensevoice` (SenseVoiceSmall through FunASR, where its weights are on disk; `sensevoice:PATH`
for a directory, `sensevoice-tiny` for random weights in tests), `whisper` (faster-whisper,
an optional extra, `whisper:SIZE_OR_PATH`), `none`, and `auto`: SenseVoice where its weights
are local, else pocketsphinx, else none.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from core.storage.analysers import Analyser, Found, Span, configure, register_analyser
from core.base.types import AudioEvent, Utterance, Word, utterance_id_for

SAMPLE_RATE = 16000
NONE, AUTO = "none", "auto"
SILENT_PEAK = 1e-4


class AsrUnavailable(Exception):
    """A named backend cannot be loaded here; the message says why and what to do, in one line."""


@dataclass(frozen=True)
class Heard:
    """What a backend heard in one piece; word times are seconds from the piece's start."""
    text: str
    language: str | None = None
    confidence: float | None = None
    emotion: str | None = None  # the backend's own emotion label (core.base.labels names)
    words: tuple[Word, ...] = ()
    events: tuple[str, ...] = ()  # laughter, crying, coughing, music...


class Backend(Protocol):
    name: str  # what runs.asr and utterances.asr_model record, e.g. "pocketsphinx:en-us"

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[Heard]:
        """One Heard per piece (16 kHz mono float32), in order."""


Loader = Callable[[str | None], Backend]  # the text after "NAME:" (a path, a size), or None
BACKENDS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    def add(loader: Loader) -> Loader:
        BACKENDS[name] = loader
        return loader
    return add


def names() -> list[str]:
    return [AUTO, *BACKENDS, NONE]


def resolve(spec: str | None) -> str:
    """`auto` (or None) → the backend a run would use here; anything else unchanged."""
    if spec not in (None, AUTO):
        return spec
    if sensevoice_weights() is not None:
        return "sensevoice"
    if importlib.util.find_spec("pocketsphinx") is not None:
        return "pocketsphinx"
    return NONE


def load(spec: str | None) -> Backend | None:
    """The backend `spec` names, loaded once per process; None for `none`. AsrUnavailable
    (one line) when it cannot be had here."""
    return _load(resolve(spec))


@functools.lru_cache(maxsize=4)
def _load(spec: str) -> Backend | None:
    name, _, arg = spec.partition(":")
    if name == NONE:
        return None
    if name not in BACKENDS:
        raise AsrUnavailable(f"unknown speech-to-text backend {name!r}; use one of "
                             f"{', '.join(names())}")
    return BACKENDS[name](arg or None)


def utterances(backend: Backend, session_id: str,
               pieces: Sequence[tuple[int, str, float, float, np.ndarray]]
               ) -> tuple[tuple[Utterance, ...], tuple[AudioEvent, ...]]:
    """Utterances and audio events of a session from its speech pieces (channel, speaker,
    start_s, end_s, samples), numbered per channel in time order."""
    order = sorted(range(len(pieces)), key=lambda i: (pieces[i][2], pieces[i][0]))
    heard = transcribe(backend, [pieces[i][4] for i in order])
    return said(session_id, [(*pieces[i][:4], h, backend.name) for i, h in zip(order, heard)])


def transcribe(backend: Backend, waves: Sequence[np.ndarray]) -> list[Heard]:
    """`backend.transcribe`, except that digital silence is not sent (pocketsphinx would make
    a word of it) and comes back as nothing heard."""
    live = [i for i, w in enumerate(waves) if w.size and float(np.max(np.abs(w))) >= SILENT_PEAK]
    if not live:
        return [Heard("") for _ in waves]
    with _lock_of(backend):  # a decoder is not shareable between threads (the API's)
        heard = dict(zip(live, backend.transcribe([waves[i] for i in live])))
    return [heard.get(i, Heard("")) for i in range(len(waves))]


_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _lock_of(backend: Backend) -> threading.Lock:
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(id(backend), threading.Lock())


def said(session_id: str, items: Sequence[tuple[int, str, float, float, Heard, str]]
         ) -> tuple[tuple[Utterance, ...], tuple[AudioEvent, ...]]:
    """The session's utterances and audio events from what was heard in each piece (channel,
    speaker, start_s, end_s, Heard, backend name), pieces in time order. An utterance per
    piece where words were heard, numbered per channel; events kept either way."""
    utts, events, n = [], [], {}
    for ch, speaker, start, end, h, model in items:
        events += [AudioEvent(ch, start, end, e, model) for e in h.events]
        if not h.text.strip():
            continue
        k = n[ch] = n.get(ch, -1) + 1
        utts.append(Utterance(
            utterance_id_for(session_id, ch, k), ch, speaker, start, end, h.text.strip(),
            h.language, h.confidence, model, h.emotion,
            tuple(Word(w.word, round(start + w.start_s, 3), round(start + w.end_s, 3),
                       w.confidence) for w in h.words)))
    return tuple(utts), tuple(events)


# -- the analyser: every executor runs it on the segments' samples ------------------------------
@dataclass(frozen=True)
class AsrConfig:
    backend: str = NONE  # a resolved spec: pocketsphinx, sensevoice[:PATH], whisper[:MODEL], none


@register_analyser
class SpeechToText(Analyser):
    """What was said in each speech segment, by the configured backend (`use()` sets it).
    Its answers become the session's utterances, words and audio events at assembly."""
    name = "asr"
    Config = AsrConfig

    def load(self) -> None:
        self.backend = load(self.config.backend)

    def analyse(self, spans: list[Span]) -> list[Found]:
        if self.backend is None:
            return [Found() for _ in spans]
        heard = transcribe(self.backend, [s.wave for s in spans])
        return [Found(more=(h, self.backend.name)) for h in heard]

    @classmethod
    def finish(cls, result, answers: list):
        items = [(seg.channel, seg.speaker, seg.start_s, seg.end_s, *found.more)
                 for seg, found in answers if found is not None and found.more is not None]
        if not items:
            return result
        items.sort(key=lambda x: (x[2], x[0]))
        utts, events = said(result.session_id, items)
        return replace(result, utterances=utts, audio_events=events)


def use(spec: str | None) -> str | None:
    """Make `spec` (`auto`, a backend, `none`) this process's speech-to-text for every ingest
    path: load it now (AsrUnavailable, one line, when it cannot be had) and configure the
    analyser; the backend's name, for the run's record, or None."""
    backend = load(spec)
    configure({SpeechToText.name: {"backend": resolve(spec)}})
    return None if backend is None else backend.name


# -- pocketsphinx ------------------------------------------------------------------------------
class PocketSphinx:
    """CMU PocketSphinx with the US English acoustic model, dictionary and language model its
    wheel ships. Word times come from its segmentation; a word's confidence is its posterior."""
    FILLERS = ("<s>", "</s>", "<sil>")

    def __init__(self, model_dir: str | None = None):
        try:
            from pocketsphinx import Decoder
        except ImportError as e:
            raise AsrUnavailable(f"pocketsphinx is not installed ({e}); pip install pocketsphinx")
        kw = {}
        if model_dir:  # another language: a directory holding its acoustic model and files
            d = Path(model_dir)
            kw = {"hmm": str(d), "lm": str(next(d.glob("*.lm.bin"), "")) or None,
                  "dict": str(next(d.glob("*.dict"), "")) or None}
        self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL",
                                **{k: v for k, v in kw.items() if v})
        self.name = "pocketsphinx:" + (Path(model_dir).name if model_dir else "en-us")
        self.language = None if model_dir else "en"

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[Heard]:
        return [self._one(w) for w in waves]

    def _one(self, wave: np.ndarray) -> Heard:
        d = self._decoder
        pcm = (np.clip(wave, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        if d.hyp() is None:
            return Heard("", self.language)
        fps = 100.0  # pocketsphinx's frame rate
        words = []
        for s in d.seg():
            w = s.word
            if w in self.FILLERS or w.startswith("[") or w.startswith("+"):
                continue
            words.append(Word(w.split("(")[0], s.start_frame / fps, (s.end_frame + 1) / fps,
                              float(min(1.0, s.prob))))
        conf = float(np.mean([w.confidence for w in words])) if words else None
        return Heard(" ".join(w.word for w in words), self.language, conf, None, tuple(words))


@register("pocketsphinx")
def _pocketsphinx(arg: str | None) -> Backend:
    return PocketSphinx(arg)


# -- SenseVoice ------------------------------------------------------------------------------
SENSEVOICE_HUB = ("iic/SenseVoiceSmall", "FunAudioLLM/SenseVoiceSmall")
_EMOTIONS = {"HAPPY": "happy", "SAD": "sad", "ANGRY": "angry", "NEUTRAL": "neutral",
             "FEARFUL": "fearful", "DISGUSTED": "disgusted", "SURPRISED": "surprised"}
_EVENTS = {"Laughter": "laughter", "Cry": "crying", "Cough": "coughing", "Sneeze": "sneezing",
           "BGM": "music", "Applause": "applause", "Breath": "breathing"}
_LANGUAGES = ("zh", "en", "yue", "ja", "ko")


def sensevoice_weights() -> Path | None:
    """SenseVoiceSmall on disk (ModelScope or Hugging Face cache, or EMOSCOPE_SENSEVOICE)."""
    home = Path.home() / ".cache"
    cands = [Path(os.environ["EMOSCOPE_SENSEVOICE"])] if os.environ.get("EMOSCOPE_SENSEVOICE") else []
    ms_root = Path(os.environ.get("MODELSCOPE_CACHE", home / "modelscope" / "hub"))
    cands += [ms_root / SENSEVOICE_HUB[0], ms_root / "models" / SENSEVOICE_HUB[0]]
    snap = (Path(os.environ.get("HF_HOME", home / "huggingface")) / "hub"
            / ("models--" + SENSEVOICE_HUB[1].replace("/", "--")) / "snapshots")
    if snap.is_dir():
        cands += sorted(snap.iterdir())
    return next((c for c in cands if (c / "model.pt").is_file() and (c / "config.yaml").is_file()),
                None)


def parse_sensevoice(raw: str) -> Heard:
    """SenseVoice's rich text (`<|en|><|ANGRY|><|Speech|><|woitn|>i want a refund`) → Heard.
    Tags may come anywhere (a random checkpoint scatters them); the first of each kind counts."""
    import re
    tags = re.findall(r"<\|([^|]*)\|>", raw)
    text = " ".join(re.sub(r"<\|[^|]*\|>", " ", raw).split())
    lang = next((t for t in tags if t in _LANGUAGES), None)
    emotion = next((_EMOTIONS[t] for t in tags if t in _EMOTIONS), None)
    events = tuple(dict.fromkeys(_EVENTS[t] for t in tags if t in _EVENTS))
    return Heard(text, lang, None, emotion, (), events)


class SenseVoice:
    """SenseVoiceSmall through FunASR's AutoModel: text, language, emotion and audio events."""

    def __init__(self, path: str, label: str, device: str = "cpu"):
        try:
            from funasr import AutoModel
        except ImportError as e:
            raise AsrUnavailable(f"FunASR is not installed ({e})")
        for mod, pkg in (("sentencepiece", "sentencepiece"),
                         ("kaldi_native_fbank", "kaldi-native-fbank")):
            if importlib.util.find_spec(mod) is None and (mod != "kaldi_native_fbank"
                                                          or importlib.util.find_spec("torchaudio") is None):
                raise AsrUnavailable(f"SenseVoice needs {pkg}; pip install {pkg}")
        try:
            # dither 0: the features (and so the text) of the same audio are the same twice
            self._model = AutoModel(model=path, disable_update=True, device=device,
                                    log_level="ERROR", disable_pbar=True,
                                    frontend_conf={"dither": 0.0})
        except Exception as e:  # a broken or partial directory
            raise AsrUnavailable(f"SenseVoice could not be loaded from {path}: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")
        self.name = f"sensevoice:{label}"

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[Heard]:
        if not waves:
            return []
        # One piece at a time: padding in a batch changes what it hears, and a piece's text
        # must not depend on its neighbours.
        out = self._model.generate(input=[np.asarray(w, np.float32) for w in waves],
                                   language="auto", use_itn=True, batch_size=1,
                                   disable_pbar=True)
        return [parse_sensevoice(r.get("text", "")) for r in out]


@register("sensevoice")
def _sensevoice(arg: str | None) -> Backend:
    if arg:
        path = Path(arg).expanduser()
        if not path.is_dir():
            raise AsrUnavailable(f"sensevoice: {path} is not a directory holding SenseVoiceSmall")
        return SenseVoice(str(path), path.name)
    found = sensevoice_weights()
    if found is None:
        raise AsrUnavailable("SenseVoiceSmall's weights are not on this machine (looked in the "
                             "ModelScope and Hugging Face caches and EMOSCOPE_SENSEVOICE); "
                             "download iic/SenseVoiceSmall, or use --asr pocketsphinx")
    return SenseVoice(str(found), "SenseVoiceSmall")


@register("sensevoice-tiny")
def _sensevoice_tiny(arg: str | None) -> Backend:
    from ingest.tiny_sensevoice import build
    return SenseVoice(str(build()), "tiny-random")


# -- Whisper (faster-whisper, optional) ---------------------------------------------------------
class Whisper:
    """faster-whisper (CTranslate2) on the CPU with int8 weights; word times included."""

    def __init__(self, model: str):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise AsrUnavailable("whisper needs faster-whisper: pip install 'emoscope[whisper]'")
        try:
            self._model = WhisperModel(model, device="cpu", compute_type="int8",
                                       local_files_only=True)
        except Exception as e:
            raise AsrUnavailable(f"Whisper model {model!r} is not on this machine "
                                 f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                                 "give --asr whisper:PATH to a converted model")
        self.name = f"whisper:{Path(model).name}"

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[Heard]:
        out = []
        for w in waves:
            segs, info = self._model.transcribe(np.asarray(w, np.float32), word_timestamps=True,
                                                vad_filter=False, beam_size=1)
            segs = list(segs)
            words = tuple(Word(x.word.strip(), x.start, x.end, x.probability)
                          for s in segs for x in (s.words or ()))
            text = " ".join(s.text.strip() for s in segs)
            conf = float(np.mean([x.confidence for x in words])) if words else None
            out.append(Heard(text, info.language, conf, None, words))
        return out


@register("whisper")
def _whisper(arg: str | None) -> Backend:
    return Whisper(arg or "small")


# -- how well it heard --------------------------------------------------------------------------
def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation: what WER compares ("It's" → "it's")."""
    import re
    return re.findall(r"[a-z0-9']+", text.lower().replace("’", "'"))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by edit distance."""
    ref, hyp = words_of(reference), words_of(hypothesis)
    if not ref:
        return float(bool(hyp))
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)
