"""Prompt formatting, tokenization and truncation of preference, unpaired and SFT rows.

A prompt is rendered to text by :func:`format_prompt`, then tokenized ON ITS OWN; each response
is tokenized on its own too, EOS is appended, and the id lists are concatenated. Tokenizing the
pieces separately means no token straddles the prompt / response boundary, so the labels mask
exactly the prompt (the price: ``"Assistant:" + " Hi"`` may tokenize differently from the joined
string ``"Assistant: Hi"``; generation, which continues the prompt's ids, sees the same split).

Prompt templates are in :mod:`rpo_tutorial.data.formatting`.

Truncation follows the paper's limits (prompt at most 256 tokens, prompt + response at most
512): a prompt longer than ``max_prompt_length`` is cut to it, and so is any prompt when prompt +
LONGER response exceeds ``max_length``; then each response is cut to what is left (keeping its
start; a cut response loses its EOS, since it did not end). (The DPO reference code cuts the prompt
only in the second case, keeping long prompts whole when the pair fits.) ``prompt_truncation="left"`` keeps the END of the prompt
(a dialogue's latest turns and the generation header); ``"right"`` keeps the START (a TL;DR post)
plus the prompt's protected ending: the text after the last message (template closing and
generation header), reaching back to a trailing ``"TL;DR:"`` cue when the message ends with one.
A BOS token the tokenizer adds by default is kept in front. Both responses of a pair are
conditioned on the SAME truncated prompt (the official RPO loader can condition them on different
ones).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rpo_tutorial.data.collate import IGNORE_INDEX
from rpo_tutorial.data.formatting import TEMPLATES, InvalidRowError, format_prompt, prompt_messages

TLDR_CUE = "TL;DR:"
PROMPT_TRUNCATIONS = ("left", "right")
KINDS = ("paired", "unpaired", "sft")
_RESPONSES = {"paired": ("chosen", "rejected"), "unpaired": ("completion",), "sft": ("chosen",)}
_CARRIED = {"paired": ("reference_chosen_logps", "reference_rejected_logps"), "unpaired": ("reference_logps",),
            "sft": ()}


# ----------------------------------------------------------------------------- token pieces
def _encode(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _leading_special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids the tokenizer puts in front of a text by default (e.g. Llama's BOS), else []."""
    plain, default = _encode("a", tokenizer), list(tokenizer("a")["input_ids"])
    return default[: default.index(plain[0])] if plain and plain[0] in default else []


def _encode_prompt(text: str, tokenizer: PreTrainedTokenizerBase, lead: list[int]) -> list[int]:
    ids = _encode(text, tokenizer)
    return ids if ids[: len(lead)] == lead else lead + ids  # a chat template may hold the BOS already


def _encode_response(text: Any, field_name: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    if not isinstance(text, str):
        raise InvalidRowError(field_name, f"must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidRowError(field_name, "is empty")
    ids = _encode(text, tokenizer)
    return ids if ids[-1] == tokenizer.eos_token_id else ids + [tokenizer.eos_token_id]


def _protected_tail_start(text: str, last_content: str) -> int | None:
    """Character index where the prompt's protected ending starts (see module docstring)."""
    content = last_content.strip()
    index = text.rfind(content) if content else -1
    if index < 0:
        return None
    return index + len(content) - (len(TLDR_CUE) if content.endswith(TLDR_CUE) else 0)


def _truncate_prompt(prompt_ids: list[int], text: str, last_content: str, budget: int, side: str,
                     tokenizer: PreTrainedTokenizerBase, lead: list[int]) -> list[int]:
    """Cut the prompt to ``budget`` tokens: its end ("left") or its start + protected end ("right")."""
    if len(prompt_ids) <= budget:
        return prompt_ids
    kept_lead = lead if prompt_ids[: len(lead)] == lead else []
    if side == "left":
        if budget <= len(kept_lead):
            raise InvalidRowError("prompt", f"cannot fit: max_prompt_length={budget} leaves no room after the BOS")
        return kept_lead + prompt_ids[len(prompt_ids) - (budget - len(kept_lead)):]
    tail_start = _protected_tail_start(text, last_content)
    if tail_start is None:  # the template rewrote the content: a plain start cut
        return prompt_ids[:budget]
    head, tail = _encode_prompt(text[:tail_start], tokenizer, lead), _encode(text[tail_start:], tokenizer)
    if len(tail) + len(kept_lead) >= budget:
        raise InvalidRowError("prompt", f"cannot fit: its protected ending ({len(tail)} tokens: generation "
                                        f"header / {TLDR_CUE!r} cue) needs more than max_prompt_length={budget}")
    return head[: budget - len(tail)] + tail


# ----------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class _Settings:
    max_prompt_length: int
    max_length: int
    prompt_truncation: str
    template: str

    def __post_init__(self) -> None:
        if isinstance(self.max_prompt_length, bool) or not isinstance(self.max_prompt_length, int) \
                or self.max_prompt_length < 1:
            raise ValueError(f"max_prompt_length must be a positive int, got {self.max_prompt_length!r}")
        if not isinstance(self.max_length, int) or self.max_length <= self.max_prompt_length:
            raise ValueError(f"max_length ({self.max_length!r}) must be an int larger than max_prompt_length "
                             f"({self.max_prompt_length}), or a cut prompt leaves no room for the response")
        if self.prompt_truncation not in PROMPT_TRUNCATIONS:
            raise ValueError(f"prompt_truncation must be one of {PROMPT_TRUNCATIONS}, got {self.prompt_truncation!r}")
        if self.template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {self.template!r}")


def _carry(row: Mapping, example: dict, keys: Iterable[str]) -> dict:
    """Copy ``prompt_embedding`` and reference log-probs unchanged, after checking they are numbers."""
    embedding = row.get("prompt_embedding")
    if embedding is not None:
        try:
            values = [float(value) for value in embedding]
        except (TypeError, ValueError):
            raise InvalidRowError("prompt_embedding", "must be a list of numbers") from None
        if not values or not all(map(math.isfinite, values)):
            raise InvalidRowError("prompt_embedding", "must be a non-empty list of finite numbers")
        example["prompt_embedding"] = embedding
    for key in keys:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidRowError(key, f"must be a finite number, got {value!r:.40}")
        example[key] = value
    return example


def _tokenize_row(row: Any, kind: str, tokenizer: PreTrainedTokenizerBase, settings: _Settings
                  ) -> tuple[dict, bool, int]:
    """One row -> (example, whether the prompt was cut, how many responses were cut)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token first")
    if not isinstance(row, Mapping):
        raise InvalidRowError("row", f"must be a dict, got {type(row).__name__}")
    for key in ("prompt", *_RESPONSES[kind], *(("label",) if kind == "unpaired" else ())):
        if key not in row:
            raise InvalidRowError(key, "is missing")
    if kind == "unpaired" and not isinstance(row["label"], (bool, np.bool_)):
        raise InvalidRowError("label", f"must be a bool (True = desirable), got {row['label']!r:.40}")
    responses = [_encode_response(row[key], key, tokenizer) for key in _RESPONSES[kind]]
    text = format_prompt(row["prompt"], tokenizer, settings.template)
    lead = _leading_special_ids(tokenizer)
    full_prompt = prompt_ids = _encode_prompt(text, tokenizer, lead)
    too_long = len(full_prompt) + max(map(len, responses)) > settings.max_length  # the LONGER response
    if too_long or len(full_prompt) > settings.max_prompt_length:
        prompt_ids = _truncate_prompt(full_prompt, text, prompt_messages(row["prompt"])[-1]["content"],
                                      settings.max_prompt_length, settings.prompt_truncation, tokenizer, lead)
    budget = settings.max_length - len(prompt_ids)
    sequences = [(prompt_ids + ids[:budget], [IGNORE_INDEX] * len(prompt_ids) + ids[:budget]) for ids in responses]
    if kind == "paired":
        example = {"chosen_input_ids": sequences[0][0], "chosen_labels": sequences[0][1],
                   "rejected_input_ids": sequences[1][0], "rejected_labels": sequences[1][1]}
    else:
        example = {"input_ids": sequences[0][0], "labels": sequences[0][1]}
    if kind == "unpaired":
        example["label"] = bool(row["label"])
    responses_cut = sum(len(ids) > budget for ids in responses)
    return _carry(row, example, _CARRIED[kind]), len(prompt_ids) < len(full_prompt), responses_cut


def tokenize_pair(row: Mapping, tokenizer: PreTrainedTokenizerBase, max_prompt_length: int = 256,
                  max_length: int = 512, prompt_truncation: str = "left", template: str = "auto") -> dict:
    """Tokenize ``{prompt, chosen, rejected}`` into a paired example (module docstring for the rules).

    Returns ``{chosen_input_ids, chosen_labels, rejected_input_ids, rejected_labels}`` (labels -100
    on the prompt) plus ``prompt_embedding`` / ``reference_chosen_logps`` /
    ``reference_rejected_logps`` copied unchanged when the row has them.

    Raises:
        InvalidRowError (a ValueError naming the field): missing key, non-string field, empty
        response, malformed prompt, a prompt that cannot fit.
    """
    settings = _Settings(max_prompt_length, max_length, prompt_truncation, template)
    return _tokenize_row(row, "paired", tokenizer, settings)[0]


def tokenize_unpaired(row: Mapping, tokenizer: PreTrainedTokenizerBase, max_prompt_length: int = 256,
                      max_length: int = 512, prompt_truncation: str = "left", template: str = "auto") -> dict:
    """Tokenize ``{prompt, completion, label}`` into ``{input_ids, labels, label}`` (+ carried keys)."""
    settings = _Settings(max_prompt_length, max_length, prompt_truncation, template)
    return _tokenize_row(row, "unpaired", tokenizer, settings)[0]


def tokenize_sft(row: Mapping, tokenizer: PreTrainedTokenizerBase, max_prompt_length: int = 256,
                 max_length: int = 512, prompt_truncation: str = "left", template: str = "auto") -> dict:
    """Tokenize the prompt and the CHOSEN response of a row into ``{input_ids, labels}``."""
    settings = _Settings(max_prompt_length, max_length, prompt_truncation, template)
    return _tokenize_row(row, "sft", tokenizer, settings)[0]


# ----------------------------------------------------------------------------- datasets
@dataclass
class TokenizationReport:
    """What :func:`tokenize_dataset` did: kept, truncated and skipped rows (with reasons)."""

    kind: str
    num_rows: int = 0
    num_examples: int = 0
    prompts_truncated: int = 0  # examples whose prompt was cut
    responses_truncated: int = 0  # responses cut (a pair counts up to 2)
    num_responses: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    skipped_rows: dict[str, list[int]] = field(default_factory=dict)  # reason -> its first 5 row indexes

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def record_skip(self, index: int, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        first_rows = self.skipped_rows.setdefault(reason, [])
        if len(first_rows) < 5:
            first_rows.append(index)

    def summary(self) -> str:
        text = (f"{self.kind}: {self.num_examples}/{self.num_rows} rows tokenized; prompts truncated "
                f"{self.prompts_truncated}, responses truncated {self.responses_truncated}/{self.num_responses}")
        if self.skipped:
            reasons = "; ".join(f"{reason}: {count} (rows {self.skipped_rows[reason]})"
                                for reason, count in self.skipped.items())
            text += f"; skipped {self.num_skipped} ({reasons})"
        return text


def tokenize_dataset(rows: Iterable[Mapping], tokenizer: PreTrainedTokenizerBase, kind: str = "paired",
                     max_prompt_length: int = 256, max_length: int = 512, prompt_truncation: str = "left",
                     template: str = "auto", strict: bool = False, progress: bool = True
                     ) -> tuple[list[dict], TokenizationReport]:
    """Tokenize every row (``kind`` = "paired" | "unpaired" | "sft") with a progress bar.

    Invalid rows raise ``ValueError`` naming the row index and field when ``strict``; otherwise
    they are skipped, counted by reason in the report and announced with a warning.

    Returns:
        (examples, report); ``report.summary()`` is a one-line account of truncation and skips.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    settings = _Settings(max_prompt_length, max_length, prompt_truncation, template)
    rows = list(rows)
    report = TokenizationReport(kind=kind, num_rows=len(rows))
    examples = []
    for index, row in enumerate(tqdm(rows, desc=f"tokenize ({kind})", disable=not progress)):
        try:
            example, prompt_cut, responses_cut = _tokenize_row(row, kind, tokenizer, settings)
        except InvalidRowError as error:
            if strict:
                raise ValueError(f"row {index}: {error}") from error
            report.record_skip(index, f"{error.field!r} {error.reason}")
            continue
        examples.append(example)
        report.prompts_truncated += prompt_cut
        report.responses_truncated += responses_cut
        report.num_responses += len(_RESPONSES[kind])
    report.num_examples = len(examples)
    if report.skipped:
        warnings.warn(f"tokenize_dataset skipped rows: {report.summary()}", stacklevel=2)
    return examples, report


__all__ = [
    "IGNORE_INDEX", "InvalidRowError", "TokenizationReport", "format_prompt",
    "tokenize_dataset", "tokenize_pair", "tokenize_sft", "tokenize_unpaired",
]
