"""2-process RPOTrainer run where every micro-batch is one-sided (run by tests/test_distributed.py).

    python -m torch.distributed.run --nproc_per_node 2 tests/dist_scripts/one_sided_batches.py OUT_DIR local,global

Unpaired rows in the order [desirable x 2, undesirable x 2, ...] with sequential sampling and 2
rows per device: process 0 only ever sees desirable responses, process 1 only undesirable ones.
With ``contrast_scope="local"`` each process has no contrast, so its loss is the zero loss that
still backpropagates (no process skips backward, so the DDP all-reduce never waits forever);
with "global" the gathered batch has both sides (and the reference log-probs are precomputed, each
process doing half of the examples, so the first loss must be exactly log 2).
Each scope writes OUT_DIR/SCOPE/metrics.jsonl.
The test gives the launcher a timeout.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import leave_group  # noqa: E402
from rpo_tutorial.training.config import get_preset  # noqa: E402
from rpo_tutorial.training.run import build_trainer  # noqa: E402

ROWS = [
    {"prompt": f"Describe day {i} of the trip.", "completion": text, "label": label}
    for i, (text, label) in enumerate([
        ("A wonderful sunny walk by the sea.", True), ("Lovely food and kind people.", True),
        ("It rained and the bus was late.", False), ("The hotel was noisy and cold.", False),
    ] * 2)
]


def main() -> None:
    output_dir, scopes = sys.argv[1], sys.argv[2].split(",")
    for scope in scopes:
        # the global run also checks the sharded one-off reference pass (each process does half)
        reference = "precomputed" if scope == "global" else "model"
        config = get_preset("smoke", loss="rpo", paired=False, weighting="uniform", contrast_scope=scope,
                            reference=reference, batch_sampling="sequential", per_device_train_batch_size=2,
                            max_steps=2, output_dir=os.path.join(output_dir, scope), max_length=48,
                            max_prompt_length=24)
        trainer, _ = build_trainer(config, rows=ROWS)
        trainer.train()
    leave_group()


if __name__ == "__main__":
    main()
