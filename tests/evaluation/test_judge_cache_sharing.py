"""Two judge processes sharing one cache file never pay twice for a request (issue 13, item 3)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, Reply, prefer

from rpo_tutorial.evaluation.cache import JudgeCache

SCRIPT = Path(__file__).with_name("judge_process.py")
TAKEOVER_SCRIPT = Path(__file__).with_name("claim_takeover_process.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_sharing_a_cache_ask_each_request_once(tmp_path):
    judge_answer = prefer("GOOD")

    def slow(content: str, attempt: int) -> Reply:  # slow enough that both processes want the same keys
        return Reply(text=judge_answer(content, attempt), delay=0.05)

    pairs = 20
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with FakeOpenAIServer(slow) as server:
        processes = [subprocess.Popen([sys.executable, str(SCRIPT), server.base_url, str(tmp_path / "cache.jsonl"),
                                       str(pairs), str(tmp_path / f"out{i}.json")], env=env)
                     for i in range(2)]
        assert [process.wait(timeout=300) for process in processes] == [0, 0]
        asked = Counter(server.contents(status=None))
    outputs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert all(output["winners"] == ["candidate"] * pairs for output in outputs)
    assert sum(asked.values()) == 2 * pairs  # both orders of every pair, once (not 80 requests for 40 verdicts)
    assert max(asked.values()) == 1
    assert outputs[0]["requests"] + outputs[1]["requests"] == 2 * pairs
    cache = JudgeCache(tmp_path / "cache.jsonl")
    assert len(cache) == 2 * pairs and cache.duplicate_lines == 0
    assert not list((tmp_path / "cache.jsonl.claims").iterdir())  # every claim released


def test_reading_keeps_the_first_of_duplicate_lines_and_counts_them(tmp_path):
    path = tmp_path / "cache.jsonl"
    lines = [{"key": "a", "answer": "first"}, {"key": "b", "answer": "b"}, {"key": "a", "answer": "second"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cache = JudgeCache(path)
    assert len(cache) == 2 and cache.duplicate_lines == 1 and cache.get("a")["answer"] == "first"


def test_a_dead_processes_claim_is_taken_over(tmp_path):
    cache = JudgeCache(tmp_path / "cache.jsonl")
    claim = tmp_path / "cache.jsonl.claims" / "k"
    claim.parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim.write_text(str(dead.pid))  # a judge killed mid-request left its claim behind
    assert cache.acquire("k") is True and claim.read_text() == str(os.getpid())
    cache.append({"key": "k", "answer": "A"})
    cache.release("k")
    assert not claim.exists() and JudgeCache(tmp_path / "cache.jsonl").acquire("k") is False


@pytest.mark.slow
def test_two_processes_finding_one_dead_claim_at_once_ask_the_judge_once(tmp_path):
    """Both processes find the dead claim before either takes it over (a barrier forces this order):
    the takeover is atomic, so exactly one request is made and both read its answer."""
    claim = tmp_path / "cache.jsonl.claims" / "k"
    claim.parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim.write_text(str(dead.pid))
    barrier, asked = tmp_path / "barrier", tmp_path / "asked.log"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    processes = [subprocess.Popen([sys.executable, str(TAKEOVER_SCRIPT), str(tmp_path / "cache.jsonl"), str(barrier),
                                   str(asked)], env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    finished = [(process.wait(timeout=120), process.stderr.read()) for process in processes]
    assert [code for code, _ in finished] == [0, 0], finished
    assert len(list(barrier.iterdir())) == 2  # both found the claim dead before either took it over
    askers = asked.read_text().split()
    assert len(askers) == 1, askers  # one request, not two
    cache = JudgeCache(tmp_path / "cache.jsonl")
    assert len(cache) == 1 and cache.duplicate_lines == 0 and cache.get("k")["answer"] == askers[0]
    assert not claim.exists()
