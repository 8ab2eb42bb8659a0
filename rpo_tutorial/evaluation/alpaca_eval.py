"""AlpacaEval 2.0: generate for its 805 instructions, export ``model_outputs.json``, run the judge.

AlpacaEval 2.0 asks a GPT-4 Turbo annotator (the config ``alpaca_eval_gpt4_turbo_fn``, which the
paper used) whether the model's output or the reference output (GPT-4 Turbo's own, for the same
805 instructions) is better, and reports how often the model wins.

``model_outputs.json`` is a JSON list with one object per instruction::

    {"instruction": "...", "output": "<the model's response>", "generator": "<model name>",
     "dataset": "helpful_base" | "koala" | "oasst" | "selfinstruct" | "vicuna"}

Length-controlled (LC) win rate. Judges prefer longer answers, so a raw win rate can be raised
just by talking more. AlpacaEval 2.0 therefore also fits, per model, a logistic regression (a
GLM) of the judge's preference on three terms: the model's identity, the (tanh-squashed,
normalised) difference in length between its output and the reference output, and each
instruction's difficulty. The LC win rate is the win rate this model predicts with the length
term set to zero, i.e. the answer to "how often would the judge prefer this model if its
outputs were as long as the reference's?". It correlates better with human rankings (Chatbot
Arena) and is much harder to game by verbosity. The ``alpaca_eval`` command prints both
``win_rate`` and ``length_controlled_winrate``; the RPO paper (February 2024) predates LC and
reports the raw win rate, so compare like with like.

The ``alpaca_eval`` package is an optional extra (``pip install -e ".[alpaca]"``); the
judge costs a few dollars of OpenAI credit per model. Nothing here sends the key anywhere: the
command inherits ``$OPENAI_API_KEY`` from the environment.

    rows = load_alpaca_eval_prompts()                 # rpo_tutorial.data
    outputs = generate_alpaca_eval(model, tokenizer, rows, generator="rpo-mistral-7b")
    path = export_alpaca_eval(outputs, "rpo-mistral-7b", "outputs/alpaca_eval/model_outputs.json")
    run_alpaca_eval(path)                             # or prints what to run
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from rpo_tutorial.evaluation.sampling import generate_responses

ANNOTATORS_CONFIG = "alpaca_eval_gpt4_turbo_fn"
FIELDS = ("instruction", "output", "generator", "dataset")


def _field(row: Mapping, names: tuple[str, str], index: int) -> Any:
    for name in names:
        if name in row:
            return row[name]
    raise ValueError(f"outputs[{index}] has neither {names[0]!r} nor {names[1]!r}; keys: {sorted(row)}")


def export_alpaca_eval(outputs: Sequence[Mapping[str, Any]], generator: str, path: str | Path) -> Path:
    """Write AlpacaEval's ``model_outputs.json`` (list of ``{instruction, output, generator, dataset}``).

    Args:
        outputs: one mapping per instruction with ``instruction`` (or ``prompt``), ``output`` (or
            ``response``) and ``dataset`` (the AlpacaEval subset, carried over from the prompts).
        generator: the model's name, as it will appear on the leaderboard.
        path: the JSON file to write (``model_outputs.json`` inside it when ``path`` is a folder).

    Raises:
        ValueError: an empty list, a missing or non-string field, or a repeated instruction
            (AlpacaEval matches outputs to references by instruction); names the index.
    """
    if not isinstance(generator, str) or not generator.strip():
        raise ValueError(f"generator must be a non-empty string, got {generator!r}")
    if not outputs:
        raise ValueError("outputs is empty: nothing to export")
    rows, seen, empty = [], {}, 0
    for index, row in enumerate(outputs):
        if not isinstance(row, Mapping):
            raise ValueError(f"outputs[{index}] must be a dict, got {type(row).__name__}")
        instruction, output = _field(row, ("instruction", "prompt"), index), _field(row, ("output", "response"), index)
        dataset = row.get("dataset")
        for name, value in (("instruction", instruction), ("output", output), ("dataset", dataset)):
            if not isinstance(value, str):
                raise ValueError(f"outputs[{index}]: field {name!r} must be a string, got {value!r:.60}")
        if not instruction.strip():
            raise ValueError(f"outputs[{index}]: field 'instruction' is empty")
        if instruction in seen:
            raise ValueError(f"outputs[{index}] repeats the instruction of outputs[{seen[instruction]}]: "
                             f"{instruction!r:.60}")
        seen[instruction] = index
        empty += not output.strip()
        rows.append({"instruction": instruction, "output": output, "generator": generator, "dataset": dataset})
    if empty:
        warnings.warn(f"{empty} of {len(rows)} outputs are empty; they are exported as-is (and will lose)",
                      stacklevel=2)
    path = Path(path)
    if path.is_dir():
        path = path / "model_outputs.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def generate_alpaca_eval(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                         prompts: Sequence[Mapping[str, str]], generator: str | None = None,
                         max_new_tokens: int = 512, temperature: float = 1.0, top_p: float = 0.95,
                         batch_size: int = 8, seed: int = 0, output_path: str | Path | None = None,
                         progress: bool = True) -> list[dict]:
    """Generate one output per AlpacaEval instruction with :func:`rpo_tutorial.evaluation.sampling.generate_responses`.

    Args:
        prompts: rows ``{instruction, dataset}`` (``rpo_tutorial.data.load_alpaca_eval_prompts()``).
        generator: model name for the export (default: the model's ``_name_or_path``).
        temperature, top_p: sampling as the paper's policies (top-p 0.95); ``temperature=0`` is greedy.
        output_path: also write ``model_outputs.json`` there.

    Returns:
        ``[{instruction, output, generator, dataset}, ...]`` in the prompts' order.
    """
    for index, row in enumerate(prompts):
        if not isinstance(row, Mapping) or not isinstance(row.get("instruction"), str):
            raise ValueError(f"prompts[{index}] must be a dict with a string 'instruction'")
    samples = generate_responses(model, tokenizer, [row["instruction"] for row in prompts],
                                 max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                 batch_size=batch_size, seed=seed, model_name=generator, progress=progress)
    name = samples[0]["model"] if samples else (generator or "model")  # generator, else the model's name
    outputs = [{"instruction": row["instruction"], "output": sample["response"], "generator": name,
                "dataset": row.get("dataset", "")} for row, sample in zip(prompts, samples)]
    if output_path is not None:
        export_alpaca_eval(outputs, name, output_path)
    return outputs


def alpaca_eval_command(model_outputs_path: str | Path, annotators_config: str = ANNOTATORS_CONFIG,
                        output_path: str | Path | None = None, name: str | None = None,
                        max_instances: int | None = None) -> list[str]:
    """The ``alpaca_eval`` command line (no key on it: the tool reads ``$OPENAI_API_KEY``)."""
    command = ["alpaca_eval", "--model_outputs", str(model_outputs_path), "--annotators_config", annotators_config]
    if output_path is not None:
        command += ["--output_path", str(output_path)]
    if name is not None:
        command += ["--name", name]
    if max_instances is not None:
        command += ["--max_instances", str(int(max_instances))]
    return command


def run_alpaca_eval(model_outputs_path: str | Path, annotators_config: str = ANNOTATORS_CONFIG,
                    output_path: str | Path | None = None, name: str | None = None,
                    max_instances: int | None = None,
                    runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> dict:
    """Run ``alpaca_eval`` when ``$OPENAI_API_KEY`` is set and the command is installed; else explain.

    ``output_path`` defaults to the folder of ``model_outputs_path`` (AlpacaEval writes its
    leaderboard and annotations there). ``runner`` is for tests.

    Returns:
        ``{"ran": bool, "command": str, "returncode": int | None, "message": str}``; the message
        is also printed.
    """
    model_outputs_path = Path(model_outputs_path)
    if not model_outputs_path.is_file():
        raise FileNotFoundError(f"{model_outputs_path} does not exist; write it with export_alpaca_eval first")
    output_path = model_outputs_path.parent if output_path is None else output_path
    command = alpaca_eval_command(model_outputs_path, annotators_config, output_path, name, max_instances)
    text = shlex.join(command)
    missing = []
    if shutil.which("alpaca_eval") is None:
        missing.append('install the optional extra: pip install -e ".[alpaca]"  (or pip install alpaca-eval)')
    if not os.environ.get("OPENAI_API_KEY"):
        missing.append("export OPENAI_API_KEY=...  (in your shell, never in a notebook or file)")
    if missing:
        message = "Not running AlpacaEval. To run it:\n  " + "\n  ".join(missing) + f"\n  then: {text}"
        print(message)
        return {"ran": False, "command": text, "returncode": None, "message": message}
    print(f"Running: {text}")
    completed = runner(command, check=False)
    message = f"alpaca_eval exited with code {completed.returncode}; results in {output_path}"
    print(message)
    return {"ran": True, "command": text, "returncode": completed.returncode, "message": message}
