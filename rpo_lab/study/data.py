"""A study's data: preference pairs split by prompt, tokenized once, turned into trunk features once.

Where the pairs come from (``StudySettings.dataset`` / ``heldout``):

- by default the Anthropic HH harmless-base test file in ``../shared/data`` (2,303 valid pairs);
- ``--dataset FILE``: any file the library's loaders read (``rpo_tutorial.data.preferences.open_dataset``
  with ``paired=True``: ``{prompt, chosen, rejected}`` JSONL / JSON / CSV / parquet, or HH
  ``{chosen, rejected}`` transcripts); ``--heldout FILE`` gives the held-out pairs, else they are split off ``FILE``.

The split is by prompt, so no prompt is in two parts: the distinct prompts (in sorted order) are
shuffled with ``split_seed`` and dealt, all pairs of a prompt together, to held-out until it holds
``min(heldout_pairs, n // 2)`` pairs, then to validation until ``min(validation_pairs, n // 6)``,
the rest to train (capped at ``train_pairs``). With ``--heldout``, validation and train are split
off the dataset the same way, and dataset pairs whose prompt is also held out are dropped (counted).

Every response becomes one sequence of a :class:`StudyData` bank: its trunk features (the hidden
states entering the first trainable layer, ``trunk``) and labels; the reference (the pretrained
model) scores every pair once.
"""
from __future__ import annotations

import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from rpo_lab.study.settings import StudySettings
from rpo_lab.study.trunk import TopStack, pad_sequences
from rpo_tutorial.paths import shared_data_dir

HH_FILE = Path("hh-rlhf") / "harmless-base-test.jsonl.gz"
SPLITS = ("train", "validation", "heldout")


def hh_path() -> Path | None:
    """The HH harmless-base test file, or None where ``../shared/data`` lacks it."""
    root = shared_data_dir()
    return root / HH_FILE if root is not None and (root / HH_FILE).is_file() else None


def load_pairs(name: str, strict: bool) -> list[dict]:
    """Paired rows of a preference file; unpaired rows or none at all are refused, naming the file."""
    from rpo_tutorial.data.preferences import open_dataset

    return list(open_dataset(name, strict=strict, paired=True))


def prompt_key(row: dict) -> str:
    return json.dumps(row["prompt"], sort_keys=True)


def _deal(rows: Sequence[dict], sizes: dict[str, int], seed: int) -> dict[str, list[dict]]:
    """Deal whole prompts, shuffled with ``seed``, to the parts of ``sizes`` in order; the rest to "train"."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(prompt_key(row), []).append(row)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    parts = {name: [] for name in (*sizes, "train")}
    for key in keys:
        name = next((name for name, size in sizes.items() if len(parts[name]) < size), "train")
        parts[name] += groups[key]
    return parts


def split_by_prompt(rows: Sequence[dict], settings: StudySettings, heldout: Sequence[dict] | None = None
                    ) -> tuple[dict[str, list[dict]], list[str]]:
    """(train / validation / held-out rows, notes for the user) by prompt (module docstring)."""
    notes = []
    if heldout is None:
        sizes = {"heldout": min(settings.heldout_pairs, len(rows) // 2),
                 "validation": min(settings.validation_pairs, len(rows) // 6)}
        parts = _deal(rows, sizes, settings.split_seed)
    else:
        held = {prompt_key(row) for row in heldout}
        kept = [row for row in rows if prompt_key(row) not in held]
        if len(kept) < len(rows):
            notes.append(f"{len(rows) - len(kept)} dataset pair(s) share a prompt with the held-out file and were "
                         "left out of train and validation")
        parts = {**_deal(kept, {"validation": min(settings.validation_pairs, len(kept) // 6)}, settings.split_seed),
                 "heldout": list(heldout)}
    if settings.train_pairs is not None and len(parts["train"]) > settings.train_pairs:
        notes.append(f"train capped at {settings.train_pairs} of {len(parts['train'])} pairs (train_pairs)")
        parts["train"] = parts["train"][: settings.train_pairs]
    for name in SPLITS:
        if not parts[name]:
            raise ValueError(f"{len(rows)} pairs leave no {name} pairs; the study needs train, validation and "
                             "held-out pairs (a larger file, or --heldout FILE)")
    return {name: parts[name] for name in SPLITS}, notes


def study_rows(settings: StudySettings) -> tuple[dict[str, list[dict]], dict]:
    """The split rows of the study's data source and a description of it (source, sizes, notes)."""
    dataset, label = settings.dataset, settings.dataset
    if dataset is None:
        path = hh_path()
        if path is None:
            raise FileNotFoundError(f"the default study data, shared data's {HH_FILE}, is absent: pass --dataset "
                                    "FILE (or point $RPO_SHARED_DATA at the folder)")
        # the report names the file, not this machine's path to it
        dataset, label = str(path), f"the HH-RLHF harmless-base test file, {HH_FILE} of the shared data"
    rows = load_pairs(dataset, settings.strict)
    heldout = load_pairs(settings.heldout, settings.strict) if settings.heldout is not None else None
    parts, notes = split_by_prompt(rows, settings, heldout)
    for note in notes:
        warnings.warn(note)
    source = {"dataset": label, "heldout": settings.heldout, "pairs_read": len(rows),
              "sizes": {name: len(part) for name, part in parts.items()}, "notes": notes}
    return parts, source


@dataclass
class StudyData:
    """The study's pairs, ready to train on: sequences (features + labels), pairs and reference log-probs."""

    features: list[torch.Tensor]  # per sequence (T_i, D) float32: hidden states entering the top layers
    labels: list[torch.Tensor]  # per sequence (T_i,) long, -100 on the prompt
    pairs: dict[str, torch.Tensor]  # split -> (P, 2) long: sequence index of each pair's (chosen, rejected)
    reference: dict[str, torch.Tensor]  # split -> (P, 2) float32 reference log-probs (chosen, rejected)
    train_embeddings: torch.Tensor  # (P_train, D_e) float32 prompt embeddings of the train pairs
    sizes: dict  # split -> pairs kept after tokenization

    def batch(self, indexes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded (features, attention_mask, labels) of some sequences. Shape: (B, T, D), (B, T), (B, T)."""
        return pad_sequences([self.features[i] for i in indexes], [self.labels[i] for i in indexes])


def _tokenize(parts: dict[str, list[dict]], tokenizer, settings: StudySettings) -> dict[str, list[tuple[dict, dict]]]:
    """Per split: (row, example) of every row the tokenizer takes; a row it refuses is counted (or raises)."""
    from rpo_tutorial.data.formatting import InvalidRowError
    from rpo_tutorial.data.tokenization import tokenize_pair

    kept = {}
    for name, rows in parts.items():
        kept[name], refused = [], []
        for index, row in enumerate(rows):
            try:
                kept[name].append((row, tokenize_pair(row, tokenizer, settings.max_prompt_length, settings.max_length)))
            except InvalidRowError as error:
                if settings.strict:
                    raise ValueError(f"{name} pair {index}: {error}") from error
                refused.append(index)
        if refused:
            warnings.warn(f"{name}: {len(refused)} of {len(rows)} pairs could not be tokenized and were left out "
                          f"(first: {refused[:5]})")
        if not kept[name]:
            raise ValueError(f"no {name} pair could be tokenized")
    return kept


def build_data(parts: dict[str, list[dict]], stack: TopStack, tokenizer, settings: StudySettings,
               embed: Callable[[list[str]], torch.Tensor], workers: int = 1) -> StudyData:
    """Tokenize every split, run the frozen trunk once per sequence, score every pair with the reference.

    Args:
        embed: ``texts -> (K, D_e)`` prompt embeddings of the train prompts (the bundled embedder in the study).
        workers: processes that encode chunks of pairs side by side (``features.encode_chunks``); the
            numbers do not depend on it.
    """
    from rpo_lab.study.features import encode_chunks
    from rpo_tutorial.data.embeddings import prompt_text

    kept = _tokenize(parts, tokenizer, settings)
    sequences = {name: [sequence for _, example in kept[name] for sequence in
                        ((example["chosen_input_ids"], example["chosen_labels"]),
                         (example["rejected_input_ids"], example["rejected_labels"]))] for name in SPLITS}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = encode_chunks(stack, sequences, pad, settings, workers)
    features, labels, pairs, reference = [], [], {}, {}
    for name in SPLITS:
        start = len(features)
        for chunk_features, chunk_labels, _ in encoded[name]:
            features += chunk_features
            labels += chunk_labels
        pairs[name] = torch.arange(start, len(features)).reshape(-1, 2)  # (P, 2)
        reference[name] = torch.cat([chunk_reference for _, _, chunk_reference in encoded[name]])  # (P, 2)
    texts = [prompt_text(row["prompt"]) for row, _ in kept["train"]]
    return StudyData(features, labels, pairs, reference, embed(texts).float(), {n: len(kept[n]) for n in SPLITS})


@torch.inference_mode()
def pair_logps(stack: TopStack, data: StudyData, pairs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(chosen, rejected) log-probs of pairs under the stack's current weights, in fixed consecutive batches.

    Shape: pairs (P, 2) -> (P, 2)
    """
    stack.model.eval()
    indexes = pairs.reshape(-1).tolist()
    parts = [stack.logps(*data.batch(indexes[start: start + batch_size]))
             for start in range(0, len(indexes), batch_size)]
    return (torch.cat(parts) if parts else torch.zeros(0)).reshape(-1, 2)
