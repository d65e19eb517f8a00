"""What an ingest run did, file by file, and the rules every executor applies alike when a file
finishes: what counts as a model failure, and when a copy of stored audio is skipped."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from core.storage.sessions import SessionWriter
from core.base.types import SessionResult

STAGES = ("decode", "vad", "model", "store")
MODEL_ERRORS = (RuntimeError, ValueError, MemoryError)  # what a model failure looks like

ProgressHook = Callable[[str, dict], None]


@dataclass
class Report:
    """What an ingest run did, file by file, for the closing summary."""
    ok: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    flagged: list[tuple[str, str]] = field(default_factory=list)  # stored, with a warning
    audio_s: float = 0.0
    wall_s: float = 0.0
    timings: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))  # busy seconds
    busy: dict = field(default_factory=dict)  # stage → share of its capacity it was busy
    peaks: dict = field(default_factory=dict)  # the streaming executor's memory bounds, reached
    executor: str = "streaming"
    workers: int = 1
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def add(self, path: str, result: SessionResult | None, note: str | None = None) -> str:
        """Count one finished file; returns its status (ok, failed or skipped)."""
        if result is None:
            self.skipped.append(path)
            return "skipped"
        if result.status == "ok":
            self.ok.append(path)
            self.audio_s += result.duration_s
            if note:
                self.flagged.append((path, note))
            return "ok"
        self.failed.append((path, result.error or "failed"))
        return "failed"


def stored_before(writer: SessionWriter, result: SessionResult, force: bool) -> bool:
    """The writer's last word on "already stored?": the same audio was stored ok earlier in
    this run (two copies of one recording in a batch), so this copy is skipped."""
    return not force and result.status == "ok" and writer.saved_this_run(result.sha256)
