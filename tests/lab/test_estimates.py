"""Memory and time estimates (rpo_lab.estimates) against hand arithmetic and real models."""
import math

import pytest

from rpo_lab.estimates import (
    GB,
    MISTRAL_7B,
    DecoderShape,
    LAUNCHERS,
    activation_bytes,
    host_memory_per_node,
    layer_parameter_count,
    optimizer_steps,
    parameter_count,
    per_gpu_memory,
    training_flops,
    training_hours,
    reference_bytes,
    training_state_bytes,
)


def test_mistral_7b_parameter_count_matches_hand_count():
    # embeddings 32000 x 4096, twice (untied lm_head); per layer q, o: 4096^2; k, v: 4096 x 1024;
    # MLP 3 x 4096 x 14336; two norms of 4096; final norm 4096.
    per_layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    expected = 2 * 32000 * 4096 + 32 * per_layer + 4096
    assert parameter_count(MISTRAL_7B) == expected == 7_241_732_096


@pytest.mark.parametrize("architecture", ["llama", "mistral"])
def test_parameter_count_equals_a_real_transformers_model(architecture):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM)}
    config_class, model_class = classes[architecture]
    config = config_class(vocab_size=101, hidden_size=32, intermediate_size=72, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = model_class(config)
    shape = DecoderShape(hidden_size=32, intermediate_size=72, num_layers=3, num_heads=4, num_kv_heads=2,
                         vocab_size=101)
    assert parameter_count(shape) == sum(p.numel() for p in model.parameters())


def test_training_state_is_twelve_bytes_per_parameter_split_over_gpus():
    state = training_state_bytes(7_241_732_096, num_gpus=8)
    assert sum(state.values()) == pytest.approx(7_241_732_096 * 12 / 8)
    adam = training_state_bytes(1000, num_gpus=1, optimizer_states=2)
    assert adam == {"weights": 4000, "gradients": 4000, "optimizer": 8000}


def test_activations_with_checkpointing_by_hand():
    tokens = 16 * 512
    parts = activation_bytes(MISTRAL_7B, sequences=16, sequence_length=512)
    assert parts["layer_inputs"] == 32 * tokens * 4096 * 2
    assert parts["one_layer_recompute"] == tokens * (16 * 4096 + 2 * 1024 + 4 * 14336) * 2
    assert parts["logits"] == tokens * 32000 * 16
    full = activation_bytes(MISTRAL_7B, sequences=16, sequence_length=512, checkpointing=False)
    assert full["all_layers"] == 32 * parts["one_layer_recompute"]


def test_per_gpu_total_is_the_sum_and_precomputed_reference_saves_the_copy():
    with_model = per_gpu_memory(MISTRAL_7B, num_gpus=8, sequences=16, sequence_length=512)
    precomputed = per_gpu_memory(MISTRAL_7B, num_gpus=8, sequences=16, sequence_length=512, reference="precomputed")
    assert with_model["total"] == pytest.approx(sum(v for k, v in with_model.items() if k != "total"))
    assert with_model["total"] - precomputed["total"] == pytest.approx(7_241_732_096 * 2 / 8)
    assert 15 * GB < with_model["total"] < 25 * GB  # fits a 40 GB A100 with room to spare
    with pytest.raises(ValueError, match="reference"):
        per_gpu_memory(MISTRAL_7B, num_gpus=8, sequences=16, sequence_length=512, reference="lora")


def test_flops_steps_and_hours_by_hand():
    n, tokens = 7_241_732_096, 160_800 * 2 * 512
    assert training_flops(n, tokens) == 10 * n * tokens
    assert training_flops(n, tokens, reference_forward=False, recompute=False) == 6 * n * tokens
    assert optimizer_steps(160_800, 64) == 2513  # 160800 / 64 = 2512.5, the last batch is partial
    assert optimizer_steps(128, 64, epochs=2) == 4
    flops = 8 * 1e15 * 0.5 * 3600  # one hour of 8 GPUs at 1 PFLOP/s peak and 50 % utilisation
    assert math.isclose(training_hours(flops, 8, 1e15, utilization=0.5), 1.0)


@pytest.mark.parametrize("call", [lambda: optimizer_steps(0, 64), lambda: training_flops(-1, 10),
                                  lambda: training_hours(1.0, 8, 1e15, utilization=0.0),
                                  lambda: activation_bytes(MISTRAL_7B, sequences=0, sequence_length=512)])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_reference_cost_by_launcher_by_hand():
    n = 7_241_732_096
    assert reference_bytes(n, 8, "fsdp") == n * 2 / 8  # bf16 shards, the values the policy computes with
    assert reference_bytes(n, 8, "zero3") == n * 2 / 8
    assert reference_bytes(n, 8, "ddp") == n * 4  # a float32 replica: the policy's parameter dtype
    assert all(reference_bytes(n, 8, launcher, "precomputed") == 0 for launcher in LAUNCHERS)
    with pytest.raises(ValueError, match="launcher"):
        reference_bytes(n, 8, "megatron")


def test_paper_run_memory_per_launcher():
    """8 x (8 pairs = 16 sequences of 512 tokens): FSDP2 and ZeRO-3 fit a 40 GB GPU, DDP fits none."""
    n, layer = parameter_count(MISTRAL_7B), layer_parameter_count(MISTRAL_7B)
    fsdp = per_gpu_memory(MISTRAL_7B, num_gpus=8, sequences=16, sequence_length=512, launcher="fsdp")
    zero3 = per_gpu_memory(MISTRAL_7B, num_gpus=8, sequences=16, sequence_length=512, launcher="zero3")
    ddp = per_gpu_memory(MISTRAL_7B, num_gpus=8, sequences=16, sequence_length=512, launcher="ddp")
    assert fsdp["gathered_layers"] == 2 * layer * 2 + 32000 * 4096 * 2  # two bf16 layers + the bf16 head
    assert zero3["weights"] + zero3["gradients"] + zero3["optimizer"] == pytest.approx(n * (2 + 2 + 4 + 4) / 8)
    assert fsdp["total"] < 25 * GB and zero3["total"] < 25 * GB
    assert ddp["reference"] == n * 4 and ddp["total"] > 80 * GB


def test_host_memory_while_loading():
    n = 1000
    assert host_memory_per_node(n, processes=8) == n * 6  # rank 0 only: float32 policy + bf16 reference
    assert host_memory_per_node(n, processes=8, ram_efficient=False) == 8 * n * 6
    assert host_memory_per_node(n, processes=8, reference="precomputed") == n * 4
