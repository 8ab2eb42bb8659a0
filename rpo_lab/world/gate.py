"""The gate (issue 20): DPO alone must reach >= 70 % test accuracy in the data-rich arm before the world is frozen.

    python -m rpo_lab.world.gate --output-dir outputs/gate --log docs/study/gate_log.md

Trains DPO ONLY (the study's tuning protocol: learning rate chosen on the tuning seeds'
validation pairs, then the gate seeds), on gate seeds that are neither tuning nor evaluation
seeds, and appends one entry to the log: the world's fields that differ from the defaults and
DPO's mean test accuracy per regime, batch arm and train size. No other method runs here.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from rpo_lab.world.presets import SYNTHETIC_PRESETS
from rpo_lab.world.run import run_synthetic_study
from rpo_lab.world.spec import StudyDesign, WorldSpec

GATE_SEEDS = (2000, 2001, 2002, 2003, 2004, 2005)
THRESHOLD = 0.70


def gate_design(world: WorldSpec, base: StudyDesign) -> StudyDesign:
    return base.replace(world=world, methods=("dpo",), seeds=GATE_SEEDS)


def gate_table(result: dict, design: StudyDesign) -> tuple[list[str], bool]:
    """Markdown rows (regime, arm, size, mean test accuracy, range, chosen rate) and whether the gate passed."""
    rows, passed = [], True
    for regime, _ in design.regimes:
        for arm in design.batch_arms:
            for size in design.pairs_per_cluster:
                values = [run["test_accuracy"] for payload in result["evaluation"] for run in payload["runs"]
                          if (run["regime"], run["arm"], run["pairs_per_cluster"]) == (regime, arm, size)]
                rate = result["learning_rates"][("dpo", regime, arm, size)]
                mean = statistics.fmean(values)
                rich = size == max(design.pairs_per_cluster)
                passed &= mean >= THRESHOLD or not rich
                rows.append(f"| {regime} | {arm} | {size}{' (data-rich)' if rich else ''} | {mean:.1%} | "
                            f"{min(values):.1%} - {max(values):.1%} | {rate:g} |")
    return rows, passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/gate")
    parser.add_argument("--log", default="docs/study/gate_log.md")
    parser.add_argument("--set", nargs="*", default=[], help="WorldSpec overrides, e.g. label_noise=0.2")
    args = parser.parse_args(argv)
    base = SYNTHETIC_PRESETS["synthetic"]
    changes = {}
    for item in args.set:
        name, value = item.split("=", 1)
        changes[name] = type(getattr(base.world, name))(value)
    design = gate_design(dataclasses.replace(base.world, **changes), base)
    tag = ",".join(f"{k}={v}" for k, v in changes.items()) or "frozen-candidate"
    began = time.perf_counter()
    result = run_synthetic_study(Path(args.output_dir) / tag, design)
    rows, passed = gate_table(result, design)
    defaults = WorldSpec()
    differs = {f.name: getattr(design.world, f.name) for f in dataclasses.fields(WorldSpec)
               if getattr(design.world, f.name) != getattr(defaults, f.name)}
    entry = [f"## Gate run: world {differs or 'WorldSpec defaults'}", "",
             f"DPO only; seeds {list(GATE_SEEDS)}; learning rate per cell chosen on the validation pairs of tuning "
             f"seeds {list(design.tuning_seeds)} from {list(design.learning_rates)}; {design.steps} steps of "
             f"{design.batch_size} pairs; {time.perf_counter() - began:.0f} s (under load).", "",
             "| regime | batch arm | pairs per cluster | DPO test accuracy (mean) | seeds' range | rate |",
             "|---|---|---|---|---|---|", *rows, "",
             f"**Gate {'passed' if passed else 'FAILED'}**: DPO's mean test accuracy in the data-rich arm is "
             f"{'>=' if passed else 'below'} {THRESHOLD:.0%} in every regime and batch arm.", ""]
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    header = "" if log.is_file() else ("# Gate log (DPO only)\n\nThe synthetic world was tuned on DPO alone until DPO "
                                       "reached >= 70 % test accuracy in the data-rich arm, then frozen before any RPO "
                                       "number was computed (issue 20). Every gate run is appended here by "
                                       "`python -m rpo_lab.world.gate`.\n\n")
    with log.open("a") as handle:
        handle.write(header + "\n".join(entry) + "\n")
    print("\n".join(entry))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
