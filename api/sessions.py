"""Stored sessions, read through the caller's scope: the list with the dashboard's filters, one
session whole, its recording, and the moments most like one segment.

A session out of the caller's scope answers exactly as one that does not exist (404 with the
same message). Every answer is recorded in the audit (view, play) before it is sent.
"""
from __future__ import annotations

import mimetypes
from typing import Literal

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import FileResponse

from api.context import PERIOD_DESCRIPTION, Caller, caller, day, day_query, known_query, records
from api.schemas import SessionDetail, SessionPage, SimilarAnswer
from core.analysis import aggregates, quality
from core.storage import analysers, notes
from core.base import periods
from core.analysis.alerts import ALERT_COLUMNS
from core.base.labels import LABELS
from core.analysis.metrics import METRIC_COLUMNS
from core.storage.queries import AudioUnavailable, SessionFilter
from core.base.session_list import ListFilter, apply
from core.index.similar import similar_to

PERIODS = periods.WORDS
router = APIRouter(dependencies=[Depends(known_query)])  # unknown parameters: 422
NOT_FOUND = {404: {"description": "No such session (or not one the caller may see)"}}

LIST_COLUMNS = ["session_id", "file_name", "status", "error", "when", "duration_s", "n_channels",
                "agent_id", "customer_id", "team", "tags", "speakers", "flags", "alerts",
                "severity", "volatility", "talk_s", "negative_share", "dominant", "categories",
                "model", "trained", "head"]
SEGMENT_COLUMNS = ["segment_id", "channel", "speaker", "start_s", "end_s", "label", "confidence",
                   "scores", "flags", "fallback_action", "rolling_volatility", "rms", "clip_ratio"]
HIDDEN = ("source_path", "run_id")  # where the server keeps files is not the caller's business
SessionId = Path(..., max_length=64, description="A session id, e.g. s1a2b3c4d5e6f7a8")


@router.get("/sessions", response_model=SessionPage, summary="Sessions, filtered and paged",
            responses={503: {"description": "Store busy, or the audit cannot be written"}})
def list_sessions(
    c: Caller = Depends(caller),
    agent: list[str] = Query([], description="Agent id (repeatable: any of them)."),
    team: list[str] = Query([], description="Team (repeatable)."),
    person: list[str] = Query([], description="Customer / diary person id, or an agent's "
                                              "(repeatable)."),
    period: Literal[PERIODS] = Query("all", description=PERIOD_DESCRIPTION),  # type: ignore
    since: str = day_query("Recorded on or after this day (YYYY-MM-DD)."),
    until: str = day_query("Recorded before this day."),
    role: list[str] = Query([], description="Sessions with this speaker role (repeatable); "
                                            "negative share and dominant emotion then count "
                                            "only that role's speech."),
    label: list[str] = Query([], description="Dominant emotion (repeatable)."),
    flags: list[str] = Query([], description="Any of these quality or alert flags "
                                             "(repeatable), e.g. too_quiet, angry_streak."),
    band: Literal["all", "narrowband", "wideband"] = Query(
        "all", description="narrowband: telephone-band audio (nothing above 4 kHz), where the "
                           "model is known to be less reliable; wideband: the rest."),
    q: str = Query("", max_length=200, description="Text in the id, file, agent, customer, "
                                                   "team or tags."),
    category: list[str] = Query([], description="Sessions carrying any of these categories "
                                                "(repeatable; emoscope.toml [[categories]])."),
    status: Literal["all", "ok", "failed"] = Query("all"),
    sort: Literal["severity", "newest", "oldest"] = Query(
        "severity", description="severity: most severe alerts first (the overview's order)."),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> dict:
    limit = min(limit, c.settings.max_page)
    since, until = day(since, "since"), day(until, "until")
    page = {"total": 0, "offset": offset, "limit": limit, "next_offset": None, "sessions": []}
    if not c.has_store():
        return page
    r = c.reader()
    if period != "all":
        since, until = periods.bounds(period, r.newest_day(), since, until)
    f = SessionFilter(since=since, until=until, ok_only=False)
    summary = r.summary(f)
    if role:
        summary = aggregates.restrict_to_roles(summary, r.label_seconds(f), role, r.alerts(f))
    rows = apply(summary, ListFilter(agents=agent, teams=team, people=person, roles=role,
                                     dominant=label, flags=flags, categories=category,
                                     text=q, band="" if band == "all" else band))
    if status != "all":
        rows = rows[rows.status == status]
    if sort != "severity":
        rows = rows.sort_values(["when", "session_id"], ascending=sort == "oldest",
                                na_position="last")
    part = rows.iloc[offset:offset + limit]
    made_by = r.runs().set_index("run_id")
    part = part.assign(model=part.run_id.map(made_by.model),
                       trained=part.run_id.map(made_by.trained))
    head = r.active_head()  # the head that labels the model's segments, if one is active
    part = part.assign(head=[head[0] if head and m == (head[1] or m) else None
                             for m in part.model])
    c.record("view", f"{len(part)} of {len(rows)} sessions",
             {"sessions": list(part.session_id), "filters": {
                 k: v for k, v in (("period", period), ("agent", agent), ("team", team),
                                   ("person", person),
                                   ("since", since), ("until", until),
                                   ("role", role), ("label", label), ("flags", flags),
                                   ("category", category), ("q", q), ("band", band),
                                   ("status", status)) if v and v != "all"}})
    more = offset + len(part) < len(rows)
    return page | {"total": len(rows), "next_offset": offset + len(part) if more else None,
                   "sessions": records(part, LIST_COLUMNS)}


def _segments(df: pd.DataFrame) -> list[dict]:
    out = records(df, SEGMENT_COLUMNS + [c.name for c in analysers.segment_columns()
                                         if c.name in df.columns])
    for s in out:
        s["scores"] = dict(zip(LABELS, s["scores"])) if s.get("scores") else None
    return out


def _curves(frames: pd.DataFrame, channels: pd.DataFrame) -> list[dict]:
    speaker = dict(zip(channels.channel, channels.speaker))
    out = []
    for ch, rows in frames.groupby("channel", sort=True):
        out.append({"channel": int(ch), "speaker": speaker.get(ch),
                    "labels": list(LABELS), "t_s": rows.t_s.round(3).tolist(),
                    "probs": rows[list(LABELS)].to_numpy().round(4).tolist()})
    return out


@router.get("/sessions/{session_id}", response_model=SessionDetail, responses=NOT_FOUND,
            summary="One session: segments, curves, metrics, alerts, notes")
def get_session(session_id: str = SessionId, c: Caller = Depends(caller),
                curves: bool = Query(True, description="Include the emotion curves (9 "
                                                       "probabilities every 0.1 s per channel).")
                ) -> dict:
    if not c.has_store():
        raise HTTPException(404, f"no session {session_id}")
    r = c.reader()
    one = SessionFilter.of(session_id)
    row = r.session_rows(one)
    if row.empty:
        raise HTTPException(404, f"no session {session_id}")
    models = r.models(one)
    channels = r.channels(session_id)
    answer = {
        "session": records(row, drop=HIDDEN)[0],
        "model": records(models[["model", "trained", "head"]])[0] if len(models) else None,
        "channels": records(channels, drop=("session_id",)),
        "segments": _segments(r.segments(session_id)),
        "curves": _curves(r.frames(session_id), channels) if curves else None,
        "metrics": records(r.session_metrics(one), [c_ for c_ in METRIC_COLUMNS
                                                    if c_ != "session_id"]),
        "alerts": records(r.alerts(one), [c_ for c_ in ALERT_COLUMNS if c_ != "session_id"]),
        "categories": records(r.categories(one), drop=("session_id",)),
        "notes": records(r.notes_with_pending(notes.spool_dir(c.settings.db), one),
                         drop=("session_id",)),
        "analyses": {t.name: records(r.analysis_rows(session_id, t.name),
                                     drop=("session_id",)) for t in analysers.tables()},
    }
    answer["transcript"], answer["audio_events"] = _transcript(r, one)
    answer["caveats"] = quality.caveats({f for fl in channels.get("flags", []) for f in
                                         (fl if fl is not None else ())})
    c.record("view", session_id)
    return answer


def _transcript(r, one: SessionFilter) -> tuple[list[dict], list[dict]]:
    """Utterances with their words, and the audio events, of one session."""
    if "utterances" not in r.tables():
        return [], []
    words: dict[str, list[dict]] = {}
    for w in records(r.words(one), drop=("session_id", "n")):
        words.setdefault(w.pop("utterance_id"), []).append(w)
    lines = records(r.utterances(one), drop=("session_id",))
    for u in lines:
        u["words"] = words.get(u["utterance_id"], [])
    return lines, records(r.audio_events(one), drop=("session_id",))


@router.get("/sessions/{session_id}/audio", responses=NOT_FOUND | {
    200: {"content": {"audio/*": {}}, "description": "The recording as it was stored"}},
    response_class=FileResponse, summary="The session's recording")
def get_audio(session_id: str = SessionId, c: Caller = Depends(caller)):
    if not c.has_store():
        raise HTTPException(404, f"no session {session_id}")
    try:
        path = c.reader().audio_path(session_id)
    except AudioUnavailable as e:
        if str(e).startswith("no session"):
            raise HTTPException(404, f"no session {session_id}") from None
        raise HTTPException(404, f"the recording of session {session_id} is no longer kept "
                                 "on the server") from None
    c.record("play", session_id)
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media, filename=f"{session_id}{path.suffix.lower()}")


@router.get("/segments/{segment_id}/similar", response_model=SimilarAnswer,
            responses={404: {"description": "No such segment (or not one the caller may see)"}},
            summary="The moments most like one segment, within the caller's scope")
def get_similar(
    segment_id: str = Path(..., max_length=96),
    c: Caller = Depends(caller),
    k: int = Query(10, ge=1, le=100),
    speaker: list[str] = Query([], description="Only these speaker roles (repeatable)."),
    label: list[str] = Query([], description="Only segments with these labels (repeatable)."),
    team: list[str] = Query([], description="Only these teams (repeatable)."),
    since: str = day_query("On or after this day."),
    until: str = day_query("Before this day."),
    other_sessions: bool = Query(True, description="Leave out the segment's own session."),
) -> dict:
    since, until = day(since, "since"), day(until, "until")
    found = similar_to(c.reader(), segment_id, min(k, c.settings.max_similar), speaker or None,
                       label or None, team or None, since, until, other_sessions) \
        if c.has_store() else None
    if found is None:
        raise HTTPException(404, f"no segment {segment_id}")
    hits = records(found.hits)
    c.record("view", f"similar to {segment_id}",
             {"sessions": sorted({h["session_id"] for h in hits})})
    return {"segment": records(pd.DataFrame([found.segment]))[0], "searched": found.searched,
            "similar": hits}
