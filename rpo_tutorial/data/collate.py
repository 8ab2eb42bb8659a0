"""Collators: tokenized examples -> one padded batch, chosen rows first, for ONE forward pass.

Paired and unpaired examples collate to the same batch format, so the trainer has one path:

- ``input_ids``, ``attention_mask``, ``labels``: (M + N, T) long; the M chosen (desirable) sequences
  first, then the N rejected (undesirable) ones, right-padded to the longest sequence T (or to a
  fixed ``pad_to_length``); labels are -100 on prompt and padding.
- ``num_chosen``: 0-dim long = M; ``paired``: 0-dim bool (True: M == N and rejected row i shares
  the prompt of chosen row i).
- ``chosen_prompt_embeddings`` (M, D), ``rejected_prompt_embeddings`` (N, D) float32, when the
  examples carry ``prompt_embedding``; ``reference_chosen_logps`` (M,), ``reference_rejected_logps``
  (N,) float32 when they carry reference log-probs. An unpaired batch may have M = 0 or N = 0;
  the empty side then gets (0, D) embeddings and (0,) reference log-probs.
"""
from __future__ import annotations

import numbers
from typing import Mapping, Sequence

import torch

IGNORE_INDEX = -100  # label of positions that are not scored (prompt, padding): PyTorch's default


def _pad(sequences: list[list[int]], value: int, length: int | None = None) -> torch.Tensor:
    """Right-pad id lists to ``length`` (default: the longest). Shape: returns (len(sequences), T) long."""
    length = length or max(len(ids) for ids in sequences)
    return torch.tensor([list(ids) + [value] * (length - len(ids)) for ids in sequences], dtype=torch.long)


def longest_sequence(examples: Sequence[Mapping]) -> int:
    """The most tokens of any sequence (chosen, rejected or unpaired) of tokenized ``examples``."""
    keys = ("chosen_input_ids", "rejected_input_ids", "input_ids")
    return max((len(example[key]) for example in examples for key in keys if key in example), default=0)


def _kind(index: int, example: Mapping) -> str:
    if not isinstance(example, Mapping):
        raise ValueError(f"example {index} must be a dict, got {type(example).__name__}")
    if "chosen_input_ids" in example:
        return "paired"
    if "input_ids" in example and "label" in example:
        return "unpaired"
    raise ValueError(
        f"example {index} is neither paired (chosen_input_ids, ...) nor unpaired (input_ids, labels, label); "
        f"keys: {sorted(example)}. Use SFTCollator for SFT examples."
    )


def _check_sequence(index: int, ids: Sequence[int], labels: Sequence[int], prefix: str) -> None:
    if len(ids) == 0 or len(ids) != len(labels):
        raise ValueError(f"example {index}: {prefix}input_ids ({len(ids)}) and {prefix}labels ({len(labels)}) "
                         "must be non-empty and of equal length")


def _check_pad(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r} (does the tokenizer have a pad token?)")
    return int(value)


def _optional_floats(examples: Sequence[Mapping], key: str) -> list | None:
    """The values of ``key`` when every example has it, None when none does, else an error."""
    present = [key in example for example in examples]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"example {present.index(False)} lacks {key!r} while others in the batch carry it")
    return [example[key] for example in examples]


def _embeddings(values: list, name: str) -> torch.Tensor:
    """Stack embeddings. Shape: returns (len(values), D) float32."""
    rows = [torch.as_tensor(value, dtype=torch.float32).reshape(-1) for value in values]
    dims = {row.shape[0] for row in rows}
    if len(dims) > 1:
        raise ValueError(f"{name}: prompt_embedding dimensions differ within the batch: {sorted(dims)}")
    return torch.stack(rows)


class PreferenceCollator:
    """Collate paired OR unpaired tokenized examples into the batch format of the module docstring.

    Args:
        pad_token_id: id used to pad ``input_ids`` (the tokenizer's pad token).
        label_pad_id: value of padded label positions; keep -100, which :func:`sequence_logps`
            ignores (prompt positions are -100 already).
        pad_to_length: pad every batch to this T instead of its longest sequence (a row's bf16
            log-prob then does not depend on the other rows; see ``training.forward_plan``).
    """

    def __init__(self, pad_token_id: int, label_pad_id: int = IGNORE_INDEX, pad_to_length: int | None = None) -> None:
        self.pad_token_id = _check_pad("pad_token_id", pad_token_id)
        self.label_pad_id = _check_pad("label_pad_id", label_pad_id)
        if pad_to_length is not None and (isinstance(pad_to_length, bool) or not isinstance(pad_to_length, int)
                                          or pad_to_length < 1):
            raise ValueError(f"pad_to_length must be an int >= 1 or None, got {pad_to_length!r}")
        self.pad_to_length = pad_to_length

    def __call__(self, examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """Collate B paired examples (M = N = B) or B unpaired ones (M desirable + N undesirable = B).

        Shape:
            returns input_ids, attention_mask, labels: (M + N, T); the optional fields as in the
            module docstring.
        """
        if len(examples) == 0:
            raise ValueError("cannot collate an empty list of examples")
        kinds = {_kind(i, example) for i, example in enumerate(examples)}
        if len(kinds) > 1:
            raise ValueError("a batch mixes paired and unpaired examples; collate them separately")
        paired = kinds == {"paired"}
        if paired:
            chosen, rejected = list(examples), list(examples)
            chosen_ids = [(e["chosen_input_ids"], e["chosen_labels"]) for e in examples]
            rejected_ids = [(e["rejected_input_ids"], e["rejected_labels"]) for e in examples]
        else:
            chosen = [e for e in examples if e["label"]]
            rejected = [e for e in examples if not e["label"]]
            chosen_ids = [(e["input_ids"], e["labels"]) for e in chosen]
            rejected_ids = [(e["input_ids"], e["labels"]) for e in rejected]
        for index, example in enumerate(examples):
            for prefix in ("chosen_", "rejected_") if paired else ("",):
                _check_sequence(index, example[f"{prefix}input_ids"], example[f"{prefix}labels"], prefix)
        sequences = chosen_ids + rejected_ids
        length = self.pad_to_length
        longest = max(len(ids) for ids, _ in sequences)
        if length is not None and longest > length:
            raise ValueError(f"a sequence has {longest} tokens, more than pad_to_length={length}")
        input_ids = _pad([ids for ids, _ in sequences], self.pad_token_id, length)  # (M + N, T)
        batch = {
            "input_ids": input_ids,
            "attention_mask": _pad([[1] * len(ids) for ids, _ in sequences], 0, length),  # (M + N, T)
            "labels": _pad([labels for _, labels in sequences], self.label_pad_id, length),  # (M + N, T)
            "num_chosen": torch.tensor(len(chosen_ids), dtype=torch.long),
            "paired": torch.tensor(paired),
        }
        batch.update(self._extras(examples, chosen, rejected, paired))
        return batch

    @staticmethod
    def _extras(examples: Sequence[Mapping], chosen: list, rejected: list, paired: bool) -> dict:
        """Prompt embeddings and reference log-probs, split into the chosen and rejected halves."""
        extras = {}
        embeddings = _optional_floats(examples, "prompt_embedding")
        if embeddings is not None:
            stacked = _embeddings(embeddings, "prompt_embedding")  # (B, D)
            if paired:
                extras["chosen_prompt_embeddings"] = stacked  # (M, D)
                extras["rejected_prompt_embeddings"] = stacked.clone()  # (N = M, D): same prompts
            else:
                is_chosen = torch.tensor([bool(e["label"]) for e in examples])
                extras["chosen_prompt_embeddings"] = stacked[is_chosen]  # (M, D), maybe (0, D)
                extras["rejected_prompt_embeddings"] = stacked[~is_chosen]  # (N, D)
        if paired:
            for side in ("chosen", "rejected"):
                values = _optional_floats(examples, f"reference_{side}_logps")
                if values is not None:
                    extras[f"reference_{side}_logps"] = torch.tensor(values, dtype=torch.float32)  # (M,)
        elif _optional_floats(examples, "reference_logps") is not None:
            for side, group in (("chosen", chosen), ("rejected", rejected)):
                values = [e["reference_logps"] for e in group]
                extras[f"reference_{side}_logps"] = torch.tensor(values, dtype=torch.float32).reshape(-1)  # (M,)|(N,)
        return extras


class SFTCollator:
    """Collate SFT examples ``{input_ids, labels}`` into ``input_ids``, ``attention_mask``, ``labels`` (B, T)."""

    def __init__(self, pad_token_id: int, label_pad_id: int = IGNORE_INDEX) -> None:
        self.pad_token_id = _check_pad("pad_token_id", pad_token_id)
        self.label_pad_id = _check_pad("label_pad_id", label_pad_id)

    def __call__(self, examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("cannot collate an empty list of examples")
        for index, example in enumerate(examples):
            if not isinstance(example, Mapping) or "input_ids" not in example or "labels" not in example:
                raise ValueError(f"example {index} needs 'input_ids' and 'labels' (an SFT example)")
            _check_sequence(index, example["input_ids"], example["labels"], "")
        return {
            "input_ids": _pad([e["input_ids"] for e in examples], self.pad_token_id),  # (B, T)
            "attention_mask": _pad([[1] * len(e["input_ids"]) for e in examples], 0),  # (B, T)
            "labels": _pad([e["labels"] for e in examples], self.label_pad_id),  # (B, T)
        }
