"""FSDP2 on 2 CPU processes (gloo) against DDP: same losses, a sharded reference, resumable, loadable.

One ``torchrun`` launch of ``dist_scripts/fsdp_runs.py`` runs every case (see its docstring);
accelerate only allows FSDP on CPU processes through the switch in ``dist_scripts/cpu_fsdp.py``
(documented there), which only these tests use.
"""
from __future__ import annotations

import json

import pytest

from tests.training.test_distributed import launch

CASES = ("model-global", "precomputed-local")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    launch("fsdp_runs.py", str(root))
    return json.loads((root / "results.json").read_text())


@pytest.mark.slow
def test_a_cpu_run_asking_for_fsdp_without_the_switch_gets_ddp_and_warns(results):
    assert results["refused"] == {"route": "ddp", "warned": True}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_fsdp_losses_equal_the_ddp_losses(results, case):
    run = results[case]
    assert (run["fsdp_route"], run["ddp_route"]) == ("fsdp", "ddp")
    assert sorted(run["fsdp_losses"]) == ["1", "2", "3", "4"]
    for step, loss in run["ddp_losses"].items():
        assert run["fsdp_losses"][step] == pytest.approx(loss, rel=1e-5, abs=1e-7), step
    assert len({round(v, 6) for v in run["fsdp_losses"].values()}) > 1  # the losses move


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_the_reference_is_sharded_under_fsdp_and_replicated_under_ddp(results, case):
    assert results[case]["fsdp_reference_sharded"] is True  # every parameter a DTensor shard
    assert results[case]["ddp_reference_sharded"] is False


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_sharded_checkpoint_resumes_bit_identically(results, case):
    run = results[case]
    assert run["resumed_losses"] == run["fsdp_losses"]  # steps 3 and 4 rerun from checkpoint-2


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_the_final_fsdp_folder_loads_with_from_pretrained_and_equals_the_ddp_model(results, case):
    assert results[case]["loaded_parameters"] > 0
    assert results[case]["loaded_max_difference"] <= 1e-5


@pytest.mark.slow
def test_trainer_save_model_under_fsdp_writes_a_folder_from_pretrained_loads_with_the_trained_weights(results):
    saved = results["save_model"]
    assert saved["route"] == "fsdp" and saved["same_names"]
    assert saved["max_difference"] == 0.0  # gathered float32 shards, saved and loaded exactly
    assert saved["moved"]  # the weights are the trained ones, not another run's folder


@pytest.mark.slow
def test_bf16_fsdp_log_ratios_are_exactly_zero_before_the_first_step(results):
    assert results["bf16_step0_max_abs_log_ratio"] == 0.0


@pytest.mark.slow
def test_a_nan_on_one_process_stops_every_process_naming_the_step(results):
    rank0, rank1 = results["nan_messages"]
    assert "step 2" in rank1 and "policy log-probabilities" in rank1
    assert "step 2" in rank0 and "another process" in rank0
