"""The study's on-disk cache: where each run lives, and the settings fingerprint that keeps caches honest."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rpo_lab.study.settings import StudySettings

# fields that do not change what a run computes (so a cache stays valid when they change)
_NOT_TRAINING = {"settings", "methods", "tau_ablation", "seeds", "bootstrap_samples", "num_threads"}
# fields the trunk features depend on; the SFT reference depends on these and on SFT_FIELDS
FEATURE_FIELDS = {"model", "trainable_layers", "train_pairs", "heldout_per_cluster", "hh_train_pairs",
                   "hh_heldout_pairs", "max_length", "max_prompt_length", "hh_max_length", "hh_max_prompt_length",
                   "eval_batch_size"}
SFT_FIELDS = {"batch_size", "sft_learning_rate", "max_grad_norm"}
# fields the judge's samples depend on (the SFT reference's samples: these, FEATURE_FIELDS and SFT_FIELDS)
JUDGE_FIELDS = {"judge_max_new_tokens", "judge_top_p", "judge_temperature", "judge_batch_size"}


def fingerprint(settings: StudySettings, fields: set[str] | None = None) -> dict:
    """The settings that determine a run's result (stored in each cached run and compared on resume).

    ``fields``: only these (the features and the SFT reference depend on fewer fields than a run).
    """
    values = dataclasses.asdict(settings)
    return {key: value for key, value in values.items()
            if key not in _NOT_TRAINING and (fields is None or key in fields)}


def run_path(output_dir: Path, setting: str, seed: int, method_key: str) -> Path:
    return output_dir / "runs" / setting / f"seed{seed}" / f"{method_key}.json"


def read_run(path: Path, settings: StudySettings) -> dict | None:
    """A cached run, or None if absent; raises if it was made with other settings."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a cached study run (unreadable JSON: {error}); delete it to retrain the run"
                         ) from error
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a cached study run (a JSON {type(record).__name__}, not an object); "
                         "delete it to retrain the run")
    if record.get("settings") != fingerprint(settings):
        changed = sorted(key for key, value in fingerprint(settings).items()
                         if record.get("settings", {}).get(key) != value)
        before_judge = all(key in JUDGE_FIELDS and key not in record.get("settings", {}) for key in changed)
        why = " (made before the judge win rate existed)" if before_judge else ""
        raise ValueError(f"{path} was trained with other settings ({changed}){why}; use a new output folder or "
                         "the same settings")
    return record


