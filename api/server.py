"""Run the API with uvicorn: `serve()` is what `emoscope serve` calls."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from api.auth import Gate
from api.security import check_bind
from api.settings import DEFAULT_DB, Settings


def serve(host: str = "127.0.0.1", port: int = 8000, db: str | Path = DEFAULT_DB,
          model: str = "emotion2vec_plus_large", device: str = "auto",
          log_level: str = "info", **options) -> None:
    """Serve until interrupted. `options` are any other `api.settings.Settings` fields
    (batching, max_wait_ms, batch_seconds, max_queue, request_timeout_s, max_upload_mb,
    max_clip_s, tick_s, max_streams, rules, ...).

    Raises `api.security.BindRefused` (a ValueError, one-line message) for a non-loopback host
    while no authentication is configured (no identity provider in [auth], no API key),
    `core.admin.settings.SettingsError` for a broken emoscope.toml or keys file, and `TypeError` for
    an unknown option. A model that cannot be loaded stops start-up with FunASR's reason
    (ingest.model.ModelUnavailable)."""
    import uvicorn

    from api.app import create_app

    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(known))}")
    settings = Settings(host=host, port=port, db=Path(db), model=model, device=device,
                        **options)
    check_bind(host, Gate(settings.rules, settings.db, settings.open_loopback).required)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                ws_max_size=max(settings.max_chunk_bytes * 2, 1 << 16),
                timeout_graceful_shutdown=10)
