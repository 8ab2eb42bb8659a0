"""Evaluation sub-commands: ``sample``, ``judge``, ``winrate``, ``alpaca-export``.

    rpo-tutorial sample --model runs/rpo --prompts prompts.jsonl --output outputs/rpo_samples.jsonl
    rpo-tutorial judge --candidates outputs/rpo_samples.jsonl --baselines outputs/chosen.jsonl \\
        --judge openai --cache outputs/judge_cache.jsonl --output outputs/rpo_vs_chosen.jsonl
    rpo-tutorial judge ... --judge reward --reward-fn rpo_tutorial.data.sentiment:sentiment_score
    rpo-tutorial winrate DPO=outputs/dpo_vs_chosen.jsonl RPO=outputs/rpo_vs_chosen.jsonl --plot figures/win_rates.png
    rpo-tutorial alpaca-export --model runs/rpo --generator rpo-smollm2 --output outputs/alpaca_eval/model_outputs.json

Prompt files (``--prompts``) are JSON lines or a JSON list of strings or of rows holding
``prompt`` (a string or message list) or ``instruction``. Sample files are what ``sample``
writes: rows ``{prompt, response, ...}``; ``judge`` pairs candidates with baselines by prompt.
The OpenAI judge reads the key from ``$OPENAI_API_KEY`` only.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from rpo_tutorial.data.jsonl import read_jsonl, write_jsonl

DEFAULT_REWARD_FN = "rpo_tutorial.data.sentiment:sentiment_score"


def _read_rows(path: str | Path) -> list:
    path = Path(path)
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list, got {type(rows).__name__}")
        return rows
    return read_jsonl(path)


def read_prompts(path: str | Path, limit: int | None = None) -> list:
    """Prompts from a prompt file (see the module docstring); ValueError names a bad row."""
    prompts = []
    for index, row in enumerate(_read_rows(path)[:limit]):
        prompt = row
        if isinstance(row, dict):
            prompt = row.get("prompt", row.get("instruction"))
        elif not isinstance(row, str):
            prompt = None
        if prompt is None:
            raise ValueError(f"{path}: row {index} needs a 'prompt' or 'instruction' field (or be a string)")
        prompts.append(prompt)
    return prompts


def _device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _load(model_name: str, device: str | None):
    from rpo_tutorial.models.loading import load_policy, load_tokenizer

    return load_policy(model_name).to(_device(device)), load_tokenizer(model_name)


def _sample_command(args: argparse.Namespace) -> int:
    from rpo_tutorial.evaluation.sampling import generate_responses
    from rpo_tutorial.training.threads import apply_num_threads

    print(f"sample: {apply_num_threads(None)} torch thread(s) (chosen by machine load)", flush=True)
    prompts = read_prompts(args.prompts, args.limit)
    model, tokenizer = _load(args.model, args.device)
    rows = generate_responses(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, top_p=args.top_p, batch_size=args.batch_size,
                              seed=args.seed, model_name=args.model_name or args.model, template=args.template,
                              output_path=args.output)
    print(f"wrote {len(rows)} responses to {args.output}")
    return 0


def _prompt_key(prompt: object) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def pair_by_prompt(candidate_rows: list[dict], baseline_rows: list[dict], candidate_field: str = "response",
                   baseline_field: str = "response") -> tuple[list, list[str], list[str], int]:
    """Match candidate and baseline rows on their prompt -> (prompts, candidates, baselines, unmatched count)."""
    baselines = {}
    for index, row in enumerate(baseline_rows):
        if "prompt" not in row or baseline_field not in row:
            raise ValueError(f"baselines row {index} needs 'prompt' and {baseline_field!r}; keys: {sorted(row)}")
        baselines.setdefault(_prompt_key(row["prompt"]), row[baseline_field])
    prompts, candidates, matched, unmatched = [], [], [], 0
    for index, row in enumerate(candidate_rows):
        if "prompt" not in row or candidate_field not in row:
            raise ValueError(f"candidates row {index} needs 'prompt' and {candidate_field!r}; keys: {sorted(row)}")
        key = _prompt_key(row["prompt"])
        if key not in baselines:
            unmatched += 1
            continue
        prompts.append(row["prompt"])
        candidates.append(row[candidate_field])
        matched.append(baselines[key])
    return prompts, candidates, matched, unmatched


def _reward_fn(spec: str, margin: float | None) -> tuple:
    """Import ``module:function``; the margin defaults to the module's DEFAULT_TIE_MARGIN, else 0."""
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise ValueError(f"--reward-fn must look like 'package.module:function', got {spec!r}")
    module = importlib.import_module(module_name)
    if margin is None:
        margin = float(getattr(module, "DEFAULT_TIE_MARGIN", 0.0))
    return getattr(module, attribute), margin


def _judge_command(args: argparse.Namespace) -> int:
    from rpo_tutorial.data.errors import DataError
    from rpo_lab.cli.judge_inputs import load_judge_rows
    from rpo_tutorial.evaluation.judges import OpenAIJudge, RewardJudge
    from rpo_tutorial.evaluation.winrate import markdown_table, win_rate_table

    prompts, candidates, baselines, unmatched = pair_by_prompt(
        load_judge_rows(args.candidates, args.candidate_field, args.limit),
        load_judge_rows(args.baselines, args.baseline_field), args.candidate_field, args.baseline_field)
    if unmatched:
        print(f"warning: {unmatched} candidate rows have no baseline with the same prompt and are skipped",
              file=sys.stderr)
    if not prompts:
        raise DataError(f"no prompt of {args.candidates} matches a prompt of {args.baselines}")
    if args.judge == "reward":
        score_fn, margin = _reward_fn(args.reward_fn, args.margin)
        judge = RewardJudge(score_fn, margin=margin)
    else:
        from rpo_tutorial.evaluation.prompts import load_template

        try:
            template = load_template(args.template_file) if args.template_file else None
            judge = OpenAIJudge(model=args.judge_model, base_url=args.base_url, cache_path=args.cache, task=args.task,
                                max_retries=args.max_retries, timeout=args.timeout, concurrency=args.concurrency,
                                backoff_base=args.backoff_base, template=template, answer_pattern=args.answer_pattern)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    records = judge.judge_pairs(prompts, candidates, baselines)
    write_jsonl(args.output, records)
    print(f"wrote {len(records)} judge records to {args.output}")
    print(markdown_table(win_rate_table({Path(args.candidates).stem: records})))
    return 0


def parse_named_path(text: str) -> tuple[str, str | None, str]:
    """``METHOD[:DATASET]=PATH`` (or just ``PATH``, named by its stem) -> (method, dataset, path)."""
    name, separator, path = text.partition("=")
    if not separator:
        return Path(text).stem, None, text
    method, _, dataset = name.partition(":")
    return method, dataset or None, path


def _winrate_command(args: argparse.Namespace) -> int:
    from rpo_tutorial.evaluation.winrate import markdown_table, win_rate_table

    results: dict = {}
    for item in args.records:
        method, dataset, path = parse_named_path(item)
        records = read_jsonl(path)
        if dataset is None:
            results[method] = records
        else:
            results.setdefault(method, {})[dataset] = records
    rows = win_rate_table(results)
    table = markdown_table(rows)
    print(table)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    if args.plot:
        from rpo_tutorial.plots.winrates import plot_win_rates

        plot_win_rates(rows, path=args.plot)
        print(f"saved {args.plot}")
    return 0


def _alpaca_prompts(path: str | None, limit: int | None) -> list[dict]:
    from rpo_tutorial.data.preferences import load_alpaca_eval_prompts
    from rpo_tutorial.paths import shared_data_dir

    if path is None and shared_data_dir() is not None:
        local = shared_data_dir() / "alpaca_eval" / "alpaca_eval_prompts.json"
        path = str(local) if local.is_file() else None
    return list(load_alpaca_eval_prompts(path))[:limit]


def _alpaca_export_command(args: argparse.Namespace) -> int:
    from rpo_tutorial.evaluation.alpaca_eval import export_alpaca_eval, generate_alpaca_eval, run_alpaca_eval

    prompts = _alpaca_prompts(args.prompts, args.limit)
    if args.outputs:
        by_instruction = {_prompt_key(row.get("prompt")): row for row in read_jsonl(args.outputs)}
        missing = [i for i, row in enumerate(prompts) if row["instruction"] not in by_instruction]
        if missing:
            print(f"error: {args.outputs} has no response for {len(missing)} AlpacaEval instructions "
                  f"(first indexes {missing[:5]}); sample them all first, or pass --limit", file=sys.stderr)
            return 2
        outputs = [{**row, "output": by_instruction[row["instruction"]]["response"]} for row in prompts]
        path = export_alpaca_eval(outputs, args.generator, args.output)
    else:
        model, tokenizer = _load(args.model, args.device)
        generate_alpaca_eval(model, tokenizer, prompts, generator=args.generator, max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, top_p=args.top_p, batch_size=args.batch_size,
                             seed=args.seed, output_path=args.output)
        path = Path(args.output)
    print(f"wrote {len(prompts)} outputs to {path}")
    if args.run:
        return 0 if run_alpaca_eval(path, name=args.generator).get("returncode") in (0, None) else 1
    return 0


def _sampling_arguments(parser: argparse.ArgumentParser, temperature: float, top_p: float, max_new_tokens: int) -> None:
    from rpo_tutorial.models.loading import BUNDLED_POLICY

    parser.add_argument("--model", default=BUNDLED_POLICY, help="hub id, local folder or the bundled alias")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=top_p)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts (smoke runs)")


def register(subparsers: argparse._SubParsersAction) -> None:
    sample = subparsers.add_parser("sample", help="generate responses to a prompt file (JSONL out)")
    _sampling_arguments(sample, temperature=1.0, top_p=0.95, max_new_tokens=128)  # the paper's policy sampling
    sample.add_argument("--prompts", required=True, help="JSONL / JSON prompt file")
    sample.add_argument("--output", required=True, help="JSONL of {prompt, response, model, settings}")
    sample.add_argument("--model-name", default=None, help="name recorded in the rows (default: --model)")
    sample.add_argument("--template", default="auto", choices=("auto", "chat", "hh", "raw"))
    sample.set_defaults(handler=_sample_command)

    judge = subparsers.add_parser("judge", help="pairwise judging of candidates against baselines, both orders")
    judge.add_argument("--candidates", required=True, help="sample JSONL of the model under test")
    judge.add_argument("--baselines", required=True, help="JSONL with the same prompts (e.g. chosen responses)")
    judge.add_argument("--candidate-field", default="response")
    judge.add_argument("--baseline-field", default="response", help="e.g. 'chosen' for a preference file")
    judge.add_argument("--output", required=True, help="JSONL of judge records")
    judge.add_argument("--judge", choices=("openai", "reward"), default="openai")
    judge.add_argument("--judge-model", default="gpt-4-0613")
    judge.add_argument("--base-url", default=None, help="an OpenAI-compatible server (vLLM, local)")
    judge.add_argument("--task", choices=("dialogue", "summarization"), default="dialogue")
    judge.add_argument("--template-file", default=None,
                       help="judge prompt file with {prompt}, {response_a}, {response_b} (e.g. the paper's Appendix "
                            "D prompt; the default paraphrases it)")
    judge.add_argument("--answer-pattern", default=None,
                       help=r"regex whose first group captures the choice, e.g. 'Preferred:\s*Response\s*([12])'")
    judge.add_argument("--cache", default="outputs/judge_cache.jsonl", help="resumable cache of paid answers")
    judge.add_argument("--concurrency", type=int, default=4)
    judge.add_argument("--max-retries", type=int, default=5)
    judge.add_argument("--timeout", type=float, default=60.0)
    judge.add_argument("--backoff-base", type=float, default=1.0, help="seconds; doubles each retry")
    judge.add_argument("--reward-fn", default=DEFAULT_REWARD_FN, help="module:function for --judge reward")
    judge.add_argument("--margin", type=float, default=None,
                       help="reward differences <= margin are ties (default: the reward module's "
                            "DEFAULT_TIE_MARGIN, 0.05 for the demo judge, else 0)")
    judge.add_argument("--limit", type=int, default=None)
    judge.set_defaults(handler=_judge_command)

    winrate = subparsers.add_parser("winrate", help="win-rate table (and bar plot) from judge records")
    winrate.add_argument("records", nargs="+", help="METHOD[:DATASET]=records.jsonl, or a path")
    winrate.add_argument("--markdown", default=None, help="also write the table there")
    winrate.add_argument("--plot", default=None, help="save the bar plot (PNG) there")
    winrate.set_defaults(handler=_winrate_command)

    alpaca = subparsers.add_parser("alpaca-export", help="AlpacaEval 2.0 model_outputs.json (and optionally run it)")
    _sampling_arguments(alpaca, temperature=1.0, top_p=0.95, max_new_tokens=512)
    alpaca.add_argument("--generator", required=True, help="model name for the leaderboard")
    alpaca.add_argument("--outputs", default=None, help="existing sample JSONL instead of generating")
    alpaca.add_argument("--prompts", default=None, help="AlpacaEval prompt file (default: ../shared, else the hub)")
    alpaca.add_argument("--output", default="outputs/alpaca_eval/model_outputs.json")
    alpaca.add_argument("--run", action="store_true", help="then run alpaca_eval (needs the key and the extra)")
    alpaca.set_defaults(handler=_alpaca_export_command)
