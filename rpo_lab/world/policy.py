"""K tiny causal transformers trained as one: every parameter has a leading model dimension K.

Each model is a pre-LayerNorm decoder (token and position embeddings, ``num_layers`` blocks of
causal self-attention and a 4x GELU MLP, a final LayerNorm and a head over the response
vocabulary). The K models never interact: each one's logits depend on its own parameters and its
own tokens only, so a stack of K models computes what K separate models would (a test checks a
stack against its models run one at a time). Matrix products are batched over K (``torch.bmm``).

    policy = StackedPolicy.initial(spec, num_models=1, generator=g)    # a fresh reference
    stack = policy.repeat(300)                                          # 300 copies to train
    logps = stack.response_logps(prompt_tokens, responses)              # (K, B)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rpo_lab.world.spec import WorldSpec


class StackedPolicy:
    """K models' parameters (a dict of (K, ...) tensors) and their forward pass."""

    def __init__(self, spec: WorldSpec, params: dict[str, torch.Tensor]) -> None:
        self.spec, self.params = spec, params

    @classmethod
    def initial(cls, spec: WorldSpec, num_models: int, generator: torch.Generator) -> "StackedPolicy":
        """Freshly initialised models (embeddings N(0, 0.5^2), matrices N(0, 1 / fan_in))."""
        K, d, V = num_models, spec.model_dim, spec.vocab_size
        T = spec.prompt_length + spec.response_length

        def matrix(rows: int, cols: int) -> torch.Tensor:
            return torch.randn(K, rows, cols, generator=generator) / math.sqrt(rows)

        params = {"token": 0.5 * torch.randn(K, V, d, generator=generator),
                  "position": 0.5 * torch.randn(K, T, d, generator=generator)}
        for layer in range(spec.num_layers):
            params.update({f"qkv{layer}": matrix(d, 3 * d), f"out{layer}": matrix(d, d),
                           f"up{layer}": matrix(d, 4 * d), f"down{layer}": matrix(4 * d, d)})
        params["head"] = matrix(d, spec.response_vocab)
        return cls(spec, params)

    @property
    def num_models(self) -> int:
        return self.params["token"].shape[0]

    def repeat(self, count: int) -> "StackedPolicy":
        """``count`` independent trainable copies of a one-model stack."""
        if self.num_models != 1:
            raise ValueError(f"repeat needs a one-model stack, this one has {self.num_models} models")
        return StackedPolicy(self.spec, {name: value.detach().expand(count, *value.shape[1:]).clone().requires_grad_()
                                         for name, value in self.params.items()})

    def detached(self) -> "StackedPolicy":
        return StackedPolicy(self.spec, {name: value.detach().clone() for name, value in self.params.items()})

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits over the response vocabulary. Shape: tokens (K, B, T) -> (K, B, T, V_r)."""
        K, B, T = tokens.shape
        d, heads = self.spec.model_dim, self.spec.num_heads
        rows = tokens.reshape(K, B * T, 1).expand(K, B * T, d)
        x = torch.gather(self.params["token"], 1, rows).reshape(K, B, T, d)  # (K, B, T, d)
        x = (x + self.params["position"][:, None, :T]).reshape(K, B * T, d)
        for layer in range(self.spec.num_layers):
            h = F.layer_norm(x, (d,))
            qkv = torch.bmm(h, self.params[f"qkv{layer}"])  # (K, B T, 3d)
            q, k, v = qkv.reshape(K * B, T, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # 3 x (K B, H, T, d / H)
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (K B, H, T, d / H)
            x = x + torch.bmm(attended.transpose(1, 2).reshape(K, B * T, d), self.params[f"out{layer}"])
            h = F.layer_norm(x, (d,))
            x = x + torch.bmm(F.gelu(torch.bmm(h, self.params[f"up{layer}"])), self.params[f"down{layer}"])
        x = F.layer_norm(x, (d,))
        return torch.bmm(x, self.params["head"]).reshape(K, B, T, -1)

    def response_logps(self, prompt_tokens: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Summed log-probs log pi(y | x) of responses. Shape: (K, B, T_p), (K, B, L) -> (K, B) float32."""
        offset = self.spec.num_clusters + self.spec.detail_vocab + 1
        inputs = torch.cat([prompt_tokens, offset + responses[..., :-1]], dim=-1)  # (K, B, T_p + L - 1)
        start = prompt_tokens.shape[-1] - 1  # the separator predicts the first response token
        logits = self.logits(inputs)[:, :, start:]  # (K, B, L, V_r)
        return torch.log_softmax(logits, dim=-1).gather(-1, responses[..., None])[..., 0].sum(dim=-1)

    @torch.no_grad()
    def sample(self, prompt_tokens: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Responses by inverse-CDF sampling from shared uniforms (common random numbers for every model).

        Shape:
            prompt_tokens: (K, B, T_p); uniforms: (B, L) in [0, 1); returns (K, B, L)
        """
        offset = self.spec.num_clusters + self.spec.detail_vocab + 1
        K, B, _ = prompt_tokens.shape
        inputs, tokens = prompt_tokens, []
        for t in range(self.spec.response_length):
            probabilities = torch.softmax(self.logits(inputs)[:, :, -1].float(), dim=-1)  # (K, B, V_r)
            cumulative = probabilities.cumsum(dim=-1)  # (K, B, V_r)
            target = uniforms[None, :, t, None].expand(K, B, 1) * cumulative[..., -1:]  # (K, B, 1)
            token = torch.searchsorted(cumulative, target.contiguous(), right=True).clamp_max(
                self.spec.response_vocab - 1)  # (K, B, 1)
            tokens.append(token[..., 0])
            inputs = torch.cat([inputs, offset + token], dim=-1)
        return torch.stack(tokens, dim=-1)

    def parameter_count(self) -> int:
        """Parameters of one model."""
        return sum(value[0].numel() for value in self.params.values())
