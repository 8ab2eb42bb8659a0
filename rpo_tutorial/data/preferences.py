"""Preference data loaders: HH-RLHF, TL;DR, any paired or unpaired file, AlpacaEval prompts, and
:func:`open_dataset`, a dataset by name ("demo", "hh:<subsets>", a file, a hub id).

Every loader returns a :class:`PreferenceData`: a plain list of row dicts with a ``.report``
(rows read, kept, and every skipped row with its reason; see :mod:`rpo_tutorial.data.report`).
Invalid rows are skipped with one warning that gives the counts, the reasons and the first row
indexes; ``strict=True`` raises a ``ValueError`` naming the first one (file, row, field).

Row formats (the trainer's input, see the shared contracts):

- paired: ``{"prompt": str | [{"role", "content"}, ...], "chosen": str, "rejected": str, ...}``
- unpaired: ``{"prompt": ..., "completion": str, "label": bool, ...}`` (the TRL/KTO format)

Extra keys (``source``, ``id``, ``prompt_embedding``, precomputed reference log-probs) are kept.

    from rpo_tutorial.data import load_hh, to_unpaired
    pairs = load_hh(path="../shared/data/hh-rlhf/harmless-base-test.jsonl.gz")  # 2,303 rows
    unpaired = to_unpaired(pairs, seed=0, undesirable_fraction=0.5)          # M = 2,303, N = 1,152
"""
from __future__ import annotations

import random
import re
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from rpo_tutorial.data.errors import MAX_FIELD_CHARS, DataError, RowError, check_field_length, data_error
from rpo_tutorial.data.files import has_data_suffix, read_records
from rpo_tutorial.data.hh import HH_SUBSETS, dialogue_messages, load_hh, parse_hh_pair, split_transcript
from rpo_tutorial.data.report import InvalidRow, LoadReport, PreferenceData, finish
from rpo_tutorial.data.tldr import TLDR_TEMPLATE, load_tldr, tldr_prompt

PAIRED_KEYS = ("prompt", "chosen", "rejected")
UNPAIRED_KEYS = ("prompt", "completion", "label")
ROLES = ("system", "user", "assistant")
ALPACA_EVAL_HUB_ID = "tatsu-lab/alpaca_eval"
ALPACA_EVAL_FILE = "alpaca_eval.json"
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_LABELS = {"true": True, "1": True, "false": False, "0": False}

__all__ = [
    "HH_SUBSETS", "TLDR_TEMPLATE", "InvalidRow", "LoadReport", "PreferenceData", "concatenate", "dialogue_messages",
    "load_alpaca_eval_prompts", "load_hh", "load_preferences", "load_tldr", "open_dataset", "parse_hh_pair",
    "split_transcript", "tldr_prompt", "to_unpaired", "validate_row",
]


class HHSchemaError(DataError):
    """The rows have ``chosen`` and ``rejected`` but no ``prompt``: full HH-RLHF transcripts (use load_hh)."""


def _check_prompt(prompt: object) -> None:
    if isinstance(prompt, str):
        check_field_length(prompt, "prompt")
        if not prompt.strip():
            raise RowError("empty prompt", "field 'prompt'")
        return
    if isinstance(prompt, (list, tuple)) and not prompt:
        raise RowError("empty prompt", "field 'prompt' is an empty message list")
    if not isinstance(prompt, (list, tuple)):
        raise RowError("not a string", f"field 'prompt' is {type(prompt).__name__}, expected str or a message list")
    for i, message in enumerate(prompt):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise RowError("invalid message", f"field 'prompt'[{i}] must be {{'role': one of {ROLES}, 'content': str}}")
        check_field_length(message["content"], f"prompt[{i}].content")


def _check_text(row: dict, key: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise RowError("not a string", f"field {key!r} is {type(value).__name__}")
    check_field_length(value, key)
    if not value.strip():
        raise RowError("empty response", f"field {key!r}")
    return value


def _label(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _LABELS:
        return _LABELS[value.strip().lower()]
    raise RowError("not a boolean", f"field 'label' is {value!r:.40}, expected true/false")


def validate_row(row: dict, kind: str) -> dict:
    """Check one ``kind`` ("paired" or "unpaired") row; return it with a bool label.

    Raises:
        RowError: a missing key, a non-string field, a malformed message list, an empty or
            (paired) identical response, or a label that is not a boolean.
    """
    keys = PAIRED_KEYS if kind == "paired" else UNPAIRED_KEYS
    missing = [key for key in keys if key not in row]
    if missing:
        raise RowError("missing field", f"field {missing[0]!r}")
    _check_prompt(row["prompt"])
    if kind == "unpaired":
        _check_text(row, "completion")
        return {**row, "label": _label(row["label"])}
    if _check_text(row, "chosen").strip() == _check_text(row, "rejected").strip():
        raise RowError("identical responses")
    return dict(row)


def _detect_kind(records: list[tuple[int, dict]], source: str) -> str:
    """"paired" when the rows use chosen/rejected, "unpaired" when they use completion/label."""
    keys = set().union(*(record.keys() for _, record in records)) if records else set()
    if "prompt" not in keys:
        if {"chosen", "rejected"} <= keys:
            raise HHSchemaError(f"{source}: cannot tell the format, no row has a 'prompt' (found {sorted(keys)[:12]}); "
                                "{chosen, rejected} full transcripts are HH-RLHF rows: use load_hh(path=...)")
        raise data_error(source, f"cannot tell the format, no row has a 'prompt' (found {sorted(keys)[:12]}); "
                                 f"expected {PAIRED_KEYS} or {UNPAIRED_KEYS}")
    paired, unpaired = bool(keys & {"chosen", "rejected"}), bool(keys & {"completion", "label"})
    if paired != unpaired:
        return "paired" if paired else "unpaired"
    what = "both" if paired else "neither"
    raise DataError(f"{source}: cannot tell the format, the rows use {what} of the paired keys {PAIRED_KEYS} "
                     f"and the unpaired keys {UNPAIRED_KEYS} (found {sorted(keys)[:12]}); pass format=")


def _hub_records(hub_id: str, split: str, config_name: str | None, report: LoadReport) -> list[tuple[int, dict]]:
    import datasets

    dataset = datasets.load_dataset(hub_id, config_name, split=split)
    report.sources.append(f"{hub_id}[{split}]")
    report.total = len(dataset)
    return list(enumerate(dataset))


def load_preferences(
    path_or_hub_id: str | Path, split: str = "train", format: str | None = None, config_name: str | None = None,
    strict: bool = False,
) -> PreferenceData:
    """Load paired ``{prompt, chosen, rejected}`` or unpaired ``{prompt, completion, label}`` rows.

    Args:
        path_or_hub_id: a local ``.json``, ``.jsonl`` (optionally ``.gz``), ``.csv`` or ``.parquet``
            file, or a hub dataset id such as ``"trl-lib/ultrafeedback_binarized"``.
        split: the hub split (ignored for files).
        format: "paired" or "unpaired"; by default detected from the keys of the rows.
        config_name: the hub dataset's configuration, if it has several.
        strict: raise ``ValueError`` naming the first invalid row instead of skipping it.

    Returns:
        :class:`PreferenceData`; prompts are strings or message lists, labels are bools,
        extra keys are kept.
    """
    if format not in (None, "paired", "unpaired"):
        raise ValueError(f"format must be 'paired', 'unpaired' or None, got {format!r}")
    report = LoadReport()
    path = Path(path_or_hub_id)
    if path.exists() or has_data_suffix(path):
        source = str(path)
        records = list(read_records(path, report, strict))  # raises for missing files, bad extensions
    elif isinstance(path_or_hub_id, str) and _HUB_ID.match(path_or_hub_id):
        source = f"{path_or_hub_id}[{split}]"
        records = _hub_records(path_or_hub_id, split, config_name, report)
    else:
        raise ValueError(f"{path_or_hub_id!r} is neither an existing data file nor a hub dataset id")
    kind = format or _detect_kind(records, source)
    rows = []
    for index, record in records:
        try:
            rows.append(validate_row(record, kind))
        except RowError as error:
            report.reject(InvalidRow(source, index, error.reason, error.detail), strict)
    result = finish(rows, report, "load_preferences")
    if kind == "unpaired":
        _warn_one_sided(result, source)
    return result


def open_dataset(name: str | Path, split: str = "train", strict: bool = False, paired: bool = False) -> list[dict]:
    """The rows of a dataset named by one string: what ``RPOConfig.dataset`` and the CLI's flags take.

    ``name`` is ``"demo"`` (the project's demo set; ``"demo:heldout"`` names the split too),
    ``"hh"`` or ``"hh:harmless-base,helpful-base"`` (Anthropic HH-RLHF, all or some subsets), a
    local file of ``{prompt, chosen, rejected}`` / ``{prompt, completion, label}`` rows or of HH
    transcripts (``{chosen, rejected}`` without a prompt), or a hub dataset id. ``split``: the
    split of the demo, HH or hub dataset (a file has none). ``strict``: raise on the first invalid
    row instead of skipping it (with a count). ``paired``: the caller compares pairs (evaluation,
    the study), so unpaired ``{prompt, completion, label}`` rows and an empty result raise a
    ``ValueError`` naming the dataset and the first unpaired row.
    """
    rows = _open_rows(name, split, strict)
    if paired:
        _require_pairs(rows, str(name))
    return rows


def _require_pairs(rows: Sequence[dict], source: str) -> None:
    unpaired = [index for index, row in enumerate(rows) if "chosen" not in row or "rejected" not in row]
    if unpaired:
        raise ValueError(f"{source}: row {unpaired[0]} has no chosen/rejected pair ({len(unpaired)} of {len(rows)} "
                         "rows are unpaired); this needs paired rows")
    if not rows:
        raise ValueError(f"{source}: no valid pairs")


def _open_rows(name: str | Path, split: str, strict: bool) -> list[dict]:
    from rpo_tutorial.data.demo import load_demo

    text = str(name)
    if text == "demo" or text.startswith("demo:"):
        return load_demo(text.split(":", 1)[1] if ":" in text else split)
    if text == "hh" or text.startswith("hh:"):
        subsets = [s.strip() for s in text[3:].split(",") if s.strip()] or None
        return load_hh(split=split, subsets=subsets, strict=strict)
    path = Path(text).expanduser()
    if not path.exists():
        return load_preferences(text, split=split, strict=strict)
    try:
        return load_preferences(path, strict=strict)
    except HHSchemaError:  # {chosen, rejected} full transcripts and no prompt: the hub's HH schema
        return load_hh(path=path, strict=strict)


def _warn_one_sided(rows: list[dict], source: str) -> None:
    """Unpaired rows with one label only: say so now (contrastive losses refuse them before training)."""
    desirable = sum(bool(row["label"]) for row in rows)
    if desirable in (0, len(rows)):
        missing = "undesirable (label false)" if desirable else "desirable (label true)"
        warnings.warn(f"{source}: all {len(rows)} unpaired rows have label {bool(desirable)}: no {missing} row; "
                      "RPO and other contrastive losses need both", stacklevel=3)


def _unpaired(row: dict, completion_key: str, label: bool) -> dict:
    """A paired row's extra keys plus one side; side-specific reference log-probs are renamed."""
    extra = {key: value for key, value in row.items()
             if key not in ("chosen", "rejected", "reference_chosen_logps", "reference_rejected_logps")}
    result = {**extra, "completion": row[completion_key], "label": label}
    reference = row.get(f"reference_{completion_key}_logps")
    if reference is not None:
        result["reference_logps"] = reference
    return result


def to_unpaired(
    rows: Sequence[dict], seed: int = 0, desirable_fraction: float = 1.0, undesirable_fraction: float = 1.0
) -> list[dict]:
    """Split pairs into desirable and undesirable examples: the paper's RPO-Unpaired setting.

    Each pair gives a desirable ``{prompt, completion: chosen, label: True}`` and an undesirable
    ``{prompt, completion: rejected, label: False}``. ``round(fraction * P)`` of each are kept,
    chosen independently, so M != N is possible and the kept chosen and rejected responses
    generally come from different prompts. The result is shuffled; everything is deterministic
    given ``seed``. Extra keys (``prompt_embedding``, ``id``) are kept; ``reference_chosen_logps`` /
    ``reference_rejected_logps`` become ``reference_logps``.

    Args:
        rows: paired rows ``{prompt, chosen, rejected, ...}``.
        desirable_fraction, undesirable_fraction: fractions in [0, 1] of pairs whose chosen
            (rejected) response is kept.

    Returns:
        a list of M + N unpaired rows in random order.
    """
    for name, value in (("desirable_fraction", desirable_fraction), ("undesirable_fraction", undesirable_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    for index, row in enumerate(rows):
        missing = [key for key in PAIRED_KEYS if key not in row]
        if missing:
            raise ValueError(f"to_unpaired: row {index} is not a pair, it lacks {missing[0]!r}")
    generator = random.Random(seed)
    count = len(rows)
    desirable = sorted(generator.sample(range(count), round(desirable_fraction * count)))
    undesirable = sorted(generator.sample(range(count), round(undesirable_fraction * count)))
    examples = [_unpaired(rows[i], "chosen", True) for i in desirable]
    examples += [_unpaired(rows[i], "rejected", False) for i in undesirable]
    generator.shuffle(examples)
    return examples


def _alpaca_hub_file() -> Path:
    # The hub dataset is defined by a loading script that datasets >= 4 refuses to run, so the
    # evaluation set's JSON file (the one the script reads) is fetched directly.
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(ALPACA_EVAL_HUB_ID, ALPACA_EVAL_FILE, repo_type="dataset"))


def load_alpaca_eval_prompts(path: str | Path | None = None) -> PreferenceData:
    """The 805 AlpacaEval instructions as ``{"instruction": str, "dataset": str}`` rows.

    Args:
        path: a local ``.json`` / ``.jsonl`` with ``instruction`` and ``dataset`` keys (e.g.
            ``../shared/data/alpaca_eval/alpaca_eval_prompts.json``); by default the evaluation
            set of the hub dataset ``tatsu-lab/alpaca_eval`` (its ``alpaca_eval.json``, split "eval").

    Raises:
        ValueError: an empty file, or any row that is not a JSON object with a non-empty string
            ``instruction`` (an evaluation set is never silently shortened, so there is no
            skipping mode). Duplicate instructions are kept and counted in ``.report.duplicates``.
    """
    path = _alpaca_hub_file() if path is None else Path(path)
    report = LoadReport(strict_hint="An evaluation set is never shortened: fix or remove the row.")
    rows = []
    for index, record in read_records(path, report, strict=True):
        instruction, dataset = record.get("instruction"), record.get("dataset", "")
        if not isinstance(instruction, str) or not instruction.strip():
            raise data_error(path, "must be a non-empty string", index, "instruction", instruction)
        if not isinstance(dataset, str):
            raise data_error(path, "must be a string", index, "dataset", dataset)
        if len(instruction) > MAX_FIELD_CHARS:
            raise data_error(path, f"longer than {MAX_FIELD_CHARS:,} characters", index, "instruction")
        rows.append({"instruction": instruction, "dataset": dataset})
    return finish(rows, report, "load_alpaca_eval_prompts")


def concatenate(parts: Iterable[PreferenceData]) -> PreferenceData:
    """Join several loads into one, merging their reports."""
    report, rows = LoadReport(), []
    for part in parts:
        rows += part
        if isinstance(part, PreferenceData):
            report.merge(part.report)
    return PreferenceData(rows, report)
