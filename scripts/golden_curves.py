"""Golden loss curves: the first steps of DPO and RPO on the smoke preset, committed and checked in CI.

    python scripts/golden_curves.py                     # regenerate tests/golden/smoke_curves.json
    python scripts/golden_curves.py --compare           # max differences of a fresh run against the file
    ATEN_CPU_CAPABILITY=default python scripts/golden_curves.py --compare --threads 2   # another kernel / threads

The run: ``get_preset("smoke")`` (tiny random Llama with SmolLM2's tokenizer, 16 demo rows, batches of
4 pairs, AdamW at lr 1e-3, float32, seed 0) for ``STEPS`` optimizer steps, once with ``loss="dpo"`` and
once with ``loss="rpo"`` (embedding weights, tau 0.5), through ``run_training`` as ``rpo-tutorial train``
runs it. Recorded per step: ``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins`` (the
trainer's metrics.jsonl). ``tests/training/test_golden_curves.py`` re-runs it and compares with
:data:`TOLERANCE` (how it was chosen is in the file's ``tolerance_note``).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
GOLDEN_FILE = REPO_ROOT / "tests" / "golden" / "smoke_curves.json"
STEPS = 8
SEED = 0
LOSSES = ("dpo", "rpo")
CURVE_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins")
TOLERANCE = {"atol": 5e-5, "rtol": 2e-4}  # |fresh - golden| <= atol + rtol * |golden|, per value (see tolerance_note)


def smoke_curves(steps: int = STEPS, threads: int | None = 1, policy_edit=None, **overrides) -> dict:
    """{loss name: {metric: [value per step]}} of fresh smoke runs.

    ``policy_edit(policy)`` changes the initial tiny model in place before training (tests use it to
    show that one changed weight fails the comparison); ``overrides`` go to the preset (e.g. ``beta``).
    """
    import torch

    from rpo_tutorial.data.run_logs import read_metrics
    from rpo_tutorial.training.config import get_preset
    from rpo_tutorial.training.run import load_models, run_training

    if threads is not None:
        torch.set_num_threads(threads)
    curves = {}
    for loss in LOSSES:
        with tempfile.TemporaryDirectory() as folder:
            config = get_preset("smoke", loss=loss, max_steps=steps, seed=SEED, bf16=False, logging_steps=1,
                                output_dir=folder, **overrides)
            models = {}
            if policy_edit is not None:
                tokenizer, policy = load_models(config)
                policy_edit(policy)
                models = {"policy": policy, "tokenizer": tokenizer}
            run_training(config, overwrite=True, **models)
            records = [record for record in read_metrics(folder) if "rewards/margins" in record]
        if len(records) != steps:
            raise RuntimeError(f"{loss}: expected {steps} logged steps, got {len(records)}")
        curves[loss] = {key: [float(record[key]) for record in records] for key in CURVE_KEYS}
    return curves


def differences(fresh: dict, golden: dict) -> dict:
    """Largest absolute difference and largest excess over the tolerance, over every value."""
    worst_abs, worst_ratio = 0.0, 0.0
    for loss in LOSSES:
        for key in CURVE_KEYS:
            for new, old in zip(fresh[loss][key], golden[loss][key], strict=True):
                gap = abs(new - old)
                worst_abs = max(worst_abs, gap)
                worst_ratio = max(worst_ratio, gap / (TOLERANCE["atol"] + TOLERANCE["rtol"] * abs(old)))
    return {"max_abs_difference": worst_abs, "max_difference_over_tolerance": worst_ratio}


def mismatches(fresh: dict, golden: dict) -> list[str]:
    """Every value outside the tolerance, as 'loss metric step: fresh vs golden'."""
    found = []
    for loss in LOSSES:
        for key in CURVE_KEYS:
            for step, (new, old) in enumerate(zip(fresh[loss][key], golden[loss][key], strict=True), start=1):
                if abs(new - old) > TOLERANCE["atol"] + TOLERANCE["rtol"] * abs(old):
                    found.append(f"{loss} {key} step {step}: {new:.8g} vs golden {old:.8g}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", action="store_true", help="compare a fresh run with the committed file")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    fresh = smoke_curves(threads=args.threads)
    if args.compare:
        golden = json.loads(GOLDEN_FILE.read_text())["curves"]
        print(json.dumps(differences(fresh, golden)))
        return 0
    existing = json.loads(GOLDEN_FILE.read_text()) if GOLDEN_FILE.exists() else {}
    GOLDEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN_FILE.write_text(json.dumps({
        "description": "smoke preset, tiny random Llama, float32, seed 0: the first steps of DPO and RPO "
                       "(scripts/golden_curves.py)",
        "steps": STEPS, "tolerance": TOLERANCE, "tolerance_note": existing.get("tolerance_note", ""),
        "curves": fresh}, indent=1) + "\n")
    print(f"wrote {GOLDEN_FILE.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
