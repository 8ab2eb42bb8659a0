"""Tests for the tutorial figures (rpo_tutorial/plots/tutorial.py) and the notebook builder."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from rpo_tutorial.paths import REPO_ROOT
from rpo_tutorial.plots.tutorial import (
    plot_contrast_matrices,
    plot_coverage,
    plot_curves,
    plot_distributions,
    plot_weight_panels,
    plt,
    weight_shares,
)


def _brute_force_shares(weights: torch.Tensor, groups: list[str]) -> dict[str, float]:
    totals = {"own": 0.0, "related": 0.0, "unrelated": 0.0}
    for i in range(len(groups)):
        row_sum = sum(weights[i, j].item() for j in range(len(groups)))
        for j in range(len(groups)):
            part = "own" if i == j else "related" if groups[i] == groups[j] else "unrelated"
            totals[part] += weights[i, j].item() / row_sum / len(groups)
    return totals


def test_weight_shares_match_a_loop_and_sum_to_one():
    weights = torch.rand(6, 6, generator=torch.Generator().manual_seed(0)) + 0.1
    groups = ["a", "a", "b", "b", "b", "c"]
    shares = weight_shares(weights, groups)
    expected = _brute_force_shares(weights, groups)
    for part in expected:
        assert shares[part] == pytest.approx(expected[part], abs=1e-6)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)


def test_weight_shares_of_the_identity_is_all_own():
    shares = weight_shares(torch.eye(4), ["a", "a", "b", "b"])
    assert shares == pytest.approx({"own": 1.0, "related": 0.0, "unrelated": 0.0})


def test_weight_shares_rejects_a_group_count_mismatch():
    with pytest.raises(ValueError, match="len\\(groups\\)"):
        weight_shares(torch.ones(3, 3), ["a", "b"])


def test_plot_functions_write_png_files(tmp_path: Path):
    x = torch.linspace(-1, 1, 5)
    plot_curves(x, {"a": x ** 2, "b": -x}, "x", "y", path=tmp_path / "curves.png")
    plot_distributions({"p": torch.tensor([0.2, 0.8]), "q": torch.tensor([0.5, 0.5])}, ["y0", "y1"],
                       path=tmp_path / "bars.png")
    matrices = {"paired": torch.randn(3, 3), "unpaired": torch.randn(2, 4)}
    plot_contrast_matrices(matrices, row_labels={"paired": list("abc"), "unpaired": list("ab")},
                           col_labels={"paired": list("xyz"), "unpaired": list("wxyz")},
                           outline_diagonal={"paired": True}, path=tmp_path / "contrast.png")
    plot_weight_panels({"eye": torch.eye(3), "uniform": torch.full((3, 3), 1 / 3)}, list("abc"), ["g", "g", "h"],
                       path=tmp_path / "weights.png")
    plot_coverage({"mask": torch.eye(3, dtype=torch.bool)}, list("abc"), path=tmp_path / "coverage.png")
    plt.close("all")
    for name in ("curves", "bars", "contrast", "weights", "coverage"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_contrast_heatmaps_share_one_symmetric_colour_scale():
    figure = plot_contrast_matrices({"small": torch.tensor([[0.1]]), "large": torch.tensor([[-2.0, 1.0]])},
                                    row_labels=["r"], col_labels={"small": ["a"], "large": ["a", "b"]})
    limits = [ax.images[0].get_clim() for ax in figure.axes if ax.images]
    plt.close(figure)
    assert limits == [(-2.0, 2.0), (-2.0, 2.0)]


def test_contrast_heatmaps_reject_labels_of_the_wrong_length():
    with pytest.raises(ValueError, match="labels"):
        plot_contrast_matrices({"m": torch.zeros(2, 2)}, row_labels=["a"], col_labels=["x", "y"])
    plt.close("all")


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", REPO_ROOT / "scripts" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builder_splits_percent_cells_and_strips_markdown_hashes(tmp_path: Path):
    source = tmp_path / "09_example.py"
    source.write_text("# %% [markdown]\n# # Title\n#\n# Some $x^2$ text.\n\n# %%\nx = 1\n\n\n# %%\nprint(x)\n")
    cells = _builder().parse_cells(source)
    assert cells == [("markdown", "# Title\n\nSome $x^2$ text."), ("code", "x = 1"), ("code", "print(x)")]
    notebook = json.loads(_builder().render(source))
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in notebook["cells"] if cell["cell_type"] == "code")


def test_builder_rejects_code_inside_a_markdown_cell(tmp_path: Path):
    source = tmp_path / "09_bad.py"
    source.write_text("# %% [markdown]\n# fine\nx = 1\n")
    with pytest.raises(ValueError, match="09_bad.py:3"):
        _builder().parse_cells(source)


def test_committed_notebooks_match_their_sources():
    assert _builder().main(["--check"]) == 0
