"""Prompt embeddings: which text is embedded, batching, de-duplication, the on-disk cache."""
from __future__ import annotations

import warnings

import pytest
import torch

from rpo_tutorial.data.embeddings import (
    HUB_EMBEDDER,
    PromptEmbedder,
    add_prompt_embeddings,
    bundled_embedder_path,
    prompt_text,
    stack_prompt_embeddings,
)
from rpo_tutorial.data.report import LoadReport, PreferenceData
from rpo_tutorial.paths import shared_data_dir

DIALOGUE = [
    {"role": "user", "content": "Hi, how are you?"},
    {"role": "assistant", "content": "Fine, thanks."},
    {"role": "user", "content": "How do I bake bread?"},
]


class FakeModel:
    """Stands in for SentenceTransformer: a deterministic 4-d vector per text; records every call."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts, batch_size, convert_to_tensor, normalize_embeddings, show_progress_bar):
        assert convert_to_tensor and normalize_embeddings and len(texts) <= batch_size
        self.calls.append(list(texts))
        vectors = torch.tensor([[len(t) + 1.0, t.count("a"), t.count("e"), t.count(" ")] for t in texts])
        return vectors / vectors.norm(dim=1, keepdim=True)


def fake_vector(text: str) -> torch.Tensor:
    vector = torch.tensor([len(text) + 1.0, text.count("a"), text.count("e"), text.count(" ")])
    return vector / vector.norm()


def fake_embedder(tmp_path, **kwargs) -> PromptEmbedder:
    embedder = PromptEmbedder(cache_dir=tmp_path, **kwargs)
    embedder._model = FakeModel()
    return embedder


def test_prompt_text_last_user_turn_and_full_prompt():
    assert prompt_text(DIALOGUE) == "How do I bake bread?"
    assert prompt_text(DIALOGUE, "full_prompt") == (
        "\n\nHuman: Hi, how are you?\n\nAssistant: Fine, thanks.\n\nHuman: How do I bake bread?\n\nAssistant:")
    raw = "\n\nHuman: hello\n\nAssistant: hi\n\nHuman: tell me a joke\n\nAssistant:"
    assert prompt_text(raw) == "tell me a joke" and prompt_text(raw, "full_prompt") == raw
    assert prompt_text("SUBREDDIT: r/x\nTITLE: t\nPOST: p\nTL;DR:") == "SUBREDDIT: r/x\nTITLE: t\nPOST: p\nTL;DR:"
    with pytest.raises(ValueError, match="mode must be one of"):
        prompt_text(DIALOGUE, "first_turn")
    with pytest.raises(ValueError, match="prompt must be"):
        prompt_text(42)


def test_embed_batches_deduplicates_and_keeps_input_order(tmp_path):
    embedder = fake_embedder(tmp_path, batch_size=2)
    texts = ["apple pie", "banana", "apple pie", "cherry tree", "date", "banana"]
    embeddings = embedder.embed(texts, show_progress=False)
    assert embeddings.shape == (6, 4) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings, torch.stack([fake_vector(t) for t in texts]))
    calls = embedder._model.calls
    assert sorted(t for call in calls for t in call) == sorted(set(texts)) and max(map(len, calls)) == 2
    assert embedder.encoded_texts == 4


def test_second_run_is_served_from_the_disk_cache_without_the_model(tmp_path):
    texts = [f"prompt number {i} about {topic}" for i in range(30) for topic in ("cats", "tax")]
    first = fake_embedder(tmp_path).embed(texts, show_progress=False)
    again = PromptEmbedder(cache_dir=tmp_path)  # a new process would look like this: no model loaded
    cached = again.embed(texts, show_progress=False)
    assert again._model is None and again.encoded_texts == 0
    torch.testing.assert_close(cached, first)
    partly = fake_embedder(tmp_path)
    partly.embed(texts[:5] + ["a new prompt"], show_progress=False)
    assert partly._model.calls == [["a new prompt"]]


def test_cache_is_per_embedder_and_can_be_disabled(tmp_path):
    fake_embedder(tmp_path).embed(["shared text"], show_progress=False)
    other = PromptEmbedder("sentence-transformers/all-mpnet-base-v2", cache_dir=tmp_path)
    other._model = FakeModel()
    other.embed(["shared text"], show_progress=False)
    assert other._model.calls == [["shared text"]]
    assert other.cache.directory != PromptEmbedder(cache_dir=tmp_path).cache.directory
    uncached = fake_embedder(tmp_path / "off", use_cache=False)
    uncached.embed(["x y"], show_progress=False)
    uncached.embed(["x y"], show_progress=False)
    assert len(uncached._model.calls) == 2 and not (tmp_path / "off" / "embeddings").exists()


def test_damaged_cache_shard_is_ignored_with_a_warning(tmp_path):
    embedder = fake_embedder(tmp_path)
    embedder.embed(["one"], show_progress=False)
    (embedder.cache.directory / "shard-damaged.safetensors").write_bytes(b"not a safetensors file")
    fresh = fake_embedder(tmp_path)
    with pytest.warns(UserWarning, match="unreadable embedding cache shard"):
        result = fresh.embed(["one", "two"], show_progress=False)
    assert fresh._model.calls == [["two"]] and result.shape == (2, 4)


def test_hub_minilm_name_maps_to_the_bundled_copy(tmp_path):
    default, hub = PromptEmbedder(cache_dir=tmp_path), PromptEmbedder(HUB_EMBEDDER, cache_dir=tmp_path)
    assert default.load_path == hub.load_path == bundled_embedder_path()
    assert default.identity == hub.identity == HUB_EMBEDDER and default.cache.directory == hub.cache.directory


@pytest.mark.parametrize("texts, message", [("one string", "list of strings"), ([], "empty"), (["ok", 3], r"texts\[1\]")])
def test_embed_rejects_bad_input(tmp_path, texts, message):
    with pytest.raises(ValueError, match=message):
        fake_embedder(tmp_path).embed(texts, show_progress=False)


def test_add_prompt_embeddings_stores_lists_once_per_distinct_prompt(tmp_path):
    rows = PreferenceData([
        {"prompt": DIALOGUE, "chosen": "a", "rejected": "b"},
        {"prompt": [{"role": "user", "content": "How do I bake bread?"}], "chosen": "c", "rejected": "d"},
        {"prompt": "Plain prompt", "completion": "e", "label": True},
    ], LoadReport(total=5, kept=3))
    embedder = fake_embedder(tmp_path)
    result = add_prompt_embeddings(rows, embedder, show_progress=False)
    assert isinstance(result, PreferenceData) and result.report is rows.report
    assert "prompt_embedding" not in rows[0]  # inputs are not modified
    assert embedder.encoded_texts == 2  # the two dialogues end in the same request
    assert result[0]["prompt_embedding"] == pytest.approx(fake_vector("How do I bake bread?").tolist())
    assert isinstance(result[2]["prompt_embedding"], list) and len(result[2]["prompt_embedding"]) == 4
    full = add_prompt_embeddings(rows, fake_embedder(tmp_path), mode="full_prompt", as_tensor=True, show_progress=False)
    assert isinstance(full[0]["prompt_embedding"], torch.Tensor)
    assert not torch.equal(full[0]["prompt_embedding"], full[1]["prompt_embedding"])
    torch.testing.assert_close(stack_prompt_embeddings(result)[:2], torch.stack([fake_vector("How do I bake bread?")] * 2))


def test_stack_prompt_embeddings_names_the_row_without_one():
    with pytest.raises(ValueError, match="row 1 has no 'prompt_embedding'"):
        stack_prompt_embeddings([{"prompt_embedding": [1.0, 0.0]}, {"prompt": "x"}])
    with pytest.raises(ValueError, match="row 0 has no 'prompt'"):
        add_prompt_embeddings([{"chosen": "x"}], embedder=None)


@pytest.mark.slow
@pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data absent")
def test_bundled_minilm_on_real_hh_prompts_matches_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    from rpo_tutorial.data import load_hh

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = load_hh(path=shared_data_dir() / "hh-rlhf" / "harmless-base-test.jsonl.gz")[:200]
    texts = [prompt_text(row["prompt"]) for row in rows]
    embedder = PromptEmbedder(cache_dir=tmp_path, device="cpu", batch_size=32)
    embeddings = embedder.embed(texts, show_progress=False)
    assert embeddings.shape == (200, 384) and embedder.encoded_texts == len(set(texts))
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(200))
    direct = SentenceTransformer(bundled_embedder_path(), device="cpu").encode(texts[:16], convert_to_tensor=True)
    direct = direct / direct.norm(dim=1, keepdim=True)
    torch.testing.assert_close(embeddings[:16], direct.float(), atol=1e-5, rtol=1e-4)
    cached = PromptEmbedder(cache_dir=tmp_path)
    torch.testing.assert_close(cached.embed(texts, show_progress=False), embeddings)
    assert cached._model is None


def test_local_embedder_retrained_in_place_is_not_served_old_vectors(tmp_path):
    folder = tmp_path / "my-embedder"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden": 4}')
    (folder / "model.safetensors").write_bytes(b"weights v1")

    def embedder():
        result = PromptEmbedder(str(folder), cache_dir=tmp_path / "cache")
        result._model = FakeModel()
        return result

    first = embedder()
    first.embed(["one", "two"], show_progress=False)
    again = embedder()
    again.embed(["one", "two"], show_progress=False)
    assert first.encoded_texts == 2 and again.encoded_texts == 0  # same files: served from the cache
    (folder / "model.safetensors").write_bytes(b"weights v2")  # retrained in place
    retrained = embedder()
    retrained.embed(["one", "two"], show_progress=False)
    assert retrained.encoded_texts == 2 and retrained.cache.directory != first.cache.directory
