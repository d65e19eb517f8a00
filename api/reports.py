"""GET /v1/reports: one file of a report, built by the same code as `emoscope export` and the
Reports page (core.reporting.reports.build with a ReportSpec), over the sessions the caller may see."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from api.context import PERIOD_DESCRIPTION, Caller, caller, day, day_query, known_query
from core.storage import notes
from core.base import periods
from core.storage.queries import SessionFilter
from core.reporting.reports import FORMATS, ReportSpec, build

router = APIRouter(dependencies=[Depends(known_query)])  # unknown parameters: 422
# One audience per report, in one parameter, so the schema says what the server takes.
AUDIENCE = r"^(team|agent|person):[^\x00-\x1f]{1,120}$"


@router.get("/reports", response_class=Response, summary="A report file (PDF, CSV, ...)",
            responses={200: {"content": {m: {} for m in sorted({f.mime for f in
                                                                 FORMATS.values()})},
                             "description": "The file; its name in Content-Disposition"},
                       404: {"description": "No analysed session matches"},
                       422: {"description": "Bad parameters"}})
def get_report(
    request: Request,
    c: Caller = Depends(caller),
    # checked against core.reporting.reports.FORMATS when asked, so a format registered later is served
    format: str = Query("pdf", description="; ".join(f"{f.name} ({f.about})" if f.about
                                                      else f.name for f in FORMATS.values()),
                        json_schema_extra={"enum": list(FORMATS)}),
    audience: str = Query(None, pattern=AUDIENCE, description="Whose report, one of "
                          "`team:<team>`, `agent:<agent id>`, `person:<customer or diary "
                          "person id>`; without it, every session in scope."),
    session: list[str] = Query([], description="Only these sessions (repeatable)."),
    period: Literal[periods.WORDS] = Query("all", description=PERIOD_DESCRIPTION),  # type: ignore
    since: str = day_query("From this day."),
    until: str = day_query("Before this day."),
    role: list[str] = Query([], description="Only this speaker role's speech (repeatable)."),
    category: list[str] = Query([], description="Only sessions carrying this category "
                                                "(repeatable; emoscope.toml [[categories]])."),
) -> Response:
    if format not in FORMATS:
        raise HTTPException(422, f"format takes one of {', '.join(FORMATS)}, not {format!r}")
    kind, key = audience.split(":", 1) if audience else ("sessions", None)
    since, until = day(since, "since"), day(until, "until")
    r = c.reader() if c.has_store() else None
    if r is not None and period != "all":
        who = {kind: key} if key else {}
        since, until = periods.bounds(period, r.newest_day(SessionFilter(**who)), since, until)
    spec = ReportSpec(kind, key, since, until, tuple(session) if session else None,
                      tuple(role), tuple(category),
                      period=period if period != "all" else "")
    rt = request.app.state.runtime
    report = build(r, spec, rt.rules if rt is not None else None,
                   notes.spool_dir(c.settings.db), (format,)) if c.has_store() else None
    if report is None:
        raise HTTPException(404, "no analysed session matches these filters")
    name, data = report.files[format]
    c.record("export", f"{len(report.session_ids)} sessions", {
        "formats": [format], "delivered": name, "scope": report.scope,
        "sessions": list(report.session_ids),
        "filters": {k: v for k, v in ((kind, key), ("period", period)) if v and v != "all"}})
    return Response(data, media_type=FORMATS[format].mime,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
