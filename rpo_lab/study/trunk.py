"""The study's fast path: the frozen lower layers run ONCE, training runs only the top layers.

The study trains only the top ``k`` decoder layers and the final norm (the demo's
``freeze_lower_layers``); the embeddings, tied to the LM head, and every lower layer keep the
pretrained weights in every run (SFT, DPO, RPO, KTO, every seed). So the hidden state entering
layer ``L - k`` of a sequence is the same in every run, and is computed once per data setting
(:meth:`TopStack.trunk_features`). A training or evaluation step then runs only

    features (B, T, D) -> top k layers -> final norm -> LM head at the response positions -> log-probs

which is what the full model computes (a test checks it against a full forward within float
error). The LM head (vocabulary 49,152) is applied to response positions only, where labels are
scored; prompt positions never reach it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from rpo_tutorial.data.collate import IGNORE_INDEX


class TopStack:
    """A causal LM split into a frozen trunk and its trainable top ``trainable_layers`` layers.

    The model is changed in place: everything frozen except the top layers and the final norm.
    """

    def __init__(self, model: torch.nn.Module, trainable_layers: int) -> None:
        self.model = model
        self.device = next(model.parameters()).device  # features and batches live on the CPU, computed here
        self.decoder = model.get_decoder()
        self.all_layers = self.decoder.layers
        total = len(self.all_layers)
        if not 1 <= trainable_layers <= total:
            raise ValueError(f"trainable_layers must be in [1, {total}] for this model, got {trainable_layers}")
        self.split = total - trainable_layers  # index of the first trainable layer
        self.top_layers = torch.nn.ModuleList(list(self.all_layers)[self.split:])
        model.requires_grad_(False)
        self.top_layers.requires_grad_(True)
        self.decoder.norm.requires_grad_(True)

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
    def _only_top(self) -> Iterator[None]:
        self.decoder.layers = self.top_layers
        try:
            yield
        finally:
            self.decoder.layers = self.all_layers

    @torch.inference_mode()
    def trunk_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states entering the first trainable layer. Shape: (B, T) -> (B, T, D) float32."""
        self.model.eval()
        outputs = self.decoder(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                               output_hidden_states=True, use_cache=False)
        return outputs.hidden_states[self.split].float().cpu()  # hidden_states[0] = embeddings, [i] = after layer i

    def logps(self, features: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed log pi(label tokens) of each row, from trunk features (with grad when training).

        Runs on the model's device; the result comes back to the CPU (with its graph).

        Shape:
            features: (B, T, D); attention_mask, labels: (B, T); returns (B,) float32
        """
        features, attention_mask = features.to(self.device), attention_mask.to(self.device)
        labels = labels.to(self.device)
        with self._only_top():
            hidden = self.decoder(inputs_embeds=features, attention_mask=attention_mask,
                                  use_cache=False).last_hidden_state  # (B, T, D), after the final norm
        mask = labels[:, 1:] != IGNORE_INDEX  # (B, T-1): position t predicts token t + 1
        rows = mask.nonzero()[:, 0]  # (K,) row of each scored token
        scored = hidden[:, :-1][mask]  # (K, D)
        targets = labels[:, 1:][mask]  # (K,)
        logits = self.model.get_output_embeddings()(scored).float()  # (K, V)
        token_logps = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (K,)
        totals = torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device)
        return totals.index_add(0, rows, token_logps).cpu()  # (B,)


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
