"""The GPU check of issues 21 and 22: ONE command, one table, one JSON.

    python benchmarks/gpu_check.py --all --json benchmarks/gpu_check_h200.json   # one GPU, <= 8 min on an H200
    python benchmarks/gpu_check.py --all --tiny --json /tmp/check.json           # every part on a CPU (CI)
    python benchmarks/gpu_check.py --part paper-model                            # one part (the old default)

TRL (part ``trl``) is not installed on the GPU machine: carry it as wheels made here by
``benchmarks/gpu_check_prepare.sh`` and install them first (``--wheel-dir`` names the folder the
script checks; see that script). Parts, each in its own process (so one failure or one
out-of-memory leaves the others running, and each starts with an empty GPU):

- ``paper-model`` / ``paper-precomputed``: ``get_preset("paper")`` (bf16, FSDP2 full shard with
  activation checkpointing on each MistralDecoderLayer, RMSprop, embedding weights) and
  ``RPOTrainer`` as ``rpo-tutorial train`` builds them, on a randomly initialised Mistral-7B-shaped
  model (built on the meta device, materialised on the GPU; nothing is downloaded), as a
  one-process FSDP2 group, 8 pairs x 512 tokens (256 prompt + 256 response), 3 steps; the
  reference live (``model``) or precomputed once. Peak GPU memory during the steps and step
  times next to the one-GPU estimates (``estimates.per_gpu_memory(num_gpus=1)``; step time at
  40 % of the H200's 989 TFLOP/s bf16 peak from ``estimates.training_flops``), and the
  step-0 log-ratios, which must be exactly 0.
- ``shared-prompt``: the shared-prompt forward on the device (sdpa) against the one-forward
  path on a SmolLM2-135M-shaped model: log-probs and every parameter gradient in float32 (TF32
  off) and under bf16 autocast; with ``flash_attn`` importable, the flash-attention-2 model must
  take the one-forward path and agree with sdpa.
- ``trl``: this project's DPO (shared prompts; and ``--no-share-prompts``) and RPO steps against
  TRL's ``DPOTrainer`` (its fused chunked head: on CUDA it scores only label rows) at the
  SmolLM2-135M shape, bf16 autocast, batch 8 and 32 pairs of random tokens (prompts 16-40,
  responses 30-64 tokens, the demo's lengths), with ``benchmarks/protocol.py``: 7 rounds in a
  seeded random order, median [IQR], FLOPs and the fraction of the measured bf16 matmul peak.
  The shared-prompt gain is dpo / dpo_head_only from the same rounds.
- ``fsdp-run``: ``run_training`` as a one-process FSDP2 group on NCCL (gloo on a CPU), 2 steps
  of a tiny random Llama, bf16; its final folder must load with ``from_pretrained`` and equal
  the trained weights.

Sizing on an H200 (about 790 TFLOP/s of bf16 matmul measured, 4.3 TB/s): a paper step is
6 x 7.2e9 x 8192 tokens + a quarter more for the checkpointed recompute + 2 x 7.2e9 x 8192 for
the live reference, ~5.5e14 FLOPs, ~1.5 s at 40 %; each paper part is ~60-90 s (CUDA start,
imports, 29 GB of random weights and a bf16 reference copy, FSDP wrapping, 3 steps; the
precomputed part adds a 24-example pass). ``trl``: a 135M-parameter step is ~0.05-0.3 s, so 4
variants x (1 memory + 1 warm-up + 7 rounds) x 2 batch sizes is < 1 min after ~40 s of imports
and set-up. ``shared-prompt`` and ``fsdp-run``: ~30-40 s each. About 5 min in all; every part
has a time limit (:data:`PART_LIMITS_S`: 120 + 120 + 60 + 120 + 60 s = 8 min) so the whole run
ends within 8 min whatever happens (``--time-scale`` multiplies the limits, for slow CPUs).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))
sys.path.insert(0, str(BENCHMARKS))

PARTS = ("paper-model", "paper-precomputed", "shared-prompt", "trl", "fsdp-run")
PART_LIMITS_S = {"paper-model": 120, "paper-precomputed": 120, "shared-prompt": 60, "trl": 120, "fsdp-run": 60}
H200_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 / H200 SXM (the device measured ~790e12 on large GEMMs)
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
               rms_norm_eps=1e-5, tie_word_embeddings=True)  # HuggingFaceTB/SmolLM2-135M-Instruct's config.json
TINY_LLAMA = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)


# ---- shared helpers -------------------------------------------------------------------------------
def single_process_group() -> None:
    """The variables torchrun would set, for a one-process group (FSDP needs a process group)."""
    if "LOCAL_RANK" in os.environ:
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def enable_cpu_fsdp() -> None:
    """On a CPU (``--tiny``) let accelerate run FSDP2 over gloo: the tests' switch (tests/training/dist_scripts)."""
    sys.path.insert(0, str(BENCHMARKS.parent / "tests" / "training" / "dist_scripts"))
    import cpu_fsdp

    cpu_fsdp.enable()


def import_estimates():
    """The lab's ``estimates`` module (imported late: the script sets up the process group first)."""
    from rpo_lab import estimates

    return estimates


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def word_tokenizer(vocab_size: int):
    """A tokenizer of ``vocab_size`` words "w0" ... (w0 pads, w1 ends a sequence): needs no files or hub."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{index}": index for index in range(vocab_size)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="w2"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="w0", eos_token="w1", unk_token="w2")


def random_pairs(count: int, vocab: int, prompt: tuple[int, int], response: tuple[int, int], dim: int = 384,
                 seed: int = 0) -> list[dict]:
    """Tokenised pairs (this project's layout) with random ids, lengths and prompt embeddings."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        prompt_ids = [rng.randrange(3, vocab) for _ in range(rng.randint(*prompt))]
        sides = {}
        for side in ("chosen", "rejected"):
            answer = [rng.randrange(3, vocab) for _ in range(rng.randint(*response))]
            sides[f"{side}_input_ids"] = prompt_ids + answer
            sides[f"{side}_labels"] = [-100] * len(prompt_ids) + answer
        examples.append({**sides, "prompt_embedding": [rng.gauss(0.0, 1.0) for _ in range(dim)]})
    return examples


def as_text(example: dict) -> dict:
    """A tokenised pair back as the word tokenizer's text (TRL's DPOTrainer wants a text dataset)."""
    prompt = sum(label == -100 for label in example["chosen_labels"])

    def words(ids):
        return " ".join(f"w{index}" for index in ids)

    return {"prompt": words(example["chosen_input_ids"][:prompt]),
            "chosen": words(example["chosen_input_ids"][prompt:]),
            "rejected": words(example["rejected_input_ids"][prompt:])}


# ---- part: the paper step ------------------------------------------------------------------------
def mistral_config(tiny: bool):
    from transformers import MistralConfig

    if tiny:
        return MistralConfig(vocab_size=512, hidden_size=64, intermediate_size=224, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False)
    return MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                         tie_word_embeddings=False)  # mistralai/Mistral-7B-v0.1's config.json


def random_model(config, device: str, model_class=None):
    """Built on the meta device (no memory), then materialised on ``device`` with random weights."""
    import torch
    from transformers import MistralForCausalLM

    with torch.device("meta"):
        model = (model_class or MistralForCausalLM)(config)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:  # RMSNorm weights
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    model.model.rotary_emb = type(model.model.rotary_emb)(config).to(device)  # to_empty left its buffers unset
    model.config.pad_token_id = 0
    return model


def paper_step(args, reference_mode: str) -> dict:
    """The paper preset's steps; memory, times and step-0 log-ratios (module docstring)."""
    single_process_group()
    import torch
    from transformers import TrainerCallback

    from flops import FlopRecorder
    from rpo_tutorial.data.collate import PreferenceCollator
    from rpo_tutorial.training import trainer as trainer_module
    from rpo_tutorial.training.config import get_preset
    from rpo_tutorial.training.forward_plan import choose_forward_plan
    from rpo_tutorial.training.run import load_reference
    from rpo_tutorial.training.trainer import RPOTrainer

    estimates = import_estimates()
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda:
        enable_cpu_fsdp()
    device = "cuda" if cuda else "cpu"
    config = mistral_config(args.tiny)
    pairs, length = (2, 32) if args.tiny else (args.pairs, args.length)
    rpo = get_preset("paper", max_steps=args.steps, save_steps=0, logging_steps=1, warmup_steps=0, progress=False,
                     output_dir=tempfile.mkdtemp(prefix="gpu_check_"), per_device_train_batch_size=pairs,
                     reference=reference_mode, precompute_batch_size=pairs)
    began = time.perf_counter()
    policy = random_model(config, device)
    reference = load_reference(rpo, policy, from_config=False)  # what run.build_trainer does
    examples = random_pairs(pairs * args.steps, config.vocab_size, (length // 2, length // 2),
                            (length - length // 2, length - length // 2))

    ratios: list[torch.Tensor] = []
    original = trainer_module.scoped_objective

    def record(logps, objective_config):  # the first micro-batch's log-ratios, before any optimizer step
        if not ratios:
            ratios.append(torch.cat([logps.policy_chosen_logps - logps.reference_chosen_logps,
                                     logps.policy_rejected_logps - logps.reference_rejected_logps]).detach())
        return original(logps, objective_config)

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.begun, self.recorder = [], 0.0, None

        def on_train_begin(self, *_, **__):  # the models are prepared (sharded): count the steps only
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            if not self.times and self.recorder is None:  # the first step's FLOPs
                self.recorder = FlopRecorder([trainer.model] + ([trainer.reference_model]
                                                                if trainer.reference_model is not None else []),
                                             recompute_body=True).__enter__()
            self.begun = time.perf_counter()

        def on_step_end(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.begun)
            if len(self.times) == 1:
                self.recorder.__exit__(None, None, None)

    clock = Clock()
    trainer_module.scoped_objective = record
    try:
        # as run.build_trainer: the layout decided once; "precomputed" runs the reference pass in the trainer,
        # the reference sharded like the policy, batches padded to the plan's length under bf16
        plan = choose_forward_plan(rpo, rpo.to_training_arguments(), [policy, reference], examples)
        collator = PreferenceCollator(0, pad_to_length=plan.pad_to_length)
        trainer = RPOTrainer(model=policy, config=rpo, train_dataset=examples, data_collator=collator,
                             reference_model=reference, forward_plan=plan, callbacks=[clock])
        del policy, reference
        setup_s = time.perf_counter() - began
        trainer.train()
    finally:
        trainer_module.scoped_objective = original
    shape = estimates.DecoderShape(config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                                   config.num_attention_heads, config.num_key_value_heads, config.vocab_size)
    predicted = estimates.per_gpu_memory(shape, num_gpus=1, sequences=2 * pairs, sequence_length=length,
                                         reference=reference_mode)
    step_flops = clock.recorder.total if clock.recorder else None
    predicted_flops = estimates.training_flops(estimates.parameter_count(shape), 2 * pairs * length,
                                               reference_forward=reference_mode == "model")
    steady = clock.times[1:] or clock.times
    median_s = statistics.median(steady)
    return {
        "device": device_name(), "route": trainer.distribution["route"], "reference": reference_mode,
        "shape": "tiny" if args.tiny else "mistral-7b", "pairs": pairs, "length": length,
        "setup_s": round(setup_s, 1), "step_s": [round(t, 3) for t in clock.times], "median_step_s": median_s,
        "peak_gb": round(torch.cuda.max_memory_allocated() / estimates.GB, 2) if cuda else None,
        "predicted_gb": round(predicted["total"] / estimates.GB, 2),
        "predicted_8gpu_gb": round(estimates.per_gpu_memory(shape, 8, 2 * pairs, length,
                                                            reference=reference_mode)["total"] / estimates.GB, 2),
        "step_flops": step_flops, "predicted_step_flops": predicted_flops,
        "predicted_step_s_at_40pct": predicted_flops / (H200_BF16_PEAK * 0.4),
        "mfu_vs_989_tflops": (step_flops / median_s / H200_BF16_PEAK) if step_flops and cuda else None,
        "step0_max_abs_log_ratio": ratios[0].abs().max().item() if ratios else None,
    }


# ---- part: the shared-prompt forward on the device -------------------------------------------------
def llama(tiny: bool, device: str, attention: str = "sdpa", seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**(TINY_LLAMA if tiny else SMOLLM2), attn_implementation=attention)
    model = LlamaForCausalLM(config).to(device)
    model.config.pad_token_id = 0
    return model


def shared_prompt_check(args) -> dict:
    """Shared-prompt vs one-forward log-probs and gradients: float32 (TF32 off) and bf16 autocast."""
    import torch

    from rpo_tutorial.data.collate import PreferenceCollator
    from rpo_tutorial.models.head import model_sequence_logps
    from rpo_tutorial.models.shared_prompt import prompt_sharing_sequence_logps, shared_prompt_problem

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = llama(args.tiny, device)
    vocab = model.config.vocab_size
    batch = PreferenceCollator(0)(random_pairs(8, vocab, (16, 40), (30, 64), seed=1))
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    result = {"device": device_name(), "problem": shared_prompt_problem(model)}

    def logps_and_grads(shared: bool, dtype):
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            if shared:
                logps = prompt_sharing_sequence_logps(model, batch["input_ids"], batch["attention_mask"],
                                                      batch["labels"], int(batch["num_chosen"]))
            else:
                logps = model_sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        logps.sum().backward()
        grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
        return logps.detach().float(), grads

    for dtype in ("fp32", "bf16"):
        shared, shared_grads = logps_and_grads(True, dtype)
        plain, plain_grads = logps_and_grads(False, dtype)
        result[dtype] = {
            "max_abs_logp_difference": (shared - plain).abs().max().item(),
            "max_rel_logp_difference": ((shared - plain).abs() / plain.abs().clamp_min(1e-6)).max().item(),
            "max_grad_difference_over_max_grad": ((shared_grads - plain_grads).abs().max()
                                                  / plain_grads.abs().max().clamp_min(1e-12)).item()}
    result["fp32_ok"] = result["fp32"]["max_rel_logp_difference"] < 1e-4 and \
        result["fp32"]["max_grad_difference_over_max_grad"] < 1e-3
    if importlib.util.find_spec("flash_attn") is None or device != "cuda":
        result["flash_attention"] = "flash_attn not importable (or no GPU): not checked"
    else:
        flash = llama(args.tiny, device, attention="flash_attention_2").to(torch.bfloat16)
        flash.load_state_dict(model.state_dict())
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
            fast = prompt_sharing_sequence_logps(flash, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                                 int(batch["num_chosen"]))
            sdpa = model_sequence_logps(model.to(torch.bfloat16), batch["input_ids"], batch["attention_mask"],
                                        batch["labels"])
        result["flash_attention"] = {"problem": shared_prompt_problem(flash),
                                     "max_abs_logp_difference_vs_sdpa": (fast - sdpa).abs().max().item()}
    return result


# ---- part: TRL's DPOTrainer against this project's steps ------------------------------------------
def trl_comparison(args) -> dict:
    """step_benchmark.py's variants on random tokens at the SmolLM2 shape, bf16 autocast, the protocol."""
    import copy
    import functools
    from types import SimpleNamespace

    import torch

    import step_benchmark
    from protocol import Protocol, matmul_peak

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    torch.manual_seed(0)
    policy = llama(args.tiny, str(device)).train()
    tokenizer = word_tokenizer(policy.config.vocab_size)
    sizes = [2, 4] if args.tiny else [8, 32]
    examples = random_pairs(max(sizes), policy.config.vocab_size, (16, 40), (30, 64), seed=2)
    batches = step_benchmark.paired_batches(examples, tokenizer.pad_token_id, sizes, device)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    with torch.no_grad():  # as step_benchmark: a reference unlike the policy
        for parameter in reference.parameters():
            parameter.add_(0.01 * parameter.std() * torch.randn_like(parameter))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-7)
    names = ["trl_dpo", "dpo_head_only", "dpo", "rpo"]
    rows = [as_text(example) for example in examples[:4]]
    steps, losses = step_benchmark.build_steps(names, policy, reference, tokenizer, rows,
                                               tempfile.mkdtemp(prefix="gpu_check_trl_"), optimizer)

    def bf16(step, batch):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            step(batch)

    peak = matmul_peak(size=256 if args.tiny else 8192, repeats=3 if args.tiny else 10, dtype=torch.bfloat16,
                       device=device.type)
    options = SimpleNamespace(prime=True, peak_gflops=peak["peak_gflops"])
    protocol = Protocol(rounds=2 if args.tiny else args.rounds, warmup=1, order="shuffled", seed=0, pin=False)
    result = {"device": device_name(), "bf16_matmul_peak": peak, "protocol": protocol.to_dict(), "sizes": {}}
    for size in sizes:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            start = {name: float(losses[name](batches[size])) for name in ("trl_dpo", "dpo")}
        wrapped = {name: functools.partial(bf16, steps[name]) for name in names}
        block = step_benchmark.run_size(names, wrapped, batches[size], protocol, options, device, [policy, reference])
        for name in names:
            block["variants"][name]["start_loss"] = start.get(name, float("nan"))
        block["ratios"] = step_benchmark.ratios(block["variants"], size)
        result["sizes"][str(size)] = {"pairs": size, "rounds": protocol.rounds, **block}
    return result


# ---- part: a one-process FSDP2 run through run_training ---------------------------------------------
def fsdp_run(args) -> dict:
    """run_training, FSDP2 on one process (NCCL on a GPU, gloo on a CPU), 2 steps; the folder must load."""
    single_process_group()
    import torch
    from transformers import AutoModelForCausalLM

    from rpo_tutorial.training.config import get_preset
    from rpo_tutorial.training.run import run_training

    if not torch.cuda.is_available() or args.tiny:
        enable_cpu_fsdp()
    folder = Path(tempfile.mkdtemp(prefix="gpu_check_fsdp_"))
    tokenizer = word_tokenizer(512)
    tokenizer.save_pretrained(folder / "tokenizer")
    rng = random.Random(3)
    rows = [{"prompt": " ".join(f"w{rng.randrange(3, 512)}" for _ in range(12)),
             "chosen": " ".join(f"w{rng.randrange(3, 512)}" for _ in range(8)),
             "rejected": " ".join(f"w{rng.randrange(3, 512)}" for _ in range(6)),
             "prompt_embedding": [rng.gauss(0.0, 1.0) for _ in range(8)]} for _ in range(8)]
    config = get_preset("smoke", tokenizer=str(folder / "tokenizer"), max_steps=2, per_device_train_batch_size=4,
                        bf16=True, fsdp=True, fsdp_layer_class="LlamaDecoderLayer", reference="model",
                        output_dir=str(folder / "run"))
    result = run_training(config, rows=rows)
    model = result.trainer.accelerator.unwrap_model(result.trainer.model)
    trained = {name: (value.full_tensor() if hasattr(value, "full_tensor") else value).detach().float().cpu()
               for name, value in model.state_dict().items()}  # FSDP2 parameters are DTensor shards
    loaded = AutoModelForCausalLM.from_pretrained(result.output_dir)
    differences = [(value.float() - trained[name]).abs().max().item() for name, value in loaded.state_dict().items()
                   if name in trained]
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else None
    return {"device": device_name(), "route": result.trainer.distribution["route"], "backend": backend,
            "steps": result.global_step, "loaded_tensors": len(differences),
            "loaded_max_difference": max(differences) if differences else None}


# ---- the one command ----------------------------------------------------------------------------------
def run_part(name: str, args) -> dict:
    if name in ("paper-model", "paper-precomputed"):
        return paper_step(args, name.split("-", 1)[1])
    return {"shared-prompt": shared_prompt_check, "trl": trl_comparison, "fsdp-run": fsdp_run}[name](args)


def run_all(args) -> dict:
    """Every part in its own process with a time limit; one JSON of all of them."""
    from protocol import load_average, machine_state

    parts, began = {}, time.perf_counter()
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR")}
    for name in args.parts:
        out = Path(tempfile.mkdtemp(prefix="gpu_check_part_")) / "part.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--json", str(out),
                   "--rounds", str(args.rounds)] + (["--tiny"] if args.tiny else [])
        print(f"[{time.perf_counter() - began:6.1f} s] part {name} ...", flush=True)
        started = time.perf_counter()
        try:
            finished = subprocess.run(command, capture_output=True, text=True, env=environment,
                                      timeout=PART_LIMITS_S[name] * args.time_scale)
            if finished.returncode == 0 and out.is_file():
                parts[name] = {"ok": True, **json.loads(out.read_text())}
            else:
                parts[name] = {"ok": False, "error": (finished.stderr or finished.stdout)[-3000:]}
        except subprocess.TimeoutExpired:
            parts[name] = {"ok": False, "error": f"timed out after {PART_LIMITS_S[name] * args.time_scale:.0f} s"}
        parts[name]["wall_s"] = round(time.perf_counter() - started, 1)
    return {"schema": "rpo_tutorial.gpu_check/1", "machine": machine_state(), "load_average_after": load_average(),
            "tiny": args.tiny, "wall_s": round(time.perf_counter() - began, 1), "parts": parts}


def table(result: dict) -> str:
    """The one table: every check, its measurement, what it is compared with, and a verdict."""
    rows = []
    parts = result["parts"]
    for mode in ("model", "precomputed"):
        part = parts.get(f"paper-{mode}")
        if part is None:
            continue
        if not part["ok"]:
            rows.append((f"paper step, reference {mode}", "FAILED", part["error"].strip().splitlines()[-1][:90], "x"))
            continue
        peak = "-" if part["peak_gb"] is None else f"{part['peak_gb']:.1f} GB"
        rows.append((f"paper step, reference {mode}: peak memory", peak,
                     f"estimate {part['predicted_gb']:.1f} GB (8 GPUs: {part['predicted_8gpu_gb']:.1f})",
                     "-" if part["peak_gb"] is None else f"{part['peak_gb'] / part['predicted_gb']:.2f} x"))
        rows.append((f"paper step, reference {mode}: step time", f"{part['median_step_s']:.2f} s (route "
                     f"{part['route']})", f"estimate {part['predicted_step_s_at_40pct']:.2f} s at 40 % of 989 TFLOP/s",
                     f"{part['median_step_s'] / part['predicted_step_s_at_40pct']:.2f} x"))
        rows.append((f"paper step, reference {mode}: step-0 max abs log-ratio", f"{part['step0_max_abs_log_ratio']}",
                     "must be 0", "ok" if part["step0_max_abs_log_ratio"] == 0.0 else "NOT 0"))
    part = parts.get("shared-prompt")
    if part is not None:
        if part["ok"]:
            for dtype in ("fp32", "bf16"):
                entry = part[dtype]
                rows.append((f"shared-prompt vs one forward, {dtype}", f"logp rel {entry['max_rel_logp_difference']:.1e}"
                             f", grad {entry['max_grad_difference_over_max_grad']:.1e} of max",
                             "fp32: < 1e-4 / 1e-3" if dtype == "fp32" else "bf16 rounding (informative)",
                             ("ok" if part["fp32_ok"] else "NOT ok") if dtype == "fp32" else "-"))
            flash = part["flash_attention"]
            rows.append(("flash-attention-2", flash if isinstance(flash, str) else
                         f"falls back ({flash['problem']}); max abs logp - sdpa {flash['max_abs_logp_difference_vs_sdpa']:.2e}",
                         "one-forward path", "-"))
        else:
            rows.append(("shared-prompt check", "FAILED", part["error"].strip().splitlines()[-1][:90], "x"))
    part = parts.get("trl")
    if part is not None:
        if part["ok"]:
            for size, block in part["sizes"].items():
                for label in ("time dpo / trl_dpo", "memory dpo / trl_dpo", "time rpo / dpo",
                              "time dpo / dpo_head_only"):
                    entry = block["ratios"].get(label)
                    if entry is not None:
                        goal = "-" if entry["goal"] is None else f"<= {entry['goal']}"
                        rows.append((f"batch {size}, bf16: {label}", f"{entry['median']:.3f} [{entry['q1']:.3f}, "
                                     f"{entry['q3']:.3f}]", f"{block['rounds']} rounds; goal {goal}",
                                     "-" if entry["met"] is None else ("met" if entry["met"] else "NOT met")))
        else:
            rows.append(("TRL comparison", "FAILED", part["error"].strip().splitlines()[-1][:90], "x"))
    part = parts.get("fsdp-run")
    if part is not None:
        if part["ok"]:
            rows.append(("FSDP2 one process, run_training", f"route {part['route']}, {part['backend']}, "
                         f"{part['steps']} steps", f"folder loads: {part['loaded_tensors']} tensors, max abs difference "
                         f"{part['loaded_max_difference']}", "ok" if part["route"] == "fsdp" and
                         part["loaded_max_difference"] == 0.0 else "NOT ok"))
        else:
            rows.append(("FSDP2 run_training", "FAILED", part["error"].strip().splitlines()[-1][:90], "x"))
    machine = result["machine"]
    lines = [f"gpu_check on {machine.get('gpu', machine['cpu_model'])}, {machine['date']}, torch {machine['torch']}, "
             f"{result['wall_s']} s in all" + (" (--tiny: a check of the script, not a result)" if result["tiny"]
                                                else ""), "",
             "| check | measured | compared with | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--all", action="store_true", help="every part, one table, one JSON")
    parser.add_argument("--part", choices=PARTS, default=None, help="one part (default: paper-model)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="with --all: these parts")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU: checks the script (CI)")
    parser.add_argument("--steps", type=int, default=3, help="paper steps")
    parser.add_argument("--pairs", type=int, default=8, help="pairs per micro-batch (paper: 8)")
    parser.add_argument("--length", type=int, default=512, help="tokens per sequence (paper: 512)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds of the TRL comparison")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiplies each part's time limit (--all)")
    parser.add_argument("--wheel-dir", default=None,
                        help="where gpu_check_prepare.sh put the wheels (checked: trl must be importable)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if not args.tiny and importlib.util.find_spec("torch") and not __import__("torch").cuda.is_available():
        parser.error("no GPU here: the full-size parts need one (~110 GB); use --tiny to check the script on a CPU")
    if args.wheel_dir is not None and importlib.util.find_spec("trl") is None:
        parser.error(f"trl is not importable: install the wheels first: python3 -m pip install --no-index "
                     f"--no-deps --target /tmp/site {args.wheel_dir}/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH")
    if args.all:
        result = run_all(args)
        print(table(result))
    else:
        result = run_part(args.part or "paper-model", args)
        print(json.dumps(result, indent=2, default=str))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
