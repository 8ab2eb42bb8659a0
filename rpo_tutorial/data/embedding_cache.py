"""An append-only on-disk store of embeddings keyed by a text hash, one folder per embedder.

Each ``store`` call writes one shard, ``shard-<id>.safetensors``: a (K, D) float32 tensor with
its K keys in the file's metadata, written to a temporary name and renamed, so a crash never
leaves a half-written shard and several processes (one per GPU) can fill the same folder. The
index (key -> shard, row) is rebuilt from the shard headers, which hold only the keys, so
100k cached texts cost a few megabytes of headers and one tensor read per shard touched.
"""
from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


class EmbeddingCache:
    """Cached vectors of one embedder under ``directory``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._index: dict[str, tuple[Path, int]] = {}
        self._seen: set[Path] = set()

    def _refresh(self) -> None:
        """Index shards written since the last look (by this or another process)."""
        if not self.directory.is_dir():
            return
        for shard in sorted(self.directory.glob("shard-*.safetensors")):
            if shard in self._seen:
                continue
            self._seen.add(shard)
            try:
                with safe_open(str(shard), framework="pt") as handle:
                    keys = (handle.metadata() or {}).get("keys", "").split("\n")
            except Exception as error:  # a damaged shard is ignored and its texts recomputed
                warnings.warn(f"ignoring unreadable embedding cache shard {shard}: {error}")
                continue
            for row, key in enumerate(keys):
                self._index.setdefault(key, (shard, row))

    def lookup(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """The cached vectors among ``keys``. Shape: each value is (D,) float32."""
        self._refresh()
        wanted: dict[Path, list[tuple[str, int]]] = {}
        for key in dict.fromkeys(keys):
            if key in self._index:
                shard, row = self._index[key]
                wanted.setdefault(shard, []).append((key, row))
        found = {}
        for shard, entries in wanted.items():
            try:
                with safe_open(str(shard), framework="pt") as handle:
                    matrix = handle.get_tensor("embeddings")  # (K_shard, D)
            except Exception as error:
                warnings.warn(f"ignoring unreadable embedding cache shard {shard}: {error}")
                continue
            rows = matrix[torch.tensor([row for _, row in entries])]  # (K_found, D)
            found.update(zip((key for key, _ in entries), rows))
        return found

    def store(self, keys: list[str], embeddings: torch.Tensor) -> Path:
        """Write one shard. Shape: embeddings (len(keys), D)."""
        if embeddings.dim() != 2 or embeddings.shape[0] != len(keys):
            raise ValueError(f"embeddings must have shape ({len(keys)}, D), got {tuple(embeddings.shape)}")
        if any("\n" in key for key in keys):
            raise ValueError("cache keys must not contain newlines")
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex}.safetensors"
        partial = self.directory / f".{name}.partial"
        save_file({"embeddings": embeddings.detach().float().contiguous().cpu()}, str(partial),
                  metadata={"keys": "\n".join(keys)})
        os.replace(partial, self.directory / name)
        return self.directory / name
