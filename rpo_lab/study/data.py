"""A study's data settings, tokenized once and turned into trunk features once.

- ``controlled``: the demo pairs with the cluster-dependent preference (``rpo_lab.study.controlled``);
- ``control``: the demo pairs unchanged (higher sentiment wins everywhere);
- ``hh``: the Anthropic HH harmless-base test file in ``../shared/data`` (skipped where absent),
  split by prompt (prompts shuffled with seed 0: the first ``hh_heldout_pairs`` distinct prompts are
  held out, the next ``hh_train_pairs`` train).

Every response of every pair becomes one sequence of a :class:`SettingData` bank: its
trunk features (the hidden states entering the first trainable layer, see ``trunk``) and labels.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from rpo_lab.study.controlled import control_rows, controlled_rows, split_setting
from rpo_tutorial.data.tokenization import tokenize_dataset
from rpo_tutorial.paths import shared_data_dir
from rpo_lab.study.settings import StudySettings
from rpo_lab.study.trunk import TopStack, pad_sequences

HH_FILE = Path("hh-rlhf") / "harmless-base-test.jsonl.gz"


def hh_path() -> Path | None:
    """The HH harmless-base test file, or None where ``../shared/data`` lacks it."""
    root = shared_data_dir()
    return root / HH_FILE if root is not None and (root / HH_FILE).is_file() else None


def split_hh(rows: Sequence[dict], train_pairs: int, heldout_pairs: int, seed: int = 0
             ) -> tuple[list[dict], list[dict]]:
    """(train, held-out) by prompt: one pair per distinct prompt, prompts shuffled with ``seed``."""
    by_prompt: dict[str, dict] = {}
    for row in rows:
        by_prompt.setdefault(json.dumps(row["prompt"], sort_keys=True), row)
    keys = sorted(by_prompt)
    random.Random(seed).shuffle(keys)
    if len(keys) < heldout_pairs + 1:
        raise ValueError(f"HH has {len(keys)} distinct prompts, too few to hold out {heldout_pairs}")
    heldout = [by_prompt[key] for key in keys[:heldout_pairs]]
    train = [by_prompt[key] for key in keys[heldout_pairs: heldout_pairs + train_pairs]]
    return train, heldout


def setting_rows(name: str, settings: StudySettings) -> tuple[list[dict], list[dict]] | None:
    """(train, held-out) rows of a setting; None for ``hh`` when its file is absent."""
    if name in ("controlled", "control"):
        rows = controlled_rows() if name == "controlled" else control_rows()
        train, heldout = split_setting(rows, heldout_per_cluster=settings.heldout_per_cluster, seed=0)
        return train[: settings.train_pairs], heldout
    if name == "hh":
        path = hh_path()
        if path is None:
            return None
        from rpo_tutorial.data.hh import load_hh

        return split_hh(load_hh(path=path), settings.hh_train_pairs, settings.hh_heldout_pairs)
    raise ValueError(f"unknown setting {name!r}")


@dataclass
class SettingData:
    """One data setting, ready to train on: sequences (features + labels) and pair indexes."""

    name: str
    features: list[torch.Tensor]  # per sequence (T_i, D) float32: hidden states entering the top layers
    labels: list[torch.Tensor]  # per sequence (T_i,) long, -100 on the prompt
    train_pairs: torch.Tensor  # (P, 2) long: sequence index of each train pair's (chosen, rejected)
    heldout_pairs: torch.Tensor  # (H, 2) long
    train_embeddings: torch.Tensor  # (P, D_e) float32 prompt embeddings of the train pairs
    heldout_prompts: list[str]  # held-out prompt ids or texts (bootstrap units)
    tokenization: dict  # the tokenization reports' summaries

    def batch(self, indexes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded (features, attention_mask, labels) of some sequences. Shape: (B, T, D), (B, T), (B, T)."""
        return pad_sequences([self.features[i] for i in indexes], [self.labels[i] for i in indexes])


def _sequences(examples: list[dict]) -> tuple[list[tuple[list[int], list[int]]], torch.Tensor]:
    sequences, pairs = [], []
    for example in examples:
        pairs.append([len(sequences), len(sequences) + 1])
        sequences.append((example["chosen_input_ids"], example["chosen_labels"]))
        sequences.append((example["rejected_input_ids"], example["rejected_labels"]))
    return sequences, torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def _prompt_id(row: dict) -> str:
    return str(row.get("id") or json.dumps(row["prompt"], sort_keys=True))


def build_setting(name: str, train: list[dict], heldout: list[dict], stack: TopStack, tokenizer,
                  settings: StudySettings, embed, progress: bool = False) -> SettingData:
    """Tokenize both splits, run the frozen trunk once per sequence, embed the train prompts.

    Args:
        embed: ``texts -> (K, D_e)`` prompt embeddings (the bundled embedder in the study).
    """
    from rpo_tutorial.data.embeddings import prompt_text

    hh = name == "hh"
    lengths = dict(max_length=settings.hh_max_length if hh else settings.max_length,
                   max_prompt_length=settings.hh_max_prompt_length if hh else settings.max_prompt_length)
    reports, parts = {}, {}
    for split, rows in (("train", train), ("heldout", heldout)):
        examples, report = tokenize_dataset(rows, tokenizer, kind="paired", progress=False, **lengths)
        if report.num_skipped:
            raise ValueError(f"setting {name!r} {split}: {report.summary()}")  # never drop rows silently
        reports[split], parts[split] = report.summary(), _sequences(examples)
    train_sequences, train_pairs = parts["train"]
    heldout_sequences, heldout_pairs = parts["heldout"]
    sequences = train_sequences + heldout_sequences
    features, labels = [], []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(sequences), settings.eval_batch_size):
        chunk = sequences[start: start + settings.eval_batch_size]
        longest = max(len(ids) for ids, _ in chunk)
        input_ids = torch.tensor([ids + [pad] * (longest - len(ids)) for ids, _ in chunk])  # (B, T)
        mask = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids, _ in chunk])  # (B, T)
        hidden = stack.trunk_features(input_ids, mask)  # (B, T, D)
        for row, (ids, row_labels) in enumerate(chunk):
            features.append(hidden[row, : len(ids)].clone())
            labels.append(torch.tensor(row_labels, dtype=torch.long))
    texts = [prompt_text(row["prompt"]) for row in train]
    return SettingData(name, features, labels, train_pairs, heldout_pairs + len(train_sequences),
                       embed(texts).float(), [_prompt_id(row) for row in heldout], reports)
