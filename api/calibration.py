"""A reviewer's label for a moment (core/storage/corrections): `POST /v1/segments/{id}/label`.

The API never writes the database: a correction goes into the corrections spool, which the
worker (the single writer) stores between jobs, as notes and uploads do. Only a segment the
caller may see can be labelled (Reader.segment: the one scope check), and each act is audited
before it is done.
"""
from __future__ import annotations

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Path

from api.context import Caller, caller, known_query, plain
from api.schemas import LabelAnswer, LabelRequest
from core.storage import corrections

router = APIRouter(dependencies=[Depends(known_query)])  # unknown parameters: 422


@router.post("/segments/{segment_id}/label", response_model=LabelAnswer, status_code=202,
             summary="Label a moment (and the similar ones the reviewer confirmed)",
             responses={404: {"description": "No such segment (or not one the caller may see)"},
                        422: {"description": "Not a label of the nine or of emoscope.toml"}})
def label_segment(body: LabelRequest, segment_id: str = Path(..., max_length=96),
                  c: Caller = Depends(caller)) -> dict:
    if not c.viewer.roles:
        raise HTTPException(403, f"{c.viewer.who}: no role that may label moments")
    allowed = corrections.choices(c.labels)
    if body.label not in allowed:
        raise HTTPException(422, f"unknown label {body.label!r}; one of: {', '.join(allowed)}")
    wanted = list(dict.fromkeys([segment_id, *body.also]))
    r = c.reader() if c.has_store() else None
    found = []
    for seg in wanted:
        row = r.segment(seg) if r is not None else None
        if row is None or row.empty:
            raise HTTPException(404, f"no segment {seg}")
        found.append((seg, row.session_id.iloc[0]))
    c.record("label", f"{len(found)} moment{'s' if len(found) != 1 else ''} as {body.label}",
             {"segments": [s for s, _ in found], "sessions": sorted({x for _, x in found})})
    spool = corrections.spool_dir(c.settings.db)
    out = [corrections.put(spool, seg, sid, body.label, c.viewer.who, c.labels)
           for seg, sid in found]
    return {"corrections": [{**row, "created_at": plain(pd.Timestamp(row["created_at"]))}
                            for row in out]}
