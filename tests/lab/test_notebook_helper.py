"""The one styled notice / stop helper of the notebooks."""
from __future__ import annotations

import pytest

from rpo_lab.notebook import notice, notice_html, notice_text


def test_markdown_bold_and_code_render_and_everything_else_is_escaped():
    box = notice_html("needs **8 GPUs**: run `make demo` <now>", kind="stop")
    assert "<b>8 GPUs</b>" in box and "<code>make demo</code>" in box
    assert "&lt;now&gt;" in box and "<now>" not in box
    assert "Not run on this machine." in box


def test_plain_text_form_drops_the_marks():
    assert notice_text("run `make demo` **first**") == "NOTE: run make demo first"
    assert notice_text("no GPU", kind="stop") == "NOT RUN ON THIS MACHINE: no GPU"


def test_outside_ipython_it_prints_one_line(capsys):
    notice("plain **text**", kind="stop")
    assert capsys.readouterr().out == "NOT RUN ON THIS MACHINE: plain text\n"


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        notice_html("x", kind="warning")
