"""WS /v1/stream: a live conversation in, an update every tick, a summary at the end.

Protocol (docs/api.md has the full message shapes):

    connect  /v1/stream?role=customer&lang=en&encoding=pcm16[&channels=2&role=agent,customer]
    server → {"type": "ready", ...}
    client → binary audio chunks (pcm16: 16 kHz s16le, channels interleaved; opus: one packet
             per message)
    server → {"type": "update", ...} every tick_s (0.5 s) of wall time
    client → {"type": "end"}                 (text; optional "store": true)
    server → {"type": "final", ...}, then closes with 1000

Errors are {"type": "error", "code": ..., "message": ...}; fatal ones are followed by a close
(1008 bad request or no audio for `stream_idle_s`, 30 s; 1009 chunk too large; 1013 too many
streams, on the server or for this caller, `max_streams_per_caller`, 8; 1011 internal error).

`store=true` (or "store": true in "end") keeps the conversation: the API does not write the
database (the worker is its single writer), so the stream's audio goes into the worker's inbox
as a WAV file with its sidecar (metadata, roles), exactly as an upload, and "final" carries
the job: `"store": {"job_id": ..., "status": "queued"}`. The worker analyses it with its
model — the API's, when both run the same one — and the stored segments are the final
message's utterances, under the same ids. Supervisors and admins may store; a supervisor's
stream is filed under one of their teams (`team=`).
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import re

import time

from fastapi import APIRouter, Depends, HTTPException, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from api.answers import LANGS
from api.batcher import Overloaded, TimedOut
from api.context import Caller
from api.live import LiveStream, StreamFull
from api.runtime import Runtime
from api.security import Identity, require_identity
from api.stream_audio import ENCODINGS, BadAudio, decoder
from api.uploads import Refused, queue_recording, upload_team
from core.intake import inbox
from core.text import redaction
from core.media.audio import SAMPLE_RATE
from core.base.times import utc_now

log = logging.getLogger(__name__)
router = APIRouter()

_ROLE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


# Query parameters that describe the conversation, for a stored stream's session.
METADATA = {"team": "team", "agent": "agent_id", "customer": "customer_id", "tags": "tags"}


class BadRequest(ValueError):
    pass


def parse_params(q, opts) -> dict:
    """Query parameters → stream settings, or BadRequest naming the bad one."""
    unknown = set(q.keys()) - {"role", "channels", "encoding", "sample_rate", "lang", "store",
                               *METADATA}
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    roles = tuple(r.strip() for r in q["role"].split(",")) if q.get("role") else ()
    if any(not _ROLE.match(r) for r in roles):
        raise BadRequest("role: one name per channel (letters, digits, _ . -; at most 32 "
                         "characters), comma-separated")
    try:
        channels = int(q.get("channels", len(roles) or 1))
    except ValueError:
        raise BadRequest("channels must be 1 or 2") from None
    if channels not in (1, 2):
        raise BadRequest("channels must be 1 or 2")
    if roles and len(roles) != channels:
        raise BadRequest(f"{len(roles)} role(s) given for {channels} channel(s)")
    roles = roles or (("speaker",) if channels == 1 else tuple(opts.stereo_roles))
    encoding = q.get("encoding", "pcm16")
    if encoding not in ENCODINGS:
        raise BadRequest(f"encoding must be one of {', '.join(ENCODINGS)}")
    if encoding == "pcm16" and q.get("sample_rate", str(SAMPLE_RATE)) != str(SAMPLE_RATE):
        raise BadRequest(f"pcm16 audio must be {SAMPLE_RATE} Hz; resample before sending")
    lang = q.get("lang", "en")
    if lang not in LANGS:
        raise BadRequest(f"lang must be one of {', '.join(LANGS)}")
    store = q.get("store", "false").lower()
    if store not in _TRUE | _FALSE:
        raise BadRequest("store must be true or false")
    meta = {key: q[param].strip() for param, key in METADATA.items() if q.get(param, "").strip()}
    if any(len(v) > 400 for v in meta.values()):
        raise BadRequest("team, agent, customer, tags: at most 400 characters each")
    meta["tags"] = [t.strip() for t in meta.pop("tags", "").split(",") if t.strip()]
    return {"roles": roles, "encoding": encoding, "lang": lang, "store": store in _TRUE,
            "metadata": meta}


class Connection:
    """One client: a receive loop (audio in) and a ticker (updates out)."""

    def __init__(self, ws: WebSocket, rt: Runtime, params: dict, identity: Identity):
        self.ws, self.rt, self.p, self.identity = ws, rt, params, identity
        s = rt.settings
        self.live = LiveStream(params["roles"], rt.rules, rt.opts, params["lang"],
                               s.stream_context_s, s.max_stream_s, s.volatility_reference,
                               params["encoding"], rt.transcriber,
                               redaction.config().shows_raw(identity.viewer.roles))
        self.decode = decoder(params["encoding"], len(params["roles"]))
        self._send_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self.started = utc_now()
        self._reference_at = 0.0
        try:  # who may store, under which team: decided at connect, said in "ready"
            self.team = upload_team(identity.viewer, params["metadata"].get("team"))
            self.store_refusal = None
        except Refused as e:
            self.team, self.store_refusal = None, e.detail

    async def send(self, msg: dict) -> None:
        async with self._send_lock:
            await self.ws.send_json(msg)

    async def error(self, code: str, message: str) -> None:
        await self.send({"type": "error", "code": code, "message": message})

    async def run(self) -> None:
        s, lm = self.rt.settings, self.rt.lm
        await self.send({
            "type": "ready", "stream_id": self.live.id, "encoding": self.p["encoding"],
            "sample_rate": SAMPLE_RATE, "tick_s": s.tick_s, "lang": self.p["lang"],
            "channels": [{"channel": c.index, "speaker": c.speaker}
                         for c in self.live.channels],
            "model": lm.name, "trained": lm.trained,
            "store": {"requested": self.p["store"], "available": self.store_refusal is None}
            | ({"reason": self.store_refusal} if self.store_refusal else {})})
        if self.p["store"] and self.store_refusal:
            await self.send({"type": "warning", "code": "store_refused",
                             "message": f"this stream cannot be stored: {self.store_refusal}"})
        await self._load_reference()
        ticker = asyncio.create_task(self._ticks())
        try:
            store = await self._receive()
        except WebSocketDisconnect:
            store = None
        if store is None:  # the client left without "end": nothing to answer
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            return
        self._stop.set()
        await asyncio.gather(ticker, return_exceptions=True)
        final = await self.live.finish(await run_in_threadpool(self.live.final_spans),
                                       self._submit_final)
        final["session_id"] = self.live.result.session_id if self.live.result else None
        final["store"] = {"requested": bool(store)}
        if store:
            final["store"] |= await self._store()
        await self.send(final)
        await self.ws.close(1000)

    async def _store(self) -> dict:
        """Queue the stream for the worker (audited first); the job, or why not."""
        if self.store_refusal:
            return {"status": "refused", "reason": self.store_refusal}
        if self.live.n_samples == 0:
            return {"status": "refused", "reason": "no audio was received"}
        rt, meta = self.rt, dict(self.p["metadata"])
        meta.update(team=self.team, roles=list(self.p["roles"]),
                    recorded_at=self.started.isoformat(timespec="seconds"))
        now = self.ws.app.state.gate.refresh()
        c = Caller(self.identity, rt.settings, now.audio_root, now.access)
        try:
            job_id = await run_in_threadpool(
                queue_recording, c, f"{self.live.id}.wav", self.live.wav(),
                inbox.clean_metadata(meta), None)
        except Refused as e:
            return {"status": "failed", "reason": e.detail}
        except HTTPException as e:  # the audit could not be written: nothing was queued
            return {"status": "failed", "reason": str(e.detail)}
        return {"job_id": job_id, "status": "queued"}

    async def _load_reference(self) -> None:
        """Earlier sessions' volatility for the volatility rule, through this caller's scope
        (unless the settings fix one); read again every reference_refresh_s."""
        self._reference_at = time.monotonic()
        if not self.rt.settings.volatility_reference:
            refs = self.ws.app.state.references
            self.live.reference = await run_in_threadpool(refs.get, self.identity.viewer)

    async def _receive(self) -> bool | None:
        """Audio until "end" (→ whether storing was asked) or a disconnect (→ None)."""
        s = self.rt.settings
        loop = asyncio.get_running_loop()
        last_audio = loop.time()
        while True:
            try:  # a slot held without audio is a slot others cannot have
                msg = await asyncio.wait_for(self.ws.receive(),
                                             max(0.0, last_audio + s.stream_idle_s - loop.time()))
            except asyncio.TimeoutError:
                await self.error("idle", f"no audio for {s.stream_idle_s:g} s; closing the stream")
                await self.ws.close(1008)
                return None
            if msg["type"] == "websocket.disconnect":
                return None
            data, text = msg.get("bytes"), msg.get("text")
            if data is not None:
                last_audio = loop.time()
                if len(data) > s.max_chunk_bytes:
                    await self.error("chunk_too_large", f"an audio message of {len(data)} bytes; "
                                     f"at most {s.max_chunk_bytes} (send smaller chunks)")
                    await self.ws.close(1009)
                    return None
                try:
                    self.live.append(self.decode(data))
                except BadAudio as e:
                    await self.error("bad_audio", str(e))
                except StreamFull as e:
                    await self.error("stream_full", f"{e}; ending the stream")
                    return self.p["store"]
            elif text is not None:
                try:
                    ctl = json.loads(text)
                except ValueError:
                    ctl = None
                if not isinstance(ctl, dict) or ctl.get("type") != "end":
                    await self.error("bad_message", 'text messages are JSON control messages; '
                                     'the only one is {"type": "end"} (optional "store": true)')
                    continue
                return bool(ctl.get("store", self.p["store"]))

    async def _ticks(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.rt.settings.tick_s
        due = loop.time() + tick
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), max(0.0, due - loop.time()))
                return  # ended while waiting: the final message follows
            except asyncio.TimeoutError:
                pass
            try:
                if time.monotonic() - self._reference_at > self.rt.settings.reference_refresh_s:
                    await self._load_reference()
                # No name keeps the plans between ticks: they hold the buffer they read, which
                # a longer stream has replaced by a larger one since.
                await self.send(await self.live.tick(await run_in_threadpool(self.live.plan),
                                                     self.rt.batcher.submit))
            except (WebSocketDisconnect, RuntimeError, OSError):
                return  # the socket closed under us
            except Exception as e:  # noqa: BLE001 — end this stream loudly, not the server
                log.exception("stream %s: update failed", self.live.id)
                await self._abort(f"the stream failed: {type(e).__name__}")
                return
            due += tick
            late = loop.time() - due
            if late > 0:  # a slow tick: skip the missed ones rather than burst
                due += tick * (int(late // tick) + 1)

    async def _abort(self, message: str) -> None:
        try:
            await self.error("internal", message)
            await self.ws.close(1011)
        except Exception:  # noqa: BLE001 — the socket is already gone
            pass

    async def _submit_final(self, waves):
        """The end must not be lost to a busy moment: wait for room in the queue."""
        for _ in range(20):
            try:
                return await self.rt.batcher.submit(
                    waves, timeout_s=max(60.0, self.rt.settings.request_timeout_s))
            except (Overloaded, TimedOut) as e:
                await asyncio.sleep(e.retry_after)
        raise Overloaded("the model stayed too busy to finish the stream", 5)


LONG_STREAM_S = 60.0  # after a stream this long, freed memory is handed back to the system


def give_back_memory() -> None:
    """Hand freed heap back to the system. A long stream's buffers and the model's passes
    over it are allocated in glibc's arenas from many threads; freed, they stayed in the
    process (RSS +1 GB after a one-hour stream) because glibc returns arena memory only when
    asked. Not glibc (musl, macOS): nothing to do."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


@router.websocket("/stream")
async def stream(ws: WebSocket, identity: Identity = Depends(require_identity)) -> None:
    rt: Runtime | None = ws.app.state.runtime
    await ws.accept()
    if rt is None or rt.state != "ready":
        await ws.send_json({"type": "error", "code": "not_ready",
                            "message": "the model is not loaded yet"})
        await ws.close(1013)
        return
    try:
        params = parse_params(ws.query_params, rt.opts)
    except BadRequest as e:
        await ws.send_json({"type": "error", "code": "bad_request", "message": str(e)})
        await ws.close(1008)
        return
    if rt.streams >= rt.settings.max_streams:
        await ws.send_json({"type": "error", "code": "busy", "message":
                            f"{rt.streams} streams are open, the most this server takes; "
                            "try again later"})
        await ws.close(1013)
        return
    who = identity.subject
    if rt.streams_by[who] >= rt.settings.max_streams_per_caller:
        await ws.send_json({"type": "error", "code": "quota", "message":
                            f"{who} has {rt.streams_by[who]} streams open, the most one caller "
                            "may; end one first"})
        await ws.close(1013)
        return
    rt.streams += 1
    rt.streams_by[who] += 1
    heard_s = 0.0
    try:
        conn = Connection(ws, rt, params, identity)
        try:
            await conn.run()
        finally:
            heard_s = conn.live.duration_s
            del conn  # its buffers (an hour of audio is 230 MB a channel) go now
    except WebSocketDisconnect:
        pass
    except Exception as e:  # noqa: BLE001 — tell the client, keep serving the others
        log.exception("stream failed")
        try:
            await ws.send_json({"type": "error", "code": "internal",
                                "message": f"the stream failed: {type(e).__name__}"})
            await ws.close(1011)
        except Exception:  # noqa: BLE001 — the socket is already gone
            pass
    finally:
        if heard_s >= LONG_STREAM_S:
            await run_in_threadpool(give_back_memory)
        rt.streams -= 1
        rt.streams_by[who] -= 1
        if rt.streams_by[who] <= 0:
            del rt.streams_by[who]
