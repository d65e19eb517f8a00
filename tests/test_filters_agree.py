"""One definition of every filter: each one, run through the core session list (the Overview),
the alerts (the Alerts page), the agents' scorecards, the reports/exports and the API's session
list, counts the same sessions and the same alerts. The speaker-role filter means "only the
speech of this role" everywhere: sessions with that speaker, alerts raised on its speech."""
from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from core.insight import rollups
from core.analysis import aggregates
from core.base import periods
from core.reporting import reports
from core.guard.access import operator
from core.storage.queries import Reader, SessionFilter
from core.base.session_list import ListFilter, apply
from core.storage.store import Store
from tests.serving import LOCAL

FILTERS = [{}, {"team": "billing"}, {"agent": "a-cy"}, {"person": "c-004"},
           {"role": "agent"}, {"role": "customer"}, {"role": "speaker"},
           {"team": "support", "role": "agent"}, {"period": "latest-week"},
           {"category": "cancel_while_angry"}]


@pytest.fixture(scope="module")
def site(views_db, tmp_path_factory, model):
    d = tmp_path_factory.mktemp("agree")
    db = d / "views.duckdb"
    shutil.copy(views_db, db)
    shutil.copy(views_db.with_name("emoscope.toml"), d / "emoscope.toml")
    settings = Settings(model="tiny-random", device="cpu", db=db,
                        rules=str(d / "emoscope.toml"))
    with TestClient(create_app(settings), client=("127.0.0.1", 40000),
                    base_url=LOCAL) as client:
        yield Reader(Store(db), operator()), client


def _window(r: Reader, want: dict) -> tuple[str | None, str | None]:
    return periods.bounds(want.get("period"), r.newest_day())


@pytest.mark.parametrize("want", FILTERS, ids=lambda w: ",".join(f"{k}={v}" for k, v in
                                                                  w.items()) or "none")
def test_every_face_counts_the_same(site, want):
    r, client = site
    roles = [want["role"]] if "role" in want else []
    since, until = _window(r, want)
    who = {k: want[k] for k in ("team", "agent", "person") if k in want}
    cats = [want["category"]] if "category" in want else []
    f = SessionFilter(since=since, until=until, categories=tuple(cats) or None, **who)

    # The Overview: the session list's filters over the summary, role figures restricted.
    summary = r.summary(SessionFilter(since=since, until=until, ok_only=False))
    rows = apply(aggregates.restrict_to_roles(summary, r.label_seconds(f), roles,
                                              r.alerts(f)),
                 ListFilter(agents=[want["agent"]] if "agent" in want else [],
                            teams=[want["team"]] if "team" in want else [],
                            people=[want["person"]] if "person" in want else [],
                            roles=roles, categories=cats))
    rows = rows[rows.status == "ok"]
    overview = (len(rows), int((rows.alerts > 0).sum()), int(rows.alerts.sum()))

    # The Alerts page: the window's alerts, then the role's.
    found = aggregates.alerts_of_roles(r.alerts(f), roles)
    assert (found.session_id.nunique(), len(found)) == overview[1:], want

    # The API's session list.
    params = {"limit": 500, "status": "ok", **{k: v for k, v in want.items()}}
    page = client.get("/v1/sessions", params=params)
    assert page.status_code == 200, page.text
    items = page.json()["sessions"]
    assert (len(items), sum(s["alerts"] > 0 for s in items),
            sum(s["alerts"] for s in items)) == overview, want

    # Reports and exports (one builder for the page, the CLI and the API).
    kind, key = next(((k, want[k]) for k in ("team", "agent", "person") if k in want),
                     ("sessions", None))
    report = reports.build(r, reports.ReportSpec(kind, key, since, until, roles=tuple(roles),
                                                 categories=tuple(cats)),
                           formats=("sessions",))
    assert (len(report.session_ids), report.n_alerts) == (overview[0], overview[2]), want

    # The agents' scorecards: alerts of calls (no role filter on that page).
    if not roles:
        card = rollups.agent_scorecards(r, f)
        calls = rows[rows.agent_id.notna() & rows.speakers.map(lambda s: "agent" in s)]
        assert int(card.calls.sum()) == len(calls)
        assert int(card[["urgent", "high", "medium", "low"]].sum().sum()) == \
            int(calls.alerts.sum())


def test_the_role_filter_is_not_vacuous(site):
    """The speaker-role runs above compare something: alerts are raised on both sides."""
    r, _ = site
    al = r.alerts()
    assert {"agent", "customer"} <= set(al.speaker)
