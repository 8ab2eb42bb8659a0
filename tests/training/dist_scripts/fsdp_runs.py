"""2-process FSDP2 runs on CPU (gloo) next to the same runs under DDP (run by tests/training/test_fsdp.py).

    python -m torch.distributed.run --nproc_per_node 2 tests/training/dist_scripts/fsdp_runs.py OUT_DIR

One launch, every case (the test reads OUT_DIR/results.json):

1. without the CPU-FSDP switch, a run asking for FSDP gets DDP and says so (warning);
2. for reference "model" / "precomputed" x contrast scope "global" / "local": an FSDP run and a DDP
   run of 4 steps (float32) with the same data; their losses, whether the reference's parameters
   are DTensor shards, the final folder loaded with ``from_pretrained`` (compared with the DDP
   model), and a sharded checkpoint resumed with ``resume_from_checkpoint=True`` ("last");
3. bf16 under FSDP2: the step-0 log-ratios (policy vs sharded reference), which must be exactly 0;
4. DDP, a parameter set to NaN on process 1 only after step 1: both processes must stop at step 2
   with the message (not process 0 waiting in the next collective until the timeout);
5. FSDP2, ``trainer.save_model(folder)`` called by the user after ``trainer.train()`` (HF's usual
   route, not ``run_training``): the folder loads with ``from_pretrained`` and holds the trained
   weights (each parameter's full tensor, gathered from its DTensor shards).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import cpu_fsdp  # noqa: E402
from helpers import leave_group, recorded_log_ratios  # noqa: E402
from rpo_tutorial.data.run_logs import read_metrics  # noqa: E402
from rpo_tutorial.training.config import get_preset  # noqa: E402
from rpo_tutorial.training.run import build_trainer, run_training  # noqa: E402

WORDS = "sunny lovely kind calm warm bright rainy noisy cold late broken dull".split()
ROWS = [{"prompt": f"Describe day {i} of the trip to {WORDS[i % 6]} town.", "chosen": " ".join(WORDS[i % 6:i % 6 + 3]),
         "rejected": " ".join(WORDS[6 + i % 6:6 + i % 6 + 2] + WORDS[:1]),
         "prompt_embedding": [((i * 7 + k) % 5) - 2.0 for k in range(4)]} for i in range(16)]


def config_for(output_dir: Path, **changes):
    options = dict(model="tiny-random:mistral", loss="rpo", max_steps=4, per_device_train_batch_size=2, max_length=40,
                   max_prompt_length=20, save_steps=2, logging_steps=1, precompute_batch_size=3, seed=5,
                   output_dir=str(output_dir))
    return get_preset("smoke", **{**options, **changes})


def losses(path: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_metrics(path) if "loss" in row}


def reset_accelerator() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    # No os.environ clean-up: the package restores ACCELERATE_USE_FSDP & co. itself (launch.environment_restored),
    # so the DDP runs after an FSDP run in this process check that it does.


def fsdp_refused_without_the_switch(root: Path) -> dict:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _ = build_trainer(config_for(root / "refused", fsdp=True, fsdp_layer_class="MistralDecoderLayer"),
                                   rows=ROWS)
    reset_accelerator()
    return {"route": trainer.distribution["route"], "warned": any("FSDP was requested" in str(w.message)
                                                                  for w in caught)}


def sharded(model) -> bool:
    from torch.distributed.tensor import DTensor

    return all(isinstance(p, DTensor) for p in model.parameters())


def case(root: Path, reference: str, scope: str) -> dict:
    from rpo_tutorial.training import reference as reference_module

    name = f"{reference}-{scope}"
    result = {}
    prepare = reference_module.prepare_reference
    placed = []  # whether each reference the precompute pass prepared was sharded

    def recording(model, trainer):
        prepared = prepare(model, trainer)
        placed.append(sharded(prepared))
        return prepared

    reference_module.prepare_reference = recording
    for route in ("ddp", "fsdp"):
        config = config_for(root / name / route, reference=reference, contrast_scope=scope, fsdp=route == "fsdp",
                            fsdp_layer_class="MistralDecoderLayer" if route == "fsdp" else None)
        run = run_training(config, rows=ROWS)
        reference_model = run.trainer.reference_model  # after training: still sharded?
        result[f"{route}_reference_sharded"] = sharded(reference_model) if reference_model is not None else placed[-1]
        result[f"{route}_losses"] = losses(Path(config.output_dir))
        result[f"{route}_route"] = run.trainer.distribution["route"]
        reset_accelerator()
        if route == "fsdp":  # resume from the last checkpoint left after step 2 (delete the later one)
            shutil.rmtree(Path(config.output_dir) / "checkpoint-4", ignore_errors=True)
            dist.barrier()
            run_training(config, rows=ROWS, resume_from_checkpoint=True)
            result["resumed_losses"] = losses(Path(config.output_dir))
            reset_accelerator()
    reference_module.prepare_reference = prepare
    if dist.get_rank() == 0:
        from transformers import AutoModelForCausalLM

        fsdp_model = AutoModelForCausalLM.from_pretrained(root / name / "fsdp")
        ddp_model = AutoModelForCausalLM.from_pretrained(root / name / "ddp")
        ddp_state = ddp_model.state_dict()
        result["loaded_max_difference"] = max((value - ddp_state[key]).abs().max().item()
                                              for key, value in fsdp_model.state_dict().items())
        result["loaded_parameters"] = sum(p.numel() for p in fsdp_model.parameters())
    return {name: result}


def bf16_step0_log_ratios(root: Path) -> float:
    try:
        with recorded_log_ratios() as seen:
            config = config_for(root / "bf16", bf16=True, fsdp=True, fsdp_layer_class="MistralDecoderLayer",
                                max_steps=1, save_steps=0)
            trainer, _ = build_trainer(config, rows=ROWS)
            trainer.train()
    finally:
        reset_accelerator()
    return seen[0].abs().max().item()


def nan_on_one_process(root: Path) -> list[str]:
    from transformers import TrainerCallback

    from rpo_tutorial.training.trainer import NonFiniteLossError

    class PoisonProcessOne(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 1 and dist.get_rank() == 1:
                with torch.no_grad():
                    next(model.parameters()).fill_(float("nan"))

    trainer, _ = build_trainer(config_for(root / "nan", max_steps=3, save_steps=0, reference="precomputed"),
                               rows=ROWS)
    trainer.add_callback(PoisonProcessOne())
    message = "no error"
    try:
        trainer.train()
    except NonFiniteLossError as error:
        message = str(error)
    reset_accelerator()
    messages = [None, None]
    dist.all_gather_object(messages, message)
    return messages


def save_model_after_fsdp_training(root: Path) -> dict:
    config = config_for(root / "save_model", fsdp=True, fsdp_layer_class="MistralDecoderLayer", max_steps=2,
                        save_steps=0)
    try:
        trainer, _ = build_trainer(config, rows=ROWS)
        trainer.train()
        folder = root / "save_model" / "saved"
        trainer.save_model(str(folder))  # every process calls it, as with transformers.Trainer
        trained = {name: p.full_tensor().detach().clone() for name, p in trainer.model.named_parameters()}  # all ranks
        route = trainer.distribution["route"]
    finally:
        reset_accelerator()
    result = {"route": route}
    if dist.get_rank() == 0:
        from transformers import AutoModelForCausalLM

        loaded = dict(AutoModelForCausalLM.from_pretrained(folder).named_parameters())
        from rpo_tutorial.training.run import load_models

        start = dict(load_models(config)[1].named_parameters())  # the same seeded tiny model, untrained
        result["same_names"] = sorted(loaded) == sorted(trained)
        result["max_difference"] = max((loaded[name] - value).abs().max().item() for name, value in trained.items())
        result["moved"] = any(not torch.equal(loaded[name], start[name]) for name in loaded if name in start)
    return result


def main() -> None:
    root = Path(sys.argv[1])
    results = {"refused": fsdp_refused_without_the_switch(root)}
    cpu_fsdp.enable()
    for reference, scope in (("model", "global"), ("precomputed", "local")):
        results.update(case(root, reference, scope))
    results["bf16_step0_max_abs_log_ratio"] = bf16_step0_log_ratios(root)
    results["save_model"] = save_model_after_fsdp_training(root)
    results["nan_messages"] = nan_on_one_process(root)  # DDP (no fsdp): the poisoned weight stays on rank 1
    if dist.get_rank() == 0:
        (root / "results.json").write_text(json.dumps(results, indent=1))
    leave_group()


if __name__ == "__main__":
    main()
