"""Calibration, learned: espeak-ng speech in two clearly different styles (fast, loud and high
against slow, soft and low; the same sentences in both) is labelled as two classes by
corrections; a head trained on the stored tiny-random embeddings separates them while the
base model's labels stay at chance; after activation the store's labels, alerts and reports
follow the head, and rolling back restores them exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from api.app import create_app
from api.settings import Settings
from cli.main import app
from fastapi.testclient import TestClient
from tests.serving import LOCAL
from core.storage import corrections
from core.reporting import reports
from core.reporting.report_pdf import model_lines
from core.guard.access import operator
from core.storage.queries import Reader
from core.storage.store import Store
from core.base.types import ChannelQuality, Segment, SessionMeta, SessionResult
from ingest.pipeline import ingest_paths
from tests.audio_gen import silence, speak, write
from tests.store_fixtures import writer_for

SENTENCES = ["I need this sorted today.", "Where is my order?", "Call me back please.",
             "That is not what you said.", "I have waited all week.", "Can you check again?",
             "This is the second time.", "Nobody told me that.", "What happens next?",
             "I want to speak to someone.", "It still does not work.", "Is that everything?"]
STYLES = {"angry": dict(pitch=85, speed=230, amplitude=180),  # fast, loud, high
          "sad": dict(pitch=15, speed=110, amplitude=45)}  # slow, soft, low


@pytest.fixture(scope="module")
def styled_db(tmp_path_factory, model) -> Path:
    d = tmp_path_factory.mktemp("styles")
    for style, voice in STYLES.items():
        parts = []
        for s in SENTENCES:
            parts += [speak(s, **voice), silence(0.7)]
        write(d / f"{style}.wav", np.concatenate(parts))
    db = tmp_path_factory.mktemp("stylesdb") / "emoscope.duckdb"
    report = ingest_paths([d], writer_for(db), model)
    assert not report.failed, report.failed
    return db


def snapshot(db: Path) -> dict:
    s = Store(db)
    return {
        "segments": s.query("SELECT segment_id, label, confidence, fallback_action, "
                            "rolling_volatility, head FROM segments ORDER BY segment_id"),
        "metrics": s.query("SELECT * FROM session_metrics ORDER BY session_id, speaker"),
        "alerts": s.query("SELECT * FROM alerts "
                          "ORDER BY ALL")}


def same(a: dict, b: dict) -> bool:
    return all(a[k].reset_index(drop=True).equals(b[k].reset_index(drop=True)) for k in a)


@pytest.fixture(scope="module")
def api_client():
    """One API app per store for the module (its model loads once)."""
    opened = {}

    def client(db):
        if db not in opened:
            app_ = TestClient(create_app(Settings(model="tiny-random", device="cpu", db=db)),
                              client=("127.0.0.1", 40000), base_url=LOCAL)
            opened[db] = app_.__enter__()
        return opened[db]
    yield client
    for c in opened.values():
        c.__exit__(None, None, None)


def test_a_head_learns_two_styles_the_base_model_cannot_tell_apart(styled_db, api_client):
    db = styled_db
    seg = Store(db).query("SELECT g.segment_id, g.session_id, s.file_name FROM segments g "
                          "JOIN sessions s USING (session_id)")
    assert seg.file_name.value_counts().min() >= 8  # moments enough for 5 folds per class
    # A reviewer labels each style's moments by the style they were spoken in: one moment and
    # the others she confirmed beside it, in one act each (POST /v1/segments/{id}/label).
    c = api_client(db)
    assert c.post(f"/v1/segments/{seg.segment_id[0]}/label",
                  json={"label": "furious"}).status_code == 422  # not a label we know
    for name, part in seg.groupby("file_name"):
        ids = list(part.segment_id)
        res = c.post(f"/v1/segments/{ids[0]}/label",
                     json={"label": Path(name).stem, "also": ids[1:]})
        assert res.status_code == 202, res.text
        assert [x["segment_id"] for x in res.json()["corrections"]] == ids
    assert len(corrections.pending(corrections.spool_dir(db))) == len(seg)
    before = snapshot(db)
    run = CliRunner()
    out = run.invoke(app, ["head", "train", "calls", "--db", str(db)])
    assert out.exit_code == 0, out.output
    print(out.output)  # the evaluate table, for the record
    ev = run.invoke(app, ["head", "evaluate", "calls", "--db", str(db)])
    assert ev.exit_code == 0 and "base recall" in ev.output, ev.output
    from core.storage import heads
    with Store(db).read() as con:
        head = heads.resolve(con, "calls")
    e = head["evaluation"]
    assert e["moments"] == len(seg) and e["folds"] == 5
    assert e["accuracy"] >= 0.9, e
    assert e["base_accuracy"] <= 0.7, e  # tiny-random's labels: chance, or worse
    assert Store(db).query("SELECT count(*) n FROM corrections").n[0] == len(seg)  # folded

    # Activation: every label, the analytics and the alerts follow the head.
    out = run.invoke(app, ["head", "activate", "calls", "--db", str(db)])
    assert out.exit_code == 0, out.output
    after = snapshot(db)
    labelled = after["segments"].merge(seg, on="segment_id")
    right = (labelled.label == labelled.file_name.str.replace(".wav", "")).mean()
    assert right >= 0.9 and set(labelled["head"]) == {"calls@v1"}
    assert not same(before, after)
    angry = labelled[labelled.file_name == "angry.wav"].session_id.iloc[0]
    alerts = after["alerts"]
    assert "angry_streak" in set(alerts[alerts.session_id == angry].rule)
    r = Reader(Store(db), operator())
    # Views, exports and API answers name the head beside the model.
    rep = reports.build(r, reports.ReportSpec(), formats=("csv", "json"))
    assert b"calls@v1" in rep.files["csv"][1] and b'"head": "calls@v1"' in rep.files["json"][1]
    assert set(r.models()["head"]) == {"calls@v1"}
    assert "labels by head calls@v1" in model_lines(r.models())[0]
    one = c.get(f"/v1/sessions/{angry}", params={"curves": "false"}).json()
    assert one["model"]["head"] == "calls@v1"
    assert {x["head"] for x in c.get("/v1/sessions").json()["sessions"]} == {"calls@v1"}

    # Rollback: the model's own labels, analytics and alerts, exactly.
    out = run.invoke(app, ["head", "activate", "--previous", "--db", str(db)])
    assert out.exit_code == 0 and "the base model" in out.output, out.output
    assert same(before, snapshot(db))
    out = run.invoke(app, ["head", "activate", "--previous", "--db", str(db)])
    assert out.exit_code == 0 and "calls@v1" in out.output
    assert same(after, snapshot(db))

    # A session stored while the head is active is labelled by it too.
    old = Store(db).query("SELECT g.*, s.run_id FROM segments g JOIN sessions s "
                          "USING (session_id) WHERE session_id = ? ORDER BY start_s", [angry])
    new = "s" + "f" * 15
    copy = SessionResult(
        new, "/x/copy.wav", "copy.wav", "f" * 64, 30.0, 1, SessionMeta(),
        (ChannelQuality(0, "speaker", 30.0, 0.1, 0.0, 20.0, ()),),
        tuple(Segment(f"{new}-c0-{i:05d}", 0, "speaker", g.start_s, g.end_s, g.base_label,
                      g.base_confidence, np.asarray(g.scores, np.float32),
                      np.asarray(g.embedding, np.float32), g.rms, g.clip_ratio, (), None)
              for i, g in enumerate(old.itertuples())))
    writer_for(db).save_many([copy], old.run_id[0])
    stored = Store(db).query("SELECT label, confidence, head, base_label FROM segments "
                             "WHERE session_id = ? ORDER BY start_s", [new])
    assert set(stored["head"]) == {"calls@v1"}
    assert list(stored.label) == list(old.label) and list(stored.base_label) == list(old.base_label)
    assert np.allclose(stored.confidence, old.confidence)


def test_a_head_that_does_not_beat_the_base_model_needs_force(styled_db, tmp_path):
    import shutil
    db = tmp_path / "emoscope.duckdb"
    shutil.copy(styled_db, db)
    with Store(db).write() as con:  # another reviewer's store: none of the first one's labels
        con.execute("DELETE FROM corrections")
    seg = Store(db).query("SELECT segment_id, session_id, coalesce(base_label, label) AS label "
                          "FROM segments ORDER BY 1")  # the model's own labels
    seg = seg[seg.label.map(seg.label.value_counts()) >= 2]
    assert seg.label.nunique() >= 2
    spool = corrections.spool_dir(db)
    for r in seg.itertuples():  # a reviewer who agrees with the model: the base is never wrong
        corrections.put(spool, r.segment_id, r.session_id, r.label, "Dr Lee")
    run = CliRunner()
    out = run.invoke(app, ["head", "train", "agree", "--db", str(db)])
    assert out.exit_code == 0 and "does not beat" in out.output, out.output
    out = run.invoke(app, ["head", "activate", "agree", "--db", str(db)])
    assert out.exit_code == 2 and "--force" in out.output, out.output
    heads_now = Store(db).query("SELECT DISTINCT head FROM segments")["head"].tolist()
    assert heads_now in ([None], ["calls@v1"])  # whatever was active stays
    out = run.invoke(app, ["head", "activate", "agree", "--force", "--db", str(db)])
    assert out.exit_code == 0, out.output


def test_the_calibration_page_shows_the_head_and_asks_the_worker_to_roll_back(styled_db,
                                                                             monkeypatch):
    """After the learning test: the page's figures, and an admin's rollback carried out by the
    writer (core.storage.heads.resume_requests, as the worker does between jobs)."""
    from streamlit.testing.v1 import AppTest

    from core.storage import heads
    from tests.store_fixtures import RULES
    from tests.test_dashboard import APP
    db = styled_db
    monkeypatch.setenv("EMOSCOPE_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/calibration.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    moments = Store(db).query("SELECT count(DISTINCT segment_id) n FROM corrections").n[0]
    assert next(m.value for m in at.metric if m.label == "Corrected moments") == str(moments)
    assert any("calls@v1" in c.value for c in at.caption)  # the head named on every page
    tables = [d.value for d in at.dataframe]
    assert any("base recall" in t and {"angry", "sad", "accuracy"} <= set(t["label"])
               for t in tables)  # the cross-validation table against the base model
    # A moment labelled on the Session page, and one with its similar moments on the Similar
    # page (every one confirmed), each an audited act whose labels wait in the spool.
    spool = corrections.spool_dir(db)
    seg = Store(db).query("SELECT segment_id, session_id FROM segments ORDER BY 1 LIMIT 1")
    at.session_state["session_id"] = seg.session_id[0]
    at.switch_page("views/session.py").run()
    at.selectbox(key="label_one").set_value("happy")
    next(b for b in at.button if b.label == "Save label").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert list(corrections.pending(spool).label) == ["happy"]
    at.switch_page("views/similar.py").run()
    at.text_input(key="sim_segment").input(seg.segment_id[0]).run()
    at.selectbox(key="label_similar").set_value("neutral")
    at.button(key="label_similar_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    waiting = corrections.pending(spool)
    other = Store(db).query("SELECT count(*) n FROM segments WHERE session_id != ?",
                            [seg.session_id[0]]).n[0]
    assert (waiting.label == "neutral").sum() == 1 + min(20, other)
    from core.storage.audit import AuditLog
    acts = [a for a in AuditLog.beside(db).spooled() if a["action"] == "label"][-2:]
    assert [len(a["detail"]["segments"]) for a in acts] == [1, 1 + min(20, other)]
    at.switch_page("views/calibration.py").run()
    at.button(key="cal_rollback").click().run()
    assert heads.pending_requests(db)
    with Store(db).read() as con:
        was = heads.active(con)
        back = heads.previous(con)
    assert heads.resume_requests(Store(db), RULES)[0].startswith("activated")
    with Store(db).read() as con:
        assert heads.active(con) == back != was
    assert not heads.pending_requests(db)
