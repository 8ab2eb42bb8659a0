"""Notebook 05 in its real mode (no RPO_SMOKE) on a machine without 8 GPUs: no traceback, a clear stop.

CI runs every notebook in smoke mode; this runs 05 as a reader with a laptop would ("Run all").
"""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "05_mistral7b_multigpu.ipynb"


@pytest.mark.slow
def test_real_mode_without_gpus_stops_with_a_message_instead_of_tracebacks(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    torch = pytest.importorskip("torch")
    if torch.cuda.device_count() >= 8:
        pytest.skip("this machine could do the real run")
    monkeypatch.delenv("RPO_SMOKE", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()  # raises on error
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not any(output.get("output_type") == "error" for output in outputs)
    html = " ".join(str(output.get("data", {}).get("text/html", "")) for output in outputs)
    assert "Not run on this machine" in html and "8 GPUs" in html
