"""The README's performance table, regenerated from step_benchmark.py's JSON (never edited by hand).

    python benchmarks/perf_table.py benchmarks/step_benchmark_smollm2.json             # rewrite README.md
    python benchmarks/perf_table.py b8.json b32.json --print                            # show it, write nothing

Everything between ``<!-- perf-table:start -->`` and ``<!-- perf-table:end -->`` in README.md is
replaced; the rest of the README is left alone. Several JSON files (e.g. batch 8 and batch 32 run
at different times) are merged, each named with its machine, date and load. Times are the median
[interquartile range] of the timed rounds, ratios the median [IQR] of the per-round ratios,
rates the step's matmul FLOPs per median second and their share of the measured float32 matmul
peak of the same pinned thread (``benchmarks/protocol.py``, ``benchmarks/flops.py``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"
MODEL_NAMES = {"smollm2": "SmolLM2-135M", "tiny": "tiny random Llama (V = 49,152)"}
VARIANT_NAMES = {
    "trl_dpo": "TRL 1.16 `DPOTrainer`",
    "dpo_before": "dpo, full logits one row at a time (before issue 10)",
    "rpo_before": "rpo, full logits one row at a time (before issue 10)",
    "dpo_head_only": "dpo, one forward, head on response rows (`--no-share-prompts`)",
    "dpo": "dpo (shared prompts, the default)",
    "rpo": "rpo",
    "rpo_accum": "rpo, 2 micro-batches, matrix per micro-batch",
    "rpo_accum_contrast": "rpo, 2 micro-batches, `accumulate_contrast`",
}


def _interval(median: float, q1: float, q3: float, digits: int) -> str:
    return f"{median:.{digits}f} [{q1:.{digits}f}, {q3:.{digits}f}]"


def describe_run(data: dict, source: str) -> str:
    """One sentence: where, when, under what load and protocol a JSON was measured."""
    machine, pinning, protocol = data["machine"], data.get("pinning", {}), data["protocol"]
    pinned = f"pinned to core {pinning['core']}" if pinning.get("pinned") else \
        f"not pinned ({pinning.get('error') or 'unknown'})"
    before = (machine.get("load_average") or ["?"])[0]
    after = (data.get("load_average_after") or ["?"])[0]
    order = "a seeded random order per round" if protocol["order"] == "shuffled" else "ABBA order"
    caveat = " FEWER THAN 7 ROUNDS: a check of the script, not a result." if protocol["rounds"] < 7 else ""
    return (f"`{source}`: {machine['date'][:10]}, {machine['cpu_model']} ({machine['cpu_cores']} cores), torch "
            f"{machine['torch']}, {machine['torch_threads']} torch thread {pinned}; 1-minute load average "
            f"{before} before, {after} after; float32 matmul peak {data['matmul_peak']['peak_gflops']:.1f} "
            f"GFLOP/s on that thread; {protocol['rounds']} rounds in {order} after {protocol['warmup']} "
            f"warm-up step(s); command `python {' '.join(data['command'])}`.{caveat}")


def merged_sizes(runs: list[tuple[str, dict]]) -> dict[str, dict[int, dict]]:
    """{model: {batch size: block}} over every JSON (a later file wins for the same model and size)."""
    merged: dict[str, dict[int, dict]] = {}
    for _, data in runs:
        if not str(data.get("schema", "")).startswith("rpo_tutorial.step_benchmark/"):
            raise ValueError("not a step_benchmark.py JSON of schema 2 (rerun the benchmark)")
        for model, result in data["models"].items():
            for size, block in result["sizes"].items():
                if "variants" in block:
                    merged.setdefault(model, {})[int(size)] = block
    return merged


def model_table(model: str, sizes: dict[int, dict]) -> list[str]:
    """Markdown lines: one row per variant, per batch size step time, rate and memory; then the ratios."""
    order = sorted(sizes)
    names = [name for name in VARIANT_NAMES if any(name in sizes[size]["variants"] for size in order)]
    header = "| variant | " + " | ".join(f"batch {size} ({sizes[size]['rounds']} rounds): step s, median [IQR] | "
                                         "GFLOP/s (of peak) | peak MiB" for size in order) + " |"
    lines = [f"**{MODEL_NAMES.get(model, model)}**", "", header, "|---|" + "---|---|---|" * len(order)]
    for name in names:
        cells = []
        for size in order:
            values = sizes[size]["variants"].get(name)
            if values is None:
                cells += ["", "", ""]
                continue
            cells += [_interval(values["median_s"], values["q1_s"], values["q3_s"], 2),
                      f"{values['gflops_per_s']:.2f} ({values['peak_fraction']:.0%})",
                      f"{values['peak_bytes'] / 2**20:.0f}"]
        lines.append(f"| {VARIANT_NAMES[name]} | " + " | ".join(cells) + " |")
    labels = [label for label in sizes[order[0]]["ratios"]]
    for size in order[1:]:
        labels += [label for label in sizes[size]["ratios"] if label not in labels]
    lines += ["", "| comparison | " + " | ".join(f"batch {size}: median [IQR]" for size in order) + " | goal |",
              "|---|" + "---|" * len(order) + "---|"]
    for label in labels:
        cells, goals = [], []
        for size in order:
            entry = sizes[size]["ratios"].get(label)
            if entry is None:
                cells.append("")
                continue
            digits = 7 if label.startswith("|") else 3
            cells.append(f"{entry['median']:.2g}" if label.startswith("|") else
                         (_interval(entry["median"], entry["q1"], entry["q3"], digits) if entry["n"] > 1
                          else f"{entry['median']:.{digits}f}"))
            if entry["goal"] is not None:
                goals.append(f"b{size} <= {entry['goal']}: {'met' if entry['met'] else 'NOT met'}")
        shown = label.replace("|", "\\|")  # |loss ...| inside a table cell
        lines.append(f"| {shown} | " + " | ".join(cells) + f" | {'; '.join(goals) or '-'} |")
    return lines + [""]


def render(runs: list[tuple[str, dict]]) -> str:
    """The block between the markers (markers excluded)."""
    lines = ["<!-- generated by benchmarks/perf_table.py from the JSON below; do not edit by hand -->", ""]
    for model, sizes in merged_sizes(runs).items():
        lines += model_table(model, sizes)
    lines += ["Measured: " + " ".join(describe_run(data, source) for source, data in runs), ""]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"the README needs exactly one {START} ... {END} pair")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="step_benchmark.py --json output(s)")
    parser.add_argument("--readme", default=str(README), help="the file whose marked block is rewritten")
    parser.add_argument("--print", action="store_true", help="print the block instead of writing the README")
    args = parser.parse_args(argv)
    runs = [(path, json.loads(Path(path).read_text())) for path in args.json]
    block = render(runs)
    if args.print:
        print(block)
        return 0
    readme = Path(args.readme)
    readme.write_text(replace_block(readme.read_text(), block))
    print(f"rewrote the performance table in {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
