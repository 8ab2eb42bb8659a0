"""Precision, checkpointing and batch from the detected device (fake device properties)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from rpo_lab.estimates import parameter_count
from rpo_lab.hardware import (
    MEMORY_HEADROOM,
    SMOLLM2_135M,
    SMOLLM2_360M,
    Device,
    colab_preset_estimates,
    device_from_properties,
    plan_training,
    training_bytes,
)

T4 = SimpleNamespace(name="Tesla T4", total_memory=15_828_320_256, major=7, minor=5)
L4 = SimpleNamespace(name="NVIDIA L4", total_memory=23_034_068_992, major=8, minor=9)
A100 = SimpleNamespace(name="NVIDIA A100-SXM4-40GB", total_memory=42_505_273_344, major=8, minor=0)
CPU = Device("cpu", "CPU (2 cores)", 16e9)


@pytest.mark.parametrize("properties, precision", [(T4, "fp16"), (L4, "bf16"), (A100, "bf16")])
def test_bf16_only_with_native_support(properties, precision):
    plan = plan_training(device_from_properties(properties), SMOLLM2_135M, pairs=4, max_length=256)
    assert plan.precision == precision
    assert plan.trainer_flags() == {"bf16": precision == "bf16", "fp16": precision == "fp16",
                                    "gradient_checkpointing": plan.gradient_checkpointing}


def test_a_cpu_trains_in_fp32_whatever_it_is():
    plan = plan_training(CPU, SMOLLM2_135M, pairs=4, max_length=96)
    assert plan.precision == "fp32" and plan.trainer_flags()["bf16"] is False


def test_checkpointing_switches_on_only_when_the_plain_run_does_not_fit():
    t4, a100 = device_from_properties(T4), device_from_properties(A100)
    t4_plan = plan_training(t4, SMOLLM2_360M, pairs=8, max_length=512)
    a100_plan = plan_training(a100, SMOLLM2_360M, pairs=8, max_length=512)
    assert not a100_plan.gradient_checkpointing and a100_plan.pairs == 8
    assert t4_plan.gradient_checkpointing
    plain = training_bytes(SMOLLM2_360M, t4_plan.pairs, 512, "fp16", checkpointing=False)
    assert plain > MEMORY_HEADROOM * t4.memory_bytes >= t4_plan.estimated_bytes


def test_the_batch_halves_until_the_estimate_fits():
    small = Device("cuda", "small GPU", 12e9, (8, 0))
    plan = plan_training(small, SMOLLM2_360M, pairs=8, max_length=512)
    assert plan.pairs < 8 and plan.estimated_bytes <= MEMORY_HEADROOM * small.memory_bytes
    bigger = training_bytes(SMOLLM2_360M, plan.pairs * 2, 512, plan.precision, checkpointing=True)
    assert bigger > MEMORY_HEADROOM * small.memory_bytes


def test_training_bytes_counts_what_it_says():
    n = parameter_count(SMOLLM2_135M)
    full = training_bytes(SMOLLM2_135M, 1, 64, "bf16", checkpointing=True)
    half = training_bytes(SMOLLM2_135M, 1, 64, "bf16", checkpointing=True, trainable_fraction=0.5)
    assert full - half == pytest.approx(0.5 * n * (4 + 2 * 4))  # float32 gradients + AdamW's two states
    no_reference = training_bytes(SMOLLM2_135M, 1, 64, "bf16", checkpointing=True, reference=False)
    assert full - no_reference == pytest.approx(2 * n)  # the frozen reference in bf16
    assert training_bytes(SMOLLM2_135M, 1, 64, "fp32", checkpointing=True) > full
    with pytest.raises(ValueError, match="precision"):
        training_bytes(SMOLLM2_135M, 1, 64, "int8", checkpointing=True)


def test_colab_estimates_use_fp32_on_a_t4_and_bf16_on_l4_and_a100():
    rows = {row["gpu"]: row for row in colab_preset_estimates()}
    assert rows["T4"]["precision"] == "fp32" and rows["L4"]["precision"] == "bf16"
    assert rows["T4"]["memory_gb"] > rows["L4"]["memory_gb"] == rows["A100 40GB"]["memory_gb"]
    assert rows["T4"]["step_seconds"] > rows["L4"]["step_seconds"] > rows["A100 40GB"]["step_seconds"] > 0
