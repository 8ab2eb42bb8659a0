"""Judges: the OpenAI path against a local scripted server, the tie rule, cache and resume, offline judges."""
from __future__ import annotations

import itertools
import json
import logging
import math

import pytest
import torch
from fake_openai_server import FakeOpenAIServer, Reply, prefer

from rpo_tutorial.evaluation import cache as judge_cache
from rpo_tutorial.evaluation.cache import JudgeCache, request_key
from rpo_tutorial.evaluation.judges import (
    OpenAIJudge,
    RewardJudge,
    implicit_reward_accuracy,
    implicit_reward_records,
    response_logps,
)
from rpo_tutorial.evaluation.prompts import (
    DIALOGUE_TEMPLATE,
    SUMMARIZATION_TEMPLATE,
    VERDICTS,
    combine_verdicts,
    fill_template,
    parse_verdict,
    render_prompt,
)
from rpo_tutorial.evaluation.winrate import win_rate

FAST = {"backoff_base": 0.001, "backoff_max": 0.01, "progress": False}
SECRET = "sk-test-DO-NOT-LEAK-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def make_judge(server, tmp_path, **kwargs):
    options = {"model": "fake-judge", "base_url": server.base_url, "cache_path": tmp_path / "cache.jsonl",
               "max_retries": 3, "timeout": 5.0, "concurrency": 2, **FAST}
    options.update(kwargs)
    return OpenAIJudge(**options)


# ----------------------------------------------------------------------------- prompts and the tie rule
@pytest.mark.parametrize("answer, expected", [
    ("Comparison: A is clearer.\nMore helpful: A", "A"),
    ("Comparison: B is shorter.\n**More helpful:** B", "B"),
    ('Comparison: ...\nMore helpful: "Reply B".', "B"),
    ("Comparison: ...\nPreferred: (A)", "A"),
    ("Comparison: ...\nPreferred: Summary B", "B"),
    ("I pick the second one.\nB", "B"),
    ("More helpful: A or B", None),
    ("Both replies are equally good.", None),
    ("More helpful: A\nMore helpful: B", None),
    ("", None),
    (None, None),
])
def test_parse_verdict_reads_labelled_and_bare_answers(answer, expected):
    assert parse_verdict(answer) == expected


def test_combine_verdicts_matches_the_rule_table():
    for first, second in itertools.product(VERDICTS, repeat=2):
        if "failed" in (first, second):
            expected = "failed"
        elif "unparseable" in (first, second):
            expected = "unparseable"
        elif first == second:
            expected = first
        else:
            expected = "tie"
        assert combine_verdicts(first, second) == expected, (first, second)
    with pytest.raises(ValueError, match="verdict"):
        combine_verdicts("A", "candidate")


def test_fill_template_leaves_braces_in_texts_alone():
    text = fill_template(DIALOGUE_TEMPLATE, "use {response_a} literally", "x {prompt} y", "plain")
    assert "use {response_a} literally" in text and "x {prompt} y" in text and "{response_b}" not in text


def test_render_prompt_turns_messages_into_speaker_turns():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "help?"}]
    assert render_prompt(messages) == "Human: hi\n\nAssistant: hello\n\nHuman: help?"
    with pytest.raises(ValueError, match="message 0"):
        render_prompt([{"speaker": "user"}])


# ----------------------------------------------------------------------------- OpenAI judge on the local server
def test_both_orders_are_judged_and_a_flipped_verdict_is_a_tie(tmp_path):
    prompts = ["q1", "q2", "q3"]
    candidates = ["GOOD answer", "meh", "meh too"]
    baselines = ["plain", "GOOD baseline", "plain too"]  # q3: neither marked -> judge says "A" both times
    with FakeOpenAIServer(prefer("GOOD")) as server:
        records = make_judge(server, tmp_path).judge_pairs(prompts, candidates, baselines)
        contents = server.contents()
    assert [r["winner"] for r in records] == ["candidate", "baseline", "tie"]
    assert records[2]["verdict_candidate_first"] == "candidate" and records[2]["verdict_baseline_first"] == "baseline"
    assert len(contents) == 6 and len(set(contents)) == 6
    for prompt, candidate, baseline in zip(prompts, candidates, baselines):
        assert fill_template(DIALOGUE_TEMPLATE, prompt, candidate, baseline) in contents
        assert fill_template(DIALOGUE_TEMPLATE, prompt, baseline, candidate) in contents
    assert all(entry["temperature"] == 0 for entry in server.log)
    assert {r["raw_candidate_first"] is not None for r in records} == {True}


def test_unparseable_answer_is_recorded_and_not_counted_as_a_loss(tmp_path):
    def respond(content, attempt):
        return "I really cannot choose." if "CONFUSING" in content else prefer("GOOD")(content, attempt)

    with FakeOpenAIServer(respond) as server:
        records = make_judge(server, tmp_path).judge_pairs(["a", "b CONFUSING"], ["GOOD", "x"], ["y", "z"])
    assert [r["winner"] for r in records] == ["candidate", "unparseable"]
    summary = win_rate(records)
    assert (summary["n"], summary["wins"], summary["losses"], summary["unparseable"]) == (1, 1, 0, 1)


def test_summarization_task_uses_the_summary_template(tmp_path):
    with FakeOpenAIServer(prefer("GOOD")) as server:
        records = make_judge(server, tmp_path, task="summarization").judge_pairs(["post"], ["GOOD tl;dr"], ["bad"])
        assert fill_template(SUMMARIZATION_TEMPLATE, "post", "GOOD tl;dr", "bad") in server.contents()
    assert records[0]["winner"] == "candidate" and records[0]["task"] == "summarization"


def test_rate_limits_and_server_errors_are_retried_until_an_answer(tmp_path):
    def respond(content, attempt):
        return {0: 429, 1: 500, 2: 503}.get(attempt) or prefer("GOOD")(content, attempt)

    with FakeOpenAIServer(respond) as server:
        judge = make_judge(server, tmp_path, max_retries=3)
        records = judge.judge_pairs(["p1", "p2"], ["GOOD", "x"], ["y", "GOOD"])
        statuses = [entry["status"] for entry in server.log]
    assert [r["winner"] for r in records] == ["candidate", "baseline"]
    assert sorted(statuses) == sorted([429, 500, 503, 200] * 4) and judge.requests_made == 16


def test_pair_fails_after_retries_and_the_run_goes_on_then_rerun_retries_only_it(tmp_path):
    def respond(content, attempt):
        return 500 if "BROKEN" in content else prefer("GOOD")(content, attempt)

    with FakeOpenAIServer(respond) as server:
        records = make_judge(server, tmp_path, max_retries=2).judge_pairs(
            ["ok", "BROKEN", "fine"], ["GOOD", "a", "b"], ["c", "d", "GOOD"])
        assert [r["winner"] for r in records] == ["candidate", "failed", "baseline"]
        assert "HTTP 500" in records[1]["error"] and "3 attempts" in records[1]["error"]
        assert len([c for c in server.contents(None) if "BROKEN" in c]) == 2 * 3
        first_run = len(server.log)
        make_judge(server, tmp_path, max_retries=0).judge_pairs(["ok", "BROKEN", "fine"], ["GOOD", "a", "b"],
                                                               ["c", "d", "GOOD"])
        repeated = server.log[first_run:]
    assert len(repeated) == 2 and all("BROKEN" in entry["content"] for entry in repeated)
    assert win_rate(records)["failed"] == 1


def test_timeouts_are_retried(tmp_path):
    # The first answer never comes in time (its handler sleeps 60 s in a daemon thread); the retry answers at
    # once. A 2 s timeout leaves the immediate answer ample time on a loaded CI machine (0.25 s did not).
    def respond(content, attempt):
        return Reply(text="More helpful: A", delay=60.0) if attempt == 0 else "More helpful: A"

    with FakeOpenAIServer(respond) as server:
        records = make_judge(server, tmp_path, timeout=2.0, max_retries=1).judge_pairs(["p"], ["c"], ["b"])
        assert len(server.log) == 4
    assert records[0]["winner"] == "tie"  # "A" in both orders follows the position


def test_client_errors_and_broken_bodies_fail_without_stopping_the_run(tmp_path):
    def respond(content, attempt):
        if "BAD_REQUEST" in content:
            return 400
        if "GARBLED" in content:
            return Reply(raw_body="this is not json")
        return prefer("GOOD")(content, attempt)

    with FakeOpenAIServer(respond) as server:
        records = make_judge(server, tmp_path, max_retries=2).judge_pairs(
            ["BAD_REQUEST", "GARBLED", "fine"], ["a", "b", "GOOD"], ["c", "d", "e"])
        bad_attempts = [c for c in server.contents(None) if "BAD_REQUEST" in c]
    assert [r["winner"] for r in records] == ["failed", "failed", "candidate"]
    assert len(bad_attempts) == 2  # one per order: a 400 is not retried


class SimulatedCrash(BaseException):
    """Stands in for a kill or Ctrl-C in the middle of a judging run."""


def test_killed_run_resumes_from_the_cache_without_repeating_any_request(tmp_path, monkeypatch):
    prompts = [f"question {i}" for i in range(8)]
    candidates = [f"GOOD answer {i}" if i % 2 else f"answer {i}" for i in range(8)]
    baselines = [f"baseline {i}" for i in range(8)]
    original_append, appended = JudgeCache.append, []

    def crashing_append(self, entry):
        original_append(self, entry)  # the answer reaches the disk first, as in a real run
        appended.append(entry["key"])
        if len(appended) == 5:
            raise SimulatedCrash()

    with FakeOpenAIServer(prefer("GOOD")) as server:
        monkeypatch.setattr(judge_cache.JudgeCache, "append", crashing_append)
        with pytest.raises(SimulatedCrash):
            make_judge(server, tmp_path, concurrency=3).judge_pairs(prompts, candidates, baselines)
        monkeypatch.setattr(judge_cache.JudgeCache, "append", original_append)
        answered_before = len(server.log)
        assert 5 <= answered_before < 16  # killed midway; requests in flight were still stored
        assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == answered_before
        records = make_judge(server, tmp_path).judge_pairs(prompts, candidates, baselines)
        contents = server.contents(None)
    assert len(contents) == 16 and len(set(contents)) == 16  # every request exactly once over both runs
    assert [r["winner"] for r in records] == ["tie" if i % 2 == 0 else "candidate" for i in range(8)]


def test_rerun_with_a_complete_cache_needs_neither_server_nor_key(tmp_path):
    with FakeOpenAIServer(prefer("GOOD")) as server:
        first = make_judge(server, tmp_path).judge_pairs(["p", "q"], ["GOOD", "x"], ["y", "GOOD"])
    judge = OpenAIJudge(model="fake-judge", base_url=None, cache_path=tmp_path / "cache.jsonl", **FAST)
    assert judge.judge_pairs(["p", "q"], ["GOOD", "x"], ["y", "GOOD"]) == first
    assert judge.requests_made == 0


def test_partial_cache_line_from_a_crash_is_skipped_and_redone(tmp_path):
    cache_path = tmp_path / "cache.jsonl"
    with FakeOpenAIServer(prefer("GOOD")) as server:
        make_judge(server, tmp_path).judge_pairs(["p"], ["GOOD"], ["x"])
        lines = cache_path.read_text().splitlines()
        cache_path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # second write cut short
        with pytest.warns(UserWarning, match="unreadable cache line 2"):
            records = make_judge(server, tmp_path).judge_pairs(["p"], ["GOOD"], ["x"])
        assert len(server.log) == 3
    assert records[0]["winner"] == "candidate"
    readable = [json.loads(line) for line in cache_path.read_text().splitlines()[2:]]
    assert len(readable) == 1 and parse_verdict(readable[0]["answer"]) in {"A", "B"}


def test_identical_requests_are_sent_once(tmp_path):
    with FakeOpenAIServer(prefer("GOOD")) as server:
        records = make_judge(server, tmp_path).judge_pairs(["p", "p"], ["GOOD", "GOOD"], ["x", "x"])
        assert len(server.log) == 2
    assert [r["winner"] for r in records] == ["candidate", "candidate"]


def test_cache_key_changes_with_every_field():
    fields = ["model", "template", "prompt", "a", "b", "candidate_first"]
    base = request_key(*fields)
    for index in range(len(fields)):
        changed = list(fields)
        changed[index] += "!"
        assert request_key(*changed) != base


def test_missing_key_without_base_url_raises_before_any_request(tmp_path):
    judge = OpenAIJudge(cache_path=tmp_path / "cache.jsonl", **FAST)
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY is not set"):
        judge.judge_pairs(["p"], ["a"], ["b"])
    assert judge.requests_made == 0 and not (tmp_path / "cache.jsonl").exists()


def test_api_key_is_sent_but_never_printed_logged_or_written(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)

    def respond(content, attempt):
        if "REJECT" in content:
            return Reply(status=401, text=f"Incorrect API key provided: {SECRET}. Find your key at ...")
        return prefer("GOOD")(content, attempt)

    with FakeOpenAIServer(respond) as server:
        judge = make_judge(server, tmp_path)
        records = judge.judge_pairs(["REJECT", "fine"], ["a", "GOOD"], ["b", "c"])
        assert {entry["authorization"] for entry in server.log} == {f"Bearer {SECRET}"}
    assert records[0]["winner"] == "failed" and "401" in records[0]["error"]
    captured = capsys.readouterr()
    for text in (json.dumps(records), (tmp_path / "cache.jsonl").read_text(), captured.out, captured.err,
                 caplog.text, repr(judge)):
        assert SECRET not in text and SECRET[3:] not in text


def test_judge_rejects_misaligned_or_malformed_inputs(tmp_path):
    judge = OpenAIJudge(base_url="http://127.0.0.1:9/v1", cache_path=None, **FAST)
    with pytest.raises(ValueError, match="lengths 2, 1, 2"):
        judge.judge_pairs(["a", "b"], ["x"], ["y", "z"])
    with pytest.raises(ValueError, match=r"baselines\[1\]"):
        judge.judge_pairs(["a", "b"], ["x", "y"], ["y", None])
    with pytest.raises(ValueError, match="task"):
        OpenAIJudge(task="poetry")


# ----------------------------------------------------------------------------- offline judges
def test_reward_judge_uses_scores_with_a_tie_margin():
    judge = RewardJudge(len, margin=1)
    records = judge.judge_pairs(["p"] * 3, ["long answer", "ab", "abc"], ["short", "abcdef", "abcd"])
    assert [r["winner"] for r in records] == ["candidate", "baseline", "tie"]
    assert records[0]["candidate_score"] == 11.0 and records[0]["judge"] == "len"
    assert set(records[0]) >= {"prompt", "candidate", "baseline", "winner", "verdict_candidate_first",
                               "verdict_baseline_first"}


def test_reward_judge_with_the_demo_sentiment_judge():
    from rpo_tutorial.data.sentiment import sentiment_score

    records = RewardJudge(sentiment_score, margin=0.05).judge_pairs(
        ["How was your day?"] * 2, ["It was wonderful, thank you!", "Fine."], ["Awful and sad.", "Fine."])
    assert [r["winner"] for r in records] == ["candidate", "tie"] and records[0]["judge"] == "sentiment_score"


def test_reward_judge_records_non_finite_scores_as_failed_with_a_warning():
    judge = RewardJudge(lambda prompt, text: math.nan if "bad" in text else len(prompt), with_prompt=True)
    with pytest.warns(UserWarning, match="1 of 2 pairs"):
        records = judge.judge_pairs(["pp", "p"], ["bad", "x"], ["y", "z"])
    assert [r["winner"] for r in records] == ["failed", "tie"]


def _brute_force_accuracy(pc, pr, rc, rr, beta):
    hits = 0.0
    for i in range(len(pc)):
        chosen, rejected = beta * (pc[i] - rc[i]), beta * (pr[i] - rr[i])
        if chosen > rejected:
            hits += 1
        elif chosen == rejected:  # a tie carries no preference: half a hit, never a miss
            hits += 0.5
    return hits / len(pc)


def test_implicit_reward_accuracy_matches_a_loop_and_records_agree():
    generator = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(50, generator=generator) * 20 - 100 for _ in range(4))
    pr[:3], rr[:3], pc[:3], rc[:3] = 0.0, 0.0, 1.0, 1.0  # three exact ties
    for beta in (0.1, 0.5):
        expected = _brute_force_accuracy(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), beta)
        assert implicit_reward_accuracy(pc, pr, rc, rr, beta) == pytest.approx(expected)
    records = implicit_reward_records(pc, pr, rc, rr, beta=0.1)
    summary = win_rate(records)
    assert summary["ties"] == 3 and summary["wins"] == round(expected * 50 - 1.5)
    with pytest.raises(ValueError, match="1-D of one length"):
        implicit_reward_accuracy(pc, pr[:3], rc, rr, 0.1)
    with pytest.raises(ValueError, match="beta"):
        implicit_reward_accuracy(pc, pr, rc, rr, 0.0)


def test_implicit_reward_accuracy_of_a_model_equal_to_its_reference_is_one_half():
    logps = torch.tensor([-10.0, -20.0, -30.0])
    assert implicit_reward_accuracy(logps, logps - 1, logps, logps - 1, beta=0.1) == 0.5


def test_response_logps_matches_a_token_by_token_loop():
    from rpo_tutorial.data.tokenization import tokenize_sft
    from rpo_tutorial.models.loading import load_tokenizer, tiny_model

    tokenizer = load_tokenizer()
    model = tiny_model(len(tokenizer)).eval()
    prompts, responses = ["hello there", "a much longer prompt about bread"], ["hi!", "knead the dough well"]
    batched = response_logps(model, tokenizer, prompts, responses, batch_size=2, progress=False)
    assert batched.dtype == torch.float32 and batched.shape == (2,)
    for index, (prompt, response) in enumerate(zip(prompts, responses)):
        example = tokenize_sft({"prompt": prompt, "chosen": response}, tokenizer)
        ids, labels = example["input_ids"], example["labels"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        total = 0.0
        for t in range(1, len(ids)):
            if labels[t] != -100:
                total += (logits[t - 1].log_softmax(-1)[ids[t]]).item()
        assert batched[index].item() == pytest.approx(total, abs=1e-3)
