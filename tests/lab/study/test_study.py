"""The real-model study's pieces: fast path, split by prompt, outcomes, the rate choice and the design power."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rpo_lab.study.data import split_by_prompt
from rpo_lab.study.power import design_power, heldout_warning
from rpo_lab.study.runner import choose_learning_rates
from rpo_lab.study.settings import ALIASES, DEFAULT_METHODS, StudySettings, canonical_methods, questions
from rpo_lab.study.train import pair_outcomes


def _rows(prompts: list[str], copies: int = 1) -> list[dict]:
    return [{"prompt": prompt, "chosen": f"good {prompt} {k}", "rejected": f"bad {prompt} {k}"}
            for prompt in prompts for k in range(copies)]


def test_trunk_log_probs_equal_a_full_forward():
    from rpo_lab.study.trunk import TopStack, pad_sequences
    from rpo_tutorial.data.collate import SFTCollator
    from rpo_tutorial.data.demo import load_demo
    from rpo_tutorial.data.tokenization import tokenize_sft
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model
    from rpo_tutorial.models.logprobs import batch_sequence_logps

    tokenizer = load_tokenizer()
    examples = [tokenize_sft(row, tokenizer, 48, 64) for row in load_demo("train")[:5]]
    model = tiny_model(len(tokenizer), num_layers=3).eval()
    full = batch_sequence_logps(model, SFTCollator(tokenizer.pad_token_id)(examples))  # (5,)
    stack = TopStack(model, trainable_layers=1)
    features = [stack.trunk_features(torch.tensor([e["input_ids"]]), torch.ones(1, len(e["input_ids"]),
                                                                                 dtype=torch.long))[0]
                for e in examples]
    top = stack.logps(*pad_sequences(features, [torch.tensor(e["labels"]) for e in examples]))
    torch.testing.assert_close(top, full, atol=1e-3, rtol=1e-5)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {
        name for name, _ in model.named_parameters() if ".layers.2." in name or name.endswith("model.norm.weight")}
    assert len(stack.model.get_decoder().layers) == 3  # the decoder has all its layers back after each pass


def test_split_by_prompt_keeps_every_prompt_in_one_part():
    rows = _rows([f"q{i}" for i in range(30)]) + _rows(["q3", "q7"], copies=2)  # q3, q7: three pairs each
    settings = StudySettings(heldout_pairs=10, validation_pairs=4)
    parts, notes = split_by_prompt(rows, settings)
    assert sum(map(len, parts.values())) == len(rows) and notes == []
    owner = {}
    for name, part in parts.items():
        for row in part:
            assert owner.setdefault(row["prompt"], name) == name  # no prompt in two parts
    assert 10 <= len(parts["heldout"]) <= 12 and 4 <= len(parts["validation"]) <= 6  # whole prompts: may overshoot
    assert split_by_prompt(rows, settings)[0] == parts  # seeded
    assert split_by_prompt(rows, settings.replace(split_seed=1))[0] != parts
    small = split_by_prompt(_rows([f"q{i}" for i in range(12)]), settings)[0]  # at most half held out, a sixth valid
    assert (len(small["heldout"]), len(small["validation"]), len(small["train"])) == (6, 2, 4)


def test_a_heldout_file_takes_its_prompts_out_of_train_and_validation():
    rows, heldout = _rows([f"q{i}" for i in range(24)]), _rows(["q1", "q2", "new"])
    parts, notes = split_by_prompt(rows, StudySettings(validation_pairs=3), heldout)
    assert parts["heldout"] == heldout
    assert not {row["prompt"] for row in parts["train"] + parts["validation"]} & {"q1", "q2", "new"}
    assert len(parts["train"]) + len(parts["validation"]) == 22 and len(parts["validation"]) == 3
    assert notes == ["2 dataset pair(s) share a prompt with the held-out file and were left out of train and "
                     "validation"]
    with pytest.raises(ValueError, match="no validation pairs"):
        split_by_prompt(_rows(["a", "b", "c"]), StudySettings(), _rows(["d"]))


def test_pair_outcomes_count_a_tie_half_and_the_reference_ties_everywhere():
    reference = torch.tensor([[-10.0, -12.0], [-5.0, -5.0], [-3.0, -4.0]])
    policy = reference + torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    assert pair_outcomes(policy, reference).tolist() == [1.0, 0.5, 0.0]
    assert pair_outcomes(reference, reference).tolist() == [0.5, 0.5, 0.5]


def test_each_method_takes_its_best_validation_rate_and_ties_take_the_smaller():
    tuning = [{"method": "dpo", "learning_rate": rate, "seed": seed, "accuracy": accuracy}
              for rate, seed, accuracy in [(1e-4, 0, 0.55), (1e-4, 1, 0.61), (3e-4, 0, 0.60), (3e-4, 1, 0.58),
                                           (1e-3, 0, 0.50), (1e-3, 1, 0.50)]]
    tuning += [{"method": "rpo-emb", "learning_rate": rate, "seed": 0, "accuracy": 0.6} for rate in (3e-4, 1e-4)]
    assert choose_learning_rates(tuning) == {"dpo": 3e-4, "rpo-emb": 1e-4}  # means 0.58 < 0.59; a tie: smaller


def test_method_names_follow_the_synthetic_study_and_accept_the_old_ones():
    from rpo_lab.world.methods import METHODS

    assert set(DEFAULT_METHODS) <= set(METHODS)
    assert canonical_methods(("dpo", "rpo-emb-matched")) == ("dpo", "rpo-emb")
    assert all(key in METHODS for key in ALIASES.values())
    with pytest.raises(ValueError, match="unknown method"):
        canonical_methods(("dpo", "nope"))
    with pytest.raises(ValueError, match="repeat"):
        canonical_methods(("rpo-emb", "rpo-emb-matched"))
    assert questions(DEFAULT_METHODS) == [("rpo-emb", m) for m in ("dpo", "dpo-own-beta", "rpo-own-pair",
                                                                      "rpo-uniform", "rpo-placebo")]


def test_design_power_matches_a_hand_computation():
    from scipy.stats import norm, t

    generator = np.random.default_rng(3)
    outcomes = {m: generator.integers(0, 3, 50).tolist() for m in ("dpo", "rpo-emb")}  # 2 x outcome
    tuning = [{"method": m, "learning_rate": 1e-4, "seed": 1000, "outcomes2": o} for m, o in outcomes.items()]
    tuning.append({"method": "rpo-emb", "learning_rate": 3e-4, "seed": 1000, "outcomes2": [2] * 50})  # not chosen
    settings = StudySettings(methods=("dpo", "rpo-emb"), seeds=(0, 1, 2))
    power = design_power(tuning, {"dpo": 1e-4, "rpo-emb": 1e-4}, settings, [("rpo-emb", "dpo")], heldout_pairs=400)
    row = power["rows"][0]
    d = [(a - b) / 2 for a, b in zip(outcomes["rpo-emb"], outcomes["dpo"])]
    mean = sum(d) / len(d)
    variance = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
    se = math.sqrt(variance / 400)
    assert row["discordance"] == pytest.approx(sum(x != 0 for x in d) / len(d))
    assert row["se_design"] == pytest.approx(se)
    assert row["mdd"] == pytest.approx((t.ppf(0.975, 2) + t.ppf(0.8, 2)) * se)
    assert row["mdd_normal"] == pytest.approx((norm.ppf(0.975) + norm.ppf(0.8)) * se, rel=1e-6)
    assert power["warning"] is not None and "rpo-emb vs dpo" in power["warning"]  # 400 pairs: MDD > 3 points
    assert len(power["lines"]) == 1 and "rpo-emb vs dpo" in power["lines"][0]


def test_methods_that_agree_on_every_validation_pair_get_the_reference_power_not_zero():
    tuning = [{"method": m, "learning_rate": 1e-4, "seed": 1000, "outcomes2": [2] * 30} for m in ("dpo", "rpo-emb")]
    settings = StudySettings(methods=("dpo", "rpo-emb"), seeds=(0, 1))
    power = design_power(tuning, {"dpo": 1e-4, "rpo-emb": 1e-4}, settings, [("rpo-emb", "dpo")], heldout_pairs=300)
    assert power["rows"][0]["mdd"] == 0.0  # no variance on validation: the t rule alone would claim any size
    line = power["lines"][0]
    low, high = (2.8015852 * math.sqrt(q / 300) * 100 for q in (0.1, 0.3))  # z_0.975 + z_0.8, by hand
    assert "agree on every validation pair" in line and f"{low:.1f} / {high:.1f} points" in line


def test_a_small_heldout_set_gets_a_warning_with_its_power():
    assert heldout_warning(1000, 3) is None  # 2.80 x sqrt(0.1 / 1000) = 2.8 points
    message = heldout_warning(40, 2)
    assert message is not None and "40 held-out pairs" in message
    low = (2.8015852 * math.sqrt(0.1 / 40)) * 100  # z_0.975 + z_0.8
    assert f"{low:.1f} points" in message


def test_trunk_features_with_each_prompt_run_once_equal_whole_sequences():
    from rpo_lab.study.features import trunk_bank
    from rpo_lab.study.trunk import TopStack
    from rpo_tutorial.data.demo import load_demo
    from rpo_tutorial.data.tokenization import tokenize_pair
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model
    from rpo_tutorial.models.shared_prompt import shared_prompt_problem

    tokenizer = load_tokenizer()
    stack = TopStack(tiny_model(len(tokenizer), num_layers=3).eval(), trainable_layers=1)
    assert shared_prompt_problem(stack.model) is None  # the shared path is the one under test
    sequences = []
    for row in load_demo("train")[:5]:  # prompts of different lengths: left padding in the prompt pass
        example = tokenize_pair(row, tokenizer, 24, 40)
        sequences += [(example["chosen_input_ids"], example["chosen_labels"]),
                      (example["rejected_input_ids"], example["rejected_labels"])]
    shared = trunk_bank(stack, sequences, tokenizer.pad_token_id, batch_size=4)  # 2 pairs per batch, the last batch 1 pair
    assert len(shared) == len(sequences)
    for features, (ids, _) in zip(shared, sequences):
        whole = stack.trunk_features(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]
        assert features.shape == whole.shape
        torch.testing.assert_close(features, whole, atol=1e-4, rtol=1e-4)
