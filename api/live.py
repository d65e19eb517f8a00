"""A live conversation, tick by tick: what the stream endpoint says every 0.5 s, and at the end.

Per channel (one speaker role each) the audio is kept whole, silero-vad runs on it frame by
frame (`ingest.vad.VadStream`, the same numbers and shaping as offline ingest), and:

* utterances are the VAD segments that later audio can no longer change ("closed"); each is
  run through the model once, so the last `window` (5) give the speaker's rolling volatility
  (seed §4.2, `core.analysis.metrics.rolling_volatility`) and the streak / volatility alert rules —
  and, where the server has a speech-to-text backend (`--asr`), through it once, so each
  finished utterance comes with its `text`;
* the curve and the current label come from a short window — the new audio plus
  `context_s` before it — run through the model each tick while someone is speaking;
* at the end the whole stream is segmented again exactly as `speech_spans` would segment it
  (so the utterances equal offline analysis of the same audio), the few utterances not yet
  analysed are, the session is assembled by ingest's own stages (`prepare.part_of`,
  `assemble.analysed`, `assemble.assemble`), and its metrics and alerts come from core as
  for a stored session.

The model is reached only through `submit` (the batcher), so every stream's work shares the
engine with every other request.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np
import pandas as pd

from api.answers import curve, judge
from api.batcher import Overloaded, TimedOut
from api.stream_audio import wav_chunks
from core.analysis import quality
from core.text import redaction, sentiment
from core.analysis.alerts import session_alerts, store_relative
from core.analysis.analytics import judge_live
from core.media.audio import SAMPLE_RATE
from core.base.labels import LABELS
from core.analysis.metrics import rolling_volatility, segment_updates, session_metrics
from core.analysis.rules import Rules
from core.base.types import ChannelQuality, SessionMeta, SessionResult
from ingest.options import IngestOptions
from ingest.assemble import analysed, assemble
from ingest.prepare import Prepared, part_of
from ingest.vad import VadStream

Submit = Callable[[list[np.ndarray]], Awaitable[list]]
Span = tuple[float, float]


class StreamFull(Exception):
    """The stream reached its audio limit."""


@dataclass
class Channel:
    index: int
    speaker: str
    opts: IngestOptions
    buf: np.ndarray = field(default_factory=lambda: np.zeros(SAMPLE_RATE * 8, np.float32))
    n: int = 0
    outputs: dict = field(default_factory=dict)  # span → model output
    reported: int = 0  # closed utterances already sent
    curve_t: float = 0.0  # the curve was sent up to here
    current: np.ndarray | None = None  # latest scores (window or utterance)
    volatility: float | None = None
    alerted: set = field(default_factory=set)
    texts: dict = field(default_factory=dict)  # span → what was said (speech-to-text)
    prosody: dict = field(default_factory=dict)  # span → pitch and loudness (ingest/prosody)
    max_n: int = SAMPLE_RATE * 3600  # the stream's limit: the buffer never grows past it

    def __post_init__(self):
        self.vad = VadStream(self.opts)

    def append(self, x: np.ndarray) -> None:
        need = self.n + x.size
        if need > self.buf.size:
            # A new array, never a resize in place: a tick may be reading the old one. Half
            # again as large (not twice): at most a third of it waits unused, and never more
            # than the stream may hold.
            grown = np.zeros(max(need, min(self.buf.size * 3 // 2, self.max_n)), np.float32)
            grown[:self.n] = self.buf[:self.n]
            self.buf = grown
        self.buf[self.n:need] = x
        self.n = need

    def wave(self, buf: np.ndarray, s: float, e: float) -> np.ndarray:
        # A copy, never a view: whatever keeps a piece (the batcher, a backend) would keep
        # the whole stream's buffer alive with it.
        return buf[int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)].copy()


@dataclass
class Plan:
    """One channel's work for one tick, computed off the event loop."""
    channel: Channel
    buf: np.ndarray
    closed: list[Span]
    new: list[Span]  # closed and not analysed yet
    window: Span | None
    frontier: float
    speaking: bool


class LiveStream:
    def __init__(self, roles: tuple[str, ...], rules: Rules, opts: IngestOptions, lang: str,
                 context_s: float = 1.5, max_s: float = 3600.0,
                 reference: dict[str, tuple[float, ...]] | None = None,
                 encoding: str = "pcm16", transcriber=None, show_raw: bool = False):
        self.id = "live-" + uuid.uuid4().hex[:12]
        self.transcriber = transcriber  # speech-to-text backend: text of each utterance
        # What was said leaves redacted ([redaction] in emoscope.toml), the raw text beside it
        # only for a caller whose role keep_raw allows.
        self.redaction, self.show_raw = redaction.config(), show_raw
        self.encoding = encoding
        self.result: SessionResult | None = None
        self.rules, self.opts, self.lang = rules, opts, lang
        self.context_s, self.max_n = context_s, int(max_s * SAMPLE_RATE)
        self.reference = reference or {}
        self.channels = [Channel(i, sp, opts, max_n=self.max_n) for i, sp in enumerate(roles)]
        self.seq = 0

    # -- audio in --------------------------------------------------------------------------
    def append(self, block: np.ndarray) -> None:
        """(channels, n) float32 16 kHz."""
        if block.shape[0] != len(self.channels):
            raise ValueError(f"audio has {block.shape[0]} channels; the stream has "
                             f"{len(self.channels)}")
        if self.channels[0].n + block.shape[1] > self.max_n:
            raise StreamFull(f"the stream reached its limit of {self.max_n / SAMPLE_RATE:g} s")
        for ch, x in zip(self.channels, block):
            ch.append(x)

    @property
    def duration_s(self) -> float:
        return min(ch.n for ch in self.channels) / SAMPLE_RATE

    # -- every tick ------------------------------------------------------------------------
    def plan(self) -> list[Plan]:
        """VAD on what arrived; CPU work, run in a worker thread."""
        plans = []
        for ch in self.channels:
            n = ch.n  # before buf: append may swap in a larger array, never a shorter one
            buf = ch.buf
            ch.vad.feed(buf, n)
            frontier = ch.vad.done / SAMPLE_RATE
            closed = ch.vad.closed(ch.vad.spans(buf, n))
            new = [sp for sp in closed if sp not in ch.outputs]
            speaking = frontier > ch.curve_t and ch.vad.speaking(ch.curve_t)
            window = None
            if speaking:
                # The new audio and some context before it; at most one max-length segment.
                start = max(0.0, ch.curve_t - self.context_s,
                            frontier - self.opts.max_segment_s)
                if frontier - start >= self.opts.min_segment_s:
                    window = (start, frontier)
            plans.append(Plan(ch, buf, closed, new, window, frontier, speaking))
        return plans

    async def tick(self, plans: list[Plan], submit: Submit) -> dict:
        """The update message for this tick (the model is asked through `submit`)."""
        waves, slots = [], []
        for p in plans:
            for sp in p.new:
                waves.append(p.channel.wave(p.buf, *sp))
                slots.append((p, sp))
            if p.window is not None:
                waves.append(p.channel.wave(p.buf, *p.window))
                slots.append((p, "window"))
        outs, busy = [], None
        if waves:
            try:
                outs = await submit(waves)
            except (Overloaded, TimedOut) as e:  # the same work is asked again next tick
                busy, outs = f"model busy ({e}); this update has no new analysis", []
        windows = {}
        for (p, what), out in zip(slots, outs):
            if what == "window":
                windows[p.channel.index] = out
            else:
                p.channel.outputs[what] = out
        if outs:
            await self._transcribe([(p.channel, sp) for p in plans for sp in p.new])
            await self._measure([(p.channel, sp) for p in plans for sp in p.new])
        self.seq += 1
        msg = {"type": "update", "seq": self.seq, "t_s": round(self.duration_s, 3),
               "channels": [], "alerts": []}
        if busy:
            msg["busy"] = busy
        for p in plans:
            entry, alerts = self._channel_update(p, windows.get(p.channel.index), bool(outs))
            msg["channels"].append(entry)
            msg["alerts"] += alerts
        return msg

    def _channel_update(self, p: Plan, window_out, analysed: bool) -> tuple[dict, list]:
        ch = p.channel
        done = [sp for sp in p.closed if sp in ch.outputs]
        fresh = done[ch.reported:]
        ch.reported = len(done)
        emb = [ch.outputs[sp].embedding for sp in done]
        if len(emb) >= 2:
            ch.volatility = float(rolling_volatility(np.stack(emb), self.rules.window)[-1])
        pts = {"hop_s": self.opts.curve_hop_s, "t_s": [], "probs": []}
        if window_out is not None:
            pts = curve(window_out.frame_logits, p.window[0], self.opts.curve_hop_s,
                        self.opts.curve_window_s, after_s=ch.curve_t)
            ch.current = window_out.scores
        elif fresh:
            ch.current = ch.outputs[fresh[-1]].scores
        if analysed or not p.speaking:
            ch.curve_t = p.frontier
        entry = {"channel": ch.index, "speaker": ch.speaker, "speech": p.speaking, "curve": pts}
        entry.update(self._now(ch.current))
        entry["volatility"] = None if ch.volatility is None else round(ch.volatility, 4)
        entry["utterances"] = [self._utterance(ch, sp) for sp in fresh]
        return entry, self._alerts(ch, done) if fresh else []

    def _now(self, scores) -> dict:
        if scores is None:
            return {"emotion": None, "confidence": None, "fallback_action": None,
                    "suggested_response": None}
        j = judge(scores, self.rules, self.lang)
        return {k: j[k] for k in ("emotion", "confidence", "fallback_action",
                                  "suggested_response")}

    def _utterance(self, ch: Channel, sp: Span) -> dict:
        """A finished utterance: how it sounded, what was said (with a backend; redacted, the raw
        text beside it only for a role keep_raw allows), and the two fused (core/analysis/fusion) into a
        state that picks the suggested response."""
        heard = ch.texts.get(sp)
        text = self._said(ch, sp) if heard is not None else None
        words = sentiment.score(text, heard.language) if heard else (None, None)
        j = judge(ch.outputs[sp].scores, self.rules, self.lang, words[0])
        out = {"start_s": round(sp[0], 3), "end_s": round(sp[1], 3),
               **{k: j[k] for k in ("emotion", "confidence", "fallback_action", "fused",
                                    "suggested_response")}}
        if heard is not None:
            out.update(text=text, sentiment=words[0])
            if self.show_raw:
                out["text_raw"] = heard.text
        return out

    def _said(self, ch: Channel, sp: Span) -> str:
        """The utterance's text redacted together with the speaker's earlier ones (a number
        read in two breaths is one number)."""
        upto = sorted(x for x in ch.texts if x[0] <= sp[0])
        return redaction.redact_pieces([ch.texts[x].text or "" for x in upto],
                                       self.redaction)[-1]

    async def _transcribe(self, spans: list[tuple[Channel, Span]]) -> None:
        """What was said in these finished utterances, off the event loop."""
        todo = [(ch, sp) for ch, sp in spans if sp not in ch.texts]
        if self.transcriber is None or not todo:
            return
        from starlette.concurrency import run_in_threadpool

        from ingest.speech_to_text import transcribe
        heard = await run_in_threadpool(transcribe, self.transcriber,
                                        [ch.wave(ch.buf, *sp) for ch, sp in todo])
        for (ch, sp), h in zip(todo, heard):
            ch.texts[sp] = h

    async def _measure(self, spans: list[tuple[Channel, Span]]) -> None:
        """Pitch and loudness of these finished utterances (the raised_voice rule reads them),
        off the event loop; nothing where the server does not measure prosody."""
        todo = [(ch, sp) for ch, sp in spans if sp not in ch.prosody]
        if not todo:
            return
        from starlette.concurrency import run_in_threadpool

        from ingest.prosody import measure_many
        found = await run_in_threadpool(measure_many, [ch.wave(ch.buf, *sp) for ch, sp in todo],
                                        SAMPLE_RATE)
        for (ch, sp), v in zip(todo, found or [{}] * len(todo)):
            ch.prosody[sp] = v

    # -- live alert rules ----------------------------------------------------------------------
    def _alerts(self, ch: Channel, done: list[Span]) -> list[dict]:
        """Core's live judgement (core.analysis.analytics.judge_live: the kinds registered `live`, and
        the volatility rule against the reference) over the speaker's closed utterances, each
        alert sent once; a store-relative rule alerts again only after falling back under.
        Rules over the whole session are judged in the final message."""
        seg = pd.DataFrame({
            "segment_id": [f"u{i:05d}" for i in range(len(done))], "channel": ch.index,
            "speaker": ch.speaker, "start_s": [s for s, _ in done],
            "end_s": [e for _, e in done],
            "label": [LABELS[int(np.argmax(ch.outputs[sp].scores))] for sp in done],
            "confidence": [float(np.max(ch.outputs[sp].scores)) for sp in done],
            "scores": [ch.outputs[sp].scores for sp in done],
            "embedding": [ch.outputs[sp].embedding for sp in done],
            **{c: [ch.prosody.get(sp, {}).get(c) for sp in done]
               for c in ("pitch_hz", "loudness_dbfs")}})
        reference = {ch.speaker: list(self.reference.get(ch.speaker, ()))}
        relative = set(store_relative())
        kinds = {r.rule: r.kind for r in self.rules.alerts}
        out, above = [], set()
        for a in judge_live(self.id, seg, done[-1][1], self.rules, reference):
            rel = kinds.get(a["rule"]) in relative
            key = (a["rule"], "above") if rel else (a["rule"], round(a["t_s"], 3))
            above.add(key)
            if key not in ch.alerted:
                ch.alerted.add(key)
                out.append({"speaker": ch.speaker, "channel": ch.index, "rule": a["rule"],
                            "t_s": round(float(a["t_s"]), 3), "severity": a["severity"],
                            "detail": a["detail"], "emotion": a["emotion"],
                            "suggested_response": self.rules.response(a["emotion"],
                                                                      self.lang)})
        for r in self.rules.alerts:  # back under: the next crossing alerts again
            if r.kind in relative and (r.rule, "above") not in above:
                ch.alerted.discard((r.rule, "above"))
        return out

    # -- the end ---------------------------------------------------------------------------------
    def final_spans(self) -> list[tuple[Channel, list[Span]]]:
        """Every channel segmented as offline ingest segments it (CPU; worker thread)."""
        return [(ch, ch.vad.spans(ch.buf, ch.n, final=True)) for ch in self.channels]

    async def finish(self, spans: list[tuple[Channel, list[Span]]], submit: Submit) -> dict:
        """The final message; `self.result` keeps the stream as a SessionResult."""
        waves, slots = [], []
        for ch, found in spans:
            for sp in found:
                if sp not in ch.outputs:
                    waves.append(ch.wave(ch.buf, *sp))
                    slots.append((ch, sp))
        if waves:
            for (ch, sp), out in zip(slots, await submit(waves)):
                ch.outputs[sp] = out
        await self._transcribe([(ch, sp) for ch, found in spans for sp in found])
        self.result = self.session(spans)
        return self._summary(self.result)

    @property
    def n_samples(self) -> int:
        return min(ch.n for ch in self.channels)

    def wav(self):
        """The stream as the WAV file a stored stream is queued as (api.stream_audio)."""
        return wav_chunks([ch.buf for ch in self.channels], self.n_samples,
                          pcm16=self.encoding == "pcm16")

    def session(self, spans: list[tuple[Channel, list[Span]]]) -> SessionResult:
        """The stream as ingest records the same audio (`ingest.assemble`): segments with
        quality flags and fallback, curves, and ids from the SHA-256 of the WAV file `wav()`
        writes — so when the stream is stored (the worker ingests that file), the session and
        its segments have these very ids."""
        n = self.n_samples
        samples = np.stack([ch.buf[:n] for ch in self.channels])
        digest = hashlib.sha256()
        for part in self.wav():
            digest.update(part)
        roles = tuple(ch.speaker for ch in self.channels)
        quality_ = []
        for (ch, found), x in zip(spans, samples):
            level, clipped, flags = quality.measure(x, SAMPLE_RATE)
            quality_.append(ChannelQuality(ch.index, ch.speaker, n / SAMPLE_RATE, level, clipped,
                                           sum(e - s for s, e in found), flags))
        part = part_of(samples, [(ch.index, s, e) for ch, found in spans for s, e in found])
        prep = Prepared(Path(f"{self.id}.wav"), digest.hexdigest(),
                        SessionMeta(roles=roles), duration_s=n / SAMPLE_RATE, roles=roles,
                        channels=tuple(quality_), codec=self.encoding, rate=SAMPLE_RATE)
        outs = [self.channels[c].outputs[(s, e)] for c, s, e in part.spans]
        return assemble(prep, [analysed(part, outs, self.opts)])

    def _summary(self, result: SessionResult) -> dict:
        duration = result.duration_s
        utterances, metrics, alerts = [], [], []
        if result.segments:
            seg = pd.DataFrame([{**{f: getattr(x, f) for f in _SEGMENT_COLUMNS},
                                 **{c: x.values.get(c) for c in ("pitch_hz", "loudness_dbfs")}}
                                for x in result.segments])
            chans = pd.DataFrame([{"speaker": c.speaker, "flags": c.flags}
                                  for c in result.channels])
            upd = segment_updates(seg, self.rules.window, self.rules.confidence_threshold)
            roll = dict(zip(upd["segment_id"], upd["rolling_volatility"]))
            said, redacted = {}, {}
            for ch in self.channels:  # each speaker's utterances redacted together, in order
                spans = sorted(ch.texts)
                texts = [ch.texts[sp].text or "" for sp in spans]
                for sp, t in zip(spans, redaction.redact_pieces(texts, self.redaction)):
                    said[(ch.index, round(sp[0], 3), round(sp[1], 3))] = ch.texts[sp]
                    redacted[(ch.index, round(sp[0], 3), round(sp[1], 3))] = t
            for x in sorted(result.segments, key=lambda x: (x.start_s, x.channel)):
                v = roll[x.segment_id]
                key = (x.channel, round(x.start_s, 3), round(x.end_s, 3))
                h, text = said.get(key), redacted.get(key)
                words = sentiment.score(text, h.language) if h else (None, None)
                utterances.append({
                    "segment_id": x.segment_id, "channel": x.channel, "speaker": x.speaker,
                    "start_s": x.start_s, "end_s": x.end_s,
                    **judge(x.scores, self.rules, self.lang, words[0]),
                    "flags": list(x.flags),
                    "rolling_volatility": None if np.isnan(v) else round(float(v), 4),
                    **({"text": text, "sentiment": words[0]} if h is not None else {}),
                    **({"text_raw": h.text} if h is not None and self.show_raw else {}),
                    **{k: _plain(val) for k, val in x.values.items()}})  # analysers' columns
            sid = result.session_id
            m = session_metrics(sid, seg, chans, duration, self.rules)
            alerts = [{k: a[k] for k in ("speaker", "rule", "t_s", "severity", "detail",
                                         "emotion")}
                      | {"suggested_response": self.rules.response(a["emotion"], self.lang)}
                      for a in session_alerts(sid, seg, m, duration, self.rules)]
            keep = ("speaker", "n_segments", "talk_s", "volatility", "rolling_volatility_max",
                    "neg_share", "trend", "low_conf_share", "unreliable", "unreliable_cause")
            metrics = [{k: _plain(row[k]) for k in keep} for row in m.to_dict("records")]
        return {"type": "final", "stream_id": self.id, "duration_s": round(duration, 3),
                "utterances": utterances, "metrics": metrics, "alerts": alerts,
                "analyses": {k: [{c: _plain(v) for c, v in row.items()} for row in rows]
                             for k, rows in result.analyses.items()}}


_SEGMENT_COLUMNS = ("segment_id", "channel", "speaker", "start_s", "end_s", "label",
                    "confidence", "scores", "embedding", "flags")


def _plain(v):
    if isinstance(v, (np.floating, float)):
        return None if np.isnan(v) else round(float(v), 4)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


__all__ = ["LiveStream", "StreamFull"]
