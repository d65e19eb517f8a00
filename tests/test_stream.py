"""WS /v1/stream: live speech replayed in real time against offline analysis of the same audio."""
from __future__ import annotations

import json
import threading
import time
from fractions import Fraction

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from api.settings import Settings
from core.analysis.rules import load_rules
from core.base.types import SessionMeta
from ingest.options import IngestOptions
from ingest.pipeline import process_file
from tests.audio_gen import silence, speak, write
from tests.serving import LOCAL, WS_LOCAL

SR = 16_000
# A tiny reference so the volatility rule (95th percentile of earlier values, at least 20 of
# them) can fire: any two different utterances are further apart than 0.
SETTINGS = Settings(model="tiny-random", device="cpu",
                    volatility_reference={"customer": (0.0,) * 20})


@pytest.fixture(scope="module")
def client(model, tmp_path_factory):
    import dataclasses
    settings = dataclasses.replace(SETTINGS, db=tmp_path_factory.mktemp("stream") / "e.duckdb")
    with TestClient(create_app(settings), client=("127.0.0.1", 40001), base_url=LOCAL) as c:
        yield c


@pytest.fixture(scope="module")
def live_pcm() -> np.ndarray:
    """Three short utterances with pauses, as 16-bit samples (what a phone line sends)."""
    x = np.concatenate([speak("I need help with my bill."), silence(0.9),
                        speak("It is wrong again."), silence(0.9),
                        speak("Please fix it now."), silence(0.4)])
    return (np.clip(x, -1, 1) * 32767).astype("<i2")


def offline(tmp_path, pcm: np.ndarray, model):
    """The same audio through ingest's own path: file → prepare → model → assemble."""
    path = write(tmp_path / "same.wav", pcm.astype(np.float32) / 32768)
    opts = IngestOptions(low_confidence=load_rules().confidence_threshold)
    return process_file(path, SessionMeta(roles=("customer",)), model, opts).result


def replay(ws, chunks, pace_s: float | None):
    """Send chunks (in real time when pace_s is given) while collecting every message."""
    got, at = [], []

    def receive():
        while True:
            m = ws.receive_json()
            got.append(m)
            at.append(time.monotonic())
            if m["type"] in ("final", "error"):
                return

    rx = threading.Thread(target=receive)
    rx.start()
    t0 = time.monotonic()
    for i, c in enumerate(chunks):
        ws.send_bytes(c)
        if pace_s:
            time.sleep(max(0.0, t0 + (i + 1) * pace_s - time.monotonic()))
    ws.send_text(json.dumps({"type": "end"}))
    rx.join(60)
    return got, at


def test_live_stream_in_real_time_matches_offline_analysis(client, live_pcm, model, tmp_path):
    step = SR // 10  # 100 ms chunks, as a telephony feed sends them
    chunks = [live_pcm[i:i + step].tobytes() for i in range(0, live_pcm.size, step)]
    with client.websocket_connect(f"{WS_LOCAL}/v1/stream?role=customer&lang=zh") as ws:
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["channels"] == [{"channel": 0,
                                                                    "speaker": "customer"}]
        msgs, at = replay(ws, chunks, pace_s=0.1)

    updates = [m for m, _ in zip(msgs, at) if m["type"] == "update"]
    times = [t for m, t in zip(msgs, at) if m["type"] == "update"]
    final = msgs[-1]
    duration = live_pcm.size / SR
    assert len(updates) >= int(duration / 0.5) - 1
    gaps = np.diff(times)
    # Every 0.5 s: the cadence holds (median), and no update is late or early by more than
    # 0.35 s on a machine busy with other tests (one late update shortens the gap after it).
    assert 0.4 < np.median(gaps) < 0.6 and ((gaps > 0.15) & (gaps < 0.85)).all(), gaps
    assert [m["seq"] for m in updates] == list(range(1, len(updates) + 1))

    # Live curve: in time order, never repeated, nine probabilities per point.
    pts = [t for m in updates for t in m["channels"][0]["curve"]["t_s"]]
    assert pts and pts == sorted(pts) and len(set(pts)) == len(pts)
    assert all(len(p) == 9 for m in updates for p in m["channels"][0]["curve"]["probs"])
    labelled = [m["channels"][0] for m in updates if m["channels"][0]["emotion"]]
    assert labelled and all(c["suggested_response"] for c in labelled
                            if not c["fallback_action"])

    # Utterances closed live are final ones; volatility appears once two are closed, and the
    # volatility rule (against the reference) fires once.
    live = [(u["start_s"], u["end_s"]) for m in updates for u in m["channels"][0]["utterances"]]
    assert len(live) >= 2
    vols = [m["channels"][0]["volatility"] for m in updates]
    assert vols[0] is None and vols[-1] is not None and vols[-1] > 0
    alerts = [a for m in updates for a in m["alerts"]]
    assert [a["rule"] for a in alerts] == ["volatility_p95"]
    assert alerts[0]["speaker"] == "customer" and alerts[0]["severity"] == "medium"

    # The end: the same utterances, labels and scores as offline ingest of the same audio.
    assert final["type"] == "final" and final["store"] == {"requested": False}
    ref = offline(tmp_path, live_pcm, model)
    assert [(u["start_s"], u["end_s"]) for u in final["utterances"]] == \
        [(s.start_s, s.end_s) for s in ref.segments]
    assert set(live) <= {(u["start_s"], u["end_s"]) for u in final["utterances"]}
    for u, s in zip(final["utterances"], ref.segments):
        assert u["emotion"] == s.label and u["speaker"] == "customer"
        assert np.allclose(list(u["scores"].values()), s.scores, atol=2e-4)
        assert u["fallback_action"] == s.fallback_action and u["flags"] == list(s.flags)
    assert final["utterances"][0]["suggested_response"] in load_rules().responses_zh.values()
    assert {m["speaker"] for m in final["metrics"]} == {"customer", "all"}
    assert abs(final["duration_s"] - duration) < 1e-3


def _opus_packets(x: np.ndarray) -> list[bytes]:
    import av

    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48_000, "mono", "s16"
    enc.time_base = Fraction(1, 48_000)
    res = av.AudioResampler(format="s16", layout="mono", rate=48_000)
    frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SR
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in res.resample(frame)
                          + res.resample(None)])
    out, n = [], 960  # 20 ms frames
    for i in range(0, pcm.size - n + 1, n):
        f = av.AudioFrame.from_ndarray(pcm[i:i + n].reshape(1, -1), format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = 48_000, i, Fraction(1, 48_000)
        out += [bytes(p) for p in enc.encode(f)]
    return out + [bytes(p) for p in enc.encode(None)]


def test_opus_stream_finds_the_same_utterances(client, live_pcm, model, tmp_path):
    packets = _opus_packets(live_pcm)
    with client.websocket_connect(f"{WS_LOCAL}/v1/stream?encoding=opus&role=customer") as ws:
        assert ws.receive_json()["type"] == "ready"
        msgs, _ = replay(ws, packets, pace_s=None)  # as fast as it goes
    final = msgs[-1]
    assert final["type"] == "final"
    ref = offline(tmp_path, live_pcm, model).segments
    got = [(u["start_s"], u["end_s"]) for u in final["utterances"]]
    assert len(got) == len(ref)  # lossy audio, same speech: the same turns within 0.1 s
    assert all(abs(a - s.start_s) < 0.1 and abs(b - s.end_s) < 0.1
               for (a, b), s in zip(got, ref))


def test_bad_requests_get_a_reason(client):
    with client.websocket_connect(f"{WS_LOCAL}/v1/stream?encoding=mp3") as ws:
        err = ws.receive_json()
        assert err["type"] == "error" and "encoding" in err["message"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    with client.websocket_connect(WS_LOCAL + "/v1/stream") as ws:
        assert ws.receive_json()["type"] == "ready"
        ws.send_text("hello")
        assert ws.receive_json()["code"] == "bad_message"  # not fatal
        ws.send_bytes(np.zeros(SR, "<i2").tobytes())
        ws.send_text(json.dumps({"type": "end"}))
        while (m := ws.receive_json())["type"] != "final":
            pass
        assert m["utterances"] == [] and m["alerts"] == []


# -- limits: slots per caller, idle streams, memory after long streams ------------------------
@pytest.fixture
def tight(model, tmp_path):
    """A server of 4 stream slots, one per caller, closing streams after 0.3 s without audio."""
    from api.batcher import Batcher
    from api.runtime import Runtime, engine_run
    from ingest.options import IngestOptions
    settings = Settings(model="tiny-random", device="cpu", max_streams=4,
                        max_streams_per_caller=1, stream_idle_s=0.3,
                        volatility_reference={"customer": (0.0,) * 20},
                        db=tmp_path / "emoscope.duckdb")
    rt = Runtime(settings, model, load_rules(), IngestOptions(),
                 Batcher(engine_run(model, None), batch_seconds=30, max_wait_ms=0,
                         max_queue=8, timeout_s=30))
    with TestClient(create_app(settings, runtime=rt), client=("127.0.0.1", 40002),
                    base_url=LOCAL) as c:
        yield c, rt


def test_one_caller_cannot_hold_every_slot_and_silent_streams_end(tight):
    """Issue 23 item 7: one key could hold all 16 stream slots, sending no audio, for ever."""
    c, rt = tight
    with c.websocket_connect(f"{WS_LOCAL}/v1/stream") as first:
        assert first.receive_json()["type"] == "ready"
        with c.websocket_connect(f"{WS_LOCAL}/v1/stream") as second:
            refused = second.receive_json()
            with pytest.raises(WebSocketDisconnect) as closed:
                second.receive_json()
        assert refused["code"] == "quota" and closed.value.code == 1013
        t0 = time.monotonic()
        while (msg := first.receive_json())["type"] != "error":
            assert msg["type"] == "update"  # updates go on while it waits
        assert msg["code"] == "idle" and time.monotonic() - t0 < 5
        with pytest.raises(WebSocketDisconnect) as closed:
            first.receive_json()
        assert closed.value.code == 1008
    while rt.streams:
        time.sleep(0.01)
    assert not rt.streams_by  # the slot is free again


def test_memory_is_handed_back_after_a_long_stream(tight, monkeypatch, speech):
    """Issue 23 item 7: RSS stayed +1 GB after a one-hour stream (glibc keeps freed arena
    memory until malloc_trim). Here: the stream and every audio buffer it had are gone as soon
    as it ends (no reference cycle keeps them for the garbage collector, and no piece sent to
    the model keeps its whole buffer: the batcher held its last batch, views of the stream's
    buffer, until the next request), and memory is handed back after a stream of at least
    LONG_STREAM_S. bench/stream_memory.py measures the RSS."""
    import gc
    import weakref

    import api.live
    import api.stream
    c, rt = tight
    made, buffers, calls = [], [], []
    real_init, real_append = api.live.LiveStream.__init__, api.live.Channel.append

    def tracked(self, *a, **kw):
        real_init(self, *a, **kw)
        made.append(weakref.ref(self))

    def append(self, x):
        real_append(self, x)
        buffers.append(weakref.ref(self.buf))
    monkeypatch.setattr(api.live.LiveStream, "__init__", tracked)
    monkeypatch.setattr(api.live.Channel, "append", append)
    monkeypatch.setattr(api.stream, "give_back_memory", lambda: calls.append(1))
    silent = bytes(SR * 2 * 4)  # 4 s of digital silence: the VAD has nothing to do
    said = (np.clip(speech[:SR * 4], -1, 1) * 32767).astype("<i2").tobytes()  # but here
    gc.disable()
    try:
        with c.websocket_connect(f"{WS_LOCAL}/v1/stream?role=customer") as ws:
            ws.receive_json()
            for i in range(int(api.stream.LONG_STREAM_S // 4) + 1):
                ws.send_bytes(said if i < 2 else silent)
            ws.send_text('{"type": "end"}')
            while ws.receive_json()["type"] != "final":
                pass
        while rt.streams:
            time.sleep(0.01)
        assert made and made[0]() is None
        assert rt.batcher.stats.waves > 0  # the model heard it
        assert buffers and all(b() is None for b in buffers)
    finally:
        gc.enable()
    assert calls == [1]


def test_a_long_streams_state_stays_bounded():
    """Many short frames (an hour's worth of ticks in miniature): the audio buffer never
    grows past the stream's limit, and the VAD keeps its probabilities in a bounded number of
    pieces, not one more per tick."""
    from api.live import LiveStream
    live = LiveStream(("customer",), load_rules(), IngestOptions(), "en", max_s=60)
    ch = live.channels[0]
    noise = np.random.default_rng(0).normal(0, 0.01, SR // 50).astype(np.float32)  # 20 ms
    for i in range(60 * 50):
        live.append(noise[None, :])
        if i % 25 == 24:  # a tick every 0.5 s of audio
            live.plan()
    assert ch.n == 60 * SR and ch.buf.size <= live.max_n
    assert len(ch.vad._probs) <= 65 and ch.vad.probs().size == ch.n // 512
    assert not ch.outputs and not ch.texts and not ch.alerted  # nothing heard, nothing kept


def test_a_registered_alert_kind_fires_on_the_live_stream(model, live_pcm, tmp_path):
    """A kind added to core's registry (core.analysis.alerts.register_alert_kind), used by a rule in
    emoscope.toml, fires in an update message as soon as an utterance closes."""
    from core.analysis.alerts import _alert, register_alert_kind, unregister_alert_kind

    @register_alert_kind("spoke", live=True)
    def spoke(sid, sp, part, m, rule, rules, duration_s):
        return [_alert(sid, sp, rule, part.start[0], f"{sp} spoke", part.label[0], rules)] \
            if len(part) else []

    rules = tmp_path / "emoscope.toml"
    rules.write_text('[[alerts]]\nrule = "first_words"\nkind = "spoke"\nseverity = "low"\n')
    try:
        with TestClient(create_app(Settings(model="tiny-random", device="cpu", tick_s=0.05,
                                            rules=str(rules))),
                        client=("127.0.0.1", 40004), base_url=LOCAL) as c, \
                c.websocket_connect(f"{WS_LOCAL}/v1/stream?role=customer") as ws:
            ws.receive_json()
            msgs, _ = replay(ws, [live_pcm[i:i + 8000].tobytes()
                                  for i in range(0, live_pcm.size, 8000)], pace_s=0.05)
    finally:
        unregister_alert_kind("spoke")
    live = [a for m in msgs if m["type"] == "update" for a in m["alerts"]]
    assert [(a["rule"], a["detail"], a["severity"]) for a in live] == \
        [("first_words", "customer spoke", "low")]
    assert [a["rule"] for a in msgs[-1]["alerts"]] == ["first_words"]  # and in the final one
