"""User judge templates (e.g. the paper's Appendix D prompts) with their own answer pattern."""
from __future__ import annotations

import argparse
import re

import pytest
from fake_openai_server import FakeOpenAIServer

from rpo_tutorial.data.jsonl import read_jsonl, write_jsonl
from rpo_lab.cli import judge as evaluation_cli
from rpo_tutorial.evaluation.judges import OpenAIJudge
from rpo_tutorial.evaluation.prompts import compile_answer_pattern, fill_template, load_template, parse_verdict

# A template in the numbered style (not the paper's text; the paper's is in its Appendix D).
NUMBERED = """Conversation:
{prompt}

Response 1: {response_a}
Response 2: {response_b}

Answer as {"choice": ...} on the last line: Preferred: Response <1 or 2>"""
PATTERN = r"^Preferred:\s*Response\s*([12])\s*$"


def numbered_judge(marker: str):
    """Answers 'Preferred: Response N' for the response holding ``marker`` (1 when neither does)."""
    def respond(content: str, attempt: int) -> str:
        first = re.search(r"Response 1: (.*)", content).group(1)
        second = re.search(r"Response 2: (.*)", content).group(1)
        return f"Response {2 if marker in second and marker not in first else 1} is better.\n" \
               f"Preferred: Response {2 if marker in second and marker not in first else 1}"
    return respond


@pytest.mark.parametrize("answer, expected", [
    ("Comparison: ...\nMore helpful: Response 1", "A"),
    ("Comparison: ...\nPreferred: Response 2", "B"),
    ("Comparison: ...\n**Preferred:** 2", "B"),
    ("The second is better.\nResponse 2", "B"),
    ("Preferred: Response 1\nPreferred: Response 2", None),
])
def test_default_parser_reads_numbered_responses(answer, expected):
    assert parse_verdict(answer) == expected


@pytest.mark.parametrize("answer, expected", [
    ("Response 2 is better.\nPreferred: Response 2", "B"),
    ("Preferred: Response 1", "A"),
    ("More helpful: A", None),  # the custom pattern does not match the default format
    ("Preferred: Response 1\nPreferred: Response 2", None),
])
def test_custom_answer_pattern_decides_what_is_read(answer, expected):
    assert parse_verdict(answer, PATTERN) == expected


def test_load_template_needs_all_three_placeholders_and_keeps_other_braces(tmp_path):
    good = tmp_path / "paper.txt"
    good.write_text(NUMBERED)
    template = load_template(good)
    assert fill_template(template, "hi", "one", "two").endswith('Answer as {"choice": ...} on the last line: '
                                                                 "Preferred: Response <1 or 2>")
    bad = tmp_path / "bad.txt"
    bad.write_text("{prompt} and {response_a} only")
    with pytest.raises(ValueError, match=r"\{response_b\}"):
        load_template(bad)
    with pytest.raises(ValueError, match="capturing group"):
        compile_answer_pattern("Preferred: Response [12]")


def test_openai_judge_with_a_user_template_and_pattern(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAIServer(numbered_judge("GOOD")) as server:
        judge = OpenAIJudge(model="fake", base_url=server.base_url, cache_path=tmp_path / "cache.jsonl",
                            template=NUMBERED, answer_pattern=PATTERN, progress=False, backoff_base=0.001)
        records = judge.judge_pairs(["q1", "q2"], ["GOOD one", "meh"], ["plain", "GOOD base"])
        assert fill_template(NUMBERED, "q1", "GOOD one", "plain") in server.contents()
    assert [r["winner"] for r in records] == ["candidate", "baseline"]
    with pytest.raises(ValueError, match="placeholder"):
        OpenAIJudge(base_url="http://127.0.0.1:9", template="no placeholders here")


def test_judge_command_takes_a_template_file_and_answer_pattern(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    candidates = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "p1", "response": "GOOD"}])
    baselines = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p1", "response": "meh"}])
    (tmp_path / "paper.txt").write_text(NUMBERED)
    parser = argparse.ArgumentParser()
    evaluation_cli.register(parser.add_subparsers(dest="command", required=True))
    with FakeOpenAIServer(numbered_judge("GOOD")) as server:
        args = parser.parse_args(["judge", "--candidates", str(candidates), "--baselines", str(baselines),
                                  "--base-url", server.base_url, "--cache", str(tmp_path / "cache.jsonl"),
                                  "--template-file", str(tmp_path / "paper.txt"), "--answer-pattern", PATTERN,
                                  "--output", str(tmp_path / "records.jsonl")])
        assert args.handler(args) == 0
    assert [r["winner"] for r in read_jsonl(tmp_path / "records.jsonl")] == ["candidate"]
    args = parser.parse_args(["judge", "--candidates", str(candidates), "--baselines", str(baselines),
                              "--template-file", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "x")])
    assert args.handler(args) == 2
