"""Model set-up shared by the demo, the study and notebook 07: train only the top decoder layers."""
from __future__ import annotations

import pytest
import torch

from rpo_tutorial.models.loading import tiny_model, train_top_layers


def test_train_top_layers_leaves_only_the_top_layers_and_norm_trainable():
    model = tiny_model(64, hidden_size=16, num_layers=3)
    trainable = train_top_layers(model, 2)
    layers = model.get_decoder().layers
    expected = [p for module in (layers[1], layers[2], model.get_decoder().norm) for p in module.parameters()]
    assert {id(p) for p in trainable} == {id(p) for p in expected}
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert not model.get_input_embeddings().weight.requires_grad
    model.requires_grad_(True)
    assert len(train_top_layers(model, None)) == len(list(model.parameters()))  # None: nothing frozen
    for bad in (0, 4, True, 1.5):
        with pytest.raises(ValueError, match="trainable_layers"):
            train_top_layers(model, bad)


def test_frozen_layers_get_no_gradient():
    model = tiny_model(64, hidden_size=16, num_layers=2)
    train_top_layers(model, 1)
    input_ids = torch.randint(0, 64, (2, 5))
    model(input_ids=input_ids).logits.float().sum().backward()
    layers = model.get_decoder().layers
    assert all(p.grad is None for p in layers[0].parameters())
    assert all(p.grad is not None for p in layers[1].parameters())
