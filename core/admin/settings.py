"""The operational sections of emoscope.toml: [access], [auth], [api], [server], [retention],
[storage]; and the API keys, which live beside the database (core.guard.apikeys), not in this file.

The same file holds the analytics rules (core.analysis.rules reads those). It is found as the rules
are: an explicit path, else $EMOSCOPE_CONFIG, else $EMOSCOPE_RULES, else ./emoscope.toml.
`emoscope dashboard` and `emoscope worker` pass the path they found on to their children as an
absolute path, so where a process was started never changes what it enforces.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.storage import analysers, corrections
from core.guard import apikeys
from core.guard.access import AccessConfig, AccessError

from core.base.config_file import CONFIG_NAME, SettingsError, config_path, read_config  # noqa: F401


@dataclass(frozen=True)
class Retention:
    """How long the product keeps what it stores; 0 keeps it for ever."""
    audio_days: float = 0  # archived and failed recordings (files)
    data_days: float = 0  # sessions and everything derived from them (rows, audio, exports)
    every_s: float = 3600  # how often the worker applies it

    @property
    def active(self) -> bool:
        return self.audio_days > 0 or self.data_days > 0


@dataclass(frozen=True)
class Settings:
    access: AccessConfig
    auth: dict  # Streamlit's [auth] section (st.login), or {} when sign-in is not configured
    retention: Retention
    audio_root: Path | None  # relative source paths are stored and resolved against it
    source: Path | None
    # [api] audience: what an OIDC token's `aud` may name besides the [auth] client_id
    api_audiences: tuple[str, ...] = ()
    # [server] allowed_hosts: names besides loopback ones that the API and the dashboard answer
    # to (Host, Origin), honoured only once authentication is configured (core.guard.hosts)
    allowed_hosts: tuple[str, ...] = ()
    # [calibration.labels]: the organisation's own labels, each → the emotion it counts as
    labels: dict = field(default_factory=dict)

    @property
    def sign_in(self) -> bool:
        return bool(self.auth)


def load_settings(path: str | Path | None = None, db: str | Path | None = None) -> Settings:
    """The settings file; with `db`, the API keys kept beside that database too."""
    raw = read_config(path)
    where = config_path(path) or CONFIG_NAME
    access_raw = dict(raw.get("access") or {})
    if "api_keys" in access_raw:
        raise SettingsError(f"{where}: API keys are not kept in emoscope.toml; remove "
                            "[[access.api_keys]] and create them with `emoscope apikey create` "
                            "(they are stored, hashed, beside the database)")
    try:
        access = AccessConfig.from_dict(access_raw)
        if db is not None:
            access = AccessConfig.from_dict({**access_raw, "api_keys": apikeys.load(db)})
    except AccessError as e:
        raise SettingsError(f"{apikeys.keys_file(db) if 'API key' in str(e) else where}: "
                            f"{e}") from None
    ret = raw.get("retention") or {}
    try:
        retention = Retention(float(ret.get("audio_days", 0)), float(ret.get("data_days", 0)),
                              float(ret.get("every_s", 3600)))
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: [retention] audio_days, data_days and every_s are "
                            "numbers of days (seconds for every_s)") from None
    if min(retention.audio_days, retention.data_days) < 0 or retention.every_s <= 0:
        raise SettingsError(f"{where}: [retention] values must be positive (0 keeps for ever)")
    root = (raw.get("storage") or {}).get("audio_root")
    auth = raw.get("auth") or {}
    if not isinstance(auth, dict):
        raise SettingsError(f"{where}: [auth] must be a table (Streamlit's st.login settings)")
    audience = (raw.get("api") or {}).get("audience", ())
    audience = (audience,) if isinstance(audience, str) else audience
    if not isinstance(audience, (list, tuple)) or not all(isinstance(a, str) for a in audience):
        raise SettingsError(f"{where}: [api] audience is a string or a list of strings")
    hosts = (raw.get("server") or {}).get("allowed_hosts", ())
    hosts = (hosts,) if isinstance(hosts, str) else hosts
    if not isinstance(hosts, (list, tuple)) or not all(isinstance(h, str) and h.strip()
                                                       for h in hosts):
        raise SettingsError(f"{where}: [server] allowed_hosts is a list of host names")
    try:
        labels = corrections.custom_labels((raw.get("calibration") or {}).get("labels"))
    except ValueError as e:
        raise SettingsError(f"{where}: {e}") from None
    try:  # every process reading the settings (CLI, worker, API, dashboard) holds the analysers
        analysers.from_config(raw.get("analysers") or {})
    except ValueError as e:
        raise SettingsError(f"{where}: {e}") from None
    return Settings(access, auth, retention, Path(root).resolve() if root else None,
                    config_path(path), tuple(audience), tuple(h.strip() for h in hosts),
                    labels)
