"""The Reader's reads for calibration (core.storage.corrections, core.storage.heads): stored
and pending corrections, the corrected moments a head is trained on, the heads and which one
is active.

`CalibrationReads` is part of core.storage.queries.Reader: every read of session data here is
scoped by the Reader's one `_sessions_where`."""
from __future__ import annotations


import pandas as pd

from core.storage import corrections
from core.storage.session_filter import EVERY, SessionFilter


class CalibrationReads:
    """Scoped reads of corrections and heads (mixed into Reader)."""

    def active_head(self) -> tuple[str, str | None] | None:
        """(NAME@vN, the model it was trained on) of the active head, or None."""
        if "head_activations" not in self.tables():
            return None
        row = self._query(
            "SELECT a.head, h.model FROM (SELECT head FROM head_activations ORDER BY n DESC "
            "LIMIT 1) a JOIN heads h ON a.head = h.name || '@v' || h.version")
        return (row["head"].iloc[0], row["model"].iloc[0]) if len(row) else None


    def corrections(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """Stored corrections of the sessions `f` covers, oldest first, each beside the label
        the segment shows now and the model's own (`base_label`)."""
        if "corrections" not in self.tables():
            return pd.DataFrame(columns=[*corrections.COLUMNS[:-1], "shown", "base_label"])
        cond, params = self._in(f, "c.session_id")
        return self._query(
            "SELECT c.correction_id, c.segment_id, c.session_id, c.label, c.reviewer, "
            "c.created_at, g.label AS shown, coalesce(g.base_label, g.label) AS base_label "
            "FROM corrections c JOIN segments g USING (segment_id) "
            f"WHERE {cond} ORDER BY c.created_at, c.correction_id", params)

    def corrections_with_pending(self, spool, f: SessionFilter = EVERY) -> pd.DataFrame:
        """Stored corrections and those still in the spool (`pending`), in scope."""
        waiting = corrections.pending(spool)
        return corrections.visible(self.corrections(f), waiting,
                                   self._spooled_in_scope(waiting, f))

    def corrected_moments(self, f: SessionFilter = EVERY) -> pd.DataFrame:
        """Each corrected segment once, with its newest correction, the model's own label and
        its embedding: what a head is trained and judged on."""
        cond, params = self._in(f, "c.session_id")
        return self._query(
            "SELECT c.segment_id, c.session_id, arg_max(c.label, c.created_at) AS label, "
            "any_value(coalesce(g.base_label, g.label)) AS base_label, "
            "any_value(g.embedding) AS embedding, any_value(r.model) AS model "
            "FROM corrections c JOIN segments g USING (segment_id) "
            "JOIN sessions s ON s.session_id = g.session_id LEFT JOIN runs r USING (run_id) "
            f"WHERE g.embedding IS NOT NULL AND {cond} GROUP BY c.segment_id, c.session_id "
            "ORDER BY c.segment_id", params)

    def heads(self) -> pd.DataFrame:
        """Every trained head, newest first (no session data: figures over corrections)."""
        if "heads" not in self.tables():
            return pd.DataFrame()
        return self._query("SELECT * FROM heads ORDER BY trained_at DESC, name, version DESC")

    def head_activations(self) -> pd.DataFrame:
        if "head_activations" not in self.tables():
            return pd.DataFrame()
        return self._query("SELECT * FROM head_activations ORDER BY n")

