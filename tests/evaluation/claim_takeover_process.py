"""Run by test_judge_cache_sharing in a separate process: take over a dead claim, meeting a second process first.

    python claim_takeover_process.py CACHE_PATH BARRIER_DIR ASKED_LOG

Forces the interleaving of the race: this process finds the claim's owner dead, then waits (a
file barrier) until the other process has found it dead too, and only then takes over. A process
that gets the claim "asks the judge": it appends its pid to ASKED_LOG, then stores an answer.
"""
import os
import sys
import time
from pathlib import Path

from rpo_tutorial.evaluation.cache import JudgeCache

cache_path, barrier, asked_log = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
original = JudgeCache._owner_is_dead


def dead_then_meet(pid: int) -> bool:
    dead = original(pid)
    if dead:  # between the staleness check and the takeover: wait for the other process to get here too
        (barrier / str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(list(barrier.iterdir())) < 2:
            if time.monotonic() > deadline:
                sys.exit("the other process never found the claim dead")
            time.sleep(0.01)
    return dead


JudgeCache._owner_is_dead = staticmethod(dead_then_meet)
cache = JudgeCache(cache_path)
if cache.acquire("k"):
    with open(asked_log, "a") as handle:  # one line per request made to the judge
        handle.write(f"{os.getpid()}\n")
    time.sleep(0.2)  # the request takes a while
    cache.append({"key": "k", "answer": str(os.getpid())})
    cache.release("k")
