"""The paper preset's code path on ONE GPU, with a randomly initialised Mistral-7B-shaped model.

    python benchmarks/gpu_check.py                 # 32 layers x 4096, 8 pairs x 512 tokens, 3 steps (H100/H200:
                                                   #   a few minutes; needs ~110 GB: FSDP over 1 GPU shards nothing)
    python benchmarks/gpu_check.py --tiny          # 2 layers x 64 on the CPU: checks the script itself (CI)
    python benchmarks/gpu_check.py --json out.json # also write the numbers

What runs: ``get_preset("paper")`` (bf16, FSDP2 full shard with activation checkpointing on each
MistralDecoderLayer, RMSprop, reference "model", embedding weights) and ``RPOTrainer`` exactly as
``rpo-tutorial train`` builds them, as a one-process FSDP2 group (the script sets the
``torchrun`` variables when they are missing). The model comes from the config only (built on
the meta device, then materialised on the GPU with random weights; nothing is downloaded); the
batches are random token ids, every sequence 256 prompt + 256 response tokens.

Printed: peak GPU memory during the optimizer steps and the time of each step, next to
``estimates.per_gpu_memory(..., num_gpus=1)`` (the per-GPU numbers of an 8-GPU run follow from
the same formula with ``num_gpus=8``), and the step-0 log-ratios (must be exactly 0).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def single_process_group() -> None:
    """The variables torchrun would set, for a one-process group (FSDP needs a process group)."""
    if "LOCAL_RANK" in os.environ:
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def model_config(tiny: bool):
    from transformers import MistralConfig

    if tiny:
        return MistralConfig(vocab_size=512, hidden_size=64, intermediate_size=224, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False)
    return MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                         tie_word_embeddings=False)  # mistralai/Mistral-7B-v0.1's config.json


def random_model(config, device: str):
    """Built on the meta device (no memory), then materialised on ``device`` with random weights."""
    import torch
    from transformers import MistralForCausalLM

    with torch.device("meta"):
        model = MistralForCausalLM(config)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1:  # RMSNorm weights
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    rotary = type(model.model.rotary_emb)(config).to(device)  # to_empty left its buffers unset
    model.model.rotary_emb = rotary
    model.config.pad_token_id = 0
    return model


def random_examples(count: int, vocab: int, prompt: int, response: int, dim: int = 384) -> list[dict]:
    rng = random.Random(0)
    examples = []
    for _ in range(count):
        prompt_ids = [rng.randrange(1, vocab) for _ in range(prompt)]
        sides = {}
        for side in ("chosen", "rejected"):
            answer = [rng.randrange(1, vocab) for _ in range(response)]
            sides[f"{side}_input_ids"] = prompt_ids + answer
            sides[f"{side}_labels"] = [-100] * prompt + answer
        examples.append({**sides, "prompt_embedding": [rng.gauss(0.0, 1.0) for _ in range(dim)]})
    return examples


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="2 small layers on the CPU (checks the script)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=8, help="pairs per micro-batch (paper: 8)")
    parser.add_argument("--length", type=int, default=512, help="tokens per sequence (paper: 512)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    single_process_group()

    import torch
    from transformers import TrainerCallback

    from rpo_tutorial.data.collate import PreferenceCollator
    from rpo_tutorial.training import trainer as trainer_module
    from rpo_tutorial.training.config import get_preset
    from rpo_lab.estimates import GB, DecoderShape, per_gpu_memory
    from rpo_tutorial.training.run import load_reference
    from rpo_tutorial.training.trainer import RPOTrainer

    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    config = model_config(args.tiny)
    output_dir = tempfile.mkdtemp(prefix="gpu_check_")
    rpo = get_preset("paper", max_steps=args.steps, save_steps=0, logging_steps=1, warmup_steps=0, progress=False,
                     output_dir=output_dir, per_device_train_batch_size=args.pairs, bf16=cuda or args.tiny,
                     fsdp=not args.tiny)  # accelerate runs no FSDP on CPU processes
    start = time.perf_counter()
    policy = random_model(config, device)
    reference = load_reference(rpo, policy, from_config=False)  # what run.build_trainer does
    prompt = args.length // 2
    examples = random_examples(args.pairs * args.steps, config.vocab_size, prompt, args.length - prompt)

    ratios: list[torch.Tensor] = []
    original = trainer_module.scoped_objective

    def record(logps, objective_config):  # the first micro-batch's log-ratios, before any optimizer step
        if not ratios:
            ratios.append(torch.cat([logps.policy_chosen_logps - logps.reference_chosen_logps,
                                     logps.policy_rejected_logps - logps.reference_rejected_logps]).detach())
        return original(logps, objective_config)

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.begun = [], 0.0

        def on_train_begin(self, *_, **__):  # the models are prepared (sharded): count the steps only
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.begun = time.perf_counter()

        def on_step_end(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.begun)

    clock = Clock()
    trainer_module.scoped_objective = record
    try:
        trainer = RPOTrainer(model=policy, config=rpo, reference_model=reference, train_dataset=examples,
                             data_collator=PreferenceCollator(0), callbacks=[clock])
        del policy, reference
        setup_s = time.perf_counter() - start
        trainer.train()
    finally:
        trainer_module.scoped_objective = original
    shape = DecoderShape(config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                         config.num_attention_heads, config.num_key_value_heads, config.vocab_size)
    predicted = per_gpu_memory(shape, num_gpus=1, sequences=2 * args.pairs, sequence_length=args.length)
    result = {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "route": trainer.distribution["route"],
        "shape": "tiny" if args.tiny else "mistral-7b", "pairs": args.pairs, "length": args.length,
        "setup_s": round(setup_s, 1), "step_s": [round(t, 2) for t in clock.times],
        "peak_gb": round(torch.cuda.max_memory_allocated() / GB, 2) if cuda else None,
        "predicted_gb": round(predicted["total"] / GB, 2),
        "predicted_8gpu_gb": round(per_gpu_memory(shape, 8, 2 * args.pairs, args.length)["total"] / GB, 2),
        "step0_max_abs_log_ratio": ratios[0].abs().max().item() if ratios else None,
    }
    print(f"route {result['route']} on {result['device']}; setup {result['setup_s']} s; step times {result['step_s']} s")
    print(f"peak memory during the steps: {result['peak_gb']} GB; estimates.per_gpu_memory(num_gpus=1): "
          f"{result['predicted_gb']} GB (an 8-GPU run: {result['predicted_8gpu_gb']} GB per GPU)")
    print(f"step-0 max |log-ratio|: {result['step0_max_abs_log_ratio']} (must be 0)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
