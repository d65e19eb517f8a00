"""The Reader's reads for the indexes beside the store: a segment's place in the ANN index,
the keys a filtered similarity search may return, hits' metadata, pattern runs, and the
sessions a word search may return (core.index.similar, core.index.pattern_runs,
core.index.word_search).

`IndexReads` is part of core.storage.queries.Reader: every read here is scoped by the Reader's
one `_sessions_where`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.storage.session_filter import EVERY, SESSION_DATE, SessionFilter
from core.storage.vector_keys import key_sql

# A segment's key in the ANN index (core.storage.vector_keys), stored or computed for older rows.
SEGMENT_KEY = f"coalesce(g.segment_key, {key_sql('g.segment_id')})"
# What a hit shows of its segment (core.index.similar.META_COLUMNS).
EMBEDDING_META = ("g.segment_id, g.session_id, g.speaker, g.label, g.confidence, g.start_s, "
                  "g.end_s, s.team, coalesce(s.recorded_at, s.ingested_at) AS \"when\"")


class IndexReads:
    """Scoped reads for similar moments, patterns and word search (mixed into Reader)."""

    def segment_space(self, segment_id: str) -> dict | None:
        """A segment the viewer may see, with the model and embedding length of the index that
        holds it and its key there; None when it is out of scope or does not exist."""
        cond, params = self._sessions_where(EVERY)
        rows = self._query(
            f"SELECT {EMBEDDING_META}, g.channel, {SEGMENT_KEY} AS segment_key, "
            "coalesce(r.model, '') AS model, len(g.embedding) AS dim FROM segments g "
            "JOIN sessions s USING (session_id) LEFT JOIN runs r USING (run_id) "
            f"WHERE g.segment_id = ? AND {cond}", [segment_id, *params])
        return None if rows.empty else rows.iloc[0].to_dict()

    def segment_keys(self, model: str, dim: int, f: SessionFilter = EVERY, speakers=None,
                     labels=None, teams=None, session_id: str | None = None) -> np.ndarray:
        """Keys (uint64) of the segments in the (model, dim) index that the viewer may see and
        the filters admit: what a filtered similarity search may return. `session_id`: only
        that session's (what a search leaves out)."""
        cond, params = self._sessions_where(f)
        for col, vals in (("g.speaker", speakers), ("g.label", labels), ("s.team", teams)):
            if vals:
                cond += f" AND list_contains(?::VARCHAR[], {col})"
                params.append(list(vals))
        if session_id is not None:
            cond += " AND g.session_id = ?"
            params.append(session_id)
        with self.store.read() as con:
            got = con.execute(
                f"SELECT {SEGMENT_KEY} AS k FROM segments g JOIN sessions s USING (session_id) "
                "LEFT JOIN runs r USING (run_id) WHERE g.embedding IS NOT NULL "
                "AND coalesce(r.model, '') = ? "  # a model's embeddings have one size (`dim`)
                f"AND {cond}", [model, *params]).fetchnumpy()["k"]
        return np.asarray(got, dtype=np.uint64)

    def segments_by_key(self, keys) -> pd.DataFrame:
        """Metadata (core.index.similar.META_COLUMNS + segment_key) of the segments with these keys
        that the viewer may see."""
        cond, params = self._sessions_where(EVERY)
        return self._query(
            f"SELECT {EMBEDDING_META}, {SEGMENT_KEY} AS segment_key FROM segments g "
            "JOIN sessions s USING (session_id) WHERE list_contains(?::UBIGINT[], "
            f"{SEGMENT_KEY}) AND {cond}", [[int(k) for k in keys], *params])

    def patterns(self) -> pd.DataFrame:
        """The patterns of the latest `emoscope patterns` run (run_id, pattern, model, k, size
        over the whole store, created_at); empty when none was made."""
        if "patterns" not in self.tables():
            return pd.DataFrame(columns=["run_id", "pattern", "model", "dim", "k", "size"])
        return self._query(
            "SELECT * FROM patterns WHERE run_id = (SELECT run_id FROM patterns "
            "ORDER BY created_at DESC, run_id DESC LIMIT 1) ORDER BY pattern")

    def pattern_segments(self, f: SessionFilter = EVERY, sample: int | None = None,
                         representatives: bool = False) -> pd.DataFrame:
        """Segments of the latest pattern run the viewer may see, with core.index.patterns'
        metadata columns, pattern, similarity to its centroid, rank as a representative and
        map coordinates. `sample`: at most that many, a seeded sample (for the map);
        `representatives`: only the representative moments."""
        cond, params = self._sessions_where(f)
        if representatives:
            cond += " AND p.representative IS NOT NULL"
        sql = (
            "SELECT g.segment_id, g.session_id, g.speaker, g.label, s.team, s.agent_id, "
            f"s.customer_id, {SESSION_DATE.format(a='s')} AS \"when\", g.start_s, g.end_s, "
            "g.confidence, p.pattern, p.similarity, p.representative, p.x, p.y, p.run_id "
            "FROM segment_patterns p JOIN segments g USING (segment_id) "
            "JOIN sessions s ON s.session_id = g.session_id "
            "WHERE p.run_id = (SELECT run_id FROM patterns ORDER BY created_at DESC, "
            f"run_id DESC LIMIT 1) AND {cond}")
        if sample:  # sampled after the scope and filters (a sample in FROM would come first)
            sql = f"SELECT * FROM ({sql}) USING SAMPLE reservoir({int(sample)} ROWS) REPEATABLE (7)"
        return self._query(sql, params)

    def search_sessions(self, f: SessionFilter = EVERY, teams=None) -> pd.DataFrame:
        """The sessions the reader may see that `f` (and any of `teams`) admits — the only ones
        a word search may return moments of — with what a hit shows of its session: date,
        team, agent, file name."""
        cond, params = self._sessions_where(f)
        if teams:
            cond += " AND list_contains(?::VARCHAR[], s.team)"
            params.append(list(teams))
        return self._query(
            f"SELECT s.session_id, {SESSION_DATE.format(a='s')} AS \"when\", s.team, "
            f"s.agent_id, s.file_name FROM sessions s WHERE {cond}", params)

