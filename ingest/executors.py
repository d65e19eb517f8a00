"""Executors: how a batch of files is taken through prepare → model → assemble → the store,
and the one registry of them (lhotse's `@register_extractor`, with a small frozen dataclass).

Two kinds:

* **here** (`serial`, `streaming`): runs in this process, inside `ingest_paths`, with the run's
  writer and loaded model. `run(batch: Batch) -> None`: every file of `batch.files` ends in
  `batch.report` (ok, failed or skipped) and its result, if any, through `batch.writer`.
  `ingest_paths` opens and closes the run around it (migrations, the run row, Ctrl-C).
* **whole** (`ray`): takes over the whole `emoscope ingest`, where the model and the store are
  not this process's. `run(request: Request) -> int`, the exit code; a usage problem raises
  `UsageError` with one line.

Registering costs no import: a `target` of "module:function" is imported when the executor
runs, so `ray` is listed (the CLI's --executor choices and help, docs) on a machine without
Ray. The CLI, `ingest_paths` and the docs read `EXECUTORS`; the worker runs one job at a time
through `pipeline.process_file` and picks no executor.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # the registry is read by the CLI's help: no torch, no model here
    from core.storage.sessions import SessionWriter
    from ingest.model import LoadedModel
    from ingest.options import IngestOptions
    from ingest.report import ProgressHook, Report


class UsageError(ValueError):
    """An executor cannot run as asked; the message is one line, for the user."""


@dataclass(frozen=True)
class Executor:
    name: str
    about: str  # one line: --executor's help and the docs
    target: str | Callable  # "module:function", imported when run; or the function itself
    here: bool = True  # runs inside ingest_paths (Batch); else the whole command (Request)
    options: tuple[str, ...] = ()  # `emoscope ingest` options only it takes (parameter names)

    def load(self) -> Callable:
        if callable(self.target):
            return self.target
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


@dataclass
class Batch:
    """What an executor that runs here is given: the files and the run they belong to."""
    files: list[Path]
    meta_for: Callable  # path → SessionMeta
    writer: "SessionWriter"
    lm: "LoadedModel"
    opts: "IngestOptions"
    force: bool
    run_id: str
    report: "Report"
    progress: "ProgressHook"
    workers: int | None = None


@dataclass
class Request:
    """What `emoscope ingest` was asked, for an executor that runs the whole of it."""
    targets: list
    metadata: dict
    db: Path
    model: str
    device: str
    opts: "IngestOptions"
    force: bool = False
    workers: int | None = None
    options: dict = field(default_factory=dict)  # its own options (Executor.options) as given
    open_writer: Callable[[], "SessionWriter"] | None = None  # the store's writer, when needed


EXECUTORS: dict[str, Executor] = {}  # in the order --executor lists them
DEFAULT = "streaming"


def register_executor(name: str, about: str, *, target: str | None = None, here: bool = True,
                      options: tuple[str, ...] = ()):
    """Register an executor: with `target="module:function"` at once (returns the Executor),
    or as a decorator on the function."""
    def add(fn: str | Callable) -> Executor:
        if name in EXECUTORS:
            raise ValueError(f"an executor named {name!r} is already registered")
        EXECUTORS[name] = Executor(name, about, fn, here, tuple(options))
        return EXECUTORS[name]

    if target is not None:
        return add(target)

    def decorate(fn: Callable) -> Callable:
        add(fn)
        return fn
    return decorate


def unregister_executor(name: str) -> None:
    """Forget an executor (tests register toy ones for a while)."""
    EXECUTORS.pop(name, None)


def choices() -> str:
    """The registered names in words: "streaming, serial or ray"."""
    names = list(EXECUTORS)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def get(name: str) -> Executor:
    """The executor called `name`; UsageError naming the choices if there is none."""
    try:
        return EXECUTORS[name]
    except KeyError:
        raise UsageError(f"--executor must be {choices()}, not {name!r}") from None


def help_text() -> str:
    return "; ".join(f"{e.name}: {e.about}" for e in EXECUTORS.values()) + "."


register_executor("streaming", "prepare processes, model batches across files",
                  target="ingest.streaming:run")
register_executor("serial", "one file at a time", target="ingest.pipeline:run_serial")
register_executor("ray", "a Ray cluster writing Parquet shards, then imported",
                  target="ingest.ray_ingest:ingest", here=False,
                  options=("address", "shards", "no_import"))
