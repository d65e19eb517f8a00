"""The worker's queue: the `jobs` table (migration 0003_jobs), one row per file in the inbox.

queued → running → done | failed. The SQL lives here; connections come from core.storage.store.Store,
which stays the only module that opens the database. A job marked done shares the transaction
of its session's rows (`done_in`), so a crash leaves either both or neither.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pandas as pd

from core.base.times import utc_now

STATUSES = ("queued", "running", "done", "failed")
_COLUMNS = ("job_id, file_name, original_name, status, error, session_id, attempts, size_bytes, "
            "mtime_ns, metadata")


def new_job_id() -> str:
    return f"j{utc_now():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Job:
    job_id: str
    file_name: str  # the name in the inbox
    original_name: str | None  # what the uploader called it; shown, never used as a path
    status: str
    error: str | None
    session_id: str | None
    attempts: int
    size_bytes: int | None
    mtime_ns: int | None
    metadata: dict

    @classmethod
    def from_row(cls, row) -> "Job":
        *head, meta = row
        try:
            metadata = json.loads(meta) if meta else {}
        except (TypeError, ValueError):
            metadata = {}
        return cls(*head, metadata if isinstance(metadata, dict) else {})


class JobQueue:
    def __init__(self, store, max_attempts: int = 3):
        self.store = store
        self.max_attempts = max_attempts

    def add(self, file_name: str, original_name: str | None = None, size_bytes: int | None = None,
            mtime_ns: int | None = None, metadata: dict | None = None,
            job_id: str | None = None) -> str:
        """Queue a file; `job_id` is the id its uploader was promised (core.intake.inbox.put), used
        unless a job has it already (a file copied in twice), when a new one is made."""
        now = utc_now()
        with self.store.write() as con:
            taken = job_id is None or con.execute(
                "SELECT count(*) FROM jobs WHERE job_id = ?", [job_id]).fetchone()[0]
            job_id = new_job_id() if taken else job_id
            con.execute(f"INSERT INTO jobs ({_COLUMNS}, created_at, updated_at) "
                        "VALUES (?, ?, ?, 'queued', NULL, NULL, 0, ?, ?, ?, ?, ?)",
                        [job_id, file_name, original_name, size_bytes, mtime_ns,
                         json.dumps(metadata or {}), now, now])
        return job_id

    def latest_by_file(self, names: list[str]) -> dict[str, Job]:
        """The newest job for each of these inbox file names (the worker's view)."""
        with self.store.write() as con:
            rows = con.execute(f"SELECT {_COLUMNS} FROM jobs WHERE list_contains(?, file_name) "
                               "ORDER BY created_at, job_id", [list(names)]).fetchall()
        return {job.file_name: job for job in map(Job.from_row, rows)}

    def get(self, job_id: str) -> Job | None:
        with self.store.write() as con:
            row = con.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", [job_id]).fetchone()
        return Job.from_row(row) if row else None

    def recover(self) -> tuple[int, int]:
        """Jobs left `running` by a worker that died: queue them again, or fail those that
        already took the worker down `max_attempts` times. Returns (requeued, failed)."""
        now = utc_now()
        with self.store.write() as con:
            failed = con.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, updated_at = ?, error = "
                "'the worker stopped ' || attempts || ' times while processing this file' "
                "WHERE status = 'running' AND attempts >= ? RETURNING job_id",
                [now, now, self.max_attempts]).fetchall()
            requeued = con.execute(
                "UPDATE jobs SET status = 'queued', updated_at = ?, "
                "error = 'interrupted; queued again' WHERE status = 'running' RETURNING job_id",
                [now]).fetchall()
        return len(requeued), len(failed)

    def claim(self) -> Job | None:
        """The oldest queued job, now running; its attempts count this start."""
        now = utc_now()
        with self.store.write() as con:
            row = con.execute(
                f"UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, "
                f"updated_at = ? WHERE job_id = (SELECT job_id FROM jobs WHERE status = 'queued' "
                f"ORDER BY created_at, job_id LIMIT 1) RETURNING {_COLUMNS}",
                [now, now]).fetchone()
        return Job.from_row(row) if row else None

    def claim_many(self, n: int) -> list[Job]:
        """Up to `n` of the oldest queued jobs, now running, oldest first."""
        now = utc_now()
        with self.store.write() as con:
            ids = [r[0] for r in con.execute(
                "SELECT job_id FROM jobs WHERE status = 'queued' ORDER BY created_at, job_id "
                "LIMIT ?", [int(n)]).fetchall()]
            rows = con.execute(
                f"UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, "
                f"updated_at = ? WHERE list_contains(?, job_id) RETURNING {_COLUMNS}",
                [now, now, ids]).fetchall() if ids else []
        jobs = {j.job_id: j for j in map(Job.from_row, rows)}
        return [jobs[i] for i in ids if i in jobs]

    @staticmethod
    def fail_in(con, job_id: str, reason: str, session_id: str | None = None) -> None:
        """Mark failed on a connection the caller holds, inside the caller's transaction."""
        now = utc_now()
        con.execute("UPDATE jobs SET status = 'failed', error = ?, session_id = ?, "
                    "finished_at = ?, updated_at = ? WHERE job_id = ?",
                    [reason, session_id, now, now, job_id])

    @staticmethod
    def done_in(con, job_id: str, session_id: str | None, note: str | None = None) -> None:
        """Mark done on a connection the caller holds, inside the caller's transaction."""
        now = utc_now()
        con.execute("UPDATE jobs SET status = 'done', session_id = ?, error = ?, finished_at = ?, "
                    "updated_at = ? WHERE job_id = ?", [session_id, note, now, now, job_id])

    def done(self, job_id: str, session_id: str | None, note: str | None = None) -> None:
        with self.store.write() as con:
            self.done_in(con, job_id, session_id, note)

    def fail(self, job_id: str, reason: str, session_id: str | None = None) -> None:
        now = utc_now()
        with self.store.write() as con:
            con.execute("UPDATE jobs SET status = 'failed', error = ?, session_id = ?, "
                        "finished_at = ?, updated_at = ? WHERE job_id = ?",
                        [reason, session_id, now, now, job_id])

    def retry_or_fail(self, job_id: str, reason: str) -> str:
        """A transient error: queue again while attempts remain, else fail. Returns the status."""
        now = utc_now()
        with self.store.write() as con:
            row = con.execute(
                "UPDATE jobs SET status = CASE WHEN attempts < ? THEN 'queued' ELSE 'failed' END, "
                "error = ?, updated_at = ?, finished_at = CASE WHEN attempts < ? THEN NULL "
                "ELSE ? END WHERE job_id = ? RETURNING status",
                [self.max_attempts, reason, now, self.max_attempts, now, job_id]).fetchone()
        return row[0] if row else "failed"

    def release(self, job_id: str) -> None:
        """An operator stopped the worker mid-job: queue it again without counting a try."""
        with self.store.write() as con:
            con.execute("UPDATE jobs SET status = 'queued', attempts = greatest(attempts - 1, 0), "
                        "error = 'worker stopped; queued again', updated_at = ? "
                        "WHERE job_id = ? AND status = 'running'", [utc_now(), job_id])

    def hand_back(self, job_id: str) -> None:
        """The job's file changed after it was taken (still being copied in): the job goes, so
        the file is taken afresh once it has settled (an upload keeps the id it was promised,
        which its sidecar names)."""
        with self.store.write() as con:
            con.execute("DELETE FROM jobs WHERE job_id = ? AND status = 'running'", [job_id])

    def table(self, limit: int = 500) -> pd.DataFrame:
        """Newest jobs first, for display; read-only, so it never blocks the worker for long."""
        return self.store.query(
            "SELECT job_id, original_name, file_name, status, error, session_id, attempts, "
            "size_bytes, created_at, started_at, finished_at FROM jobs "
            "ORDER BY created_at DESC, job_id DESC LIMIT ?", [int(limit)])

    def counts(self) -> dict[str, int]:
        df = self.store.query("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        out = dict.fromkeys(STATUSES, 0)
        out.update(dict(zip(df.status, df.n.astype(int))))
        return out
