"""May this run write into ``config.output_dir``? Never over another run by accident.

A run folder holds ``rpo_config.json`` (written when the run starts, and again at the end),
``metrics.jsonl``, ``checkpoint-<step>/`` folders and, once finished, the model. Before training:

- an empty or new folder (or one holding none of those): start;
- a folder holding a run, with ``resume_from_checkpoint``: resume only when the saved
  configuration equals this one (except :data:`MAY_CHANGE_ON_RESUME`);
- a folder holding a run, with ``overwrite=True`` (``--overwrite``): clear it, then start;
- otherwise: :class:`UsageError`, saying what the folder holds and the three ways on.

Without this, a second run in the same folder truncated the first run's ``metrics.jsonl``, left
its checkpoints beside the new model, and a later ``--resume-from-checkpoint last`` resumed the
old run.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from rpo_tutorial.data.run_logs import METRICS_FILE

CONFIG_FILE = "rpo_config.json"
MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")
# fields that only change what is shown or how often it is saved, not the run itself
MAY_CHANGE_ON_RESUME = ("output_dir", "progress", "logging_steps", "save_steps", "save_total_limit", "report_to",
                        "precompute_batch_size")
START, RESUME, CLEAR = "start", "resume", "clear"


class UsageError(ValueError):
    """A run asked for something its options or its output folder forbid: reuse of a folder holding
    another run, or ``resume_from_checkpoint`` with ``overwrite``. ``run_training`` raises it before
    any work; the ``rpo-tutorial`` command line exits with status 2 on it, like argparse."""


def run_contents(folder: Path) -> list[str]:
    """The names in ``folder`` that belong to a training run (config, metrics, checkpoints, model)."""
    if not folder.is_dir():
        return []
    names = [CONFIG_FILE, METRICS_FILE, *MODEL_FILES]
    found = [name for name in names if (folder / name).exists()]
    found += sorted(path.name for path in folder.glob("checkpoint-*") if path.is_dir())
    return found


def describe_run(folder: Path, contents: list[str]) -> str:
    """"a finished run" / "an unfinished run (checkpoint-6)" for messages."""
    if any(name in contents for name in MODEL_FILES):
        return "a finished run"
    checkpoints = [name for name in contents if name.startswith("checkpoint-")]
    last = max(checkpoints, key=lambda name: int(name.split("-")[-1]) if name.split("-")[-1].isdigit() else -1,
               default=None)
    return f"an unfinished run (last {last})" if last else "the start of a run"


def config_differences(saved: dict, current: dict) -> list[str]:
    """``"beta: 0.1 saved, 0.2 now"`` for every field that differs (ignoring :data:`MAY_CHANGE_ON_RESUME`)."""
    names = sorted((set(saved) | set(current)) - set(MAY_CHANGE_ON_RESUME))
    return [f"{name}: {saved.get(name)!r} saved, {current.get(name)!r} now" for name in names
            if saved.get(name) != current.get(name)]


def plan_output_dir(output_dir: str | Path, config_dict: dict, resume: str | bool | None, overwrite: bool) -> str:
    """What to do with the folder: :data:`START`, :data:`RESUME` or :data:`CLEAR`; reads only.

    Raises:
        UsageError: the folder holds a run that this call must not touch (see the module docstring).
    """
    folder = Path(output_dir)
    contents = run_contents(folder)
    if not contents:
        return START
    what = describe_run(folder, contents)
    if resume and overwrite:
        raise UsageError("pass either --resume-from-checkpoint or --overwrite, not both")
    if overwrite:
        return CLEAR
    if not resume:
        raise UsageError(f"output folder {folder} already holds {what} ({', '.join(contents[:6])}); pass "
                         "--overwrite (overwrite=True) to replace it, --resume-from-checkpoint last to continue it "
                         "with the same configuration, or choose another --output-dir")
    saved_path = folder / CONFIG_FILE
    if not saved_path.is_file():
        raise UsageError(f"cannot resume in {folder}: it has no {CONFIG_FILE}, so it cannot be checked to be the same "
                         "run; pass --overwrite to start again there, or choose another --output-dir")
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot resume in {folder}: {CONFIG_FILE} is unreadable ({error})") from None
    differences = config_differences(saved, config_dict)
    if differences:
        raise UsageError(f"cannot resume in {folder}: it holds a run with another configuration "
                         f"({'; '.join(differences[:5])}); resume with the same settings, pass --overwrite to "
                         "replace it, or choose another --output-dir")
    return RESUME


def apply_plan(output_dir: str | Path, plan: str, config_dict: dict) -> None:
    """Clear the folder (plan CLEAR), then write ``rpo_config.json`` so the folder says whose run it is.

    Call on the main process only, after :func:`plan_output_dir` on every process.
    """
    folder = Path(output_dir)
    if plan == CLEAR:
        for path in folder.iterdir():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config_dict, indent=2) + "\n")
