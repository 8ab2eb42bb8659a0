"""Golden loss curves: a change that shifts training fails here, kernels and thread counts do not.

The committed file holds the first 8 steps of DPO and RPO on the smoke preset (float32, seed 0); its
``tolerance_note`` says how the tolerance was chosen (the spread across CPU kernels and thread counts,
against the effect of real changes). Regenerate after an intended change with
``python scripts/golden_curves.py`` and say why in the commit.
"""
from __future__ import annotations

import json

import pytest
import torch

from scripts import golden_curves


GOLDEN = json.loads(golden_curves.GOLDEN_FILE.read_text())


@pytest.fixture(scope="module")
def fresh_curves() -> dict:
    return golden_curves.smoke_curves()


def test_the_file_states_the_tolerance_the_check_uses():
    assert GOLDEN["tolerance"] == golden_curves.TOLERANCE and GOLDEN["steps"] == golden_curves.STEPS
    assert "ATEN_CPU_CAPABILITY=default" in GOLDEN["tolerance_note"]


@pytest.mark.slow
def test_a_fresh_smoke_run_reproduces_the_golden_curves(fresh_curves):
    mismatches = golden_curves.mismatches(fresh_curves, GOLDEN["curves"])
    assert not mismatches, "training changed (regenerate with scripts/golden_curves.py if intended):\n" + \
        "\n".join(mismatches)
    for loss in golden_curves.LOSSES:  # step 1: the policy is its reference, every log-ratio is 0
        assert fresh_curves[loss]["loss"][0] == pytest.approx(0.693147, abs=1e-5)
        assert fresh_curves[loss]["rewards/margins"][0] == 0.0


@pytest.mark.slow
def test_beta_0_11_instead_of_0_1_fails_the_check():
    assert golden_curves.mismatches(golden_curves.smoke_curves(beta=0.11), GOLDEN["curves"])


@pytest.mark.slow
def test_one_changed_initial_weight_fails_the_check():
    def nudge_one_weight(policy: torch.nn.Module) -> None:
        with torch.no_grad():
            policy.model.layers[0].self_attn.o_proj.weight[0, 0] += 0.01  # init std 0.02

    assert golden_curves.mismatches(golden_curves.smoke_curves(policy_edit=nudge_one_weight), GOLDEN["curves"])


def test_mismatches_names_the_metric_and_step():
    golden = GOLDEN["curves"]
    shifted = json.loads(json.dumps(golden))
    shifted["rpo"]["rewards/margins"][3] += 1e-3
    assert golden_curves.mismatches(golden, golden) == []
    assert golden_curves.mismatches(shifted, golden) == [
        f"rpo rewards/margins step 4: {shifted['rpo']['rewards/margins'][3]:.8g} vs golden "
        f"{golden['rpo']['rewards/margins'][3]:.8g}"]
