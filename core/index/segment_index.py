"""The store's segments in ANN indexes (core.index.vector_index), kept equal to the store.

Which rows: every segment with an embedding of an ok session, grouped into spaces by the model
of its run and the length of its embedding — one index per space, in `<db>.ann/`. The store's
side of the comparison is SQL over the stored `segment_key` column: the fingerprint of the
space's keys, and a stamp (latest ingest time of its sessions), which moves on every save, so a
re-ingest that kept its segment ids but never reached the index is caught too.

Who changes it: `SessionWriter` after each commit (`apply`), erasure (`forget`) and
`emoscope index rebuild`. Every change is checked against the store before it is saved; an
index that disagrees is repaired from the store (small differences) or rebuilt. Readers
(`for_search`) open it memory-mapped and never use one that fails a check: they rebuild it.
"""
from __future__ import annotations

import fcntl
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.index import index_compact
from core.index import index_files as files
from core.base import places
from core.index import vector_index as vx
from core.storage import commit_hooks
from core.storage.store import Connection, Store
from core.storage.vector_keys import Fingerprint, key_sql

log = logging.getLogger("emoscope.index")

# A segment's key: the stored column, or computed for a row written before it existed.
KEY = f"coalesce(g.segment_key, {key_sql('g.segment_id')})"
SPACE_ROWS = ("FROM segments g JOIN sessions s USING (session_id) LEFT JOIN runs r "
              "USING (run_id) WHERE s.status = 'ok' AND g.embedding IS NOT NULL")
# A space is a model: a model's embeddings have one size, and len(embedding) in a filter would
# read every stored embedding (~2 ms per 1,000 rows) where the model's name costs nothing.
IN_SPACE = " AND coalesce(r.model, '') = ?"
REPAIR_SHARE = 0.2  # past this many differing rows (share of the store's), rebuild instead


@dataclass(frozen=True)
class Space:
    model: str
    dim: int
    n: int = 0


def spaces(store: Store) -> list[Space]:
    """The (model, dimension) spaces of the stored embeddings, largest first."""
    if not store.exists():
        return []
    with store.read() as con:
        return _spaces(con)


def _spaces(con: Connection) -> list[Space]:
    rows = con.execute(f"SELECT coalesce(r.model, ''), count(*) {SPACE_ROWS} "
                       "GROUP BY ALL ORDER BY 2 DESC, 1").fetchall()
    return [Space(m, _dim(con, m), int(n)) for m, n in rows]


def _dim(con: Connection, model: str) -> int:
    return int(con.execute(f"SELECT len(g.embedding) {SPACE_ROWS}{IN_SPACE} LIMIT 1",
                           [model]).fetchall()[0][0])


_dims: dict[tuple[str, str], int] = {}  # (store, model) → embedding size, fixed once stored


def _dim_of(store: Store, con: Connection, model: str) -> int:
    key = (str(store.path.resolve()), model)
    if key not in _dims:
        _dims[key] = _dim(con, model)
    return _dims[key]


def path_of(store: Store, space: Space) -> Path:
    return vx.index_path(store.path.resolve(), space.model, space.dim)


def state(con: Connection, space: Space) -> tuple[Fingerprint, str]:
    """The store's fingerprint of the space's keys, and its stamp."""
    row = con.execute(
        f"SELECT count(*)::UBIGINT, coalesce(sum(k) % {1 << 64}, 0)::UBIGINT, "
        "coalesce(bit_xor(k), 0)::UBIGINT, max(t)::VARCHAR FROM "
        f"(SELECT {KEY} AS k, s.ingested_at AS t {SPACE_ROWS}{IN_SPACE})",
        [space.model]).fetchall()[0]
    return Fingerprint.from_row(row[:3]), str(row[3] or "")


def _rows(con: Connection, space: Space, where: str = "", params: list | None = None,
          batch: int = 65536):
    """(keys, float16 unit vectors) of the space's rows (and `where`), in batches."""
    rel = con.sql(f"SELECT {KEY} AS k, g.embedding::FLOAT[{space.dim}] AS e "
                  f"{SPACE_ROWS}{IN_SPACE}{where}", params=[space.model, *(params or [])])
    reader = rel.to_arrow_reader(batch)
    for rb in reader:
        keys = rb.column(0).to_numpy(zero_copy_only=False).astype(np.uint64)
        vecs = rb.column(1).flatten().to_numpy(zero_copy_only=False).reshape(-1, space.dim)
        yield keys, vx.normalised(vecs, space.dim).astype(np.float16)


def _store_keys(con: Connection, space: Space) -> np.ndarray:
    rows = con.execute(f"SELECT {KEY} AS k {SPACE_ROWS}{IN_SPACE}",
                       [space.model]).fetchnumpy()["k"]
    return np.asarray(rows, dtype=np.uint64)


def rebuild(store: Store, space: Space, params: vx.Params = vx.Params()) -> vx.VectorIndex:
    """The space's index built afresh from the store; returned opened read-only.

    The writer lock is taken first (RuntimeError while another writer holds it), then rows are
    read (float16: 2 GiB at 1M × 1024) and the connection closed, so the slow part — building
    the graph — holds no connection that would keep the store's writer out."""
    path = path_of(store, space)
    w = vx.VectorIndex.create(path, space.model, space.dim, params)
    try:
        with store.read() as con:
            fp, stamp = state(con, space)
            batches = list(_rows(con, space))
        for keys, vecs in batches:
            w.add(keys, vecs)
        del batches
        w.save(stamp=stamp)
    finally:
        w.close()
    ix = vx.VectorIndex.open(path, space.model, space.dim)
    if ix.fingerprint() != fp:  # e.g. two segment ids sharing a key: say so, never hide it
        log.warning("%s: the index holds %d rows, the store %d", ix.path, len(ix), fp.count)
    return ix


@contextmanager
def committing(store: Store):
    """Held by the writer from before its commit until the index has taken it, so a reader
    that meets the index one commit behind the store waits for it instead of rebuilding."""
    folder = places.beside(store.path, places.ANN)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "commit.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield


def _commit_under_way(store: Store) -> bool:
    lock = places.beside(store.path, places.ANN) / "commit.lock"
    try:
        with open(lock, "r") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except FileNotFoundError:
        return False
    except OSError:
        return True


def for_search(store: Store, space: Space, wait_s: float = 30.0,
               previous: vx.VectorIndex | None = None, stale_wait_s: float = 60.0
               ) -> vx.VectorIndex:
    """The space's index, memory-mapped, equal to the store: opened (or `previous` refreshed,
    reusing its mapped base) when it passes every check, rebuilt from the store when it is
    missing, corrupt or of another model, or stale (a writer saves its delta just after its
    commit: a reader in between waits for it rather than rebuild, up to `stale_wait_s` after
    the last commit it saw: a writer committing again and again keeps it waiting for the next
    delta, never rebuilding — a reader waiting at the store's gate enters just after a commit,
    before its delta, so under back-to-back commits it meets the index one behind many times
    in a row)."""
    start = last_seen = time.monotonic()
    seen = None
    while True:
        with store.read() as con:
            fp, stamp = state(con, space)
        try:
            if previous is not None:
                return previous.refreshed(fp, stamp)
            return vx.VectorIndex.open(path_of(store, space), space.model, space.dim, fp, stamp)
        except vx.IndexStale as e:
            if stamp != seen:  # the store has moved since the last look: a writer at work
                seen, last_seen = stamp, time.monotonic()
            waited = time.monotonic() - last_seen
            if waited < 0.2 or waited < stale_wait_s and (
                    files.writing(path_of(store, space)) or _commit_under_way(store)):
                time.sleep(0.05)
                continue
            log.warning("%s; rebuilding it from the store", e)
        except vx.IndexUnusable as e:  # a first search on a new store meets no index: no alarm
            log.log(logging.INFO if isinstance(e, vx.IndexMissing) else logging.WARNING,
                    "%s; rebuilding it from the store", e)
        previous = None
        try:
            return rebuild(store, space)
        except RuntimeError:  # a writer is changing it right now: open what it saves
            if time.monotonic() - start > wait_s:
                raise
            time.sleep(0.1)


def _open_writable(store: Store, space: Space) -> vx.VectorIndex:
    path = path_of(store, space)
    try:
        return vx.VectorIndex.open(path, space.model, space.dim, writable=True)
    except vx.IndexMissing:
        return vx.VectorIndex.create(path, space.model, space.dim)
    except vx.IndexUnusable as e:
        log.warning("%s; rebuilding it from the store", e)
        return vx.VectorIndex.create(path, space.model, space.dim)  # filled by the repair


@dataclass
class _Left:
    """What this process's last `apply` left: the store's count of stored embeddings and its
    latest ok ingest, and the rows each index held. The next commit compares the store with
    it in two cheap reads instead of fingerprinting every row (see `_unchanged_since`)."""
    rows: int
    latest: object
    held: dict


_left: dict[str, _Left] = {}  # store path → what its last apply left


def _marks(con: Connection, session_ids: list[str]) -> tuple[int, object, object]:
    """(segments with an embedding, of any session; the latest ingest of the ok sessions
    other than `session_ids`, and of all): a count DuckDB answers from its row groups'
    statistics, and a scan of the sessions table only — a few ms at 1M segments."""
    return tuple(con.execute(
        "SELECT (SELECT count(*) FROM segments WHERE embedding IS NOT NULL), "
        "max(ingested_at) FILTER (WHERE NOT list_contains(?::VARCHAR[], session_id)), "
        "max(ingested_at) FROM sessions WHERE status = 'ok'", [list(session_ids)]).fetchall()[0])


def _unchanged_since(left: _Left | None, rows: int, latest, held: dict) -> bool:
    """Whether the store changed, between this process's last apply and this commit, only by
    what this commit did: no session was ingested meanwhile by anyone else (none newer than
    the latest then, apart from this commit's), and the stored embeddings moved by exactly as
    many rows as the indexes did (`held`: each index's rows now). A missed commit, an erasure
    whose index update never ran, an index lost or replaced: each breaks one of the two."""
    if left is None:
        return False
    if latest is not None and (left.latest is None or latest > left.latest):
        return False
    now = {**left.held, **held}
    return rows - sum(now.values()) == left.rows - sum(left.held.values())


def apply(store: Store, session_ids: list[str], gone_keys: np.ndarray,
          vectors: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """After a commit: the saved sessions' rows replace whatever the index held under
    `gone_keys` (their rows before the save) and under their own keys; then each touched
    index is checked and saved. Returns {"added", "removed", "repaired", "rebuilt",
    "checked", "seconds"} summed over the spaces touched ("checked": indexes compared with
    the store's fingerprint of every row rather than incrementally).

    The check is incremental when nothing but this commit changed the store since this
    process's last apply (`_unchanged_since`): then the index, equal to the store before the
    commit, took exactly the commit's change, and its running fingerprint (base plus deltas)
    is the store's; its stamp is the saved sessions' ingest, the store's newest. Otherwise —
    the first commit of a process, a space that only lost rows, anything unexpected — it is
    the full comparison, repaired or rebuilt from the store. Readers compare every index with
    the store's fingerprint when they open it, so DuckDB stays the truth either way.

    `vectors`: the keys and embeddings of every row the commit stored, as the writer held
    them; taken in place of reading them back (~40 ms per 1,000 rows of 1024) when the commit
    is of one space with rows of its size."""
    t0 = time.perf_counter()
    out = {"added": 0, "removed": 0, "repaired": 0, "rebuilt": 0, "checked": 0}
    gone_keys = np.unique(np.asarray(gone_keys, dtype=np.uint64))
    folder = places.beside(store.path, places.ANN)
    key = str(store.path.resolve())
    left = _left.pop(key, None)  # taken back now: an apply that fails leaves none
    with store.read() as con:  # one connection for all of it: each open costs ~20 ms
        # The saved sessions' spaces, with their newest ingest (a filter on session ids is
        # pruned by the row groups' ranges: segments are stored session by session).
        saved = {Space(m, _dim_of(store, con, m)): (t, ts) for m, t, ts in con.execute(
            f"SELECT coalesce(r.model, ''), max(s.ingested_at), max(s.ingested_at)::VARCHAR "
            f"{SPACE_ROWS} AND g.session_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL",
            [list(session_ids)]).fetchall()}
        # Other spaces only when they hold a row being replaced (a re-ingest by another model).
        others = {s for s in _saved_spaces(folder) - set(saved)
                  if _holds_any(store, s, gone_keys)}
        rows, latest, newest = _marks(con, session_ids)
        held = dict(left.held) if left else {}
        writers = {}
        try:
            for space in saved.keys() | others:
                w = writers[space] = _open_writable(store, space)
                if gone_keys.size:
                    out["removed"] += w.remove(gone_keys)
                if space in saved and len(saved) == 1 and vectors is not None \
                        and vectors[1].ndim == 2 and vectors[1].shape[1] == space.dim:
                    out["added"] += w.add(np.asarray(vectors[0], dtype=np.uint64), vx.normalised(
                        vectors[1], space.dim).astype(np.float16))
                elif space in saved:
                    for keys, vecs in _rows(con, space, " AND g.session_id IN "
                                            "(SELECT unnest(?::VARCHAR[]))", [list(session_ids)]):
                        out["added"] += w.add(keys, vecs)
                held[space] = w.fingerprint().count
            # Incremental only where the saved sessions are the store's newest (the stamp).
            quick = not others and _unchanged_since(left, rows, latest, held) and all(
                latest is None or t > latest for t, _ in saved.values())
            for space, w in writers.items():
                if quick:
                    w.save(stamp=saved[space][1])
                    _compact_if_due(w)
                else:
                    out["checked"] += 1
                    _check_and_save(con, space, w, out)
                    held[space] = w.fingerprint().count
        finally:
            for w in writers.values():
                w.close()
    _left[key] = _Left(rows, newest, held)
    out["seconds"] = time.perf_counter() - t0
    return out


def running_fingerprint(store: Store, space: Space) -> Fingerprint:
    """The fingerprint the index of `space` holds now, from its manifest and deltas: what the
    incremental check trusts to equal the store's (`state`)."""
    with vx.VectorIndex.open(path_of(store, space), space.model, space.dim) as ix:
        return ix.fingerprint()


def forget(store: Store, segment_keys: np.ndarray) -> int:
    """After an erasure: its rows leave every index beside the store (idempotent)."""
    folder = places.beside(store.path, places.ANN)
    removed = 0
    out = {"added": 0, "removed": 0, "repaired": 0, "rebuilt": 0}
    with store.read() as con:
        for space in _saved_spaces(folder):
            with _open_writable(store, space) as w:
                held = w.remove(np.asarray(segment_keys, dtype=np.uint64))
                removed += held
                _check_and_save(con, space, w, out)
            if held:  # tombstones hide the rows; a compaction takes them out of the files
                index_compact.compact(path_of(store, space), wait=True)
    return removed


def _holds_any(store: Store, space: Space, keys: np.ndarray) -> bool:
    if not keys.size:
        return False
    try:
        with vx.VectorIndex.open(path_of(store, space), space.model, space.dim) as ix:
            return bool(ix.contains(keys).any())
    except vx.IndexUnusable:
        return True  # repaired from the store when opened for writing


def _saved_spaces(folder: Path) -> set[Space]:
    """The spaces that have an index saved in `folder` (read from their manifests)."""
    import json
    out = set()
    for p in folder.glob("*.json") if folder.is_dir() else ():
        try:
            m = json.loads(p.read_text())
            out.add(Space(str(m["model"]), int(m["dim"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a broken manifest: rebuilt when its space is next touched or searched
    return out


def _check_and_save(con: Connection, space: Space, w: vx.VectorIndex, out: dict) -> None:
    """Make `w` hold exactly the store's rows of `space` (repairing a missed update from the
    store), then save it stamped with the store's stamp."""
    fp, stamp = state(con, space)
    if w.fingerprint() != fp:
        missing, extra = w.diff(_store_keys(con, space))
        if len(missing) + len(extra) > REPAIR_SHARE * max(fp.count, 1000):
            out["rebuilt"] += 1
            w.reset()  # a fresh base, built here: rows that many are no delta
            missing = None
        else:
            w.remove(extra)
            out["repaired"] += len(missing) + len(extra)
        where, params = ("", []) if missing is None else (
            f" AND list_contains(?::UBIGINT[], {KEY})", [missing.tolist()])
        if missing is None or len(missing):
            for keys, vecs in _rows(con, space, where, params):
                w.add(keys, vecs)
    w.save(stamp=stamp)
    _compact_if_due(w)


def _compact_if_due(w: vx.VectorIndex) -> None:
    if w.delta_rows >= w.params.compact_rows:
        index_compact.compact_soon(w.path)


# The writer calls this after every commit, holding `committing` around it (core.storage.commit_hooks).
commit_hooks.register(commit_hooks.CommitHook(
    "vectors", after=lambda store, c: apply(store, c.session_ids, c.gone_keys, c.vectors),
    holding=committing))
