"""RPOTrainer: every loss trains the tiny model, its loss equals a hand computation, faults are clear."""
from __future__ import annotations

import copy
import math
import random

import pytest
import torch
from transformers import TrainerCallback

from rpo_tutorial.data.collate import PreferenceCollator, SFTCollator
from rpo_tutorial.data.run_logs import read_metrics
from rpo_tutorial.models.loading import load_tokenizer, tiny_model
from rpo_tutorial.models.logprobs import precompute_reference_logps
from rpo_tutorial.training.config import get_preset
from rpo_tutorial.training.metrics import METRIC_NAMES, MetricsAccumulator
from rpo_tutorial.training.run import prepare_rows, run_training, tokenize_rows
from rpo_tutorial.training.trainer import NonFiniteLossError, RPOTrainer

WORDS = "sunny lovely kind calm warm bright rainy noisy cold late broken dull".split()
LOSS_CASES = [("sft", {}), ("dpo", {}), ("ipo", {}), ("cdpo", {}), ("kto", {}), ("rpo", {}), ("rpo", {"paired": False})]
CASE_IDS = ["sft", "dpo", "ipo", "cdpo", "kto", "rpo-paired", "rpo-unpaired"]


def make_rows(count: int = 8, seed: int = 0) -> list[dict]:
    """Paired rows with short texts and 6-dimensional prompt embeddings (no embedder needed)."""
    rng = random.Random(seed)
    return [{"prompt": f"Describe day {i} of the trip to {rng.choice(WORDS)} town.",
             "chosen": " ".join(rng.choices(WORDS[:6], k=rng.randint(3, 7))),
             "rejected": " ".join(rng.choices(WORDS[6:], k=rng.randint(3, 7))),
             "prompt_embedding": [rng.gauss(0.0, 1.0) for _ in range(6)]} for i in range(count)]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def small_model(tokenizer, seed: int = 0):
    return tiny_model(len(tokenizer), hidden_size=32, num_layers=1, seed=seed)


def config_for(loss: str, tmp_path, **changes):
    unpaired = loss == "kto" or changes.get("paired") is False  # 4 rows: both sides in each random batch
    options = dict(loss=loss, max_steps=2, per_device_train_batch_size=4 if unpaired else 2, max_length=48,
                   max_prompt_length=24, output_dir=str(tmp_path / "run"), beta=0.5)
    options.update(changes)
    return get_preset("smoke", **options)


# ---- an independent reference implementation, written with plain loops --------------------------
def loop_logps(model, batch) -> list[float]:
    """Summed log-prob of every label token, one sequence and one position at a time."""
    totals = []
    with torch.no_grad():
        for row in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][row].sum())
            ids = batch["input_ids"][row, :length][None]
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)  # (T, V)
            total = 0.0
            for t in range(1, length):
                label = int(batch["labels"][row, t])
                if label != -100:
                    total += log_probs[t - 1, label].item()  # position t - 1 predicts token t
            totals.append(total)
    return totals


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def hand_loss(loss: str, config, batch, policy: list[float], reference: list[float]) -> float:
    m = int(batch["num_chosen"])
    c = [policy[i] - reference[i] for i in range(m)]  # chosen log-ratios
    r = [policy[i] - reference[i] for i in range(m, len(policy))]  # rejected log-ratios
    beta = config.beta
    if loss == "dpo":
        return sum(-log_sigmoid(beta * (ci - ri)) for ci, ri in zip(c, r)) / m
    if loss == "cdpo":
        eps = config.label_smoothing
        return sum(-(1 - eps) * log_sigmoid(beta * (ci - ri)) - eps * log_sigmoid(-beta * (ci - ri))
                   for ci, ri in zip(c, r)) / m
    if loss == "ipo":  # on per-token mean log-probs (length_normalize defaults to True for IPO, as in TRL)
        tokens = [int((batch["labels"][row, 1:] != -100).sum()) for row in range(len(policy))]
        c = [ci / tokens[i] for i, ci in enumerate(c)]
        r = [rj / tokens[m + j] for j, rj in enumerate(r)]
        return sum((ci - ri - 1 / (2 * config.ipo_tau)) ** 2 for ci, ri in zip(c, r)) / m
    if loss == "kto":
        z = max(0.0, sum(c + r) / (len(c) + len(r)))
        values = [1 - 1 / (1 + math.exp(-beta * (ci - z))) for ci in c]
        values += [1 - 1 / (1 + math.exp(-beta * (z - rj))) for rj in r]
        return sum(values) / len(values)
    if loss == "rpo":
        chosen_e = batch["chosen_prompt_embeddings"].tolist()
        rejected_e = batch["rejected_prompt_embeddings"].tolist()

        def cosine(a, b):
            return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

        total = 0.0
        for i in range(len(c)):
            kernel = [math.exp(-(1 - cosine(chosen_e[i], e)) / config.effective_tau) for e in rejected_e]
            weights = [k / sum(kernel) for k in kernel]
            total += sum(-log_sigmoid(w * beta * (c[i] - r[j])) for j, w in enumerate(weights)) / len(r)
        return total / len(c)
    raise AssertionError(loss)


def fixed_batch(loss: str, config, tokenizer):
    examples, _ = tokenize_rows(prepare_rows(make_rows(), config), tokenizer, config)
    if loss == "sft":
        return examples[:3], SFTCollator(tokenizer.pad_token_id)
    if not config.is_paired:  # two desirable and three undesirable responses: M != N
        examples = [e for e in examples if e["label"]][:2] + [e for e in examples if not e["label"]][:3]
    return examples[:3] if config.is_paired else examples, PreferenceCollator(tokenizer.pad_token_id)


@pytest.mark.parametrize("loss, changes", LOSS_CASES, ids=CASE_IDS)
def test_trainer_loss_equals_a_hand_computation(loss, changes, tokenizer, tmp_path):
    config = config_for(loss, tmp_path, **changes)
    policy, reference = small_model(tokenizer, seed=0), small_model(tokenizer, seed=1)  # they differ
    examples, collator = fixed_batch(loss, config, tokenizer)
    batch = collator(examples)
    trainer = RPOTrainer(model=policy, config=config, reference_model=None if loss == "sft" else reference,
                         data_collator=collator)
    value = trainer.compute_loss(trainer.model, dict(batch))
    policy_logps = loop_logps(policy, batch)
    if loss == "sft":
        tokens = int((batch["labels"][:, 1:] != -100).sum())
        expected = -sum(policy_logps) / tokens
    else:
        expected = hand_loss(loss, config, batch, policy_logps, loop_logps(reference, batch))
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("loss, changes", LOSS_CASES, ids=CASE_IDS)
def test_each_loss_trains_the_tiny_model(loss, changes, tokenizer, tmp_path):
    config = config_for(loss, tmp_path, **changes)
    policy = small_model(tokenizer)
    initial = copy.deepcopy(policy.state_dict())
    result = run_training(config, rows=make_rows(), policy=policy, tokenizer=tokenizer)
    assert result.global_step == 2
    changed = [name for name, value in result.trainer.model.state_dict().items()
               if not torch.equal(value, initial[name])]
    assert changed, "no parameter changed"
    records = [row for row in read_metrics(result.metrics_path) if "loss" in row]
    assert [row["step"] for row in records] == [1, 2]
    expected = {"logps/chosen", "nll/token"} if loss == "sft" else {
        "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
        "logps/rejected", "contrast/accuracy"}
    expected |= {"weights/row_entropy"} if loss == "rpo" else set()
    expected |= {"weights/diagonal_mass"} if loss == "rpo" and config.is_paired else set()
    expected |= {"kto/kl_reference_point"} if loss == "kto" else set()
    for row in records:
        assert expected <= set(row), expected - set(row)
        assert all(math.isfinite(row[name]) for name in expected | {"loss"})
    assert (result.output_dir / "rpo_config.json").exists()


def test_precomputed_reference_gives_the_same_loss_as_a_reference_model(tokenizer, tmp_path):
    config = config_for("rpo", tmp_path)
    policy, reference = small_model(tokenizer, seed=0), small_model(tokenizer, seed=1)
    examples, collator = fixed_batch("rpo", config, tokenizer)
    live = RPOTrainer(model=policy, config=config, reference_model=reference, data_collator=collator)
    expected = live.compute_loss(live.model, collator(examples))
    stored = precompute_reference_logps(reference, examples, collator, progress=False)
    precomputed = RPOTrainer(model=copy.deepcopy(policy), config=config.replace(reference="precomputed"),
                             data_collator=collator)
    value = precomputed.compute_loss(precomputed.model, collator(stored))
    torch.testing.assert_close(value, expected)
    with pytest.raises(ValueError, match="precompute_reference_logps"):
        precomputed.compute_loss(precomputed.model, collator(examples))


@pytest.mark.parametrize("loss", ["rpo", "dpo"])
def test_shared_prompts_switch_leaves_the_loss_and_gradients_unchanged(loss, tokenizer, tmp_path):
    from rpo_tutorial.models.shared_prompt import shared_prompt_problem, split_shared_prompts

    results = []
    for share_prompts in (True, False):
        config = config_for(loss, tmp_path, share_prompts=share_prompts)
        policy = tiny_model(len(tokenizer), hidden_size=32, num_layers=2, seed=0).train()
        reference = tiny_model(len(tokenizer), hidden_size=32, num_layers=2, seed=1)
        examples, collator = fixed_batch(loss, config, tokenizer)
        batch = collator(examples)
        trainer = RPOTrainer(model=policy, config=config, reference_model=reference, data_collator=collator)
        value = trainer.compute_loss(trainer.model, dict(batch))
        results.append((value.detach(), torch.autograd.grad(value, list(policy.parameters()))))
    assert shared_prompt_problem(policy) is None  # the switch really changes the path
    assert split_shared_prompts(batch["input_ids"], batch["attention_mask"], batch["labels"], 3) is not None
    (shared, shared_grads), (one_forward, one_forward_grads) = results
    torch.testing.assert_close(shared, one_forward, rtol=1e-5, atol=1e-6)
    for got, want in zip(shared_grads, one_forward_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_reference_follows_the_policy_to_one_forward_when_the_policy_checkpoints(tokenizer, tmp_path):
    config = config_for("dpo", tmp_path)
    policy = tiny_model(len(tokenizer), hidden_size=32, num_layers=2, seed=0).train()
    reference = copy.deepcopy(policy)
    enable = getattr(policy, "activation_checkpointing_enable", None) or policy.gradient_checkpointing_enable
    enable()  # the policy's gradient pass cannot share prompts (checkpointing drops the cache)
    examples, collator = fixed_batch("dpo", config, tokenizer)
    batch = collator(examples)
    trainer = RPOTrainer(model=policy, config=config, reference_model=reference, data_collator=collator)
    assert not trainer.forward_plan.share_prompts
    reference_logps = trainer._reference_logps(trainer.model, dict(batch))
    assert torch.equal(trainer._forward_logps(trainer.model, dict(batch)).detach(), reference_logps)  # same path


def test_unpaired_batch_with_one_side_gives_a_zero_loss_that_backpropagates(tokenizer, tmp_path):
    config = config_for("rpo", tmp_path, paired=False)
    policy = small_model(tokenizer)
    examples, collator = fixed_batch("rpo", config, tokenizer)
    desirable_only = collator([e for e in examples if e["label"]])
    trainer = RPOTrainer(model=policy, config=config, reference_model=small_model(tokenizer, seed=1),
                         data_collator=collator)
    loss = trainer.compute_loss(trainer.model, desirable_only)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    grads = [p.grad for p in policy.parameters()]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads)


class PoisonAfterFirstStep(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 1:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_nan_loss_stops_training_naming_the_step(tokenizer, tmp_path):
    config = config_for("dpo", tmp_path, max_steps=3)
    examples, collator = fixed_batch("dpo", config, tokenizer)
    trainer = RPOTrainer(model=small_model(tokenizer), config=config, reference_model=small_model(tokenizer),
                         train_dataset=examples * 4, data_collator=collator, callbacks=[PoisonAfterFirstStep()])
    with pytest.raises(NonFiniteLossError, match="step 2"):
        trainer.train()


def test_reference_arguments_must_match_the_reference_mode(tokenizer, tmp_path):
    policy = small_model(tokenizer)
    with pytest.raises(ValueError, match="reference_model"):
        RPOTrainer(model=policy, config=config_for("dpo", tmp_path))
    with pytest.raises(ValueError, match="does not use one"):
        RPOTrainer(model=policy, config=config_for("dpo", tmp_path, reference="precomputed"), reference_model=policy)
    with pytest.raises(ValueError, match="peft"):
        RPOTrainer(model=policy, config=config_for("dpo", tmp_path, reference="lora"))


def test_metrics_accumulator_averages_over_rows_not_micro_batches():
    accumulator = MetricsAccumulator()
    accumulator.add({"rewards/chosen": (torch.tensor(3.0), 3)})  # three rows of 1.0
    accumulator.add({"rewards/chosen": (torch.tensor(4.0), 1)})  # one row of 4.0
    averages = accumulator.pop_averages()
    assert averages == {"rewards/chosen": pytest.approx(7.0 / 4)}
    assert accumulator.pop_averages() == {}
    assert set(averages) <= set(METRIC_NAMES)


def test_lora_reference_is_the_base_model_with_adapters_disabled(tokenizer, tmp_path):
    import peft  # noqa: F401 - in the ci and dev extras: this test runs in CI, it never skips
    from rpo_tutorial.training.run import apply_lora

    config = config_for("dpo", tmp_path, reference="lora", lora_r=4, learning_rate=1e-2)
    base = small_model(tokenizer)
    pristine = copy.deepcopy(base)
    policy = apply_lora(base, config)
    examples, collator = fixed_batch("dpo", config, tokenizer)
    trainer = RPOTrainer(model=policy, config=config, train_dataset=examples * 4, data_collator=collator)
    batch = collator(examples)
    with torch.no_grad():
        assert trainer.compute_loss(trainer.model, dict(batch)).item() == pytest.approx(math.log(2), abs=1e-6)
    trainer.train()
    reference = trainer._reference_logps(trainer.model, dict(batch))
    torch.testing.assert_close(reference, torch.tensor(loop_logps(pristine, batch)), rtol=1e-4, atol=1e-4)
    policy_logps = trainer._forward_logps(trainer.model, dict(batch))
    assert not torch.allclose(policy_logps, reference)  # the adapters learned something


def test_similarity_batch_sampling_uses_the_similarity_sampler_over_every_example(tokenizer, tmp_path):
    from rpo_tutorial.data.sampler import SimilaritySampler

    config = config_for("rpo", tmp_path, batch_sampling="similarity")
    examples, _ = tokenize_rows(make_rows(), tokenizer, config)
    collator = PreferenceCollator(tokenizer.pad_token_id)
    trainer = RPOTrainer(model=small_model(tokenizer), config=config, reference_model=small_model(tokenizer),
                         train_dataset=examples, data_collator=collator)
    assert isinstance(trainer._get_train_sampler(), SimilaritySampler)
    sizes = [int(batch["num_chosen"]) for batch in trainer.get_train_dataloader()]
    assert sum(sizes) == len(examples)


@pytest.mark.slow
def test_cli_train_smoke_writes_metrics_jsonl(tmp_path, monkeypatch):
    pytest.importorskip("rpo_tutorial.data.demo")
    from rpo_lab import cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output_dir = tmp_path / "smoke"
    assert cli.main(["train", "--preset", "smoke", "--output-dir", str(output_dir), "--max-steps", "2"]) == 0
    records = read_metrics(output_dir / "metrics.jsonl")
    assert [row["step"] for row in records if "loss" in row] == [1, 2]
    assert all(math.isfinite(row["loss"]) for row in records if "loss" in row)


def test_sft_output_folder_is_the_next_runs_starting_model(tokenizer, tmp_path):
    from rpo_tutorial.training.run import run_sft

    sft = run_sft(config_for("dpo", tmp_path, output_dir=str(tmp_path / "sft")), rows=make_rows(),
                  policy=small_model(tokenizer), tokenizer=tokenizer)
    assert sft.trainer.config.loss == "sft"
    aligned = run_training(config_for("dpo", tmp_path, model=str(sft.output_dir), output_dir=str(tmp_path / "dpo")),
                           rows=make_rows())
    first = [row for row in read_metrics(aligned.metrics_path) if "loss" in row][0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)  # the reference is the SFT model itself
    start = sft.trainer.model.state_dict()
    assert any(not torch.equal(value, start[name]) for name, value in aligned.trainer.model.state_dict().items())
