"""User text made inert in markdown: the one escape every page and the sign-in panel use.
It imports no other component, so any of them may use it."""
from __future__ import annotations

import re
import string

_PUNCT = re.compile("([" + re.escape(string.punctuation) + "])")


def md(text) -> str:
    """User-supplied text (file names, agents, tags, notes, errors) made inert in markdown:
    every ASCII punctuation mark backslash-escaped (CommonMark allows it for each), so no link,
    image, HTML, emphasis, LaTeX, emoji or colour directive can be built from it; line breaks
    become spaces so it cannot start a block of its own; and nothing in it is auto-linked."""
    text = "" if text is None else str(text)
    out = _PUNCT.sub(r"\\\1", " ".join(text.splitlines()))
    # Bare URLs, www. names and e-mail addresses are linked after escapes are undone: an
    # invisible word joiner after each ':' and before each '@' and '.' keeps them plain text.
    return out.replace("\\:", "\\:\u2060").replace("\\@", "\u2060\\@") \
        .replace("\\.", "\u2060\\.")
