"""What-if thresholds: one slider per rule of a rule set, starting at the rules file's values.

The sliders only build `Rules` (core.analysis.rules.tuned); the alerts are then judged by the code that
stored them, with the same reference of earlier sessions (core.analysis.rejudge, via
data.judged_alerts). Untouched sliders give back the rules file itself, so the list is exactly
the stored alerts that every other page and the PDF show.
"""
from __future__ import annotations

import streamlit as st

from core.analysis.rules import TUNABLE, Rules, tuned

# parameter → (what the slider says, lowest, highest, step)
SLIDERS = {"min_count": ("consecutive segments", 2, 12, 1),
           "min_share": ("share at least", 0.05, 1.0, 0.05),
           "percentile": ("above percentile", 50.0, 99.0, 1.0),
           "pitch_semitones": ("pitch above own median, semitones", 1.0, 12.0, 0.5)}


def _slider(col, label: str, value, lo, hi, step, key: str):
    kind = type(step)
    value = kind(value)
    return col.slider(label, kind(min(lo, value)), kind(max(hi, value)), value, step, key=key)


def _watched(target: Rules) -> list[str]:
    return sorted({sp for a in target.alerts if "*" not in a.speakers for sp in a.speakers})


def sliders(rules: Rules, roles: list[str]) -> tuple[Rules, str]:
    """The widgets; returns (the rules to judge with, the name of the set they change)."""
    names = [s.name for s in rules.all_sets()]
    chosen = names[0]
    if len(names) > 1:
        chosen = st.radio("Rule set", names, horizontal=True, key="th_set",
                          help="Each set judges the sessions of its teams or tags "
                               "(emoscope.toml); the sliders move the thresholds of one set.")
    target = rules.set_named(chosen)
    values: dict = {}
    tunables = [a for a in target.alerts if TUNABLE.get(a.kind)]
    cols = st.columns(max(len(tunables), 1) + 2)
    for col, a in zip(cols, tunables):
        param = TUNABLE[a.kind]
        label, lo, hi, step = SLIDERS[param]
        values[a.rule] = _slider(col, f"{a.rule}: {label}", getattr(a, param), lo, hi, step,
                                 f"th_{chosen}_{a.rule}")
    if any(a.kind == "ends_worse" for a in target.alerts):
        values["trend_threshold"] = _slider(cols[-2], "Ends worse: rise of at least",
                                            target.trend_threshold, 0.05, 1.0, 0.05,
                                            f"th_{chosen}_trend")
    if any(a.kind == "unreliable" for a in target.alerts):
        values["unreliable_share"] = _slider(cols[-1], "Unreliable: share to clarify",
                                             target.unreliable_share, 0.1, 1.0, 0.05,
                                             f"th_{chosen}_unrel")
    alerting = [c for c in target.categories if c.alert]
    if alerting:  # categories (core/analysis/categories): how many utterances must meet one
        cols = st.columns(len(alerting))
        for col, c in zip(cols, alerting):
            values[c.name] = _slider(col, f"{c.name}: utterances at least", c.min_count, 1, 10,
                                     1, f"th_{chosen}_cat_{c.name}")
    default = _watched(target)
    if default:
        offered = sorted(set(roles) | set(default))
        watched = st.multiselect("Emotion rules watch", offered, default=default,
                                 key=f"th_{chosen}_roles",
                                 help="The roles the rules that do not watch everyone look at.")
        if sorted(watched) != default:
            values["speakers"] = tuple(watched)
    return tuned(rules, chosen, values), chosen
