"""Analytics thresholds and alert rules, read from emoscope.toml over the packaged defaults."""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from core.analysis import categories as cats
from core.analysis.fusion import DISAGREEMENTS
from core.base.config_file import SettingsError, config_path, read_config
from core.base.labels import LABELS

DEFAULT_RULES = Path(__file__).with_name("default_rules.toml")
# The one threshold of each kind that the dashboard's what-if sliders move (None: set-level).
TUNABLE = {"streak": "min_count", "last_quarter_share": "min_share",
           "session_share": "min_share", "volatility_percentile": "percentile",
           "ends_worse": None, "unreliable": None, "raised_voice": "pitch_semitones"}
DEFAULT_SET = "default"
# Settings a rule set may override; [baseline] is read per person, so it stays file-wide.
SET_TABLES = ("low_confidence", "volatility", "trend", "fusion", "alerts", "categories",
              "responses")
SEVERITIES = ("low", "medium", "high", "urgent")  # urgent: safeguarding, first everywhere
SEVERITY_RANK = {s: i + 1 for i, s in enumerate(SEVERITIES)}


LATER_FIELDS = ("pitch_semitones", "loudness_db")


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
    # raised_voice (core/analysis/prosody.py): how far above the speaker's own median in the session
    pitch_semitones: float = 3.0
    loudness_db: float = 6.0

    def watches(self, speaker: str) -> bool:
        return "*" in self.speakers or speaker in self.speakers


_RULE_DEFAULTS = {f.name: f.default for f in fields(AlertRule)}


@dataclass(frozen=True)
class Rules:
    """One rule set. The file's top level is the `default` set; `sets` holds the named sets
    (each already merged over the top level) that sessions of some teams or tags get instead."""
    confidence_threshold: float = 0.4
    unreliable_share: float = 0.5
    window: int = 5
    trend_threshold: float = 0.2
    baseline_min_sessions: int = 3
    baseline_mix_distance: float = 0.3
    baseline_volatility_z: float = 2.0
    # [fusion] (core/analysis/fusion): when the words count as positive / negative, and how sure the
    # voice's top label must be to be read at all
    fusion_positive_words: float = 0.3
    fusion_negative_words: float = -0.3
    fusion_voice_confidence: float = 0.4
    alerts: tuple[AlertRule, ...] = ()
    categories: tuple[cats.Category, ...] = ()  # [[categories]] (core/analysis/categories)
    responses_en: dict = field(default_factory=dict, compare=False, hash=False)
    responses_zh: dict = field(default_factory=dict, compare=False, hash=False)
    source: str = field(default="", compare=False)
    name: str = DEFAULT_SET
    teams: tuple[str, ...] = ()  # a named set applies to sessions of these teams ...
    tags: tuple[str, ...] = ()  # ... or carrying any of these tags
    sets: tuple["Rules", ...] = ()

    @functools.cached_property
    def digest(self) -> str:
        """Short hash of everything in this set that changes a stored value; recorded with each
        metric row. Baseline settings are applied when read, and other sets judge other
        sessions, so both are left out."""
        payload = {f.name: getattr(self, f.name) for f in fields(self)
                   if f.name not in ("source", "sets") and not f.name.startswith("baseline_")}
        if self.name == DEFAULT_SET and not self.teams and not self.tags:
            for k in ("name", "teams", "tags"):  # a file without sets keeps its old digest
                payload.pop(k)
        # Fields added to AlertRule later count only where set: older files keep their digest.
        payload["alerts"] = [{k: v for k, v in a.__dict__.items()
                              if k not in LATER_FIELDS or v != _RULE_DEFAULTS[k]}
                             for a in self.alerts]
        payload["categories"] = [c.__dict__ for c in self.categories]
        if not self.categories:  # a file without categories keeps its old digest
            payload.pop("categories")
        text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @functools.cached_property
    def full_digest(self) -> str:
        """This set and every named set: what a whole-store recompute was run with."""
        if not self.sets:
            return self.digest
        text = "|".join([self.digest, *(s.digest for s in self.sets)])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def for_session(self, team: str | None, tags=()) -> "Rules":
        """The set that judges a session: the first named set listing its team or one of its
        tags, else this (the default) set."""
        tags = set(tags) if isinstance(tags, (list, tuple, set)) or hasattr(tags, "tolist") \
            else set()
        for s in self.sets:
            if (team is not None and team in s.teams) or tags & set(s.tags):
                return s
        return self

    def set_named(self, name: str) -> "Rules":
        return next((s for s in self.sets if s.name == name), self)

    def all_sets(self) -> tuple["Rules", ...]:
        return (self, *self.sets)

    def response(self, label: str | None, lang: str = "en") -> str | None:
        table = self.responses_zh if lang == "zh" else self.responses_en
        return table.get(label) if label else None

    def fused_response(self, fused: str | None, label: str | None, lang: str = "en"
                       ) -> str | None:
        """The reply for a fused state (core/analysis/fusion): its own entry where the rules give one
        (masked_frustration, suppressed_distress), else the voice's emotion's."""
        own = self.response(fused, lang) if fused in DISAGREEMENTS else None
        return own or self.response(label, lang)


def _read(path: Path) -> dict:
    """A rules file through the one emoscope.toml reader, its errors as RulesError."""
    try:
        return read_config(path)
    except SettingsError as e:
        raise RulesError(str(e).replace("settings file not found", "rules file not found")) from None


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
    from core.analysis.alerts import ALERT_KINDS  # the one registry of kinds
    if raw["kind"] not in ALERT_KINDS:
        raise RulesError(f"{where}: alert {raw['rule']!r} has kind {raw['kind']!r}; "
                         f"use one of {', '.join(ALERT_KINDS)}")
    if raw.get("severity", "medium") not in SEVERITIES:
        raise RulesError(f"{where}: alert {raw['rule']!r} has severity {raw['severity']!r}; "
                         f"use one of {', '.join(SEVERITIES)}")
    bad = [x for x in raw.get("labels", ()) if x not in LABELS]
    if bad:
        raise RulesError(f"{where}: alert {raw['rule']!r} names unknown label(s) {bad}")
    if ALERT_KINDS[raw["kind"]].needs_labels and not raw.get("labels"):
        raise RulesError(f"{where}: alert {raw['rule']!r} needs `labels`")
    vals = dict(raw)
    for key in ("speakers", "labels"):
        if key in vals:
            vals[key] = tuple(vals[key])
    return AlertRule(**vals)


def _build(data: dict, where: str, source: str, name: str = DEFAULT_SET,
           teams=(), tags=()) -> Rules:
    try:
        lc, vol, tr, bl, fu = (data.get(k, {}) for k in
                               ("low_confidence", "volatility", "trend", "baseline", "fusion"))
        rules = Rules(
            confidence_threshold=float(lc["threshold"]),
            unreliable_share=float(lc["unreliable_share"]),
            window=int(vol["window"]),
            trend_threshold=float(tr["threshold"]),
            baseline_min_sessions=int(bl["min_sessions"]),
            baseline_mix_distance=float(bl["mix_distance"]),
            baseline_volatility_z=float(bl["volatility_z"]),
            fusion_positive_words=float(fu.get("positive_words", 0.3)),
            fusion_negative_words=float(fu.get("negative_words", -0.3)),
            fusion_voice_confidence=float(fu.get("voice_confidence", 0.4)),
            alerts=tuple(_alert(a, where) for a in data.get("alerts", [])),
            categories=tuple(cats.parse(c, where, SEVERITIES, RulesError)
                             for c in data.get("categories", [])),
            responses_en=dict(data.get("responses", {}).get("en", {})),
            responses_zh=dict(data.get("responses", {}).get("zh", {})),
            source=source, name=name, teams=tuple(teams), tags=tuple(tags))
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, RulesError):
            raise
        raise RulesError(f"{where}: bad or missing setting ({e})") from None
    if rules.window < 2:
        raise RulesError(f"{where}: [volatility] window must be at least 2")
    if not -1 <= rules.fusion_negative_words < rules.fusion_positive_words <= 1:
        raise RulesError(f"{where}: [fusion] needs -1 <= negative_words < positive_words <= 1")
    names = [a.rule for a in rules.alerts]
    if len(names) != len(set(names)):
        raise RulesError(f"{where}: alert rule names must be unique")
    named = [c.name for c in rules.categories]
    if len(named) != len(set(named)) or set(named) & set(names):
        raise RulesError(f"{where}: category names must be unique and differ from the alert "
                         "rules' (a category's alerts carry its name)")
    return rules


def _named_set(name: str, raw, base: dict, where: str, source: str) -> Rules:
    """[sets.NAME]: `teams` and/or `tags` it applies to, and the settings it overrides."""
    here = f"{where} [sets.{name}]"
    if not isinstance(raw, dict):
        raise RulesError(f"{here}: a rule set is a table")
    extra = set(raw) - set(SET_TABLES) - {"teams", "tags"}
    if extra:
        raise RulesError(f"{here}: unknown key(s) {', '.join(sorted(extra))}; a set takes "
                         f"teams, tags and {', '.join(SET_TABLES)}")
    teams, tags = raw.get("teams", []), raw.get("tags", [])
    if not all(isinstance(x, list) and all(isinstance(v, str) for v in x)
               for x in (teams, tags)):
        raise RulesError(f"{here}: teams and tags are lists of names")
    if name == DEFAULT_SET:
        raise RulesError(f"{here}: '{DEFAULT_SET}' is the name of the top-level rules")
    over = {k: v for k, v in raw.items() if k in SET_TABLES}
    return _build(_merge(base, over), here, source, name, teams, tags)


def load_rules(path: str | Path | None = None) -> Rules:
    """Packaged defaults, overlaid by emoscope.toml as core.base.config_file finds it (`path`,
    else $EMOSCOPE_CONFIG, else $EMOSCOPE_RULES, else ./emoscope.toml if any).

    Named sets (`[sets.NAME]`) merge over the top level the same way the file merges over the
    defaults: tables key by key, an `alerts` list replaces the list whole."""
    data = _read(DEFAULT_RULES)
    source = str(DEFAULT_RULES)
    chosen = config_path(path)
    if chosen is not None:
        data = _merge(data, _read(Path(chosen)))
        source = str(chosen)
    where = Path(source).name
    raw_sets = data.pop("sets", {})
    if not isinstance(raw_sets, dict):
        raise RulesError(f"{where}: [sets] holds one table per rule set")
    top = _build(data, where, source)
    named = tuple(_named_set(n, raw, data, where, source) for n, raw in raw_sets.items()
                  if raw.get("teams") or raw.get("tags"))  # a set emptied by a user file is off
    return replace(top, sets=named)


def tuned(rules: Rules, set_name: str, values: dict) -> Rules:
    """`rules` with one set's thresholds changed: what the what-if sliders judge with.

    `values` may hold `trend_threshold`, `unreliable_share`, a rule's name (its TUNABLE
    parameter), a category's name (its `min_count`) and `speakers` (the roles watched by every rule not watching everyone). Unchanged
    values give back rules equal to `rules`, so the alerts are exactly the stored ones."""
    target = rules.set_named(set_name)
    alerts = []
    for a in target.alerts:
        param = TUNABLE.get(a.kind)
        if param and a.rule in values:
            kind = type(getattr(a, param))
            a = replace(a, **{param: kind(values[a.rule])})
        if values.get("speakers") is not None and "*" not in a.speakers:
            a = replace(a, speakers=tuple(values["speakers"]))
        alerts.append(a)
    categories = tuple(replace(c, min_count=int(values[c.name])) if c.name in values else c
                       for c in target.categories)
    changed = replace(target, alerts=tuple(alerts), categories=categories, **{
        k: float(values[k]) for k in ("trend_threshold", "unreliable_share") if k in values})
    if target is rules:
        return replace(changed, sets=rules.sets)
    return replace(rules, sets=tuple(changed if s.name == set_name else s for s in rules.sets))
