"""Analytics thresholds and alert rules, read from emoscope.toml over the packaged defaults."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from core.labels import LABELS

DEFAULT_RULES = Path(__file__).with_name("default_rules.toml")
USER_RULES = "emoscope.toml"
KINDS = ("streak", "last_quarter_share", "volatility_percentile", "ends_worse", "unreliable")
SEVERITIES = ("low", "medium", "high")


class RulesError(ValueError):
    """The rules file is unreadable or names something that does not exist."""


@dataclass(frozen=True)
class AlertRule:
    rule: str
    kind: str
    speakers: tuple[str, ...] = ("*",)
    severity: str = "medium"
    labels: tuple[str, ...] = ()
    min_count: int = 3
    min_share: float = 0.5
    percentile: float = 95.0
    min_reference: int = 20

    def watches(self, speaker: str) -> bool:
        return "*" in self.speakers or speaker in self.speakers


@dataclass(frozen=True)
class Rules:
    confidence_threshold: float = 0.4
    unreliable_share: float = 0.5
    window: int = 5
    trend_threshold: float = 0.2
    baseline_min_sessions: int = 3
    baseline_mix_distance: float = 0.3
    baseline_volatility_z: float = 2.0
    alerts: tuple[AlertRule, ...] = ()
    responses_en: dict = field(default_factory=dict, compare=False, hash=False)
    responses_zh: dict = field(default_factory=dict, compare=False, hash=False)
    source: str = field(default="", compare=False)

    @functools.cached_property
    def digest(self) -> str:
        """Short hash of everything that changes a stored value; recorded with each metric row.

        Baseline settings are applied when read, so they are left out."""
        payload = {k: v for k, v in self.__dict__.items()
                   if k not in ("source", "digest") and not k.startswith("baseline_")}
        payload["alerts"] = [a.__dict__ for a in self.alerts]
        text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def response(self, label: str | None, lang: str = "en") -> str | None:
        table = self.responses_zh if lang == "zh" else self.responses_en
        return table.get(label) if label else None


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise RulesError(f"rules file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise RulesError(f"{path} is not valid TOML: {e}") from None


def _merge(base: dict, over: dict) -> dict:
    """Tables merge key by key; the alerts list, when given, replaces the default list whole."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _alert(raw: dict, where: str) -> AlertRule:
    known = set(AlertRule.__dataclass_fields__)
    extra = set(raw) - known
    if extra:
        raise RulesError(f"{where}: unknown key(s) {', '.join(sorted(extra))} in an alert rule")
    if "rule" not in raw or "kind" not in raw:
        raise RulesError(f"{where}: every alert rule needs `rule` (a name) and `kind`")
    if raw["kind"] not in KINDS:
        raise RulesError(f"{where}: alert {raw['rule']!r} has kind {raw['kind']!r}; "
                         f"use one of {', '.join(KINDS)}")
    if raw.get("severity", "medium") not in SEVERITIES:
        raise RulesError(f"{where}: alert {raw['rule']!r} has severity {raw['severity']!r}; "
                         f"use one of {', '.join(SEVERITIES)}")
    bad = [x for x in raw.get("labels", ()) if x not in LABELS]
    if bad:
        raise RulesError(f"{where}: alert {raw['rule']!r} names unknown label(s) {bad}")
    if raw["kind"] in ("streak", "last_quarter_share") and not raw.get("labels"):
        raise RulesError(f"{where}: alert {raw['rule']!r} needs `labels`")
    vals = dict(raw)
    for key in ("speakers", "labels"):
        if key in vals:
            vals[key] = tuple(vals[key])
    return AlertRule(**vals)


def load_rules(path: str | Path | None = None) -> Rules:
    """Packaged defaults, overlaid by `path`, else $EMOSCOPE_RULES, else ./emoscope.toml if any."""
    data = _read(DEFAULT_RULES)
    source = str(DEFAULT_RULES)
    chosen = path or os.environ.get("EMOSCOPE_RULES")
    if chosen is None and Path(USER_RULES).is_file():
        chosen = USER_RULES
    if chosen is not None:
        data = _merge(data, _read(Path(chosen)))
        source = str(chosen)
    where = Path(source).name
    try:
        lc, vol, tr, bl = (data.get(k, {}) for k in
                           ("low_confidence", "volatility", "trend", "baseline"))
        rules = Rules(
            confidence_threshold=float(lc["threshold"]),
            unreliable_share=float(lc["unreliable_share"]),
            window=int(vol["window"]),
            trend_threshold=float(tr["threshold"]),
            baseline_min_sessions=int(bl["min_sessions"]),
            baseline_mix_distance=float(bl["mix_distance"]),
            baseline_volatility_z=float(bl["volatility_z"]),
            alerts=tuple(_alert(a, where) for a in data.get("alerts", [])),
            responses_en=dict(data.get("responses", {}).get("en", {})),
            responses_zh=dict(data.get("responses", {}).get("zh", {})),
            source=source)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, RulesError):
            raise
        raise RulesError(f"{where}: bad or missing setting ({e})") from None
    if rules.window < 2:
        raise RulesError(f"{where}: [volatility] window must be at least 2")
    names = [a.rule for a in rules.alerts]
    if len(names) != len(set(names)):
        raise RulesError(f"{where}: alert rule names must be unique")
    return rules
