"""Prepare tasks for tests, run inside the streaming executor's prepare processes (so they
live in an importable module, not in a test function)."""
from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from core.base.types import SessionMeta
from ingest.prepare import Part, PrepareTask, prepare_stream


@dataclass(frozen=True)
class DiesOn(PrepareTask):
    """Prepares as usual, except that the process is killed (as the kernel's out-of-memory
    killer would) after it has sent the first part of any file whose name holds `marker`."""
    marker: str = "dies"

    def __call__(self, path: Path, meta: SessionMeta):
        for item in prepare_stream(path, meta, self.opts, self.skip):
            yield item
            if self.marker in Path(path).name and isinstance(item, Part):
                os.kill(os.getpid(), signal.SIGKILL)


def heavy_modules(*_):
    """What of torch, FunASR or Streamlit a prepare process has imported (nothing, we hope)."""
    import numpy as np

    from ingest.options import IngestOptions
    from ingest.vad import speech_spans
    speech_spans(np.zeros(16_000, np.float32) + 0.01, IngestOptions())  # VAD loaded and run
    yield sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "funasr", "streamlit"))


@dataclass(frozen=True)
class DiesOnce(PrepareTask):
    """Prepares as usual, except that the first process to prepare a file whose name holds
    `marker` is killed after its first part (a flag file, created once, says it happened)."""
    marker: str = "dies"
    flag: str = ""

    def __call__(self, path: Path, meta: SessionMeta):
        for item in prepare_stream(path, meta, self.opts, self.skip):
            yield item
            if self.marker in Path(path).name and isinstance(item, Part):
                try:
                    os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    continue
                os.kill(os.getpid(), signal.SIGKILL)
