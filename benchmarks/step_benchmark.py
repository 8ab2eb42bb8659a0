"""Training-step time and memory: TRL's DPOTrainer, this project's DPO and RPO before / after the
lean log-probs (shared prompts, response-rows-only head), and the accumulated-contrast step (issue 10).

    .venv/bin/python benchmarks/step_benchmark.py --rounds 2                       # tiny model, batch 8 (a check)
    .venv/bin/python benchmarks/step_benchmark.py --models smollm2 --batch-sizes 8 32 --json out.json
    .venv/bin/python benchmarks/perf_table.py out.json                              # the README's table

Setting: the same policy and frozen reference model objects serve every variant (TRL patches their
``forward`` with its fused head, which leaves a call without ``fused_lm_head=True`` unchanged), the
same AdamW optimizer, the same demo pairs tokenised ONCE by this project and handed to TRL as
``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` (``DataCollatorForPreference``), so both compute
the same DPO loss (printed at the start weights; the reference is the policy plus 1 % noise so that
the loss is not log 2 whatever the tokenisation). A step is ``compute_loss`` + backward + AdamW step;
the reference model runs live in every variant (as in TRL's default). TRL runs each prompt twice
(in its chosen and its rejected row); ``dpo`` / ``rpo`` run it once: that saving is part of what
is compared, the tokens scored are the same.

Variants: ``trl_dpo`` (TRL ``DPOTrainer``, sigmoid loss, beta 0.1); ``dpo_before`` / ``rpo_before``
(this project with the previous log-probs: full (B, T, V) logits, one row at a time);
``dpo`` / ``rpo`` (the default path: each prompt run once with both responses on its KV cache,
``models.shared_prompt``, and the LM head on response rows only, ``models.head``); ``dpo_head_only``
(``share_prompts=False``: one forward over all rows, the head on response rows only: the path
before shared prompts); ``rpo_accum`` (the batch as
2 micro-batches, each its own contrast matrix) and ``rpo_accum_contrast`` (the same 2 micro-batches
with ``accumulate_contrast=True``: one matrix over both, exact gradient, one extra forward).

Protocol (``benchmarks/protocol.py``): one torch thread pinned to one core (``--no-pin`` to
skip), one unmeasured step, then each variant's first step alone under ``step_overhead.PeakMemory``
(CPU: the kernel's resident high-water mark VmHWM above the resident memory before the step; GPU:
the allocator's peak; models and optimizer state exist before, so this is the step's own working
memory) and under ``flops.FlopRecorder`` (the step's matmul FLOPs, from the shapes it ran);
``--warmup`` more untimed steps of each; then ``--rounds`` rounds, each variant once per round in
a seeded random order (``--order abba``: forward and backward alternately). Per variant: every
sample, median and IQR, GFLOP/s at the median and its fraction of the float32 matmul peak
measured on the same pinned thread; per comparison the median [IQR] of the per-round ratios.
The JSON also holds the date, CPU model, load averages (before, after every round, after),
torch version and thread count. ``benchmarks/README.md`` has the commands behind the README's
table and how long they take.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import FlopRecorder  # noqa: E402  (sibling scripts)
from protocol import (  # noqa: E402
    Protocol,
    add_protocol_arguments,
    load_average,
    machine_state,
    matmul_peak,
    paired_ratio,
    pin_to_one_core,
    protocol_from_args,
    run_rounds,
    summary,
)
from step_overhead import MODELS, PeakMemory, _device_name  # noqa: E402

from rpo_tutorial.data.collate import PreferenceCollator  # noqa: E402
from rpo_tutorial.data.demo import load_demo  # noqa: E402
from rpo_tutorial.data.embeddings import PromptEmbedder, add_prompt_embeddings  # noqa: E402
from rpo_tutorial.training.config import get_preset  # noqa: E402
from rpo_tutorial.training.run import load_models, tokenize_rows  # noqa: E402
from rpo_tutorial.training.trainer import RPOTrainer  # noqa: E402

# variants whose loss at the start weights is printed (same batch)
LOSS_CHECKS = ("trl_dpo", "dpo", "dpo_head_only", "rpo")
ALL_VARIANTS = ("trl_dpo", "dpo_before", "rpo_before", "dpo_head_only", "dpo", "rpo", "rpo_accum",
                "rpo_accum_contrast")
GOALS = (  # (label, numerator, denominator, measure, goal at batch 8, goal at batch 32)
    ("time dpo / trl_dpo", "dpo", "trl_dpo", "median_s", 0.7, 0.5),
    ("memory dpo / trl_dpo", "dpo", "trl_dpo", "peak_bytes", 0.7, 0.7),
    ("time rpo / dpo", "rpo", "dpo", "median_s", 1.03, 1.03),
    ("memory rpo / dpo", "rpo", "dpo", "peak_bytes", 1.02, 1.02),
    ("time rpo_accum_contrast / rpo_accum", "rpo_accum_contrast", "rpo_accum", "median_s", 1.5, 1.5),
    ("time dpo / dpo_head_only", "dpo", "dpo_head_only", "median_s", None, None),
    ("memory dpo / dpo_head_only", "dpo", "dpo_head_only", "peak_bytes", None, None),
    ("time dpo / dpo_before", "dpo", "dpo_before", "median_s", None, None),
    ("memory dpo / dpo_before", "dpo", "dpo_before", "peak_bytes", None, None),
    ("time rpo / rpo_before", "rpo", "rpo_before", "median_s", None, None),
)


def legacy_sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The log-probs before issue 10: full (B, T, V) logits, float32 log-softmax one row at a time."""
    mask = labels[:, 1:] != -100
    targets = labels[:, 1:].masked_fill(~mask, 0)
    totals = []
    for row in range(logits.shape[0]):
        row_logits = logits[row, :-1].float()  # (T-1, V)
        picked = row_logits.gather(-1, targets[row].unsqueeze(-1)).squeeze(-1)
        totals.append(((picked - torch.logsumexp(row_logits, dim=-1)) * mask[row]).sum())
    return torch.stack(totals)


class LegacyTrainer(RPOTrainer):
    """RPOTrainer with the previous ``_forward_logps`` (every position's logits)."""

    @staticmethod
    def _forward_logps(model, inputs):
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        return legacy_sequence_logps(outputs.logits, inputs["labels"])


def make_data(model_name: str, batch_sizes: list[int], device: torch.device):
    """Tokenised demo pairs with prompt embeddings, and per batch size one batch for us and one for TRL."""
    config = get_preset("demo", model=MODELS[model_name], loss="rpo", progress=False)
    tokenizer, policy = load_models(config)
    rows = add_prompt_embeddings(load_demo("train")[:max(batch_sizes)], PromptEmbedder(), show_progress=False)
    examples, _ = tokenize_rows(rows, tokenizer, config)
    if len(examples) < max(batch_sizes):
        raise ValueError(f"only {len(examples)} demo pairs for batch size {max(batch_sizes)}")
    batches = paired_batches(examples, tokenizer.pad_token_id, batch_sizes, device)
    return tokenizer, policy.to(device).train(), rows, batches


def paired_batches(examples: list[dict], pad_token_id: int, batch_sizes: list[int], device) -> dict:
    """{batch size: (our collated batch, TRL's)} of the first examples: the same tokens in both layouts."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    ours, theirs = PreferenceCollator(pad_token_id), DataCollatorForPreference(pad_token_id)
    batches = {}
    for size in batch_sizes:
        chunk = examples[:size]
        trl_rows = []
        for example in chunk:  # the prompt is the -100 prefix of the labels; the rest is the response
            prompt = sum(label == -100 for label in example["chosen_labels"])
            trl_rows.append({"prompt_ids": example["chosen_input_ids"][:prompt],
                             "chosen_ids": example["chosen_input_ids"][prompt:],
                             "rejected_ids": example["rejected_input_ids"][prompt:]})
            assert example["rejected_input_ids"][:prompt] == trl_rows[-1]["prompt_ids"]
        batches[size] = ({k: v.to(device) for k, v in ours(chunk).items()},
                         {k: v.to(device) for k, v in theirs(trl_rows).items()})
    return batches


def build_steps(names, policy, reference, tokenizer, rows, output_dir: str, optimizer) -> tuple[dict, dict]:
    """A step closure and a no-grad loss function per variant, all on the shared policy and reference."""
    steps, losses = {}, {}

    def finish():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for name in names:
        if name == "trl_dpo":
            from datasets import Dataset
            from trl import DPOConfig, DPOTrainer

            # bf16=False: TRL defaults to bf16, and preparing the shared reference would wrap it in autocast
            trl_args = DPOConfig(output_dir=output_dir, beta=0.1, loss_type=["sigmoid"], report_to="none",
                                 use_cpu=policy.device.type == "cpu", save_strategy="no", max_length=None,
                                 bf16=False)
            dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows[:4]])
            trainer = DPOTrainer(model=policy, ref_model=reference, args=trl_args, train_dataset=dataset,
                                 processing_class=tokenizer)

            def step(batches, trainer=trainer):
                trainer.compute_loss(policy, batches[1]).backward()
                finish()
            losses[name] = lambda batches, trainer=trainer: trainer.compute_loss(policy, batches[1])
        else:
            loss = "dpo" if name.startswith("dpo") else "rpo"
            accumulation = 2 if "accum" in name else 1
            config = get_preset("demo", loss=loss, weighting="embedding", tau=0.5, beta=0.1, reference="model",
                                output_dir=output_dir, progress=False, gradient_accumulation_steps=accumulation,
                                accumulate_contrast=name == "rpo_accum_contrast",
                                share_prompts=name != "dpo_head_only")
            trainer_class = LegacyTrainer if name.endswith("_before") else RPOTrainer
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trainer = trainer_class(model=policy, config=config, reference_model=reference,
                                        args=config.to_training_arguments(save_strategy="no", report_to="none"),
                                        processing_class=tokenizer)
            trainer.model_wrapped = policy

            def step(batches, trainer=trainer, accumulation=accumulation, name=name):
                micro = split(batches[0], accumulation)
                if name == "rpo_accum_contrast":
                    trainer._accumulated = trainer._accumulate_step(micro)  # the full-step pass the Trainer runs
                for part in micro:
                    value = trainer.compute_loss(policy, part)
                    (value if trainer.loss_is_scaled_for_ga else value / accumulation).backward()
                finish()
            losses[name] = lambda batches, trainer=trainer: trainer.compute_loss(policy, batches[0])
        steps[name] = step
    return steps, losses


def split(batch: dict, parts: int) -> list[dict]:
    """A paired stacked batch (M chosen rows, then M rejected) as ``parts`` paired micro-batches."""
    if parts == 1:
        return [batch]
    m = int(batch["num_chosen"])
    size = m // parts
    out = []
    for k in range(parts):
        rows = torch.cat([torch.arange(k * size, (k + 1) * size), m + torch.arange(k * size, (k + 1) * size)])
        part = {key: (value[rows.to(value.device)] if torch.is_tensor(value) and value.dim() and value.shape[0] == 2 * m
                      else value) for key, value in batch.items()}
        for key in ("chosen_prompt_embeddings", "rejected_prompt_embeddings"):
            part[key] = batch[key][k * size:(k + 1) * size]
        part["num_chosen"] = torch.tensor(size)
        out.append(part)
    return out


def run_size(names, steps, batches, protocol: Protocol, args, device, models) -> dict:
    """Memory and FLOPs (each variant's first step alone), then the protocol's warm-up and timed rounds."""
    peaks, flops, first_s = {}, {}, {}
    if args.prime:  # one unmeasured step first: AdamW state and lazy inits belong to no variant
        steps[names[-1]](batches)
        args.prime = False
    for name in names:
        memory = PeakMemory(device)
        memory.start()
        began = time.perf_counter()
        with FlopRecorder(models) as recorder:
            steps[name](batches)
        first_s[name] = time.perf_counter() - began
        peaks[name] = memory.stop()
        flops[name] = recorder
    estimate = (protocol.warmup + protocol.rounds) * sum(first_s.values())
    print(f"    first steps took {sum(first_s.values()):.1f} s in all: about {estimate / 60:.1f} min for "
          f"{protocol.warmup} warm-up + {protocol.rounds} timed rounds", flush=True)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None

    def report(index: int, seconds: dict) -> None:
        print(f"    round {index + 1}/{protocol.rounds}: " + ", ".join(f"{n} {v:.2f} s" for n, v in seconds.items()),
              flush=True)

    timed = run_rounds({name: functools.partial(steps[name], batches) for name in names}, protocol, sync, report)
    variants = {}
    for name in names:
        stats = summary(timed["samples_s"][name])
        rate = flops[name].total / stats["median"] / 1e9
        variants[name] = {"samples_s": stats["samples"], "median_s": stats["median"], "q1_s": stats["q1"],
                          "q3_s": stats["q3"], "iqr_s": stats["iqr"], "first_step_s": first_s[name],
                          "peak_bytes": peaks[name], "flops": flops[name].total, "flops_parts": flops[name].parts,
                          "gflops_per_s": rate, "peak_fraction": rate / args.peak_gflops}
    return {"variants": variants, "orders": timed["orders"], "load_after_round": timed["load_after_round"]}


def benchmark(args, model_name: str) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    args.prime = not args.no_prime
    tokenizer, policy, rows, batches = make_data(model_name, args.batch_sizes, device)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    with torch.no_grad():  # a reference unlike the policy, so the loss check is not log 2 for any tokenisation
        for parameter in reference.parameters():
            parameter.add_(args.reference_noise * parameter.std() * torch.randn_like(parameter))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=args.learning_rate)
    results = {"model": model_name, "device_name": _device_name(device), "torch_threads": torch.get_num_threads(),
               "sizes": {}}
    with tempfile.TemporaryDirectory() as output_dir:
        steps, losses = build_steps(args.variants, policy, reference, tokenizer, rows, output_dir, optimizer)
        for size in args.batch_sizes:
            names = [n for n in args.variants if size <= args.max_batch_for_all or n in args.large_batch_variants]
            with torch.no_grad():  # the same starting weights for every variant: losses must agree
                start_losses = {name: float(losses[name](batches[size])) for name in names if name in LOSS_CHECKS}
            tokens = int(batches[size][0]["attention_mask"].sum(1).max())
            print(f"  batch {size} pairs ({2 * size} rows x up to {tokens} tokens): "
                  + ", ".join(f"{n} loss {v:.7f}" for n, v in start_losses.items()), flush=True)
            protocol = args.protocol if size <= args.max_batch_for_all else Protocol(
                **{**args.protocol.to_dict(), "rounds": args.large_batch_rounds or args.protocol.rounds})
            if args.loss_only:
                results["sizes"][str(size)] = {"start_losses": start_losses, "max_tokens": tokens}
                continue
            block = run_size(names, steps, batches[size], protocol, args, device, [policy, reference])
            for name in names:
                block["variants"][name]["start_loss"] = start_losses.get(name, float("nan"))
            results["sizes"][str(size)] = {"pairs": size, "max_tokens": tokens, "rounds": protocol.rounds, **block,
                                           "ratios": ratios(block["variants"], size)}
            print(table({**results, "sizes": {str(size): results["sizes"][str(size)]}}), flush=True)
    return results


def ratios(variants: dict, size: int) -> dict:
    """Each comparison of ``GOALS``: time as the median [IQR] of the per-round ratios, memory as one ratio."""
    out = {}
    for label, top, bottom, measure, goal8, goal32 in GOALS:
        if top in variants and bottom in variants:
            goal = goal8 if size <= 8 else goal32
            if measure == "median_s":
                entry = paired_ratio(variants[top]["samples_s"], variants[bottom]["samples_s"])
            else:
                value = variants[top][measure] / max(variants[bottom][measure], 1e-12)
                entry = {"median": value, "q1": value, "q3": value, "n": 1}
            entry.update(goal=goal, met=None if goal is None else entry["median"] <= goal)
            out[label] = entry
    if "trl_dpo" in variants and "dpo" in variants:
        value = abs(variants["dpo"]["start_loss"] - variants["trl_dpo"]["start_loss"])
        out["|loss dpo - loss trl_dpo|"] = {"median": value, "q1": value, "q3": value, "n": 1, "goal": None,
                                            "met": None}
    return out


def table(result: dict) -> str:
    """The progress table printed after each batch size (``perf_table.py`` renders the README's)."""
    lines = [f"model {result['model']} on {result['device_name']}, {result['torch_threads']} torch thread(s); "
             "median [IQR] of the timed rounds; memory: the step's peak above its start", ""]
    for size, block in result["sizes"].items():
        lines += [f"batch {size} pairs (up to {block['max_tokens']} tokens per row), {block['rounds']} rounds", "",
                  "| variant | step s, median [IQR] | GFLOP per step | GFLOP/s | of peak | peak MiB | loss at start |",
                  "|---|---|---|---|---|---|---|"]
        for name, values in block["variants"].items():
            lines.append(f"| {name} | {values['median_s']:.3f} [{values['q1_s']:.3f}, {values['q3_s']:.3f}] | "
                         f"{values['flops'] / 1e9:.1f} | {values['gflops_per_s']:.2f} | "
                         f"{values['peak_fraction']:.1%} | {values['peak_bytes'] / 2**20:.0f} | "
                         f"{values['start_loss']:.7f} |")
        lines += ["", "| comparison | median [IQR] | goal |", "|---|---|---|"]
        for label, entry in block["ratios"].items():
            goal = "-" if entry["goal"] is None else f"<= {entry['goal']} ({'met' if entry['met'] else 'NOT met'})"
            lines.append(f"| {label} | {entry['median']:.3g} [{entry['q1']:.3g}, {entry['q3']:.3g}] | {goal} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8], help="preference pairs per step")
    parser.add_argument("--variants", nargs="+", choices=ALL_VARIANTS, default=list(ALL_VARIANTS))
    parser.add_argument("--max-batch-for-all", type=int, default=8,
                        help="larger batch sizes run only --large-batch-variants")
    parser.add_argument("--large-batch-variants", nargs="+",
                        default=["trl_dpo", "dpo_before", "dpo_head_only", "dpo", "rpo"])
    parser.add_argument("--large-batch-rounds", type=int, default=None,
                        help="timed rounds at the larger batch sizes (default: --rounds)")
    parser.add_argument("--learning-rate", type=float, default=1e-7)
    parser.add_argument("--no-prime", action="store_true", help="skip the unmeasured first step")
    parser.add_argument("--reference-noise", type=float, default=0.01,
                        help="reference = policy + this x each tensor's std x N(0, 1) noise (0: the same weights)")
    parser.add_argument("--loss-only", action="store_true", help="only print the losses at the start weights")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    parser.add_argument("--json", default=None, help="also write the results there")
    add_protocol_arguments(parser)
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 2 or any(size % 2 for size in args.batch_sizes):
        parser.error("batch sizes must be even (the accumulated variants split them in two)")
    try:
        args.protocol = protocol_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    warnings.filterwarnings("ignore", message=".*tokenizer has new PAD/BOS/EOS.*")
    pinning = pin_to_one_core() if args.protocol.pin else {"pinned": False, "error": "--no-pin"}
    machine = machine_state()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    peak = matmul_peak(device=device)
    args.peak_gflops = peak["peak_gflops"]
    print(f"{machine['cpu_model']}, load {machine['load_average']}, torch {machine['torch']}, "
          f"{machine['torch_threads']} thread(s), pinned: {pinning['pinned']}; float32 matmul peak "
          f"{peak['peak_gflops']} GFLOP/s", flush=True)
    result = {"schema": "rpo_tutorial.step_benchmark/2", "command": ["benchmarks/step_benchmark.py", *(argv or
              sys.argv[1:])], "machine": machine, "pinning": pinning, "matmul_peak": peak,
              "protocol": args.protocol.to_dict(), "models": {}}
    for model_name in args.models:
        print(f"{model_name}:", flush=True)
        result["models"][model_name] = benchmark(args, model_name)
    result["load_average_after"] = load_average()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
