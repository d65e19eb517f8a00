"""A model's one identity: its name plus a short hash of its weights.

A model can be given by name (`tiny-random`, `emotion2vec_plus_large`), by hub id
(`iic/emotion2vec_plus_large`) or by the directory it resolves to. Whatever was given, runs are
stored under one name, so the store, the ANN index spaces (one per model name and size), the
banners and the Upload page's worker command all speak of one model; the weights hash tells two
different sets of weights apart.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

HUB_IDS = {
    "emotion2vec_plus_large": ("iic/emotion2vec_plus_large", "emotion2vec/emotion2vec_plus_large"),
    "emotion2vec_plus_base": ("iic/emotion2vec_plus_base", "emotion2vec/emotion2vec_plus_base"),
    "emotion2vec_plus_seed": ("iic/emotion2vec_plus_seed", "emotion2vec/emotion2vec_plus_seed"),
}
# Names `--model` loads without a path: what a worker command should say.
LOADABLE = ("tiny-random", *HUB_IDS)
_CHUNK = 8 << 20


def name_of_path(path: str | Path) -> str:
    """The name of a model directory: emoscope.json's `name`; a random-weight build
    (ingest/tiny: `shape`, untrained) is `<shape>-random`; a hub model's cached copy is the hub
    name; else the directory's own name."""
    p = Path(path)
    meta = p / "emoscope.json"
    if meta.is_file():
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("name"):
            return str(info["name"])
        if info.get("shape") and info.get("trained") is False:
            return f"{info['shape']}-random"
    text = p.as_posix()
    for name, ids in HUB_IDS.items():
        if any(i in text or i.replace("/", "--") in text for i in ids):
            return name
    return p.name or text


def weights_hash(weights: str | Path) -> str:
    """12 hex digits of sha256 over the file's size, first and last 8 MiB (a 1 GB checkpoint
    is told apart in milliseconds); "" when there is no such file (a hub id not on disk)."""
    try:
        size = os.path.getsize(weights)
        h = hashlib.sha256(str(size).encode())
        with open(weights, "rb") as f:
            h.update(f.read(_CHUNK))
            if size > 2 * _CHUNK:
                f.seek(size - _CHUNK)
                h.update(f.read(_CHUNK))
            else:
                h.update(f.read())
    except OSError:
        return ""
    return h.hexdigest()[:12]


def loadable(name: str, path: str | None) -> str:
    """What `--model` should say to load the model stored as `name` (its path when the name
    alone does not load it)."""
    if name in LOADABLE or not path:
        return name
    return path


def shown(name: str, weights: str | None = None) -> str:
    """`name`, with its weights hash when known: how banners write a model."""
    return f"{name} ({weights[:10]})" if weights else name
