"""Styled notices in the tutorial notebooks: a note, or a stop that says what a cell would need.

One helper for every notebook, instead of a traceback or a bare print:

    from rpo_lab.notebook import notice
    notice("Sampling all 40 prompts would take **12 min**; sampling the first 16.")
    notice("The paper run needs 8 GPUs; this machine has 0.", kind="stop")

The text takes two bits of Markdown, ``**bold**`` and ``` `code` ```; everything else is escaped, so
a message can quote a path or a command safely. In Jupyter (and on the rendered site) it shows as
a coloured box; outside IPython, or in a plain-text front end, as one prefixed line.
"""
from __future__ import annotations

import html
import re

KINDS = {  # kind -> (label, border colour, background colour)
    "note": ("Note.", "#2b6cb0", "#ebf4ff"),
    "stop": ("Not run on this machine.", "#d9822b", "#fff4e5"),
}
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")


def notice_html(text: str, kind: str = "note") -> str:
    """The HTML box for ``text``: escaped, with ``**bold**`` and ```code``` rendered."""
    _check_kind(kind)
    label, border, background = KINDS[kind]
    body = _BOLD.sub(r"<b>\1</b>", _CODE.sub(r"<code>\1</code>", html.escape(text, quote=False)))
    body = body.replace("\n", "<br>")
    return (f'<div class="rpo-notice rpo-notice-{kind}" style="border-left: 6px solid {border}; '
            f'background: {background}; color: #1a202c; padding: 10px 14px; margin: 6px 0; '
            f'font-family: sans-serif"><b>{label}</b> {body}</div>')


def notice_text(text: str, kind: str = "note") -> str:
    """The plain-text form: ``NOTE: ...`` or ``NOT RUN ON THIS MACHINE: ...``, Markdown marks removed."""
    _check_kind(kind)
    plain = _BOLD.sub(r"\1", _CODE.sub(r"\1", text))
    return f"{KINDS[kind][0].rstrip('.').upper()}: {plain}"


def notice(text: str, kind: str = "note") -> None:
    """Show ``text`` as a styled note (``kind="note"``) or stop (``kind="stop"``) in the notebook."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # no IPython at all
        print(notice_text(text, kind))
        return
    if get_ipython() is None:  # plain Python: display() would print the repr
        print(notice_text(text, kind))
        return
    display({"text/html": notice_html(text, kind), "text/plain": notice_text(text, kind)}, raw=True)
