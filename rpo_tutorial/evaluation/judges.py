"""Pairwise judges: GPT-4 (or any OpenAI-compatible server) and offline ones, one record format.

``judge_pairs(prompts, candidates, baselines)`` returns one record per prompt::

    {"prompt", "candidate", "baseline", "winner", "verdict_candidate_first",
     "verdict_baseline_first", "judge", "task", ...}

``winner`` is "candidate", "baseline", "tie", "unparseable" or "failed" (rules in
:mod:`rpo_tutorial.evaluation.prompts`); :func:`rpo_tutorial.evaluation.winrate.win_rate` turns records into a win
rate with an interval.

:class:`OpenAIJudge` follows the paper's GPT-4 evaluation (gpt-4-0613, temperature 0) and adds
what a paid, flaky API needs:

- both orders per pair, a verdict that flips with the order being a tie;
- retries with exponential backoff (``backoff_base * 2**attempt`` seconds, at most
  ``backoff_max``, or the server's ``Retry-After`` when longer) on 429, 5xx, timeouts and
  connection errors; other errors (400, 401, ...) fail at once; a request that still fails is
  recorded "failed" and the run goes on (rerun to retry only those);
- a thread pool of ``concurrency`` requests;
- a resumable cache (:mod:`rpo_tutorial.evaluation.cache`): every answer is on disk the moment it
  arrives, and on a crash or Ctrl-C the requests already in flight are still awaited and stored
  (a second Ctrl-C abandons them); a rerun asks only what is not cached; two runs sharing one
  cache file claim each request first, so neither pays for what the other asks.

API key: read from ``$OPENAI_API_KEY`` (``api_key_env``) only, handed to the ``openai`` client and
nothing else; it is never printed, logged or written, and error messages stored in records are
scrubbed of it. With ``base_url`` (a local vLLM or other OpenAI-compatible server) and no key set,
the placeholder ``"EMPTY"`` is sent, which such servers accept. Without ``base_url`` and without a
key, ``judge_pairs`` raises before making any request, unless every answer is already cached.

    judge = OpenAIJudge(cache_path="outputs/judge_cache.jsonl")
    records = judge.judge_pairs(prompts, rpo_responses, chosen_responses)

The default prompt paraphrases the paper's (see :mod:`rpo_tutorial.evaluation.prompts`); for the
paper's own Appendix D prompt pass ``template=load_template("paper_dialogue.txt")`` and an
``answer_pattern`` whose first group captures the choice (``1`` / ``2`` or ``A`` / ``B``).
"""
from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from rpo_tutorial.evaluation.cache import JudgeCache, request_key
from rpo_tutorial.evaluation.offline import (
    RewardJudge,
    implicit_reward_accuracy,
    implicit_reward_records,
    response_logps,
)
from rpo_tutorial.evaluation.prompts import (
    ORDERS,
    PLACEHOLDERS,
    TASKS,
    TEMPLATES,
    check_pairs,
    combine_verdicts,
    compile_answer_pattern,
    fill_template,
    parse_verdict,
    position_to_verdict,
)

__all__ = ["OpenAIJudge", "RewardJudge", "check_pairs", "implicit_reward_accuracy", "implicit_reward_records",
           "response_logps"]

PLACEHOLDER_KEY = "EMPTY"
_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-*]{4,}")


class OpenAIJudge:
    """GPT-4-style pairwise judge over the ``openai`` client (see the module docstring)."""

    def __init__(self, model: str = "gpt-4-0613", base_url: str | None = None, cache_path: str | Path | None = None,
                 task: str = "dialogue", max_retries: int = 5, timeout: float = 60.0, concurrency: int = 4,
                 backoff_base: float = 1.0, backoff_max: float = 60.0, max_tokens: int = 256,
                 api_key_env: str = "OPENAI_API_KEY", progress: bool = True, template: str | None = None,
                 answer_pattern: str | None = None) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if max_retries < 0 or concurrency < 1 or timeout <= 0 or backoff_base < 0:
            raise ValueError(f"need max_retries >= 0, concurrency >= 1, timeout > 0, backoff_base >= 0; got "
                             f"{max_retries}, {concurrency}, {timeout}, {backoff_base}")
        self.model, self.base_url, self.task = model, base_url, task
        # the paper's Appendix D prompts (or any other) via template / answer_pattern; default: TEMPLATES[task]
        self.template = TEMPLATES[task] if template is None else template
        missing = [name for name in PLACEHOLDERS if "{" + name + "}" not in self.template]
        if missing:
            raise ValueError(f"template lacks the placeholder(s) {missing}; it needs {list(PLACEHOLDERS)}")
        self.answer_pattern = compile_answer_pattern(answer_pattern)
        self.cache = JudgeCache(cache_path)
        self.max_retries, self.timeout, self.concurrency = max_retries, timeout, concurrency
        self.backoff_base, self.backoff_max, self.max_tokens = backoff_base, backoff_max, max_tokens
        self.api_key_env, self.progress = api_key_env, progress
        self.requests_made = 0  # HTTP attempts in this object's lifetime (retries included)
        self._count_lock = threading.Lock()
        self._client = None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, task={self.task!r})"

    # ------------------------------------------------------------------ client and one request
    def _get_client(self) -> Any:
        if self._client is None:
            from openai import OpenAI

            key = os.environ.get(self.api_key_env)
            if not key:
                if self.base_url is None:
                    raise RuntimeError(f"${self.api_key_env} is not set. Export your OpenAI key in the environment "
                                       "(never in code or a notebook), or pass base_url for a local server.")
                key = PLACEHOLDER_KEY
            self._client = OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout)
        return self._client

    def _scrub(self, message: str) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            message = message.replace(key, "[redacted]")
        return _KEY_PATTERN.sub("sk-[redacted]", message)[:500]

    def _retry_delay(self, attempt: int, error: Exception) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2 ** attempt)
        response = getattr(error, "response", None)
        try:
            delay = max(delay, min(self.backoff_max, float(response.headers.get("retry-after"))))
        except (AttributeError, TypeError, ValueError):
            pass
        return delay

    def _ask(self, content: str) -> tuple[str | None, str | None]:
        """One judge request with retries -> (answer text, None) or (None, error message)."""
        import openai

        client = self._get_client()
        for attempt in range(self.max_retries + 1):
            with self._count_lock:
                self.requests_made += 1
            try:
                response = client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": content}],
                    temperature=0, max_tokens=self.max_tokens)
                return response.choices[0].message.content or "", None
            except openai.APIStatusError as error:
                last_error, message = error, f"HTTP {error.status_code}: {error.message}"
                if error.status_code != 429 and error.status_code < 500:
                    return None, self._scrub(message)  # 400, 401, 404...: retrying will not help
            except (openai.APITimeoutError, openai.APIConnectionError) as error:
                last_error, message = error, f"{type(error).__name__}: {error}"
            except (openai.APIResponseValidationError, ValueError, AttributeError, IndexError, TypeError) as error:
                last_error, message = error, f"malformed response: {type(error).__name__}: {error}"
            if attempt < self.max_retries:
                time.sleep(self._retry_delay(attempt, last_error))
        return None, self._scrub(f"{message} (after {self.max_retries + 1} attempts)")

    # ------------------------------------------------------------------ pairs
    def _requests(self, prompts: list[str], candidates: Sequence[str], baselines: Sequence[str]) -> list[dict]:
        requests = []
        for index, (prompt, candidate, baseline) in enumerate(zip(prompts, candidates, baselines)):
            for order in ORDERS:
                a, b = (candidate, baseline) if order == "candidate_first" else (baseline, candidate)
                requests.append({"index": index, "order": order, "content": fill_template(self.template, prompt, a, b),
                                 "key": request_key(self.model, self.template, prompt, a, b, order)})
        return requests

    def _run_missing(self, missing: dict[str, dict]) -> dict[str, str]:
        """Ask every uncached request (``key -> request``); cache answers; return ``key -> error``."""
        errors: dict[str, str] = {}
        if not missing:
            return errors
        self._get_client()  # a missing key fails here, before anything is sent

        def work(request: dict) -> None:
            if not self.cache.acquire(request["key"]):  # another process sharing the cache answered it
                return
            try:
                answer, error = self._ask(request["content"])
                if answer is None:
                    errors[request["key"]] = error
                    return
                # on disk now: a crash after this loses nothing
                self.cache.append({"key": request["key"], "judge_model": self.model, "task": self.task,
                                   "order": request["order"], "answer": answer,
                                   "verdict": parse_verdict(answer, self.answer_pattern)})
            finally:
                self.cache.release(request["key"])

        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge")
        pending = {pool.submit(work, request) for request in missing.values()}
        try:
            with tqdm(total=len(pending), desc=f"judging ({self.model})", disable=not self.progress) as bar:
                while pending:
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()  # re-raises a crash inside a worker
                    bar.update(len(done))
        finally:
            # On any interruption: drop the queued requests, wait for those in flight (their answers are paid for).
            pool.shutdown(wait=True, cancel_futures=True)
        return errors

    def judge_pairs(self, prompts: Sequence, candidates: Sequence[str], baselines: Sequence[str]) -> list[dict]:
        """Judge each (candidate, baseline) pair in both orders; one record per prompt, in order."""
        rendered = check_pairs(prompts, candidates, baselines)
        requests = self._requests(rendered, candidates, baselines)
        missing = {r["key"]: r for r in requests if r["key"] not in self.cache}  # identical requests asked once
        errors = self._run_missing(missing)
        records = [{"prompt": prompt, "candidate": candidate, "baseline": baseline, "judge": self.model,
                    "task": self.task} for prompt, candidate, baseline in zip(prompts, candidates, baselines)]
        for request in requests:
            record, order, entry = records[request["index"]], request["order"], self.cache.get(request["key"])
            if entry is None:
                record[f"verdict_{order}"], record[f"raw_{order}"] = "failed", None
                record.setdefault("error", errors.get(request["key"], "not judged"))
            else:
                letter = parse_verdict(entry["answer"], self.answer_pattern)
                record[f"verdict_{order}"] = position_to_verdict(letter, order)
                record[f"raw_{order}"] = entry["answer"]
        for record in records:
            record["winner"] = combine_verdicts(record["verdict_candidate_first"], record["verdict_baseline_first"])
        return records
