"""Where an RPO training step differs from a DPO step on the same batch: profile, denormals, flush-to-zero.

    .venv/bin/python benchmarks/profile_step.py                                  # tiny model, batch 8
    .venv/bin/python benchmarks/profile_step.py --model smollm2 --rounds 3 --markdown benchmarks/profile_rpo_vs_dpo.md

Both variants are ``step_benchmark.py``'s ``dpo`` and ``rpo`` (shared prompts, head on response
rows, live reference, AdamW; RPO with embedding weights, tau 0.5), on the same policy, reference
and batch. The script, on one pinned thread (``protocol.pin_to_one_core``):

1. **Profile**: ``--rounds`` rounds in ABBA order, each profiling one step of each variant with
   ``torch.profiler`` (CPU); per aten op the self CPU time and call count, averaged per step. The
   table lists the ops whose self time differs most, and every op that only one variant runs.
2. **Denormals**: one step of each under a dispatch mode that counts, in every float tensor an
   op produces (forward, backward and optimizer), the subnormal values (0 < |x| < 1.18e-38),
   which x86 CPUs compute slowly. RPO's upstream gradients are about N times smaller than DPO's,
   so its backward could make more of them.
3. **Flush to zero**: ``--rounds`` ABBA rounds of the four runs {dpo, rpo} x
   ``torch.set_flush_denormal`` {off, on}; medians.
4. **The objective alone**: the loss, its backward and the metrics on random log-probs (no model),
   DPO against RPO: the only work an RPO step adds (the weights, the M x N loss, RPO's metrics).

Absolute times on a shared machine are noise; the op list and the counts are what matter.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import load_average, machine_state, pin_to_one_core, round_orders  # noqa: E402

TINY = torch.finfo(torch.float32).tiny  # the smallest normal float32 (bfloat16 has the same exponent range)


class DenormalCensus(TorchDispatchMode):
    """Counts subnormal values among the floating-point outputs of every op run while active."""

    def __init__(self) -> None:
        super().__init__()
        self.subnormal, self.values, self.by_op = 0, 0, defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.numel():
                size = tensor.abs()
                count = int(((size > 0) & (size < TINY)).sum())
                self.values += tensor.numel()
                if count:
                    self.subnormal += count
                    self.by_op[str(func.overloadpacket)] += count
        return out


def build(args):
    """(steps {name: callable}, batch description) for dpo and rpo, via step_benchmark.py's builders."""
    import copy
    import tempfile

    import step_benchmark

    tokenizer, policy, rows, batches = step_benchmark.make_data(args.model, [args.batch_size], torch.device("cpu"))
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-7)
    output_dir = tempfile.mkdtemp(prefix="profile_step_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps, _ = step_benchmark.build_steps(["dpo", "rpo"], policy, reference, tokenizer, rows, output_dir,
                                              optimizer)
    batch = batches[args.batch_size]
    described = {"pairs": args.batch_size, "rows": int(batch[0]["input_ids"].shape[0]),
                 "max_tokens": int(batch[0]["attention_mask"].sum(1).max())}
    return {name: functools.partial(step, batch) for name, step in steps.items()}, described


def profile_ops(steps: dict, rounds: int) -> dict:
    """{variant: {op: {"self_us", "calls"} per step}} over ``rounds`` ABBA rounds."""
    from torch.profiler import ProfilerActivity, profile

    totals = {name: defaultdict(lambda: [0.0, 0]) for name in steps}
    for order in round_orders(list(steps), rounds, "abba"):
        for name in order:
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                steps[name]()
            for event in profiler.key_averages():
                totals[name][event.key][0] += event.self_cpu_time_total
                totals[name][event.key][1] += event.count
    return {name: {op: {"self_us": value[0] / rounds, "calls": value[1] / rounds} for op, value in ops.items()}
            for name, ops in totals.items()}


def differences(ops: dict, top: int) -> tuple[list[dict], list[dict]]:
    """The ``top`` ops by |rpo - dpo| self time, and every op only one variant runs."""
    dpo, rpo = ops["dpo"], ops["rpo"]
    rows = []
    for op in set(dpo) | set(rpo):
        a, b = dpo.get(op, {"self_us": 0.0, "calls": 0}), rpo.get(op, {"self_us": 0.0, "calls": 0})
        rows.append({"op": op, "dpo_ms": a["self_us"] / 1e3, "rpo_ms": b["self_us"] / 1e3,
                     "delta_ms": (b["self_us"] - a["self_us"]) / 1e3, "dpo_calls": a["calls"], "rpo_calls": b["calls"]})
    rows.sort(key=lambda row: -abs(row["delta_ms"]))
    only = [row for row in rows if (row["dpo_calls"] == 0) != (row["rpo_calls"] == 0)]
    return rows[:top], only


def census(steps: dict) -> dict:
    """Subnormal values produced by one step of each variant (forward, backward, optimizer)."""
    out = {}
    for name, step in steps.items():
        with DenormalCensus() as counter:
            step()
        top = sorted(counter.by_op.items(), key=lambda item: -item[1])[:5]
        out[name] = {"subnormal": counter.subnormal, "values": counter.values, "top_ops": dict(top)}
    return out


def flush_timing(steps: dict, rounds: int) -> dict:
    """Median seconds of dpo / rpo with flush-to-zero off and on, in ABBA rounds of the four runs."""
    runs = {f"{name} flush={flag}": (name, flag) for flag in (False, True) for name in steps}
    samples = defaultdict(list)
    for order in round_orders(list(runs), rounds, "abba"):
        for label in order:
            name, flag = runs[label]
            torch.set_flush_denormal(flag)
            began = time.perf_counter()
            steps[name]()
            samples[label].append(time.perf_counter() - began)
    torch.set_flush_denormal(False)
    return {label: {"median_s": statistics.median(values), "samples_s": values} for label, values in samples.items()}


def objective_timing(pairs: int, repeats: int = 300, rounds: int = 5) -> dict:
    """Milliseconds of the loss, its backward and the step's metrics alone, DPO against RPO (embedding
    weights, tau 0.5), on random log-probs of ``pairs`` pairs: the only work an RPO step adds."""
    from rpo_tutorial.training.config import get_preset
    from rpo_tutorial.training.metrics import preference_metrics
    from rpo_tutorial.training.objectives import PreferenceLogps, scoped_objective

    generator = torch.Generator().manual_seed(0)
    values = [-100 * torch.rand(pairs, generator=generator) for _ in range(4)]
    embeddings = torch.randn(pairs, 384, generator=generator)
    counts = torch.full((pairs,), 50)
    samples = {"dpo": [], "rpo": []}
    for order in round_orders(["dpo", "rpo"], rounds, "abba"):
        for loss in order:
            config = get_preset("demo", loss=loss, weighting="embedding", tau=0.5)
            began = time.perf_counter()
            for _ in range(repeats):
                chosen, rejected = values[0].clone().requires_grad_(), values[1].clone().requires_grad_()
                logps = PreferenceLogps(chosen, rejected, values[2], values[3], embeddings, embeddings, True, counts,
                                        counts)
                output, seen = scoped_objective(logps, config)
                output.loss.backward()
                preference_metrics(seen, output)
            samples[loss].append((time.perf_counter() - began) / repeats * 1e3)
    return {name: {"median_ms": statistics.median(values), "samples_ms": values} for name, values in samples.items()}


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = [f"# One RPO step against one DPO step ({result['model']}, batch {result['batch']['pairs']} pairs = "
             f"{result['batch']['rows']} rows x up to {result['batch']['max_tokens']} tokens)", "",
             f"Generated by `python benchmarks/profile_step.py {' '.join(result['argv'])}` on {machine['date'][:10]}, "
             f"{machine['cpu_model']}, torch {machine['torch']}, one torch thread (pinned: "
             f"{result['pinning']['pinned']}); 1-minute load average {machine['load_average'][0]} before, "
             f"{result['load_average_after'][0]} after: other jobs shared the machine, so absolute times are "
             "noisy; read which ops differ.", "",
             f"Per step (mean of {result['rounds']} ABBA rounds), profiler self CPU time: dpo "
             f"{result['total_ms']['dpo']:.0f} ms in {result['op_calls']['dpo']:.0f} op calls, rpo "
             f"{result['total_ms']['rpo']:.0f} ms in {result['op_calls']['rpo']:.0f} op calls.", "",
             "Top ops by |rpo - dpo| self CPU time per step:", "",
             "| op | dpo ms | rpo ms | rpo - dpo ms | dpo calls | rpo calls |", "|---|---|---|---|---|---|"]
    for row in result["top"]:
        lines.append(f"| `{row['op']}` | {row['dpo_ms']:.2f} | {row['rpo_ms']:.2f} | {row['delta_ms']:+.2f} | "
                     f"{row['dpo_calls']:.0f} | {row['rpo_calls']:.0f} |")
    lines += ["", "Ops only one variant runs (per step):", "", "| op | dpo ms | rpo ms | dpo calls | rpo calls |",
              "|---|---|---|---|---|"]
    for row in result["only"]:
        lines.append(f"| `{row['op']}` | {row['dpo_ms']:.3f} | {row['rpo_ms']:.3f} | {row['dpo_calls']:.0f} | "
                     f"{row['rpo_calls']:.0f} |")
    lines += ["", "Subnormal float values produced in one step (forward, backward, AdamW):", "",
              "| variant | subnormal values | of all values produced | ops producing most |", "|---|---|---|---|"]
    for name, entry in result["census"].items():
        lines.append(f"| {name} | {entry['subnormal']} | {entry['subnormal'] / max(entry['values'], 1):.2e} | "
                     + ", ".join(f"`{op}` {count}" for op, count in entry["top_ops"].items()) + " |")
    objective = result["objective"]
    lines += ["", "The loss, its backward and the metrics alone (no model), per step, median of 5 ABBA rounds of 300:",
              "", "| variant | ms |", "|---|---|"]
    lines += [f"| {name} | {entry['median_ms']:.3f} |" for name, entry in objective.items()]
    lines += ["", f"`torch.set_flush_denormal`: median step time over {result['rounds']} ABBA rounds:", "",
              "| run | median s |", "|---|---|"]
    for label, entry in result["flush"].items():
        lines.append(f"| {label} | {entry['median_s']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    import step_benchmark

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(step_benchmark.MODELS), default="tiny")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--rounds", type=int, default=3, help="ABBA rounds for the profile and the flush timing")
    parser.add_argument("--top", type=int, default=5, help="ops listed by |rpo - dpo|")
    parser.add_argument("--markdown", default=None, help="also write the report there")
    parser.add_argument("--json", default=None, help="also write the numbers there")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*tokenizer has new PAD/BOS/EOS.*")
    pinning = pin_to_one_core()
    machine = machine_state()
    torch.manual_seed(0)
    steps, batch = build(args)
    for step in steps.values():  # warm-up: AdamW state, lazy inits
        step()
    ops = profile_ops(steps, args.rounds)
    top, only = differences(ops, args.top)
    result = {"model": args.model, "argv": list(argv if argv is not None else sys.argv[1:]), "machine": machine,
              "pinning": pinning, "batch": batch, "rounds": args.rounds, "top": top, "only": only,
              "total_ms": {name: sum(v["self_us"] for v in table.values()) / 1e3 for name, table in ops.items()},
              "op_calls": {name: sum(v["calls"] for v in table.values()) for name, table in ops.items()},
              "census": census(steps), "flush": flush_timing(steps, args.rounds),
              "objective": objective_timing(args.batch_size), "load_average_after": load_average()}
    text = markdown(result)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
