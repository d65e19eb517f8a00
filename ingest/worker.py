"""The single writer: turns files in the inbox into jobs and ingests them in batches.

DuckDB allows one writing process, so uploads and copies only drop files into the inbox and
this loop does all the writing, each step in its own short transaction so the dashboard's
read-only connections get in between. The jobs waiting are taken together (up to `batch`):
each is analysed alone, then all are stored in one commit; should that commit fail, each is
stored alone, so a failure stays with its job. A session's rows and its job's `done` share one
transaction; a job interrupted by a crash is queued again on restart, and one that has taken
the worker down `max_attempts` times is failed, so nothing loops and nothing stays `running`.
A database locked by another process is waited out, however long (and said so in the log);
an inbox entry of any name — bytes that are not UTF-8 included, dot-files, files in
sub-folders — becomes a job like any other, and a link or other non-file a named failure.

A file copied in is taken once it has stayed unchanged for `settle_s` (or at once when it is
known whole: an upload, or a finished-copy marker); one that changes after it was taken —
its size or modification time differs from the job's, checked before its rows are written and
again inside their transaction — is handed back to the inbox, never stored short. One worker
runs per store: `run` holds `<db>.worker.lock`, and a second worker stops with a one-line
message naming the first.
"""
from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.storage import corrections, heads, notes
from core.admin import erasure
from core.base import places
from core.storage.audit import AuditLog
from core.base.errors import first_line
from core.intake.inbox import (beat, check_inside, data_dir_of, entry, key_of, known_whole, marker_of,
                        name_of, read_sidecar, requested_job_id, safe_ext, sidecar_of, waiting)
from core.base.private import private_dir, tighten
from core.admin.settings import Retention
from core.intake.jobs import Job, JobQueue
from core.base.names import shown
from core.storage.sessions import SessionWriter
from core.storage.store import StoreBusy
from core.base.types import SessionMeta, SessionResult, session_id_for
from ingest.model import LoadedModel
from ingest.options import IngestOptions
from ingest.pipeline import process_file

log = logging.getLogger("emoscope.worker")


class WorkerBusy(RuntimeError):
    """Another worker already processes this store; the message is one line naming it."""


class FileChanged(Exception):
    """The job's file changed after it was taken (still being copied in): not stored."""


def lock_path(db: Path) -> Path:
    db = Path(db).resolve()
    return places.beside(db, places.WORKER_LOCK, resolve=False)


def hold_worker_lock(db: Path) -> int:
    """The store's worker lock (an open descriptor, held until closed), or WorkerBusy."""
    path = lock_path(db)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        finally:
            os.close(fd)
        raise WorkerBusy(f"another worker (pid {pid}) is already processing {Path(db)}; "
                         "one worker per store — stop it first, or let it do the work") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@dataclass(frozen=True)
class WorkerConfig:
    inbox: Path
    archive: Path | None  # finished files go here; None deletes them
    failed: Path  # files that failed are kept here for a look, out of the inbox
    poll_s: float = 1.0
    settle_s: float = 5.0  # a file copied in must be this long unchanged before it is taken
    max_attempts: int = 3
    retention: Retention = Retention()  # [retention] of emoscope.toml, applied periodically
    housekeeping_s: float = 2.0  # how often the audit spool and erasure requests are handled
    # Jobs taken together: each through the model on its own, then stored in one commit with
    # one index update (a commit's fixed cost — connections, checkpoint, index — is shared).
    batch: int = 16


def default_config(db: Path, inbox: Path | None = None, delete: bool = False,
                   **kw) -> WorkerConfig:
    """Inbox, archive and failed folders inside the database's data directory."""
    data = data_dir_of(db)
    inbox = check_inside(inbox if inbox is not None else places.folder(db, places.INBOX), data,
                         "inbox")
    if inbox == data:
        raise ValueError(f"the inbox must be a folder inside {data}, not the data folder itself")
    return WorkerConfig(inbox=inbox, archive=None if delete else places.folder(db, places.ARCHIVE),
                        failed=places.folder(db, places.FAILED), **kw)


def metadata_to_meta(meta: dict) -> SessionMeta:
    tags = meta.get("tags") or ()
    roles = meta.get("roles") or None
    return SessionMeta(agent_id=meta.get("agent_id"), customer_id=meta.get("customer_id"),
                       team=meta.get("team"), recorded_at=meta.get("recorded_at"),
                       tags=tuple(tags), roles=tuple(roles) if roles else None)


class Worker:
    def __init__(self, writer: SessionWriter, lm: LoadedModel, config: WorkerConfig,
                 opts: IngestOptions = IngestOptions(), echo: Callable[[str], None] = log.info):
        self.writer, self.lm, self.cfg, self.opts, self.echo = writer, lm, config, opts, echo
        from ingest.prosody import use as use_prosody
        from ingest.speech_to_text import use
        self.asr = use(opts.asr)  # every job transcribed with it; None: none
        use_prosody()  # librosa's kernels loaded once, before the first job
        self.store = writer.store
        # The single writer never gives up on a lock held elsewhere: it waits, and says so.
        self.store.retry_s = None
        self.store.on_wait = lambda s: self.echo(
            f"the database has been locked by another process for {s:.0f} s; still waiting")
        self.jobs = JobQueue(self.store, config.max_attempts)
        self.run_id: str | None = None
        self.counts = {"done": 0, "failed": 0, "skipped": 0, "audio_s": 0.0}
        self._seen: dict[str, tuple[int, int]] = {}  # name → (size, mtime) at the last scan
        self.unsettled = 0  # files seen but not yet still long enough to take
        # Called inside the session's transaction just before it commits (tests crash here).
        self.before_commit: Callable[[Job], None] | None = None
        self.audit = AuditLog.beside(self.store.path)
        self._chores_at = {"housekeeping": 0.0, "retention": 0.0}

    # -- the loop ---------------------------------------------------------------------------
    def start(self) -> None:
        private_dir(self.cfg.inbox)
        self.store.migrate()
        requeued, failed = self.jobs.recover()
        if requeued or failed:
            self.echo(f"recovered interrupted jobs: {requeued} queued again, {failed} failed "
                      "after repeated crashes")
        self._tidy_finished()

    def run(self, once: bool = False, stop: Callable[[], bool] = lambda: False) -> dict:
        """Poll the inbox and process jobs; with `once`, stop when nothing is left to do.
        WorkerBusy when another worker already runs on this store."""
        lock = hold_worker_lock(self.store.path)
        try:
            return self._loop(once, stop)
        finally:
            os.close(lock)

    def _loop(self, once: bool, stop: Callable[[], bool]) -> dict:
        self.start()
        last_beat = 0.0
        try:
            while not stop():
                if time.monotonic() - last_beat > 1.0:
                    try:
                        beat(self.cfg.inbox)
                    except OSError:
                        pass  # only the upload page's "is a worker running" note depends on it
                    last_beat = time.monotonic()
                self.chores()
                self.scan()
                worked = self.step()
                if worked:
                    continue
                if once and not self.unsettled:
                    self.chores(force=True)  # spools filled while the last jobs ran are stored
                    break
                time.sleep(self.cfg.poll_s)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run says it was stopped
            self._finish_run("interrupted")
            raise
        self._finish_run("finished")
        return self.counts

    # -- the writer's other duties ------------------------------------------------------------
    def chores(self, force: bool = False) -> None:
        """Fold the audit and notes spools, carry out erasure requests (and finish interrupted
        ones), and apply retention when it is due. A failure is logged and retried later,
        never fatal."""
        now = time.monotonic()
        due = self._chores_at
        if force or now - due["housekeeping"] >= self.cfg.housekeeping_s:
            due["housekeeping"] = now
            try:
                self.audit.fold(self.store)
                stored, problems = notes.fold(self.store, notes.spool_dir(self.store.path))
                for line in ([f"stored {stored} note{'s' if stored != 1 else ''}"]
                             if stored else []) + problems:
                    self.echo(line)
                stored, problems = corrections.fold(self.store,
                                                    corrections.spool_dir(self.store.path))
                for line in ([f"stored {stored} correction{'s' if stored != 1 else ''}"]
                             if stored else []) + problems:
                    self.echo(line)
                for line in heads.resume_requests(self.store, self.writer.rules):
                    self.echo(line)
                for p in erasure.resume_pending(self.store):
                    self.echo(f"erased {p.kind} {p.target}: {len(p.session_ids)} sessions")
            except (StoreBusy, OSError, ValueError) as e:
                self.echo(f"housekeeping postponed: {first_line(e)}")
        if self.cfg.retention.active and \
                (force or now - due["retention"] >= self.cfg.retention.every_s):
            due["retention"] = now
            try:
                out = erasure.apply_retention(self.store, self.cfg.retention)
                if out["sessions"] or out["audio_files"]:
                    self.echo(f"retention: {out['sessions']} sessions and {out['audio_files']} "
                              "recordings past their time erased")
            except (StoreBusy, OSError, ValueError) as e:
                self.echo(f"retention postponed: {first_line(e)}")

    # -- inbox → jobs -----------------------------------------------------------------------
    def _key(self, path: Path) -> str:
        """The jobs table's name for an inbox entry: its path below the inbox."""
        return key_of(os.path.relpath(path, self.cfg.inbox))

    def _waiting(self) -> list[Path]:
        return waiting(self.cfg.inbox, [f for f in (self.cfg.archive, self.cfg.failed) if f])

    def scan(self) -> int:
        """Turn settled inbox files into queued jobs; returns how many were added."""
        files = self._waiting()
        self.unsettled = 0
        if not files:
            return 0
        known = self.jobs.latest_by_file([self._key(p) for p in files])
        added = 0
        now_ns = time.time_ns()
        for path in files:
            try:
                st = path.lstat()
            except OSError:
                continue  # gone between the listing and now
            sig = (st.st_size, st.st_mtime_ns)
            key = self._key(path)
            plain = stat.S_ISREG(st.st_mode)
            settled = not plain or known_whole(path) or (
                self._seen.get(key) == sig
                and now_ns - st.st_mtime_ns >= self.cfg.settle_s * 1e9)
            self._seen[key] = sig
            job = known.get(key)
            if job is not None and job.status in ("queued", "running"):
                continue
            if job is not None and (job.size_bytes, job.mtime_ns) == sig:
                self._put_away(job)  # finished before a crash, but the file was not yet moved
                continue
            if not settled and self.cfg.settle_s > 0:
                self.unsettled += 1
                continue
            original, meta, problem = read_sidecar(path)
            if not plain:
                problem = ("a link, not a file: only plain files are taken" if
                           stat.S_ISLNK(st.st_mode) else "not a plain file (a folder, pipe or "
                           "device): only plain files are taken")
            if problem:
                meta = {"_problem": problem}
            if original is None and key != path.name:
                # The bytes stay on disk; the name (below the inbox) is shown escaped.
                original = shown(os.path.relpath(path, self.cfg.inbox))
            self.jobs.add(key, original, st.st_size, st.st_mtime_ns, meta, requested_job_id(path))
            added += 1
        return added

    def _tidy_finished(self) -> None:
        files = self._waiting()
        known = self.jobs.latest_by_file([self._key(p) for p in files]) if files else {}
        for path in files:
            job = known.get(self._key(path))
            try:
                st = path.lstat()
            except OSError:
                continue
            if job and job.status in ("done", "failed") and \
                    (job.size_bytes, job.mtime_ns) == (st.st_size, st.st_mtime_ns):
                self._put_away(job)

    # -- one job ----------------------------------------------------------------------------
    def step(self) -> bool:
        """Process the queued jobs, up to `batch` of them, oldest first: each analysed on its
        own, then their sessions stored in one commit; each job still fails alone. False when
        there was none."""
        jobs = self.jobs.claim_many(max(1, self.cfg.batch))
        if not jobs:
            return False
        ended: list[tuple[Job, str, str | None]] = []
        ready: list[tuple[Job, SessionResult, str | None]] = []
        try:
            for job in jobs:
                out = self._attempt(job, lambda job=job: self._process(job))
                if isinstance(out[1], SessionResult):
                    ready.append(out)
                else:
                    ended.append(out)
            ended += self._store(ready)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what is not finished is handed back
            over = {j.job_id for j, _, _ in ended}
            for job in jobs:
                if job.job_id not in over:
                    self.jobs.release(job.job_id)
            raise
        for job, status, detail in ended:
            if status in ("done", "failed"):
                self._put_away(self.jobs.get(job.job_id) or job)
                self.counts[status] += 1
            name = job.original_name or shown(job.file_name)
            self.echo(f"{status:6} {name}" + (f": {detail}" if detail else ""))
        self._finish_run()
        return True

    def _attempt(self, job: Job, work: Callable[[], tuple]) -> tuple:
        """(job, status or result, detail) of `work`, an error ending (or retrying) this job
        only: transient ones (a locked database, memory, a full disk) a bounded number of
        times, anything else at once, so one bad file never stops the worker."""
        try:
            first, detail = work()
            return job, first, detail
        except KeyboardInterrupt:
            raise
        except FileChanged as e:  # still being copied in: back to the inbox, nothing stored
            self.jobs.hand_back(job.job_id)
            self._seen.pop(job.file_name, None)
            return job, "requeued", f"{e}; taken again once it stops changing"
        except (StoreBusy, MemoryError, OSError) as e:
            reason = f"{type(e).__name__}: {str(e)[:200]}"
            return job, self.jobs.retry_or_fail(job.job_id, reason), reason
        except Exception as e:
            reason = f"internal error: {type(e).__name__}: {first_line(e)}"
            self.jobs.fail(job.job_id, reason)
            return job, "failed", reason

    def _store(self, ready: list[tuple[Job, SessionResult, str | None]]) -> list[tuple]:
        """Store analysed sessions, each with its job's outcome in the same transaction: all in
        one commit, or, should that fail, one by one so the failure stays with its own job."""
        if len(ready) > 1:
            try:
                self.writer.save_many([r for _, r, _ in ready], self._run(),
                                      [self._outcome(j, r) for j, r, _ in ready])
                return [self._stored(j, r, d) for j, r, d in ready]
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - retried one by one just below
                log.info("a batch of %d sessions did not commit (%s); storing them one by "
                         "one", len(ready), first_line(e))
        out = []
        for job, result, detail in ready:
            def one(job=job, result=result, detail=detail):
                self.writer.save(result, self._run(), also=self._outcome(job, result))
                return self._stored(job, result, detail)[1:]
            out.append(self._attempt(job, one))
        return out

    def _stored(self, job: Job, result: SessionResult, detail: str | None) -> tuple:
        if result.status != "ok":
            return job, "failed", result.error
        self.counts["audio_s"] += result.duration_s
        return job, "done", detail

    def _process(self, job: Job) -> tuple:
        """(status, detail) of a job ended here, or (result, detail) of one to store."""
        if "_problem" in job.metadata:
            self.jobs.fail(job.job_id, job.metadata["_problem"])
            return "failed", job.metadata["_problem"]
        path = entry(self.cfg.inbox, job.file_name)
        if not path.is_file() or path.is_symlink():
            reason = "file disappeared from the inbox before it was processed"
            self.jobs.fail(job.job_id, reason)
            return "failed", reason
        self._unchanged(job, path)
        done = process_file(path, metadata_to_meta(job.metadata), self.lm, self.opts,
                            skip=self.writer.already_stored)
        self._unchanged(job, path)
        if done.result is None:
            sid = session_id_for(done.prep.sha256)
            self.jobs.done(job.job_id, sid, "already stored (same audio)")
            self.counts["skipped"] += 1
            return "done", "already stored"
        result = done.result
        if not result.sha256:  # vanished before it could even be hashed
            self.jobs.fail(job.job_id, result.error or "unreadable")
            return "failed", result.error
        # Stored under the user's name and where the file will be kept, not its inbox name.
        kept = self._destination(job, result.status == "ok") or path
        result = dataclasses.replace(result, source_path=str(kept),
                                     file_name=job.original_name or shown(job.file_name))
        return result, "; ".join(done.prep.notes) or None

    def _outcome(self, job: Job, result: SessionResult):
        """The job's end, in its session's transaction: done for a stored session, failed
        for a failed one (stored too, so the dashboard shows why)."""
        if result.status == "ok":
            return self._mark_done(job)
        return lambda con, sid: JobQueue.fail_in(con, job.job_id, result.error or "failed", sid)

    def _unchanged(self, job: Job, path: Path) -> None:
        """FileChanged when the file is no longer what the job took (size, modification time)."""
        try:
            st = path.stat()
        except OSError:
            return  # gone: process_file says so
        if (st.st_size, st.st_mtime_ns) != (job.size_bytes, job.mtime_ns):
            raise FileChanged(f"it changed while being analysed ({job.size_bytes:,} → "
                              f"{st.st_size:,} bytes)")

    def _mark_done(self, job: Job):
        """The job's `done`, in its session's transaction: a crash leaves both or neither —
        and neither when the file changed meanwhile (the last look before the commit)."""
        def hook(con, session_id: str) -> None:
            self._unchanged(job, entry(self.cfg.inbox, job.file_name))
            JobQueue.done_in(con, job.job_id, session_id)
            if self.before_commit is not None:
                self.before_commit(job)
        return hook

    # -- files and runs -----------------------------------------------------------------------
    def _put_away(self, job: Job) -> None:
        """Move a finished job's file (and sidecar) out of the inbox, under the job's id."""
        src = entry(self.cfg.inbox, job.file_name)
        marker_of(src).unlink(missing_ok=True)
        dest = self._destination(job, job.status != "failed")
        for f, target in ((src, dest), (sidecar_of(src), dest and sidecar_of(dest))):
            if not (f.exists() or f.is_symlink()):
                continue
            try:
                if target is None:
                    f.unlink()
                else:
                    private_dir(target.parent)
                    shutil.move(str(f), str(target))
                    tighten(target)  # a file copied in by hand may have come in world-readable
            except OSError as e:
                self.echo(f"could not move {job.file_name} out of the inbox: {e.strerror}")

    def _destination(self, job: Job, ok: bool) -> Path | None:
        """Where a finished job's file is kept (None: deleted), named by the job's id."""
        folder = self.cfg.archive if ok else self.cfg.failed
        return None if folder is None else folder / f"{job.job_id}{safe_ext(name_of(job.file_name))}"

    def _run(self) -> str:
        if self.run_id is None:
            self.run_id = self.writer.start_run(self.lm.name, self.lm.path, self.lm.trained,
                                               self.lm.device, self.opts.engine,
                                               {**self.opts.to_dict(), "source": "worker"},
                                               asr=self.asr, weights=self.lm.weights)
        return self.run_id

    def _finish_run(self, status: str = "running") -> None:
        # Kept current after every job, so a killed worker's run still shows what it did.
        if self.run_id is not None:
            c = self.counts
            self.writer.finish_run(self.run_id, c["done"] - c["skipped"], c["failed"],
                                  c["skipped"], c["audio_s"], status)


def stop_on_sigterm() -> None:
    """Turn SIGTERM (how `emoscope demo` stops its worker) into KeyboardInterrupt, so the job in
    hand is handed back to the queue instead of counting as a crash."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
