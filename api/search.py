"""`GET /v1/search`: moments across stored calls found by what was said (core.index.word_search),
within the caller's scope, recorded in the audit before the answer is sent."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query

from api.context import Caller, caller, day, day_query, known_query
from api.schemas import SearchAnswer
from core.index import word_index
from core.index import word_search as ws
from core.base.keyed import secret
from core.base.labels import LABELS

router = APIRouter(dependencies=[Depends(known_query)])  # unknown parameters: 422


@router.get("/search", response_model=SearchAnswer,
            summary="Moments where these words were said, within the caller's scope",
            responses={503: {"description": "Store busy, or the audit cannot be written"}})
def search(
    c: Caller = Depends(caller),
    q: str = Query(..., min_length=1, max_length=ws.MAX_QUERY,
                   description='Words (all of them), "a phrase", `a OR b`, `prefix*`.'),
    role: list[str] = Query([], max_length=8, description="Speaker role (repeatable): "
                                                          "customer, agent, speaker."),
    emotion: list[Literal[tuple(LABELS)]] = Query(  # type: ignore[valid-type]
        [], description="Emotion of a segment overlapping the words (repeatable)."),
    team: list[str] = Query([], max_length=32, description="Team (repeatable)."),
    agent: str | None = Query(None, max_length=128, description="Only this agent's calls."),
    person: str | None = Query(None, max_length=128,
                               description="Only this customer's / diary person's sessions."),
    since: str = day_query("Sessions on or after this day (YYYY-MM-DD)."),
    until: str = day_query("Sessions before this day."),
    limit: int = Query(50, ge=1, le=ws.MAX_LIMIT, description="How many moments, newest "
                                                              "first."),
    category: list[str] = Query([], max_length=32, description="Only sessions carrying this "
                                                               "category (repeatable)."),
) -> dict:
    filters = ws.Filters(tuple(role), tuple(emotion), tuple(team), agent, person,
                         day(since, "since"), day(until, "until"), tuple(category))
    try:
        query = ws.parse(q)
    except ws.QueryError as e:
        raise HTTPException(422, f"q: {e}") from None
    found = None
    if c.has_store():
        try:
            found = ws.search(c.reader(), query, filters, limit)
        except ws.QueryError as e:
            raise HTTPException(422, str(e)) from None
        except word_index.NoTranscripts:
            found = None
    hits = [] if found is None else [ws.hit_record(h) for h in found.hits.to_dict("records")]
    c.record("search", ws.audit_target(query, secret(c.settings.db)), {
        "terms": query.n_terms, "filters": filters.names(), "hits": len(hits),
        "sessions": sorted({h["session_id"] for h in hits})})
    return {"query": str(query), "hits": hits, "more": bool(found and found.more)}
