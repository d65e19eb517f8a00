"""A store of 40 synthetic sessions (calls of three agents in two teams, diaries of two people,
one failed file), built from SessionResults in a few seconds: what the supervisor's, the
analyst's and the report views are tested on."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from core.text import sentiment
from core.base.labels import LABELS
from core.analysis.rules import load_rules
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from core.base.types import (ChannelQuality, Curve, Segment, SessionMeta, SessionResult,
                        Utterance, Word, segment_id_for, session_id_for, utterance_id_for)
from tests.analytics_fixtures import onehot

# The packaged rules with smaller references, so the volatility rule fires within 40 sessions.
RULES_TOML = """
[[alerts]]
rule = "angry_streak"
kind = "streak"
labels = ["angry"]
min_count = 3
speakers = ["customer", "speaker"]
severity = "high"

[[alerts]]
rule = "negative_last_quarter"
kind = "last_quarter_share"
labels = ["angry", "disgusted", "fearful", "sad"]
min_share = 0.5
speakers = ["customer", "speaker"]
severity = "medium"

[[alerts]]
rule = "volatility_p95"
kind = "volatility_percentile"
percentile = 80
min_reference = 8
speakers = ["*"]
severity = "medium"

[[alerts]]
rule = "ends_worse"
kind = "ends_worse"
speakers = ["customer", "speaker"]
severity = "low"

[[alerts]]
rule = "unreliable_audio"
kind = "unreliable"
speakers = ["*"]
severity = "low"

[[sets.diary.alerts]]
rule = "negative_entry"
kind = "session_share"
labels = ["angry", "disgusted", "fearful", "sad"]
min_share = 0.5
speakers = ["*"]
severity = "medium"

[[sets.diary.alerts]]
rule = "volatility_p95"
kind = "volatility_percentile"
percentile = 80
min_reference = 4
speakers = ["*"]
severity = "low"
"""

AGENTS = {"a-ana": "billing", "a-ben": "support", "a-cy": "support", "a-dai": "billing"}
CUSTOMER_MOODS = ["neutral", "neutral", "happy", "angry", "sad", "angry", "neutral", "fearful"]
# What the calls say: a line per segment, in turn (no randomness, so the rest stays as it was).
AGENT_LINES = ["thank you for calling how can i help", "let me check that for you",
               "i am sorry to hear that", "the refund will arrive in five days",
               "is there anything else i can do"]
CUSTOMER_LINES = ["my bill is wrong again", "i want a refund for the double charge",
                  "this is the third time i am calling", "that is fine thank you",
                  "i want to cancel my account right now", "nobody called me back"]


# What p-002's diaries say (the other person's diaries have no transcript).
DIARY_LINES = ["today was a good day i saw my friends", "i am tired and everything feels heavy",
               "work was fine nothing special", "i could not sleep again last night",
               "i feel a bit better this week", "i am worried about my mother"]


def transcript(sid: str, segs: list[Segment]) -> tuple[Utterance, ...]:
    """One utterance per segment, its words spread evenly over it."""
    out, n = [], {}
    for s in segs:
        lines = AGENT_LINES if s.speaker == "agent" else DIARY_LINES \
            if s.speaker == "speaker" else CUSTOMER_LINES
        k = n[s.channel] = n.get(s.channel, -1) + 1
        text = lines[k % len(lines)]
        ws = text.split()
        step = (s.end_s - s.start_s) / len(ws)
        out.append(Utterance(utterance_id_for(sid, s.channel, k), s.channel, s.speaker,
                             s.start_s, s.end_s, text, "en", 0.9, "pocketsphinx:en-us", None,
                             tuple(Word(w, s.start_s + i * step, s.start_s + (i + 1) * step, 0.9)
                                   for i, w in enumerate(ws)), *sentiment.score(text, "en")))
    return tuple(out)


def _segment(sid, ch, n, speaker, start, end, label, conf, emb) -> Segment:
    return Segment(segment_id_for(sid, ch, n), ch, speaker, start, end, label, conf,
                   np.array(onehot(label, max(conf, 0.2)), np.float32),
                   np.asarray(emb, np.float32), 0.1, 0.0, (), None)


def call(k: int, rng: np.random.Generator) -> SessionResult:
    """A stereo call: turns alternate, the agent sometimes cuts in before the customer ends."""
    agent = list(AGENTS)[k % 4]
    sha = hashlib.sha256(f"views-call-{k}".encode()).hexdigest()
    sid = session_id_for(sha)
    turns = int(rng.integers(6, 12))
    jump = 0.3 if k % 7 else 3.0  # every seventh call is far jumpier than the rest
    t, segs, n = 1.0, [], {0: 0, 1: 0}
    low = k % 11 == 5  # a call the model could not follow: low confidence throughout
    for i in range(turns):
        a_len, c_len = float(rng.uniform(2, 5)), float(rng.uniform(2, 7))
        lab = "neutral" if rng.random() < 0.7 else "happy"
        segs.append(_segment(sid, 0, n[0], "agent", t, t + a_len, lab,
                             0.3 if low else 0.9, rng.normal(0, jump, 4)))
        n[0] += 1
        t += a_len + 0.4
        late = i >= turns * 0.6
        pool = CUSTOMER_MOODS[3:] if (late and k % 4 == 1) else CUSTOMER_MOODS
        segs.append(_segment(sid, 1, n[1], "customer", t, t + c_len, str(rng.choice(pool)),
                             0.3 if low else float(rng.uniform(0.5, 0.95)),
                             rng.normal(0, jump, 4)))
        n[1] += 1
        # the agent interrupts now and then: their next turn starts before the customer ends
        t += c_len + (-1.0 if k % 3 == 1 and i % 2 else 0.5)
    dur = t + 1.0
    chans = (ChannelQuality(0, "agent", dur, 0.1, 0.0, dur / 3, ()),
             ChannelQuality(1, "customer", dur, 0.1, 0.0, dur / 2, ()))
    meta = SessionMeta(agent_id=agent, customer_id=f"c-{k % 9:03d}", team=AGENTS[agent],
                       recorded_at=f"2026-11-{1 + k % 28:02d}T{9 + k % 8:02d}:15:00",
                       tags=("call",))
    curve = Curve(1, "customer", np.arange(0, dur, 0.5),
                  np.full((len(np.arange(0, dur, 0.5)), len(LABELS)), 1 / len(LABELS),
                          np.float32))
    return SessionResult(sid, f"/nowhere/call{k:02d}.wav", f"call{k:02d}.wav", sha, dur, 2, meta,
                         chans, tuple(segs), (curve,), transcript(sid, segs))


def diary(k: int, person: str, day: int, rng: np.random.Generator, mood: str) -> SessionResult:
    sha = hashlib.sha256(f"views-diary-{person}-{k}".encode()).hexdigest()
    sid = session_id_for(sha)
    segs, t = [], 0.5
    for i in range(int(rng.integers(5, 9))):
        d = float(rng.uniform(3, 8))
        lab = mood if rng.random() < 0.7 else "neutral"
        segs.append(_segment(sid, 0, i, "speaker", t, t + d, lab, float(rng.uniform(0.6, 0.95)),
                             rng.normal(0, 2.0 if mood == "angry" else 0.4, 4)))
        t += d + 0.6
    chans = (ChannelQuality(0, "speaker", t, 0.1, 0.0, t * 0.8, ()),)
    meta = SessionMeta(customer_id=person, team="wellbeing",
                       recorded_at=f"2026-11-{day:02d}T21:00:00", tags=("diary",))
    return SessionResult(sid, f"/nowhere/{person}-{day}.m4a", f"diary_{person}_{day:02d}.m4a",
                         sha, t + 0.5, 1, meta, chans, tuple(segs),
                         utterances=transcript(sid, segs) if person == "p-002" else ())


def sessions() -> list[SessionResult]:
    rng = np.random.default_rng(7)
    out = [call(k, rng) for k in range(28)]
    moods = ["neutral", "happy", "neutral", "sad", "neutral", "happy", "angry"]
    out += [diary(i, "p-001", 2 + 3 * i, rng, m) for i, m in enumerate(moods)]
    out += [diary(i, "p-002", 4 + 5 * i, rng, m) for i, m in enumerate(["sad", "neutral",
                                                                       "sad", "fearful"])]
    bad_sha = hashlib.sha256(b"views-broken").hexdigest()
    out.append(SessionResult.failed("/nowhere/broken.mp3", bad_sha,
                                    SessionMeta(agent_id="a-ben", team="support",
                                                recorded_at="2026-11-20T10:00:00"),
                                    "no audio stream"))
    return out


def build(db: Path, rules_path: Path) -> Store:
    rules_path.write_text(RULES_TOML)
    store = Store(db)
    store.migrate()
    writer = SessionWriter(store, load_rules(rules_path))
    run = writer.start_run("tiny-random", "", False, "cpu", "engine", {})
    for r in sessions():
        writer.save(r, run)
    return store
