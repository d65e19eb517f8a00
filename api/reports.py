"""GET /v1/reports: one file of a report, built by the same code as `emoscope export` and the
Reports page (core.reports.build with a ReportSpec), over the sessions the caller may see."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from api.context import DAY, Caller, caller, day
from core import notes
from core.reports import MIME, ReportSpec, build

router = APIRouter()
FORMATS = ("pdf", "csv", "parquet", "json", "npy", "sessions")


@router.get("/reports", response_class=Response, summary="A report file (PDF, CSV, ...)",
            responses={200: {"content": {m: {} for m in sorted(set(MIME.values()))},
                             "description": "The file; its name in Content-Disposition"},
                       404: {"description": "No analysed session matches"},
                       422: {"description": "Bad parameters"}})
def get_report(
    request: Request,
    c: Caller = Depends(caller),
    format: Literal[FORMATS] = Query(  # type: ignore[valid-type]
        "pdf", description="pdf; csv (segments); sessions (one row per session, CSV); "
                           "parquet, json (segments); npy (embeddings with segment ids)."),
    team: str | None = Query(None, max_length=120, description="A team's report."),
    agent: str | None = Query(None, max_length=120, description="An agent's report."),
    person: str | None = Query(None, max_length=120, description="A customer's or a diary "
                                                                 "person's report."),
    session: list[str] = Query([], description="Only these sessions (repeatable)."),
    since: str | None = Query(None, pattern=DAY, description="From this day."),
    until: str | None = Query(None, pattern=DAY, description="Before this day."),
    role: list[str] = Query([], description="Only this speaker role's speech (repeatable)."),
) -> Response:
    audiences = {k: v for k, v in (("team", team), ("agent", agent), ("person", person)) if v}
    if len(audiences) > 1:
        raise HTTPException(422, "a report is for one audience: give one of team, agent, person")
    kind, key = next(iter(audiences.items()), ("sessions", None))
    spec = ReportSpec(kind, key, day(since, "since"), day(until, "until"),
                      tuple(session) if session else None, tuple(role))
    rt = request.app.state.runtime
    report = build(c.reader(), spec, rt.rules if rt is not None else None,
                   notes.spool_dir(c.settings.db), (format,)) if c.has_store() else None
    if report is None:
        raise HTTPException(404, "no analysed session matches these filters")
    name, data = report.files[format]
    c.record("export", f"{len(report.session_ids)} sessions", {
        "formats": [format], "delivered": name, "scope": report.scope,
        "sessions": list(report.session_ids), "filters": audiences})
    return Response(data, media_type=MIME[format],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
