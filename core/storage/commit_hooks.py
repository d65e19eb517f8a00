"""What runs around and after the writer's commit.

The indexes beside the store (core.index) keep up with it through these hooks, so storage never
imports them. A hook may hold a context while the rows are committed (readers that meet the
index one commit behind wait instead of rebuilding) and is called after the commit with what it
stored (`Committed`). The defaults are named here and loaded on
first use, as datasette loads its default plugins; another module registers more with
`register`. A hook that fails never undoes the commit: DuckDB is the truth, and an index that
disagrees with it is repaired or rebuilt before it is read.
"""
from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

DEFAULTS = ("core.index.segment_index", "core.index.word_index")


@dataclass(frozen=True)
class Committed:
    """What a commit stored: the saved sessions, the keys their replaced rows had, and, when
    the writer still holds them, the keys and embeddings of every segment it stored, so an
    index takes them from memory instead of reading them back."""
    session_ids: list[str]
    gone_keys: np.ndarray
    vectors: tuple[np.ndarray, np.ndarray] | None = None  # (uint64 keys, float32 rows)


@dataclass(frozen=True)
class CommitHook:
    name: str
    after: Callable[[Any, Committed], Any]  # (store, what was committed) → a summary
    holding: Callable[[Any], AbstractContextManager] | None = None  # held around the commit


_HOOKS: dict[str, CommitHook] = {}
_loaded = False


def register(hook: CommitHook) -> CommitHook:
    _HOOKS[hook.name] = hook
    return hook


def hooks() -> dict[str, CommitHook]:
    global _loaded
    if not _loaded:
        for name in DEFAULTS:
            importlib.import_module(name)
        _loaded = True
    return _HOOKS
