"""Similar moments to one stored segment (or to a clip's embedding), among the segments a
reader may see — answered by the ANN index beside the store (core.index.segment_index).

The index holds every stored segment; what a reader may get back is decided in SQL: the keys of
the segments that pass the reader's scope (Reader._sessions_where) and the filters are handed to
the index as the allowed set, so a segment out of scope is never a hit and an erased one, gone
from the store, never comes back even from an index that lags. Small allowed sets are scored
exactly; broad ones go through the graph with oversampling (core.index.vector_index.search).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.index import segment_index
from core.storage.queries import Reader, SessionFilter
from core.storage.store import Store, file_version

# What a hit shows of its segment (core.storage.index_reads.EMBEDDING_META reads them).
META_COLUMNS = ["segment_id", "session_id", "speaker", "label", "confidence", "start_s", "end_s",
                "team", "when"]


@dataclass(frozen=True)
class Similar:
    segment: dict  # the query segment (session_id, speaker, label, start_s, end_s, ...)
    hits: pd.DataFrame  # META_COLUMNS + similarity, best first
    searched: int  # segments the search could return (allowed by scope and filters)
    method: str = ""  # "ann", "ann-filtered" or "exact" (core.index.vector_index.Hits.method)


_lock = threading.Lock()
_open: dict[str, tuple[tuple, object]] = {}  # index path → (store version, VectorIndex)


def _version(store: Store) -> tuple:
    return file_version(store.path)


def index_for(store: Store, space: segment_index.Space):
    """The space's index for searching, kept open per process and checked against the store
    again whenever the database file changes (a commit), rebuilt when it does not match."""
    path = str(segment_index.path_of(store, space))
    version = _version(store)
    with _lock:
        got = _open.get(path)
        if got is not None and got[0] == version:
            return got[1]
        ix = segment_index.for_search(store, space, previous=got[1] if got else None)
        _open[path] = (version, ix)
        return ix


def _empty_hits() -> pd.DataFrame:
    return pd.DataFrame(columns=META_COLUMNS + ["similarity"])


def neighbours(reader: Reader, model: str, dim: int, vector, k: int = 10, speakers=None,
               labels=None, teams=None, since=None, until=None,
               exclude_session: str | None = None, exclude_key: int | None = None
               ) -> tuple[pd.DataFrame, int, str]:
    """(hits, how many segments could be returned, method): the k segments of the (model, dim)
    index most like `vector` that the reader may see and the filters admit."""
    space = segment_index.Space(model, int(dim))
    ix = index_for(reader.store, space)
    filtered = bool(speakers or labels or teams or since is not None or until is not None)
    allowed = None
    if filtered or not reader.viewer.scope.everything:
        f = SessionFilter(since=since, until=until)
        allowed = reader.segment_keys(model, dim, f, speakers, labels, teams)
    exclude = [np.zeros(0, np.uint64)]
    if exclude_session:
        exclude.append(reader.segment_keys(model, dim, session_id=exclude_session))
    if exclude_key is not None:
        exclude.append(np.array([exclude_key], np.uint64))
    bar = np.unique(np.concatenate(exclude))
    searched = (len(allowed) if allowed is not None else len(ix)) - (
        int(np.isin(bar, allowed).sum()) if allowed is not None else int(ix.contains(bar).sum()))
    hits = ix.search(vector, k, allowed=allowed, exclude=bar)
    if len(hits) == 0:
        return _empty_hits(), max(searched, 0), hits.method
    meta = reader.segments_by_key(hits.keys).set_index("segment_key")
    # A hit the store no longer has (an index a commit is about to update) is left out.
    keep = np.isin(hits.keys, meta.index.to_numpy(np.uint64))
    out = meta.loc[hits.keys[keep], META_COLUMNS].reset_index(drop=True)
    out["similarity"] = hits.similarity[keep]
    out["when"] = pd.to_datetime(out["when"])
    return out, max(searched, 0), hits.method


def similar_to(reader: Reader, segment_id: str, k: int = 10, speakers=None, labels=None,
               teams=None, since=None, until=None, other_sessions: bool = True
               ) -> Similar | None:
    """The k segments most like `segment_id` (never itself; with `other_sessions`, none of its
    own session) passing the filters; None when the reader cannot see that segment."""
    q = reader.segment_space(segment_id)
    if q is None:
        return None
    info = {c: q[c] for c in ("segment_id", "session_id", "channel", "speaker", "start_s",
                              "end_s", "label", "confidence")}
    if pd.isna(q["dim"]) or not q["dim"]:  # a segment stored without an embedding
        return Similar(info, _empty_hits(), 0)
    model, dim, key = q["model"], int(q["dim"]), int(q["segment_key"])
    ix = index_for(reader.store, segment_index.Space(model, dim))
    vector = ix.vectors([key])[0]
    if not vector.any():  # a silent moment's zero embedding points nowhere: nothing is like it
        return Similar(info, _empty_hits(), 0)
    hits, searched, method = neighbours(
        reader, model, dim, vector, k, speakers, labels, teams, since, until,
        exclude_session=q["session_id"] if other_sessions else None, exclude_key=key)
    return Similar(info, hits, searched, method)


def pca_basis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, the 2 principal axes) of the rows of `x`: what places any vector on the Similar
    page's map (`(v - mean) @ axes.T`), the query clip's too."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        d = x.shape[1] if x.ndim == 2 else 0
        return np.zeros(d), np.zeros((2, d))
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:2]
    if len(axes) < 2:
        axes = np.pad(axes, ((0, 2 - len(axes)), (0, 0)))
    return mean, axes
