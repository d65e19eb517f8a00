"""Where emoscope.toml is and what it says, read as TOML: the one reader every section's
parser (core.admin.settings, core.analysis.rules, core.text.redaction) starts from. It imports nothing of core's,
so any module may use it without pulling in the others.

Found as: an explicit path, else $EMOSCOPE_CONFIG, else $EMOSCOPE_RULES, else ./emoscope.toml.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

CONFIG_NAME = "emoscope.toml"


class SettingsError(ValueError):
    """emoscope.toml cannot be read or has a bad setting; the message says which."""


def config_path(path: str | Path | None = None) -> Path | None:
    chosen = path or os.environ.get("EMOSCOPE_CONFIG") or os.environ.get("EMOSCOPE_RULES")
    if chosen:
        return Path(chosen).resolve()
    return Path(CONFIG_NAME).resolve() if Path(CONFIG_NAME).is_file() else None


def read_config(path: str | Path | None = None) -> dict:
    p = config_path(path)
    if p is None:
        return {}
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"settings file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{p} is not valid TOML: {e}") from None
