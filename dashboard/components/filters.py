"""The session filters of the overview (and the reports page): their widgets. The filter itself
(`SessionFilter`, `apply`) is core.base.session_list's, shared with the API."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from core.storage.queries import SessionFilter as CoreFilter
from core.base.session_list import ListFilter, apply  # noqa: F401 (the pages call filters.apply)
from core.base import periods
from dashboard.components import nav, ui


# The filter and its function live in core, shared with the API's session list.
SessionFilter = ListFilter


def _sticky(key: str, allowed: list | None = None) -> str:
    """Give back a widget its last value when the user returns from another page (Streamlit
    forgets the state of widgets that were not on the page); values no longer offered drop."""
    saved = st.session_state.get(f"_keep_{key}")
    if key not in st.session_state and saved is not None:
        st.session_state[key] = [x for x in saved if x in allowed] if allowed is not None \
            else saved
    return key


def _keep(key: str, value) -> None:
    st.session_state[f"_keep_{key}"] = value


def widgets(summary: pd.DataFrame, options: dict, key: str = "f") -> SessionFilter:
    """Filter widgets laid out in two rows; they keep their values across reruns and pages.

    `options` is data.summary_options: the choices, computed once per DB version."""
    f = SessionFilter()
    lo, hi = options["dates"] or (dt.date.today(), dt.date.today())
    p_since, p_until = period(key, options["dates"])
    c = st.columns([2, 1, 1, 1])
    # Keyed by the span of the data: when new sessions extend it, the range resets to all of it
    # instead of silently hiding them.
    dates = f"{key}_dates_{lo}_{hi}"
    saved = st.session_state.get(f"_keep_{dates}")
    if dates not in st.session_state:
        st.session_state[dates] = saved or (lo, hi)
    rng = c[0].date_input("Dates", min_value=lo, max_value=hi, key=dates)
    _keep(dates, tuple(rng) if isinstance(rng, (tuple, list)) and len(rng) == 2 else None)
    if isinstance(rng, (tuple, list)) and len(rng) == 2:
        f.since, f.until = rng
        if (f.since, f.until) == (lo, hi):
            f.since = f.until = None  # the whole span: no need to compare 10,000 dates
    # The period and the dates both apply: the later start, the earlier end.
    f.since = max((d for d in (f.since, p_since) if d), default=None)
    f.until = min((d for d in (f.until, p_until) if d), default=None)
    boxes = [(c[1], "agents", "Agent", "agent", None), (c[2], "teams", "Team", "team", None),
             (c[3], "people", "Customer / person", "person", None)]
    c = st.columns([1, 1, 1, 1, 2])
    boxes += [(c[0], "roles", "Speaker role", "role", None),
              (c[1], "dominant", "Dominant emotion", "dominant", ui.label),
              (c[2], "flags", "Flags", "flags", None),
              (c[3], "categories", "Category", "category", None)]
    for col, name, label, suffix, fmt in boxes:
        k = _sticky(f"{key}_{suffix}", options[name])
        value = col.multiselect(label, options[name], key=k,
                                **({"format_func": fmt} if fmt else {}))
        setattr(f, "dominant" if name == "dominant" else name, value)
        _keep(k, value)
    k = _sticky(f"{key}_text")
    f.text = c[4].text_input("Search ids and tags", key=k,
                             placeholder="session id, file, agent, customer, tag…")
    _keep(k, f.text)
    return f


# The period words of core.base.periods, as the pages show them; the "latest" ones count back from
# the newest session the viewer may see, so a store of last month's calls is never empty.
PERIODS = [periods.LABELS[w] for w in ("latest-week", "latest-month", "all")] + ["Custom"]
WORD_OF = {label: word for word, label in periods.LABELS.items()}
DEFAULT_PERIOD = periods.LABELS["all"]


def period_bounds(choice: str, newest: dt.date | None, custom=None
                  ) -> tuple[dt.date | None, dt.date | None]:
    """(first day, last day) of a period preset, both inclusive; None: unbounded. "Latest
    week" and "Latest month" end on `newest`, the day of the newest session in scope."""
    if choice == "Custom":
        if isinstance(custom, (tuple, list)) and len(custom) == 2:
            return custom[0], custom[1]
        return None, None
    return periods.window(WORD_OF.get(choice, "all"), newest)


def period(key: str, span: tuple[dt.date, dt.date] | None, col=None) -> tuple:
    """A period picker (latest week, latest month, all, a custom range) on every page with
    dates; the choice travels with the user from page to page (nav.period_choice). Returns
    (since, until) inclusive dates or None."""
    col = col or st
    k = f"{key}_period"
    if st.session_state.get(k) != nav.period_choice(DEFAULT_PERIOD):
        st.session_state[k] = nav.period_choice(DEFAULT_PERIOD)
    choice = col.segmented_control(
        "Period", PERIODS, key=k, on_change=lambda: nav.keep_period(
            st.session_state.get(k) or DEFAULT_PERIOD),
        help="Latest week / month: the 7 / 30 days up to the newest session you may see "
             "(not up to today). The choice follows you to the other pages.") \
        or DEFAULT_PERIOD
    custom = None
    if choice == "Custom":
        lo, hi = span or (dt.date.today(), dt.date.today())
        rk = f"{key}_range"
        if rk not in st.session_state:
            st.session_state[rk] = nav.period_range() or (lo, hi)
        custom = col.date_input("From – to", key=rk)
        nav.keep_period_range(tuple(custom) if isinstance(custom, (tuple, list)) else None)
    return period_bounds(choice, span[1] if span else None, custom)


def session_filter(since: dt.date | None, until: dt.date | None, agent=None, team=None,
                   person=None, categories=()):
    """The core filter for these choices: `until` is an inclusive day here, exclusive there."""
    return CoreFilter(agent=agent, team=team, person=person,
                      since=since.isoformat() if since else None,
                      until=(until + dt.timedelta(days=1)).isoformat() if until else None,
                      categories=tuple(categories) or None)


def categories(col, options: dict, key: str) -> list[str]:
    """The category filter (core/analysis/categories: the ones stored sessions carry), kept across
    pages like the others."""
    return pick_many(col, "Category", options.get("categories", []), key)


def choose(col, label: str, options: list[str], key: str) -> str | None:
    """One value or none ("any"), kept across pages."""
    k = _sticky(key)
    if st.session_state.get(k) not in (None, *options):
        st.session_state[k] = None  # no longer offered
    value = col.selectbox(label, [None, *options], key=k,
                          format_func=lambda x: "any" if x is None else str(x))
    _keep(k, value)
    return value


def pick_many(col, label: str, options: list[str], key: str) -> list[str]:
    """A multiselect kept across pages."""
    k = _sticky(key, options)
    value = col.multiselect(label, options, key=k)
    _keep(k, value)
    return value


def empty_reason(span: tuple[dt.date, dt.date] | None) -> str:
    """What a page says when its period and filters leave no session: why, and what to do."""
    if not span:
        return "No analysed session is in your scope yet."
    return (f"No session in this period passes these filters. The sessions you may see run "
            f"from {span[0]:%Y-%m-%d} to {span[1]:%Y-%m-%d}: choose another period (“Latest "
            "week” ends on the newest one) or clear a filter.")


PERSON_ROLES = ("speaker", "customer")  # a diary's one voice, a caller: the Person page's people


def persons(ps: pd.DataFrame) -> list[str]:
    """The people the Person page follows and a person report is about (person_sessions rows
    of a diary's voice or a customer, never an agent), diaries first: one list for both."""
    ps = ps[ps.role.isin(PERSON_ROLES)] if len(ps) else ps
    if ps.empty:
        return []
    diary = set(ps[ps.role == "speaker"].person)
    return sorted(set(ps.person), key=lambda x: (x not in diary, x))


def period_word() -> str:
    """The period chosen, as core.base.periods names it in file names ("" for all dates or a
    custom range, whose days the name carries anyway)."""
    word = WORD_OF.get(nav.period_choice(DEFAULT_PERIOD), "")
    return word if word in periods.DAYS else ""
