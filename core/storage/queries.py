"""Every read of stored sessions that the dashboard, the API, the exports and the CLI make: the
scoped SQL gateway.

`Reader` runs them for one viewer (core.guard.access.Viewer); each read takes its filter as one
`SessionFilter` (core.storage.session_filter), and every read — including those of one session,
one segment, or a session's audio — is restricted to sessions that pass
`Reader._sessions_where`, the single place where the rows a reader may see are decided: the
viewer's scope becomes SQL there and nowhere else. Reads for the indexes and for calibration
live beside it (core.storage.index_reads, core.storage.calibration_reads) and go through the
same condition. Reads return frames; what is computed from them (roll-ups, baselines,
journeys, re-judged alerts) is in core.insight, as functions that take a Reader.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import pandas as pd

from core.analysis import rejudge
from core.analysis.rules import SEVERITY_RANK
from core.base.labels import NEGATIVE
from core.base.times import as_timestamp
from core.guard.access import Viewer
from core.storage import analysers, notes
from core.storage.calibration_reads import CalibrationReads
from core.storage.index_reads import IndexReads
from core.storage.session_filter import (EVERY, EVERY_INCL_FAILED, SESSION_DATE,  # noqa: F401
                                         SessionFilter)
from core.storage.store import Store

__all__ = ["AudioUnavailable", "EVERY", "EVERY_INCL_FAILED", "Reader", "SessionFilter"]


class AudioUnavailable(Exception):
    """A session's recording cannot be played; the message says why in one line (and never
    tells apart a session out of the viewer's scope from one that does not exist)."""


class Reader(IndexReads, CalibrationReads):
    """The scoped SQL gateway: every read of session data, for one viewer."""

    def __init__(self, store: Store, viewer: Viewer, audio_root: str | Path | None = None):
        """`viewer` decides which sessions every read covers (core.guard.access.operator() for the
        machine's own commands); `audio_root` resolves source paths stored relative to it."""
        if not isinstance(viewer, Viewer):
            raise TypeError("Reader needs the viewer whose scope it reads with")
        self.store, self.viewer = store, viewer
        self.audio_root = Path(audio_root) if audio_root else None

    # -- the one place that decides which sessions a read covers -------------------------------
    def _sessions_where(self, f: SessionFilter, a: str = "s") -> tuple[str, list]:
        """SQL condition over `sessions` aliased `a`, and its parameters: the viewer's scope
        first, then the filter."""
        where, params = [], []
        scope = self.viewer.scope
        if not scope.everything:
            allowed = []
            if scope.teams:
                allowed.append(f"list_contains(?::VARCHAR[], {a}.team)")
                params.append(sorted(scope.teams))
            if scope.tags:
                allowed.append(f"list_has_any(coalesce({a}.tags, []), ?::VARCHAR[])")
                params.append(sorted(scope.tags))
            where.append("(" + " OR ".join(allowed) + ")" if allowed else "false")
        else:
            where.append("true")
        for col, val in (("agent_id", f.agent), ("customer_id", f.person), ("team", f.team)):
            if val is not None:
                where.append(f"{a}.{col} = ?")
                params.append(val)
        for op, val in ((">=", f.since), ("<", f.until)):
            if as_timestamp(val) is not None:
                where.append(f"{SESSION_DATE.format(a=a)} {op} ?")
                params.append(as_timestamp(val))
        if f.categories:
            where.append(f"EXISTS (SELECT 1 FROM session_categories c_ WHERE c_.session_id = "
                         f"{a}.session_id AND list_contains(?::VARCHAR[], c_.category))")
            params.append(list(f.categories))
        if f.ok_only:
            where.append(f"{a}.status = 'ok'")
        if f.session_ids is not None:
            where.append(f"list_contains(?, {a}.session_id)")
            params.append(list(f.session_ids))
        return " AND ".join(where), params

    def _in(self, f: SessionFilter, col: str = "session_id") -> tuple[str, list]:
        """`col IN (the sessions f covers)`, for tables keyed by session_id."""
        cond, params = self._sessions_where(f, "s_")
        return f"{col} IN (SELECT s_.session_id FROM sessions s_ WHERE {cond})", params

    def _query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        return self.store.query(sql, params)

    # -- the store as a whole ---------------------------------------------------------------
    def tables(self) -> set[str]:
        return set(self._query("SELECT table_name FROM information_schema.tables").table_name)

    def counts(self) -> dict[str, int]:
        """Rows of each table that belong to sessions the viewer sees (runs: all of them)."""
        cond, params = self._in(EVERY_INCL_FAILED)
        with self.store.read() as con:
            out = {t: con.execute(f"SELECT count(*) FROM {t} WHERE {cond}", params).fetchone()[0]
                   for t in ("sessions", "segments", "frames", "channels", "utterances")}
            out["runs"] = con.execute("SELECT count(*) FROM runs").fetchone()[0]
        return out

    def runs(self) -> pd.DataFrame:
        return self._query("SELECT * FROM runs ORDER BY started_at")

    def n_sessions(self, f: SessionFilter = EVERY_INCL_FAILED) -> int:
        cond, params = self._sessions_where(f)
        return int(self._query(f"SELECT count(*) AS n FROM sessions s WHERE {cond}",
                               params).n.iloc[0])

    def known_values(self, column: str) -> list[str]:
        """The distinct values of a session column (team, agent_id, customer_id) among the
        sessions this reader may see, sorted: what a choice offers, what a typo is told."""
        if column not in ("team", "agent_id", "customer_id"):
            raise ValueError(f"not a session choice: {column}")
        cond, params = self._sessions_where(EVERY)
        return [str(v) for v in self._query(
            f"SELECT DISTINCT s.{column} AS v FROM sessions s WHERE {cond} AND s.{column} "
            "IS NOT NULL ORDER BY 1", params).v]

    def newest_day(self, f: SessionFilter = EVERY) -> dt.date | None:
        """The day of the newest session passing `f`: what "latest week" counts back from."""
        cond, params = self._sessions_where(f)
        got = self._query(f"SELECT max({SESSION_DATE.format(a='s')}) AS d FROM sessions s "
                          f"WHERE {cond}", params).d.iloc[0]
        return None if pd.isna(got) else pd.Timestamp(got).date()

    def models(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """The models behind the sessions, whether each was trained, and the head that labels
        its segments (core/storage/heads; None: the model's own labels)."""
        cond, params = self._sessions_where(f)
        out = self._query(
            "SELECT r.model, any_value(r.weights) AS weights, r.trained, count(*) AS sessions "
            "FROM sessions s "
            f"JOIN runs r USING (run_id) WHERE {cond} GROUP BY ALL ORDER BY sessions DESC",
            params)
        head = self.active_head()
        return out.assign(head=[head[0] if head and head[1] in (None, m) else None
                                for m in out.model])

    def latest_model(self) -> tuple[str, str | None] | None:
        """(name, path) of the model behind the newest stored session: the one whose
        embeddings a query clip must be compared with."""
        cond, params = self._sessions_where(EVERY)
        rows = self._query("SELECT r.model, r.model_path FROM sessions s JOIN runs r "
                           f"USING (run_id) WHERE {cond} ORDER BY s.ingested_at DESC LIMIT 1",
                           params)
        return None if rows.empty else (rows.model.iloc[0], rows.model_path.iloc[0])

    # -- sessions ------------------------------------------------------------------------
    def sessions(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """Sessions passing `f`, oldest first: what exports list."""
        cond, params = self._sessions_where(f)
        return self._query(
            f"SELECT session_id, file_name, {SESSION_DATE.format(a='s')} AS \"when\", "
            f"duration_s, agent_id, customer_id, team FROM sessions s WHERE {cond} "
            "ORDER BY \"when\", session_id", params)

    def session_rows(self, f: SessionFilter = EVERY_INCL_FAILED) -> pd.DataFrame:
        """Whole `sessions` rows, failed ones included by default."""
        cond, params = self._sessions_where(f)
        return self._query(f"SELECT * FROM sessions s WHERE {cond} "
                           "ORDER BY recorded_at, session_id", params)

    def summary(self, f: SessionFilter = EVERY_INCL_FAILED) -> pd.DataFrame:
        """One row per session with what the overview filters and sorts on, most severe first:
        speakers, quality and alert flags, alert count and worst severity, volatility, talk
        time, negative share and dominant label. Lists are built in SQL, never NULL."""
        cond, params = self._sessions_where(f)
        base = self._query(
            "WITH ch AS (SELECT session_id, list_sort(list_distinct(list(speaker))) AS speakers, "
            "  list_sort(list_distinct(flatten(list(coalesce(flags, []))))) AS qflags "
            "  FROM channels GROUP BY 1), "
            "al AS (SELECT session_id, count(*) AS n_alerts, max(CASE severity "
            + " ".join(f"WHEN '{k}' THEN {v}" for k, v in SEVERITY_RANK.items())
            + " ELSE 1 END) AS severity_rank, "
            "  list_sort(list_distinct(list(rule))) AS alert_rules FROM alerts GROUP BY 1), "
            "vol AS (SELECT session_id, volatility FROM session_metrics WHERE speaker = 'all'), "
            "cat AS (SELECT session_id, list_sort(list_distinct(list(category))) AS categories "
            "  FROM session_categories GROUP BY 1) "
            "SELECT s.session_id, s.file_name, s.source_path, s.status, s.error, s.duration_s, "
            "s.n_channels, s.agent_id, s.customer_id, s.team, coalesce(s.tags, []) AS tags, "
            f"{SESSION_DATE.format(a='s')} AS \"when\", s.run_id, "
            "coalesce(ch.speakers, []) AS speakers, coalesce(ch.qflags, []) AS quality_flags, "
            "list_sort(list_distinct(list_concat(coalesce(ch.qflags, []), "
            "  coalesce(al.alert_rules, [])))) AS flags, "
            "coalesce(al.n_alerts, 0)::INTEGER AS alerts, "
            "coalesce(al.severity_rank, 0)::INTEGER AS severity_rank, vol.volatility, "
            "coalesce(cat.categories, []) AS categories "
            "FROM sessions s LEFT JOIN ch USING (session_id) LEFT JOIN al USING (session_id) "
            f"LEFT JOIN vol USING (session_id) LEFT JOIN cat USING (session_id) WHERE {cond}",
            params)
        mix = self.label_seconds(f).groupby(["session_id", "label"], as_index=False,
                                            observed=True).seconds.sum()
        talk = mix.groupby("session_id").seconds.sum()
        neg = mix[mix.label.isin(NEGATIVE)].groupby("session_id").seconds.sum()
        dom = (mix.sort_values(["session_id", "seconds"], ascending=[True, False])
               .drop_duplicates("session_id").set_index("session_id").label)
        base["talk_s"] = base.session_id.map(talk).fillna(0.0)
        base["negative_share"] = (base.session_id.map(neg).fillna(0.0)
                                  / base.talk_s.where(base.talk_s > 0)).astype(float)
        base["dominant"] = base.session_id.map(dom)
        inv = {v: k for k, v in SEVERITY_RANK.items()}
        base["severity"] = base.severity_rank.map(inv).fillna("")
        base["when"] = pd.to_datetime(base["when"])
        base["session_id"] = base.session_id.astype(object)  # fast isin/map on plain strings
        return base.sort_values(["severity_rank", "alerts", "negative_share", "when"],
                                ascending=[False, False, False, False],
                                na_position="last").reset_index(drop=True)

    def jobs(self, limit: int = 500, job_id: str | None = None) -> pd.DataFrame:
        """The worker's queue, newest first: jobs whose upload metadata (team, tags) the viewer's
        scope covers — the same condition as for sessions, over the job's metadata."""
        cond, params = self._sessions_where(EVERY_INCL_FAILED, "j")
        if job_id is not None:
            cond += " AND j.job_id = ?"
            params.append(job_id)
        # A job's session is shown only when the viewer may see that session too: the same
        # audio uploaded by another team is "done" here, without its session id or the
        # worker's "already stored", which would tell this team about the other's recording.
        seen, seen_params = self._sessions_where(EVERY_INCL_FAILED, "s")
        return self._query(
            "SELECT job_id, original_name, file_name, status, CASE WHEN j.session_id IS NULL "
            "OR v.seen IS NOT NULL THEN j.error END AS error, v.seen AS session_id, attempts, "
            "size_bytes, created_at, started_at, finished_at FROM (SELECT *, "
            "json_extract_string(metadata, '$.team') AS team, "
            "coalesce(CAST(json_extract(metadata, '$.tags') AS VARCHAR[]), []) AS tags "
            f"FROM jobs) j LEFT JOIN (SELECT s.session_id AS seen FROM sessions s WHERE {seen}) "
            f"v ON v.seen = j.session_id WHERE {cond} ORDER BY created_at DESC, job_id DESC "
            "LIMIT ?", [*seen_params, *params, int(limit)])

    def job(self, job_id: str) -> dict | None:
        """One job of the queue, when the viewer's scope covers its upload; else None (as for
        a job that does not exist)."""
        rows = self.jobs(1, job_id)
        return None if rows.empty else rows.iloc[0].to_dict()

    # -- one session -----------------------------------------------------------------------
    def audio_path(self, session_id: str) -> Path:
        """The recording of a session the viewer may hear, or AudioUnavailable.

        Every player goes through here: the session must pass the viewer's scope, a relative
        source path resolves against the configured audio root only (never the reader's own
        folder), and the file must still be there."""
        cond, params = self._sessions_where(SessionFilter.of(session_id))
        rows = self._query(f"SELECT source_path FROM sessions s WHERE {cond}", params)
        if rows.empty:
            raise AudioUnavailable(f"no session {session_id}")
        stored = Path(str(rows.source_path.iloc[0]))
        if not stored.is_absolute():
            if self.audio_root is None:
                raise AudioUnavailable(f"the recording was stored as the relative path {stored} "
                                       "and no [storage] audio_root is configured")
            stored = self.audio_root / stored
        if not stored.is_file():
            raise AudioUnavailable(f"the recording is no longer at {stored}")
        return stored

    def segments(self, session_id: str) -> pd.DataFrame:
        cond, params = self._in(SessionFilter.of(session_id))
        return self._query("SELECT * EXCLUDE (embedding) FROM segments WHERE session_id = ? "
                           f"AND {cond} ORDER BY start_s, channel", [session_id, *params])

    def frames(self, session_id: str) -> pd.DataFrame:
        cond, params = self._in(SessionFilter.of(session_id))
        return self._query(f"SELECT * FROM frames WHERE session_id = ? AND {cond} "
                           "ORDER BY channel, t_s", [session_id, *params])

    # -- what was said (core/text/transcripts.py) ----------------------------------------------------
    def utterances(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """Utterances of the sessions `f` covers, in time order within each session: who said
        what, when, in which language, by which backend (`emotion`: the backend's own tag), and
        how it sounded: emotion2vec's `label` and `label_confidence` of the segment on its
        channel that overlaps it most (None where none does); and voice and words together
        (core/analysis/fusion): `voice` (the overlapping segments' scores read as one label), `fused`,
        its `turn` and the turn's `turn_fused`."""
        cond, params = self._in(f)
        return self._query(
            f"WITH u AS (SELECT * FROM utterances WHERE {cond}), "
            "o AS (SELECT u.utterance_id, g.label, g.confidence, "
            "  least(u.end_s, g.end_s) - greatest(u.start_s, g.start_s) AS overlap "
            "  FROM u JOIN segments g ON g.session_id = u.session_id "
            "  AND g.channel = u.channel AND g.start_s < u.end_s AND g.end_s > u.start_s), "
            "best AS (SELECT utterance_id, arg_max(label, overlap) AS label, "
            "  arg_max(confidence, overlap) AS label_confidence FROM o GROUP BY 1) "
            "SELECT u.utterance_id, u.session_id, u.channel, u.speaker, u.start_s, u.end_s, "
            "u.text, u.language, u.confidence, u.asr_model, u.emotion, u.sentiment, "
            "u.sentiment_source, best.label, best.label_confidence, u.voice, u.fused, u.turn, "
            "u.turn_fused FROM u LEFT JOIN best USING (utterance_id) "
            "ORDER BY u.session_id, u.start_s, u.channel", params)

    def transcript(self, session_id: str) -> pd.DataFrame:
        """One session's `utterances`."""
        return self.utterances(SessionFilter.of(session_id)).reset_index(drop=True)

    def categories(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """The categories (core/analysis/categories) the sessions `f` covers carry: one row per session
        and category, with the first utterance that met it."""
        cond, params = self._in(f)
        return self._query(
            "SELECT session_id, category, severity, speaker, t_s, utterance_id, n_utterances "
            f"FROM session_categories WHERE {cond} ORDER BY session_id, t_s, category", params)

    def words(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """Words with their times, of the sessions `f` covers, in utterance order."""
        cond, params = self._in(f)
        return self._query(
            "SELECT utterance_id, session_id, n, word, start_s, end_s, confidence FROM words "
            f"WHERE {cond} ORDER BY session_id, utterance_id, n", params)

    def audio_events(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """Non-speech sounds the backend heard (laughter, crying...), in time order."""
        cond, params = self._in(f)
        return self._query(
            "SELECT session_id, channel, start_s, end_s, event, source FROM audio_events "
            f"WHERE {cond} ORDER BY session_id, start_s, channel", params)

    def channels(self, session_id: str) -> pd.DataFrame:
        cond, params = self._in(SessionFilter.of(session_id))
        return self._query(f"SELECT * FROM channels WHERE session_id = ? AND {cond} "
                           "ORDER BY channel", [session_id, *params])

    def analysis_rows(self, session_id: str, table: str) -> pd.DataFrame:
        """One session's rows of an analyser's table (core.storage.analysers), in order."""
        if table not in {t.name for t in analysers.tables()}:
            raise ValueError(f"no analyser table {table!r}")
        cond, params = self._in(SessionFilter.of(session_id))
        return self._query(f"SELECT * EXCLUDE (n) FROM {table} WHERE session_id = ? "
                           f"AND {cond} ORDER BY n", [session_id, *params])

    def segment(self, segment_id: str) -> pd.DataFrame:
        cond, params = self._in(EVERY)
        return self._query(f"SELECT * FROM segments WHERE segment_id = ? AND {cond}",
                           [segment_id, *params])

    # -- across sessions -------------------------------------------------------------------
    def label_seconds(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """Seconds of speech per (session, speaker role, label): the emotion mix at any
        grouping, for any set of roles."""
        cond, params = self._in(f)
        return self._query("SELECT session_id, speaker, label, sum(end_s - start_s) AS seconds "
                           f"FROM segments WHERE {cond} GROUP BY ALL", params)

    def session_metrics(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """session_metrics rows with each session's metadata (agent, customer, team, dates)."""
        cond, params = self._sessions_where(f)
        return self._query(
            "SELECT m.*, s.agent_id, s.customer_id, s.team, s.tags, s.recorded_at, "
            "s.ingested_at, s.duration_s, s.file_name FROM session_metrics m JOIN sessions s "
            f"USING (session_id) WHERE {cond} ORDER BY s.recorded_at, m.session_id, "
            "m.speaker = 'all', m.speaker", params)

    def alerts(self, f: SessionFilter = EVERY, speaker: str | None = None,
               rule: str | None = None, severity: str | None = None) -> pd.DataFrame:
        """Alerts with session metadata, newest session first."""
        cond, params = self._sessions_where(f)
        for col, val in (("speaker", speaker), ("rule", rule), ("severity", severity)):
            if val is not None:
                cond += f" AND a.{col} = ?"
                params.append(val)
        return self._query(
            "SELECT a.*, s.agent_id, s.customer_id, s.team, s.recorded_at, s.ingested_at, "
            f"s.file_name FROM alerts a JOIN sessions s USING (session_id) WHERE {cond} "
            f"ORDER BY {SESSION_DATE.format(a='s')} DESC, a.session_id, a.t_s, a.speaker, "
            "a.rule", params)

    def volatility_peaks(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """Where each (session, speaker)'s rolling volatility peaks: the moment to drill to."""
        cond, params = self._in(f)
        return self._query(
            "SELECT session_id, speaker, arg_max(start_s, rolling_volatility) AS peak_t_s "
            f"FROM segments WHERE rolling_volatility IS NOT NULL AND {cond} GROUP BY ALL",
            params)

    def judge_segments(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """What re-judging alerts reads per segment (no scores, no embedding)."""
        cond, params = self._in(f)
        return self._query(f"SELECT {', '.join(rejudge.SEGMENT_COLUMNS)} FROM segments "
                           f"WHERE {cond} ORDER BY session_id", params)

    def channel_flags(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """session_id, channel, speaker and quality flags of every channel."""
        cond, params = self._in(f)
        return self._query("SELECT session_id, channel, speaker, flags FROM channels "
                           f"WHERE {cond} ORDER BY session_id, channel", params)

    def notes(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """Stored notes on the sessions, oldest first (core.storage.notes.visible adds pending ones)."""
        if "notes" not in self.tables():
            return pd.DataFrame(columns=notes.COLUMNS[:-1])
        cond, params = self._in(f)
        return self._query("SELECT note_id, session_id, author, body, created_at FROM notes "
                           f"WHERE {cond} ORDER BY created_at, note_id", params)

    def notes_with_pending(self, spool, f: SessionFilter = EVERY) -> pd.DataFrame:
        """Stored notes and those still waiting in the spool (marked `pending`), of the
        sessions `f` covers: a note shows the moment it is saved."""
        waiting = notes.pending(spool)
        return notes.visible(self.notes(f), waiting, self._spooled_in_scope(waiting, f))

    def _spooled_in_scope(self, waiting: pd.DataFrame, f: SessionFilter) -> set[str]:
        """The sessions of spooled entries (notes, corrections) that `f` and this reader's
        scope cover: the spool itself is not scoped."""
        ids = set(waiting.session_id)
        if f.session_ids is not None:
            ids &= set(f.session_ids)
        if ids:
            ids = set(self.sessions(replace(f, session_ids=tuple(sorted(ids)))).session_id)
        return ids

    def export_segments(self, f: SessionFilter) -> pd.DataFrame:
        """Segments with their embeddings, session metadata and model, for exports."""
        cond, params = self._sessions_where(f)
        # What was said in the segment: the utterances on its channel centred inside it.
        said = ("(SELECT string_agg(u.text, ' ' ORDER BY u.start_s) FROM utterances u "
                "WHERE u.session_id = g.session_id AND u.channel = g.channel "
                "AND (u.start_s + u.end_s) / 2 BETWEEN g.start_s AND g.end_s)"
                if "utterances" in self.tables() else "NULL::VARCHAR")
        return self._query(
            f"SELECT g.*, {said} AS text, s.file_name, s.agent_id, s.customer_id, s.team, "
            f"{SESSION_DATE.format(a='s')} AS \"when\", r.model, r.trained "
            "FROM segments g JOIN sessions s USING (session_id) LEFT JOIN runs r USING (run_id) "
            f"WHERE {cond} ORDER BY g.session_id, g.start_s, g.channel", params)

