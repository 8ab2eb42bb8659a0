"""Models: loading them offline, and the summed response log-probs every loss consumes.

    loading.py    the bundled SmolLM2-135M-Instruct, hub / local models, tiny random models;
                  train_top_layers (freeze all but the top decoder layers)
    logprobs.py   log pi(y | x) summed over response tokens, batched; reference log-probs once
    head.py       the LM head on label rows only, chunked (no fp32 (B, T, V) logits kept)
    shared_prompt.py  paired batches: each prompt's forward once, both responses on its KV cache

Both training and evaluation look down at this layer; it depends only on :mod:`rpo_tutorial.data`.
"""
from rpo_tutorial.data.embeddings import HUB_EMBEDDER, bundled_embedder_path
from rpo_tutorial.models.loading import (
    BUNDLED_POLICY,
    SMOLLM2_GGUF,
    bundled_policy_dir,
    load_policy,
    load_tokenizer,
    resolve_model_path,
    tiny_model,
    train_top_layers,
)
from rpo_tutorial.models.logprobs import batch_sequence_logps, precompute_reference_logps, sequence_logps

__all__ = [
    "BUNDLED_POLICY", "HUB_EMBEDDER", "SMOLLM2_GGUF", "batch_sequence_logps", "bundled_embedder_path",
    "bundled_policy_dir", "load_policy", "load_tokenizer", "precompute_reference_logps", "resolve_model_path",
    "sequence_logps", "tiny_model", "train_top_layers",
]
