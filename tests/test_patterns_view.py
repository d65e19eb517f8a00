"""The Patterns page under AppTest, on a copy of the 40-session store of tests/views_fixtures.py:
empty until `emoscope patterns` runs, then the patterns with their sizes, label mix, weeks,
representative moments and a WebGL map of the moments."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.index import pattern_runs
from core.storage.store import Store
from tests.test_dashboard import clean, metric

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def patterns_db(views_db, tmp_path_factory):
    d = tmp_path_factory.mktemp("patterns_view")
    shutil.copy(views_db, d / "views.duckdb")
    shutil.copy(views_db.with_name("emoscope.toml"), d / "emoscope.toml")
    saved = {k: os.environ.get(k) for k in ("EMOSCOPE_DB", "EMOSCOPE_RULES")}
    os.environ["EMOSCOPE_DB"] = str(d / "views.duckdb")
    os.environ["EMOSCOPE_RULES"] = str(d / "emoscope.toml")
    yield d / "views.duckdb"
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def open_patterns() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/patterns.py").run()
    clean(at)
    return at


def test_patterns_page_before_and_after_a_run(patterns_db):
    at = open_patterns()
    assert at.title[0].value == "Patterns"
    assert any("emoscope patterns" in i.value for i in at.info)
    store = Store(patterns_db)
    run = pattern_runs.compute(store, k=4, seed=0)
    at = open_patterns()
    assert any(run.run_id in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert list(table.Pattern) == ["P1", "P2", "P3", "P4"]
    assert list(table.Moments) == run.sizes  # the operator sees every moment
    # The chosen pattern's details agree with the stored rows.
    at.selectbox(key="pat_pick").set_value(1).run()
    clean(at)
    n = store.query("SELECT count(*) AS n FROM segment_patterns WHERE pattern = 1").n[0]
    assert metric(at, "Moments") == f"{n:,}"
    labels = store.query("SELECT g.label FROM segment_patterns p JOIN segments g "
                         "USING (segment_id) WHERE p.pattern = 1").label
    top = labels.value_counts(normalize=True)
    mix = next(m.value for m in at.markdown if m.value.startswith("**Label mix:**"))
    assert f"{top.iloc[0]:.0%}" in mix
    reps = [m.value for m in at.markdown if "cosine to the pattern's centre" in m.value]
    assert len(reps) == 5
    assert {b.key for b in at.button} >= {f"pat_open_{i}" for i in range(5)}
    charts = [c for c in at.get("plotly_chart")]
    import json
    figs = [json.loads(c.proto.spec) for c in charts]
    weekly, world = figs
    assert {t["type"] for t in weekly["data"]} == {"scatter"} and len(weekly["data"]) == 4
    assert {t["type"] for t in world["data"]} == {"scattergl"}
    total = store.query("SELECT count(*) AS n FROM segment_patterns").n[0]
    assert sum(len(values(t["x"])) for t in world["data"]) == min(total, 20_000)
    # "Open" goes to the session at that moment.
    at.button(key="pat_open_0").click().run()
    clean(at)
    assert at.title[0].value == "Session"


def values(arr) -> list:
    from tests.test_dashboard_views import values as v
    return v(arr)
