"""The study machinery on a tiny random model: fast path, data order, statistics, cache and resume."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rpo_lab.study.controlled import NEGATIVE_CLUSTERS, POSITIVE_CLUSTERS, control_rows, controlled_rows
from rpo_lab.study import train as training
from rpo_lab.study.runner import run_study
from rpo_lab.study.settings import METHODS, StudySettings
from rpo_lab.study.stats import pair_outcomes, paired_bootstrap, seed_interval

TINY = StudySettings(model="tiny-random:llama", settings=("controlled",), methods=("dpo", "rpo-emb-matched"),
                     tau_ablation=(), seeds=(0, 1), steps=2, eval_every=1, train_pairs=16, heldout_per_cluster=1,
                     learning_rate=1e-3, max_length=56, max_prompt_length=44, judge_max_new_tokens=4,
                     judge_batch_size=4)


def fake_embed(texts):
    return torch.randn(len(texts), 8, generator=torch.Generator().manual_seed(len(texts)))


def test_trunk_log_probs_equal_a_full_forward():
    from rpo_tutorial.data.collate import SFTCollator
    from rpo_tutorial.data.demo import load_demo
    from rpo_tutorial.data.tokenization import tokenize_sft
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model
    from rpo_tutorial.models.logprobs import batch_sequence_logps
    from rpo_lab.study.trunk import TopStack, pad_sequences

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


def test_pair_batches_are_seeded_whole_permutations():
    batches = training.pair_batches(num_pairs=10, steps=5, batch_size=4, seed=3)
    assert batches == training.pair_batches(10, 5, 4, 3)  # every method of a seed sees this order
    assert batches != training.pair_batches(10, 5, 4, 4)
    assert all(len(set(batch)) == 4 for batch in batches)
    assert sorted(batches[0] + batches[1]) == sorted(set(batches[0] + batches[1]))  # no repeat within an epoch


def test_controlled_preference_flips_in_the_negative_clusters_only():
    control, controlled = control_rows(), controlled_rows()
    for plain, flipped in zip(control, controlled):
        swapped = plain["cluster"] in NEGATIVE_CLUSTERS
        assert plain["cluster"] in POSITIVE_CLUSTERS + NEGATIVE_CLUSTERS
        assert flipped["chosen"] == (plain["rejected"] if swapped else plain["chosen"])
        assert flipped["chosen_score"] > flipped["rejected_score"]  # r* = sign * sentiment ranks chosen first
        expected = -plain["rejected_score"] if swapped else plain["chosen_score"]
        assert flipped["chosen_score"] == pytest.approx(expected)


def test_seed_interval_is_the_student_t_interval():
    values = [0.6, 0.7, 0.65]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    result = seed_interval(values)
    assert result["mean"] == pytest.approx(mean)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((mean - half, mean + half))
    assert math.isnan(seed_interval([0.5])["ci_low"])


def test_pair_outcomes_count_a_tie_half():
    reference = np.array([[-10.0, -12.0], [-5.0, -5.0], [-3.0, -4.0]])
    policy = reference + np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    assert pair_outcomes(policy, reference).tolist() == [1.0, 0.5, 0.0]


def test_paired_bootstrap_matches_a_loop_over_seeds_then_pairs():
    generator = np.random.default_rng(5)
    method, baseline = generator.integers(0, 2, (3, 7)).astype(float), generator.integers(0, 2, (3, 7)).astype(float)
    result = paired_bootstrap(method, baseline, samples=200, seed=11)
    draws = np.random.default_rng(11)
    seed_draws, pair_draws = draws.integers(0, 3, (200, 3)), draws.integers(0, 7, (200, 3, 7))
    means = []
    for b in range(200):
        total = 0.0
        for k in range(3):
            s = seed_draws[b, k]
            total += sum(method[s, p] - baseline[s, p] for p in pair_draws[b, k])
        means.append(total / 21)
    assert result["mean"] == pytest.approx((method - baseline).mean())
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    same = paired_bootstrap(method, method, samples=50)
    assert (same["mean"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)


def test_a_policy_equal_to_its_reference_ties_on_every_pair():
    logps = torch.tensor([[-10.0, -11.0], [-9.0, -4.0], [-3.0, -3.5]])
    summary = training.heldout_summary(logps, logps)
    assert (summary["accuracy"], summary["ties"], summary["wins"], summary["losses"]) == (0.5, 3, 0, 0)
    assert summary["drift"] == 0.0


def test_matched_beta_is_beta_times_the_batch():
    assert training.method_config(METHODS["rpo-emb-matched"], TINY.replace(batch_size=8)).beta == pytest.approx(0.8)
    assert training.method_config(METHODS["rpo-emb"], TINY.replace(batch_size=8)).beta == pytest.approx(0.1)
    assert training.method_config(METHODS["dpo"], TINY.replace(batch_size=8)).beta == pytest.approx(0.1)


def test_every_method_of_the_study_has_its_own_cache_file_and_options():
    from pathlib import Path

    from rpo_lab.study.cache import run_path
    from rpo_lab.study.settings import SETTINGS_NAMES, TAU_ABLATION, tau_method

    settings = StudySettings()
    for setting in SETTINGS_NAMES:
        methods = settings.method_list(setting)
        assert len({run_path(Path("out"), setting, 0, m.key) for m in methods}) == len(methods)  # no collision
    for tau in TAU_ABLATION:  # each ablation row trains embedding weights at its own tau, matched beta
        config = training.method_config(tau_method(tau), settings)
        assert (config.loss, config.weighting, config.effective_tau, config.beta) == ("rpo", "embedding", tau,
                                                                                    pytest.approx(0.8))


def test_study_resumes_from_its_cache_without_retraining(tmp_path, monkeypatch):
    from rpo_lab.study import runner

    calls = {"train": 0, "sft": 0, "sample": 0}
    real_train, real_sft, real_sample = training.train_method, training.run_sft, runner.sample_scores

    def counted_sample(*args, **kwargs):
        calls["sample"] += 1
        return real_sample(*args, **kwargs)

    def counted_train(*args, **kwargs):
        calls["train"] += 1
        return real_train(*args, **kwargs)

    def counted_sft(*args, **kwargs):
        calls["sft"] += 1
        return real_sft(*args, **kwargs)

    monkeypatch.setattr(training, "train_method", counted_train)
    monkeypatch.setattr(training, "run_sft", counted_sft)
    monkeypatch.setattr(runner, "sample_scores", counted_sample)
    first = run_study(tmp_path, TINY, progress=False, embed=fake_embed)
    # 2 methods x 2 seeds; one SFT reference per seed; samples: each run + each seed's SFT reference once
    assert calls == {"train": 4, "sft": 2, "sample": 6}
    report = json.loads((tmp_path / "study.json").read_text())
    assert report["missing"] == [] and {row["method"] for row in report["tables"]["controlled"]} == {
        "dpo", "rpo-emb-matched"}
    assert "difference_to_dpo" in report["tables"]["controlled"][1]
    assert "judge_difference_to_dpo" in report["tables"]["controlled"][1]
    assert all(0 <= row["judge_win_rate"]["mean"] <= 1 for row in report["tables"]["controlled"])
    assert "judge win rate vs SFT" in (tmp_path / "study.md").read_text()
    for record in first.values():
        assert record["evals"][0]["accuracy"] == 0.5 and record["evals"][0]["ties"] == record["evals"][0]["n"]
        judge = record["judge"]
        assert len(judge["outcomes"]) == len(judge["responses"]) == len(record["heldout_prompts"])
        assert judge["win_rate"] == pytest.approx(sum(judge["outcomes"]) / len(judge["outcomes"]))

    calls.update(train=0, sft=0, sample=0)
    again = run_study(tmp_path, TINY, progress=False, embed=fake_embed)
    assert calls == {"train": 0, "sft": 0, "sample": 0}  # everything came from the cache
    assert again == first

    (tmp_path / "runs" / "controlled" / "seed1" / "dpo.json").unlink()  # as if killed during that run
    run_study(tmp_path, TINY, progress=False, embed=fake_embed)
    # only the missing run; its SFT reference and the SFT samples came from disk
    assert calls == {"train": 1, "sft": 0, "sample": 1}

    with pytest.raises(ValueError, match="other settings"):
        run_study(tmp_path, TINY.replace(learning_rate=5e-4), progress=False, embed=fake_embed)

    path = tmp_path / "runs" / "controlled" / "seed0" / "dpo.json"  # a run cached before the judge existed
    record = json.loads(path.read_text())
    record.pop("judge")
    record["settings"] = {k: v for k, v in record["settings"].items() if not k.startswith("judge_")}
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="before the judge win rate existed"):
        run_study(tmp_path, TINY, progress=False, embed=fake_embed)


def test_study_flags_override_the_preset_and_bad_values_are_refused():
    import argparse

    from rpo_lab.study.cli import register, settings_from_args

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["study", "--preset", "smoke", "--seeds", "3,4,5", "--steps", "7", "--tau-ablation",
                              "none", "--methods", "dpo kto"])
    settings = settings_from_args(args)
    assert (settings.seeds, settings.steps, settings.tau_ablation, settings.methods) == ((3, 4, 5), 7, (), ("dpo", "kto"))
    assert settings.model == "tiny-random:llama"  # the rest from the smoke preset
    with pytest.raises(ValueError, match="unknown method"):
        settings_from_args(parser.parse_args(["study", "--methods", "dpo,nope"]))
    with pytest.raises(SystemExit, match="--steps"):
        settings_from_args(parser.parse_args(["study", "--steps", "many"]))
