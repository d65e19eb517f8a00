"""End to end: folders of good and broken files through the pipeline and the CLI."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from core.guard.access import operator
from core.storage.queries import Reader
from core.storage.store import Store
from cli.main import app
from tests.audio_gen import FORMATS, silence, write

runner = CliRunner()


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory, speech, call_audio):
    """Good files in every format plus every kind of broken one."""
    d = tmp_path_factory.mktemp("mixed")
    for fmt in FORMATS:
        write(d / f"good.{fmt}", speech, fmt)
    write(d / "call.mp3", call_audio, "mp3")
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("not audio at all\n" * 50)
    (d / "random.mp3").write_bytes(np.random.default_rng(3).bytes(40_000))
    full = (d / "good.mp3").read_bytes()
    (d / "truncated.mp3").write_bytes(full[:300])
    write(d / "silent.wav", silence(4.0))
    return d


BROKEN = {"empty.wav": "empty file", "text.wav": "not a recognised audio",
          "random.mp3": "", "truncated.mp3": "", "silent.wav": "no speech found"}


def test_mixed_folder_stores_good_names_broken_and_second_run_changes_nothing(mixed_dir,
                                                                            tmp_path):
    db = tmp_path / "e.duckdb"
    args = ["ingest", str(mixed_dir), "--db", str(db), "--model", "tiny-random",
            "--device", "cpu"]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output
    for name, reason in BROKEN.items():
        line = next(ln for ln in first.output.splitlines() if name in ln and "✗" in ln)
        assert reason in line
    store = Store(db)
    ok = store.query("SELECT file_name FROM sessions WHERE status = 'ok'").file_name.tolist()
    assert sorted(ok) == sorted([f"good.{f}" for f in FORMATS] + ["call.mp3"])
    failed = store.query("SELECT file_name, error FROM sessions WHERE status = 'failed'")
    assert set(failed.file_name) == set(BROKEN)
    assert failed.error.str.len().min() > 5
    # Failed sessions hold no rows anywhere else.
    orphans = store.query("SELECT count(*) n FROM segments JOIN sessions USING (session_id) "
                          "WHERE status = 'failed'").n[0]
    assert orphans == 0
    counts = Reader(store, operator()).counts()
    speakers = store.query("SELECT DISTINCT speaker FROM segments JOIN sessions "
                           "USING (session_id) WHERE file_name = 'call.mp3'").speaker
    assert set(speakers) == {"agent", "customer"}

    second = runner.invoke(app, args)
    assert second.exit_code == 1
    assert "skipped 12" in second.output.replace("\n", " ")
    after = Reader(store, operator()).counts()
    assert {k: v for k, v in after.items() if k != "runs"} == \
           {k: v for k, v in counts.items() if k != "runs"}

    forced = runner.invoke(app, args + ["--force"])
    assert forced.exit_code == 1
    assert Reader(store, operator()).counts()["segments"] == counts["segments"]
    assert Reader(store, operator()).counts()["sessions"] == counts["sessions"]


def test_runs_record_model_and_untrained(ingested_db):
    runs = Reader(Store(ingested_db), operator()).runs()
    assert (runs.model == "tiny-random").all() and not runs.trained.any()
    opts = json.loads(runs.options.iloc[0])
    assert opts["max_segment_s"] == 12.0 and opts["curve_hop_s"] == 0.1


def test_stored_segments_curves_and_quality(ingested_db):
    store = Store(ingested_db)
    seg = store.query("SELECT * FROM segments")
    assert len(seg) >= 6 and (seg.end_s > seg.start_s).all()
    assert (seg.end_s - seg.start_s).max() <= 12.0 + 1e-6
    scores = np.stack(seg.scores.to_numpy())
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-4)
    np.testing.assert_allclose(seg.confidence, scores.max(axis=1), atol=1e-6)
    frames = store.query("SELECT * FROM frames")
    assert len(frames) > 50
    ch = store.query("SELECT * FROM channels ORDER BY session_id, channel")
    assert set(ch.speaker) == {"agent", "customer", "speaker"}
    assert (ch.speech_s > 0).all()
    sess = store.query("SELECT * FROM sessions WHERE agent_id = 'a-ana'")
    assert len(sess) == 1 and sess.n_channels[0] == 2 and list(sess.tags[0]) == ["delivery",
                                                                                   "refund"]


def test_manifest_roles_and_metadata(tmp_path, call_audio):
    write(tmp_path / "swapped.wav", call_audio)
    (tmp_path / "m.csv").write_text("file,agent_id,customer_id,team,recorded_at,tags,roles\n"
                                    "swapped.wav,a-ben,c-7,billing,2026-11-05T09:30,x;y,"
                                    "customer;agent\n")
    db = tmp_path / "m.duckdb"
    res = runner.invoke(app, ["ingest", "--manifest", str(tmp_path / "m.csv"), "--db", str(db),
                              "--model", "tiny-random", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ch = Store(db).query("SELECT channel, speaker FROM channels ORDER BY channel")
    assert ch.speaker.tolist() == ["customer", "agent"]
    s = Reader(Store(db), operator()).session_rows().iloc[0]
    assert (s.agent_id, s.team, str(s.recorded_at)) == ("a-ben", "billing", "2026-11-05 09:30:00")


def test_cli_usage_errors_exit_2(tmp_path):
    assert runner.invoke(app, ["ingest", "--model", "tiny-random"]).exit_code == 2
    r = runner.invoke(app, ["ingest", str(tmp_path), "--model", str(tmp_path)])
    assert r.exit_code == 2 and "config.yaml" in r.output
    assert runner.invoke(app, ["ingest", "--bogus"]).exit_code == 2
    assert runner.invoke(app, ["ingest", str(tmp_path), "--manifest",
                               str(tmp_path / "none.csv")]).exit_code == 2


def test_hostile_file_names_are_just_names(tmp_path, speech):
    d = tmp_path / "in"
    d.mkdir()
    name = "a'; DROP TABLE segments; -- $(rm -rf x) `x` ünï.wav"
    write(d / name, speech)
    db = tmp_path / "h.duckdb"
    r = runner.invoke(app, ["ingest", str(d), "--db", str(db), "--model", "tiny-random",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert Reader(Store(db), operator()).session_rows().file_name.tolist() == [name]


def test_predict_json_and_embeddings(tmp_path, speech):
    clip = write(tmp_path / "clip.wav", speech)
    r = runner.invoke(app, ["predict", str(clip), "--model", "tiny-random", "--device", "cpu",
                            "--embedding-out", str(tmp_path / "e.npy")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out) == {"emotion", "confidence", "scores", "fallback_action", "model", "trained"}
    assert len(out["scores"]) == 9 and out["trained"] is False
    assert out["emotion"] == max(out["scores"], key=out["scores"].get)
    assert out["fallback_action"] in (None, "request_clarification")
    assert np.load(tmp_path / "e.npy").ndim == 1
    r = runner.invoke(app, ["predict", str(clip), "--model", "tiny-random", "--device", "cpu",
                            "--granularity", "frame", "--embedding-out", str(tmp_path / "f.npy")])
    out = json.loads(r.stdout)
    assert len(out["curve"]["t_s"]) == len(out["curve"]["probs"]) > 10
    assert np.load(tmp_path / "f.npy").ndim == 2
    bad = tmp_path / "bad.wav"
    bad.write_text("nope")
    r = runner.invoke(app, ["predict", str(bad), "--model", "tiny-random"])
    assert r.exit_code == 1 and "bad.wav" in r.output


def test_export_writes_every_format(ingested_db, tmp_path):
    out = tmp_path / "exports"
    r = runner.invoke(app, ["export", "--db", str(ingested_db), "--out", str(out),
                            "--agent", "a-ana"])
    assert r.exit_code == 0, r.output
    # named as the Reports page names them: audience, first and last day, what the file holds
    stem = "agent-a-ana_2026-11-02_2026-11-02"
    files = {p.name: p for p in out.iterdir()}
    assert set(files) == {f"{stem}.pdf", f"{stem}_sessions.csv", f"{stem}_segments.csv",
                          f"{stem}_segments.parquet", f"{stem}_embeddings.npy",
                          f"{stem}_segments.json"}
    records = json.loads(files[f"{stem}_segments.json"].read_text())
    seg = Store(ingested_db).query("SELECT s.segment_id FROM segments s JOIN sessions USING "
                                   "(session_id) WHERE agent_id = 'a-ana'")
    assert sorted(r["segment_id"] for r in records) == sorted(seg.segment_id)
    assert all(r["trained"] is False and len(r["scores"]) == 9 for r in records)
    emb = np.load(files[f"{stem}_embeddings.npy"])
    assert len(emb) == len(seg) and emb["embedding"].shape[1] == 64
    assert files[f"{stem}.pdf"].read_bytes()[:5] == b"%PDF-"
    r = runner.invoke(app, ["export", "--db", str(ingested_db), "--out", str(out), "--person",
                            "p-001", "--since", "2026-11-01", "--until", "2026-11-08",
                            "--format", "pdf"])
    assert r.exit_code == 0, r.output
    assert (out / "person-p-001_2026-11-01_2026-11-07.pdf").read_bytes()[:5] == b"%PDF-"
    none = runner.invoke(app, ["export", "--db", str(ingested_db), "--out", str(out),
                               "--person", "nobody"])
    assert none.exit_code == 1 and "no analysed session" in none.output
    # A team or agent not in the store (wrong case too) is named with the known ones.
    for flag, typo, known in (("--team", "Support", "support, wellbeing"),
                              ("--agent", "A-ANA", "a-ana")):
        r = runner.invoke(app, ["export", "--db", str(ingested_db), "--out", str(out), flag, typo])
        assert r.exit_code == 2 and typo in r.output and f"known {flag[2:]}s: {known}" in r.output
    # A period word, counted back from the audience's newest session, names the files.
    r = runner.invoke(app, ["export", "--db", str(ingested_db), "--out", str(out), "--team",
                            "support", "--period", "latest-week", "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert (out / "team-support_latest-week_2026-10-27_2026-11-02_sessions.csv").exists()
    for bad in (["--format", "docx"], ["--team", "t", "--agent", "a"], ["--since", "soon"]):
        assert runner.invoke(app, ["export", "--db", str(ingested_db), *bad]).exit_code == 2
