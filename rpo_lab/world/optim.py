"""Adam over stacked models, with one learning rate per model.

``torch.optim.Adam`` takes one learning rate per parameter tensor; here a tensor holds K models,
so the rate is a (K,) vector broadcast over each model's slice. The update is Adam's (Kingma &
Ba, Algorithm 1, no weight decay), element by element, so model k's trajectory is the one a
separate Adam at rate ``learning_rates[k]`` would take (a test checks it against torch's Adam).
"""
from __future__ import annotations

import torch


class StackedAdam:
    """Adam on a dict of (K, ...) parameters; ``learning_rates`` has shape (K,)."""

    def __init__(self, params: dict[str, torch.Tensor], learning_rates: torch.Tensor, betas=(0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.betas, self.eps, self.step_count = params, betas, eps, 0
        self.learning_rates = learning_rates.float()
        self.first = {name: torch.zeros_like(value) for name, value in params.items()}
        self.second = {name: torch.zeros_like(value) for name, value in params.items()}

    def zero_grad(self) -> None:
        for value in self.params.values():
            value.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.step_count += 1
        correction1, correction2 = 1 - beta1 ** self.step_count, 1 - beta2 ** self.step_count
        for name, value in self.params.items():
            if value.grad is None:
                continue
            first, second = self.first[name], self.second[name]
            first.mul_(beta1).add_(value.grad, alpha=1 - beta1)
            second.mul_(beta2).addcmul_(value.grad, value.grad, value=1 - beta2)
            denominator = (second / correction2).sqrt_().add_(self.eps)
            rate = self.learning_rates.reshape(-1, *([1] * (value.dim() - 1)))  # (K, 1, ...)
            value.sub_(rate * (first / correction1) / denominator)
