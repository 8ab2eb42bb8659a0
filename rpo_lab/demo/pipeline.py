"""The end-to-end demo: SFT, then DPO and RPO from the same reference, then an offline evaluation.

    from rpo_lab.demo.pipeline import run_demo_pipeline
    results = run_demo_pipeline("outputs/demo")                   # the README's main job (minutes, CPU)
    results = run_demo_pipeline("outputs/smoke", preset="smoke")  # a tiny random model, seconds

Stages (each prints a line with the elapsed time; the long ones show tqdm bars):

1. data: the demo train pairs (a subset) and held-out prompts; prompt embeddings once (cached);
2. SFT of the bundled SmolLM2-135M-Instruct on the chosen responses (the paper's first stage);
3. reference log-probs of the SFT model on the preference pairs, computed ONCE and shared, so
   DPO and RPO see the same reference, the same examples, the same order, steps and lr;
4. DPO and RPO (paired, embedding weights, tau 0.5), each from a copy of the SFT model.
   Stages 2-4 train through the library's ``build_trainer``, as the CLI and notebooks do;
5. sampling on the held-out prompts from SFT, DPO, RPO (and, with ``include_instruct``, the
   instruct model) with the same seeds and settings as the dataset was made with (temperature 1,
   top-p 0.95), ``samples_per_prompt`` rounds;
6. the demo judge (VADER sentiment) against the SFT samples: win rates with Wilson intervals;
   implicit-reward accuracy of each policy on the held-out preference pairs;
7. results.json / results.md / samples.jsonl / training_and_winrates.png, then the models.

Choices made to fit 15 minutes on 2 CPU cores (``DemoSettings`` documents each number):
- Only the top ``trainable_layers`` decoder layers (and the final norm) are trained; the lower
  layers and the embeddings (tied to the LM head) stay frozen, so backward runs through the LM
  head and the top layers only. ``trainable_layers=None`` trains every parameter.
- Matched effective beta: DPO at beta 0.1, RPO at beta x N = 0.8 (N = 8 pairs per batch). Each
  row of RPO's embedding weights sums to 1, so one contrast of the paper's score placement acts
  like DPO with beta / N; at beta x N both pull back to the reference equally hard per contrast.
  ``rpo_beta=0.1`` gives the paper's setting (the study found that, with AdamW, it drifts at least
  as far as the matched one: Adam divides out the smaller gradient).
- Unsaturated training: the learning rate and steps (the same for both methods) keep the train
  margins at a few nats, effective beta x margin around 1 or below, so neither loss has flattened
  and the methods can still differ; results.md prints this check (``report.markdown_training``).
- Threads: on a busy machine PyTorch's OpenMP threads wait for each other at every operation
  (measured here: with other processes keeping both cores busy, one thread ran a training step
  ~2.5x and a sampling step ~10x faster than two). ``num_threads=None`` picks all cores when the
  machine is idle and fewer when its load average says other processes hold cores
  (``training.threads.load_aware_threads``, re-chosen before each stage).
- Results vary a little from run to run: the thread count changes the order of float sums, and
  Adam's first steps amplify such differences.
- The trained models are evaluated in memory and saved (safetensors) after the results are written;
  ``save_models=False`` skips saving (about 540 MB each).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from rpo_lab.demo.settings import METHODS, PIPELINE_SETTINGS, DemoSettings, StageLog, check_settings
from rpo_tutorial.data.tokenization import TokenizationReport
from rpo_tutorial.models.loading import train_top_layers
from rpo_tutorial.training.config import RPOConfig, get_preset
from rpo_tutorial.training.run import build_trainer, load_models, prepare_rows
from rpo_tutorial.training.threads import load_aware_threads
from rpo_tutorial.training.trainer import RPOTrainer


def stage_config(preset: str, settings: DemoSettings, loss: str, output_dir: Path, progress: bool) -> RPOConfig:
    """The training config of one stage: the preset, with the demo's sizes and one pass over the rows.

    No checkpoints (``save_steps=0``); the reference log-probs are precomputed once, in batches of
    ``settings.logprob_batch_size``.
    """
    beta = settings.rpo_training_beta if loss == "rpo" else settings.beta
    return get_preset(
        preset, loss=loss, output_dir=str(output_dir), per_device_train_batch_size=settings.batch_size,
        num_train_epochs=1.0 if loss == "sft" else settings.epochs, max_steps=-1, max_train_rows=None,
        warmup_steps=settings.warmup_steps,
        learning_rate=settings.sft_learning_rate if loss == "sft" else settings.learning_rate,
        beta=beta, tau=settings.tau, weighting="embedding", paired=None, reference="precomputed",
        logging_steps=1, seed=settings.seed, progress=progress, save_steps=0,
        precompute_batch_size=settings.logprob_batch_size)


def train_stage(config: RPOConfig, policy: torch.nn.Module, tokenizer, rows: Sequence[dict] | None = None,
                examples: Sequence[dict] | None = None) -> tuple[RPOTrainer, TokenizationReport | None, float]:
    """Train ``policy`` in place for one pass, through the library's ``build_trainer``; returns
    (trainer, tokenization report, seconds of training). metrics.jsonl goes to ``config.output_dir``.

    ``examples``: another stage's tokenized examples instead of ``rows`` (they keep their
    precomputed reference log-probs, so every method sees the same reference pass).
    """
    trainer, report = build_trainer(config, rows, policy=policy, tokenizer=tokenizer, examples=examples)
    began = time.perf_counter()
    trainer.train()
    return trainer, report, time.perf_counter() - began


def load_demo_rows(train_rows: Sequence[dict] | None, heldout_rows: Sequence[dict] | None,
                   settings: DemoSettings) -> tuple[list[dict], list[dict], list[dict]]:
    """(sft rows, preference rows, held-out rows): the first rows of the demo splits, or the ones given."""
    if train_rows is None or heldout_rows is None:
        from rpo_tutorial.data.demo import load_demo

        train_rows = load_demo("train") if train_rows is None else train_rows
        heldout_rows = load_demo("heldout") if heldout_rows is None else heldout_rows
    train_rows, heldout_rows = list(train_rows), list(heldout_rows)[: settings.heldout_prompts]
    if not train_rows or not heldout_rows:
        raise ValueError(f"need train and held-out rows, got {len(train_rows)} and {len(heldout_rows)}")
    return train_rows[: settings.sft_rows], train_rows[: settings.train_rows], heldout_rows


def run_demo_pipeline(output_dir: str | Path, preset: str = "demo", methods: Sequence[str] = METHODS,
                      settings: DemoSettings | None = None, train_rows: Sequence[dict] | None = None,
                      heldout_rows: Sequence[dict] | None = None, figure_copy: str | Path | None = None,
                      progress: bool = True) -> dict:
    """Run every stage (module docstring) and write the results into ``output_dir``.

    Args:
        preset: training preset ("demo": the bundled SmolLM2; "smoke": a tiny random model).
        methods: preference methods trained from the SFT model, a subset of ("dpo", "rpo").
        settings: sizes and hyper-parameters (default ``PIPELINE_SETTINGS[preset]``).
        train_rows, heldout_rows: rows ``{prompt, chosen, rejected, [id, cluster]}`` to use instead
            of the packaged demo splits (notebooks, tests).
        figure_copy: also copy the figure there (the CLI passes ``figures/demo_results.png``).
        progress: tqdm bars and stage lines.

    Returns:
        the content of ``results.json`` (``rows``: one per model with win rate, interval, counts,
        implicit-reward accuracy, mean judge score, train time).
    """
    settings = settings if settings is not None else PIPELINE_SETTINGS.get(preset, DemoSettings())
    methods = tuple(methods)
    check_settings(settings, methods)
    with load_aware_threads(settings.num_threads) as retune:  # re-chosen before each stage
        return _run_stages(Path(output_dir), preset, methods, settings, train_rows, heldout_rows, figure_copy,
                           progress, retune)


def _train_policies(log: StageLog, configs: dict, settings: DemoSettings, methods: tuple[str, ...],
                    sft_rows: list[dict], pair_rows: list[dict], tokenizer, policy) -> tuple[dict, dict, dict]:
    """Stages 2-4: SFT in place, shared reference log-probs, then each method from a copy of the SFT model.

    Every stage trains through ``build_trainer``. The first method's trainer runs the SFT model's
    reference pass (placed and laid out as in training); the others train on its examples, which
    carry those log-probs, so every method sees the same reference, examples, order, steps and lr.

    Returns:
        (policies {"sft", *methods}, train seconds per stage, tokenization reports)
    """
    train_times, reports = {}, {}
    with log.stage("sft", f"one pass over {len(sft_rows)} chosen responses"):
        _, reports["sft"], train_times["sft"] = train_stage(configs["sft"], policy, tokenizer, rows=sft_rows)
    policies = {"sft": policy, **{method: copy.deepcopy(policy) for method in methods}}
    with log.stage("reference log-probs", "SFT model on the preference pairs, once for every method"):
        first, reports["pairs"] = build_trainer(configs[methods[0]], pair_rows, policy=policies[methods[0]],
                                                tokenizer=tokenizer)
        examples = first.train_dataset  # tokenized pairs carrying the reference log-probs
    with log.stage("preference training", " and ".join(m.upper() for m in methods) + " from the SFT model"):
        for method in methods:
            if method == methods[0]:
                began = time.perf_counter()
                first.train()
                train_times[method] = time.perf_counter() - began
            else:
                _, _, train_times[method] = train_stage(configs[method], policies[method], tokenizer,
                                                        examples=examples)
            log.say(f"{method.upper()}: {len(examples)} pairs in {train_times[method]:.0f} s")
    return policies, train_times, reports


def _run_stages(output_dir: Path, preset: str, methods: tuple[str, ...], settings: DemoSettings,
                train_rows, heldout_rows, figure_copy, progress: bool, retune: Callable[[], None]) -> dict:
    from rpo_lab.demo.report import evaluate_policies, write_results

    output_dir.mkdir(parents=True, exist_ok=True)
    log = StageLog(total=7 + settings.save_models, enabled=progress, before_stage=retune)
    configs = {loss: stage_config(preset, settings, loss, output_dir / loss, progress) for loss in ("sft", *methods)}
    with log.stage("data", "demo pairs, held-out prompts, prompt embeddings"):
        sft_rows, pair_rows, heldout = load_demo_rows(train_rows, heldout_rows, settings)
        pair_rows = prepare_rows(pair_rows, configs["rpo"] if "rpo" in configs else configs[methods[0]])
        tokenizer, policy = load_models(configs["sft"])
        trainable = sum(p.numel() for p in train_top_layers(policy, settings.trainable_layers))
        log.say(f"{len(sft_rows)} SFT rows, {len(pair_rows)} preference pairs, {len(heldout)} held-out prompts; "
                f"{trainable / 1e6:.1f}M of {sum(p.numel() for p in policy.parameters()) / 1e6:.1f}M parameters "
                "trained")
    policies, train_times, reports = _train_policies(log, configs, settings, methods, sft_rows, pair_rows,
                                                     tokenizer, policy)
    evaluation = evaluate_policies(policies, tokenizer, heldout, configs, settings, log, progress)
    with log.stage("write results"):
        results = write_results(output_dir, preset, settings, methods, evaluation, train_times, reports,
                                log, configs, figure_copy)
    if settings.save_models:
        with log.stage("save models", "safetensors, float32"):
            for name, model in policies.items():
                model.save_pretrained(output_dir / name / "model", safe_serialization=True)
                tokenizer.save_pretrained(output_dir / name / "model")
    log.say(f"total {log.elapsed():.0f} s; results in {output_dir}")
    return results
