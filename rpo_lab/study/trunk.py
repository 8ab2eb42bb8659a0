"""The study's fast path: the frozen lower layers run ONCE, training runs only the top layers.

The study trains only the top ``k`` decoder layers and the final norm
(``rpo_tutorial.models.loading.train_top_layers``); the embeddings, tied to the LM head, and every
lower layer keep the pretrained weights in every run (every method, every seed, and the
reference, which is the pretrained model itself). So the hidden state entering layer ``L - k`` of
a sequence is the same in every run, and is computed once per study (:meth:`TopStack.trunk_features`,
running the lower layers only; :meth:`TopStack.pair_trunk_features` runs each pair's prompt once,
the library's shared-prompt layout ``models.shared_prompt``). A training or evaluation step then runs only

    features (B, T, D) -> top k layers -> final norm -> LM head at the label rows -> log-probs

which is what the full model computes (a test checks it against a full forward within float
error). The last step is the library's ``models.head.hidden_sequence_logps``: the head (vocabulary
49,152 for SmolLM2) is applied to the rows that predict a response token only.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Sequence

import torch

from rpo_tutorial.data.collate import IGNORE_INDEX
from rpo_tutorial.models.head import hidden_sequence_logps
from rpo_tutorial.models.loading import train_top_layers

if TYPE_CHECKING:
    from rpo_lab.study.settings import StudySettings
    from rpo_tutorial.models.shared_prompt import SharedPromptBatch


class TopStack:
    """A causal LM split into a frozen trunk and its trainable top ``trainable_layers`` layers.

    The model is changed in place: everything frozen except the top layers and the final norm.
    """

    def __init__(self, model: torch.nn.Module, trainable_layers: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device  # features and batches live on the CPU, computed here
        self.decoder = model.get_decoder()
        self.all_layers = self.decoder.layers
        train_top_layers(model, trainable_layers)  # raises for a count outside [1, L]
        self.split = len(self.all_layers) - trainable_layers  # index of the first trainable layer
        self.lower_layers = torch.nn.ModuleList(list(self.all_layers)[: self.split])
        self.top_layers = torch.nn.ModuleList(list(self.all_layers)[self.split:])
        self.head = model.get_output_embeddings()

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters: top layers and final norm."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of the trainable weights (what a run changes)."""
        return {name: p.detach().clone() for name, p in self.model.named_parameters() if p.requires_grad}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        named = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                named[name].copy_(value)

    @contextmanager
    def _layers(self, layers: torch.nn.ModuleList, norm: bool = True) -> Iterator[None]:
        """Run the decoder with only ``layers`` (and without its final norm when ``norm`` is False)."""
        final_norm = self.decoder.norm
        self.decoder.layers = layers
        if not norm:
            self.decoder.norm = torch.nn.Identity()
        try:
            yield
        finally:
            self.decoder.layers, self.decoder.norm = self.all_layers, final_norm

    @torch.inference_mode()
    def trunk_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states entering the first trainable layer. Shape: (B, T) -> (B, T, D) float32."""
        self.model.eval()
        with self._layers(self.lower_layers, norm=False):  # the lower layers only, no final norm
            hidden = self.decoder(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                                  use_cache=False).last_hidden_state  # (B, T, D)
        return hidden.float().cpu()

    @torch.inference_mode()
    def pair_trunk_features(self, batch: "SharedPromptBatch") -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk features of a paired batch, each prompt run once and both responses on its key/value cache.

        Shape:
            returns prompt features (M, P, D) left-padded as ``batch.prompt_ids`` and response features
            (B, R, D) right-padded as ``batch.response_ids``, float32
        """
        from transformers import DynamicCache

        self.model.eval()
        cache, name = DynamicCache(), cache_argument(self.decoder)
        with self._layers(self.lower_layers, norm=False):
            prompt = self.decoder(input_ids=batch.prompt_ids.to(self.device), attention_mask=batch.prompt_mask.to(
                self.device), position_ids=batch.prompt_positions.to(self.device), use_cache=True,
                **{name: cache}).last_hidden_state  # (M, P, D)
            cache.batch_select_indices(batch.prompt_of_row.to(self.device))  # (M, ...) -> (B, ...)
            mask = torch.cat([batch.prompt_mask[batch.prompt_of_row], batch.response_mask], dim=1)  # (B, P + R)
            response = self.decoder(input_ids=batch.response_ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=batch.response_positions.to(self.device), use_cache=True,
                                    **{name: cache}).last_hidden_state  # (B, R, D)
        return prompt.float().cpu(), response.float().cpu()

    def logps(self, features: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed log pi(label tokens) of each row, from trunk features (with grad when training).

        Runs on the model's device; the result comes back to the CPU (with its graph).

        Shape:
            features: (B, T, D); attention_mask, labels: (B, T); returns (B,) float32
        """
        features, attention_mask = features.to(self.device), attention_mask.to(self.device)
        with self._layers(self.top_layers):
            hidden = self.decoder(inputs_embeds=features, attention_mask=attention_mask,
                                  use_cache=False).last_hidden_state  # (B, T, D), after the final norm
        return hidden_sequence_logps(hidden, labels.to(self.device), self.head).cpu()  # (B,)


def load_model(settings: "StudySettings"):
    """(tokenizer, model) of ``settings.model``."""
    from rpo_tutorial.models.loading import load_policy, load_tokenizer, tiny_model

    tokenizer = load_tokenizer()
    if settings.model.startswith("tiny-random:"):
        torch.manual_seed(0)
        model = tiny_model(len(tokenizer), architecture=settings.model.split(":", 1)[1], num_layers=3)
    else:
        model = load_policy() if settings.model == "bundled" else load_policy(settings.model)
    return tokenizer, model.to("cuda" if torch.cuda.is_available() else "cpu")


def cache_argument(module: torch.nn.Module) -> str:
    """The name under which a decoder's forward takes its key/value cache (``cache`` in transformers 5)."""
    import inspect

    parameters = inspect.signature(module.forward).parameters
    return next(name for name in ("cache", "past_key_values") if name in parameters)


def pad_sequences(features: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad per-sequence features and labels into a batch.

    Shape:
        features[i]: (T_i, D); labels[i]: (T_i,); returns features (B, T, D), attention_mask (B, T),
        labels (B, T) with -100 on padding
    """
    longest = max(len(label) for label in labels)
    dim = features[0].shape[-1]
    batch = torch.zeros(len(features), longest, dim, dtype=features[0].dtype)
    mask = torch.zeros(len(features), longest, dtype=torch.long)
    padded = torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long)
    for row, (feature, label) in enumerate(zip(features, labels)):
        batch[row, : len(label)] = feature
        mask[row, : len(label)] = 1
        padded[row, : len(label)] = label
    return batch, mask, padded
