"""Recordings in, as jobs: `POST /v1/sessions` and `GET /v1/jobs/{id}`, and what a stored
stream goes through.

The API never writes the database: `emoscope worker` is its single writer. A recording is put
in the worker's inbox with a sidecar (metadata, channel roles) exactly as the Upload page puts
it (core.intake.inbox.put), under a job id chosen here and written in the sidecar, which the worker
files the job under. Until the worker has taken the file into its queue the job reads as
`queued` from the inbox itself.
"""
from __future__ import annotations

import re

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, UploadFile
from fastapi.responses import JSONResponse

from api.context import Caller, caller, known_query, plain
from api.predict import NOT_AUDIO, shown_name
from api.schemas import JobAnswer
from core.intake import inbox
from core.guard.access import Viewer
from core.intake.jobs import new_job_id
from core.base.times import as_timestamp

router = APIRouter(dependencies=[Depends(known_query)])  # unknown parameters: 422
_ROLE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
RECORDED_AT = (r"^([0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
               r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?)?)?$")
ROLES = r"^( *[A-Za-z0-9_.-]{1,32} *(, *[A-Za-z0-9_.-]{1,32} *){0,7})?$"  # what _ROLE takes, ≤ 8
JOB_FIELDS = ("job_id", "status", "original_name", "error", "session_id", "attempts",
              "created_at", "started_at", "finished_at")


class Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def upload_team(viewer: Viewer, team: str | None) -> str | None:
    """The team an upload is filed under: supervisors file under one of their own teams (as on
    the Upload page; the only one when they have one and name none), admins under any."""
    if not viewer.can_upload:
        raise Refused(403, f"{viewer.who}: your role does not include uploading recordings "
                           "(supervisors and admins upload)")
    team = (team or "").strip() or None
    if viewer.scope.everything:
        return team
    mine = sorted(viewer.scope.teams)
    if team is None and len(mine) == 1:
        return mine[0]
    if team not in mine:
        shown = ", ".join(mine) or "none"
        raise Refused(403 if team else 422,
                      f"team: recordings are filed under one of your teams ({shown})"
                      + (f", not {team}" if team else ""))
    return team


def queue_recording(c: Caller, name: str, source, metadata: dict,
                    max_bytes: int | None) -> str:
    """Audit the upload, then put the recording and its sidecar in the inbox; the job id.
    Refused (403/413/422/503/507) when it cannot be queued; nothing is left half-written."""
    refused = c.access.tags_refused(c.viewer, metadata.get("tags") or ()) if c.access else []
    if refused:
        raise Refused(403, f"tags: {', '.join(refused)} files a recording into a programme "
                           "you do not follow; only its own people and admins use it")
    job_id = new_job_id()
    c.record("upload", inbox.display_name(name),
             {"job_id": job_id, **{k: metadata[k] for k in ("team", "agent_id")
                                  if metadata.get(k)}})
    try:
        inbox.put(c.inbox, name, source, metadata, max_bytes=max_bytes, job_id=job_id)
    except inbox.InboxError as e:
        raise Refused(413 if "limit" in str(e) else 422, f"{shown_name(name)}: {e}") from None
    except OSError as e:
        raise Refused(507, f"{shown_name(name)}: could not be queued "
                           f"({e.strerror or type(e).__name__})") from None
    return job_id


def metadata_of(agent_id, customer_id, team, recorded_at, tags, roles) -> dict:
    if recorded_at and as_timestamp(recorded_at) is None:
        raise Refused(422, f"recorded_at: a date or time like 2026-11-02T10:30, not "
                           f"{shown_name(recorded_at)!r}")
    role_list = [r.strip() for r in (roles or "").split(",") if r.strip()]
    if any(not _ROLE.match(r) for r in role_list) or len(role_list) > 8:
        raise Refused(422, "roles: one name per channel (letters, digits, _ . -; at most 32 "
                           "characters), comma-separated")
    return inbox.clean_metadata({
        "agent_id": agent_id, "customer_id": customer_id, "team": team,
        "recorded_at": recorded_at, "roles": role_list or None,
        "tags": [t.strip() for t in (tags or "").split(",") if t.strip()]})


@router.post("/sessions", status_code=202, response_model=JobAnswer,
             summary="Upload a recording: it becomes a job for the worker",
             responses={403: {"description": "Role or team not allowed to upload"},
                        413: {"description": "Over the upload limit"},
                        415: {"description": "The part is not audio"},
                        422: {"description": "Empty file or bad metadata"},
                        503: {"description": "The audit cannot be written"}})
def upload(
    c: Caller = Depends(caller),
    audio: UploadFile = File(..., description="The recording: any format the worker decodes.",
                             json_schema_extra={"minLength": 1}),
    agent_id: str | None = Form(None, max_length=120),
    customer_id: str | None = Form(None, max_length=120, description="Customer or diary "
                                                                     "person."),
    team: str | None = Form(None, max_length=120, description="Supervisors: one of their "
                                                              "teams (default: their only one)."),
    recorded_at: str = Form(None, pattern=RECORDED_AT, description="ISO date or local time: "
                                                                   "2026-11-02, 2026-11-02T10:30."),
    tags: str | None = Form(None, max_length=400, description="Comma-separated."),
    roles: str | None = Form(None, max_length=300, pattern=ROLES, description="Speaker per channel, "
                                                               "comma-separated (default: mono "
                                                               "speaker; stereo agent,customer)."),
):
    name = audio.filename or "upload"
    ctype = (audio.content_type or "").lower()
    try:
        if ctype.startswith(NOT_AUDIO):
            raise Refused(415, f"{shown_name(name)}: the part is {ctype}, not audio")
        filed = upload_team(c.viewer, team)
        meta = metadata_of(agent_id, customer_id, filed, recorded_at, tags, roles)
        audio.file.seek(0, 2)
        if audio.file.tell() == 0:
            raise Refused(422, f"{shown_name(name)}: empty file")
        audio.file.seek(0)
        job_id = queue_recording(c, name, audio.file, meta, c.settings.max_session_bytes)
    except Refused as e:
        raise HTTPException(e.status, e.detail) from None
    body = {"job_id": job_id, "status": "queued", "original_name": inbox.display_name(name),
            "metadata": meta}
    return JSONResponse(body, 202, headers={"Location": f"/v1/jobs/{job_id}"})


@router.get("/jobs/{job_id}", response_model=JobAnswer,
            responses={404: {"description": "No such job (or not one the caller may see)"}},
            summary="Where an upload or a stored stream stands")
def get_job(job_id: str = Path(..., max_length=40), c: Caller = Depends(caller)) -> dict:
    job = None
    if c.has_store():
        try:
            job = c.reader().job(job_id)
        except Exception as e:  # a store from before the jobs table: only the inbox
            if "jobs" not in str(e):
                raise
    if job is not None:
        answer = {k: plain(job.get(k)) for k in JOB_FIELDS}
    else:
        waiting = inbox.find_waiting(c.inbox, job_id)
        if waiting is None or not c.viewer.scope.covers(waiting[2].get("team"),
                                                        waiting[2].get("tags")):
            raise HTTPException(404, f"no job {job_id}")
        answer = {"job_id": job_id, "status": "queued", "original_name": waiting[1],
                  "metadata": waiting[2]}
    c.record("view", f"job {job_id}", {"session_id": answer.get("session_id")})
    return answer
