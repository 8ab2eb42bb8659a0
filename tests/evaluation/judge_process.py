"""Run by test_judge_cache_sharing in a separate process: judge N pairs against a server, sharing a cache.

    python judge_process.py BASE_URL CACHE_PATH NUM_PAIRS OUTPUT_JSON
"""
import json
import sys

from rpo_tutorial.evaluation.judges import OpenAIJudge

base_url, cache_path, num_pairs, output = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
judge = OpenAIJudge(model="fake-judge", base_url=base_url, cache_path=cache_path, concurrency=4, max_retries=0,
                    progress=False)
prompts = [f"Question number {i}?" for i in range(num_pairs)]
records = judge.judge_pairs(prompts, [f"GOOD answer {i}" for i in range(num_pairs)],
                            [f"plain answer {i}" for i in range(num_pairs)])
with open(output, "w") as handle:
    json.dump({"winners": [r["winner"] for r in records], "requests": judge.requests_made}, handle)
