"""The evaluation sub-commands end to end on small local files (tiny model, reward judge, local server)."""
from __future__ import annotations

import argparse
import json

import pytest
from fake_openai_server import FakeOpenAIServer, prefer

from rpo_tutorial.data.jsonl import read_jsonl, write_jsonl
from rpo_lab.cli import judge as evaluation_cli


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rpo-tutorial")
    evaluation_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture
def sample_files(tmp_path):
    candidates = [{"prompt": "p1", "response": "a long and GOOD answer"}, {"prompt": "p2", "response": "short"},
                  {"prompt": [{"role": "user", "content": "p3"}], "response": "GOOD"},
                  {"prompt": "only in candidates", "response": "x"}]
    baselines = [{"prompt": "p2", "response": "a GOOD and longer baseline"}, {"prompt": "p1", "response": "meh"},
                 {"prompt": [{"role": "user", "content": "p3"}], "response": "no"}]
    return write_jsonl(tmp_path / "cand.jsonl", candidates), write_jsonl(tmp_path / "base.jsonl", baselines)


def test_sample_command_writes_rows_for_a_prompt_file(tmp_path):
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model

    tokenizer = load_tokenizer()
    tiny_model(len(tokenizer)).save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    (tmp_path / "prompts.json").write_text(json.dumps(["Hello?", {"instruction": "Add 1 and 1."}, "unused"]))
    code = run(["sample", "--model", str(tmp_path / "tiny"), "--prompts", str(tmp_path / "prompts.json"),
                "--output", str(tmp_path / "out.jsonl"), "--max-new-tokens", "2", "--limit", "2", "--device", "cpu"])
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert code == 0 and [row["prompt"] for row in rows] == ["Hello?", "Add 1 and 1."]
    assert rows[0]["model"] == str(tmp_path / "tiny") and rows[0]["settings"]["max_new_tokens"] == 2


def test_pairing_by_prompt_counts_unmatched_rows(sample_files):
    candidates, baselines = (read_jsonl(path) for path in sample_files)
    prompts, cands, bases, unmatched = evaluation_cli.pair_by_prompt(candidates, baselines)
    assert prompts == ["p1", "p2", [{"role": "user", "content": "p3"}]] and unmatched == 1
    assert bases == ["meh", "a GOOD and longer baseline", "no"]
    with pytest.raises(ValueError, match="baselines row 0 needs 'prompt' and 'chosen'"):
        evaluation_cli.pair_by_prompt(candidates, baselines, baseline_field="chosen")


def test_judge_command_with_a_reward_function(sample_files, tmp_path, capsys):
    candidates, baselines = sample_files
    code = run(["judge", "--candidates", str(candidates), "--baselines", str(baselines), "--judge", "reward",
                "--reward-fn", "builtins:len", "--output", str(tmp_path / "records.jsonl")])
    records = read_jsonl(tmp_path / "records.jsonl")
    assert code == 0 and [r["winner"] for r in records] == ["candidate", "baseline", "candidate"]
    captured = capsys.readouterr()
    assert "| cand | 66.7 (" in captured.out and "1 candidate rows have no baseline" in captured.err


def test_judge_command_against_a_local_openai_compatible_server(sample_files, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    candidates, baselines = sample_files
    with FakeOpenAIServer(prefer("GOOD")) as server:
        code = run(["judge", "--candidates", str(candidates), "--baselines", str(baselines), "--base-url",
                    server.base_url, "--judge-model", "local", "--cache", str(tmp_path / "cache.jsonl"),
                    "--backoff-base", "0.001", "--output", str(tmp_path / "records.jsonl")])
        assert len(server.log) == 6 and {e["authorization"] for e in server.log} == {"Bearer EMPTY"}
    assert code == 0 and [r["winner"] for r in read_jsonl(tmp_path / "records.jsonl")] == [
        "candidate", "baseline", "candidate"]


def test_winrate_command_prints_table_and_saves_markdown_and_plot(tmp_path, capsys):
    write_jsonl(tmp_path / "dpo.jsonl", [{"winner": "candidate"}, {"winner": "baseline"}])
    write_jsonl(tmp_path / "rpo.jsonl", [{"winner": "candidate"}, {"winner": "tie"}, {"winner": "failed"}])
    code = run(["winrate", f"DPO:HH={tmp_path / 'dpo.jsonl'}", f"RPO:HH={tmp_path / 'rpo.jsonl'}",
                "--markdown", str(tmp_path / "table.md"), "--plot", str(tmp_path / "plot.png")])
    out = capsys.readouterr().out
    assert code == 0 and "| method | HH |" in out and "| RPO | 75.0 (" in out
    assert (tmp_path / "table.md").read_text().startswith("| method | HH |")
    assert (tmp_path / "plot.png").stat().st_size > 1000
    assert evaluation_cli.parse_named_path("runs/x.jsonl") == ("x", None, "runs/x.jsonl")


def test_alpaca_export_command_from_existing_samples(tmp_path):
    prompts = [{"instruction": "Say hi.", "dataset": "koala"}, {"instruction": "Count to 3.", "dataset": "oasst"}]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    write_jsonl(tmp_path / "samples.jsonl", [{"prompt": "Count to 3.", "response": "1 2 3"},
                                             {"prompt": "Say hi.", "response": "Hi"}])
    code = run(["alpaca-export", "--outputs", str(tmp_path / "samples.jsonl"), "--prompts", str(tmp_path / "prompts.json"),
                "--generator", "g", "--output", str(tmp_path / "model_outputs.json")])
    assert code == 0 and json.loads((tmp_path / "model_outputs.json").read_text()) == [
        {"instruction": "Say hi.", "output": "Hi", "generator": "g", "dataset": "koala"},
        {"instruction": "Count to 3.", "output": "1 2 3", "generator": "g", "dataset": "oasst"}]
    write_jsonl(tmp_path / "partial.jsonl", [{"prompt": "Say hi.", "response": "Hi"}])
    assert run(["alpaca-export", "--outputs", str(tmp_path / "partial.jsonl"), "--prompts",
                str(tmp_path / "prompts.json"), "--generator", "g", "--output", str(tmp_path / "x.json")]) == 2
