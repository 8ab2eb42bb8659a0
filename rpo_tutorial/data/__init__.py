"""Data: files and hub datasets -> validated rows -> tokenized examples -> padded batches.

    preferences.py   load_preferences / to_unpaired / AlpacaEval prompts (any paired or unpaired file);
                     open_dataset: a dataset by name (demo, hh, a file, a hub id)
    hh.py, tldr.py   Anthropic HH-RLHF and OpenAI TL;DR, the paper's datasets
    demo.py          the project's own demo dataset (``demo_data/``)
    files.py         JSON / JSONL / CSV / Parquet readers;  report.py  what a loader kept and skipped
    formatting.py    prompt templates;  tokenization.py  tokens and truncation;  collate.py  batches
    embeddings.py    prompt embeddings (+ embedding_cache.py);  sampler.py  similarity-aware batches
    jsonl.py, run_logs.py   JSON-lines helpers and the training log (metrics.jsonl) reader
    sentiment.py     the VADER sentiment scorer that labelled the demo set (the demo's and study's judge)

Everything here depends only on :mod:`rpo_tutorial.losses` / :mod:`rpo_tutorial.weighting`
and third-party libraries, never on training or evaluation code.
"""
from rpo_tutorial.data.collate import IGNORE_INDEX, PreferenceCollator, SFTCollator
from rpo_tutorial.data.demo import load_demo
from rpo_tutorial.data.embeddings import PromptEmbedder, add_prompt_embeddings
from rpo_tutorial.data.formatting import format_prompt
from rpo_tutorial.data.preferences import (
    HH_SUBSETS,
    TLDR_TEMPLATE,
    InvalidRow,
    LoadReport,
    PreferenceData,
    concatenate,
    dialogue_messages,
    load_alpaca_eval_prompts,
    load_hh,
    load_preferences,
    load_tldr,
    open_dataset,
    parse_hh_pair,
    split_transcript,
    tldr_prompt,
    to_unpaired,
    validate_row,
)
from rpo_tutorial.data.tokenization import tokenize_dataset, tokenize_pair, tokenize_sft, tokenize_unpaired

__all__ = [
    "HH_SUBSETS", "IGNORE_INDEX", "TLDR_TEMPLATE", "InvalidRow", "LoadReport", "PreferenceCollator",
    "PreferenceData", "PromptEmbedder", "SFTCollator", "add_prompt_embeddings", "concatenate",
    "dialogue_messages", "format_prompt", "load_alpaca_eval_prompts", "load_demo", "load_hh",
    "load_preferences", "load_tldr", "open_dataset", "parse_hh_pair", "split_transcript", "tldr_prompt",
    "to_unpaired", "tokenize_dataset", "tokenize_pair", "tokenize_sft", "tokenize_unpaired", "validate_row",
]
