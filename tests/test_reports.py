"""Exports: CSV, Parquet, NPY with ids, predict-format JSON and the PDF report."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from core.insight import rollups
from core.reporting import reports
from core.base.labels import LABELS
from core.guard.access import operator
from core.storage.queries import Reader, SessionFilter
from core.storage.store import Store


@pytest.fixture(scope="module")
def segs(ingested_db):
    reader = Reader(Store(ingested_db), operator())
    return reader.export_segments(SessionFilter(tuple(reader.sessions().session_id)))


def test_export_segments_holds_every_segment_with_model(ingested_db, segs):
    counts = Reader(Store(ingested_db), operator()).counts()
    assert len(segs) == counts["segments"] > 0
    assert set(segs.model) == {"tiny-random"}
    assert not segs.trained.any()


def test_csv_has_one_score_column_per_label(segs):
    df = pd.read_csv(io.BytesIO(reports.to_csv(segs)))
    assert len(df) == len(segs)
    assert [f"score_{x}" for x in LABELS] == [c for c in df.columns if c.startswith("score_")]
    assert "embedding" not in df
    assert np.allclose(df[[f"score_{x}" for x in LABELS]].sum(axis=1), 1.0, atol=1e-3)


def test_parquet_round_trips_scores_and_embeddings(segs):
    df = pd.read_parquet(io.BytesIO(reports.to_parquet(segs)))
    assert df.segment_id.tolist() == segs.segment_id.tolist()
    assert np.allclose(np.stack(df.embedding.to_numpy()), np.stack(segs.embedding.to_numpy()))
    assert len(df.scores.iloc[0]) == 9


def test_npy_holds_ids_and_embeddings_without_pickle(segs):
    arr = np.load(io.BytesIO(reports.to_npy(segs)), allow_pickle=False)
    assert arr["segment_id"].tolist() == segs.segment_id.tolist()
    assert arr["embedding"].shape == (len(segs), len(segs.embedding.iloc[0]))
    assert np.allclose(arr["embedding"][3], segs.embedding.iloc[3])


def test_json_is_the_predict_format(segs):
    recs = json.loads(reports.to_json(segs))
    assert len(recs) == len(segs)
    r = recs[0]
    assert {"emotion", "confidence", "scores", "fallback_action", "model", "trained"} <= set(r)
    assert list(r["scores"]) == LABELS
    assert r["emotion"] == max(r["scores"], key=r["scores"].get)
    assert r["model"] == "tiny-random" and r["trained"] is False
    assert r["fallback_action"] in (None, "request_clarification")


def test_model_lines_warn_about_untrained_models():
    line, warn = reports.model_lines(pd.DataFrame({"model": ["tiny-random"], "trained": [False]}))
    assert "UNTRAINED" in line and "mean nothing" in warn
    line, warn = reports.model_lines(pd.DataFrame({"model": ["emotion2vec_plus_large"],
                                                   "trained": [True]}))
    assert warn is None and "(trained)" in line


def test_pdf_report(ingested_db, segs):
    reader = Reader(Store(ingested_db), operator())
    sessions = reader.sessions()
    alerts = reader.alerts()
    data = reports.ReportData(
        title="Weekly report", scope="Sessions: all", sessions=sessions,
        segments=segs.drop(columns=["embedding"]), alerts=alerts,
        models=pd.DataFrame({"model": ["tiny-random"], "trained": [False], "sessions": [2]}),
        table=rollups.session_table(reader))
    k = reports.kpis(data)
    assert k["Sessions"] == str(len(sessions))
    assert k["Alerts"].split()[0] == str(len(alerts))
    pdf = reports.to_pdf(data)
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000  # text plus two chart images
    assert pdf.count(b"/Subtype /Image") >= 1


def test_reports_are_named_after_what_they_hold(views_db):
    from core.analysis.rules import load_rules
    reader = Reader(Store(views_db), operator())
    rules = load_rules(views_db.with_name("emoscope.toml"))
    team = reports.build(reader, reports.ReportSpec("team", "support", "2026-11-01",
                                                    "2026-11-15"), rules)
    stem = "team-support_2026-11-01_2026-11-14"
    assert team.stem == stem and {n for n, _ in team.files.values()} == {
        f"{stem}.pdf", f"{stem}_sessions.csv", f"{stem}_segments.csv",
        f"{stem}_segments.parquet", f"{stem}_embeddings.npy", f"{stem}_segments.json"}
    rows = pd.read_csv(io.BytesIO(team.files["sessions"][1]))
    want = reader.sessions(reports.ReportSpec("team", "support", "2026-11-01",
                                              "2026-11-15").filter())
    assert sorted(rows.session_id) == sorted(want.session_id) and (rows.team == "support").all()
    assert {"talk_share", "interruptions", "overlap_s", "customer_neg_last", "alerts",
            "first_alert_t_s"} <= set(rows.columns)
    # an agent's report only of the customers' speech; dates from the sessions themselves
    agent = reports.build(reader, reports.ReportSpec("agent", "a-ben", roles=("customer",)),
                          rules, formats=("csv",))
    assert agent.stem.startswith("agent-a-ben_2026-11-") and agent.stem.endswith("_customer")
    seg = pd.read_csv(io.BytesIO(agent.files["csv"][1]))
    assert set(seg.speaker) == {"customer"} and list(agent.files) == ["csv"]
    assert reports.slug("../a b/é") == "a-b" and reports.file_stem(
        reports.ReportSpec("person", "p/1"), pd.Series(pd.to_datetime(["2026-11-03"]))) == \
        "person-p-1_2026-11-03_2026-11-03"
    assert reports.build(reader, reports.ReportSpec("team", "nobody"), rules) is None


def test_long_file_names_wrap_between_words_in_the_pdf_tables():
    from core.reporting.report_pdf import wrapped_name
    name = "call06_refund_followup_quiet_and_a_very_long_customer_name.wav"
    lines = wrapped_name(name).split("\n")
    assert "".join(lines) == name and len(lines) > 1
    assert all(len(x) <= 20 for x in lines)
    assert all(x[-1] in "_-. " for x in lines[:-1])  # each break after a separator
    assert wrapped_name("short.wav") == "short.wav"
