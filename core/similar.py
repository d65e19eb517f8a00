"""Similar moments to one stored segment, among the segments a reader may see.

One function, so that how the neighbours are found — today an exact cosine top-k over the
reader's embedding matrix (core.search), read per call — can become an index kept beside the
store without its callers changing. The scope is the reader's: a segment out of it is not
found, and no neighbour comes from a session out of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core import search
from core.queries import Reader


@dataclass(frozen=True)
class Similar:
    segment: dict  # the query segment (session_id, speaker, label, start_s, end_s, ...)
    hits: pd.DataFrame  # core.search.META_COLUMNS + similarity, best first
    searched: int  # segments compared with


def similar_to(reader: Reader, segment_id: str, k: int = 10, speakers=None, labels=None,
               teams=None, since=None, until=None, other_sessions: bool = True
               ) -> Similar | None:
    """The k segments most like `segment_id` (never itself; with `other_sessions`, none of its
    own session) passing the filters; None when the reader cannot see that segment."""
    seg = reader.segment(segment_id)
    if seg.empty:
        return None
    query = seg.iloc[0]
    meta, matrix, dropped = reader.embedding_matrix()
    index = search.build_index(matrix, meta, dropped)
    row = index.row_of(segment_id)
    info = {c: query[c] for c in ("segment_id", "session_id", "channel", "speaker", "start_s",
                                  "end_s", "label", "confidence")}
    if row is None:  # no embedding, or one of another model's dimension
        return Similar(info, index.meta.iloc[0:0].assign(similarity=[]), 0)
    mask = search.mask_for(index, speakers, labels, teams, since, until,
                           exclude_session=query.session_id if other_sessions else None,
                           exclude_segment=segment_id)
    return Similar(info, search.top_k(index, index.matrix[row], k, mask), int(mask.sum()))
