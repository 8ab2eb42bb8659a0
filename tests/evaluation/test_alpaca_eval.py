"""AlpacaEval 2.0: model_outputs.json on the real 805 prompts, generation, and the command runner."""
from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from rpo_tutorial.data import load_alpaca_eval_prompts
from rpo_tutorial.evaluation.alpaca_eval import (
    ANNOTATORS_CONFIG,
    FIELDS,
    alpaca_eval_command,
    export_alpaca_eval,
    generate_alpaca_eval,
    run_alpaca_eval,
)
from rpo_tutorial.paths import shared_data_dir


def real_prompts_path():
    root = shared_data_dir()
    path = root / "alpaca_eval" / "alpaca_eval_prompts.json" if root else None
    if path is None or not path.is_file():
        pytest.skip("../shared/data/alpaca_eval/alpaca_eval_prompts.json is absent")
    return path


def test_export_on_the_real_805_prompts_has_alpaca_eval_format(tmp_path):
    path = real_prompts_path()
    prompts = load_alpaca_eval_prompts(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    outputs = [{**row, "output": f"Antwort {index}: café ✓"} for index, row in enumerate(prompts)]
    written = export_alpaca_eval(outputs, "rpo-test", tmp_path / "model_outputs.json")
    exported = json.loads(written.read_text(encoding="utf-8"))
    assert len(exported) == len(raw) == 805
    assert all(list(row) == list(FIELDS) for row in exported)
    assert [row["instruction"] for row in exported] == [row["instruction"] for row in raw]
    assert [row["dataset"] for row in exported] == [row["dataset"] for row in raw]
    assert {row["generator"] for row in exported} == {"rpo-test"}
    assert exported[804]["output"] == "Antwort 804: café ✓" and "café ✓" in written.read_text(encoding="utf-8")


def test_export_accepts_sample_rows_and_a_folder(tmp_path):
    rows = [{"prompt": "Say hi.", "response": "Hi!", "dataset": "koala"}]
    written = export_alpaca_eval(rows, "m", tmp_path)
    assert written == tmp_path / "model_outputs.json"
    assert json.loads(written.read_text()) == [{"instruction": "Say hi.", "output": "Hi!", "generator": "m",
                                                "dataset": "koala"}]


@pytest.mark.parametrize("rows, message", [
    ([{"instruction": "a", "dataset": "x"}], r"outputs\[0\] has neither 'output' nor 'response'"),
    ([{"instruction": "a", "output": 3, "dataset": "x"}], r"outputs\[0\]: field 'output' must be a string"),
    ([{"instruction": "a", "output": "o"}], r"field 'dataset'"),
    ([{"instruction": "a", "output": "o", "dataset": "x"}, {"instruction": "a", "output": "p", "dataset": "x"}],
     r"outputs\[1\] repeats the instruction of outputs\[0\]"),
    ([], "empty"),
])
def test_export_rejects_malformed_outputs(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        export_alpaca_eval(rows, "m", tmp_path / "out.json")


def test_export_warns_about_empty_outputs(tmp_path):
    with pytest.warns(UserWarning, match="1 of 2 outputs are empty"):
        export_alpaca_eval([{"instruction": "a", "output": "", "dataset": "x"},
                            {"instruction": "b", "output": "fine", "dataset": "x"}], "m", tmp_path / "o.json")


def test_generate_alpaca_eval_writes_one_output_per_instruction(tmp_path):
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model

    tokenizer = load_tokenizer()
    prompts = [{"instruction": "Write a haiku.", "dataset": "koala"}, {"instruction": "Add 2 and 3.", "dataset": "oasst"}]
    outputs = generate_alpaca_eval(tiny_model(len(tokenizer)), tokenizer, prompts, generator="tiny", max_new_tokens=3,
                                   output_path=tmp_path / "model_outputs.json", progress=False)
    assert [(row["instruction"], row["dataset"], row["generator"]) for row in outputs] == [
        ("Write a haiku.", "koala", "tiny"), ("Add 2 and 3.", "oasst", "tiny")]
    assert json.loads((tmp_path / "model_outputs.json").read_text()) == outputs


def test_run_alpaca_eval_explains_what_to_run_without_a_key(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = export_alpaca_eval([{"instruction": "a", "output": "b", "dataset": "x"}], "m", tmp_path / "mo.json")
    calls = []
    result = run_alpaca_eval(path, runner=lambda *args, **kwargs: calls.append(args))
    assert result["ran"] is False and calls == []
    assert "OPENAI_API_KEY" in result["message"] and ANNOTATORS_CONFIG in result["message"]
    assert "alpaca_eval --model_outputs" in capsys.readouterr().out


def test_run_alpaca_eval_runs_the_command_when_key_and_tool_exist(tmp_path, monkeypatch):
    secret = "sk-test-never-on-the-command-line"
    tool = tmp_path / "bin" / "alpaca_eval"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    path = export_alpaca_eval([{"instruction": "a", "output": "b", "dataset": "x"}], "m", tmp_path / "mo.json")
    seen = []

    def runner(command, check):
        seen.append(command)
        return subprocess.CompletedProcess(command, 0)

    result = run_alpaca_eval(path, name="m", runner=runner)
    assert result["ran"] is True and result["returncode"] == 0
    assert seen == [alpaca_eval_command(path, ANNOTATORS_CONFIG, tmp_path, "m")]
    assert seen[0][:5] == ["alpaca_eval", "--model_outputs", str(path), "--annotators_config", ANNOTATORS_CONFIG]
    assert secret not in " ".join(seen[0]) and secret not in result["command"]
