"""POST /v1/predict: one clip → the seed's JSON, per channel for stereo.

A clip is one utterance per channel, as in the seed and `emoscope predict`: between
`min_clip_s` (0.5 s) and `max_clip_s` (30 s) long. Longer recordings are conversations, not
utterances: stream them (/v1/stream) or upload them as sessions; a longer clip is refused
with 422 before it is decoded whole, a larger body with 413 before it is read.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from api.context import known_query
from api.answers import curve, judge, vector
from api.runtime import Runtime
from api.schemas import ChannelsAnswer, PredictAnswer
from core.analysis import quality
from core.text import redaction, sentiment
from core.media.audio import SAMPLE_RATE, AudioError, decode_blocks, default_roles, probe_duration
from ingest.speech_to_text import transcribe

router = APIRouter(dependencies=[Depends(known_query)])  # unknown parameters: 422

# Declared part types that cannot be audio. Anything else (audio/*, video/* containers,
# application/octet-stream, application/ogg, none) is left to the decoder to judge.
NOT_AUDIO = ("text/", "image/", "application/json", "application/xml", "application/pdf",
              "multipart/", "font/", "model/")
_ROLE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
ROLES = r"^( *[A-Za-z0-9_.-]{1,32} *(, *[A-Za-z0-9_.-]{1,32} *)*)?$"  # the schema says what _ROLE takes


@dataclass
class Clip:
    samples: np.ndarray  # (channels, n) float32 16 kHz
    name: str

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / SAMPLE_RATE


def shown_name(filename: str | None) -> str:
    """The client's file name, safe to echo in a one-line message."""
    name = Path((filename or "").replace("\\", "/")).name
    name = "".join(c for c in name if c.isprintable())[:80]
    return name or "upload"


def _safe_suffix(filename: str | None) -> str:
    """A suffix for the private temp file (a hint for FFmpeg's probe), letters/digits only."""
    suffix = Path(filename or "").suffix
    return suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", suffix) else ""


def require_multipart(request: Request) -> None:
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise HTTPException(415, "send the clip as multipart/form-data in the field `audio` "
                                 f"(the request's content type is {ctype or 'missing'})")


def read_clip(upload, filename: str | None, max_clip_s: float) -> Clip:
    """Decode an upload from a private temp file of its own (unique name, mode 0600, removed
    when done); 415 with the reason when it is not audio, 422 when too long."""
    name = shown_name(filename)
    limit = int(max_clip_s * SAMPLE_RATE)
    with tempfile.NamedTemporaryFile(prefix="emoscope-upload-",
                                     suffix=_safe_suffix(filename)) as tmp:
        upload.seek(0)
        shutil.copyfileobj(upload, tmp, 1 << 20)
        tmp.flush()
        path = Path(tmp.name)
        if not path.stat().st_size:  # what the schema refuses (minLength 1): bad input
            raise HTTPException(422, f"{name}: empty file (0 bytes)")
        stated = probe_duration(path)
        if stated is not None and stated > max_clip_s + 1.0:
            raise HTTPException(422, _too_long(name, stated, max_clip_s))
        blocks, got = [], 0
        try:
            for block in decode_blocks(path, block_s=max_clip_s):
                got += block.shape[1]
                if got > limit:
                    raise HTTPException(422, _too_long(name, None, max_clip_s))
                blocks.append(block)
        except AudioError as e:  # the bytes are not audio: an unsupported media type
            raise HTTPException(415, f"{name}: {e}") from None
    if not blocks:
        raise HTTPException(422, f"{name}: decoded to zero samples")
    return Clip(np.concatenate(blocks, axis=1), name)


def _too_long(name: str, secs: float | None, max_s: float) -> str:
    what = f"{secs:.1f} s long" if secs is not None else f"longer than {max_s:g} s"
    return (f"{name}: {what}; /v1/predict takes one utterance of at most {max_s:g} s — stream "
            "longer audio through /v1/stream")


def channels_of(clip: Clip, roles: str | None, stereo_roles) -> tuple[np.ndarray, tuple]:
    """The channels to judge and their speakers. Channels that carry the same signal (mono
    saved as stereo) are one speaker, judged once."""
    x = clip.samples
    if x.shape[0] > 1 and all(np.allclose(x[0], c, atol=1e-4) for c in x[1:]) and not roles:
        x = x[:1]
    n = x.shape[0]
    if roles:
        given = tuple(r.strip() for r in roles.split(","))
        if any(not _ROLE.match(r) for r in given):
            raise HTTPException(422, "roles: one name per channel (letters, digits, _ . -; at "
                                     "most 32 characters), comma-separated")
        if len(given) != n:
            raise HTTPException(422, f"{clip.name}: {len(given)} role(s) given for {n} "
                                     "channel(s)")
        return x, given
    return x, (tuple(stereo_roles) if n == 2 else default_roles(n))


@router.post(
    "/predict", response_model=PredictAnswer | ChannelsAnswer, response_model_exclude_unset=True,
    dependencies=[Depends(require_multipart)],
    summary="Emotion of one clip (per channel for stereo)",
    responses={413: {"description": "Request body over the size limit"},
               409: {"description": "asr=true on a server that transcribes nothing"},
               415: {"description": "Not multipart/form-data, or the part is not decodable "
                                    "audio"},
               422: {"description": "Too short, too long, bad parameters"},
               503: {"description": "Model busy or starting; see Retry-After"}})
async def predict(
    request: Request,
    audio: UploadFile = File(..., description="The clip: any format FFmpeg decodes (WAV, MP3, "
                                              "FLAC, Ogg/Opus, M4A, ...), mono or stereo.",
                             json_schema_extra={"minLength": 1}),
    granularity: Literal["utterance", "frame"] = Query(
        "utterance", description="`frame` adds the emotion curve (every 0.1 s)."),
    embedding: bool = Query(False, description="Add the utterance embedding vector."),
    lang: Literal["en", "zh"] = Query("en", description="Language of suggested_response."),
    roles: str | None = Query(None, max_length=200, pattern=ROLES,
                              description="Speaker per channel, comma-separated "
                                          "(default: speaker; stereo: agent,customer)."),
    asr: bool = Query(False, description="Add what was said per channel (text, language, "
                                         "words with times) by the server's speech-to-text "
                                         "backend (`emoscope serve --asr`)."),
) -> dict:
    rt: Runtime = request.app.state.runtime
    s = rt.settings
    if asr and rt.transcriber is None:
        # The request is well formed; this server's configuration cannot answer it: 409.
        raise HTTPException(409, "asr=true: this server transcribes nothing (start it with "
                                 "--asr pocketsphinx, sensevoice or auto)")
    ctype = (audio.content_type or "").lower()
    if ctype.startswith(NOT_AUDIO):
        raise HTTPException(415, f"{shown_name(audio.filename)}: the part is {ctype}, not audio")
    clip = await run_in_threadpool(read_clip, audio.file, audio.filename, s.max_clip_s)
    if clip.duration_s < s.min_clip_s:
        raise HTTPException(422, f"{clip.name}: {clip.duration_s:.2f} s of audio; at least "
                                 f"{s.min_clip_s:g} s is needed (too short)")
    x, speakers = channels_of(clip, roles, rt.opts.stereo_roles)
    outs = await rt.batcher.submit(list(x))
    heard = await run_in_threadpool(transcribe, rt.transcriber, list(x)) if asr else None
    cfg = redaction.config()
    raw = asr and cfg.shows_raw(request.state.identity.viewer.roles)
    # What was said leaves the server redacted, as a stored transcript would be (its sentiment
    # judged on that text, as at ingest); the raw text only where [redaction] keep_raw lets
    # this caller's role see it.
    said = [redaction.redact_said(h.text, [w.word for w in h.words], cfg)
            for h in heard] if heard else None
    answers = []
    for ch, (wave, out, speaker) in enumerate(zip(x, outs, speakers)):
        words = sentiment.score(said[ch][0], heard[ch].language) if heard else (None, None)
        a = judge(out.scores, rt.rules, lang, words[0])
        level, clipped, flags = quality.measure(wave, SAMPLE_RATE)
        a.update(channel=ch, speaker=speaker, flags=list(flags))
        if granularity == "frame":
            a["curve"] = curve(out.frame_logits, 0.0, rt.opts.curve_hop_s,
                               rt.opts.curve_window_s)
        if embedding:
            a["embedding"] = vector(out.embedding)
        if heard is not None:
            h, (text, spoken) = heard[ch], said[ch]
            a.update(text=text, language=h.language, asr_model=rt.transcriber.name,
                     sentiment=words[0], sentiment_source=words[1],
                     words=[{"word": word, "start_s": round(w.start_s, 3),
                             "end_s": round(w.end_s, 3), "confidence": w.confidence}
                            for w, word in zip(h.words, spoken)])
            if raw:
                a["text_raw"] = h.text
        answers.append(a)
    common = {"model": rt.lm.name, "trained": rt.lm.trained,
              "duration_s": round(clip.duration_s, 3)}
    if len(answers) == 1:
        return answers[0] | common
    return {"channels": answers} | common
