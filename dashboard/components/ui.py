"""What every page shows around its content: the label-language toggle, the untrained-model
banner, the empty state, and a guard that turns failures into one readable sentence."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import pandas as pd
import streamlit as st

from core.analysis import fusion
from core.base import models
from core.base.labels import COLORS, LABELS, display
from core.storage.store import StoreBusy
from dashboard.components import data
from dashboard.components.markdown import md  # noqa: F401  (pages call ui.md)
from dashboard.components import nav
from dashboard.components.nav import LANG_KEY, LANG_VALUE

log = logging.getLogger("emoscope.dashboard")




def lang() -> str:
    return st.session_state.get(LANG_VALUE, "en")


def label(name: str) -> str:
    return display(name, lang())


def fused(state) -> str:
    """A fused state (core/analysis/fusion) as a coloured badge in the label language; "" for none."""
    if not isinstance(state, str) or state not in fusion.STATES:
        return ""
    return f":{fusion.TINTS[state]}-badge[{fusion.display(state, lang())}]"


def color_map() -> dict[str, str]:
    """Displayed label → colour, in the current language: one colour per emotion everywhere."""
    return {label(k): COLORS[k] for k in LABELS}


def label_order() -> list[str]:
    return [label(k) for k in LABELS]


def sidebar() -> None:
    """The language toggle, rendered by app.py on every page.

    Streamlit drops a widget's state when the page changes, so the choice lives under its
    own key and seeds the widget on every run."""
    nav.restore_lang()
    st.session_state[LANG_KEY] = st.session_state[LANG_VALUE]

    def keep() -> None:
        st.session_state[LANG_VALUE] = st.session_state[LANG_KEY]
    st.sidebar.radio("Labels / 标签", ["en", "zh"], key=LANG_KEY, horizontal=True,
                     on_change=keep, format_func=lambda x: {"en": "English", "zh": "中文"}[x])
    nav.keep_lang_in_url()


def banner() -> None:
    """Warn on every page when any shown data came from an untrained model."""
    if not data.ready():
        return
    m = data.models(data.state())
    heads = sorted({h for h in m.get("head", []) if isinstance(h, str)})
    if heads:
        st.caption(f"Labels by the head **{', '.join(heads)}** (trained on reviewers' "
                   "corrections) over the model's embeddings; see the Calibration page.")
    untrained = m[~m.trained.astype(bool)]
    if len(untrained):
        names = ", ".join(sorted({models.shown(n, w) for n, w in
                                  zip(untrained.model, untrained.weights.fillna(""))}))
        st.warning(f"**Untrained model.** {int(untrained.sessions.sum()):,} of "
                   f"{int(m.sessions.sum()):,} sessions were analysed by `{names}`, a test model "
                   "with random weights: its emotion labels mean nothing.", icon="⚠️")


def empty_state() -> bool:
    """Explain how to get data in when there is none; True when the page should stop."""
    p = data.db_path()
    if not p.exists():
        st.info(f"No database at `{p}` yet. Ingest some recordings first:\n\n"
                f"```\nemoscope ingest path/to/audio --db {p}\n```\n\n"
                "or run `make demo` to load the bundled demo calls and diaries.", icon="📭")
        return True
    if not data.ready():
        st.info(f"`{p}` holds no sessions yet. Ingest recordings with "
                f"`emoscope ingest path/to/audio --db {p}`.", icon="📭")
        return True
    return False


@contextmanager
def guard() -> Iterator[None]:
    """Show a sentence instead of a stack trace; Streamlit's rerun/stop signals pass through
    (they derive from BaseException)."""
    try:
        yield
    except StoreBusy:
        st.warning("The database is busy with an ingest right now. Reload in a few seconds.")
    except FileNotFoundError as e:
        st.error(f"A file is missing: {e}")
    except Exception as e:  # the last line of defence: log the trace, show one line
        log.exception("page failed")
        st.error(f"This view could not be shown ({type(e).__name__}: {str(e)[:200]}). "
                 "The details are in the dashboard's log.")


def page(title: str) -> bool:
    """Title, banner and empty state; False when there is nothing to show."""
    st.title(title)
    banner()
    return not empty_state()


def fmt_time(t: float) -> str:
    t = float(t)
    return f"{int(t // 60)}:{t % 60:04.1f}"


def fmt_clock(t) -> str:
    """m:ss for a table cell; empty when there is no time."""
    if t is None or pd.isna(t):
        return ""
    t = float(t)
    return f"{int(t // 60)}:{t % 60:04.1f}"


def plural(n: int, one: str, many: str | None = None) -> str:
    """`1 call`, `2 calls`, `1 diary entry`, `3 diary entries` (thousands separated)."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def blank(df: pd.DataFrame, cols=None) -> pd.DataFrame:
    """Text columns with missing values shown as empty cells instead of the word "None"."""
    out = df.copy()
    for c in cols or [c for c in out.columns if not pd.api.types.is_numeric_dtype(out[c])
                      and not pd.api.types.is_datetime64_any_dtype(out[c])
                      and not pd.api.types.is_bool_dtype(out[c])]:
        if c in out:
            col = out[c].astype(object)
            out[c] = col.where(col.map(lambda v: isinstance(v, (list, tuple)) or
                                       hasattr(v, "tolist") or not pd.isna(v)), "")
    return out


def response(en, zh) -> str:
    """An alert's suggested response in the label language (English when there is none)."""
    text = zh if lang() == "zh" and isinstance(zh, str) and zh else en
    return text if isinstance(text, str) else ""
