"""What RPO costs per training step compared with DPO, on the same model and the same batches.

    .venv/bin/python benchmarks/step_overhead.py                        # tiny random model (fast)
    .venv/bin/python benchmarks/step_overhead.py --model smollm2 --batch-size 4 --steps 5 --json out.json

Variants, each a full training step (``RPOTrainer.compute_loss`` + backward + AdamW step) on the
same fixed collated batches of demo pairs, from the same starting weights:

- ``dpo``                 DPO, reference log-probs precomputed (stored in the batch);
- ``rpo``                 RPO (paired, embedding weights), precomputed reference, prompt embeddings
                          computed once before training and read from the batch (this project);
- ``rpo_live_embedder``   RPO with the sentence encoder run on the batch's prompts at every step
                          (the official code's way; ``PromptEmbedder(use_cache=False)``);
- ``dpo_live_reference``  DPO with a frozen reference model run at every step;
- ``rpo_live_reference``  RPO with a frozen reference model run at every step.

Memory first, one variant at a time: on a GPU the peak of ``torch.cuda.max_memory_allocated``
over building the variant (model copy, optimizer, reference) and ``--memory-steps`` steps, minus
the memory in use before; on a CPU (Linux) the kernel's resident-memory high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs`` after ``malloc_trim``) minus the resident
memory before (elsewhere: resident memory sampled by a thread). Then time, with every variant
alive: ``--warmup`` untimed steps, then ``--steps`` timed steps interleaved (step k of every
variant, in a rotating order, before step k + 1 of any), so a background load that drifts hits
all variants alike; the median is reported. No sampler thread runs while steps are timed. Goals (issue 4): RPO / DPO step time
<= 1.03 and peak memory <= 1.02 with cached embeddings.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import statistics
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from rpo_tutorial.data.collate import PreferenceCollator
from rpo_tutorial.data.demo import load_demo
from rpo_tutorial.data.embeddings import PromptEmbedder, add_prompt_embeddings, prompt_text
from rpo_tutorial.models.loading import BUNDLED_POLICY
from rpo_tutorial.models.logprobs import precompute_reference_logps
from rpo_tutorial.training.config import TINY_MODEL_PREFIX, get_preset
from rpo_tutorial.training.run import load_models, tokenize_rows
from rpo_tutorial.training.trainer import RPOTrainer

MODELS = {"tiny": TINY_MODEL_PREFIX + "llama", "smollm2": BUNDLED_POLICY}
GOALS = {"time rpo / dpo": 1.03, "memory rpo / dpo": 1.02}


@dataclass(frozen=True)
class Variant:
    name: str
    loss: str  # "dpo" | "rpo"
    live_reference: bool = False  # a frozen reference model runs every step
    live_embedder: bool = False  # the sentence encoder runs on the batch's prompts every step


VARIANTS = (Variant("dpo", "dpo"), Variant("rpo", "rpo"), Variant("rpo_live_embedder", "rpo", live_embedder=True),
            Variant("dpo_live_reference", "dpo", live_reference=True),
            Variant("rpo_live_reference", "rpo", live_reference=True))
COMPARISONS = (("time rpo / dpo", "median_s", "rpo", "dpo"), ("memory rpo / dpo", "peak_bytes", "rpo", "dpo"),
               ("time rpo live embedder / cached", "median_s", "rpo_live_embedder", "rpo"),
               ("memory rpo live embedder / cached", "peak_bytes", "rpo_live_embedder", "rpo"),
               ("time dpo live reference / precomputed", "median_s", "dpo_live_reference", "dpo"),
               ("memory dpo live reference / precomputed", "peak_bytes", "dpo_live_reference", "dpo"),
               ("time rpo live reference / precomputed", "median_s", "rpo_live_reference", "rpo"))


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


class PeakMemory:
    """Peak memory over a block: the CUDA allocator's peak on a GPU; on a CPU (Linux) the kernel's
    resident-memory high-water mark (VmHWM, reset through /proc/self/clear_refs), or, where that
    cannot be reset, the resident memory sampled every ``interval_s`` by a thread."""

    def __init__(self, device: torch.device, interval_s: float = 0.001) -> None:
        self.device, self.interval_s, self.peak, self.base = device, interval_s, 0, 0
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "VmHWM"
        self._stop, self._thread = threading.Event(), None

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so RSS reflects live memory
        except OSError:
            pass
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                handle.write("5")  # reset the high-water mark to the current RSS
            self.base = _status_kib("VmRSS") * 1024
            return
        except OSError:
            self.kind = "sampled RSS"
        process = psutil.Process()
        self.base = self.peak = process.memory_info().rss
        self._stop.clear()

        def sample() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, process.memory_info().rss)
                time.sleep(self.interval_s)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        """Peak bytes above the memory in use at ``start``."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.base
        if self._thread is None:
            return _status_kib("VmHWM") * 1024 - self.base
        self._stop.set()
        self._thread.join()
        return self.peak - self.base


def build_batches(args, device: torch.device):
    """(tokenizer, base model, batches, prompt texts per batch): the demo pairs, reference log-probs attached."""
    config = get_preset("demo", model=MODELS[args.model], loss="rpo", progress=False)
    tokenizer, model = load_models(config)
    model.to(device)
    count = args.batch_size * args.num_batches
    rows = load_demo("train")[:count]
    if len(rows) < count:
        raise ValueError(f"--batch-size x --num-batches = {count} exceeds the {len(rows)} demo train rows")
    rows = add_prompt_embeddings(rows, PromptEmbedder(device=str(device)), show_progress=False)
    examples, _ = tokenize_rows(rows, tokenizer, config)
    collator = PreferenceCollator(tokenizer.pad_token_id)
    examples = precompute_reference_logps(model, examples, collator, batch_size=args.batch_size, progress=False)
    batches, prompts = [], []
    for start in range(0, count, args.batch_size):
        batches.append({k: v.to(device) for k, v in collator(examples[start:start + args.batch_size]).items()})
        prompts.append([prompt_text(row["prompt"]) for row in rows[start:start + args.batch_size]])
    return tokenizer, model, batches, prompts


def make_step(variant: Variant, base_model, tokenizer, device: torch.device, output_dir: str, learning_rate: float,
              model_name: str):
    """A closure running one training step of ``variant`` on a batch; builds its model copy and optimizer."""
    config = get_preset("demo", model=MODELS[model_name], loss=variant.loss, tau=0.5, weighting="embedding",
                        reference="model" if variant.live_reference else "precomputed", output_dir=output_dir,
                        progress=False)
    policy = copy.deepcopy(base_model).train()
    reference = copy.deepcopy(base_model) if variant.live_reference else None
    trainer = RPOTrainer(model=policy, config=config, reference_model=reference,
                         args=config.to_training_arguments(save_strategy="no", report_to="none"),
                         processing_class=tokenizer)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=learning_rate)
    embedder = PromptEmbedder(device=str(device), use_cache=False) if variant.live_embedder else None

    def step(batch: dict, prompts: list[str]) -> None:
        if embedder is not None:  # the official way: encode the batch's prompts inside the step
            embeddings = embedder.embed(prompts, show_progress=False).to(device)  # (B, D)
            batch = {**batch, "chosen_prompt_embeddings": embeddings, "rejected_prompt_embeddings": embeddings}
        loss = trainer.compute_loss(policy, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _timed(step, batch: dict, prompts: list[str], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    step(batch, prompts)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began


def build_variants(base_model, tokenizer, batches, prompts, args, device, output_dir: str) -> tuple[dict, dict]:
    """Memory phase: build each variant in turn and run ``--memory-steps`` steps under a PeakMemory.

    A throw-away first variant runs one step before, so one-time allocations are nobody's.

    Returns:
        ({variant name: step closure}, {variant name: peak bytes}); the closures stay alive for timing.
    """
    steps, peaks = {}, {}
    prime = make_step(VARIANTS[0], base_model, tokenizer, device, output_dir, args.learning_rate, args.model)
    prime(batches[0], prompts[0])  # one-time allocations (thread pools, lazy inits) before any measurement
    del prime
    for variant in VARIANTS:
        memory = PeakMemory(device)
        memory.start()  # before the model copy, optimizer and reference exist
        step = make_step(variant, base_model, tokenizer, device, output_dir, args.learning_rate, args.model)
        for index in range(args.memory_steps):
            step(batches[index % len(batches)], prompts[index % len(prompts)])
        peaks[variant.name] = memory.stop()
        steps[variant.name] = step
        print(f"  memory {variant.name:<20} peak +{peaks[variant.name] / 2**20:8.1f} MiB", flush=True)
    return steps, peaks


def time_variants(steps: dict, batches, prompts, args, device) -> dict[str, list[float]]:
    """Interleaved timing: step k of every variant runs before step k + 1 of any, in a rotating order,
    so a background load that drifts hits every variant alike."""
    names = list(steps)
    times = {name: [] for name in names}
    for index in range(args.warmup + args.steps):
        batch_index = index % len(batches)
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = _timed(steps[name], batches[batch_index], prompts[batch_index], device)
            if index >= args.warmup:
                times[name].append(seconds)
        if index >= args.warmup:
            print(f"  step {index - args.warmup + 1}/{args.steps}: " +
                  ", ".join(f"{name} {times[name][-1] * 1000:.0f} ms" for name in names), flush=True)
    return times


def benchmark(args) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer, base_model, batches, prompts = build_batches(args, device)
    with tempfile.TemporaryDirectory() as output_dir:
        steps, peaks = build_variants(base_model, tokenizer, batches, prompts, args, device, output_dir)
        times = time_variants(steps, batches, prompts, args, device)
    variants = {name: {"median_s": statistics.median(values), "mean_s": statistics.fmean(values),
                       "min_s": min(values), "times_s": values, "peak_bytes": peaks[name]}
                for name, values in times.items()}
    ratios = {label: variants[a][key] / variants[b][key] for label, key, a, b in COMPARISONS}
    lengths = [int(batch["attention_mask"].sum(1).max()) for batch in batches]
    return {"model": args.model, "device": str(device), "device_name": _device_name(device),
            "torch_threads": torch.get_num_threads(), "batch_size_pairs": args.batch_size,
            "num_batches": len(batches), "max_tokens_per_row": lengths, "warmup": args.warmup,
            "steps": args.steps, "memory_steps": args.memory_steps, "memory": _memory_kind(device),
            "variants": variants, "ratios": ratios,
            "goals": {label: {"goal": goal, "ratio": ratios[label], "met": ratios[label] <= goal}
                      for label, goal in GOALS.items()}}


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({psutil.cpu_count()} cores)"


def _memory_kind(device: torch.device) -> str:
    return ("cuda max_memory_allocated above the pre-variant allocation" if device.type == "cuda"
            else "peak resident memory (VmHWM) above the pre-variant RSS")


def table(result: dict) -> str:
    """A markdown table of the variants and one of the ratios."""
    dpo = result["variants"]["dpo"]
    lines = [f"model {result['model']} on {result['device_name']}, {result['batch_size_pairs']} pairs per step, "
             f"median of {result['steps']} interleaved steps, {result['torch_threads']} torch thread(s); "
             f"memory: {result['memory']}", "",
             "| variant | median step (ms) | vs dpo | peak memory (MiB) | vs dpo |", "|---|---|---|---|---|"]
    for name, values in result["variants"].items():
        lines.append(f"| {name} | {values['median_s'] * 1000:.1f} | {values['median_s'] / dpo['median_s']:.3f} | "
                     f"{values['peak_bytes'] / 2**20:.1f} | {values['peak_bytes'] / max(dpo['peak_bytes'], 1):.3f} |")
    lines += ["", "| comparison | ratio | goal |", "|---|---|---|"]
    for label, ratio in result["ratios"].items():
        goal = result["goals"].get(label)
        verdict = f"<= {goal['goal']} ({'met' if goal['met'] else 'NOT met'})" if goal else "-"
        lines.append(f"| {label} | {ratio:.3f} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (interleaved)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant after the memory phase")
    parser.add_argument("--memory-steps", type=int, default=2, help="steps per variant in the memory phase")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=8, help="preference pairs per step")
    parser.add_argument("--num-batches", type=int, default=2, help="distinct fixed batches, cycled")
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    parser.add_argument("--json", default=None, help="also write the results there")
    args = parser.parse_args(argv)
    for name in ("steps", "memory_steps", "batch_size", "num_batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    warnings.filterwarnings("ignore", message=".*tokenizer has new PAD/BOS/EOS.*")
    result = benchmark(args)
    print("\n" + table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
